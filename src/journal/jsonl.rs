//! The JSON Lines form of a journal: one record or checkpoint per line.
//!
//! ```text
//! {"v":2,"block":1000,"seq":0,"event":{"metagraph_observed":{...}}}
//! {"v":2,"block":1000,"seq":7,"checkpoint":{...state after seq 7...}}
//! ```
//!
//! Golden journals are written in this form; `replay export` writes it and `replay import`
//! reads it back. Floats are written so they read back bit for bit (losses as their exact f64
//! widening, non-finite values as strings), so export → import → export is byte-identical.
//! In hand-written input `seq` may be left out: it then follows the previous line's.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::machine::event::{SCHEMA_VERSION_OLDEST_READ, schema_version_is_readable};
use crate::machine::{Event, Position, Record, SCHEMA_VERSION, State};

/// One line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    v: u16,
    block: u64,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    event: Option<Event>,
    #[serde(default)]
    checkpoint: Option<State>,
}

/// One line as written, borrowing what it writes.
#[derive(Serialize)]
struct LineOut<'a> {
    v: u16,
    block: u64,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint: Option<&'a State>,
}

/// An item of a JSON Lines journal.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "records are nearly every item; boxing them would allocate once per line"
)]
pub enum Item {
    /// A journaled event.
    Record(Record),
    /// A checkpoint: the state after folding every record up to its position.
    Checkpoint(Box<State>),
}

/// A line that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {detail}")]
pub struct JsonlError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub detail: String,
}

/// The longest line read: a checkpoint of a large subnet is a few megabytes, and a stream with
/// no newline (a device, a hostile file) must end in an error, not in all of memory.
pub const LINE_BYTES_MAX: usize = 256 << 20;

/// Reads a whole JSON Lines journal, checking versions and order. Blank lines are skipped;
/// a line longer than [`LINE_BYTES_MAX`] is an error.
pub fn read(reader: impl BufRead) -> Result<Vec<Item>, JsonlError> {
    read_lines_of_at_most(reader, LINE_BYTES_MAX)
}

fn read_lines_of_at_most(
    mut reader: impl BufRead,
    line_bytes_max: usize,
) -> Result<Vec<Item>, JsonlError> {
    use std::io::Read;
    let mut items = Vec::new();
    let mut last: Option<Position> = None;
    let mut last_record: Option<Position> = None;
    let mut bytes = Vec::new();
    for line_number in 1usize.. {
        let fail = |detail: String| JsonlError {
            line: line_number,
            detail,
        };
        bytes.clear();
        let cap = u64::try_from(line_bytes_max)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let read = (&mut reader)
            .take(cap)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if read == 0 {
            break;
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        } else if bytes.len() > line_bytes_max {
            return Err(fail(format!("longer than {line_bytes_max} bytes")));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| fail(format!("not UTF-8: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        if !schema_version_is_readable(line.v) {
            return Err(fail(format!(
                "schema version {}; this build reads versions {SCHEMA_VERSION_OLDEST_READ} to \
                 {SCHEMA_VERSION}",
                line.v
            )));
        }
        match (line.event, line.checkpoint) {
            (Some(event), None) => {
                let seq = match (line.seq, last_record) {
                    (Some(seq), _) => seq,
                    (None, Some(previous)) => previous.seq.saturating_add(1),
                    (None, None) => 0,
                };
                let position = Position {
                    block: line.block,
                    seq,
                };
                if let Some(previous) = last_record
                    && (position.block < previous.block || position.seq <= previous.seq)
                {
                    return Err(fail(format!(
                        "record at block {} seq {} does not follow block {} seq {}",
                        position.block, position.seq, previous.block, previous.seq
                    )));
                }
                last_record = Some(position);
                last = Some(position);
                items.push(Item::Record(Record {
                    block: line.block,
                    seq,
                    event,
                }));
            }
            (None, Some(state)) => {
                let position = Position {
                    block: line.block,
                    seq: line
                        .seq
                        .ok_or_else(|| fail("a checkpoint needs its seq".into()))?,
                };
                if state.position != Some(position) {
                    return Err(fail(format!(
                        "checkpoint line says block {} seq {}, its state says {:?}",
                        position.block, position.seq, state.position
                    )));
                }
                if last.is_some_and(|previous| position < previous) {
                    return Err(fail("checkpoint out of order".into()));
                }
                last = Some(position);
                items.push(Item::Checkpoint(Box::new(state)));
            }
            _ => {
                return Err(fail(
                    "a line holds exactly one of \"event\" or \"checkpoint\"".into(),
                ));
            }
        }
    }
    Ok(items)
}

fn write_line(writer: &mut impl Write, line: &LineOut<'_>) -> std::io::Result<()> {
    serde_json::to_writer(&mut *writer, line)?;
    writer.write_all(b"\n")
}

/// Writes one record.
pub fn write_record(writer: &mut impl Write, record: &Record) -> std::io::Result<()> {
    write_line(
        writer,
        &LineOut {
            v: SCHEMA_VERSION,
            block: record.block,
            seq: record.seq,
            event: Some(&record.event),
            checkpoint: None,
        },
    )
}

/// Writes one checkpoint (a state that has folded at least one record).
pub fn write_checkpoint(writer: &mut impl Write, state: &State) -> std::io::Result<()> {
    let Some(position) = state.position else {
        return Ok(());
    };
    write_line(
        writer,
        &LineOut {
            v: SCHEMA_VERSION,
            block: position.block,
            seq: position.seq,
            event: None,
            checkpoint: Some(state),
        },
    )
}

/// Writes one item.
pub fn write_item(writer: &mut impl Write, item: &Item) -> std::io::Result<()> {
    match item {
        Item::Record(record) => write_record(writer, record),
        Item::Checkpoint(state) => write_checkpoint(writer, state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem: `replay --events` and `replay import` read a line without bound, so a
    /// stream with no newline (`/dev/zero`) took all of memory.
    #[test]
    fn a_line_past_the_cap_is_an_error_with_its_number() {
        let line =
            r#"{"v":4,"block":1,"seq":0,"event":{"step_abandoned":{"step":0,"reason":"x"}}}"#;
        let text = format!("{line}\n\n{}", "x".repeat(200));
        let error = read_lines_of_at_most(text.as_bytes(), 100).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.detail.contains("longer than 100 bytes"), "{error}");
        // A last line without its newline is still a line.
        assert_eq!(
            read_lines_of_at_most(line.as_bytes(), 100).unwrap().len(),
            1
        );
        let invalid = read_lines_of_at_most(&b"\xff\n"[..], 100).unwrap_err();
        assert!(invalid.detail.contains("not UTF-8"), "{invalid}");
    }
}
