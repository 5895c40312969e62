//! `validator model ...`: N's directory hash for miners; fetching a committed model and keeping
//! the cache tidy for operators.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::anyhow;
use validator::dirhash::hash_of_directory;
use validator::hub::cache::{scan_reporting, sweep};
use validator::hub::{Fetched, Hub, HubOptions};
use validator::journal::recorder::fold_existing;
use validator::machine::MechanismParams;
use validator::machine::model_id::ModelId;
use validator::machine::params::{CompetitionId, ModelIdFormat, N_MAX_REPO_BYTES};

use super::{Failure, Outcome, runtime};

/// `validator model ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// N's hash of a model directory (and the hotkey-salted hash miners commit).
    Hash {
        /// The directory (as transformers downloads it: files, no names hashed).
        dir: PathBuf,
        /// Also print base64(sha256(hash + hotkey)).
        #[arg(long)]
        hotkey: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Download a committed model at its commit and verify its hash (plain or salted).
    Fetch(FetchArgs),
    /// Report the model cache's size; with --sweep, delete unreferenced snapshots.
    Cache {
        /// The model cache.
        #[arg(long, default_value = "model-store")]
        cache: PathBuf,
        /// The journal whose commitments say which models are still needed.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Delete unreferenced snapshots untouched for the grace period.
        #[arg(long)]
        sweep: bool,
        /// Grace period in minutes (N: 120).
        #[arg(long, default_value_t = 120)]
        grace_minutes: u64,
    },
}

/// `validator model fetch`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// NAMESPACE/NAME on the hub (HF_ENDPOINT, HF_TOKEN apply).
    #[arg(long)]
    repo: String,
    /// The 40-hex commit.
    #[arg(long)]
    commit: String,
    /// The committed hash.
    #[arg(long)]
    hash: String,
    /// The miner's hotkey (SS58).
    #[arg(long)]
    hotkey: String,
    /// The model cache.
    #[arg(long, default_value = "model-store")]
    cache: PathBuf,
    /// The competition whose size cap applies.
    #[arg(long, default_value = "l3")]
    competition: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a model command.
pub fn run(command: ModelCommand) -> Outcome {
    match command {
        ModelCommand::Hash { dir, hotkey, json } => print_hash(&dir, hotkey.as_deref(), json),
        ModelCommand::Fetch(args) => fetch(&args),
        ModelCommand::Cache {
            cache,
            db,
            sweep,
            grace_minutes,
        } => cache_report(
            &cache,
            db.as_ref(),
            sweep,
            Duration::from_secs(grace_minutes.saturating_mul(60)),
        ),
    }
}

fn print_hash(dir: &std::path::Path, hotkey: Option<&str>, json: bool) -> Outcome {
    let hash = hash_of_directory(dir, hotkey).map_err(Failure::invalid)?;
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

/// Fetches and verifies one model, printing the verdict; a refusal exits 2.
fn fetch(args: &FetchArgs) -> Outcome {
    let Some((namespace, name)) = args.repo.split_once('/') else {
        return Err(Failure::Invalid(anyhow!(
            "--repo {:?} is not NAMESPACE/NAME",
            args.repo
        )));
    };
    let text = format!(
        "{namespace}:{name}:{}:{}:{}",
        args.commit, args.hash, args.competition
    );
    let model = ModelId::parse(&text, ModelIdFormat::Original).map_err(Failure::invalid)?;
    let repo_bytes_max = MechanismParams::default()
        .competition_by_id(&CompetitionId::new(args.competition.clone()))
        .map_or(N_MAX_REPO_BYTES, |c| c.max_repo_bytes);
    let mut options = HubOptions::new(args.cache.clone());
    options.progress = !args.json;
    let hub = Hub::new(options).map_err(Failure::failed)?;
    let verdict = runtime()?
        .block_on(hub.fetch(&args.hotkey, &model, repo_bytes_max))
        .map_err(Failure::failed)?;
    match verdict {
        Fetched::Verified(verified) => {
            if args.json {
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
            Ok(())
        }
        Fetched::Rejected { code, detail } => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"verified": false, "code": code, "detail": detail})
                );
            } else {
                println!("rejected ({code:?}): {detail}");
            }
            Err(Failure::Invalid(anyhow!("the model was rejected")))
        }
    }
}

/// Reports the cache (and sweeps it when asked).
fn cache_report(
    cache: &std::path::Path,
    db: Option<&PathBuf>,
    sweep_asked: bool,
    grace: Duration,
) -> Outcome {
    let (entries, foreign) =
        scan_reporting(cache).map_err(|e| Failure::Failed(anyhow!("{}: {e}", cache.display())))?;
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    println!(
        "{} snapshots, {total} bytes in {}",
        entries.len(),
        cache.display()
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
    report_foreign(&foreign);
    if !sweep_asked {
        return Ok(());
    }
    let Some(db) = db else {
        return Err(Failure::Failed(anyhow!(
            "--sweep needs --db: the journal says which models are still referenced"
        )));
    };
    let referenced = fold_existing(db)?.referenced_models();
    let report = sweep(cache, &referenced, grace, SystemTime::now())
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", cache.display())))?;
    println!(
        "deleted {} snapshots ({} bytes); {} bytes kept",
        report.deleted.len(),
        report.bytes_freed,
        report.bytes_kept
    );
    report_foreign(&report.foreign);
    Ok(())
}

/// What the cache holds that the validator did not put there: left alone, said.
fn report_foreign(foreign: &[validator::hub::cache::Foreign]) {
    for item in foreign {
        eprintln!(
            "validator: left alone, not followed: {}",
            validator::text::printable(&item.to_string())
        );
    }
}
