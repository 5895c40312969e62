//! In-memory fakes of every edge, for tests of the loop (feature `testing`, enabled by the
//! crate's own dev-dependency only). Each is scripted: answers are queued per key and taken in
//! order, the last one repeating, so a test can say "unavailable twice, then verified".

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::weights::{Sent, Standing};
use crate::data::{BatchOutcome, BatchRequest, DataError, DataReport, DataSource};
use crate::eval::batch::CheckRules;
use crate::eval::batch::ModelChecked;
use crate::eval::tokenize::Prepared;
use crate::machine::event::{
    BatchFetched, EvalOutcome, EvaluatedBy, Provenance, SubmitMethod, WeightsCommitted,
    WeightsPrepared,
};
use crate::machine::model_id::{HashKind, ModelId};
use crate::machine::wire::Samples;
use crate::runner::edges::{
    Answer, ChainEdge, ChainRefusal, EdgeError, EvalRequest, Evaluated, ModelEvaluator, ModelStore,
    Observation, StoredModel, TokenizedBatch, Verdict, WeightsChain,
};

/// Replays the journal at `db` from genesis and panics on any divergence or rejection: what
/// every test of a run asks of the journal it leaves.
pub fn replay_clean(db: &Path) -> crate::replay::ReplayReport {
    let journal = crate::journal::Journal::open_existing(db).unwrap_or_else(|e| panic!("{e}"));
    let report = crate::replay::replay_journal(
        &journal,
        crate::replay::ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: false,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
    assert!(report.rejections.is_empty(), "{:?}", report.rejections);
    report
}

/// A queue of scripted answers: each call takes the next; the last repeats forever.
#[derive(Debug)]
pub struct Script<T>(Mutex<VecDeque<T>>);

impl<T: Clone> Script<T> {
    /// A script of `answers`, in order.
    pub fn new(answers: impl IntoIterator<Item = T>) -> Self {
        Self(Mutex::new(answers.into_iter().collect()))
    }

    /// The next answer (`None` for an empty script).
    pub fn next(&self) -> Option<T> {
        let mut queue = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() > 1 {
            queue.pop_front()
        } else {
            queue.front().cloned()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A scripted chain: what it shows is the latest observation at or before the block asked
/// for; its head advances `blocks_per_step` per step begun; it may fail first.
#[derive(Debug)]
pub struct FakeChain {
    /// The head at step 0.
    pub block_start: u64,
    /// Blocks the head advances per step.
    pub blocks_per_step: u64,
    /// What the chain shows, by the block it starts showing it.
    pub observations: BTreeMap<u64, Observation>,
    /// Errors returned (one per call) before any observation.
    pub failures: Mutex<VecDeque<EdgeError>>,
}

impl FakeChain {
    /// A chain showing `observation` from `block_start` on.
    pub fn new(block_start: u64, blocks_per_step: u64, observation: Observation) -> Self {
        Self {
            block_start,
            blocks_per_step,
            observations: BTreeMap::from([(block_start, observation)]),
            failures: Mutex::new(VecDeque::new()),
        }
    }

    fn failure(&self) -> Option<EdgeError> {
        lock(&self.failures).pop_front()
    }
}

impl ChainEdge for FakeChain {
    async fn head(&self, steps_begun: u64) -> Result<u64, EdgeError> {
        if let Some(error) = self.failure() {
            return Err(error);
        }
        Ok(self
            .block_start
            .saturating_add(self.blocks_per_step.saturating_mul(steps_begun)))
    }

    async fn observe(&self, block: u64) -> Result<Observation, EdgeError> {
        if let Some(error) = self.failure() {
            return Err(error);
        }
        let (_, shown) = self
            .observations
            .range(..=block)
            .next_back()
            .ok_or_else(|| EdgeError::Unavailable(format!("nothing at block {block}")))?;
        Ok(Observation {
            block,
            ..shown.clone()
        })
    }
}

/// How the fake chain answers one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeSend {
    /// As the real chain would: included at the next block unless inside the rate limit
    /// (then refused as `SettingWeightsTooFast`).
    Chain,
    /// Refused with this runtime error name.
    Refuse(String),
    /// Never reaches the chain; the caller hears a dropped connection.
    Lost,
    /// Lands on chain, but the caller hears a dropped connection (an unknown fate).
    LandedUnheard,
}

/// What the fake chain holds for the validator's uid, and its clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeWeightsChain {
    /// The head.
    pub head: u64,
    /// `LastUpdate` of the validator's uid.
    pub last_update: u64,
    /// `Weights` of the validator's uid.
    pub weights: Vec<(u16, u16)>,
    /// The unrevealed hash commit, if any.
    pub commit: Option<(WeightsPrepared, WeightsCommitted)>,
}

/// A simulated chain for the weight setter: a head that advances `blocks_per_read` blocks at
/// every standing read (a clock the test controls), the rate limit enforced as subtensor does,
/// scripted answers to sends, and every send recorded.
#[derive(Debug)]
pub struct FakeWeights {
    /// Blocks the head advances per standing read.
    pub blocks_per_read: u64,
    /// The validator's uid (`None`: not registered).
    pub uid: Option<u16>,
    /// Whether it holds a permit.
    pub validator_permit: bool,
    /// `WeightsSetRateLimit`.
    pub rate_limit: u64,
    /// `WeightsVersionKey`.
    pub version_key_min: u64,
    /// The rule: the method `plan` returns.
    pub method: SubmitMethod,
    /// For a hash commit: blocks from commit to the first reveal block, and the window's length.
    pub reveal_delay_blocks: u64,
    /// See `reveal_delay_blocks`.
    pub reveal_window_blocks: u64,
    /// Answers to sends, in order (the last repeats).
    pub sends: Script<FakeSend>,
    /// Errors returned by standing reads (one per call) before any answer.
    pub standing_failures: Mutex<VecDeque<EdgeError>>,
    /// What the chain holds.
    pub chain: Mutex<FakeWeightsChain>,
    /// Every prepared vector sent (and every reveal), in order.
    pub sent: Mutex<Vec<WeightsPrepared>>,
    /// The subnet's mechanisms (`MechanismCountCurrent`).
    pub mechanism_count: u8,
}

impl FakeWeights {
    /// A registered validator with a permit, plain weights, a rate limit of `rate_limit`, the
    /// head at `head`.
    pub fn new(head: u64, blocks_per_read: u64, rate_limit: u64) -> Self {
        Self {
            blocks_per_read,
            uid: Some(0),
            validator_permit: true,
            rate_limit,
            version_key_min: 0,
            method: SubmitMethod::Plain,
            reveal_delay_blocks: 3,
            reveal_window_blocks: 5,
            sends: Script::new([FakeSend::Chain]),
            standing_failures: Mutex::new(VecDeque::new()),
            chain: Mutex::new(FakeWeightsChain {
                head,
                last_update: 0,
                weights: Vec::new(),
                commit: None,
            }),
            sent: Mutex::new(Vec::new()),
            mechanism_count: 1,
        }
    }

    /// What the chain holds now.
    pub fn on_chain(&self) -> FakeWeightsChain {
        lock(&self.chain).clone()
    }

    /// Sets weights as subtensor's `do_set_weights` does: refused inside the rate limit or
    /// with a low version key, else included at the next block.
    fn set(&self, prepared: &WeightsPrepared) -> Verdict<u64, ChainRefusal> {
        let mut chain = lock(&self.chain);
        let block = chain.head.saturating_add(1);
        let refusal = |name: &str| {
            Verdict::Rejected(ChainRefusal {
                name: name.into(),
                reason: name.into(),
            })
        };
        if self.uid.is_none() {
            return refusal("HotKeyNotRegisteredInSubNet");
        }
        if prepared.version_key < self.version_key_min {
            return refusal("IncorrectWeightVersionKey");
        }
        if chain.last_update != 0 && block.saturating_sub(chain.last_update) < self.rate_limit {
            return refusal("SettingWeightsTooFast");
        }
        chain.head = block;
        chain.last_update = block;
        chain.weights = prepared.pairs();
        Verdict::Accepted(block)
    }
}

impl WeightsChain for FakeWeights {
    async fn standing(&self) -> Result<Standing, EdgeError> {
        if let Some(error) = lock(&self.standing_failures).pop_front() {
            return Err(error);
        }
        let mut chain = lock(&self.chain);
        chain.head = chain.head.saturating_add(self.blocks_per_read);
        Ok(Standing {
            head: chain.head,
            uid: self.uid,
            validator_permit: self.validator_permit,
            last_update: chain.last_update,
            weights: chain.weights.clone(),
            rate_limit: self.rate_limit,
            version_key_min: self.version_key_min,
        })
    }

    async fn plan(&self) -> Result<SubmitMethod, EdgeError> {
        Ok(self.method.clone())
    }

    async fn send(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<Sent, ChainRefusal>, EdgeError> {
        lock(&self.sent).push(prepared.clone());
        let answer = self.sends.next().unwrap_or(FakeSend::Chain);
        let lost = || Err(EdgeError::Unavailable("the connection dropped".into()));
        match answer {
            FakeSend::Refuse(name) => Ok(Verdict::Rejected(ChainRefusal {
                reason: name.clone(),
                name,
            })),
            FakeSend::Lost => lost(),
            FakeSend::Chain | FakeSend::LandedUnheard => {
                let verdict = if let SubmitMethod::CommitRevealHash { .. } = prepared.method {
                    // Subtensor's commit counts as the weight update: `LastUpdate` moves now,
                    // and the reveal leaves it where it is.
                    let mut chain = lock(&self.chain);
                    chain.head = chain.head.saturating_add(1);
                    chain.last_update = chain.head;
                    let first = chain.head.saturating_add(self.reveal_delay_blocks);
                    let committed = WeightsCommitted {
                        block_commit: chain.head,
                        block_reveal_first: first,
                        block_reveal_last: first.saturating_add(self.reveal_window_blocks),
                    };
                    chain.commit = Some((prepared.clone(), committed.clone()));
                    Verdict::Accepted(Sent::Committed(committed))
                } else if let SubmitMethod::Timelocked { .. } = prepared.method {
                    // The chain keeps the ciphertext and reveals it later: `LastUpdate` moves,
                    // `Weights` does not yet.
                    let mut chain = lock(&self.chain);
                    chain.head = chain.head.saturating_add(1);
                    chain.last_update = chain.head;
                    Verdict::Accepted(Sent::Included(chain.head))
                } else {
                    match self.set(prepared) {
                        Verdict::Accepted(block) => Verdict::Accepted(Sent::Included(block)),
                        Verdict::Rejected(refusal) => Verdict::Rejected(refusal),
                    }
                };
                if answer == FakeSend::LandedUnheard {
                    return lost();
                }
                Ok(verdict)
            }
        }
    }

    async fn find_commit(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, EdgeError> {
        Ok(lock(&self.chain)
            .commit
            .as_ref()
            .filter(|(committed, _)| committed == prepared)
            .map(|(_, window)| window.clone()))
    }

    async fn reveal(
        &self,
        prepared: &WeightsPrepared,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        lock(&self.sent).push(prepared.clone());
        let window = {
            let chain = lock(&self.chain);
            chain
                .commit
                .as_ref()
                .filter(|(committed, _)| committed == prepared)
                .map(|(_, window)| (window.clone(), chain.head.saturating_add(1)))
        };
        let Some((window, block)) = window else {
            return Ok(Verdict::Rejected(ChainRefusal {
                name: "NoWeightsCommitFound".into(),
                reason: "NoWeightsCommitFound".into(),
            }));
        };
        if block < window.block_reveal_first || block > window.block_reveal_last {
            return Ok(Verdict::Rejected(ChainRefusal {
                name: "InvalidRevealCommitTempo".into(),
                reason: "InvalidRevealCommitTempo".into(),
            }));
        }
        let mut chain = lock(&self.chain);
        chain.head = block;
        chain.weights = prepared.pairs();
        chain.commit = None;
        Ok(Verdict::Accepted(block))
    }

    async fn mechanism_count(&self) -> Result<u8, EdgeError> {
        Ok(self.mechanism_count)
    }
}

/// A scripted model store: answers by `(hotkey, commit)`; a model it accepts is "stored" in
/// `root/<hotkey>/<commit>`, which it creates.
#[derive(Debug)]
pub struct MemoryStore {
    /// Where accepted models are said to be.
    pub root: PathBuf,
    /// Answers by `(hotkey, commit)`; a model not listed is verified with the plain hash.
    pub answers: BTreeMap<(String, String), Script<Answer<StoredModel>>>,
    /// Every fetch asked for, in order.
    pub fetches: Mutex<Vec<(String, String)>>,
}

impl MemoryStore {
    /// An empty store under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            answers: BTreeMap::new(),
            fetches: Mutex::new(Vec::new()),
        }
    }

    /// Scripts the answers for one model.
    pub fn script(
        &mut self,
        hotkey: &str,
        commit: &str,
        answers: impl IntoIterator<Item = Answer<StoredModel>>,
    ) {
        self.answers
            .insert((hotkey.into(), commit.into()), Script::new(answers));
    }

    /// How many fetches were asked for.
    pub fn fetch_count(&self) -> usize {
        lock(&self.fetches).len()
    }
}

impl ModelStore for MemoryStore {
    async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        _repo_bytes_max: u64,
    ) -> Result<Verdict<StoredModel>, EdgeError> {
        let commit = model.commit.clone().unwrap_or_default();
        lock(&self.fetches).push((hotkey.to_owned(), commit.clone()));
        let scripted = self
            .answers
            .get(&(hotkey.to_owned(), commit))
            .and_then(Script::next);
        let answer = scripted.unwrap_or_else(|| {
            Ok(Verdict::Accepted(StoredModel {
                dir: self.dir_of(hotkey, model),
                hash_kind: HashKind::Plain,
                bytes_downloaded: 0,
            }))
        });
        if let Ok(Verdict::Accepted(stored)) = &answer {
            std::fs::create_dir_all(&stored.dir)
                .map_err(|e| EdgeError::Operator(format!("{}: {e}", stored.dir.display())))?;
        }
        answer
    }

    fn dir_of(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        self.root
            .join(hotkey)
            .join(model.commit.as_deref().unwrap_or("None"))
    }
}

/// The loss a fake model scores on a sample: `(model directory, sample index) -> loss`.
pub type LossOf = Arc<dyn Fn(&Path, usize) -> f32 + Send + Sync>;

/// A scripted evaluator: outcomes by model directory; losses from a function of the directory
/// and the sample index when none is scripted; tokenisation turns each pair into
/// `prompt_len` prompt ids and the response's bytes.
pub struct FakeEvaluator {
    /// Check verdicts by directory (default: passed).
    pub checks: BTreeMap<PathBuf, Script<Answer<ModelChecked>>>,
    /// Evaluation answers by directory.
    pub outcomes: BTreeMap<PathBuf, Script<Result<EvalOutcome, EdgeError>>>,
    /// Tokenisation answers by tokenizer directory (default: the synthetic ids).
    pub tokenizations: BTreeMap<PathBuf, Script<Answer<TokenizedBatch>>>,
    /// The loss of sample `index` for a model directory without scripted outcomes.
    pub loss_of: LossOf,
    /// Every evaluation asked for, by directory.
    pub evaluations: Mutex<Vec<PathBuf>>,
    /// Every tokenisation asked for, by directory.
    pub tokenized: Mutex<Vec<PathBuf>>,
    /// How long each evaluation takes (a slow device, a long step).
    pub evaluation_delay: std::time::Duration,
    /// Evaluations it runs at once.
    pub capacity: usize,
    /// The device its reports name.
    pub device: String,
}

impl std::fmt::Debug for FakeEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEvaluator").finish_non_exhaustive()
    }
}

