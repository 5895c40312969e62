//! `validator`: the validator's command line.
//!
//! Exit status: 0 on success, 2 when the input is invalid, 1 for any other failure.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
#[cfg(feature = "chain")]
use validator::chain_cli::{CommitRequest, Endpoint, Wallet};
use validator::synth::{JournalSpec, generate_journal};
use validator::whatif;

/// A reproducible validator for a Bittensor fine-tuning subnet.
#[derive(Debug, Parser)]
#[command(name = "validator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Score one step: JSON in (win rates from losses and commit blocks), JSON out.
    Score {
        /// The input file, or `-` for stdin.
        #[arg(long, default_value = "-")]
        input: String,
    },
    /// Journal tools.
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Evaluate a model directory on a JSON Lines file of prompt/response pairs (the miner's
    /// local check): each sample's loss, and the mean.
    #[cfg(feature = "eval")]
    Eval(validator::eval_cli::EvalRequest),
    /// Model tools: N's directory hash; fetching and verifying a committed model; the cache.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Evaluation data tools.
    #[cfg(feature = "data")]
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Chain tools: the metagraph and its commitments, a miner's commit, manual weights.
    #[cfg(feature = "chain")]
    Chain {
        #[command(subcommand)]
        command: ChainCommand,
    },
    /// Renders chat templates for `eval` in an isolated child process (internal).
    #[cfg(feature = "eval")]
    #[command(name = "__render-chat-template", hide = true)]
    RenderChatTemplate,
}

#[cfg(feature = "chain")]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum IdFormat {
    /// N's `ns:name:commit:hash[:competition]`.
    Original,
    /// The successor's integer competition ids and salted hashes.
    Successor,
}

#[cfg(feature = "chain")]
impl From<IdFormat> for validator::machine::params::ModelIdFormat {
    fn from(format: IdFormat) -> Self {
        match format {
            IdFormat::Original => Self::Original,
            IdFormat::Successor => Self::Successor,
        }
    }
}

