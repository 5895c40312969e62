//! N's data source: Cortex.t validator runs on wandb, read through the wandb public API
//! (GraphQL over HTTPS; the API key from `WANDB_API_KEY` when set).
//!
//! The queries are the wandb client's own (wandb 0.16.6, `wandb/apis/public/runs.py` and
//! `history.py`): `Runs` lists the project's runs with N's filter (`config.type`, and `state`
//! running), `RunHistoryKeys` gives a run's `historyKeys.lastStep`, and `HistoryPage` returns
//! history rows (each a JSON string) between two steps. As N: the latest `steps` history steps
//! of each run, keys `prompts.<uid>` / `responses.<uid>` for uid 0..255, both stripped and
//! non-empty, the response free of N's unwanted phrases, until `max_samples`. Unlike N, the run
//! order is a seeded shuffle of the runs sorted by id (N shuffled the server's order with an
//! unsynchronised numpy seed), so validators at the same block read the same runs.

use std::time::Duration;

use serde_json::{Value, json};

use super::{
    BatchBuilder, BatchOutcome, BatchRequest, DataError, DataSource, SkipReason, shuffled,
    with_retries,
};

/// N's `CORTEX_MAX_UIDS`.
pub const CORTEX_MAX_UIDS: usize = 256;
/// The largest GraphQL response read.
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

const RUNS_QUERY: &str = r"query Runs($project: String!, $entity: String!, $cursor: String, $perPage: Int = 50, $order: String, $filters: JSONString) {
    project(name: $project, entityName: $entity) {
        runCount(filters: $filters)
        readOnly
        runs(filters: $filters, after: $cursor, first: $perPage, order: $order) {
            edges { node { id name displayName state config historyLineCount } cursor }
            pageInfo { endCursor hasNextPage }
        }
    }
}";

const HISTORY_KEYS_QUERY: &str = r"query RunHistoryKeys($project: String!, $entity: String!, $name: String!) {
    project(name: $project, entityName: $entity) {
        run(name: $name) { historyKeys }
    }
}";

const HISTORY_PAGE_QUERY: &str = r"query HistoryPage($entity: String!, $project: String!, $run: String!, $minStep: Int64!, $maxStep: Int64!, $pageSize: Int!) {
    project(name: $project, entityName: $entity) {
        run(name: $run) {
            history(minStep: $minStep, maxStep: $maxStep, samples: $pageSize)
        }
    }
}";

/// The wandb source.
#[derive(Debug, Clone)]
pub struct Cortex {
    /// The API's base URL (`https://api.wandb.ai`).
    pub endpoint: String,
    /// The wandb entity (N: `cortex-t`).
    pub entity: String,
    /// The project (N: `multi-modality`).
    pub project: String,
    /// `config.type` of the runs read (N: `validator`).
    pub run_type: String,
    /// Only runs whose state is `running` (N: yes).
    pub running_only: bool,
    /// History steps read per run (N: 1, the latest).
    pub steps: u64,
    /// The API key (`WANDB_API_KEY`).
    pub api_key: Option<String>,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Attempts per request (N: 10).
    pub attempts: usize,
    /// First retry delay, doubled each time (N: a flat 5 s).
    pub backoff: Duration,
    /// The most runs listed.
    pub max_runs: usize,
}

impl Cortex {
    /// N's configuration against `endpoint`.
    pub fn n_defaults(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            entity: "cortex-t".into(),
            project: "multi-modality".into(),
            run_type: "validator".into(),
            running_only: true,
            steps: 1,
            api_key: std::env::var("WANDB_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(100),
            attempts: 10,
            backoff: Duration::from_secs(1),
            max_runs: 10_000,
        }
    }

    fn client(&self) -> Result<reqwest::Client, DataError> {
        super::http_client(self.timeout)
    }

