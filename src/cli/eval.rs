//! `validator eval`: the miner's local evaluation (N's `model_validation.py`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use validator::eval::batch::ModelEvaluation;
use validator::eval::export::Precision;
use validator::eval::runtime::Device;
use validator::eval::template::CivilDate;
use validator::eval::worker::{Job, Reply, WorkerEvaluator, WorkerFailure};
use validator::eval::{EvalError, Fault, SampleResult, read_samples};
use validator::machine::MechanismParams;
use validator::machine::params::{Competition, CompetitionId};

use super::{Failure, Outcome};

/// How the engine packs and computes, shared by every command that evaluates.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Tokens, padding included, in one ONNX Runtime run: samples are padded to their length
    /// rounded up to 8 on CPU, 64 on CUDA, and those of one padded length share runs up to this
    /// budget (fewer where the memory budget asks). A sample's loss does not depend on it.
    /// Default: 512 on CPU, 8192 on CUDA.
    #[arg(
        long = "eval-tokens-per-run",
        value_parser = clap::value_parser!(u32).range(1..=1 << 20)
    )]
    pub eval_tokens_per_run: Option<u32>,
    /// What the exported graph computes in: bf16, f16 or f32. In bf16 and f16 the weights are
    /// used in their stored type (no widened copy) and activations are in that type, as
    /// transformers runs a model loaded in it; the loss is always f32. Default: bf16 on CUDA
    /// (as N evaluates), f32 on CPU (ONNX Runtime's CPU provider has no bf16 kernels).
    #[arg(long)]
    pub precision: Option<Precision>,
}

impl EngineArgs {
    /// Applies the flags to an evaluation worker; a precision its device cannot compute in is
    /// refused here, before any model is fetched.
    pub fn configure(&self, worker: &mut WorkerEvaluator) -> Result<(), Failure> {
        if let Some(tokens) = self.eval_tokens_per_run {
            worker.tokens_per_run = usize::try_from(tokens).unwrap_or(usize::MAX);
        }
        if let Some(precision) = self.precision {
            worker.precision = precision;
        }
        match worker.precision.unsupported_on(worker.device) {
            Some(why) => Err(Failure::invalid(anyhow::anyhow!(
                "--precision {}: {why}",
                worker.precision
            ))),
            None => Ok(()),
        }
    }
}

/// `validator eval`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The model directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    model: PathBuf,
    /// One {"prompt": ..., "response": ...} per line.
    #[arg(long)]
    data: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// Truncation length in tokens.
    #[arg(long, default_value_t = validator::eval::DEFAULT_MAX_SEQ_LEN)]
    max_seq_len: usize,
    /// A fixed tokenizer directory (the competition's) instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Print {"losses": [...], "mean": x, ...} (null for an infinite loss).
    #[arg(long)]
    json: bool,
    /// ONNX Runtime CPU threads, 1 to 256 (default: all cores). Far more threads than cores
    /// only make ONNX Runtime spin: 100,000 of them never finished a tiny model.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// The date chat templates see through strftime_now, YYYY-MM-DD (default: today, UTC).
    #[arg(long, value_parser = CivilDate::parse)]
    template_date: Option<CivilDate>,
    /// The competition whose parameter limit to report (default: by architecture).
    #[arg(long)]
    competition: Option<String>,
    /// Longest the evaluation worker may take, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
    /// The most memory the model's estimate may need, in bytes (default: three quarters of
    /// this machine's memory; on CUDA, nine tenths of the card's as nvidia-smi reports it).
    #[arg(long)]
    eval_memory_max_bytes: Option<u64>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn fail(error: EvalError) -> Failure {
    match error.fault() {
        Fault::Machine => Failure::failed(error),
        Fault::Model(_) | Fault::Input => Failure::invalid(error),
    }
}

fn json_loss(loss: f64) -> serde_json::Value {
    if loss.is_finite() {
        json!(loss)
    } else {
        serde_json::Value::Null
    }
}

