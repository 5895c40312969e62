//! The hub edge: downloading a committed model at its exact commit from a Hugging Face-compatible
//! hub (hf-hub), verifying it with N's directory hash, caching it per hotkey and commit.
//!
//! Outcomes are sorted as the machine needs them: [`Fetched::Rejected`] is a verdict on the
//! model (journaled as `ModelRejected`, not fetched again until the commitment changes);
//! [`HubError`] means we could not decide (network, timeouts, a private repository) and the
//! fetch is retried later. A competition's tokenizer repository is fetched at a pinned commit
//! too ([`tokenizer`]).

pub mod cache;
mod download;
pub mod files;
mod listing;
pub mod local;
pub mod tokenizer;
mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use hf_hub::HFClient;

use crate::hashing::hash_of_two_strings;
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
    /// Free bytes the cache's disk must keep after a download; a model that would leave less
    /// is not fetched (and retried once space is freed).
    pub disk_free_min_bytes: u64,
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
            disk_free_min_bytes: 1 << 30,
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
    /// The cache's disk cannot take the model and keep its reserve.
    #[error(
        "{path}: the disk has {available} bytes free; this model needs {needed} more and \
         {reserve} must stay free"
    )]
    DiskFull {
        /// The cache.
        path: PathBuf,
        /// Bytes free now.
        available: u64,
        /// Bytes the model's files take.
        needed: u64,
        /// The reserve kept free.
        reserve: u64,
    },
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

/// What the committed hash must match.
pub(crate) struct Expected<'a> {
    hotkey: &'a str,
    hash: &'a str,
    rule: HashRule,
}

/// What a fetch will download, from the listing.
pub(crate) struct Plan {
    /// Every listed file's size.
    pub(crate) sizes: BTreeMap<String, u64>,
    /// Every listed file.
    pub(crate) names: BTreeSet<String>,
    /// What evaluation needs (shards are added once the index is read).
    pub(crate) wanted: Vec<String>,
}

impl Plan {
    /// Whether the weights are sharded: the index must be fetched first, it names the shards.
    fn sharded(&self) -> bool {
        self.wanted.iter().any(|n| n == files::WEIGHTS_INDEX)
    }

    /// The listed size of `name`.
    fn size_of(&self, name: &str) -> u64 {
        self.sizes.get(name).copied().unwrap_or(0)
    }

    /// Adds the shards the fetched index in `staging` names, or the verdict on a bad index.
    fn add_shards(&mut self, staging: &Path) -> Result<Option<Fetched>, HubError> {
        let path = staging.join(files::WEIGHTS_INDEX);
        let index = std::fs::read(&path).map_err(io_error(&path))?;
        match files::shards_of_index(&index, &self.names) {
            Ok(shards) => {
                self.wanted.extend(shards);
                Ok(None)
            }
            Err(why) => Ok(Some(rejected(RejectionCode::MalformedRepo, why))),
        }
    }

