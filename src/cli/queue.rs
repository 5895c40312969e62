//! `validator eval-worker`: a remote evaluation worker pulling jobs from the NATS JetStream
//! queue a `validator run --eval-queue` publishes to; and the queue flags both share.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use validator::eval::runtime::Device;
use validator::runner::queue::{QueueOptions, RemoteWorker};

use super::{Failure, Outcome, runtime};

/// How to reach and use the queue (the same on the runner and its workers).
#[derive(Debug, Clone, clap::Args)]
pub struct QueueArgs {
    /// The queue's name on the server: it names the streams (<NAME>_JOBS, <NAME>_RESULTS)
    /// and the batch store (<NAME>_BATCHES), so validators can share a server.
    #[arg(long = "queue-name", default_value = "validator")]
    pub queue_name: String,
    /// A NATS credentials file (the server decides what it may publish and pull).
    #[arg(long = "queue-credentials")]
    pub queue_credentials: Option<PathBuf>,
    /// The CA certificate that signed the server's: TLS is then required.
    #[arg(long = "queue-tls-ca")]
    pub queue_tls_ca: Option<PathBuf>,
    /// A client certificate, for a server that verifies its clients (with --queue-tls-key).
    #[arg(long = "queue-tls-cert", requires = "queue_tls_key")]
    pub queue_tls_cert: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long = "queue-tls-key", requires = "queue_tls_cert")]
    pub queue_tls_key: Option<PathBuf>,
    /// Seconds a worker may hold a job before it goes to another [default: the evaluation
    /// timeout plus 600 for fetching the model].
    #[arg(long = "queue-ack-wait-s", value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_ack_wait_s: Option<u64>,
    /// How many times a job is delivered at most.
    #[arg(long = "queue-max-deliver", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub queue_max_deliver: u16,
    /// Seconds the runner waits for a job's result before failing the step, to try it again
    /// [default: every delivery's ack wait, plus 60].
    #[arg(long = "queue-job-deadline-s", value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_job_deadline_s: Option<u64>,
    /// How many workers pull from the queue (the runner cannot count them): with more than
    /// one, a step's models that do not share them evenly are cut into shards, as --devices.
    #[arg(long = "queue-workers", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub queue_workers: u16,
}

impl QueueArgs {
    /// The options for the server at `url`.
    pub fn options(&self, url: &str, eval_timeout: Duration) -> QueueOptions {
        let mut options = QueueOptions::new(url, eval_timeout);
        options.name.clone_from(&self.queue_name);
        options.credentials_file.clone_from(&self.queue_credentials);
        options.tls_ca.clone_from(&self.queue_tls_ca);
        options.tls_client = self.queue_tls_cert.clone().zip(self.queue_tls_key.clone());
        if let Some(seconds) = self.queue_ack_wait_s {
            options.ack_wait = Duration::from_secs(seconds);
        }
        options.max_deliver = i64::from(self.queue_max_deliver);
        options.workers = usize::from(self.queue_workers);
        // Jobs go out a little ahead of the workers, not all at once: a job's deadline runs
        // from its publication, and one waiting behind a long queue would pass it unstarted.
        options.in_flight_max = options.workers.saturating_mul(2);
        options.job_deadline = match self.queue_job_deadline_s {
            Some(seconds) => Duration::from_secs(seconds),
            None => options
                .ack_wait
                .saturating_mul(u32::from(self.queue_max_deliver))
                .saturating_add(Duration::from_secs(60)),
        };
        options
    }
}

/// `validator eval-worker`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalWorkerArgs {
    /// The NATS JetStream server: nats://[USER:PASSWORD@]HOST:PORT, or tls://HOST:PORT.
    #[arg(long)]
    queue: String,
    #[command(flatten)]
    queue_args: QueueArgs,
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
    /// Log as JSON lines.
    #[arg(long = "logging.json", visible_alias = "logging-json")]
    logging_json: bool,
}

/// Pulls and evaluates jobs until SIGTERM / SIGINT (the job in hand is given back) or
/// `--jobs-max`.
pub fn run(args: &EvalWorkerArgs) -> Outcome {
    super::logging::init(args.logging_json, tracing::Level::INFO);
    let store = super::run::store_of(
        args.hub.as_deref(),
        &args.model_dir,
        args.disk_free_min_bytes,
        false,
    )?;
    let evaluator = super::run::worker_on(
        args.device,
        args.eval_timeout_s,
        args.eval_memory_max_bytes,
        args.threads,
        &args.engine,
    )?;
    let options = args
        .queue_args
        .options(&args.queue, Duration::from_secs(args.eval_timeout_s.max(1)));
    let worker = RemoteWorker {
        options,
        store,
        evaluator,
        jobs_max: args.jobs_max,
    };
    runtime()?.block_on(async move {
        let (stop, stop_seen) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::run::stop_signal().await;
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
