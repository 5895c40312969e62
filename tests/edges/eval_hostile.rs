//! Hostile model repositories: each gets a clear error, never a panic or an out-of-memory.

#![cfg(feature = "eval")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::tokenize::TokenizerFiles;
use validator::eval::{EvalError, EvalOptions, Evaluator, ModelDir};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

/// A writable copy of a fixture model.
fn copy_model(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Splits a safetensors file into (header, data).
fn split(path: &Path) -> (Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let length = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let header = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    (header, bytes[8 + length..].to_vec())
}

fn join(path: &Path, header: &Map<String, Value>, data: &[u8]) {
    let header = serde_json::to_vec(header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

fn edit_header(path: &Path, edit: impl FnOnce(&mut Map<String, Value>, usize)) {
    let (mut header, data) = split(path);
    edit(&mut header, data.len());
    join(path, &header, &data);
}

fn open_error(dir: &Path) -> String {
    match ModelDir::open(dir) {
        Ok(model) => match Evaluator::new(
            &model,
            &EvalOptions {
                threads: 1,
                ..EvalOptions::default()
            },
        ) {
            Ok(_) => panic!("{} was accepted", dir.display()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

const Q: &str = "model.layers.0.self_attn.q_proj.weight";
const K: &str = "model.layers.0.self_attn.k_proj.weight";

#[test]
fn a_truncated_file_is_refused() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let error = open_error(dir.path());
    assert!(
        error.contains("malformed") && error.contains("truncated"),
        "{error}"
    );
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(open_error(dir.path()).contains("no header length"));
}

#[test]
fn an_absurd_header_length_is_refused_without_allocating_it() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(
        open_error(dir.path()).contains("header of"),
        "{}",
        open_error(dir.path())
    );
    bytes[..8].copy_from_slice(&10u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(open_error(dir.path()).contains("not a JSON object"));
}

#[test]
fn overlapping_offsets_are_refused() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |header, _| {
        let q = header[Q]["data_offsets"].clone();
        let k = header.get_mut(K).unwrap();
        // Same size as q? Use q's start with k's own length so only the overlap is wrong.
        let k_length =
            k["data_offsets"][1].as_u64().unwrap() - k["data_offsets"][0].as_u64().unwrap();
        let start = q[0].as_u64().unwrap();
        k["data_offsets"] = serde_json::json!([start, start + k_length]);
    });
    let error = open_error(dir.path());
    assert!(error.contains("overlap"), "{error}");
}

#[test]
fn offsets_past_the_end_are_refused() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |header, data_len| {
        let k = header.get_mut(K).unwrap();
        let length =
            k["data_offsets"][1].as_u64().unwrap() - k["data_offsets"][0].as_u64().unwrap();
        let start = data_len as u64 - length / 2;
        k["data_offsets"] = serde_json::json!([start, start + length]);
    });
    let error = open_error(dir.path());
    assert!(error.contains("spans bytes"), "{error}");
}

#[test]
fn a_shape_that_disagrees_with_the_bytes_is_refused() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |header, _| {
        header.get_mut(Q).unwrap()["shape"] = serde_json::json!([64, 65]);
    });
    let error = open_error(dir.path());
    assert!(error.contains("needs") && error.contains(Q), "{error}");
    edit_header(&path, |header, _| {
        header.get_mut(Q).unwrap()["shape"] = serde_json::json!([u64::MAX, 16]);
    });
    assert!(open_error(dir.path()).contains("overflowing"));
}

#[test]
fn a_missing_tensor_is_named() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    // Renamed, not removed, so the data section is still tiled exactly.
    edit_header(&path, |header, _| {
        let tensor = header
            .remove("model.layers.1.mlp.down_proj.weight")
            .unwrap();
        header.insert("model.layers.1.mlp.down_proj.weight_".into(), tensor);
    });
    let error = open_error(dir.path());
    assert!(
        error.contains("missing tensor model.layers.1.mlp.down_proj.weight"),
        "{error}"
    );
    let model = ModelDir::open(dir.path()).unwrap();
    assert!(matches!(
        model.norm_check(),
        Err(EvalError::MissingTensor { .. })
    ));
}

