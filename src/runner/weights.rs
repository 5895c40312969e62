//! The weight setter: a task of its own, over its own chain connection, that puts the folded
//! weights on chain once per due epoch, by whatever rule the subnet has.
//!
//! Under N's cadence (`AfterStep`, the default) weights are due when the fold says a step made
//! them due, as N's loop checks the epoch between steps, and the chain's `WeightsSetRateLimit`
//! since `LastUpdate` has passed. Under the `Chain` cadence they are due when `head − max(last
//! included block, LastUpdate) ≥ max(blocks_per_epoch, WeightsSetRateLimit)`, whatever the
//! steps do. Either is checked on every head tick. A submission is journaled as
//! `WeightsPrepared` (uids, u16 weights, version key, method with its salt or drand round)
//! before anything is signed, and the chain's answer follows as `WeightsSubmitted`. Each
//! prepared vector is sent at most once, right after it is journaled: an open intent found
//! later (the send's fate was unknown, or the process died) is reconciled with the chain's
//! `LastUpdate` and `Weights` of our uid instead. Since the due check reads `LastUpdate`, a
//! vector that did land is never sent again inside the rate limit.
//!
//! A refusal that will not go away by itself (not registered, no permit, version key too low)
//! is journaled, shouted, and tried again only at the next epoch; a rate limit, a busy pool
//! or a dropped connection is tried again a few blocks later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::edges::{ChainRefusal, EdgeError, Verdict, WeightsChain};
use super::failpoint;
use super::writer::{WriteError, WriterHandle};
use crate::chain::weights::{Sent, Standing};
use crate::machine::cadence;
use crate::machine::event::DueReading;
use crate::machine::event::{
    SubmitMethod, SubmitOutcome, WeightsCommitted, WeightsPrepared, WeightsSubmitted,
};
use crate::machine::state::WeightsIntent;
use crate::machine::weights::to_chain_weights;
use crate::machine::{Event, Outcome};

/// How the weight setter runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsConfig {
    /// Blocks between submissions (N's `--blocks_per_epoch`).
    pub blocks_per_epoch: u64,
    /// `version_key` sent with the weights.
    pub version_key: u64,
    /// Blocks to wait before trying again after a passing refusal or an unknown fate.
    pub retry_blocks: u64,
    /// How often the head is checked (a block time).
    pub tick: Duration,
    /// Longest wait, once the run is ending, for a submission under way to be answered.
    pub finish_timeout: Duration,
    /// The subnet mechanism weights are for (`--mechid`), journaled with each intent.
    pub mecid: u8,
}

impl WeightsConfig {
    /// N's cadence for `version_key`: every 100 blocks, checked every 12 s.
    pub fn new(version_key: u64) -> Self {
        Self {
            blocks_per_epoch: 100,
            version_key,
            retry_blocks: 5,
            tick: Duration::from_secs(12),
            finish_timeout: Duration::from_secs(120),
            mecid: 0,
        }
    }
}

/// How a run ends, as the weight setter hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The run did its work (`--max-steps`): set the final weights if they are due, finish
    /// what is under way, stop.
    Finish,
    /// The run was asked to stop: finish what is under way, send nothing new.
    Halt,
}

/// What a due check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// It decided: not due, nothing to set, or sent.
    Decided,
    /// Due, but held for a few blocks (a passing refusal, an unknown fate, an unreadable rule).
    Held,
}

/// One submission as the operator reads it: when it was due and when it was included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmissionReport {
    /// The block at which the weights became due (the head when first due).
    pub block_due: u64,
    /// The head when they were prepared.
    pub block_prepared: u64,
    /// How they went.
    pub method: &'static str,
    /// The chain's answer.
    pub outcome: SubmitOutcome,
}

impl SubmissionReport {
    /// Blocks from due to included, for an included submission.
    pub fn blocks_due_to_included(&self) -> Option<u64> {
        match self.outcome {
            SubmitOutcome::Included { block } => Some(block.saturating_sub(self.block_due)),
            _ => None,
        }
    }
}

/// How a one-shot submission ([`WeightSetter::send_once`]) ended without its weights on chain.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    /// The journal could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The journal refused the intent (nothing was signed).
    #[error("the journal refused the submission: {0}")]
    JournalRefused(String),
    /// The chain refused it; the refusal is journaled.
    #[error("the chain refused it: {0}")]
    Refused(String),
    /// It failed for good; the failure is journaled.
    #[error("{0}")]
    Failed(String),
    /// Nothing was decided: the chain could not be read before anything was signed, or the
    /// send's fate is unknown (the intent then stays open for `validator run` to settle).
    #[error("{0}")]
    Undecided(EdgeError),
}

