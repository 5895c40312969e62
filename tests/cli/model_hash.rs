//! `validator model hash` against N's own `get_hash_of_directory` and
//! `get_hash_of_two_strings` (recorded in `fixtures/dirhash/n_dirhash.json` from N's code):
//! nested directories, empty files, names whose order depends on case, digits and code points.

use std::path::Path;
use std::process::Command;

fn hash(dir: &Path, hotkey: &str) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["model", "hash", "--json", "--hotkey", hotkey])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn hashes_match_n_on_the_recorded_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/dirhash");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("n_dirhash.json")).unwrap())
            .unwrap();
    let hotkey = recorded["hotkey"].as_str().unwrap();
    let cases = recorded["cases"].as_object().unwrap();
    assert_eq!(cases.len(), 3);
    for (sub, expected) in cases {
        let ours = hash(&root.join(sub), hotkey);
        assert_eq!(ours["hash"], expected["hash"], "{sub}");
        assert_eq!(ours["salted"], expected["salted"], "{sub}");
    }
}

#[test]
fn a_missing_directory_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["model", "hash", "/nonexistent/model"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/model"));
}
