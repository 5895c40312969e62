//! `validator`: parse the command line and dispatch it (`src/cli/`).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    telemetry_off();
    cli::main()
}

/// ONNX Runtime writes a device id and a queue of telemetry events under `$XDG_CACHE_HOME`
/// (or `~/.cache`, creating `$HOME` if it must) unless `ORT_DISABLE_TELEMETRY=1` is in the
/// environment when it loads. Setting a variable in-process needs unsafe code, which this
/// project forbids, so the process re-executes itself once with it set; every child (the
/// evaluation worker) inherits it.
fn telemetry_off() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_some_and(|value| value == "1") {
        return;
    }
    let Ok(program) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let name = args
        .next()
        .unwrap_or_else(|| program.clone().into_os_string());
    let error = std::process::Command::new(&program)
        .arg0(name)
        .args(args)
        .env("ORT_DISABLE_TELEMETRY", "1")
        .exec();
    eprintln!(
        "validator: cannot start again with ONNX Runtime's telemetry off ({error}); \
         going on with it as the environment has it"
    );
}
