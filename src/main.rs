//! `validator`: the validator's command line.
//!
//! Exit status: 0 on success, 2 when the input is invalid, 1 for any other failure.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    Eval {
        /// The model directory (config.json, safetensors, tokenizer files).
        #[arg(long)]
        model: PathBuf,
        /// One {"prompt": ..., "response": ...} per line.
        #[arg(long)]
        data: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: validator::eval::runtime::Device,
        /// Truncation length in tokens.
        #[arg(long, default_value_t = validator::eval::DEFAULT_MAX_SEQ_LEN)]
        max_seq_len: usize,
        /// A fixed tokenizer directory (the competition's) instead of the model's own.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print {"losses": [...], "mean": x, ...} (null for an infinite loss).
        #[arg(long)]
        json: bool,
        /// ONNX Runtime CPU threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// The date chat templates see through strftime_now, YYYY-MM-DD (default: today, UTC).
        #[arg(long, value_parser = validator::eval_cli::parse_date)]
        template_date: Option<validator::eval::template::CivilDate>,
        /// The competition whose parameter limit to report (default: by architecture).
        #[arg(long)]
        competition: Option<String>,
    },
    /// Renders chat templates for `eval` in an isolated child process (internal).
    #[cfg(feature = "eval")]
    #[command(name = "__render-chat-template", hide = true)]
    RenderChatTemplate,
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
        Command::Eval {
            model,
            data,
            device,
            max_seq_len,
            tokenizer,
            json,
            threads,
            template_date,
            competition,
        } => {
            let request = validator::eval_cli::EvalRequest {
                model,
                data,
                device,
                max_seq_len,
                tokenizer,
                json,
                threads,
                template_date,
                competition,
            };
            validator::eval_cli::run(&request).map_err(|failure| match failure {
                validator::eval_cli::EvalFailure::Input(e) => Failure::Invalid(e.into()),
                validator::eval_cli::EvalFailure::Machine(e) => Failure::Other(e.into()),
            })
        }
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
