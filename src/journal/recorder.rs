//! Append, then fold: the one way events enter a journal and the state.
//!
//! [`Recorder::record`] writes a batch of events atomically and flushes it before folding any
//! of them, so the state never holds something a crash could take back. On open the state is
//! rebuilt from the latest checkpoint and the records after it; checkpoints are written every
//! `checkpoint_every_steps` completed steps.

use std::ops::ControlFlow::Continue;
use std::path::Path;

use super::{Journal, JournalError};
use crate::machine::{Event, FoldDriver, Outcome, Record, State};

/// The state `journal` folds to: its latest checkpoint (or the genesis parameters on a journal
/// without one) with every record after it applied.
pub fn fold_from_latest_checkpoint(journal: &Journal) -> Result<State, JournalError> {
    let (start, from) = journal.start_before(u64::MAX)?;
    let mut driver = FoldDriver::new(start);
    let Continue(()) = driver.fold_all(
        journal.records(from, None),
        &mut |_: &State, _: &Record, _| {},
    )?;
    Ok(driver.into_state())
}

/// The state of the existing journal at `path` (never creates one): for tools that read a
/// journal a validator is not running on.
pub fn fold_existing(path: &Path) -> Result<State, JournalError> {
    fold_from_latest_checkpoint(&Journal::open_existing(path)?)
}

/// The journal and the state folded from it.
#[derive(Debug)]
pub struct Recorder {
    journal: Journal,
    driver: FoldDriver,
    checkpoint_every_steps: u64,
    steps_since_checkpoint: u64,
}

impl Recorder {
    /// Opens (or creates) the journal at `path` and folds it, starting from its latest
    /// checkpoint. A new journal starts from the genesis parameters; the runner journals its own
    /// as a `ParamsChanged` event when they differ.
    pub fn open(path: &Path, checkpoint_every_steps: u64) -> Result<Self, JournalError> {
        let journal = Journal::open(path)?;
        let driver = FoldDriver::new(Some(fold_from_latest_checkpoint(&journal)?));
        Ok(Self {
            journal,
            driver,
            checkpoint_every_steps: checkpoint_every_steps.max(1),
            steps_since_checkpoint: 0,
        })
    }

    /// The folded state.
    pub fn state(&self) -> &State {
        self.driver.state()
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// As [`Recorder::record`], with each event's block raised to at least the journal's last
    /// one: for writers whose blocks come from clocks that may lag it (another connection's
    /// head, a task that started earlier), so the journal's order holds whatever their timing.
    pub fn record_in_order(
        &mut self,
        events: Vec<(u64, Event)>,
    ) -> Result<Vec<(Record, Outcome)>, JournalError> {
        let floor = self.journal.last_position().map_or(0, |p| p.block);
        let events: Vec<(u64, Event)> = events
            .into_iter()
            .map(|(block, event)| (block.max(floor), event))
            .collect();
        self.record(&events)
    }

    /// Journals `events` (block, event) atomically, flushes, then folds them.
    pub fn record(
        &mut self,
        events: &[(u64, Event)],
    ) -> Result<Vec<(Record, Outcome)>, JournalError> {
        let records = self.journal.append(events)?;
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            // Appended records follow everything the state holds, so the driver folds each.
            let Some(outcome) = self.driver.fold(&record) else {
                continue;
            };
            if matches!(record.event, Event::StepCompleted(_)) {
                self.steps_since_checkpoint += 1;
            }
            results.push((record, outcome));
        }
        if self.steps_since_checkpoint >= self.checkpoint_every_steps {
            self.journal.write_checkpoint(self.driver.state())?;
            self.steps_since_checkpoint = 0;
        }
        Ok(results)
    }
}
