//! What operators and miners see, derived from the journal alone: the leaderboard (per
//! competition, every uid's model, status, latest loss, win rate and weight, and their history
//! across steps), the journal's counters the metrics expose, and N's step log.
//!
//! A [`Board`] is fed the journal's records in order ([`Board::observe`]) and keeps a bounded
//! history; [`Board::view`] joins it with the folded [`State`] into a [`Leaderboard`], which
//! [`html`] renders as a page with server-side SVG plots and which serialises as the JSON of
//! `/api/leaderboard`. Nothing here does I/O: the runner serves it, `validator leaderboard`
//! writes it to files, and both show exactly what the journal holds.

pub mod html;
pub mod step_log;
pub mod svg;

use std::collections::{BTreeMap, VecDeque};
use std::ops::ControlFlow;

use serde::Serialize;

use crate::machine::event::{EvalOutcome, SubmitMethod, SubmitOutcome};
use crate::machine::state::{CommitmentStatus, Entry};
use crate::machine::{Event, FoldDriver, MechanismParams, Outcome, Record, State};

/// Steps of history kept per competition for the plots (about a week of N's steps).
pub const HISTORY_STEPS_MAX: usize = 2_000;

/// Recent steps listed on the page.
pub const RECENT_STEPS_MAX: usize = 20;

/// One uid's figures at one completed step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UidPoint {
    /// The uid.
    pub uid: u16,
    /// Mean of its losses at the step (`None`: no losses, N's +infinity).
    pub loss_mean: Option<f64>,
    /// Its win rate.
    pub win_rate: f64,
    /// Its head-to-head wins.
    pub wins: u64,
    /// Its weight after the step.
    pub weight: f64,
}

/// A completed step of one competition, as journaled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepPoint {
    /// The step number.
    pub step: u64,
    /// The block its `StepCompleted` was journaled at.
    pub block: u64,
    /// Its participants, in the order the step visited them.
    pub uids: Vec<UidPoint>,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepEnd {
    /// Scored.
    Completed,
    /// Ended without scoring; the round-robin moved on.
    Abandoned,
    /// Could not run or be scored; tried again under the same number.
    Failed,
}

impl StepEnd {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StepEnd::Completed => "completed",
            StepEnd::Abandoned => "abandoned",
            StepEnd::Failed => "failed",
        }
    }
}

/// One line of the recent steps.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepSummary {
    /// The step number.
    pub step: u64,
    /// Its competition.
    pub competition: String,
    /// The block the ending was journaled at.
    pub block: u64,
    /// How it ended.
    pub end: StepEnd,
    /// Uids scored (completed steps).
    pub uids: usize,
    /// Why, for a failed or abandoned step.
    pub reason: Option<String>,
}

/// The last weight submission the journal holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightsLast {
    /// The block its answer was journaled at.
    pub block: u64,
    /// `plain`, `commit_reveal_hash` or `timelocked`.
    pub method: &'static str,
    /// `included`, `refused` or `failed`.
    pub outcome: &'static str,
    /// The block it was included in.
    pub block_included: Option<u64>,
    /// The chain's refusal or the failure, otherwise `None`.
    pub detail: Option<String>,
}

/// Counters over the whole journal (what `/metrics` exposes as `_total`s).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JournalCounts {
    /// Steps by competition and ending.
    pub steps: BTreeMap<(String, StepEnd), u64>,
    /// Model evaluations by outcome (`losses`, `failed`).
    pub evaluations: BTreeMap<&'static str, u64>,
    /// Models verified.
    pub models_verified: u64,
    /// Models rejected, by rejection code.
    pub models_rejected: BTreeMap<String, u64>,
    /// Weight submissions by method and outcome.
    pub weights: BTreeMap<(&'static str, &'static str), u64>,
    /// Records observed.
    pub records: u64,
}

