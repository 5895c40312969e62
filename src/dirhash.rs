//! N's directory hash, over a real directory (`validator model hash`) or a list of files.
//!
//! N walks the directory top-down as Python's `os.walk`: in each directory the files sorted by
//! name come first, then each sub-directory sorted by name, depth first. It hashes each file's
//! content (`base64(sha256(bytes))`), feeds the ASCII of those hashes into one SHA-256, and
//! base64-encodes the result. Names are not hashed. Like `os.walk(followlinks=False)`, a
//! symbolic link to a file is hashed through the link and a link to a directory is not
//! entered.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::hashing::{hash_of_file_hashes, hash_of_two_strings};

/// A hash that could not be computed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct HashError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// `base64(sha256(content))` of a file, streamed.
pub fn hash_of_file(path: &Path) -> Result<String, HashError> {
    let error = |source| HashError {
        path: path.to_owned(),
        source,
    };
    // A FIFO would block the open and a device (a link to /dev/zero) never end: only a
    // regular file is hashed, where N would hang.
    let mut file = crate::bounded::open_regular(path).map_err(|e| match e {
        crate::bounded::BoundedError::Io(source) => error(source),
        other => error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            other.to_string(),
        )),
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(error)?;
        if read == 0 {
            break;
        }
        hasher.update(buffer.get(..read).unwrap_or(&[]));
    }
    Ok(STANDARD.encode(hasher.finalize()))
}

/// The files of `dir` in N's walk order.
pub fn walk_order(dir: &Path) -> Result<Vec<PathBuf>, HashError> {
    let error = |path: &Path| {
        let path = path.to_owned();
        move |source| HashError { path, source }
    };
    let mut files = Vec::new();
    let mut directories = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(error(dir))? {
        let entry = entry.map_err(error(dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(error(&path))?;
        // os.walk classifies by is_dir(), which follows links: a link to a directory is a
        // directory (listed, not entered); anything else, a dangling link included, is a file.
        let is_dir = if file_type.is_symlink() {
            std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
        } else {
            file_type.is_dir()
        };
        let name = entry.file_name();
        if is_dir {
            directories.push((name, path, file_type.is_symlink()));
        } else {
            files.push((name, path));
        }
    }
    // Python sorts str by code point, which is the byte order of their UTF-8.
    files.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    directories.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    let mut ordered: Vec<PathBuf> = files.into_iter().map(|(_, path)| path).collect();
    for (_, path, is_link) in directories {
        if !is_link {
            ordered.extend(walk_order(&path)?);
        }
    }
    Ok(ordered)
}

/// The plain and hotkey-salted hashes of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryHash {
    /// N's `get_hash_of_directory`.
    pub plain: String,
    /// `get_hash_of_two_strings(plain, hotkey)`, when a hotkey was given.
    pub salted: Option<String>,
}

/// The files a tokenizer is read from, in the order [`hash_of_tokenizer_files`] lists them.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// A digest of the tokenizer files in `dir`: the hash of the lines `NAME=HASH`, one per file
/// of [`TOKENIZER_FILES`] in order, `HASH` being [`hash_of_file`]'s or `-` where the file is
/// missing or unreadable. It reads bytes and parses nothing; a tokenizer's other files (a
/// model's weights beside it) do not count.
pub fn hash_of_tokenizer_files(dir: &Path) -> String {
    let lines: Vec<String> = TOKENIZER_FILES
        .iter()
        .map(|name| {
            let hash = hash_of_file(&dir.join(name)).unwrap_or_else(|_| "-".to_owned());
            format!("{name}={hash}")
        })
        .collect();
    crate::hashing::hash_of_bytes(lines.join("\n").as_bytes())
}

/// N's `get_hash_of_directory(dir)`, and the salted hash for `hotkey`.
pub fn hash_of_directory(dir: &Path, hotkey: Option<&str>) -> Result<DirectoryHash, HashError> {
    let hashes = walk_order(dir)?
        .iter()
        .map(|path| hash_of_file(path))
        .collect::<Result<Vec<_>, _>>()?;
    let plain = hash_of_file_hashes(hashes.iter().map(String::as_str));
    let salted = hotkey.map(|hotkey| hash_of_two_strings(&plain, hotkey));
    Ok(DirectoryHash { plain, salted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::hash_of_bytes;

    #[test]
    fn files_come_before_subdirectories_and_names_are_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/inner")).unwrap();
        std::fs::create_dir_all(root.join("b")).unwrap();
        std::fs::write(root.join("z.txt"), "z").unwrap();
        std::fs::write(root.join("B.txt"), "B").unwrap();
        std::fs::write(root.join("a/inner/x"), "x").unwrap();
        std::fs::write(root.join("a/y"), "y").unwrap();
        std::fs::write(root.join("b/empty"), "").unwrap();
        let order: Vec<String> = walk_order(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(order, ["B.txt", "z.txt", "a/y", "a/inner/x", "b/empty"]);
        let expected = hash_of_file_hashes(
            ["B", "z", "y", "x", ""]
                .map(|c| hash_of_bytes(c.as_bytes()))
                .iter()
                .map(String::as_str),
        );
        let hash = hash_of_directory(root, Some("5Hotkey")).unwrap();
        assert_eq!(hash.plain, expected);
        assert_eq!(hash.salted, Some(hash_of_two_strings(&expected, "5Hotkey")));
        // Renaming a file (keeping the order) does not change the hash.
        std::fs::rename(root.join("z.txt"), root.join("zz.txt")).unwrap();
        assert_eq!(hash_of_directory(root, None).unwrap().plain, expected);
    }

    #[test]
    fn the_reference_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "test text.").unwrap();
        assert_eq!(
            hash_of_file(&dir.path().join("f")).unwrap(),
            "tXNDvHVzqYIRiUx0rvK+M5+Lu4OLzhfPJH+gf7HvCeA="
        );
    }

    #[test]
    fn linked_directories_are_listed_but_not_entered() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/f"), "f").unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("real/f"), root.join("file-link")).unwrap();
        let order: Vec<String> = walk_order(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(order, ["file-link", "real/f"]);
    }

    /// Postmortem (hostile-input round): `validator model hash` of a directory holding a FIFO
    /// blocked forever, and one holding a link to /dev/zero read without end.
    #[test]
    fn only_regular_files_are_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a"), "a").unwrap();
        std::os::unix::fs::symlink("/dev/zero", root.join("zero")).unwrap();
        let error = hash_of_directory(root, None).unwrap_err().to_string();
        assert!(
            error.contains("zero") && error.contains("not a regular file"),
            "{error}"
        );
        std::fs::remove_file(root.join("zero")).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(root.join("fifo"))
                .status()
                .unwrap()
                .success()
        );
        let error = hash_of_directory(root, None).unwrap_err().to_string();
        assert!(
            error.contains("fifo") && error.contains("not a regular file"),
            "{error}"
        );
    }
}
