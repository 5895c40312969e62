//! Hugging Face's `datasets-server` over HTTP, asked what [`TaskLoad`] says to ask: the
//! successor's competition-4 tasks loaded as its own loaders load them, with every exchange
//! kept as the task's provenance.
//!
//! What a response is decides the task (F's rules, in [`super::reasoning`]): 429 with its
//! `Retry-After`, another status of 400 or more, a body, or no response at all (refused,
//! reset, timed out; F has no timeout and would wait for ever). A body larger than
//! [`BODY_BYTES_MAX`] is none of these: it is [`DataError::Unavailable`], and the step waits,
//! since deciding the task on it would blame the data for the line.

use std::future::Future;
use std::time::Duration;

use super::DataError;
use super::reasoning::{Answer, Next, Page, TaskData, TaskLoad, TaskOutcome};

/// The public endpoint F asks.
pub const ENDPOINT: &str = "https://datasets-server.huggingface.co";
/// The largest body read (a page is at most 100 rows of reasoning traces).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The endpoint and how long one request may take.
#[derive(Debug, Clone)]
pub struct DatasetsServer {
    /// Base URL, without a trailing slash.
    pub endpoint: String,
    /// The longest wait for one request, connection included.
    pub timeout: Duration,
}

impl Default for DatasetsServer {
    fn default() -> Self {
        Self {
            endpoint: ENDPOINT.to_string(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// One request and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// `size`, or `rows` with its page.
    pub page: Option<Page>,
    /// Seconds waited before it, as F waits.
    pub wait_before_s: u64,
    /// The status, or `None` when nothing answered.
    pub status: Option<u16>,
}

/// A task's load: how it ended and every exchange on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskLoaded {
    /// How it ended.
    pub outcome: TaskOutcome,
    /// Every request in order.
    pub exchanges: Vec<Exchange>,
}

impl DatasetsServer {
    fn client(&self) -> Result<reqwest::Client, DataError> {
        super::http_client(self.timeout)
    }

    /// Loads `data` with the generator seeded by `seed_digest`, waiting through `wait` (the
    /// runner's clock; tests pass one that returns at once).
    pub async fn load<W, Fut>(
        &self,
        data: TaskData,
        seed_digest: &[u8],
        wait: W,
    ) -> Result<TaskLoaded, DataError>
    where
        W: Fn(Duration) -> Fut,
        Fut: Future<Output = ()>,
    {
        let client = self.client()?;
        let dataset = data.dataset.name();
        let rows_per_page = data.rows_per_page.to_string();
        let (mut load, mut next) = TaskLoad::start(data, seed_digest);
        let mut exchanges = Vec::new();
        loop {
            match next {
                Next::Size => {
                    let url = format!("{}/size", self.endpoint);
                    let answer = ask(&client, &url, &[("dataset", dataset)]).await?;
                    exchanges.push(Exchange {
                        page: None,
                        wait_before_s: 0,
                        status: status_of(&answer),
                    });
                    next = load.answer_size(answer);
                }
                Next::Rows {
                    page,
                    wait_before_s,
                } => {
                    if wait_before_s > 0 {
                        wait(Duration::from_secs(wait_before_s)).await;
                    }
                    let url = format!("{}/rows", self.endpoint);
                    let offset = page.offset.to_string();
                    let query = [
                        ("dataset", dataset),
                        ("config", page.config.as_str()),
                        ("split", page.split.as_str()),
                        ("offset", offset.as_str()),
                        ("limit", rows_per_page.as_str()),
                    ];
                    let answer = ask(&client, &url, &query).await?;
                    exchanges.push(Exchange {
                        page: Some(page),
                        wait_before_s,
                        status: status_of(&answer),
                    });
                    next = load.answer_rows(answer);
                }
                Next::Done(outcome) => return Ok(TaskLoaded { outcome, exchanges }),
            }
        }
    }
}

fn status_of(answer: &Answer) -> Option<u16> {
    match answer {
        Answer::Body(_) => Some(200),
        Answer::RateLimited { .. } => Some(429),
        Answer::Status(status) => Some(*status),
        Answer::NoResponse(_) => None,
    }
}

/// One GET, classified as F's loaders classify it.
async fn ask(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Result<Answer, DataError> {
    let mut response = match client.get(url).query(query).send().await {
        Ok(response) => response,
        Err(error) => return Ok(Answer::NoResponse(with_causes(&error))),
    };
    let status = response.status().as_u16();
    if status == 429 {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        return Ok(Answer::RateLimited { retry_after });
    }
    if status >= 400 {
        return Ok(Answer::Status(status));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > BODY_BYTES_MAX {
                    return Err(DataError::Unavailable(format!(
                        "{url} answered more than {BODY_BYTES_MAX} bytes"
                    )));
                }
            }
            Ok(None) => return Ok(Answer::Body(body)),
            // Cut off mid-body: no response F could read.
            Err(error) => return Ok(Answer::NoResponse(with_causes(&error))),
        }
    }
}

/// An error with the causes reqwest keeps behind it ("error sending request" says little).
fn with_causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
