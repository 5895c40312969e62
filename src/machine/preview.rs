//! What the next events would do, computed on a scratch copy of the state: the runner asks
//! before it acts (who would take part in a step; what completing the open step records), and
//! the answer is exactly what the fold will compute once the event is journaled.

use super::event::{Event, Record, StepCompleted, StepRecord, StepStarted};
use super::fold::{Outcome, apply};
use super::state::{OpenStep, State};

/// The record a `StepCompleted` for the open step would carry if journaled at `block`. `None`
/// when no step is open.
pub fn step_completion(state: &State, block: u64) -> Option<StepRecord> {
    let open = state.step_open.as_ref()?;
    let probe = Event::StepCompleted(StepCompleted {
        step: open.step,
        recorded: StepRecord::empty(open.competition.clone()),
    });
    match probe_outcome(state, block, probe) {
        (Outcome::Scored(record), _) => Some(record),
        _ => None,
    }
}

/// The step the next `StepStarted` at `block` would open (its competition, participants and
/// their models), or `None` when it would be refused (a step is open, no metagraph, nothing
/// scheduled).
pub fn step_start(state: &State, block: u64) -> Option<OpenStep> {
    if state.step_open.is_some() {
        return None;
    }
    let competition = state
        .params
        .competition_for_step(block, state.step_next)?
        .id
        .clone();
    let probe = Event::StepStarted(StepStarted {
        step: state.step_next,
        competition,
    });
    match probe_outcome(state, block, probe) {
        (Outcome::Applied, scratch) => scratch.step_open,
        _ => None,
    }
}

fn probe_outcome(state: &State, block: u64, event: Event) -> (Outcome, State) {
    let mut scratch = state.clone();
    let record = Record {
        block,
        seq: 0,
        event,
    };
    let outcome = apply(&mut scratch, &record);
    (outcome, scratch)
}

/// The events of a chain observation that would change the state: the metagraph when it
/// differs from the latest one, and each commitment the state does not already hold (same
/// commit block and field). Journaling only these keeps the journal of a quiet chain small;
/// folding the others would be `Unchanged` anyway.
pub fn observation_news(state: &State, events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|event| match event {
            Event::MetagraphObserved(observed) => state
                .metagraph
                .as_ref()
                .is_none_or(|known| &known.observed != observed),
            Event::CommitmentObserved(observed) => state
                .hotkeys
                .get(&observed.hotkey)
                .and_then(|record| record.commitment.as_ref())
                .is_none_or(|known| {
                    known.block_commit != observed.block_commit || known.field != observed.field
                }),
            _ => true,
        })
        .cloned()
        .collect()
}
