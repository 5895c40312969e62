//! The model cache on disk: `<cache>/models/<hotkey>/models--<ns>--<name>/snapshots/<commit>`
//! (N's layout), with `<commit>.partial` while a download is under way.
//!
//! The cache is derived data: the journal never points into it, so deleting it by hand only
//! means models are fetched again.
//!
//! Nothing in it is followed: every directory below the cache's root is reached from a held
//! descriptor of its parent with `O_NOFOLLOW`, removals are `unlinkat` relative to those
//! descriptors, and a link, FIFO or device found inside is left where it is and reported. A
//! link planted in the cache can neither make a sweep delete outside it nor make a download
//! write outside it.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, mkdirat, openat, statat, unlinkat};
use rustix::io::Errno;

use crate::machine::model_id::ModelId;

/// Suffix of a snapshot directory still being downloaded.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// Whether a hotkey can name a directory: SS58 addresses are base58, so letters and digits.
pub fn safe_hotkey(hotkey: &str) -> bool {
    !hotkey.is_empty() && hotkey.len() <= 64 && hotkey.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Where a hotkey's model at its commit lives.
pub fn snapshot_dir(cache: &Path, hotkey: &str, model: &ModelId) -> PathBuf {
    cache
        .join("models")
        .join(hotkey)
        .join(format!("models--{}--{}", model.namespace, model.name))
        .join("snapshots")
        .join(model.commit.as_deref().unwrap_or("None"))
}

/// One snapshot in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// The miner's hotkey.
    pub hotkey: String,
    /// `models--<ns>--<name>`.
    pub repo: String,
    /// The commit (without `.partial`).
    pub commit: String,
    /// The snapshot directory.
    pub path: PathBuf,
    /// Bytes of its files.
    pub bytes: u64,
    /// The newest modification time of any file under it (the directory's when empty).
    pub newest_modified: SystemTime,
    /// A download that never finished.
    pub partial: bool,
}

/// Something in the cache that is not a plain directory or file the validator made there (a
/// link, a FIFO, a socket, a device, a name that is not UTF-8): never followed, never
/// removed, reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: &'static str,
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.kind)
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "something unknown",
    }
}

/// A directory of the cache held open, reached from the cache's root one component at a time
/// without following a link: whatever is done inside it stays inside the cache.
struct Held {
    fd: OwnedFd,
    path: PathBuf,
}

/// One entry of a held directory, as `lstat` sees it.
struct Listed {
    name: std::ffi::OsString,
    kind: FileType,
    bytes: u64,
    modified: SystemTime,
}

