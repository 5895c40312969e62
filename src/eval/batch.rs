//! A model on a batch: tokenise the samples with N's rules, build the model's session once and
//! score every sample, one outcome per sample. `validator eval` and the runner's evaluation
//! worker both come through here.

use std::path::Path;
use std::time::Instant;

use super::tokenize::{Prepared, TokenizerFiles};
use super::{EvalError, EvalOptions, Evaluator, ModelDir, SampleResult};

/// Tokenises `(prompt, response)` pairs with the tokenizer files in `dir`.
pub fn tokenize_pairs(
    dir: &Path,
    pairs: &[(String, String)],
    options: &EvalOptions,
) -> Result<Vec<Prepared>, EvalError> {
    let tokenizer = TokenizerFiles::load(dir)?;
    tokenizer.prepare(pairs, options.max_seq_len, options.date, &options.isolation)
}

/// What evaluating one model on a batch gave.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEvaluation {
    /// One result per sample, in batch order.
    pub results: Vec<SampleResult>,
    /// Seconds spent exporting the graph and building the session.
    pub session_seconds: f64,
    /// Seconds spent scoring the samples.
    pub evaluate_seconds: f64,
}

impl ModelEvaluation {
    /// Tokens seen over the batch.
    pub fn tokens(&self) -> usize {
        self.results.iter().map(|r| r.tokens).sum()
    }

    /// N's mean loss: any infinite sample makes it infinite; no samples, +infinity.
    #[allow(clippy::cast_precision_loss)] // a sample count far below 2^52
    pub fn loss_mean(&self) -> f64 {
        if self.results.is_empty() {
            return f64::INFINITY;
        }
        self.results.iter().map(|r| r.loss).sum::<f64>() / self.results.len() as f64
    }
}

/// Builds `model`'s session and scores every prepared sample, packed into runs of at most
/// `options.tokens_per_run` tokens (less where the memory budget asks), calling `on_sample`
/// as each is known (for progress; in run order, not batch order). A sample that fails scores
/// +infinity; only a session that cannot be built fails the whole evaluation.
pub fn evaluate_prepared(
    model: &ModelDir,
    prepared: &[Prepared],
    options: &EvalOptions,
    mut on_sample: impl FnMut(&SampleResult),
) -> Result<ModelEvaluation, EvalError> {
    // The estimate for this batch's longest sample as it is padded, before anything is built.
    let seq_len = super::runs::padded_length(
        prepared
            .iter()
            .map(|sample| sample.ids.len())
            .max()
            .unwrap_or(0),
        options.max_seq_len,
        super::runs::padded_length_multiple(options.device),
    );
    model.check_memory(seq_len, options.max_seq_len, options.memory_max_bytes)?;
    let options = EvalOptions {
        tokens_per_run: model.fitting_tokens_per_run(
            seq_len,
            options.max_seq_len,
            options.memory_max_bytes,
            options.tokens_per_run,
        ),
        ..options.clone()
    };
    let session_started = Instant::now();
    let mut evaluator = Evaluator::new(model, &options)?;
    let session_seconds = session_started.elapsed().as_secs_f64();
    let evaluate_started = Instant::now();
    let results = evaluator.score_all(prepared, |_, result| on_sample(result));
    Ok(ModelEvaluation {
        results,
        session_seconds,
        evaluate_seconds: evaluate_started.elapsed().as_secs_f64(),
    })
}

/// What a model is checked against: its competition and, under the successor's rules, the
/// classes the competition lists and its fewest parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckRules {
    /// The competition (N's one architecture, its largest parameter count and repository).
    pub competition: crate::machine::params::Competition,
    /// The classes accepted; empty: the competition's one architecture.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Fewest parameters accepted.
    #[serde(default)]
    pub parameters_min: u64,
}

impl CheckRules {
    /// N's checks: the competition alone.
    pub fn of(competition: &crate::machine::params::Competition) -> Self {
        Self {
            competition: competition.clone(),
            architectures: Vec::new(),
            parameters_min: 0,
        }
    }

