//! Reading a file that someone else wrote (a miner's repository, an operator's input) without
//! letting it choose how much memory or time the read takes: only a regular file (a FIFO would
//! block on open, a device such as `/dev/zero` never ends, and both report length 0), checked
//! before it is opened and again on the handle, and read through its limit, never trusting
//! the length the file system reports.

use std::io::Read;
use std::path::Path;

/// Why a bounded read failed.
#[derive(Debug, thiserror::Error)]
pub enum BoundedError {
    /// The file could not be opened or read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Not a regular file (a directory, a FIFO, a device, a socket).
    #[error("not a regular file")]
    NotRegular,
    /// Longer than the limit.
    #[error("over the {max}-byte limit")]
    TooLarge {
        /// The limit.
        max: u64,
    },
}

/// The regular file at `path`, opened for reading: checked before the open (opening a FIFO
/// waits for a writer) and again on the handle (the path may have changed in between).
pub fn open_regular(path: &Path) -> Result<std::fs::File, BoundedError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(BoundedError::NotRegular);
    }
    let file = std::fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(BoundedError::NotRegular);
    }
    Ok(file)
}

/// The bytes of the regular file at `path`, at most `max` of them.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, BoundedError> {
    let file = open_regular(path)?;
    let metadata = file.metadata()?;
    if metadata.len() > max {
        return Err(BoundedError::TooLarge { max });
    }
    read_at_most(file, max)
}

/// All of `reader`, at most `max` bytes of it: one byte more is read so that a longer input is
/// refused, not silently cut.
pub fn read_at_most(reader: impl Read, max: u64) -> Result<Vec<u8>, BoundedError> {
    let mut bytes = Vec::new();
    reader.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > max {
        return Err(BoundedError::TooLarge { max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_their_limit() {
        let dir = std::env::temp_dir().join(format!("bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&file, 4),
            Err(BoundedError::TooLarge { max: 4 })
        ));
        assert!(matches!(
            read_regular(&dir, 100),
            Err(BoundedError::NotRegular)
        ));
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 100),
            Err(BoundedError::NotRegular)
        ));
        assert!(matches!(
            read_regular(&dir.join("missing"), 100),
            Err(BoundedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
