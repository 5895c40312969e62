//! Replay: re-fold a journal and check that every recorded step and weight submission is what
//! the fold computes.
//!
//! Records before `from_block` are folded without checks (from the latest checkpoint before
//! it, unless told to start from genesis); from `from_block` on, every `StepCompleted` is
//! compared with its recomputation, every `WeightsPrepared` (and every `WeightsSubmitted` with
//! no intent before it) with the u16 weights the state gives, every `WeightsSubmitted` after an
//! intent with that intent, and every checkpoint passed is compared with the recomputed state. Replay stops at
//! the first divergence. It never writes.

use std::fmt::Write as _;
use std::ops::ControlFlow;

use crate::journal::codec;
use crate::journal::jsonl::Item;
use crate::machine::cadence;
use crate::machine::event::StepRecord;
use crate::machine::params::WeightsCadence;
use crate::machine::{Event, FoldDriver, FoldHook, Outcome, Position, Record, State};

/// What to replay.
#[derive(Debug, Clone, Copy)]
pub struct ReplayOptions {
    /// First block whose records are checked.
    pub from_block: u64,
    /// Last block replayed (inclusive).
    pub to_block: Option<u64>,
    /// Start from the latest checkpoint before `from_block` (else from genesis).
    pub use_checkpoints: bool,
}

/// One recomputed step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Where its `StepCompleted` is.
    pub position: Position,
    /// The step number.
    pub step: u64,
    /// What the fold computed.
    pub record: StepRecord,
}

/// The first place where the journal and the recomputation disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// The record.
    pub position: Position,
    /// The step, for a step record.
    pub step: Option<u64>,
    /// The uid, where the disagreement is about one.
    pub uid: Option<u16>,
    /// Which value.
    pub field: String,
    /// What the journal holds.
    pub journaled: String,
    /// What replay computed.
    pub recomputed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "block {} (seq {})",
            self.position.block, self.position.seq
        )?;
        if let Some(step) = self.step {
            write!(f, ", step {step}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, ", uid {uid}")?;
        }
        write!(
            f,
            ": {} journaled {} but recomputed {}",
            self.field, self.journaled, self.recomputed
        )
    }
}

/// The result of a replay.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplayReport {
    /// The checkpoint replay started from (`None`: genesis).
    pub started_from: Option<Position>,
    /// Records folded in all.
    pub records_folded: u64,
    /// Records at or after `from_block`, whose results were checked.
    pub records_checked: u64,
    /// The block of the last record read (folded or not), `None` for an empty journal.
    pub block_last: Option<u64>,
    /// Steps checked, in order.
    pub steps: Vec<StepReport>,
    /// Weight submissions checked.
    pub weights_checked: u64,
    /// Checkpoints checked.
    pub checkpoints_checked: u64,
    /// Records the fold refused (deterministically; listed for audits).
    pub rejections: Vec<(Position, String)>,
    /// Weight submissions journaled when the mechanism's cadence did not have weights due
    /// (judged on the chain reading each intent carries, under either cadence; the live
    /// runner judges the same reading before it journals, so its journals have none).
    pub weights_undue: Vec<Position>,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

/// Why a replay could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError<E: std::error::Error + 'static> {
    /// The journal could not be read.
    #[error(transparent)]
    Source(#[from] E),
    /// The journal does not start at genesis and has no checkpoint to start from.
    #[error(
        "the journal starts at block {block} seq {seq}, not at genesis, and has no checkpoint before block {from_block}"
    )]
    NoStart {
        /// The first record's block.
        block: u64,
        /// Its seq.
        seq: u64,
        /// The block asked for.
        from_block: u64,
    },
}

/// Replays a sled journal: from the latest checkpoint before `options.from_block` (or genesis
/// without checkpoints), checking every record and checkpoint on the way.
pub fn replay_journal(
    journal: &crate::journal::Journal,
    options: ReplayOptions,
) -> Result<ReplayReport, ReplayError<crate::journal::JournalError>> {
    let (start, from) = if options.use_checkpoints {
        journal
            .start_before(options.from_block)
            .map_err(ReplayError::Source)?
    } else {
        (None, Position { block: 0, seq: 0 })
    };
    replay(
        start,
        journal.records(from, options.to_block),
        journal.checkpoints(),
        options,
    )
}

