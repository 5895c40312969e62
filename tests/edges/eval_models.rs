//! Our ONNX export run by ONNX Runtime against Hugging Face transformers: the tiny models in
//! `fixtures/models/` (Llama and StableLM, f32 and bf16, one sample past 2048 tokens) and their
//! reference losses, computed by `fixtures/models/make_models.py` with transformers in f32.

#![cfg(feature = "eval")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::tokenize::TokenizerFiles;
use validator::eval::{EvalOptions, Evaluator, ModelDir, read_samples};

#[derive(Deserialize)]
struct Reference {
    models: std::collections::BTreeMap<String, ModelReference>,
}

#[derive(Deserialize)]
struct ModelReference {
    parameters: u64,
    losses: Vec<Option<f64>>,
    tokens: Vec<Tokens>,
}

#[derive(Deserialize)]
struct Tokens {
    prompt_ids: Vec<i64>,
    ids: Vec<i64>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn options() -> EvalOptions {
    EvalOptions {
        threads: 2,
        isolation: Isolation::InProcess,
        date: CivilDate {
            year: 2025,
            month: 1,
            day: 1,
        },
        ..EvalOptions::default()
    }
}

fn pairs() -> Vec<(String, String)> {
    read_samples(&fixtures().join("samples.jsonl"))
        .unwrap()
        .into_iter()
        .map(|s| (s.prompt, s.response))
        .collect()
}

#[test]
fn losses_match_transformers_within_1e4() {
    let reference = reference();
    assert_eq!(reference.models.len(), 4);
    let pairs = pairs();
    for (name, expected) in &reference.models {
        let dir = fixtures().join(name);
        let model = ModelDir::open(&dir).unwrap();
        assert_eq!(model.parameter_count(), expected.parameters, "{name}");
        let tokenizer = TokenizerFiles::load(&dir).unwrap();
        let options = options();
        let prepared = tokenizer
            .prepare(
                &pairs,
                options.max_seq_len,
                options.date,
                &options.isolation,
            )
            .unwrap();
        let mut evaluator = Evaluator::new(&model, &options).unwrap();
        let mut long_samples = 0;
        for (index, (sample, want)) in prepared.iter().zip(&expected.losses).enumerate() {
            let got = evaluator.score(sample);
            assert!(
                got.error.is_none(),
                "{name} sample {index}: {:?}",
                got.error
            );
            match want {
                Some(want) => {
                    let diff = (got.loss - want).abs();
                    assert!(
                        diff <= 1e-4,
                        "{name} sample {index}: {} vs transformers {want} ({diff:e})",
                        got.loss
                    );
                }
                // transformers gives NaN when every label is masked; we give +infinity.
                None => assert_eq!(got.loss, f64::INFINITY, "{name} sample {index}"),
            }
            if sample.ids.len() == 2048 {
                long_samples += 1;
            }
        }
        assert!(
            long_samples >= 2,
            "{name}: the fixture lost its samples past 2048 tokens"
        );
    }
}

/// Packing must not move a loss: a sample's result is the same bit for bit in a run of many
/// as alone (its padded length is its own), and within 1e-5 of the sample run unpadded.
#[test]
fn batched_runs_equal_samples_one_at_a_time() {
    let pairs = pairs();
    for name in ["llama-f32", "stablelm-f32", "llama-bf16", "stablelm-bf16"] {
        let dir = fixtures().join(name);
        let model = ModelDir::open(&dir).unwrap();
        let prepared = TokenizerFiles::load(&dir)
            .unwrap()
            .prepare(&pairs, 2048, options().date, &Isolation::InProcess)
            .unwrap();
        let mut batched = Evaluator::new(
            &model,
            &EvalOptions {
                tokens_per_run: 1 << 16,
                ..options()
            },
        )
        .unwrap();
        let together = batched.score_all(&prepared, |_, _| {});
        let mut alone = Evaluator::new(
            &model,
            &EvalOptions {
                tokens_per_run: 1,
                ..options()
            },
        )
        .unwrap();
        let mut runs_of_many = 0;
        let lengths: Vec<usize> = prepared.iter().map(|p| p.ids.len()).collect();
        for run in validator::eval::runs::plan(&lengths, 1 << 16, 2048) {
            runs_of_many += usize::from(run.members.len() > 1);
        }
        assert!(runs_of_many >= 1, "{name}: no run of several samples");
        for (index, (sample, packed)) in prepared.iter().zip(&together).enumerate() {
            let single = alone.score(sample);
            assert_eq!(
                packed.loss.to_bits(),
                single.loss.to_bits(),
                "{name} sample {index}: {} packed, {} alone",
                packed.loss,
                single.loss
            );
            let unpadded = alone.score_unpadded(sample);
            if unpadded.loss.is_finite() {
                let diff = (packed.loss - unpadded.loss).abs();
                assert!(
                    diff <= 1e-5,
                    "{name} sample {index}: {} packed, {} unpadded ({diff:e})",
                    packed.loss,
                    unpadded.loss
                );
            } else {
                assert_eq!(packed.loss.to_bits(), unpadded.loss.to_bits());
            }
            assert_eq!(packed.targets, unpadded.targets);
        }
    }
}

/// Postmortem: the fitted budget was raised to the batch's longest sample, so one 2,048-token
/// sample made every run of a CPU batch 2,048 tokens, whatever `--eval-tokens-per-run` said.
#[test]
fn the_fitted_token_budget_is_never_raised_and_halves_only_to_fit() {
    let model = ModelDir::open(&fixtures().join("llama-f32")).unwrap();
    assert_eq!(model.fitting_tokens_per_run(2048, 2048, u64::MAX, 512), 512);
    assert_eq!(
        model.fitting_tokens_per_run(100, 2048, u64::MAX, 8192),
        8192
    );
    // A budget that one 256-token sample fits but 8,192 tokens do not: halved, never below
    // the longest sample.
    let fits_one = validator::eval::estimate::MemoryEstimate::of_run(
        &model.config,
        &model.weights,
        256,
        256,
        2048,
    );
    let budget = fits_one.total_bytes();
    let fitted = model.fitting_tokens_per_run(256, 2048, budget, 8192);
    assert!((256..8192).contains(&fitted), "{fitted}");
}

#[test]
fn tokenization_matches_transformers_token_for_token() {
    let reference = reference();
    let pairs = pairs();
    for (name, expected) in &reference.models {
        let tokenizer = TokenizerFiles::load(&fixtures().join(name)).unwrap();
        let prepared = tokenizer
            .prepare(&pairs, 2048, options().date, &Isolation::InProcess)
            .unwrap();
        for (index, (ours, theirs)) in prepared.iter().zip(&expected.tokens).enumerate() {
            assert_eq!(ours.ids, theirs.ids, "{name} sample {index} ids");
            assert_eq!(
                ours.prompt_len,
                theirs.prompt_ids.len(),
                "{name} sample {index} prompt length"
            );
        }
    }
}

#[test]
fn the_eval_command_prints_json_with_null_for_infinite_losses() {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--json", "--threads", "2", "--model"])
        .arg(fixtures().join("stablelm-bf16"))
        .arg("--data")
        .arg(fixtures().join("samples.jsonl"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let losses = json["losses"].as_array().unwrap();
    assert_eq!(losses.len(), 8);
    assert!(losses[6].is_null());
    assert!(losses[0].as_f64().unwrap() > 0.0);
    // N's mean: one infinite sample makes the model's mean infinite.
    assert!(json["mean"].is_null());
    assert_eq!(json["norm_check"]["passed"], true);
    assert_eq!(json["architecture"], "StableLmForCausalLM");
    let reference = reference();
    let want = reference.models["stablelm-bf16"].losses[0].unwrap();
    assert!((losses[0].as_f64().unwrap() - want).abs() <= 1e-4);
}

#[test]
fn the_eval_command_prints_a_table_without_json() {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--threads", "2", "--model"])
        .arg(fixtures().join("llama-f32"))
        .arg("--data")
        .arg(fixtures().join("samples.jsonl"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("LlamaForCausalLM") && text.contains("norm check: passes"),
        "{text}"
    );
    assert!(
        text.contains("mean loss: inf (7 of 8 samples finite)"),
        "{text}"
    );
}
