//! From win rates to the weight vector set on chain: N's softmax and moving average, the
//! successor's winner-takes-all trackers, and bittensor's u16 encoding.
//!
//! Every sum runs in ascending uid order and `exp` is `libm`'s, so the vectors are identical
//! on every machine.

/// `torch.nan_to_num(x, 0.0)`: NaN becomes 0, ±infinity the largest finite value.
pub fn nan_to_num(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else if value == f64::INFINITY {
        f64::MAX
    } else if value == f64::NEG_INFINITY {
        f64::MIN
    } else {
        value
    }
}

/// Sum in index order.
pub fn sum_ordered(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |total, value| total + value)
}

/// `softmax(values / temperature)`, computed as torch does: shift by the maximum, exponentiate,
/// divide by the sum.
pub fn softmax(values: &[f64], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = values.iter().map(|value| value / temperature).collect();
    let maximum = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exponentials: Vec<f64> = scaled
        .iter()
        .map(|value| libm::exp(value - maximum))
        .collect();
    let total = sum_ordered(&exponentials);
    exponentials.iter().map(|value| value / total).collect()
}

/// Truncates or zero-pads `weights` to `size` entries (N's resize when the metagraph changes).
pub fn resize(weights: &mut Vec<f64>, size: usize) {
    weights.resize(size, 0.0);
}

/// Places `values[i]` at index `uids[i]` of a zero vector of `size` entries. Uids outside the
/// vector are skipped (the step plan never contains them).
pub fn scatter(uids: &[u16], values: &[f64], size: usize) -> Vec<f64> {
    let mut vector = vec![0.0; size];
    for (uid, value) in uids.iter().zip(values) {
        if let Some(slot) = vector.get_mut(usize::from(*uid)) {
            *slot = *value;
        }
    }
    vector
}

/// N's step vector: softmax of the win rates over the participants, scattered into a
/// metagraph-sized vector, then scaled so it sums to `scale` (`n_competitions ×
/// reward_percentage`).
pub fn step_weights_softmax(
    uids: &[u16],
    win_rates: &[f64],
    size: usize,
    temperature: f64,
    scale: f64,
) -> Vec<f64> {
    let shares = softmax(win_rates, temperature);
    let mut vector = scatter(uids, &shares, size);
    let factor = scale / sum_ordered(&vector);
    for value in &mut vector {
        *value *= factor;
    }
    vector
}

/// N's moving average: `w = nan_to_num(alpha·w + (1 − alpha)·new)`, after resizing `w` to the
/// length of `new`.
pub fn moving_average(weights: &mut Vec<f64>, new: &[f64], alpha: f64) {
    resize(weights, new.len());
    for (old, new) in weights.iter_mut().zip(new) {
        *old = nan_to_num(alpha * *old + (1.0 - alpha) * new);
    }
}

/// The successor's step vector: 1 for every participant whose win rate equals the best, 0
/// elsewhere (before normalisation).
pub fn step_weights_winners(uids: &[u16], win_rates: &[f64], size: usize) -> Vec<f64> {
    let best = win_rates.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let indicator: Vec<f64> = win_rates
        .iter()
        .map(|rate| if *rate == best { 1.0 } else { 0.0 })
        .collect();
    scatter(uids, &indicator, size)
}

/// Divides by the sum in place, then `nan_to_num` (a zero sum gives zeros, as in torch).
pub fn normalize(vector: &mut [f64]) {
    let total = sum_ordered(vector);
    for value in vector.iter_mut() {
        *value = nan_to_num(*value / total);
    }
}

/// The successor's `CompetitionTracker.record_competition_weights`: normalise the step vector,
/// then the first record is kept as is and later ones are averaged with `alpha` on the old.
pub fn record_tracker(tracker: &mut Option<Vec<f64>>, mut new: Vec<f64>, alpha: f64) {
    normalize(&mut new);
    match tracker {
        None => *tracker = Some(new),
        Some(old) => {
            resize(old, new.len());
            for (old, new) in old.iter_mut().zip(&new) {
                *old = alpha * *old + (1.0 - alpha) * new;
            }
        }
    }
}

/// The successor's `get_subnet_weights` with a minimum weight threshold.
///
/// Like the successor, each stored tracker is renormalised in place first (it drifts from a
/// sum of 1 only by rounding). Unlike it, a tracker whose sum is zero is left alone instead of
/// being turned into NaN for good. Shares under `threshold` are then dropped, the rest
/// renormalised, scaled by the competition's reward share and summed; the total is normalised.
pub fn subnet_weights(
    trackers: &mut [(&mut Vec<f64>, f64)],
    size: usize,
    threshold: f64,
) -> Vec<f64> {
    let mut subnet = vec![0.0; size];
    for (tracker, reward_share) in trackers.iter_mut() {
        resize(tracker, size);
        let mut share = tracker.clone();
        if threshold > 0.0 {
            let total = sum_ordered(tracker);
            if total != 0.0 && total.is_finite() {
                for value in tracker.iter_mut() {
                    *value /= total;
                }
                share.clone_from(tracker);
            }
            for value in &mut share {
                *value = nan_to_num(*value);
                if *value < threshold {
                    *value = 0.0;
                }
            }
            normalize(&mut share);
        }
        for (total, value) in subnet.iter_mut().zip(&share) {
            *total += value * *reward_share;
        }
    }
    normalize(&mut subnet);
    subnet
}

