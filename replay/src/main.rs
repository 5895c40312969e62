//! `replay`: recompute every weight vector a validator journaled, and say whether they match.
//!
//! Exit status: 0 when every recorded result matches, 1 at the first divergence, 2 for a usage
//! or input error, 3 when the journal cannot be read (missing, locked, corrupt).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use validator::journal::head::Head;
use validator::journal::jsonl::{self, Item};
use validator::journal::{Journal, JournalError};
use validator::machine::Position;
use validator::replay::{ReplayOptions, ReplayReport, render_table, replay_items, replay_journal};
use validator::text::printable;

/// Re-fold a validator journal and check every recorded step and weight submission.
#[derive(Debug, Parser)]
#[command(name = "replay", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    check: CheckArgs,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// First block whose recorded results are checked.
    #[arg(long, default_value_t = 0)]
    from_block: u64,
    /// Last block replayed (inclusive).
    #[arg(long)]
    to_block: Option<u64>,
    /// A sled journal directory (of a stopped validator, or a copy).
    #[arg(long, conflicts_with = "events", required_unless_present = "events")]
    db: Option<PathBuf>,
    /// A JSON Lines journal (`replay export`, golden journals).
    #[arg(long)]
    events: Option<PathBuf>,
    /// Print JSON Lines (one object per step, then a summary) instead of a table.
    #[arg(long)]
    json: bool,
    /// Fold from genesis instead of the latest checkpoint before --from-block.
    #[arg(long)]
    no_checkpoints: bool,
    /// Audit a --db journal that has no head (one written before journals kept heads): its
    /// completeness cannot be checked, and the report says so.
    #[arg(long)]
    accept_no_head: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a journal as JSON Lines to stdout.
    Export {
        /// The sled journal.
        #[arg(long)]
        db: PathBuf,
        /// Export from this block (preceded by the latest checkpoint before it, so the
        /// export replays on its own).
        #[arg(long, default_value_t = 0)]
        from_block: u64,
    },
    /// Read JSON Lines from stdin into a new sled journal.
    Import {
        /// The journal to create (a new or empty directory).
        #[arg(long)]
        db: PathBuf,
    },
}

/// Errors sorted by exit status.
enum Failure {
    Usage(anyhow::Error),
    Journal(anyhow::Error),
}

impl From<JournalError> for Failure {
    fn from(error: JournalError) -> Self {
        Failure::Journal(error.into())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Replay and export read a private copy of the journal: Ctrl-C must not leave it behind.
    if let Err(error) = validator::journal::remove_private_copies_on_signal() {
        eprintln!("replay: cannot handle signals: {error}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Some(Command::Export { db, from_block }) => export(&db, from_block).map(|()| true),
        Some(Command::Import { db }) => import(&db).map(|()| true),
        None => check(&cli.check),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        // Errors echo what they refused (a JSON Lines field, a path), which may hold any
        // byte: escaped before they reach a terminal.
        Err(Failure::Usage(error)) => {
            eprintln!("replay: {}", printable(&format!("{error:#}")));
            ExitCode::from(2)
        }
        Err(Failure::Journal(error)) => {
            eprintln!("replay: {}", printable(&format!("{error:#}")));
            ExitCode::from(3)
        }
    }
}

fn check(args: &CheckArgs) -> Result<bool, Failure> {
    if let Some(to_block) = args.to_block.filter(|to| *to < args.from_block) {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--to-block {to_block} is below --from-block {}: nothing would be checked",
            args.from_block
        )));
    }
    let options = ReplayOptions {
        from_block: args.from_block,
        to_block: args.to_block,
        use_checkpoints: !args.no_checkpoints,
    };
    let mut head = None;
    let report = match (&args.db, &args.events) {
        (Some(db), _) => {
            let journal = Journal::open_existing(db)?;
            // Without a head nothing says the journal is whole (a deleted head and a
            // truncated log look just like this): it is not audited unless the auditor says
            // it is a journal from before heads and reads the report as unchecked.
            if journal.head().is_none() && !args.accept_no_head {
                return Err(Failure::Journal(anyhow::anyhow!(
                    "the journal at {} has no head, so nothing says it is whole (a head \
                     deleted and its log truncated look the same); a journal written before \
                     journals kept heads is audited with --accept-no-head, its completeness \
                     unchecked",
                    db.display()
                )));
            }
            head = Some(journal.head().map_or_else(
                || "none: completeness unchecked (--accept-no-head)".to_owned(),
                Head::summary,
            ));
            replay_journal(&journal, options).map_err(|e| Failure::Journal(e.into()))?
        }
        (None, Some(events)) => {
            let items = read_items(events)?;
            replay_items(&items, options).map_err(|e| Failure::Usage(e.into()))?
        }
        (None, None) => return Err(Failure::Usage(anyhow::anyhow!("give --db or --events"))),
    };
    // A range with nothing in it checks nothing: saying "match" there would pass an audit of
    // blocks the journal does not hold; an empty journal likewise.
    if report.records_checked == 0 && report.block_last.is_none() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "the journal holds no record: nothing checked is not a match"
        )));
    }
    if report.records_checked == 0 && (args.from_block > 0 || args.to_block.is_some()) {
        let range = match args.to_block {
            Some(to_block) => format!("blocks {}..={to_block}", args.from_block),
            None => format!("block {} on", args.from_block),
        };
        return Err(Failure::Usage(anyhow::anyhow!(
            "nothing to check in {range}: the journal holds no record there"
        )));
    }
    print_report(&report, head.as_deref(), args.json).map_err(|e| Failure::Usage(e.into()))?;
    Ok(report.divergence.is_none())
}

