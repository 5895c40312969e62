//! The edges the runner is generic over: the chain, the model store, the evaluator (and the
//! data edge's [`DataSource`](crate::data::DataSource)). Each answers in one shape:
//!
//! - `Ok(Verdict::Accepted(value))`: go on with `value`;
//! - `Ok(Verdict::Rejected(refusal))`: a verdict on the input, for good (until it changes),
//!   with a typed reason the journal records;
//! - `Err(EdgeError)`: we could not decide, and the error says whether trying again later can
//!   help ([`EdgeError::Unavailable`]) or the operator must act first ([`EdgeError::Operator`]).
//!
//! Real implementations wrap [`Chain`], [`Hub`] and the evaluation code; in-memory fakes for
//! tests live in `crate::testing` (feature `testing`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chain::weights::{Sent, Standing, refusal_reason};
use crate::chain::{Chain, ChainError};
use crate::eval::batch::{ModelChecked, check_model, evaluate_prepared, tokenize_pairs};
use crate::eval::tokenize::Prepared;
use crate::eval::{EvalError, EvalOptions, Fault, ModelDir};
use crate::hub::local::LocalStore;
use crate::hub::{Fetched, Hub, HubError};
use crate::machine::Event;
use crate::machine::event::{
    EvalOutcome, EvaluatedBy, EvaluationReported, RejectionCode, SubmitMethod, WeightsCommitted,
    WeightsPrepared,
};
use crate::machine::model_id::{HashKind, ModelId};
use crate::machine::params::Competition;
use crate::machine::wire::LossVec;

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
    /// N's checks of a fetched model against its competition.
    fn check(
        &self,
        dir: &Path,
        competition: &Competition,
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
    /// shards (see `step::shard_count`): the devices of a pool; for remote workers, what the
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
        }
    }
}

/// The digest of a tokenised batch: SHA-256 of its JSON form, which is what travels to remote
/// workers, so both ends compute it from the same bytes.
pub fn batch_digest(batch: &[Prepared]) -> String {
    let bytes = serde_json::to_vec(batch).unwrap_or_default();
    crate::hashing::hash_of_bytes(&bytes)
}

/// This process as a worker on `device` (the device and the precision it computes in, as
/// `cuda:0 bf16`): host name, device, and build.
pub fn this_worker(device: &str) -> EvaluatedBy {
    EvaluatedBy {
        host: host_name(),
        device: device.to_owned(),
        build: build_id().to_owned(),
    }
}

/// This build: the crate's version and the first 16 hex digits of the SHA-256 of the running
/// executable (so two hosts running the same binary say the same, and a rebuilt one differs).
pub fn build_id() -> &'static str {
    static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|path| crate::dirhash::hash_of_file(&path).ok())
            .map_or_else(
                || "unknown".to_owned(),
                |hash| hash.chars().take(16).collect(),
            );
        format!("validator {} exe {exe}", env!("CARGO_PKG_VERSION"))
    })
}

/// The host's name, from the kernel (no lookup, no network).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn hub_error(error: HubError) -> EdgeError {
    match error {
        HubError::Unavailable(_) => EdgeError::Unavailable(error.to_string()),
        HubError::DiskFull { .. } => EdgeError::DiskFull(error.to_string()),
        HubError::Io { .. } | HubError::Config(_) => EdgeError::Operator(error.to_string()),
    }
}

fn stored_verdict(fetched: Result<Fetched, HubError>) -> Result<Verdict<StoredModel>, EdgeError> {
    match fetched {
        Ok(Fetched::Verified(verified)) => Ok(Verdict::Accepted(StoredModel {
            dir: verified.dir,
            hash_kind: verified.hash_kind,
            bytes_downloaded: verified.bytes_downloaded,
        })),
        Ok(Fetched::Rejected { code, detail }) => Ok(Verdict::Rejected(Refusal { code, detail })),
        Err(error) => Err(hub_error(error)),
    }
}

impl ModelStore for Hub {
    async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> Result<Verdict<StoredModel>, EdgeError> {
        stored_verdict(Hub::fetch(self, hotkey, model, repo_bytes_max).await)
    }

    fn dir_of(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        self.snapshot_dir(hotkey, model)
    }
}

impl ModelStore for LocalStore {
    async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> Result<Verdict<StoredModel>, EdgeError> {
        let (store, hotkey, model) = (self.clone(), hotkey.to_owned(), model.clone());
        let fetched = blocking(move || store.fetch(&hotkey, &model, repo_bytes_max)).await?;
        stored_verdict(fetched)
    }

