//! The one fold driver: every reader of a journal folds its records through [`FoldDriver`],
//! as Lighthouse's consensus code replays blocks through its `BlockReplayer`. The recorder
//! (after each append), replay (checking every record), the board (the leaderboard and the
//! monitor's counters), the scenario builder and the chain CLI differ only in what they do
//! around each record, which they say in a [`FoldHook`].
//!
//! The driver owns the rules they share: it starts from a checkpoint's state or from genesis,
//! skips records the start already holds (those at or before the checkpoint's position), and
//! folds the rest in the order given. It does no I/O itself; a reader's record source may (a sled iterator),
//! and its errors stop the fold and are returned as they are.

use std::convert::Infallible;
use std::ops::ControlFlow;

use super::{MechanismParams, Outcome, Position, Record, State, apply};

/// What a reader does around each record the driver folds.
pub trait FoldHook {
    /// Why the reader stopped the fold early.
    type Stop;

    /// A record the start state already holds, which is not folded.
    fn skipped(&mut self, _record: &Record) {}

    /// Before `record` is folded into `state`: `Break` stops without folding it.
    fn before(&mut self, _state: &State, _record: &Record) -> ControlFlow<Self::Stop> {
        ControlFlow::Continue(())
    }

    /// After `record` was folded: the fold's outcome and the state it left. `Break` stops.
    fn after(
        &mut self,
        state: &State,
        record: &Record,
        outcome: Outcome,
    ) -> ControlFlow<Self::Stop>;
}

/// A closure is a hook that sees each folded record and its outcome, and never stops.
impl<F: FnMut(&State, &Record, Outcome)> FoldHook for F {
    type Stop = Infallible;

    fn after(
        &mut self,
        state: &State,
        record: &Record,
        outcome: Outcome,
    ) -> ControlFlow<Infallible> {
        self(state, record, outcome);
        ControlFlow::Continue(())
    }
}

/// Folds records into a state, from a checkpoint's state or from genesis.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldDriver {
    state: State,
    /// The last record the start state holds (a checkpoint's position).
    start: Option<Position>,
}

impl FoldDriver {
    /// A driver starting from `start`, or from genesis (the genesis parameters) without one.
    pub fn new(start: Option<State>) -> Self {
        let state = start.unwrap_or_else(|| State::new(MechanismParams::genesis()));
        Self {
            start: state.position,
            state,
        }
    }

    /// The state folded so far.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state folded so far, kept.
    pub fn into_state(self) -> State {
        self.state
    }

    /// Whether the start state already holds `record` (it is at or before the checkpoint's
    /// position). Journals are read in order, so these come first.
    pub fn holds(&self, record: &Record) -> bool {
        self.start.is_some_and(|p| record.position() <= p)
    }

    /// Folds one record; `None` when the state already holds it.
    pub fn fold(&mut self, record: &Record) -> Option<Outcome> {
        if self.holds(record) {
            return None;
        }
        Some(apply(&mut self.state, record))
    }

    /// Folds `records` in order, calling `hook` around each. Returns `Break` with the hook's
    /// reason when it stopped the fold, or the record source's first error.
    pub fn fold_all<E, H: FoldHook>(
        &mut self,
        records: impl IntoIterator<Item = Result<Record, E>>,
        hook: &mut H,
    ) -> Result<ControlFlow<H::Stop>, E> {
        for record in records {
            let record = record?;
            if self.holds(&record) {
                hook.skipped(&record);
                continue;
            }
            if let ControlFlow::Break(stop) = hook.before(&self.state, &record) {
                return Ok(ControlFlow::Break(stop));
            }
            let outcome = apply(&mut self.state, &record);
            if let ControlFlow::Break(stop) = hook.after(&self.state, &record, outcome) {
                return Ok(ControlFlow::Break(stop));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Folds `records`, whose source cannot fail, with nothing around them.
    pub fn fold_records<'a>(&mut self, records: impl IntoIterator<Item = &'a Record>) {
        for record in records {
            self.fold(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::{Event, StepFailed};

    fn failed(block: u64, seq: u64, step: u64) -> Record {
        Record {
            block,
            seq,
            event: Event::StepFailed(StepFailed {
                step,
                reason: "no data".into(),
            }),
        }
    }

    struct Count {
        skipped: usize,
        folded: usize,
        stop_after: usize,
    }

    impl FoldHook for Count {
        type Stop = &'static str;

        fn skipped(&mut self, _record: &Record) {
            self.skipped += 1;
        }

        fn after(&mut self, _: &State, _: &Record, _: Outcome) -> ControlFlow<&'static str> {
            self.folded += 1;
            if self.folded == self.stop_after {
                ControlFlow::Break("enough")
            } else {
                ControlFlow::Continue(())
            }
        }
    }

    #[test]
    fn records_a_checkpoint_holds_are_skipped_and_a_hook_may_stop() {
        let records: Vec<Record> = (0..4).map(|seq| failed(10 + seq, seq, 0)).collect();
        let mut from_genesis = FoldDriver::new(None);
        from_genesis.fold_records(&records[..2]);
        let checkpoint = from_genesis.state().clone();
        let mut driver = FoldDriver::new(Some(checkpoint));
        let mut hook = Count {
            skipped: 0,
            folded: 0,
            stop_after: 10,
        };
        let source = records.iter().cloned().map(Ok::<_, Infallible>);
        let flow = driver.fold_all(source, &mut hook).unwrap();
        assert_eq!(flow, ControlFlow::Continue(()));
        assert_eq!((hook.skipped, hook.folded), (2, 2));
        from_genesis.fold_records(&records[2..]);
        assert_eq!(driver.state(), from_genesis.state());
        let mut stopping = Count {
            skipped: 0,
            folded: 0,
            stop_after: 1,
        };
        let source = records.iter().cloned().map(Ok::<_, Infallible>);
        let flow = FoldDriver::new(None)
            .fold_all(source, &mut stopping)
            .unwrap();
        assert_eq!(flow, ControlFlow::Break("enough"));
        assert_eq!(stopping.folded, 1);
    }

    #[test]
    fn a_source_error_stops_the_fold() {
        let source = vec![Ok(failed(1, 0, 0)), Err("disk"), Ok(failed(2, 1, 0))];
        let mut seen = 0;
        let mut hook = |_: &State, _: &Record, _: Outcome| seen += 1;
        let result = FoldDriver::new(None).fold_all(source, &mut hook);
        assert_eq!(result, Err("disk"));
        assert_eq!(seen, 1);
    }
}
