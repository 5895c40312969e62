//! The calls we sign and the storage we read for weights, encoded by our code against
//! mainnet's metadata (spec 393, `../shared/chain/metadata/finney-spec393.scale`) and
//! compared byte for byte with polkadot.js's encoding of the same metadata
//! (`fixtures/chain/spec393_vectors.json`, written by `chain_node/vectors.mjs`; rerun here
//! from the chopsticks install, so the fixture cannot drift from the encoder).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subxt::client::OfflineClientAtBlock;
use subxt::config::polkadot::PolkadotConfigBuilder;
use subxt::config::substrate::SpecVersionForRange;
use subxt::dynamic::{self, Value};
use subxt::{Metadata, OfflineClient, PolkadotConfig};
use validator::chain::mechanism::{
    SubnetMechanism, WeightCalls, hash_commit_payload, hash_reveal_payload, set_weights_payload,
    timelocked_payload,
};
use validator::chain::transactions::{commitment_payload, raw_field};

fn metadata_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/chain/metadata/{name}"))
}

fn vectors_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/chain/spec393_vectors.json")
}

/// An offline client of `metadata`: what encodes calls and keys exactly as a node serving it.
fn offline(name: &str) -> Option<(OfflineClientAtBlock<PolkadotConfig>, Metadata)> {
    let Ok(bytes) = std::fs::read(metadata_path(name)) else {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "{name} is missing"
        );
        return None;
    };
    let decode = || <Metadata as subxt::ext::codec::Decode>::decode(&mut &bytes[..]).unwrap();
    let metadata = decode();
    let config = PolkadotConfigBuilder::new()
        .set_metadata_for_spec_versions([(0, Arc::new(decode()))])
        .set_spec_version_for_block_ranges([SpecVersionForRange {
            block_range: 0..u64::MAX,
            spec_version: 0,
            transaction_version: 0,
        }])
        .build();
    let client = OfflineClient::new_with_config(config)
        .at_block(0u64)
        .unwrap();
    Some((client, metadata))
}

fn hex(bytes: &[u8]) -> String {
    let digits: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{digits}")
}

fn bytes_of(text: &serde_json::Value) -> Vec<u8> {
    validator::machine::wire::hex_decode(text.as_str().unwrap()).unwrap()
}

fn u16s(list: &serde_json::Value) -> Vec<u16> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| u16::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

#[test]
fn weight_calls_and_keys_match_an_independent_encoder_of_mainnet_metadata() {
    let Some((client, metadata)) = offline("finney-spec393.scale") else {
        return;
    };
    let vectors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_path()).unwrap()).unwrap();
    let calls = WeightCalls::of(&metadata);
    let netuid = u16::try_from(vectors["netuid"].as_u64().unwrap()).unwrap();
    let mut checked = 0;
    for case in vectors["calls"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mechanism = SubnetMechanism {
            netuid,
            mecid: u8::try_from(case["mecid"].as_u64().unwrap_or(0)).unwrap(),
        };
        let ours = match name {
            "set_mechanism_weights" => {
                let (call, payload) = set_weights_payload(
                    &calls,
                    mechanism,
                    &u16s(&case["uids"]),
                    &u16s(&case["weights"]),
                    case["version_key"].as_u64().unwrap(),
                )
                .unwrap();
                assert_eq!(call.name, name);
                client.tx().call_data(&payload).unwrap()
            }
            "commit_timelocked_mechanism_weights" => {
                let (call, payload) = timelocked_payload(
                    &calls,
                    mechanism,
                    &bytes_of(&case["commit"]),
                    case["reveal_round"].as_u64().unwrap(),
                    u16::try_from(case["version"].as_u64().unwrap()).unwrap(),
                )
                .unwrap();
                assert_eq!(call.name, name);
                client.tx().call_data(&payload).unwrap()
            }
            "commit_mechanism_weights" => {
                let hash: [u8; 32] = bytes_of(&case["hash"]).try_into().unwrap();
                let (call, payload) = hash_commit_payload(&calls, mechanism, hash).unwrap();
                assert_eq!(call.name, name);
                client.tx().call_data(&payload).unwrap()
            }
            "reveal_mechanism_weights" => {
                let (call, payload) = hash_reveal_payload(
                    &calls,
                    mechanism,
                    &u16s(&case["uids"]),
                    &u16s(&case["weights"]),
                    &u16s(&case["salt"]),
                    case["version_key"].as_u64().unwrap(),
                )
                .unwrap();
                assert_eq!(call.name, name);
                client.tx().call_data(&payload).unwrap()
            }
            "set_commitment" => {
                let raw = case["raw"].as_str().unwrap().as_bytes();
                client
                    .tx()
                    .call_data(&commitment_payload(netuid, raw_field(raw)))
                    .unwrap()
            }
            other => panic!("an unknown case {other}"),
        };
        assert_eq!(hex(&ours), case["data"].as_str().unwrap(), "{case}");
        checked += 1;
    }
    assert_eq!(checked, 13);

    let storage = client.storage();
    let key_of = |entry: &str, keys: Vec<Value>| -> Vec<u8> {
        storage
            .entry(dynamic::storage::<Vec<Value>, Value>(
                "SubtensorModule",
                entry,
            ))
            .unwrap()
            .fetch_key(keys)
            .unwrap()
    };
    for case in vectors["keys"].as_array().unwrap() {
        let entry = case["entry"].as_str().unwrap();
        let mechanism = SubnetMechanism {
            netuid,
            mecid: u8::try_from(case["mecid"].as_u64().unwrap()).unwrap(),
        };
        let index = Value::u128(u128::from(mechanism.storage_index().unwrap()));
        let ours = match entry {
            "LastUpdate" => key_of(entry, vec![index]),
            "Weights" => key_of(
                entry,
                vec![
                    index,
                    Value::u128(u128::from(case["uid"].as_u64().unwrap())),
                ],
            ),
            "WeightCommits" => key_of(
                entry,
                vec![index, Value::from_bytes(bytes_of(&case["account"]))],
            ),
            "TimelockedWeightCommits" => key_of(
                entry,
                vec![
                    index,
                    Value::u128(u128::from(case["epoch"].as_u64().unwrap())),
                ],
            ),
            "MechanismCountCurrent" => key_of(entry, vec![Value::u128(u128::from(netuid))]),
            other => panic!("an unknown entry {other}"),
        };
        assert_eq!(hex(&ours), case["key"].as_str().unwrap(), "{case}");
    }
}

