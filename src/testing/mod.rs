//! In-memory fakes of every edge, for tests of the loop (feature `testing`, enabled by the
//! crate's own dev-dependency only). Each is scripted: answers are queued per key and taken in
//! order, the last one repeating, so a test can say "unavailable twice, then verified".

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::chain::weights::ChainWeights;
use crate::data::{BatchOutcome, BatchRequest, DataError, DataReport, DataSource};
use crate::eval::batch::ModelChecked;
use crate::eval::tokenize::Prepared;
use crate::machine::event::{BatchFetched, EvalOutcome, Provenance};
use crate::machine::model_id::{HashKind, ModelId};
use crate::machine::params::Competition;
use crate::machine::wire::Samples;
use crate::runner::edges::{
    Answer, ChainEdge, ChainRefusal, EdgeError, ModelEvaluator, ModelStore, Observation,
    StoredModel, TokenizedBatch, Verdict,
};

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
    /// The answer to every weight submission.
    pub submit_answer: Result<Verdict<u64, ChainRefusal>, EdgeError>,
    /// Every submission received.
    pub submissions: Mutex<Vec<ChainWeights>>,
}

impl FakeChain {
    /// A chain showing `observation` from `block_start` on.
    pub fn new(block_start: u64, blocks_per_step: u64, observation: Observation) -> Self {
        Self {
            block_start,
            blocks_per_step,
            observations: BTreeMap::from([(block_start, observation)]),
            failures: Mutex::new(VecDeque::new()),
            submit_answer: Ok(Verdict::Accepted(block_start)),
            submissions: Mutex::new(Vec::new()),
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

    async fn submit_weights(
        &self,
        weights: &ChainWeights,
    ) -> Result<Verdict<u64, ChainRefusal>, EdgeError> {
        lock(&self.submissions).push(weights.clone());
        self.submit_answer.clone()
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
        _competition: &Competition,
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

    async fn evaluate(&self, dir: &Path, batch: TokenizedBatch) -> Result<EvalOutcome, EdgeError> {
        lock(&self.evaluations).push(dir.to_owned());
        if let Some(answer) = self.outcomes.get(dir).and_then(Script::next) {
            return answer;
        }
        let losses = (0..batch.len()).map(|i| (self.loss_of)(dir, i)).collect();
        Ok(EvalOutcome::Losses(crate::machine::wire::LossVec(losses)))
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
