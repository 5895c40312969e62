//! `validator score`: one scoring step, JSON in and JSON out, for what-if analysis.
//!
//! The computation is the fold's own (the same `compute_wins`, softmax and moving average), on
//! numbers given directly instead of a journal. See [`score_json`] for the format.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::machine::params::EpsilonRule;
use crate::machine::scoring::{Contestant, compute_wins};
use crate::machine::weights::{moving_average, resize, step_weights_softmax};
use crate::machine::wire::FloatJson;

/// N's constants, the defaults.
const N_EPSILON: f64 = 0.01;
const N_TEMPERATURE: f64 = 0.08;
const N_ALPHA: f64 = 0.9;
const N_SAMPLE_MIN: u32 = 5;

/// The largest input read, in bytes.
pub const INPUT_BYTES_MAX: u64 = 16 << 20;

/// The most uids one step scores (subtensor's largest subnets hold 4,096).
pub const CONTESTANTS_MAX: usize = 4_096;

/// The most head-to-head sample comparisons one request may ask for (uids² × samples): about
/// a second of work. N's own steps are 256² × 400 = 2.6e7.
pub const COMPARISONS_MAX: u64 = 1_000_000_000;

/// Why the input was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid input: {0}")]
pub struct InvalidInput(pub String);

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EpsilonInput {
    Fixed(f64),
    LinearDecay {
        start: f64,
        end: f64,
        decay_blocks: u64,
    },
}

#[derive(Debug, Deserialize)]
struct CompetitionInput {
    reward_percentage: f64,
    n_competitions: u32,
    // An operator may name the competition; it changes nothing.
    #[serde(default, rename = "id")]
    _id: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ScoreInput {
    epsilon: Option<EpsilonInput>,
    temperature: Option<f64>,
    alpha: Option<f64>,
    competition: Option<CompetitionInput>,
    uids: Option<Vec<u16>>,
    #[serde(default, deserialize_with = "unique_keys")]
    blocks: BTreeMap<String, Value>,
    #[serde(default, deserialize_with = "unique_keys")]
    losses: BTreeMap<String, Vec<FloatJson>>,
    prior_weights: Option<Vec<f64>>,
    n_uids: Option<usize>,
    block: Option<u64>,
    sample_min: Option<u32>,
}

/// The result of a step.
#[derive(Debug, Serialize)]
pub struct ScoreOutput {
    /// Head-to-head wins by uid.
    pub wins: BTreeMap<u16, u64>,
    /// Matches played by uid.
    pub matches: BTreeMap<u16, u64>,
    /// Win rate by uid.
    pub win_rate: BTreeMap<u16, f64>,
    /// The new moving-average vector, one entry per metagraph uid.
    pub weights: Vec<f64>,
    /// The step's own vector before averaging (sums to the competition scale).
    pub step_weights: Vec<f64>,
    /// The uids N keeps in the eval set for the next step.
    pub eval_next: Vec<u16>,
}

const KNOWN_KEYS: &[&str] = &[
    "epsilon",
    "temperature",
    "alpha",
    "competition",
    "uids",
    "blocks",
    "losses",
    "prior_weights",
    "n_uids",
    "block",
    "sample_min",
];

/// A JSON object as a map, refusing a key given twice (a plain map would keep the last one
/// silently, and a miner's or operator's duplicated uid would go unnoticed).
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object keyed by uid")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("key {key:?} given twice")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Unique(std::marker::PhantomData))
}