/// Replays `records` from `start` (a checkpoint's state, or genesis), checking every record
/// from `options.from_block` and every checkpoint in `checkpoints` that is passed.
pub fn replay<E: std::error::Error + 'static>(
    start: Option<State>,
    records: impl Iterator<Item = Result<Record, E>>,
    checkpoints: impl Iterator<Item = Result<State, E>>,
    options: ReplayOptions,
) -> Result<ReplayReport, ReplayError<E>> {
    let mut hook = Checks {
        report: ReplayReport {
            started_from: start.as_ref().and_then(|s| s.position),
            ..ReplayReport::default()
        },
        genesis: start.is_none(),
        first: true,
        undue: false,
        checkpoints: checkpoints.peekable(),
        options,
    };
    let mut driver = FoldDriver::new(start);
    match driver.fold_all(records, &mut hook)? {
        ControlFlow::Break(Stop::Failed(error)) => Err(error),
        ControlFlow::Break(Stop::Done) | ControlFlow::Continue(()) => Ok(hook.report),
    }
}

/// Why replay stopped before the end of the records.
enum Stop<E: std::error::Error + 'static> {
    /// Past `to_block`, or at the first divergence: the report says which.
    Done,
    /// It could not go on.
    Failed(ReplayError<E>),
}

/// What replay does around each record it folds.
struct Checks<C: Iterator> {
    report: ReplayReport,
    /// Whether the fold started at genesis (the first record must then be the journal's).
    genesis: bool,
    /// Whether no record was folded yet.
    first: bool,
    /// Whether the record being folded submits weights the cadence did not have due.
    undue: bool,
    checkpoints: std::iter::Peekable<C>,
    options: ReplayOptions,
}

impl<C, E> FoldHook for Checks<C>
where
    C: Iterator<Item = Result<State, E>>,
    E: std::error::Error + 'static,
{
    type Stop = Stop<E>;

    fn skipped(&mut self, record: &Record) {
        self.report.block_last = Some(record.block);
    }

    fn before(&mut self, state: &State, record: &Record) -> ControlFlow<Stop<E>> {
        self.report.block_last = Some(record.block);
        if self.first && self.genesis && record.seq != 0 {
            return ControlFlow::Break(Stop::Failed(ReplayError::NoStart {
                block: record.block,
                seq: record.seq,
                from_block: self.options.from_block,
            }));
        }
        self.first = false;
        if self.options.to_block.is_some_and(|to| record.block > to) {
            return ControlFlow::Break(Stop::Done);
        }
        self.undue = is_undue(state, &record.event);
        ControlFlow::Continue(())
    }

    fn after(&mut self, state: &State, record: &Record, outcome: Outcome) -> ControlFlow<Stop<E>> {
        let report = &mut self.report;
        report.records_folded += 1;
        let checked = record.block >= self.options.from_block;
        report.records_checked += u64::from(checked);
        if self.undue && checked {
            report.weights_undue.push(record.position());
        }
        if let Outcome::Rejected(why) = &outcome
            && checked
        {
            report.rejections.push((record.position(), why.to_string()));
        }
        if checked {
            if let Some(divergence) = check_record(record, &outcome) {
                report.divergence = Some(divergence);
                return ControlFlow::Break(Stop::Done);
            }
            if let (Event::StepCompleted(event), Outcome::Scored(recomputed)) =
                (&record.event, outcome)
            {
                report.steps.push(StepReport {
                    position: record.position(),
                    step: event.step,
                    record: recomputed,
                });
            }
            if matches!(
                record.event,
                Event::WeightsSubmitted(_) | Event::WeightsPrepared(_)
            ) {
                report.weights_checked += 1;
            }
        }
        self.check_checkpoints(state, record.position(), checked)
    }
}

