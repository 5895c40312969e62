//! `validator score` against the original validator's own answers.
//!
//! `fixtures/reference/n_score_cases.json` holds random scoring cases with the answers of N's
//! `finetune/validation.py` (wins, win rates) and of N's `run_step` weight update in float32
//! (see `fixtures/reference/n_score_vectors.py`, which generated them from N's checkout).
//! Wins must agree exactly, win rates to 1e-12, weights to 1e-6.

use std::collections::BTreeMap;

use serde::Deserialize;
use validator::score::score_json;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    input: serde_json::Value,
    n_output: Expected,
}

#[derive(Deserialize)]
struct Expected {
    wins: BTreeMap<String, u64>,
    win_rate: BTreeMap<String, f64>,
    weights: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/reference/n_score_cases.json"
    ))
    .expect("reference cases");
    serde_json::from_str::<Cases>(&text)
        .expect("parse cases")
        .cases
}

#[test]
fn score_agrees_with_n_on_every_reference_case() {
    let cases = cases();
    assert!(cases.len() >= 50, "too few reference cases");
    let mut with_wins = 0;
    for (index, case) in cases.iter().enumerate() {
        let output =
            score_json(&case.input.to_string()).unwrap_or_else(|e| panic!("case {index}: {e}"));
        let expected = &case.n_output;
        for (uid, wins) in &expected.wins {
            let uid: u16 = uid.parse().unwrap();
            assert_eq!(output.wins[&uid], *wins, "case {index} uid {uid} wins");
            if *wins > 0 {
                with_wins += 1;
            }
        }
        assert_eq!(output.wins.len(), expected.wins.len(), "case {index}");
        for (uid, rate) in &expected.win_rate {
            let uid: u16 = uid.parse().unwrap();
            let ours = output.win_rate[&uid];
            assert!(
                (ours - rate).abs() <= 1e-12,
                "case {index} uid {uid}: {ours} vs {rate}"
            );
        }
        assert_eq!(
            output.weights.len(),
            expected.weights.len(),
            "case {index} weight count"
        );
        for (slot, (ours, theirs)) in output.weights.iter().zip(&expected.weights).enumerate() {
            assert!(
                (ours - theirs).abs() <= 1e-6,
                "case {index} weight {slot}: {ours} vs {theirs}"
            );
        }
    }
    assert!(
        with_wins > 100,
        "the cases exercise too few wins ({with_wins})"
    );
}
