//! The evaluation worker: every computation a miner's files control (the checks, the tokenizer
//! and its chat template, the session build and the evaluation) runs in a child process of
//! the validator (`validator __eval-worker`), one job per child. The parent never loads ONNX
//! Runtime or a miner's tokenizer, so a crash, a hang or a poisoned GPU dies with the child.
//!
//! Protocol: the parent writes one [`Job`] as a JSON line to the child's stdin and keeps stdin
//! open; the child writes one [`Reply`] as a JSON line to stdout and exits. A child whose stdin
//! closes (the parent died) exits at once. The parent bounds each job by a timeout, killing the
//! child's whole process group, retries a crash once in a fresh child, and sorts the answers
//! into the evaluator edge's shape.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::batch::{
    CheckFailed, CheckRules, ModelChecked, check_model, evaluate_prepared, tokenize_pairs,
};
use super::export::Precision;
use super::limits::ChildLimits;
use super::runtime::Device;
use super::safetensors::weight_file_bytes;
use super::template::{CivilDate, Isolation};
use super::tokenize::Prepared;
use super::{EvalError, EvalOptions, Fault, ModelDir};
use crate::machine::event::RejectionCode;
use crate::machine::wire::LossVec;

/// The largest job a worker reads (a tokenised batch of 400 samples of 2048 tokens is ~6 MB).
const JOB_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// The largest reply the parent reads.
const REPLY_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// The end of a failed child's stderr kept for the report.
const STDERR_TAIL_BYTES: usize = 2048;
/// The address space of a worker that checks a model or tokenises a batch: parsing headers
/// and a tokenizer of a few megabytes needs a few hundred megabytes, so a normalizer or a
/// header built to ask for gigabytes fails here, in the child, not on the machine.
pub const PREPARE_ADDRESS_SPACE_BYTES: u64 = 2 << 30;
/// Address space an evaluation worker may use beyond its memory budget: ONNX Runtime's
/// arenas, thread stacks and the executable reserve more than they touch.
pub const EVALUATE_ADDRESS_SPACE_SLACK_BYTES: u64 = 4 << 30;

/// One job for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Job {
    /// N's checks of a fetched model against its competition.
    Check {
        /// The model directory.
        dir: PathBuf,
        /// The competition and what else it asks.
        rules: CheckRules,
        /// Truncation length, for the memory estimate.
        max_seq_len: usize,
        /// The evaluation memory budget.
        memory_max_bytes: u64,
    },
    /// N's tokenisation of a batch with the tokenizer files in `dir`.
    Tokenize {
        /// The tokenizer directory.
        dir: PathBuf,
        /// The (prompt, response) pairs.
        pairs: Vec<(String, String)>,
        /// Truncation length.
        max_seq_len: usize,
        /// The date templates see.
        date: CivilDate,
    },
    /// What `validator eval` reports of a model before evaluating it: its architecture,
    /// parameters and norm check, after its memory estimate at `max_seq_len` tokens.
    Inspect {
        /// The model directory.
        dir: PathBuf,
        /// Truncation length, for the memory estimate.
        max_seq_len: usize,
        /// The evaluation memory budget.
        memory_max_bytes: u64,
    },
    /// The model in `dir` on a tokenised batch.
    Evaluate {
        /// The model directory.
        dir: PathBuf,
        /// `cpu`, `cuda` or `cuda:N`.
        device: String,
        /// ONNX Runtime CPU threads.
        threads: usize,
        /// Longest sequence the graph is built for.
        max_seq_len: usize,
        /// The evaluation memory budget.
        memory_max_bytes: u64,
        /// Tokens per `Session::run` (see [`super::runs`]).
        tokens_per_run: usize,
        /// What the graph computes in.
        precision: Precision,
        /// The tokenised samples.
        batch: Vec<Prepared>,
    },
}

