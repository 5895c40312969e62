//! `validator run` in a hostile world or an unlucky operator's: what used to stall it with
//! zero steps while it looked alive, what miners' chain entries used to cost, and a model
//! cache changed under it. Each runs on the demo's own world (its recorded chain, its local
//! hub and data), changed in one place.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use validator::journal::Journal;
use validator::machine::Event;
use validator::machine::event::RejectionCode;

/// The demo's world, made once per test binary: snapshot, hub and data.
fn demo() -> &'static Path {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("demo");
        let made = Command::new(env!("CARGO_BIN_EXE_validator"))
            .args(["run", "--demo", "--metrics-addr", "off", "--demo-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        dir
    })
}

/// The demo's snapshot, to be changed.
fn snapshot() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(demo().join("snapshot.json")).unwrap()).unwrap()
}

/// `validator run` on the demo's hub and data with `snapshot`, in `dir`, for at most 60 s.
fn run_on(dir: &Path, snapshot: &serde_json::Value, model_dir: &Path, steps: u32) -> Output {
    let snapshot_path = dir.join("snapshot.json");
    std::fs::write(&snapshot_path, snapshot.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--offline", "--metrics-addr", "off"])
        .args(["--max-steps", &steps.to_string()])
        .arg("--chain-snapshot")
        .arg(&snapshot_path)
        .arg("--hub")
        .arg(format!("local:{}", demo().join("hub").display()))
        .arg("--data-source")
        .arg(format!("local:{}", demo().join("data.jsonl").display()))
        .args(["--disk-free-min-bytes", "0"])
        .arg("--db")
        .arg(dir.join("journal"))
        .arg("--model_dir")
        .arg(model_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "still running after 60 s:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn events(db: &Path) -> Vec<Event> {
    let journal = Journal::open_existing(db).unwrap();
    journal.all_records().map(|r| r.unwrap().event).collect()
}

/// Adds `hotkey` to the first metagraph (no stake, no consensus) with `raw` as its commitment.
fn register(snapshot: &mut serde_json::Value, hotkey: &str, raw: &str) {
    let entry = &mut snapshot["timeline"][0];
    let metagraph = entry["metagraph"].as_object_mut().unwrap();
    for (field, value) in metagraph.iter_mut() {
        let Some(list) = value.as_array_mut() else {
            continue;
        };
        list.push(match field.as_str() {
            "hotkeys" => serde_json::json!(hotkey),
            "validator_permit" => serde_json::json!(false),
            _ => serde_json::json!(0),
        });
    }
    commit(snapshot, hotkey, raw);
}

/// Adds `raw` as `hotkey`'s commitment at the first block, without registering it.
fn commit(snapshot: &mut serde_json::Value, hotkey: &str, raw: &str) {
    snapshot["timeline"][0]["commitments"][hotkey] = serde_json::json!({"block": 999, "raw": raw});
}

/// Alice's commitment, a model the hub has and whose hash is right.
fn alice_raw(snapshot: &serde_json::Value) -> String {
    snapshot["timeline"][0]["commitments"]["5DemoAlice"]["raw"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Postmortem (issue 33, class 6): a snapshot whose metagraph had more uids than a subnet can
/// hold was read, its metagraph rejected by the fold, and the loop retried with 0 steps
/// forever. Lists past the uid space are refused while the file is read (and counted as they
/// are read, so millions of empty hotkeys cost no memory): exit 2 at start-up.
#[test]
fn a_snapshot_beyond_the_uid_space_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut snapshot = snapshot();
    let metagraph = &mut snapshot["timeline"][0]["metagraph"];
    let size = (1 << 16) + 1;
    metagraph["hotkeys"] = (0..size).map(|i| format!("5H{i}")).collect();
    metagraph["consensus"] = vec![0; size].into();
    metagraph["stake"] = vec![0; size].into();
    metagraph["validator_permit"] = vec![false; size].into();
    let started = Instant::now();
    let output = run_on(dir.path(), &snapshot, &dir.path().join("cache"), 1);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("more than 65536 items"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let mut empty = self::snapshot();
    empty["timeline"][0]["metagraph"]["hotkeys"] = vec![""; 3_000_000].into();
    let output = run_on(dir.path(), &empty, &dir.path().join("cache"), 1);
    assert_eq!(output.status.code(), Some(2));
}

/// Postmortem (issue 33, class 6): a model cache that was a file or `/dev/null` failed every
/// fetch, and the loop retried with 0 steps while `/healthz` said ok. The cache is made and
/// written in once at start-up: what cannot be is the setting's fault, exit 2, naming it.
#[test]
fn a_model_cache_that_cannot_be_written_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    for model_dir in [file.as_path(), Path::new("/dev/null"), &file.join("below")] {
        let output = run_on(dir.path(), &snapshot(), model_dir, 1);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {stderr}",
            model_dir.display()
        );
        assert!(stderr.contains("--model_dir"), "{stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}

/// Postmortem (issue 33, class 6): a registered hotkey that cannot name a cache directory
/// (`..`, `/`) was a configuration error for the fetcher, retried forever, so its model
/// never got a verdict. It is now the model's verdict, journaled once, and the steps go on.
#[test]
fn a_hostile_hotkey_gets_a_verdict_and_the_steps_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut snapshot = snapshot();
    let raw = alice_raw(&snapshot);
    register(&mut snapshot, "../../escape", &raw);
    let output = run_on(dir.path(), &snapshot, &dir.path().join("cache"), 2);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("2 completed steps"), "{stdout}");
    let verdicts: Vec<_> = events(&dir.path().join("journal"))
        .into_iter()
        .filter_map(|event| match event {
            Event::ModelRejected(r) if r.hotkey == "../../escape" => Some(r.code),
            Event::ModelVerified(v) if v.hotkey == "../../escape" => {
                panic!("verified a hotkey that names no directory")
            }
            _ => None,
        })
        .collect();
    assert_eq!(verdicts, [RejectionCode::MalformedRepo]);
    assert!(!dir.path().join("escape").exists());
}

/// Postmortem (issue 33, class 7): commitments of hotkeys with no uid were fetched and
/// verified, so anyone could make every validator download models for nothing. Only what the
/// metagraph registers is fetched, as N's updater walks the metagraph's hotkeys.
#[test]
fn a_commitment_of_an_unregistered_hotkey_is_not_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let mut snapshot = snapshot();
    let raw = alice_raw(&snapshot);
    commit(&mut snapshot, "5Unregistered", &raw);
    let cache = dir.path().join("cache");
    let output = run_on(dir.path(), &snapshot, &cache, 1);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events = events(&dir.path().join("journal"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ModelVerified(v) if v.hotkey == "5DemoAlice")),
        "the registered hotkey's same model is fetched"
    );
    assert!(
        !events.iter().any(|e| matches!(e,
            Event::ModelVerified(v) if v.hotkey == "5Unregistered")
            || matches!(e, Event::ModelRejected(r) if r.hotkey == "5Unregistered")),
        "an unregistered hotkey's model got a verdict"
    );
    let cached = walk(&cache);
    assert!(
        !cached.iter().any(|p| p.contains("5Unregistered")),
        "{cached:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            found.push(entry.path().display().to_string());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    found
}

/// Postmortem (issue 33, class 10): a model's files deleted from the cache after it was
/// verified made its evaluation fail ("missing config.json"), and the step journaled that
/// failure as the model's (infinite losses). A failed evaluation is now the model's only if
/// its files still hash as verified; else the step fails as the machine's, the model is
/// fetched again, and the retried step evaluates it whole.
#[test]
fn a_model_deleted_from_the_cache_is_fetched_again_not_failed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let first = run_on(dir.path(), &snapshot(), &cache, 1);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let damaged: Vec<PathBuf> = walk(&cache.join("models"))
        .into_iter()
        .filter(|p| p.ends_with("/config.json"))
        .map(PathBuf::from)
        .collect();
    assert!(damaged.len() >= 4, "{damaged:?}");
    for file in &damaged {
        std::fs::remove_file(file).unwrap();
    }
    let second = run_on(dir.path(), &snapshot(), &cache, 4);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    let events = events(&dir.path().join("journal"));
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::LossesComputed(l) => match &l.outcome {
                validator::machine::event::EvalOutcome::Failed(why) => Some(why.clone()),
                _ => None,
            },
            _ => None,
        })
        .filter(|why| why.contains("config.json"))
        .collect();
    assert!(failed.is_empty(), "models blamed for the cache: {failed:?}");
    assert!(
        events.iter().any(|e| matches!(e, Event::StepFailed(f)
            if f.reason.contains("changed in the model cache"))),
        "the step failed as the machine's: {stderr}"
    );
    assert!(
        damaged.iter().any(|file| file.is_file()),
        "the models evaluated since were fetched again"
    );
}
