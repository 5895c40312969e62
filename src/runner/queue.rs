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

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::object_store::{self, ObjectStore};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind, Context};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use super::edges::{
    EdgeError, EvalRequest, Evaluated, ModelEvaluator, ModelStore, TokenizedBatch, Verdict,
    batch_digest,
};
use crate::eval::batch::ModelChecked;
use crate::eval::tokenize::Prepared;
use crate::machine::event::{EvalOutcome, EvaluatedBy, EvaluationReported, ReportVerdict};
use crate::machine::model_id::ModelId;
use crate::machine::params::Competition;

/// The version of the job and result messages; a worker refuses (terminates) a job of another.
pub const MESSAGE_VERSION: u32 = 1;
/// The largest tokenised batch a worker reads from the object store.
const BATCH_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Results kept that arrived before anybody waited for them (a restarted runner's open step).
const EARLY_RESULTS_MAX: usize = 4096;
/// How long a pull waits on the server for a message before asking again.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// The pause after a failed call to the server (it is restarting, the network is down).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

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
        }
    }

    /// The server's URL without its credentials, for messages and logs.
    pub fn server(&self) -> String {
        match split_credentials(&self.url) {
            (url, Some(_)) => url.replacen("://", "://***@", 1),
            (url, None) => url,
        }
    }

    fn jobs_subject(&self) -> String {
        format!("{}.jobs", self.name)
    }

    fn results_subject(&self) -> String {
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
}

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
}

/// The name of a batch's object: its digest, in the URL-safe alphabet.
fn batch_object(digest: &str) -> String {
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
}