/// Keys of the input object this command does not read (they are ignored; the caller may
/// warn about them). Only the keys are kept: the values are skipped, not built.
pub fn unknown_keys(input: &str) -> Vec<String> {
    match serde_json::from_str::<BTreeMap<String, serde::de::IgnoredAny>>(input) {
        Ok(map) => map
            .into_keys()
            .filter(|key| !KNOWN_KEYS.contains(&key.as_str()))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Scores one step.
///
/// Input: `{"epsilon", "temperature", "alpha", "competition": {"reward_percentage",
/// "n_competitions"}, "uids", "blocks", "losses", "prior_weights"}`. `epsilon` is a number
/// (N: 0.01) or `{"start", "end", "decay_blocks"}` with the current `block`; `temperature` and
/// `alpha` default to N's 0.08 and 0.9; `competition` defaults to a scale of 1. `uids` defaults
/// to the uids of `losses`. A `null` or missing block is +infinity; a `null` loss is a failed
/// sample (+infinity). `prior_weights` is the moving average before the step, one entry per
/// metagraph uid (default: zeros up to the largest uid); `n_uids` resizes it first, as N does
/// when the metagraph changes. `sample_min` (N: 5) sizes `eval_next`.
pub fn score_json(input: &str) -> Result<ScoreOutput, InvalidInput> {
    let input: ScoreInput = serde_json::from_str(input).map_err(|e| InvalidInput(e.to_string()))?;
    score(input)
}

fn parse_uid(key: &str, what: &str) -> Result<u16, InvalidInput> {
    key.trim()
        .parse::<u16>()
        .map_err(|_| InvalidInput(format!("{what} key {key:?} is not a uid (0..=65535)")))
}

fn parse_block(uid: u16, value: &Value) -> Result<Option<u64>, InvalidInput> {
    match value {
        Value::Null => Ok(None),
        Value::Number(number) => {
            if let Some(block) = number.as_u64() {
                return Ok(Some(block));
            }
            // Python would accept 1000.0; accept any non-negative integral float below 2^53.
            match number.as_f64() {
                Some(block) if block >= 0.0 && block.fract() == 0.0 && block < 9.0e15 => {
                    Ok(Some(integral_to_u64(block)))
                }
                _ => Err(InvalidInput(format!(
                    "block of uid {uid} is {number}, not a non-negative integer"
                ))),
            }
        }
        other => Err(InvalidInput(format!(
            "block of uid {uid} is {other}, not an integer or null"
        ))),
    }
}

/// Converts a non-negative integral float below 2^53 to u64 (exact in that range).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn integral_to_u64(value: f64) -> u64 {
    value as u64
}

/// The mechanism a request asks for: N's constants unless overridden, checked by the
/// mechanism's own rules, and the competition's scale.
struct Mechanism {
    epsilon: EpsilonRule,
    temperature: f64,
    alpha: f64,
    sample_min: u32,
    scale: f64,
}

impl Mechanism {
    fn of(input: &ScoreInput) -> Result<Self, InvalidInput> {
        let epsilon = match &input.epsilon {
            None => EpsilonRule::Fixed(N_EPSILON),
            Some(EpsilonInput::Fixed(epsilon)) => EpsilonRule::Fixed(*epsilon),
            Some(EpsilonInput::LinearDecay {
                start,
                end,
                decay_blocks,
            }) => {
                if input.block.is_none() {
                    return Err(InvalidInput(
                        "epsilon decay needs the current \"block\"".into(),
                    ));
                }
                EpsilonRule::LinearDecay {
                    start: *start,
                    end: *end,
                    decay_blocks: *decay_blocks,
                }
            }
        };
        let (temperature, alpha) = (
            input.temperature.unwrap_or(N_TEMPERATURE),
            input.alpha.unwrap_or(N_ALPHA),
        );
        let sample_min = input.sample_min.unwrap_or(N_SAMPLE_MIN);
        // Reuse the mechanism's own parameter checks.
        let params = crate::machine::MechanismParams {
            epsilon: epsilon.clone(),
            temperature,
            alpha,
            sample_min,
            ..Default::default()
        };
        params.validate().map_err(|e| InvalidInput(e.0))?;
        Ok(Self {
            epsilon,
            temperature,
            alpha,
            sample_min,
            scale: scale_of(input.competition.as_ref())?,
        })
    }
}

fn scale_of(competition: Option<&CompetitionInput>) -> Result<f64, InvalidInput> {
    let Some(c) = competition else {
        return Ok(1.0);
    };
    // A competition's share of the emission: N's are fractions of one.
    if !(c.reward_percentage > 0.0 && c.reward_percentage <= 1.0) {
        return Err(InvalidInput(format!(
            "reward_percentage {} is outside (0, 1]",
            c.reward_percentage
        )));
    }
    if c.n_competitions == 0 {
        return Err(InvalidInput("n_competitions is 0".into()));
    }
    Ok(f64::from(c.n_competitions) * c.reward_percentage)
}

/// Losses by uid.
type LossesByUid = BTreeMap<u16, Vec<f64>>;
/// Commit blocks by uid (`None`: no model, +infinity).
type BlocksByUid = BTreeMap<u16, Option<u64>>;

/// Losses and commit blocks by uid, each uid once.
fn read_uid_maps(input: &ScoreInput) -> Result<(LossesByUid, BlocksByUid), InvalidInput> {
    let mut losses = LossesByUid::new();
    for (key, values) in &input.losses {
        let uid = parse_uid(key, "losses")?;
        if losses
            .insert(uid, values.iter().map(|v| v.0).collect())
            .is_some()
        {
            return Err(InvalidInput(format!("losses lists uid {uid} twice")));
        }
    }
    let mut blocks = BlocksByUid::new();
    for (key, value) in &input.blocks {
        let uid = parse_uid(key, "blocks")?;
        if blocks.insert(uid, parse_block(uid, value)?).is_some() {
            return Err(InvalidInput(format!("blocks lists uid {uid} twice")));
        }
    }
    Ok((losses, blocks))
}

/// The step's participants: `uids` as given (every uid of `losses` and `blocks` must be in
/// it), or the uids of `losses` and `blocks`.
fn participants(
    listed: Option<&Vec<u16>>,
    losses: &LossesByUid,
    blocks: &BlocksByUid,
) -> Result<BTreeSet<u16>, InvalidInput> {
    let Some(list) = listed else {
        return Ok(losses.keys().chain(blocks.keys()).copied().collect());
    };
    let set: BTreeSet<u16> = list.iter().copied().collect();
    if set.len() != list.len() {
        return Err(InvalidInput("uids lists a uid twice".into()));
    }
    let keyed: [(&str, Vec<u16>); 2] = [
        ("losses", losses.keys().copied().collect()),
        ("blocks", blocks.keys().copied().collect()),
    ];
    for (what, keys) in keyed {
        if let Some(stray) = keys.into_iter().find(|uid| !set.contains(uid)) {
            return Err(InvalidInput(format!(
                "{what} has uid {stray}, which is not in uids"
            )));
        }
    }
    Ok(set)
}

/// Refuses a request whose scoring would take more than [`COMPARISONS_MAX`] comparisons.
fn check_work(uids: &BTreeSet<u16>, losses: &LossesByUid) -> Result<(), InvalidInput> {
    if uids.len() > CONTESTANTS_MAX {
        return Err(InvalidInput(format!(
            "{} uids to score, over the limit of {CONTESTANTS_MAX}",
            uids.len()
        )));
    }
    let samples = losses.values().map(Vec::len).max().unwrap_or(0);
    let count = u64::try_from(uids.len()).unwrap_or(u64::MAX);
    let comparisons = count
        .saturating_mul(count)
        .saturating_mul(u64::try_from(samples).unwrap_or(u64::MAX));
    if comparisons > COMPARISONS_MAX {
        return Err(InvalidInput(format!(
            "{count} uids × {samples} samples is {comparisons} comparisons, over the limit of \
             {COMPARISONS_MAX}"
        )));
    }
    Ok(())
}

/// The moving average before the step and the metagraph's size.
fn prior_weights(
    prior: Option<Vec<f64>>,
    n_uids: Option<usize>,
    uids: &BTreeSet<u16>,
) -> Result<(Vec<f64>, usize), InvalidInput> {
    let prior_given = prior.is_some();
    let mut weights = prior.unwrap_or_default();
    if weights.len() > 65536 {
        return Err(InvalidInput(format!(
            "prior_weights has {} entries, more than the 65536 uids a metagraph can have",
            weights.len()
        )));
    }
    // Weights on chain are never negative: a negative prior is not one N could have.
    if let Some(bad) = weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
        return Err(InvalidInput(format!(
            "prior weight {bad} is not a finite, non-negative number"
        )));
    }
    let size = match n_uids {
        Some(size) if size > 65536 => {
            return Err(InvalidInput(format!("n_uids {size} exceeds 65536")));
        }
        Some(size) => size,
        None if !prior_given => uids.last().map_or(0, |uid| usize::from(*uid) + 1),
        None => weights.len(),
    };
    if !prior_given && weights.len() < size {
        resize(&mut weights, size);
    }
    if let Some(outside) = uids.iter().find(|uid| usize::from(**uid) >= size) {
        return Err(InvalidInput(format!(
            "uid {outside} is outside the metagraph of {size} uids (prior_weights has one entry per uid)"
        )));
    }
    Ok((weights, size))
}

