//! The successor's scoring rules that are plain functions of their inputs, exactly as F
//! computes them (`../shared/docs/successor-semantics.md` §4): `compute_wins` over one score
//! per uid, a model's score from its tasks' reference losses, `should_retry_model`, the top
//! miners of large validators' weights, and the competition tracker in float32 as torch
//! computes it (the sync block its data seed comes from is [`super::numbers::sync_block`]).
//!
//! Floating point is Python's: scores and epsilon are f64, products rounded as Python rounds
//! them; a missing commit block is +∞ (epsilon at its start, never "earlier"). NaN never wins
//! and is never beaten, as Python's comparisons make it.

use std::collections::BTreeSet;

use super::numbers::exact_f64;
use super::params::EpsilonRule;
use super::scoring::{block_earlier, epsilon_for};
use super::state::EvalResult;
use super::torch_f32::{nan_to_num, narrow, sum};
use super::weights::sum_ordered;

/// One uid in F's `compute_wins`: its score (lower is better; ∞ for a failed or absent model)
/// and its commit block (`None`: F's default of +∞).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The uid.
    pub uid: u16,
    /// The weighted task score.
    pub score: f64,
    /// The commit block.
    pub block_commit: Option<u64>,
}

/// F's `_is_win(i, j)`: the earlier commit's score is reduced by epsilon, then strictly
/// smaller wins.
pub fn is_win(i: &Scored, j: &Scored, epsilon: &EpsilonRule, block_current: u64) -> bool {
    let adjusted = |me: &Scored, other: &Scored| {
        if block_earlier(me.block_commit, other.block_commit) {
            (1.0 - epsilon_for(epsilon, block_current, me.block_commit)) * me.score
        } else {
            me.score
        }
    };
    adjusted(i, j) < adjusted(j, i)
}

/// F's `compute_wins`: every listed uid plays every other (∞ and NaN included); the win rate
/// is wins over `n - 1`, and 0 for a lone uid. Returned in the order of `uids`.
pub fn compute_wins(uids: &[Scored], epsilon: &EpsilonRule, block_current: u64) -> Vec<(u32, f64)> {
    let matches = uids.len().saturating_sub(1);
    uids.iter()
        .enumerate()
        .map(|(i, me)| {
            let wins = uids
                .iter()
                .enumerate()
                .filter(|(j, other)| *j != i && is_win(me, other, epsilon, block_current))
                .count();
            let rate = if matches == 0 {
                0.0
            } else {
                // Both are below 2^53: the quotient is Python's correctly rounded division.
                exact_f64(wins as u64) / exact_f64(matches as u64)
            };
            (u32::try_from(wins).unwrap_or(u32::MAX), rate)
        })
        .collect()
}

/// F's `compute_reference_loss` over one task's per-sample losses: their sum, left to right
/// as Python's `sum` adds, over their count; ∞ for a task without samples.
pub fn task_loss_mean(losses: &[f64]) -> f64 {
    if losses.is_empty() {
        return f64::INFINITY;
    }
    sum_ordered(losses) / exact_f64(losses.len() as u64)
}

/// Python's `math.isclose(a, b)` with its default tolerances (relative 1e-9, absolute 0).
fn is_close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// F's `score_model` for tasks without normalization: the loaded tasks' `(weight, raw score)`
/// in task order, each weight divided by their total unless that total is close to 1 (a task
/// that did not load leaves the other's weight renormalised), summed from 0. `None` when no
/// task loaded: F raises, and the model is retried rather than scored.
pub fn model_score(tasks: &[(f64, f64)]) -> Option<f64> {
    if tasks.is_empty() {
        return None;
    }
    let weight_total = tasks.iter().fold(0.0, |total, (weight, _)| total + weight);
    let renormalise = !is_close(weight_total, 1.0) && weight_total > 0.0;
    Some(tasks.iter().fold(0.0, |score, (weight, raw)| {
        let weight = if renormalise {
            weight / weight_total
        } else {
            *weight
        };
        score + raw * weight
    }))
}

/// F's `should_retry_model`: never evaluated → yes; else the last evaluation that did not
/// fail decides (worse than the winner → no; better → whether it now beats the winner's
/// epsilon-reduced score); only failures → one retry.
pub fn should_retry_model(
    epsilon: &EpsilonRule,
    block_current: u64,
    history: &[EvalResult],
) -> bool {
    if history.is_empty() {
        return true;
    }
    // F tests `score != math.inf`: a NaN counts as a result.
    match history.iter().rev().find(|e| e.score != f64::INFINITY) {
        Some(last) => {
            if last.score > last.winning_score {
                return false;
            }
            let epsilon_now = epsilon_for(epsilon, block_current, last.winning_block);
            last.score < last.winning_score * (1.0 - epsilon_now)
        }
        None => history.len() < 2,
    }
}

