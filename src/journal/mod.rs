//! The journal: every input, in order, on sled, before anything acts on it.
//!
//! Three typed trees: `events` (position → event envelope), `checkpoints` (position of the
//! last folded event → state envelope) and `meta` (schema version). An append writes all of a
//! step's events in one `apply_batch` (all or nothing across a crash) and flushes before it
//! returns, so nothing acts on an event that a crash could lose. sled holds an exclusive lock on
//! the database: one process at a time.
//!
//! sled's recovery silently shortens a damaged log, so the journal does not rest on sled alone:
//! its [`head`] (a hash chain over the records, a digest of the checkpoints, and a seal of its
//! files once closed) is checked on every open, and anything missing or changed is
//! [`JournalError::Corrupt`]. Readers never let sled open the journal they check: they open a
//! private copy, so an audit leaves the files it audits byte for byte as it found them.
//!
//! Everything about the journal lives here:
//! - this module: the sled journal (trees, atomic append + flush, checkpoints, locks, opening
//!   a private copy for readers);
//! - [`codec`]: the binary form of records and checkpoints (keys, envelopes, schema versions)
//!   and the upgrade of older schemas;
//! - [`head`]: the hash chain over the records and the seal of a closed journal;
//! - [`jsonl`]: the JSON Lines form (exports, imports, golden journals);
//! - [`recorder`]: append, then fold: the one way events enter a journal and the state.

pub mod codec;
pub mod head;
pub mod jsonl;
pub mod recorder;

use std::path::{Path, PathBuf};

use crate::machine::event::{SCHEMA_VERSION_OLDEST_READ, schema_version_is_readable};
use crate::machine::{Event, Position, Record, SCHEMA_VERSION, State};
use codec::CodecError;
use head::{Chain, CheckpointDigest, Head, HeadError};

const TREE_EVENTS: &str = "events";
const TREE_CHECKPOINTS: &str = "checkpoints";
const TREE_META: &str = "meta";
const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// Present once the journal keeps a head ([`head`]): from then on a missing head is damage.
const META_HEAD: &[u8] = b"head";

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
    /// A journal opened to be read was asked to change.
    #[error("the journal at {path} was opened to be read; it is never written")]
    ReadOnly {
        /// The database directory.
        path: PathBuf,
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
    sled: Option<Sled>,
    last: Option<Position>,
    chain: Chain,
    checkpoints_digest: CheckpointDigest,
    /// `None` for a journal written before heads (read as found, not checked).
    head: Option<Head>,
    mode: Mode,
}

struct Sled {
    db: sled::Db,
    events: sled::Tree,
    checkpoints: sled::Tree,
}

enum Mode {
    /// This process appends; the head is kept current and the journal is sealed on close.
    Writer,
    /// A private copy of a journal at rest, opened by sled in `scratch` and removed on drop:
    /// sled's recovery rewrites what it opens, so readers never open the original.
    Reader {
        #[allow(dead_code, reason = "held so the copy lives as long as the journal")]
        scratch: PrivateCopy,
    },
}

/// The private copies this process holds, so that a reader stopped by a signal can still
/// remove them: Ctrl-C ends a process without running destructors, and each copy is a whole
/// journal left in the temporary directory.
static PRIVATE_COPIES: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn private_copies() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    PRIVATE_COPIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A reader's copy of a journal, registered while it lives.
struct PrivateCopy(tempfile::TempDir);

impl PrivateCopy {
    fn new(journal: &Path) -> Result<Self, JournalError> {
        let scratch = tempfile::Builder::new()
            .prefix("validator-journal-")
            .tempdir()
            .map_err(|e| storage_io(journal, e))?;
        private_copies().insert(scratch.path().to_owned());
        Ok(Self(scratch))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        private_copies().remove(self.0.path());
    }
}

