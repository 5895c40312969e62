//! The validator's state: everything the fold derives from the journal, and nothing else.
//!
//! Every collection is a `BTreeMap`, `BTreeSet` or a `Vec` indexed by uid, so iteration order
//! is the key order and never depends on hashing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::event::{
    CommitmentField, EvalOutcome, MetagraphObserved, Position, RejectionCode, WeightsCommitted,
    WeightsPrepared,
};
use super::model_id::{CommitmentInvalid, HashKind, ModelId};
use super::params::{CompetitionId, MechanismParams};
use super::pyset::PySet;

/// The folded state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct State {
    /// Parameters in force.
    pub params: MechanismParams,
    /// The last record folded.
    pub position: Option<Position>,
    /// The latest metagraph.
    pub metagraph: Option<Metagraph>,
    /// What we know of each hotkey that ever committed, by SS58 address.
    pub hotkeys: BTreeMap<String, HotkeyRecord>,
    /// Eval sets, pending uids and trackers, by competition.
    pub competitions: BTreeMap<CompetitionId, CompetitionState>,
    /// The weight vector set on chain, one entry per uid (N's `self.weights`).
    pub weights: Vec<f64>,
    /// The number of the next step (N's `global_step`).
    pub step_next: u64,
    /// The step in progress, if any.
    pub step_open: Option<OpenStep>,
    /// Commitments older than this are not fetched as new models (N's `set_min_block`).
    pub block_commit_min: Option<u64>,
    /// Block of the last weight submission the chain included.
    pub block_weights_included: Option<u64>,
    /// Weights prepared and not yet answered: a restart reconciles them with the chain before
    /// preparing others. Last field, so older checkpoints read with none (schema 3).
    #[serde(default)]
    pub weights_intent: Option<WeightsIntent>,
    /// Under the `AfterStep` cadence, the start block of the step that made weights due last
    /// (N's `last_epoch`; the first metagraph's block before that). Schema 4.
    #[serde(default)]
    pub block_epoch: Option<u64>,
    /// Under the `AfterStep` cadence, the weights that became due after a step, until a
    /// submission is prepared. Schema 4.
    #[serde(default)]
    pub weights_due: Option<WeightsDue>,
    /// The subnet mechanism of the open weights intent (0 without one). The intent in a
    /// checkpoint keeps the shape it always had; this carries its mechanism. Schema 8.
    #[serde(default)]
    pub weights_intent_mecid: u8,
    /// What the successor's loop keeps beyond N's (`None` until its rules fold something).
    /// Schema 9, last.
    #[serde(default)]
    pub successor: Option<SuccessorState>,
}

/// What the successor's loop keeps beyond N's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SuccessorState {
    /// F's `last_run_by_competition`: the sync block of each competition's last scored step.
    pub sync_block_last: BTreeMap<CompetitionId, u64>,
    /// taoverse's evaluation history, per hotkey and competition, oldest first, at most the
    /// rules' `eval_history_len` each (competition `0` holds F's records of misconfigured
    /// models). Cleared for a hotkey when its commitment changes or it leaves the metagraph.
    pub eval_history: BTreeMap<String, BTreeMap<CompetitionId, Vec<EvalResult>>>,
    /// The open step's tasks, once its data is journaled.
    pub tasks_open: Option<Vec<TaskOpen>>,
    /// The miners other large validators weight, from the latest scan (ascending).
    pub top_miners: BTreeSet<u16>,
}

/// One of an open successor step's tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskOpen {
    /// The task's weight in the competition.
    pub weight: f64,
    /// Samples loaded, or `None` for a task that was dropped.
    pub samples: Option<usize>,
}

/// One evaluation of a hotkey's model, as taoverse's model tracker keeps it (`EvalResult`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// When it was evaluated.
    pub block: u64,
    /// Its score (∞ when it failed).
    #[serde(with = "super::wire::f64_exact")]
    pub score: f64,
    /// The step winner's commit block (`None`: F's ∞, a winner without a model).
    pub winning_block: Option<u64>,
    /// The step winner's score.
    #[serde(with = "super::wire::f64_exact")]
    pub winning_score: f64,
}

/// Weights that N's cadence made due: N sets them right after the step that made them due,
/// so this is the vector as that step left it, whatever later steps change before it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsDue {
    /// The start block of the step after which they became due.
    pub block: u64,
    /// The weight vector after that step.
    pub weights: Vec<f64>,
}