pub use super::event::ValidatorWeights;

/// taoverse's `get_top_miners`: for each validator with stake at least `stake_min` and a
/// permit, every uid whose raw weight is at least `share` of that validator's total. F keeps
/// them in a set; they are returned ascending.
pub fn top_miners(validators: &[ValidatorWeights], stake_min: f64, share: f64) -> BTreeSet<u16> {
    let mut top = BTreeSet::new();
    for validator in validators {
        if f64::from(validator.stake) < stake_min || !validator.validator_permit {
            continue;
        }
        // A Python int sum of u16 values, then one float product.
        let total: u64 = validator.weights.iter().map(|(_, w)| u64::from(*w)).sum();
        let threshold = exact_f64(total) * share;
        for (uid, weight) in &validator.weights {
            if f64::from(*weight) >= threshold {
                top.insert(*uid);
            }
        }
    }
    top
}

/// `tensor /= tensor.sum()` then `nan_to_num(0.0)`: each element divided by the float32
/// sum (a true division: ATen divides float32 by a tensor element by element).
fn normalized_f32(values: &mut [f32]) {
    let total = sum(values);
    for value in values.iter_mut() {
        *value /= total;
    }
}

/// taoverse's `CompetitionTracker.record_competition_weights` in float32: every stored vector
/// is padded with zeros to the new size first, the step's vector is normalised, then kept as
/// it is (the first record) or averaged as `alpha·old + (1 − alpha)·new`, each scalar
/// rounded to float32 as ATen rounds a Python float it multiplies by.
pub fn tracker_record_f32(tracker: &mut Option<Vec<f32>>, mut new: Vec<f32>, alpha: f64) {
    normalized_f32(&mut new);
    for value in &mut new {
        *value = nan_to_num(*value);
    }
    match tracker {
        None => *tracker = Some(new),
        Some(old) => {
            if old.len() < new.len() {
                old.resize(new.len(), 0.0);
            }
            let (keep, take) = (narrow(alpha), narrow(1.0 - alpha));
            for (old, new) in old.iter_mut().zip(&new) {
                *old = keep * *old + take * *new;
            }
        }
    }
}

