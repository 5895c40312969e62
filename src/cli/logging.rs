//! `validator run`'s logs: human-readable lines on stderr (coloured on a terminal), or JSON
//! lines with `--logging.json`; the level from `--logging.debug` / `--logging.trace`, or
//! `VALIDATOR_LOG` as a tracing filter (`validator=debug,subxt=info`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber (once; a second call keeps the first).
pub fn init(json: bool, level: tracing::Level) {
    let filter = std::env::var("VALIDATOR_LOG")
        .ok()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("validator={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(level > tracing::Level::INFO);
    let installed = if json {
        builder.json().with_ansi(false).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    // A subscriber already installed (a test harness) keeps logging; nothing to do.
    drop(installed);
}
