//! The runner's side of the queue: an evaluator edge that uploads each batch once, publishes
//! a job per evaluation and waits for the first result that answers it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream::consumer::PullConsumer;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::{
    Connected, FIELD_CHARS_MAX, JobMessage, MESSAGE_VERSION, PULL_EXPIRES, QueueError,
    QueueOptions, RETRY_PAUSE, ResultMessage, TrustedWorkers, assert_streams, batch_object,
    connect, durable, publish_until, workers_consumer_as_runner,
};
use crate::eval::batch::ModelChecked;
use crate::machine::event::{EvalOutcome, EvaluationReported, ReportVerdict};
use crate::runner::edges::{
    EdgeError, EvalRequest, Evaluated, ModelEvaluator, TokenizedBatch, Verdict,
};

/// Results kept that arrived before anybody waited for them (a restarted runner's open step).
const EARLY_RESULTS_MAX: usize = 4096;
/// Refused results journaled for one evaluation at most (each once per worker).
const REFUSED_REPORTS_MAX: usize = 8;

/// A field of a refused result as it is journaled: at most [`FIELD_CHARS_MAX`] characters.
fn bounded(text: &str) -> String {
    text.chars().take(FIELD_CHARS_MAX).collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// (step, uid, shard): one evaluation, or one shard of it.
type Key = (u64, u16, usize);

/// Where results go: to whoever waits for their (step, uid, shard), or kept a while for a
/// waiter that has not registered yet (a restarted runner's open step) until newer ones push
/// them out. A duplicate (a slow worker overtaken by a redelivery) finds nobody waiting.
///
/// Waiters and early results sit behind one lock, so a result routed while its waiter
/// registers reaches it whichever goes first: there is no moment between "nobody waits" and
/// "kept" for a waiter to slip into.
#[derive(Debug, Default)]
struct Router {
    routes: Mutex<Routes>,
}

#[derive(Debug, Default)]
struct Routes {
    waiters: BTreeMap<Key, mpsc::UnboundedSender<ResultMessage>>,
    early: VecDeque<ResultMessage>,
}

impl Router {
    /// Hands a result to whoever waits for its (step, uid, shard), or keeps it for later.
    fn route(&self, payload: &[u8]) {
        let result: ResultMessage = match serde_json::from_slice(payload) {
            Ok(result) => result,
            Err(error) => {
                tracing::warn!("an unreadable evaluation result was dropped: {error}");
                return;
            }
        };
        let key = (result.step, result.uid, result.shard);
        let mut routes = lock(&self.routes);
        if let Some(waiter) = routes.waiters.get(&key) {
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
        routes.early.push_back(result);
        while routes.early.len() > EARLY_RESULTS_MAX {
            routes.early.pop_front();
        }
    }

    /// Registers a waiter for `key`, first handing it the results that came early.
    fn wait_for(&self, key: Key) -> (Waiting<'_>, mpsc::UnboundedReceiver<ResultMessage>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut routes = lock(&self.routes);
        routes.early.retain(|result| {
            let mine = (result.step, result.uid, result.shard) == key;
            if mine {
                let _ = sender.send(result.clone());
            }
            !mine
        });
        routes.waiters.insert(key, sender);
        (Waiting { router: self, key }, receiver)
    }
}

/// What the runner's evaluator shares with its result receiver.
#[derive(Debug)]
struct Shared {
    connected: Connected,
    router: Router,
    /// One upload at a time, so jobs of one batch never put it twice at once.
    uploading: tokio::sync::Mutex<()>,
    /// This process's prefix of every job id.
    nonce: String,
    /// Jobs published by this process: each publication has an id of its own, so a step
    /// tried again inside the server's deduplication window is not dropped as a repeat.
    published: std::sync::atomic::AtomicU64,
    /// The workers whose signed results are taken.
    trusted: TrustedWorkers,
}

/// Removes a waiter when its evaluation ends, however it ends.
struct Waiting<'a> {
    router: &'a Router,
    key: Key,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        lock(&self.router.routes).waiters.remove(&self.key);
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
    /// Connects to the queue and starts receiving results, taking them only from `trusted`.
    pub async fn connect(
        options: QueueOptions,
        local: L,
        trusted: TrustedWorkers,
    ) -> Result<Self, QueueError> {
        if trusted.is_empty() {
            return Err(QueueError::Key(
                "the runner trusts no worker, so it could take no result".into(),
            ));
        }
        let connected = connect(&options, "validator-runner").await?;
        let consumer = durable(&connected.results, "runner", &options).await?;
        // The workers' consumer too, with the runner's ack wait and deliveries, whoever made
        // it first (a consumer keeps the settings it was made with unless they are updated).
        workers_consumer_as_runner(&connected.jobs, &options).await?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let shared = Arc::new(Shared {
            connected,
            router: Router::default(),
            uploading: tokio::sync::Mutex::new(()),
            nonce: format!(
                "{}-{}-{nanos}",
                crate::runner::identity::host_name(),
                std::process::id()
            ),
            published: std::sync::atomic::AtomicU64::new(0),
            trusted,
        });
        let receiving = tokio::spawn(receive_results(shared.clone(), consumer, options.clone()));
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
    /// Returns the batch's bytes, which the job declares.
    async fn upload(&self, request: &EvalRequest, deadline: Instant) -> Result<u64, EdgeError> {
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
                Ok(()) => return Ok(u64::try_from(bytes.len()).unwrap_or(u64::MAX)),
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

/// Pulls results and routes them, across server restarts.
async fn receive_results(shared: Arc<Shared>, consumer: PullConsumer, options: QueueOptions) {
    let mut consumer = consumer;
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
                // The stream may be gone (deleted, a server that lost its store): made again
                // as it was, and the consumer with it; a stream changed is the evaluator's to
                // report, which asserts the streams before every job.
                tracing::debug!("pulling results: {error}");
                tokio::time::sleep(RETRY_PAUSE).await;
                if let Ok((_, results)) = assert_streams(&shared.connected.js, &options).await
                    && let Ok(again) = durable(&results, "runner", &options).await
                {
                    consumer = again;
                }
                continue;
            }
        };
        let mut received = 0usize;
        while let Some(message) = messages.next().await {
            match message {
                Ok(message) => {
                    received += 1;
                    shared.router.route(&message.payload);
                    let _ = message.ack().await;
                }
                Err(error) => {
                    tracing::debug!("pulling results: {error}");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
        }
        // A quiet round: is the consumer still there? A deleted stream takes its consumer
        // with it, and pulling from it then just stays quiet.
        if received == 0
            && consumer.info().await.is_err()
            && let Ok((_, results)) = assert_streams(&shared.connected.js, &options).await
            && let Ok(again) = durable(&results, "runner", &options).await
        {
            tracing::warn!("the results stream was gone: made again, with the runner's consumer");
            consumer = again;
        }
    }
}

impl<L: ModelEvaluator> ModelEvaluator for QueueEvaluator<L> {
    async fn check(
        &self,
        dir: &std::path::Path,
        rules: &crate::eval::batch::CheckRules,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        self.local.check(dir, rules).await
    }

    async fn tokenize(
        &self,
        dir: &std::path::Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        self.local.tokenize(dir, pairs).await
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        // The streams as the runner made them, every job: one deleted is made again, one
        // changed behind our back stops the run.
        match assert_streams(&self.shared.connected.js, &self.options).await {
            Ok(_) => {}
            Err(error @ QueueError::Tampered { .. }) => {
                return Err(EdgeError::Fatal(format!("ACTION NEEDED: {error}")));
            }
            Err(error) => return Err(EdgeError::Operator(error.to_string())),
        }
        let deadline = Instant::now() + self.options.job_deadline;
        let batch_bytes = self.upload(request, deadline).await?;
        let publication = self
            .shared
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = (request.step, request.uid, request.shard);
        let (_waiting, mut results) = self.shared.router.wait_for(key);
        let job = JobMessage {
            version: MESSAGE_VERSION,
            // Unique per publication: a retried step publishes the same (step, uid, shard)
            // again, and the server drops a repeated id within its deduplication window.
            job_id: format!(
                "{}-{publication}-{}-{}-{}-{}",
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
            batch_bytes,
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
            // Only a trusted worker's signed answer to this very publication counts; anything
            // else is said in the log and never journaled (its sender is not known).
            let worker = match self.shared.trusted.verify(&result) {
                Ok(name) if result.job_id == job.job_id => name.to_owned(),
                Ok(_) => {
                    tracing::debug!(
                        "a result of an earlier publication for step {} uid {} was dropped",
                        request.step,
                        request.uid
                    );
                    continue;
                }
                Err(why) => {
                    tracing::warn!(
                        "an unauthenticated result for step {} uid {} was dropped: {why}",
                        request.step,
                        request.uid
                    );
                    continue;
                }
            };
            if let Some(why) = mismatch(request, &result) {
                tracing::warn!(
                    "refused a result for step {} uid {} from worker {worker} ({} on {}): {why}",
                    request.step,
                    request.uid,
                    result.worker.host,
                    result.worker.device
                );
                // Journaled once per worker for this job, with bounded fields.
                let worker_id = format!("{worker}:{}", result.worker_key);
                let already = refused
                    .iter()
                    .any(|r: &EvaluationReported| r.worker_id == worker_id);
                if !already && refused.len() < REFUSED_REPORTS_MAX {
                    refused.push(EvaluationReported {
                        step: request.step,
                        uid: request.uid,
                        model_hash: bounded(&result.model_hash),
                        batch_digest: bounded(&result.batch_digest),
                        worker: result.worker,
                        verdict: ReportVerdict::Refused(why),
                        worker_id,
                    });
                }
                continue;
            }
            return Ok(Evaluated {
                outcome: result.outcome,
                worker: result.worker,
                session_seconds: result.session_seconds,
                scoring_seconds: result.scoring_seconds,
                refused,
                worker_id: format!("{worker}:{}", result.worker_key),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::EvaluatedBy;

    fn result(step: u64, uid: u16, job: &str) -> Vec<u8> {
        serde_json::to_vec(&ResultMessage {
            version: MESSAGE_VERSION,
            job_id: job.into(),
            step,
            uid,
            model_hash: "h".into(),
            batch_digest: "d".into(),
            shard: 0,
            outcome: EvalOutcome::Failed("x".into()),
            worker: EvaluatedBy {
                host: "h".into(),
                device: "cpu".into(),
                build: "b".into(),
            },
            session_seconds: 0.0,
            scoring_seconds: 0.0,
            worker_key: String::new(),
            signature: String::new(),
        })
        .unwrap()
    }

    /// Postmortem (1eefe02): a result that arrived while its waiter was registering (a fast
    /// worker, a restarted runner's open step) could be missed, and the step then waited for
    /// its deadline. Waiters and early results now share one lock (see `Router`); a result
    /// with nobody waiting is kept, handed over when its waiter registers, to that waiter only.
    #[test]
    fn a_result_that_arrives_before_its_waiter_is_not_missed() {
        let router = Router::default();
        router.route(&result(3, 7, "early"));
        router.route(&result(3, 8, "other"));
        let (waiting, mut results) = router.wait_for((3, 7, 0));
        assert_eq!(results.try_recv().unwrap().job_id, "early");
        assert!(
            results.try_recv().is_err(),
            "another uid's result was handed over"
        );
        router.route(&result(3, 7, "on time"));
        assert_eq!(results.try_recv().unwrap().job_id, "on time");
        drop(waiting);
        // The waiter is gone: a late duplicate is kept, not sent to a closed channel.
        router.route(&result(3, 7, "duplicate"));
        let (_again, mut again) = router.wait_for((3, 7, 0));
        assert_eq!(again.try_recv().unwrap().job_id, "duplicate");
        let (_other, mut other) = router.wait_for((3, 8, 0));
        assert_eq!(other.try_recv().unwrap().job_id, "other");
    }

    /// Early results are bounded: a flood of results nobody waits for keeps the newest.
    #[test]
    fn early_results_are_bounded() {
        let router = Router::default();
        for uid in 0..=u16::try_from(EARLY_RESULTS_MAX).unwrap() {
            router.route(&result(1, uid, "flood"));
        }
        assert_eq!(lock(&router.routes).early.len(), EARLY_RESULTS_MAX);
        let (_gone, mut gone) = router.wait_for((1, 0, 0));
        assert!(gone.try_recv().is_err(), "the oldest was dropped");
    }
}