    fn dir_of(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        self.snapshot_dir(hotkey, model)
    }
}

/// A live subtensor node, for one subnet.
#[derive(Debug, Clone)]
pub struct LiveChain {
    /// The connection.
    pub chain: Chain,
    /// The subnet.
    pub netuid: u16,
}

fn chain_error(error: ChainError) -> EdgeError {
    match error {
        ChainError::Unavailable(_) | ChainError::Refused { .. } => {
            EdgeError::Unavailable(error.to_string())
        }
        ChainError::Invalid(_) | ChainError::Decode(_) => EdgeError::Operator(error.to_string()),
    }
}

/// A chain answer that may be a refusal, as a verdict.
fn chain_verdict<T>(result: Result<T, ChainError>) -> Result<Verdict<T, ChainRefusal>, EdgeError> {
    match result {
        Ok(value) => Ok(Verdict::Accepted(value)),
        Err(ChainError::Refused { name, detail }) => Ok(Verdict::Rejected(ChainRefusal {
            reason: refusal_reason(&name, &detail),
            name,
        })),
        Err(other) => Err(chain_error(other)),
    }
}

/// A live node and the validator's hotkey, for setting weights: its own connection, so a
/// submission never waits behind the loop's reads.
#[derive(Debug, Clone)]
pub struct LiveWeights {
    /// The connection (not the loop's).
    pub chain: Chain,
    /// The subnet.
    pub netuid: u16,
    /// The validator's hotkey.
    pub hotkey: Arc<crate::chain::wallet::Hotkey>,
}

impl WeightsChain for LiveWeights {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        self.chain
            .standing(self.netuid, self.hotkey.keypair.public_key().0)
            .await
            .map_err(chain_error)
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        self.chain
            .plan_submission(self.netuid)
            .await
            .map_err(chain_error)
    }

    async fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        chain_verdict(
            self.chain
                .send_prepared(&self.hotkey.keypair, self.netuid, prepared)
                .await,
        )
    }

    async fn find_commit(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, EdgeError> {
        self.chain
            .find_commit(self.netuid, self.hotkey.keypair.public_key().0, prepared)
            .await
            .map_err(chain_error)
    }

    async fn reveal(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        chain_verdict(
            self.chain
                .reveal_prepared(&self.hotkey.keypair, self.netuid, prepared)
                .await,
        )
    }
}

impl ChainEdge for LiveChain {
    async fn head(&self, _steps_begun: u64) -> Result<u64, EdgeError> {
        self.chain.block_number().await.map_err(chain_error)
    }

    async fn observe(&self, block: u64) -> Result<Observation, EdgeError> {
        let (block, events) = self
            .chain
            .observe(self.netuid, Some(block))
            .await
            .map_err(chain_error)?;
        let block_hash = self.chain.block_hash(block).await.map_err(chain_error)?;
        Ok(Observation {
            block,
            block_hash: Some(block_hash),
            events,
        })
    }
}

/// Sorts an evaluation error: the model's fault is a verdict, the rest is ours.
fn eval_verdict<T>(result: Result<T, EvalError>) -> Result<Verdict<T>, EdgeError> {
    match result {
        Ok(value) => Ok(Verdict::Accepted(value)),
        Err(error) => match error.fault() {
            Fault::Model(code) => Ok(Verdict::Rejected(Refusal::new(code, error.to_string()))),
            Fault::Input => Err(EdgeError::Unavailable(error.to_string())),
            Fault::Machine => Err(EdgeError::Operator(error.to_string())),
        },
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EdgeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EdgeError::Operator(format!("a worker thread died: {e}")))
}

/// Evaluation in this process: for trusted models and tests. The runner uses the evaluation
/// worker, which runs the same code in a bounded child process.
#[derive(Debug, Clone)]
pub struct InProcessEvaluator {
    /// Device, truncation, threads, template isolation, template date.
    pub options: EvalOptions,
}

impl ModelEvaluator for InProcessEvaluator {
    async fn check(
        &self,
        dir: &Path,
        competition: &Competition,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        let (dir, competition) = (dir.to_owned(), competition.clone());
        let (max_seq_len, memory_max_bytes) =
            (self.options.max_seq_len, self.options.memory_max_bytes);
        let checked =
            blocking(move || check_model(&dir, &competition, max_seq_len, memory_max_bytes))
                .await?;
        match checked {
            Ok(Ok(checked)) => Ok(Verdict::Accepted(checked)),
            Ok(Err(failed)) => Ok(Verdict::Rejected(Refusal::new(failed.code, failed.detail))),
            Err(error) => eval_verdict(Err(error)),
        }
    }

