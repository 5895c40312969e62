//! Links planted in the model cache or in a `local:DIR` model store: the cache's sweep and
//! every removal and creation in it never follow one (through `validator model cache
//! --sweep`, the binary), and the local store refuses a link at every level of a repository
//! (through `LocalStore`, what `--hub local:DIR` builds).

#![cfg(feature = "hub")]

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use validator::hashing::{hash_of_bytes, hash_of_file_hashes};
use validator::hub::Fetched;
use validator::hub::local::LocalStore;
use validator::machine::event::RejectionCode;
use validator::machine::model_id::ModelId;
use validator::machine::params::ModelIdFormat;

const HOTKEY: &str = "5HotkeyAliceAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// An empty journal for `--db` (the sweep asks it which models are still referenced).
fn empty_journal(path: &Path) {
    let mut recorder = validator::journal::recorder::Recorder::open(path, 100).unwrap();
    recorder
        .record(&[(
            1,
            validator::machine::Event::ParamsChanged(validator::machine::event::ParamsChanged {
                params: validator::machine::MechanismParams::default(),
            }),
        )])
        .unwrap();
}

/// Postmortem (issue 33, class 3): a `snapshots` symlink planted in the model cache made the
/// sweep `remove_dir_all` a directory outside it (a canary directory was deleted). The sweep
/// reaches every directory from the cache's root without following a link; a link anywhere
/// is left alone and reported, and what is plain and unreferenced is still swept.
#[test]
fn a_planted_link_never_makes_the_sweep_delete_outside_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let canary = dir.path().join("canary");
    write(&canary.join("abc/precious.bin"), b"keep me");
    write(&canary.join("file.bin"), b"keep me too");
    // A snapshots directory that is a link out of the cache.
    let repo = cache.join(format!("models/{HOTKEY}/models--ns--linked"));
    std::fs::create_dir_all(&repo).unwrap();
    symlink(&canary, repo.join("snapshots")).unwrap();
    // A plain old snapshot holding a link to a file outside, and one that is only plain.
    let snapshots = cache.join(format!("models/{HOTKEY}/models--ns--plain/snapshots"));
    write(&snapshots.join("c1/config.json"), b"{}");
    symlink(canary.join("file.bin"), snapshots.join("c1/weights.bin")).unwrap();
    write(&snapshots.join("c2/config.json"), b"{}");
    // A hotkey directory that is a link.
    symlink(&canary, cache.join("models/5HotkeyBobLinked")).unwrap();
    let db = dir.path().join("journal");
    empty_journal(&db);

    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args([
            "model",
            "cache",
            "--sweep",
            "--grace-minutes",
            "0",
            "--cache",
        ])
        .arg(&cache)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read(canary.join("abc/precious.bin")).unwrap(),
        b"keep me"
    );
    assert_eq!(
        std::fs::read(canary.join("file.bin")).unwrap(),
        b"keep me too"
    );
    // The plain snapshot is swept; the one holding a link keeps only the link.
    assert!(!snapshots.join("c2").exists());
    assert!(!snapshots.join("c1/config.json").exists());
    assert!(std::fs::symlink_metadata(snapshots.join("c1/weights.bin")).is_ok());
    for planted in [
        "models--ns--linked/snapshots",
        "5HotkeyBobLinked",
        "c1/weights.bin",
    ] {
        assert!(stderr.contains(planted), "{planted} not reported: {stderr}");
    }
}

fn model_dir(root: &Path) -> (String, std::path::PathBuf) {
    // In N's walk order (names sorted): the hash is over the files' hashes in that order.
    let files: [(&str, &[u8]); 3] = [
        ("config.json", b"{\"a\": 1}"),
        ("model.safetensors", b"not parsed by a fetch"),
        ("tokenizer.json", b"{}"),
    ];
    let source = root.join("outside/repo");
    for (name, bytes) in files {
        write(&source.join(name), bytes);
    }
    let hashes: Vec<String> = files.iter().map(|(_, b)| hash_of_bytes(b)).collect();
    (
        hash_of_file_hashes(hashes.iter().map(String::as_str)),
        source,
    )
}

