//! Whole runs of N's own code against replay: `fixtures/n_runs/run_*.jsonl` are journals of
//! scripted runs of N v0.2.7's `run_step` and update loop (`generate.py` there), whose recorded
//! step results are N's. Replay must recompute every one of them (participants in N's order,
//! wins, matches, win rates, float32 weights, the eval set kept), the u16 vectors N would set
//! where N's run loop sets them, and find each of those due.

use validator::machine::params::LoopRules;
use validator::replay::replay_items;

use crate::support::runs::{FROM_START as OPTIONS, with_params};

fn runs() -> Vec<(String, Vec<validator::journal::jsonl::Item>)> {
    crate::support::runs::read("n_runs")
}

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
    for (_, items) in runs() {
        let items = with_params(&items, |params| params.rules = LoopRules::legacy());
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
            let items = with_params(items, |params| flip(&mut params.rules));
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
    for (name, items) in runs() {
        let items = with_params(&items, |params| {
            params.rules.weights_cadence = WeightsCadence::AfterStep {
                blocks_per_epoch: 100_000,
            };
        });
        let report = replay_items(&items, OPTIONS).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        assert_eq!(
            report.weights_undue.len() as u64,
            report.weights_checked,
            "{name}"
        );
    }
}