fn read_items(path: &Path) -> Result<Vec<Item>, Failure> {
    // A FIFO would block the open forever, a device never end: only a regular file is read.
    let file = validator::bounded::open_regular(path)
        .with_context(|| format!("cannot open {}", path.display()))
        .map_err(Failure::Usage)?;
    jsonl::read(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a valid journal", path.display()))
        .map_err(Failure::Usage)
}

/// Prints the report; `head` is the journal head verified (for `--db`), which an auditor
/// compares with the one the validator publishes.
fn print_report(report: &ReplayReport, head: Option<&str>, json: bool) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if !json {
        // Miners' strings (hotkeys, reasons) may hold any byte: escaped for the terminal.
        out.write_all(printable(&render_table(report)).as_bytes())?;
        if let Some(head) = head {
            writeln!(out, "journal head: {head}")?;
        }
        return out.flush();
    }
    for step in &report.steps {
        let record = &step.record;
        let line = serde_json::json!({
            "block": step.position.block,
            "seq": step.position.seq,
            "step": step.step,
            "competition": record.competition,
            "uids": record.uids,
            "wins": record.wins,
            "matches": record.matches,
            "win_rate": record.win_rate,
            "weights": record.weights,
            "eval_next": record.eval_next,
        });
        writeln!(out, "{line}")?;
    }
    let divergence = report.divergence.as_ref().map(|d| {
        serde_json::json!({
            "block": d.position.block,
            "seq": d.position.seq,
            "step": d.step,
            "uid": d.uid,
            "field": d.field,
            "journaled": d.journaled,
            "recomputed": d.recomputed,
        })
    });
    let summary = serde_json::json!({
        "status": if report.divergence.is_none() { "match" } else { "divergence" },
        "started_from": report.started_from.map(|p| serde_json::json!({"block": p.block, "seq": p.seq})),
        "records_folded": report.records_folded,
        "steps": report.steps.len(),
        "weights_checked": report.weights_checked,
        "checkpoints_checked": report.checkpoints_checked,
        "rejections": report.rejections.len(),
        "weights_undue": report.weights_undue.iter().map(|p| serde_json::json!({"block": p.block, "seq": p.seq})).collect::<Vec<_>>(),
        "divergence": divergence,
        "journal_head": head,
    });
    writeln!(out, "{summary}")?;
    out.flush()
}

fn export(db: &Path, from_block: u64) -> Result<(), Failure> {
    let journal = Journal::open_existing(db)?;
    let (start, from) = if from_block > 0 {
        journal.start_before(from_block)?
    } else {
        (None, Position { block: 0, seq: 0 })
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let io = |e: std::io::Error| Failure::Usage(anyhow::Error::new(e).context("writing stdout"));
    if let Some(state) = &start {
        jsonl::write_checkpoint(&mut out, state).map_err(io)?;
    }
    let mut checkpoints = journal
        .checkpoints()
        .filter(|c| !matches!(c, Ok(state) if state.position < Some(from)))
        .peekable();
    for record in journal.records(from, None) {
        let record = record?;
        jsonl::write_record(&mut out, &record).map_err(io)?;
        while let Some(checkpoint) = checkpoints.next_if(|c| match c {
            Ok(state) => state.position <= Some(record.position()),
            Err(_) => true,
        }) {
            jsonl::write_checkpoint(&mut out, &checkpoint?).map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

fn import(db: &Path) -> Result<(), Failure> {
    // Refused before anything opens it: sled rewrites what it opens, and a journal there
    // must be left as it was found.
    let occupied = match std::fs::read_dir(db) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) => error.kind() != std::io::ErrorKind::NotFound,
    };
    if occupied {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} is not a new or empty directory; import into a new directory",
            db.display()
        )));
    }
    let stdin = std::io::stdin();
    let items = jsonl::read(stdin.lock())
        .context("stdin is not a valid journal")
        .map_err(Failure::Usage)?;
    let mut journal = Journal::open(db)?;
    if !journal.is_empty() {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{} already holds a journal; import into a new directory",
            db.display()
        )));
    }
    const RECORDS_PER_BATCH: usize = 10_000;
    let mut pending = Vec::with_capacity(RECORDS_PER_BATCH);
    for item in items {
        match item {
            Item::Record(record) => {
                pending.push(record);
                if pending.len() == RECORDS_PER_BATCH {
                    journal.append_records(&pending)?;
                    pending.clear();
                }
            }
            Item::Checkpoint(state) => {
                journal.append_records(&pending)?;
                pending.clear();
                journal.import_checkpoint(&state)?;
            }
        }
    }
    journal.append_records(&pending)?;
    Ok(())
}
