//! A successor step's data and losses: every task of the competition loaded from
//! `datasets-server` as F's loaders load it ([`crate::data::reasoning`]), seeded by the sync
//! block's hash, and journaled as one `TasksFetched` before any model sees it; each model's
//! per-sample losses over the tasks' samples, in order, split back into one list per task
//! that loaded (the fold's `TaskLosses`).
//!
//! The seed is F's: `sha256` of the sync block's hash string. A recorded chain has no hashes,
//! so its runs draw with [`stand_in_block_hash`] instead, a value every replay of the same
//! recording gets again (F would go on with its generator unseeded).

use std::future::Future;
use std::time::Duration;

use crate::data::DataError;
use crate::data::datasets_server::DatasetsServer;
use crate::data::reasoning::{Page, TaskData, TaskOutcome};
use crate::machine::event::{EvalOutcome, Provenance, TaskFetchOutcome, TaskFetched, TasksFetched};
use crate::machine::params::{EvalMethod, EvalTask};
use crate::machine::wire::{LossVec, Samples};
use crate::seed::Seed;

/// What a step's loading came to.
#[derive(Debug, Clone, PartialEq)]
pub enum TasksLoad {
    /// Every task loaded or dropped: the step's data, to journal.
    Fetched(TasksFetched),
    /// A task's failure ends the step before any model is evaluated, as F's re-raise does.
    Aborted(String),
}

impl TasksLoad {
    /// Whether every task was dropped (F abandons such a step: "all datasets failed to load").
    pub fn all_dropped(tasks: &TasksFetched) -> bool {
        tasks
            .tasks
            .iter()
            .all(|t| matches!(t.outcome, TaskFetchOutcome::Dropped(_)))
    }
}

/// The hash a recording's step is seeded with in place of the sync block's: `0x` and the
/// sync block's number as 64 hex digits.
pub fn stand_in_block_hash(sync_block: u64) -> String {
    format!("0x{sync_block:064x}")
}

/// How `task` is loaded, or why this validator cannot evaluate it (a task that generates
/// text, or a dataset it has no loader for).
pub fn task_data(task: &EvalTask) -> Result<TaskData, String> {
    if task.method.needs_generation() {
        return Err(format!(
            "task {} is scored by generated answers ({:?}), which this validator does not \
             evaluate yet",
            task.name, task.method
        ));
    }
    match (task.method, task.dataset.as_str()) {
        (EvalMethod::ReferenceLoss, "SYNTHETIC_1_SFT") => Ok(TaskData::synthetic_1_sft()),
        (EvalMethod::ReferenceLoss, "CODEFORCES_COTS") => Ok(TaskData::codeforces_cots()),
        (method, dataset) => Err(format!(
            "task {} ({method:?} on {dataset}) has no data loader in this validator",
            task.name
        )),
    }
}

/// A page as the provenance names it.
fn page_reference(dataset: &str, page: &Page, rows_per_page: u32) -> String {
    format!(
        "{dataset}:{}/{}@{}+{rows_per_page}",
        page.config, page.split, page.offset
    )
}

/// Loads every task of a step in the competition's order, each with its own generator seeded
/// by `seed` (F re-seeds in each loader), waiting through `wait`; the step's models will be
/// tokenised with the tokenizer whose files hash to `tokenizer_hash`.
pub async fn load_tasks<W, Fut>(
    server: &DatasetsServer,
    tasks: &[EvalTask],
    step: u64,
    seed: &[u8; 32],
    tokenizer_hash: String,
    wait: W,
) -> Result<TasksLoad, DataError>
where
    W: Fn(Duration) -> Fut + Copy,
    Fut: Future<Output = ()>,
{
    let seed_decimal = Seed::BlockHash(*seed).decimal();
    let mut fetched = Vec::with_capacity(tasks.len());
    for task in tasks {
        let data = task_data(task).map_err(DataError::Config)?;
        let loaded = server.load(data, seed, wait).await?;
        let outcome = match loaded.outcome {
            TaskOutcome::Loaded {
                samples: rows,
                pages,
                ..
            } => {
                let dataset = data.dataset.name();
                let references = pages
                    .iter()
                    .map(|page| page_reference(dataset, page, data.rows_per_page))
                    .collect();
                let mut samples = Samples::new();
                for row in &rows {
                    samples
                        .push(&row.question, &row.reference, "")
                        .map_err(|_| {
                            DataError::Unavailable(format!(
                                "task {}'s samples do not fit one batch",
                                task.name
                            ))
                        })?;
                }
                TaskFetchOutcome::Loaded {
                    provenance: Provenance {
                        source: "datasets-server".into(),
                        seed: seed_decimal.clone(),
                        references,
                    },
                    samples,
                }
            }
            TaskOutcome::Dropped(why) => TaskFetchOutcome::Dropped(why),
            TaskOutcome::StepAborted(why) => {
                return Ok(TasksLoad::Aborted(format!("task {}: {why}", task.name)));
            }
        };
        fetched.push(TaskFetched {
            task: task.name.clone(),
            outcome,
        });
    }
    Ok(TasksLoad::Fetched(TasksFetched {
        step,
        tasks: fetched,
        tokenizer_hash,
    }))
}

