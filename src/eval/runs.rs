//! Samples packed into runs: one `Session::run` scores several right-padded samples at once.
//!
//! Each sample is padded to its own *bucket*, its length rounded up to a multiple of the
//! device's [`padded_length_multiple`] (at most the graph's positions), and only samples of one
//! bucket share a run. The padded length is therefore a function of the sample alone, never of its
//! neighbours, of the token budget or of how a batch was sharded among workers: every operator
//! of the graph treats the rows of a run independently, so a sample's loss is the same bit for
//! bit whichever run it is in (tested), and within 1e-5 of the sample run unpadded on its own.
//!
//! Runs go shortest bucket first; within a bucket, samples keep their batch order. A run holds
//! as many samples as fit `tokens_per_run` (padding counted), and at least one.

/// Padded lengths on a GPU are multiples of this many tokens: small enough that padding stays
/// a few percent of N's samples (hundreds of tokens), large enough that a batch has few
/// buckets and its runs fill the card.
pub const PADDED_LENGTH_MULTIPLE_CUDA: usize = 64;

/// Padded lengths on CPU are multiples of this many tokens. A CPU gains nothing from wide runs
/// (its matrix kernels are at their rate on one sample), and every padded token costs as much
/// as a real one: at 64, `benches/eval_cpu.py`'s samples (260 to 810 tokens) carried 6% of
/// padding, at 8 0.7%.
pub const PADDED_LENGTH_MULTIPLE_CPU: usize = 8;

/// The multiple padded lengths are rounded to on `device`.
pub fn padded_length_multiple(device: super::runtime::Device) -> usize {
    match device {
        super::runtime::Device::Cpu => PADDED_LENGTH_MULTIPLE_CPU,
        super::runtime::Device::Cuda { .. } => PADDED_LENGTH_MULTIPLE_CUDA,
    }
}

/// Tokens per run on CPU unless the operator says otherwise. A CPU's matrix kernels are at
/// their rate well before this, and more only adds activations (at a 128k vocabulary, 2 MiB of
/// logits per scored token): measured with benches/eval_cpu.py's models on 2 cores, 512 was
/// 1.19× as fast as 4096 at 0.64× the peak RSS on the 30M profile, 1.08× at 0.75× on the 128k
/// one (256 and 1024 within noise of 512).
pub const DEFAULT_TOKENS_PER_RUN_CPU: usize = 512;

/// Tokens per run on a GPU unless the operator says otherwise: enough to keep the matrix units
/// busy on a 1B model, a few GiB of activations at most for the models a competition takes.
pub const DEFAULT_TOKENS_PER_RUN_CUDA: usize = 8192;

/// The default token budget of a run on `device`.
pub fn default_tokens_per_run(device: super::runtime::Device) -> usize {
    match device {
        super::runtime::Device::Cpu => DEFAULT_TOKENS_PER_RUN_CPU,
        super::runtime::Device::Cuda { .. } => DEFAULT_TOKENS_PER_RUN_CUDA,
    }
}

/// One `Session::run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Every member's padded length.
    pub length: usize,
    /// Indices into the planned lengths, ascending.
    pub members: Vec<usize>,
}

/// The padded length of a sample of `length` tokens in a graph of `max_positions`, rounded up
/// to a multiple of `multiple`.
pub fn padded_length(length: usize, max_positions: usize, multiple: usize) -> usize {
    let multiple = multiple.max(1);
    length
        .div_ceil(multiple)
        .saturating_mul(multiple)
        .min(max_positions)
        .max(length)
}

/// The runs for samples of `lengths` tokens, padded to multiples of `multiple`: every index
/// exactly once.
pub fn plan(
    lengths: &[usize],
    tokens_per_run: usize,
    max_positions: usize,
    multiple: usize,
) -> Vec<Run> {
    let mut order: Vec<(usize, usize)> = lengths
        .iter()
        .enumerate()
        .map(|(index, &length)| (padded_length(length, max_positions, multiple), index))
        .collect();
    // By bucket, then by batch position: the tie-break that keeps plans reproducible.
    order.sort_unstable();
    let mut runs: Vec<Run> = Vec::new();
    for (length, index) in order {
        let per_run = (tokens_per_run / length.max(1)).max(1);
        match runs.last_mut() {
            Some(run) if run.length == length && run.members.len() < per_run => {
                run.members.push(index);
            }
            _ => runs.push(Run {
                length,
                members: vec![index],
            }),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn samples_of_one_bucket_share_runs_up_to_the_budget() {
        let runs = plan(&[100, 10, 120, 64, 65, 128], 256, 2048, 64);
        assert_eq!(
            runs,
            vec![
                Run {
                    length: 64,
                    members: vec![1, 3],
                },
                Run {
                    length: 128,
                    members: vec![0, 2],
                },
                Run {
                    length: 128,
                    members: vec![4, 5],
                },
            ]
        );
    }

    #[test]
    fn the_longest_positions_cap_the_padding() {
        assert_eq!(padded_length(2040, 2048, 64), 2048);
        assert_eq!(padded_length(1000, 1000, 64), 1000);
        assert_eq!(padded_length(999, 1000, 64), 1000);
        assert_eq!(padded_length(1, 1000, 64), 64);
        assert_eq!(padded_length(1, 1000, 8), 8);
        assert_eq!(padded_length(17, 1000, 8), 24);
        assert_eq!(padded_length(17, 1000, 0), 17);
    }

    proptest! {
        #[test]
        fn every_sample_is_in_one_run_that_fits_it(
            lengths in proptest::collection::vec(1usize..3000, 0..60),
            tokens_per_run in 1usize..20_000,
            multiple in prop_oneof![Just(PADDED_LENGTH_MULTIPLE_CPU), Just(PADDED_LENGTH_MULTIPLE_CUDA), 1usize..200],
        ) {
            let max_positions = 3000;
            let runs = plan(&lengths, tokens_per_run, max_positions, multiple);
            let mut seen: Vec<usize> = runs.iter().flat_map(|r| r.members.clone()).collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for run in &runs {
                prop_assert!(!run.members.is_empty());
                prop_assert!(run.members.len() == 1 || run.members.len() * run.length <= tokens_per_run);
                for &member in &run.members {
                    // Each sample's padded length is its own, whatever else is in the batch.
                    prop_assert_eq!(run.length, padded_length(lengths[member], max_positions, multiple));
                    prop_assert!(run.length < lengths[member] + multiple || run.length == lengths[member]);
                    prop_assert!(run.length >= lengths[member]);
                }
            }
        }
    }
}
