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

/// Reads `reader` through [`whatif::INPUT_BYTES_MAX`].
fn read_bounded(reader: impl Read, what: &str) -> Result<String, Failure> {
    let mut text = String::new();
    reader
        .take(whatif::INPUT_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what}"))
        .map_err(Failure::Invalid)?;
    if u64::try_from(text.len()).unwrap_or(u64::MAX) > whatif::INPUT_BYTES_MAX {
        return Err(Failure::Invalid(anyhow::anyhow!(
            "{what} is over {} bytes",
            whatif::INPUT_BYTES_MAX
        )));
    }
    Ok(text)
}

/// Reads the input, scores it, prints the result.
pub fn run(args: &ScoreArgs) -> Outcome {
    let text = if args.input == "-" {
        read_bounded(std::io::stdin().lock(), "stdin")?
    } else {
        // A FIFO or a device would block or never end: only a regular file is read.
        let bytes = validator::bounded::read_regular(
            std::path::Path::new(&args.input),
            whatif::INPUT_BYTES_MAX,
        )
        .with_context(|| format!("reading {}", args.input))
        .map_err(Failure::Invalid)?;
        String::from_utf8(bytes)
            .with_context(|| format!("reading {}: not UTF-8", args.input))
            .map_err(Failure::Invalid)?
    };
    for key in whatif::unknown_keys(&text) {
        eprintln!("validator: ignoring unknown input key {key:?}");
    }
    let output = whatif::score_json(&text).map_err(Failure::invalid)?;
    print_json_pretty(&output)
}