/// The journal's records, folded into what the page, the metrics and the step log show.
#[derive(Debug, Clone)]
pub struct Board {
    history: BTreeMap<String, VecDeque<StepPoint>>,
    recent: VecDeque<StepSummary>,
    counts: JournalCounts,
    open: Option<OpenLosses>,
    method_pending: Option<&'static str>,
    weights_last: Option<WeightsLast>,
    /// The mechanism as journaled, to name the competition of a step that failed before it
    /// opened (the fold's own round-robin).
    params: MechanismParams,
}

impl Default for Board {
    fn default() -> Self {
        Self {
            history: BTreeMap::new(),
            recent: VecDeque::new(),
            counts: JournalCounts::default(),
            open: None,
            method_pending: None,
            weights_last: None,
            params: MechanismParams::genesis(),
        }
    }
}

/// The open step's losses so far, and its batch's references.
#[derive(Debug, Clone, Default)]
struct OpenLosses {
    step: u64,
    competition: String,
    losses: BTreeMap<u16, Option<f64>>,
    pages: Vec<String>,
}

/// N's average loss of a participant: the mean of its losses (a left-to-right sum divided by
/// the count, as Python's floats do it), +infinity without any or after a failure.
pub fn loss_mean(outcome: &EvalOutcome) -> f64 {
    match outcome {
        EvalOutcome::Losses(losses) if !losses.0.is_empty() => {
            let values = losses.to_f64();
            let count = u32::try_from(values.len()).map_or(f64::INFINITY, f64::from);
            values.iter().sum::<f64>() / count
        }
        _ => f64::INFINITY,
    }
}

/// A method's label.
pub fn method_label(method: &SubmitMethod) -> &'static str {
    match method {
        SubmitMethod::Plain => "plain",
        SubmitMethod::CommitRevealHash { .. } => "commit_reveal_hash",
        SubmitMethod::Timelocked { .. } => "timelocked",
    }
}