    async fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        let (dir, options) = (dir.to_owned(), self.options.clone());
        let prepared = blocking(move || tokenize_pairs(&dir, &pairs, &options)).await?;
        eval_verdict(prepared.map(TokenizedBatch::from))
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        let (dir, batch) = (request.dir.clone(), request.batch.clone());
        let options = self.options.clone();
        let worker = this_worker(&format!("{} {}", options.device, options.precision));
        let evaluated = blocking(move || {
            let model = ModelDir::open(&dir)?;
            evaluate_prepared(&model, &batch, &options, |_| {})
        })
        .await?;
        match eval_verdict(evaluated)? {
            Verdict::Accepted(evaluation) => Ok(Evaluated {
                session_seconds: evaluation.session_seconds,
                scoring_seconds: evaluation.evaluate_seconds,
                ..Evaluated::new(
                    EvalOutcome::Losses(LossVec(
                        evaluation.results.iter().map(|r| r.loss_f32()).collect(),
                    )),
                    worker,
                )
            }),
            Verdict::Rejected(refusal) => {
                Ok(Evaluated::new(EvalOutcome::Failed(refusal.detail), worker))
            }
        }
    }
}

/// The chains a run can be given: a live node or a recording.
#[derive(Debug)]
pub enum AnyChain {
    /// A subtensor node.
    Live(LiveChain),
    /// A recorded chain.
    Recorded(super::snapshot::RecordedChain),
}

impl ChainEdge for AnyChain {
    async fn head(&self, steps_begun: u64) -> Result<u64, EdgeError> {
        match self {
            AnyChain::Live(chain) => chain.head(steps_begun).await,
            AnyChain::Recorded(chain) => chain.head(steps_begun).await,
        }
    }

    async fn observe(&self, block: u64) -> Result<Observation, EdgeError> {
        match self {
            AnyChain::Live(chain) => chain.observe(block).await,
            AnyChain::Recorded(chain) => chain.observe(block).await,
        }
    }
}

/// The model stores a run can be given: a Hugging Face-compatible hub or a directory.
#[derive(Debug)]
pub enum AnyStore {
    /// A hub.
    Hub(Hub),
    /// A directory of repositories.
    Local(LocalStore),
}

impl ModelStore for AnyStore {
    async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> Result<Verdict<StoredModel>, EdgeError> {
        match self {
            AnyStore::Hub(store) => ModelStore::fetch(store, hotkey, model, repo_bytes_max).await,
            AnyStore::Local(store) => ModelStore::fetch(store, hotkey, model, repo_bytes_max).await,
        }
    }

    fn dir_of(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        match self {
            AnyStore::Hub(store) => store.dir_of(hotkey, model),
            AnyStore::Local(store) => store.dir_of(hotkey, model),
        }
    }
}

/// The evaluators a run can be given: a pool of local devices, or remote workers.
#[derive(Debug)]
pub enum AnyEvaluator {
    /// One worker per local device.
    Pool(super::pool::EvaluatorPool<crate::eval::worker::WorkerEvaluator>),
    /// Remote workers over NATS JetStream (boxed: it holds the local worker for checks and
    /// the queue's connection, and there is one per run).
    Queue(Box<super::queue::QueueEvaluator<crate::eval::worker::WorkerEvaluator>>),
}

impl ModelEvaluator for AnyEvaluator {
    async fn check(
        &self,
        dir: &Path,
        competition: &Competition,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        match self {
            AnyEvaluator::Pool(pool) => pool.check(dir, competition).await,
            AnyEvaluator::Queue(queue) => queue.check(dir, competition).await,
        }
    }

    async fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        match self {
            AnyEvaluator::Pool(pool) => pool.tokenize(dir, pairs).await,
            AnyEvaluator::Queue(queue) => queue.tokenize(dir, pairs).await,
        }
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        match self {
            AnyEvaluator::Pool(pool) => pool.evaluate(request).await,
            AnyEvaluator::Queue(queue) => queue.evaluate(request).await,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            AnyEvaluator::Pool(pool) => pool.capacity(),
            AnyEvaluator::Queue(queue) => queue.capacity(),
        }
    }

    fn workers(&self) -> usize {
        match self {
            AnyEvaluator::Pool(pool) => pool.workers(),
            AnyEvaluator::Queue(queue) => queue.workers(),
        }
    }

    fn reads_files_here(&self) -> bool {
        match self {
            AnyEvaluator::Pool(pool) => pool.reads_files_here(),
            AnyEvaluator::Queue(queue) => queue.reads_files_here(),
        }
    }
}