    /// One GraphQL request, retried with backoff.
    async fn query(
        &self,
        client: &reqwest::Client,
        query: &str,
        variables: Value,
    ) -> Result<Value, DataError> {
        let url = format!("{}/graphql", self.endpoint);
        let body = json!({"query": query, "variables": variables});
        with_retries(self.attempts, self.backoff, || async {
            let mut request = client.post(&url).json(&body);
            if let Some(key) = &self.api_key {
                request = request.basic_auth("api", Some(key));
            }
            let mut response = request
                .send()
                .await
                .map_err(|e| DataError::Unavailable(format!("POST {url}: {e}")))?;
            let status = response.status();
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| DataError::Unavailable(format!("reading {url}: {e}")))?
            {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > RESPONSE_BYTES_MAX {
                    return Err(DataError::Unavailable(format!(
                        "{url} answered more than {RESPONSE_BYTES_MAX} bytes"
                    )));
                }
            }
            if !status.is_success() {
                return Err(DataError::Unavailable(format!("{url} answered {status}")));
            }
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                DataError::Unavailable(format!("{url} answered something that is not JSON: {e}"))
            })?;
            if let Some(errors) = value.get("errors").filter(|e| !e.is_null()) {
                return Err(DataError::Unavailable(format!(
                    "{url} answered errors: {errors}"
                )));
            }
            value
                .get("data")
                .cloned()
                .ok_or_else(|| DataError::Unavailable(format!("{url} answered no data")))
        })
        .await
    }

    /// Every matching run's id (`name` in GraphQL), sorted.
    async fn run_ids(&self, client: &reqwest::Client) -> Result<Vec<String>, DataError> {
        let mut filters = vec![json!({"config.type": self.run_type})];
        if self.running_only {
            filters.push(json!({"state": "running"}));
        }
        let filters = json!({"$and": filters}).to_string();
        let mut cursor: Option<String> = None;
        let mut ids = Vec::new();
        loop {
            let variables = json!({"project": self.project, "entity": self.entity, "cursor": cursor,
                "perPage": 50, "order": "-created_at", "filters": filters});
            let data = self.query(client, RUNS_QUERY, variables).await?;
            let runs = data.pointer("/project/runs").ok_or_else(|| {
                DataError::Config(format!(
                    "project {}/{} was not found",
                    self.entity, self.project
                ))
            })?;
            let edges = runs
                .get("edges")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for edge in &edges {
                if let Some(name) = edge.pointer("/node/name").and_then(Value::as_str) {
                    ids.push(name.to_owned());
                }
            }
            let more = runs
                .pointer("/pageInfo/hasNextPage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let next = edges
                .last()
                .and_then(|e| e.get("cursor"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if !more || next.is_none() || next == cursor || ids.len() >= self.max_runs {
                break;
            }
            cursor = next;
        }
        ids.sort();
        ids.dedup();
        ids.truncate(self.max_runs);
        Ok(ids)
    }

    async fn last_step(&self, client: &reqwest::Client, run: &str) -> Result<i64, DataError> {
        let variables = json!({"project": self.project, "entity": self.entity, "name": run});
        let data = self.query(client, HISTORY_KEYS_QUERY, variables).await?;
        // historyKeys is a JSON object (it may also arrive as a JSON-encoded string).
        let keys = data
            .pointer("/project/run/historyKeys")
            .cloned()
            .unwrap_or(Value::Null);
        let keys = match keys {
            Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            other => other,
        };
        Ok(keys.get("lastStep").and_then(Value::as_i64).unwrap_or(-1))
    }

    /// History rows of steps `min_step..max_step`, paged by `steps` as N's HistoryScan.
    async fn history(
        &self,
        client: &reqwest::Client,
        run: &str,
        min_step: i64,
        max_step: i64,
    ) -> Result<Vec<Result<Value, SkipReason>>, DataError> {
        let page = i64::try_from(self.steps.max(1)).unwrap_or(1);
        let mut offset = min_step;
        let mut rows = Vec::new();
        while offset < max_step {
            let end = (offset + page).min(max_step);
            let variables = json!({"entity": self.entity, "project": self.project, "run": run,
                "minStep": offset, "maxStep": end, "pageSize": page});
            let data = self.query(client, HISTORY_PAGE_QUERY, variables).await?;
            let history = data
                .pointer("/project/run/history")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for row in history {
                rows.push(match row {
                    Value::String(text) => {
                        serde_json::from_str(&text).map_err(|_| SkipReason::Malformed)
                    }
                    object @ Value::Object(_) => Ok(object),
                    _ => Err(SkipReason::Malformed),
                });
            }
            offset += page;
        }
        Ok(rows)
    }
}

impl DataSource for Cortex {
    fn name(&self) -> String {
        format!("wandb:{}/{}", self.entity, self.project)
    }

    async fn fetch(&self, request: &BatchRequest) -> Result<BatchOutcome, DataError> {
        let client = self.client()?;
        let ids = self.run_ids(&client).await?;
        let mut builder = BatchBuilder::new(request.max_samples, true);
        let mut references = Vec::new();
        for index in shuffled(ids.len(), &request.seed, request.step, "cortex-runs") {
            if builder.is_full() {
                break;
            }
            let Some(run) = ids.get(index) else { continue };
            let last_step = self.last_step(&client, run).await?;
            // N: max_step = last + 1, min_step = max(0, max_step - steps).
            let max_step = last_step + 1;
            let min_step = (max_step - i64::try_from(self.steps).unwrap_or(1)).max(0);
            references.push(format!("{run}@{min_step}..{max_step}"));
            for (row_index, row) in self
                .history(&client, run, min_step, max_step)
                .await?
                .into_iter()
                .enumerate()
            {
                let row = match row {
                    Ok(Value::Object(row)) => row,
                    Ok(_) | Err(_) => {
                        builder.skip(SkipReason::Malformed);
                        continue;
                    }
                };
                let step = row
                    .get("_step")
                    .and_then(Value::as_i64)
                    .unwrap_or(min_step + i64::try_from(row_index).unwrap_or(0));
                for uid in 0..CORTEX_MAX_UIDS {
                    if builder.is_full() {
                        break;
                    }
                    let prompt = row.get(&format!("prompts.{uid}"));
                    let response = row.get(&format!("responses.{uid}"));
                    match (prompt, response) {
                        (Some(Value::String(prompt)), Some(Value::String(response))) => {
                            builder.offer(prompt, response, &format!("{run}/step{step}/uid{uid}"));
                        }
                        (None, None) => {}
                        (None, _) | (_, None) => builder.skip(SkipReason::MissingField),
                        _ => builder.skip(SkipReason::WrongType),
                    }
                }
            }
        }
        Ok(builder.finish(request.step, self.name(), &request.seed, references))
    }
}
