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

/// Every `.rs` file under `dir`.
pub fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
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

/// The layers, lowest first: a module imports only from its own layer or those below it
/// (`docs/architecture.md` says why each sits where it does). The command line (`src/cli/`,
/// `src/main.rs`) is the binary, above them all.
const LAYERS: &[&[&str]] = &[
    &["machine"],
    &["bounded", "hashing", "dirhash", "seed", "pyrandom", "text"],
    &["journal", "replay", "board", "score", "synth"],
    &["chain", "hub", "data", "eval"],
    &["runner"],
    &["testing"],
    &["cli", "main"],
];

/// A source file's module path: `src/runner/step.rs` is `runner::step`, `src/eval/mod.rs` is
/// `eval`, `src/main.rs` is `main` and the binary's `src/cli/x.rs` is `cli::x`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

/// The paths a file names through `crate::`, `super::`, `self::` and, in the binary,
/// `validator::`, resolved to absolute segment lists (one level of `{...}` groups expanded).
fn paths_named(text: &str, module: &[String], in_binary: bool) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    // A module's path already says whether it is a `mod.rs`: `super` is its parent.
    let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
    let heads: &[(&str, Vec<String>)] = &[
        ("crate::", Vec::new()),
        ("super::", parent),
        ("self::", module.to_vec()),
        ("validator::", Vec::new()),
    ];
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (head, base) in heads {
        if *head == "validator::" && !in_binary {
            continue;
        }
        let mut rest = code.as_str();
        while let Some(at) = rest.find(head) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + head.len()..];
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            let length = rest
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(rest.len());
            let path = rest[..length].trim_end_matches(':');
            let segments: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut prefix = base.clone();
            prefix.extend(segments);
            if !rest[length..].starts_with('{') {
                found.push(prefix);
            } else {
                let group = &rest[length + 1..];
                let close = group.find('}').unwrap_or(group.len());
                for item in group[..close].split(',') {
                    let item = item
                        .trim()
                        .split(|c: char| c.is_whitespace() || c == '{')
                        .next();
                    let Some(item) = item.filter(|i| !i.is_empty()) else {
                        continue;
                    };
                    let mut path = prefix.clone();
                    path.extend(item.split("::").filter(|s| !s.is_empty()).map(String::from));
                    found.push(path);
                }
            }
        }
    }
    found
}

/// The import graph between source files (a module and its own ancestors are not edges:
/// children use what their parent module declares).
fn import_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let modules: std::collections::BTreeSet<Vec<String>> =
        files.iter().map(|file| module_of(&root, file)).collect();
    let mut graph = std::collections::BTreeMap::new();
    for file in &files {
        let module = module_of(&root, file);
        if module.is_empty() || file.ends_with("build.rs") {
            continue;
        }
        let in_binary = module[0] == "cli" || module[0] == "main";
        let text = std::fs::read_to_string(file).unwrap();
        let edges: &mut std::collections::BTreeSet<String> =
            graph.entry(module.join("::")).or_default();
        for path in paths_named(&text, &module, in_binary) {
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].to_vec())
                .find(|prefix| modules.contains(prefix));
            let Some(target) = target else { continue };
            let related = target.starts_with(&module) || module.starts_with(&target);
            if !related {
                edges.insert(target.join("::"));
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap_or("");
    LAYERS
        .iter()
        .position(|layer| layer.contains(&top))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let graph = import_graph();
    assert!(graph.len() > 50, "src/ has moved?");
    let mut violations = Vec::new();
    for (from, targets) in &graph {
        for to in targets {
            if layer_of(to) > layer_of(from) {
                violations.push(format!("{from} imports {to}, a layer above it"));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// The circles of a graph: its strongly connected components of more than one node.
fn circles(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Vec<Vec<String>> {
    // Kosaraju: finish order on the graph, then components on its reverse.
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        seen: &mut std::collections::BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(node.to_owned()) {
            return;
        }
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, seen, order);
        }
        order.push(node.to_owned());
    }
    let mut reverse: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (from, targets) in graph {
        for to in targets {
            reverse.entry(to.clone()).or_default().insert(from.clone());
        }
    }
    let (mut seen, mut order) = (std::collections::BTreeSet::new(), Vec::new());
    for node in graph.keys() {
        visit(node, graph, &mut seen, &mut order);
    }
    let mut assigned = std::collections::BTreeSet::new();
    let mut found = Vec::new();
    for node in order.iter().rev() {
        let mut component = Vec::new();
        visit(node, &reverse, &mut assigned, &mut component);
        if component.len() > 1 {
            component.sort();
            found.push(component);
        }
    }
    found
}

#[test]
fn no_import_goes_round_in_a_circle() {
    let graph = import_graph();
    let mut top: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (from, targets) in &graph {
        let head = |m: &str| m.split("::").next().unwrap_or("").to_owned();
        for to in targets {
            if head(from) != head(to) {
                top.entry(head(from)).or_default().insert(head(to));
            }
        }
    }
    let found: Vec<Vec<String>> = circles(&graph).into_iter().chain(circles(&top)).collect();
    assert!(found.is_empty(), "import circles: {found:?}");
}

/// The checks above must see what they guard: a circle and an arrow up, made on purpose.
#[test]
fn the_import_checks_see_circles_and_layers() {
    let module = |path: &str| path.split("::").map(String::from).collect::<Vec<_>>();
    let named = paths_named(
        "use super::{edges, live::Thing};\nuse crate::machine::State; // crate::runner\n",
        &module("runner::step"),
        false,
    );
    assert!(named.contains(&module("runner::edges")), "{named:?}");
    assert!(named.contains(&module("runner::live::Thing")), "{named:?}");
    assert!(named.contains(&module("machine::State")), "{named:?}");
    assert!(
        !named
            .iter()
            .any(|p| p.first().is_some_and(|s| s == "runner") && p.len() == 1)
    );
    let mut graph = std::collections::BTreeMap::new();
    graph.insert("a".to_owned(), ["b".to_owned()].into());
    graph.insert("b".to_owned(), ["c".to_owned()].into());
    graph.insert("c".to_owned(), ["a".to_owned()].into());
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c"]]);
    assert!(layer_of("eval::worker") < layer_of("runner::edges"));
}

/// Every reader of a journal folds through the one driver: `apply` is called inside
/// `src/machine/` only.
#[test]
fn only_the_fold_driver_calls_apply() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut violations = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.starts_with(root.join("src/machine")))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            // The fold's `apply(&mut state, &record)`, called bare or by path; a method or a
            // function of another name that happens to be called `apply` is not it.
            let calls = code.match_indices("apply(&mut ").any(|(at, _)| {
                let before = code[..at].trim_end();
                !before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '.')
                    && !before.ends_with("fn")
            });
            if calls || code.contains("machine::apply") || code.contains("fold::apply") {
                violations.push(format!("{}:{}", file.display(), number + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "fold through machine::FoldDriver, not apply:\n{}",
        violations.join("\n")
    );
}
