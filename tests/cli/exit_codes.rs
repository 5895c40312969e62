//! Every command's documented exit codes, driven as processes: 0 success, 1 a failure outside
//! the input (the machine, the network, the chain), 2 invalid input, 3 the journal is missing,
//! locked, not a journal or corrupt. And `--help` of every command, snapshotted, so a flag
//! cannot vanish or change unnoticed.

use std::path::Path;
use std::process::Command;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"))
}

/// Runs `validator ARGS` with `stdin` (and a hub that cannot be reached), returning the exit
/// code and stderr.
fn run(args: &[&str], stdin: &str) -> (i32, String) {
    let ran = super::validator(args, stdin, &[("HF_ENDPOINT", "http://127.0.0.1:9")]);
    (ran.code, ran.stderr)
}

fn expect(args: &[&str], stdin: &str, code: i32, stderr_has: &str) {
    let (found, stderr) = run(args, stdin);
    assert_eq!(found, code, "validator {args:?}: {stderr}");
    assert!(
        stderr.contains(stderr_has),
        "validator {args:?}: expected {stderr_has:?} in {stderr}"
    );
}

#[test]
fn score_exits_0_or_2() {
    expect(&["score"], r#"{"losses": {"1": [2.0]}}"#, 0, "");
    expect(&["score"], "not json", 2, "invalid input");
    expect(
        &["score", "--input", "/nonexistent/x.json"],
        "",
        2,
        "reading",
    );
}

#[test]
fn a_successor_run_without_what_it_needs_exits_2_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    let db = db.to_str().unwrap();
    // Competition 4 is scored with Xenova/gpt-4's tokenizer, which the operator gives.
    expect(
        &["run", "--mechanism", "f", "--offline", "--db", db],
        "",
        2,
        "--tokenizer 4=DIR",
    );
    // A branch is not a pinned revision; an unreachable hub is not the operator's input.
    let cache = dir.path().join("tokenizers");
    let base = [
        "run",
        "--mechanism",
        "f",
        "--offline",
        "--db",
        db,
        "--tokenizer-cache",
        cache.to_str().unwrap(),
        "--tokenizer",
    ];
    expect(
        &[&base[..], &["4=hub:Xenova/gpt-4@main"]].concat(),
        "",
        2,
        "not a commit",
    );
    let pinned = format!("4=hub:Xenova/gpt-4@{}", "a".repeat(40));
    expect(
        &[&base[..], &[pinned.as_str()]].concat(),
        "",
        1,
        "Xenova/gpt-4",
    );
    // Parameters that are not parameters.
    let params = dir.path().join("params.json");
    std::fs::write(&params, "{\"alpha\": \"high\"}").unwrap();
    expect(
        &[
            "run",
            "--mechanism-params",
            params.to_str().unwrap(),
            "--offline",
            "--db",
            db,
        ],
        "",
        2,
        "not mechanism parameters",
    );
    assert!(!dir.path().join("journal").exists(), "a journal was opened");
}

#[test]
fn model_commands_exit_by_who_must_act() {
    let model = fixtures().join("models/llama-f32");
    let model = model.to_str().unwrap();
    expect(&["model", "hash", model], "", 0, "");
    expect(&["model", "hash", "/nonexistent/model"], "", 2, "");
    // A repository id that is not NAMESPACE/NAME is the request's fault.
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let hash = "S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=";
    let fetch = |repo: &'static str, cache: &str| {
        run(
            &[
                "model",
                "fetch",
                "--repo",
                repo,
                "--commit",
                commit,
                "--hash",
                hash,
                "--hotkey",
                "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX",
                "--cache",
                cache,
                "--json",
            ],
            "",
        )
    };
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path().to_str().unwrap();
    assert_eq!(fetch("no-slash", cache).0, 2);
    // A hub that cannot be reached is not the model's fault.
    let (code, stderr) = fetch("miner/model", cache);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unavailable"), "{stderr}");
}

#[test]
fn journal_problems_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let missing = missing.to_str().unwrap();
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    expect(
        &[
            "model", "cache", "--cache", cache, "--sweep", "--db", missing,
        ],
        "",
        3,
        "no journal",
    );
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    expect(
        &[
            "model",
            "cache",
            "--cache",
            cache,
            "--sweep",
            "--db",
            foreign.to_str().unwrap(),
        ],
        "",
        3,
        "not a journal",
    );
    let journal = dir.path().join("journal");
    let journal = journal.to_str().unwrap();
    expect(
        &["journal", "generate", "--db", journal, "--steps", "3"],
        "",
        0,
        "",
    );
    // Generating into a directory that already holds a journal is refused.
    expect(
        &["journal", "generate", "--db", journal, "--steps", "3"],
        "",
        3,
        "already holds a journal",
    );
    expect(
        &[
            "model", "cache", "--cache", cache, "--sweep", "--db", journal,
        ],
        "",
        0,
        "",
    );
    // --sweep without the journal that says what is referenced.
    expect(
        &["model", "cache", "--cache", cache, "--sweep"],
        "",
        1,
        "--db",
    );
}

