//! `validator run` as a process on files it has not seen: a recorded chain, a local hub and a
//! data file written here (the formats README documents), and the embedded demo.

use std::path::{Path, PathBuf};
use std::process::Command;

use validator::journal::Journal;

use super::{journal_events, models, publish};
use validator::machine::Event;
use validator::machine::event::EvalOutcome;

fn plain_hash(model: &str) -> String {
    validator::dirhash::hash_of_directory(&models().join(model), None)
        .unwrap()
        .plain
}

#[test]
fn a_recorded_run_evaluates_each_model_as_transformers_does() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let commits = [
        "1111111111111111111111111111111111111111",
        "2222222222222222222222222222222222222222",
        "3333333333333333333333333333333333333333",
    ];
    publish(&hub, "llama-f32", "someone", "tiny-llama", commits[0]);
    publish(&hub, "stablelm-f32", "another", "tiny-stablelm", commits[1]);
    publish(&hub, "llama-bf16", "late", "llama-bf16", commits[2]);
    let raw = |ns: &str, name: &str, commit: &str, model: &str, competition: &str| {
        format!("{ns}:{name}:{commit}:{}:{competition}", plain_hash(model))
    };
    let snapshot = serde_json::json!({
        "netuid": 9, "start_block": 5000, "blocks_per_step": 25,
        "timeline": [
            {"block": 4990,
             "metagraph": {"hotkeys": ["5Owner", "5A", "5B"], "consensus": [0, 100, 50],
                           "stake": [7, 1, 1], "tempo": 99},
             "commitments": {
                "5A": {"block": 4900, "raw": raw("someone", "tiny-llama", commits[0], "llama-f32", "l3")},
                "5B": {"block": 4901, "raw": raw("another", "tiny-stablelm", commits[1], "stablelm-f32", "s1")}}},
            {"block": 5020,
             "metagraph": {"hotkeys": ["5Owner", "5A", "5B", "5C"], "consensus": [0, 100, 50, 0],
                           "stake": [7, 1, 1, 1], "tempo": 99},
             "commitments": {
                "5C": {"block": 5010, "raw": raw("late", "llama-bf16", commits[2], "llama-bf16", "l3")},
                "5Owner": {"block": 5011, "raw_hex": "ff00ff"}}}]});
    let snapshot_path = dir.path().join("chain.json");
    std::fs::write(&snapshot_path, snapshot.to_string()).unwrap();
    let db = dir.path().join("journal");
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .arg("run")
        .args(["--metrics-addr", "off"])
        .arg("--offline")
        .arg("--chain-snapshot")
        .arg(&snapshot_path)
        .arg("--hub")
        .arg(format!("local:{}", hub.display()))
        .arg("--data-source")
        .arg(format!(
            "local:{}",
            models().join("samples.jsonl").display()
        ))
        .args(["--max-steps", "3", "--disk-free-min-bytes", "0"])
        .arg("--db")
        .arg(&db)
        .arg("--model_dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 completed steps"), "{stdout}");

    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(models().join("reference.json")).unwrap())
            .unwrap();
    let prompts: Vec<String> = std::fs::read_to_string(models().join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let events = journal_events(&db);
    let mut batches = std::collections::BTreeMap::new();
    let mut evaluated = std::collections::BTreeMap::new();
    for event in &events {
        match event {
            Event::BatchFetched(batch) => {
                batches.insert(batch.step, batch.clone());
            }
            Event::LossesComputed(losses) => {
                let model = match losses.hotkey.as_str() {
                    "5A" => "llama-f32",
                    "5B" => "stablelm-f32",
                    "5C" => "llama-bf16",
                    other => panic!("{other} has no model"),
                };
                let EvalOutcome::Losses(values) = &losses.outcome else {
                    panic!("{model} failed: {:?}", losses.outcome)
                };
                let batch = &batches[&losses.step];
                for (sample, loss) in batch.samples.iter().zip(&values.0) {
                    // The batch holds N's stripped text.
                    let index = prompts
                        .iter()
                        .position(|p| validator::text::python_strip(p) == sample.prompt)
                        .unwrap();
                    let theirs = &reference["models"][model]["losses"][index];
                    match theirs.as_f64() {
                        Some(theirs) => assert!(
                            (f64::from(*loss) - theirs).abs() < 1e-3,
                            "{model} sample {index}: {loss} vs {theirs}"
                        ),
                        None => assert!(loss.is_infinite()),
                    }
                }
                *evaluated.entry(model).or_insert(0) += 1;
            }
            _ => {}
        }
    }
    // Steps: l3 at 5000 (A), s1 at 5025 (B), l3 at 5050 (A, and C once verified).
    assert_eq!(evaluated.get("llama-f32"), Some(&2), "{evaluated:?}");
    assert_eq!(evaluated.get("stablelm-f32"), Some(&1), "{evaluated:?}");
    assert_eq!(evaluated.get("llama-bf16"), Some(&1), "{evaluated:?}");
    // The owner's non-UTF-8 commitment is journaled and refused by the fold.
    assert!(events.iter().any(|e| matches!(e,
        Event::CommitmentObserved(c) if c.hotkey == "5Owner")));
    let journal = Journal::open_existing(&db).unwrap();
    let report = validator::replay::replay_journal(
        &journal,
        validator::replay::ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: false,
        },
    )
    .unwrap();
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
}