/// A worker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The model passed its competition's checks.
    Checked(ModelChecked),
    /// The model failed them.
    CheckFailed(CheckFailed),
    /// The tokenised batch.
    Tokenized(Vec<Prepared>),
    /// What `validator eval` reports of a model.
    Inspected(ModelSummary),
    /// One loss per sample, and where the time went.
    Losses {
        /// The losses.
        losses: LossVec,
        /// Why each sample failed, where one did (an infinite loss).
        #[serde(default)]
        errors: Vec<Option<String>>,
        /// Targets scored per sample.
        #[serde(default)]
        targets: Vec<usize>,
        /// Graph export and session build.
        session_seconds: f64,
        /// Scoring the samples.
        evaluate_seconds: f64,
    },
    /// The model's files made the job fail: its fault.
    ModelFailed {
        /// The class of failure.
        code: RejectionCode,
        /// A sentence for operators and miners.
        detail: String,
    },
    /// The files could not be read here (retry later).
    Unavailable(String),
    /// The evaluation device cannot be opened: the machine's fault, nobody's model.
    DeviceUnavailable(String),
    /// The machine stopped the job (the child could not be limited, or it failed under
    /// resource limits lower than the evaluation asks for): nobody's model is at fault.
    MachineFault(String),
}

/// What `validator eval` reports of a model, read in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSummary {
    /// The architecture's class name.
    pub architecture: String,
    /// Parameters, as `model.parameters()` counts them.
    pub parameters: u64,
    /// Whether the norm check passed.
    pub norm_passed: bool,
    /// The norm check's sentence.
    pub norm_summary: String,
    /// The mean fraction of layers above the soft limit (`None` when not a number).
    pub norm_soft_fraction_mean: Option<f64>,
}

/// A job's error as the reply's verdict. In a child whose limits were `lowered` below what
/// the evaluation asks for, a runtime failure (an allocation the limit refused) is the
/// machine's, not the model's.
fn reply_of_error_under(error: &EvalError, lowered: bool) -> Reply {
    match error.fault() {
        Fault::Model(code) => Reply::ModelFailed {
            code,
            detail: error.to_string(),
        },
        Fault::Input => Reply::Unavailable(error.to_string()),
        Fault::Machine => match error {
            EvalError::CudaUnavailable(_) => Reply::DeviceUnavailable(error.to_string()),
            EvalError::Limits(_) => Reply::MachineFault(error.to_string()),
            _ if lowered => Reply::MachineFault(format!(
                "{error} (under this machine's resource limits, lower than the evaluation asks \
                 for: {})",
                super::limits::describe_inherited()
            )),
            // ONNX Runtime failing on one model (its shapes, its size) is that model's
            // failure; the device itself was probed before the model was touched. So is
            // running out of the child's own address space: it is sized from the budget and
            // the model's files, is the same on every run, and a model refused for it is
            // refused as one whose estimate is over the budget is (never retried forever).
            _ => Reply::ModelFailed {
                code: RejectionCode::MalformedRepo,
                detail: error.to_string(),
            },
        },
    }
}

/// Runs one job in this process.
pub fn perform(job: Job) -> Reply {
    perform_under(job, false)
}

/// Runs one job in this process, whose resource limits were `lowered` below what it asks
/// for (then a failure that is not plainly the model's is the machine's).
fn perform_under(job: Job, lowered: bool) -> Reply {
    match job {
        Job::Check {
            dir,
            rules,
            max_seq_len,
            memory_max_bytes,
        } => match check_model(&dir, &rules, max_seq_len, memory_max_bytes) {
            Ok(Ok(checked)) => Reply::Checked(checked),
            Ok(Err(failed)) => Reply::CheckFailed(failed),
            Err(error) => reply_of_error_under(&error, lowered),
        },
        Job::Tokenize {
            dir,
            pairs,
            max_seq_len,
            date,
        } => {
            let options = EvalOptions {
                max_seq_len,
                date,
                // The template is the miner's: it renders in its own bounded grandchild.
                isolation: match Isolation::child_of_current_exe() {
                    Ok(isolation) => isolation,
                    Err(error) => return Reply::Unavailable(error.to_string()),
                },
                ..EvalOptions::default()
            };
            match tokenize_pairs(&dir, &pairs, &options) {
                Ok(prepared) => Reply::Tokenized(prepared),
                Err(error) => reply_of_error_under(&error, lowered),
            }
        }
        Job::Inspect {
            dir,
            max_seq_len,
            memory_max_bytes,
        } => match inspect_job(&dir, max_seq_len, memory_max_bytes) {
            Ok(summary) => Reply::Inspected(summary),
            Err(error) => reply_of_error_under(&error, lowered),
        },
        Job::Evaluate {
            dir,
            device,
            threads,
            max_seq_len,
            memory_max_bytes,
            tokens_per_run,
            precision,
            batch,
        } => evaluate_job(
            &dir,
            &device,
            EngineSettings {
                threads,
                max_seq_len,
                memory_max_bytes,
                tokens_per_run,
                precision,
            },
            &batch,
            lowered,
        ),
    }
}

