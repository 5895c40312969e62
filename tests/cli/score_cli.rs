//! `validator score` as a process: JSON in, JSON out, exit 2 on invalid input.

fn score(input: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["score"];
    all.extend_from_slice(args);
    let ran = super::validator(&all, input, &[]);
    (ran.code, ran.stdout, ran.stderr)
}

const EXAMPLE: &str = r#"{"epsilon": 0.01, "temperature": 0.08, "alpha": 0.9,
 "competition": {"reward_percentage": 0.6, "n_competitions": 2},
 "uids": [3, 7, 9],
 "blocks": {"3": 1000, "7": 1200, "9": null},
 "losses": {"3": [2.01, 1.98, null], "7": [2.0, 1.99, 2.1], "9": []},
 "prior_weights": [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.2, 0.0, 0.0]}"#;

#[test]
fn the_issue_example_prints_wins_rates_and_weights() {
    let (code, stdout, stderr) = score(EXAMPLE, &[]);
    assert_eq!(code, 0, "{stderr}");
    let output: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(output["wins"]["3"], 2);
    assert_eq!(output["wins"]["7"], 1);
    assert_eq!(output["wins"]["9"], 0);
    assert_eq!(output["win_rate"]["3"].as_f64().unwrap(), 2.0 / 3.0);
    let weights = output["weights"].as_array().unwrap();
    assert_eq!(weights.len(), 10);
    // 0.9 × 0.1 + 0.1 × 1.2 × softmax share of uid 3.
    let w3 = weights[3].as_f64().unwrap();
    assert!((w3 - 0.208_139_977_834_842).abs() < 1e-12, "{w3}");
}

#[test]
fn an_input_file_works_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("step.json");
    std::fs::write(&path, EXAMPLE).unwrap();
    let (code, stdout, _) = score("", &["--input", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(stdout.contains("\"win_rate\""));
}

#[test]
fn invalid_input_exits_2_with_a_clear_message() {
    for (input, expected) in [
        ("not json", "invalid input"),
        (r#"{"uids": [1], "losses": {"2": [1.0]}}"#, "not in uids"),
        (
            r#"{"uids": [5], "prior_weights": [0.0, 0.0]}"#,
            "outside the metagraph",
        ),
        (r#"{"losses": {"1": ["fast"]}}"#, "invalid input"),
        (r#"{"alpha": 2.0}"#, "alpha"),
    ] {
        let (code, _, stderr) = score(input, &[]);
        assert_eq!(code, 2, "{input}: {stderr}");
        assert!(stderr.contains(expected), "{input}: {stderr}");
    }
    let (code, _, stderr) = score("", &["--input", "/nonexistent/step.json"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/step.json"), "{stderr}");
}

#[test]
fn unknown_keys_are_named_on_stderr() {
    let (code, _, stderr) = score(r#"{"losses": {"1": [1.0]}, "temprature": 0.1}"#, &[]);
    assert_eq!(code, 0);
    assert!(stderr.contains("temprature"), "{stderr}");
}

/// Postmortem (hostile-input round): `score --input` on a FIFO blocked forever and stdin was
/// read without bound.
#[test]
fn score_reads_only_bounded_regular_input() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["score", "--input"])
        .arg(&fifo)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a regular file"));
    let big = format!("{{\"extra\": \"{}\"}}", "x".repeat(17 << 20));
    let file = dir.path().join("big.json");
    std::fs::write(&file, big).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["score", "--input"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("over the 16777216-byte limit"));
}