/// Removes every private copy this process holds; for a signal handler that then exits.
pub fn remove_private_copies() {
    for copy in std::mem::take(&mut *private_copies()) {
        let _ = std::fs::remove_dir_all(copy);
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove this process's private copies before it exits
/// (with 128 + the signal, as the default action would report), for the commands that only
/// read journals. Not for `validator run`, which handles its own signals.
pub fn remove_private_copies_on_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("private-copy-cleanup".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                remove_private_copies();
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
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
    /// Opens the journal at `path` to append to it, creating it if the directory does not
    /// exist or is empty. A sealed journal's files are checked against its seal first, and
    /// every journal's records and checkpoints against its head: a journal that lost records
    /// is corrupt, never opened short.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let fresh = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => !path.exists(),
        };
        let mut head = None;
        if !fresh {
            check_looks_like_sled(path)?;
            head = head::read(path).map_err(|e| corrupt_head(path, &e))?;
            if head.is_none() {
                // From before heads (opened, then given one), or with its head deleted
                // (corrupt): which, is read off a private copy first, since sled rewrites what
                // it opens and a corrupt journal must be left as it was found.
                drop(Self::open_existing(path)?);
            }
            if let Some(found) = &mut head
                && let Some(seal) = found.seal.take()
            {
                // Held while the seal is checked, so no validator starts on it meanwhile.
                let _lock = lock_at_rest(path, true)?;
                head::check_seal(path, &seal).map_err(|e| corrupt_head(path, &e))?;
                // sled rewrites its files as soon as it opens them: the seal no longer holds.
                head::write(path, found).map_err(|e| storage_io(path, e))?;
            }
        }
        Self::open_sled(path, path, fresh, head, Mode::Writer)
    }

    /// Opens an existing journal to read it; never creates one and never writes to it. The
    /// journal (of a stopped validator, or a copy) is checked against its seal and copied to a
    /// private directory under the system's temporary directory, which sled opens; the copy
    /// goes when the journal is dropped.
    pub fn open_existing(path: &Path) -> Result<Self, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                path: path.to_owned(),
            });
        }
        check_looks_like_sled(path)?;
        let scratch = PrivateCopy::new(path)?;
        let copy = scratch.path().join("journal");
        let head = {
            let _lock = lock_at_rest(path, false)?;
            let head = head::read(path).map_err(|e| corrupt_head(path, &e))?;
            if let Some(seal) = head.as_ref().and_then(|h| h.seal.as_ref()) {
                head::check_seal(path, seal).map_err(|e| corrupt_head(path, &e))?;
            }
            copy_dir(path, &copy).map_err(|e| storage_io(path, e))?;
            head
        };
        Self::open_sled(path, &copy, false, head, Mode::Reader { scratch })
    }

    /// Opens sled at `at` (the journal itself, or a reader's copy of the journal at `path`),
    /// then checks its records and checkpoints against `head`. A writer may raise an older
    /// schema version to this build's and gives a journal without a head its first one.
    fn open_sled(
        path: &Path,
        at: &Path,
        fresh: bool,
        head: Option<Head>,
        mode: Mode,
    ) -> Result<Self, JournalError> {
        let writer = matches!(mode, Mode::Writer);
        // sled releases its file lock from a background thread after the last handle drops,
        // so a journal closed a moment ago can still look held: retry briefly before saying so.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new()
                .path(at)
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
                if writer {
                    meta.insert(META_SCHEMA_VERSION, &SCHEMA_VERSION.to_be_bytes())
                        .map_err(storage)?;
                    db.flush().map_err(storage)?;
                }
            }
            None => {
                return Err(JournalError::NotAJournal {
                    path: path.to_owned(),
                    detail: "events without a schema version".into(),
                });
            }
        }
        let headed = meta
            .get(META_HEAD)
            .map_err(|e| classify(path, e))?
            .is_some();
        if headed && head.is_none() {
            return Err(JournalError::Corrupt {
                path: path.to_owned(),
                detail: format!("its head ({}) is missing", head::HEAD_FILE),
            });
        }
        let (chain, checkpoints_digest) = verify(path, &events, &checkpoints, head.as_ref())?;
        let mut journal = Self {
            path: path.to_owned(),
            sled: Some(Sled {
                db,
                events,
                checkpoints,
            }),
            last: chain.last,
            chain,
            checkpoints_digest,
            head,
            mode,
        };
        if writer {
            // A journal from before heads gets its first one here; from now on it must keep
            // one. A head that lagged sled (a crash between flush and rename) catches up.
            journal.write_head()?;
            if !headed {
                meta.insert(META_HEAD, &[1]).map_err(storage)?;
                journal.flush()?;
            }
        }
        Ok(journal)
    }

    /// The head this journal was checked against when opened (for a writer, the one it keeps
    /// current); `None` for a journal written before heads, read without one.
    pub fn head(&self) -> Option<&Head> {
        self.head.as_ref()
    }

    fn sled(&self) -> &Sled {
        // Only `Drop` takes it.
        self.sled.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// Refuses a change to a journal opened to be read: its head is the original's, and
    /// its records are a private copy that goes when it is dropped.
    fn check_writer(&self) -> Result<(), JournalError> {
        match self.mode {
            Mode::Writer => Ok(()),
            Mode::Reader { .. } => Err(JournalError::ReadOnly {
                path: self.path.clone(),
            }),
        }
    }

    fn write_head(&mut self) -> Result<(), JournalError> {
        let head = Head::of(&self.chain, &self.checkpoints_digest);
        head::write(&self.path, &head).map_err(|e| storage_io(&self.path, e))?;
        self.head = Some(head);
        Ok(())
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
        self.check_writer()?;
        let mut batch = sled::Batch::default();
        let mut last = self.last;
        let mut chain = self.chain;
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
            let key = codec::key(position);
            let value = codec::encode_event(&record.event);
            chain.push(position, &key, &value);
            batch.insert(&key, value);
            last = Some(position);
        }
        if records.is_empty() {
            return Ok(());
        }
        self.sled()
            .events
            .apply_batch(batch)
            .map_err(|e| classify(&self.path, e))?;
        self.flush()?;
        // sled holds the records now: a failure to write the head below must not let a later
        // append reuse their positions.
        self.last = last;
        self.chain = chain;
        self.write_head()
    }

    /// Flushes everything written so far to disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.sled()
            .db
            .flush()
            .map_err(|e| classify(&self.path, e))?;
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
        self.sled()
            .events
            .range(codec::key(from)..=end)
            .map(move |entry| {
                let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
                let position = codec::position(&key).map_err(|e| corrupt(&self.path, None, e))?;
                let event = codec::decode_event(&value)
                    .map_err(|e| corrupt(&self.path, Some(position), e))?;
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
    pub fn write_checkpoint(&mut self, state: &State) -> Result<(), JournalError> {
        self.check_writer()?;
        let Some(position) = state.position else {
            return Ok(());
        };
        let key = codec::key(position);
        let value = codec::encode_state(state);
        let hash = CheckpointDigest::hash_of(&key, &value);
        let replaced = self
            .sled()
            .checkpoints
            .insert(key, value)
            .map_err(|e| classify(&self.path, e))?;
        self.flush()?;
        if let Some(old) = replaced {
            self.checkpoints_digest
                .remove(CheckpointDigest::hash_of(&key, &old));
        }
        self.checkpoints_digest.insert(hash);
        self.write_head()
    }

    /// The latest checkpoint whose last folded record is before block `block`: folding from it
    /// reaches block `block` without skipping any of its records.
    pub fn checkpoint_before(&self, block: u64) -> Result<Option<State>, JournalError> {
        let entry = self
            .sled()
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
        self.sled().checkpoints.iter().map(move |entry| {
            let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
            let position = codec::position(&key).map_err(|e| corrupt(&self.path, None, e))?;
            codec::decode_state(&value).map_err(|e| corrupt(&self.path, Some(position), e))
        })
    }

    /// Stores a checkpoint as imported (its position is inside the state).
    pub fn import_checkpoint(&mut self, state: &State) -> Result<(), JournalError> {
        self.write_checkpoint(state)
    }

    /// Reads every event value without decoding: the baseline of the replay benchmark.
    /// Returns the number of records and their total bytes.
    pub fn scan_raw(&self) -> Result<(u64, u64), JournalError> {
        let mut count = 0u64;
        let mut bytes = 0u64;
        for entry in self.sled().events.iter() {
            let (key, value) = entry.map_err(|e| classify(&self.path, e))?;
            count += 1;
            bytes += u64::try_from(key.len() + value.len()).unwrap_or(u64::MAX);
        }
        Ok((count, bytes))
    }
}

impl Drop for Journal {
    /// A writer's journal is sealed once sled has let go of it: the head then lists every file
    /// with its hash, so damage at rest is found before anything opens it again.
    fn drop(&mut self) {
        let Some(sled) = self.sled.take() else {
            return;
        };
        let flushed = sled.db.flush().is_ok();
        drop(sled);
        if !matches!(self.mode, Mode::Writer) || !flushed {
            return;
        }
        let Some(mut head) = self.head.clone() else {
            return;
        };
        // sled closes its files from a background thread; its lock on `db` goes last.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let lock = loop {
            match lock_at_rest(&self.path, true) {
                Ok(lock) => break lock,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                // Left unsealed: the next open checks records against the head alone.
                Err(_) => return,
            }
        };
        if let Ok(files) = head::manifest(&self.path) {
            head.seal = Some(files);
            // Unsealed is still a valid head, so a failure here loses nothing.
            let _ = head::write(&self.path, &head);
        }
        drop(lock);
    }
}