/// The (question, reference) pairs a model is evaluated on: every loaded task's samples, in
/// the competition's task order.
pub fn pairs_of(tasks: &TasksFetched) -> Vec<(String, String)> {
    tasks
        .tasks
        .iter()
        .filter_map(|t| match &t.outcome {
            TaskFetchOutcome::Loaded { samples, .. } => Some(samples),
            TaskFetchOutcome::Dropped(_) => None,
        })
        .flat_map(|samples| {
            samples
                .iter()
                .map(|s| (s.prompt.to_owned(), s.response.to_owned()))
        })
        .collect()
}

/// A model's per-sample losses over [`pairs_of`], split into one list per loaded task
/// (`counts`, in order). Losses of another length, or a failure, stay as they are: the fold
/// refuses the former and scores the latter ∞.
pub fn split_losses(outcome: EvalOutcome, counts: &[usize]) -> EvalOutcome {
    let EvalOutcome::Losses(losses) = outcome else {
        return outcome;
    };
    if losses.0.len() != counts.iter().sum::<usize>() {
        return EvalOutcome::Losses(losses);
    }
    let mut rest = losses.0.as_slice();
    let mut split = Vec::with_capacity(counts.len());
    for &count in counts {
        let (head, tail) = rest.split_at(count);
        split.push(LossVec(head.to_vec()));
        rest = tail;
    }
    EvalOutcome::TaskLosses(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_split_by_the_tasks_that_loaded() {
        let losses = EvalOutcome::Losses(LossVec(vec![1.0, 2.0, 3.0, 4.0, 5.0]));
        assert_eq!(
            split_losses(losses, &[2, 3]),
            EvalOutcome::TaskLosses(vec![LossVec(vec![1.0, 2.0]), LossVec(vec![3.0, 4.0, 5.0])])
        );
        // A count that does not add up is left for the fold to refuse.
        let short = EvalOutcome::Losses(LossVec(vec![1.0]));
        assert_eq!(split_losses(short.clone(), &[2]), short);
        let failed = EvalOutcome::Failed("no".into());
        assert_eq!(split_losses(failed.clone(), &[2]), failed);
    }

    #[test]
    fn generation_tasks_are_refused_by_name() {
        let rules = crate::machine::params::MechanismParams::successor();
        let successor = rules.rules.successor.unwrap();
        let retired = successor
            .competition(&crate::machine::CompetitionId::new("3"))
            .unwrap();
        let refused: Vec<String> = retired
            .tasks
            .iter()
            .filter_map(|t| task_data(t).err())
            .collect();
        assert!(refused.iter().any(|why| why.contains("generated answers")));
        let live = successor
            .competition(&crate::machine::CompetitionId::new("4"))
            .unwrap();
        assert!(live.tasks.iter().all(|t| task_data(t).is_ok()));
    }

    #[test]
    fn a_recording_seeds_with_a_hash_shaped_stand_in() {
        let hash = stand_in_block_hash(5_158_632);
        assert_eq!(hash.len(), 66);
        assert!(hash.starts_with("0x") && hash.ends_with("4eb6e8"));
    }
}
