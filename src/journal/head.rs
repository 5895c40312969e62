//! The journal's own integrity, independent of sled.
//!
//! sled's crash recovery treats a damaged log entry as a torn tail: it truncates the log there
//! and opens the surviving prefix as if nothing had happened. A journal that only trusted sled
//! would then replay, and even append to, a shortened history. So the journal keeps a head of
//! its own in `journal.head`, next to sled's files and rewritten after every flushed append:
//!
//! - a running hash chain over the records as stored (each link commits to the previous link,
//!   the record's key and its bytes), with the record count and last position;
//! - a digest of the checkpoints (an XOR of each checkpoint's hash, so it follows inserts in
//!   any order) and their count;
//! - when the journal was closed cleanly, a seal: the size and SHA-256 of every file in the
//!   directory, so a bit flipped anywhere at rest (including bytes sled never reads) is found
//!   before sled opens anything.
//!
//! The file is one JSON line and a second line holding the first line's SHA-256, so a damaged
//! head is itself found. It is written to a temporary file, synced and renamed over the old one
//! after sled's flush: a crash leaves either the old head (the records past it are then
//! accepted, since sled had already flushed them) or the new one, never a head ahead of sled.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::machine::Position;
use crate::machine::wire::{hex_decode, hex_encode};

/// The head's file name inside a journal directory.
pub const HEAD_FILE: &str = "journal.head";
/// Where a new head is written before it is renamed over [`HEAD_FILE`].
pub const HEAD_FILE_NEW: &str = "journal.head.new";
/// The head format this build writes and reads.
pub const HEAD_FORMAT: u32 = 1;
/// A head is a few hundred bytes plus its seal's file list; anything near this is not one.
const HEAD_BYTES_MAX: u64 = 4 << 20;
/// sled's files number a handful; a seal with more is not one we wrote.
const SEALED_FILES_MAX: usize = 10_000;

/// What a journal says about itself: what it holds and, once closed, its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The head's format ([`HEAD_FORMAT`]).
    pub format: u32,
    /// How many records the journal holds.
    pub records: u64,
    /// The last record's position.
    pub last: Option<Position>,
    /// The hash chain's last link, hex.
    pub chain_sha256: String,
    /// How many checkpoints the journal holds.
    pub checkpoints: u64,
    /// The XOR of every checkpoint's SHA-256, hex.
    pub checkpoints_sha256: String,
    /// Every file of a journal closed cleanly; `None` while a writer has it open (or after a
    /// crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<Vec<SealedFile>>,
}

