//! A step, for the competition the fold says is next:
//!
//! 1. read the chain at the head and journal what changed;
//! 2. on a recorded chain, wait until every visible commitment has a verdict;
//! 3. fetch the batch in memory, then journal `StepStarted` and `BatchFetched` in one atomic
//!    write (a step with an empty eval set starts and completes without a batch, as N returns
//!    before pulling data); a batch that cannot be fetched journals `StepFailed`, which does
//!    not advance the round-robin, and the step is tried again after a backoff;
//! 4. evaluate each participant that has a model and no outcome yet, journaling each
//!    `LossesComputed` as it finishes (the batch is tokenised once per tokenizer);
//! 5. journal `StepCompleted` with the fold's own preview of it.
//!
//! Restart is resume: the state is the journal's fold, so an open step goes on from its
//! journaled batch with the participants that have no outcome. A device that cannot be opened
//! is the machine's fault: the step is failed (not scored, nobody penalised) and retried.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::RunError;
use super::config::RunConfig;
use super::edges::{
    ChainEdge, EdgeError, EvalRequest, Evaluated, ModelEvaluator, ModelStore, Observation, Refusal,
    TokenizedBatch, Verdict, batch_digest,
};
use super::fetch::{failed_on_verified_files, unresolved};
use super::identity::this_worker;
use super::schedule::{Plan, Queued, by_size, dispatch, shard_count};
use super::table::step_table;
use super::tasks::TasksLoad;
use super::writer::{WriteError, WriterHandle};
use crate::data::{BatchRequest, DataSource, Seed};
use crate::eval::safetensors::weight_file_bytes;
use crate::eval::template::{CivilDate, Isolation};
use crate::eval::tokenize::TokenizerFiles;
use crate::machine::event::{
    EvalOutcome, EvaluationReported, LossesComputed, ReportVerdict, StepAbandoned, StepCompleted,
    StepFailed, StepStarted,
};
use crate::machine::params::CompetitionId;
use crate::machine::preview::{step_completion, step_start};
use crate::machine::state::{Entry, OpenStep, Participant};
use crate::machine::successor_loop;
use crate::machine::{Event, Outcome, State};

/// Where a step's time went, in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepTiming {
    /// The step.
    pub step: u64,
    /// Models evaluated in it by this run.
    pub models: usize,
    /// Reading the chain and journaling what changed.
    pub observe_seconds: f64,
    /// Waiting for verdicts on visible commitments (recorded chains).
    pub settle_seconds: f64,
    /// Fetching the batch.
    pub data_seconds: f64,
    /// Tokenising the batch (in worker processes).
    pub tokenize_seconds: f64,
    /// Evaluating the models (worker processes: start, session, scoring).
    pub evaluate_seconds: f64,
    /// Of which building sessions, as the workers measured it.
    pub session_seconds: f64,
    /// Of which scoring samples, as the workers measured it.
    pub scoring_seconds: f64,
    /// Waiting for the journal (append, flush, fold).
    pub journal_seconds: f64,
    /// The whole step.
    pub total_seconds: f64,
}

impl StepTiming {
    /// The runner's own share: the step's time less what the edges took (chain, settle,
    /// data, tokenisation, evaluation), i.e. journaling, folding and scheduling.
    pub fn overhead_seconds(&self) -> f64 {
        (self.total_seconds
            - self.observe_seconds
            - self.settle_seconds
            - self.data_seconds
            - self.tokenize_seconds
            - self.evaluate_seconds)
            .max(0.0)
    }
}

/// How a pass of the stepper ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Pass {
    /// A step completed.
    Completed(StepTiming),
    /// The step could not run or be scored; try again after the backoff.
    Failed(String),
    /// Nothing to do yet (no metagraph, nothing scheduled, the chain unreachable).
    Waiting(String),
    /// Nothing to do until the chain reaches a later block (the successor's next sync block),
    /// about `wait` from now: not a failure, so no backoff grows.
    Until {
        /// Why.
        reason: String,
        /// How long until then, at 12 seconds a block.
        wait: Duration,
    },
    /// A step completed with nobody to evaluate: under the successor's rules the loop rests
    /// before the next, as F sleeps when nothing is queued.
    Idle(StepTiming),
    /// Asked to stop.
    Stopped,
}

/// The stepper: owns nothing but handles; the journal holds its progress.
pub struct Stepper<C, S, E, D> {
    /// The journal.
    pub writer: WriterHandle,
    /// The chain.
    pub chain: Arc<C>,
    /// The model store (to refetch a model deleted from the cache mid-run).
    pub store: Arc<S>,
    /// The evaluation worker.
    pub evaluator: Arc<E>,
    /// Where batches come from.
    pub data: Arc<D>,
    /// The run's configuration.
    pub config: RunConfig,
    /// Bumped by the fetcher when a fetch ends.
    pub progress: watch::Receiver<u64>,
    /// What the fetcher is doing (which verdicts it journaled and when).
    pub fetches: super::fetch::SharedStatus,
    /// Where the chain's head is told to the fetcher.
    pub head: super::fetch::HeadSeen,
    /// Turns true when the run must stop.
    pub stop: watch::Receiver<bool>,
    /// Where durations are reported.
    pub monitor: Arc<super::monitor::Monitor>,
}

