//! `validator run`'s logs: human-readable lines on stderr (coloured on a terminal), or JSON
//! lines with `--logging.json`; the level from `--logging.debug` / `--logging.trace`, or
//! `VALIDATOR_LOG` as a tracing filter (`validator=debug,subxt=info`).
//!
//! Every line goes out with URLs' secrets redacted (a password in a queue or node URL,
//! whatever it holds), and every field of a readable line with terminal control characters
//! escaped: a miner's string in a message (a rejection reason) cannot drive the operator's
//! terminal. JSON lines escape control characters by themselves.

use std::io::{IsTerminal, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the subscriber (once; a second call keeps the first).
pub fn init(json: bool, level: tracing::Level) {
    let filter = std::env::var("VALIDATOR_LOG")
        .ok()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("validator={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Redacting)
        .with_target(level > tracing::Level::INFO);
    let installed = if json {
        builder.json().with_ansi(false).try_init()
    } else {
        let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
            let text = validator::text::printable(&format!("{value:?}")).into_owned();
            if field.name() == "message" {
                write!(writer, "{text}")
            } else {
                write!(writer, "{field}={text}")
            }
        })
        .delimited(" ");
        builder
            .fmt_fields(fields)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    // A subscriber already installed (a test harness) keeps logging; nothing to do.
    drop(installed);
}

/// Log lines to stderr, each with URLs' secrets redacted once it is whole.
struct Redacting;

impl<'a> MakeWriter<'a> for Redacting {
    type Writer = RedactedLine;

    fn make_writer(&'a self) -> RedactedLine {
        RedactedLine(Vec::new())
    }
}

/// One event's line, written out when the formatter is done with it.
struct RedactedLine(Vec<u8>);

impl Write for RedactedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedLine {
    fn drop(&mut self) {
        let line = validator::text::redact_url(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