/// Weights journaled as prepared, and how far their submission got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsIntent {
    /// The block of the `WeightsPrepared` record.
    pub block_prepared: u64,
    /// What is being sent (without the chain reading it was judged due on, which matters
    /// only when it is journaled: the state keeps the shape checkpoints have always had).
    #[serde(with = "prepared_as_stored")]
    pub prepared: WeightsPrepared,
    /// The included hash commit, for commit-reveal v2.
    pub committed: Option<WeightsCommitted>,
}

/// An intent's `WeightsPrepared` in the state as checkpoints of every schema store it: the
/// five fields of schemas 3 to 5, without the reading schema 6 added to the event.
mod prepared_as_stored {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::machine::event::{SubmitMethod, WeightsPrepared};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        uids: Vec<u16>,
        weights: Vec<u16>,
        version_key: u64,
        method: SubmitMethod,
        block_head: u64,
    }

    pub fn serialize<S: Serializer>(
        prepared: &WeightsPrepared,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        Stored {
            uids: prepared.uids.clone(),
            weights: prepared.weights.clone(),
            version_key: prepared.version_key,
            method: prepared.method.clone(),
            block_head: prepared.block_head,
        }
        .serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<WeightsPrepared, D::Error> {
        let stored = Stored::deserialize(deserializer)?;
        Ok(WeightsPrepared {
            uids: stored.uids,
            weights: stored.weights,
            version_key: stored.version_key,
            method: stored.method,
            block_head: stored.block_head,
            due: None,
            // The state's `weights_intent_mecid` carries it (see `codec::decode_state`).
            mecid: 0,
        })
    }
}

/// The latest metagraph and the block it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metagraph {
    /// Block of the observation.
    pub block: u64,
    /// The observation itself.
    pub observed: MetagraphObserved,
}

impl Metagraph {
    /// `SubnetworkN`: the number of uids.
    pub fn size(&self) -> usize {
        self.observed.hotkeys.len()
    }

    /// The hotkey at `uid`.
    pub fn hotkey(&self, uid: u16) -> Option<&str> {
        self.observed
            .hotkeys
            .get(usize::from(uid))
            .map(String::as_str)
    }

    /// The uid of `hotkey` (the lowest, should a hotkey appear twice).
    pub fn uid_of(&self, hotkey: &str) -> Option<u16> {
        self.observed.uid_of(hotkey)
    }
}

/// Where a hotkey's latest commitment stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentStatus {
    /// It cannot name an evaluable model; it is never fetched.
    Invalid(CommitmentInvalid),
    /// Waiting for download and verification.
    Unverified,
    /// Downloaded, hash and checks passed.
    Verified,
    /// Refused; not fetched again until the commitment changes.
    Rejected {
        /// The class of refusal.
        code: RejectionCode,
        /// A sentence saying why.
        detail: String,
    },
}

/// A hotkey's latest commitment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitmentState {
    /// The commit block.
    pub block_commit: u64,
    /// The block it was first observed at.
    pub block_observed: u64,
    /// The field as observed.
    pub field: CommitmentField,
    /// The parsed id, when the string parses (even if it is not evaluable).
    pub model_id: Option<ModelId>,
    /// Where it stands.
    pub status: CommitmentStatus,
}

/// The model N's tracker holds for a hotkey: its last verified commitment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedModel {
    /// The model.
    pub model_id: ModelId,
    /// Its commit block.
    pub block_commit: u64,
    /// Which hash verified it.
    pub hash_kind: HashKind,
}

impl TrackedModel {
    /// The committed hash (present: only evaluable ids are verified).
    pub fn hash(&self) -> &str {
        self.model_id.hash.as_deref().unwrap_or("")
    }
}

/// One hotkey.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HotkeyRecord {
    /// The latest commitment observed.
    pub commitment: Option<CommitmentState>,
    /// The last verified model. A newer commitment that fails verification leaves it in
    /// place, as N's model tracker does.
    pub model: Option<TrackedModel>,
    /// Under `track_superseded`: the commitment the latest one replaced while it was still
    /// unverified. Its verification, when it comes, is tracked as N's tracker takes the model
    /// it downloaded (schema 4).
    #[serde(default)]
    pub superseded: Option<CommitmentState>,
}

