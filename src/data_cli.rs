//! `validator data sample`: print the batch a step would evaluate.

use std::path::PathBuf;

use crate::data::cortex::Cortex;
use crate::data::local::LocalFile;
use crate::data::{BatchOutcome, BatchRequest, DataError, DataSource, Seed};
use crate::jsonl;
use crate::machine::Event;

/// A data source named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `local:PATH`.
    Local(PathBuf),
    /// `wandb` or `wandb:ENTITY/PROJECT`.
    Wandb {
        /// The entity.
        entity: String,
        /// The project.
        project: String,
    },
    /// `hf:OWNER/NAME@REVISION[/PATH_PREFIX]`.
    HuggingFace {
        /// `owner/name`.
        repo: String,
        /// The pinned revision.
        revision: String,
        /// Only files under this prefix.
        prefix: String,
    },
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("local:") {
            return Ok(SourceSpec::Local(PathBuf::from(path)));
        }
        if text == "wandb" {
            return Ok(SourceSpec::Wandb {
                entity: "cortex-t".into(),
                project: "multi-modality".into(),
            });
        }
        if let Some(path) = text.strip_prefix("wandb:") {
            let (entity, project) = path
                .split_once('/')
                .ok_or_else(|| format!("{text:?}: use wandb:ENTITY/PROJECT"))?;
            return Ok(SourceSpec::Wandb {
                entity: entity.into(),
                project: project.into(),
            });
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            let (repo, after) = rest
                .split_once('@')
                .ok_or_else(|| format!("{text:?}: use hf:OWNER/NAME@REVISION[/PREFIX]"))?;
            let (revision, prefix) = after.split_once('/').unwrap_or((after, ""));
            return Ok(SourceSpec::HuggingFace {
                repo: repo.into(),
                revision: revision.into(),
                prefix: prefix.into(),
            });
        }
        Err(format!(
            "unknown source {text:?}: use local:PATH, wandb[:ENTITY/PROJECT] or hf:OWNER/NAME@REVISION"
        ))
    }
}

/// What `validator data sample` was asked (its command-line arguments; the doc comments are the
/// help).
#[derive(Debug, Clone, clap::Args)]
pub struct SampleRequest {
    /// local:PATH, wandb[:ENTITY/PROJECT] (N's Cortex runs) or hf:OWNER/NAME@REVISION[/PREFIX].
    #[arg(long)]
    pub source: SourceSpec,
    /// The block hash whose seed picks runs, files and rows (the successor's formula).
    #[arg(long, conflicts_with = "seed")]
    pub block_hash: Option<String>,
    /// An unsynchronised seed, to reproduce a batch (a fresh one when neither is given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The step number.
    #[arg(long, default_value_t = 0)]
    pub step: u64,
    /// The most samples (N: 400).
    #[arg(long, default_value_t = crate::data::DEFAULT_MAX_SAMPLES)]
    pub max_samples: usize,
    /// The prompt's field (local and hf sources).
    #[arg(long, default_value = "prompt")]
    pub prompt_field: String,
    /// The response's field (local and hf sources).
    #[arg(long, default_value = "response")]
    pub response_field: String,
    /// Apply N's unwanted-phrase filter to local and hf sources (wandb always does).
    #[arg(long)]
    pub phrase_filter: bool,
    /// The wandb API.
    #[arg(long, default_value = "https://api.wandb.ai")]
    pub wandb_endpoint: String,
    /// Where hf dataset files are cached.
    #[arg(long, default_value = "data-cache")]
    pub cache: PathBuf,
    /// Print the batch event and the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Builds the source and fetches one batch.
pub async fn sample(request: &SampleRequest) -> Result<BatchOutcome, DataError> {
    let seed = match (&request.block_hash, request.seed) {
        (Some(hash), _) => Seed::from_block_hash(hash),
        (None, Some(seed)) => Seed::Unsynchronized(seed),
        (None, None) => Seed::unsynchronized(),
    };
    let batch_request = BatchRequest {
        step: request.step,
        seed,
        max_samples: request.max_samples,
    };
    match &request.source {
        SourceSpec::Local(path) => {
            let source = LocalFile {
                path: path.clone(),
                prompt_field: request.prompt_field.clone(),
                response_field: request.response_field.clone(),
                phrase_filter: request.phrase_filter,
            };
            source.fetch(&batch_request).await
        }
        SourceSpec::Wandb { entity, project } => {
            let mut source = Cortex::n_defaults(&request.wandb_endpoint);
            source.entity.clone_from(entity);
            source.project.clone_from(project);
            source.fetch(&batch_request).await
        }
        #[cfg(feature = "hub")]
        SourceSpec::HuggingFace {
            repo,
            revision,
            prefix,
        } => {
            let mut options = crate::hub::HubOptions::new(request.cache.clone());
            options.progress = false;
            let hub =
                crate::hub::Hub::new(options).map_err(|e| DataError::Config(e.to_string()))?;
            let source = crate::data::hf::HfDataset {
                hub,
                repo: repo.clone(),
                revision: revision.clone(),
                path_prefix: prefix.clone(),
                prompt_field: request.prompt_field.clone(),
                response_field: request.response_field.clone(),
                phrase_filter: request.phrase_filter,
                cache_dir: request.cache.clone(),
            };
            source.fetch(&batch_request).await
        }
        #[cfg(not(feature = "hub"))]
        SourceSpec::HuggingFace { .. } => {
            Err(DataError::Config("built without the hub feature".into()))
        }
    }
}

/// Renders an outcome: the batch as a journal record line plus the report (JSON), or a summary.
pub fn render(outcome: &BatchOutcome, json: bool) -> String {
    if json {
        let record = crate::machine::Record {
            block: 0,
            seq: 0,
            event: Event::BatchFetched(outcome.batch.clone()),
        };
        let mut line = Vec::new();
        let _ = jsonl::write_record(&mut line, &record);
        let event: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        let output = serde_json::json!({"batch_fetched": event["event"]["batch_fetched"], "report": outcome.report});
        return format!("{output}\n");
    }
    let batch = &outcome.batch;
    let mut text = format!(
        "source {} · seed {} · step {} · {} samples (read {}, skipped {:?})\n",
        batch.provenance.source,
        batch.provenance.seed,
        batch.step,
        batch.samples.len(),
        outcome.report.rows_seen,
        outcome.report.skipped
    );
    for (index, sample) in batch.samples.iter().enumerate() {
        let cut = |s: &str| s.chars().take(70).collect::<String>().replace('\n', " ");
        text.push_str(&format!(
            "{index:>4} [{}] {} => {}\n",
            sample.origin,
            cut(sample.prompt),
            cut(sample.response)
        ));
    }
    text
}
