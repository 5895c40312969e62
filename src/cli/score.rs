//! `validator score`: one scoring step, JSON in, JSON out.

use anyhow::Context;
use validator::score;

use super::{Failure, Outcome, print_json_pretty};

/// `validator score`'s flags.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// The input file, or `-` for stdin.
    #[arg(long, default_value = "-")]
    input: String,
}

/// Reads the input, scores it, prints the result.
pub fn run(args: &ScoreArgs) -> Outcome {
    let bytes = if args.input == "-" {
        validator::bounded::read_at_most(std::io::stdin().lock(), score::INPUT_BYTES_MAX)
    } else {
        // A FIFO or a device would block or never end: only a regular file is read.
        validator::bounded::read_regular(std::path::Path::new(&args.input), score::INPUT_BYTES_MAX)
    }
    .with_context(|| format!("reading {}", what(&args.input)))
    .map_err(Failure::Invalid)?;
    let text = String::from_utf8(bytes)
        .with_context(|| format!("reading {}: not UTF-8", what(&args.input)))
        .map_err(Failure::Invalid)?;
    for key in score::unknown_keys(&text) {
        eprintln!("validator: ignoring unknown input key {key:?}");
    }
    let output = score::score_json(&text).map_err(Failure::invalid)?;
    print_json_pretty(&output)
}

/// What `--input` names, for messages.
fn what(input: &str) -> &str {
    if input == "-" { "stdin" } else { input }
}