impl Held {
    /// The cache's root (which may itself be a link the operator made).
    fn root(path: &Path) -> io::Result<Self> {
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The subdirectory `name`, refused when it is a link or not a directory.
    fn child(&self, name: &OsStr) -> io::Result<Self> {
        let path = self.path.join(name);
        let opened = openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        );
        match opened {
            Ok(fd) => Ok(Self { fd, path }),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is not a plain directory (a link?): the model cache follows no link",
                    path.display()
                ),
            )),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Its entries, `.` and `..` left out, by name.
    fn list(&self) -> io::Result<Vec<Listed>> {
        let mut listed = Vec::new();
        for entry in Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let stat = match statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone since it was listed (a download finishing, another sweep).
                Err(Errno::NOENT) => continue,
                Err(errno) => return Err(errno.into()),
            };
            let seconds = u64::try_from(stat.st_mtime).unwrap_or(0);
            listed.push(Listed {
                name: name.to_owned(),
                kind: FileType::from_raw_mode(stat.st_mode),
                bytes: u64::try_from(stat.st_size).unwrap_or(0),
                modified: SystemTime::UNIX_EPOCH + Duration::from_secs(seconds),
            });
        }
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listed)
    }

    /// Its subdirectories by UTF-8 name; anything else is foreign.
    fn subdirectories(&self, foreign: &mut Vec<Foreign>) -> io::Result<Vec<(String, Self)>> {
        let mut found = Vec::new();
        for entry in self.list()? {
            let path = self.path.join(&entry.name);
            match (entry.kind, entry.name.to_str()) {
                (FileType::Directory, Some(name)) => {
                    found.push((name.to_owned(), self.child(&entry.name)?));
                }
                (FileType::Directory, None) => foreign.push(Foreign {
                    path,
                    kind: "a name that is not UTF-8",
                }),
                (kind, _) => foreign.push(Foreign {
                    path,
                    kind: kind_name(kind),
                }),
            }
        }
        Ok(found)
    }

    /// The newest modification time and the bytes of the files under it; what is neither a
    /// file nor a directory is foreign.
    fn newest_and_size(&self, foreign: &mut Vec<Foreign>) -> io::Result<(SystemTime, u64)> {
        let mut newest: Option<SystemTime> = None;
        let mut bytes = 0u64;
        for entry in self.list()? {
            match entry.kind {
                FileType::Directory => {
                    let (modified, size) = self.child(&entry.name)?.newest_and_size(foreign)?;
                    bytes = bytes.saturating_add(size);
                    newest = Some(newest.map_or(modified, |n| n.max(modified)));
                }
                FileType::RegularFile => {
                    bytes = bytes.saturating_add(entry.bytes);
                    // N's helper took the minimum here; the newest file is the maximum.
                    newest = Some(newest.map_or(entry.modified, |n| n.max(entry.modified)));
                }
                kind => foreign.push(Foreign {
                    path: self.path.join(&entry.name),
                    kind: kind_name(kind),
                }),
            }
        }
        let newest = match newest {
            Some(newest) => newest,
            None => {
                let stat = rustix::fs::fstat(&self.fd)?;
                let seconds = u64::try_from(stat.st_mtime).unwrap_or(0);
                SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
            }
        };
        Ok((newest, bytes))
    }

    /// Removes the subdirectory `name` and every plain file and directory under it, relative
    /// to this held directory: nothing is followed, anything else is left and reported (and
    /// then the directories holding it stay).
    fn remove_tree(&self, name: &OsStr, foreign: &mut Vec<Foreign>) -> io::Result<u64> {
        let dir = self.child(name)?;
        let mut freed = 0u64;
        for entry in dir.list()? {
            match entry.kind {
                FileType::Directory => {
                    freed = freed.saturating_add(dir.remove_tree(&entry.name, foreign)?)
                }
                FileType::RegularFile => {
                    unlinkat(&dir.fd, entry.name.as_os_str(), AtFlags::empty())?;
                    freed = freed.saturating_add(entry.bytes);
                }
                kind => foreign.push(Foreign {
                    path: dir.path.join(&entry.name),
                    kind: kind_name(kind),
                }),
            }
        }
        match unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOTEMPTY | Errno::NOENT) => Ok(freed),
            Err(errno) => Err(errno.into()),
        }
    }
}

/// `path`'s components below `cache`, refused when `path` is not inside it.
fn components_inside<'a>(cache: &Path, path: &'a Path) -> io::Result<Vec<&'a OsStr>> {
    let outside = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not inside the model cache {}",
                path.display(),
                cache.display()
            ),
        )
    };
    let relative = path.strip_prefix(cache).map_err(|_| outside())?;
    relative
        .components()
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(outside()),
        })
        .collect()
}

