//! A model store on disk (`--hub local:DIR`): `DIR/<namespace>/<name>/<commit>/` holds a
//! repository's files at that commit. It is treated exactly like the Hugging Face path: the
//! same size cap over every file, the same selection of what evaluation needs, the same
//! refusal of hostile names (and of links and special files, which a hub cannot serve), the
//! same hash verification (plain or salted) and the same cache layout, so a verified model is
//! found where the evaluator looks for it.

use std::path::{Path, PathBuf};

use super::{
    Fetched, HubError, Plan, Target, files, io_error, plan_of_listing, rejected, snapshot_dir,
};
use crate::machine::event::RejectionCode;
use crate::machine::model_id::ModelId;

/// A model store on disk.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// `DIR`: repositories as `<namespace>/<name>/<commit>/`.
    pub root: PathBuf,
    /// The model cache verified models are copied into.
    pub cache_dir: PathBuf,
    /// Most files a repository may hold.
    pub files_max: usize,
    /// Free bytes the cache's disk must keep after a copy.
    pub disk_free_min_bytes: u64,
}

impl LocalStore {
    /// A store over `root`, caching into `cache_dir`, with the hub's limits.
    pub fn new(root: PathBuf, cache_dir: PathBuf) -> Self {
        Self {
            root,
            cache_dir,
            files_max: 10_000,
            disk_free_min_bytes: 1 << 30,
        }
    }

    /// Where `hotkey`'s `model` is cached once verified.
    pub fn snapshot_dir(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        snapshot_dir(&self.cache_dir, hotkey, model)
    }

    /// Copies and verifies `hotkey`'s committed `model`, refusing a repository over
    /// `repo_bytes_max` before copying anything.
    pub fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> Result<Fetched, HubError> {
        let target = match Target::of(&self.cache_dir, hotkey, model)? {
            Ok(target) => target,
            Err(verdict) => return Ok(verdict),
        };
        if let Some(verdict) = target.verify_cached()? {
            return Ok(verdict);
        }
        let source = match self.source_dir(model, &target.commit) {
            Ok(source) => source,
            Err(verdict) => return Ok(verdict),
        };
        let listing = match list(&source, self.files_max)? {
            Ok(listing) => listing,
            Err(verdict) => return Ok(verdict),
        };
        let plan = match plan_of_listing(
            listing,
            repo_bytes_max,
            &self.cache_dir,
            self.disk_free_min_bytes,
        )? {
            Ok(plan) => plan,
            Err(verdict) => return Ok(verdict),
        };
        let staging = target.make_staging()?;
        match copy_plan(&source, plan, &staging)? {
            Ok((wanted, copied)) => target.settle(&staging, &wanted, copied),
            Err(verdict) => Ok(target.discard(&staging, verdict)),
        }
    }

    /// `DIR/<namespace>/<name>/<commit>`, or why the store has no such repository or revision.
    fn source_dir(&self, model: &ModelId, commit: &str) -> Result<PathBuf, Fetched> {
        for part in [&model.namespace, &model.name] {
            // The id is checked as a hub id already; these can never name a parent here.
            if part.is_empty() || part == "." || part == ".." || part.contains(['/', '\\']) {
                return Err(rejected(
                    RejectionCode::MalformedRepo,
                    format!("{part:?} cannot name a directory"),
                ));
            }
        }
        let repo_id = format!("{}/{}", model.namespace, model.name);
        // Every level is a plain directory of the store: a link at the namespace, the name or
        // the commit would lead out of it, and a hub serves no links.
        let mut source = self.root.clone();
        for (part, missing) in [
            (
                model.namespace.as_str(),
                format!("repository {repo_id} does not exist"),
            ),
            (
                model.name.as_str(),
                format!("repository {repo_id} does not exist"),
            ),
            (
                commit,
                format!("revision {commit} does not exist in {repo_id}"),
            ),
        ] {
            source.push(part);
            match std::fs::symlink_metadata(&source) {
                Ok(metadata) if metadata.file_type().is_symlink() => {
                    return Err(rejected(
                        RejectionCode::MalformedRepo,
                        format!(
                            "{} in the local store is a link, which the store refuses",
                            source.strip_prefix(&self.root).unwrap_or(&source).display()
                        ),
                    ));
                }
                Ok(metadata) if metadata.is_dir() => {}
                _ => return Err(rejected(RejectionCode::NotFound, missing)),
            }
        }
        Ok(source)
    }
}

/// Every regular file under `source` with its size, as `/`-separated relative paths; a link
/// or a special file is a verdict (a hub serves neither).
fn list(source: &Path, files_max: usize) -> Result<Result<Vec<(String, u64)>, Fetched>, HubError> {
    let mut listing = Vec::new();
    let mut stack = vec![source.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(io_error(&dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_error(&path))?;
            let Some(relative) = path
                .strip_prefix(source)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_owned)
            else {
                return Ok(Err(rejected(
                    RejectionCode::MalformedRepo,
                    "the repository holds a file name that is not UTF-8",
                )));
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let size = entry.metadata().map_err(io_error(&path))?.len();
                listing.push((relative, size));
            } else {
                return Ok(Err(rejected(
                    RejectionCode::MalformedRepo,
                    format!("the repository holds {relative:?}, which is not a regular file"),
                )));
            }
            if listing.len() > files_max {
                return Ok(Err(rejected(
                    RejectionCode::MalformedRepo,
                    format!("the repository lists more than {files_max} files"),
                )));
            }
        }
    }
    listing.sort();
    Ok(Ok(listing))
}

/// Copies one listed file, refusing one that is no longer the size it was listed at.
fn copy_file(
    source: &Path,
    staging: &Path,
    name: &str,
    size: u64,
) -> Result<Result<u64, Fetched>, HubError> {
    let from = source.join(name);
    let to = staging.join(name);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let copied = std::fs::copy(&from, &to).map_err(io_error(&from))?;
    if copied != size {
        return Ok(Err(rejected(
            RejectionCode::MalformedRepo,
            format!("{name} is {copied} bytes, not the {size} it was listed at"),
        )));
    }
    Ok(Ok(copied))
}

/// Copies the plan into `staging`, the shard index first (it names the shards).
fn copy_plan(
    source: &Path,
    plan: Plan,
    staging: &Path,
) -> Result<Result<(Vec<String>, u64), Fetched>, HubError> {
    let mut plan = plan;
    let mut copied = 0u64;
    if plan.sharded() {
        let size = plan.size_of(files::WEIGHTS_INDEX);
        match copy_file(source, staging, files::WEIGHTS_INDEX, size)? {
            Ok(bytes) => copied += bytes,
            Err(verdict) => return Ok(Err(verdict)),
        }
        if let Some(verdict) = plan.add_shards(staging)? {
            return Ok(Err(verdict));
        }
    }
    for (name, size) in plan.rest() {
        match copy_file(source, staging, &name, size)? {
            Ok(bytes) => copied += bytes,
            Err(verdict) => return Ok(Err(verdict)),
        }
    }
    Ok(Ok((plan.wanted, copied)))
}