/// A serde enum's snake-case name (rejection codes).
fn variant_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "unknown".into(),
    }
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// The journal's counters.
    pub fn counts(&self) -> &JournalCounts {
        &self.counts
    }

    /// The last weight submission.
    pub fn weights_last(&self) -> Option<&WeightsLast> {
        self.weights_last.as_ref()
    }

    /// The history of `competition`, oldest first.
    pub fn history(&self, competition: &str) -> impl Iterator<Item = &StepPoint> {
        self.history.get(competition).into_iter().flatten()
    }

    /// Each competition's latest completed step, by competition id.
    pub fn latest(&self) -> impl Iterator<Item = (&str, &StepPoint)> {
        self.history
            .iter()
            .filter_map(|(id, steps)| Some((id.as_str(), steps.back()?)))
    }

    /// The open step's mean loss of each uid evaluated so far.
    pub fn open_losses(&self, step: u64) -> BTreeMap<u16, Option<f64>> {
        self.open
            .as_ref()
            .filter(|open| open.step == step)
            .map(|open| open.losses.clone())
            .unwrap_or_default()
    }

    /// The open step's batch references (N's `pages`).
    pub fn open_pages(&self) -> &[String] {
        self.open.as_ref().map_or(&[], |open| &open.pages)
    }

    /// Takes in the next record of the journal with the fold's outcome (records must come in
    /// journal order). A record the fold refused changes nothing but the record count. The
    /// figures are the journal's own: a `StepCompleted` as the live validator recorded it,
    /// which replay checks against its recomputation.
    pub fn observe(&mut self, record: &Record, outcome: &Outcome) {
        self.counts.records += 1;
        if matches!(outcome, Outcome::Rejected(_)) {
            return;
        }
        match &record.event {
            Event::ParamsChanged(changed) => self.params = changed.params.clone(),
            Event::BatchFetched(batch) => {
                if let Some(open) = self.open.as_mut().filter(|o| o.step == batch.step) {
                    open.pages.clone_from(&batch.provenance.references);
                }
            }
            Event::StepStarted(started) => {
                self.open = Some(OpenLosses {
                    step: started.step,
                    competition: started.competition.as_str().to_owned(),
                    losses: BTreeMap::new(),
                    pages: Vec::new(),
                });
            }
            Event::LossesComputed(computed) => {
                let label = match computed.outcome {
                    EvalOutcome::Losses(_) => "losses",
                    EvalOutcome::Failed(_) => "failed",
                    EvalOutcome::TaskLosses(_) => "task losses",
                };
                *self.counts.evaluations.entry(label).or_default() += 1;
                if let Some(open) = self.open.as_mut().filter(|o| o.step == computed.step) {
                    open.losses.insert(
                        computed.uid,
                        Some(loss_mean(&computed.outcome)).filter(|m| m.is_finite()),
                    );
                }
            }
            Event::StepCompleted(completed) => {
                let recorded = &completed.recorded;
                let competition = recorded.competition.as_str().to_owned();
                let losses = self.open_losses(completed.step);
                let uids = recorded
                    .uids
                    .iter()
                    .enumerate()
                    .map(|(index, &uid)| UidPoint {
                        uid,
                        loss_mean: losses.get(&uid).copied().flatten(),
                        win_rate: recorded.win_rate.get(index).copied().unwrap_or(0.0),
                        wins: recorded.wins.get(index).copied().unwrap_or(0),
                        weight: weight_of(&recorded.weights, uid),
                    })
                    .collect::<Vec<_>>();
                let history = self.history.entry(competition.clone()).or_default();
                if history.len() == HISTORY_STEPS_MAX {
                    history.pop_front();
                }
                history.push_back(StepPoint {
                    step: completed.step,
                    block: record.block,
                    uids,
                });
                self.end_step(
                    competition,
                    StepSummary {
                        step: completed.step,
                        competition: recorded.competition.as_str().to_owned(),
                        block: record.block,
                        end: StepEnd::Completed,
                        uids: recorded.uids.len(),
                        reason: None,
                    },
                );
                self.open = None;
            }
            Event::StepAbandoned(abandoned) => {
                self.step_not_scored(
                    record.block,
                    abandoned.step,
                    StepEnd::Abandoned,
                    &abandoned.reason,
                );
                self.open = None;
            }
            Event::StepFailed(failed) => {
                self.step_not_scored(record.block, failed.step, StepEnd::Failed, &failed.reason);
            }
            Event::ModelVerified(_) => self.counts.models_verified += 1,
            Event::ModelRejected(rejected) => {
                *self
                    .counts
                    .models_rejected
                    .entry(variant_name(&rejected.code))
                    .or_default() += 1;
            }
            Event::WeightsPrepared(prepared) => {
                self.method_pending = Some(method_label(&prepared.method));
            }
            Event::WeightsSubmitted(submitted) => {
                let method = self.method_pending.take().unwrap_or("plain");
                let (outcome, block_included, detail) = match &submitted.outcome {
                    SubmitOutcome::Included { block } => ("included", Some(*block), None),
                    SubmitOutcome::Refused(why) => ("refused", None, Some(why.clone())),
                    SubmitOutcome::Failed(why) => ("failed", None, Some(why.clone())),
                };
                *self.counts.weights.entry((method, outcome)).or_default() += 1;
                self.weights_last = Some(WeightsLast {
                    block: record.block,
                    method,
                    outcome,
                    block_included,
                    detail,
                });
            }
            _ => {}
        }
    }

    fn step_not_scored(&mut self, block: u64, step: u64, end: StepEnd, reason: &str) {
        // A step that failed before it opened (no batch) is the one the round-robin would
        // have run: the fold's own choice for that step number.
        let competition = match self.open.as_ref().filter(|open| open.step == step) {
            Some(open) => open.competition.clone(),
            None => self
                .params
                .competition_for_step(block, step)
                .map_or_else(|| "none".to_owned(), |c| c.id.as_str().to_owned()),
        };
        self.end_step(
            competition.clone(),
            StepSummary {
                step,
                competition,
                block,
                end,
                uids: 0,
                reason: Some(reason.to_owned()),
            },
        );
    }

    fn end_step(&mut self, competition: String, summary: StepSummary) {
        *self
            .counts
            .steps
            .entry((competition, summary.end))
            .or_default() += 1;
        if self.recent.len() == RECENT_STEPS_MAX {
            self.recent.pop_back();
        }
        self.recent.push_front(summary);
    }

    /// The leaderboard: the board joined with the folded state, and what the runner knows of
    /// the chain's head (`None` for a journal read at rest).
    pub fn view(&self, state: &State, head_block: Option<u64>) -> Leaderboard {
        let block_journaled = state.position.map(|p| p.block);
        let metagraph = state.metagraph.as_ref();
        let mut tables: BTreeMap<String, CompetitionBoard> = BTreeMap::new();
        let block = block_journaled.unwrap_or(0);
        for competition in state.params.schedule_at(block) {
            tables
                .entry(competition.id.as_str().to_owned())
                .or_insert_with(|| CompetitionBoard::named(competition.id.as_str()));
        }
        for (id, competition) in &state.competitions {
            let table = tables
                .entry(id.as_str().to_owned())
                .or_insert_with(|| CompetitionBoard::named(id.as_str()));
            table.eval_set = sorted(competition.eval_set.iter());
            table.pending = sorted(competition.pending.iter());
        }
        for name in self.history.keys() {
            tables
                .entry(name.clone())
                .or_insert_with(|| CompetitionBoard::named(name));
        }
        let mut unassigned = Vec::new();
        for (hotkey, hotkey_record) in &state.hotkeys {
            let Some(uid) = metagraph.and_then(|m| m.uid_of(hotkey)) else {
                continue;
            };
            let commitment = hotkey_record.commitment.as_ref();
            let model_id = commitment
                .and_then(|c| c.model_id.as_ref())
                .or(hotkey_record.model.as_ref().map(|m| &m.model_id));
            let competition = model_id.map(|m| m.competition.as_str().to_owned());
            let in_set = |f: fn(&CompetitionBoard) -> &Vec<u16>| {
                competition
                    .as_ref()
                    .and_then(|c| tables.get(c))
                    .is_some_and(|t| f(t).contains(&uid))
            };
            // A refusal comes first: it is what a miner most needs to see, even while an
            // older verified model of theirs is still evaluated (the eval set is listed above
            // the table).
            let (status, reason) = match commitment.map(|c| &c.status) {
                Some(CommitmentStatus::Rejected { code, detail }) => (
                    RowStatus::Rejected,
                    Some(format!("{}: {detail}", variant_name(code))),
                ),
                Some(CommitmentStatus::Invalid(why)) => (RowStatus::Invalid, Some(why.to_string())),
                _ if in_set(|t| &t.eval_set) => (RowStatus::EvalSet, None),
                _ if in_set(|t| &t.pending) => (RowStatus::Pending, None),
                Some(CommitmentStatus::Unverified) => (RowStatus::Unverified, None),
                Some(CommitmentStatus::Verified) | None => (RowStatus::Verified, None),
            };
            let latest = competition
                .as_ref()
                .and_then(|c| self.history.get(c))
                .and_then(|h| {
                    h.iter()
                        .rev()
                        .find_map(|p| p.uids.iter().find(|u| u.uid == uid))
                });
            let row = Row {
                uid,
                hotkey: hotkey.clone(),
                model: model_id
                    .map(|m| format!("{}@{}", m.repo_id(), m.commit.as_deref().unwrap_or("None"))),
                block_commit: commitment.map(|c| c.block_commit),
                status,
                reason,
                loss_mean: latest.and_then(|p| p.loss_mean),
                win_rate: latest.map(|p| p.win_rate),
                weight: weight_of(&state.weights, uid),
            };
            match competition.and_then(|c| tables.get_mut(&c)) {
                Some(table) => table.rows.push(row),
                None => unassigned.push(row),
            }
        }
        let mut competitions: Vec<CompetitionBoard> = tables.into_values().collect();
        for table in &mut competitions {
            table.rows.sort_by_key(|row| row.uid);
            table.history = self.history(&table.id).cloned().collect();
        }
        unassigned.sort_by_key(|row| row.uid);
        Leaderboard {
            validator: ValidatorStatus {
                block_journaled,
                head_block,
                block_lag: head_block
                    .zip(block_journaled)
                    .map(|(h, j)| h.saturating_sub(j)),
                steps_completed: state.step_next,
                step_open: state.step_open.as_ref().map(|o| o.step),
                block_weights_included: state.block_weights_included,
                weights_last: self.weights_last.clone(),
                records: self.counts.records,
                journal_head: None,
                warnings: Vec::new(),
            },
            competitions,
            unassigned,
            steps_recent: self.recent.iter().cloned().collect(),
        }
    }
}

