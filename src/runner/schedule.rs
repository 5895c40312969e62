//! The step's scheduler: in which order a step's evaluations go out, how a model's batch is
//! cut into shards when the models do not share the workers evenly, and how the shards come
//! back together. Arithmetic on the step's requests, a function of the step alone, apart from
//! [`dispatch`], the future that runs one unit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::edges::{
    EdgeError, EvalRequest, Evaluated, ModelEvaluator, TokenizedBatch, batch_digest,
};
use crate::eval::tokenize::Prepared;
use crate::machine::event::EvalOutcome;
use crate::machine::state::Participant;

/// A participant queued for evaluation with the bytes of its model's weights (the order of
/// dispatch) and what it carries (its directory, then its request).
pub type Queued<'a, T> = (u64, &'a Participant, T);

/// `queue` in dispatch order: the largest models first, equal sizes in uid order, so dispatch
/// is a function of the step.
pub fn by_size<T>(mut queue: Vec<Queued<'_, T>>) -> Vec<Queued<'_, T>> {
    queue.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.uid.cmp(&b.1.uid)));
    queue
}

/// A step's evaluations, planned: the units to dispatch, the longest work first, and how each
/// model's shards come back together.
pub struct Plan<'a> {
    /// Each model's shards as they come back, by uid.
    pub assembling: BTreeMap<u16, Assembly>,
    /// The units, longest first: (cost, participant, request).
    pub units: Vec<(u128, &'a Participant, EvalRequest)>,
}

impl<'a> Plan<'a> {
    /// Every request cut into `shards` (see [`shard_count`]), the units ordered by their cost
    /// (weight bytes × the shard's [`sample_cost`]), equal costs by uid and shard.
    pub fn of(requests: Vec<Queued<'a, EvalRequest>>, shards: usize) -> Self {
        let mut assembling = BTreeMap::new();
        let mut units = Vec::new();
        for (bytes, participant, request) in requests {
            let (parts, indices): (Vec<_>, Vec<_>) = split(&request, shards).into_iter().unzip();
            assembling.insert(participant.uid, Assembly::new(request.batch.len(), indices));
            for part in parts {
                let samples: u128 = part.batch.iter().map(sample_cost).sum();
                let cost = u128::from(bytes.max(1)) * samples.max(1);
                units.push((cost, participant, part));
            }
        }
        units.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(a.1.uid.cmp(&b.1.uid))
                .then(a.2.shard.cmp(&b.2.shard))
        });
        Self { assembling, units }
    }
}

/// One evaluation, as a future that owns what it needs, so several can be in flight.
pub async fn dispatch<E: ModelEvaluator>(
    evaluator: Arc<E>,
    participant: &Participant,
    request: EvalRequest,
) -> Dispatched<'_> {
    let started = Instant::now();
    let evaluated = evaluator.evaluate(&request).await;
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(
        "evaluated uid {} shard {} ({} samples) in {seconds:.3} s",
        participant.uid,
        request.shard,
        request.batch.len()
    );
    (
        participant,
        request.shard,
        request.batch_digest,
        evaluated,
        seconds,
    )
}

/// What an evaluation in flight gives back: whose, which shard, the digest
/// of what was sent, the result and the seconds it took.
pub type Dispatched<'a> = (
    &'a Participant,
    usize,
    String,
    Result<Evaluated, EdgeError>,
    f64,
);

/// How many shards each model's batch is cut into when `models` evaluations share `capacity`
/// workers: the count in 1..=`shards_max` that ends the step soonest for evaluations of equal
/// length (in model lengths, `ceil(models × k / capacity) / k`), the smallest such count since
/// each shard builds its own session. Three models on two workers: halves (one and a half
/// model lengths instead of two). Models that divide evenly among the workers are never cut.
pub fn shard_count(models: usize, capacity: usize, shards_max: usize) -> usize {
    if models == 0 || capacity <= 1 {
        return 1;
    }
    // (rounds, k) of the best so far; rounds / k compared by cross-multiplying.
    let mut best = (models.div_ceil(capacity), 1);
    for k in 2..=shards_max {
        let rounds = (models * k).div_ceil(capacity);
        if rounds * best.1 < best.0 * k {
            best = (rounds, k);
        }
    }
    best.1
}

