//! Checks before evaluating, computed by streaming over the safetensors (no session): the
//! parameter count against the competition's limit, and N's weight-norm check.

use serde::Serialize;

use super::EvalError;
use super::config::ModelConfig;
use super::safetensors::WeightIndex;

/// N's `norm_eps_hard`: any projection norm above this fails.
pub const NORM_HARD_MAX: f64 = 1000.0;
/// N's `norm_eps_soft`.
pub const NORM_SOFT_MAX: f64 = 200.0;
/// N's `norm_eps_soft_percent_threshold`: the mean over projections of the fraction of layers
/// above the soft limit must not exceed this.
pub const NORM_SOFT_FRACTION_MAX: f64 = 0.15;

/// The six projections N checks, with their module paths.
const PROJECTIONS: [(&str, &str); 6] = [
    ("q_proj", "self_attn"),
    ("k_proj", "self_attn"),
    ("v_proj", "self_attn"),
    ("o_proj", "self_attn"),
    ("up_proj", "mlp"),
    ("down_proj", "mlp"),
];

/// The norm check's findings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NormReport {
    /// Frobenius norm of every checked weight, by tensor name, in layer order.
    pub norms: Vec<(String, f64)>,
    /// Per projection: layers above the soft limit, and layers checked.
    pub soft_exceeded: Vec<(String, u64, u64)>,
    /// Mean over projections of the fraction of layers above the soft limit.
    pub soft_fraction_mean: f64,
    /// The first weight above the hard limit, if any.
    pub hard_failure: Option<(String, f64)>,
    /// Weights whose norm is not a number (NaN or infinite values).
    pub not_finite: Vec<String>,
    /// Whether the model passes.
    pub passed: bool,
}

impl NormReport {
    /// A sentence for operators and miners.
    pub fn summary(&self) -> String {
        if let Some((name, norm)) = &self.hard_failure {
            return format!("{name} has norm {norm:.1}, above the hard limit {NORM_HARD_MAX}");
        }
        if let Some(name) = self.not_finite.first() {
            return format!(
                "{} weight(s) have a non-finite norm (NaN or infinite values), first {name}",
                self.not_finite.len()
            );
        }
        let verdict = if self.passed { "passes" } else { "fails" };
        format!(
            "{verdict}: {:.3} of layers above norm {NORM_SOFT_MAX} on average (limit {NORM_SOFT_FRACTION_MAX})",
            self.soft_fraction_mean
        )
    }
}

/// N's norm check over every layer's q/k/v/o/up/down weight, from the stored values (in f64,
/// whatever the dtype, so the result does not depend on how the model would be loaded).
///
/// One deliberate difference: a NaN norm fails (N's comparisons are false for NaN, so NaN
/// weights would pass its check and then lose every comparison).
pub fn norm_check(config: &ModelConfig, weights: &WeightIndex) -> Result<NormReport, EvalError> {
    let names: Vec<String> = PROJECTIONS
        .iter()
        .flat_map(|(projection, module)| {
            (0..config.num_layers)
                .map(move |layer| format!("model.layers.{layer}.{module}.{projection}.weight"))
        })
        .collect();
    // Each norm is summed in one order, chunk by chunk, whichever thread computes it, so the
    // result does not depend on the machine's threads.
    // At most four threads: the files' reading is the limit beyond that, and the check runs in
    // a child with a small address space, where each thread costs its buffers and stack.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let computed = weights.map_tensors(&names, threads, |_, tensor| {
        let mut sum_squares = 0.0f64;
        weights.stream_values(tensor, |values| {
            sum_squares += values.iter().map(|v| v * v).sum::<f64>();
        })?;
        Ok(sum_squares.sqrt())
    })?;
    let mut norms = Vec::new();
    let mut soft_exceeded = Vec::new();
    let mut hard_failure = None;
    let mut not_finite = Vec::new();
    let mut computed = names.into_iter().zip(computed);
    for (projection, _) in PROJECTIONS {
        let mut exceeded = 0u64;
        for (name, norm) in computed
            .by_ref()
            .take(usize::try_from(config.num_layers).unwrap_or(usize::MAX))
        {
            if !norm.is_finite() {
                not_finite.push(name.clone());
            } else if norm > NORM_HARD_MAX {
                hard_failure.get_or_insert((name.clone(), norm));
            } else if norm > NORM_SOFT_MAX {
                exceeded += 1;
            }
            norms.push((name, norm));
        }
        soft_exceeded.push((projection.to_owned(), exceeded, config.num_layers));
    }
    let fractions: Vec<f64> = soft_exceeded
        .iter()
        .map(|(_, exceeded, total)| exact(*exceeded) / exact(*total))
        .collect();
    let soft_fraction_mean = fractions.iter().sum::<f64>() / exact(fractions.len() as u64);
    let passed = hard_failure.is_none()
        && not_finite.is_empty()
        && soft_fraction_mean <= NORM_SOFT_FRACTION_MAX;
    Ok(NormReport {
        norms,
        soft_exceeded,
        soft_fraction_mean,
        hard_failure,
        not_finite,
        passed,
    })
}

fn exact(value: u64) -> f64 {
    crate::machine::numbers::exact_f64(value)
}

/// Parameters as `sum(p.numel() for p in model.parameters())`: every stored tensor, counting
/// a tied output projection once.
pub fn parameter_count(config: &ModelConfig, weights: &WeightIndex) -> u64 {
    let total = weights.parameter_count();
    match (
        config.tie_word_embeddings,
        weights.tensors.get("lm_head.weight"),
    ) {
        (true, Some(head)) => total - head.elements(),
        _ => total,
    }
}