fn score(input: ScoreInput) -> Result<ScoreOutput, InvalidInput> {
    let mechanism = Mechanism::of(&input)?;
    let (losses, blocks) = read_uid_maps(&input)?;
    let uids = participants(input.uids.as_ref(), &losses, &blocks)?;
    check_work(&uids, &losses)?;
    let (mut weights, size) = prior_weights(input.prior_weights, input.n_uids, &uids)?;

    let empty = Vec::new();
    let contestants: Vec<Contestant<'_>> = uids
        .iter()
        .map(|uid| Contestant {
            uid: *uid,
            block_commit: blocks.get(uid).copied().flatten(),
            losses: losses.get(uid).unwrap_or(&empty),
        })
        .collect();
    let tallies = compute_wins(&contestants, &mechanism.epsilon, input.block.unwrap_or(0));
    let uid_list: Vec<u16> = uids.iter().copied().collect();
    let win_rates: Vec<f64> = tallies.iter().map(|t| t.win_rate).collect();

    let step_weights = if uid_list.is_empty() {
        // N returns before touching the weights when there is nobody to score.
        resize(&mut weights, size);
        vec![0.0; size]
    } else {
        let step = step_weights_softmax(
            &uid_list,
            &win_rates,
            size,
            mechanism.temperature,
            mechanism.scale,
        );
        moving_average(&mut weights, &step, mechanism.alpha);
        step
    };

    let mut ranked: Vec<(u16, f64)> = uid_list
        .iter()
        .copied()
        .zip(win_rates.iter().copied())
        .collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let mut eval_next: Vec<u16> = ranked
        .iter()
        .take(usize::try_from(mechanism.sample_min).unwrap_or(usize::MAX))
        .map(|(uid, _)| *uid)
        .collect();
    eval_next.sort_unstable();

    // Parameters that pass their own checks can still overflow together (a huge scale, a
    // subnormal temperature): a result that is not a number is the input's fault.
    let finite = |values: &[f64]| values.iter().all(|v| v.is_finite());
    if !finite(&weights) || !finite(&step_weights) || !finite(&win_rates) {
        return Err(InvalidInput(
            "the parameters give weights that are not finite numbers (check temperature, \
             reward_percentage and n_competitions)"
                .into(),
        ));
    }
    Ok(ScoreOutput {
        wins: uid_list
            .iter()
            .copied()
            .zip(tallies.iter().map(|t| t.wins))
            .collect(),
        matches: uid_list
            .iter()
            .copied()
            .zip(tallies.iter().map(|t| t.matches))
            .collect(),
        win_rate: uid_list.iter().copied().zip(win_rates).collect(),
        weights,
        step_weights,
        eval_next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_scores() {
        let input = r#"{"epsilon": 0.01, "temperature": 0.08, "alpha": 0.9,
            "competition": {"reward_percentage": 0.6, "n_competitions": 2},
            "uids": [3, 7, 9],
            "blocks": {"3": 1000, "7": 1200, "9": null},
            "losses": {"3": [2.01, 1.98, null], "7": [2.0, 1.99, 2.1], "9": []},
            "prior_weights": [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0]}"#;
        let output = score_json(input).unwrap();
        assert_eq!(output.wins[&3], 2);
        assert_eq!(output.wins[&7], 1);
        assert_eq!(output.wins[&9], 0);
        assert_eq!(output.win_rate[&3], 2.0 / 3.0);
        assert_eq!(output.weights.len(), 10);
        let total: f64 = output.step_weights.iter().sum();
        assert!((total - 1.2).abs() < 1e-12);
    }

    #[test]
    fn invalid_inputs_say_what_is_wrong() {
        let error = |text: &str| score_json(text).unwrap_err().to_string();
        assert!(error(r#"{"losses": {"x": []}}"#).contains("not a uid"));
        assert!(error(r#"{"uids": [1], "losses": {"2": []}}"#).contains("not in uids"));
        assert!(error(r#"{"uids": [1, 1]}"#).contains("twice"));
        assert!(error(r#"{"uids": [4], "prior_weights": [0.0]}"#).contains("outside"));
        assert!(error(r#"{"temperature": -1}"#).contains("temperature"));
        assert!(error(r#"{"blocks": {"1": "soon"}}"#).contains("block of uid 1"));
        assert!(error("[1, 2]").contains("invalid input"));
    }

    /// Postmortem (hostile-input round): 65,536 uids ran for 87 s, a duplicated uid key was
    /// silently collapsed, and overflowing parameters printed `null` weights with exit 0.
    #[test]
    fn work_duplicates_and_non_finite_results_are_refused() {
        let error = |text: &str| score_json(text).unwrap_err().to_string();
        let many: Vec<String> = (0..5_000).map(|uid| format!("\"{uid}\": [1.0]")).collect();
        let text = format!("{{\"losses\": {{{}}}}}", many.join(","));
        assert!(error(&text).contains("over the limit of 4096"));
        let wide: Vec<String> = (0..2_000)
            .map(|uid| format!("\"{uid}\": [{}]", vec!["1.0"; 400].join(",")))
            .collect();
        let text = format!("{{\"losses\": {{{}}}}}", wide.join(","));
        assert!(error(&text).contains("comparisons"));
        assert!(error(r#"{"losses": {"1": [1.0], "1": [2.0]}}"#).contains("given twice"));
        assert!(error(r#"{"blocks": {"1": 5, "1": 6}}"#).contains("given twice"));
        assert!(
            error(r#"{"losses": {"1": [1.0], "2": [2.0]}, "temperature": 1e-310}"#)
                .contains("not finite")
        );
        // Postmortem (second hostile-input round): a reward_percentage of 1e300 printed
        // weights of 1e298, and negative priors weights of -9e307, with exit 0.
        let overflow = r#"{"losses": {"1": [1.0], "2": [2.0]},
            "competition": {"reward_percentage": 1e308, "n_competitions": 4000000000}}"#;
        assert!(error(overflow).contains("outside (0, 1]"));
        let negative =
            r#"{"losses": {"1": [1.0], "2": [2.0]}, "prior_weights": [0.0, -1e308, 0.5]}"#;
        assert!(error(negative).contains("non-negative"));
        let prior = format!("{{\"prior_weights\": [{}]}}", vec!["0.0"; 70_000].join(","));
        assert!(error(&prior).contains("more than the 65536"));
        assert_eq!(
            unknown_keys(r#"{"losses": {}, "extra": {"deep": [1, 2, 3]}}"#),
            ["extra"]
        );
    }
}