/// Runs `validator eval`, printing to stdout. Everything the model's files control (the
/// checks, the tokenizer and its template, the session and the evaluation) runs in the
/// evaluation worker, the runner's bounded child: a hostile repository crashes or exhausts
/// that child, and this command reports it (exit 2) instead of dying with it.
pub fn run(args: &EvalArgs) -> Outcome {
    let started = Instant::now();
    let samples = read_samples(&args.data).map_err(fail)?;
    let pairs: Vec<(String, String)> = samples
        .into_iter()
        .map(|s| (s.prompt, s.response))
        .collect();
    let program = std::env::current_exe()
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot find our own executable: {e}")))?;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let mut worker = WorkerEvaluator::new(program, args.device, timeout);
    worker.max_seq_len = args.max_seq_len;
    if let Some(threads) = args.threads {
        worker.threads = usize::from(threads);
    }
    if let Some(bytes) = args.eval_memory_max_bytes {
        worker.memory_max_bytes = bytes;
    }
    args.engine.configure(&mut worker)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::failed)?;
    let ask = |job: Job| {
        runtime
            .block_on(worker.run(&job, timeout))
            .map_err(job_failure)
    };
    let inspected = match ask(Job::Inspect {
        dir: args.model.clone(),
        max_seq_len: worker.max_seq_len,
        memory_max_bytes: worker.memory_max_bytes,
    })? {
        Reply::Inspected(summary) => summary,
        other => return Err(reply_failure(other)),
    };
    let tokenize_started = Instant::now();
    let prepared = match ask(Job::Tokenize {
        dir: args.tokenizer.clone().unwrap_or_else(|| args.model.clone()),
        pairs,
        max_seq_len: worker.max_seq_len,
        date: args.template_date.unwrap_or_else(CivilDate::today),
    })? {
        Reply::Tokenized(prepared) => prepared,
        other => return Err(reply_failure(other)),
    };
    let tokenize_seconds = tokenize_started.elapsed().as_secs_f64();
    let (losses, errors, targets, session_seconds, evaluate_seconds) = match ask(Job::Evaluate {
        dir: args.model.clone(),
        device: args.device.to_string(),
        threads: worker.threads,
        max_seq_len: worker.max_seq_len,
        memory_max_bytes: worker.memory_max_bytes,
        tokens_per_run: worker.tokens_per_run,
        precision: worker.precision,
        batch: prepared.clone(),
    })? {
        Reply::Losses {
            losses,
            errors,
            targets,
            session_seconds,
            evaluate_seconds,
        } => (losses, errors, targets, session_seconds, evaluate_seconds),
        other => return Err(reply_failure(other)),
    };
    if losses.0.len() != prepared.len() {
        return Err(Failure::failed(anyhow::anyhow!(
            "the evaluation worker returned {} losses for {} samples",
            losses.0.len(),
            prepared.len()
        )));
    }
    let params = MechanismParams::default();
    let competition = match &args.competition {
        Some(id) => params.competition_by_id(&CompetitionId::new(id.clone())),
        None => params.competition_by_architecture(&inspected.architecture),
    };
    let evaluation = ModelEvaluation {
        results: losses
            .to_f64()
            .into_iter()
            .zip(&prepared)
            .enumerate()
            .map(|(index, (loss, sample))| SampleResult {
                loss,
                tokens: sample.ids.len(),
                targets: targets.get(index).copied().unwrap_or(0),
                error: errors.get(index).cloned().flatten(),
            })
            .collect(),
        session_seconds,
        evaluate_seconds,
    };
    let report = Report {
        args,
        architecture: &inspected.architecture,
        competition,
        parameters: inspected.parameters,
        norm_summary: inspected.norm_summary.clone(),
        norm_passed: inspected.norm_passed,
        norm_soft_fraction_mean: inspected.norm_soft_fraction_mean.unwrap_or(f64::NAN),
        evaluation: &evaluation,
        total_seconds: started.elapsed().as_secs_f64(),
        tokenize_seconds,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A worker that gave no answer: a crash or a timeout is the model's doing (exit 2), unless
/// the machine's own lower limits may have caused it (exit 1).
fn job_failure(failure: WorkerFailure) -> Failure {
    match failure {
        WorkerFailure::Timeout(limit) => Failure::invalid(anyhow::anyhow!(
            "the model did not finish within {} s (--timeout-s)",
            limit.as_secs()
        )),
        WorkerFailure::Crashed(why) => Failure::invalid(anyhow::anyhow!(
            "the model's files crashed the evaluation worker {why}"
        )),
        WorkerFailure::Spawn(why) => {
            Failure::failed(anyhow::anyhow!("cannot start the evaluation worker: {why}"))
        }
        // Under the operator's lower limits the machine, not the model, stopped it (exit 1).
        WorkerFailure::Limited(why) => Failure::failed(anyhow::anyhow!("{why}")),
    }
}

/// A worker's refusal: the model's or the input's fault is exit 2, the device's exit 1.
fn reply_failure(reply: Reply) -> Failure {
    match reply {
        Reply::ModelFailed { detail, .. } | Reply::Unavailable(detail) => {
            Failure::invalid(anyhow::anyhow!("{detail}"))
        }
        Reply::CheckFailed(failed) => Failure::invalid(anyhow::anyhow!("{}", failed.detail)),
        Reply::DeviceUnavailable(why) | Reply::MachineFault(why) => {
            Failure::failed(anyhow::anyhow!("{why}"))
        }
        other => Failure::failed(anyhow::anyhow!(
            "the evaluation worker answered out of turn: {other:?}"
        )),
    }
}

/// Everything `eval` prints.
struct Report<'a> {
    args: &'a EvalArgs,
    architecture: &'a str,
    competition: Option<&'a Competition>,
    parameters: u64,
    norm_summary: String,
    norm_passed: bool,
    norm_soft_fraction_mean: f64,
    evaluation: &'a ModelEvaluation,
    total_seconds: f64,
    tokenize_seconds: f64,
}