fn inspect_job(
    dir: &Path,
    max_seq_len: usize,
    memory_max_bytes: u64,
) -> Result<ModelSummary, EvalError> {
    let model = ModelDir::open(dir)?;
    // As the runner's checks do: the worst case, before the weights are read.
    model.check_memory(max_seq_len, max_seq_len, memory_max_bytes)?;
    let norm = model.norm_check()?;
    Ok(ModelSummary {
        architecture: model.config.architecture.name().to_owned(),
        parameters: model.parameter_count(),
        norm_passed: norm.passed,
        norm_summary: norm.summary(),
        norm_soft_fraction_mean: Some(norm.soft_fraction_mean).filter(|x| x.is_finite()),
    })
}

/// How the engine runs a model, as the worker evaluator was configured.
#[derive(Debug, Clone, Copy)]
struct EngineSettings {
    threads: usize,
    max_seq_len: usize,
    memory_max_bytes: u64,
    tokens_per_run: usize,
    precision: Precision,
}

fn evaluate_job(
    dir: &Path,
    device: &str,
    engine: EngineSettings,
    batch: &[Prepared],
    lowered: bool,
) -> Reply {
    let device: Device = match device.parse() {
        Ok(device) => device,
        Err(why) => return Reply::DeviceUnavailable(why),
    };
    // The device first: if it cannot be opened, no model is at fault.
    if let Err(error) = super::runtime::probe(device) {
        return match reply_of_error_under(&error, lowered) {
            Reply::MachineFault(why) => Reply::MachineFault(why),
            _ => Reply::DeviceUnavailable(error.to_string()),
        };
    }
    let model = match ModelDir::open(dir) {
        Ok(model) => model,
        Err(error) => return reply_of_error_under(&error, lowered),
    };
    let options = EvalOptions {
        device,
        max_seq_len: engine.max_seq_len,
        threads: engine.threads.max(1),
        isolation: Isolation::InProcess,
        date: CivilDate::today(),
        memory_max_bytes: engine.memory_max_bytes,
        tokens_per_run: engine.tokens_per_run.max(1),
        precision: engine.precision,
    };
    match evaluate_prepared(&model, batch, &options, |_| {}) {
        Ok(evaluation) => Reply::Losses {
            losses: LossVec(evaluation.results.iter().map(|r| r.loss_f32()).collect()),
            errors: evaluation.results.iter().map(|r| r.error.clone()).collect(),
            targets: evaluation.results.iter().map(|r| r.targets).collect(),
            session_seconds: evaluation.session_seconds,
            evaluate_seconds: evaluation.evaluate_seconds,
        },
        Err(error) => reply_of_error_under(&error, lowered),
    }
}

/// Serves one job from stdin to stdout (`validator __eval-worker [LIMITS]`), under the limits
/// its command line gives, which it sets on itself before anything else.
pub fn serve(limits: &[String]) -> std::io::Result<()> {
    let limited = super::limits::from_args(limits)
        .map_err(|why| format!("the evaluation worker's limits: {why}"))
        .and_then(|limits| {
            limits
                .apply()
                .map_err(|e| format!("the evaluation worker cannot limit itself: {e}"))
        });
    let mut line = String::new();
    let mut stdin = std::io::stdin().lock();
    (&mut stdin).take(JOB_BYTES_MAX).read_line(&mut line)?;
    drop(stdin);
    // The parent keeps our stdin open while it waits; end-of-file means it is gone.
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(70);
    });
    let reply = match (serde_json::from_str::<Job>(&line), limited) {
        (_, Err(why)) => Reply::MachineFault(why),
        (Ok(job), Ok(lowered)) => {
            // A panic in a parser of the miner's files is that model's failure, not a crash.
            std::panic::catch_unwind(|| perform_under(job, lowered)).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".into());
                Reply::ModelFailed {
                    code: RejectionCode::MalformedRepo,
                    detail: format!("the model's files made the evaluator panic: {what}"),
                }
            })
        }
        (Err(error), Ok(_)) => Reply::Unavailable(format!("unreadable job: {error}")),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &reply)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// Why a worker gave no reply.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerFailure {
    /// It ran past its time and was killed.
    Timeout(Duration),
    /// It died or wrote something unreadable.
    Crashed(String),
    /// It could not be started.
    Spawn(String),
    /// It died or ran out of time under resource limits lower than the evaluation asks for
    /// (inherited from the operator's environment): the machine's fault, not the model's.
    Limited(String),
}

