//! Crash points for tests of crash safety: `VALIDATOR_FAILPOINT=<name>` makes the process
//! SIGKILL itself at the named point (no destructor runs, nothing is flushed beyond what already
//! was). Unset, every point is a no-op. The names:
//!
//! - `after-weights-prepared`: the intent is flushed, nothing is signed yet;
//! - `after-weights-sent`: the chain has answered, the answer is not journaled;
//! - `after-weights-committed`: a hash commit is journaled, the reveal is not sent;
//! - `eval-worker-before-publishing`: a remote worker evaluated a job and has not published
//!   the result nor acknowledged the job.

use std::sync::OnceLock;

/// The environment variable naming the crash point.
pub const FAILPOINT_VAR: &str = "VALIDATOR_FAILPOINT";

fn armed() -> Option<&'static str> {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(FAILPOINT_VAR).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Kills the process if `name` is the armed crash point.
pub fn hit(name: &str) {
    if armed() == Some(name) {
        eprintln!("validator: crash point {name} reached; SIGKILL");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // Should the signal not be delivered at once, abort: it is no more graceful.
        std::process::abort();
    }
}