fn journal(error: WriteError) -> RunError {
    match error {
        WriteError::Journal(error) => RunError::Journal(error),
        WriteError::Stopped => RunError::WriterStopped,
    }
}

impl<C, S, E, D> Stepper<C, S, E, D>
where
    C: ChainEdge,
    S: ModelStore,
    E: ModelEvaluator,
    D: DataSource,
{
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `wait`, or less if asked to stop. Returns whether to stop.
    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = self.stop.changed() => {}
        }
        self.stopping()
    }

    async fn record(
        &self,
        events: Vec<(u64, Event)>,
        timing: &mut StepTiming,
    ) -> Result<Vec<(crate::machine::Record, Outcome)>, RunError> {
        let started = Instant::now();
        let written = self.writer.record(events).await.map_err(journal)?;
        timing.journal_seconds += started.elapsed().as_secs_f64();
        // The runner only journals what the fold accepts; a refusal here is a bug to surface.
        for (record, outcome) in &written {
            if let Outcome::Rejected(why) = outcome {
                tracing::warn!(
                    "the fold refused the runner's own {} at block {}: {why}",
                    record.event.kind(),
                    record.block
                );
            }
        }
        Ok(written)
    }

    /// Runs steps until the journal holds `max_steps` completed ones or a stop is asked.
    pub async fn run(&mut self) -> Result<Vec<StepTiming>, RunError> {
        let mut timings = Vec::new();
        let mut failures = 0u32;
        loop {
            let state = self.writer.state();
            let done = self
                .config
                .max_steps
                .is_some_and(|max| state.step_next >= max && state.step_open.is_none());
            if done || self.stopping() {
                return Ok(timings);
            }
            match self.pass().await? {
                Pass::Completed(timing) => {
                    failures = 0;
                    self.monitor.step_took(timing.total_seconds);
                    timings.push(timing);
                }
                Pass::Idle(timing) => {
                    failures = 0;
                    self.monitor.step_took(timing.total_seconds);
                    timings.push(timing);
                    tracing::info!(
                        "nothing to evaluate; the next step in {} s",
                        IDLE_WAIT.as_secs()
                    );
                    if self.pause(IDLE_WAIT).await {
                        return Ok(timings);
                    }
                }
                Pass::Until { reason, wait } => {
                    failures = 0;
                    tracing::info!("{reason}; waiting {} s", wait.as_secs());
                    if self.pause(wait).await {
                        return Ok(timings);
                    }
                }
                Pass::Failed(reason) | Pass::Waiting(reason) => {
                    let wait = self.config.step_retry.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(
                        "step {} not run: {reason}; trying again in {} s",
                        state.step_next,
                        wait.as_secs_f64()
                    );
                    if self.pause(wait).await {
                        return Ok(timings);
                    }
                }
                Pass::Stopped => return Ok(timings),
            }
        }
    }

    /// One step: begun (or resumed), evaluated, completed.
    async fn pass(&mut self) -> Result<Pass, RunError> {
        let started = Instant::now();
        let mut timing = StepTiming::default();
        let state = self.writer.state();
        if state.step_open.is_none() {
            match self.begin(&state, &mut timing).await? {
                Pass::Completed(_) => {}
                other => return Ok(other),
            }
        }
        let state = self.writer.state();
        let Some(open) = state.step_open.clone() else {
            return Ok(Pass::Waiting("the step did not open".into()));
        };
        timing.step = open.step;
        match self.evaluate(&open, &mut timing).await? {
            Pass::Completed(_) => {}
            other => return Ok(other),
        }
        self.complete(&open, &mut timing).await?;
        timing.total_seconds = started.elapsed().as_secs_f64();
        // A recorded chain has no clock to wait for: its head moves with the steps.
        let rests =
            open.participants.is_empty() && self.successor() && !self.config.settle_before_step;
        Ok(if rests {
            Pass::Idle(timing)
        } else {
            Pass::Completed(timing)
        })
    }

    /// Observes the chain, settles, fetches the batch and opens the step.
    async fn begin(&mut self, state: &State, timing: &mut StepTiming) -> Result<Pass, RunError> {
        let step = state.step_next;
        let observed_at = Instant::now();
        let observation = match self.observe(step).await {
            Ok(observation) => observation,
            Err(error) => return Ok(Pass::Waiting(format!("the chain: {error}"))),
        };
        let head = observation.block;
        if let Err(error) = self.observe_validators(head).await {
            return Ok(Pass::Waiting(format!("the chain: {error}")));
        }
        timing.observe_seconds = observed_at.elapsed().as_secs_f64();
        if self.config.settle_before_step {
            let settled_at = Instant::now();
            if self.settle(head, false).await {
                return Ok(Pass::Stopped);
            }
            timing.settle_seconds = settled_at.elapsed().as_secs_f64();
        }
        let state = self.writer.state();
        if let Some((competition, sync, next)) = successor_loop::gate_closed(&state, head) {
            let blocks = next.saturating_sub(head).max(1);
            let reason = format!(
                "competition {competition} already ran in sync block {sync}; the next sync \
                 block is {next} ({blocks} blocks from {head})"
            );
            // A live chain gets there with time; a recording's head moves only when a step
            // begins, so a recording whose steps are closer than a sync cadence never would.
            if self.config.settle_before_step {
                return Err(RunError::Config(format!(
                    "{reason}: a recorded chain's head moves only as steps begin, so under the \
                     successor's rules its blocks_per_step must be at least the sync cadence"
                )));
            }
            let wait =
                Duration::from_secs(blocks.saturating_mul(BLOCK_SECONDS).min(GATE_WAIT_MAX_S));
            return Ok(Pass::Until { reason, wait });
        }
        let Some(planned) = step_start(&state, head) else {
            return Ok(Pass::Waiting(format!(
                "no step can start at block {head} (no metagraph, or no competition scheduled)"
            )));
        };
        let started = Event::StepStarted(StepStarted {
            step,
            competition: planned.competition.clone(),
        });
        if planned.participants.is_empty() {
            // N returns before pulling data when there is nobody to evaluate.
            self.record(vec![(head, started)], timing).await?;
            return Ok(Pass::Completed(StepTiming::default()));
        }
        if successor_loop::rules(&state.params).is_some() {
            return self
                .begin_successor(step, head, &planned.competition, started, timing)
                .await;
        }
        let data_at = Instant::now();
        let seed = observation
            .block_hash
            .as_deref()
            .map_or(Seed::Unsynchronized(step), Seed::from_block_hash);
        let request = BatchRequest {
            step,
            seed,
            max_samples: self.config.samples_max,
        };
        let batch = tokio::select! {
            batch = self.data.fetch(&request) => batch,
            _ = self.stop.changed() => return Ok(Pass::Stopped),
        };
        timing.data_seconds = data_at.elapsed().as_secs_f64();
        match batch {
            Ok(batch) => {
                let events = vec![(head, started), (head, Event::BatchFetched(batch.batch))];
                self.record(events, timing).await?;
                Ok(Pass::Completed(StepTiming::default()))
            }
            Err(error) => {
                let reason = error.to_string();
                let failed = Event::StepFailed(StepFailed {
                    step,
                    reason: reason.clone(),
                });
                self.record(vec![(head, failed)], timing).await?;
                Ok(Pass::Failed(reason))
            }
        }
    }

    /// Reads the chain at the head for the next step and journals what changed.
    async fn observe(&self, step: u64) -> Result<Observation, EdgeError> {
        let head = self.chain.head(step).await?;
        let observation = self.chain.observe(head).await?;
        self.head.saw(observation.block);
        self.writer
            .observe(
                observation.block,
                Vec::new(),
                observation.events.clone(),
                Vec::new(),
            )
            .await
            .map_err(|e| EdgeError::Operator(format!("the journal: {e}")))?;
        Ok(observation)
    }

    /// Under the successor's rules, journals the validators its top-model scan reads (their
    /// stakes and weights at `head`) when they name other top miners than the state holds;
    /// nothing where the chain cannot say.
    async fn observe_validators(&self, head: u64) -> Result<(), EdgeError> {
        let state = self.writer.state();
        let Some(rules) = successor_loop::rules(&state.params) else {
            return Ok(());
        };
        #[allow(clippy::cast_possible_truncation)] // bittensor's stakes are f32
        let stake_min = rules.top_stake_min as f32;
        let Some(observed) = self.chain.validator_weights(head, stake_min).await? else {
            return Ok(());
        };
        // The fold keeps only the top miners the scan names: a reading that names the same
        // ones changes nothing, and is not journaled again on every pass.
        let top = crate::machine::successor::top_miners(
            &observed.validators,
            rules.top_stake_min,
            rules.top_weight_share,
        );
        if state
            .successor
            .as_ref()
            .is_some_and(|s| s.top_miners == top)
        {
            return Ok(());
        }
        self.writer
            .record(vec![(head, Event::ValidatorWeightsObserved(observed))])
            .await
            .map_err(|e| EdgeError::Operator(format!("the journal: {e}")))?;
        Ok(())
    }

    /// A successor step's data: every task of `competition` loaded with the sync block's
    /// seed and journaled with the step's start in one write; a task whose failure F re-raises
    /// fails the step after its start (F's `global_step` stays, and the step runs again); a
    /// step whose every task was dropped is abandoned, as F abandons it (the round-robin
    /// advances). Neither spends the sync block: F records it only once a step is scored.
    async fn begin_successor(
        &mut self,
        step: u64,
        head: u64,
        competition: &CompetitionId,
        started: Event,
        timing: &mut StepTiming,
    ) -> Result<Pass, RunError> {
        let state = self.writer.state();
        let Some(rules) = successor_loop::rules(&state.params) else {
            return Ok(Pass::Waiting("the successor's rules are gone".into()));
        };
        let tasks = rules
            .competition(competition)
            .map(|c| c.tasks.clone())
            .unwrap_or_default();
        let Some(sync) = successor_loop::sync_of(rules, head) else {
            return Ok(Pass::Waiting(format!("block {head} has no sync block")));
        };
        let hash = match self.chain.block_hash(sync).await {
            Ok(Some(hash)) => hash,
            Ok(None) => super::tasks::stand_in_block_hash(sync),
            Err(error) => {
                return Ok(Pass::Waiting(format!(
                    "the chain: the hash of sync block {sync}: {error}"
                )));
            }
        };
        let failed = |reason: &str| {
            Event::StepFailed(StepFailed {
                step,
                reason: reason.to_owned(),
            })
        };
        let Some(tokenizer) = self.config.tokenizers.get(competition) else {
            let reason = tokenizer_missing(competition);
            self.record(vec![(head, failed(&reason))], timing).await?;
            return Ok(Pass::Failed(reason));
        };
        let tokenizer_hash = tokenizer_digest(tokenizer);
        let seed = crate::hashing::seed_from_block_hash(&hash);
        let data_at = Instant::now();
        let loaded = tokio::select! {
            loaded = super::tasks::load_tasks(
                &self.config.datasets_server,
                &tasks,
                step,
                &seed,
                tokenizer_hash,
                tokio::time::sleep,
            ) => loaded,
            _ = self.stop.changed() => return Ok(Pass::Stopped),
        };
        timing.data_seconds = data_at.elapsed().as_secs_f64();
        match loaded {
            Ok(TasksLoad::Fetched(fetched)) if TasksLoad::all_dropped(&fetched) => {
                let reason = "all datasets failed to load";
                let abandoned = Event::StepAbandoned(StepAbandoned {
                    step,
                    reason: reason.into(),
                });
                let events = vec![
                    (head, started),
                    (head, Event::TasksFetched(fetched)),
                    (head, abandoned),
                ];
                self.record(events, timing).await?;
                Ok(Pass::Failed(format!("step abandoned: {reason}")))
            }
            Ok(TasksLoad::Fetched(fetched)) => {
                let events = vec![(head, started), (head, Event::TasksFetched(fetched))];
                self.record(events, timing).await?;
                Ok(Pass::Completed(StepTiming::default()))
            }
            Ok(TasksLoad::Aborted(reason)) => {
                let events = vec![(head, started), (head, failed(&reason))];
                self.record(events, timing).await?;
                Ok(Pass::Failed(reason))
            }
            Err(error) => {
                let reason = error.to_string();
                self.record(vec![(head, failed(&reason))], timing).await?;
                Ok(Pass::Failed(reason))
            }
        }
    }

    /// Waits until every commitment visible at `head` has a verdict, at most the start-up
    /// wait (a fetch that keeps failing is retried, and the step goes on without it then); `eval_set_only` waits only for the models of
    /// uids in an eval set (the seeded ones). Returns whether to stop.
    pub async fn settle(&mut self, head: u64, eval_set_only: bool) -> bool {
        let deadline = Instant::now() + self.config.startup_wait;
        let mut states = self.writer.subscribe();
        loop {
            let state = self.writer.state();
            let mut waiting = unresolved(&state, head);
            // A commitment whose verdict was journaled and left it pending (the successor
            // refuses some repositories before its tracker takes them, and looks again later)
            // has had its answer for now.
            {
                let fetches = self
                    .fetches
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                waiting.retain(|key| !fetches.resynced_at.contains_key(key));
            }
            if eval_set_only {
                waiting.retain(|(hotkey, _)| in_eval_set(&state, hotkey));
            }
            if waiting.is_empty() {
                return false;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                tracing::warn!(
                    "going on without verdicts for {} models after {} s",
                    waiting.len(),
                    self.config.startup_wait.as_secs()
                );
                return false;
            };
            tokio::select! {
                _ = self.progress.changed() => {}
                _ = states.changed() => {}
                _ = self.stop.changed() => {}
                () = tokio::time::sleep(left.min(Duration::from_secs(5))) => {}
            }
            if self.stopping() {
                return true;
            }
        }
    }

    /// Evaluates every participant of `open` with a model and no outcome, keeping as many
    /// evaluations in flight as the evaluator has room for (devices in a pool, remote workers)
    /// and dispatching the largest models first, so the longest evaluation does not start last.
    /// Each outcome is journaled as it arrives; the fold does not care in which order. In
    /// phases: the batch, the dispatch order, every request (the batch tokenised once per
    /// tokenizer), the plan of shards, then the evaluations themselves.
    async fn evaluate(
        &mut self,
        open: &OpenStep,
        timing: &mut StepTiming,
    ) -> Result<Pass, RunError> {
        let todo: Vec<&Participant> = open
            .participants
            .iter()
            .filter(|p| p.outcome.is_none() && matches!(p.entry, Entry::Model { .. }))
            .collect();
        if todo.is_empty() {
            return Ok(Pass::Completed(StepTiming::default()));
        }
        let Some((pairs, tokenizer_hash)) = self.step_pairs(open).await? else {
            let reason = format!("step {} has no journaled batch", open.step);
            self.fail_open(open, &reason, timing).await?;
            return Ok(Pass::Failed(reason));
        };
        if let Some(reason) = self.tokenizer_changed(open, tokenizer_hash.as_deref()) {
            self.fail_open(open, &reason, timing).await?;
            return Ok(Pass::Failed(reason));
        }
        let queue = self.dispatch_order(todo).await;
        let bar = self
            .config
            .progress_bars
            .then(|| evaluation_bar(open, queue.len()));
        let phase_at = Instant::now();
        let (tokenize_before, journal_before) = (timing.tokenize_seconds, timing.journal_seconds);
        let requests = match self.requests(open, queue, &pairs, timing).await? {
            Ok(requests) => requests,
            Err(pass) => return Ok(pass),
        };
        let capacity = self.evaluator.capacity().max(1);
        let workers = self.evaluator.workers().clamp(1, capacity);
        let shards = shard_count(requests.len(), workers, self.config.eval_shards_max);
        let plan = Plan::of(requests, shards);
        if let Some(pass) = self.run_plan(open, plan, bar.as_ref(), timing).await? {
            return Ok(pass);
        }
        // The wall time of the evaluations, less the tokenising and journaling done meanwhile:
        // with several in flight, a sum of per-model times would count the overlap twice.
        let phase_seconds = phase_at.elapsed().as_secs_f64()
            - (timing.tokenize_seconds - tokenize_before)
            - (timing.journal_seconds - journal_before);
        timing.evaluate_seconds += phase_seconds.max(0.0);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(Pass::Completed(StepTiming::default()))
    }

    /// The (prompt, response) pairs of the open step as journaled: N's batch, or the
    /// successor's tasks in order (question, reference) with the hash of the tokenizer they
    /// were journaled for.
    async fn step_pairs(&self, open: &OpenStep) -> Result<Option<StepPairs>, RunError> {
        if self.successor() {
            let tasks = self
                .writer
                .tasks_of(open.step, open.block_start)
                .await
                .map_err(journal)?;
            return Ok(tasks.map(|tasks| {
                let pairs = super::tasks::pairs_of(&tasks).into();
                (pairs, Some(tasks.tokenizer_hash))
            }));
        }
        let batch = self
            .writer
            .batch_of(open.step, open.block_start)
            .await
            .map_err(journal)?;
        Ok(batch.map(|batch| {
            let pairs = batch
                .samples
                .iter()
                .map(|s| (s.prompt.to_owned(), s.response.to_owned()))
                .collect();
            (pairs, None)
        }))
    }

    /// Why the open successor step cannot go on: its competition's tokenizer is not the one
    /// its tasks were journaled for (its files changed, or another directory was given, since
    /// then), so models already evaluated and those still to come would not have seen the same
    /// tokens. A step journaled before schema 10 names none.
    fn tokenizer_changed(&self, open: &OpenStep, journaled: Option<&str>) -> Option<String> {
        let journaled = journaled.filter(|hash| !hash.is_empty())?;
        let dir = self.config.tokenizers.get(&open.competition)?;
        let found = tokenizer_digest(dir);
        (found != journaled).then(|| {
            format!(
                "the tokenizer of competition {} ({}) hashes to {found}, not to {journaled} as \
                 when step {}'s tasks were journaled: the step is failed, and the next one is \
                 tokenised with these files",
                open.competition,
                dir.display(),
                open.step
            )
        })
    }

    /// Whether the parameters in force are the successor's.
    fn successor(&self) -> bool {
        successor_loop::rules(&self.writer.state().params).is_some()
    }

    /// The participants to evaluate, each with its model's directory (or why it has none),
    /// largest model first: [`by_size`] of the bytes of their weights.
    async fn dispatch_order<'a>(
        &self,
        todo: Vec<&'a Participant>,
    ) -> Vec<Queued<'a, Result<PathBuf, String>>> {
        let mut queue = Vec::with_capacity(todo.len());
        for participant in todo {
            let Entry::Model { model_id, .. } = &participant.entry else {
                continue;
            };
            let dir = self.model_dir(&participant.hotkey, model_id).await;
            // The order of dispatch: evaluation time grows with the weight files' bytes.
            let bytes = dir.as_ref().map_or(0, |dir| weight_file_bytes(dir));
            queue.push((bytes, participant, dir));
        }
        by_size(queue)
    }

    /// Every model's request, so the step's work is known before any of it is dispatched; a
    /// model that cannot be evaluated has its outcome journaled here. `Err`: how the step must
    /// end instead.
    async fn requests<'a>(
        &mut self,
        open: &OpenStep,
        queue: Vec<Queued<'a, Result<PathBuf, String>>>,
        pairs: &Arc<[(String, String)]>,
        timing: &mut StepTiming,
    ) -> Result<Result<Vec<Queued<'a, EvalRequest>>, Pass>, RunError> {
        let mut tokenized: BTreeMap<String, Verdict<TokenizedBatch>> = BTreeMap::new();
        let mut requests = Vec::with_capacity(queue.len());
        for (bytes, participant, dir) in queue {
            if self.stopping() {
                return Ok(Err(Pass::Stopped));
            }
            let dir = match dir {
                Ok(dir) => dir,
                Err(why) => {
                    let failed = EvalOutcome::Failed(why);
                    self.record_outcome(open, participant, failed, Vec::new(), timing)
                        .await?;
                    continue;
                }
            };
            match self
                .request_for(open, participant, dir, pairs, &mut tokenized, timing)
                .await?
            {
                Ok(Ok(request)) => requests.push((bytes, participant, request)),
                Ok(Err(outcome)) => {
                    self.record_outcome(open, participant, outcome, Vec::new(), timing)
                        .await?;
                }
                Err(pass) => return Ok(Err(pass)),
            }
        }
        Ok(Ok(requests))
    }

    /// Runs `plan`'s units, as many in flight as the evaluator has room for, the next model
    /// read ahead while they run, and journals each model's outcome once its shards are back.
    /// `Some`: how the step must end instead.
    async fn run_plan(
        &mut self,
        open: &OpenStep,
        plan: Plan<'_>,
        bar: Option<&indicatif::ProgressBar>,
        timing: &mut StepTiming,
    ) -> Result<Option<Pass>, RunError> {
        let Plan {
            mut assembling,
            units,
        } = plan;
        let capacity = self.evaluator.capacity().max(1);
        let mut units = units.into_iter().peekable();
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let mut prefetched = std::collections::BTreeSet::new();
        loop {
            while in_flight.len() < capacity {
                let Some((_, participant, request)) = units.next() else {
                    break;
                };
                prefetched.insert(request.dir.clone());
                in_flight.push(dispatch(self.evaluator.clone(), participant, request));
            }
            // The next model to start is read ahead while these run (advice only; a model
            // already dispatched or advised is not advised again).
            if let Some((_, _, next)) = units.peek()
                && self.evaluator.reads_files_here()
                && prefetched.insert(next.dir.clone())
            {
                let dir = next.dir.clone();
                tokio::task::spawn_blocking(move || super::prefetch::advise(&dir));
            }
            let next = tokio::select! {
                next = futures::StreamExt::next(&mut in_flight) => next,
                _ = self.stop.changed() => return Ok(Some(Pass::Stopped)),
            };
            let Some((participant, shard, digest, evaluated, seconds)) = next else {
                return Ok(None);
            };
            self.monitor.evaluation_took(seconds);
            let evaluated = match evaluated {
                Ok(evaluated) => evaluated,
                Err(EdgeError::Unavailable(why)) => Evaluated::new(
                    EvalOutcome::Failed(format!("the model could not be read: {why}")),
                    this_worker("-"),
                ),
                Err(EdgeError::Fatal(why)) => {
                    let reason = format!("the run stops: {why}");
                    self.fail_open(open, &reason, timing).await?;
                    return Err(RunError::Fatal(why));
                }
                Err(error) => {
                    let reason = format!("ACTION NEEDED: {error}");
                    self.fail_open(open, &reason, timing).await?;
                    return Ok(Some(Pass::Failed(reason)));
                }
            };
            if let Err(reason) = self.blamed_on_verified_files(participant, &evaluated).await {
                self.fail_open(open, &reason, timing).await?;
                return Ok(Some(Pass::Failed(reason)));
            }
            timing.session_seconds += evaluated.session_seconds;
            timing.scoring_seconds += evaluated.scoring_seconds;
            let Some(assembly) = assembling.get_mut(&participant.uid) else {
                continue;
            };
            assembly.parts.insert(shard, (evaluated, digest));
            if !assembly.complete() {
                continue;
            }
            let Some(assembly) = assembling.remove(&participant.uid) else {
                continue;
            };
            if let Some(bar) = bar {
                bar.set_message(format!("uid {}", participant.uid));
                bar.inc(1);
            }
            let (outcome, parts) = assembly.merged();
            self.record_outcome(open, participant, outcome, parts, timing)
                .await?;
        }
    }

    /// A failed evaluation of files read here is the model's only if its files are still
    /// the ones verified: else (the cache was deleted under it) the step fails as the
    /// machine's fault, with the model fetched again for the retry.
    async fn blamed_on_verified_files(
        &self,
        participant: &Participant,
        evaluated: &Evaluated,
    ) -> Result<(), String> {
        let (EvalOutcome::Failed(_), Entry::Model { model_id, .. }) =
            (&evaluated.outcome, &participant.entry)
        else {
            return Ok(());
        };
        if !self.evaluator.reads_files_here() {
            return Ok(());
        }
        let repo_bytes_max = self.repo_bytes_max(model_id);
        failed_on_verified_files(&*self.store, &participant.hotkey, model_id, repo_bytes_max).await
    }

    /// Journals one participant's outcome, with the workers' reports of it (one per shard, and
    /// any results for it refused before) in the same write.
    async fn record_outcome(
        &self,
        open: &OpenStep,
        participant: &Participant,
        outcome: EvalOutcome,
        evaluated: Vec<(Evaluated, String)>,
        timing: &mut StepTiming,
    ) -> Result<(), RunError> {
        timing.models += 1;
        let Entry::Model { model_hash, .. } = &participant.entry else {
            return Ok(());
        };
        let state = self.writer.state();
        let outcome = match state.successor.as_ref() {
            Some(successor) if successor_loop::rules(&state.params).is_some() => {
                let counts: Vec<usize> = successor
                    .tasks_open
                    .iter()
                    .flatten()
                    .filter_map(|task| task.samples)
                    .collect();
                super::tasks::split_losses(outcome, &counts)
            }
            _ => outcome,
        };
        let losses = |outcome| {
            Event::LossesComputed(LossesComputed {
                step: open.step,
                uid: participant.uid,
                hotkey: participant.hotkey.clone(),
                model_hash: model_hash.clone(),
                outcome,
            })
        };
        let mut events = Vec::new();
        for (evaluated, batch_digest) in evaluated {
            for refused in evaluated.refused {
                events.push((open.block_start, Event::EvaluationReported(refused)));
            }
            let report = EvaluationReported {
                step: open.step,
                uid: participant.uid,
                model_hash: model_hash.clone(),
                batch_digest,
                worker: evaluated.worker,
                verdict: ReportVerdict::Accepted,
                worker_id: evaluated.worker_id,
            };
            events.push((open.block_start, Event::EvaluationReported(report)));
        }
        events.push((open.block_start, losses(outcome)));
        let written = self.record(events, timing).await?;
        // An outcome the fold refuses (losses that do not fit the batch) would leave the
        // participant without one and be evaluated forever: record the failure instead.
        if let Some((_, Outcome::Rejected(why))) = written.last() {
            let failed = EvalOutcome::Failed(format!("the evaluation's result was refused: {why}"));
            self.record(vec![(open.block_start, losses(failed))], timing)
                .await?;
        }
        Ok(())
    }

    /// The evaluation request of one participant (its batch tokenised), its outcome when it
    /// cannot be evaluated, or how the step must end instead.
    async fn request_for(
        &mut self,
        open: &OpenStep,
        participant: &Participant,
        dir: PathBuf,
        pairs: &Arc<[(String, String)]>,
        tokenized: &mut BTreeMap<String, Verdict<TokenizedBatch>>,
        timing: &mut StepTiming,
    ) -> Result<Result<Result<EvalRequest, EvalOutcome>, Pass>, RunError> {
        let Entry::Model {
            model_id,
            model_hash,
            ..
        } = &participant.entry
        else {
            return Ok(Err(Pass::Waiting("not a model".into())));
        };
        let fixed = self.config.tokenizers.get(&open.competition).cloned();
        let successor = self.successor();
        if successor && fixed.is_none() {
            let reason = tokenizer_missing(&open.competition);
            self.fail_open(open, &reason, timing).await?;
            return Ok(Err(Pass::Failed(reason)));
        }
        let tokenizer_dir = fixed.clone().unwrap_or_else(|| dir.clone());
        let tokenize_at = Instant::now();
        let tokenized = if successor {
            reference_tokenized(&tokenizer_dir, pairs, tokenized).await
        } else {
            self.tokenized(&tokenizer_dir, pairs, tokenized).await
        };
        timing.tokenize_seconds += tokenize_at.elapsed().as_secs_f64();
        let batch = match tokenized {
            Ok(Verdict::Accepted(batch)) => batch,
            Ok(Verdict::Rejected(refusal)) if fixed.is_none() => {
                return Ok(Ok(Err(EvalOutcome::Failed(format!(
                    "tokenising with the model's own files failed: {}",
                    refusal.detail
                )))));
            }
            Ok(Verdict::Rejected(refusal)) => {
                // The competition's tokenizer is the operator's: nobody's model is at fault.
                let reason = format!(
                    "ACTION NEEDED: the tokenizer of competition {} ({}) is unusable: {}",
                    open.competition,
                    tokenizer_dir.display(),
                    refusal.detail
                );
                self.fail_open(open, &reason, timing).await?;
                return Ok(Err(Pass::Failed(reason)));
            }
            Err(error) => {
                let reason = format!("tokenising the batch: {error}");
                self.fail_open(open, &reason, timing).await?;
                return Ok(Err(Pass::Failed(reason)));
            }
        };
        Ok(Ok(Ok(EvalRequest {
            step: open.step,
            uid: participant.uid,
            hotkey: participant.hotkey.clone(),
            model: model_id.clone(),
            model_hash: model_hash.clone(),
            dir,
            repo_bytes_max: self.repo_bytes_max(model_id),
            shard: 0,
            batch_digest: batch_digest(&batch),
            batch,
        })))
    }

    /// The largest repository `model`'s competition accepts (N's when it is not known).
    fn repo_bytes_max(&self, model: &crate::machine::model_id::ModelId) -> u64 {
        let state = self.writer.state();
        let block = state.position.map_or(0, |p| p.block);
        state
            .params
            .competition_at(block, &model.competition)
            .or_else(|| state.params.competition_by_id(&model.competition))
            .map_or(crate::machine::params::N_MAX_REPO_BYTES, |c| {
                c.max_repo_bytes
            })
    }

    /// The model's directory in the cache, fetched again if it is gone (the cache is derived
    /// data: an operator may delete it at any time).
    async fn model_dir(
        &self,
        hotkey: &str,
        model: &crate::machine::model_id::ModelId,
    ) -> Result<PathBuf, String> {
        let dir = self.store.dir_of(hotkey, model);
        if dir.is_dir() {
            return Ok(dir);
        }
        let repo_bytes_max = self.repo_bytes_max(model);
        let mut attempts = 0u32;
        loop {
            match self.store.fetch(hotkey, model, repo_bytes_max).await {
                Ok(Verdict::Accepted(stored)) => return Ok(stored.dir),
                Ok(Verdict::Rejected(refusal)) => {
                    return Err(format!(
                        "the model left the cache and could not be fetched again: {}",
                        refusal.detail
                    ));
                }
                Err(error) if attempts < 3 && error.is_retryable() => {
                    attempts += 1;
                    tokio::time::sleep(
                        self.config
                            .fetch_retry
                            .delay(attempts)
                            .min(Duration::from_secs(30)),
                    )
                    .await;
                }
                Err(error) => {
                    return Err(format!(
                        "the model left the cache and could not be fetched again: {error}"
                    ));
                }
            }
        }
    }

    /// The batch tokenised with the files in `dir`, once per step and tokenizer (keyed by the
    /// files' contents, so models that ship the same tokenizer share it).
    async fn tokenized(
        &self,
        dir: &Path,
        pairs: &Arc<[(String, String)]>,
        cache: &mut BTreeMap<String, Verdict<TokenizedBatch>>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        let key = tokenizer_digest(dir);
        if let Some(known) = cache.get(&key) {
            return Ok(known.clone());
        }
        let verdict = self.evaluator.tokenize(dir, pairs.clone()).await?;
        cache.insert(key, verdict.clone());
        Ok(verdict)
    }

    /// Fails the open step: not scored, nobody penalised, the same step again later.
    async fn fail_open(
        &self,
        open: &OpenStep,
        reason: &str,
        timing: &mut StepTiming,
    ) -> Result<(), RunError> {
        tracing::warn!("step {} failed: {reason}", open.step);
        let failed = Event::StepFailed(StepFailed {
            step: open.step,
            reason: reason.to_owned(),
        });
        self.record(vec![(open.block_start, failed)], timing)
            .await?;
        Ok(())
    }

    /// Journals the step's completion as the fold previews it, and prints N's table.
    async fn complete(&self, open: &OpenStep, timing: &mut StepTiming) -> Result<(), RunError> {
        let state = self.writer.state();
        let block = state.position.map_or(open.block_start, |p| p.block);
        let Some(current) = state.step_open.clone() else {
            return Ok(());
        };
        let Some(recorded) = step_completion(&state, block) else {
            return Ok(());
        };
        let completed = Event::StepCompleted(StepCompleted {
            step: open.step,
            recorded: recorded.clone(),
        });
        self.record(vec![(block, completed)], timing).await?;
        if self.config.print_tables {
            print!("{}", step_table(&current, &recorded));
        }
        Ok(())
    }
}