fn sorted(uids: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut uids: Vec<u16> = uids.collect();
    uids.sort_unstable();
    uids
}

/// Everything the page shows, and `/api/leaderboard` serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leaderboard {
    /// The validator's own status.
    pub validator: ValidatorStatus,
    /// One table per competition, by id.
    pub competitions: Vec<CompetitionBoard>,
    /// Registered hotkeys whose commitment names no competition (it does not parse).
    pub unassigned: Vec<Row>,
    /// The latest steps, newest first.
    pub steps_recent: Vec<StepSummary>,
}

/// Where the validator stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidatorStatus {
    /// The last block the journal holds a record at.
    pub block_journaled: Option<u64>,
    /// The chain's head as last read (live runner only).
    pub head_block: Option<u64>,
    /// Head less last journaled block.
    pub block_lag: Option<u64>,
    /// Steps completed (the next step's number).
    pub steps_completed: u64,
    /// The step in progress.
    pub step_open: Option<u64>,
    /// The block the last weights were included in.
    pub block_weights_included: Option<u64>,
    /// The last weight submission.
    pub weights_last: Option<WeightsLast>,
    /// Records in the journal.
    pub records: u64,
    /// The journal's head (records, last position, hash chain), as `replay` prints the head it
    /// verified; set by whoever holds the journal.
    pub journal_head: Option<String>,
    /// What the operator accepted that weakens the validator (set by the runner).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One competition's table and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompetitionBoard {
    /// The competition.
    pub id: String,
    /// Uids evaluated at its next step, ascending.
    pub eval_set: Vec<u16>,
    /// Uids merged into the eval set at its next step, ascending.
    pub pending: Vec<u16>,
    /// Every registered uid whose commitment enters it, by uid.
    pub rows: Vec<Row>,
    /// Its completed steps, oldest first (at most [`HISTORY_STEPS_MAX`]).
    pub history: Vec<StepPoint>,
}

