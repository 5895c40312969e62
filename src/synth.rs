//! Generated journals: a scenario builder for golden journals and tests, and the year-scale
//! journal of the replay benchmark.
//!
//! A [`Scenario`] folds each event as it is added and fills in what the live validator would
//! have recorded (a step's results, the u16 weights it submitted), so the journal it produces
//! replays cleanly by construction; what it proves is the fold's consistency, not N's
//! semantics (those are tested against N's own outputs).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::hashing::hash_of_bytes;
use crate::journal::{Journal, JournalError};
use crate::machine::event::{
    BatchFetched, CommitmentField, CommitmentObserved, EvalOutcome, LossesComputed,
    MetagraphObserved, ModelRejected, ModelVerified, ParamsChanged, Provenance, RejectionCode,
    StepCompleted, StepStarted, SubmitOutcome, WeightsSubmitted,
};
use crate::machine::model_id::HashKind;
use crate::machine::preview::step_completion;
use crate::machine::state::Entry;
use crate::machine::weights::to_chain_weights;
use crate::machine::wire::{LossVec, RawBytes, Samples, hex_encode};
use crate::machine::{Event, FoldDriver, MechanismParams, Outcome, Record, Rejection, State};

pub use crate::seed::SplitMix64;

/// A committed model id for tests: 40-hex commit and base64 SHA-256 hash derived from `label`.
pub fn model_string(namespace: &str, label: &str, competition: &str) -> String {
    let digest = Sha256::digest(label.as_bytes());
    let commit = hex_encode(digest.get(..20).unwrap_or(&[]));
    let hash = hash_of_bytes(label.as_bytes());
    format!("{namespace}:{label}:{commit}:{hash}:{competition}")
}

