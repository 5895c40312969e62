//! Scoring one step of 256 uids × 400 samples: our `compute_wins` against a direct port of N's
//! nested loops (`compute_wins_reference`, `iswin` per sample per ordered pair) in the same
//! process, plus the whole step (wins, softmax, moving average).
//!
//! `cargo bench --bench scoring`. (N's own Python takes 6.1 s for this on the project machine,
//! as measured when the issue was written; the in-process baseline is what this bench reports.)

// Measurement code: counts and sizes become floats for reporting.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::hint::black_box;
use std::time::Instant;

use validator::machine::params::EpsilonRule;
use validator::machine::scoring::{Contestant, compute_wins, compute_wins_reference};
use validator::machine::weights::{moving_average, step_weights_softmax};
use validator::synth::SplitMix64;

const UIDS: u16 = 256;
const SAMPLES: usize = 400;

fn median_seconds(runs: usize, mut work: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let mut random = SplitMix64::new(11);
    let losses: Vec<Vec<f64>> = (0..UIDS)
        .map(|_| {
            (0..SAMPLES)
                .map(|_| f64::from(2.0 + random.next_unit_f32()))
                .collect()
        })
        .collect();
    let blocks: Vec<Option<u64>> = (0..UIDS)
        .map(|uid| {
            if uid % 17 == 0 {
                None
            } else {
                Some(random.next_u64() % 10_000)
            }
        })
        .collect();
    let contestants: Vec<Contestant<'_>> = (0..UIDS)
        .map(|uid| Contestant {
            uid,
            block_commit: blocks[usize::from(uid)],
            losses: &losses[usize::from(uid)],
        })
        .collect();
    let epsilon = EpsilonRule::Fixed(0.01);

    let fast = compute_wins(&contestants, &epsilon, 0);
    let reference = compute_wins_reference(&contestants, &epsilon, 0);
    assert_eq!(fast, reference, "the fast and reference scorers disagree");

    let fast_s = median_seconds(51, || {
        black_box(compute_wins(black_box(&contestants), &epsilon, 0));
    });
    let reference_s = median_seconds(5, || {
        black_box(compute_wins_reference(black_box(&contestants), &epsilon, 0));
    });
    let uids: Vec<u16> = (0..UIDS).collect();
    let step_s = median_seconds(51, || {
        let tallies = compute_wins(black_box(&contestants), &epsilon, 0);
        let rates: Vec<f64> = tallies.iter().map(|t| t.win_rate).collect();
        let new = step_weights_softmax(&uids, &rates, 256, 0.08, 1.2);
        let mut weights = vec![0.0; 256];
        moving_average(&mut weights, &new, 0.9);
        black_box(weights);
    });
    println!(
        "256 uids × 400 samples ({} comparisons per direction)",
        256 * 255 / 2 * 400
    );
    println!(
        "  N-style nested loops (in-process baseline): {:8.3} ms",
        reference_s * 1e3
    );
    println!(
        "  compute_wins:                               {:8.3} ms  ({:.1}× faster)",
        fast_s * 1e3,
        reference_s / fast_s
    );
    println!(
        "  whole step (wins + softmax + average):      {:8.3} ms  ({:.1}× faster than the baseline's wins alone)",
        step_s * 1e3,
        reference_s / step_s
    );
}