/// The weight setter's task.
#[derive(Debug)]
pub struct WeightSetter<W> {
    /// The journal writer.
    pub writer: WriterHandle,
    /// The chain, over the setter's own connection.
    pub chain: Arc<W>,
    /// Cadence and key.
    pub config: WeightsConfig,
    /// No new submission before this block (after a refusal or an unknown fate), and whether
    /// the hold is for a refusal that will not pass by itself.
    hold_until: Option<(u64, bool)>,
    /// When the open intent became due, for the report.
    block_due: Option<u64>,
    /// The head at which this setter first found weights due and not yet answered.
    due_seen: Option<u64>,
    /// The head at which this process first found the open intent unanswered.
    settle_from: Option<u64>,
    /// Whether "nothing to set" was said already (said once, not every tick).
    said_nothing_to_set: bool,
    /// What this run submitted.
    reports: Vec<SubmissionReport>,
}

impl<W: WeightsChain> WeightSetter<W> {
    /// A setter for `chain`.
    pub fn new(writer: WriterHandle, chain: Arc<W>, config: WeightsConfig) -> Self {
        Self {
            writer,
            chain,
            config,
            hold_until: None,
            block_due: None,
            due_seen: None,
            settle_from: None,
            said_nothing_to_set: false,
            reports: Vec::new(),
        }
    }

    /// Runs until `ending` says so and nothing is under way (or the finish timeout passes;
    /// an intent left open is reconciled at the next start). Returns what was submitted.
    pub async fn run(
        mut self,
        mut ending: watch::Receiver<Option<Ending>>,
    ) -> Result<Vec<SubmissionReport>, WriteError> {
        let mut finished_check = false;
        let mut ending_since: Option<Instant> = None;
        let mut sender_gone = false;
        loop {
            let now = if sender_gone {
                Some(Ending::Halt)
            } else {
                *ending.borrow_and_update()
            };
            let may_prepare = match now {
                None => true,
                Some(Ending::Finish) => !finished_check,
                Some(Ending::Halt) => false,
            };
            if now.is_some() {
                ending_since.get_or_insert_with(Instant::now);
            }
            let due = self.tick(may_prepare, now == Some(Ending::Finish)).await?;
            // A run that did its work sets the weights that are due; a hold that passes in a
            // few blocks is waited out (within the finish timeout), one for an epoch is not.
            if now == Some(Ending::Finish) && matches!(due, Some(Due::Decided)) {
                finished_check = true;
            }
            if now.is_some() {
                let settled = self.writer.state().weights_intent.is_none();
                if settled && (now == Some(Ending::Halt) || finished_check) {
                    return Ok(self.reports);
                }
                if ending_since.is_some_and(|since| since.elapsed() >= self.config.finish_timeout) {
                    if !settled {
                        tracing::warn!(
                            "stopping with a weight submission unanswered; the next \
                             start reconciles it with the chain"
                        );
                    }
                    return Ok(self.reports);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.tick) => {}
                changed = ending.changed(), if now.is_none() => {
                    // The run is gone without a word: stop as if asked to.
                    sender_gone = changed.is_err();
                }
            }
        }
    }