/// A journal under construction, folded as it grows.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The records so far (since the last [`Scenario::drain`]).
    pub records: Vec<Record>,
    driver: FoldDriver,
    seq_next: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    /// An empty journal at genesis.
    pub fn new() -> Self {
        Self {
            records: Vec::new(),
            driver: FoldDriver::new(None),
            seq_next: 0,
        }
    }

    /// Adds and folds one event.
    pub fn push(&mut self, block: u64, event: Event) -> Outcome {
        let record = Record {
            block,
            seq: self.seq_next,
            event,
        };
        self.seq_next += 1;
        // A scenario starts at genesis, so the driver folds every record it is given.
        let outcome = self.driver.fold(&record).unwrap_or(Outcome::Unchanged);
        self.records.push(record);
        outcome
    }

    /// The state after every record added.
    pub fn state(&self) -> &State {
        self.driver.state()
    }

    /// Takes the records added so far.
    pub fn drain(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    /// Replaces the mechanism parameters.
    pub fn params(&mut self, block: u64, params: MechanismParams) -> Outcome {
        self.push(block, Event::ParamsChanged(ParamsChanged { params }))
    }

    /// A metagraph of `hotkeys` with the given consensus (u16) and no stake.
    pub fn metagraph(&mut self, block: u64, hotkeys: &[&str], consensus: &[u16]) -> Outcome {
        let size = hotkeys.len();
        let mut consensus = consensus.to_vec();
        consensus.resize(size, 0);
        self.push(
            block,
            Event::MetagraphObserved(MetagraphObserved {
                netuid: 6,
                hotkeys: hotkeys.iter().map(|h| (*h).to_owned()).collect(),
                consensus,
                incentive: Vec::new(),
                stake: vec![0; size],
                validator_permit: Vec::new(),
                last_update: Vec::new(),
                tempo: 360,
            }),
        )
    }

    /// A raw commitment.
    pub fn commit(&mut self, block: u64, hotkey: &str, block_commit: u64, text: &str) -> Outcome {
        self.push(
            block,
            Event::CommitmentObserved(CommitmentObserved {
                hotkey: hotkey.to_owned(),
                block_commit,
                field: CommitmentField::Raw(RawBytes(text.as_bytes().to_vec())),
            }),
        )
    }

    /// Verifies the hotkey's current commitment.
    pub fn verify(&mut self, block: u64, hotkey: &str, hash_kind: HashKind) -> Outcome {
        let block_commit = self.current_commit_block(hotkey);
        self.push(
            block,
            Event::ModelVerified(ModelVerified {
                hotkey: hotkey.to_owned(),
                block_commit,
                hash_kind,
            }),
        )
    }

    /// Rejects the hotkey's current commitment.
    pub fn reject(
        &mut self,
        block: u64,
        hotkey: &str,
        code: RejectionCode,
        detail: &str,
    ) -> Outcome {
        let block_commit = self.current_commit_block(hotkey);
        self.push(
            block,
            Event::ModelRejected(ModelRejected {
                hotkey: hotkey.to_owned(),
                block_commit,
                code,
                detail: detail.to_owned(),
            }),
        )
    }

    fn current_commit_block(&self, hotkey: &str) -> u64 {
        self.driver
            .state()
            .hotkeys
            .get(hotkey)
            .and_then(|r| r.commitment.as_ref())
            .map_or(0, |c| c.block_commit)
    }

    /// Commits and verifies (plain hash) in one go.
    pub fn commit_verified(&mut self, block: u64, hotkey: &str, block_commit: u64, text: &str) {
        self.commit(block, hotkey, block_commit, text);
        self.verify(block, hotkey, HashKind::Plain);
    }

    /// Starts the next step with the competition the schedule gives.
    pub fn start_step(&mut self, block: u64) -> Outcome {
        let step = self.driver.state().step_next;
        let competition = self
            .driver
            .state()
            .params
            .competition_for_step(block, step)
            .map(|c| c.id.clone())
            .unwrap_or_default();
        self.push(block, Event::StepStarted(StepStarted { step, competition }))
    }

    /// The open step's batch: `size` short samples.
    pub fn batch(&mut self, block: u64, size: usize) -> Outcome {
        let step = self.driver.state().step_open.as_ref().map_or(0, |o| o.step);
        let mut samples = Samples::new();
        for index in 0..size {
            // Short synthetic text cannot reach the 4 GiB batch limit.
            let _ = samples.push(&format!("p{step}.{index}"), &format!("r{step}.{index}"), "");
        }
        self.push(
            block,
            Event::BatchFetched(BatchFetched {
                step,
                provenance: Provenance {
                    source: "synthetic".into(),
                    seed: step.to_string(),
                    references: Vec::new(),
                },
                samples,
            }),
        )
    }

    /// Losses (or a failure) for a participant of the open step, with its planned hotkey and
    /// hash.
    pub fn outcome(&mut self, block: u64, uid: u16, outcome: EvalOutcome) -> Outcome {
        let Some(open) = self.driver.state().step_open.as_ref() else {
            return Outcome::Rejected(Rejection::NoStepOpen {
                step: self.driver.state().step_next,
            });
        };
        let participant = open.participants.iter().find(|p| p.uid == uid);
        let (hotkey, model_hash) = match participant {
            Some(p) => match &p.entry {
                Entry::Model { model_hash, .. } => (p.hotkey.clone(), model_hash.clone()),
                Entry::Absent(_) => (p.hotkey.clone(), String::new()),
            },
            None => (String::new(), String::new()),
        };
        let step = open.step;
        self.push(
            block,
            Event::LossesComputed(LossesComputed {
                step,
                uid,
                hotkey,
                model_hash,
                outcome,
            }),
        )
    }

    /// Losses for a participant.
    pub fn losses(&mut self, block: u64, uid: u16, losses: &[f32]) -> Outcome {
        self.outcome(block, uid, EvalOutcome::Losses(LossVec(losses.to_vec())))
    }

    /// Completes the open step, recording what the fold computes.
    pub fn complete_step(&mut self, block: u64) -> Outcome {
        let Some(recorded) = step_completion(self.driver.state(), block) else {
            return Outcome::Rejected(Rejection::NoStepOpen {
                step: self.driver.state().step_next,
            });
        };
        let step = self.driver.state().step_open.as_ref().map_or(0, |o| o.step);
        self.push(
            block,
            Event::StepCompleted(StepCompleted { step, recorded }),
        )
    }

    /// A whole step: start, a batch of `size`, losses from `losses_of(uid)` for every
    /// participant with a model (`None`: evaluation failed), complete.
    pub fn run_step(
        &mut self,
        block: u64,
        size: usize,
        mut losses_of: impl FnMut(u16) -> Option<Vec<f32>>,
    ) {
        self.start_step(block);
        self.batch(block, size);
        let with_models: Vec<u16> = self
            .driver
            .state()
            .step_open
            .as_ref()
            .map(|o| {
                o.participants
                    .iter()
                    .filter(|p| matches!(p.entry, Entry::Model { .. }))
                    .map(|p| p.uid)
                    .collect()
            })
            .unwrap_or_default();
        for uid in with_models {
            let outcome = match losses_of(uid) {
                Some(losses) => EvalOutcome::Losses(LossVec(losses)),
                None => EvalOutcome::Failed("evaluation failed".into()),
            };
            self.outcome(block, uid, outcome);
        }
        self.complete_step(block);
    }

    /// Submits the state's weights, as the chain edge would, and records inclusion.
    pub fn submit_weights(&mut self, block: u64) -> Outcome {
        let (uids, weights) =
            to_chain_weights(self.driver.state().weights_to_set()).unwrap_or_default();
        self.push(
            block,
            Event::WeightsSubmitted(WeightsSubmitted {
                uids,
                weights,
                version_key: 27,
                outcome: SubmitOutcome::Included { block },
            }),
        )
    }
}

