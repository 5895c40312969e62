//! The hub edge: downloading a committed model at its exact commit from a Hugging Face-compatible
//! hub (hf-hub), verifying it with N's directory hash, caching it per hotkey and commit.
//!
//! Outcomes are sorted as the machine needs them: [`Fetched::Rejected`] is a verdict on the
//! model (journaled as `ModelRejected`, not fetched again until the commitment changes);
//! [`HubError`] means we could not decide (network, timeouts, a private repository) and the
//! fetch is retried later.

pub mod cache;
pub mod files;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hf_hub::repository::{HFRepository, RepoType};
use hf_hub::{HFClient, HFError};
use tokio::io::AsyncWriteExt;

use crate::dirhash::hash_of_file;
use crate::hashing::{hash_of_file_hashes, hash_of_two_strings};
use crate::machine::event::RejectionCode;
use crate::machine::model_id::{HashKind, HashRule, ModelId};
use cache::{PARTIAL_SUFFIX, safe_hotkey, snapshot_dir};

/// How the hub is reached and how much it may cost.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The hub's base URL; `HF_ENDPOINT` or huggingface.co when `None`.
    pub endpoint: Option<String>,
    /// An access token; `HF_TOKEN` when `None`.
    pub token: Option<String>,
    /// The model cache.
    pub cache_dir: PathBuf,
    /// Files downloaded at once.
    pub concurrency: usize,
    /// Longest wait for a response or for the next bytes of one.
    pub request_timeout: Duration,
    /// Most files a repository may list.
    pub max_files: usize,
    /// Download rate limit (bytes per second), if any.
    pub bytes_per_second: Option<u64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

impl HubOptions {
    /// Defaults for a cache directory: 4 files at once, 60 s timeouts, 10,000 files at most.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            endpoint: None,
            token: None,
            cache_dir,
            concurrency: 4,
            request_timeout: Duration::from_secs(60),
            max_files: 10_000,
            bytes_per_second: None,
            progress: false,
        }
    }
}

/// A model that passed: where it is, and which hash matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedModel {
    /// The snapshot directory (only the hashed files are in it).
    pub dir: PathBuf,
    /// Plain or hotkey-salted.
    pub hash_kind: HashKind,
    /// The files the committed hash covers.
    pub files: Vec<String>,
    /// Bytes downloaded by this fetch (0 when it was already cached).
    pub bytes_downloaded: u64,
}

/// The verdict on a committed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// Downloaded and verified.
    Verified(VerifiedModel),
    /// Refused for good (until the commitment changes).
    Rejected {
        /// The class of refusal.
        code: RejectionCode,
        /// A sentence for operators and miners.
        detail: String,
    },
}

/// We could not decide; try again later.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The hub could not be reached, timed out, or refused access for now.
    #[error("the hub is unavailable: {0}")]
    Unavailable(String),
    /// The local cache could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The options are unusable.
    #[error("hub configuration: {0}")]
    Config(String),
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_owned(),
        source,
    }
}

fn rejected(code: RejectionCode, detail: impl Into<String>) -> Fetched {
    Fetched::Rejected {
        code,
        detail: detail.into(),
    }
}

/// How a hub error is classified: a verdict on the model, or "try later".
fn classify(error: HFError) -> Result<Fetched, HubError> {
    match error {
        HFError::RepoNotFound { repo_id, .. } => Ok(rejected(
            RejectionCode::NotFound,
            format!("repository {repo_id} does not exist"),
        )),
        HFError::RevisionNotFound {
            repo_id, revision, ..
        } => Ok(rejected(
            RejectionCode::NotFound,
            format!("revision {revision} does not exist in {repo_id}"),
        )),
        HFError::EntryNotFound { path, repo_id, .. } => Ok(rejected(
            RejectionCode::NotFound,
            format!("{path} is listed but cannot be fetched from {repo_id}"),
        )),
        HFError::Http { context } if context.status.as_u16() == 404 => Ok(rejected(
            RejectionCode::NotFound,
            format!("not found: {}", context.url),
        )),
        other => Err(HubError::Unavailable(other.to_string())),
    }
}

/// A failed file download.
enum FileFailure {
    Verdict(Fetched),
    Retry(HubError),
}