/// `request` cut into at most `shards` requests of about equal cost ([`sample_cost`]), with the
/// samples each holds: the costliest sample first, each to the lightest shard so far (one long response can
/// outweigh every short one, so shards are not runs of consecutive samples). Within a shard the
/// samples keep the batch's order.
pub fn split(request: &EvalRequest, shards: usize) -> Vec<(EvalRequest, Vec<usize>)> {
    let samples = request.batch.len();
    let shards = shards.clamp(1, samples.max(1));
    if shards == 1 {
        return vec![(request.clone(), (0..samples).collect())];
    }
    let mut order: Vec<usize> = (0..samples).collect();
    // Costliest first; equal costs in batch order, so the cut is a function of the batch.
    order.sort_by_key(|&i| (std::cmp::Reverse(sample_cost(&request.batch[i])), i));
    let mut members: Vec<(u128, Vec<usize>)> = vec![(0, Vec::new()); shards];
    for index in order {
        let lightest = (0..shards).min_by_key(|&s| (members[s].0, s)).unwrap_or(0);
        members[lightest].0 += sample_cost(&request.batch[index]);
        members[lightest].1.push(index);
    }
    members
        .into_iter()
        .map(|(_, mut indices)| {
            indices.sort_unstable();
            indices
        })
        .filter(|indices| !indices.is_empty())
        .enumerate()
        .map(|(shard, indices)| {
            let batch: TokenizedBatch = indices
                .iter()
                .map(|&i| request.batch[i].clone())
                .collect::<Vec<_>>()
                .into();
            let part = EvalRequest {
                shard,
                batch_digest: batch_digest(&batch),
                batch,
                ..request.clone()
            };
            (part, indices)
        })
        .collect()
}

/// What a sample costs to evaluate, relatively: attention grows with the square of its tokens
/// and everything else with the tokens (measured on the demo: a 2,048-token sample costs as
/// much as about 300 of 70 tokens, not 30).
pub fn sample_cost(sample: &Prepared) -> u128 {
    let tokens = u128::try_from(sample.ids.len()).unwrap_or(u128::MAX);
    tokens.saturating_mul(tokens.saturating_add(256))
}

/// The shards of one model's evaluation as they come back.
pub struct Assembly {
    /// Samples in the step's batch.
    samples: usize,
    /// The samples of each shard, by shard.
    indices: Vec<Vec<usize>>,
    /// What came back, by shard, with the digest sent.
    pub parts: BTreeMap<usize, (Evaluated, String)>,
}

impl Assembly {
    /// A model of `samples` samples cut into shards holding `indices`.
    pub fn new(samples: usize, indices: Vec<Vec<usize>>) -> Self {
        Self {
            samples,
            indices,
            parts: BTreeMap::new(),
        }
    }

    /// Whether every shard came back.
    pub fn complete(&self) -> bool {
        (0..self.indices.len()).all(|shard| self.parts.contains_key(&shard))
    }

