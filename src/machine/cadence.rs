//! When weights are due, for both cadences: one pure function that the weight setter asks
//! before it journals an intent, and that replay asks again of every `WeightsPrepared`, from
//! what the setter read of the chain (journaled with the intent as its [`DueReading`]).
//!
//! - N's cadence (`AfterStep`): the fold says a step made weights due (`State::weights_due`,
//!   as N's loop checks the epoch between steps); the chain's `WeightsSetRateLimit` since our
//!   `LastUpdate` must also have passed.
//! - The chain's clock (`Chain`): `head − max(last included block, LastUpdate) ≥
//!   max(blocks_per_epoch, WeightsSetRateLimit)`, whatever the steps do.

use super::State;
use super::event::DueReading;
use super::params::WeightsCadence;

/// The first block at which weights are due, or `None` while N's cadence has none due.
pub fn due_block(state: &State, reading: &DueReading) -> Option<u64> {
    match state.params.rules.weights_cadence {
        WeightsCadence::Chain => {
            // An inclusion past the head is another chain's (a journal reused on a reset
            // chain): the chain's own `LastUpdate` decides then.
            let included = state
                .block_weights_included
                .filter(|block| *block <= reading.head)
                .unwrap_or(0);
            let last = included.max(reading.last_update);
            if last == 0 {
                return Some(0);
            }
            Some(last.saturating_add(reading.blocks_per_epoch.max(reading.rate_limit)))
        }
        WeightsCadence::AfterStep { .. } => {
            state.weights_due.as_ref()?;
            if reading.last_update == 0 {
                return Some(0);
            }
            Some(reading.last_update.saturating_add(reading.rate_limit))
        }
    }
}

/// Whether weights are due at the reading's head.
pub fn is_due(state: &State, reading: &DueReading) -> bool {
    due_block(state, reading).is_some_and(|due| reading.head >= due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::MechanismParams;
    use crate::machine::state::WeightsDue;

    fn reading(head: u64, last_update: u64) -> DueReading {
        DueReading {
            head,
            last_update,
            rate_limit: 10,
            blocks_per_epoch: 100,
        }
    }

    #[test]
    fn the_chain_cadence_counts_from_the_later_of_inclusion_and_last_update() {
        let mut params = MechanismParams::default();
        params.rules.weights_cadence = WeightsCadence::Chain;
        let mut state = State::new(params);
        assert!(is_due(&state, &reading(5, 0)), "never set: due at once");
        assert!(!is_due(&state, &reading(149, 50)));
        assert!(is_due(&state, &reading(150, 50)));
        state.block_weights_included = Some(120);
        assert!(!is_due(&state, &reading(219, 50)));
        assert!(is_due(&state, &reading(220, 50)));
        // An inclusion past the head is another chain's.
        state.block_weights_included = Some(10_000);
        assert!(is_due(&state, &reading(150, 50)));
    }

    #[test]
    fn ns_cadence_needs_a_step_to_make_weights_due_and_the_rate_limit_passed() {
        let mut state = State::new(MechanismParams::default());
        assert_eq!(due_block(&state, &reading(1_000, 0)), None);
        state.weights_due = Some(WeightsDue {
            block: 900,
            weights: vec![1.0],
        });
        assert!(is_due(&state, &reading(1_000, 0)));
        assert!(!is_due(&state, &reading(1_000, 995)));
        assert!(is_due(&state, &reading(1_005, 995)));
    }
}