/// taoverse's `get_subnet_weights` in float32, over the competitions in schedule order with
/// their reward shares. With a threshold, each stored tracker is renormalised in place (a
/// zero sum leaves NaN stored, as torch leaves it), shares under the threshold are dropped
/// and the rest renormalised; without one (F's start-up weights) the trackers are taken as
/// they are. The sum over competitions is normalised last.
pub fn subnet_weights_f32(
    trackers: &mut [(&mut Vec<f32>, f64)],
    size: usize,
    threshold: f64,
) -> Vec<f32> {
    let mut subnet = vec![0.0f32; size];
    for (tracker, reward_share) in trackers.iter_mut() {
        if tracker.len() < size {
            tracker.resize(size, 0.0);
        }
        let mut shares: Vec<f32> = tracker.clone();
        if threshold > 0.0 {
            normalized_f32(tracker);
            shares = tracker.iter().map(|v| nan_to_num(*v)).collect();
            let floor = narrow(threshold);
            for value in &mut shares {
                if *value < floor {
                    *value = 0.0;
                }
            }
            normalized_f32(&mut shares);
            for value in &mut shares {
                *value = nan_to_num(*value);
            }
        }
        let share = narrow(*reward_share);
        for (total, value) in subnet.iter_mut().zip(&shares) {
            *total += *value * share;
        }
    }
    normalized_f32(&mut subnet);
    for value in &mut subnet {
        *value = nan_to_num(*value);
    }
    subnet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn competition_4() -> EpsilonRule {
        EpsilonRule::LinearDecay {
            start: 0.05,
            end: 0.01,
            decay_blocks: 21_600,
        }
    }

    /// The semantics document's epsilon vectors for competition 4 (Python's floats).
    #[test]
    fn competition_4_epsilon_is_the_successors() {
        let epsilon = competition_4();
        let at = |delta: u64| epsilon.epsilon(1_000_000 + delta, 1_000_000);
        assert_eq!(at(0), 0.05);
        assert_eq!(at(460), 0.04914814814814815);
        assert_eq!(at(7_200), 0.03666666666666667);
        assert_eq!(at(10_800), 0.030000000000000002);
        assert_eq!(at(21_600), 0.010000000000000002);
        assert_eq!(at(1_000_000), 0.010000000000000002);
    }

    fn scored(uid: u16, score: f64, block_commit: Option<u64>) -> Scored {
        Scored {
            uid,
            score,
            block_commit,
        }
    }

    #[test]
    fn every_uid_plays_every_other_and_a_lone_uid_rates_zero() {
        let epsilon = EpsilonRule::Fixed(0.1);
        let uids = [
            scored(1, 1.0, Some(10)),
            scored(2, 0.95, Some(20)),
            scored(3, f64::INFINITY, None),
            scored(4, f64::NAN, Some(5)),
        ];
        let wins = compute_wins(&uids, &epsilon, 100);
        // 1 beats 2 (0.9 < 0.95) and ∞; NaN neither wins nor is beaten.
        assert_eq!(wins[0], (2, 2.0 / 3.0));
        assert_eq!(wins[1], (1, 1.0 / 3.0));
        assert_eq!(wins[2], (0, 0.0));
        assert_eq!(wins[3], (0, 0.0));
        assert_eq!(compute_wins(&uids[..1], &epsilon, 100), [(0, 0.0)]);
        // All ∞: nobody wins a match.
        let failed = [
            scored(1, f64::INFINITY, Some(1)),
            scored(2, f64::INFINITY, Some(2)),
        ];
        assert_eq!(compute_wins(&failed, &epsilon, 100), [(0, 0.0), (0, 0.0)]);
    }

    /// F:tests/model/test_retry.py, with its fixed epsilons and a winner scoring 1.0.
    #[test]
    fn retries_follow_the_successors_tests() {
        let record = |block, score| EvalResult {
            block,
            score,
            winning_score: 1.0,
            winning_block: Some(1),
        };
        assert!(should_retry_model(&EpsilonRule::Fixed(0.005), 10, &[]));
        let worse = EvalResult {
            block: 1,
            score: 0.2,
            winning_score: 0.19,
            winning_block: Some(1),
        };
        assert!(!should_retry_model(
            &EpsilonRule::Fixed(0.005),
            10,
            &[worse]
        ));
        for (epsilon, loss, expected) in [
            (0.005, 1.0, false),
            (0.001, 1.0, false),
            (0.0001, 1.0, false),
            (0.51, 0.5, false),
            (0.5004, 0.5, false),
            (0.49, 0.5, true),
        ] {
            let history = [record(1, loss)];
            assert_eq!(
                should_retry_model(&EpsilonRule::Fixed(epsilon), 10, &history),
                expected,
                "{epsilon} {loss}"
            );
        }
        for (history, expected) in [
            (vec![record(2, 0.9), record(4, 1.1)], false),
            (vec![record(2, 1.1), record(4, 0.9)], true),
        ] {
            for at in 0..history.len() {
                let mut with_failure = history.clone();
                let block = if at > 0 { history[at].block + 1 } else { 1 };
                with_failure.insert(at, record(block, f64::INFINITY));
                assert_eq!(
                    should_retry_model(&EpsilonRule::Fixed(0.005), 10, &with_failure),
                    expected
                );
            }
        }
        for (failures, expected) in [(1, true), (2, false), (3, false)] {
            let history: Vec<EvalResult> =
                (1..=failures).map(|b| record(b, f64::INFINITY)).collect();
            assert_eq!(
                should_retry_model(&EpsilonRule::Fixed(0.005), 10, &history),
                expected
            );
        }
    }

    /// taoverse's tests/metagraph/test_metagraph_utils.py L116-133, in raw u16 weights.
    #[test]
    fn top_miners_hold_a_share_of_a_large_validators_weights() {
        let validator = |uid, stake, permit, weights: &[(u16, u16)]| ValidatorWeights {
            uid,
            stake,
            validator_permit: permit,
            weights: weights.to_vec(),
        };
        let weights = [(0, 10_000), (1, 1_000), (2, 5_000)];
        let top = top_miners(&[validator(9, 100_000.0, true, &weights)], 100_000.0, 0.1);
        assert_eq!(top.into_iter().collect::<Vec<_>>(), [0, 2]);
        // Too little stake, or no permit: nothing counts.
        assert!(top_miners(&[validator(9, 99_999.0, true, &weights)], 100_000.0, 0.1).is_empty());
        assert!(top_miners(&[validator(9, 1e6, false, &weights)], 100_000.0, 0.1).is_empty());
        // Exactly the share counts (`>=`).
        let even = [(3, 1), (4, 99)];
        let top = top_miners(&[validator(9, 1e6, true, &even)], 100_000.0, 0.01);
        assert_eq!(top.into_iter().collect::<Vec<_>>(), [3, 4]);
    }

    /// taoverse's tests/model/competition/test_competition_tracker.py (α = 0.5).
    #[test]
    fn the_tracker_follows_taoverses_tests() {
        let mut tracker = None;
        tracker_record_f32(&mut tracker, vec![0.2, 0.4, 0.6, 0.8], 0.5);
        assert_eq!(tracker.as_deref(), Some(&[0.1f32, 0.2, 0.3, 0.4][..]));
        let mut tracker = None;
        tracker_record_f32(&mut tracker, vec![1.0, 0.0, 0.0, 0.0], 0.5);
        tracker_record_f32(&mut tracker, vec![0.0, 0.0, 0.0, 1.0], 0.5);
        assert_eq!(tracker.as_deref(), Some(&[0.5f32, 0.0, 0.0, 0.5][..]));
        let mut one = vec![0.1f32, 0.1, 0.2, 0.3, 0.3];
        let subnet = subnet_weights_f32(&mut [(&mut one, 1.0)], 5, 0.3);
        assert_eq!(subnet, [0.0, 0.0, 0.0, 0.5, 0.5]);
        let (mut a, mut b) = (None, None);
        tracker_record_f32(&mut a, vec![1.0, 2.0, 0.0, 0.0], 0.5);
        tracker_record_f32(&mut b, vec![0.0, 0.0, 5.0, 5.0], 0.5);
        let (mut a, mut b) = (a.unwrap_or_default(), b.unwrap_or_default());
        let subnet = subnet_weights_f32(&mut [(&mut a, 0.6), (&mut b, 0.4)], 4, 0.4);
        let expected = [0.0f32, 0.6, 0.2, 0.2];
        for (got, want) in subnet.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{subnet:?}");
        }
    }

    /// The successor's constants as float32: 0.9 → 0.8999999762, 1 − 0.9 → 0.1000000015,
    /// 0.18 → 0.1800000072, and a zero-sum tracker stays NaN in storage while it counts as 0.
    #[test]
    fn the_trackers_float32_constants_and_zero_sums() {
        let (nine_tenths, one_tenth) = (f32::from_bits(0x3f66_6666), f32::from_bits(0x3dcc_cccd));
        assert_eq!(narrow(0.9), nine_tenths);
        assert_eq!(narrow(1.0 - 0.9), one_tenth);
        assert_eq!(narrow(0.18), f32::from_bits(0x3e38_51ec));
        let mut tracker = Some(vec![1.0f32, 0.0]);
        tracker_record_f32(&mut tracker, vec![0.0, 1.0, 0.0], 0.9);
        assert_eq!(tracker.as_deref(), Some(&[nine_tenths, one_tenth, 0.0][..]));
        let mut empty = vec![0.0f32; 3];
        let subnet = subnet_weights_f32(&mut [(&mut empty, 1.0)], 3, 0.18);
        assert_eq!(subnet, [0.0, 0.0, 0.0]);
        assert!(empty.iter().all(|v| v.is_nan()), "{empty:?}");
    }

    /// F's arithmetic: Python's left-to-right sum, ∞ for an empty task, the two tasks'
    /// weights renormalised when one did not load, ∞ and NaN carried through.
    #[test]
    fn a_models_score_is_its_tasks_weighted_as_the_successor_weighs_them() {
        assert_eq!(task_loss_mean(&[]), f64::INFINITY);
        // (0.1 + 0.2) + 0.3 in that order, then / 3.
        assert_eq!(task_loss_mean(&[0.1, 0.2, 0.3]), (0.1 + 0.2 + 0.3) / 3.0);
        assert_ne!(task_loss_mean(&[0.1, 0.2, 0.3]), (0.3 + 0.2 + 0.1) / 3.0);
        assert_eq!(model_score(&[(0.5, 2.0), (0.5, 3.0)]), Some(2.5));
        assert_eq!(model_score(&[(0.5, 3.0)]), Some(3.0));
        assert_eq!(
            model_score(&[(0.5, f64::INFINITY), (0.5, 1.0)]),
            Some(f64::INFINITY)
        );
        assert!(model_score(&[(0.5, f64::NAN), (0.5, 1.0)]).is_some_and(f64::is_nan));
        assert_eq!(model_score(&[]), None);
        // A total within 1e-9 of 1 is left alone.
        let (a, b) = (0.3, 0.700_000_000_000_000_2);
        let total: f64 = a + b;
        assert_ne!(total, 1.0);
        let kept = 0.0 + 3.0 * a + 3.0 * b;
        assert_ne!(kept, 0.0 + 3.0 * (a / total) + 3.0 * (b / total));
        assert_eq!(model_score(&[(a, 3.0), (b, 3.0)]), Some(kept));
        assert!(is_close(0.1 + 0.2 + 0.7, 1.0) && !is_close(0.999, 1.0));
    }
}
