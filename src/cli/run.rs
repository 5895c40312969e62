//! `validator run`: the validator's loop, with N's flag names (and kebab-case aliases) so an
//! operator's existing command line reads naturally; `--demo` runs the embedded scenario.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use validator::chain::Chain;
use validator::chain::mechanism::SubnetMechanism;
use validator::chain::wallet::WalletPath;
use validator::data::spec::{Source, SourceOptions, SourceSpec};
use validator::eval::runtime::Device;
use validator::hub::local::LocalStore;
use validator::hub::{Hub, HubOptions};
use validator::journal::Journal;
use validator::machine::MechanismParams;
use validator::machine::params::{CompetitionId, WeightsCadence};
use validator::replay::{ReplayOptions, replay_journal};
use validator::runner::config::{
    HEALTH_STALL_S_DEFAULT, METRICS_ADDR_DEFAULT, N_VERSION_KEY, NOT_FOUND_RETRY_BLOCKS, RunConfig,
    SUCCESSOR_VERSION_KEY,
};
use validator::runner::demo::{DEMO_STEPS, write_demo};
use validator::runner::live::{AnyChain, AnyEvaluator, AnyStore, LiveChain, LiveWeights};
use validator::runner::pool::EvaluatorPool;
use validator::runner::queue::{QueueEvaluator, QueueOptions, TrustedWorkers};
use validator::runner::snapshot::RecordedChain;
use validator::runner::table::weights_line;
use validator::runner::weights::WeightsConfig;
use validator::runner::{Edges, RunError, RunSummary, run as run_loop};

use super::chain::EndpointArgs;
use super::{Failure, Outcome, runtime};

/// Which mechanism decides the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mechanism {
    /// The original validator's (NousResearch v0.2.7) constants.
    N,
    /// The successor's rules (winner takes all, epsilon decay, evaluation delay).
    F,
}

/// When weights are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Cadence {
    /// N's: after the first step that starts `--blocks_per_epoch` blocks after the last epoch.
    Steps,
    /// `--blocks_per_epoch` blocks after the last inclusion on chain, whatever the steps do.
    Chain,
}

