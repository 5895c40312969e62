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

/// Reads a whole JSON Lines journal, checking versions and order. Blank lines are skipped.
pub fn read(reader: impl BufRead) -> Result<Vec<Item>, JsonlError> {
    let mut items = Vec::new();
    let mut last: Option<Position> = None;
    let mut last_record: Option<Position> = None;
    for (index, text) in reader.lines().enumerate() {
        let line_number = index + 1;
        let fail = |detail: String| JsonlError {
            line: line_number,
            detail,
        };
        let text = text.map_err(|e| fail(e.to_string()))?;
        if text.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
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
