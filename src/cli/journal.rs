//! `validator journal generate`: a synthetic journal for benchmarks and experiments.

use std::path::PathBuf;

use validator::synth::{JournalSpec, generate_journal};

use super::Outcome;

/// `validator journal ...`.
#[derive(Debug, clap::Subcommand)]
pub enum JournalCommand {
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

/// Runs a journal command.
pub fn run(command: JournalCommand) -> Outcome {
    let JournalCommand::Generate {
        db,
        steps,
        uids,
        samples,
        checkpoint_every,
        seed,
    } = command;
    let spec = JournalSpec {
        steps,
        uids_per_competition: uids,
        samples,
        checkpoint_every_steps: checkpoint_every,
        seed,
        ..JournalSpec::default()
    };
    let state = generate_journal(&db, spec)?;
    println!(
        "generated {} steps into {} (last record at {:?})",
        state.step_next,
        db.display(),
        state.position
    );
    Ok(())
}
