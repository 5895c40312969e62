//! Every input the validator acts on, as journaled. Schema version [`SCHEMA_VERSION`].
//!
//! An event carries no block of its own: the journal record around it does (the block at which
//! the validator observed or produced it). Events are never rewritten; a new schema version adds
//! an upgrade from the old one in the journal codec.

use serde::{Deserialize, Serialize};

use super::model_id::HashKind;
use super::params::{CompetitionId, MechanismParams};
use super::wire::{LossVec, RawBytes, Samples};

/// The version of the event and state encodings written by this build.
///
/// Version 2 added [`Event::StepFailed`] at the end of the enum; every version 1 record and
/// checkpoint reads unchanged as version 2. Version 3 added [`Event::WeightsPrepared`] and
/// [`Event::WeightsCommitted`] at the end of the enum and `weights_intent` at the end of the
/// state; a version 1 or 2 checkpoint reads with no intent open (see `codec`). Version 4 added
/// `rules` at the end of the mechanism parameters and keeps eval sets as CPython sets; older
/// records and checkpoints upgrade with the legacy rules they were folded with. Version 5 added
/// [`Event::EvaluationReported`] at the end of the enum; every older record reads unchanged.
/// Version 6 added `due` (what the weight setter read of the chain) at the end of
/// [`WeightsPrepared`]; an older record of it reads with none, and the state keeps an intent
/// without it, so checkpoints are unchanged. Version 7 added `worker_id` at the end of
/// [`EvaluationReported`]; an older record of it reads with an empty id. Version 8 added
/// `mecid` at the end of [`WeightsPrepared`] and the open intent's mechanism at the end of the
/// state; older records and checkpoints read with mechanism 0. Version 9 added the successor's
/// loop (`successor` at the end of the loop rules, so of the parameters), its state (at the
/// end of the state), [`Event::TasksFetched`] and [`EvalOutcome::TaskLosses`] at the ends of
/// their enums, and `scores` at the end of [`StepRecord`]; older records read with none of
/// them, older checkpoints through their old shape (see `codec`). Version 10 added
/// `tokenizer_hash` at the end of [`TasksFetched`]; an older record of it reads with none.
pub const SCHEMA_VERSION: u16 = 10;

/// The oldest schema version this build reads.
pub const SCHEMA_VERSION_OLDEST_READ: u16 = 1;

/// Whether this build reads records and checkpoints written under `version`.
pub fn schema_version_is_readable(version: u16) -> bool {
    (SCHEMA_VERSION_OLDEST_READ..=SCHEMA_VERSION).contains(&version)
}

/// One journaled event with its position: `(block, seq)` orders the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Block at which the validator observed or produced the event.
    pub block: u64,
    /// Position in the journal, unique and increasing across the whole journal.
    pub seq: u64,
    /// What happened.
    pub event: Event,
}

/// Where a record sits in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Block of the record.
    pub block: u64,
    /// Sequence number of the record.
    pub seq: u64,
}

impl Record {
    /// The record's position.
    pub fn position(&self) -> Position {
        Position {
            block: self.block,
            seq: self.seq,
        }
    }
}

