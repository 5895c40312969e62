//! Model evaluation without PyTorch and without running miner code: we read the model's files,
//! build the ONNX graph ourselves (with the loss inside) and let ONNX Runtime run it.
//!
//! - [`safetensors`]: hostile-safe headers, shards, streaming reads.
//! - [`config`]: `config.json` in both styles, checked.
//! - [`onnx`] and [`export`](mod@export): the graph, weights as external data into the safetensors files.
//! - [`template`] and [`tokenize`]: chat templates and N's tokenisation.
//! - [`runs`]: samples packed into padded runs of a token budget.
//! - [`runtime`]: ONNX Runtime sessions on CPU or CUDA.
//! - [`checks`]: parameter count and N's norm check.
//! - [`estimate`]: a model's peak memory before any session is built, and its budget.

pub mod batch;
pub mod checks;
pub mod config;
pub mod estimate;
pub mod export;
pub mod limits;
pub mod onnx;
pub mod runs;
pub mod runtime;
pub mod safetensors;
pub mod template;
pub mod tokenize;
pub mod widen;
#[cfg(feature = "node")]
pub mod worker;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::machine::event::RejectionCode;
use checks::{NormReport, norm_check, parameter_count};
use config::ModelConfig;
use export::{ExportOptions, Precision, export};
use runtime::{Device, ModelSession};
use safetensors::WeightIndex;
use template::{CivilDate, Isolation};
use tokenize::Prepared;

/// N's `sequence_length`.
pub const DEFAULT_MAX_SEQ_LEN: usize = 2048;

/// The longest sample the successor's evaluation graph is built for. F truncates nothing
/// (its competition's 16,384 is ignored by its loaders, and codeforces judges length by a
/// four-characters-a-token estimate): a reference sample past this scores +infinity.
pub const SUCCESSOR_MAX_SEQ_LEN: usize = 32_768;

/// What can stop an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("{path}: missing {what}")]
    MissingFile {
        /// Where it was looked for.
        path: PathBuf,
        /// What it should be.
        what: String,
    },
    /// A weight file is malformed or hostile.
    #[error("{path}: malformed safetensors: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("missing tensor {name}: {detail}")]
    MissingTensor {
        /// Its name.
        name: String,
        /// Context.
        detail: String,
    },
    /// `config.json` makes no sense.
    #[error("invalid config.json: {0}")]
    Config(String),
    /// An architecture or flag we do not evaluate.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A class the successor lists but can never score, so neither do we.
    #[error("never scored: {0}")]
    NeverScored(String),
    /// The tokenizer files are unusable.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed, looped or exploded.
    #[error("chat template: {0}")]
    Template(String),
    /// The model would need more memory than it may have.
    #[error("resources: {0}")]
    Resources(String),
    /// ONNX Runtime failed.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// CUDA was asked for but cannot be used.
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    /// This machine's resource limits, lower than the evaluation asks for, stopped it.
    #[error("{0}")]
    Limits(String),
    /// ONNX Runtime, or the widening of the weights before it, could not allocate within the
    /// evaluation child's address space (the memory budget, 4 GiB of slack and the model's
    /// weight files).
    #[error(
        "the evaluation ran out of its address space (the memory budget, 4 GiB and the \
         model's weight files; --eval-memory-max-bytes raises it): {0}"
    )]
    OutOfMemory(String),
    /// The evaluation data is unusable.
    #[error("data line {line}: {detail}")]
    Data {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
}

/// Whose fault an evaluation error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The model's files: a recorded rejection of that model.
    Model(RejectionCode),
    /// The paths or data the caller gave (a missing directory, a bad data file).
    Input,
    /// This machine: ONNX Runtime, CUDA. Nobody's model is at fault; try again once fixed.
    Machine,
}

impl EvalError {
    /// Whose fault this is: the one classification both `validator eval` (exit 2 for the
    /// model's or the input's fault, 1 for the machine's) and the runner (a rejection, or a
    /// retry) use.
    pub fn fault(&self) -> Fault {
        match self {
            EvalError::Malformed { .. }
            | EvalError::MissingTensor { .. }
            | EvalError::Config(_)
            | EvalError::MissingFile { .. }
            | EvalError::Tokenizer(_)
            | EvalError::Template(_)
            | EvalError::Resources(_) => Fault::Model(RejectionCode::MalformedRepo),
            EvalError::Unsupported(_) => Fault::Model(RejectionCode::UnsupportedArchitecture),
            EvalError::NeverScored(_) => Fault::Model(RejectionCode::NeverScored),
            EvalError::Io { .. } | EvalError::Data { .. } => Fault::Input,
            EvalError::Runtime(_)
            | EvalError::CudaUnavailable(_)
            | EvalError::Limits(_)
            | EvalError::OutOfMemory(_) => Fault::Machine,
        }
    }
}