/// `validator run`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Run the embedded scenario: a recorded chain, the fixture models as a local hub and a
    /// local data file, a few steps of each competition on CPU, then replay its own journal.
    #[arg(long)]
    demo: bool,
    /// Where `--demo` writes its files, journal and model cache (a new or empty directory;
    /// default: a fresh one under the temporary directory). Remote workers for the demo take
    /// its hub as `--hub local:DIR/hub`.
    #[arg(long = "demo-dir", requires = "demo")]
    demo_dir: Option<PathBuf>,
    /// The subnet.
    #[arg(long, default_value_t = 6)]
    netuid: u16,
    /// The subnet mechanism weights are set on (0: the subnet's own; refused when the subnet
    /// does not have it).
    #[arg(long, visible_alias = "mecid", default_value_t = 0)]
    mechid: u8,
    #[command(flatten)]
    chain: EndpointArgs,
    /// The wallet (used to set weights).
    #[arg(long = "wallet.name", default_value = "default")]
    wallet_name: String,
    /// The wallet's hotkey.
    #[arg(long = "wallet.hotkey", default_value = "default")]
    wallet_hotkey: String,
    /// The wallets directory (default ~/.bittensor/wallets).
    #[arg(long = "wallet.path")]
    wallet_path: Option<PathBuf>,
    /// Blocks between weight submissions.
    #[arg(
        long = "blocks_per_epoch",
        visible_alias = "blocks-per-epoch",
        default_value_t = 100
    )]
    blocks_per_epoch: u64,
    /// When weights are due: after steps as N's loop has it (the default with `--mechanism n`),
    /// or by the chain's clock (the default with `--mechanism f`).
    #[arg(
        long = "weights-cadence",
        visible_alias = "weights_cadence",
        value_enum
    )]
    weights_cadence: Option<Cadence>,
    /// Uids kept in each competition's eval set after a step.
    #[arg(long = "sample_min", visible_alias = "sample-min", default_value_t = 5)]
    sample_min: u32,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Evaluate on several local devices at once, one evaluation worker each, models to
    /// whichever is free (largest first): a comma-separated list of cpu, cuda:N or N (CUDA
    /// device N), or `cuda` for every CUDA device nvidia-smi lists. Instead of --device.
    #[arg(long, value_delimiter = ',', conflicts_with = "eval_queue")]
    devices: Vec<String>,
    /// ONNX Runtime CPU threads per evaluation worker [default: this machine's cores, shared
    /// among the --devices].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    #[command(flatten)]
    engine: super::eval::EngineArgs,
    /// Evaluate with remote workers (`validator eval-worker`) through this NATS JetStream
    /// server: nats://[USER:PASSWORD@]HOST:PORT, or tls://HOST:PORT. Checks and tokenising
    /// stay here.
    #[arg(long = "eval-queue", visible_alias = "eval_queue")]
    eval_queue: Option<String>,
    /// The remote workers whose results are taken: a file of their public nkeys (U...), one a
    /// line with an optional name (each `validator eval-worker` logs its own at start). A
    /// result is taken only when a worker listed here signed it. Needed with --eval-queue.
    #[arg(
        long = "queue-trusted-workers",
        visible_alias = "queue_trusted_workers"
    )]
    queue_trusted_workers: Option<PathBuf>,
    /// Use an evaluation queue the runner cannot authenticate to (no user and password in
    /// the URL, no credentials file, no client certificate): anyone who reaches the server
    /// may then delete the queue or fill it (results stay signed). The page says so.
    #[arg(long = "eval-queue-insecure", visible_alias = "eval_queue_insecure")]
    eval_queue_insecure: bool,
    /// The most shards a model's batch is cut into when the step's models do not share the
    /// workers evenly (three models on two devices: halves, the longest work first); each
    /// shard builds its own session, and 1 never cuts.
    #[arg(
        long = "eval-shards-max",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    eval_shards_max: u16,
    #[command(flatten)]
    queue: super::edges::QueueArgs,
    /// The model cache (derived data; the journal is kept apart in --db).
    #[arg(
        long = "model_dir",
        visible_alias = "model-dir",
        default_value = "model-store"
    )]
    model_dir: PathBuf,
    /// Minutes before a cached model nothing references is deleted.
    #[arg(
        long = "grace_period_minutes",
        visible_alias = "grace-period-minutes",
        default_value_t = 120
    )]
    grace_period_minutes: u64,
    /// Minutes between polls of a live chain for new commitments.
    #[arg(
        long = "update_delay_minutes",
        visible_alias = "update-delay-minutes",
        default_value_t = 5
    )]
    update_delay_minutes: u64,
    /// Send nothing to the chain (and need no wallet).
    #[arg(long)]
    offline: bool,
    /// Do not set weights on the chain (the wallet and its registration are still checked).
    #[arg(long = "dont_set_weights", visible_alias = "dont-set-weights")]
    dont_set_weights: bool,
    /// The `version_key` sent with weights (default: the mechanism's own, N's 27 or the
    /// successor's 3010).
    #[arg(long = "weights_version_key", visible_alias = "weights-version-key")]
    weights_version_key: Option<u64>,
    /// Seconds between checks of the chain's head for due weights (a block time).
    #[arg(
        long = "weights-check-s",
        visible_alias = "weights_check_s",
        default_value_t = 12.0
    )]
    weights_check_s: f64,
    /// Start from scratch: no consensus seeding, every model fetched (empty journals only).
    #[arg(long)]
    genesis: bool,
    /// The journal (a sled directory).
    #[arg(long, default_value = "validator-journal")]
    db: PathBuf,
    /// wandb[:ENTITY/PROJECT], hf:OWNER/NAME@REVISION[/PREFIX] or local:FILE.
    #[arg(
        long = "data-source",
        visible_alias = "data_source",
        default_value = "wandb"
    )]
    data_source: SourceSpec,
    /// The mechanism: N's constants, or the successor's.
    #[arg(long, value_enum, default_value = "n")]
    mechanism: Mechanism,
    /// The mechanism's parameters from a JSON file (the journal's `params` form) instead of
    /// the preset: recorded runs with small bounds. They are journaled like any others.
    #[arg(long = "mechanism-params")]
    mechanism_params: Option<PathBuf>,
    /// Hugging Face's datasets-server, where the successor's tasks are loaded from.
    #[arg(long = "datasets-server", default_value = validator::data::datasets_server::ENDPOINT)]
    datasets_server: String,
    /// Accept a journal run with other mechanism parameters (the change is journaled).
    #[arg(long = "accept-params-change", visible_alias = "accept_params_change")]
    accept_params_change: bool,
    /// Longest evaluation of one model, in seconds.
    #[arg(
        long = "eval-timeout-s",
        visible_alias = "eval_timeout_s",
        default_value_t = 720
    )]
    eval_timeout_s: u64,
    /// The most memory a model's estimate may need, in bytes: a model over it is refused,
    /// naming the figure (default: three quarters of this machine's memory; on CUDA, nine
    /// tenths of the card's as nvidia-smi reports it).
    #[arg(
        long = "eval-memory-max-bytes",
        visible_alias = "eval_memory_max_bytes"
    )]
    eval_memory_max_bytes: Option<u64>,
    /// Blocks after a commitment is seen during which a repository that is not there (still
    /// private) is looked for again, before the model is refused as not found.
    #[arg(
        long = "not-found-retry-blocks",
        visible_alias = "not_found_retry_blocks",
        default_value_t = NOT_FOUND_RETRY_BLOCKS
    )]
    not_found_retry_blocks: u64,
    /// Stop cleanly once the journal holds this many completed steps (a total).
    #[arg(long = "max-steps", visible_alias = "max_steps")]
    max_steps: Option<u64>,
    /// A recorded chain (JSON) instead of a node.
    #[arg(long = "chain-snapshot", visible_alias = "chain_snapshot")]
    chain_snapshot: Option<PathBuf>,
    /// The model hub: a Hugging Face-compatible URL (default HF_ENDPOINT or huggingface.co),
    /// or local:DIR holding DIR/<namespace>/<name>/<commit>/.
    #[arg(long)]
    hub: Option<String>,
    /// A competition's fixed tokenizer: COMPETITION=DIR, or COMPETITION=hub:OWNER/NAME@COMMIT
    /// to fetch that repository's tokenizer files at that commit (repeatable). Without one, each model
    /// is tokenised with its own files.
    #[arg(long, value_parser = parse_tokenizer)]
    tokenizer: Vec<(CompetitionId, TokenizerSource)>,
    /// Where tokenizers given as hub:OWNER/NAME@COMMIT are kept.
    #[arg(long = "tokenizer-cache", default_value = "validator-tokenizers")]
    tokenizer_cache: PathBuf,
    /// Free bytes the model cache's disk must keep after a download.
    #[arg(long = "disk-free-min-bytes", default_value_t = 1 << 30)]
    disk_free_min_bytes: u64,
    /// A TOML file of settings: every flag of `validator run`, by the same name (flags, then
    /// VALIDATOR_* environment variables, then the file, in that order of precedence).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the leaderboard page (/), its JSON (/api/leaderboard), Prometheus metrics
    /// (/metrics) and health (/healthz) are served: HOST:PORT, or `off` [default:
    /// 127.0.0.1:9108; off with --demo].
    #[arg(long = "metrics-addr", visible_alias = "metrics_addr", value_parser = parse_metrics_addr)]
    metrics_addr: Option<MetricsAddr>,
    /// Seconds without a new journal record, or without a completed step, before /healthz
    /// answers 503.
    #[arg(
        long = "health-stall-s",
        visible_alias = "health_stall_s",
        default_value_t = HEALTH_STALL_S_DEFAULT
    )]
    health_stall_s: u64,
    /// Append N's step log (one JSON line per completed step, the shape N logged to wandb).
    #[arg(long = "step-log", visible_alias = "step_log")]
    step_log: Option<PathBuf>,
    /// Log as JSON lines (no colours, no progress bars).
    #[arg(long = "logging.json", visible_alias = "logging-json")]
    logging_json: bool,
    /// Log debug messages.
    #[arg(long = "logging.debug", visible_alias = "logging-debug")]
    logging_debug: bool,
    /// Log trace messages.
    #[arg(long = "logging.trace", visible_alias = "logging-trace")]
    logging_trace: bool,
    /// Ignored (N's model loading option; we export our own graph).
    #[arg(long, hide = true)]
    dtype: Option<String>,
    /// Ignored (N's model loading option; we export our own graph).
    #[arg(
        long = "attn_implementation",
        alias = "attn-implementation",
        hide = true
    )]
    attn_implementation: Option<String>,
    /// Ignored (N sampled a response for its leaderboard).
    #[arg(long = "do_sample", alias = "do-sample", hide = true)]
    do_sample: bool,
    /// Ignored (this validator serves no axon).
    #[arg(long = "axon.port", hide = true)]
    axon_port: Option<String>,
    /// Ignored (this validator serves no axon).
    #[arg(long = "axon.ip", hide = true)]
    axon_ip: Option<String>,
    /// Ignored (this validator serves no axon).
    #[arg(long = "axon.external_port", alias = "axon.external-port", hide = true)]
    axon_external_port: Option<String>,
    /// Ignored (this validator serves no axon).
    #[arg(long = "axon.external_ip", alias = "axon.external-ip", hide = true)]
    axon_external_ip: Option<String>,
    /// Ignored (this validator serves no axon).
    #[arg(long = "axon.max_workers", alias = "axon.max-workers", hide = true)]
    axon_max_workers: Option<String>,
}

