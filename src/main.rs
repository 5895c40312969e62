//! `validator`: parse the command line and dispatch it (`src/cli/`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::dispatch(cli::Cli::parse())
}
