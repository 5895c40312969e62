//! N's float32 moving average against torch itself: `fixtures/torch_f32/histories.json` holds
//! two 1,000-step histories of N's update run by torch 2.1.2 (`generate.py` there), with a
//! digest of the u16 vector bittensor puts on chain after every step and the float32 bits at
//! the end. The u16 vectors must be identical at every step, and the bits at the end.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use validator::machine::torch_f32::n_update;
use validator::machine::weights::to_chain_weights;

#[derive(Deserialize)]
struct Vectors {
    torch: String,
    histories: Vec<History>,
}

#[derive(Deserialize)]
struct History {
    steps: Vec<Step>,
    final_bits: Vec<u32>,
}

#[derive(Deserialize)]
struct Step {
    size: usize,
    uids: Vec<u16>,
    win_rate: Vec<f64>,
    scale: f64,
    chain_digest: String,
    #[serde(default)]
    chain_uids: Option<Vec<u16>>,
    #[serde(default)]
    chain_u16: Option<Vec<u16>>,
}

fn digest(uids: &[u16], values: &[u16]) -> String {
    let text: String = uids
        .iter()
        .zip(values)
        .map(|(uid, value)| format!("{uid}:{value},"))
        .collect();
    let hash = Sha256::digest(text.as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect::<String>()[..16].to_owned()
}

#[test]
fn u16_vectors_match_torch_over_a_thousand_steps() {
    let text = std::fs::read_to_string("fixtures/torch_f32/histories.json").unwrap();
    let vectors: Vectors = serde_json::from_str(&text).unwrap();
    assert!(vectors.torch.starts_with("2."));
    for (number, history) in vectors.histories.iter().enumerate() {
        assert!(history.steps.len() >= 1000);
        let mut weights: Vec<f32> = Vec::new();
        for (index, step) in history.steps.iter().enumerate() {
            n_update(
                &mut weights,
                &step.uids,
                &step.win_rate,
                step.size,
                0.08,
                step.scale,
                0.9,
            );
            let widened: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
            let (uids, values) = to_chain_weights(&widened).unwrap();
            if let (Some(expected_uids), Some(expected)) = (&step.chain_uids, &step.chain_u16) {
                assert_eq!(&uids, expected_uids, "history {number}, step {index}");
                assert_eq!(&values, expected, "history {number}, step {index}");
            }
            assert_eq!(
                digest(&uids, &values),
                step.chain_digest,
                "history {number}, step {index}: the u16 vector differs from torch's"
            );
        }
        let bits: Vec<u32> = weights.iter().map(|w| w.to_bits()).collect();
        assert_eq!(
            bits, history.final_bits,
            "history {number}: final float32 bits"
        );
    }
}