#[test]
fn the_demo_runs_and_replays_its_own_journal() {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--demo"])
        .env("TMPDIR", tempfile::tempdir().unwrap().keep())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("6 completed steps"), "{stdout}");
    assert!(stdout.contains("all recorded results match"), "{stdout}");
    for expected in [
        "DuplicateOf(1)",
        "competition s1",
        "competition l3",
        "final weights",
    ] {
        assert!(stdout.contains(expected), "{expected}: {stdout}");
    }
    assert!(stderr.contains("rejected 5DemoMallory's model"), "{stderr}");
    assert!(stderr.contains("HashMismatch"), "{stderr}");
    assert!(stderr.contains("verified 5DemoFrank's model"), "{stderr}");
}

/// Postmortem (issue 33, class 2): under a container's or systemd's lower hard limits the
/// children's `ulimit` failed and every check crashed, so models were rejected for good (6
/// under one such limit) and evaluations failed (9 of 9). Under hard limits below what the
/// children ask for, the demo gives the same verdicts and weights as without them, and the
/// start-up log says what the limits are.
#[test]
fn lower_inherited_limits_reject_and_fail_no_model() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "prlimit is missing"
        );
        return;
    }
    let run = |limits: &[&str]| {
        let mut command = Command::new("prlimit");
        command
            .args(limits)
            .arg(env!("CARGO_BIN_EXE_validator"))
            .args(["run", "--demo"])
            .env("TMPDIR", tempfile::tempdir().unwrap().keep());
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stdout}\n{stderr}");
        (stdout, stderr)
    };
    let (free, _) = run(&[]);
    let (limited, log) = run(&["--as=400000000:400000000", "--cpu=60:60"]);
    let final_weights = |stdout: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with("final weights"))
            .map(str::to_owned)
    };
    assert_eq!(final_weights(&limited), final_weights(&free), "{limited}");
    assert!(limited.contains("all recorded results match"), "{limited}");
    let rejected = |log: &str| log.lines().filter(|l| l.contains("rejected ")).count();
    assert_eq!(
        rejected(&log),
        1,
        "only the demo's own hash mismatch: {log}"
    );
    assert!(
        log.contains("resource limits: address space 400000000"),
        "{log}"
    );
    assert!(
        log.contains("ACTION NEEDED: the evaluation's children ask for"),
        "{log}"
    );
}

/// Postmortem (issue 33, class 2): under a low open-files limit every spawn failed with "Too
/// many open files" and the loop retried forever. The soft limit is raised to the hard one at
/// start-up; a hard limit too low for the validator is a clear exit naming what it needs.
#[test]
fn a_low_open_files_limit_is_raised_or_a_clear_exit() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "prlimit is missing"
        );
        return;
    }
    let run = |limit: &str| {
        Command::new("prlimit")
            .arg(limit)
            .arg(env!("CARGO_BIN_EXE_validator"))
            .args(["run", "--demo"])
            .env("TMPDIR", tempfile::tempdir().unwrap().keep())
            .output()
            .unwrap()
    };
    let raised = run("--nofile=64:4096");
    let stdout = String::from_utf8_lossy(&raised.stdout);
    assert!(raised.status.success(), "{stdout}");
    assert!(stdout.contains("all recorded results match"), "{stdout}");
    let refused = run("--nofile=64:64");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("open-files limit is 64"), "{stderr}");
}

/// Every file under `dir` with its bytes.
fn files_of(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// Postmortem (issue 33, class 9): `validator run` on a journal whose head was deleted said
/// "head is missing" (exit 3), but only after sled had opened the journal and rewritten it
/// (208 KB became 512 KB, and a new file appeared). Whether a journal without a head is one
/// from before heads or a corrupt one is now read off a private copy: the journal is left
/// byte for byte as it was found.
#[test]
fn a_run_on_a_journal_whose_head_was_deleted_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let made = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--demo", "--demo-dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let journal = demo.join("journal");
    std::fs::remove_file(journal.join("journal.head")).unwrap();
    let before = files_of(&journal);
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args([
            "run",
            "--offline",
            "--metrics-addr",
            "off",
            "--max-steps",
            "1",
        ])
        .arg("--chain-snapshot")
        .arg(demo.join("snapshot.json"))
        .arg("--hub")
        .arg(format!("local:{}", demo.join("hub").display()))
        .arg("--data-source")
        .arg(format!("local:{}", demo.join("data.jsonl").display()))
        .arg("--db")
        .arg(&journal)
        .arg("--model_dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("head"), "{stderr}");
    assert!(
        files_of(&journal) == before,
        "the run changed the journal it refused"
    );
}