    /// Sends `uids` and `weights` once, now, by the same write-ahead path as the loop's own
    /// weights (`validator chain set-weights`): the intent is journaled before anything is
    /// signed, sent once, a hash commit is revealed inside its window, and the chain's answer
    /// is journaled. No cadence applies: the chain's rate limit is the chain's to enforce.
    pub async fn send_once(
        &mut self,
        uids: Vec<u16>,
        weights: Vec<u16>,
    ) -> Result<SubmissionReport, OnceError> {
        let head = self
            .chain
            .standing()
            .await
            .map_err(OnceError::Undecided)?
            .head;
        let method = self.chain.plan().await.map_err(OnceError::Undecided)?;
        let (version_key, mecid) = (self.config.version_key, self.config.mecid);
        let written = self
            .writer
            .record_from_state(move |state| {
                if state.weights_intent.is_some() {
                    return Vec::new();
                }
                let prepared = WeightsPrepared {
                    uids,
                    weights,
                    version_key,
                    method,
                    block_head: head,
                    due: None,
                    mecid,
                };
                vec![(head, Event::WeightsPrepared(prepared))]
            })
            .await?;
        if let Some((_, Outcome::Rejected(why))) = written.first() {
            return Err(OnceError::JournalRefused(why.to_string()));
        }
        let Some(intent) = written
            .first()
            .and_then(|_| self.writer.state().weights_intent.clone())
        else {
            return Err(OnceError::JournalRefused(
                "weights prepared earlier are not answered yet".into(),
            ));
        };
        self.block_due = Some(head);
        match self.chain.send(&intent.prepared).await {
            Err(error @ EdgeError::Unavailable(_)) => return Err(OnceError::Undecided(error)),
            Err(error) => {
                let why = error.to_string();
                self.answer(&intent, head, SubmitOutcome::Failed(why.clone()))
                    .await?;
                return Err(OnceError::Failed(why));
            }
            sent => self.answer_send(&intent, head, sent).await?,
        }
        // A hash commit is revealed inside its window, as the loop reveals it.
        while let Some(intent) = self.writer.state().weights_intent.clone() {
            tokio::time::sleep(self.config.tick).await;
            match self.chain.standing().await {
                Ok(standing) => self.reconcile(&intent, &standing).await?,
                Err(error) => {
                    tracing::warn!("cannot read the chain to reveal the weights: {error}")
                }
            }
        }
        let report = self.reports.pop().ok_or_else(|| {
            OnceError::Failed("the submission was answered without a report".into())
        })?;
        match &report.outcome {
            SubmitOutcome::Included { .. } => Ok(report),
            SubmitOutcome::Refused(why) => Err(OnceError::Refused(why.clone())),
            SubmitOutcome::Failed(why) => Err(OnceError::Failed(why.clone())),
        }
    }

    /// One head tick: advance the open intent, or prepare and send weights when due.
    /// Returns what the due check found, when it ran (no intent open, preparing allowed).
    async fn tick(
        &mut self,
        may_prepare: bool,
        finishing: bool,
    ) -> Result<Option<Due>, WriteError> {
        let standing = match self.chain.standing().await {
            Ok(standing) => standing,
            Err(error) => {
                tracing::warn!("cannot read the chain to set weights: {error}");
                return Ok(None);
            }
        };
        if let Some(intent) = self.writer.state().weights_intent.clone() {
            self.reconcile(&intent, &standing).await?;
            return Ok(None);
        }
        if !may_prepare {
            return Ok(None);
        }
        self.prepare_and_send(&standing, finishing).await.map(Some)
    }