impl<C, E> Checks<C>
where
    C: Iterator<Item = Result<State, E>>,
    E: std::error::Error + 'static,
{
    /// Compares the checkpoint taken at `position`, if any, with the recomputed `state`.
    fn check_checkpoints(
        &mut self,
        state: &State,
        position: Position,
        checked: bool,
    ) -> ControlFlow<Stop<E>> {
        while let Some(checkpoint) = self.checkpoints.next_if(|c| match c {
            Ok(c) => c.position <= Some(position),
            Err(_) => true,
        }) {
            let checkpoint = match checkpoint {
                Ok(checkpoint) => checkpoint,
                Err(error) => return ControlFlow::Break(Stop::Failed(ReplayError::Source(error))),
            };
            if checkpoint.position != Some(position) || !checked {
                continue;
            }
            self.report.checkpoints_checked += 1;
            if codec::encode_state(&checkpoint) != codec::encode_state(state) {
                self.report.divergence = Some(Divergence {
                    position,
                    step: None,
                    uid: None,
                    field: "checkpoint".into(),
                    journaled: "a stored state".into(),
                    recomputed: "a different state".into(),
                });
                return ControlFlow::Break(Stop::Done);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Whether `event` submits weights that the state's cadence does not have due. A
/// `WeightsPrepared` that carries the chain reading it was judged on (schema 6) is judged
/// again on it, under either cadence (`machine::cadence`). Without one (weights set by hand,
/// older journals), and for a `WeightsSubmitted` that answers no intent, N's cadence is judged
/// as it can be without a reading: a step must have made weights due.
fn is_undue(state: &State, event: &Event) -> bool {
    let legacy = || {
        matches!(
            state.params.rules.weights_cadence,
            WeightsCadence::AfterStep { .. }
        ) && state.weights_due.is_none()
    };
    match event {
        Event::WeightsPrepared(prepared) => match &prepared.due {
            Some(reading) => !cadence::is_due(state, reading),
            None => legacy(),
        },
        Event::WeightsSubmitted(_) => state.weights_intent.is_none() && legacy(),
        _ => false,
    }
}

/// Replays a JSON Lines journal, starting from its latest checkpoint before `from_block` when
/// allowed.
pub fn replay_items(
    items: &[Item],
    options: ReplayOptions,
) -> Result<ReplayReport, ReplayError<std::convert::Infallible>> {
    let start = if options.use_checkpoints {
        items
            .iter()
            .filter_map(|item| match item {
                Item::Checkpoint(state) => Some(state),
                Item::Record(_) => None,
            })
            .rfind(|state| state.position.is_some_and(|p| p.block < options.from_block))
            .map(|state| (**state).clone())
    } else {
        None
    };
    let records = items.iter().filter_map(|item| match item {
        Item::Record(record) => Some(Ok(record.clone())),
        Item::Checkpoint(_) => None,
    });
    let checkpoints = items.iter().filter_map(|item| match item {
        Item::Checkpoint(state) => Some(Ok((**state).clone())),
        Item::Record(_) => None,
    });
    replay(start, records, checkpoints, options)
}

fn check_record(record: &Record, outcome: &Outcome) -> Option<Divergence> {
    match (&record.event, outcome) {
        (Event::StepCompleted(event), Outcome::Scored(recomputed)) => {
            compare_steps(record.position(), event.step, &event.recorded, recomputed)
        }
        (Event::StepCompleted(event), Outcome::Rejected(why)) => Some(Divergence {
            position: record.position(),
            step: Some(event.step),
            uid: None,
            field: "step".into(),
            journaled: "a scored step".into(),
            recomputed: format!("a rejection ({why})"),
        }),
        (Event::WeightsSubmitted(event), Outcome::WeightsChecked(recomputed)) => {
            compare_weights(record.position(), &event.uids, &event.weights, recomputed)
        }
        (Event::WeightsPrepared(event), Outcome::WeightsChecked(recomputed)) => {
            compare_weights(record.position(), &event.uids, &event.weights, recomputed)
        }
        _ => None,
    }
}

fn compare_weights(
    position: Position,
    journaled_uids: &[u16],
    journaled_weights: &[u16],
    recomputed: &Result<(Vec<u16>, Vec<u16>), crate::machine::weights::ChainWeightsError>,
) -> Option<Divergence> {
    let divergence = |uid, field: &str, journaled: String, recomputed: String| {
        Some(Divergence {
            position,
            step: None,
            uid,
            field: field.into(),
            journaled,
            recomputed,
        })
    };
    let (uids, weights) = match recomputed {
        Ok(pair) => pair,
        Err(why) => {
            return divergence(
                None,
                "submitted weights",
                "a vector".into(),
                why.to_string(),
            );
        }
    };
    if journaled_uids != uids.as_slice() {
        return divergence(
            None,
            "submitted uids",
            format!("{journaled_uids:?}"),
            format!("{uids:?}"),
        );
    }
    for ((uid, journaled), recomputed) in journaled_uids.iter().zip(journaled_weights).zip(weights)
    {
        if journaled != recomputed {
            return divergence(
                Some(*uid),
                "submitted weight",
                journaled.to_string(),
                recomputed.to_string(),
            );
        }
    }
    if journaled_weights.len() != weights.len() {
        return divergence(
            None,
            "submitted weight count",
            journaled_weights.len().to_string(),
            weights.len().to_string(),
        );
    }
    None
}

/// Compares a recorded step with its recomputation, field by field, uid by uid. Floats are
/// compared bit for bit: the fold is deterministic, so any difference is a divergence.
pub fn compare_steps(
    position: Position,
    step: u64,
    journaled: &StepRecord,
    recomputed: &StepRecord,
) -> Option<Divergence> {
    let divergence = |uid: Option<u16>, field: &str, journaled: String, recomputed: String| {
        Some(Divergence {
            position,
            step: Some(step),
            uid,
            field: field.into(),
            journaled,
            recomputed,
        })
    };
    if journaled.competition != recomputed.competition {
        return divergence(
            None,
            "competition",
            journaled.competition.to_string(),
            recomputed.competition.to_string(),
        );
    }
    if journaled.uids != recomputed.uids {
        return divergence(
            None,
            "participants",
            format!("{:?}", journaled.uids),
            format!("{:?}", recomputed.uids),
        );
    }
    for (index, uid) in recomputed.uids.iter().enumerate() {
        let pairs = [
            (
                "wins",
                journaled.wins.get(index).copied(),
                recomputed.wins.get(index).copied(),
            ),
            (
                "matches",
                journaled.matches.get(index).copied(),
                recomputed.matches.get(index).copied(),
            ),
        ];
        for (field, a, b) in pairs {
            if a != b {
                return divergence(Some(*uid), field, show(a), show(b));
            }
        }
        let a = journaled.win_rate.get(index).copied();
        let b = recomputed.win_rate.get(index).copied();
        if a.map(f64::to_bits) != b.map(f64::to_bits) {
            return divergence(Some(*uid), "win_rate", show(a), show(b));
        }
        // The successor's scores: bit for bit, any NaN equal to any NaN (Python's NaNs need
        // not share a sign or payload). N records none.
        let a = journaled.scores.get(index).copied();
        let b = recomputed.scores.get(index).copied();
        let same = match (a, b) {
            (Some(a), Some(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (a, b) => a.is_none() && b.is_none(),
        };
        if !same {
            return divergence(Some(*uid), "score", show(a), show(b));
        }
    }
    let length = journaled.weights.len().max(recomputed.weights.len());
    for index in 0..length {
        let a = journaled.weights.get(index).copied();
        let b = recomputed.weights.get(index).copied();
        if a.map(f64::to_bits) != b.map(f64::to_bits) {
            let uid = u16::try_from(index).ok();
            return divergence(uid, "weight", show(a), show(b));
        }
    }
    if journaled.eval_next != recomputed.eval_next {
        return divergence(
            None,
            "eval_next",
            format!("{:?}", journaled.eval_next),
            format!("{:?}", recomputed.eval_next),
        );
    }
    None
}

fn show<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "nothing".to_owned(), |v| format!("{v:?}"))
}

/// The per-step table replay prints: one block per step, one row per participant, with the
/// uid's weight after the step.
pub fn render_table(report: &ReplayReport) -> String {
    let mut text = String::new();
    for step in &report.steps {
        let record = &step.record;
        let _ = writeln!(
            text,
            "step {} · block {} · competition {} · {} uids · kept {:?}",
            step.step,
            step.position.block,
            record.competition,
            record.uids.len(),
            record.eval_next
        );
        let _ = writeln!(
            text,
            "  {:>5} {:>7} {:>7} {:>20} {:>22}",
            "uid", "wins", "matches", "win_rate", "weight"
        );
        for (index, uid) in record.uids.iter().enumerate() {
            let weight = record
                .weights
                .get(usize::from(*uid))
                .copied()
                .unwrap_or(0.0);
            let _ = writeln!(
                text,
                "  {:>5} {:>7} {:>7} {:>20} {:>22}",
                uid,
                record.wins.get(index).copied().unwrap_or(0),
                record.matches.get(index).copied().unwrap_or(0),
                format!("{:?}", record.win_rate.get(index).copied().unwrap_or(0.0)),
                format!("{weight:?}"),
            );
        }
    }
    let _ = writeln!(
        text,
        "{} records folded, {} steps, {} weight submissions, {} checkpoints checked, {} rejections",
        report.records_folded,
        report.steps.len(),
        report.weights_checked,
        report.checkpoints_checked,
        report.rejections.len()
    );
    if !report.weights_undue.is_empty() {
        let at: Vec<String> = report
            .weights_undue
            .iter()
            .map(|p| format!("block {} seq {}", p.block, p.seq))
            .collect();
        let _ = writeln!(
            text,
            "weights submitted before the cadence had them due: {}",
            at.join(", ")
        );
    }
    match &report.divergence {
        None => text.push_str("all recorded results match\n"),
        Some(divergence) => {
            let _ = writeln!(text, "DIVERGENCE at {divergence}");
        }
    }
    text
}
