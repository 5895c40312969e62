//! The chain edge against a real subtensor runtime (spec 218 under chopsticks; see
//! `harness`): registration, commitments and their blocks, the metagraph, weights and the
//! chain's refusals, malformed commitments rejected by the fold, commit-reveal, the CLI, and
//! a node killed mid-call.

#![cfg(feature = "chain")]

use super::harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use subxt::dynamic::Value;
use subxt::ext::scale_value::Composite;
use subxt_signer::sr25519::Keypair;
use validator::chain::mechanism::SubnetMechanism;
use validator::chain::transactions::{raw_field, submit_outcome};
use validator::chain::wallet::{Hotkey, WalletPath, hotkey_from_uri, load_hotkey};
use validator::chain::weights::{ChainWeights, version_key};
use validator::chain::{Chain, ChainError, ChainOptions, WeightsRule};
use validator::journal::recorder::Recorder;
use validator::machine::Event;
use validator::machine::event::{CommitmentField, SubmitOutcome, WeightsSubmitted};
use validator::machine::model_id::CommitmentInvalid;
use validator::machine::state::CommitmentStatus;
use validator::machine::wire::RawBytes;

use harness::{DevCalls, DevChain};

pub(super) const NETUID: u16 = 1;
pub(super) const TAO: u128 = 1_000_000_000;

/// `Sudo.sudo(AdminUtils.<name>(args))` signed by Alice, the dev chain's sudo key.
pub(super) async fn admin(client: &Chain, name: &str, args: Vec<Value>) -> Result<u64, ChainError> {
    let alice = hotkey_from_uri("//Alice").unwrap();
    let call = subxt::dynamic::tx("AdminUtils", name, Composite::unnamed(args)).into_value();
    client.sudo(&alice.keypair, call).await
}

/// Writes a bittensor hotkey file for `seed` (mode 0600) and loads it as the CLI would.
pub(super) fn wallet_hotkey(root: &Path, wallet: &str, seed: [u8; 32]) -> Hotkey {
    let keypair = Keypair::from_secret_key(seed).unwrap();
    let ss58 = keypair.public_key().to_account_id().to_string();
    let path = WalletPath {
        root: root.to_owned(),
        name: wallet.into(),
        hotkey: "default".into(),
    }
    .hotkey_file();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        &path,
        serde_json::json!({"secretSeed": format!("0x{seed_hex}"), "ss58Address": ss58, "accountId": "0x"})
            .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    load_hotkey(&path).unwrap()
}

pub(super) fn account(hotkey: &Hotkey) -> [u8; 32] {
    hotkey.keypair.public_key().0
}

pub(super) async fn connect(chain: &DevChain) -> Chain {
    let mut options = ChainOptions::new(&chain.url());
    options.call_timeout = Duration::from_secs(30);
    Chain::connect(options).await.unwrap()
}

/// Funds `hotkeys` from Alice and registers them on netuid 1 (Alice is the coldkey).
pub(super) async fn fund_and_register(client: &Chain, hotkeys: &[&Hotkey]) {
    let alice = hotkey_from_uri("//Alice").unwrap();
    for hotkey in hotkeys {
        client
            .transfer(&alice.keypair, account(hotkey), 100 * TAO)
            .await
            .unwrap();
        client
            .burned_register(&alice.keypair, NETUID, account(hotkey))
            .await
            .unwrap();
    }
}

/// Every uid may set weights (a validator permit is only granted at an epoch otherwise).
pub(super) async fn grant_permits(chain: &DevChain, client: &Chain) {
    let (_, metagraph) = client.metagraph(NETUID, None).await.unwrap();
    let permits = vec![true; metagraph.hotkeys.len()];
    chain.set_storage(
        serde_json::json!({"SubtensorModule": {"ValidatorPermit": [[[NETUID], permits]]}}),
    );
}

/// A miner and a validator, their keys from `seeds`, funded, registered and allowed to set
/// weights.
async fn miner_and_validator(
    chain: &DevChain,
    client: &Chain,
    wallets: &Path,
    seeds: [u8; 2],
) -> (Hotkey, Hotkey) {
    let [seed_miner, seed_validator] = seeds;
    let miner = wallet_hotkey(wallets, "miner", [seed_miner; 32]);
    let validator = wallet_hotkey(wallets, "validator", [seed_validator; 32]);
    fund_and_register(client, &[&miner, &validator]).await;
    grant_permits(chain, client).await;
    (miner, validator)
}