/// An input or decision of the validator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The subnet's metagraph was read from chain.
    MetagraphObserved(MetagraphObserved),
    /// A hotkey's commitment was read from chain.
    CommitmentObserved(CommitmentObserved),
    /// N's start-up "sync to consensus": seed weights and eval sets from the metagraph.
    ConsensusSeeded(ConsensusSeeded),
    /// A committed model was downloaded and its hash and checks passed.
    ModelVerified(ModelVerified),
    /// A committed model was refused for good (until its commitment changes).
    ModelRejected(ModelRejected),
    /// An evaluation step began; its participants are fixed from here.
    StepStarted(StepStarted),
    /// The step's prompt/response batch.
    BatchFetched(BatchFetched),
    /// One model's per-sample losses on the step's batch.
    LossesComputed(LossesComputed),
    /// The step ended; `recorded` is what the live validator computed.
    StepCompleted(StepCompleted),
    /// The step ended without scoring and the round-robin advances past it (kept for mechanisms
    /// and journals that ask for it; the runner records [`Event::StepFailed`]).
    StepAbandoned(StepAbandoned),
    /// Weights were sent to chain.
    WeightsSubmitted(WeightsSubmitted),
    /// The mechanism parameters changed from this point on.
    ParamsChanged(ParamsChanged),
    /// The step could not run or could not be scored (no data, no evaluation device); the
    /// round-robin does not advance, so the same competition runs next, as in N when
    /// `run_step` raises. Added in schema version 2.
    StepFailed(StepFailed),
    /// Weights about to be signed: the intent, journaled and flushed before anything is sent.
    /// The chain's answer follows as [`Event::WeightsSubmitted`]. Added in schema version 3.
    WeightsPrepared(WeightsPrepared),
    /// The hash commit of the prepared weights was included; they are revealed inside the
    /// window the chain assigned. Added in schema version 3.
    WeightsCommitted(WeightsCommitted),
    /// Which worker produced an evaluation's result, and whether the runner took it: journaled
    /// with the `LossesComputed` it accepted, or alone for a result it refused (a wrong batch
    /// digest or model hash). The fold keeps nothing of it; it is there for audits. Added in
    /// schema version 5.
    EvaluationReported(EvaluationReported),
    /// The successor: the step's data, task by task (loaded with its samples and where they
    /// came from, or dropped and why), journaled before any model sees it. Added in schema 9.
    TasksFetched(TasksFetched),
    /// The successor: other validators' stakes, permits and weights, as its top-model scan
    /// read them; the fold decides from them which miners that scan may download again.
    /// Added in schema 9.
    ValidatorWeightsObserved(ValidatorWeightsObserved),
}

impl Event {
    /// The snake-case name used in JSON and in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MetagraphObserved(_) => "metagraph_observed",
            Event::CommitmentObserved(_) => "commitment_observed",
            Event::ConsensusSeeded(_) => "consensus_seeded",
            Event::ModelVerified(_) => "model_verified",
            Event::ModelRejected(_) => "model_rejected",
            Event::StepStarted(_) => "step_started",
            Event::BatchFetched(_) => "batch_fetched",
            Event::LossesComputed(_) => "losses_computed",
            Event::StepCompleted(_) => "step_completed",
            Event::StepAbandoned(_) => "step_abandoned",
            Event::WeightsSubmitted(_) => "weights_submitted",
            Event::ParamsChanged(_) => "params_changed",
            Event::StepFailed(_) => "step_failed",
            Event::WeightsPrepared(_) => "weights_prepared",
            Event::WeightsCommitted(_) => "weights_committed",
            Event::EvaluationReported(_) => "evaluation_reported",
            Event::TasksFetched(_) => "tasks_fetched",
            Event::ValidatorWeightsObserved(_) => "validator_weights_observed",
        }
    }
}

/// The metagraph of the subnet at a block. Index `i` of every vector is uid `i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetagraphObserved {
    /// The subnet.
    pub netuid: u16,
    /// Hotkey (SS58) of each uid; its length is the metagraph size `SubnetworkN`.
    pub hotkeys: Vec<String>,
    /// `Consensus`, u16-normalised as on chain.
    pub consensus: Vec<u16>,
    /// `Incentive`, u16-normalised as on chain.
    pub incentive: Vec<u16>,
    /// Stake of each hotkey on the subnet, in rao.
    pub stake: Vec<u64>,
    /// `ValidatorPermit`.
    pub validator_permit: Vec<bool>,
    /// `LastUpdate`, a block per uid.
    pub last_update: Vec<u64>,
    /// The subnet's tempo in blocks.
    pub tempo: u16,
}

impl MetagraphObserved {
    /// The uid of `hotkey` (the lowest, should a hotkey appear twice).
    pub fn uid_of(&self, hotkey: &str) -> Option<u16> {
        let index = self.hotkeys.iter().position(|h| h == hotkey)?;
        u16::try_from(index).ok()
    }
}

/// The kind of the first field of a `Commitments.CommitmentOf` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentField {
    /// `Raw{len}` bytes: what miners commit.
    Raw(RawBytes),
    /// Any other `Data` variant (`None`, a hash, `TimelockEncrypted`, `BigRaw`, ...), by name.
    Other(String),
    /// The commitment has no fields at all.
    Empty,
}