/// The directory holding `path` (inside `cache`), reached without following a link, and
/// `path`'s last component; `None` when a directory on the way does not exist.
fn parent_inside<'a>(cache: &Path, path: &'a Path) -> io::Result<Option<(Held, &'a OsStr)>> {
    let components = components_inside(cache, path)?;
    let Some((last, parents)) = components.split_last() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the model cache's root itself is never removed",
        ));
    };
    let mut dir = match Held::root(cache) {
        Ok(root) => root,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    for name in parents {
        dir = match dir.child(name) {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
    }
    Ok(Some((dir, last)))
}

/// Removes the directory `path` inside `cache` with everything plain under it, reaching it
/// from the cache's root without following a link at any level: a link on the way is an
/// error, and a link, FIFO or device inside is left and returned, never followed.
pub fn remove_inside(cache: &Path, path: &Path) -> io::Result<(u64, Vec<Foreign>)> {
    let mut foreign = Vec::new();
    let Some((parent, name)) = parent_inside(cache, path)? else {
        return Ok((0, foreign));
    };
    let freed = match statat(&parent.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
            parent.remove_tree(name, &mut foreign)?
        }
        Ok(stat) => {
            foreign.push(Foreign {
                path: path.to_owned(),
                kind: kind_name(FileType::from_raw_mode(stat.st_mode)),
            });
            0
        }
        Err(Errno::NOENT) => 0,
        Err(errno) => return Err(errno.into()),
    };
    Ok((freed, foreign))
}

/// Creates the directory `path` inside `cache` and any missing directory on the way, each
/// made and then opened without following a link: a link on the way is an error, so nothing
/// is ever written outside the cache through one.
pub fn create_inside(cache: &Path, path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(cache)?;
    let mut dir = Held::root(cache)?;
    for name in components_inside(cache, path)? {
        dir = match dir.child(name) {
            Ok(child) => child,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                match mkdirat(&dir.fd, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(errno) => return Err(errno.into()),
                }
                dir.child(name)?
            }
            Err(error) => return Err(error),
        };
    }
    Ok(())
}

/// Whether `path` inside `cache` is a plain directory reached without a link (`false`: it is
/// not there); a link or anything else on the way or at the end is an error.
pub fn plain_directory_inside(cache: &Path, path: &Path) -> io::Result<bool> {
    let Some((parent, name)) = parent_inside(cache, path)? else {
        return Ok(false);
    };
    match parent.child(name) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Every snapshot in the cache, and whatever foreign thing the walk met (never followed).
pub fn scan_reporting(cache: &Path) -> io::Result<(Vec<CacheEntry>, Vec<Foreign>)> {
    let mut entries = Vec::new();
    let mut foreign = Vec::new();
    let root = match Held::root(cache) {
        Ok(root) => root,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((entries, foreign)),
        Err(error) => return Err(error),
    };
    let models = match root.child(OsStr::new("models")) {
        Ok(models) => models,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((entries, foreign)),
        Err(error) if error.kind() == io::ErrorKind::InvalidData => {
            foreign.push(Foreign {
                path: cache.join("models"),
                kind: "not a plain directory",
            });
            return Ok((entries, foreign));
        }
        Err(error) => return Err(error),
    };
    for (hotkey, hotkey_dir) in models.subdirectories(&mut foreign)? {
        for (repo, repo_dir) in hotkey_dir.subdirectories(&mut foreign)? {
            let snapshots = match repo_dir.child(OsStr::new("snapshots")) {
                Ok(snapshots) => snapshots,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    foreign.push(Foreign {
                        path: repo_dir.path.join("snapshots"),
                        kind: "not a plain directory",
                    });
                    continue;
                }
                Err(error) => return Err(error),
            };
            for (name, snapshot) in snapshots.subdirectories(&mut foreign)? {
                let (commit, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
                    Some(commit) => (commit.to_owned(), true),
                    None => (name, false),
                };
                let (newest_modified, bytes) = snapshot.newest_and_size(&mut foreign)?;
                entries.push(CacheEntry {
                    hotkey: hotkey.clone(),
                    repo: repo.clone(),
                    commit,
                    path: snapshot.path,
                    bytes,
                    newest_modified,
                    partial,
                });
            }
        }
    }
    Ok((entries, foreign))
}

/// Every snapshot in the cache (see [`scan_reporting`] for what it refuses to follow).
pub fn scan(cache: &Path) -> io::Result<Vec<CacheEntry>> {
    scan_reporting(cache).map(|(entries, _)| entries)
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Snapshots deleted.
    pub deleted: Vec<PathBuf>,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Bytes left in the cache.
    pub bytes_kept: u64,
    /// What the sweep met that is not a plain directory or file: left, never followed.
    pub foreign: Vec<Foreign>,
}

