//! Guards the architecture invariants that the compiler does not: the pure core does no I/O,
//! reads no clock, draws no randomness, never awaits and never iterates a hash map.

use std::path::Path;

const FORBIDDEN: &[(&str, &str)] = &[
    ("sled", "storage belongs to the journal"),
    ("tokio", "the core never awaits"),
    ("async ", "the core never awaits"),
    (".await", "the core never awaits"),
    ("std::fs", "the core does no I/O"),
    ("std::io", "the core does no I/O"),
    ("std::net", "the core does no I/O"),
    ("std::process", "the core does no I/O"),
    ("std::env", "the core reads no environment"),
    ("SystemTime", "the core reads no clock"),
    ("Instant", "the core reads no clock"),
    ("rand::", "the core draws no randomness"),
    ("thread_rng", "the core draws no randomness"),
    ("HashMap", "iteration order must be explicit"),
    ("HashSet", "iteration order must be explicit"),
    (
        "f64::exp(",
        "use libm::exp so weights are identical on every machine",
    ),
    (
        ".exp()",
        "use libm::exp so weights are identical on every machine",
    ),
    ("println!", "the core reports through return values"),
];

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn the_machine_stays_pure() {
    let machine = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine");
    let mut files = Vec::new();
    rust_files(&machine, &mut files);
    assert!(files.len() >= 8, "src/machine has moved?");
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for (needle, why) in FORBIDDEN {
                if code.contains(needle) {
                    violations.push(format!(
                        "{}:{}: `{needle}`: {why}",
                        file.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_machine_keeps_its_lint_block() {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine/mod.rs");
    let text = std::fs::read_to_string(module).unwrap();
    for lint in [
        "clippy::unwrap_used",
        "clippy::expect_used",
        "clippy::panic",
        "clippy::indexing_slicing",
        "clippy::arithmetic_side_effects",
        "clippy::let_underscore_must_use",
        "clippy::disallowed_methods",
    ] {
        assert!(
            text.contains(lint),
            "src/machine/mod.rs no longer denies {lint}"
        );
    }
}

#[test]
fn only_the_command_line_knows_clap() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let allowed = [root.join("src/cli"), root.join("src/main.rs")];
    let mut violations = Vec::new();
    for file in &files {
        if allowed.iter().any(|a| file.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("clap") {
                violations.push(format!("{}:{}", file.display(), number + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "clap is named outside src/cli/ and src/main.rs:\n{}",
        violations.join("\n")
    );
}