fn refusal_name(result: Result<u64, ChainError>) -> String {
    match result {
        Err(ChainError::Refused { name, .. }) => name,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commitments_metagraph_and_weights_on_the_real_runtime() {
    let Some(chain) = DevChain::start() else {
        return;
    };
    let client = connect(&chain).await;
    let wallets = tempfile::tempdir().unwrap();
    let (_, before) = client.metagraph(NETUID, None).await.unwrap();
    let block_before = client.block_number().await.unwrap();

    // Five miners and a validator, registered by burn.
    let miners: Vec<Hotkey> = (1u8..=5)
        .map(|i| wallet_hotkey(wallets.path(), &format!("miner{i}"), [i; 32]))
        .collect();
    let validator = wallet_hotkey(wallets.path(), "validator", [42; 32]);
    let mut everyone: Vec<&Hotkey> = miners.iter().collect();
    everyone.push(&validator);
    fund_and_register(&client, &everyone).await;

    let (block_metagraph, metagraph) = client.metagraph(NETUID, None).await.unwrap();
    assert_eq!(metagraph.netuid, NETUID);
    assert_eq!(metagraph.hotkeys.len(), before.hotkeys.len() + 6);
    for hotkey in &everyone {
        assert!(
            metagraph.hotkeys.contains(&hotkey.ss58),
            "{} is not in the metagraph",
            hotkey.ss58
        );
    }
    for vector_len in [
        metagraph.consensus.len(),
        metagraph.incentive.len(),
        metagraph.stake.len(),
        metagraph.validator_permit.len(),
        metagraph.last_update.len(),
    ] {
        assert_eq!(vector_len, metagraph.hotkeys.len());
    }
    assert!(metagraph.tempo > 0);
    assert!(block_metagraph > block_before);
    // At an earlier block the metagraph is the earlier one.
    let (_, old) = client.metagraph(NETUID, Some(block_before)).await.unwrap();
    assert_eq!(old.hotkeys, before.hotkeys);

    // A valid model id, and the malformed kinds.
    let model_id = "miner1:model:0123456789abcdef0123456789abcdef01234567:S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=:m1";
    let garbage: Vec<u8> = (0u8..128)
        .map(|i| i.wrapping_mul(97).wrapping_add(200))
        .collect();
    let fields = [
        raw_field(model_id.as_bytes()),
        raw_field(&[0xff, 0xfe, 0x00, 0x80]),
        raw_field(&[]),
        raw_field(&garbage),
        Value::unnamed_variant("Sha256", [Value::from_bytes([7u8; 32])]),
    ];
    let mut blocks_commit = Vec::new();
    for (miner, field) in miners.iter().zip(fields) {
        let block = client
            .set_commitment_field(&miner.keypair, NETUID, field)
            .await
            .unwrap();
        blocks_commit.push(block);
    }
    // Over 128 bytes is refused before it is sent.
    let error = client
        .set_commitment(&miners[0].keypair, NETUID, &[b'a'; 129])
        .await
        .unwrap_err();
    assert!(
        matches!(error, ChainError::Invalid(ref why) if why.contains("128")),
        "{error}"
    );
    // An unregistered hotkey may not commit.
    let stranger = wallet_hotkey(wallets.path(), "stranger", [99; 32]);
    let alice = hotkey_from_uri("//Alice").unwrap();
    client
        .transfer(&alice.keypair, account(&stranger), 10 * TAO)
        .await
        .unwrap();
    let refused = client
        .set_commitment(&stranger.keypair, NETUID, model_id.as_bytes())
        .await;
    assert_eq!(refusal_name(refused), "AccountNotAllowedCommit");

    // Read back with their commit blocks; not there at an earlier block.
    let (block_read, commitments) = client.commitments(NETUID, None).await.unwrap();
    for (miner, block) in miners.iter().zip(&blocks_commit) {
        let commitment = commitments
            .iter()
            .find(|c| c.hotkey == miner.ss58)
            .unwrap_or_else(|| panic!("no commitment of {}", miner.ss58));
        assert_eq!(
            commitment.block_commit, *block,
            "commit block of {}",
            miner.ss58
        );
    }
    let by_hotkey = |hotkey: &Hotkey| {
        commitments
            .iter()
            .find(|c| c.hotkey == hotkey.ss58)
            .unwrap()
            .field
            .clone()
    };
    assert_eq!(
        by_hotkey(&miners[0]),
        CommitmentField::Raw(RawBytes(model_id.as_bytes().to_vec()))
    );
    assert_eq!(
        by_hotkey(&miners[2]),
        CommitmentField::Raw(RawBytes(Vec::new()))
    );
    assert_eq!(
        by_hotkey(&miners[3]),
        CommitmentField::Raw(RawBytes(garbage.clone()))
    );
    assert_eq!(
        by_hotkey(&miners[4]),
        CommitmentField::Other("Sha256".into())
    );
    let (_, earlier) = client
        .commitments(NETUID, Some(block_metagraph))
        .await
        .unwrap();
    assert!(
        earlier
            .iter()
            .all(|c| miners.iter().all(|m| m.ss58 != c.hotkey))
    );

    // Journaled as observed; the fold accepts the model id and rejects the rest, with reasons.
    let journal_dir = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::open(&journal_dir.path().join("journal"), 100).unwrap();
    let (_, metagraph) = client.metagraph(NETUID, Some(block_read)).await.unwrap();
    let mut events = vec![(block_read, Event::MetagraphObserved(metagraph))];
    events.extend(
        commitments
            .into_iter()
            .map(|c| (block_read, Event::CommitmentObserved(c))),
    );
    recorder.record(&events).unwrap();
    let status = |hotkey: &Hotkey| {
        let record = recorder.state().hotkeys.get(&hotkey.ss58).unwrap();
        record.commitment.as_ref().unwrap().status.clone()
    };
    assert_eq!(status(&miners[0]), CommitmentStatus::Unverified);
    assert_eq!(
        status(&miners[1]),
        CommitmentStatus::Invalid(CommitmentInvalid::NotUtf8)
    );
    assert_eq!(
        status(&miners[2]),
        CommitmentStatus::Invalid(CommitmentInvalid::FieldCount(1))
    );
    assert_eq!(
        status(&miners[3]),
        CommitmentStatus::Invalid(CommitmentInvalid::NotUtf8)
    );
    assert_eq!(
        status(&miners[4]),
        CommitmentStatus::Invalid(CommitmentInvalid::NotRaw("Sha256".into()))
    );

    // Weights: set, read back, journaled.
    grant_permits(&chain, &client).await;
    let state = recorder.state();
    let uid = |hotkey: &Hotkey| {
        state
            .metagraph
            .as_ref()
            .unwrap()
            .uid_of(&hotkey.ss58)
            .unwrap()
    };
    let (uid_a, uid_b) = (uid(&miners[0]), uid(&miners[1]));
    let uid_validator = uid(&validator);
    let (uids, values) = if uid_a < uid_b {
        (vec![uid_a, uid_b], vec![65535, 32768])
    } else {
        (vec![uid_b, uid_a], vec![32768, 65535])
    };
    let result = client
        .set_weights(
            &validator.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &uids,
            &values,
            version_key(),
        )
        .await;
    let block_weights = *result.as_ref().unwrap();
    recorder
        .record(&[(
            block_weights,
            Event::WeightsSubmitted(WeightsSubmitted {
                uids: uids.clone(),
                weights: values.clone(),
                version_key: version_key(),
                outcome: submit_outcome(&result),
            }),
        )])
        .unwrap();
    assert_eq!(recorder.state().block_weights_included, Some(block_weights));
    let stored = client.weights(NETUID, uid_validator, None).await.unwrap();
    let expected: Vec<(u16, u16)> = uids.iter().copied().zip(values.iter().copied()).collect();
    assert_eq!(stored, expected);
    // The successor's top-model scan reads the same weights, with the validator's permit and
    // stake, from the chain edge; a stake floor above everyone's leaves nobody.
    let scan = validator::runner::live::LiveChain {
        chain: connect(&chain).await,
        netuid: NETUID,
    };
    let head = client.block_number().await.unwrap();
    let observed = validator::runner::edges::ChainEdge::validator_weights(&scan, head, 0.0)
        .await
        .unwrap()
        .unwrap();
    let ours = observed
        .validators
        .iter()
        .find(|v| v.uid == uid_validator)
        .unwrap_or_else(|| panic!("{observed:?}"));
    assert!(ours.validator_permit);
    assert_eq!(ours.weights, expected);
    assert!(observed.validators.iter().all(|v| v.validator_permit));
    let nobody = validator::runner::edges::ChainEdge::validator_weights(&scan, head, f32::MAX)
        .await
        .unwrap()
        .unwrap();
    assert!(nobody.validators.is_empty(), "{nobody:?}");
    let (_, metagraph) = client.metagraph(NETUID, None).await.unwrap();
    assert_eq!(
        metagraph.last_update[usize::from(uid_validator)],
        block_weights
    );
    assert_eq!(
        client.weights_rule(NETUID).await.unwrap(),
        WeightsRule::Plain
    );

    // Refusals, decoded by name.
    let refused = client
        .set_weights(
            &stranger.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &uids,
            &values,
            version_key(),
        )
        .await;
    assert_eq!(refusal_name(refused), "HotKeyNotRegisteredInSubNet");
    admin(
        &client,
        "sudo_set_weights_set_rate_limit",
        vec![Value::u128(1), Value::u128(1000)],
    )
    .await
    .unwrap();
    let refused = client
        .set_weights(
            &validator.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &uids,
            &values,
            version_key(),
        )
        .await;
    let refusal = submit_outcome(&refused);
    assert_eq!(refusal_name(refused), "SettingWeightsTooFast");
    assert!(
        matches!(refusal, SubmitOutcome::Refused(ref why) if why.starts_with("SettingWeightsTooFast"))
    );
    admin(
        &client,
        "sudo_set_weights_set_rate_limit",
        vec![Value::u128(1), Value::u128(1)],
    )
    .await
    .unwrap();
    admin(
        &client,
        "sudo_set_weights_version_key",
        vec![Value::u128(1), Value::u128(u128::from(version_key()) + 1)],
    )
    .await
    .unwrap();
    let refused = client
        .set_weights(
            &validator.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &uids,
            &values,
            version_key(),
        )
        .await;
    assert_eq!(refusal_name(refused), "IncorrectWeightVersionKey");
    client
        .set_weights(
            &validator.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &uids,
            &values,
            version_key() + 1,
        )
        .await
        .unwrap();
    // A failing call inside `Sudo.sudo` is a refusal too, not a success.
    let refused = admin(
        &client,
        "sudo_set_weights_version_key",
        vec![Value::u128(999), Value::u128(1)],
    )
    .await;
    assert!(!refusal_name(refused).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_reveal_of_a_weights_hash_end_to_end() {
    let Some(chain) = DevChain::start() else {
        return;
    };
    let client = connect(&chain).await;
    let wallets = tempfile::tempdir().unwrap();
    let (miner, validator) = miner_and_validator(&chain, &client, wallets.path(), [11, 12]).await;
    // Commit-reveal on for netuid 1, with a short tempo so the reveal epoch comes soon.
    for (name, args) in [
        (
            "sudo_set_commit_reveal_weights_enabled",
            vec![Value::u128(1), Value::bool(true)],
        ),
        ("sudo_set_tempo", vec![Value::u128(1), Value::u128(8)]),
    ] {
        admin(&client, name, args).await.unwrap();
    }
    assert_eq!(
        client.weights_rule(NETUID).await.unwrap(),
        WeightsRule::CommitRevealHash
    );
    let (_, metagraph) = client.metagraph(NETUID, None).await.unwrap();
    let uid = |hotkey: &Hotkey| metagraph.uid_of(&hotkey.ss58).unwrap();
    let weights = ChainWeights {
        uids: vec![uid(&miner)],
        values: vec![65535],
        version_key: version_key(),
    };
    // Plain weights are refused while commit-reveal is on.
    let refused = client
        .set_weights(
            &validator.keypair,
            SubnetMechanism::of_subnet(NETUID),
            &weights.uids,
            &weights.values,
            weights.version_key,
        )
        .await;
    assert_eq!(refusal_name(refused), "CommitRevealEnabled");

    // The chain makes blocks only for extrinsics: a thread advances it while we wait.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        let port = chain.port;
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = harness::rpc_on(port, "dev_newBlock", serde_json::json!([{"count": 1}]));
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    let revealed = client
        .commit_and_reveal_weights(
            &validator.keypair,
            NETUID,
            &weights,
            &[1, 2, 3, 4],
            Duration::from_millis(300),
        )
        .await;
    let block_reveal = revealed.unwrap();
    assert!(started.elapsed() < Duration::from_secs(120));

    // `validator chain set-weights` is a one-shot of the runner's weight setter: it journals
    // the intent, commits, journals the commit, reveals inside the window and journals the
    // chain's answer. It looks at the chain every 6 s (half a mainnet block), so the tempo
    // is made long enough for a reveal window to outlast that at this chain's 5 blocks a
    // second.
    for (name, args) in [
        (
            "sudo_set_weights_set_rate_limit",
            vec![Value::u128(1), Value::u128(0)],
        ),
        ("sudo_set_tempo", vec![Value::u128(1), Value::u128(60)]),
    ] {
        admin(&client, name, args).await.unwrap();
    }
    let weights_file = wallets.path().join("weights.json");
    std::fs::write(&weights_file, format!(r#"{{"{}": 0.5}}"#, uid(&miner))).unwrap();
    let db = wallets.path().join("journal");
    let args = [
        "chain".to_owned(),
        "set-weights".into(),
        "--netuid".into(),
        "1".into(),
        "--weights".into(),
        weights_file.display().to_string(),
        "--wallet.path".into(),
        wallets.path().display().to_string(),
        "--wallet.name".into(),
        "validator".into(),
        "--db".into(),
        db.display().to_string(),
        "--json".into(),
        "--subtensor.chain_endpoint".into(),
        chain.url(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_validator"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["method"], "commit_weights+reveal_weights");
    let journal = validator::journal::Journal::open_existing(&db).unwrap();
    let events: Vec<Event> = journal
        .records(validator::machine::Position { block: 0, seq: 0 }, None)
        .map(|record| record.unwrap().event)
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| match event {
            Event::WeightsPrepared(_) => "prepared",
            Event::WeightsCommitted(_) => "committed",
            Event::WeightsSubmitted(_) => "submitted",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["prepared", "committed", "submitted"], "{events:?}");
    let Some(Event::WeightsSubmitted(answer)) = events.last() else {
        unreachable!()
    };
    assert_eq!(
        answer.outcome,
        SubmitOutcome::Included {
            block: report["block"].as_u64().unwrap()
        }
    );
    let stored = client
        .weights(NETUID, uid(&validator), Some(block_reveal))
        .await
        .unwrap();
    assert_eq!(stored, vec![(uid(&miner), 65535)]);
    assert!(
        client
            .weight_commits(SubnetMechanism::of_subnet(NETUID), account(&validator))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_commits_and_shows_the_commitment_with_its_block() {
    let Some(chain) = DevChain::start() else {
        return;
    };
    let client = connect(&chain).await;
    let wallets = tempfile::tempdir().unwrap();
    // The CLI signs as the validator from its wallet file, by name.
    let (miner, _validator) = miner_and_validator(&chain, &client, wallets.path(), [21, 22]).await;
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_validator"))
            .arg("chain")
            .args(args)
            .arg("--subtensor.chain_endpoint")
            .arg(chain.url())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let wallet_root = wallets.path().to_str().unwrap();
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    let hash = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=";
    let (code, stdout, stderr) = cli(&[
        "commit",
        "--netuid",
        "1",
        "--repo",
        "someone/tiny-llama",
        "--commit",
        commit,
        "--hash",
        hash,
        "--competition",
        "m1",
        "--wallet.path",
        wallet_root,
        "--wallet.name",
        "miner",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let committed: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let block_commit = committed["block"].as_u64().unwrap();
    assert_eq!(committed["hotkey"], miner.ss58.as_str());

    let (code, stdout, stderr) = cli(&["metagraph", "--netuid", "1", "--json"]);
    assert_eq!(code, Some(0), "{stderr}");
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let neuron = view["neurons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hotkey"] == miner.ss58.as_str())
        .unwrap();
    let commitment = &neuron["commitment"];
    assert_eq!(commitment["block_commit"].as_u64(), Some(block_commit));
    assert_eq!(
        commitment["model_id_string"],
        format!("someone:tiny-llama:{commit}:{hash}:m1").as_str()
    );
    assert_eq!(commitment["status"], "valid");
    assert_eq!(commitment["model_id"]["namespace"], "someone");
    // The table names the model and its block too.
    let (code, table, _) = cli(&["metagraph", "--netuid", "1"]);
    assert_eq!(code, Some(0));
    assert!(
        table.contains(&format!(
            "someone:tiny-llama:{commit}:{hash}:m1 (block {block_commit})"
        )),
        "{table}"
    );

    // A branch name instead of a commit never reaches the chain.
    let (code, _, stderr) = cli(&[
        "commit",
        "--netuid",
        "1",
        "--repo",
        "someone/tiny-llama",
        "--commit",
        "main",
        "--hash",
        hash,
        "--wallet.path",
        wallet_root,
        "--wallet.name",
        "miner",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("40-hex"), "{stderr}");

    // set-weights from a file, journaled.
    let uid_miner = neuron["uid"].as_u64().unwrap();
    let weights_file = wallets.path().join("weights.json");
    std::fs::write(&weights_file, format!(r#"{{"{uid_miner}": 0.7}}"#)).unwrap();
    let db = wallets.path().join("journal");
    let (code, stdout, stderr) = cli(&[
        "set-weights",
        "--netuid",
        "1",
        "--weights",
        weights_file.to_str().unwrap(),
        "--wallet.path",
        wallet_root,
        "--wallet.name",
        "validator",
        "--db",
        db.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["uids"], serde_json::json!([uid_miner]));
    assert_eq!(report["weights"], serde_json::json!([65535]));
    let state = validator::journal::recorder::fold_existing(&db).unwrap();
    assert_eq!(state.block_weights_included, report["block"].as_u64());
    // The runtime's offer is named before anything is signed: spec 218 has set_weights and
    // one mechanism per subnet.
    assert!(
        stderr.contains("runtime spec 218: weights by set_weights, commit-reveal off, 1 mechanism"),
        "{stderr}"
    );

    // A mechanism the subnet does not have is refused with its count, before signing.
    let (code, _, stderr) = cli(&[
        "set-weights",
        "--netuid",
        "1",
        "--mechid",
        "1",
        "--weights",
        weights_file.to_str().unwrap(),
        "--wallet.path",
        wallet_root,
        "--wallet.name",
        "validator",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "netuid 1 has 1 mechanism (MechanismCountCurrent): mechanism 1 does not exist"
        ),
        "{stderr}"
    );

    // A world-readable key file is refused with a message, and nothing is sent.
    let key = WalletPath {
        root: wallets.path().to_owned(),
        name: "validator".into(),
        hotkey: "default".into(),
    }
    .hotkey_file();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = cli(&[
        "set-weights",
        "--netuid",
        "1",
        "--weights",
        weights_file.to_str().unwrap(),
        "--wallet.path",
        wallet_root,
        "--wallet.name",
        "validator",
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("readable by others"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_call_gives_a_clear_error_then_recovers() {
    let Some(mut chain) = DevChain::start() else {
        return;
    };
    let mut options = ChainOptions::new(&chain.url());
    options.call_timeout = Duration::from_secs(20);
    options.connect_attempts = 2;
    options.backoff = Duration::from_millis(200);
    let client = Chain::connect(options).await.unwrap();
    let alice = hotkey_from_uri("//Alice").unwrap();
    let bob = hotkey_from_uri("//Bob").unwrap();

    // Kill the node while a transfer is in flight.
    let in_flight = {
        let client = client.clone();
        let alice = alice.keypair.clone();
        let to = account(&bob);
        tokio::spawn(async move { client.transfer(&alice, to, TAO).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed_at = Instant::now();
    chain.kill();
    let result = in_flight.await.unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(25),
        "the call hung"
    );
    // The transfer may have been included before the kill landed; otherwise the error says
    // the chain is unavailable.
    if let Err(error) = &result {
        assert!(matches!(error, ChainError::Unavailable(_)), "{error}");
    }

    // While the node is down, reads fail clearly and promptly.
    let started = Instant::now();
    let error = client.metagraph(NETUID, None).await.unwrap_err();
    assert!(matches!(error, ChainError::Unavailable(_)), "{error}");
    assert!(error.to_string().contains("127.0.0.1"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(25));

    // After a restart the same client reconnects.
    chain.restart();
    let (_, metagraph) = client.metagraph(NETUID, None).await.unwrap();
    assert!(!metagraph.hotkeys.is_empty());
    client
        .transfer(&alice.keypair, account(&bob), TAO)
        .await
        .unwrap();
}
