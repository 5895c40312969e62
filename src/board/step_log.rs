//! N's step log: one JSON line per completed step in the shape N logged to wandb (the graphed
//! per-uid dictionaries plus `original_format_json`, N's `step_log` as `json.dumps` wrote it),
//! so an operator's wandb sidecar or notebook keeps working.
//!
//! Python's `json.dumps` writes an infinite loss as `Infinity`; inside `original_format_json`
//! we do the same (so `json.loads` reads it back as N wrote it), while the line itself stays
//! strict JSON with `null` in those places.

use serde_json::{Map, Value, json};

use super::StepPoint;

/// What a step log line is made of besides the step's own figures.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLogContext<'a> {
    /// Seconds since the Unix epoch when the line is written (N's `time.time()`).
    pub time_s: f64,
    /// The competition.
    pub competition: &'a str,
    /// The journal's block at completion (N's `metagraph.block`).
    pub block: u64,
    /// The batch's references (N's `pages`).
    pub pages: &'a [String],
    /// Each participant's commit block (`None`: no model, N's `math.inf`).
    pub block_commit: &'a [(u16, Option<u64>)],
    /// The step's timings, as N's `*_perf_log` strings.
    pub perf: [Option<String>; 3],
}

const INFINITY_MARK: &str = "\u{0}Infinity";

fn finite_or(value: Option<f64>, infinite: &Value) -> Value {
    match value {
        Some(v) if v.is_finite() => json!(v),
        _ => infinite.clone(),
    }
}

/// The line for `step` (without the trailing newline).
pub fn line(step: &StepPoint, context: &StepLogContext<'_>) -> String {
    let infinity = Value::String(INFINITY_MARK.into());
    let mut uid_data = Map::new();
    let mut graphed: [Map<String, Value>; 5] = Default::default();
    for point in &step.uids {
        let key = point.uid.to_string();
        let block = context
            .block_commit
            .iter()
            .find(|(uid, _)| *uid == point.uid)
            .and_then(|(_, block)| *block);
        let perplexity = point.loss_mean.map(libm::exp);
        uid_data.insert(
            key.clone(),
            json!({
                "uid": point.uid,
                "block": block.map_or(infinity.clone(), |b| json!(b)),
                "average_loss": finite_or(point.loss_mean, &infinity),
                "perplexity": finite_or(perplexity, &infinity),
                "win_rate": point.win_rate,
                "win_total": point.wins,
                "weight": point.weight,
                "sample_prompt": null,
                "sample_response": null,
                "sample_truth": null,
            }),
        );
        graphed[0].insert(key.clone(), finite_or(point.loss_mean, &Value::Null));
        graphed[1].insert(key.clone(), finite_or(perplexity, &Value::Null));
        graphed[2].insert(key.clone(), json!(point.win_rate));
        graphed[3].insert(key.clone(), json!(point.wins));
        graphed[4].insert(key, json!(point.weight));
    }
    let uids: Vec<u16> = step.uids.iter().map(|p| p.uid).collect();
    let original = json!({
        "timestamp": context.time_s,
        "competition_id": context.competition,
        "pages": context.pages,
        "uids": uids,
        "uid_data": uid_data,
    });
    let original = serde_json::to_string(&original)
        .unwrap_or_default()
        .replace("\"\\u0000Infinity\"", "Infinity");
    let nulls: Map<String, Value> = uids.iter().map(|u| (u.to_string(), Value::Null)).collect();
    let [loss, perplexity, win_rate, win_total, weight] = graphed;
    let [load, compute, pull] = context.perf.clone();
    json!({
        "step": step.step,
        "time": context.time_s,
        "competition_id": context.competition,
        "block": context.block,
        "uid_data": loss,
        "perplexity_data": perplexity,
        "win_rate_data": win_rate,
        "win_total_data": win_total,
        "sample_prompt_data": nulls,
        "sample_response_data": nulls,
        "sample_truth_data": nulls,
        "weight_data": weight,
        "load_model_perf_log": load,
        "compute_model_perf_log": compute,
        "pull_data_perf_log": pull,
        "original_format_json": original,
    })
    .to_string()
}