/// A model directory: its config and its weights' index.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
    /// `config.json`.
    pub config: ModelConfig,
    /// The safetensors.
    pub weights: WeightIndex,
}

impl ModelDir {
    /// Reads and checks a model directory (no session is built).
    pub fn open(path: &Path) -> Result<Self, EvalError> {
        let config = ModelConfig::read(path)?;
        let weights = WeightIndex::open(path)?;
        let embedding = weights.get("model.embed_tokens.weight")?;
        if embedding.shape != [config.vocab_size, config.hidden_size] {
            return Err(EvalError::Config(format!(
                "the embedding has shape {:?} but config.json says vocab {} × hidden {}",
                embedding.shape, config.vocab_size, config.hidden_size
            )));
        }
        Ok(Self {
            path: path.to_owned(),
            config,
            weights,
        })
    }

    /// Parameters, counted as `model.parameters()` would.
    pub fn parameter_count(&self) -> u64 {
        parameter_count(&self.config, &self.weights)
    }

    /// Refuses the model if its memory estimate on sequences of `seq_len` tokens, with rotary
    /// tables for `max_positions`, is over `memory_max_bytes` (see [`estimate`]).
    pub fn check_memory(
        &self,
        seq_len: usize,
        max_positions: usize,
        memory_max_bytes: u64,
    ) -> Result<(), EvalError> {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        estimate::MemoryEstimate::of(
            &self.config,
            &self.weights,
            to_u64(seq_len),
            to_u64(max_positions),
        )
        .check(memory_max_bytes)
    }

    /// The largest token budget per run, at most `wanted`, whose estimate for sequences of
    /// `seq_len` tokens fits `memory_max_bytes`; not halved below `seq_len` (one sample alone,
    /// which [`Self::check_memory`] decides). Packing is our choice, so it shrinks to fit
    /// rather than refuse a model.
    pub fn fitting_tokens_per_run(
        &self,
        seq_len: usize,
        max_positions: usize,
        memory_max_bytes: u64,
        wanted: usize,
    ) -> usize {
        let to_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let mut tokens = wanted;
        while tokens > seq_len
            && estimate::MemoryEstimate::of_run(
                &self.config,
                &self.weights,
                to_u64(seq_len),
                to_u64(tokens),
                to_u64(max_positions),
            )
            .check(memory_max_bytes)
            .is_err()
        {
            tokens /= 2;
        }
        // Never above what was asked (a budget under one long sample only means that sample
        // runs alone), never halved below one longest sample.
        tokens.max(seq_len.min(wanted)).max(1)
    }

    /// N's norm check.
    pub fn norm_check(&self) -> Result<NormReport, EvalError> {
        norm_check(&self.config, &self.weights)
    }
}

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// CPU or CUDA.
    pub device: Device,
    /// Truncation length (N: 2048).
    pub max_seq_len: usize,
    /// CPU threads for ONNX Runtime.
    pub threads: usize,
    /// How chat templates are rendered.
    pub isolation: Isolation,
    /// The date `strftime_now` returns to templates.
    pub date: CivilDate,
    /// The most memory an evaluation may need, by [`estimate::MemoryEstimate`].
    pub memory_max_bytes: u64,
    /// Tokens (padding included) in one `Session::run`; see [`runs`].
    pub tokens_per_run: usize,
    /// What the graph computes in (see [`Precision::default_for`]).
    pub precision: Precision,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            max_seq_len: DEFAULT_MAX_SEQ_LEN,
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            isolation: Isolation::InProcess,
            date: CivilDate::today(),
            memory_max_bytes: estimate::machine_budget_bytes(),
            tokens_per_run: runs::DEFAULT_TOKENS_PER_RUN_CPU,
            precision: Precision::F32,
        }
    }
}

/// Waits for `child` at most `timeout`, polling every `poll`; past it the child is killed and
/// reaped, and the answer is `None`. For the short-lived helpers the evaluation runs
/// synchronously (the template renderer, `nvidia-smi`), which must not hang the caller.
pub(crate) fn wait_or_kill(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
    poll: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(poll);
    }
}

/// One prompt/response pair of an evaluation data file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataSample {
    /// The prompt.
    pub prompt: String,
    /// The reference response.
    pub response: String,
}

/// The largest data file `validator eval` reads (N's batches are 400 samples).
pub const SAMPLES_FILE_BYTES_MAX: u64 = 256 << 20;

/// The longest line of a data file.
pub const SAMPLE_LINE_BYTES_MAX: usize = 4 << 20;