#[test]
fn a_shard_index_cannot_leave_the_directory() {
    let dir = copy_model("llama-bf16");
    let path = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen(
            "model-00001-of-00004.safetensors",
            "../../../etc/passwd.safetensors",
            1,
        ),
    )
    .unwrap();
    let error = open_error(dir.path());
    assert!(
        error.contains("not a plain .safetensors file name"),
        "{error}"
    );
    std::fs::write(
        &path,
        text.replacen(
            "\"model-00002-of-00004.safetensors\"",
            "\"model-00009-of-00004.safetensors\"",
            1,
        ),
    )
    .unwrap();
    assert!(
        open_error(dir.path()).contains("missing a shard"),
        "{}",
        open_error(dir.path())
    );
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let path = dir.join("config.json");
    let mut config: Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
}

#[test]
fn config_nonsense_is_refused_by_name() {
    type Edit = Box<dyn Fn(&mut Map<String, Value>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "llama-f32",
            Box::new(|c| {
                c.insert("num_attention_heads".into(), 0.into());
            }),
            "num_attention_heads is 0",
        ),
        (
            "stablelm-f32",
            Box::new(|c| {
                c.insert("num_attention_heads".into(), 6.into());
            }),
            "not divisible",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert("vocab_size".into(), 10_000_000_000u64.into());
            }),
            "exceeds",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert("vocab_size".into(), 421.into());
            }),
            "embedding has shape",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert(
                    "architectures".into(),
                    serde_json::json!(["MixtralForCausalLM"]),
                );
            }),
            "MixtralForCausalLM",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert(
                    "rope_parameters".into(),
                    serde_json::json!({"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}),
                );
            }),
            "yarn",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert("hidden_size".into(), serde_json::json!("big"));
            }),
            "not a positive integer",
        ),
        (
            "llama-f32",
            Box::new(|c| {
                c.insert("intermediate_size".into(), 97.into());
            }),
            "implies",
        ),
    ];
    for (name, edit, expected) in cases {
        let dir = copy_model(name);
        edit_config(dir.path(), edit);
        let error = open_error(dir.path());
        assert!(
            error.contains(expected),
            "{name}: expected {expected:?} in {error}"
        );
    }
    let dir = copy_model("llama-f32");
    std::fs::write(dir.path().join("config.json"), b"\xff\xfe not json").unwrap();
    assert!(open_error(dir.path()).contains("not a JSON object"));
}

/// Postmortem (hostile-input round): `config.json` was read whole before its 1 MiB check (a
/// 14 GiB one fits a 15 GiB repository), and a FIFO in its place blocked forever.
#[test]
fn config_json_is_checked_before_it_is_read() {
    let dir = copy_model("llama-f32");
    let config = dir.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&config)
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let error = open_error(dir.path());
    assert!(error.contains("not a regular file"), "{error}");
    assert!(started.elapsed().as_secs() < 10);
    std::fs::remove_file(&config).unwrap();
    std::fs::write(&config, vec![b' '; 2 << 20]).unwrap();
    assert!(open_error(dir.path()).contains("over 1 MiB"));
}

/// Postmortem (hostile-input round): tokenizer files trusted `metadata.len()`, which is 0 for a
/// device, so a `tokenizer.json` linked to `/dev/zero`-like files or a FIFO was read without
/// bound or blocked.
#[test]
fn tokenizer_files_must_be_regular() {
    let dir = copy_model("llama-f32");
    let tokenizer = dir.path().join("tokenizer.json");
    std::fs::remove_file(&tokenizer).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&tokenizer)
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let error = TokenizerFiles::load(dir.path()).unwrap_err().to_string();
    assert!(error.contains("not a regular file"), "{error}");
    assert!(started.elapsed().as_secs() < 10);
}

fn write_template(dir: &Path, source: &str) {
    std::fs::write(dir.join("chat_template.jinja"), source).unwrap();
}

#[test]
fn a_template_that_loops_runs_out_of_fuel() {
    let dir = copy_model("llama-f32");
    write_template(
        dir.path(),
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    );
    let tokenizer = TokenizerFiles::load(dir.path()).unwrap();
    let error = tokenizer
        .prepare(
            &[("a".into(), "b".into())],
            2048,
            CivilDate {
                year: 2025,
                month: 1,
                day: 1,
            },
            &Isolation::InProcess,
        )
        .unwrap_err()
        .to_string();
    assert!(error.contains("fuel"), "{error}");
}

