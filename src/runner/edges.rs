//! The edges the runner is generic over: the chain, the model store, the evaluator (and the
//! data edge's [`DataSource`](crate::data::DataSource)). Each answers in one shape:
//!
//! - `Ok(Verdict::Accepted(value))`: go on with `value`;
//! - `Ok(Verdict::Rejected(refusal))`: a verdict on the input, for good (until it changes),
//!   with a typed reason the journal records;
//! - `Err(EdgeError)`: we could not decide, and the error says whether trying again later can
//!   help ([`EdgeError::Unavailable`]) or the operator must act first ([`EdgeError::Operator`]).
//!
//! This module is the vocabulary alone (traits and shapes). The live implementations over
//! the chain, the hub, a local store and the evaluation worker are in [`super::live`];
//! in-memory fakes for tests live in `crate::testing` (feature `testing`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chain::weights::{Sent, Standing};
use crate::eval::batch::{CheckRules, ModelChecked};
use crate::eval::tokenize::Prepared;
use crate::machine::Event;
use crate::machine::event::{
    EvalOutcome, EvaluatedBy, EvaluationReported, RejectionCode, SubmitMethod,
    ValidatorWeightsObserved, WeightsCommitted, WeightsPrepared,
};
use crate::machine::model_id::{HashKind, ModelId};

/// An edge's verdict on an input.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict<T, R = Refusal> {
    /// Accepted: go on with this.
    Accepted(T),
    /// Refused for good, with the reason to record.
    Rejected(R),
}

/// An edge's answer: a verdict, or "could not decide".
pub type Answer<T, R = Refusal> = Result<Verdict<T, R>, EdgeError>;

/// Why a model was refused: what a `ModelRejected` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The class of refusal.
    pub code: RejectionCode,
    /// A sentence for operators and miners.
    pub detail: String,
}

impl Refusal {
    /// A refusal of class `code`.
    pub fn new(code: RejectionCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

/// We could not decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeError {
    /// Try again later: the network, a timeout, a busy or restarting server.
    #[error("{0}")]
    Unavailable(String),
    /// The operator must act before a retry can succeed: no evaluation device, a full disk, an
    /// unusable configuration. Nobody's model is at fault.
    #[error("{0}")]
    Operator(String),
    /// The disk cannot take what is asked of it: free space (sweep the cache) first.
    #[error("{0}")]
    DiskFull(String),
    /// The evaluation device cannot be used (it cannot be opened, or it failed under a model
    /// that another device may still run). A pool takes the device out and goes on with the
    /// others.
    #[error("{0}")]
    Device(String),
    /// Something the run must not go on with: an edge found what it relies on changed
    /// behind its back (the evaluation queue's streams). The run stops with the reason.
    #[error("{0}")]
    Fatal(String),
}

impl EdgeError {
    /// Whether waiting alone can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EdgeError::Unavailable(_))
    }
}

/// What the chain shows at a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The block read.
    pub block: u64,
    /// Its hash, when the chain has one (a recorded chain does not): the data seed.
    pub block_hash: Option<String>,
    /// The metagraph, then every commitment, as journal events.
    pub events: Vec<Event>,
}

/// The chain's refusal of a weight submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRefusal {
    /// The runtime error's name (`SettingWeightsTooFast`, `IncorrectWeightVersionKey`, ...).
    pub name: String,
    /// The runtime error's name, with detail when the chain gave some.
    pub reason: String,
}

impl ChainRefusal {
    /// Whether the refusal will not go away by itself within the epoch: the operator must
    /// act (register, stake for a permit, upgrade). A rate limit or a busy pool passes.
    pub fn is_persistent(&self) -> bool {
        const PERSISTENT: [&str; 8] = [
            "HotKeyNotRegisteredInSubNet",
            "HotKeyNotRegisteredInNetwork",
            "HotKeyAccountNotExists",
            "IncorrectWeightVersionKey",
            "NeuronNoValidatorPermit",
            "NotEnoughStakeToSetWeights",
            "SubNetworkDoesNotExist",
            "SubnetNotExists",
        ];
        PERSISTENT.contains(&self.name.as_str())
    }

    /// Whether the refusal is the transaction pool's or a rate limit's: the same transaction
    /// may pass a few blocks later.
    pub fn is_transient(&self) -> bool {
        const TRANSIENT: [&str; 3] = [
            "TransactionPool",
            "RateLimitExceeded",
            "SettingWeightsTooFast",
        ];
        TRANSIENT.contains(&self.name.as_str())
    }
}