/// Reads a JSON Lines file of `{"prompt", "response"}` samples: a regular file (a FIFO or a
/// device is refused before anything is read), read through a size limit, line by line, each
/// line checked for its length and UTF-8 before it is parsed, and at least one sample.
pub fn read_samples(path: &Path) -> Result<Vec<DataSample>, EvalError> {
    use std::io::{BufRead, Read};
    let io = |source: std::io::Error| EvalError::Io {
        path: path.to_owned(),
        source,
    };
    let refuse = |why: String| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, why));
    // Checked before opening too: opening a FIFO for reading waits for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    if metadata.len() > SAMPLES_FILE_BYTES_MAX {
        return Err(refuse(format!(
            "{} bytes, over the {SAMPLES_FILE_BYTES_MAX}-byte limit of a data file",
            metadata.len()
        )));
    }
    let mut reader = std::io::BufReader::new(file.take(SAMPLES_FILE_BYTES_MAX));
    let mut samples = Vec::new();
    let mut line = Vec::new();
    for number in 1usize.. {
        line.clear();
        let read = (&mut reader)
            .take(u64::try_from(SAMPLE_LINE_BYTES_MAX).unwrap_or(u64::MAX) + 1)
            .read_until(b'\n', &mut line)
            .map_err(io)?;
        if read == 0 {
            break;
        }
        if line.len() > SAMPLE_LINE_BYTES_MAX {
            return Err(EvalError::Data {
                line: number,
                detail: format!("longer than {SAMPLE_LINE_BYTES_MAX} bytes"),
            });
        }
        let text = std::str::from_utf8(&line).map_err(|e| EvalError::Data {
            line: number,
            detail: format!("not UTF-8 ({e})"),
        })?;
        if text.trim().is_empty() {
            continue;
        }
        samples.push(serde_json::from_str(text).map_err(|e| EvalError::Data {
            line: number,
            detail: format!("expected {{\"prompt\": string, \"response\": string}}: {e}"),
        })?);
    }
    if samples.is_empty() {
        return Err(refuse("no samples: the file holds no JSON line".into()));
    }
    Ok(samples)
}

/// A model ready to score samples: its session, reused for every run.
#[derive(Debug)]
pub struct Evaluator {
    session: ModelSession,
    vocab_size: u64,
    max_positions: usize,
    tokens_per_run: usize,
    length_multiple: usize,
}

/// The result of one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleResult {
    /// The loss (+infinity when nothing is left to predict or the sample failed).
    pub loss: f64,
    /// Tokens in the (truncated) conversation.
    pub tokens: usize,
    /// Targets scored.
    pub targets: usize,
    /// Why the sample failed, if it did.
    pub error: Option<String>,
}

impl SampleResult {
    /// The loss as journaled: the session computes it in f32, so narrowing the widened value
    /// back is exact (infinities and NaN included).
    #[allow(clippy::cast_possible_truncation)]
    pub fn loss_f32(&self) -> f32 {
        self.loss as f32
    }

    fn failed(tokens: usize, error: String) -> Self {
        Self {
            loss: f64::INFINITY,
            tokens,
            targets: 0,
            error: Some(error),
        }
    }
}

impl Evaluator {
    /// Exports the model and builds its session.
    pub fn new(model: &ModelDir, options: &EvalOptions) -> Result<Self, EvalError> {
        if let Some(why) = options.precision.unsupported_on(options.device) {
            return Err(EvalError::Runtime(why));
        }
        let graph = export(
            &model.config,
            &model.weights,
            &ExportOptions::for_device(options.max_seq_len, options.precision, options.device),
        )?;
        let session = ModelSession::new(
            &graph.model,
            &graph.widened,
            model,
            options.device,
            options.threads,
        )?;
        Ok(Self {
            session,
            vocab_size: model.config.vocab_size,
            max_positions: options.max_seq_len,
            tokens_per_run: options.tokens_per_run,
            length_multiple: runs::padded_length_multiple(options.device),
        })
    }

    /// Scores one prepared sample (a run of its own).
    pub fn score(&mut self, sample: &Prepared) -> SampleResult {
        self.score_all(std::slice::from_ref(sample), |_, _| {})
            .pop()
            .unwrap_or_else(|| SampleResult::failed(sample.ids.len(), "no result".into()))
    }

    /// Scores one sample alone at its own length, unpadded: the reference the packed runs
    /// of [`Self::score_all`] are checked against.
    pub fn score_unpadded(&mut self, sample: &Prepared) -> SampleResult {
        if let Some(result) = self.early_result(sample) {
            return result;
        }
        match self.run(std::slice::from_ref(sample), &[0], sample.ids.len()) {
            Ok(mut one) => one.remove(0),
            Err(error) => SampleResult::failed(sample.ids.len(), error.to_string()),
        }
    }