/// Where to serve: an address, or nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(Option<std::net::SocketAddr>);

fn parse_metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr(None));
    }
    text.parse()
        .map(|addr| MetricsAddr(Some(addr)))
        .map_err(|_| format!("{text:?}: use HOST:PORT (an IP address and a port) or off"))
}

/// Where a competition's tokenizer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenizerSource {
    /// A directory on this machine.
    Dir(PathBuf),
    /// A hub repository's tokenizer files at a commit.
    Hub {
        /// `OWNER/NAME`.
        repo: String,
        /// The commit.
        commit: String,
    },
}

fn parse_tokenizer(text: &str) -> Result<(CompetitionId, TokenizerSource), String> {
    let (competition, source) = text
        .split_once('=')
        .filter(|(c, d)| !c.is_empty() && !d.is_empty())
        .ok_or_else(|| {
            format!("{text:?}: use COMPETITION=DIR or COMPETITION=hub:OWNER/NAME@COMMIT")
        })?;
    let source = match source.strip_prefix("hub:") {
        Some(pinned) => {
            let (repo, commit) = pinned
                .split_once('@')
                .filter(|(r, c)| !r.is_empty() && !c.is_empty())
                .ok_or_else(|| format!("{text:?}: use hub:OWNER/NAME@COMMIT"))?;
            TokenizerSource::Hub {
                repo: repo.to_owned(),
                commit: commit.to_owned(),
            }
        }
        None => TokenizerSource::Dir(PathBuf::from(source)),
    };
    Ok((CompetitionId::new(competition), source))
}

