//! `replay` as a process: golden journals, divergences, export/import, locked and damaged
//! journals.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use validator::journal::Journal;
use validator::synth::{JournalSpec, generate_journal};

/// sled directly, retrying while the lock of a journal just closed is still being released.
fn open_raw(path: &Path) -> sled::Db {
    for _ in 0..40 {
        if let Ok(db) = sled::open(path) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    sled::open(path).unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/journals")
}

fn replay(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn goldens() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 5);
    paths
}

#[test]
fn every_golden_journal_replays_with_exit_0() {
    for path in goldens() {
        let output = replay(
            &["--from-block", "0", "--events", path.to_str().unwrap()],
            None,
        );
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            text(&output.stderr)
        );
        assert!(text(&output.stdout).contains("all recorded results match"));
        let json = replay(
            &[
                "--from-block",
                "0",
                "--events",
                path.to_str().unwrap(),
                "--json",
            ],
            None,
        );
        let last = text(&json.stdout).lines().last().unwrap().to_owned();
        let summary: serde_json::Value = serde_json::from_str(&last).unwrap();
        assert_eq!(summary["status"], "match");
    }
}

#[test]
fn one_altered_loss_is_a_divergence_with_exit_1() {
    let original = std::fs::read_to_string(fixtures().join("two_competitions.jsonl")).unwrap();
    // uid 1's first loss in step 0 is 2.125 and beats uid 0's discounted 2.2275; make it lose.
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let target = lines
        .iter_mut()
        .find(|l| {
            l.contains("\"losses_computed\"") && l.contains("\"step\":0") && l.contains("\"uid\":1")
        })
        .unwrap();
    assert!(target.contains("[2.125,"), "{target}");
    *target = target.replacen("[2.125,", "[2.5,", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("altered.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let output = replay(
        &["--from-block", "0", "--events", path.to_str().unwrap()],
        None,
    );
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("DIVERGENCE at block 110"), "{stdout}");
    assert!(
        stdout.contains("step 0")
            && stdout.contains("uid 0")
            && stdout.contains("wins journaled 2 but recomputed 3"),
        "{stdout}"
    );
    // From a later block, the altered step is folded but not checked... and the later steps,
    // whose weights inherit it, still diverge.
    let later = replay(
        &["--from-block", "200", "--events", path.to_str().unwrap()],
        None,
    );
    assert_eq!(later.status.code(), Some(1));
}