/// Checks the records and checkpoints sled opened against the journal's head, and returns
/// their chain and digest. Records past the head are accepted (sled had flushed them when a
/// crash came before the head's rename); fewer records, or different ones, are damage.
fn verify(
    path: &Path,
    events: &sled::Tree,
    checkpoints: &sled::Tree,
    head: Option<&Head>,
) -> Result<(Chain, CheckpointDigest), JournalError> {
    let mut chain = Chain::new();
    let mut at_head = None;
    for entry in events.iter() {
        let (key, value) = entry.map_err(|e| classify(path, e))?;
        let position = codec::position(&key).map_err(|e| corrupt(path, None, e))?;
        codec::check_envelope(&value).map_err(|e| corrupt(path, Some(position), e))?;
        chain.push(position, &key, &value);
        if head.is_some_and(|h| h.records == chain.records) {
            at_head = Some(chain);
        }
    }
    let mut digest = CheckpointDigest::default();
    let mut hashes = Vec::new();
    for entry in checkpoints.iter() {
        let (key, value) = entry.map_err(|e| classify(path, e))?;
        let hash = CheckpointDigest::hash_of(&key, &value);
        digest.insert(hash);
        hashes.push(hash);
    }
    let Some(head) = head else {
        return Ok((chain, digest));
    };
    let damaged = |detail: String| JournalError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    let at = |p: Option<Position>| {
        p.map_or_else(
            || "nothing".to_owned(),
            |p| format!("block {} seq {}", p.block, p.seq),
        )
    };
    if chain.records < head.records {
        return Err(damaged(format!(
            "it ends at {} after {} records, but its head says {} records up to {}: {} records \
             were lost",
            at(chain.last),
            chain.records,
            head.records,
            at(head.last),
            head.records - chain.records
        )));
    }
    let at_head = if head.records == 0 {
        Chain::new()
    } else {
        at_head.unwrap_or(chain)
    };
    if at_head.last != head.last || at_head.link_hex() != head.chain_sha256 {
        return Err(damaged(format!(
            "its first {} records (up to {}) do not hash to its head (up to {}): a record was \
             changed, lost or added",
            head.records,
            at(at_head.last),
            at(head.last)
        )));
    }
    let expected = CheckpointDigest::from_head(head)
        .ok_or_else(|| damaged("its head's checkpoint digest is unreadable".into()))?;
    let one_past_head = digest.count == expected.count.saturating_add(1)
        && hashes.iter().any(|&hash| {
            let mut without = digest;
            without.remove(hash);
            without == expected
        });
    if digest != expected && !one_past_head {
        return Err(damaged(format!(
            "its {} checkpoints do not hash to its head's ({} checkpoints)",
            digest.count, expected.count
        )));
    }
    Ok((chain, digest))
}