fn eval_command(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--threads", "1", "--model"])
        .arg(dir)
        .arg("--data")
        .arg(fixtures().join("samples.jsonl"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn a_template_that_explodes_is_stopped_by_the_isolated_renderer() {
    let dir = copy_model("llama-f32");
    // Doubling a string 40 times asks for a terabyte; the child's memory limit stops it.
    write_template(
        dir.path(),
        "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
    );
    let started = std::time::Instant::now();
    let output = eval_command(dir.path(), &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("chat template") && stderr.contains("memory limit"),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 60);
}

/// Postmortem: a template's `raise_exception()` message reached stderr raw, so a miner could
/// retitle the operator's terminal, clear it and print a fake "all checks passed".
#[test]
fn a_template_error_cannot_drive_the_terminal() {
    let dir = copy_model("llama-f32");
    write_template(
        dir.path(),
        "{{ raise_exception('\x1b]0;pwned\x07\x1b[2J\x1b[1;1Hall checks passed\u{202e}') }}",
    );
    let output = eval_command(dir.path(), &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("all checks passed"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}') && !stderr.contains('\u{7}') && !stderr.contains('\u{202e}'),
        "{stderr:?}"
    );
    assert!(stderr.contains("\\u{1b}]0;pwned"), "{stderr}");
}

fn eval_on_data(data: &Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--threads", "1", "--model"])
        .arg(fixtures().join("llama-f32"))
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Postmortem: `eval --data` read a FIFO forever and `/dev/zero` until memory ran out, an empty
/// file gave exit 0 with `mean: null`, and invalid UTF-8 was reported without its line.
#[test]
fn data_files_are_bounded_regular_files_with_samples() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (code, stderr) = eval_on_data(&fifo);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let (code, stderr) = eval_on_data(Path::new("/dev/zero"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(started.elapsed().as_secs() < 30);

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let (code, stderr) = eval_on_data(&empty);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no samples"), "{stderr}");

    let latin = dir.path().join("latin1.jsonl");
    std::fs::write(
        &latin,
        b"{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": \"caf\xe9\", \"response\": \"b\"}\n",
    )
    .unwrap();
    let (code, stderr) = eval_on_data(&latin);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("data line 2: not UTF-8"), "{stderr}");
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        }
        found.push(path);
    }
    found
}

/// Postmortem: every `eval` created `~/.cache/Microsoft/DeveloperTools/.onnxruntime/` with a
/// device id and queued telemetry events (and created `$HOME` if it was missing).
#[test]
fn eval_writes_nothing_under_home() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .env("HOME", home.path())
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .args(["eval", "--threads", "1", "--model"])
        .arg(fixtures().join("llama-f32"))
        .arg("--data")
        .arg(fixtures().join("samples.jsonl"))
        .output()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(files_under(home.path()), Vec::<PathBuf>::new());
}

#[test]
fn nan_weights_still_evaluate_and_the_norm_check_reports_them() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("model.safetensors");
    let (header, mut data) = split(&path);
    let offsets = &header[Q]["data_offsets"];
    let (start, end) = (
        usize::try_from(offsets[0].as_u64().unwrap()).unwrap(),
        usize::try_from(offsets[1].as_u64().unwrap()).unwrap(),
    );
    for chunk in data[start..end].chunks_exact_mut(4) {
        chunk.copy_from_slice(&f32::NAN.to_le_bytes());
    }
    join(&path, &header, &data);
    let model = ModelDir::open(dir.path()).unwrap();
    let report = model.norm_check().unwrap();
    assert!(!report.passed);
    assert_eq!(report.not_finite, vec![Q.to_owned()]);
    assert!(
        report.summary().contains("non-finite"),
        "{}",
        report.summary()
    );
    let output = eval_command(dir.path(), &["--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["norm_check"]["passed"], false);
    assert!(
        json["losses"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );
}

#[test]
fn missing_tokenizer_and_bad_data_are_clear() {
    let dir = copy_model("llama-f32");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let output = eval_command(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing tokenizer.json"));

    let data = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        data.path(),
        "{\"prompt\": \"a\", \"response\": \"b\"}\n{\"prompt\": 3}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--model"])
        .arg(fixtures().join("llama-f32"))
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("data line 2"));
}

#[test]
fn cuda_without_the_gpu_build_is_one_clear_error() {
    let output = eval_command(&fixtures().join("llama-f32"), &["--device", "cuda"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CUDA is not available"), "{stderr}");
    assert!(
        stderr.contains("libonnxruntime_providers_cuda.so") || stderr.contains("LD_LIBRARY_PATH"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{stderr}"
    );
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let mut value: Map<String, Value> =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec(&value).unwrap()).unwrap();
}

/// Postmortem: the tokenizer ran in `validator eval`'s own process, so a normalizer that
/// multiplies every space (or a regex that makes Oniguruma panic) killed the command with
/// exit 101 or an abort. It now runs in the evaluation worker under an address-space limit,
/// and a normalizer whose growth is unbounded is refused from its configuration before any
/// text is normalised (issue 33, class 11): the model is refused (exit 2) within seconds.
#[test]
fn a_tokenizer_built_to_exhaust_memory_is_refused_not_a_crash() {
    let dir = copy_model("llama-f32");
    edit_json(&dir.path().join("tokenizer.json"), |tokenizer| {
        let thousand = " ".repeat(1000);
        let replace = serde_json::json!({
            "type": "Replace", "pattern": {"String": " "}, "content": thousand,
        });
        tokenizer.insert(
            "normalizer".into(),
            serde_json::json!({"type": "Sequence", "normalizers": [replace, replace, replace]}),
        );
    });
    let started = std::time::Instant::now();
    let output = eval_command(dir.path(), &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("normalizers can make a text"), "{stderr}");
    assert!(started.elapsed().as_secs() < 30);
}

/// Postmortem: a model of a few kilobytes with 128 query heads of size 2 made ONNX Runtime
/// allocate 6.5 GB of attention scores. The memory estimate refuses it before any session
/// exists, naming the figure.
#[test]
fn a_tiny_model_with_huge_attention_is_refused_by_its_estimate() {
    let dir = copy_model("llama-f32");
    edit_json(&dir.path().join("config.json"), |config| {
        config.insert("num_attention_heads".into(), 128.into());
        config.insert("num_key_value_heads".into(), 128.into());
        config.insert("head_dim".into(), 2.into());
    });
    let started = std::time::Instant::now();
    let output = eval_command(dir.path(), &["--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("resources") && stderr.contains("attention scores"),
        "{stderr}"
    );
    assert!(started.elapsed().as_secs() < 30);
    // Over the operator's budget is refused the same way, with the budget named.
    let dir = copy_model("llama-f32");
    let output = eval_command(dir.path(), &["--eval-memory-max-bytes", "1000000"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--eval-memory-max-bytes"), "{stderr}");
}

/// Writes a safetensors file with `header` given as raw JSON (so a key can repeat) and
/// `data_bytes` zero bytes of data.
fn write_raw_safetensors(path: &Path, header: &str, data_bytes: usize) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_bytes, 0);
    std::fs::write(path, bytes).unwrap();
}

/// Postmortem: a 100 MB header of tiny objects in `__metadata__` peaked at 9.9 GB (the header
/// was parsed into a JSON tree), 1.5 M zero-size tensors at 2.3 GB, and a tensor named twice
/// was silently collapsed. Headers are now read straight into tensors.
#[test]
fn safetensors_headers_are_read_without_a_json_tree() {
    use validator::eval::safetensors::read_header;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let tensor = r#"{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}"#;

    // 2 M metadata strings are checked, not stored.
    let junk: Vec<String> = (0..2_000_000).map(|i| format!(r#""k{i}": """#)).collect();
    let metadata = format!(
        r#"{{"__metadata__": {{"format": "pt", {}}}, "a": {tensor}}}"#,
        junk.join(",")
    );
    write_raw_safetensors(&path, &metadata, 8);
    assert_eq!(read_header(&path).unwrap().len(), 1);

    write_raw_safetensors(&path, &format!(r#"{{"a": {tensor}, "a": {tensor}}}"#), 8);
    let error = read_header(&path).unwrap_err().to_string();
    assert!(error.contains("appears twice"), "{error}");

    let empty = r#"{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}"#;
    let many: Vec<String> = (0..20_000).map(|i| format!(r#""t{i}": {empty}"#)).collect();
    write_raw_safetensors(&path, &format!("{{{}}}", many.join(",")), 0);
    let error = read_header(&path).unwrap_err().to_string();
    assert!(error.contains("more than 16384 tensors"), "{error}");
}

/// Postmortem (hostile-input round): files the safetensors library refuses (so transformers
/// and N never score them) were scored: a hole before a tensor, bytes after the last, a header
/// starting with spaces, metadata that is not a map of strings or names no format, invalid
/// UTF-8 in metadata a JSON parser skips.
#[test]
fn safetensors_files_the_library_refuses_are_refused() {
    use validator::eval::safetensors::read_header;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let a = r#""a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}"#;
    let b_gap = r#""b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}"#;
    let cases: [(String, usize, &str); 7] = [
        (format!("{{{a}, {b_gap}}}"), 16, "unused bytes"),
        (format!("{{{a}}}"), 9, "bytes after the last tensor"),
        (format!("  {{{a}}}"), 8, "start with"),
        (
            format!(r#"{{"__metadata__": {{"format": 1}}, {a}}}"#),
            8,
            "map of strings",
        ),
        (
            format!(r#"{{"__metadata__": {{"x": "y"}}, {a}}}"#),
            8,
            "format None",
        ),
        (
            format!(r#"{{"__metadata__": {{"format": "gguf"}}, {a}}}"#),
            8,
            "format Some",
        ),
        (
            format!("{{\"__metadata__\": {{\"format\": \"pt\", \"x\": \"\u{1}\"}}, {a}}}"),
            8,
            "JSON",
        ),
    ];
    for (header, data_bytes, expected) in cases {
        write_raw_safetensors(&path, &header, data_bytes);
        let error = read_header(&path).unwrap_err().to_string();
        assert!(error.contains(expected), "{header}: {error}");
    }
    // Invalid UTF-8 where a JSON parser would skip it unchecked.
    let mut bytes = br#"{"__metadata__": {"format": "pt", "x": ""#.to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(br#""}, "#);
    bytes.extend_from_slice(a.as_bytes());
    bytes.push(b'}');
    let mut file = (bytes.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&bytes);
    file.resize(file.len() + 8, 0);
    std::fs::write(&path, file).unwrap();
    let error = read_header(&path).unwrap_err().to_string();
    assert!(error.contains("not UTF-8"), "{error}");
    // Metadata with its format, and none at all, are fine.
    for header in [
        format!(r#"{{"__metadata__": {{"format": "pt"}}, {a}}}"#),
        format!("{{{a}}}"),
    ] {
        write_raw_safetensors(&path, &header, 8);
        assert_eq!(read_header(&path).unwrap().len(), 1);
    }
}

/// `eval` of `dir` on `samples` generated samples, with the time it took.
fn eval_timed(dir: &Path, samples: usize) -> (Option<i32>, String, std::time::Duration) {
    let data = dir.join("many.jsonl");
    let lines: Vec<String> = (0..samples)
        .map(|i| format!("{{\"prompt\": \"question {i}\", \"response\": \"answer {i}\"}}"))
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let started = std::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["eval", "--threads", "1", "--model"])
        .arg(dir)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// Postmortem (issue 33, class 11): a tokenizer whose normalizers doubled the text at each of
/// a dozen replacements ended in a refusal only after the worker had taken its whole memory
/// and most of a minute. The normalizers' growth is bounded from their configuration, so the
/// refusal comes before any text is normalised.
#[test]
fn a_normalizer_bomb_is_refused_within_seconds() {
    let dir = copy_model("llama-f32");
    let path = dir.path().join("tokenizer.json");
    let mut tokenizer: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let doubling =
        serde_json::json!({"type": "Replace", "pattern": {"String": "e"}, "content": "ee"});
    tokenizer["normalizer"] =
        serde_json::json!({"type": "Sequence", "normalizers": vec![doubling; 24]});
    std::fs::write(&path, serde_json::to_vec(&tokenizer).unwrap()).unwrap();
    let (code, stderr, took) = eval_timed(dir.path(), 64);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("normalizers can make a text"), "{stderr}");
    assert!(took.as_secs() < 10, "took {took:?}");
}

/// Postmortem (issue 33, class 11): templates that wrote megabytes per conversation, or
/// burned nearly all of their fuel on each, were refused only after 38 to 60 s (one fuel tank
/// and one 16 MiB string per conversation, up to the renderer's memory cap). Output is
/// bounded as it is written, per conversation and per batch, and fuel and time per batch.
#[test]
fn huge_or_slow_templates_are_refused_within_seconds() {
    for (template, expected) in [
        ("{{ 'x' * 12000000 }}", "rendered over"),
        (
            "{% for i in range(2000) %}{% for j in range(2000) %}{% endfor %}{% endfor %}ok",
            "instructions for",
        ),
    ] {
        let dir = copy_model("llama-f32");
        write_template(dir.path(), template);
        let (code, stderr, took) = eval_timed(dir.path(), 64);
        assert_eq!(code, Some(2), "{template}: {stderr}");
        assert!(stderr.contains(expected), "{template}: {stderr}");
        assert!(took.as_secs() < 20, "{template}: took {took:?}");
    }
}

/// Each class the successor scores, given the values of its own configuration that would
/// change the maths unsafely or that transformers reads differently, is refused with the value
/// named; a Gemma 2 checkpoint without one of its extra norms names the tensor.
#[test]
fn the_successors_classes_refuse_their_own_nonsense_by_name() {
    use serde_json::json;
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "mistral-f32",
            "sliding_window",
            json!(0),
            "sliding_window is 0",
        ),
        (
            "mistral-f32",
            "sliding_window",
            json!("wide"),
            "sliding_window",
        ),
        (
            "mistral-f32",
            "model_type",
            json!("llama"),
            "model_type \"llama\" with architecture MistralForCausalLM",
        ),
        (
            "mistral-f32",
            "hidden_act",
            json!("gelu"),
            "MistralForCausalLM supports \"silu\"",
        ),
        (
            "gemma-f32",
            "hidden_act",
            json!("relu"),
            "GemmaForCausalLM supports \"gelu_pytorch_tanh\"",
        ),
        (
            "gemma-f32",
            "use_bidirectional_attention",
            json!(true),
            "use_bidirectional_attention",
        ),
        (
            "gemma2-f32",
            "hidden_activation",
            json!("gelu"),
            "the exact GELU",
        ),
        (
            "gemma2-f32",
            "query_pre_attn_scalar",
            json!(-4),
            "query_pre_attn_scalar = -4 is not positive",
        ),
        (
            "gemma2-f32",
            "attn_logit_softcapping",
            json!(0.0),
            "attn_logit_softcapping = 0 is not positive",
        ),
        (
            "gemma2-f32",
            "final_logit_softcapping",
            json!("soft"),
            "final_logit_softcapping",
        ),
        (
            "gemma2-f32",
            "layer_types",
            json!(["sliding_attention", "full_attention"]),
            "layer_types lists 2 types for 3 layers",
        ),
        (
            "gemma2-f32",
            "layer_types",
            json!(["sliding_attention", "chunked_attention", "full_attention"]),
            "layer_types entry",
        ),
    ];
    for (name, key, value, expected) in cases {
        let dir = copy_model(name);
        edit_config(dir.path(), |config| {
            config.insert(key.into(), value.clone());
        });
        let error = open_error(dir.path());
        assert!(
            error.contains(expected),
            "{name} with {key} = {value}: expected {expected:?} in {error}"
        );
    }
    let dir = copy_model("gemma2-f32");
    let path = dir.path().join("model.safetensors");
    let norm = "model.layers.0.post_feedforward_layernorm.weight";
    edit_header(&path, |header, _| {
        let tensor = header.remove(norm).unwrap();
        header.insert(format!("{norm}_"), tensor);
    });
    let error = open_error(dir.path());
    assert!(error.contains(&format!("missing tensor {norm}")), "{error}");
}
