//! `validator run`: the loop against scripted fakes of every edge, the evaluation worker as a
//! real child process, the weight setter against a simulated chain, the demo end to end, an
//! offline run on files it has not seen, and the kill -9 harness. One binary, so the crate
//! links once.

mod fakes;
mod hostile;
mod kill9;
mod observe;
mod offline;
mod pool;
mod queue;
mod successor;
mod weights;
mod worker;

pub use validator::testing::replay_clean;

use std::path::{Path, PathBuf};

/// The fixture models.
pub(crate) fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models")
}

/// Copies fixture model `model` into `hub/<namespace>/<name>/<commit>/`, a `local:` hub.
pub(crate) fn publish(hub: &Path, model: &str, namespace: &str, name: &str, commit: &str) {
    let target = hub.join(namespace).join(name).join(commit);
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(models().join(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
}

/// Every event of the journal at `db`, in order.
pub(crate) fn journal_events(db: &Path) -> Vec<validator::machine::Event> {
    let journal = validator::journal::Journal::open_existing(db).unwrap();
    journal.all_records().map(|r| r.unwrap().event).collect()
}
