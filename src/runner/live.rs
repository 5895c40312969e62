//! The live implementations of the runner's edges: the chain over subxt ([`LiveChain`],
//! [`LiveWeights`]), the model stores ([`Hub`], [`LocalStore`]), the evaluation worker
//! ([`WorkerEvaluator`], whose job and reply protocol `eval::worker` defines), and the
//! `Any*` enums a run is given. The vocabulary they answer in is [`super::edges`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::edges::{
    ChainEdge, ChainRefusal, EdgeError, EvalRequest, Evaluated, ModelEvaluator, ModelStore,
    Observation, Refusal, StoredModel, TokenizedBatch, Verdict, WeightsChain,
};
use super::identity::this_worker;
use crate::chain::transactions::refusal_reason;
use crate::chain::weights::{Sent, Standing};
use crate::chain::{Chain, ChainError};
use crate::eval::batch::{CheckRules, ModelChecked};
use crate::eval::worker::{Job, Reply, WorkerEvaluator, WorkerFailure};
use crate::hub::local::LocalStore;
use crate::hub::{Fetched, Hub, HubError};
use crate::machine::event::{
    EvalOutcome, RejectionCode, SubmitMethod, ValidatorWeights, ValidatorWeightsObserved,
    WeightsCommitted, WeightsPrepared,
};
use crate::machine::model_id::ModelId;

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
    /// The subnet's mechanism weights are set on (`--mechid`).
    pub mecid: u8,
    /// The validator's hotkey.
    pub hotkey: Arc<crate::chain::wallet::Hotkey>,
}

impl LiveWeights {
    fn mechanism(&self) -> crate::chain::mechanism::SubnetMechanism {
        crate::chain::mechanism::SubnetMechanism {
            netuid: self.netuid,
            mecid: self.mecid,
        }
    }
}