/// A hotkey's commitment as read from chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitmentObserved {
    /// The committing hotkey (SS58).
    pub hotkey: String,
    /// The block the commitment was made at (`Registration.block`).
    pub block_commit: u64,
    /// The first field, unparsed: the fold parses it, so parsing replays too.
    pub field: CommitmentField,
}

/// N's start-up sync: weights := consensus; eval sets := top `sample_min` by consensus per
/// competition; models committed before `nearest_tempo(start, tempo, block - tempo)` are not
/// fetched as new ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusSeeded {}

/// A committed model passed download, hash and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVerified {
    /// The miner's hotkey.
    pub hotkey: String,
    /// Which commitment was verified (its block).
    pub block_commit: u64,
    /// Which hash matched.
    pub hash_kind: HashKind,
}

/// Why a model was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// Neither the plain nor the salted directory hash matches the commitment.
    HashMismatch,
    /// The repository is over the competition's size cap.
    RepoTooLarge,
    /// More parameters than the competition allows (or, under the successor's rules, fewer
    /// than its lower bound: one code for F's parameter-bounds check).
    TooManyParameters,
    /// The weight-norm check failed.
    NormCheck,
    /// An architecture or configuration flag we do not evaluate.
    UnsupportedArchitecture,
    /// Hostile or malformed repository content (paths, symlinks, sizes, headers).
    MalformedRepo,
    /// The repository or revision does not exist.
    NotFound,
    /// A class the successor lists but never scores: its norm check reads projections the
    /// class does not have (Bart, Falcon, GPT-NeoX, Phi, Phi-3). Added in schema 9.
    NeverScored,
}

/// A committed model was refused; it is not fetched again until the commitment changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRejected {
    /// The miner's hotkey.
    pub hotkey: String,
    /// Which commitment was refused (its block).
    pub block_commit: u64,
    /// The class of refusal.
    pub code: RejectionCode,
    /// A sentence for operators and miners.
    pub detail: String,
}

/// A step begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepStarted {
    /// The step number (N's `global_step`).
    pub step: u64,
    /// The competition the live validator chose; the fold checks it.
    pub competition: CompetitionId,
}

/// Where a batch came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The data source's name.
    pub source: String,
    /// The seed that chose runs, files and rows, in decimal; empty when there was none.
    pub seed: String,
    /// Run ids, file names at revisions, history steps: what was read.
    pub references: Vec<String>,
}

/// The step's evaluation data, journaled before any model sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchFetched {
    /// The step this batch belongs to.
    pub step: u64,
    /// Where it came from.
    pub provenance: Provenance,
    /// The samples, in evaluation order.
    pub samples: Samples,
}

/// Other validators as the successor's top-model scan reads them from the metagraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorWeightsObserved {
    /// Each validator that set weights: its uid, stake, permit and `(uid, weight)` pairs.
    pub validators: Vec<ValidatorWeights>,
}

/// A validator as the top-miner scan sees it: stake, permit and the raw u16 weights it set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatorWeights {
    /// Its uid.
    pub uid: u16,
    /// Its stake (bittensor's float32 `S`).
    pub stake: f32,
    /// Whether it holds a validator permit.
    pub validator_permit: bool,
    /// `(uid, weight)` as the chain holds them.
    pub weights: Vec<(u16, u16)>,
}

/// What became of one task's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFetchOutcome {
    /// The task's samples: the question as `prompt`, the reference as `response`.
    Loaded {
        /// Where they came from (dataset, config, split, offsets).
        provenance: Provenance,
        /// The samples, in evaluation order.
        samples: Samples,
    },
    /// The task did not load (F skips it and renormalises the others' weights).
    Dropped(String),
}

/// One task's data for a successor step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFetched {
    /// The task's name, as the competition lists it.
    pub task: String,
    /// Its samples, or why there are none.
    pub outcome: TaskFetchOutcome,
}

/// A successor step's data: every task of its competition, in the competition's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TasksFetched {
    /// The step.
    pub step: u64,
    /// One entry per task.
    pub tasks: Vec<TaskFetched>,
    /// The digest of the competition tokenizer's files every model of the step is tokenised
    /// with (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`,
    /// `chat_template.jinja`: see `dirhash::hash_of_tokenizer_files`). Empty before schema 10.
    #[serde(default)]
    pub tokenizer_hash: String,
}