/// The shape of a generated journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalSpec {
    /// Steps to generate.
    pub steps: u64,
    /// Miners per competition (each step evaluates one competition's miners).
    pub uids_per_competition: u16,
    /// Samples per batch (and losses per miner per step).
    pub samples: usize,
    /// Blocks between steps.
    pub blocks_per_step: u64,
    /// Steps per atomic append.
    pub steps_per_append: u64,
    /// Steps between checkpoints.
    pub checkpoint_every_steps: u64,
    /// Steps between weight submissions.
    pub steps_per_submission: u64,
    /// Seed of the synthetic losses.
    pub seed: u64,
}

impl Default for JournalSpec {
    /// About a year of N: a step every ~26 blocks, 8 miners per step, 400 samples.
    fn default() -> Self {
        Self {
            steps: 100_000,
            uids_per_competition: 8,
            samples: 400,
            blocks_per_step: 26,
            steps_per_append: 100,
            checkpoint_every_steps: 1_000,
            steps_per_submission: 4,
            seed: 7,
        }
    }
}

/// Generates a journal at `path` (which must not hold one) and returns its final state.
pub fn generate_journal(path: &Path, spec: JournalSpec) -> Result<State, JournalError> {
    let mut journal = Journal::open(path)?;
    if !journal.is_empty() {
        return Err(JournalError::NotAJournal {
            path: path.to_owned(),
            detail: "already holds a journal; generate into an empty directory".into(),
        });
    }
    let mut scenario = Scenario::new();
    let miners = usize::from(spec.uids_per_competition) * 2;
    let hotkeys: Vec<String> = (0..miners).map(|i| format!("5Miner{i:04}")).collect();
    let hotkey_refs: Vec<&str> = hotkeys.iter().map(String::as_str).collect();
    let params = MechanismParams {
        sample_min: u32::from(spec.uids_per_competition),
        ..MechanismParams::default()
    };
    scenario.params(1, params);
    scenario.metagraph(1, &hotkey_refs, &[]);
    for (index, hotkey) in hotkeys.iter().enumerate() {
        let competition = if index % 2 == 0 { "l3" } else { "s1" };
        let text = model_string("synth", &format!("m{index}"), competition);
        let block_commit = u64::try_from(index).unwrap_or(0) + 1;
        scenario.commit_verified(1, hotkey, block_commit, &text);
    }
    journal.append_records(&scenario.drain())?;
    let mut random = SplitMix64::new(spec.seed);
    let mut block = 2;
    for step in 0..spec.steps {
        scenario.run_step(block, spec.samples, |uid| {
            let skill = f32::from(uid % 7) * 0.01;
            Some(
                (0..spec.samples)
                    .map(|_| 2.0 + skill + random.next_unit_f32() * 0.2)
                    .collect(),
            )
        });
        if (step + 1) % spec.steps_per_submission.max(1) == 0 {
            scenario.submit_weights(block);
        }
        block += spec.blocks_per_step;
        if (step + 1) % spec.steps_per_append.max(1) == 0 {
            journal.append_records(&scenario.drain())?;
        }
        if (step + 1) % spec.checkpoint_every_steps.max(1) == 0 {
            journal.append_records(&scenario.drain())?;
            journal.write_checkpoint(scenario.state())?;
        }
    }
    journal.append_records(&scenario.drain())?;
    Ok(scenario.driver.into_state())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_reproducible_and_uniform_enough() {
        let mut a = SplitMix64::new(1);
        let mut b = SplitMix64::new(1);
        let xs: Vec<f32> = (0..1000).map(|_| a.next_unit_f32()).collect();
        let ys: Vec<f32> = (0..1000).map(|_| b.next_unit_f32()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }

    #[test]
    fn scenario_steps_score() {
        let mut scenario = Scenario::new();
        scenario.metagraph(1, &["a", "b", "c"], &[]);
        scenario.commit_verified(1, "a", 1, &model_string("ns", "ma", "l3"));
        scenario.commit_verified(1, "b", 2, &model_string("ns", "mb", "l3"));
        scenario.run_step(5, 3, |uid| Some(vec![2.0 - f32::from(uid) * 0.1; 3]));
        let last = scenario.records.last().unwrap();
        match &last.event {
            Event::StepCompleted(done) => {
                assert_eq!(done.recorded.uids, vec![0, 1]);
                assert_eq!(done.recorded.wins, vec![0, 3]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(scenario.state().step_next, 1);
    }
}
