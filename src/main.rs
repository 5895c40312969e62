//! `validator`: parse the command line and dispatch it (`src/cli/`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
