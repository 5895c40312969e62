//! Every flag `validator run` and `validator eval-worker` take is in the operator's guide, so
//! the table of flags in `docs/operating.md` cannot fall behind `--help`.

use std::process::Command;

/// The long flags `--help` lists for `command`, aliases left out.
fn flags_of(command: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--"))
        .filter_map(|rest| rest.split([' ', '<', ',']).next())
        .filter(|flag| *flag != "help")
        .map(|flag| format!("--{flag}"))
        .collect()
}

#[test]
fn every_flag_of_run_and_eval_worker_is_in_the_operators_guide() {
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operating.md"),
    )
    .unwrap();
    let mut missing = Vec::new();
    for command in ["run", "eval-worker"] {
        let flags = flags_of(command);
        assert!(flags.len() > 10, "{command} --help lists {flags:?}");
        for flag in flags {
            if !guide.contains(&format!("`{flag}")) && !guide.contains(&format!(" {flag}")) {
                missing.push(format!("{command} {flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operating.md does not mention: {missing:?}"
    );
}
