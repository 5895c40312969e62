//! `validator eval`: the miner's local evaluation (N's `model_validation.py`), and the hidden
//! command that renders chat templates in an isolated child process.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::eval::runtime::Device;
use crate::eval::template::{CivilDate, Isolation};
use crate::eval::tokenize::TokenizerFiles;
use crate::eval::{EvalError, EvalOptions, Evaluator, ModelDir, SampleResult, read_samples};
use crate::machine::MechanismParams;

/// What `validator eval` was asked (its command-line arguments; the doc comments are the help).
#[derive(Debug, Clone, clap::Args)]
pub struct EvalRequest {
    /// The model directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    pub model: PathBuf,
    /// One {"prompt": ..., "response": ...} per line.
    #[arg(long)]
    pub data: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Truncation length in tokens.
    #[arg(long, default_value_t = crate::eval::DEFAULT_MAX_SEQ_LEN)]
    pub max_seq_len: usize,
    /// A fixed tokenizer directory (the competition's) instead of the model's own.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Print {"losses": [...], "mean": x, ...} (null for an infinite loss).
    #[arg(long)]
    pub json: bool,
    /// ONNX Runtime CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The date chat templates see through strftime_now, YYYY-MM-DD (default: today, UTC).
    #[arg(long, value_parser = parse_date)]
    pub template_date: Option<CivilDate>,
    /// The competition whose parameter limit to report (default: by architecture).
    #[arg(long)]
    pub competition: Option<String>,
}

/// Why `validator eval` failed: the input (exit 2) or the machine (exit 1).
#[derive(Debug)]
pub enum EvalFailure {
    /// Bad model, tokenizer or data.
    Input(EvalError),
    /// ONNX Runtime, CUDA, I/O.
    Machine(EvalError),
}

impl From<EvalError> for EvalFailure {
    fn from(error: EvalError) -> Self {
        match error {
            EvalError::Runtime(_) | EvalError::CudaUnavailable(_) => EvalFailure::Machine(error),
            _ => EvalFailure::Input(error),
        }
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<CivilDate, String> {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return Err(format!("{text:?} is not YYYY-MM-DD"));
    };
    let date = CivilDate {
        year: year.parse().map_err(|_| format!("bad year in {text:?}"))?,
        month: month
            .parse()
            .map_err(|_| format!("bad month in {text:?}"))?,
        day: day.parse().map_err(|_| format!("bad day in {text:?}"))?,
    };
    if !(1..=12).contains(&date.month) || !(1..=31).contains(&date.day) {
        return Err(format!("{text:?} is not a date"));
    }
    Ok(date)
}

fn json_loss(loss: f64) -> serde_json::Value {
    if loss.is_finite() {
        json!(loss)
    } else {
        serde_json::Value::Null
    }
}

/// Runs `validator eval`, printing to stdout.
#[allow(clippy::cast_precision_loss)] // counts and times become floats only for reporting
pub fn run(request: &EvalRequest) -> Result<(), EvalFailure> {
    let started = Instant::now();
    let samples = read_samples(&request.data)?;
    let model = ModelDir::open(&request.model)?;
    let tokenizer_dir: &Path = request.tokenizer.as_deref().unwrap_or(&request.model);
    let tokenizer = TokenizerFiles::load(tokenizer_dir)?;
    let parameters = model.parameter_count();
    let params = MechanismParams::default();
    let competition = match &request.competition {
        Some(id) => params
            .schedule
            .iter()
            .flat_map(|e| &e.competitions)
            .find(|c| c.id.as_str() == id),
        None => params
            .schedule
            .iter()
            .flat_map(|e| &e.competitions)
            .find(|c| c.architecture == model.config.architecture.name()),
    };
    let norm = model.norm_check()?;
    let options = EvalOptions {
        device: request.device,
        max_seq_len: request.max_seq_len,
        threads: request.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        }),
        // The model's own template is miner-supplied: render it in a bounded child process.
        isolation: Isolation::child_of_current_exe()?,
        date: request.template_date.unwrap_or_else(CivilDate::today),
    };
    let pairs: Vec<(String, String)> = samples
        .iter()
        .map(|s| (s.prompt.clone(), s.response.clone()))
        .collect();
    let tokenize_started = Instant::now();
    let prepared = tokenizer.prepare(
        &pairs,
        options.max_seq_len,
        options.date,
        &options.isolation,
    )?;
    let tokenize_seconds = tokenize_started.elapsed().as_secs_f64();
    let session_started = Instant::now();
    let mut evaluator = Evaluator::new(&model, &options)?;
    let session_seconds = session_started.elapsed().as_secs_f64();

    let progress = (!request.json || std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(prepared.len() as u64);
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar
    });
    let eval_started = Instant::now();
    let results: Vec<SampleResult> = prepared
        .iter()
        .map(|sample| {
            let result = evaluator.score(sample);
            if let Some(bar) = &progress {
                bar.inc(1);
            }
            result
        })
        .collect();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let eval_seconds = eval_started.elapsed().as_secs_f64();
    let tokens: usize = results.iter().map(|r| r.tokens).sum();
    // N's average: any infinite sample makes the mean infinite.
    let mean = if results.is_empty() {
        f64::INFINITY
    } else {
        results.iter().map(|r| r.loss).sum::<f64>() / results.len() as f64
    };
    let limit_ok = competition.map(|c| parameters <= c.max_parameters);
    if request.json {
        let output = json!({
            "losses": results.iter().map(|r| json_loss(r.loss)).collect::<Vec<_>>(),
            "mean": json_loss(mean),
            "tokens": results.iter().map(|r| r.tokens).collect::<Vec<_>>(),
            "targets": results.iter().map(|r| r.targets).collect::<Vec<_>>(),
            "errors": results.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
            "architecture": model.config.architecture.name(),
            "parameters": parameters,
            "competition": competition.map(|c| json!({"id": c.id, "max_parameters": c.max_parameters, "within_limit": limit_ok})),
            "norm_check": {"passed": norm.passed, "summary": norm.summary(), "soft_fraction_mean": norm.soft_fraction_mean},
            "device": format!("{:?}", request.device),
            "seconds": {"total": started.elapsed().as_secs_f64(), "tokenize": tokenize_seconds, "session": session_seconds, "evaluate": eval_seconds},
            "tokens_per_second": tokens as f64 / eval_seconds.max(1e-9),
        });
        println!("{output}");
        return Ok(());
    }
    println!(
        "model: {} ({}, {parameters} parameters{})",
        request.model.display(),
        model.config.architecture.name(),
        match (competition, limit_ok) {
            (Some(c), Some(true)) => format!("; within {}'s limit of {}", c.id, c.max_parameters),
            (Some(c), _) => format!("; OVER {}'s limit of {}", c.id, c.max_parameters),
            (None, _) => String::new(),
        }
    );
    println!("norm check: {}", norm.summary());
    println!(
        "{:>6} {:>7} {:>7} {:>12}",
        "sample", "tokens", "targets", "loss"
    );
    for (index, result) in results.iter().enumerate() {
        let note = result
            .error
            .as_deref()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default();
        println!(
            "{index:>6} {:>7} {:>7} {:>12.6}{note}",
            result.tokens, result.targets, result.loss
        );
    }
    let finite = results.iter().filter(|r| r.loss.is_finite()).count();
    println!(
        "mean loss: {mean:.6} ({finite} of {} samples finite)",
        results.len()
    );
    println!(
        "{tokens} tokens in {eval_seconds:.2} s ({:.0} tokens/s) on {:?}",
        tokens as f64 / eval_seconds.max(1e-9),
        request.device
    );
    Ok(())
}
