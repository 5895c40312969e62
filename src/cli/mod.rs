//! The `validator` command line: the only place clap appears (a tidy test keeps it so).
//!
//! One file per command turns its flags into the library's requests, calls the library and
//! prints. Every failure becomes a [`Failure`], mapped to an exit status in one place:
//! 0 success, 1 failure (the machine, the network, the chain), 2 invalid input, 3 the journal
//! is missing, locked or corrupt.

pub mod chain;
pub mod data;
pub mod edges;
pub mod eval;
pub mod journal;
pub mod leaderboard;
pub mod logging;
pub mod model;
pub mod queue;
pub mod run;
pub mod score;
pub mod settings;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use validator::journal::JournalError;

/// A reproducible validator for a Bittensor fine-tuning subnet.
#[derive(Debug, Parser)]
#[command(name = "validator", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the validator: follow the chain, fetch committed models, evaluate them step by step
    /// and journal everything before acting on it (`--demo`: the embedded offline scenario).
    Run(Box<run::RunArgs>),
    /// Write the leaderboard page and its JSON from a journal at rest (a copy or an export).
    Leaderboard(leaderboard::LeaderboardArgs),
    /// Score one step: JSON in (win rates from losses and commit blocks), JSON out.
    Score(score::ScoreArgs),
    /// Journal tools.
    Journal {
        #[command(subcommand)]
        command: journal::JournalCommand,
    },
    /// Evaluate a model directory on a JSON Lines file of prompt/response pairs (the miner's
    /// local check): each sample's loss, and the mean.
    Eval(eval::EvalArgs),
    /// Model tools: N's directory hash; fetching and verifying a committed model; the cache.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Evaluation data tools.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Chain tools: the metagraph and its commitments, a miner's commit, manual weights.
    Chain {
        #[command(subcommand)]
        command: chain::ChainCommand,
    },
    /// A remote evaluation worker: pulls jobs from the NATS JetStream queue a `validator run
    /// --eval-queue` publishes to, fetches and verifies each model itself, evaluates it and
    /// publishes the losses.
    #[command(name = "eval-worker")]
    RemoteWorker(queue::EvalWorkerArgs),
    /// Renders chat templates for `eval` in an isolated child process (internal).
    #[command(name = "__render-chat-template", hide = true)]
    RenderChatTemplate {
        /// The limits the child sets on itself first (`--address-space-bytes N`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        limits: Vec<String>,
    },
    /// Runs one evaluation job from stdin in this child process (internal).
    #[command(name = "__eval-worker", hide = true)]
    EvalWorker {
        /// The limits the child sets on itself first (`--address-space-bytes N`,
        /// `--cpu-seconds S`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        limits: Vec<String>,
    },
}

/// Why a command failed, by who must act.
#[derive(Debug)]
pub enum Failure {
    /// The input is wrong (exit 2): fix the command, the file, the model.
    Invalid(anyhow::Error),
    /// Something outside the input failed (exit 1): the machine, the network, the chain.
    Failed(anyhow::Error),
    /// The journal is missing, locked, not a journal, or corrupt (exit 3).
    Journal(anyhow::Error),
}

impl Failure {
    /// The input is wrong.
    pub fn invalid(error: impl Into<anyhow::Error>) -> Self {
        Failure::Invalid(error.into())
    }

    /// Something other than the input failed.
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Failure::Failed(error.into())
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Invalid(_) => 2,
            Failure::Journal(_) => 3,
        }
    }

    fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Invalid(error) | Failure::Failed(error) | Failure::Journal(error) => error,
        }
    }
}

impl From<JournalError> for Failure {
    fn from(error: JournalError) -> Self {
        match error {
            JournalError::Locked { .. }
            | JournalError::Missing { .. }
            | JournalError::NotAJournal { .. }
            | JournalError::Corrupt { .. } => Failure::Journal(error.into()),
            JournalError::OutOfOrder { .. }
            | JournalError::ReadOnly { .. }
            | JournalError::Storage { .. } => Failure::Failed(error.into()),
        }
    }
}

/// The result of a command.
pub type Outcome = Result<(), Failure>;

/// Parses the command line (for `run`: with its config file and environment variables
/// underneath), runs the command and maps its result to an exit status.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    let is_run = argv.get(1).is_some_and(|a| a == "run");
    let mut from_file = std::collections::BTreeSet::new();
    if is_run && let Some(run) = command.find_subcommand("run").cloned() {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(settings::ENV_PREFIX))
            .collect();
        match settings::configure_run(run, &argv, &env) {
            Ok((run, file_ids)) => {
                from_file = file_ids;
                command = command.mut_subcommand("run", |_| run);
            }
            Err(why) => {
                // A key or value echoed from the file may hold any byte: escaped.
                eprintln!(
                    "validator: {}",
                    validator::text::printable(&why.to_string())
                );
                return ExitCode::from(2);
            }
        }
    }
    let matches = match command.try_get_matches_from_mut(&argv) {
        Ok(matches) => matches,
        Err(error) => {
            use clap::error::ErrorKind;
            let shown = matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if shown {
                error.exit();
            }
            // The error echoes the argument it refused, which may hold any byte: escaped.
            eprint!(
                "{}",
                validator::text::printable(&error.render().to_string())
            );
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let effective = match (
        command.find_subcommand("run"),
        matches.subcommand_matches("run"),
    ) {
        (Some(run), Some(run_matches)) if is_run => {
            settings::effective(run, run_matches, &from_file)
        }
        _ => Vec::new(),
    };
    dispatch(cli, effective)
}

/// Runs the parsed command and maps its result to an exit status.
pub fn dispatch(cli: Cli, settings: Vec<String>) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(*args, &settings),
        Command::Leaderboard(args) => leaderboard::run(&args),
        Command::Score(args) => score::run(&args),
        Command::Journal { command } => journal::run(command),
        Command::Eval(args) => eval::run(&args),
        Command::Model { command } => model::run(command),
        Command::Data { command } => data::run(command),
        Command::Chain { command } => chain::run(command),
        Command::RemoteWorker(args) => queue::run(&args),
        Command::RenderChatTemplate { limits } => {
            validator::eval::template::serve_render_request(&limits).map_err(Failure::failed)
        }
        Command::EvalWorker { limits } => {
            validator::eval::worker::serve(&limits).map_err(Failure::failed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Errors carry miners' text (template messages, file names): never raw escapes;
            // and a URL's secrets are never printed.
            let message = validator::text::redact_url(&format!("{:#}", failure.error()));
            eprintln!("validator: {}", validator::text::printable(&message));
            ExitCode::from(failure.exit_code())
        }
    }
}

/// The async runtime every networked command runs on (two workers: the chain, the hub and the
/// data sources are I/O-bound).
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// Prints `value` as pretty JSON.
pub fn print_json_pretty(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(Failure::failed)?;
    println!("{text}");
    Ok(())
}
