//! The `validator` command line as a process: each command's output and documented exit codes,
//! and `--help` of every command.

mod documented_flags;
mod exit_codes;
mod limits;
mod model_hash;
mod score_cli;
mod settings;

use std::io::Write;
use std::process::{Command, Stdio};

/// What a `validator` process gave: exit code, stdout, stderr.
pub struct Ran {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `validator ARGS` with `stdin` and the extra environment `env`.
pub fn validator(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