#[cfg(feature = "chain")]
#[derive(Debug, Subcommand)]
enum ChainCommand {
    /// The subnet's uids, hotkeys, stake, consensus and each commitment (parsed, or why it
    /// is rejected), at a block.
    Metagraph {
        #[command(flatten)]
        chain: Endpoint,
        /// The subnet.
        #[arg(long)]
        netuid: u16,
        /// The block to read at (default: the latest).
        #[arg(long)]
        block: Option<u64>,
        /// How commitment strings are read.
        #[arg(long, value_enum, default_value = "original")]
        model_id_format: IdFormat,
        /// Also journal what was read into this sled journal.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Commit a model id for the wallet's hotkey (the miner's tool).
    Commit {
        #[command(flatten)]
        chain: Endpoint,
        #[command(flatten)]
        wallet: Wallet,
        #[command(flatten)]
        request: CommitRequest,
        /// How validators read the string (checked before sending).
        #[arg(long, value_enum, default_value = "original")]
        model_id_format: IdFormat,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set weights from a JSON file (the operator's tool): a list by uid or {"uid": weight}.
    SetWeights {
        #[command(flatten)]
        chain: Endpoint,
        #[command(flatten)]
        wallet: Wallet,
        /// The subnet.
        #[arg(long)]
        netuid: u16,
        /// The weights file.
        #[arg(long)]
        weights: PathBuf,
        /// Override the version key (default: this release's).
        #[arg(long)]
        version_key: Option<u64>,
        /// Journal the submission and the chain's answer into this sled journal.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[cfg(feature = "data")]
#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Print the batch a step would evaluate.
    Sample(validator::data_cli::SampleRequest),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
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
    #[cfg(feature = "hub")]
    Fetch(validator::model_cli::FetchRequest),
    /// Report the model cache's size; with --sweep, delete unreferenced snapshots.
    #[cfg(feature = "hub")]
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

#[derive(Debug, Subcommand)]
enum JournalCommand {
    /// Generate a synthetic journal (the replay benchmark's year-scale journal by default).
    Generate {
        /// A new directory for the sled journal.
        #[arg(long)]
        db: PathBuf,
        /// Steps to generate.
        #[arg(long, default_value_t = JournalSpec::default().steps)]
        steps: u64,
        /// Miners per competition.
        #[arg(long, default_value_t = JournalSpec::default().uids_per_competition)]
        uids: u16,
        /// Samples (losses) per miner per step.
        #[arg(long, default_value_t = JournalSpec::default().samples)]
        samples: usize,
        /// Steps between checkpoints.
        #[arg(long, default_value_t = JournalSpec::default().checkpoint_every_steps)]
        checkpoint_every: u64,
        /// Seed of the synthetic losses.
        #[arg(long, default_value_t = JournalSpec::default().seed)]
        seed: u64,
    },
}

enum Failure {
    Invalid(anyhow::Error),
    Other(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Score { input } => score(&input),
        #[cfg(feature = "eval")]
        Command::Eval(request) => {
            validator::eval_cli::run(&request).map_err(|failure| match failure {
                validator::eval_cli::EvalFailure::Input(e) => Failure::Invalid(e.into()),
                validator::eval_cli::EvalFailure::Machine(e) => Failure::Other(e.into()),
            })
        }
        Command::Model { command } => model(command),
        #[cfg(feature = "chain")]
        Command::Chain { command } => chain(command),
        #[cfg(feature = "data")]
        Command::Data {
            command: DataCommand::Sample(request),
        } => data_sample(&request),
        #[cfg(feature = "eval")]
        Command::RenderChatTemplate => {
            validator::eval::template::serve_render_request().map_err(|e| Failure::Other(e.into()))
        }
        Command::Journal {
            command:
                JournalCommand::Generate {
                    db,
                    steps,
                    uids,
                    samples,
                    checkpoint_every,
                    seed,
                },
        } => {
            let spec = JournalSpec {
                steps,
                uids_per_competition: uids,
                samples,
                checkpoint_every_steps: checkpoint_every,
                seed,
                ..JournalSpec::default()
            };
            generate_journal(&db, spec)
                .map(|state| {
                    println!(
                        "generated {} steps into {} (last record at {:?})",
                        state.step_next,
                        db.display(),
                        state.position
                    );
                })
                .map_err(|e| Failure::Other(e.into()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid(error)) => {
            eprintln!("validator: {error:#}");
            ExitCode::from(2)
        }
        Err(Failure::Other(error)) => {
            eprintln!("validator: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn score(input: &str) -> Result<(), Failure> {
    let text = if input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")
            .map_err(Failure::Invalid)?;
        text
    } else {
        std::fs::read_to_string(input)
            .with_context(|| format!("reading {input}"))
            .map_err(Failure::Invalid)?
    };
    for key in whatif::unknown_keys(&text) {
        eprintln!("validator: ignoring unknown input key {key:?}");
    }
    let output = whatif::score_json(&text).map_err(|e| Failure::Invalid(e.into()))?;
    let json = serde_json::to_string_pretty(&output)
        .context("encoding the output")
        .map_err(Failure::Other)?;
    println!("{json}");
    Ok(())
}

fn model(command: ModelCommand) -> Result<(), Failure> {
    match command {
        ModelCommand::Hash { dir, hotkey, json } => {
            validator::model_cli::print_hash(&dir, hotkey.as_deref(), json)
                .map_err(|e| Failure::Invalid(e.into()))
        }
        #[cfg(feature = "hub")]
        ModelCommand::Fetch(request) => match validator::model_cli::run_fetch(&request) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Failure::Invalid(anyhow::anyhow!("the model was rejected"))),
            Err(validator::model_cli::FetchFailure::Input(why)) => {
                Err(Failure::Invalid(anyhow::anyhow!(why)))
            }
            Err(validator::model_cli::FetchFailure::Hub(error)) => {
                Err(Failure::Other(error.into()))
            }
        },
        #[cfg(feature = "hub")]
        ModelCommand::Cache {
            cache,
            db,
            sweep,
            grace_minutes,
        } => {
            let request = validator::model_cli::CacheRequest {
                cache,
                db,
                sweep,
                grace: std::time::Duration::from_secs(grace_minutes.saturating_mul(60)),
            };
            validator::model_cli::run_cache(&request)
                .map_err(|e| Failure::Other(anyhow::anyhow!(e)))
        }
    }
}

#[cfg(feature = "chain")]
fn chain(command: ChainCommand) -> Result<(), Failure> {
    use validator::chain_cli::{self, ChainCliError};
    let fail = |error: ChainCliError| match error {
        ChainCliError::Input(_)
        | ChainCliError::Chain(validator::chain::ChainError::Invalid(_)) => {
            Failure::Invalid(error.into())
        }
        other => Failure::Other(other.into()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    match command {
        ChainCommand::Metagraph {
            chain,
            netuid,
            block,
            model_id_format,
            db,
            json,
        } => {
            let view = runtime
                .block_on(chain_cli::metagraph(
                    &chain,
                    netuid,
                    block,
                    model_id_format.into(),
                    db.as_deref(),
                ))
                .map_err(fail)?;
            if json {
                let text =
                    serde_json::to_string_pretty(&view).map_err(|e| Failure::Other(e.into()))?;
                println!("{text}");
            } else {
                print!("{}", chain_cli::render_metagraph(&view));
            }
            Ok(())
        }
        ChainCommand::Commit {
            chain,
            wallet,
            request,
            model_id_format,
            json,
        } => {
            let netuid = request.netuid;
            let (text, block, hotkey) = runtime
                .block_on(chain_cli::commit(
                    &chain,
                    &wallet,
                    &request,
                    model_id_format.into(),
                ))
                .map_err(fail)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"netuid": netuid, "hotkey": hotkey, "commitment": text, "block": block})
                );
            } else {
                println!("committed {text:?} for {hotkey} on netuid {netuid} in block {block}");
            }
            Ok(())
        }
        ChainCommand::SetWeights {
            chain,
            wallet,
            netuid,
            weights,
            version_key,
            db,
            json,
        } => {
            let text = std::fs::read_to_string(&weights)
                .with_context(|| format!("reading {}", weights.display()))
                .map_err(Failure::Invalid)?;
            let dense = chain_cli::read_weights_file(&text).map_err(fail)?;
            let report = runtime
                .block_on(chain_cli::set_weights(
                    &chain,
                    &wallet,
                    netuid,
                    &dense,
                    version_key,
                    db.as_deref(),
                ))
                .map_err(fail)?;
            if json {
                let text = serde_json::to_string(&report).map_err(|e| Failure::Other(e.into()))?;
                println!("{text}");
            } else {
                println!(
                    "{} included in block {}: {} uids, version key {}",
                    report.method,
                    report.block,
                    report.uids.len(),
                    report.version_key
                );
            }
            Ok(())
        }
    }
}

#[cfg(feature = "data")]
fn data_sample(request: &validator::data_cli::SampleRequest) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    match runtime.block_on(validator::data_cli::sample(request)) {
        Ok(outcome) => {
            print!("{}", validator::data_cli::render(&outcome, request.json));
            Ok(())
        }
        Err(error @ validator::data::DataError::Config(_)) => Err(Failure::Invalid(error.into())),
        Err(error) => Err(Failure::Other(error.into())),
    }
}
