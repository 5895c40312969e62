//! `validator run` as a process against the real runtime (spec 218 under chopsticks, reached
//! through a proxy that can play a node dying and coming back) with olah as the hub: three
//! miners commit tiny models (one a copy of another's, one with a wrong hash), a validator
//! with a permit evaluates them and sets weights, and the weights are read back from the
//! chain's storage with raw JSON-RPC (no code of ours) and found exactly as journaled. Crashes
//! between the intent and the answer, a node outage, refusals and hash commit-reveal across a
//! restart are each survived.

#![cfg(feature = "chain")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use subxt::dynamic::Value;
use validator::chain::Chain;
use validator::chain::mechanism::SubnetMechanism;
use validator::chain::wallet::Hotkey;
use validator::journal::Journal;
use validator::machine::Event;
use validator::machine::event::{SubmitOutcome, WeightsPrepared, WeightsSubmitted};
use validator::machine::model_id::commitment_text;
use validator::machine::params::ModelIdFormat;
use validator::testing::replay_clean;

use super::chain::{NETUID, admin, connect, fund_and_register, grant_permits, wallet_hotkey};
use super::harness::{DevChain, Proxy, Ticker, rpc_on};
use super::olah::{Server, free_port, git_repo, olah};

fn fixture_files(model: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(model);
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect()
}

fn plain_hash(model: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/models")
        .join(model);
    validator::dirhash::hash_of_directory(&dir, None)
        .unwrap()
        .plain
}

/// A dev chain with three committing miners and a validator with a permit, olah serving the
/// miners' repositories, a block every 250 ms, and a proxy in front of the node.
struct Live {
    runtime: tokio::runtime::Runtime,
    chain: DevChain,
    client: Chain,
    proxy: Proxy,
    _ticker: Ticker,
    _olah: Server,
    hub: String,
    scratch: tempfile::TempDir,
    validator: Hotkey,
}

impl Live {
    fn start(seed: u8) -> Option<Self> {
        let cli = olah()?;
        let chain = DevChain::start()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(connect(&chain));
        let scratch = tempfile::tempdir().unwrap();
        let wallets = scratch.path().join("wallets");
        let validator = wallet_hotkey(&wallets, "validator", [seed; 32]);
        let miners: Vec<Hotkey> = ["alice", "bob", "carol"]
            .iter()
            .enumerate()
            .map(|(i, name)| {
                wallet_hotkey(&wallets, name, [seed + 1 + u8::try_from(i).unwrap(); 32])
            })
            .collect();
        let mut everyone: Vec<&Hotkey> = vec![&validator];
        everyone.extend(miners.iter());
        runtime.block_on(async {
            fund_and_register(&client, &everyone).await;
            grant_permits(&chain, &client).await;
        });

        // Alice's model; Bob's copy of it, committed later; Carol's with a wrong hash.
        let mirror = scratch.path().join("mirror");
        let files = fixture_files("llama-f32");
        let borrowed: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
        let llama = plain_hash("llama-f32");
        let wrong = plain_hash("stablelm-f32");
        let commits = [
            ("alice", "tiny-llama", &llama),
            ("bob", "tiny-llama-copy", &llama),
            ("carol", "tiny-llama", &wrong),
        ];
        let repos: Vec<String> = commits
            .iter()
            .map(|(org, name, _)| git_repo(&mirror, org, name, &borrowed, &[]))
            .collect();
        let server = Server::start(&cli, &mirror, scratch.path(), free_port());
        for (((org, name, hash), miner), commit) in commits.iter().zip(&miners).zip(&repos) {
            let text = commitment_text(
                &format!("{org}/{name}"),
                commit,
                hash,
                Some("l3"),
                ModelIdFormat::Original,
            )
            .unwrap();
            runtime
                .block_on(client.set_commitment(&miner.keypair, NETUID, text.as_bytes()))
                .unwrap();
        }
        let proxy = Proxy::start(chain.port);
        let ticker = Ticker::start(chain.port, Duration::from_millis(250));
        Some(Self {
            runtime,
            hub: server.endpoint(),
            chain,
            client,
            proxy,
            _ticker: ticker,
            _olah: server,
            scratch,
            validator,
        })
    }

    fn db(&self) -> PathBuf {
        self.scratch.path().join("journal")
    }

