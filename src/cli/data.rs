//! `validator data sample`: print the batch a step would evaluate.

use std::path::PathBuf;

use validator::data::spec::{Source, SourceOptions, SourceSpec};
use validator::data::{BatchOutcome, BatchRequest, DataError, DataSource, Seed};

use super::{Failure, Outcome, runtime};

/// `validator data ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Print the batch a step would evaluate.
    Sample(SampleArgs),
}

/// `validator data sample`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct SampleArgs {
    /// local:PATH, wandb[:ENTITY/PROJECT] (N's Cortex runs) or hf:OWNER/NAME@REVISION[/PREFIX].
    #[arg(long)]
    source: SourceSpec,
    /// The block hash whose seed picks runs, files and rows (the successor's formula).
    #[arg(long, conflicts_with = "seed")]
    block_hash: Option<String>,
    /// An unsynchronised seed, to reproduce a batch (a fresh one when neither is given).
    #[arg(long)]
    seed: Option<u64>,
    /// The step number.
    #[arg(long, default_value_t = 0)]
    step: u64,
    /// The most samples (N: 400).
    #[arg(long, default_value_t = validator::data::DEFAULT_MAX_SAMPLES)]
    max_samples: usize,
    /// The prompt's field (local and hf sources).
    #[arg(long, default_value = "prompt")]
    prompt_field: String,
    /// The response's field (local and hf sources).
    #[arg(long, default_value = "response")]
    response_field: String,
    /// Apply N's unwanted-phrase filter to local and hf sources (wandb always does).
    #[arg(long)]
    phrase_filter: bool,
    /// The wandb API.
    #[arg(long, default_value = "https://api.wandb.ai")]
    wandb_endpoint: String,
    /// Where hf dataset files are cached.
    #[arg(long, default_value = "data-cache")]
    cache: PathBuf,
    /// Print the batch event and the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs a data command.
pub fn run(command: DataCommand) -> Outcome {
    let DataCommand::Sample(args) = command;
    let seed = match (&args.block_hash, args.seed) {
        (Some(hash), _) => Seed::from_block_hash(hash),
        (None, Some(seed)) => Seed::Unsynchronized(seed),
        (None, None) => Seed::unsynchronized(),
    };
    let request = BatchRequest {
        step: args.step,
        seed,
        max_samples: args.max_samples,
    };
    let options = SourceOptions {
        prompt_field: args.prompt_field.clone(),
        response_field: args.response_field.clone(),
        phrase_filter: args.phrase_filter,
        wandb_endpoint: args.wandb_endpoint.clone(),
        cache_dir: args.cache.clone(),
    };
    let fail = |error: DataError| match error {
        DataError::Config(_) => Failure::invalid(error),
        DataError::Unavailable(_) => Failure::failed(error),
    };
    let source = Source::new(&args.source, &options).map_err(fail)?;
    let outcome = runtime()?.block_on(source.fetch(&request)).map_err(fail)?;
    if args.json {
        println!("{}", outcome.to_json());
    } else {
        print!("{}", summary(&outcome));
    }
    Ok(())
}

fn summary(outcome: &BatchOutcome) -> String {
    let batch = &outcome.batch;
    let mut text = format!(
        "source {} · seed {} · step {} · {} samples (read {}, skipped {:?})\n",
        batch.provenance.source,
        batch.provenance.seed,
        batch.step,
        batch.samples.len(),
        outcome.report.rows_seen,
        outcome.report.skipped
    );
    for (index, sample) in batch.samples.iter().enumerate() {
        let cut = |s: &str| s.chars().take(70).collect::<String>().replace('\n', " ");
        text.push_str(&format!(
            "{index:>4} [{}] {} => {}\n",
            sample.origin,
            cut(sample.prompt),
            cut(sample.response)
        ));
    }
    text
}
