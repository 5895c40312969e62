//! The journal: every input, in order, on sled, before anything acts on it.
//!
//! Three typed trees: `events` (position → event envelope), `checkpoints` (position of the
//! last folded event → state envelope) and `meta` (schema version). An append writes all of a
//! step's events in one `apply_batch` (all or nothing across a crash) and flushes before it
//! returns, so nothing acts on an event that a crash could lose. sled holds an exclusive lock on
//! the database: one process at a time.

use std::path::{Path, PathBuf};

use crate::codec::{self, CodecError};
use crate::machine::event::{SCHEMA_VERSION_OLDEST_READ, schema_version_is_readable};
use crate::machine::{Event, Position, Record, SCHEMA_VERSION, State};

const TREE_EVENTS: &str = "events";
const TREE_CHECKPOINTS: &str = "checkpoints";
const TREE_META: &str = "meta";
const META_SCHEMA_VERSION: &[u8] = b"schema_version";

/// What can go wrong with a journal. `Locked`, `Missing` and `NotAJournal` are the operator's
/// to fix; `Corrupt` means the journal cannot be trusted and the validator must stop.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the database.
    #[error(
        "the journal at {path} is locked by another process (a running validator?): sled allows \
         one process per database; stop it, or replay a copy (cp -r {path} COPY)"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// No journal where one was expected.
    #[error("no journal at {path}")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The directory holds something else.
    #[error("{path} is not a journal: {detail}")]
    NotAJournal {
        /// The path given.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// The journal is damaged.
    #[error("the journal at {path} is corrupt: {detail}")]
    Corrupt {
        /// The database directory.
        path: PathBuf,
        /// Where and how.
        detail: String,
    },
    /// An append would break journal order.
    #[error("out of order: {new:?} does not follow {last:?}")]
    OutOfOrder {
        /// The last position in the journal.
        last: Position,
        /// The position refused.
        new: Position,
    },
    /// A storage error that is none of the above (disk full, permissions).
    #[error("journal storage error at {path}: {source}")]
    Storage {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

/// An open journal.
pub struct Journal {
    path: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    checkpoints: sled::Tree,
    last: Option<Position>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal at `path`, creating it if the directory does not exist or is empty.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let fresh = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => !path.exists(),
        };
        if !fresh {
            check_looks_like_sled(path)?;
        }
        Self::open_sled(path, fresh, true)
    }

    /// Opens an existing journal; never creates one.
    pub fn open_existing(path: &Path) -> Result<Self, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                path: path.to_owned(),
            });
        }
        check_looks_like_sled(path)?;
        Self::open_sled(path, false, false)
    }

    /// Opens sled at `path`; `writer` journals may raise an older schema version to this
    /// build's (readers leave it as found).
    fn open_sled(path: &Path, fresh: bool, writer: bool) -> Result<Self, JournalError> {
        // sled releases its file lock from a background thread after the last handle drops,
        // so a journal closed a moment ago can still look held: retry briefly before saying so.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new()
                .path(path)
                .open()
                .map_err(|e| classify(path, e))
            {
                Err(JournalError::Locked { .. }) if attempts < 20 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other?,
            }
        };
        let storage = |source| JournalError::Storage {
            path: path.to_owned(),
            source,
        };
        let meta = db.open_tree(TREE_META).map_err(storage)?;
        let events = db.open_tree(TREE_EVENTS).map_err(storage)?;
        let checkpoints = db.open_tree(TREE_CHECKPOINTS).map_err(storage)?;
        match meta
            .get(META_SCHEMA_VERSION)
            .map_err(|e| classify(path, e))?
        {
            Some(version) => {
                let found = <[u8; 2]>::try_from(version.as_ref())
                    .map(u16::from_be_bytes)
                    .map_err(|_| JournalError::Corrupt {
                        path: path.to_owned(),
                        detail: "unreadable schema version".into(),
                    })?;
                if !schema_version_is_readable(found) {
                    return Err(JournalError::NotAJournal {
                        path: path.to_owned(),
                        detail: format!(
                            "schema version {found}; this build reads versions \
                             {SCHEMA_VERSION_OLDEST_READ} to {SCHEMA_VERSION}"
                        ),
                    });
                }
                if writer && found != SCHEMA_VERSION {
                    // Older records read unchanged; new ones are written in this version, so
                    // the journal now needs a build that reads it.
                    meta.insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                        .map_err(storage)?;
                    db.flush().map_err(storage)?;
                }
            }
            None if fresh || events.is_empty() => {
                meta.insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(storage)?;
                db.flush().map_err(storage)?;
            }
            None => {
                return Err(JournalError::NotAJournal {
                    path: path.to_owned(),
                    detail: "events without a schema version".into(),
                });
            }
        }
        let last = match events.last().map_err(|e| classify(path, e))? {
            Some((key, _)) => Some(codec::position(&key).map_err(|e| corrupt(path, None, e))?),
            None => None,
        };
        Ok(Self {
            path: path.to_owned(),
            db,
            events,
            checkpoints,
            last,
        })
    }

    /// The journal's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last record's position.
    pub fn last_position(&self) -> Option<Position> {
        self.last
    }

    /// Whether the journal holds no events.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Appends events atomically and flushes them to disk. Each event gets the next sequence
    /// number; blocks may not go backwards.
    pub fn append(&mut self, events: &[(u64, Event)]) -> Result<Vec<Record>, JournalError> {
        let mut seq_next = self.last.map_or(0, |p| p.seq.saturating_add(1));
        let records: Vec<Record> = events
            .iter()
            .map(|(block, event)| {
                let record = Record {
                    block: *block,
                    seq: seq_next,
                    event: event.clone(),
                };
                seq_next = seq_next.saturating_add(1);
                record
            })
            .collect();
        self.append_records(&records)?;
        Ok(records)
    }

    /// Appends records that carry their own positions (an import); each must follow the last.
    pub fn append_records(&mut self, records: &[Record]) -> Result<(), JournalError> {
        let mut batch = sled::Batch::default();
        let mut last = self.last;
        for record in records {
            let position = record.position();
            if let Some(previous) = last
                && (position.block < previous.block || position.seq <= previous.seq)
            {
                return Err(JournalError::OutOfOrder {
                    last: previous,
                    new: position,
                });
            }
            batch.insert(&codec::key(position), codec::encode_event(&record.event));
            last = Some(position);
        }
        self.events
            .apply_batch(batch)
            .map_err(|e| classify(&self.path, e))?;
        self.flush()?;
        self.last = last;
        Ok(())
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush().map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// Records from `from` on, in order, up to and including block `to_block`.
    pub fn records(
        &self,
        from: Position,
        to_block: Option<u64>,
    ) -> impl Iterator<Item = Result<Record, JournalError>> + '_ {
        let end = to_block.map_or([0xff; 16], |block| {
            codec::key(Position {
                block,
                seq: u64::MAX,
            })
        });
        self.events.range(codec::key(from)..=end).map(move |entry| {
            let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
            let position = codec::position(&key).map_err(|e| corrupt(&self.path, None, e))?;
            let event =
                codec::decode_event(&value).map_err(|e| corrupt(&self.path, Some(position), e))?;
            Ok(Record {
                block: position.block,
                seq: position.seq,
                event,
            })
        })
    }

    /// Every record, in order.
    pub fn all_records(&self) -> impl Iterator<Item = Result<Record, JournalError>> + '_ {
        self.records(Position { block: 0, seq: 0 }, None)
    }

    /// Stores a checkpoint of `state`, keyed by the last record it folded.
    pub fn write_checkpoint(&self, state: &State) -> Result<(), JournalError> {
        let Some(position) = state.position else {
            return Ok(());
        };
        self.checkpoints
            .insert(codec::key(position), codec::encode_state(state))
            .map_err(|e| classify(&self.path, e))?;
        self.flush()
    }

    /// The latest checkpoint whose last folded record is before block `block`: folding from it
    /// reaches block `block` without skipping any of its records.
    pub fn checkpoint_before(&self, block: u64) -> Result<Option<State>, JournalError> {
        let entry = self
            .checkpoints
            .range(..codec::key_of_block(block))
            .next_back()
            .transpose()
            .map_err(|e| classify(&self.path, e))?;
        let Some((key, value)) = entry else {
            return Ok(None);
        };
        let position = codec::position(&key).map_err(|e| corrupt(&self.path, None, e))?;
        let state =
            codec::decode_state(&value).map_err(|e| corrupt(&self.path, Some(position), e))?;
        if state.position != Some(position) {
            return Err(corrupt(
                &self.path,
                Some(position),
                CodecError::Payload("checkpoint key and state position disagree".into()),
            ));
        }
        Ok(Some(state))
    }

    /// Where a fold that must reach block `block` can start: the latest checkpoint whose last
    /// record is before it (`None`: genesis), and the position of the first record after that.
    pub fn start_before(&self, block: u64) -> Result<(Option<State>, Position), JournalError> {
        let start = self.checkpoint_before(block)?;
        let from = start.as_ref().and_then(|state| state.position).map_or(
            Position { block: 0, seq: 0 },
            |p| Position {
                block: p.block,
                seq: p.seq.saturating_add(1),
            },
        );
        Ok((start, from))
    }

    /// Every checkpoint, in order.
    pub fn checkpoints(&self) -> impl Iterator<Item = Result<State, JournalError>> + '_ {
        self.checkpoints.iter().map(move |entry| {
            let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
            let position = codec::position(&key).map_err(|e| corrupt(&self.path, None, e))?;
            codec::decode_state(&value).map_err(|e| corrupt(&self.path, Some(position), e))
        })
    }

    /// Stores a checkpoint as imported (its position is inside the state).
    pub fn import_checkpoint(&self, state: &State) -> Result<(), JournalError> {
        self.write_checkpoint(state)
    }

    /// Reads every event value without decoding: the baseline of the replay benchmark.
    /// Returns the number of records and their total bytes.
    pub fn scan_raw(&self) -> Result<(u64, u64), JournalError> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for entry in self.events.iter() {
            let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
            count += 1;
            bytes += u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX);
        }
        Ok((count, bytes))
    }
}

