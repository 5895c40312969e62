//! Where `validator run`'s settings come from: `--config FILE.toml`, then `VALIDATOR_*`
//! environment variables, then flags, each overriding the one before. Every flag is a key of
//! the file under the same name (`netuid = 6`, `"wallet.name" = "v"` or `[wallet] name = "v"`)
//! and an environment variable (`VALIDATOR_NETUID`, `VALIDATOR_WALLET_NAME`).
//!
//! A switch (`offline`, `genesis`, ...) set true in the file or the environment cannot be
//! turned off by a flag (switches have no off form): change it where it was set. A variable
//! gives a repeatable flag (`--tokenizer`) one value; the file gives it a list.
//!
//! Other `VALIDATOR_*` variables (`VALIDATOR_LOG`, `VALIDATOR_ORT_DYLIB`, ...) configure
//! parts of the program rather than flags and are left alone.
//!
//! The file's values become the flags' defaults and the variables clap's `env` sources, so
//! clap applies the precedence; each value is checked here first with the flag's own parser,
//! so that a bad one is an error naming the key and where it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

/// The prefix of the environment variables.
pub const ENV_PREFIX: &str = "VALIDATOR_";

/// The environment variable of the flag `long` (`wallet.name` → `VALIDATOR_WALLET_NAME`).
pub fn env_name(long: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for c in long.chars() {
        name.push(match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        });
    }
    name
}

/// The `--config` value in `argv` after the subcommand, if any.
fn config_path(argv: &[OsString]) -> Option<OsString> {
    let mut args = argv.iter().skip(2);
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            return None;
        }
        if text == "--config" {
            return args.next().cloned();
        }
        if let Some(value) = text.strip_prefix("--config=") {
            return Some(OsString::from(value));
        }
    }
    None
}

/// Flattens a TOML table into `key = values`, nested tables joined with `.`.
fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let scalar = |value: &toml::Value| -> Result<String, String> {
            match value {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(format!(
                    "key `{key}`: a {} is not a value of a flag",
                    other.type_str()
                )),
            }
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out)?,
            toml::Value::Array(items) => {
                let values = items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?;
                out.insert(key, values);
            }
            other => {
                out.insert(key.clone(), vec![scalar(other)?]);
            }
        }
    }
    Ok(())
}

/// The flag a file key names: its long name or an alias.
fn arg_named<'a>(command: &'a Command, key: &str) -> Option<&'a Arg> {
    command.get_arguments().find(|arg| {
        arg.get_long() == Some(key)
            || arg
                .get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&key))
    })
}

/// Checks `value` with `arg`'s own parser (on a one-argument command, so that nothing else of
/// `run` is involved).
fn check(arg: &Arg, value: &str) -> Result<(), String> {
    if is_flag(arg) {
        return match value {
            "true" | "false" => Ok(()),
            other => Err(format!("{other:?} is not true or false")),
        };
    }
    let probe = Arg::new("value")
        .long("value")
        .value_parser(arg.get_value_parser().clone());
    Command::new("check")
        .no_binary_name(true)
        .arg(probe)
        .try_get_matches_from([format!("--value={value}")])
        .map(|_| ())
        .map_err(|error| {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or("");
            first
                .trim_start_matches("error: ")
                .replace(" for '--value <value>'", "")
        })
}

/// Whether a flag may be given more than once (`--tokenizer`).
fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

fn is_flag(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
    )
}