/// One file of a sealed journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedFile {
    /// The path inside the journal directory, `/`-separated.
    pub path: String,
    /// Its length.
    pub bytes: u64,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The running hash chain over a journal's records, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// Records chained so far.
    pub records: u64,
    /// The last record's position.
    pub last: Option<Position>,
    link: [u8; 32],
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl Chain {
    /// The chain of an empty journal.
    pub fn new() -> Self {
        Self {
            records: 0,
            last: None,
            link: [0; 32],
        }
    }

    /// Adds the record stored under `key` with bytes `value`.
    pub fn push(&mut self, position: Position, key: &[u8], value: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.link);
        hasher.update(u64::try_from(key.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(key);
        hasher.update(u64::try_from(value.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(value);
        self.link = hasher.finalize().into();
        self.records = self.records.saturating_add(1);
        self.last = Some(position);
    }

    /// The last link, hex.
    pub fn link_hex(&self) -> String {
        hex_encode(&self.link)
    }
}

/// The order-free digest of a set of checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointDigest {
    /// Checkpoints in the set.
    pub count: u64,
    xor: [u8; 32],
}

impl CheckpointDigest {
    /// One checkpoint's hash.
    pub fn hash_of(key: &[u8], value: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(u64::try_from(key.len()).unwrap_or(u64::MAX).to_be_bytes());
        hasher.update(key);
        hasher.update(value);
        hasher.finalize().into()
    }

    /// Adds a checkpoint.
    pub fn insert(&mut self, hash: [u8; 32]) {
        self.toggle(hash);
        self.count = self.count.saturating_add(1);
    }

    /// Removes a checkpoint (one being replaced).
    pub fn remove(&mut self, hash: [u8; 32]) {
        self.toggle(hash);
        self.count = self.count.saturating_sub(1);
    }

    fn toggle(&mut self, hash: [u8; 32]) {
        for (byte, other) in self.xor.iter_mut().zip(hash) {
            *byte ^= other;
        }
    }

    /// The digest, hex.
    pub fn hex(&self) -> String {
        hex_encode(&self.xor)
    }

    /// The digest as a head states it.
    pub fn from_head(head: &Head) -> Option<Self> {
        let xor = <[u8; 32]>::try_from(hex_decode(&head.checkpoints_sha256)?).ok()?;
        Some(Self {
            count: head.checkpoints,
            xor,
        })
    }
}

impl Head {
    /// The head of a journal holding `chain` and `checkpoints`, unsealed.
    pub fn of(chain: &Chain, checkpoints: &CheckpointDigest) -> Self {
        Self {
            format: HEAD_FORMAT,
            records: chain.records,
            last: chain.last,
            chain_sha256: chain.link_hex(),
            checkpoints: checkpoints.count,
            checkpoints_sha256: checkpoints.hex(),
            seal: None,
        }
    }

    /// One line for people: what an auditor compares with the head a validator publishes.
    pub fn summary(&self) -> String {
        let last = self.last.map_or_else(
            || "none".to_owned(),
            |p| format!("block {} seq {}", p.block, p.seq),
        );
        format!(
            "{} records, last {last}, chain {}",
            self.records, self.chain_sha256
        )
    }
}

/// Why a journal's head or files cannot be trusted. Each is a corrupt journal.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The head file could not be read.
    #[error("cannot read its head ({HEAD_FILE}): {0}")]
    Unreadable(String),
    /// The head file is damaged.
    #[error("its head ({HEAD_FILE}) is damaged: {0}")]
    Damaged(String),
    /// A file differs from the seal written when the journal was closed.
    #[error("{0}")]
    SealBroken(String),
}

/// Reads the head of the journal in `dir`; `None` when it has none.
pub fn read(dir: &Path) -> Result<Option<Head>, HeadError> {
    let path = dir.join(HEAD_FILE);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HeadError::Unreadable(e.to_string())),
        Ok(_) => {}
    }
    let bytes = crate::bounded::read_regular(&path, HEAD_BYTES_MAX)
        .map_err(|e| HeadError::Unreadable(e.to_string()))?;
    parse(&bytes).map(Some)
}

fn parse(bytes: &[u8]) -> Result<Head, HeadError> {
    let damaged = |why: &str| HeadError::Damaged(why.to_owned());
    let text = std::str::from_utf8(bytes).map_err(|_| damaged("not UTF-8"))?;
    let (body, rest) = text
        .split_once('\n')
        .ok_or_else(|| damaged("no checksum line"))?;
    let checksum = rest
        .strip_suffix('\n')
        .ok_or_else(|| damaged("no final newline"))?;
    if hex_encode(&Sha256::digest(body.as_bytes())) != checksum {
        return Err(damaged("its checksum does not match"));
    }
    let head: Head =
        serde_json::from_str(body).map_err(|e| HeadError::Damaged(format!("unreadable: {e}")))?;
    if head.format != HEAD_FORMAT {
        return Err(HeadError::Damaged(format!(
            "format {}; this build reads format {HEAD_FORMAT}",
            head.format
        )));
    }
    if head
        .seal
        .as_ref()
        .is_some_and(|files| files.len() > SEALED_FILES_MAX)
    {
        return Err(damaged("its seal lists too many files"));
    }
    Ok(head)
}

/// The bytes of `head` as its file holds them.
fn render(head: &Head) -> Vec<u8> {
    // Serialising plain strings and integers cannot fail.
    let body = serde_json::to_string(head).unwrap_or_default();
    let checksum = hex_encode(&Sha256::digest(body.as_bytes()));
    format!("{body}\n{checksum}\n").into_bytes()
}

/// Replaces the head of the journal in `dir`: write, sync, rename.
pub fn write(dir: &Path, head: &Head) -> std::io::Result<()> {
    let new = dir.join(HEAD_FILE_NEW);
    {
        let mut file = std::fs::File::create(&new)?;
        file.write_all(&render(head))?;
        file.sync_all()?;
    }
    std::fs::rename(&new, dir.join(HEAD_FILE))
}