impl Default for FakeEvaluator {
    fn default() -> Self {
        Self {
            checks: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            tokenizations: BTreeMap::new(),
            loss_of: Arc::new(|dir, index| {
                // A stable, distinct loss per model: the directory name's bytes.
                let seed: u32 = dir
                    .to_string_lossy()
                    .bytes()
                    .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                let index = u32::try_from(index % 64).unwrap_or(0);
                let unit = u16::try_from((seed.wrapping_add(index.wrapping_mul(17))) % 256)
                    .map_or(0.0, f32::from);
                2.0 + unit / 256.0
            }),
            evaluations: Mutex::new(Vec::new()),
            tokenized: Mutex::new(Vec::new()),
            evaluation_delay: std::time::Duration::ZERO,
            capacity: 1,
            device: "fake".into(),
        }
    }
}

impl FakeEvaluator {
    /// How many evaluations were asked for.
    pub fn evaluation_count(&self) -> usize {
        lock(&self.evaluations).len()
    }
}

impl ModelEvaluator for FakeEvaluator {
    async fn check(
        &self,
        dir: &Path,
        _rules: &CheckRules,
    ) -> Result<Verdict<ModelChecked>, EdgeError> {
        self.checks
            .get(dir)
            .and_then(Script::next)
            .unwrap_or_else(|| {
                Ok(Verdict::Accepted(ModelChecked {
                    parameters: 1,
                    norm_summary: "passes".into(),
                }))
            })
    }