/// Deletes snapshots no current commitment references (by hotkey and commit) once nothing in
/// them has changed for `grace` (N: 120 minutes). Referenced snapshots stay, whatever their age.
/// Nothing outside the cache is ever touched: every directory is reached from the cache's root
/// without following a link, and what is not a plain directory or file is left and reported.
pub fn sweep(
    cache: &Path,
    referenced: &BTreeSet<(String, String)>,
    grace: Duration,
    now: SystemTime,
) -> io::Result<SweepReport> {
    let (entries, foreign) = scan_reporting(cache)?;
    let mut report = SweepReport {
        foreign,
        ..SweepReport::default()
    };
    for entry in entries {
        let key = (entry.hotkey.clone(), entry.commit.clone());
        let idle = now
            .duration_since(entry.newest_modified)
            .unwrap_or(Duration::ZERO);
        if referenced.contains(&key) || idle < grace {
            report.bytes_kept = report.bytes_kept.saturating_add(entry.bytes);
            continue;
        }
        let (freed, left) = remove_inside(cache, &entry.path)?;
        report.bytes_freed = report.bytes_freed.saturating_add(freed);
        report.foreign.extend(left);
        report.deleted.push(entry.path.clone());
        // Tidy empty parents (snapshots, repo, hotkey) so the cache does not fill with husks.
        let mut parent = entry.path.parent().map(Path::to_owned);
        for _ in 0..3 {
            let Some(dir) = parent else { break };
            let Ok(Some((holder, name))) = parent_inside(cache, &dir) else {
                break;
            };
            if unlinkat(&holder.fd, name, AtFlags::REMOVEDIR).is_err() {
                break;
            }
            parent = dir.parent().map(Path::to_owned);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, bytes: usize, age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; bytes]).unwrap();
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn sweep_keeps_referenced_and_recent_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path();
        let hour = Duration::from_secs(3600);
        let snapshot = |hotkey: &str, commit: &str| {
            cache.join(format!("models/{hotkey}/models--ns--m/snapshots/{commit}"))
        };
        touch(&snapshot("hkA", "c1").join("config.json"), 10, hour * 5);
        touch(&snapshot("hkA", "c2").join("config.json"), 20, hour * 5);
        // Old and new files: the newest decides (N's helper took the oldest).
        touch(&snapshot("hkB", "c3").join("old.bin"), 30, hour * 5);
        touch(
            &snapshot("hkB", "c3").join("new.bin"),
            40,
            Duration::from_secs(60),
        );
        touch(
            &snapshot("hkC", "c4.partial").join("model.safetensors"),
            50,
            hour * 5,
        );
        let referenced: BTreeSet<(String, String)> = [("hkA".to_owned(), "c1".to_owned())].into();
        let report = sweep(cache, &referenced, hour * 2, SystemTime::now()).unwrap();
        let deleted: Vec<String> = report
            .deleted
            .iter()
            .map(|p| p.strip_prefix(cache).unwrap().display().to_string())
            .collect();
        assert_eq!(
            deleted,
            [
                "models/hkA/models--ns--m/snapshots/c2",
                "models/hkC/models--ns--m/snapshots/c4.partial"
            ]
        );
        assert_eq!(report.bytes_freed, 70);
        assert_eq!(report.bytes_kept, 80);
        assert!(
            !cache.join("models/hkC").exists(),
            "empty parents are removed"
        );
        assert!(snapshot("hkB", "c3").exists());
    }

    #[test]
    fn hotkeys_must_be_plain() {
        assert!(safe_hotkey(
            "5F3sa2TJAWMqDhXG6jhV4N8ko9SxwGy8TpaNS1repo5EYjQX"
        ));
        assert!(!safe_hotkey("../etc"));
        assert!(!safe_hotkey(""));
    }
}