fn fetch(store: &LocalStore, hash: &str) -> Fetched {
    let model = ModelId::parse(
        &format!("ns:name:{COMMIT}:{hash}:l3"),
        ModelIdFormat::Original,
    )
    .unwrap();
    store.fetch(HOTKEY, &model, 1 << 30).unwrap()
}

/// Postmortem (issue 33, class 4): `--hub local:DIR` followed namespace, name and commit
/// directory links out of DIR and verified and copied what it found there, though the docs
/// said links are refused. A link at any level of a repository is a refusal naming it.
#[test]
fn the_local_store_refuses_a_link_at_every_level() {
    for level in ["namespace", "name", "commit"] {
        let dir = tempfile::tempdir().unwrap();
        let (hash, outside) = model_dir(dir.path());
        let root = dir.path().join("store");
        let (link, target) = match level {
            "namespace" => {
                let namespace = dir.path().join("outside/ns");
                std::fs::create_dir_all(namespace.join("name")).unwrap();
                std::fs::rename(&outside, namespace.join(format!("name/{COMMIT}"))).unwrap();
                (root.join("ns"), namespace)
            }
            "name" => {
                let name = dir.path().join("outside/name");
                std::fs::create_dir_all(&name).unwrap();
                std::fs::rename(&outside, name.join(COMMIT)).unwrap();
                (root.join("ns/name"), name)
            }
            _ => (root.join(format!("ns/name/{COMMIT}")), outside),
        };
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        symlink(&target, &link).unwrap();
        let store = LocalStore::new(root, dir.path().join("cache"));
        let verdict = fetch(&store, &hash);
        assert!(
            matches!(&verdict, Fetched::Rejected { code: RejectionCode::MalformedRepo, detail } if detail.contains("is a link")),
            "{level}: {verdict:?}"
        );
        assert!(!dir.path().join("cache/models").exists(), "{level}: copied");
    }
    // A plain repository is fetched, and a file that is a link is refused as before.
    let dir = tempfile::tempdir().unwrap();
    let (hash, outside) = model_dir(dir.path());
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("ns/name")).unwrap();
    std::fs::rename(&outside, root.join(format!("ns/name/{COMMIT}"))).unwrap();
    let store = LocalStore::new(root.clone(), dir.path().join("cache"));
    let verdict = fetch(&store, &hash);
    assert!(matches!(verdict, Fetched::Verified(_)), "{verdict:?}");
    let other = LocalStore::new(root.clone(), dir.path().join("cache2"));
    std::fs::remove_file(root.join(format!("ns/name/{COMMIT}/tokenizer.json"))).unwrap();
    symlink(
        "/etc/passwd",
        root.join(format!("ns/name/{COMMIT}/tokenizer.json")),
    )
    .unwrap();
    assert!(matches!(
        fetch(&other, &hash),
        Fetched::Rejected {
            code: RejectionCode::MalformedRepo,
            ..
        }
    ));
}

/// Postmortem (issue 33, class 3): staging a download created its directories through a
/// planted link, so a fetch wrote outside the cache. A link on the way is refused and nothing
/// is written through it.
#[test]
fn a_fetch_never_writes_through_a_link_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (hash, outside) = model_dir(dir.path());
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("ns/name")).unwrap();
    std::fs::rename(&outside, root.join(format!("ns/name/{COMMIT}"))).unwrap();
    let cache = dir.path().join("cache");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let repo = cache.join(format!("models/{HOTKEY}/models--ns--name"));
    std::fs::create_dir_all(&repo).unwrap();
    symlink(&elsewhere, repo.join("snapshots")).unwrap();
    let store = LocalStore::new(root, cache);
    let model = ModelId::parse(
        &format!("ns:name:{COMMIT}:{hash}:l3"),
        ModelIdFormat::Original,
    )
    .unwrap();
    let error = store.fetch(HOTKEY, &model, 1 << 30).unwrap_err();
    assert!(
        error.to_string().contains("not a plain directory"),
        "{error}"
    );
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}
