//! `validator eval-worker`: a remote evaluation worker pulling jobs from the NATS JetStream
//! queue a `validator run --eval-queue` publishes to.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use validator::eval::runtime::Device;
use validator::runner::queue::{RemoteWorker, WorkerKey};

use super::{Failure, Outcome, runtime};

/// `validator eval-worker`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalWorkerArgs {
    /// The NATS JetStream server: nats://[USER:PASSWORD@]HOST:PORT, or tls://HOST:PORT.
    #[arg(long)]
    queue: String,
    #[command(flatten)]
    queue_args: super::edges::QueueArgs,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// ONNX Runtime CPU threads [default: this machine's cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// This worker's model cache.
    #[arg(
        long = "model_dir",
        visible_alias = "model-dir",
        default_value = "model-store"
    )]
    model_dir: PathBuf,
    /// The model hub: a Hugging Face-compatible URL (default HF_ENDPOINT or huggingface.co),
    /// or local:DIR holding DIR/<namespace>/<name>/<commit>/.
    #[arg(long)]
    hub: Option<String>,
    /// Free bytes the model cache's disk must keep after a download.
    #[arg(long = "disk-free-min-bytes", default_value_t = 1 << 30)]
    disk_free_min_bytes: u64,
    /// Longest evaluation of one model, in seconds.
    #[arg(
        long = "eval-timeout-s",
        visible_alias = "eval_timeout_s",
        default_value_t = 720
    )]
    eval_timeout_s: u64,
    /// The most memory a model's estimate may need, in bytes (default as `validator run`).
    #[arg(
        long = "eval-memory-max-bytes",
        visible_alias = "eval_memory_max_bytes"
    )]
    eval_memory_max_bytes: Option<u64>,
    #[command(flatten)]
    engine: super::eval::EngineArgs,
    /// Stop after this many jobs.
    #[arg(long = "jobs-max")]
    jobs_max: Option<u64>,
    /// This worker's key: a file holding its nkey seed (SU..., mode 0600), made when it does
    /// not exist. The worker signs every result with it (the runner takes only results of
    /// the keys in its --queue-trusted-workers) and, without other credentials,
    /// authenticates to the server with it.
    #[arg(long = "worker-key")]
    worker_key: PathBuf,
    /// Log as JSON lines.
    #[arg(long = "logging.json", visible_alias = "logging-json")]
    logging_json: bool,
}

/// Pulls and evaluates jobs until SIGTERM / SIGINT (the job in hand is given back) or
/// `--jobs-max`.
pub fn run(args: &EvalWorkerArgs) -> Outcome {
    super::logging::init(args.logging_json, tracing::Level::INFO);
    let store = super::edges::store_of(
        args.hub.as_deref(),
        &args.model_dir,
        args.disk_free_min_bytes,
        false,
    )?;
    let evaluator = super::edges::worker_on(
        args.device,
        args.eval_timeout_s,
        args.eval_memory_max_bytes,
        args.threads,
        &args.engine,
    )?;
    let mut options = args
        .queue_args
        .options(&args.queue, Duration::from_secs(args.eval_timeout_s.max(1)));
    let (key, made) = WorkerKey::load_or_create(&args.worker_key).map_err(Failure::invalid)?;
    if made {
        tracing::warn!(
            "a new worker key is in {}; add its public key to the runner's \
             --queue-trusted-workers",
            args.worker_key.display()
        );
    }
    tracing::info!("this worker's public key: {}", key.public_key());
    if !options.has_credentials() {
        options.nkey_seed = key.seed();
    }
    let worker = RemoteWorker {
        options,
        store,
        evaluator,
        jobs_max: args.jobs_max,
        key,
    };
    runtime()?.block_on(async move {
        let (stop, stop_seen) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::edges::stop_signal().await;
            let _ = stop.send(true);
        });
        let done = worker
            .serve(stop_seen)
            .await
            .map_err(|e| Failure::Failed(anyhow!(e)))?;
        println!("eval-worker: {done} jobs evaluated");
        Ok(())
    })
}
