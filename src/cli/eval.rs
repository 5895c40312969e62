//! `validator eval`: the miner's local evaluation (N's `model_validation.py`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use validator::eval::batch::{ModelEvaluation, evaluate_prepared, tokenize_pairs};
use validator::eval::runtime::Device;
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::{EvalError, EvalOptions, Fault, ModelDir, read_samples};
use validator::machine::MechanismParams;
use validator::machine::params::{Competition, CompetitionId};

use super::{Failure, Outcome};

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
    /// ONNX Runtime CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// The date chat templates see through strftime_now, YYYY-MM-DD (default: today, UTC).
    #[arg(long, value_parser = CivilDate::parse)]
    template_date: Option<CivilDate>,
    /// The competition whose parameter limit to report (default: by architecture).
    #[arg(long)]
    competition: Option<String>,
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

/// Runs `validator eval`, printing to stdout.
pub fn run(args: &EvalArgs) -> Outcome {
    let started = Instant::now();
    let samples = read_samples(&args.data).map_err(fail)?;
    let model = ModelDir::open(&args.model).map_err(fail)?;
    let params = MechanismParams::default();
    let competition = match &args.competition {
        Some(id) => params.competition_by_id(&CompetitionId::new(id.clone())),
        None => params.competition_by_architecture(model.config.architecture.name()),
    };
    let norm = model.norm_check().map_err(fail)?;
    let options = EvalOptions {
        device: args.device,
        max_seq_len: args.max_seq_len,
        threads: args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        // The model's own template is miner-supplied: render it in a bounded child process.
        isolation: Isolation::child_of_current_exe().map_err(fail)?,
        date: args.template_date.unwrap_or_else(CivilDate::today),
    };
    let pairs: Vec<(String, String)> = samples
        .iter()
        .map(|s| (s.prompt.clone(), s.response.clone()))
        .collect();
    let tokenizer_dir: &Path = args.tokenizer.as_deref().unwrap_or(&args.model);
    let tokenize_started = Instant::now();
    let prepared = tokenize_pairs(tokenizer_dir, &pairs, &options).map_err(fail)?;
    let tokenize_seconds = tokenize_started.elapsed().as_secs_f64();

    let progress = (!args.json || std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(u64::try_from(prepared.len()).unwrap_or(u64::MAX));
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar
    });
    let evaluation = evaluate_prepared(&model, &prepared, &options, |_| {
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    })
    .map_err(fail)?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let report = Report {
        args,
        model: &model,
        competition,
        parameters: model.parameter_count(),
        norm_summary: norm.summary(),
        norm_passed: norm.passed,
        norm_soft_fraction_mean: norm.soft_fraction_mean,
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

/// Everything `eval` prints.
struct Report<'a> {
    args: &'a EvalArgs,
    model: &'a ModelDir,
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
            "architecture": self.model.config.architecture.name(),
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
            self.model.config.architecture.name(),
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
