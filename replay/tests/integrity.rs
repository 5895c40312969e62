//! A damaged journal is exit 3, and neither replay nor export changes a byte of it.
//!
//! Postmortem: sled's recovery took a flipped bit for a torn tail, truncated the log there and
//! opened the prefix; replay then said "all recorded results match" over it (598 of 659 single
//! flips of a fresh journal), and did so after rewriting the very files it audited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use validator::journal::head::{self, HEAD_FILE};
use validator::synth::{JournalSpec, generate_journal};

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A closed (so sealed) journal of a few steps with checkpoints.
fn pristine(dir: &Path) -> PathBuf {
    let db = dir.join("pristine");
    generate_journal(
        &db,
        JournalSpec {
            steps: 6,
            samples: 3,
            checkpoint_every_steps: 2,
            ..JournalSpec::default()
        },
    )
    .unwrap();
    db
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                found.insert(path.strip_prefix(dir).unwrap().to_owned(), bytes);
            }
        }
    }
    found
}

fn copy(from: &Path, to: &Path) {
    for (relative, bytes) in files(from) {
        let path = to.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// Damages a copy of `pristine` with `damage`, then runs replay and export on it: both must
/// exit 3 naming the journal corrupt, and leave every file as it was after the damage.
fn check_corrupt(scratch: &Path, pristine: &Path, case: &str, damage: impl FnOnce(&Path)) {
    let db = scratch.join("case");
    let _ = std::fs::remove_dir_all(&db);
    copy(pristine, &db);
    damage(&db);
    let damaged = files(&db);
    let db_arg = db.to_str().unwrap();
    for args in [vec!["--db", db_arg], vec!["export", "--db", db_arg]] {
        let output = replay(&args);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(3),
            "{case}: replay {args:?} exited {:?}\nstdout: {}\nstderr: {stderr}",
            output.status.code(),
            text(&output.stdout)
        );
        assert!(stderr.contains("corrupt"), "{case}: {stderr}");
        assert!(
            files(&db) == damaged,
            "{case}: replay {args:?} changed the files"
        );
    }
}

#[test]
fn the_pristine_journal_is_sealed_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let db = pristine(dir.path());
    let head = head::read(&db).unwrap().expect("a head");
    let seal = head.seal.as_ref().expect("sealed on close");
    assert!(seal.iter().any(|f| f.path == "db"), "{seal:?}");
    let before = files(&db);
    let output = replay(&["--db", db.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("journal head: {}", head.summary())),
        "{stdout}"
    );
    assert!(files(&db) == before, "replay changed the journal");
}

/// Postmortem (15140d2): sled's recovery took a flipped bit for a torn tail, truncated the log
/// there and opened the prefix, so replay said "match" on a journal that had lost records.
#[test]
fn a_flipped_bit_anywhere_is_exit_3_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    let mut cases = 0;
    for (relative, bytes) in files(&pristine) {
        // Every file's first and last bytes, and bits spread evenly over the rest (a prime
        // stride, so each lands on a different bit of its byte).
        let bits = bytes.len() * 8;
        let stride = (bits / 24).max(1) | 1;
        let mut chosen: Vec<usize> = (0..bits).step_by(stride).collect();
        chosen.extend([0, bits - 1, bits / 2 + 3]);
        for bit in chosen {
            cases += 1;
            check_corrupt(
                dir.path(),
                &pristine,
                &format!("{} bit {bit}", relative.display()),
                |db| {
                    let path = db.join(&relative);
                    let mut damaged = std::fs::read(&path).unwrap();
                    damaged[bit / 8] ^= 1 << (bit % 8);
                    std::fs::write(&path, damaged).unwrap();
                },
            );
        }
    }
    assert!(cases > 50, "{cases} cases");
}

#[test]
fn truncation_appended_garbage_and_stray_files_are_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    for (relative, bytes) in files(&pristine) {
        let name = relative.display().to_string();
        for keep in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            check_corrupt(
                dir.path(),
                &pristine,
                &format!("{name} cut to {keep}"),
                |db| {
                    std::fs::write(db.join(&relative), &bytes[..keep]).unwrap();
                },
            );
        }
        check_corrupt(
            dir.path(),
            &pristine,
            &format!("{name} with garbage"),
            |db| {
                let mut longer = bytes.clone();
                longer.extend_from_slice(b"\0garbage\xff");
                std::fs::write(db.join(&relative), longer).unwrap();
            },
        );
        check_corrupt(dir.path(), &pristine, &format!("{name} removed"), |db| {
            std::fs::remove_file(db.join(&relative)).unwrap();
        });
    }
    check_corrupt(dir.path(), &pristine, "a stray file", |db| {
        std::fs::write(db.join("snap.00000000DEADBEEF"), b"stray").unwrap();
    });
}

/// Without a seal (a validator that crashed keeps only its head), the records are still held
/// to the head: losing the last one is exit 3 with the positions, not a shorter match.
#[test]
fn an_unsealed_journal_that_lost_records_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    check_corrupt(dir.path(), &pristine, "tail lost", |db| {
        let mut found = head::read(db).unwrap().unwrap();
        found.seal = None;
        head::write(db, &found).unwrap();
        let sled = sled::open(db).unwrap();
        let events = sled.open_tree("events").unwrap();
        let (last, _) = events.last().unwrap().unwrap();
        events.remove(last).unwrap();
        sled.flush().unwrap();
    });
    let output = replay(&["--db", dir.path().join("case").to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("1 records were lost"), "{stderr}");
    assert!(stderr.contains("its head says"), "{stderr}");
}

/// A head that is itself damaged, or missing from a journal that keeps one, is exit 3.
#[test]
fn a_damaged_or_missing_head_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = pristine(dir.path());
    check_corrupt(dir.path(), &pristine, "head removed", |db| {
        std::fs::remove_file(db.join(HEAD_FILE)).unwrap();
    });
    check_corrupt(dir.path(), &pristine, "head edited", |db| {
        let text = std::fs::read_to_string(db.join(HEAD_FILE)).unwrap();
        std::fs::write(
            db.join(HEAD_FILE),
            text.replacen("\"records\":", "\"records\": ", 1),
        )
        .unwrap();
    });
}
