//! The successor's reference loss (F v3.1.0's `compute_reference_loss`) on the tiny Llama
//! fixture, against transformers running F's own function (`fixtures/successor_reference/`,
//! made by its `generate.py`): the context (F's system prompt and the question through the chat
//! template, with the generation prompt) and the reference tokenized apart, token for token, and
//! each loss over the reference's positions within 1e-4, a sample past 2,048 tokens included.

#![cfg(feature = "eval")]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::tokenize::{SUCCESSOR_SYSTEM_PROMPT, TokenizerFiles};
use validator::eval::{EvalOptions, Evaluator, ModelDir};

#[derive(Deserialize)]
struct Reference {
    system_prompt: String,
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    question: String,
    reference: String,
    context_ids: Vec<i64>,
    reference_ids: Vec<i64>,
    loss: f64,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[test]
fn reference_losses_match_fs_own_code_within_1e4() {
    let text = std::fs::read_to_string(root().join("successor_reference/reference.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert_eq!(reference.system_prompt, SUCCESSOR_SYSTEM_PROMPT);
    let dir = root().join("models/llama-f32");
    let tokenizer = TokenizerFiles::load(&dir).unwrap();
    let pairs: Vec<(String, String)> = reference
        .samples
        .iter()
        .map(|s| (s.question.clone(), s.reference.clone()))
        .collect();
    let date = CivilDate {
        year: 2025,
        month: 1,
        day: 1,
    };
    let prepared = tokenizer
        .prepare_reference(&pairs, date, &Isolation::InProcess)
        .unwrap();
    // The successor never truncates: the graph takes competition 4's 16,384 positions.
    let options = EvalOptions {
        threads: 2,
        isolation: Isolation::InProcess,
        date,
        max_seq_len: 16_384,
        ..EvalOptions::default()
    };
    let model = ModelDir::open(&dir).unwrap();
    let mut evaluator = Evaluator::new(&model, &options).unwrap();
    let mut long = 0;
    let mut diff_max: f64 = 0.0;
    for (index, (sample, want)) in prepared.iter().zip(&reference.samples).enumerate() {
        let expected: Vec<i64> = want
            .context_ids
            .iter()
            .chain(&want.reference_ids)
            .copied()
            .collect();
        assert_eq!(sample.ids, expected, "sample {index}: tokens");
        assert_eq!(sample.prompt_len, want.context_ids.len(), "sample {index}");
        let got = evaluator.score(sample);
        assert!(got.error.is_none(), "sample {index}: {:?}", got.error);
        let diff = (got.loss - want.loss).abs();
        assert!(
            diff <= 1e-4,
            "sample {index}: {} vs F through transformers {} ({diff:e})",
            got.loss,
            want.loss
        );
        long += usize::from(sample.ids.len() > 2048);
        diff_max = diff_max.max(diff);
    }
    eprintln!("largest difference from F through transformers: {diff_max:e}");
    assert!(long >= 1, "the fixture lost its sample past 2,048 tokens");
}
