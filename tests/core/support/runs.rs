//! Whole recorded runs of another validator's own code (`fixtures/n_runs/`,
//! `fixtures/f_runs/`): reading them, and replaying them with their parameters changed.

use std::path::Path;

use validator::journal::jsonl::{self, Item};
use validator::machine::{Event, MechanismParams};
use validator::replay::ReplayOptions;

/// Replay from the first record, without checkpoints.
pub const FROM_START: ReplayOptions = ReplayOptions {
    from_block: 0,
    to_block: None,
    use_checkpoints: false,
};

/// Every `run_*.jsonl` of `fixtures/DIR`, by name, at least six of them.
pub fn read(dir: &str) -> Vec<(String, Vec<Item>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 6,
        "expected the recorded runs in {}",
        dir.display()
    );
    paths
        .into_iter()
        .map(|path| {
            let file = std::fs::File::open(&path).unwrap();
            let items = jsonl::read(std::io::BufReader::new(file)).unwrap();
            (path.display().to_string(), items)
        })
        .collect()
}

/// `items` with `change` applied to every parameter set they journal.
pub fn with_params(items: &[Item], change: impl Fn(&mut MechanismParams)) -> Vec<Item> {
    let mut items = items.to_vec();
    for item in &mut items {
        if let Item::Record(record) = item
            && let Event::ParamsChanged(changed) = &mut record.event
        {
            change(&mut changed.params);
        }
    }
    items
}
