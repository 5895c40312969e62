//! Head-to-head scoring: N's `iswin` and `compute_wins`, exactly, and fast.
//!
//! Losses arrive as f64 (journaled f32 losses are widened first, as Python floats hold them),
//! so the epsilon product is rounded exactly as Python rounds it. A missing commit block is
//! `None` and means +infinity, as N's `defaultdict(lambda: math.inf)`.

use super::numbers::exact_f64;
use super::params::EpsilonRule;

/// One model in a head-to-head round.
#[derive(Debug, Clone, Copy)]
pub struct Contestant<'a> {
    /// The uid.
    pub uid: u16,
    /// Commit block; `None` is +infinity (no model, a duplicate, another competition).
    pub block_commit: Option<u64>,
    /// Per-sample losses; a uid with none plays no matches.
    pub losses: &'a [f64],
}

/// A contestant's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    /// Samples won against all others.
    pub wins: u64,
    /// Samples compared against all others.
    pub matches: u64,
    /// `wins / matches`, or 0 without matches (N's convention).
    pub win_rate: f64,
}

/// Whether block `a` is strictly earlier than block `b`, with `None` as +infinity.
pub fn block_earlier(a: Option<u64>, b: Option<u64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a < b,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The epsilon a model committed at `block_commit` enjoys against later ones.
pub(crate) fn epsilon_for(
    rule: &EpsilonRule,
    block_current: u64,
    block_commit: Option<u64>,
) -> f64 {
    match block_commit {
        Some(block) => rule.epsilon(block_current, block),
        // An infinite block is never earlier than anything, so its epsilon is never used.
        None => 0.0,
    }
}

/// N's `iswin`: the earlier commit's loss is multiplied by `1 - epsilon`, then the strictly
/// smaller loss wins. Ties lose both ways; NaN loses both ways.
pub fn iswin(
    loss_i: f64,
    loss_j: f64,
    block_i: Option<u64>,
    block_j: Option<u64>,
    epsilon: &EpsilonRule,
    block_current: u64,
) -> bool {
    let loss_i = if block_earlier(block_i, block_j) {
        (1.0 - epsilon_for(epsilon, block_current, block_i)) * loss_i
    } else {
        loss_i
    };
    let loss_j = if block_earlier(block_j, block_i) {
        (1.0 - epsilon_for(epsilon, block_current, block_j)) * loss_j
    } else {
        loss_j
    };
    loss_i < loss_j
}

/// N's `compute_wins`, one pass per unordered pair.
///
/// Each pair compares the first `min(len_i, len_j)` samples. The result for each contestant
/// is a sum over pairs, so it does not depend on the order of `contestants`; the output is
/// aligned with the input.
pub fn compute_wins(
    contestants: &[Contestant<'_>],
    epsilon: &EpsilonRule,
    block_current: u64,
) -> Vec<Tally> {
    // The discounted losses depend only on the contestant (the epsilon is a function of its
    // own commit block), so each is computed once instead of once per pair and sample.
    let discounted: Vec<Vec<f64>> = contestants
        .iter()
        .map(|c| {
            let factor = 1.0 - epsilon_for(epsilon, block_current, c.block_commit);
            c.losses.iter().map(|loss| factor * loss).collect()
        })
        .collect();
    let count = contestants.len();
    let mut wins = vec![0u64; count];
    let mut matches = vec![0u64; count];
    for (i, (a, a_discounted)) in contestants.iter().zip(&discounted).enumerate() {
        let later = contestants
            .iter()
            .zip(&discounted)
            .enumerate()
            .skip(i.saturating_add(1));
        for (j, (b, b_discounted)) in later {
            let (xs, ys): (&[f64], &[f64]) = if block_earlier(a.block_commit, b.block_commit) {
                (a_discounted, b.losses)
            } else if block_earlier(b.block_commit, a.block_commit) {
                (a.losses, b_discounted)
            } else {
                (a.losses, b.losses)
            };
            let length = xs.len().min(ys.len());
            let (a_wins, b_wins) = count_strictly_less(xs, ys);
            let length = u64::try_from(length).unwrap_or(u64::MAX);
            add(&mut wins, i, a_wins);
            add(&mut wins, j, b_wins);
            add(&mut matches, i, length);
            add(&mut matches, j, length);
        }
    }
    wins.into_iter()
        .zip(matches)
        .map(|(wins, matches)| Tally {
            wins,
            matches,
            win_rate: if matches > 0 {
                exact_f64(wins) / exact_f64(matches)
            } else {
                0.0
            },
        })
        .collect()
}

fn add(counts: &mut [u64], index: usize, amount: u64) {
    if let Some(count) = counts.get_mut(index) {
        *count = count.saturating_add(amount);
    }
}

/// Counts `x < y` and `y < x` over the common prefix of two slices.
///
/// The loop runs over fixed-size arrays with per-lane counters so the compiler turns it into
/// vector compares; this loop is nearly the whole cost of scoring.
fn count_strictly_less(xs: &[f64], ys: &[f64]) -> (u64, u64) {
    const LANES: usize = 8;
    // Per-lane u32 counters cannot overflow within a block of 2^31 chunks.
    const CHUNKS_PER_BLOCK: usize = 1 << 31;
    let length = xs.len().min(ys.len());
    let (xs, ys) = (
        xs.get(..length).unwrap_or(&[]),
        ys.get(..length).unwrap_or(&[]),
    );
    let mut total_x = 0u64;
    let mut total_y = 0u64;
    let x_chunks = xs.chunks_exact(LANES);
    let y_chunks = ys.chunks_exact(LANES);
    let (x_rest, y_rest) = (x_chunks.remainder(), y_chunks.remainder());
    let pairs = x_chunks.zip(y_chunks).filter_map(|(x, y)| {
        Some((
            <&[f64; LANES]>::try_from(x).ok()?,
            <&[f64; LANES]>::try_from(y).ok()?,
        ))
    });
    let mut pairs = pairs.peekable();
    while pairs.peek().is_some() {
        let mut x_less = [0u32; LANES];
        let mut y_less = [0u32; LANES];
        for (x, y) in pairs.by_ref().take(CHUNKS_PER_BLOCK) {
            for (((x, y), xl), yl) in x.iter().zip(y).zip(&mut x_less).zip(&mut y_less) {
                // At most 2^31 increments per block: wrapping never happens, and it keeps
                // the loop a plain vector add.
                *xl = xl.wrapping_add(u32::from(x < y));
                *yl = yl.wrapping_add(u32::from(y < x));
            }
        }
        total_x = x_less
            .iter()
            .fold(total_x, |total, v| total.saturating_add(u64::from(*v)));
        total_y = y_less
            .iter()
            .fold(total_y, |total, v| total.saturating_add(u64::from(*v)));
    }
    for (x, y) in x_rest.iter().zip(y_rest) {
        total_x = total_x.saturating_add(u64::from(x < y));
        total_y = total_y.saturating_add(u64::from(y < x));
    }
    (total_x, total_y)
}

/// N's `compute_wins` written as N wrote it: every ordered pair, `iswin` per sample. The
/// property tests and the benchmark compare [`compute_wins`] against it.
pub fn compute_wins_reference(
    contestants: &[Contestant<'_>],
    epsilon: &EpsilonRule,
    block_current: u64,
) -> Vec<Tally> {
    contestants
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut wins = 0u64;
            let mut matches = 0u64;
            for (j, b) in contestants.iter().enumerate() {
                if i == j {
                    continue;
                }
                for (loss_i, loss_j) in a.losses.iter().zip(b.losses) {
                    let won = iswin(
                        *loss_i,
                        *loss_j,
                        a.block_commit,
                        b.block_commit,
                        epsilon,
                        block_current,
                    );
                    wins = wins.saturating_add(u64::from(won));
                    matches = matches.saturating_add(1);
                }
            }
            Tally {
                wins,
                matches,
                win_rate: if matches > 0 {
                    exact_f64(wins) / exact_f64(matches)
                } else {
                    0.0
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const N_EPSILON: EpsilonRule = EpsilonRule::Fixed(0.01);

    #[test]
    fn earlier_block_wins_within_epsilon() {
        // 1.0 * 0.99 = 0.99 < 0.995: the earlier model wins although its loss is higher.
        assert!(iswin(1.0, 0.995, Some(10), Some(20), &N_EPSILON, 0));
        assert!(!iswin(0.995, 1.0, Some(20), Some(10), &N_EPSILON, 0));
        // Beyond epsilon the later model wins.
        assert!(iswin(0.98, 1.0, Some(20), Some(10), &N_EPSILON, 0));
    }

    #[test]
    fn ties_and_nan_lose_both_ways() {
        assert!(!iswin(1.0, 1.0, Some(5), Some(5), &N_EPSILON, 0));
        assert!(!iswin(f64::NAN, 1.0, Some(5), Some(6), &N_EPSILON, 0));
        assert!(!iswin(1.0, f64::NAN, Some(5), Some(6), &N_EPSILON, 0));
        assert!(!iswin(
            f64::INFINITY,
            f64::INFINITY,
            None,
            None,
            &N_EPSILON,
            0
        ));
    }

    #[test]
    fn unknown_block_is_infinitely_late() {
        assert!(block_earlier(Some(u64::MAX), None));
        assert!(!block_earlier(None, None));
        assert!(iswin(1.0, 0.995, Some(1), None, &N_EPSILON, 0));
    }

    #[test]
    fn hand_computed_round() {
        // uid 3 (block 1000): [2.01, 1.98, inf]; uid 7 (block 1200): [2.0, 1.99, 2.1];
        // uid 9: no losses. 3 vs 7: 1.9899 < 2.0 win, 1.9602 < 1.99 win, inf loses; 7 wins
        // none against 3. uid 9 plays nothing.
        let losses_3 = [2.01, 1.98, f64::INFINITY];
        let losses_7 = [2.0, 1.99, 2.1];
        let round = [
            Contestant {
                uid: 3,
                block_commit: Some(1000),
                losses: &losses_3,
            },
            Contestant {
                uid: 7,
                block_commit: Some(1200),
                losses: &losses_7,
            },
            Contestant {
                uid: 9,
                block_commit: None,
                losses: &[],
            },
        ];
        let tallies = compute_wins(&round, &N_EPSILON, 0);
        assert_eq!((tallies[0].wins, tallies[0].matches), (2, 3));
        assert_eq!((tallies[1].wins, tallies[1].matches), (1, 3));
        assert_eq!((tallies[2].wins, tallies[2].matches), (0, 0));
        assert_eq!(tallies[0].win_rate, 2.0 / 3.0);
        assert_eq!(tallies, compute_wins_reference(&round, &N_EPSILON, 0));
    }

    #[test]
    fn chunked_counting_matches_a_plain_loop() {
        let xs: Vec<f64> = (0..37).map(|i| f64::from(i % 5)).collect();
        let ys: Vec<f64> = (0..41).map(|i| f64::from(i % 3)).collect();
        let plain = xs.iter().zip(&ys).fold((0, 0), |(a, b), (x, y)| {
            (a + u64::from(x < y), b + u64::from(y < x))
        });
        assert_eq!(count_strictly_less(&xs, &ys), plain);
    }
}