impl Report<'_> {
    #[allow(clippy::cast_precision_loss)] // token counts become floats only for a rate
    fn tokens_per_second(&self) -> f64 {
        self.evaluation.tokens() as f64 / self.evaluation.evaluate_seconds.max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        let results = &self.evaluation.results;
        let within = self
            .competition
            .map(|c| self.parameters <= c.max_parameters);
        json!({
            "losses": results.iter().map(|r| json_loss(r.loss)).collect::<Vec<_>>(),
            "mean": json_loss(self.evaluation.loss_mean()),
            "tokens": results.iter().map(|r| r.tokens).collect::<Vec<_>>(),
            "targets": results.iter().map(|r| r.targets).collect::<Vec<_>>(),
            "errors": results.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
            "architecture": self.architecture,
            "parameters": self.parameters,
            "competition": self.competition.map(|c| json!({"id": c.id, "max_parameters": c.max_parameters, "within_limit": within})),
            "norm_check": {"passed": self.norm_passed, "summary": self.norm_summary, "soft_fraction_mean": self.norm_soft_fraction_mean},
            "device": format!("{:?}", self.args.device),
            "seconds": {"total": self.total_seconds, "tokenize": self.tokenize_seconds, "session": self.evaluation.session_seconds, "evaluate": self.evaluation.evaluate_seconds},
            "tokens_per_second": self.tokens_per_second(),
        })
    }

    fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let limit = match self.competition {
            Some(c) if self.parameters <= c.max_parameters => {
                format!("; within {}'s limit of {}", c.id, c.max_parameters)
            }
            Some(c) => format!("; OVER {}'s limit of {}", c.id, c.max_parameters),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "model: {} ({}, {} parameters{limit})",
            self.args.model.display(),
            self.architecture,
            self.parameters
        );
        let _ = writeln!(out, "norm check: {}", self.norm_summary);
        let _ = writeln!(
            out,
            "{:>6} {:>7} {:>7} {:>12}",
            "sample", "tokens", "targets", "loss"
        );
        let results = &self.evaluation.results;
        for (index, result) in results.iter().enumerate() {
            let note = result
                .error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{index:>6} {:>7} {:>7} {:>12.6}{note}",
                result.tokens, result.targets, result.loss
            );
        }
        let finite = results.iter().filter(|r| r.loss.is_finite()).count();
        let _ = writeln!(
            out,
            "mean loss: {:.6} ({finite} of {} samples finite)",
            self.evaluation.loss_mean(),
            results.len()
        );
        let _ = writeln!(
            out,
            "{} tokens in {:.2} s ({:.0} tokens/s) on {:?}",
            self.evaluation.tokens(),
            self.evaluation.evaluate_seconds,
            self.tokens_per_second(),
            self.args.device
        );
        out
    }
}