impl RunArgs {
    fn warn_ignored(&self) {
        let ignored = [
            ("--dtype", self.dtype.is_some()),
            ("--attn_implementation", self.attn_implementation.is_some()),
            ("--do_sample", self.do_sample),
            ("--axon.port", self.axon_port.is_some()),
            ("--axon.ip", self.axon_ip.is_some()),
            ("--axon.external_port", self.axon_external_port.is_some()),
            ("--axon.external_ip", self.axon_external_ip.is_some()),
            ("--axon.max_workers", self.axon_max_workers.is_some()),
        ];
        for (flag, given) in ignored {
            if given {
                tracing::warn!("{flag} means nothing to this validator; ignored");
            }
        }
    }

    fn version_key(&self) -> u64 {
        self.weights_version_key.unwrap_or(match self.mechanism {
            Mechanism::N => N_VERSION_KEY,
            Mechanism::F => SUCCESSOR_VERSION_KEY,
        })
    }

    fn params(&self) -> Result<MechanismParams, Failure> {
        if let Some(path) = &self.mechanism_params {
            let bytes = validator::bounded::read_regular(path, 1 << 20)
                .map_err(|e| Failure::invalid(anyhow!("--mechanism-params: {e}")))?;
            return serde_json::from_slice(&bytes).map_err(|e| {
                Failure::invalid(anyhow!(
                    "--mechanism-params {}: not mechanism parameters: {e}",
                    path.display()
                ))
            });
        }
        let mut params = match self.mechanism {
            Mechanism::N => MechanismParams::default(),
            Mechanism::F => MechanismParams::successor(),
        };
        // N's --sample_min sets its eval-set size; the successor keeps 3 unless told.
        if self.mechanism == Mechanism::N || self.sample_min != 5 {
            params.sample_min = self.sample_min;
        }
        let cadence = self.weights_cadence.unwrap_or(match self.mechanism {
            Mechanism::N => Cadence::Steps,
            Mechanism::F => Cadence::Chain,
        });
        params.rules.weights_cadence = match cadence {
            Cadence::Steps => WeightsCadence::AfterStep {
                blocks_per_epoch: self.blocks_per_epoch.max(1),
            },
            Cadence::Chain => WeightsCadence::Chain,
        };
        Ok(params)
    }

    fn config(&self) -> Result<RunConfig, Failure> {
        let mut config = RunConfig::new(self.db.clone(), self.model_dir.clone());
        config.params = self.params()?;
        config.datasets_server.endpoint = self.datasets_server.trim_end_matches('/').to_owned();
        config.accept_params_change = self.accept_params_change;
        config.genesis = self.genesis;
        config.max_steps = self.max_steps;
        config.eval_shards_max = usize::from(self.eval_shards_max);
        config.not_found_retry_blocks = self.not_found_retry_blocks;
        if self.eval_queue.is_some() && self.eval_queue_insecure {
            config.warnings.push(
                "the evaluation queue is used without credentials (--eval-queue-insecure): \
                 anyone who reaches its server may delete or fill it (results stay signed)"
                    .into(),
            );
        }
        config.weights = WeightsConfig::new(self.version_key());
        config.weights.blocks_per_epoch = self.blocks_per_epoch.max(1);
        config.weights.mecid = self.mechid;
        config.weights.tick = Duration::from_secs_f64(self.weights_check_s.clamp(0.05, 3600.0));
        config.grace_period = Duration::from_secs(self.grace_period_minutes.saturating_mul(60));
        config.poll_interval = Some(Duration::from_secs(
            self.update_delay_minutes.saturating_mul(60).max(1),
        ));
        config.settle_before_step = self.chain_snapshot.is_some();
        config.tokenizers = self
            .tokenizer
            .iter()
            .filter_map(|(competition, source)| match source {
                TokenizerSource::Dir(dir) => Some((competition.clone(), dir.clone())),
                TokenizerSource::Hub { .. } => None,
            })
            .collect::<BTreeMap<_, _>>();
        self.observability(&mut config);
        let given: Vec<&CompetitionId> = self.tokenizer.iter().map(|(c, _)| c).collect();
        successor_tokenizers(&config, &given)?;
        Ok(config)
    }