/// Kills a child's process group when dropped: a worker abandoned by a timeout, a stop
/// signal or a panic takes its own children (the template renderer) with it.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// The evaluator edge over worker processes.
#[derive(Debug, Clone)]
pub struct WorkerEvaluator {
    /// The `validator` executable.
    pub program: PathBuf,
    /// Where models run.
    pub device: Device,
    /// ONNX Runtime CPU threads.
    pub threads: usize,
    /// Truncation length (N: 2048).
    pub max_seq_len: usize,
    /// Longest an evaluation may take (N's successor: 720 s).
    pub eval_timeout: Duration,
    /// Longest the checks or a tokenisation may take.
    pub prepare_timeout: Duration,
    /// The date templates see.
    pub date: CivilDate,
    /// The evaluation memory budget (see [`super::estimate`]).
    pub memory_max_bytes: u64,
    /// Tokens per `Session::run` (see [`super::runs`]).
    pub tokens_per_run: usize,
    /// What the graph computes in (see [`Precision::default_for`]).
    pub precision: Precision,
}

/// The evaluation memory budget unless the operator sets one: the machine's on CPU, the card's
/// on CUDA, or the machine's (with a warning) when the card cannot be asked; the weights pass
/// through host memory while a CUDA session builds, so that figure still bounds something real.
fn default_budget_bytes(device: Device) -> u64 {
    match device {
        Device::Cpu => super::estimate::machine_budget_bytes(),
        Device::Cuda { device_id } => super::estimate::cuda_device_budget_bytes(device_id)
            .unwrap_or_else(|why| {
                let bytes = super::estimate::machine_budget_bytes();
                tracing::warn!(
                    "cannot read CUDA device {device_id}'s memory ({why}): the evaluation memory \
                     budget is this machine's, {bytes} bytes; set --eval-memory-max-bytes"
                );
                bytes
            }),
    }
}

impl WorkerEvaluator {
    /// A worker evaluator running `program` on `device`.
    pub fn new(program: PathBuf, device: Device, eval_timeout: Duration) -> Self {
        Self {
            program,
            device,
            threads: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            max_seq_len: super::DEFAULT_MAX_SEQ_LEN,
            eval_timeout,
            prepare_timeout: eval_timeout.max(Duration::from_secs(60)),
            date: CivilDate::today(),
            memory_max_bytes: default_budget_bytes(device),
            tokens_per_run: super::runs::default_tokens_per_run(device),
            precision: Precision::default_for(device),
        }
    }