/// The chain as the loop reads it: its head and what it shows at a block.
pub trait ChainEdge: Send + Sync {
    /// The head block. A recorded chain has no clock: its head is a function of the
    /// validator's progress, `steps_begun` (the journal's next step number).
    fn head(&self, steps_begun: u64) -> impl Future<Output = Result<u64, EdgeError>> + Send;

    /// The metagraph and every commitment at `block`.
    fn observe(&self, block: u64) -> impl Future<Output = Result<Observation, EdgeError>> + Send;

    /// The hash of `block` (`0x` and 64 hex digits), which seeds the successor's data draws;
    /// `None` where the chain cannot say (a recording without hashes).
    fn block_hash(
        &self,
        block: u64,
    ) -> impl Future<Output = Result<Option<String>, EdgeError>> + Send {
        let _ = block;
        async { Ok(None) }
    }

    /// The validators with a permit and at least `stake_min` stake at `block`, with the
    /// weights each has set: what the successor's top-model scan reads. `None` where the
    /// chain cannot say (a recording without them).
    fn validator_weights(
        &self,
        block: u64,
        stake_min: f32,
    ) -> impl Future<Output = Result<Option<ValidatorWeightsObserved>, EdgeError>> + Send {
        let _ = (block, stake_min);
        async { Ok(None) }
    }
}

/// The chain as the weight setter uses it, over its own connection: where the validator
/// stands, and the stages of a submission. Every answer that changes what the validator has
/// done on chain is a `Verdict`: accepted, or the chain's named refusal.
pub trait WeightsChain: Send + Sync {
    /// The validator's standing at the head (uid, permit, `LastUpdate`, `Weights`, limits).
    fn standing(&self) -> impl Future<Output = Result<Standing, EdgeError>> + Send;

    /// How weights go now, with a fresh salt or the drand round decided.
    fn plan(&self) -> impl Future<Output = Result<SubmitMethod, EdgeError>> + Send;

    /// Signs and sends `prepared` by its method.
    fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> impl Future<Output = Result<Verdict<Sent, ChainRefusal>, EdgeError>> + Send;

    /// The chain's record of the unrevealed hash commit of `prepared`, if there is one.
    fn find_commit(
        &self,
        prepared: &WeightsPrepared,
    ) -> impl Future<Output = Result<Option<WeightsCommitted>, EdgeError>> + Send;

    /// Reveals hash-committed `prepared`: the including block.
    fn reveal(
        &self,
        prepared: &WeightsPrepared,
    ) -> impl Future<Output = Result<Verdict<u64, ChainRefusal>, EdgeError>> + Send;

    /// How many mechanisms the subnet has now (`MechanismCountCurrent`).
    fn mechanism_count(&self) -> impl Future<Output = Result<u8, EdgeError>> + Send;
}

impl<T: WeightsChain> WeightsChain for Arc<T> {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        T::standing(self).await
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        T::plan(self).await
    }

    async fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        T::send(self, prepared).await
    }

    async fn find_commit(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, EdgeError> {
        T::find_commit(self, prepared).await
    }

    async fn reveal(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        T::reveal(self, prepared).await
    }

    async fn mechanism_count(&self) -> Result<u8, EdgeError> {
        T::mechanism_count(self).await
    }
}

/// A model the store holds, verified against its commitment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredModel {
    /// Its directory (exactly the hashed files).
    pub dir: PathBuf,
    /// Which hash matched.
    pub hash_kind: HashKind,
    /// Bytes this fetch downloaded (0 when it was cached).
    pub bytes_downloaded: u64,
}

/// Where committed models come from: fetched, verified against the committed hash and kept.
pub trait ModelStore: Send + Sync {
    /// Fetches `hotkey`'s committed `model` and verifies its hash, refusing a repository over
    /// `repo_bytes_max` before fetching anything.
    fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> impl Future<Output = Result<Verdict<StoredModel>, EdgeError>> + Send;

    /// Where `hotkey`'s `model` is kept once fetched.
    fn dir_of(&self, hotkey: &str, model: &ModelId) -> PathBuf;
}

/// A batch tokenised for the models of a step.
pub type TokenizedBatch = Arc<[Prepared]>;

/// Checks and evaluates models. Everything that reads a miner's files goes through here.
pub trait ModelEvaluator: Send + Sync {
    /// The checks of a fetched model against its competition (N's, and the successor's
    /// classes and lower bound where `rules` carries them).
    fn check(
        &self,
        dir: &Path,
        rules: &CheckRules,
    ) -> impl Future<Output = Result<Verdict<ModelChecked>, EdgeError>> + Send;

