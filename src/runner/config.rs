//! What a run is told, validated once: the command line builds a [`RunConfig`], the loop reads
//! it and nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::weights::WeightsConfig;
use crate::machine::MechanismParams;
use crate::machine::params::CompetitionId;

/// N's `version_key` (v0.2.7: `1000·0 + 10·2 + 7`).
pub const N_VERSION_KEY: u64 = 27;

/// The successor's `version_key` (v3.1.0).
pub const SUCCESSOR_VERSION_KEY: u64 = 3010;

/// How the loop waits and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait (each retry doubles until here).
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt` (0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }
}

/// Everything `validator run` was asked, checked.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The journal.
    pub db: PathBuf,
    /// The model cache (derived data: deleting it means refetching).
    pub model_dir: PathBuf,
    /// The mechanism this run uses (N's or the successor's, with `--sample_min`).
    pub params: MechanismParams,
    /// Journal a change of mechanism on a journal run with other parameters.
    pub accept_params_change: bool,
    /// N's `--genesis`: no consensus seeding, every model fetched (empty journals only).
    pub genesis: bool,
    /// Stop cleanly once the journal holds this many completed steps (a total).
    pub max_steps: Option<u64>,
    /// The most shards a model's batch is cut into, so that several workers share a step's
    /// last models rather than idle (see `schedule::shard_count`); 1 never cuts.
    pub eval_shards_max: usize,
    /// How weights are set (when the run is given a chain to set them on).
    pub weights: WeightsConfig,
    /// A snapshot chain: before each step, wait until every visible commitment has a verdict,
    /// so a rerun on the same recording takes the same steps.
    pub settle_before_step: bool,
    /// Longest wait for seeded models before step 0.
    pub startup_wait: Duration,
    /// How often a live chain is polled for new commitments.
    pub poll_interval: Option<Duration>,
    /// Models fetched at once.
    pub fetch_concurrency: usize,
    /// N's grace period: cached models nothing references are deleted after it.
    pub grace_period: Duration,
    /// The competitions' fixed tokenizers; a competition without one tokenises each model with
    /// its own files.
    pub tokenizers: BTreeMap<CompetitionId, PathBuf>,
    /// Samples per batch (N: 400).
    pub samples_max: usize,
    /// Where the successor's tasks are loaded from (Hugging Face's `datasets-server`).
    pub datasets_server: crate::data::datasets_server::DatasetsServer,
    /// Steps between checkpoints.
    pub checkpoint_every_steps: u64,
    /// Retries of a step that could not get its data or its device.
    pub step_retry: Backoff,
    /// Retries of a model whose fetch could not be decided.
    pub fetch_retry: Backoff,
    /// How long a repository or revision that is not there is looked for again, in blocks
    /// since its commitment was observed, before `NotFound` is recorded: miners commit while
    /// their repository is private and publish it right after (N looks again on every pass).
    pub not_found_retry_blocks: u64,
    /// Print N's step table after each step.
    pub print_tables: bool,
    /// Where the leaderboard, `/metrics` and `/healthz` are served (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Longest time without a new journal record before `/healthz` answers 503.
    pub health_stall: Duration,
    /// N's step log: one JSON line per completed step, appended to this file.
    pub step_log: Option<PathBuf>,
    /// Progress bars on a terminal (never in JSON logging).
    pub progress_bars: bool,
    /// What the operator accepted that weakens the validator (an evaluation queue without
    /// credentials): said on the page and in `/api/leaderboard`.
    pub warnings: Vec<String>,
}

/// Where `validator run` serves its page and metrics unless told otherwise.
pub const METRICS_ADDR_DEFAULT: &str = "127.0.0.1:9108";

/// How long without a journal record `/healthz` tolerates by default: longer than one model's
/// evaluation timeout (720 s) and a fetch retry, so a slow model is not an alert.
pub const HEALTH_STALL_S_DEFAULT: u64 = 1_800;

/// A day of 12-second blocks: how long a missing repository is looked for by default.
pub const NOT_FOUND_RETRY_BLOCKS: u64 = 7_200;

impl RunConfig {
    /// A configuration with N's defaults for a journal and a model cache.
    pub fn new(db: PathBuf, model_dir: PathBuf) -> Self {
        Self {
            db,
            model_dir,
            params: MechanismParams::default(),
            accept_params_change: false,
            genesis: false,
            max_steps: None,
            eval_shards_max: 2,
            weights: WeightsConfig::new(N_VERSION_KEY),
            settle_before_step: false,
            startup_wait: Duration::from_secs(600),
            poll_interval: Some(Duration::from_secs(300)),
            fetch_concurrency: 2,
            grace_period: Duration::from_secs(120 * 60),
            tokenizers: BTreeMap::new(),
            samples_max: crate::data::DEFAULT_MAX_SAMPLES,
            datasets_server: crate::data::datasets_server::DatasetsServer::default(),
            checkpoint_every_steps: 100,
            step_retry: Backoff {
                first: Duration::from_secs(5),
                max: Duration::from_secs(300),
            },
            fetch_retry: Backoff {
                first: Duration::from_secs(30),
                max: Duration::from_secs(1800),
            },
            not_found_retry_blocks: NOT_FOUND_RETRY_BLOCKS,
            print_tables: true,
            metrics_addr: None,
            health_stall: Duration::from_secs(HEALTH_STALL_S_DEFAULT),
            step_log: None,
            progress_bars: false,
            warnings: Vec::new(),
        }
    }
}