    /// The checks `params` asks of a model committed to `competition` at `block`: the
    /// successor's classes and lower bound where its rules list the competition.
    pub fn at(
        params: &crate::machine::MechanismParams,
        competition: &crate::machine::params::Competition,
    ) -> Self {
        let successor = params
            .rules
            .successor
            .as_ref()
            .and_then(|rules| rules.competition(&competition.id));
        match successor {
            Some(listed) => Self {
                competition: competition.clone(),
                architectures: listed.architectures.clone(),
                parameters_min: listed.parameters_min,
            },
            None => Self::of(competition),
        }
    }

    /// Whether `architecture` is accepted.
    fn accepts(&self, architecture: &str) -> bool {
        if self.architectures.is_empty() {
            architecture == self.competition.architecture
        } else {
            self.architectures.iter().any(|a| a == architecture)
        }
    }

    /// The accepted classes, for a refusal.
    fn accepted(&self) -> String {
        if self.architectures.is_empty() {
            self.competition.architecture.clone()
        } else {
            self.architectures.join(", ")
        }
    }
}

/// A model that passed a competition's checks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelChecked {
    /// Parameters, as `model.parameters()` counts them.
    pub parameters: u64,
    /// The norm check's sentence.
    pub norm_summary: String,
}

/// Why a model failed a competition's checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckFailed {
    /// The class of refusal.
    pub code: crate::machine::event::RejectionCode,
    /// A sentence for operators and miners.
    pub detail: String,
}

/// N's checks of a downloaded model against its competition (`verify_model_satisfies_parameters`
/// and loading it as the competition's class): the architecture, the parameter count and the
/// weight norms, from `config.json` and the safetensors alone. `Ok(Err(_))` is a verdict on the
/// model; `Err` means the files could not be read here. Past N, the model's memory estimate
/// at `max_seq_len` tokens must fit `memory_max_bytes` (see [`super::estimate`]).
pub fn check_model(
    dir: &Path,
    rules: &CheckRules,
    max_seq_len: usize,
    memory_max_bytes: u64,
) -> Result<Result<ModelChecked, CheckFailed>, EvalError> {
    use crate::machine::event::RejectionCode;
    let refuse = |code, detail: String| Ok(Err(CheckFailed { code, detail }));
    let model = match ModelDir::open(dir) {
        Ok(model) => model,
        Err(error) => {
            return match error.fault() {
                super::Fault::Model(code) => refuse(code, error.to_string()),
                super::Fault::Input | super::Fault::Machine => Err(error),
            };
        }
    };
    let competition = &rules.competition;
    let architecture = model.config.architecture.name();
    if !rules.accepts(architecture) {
        return refuse(
            RejectionCode::UnsupportedArchitecture,
            format!(
                "competition {} takes {}, not {architecture}",
                competition.id,
                rules.accepted()
            ),
        );
    }
    let parameters = model.parameter_count();
    if parameters < rules.parameters_min {
        return refuse(
            RejectionCode::TooManyParameters,
            format!(
                "{parameters} parameters, under competition {}'s least of {}",
                competition.id, rules.parameters_min
            ),
        );
    }
    if parameters > competition.max_parameters {
        return refuse(
            RejectionCode::TooManyParameters,
            format!(
                "{parameters} parameters, over competition {}'s limit of {}",
                competition.id, competition.max_parameters
            ),
        );
    }
    if let Err(error) = model.check_memory(max_seq_len, max_seq_len, memory_max_bytes) {
        return refuse(RejectionCode::MalformedRepo, error.to_string());
    }
    let norm = match model.norm_check() {
        Ok(norm) => norm,
        Err(error) => {
            return match error.fault() {
                super::Fault::Model(code) => refuse(code, error.to_string()),
                super::Fault::Input | super::Fault::Machine => Err(error),
            };
        }
    };
    if !norm.passed {
        return refuse(RejectionCode::NormCheck, norm.summary());
    }
    Ok(Ok(ModelChecked {
        parameters,
        norm_summary: norm.summary(),
    }))
}
