//! Evaluation by remote workers over NATS JetStream.
//!
//! Three things live on the server, named after the queue (`--queue-name`, default
//! `validator`):
//!
//! - `<NAME>_JOBS`, a work-queue stream on subject `<name>.jobs`, pulled by the durable consumer
//!   `workers` that every `validator eval-worker` shares. A job is acknowledged only after its
//!   result is published; one not acknowledged within the ack wait (the worker died, hung or is
//!   slow) is delivered again, to whichever worker pulls next, up to `max_deliver` times.
//! - `<NAME>_BATCHES`, an object store holding each tokenised batch once, named by its digest:
//!   a job names the batch, it does not carry it.
//! - `<NAME>_RESULTS`, a work-queue stream on subject `<name>.results`, pulled by the runner's
//!   durable consumer `runner`.
//!
//! A worker trusts nothing it is sent but the job's words: it fetches the model itself through
//! its own store (the hub code and its hash check), checks the batch against its digest, and
//! evaluates in its own worker child. The runner takes the first result per (step, uid) that
//! names the batch digest and model hash it sent, with a loss per sample; a result that does not
//! is refused and journaled as refused, and the runner keeps waiting. Duplicates (a slow worker
//! overtaken by a redelivery) find nobody waiting and are dropped, so a job never produces a
//! second `LossesComputed`. Who may publish results is the server's to decide (credentials,
//! TLS, per-user permissions), not the runner's.
//!
//! This module is what both ends share: the options, the messages, the connection and the
//! server's streams. The runner's side is [`QueueEvaluator`], the worker's [`RemoteWorker`].

mod evaluator;
mod signing;
mod worker;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use serde::{Deserialize, Serialize};

use crate::machine::event::{EvalOutcome, EvaluatedBy};
use crate::machine::model_id::ModelId;

pub use evaluator::QueueEvaluator;
pub use signing::{TrustedWorkers, WorkerKey};
pub use worker::RemoteWorker;

/// The version of the job and result messages; a worker refuses (terminates) a job of another.
pub const MESSAGE_VERSION: u32 = 2;
/// How long a pull waits on the server for a message before asking again.
pub(super) const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// The pause after a failed call to the server (it is restarting, the network is down).
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the queue is and how jobs are redelivered. Its `Debug` leaves the URL's credentials
/// out.
#[derive(Clone)]
pub struct QueueOptions {
    /// The server: `nats://HOST:PORT` (or `tls://`), user and password in it if used.
    pub url: String,
    /// Names the streams, the object store and the subjects, so validators can share a server.
    pub name: String,
    /// A NATS credentials file (JWT and NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// The CA that signed the server's certificate (TLS is then required).
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key, for servers that verify clients.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// How long a worker may hold a job before it is delivered to another.
    pub ack_wait: Duration,
    /// How many times a job is delivered at most.
    pub max_deliver: i64,
    /// How long the runner waits for a job's result before it fails the step (retried later).
    pub job_deadline: Duration,
    /// Jobs the runner keeps in flight.
    pub in_flight_max: usize,
    /// The workers the operator runs, for cutting a step's last models into shards (1: never).
    pub workers: usize,
    /// An nkey seed to authenticate with when the URL and the credentials file give nothing
    /// (a worker's own key). Never printed.
    pub nkey_seed: Option<String>,
}

