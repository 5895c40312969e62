//! The maps stay true: every source file is in the code map (and the map names no file that
//! is gone), every public module is in `lib.rs`'s module map, every relative link in README
//! and `docs/` resolves (anchors included), and every heading the old README had is mapped to
//! its new place in `docs/moved.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::tidy::rust_files;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of `markdown` outside fenced code blocks, line by line.
fn prose_lines(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, spaces,
/// hyphens and underscores kept), spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose_lines(markdown)
        .into_iter()
        .filter(|line| line.starts_with('#'))
        .map(|line| slug(line.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` and `![alt](target)` links outside code.
fn link_targets(markdown: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(markdown) {
        // Inline code may show link syntax without being a link.
        let mut prose = String::new();
        for (index, part) in line.split('`').enumerate() {
            if index % 2 == 0 {
                prose.push_str(part);
            }
        }
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    targets
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Where each relative link of `file` fails to resolve.
fn broken_links(file: &Path) -> Vec<String> {
    let text = read(file);
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let resolved = if path.is_empty() {
            file.to_owned()
        } else {
            file.parent().unwrap().join(path)
        };
        if !resolved.exists() {
            broken.push(format!("{}: `{target}`: no such file", file.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let is_markdown = resolved.extension().is_some_and(|e| e == "md");
            if !is_markdown || !anchors(&read(&resolved)).contains(anchor) {
                broken.push(format!("{}: `{target}`: no such heading", file.display()));
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_resolves() {
    let files = markdown_files();
    assert!(files.len() >= 9, "docs/ has moved?");
    let broken: Vec<String> = files.iter().flat_map(|file| broken_links(file)).collect();
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// A link checker that finds nothing proves nothing: it must see a broken file and a broken
/// anchor, and accept a good one.
#[test]
fn the_link_checker_finds_broken_links() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.md"), "# Title\n\n## Some `code`: here\n").unwrap();
    let page = dir.path().join("a.md");
    std::fs::write(
        &page,
        "[ok](b.md#some-code-here) [gone](c.md) [bad](b.md#nowhere) `[code](x.md)`\n\
         ```\n[fenced](y.md)\n```\n[self](#top)\n# Top\n",
    )
    .unwrap();
    let broken = broken_links(&page);
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].contains("c.md") && broken[1].contains("nowhere"));
}

/// The headings of the README before its sections moved to `docs/` (at d39b016).
const OLD_README_HEADINGS: &[&str] = &[
    "Quick start",
    "Commands",
    "`validator run`: the validator",
    "What operators and miners see",
    "`validator eval-worker`: a remote evaluation worker",
    "`validator leaderboard`: the page from a journal at rest",
    "`validator score`: one scoring step, JSON in, JSON out",
    "`replay`: audit a journal",
    "`validator eval`: a model's loss on your data (the miner's local check)",
    "`validator model`: hashes, downloads, the cache",
    "`validator data sample`: the batch a step would evaluate",
    "`validator chain`: the metagraph, a miner's commit, manual weights",
    "`validator journal generate`",
    "Operating guide",
    "Remote evaluation workers (NATS JetStream)",
    "Architecture",
    "Code map",
    "Architecture invariants",
    "Scoring: N exactly, and where N is silent",
    "The journal",
    "Benchmarks",
    "Testing",
];

#[test]
fn every_old_readme_heading_has_a_new_place() {
    let moved = read(&root().join("docs/moved.md"));
    let listed: BTreeSet<&str> = moved
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split(" | ").next())
        .collect();
    let missing: Vec<&&str> = OLD_README_HEADINGS
        .iter()
        .filter(|heading| !listed.contains(**heading))
        .collect();
    assert!(missing.is_empty(), "not in docs/moved.md: {missing:?}");
}

#[test]
fn the_readme_is_a_front_page() {
    let lines = read(&root().join("README.md")).lines().count();
    assert!(
        lines <= 150,
        "README.md has {lines} lines: move detail to docs/"
    );
}

/// The code map's section of `docs/architecture.md`.
fn code_map() -> String {
    let text = read(&root().join("docs/architecture.md"));
    let start = text
        .find("## Code map")
        .expect("docs/architecture.md has no code map");
    let rest = &text[start + 1..];
    let end = rest.find("\n## ").map_or(rest.len(), |at| at + 1);
    rest[..end].to_owned()
}

/// The source files the code map names: `src/...` paths in full, and file names inside a
/// bullet that starts with its directory (`` - `src/machine/`: `event.rs` ... ``).
fn files_in_code_map(map: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut bullets: Vec<String> = Vec::new();
    for line in map.lines() {
        if line.starts_with("- ") {
            bullets.push(line.to_owned());
        } else if let Some(last) = bullets.last_mut().filter(|_| line.starts_with("  ")) {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    for bullet in bullets {
        let spans: Vec<&str> = bullet.split('`').skip(1).step_by(2).collect();
        let directory = spans
            .first()
            .filter(|span| span.starts_with("src/") && span.ends_with('/'))
            .map(|span| span.to_string());
        for span in spans {
            let name = span.split_whitespace().next().unwrap_or("");
            if !name.ends_with(".rs") {
                continue;
            }
            if name.starts_with("src/") {
                named.insert(name.to_owned());
            } else if let Some(directory) = &directory {
                named.insert(format!("{directory}{name}"));
            }
        }
    }
    named
}

#[test]
fn the_code_map_names_every_source_file_and_no_other() {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let on_disk: BTreeSet<String> = files
        .iter()
        .map(|file| {
            file.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mapped = files_in_code_map(&code_map());
    let unmapped: Vec<&String> = on_disk.difference(&mapped).collect();
    let stale: Vec<&String> = mapped.difference(&on_disk).collect();
    assert!(
        unmapped.is_empty() && stale.is_empty(),
        "docs/architecture.md's code map is out of date:\n  not in the map: {unmapped:?}\n  \
         in the map but not in src/: {stale:?}"
    );
}

/// The public modules `lib.rs` declares, and those its module map names.
fn lib_modules() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = read(&root().join("src/lib.rs"));
    let declared = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_owned())
        .collect();
    let mut mapped = BTreeSet::new();
    for line in text.lines() {
        let Some(doc) = line.strip_prefix("//! - ") else {
            continue;
        };
        // A bullet names its modules first: "[`a`], [`b`] and `c` (feature `c`): ...".
        let head = doc.split(':').next().unwrap_or("");
        for (index, span) in head.split('`').enumerate() {
            if index % 2 == 1 && !span.contains(' ') {
                mapped.insert(span.to_owned());
            }
        }
    }
    (declared, mapped)
}

#[test]
fn the_module_map_names_every_public_module_and_no_other() {
    let (declared, mapped) = lib_modules();
    assert!(declared.len() >= 10, "src/lib.rs has moved?");
    let features: BTreeSet<String> = ["chain", "data", "eval", "hub", "node", "testing"]
        .into_iter()
        .map(String::from)
        .collect();
    let unmapped: Vec<&String> = declared.difference(&mapped).collect();
    let stale: Vec<&String> = mapped
        .difference(&declared)
        .filter(|name| !features.contains(*name))
        .collect();
    assert!(
        unmapped.is_empty() && stale.is_empty(),
        "src/lib.rs's module map is out of date:\n  not in the map: {unmapped:?}\n  \
         in the map but not declared: {stale:?}"
    );
}

/// Every JSON Lines record the audit guide shows is one this build reads, at this schema.
#[test]
fn the_journal_examples_in_the_audit_guide_read() {
    let guide = read(&root().join("docs/audit.md"));
    let mut fenced = false;
    let mut examples = Vec::new();
    for line in guide.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced && line.starts_with("{\"v\":") {
            examples.push(line);
        }
    }
    assert!(examples.len() >= 2, "docs/audit.md shows no records?");
    for example in examples {
        let items = validator::journal::jsonl::read(std::io::Cursor::new(example))
            .unwrap_or_else(|e| panic!("docs/audit.md: {example}: {e}"));
        assert_eq!(items.len(), 1);
        assert!(
            example.starts_with(&format!("{{\"v\":{}", validator::machine::SCHEMA_VERSION)),
            "docs/audit.md shows an old schema: {example}"
        );
    }
}