    /// What operators see: where metrics are served, health, the step log, progress bars.
    fn observability(&self, config: &mut RunConfig) {
        config.metrics_addr = match self.metrics_addr {
            Some(MetricsAddr(addr)) => addr,
            None if self.demo => None,
            None => METRICS_ADDR_DEFAULT.parse().ok(),
        };
        config.health_stall = Duration::from_secs(self.health_stall_s.max(1));
        config.step_log.clone_from(&self.step_log);
        config.progress_bars = !self.logging_json;
    }

    fn log_level(&self) -> tracing::Level {
        if self.logging_trace {
            tracing::Level::TRACE
        } else if self.logging_debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        }
    }
}

/// Runs `validator run`; `settings` is the effective configuration, one line per flag.
pub fn run(args: RunArgs, settings: &[String]) -> Outcome {
    super::logging::init(args.logging_json, args.log_level());
    tracing::info!("validator {} starting", env!("CARGO_PKG_VERSION"));
    for line in settings {
        tracing::info!("setting {line}");
    }
    args.warn_ignored();
    if args.demo {
        return demo(&args);
    }
    let config = args.config()?;
    let runtime = runtime()?;
    let summary = runtime.block_on(async {
        let mut config = config;
        fetch_tokenizers(&args, &mut config).await?;
        let edges = edges(&args, &config).await?;
        run_until_stopped(config, edges).await
    })?;
    print_summary(&summary);
    Ok(())
}

/// The edges `validator run` was given.
type RunEdges = Edges<AnyChain, AnyStore, AnyEvaluator, Source, LiveWeights>;

async fn edges(args: &RunArgs, config: &RunConfig) -> Result<RunEdges, Failure> {
    let (chain, weights) = match &args.chain_snapshot {
        Some(path) => (
            AnyChain::Recorded(RecordedChain::read(path).map_err(Failure::invalid)?),
            None,
        ),
        None => {
            let options = args.chain.options().map_err(Failure::invalid)?;
            let chain = Chain::connect(options.clone())
                .await
                .map_err(Failure::failed)?;
            let weights = if args.offline {
                None
            } else {
                let setter = weights_chain(args, config, options).await?;
                (!args.dont_set_weights).then_some(setter)
            };
            (
                AnyChain::Live(LiveChain {
                    chain,
                    netuid: args.netuid,
                }),
                weights,
            )
        }
    };
    let store = super::edges::store_of(
        args.hub.as_deref(),
        &config.model_dir,
        args.disk_free_min_bytes,
        !args.logging_json,
    )?;
    let evaluator = evaluator(args, config).await?;
    let data =
        Source::new(&args.data_source, &SourceOptions::default()).map_err(Failure::invalid)?;
    Ok(Edges {
        chain,
        store,
        evaluator,
        data,
        weights,
    })
}

/// The wallet's hotkey and its own chain connection, after the start-up checks: registered
/// on the subnet, with a validator permit (else exit 2, with the fix), and a warning when the
/// subnet will refuse our version key.
async fn weights_chain(
    args: &RunArgs,
    config: &RunConfig,
    options: validator::chain::ChainOptions,
) -> Result<LiveWeights, Failure> {
    let wallet = WalletPath {
        root: args
            .wallet_path
            .clone()
            .unwrap_or_else(WalletPath::default_root),
        name: args.wallet_name.clone(),
        hotkey: args.wallet_hotkey.clone(),
    };
    let hotkey = wallet.load().map_err(|e| {
        Failure::Invalid(anyhow!(
            "{e}; a validator on a live chain signs weights with --wallet.name/--wallet.hotkey \
             (pass --offline to run without a wallet)"
        ))
    })?;
    let chain = Chain::connect(options).await.map_err(Failure::failed)?;
    let mechanism = SubnetMechanism {
        netuid: args.netuid,
        mecid: args.mechid,
    };
    // What the runtime offers, in one line; no mechanism or no weight call is the setting's
    // fault (exit 2), named.
    let offer = chain
        .runtime_offer(mechanism)
        .await
        .map_err(chain_failure)?;
    tracing::info!("{offer}");
    let standing = chain
        .standing(mechanism, hotkey.keypair.public_key().0)
        .await
        .map_err(Failure::failed)?;
    let netuid = args.netuid;
    let Some(uid) = standing.uid else {
        return Err(Failure::Invalid(anyhow!(
            "hotkey {} is not registered on netuid {netuid}: register it first \
             (`btcli subnet register --netuid {netuid} --wallet.name {} --wallet.hotkey {}`), \
             or pass --offline",
            hotkey.ss58,
            args.wallet_name,
            args.wallet_hotkey
        )));
    };
    if !standing.validator_permit {
        return Err(Failure::Invalid(anyhow!(
            "hotkey {} (uid {uid} on netuid {netuid}) has no validator permit: stake enough to \
             be among the subnet's validators and wait for the next epoch, or pass --offline",
            hotkey.ss58
        )));
    }
    if config.weights.version_key < standing.version_key_min {
        tracing::warn!(
            "netuid {netuid} requires version_key >= {}, and ours is {}: \
             every weight submission will be refused (pass --weights_version_key or upgrade)",
            standing.version_key_min,
            config.weights.version_key
        );
    }
    tracing::info!(
        "setting weights as uid {uid} on netuid {netuid} (version_key {}, every {} \
         blocks{})",
        config.weights.version_key,
        config.weights.blocks_per_epoch,
        if args.dont_set_weights {
            "; not sent: --dont_set_weights"
        } else {
            ""
        }
    );
    Ok(LiveWeights {
        chain,
        netuid,
        mecid: args.mechid,
        hotkey: std::sync::Arc::new(hotkey),
    })
}

