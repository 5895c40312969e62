//! Model fetching: every commitment the fold says awaits verification is fetched from the
//! model store, its hash checked, then N's checks run in the evaluation worker, and the
//! verdict journaled (`ModelVerified` or `ModelRejected`). A few at a time, eval-set uids
//! first, so the models of the next step download while the current one evaluates. A fetch
//! that could not be decided is retried with backoff; the cache is swept once per grace
//! period (and at once when the disk is full).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::RunConfig;
use super::edges::{EdgeError, ModelEvaluator, ModelStore, Verdict};
use super::writer::{WriteError, WriterHandle};
use crate::eval::batch::CheckRules;
use crate::machine::event::{ModelRejected, ModelVerified, RejectionCode};
use crate::machine::model_id::ModelId;
use crate::machine::params::Competition;
use crate::machine::state::CommitmentState;
use crate::machine::successor_loop;
use crate::machine::{Event, State};

/// A commitment to verify: the hotkey and the commitment's block.
pub type CommitmentKey = (String, u64);

/// A fetch that could not be decided, and when to try again.
#[derive(Debug, Clone)]
pub struct FetchFailure {
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this.
    pub retry_at: Instant,
    /// Why the last attempt failed.
    pub reason: String,
}

/// What the fetcher is doing, for the stepper (which waits for verdicts before a step on a
/// recorded chain) and for reports.
#[derive(Debug, Default)]
pub struct FetchStatus {
    /// Fetches under way.
    pub in_flight: BTreeSet<CommitmentKey>,
    /// Fetches that failed and wait for their retry.
    pub failed: BTreeMap<CommitmentKey, FetchFailure>,
    /// How many times the model cache may have changed (a fetch ended, a sweep ran): the
    /// monitor walks the cache for its size again only when this moved.
    pub cache_changes: u64,
    /// When each commitment's fetch last ended in a journaled verdict: it is fetched again at
    /// most once per [`RESYNC_INTERVAL`] (a decided model the successor downloads again, or
    /// one it refused before its tracker took it, which stays pending).
    pub resynced_at: BTreeMap<CommitmentKey, Instant>,
}