    /// Runs `job` in a fresh child, bounded by `timeout`.
    pub async fn run_once(&self, job: &Job, timeout: Duration) -> Result<Reply, WorkerFailure> {
        let request = serde_json::to_vec(job)
            .map_err(|e| WorkerFailure::Spawn(format!("encoding the job: {e}")))?;
        // The child sets its own limits, from its command line, before anything else: its
        // address space (so a file built to exhaust memory fails in the child) and its CPU
        // time (a backstop behind the wall-clock timeout), never above the hard limits this
        // process inherited. A CUDA evaluation maps the card's memory into the address space,
        // so there the memory estimate alone bounds it. Fewer malloc arenas keep what glibc
        // reserves, but never touches, from counting against the limit.
        let limits = self.child_limits(job, timeout);
        let lowered = limits.are_lowered_here();
        let mut child = tokio::process::Command::new(&self.program)
            .arg("__eval-worker")
            .args(limits.args())
            .env("MALLOC_ARENA_MAX", "2")
            // The report keeps the end of the child's stderr: the reason, not a backtrace.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .process_group(0)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| WorkerFailure::Spawn(format!("{}: {e}", self.program.display())))?;
        let guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
        let mut stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let exchange = async {
            if let Some(stdin) = stdin.as_mut() {
                // A child that dies before reading everything is reported by its status.
                let _ = stdin.write_all(&request).await;
                let _ = stdin.write_all(b"\n").await;
                let _ = stdin.flush().await;
            }
            let read_out = async {
                let mut bytes = Vec::new();
                if let Some(stdout) = stdout {
                    let _ = stdout.take(REPLY_BYTES_MAX).read_to_end(&mut bytes).await;
                }
                bytes
            };
            let read_err = async {
                let mut bytes = Vec::new();
                if let Some(stderr) = stderr {
                    let _ = stderr.take(1 << 20).read_to_end(&mut bytes).await;
                }
                bytes
            };
            let (out, err) = tokio::join!(read_out, read_err);
            let status = child.wait().await;
            (out, err, status)
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        drop(stdin);
        let Ok((out, err, status)) = outcome else {
            drop(guard);
            return Err(WorkerFailure::Timeout(timeout));
        };
        drop(guard);
        let reply = serde_json::from_slice::<Reply>(&out).map_err(|_| {
            let tail_from = err.len().saturating_sub(STDERR_TAIL_BYTES);
            let tail = String::from_utf8_lossy(err.get(tail_from..).unwrap_or_default());
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            let why = format!("{status}: {}", tail.trim());
            if lowered {
                // It may have died of the operator's limit, not of the model.
                WorkerFailure::Limited(format!(
                    "the evaluation worker died under this machine's resource limits, lower \
                     than it asks for ({}): {why}",
                    super::limits::describe_inherited()
                ))
            } else {
                WorkerFailure::Crashed(why)
            }
        })?;
        Ok(reply)
    }

    /// The limits of the child that runs `job` within `timeout`: its address space, and CPU
    /// time enough for every thread through the whole timeout.
    fn child_limits(&self, job: &Job, timeout: Duration) -> ChildLimits {
        ChildLimits {
            address_space_bytes: self.address_space_bytes(job),
            cpu_seconds: Some(
                timeout.as_secs().saturating_add(1).saturating_mul(
                    u64::try_from(self.threads.max(1))
                        .unwrap_or(1)
                        .saturating_add(1),
                ),
            ),
        }
    }

    /// The limits its children ask for, for the checks and tokenising and for an
    /// evaluation: what the start-up log compares with the limits this process inherited.
    /// An evaluation adds its model's weight files to its address space; a model within the
    /// budget maps at most the budget's bytes of them (its estimate counts each tensor at
    /// least at its stored size), so that is the figure asked here.
    pub fn limits_asked(&self) -> [ChildLimits; 2] {
        let prepare = Job::Tokenize {
            dir: PathBuf::new(),
            pairs: Vec::new(),
            max_seq_len: self.max_seq_len,
            date: self.date,
        };
        let evaluate = Job::Evaluate {
            dir: PathBuf::new(),
            device: self.device.to_string(),
            threads: self.threads,
            max_seq_len: self.max_seq_len,
            memory_max_bytes: self.memory_max_bytes,
            tokens_per_run: self.tokens_per_run,
            precision: self.precision,
            batch: Vec::new(),
        };
        let mut evaluate = self.child_limits(&evaluate, self.eval_timeout);
        evaluate.address_space_bytes = evaluate
            .address_space_bytes
            .map(|bytes| bytes.saturating_add(self.memory_max_bytes));
        [self.child_limits(&prepare, self.prepare_timeout), evaluate]
    }

    /// The address-space limit of the child that runs `job` (`None`: unlimited).
    fn address_space_bytes(&self, job: &Job) -> Option<u64> {
        match job {
            Job::Check { .. } | Job::Inspect { .. } | Job::Tokenize { .. } => {
                Some(PREPARE_ADDRESS_SPACE_BYTES)
            }
            // ONNX Runtime maps the weights where they lie (external initializers), and a
            // mapping takes address space beside the float32 copies of 16-bit weights, though
            // its pages are the page cache's: without the files' bytes a bf16 model whose
            // estimate fits fails its session build (a 3.2e9-parameter Llama mapped 6.0 GiB
            // beside its 12 GiB of float32 weights). The files are on disk within the
            // download limits; an unreadable directory counts nothing, and the worker says so.
            Job::Evaluate { dir, .. } => match self.device {
                Device::Cpu => Some(
                    self.memory_max_bytes
                        .saturating_add(EVALUATE_ADDRESS_SPACE_SLACK_BYTES)
                        .saturating_add(weight_file_bytes(dir)),
                ),
                Device::Cuda { .. } => None,
            },
        }
    }

    /// Runs `job`, once more in a fresh child if the first crashed.
    pub async fn run(&self, job: &Job, timeout: Duration) -> Result<Reply, WorkerFailure> {
        match self.run_once(job, timeout).await {
            Err(WorkerFailure::Crashed(first)) => {
                self.run_once(job, timeout)
                    .await
                    .map_err(|second| match second {
                        WorkerFailure::Crashed(again) => {
                            WorkerFailure::Crashed(format!("twice: {first}; then {again}"))
                        }
                        other => other,
                    })
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (issue 34): a 3.2e9-parameter bf16 Llama whose estimate fitted the default
    /// budget failed its session build with `std::bad_alloc`, because the evaluation child's
    /// address-space limit did not count the 6.0 GiB of weight files ONNX Runtime maps.
    #[test]
    fn an_evaluation_child_may_map_its_weight_files_beside_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let sized = |name: &str, bytes: u64| {
            std::fs::File::create(dir.path().join(name))
                .unwrap()
                .set_len(bytes)
                .unwrap();
        };
        sized("model-00001-of-00002.safetensors", 3 << 30);
        sized("model-00002-of-00002.safetensors", 1 << 20);
        sized(".safetensors", 2 << 20);
        sized("notes.bin", 5 << 30);
        std::fs::create_dir(dir.path().join("extra.safetensors")).unwrap();
        let files = (3 << 30) + (1 << 20) + (2 << 20);
        assert_eq!(weight_file_bytes(dir.path()), files);
        assert_eq!(weight_file_bytes(&dir.path().join("absent")), 0);

        let mut evaluator = WorkerEvaluator::new(
            PathBuf::from("validator"),
            Device::Cpu,
            Duration::from_secs(60),
        );
        evaluator.memory_max_bytes = 10 << 30;
        let job = |dir: PathBuf| Job::Evaluate {
            dir,
            device: "cpu".into(),
            threads: 1,
            max_seq_len: 2048,
            memory_max_bytes: 10 << 30,
            tokens_per_run: 512,
            precision: Precision::F32,
            batch: Vec::new(),
        };
        let asked = evaluator.child_limits(&job(dir.path().to_owned()), Duration::from_secs(60));
        assert_eq!(
            asked.address_space_bytes,
            Some((10 << 30) + EVALUATE_ADDRESS_SPACE_SLACK_BYTES + files)
        );
        // The start-up log asks for the most a model within the budget maps.
        assert_eq!(
            evaluator.limits_asked()[1].address_space_bytes,
            Some((10 << 30) + EVALUATE_ADDRESS_SPACE_SLACK_BYTES + (10 << 30))
        );
        let checks = Job::Tokenize {
            dir: dir.path().to_owned(),
            pairs: Vec::new(),
            max_seq_len: 2048,
            date: CivilDate::today(),
        };
        assert_eq!(
            evaluator
                .child_limits(&checks, Duration::from_secs(60))
                .address_space_bytes,
            Some(PREPARE_ADDRESS_SPACE_BYTES)
        );

        let failure = super::super::runtime::runtime_failure(
            "building the session",
            "Exception during initialization: std::bad_alloc",
        );
        assert!(matches!(failure, EvalError::OutOfMemory(_)), "{failure}");
        // Out of the child's own address space: the model's, as an estimate over the budget
        // is (a machine fault would fail every step while the model stays queued); under the
        // operator's lower limits, the machine's.
        assert!(matches!(
            reply_of_error_under(&failure, false),
            Reply::ModelFailed {
                code: RejectionCode::MalformedRepo,
                ..
            }
        ));
        assert!(matches!(
            reply_of_error_under(&failure, true),
            Reply::MachineFault(_)
        ));
        let other = super::super::runtime::runtime_failure("building the session", "bad shape");
        assert!(matches!(other, EvalError::Runtime(_)));
        let named = super::super::runtime::runtime_failure("loading", "no file /x/bad_alloc/y");
        assert!(
            matches!(named, EvalError::Runtime(_)),
            "a path is not an allocation"
        );
    }
}