impl std::fmt::Debug for QueueOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueOptions")
            .field("server", &self.server())
            .field("name", &self.name)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("job_deadline", &self.job_deadline)
            .field("in_flight_max", &self.in_flight_max)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl QueueOptions {
    /// Options for `url` with the defaults that fit an evaluation timeout of `eval_timeout`:
    /// a job is redelivered after the timeout plus 10 minutes for fetching the model, at most
    /// three times, and the runner waits for all three.
    pub fn new(url: &str, eval_timeout: Duration) -> Self {
        let ack_wait = eval_timeout.saturating_add(Duration::from_secs(600));
        Self {
            url: url.to_owned(),
            name: "validator".to_owned(),
            credentials_file: None,
            tls_ca: None,
            tls_client: None,
            ack_wait,
            max_deliver: 3,
            job_deadline: ack_wait
                .saturating_mul(3)
                .saturating_add(Duration::from_secs(60)),
            in_flight_max: 256,
            workers: 1,
            nkey_seed: None,
        }
    }

    /// Whether this client authenticates to the server: a user and password (or token) in
    /// the URL, a credentials file, a client certificate, or an nkey.
    pub fn has_credentials(&self) -> bool {
        split_credentials(&self.url).1.is_some()
            || self.credentials_file.is_some()
            || self.tls_client.is_some()
            || self.nkey_seed.is_some()
    }

    /// The server's URL without its credentials, for messages and logs.
    pub fn server(&self) -> String {
        match split_credentials(&self.url) {
            (url, Some(_)) => url.replacen("://", "://***@", 1),
            (url, None) => url,
        }
    }

    pub(super) fn jobs_subject(&self) -> String {
        format!("{}.jobs", self.name)
    }

    pub(super) fn results_subject(&self) -> String {
        format!("{}.results", self.name)
    }

    fn upper(&self) -> String {
        self.name.to_uppercase()
    }
}

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue's name cannot name streams.
    #[error("evaluation queue name {0:?}: use letters, digits, '-' and '_' only")]
    Name(String),
    /// The server could not be reached or refused us.
    #[error("cannot connect to the evaluation queue {url}: {why}")]
    Connect {
        /// The server.
        url: String,
        /// Why.
        why: String,
    },
    /// A stream, consumer or object store could not be made or found.
    #[error("the evaluation queue {url}: {why}")]
    Server {
        /// The server.
        url: String,
        /// Why.
        why: String,
    },
    /// The worker cannot go on (its device is gone, its store is misconfigured).
    #[error("the evaluation worker stops: {0}")]
    Worker(String),
    /// A worker's key, or the list of trusted workers, cannot be used.
    #[error("worker keys: {0}")]
    Key(String),
    /// The queue's streams or consumers are not as the runner made them: changed behind its
    /// back (a subject added, a stream replaced). Nothing from them is trusted.
    #[error("the evaluation queue {url} was changed behind our back: {why}")]
    Tampered {
        /// The server.
        url: String,
        /// What differs.
        why: String,
    },
}

/// One evaluation job, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMessage {
    /// [`MESSAGE_VERSION`].
    pub version: u32,
    /// Unique per publication by the runner (the server's deduplication id).
    pub job_id: String,
    /// The step.
    pub step: u64,
    /// The participant.
    pub uid: u16,
    /// Its hotkey (the salted hash needs it).
    pub hotkey: String,
    /// The committed model, which the worker fetches and verifies itself.
    pub model: ModelId,
    /// The committed hash a result must name.
    pub model_hash: String,
    /// The largest repository the competition accepts.
    pub repo_bytes_max: u64,
    /// The digest of the tokenised batch (or shard), also its object's name.
    pub batch_digest: String,
    /// Which shard of the model's evaluation this is (0 when it was not cut).
    #[serde(default)]
    pub shard: usize,
    /// The bytes of the batch's object: a worker reads no more (a job naming a bigger
    /// object is refused before it is read).
    #[serde(default)]
    pub batch_bytes: u64,
}

/// The longest hash, digest or job id a message may carry: what the runner and the workers
/// produce is far shorter, and anything longer is refused before it is used or journaled.
pub const FIELD_CHARS_MAX: usize = 128;

impl JobMessage {
    /// Why a worker cannot take this job, whoever sent it: a field of the wrong shape or past
    /// its bound (the job is dropped for good, and the worker goes on with the next).
    pub fn refusal(&self) -> Option<String> {
        if self.version != MESSAGE_VERSION {
            return Some(format!("message version {}", self.version));
        }
        let long = [&self.job_id, &self.model_hash, &self.batch_digest]
            .into_iter()
            .any(|field| field.chars().count() > FIELD_CHARS_MAX);
        if long {
            return Some(format!(
                "a field is longer than {FIELD_CHARS_MAX} characters"
            ));
        }
        if !crate::hub::cache::safe_hotkey(&self.hotkey) {
            return Some("its hotkey is not an SS58 address".into());
        }
        if let Err(why) = self.model.check_evaluable() {
            return Some(format!("its model cannot be evaluated: {why}"));
        }
        if self.batch_bytes == 0 || self.batch_bytes > BATCH_BYTES_MAX {
            return Some(format!(
                "its batch of {} bytes is not in 1..={BATCH_BYTES_MAX}",
                self.batch_bytes
            ));
        }
        None
    }
}

/// The largest tokenised batch a job may name: N's batches are a few megabytes, and a
/// thousand samples of 8,192 tokens stay under it.
pub const BATCH_BYTES_MAX: u64 = 128 * 1024 * 1024;

/// A worker's result, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultMessage {
    /// [`MESSAGE_VERSION`].
    pub version: u32,
    /// The job answered.
    pub job_id: String,
    /// The step.
    pub step: u64,
    /// The participant.
    pub uid: u16,
    /// The hash of the model the worker verified and evaluated.
    pub model_hash: String,
    /// The digest of the batch the worker evaluated, computed from what it read.
    pub batch_digest: String,
    /// The job's `shard`.
    #[serde(default)]
    pub shard: usize,
    /// The losses, or why there are none.
    pub outcome: EvalOutcome,
    /// Who evaluated.
    pub worker: EvaluatedBy,
    /// Seconds building the session.
    pub session_seconds: f64,
    /// Seconds scoring.
    pub scoring_seconds: f64,
    /// The public nkey (`U...`) of the worker that signed this result.
    #[serde(default)]
    pub worker_key: String,
    /// Its Ed25519 signature over everything else here (see `signing`), base64.
    #[serde(default)]
    pub signature: String,
}

