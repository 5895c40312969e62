//! Whole runs of the successor's own code against replay: `fixtures/f_runs/run_*.jsonl` are
//! journals of scripted runs of F v3.1.0's `run_step` and update loop (`generate.py` there,
//! which imports F and taoverse and runs them with torch), whose recorded step results are
//! F's. Replay must recompute every one of them (participants in F's set order, scores from
//! the journaled task losses, wins, win rates, the float32 tracker's weights, the eval set
//! kept) and the u16 vectors F submitted, and refuse none of F's downloads.

use validator::journal::jsonl::{self, Item};
use validator::machine::params::{LoopRules, SetOrder};
use validator::machine::{Event, MechanismParams};
use validator::replay::replay_items;

use crate::support::runs::{FROM_START as OPTIONS, with_params};

fn runs() -> Vec<(String, Vec<Item>)> {
    crate::support::runs::read("f_runs")
}

/// Every run's parameters are the successor's preset, so these runs check what
/// `--mechanism f` folds with.
#[test]
fn the_runs_use_the_successors_preset() {
    for (name, items) in runs() {
        let Some(Item::Record(first)) = items.first() else {
            panic!("{name}: no first record");
        };
        let Event::ParamsChanged(change) = &first.event else {
            panic!("{name}: the first record is not the parameters");
        };
        assert_eq!(change.params, MechanismParams::successor(), "{name}");
    }
}

#[test]
fn replay_recomputes_every_step_of_fs_own_runs() {
    for (name, items) in runs() {
        let report = replay_items(&items, OPTIONS).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        // Commitments F refuses for good (a competition not running at the commit block) are
        // the only refusals: the fold records them as invalid, as F never downloads them.
        let refused: Vec<_> = report
            .rejections
            .iter()
            .filter(|(_, why)| !why.contains("was not running at the commit block"))
            .collect();
        assert!(refused.is_empty(), "{name}: {:?}", refused.first());
        let scored = report
            .steps
            .iter()
            .filter(|s| !s.record.uids.is_empty())
            .count();
        assert!(scored >= 25, "{name}: {scored} scored steps");
        assert!(report.weights_checked >= 1, "{name}");
    }
}

/// Each of the successor's rules is exercised: changing any one of them alone makes some run
/// diverge or refuse one of F's own events. (The history's length of three is not: a run would
/// need a model dropped from the eval set exactly when its history reads finite, ∞, ∞; the
/// unit tests of `successor_loop` keep that rule.)
#[test]
fn each_rule_is_exercised_by_some_run() {
    type Flip = fn(&mut MechanismParams);
    let flips: [(&str, Flip); 12] = [
        ("set order", |p| p.rules.set_order = SetOrder::Ascending),
        ("float32 tracker", |p| {
            p.rules = LoopRules {
                successor: None,
                ..p.rules.clone()
            };
        }),
        ("sync-block gate", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.sync_cadence_blocks = 720;
            }
        }),
        ("competition 4's epsilon", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.competitions.retain(|c| c.id.as_str() != "4");
            }
        }),
        ("evaluation delay", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                for c in &mut s.competitions {
                    c.eval_delay_blocks = 2_000;
                }
            }
        }),
        ("task weights", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                for c in &mut s.competitions {
                    if let Some(t) = c.tasks.first_mut() {
                        t.weight = 0.75;
                    }
                }
            }
        }),
        ("keep 3", |p| p.sample_min = 4),
        ("the update loop's cap", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.updated_models_limit = 8;
            }
        }),
        ("top miners' stake floor", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.top_stake_min = 1e9;
            }
        }),
        ("top miners' share", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.top_weight_share = 0.6;
            }
        }),
        ("top miners' retry wait", |p| {
            if let Some(s) = p.rules.successor.as_mut() {
                s.top_retry_blocks = 5_000;
            }
        }),
        ("threshold", |p| {
            p.weights_mode = validator::machine::params::WeightsMode::WinnerTakesAll {
                min_weight_threshold: 0.1,
            };
        }),
    ];
    let runs = runs();
    for (rule, flip) in flips {
        let diverged = runs.iter().any(|(_, items)| {
            let items = with_params(items, flip);
            let report = replay_items(&items, OPTIONS).unwrap();
            let refused = report
                .rejections
                .iter()
                .any(|(_, why)| !why.contains("was not running at the commit block"));
            report.divergence.is_some() || refused
        });
        assert!(diverged, "no run tells the {rule} rule apart");
    }
}

/// A journal written from one's own records (here F's, by a Python script) reads, exports and
/// reads back to the same items, and the export replays as the original does: the JSON Lines
/// form is how anyone brings a successor run to replay.
#[test]
fn a_successor_journal_exports_and_reads_back_unchanged() {
    for (name, items) in runs() {
        let mut bytes = Vec::new();
        for item in &items {
            jsonl::write_item(&mut bytes, item).unwrap();
        }
        let again = jsonl::read(std::io::BufReader::new(bytes.as_slice())).unwrap();
        // (Items with NaN losses are never `==`; the bytes and the replay are compared.)
        assert_eq!(again.len(), items.len(), "{name}");
        let report = replay_items(&again, OPTIONS).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        let mut twice = Vec::new();
        for item in &again {
            jsonl::write_item(&mut twice, item).unwrap();
        }
        assert_eq!(twice, bytes, "{name}: the export is not stable");
    }
}