    async fn prepare_and_send(
        &mut self,
        standing: &Standing,
        finishing: bool,
    ) -> Result<Due, WriteError> {
        let head = standing.head;
        if let Some((until, persistent)) = self.hold_until
            && head < until
        {
            return Ok(if persistent { Due::Decided } else { Due::Held });
        }
        // The cadence is the machine's: what was read here is journaled with the intent, and
        // replay judges the same reading again.
        let reading = DueReading {
            head,
            last_update: standing.last_update,
            rate_limit: standing.rate_limit,
            blocks_per_epoch: self.config.blocks_per_epoch,
        };
        let Some(due) = cadence::due_block(&self.writer.state(), &reading) else {
            return Ok(Due::Decided);
        };
        if head < due {
            return Ok(Due::Decided);
        }
        let due_seen = *self.due_seen.get_or_insert(head);
        if standing.uid.is_none() || !standing.validator_permit {
            let why = if standing.uid.is_none() {
                "the hotkey is not registered on the subnet"
            } else {
                "the hotkey has no validator permit"
            };
            tracing::warn!(
                "WEIGHTS NOT SET: {why}; trying again in {} blocks",
                self.config.blocks_per_epoch
            );
            self.hold_until = Some((head.saturating_add(self.config.blocks_per_epoch), true));
            return Ok(Due::Decided);
        }
        let state = self.writer.state();
        let uids = match to_chain_weights(state.weights_to_set()) {
            Ok((uids, _)) => uids,
            Err(error) => {
                tracing::warn!("the weights cannot go on chain: {error}");
                return Ok(Due::Decided);
            }
        };
        if uids.is_empty() {
            if !self.said_nothing_to_set {
                tracing::warn!("every weight is zero; nothing to set yet");
                self.said_nothing_to_set = true;
            }
            return Ok(Due::Decided);
        }
        self.said_nothing_to_set = false;
        if self.config.version_key < standing.version_key_min {
            tracing::warn!(
                "WEIGHTS WILL BE REFUSED: version key {} is below the subnet's {}; \
                 pass --weights_version_key {} or upgrade",
                self.config.version_key,
                standing.version_key_min,
                standing.version_key_min
            );
        }
        let method = match self.chain.plan().await {
            Ok(method) => method,
            Err(error) => {
                tracing::warn!("cannot read how the subnet takes weights: {error}");
                return Ok(Due::Held);
            }
        };
        if finishing && matches!(method, SubmitMethod::CommitRevealHash { .. }) {
            // Its reveal is a tempo away: a run that is ending would leave it to expire.
            tracing::warn!(
                "not starting a hash commit as the run ends; the next run sets the \
                 weights"
            );
            return Ok(Due::Decided);
        }
        // The vector is read in the writer, from the state it journals the intent against, so
        // no step can complete between the two; the cadence is judged there again, on that
        // very state, so what is journaled is what replay will judge.
        let (version_key, mecid) = (self.config.version_key, self.config.mecid);
        let written = self
            .writer
            .record_from_state(move |state| {
                if state.weights_intent.is_some() || !cadence::is_due(state, &reading) {
                    return Vec::new();
                }
                match to_chain_weights(state.weights_to_set()) {
                    Ok((uids, weights)) if !uids.is_empty() => vec![(
                        head,
                        Event::WeightsPrepared(WeightsPrepared {
                            uids,
                            weights,
                            version_key,
                            method,
                            block_head: head,
                            due: Some(reading),
                            mecid,
                        }),
                    )],
                    _ => Vec::new(),
                }
            })
            .await?;
        if let Some((_, Outcome::Rejected(why))) = written.first() {
            tracing::warn!("the journal refused the prepared weights: {why}");
            return Ok(Due::Decided);
        }
        let Some(intent) = self.writer.state().weights_intent.clone() else {
            return Ok(Due::Decided);
        };
        let prepared = intent.prepared.clone();
        // The report says how late this run was, from when it first found the weights due:
        // a due block from a `LastUpdate` older than this validator (or none), or from before
        // the step that made them due under N's cadence, is not this run's lateness.
        self.block_due = Some(due.max(due_seen));
        failpoint::hit("after-weights-prepared");
        let sent = self.chain.send(&prepared).await;
        failpoint::hit("after-weights-sent");
        self.answer_send(&intent, head, sent).await?;
        Ok(Due::Decided)
    }

    async fn answer_send(
        &mut self,
        intent: &WeightsIntent,
        head: u64,
        sent: Result<Verdict<Sent, ChainRefusal>, EdgeError>,
    ) -> Result<(), WriteError> {
        match sent {
            Ok(Verdict::Accepted(Sent::Included(block))) => {
                self.answer(intent, head, SubmitOutcome::Included { block })
                    .await
            }
            Ok(Verdict::Accepted(Sent::Committed(committed))) => {
                tracing::warn!(
                    "weights committed at block {}; revealing in blocks {}..={}",
                    committed.block_commit,
                    committed.block_reveal_first,
                    committed.block_reveal_last
                );
                self.writer
                    .record(vec![(
                        committed.block_commit,
                        Event::WeightsCommitted(committed),
                    )])
                    .await?;
                failpoint::hit("after-weights-committed");
                Ok(())
            }
            Ok(Verdict::Rejected(refusal)) => self.refused(intent, head, &refusal).await,
            Err(error) => {
                // The transaction may or may not be on its way: the next ticks reconcile.
                tracing::warn!(
                    "sending weights did not reach a decision ({error}); checking the \
                     chain on the next ticks"
                );
                Ok(())
            }
        }
    }