/// Every file in the journal directory `dir` but the head's own, with its size and hash, in
/// path order.
pub fn manifest(dir: &Path) -> std::io::Result<Vec<SealedFile>> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<SealedFile>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let relative = relative_name(root, &path);
        if relative == HEAD_FILE || relative == HEAD_FILE_NEW {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, files)?;
        } else if kind.is_file() {
            let (bytes, sha256) = hash_file(&path)?;
            files.push(SealedFile {
                path: relative,
                bytes,
                sha256,
            });
        } else {
            // A link or a device in a journal directory is nothing sled wrote; sealing it
            // would vouch for what it points at.
            files.push(SealedFile {
                path: relative,
                bytes: 0,
                sha256: "not a regular file".into(),
            });
        }
    }
    Ok(())
}

fn relative_name(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    Ok((bytes, hex_encode(&hasher.finalize())))
}

/// Checks the files in `dir` against `seal`: the same files, each of the same size and hash.
pub fn check_seal(dir: &Path, seal: &[SealedFile]) -> Result<(), HeadError> {
    let found = manifest(dir).map_err(|e| HeadError::Unreadable(e.to_string()))?;
    let broken = |why: String| {
        Err(HeadError::SealBroken(format!(
            "{why}, unlike when the journal was last closed"
        )))
    };
    for sealed in seal {
        match found.iter().find(|f| f.path == sealed.path) {
            None => return broken(format!("its file {} is missing", sealed.path)),
            Some(file) if file.bytes != sealed.bytes => {
                return broken(format!(
                    "its file {} is {} bytes long, not {}",
                    sealed.path, file.bytes, sealed.bytes
                ));
            }
            Some(file) if file.sha256 != sealed.sha256 => {
                return broken(format!(
                    "its file {} ({} bytes) has different contents",
                    sealed.path, file.bytes
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found
        .iter()
        .find(|f| !seal.iter().any(|s| s.path == f.path))
    {
        return broken(format!("it holds a file {} that was not there", extra.path));
    }
    Ok(())
}

/// The path of the head file of the journal in `dir`.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(HEAD_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Head {
        let mut chain = Chain::new();
        chain.push(Position { block: 1, seq: 0 }, b"k", b"v");
        let mut digest = CheckpointDigest::default();
        digest.insert(CheckpointDigest::hash_of(b"k", b"state"));
        Head::of(&chain, &digest)
    }

    #[test]
    fn a_head_reads_back_and_a_flipped_bit_is_found() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &head()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(head()));
        let bytes = std::fs::read(path_in(dir.path())).unwrap();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(parse(&flipped).is_err(), "bit {bit} passed");
        }
        assert!(parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse(&[bytes.as_slice(), b"x"].concat()).is_err());
    }

    #[test]
    fn checkpoint_digest_follows_inserts_in_any_order() {
        let (a, b) = (
            CheckpointDigest::hash_of(b"a", b"1"),
            CheckpointDigest::hash_of(b"b", b"2"),
        );
        let mut one = CheckpointDigest::default();
        one.insert(a);
        one.insert(b);
        let mut two = CheckpointDigest::default();
        two.insert(b);
        two.insert(a);
        assert_eq!(one, two);
        two.remove(b);
        assert_ne!(one, two);
        assert_eq!(two.count, 1);
    }

    #[test]
    fn a_seal_finds_changed_missing_and_extra_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"records").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/1"), b"blob").unwrap();
        let seal = manifest(dir.path()).unwrap();
        check_seal(dir.path(), &seal).unwrap();
        std::fs::write(dir.path().join("db"), b"recordz").unwrap();
        let error = check_seal(dir.path(), &seal).unwrap_err().to_string();
        assert!(
            error.contains("db (7 bytes) has different contents"),
            "{error}"
        );
        std::fs::write(dir.path().join("db"), b"records").unwrap();
        std::fs::write(dir.path().join("extra"), b"").unwrap();
        let error = check_seal(dir.path(), &seal).unwrap_err().to_string();
        assert!(error.contains("a file extra that was not there"), "{error}");
        std::fs::remove_file(dir.path().join("extra")).unwrap();
        std::fs::remove_file(dir.path().join("blobs/1")).unwrap();
        let error = check_seal(dir.path(), &seal).unwrap_err().to_string();
        assert!(error.contains("blobs/1 is missing"), "{error}");
    }
}