/// A chain error as a failure: a request the chain cannot serve is the setting's (exit 2).
fn chain_failure(error: validator::chain::ChainError) -> Failure {
    match error {
        validator::chain::ChainError::Invalid(_) => Failure::invalid(error),
        other => Failure::failed(other),
    }
}

/// The devices of `--devices`, in order (`cuda`: every card nvidia-smi lists).
fn devices_of(list: &[String]) -> Result<Vec<Device>, Failure> {
    let mut devices = Vec::new();
    for entry in list {
        let entry = entry.trim();
        if entry == "cuda" || entry == "all" {
            let count = validator::eval::estimate::cuda_device_count().map_err(|why| {
                Failure::Failed(anyhow!(
                    "--devices {entry}: cannot list the CUDA devices: {why}"
                ))
            })?;
            devices.extend((0..count).map(|device_id| Device::Cuda { device_id }));
        } else if let Ok(device_id) = entry.parse::<u16>() {
            devices.push(Device::Cuda {
                device_id: i32::from(device_id),
            });
        } else {
            devices.push(
                entry
                    .parse::<Device>()
                    .map_err(|why| Failure::Invalid(anyhow!("--devices: {entry:?}: {why}")))?,
            );
        }
    }
    if devices.is_empty() {
        return Err(Failure::Invalid(anyhow!("--devices lists no device")));
    }
    Ok(devices)
}

/// The workers whose results the queue takes, refusing a queue the runner cannot
/// authenticate to unless `--eval-queue-insecure` says the operator accepts it.
fn trusted_workers(args: &RunArgs, options: &QueueOptions) -> Result<TrustedWorkers, Failure> {
    if !options.has_credentials() && !args.eval_queue_insecure {
        return Err(Failure::Invalid(anyhow!(
            "--eval-queue {} has no credentials (no user and password in the URL, no \
             --queue-credentials, no --queue-tls-cert): anyone who reaches the server could \
             delete or fill the queue. Give credentials (docs/operating.md shows a server \
             configuration), or pass --eval-queue-insecure to accept it",
            options.server()
        )));
    }
    let Some(path) = &args.queue_trusted_workers else {
        return Err(Failure::Invalid(anyhow!(
            "--eval-queue needs --queue-trusted-workers FILE: the public keys (U...) of the \
             workers whose results are taken, one a line (each `validator eval-worker` logs its \
             own when it starts)"
        )));
    };
    let trusted = TrustedWorkers::read(path).map_err(Failure::invalid)?;
    tracing::info!("taking results signed by {} trusted workers", trusted.len());
    Ok(trusted)
}

/// The evaluator the flags ask for: a pool over `--devices` (or the one `--device`), or remote
/// workers through `--eval-queue`.
async fn evaluator(args: &RunArgs, config: &RunConfig) -> Result<AnyEvaluator, Failure> {
    let devices = if args.devices.is_empty() {
        vec![args.device]
    } else {
        devices_of(&args.devices)?
    };
    // Each worker gets its share of the cores unless told otherwise.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let share = u16::try_from((cores / devices.len()).max(1)).unwrap_or(u16::MAX);
    let threads = Some(args.threads.unwrap_or(share));
    let successor = config.params.rules.successor.is_some();
    let make = |device| {
        let mut worker = super::edges::worker_on(
            device,
            args.eval_timeout_s,
            args.eval_memory_max_bytes,
            threads,
            &args.engine,
        )?;
        if successor {
            // The successor truncates nothing: the graph is built for its long traces.
            worker.max_seq_len = validator::eval::SUCCESSOR_MAX_SEQ_LEN;
        }
        Ok::<_, Failure>(worker)
    };
    if let Some(url) = &args.eval_queue {
        let options = args
            .queue
            .options(url, Duration::from_secs(args.eval_timeout_s.max(1)));
        let options_server = options.server();
        let trusted = trusted_workers(args, &options)?;
        let queue = QueueEvaluator::connect(options, make(Device::Cpu)?, trusted)
            .await
            .map_err(Failure::failed)?;
        tracing::info!(
            "evaluating through the queue at {} (queue {})",
            options_server,
            args.queue.queue_name
        );
        return Ok(AnyEvaluator::Queue(Box::new(queue)));
    }
    let mut members = Vec::new();
    for device in devices {
        members.push((device.to_string(), make(device)?));
    }
    Ok(AnyEvaluator::Pool(EvaluatorPool::new(members)))
}