/// Shared fetch status.
pub type SharedStatus = Arc<Mutex<FetchStatus>>;

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, FetchStatus> {
    status.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether a model whose evaluation failed was evaluated on the files that were verified:
/// the store verifies its cache again, and fetches what no longer hashes as committed.
/// `Ok(())`: the cache was whole, the failure stands as the model's. `Err(why)`: the files
/// changed under the evaluation (an operator deleted the cache, a disk lost them), so the
/// failure is the machine's; the model is whole again (or gets its own verdict) when the
/// evaluation is retried.
pub async fn failed_on_verified_files<S: ModelStore>(
    store: &S,
    hotkey: &str,
    model: &ModelId,
    repo_bytes_max: u64,
) -> Result<(), String> {
    let changed = format!(
        "{hotkey}'s model ({}/{}) changed in the model cache during its evaluation (deleted \
         or damaged there)",
        model.namespace, model.name
    );
    match store.fetch(hotkey, model, repo_bytes_max).await {
        Ok(Verdict::Accepted(stored)) if stored.bytes_downloaded == 0 => Ok(()),
        Ok(Verdict::Accepted(_)) => Err(format!("{changed}; fetched again")),
        Ok(Verdict::Rejected(refusal)) => Err(format!(
            "{changed}; fetching it again was refused: {}",
            refusal.detail
        )),
        Err(error) => Err(format!("{changed}; fetching it again failed: {error}")),
    }
}

/// The commitments of `state` awaiting a verdict at `block`: the ones a step on a recorded
/// chain waits for. Under the successor's rules, only those its update thread would download
/// now (aged past the delay, below the cap).
pub fn unresolved(state: &State, block: u64) -> Vec<CommitmentKey> {
    state
        .commitments_to_verify(block)
        .into_iter()
        .filter(|(hotkey, c)| due(state, block, hotkey, c))
        .map(|(hotkey, c)| (hotkey.to_owned(), c.block_commit))
        .collect()
}

/// Whether the successor's update thread would download this pending commitment at `block`
/// (always under N's rules).
fn due(state: &State, block: u64, hotkey: &str, commitment: &CommitmentState) -> bool {
    commitment.model_id.as_ref().is_some_and(|model| {
        successor_loop::download_due(
            state,
            block,
            hotkey,
            &model.competition,
            commitment.block_commit,
        )
    })
}

/// How often one decided model is downloaded again when the successor's retry rule or its
/// top-model scan asks (F checks each uid at most every 20 minutes).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// One fetch to run.
struct Todo {
    key: CommitmentKey,
    model: ModelId,
    competition: Competition,
    rules: CheckRules,
}

/// What `state` asks to fetch at `block`, eval-set uids first, then by hotkey.
fn todo(state: &State, block: u64) -> Vec<Todo> {
    let in_eval_set = |hotkey: &str| {
        let uid = state.metagraph.as_ref().and_then(|m| m.uid_of(hotkey));
        uid.is_some_and(|uid| {
            state
                .competitions
                .values()
                .any(|c| c.eval_set.contains(uid) || c.pending.contains(uid))
        })
    };
    let mut todo: Vec<(bool, Todo)> = state
        .commitments_to_verify(block)
        .into_iter()
        .filter(|(hotkey, commitment)| due(state, block, hotkey, commitment))
        .filter_map(|(hotkey, commitment)| {
            let model = commitment.model_id.clone()?;
            let competition = state
                .params
                .competition_at(block, &model.competition)?
                .clone();
            let todo = Todo {
                key: (hotkey.to_owned(), commitment.block_commit),
                model,
                rules: CheckRules::at(&state.params, &competition),
                competition,
            };
            Some((!in_eval_set(hotkey), todo))
        })
        .collect();
    // Stable: equal priority keeps the state's hotkey order.
    todo.sort_by_key(|(later, _)| *later);
    todo.into_iter().map(|(_, todo)| todo).collect()
}

/// The decided models the successor's update thread would download again at `block`.
fn resyncs(state: &State, block: u64) -> Vec<Todo> {
    successor_loop::resyncs_due(state, block)
        .into_iter()
        .filter_map(|(hotkey, block_commit)| {
            let model = state.hotkeys.get(hotkey)?.model.as_ref()?.model_id.clone();
            let competition = state
                .params
                .competition_at(block, &model.competition)?
                .clone();
            Some(Todo {
                key: (hotkey.to_owned(), block_commit),
                model,
                rules: CheckRules::at(&state.params, &competition),
                competition,
            })
        })
        .collect()
}

/// Fetches, verifies and checks one model: the event to journal, or why it is undecided.
async fn resolve<S: ModelStore, E: ModelEvaluator>(
    store: &S,
    evaluator: &E,
    todo: &Todo,
) -> Result<Event, EdgeError> {
    let (hotkey, block_commit) = (&todo.key.0, todo.key.1);
    let rejected = |refusal: super::edges::Refusal| {
        Event::ModelRejected(ModelRejected {
            hotkey: hotkey.clone(),
            block_commit,
            code: refusal.code,
            detail: refusal.detail,
        })
    };
    let stored = match store
        .fetch(hotkey, &todo.model, todo.competition.max_repo_bytes)
        .await?
    {
        Verdict::Accepted(stored) => stored,
        Verdict::Rejected(refusal) => return Ok(rejected(refusal)),
    };
    match evaluator.check(&stored.dir, &todo.rules).await? {
        Verdict::Accepted(_) => Ok(Event::ModelVerified(ModelVerified {
            hotkey: hotkey.clone(),
            block_commit,
            hash_kind: stored.hash_kind,
        })),
        Verdict::Rejected(refusal) => Ok(rejected(refusal)),
    }
}

/// Whether a `NotFound` refusal is early: the commitment was observed less than
/// `retry_blocks` blocks ago, so the repository may still be private (N retries on every pass).
fn not_there_yet(state: &State, rejected: &ModelRejected, block: u64, retry_blocks: u64) -> bool {
    if rejected.code != RejectionCode::NotFound {
        return false;
    }
    state
        .hotkeys
        .get(&rejected.hotkey)
        .and_then(|record| record.commitment.as_ref())
        .filter(|commitment| commitment.block_commit == rejected.block_commit)
        .is_some_and(|commitment| block.saturating_sub(commitment.block_observed) < retry_blocks)
}

/// Tells the operator (and the miner reading the log) what was decided about a model.
fn report(event: &Event) {
    match event {
        Event::ModelVerified(verified) => tracing::info!(
            "verified {}'s model (commit block {}, {:?} hash)",
            verified.hotkey,
            verified.block_commit,
            verified.hash_kind
        ),
        Event::ModelRejected(rejected) => tracing::info!(
            "rejected {}'s model (commit block {}): {:?}: {}",
            rejected.hotkey,
            rejected.block_commit,
            rejected.code,
            rejected.detail
        ),
        _ => {}
    }
}

/// The fetcher task.
pub struct Fetcher<S, E> {
    /// The journal.
    pub writer: WriterHandle,
    /// Where models come from.
    pub store: Arc<S>,
    /// The checks.
    pub evaluator: Arc<E>,
    /// Concurrency, retries, the cache and its grace period.
    pub config: RunConfig,
    /// Shared with the stepper.
    pub status: SharedStatus,
    /// Bumped whenever a fetch ends, so a waiting stepper looks again.
    pub progress: watch::Sender<u64>,
    /// The chain's head as the stepper last read it.
    pub head: HeadSeen,
}

/// The chain's head as last read, told by the stepper (and the poller) to the fetcher: a quiet
/// chain journals nothing new, so the journal's last block can lag the head by many blocks,
/// and the successor's evaluation delay is counted to the head.
#[derive(Debug, Clone)]
pub struct HeadSeen(Arc<watch::Sender<u64>>);

impl Default for HeadSeen {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl HeadSeen {
    /// The chain was read at `block`: the head moves forward only.
    pub fn saw(&self, block: u64) {
        self.0.send_if_modified(|head| {
            let later = block > *head;
            if later {
                *head = block;
            }
            later
        });
    }

    /// The head as last read (0 before any).
    pub fn block(&self) -> u64 {
        *self.0.borrow()
    }

    /// A receiver that wakes when the head moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

impl<S, E> Fetcher<S, E>
where
    S: ModelStore + 'static,
    E: ModelEvaluator + 'static,
{
    /// Runs until `stop` turns true. Only a journal failure ends it early.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> Result<(), WriteError> {
        let mut states = self.writer.subscribe();
        let mut heads = self.head.subscribe();
        let mut jobs: JoinSet<(Todo, Result<Event, EdgeError>)> = JoinSet::new();
        let mut swept_at = Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            self.start_jobs(&mut jobs);
            if swept_at.elapsed() >= self.config.grace_period {
                self.sweep().await;
                swept_at = Instant::now();
            }
            let wake = self.next_retry().unwrap_or(Duration::from_secs(30));
            tokio::select! {
                done = jobs.join_next(), if !jobs.is_empty() => {
                    if let Some(Ok((todo, result))) = done {
                        self.finish(todo, result).await?;
                    }
                }
                changed = states.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // A later head can make a commitment old enough to download.
                _ = heads.changed() => {}
                _ = stop.changed() => {}
                () = tokio::time::sleep(wake) => {}
            }
        }
        jobs.abort_all();
        Ok(())
    }

    /// The block a fetch is decided and journaled at: the chain's head as last read, or the
    /// journal's last block if that is later.
    fn now(&self, state: &State) -> u64 {
        let journaled = state.position.map_or(0, |p| p.block);
        journaled.max(self.head.block())
    }

    fn start_jobs(&self, jobs: &mut JoinSet<(Todo, Result<Event, EdgeError>)>) {
        let state = self.writer.state();
        let block = self.now(&state);
        let now = Instant::now();
        lock(&self.status)
            .resynced_at
            .retain(|_, at| now.duration_since(*at) < RESYNC_INTERVAL);
        for todo in todo(&state, block)
            .into_iter()
            .chain(resyncs(&state, block))
        {
            let mut status = lock(&self.status);
            if status.resynced_at.contains_key(&todo.key) {
                continue;
            }
            if status.in_flight.len() >= self.config.fetch_concurrency.max(1) {
                break;
            }
            let waiting = status
                .failed
                .get(&todo.key)
                .is_some_and(|failure| failure.retry_at > now);
            if waiting || status.in_flight.contains(&todo.key) {
                continue;
            }
            status.in_flight.insert(todo.key.clone());
            drop(status);
            let (store, evaluator) = (self.store.clone(), self.evaluator.clone());
            jobs.spawn(async move {
                let result = resolve(&*store, &*evaluator, &todo).await;
                (todo, result)
            });
        }
    }

    async fn finish(&self, todo: Todo, result: Result<Event, EdgeError>) -> Result<(), WriteError> {
        let state = self.writer.state();
        let block = self.now(&state);
        let result = match result {
            Ok(Event::ModelRejected(rejected))
                if not_there_yet(&state, &rejected, block, self.config.not_found_retry_blocks) =>
            {
                Err(EdgeError::Unavailable(format!(
                    "{} (looked for again until {} blocks after the commitment was seen)",
                    rejected.detail, self.config.not_found_retry_blocks
                )))
            }
            other => other,
        };
        let outcome = match result {
            Ok(event) => {
                report(&event);
                self.writer.record(vec![(block, event)]).await?;
                let mut status = lock(&self.status);
                status.failed.remove(&todo.key);
                status.resynced_at.insert(todo.key.clone(), Instant::now());
                None
            }
            Err(error) => Some(error),
        };
        if let Some(error) = outcome
            && self.note_failure(&todo.key, &error)
        {
            self.sweep().await;
        }
        {
            let mut status = lock(&self.status);
            status.in_flight.remove(&todo.key);
            status.cache_changes = status.cache_changes.wrapping_add(1);
        }
        self.progress
            .send_modify(|count| *count = count.wrapping_add(1));
        Ok(())
    }

    /// Records a failed fetch and its retry time; returns whether the disk was full.
    fn note_failure(&self, key: &CommitmentKey, error: &EdgeError) -> bool {
        let mut status = lock(&self.status);
        let attempts = status.failed.get(key).map_or(0, |f| f.attempts);
        let delay = self.config.fetch_retry.delay(attempts);
        let (hotkey, block_commit) = key;
        let loudness = if error.is_retryable() {
            ""
        } else {
            "ACTION NEEDED: "
        };
        tracing::warn!(
            "{loudness}fetching {hotkey}'s model (commit block {block_commit}) \
             failed, retrying in {} s: {error}",
            delay.as_secs()
        );
        status.failed.insert(
            key.clone(),
            FetchFailure {
                attempts: attempts.saturating_add(1),
                retry_at: Instant::now() + delay,
                reason: error.to_string(),
            },
        );
        matches!(error, EdgeError::DiskFull(_))
    }

    fn next_retry(&self) -> Option<Duration> {
        let status = lock(&self.status);
        let now = Instant::now();
        status
            .failed
            .values()
            .map(|f| f.retry_at.saturating_duration_since(now))
            .min()
            .map(|wait| wait.max(Duration::from_millis(10)))
    }

    /// Deletes cached models nothing in the journal still references, once idle for the grace
    /// period.
    async fn sweep(&self) {
        let referenced = self.writer.state().referenced_models();
        let cache = self.config.model_dir.clone();
        let grace = self.config.grace_period;
        let swept = tokio::task::spawn_blocking(move || {
            crate::hub::cache::sweep(&cache, &referenced, grace, SystemTime::now())
        })
        .await;
        {
            let mut status = lock(&self.status);
            status.cache_changes = status.cache_changes.wrapping_add(1);
        }
        if let Ok(Ok(report)) = &swept
            && !report.foreign.is_empty()
        {
            let listed: Vec<String> = report.foreign.iter().map(ToString::to_string).collect();
            tracing::warn!(
                "ACTION NEEDED: the model cache holds what the validator did not put there; \
                 left alone, never followed: {}",
                listed.join(", ")
            );
        }
        match swept {
            Ok(Ok(report)) if !report.deleted.is_empty() => tracing::info!(
                "swept {} cached models ({} bytes)",
                report.deleted.len(),
                report.bytes_freed
            ),
            Ok(Err(error)) => tracing::warn!("sweeping the model cache failed: {error}"),
            _ => {}
        }
    }
}