impl WeightsChain for LiveWeights {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        self.chain
            .standing(self.mechanism(), self.hotkey.keypair.public_key().0)
            .await
            .map_err(chain_error)
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        self.chain
            .plan_submission(self.mechanism())
            .await
            .map_err(chain_error)
    }

    async fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        if prepared.mecid != self.mecid {
            return Err(EdgeError::Operator(format!(
                "weights prepared for mechanism {} cannot go out on mechanism {} (--mechid)",
                prepared.mecid, self.mecid
            )));
        }
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

    async fn mechanism_count(&self) -> Result<u8, EdgeError> {
        self.chain
            .mechanism_count(self.netuid)
            .await
            .map_err(chain_error)
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

    async fn block_hash(&self, block: u64) -> Result<Option<String>, EdgeError> {
        let hash = self.chain.block_hash(block).await.map_err(chain_error)?;
        Ok(Some(hash))
    }

    async fn validator_weights(
        &self,
        block: u64,
        stake_min: f32,
    ) -> Result<Option<ValidatorWeightsObserved>, EdgeError> {
        let (_, metagraph) = self
            .chain
            .metagraph(self.netuid, Some(block))
            .await
            .map_err(chain_error)?;
        let mut validators = Vec::new();
        for (index, &stake_rao) in metagraph.stake.iter().enumerate() {
            // The metagraph's stake in whole units, as bittensor's float32 `S` holds it.
            #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)] // F's f32
            let stake = (stake_rao as f64 / 1e9) as f32;
            let permit = metagraph.validator_permit.get(index).copied() == Some(true);
            let Ok(uid) = u16::try_from(index) else {
                break;
            };
            // The scan keeps only these: reading the others' weights would cost a call each.
            if !permit || stake < stake_min {
                continue;
            }
            let weights = self
                .chain
                .weights(self.netuid, uid, Some(block))
                .await
                .map_err(chain_error)?;
            validators.push(ValidatorWeights {
                uid,
                stake,
                validator_permit: permit,
                weights,
            });
        }
        Ok(Some(ValidatorWeightsObserved { validators }))
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EdgeError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| EdgeError::Operator(format!("a worker thread died: {e}")))
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

    async fn block_hash(&self, block: u64) -> Result<Option<String>, EdgeError> {
        match self {
            AnyChain::Live(chain) => chain.block_hash(block).await,
            AnyChain::Recorded(chain) => chain.block_hash(block).await,
        }
    }

    async fn validator_weights(
        &self,
        block: u64,
        stake_min: f32,
    ) -> Result<Option<ValidatorWeightsObserved>, EdgeError> {
        match self {
            AnyChain::Live(chain) => chain.validator_weights(block, stake_min).await,
            AnyChain::Recorded(chain) => chain.validator_weights(block, stake_min).await,
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
    Pool(super::pool::EvaluatorPool<WorkerEvaluator>),
    /// Remote workers over NATS JetStream (boxed: it holds the local worker for checks and
    /// the queue's connection, and there is one per run).
    Queue(Box<super::queue::QueueEvaluator<WorkerEvaluator>>),
}

impl ModelEvaluator for AnyEvaluator {
    async fn check(
        &self,
        dir: &Path,
        rules: &CheckRules,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        match self {
            AnyEvaluator::Pool(pool) => pool.check(dir, rules).await,
            AnyEvaluator::Queue(queue) => queue.check(dir, rules).await,
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

/// A failure of the worker on a model's files: the model's fault, as a refusal.
fn refusal_of_failure(failure: &WorkerFailure, what: &str) -> Result<Refusal, EdgeError> {
    match failure {
        WorkerFailure::Timeout(limit) => Ok(Refusal::new(
            RejectionCode::MalformedRepo,
            format!("{what} did not finish within {} s", limit.as_secs()),
        )),
        WorkerFailure::Crashed(why) => Ok(Refusal::new(
            RejectionCode::MalformedRepo,
            format!("{what} crashed the evaluation worker {why}"),
        )),
        WorkerFailure::Spawn(why) => Err(EdgeError::Operator(format!(
            "cannot start the evaluation worker: {why}"
        ))),
        WorkerFailure::Limited(why) => Err(EdgeError::Operator(why.clone())),
    }
}

fn unexpected(reply: &Reply) -> EdgeError {
    EdgeError::Operator(format!(
        "the evaluation worker answered out of turn: {reply:?}"
    ))
}

impl ModelEvaluator for WorkerEvaluator {
    async fn check(
        &self,
        dir: &Path,
        rules: &CheckRules,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        let job = Job::Check {
            dir: dir.to_owned(),
            rules: rules.clone(),
            // The checks ask whether the model fits at N's length; an evaluation at a longer
            // one estimates its own batch again.
            max_seq_len: self.max_seq_len.min(crate::eval::DEFAULT_MAX_SEQ_LEN),
            memory_max_bytes: self.memory_max_bytes,
        };
        match self.run(&job, self.prepare_timeout).await {
            Ok(Reply::Checked(checked)) => Ok(Verdict::Accepted(checked)),
            Ok(Reply::CheckFailed(failed)) => {
                Ok(Verdict::Rejected(Refusal::new(failed.code, failed.detail)))
            }
            Ok(Reply::ModelFailed { code, detail }) => {
                Ok(Verdict::Rejected(Refusal::new(code, detail)))
            }
            Ok(Reply::Unavailable(why)) => Err(EdgeError::Unavailable(why)),
            Ok(Reply::DeviceUnavailable(why) | Reply::MachineFault(why)) => {
                Err(EdgeError::Operator(why))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(failure) => {
                refusal_of_failure(&failure, "checking the model").map(Verdict::Rejected)
            }
        }
    }

    async fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        let job = Job::Tokenize {
            dir: dir.to_owned(),
            pairs: pairs.to_vec(),
            max_seq_len: self.max_seq_len,
            date: self.date,
        };
        match self.run(&job, self.prepare_timeout).await {
            Ok(Reply::Tokenized(prepared)) => Ok(Verdict::Accepted(prepared.into())),
            Ok(Reply::ModelFailed { code, detail }) => {
                Ok(Verdict::Rejected(Refusal::new(code, detail)))
            }
            Ok(Reply::Unavailable(why)) => Err(EdgeError::Unavailable(why)),
            Ok(Reply::DeviceUnavailable(why) | Reply::MachineFault(why)) => {
                Err(EdgeError::Operator(why))
            }
            Ok(other) => Err(unexpected(&other)),
            Err(failure) => {
                refusal_of_failure(&failure, "tokenising the batch").map(Verdict::Rejected)
            }
        }
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        let job = Job::Evaluate {
            dir: request.dir.clone(),
            device: self.device.to_string(),
            threads: self.threads,
            max_seq_len: self.max_seq_len,
            memory_max_bytes: self.memory_max_bytes,
            tokens_per_run: self.tokens_per_run,
            precision: self.precision,
            batch: request.batch.to_vec(),
        };
        let worker = this_worker(&format!("{} {}", self.device, self.precision));
        let failed = |why: String| Ok(Evaluated::new(EvalOutcome::Failed(why), worker.clone()));
        match self.run(&job, self.eval_timeout).await {
            Ok(Reply::Losses {
                losses,
                session_seconds,
                evaluate_seconds,
                ..
            }) => Ok(Evaluated {
                session_seconds,
                scoring_seconds: evaluate_seconds,
                ..Evaluated::new(EvalOutcome::Losses(losses), worker.clone())
            }),
            Ok(Reply::ModelFailed { detail, .. }) => failed(detail),
            Ok(Reply::Unavailable(why)) => Err(EdgeError::Unavailable(why)),
            Ok(Reply::DeviceUnavailable(why)) => Err(EdgeError::Device(format!(
                "the evaluation device {} cannot be used: {why}",
                self.device
            ))),
            Ok(Reply::MachineFault(why)) => Err(EdgeError::Operator(why)),
            Ok(other) => Err(unexpected(&other)),
            Err(WorkerFailure::Timeout(limit)) => failed(format!(
                "timeout: the evaluation took longer than {} s",
                limit.as_secs()
            )),
            Err(WorkerFailure::Crashed(why)) => {
                failed(format!("the evaluation worker crashed {why}"))
            }
            Err(WorkerFailure::Spawn(why)) => Err(EdgeError::Operator(format!(
                "cannot start the evaluation worker: {why}"
            ))),
            Err(WorkerFailure::Limited(why)) => Err(EdgeError::Operator(why)),
        }
    }
}
