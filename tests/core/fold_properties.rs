//! Property tests of scoring, weights and the fold.

use super::support;

use proptest::prelude::*;
use validator::journal::codec;
use validator::journal::jsonl::{self, Item};
use validator::machine::params::EpsilonRule;
use validator::machine::scoring::{Contestant, Tally, compute_wins, compute_wins_reference};
use validator::machine::weights::{step_weights_softmax, sum_ordered};
use validator::machine::{MechanismParams, Record, State, apply};
use validator::replay::{ReplayOptions, replay_items};

/// A round: per uid a commit block (or none) and a loss list (dyadic values, some failures).
fn round() -> impl Strategy<Value = Vec<(Option<u64>, Vec<f64>)>> {
    let loss = prop_oneof![
        8 => (0u32..512).prop_map(|k| 1.0 + f64::from(k) / 128.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NAN),
    ];
    let uid = (
        proptest::option::weighted(0.9, 0u64..50),
        proptest::collection::vec(loss, 0..24),
    );
    proptest::collection::vec(uid, 1..10)
}

fn contestants(round: &[(Option<u64>, Vec<f64>)]) -> Vec<Contestant<'_>> {
    round
        .iter()
        .enumerate()
        .map(|(uid, (block, losses))| Contestant {
            uid: u16::try_from(uid).unwrap(),
            block_commit: *block,
            losses,
        })
        .collect()
}

fn epsilon() -> impl Strategy<Value = EpsilonRule> {
    prop_oneof![
        Just(EpsilonRule::Fixed(0.01)),
        (0.0f64..0.2).prop_map(EpsilonRule::Fixed),
        (0.0f64..0.1, 0.0f64..0.05, 1u64..100).prop_map(|(start, end, decay_blocks)| {
            EpsilonRule::LinearDecay {
                start,
                end,
                decay_blocks,
            }
        }),
    ]
}