fn import(db: &Path, jsonl: &[u8]) {
    let output = replay(&["import", "--db", db.to_str().unwrap()], Some(jsonl));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

fn export(db: &Path, from_block: u64) -> Vec<u8> {
    let output = replay(
        &[
            "export",
            "--db",
            db.to_str().unwrap(),
            "--from-block",
            &from_block.to_string(),
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    output.stdout
}

#[test]
fn export_import_export_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    // A generated journal with checkpoints, and every golden journal.
    let generated = dir.path().join("generated");
    generate_journal(
        &generated,
        JournalSpec {
            steps: 60,
            samples: 7,
            checkpoint_every_steps: 10,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    let mut sources = vec![export(&generated, 0)];
    for path in goldens() {
        let db = dir.path().join(path.file_stem().unwrap());
        import(&db, &std::fs::read(&path).unwrap());
        sources.push(export(&db, 0));
    }
    for (index, first) in sources.iter().enumerate() {
        let db = dir.path().join(format!("again{index}"));
        import(&db, first);
        let second = export(&db, 0);
        assert!(first == &second, "export {index} changed on a round trip");
        assert!(!first.is_empty());
    }
    assert!(text(&sources[0]).contains("\"checkpoint\""));
}

#[test]
fn a_partial_export_replays_on_its_own_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    let state = generate_journal(
        &db,
        JournalSpec {
            steps: 40,
            samples: 5,
            checkpoint_every_steps: 10,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    let last_block = state.position.unwrap().block;
    let from = last_block / 2;
    let partial = export(&db, from);
    let path = dir.path().join("partial.jsonl");
    std::fs::write(&path, &partial).unwrap();
    assert!(
        text(&partial)
            .lines()
            .next()
            .unwrap()
            .contains("\"checkpoint\"")
    );
    let output = replay(
        &[
            "--from-block",
            &from.to_string(),
            "--events",
            path.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // A partial export cannot be replayed from genesis.
    let output = replay(
        &["--from-block", "0", "--events", path.to_str().unwrap()],
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("not at genesis"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn replay_of_a_db_uses_checkpoints_and_matches_a_full_refold() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    let state = generate_journal(
        &db,
        JournalSpec {
            steps: 50,
            samples: 6,
            checkpoint_every_steps: 10,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    let from = (state.position.unwrap().block * 3 / 4).to_string();
    let db = db.to_str().unwrap();
    let with = replay(&["--from-block", &from, "--db", db, "--json"], None);
    let without = replay(
        &[
            "--from-block",
            &from,
            "--db",
            db,
            "--json",
            "--no-checkpoints",
        ],
        None,
    );
    assert_eq!(with.status.code(), Some(0), "{}", text(&with.stderr));
    assert_eq!(without.status.code(), Some(0));
    let steps = |output: &Output| -> Vec<String> {
        text(&output.stdout)
            .lines()
            .filter(|l| l.contains("\"step\""))
            .map(str::to_owned)
            .collect()
    };
    assert!(!steps(&with).is_empty());
    assert_eq!(steps(&with), steps(&without));
    let summary = |output: &Output| -> serde_json::Value {
        serde_json::from_str(text(&output.stdout).lines().last().unwrap()).unwrap()
    };
    assert!(summary(&with)["started_from"].is_object());
    assert!(summary(&without)["started_from"].is_null());
    assert!(
        summary(&with)["records_folded"].as_u64() < summary(&without)["records_folded"].as_u64()
    );
}

#[test]
fn replay_never_changes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    generate_journal(
        &db,
        JournalSpec {
            steps: 20,
            samples: 4,
            checkpoint_every_steps: 5,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    let before = export(&db, 0);
    let output = replay(&["--from-block", "0", "--db", db.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(export(&db, 0), before);
}

#[test]
fn a_journal_held_by_another_process_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    let _held = Journal::open(&db).unwrap();
    let output = replay(&["--from-block", "0", "--db", db.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("locked by another process") && stderr.contains("cp -r"),
        "{stderr}"
    );
}

#[test]
fn missing_damaged_and_foreign_journals_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = replay(&["--db", dir.path().join("absent").to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output.stderr).contains("no journal at"));

    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let output = replay(&["--db", dir.path().to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output.stderr).contains("is not a journal"));

    let db = dir.path().join("journal");
    generate_journal(
        &db,
        JournalSpec {
            steps: 3,
            samples: 2,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    {
        let sled = open_raw(&db);
        let events = sled.open_tree("events").unwrap();
        let (key, value) = events.iter().nth(5).unwrap().unwrap();
        let mut value = value.to_vec();
        value[7] ^= 0xff;
        events.insert(key, value).unwrap();
        sled.flush().unwrap();
    }
    let output = replay(&["--db", db.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(3));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("corrupt") && stderr.contains("unlike when the journal was last closed"),
        "{stderr}"
    );

    let output = replay(
        &["--events", dir.path().join("notes.txt").to_str().unwrap()],
        None,
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("line 1"));
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
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

/// Postmortem (issue 33, class 9): `replay import` into an existing journal refused, but only
/// after it had opened it, and sled rewrites what it opens: the journal changed. A directory
/// that is not new or empty is refused before anything opens it.
#[test]
fn import_refuses_a_journal_that_exists_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    let golden = std::fs::read(goldens()[0].clone()).unwrap();
    import(&db, &golden);
    let before = files(&db);
    let output = replay(&["import", "--db", db.to_str().unwrap()], Some(&golden));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("not a new or empty directory"));
    assert!(
        files(&db) == before,
        "import changed the journal it refused"
    );
}

/// Postmortem (issue 33, class 9): an empty journal audited as "all recorded results match"
/// (exit 0); nothing checked is not a match.
#[test]
fn an_empty_journal_is_not_a_match() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    import(&db, b"");
    let output = replay(&["--from-block", "0", "--db", db.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stdout));
    assert!(text(&output.stderr).contains("holds no record"));
}

/// Postmortem (issue 33, class 9): a journal without a head passed an audit silently, so a
/// deleted head (and a truncated log) could pass too. A journal without a head is not
/// audited (exit 3) unless the auditor says it is from before heads (`--accept-no-head`),
/// and then the report says its completeness is unchecked; one whose head was deleted is
/// corrupt either way.
#[test]
fn a_journal_without_a_head_is_not_audited_silently() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    import(&db, &std::fs::read(goldens()[0].clone()).unwrap());
    let db_arg = db.to_str().unwrap();
    std::fs::remove_file(db.join("journal.head")).unwrap();
    let deleted = replay(&["--db", db_arg, "--accept-no-head"], None);
    assert_eq!(deleted.status.code(), Some(3), "{}", text(&deleted.stdout));
    assert!(text(&deleted.stderr).contains("head"));
    // As a journal from before heads kept them: no head, and no mark that it ever had one.
    {
        let sled = open_raw(&db);
        sled.open_tree("meta").unwrap().remove("head").unwrap();
        sled.flush().unwrap();
    }
    let silent = replay(&["--db", db_arg], None);
    assert_eq!(silent.status.code(), Some(3), "{}", text(&silent.stdout));
    assert!(text(&silent.stderr).contains("--accept-no-head"));
    let accepted = replay(&["--db", db_arg, "--accept-no-head"], None);
    assert_eq!(
        accepted.status.code(),
        Some(0),
        "{}",
        text(&accepted.stderr)
    );
    assert!(text(&accepted.stdout).contains("completeness unchecked"));
}

/// Postmortem (issue 33, class 9): a raw ESC in a JSON Lines field reached the terminal in
/// replay's error. Every echoed byte is escaped.
#[test]
fn a_hostile_field_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.jsonl");
    std::fs::write(
        &path,
        "{\"v\":6,\"block\":1,\"seq\":0,\"event\":{\"\\u001b]0;pwned\\u0007\\u001b[2J\":{}}}\n",
    )
    .unwrap();
    let output = replay(&["--events", path.to_str().unwrap()], None);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
        "{stderr:?}"
    );
    assert!(stderr.contains("\\u{1b}"), "{stderr}");
}

/// Postmortem: `--to-block` below `--from-block`, or a `--from-block` past the journal's end,
/// checked nothing and still said "all recorded results match" (exit 0), which would pass an
/// audit of blocks the journal does not hold.
#[test]
fn an_empty_block_range_is_a_usage_error_not_a_match() {
    let golden = goldens().remove(0);
    let path = golden.to_str().unwrap();
    let inverted = replay(
        &["--from-block", "500", "--to-block", "400", "--events", path],
        None,
    );
    assert_eq!(
        inverted.status.code(),
        Some(2),
        "{}",
        text(&inverted.stdout)
    );
    assert!(text(&inverted.stderr).contains("--to-block 400 is below --from-block 500"));
    let past = replay(&["--from-block", "999999999", "--events", path], None);
    assert_eq!(past.status.code(), Some(2), "{}", text(&past.stdout));
    let stderr = text(&past.stderr);
    assert!(
        stderr.contains("nothing to check in block 999999999 on: the journal holds no record"),
        "{stderr}"
    );
    // Postmortem (hostile-input round): a range below the first record (blocks 0..=0 of a
    // journal starting later) also checked nothing and said "match".
    let before = replay(
        &["--from-block", "0", "--to-block", "0", "--events", path],
        None,
    );
    assert_eq!(before.status.code(), Some(2), "{}", text(&before.stdout));
    assert!(text(&before.stderr).contains("nothing to check in blocks 0..=0"));
    // A FIFO is refused before it is opened, where the open would wait for a writer forever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("events");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let fifo_run = replay(&["--events", fifo.to_str().unwrap()], None);
    assert_eq!(fifo_run.status.code(), Some(2));
    assert!(text(&fifo_run.stderr).contains("not a regular file"));
    let whole = replay(&["--from-block", "0", "--events", path], None);
    assert_eq!(whole.status.code(), Some(0));
}

/// Postmortem (hostile-input round): replay interrupted by Ctrl-C or SIGTERM left its private
/// copy of the journal (123 MB for a 58 MB export) in the temporary directory, since a signal
/// ends the process without running destructors. A trial counts once the copy was seen to
/// exist while replay ran, before the signal was sent.
#[test]
fn an_interrupted_replay_removes_its_private_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    generate_journal(
        &db,
        JournalSpec {
            steps: 2_000,
            samples: 50,
            checkpoint_every_steps: 100_000,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    let copies = || std::fs::read_dir(&scratch).unwrap().count();
    let mut conclusive = 0;
    for (trial, signal) in ["-INT", "-TERM", "-INT", "-TERM"]
        .iter()
        .cycle()
        .enumerate()
    {
        if conclusive == 2 || trial == 40 {
            break;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_replay"))
            .args(["--no-checkpoints", "--db", db.to_str().unwrap()])
            .env("TMPDIR", &scratch)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        let seen = loop {
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            if copies() > 0 {
                break true;
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if seen && child.try_wait().unwrap().is_none() {
            let sent = Command::new("kill")
                .args([*signal, child.id().to_string().as_str()])
                .status()
                .unwrap();
            assert!(sent.success());
            let status = child.wait().unwrap();
            if status.code().is_some_and(|code| code > 128) {
                conclusive += 1;
            }
        } else {
            child.kill().ok();
            child.wait().unwrap();
        }
        assert_eq!(copies(), 0, "trial {trial} ({signal}) left its copy behind");
    }
    assert!(
        conclusive > 0,
        "no trial caught replay while its copy existed"
    );
}