/// The result of evaluating one model on a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalOutcome {
    /// One loss per sample, `+inf` where that sample failed.
    Losses(LossVec),
    /// The model could not be evaluated at all (N: losses `[]`, it plays no matches; the
    /// successor: score ∞).
    Failed(String),
    /// The successor: per-sample losses of each task that loaded, in the competition's task
    /// order. Added in schema 9.
    TaskLosses(Vec<LossVec>),
}

/// One model's losses on the step's batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossesComputed {
    /// The step.
    pub step: u64,
    /// The uid evaluated.
    pub uid: u16,
    /// The uid's hotkey at the step's start.
    pub hotkey: String,
    /// The committed hash of the model evaluated.
    pub model_hash: String,
    /// The losses, or why there are none.
    pub outcome: EvalOutcome,
}

/// What a step computed. The fold recomputes it; replay compares the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The competition scored.
    pub competition: CompetitionId,
    /// Participants, in the order the step visited them (the mechanism's set order).
    pub uids: Vec<u16>,
    /// Head-to-head wins of each participant.
    pub wins: Vec<u64>,
    /// Matches each participant played.
    pub matches: Vec<u64>,
    /// `wins / matches` (0 without matches).
    pub win_rate: Vec<f64>,
    /// The validator's whole weight vector after the step, one entry per metagraph uid.
    pub weights: Vec<f64>,
    /// The eval set kept for the competition's next step, ascending.
    pub eval_next: Vec<u16>,
    /// The successor: each participant's score, in `uids` order (∞ for a failed or absent
    /// model); empty under N. Added in schema 9, last.
    #[serde(default, with = "super::wire::f64_vec_exact")]
    pub scores: Vec<f64>,
}

impl StepRecord {
    /// A record with nothing in it but the competition: what a probe of the fold carries
    /// (the fold recomputes every field).
    pub fn empty(competition: CompetitionId) -> Self {
        Self {
            competition,
            uids: Vec::new(),
            wins: Vec::new(),
            matches: Vec::new(),
            win_rate: Vec::new(),
            weights: Vec::new(),
            eval_next: Vec::new(),
            scores: Vec::new(),
        }
    }
}

/// A step ended and was scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCompleted {
    /// The step.
    pub step: u64,
    /// What the live validator computed.
    pub recorded: StepRecord,
}

/// A step ended without scoring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAbandoned {
    /// The step.
    pub step: u64,
    /// Why.
    pub reason: String,
}

/// Who evaluated a model: enough for an auditor to tell workers apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatedBy {
    /// The worker's host name (as the worker reports it).
    pub host: String,
    /// The device it ran on and the precision its graph computed in (`cpu f32`,
    /// `cuda:0 bf16`; journals before the precision choice say only the device).
    pub device: String,
    /// The worker's build: crate version, git commit and ONNX Runtime version.
    pub build: String,
}

/// What the runner made of a worker's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportVerdict {
    /// Taken: the `LossesComputed` written with it holds the result.
    Accepted,
    /// Refused, with the reason (the batch digest or model hash did not match what was sent).
    Refused(String),
}

/// A worker's result for (step, uid), as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluationReported {
    /// The step.
    pub step: u64,
    /// The uid evaluated.
    pub uid: u16,
    /// The model hash the result names.
    pub model_hash: String,
    /// The digest of the tokenised batch the result names.
    pub batch_digest: String,
    /// Who produced it.
    pub worker: EvaluatedBy,
    /// Whether it was taken.
    pub verdict: ReportVerdict,
    /// Which worker: a queue worker's name and public key as the runner verified them
    /// (`NAME:KEY`), `local` for the runner's own children. Workers on one host and device
    /// differ here. Empty in journals before schema 7.
    #[serde(default)]
    pub worker_id: String,
}

/// A step that could not run or be scored; it will be tried again under the same number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFailed {
    /// The step (the open one, or the next one when none is open).
    pub step: u64,
    /// Why, for the operator.
    pub reason: String,
}