/// How long the successor's loop rests after a step with nobody to evaluate (F sleeps 300 s
/// when nothing is queued, neurons/validator.py L1052-1064).
pub const IDLE_WAIT: Duration = Duration::from_secs(300);

/// Seconds per block, for waits counted in blocks.
const BLOCK_SECONDS: u64 = 12;

/// The longest single wait for a sync block; the chain is read again after it.
const GATE_WAIT_MAX_S: u64 = 600;

/// A step's (prompt, response) pairs, and under the successor's rules the hash of the
/// tokenizer they were journaled for.
type StepPairs = (Arc<[(String, String)]>, Option<String>);

/// The successor's reference-loss form of the step's pairs, tokenised here with the
/// competition's tokenizer (the operator's files, never a miner's: its template renders in
/// this process), once per step.
async fn reference_tokenized(
    dir: &Path,
    pairs: &Arc<[(String, String)]>,
    cache: &mut BTreeMap<String, Verdict<TokenizedBatch>>,
) -> Result<Verdict<TokenizedBatch>, EdgeError> {
    let key = format!("reference:{}", tokenizer_digest(dir));
    if let Some(known) = cache.get(&key) {
        return Ok(known.clone());
    }
    let (dir, pairs) = (dir.to_owned(), pairs.clone());
    let prepared = tokio::task::spawn_blocking(move || {
        let tokenizer = TokenizerFiles::load(&dir)?;
        tokenizer.prepare_reference(&pairs, CivilDate::today(), &Isolation::InProcess)
    })
    .await
    .map_err(|e| EdgeError::Operator(format!("a tokenising thread died: {e}")))?;
    let verdict = match prepared {
        Ok(prepared) => Verdict::Accepted(prepared.into()),
        Err(error) => Verdict::Rejected(Refusal::new(
            crate::machine::event::RejectionCode::MalformedRepo,
            error.to_string(),
        )),
    };
    cache.insert(key, verdict.clone());
    Ok(verdict)
}

