//! `validator model ...`: N's directory hash for miners, and (feature `hub`) fetching a
//! committed model and keeping the cache tidy for operators.

use std::collections::BTreeSet;
use std::path::Path;

use crate::dirhash::{HashError, hash_of_directory};
use crate::journal::{Journal, JournalError};
use crate::machine::State;
use crate::recorder::fold_from_latest_checkpoint;

/// Prints the plain (and salted) hash of `dir`.
pub fn print_hash(dir: &Path, hotkey: Option<&str>, json: bool) -> Result<(), HashError> {
    let hash = hash_of_directory(dir, hotkey)?;
    if json {
        println!(
            "{}",
            serde_json::json!({"hash": hash.plain, "salted": hash.salted, "hotkey": hotkey})
        );
    } else {
        println!("hash: {}", hash.plain);
        if let (Some(salted), Some(hotkey)) = (&hash.salted, hotkey) {
            println!("salted for {hotkey}: {salted}");
        }
    }
    Ok(())
}

/// The state a journal folds to (from its latest checkpoint).
pub fn journal_state(path: &Path) -> Result<State, JournalError> {
    fold_from_latest_checkpoint(&Journal::open_existing(path)?)
}

/// (hotkey, commit) of every model the state still needs: each hotkey's latest commitment and
/// its last verified model.
pub fn referenced_models(state: &State) -> BTreeSet<(String, String)> {
    let mut referenced = BTreeSet::new();
    for (hotkey, record) in &state.hotkeys {
        let latest = record.commitment.as_ref().and_then(|c| c.model_id.as_ref());
        let tracked = record.model.as_ref().map(|m| &m.model_id);
        for model in latest.into_iter().chain(tracked) {
            if let Some(commit) = &model.commit {
                referenced.insert((hotkey.clone(), commit.clone()));
            }
        }
    }
    referenced
}

#[cfg(feature = "hub")]
pub use hub_commands::{CacheRequest, Failure as FetchFailure, FetchRequest, run_cache, run_fetch};

#[cfg(feature = "hub")]
mod hub_commands {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use crate::hub::cache::{scan, sweep};
    use crate::hub::{Fetched, Hub, HubError, HubOptions};
    use crate::machine::MechanismParams;
    use crate::machine::model_id::ModelId;
    use crate::machine::params::ModelIdFormat;

    /// What `validator model fetch` was asked (its command-line arguments; the doc comments are
    /// the help).
    #[derive(Debug, Clone, clap::Args)]
    pub struct FetchRequest {
        /// NAMESPACE/NAME on the hub (HF_ENDPOINT, HF_TOKEN apply).
        #[arg(long)]
        pub repo: String,
        /// The 40-hex commit.
        #[arg(long)]
        pub commit: String,
        /// The committed hash.
        #[arg(long)]
        pub hash: String,
        /// The miner's hotkey (SS58).
        #[arg(long)]
        pub hotkey: String,
        /// The model cache.
        #[arg(long, default_value = "model-store")]
        pub cache: PathBuf,
        /// The competition whose size cap applies.
        #[arg(long, default_value = "l3")]
        pub competition: String,
        /// Print JSON.
        #[arg(long)]
        pub json: bool,
    }

    /// Why a command failed: the request (exit 2) or the hub / disk (exit 1).
    #[derive(Debug)]
    pub enum Failure {
        /// A bad request.
        Input(String),
        /// Could not decide.
        Hub(HubError),
    }

    fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::Input(format!("cannot start the async runtime: {e}")))
    }

    /// Fetches and verifies one model, printing the verdict; `Ok(false)` when it was refused.
    pub fn run_fetch(request: &FetchRequest) -> Result<bool, Failure> {
        let Some((namespace, name)) = request.repo.split_once('/') else {
            return Err(Failure::Input(format!(
                "--repo {:?} is not NAMESPACE/NAME",
                request.repo
            )));
        };
        let text = format!(
            "{namespace}:{name}:{}:{}:{}",
            request.commit, request.hash, request.competition
        );
        let model = ModelId::parse(&text, ModelIdFormat::Original)
            .map_err(|e| Failure::Input(e.to_string()))?;
        let params = MechanismParams::default();
        let max_repo_bytes = params
            .schedule
            .iter()
            .flat_map(|e| &e.competitions)
            .find(|c| c.id == model.competition)
            .map_or(crate::machine::params::N_MAX_REPO_BYTES, |c| {
                c.max_repo_bytes
            });
        let mut options = HubOptions::new(request.cache.clone());
        options.progress = !request.json;
        let hub = Hub::new(options).map_err(Failure::Hub)?;
        let verdict = runtime()?
            .block_on(hub.fetch(&request.hotkey, &model, max_repo_bytes))
            .map_err(Failure::Hub)?;
        match verdict {
            Fetched::Verified(verified) => {
                if request.json {
                    println!(
                        "{}",
                        serde_json::json!({"verified": true, "dir": verified.dir, "hash_kind": verified.hash_kind,
                            "files": verified.files, "bytes_downloaded": verified.bytes_downloaded})
                    );
                } else {
                    println!(
                        "verified ({:?} hash) in {}: {}",
                        verified.hash_kind,
                        verified.dir.display(),
                        verified.files.join(", ")
                    );
                }
                Ok(true)
            }
            Fetched::Rejected { code, detail } => {
                if request.json {
                    println!(
                        "{}",
                        serde_json::json!({"verified": false, "code": code, "detail": detail})
                    );
                } else {
                    println!("rejected ({code:?}): {detail}");
                }
                Ok(false)
            }
        }
    }

    /// What `validator model cache` was asked.
    #[derive(Debug, Clone)]
    pub struct CacheRequest {
        /// The cache directory.
        pub cache: PathBuf,
        /// A journal whose commitments say which models are still needed.
        pub db: Option<PathBuf>,
        /// Delete unreferenced snapshots past the grace period.
        pub sweep: bool,
        /// N's grace period.
        pub grace: Duration,
    }

    /// Reports the cache (and sweeps it when asked).
    pub fn run_cache(request: &CacheRequest) -> Result<(), String> {
        let entries =
            scan(&request.cache).map_err(|e| format!("{}: {e}", request.cache.display()))?;
        let total: u64 = entries.iter().map(|e| e.bytes).sum();
        println!(
            "{} snapshots, {total} bytes in {}",
            entries.len(),
            request.cache.display()
        );
        for entry in &entries {
            println!(
                "  {:>14} {} {}{}",
                entry.bytes,
                entry.hotkey,
                entry.repo,
                if entry.partial { " (partial)" } else { "" }
            );
        }
        if !request.sweep {
            return Ok(());
        }
        let Some(db) = &request.db else {
            return Err(
                "--sweep needs --db: the journal says which models are still referenced".into(),
            );
        };
        let state = super::journal_state(db).map_err(|e| e.to_string())?;
        let referenced = super::referenced_models(&state);
        let report = sweep(
            &request.cache,
            &referenced,
            request.grace,
            SystemTime::now(),
        )
        .map_err(|e| format!("{}: {e}", request.cache.display()))?;
        println!(
            "deleted {} snapshots ({} bytes); {} bytes kept",
            report.deleted.len(),
            report.bytes_freed,
            report.bytes_kept
        );
        Ok(())
    }
}