fn state_bytes(state: &State) -> Vec<u8> {
    codec::encode_state(state)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn win_rates_lie_in_the_unit_interval(round in round(), epsilon in epsilon(), block in 0u64..100) {
        for tally in compute_wins(&contestants(&round), &epsilon, block) {
            prop_assert!((0.0..=1.0).contains(&tally.win_rate));
            prop_assert!(tally.wins <= tally.matches);
        }
    }

    #[test]
    fn the_fast_scorer_is_ns_loop(round in round(), epsilon in epsilon(), block in 0u64..100) {
        let round = contestants(&round);
        prop_assert_eq!(compute_wins(&round, &epsilon, block), compute_wins_reference(&round, &epsilon, block));
    }

    #[test]
    fn results_do_not_depend_on_uid_order(round in round(), epsilon in epsilon(), seed in any::<u64>()) {
        let forward = contestants(&round);
        let mut shuffled = forward.clone();
        let mut random = validator::synth::SplitMix64::new(seed);
        for index in (1..shuffled.len()).rev() {
            let other = usize::try_from(random.next_u64() % (index as u64 + 1)).unwrap();
            shuffled.swap(index, other);
        }
        let by_uid = |round: &[Contestant<'_>], tallies: Vec<Tally>| {
            let mut pairs: Vec<(u16, Tally)> = round.iter().map(|c| c.uid).zip(tallies).collect();
            pairs.sort_by_key(|(uid, _)| *uid);
            pairs
        };
        prop_assert_eq!(
            by_uid(&forward, compute_wins(&forward, &epsilon, 7)),
            by_uid(&shuffled, compute_wins(&shuffled, &epsilon, 7))
        );
    }

    #[test]
    fn an_earlier_commit_never_loses_to_an_identical_later_model(
        losses in proptest::collection::vec(0.0f64..10.0, 0..40),
        early in 0u64..1000,
        gap in 1u64..1000,
        epsilon in epsilon(),
    ) {
        let round = [
            Contestant { uid: 0, block_commit: Some(early), losses: &losses },
            Contestant { uid: 1, block_commit: Some(early + gap), losses: &losses },
        ];
        let tallies = compute_wins(&round, &epsilon, early + gap);
        prop_assert_eq!(tallies[1].wins, 0);
        let positive_epsilon = match epsilon {
            EpsilonRule::Fixed(e) => e > 0.0,
            EpsilonRule::LinearDecay { .. } => false,
        };
        if positive_epsilon {
            let positive = losses.iter().filter(|l| **l > 0.0).count() as u64;
            prop_assert_eq!(tallies[0].wins, positive);
        }
    }

    #[test]
    fn scaling_losses_by_a_power_of_two_changes_nothing(round in round(), exponent in -8i32..8, epsilon in epsilon()) {
        let factor = 2f64.powi(exponent);
        let scaled: Vec<(Option<u64>, Vec<f64>)> = round
            .iter()
            .map(|(block, losses)| (*block, losses.iter().map(|l| l * factor).collect()))
            .collect();
        prop_assert_eq!(
            compute_wins(&contestants(&round), &epsilon, 3),
            compute_wins(&contestants(&scaled), &epsilon, 3)
        );
    }

    #[test]
    fn scaling_losses_by_any_positive_constant_changes_nothing_away_from_ties(
        round in round(),
        factor in 0.01f64..100.0,
    ) {
        // Away from near-ties between a discounted loss and a raw one (relative gaps above 1e-9,
        // exact ties included: see the regression test below), a common positive factor
        // cannot change any comparison.
        let epsilon = EpsilonRule::Fixed(0.01);
        let finite: Vec<f64> = round.iter().flat_map(|(_, l)| l.iter().copied()).filter(|l| l.is_finite()).collect();
        let near_tie = finite.iter().any(|raw| {
            finite
                .iter()
                .map(|l| l * 0.99)
                .any(|discounted| ((discounted - raw) / discounted).abs() < 1e-9)
        });
        prop_assume!(!near_tie);
        let scaled: Vec<(Option<u64>, Vec<f64>)> = round
            .iter()
            .map(|(block, losses)| (*block, losses.iter().map(|l| l * factor).collect()))
            .collect();
        let before = compute_wins(&contestants(&round), &epsilon, 0);
        let after = compute_wins(&contestants(&scaled), &epsilon, 0);
        for (a, b) in before.iter().zip(&after) {
            prop_assert!((a.win_rate - b.win_rate).abs() < 1e-12);
        }
    }

    #[test]
    fn a_steps_vector_sums_to_the_competition_scale(
        rates in proptest::collection::vec(0.0f64..=1.0, 1..64),
        temperature in 0.01f64..1.0,
        scale in 0.1f64..2.0,
    ) {
        let uids: Vec<u16> = (0..u16::try_from(rates.len()).unwrap()).map(|u| u * 3).collect();
        let size = usize::from(*uids.last().unwrap()) + 1;
        let vector = step_weights_softmax(&uids, &rates, size, temperature, scale);
        prop_assert!((sum_ordered(&vector) - scale).abs() <= scale * 1e-12);
        prop_assert!(vector.iter().all(|w| *w >= 0.0));
    }

    #[test]
    fn folding_twice_gives_the_same_state(script in support::ops()) {
        let scenario = support::build(&script);
        let mut again = State::new(MechanismParams::genesis());
        for record in &scenario.records {
            apply(&mut again, record);
        }
        prop_assert_eq!(state_bytes(scenario.state()), state_bytes(&again));
    }

    #[test]
    fn records_round_trip_through_both_encodings(script in support::ops()) {
        let scenario = support::build(&script);
        let mut json = Vec::new();
        for record in &scenario.records {
            let bytes = codec::encode_event(&record.event);
            let back = codec::decode_event(&bytes).unwrap();
            prop_assert_eq!(codec::encode_event(&back), bytes);
            jsonl::write_record(&mut json, record).unwrap();
        }
        jsonl::write_checkpoint(&mut json, scenario.state()).unwrap();
        let items = jsonl::read(json.as_slice()).unwrap();
        let mut again = Vec::new();
        for item in &items {
            jsonl::write_item(&mut again, item).unwrap();
        }
        prop_assert_eq!(String::from_utf8(json).unwrap(), String::from_utf8(again).unwrap());
        let Some(Item::Checkpoint(state)) = items.last() else { panic!("no checkpoint") };
        prop_assert_eq!(state_bytes(state), state_bytes(scenario.state()));
    }

    #[test]
    fn replay_from_a_checkpoint_equals_replay_from_genesis(script in support::ops(), cut in 0usize..1000) {
        let scenario = support::build(&script);
        let records: Vec<Record> = scenario.records.clone();
        let cut = cut % records.len();
        let mut state = State::new(MechanismParams::genesis());
        for record in &records[..=cut] {
            apply(&mut state, record);
        }
        let mut items: Vec<Item> = records.iter().cloned().map(Item::Record).collect();
        items.insert(cut + 1, Item::Checkpoint(Box::new(state)));
        let from_block = records.get(cut + 1).map_or(u64::MAX, |r| r.block).max(records[cut].block + 1);
        let options = |use_checkpoints| ReplayOptions { from_block, to_block: None, use_checkpoints };
        let with = replay_items(&items, options(true)).unwrap();
        let without = replay_items(&items, options(false)).unwrap();
        prop_assert!(with.divergence.is_none(), "{:?}", with.divergence);
        prop_assert_eq!(with.started_from, Some(records[cut].position()));
        prop_assert_eq!(without.started_from, None);
        prop_assert_eq!(&with.steps, &without.steps);
        prop_assert_eq!(with.divergence, without.divergence);
    }
}