impl CompetitionBoard {
    fn named(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            eval_set: Vec::new(),
            pending: Vec::new(),
            rows: Vec::new(),
            history: Vec::new(),
        }
    }
}

/// Where a uid's model stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Evaluated at the competition's next step.
    EvalSet,
    /// Verified, joins the eval set at the next step.
    Pending,
    /// Verified, not evaluated (dropped from the eval set, or never entered it).
    Verified,
    /// Waiting for download and verification.
    Unverified,
    /// Refused (the reason says why) until the commitment changes.
    Rejected,
    /// The commitment cannot name an evaluable model.
    Invalid,
}

impl RowStatus {
    /// How the page says it.
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::EvalSet => "in the eval set",
            RowStatus::Pending => "pending",
            RowStatus::Verified => "verified, not evaluated",
            RowStatus::Unverified => "waiting for verification",
            RowStatus::Rejected => "rejected",
            RowStatus::Invalid => "invalid commitment",
        }
    }
}

/// One uid in a competition's table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The uid.
    pub uid: u16,
    /// Its hotkey (SS58).
    pub hotkey: String,
    /// `namespace/name@commit` of its latest commitment (or tracked model).
    pub model: Option<String>,
    /// The commit block.
    pub block_commit: Option<u64>,
    /// Where its model stands.
    pub status: RowStatus,
    /// The recorded reason of a rejection or an invalid commitment.
    pub reason: Option<String>,
    /// Its mean loss at the latest step it took part in (`None`: none, or no losses).
    pub loss_mean: Option<f64>,
    /// Its win rate at that step.
    pub win_rate: Option<f64>,
    /// Its weight now.
    pub weight: f64,
}