    /// The result of a sample that is not run: nothing to predict (+infinity, as a sample
    /// that cannot win), longer than the graph's positions, or a token id outside the
    /// vocabulary (failed).
    fn early_result(&self, sample: &Prepared) -> Option<SampleResult> {
        let tokens = sample.ids.len();
        if !sample.has_targets() {
            Some(SampleResult {
                loss: f64::INFINITY,
                tokens,
                targets: 0,
                error: None,
            })
        } else if tokens > self.max_positions {
            Some(SampleResult::failed(
                tokens,
                format!(
                    "{tokens} tokens, over the graph's {} positions",
                    self.max_positions
                ),
            ))
        } else {
            sample
                .ids
                .iter()
                .find(|id| u64::try_from(**id).map_or(true, |id| id >= self.vocab_size))
                .map(|bad| {
                    SampleResult::failed(
                        tokens,
                        format!(
                            "token id {bad} is outside the model's vocabulary of {}",
                            self.vocab_size
                        ),
                    )
                })
        }
    }

    /// Scores every sample, packed into runs (see [`runs::plan`]); the results are in
    /// `samples`' order, and `on_sample(index, result)` is called as each is known. Like N, a
    /// sample that fails scores +infinity; a sample with nothing to predict (N: NaN) also
    /// scores +infinity. A run that fails is retried one sample at a time, so one sample's
    /// failure is never its neighbours'.
    pub fn score_all(
        &mut self,
        samples: &[Prepared],
        mut on_sample: impl FnMut(usize, &SampleResult),
    ) -> Vec<SampleResult> {
        let mut results: Vec<Option<SampleResult>> = vec![None; samples.len()];
        let mut runnable = Vec::new();
        for (index, sample) in samples.iter().enumerate() {
            match self.early_result(sample) {
                Some(result) => {
                    on_sample(index, &result);
                    results[index] = Some(result);
                }
                None => runnable.push(index),
            }
        }
        let lengths: Vec<usize> = runnable.iter().map(|&i| samples[i].ids.len()).collect();
        let planned = runs::plan(
            &lengths,
            self.tokens_per_run,
            self.max_positions,
            self.length_multiple,
        );
        for run in planned {
            let members: Vec<usize> = run.members.iter().map(|&m| runnable[m]).collect();
            let scored = self.run(samples, &members, run.length);
            let scored = match scored {
                Ok(scored) => scored,
                Err(_) if members.len() > 1 => members
                    .iter()
                    .map(|&member| {
                        self.run(samples, &[member], run.length)
                            .map(|mut one| one.remove(0))
                            .unwrap_or_else(|error| {
                                SampleResult::failed(samples[member].ids.len(), error.to_string())
                            })
                    })
                    .collect(),
                Err(error) => vec![SampleResult::failed(
                    samples[members[0]].ids.len(),
                    error.to_string(),
                )],
            };
            for (member, result) in members.into_iter().zip(scored) {
                on_sample(member, &result);
                results[member] = Some(result);
            }
        }
        results
            .into_iter()
            .zip(samples)
            .map(|(result, sample)| {
                result.unwrap_or_else(|| SampleResult::failed(sample.ids.len(), "not run".into()))
            })
            .collect()
    }

    /// One run: `members` right-padded to `length` (padding: token 0, masked labels).
    fn run(
        &mut self,
        samples: &[Prepared],
        members: &[usize],
        length: usize,
    ) -> Result<Vec<SampleResult>, EvalError> {
        let mut ids = Vec::with_capacity(members.len() * length);
        let mut labels = Vec::with_capacity(members.len() * length);
        for &member in members {
            let sample = &samples[member];
            let padding = length.saturating_sub(sample.ids.len());
            ids.extend_from_slice(&sample.ids);
            ids.extend(std::iter::repeat_n(0, padding));
            labels.extend(sample.labels());
            labels.extend(std::iter::repeat_n(export::IGNORE_INDEX, padding));
        }
        let losses = self.session.run(&ids, &labels, members.len(), length)?;
        Ok(members
            .iter()
            .zip(losses)
            .map(|(&member, result)| {
                let tokens = samples[member].ids.len();
                if result.target_count > 0 && result.loss_mean.is_finite() {
                    SampleResult {
                        loss: f64::from(result.loss_mean),
                        tokens,
                        targets: result.target_count,
                        error: None,
                    }
                } else {
                    // No targets (0/0 in the graph), or NaN from NaN weights: the sample
                    // cannot win.
                    SampleResult {
                        loss: if result.target_count > 0 && result.loss_mean.is_nan() {
                            f64::NAN
                        } else {
                            f64::INFINITY
                        },
                        tokens,
                        targets: result.target_count,
                        error: None,
                    }
                }
            })
            .collect())
    }
}
