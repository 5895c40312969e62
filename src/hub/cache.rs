//! The model cache on disk: `<cache>/models/<hotkey>/models--<ns>--<name>/snapshots/<commit>`
//! (N's layout), with `<commit>.partial` while a download is under way.
//!
//! The cache is derived data: the journal never points into it, so deleting it by hand only
//! means models are fetched again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

fn newest_and_size(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let mut newest: Option<SystemTime> = None;
    let mut bytes = 0u64;
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let metadata = entry.metadata()?;
            if metadata.is_dir() {
                stack.push(entry.path());
            } else {
                bytes = bytes.saturating_add(metadata.len());
                // N's helper took the minimum here; the newest file is the maximum.
                let modified = metadata.modified()?;
                newest = Some(newest.map_or(modified, |n| n.max(modified)));
            }
        }
    }
    let newest = match newest {
        Some(newest) => newest,
        None => std::fs::metadata(path)?.modified()?,
    };
    Ok((newest, bytes))
}

fn subdirectories(path: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    out.push((
                        entry.file_name().to_string_lossy().into_owned(),
                        entry.path(),
                    ));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

/// Every snapshot in the cache.
pub fn scan(cache: &Path) -> std::io::Result<Vec<CacheEntry>> {
    let mut entries = Vec::new();
    for (hotkey, hotkey_dir) in subdirectories(&cache.join("models"))? {
        for (repo, repo_dir) in subdirectories(&hotkey_dir)? {
            for (name, path) in subdirectories(&repo_dir.join("snapshots"))? {
                let (commit, partial) = match name.strip_suffix(PARTIAL_SUFFIX) {
                    Some(commit) => (commit.to_owned(), true),
                    None => (name, false),
                };
                let (newest_modified, bytes) = newest_and_size(&path)?;
                entries.push(CacheEntry {
                    hotkey: hotkey.clone(),
                    repo: repo.clone(),
                    commit,
                    path,
                    bytes,
                    newest_modified,
                    partial,
                });
            }
        }
    }
    Ok(entries)
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
}

/// Deletes snapshots no current commitment references (by hotkey and commit) once nothing in
/// them has changed for `grace` (N: 120 minutes). Referenced snapshots stay, whatever their age.
pub fn sweep(
    cache: &Path,
    referenced: &BTreeSet<(String, String)>,
    grace: Duration,
    now: SystemTime,
) -> std::io::Result<SweepReport> {
    let mut report = SweepReport::default();
    for entry in scan(cache)? {
        let key = (entry.hotkey.clone(), entry.commit.clone());
        let idle = now
            .duration_since(entry.newest_modified)
            .unwrap_or(Duration::ZERO);
        if referenced.contains(&key) || idle < grace {
            report.bytes_kept = report.bytes_kept.saturating_add(entry.bytes);
            continue;
        }
        std::fs::remove_dir_all(&entry.path)?;
        report.bytes_freed = report.bytes_freed.saturating_add(entry.bytes);
        report.deleted.push(entry.path.clone());
        // Tidy empty parents (snapshots, repo, hotkey) so the cache does not fill with husks.
        let mut parent = entry.path.parent().map(Path::to_owned);
        for _ in 0..3 {
            match parent {
                Some(dir) if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) => {
                    let _ = std::fs::remove_dir(&dir);
                    parent = dir.parent().map(Path::to_owned);
                }
                _ => break,
            }
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