/// `validator run`'s command with the file's values as defaults and the environment's
/// variables as sources, each checked.
/// Returns the command and the ids of the flags the file set.
pub fn configure_run(
    run: Command,
    argv: &[OsString],
    env: &BTreeMap<String, String>,
) -> Result<(Command, BTreeSet<String>), String> {
    let file = match config_path(argv) {
        Some(path) => read_file(Path::new(&path))?,
        None => BTreeMap::new(),
    };
    let mut errors = Vec::new();
    let mut defaults: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, values) in &file {
        match arg_named(&run, key) {
            Some(arg) if arg.get_id() == "config" => {
                errors.push(format!("config file: key `{key}`: a config file cannot name another"));
            }
            Some(arg) if arg.is_hide_set() => {
                errors.push(format!("config file: key `{key}` means nothing to this validator"));
            }
            Some(arg) if values.len() != 1 && !takes_many(arg) => {
                errors.push(format!(
                    "config file: key `{key}` takes one value, not a list of {}",
                    values.len()
                ));
            }
            Some(arg) => {
                for value in values {
                    if let Err(why) = check(arg, value) {
                        // A refused value is echoed unless it may be a secret.
                        let why = if is_secret(key) {
                            "invalid value (not shown: it may be a secret)".to_owned()
                        } else {
                            validator::text::redact_url(&why)
                        };
                        errors.push(format!("config file: key `{key}`: {why}"));
                    }
                }
                defaults.insert(arg.get_id().as_str().to_owned(), values.clone());
            }
            None => errors.push(format!(
                "config file: unknown key `{key}` (keys are `validator run`'s flags without the dashes)"
            )),
        }
    }
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for arg in run.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if arg.is_hide_set() || long == "config" {
            continue;
        }
        let name = env_name(long);
        if let Some(value) = env.get(&name) {
            if let Err(why) = check(arg, value) {
                errors.push(format!("environment variable {name}: {why}"));
            }
            sources.insert(arg.get_id().as_str().to_owned(), name);
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let mut run = run;
    let from_file: BTreeSet<String> = defaults.keys().cloned().collect();
    for (id, values) in defaults {
        run = run.mut_arg(id.as_str(), |arg| {
            if is_flag(&arg) {
                arg.default_value(values.last().cloned().unwrap_or_default())
            } else {
                arg.default_values(values)
            }
        });
    }
    for (id, name) in sources {
        run = run.mut_arg(id.as_str(), |arg| arg.env(name));
    }
    Ok((run, from_file))
}

fn read_file(path: &Path) -> Result<BTreeMap<String, Vec<String>>, String> {
    let shown = path.display();
    let bytes = validator::bounded::read_regular(path, 1 << 20)
        .map_err(|e| format!("--config {shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("--config {shown}: not UTF-8"))?;
    // The file may hold a secret (a wallet file given by mistake): its text is never echoed,
    // only where it stops being TOML.
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map_or_else(String::new, |span| {
            let before = text.get(..span.start).unwrap_or("");
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!(" at line {line}, column {column}")
        });
        format!("--config {shown}: not TOML{at}: {}", e.message().trim_end())
    })?;
    let mut out = BTreeMap::new();
    flatten("", &table, &mut out).map_err(|e| format!("--config {shown}: {e}"))?;
    Ok(out)
}

/// Whether a setting is a secret whose value is never printed.
fn is_secret(long: &str) -> bool {
    let long = long.to_ascii_lowercase();
    [
        "token",
        "password",
        "secret",
        "api_key",
        "api-key",
        "credential",
    ]
    .iter()
    .any(|word| long.contains(word))
}

/// The effective settings of `run`, one `key = value (source)` per flag, secrets redacted.
pub fn effective(run: &Command, matches: &ArgMatches, from_file: &BTreeSet<String>) -> Vec<String> {
    let mut lines = Vec::new();
    for arg in run.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if arg.is_hide_set() || long == "help" || long == "version" {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) if from_file.contains(id) => "config file",
            Some(ValueSource::DefaultValue) => "default",
            Some(_) => "other",
            None => continue,
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .into_iter()
            .flatten()
            .map(|v| validator::text::redact_url(&v.to_string_lossy()))
            .collect();
        let value = if is_secret(long) {
            "<redacted>".to_owned()
        } else {
            values.join(", ")
        };
        lines.push(format!("{long} = {value} ({source})"));
    }
    lines
}