/// Runs the loop until it is done or SIGTERM / SIGINT asks it to stop (it then stops the
/// evaluation child, lets the journal write in progress finish, and returns).
async fn run_until_stopped(config: RunConfig, edges: RunEdges) -> Result<RunSummary, Failure> {
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        super::edges::stop_signal().await;
        tracing::info!("stopping (the journal keeps everything done so far)");
        let _ = stop.send(true);
    });
    run_loop(config, edges, stop_seen)
        .await
        .map_err(|error| match error {
            RunError::Config(_) => Failure::invalid(error),
            RunError::Journal(error) => Failure::from(error),
            RunError::WriterStopped => Failure::Journal(error.into()),
            RunError::Fatal(_) => Failure::failed(error),
        })
}

/// Fetches each tokenizer given as `hub:OWNER/NAME@COMMIT` through the hub into
/// `--tokenizer-cache`, and gives its directory to the run. A repository or commit that is not
/// there, or not a tokenizer, is the operator's to fix (exit 2); an unreachable hub, 1.
async fn fetch_tokenizers(args: &RunArgs, config: &mut RunConfig) -> Result<(), Failure> {
    for (competition, source) in &args.tokenizer {
        let TokenizerSource::Hub { repo, commit } = source else {
            continue;
        };
        let endpoint = match args.hub.as_deref() {
            Some(local) if local.starts_with("local:") => {
                return Err(Failure::invalid(anyhow!(
                    "--tokenizer {competition}=hub:{repo}@{commit} needs a hub, and --hub is \
                     a directory ({local}): give the tokenizer as a directory"
                )));
            }
            endpoint => endpoint.map(str::to_owned),
        };
        let mut options = HubOptions::new(args.tokenizer_cache.clone());
        options.endpoint = endpoint;
        options.disk_free_min_bytes = 0;
        let hub = Hub::new(options).map_err(Failure::invalid)?;
        let dir = match hub
            .tokenizer_files(repo, commit, &args.tokenizer_cache)
            .await
        {
            Ok(Ok(dir)) => dir,
            Ok(Err(why)) => {
                return Err(Failure::invalid(anyhow!(
                    "--tokenizer {competition}=hub:{repo}@{commit}: {why}"
                )));
            }
            Err(error) => {
                return Err(Failure::failed(anyhow!(
                    "--tokenizer {competition}=hub:{repo}@{commit}: {error}"
                )));
            }
        };
        tracing::info!(
            "competition {competition}'s tokenizer: {repo} at {commit}, in {} (files hash {})",
            dir.display(),
            validator::dirhash::hash_of_tokenizer_files(&dir)
        );
        config.tokenizers.insert(competition.clone(), dir);
    }
    Ok(())
}

/// Under the successor's rules, every competition it can evaluate is scored with its own
/// tokenizer (Xenova/gpt-4 for competition 4), which the operator gives as a directory: a run
/// without it would only fail its steps, so it does not start.
fn successor_tokenizers(config: &RunConfig, given: &[&CompetitionId]) -> Result<(), Failure> {
    let Some(rules) = config.params.rules.successor.as_ref() else {
        return Ok(());
    };
    for entry in &config.params.schedule {
        for competition in &entry.competitions {
            let evaluable = rules.competition(&competition.id).is_some_and(|c| {
                c.tasks
                    .iter()
                    .all(|t| validator::runner::tasks::task_data(t).is_ok())
            });
            if let (true, Some(repo)) = (evaluable, &competition.tokenizer)
                && !given.contains(&&competition.id)
            {
                return Err(Failure::invalid(anyhow!(
                    "competition {id} is scored with the tokenizer of {repo}: pass \
                     --tokenizer {id}=hub:{repo}@COMMIT to fetch its files at that commit, or \
                     --tokenizer {id}=DIR, a directory holding that repository's \
                     tokenizer.json and tokenizer_config.json",
                    id = competition.id
                )));
            }
        }
    }
    Ok(())
}