#[test]
fn eval_exits_2_for_the_models_or_the_datas_fault() {
    let models = fixtures().join("models");
    let data = models.join("samples.jsonl");
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_a_model = dir.path().to_str().unwrap();
    expect(
        &["eval", "--model", not_a_model, "--data", data],
        "",
        2,
        "config.json",
    );
    let bad_data = dir.path().join("bad.jsonl");
    std::fs::write(&bad_data, "{\"prompt\": 1}\n").unwrap();
    let model = models.join("llama-f32");
    expect(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            bad_data.to_str().unwrap(),
        ],
        "",
        2,
        "data line 1",
    );
}

/// Postmortem (0173843, hostile-input round): --threads 100000 made ONNX Runtime spin for
/// minutes on a tiny model; the flag is bounded before anything starts.
#[test]
fn eval_threads_outside_1_to_256_are_refused_before_anything_starts() {
    let model = fixtures().join("models").join("llama-f32");
    let data = fixtures().join("models").join("samples.jsonl");
    let data = data.to_str().unwrap();
    for threads in ["0", "257", "100000"] {
        expect(
            &[
                "eval",
                "--threads",
                threads,
                "--model",
                model.to_str().unwrap(),
                "--data",
                data,
            ],
            "",
            2,
            "1..=256",
        );
    }
}

#[test]
fn data_sample_exits_0_or_2() {
    let data = fixtures().join("models/samples.jsonl");
    let source = format!("local:{}", data.display());
    expect(
        &["data", "sample", "--source", &source, "--seed", "1"],
        "",
        0,
        "",
    );
    expect(
        &["data", "sample", "--source", "ftp:x"],
        "",
        2,
        "unknown source",
    );
}

#[test]
fn chain_commands_exit_2_for_a_bad_request_and_1_for_an_unreachable_node() {
    let cases: [(&[&str], i32, &str); 3] = [
        (
            &["--subtensor.chain_endpoint", "http://not-ws"],
            2,
            "not a ws://",
        ),
        (&["--subtensor.network", "nowhere"], 2, "unknown network"),
        (
            &[
                "--subtensor.chain_endpoint",
                "ws://127.0.0.1:9",
                "--timeout-s",
                "2",
            ],
            1,
            "unavailable",
        ),
    ];
    for (endpoint, code, stderr_has) in cases {
        let mut args = vec!["chain", "metagraph", "--netuid", "1"];
        args.extend_from_slice(endpoint);
        expect(&args, "", code, stderr_has);
    }
}

/// Every command's `--help`, as a snapshot.
#[test]
fn help_of_every_command() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["leaderboard"],
        &["score"],
        &["journal"],
        &["journal", "generate"],
        &["eval"],
        &["model"],
        &["model", "hash"],
        &["model", "fetch"],
        &["model", "cache"],
        &["data"],
        &["data", "sample"],
        &["chain"],
        &["chain", "metagraph"],
        &["chain", "commit"],
        &["chain", "set-weights"],
    ];
    for command in commands {
        let output = Command::new(env!("CARGO_BIN_EXE_validator"))
            .args(*command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success(), "{command:?}");
        let name = if command.is_empty() {
            "validator".to_owned()
        } else {
            command.join("_")
        };
        insta::assert_snapshot!(
            format!("help_{name}"),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

#[test]
fn set_weights_refuses_a_journal_with_unanswered_weights_before_signing() {
    use std::os::unix::fs::PermissionsExt;
    use validator::machine::event::{SubmitMethod, WeightsPrepared};
    use validator::machine::{Event, MechanismParams};

    let dir = tempfile::tempdir().unwrap();
    // A journal left by a validator that died between its intent and the chain's answer.
    let db = dir.path().join("journal");
    let mut recorder = validator::journal::recorder::Recorder::open(&db, 100).unwrap();
    recorder
        .record(&[(
            10,
            Event::ParamsChanged(validator::machine::event::ParamsChanged {
                params: MechanismParams::default(),
            }),
        )])
        .unwrap();
    recorder
        .record(&[(
            12,
            Event::WeightsPrepared(WeightsPrepared {
                mecid: 0,
                uids: vec![],
                weights: vec![],
                version_key: 27,
                method: SubmitMethod::Plain,
                block_head: 12,
                due: None,
            }),
        )])
        .unwrap();
    drop(recorder);
    let hotkey = dir.path().join("wallets/validator/hotkeys/default");
    std::fs::create_dir_all(hotkey.parent().unwrap()).unwrap();
    std::fs::write(
        &hotkey,
        format!(r#"{{"secretSeed": "0x{}"}}"#, "07".repeat(32)),
    )
    .unwrap();
    std::fs::set_permissions(&hotkey, std::fs::Permissions::from_mode(0o600)).unwrap();
    let weights = dir.path().join("weights.json");
    std::fs::write(&weights, "[0, 1]").unwrap();
    let (db, wallets, weights) = (
        db.display().to_string(),
        dir.path().join("wallets").display().to_string(),
        weights.display().to_string(),
    );
    // The node is unreachable: a refusal before any connection is the journal's doing.
    expect(
        &[
            "chain",
            "set-weights",
            "--netuid",
            "1",
            "--weights",
            &weights,
            "--db",
            &db,
            "--wallet.path",
            &wallets,
            "--wallet.name",
            "validator",
            "--subtensor.chain_endpoint",
            "ws://127.0.0.1:9",
        ],
        "",
        2,
        "not yet answered",
    );
}