    /// `validator run` until `max_steps`, with a crash point armed when given.
    fn run(&self, max_steps: u64, failpoint: Option<&str>, extra: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_validator"));
        command
            .arg("run")
            .args(["--metrics-addr", "off"])
            .args(["--netuid", &NETUID.to_string()])
            .args(["--subtensor.chain_endpoint", &self.proxy.url()])
            .arg("--wallet.path")
            .arg(self.scratch.path().join("wallets"))
            .args(["--wallet.name", "validator", "--wallet.hotkey", "default"])
            .args(["--hub", &self.hub])
            .arg("--data-source")
            .arg(format!(
                "local:{}",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fixtures/models/samples.jsonl")
                    .display()
            ))
            .arg("--db")
            .arg(self.db())
            .arg("--model_dir")
            .arg(self.scratch.path().join("cache"))
            .args(["--max-steps", &max_steps.to_string()])
            .args(["--blocks_per_epoch", "3", "--weights-check-s", "0.25"])
            .args(["--weights-cadence", "chain"])
            .args(["--update_delay_minutes", "0", "--disk-free-min-bytes", "0"])
            .args(extra);
        match failpoint {
            Some(point) => command.env("VALIDATOR_FAILPOINT", point),
            None => command.env_remove("VALIDATOR_FAILPOINT"),
        };
        let output = command.output().unwrap();
        // Shown with --nocapture: where each run spent its blocks.
        eprintln!(
            "--- validator run (crash point {failpoint:?})\n{}",
            say(&output)
        );
        output
    }

    fn uid(&self) -> u16 {
        let (_, metagraph) = self
            .runtime
            .block_on(self.client.metagraph(NETUID, None))
            .unwrap();
        metagraph.uid_of(&self.validator.ss58).unwrap()
    }

    fn admin(&self, name: &str, args: Vec<Value>) {
        self.runtime
            .block_on(admin(&self.client, name, args))
            .unwrap();
    }

    /// `Weights(netuid, uid)` read with raw JSON-RPC: the keys under the map's prefix, the
    /// value SCALE-decoded here (compact length, then (u16, u16) little-endian pairs).
    fn weights_on_chain(&self, uid: u16) -> Vec<(u16, u16)> {
        let mut prefix = sp_crypto_hashing::twox_128(b"SubtensorModule").to_vec();
        prefix.extend_from_slice(&sp_crypto_hashing::twox_128(b"Weights"));
        let prefix_hex = hex(&prefix);
        let keys = rpc_on(
            self.chain.port,
            "state_getKeysPaged",
            serde_json::json!([prefix_hex, 1000, null]),
        )
        .unwrap();
        let wanted_tail = [NETUID.to_le_bytes(), uid.to_le_bytes()];
        for key in keys.as_array().unwrap() {
            let bytes = unhex(key.as_str().unwrap());
            let suffix = &bytes[32..];
            // Identity hashers: netuid then uid; Twox64Concat: an 8-byte hash before each.
            let (netuid, found_uid) = match suffix.len() {
                4 => (&suffix[0..2], &suffix[2..4]),
                20 => (&suffix[8..10], &suffix[18..20]),
                other => panic!("a Weights key suffix of {other} bytes"),
            };
            if netuid == wanted_tail[0] && found_uid == wanted_tail[1] {
                let value = rpc_on(
                    self.chain.port,
                    "state_getStorage",
                    serde_json::json!([key]),
                )
                .unwrap();
                return decode_pairs(&unhex(value.as_str().unwrap()));
            }
        }
        Vec::new()
    }
}

fn hex(bytes: &[u8]) -> String {
    let body: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{body}")
}

fn unhex(text: &str) -> Vec<u8> {
    let text = text.trim_start_matches("0x");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// SCALE `Vec<(u16, u16)>`: a compact length (single-, two- or four-byte modes), then pairs.
fn decode_pairs(bytes: &[u8]) -> Vec<(u16, u16)> {
    let (count, start) = match bytes[0] & 0b11 {
        0 => (usize::from(bytes[0] >> 2), 1),
        1 => (
            usize::from(u16::from_le_bytes([bytes[0], bytes[1]]) >> 2),
            2,
        ),
        2 => (
            usize::try_from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) >> 2)
                .unwrap(),
            4,
        ),
        _ => panic!("a big-integer compact length"),
    };
    let body = &bytes[start..];
    assert_eq!(body.len(), count * 4, "a Weights value of the wrong length");
    body.chunks_exact(4)
        .map(|c| {
            (
                u16::from_le_bytes([c[0], c[1]]),
                u16::from_le_bytes([c[2], c[3]]),
            )
        })
        .collect()
}