    /// The files after the index, with their sizes.
    fn rest(&self) -> Vec<(String, u64)> {
        self.wanted
            .iter()
            .filter(|name| name.as_str() != files::WEIGHTS_INDEX)
            .map(|name| (name.clone(), self.size_of(name)))
            .collect()
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

    /// Fetches and verifies `hotkey`'s committed `model`, refusing a repository over
    /// `repo_bytes_max` before fetching anything.
    pub async fn fetch(
        &self,
        hotkey: &str,
        model: &ModelId,
        repo_bytes_max: u64,
    ) -> Result<Fetched, HubError> {
        let target = match Target::of(&self.options.cache_dir, hotkey, model)? {
            Ok(target) => target,
            Err(verdict) => return Ok(verdict),
        };
        if let Some(verdict) = target.verify_cached()? {
            return Ok(verdict);
        }
        let listing = match self.listing(model, &target.commit).await? {
            Ok(listing) => listing,
            Err(verdict) => return Ok(verdict),
        };
        let plan = match self.plan_of(listing, repo_bytes_max)? {
            Ok(plan) => plan,
            Err(verdict) => return Ok(verdict),
        };
        let staging = target.make_staging()?;
        let fetched = self
            .download_all(model, &target.commit, plan, &staging)
            .await?;
        let (wanted, downloaded) = match fetched {
            Ok(done) => done,
            Err(verdict) => return Ok(target.discard(&staging, verdict)),
        };
        target.settle(&staging, &wanted, downloaded)
    }

    fn plan_of(
        &self,
        listing: Vec<(String, u64)>,
        repo_bytes_max: u64,
    ) -> Result<Result<Plan, Fetched>, HubError> {
        plan_of_listing(
            listing,
            repo_bytes_max,
            &self.options.cache_dir,
            self.options.disk_free_min_bytes,
        )
    }

    /// Downloads the plan into `staging`: the shard index first (it names the shards), then
    /// the rest a few at a time. Returns the files fetched and the bytes downloaded.
    async fn download_all(
        &self,
        model: &ModelId,
        commit: &str,
        plan: Plan,
        staging: &Path,
    ) -> Result<Result<(Vec<String>, u64), Fetched>, HubError> {
        let mut plan = plan;
        let mut downloaded = 0u64;
        if plan.sharded() {
            let size = plan.size_of(files::WEIGHTS_INDEX);
            let path = staging.join(files::WEIGHTS_INDEX);
            match self
                .download(model, commit, files::WEIGHTS_INDEX, size, &path)
                .await
            {
                Ok(bytes) => downloaded += bytes,
                Err(FileFailure::Verdict(verdict)) => return Ok(Err(verdict)),
                Err(FileFailure::Retry(error)) => return Err(error),
            }
            if let Some(verdict) = plan.add_shards(staging)? {
                return Ok(Err(verdict));
            }
        }
        let progress = self.progress_bar(plan.wanted.iter().map(|n| plan.size_of(n)).sum());
        let rest = plan.rest();
        // Owned names in the jobs keep the futures free of higher-ranked borrows, so a fetch
        // can run on any runtime thread.
        let jobs = rest.into_iter().map(|(name, size)| {
            let dest = staging.join(&name);
            let progress = progress.clone();
            async move {
                let result = self.download(model, commit, &name, size, &dest).await;
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
                Err(FileFailure::Verdict(verdict)) => return Ok(Err(verdict)),
                Err(FileFailure::Retry(error)) => return Err(error),
            }
        }
        Ok(Ok((plan.wanted, downloaded)))
    }
}

/// What a fetch is for: the commitment's commit and hash, and where its snapshot goes.
pub(crate) struct Target<'a> {
    expected: Expected<'a>,
    /// The commit.
    pub(crate) commit: String,
    /// The model cache's root.
    pub(crate) cache: PathBuf,
    /// The snapshot directory in the cache.
    pub(crate) final_dir: PathBuf,
}

impl<'a> Target<'a> {
    /// The target of `hotkey`'s `model` in `cache`, or the verdict that it cannot be fetched.
    pub(crate) fn of(
        cache: &Path,
        hotkey: &'a str,
        model: &'a ModelId,
    ) -> Result<Result<Self, Fetched>, HubError> {
        if let Err(why) = model.check_evaluable() {
            return Ok(Err(rejected(RejectionCode::MalformedRepo, why.to_string())));
        }
        if !safe_hotkey(hotkey) {
            // The chain (or a recording of it) said so, and it will not change by asking
            // again: a verdict, so nothing waits for it forever.
            return Ok(Err(rejected(
                RejectionCode::MalformedRepo,
                format!(
                    "hotkey {:?} is not an SS58 address and cannot name a cache directory",
                    crate::text::printable(&hotkey.chars().take(64).collect::<String>())
                ),
            )));
        }
        let (Some(commit), Some(hash)) = (model.commit.as_deref(), model.hash.as_deref()) else {
            return Ok(Err(rejected(
                RejectionCode::MalformedRepo,
                "no commit or hash",
            )));
        };
        Ok(Ok(Self {
            expected: Expected {
                hotkey,
                hash,
                rule: model.hash_rule,
            },
            commit: commit.to_owned(),
            cache: cache.to_owned(),
            final_dir: snapshot_dir(cache, hotkey, model),
        }))
    }

    /// Where files are staged until they verify.
    pub(crate) fn staging(&self) -> PathBuf {
        self.final_dir
            .with_file_name(format!("{}{PARTIAL_SUFFIX}", self.commit))
    }

    /// Makes the staging directory, every directory on the way reached without following a
    /// link (a link planted in the cache is refused, not written through).
    pub(crate) fn make_staging(&self) -> Result<PathBuf, HubError> {
        let staging = self.staging();
        cache::create_inside(&self.cache, &staging).map_err(io_error(&staging))?;
        Ok(staging)
    }