/// Whether an entry is a model (for the step log's commit block).
pub fn entry_block(entry: &Entry) -> Option<u64> {
    match entry {
        Entry::Model { block_commit, .. } => Some(*block_commit),
        Entry::Absent(_) => None,
    }
}

/// The weight of `uid` in `weights` (0 past its end).
pub fn weight_of(weights: &[f64], uid: u16) -> f64 {
    weights.get(usize::from(uid)).copied().unwrap_or(0.0)
}

/// Folds `records` from `start` (a checkpoint's state, or genesis) into a board and the
/// state, as `validator leaderboard` and the runner's start show a journal: the board sees
/// each record with the fold's verdict on it.
pub fn board_of<E>(
    start: Option<State>,
    records: impl Iterator<Item = Result<Record, E>>,
) -> Result<(Board, State), E> {
    let mut driver = FoldDriver::new(start);
    let mut board = Board::new();
    board.params = driver.state().params.clone();
    let mut observe =
        |_: &State, record: &Record, outcome: Outcome| board.observe(record, &outcome);
    let ControlFlow::Continue(()) = driver.fold_all(records, &mut observe)?;
    Ok((board, driver.into_state()))
}

/// [`board_of`] over a sled journal: from genesis, or from its earliest checkpoint when the
/// records before it are not there (a journal imported from `replay export --from-block`).
pub fn board_of_journal(
    journal: &crate::journal::Journal,
) -> Result<(Board, State), crate::journal::JournalError> {
    let genesis = crate::machine::Position { block: 0, seq: 0 };
    let first = journal.records(genesis, None).next().transpose()?;
    let earliest = journal.checkpoints().next().transpose()?;
    let start = match (first, earliest) {
        (Some(first), Some(checkpoint))
            if checkpoint.position.is_some_and(|p| p < first.position()) =>
        {
            Some(checkpoint)
        }
        _ => None,
    };
    let from = start.as_ref().and_then(|s| s.position).unwrap_or(genesis);
    board_of(start, journal.records(from, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::{LossesComputed, ParamsChanged, StepFailed};
    use crate::machine::wire::LossVec;

    fn record(seq: u64, event: Event) -> Result<Record, std::convert::Infallible> {
        Ok(Record {
            block: 10 + seq,
            seq,
            event,
        })
    }

    /// Postmortem (review): a step that failed before it opened (no batch) was counted under
    /// competition "none", and events the fold refused still moved the counters.
    #[test]
    fn a_failed_step_has_the_round_robins_competition_and_refusals_count_nothing() {
        let params = MechanismParams::default();
        let expected = params
            .competition_for_step(11, 0)
            .map(|c| c.id.as_str().to_owned())
            .unwrap();
        let records = vec![
            record(
                0,
                Event::ParamsChanged(ParamsChanged {
                    params: params.clone(),
                }),
            ),
            record(
                1,
                Event::StepFailed(StepFailed {
                    step: 0,
                    reason: "no data".into(),
                }),
            ),
            // Losses for a step that is not open: the fold refuses them.
            record(
                2,
                Event::LossesComputed(LossesComputed {
                    step: 7,
                    uid: 1,
                    hotkey: "5X".into(),
                    model_hash: "h".into(),
                    outcome: EvalOutcome::Losses(LossVec(vec![1.0])),
                }),
            ),
        ];
        let (board, _) = board_of(None, records.into_iter()).unwrap();
        let counts = board.counts();
        assert_eq!(counts.steps.get(&(expected, StepEnd::Failed)), Some(&1));
        assert_eq!(counts.steps.len(), 1, "{:?}", counts.steps);
        assert!(counts.evaluations.is_empty(), "{:?}", counts.evaluations);
        assert_eq!(counts.records, 3);
    }
}