/// Per-competition state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompetitionState {
    /// Uids evaluated at the competition's next step (N's `uids_to_eval`), as the Python set
    /// N keeps, so that its iteration order is N's.
    pub eval_set: PySet,
    /// Uids with newly verified models, merged into the eval set at the next step (N's
    /// `pending_uids_to_eval`).
    pub pending: PySet,
    /// The successor's moving average for this competition (winner-takes-all mode only).
    pub tracker: Option<Vec<f64>>,
}

/// Why a participant has no model to evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Absence {
    /// The hotkey has no verified model.
    NoModel,
    /// Another participant holds the same committed hash with an older (or equal and
    /// earlier-listed) commit block.
    DuplicateOf(u16),
    /// The model was committed to another competition.
    OtherCompetition(CompetitionId),
}

/// A participant's model, as fixed at step start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    /// A model to evaluate.
    Model {
        /// Its committed hash.
        model_hash: String,
        /// Its commit block.
        block_commit: u64,
        /// Its repository and revision, for the evaluator.
        model_id: ModelId,
    },
    /// Nothing to evaluate: losses `[]`, commit block +infinity.
    Absent(Absence),
}

/// One uid in a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// The uid.
    pub uid: u16,
    /// Its hotkey at step start.
    pub hotkey: String,
    /// Its model.
    pub entry: Entry,
    /// Its evaluation, once journaled.
    pub outcome: Option<EvalOutcome>,
}

/// The step in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenStep {
    /// The step number.
    pub step: u64,
    /// Block at which it started; the "current block" of epsilon decay.
    pub block_start: u64,
    /// The competition scored.
    pub competition: CompetitionId,
    /// `n_competitions × reward_percentage`.
    pub scale: f64,
    /// Metagraph size at step start: the length of the step's weight vector.
    pub size: usize,
    /// Participants, in the order the step visits them.
    pub participants: Vec<Participant>,
    /// Number of samples in the step's batch, once fetched.
    pub batch_size: Option<usize>,
}

impl State {
    /// The genesis state with N's parameters.
    pub fn new(params: MechanismParams) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// The vector a submission now sends: the one N's cadence made due, if any, else the
    /// current weights.
    pub fn weights_to_set(&self) -> &[f64] {
        self.weights_due
            .as_ref()
            .map_or(self.weights.as_slice(), |due| due.weights.as_slice())
    }

    /// `(hotkey, commit)` of every model the state still needs: each hotkey's latest
    /// commitment and its last verified model. The cache sweep keeps these.
    pub fn referenced_models(&self) -> BTreeSet<(String, String)> {
        let mut referenced = BTreeSet::new();
        for (hotkey, record) in &self.hotkeys {
            let latest = record.commitment.as_ref().and_then(|c| c.model_id.as_ref());
            let superseded = record.superseded.as_ref().and_then(|c| c.model_id.as_ref());
            let tracked = record.model.as_ref().map(|m| &m.model_id);
            for model in latest.into_iter().chain(superseded).chain(tracked) {
                if let Some(commit) = &model.commit {
                    referenced.insert((hotkey.clone(), commit.clone()));
                }
            }
        }
        referenced
    }

    /// Commitments that await download and verification, by hotkey, for the runner: evaluable,
    /// unverified, in a competition active at `block`, and not older than the minimum commit
    /// block (unless the hotkey's uid is already in that competition's eval set, as N syncs
    /// consensus models before setting its minimum), of hotkeys the latest metagraph
    /// registers: one with no uid waits until it has one.
    pub fn commitments_to_verify(&self, block: u64) -> Vec<(&str, &CommitmentState)> {
        self.hotkeys
            .iter()
            .filter_map(|(hotkey, record)| {
                let commitment = record.commitment.as_ref()?;
                let model_id = commitment.model_id.as_ref()?;
                if commitment.status != CommitmentStatus::Unverified {
                    return None;
                }
                self.params.competition_at(block, &model_id.competition)?;
                // Only what the metagraph registers is fetched, as N's updater walks the
                // metagraph's hotkeys: a commitment of a hotkey with no uid costs nothing.
                let uid = self.metagraph.as_ref()?.uid_of(hotkey)?;
                let in_eval_set = self
                    .competitions
                    .get(&model_id.competition)
                    .is_some_and(|c| c.eval_set.contains(uid));
                let recent_enough = self
                    .block_commit_min
                    .is_none_or(|min| commitment.block_commit >= min);
                (recent_enough || in_eval_set).then_some((hotkey.as_str(), commitment))
            })
            .collect()
    }
}