    /// Removes the staging directory (inside the cache, following no link) and passes the
    /// verdict on.
    pub(crate) fn discard(&self, staging: &Path, verdict: Fetched) -> Fetched {
        let _ = cache::remove_inside(&self.cache, staging);
        verdict
    }

    /// A snapshot already in the cache: its verdict when it still matches; otherwise it is
    /// deleted (edited by hand?) and `None` says fetch it again.
    pub(crate) fn verify_cached(&self) -> Result<Option<Fetched>, HubError> {
        let final_dir = &self.final_dir;
        // A link anywhere on the way is refused: the cache follows none.
        if !cache::plain_directory_inside(&self.cache, final_dir).map_err(io_error(final_dir))? {
            return Ok(None);
        }
        let files = crate::dirhash::walk_order(final_dir)
            .map_err(|e| HubError::Io {
                path: e.path,
                source: e.source,
            })?
            .iter()
            .filter_map(|p| {
                p.strip_prefix(final_dir)
                    .ok()
                    .map(|p| p.display().to_string())
            })
            .collect::<Vec<_>>();
        if let Some(verdict) = verify::verify(final_dir, &files, &self.expected, 0)? {
            return Ok(Some(verdict));
        }
        cache::remove_inside(&self.cache, final_dir).map_err(io_error(final_dir))?;
        Ok(None)
    }

    /// Verifies the staged files: a match keeps exactly the hashed files and moves them into
    /// place; a mismatch is a recorded rejection naming both hashes.
    pub(crate) fn settle(
        &self,
        staging: &Path,
        wanted: &[String],
        downloaded: u64,
    ) -> Result<Fetched, HubError> {
        match verify::verify(staging, wanted, &self.expected, downloaded)? {
            Some(Fetched::Verified(mut verified)) => {
                for name in wanted.iter().filter(|n| !verified.files.contains(n)) {
                    let _ = std::fs::remove_file(staging.join(name));
                }
                std::fs::rename(staging, &self.final_dir).map_err(io_error(&self.final_dir))?;
                verified.dir.clone_from(&self.final_dir);
                Ok(Fetched::Verified(verified))
            }
            Some(other) => Ok(other),
            None => {
                let plain = verify::plain_hash(staging, wanted)?;
                let detail = format!(
                    "the downloaded files hash to {plain} (salted {}), not the committed {}",
                    hash_of_two_strings(&plain, self.expected.hotkey),
                    self.expected.hash
                );
                Ok(self.discard(staging, rejected(RejectionCode::HashMismatch, detail)))
            }
        }
    }
}

/// Decides what to fetch from a listing: hostile names, the size cap and the disk's room are
/// checked before any byte is fetched.
pub(crate) fn plan_of_listing(
    listing: Vec<(String, u64)>,
    repo_bytes_max: u64,
    cache: &Path,
    disk_free_min_bytes: u64,
) -> Result<Result<Plan, Fetched>, HubError> {
    if let Some(why) = listing
        .iter()
        .find_map(|(path, _)| listing::hostile_path_reason(path))
    {
        return Ok(Err(rejected(
            RejectionCode::MalformedRepo,
            format!("the repository holds {why}"),
        )));
    }
    let total: u64 = listing
        .iter()
        .map(|(_, size)| *size)
        .fold(0, u64::saturating_add);
    if total > repo_bytes_max {
        return Ok(Err(rejected(
            RejectionCode::RepoTooLarge,
            format!("the repository holds {total} bytes, over the limit of {repo_bytes_max}"),
        )));
    }
    check_disk_room(cache, disk_free_min_bytes, total)?;
    let sizes: BTreeMap<String, u64> = listing.into_iter().collect();
    let names: BTreeSet<String> = sizes.keys().cloned().collect();
    match files::selection(&names) {
        Ok(wanted) => Ok(Ok(Plan {
            sizes,
            names,
            wanted,
        })),
        Err(why) => Ok(Err(rejected(RejectionCode::MalformedRepo, why))),
    }
}

/// Refuses to start fetching `needed` bytes that would eat into the disk's reserve.
fn check_disk_room(cache: &Path, reserve: u64, needed: u64) -> Result<(), HubError> {
    std::fs::create_dir_all(cache).map_err(io_error(cache))?;
    let available = fs2::available_space(cache).map_err(io_error(cache))?;
    if available < needed.saturating_add(reserve) {
        return Err(HubError::DiskFull {
            path: cache.to_owned(),
            available,
            needed,
            reserve,
        });
    }
    Ok(())
}
