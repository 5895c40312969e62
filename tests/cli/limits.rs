//! The operator's resource limits are the machine's, never a model's fault: `validator eval`
//! run under `prlimit` with hard limits below what its children ask for.

use std::path::Path;
use std::process::Command;

/// `prlimit LIMITS validator ARGS`, or `None` where util-linux's prlimit is missing (a failure
/// under `CI=true`).
fn under_prlimit(limits: &[&str], args: &[&str]) -> Option<(i32, String)> {
    let found = Command::new("prlimit").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "prlimit (util-linux) is missing"
        );
        eprintln!("skipping: prlimit (util-linux) is missing");
        return None;
    }
    let output = Command::new("prlimit")
        .args(limits)
        .arg(env!("CARGO_BIN_EXE_validator"))
        .args(args)
        .output()
        .unwrap();
    Some((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn eval_args() -> Vec<String> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    vec![
        "eval".into(),
        "--model".into(),
        models.join("llama-f32").display().to_string(),
        "--data".into(),
        models.join("samples.jsonl").display().to_string(),
    ]
}

/// Postmortem (issue 33, class 2): the evaluation and check children set their limits with
/// `sh -c "ulimit -v N && ulimit -t M && exec ..."`; under an inherited lower hard limit
/// `ulimit` failed, the child exited, and the model was blamed ("crashed the evaluation
/// worker twice", exit 2; rejected for good in a run). The child now sets its own limits with
/// setrlimit, lowered to the hard limit: under a lower CPU limit the model evaluates.
#[test]
fn a_lower_inherited_cpu_limit_does_not_fail_the_model() {
    let args = eval_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((code, stderr)) = under_prlimit(&["--cpu=100:100"], &args) else {
        return;
    };
    assert_eq!(code, 0, "{stderr}");
}

/// Postmortem (issue 33, class 2): under an address-space limit too low for anything to run,
/// the model was blamed (exit 2). A child that fails under the operator's lower limit is the
/// machine's fault: exit 1, naming the limits.
#[test]
fn a_child_that_dies_under_a_lower_inherited_memory_limit_is_the_machines_fault() {
    let args = eval_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some((code, stderr)) = under_prlimit(&["--as=60000000:60000000"], &args) else {
        return;
    };
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("resource limits"), "{stderr}");
    assert!(stderr.contains("60000000"), "{stderr}");
}