/// Why weights cannot be put on chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainWeightsError {
    /// A weight is negative or NaN (bittensor raises on negatives).
    #[error("weight of uid {uid} is {value}, not a non-negative number")]
    Negative {
        /// The uid.
        uid: usize,
        /// Its weight.
        value: f64,
    },
    /// The vector has more entries than there are u16 uids.
    #[error("{0} weights is more than the 65536 uids a subnet can hold")]
    TooMany(usize),
}

/// The largest u16 weight.
pub const U16_MAX: f64 = 65535.0;

/// bittensor's `convert_weights_and_uids_for_emit` over uids `0..n`: divide by the largest
/// weight, multiply by 65535, round half to even (Python's `round`), drop zeros. An all-zero
/// vector gives nothing to set.
pub fn to_chain_weights(weights: &[f64]) -> Result<(Vec<u16>, Vec<u16>), ChainWeightsError> {
    if weights.len() > 65536 {
        return Err(ChainWeightsError::TooMany(weights.len()));
    }
    if let Some((uid, value)) = weights
        .iter()
        .enumerate()
        .find(|(_, value)| value.is_nan() || **value < 0.0)
    {
        return Err(ChainWeightsError::Negative { uid, value: *value });
    }
    if sum_ordered(weights) == 0.0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let maximum = weights.iter().copied().fold(0.0, f64::max);
    let mut uids = Vec::new();
    let mut values = Vec::new();
    for (uid, weight) in weights.iter().enumerate() {
        let scaled = (weight / maximum * U16_MAX).round_ties_even();
        let value = u16_from_rounded(scaled);
        if value != 0 {
            uids.push(u16::try_from(uid).map_err(|_| ChainWeightsError::TooMany(weights.len()))?);
            values.push(value);
        }
    }
    Ok((uids, values))
}

/// Converts an integral value in `[0, 65535]` to u16 (others clamp; infinities cannot occur
/// after division by the maximum, and a `+inf` maximum yields NaN, which maps to 0).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn u16_from_rounded(value: f64) -> u16 {
    // `as` saturates and maps NaN to 0: exactly the clamp wanted here.
    value.clamp(0.0, U16_MAX) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let shares = softmax(&[0.5, 0.25, 0.0], 0.08);
        assert!((sum_ordered(&shares) - 1.0).abs() < 1e-15);
        assert!(shares[0] > shares[1] && shares[1] > shares[2]);
    }

    #[test]
    fn step_vector_sums_to_the_scale() {
        let vector = step_weights_softmax(&[1, 4], &[0.75, 0.25], 6, 0.08, 1.2);
        assert_eq!(vector.len(), 6);
        assert!((sum_ordered(&vector) - 1.2).abs() < 1e-12);
        assert_eq!(vector[0], 0.0);
    }

    #[test]
    fn moving_average_resizes_like_n() {
        let mut weights = vec![1.0, 1.0, 1.0];
        moving_average(&mut weights, &[0.0, 1.0], 0.9);
        assert_eq!(weights, vec![0.9, 0.9 + 0.1 * 1.0]);
        let mut weights = vec![1.0];
        moving_average(&mut weights, &[0.0, 1.0, f64::NAN], 0.9);
        assert_eq!(weights[2], 0.0);
    }

    #[test]
    fn winners_share_equally() {
        let mut tracker = None;
        record_tracker(
            &mut tracker,
            step_weights_winners(&[0, 2, 3], &[0.5, 0.5, 0.1], 4),
            0.9,
        );
        assert_eq!(tracker.as_deref(), Some(&[0.5, 0.0, 0.5, 0.0][..]));
        record_tracker(
            &mut tracker,
            step_weights_winners(&[0, 2], &[0.1, 0.9], 4),
            0.9,
        );
        let tracker = tracker.unwrap();
        assert!((tracker[0] - 0.45).abs() < 1e-15);
        assert!((tracker[2] - 0.55).abs() < 1e-15);
    }

    #[test]
    fn threshold_drops_small_shares() {
        let mut a = vec![0.9, 0.1, 0.0];
        let mut b = vec![0.0, 0.0, 1.0];
        let subnet = subnet_weights(&mut [(&mut a, 0.5), (&mut b, 0.5)], 3, 0.18);
        assert_eq!(subnet, vec![0.5, 0.0, 0.5]);
    }

    #[test]
    fn chain_weights_follow_bittensor() {
        let (uids, values) = to_chain_weights(&[0.0, 0.5, 1.0, 0.25]).unwrap();
        assert_eq!(uids, vec![1, 2, 3]);
        // 0.5 * 65535 = 32767.5 rounds half to even: 32768.
        assert_eq!(values, vec![32768, 65535, 16384]);
        assert_eq!(to_chain_weights(&[0.0, 0.0]).unwrap(), (vec![], vec![]));
        assert!(to_chain_weights(&[0.1, -0.1]).is_err());
        assert!(to_chain_weights(&[0.1, f64::NAN]).is_err());
    }
}