fn check_looks_like_sled(path: &Path) -> Result<(), JournalError> {
    if !path.is_dir() {
        return Err(JournalError::NotAJournal {
            path: path.to_owned(),
            detail: "not a directory".into(),
        });
    }
    if !path.join("conf").is_file() || !path.join("db").is_file() {
        return Err(JournalError::NotAJournal {
            path: path.to_owned(),
            detail: "no sled database files (conf, db) in it".into(),
        });
    }
    Ok(())
}

fn corrupt(path: &Path, position: Option<Position>, error: CodecError) -> JournalError {
    let detail = match position {
        Some(p) => format!("record at block {} seq {}: {error}", p.block, p.seq),
        None => error.to_string(),
    };
    JournalError::Corrupt {
        path: path.to_owned(),
        detail,
    }
}

/// Sorts sled's errors into the operator's classes. sled reports a held lock only as an I/O
/// error whose message says "could not acquire lock".
fn classify(path: &Path, error: sled::Error) -> JournalError {
    match error {
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            JournalError::Locked {
                path: path.to_owned(),
            }
        }
        sled::Error::Corruption { at, .. } => JournalError::Corrupt {
            path: path.to_owned(),
            detail: format!("sled found corrupt data at {at:?}"),
        },
        sled::Error::Unsupported(ref why) | sled::Error::ReportableBug(ref why)
            if why.contains("corrupt") =>
        {
            JournalError::Corrupt {
                path: path.to_owned(),
                detail: why.clone(),
            }
        }
        other => JournalError::Storage {
            path: path.to_owned(),
            source: other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::StepAbandoned;

    fn abandoned(step: u64) -> Event {
        Event::StepAbandoned(StepAbandoned {
            step,
            reason: "test".into(),
        })
    }

    #[test]
    fn append_assigns_positions_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let mut journal = Journal::open(&path).unwrap();
            let records = journal
                .append(&[(5, abandoned(0)), (5, abandoned(1))])
                .unwrap();
            assert_eq!(records[1].seq, 1);
            assert!(matches!(
                journal.append(&[(4, abandoned(2))]),
                Err(JournalError::OutOfOrder { .. })
            ));
        }
        let mut journal = Journal::open_existing(&path).unwrap();
        assert_eq!(journal.last_position(), Some(Position { block: 5, seq: 1 }));
        journal.append(&[(6, abandoned(2))]).unwrap();
        let all: Vec<_> = journal.all_records().map(Result::unwrap).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].position(), Position { block: 6, seq: 2 });
        let from_six: Vec<_> = journal
            .records(Position { block: 6, seq: 0 }, None)
            .map(Result::unwrap)
            .collect();
        assert_eq!(from_six.len(), 1);
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _journal = Journal::open(dir.path()).unwrap();
        let error = Journal::open(dir.path()).unwrap_err();
        assert!(matches!(error, JournalError::Locked { .. }), "{error}");
        assert!(error.to_string().contains("locked by another process"));
    }

    #[test]
    fn foreign_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let error = Journal::open(dir.path()).unwrap_err();
        assert!(matches!(error, JournalError::NotAJournal { .. }), "{error}");
        let error = Journal::open_existing(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(error, JournalError::Missing { .. }), "{error}");
    }
}
