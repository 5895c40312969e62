//! The edges a command builds from its flags, shared by `validator run` and
//! `validator eval-worker`: the model store, an evaluation worker on a device, the queue's
//! flags, and the stop signal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use validator::eval::runtime::Device;
use validator::eval::worker::WorkerEvaluator;
use validator::hub::local::LocalStore;
use validator::hub::{Hub, HubOptions};
use validator::runner::live::AnyStore;
use validator::runner::queue::QueueOptions;

use super::Failure;

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

/// The model store `--hub` names: a local directory (`local:DIR`) or a Hugging Face-compatible
/// hub, caching into `model_dir`.
pub fn store_of(
    hub: Option<&str>,
    model_dir: &Path,
    disk_free_min_bytes: u64,
    progress: bool,
) -> Result<AnyStore, Failure> {
    check_model_dir(model_dir)?;
    Ok(match hub {
        Some(hub) if hub.starts_with("local:") => {
            let root = PathBuf::from(hub.trim_start_matches("local:"));
            if !root.is_dir() {
                return Err(Failure::Invalid(anyhow!(
                    "--hub {hub}: {} is not a directory",
                    root.display()
                )));
            }
            let mut store = LocalStore::new(root, model_dir.to_owned());
            store.disk_free_min_bytes = disk_free_min_bytes;
            AnyStore::Local(store)
        }
        endpoint => {
            let mut options = HubOptions::new(model_dir.to_owned());
            options.endpoint = endpoint.map(str::to_owned);
            options.disk_free_min_bytes = disk_free_min_bytes;
            options.progress = progress;
            AnyStore::Hub(Hub::new(options).map_err(Failure::invalid)?)
        }
    })
}

/// An evaluation worker on `device`: children of this very executable.
pub fn worker_on(
    device: Device,
    eval_timeout_s: u64,
    memory_max_bytes: Option<u64>,
    threads: Option<u16>,
    engine: &super::eval::EngineArgs,
) -> Result<WorkerEvaluator, Failure> {
    let program = std::env::current_exe()
        .map_err(|e| Failure::Failed(anyhow!("cannot find our own executable: {e}")))?;
    let mut worker =
        WorkerEvaluator::new(program, device, Duration::from_secs(eval_timeout_s.max(1)));
    if let Some(bytes) = memory_max_bytes {
        worker.memory_max_bytes = bytes;
    }
    if let Some(threads) = threads {
        worker.threads = usize::from(threads);
    }
    engine.configure(&mut worker)?;
    resource_limits(&worker)?;
    Ok(worker)
}

/// Returns when SIGTERM or SIGINT arrives.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Raises the open-files limit to the hard one, says once what this process may use, and
/// warns when the evaluation's children would run under less than they ask for (then a model
/// that fails under the lower limit is not blamed: the step fails instead). Too few open files
/// for the validator at all is a clear exit, not a loop of failed spawns.
pub fn resource_limits(worker: &WorkerEvaluator) -> Result<(), Failure> {
    use validator::eval::limits::{OPEN_FILES_MIN, describe_inherited, raise_open_files};
    let open_files = raise_open_files();
    tracing::info!("resource limits: {}", describe_inherited());
    if open_files < OPEN_FILES_MIN {
        return Err(Failure::Failed(anyhow!(
            "ACTION NEEDED: the open-files limit is {open_files}; the validator needs at least \
             {OPEN_FILES_MIN} (raise it: ulimit -n, or LimitNOFILE= in its systemd unit)"
        )));
    }
    let asked = |value: Option<u64>, unit: &str| {
        value.map_or_else(|| "no limit".to_owned(), |v| format!("{v}{unit}"))
    };
    let lowered: Vec<String> = worker
        .limits_asked()
        .iter()
        .filter(|limits| limits.are_lowered_here())
        .map(|limits| {
            format!(
                "{} of address space and {} of CPU time",
                asked(limits.address_space_bytes, " bytes"),
                asked(limits.cpu_seconds, " s")
            )
        })
        .collect();
    if !lowered.is_empty() {
        tracing::warn!(
            "ACTION NEEDED: the evaluation's children ask for {}, above this machine's hard \
             limits; they run under those, and a model that fails under them is not blamed: \
             the step fails instead. Raise the limits (LimitAS=, LimitCPU=, prlimit) to \
             evaluate every model",
            lowered.join(", and ")
        );
    }
    Ok(())
}

/// The model cache, checked once at start: a directory this process can make and write in.
/// A cache that is a file, `/dev/null` or not writable cannot be mended by retrying (exit 2,
/// the setting); one on a full disk is the machine's (exit 1). Either would otherwise leave the
/// loop retrying every fetch forever.
pub fn check_model_dir(dir: &Path) -> Result<(), Failure> {
    let refuse = |why: String| Failure::Invalid(anyhow!("--model_dir {}: {why}", dir.display()));
    if let Err(error) = std::fs::create_dir_all(dir) {
        return Err(refuse(format!("cannot be made a directory: {error}")));
    }
    let metadata = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    if !metadata.is_dir() {
        return Err(refuse("is not a directory".into()));
    }
    let probe = dir.join(format!(".validator-probe-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, b"probe")?;
            file.sync_all()
        });
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(28) => Err(Failure::Failed(anyhow!(
            "ACTION NEEDED: the model cache's disk ({}) is full: free space (validator model \
             cache --sweep) first",
            dir.display()
        ))),
        Err(error) => Err(refuse(format!("cannot be written in: {error}"))),
    }
}