fn events(db: &Path) -> Vec<Event> {
    let journal = Journal::open_existing(db).unwrap();
    journal.all_records().map(|r| r.unwrap().event).collect()
}

fn prepared(events: &[Event]) -> Vec<WeightsPrepared> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WeightsPrepared(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn answers(events: &[Event]) -> Vec<WeightsSubmitted> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WeightsSubmitted(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn say(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn validator_run_sets_weights_on_the_real_runtime_through_crashes_outages_and_refusals() {
    let Some(live) = Live::start(31) else { return };
    let db = live.db();
    let uid = live.uid();

    // An unregistered hotkey is refused at start-up with the fix, before anything runs.
    let stranger_wallets = live.scratch.path().join("stranger");
    wallet_hotkey(&stranger_wallets, "validator", [99; 32]);
    let refused = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args([
            "run",
            "--netuid",
            "1",
            "--subtensor.chain_endpoint",
            &live.proxy.url(),
        ])
        .arg("--wallet.path")
        .arg(&stranger_wallets)
        .args(["--wallet.name", "validator", "--max-steps", "1"])
        .arg("--db")
        .arg(live.scratch.path().join("stranger-journal"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", say(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not registered on netuid 1"),
        "{}",
        say(&refused)
    );

    // A mechanism the subnet does not have (spec 218 has none but the subnet's own) is
    // refused at start-up with the subnet's count.
    let other_mechanism = live.run(1, None, &["--mechid", "1"]);
    assert_eq!(
        other_mechanism.status.code(),
        Some(2),
        "{}",
        say(&other_mechanism)
    );
    assert!(
        String::from_utf8_lossy(&other_mechanism.stderr)
            .contains("netuid 1 has 1 mechanism (MechanismCountCurrent)"),
        "{}",
        say(&other_mechanism)
    );

    // 1. The process dies right after journaling its first intent: nothing was signed.
    //    Postmortem: under the whole suite's load the fetcher verified the models after two
    //    steps had run with none (every weight zero, nothing prepared, exit 0); the crash
    //    point ends the run at its first intent, so it may take as many steps as it needs.
    let crashed = live.run(12, Some("after-weights-prepared"), &["--genesis"]);
    assert!(!crashed.status.success(), "{}", say(&crashed));
    let journaled = events(&db);
    assert_eq!(prepared(&journaled).len(), 1, "{}", say(&crashed));
    assert!(answers(&journaled).is_empty());
    assert!(live.weights_on_chain(uid).is_empty());
    // `--max-steps` counts the journal's steps: each stage below asks for one more than the
    // steps stage 1 took, so each runs what it tests however many that was.
    let base = journaled
        .iter()
        .filter(|e| matches!(e, Event::StepCompleted(_)))
        .count() as u64;

    // 2. The restart finds it not on chain, records the failure, sends fresh weights and dies
    //    before journaling the chain's answer.
    let crashed = live.run(base + 1, Some("after-weights-sent"), &[]);
    assert!(!crashed.status.success(), "{}", say(&crashed));
    let journaled = events(&db);
    assert_eq!(prepared(&journaled).len(), 2, "{}", say(&crashed));
    let first = &answers(&journaled)[0];
    assert!(matches!(&first.outcome, SubmitOutcome::Failed(why) if why.contains("not on chain")));
    let on_chain = live.weights_on_chain(uid);
    assert!(!on_chain.is_empty(), "the second intent was sent");

    // 3. A rate limit of 1000 blocks, so a second send would be refused; the restart
    //    reconciles the sent intent as included, sends nothing, and rides out a node outage.
    live.admin(
        "sudo_set_weights_set_rate_limit",
        vec![Value::u128(1), Value::u128(1000)],
    );
    let outage = std::thread::scope(|scope| {
        let running = scope.spawn(|| live.run(base + 2, None, &[]));
        std::thread::sleep(Duration::from_secs(2));
        live.proxy.down();
        std::thread::sleep(Duration::from_secs(5));
        live.proxy.up();
        running.join().unwrap()
    });
    assert!(outage.status.success(), "{}", say(&outage));
    assert!(
        String::from_utf8_lossy(&outage.stdout).contains(&format!("{} completed steps", base + 2)),
        "{}",
        say(&outage)
    );
    let journaled = events(&db);
    let answered = answers(&journaled);
    assert_eq!(
        prepared(&journaled).len(),
        2,
        "no third intent inside the rate limit"
    );
    let included = &answered[1];
    assert!(
        matches!(included.outcome, SubmitOutcome::Included { .. }),
        "{answered:?}"
    );
    assert!(
        !answered
            .iter()
            .any(|a| matches!(a.outcome, SubmitOutcome::Refused(_)))
    );
    assert_eq!(live.weights_on_chain(uid), included.pairs());
    assert_eq!(included.pairs(), on_chain);
    replay_clean(&db);

    // 4. The subnet raises its version key: the submission is refused, journaled as such,
    //    and the loop goes on to its last step.
    live.admin(
        "sudo_set_weights_set_rate_limit",
        vec![Value::u128(1), Value::u128(1)],
    );
    live.admin(
        "sudo_set_weights_version_key",
        vec![Value::u128(1), Value::u128(1000)],
    );
    let refused = live.run(base + 3, None, &[]);
    assert!(refused.status.success(), "{}", say(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("requires version_key >= 1000"));
    let journaled = events(&db);
    let last = answers(&journaled).pop().unwrap();
    assert!(
        matches!(&last.outcome, SubmitOutcome::Refused(why) if why.contains("IncorrectWeightVersionKey")),
        "{last:?}"
    );
    assert_eq!(
        live.weights_on_chain(uid),
        included.pairs(),
        "a refusal changes nothing"
    );
    // Every model was judged: Alice's and Bob's copy evaluated, Carol's refused by hash.
    assert!(journaled.iter().any(|e| matches!(e, Event::ModelRejected(r)
        if r.code == validator::machine::event::RejectionCode::HashMismatch)));
    replay_clean(&db);
}

#[test]
fn hash_commit_reveal_in_the_loop_reveals_after_a_restart_inside_the_window() {
    let Some(live) = Live::start(51) else { return };
    let db = live.db();
    let uid = live.uid();
    live.admin(
        "sudo_set_commit_reveal_weights_enabled",
        vec![Value::u128(1), Value::bool(true)],
    );
    live.admin("sudo_set_tempo", vec![Value::u128(1), Value::u128(20)]);
    // Postmortem: with three steps the commit had to go out while the last one evaluated (a
    // run that is ending starts no hash commit), and on a loaded CI machine the last step
    // could finish first. Steps are allowed until the crash point ends the run; the second
    // run completes one more step, so it ends right after revealing.
    let crashed = live.run(60, Some("after-weights-committed"), &["--genesis"]);
    assert!(!crashed.status.success(), "{}", say(&crashed));
    let journaled = events(&db);
    assert!(
        journaled
            .iter()
            .any(|e| matches!(e, Event::WeightsCommitted(_))),
        "{}",
        say(&crashed)
    );
    assert!(
        live.weights_on_chain(uid).is_empty(),
        "committed, not revealed"
    );
    let completed = journaled
        .iter()
        .filter(|e| matches!(e, Event::StepCompleted(_)))
        .count() as u64;
    let revealed = live.run(completed + 1, None, &[]);
    assert!(revealed.status.success(), "{}", say(&revealed));
    let journaled = events(&db);
    let kinds: Vec<&str> = journaled
        .iter()
        .map(Event::kind)
        .filter(|k| k.starts_with("weights"))
        .collect();
    assert_eq!(
        kinds,
        ["weights_prepared", "weights_committed", "weights_submitted"],
        "{}",
        say(&revealed)
    );
    let answer = answers(&journaled).pop().unwrap();
    assert!(
        matches!(answer.outcome, SubmitOutcome::Included { .. }),
        "{answer:?}"
    );
    assert_eq!(live.weights_on_chain(uid), answer.pairs());
    assert!(
        live.runtime
            .block_on(live.client.weight_commits(
                SubnetMechanism::of_subnet(NETUID),
                live.validator.keypair.public_key().0
            ))
            .unwrap()
            .is_empty()
    );
    replay_clean(&db);
}
