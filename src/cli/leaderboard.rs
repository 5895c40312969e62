//! `validator leaderboard`: the runner's page and its JSON, written as static files from a
//! journal at rest (a copy of the runner's journal, or a `replay export`), so they can be
//! published anywhere while the runner holds its own journal.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use validator::board::{Board, board_of, board_of_journal, html};
use validator::journal::Journal;
use validator::journal::head::Head;
use validator::journal::jsonl::{self, Item};
use validator::machine::State;

use super::{Failure, Outcome};

/// `validator leaderboard`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderboardArgs {
    /// The journal (a sled directory; the runner's own is locked while it runs: use a copy).
    #[arg(long, conflicts_with = "events", required_unless_present = "events")]
    db: Option<PathBuf>,
    /// A JSON Lines export of a journal (`replay export`).
    #[arg(long)]
    events: Option<PathBuf>,
    /// The directory to write `index.html` and `leaderboard.json` into.
    #[arg(long)]
    out: PathBuf,
}

/// Runs `validator leaderboard`.
pub fn run(args: &LeaderboardArgs) -> Outcome {
    let mut journal_head = None;
    let (board, state) = match (&args.db, &args.events) {
        (Some(db), _) => {
            // The journal is read from a private copy: Ctrl-C must not leave it behind.
            validator::journal::remove_private_copies_on_signal()
                .map_err(|e| Failure::Failed(anyhow!("cannot handle signals: {e}")))?;
            let journal = Journal::open_existing(db)?;
            journal_head = journal.head().map(Head::summary);
            board_of_journal(&journal)?
        }
        (None, Some(events)) => from_events(events)?,
        (None, None) => return Err(Failure::Invalid(anyhow!("give --db or --events"))),
    };
    let mut leaderboard = board.view(&state, None);
    leaderboard.validator.journal_head = journal_head;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", args.out.display())))?;
    let json = serde_json::to_vec_pretty(&leaderboard).map_err(Failure::failed)?;
    write(&args.out.join("leaderboard.json"), &json)?;
    write(
        &args.out.join("index.html"),
        html::render(&leaderboard, false).as_bytes(),
    )?;
    println!(
        "leaderboard of {} records ({} steps, {} competitions) written to {}",
        leaderboard.validator.records,
        leaderboard.validator.steps_completed,
        leaderboard.competitions.len(),
        args.out.display()
    );
    Ok(())
}

fn from_events(path: &Path) -> Result<(Board, State), Failure> {
    // A FIFO would block the open forever, a device never end: only a regular file is read.
    let file = validator::bounded::open_regular(path)
        .map_err(|e| Failure::Invalid(anyhow!("cannot open {}: {e}", path.display())))?;
    let items = jsonl::read(std::io::BufReader::new(file))
        .map_err(|e| Failure::Invalid(anyhow!("{} is not a valid journal: {e}", path.display())))?;
    // An incremental export (`replay export --from-block`) starts with a checkpoint: the
    // state starts there, and the history with the export.
    let mut items = items.into_iter().peekable();
    let start = match items.peek() {
        Some(Item::Checkpoint(_)) => match items.next() {
            Some(Item::Checkpoint(state)) => Some(*state),
            _ => None,
        },
        _ => None,
    };
    let records = items.filter_map(|item| match item {
        Item::Record(record) => Some(Ok::<_, std::convert::Infallible>(record)),
        Item::Checkpoint(_) => None,
    });
    let Ok(folded) = board_of(start, records);
    Ok(folded)
}

/// Writes `bytes` to `path` through a temporary file, so a reader never sees half a page.
fn write(path: &Path, bytes: &[u8]) -> Outcome {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| Failure::Failed(anyhow!("{}: {e}", path.display())))
}