/// The name of a batch's object: its digest, in the URL-safe alphabet.
pub(super) fn batch_object(digest: &str) -> String {
    format!("batch-{}", digest.replace('/', "_").replace('+', "-"))
}

/// `scheme://[USER:PASSWORD@|TOKEN@]HOST:PORT` as the URL without its credentials, and them.
fn split_credentials(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    // A NATS URL has no path, so the last '@' ends the credentials (a password may hold '/').
    let Some(at) = rest.rfind('@') else {
        return (url.to_owned(), None);
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    let credentials = match userinfo.split_once(':') {
        Some((user, password)) => (user.to_owned(), Some(password.to_owned())),
        None => (userinfo.to_owned(), None),
    };
    (format!("{scheme}://{host}"), Some(credentials))
}

#[cfg(test)]
mod tests {
    use super::split_credentials;

    #[test]
    fn credentials_come_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://runner:s3:cret@queue:4222"),
            (
                "nats://queue:4222".to_owned(),
                Some(("runner".to_owned(), Some("s3:cret".to_owned())))
            )
        );
        assert_eq!(
            split_credentials("tls://TOKEN@queue:4222"),
            (
                "tls://queue:4222".to_owned(),
                Some(("TOKEN".to_owned(), None))
            )
        );
        assert_eq!(
            split_credentials("nats://127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), None)
        );
    }

    /// Postmortem (1eefe02): a password holding '/' or '@' was cut at the wrong place, and
    /// the options' `Debug` printed the URL with its credentials.
    #[test]
    fn a_password_with_slashes_and_ats_stays_whole_and_out_of_debug() {
        assert_eq!(
            split_credentials("nats://runner:p/ss@w@rd@queue:4222"),
            (
                "nats://queue:4222".to_owned(),
                Some(("runner".to_owned(), Some("p/ss@w@rd".to_owned())))
            )
        );
        let options = super::QueueOptions::new(
            "nats://runner:p/ss@w@rd@queue:4222",
            std::time::Duration::from_secs(1),
        );
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("p/ss") && !shown.contains("w@rd"),
            "{shown}"
        );
        assert_eq!(options.server(), "nats://***@queue:4222");
    }
}

/// The server's streams, consumers and object store.
#[derive(Clone)]
pub(super) struct Connected {
    pub(super) js: Context,
    pub(super) batches: ObjectStore,
    pub(super) jobs: stream::Stream,
    pub(super) results: stream::Stream,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

fn server(options: &QueueOptions) -> impl Fn(String) -> QueueError + '_ {
    |why| QueueError::Server {
        url: options.server(),
        why,
    }
}