/// Locks the sled database at `path` as sled does (`exclusive`) or to read it at rest, so
/// nothing reads a journal a validator is writing or starts on one being checked. Opening
/// `db` read-only writes nothing.
fn lock_at_rest(path: &Path, exclusive: bool) -> Result<std::fs::File, JournalError> {
    let file = std::fs::File::open(path.join("db")).map_err(|e| storage_io(path, e))?;
    // std's locks are flock(2) on Unix, the ones sled takes through fs2.
    let locked = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match locked {
        Ok(()) => Ok(file),
        Err(_) => Err(JournalError::Locked {
            path: path.to_owned(),
        }),
    }
}

/// Copies the journal directory `from` to `to` (regular files and directories only).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is neither a file nor a directory",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

fn storage_io(path: &Path, error: std::io::Error) -> JournalError {
    JournalError::Storage {
        path: path.to_owned(),
        source: sled::Error::Io(error),
    }
}

fn corrupt_head(path: &Path, error: &HeadError) -> JournalError {
    JournalError::Corrupt {
        path: path.to_owned(),
        detail: error.to_string(),
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
        // A directory with our head in it was a journal: its missing files are damage.
        if path.join(head::HEAD_FILE).is_file() {
            return Err(JournalError::Corrupt {
                path: path.to_owned(),
                detail: format!(
                    "it has a head ({}) but not sled's database files (conf, db)",
                    head::HEAD_FILE
                ),
            });
        }
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
        let mut journal = Journal::open(&path).unwrap();
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
