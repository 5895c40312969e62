//! `validator run`: the loop against scripted fakes of every edge, the evaluation worker as a
//! real child process, the weight setter against a simulated chain, the demo end to end, an offline run on files it has not seen, and the
//! kill -9 harness. One binary, so the crate links once.

mod fakes;
mod kill9;
mod offline;
mod weights;
mod worker;

use std::path::Path;

use validator::journal::Journal;
use validator::replay::{ReplayOptions, ReplayReport, replay_journal};

/// Replays the journal at `db` from genesis, asserting it matches and refuses nothing.
pub fn replay_clean(db: &Path) -> ReplayReport {
    let journal = Journal::open_existing(db).unwrap();
    let report = replay_journal(
        &journal,
        ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: false,
        },
    )
    .unwrap();
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
    assert!(report.rejections.is_empty(), "{:?}", report.rejections);
    report
}