fn print_summary(summary: &RunSummary) {
    if summary.stopped {
        println!(
            "stopped after {} completed steps; the next start resumes",
            summary.steps_completed
        );
    } else {
        println!("{} completed steps", summary.steps_completed);
    }
    println!("final weights: {}", weights_line(&summary.weights));
    for submission in &summary.submissions {
        match submission.blocks_due_to_included() {
            Some(blocks) => println!(
                "weights: {} included {blocks} blocks after due (due at block {})",
                submission.method, submission.block_due
            ),
            None => println!(
                "weights: {} not included: {:?}",
                submission.method, submission.outcome
            ),
        }
    }
    if summary.timings.is_empty() {
        return;
    }
    let total = |f: fn(&validator::runner::step::StepTiming) -> f64| -> f64 {
        summary.timings.iter().map(f).sum()
    };
    let evaluate = total(|t| t.evaluate_seconds);
    if evaluate <= 0.0 {
        println!("time per step: no model was evaluated");
        return;
    }
    let overhead = total(validator::runner::step::StepTiming::overhead_seconds);
    println!(
        "time per step (mean of {}): total {:.3} s; data {:.3} s, tokenise {:.3} s, evaluate {:.3} s (of which \
         session {:.3} s, scoring {:.3} s), journal {:.3} s; runner overhead {:.1}% of evaluation",
        summary.timings.len(),
        mean(total(|t| t.total_seconds), summary.timings.len()),
        mean(total(|t| t.data_seconds), summary.timings.len()),
        mean(total(|t| t.tokenize_seconds), summary.timings.len()),
        mean(evaluate, summary.timings.len()),
        mean(total(|t| t.session_seconds), summary.timings.len()),
        mean(total(|t| t.scoring_seconds), summary.timings.len()),
        mean(total(|t| t.journal_seconds), summary.timings.len()),
        100.0 * overhead / evaluate.max(1e-9),
    );
}

fn mean(total: f64, count: usize) -> f64 {
    total / u32::try_from(count.max(1)).map_or(1.0, f64::from)
}

/// The embedded scenario: written to a fresh directory, run, then replayed.
fn demo(args: &RunArgs) -> Outcome {
    let dir = match &args.demo_dir {
        Some(dir) => {
            let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
            if !empty {
                return Err(Failure::Invalid(anyhow!(
                    "--demo-dir {}: not empty (the demo starts from nothing)",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::Failed(anyhow!("{}: {e}", dir.display())))?;
            dir.clone()
        }
        None => demo_dir()?,
    };
    let files = write_demo(&dir).map_err(|e| Failure::Failed(anyhow!("{}: {e}", dir.display())))?;
    println!("demo: files, journal and model cache in {}", dir.display());
    let journal = dir.join("journal");
    let mut config = RunConfig::new(journal.clone(), dir.join("model-store"));
    config.max_steps = Some(args.max_steps.unwrap_or(DEMO_STEPS));
    config.eval_shards_max = usize::from(args.eval_shards_max);
    config.settle_before_step = true;
    config.tokenizers = BTreeMap::from([
        (CompetitionId::new("l3"), files.tokenizer_l3.clone()),
        (CompetitionId::new("s1"), files.tokenizer_s1.clone()),
    ]);
    config.step_retry.first = Duration::from_secs(1);
    args.observability(&mut config);
    let chain = RecordedChain::read(&files.snapshot).map_err(Failure::invalid)?;
    let mut store = LocalStore::new(files.hub.clone(), config.model_dir.clone());
    store.disk_free_min_bytes = 64 << 20;
    // One runtime for both: the queue's result receiver is a task on it.
    let runtime = runtime()?;
    let evaluator = runtime.block_on(evaluator(args, &config))?;
    let data = Source::new(
        &SourceSpec::Local(files.data.clone()),
        &SourceOptions::default(),
    )
    .map_err(Failure::invalid)?;
    let edges = Edges {
        chain: AnyChain::Recorded(chain),
        store: AnyStore::Local(store),
        evaluator,
        data,
        weights: None,
    };
    let summary = runtime.block_on(run_until_stopped(config, edges))?;
    print_summary(&summary);
    check_journal(&journal)
}

/// A fresh directory for the demo under the system's temporary directory.
fn demo_dir() -> Result<PathBuf, Failure> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("validator-demo-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Replays the journal and says whether every recorded step and weight vector matches.
fn check_journal(journal: &Path) -> Outcome {
    let journal = Journal::open_existing(journal)?;
    let options = ReplayOptions {
        from_block: 0,
        to_block: None,
        use_checkpoints: false,
    };
    let report = replay_journal(&journal, options).map_err(|e| Failure::Journal(e.into()))?;
    match &report.divergence {
        None => {
            println!(
                "replay: {} records, {} steps: all recorded results match (replay --db {})",
                report.records_folded,
                report.steps.len(),
                journal.path().display()
            );
            Ok(())
        }
        Some(divergence) => Err(Failure::Failed(anyhow!(
            "replay of the demo's journal diverged: {divergence:?}"
        ))),
    }
}