    /// The model's outcome: every shard's losses back in the batch's order, or the first
    /// shard's failure; and each shard's report.
    pub fn merged(self) -> (EvalOutcome, Vec<(Evaluated, String)>) {
        let mut losses = vec![f32::INFINITY; self.samples];
        let mut failed = None;
        for (shard, (evaluated, _)) in &self.parts {
            let indices = self.indices.get(*shard).map_or(&[][..], Vec::as_slice);
            match &evaluated.outcome {
                EvalOutcome::Losses(part) if part.0.len() == indices.len() => {
                    for (&index, &loss) in indices.iter().zip(&part.0) {
                        losses[index] = loss;
                    }
                }
                EvalOutcome::Losses(part) => {
                    failed.get_or_insert_with(|| {
                        format!(
                            "shard {shard}: {} losses for {} samples",
                            part.0.len(),
                            indices.len()
                        )
                    });
                }
                EvalOutcome::Failed(why) => {
                    failed.get_or_insert_with(|| why.clone());
                }
                EvalOutcome::TaskLosses(_) => {
                    failed.get_or_insert_with(|| {
                        format!("shard {shard}: task losses where sample losses were asked for")
                    });
                }
            }
        }
        let outcome = match failed {
            Some(why) => EvalOutcome::Failed(why),
            None => EvalOutcome::Losses(crate::machine::wire::LossVec(losses)),
        };
        (outcome, self.parts.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn request(lengths: &[usize]) -> EvalRequest {
        let batch: TokenizedBatch = lengths
            .iter()
            .map(|&n| Prepared {
                ids: vec![1; n],
                prompt_len: 1,
            })
            .collect::<Vec<_>>()
            .into();
        EvalRequest::of_dir(Path::new("/m"), batch)
    }

    #[test]
    fn models_are_cut_only_when_they_do_not_share_the_workers_evenly() {
        assert_eq!(shard_count(3, 2, 2), 2);
        assert_eq!(shard_count(2, 2, 2), 1);
        assert_eq!(shard_count(4, 2, 4), 1);
        assert_eq!(shard_count(10, 8, 2), 2);
        assert_eq!(shard_count(5, 1, 4), 1);
        assert_eq!(shard_count(0, 4, 4), 1);
        // One model and four idle workers: four quarters.
        assert_eq!(shard_count(1, 4, 4), 4);
    }

    #[test]
    fn a_long_sample_gets_a_shard_of_its_own_and_the_merge_puts_every_loss_back() {
        let request = request(&[70, 2048, 70, 70, 70]);
        let parts = split(&request, 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, vec![1]);
        assert_eq!(parts[1].1, vec![0, 2, 3, 4]);
        let indices: Vec<Vec<usize>> = parts.iter().map(|(_, i)| i.clone()).collect();
        let mut assembly = Assembly::new(5, indices);
        for (part, indices) in &parts {
            let losses = indices
                .iter()
                .map(|&i| f32::from(u8::try_from(i).unwrap()))
                .collect();
            let evaluated = Evaluated::new(
                EvalOutcome::Losses(crate::machine::wire::LossVec(losses)),
                crate::runner::identity::this_worker("cpu"),
            );
            assembly
                .parts
                .insert(part.shard, (evaluated, part.batch_digest.clone()));
        }
        assert!(assembly.complete());
        let (outcome, reports) = assembly.merged();
        assert_eq!(
            outcome,
            EvalOutcome::Losses(crate::machine::wire::LossVec(vec![0.0, 1.0, 2.0, 3.0, 4.0]))
        );
        assert_eq!(reports.len(), 2);
    }

    #[test]
    fn a_failed_shard_fails_the_model() {
        let request = request(&[5, 5, 5, 5]);
        let parts = split(&request, 2);
        let indices: Vec<Vec<usize>> = parts.iter().map(|(_, i)| i.clone()).collect();
        let mut assembly = Assembly::new(4, indices);
        let ok = Evaluated::new(
            EvalOutcome::Losses(crate::machine::wire::LossVec(vec![1.0, 1.0])),
            crate::runner::identity::this_worker("cpu"),
        );
        let failed = Evaluated::new(
            EvalOutcome::Failed("timeout".into()),
            crate::runner::identity::this_worker("cpu"),
        );
        assembly.parts.insert(0, (ok, String::new()));
        assembly.parts.insert(1, (failed, String::new()));
        assert_eq!(assembly.merged().0, EvalOutcome::Failed("timeout".into()));
    }

    /// Postmortem (1eefe02): the merge did not check that every shard came back, so a model
    /// whose second shard was lost would have been journaled with infinite losses for it.
    #[test]
    fn an_assembly_missing_a_shard_is_not_complete() {
        let request = request(&[5, 5, 5, 5]);
        let parts = split(&request, 2);
        let indices: Vec<Vec<usize>> = parts.iter().map(|(_, i)| i.clone()).collect();
        let mut assembly = Assembly::new(4, indices);
        let ok = Evaluated::new(
            EvalOutcome::Losses(crate::machine::wire::LossVec(vec![1.0, 1.0])),
            crate::runner::identity::this_worker("cpu"),
        );
        assembly.parts.insert(1, (ok, String::new()));
        assert!(!assembly.complete());
    }
}
