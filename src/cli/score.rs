//! `validator score`: one scoring step, JSON in, JSON out.

use std::io::Read;

use anyhow::Context;
use validator::whatif;

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
    let text = if args.input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")
            .map_err(Failure::Invalid)?;
        text
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("reading {}", args.input))
            .map_err(Failure::Invalid)?
    };
    for key in whatif::unknown_keys(&text) {
        eprintln!("validator: ignoring unknown input key {key:?}");
    }
    let output = whatif::score_json(&text).map_err(Failure::invalid)?;
    print_json_pretty(&output)
}