/// The committed vectors are what polkadot.js writes today: rerun from the chopsticks
/// install, whose lockfile pins `@polkadot/types`.
#[test]
fn the_committed_vectors_are_the_independent_encoders() {
    let Some(dir) = crate::harness::chopsticks_dir() else {
        return;
    };
    if !metadata_path("finney-spec393.scale").is_file() {
        return;
    }
    let script = dir.join("vectors.mjs");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/edges/chain_node/vectors.mjs"),
        &script,
    )
    .unwrap();
    let output = std::process::Command::new("node")
        .arg(&script)
        .arg(metadata_path("finney-spec393.scale"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fresh: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let committed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors_path()).unwrap()).unwrap();
    assert_eq!(fresh, committed);
}

/// Spec 218 (the test runtime) has no mechanism calls: mechanism 0 takes the old ones, and
/// any other mechanism has none.
#[test]
fn the_test_runtime_offers_only_the_old_calls_for_mechanism_zero() {
    let Some((client, metadata)) = offline("raonet-spec218.scale") else {
        return;
    };
    let calls = WeightCalls::of(&metadata);
    let subnet = SubnetMechanism::of_subnet(1);
    let (call, payload) = set_weights_payload(&calls, subnet, &[0, 1], &[65535, 1], 7).unwrap();
    assert_eq!(call.name, "set_weights");
    let data = client.tx().call_data(&payload).unwrap();
    assert_eq!(&data[..2], &[7, 0], "SubtensorModule.set_weights");
    let second = SubnetMechanism {
        netuid: 1,
        mecid: 1,
    };
    assert!(set_weights_payload(&calls, second, &[0], &[1], 7).is_err());
    assert!(calls.timelocked(0).is_none());
}

/// drand quicknet's round 123 signature (public; `chain::timelock`'s tests verify it against
/// quicknet's key).
const SIGNATURE_123: &str = "b75c69d0b72a5d906e854e808ba7e2accb1542ac355ae486d591aa9d43765482e26cd02df835d3546d23c4b13e0dfc92";

/// The SDK's own timelocked commits of mechanism weights (`drand_vectors.py`, recorded with
/// bittensor 10.2.0): our drand round for the same block, subnet and moment is the SDK's,
/// computed with the mechanism's storage index, and the SDK's ciphertext opens, with round
/// 123's signature, to exactly the payload we encrypt.
#[test]
fn drand_round_and_payload_of_a_mechanism_commit_are_the_sdks() {
    use validator::chain::timelock::{decrypt, reveal_round, weights_payload};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/chain/drand_mechanism_vectors.json");
    let vectors: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut opened = 0;
    for commit in vectors["commits"].as_array().unwrap() {
        let number = |key: &str| commit[key].as_u64().unwrap();
        let mechanism = SubnetMechanism {
            netuid: u16::try_from(number("netuid")).unwrap(),
            mecid: u8::try_from(number("mecid")).unwrap(),
        };
        let call = &commit["call"];
        assert_eq!(call["netuid"], commit["netuid"]);
        assert_eq!(call["mecid"], commit["mecid"]);
        assert_eq!(call["commit_reveal_version"], 4);
        let round = call["reveal_round"].as_u64().unwrap();
        for now in commit["now_unix_s"].as_array().unwrap() {
            let ours = reveal_round(
                number("block"),
                mechanism.storage_index().unwrap(),
                number("tempo"),
                number("reveal_period_epochs"),
                commit["block_time_s"].as_f64().unwrap(),
                now.as_f64().unwrap(),
            );
            assert_eq!(ours, round, "{commit}");
        }
        if round == 123 {
            let hotkey: [u8; 32] = bytes_of(&commit["hotkey"]).try_into().unwrap();
            let expected = weights_payload(
                Some(hotkey),
                &u16s(&commit["uids"]),
                &u16s(&commit["weights"]),
                number("version_key"),
            );
            let signature = validator::machine::wire::hex_decode(SIGNATURE_123).unwrap();
            let plain = decrypt(&bytes_of(&call["commit"]), &signature).unwrap();
            assert_eq!(plain, expected);
            opened += 1;
        }
    }
    assert_eq!(opened, 1, "the mechanism-1 commit lands on round 123");
}
