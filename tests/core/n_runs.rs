//! Whole runs of N's own code against replay: `fixtures/n_runs/run_*.jsonl` are journals of
//! scripted runs of N v0.2.7's `run_step` and update loop (`generate.py` there), whose recorded
//! step results are N's. Replay must recompute every one of them (participants in N's order,
//! wins, matches, win rates, float32 weights, the eval set kept), the u16 vectors N would set
//! where N's run loop sets them, and find each of those due.

use std::path::Path;

use validator::journal::jsonl::{self, Item};
use validator::machine::Event;
use validator::machine::params::LoopRules;
use validator::replay::{ReplayOptions, replay_items};

fn runs() -> Vec<(String, Vec<Item>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/n_runs");
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

const OPTIONS: ReplayOptions = ReplayOptions {
    from_block: 0,
    to_block: None,
    use_checkpoints: false,
};

#[test]
fn replay_recomputes_every_step_of_ns_own_runs() {
    for (name, items) in runs() {
        let report = replay_items(&items, OPTIONS).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        assert!(
            report.rejections.is_empty(),
            "{name}: {:?}",
            report.rejections
        );
        assert!(report.steps.len() >= 20, "{name}");
        assert!(report.weights_checked >= 1, "{name}");
        assert!(
            report.weights_undue.is_empty(),
            "{name}: {:?}",
            report.weights_undue
        );
    }
}

/// The runs are sensitive to the rules: folded with the legacy ones (ascending order, f64,
/// re-registrations queued), they diverge from N.
#[test]
fn the_legacy_rules_diverge_from_ns_runs() {
    let mut diverged = 0;
    for (_, mut items) in runs() {
        for item in &mut items {
            if let Item::Record(record) = item
                && let Event::ParamsChanged(change) = &mut record.event
            {
                change.params.rules = LoopRules::legacy();
            }
        }
        let report = replay_items(&items, OPTIONS).unwrap();
        diverged += usize::from(report.divergence.is_some());
    }
    assert!(diverged >= 5, "only {diverged} runs told the rules apart");
}

/// Each of N's rules is exercised: flipping any one of them alone makes some run diverge.
#[test]
fn each_rule_is_exercised_by_some_run() {
    use validator::machine::params::{SetOrder, WeightsFloat};
    type Flip = fn(&mut LoopRules);
    let flips: [(&str, Flip); 5] = [
        ("set order", |r| r.set_order = SetOrder::Ascending),
        ("float32", |r| r.weights_float = WeightsFloat::F64),
        ("re-registration", |r| r.requeue_registered = true),
        ("sized at start", |r| r.weights_sized_at_start = false),
        ("superseded downloads", |r| r.track_superseded = false),
    ];
    let runs = runs();
    for (rule, flip) in flips {
        let diverged = runs.iter().any(|(_, items)| {
            let mut items = items.clone();
            for item in &mut items {
                if let Item::Record(record) = item
                    && let Event::ParamsChanged(change) = &mut record.event
                {
                    flip(&mut change.params.rules);
                }
            }
            let report = replay_items(&items, OPTIONS).unwrap();
            report.divergence.is_some() || !report.rejections.is_empty()
        });
        assert!(diverged, "no run tells the {rule} rule apart");
    }
}

/// Postmortem (9e4eeb7): replay had no notion of when weights were due, so a submission out
/// of N's cadence passed unnoticed. N's run loop set weights where the runs journal them:
/// under a longer epoch the same submissions are reported as not due.
#[test]
fn replay_says_whether_each_submission_was_due() {
    use validator::machine::params::WeightsCadence;
    for (name, mut items) in runs() {
        for item in &mut items {
            if let Item::Record(record) = item
                && let Event::ParamsChanged(change) = &mut record.event
            {
                change.params.rules.weights_cadence = WeightsCadence::AfterStep {
                    blocks_per_epoch: 100_000,
                };
            }
        }
        let report = replay_items(&items, OPTIONS).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        assert_eq!(
            report.weights_undue.len() as u64,
            report.weights_checked,
            "{name}"
        );
    }
}