    /// Settles an intent this process is not sending right now: from the chain's standing,
    /// it was included, failed, or (hash commit) is revealed now.
    async fn reconcile(
        &mut self,
        intent: &WeightsIntent,
        standing: &Standing,
    ) -> Result<(), WriteError> {
        let head = standing.head;
        let pairs = intent.prepared.pairs();
        let block_head = intent.prepared.block_head;
        let after = intent
            .committed
            .as_ref()
            .map_or(block_head, |c| c.block_commit);
        let landed = standing.last_update > after;
        let matches = standing.weights == pairs;
        // A fate is settled `retry_blocks` after this process first looked (a transaction from
        // a send that gave up, or from a process that died, may still be in the pool).
        let from = *self.settle_from.get_or_insert(head.max(block_head));
        let settled = head >= from.saturating_add(self.config.retry_blocks);
        match (&intent.prepared.method, &intent.committed) {
            (SubmitMethod::Plain, _) | (SubmitMethod::Timelocked { .. }, _) => {
                // A timelocked commit is not readable as weights until the chain reveals it:
                // `LastUpdate` moving past the intent is the sign it landed.
                let timelocked = matches!(intent.prepared.method, SubmitMethod::Timelocked { .. });
                if landed && (matches || timelocked) {
                    let block = standing.last_update;
                    return self
                        .answer(intent, block, SubmitOutcome::Included { block })
                        .await;
                }
                if landed {
                    return self
                        .answer(
                            intent,
                            head,
                            SubmitOutcome::Failed(format!(
                                "LastUpdate moved to block {} but Weights hold other values",
                                standing.last_update
                            )),
                        )
                        .await;
                }
                if settled {
                    return self
                        .answer(
                            intent,
                            head,
                            SubmitOutcome::Failed(format!(
                                "not on chain at block {head} (prepared at {block_head})"
                            )),
                        )
                        .await;
                }
                Ok(())
            }
            (SubmitMethod::CommitRevealHash { .. }, None) => {
                match self.chain.find_commit(&intent.prepared).await {
                    Ok(Some(committed)) => self
                        .writer
                        .record(vec![(head, Event::WeightsCommitted(committed))])
                        .await
                        .map(|_| ()),
                    Ok(None) if settled => {
                        self.answer(
                            intent,
                            head,
                            SubmitOutcome::Failed(format!(
                                "the commit is not on chain at block {head}"
                            )),
                        )
                        .await
                    }
                    Ok(None) => Ok(()),
                    Err(error) => {
                        tracing::warn!("cannot read the weight commits: {error}");
                        Ok(())
                    }
                }
            }
            (SubmitMethod::CommitRevealHash { .. }, Some(committed)) => {
                // While commit-reveal is on, a reveal leaves `LastUpdate` at the commit's block:
                // the commit gone from `WeightCommits` and `Weights` equal to the intent is the
                // sign it was revealed.
                if matches {
                    match self.chain.find_commit(&intent.prepared).await {
                        Ok(None) => {
                            return self
                                .answer(intent, head, SubmitOutcome::Included { block: head })
                                .await;
                        }
                        Ok(Some(_)) => {}
                        Err(error) => {
                            tracing::warn!("cannot read the weight commits: {error}");
                            return Ok(());
                        }
                    }
                }
                if head > committed.block_reveal_last {
                    return self
                        .answer(
                            intent,
                            head,
                            SubmitOutcome::Failed(format!(
                                "the reveal window ended at block {}",
                                committed.block_reveal_last
                            )),
                        )
                        .await;
                }
                // The reveal is included in the next block, so it may go out one block early.
                if head.saturating_add(1) < committed.block_reveal_first {
                    return Ok(());
                }
                self.reveal(intent, head, committed).await
            }
        }
    }

    async fn reveal(
        &mut self,
        intent: &WeightsIntent,
        head: u64,
        committed: &WeightsCommitted,
    ) -> Result<(), WriteError> {
        match self.chain.reveal(&intent.prepared).await {
            Ok(Verdict::Accepted(block)) => {
                self.answer(intent, block, SubmitOutcome::Included { block })
                    .await
            }
            Ok(Verdict::Rejected(refusal)) if refusal.is_transient() => {
                // The commit stands until its window ends: try again on the next tick.
                tracing::warn!(
                    "the reveal was refused for now ({}); trying again",
                    refusal.reason
                );
                Ok(())
            }
            Ok(Verdict::Rejected(refusal)) => self.refused(intent, head, &refusal).await,
            Err(error) => {
                tracing::warn!(
                    "revealing the weights committed at block {} did not reach a \
                     decision ({error}); trying again on the next tick",
                    committed.block_commit
                );
                Ok(())
            }
        }
    }