    async fn tokenize(
        &self,
        dir: &Path,
        pairs: Arc<[(String, String)]>,
    ) -> Result<Verdict<TokenizedBatch>, EdgeError> {
        lock(&self.tokenized).push(dir.to_owned());
        if let Some(answer) = self.tokenizations.get(dir).and_then(Script::next) {
            return answer;
        }
        let prepared: Vec<Prepared> = pairs
            .iter()
            .map(|(prompt, response)| {
                let mut ids: Vec<i64> = prompt.bytes().map(i64::from).collect();
                let prompt_len = ids.len();
                ids.extend(response.bytes().map(i64::from));
                Prepared { ids, prompt_len }
            })
            .collect();
        Ok(Verdict::Accepted(prepared.into()))
    }

    async fn evaluate(&self, request: &EvalRequest) -> Result<Evaluated, EdgeError> {
        let dir = &request.dir;
        lock(&self.evaluations).push(dir.clone());
        if !self.evaluation_delay.is_zero() {
            tokio::time::sleep(self.evaluation_delay).await;
        }
        let worker = EvaluatedBy {
            host: "fake".into(),
            device: self.device.clone(),
            build: "fake".into(),
        };
        if let Some(answer) = self.outcomes.get(dir).and_then(Script::next) {
            return answer.map(|outcome| Evaluated::new(outcome, worker));
        }
        let losses = (0..request.batch.len())
            .map(|i| (self.loss_of)(dir, i))
            .collect();
        let outcome = EvalOutcome::Losses(crate::machine::wire::LossVec(losses));
        Ok(Evaluated::new(outcome, worker))
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A scripted data source: `size` synthetic samples per step, or the scripted errors first.
#[derive(Debug)]
pub struct FakeData {
    /// Samples per batch.
    pub size: usize,
    /// Answers before batches: `Some(error)` fails that call, `None` serves a batch.
    pub script: Script<Option<DataError>>,
    /// Every request served or refused, by step.
    pub requests: Mutex<Vec<u64>>,
}

impl FakeData {
    /// A source of `size`-sample batches that never fails.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            script: Script::new([None]),
            requests: Mutex::new(Vec::new()),
        }
    }
}

impl DataSource for FakeData {
    fn name(&self) -> String {
        "fake".into()
    }

    async fn fetch(&self, request: &BatchRequest) -> Result<BatchOutcome, DataError> {
        lock(&self.requests).push(request.step);
        if let Some(Some(error)) = self.script.next() {
            return Err(error);
        }
        let mut samples = Samples::new();
        for index in 0..self.size {
            let prompt = format!("prompt {} {index}", request.step);
            let response = format!("response {index}");
            samples
                .push(&prompt, &response, "fake")
                .map_err(|e| DataError::Config(e.to_string()))?;
        }
        Ok(BatchOutcome {
            batch: BatchFetched {
                step: request.step,
                provenance: Provenance {
                    source: self.name(),
                    seed: request.seed.decimal(),
                    references: Vec::new(),
                },
                samples,
            },
            report: DataReport::default(),
        })
    }
}