/// The work-queue stream `name` on `subject`, as this validator makes it.
fn work_queue(name: String, subject: String) -> stream::Config {
    stream::Config {
        name,
        subjects: vec![subject],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        max_age: Duration::from_secs(24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// The queue's two streams, made again if they are gone (a deleted stream is an operational
/// fault, mended here), and checked to be as this validator makes them: each holds exactly
/// its subject, a file-backed work queue. A stream changed behind our back (a subject added
/// by a client that may publish there) is [`QueueError::Tampered`]: nothing from it is
/// trusted, and the run stops with the reason.
pub(super) async fn assert_streams(
    js: &Context,
    options: &QueueOptions,
) -> Result<(stream::Stream, stream::Stream), QueueError> {
    let server = server(options);
    let upper = options.upper();
    let mut made = Vec::new();
    for (name, subject) in [
        (format!("{upper}_JOBS"), options.jobs_subject()),
        (format!("{upper}_RESULTS"), options.results_subject()),
    ] {
        let mut stream = js
            .get_or_create_stream(work_queue(name.clone(), subject.clone()))
            .await
            .map_err(|e| server(format!("the stream {name}: {e}")))?;
        let config = &stream
            .info()
            .await
            .map_err(|e| server(format!("the stream {name}: {e}")))?
            .config;
        let as_made = config.subjects == [subject.clone()]
            && config.retention == RetentionPolicy::WorkQueue
            && config.storage == StorageType::File;
        if !as_made {
            return Err(QueueError::Tampered {
                url: options.server(),
                why: format!(
                    "the stream {name} takes {:?} as a {:?} {:?} stream, not [{subject:?}] as a \
                     file-backed work queue",
                    config.subjects, config.storage, config.retention
                ),
            });
        }
        made.push(stream);
    }
    let results = made.pop();
    let jobs = made.pop();
    jobs.zip(results)
        .ok_or_else(|| server("the streams could not be made".into()))
}

/// The workers' consumer with the runner's settings (its ack wait, its deliveries), made or
/// updated: a worker that started first made it with its own.
pub(super) async fn workers_consumer_as_runner(
    jobs: &stream::Stream,
    options: &QueueOptions,
) -> Result<PullConsumer, QueueError> {
    let config = pull::Config {
        durable_name: Some("workers".to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: options.ack_wait,
        max_deliver: options.max_deliver,
        ..Default::default()
    };
    // A durable's create with another configuration updates what the server lets change
    // (the ack wait, the deliveries).
    jobs.create_consumer(config)
        .await
        .map_err(|e| server(options)(format!("the consumer workers: {e}")))
}

/// Connects and makes (or finds) the queue's streams and object store.
pub(super) async fn connect(
    options: &QueueOptions,
    client_name: &str,
) -> Result<Connected, QueueError> {
    let valid = !options.name.is_empty()
        && options
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(QueueError::Name(options.name.clone()));
    }
    let connect_error = |why: String| QueueError::Connect {
        url: options.server(),
        why,
    };
    let mut connect = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_secs(10));
    // The client reads no credentials from the URL itself: they are taken out of it here.
    let (url, credentials) = split_credentials(&options.url);
    match (credentials, &options.nkey_seed, &options.credentials_file) {
        (Some((user, Some(password))), _, _) => connect = connect.user_and_password(user, password),
        (Some((token, None)), _, _) => connect = connect.token(token),
        (None, Some(seed), None) => connect = connect.nkey(seed.clone()),
        (None, _, _) => {}
    }
    if let Some(path) = &options.credentials_file {
        connect = connect
            .credentials_file(path)
            .await
            .map_err(|e| connect_error(format!("credentials {}: {e}", path.display())))?;
    }
    if let Some(ca) = &options.tls_ca {
        connect = connect.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let Some((cert, key)) = &options.tls_client {
        connect = connect.add_client_certificate(cert.clone(), key.clone());
    }
    // The first connection must succeed (a wrong address or credentials is the operator's to
    // fix, and said at once); after it the client reconnects by itself, for good.
    let client = tokio::time::timeout(Duration::from_secs(30), connect.connect(url.as_str()))
        .await
        .map_err(|_| connect_error("no answer within 30 s".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    let js = jetstream::new(client);
    let server = server(options);
    let upper = options.upper();
    let (jobs, results) = assert_streams(&js, options).await?;
    let bucket = format!("{upper}_BATCHES");
    let batches = match js.get_object_store(&bucket).await {
        Ok(store) => store,
        Err(_) => js
            .create_object_store(object_store::Config {
                bucket: bucket.clone(),
                max_age: Duration::from_secs(24 * 3600),
                storage: StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| server(format!("the batch store {bucket}: {e}")))?,
    };
    Ok(Connected {
        js,
        batches,
        jobs,
        results,
    })
}

pub(super) async fn durable(
    stream: &stream::Stream,
    name: &str,
    options: &QueueOptions,
) -> Result<PullConsumer, QueueError> {
    stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: options.ack_wait,
                max_deliver: options.max_deliver,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| server(options)(format!("the consumer {name}: {e}")))
}

/// The server's JetStream context and the consumer workers pull jobs from, the queue made if
/// it is not there yet: what a worker (or a test playing a hostile one) starts from.
pub async fn workers_consumer(
    options: &QueueOptions,
) -> Result<(Context, PullConsumer), QueueError> {
    let connected = connect(options, "validator-eval-worker").await?;
    let consumer = durable(&connected.jobs, "workers", options).await?;
    Ok((connected.js, consumer))
}

/// The subject results are published to.
pub fn results_subject(options: &QueueOptions) -> String {
    options.results_subject()
}

/// The subject jobs are published to.
pub fn jobs_subject(options: &QueueOptions) -> String {
    options.jobs_subject()
}

/// Publishes `payload` on `subject` under the deduplication id `id`, again until the server
/// acknowledges it or `deadline` passes (the id makes a repeat of a publication the server did
/// take harmless); `what` names it in the log.
pub(super) async fn publish_until(
    js: &Context,
    subject: String,
    payload: &[u8],
    id: &str,
    what: &str,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        let publish = PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(id);
        let sent = match js.send_publish(subject.clone(), publish).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match sent {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() < deadline => {
                tracing::warn!("publishing {what}: {why}; again");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(why) => return Err(why),
        }
    }
}