/// Whether `hotkey`'s uid is in an eval set (or pending for one).
fn in_eval_set(state: &State, hotkey: &str) -> bool {
    let uid = state.metagraph.as_ref().and_then(|m| m.uid_of(hotkey));
    uid.is_some_and(|uid| {
        state
            .competitions
            .values()
            .any(|c| c.eval_set.contains(uid))
    })
}

/// A digest of the tokenizer files in `dir`, so that a step tokenises once per distinct
/// tokenizer.
fn tokenizer_digest(dir: &Path) -> String {
    crate::dirhash::hash_of_tokenizer_files(dir)
}

/// Why a successor step cannot be tokenised: its competition's tokenizer was not given.
fn tokenizer_missing(competition: &CompetitionId) -> String {
    format!(
        "ACTION NEEDED: competition {competition} is scored with its own tokenizer, and none \
         was given (--tokenizer {competition}=DIR)"
    )
}

/// A progress bar over a step's evaluations, on a terminal only (hidden elsewhere, so a log
/// file or JSON logging never receives one).
fn evaluation_bar(open: &OpenStep, models: usize) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let bar = indicatif::ProgressBar::new(u64::try_from(models).unwrap_or(u64::MAX));
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    if let Ok(style) = indicatif::ProgressStyle::with_template(&format!(
        "step {} · {} {{bar:30}} {{pos}}/{{len}} models · {{msg}}",
        open.step, open.competition
    )) {
        bar.set_style(style);
    }
    bar
}