    /// Tokenises `pairs` with the tokenizer files in `dir` (N's rules). `Rejected` when the
    /// files are unusable: every model tokenised with them fails.
    fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> impl Future<Output = Result<Verdict<TokenizedBatch>, EdgeError>> + Send;

    /// Evaluates one participant's model on the step's tokenised batch: one loss per sample, or
    /// why it could not be evaluated at all (`EvalOutcome::Failed`, N's empty loss list).
    fn evaluate(
        &self,
        request: &EvalRequest,
    ) -> impl Future<Output = Result<Evaluated, EdgeError>> + Send;

    /// How many evaluations this evaluator runs at once (devices in a pool, remote workers):
    /// the stepper keeps this many in flight.
    fn capacity(&self) -> usize {
        1
    }

    /// How many workers share the step's evaluations, for cutting the last models into
    /// shards (see `schedule::shard_count`): the devices of a pool; for remote workers, what the
    /// operator says (the queue cannot count them).
    fn workers(&self) -> usize {
        self.capacity()
    }

    /// Whether evaluations read the model's files on this host, so reading the next model
    /// ahead into this host's page cache pays (not for remote workers, which fetch their own).
    fn reads_files_here(&self) -> bool {
        true
    }
}

/// One evaluation: what a local worker needs (`dir`, `batch`) and what a remote one needs to
/// fetch and verify the model itself (the commitment and its hash).
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// The step.
    pub step: u64,
    /// The participant's uid.
    pub uid: u16,
    /// Its hotkey.
    pub hotkey: String,
    /// The committed model.
    pub model: ModelId,
    /// The committed hash of the model.
    pub model_hash: String,
    /// Where this host keeps the verified model.
    pub dir: PathBuf,
    /// The largest repository the competition accepts, for a worker that fetches it.
    pub repo_bytes_max: u64,
    /// The tokenised batch (the step's, or one shard of it).
    pub batch: TokenizedBatch,
    /// Which shard of the model's evaluation this is: 0 unless it was cut into shards for
    /// several workers (the stepper knows which samples each holds).
    pub shard: usize,
    /// The digest of `batch` ([`batch_digest`]), which a result must name.
    pub batch_digest: String,
}

impl EvalRequest {
    /// A request for the model already in `dir`, outside any step (tests, one-off checks).
    pub fn of_dir(dir: &Path, batch: TokenizedBatch) -> Self {
        Self {
            step: 0,
            uid: 0,
            hotkey: String::new(),
            model: ModelId {
                namespace: "local".into(),
                name: dir.display().to_string(),
                commit: None,
                hash: None,
                competition: crate::machine::CompetitionId(
                    crate::machine::model_id::ORIGINAL_COMPETITION_ID.into(),
                ),
                hash_rule: crate::machine::model_id::HashRule::PlainOrSalted,
            },
            model_hash: String::new(),
            dir: dir.to_owned(),
            repo_bytes_max: crate::machine::params::N_MAX_REPO_BYTES,
            shard: 0,
            batch_digest: batch_digest(&batch),
            batch,
        }
    }
}

/// An evaluation's result and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// The losses, or why there are none.
    pub outcome: EvalOutcome,
    /// Who produced them.
    pub worker: EvaluatedBy,
    /// Seconds building the session, as the worker measured it.
    pub session_seconds: f64,
    /// Seconds scoring the samples, as the worker measured it.
    pub scoring_seconds: f64,
    /// Results for this (step, uid) refused before this one was taken, to journal.
    pub refused: Vec<EvaluationReported>,
    /// Which worker (see [`EvaluationReported::worker_id`]).
    pub worker_id: String,
}

impl Evaluated {
    /// An outcome from `worker` with no timing.
    pub fn new(outcome: EvalOutcome, worker: EvaluatedBy) -> Self {
        Self {
            outcome,
            worker,
            session_seconds: 0.0,
            scoring_seconds: 0.0,
            refused: Vec::new(),
            worker_id: "local".into(),
        }
    }
}

/// The digest of a tokenised batch: SHA-256 of its JSON form, which is what travels to remote
/// workers, so both ends compute it from the same bytes.
pub fn batch_digest(batch: &[Prepared]) -> String {
    let bytes = serde_json::to_vec(batch).unwrap_or_default();
    crate::hashing::hash_of_bytes(&bytes)
}