/// What the chain said to a weight submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitOutcome {
    /// Included in a block.
    Included {
        /// The block that included it.
        block: u64,
    },
    /// The chain refused it (its error, decoded).
    Refused(String),
    /// It did not reach a decision (timeout, connection).
    Failed(String),
}

/// Weights sent to chain, in the chain's u16 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsSubmitted {
    /// Destination uids, ascending and unique.
    pub uids: Vec<u16>,
    /// Weights, the largest 65535.
    pub weights: Vec<u16>,
    /// `version_key` sent with them.
    pub version_key: u64,
    /// The chain's answer.
    pub outcome: SubmitOutcome,
}

/// How prepared weights go to the chain, with what a restart needs to finish the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubmitMethod {
    /// `set_weights`.
    Plain,
    /// Commit-reveal v2: `commit_weights` of the hash with `salt`, then `reveal_weights`.
    CommitRevealHash {
        /// The salt the hash was made with (a restart reveals with it).
        salt: Vec<u16>,
    },
    /// Commit-reveal v3/v4: `commit_timelocked_weights`, revealed by the chain at `reveal_round`.
    Timelocked {
        /// `CommitRevealWeightsVersion` the commit is made under.
        version: u16,
        /// The drand round the weights are encrypted to.
        reveal_round: u64,
    },
}

impl SubmitMethod {
    /// The extrinsics' names, as reports print them.
    pub fn name(&self) -> &'static str {
        match self {
            SubmitMethod::Plain => "set_weights",
            SubmitMethod::CommitRevealHash { .. } => "commit_weights+reveal_weights",
            SubmitMethod::Timelocked { .. } => "commit_timelocked_weights",
        }
    }
}

/// What the weight setter read of the chain when it judged weights due, journaled in
/// `WeightsPrepared` so that replay judges the same decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueReading {
    /// The chain's head.
    pub head: u64,
    /// `LastUpdate` of the validator's uid (0: never).
    pub last_update: u64,
    /// `WeightsSetRateLimit`: blocks between weight changes.
    pub rate_limit: u64,
    /// Blocks between submissions (the operator's `--blocks_per_epoch`).
    pub blocks_per_epoch: u64,
}

/// Weights the validator is about to sign and send, in the chain's u16 form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsPrepared {
    /// Destination uids, ascending and unique.
    pub uids: Vec<u16>,
    /// Weights, the largest 65535.
    pub weights: Vec<u16>,
    /// `version_key` sent with them.
    pub version_key: u64,
    /// How they go.
    pub method: SubmitMethod,
    /// The chain's head when they were prepared: anything on chain after it is newer.
    pub block_head: u64,
    /// What the weight setter read of the chain when it found them due, so replay judges the
    /// cadence again (schema 6; `None` for weights set by hand and for older records).
    #[serde(default)]
    pub due: Option<DueReading>,
    /// The subnet mechanism they are for (`--mechid`; 0, the subnet's own, in records
    /// before schema 8).
    #[serde(default)]
    pub mecid: u8,
}

impl WeightsPrepared {
    /// The (uid, weight) pairs, as subtensor's `Weights` holds them.
    pub fn pairs(&self) -> Vec<(u16, u16)> {
        uid_weight_pairs(&self.uids, &self.weights)
    }
}

impl WeightsSubmitted {
    /// The (uid, weight) pairs, as subtensor's `Weights` holds them.
    pub fn pairs(&self) -> Vec<(u16, u16)> {
        uid_weight_pairs(&self.uids, &self.weights)
    }
}

fn uid_weight_pairs(uids: &[u16], weights: &[u16]) -> Vec<(u16, u16)> {
    uids.iter().copied().zip(weights.iter().copied()).collect()
}

/// A hash commit of the prepared weights, included on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsCommitted {
    /// The block that included the commit.
    pub block_commit: u64,
    /// The first block at which the reveal is accepted.
    pub block_reveal_first: u64,
    /// The last block at which the reveal is accepted.
    pub block_reveal_last: u64,
}

/// New mechanism parameters, in force from this record on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamsChanged {
    /// The complete new parameter set.
    pub params: MechanismParams,
}