    async fn refused(
        &mut self,
        intent: &WeightsIntent,
        head: u64,
        refusal: &ChainRefusal,
    ) -> Result<(), WriteError> {
        let persistent = refusal.is_persistent();
        let wait = if persistent {
            tracing::warn!(
                "WEIGHTS REFUSED BY THE CHAIN: {}; this will not pass by itself, \
                 trying again at the next epoch ({} blocks)",
                refusal.reason,
                self.config.blocks_per_epoch
            );
            self.config.blocks_per_epoch
        } else {
            tracing::warn!(
                "weights refused ({}); trying again in {} blocks",
                refusal.reason,
                self.config.retry_blocks
            );
            self.config.retry_blocks
        };
        self.hold_until = Some((head.saturating_add(wait), persistent));
        self.answer(intent, head, SubmitOutcome::Refused(refusal.reason.clone()))
            .await
    }

    /// Journals the chain's answer to `intent` at `block`.
    async fn answer(
        &mut self,
        intent: &WeightsIntent,
        block: u64,
        outcome: SubmitOutcome,
    ) -> Result<(), WriteError> {
        // A failure is journaled only once the chain shows the weights are not there (after
        // `retry_blocks`, or past a reveal window): they are due again at once.
        if let SubmitOutcome::Failed(why) = &outcome {
            tracing::warn!("weights not set: {why}; trying again now");
        }
        self.settle_from = None;
        let event = WeightsSubmitted {
            uids: intent.prepared.uids.clone(),
            weights: intent.prepared.weights.clone(),
            version_key: intent.prepared.version_key,
            outcome: outcome.clone(),
        };
        self.writer
            .record(vec![(block, Event::WeightsSubmitted(event))])
            .await?;
        // Included: the next weights are due afresh (a failure is still late from the first).
        if matches!(outcome, SubmitOutcome::Included { .. }) {
            self.due_seen = None;
        }
        let report = SubmissionReport {
            block_due: self.block_due.take().unwrap_or(intent.prepared.block_head),
            block_prepared: intent.prepared.block_head,
            method: intent.prepared.method.name(),
            outcome,
        };
        if let Some(blocks) = report.blocks_due_to_included() {
            tracing::warn!(
                "weights set by {} at block {} ({blocks} blocks after due)",
                report.method,
                match report.outcome {
                    SubmitOutcome::Included { block } => block,
                    _ => 0,
                }
            );
        }
        self.reports.push(report);
        Ok(())
    }
}

/// Answers an open intent for mechanism `mecid` as failed when the subnet no longer has that
/// mechanism (its count fell to `mecid` or below): nothing can land there, and a run on it is
/// refused at start, so without this no run could ever settle the journal. `Ok(false)` when
/// the mechanism still exists (or the chain cannot say): the intent is left for a run on it.
pub async fn abandon_on_removed_mechanism<W: WeightsChain>(
    chain: &W,
    writer: &WriterHandle,
    mecid: u8,
) -> Result<bool, WriteError> {
    let Ok(count) = chain.mechanism_count().await else {
        return Ok(false);
    };
    if mecid < count {
        return Ok(false);
    }
    let Ok(standing) = chain.standing().await else {
        return Ok(false);
    };
    let Some(intent) = writer.state().weights_intent.clone() else {
        return Ok(true);
    };
    let why = format!(
        "mechanism {mecid} no longer exists on the subnet ({count} mechanism(s)): the weights \
         prepared for it can never land"
    );
    tracing::warn!("{why}; recording them as failed");
    let event = WeightsSubmitted {
        uids: intent.prepared.uids.clone(),
        weights: intent.prepared.weights.clone(),
        version_key: intent.prepared.version_key,
        outcome: SubmitOutcome::Failed(why),
    };
    writer
        .record(vec![(standing.head, Event::WeightsSubmitted(event))])
        .await?;
    Ok(true)
}

/// For runs that set no weights: a chain that is never asked.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWeights;

impl WeightsChain for NoWeights {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        Err(EdgeError::Operator("this run sets no weights".into()))
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        Err(EdgeError::Operator("this run sets no weights".into()))
    }

    async fn send(
        &self,
        _prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        Err(EdgeError::Operator("this run sets no weights".into()))
    }

    async fn find_commit(
        &self,
        _prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, EdgeError> {
        Ok(None)
    }

    async fn reveal(
        &self,
        _prepared: &WeightsPrepared,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        Err(EdgeError::Operator("this run sets no weights".into()))
    }

    async fn mechanism_count(&self) -> Result<u8, EdgeError> {
        Err(EdgeError::Operator("this run sets no weights".into()))
    }
}