impl From<HubError> for FileFailure {
    fn from(error: HubError) -> Self {
        FileFailure::Retry(error)
    }
}

/// The hub client.
#[derive(Debug, Clone)]
pub struct Hub {
    client: HFClient,
    options: HubOptions,
}

impl Hub {
    /// A client for `options`.
    pub fn new(options: HubOptions) -> Result<Self, HubError> {
        let http = reqwest::Client::builder()
            .connect_timeout(options.request_timeout)
            .read_timeout(options.request_timeout)
            .build()
            .map_err(|e| HubError::Config(e.to_string()))?;
        let mut builder = HFClient::builder()
            .client(http)
            .cache_enabled(false)
            .retry_max_attempts(2);
        if let Some(endpoint) = &options.endpoint {
            builder = builder.endpoint(endpoint.clone());
        }
        let token = options
            .token
            .clone()
            .or_else(|| std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()));
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let client = builder
            .build()
            .map_err(|e| HubError::Config(e.to_string()))?;
        Ok(Self { client, options })
    }

    /// The hub's base URL.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// Where `hotkey`'s `model` is (or will be) cached.
    pub fn snapshot_dir(&self, hotkey: &str, model: &ModelId) -> PathBuf {
        snapshot_dir(&self.options.cache_dir, hotkey, model)
    }

    async fn with_timeout<T>(
        &self,
        what: &str,
        future: impl Future<Output = T>,
    ) -> Result<T, HubError> {
        tokio::time::timeout(self.options.request_timeout, future)
            .await
            .map_err(|_| {
                HubError::Unavailable(format!(
                    "{what} timed out after {} s",
                    self.options.request_timeout.as_secs()
                ))
            })
    }

    /// Lists the model repository at `commit`: file paths and sizes.
    async fn listing(
        &self,
        model: &ModelId,
        commit: &str,
    ) -> Result<Result<Vec<(String, u64)>, Fetched>, HubError> {
        let repo = self
            .client
            .model(model.namespace.clone(), model.name.clone());
        self.listing_of(&repo, commit).await
    }

    /// Lists a repository at `commit`: file paths and sizes.
    async fn listing_of<T: RepoType>(
        &self,
        repo: &HFRepository<T>,
        commit: &str,
    ) -> Result<Result<Vec<(String, u64)>, Fetched>, HubError> {
        let stream = match repo
            .list_tree()
            .revision(commit.to_owned())
            .recursive(true)
            .send()
        {
            Ok(stream) => stream,
            Err(error) => return classify(error).map(Err),
        };
        let mut stream = std::pin::pin!(stream);
        let mut files = Vec::new();
        loop {
            let next = self
                .with_timeout("listing the repository", stream.next())
                .await?;
            match next {
                None => break,
                Some(Ok(hf_hub::repository::RepoTreeEntry::File { path, size, .. })) => {
                    files.push((path, size));
                    if files.len() > self.options.max_files {
                        return Ok(Err(rejected(
                            RejectionCode::MalformedRepo,
                            format!(
                                "the repository lists more than {} files",
                                self.options.max_files
                            ),
                        )));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return classify(error).map(Err),
            }
        }
        Ok(Ok(files))
    }

    /// Downloads `name` of a model repository into `dest`, resuming a partial file.
    async fn download(
        &self,
        model: &ModelId,
        commit: &str,
        name: &str,
        size: u64,
        dest: &Path,
    ) -> Result<u64, FileFailure> {
        let repo = self
            .client
            .model(model.namespace.clone(), model.name.clone());
        self.download_from(&repo, commit, name, size, dest).await
    }

    /// Downloads `name` (`size` bytes, as listed) into `dest`, resuming a partial file.
    async fn download_from<T: RepoType>(
        &self,
        repo: &HFRepository<T>,
        commit: &str,
        name: &str,
        size: u64,
        dest: &Path,
    ) -> Result<u64, FileFailure> {
        let existing = tokio::fs::metadata(dest)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if existing == size && dest.exists() {
            return Ok(0);
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error(parent))?;
        }
        let resume_from = if existing < size { existing } else { 0 };
        let target = if resume_from > 0 {
            dest.with_extension("resume")
        } else {
            dest.to_owned()
        };
        let range = (resume_from > 0).then_some(resume_from..size);
        let request = repo
            .download_file_stream()
            .filename(name.to_owned())
            .revision(commit.to_owned())
            .maybe_range(range);
        let stream = match self
            .with_timeout(&format!("fetching {name}"), request.send())
            .await?
        {
            Ok((_, stream)) => stream,
            Err(error) => {
                return Err(match classify(error) {
                    Ok(verdict) => FileFailure::Verdict(verdict),
                    Err(retry) => FileFailure::Retry(retry),
                });
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(io_error(&target))?;
        let mut received = 0u64;
        let started = Instant::now();
        // A server that ignores the range sends the whole file; either way no more than `size`.
        let limit = size;
        while let Some(chunk) = self
            .with_timeout(&format!("fetching {name}"), stream.next())
            .await?
        {
            let chunk =
                chunk.map_err(|e| HubError::Unavailable(format!("fetching {name}: {e}")))?;
            received = received.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if received > limit {
                let _ = tokio::fs::remove_file(&target).await;
                return Err(FileFailure::Verdict(rejected(
                    RejectionCode::MalformedRepo,
                    format!("{name} is larger than the {size} bytes the hub listed"),
                )));
            }
            file.write_all(&chunk).await.map_err(io_error(&target))?;
            if let Some(rate) = self.options.bytes_per_second.filter(|r| *r > 0) {
                // Sleep until the average rate falls back under the limit.
                let due = Duration::from_millis(received.saturating_mul(1000) / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        file.flush().await.map_err(io_error(&target))?;
        drop(file);
        let expected = size - resume_from;
        if resume_from > 0 {
            if received == expected {
                // The server honoured the range: append the rest.
                let rest = tokio::fs::read(&target).await.map_err(io_error(&target))?;
                let mut whole = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(dest)
                    .await
                    .map_err(io_error(dest))?;
                whole.write_all(&rest).await.map_err(io_error(dest))?;
                whole.flush().await.map_err(io_error(dest))?;
                let _ = tokio::fs::remove_file(&target).await;
                return Ok(received);
            }
            if received == size {
                // The server sent the whole file instead.
                tokio::fs::rename(&target, dest)
                    .await
                    .map_err(io_error(dest))?;
                return Ok(received);
            }
        } else if received == size {
            return Ok(received);
        }
        Err(FileFailure::Retry(HubError::Unavailable(format!(
            "{name}: received {received} of {expected} bytes"
        ))))
    }

    /// Fetches and verifies `hotkey`'s committed `model`, refusing a repository over
    /// `max_repo_bytes` before fetching anything.
    pub async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        max_repo_bytes: u64,
    ) -> Result<Fetched, HubError> {
        if let Err(why) = model.check_evaluable() {
            return Ok(rejected(RejectionCode::MalformedRepo, why.to_string()));
        }
        if !safe_hotkey(hotkey) {
            return Err(HubError::Config(format!(
                "hotkey {hotkey:?} is not an SS58 address"
            )));
        }
        let (Some(commit), Some(committed_hash)) = (model.commit.as_deref(), model.hash.as_deref())
        else {
            return Ok(rejected(RejectionCode::MalformedRepo, "no commit or hash"));
        };
        let final_dir = self.snapshot_dir(hotkey, model);
        if final_dir.is_dir() {
            let files = crate::dirhash::walk_order(&final_dir)
                .map_err(|e| HubError::Io {
                    path: e.path,
                    source: e.source,
                })?
                .iter()
                .filter_map(|p| {
                    p.strip_prefix(&final_dir)
                        .ok()
                        .map(|p| p.display().to_string())
                })
                .collect::<Vec<_>>();
            if let Some(verdict) = self.verify(
                &final_dir,
                &files,
                hotkey,
                committed_hash,
                model.hash_rule,
                0,
            )? {
                return Ok(verdict);
            }
            // The cached copy no longer matches (edited by hand?): fetch it again.
            std::fs::remove_dir_all(&final_dir).map_err(io_error(&final_dir))?;
        }

        let listing = match self.listing(model, commit).await? {
            Ok(listing) => listing,
            Err(verdict) => return Ok(verdict),
        };
        if let Some(why) = listing
            .iter()
            .find_map(|(path, _)| hostile_path_reason(path))
        {
            return Ok(rejected(
                RejectionCode::MalformedRepo,
                format!("the repository holds {why}"),
            ));
        }
        let total: u64 = listing
            .iter()
            .map(|(_, size)| *size)
            .fold(0, u64::saturating_add);
        if total > max_repo_bytes {
            return Ok(rejected(
                RejectionCode::RepoTooLarge,
                format!("the repository holds {total} bytes, over the limit of {max_repo_bytes}"),
            ));
        }
        let sizes: std::collections::BTreeMap<String, u64> = listing.into_iter().collect();
        let names: BTreeSet<String> = sizes.keys().cloned().collect();
        let mut wanted = match files::selection(&names) {
            Ok(wanted) => wanted,
            Err(why) => return Ok(rejected(RejectionCode::MalformedRepo, why)),
        };

        let staging = final_dir.with_file_name(format!("{commit}{PARTIAL_SUFFIX}"));
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(io_error(&staging))?;
        let mut downloaded = 0u64;
        if wanted.iter().any(|n| n == files::WEIGHTS_INDEX) {
            let size = sizes.get(files::WEIGHTS_INDEX).copied().unwrap_or(0);
            let path = staging.join(files::WEIGHTS_INDEX);
            match self
                .download(model, commit, files::WEIGHTS_INDEX, size, &path)
                .await
            {
                Ok(bytes) => downloaded += bytes,
                Err(FileFailure::Verdict(verdict)) => return Ok(self.discard(&staging, verdict)),
                Err(FileFailure::Retry(error)) => return Err(error),
            }
            let index = tokio::fs::read(&path).await.map_err(io_error(&path))?;
            match files::shards_of_index(&index, &names) {
                Ok(shards) => wanted.extend(shards),
                Err(why) => {
                    return Ok(self.discard(&staging, rejected(RejectionCode::MalformedRepo, why)));
                }
            }
        }

        let progress = self.progress_bar(wanted.iter().filter_map(|n| sizes.get(n)).sum());
        let jobs = wanted
            .iter()
            .filter(|name| name.as_str() != files::WEIGHTS_INDEX)
            .map(|name| {
                let size = sizes.get(name).copied().unwrap_or(0);
                let dest = staging.join(name);
                let progress = progress.clone();
                async move {
                    let result = self.download(model, commit, name, size, &dest).await;
                    if let (Ok(_), Some(bar)) = (&result, &progress) {
                        bar.inc(size);
                    }
                    result
                }
            });
        let results: Vec<Result<u64, FileFailure>> = futures::stream::iter(jobs)
            .buffer_unordered(self.options.concurrency.max(1))
            .collect()
            .await;
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        for result in results {
            match result {
                Ok(bytes) => downloaded += bytes,
                Err(FileFailure::Verdict(verdict)) => return Ok(self.discard(&staging, verdict)),
                Err(FileFailure::Retry(error)) => return Err(error),
            }
        }

        match self.verify(
            &staging,
            &wanted,
            hotkey,
            committed_hash,
            model.hash_rule,
            downloaded,
        )? {
            Some(Fetched::Verified(mut verified)) => {
                // Keep exactly the hashed files, so the directory hashes as committed.
                for name in wanted.iter().filter(|n| !verified.files.contains(n)) {
                    let _ = std::fs::remove_file(staging.join(name));
                }
                std::fs::rename(&staging, &final_dir).map_err(io_error(&final_dir))?;
                verified.dir = final_dir;
                Ok(Fetched::Verified(verified))
            }
            Some(other) => Ok(other),
            None => {
                let plain = self.plain_hash(&staging, &wanted)?;
                let detail = format!(
                    "the downloaded files hash to {plain} (salted {}), not the committed {committed_hash}",
                    hash_of_two_strings(&plain, hotkey)
                );
                Ok(self.discard(&staging, rejected(RejectionCode::HashMismatch, detail)))
            }
        }
    }

    fn discard(&self, staging: &Path, verdict: Fetched) -> Fetched {
        let _ = std::fs::remove_dir_all(staging);
        verdict
    }

    fn progress_bar(&self, total: u64) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        (self.options.progress && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                bar.set_style(style);
            }
            bar
        })
    }

    fn file_hashes(
        &self,
        dir: &Path,
        files: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, HubError> {
        files
            .iter()
            .map(|name| {
                let hash = hash_of_file(&dir.join(name)).map_err(|e| HubError::Io {
                    path: e.path,
                    source: e.source,
                })?;
                Ok((name.clone(), hash))
            })
            .collect()
    }

    fn plain_hash(&self, dir: &Path, files: &[String]) -> Result<String, HubError> {
        let hashes = self.file_hashes(dir, files)?;
        let ordered = files::walk_sorted(files);
        Ok(hash_of_file_hashes(
            ordered
                .iter()
                .filter_map(|n| hashes.get(n).map(String::as_str)),
        ))
    }

    /// Checks the committed hash against every candidate file set, plain then salted (as the
    /// rule allows). `None` when nothing matches.
    fn verify(
        &self,
        dir: &Path,
        files: &[String],
        hotkey: &str,
        committed: &str,
        rule: HashRule,
        bytes_downloaded: u64,
    ) -> Result<Option<Fetched>, HubError> {
        let hashes = self.file_hashes(dir, files)?;
        for candidate in files::candidate_sets(files) {
            let ordered = files::walk_sorted(&candidate);
            let plain = hash_of_file_hashes(
                ordered
                    .iter()
                    .filter_map(|n| hashes.get(n).map(String::as_str)),
            );
            let kind = if plain == committed {
                Some(HashKind::Plain)
            } else if hash_of_two_strings(&plain, hotkey) == committed {
                Some(HashKind::Salted)
            } else {
                None
            };
            if let Some(kind) = kind.filter(|k| rule.accepts(*k)) {
                return Ok(Some(Fetched::Verified(VerifiedModel {
                    dir: dir.to_owned(),
                    hash_kind: kind,
                    files: candidate,
                    bytes_downloaded,
                })));
            }
        }
        Ok(None)
    }
}

/// Dataset repositories, for the data edge.
impl Hub {
    fn dataset(
        &self,
        repo_id: &str,
    ) -> Result<HFRepository<hf_hub::repository::RepoTypeDataset>, String> {
        let (owner, name) = repo_id
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| format!("dataset {repo_id:?} is not OWNER/NAME"))?;
        Ok(self.client.dataset(owner.to_owned(), name.to_owned()))
    }

    /// The files of dataset `repo_id` at `revision` with their sizes; `Ok(Err(why))` when the
    /// dataset or revision does not exist or lists a hostile name.
    pub async fn dataset_files(
        &self,
        repo_id: &str,
        revision: &str,
    ) -> Result<Result<Vec<(String, u64)>, String>, HubError> {
        let repo = match self.dataset(repo_id) {
            Ok(repo) => repo,
            Err(why) => return Ok(Err(why)),
        };
        match self.listing_of(&repo, revision).await? {
            Ok(files) => match files.iter().find_map(|(path, _)| hostile_path_reason(path)) {
                Some(why) => Ok(Err(format!("the dataset holds {why}"))),
                None => Ok(Ok(files)),
            },
            Err(Fetched::Rejected { detail, .. }) => Ok(Err(detail)),
            Err(Fetched::Verified(_)) => Ok(Err("unexpected verdict".into())),
        }
    }

    /// Downloads one dataset file (`size` bytes, as listed) to `dest`; `Ok(Err(why))` when the
    /// hub refuses it for good.
    pub async fn dataset_file(
        &self,
        repo_id: &str,
        revision: &str,
        path: &str,
        size: u64,
        dest: &Path,
    ) -> Result<Result<(), String>, HubError> {
        let repo = match self.dataset(repo_id) {
            Ok(repo) => repo,
            Err(why) => return Ok(Err(why)),
        };
        match self.download_from(&repo, revision, path, size, dest).await {
            Ok(_) => Ok(Ok(())),
            Err(FileFailure::Verdict(Fetched::Rejected { detail, .. })) => Ok(Err(detail)),
            Err(FileFailure::Verdict(Fetched::Verified(_))) => Ok(Err("unexpected verdict".into())),
            Err(FileFailure::Retry(error)) => Err(error),
        }
    }
}

fn hostile_path_reason(path: &str) -> Option<String> {
    files::hostile_path(path)
}
