//! The worker's side of the queue (`validator eval-worker`): pull a job, read its batch,
//! fetch and verify the model through this host's own store, evaluate it in a worker child,
//! publish the result, and only then acknowledge the job.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

use super::{
    BATCH_BYTES_MAX, Connected, JobMessage, MESSAGE_VERSION, PULL_EXPIRES, QueueError,
    QueueOptions, RETRY_PAUSE, ResultMessage, WorkerKey, batch_object, connect, durable,
    publish_until,
};
use crate::eval::tokenize::Prepared;
use crate::machine::event::EvalOutcome;
use crate::runner::edges::{
    EdgeError, EvalRequest, Evaluated, ModelEvaluator, ModelStore, TokenizedBatch, Verdict,
    batch_digest,
};

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
    /// This worker's key: it signs every result (the runner takes only trusted signatures).
    pub key: WorkerKey,
}

/// Why a job's batch could not be had.
enum BatchError {
    /// Not now (the store is restarting, the object not there yet): the job goes back.
    Unavailable(String),
    /// The job and its batch do not agree (its size, its digest): the job is dropped.
    Refused(String),
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
        // A worker may not make the queue (a server that grants it only what a worker needs
        // refuses that): until the runner has made it, it waits.
        let (connected, consumer) = loop {
            let ready = async {
                let connected = connect(&self.options, "validator-eval-worker").await?;
                let consumer = durable(&connected.jobs, "workers", &self.options).await?;
                Ok::<_, QueueError>((connected, consumer))
            };
            match ready.await {
                Ok(ready) => break ready,
                Err(QueueError::Server { why, .. }) => {
                    tracing::warn!(
                        "the evaluation queue is not ready ({why}): is the runner up? trying \
                         again in 5 s"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.changed() => return Ok(0),
                    }
                }
                Err(other) => return Err(other),
            }
        };
        let mut batches: Option<CachedBatch> = None;
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
                        give_back(&message, None).await;
                        return Ok(done);
                    }
                };
                if matches!(handled, Handled::Done) {
                    done += 1;
                }
            }
        }
    }

    /// One job, in its phases: read it, read its batch, fetch the model, evaluate, publish.
    async fn handle(
        &self,
        connected: &Connected,
        message: &jetstream::Message,
        batches: &mut Option<CachedBatch>,
    ) -> Result<Handled, QueueError> {
        let Some(job) = read_job(message).await else {
            return Ok(Handled::Returned);
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
            Err(BatchError::Unavailable(why)) => {
                tracing::warn!("job {}: {why}; given back", job.job_id);
                give_back(message, Some(Duration::from_secs(5))).await;
                return Ok(Handled::Returned);
            }
            Err(BatchError::Refused(why)) => {
                tracing::warn!("job {}: {why}; dropped", job.job_id);
                let _ = message.double_ack_with(AckKind::Term).await;
                return Ok(Handled::Returned);
            }
        };
        let Some(dir) = self.model_dir(&job, message).await? else {
            return Ok(Handled::Returned);
        };
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
                crate::runner::identity::this_worker("-"),
            ),
            Err(error) => {
                // The device or the host is at fault: another worker should have it.
                give_back(message, None).await;
                return Err(QueueError::Worker(error.to_string()));
            }
        };
        if matches!(evaluated.outcome, EvalOutcome::Failed(_))
            && let Err(why) = crate::runner::fetch::failed_on_verified_files(
                &self.store,
                &job.hotkey,
                &job.model,
                job.repo_bytes_max,
            )
            .await
        {
            // This host's cache changed under the job: nobody's model is at fault.
            tracing::warn!("job {}: {why}; given back", job.job_id);
            give_back(message, None).await;
            return Ok(Handled::Returned);
        }
        self.publish(connected, message, &job, &batch, evaluated)
            .await
    }

    /// The job's model, fetched and verified through this worker's own store; `None` when the
    /// job was given back (this worker cannot have it now).
    async fn model_dir(
        &self,
        job: &JobMessage,
        message: &jetstream::Message,
    ) -> Result<Option<std::path::PathBuf>, QueueError> {
        let fetched = self
            .store
            .fetch(&job.hotkey, &job.model, job.repo_bytes_max)
            .await;
        match fetched {
            Ok(Verdict::Accepted(stored)) => Ok(Some(stored.dir)),
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
                give_back(message, Some(Duration::from_secs(30))).await;
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(
                    "job {}: fetching the model: {error}; given back",
                    job.job_id
                );
                give_back(message, Some(Duration::from_secs(10))).await;
                if error.is_retryable() {
                    return Ok(None);
                }
                Err(QueueError::Worker(error.to_string()))
            }
        }
    }

    /// Publishes the result of `job`, then acknowledges it.
    async fn publish(
        &self,
        connected: &Connected,
        message: &jetstream::Message,
        job: &JobMessage,
        batch: &TokenizedBatch,
        evaluated: Evaluated,
    ) -> Result<Handled, QueueError> {
        let mut result = ResultMessage {
            version: MESSAGE_VERSION,
            job_id: job.job_id.clone(),
            step: job.step,
            uid: job.uid,
            // What this worker verified: the store checked the files against this hash.
            model_hash: job.model.hash.clone().unwrap_or_default(),
            batch_digest: batch_digest(batch),
            shard: job.shard,
            outcome: evaluated.outcome,
            worker: evaluated.worker,
            session_seconds: evaluated.session_seconds,
            scoring_seconds: evaluated.scoring_seconds,
            worker_key: String::new(),
            signature: String::new(),
        };
        self.key.sign(&mut result);
        let payload = serde_json::to_vec(&result)
            .map_err(|e| QueueError::Worker(format!("encoding a result: {e}")))?;
        crate::runner::failpoint::hit("eval-worker-before-publishing");
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
        cached: &mut Option<CachedBatch>,
    ) -> Result<TokenizedBatch, BatchError> {
        if let Some((digest, size, batch)) = cached.as_ref()
            && *digest == job.batch_digest
        {
            // The batch in hand is the one named only if the job declares its very size: a
            // job that lies about it is refused whether or not the batch is read again.
            if *size != job.batch_bytes {
                return Err(BatchError::Refused(format!(
                    "batch {digest} holds {size} bytes, not the {} its job declares",
                    job.batch_bytes
                )));
            }
            return Ok(batch.clone());
        }
        let name = batch_object(&job.batch_digest);
        let object = connected
            .batches
            .get(&name)
            .await
            .map_err(|e| BatchError::Unavailable(format!("batch {name}: {e}")))?;
        // No more than the job declared (itself bounded): a job naming a huge object is
        // refused before a byte of it is read.
        let declared = job.batch_bytes.min(BATCH_BYTES_MAX);
        let size = u64::try_from(object.info.size).unwrap_or(u64::MAX);
        if size != declared {
            return Err(BatchError::Refused(format!(
                "batch {name} holds {size} bytes, not the {declared} its job declares"
            )));
        }
        let mut bytes = Vec::new();
        object
            .take(declared)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| BatchError::Unavailable(format!("reading batch {name}: {e}")))?;
        let batch: Vec<Prepared> = serde_json::from_slice(&bytes)
            .map_err(|e| BatchError::Refused(format!("batch {name}: {e}")))?;
        let digest = batch_digest(&batch);
        if digest != job.batch_digest {
            return Err(BatchError::Refused(format!(
                "batch {name} has digest {digest}"
            )));
        }
        let batch = TokenizedBatch::from(batch);
        *cached = Some((digest, declared, batch.clone()));
        Ok(batch)
    }
}

/// The job a message carries; `None` when it is unreadable, of another version or refused
/// (see [`JobMessage::refusal`]): it is dropped for good, and the worker goes on.
async fn read_job(message: &jetstream::Message) -> Option<JobMessage> {
    match serde_json::from_slice::<JobMessage>(&message.payload) {
        Ok(job) => match job.refusal() {
            None => return Some(job),
            Some(why) => tracing::warn!("a job was refused and dropped: {why}"),
        },
        Err(error) => tracing::warn!("an unreadable job was dropped: {error}"),
    }
    let _ = message.double_ack_with(AckKind::Term).await;
    None
}

/// The last batch read: its digest, its size in bytes, the batch.
type CachedBatch = (String, u64, TokenizedBatch);

/// Gives a job back for another delivery, after `delay` (at once without one).
async fn give_back(message: &jetstream::Message, delay: Option<Duration>) {
    let _ = message.double_ack_with(AckKind::Nak(delay)).await;
}