/// The server's streams, consumers and object store.
#[derive(Clone)]
struct Connected {
    js: Context,
    batches: ObjectStore,
    jobs: stream::Stream,
    results: stream::Stream,
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

/// Connects and makes (or finds) the queue's streams and object store.
async fn connect(options: &QueueOptions, client_name: &str) -> Result<Connected, QueueError> {
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
    match credentials {
        Some((user, Some(password))) => connect = connect.user_and_password(user, password),
        Some((token, None)) => connect = connect.token(token),
        None => {}
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
    let work_queue = |name: String, subject: String| stream::Config {
        name,
        subjects: vec![subject],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        max_age: Duration::from_secs(24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let jobs = js
        .get_or_create_stream(work_queue(format!("{upper}_JOBS"), options.jobs_subject()))
        .await
        .map_err(|e| server(format!("the jobs stream: {e}")))?;
    let results = js
        .get_or_create_stream(work_queue(
            format!("{upper}_RESULTS"),
            options.results_subject(),
        ))
        .await
        .map_err(|e| server(format!("the results stream: {e}")))?;
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

async fn durable(
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// (step, uid, shard): one evaluation, or one shard of it.
type Key = (u64, u16, usize);

/// What the runner's evaluator shares with its result receiver.
#[derive(Debug)]
struct Shared {
    connected: Connected,
    waiters: Mutex<BTreeMap<Key, mpsc::UnboundedSender<ResultMessage>>>,
    early: Mutex<VecDeque<ResultMessage>>,
    /// One upload at a time, so jobs of one batch never put it twice at once.
    uploading: tokio::sync::Mutex<()>,
    nonce: String,
}

impl Shared {
    /// Hands a result to whoever waits for its (step, uid), or keeps it for later.
    fn route(&self, payload: &[u8]) {
        let result: ResultMessage = match serde_json::from_slice(payload) {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!("an unreadable evaluation result was dropped: {error}");
                return;
            }
        };
        let key = (result.step, result.uid, result.shard);
        // The waiters' lock is held until the result is handed over or kept, in the order
        // `wait_for` takes both locks, so a waiter registering meanwhile cannot miss it.
        let waiters = lock(&self.waiters);
        if let Some(waiter) = waiters.get(&key) {
            let _ = waiter.send(result);
            return;
        }
        tracing::debug!(
            "a result for step {} uid {} (job {}) arrived with nobody waiting: kept a while, \
             then dropped (a duplicate, or a stale step)",
            result.step,
            result.uid,
            result.job_id
        );
        let mut early = lock(&self.early);
        early.push_back(result);
        while early.len() > EARLY_RESULTS_MAX {
            early.pop_front();
        }
        drop(early);
        drop(waiters);
    }
}

/// Removes a waiter when its evaluation ends, however it ends.
struct Waiting<'a> {
    shared: &'a Shared,
    key: Key,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.shared.waiters).remove(&self.key);
    }
}

/// The evaluator edge over remote workers. Checks and tokenising stay local (`local`): they
/// decide what is journaled before evaluation, and the batch travels tokenised.
#[derive(Debug)]
pub struct QueueEvaluator<L> {
    /// The local evaluator for checks and tokenising.
    pub local: L,
    options: QueueOptions,
    shared: Arc<Shared>,
    receiving: tokio::task::JoinHandle<()>,
}

impl<L> Drop for QueueEvaluator<L> {
    fn drop(&mut self) {
        self.receiving.abort();
    }
}

impl<L> QueueEvaluator<L> {
    /// Connects to the queue and starts receiving results.
    pub async fn connect(options: QueueOptions, local: L) -> Result<Self, QueueError> {
        let connected = connect(&options, "validator-runner").await?;
        let consumer = durable(&connected.results, "runner", &options).await?;
        // The workers' consumer too, so its ack wait and deliveries are the runner's when the
        // runner starts first (a consumer keeps the settings it was made with).
        durable(&connected.jobs, "workers", &options).await?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let shared = Arc::new(Shared {
            connected,
            waiters: Mutex::new(BTreeMap::new()),
            early: Mutex::new(VecDeque::new()),
            uploading: tokio::sync::Mutex::new(()),
            nonce: format!(
                "{}-{}-{nanos}",
                super::edges::host_name(),
                std::process::id()
            ),
        });
        let receiving = tokio::spawn(receive_results(shared.clone(), consumer));
        Ok(Self {
            local,
            options,
            shared,
            receiving,
        })
    }

    /// Puts the batch in the object store unless the server already holds it: asked of the
    /// server each time (an object past its age is gone), one upload at a time (a second put
    /// of the same name would replace chunks a worker may be reading).
    async fn upload(&self, request: &EvalRequest, deadline: Instant) -> Result<(), EdgeError> {
        let name = batch_object(&request.batch_digest);
        let _one_at_a_time = self.shared.uploading.lock().await;
        let bytes = serde_json::to_vec(&*request.batch)
            .map_err(|e| EdgeError::Operator(format!("encoding the batch: {e}")))?;
        let store = &self.shared.connected.batches;
        loop {
            let stored = match store.info(&name).await {
                Ok(info) => info.size == bytes.len(),
                Err(_) => false,
            };
            let put = if stored {
                Ok(())
            } else {
                store
                    .put(name.as_str(), &mut bytes.as_slice())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            };
            match put {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() < deadline => {
                    tracing::warn!("putting batch {name} in the queue's store: {why}; again");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(why) => {
                    return Err(EdgeError::Operator(format!(
                        "the evaluation queue {} did not take the batch: {why}",
                        self.options.server()
                    )));
                }
            }
        }
    }

    /// Publishes a job, again until the server acknowledges it (its id makes a repeat of a
    /// publication the server did take harmless).
    async fn publish(&self, job: &JobMessage, deadline: Instant) -> Result<(), EdgeError> {
        let payload = serde_json::to_vec(job)
            .map_err(|e| EdgeError::Operator(format!("encoding the job: {e}")))?;
        let what = format!("job {}", job.job_id);
        publish_until(
            &self.shared.connected.js,
            self.options.jobs_subject(),
            &payload,
            &job.job_id,
            &what,
            deadline,
        )
        .await
        .map_err(|why| {
            EdgeError::Operator(format!(
                "the evaluation queue {} did not take job {}: {why}",
                self.options.server(),
                job.job_id
            ))
        })
    }

    /// Registers a waiter for `key`, first handing it the results that came early.
    fn wait_for(&self, key: Key) -> (Waiting<'_>, mpsc::UnboundedReceiver<ResultMessage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut waiters = lock(&self.shared.waiters);
        let mut early = lock(&self.shared.early);
        early.retain(|result| {
            let mine = (result.step, result.uid, result.shard) == key;
            if mine {
                let _ = sender.send(result.clone());
            }
            !mine
        });
        drop(early);
        waiters.insert(key, sender);
        (
            Waiting {
                shared: &self.shared,
                key,
            },
            receiver,
        )
    }
}

/// Why a result does not answer `request`, if it does not.
fn mismatch(request: &EvalRequest, result: &ResultMessage) -> Option<String> {
    if result.version != MESSAGE_VERSION {
        return Some(format!("message version {}", result.version));
    }
    if result.batch_digest != request.batch_digest {
        return Some(format!(
            "batch digest {} is not the step's {}",
            result.batch_digest, request.batch_digest
        ));
    }
    if result.model_hash != request.model_hash {
        return Some(format!(
            "model hash {} is not the committed {}",
            result.model_hash, request.model_hash
        ));
    }
    match &result.outcome {
        EvalOutcome::Losses(losses) if losses.0.len() != request.batch.len() => Some(format!(
            "{} losses for {} samples",
            losses.0.len(),
            request.batch.len()
        )),
        _ => None,
    }
}

/// Publishes `payload` on `subject` under the deduplication id `id`, again until the server
/// acknowledges it or `deadline` passes (the id makes a repeat of a publication the server did
/// take harmless); `what` names it in the log.
async fn publish_until(
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

/// Pulls results and routes them, across server restarts.
async fn receive_results(shared: Arc<Shared>, consumer: PullConsumer) {
    loop {
        let messages = consumer
            .fetch()
            .max_messages(64)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!("pulling results: {error}");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => {
                    shared.route(&message.payload);
                    let _ = message.ack().await;
                }
                Err(error) => {
                    tracing::debug!("pulling results: {error}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
        }
    }
}

impl<L: ModelEvaluator> ModelEvaluator for QueueEvaluator<L> {
    async fn check(
        &self,
        dir: &std::path::Path,
        competition: &Competition,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        self.local.check(dir, competition).await
    }

    async fn tokenize(
        &self,
        dir: &std::path::Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        self.local.tokenize(dir, pairs).await
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        let deadline = Instant::now() + self.options.job_deadline;
        self.upload(request, deadline).await?;
        let key = (request.step, request.uid, request.shard);
        let (_waiting, mut results) = self.wait_for(key);
        let job = JobMessage {
            version: MESSAGE_VERSION,
            // The digest too: a retried step may cut its shards differently, and the server
            // drops a repeated id within its deduplication window.
            job_id: format!(
                "{}-{}-{}-{}-{}",
                self.shared.nonce,
                request.step,
                request.uid,
                request.shard,
                batch_object(&request.batch_digest)
                    .chars()
                    .skip(6)
                    .take(12)
                    .collect::<String>()
            ),
            step: request.step,
            uid: request.uid,
            hotkey: request.hotkey.clone(),
            model: request.model.clone(),
            model_hash: request.model_hash.clone(),
            repo_bytes_max: request.repo_bytes_max,
            batch_digest: request.batch_digest.clone(),
            shard: request.shard,
        };
        self.publish(&job, deadline).await?;
        let mut refused = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(result)) = tokio::time::timeout(left, results.recv()).await else {
                return Err(EdgeError::Operator(format!(
                    "no evaluation worker returned a result for uid {} of step {} within {} s: \
                     is a `validator eval-worker` pulling from {} (queue {})?",
                    request.uid,
                    request.step,
                    self.options.job_deadline.as_secs(),
                    self.options.server(),
                    self.options.name
                )));
            };
            if let Some(why) = mismatch(request, &result) {
                tracing::warn!(
                    "refused a result for step {} uid {} from {} on {}: {why}",
                    request.step,
                    request.uid,
                    result.worker.host,
                    result.worker.device
                );
                refused.push(EvaluationReported {
                    step: request.step,
                    uid: request.uid,
                    model_hash: result.model_hash,
                    batch_digest: result.batch_digest,
                    worker: result.worker,
                    verdict: ReportVerdict::Refused(why),
                });
                continue;
            }
            return Ok(Evaluated {
                outcome: result.outcome,
                worker: result.worker,
                session_seconds: result.session_seconds,
                scoring_seconds: result.scoring_seconds,
                refused,
            });
        }
    }

    fn capacity(&self) -> usize {
        self.options.in_flight_max.max(1)
    }

    fn workers(&self) -> usize {
        self.options.workers.max(1)
    }

    fn reads_files_here(&self) -> bool {
        false
    }
}

/// A remote evaluation worker: pulls jobs, fetches and verifies each model through its own
/// store, evaluates with its own evaluator (a worker child per model), publishes the result,
/// then acknowledges the job.
#[derive(Debug)]
pub struct RemoteWorker<S, E> {
    /// The queue.
    pub options: QueueOptions,
    /// Where models come from, verified against their commitments.
    pub store: S,
    /// The local evaluator.
    pub evaluator: E,
    /// Stop after this many jobs (tests, drained hosts).
    pub jobs_max: Option<u64>,
}

/// What became of a job.
enum Handled {
    /// Published and acknowledged.
    Done,
    /// Given back for another delivery.
    Returned,
}

impl<S: ModelStore, E: ModelEvaluator> RemoteWorker<S, E> {
    /// Serves jobs until `stop` turns true or `jobs_max` is reached: the jobs completed.
    pub async fn serve(&self, mut stop: watch::Receiver<bool>) -> Result<u64, QueueError> {
        let connected = connect(&self.options, "validator-eval-worker").await?;
        let consumer = durable(&connected.jobs, "workers", &self.options).await?;
        let mut batches: Option<(String, TokenizedBatch)> = None;
        let mut done = 0u64;
        tracing::info!(
            "pulling evaluation jobs from {} (queue {})",
            self.options.server(),
            self.options.name
        );
        loop {
            if *stop.borrow() || self.jobs_max.is_some_and(|max| done >= max) {
                return Ok(done);
            }
            let pulled = tokio::select! {
                pulled = consumer.fetch().max_messages(1).expires(PULL_EXPIRES).messages() => pulled,
                _ = stop.changed() => continue,
            };
            let mut messages = match pulled {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::debug!("pulling jobs: {error}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::debug!("pulling jobs: {error}");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        break;
                    }
                };
                let handled = tokio::select! {
                    handled = self.handle(&connected, &message, &mut batches) => handled?,
                    _ = stop.changed() => {
                        // Given back now rather than after the ack wait.
                        let _ = message.double_ack_with(AckKind::Nak(None)).await;
                        return Ok(done);
                    }
                };
                if matches!(handled, Handled::Done) {
                    done += 1;
                }
            }
        }
    }

    async fn handle(
        &self,
        connected: &Connected,
        message: &jetstream::Message,
        batches: &mut Option<(String, TokenizedBatch)>,
    ) -> Result<Handled, QueueError> {
        let job: JobMessage = match serde_json::from_slice(&message.payload) {
            Ok(job) if matches!(&job, JobMessage { version, .. } if *version == MESSAGE_VERSION) => {
                job
            }
            Ok(job) => {
                tracing::warn!(
                    "job {}: message version {}, dropped",
                    job.job_id,
                    job.version
                );
                let _ = message.double_ack_with(AckKind::Term).await;
                return Ok(Handled::Returned);
            }
            Err(error) => {
                tracing::warn!("an unreadable job was dropped: {error}");
                let _ = message.double_ack_with(AckKind::Term).await;
                return Ok(Handled::Returned);
            }
        };
        let delivered = message.info().map_or(1, |info| info.delivered);
        tracing::info!(
            "job {}: step {} uid {} {}/{} (delivery {delivered})",
            job.job_id,
            job.step,
            job.uid,
            job.model.namespace,
            job.model.name
        );
        let batch = match self.batch(connected, &job, batches).await {
            Ok(batch) => batch,
            Err(why) => {
                tracing::warn!("job {}: {why}; given back", job.job_id);
                let _ = message
                    .double_ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
                return Ok(Handled::Returned);
            }
        };
        let fetched = self
            .store
            .fetch(&job.hotkey, &job.model, job.repo_bytes_max)
            .await;
        let dir = match fetched {
            Ok(Verdict::Accepted(stored)) => stored.dir,
            Ok(Verdict::Rejected(refusal)) => {
                // The runner verified this model: a worker that cannot is misconfigured (its
                // hub, its mirror), and the job is another worker's, not the miner's failure.
                tracing::error!(
                    "ACTION NEEDED: job {}: this worker cannot fetch and verify {}/{}: {}; \
                     given back",
                    job.job_id,
                    job.model.namespace,
                    job.model.name,
                    refusal.detail
                );
                let _ = message
                    .double_ack_with(AckKind::Nak(Some(Duration::from_secs(30))))
                    .await;
                return Ok(Handled::Returned);
            }
            Err(error) => {
                tracing::warn!(
                    "job {}: fetching the model: {error}; given back",
                    job.job_id
                );
                let _ = message
                    .double_ack_with(AckKind::Nak(Some(Duration::from_secs(10))))
                    .await;
                if error.is_retryable() {
                    return Ok(Handled::Returned);
                }
                return Err(QueueError::Worker(error.to_string()));
            }
        };
        let worker = super::edges::this_worker("-");
        let request = EvalRequest {
            step: job.step,
            uid: job.uid,
            hotkey: job.hotkey.clone(),
            model: job.model.clone(),
            model_hash: job.model_hash.clone(),
            dir,
            repo_bytes_max: job.repo_bytes_max,
            shard: job.shard,
            batch_digest: job.batch_digest.clone(),
            batch: batch.clone(),
        };
        let evaluated = match self.evaluator.evaluate(&request).await {
            Ok(evaluated) => evaluated,
            Err(EdgeError::Unavailable(why)) => Evaluated::new(
                EvalOutcome::Failed(format!("the model could not be read: {why}")),
                worker,
            ),
            Err(error) => {
                // The device or the host is at fault: another worker should have it.
                let _ = message.double_ack_with(AckKind::Nak(None)).await;
                return Err(QueueError::Worker(error.to_string()));
            }
        };
        let result = ResultMessage {
            version: MESSAGE_VERSION,
            job_id: job.job_id.clone(),
            step: job.step,
            uid: job.uid,
            // What this worker verified: the store checked the files against this hash.
            model_hash: job.model.hash.clone().unwrap_or_default(),
            batch_digest: batch_digest(&batch),
            shard: job.shard,
            outcome: evaluated.outcome,
            worker: evaluated.worker,
            session_seconds: evaluated.session_seconds,
            scoring_seconds: evaluated.scoring_seconds,
        };
        let payload = serde_json::to_vec(&result)
            .map_err(|e| QueueError::Worker(format!("encoding a result: {e}")))?;
        super::failpoint::hit("eval-worker-before-publishing");
        // Published until the server takes it, within the job's ack wait: past it the job is
        // another worker's, and a late result is only a duplicate.
        let deadline = Instant::now() + self.options.ack_wait;
        let what = format!("the result of job {}", job.job_id);
        let id = format!("result-{}", job.job_id);
        let subject = self.options.results_subject();
        if let Err(why) =
            publish_until(&connected.js, subject, &payload, &id, &what, deadline).await
        {
            tracing::warn!(
                "job {}: the result was not taken ({why}); left for redelivery",
                job.job_id
            );
            return Ok(Handled::Returned);
        }
        if let Err(error) = message.double_ack().await {
            // Published but not acknowledged: the redelivery's result will be a duplicate.
            tracing::warn!("job {}: acknowledging: {error}", job.job_id);
        }
        tracing::info!("job {}: result published", job.job_id);
        Ok(Handled::Done)
    }

    /// The job's batch, read from the object store once per digest and checked against it.
    async fn batch(
        &self,
        connected: &Connected,
        job: &JobMessage,
        cached: &mut Option<(String, TokenizedBatch)>,
    ) -> Result<TokenizedBatch, String> {
        if let Some((digest, batch)) = cached.as_ref()
            && *digest == job.batch_digest
        {
            return Ok(batch.clone());
        }
        let name = batch_object(&job.batch_digest);
        let object = connected
            .batches
            .get(&name)
            .await
            .map_err(|e| format!("batch {name}: {e}"))?;
        let mut bytes = Vec::new();
        object
            .take(BATCH_BYTES_MAX)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| format!("reading batch {name}: {e}"))?;
        let batch: Vec<Prepared> =
            serde_json::from_slice(&bytes).map_err(|e| format!("batch {name}: {e}"))?;
        let digest = batch_digest(&batch);
        if digest != job.batch_digest {
            return Err(format!("batch {name} has digest {digest}"));
        }
        let batch = TokenizedBatch::from(batch);
        *cached = Some((digest, batch.clone()));
        Ok(batch)
    }
}
