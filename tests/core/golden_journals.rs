//! Golden journals: small, readable journals in `fixtures/journals/` that cover the mechanism's
//! corners, each replayed with a snapshot of replay's per-step table.
//!
//! The journals are written by the scenarios below (which record what the fold computes, as a
//! live validator does). `golden_journals_are_current` fails when the fold's results change;
//! after an intended change, `UPDATE_GOLDEN=1 cargo test --test golden_journals` rewrites them
//! and `cargo insta review` updates the tables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use validator::journal::jsonl::{self, Item};
use validator::machine::event::{EvalOutcome, RejectionCode, StepFailed};
use validator::machine::model_id::HashKind;
use validator::machine::params::{EpsilonRule, ScheduleEntry, WeightsMode};
use validator::machine::wire::LossVec;
use validator::machine::{Event, MechanismParams};
use validator::replay::{ReplayOptions, render_table, replay_items};
use validator::synth::{Scenario, model_string};

const A: &str = "5HotkeyAaaa";
const B: &str = "5HotkeyBbbb";
const C: &str = "5HotkeyCccc";
const D: &str = "5HotkeyDddd";
const E: &str = "5HotkeyEeee";
const F: &str = "5HotkeyFfff";
const G: &str = "5HotkeyGggg";

/// Losses for a uid in a step: dyadic values, so the JSON reads as written.
fn table<'a>(rows: &'a [(u16, &'a [f32])]) -> impl FnMut(u16) -> Option<Vec<f32>> + 'a {
    move |uid| {
        rows.iter()
            .find(|(u, _)| *u == uid)
            .map(|(_, losses)| losses.to_vec())
    }
}

/// Both competitions in turn, a new commitment between steps, weight submissions.
fn two_competitions() -> Scenario {
    let mut s = Scenario::new();
    s.metagraph(100, &[A, B, C, D, E], &[]);
    s.commit_verified(100, A, 90, &model_string("alice", "llama-a", "l3"));
    s.commit_verified(100, B, 95, &model_string("bob", "llama-b", "l3"));
    s.commit_verified(100, C, 92, &model_string("carol", "stable-c", "s1"));
    s.commit_verified(100, D, 97, &model_string("dave", "stable-d", "s1"));
    s.run_step(
        110,
        4,
        table(&[
            (0, &[2.25, 2.5, 2.125, 2.0]),
            (1, &[2.125, 2.5, 2.25, 1.875]),
        ]),
    );
    s.run_step(
        140,
        4,
        table(&[
            (2, &[1.5, 1.75, 1.625, 1.5]),
            (3, &[1.25, 1.875, 1.5, 1.375]),
        ]),
    );
    s.commit_verified(150, E, 148, &model_string("erin", "llama-e", "l3"));
    s.run_step(
        170,
        4,
        table(&[
            (0, &[2.25, 2.5, 2.0, 2.0]),
            (1, &[2.25, 2.375, 2.125, 1.875]),
            (4, &[2.0, 2.25, 2.0, 1.75]),
        ]),
    );
    s.submit_weights(175);
    s.run_step(
        200,
        4,
        table(&[(2, &[1.5, 1.5, 1.5, 1.5]), (3, &[1.5, 1.5, 1.5, 1.5])]),
    );
    s.submit_weights(205);
    s
}

/// A uid re-registered to a new hotkey, and a metagraph that grows.
fn reregistration_and_growth() -> Scenario {
    let mut s = Scenario::new();
    s.metagraph(100, &[A, B, C], &[]);
    s.commit_verified(100, A, 80, &model_string("alice", "llama-a", "l3"));
    s.commit_verified(100, B, 85, &model_string("bob", "llama-b", "l3"));
    s.commit_verified(100, C, 88, &model_string("carol", "llama-c", "l3"));
    s.run_step(
        110,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (1, &[1.75, 1.75, 1.75]),
            (2, &[2.5, 2.5, 2.5]),
        ]),
    );
    // No s1 models: an empty step still advances the round-robin.
    s.run_step(120, 3, table(&[]));
    // uid 1 is re-registered to F; G takes a new uid 3.
    s.metagraph(130, &[A, F, C, G], &[]);
    s.commit_verified(132, F, 131, &model_string("frank", "llama-f", "l3"));
    s.commit_verified(133, G, 133, &model_string("grace", "llama-g", "l3"));
    s.run_step(
        150,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (1, &[1.5, 2.5, 1.5]),
            (2, &[2.5, 2.5, 2.5]),
            (3, &[1.875, 1.875, 1.875]),
        ]),
    );
    s.submit_weights(155);
    s
}

/// A copied model, a model whose every sample fails, an evaluation that fails outright, and
/// commitments that cannot be evaluated or fail verification.
fn duplicates_and_failures() -> Scenario {
    let mut s = Scenario::new();
    s.metagraph(100, &[A, B, C, D, E, F], &[]);
    let original = model_string("alice", "llama-a", "l3");
    s.commit_verified(100, A, 90, &original);
    // B copies A's commitment string (same hash) later: N keeps the older one.
    s.commit_verified(100, B, 96, &original.replace("alice", "bobby"));
    s.commit_verified(100, C, 91, &model_string("carol", "llama-c", "l3"));
    s.commit_verified(100, D, 92, &model_string("dave", "llama-d", "l3"));
    // Not UTF-8; wrong number of fields; not a Raw field; hash mismatch.
    s.push(
        100,
        Event::CommitmentObserved(validator::machine::event::CommitmentObserved {
            hotkey: E.into(),
            block_commit: 93,
            field: validator::machine::event::CommitmentField::Raw(
                validator::machine::wire::RawBytes(vec![0xff, 0xfe, 0x3a]),
            ),
        }),
    );
    s.commit(100, F, 94, "just:three:fields");
    s.push(
        100,
        Event::CommitmentObserved(validator::machine::event::CommitmentObserved {
            hotkey: G.into(),
            block_commit: 95,
            field: validator::machine::event::CommitmentField::Other("Sha256".into()),
        }),
    );
    s.commit(101, F, 101, &model_string("frank", "llama-f", "l3"));
    s.reject(
        102,
        F,
        RejectionCode::HashMismatch,
        "directory hash differs from the commitment",
    );
    s.start_step(110);
    s.batch(110, 3);
    s.losses(110, 0, &[2.0, 2.25, 2.0]);
    s.losses(110, 2, &[f32::INFINITY, f32::INFINITY, f32::INFINITY]);
    s.outcome(
        110,
        3,
        EvalOutcome::Failed("out of memory while loading".into()),
    );
    // Losses for the duplicate are refused: it has no model in this step.
    s.push(
        110,
        Event::LossesComputed(validator::machine::event::LossesComputed {
            step: 0,
            uid: 1,
            hotkey: B.into(),
            model_hash: "stale".into(),
            outcome: EvalOutcome::Losses(LossVec(vec![1.0, 1.0, 1.0])),
        }),
    );
    s.complete_step(110);
    s.run_step(120, 3, table(&[]));
    s.run_step(
        130,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (2, &[1.5, 1.5, 1.5]),
            (3, &[2.5, 1.0, 2.5]),
        ]),
    );
    s.submit_weights(135);
    s
}

/// Parameter changes at a block: epsilon decay (which flips a head-to-head while the earlier
/// commit is young), a schedule switch, winner-takes-all with an eval delay.
fn parameter_changes() -> Scenario {
    let mut s = Scenario::new();
    s.metagraph(100, &[A, B, C, D], &[]);
    s.commit_verified(100, D, 95, &model_string("dave", "stable-d", "s1"));
    s.commit_verified(205, A, 200, &model_string("alice", "llama-a", "l3"));
    s.commit_verified(205, B, 205, &model_string("bob", "llama-b", "l3"));
    let close = [
        (0, &[2.0f32, 2.0, 2.0][..]),
        (1, &[1.96875, 1.96875, 1.96875][..]),
    ];
    // N's fixed 0.01: A's 2.0 × 0.99 = 1.98 loses to B's 1.96875.
    s.run_step(210, 3, table(&close));
    s.run_step(212, 3, table(&[(3, &[1.5, 1.5, 1.5])]));
    let mut params = MechanismParams {
        epsilon: EpsilonRule::LinearDecay {
            start: 0.05,
            end: 0.01,
            decay_blocks: 200,
        },
        ..MechanismParams::default()
    };
    let mut l3_only = params.schedule[0].clone();
    l3_only.block_start = 400;
    l3_only.competitions.truncate(1);
    l3_only.competitions[0].reward_percentage = 1.0;
    params.schedule.push(l3_only);
    s.params(215, params.clone());
    // 20 blocks after A's commit epsilon is 0.046: 2.0 × 0.954 = 1.908 now beats 1.96875.
    s.run_step(220, 3, table(&close));
    s.run_step(230, 3, table(&[(3, &[1.5, 1.5, 1.5])]));
    // From block 400 only l3 runs; A's epsilon has decayed to 0.01 and B wins again.
    s.run_step(420, 3, table(&close));
    params.weights_mode = WeightsMode::WinnerTakesAll {
        min_weight_threshold: 0.18,
    };
    params.eval_delay_blocks = 20;
    s.params(500, params);
    s.commit_verified(505, C, 505, &model_string("carol", "llama-c", "l3"));
    // C waits out the 20-block delay: not evaluated at 510, evaluated at 530.
    s.run_step(
        510,
        3,
        table(&[(0, &[2.0, 2.0, 2.0]), (1, &[1.9375, 1.9375, 1.9375])]),
    );
    s.run_step(
        530,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (1, &[1.9375, 1.9375, 1.9375]),
            (2, &[1.75, 1.75, 1.75]),
        ]),
    );
    s.submit_weights(535);
    // An invalid parameter set is refused and changes nothing.
    s.params(
        540,
        MechanismParams {
            temperature: -1.0,
            schedule: vec![ScheduleEntry {
                block_start: 0,
                competitions: Vec::new(),
            }],
            ..MechanismParams::default()
        },
    );
    s
}

/// N's start-up: weights and eval sets seeded from consensus; old commitments not fetched.
fn consensus_start() -> Scenario {
    let mut s = Scenario::new();
    let block = 3_000_000;
    s.metagraph(block, &[A, B, C, D, E], &[30_000, 20_000, 10_000, 5_000, 0]);
    s.commit(block, A, 2_900_000, &model_string("alice", "llama-a", "l3"));
    s.commit(block, B, 2_950_000, &model_string("bob", "llama-b", "l3"));
    s.commit(
        block,
        C,
        2_990_000,
        &model_string("carol", "stable-c", "s1"),
    );
    s.commit(
        block,
        D,
        2_000_000,
        &model_string("dave", "llama-d", "None"),
    );
    s.commit(block, E, 2_999_900, &model_string("erin", "llama-e", "l3"));
    s.push(block, Event::ConsensusSeeded(Default::default()));
    // The consensus models and the new one are verified; D's old, competition-less model is
    // not fetched (m1 is not scheduled).
    s.verify(block + 1, A, HashKind::Plain);
    s.verify(block + 1, B, HashKind::Salted);
    s.verify(block + 1, C, HashKind::Plain);
    s.verify(block + 1, E, HashKind::Plain);
    s.run_step(
        block + 10,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (1, &[2.125, 1.75, 2.0]),
            (4, &[1.875, 1.875, 1.875]),
        ]),
    );
    // Step 1 fails twice, once before it could start (no data) and once after (no evaluation
    // device), and is then run: the round-robin does not advance past a failed step, as in N
    // when `run_step` raises.
    s.push(
        block + 20,
        Event::StepFailed(StepFailed {
            step: 1,
            reason: "the data source is unavailable: wandb timed out".into(),
        }),
    );
    s.start_step(block + 30);
    s.push(
        block + 40,
        Event::StepFailed(StepFailed {
            step: 1,
            reason: "the evaluation device cannot be opened".into(),
        }),
    );
    // The same competition (s1) runs next, then the round-robin goes on to l3.
    s.run_step(block + 50, 3, table(&[(2, &[2.25, 2.0, 1.75])]));
    s.run_step(
        block + 60,
        3,
        table(&[
            (0, &[2.0, 2.0, 2.0]),
            (1, &[1.5, 1.5, 1.5]),
            (4, &[2.5, 2.5, 2.5]),
        ]),
    );
    s.submit_weights(block + 65);
    s
}

/// N's loop rules, journaled first as a new journal does, on uids past a small set's table:
/// the step visits its eval set in CPython's order, so the copy at uid 40 (listed before uid
/// 10, with the same commit block) keeps the model, and of the uids tied at a win rate of 0 at
/// the cut (10, 20 and 45) the one CPython lists first, 20, stays. A hotkey that registers
/// again is not queued.
fn n_loop_rules() -> Scenario {
    let mut s = Scenario::new();
    s.params(1, MechanismParams::default());
    let hotkeys: Vec<String> = (0..48).map(|uid| format!("5HotkeyN{uid:02}")).collect();
    let refs: Vec<&str> = hotkeys.iter().map(String::as_str).collect();
    s.metagraph(100, &refs, &[]);
    let shared = model_string("first", "llama-shared", "l3");
    // Verified in this order, so N's pending set is built by `.add` in this order.
    s.commit_verified(100, refs[40], 90, &shared);
    s.commit_verified(100, refs[10], 90, &shared.replace("first", "other"));
    for (uid, label) in [(33, "llama-33"), (7, "llama-07"), (39, "llama-39")] {
        s.commit_verified(100, refs[uid], 91, &model_string("miner", label, "l3"));
    }
    for (uid, label) in [(20, "llama-20"), (45, "llama-45")] {
        s.commit_verified(100, refs[uid], 92, &model_string("miner", label, "l3"));
    }
    s.run_step(
        110,
        2,
        table(&[
            (33, &[2.0, 2.0]),
            (7, &[2.5, 2.5]),
            (39, &[1.5, 1.5]),
            (40, &[1.75, 1.75]),
        ]),
    );
    s.run_step(120, 2, table(&[]));
    // uid 45's hotkey leaves and comes back: N's tracker still holds its model, so it is not
    // queued again until it commits again.
    let mut moved = refs.clone();
    moved[45] = "5HotkeyNewcomer";
    s.metagraph(130, &moved, &[]);
    s.metagraph(131, &refs, &[]);
    s.run_step(
        140,
        2,
        table(&[
            (33, &[2.0, 2.0]),
            (7, &[2.5, 1.0]),
            (39, &[1.5, 1.5]),
            (40, &[1.75, 1.75]),
        ]),
    );
    // Not due under N's cadence (an epoch is 100 blocks, the first began at block 100):
    // replay says so.
    s.submit_weights(150);
    s
}

fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("two_competitions", two_competitions()),
        ("reregistration_and_growth", reregistration_and_growth()),
        ("duplicates_and_failures", duplicates_and_failures()),
        ("parameter_changes", parameter_changes()),
        ("consensus_start", consensus_start()),
        ("n_loop_rules", n_loop_rules()),
    ]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journals")
}

fn render(scenario: &Scenario) -> String {
    let mut bytes = Vec::new();
    for record in &scenario.records {
        jsonl::write_record(&mut bytes, record).unwrap();
    }
    String::from_utf8(bytes).unwrap()
}

fn read_golden(name: &str) -> Vec<Item> {
    let path = golden_dir().join(format!("{name}.jsonl"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    jsonl::read(std::io::BufReader::new(file)).unwrap()
}

#[test]
fn n_rules_visit_and_cut_in_cpython_order() {
    let items = read_golden("n_loop_rules");
    let steps: Vec<_> = items
        .iter()
        .filter_map(|item| match item {
            Item::Record(record) => match &record.event {
                Event::StepCompleted(done) => Some(done.recorded.clone()),
                _ => None,
            },
            Item::Checkpoint(_) => None,
        })
        .collect();
    // CPython: `s = set(); [s.add(u) for u in (40, 10, 33, 7, 39, 20, 45)]`, then
    // `e = set(); e.update(s); list(e)`.
    assert_eq!(steps[0].uids, [33, 7, 20, 39, 40, 10, 45]);
    let rate = |uid: u16| steps[0].win_rate[steps[0].uids.iter().position(|u| *u == uid).unwrap()];
    assert_eq!(rate(10), 0.0, "uid 10 holds the copy");
    assert!(rate(40) > 0.0, "uid 40 keeps the model");
    assert_eq!(steps[0].eval_next, [7, 20, 33, 39, 40]);
    assert!(
        !steps[2].uids.contains(&45),
        "the returning hotkey was queued"
    );
}

/// Journals written under schema 3 (before the loop rules) replay with the rules they were
/// folded with: their recorded results match, and their tables are the ones schema 3's build
/// printed (the `schema3_*` snapshots are that build's snapshots, unchanged).
#[test]
fn schema_3_journals_replay_as_they_were_folded() {
    for name in ["parameter_changes", "duplicates_and_failures"] {
        let path = golden_dir().join("schema3").join(format!("{name}.jsonl"));
        let file = std::fs::File::open(&path).unwrap();
        let old = jsonl::read(std::io::BufReader::new(file)).unwrap();
        let options = ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: true,
        };
        let report = replay_items(&old, options).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        insta::assert_snapshot!(format!("schema3_{name}"), render_table(&report));
    }
}

/// Journals written under schema 5 (before intents carried their chain reading) replay
/// unchanged: the same results, the same tables as the current goldens give.
#[test]
fn schema_5_journals_replay_unchanged() {
    for name in ["n_loop_rules", "two_competitions"] {
        let path = golden_dir().join("schema5").join(format!("{name}.jsonl"));
        let file = std::fs::File::open(&path).unwrap();
        let old = jsonl::read(std::io::BufReader::new(file)).unwrap();
        let current = read_golden(name);
        let options = ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: true,
        };
        let report = replay_items(&old, options).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        let expected = replay_items(&current, options).unwrap();
        assert_eq!(render_table(&report), render_table(&expected), "{name}");
        assert_eq!(report.steps, expected.steps, "{name}");
    }
}

#[test]
fn golden_journals_are_current() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (name, scenario) in scenarios() {
        let path = golden_dir().join(format!("{name}.jsonl"));
        let fresh = render(&scenario);
        if update {
            std::fs::write(&path, &fresh).unwrap();
            continue;
        }
        let stored = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert!(
            stored == fresh,
            "{name}: the fold's results changed; if intended, rerun with UPDATE_GOLDEN=1"
        );
    }
}

#[test]
fn every_golden_journal_has_a_scenario() {
    let named: BTreeSet<String> = scenarios().iter().map(|(n, _)| (*n).to_owned()).collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(golden_dir())
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            (path.extension()? == "jsonl").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    assert_eq!(
        named, on_disk,
        "fixtures/journals and the scenarios disagree"
    );
}

#[test]
fn every_golden_journal_replays_and_matches_its_snapshot() {
    for (name, _) in scenarios() {
        let items = read_golden(name);
        let options = ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: true,
        };
        let report = replay_items(&items, options).unwrap();
        assert_eq!(report.divergence, None, "{name}");
        assert!(!report.steps.is_empty(), "{name} has no steps");
        insta::assert_snapshot!(name, render_table(&report));
    }
}

#[test]
fn goldens_cover_what_the_issue_lists() {
    let all: Vec<Item> = scenarios()
        .iter()
        .flat_map(|(name, _)| read_golden(name))
        .collect();
    let events = || {
        all.iter().filter_map(|item| match item {
            Item::Record(record) => Some(&record.event),
            Item::Checkpoint(_) => None,
        })
    };
    let competitions: BTreeSet<String> = events()
        .filter_map(|e| match e {
            Event::StepCompleted(done) if !done.recorded.uids.is_empty() => {
                Some(done.recorded.competition.to_string())
            }
            _ => None,
        })
        .collect();
    assert!(competitions.contains("l3") && competitions.contains("s1"));
    assert!(events().any(|e| matches!(e, Event::ParamsChanged(_))));
    assert!(events().any(|e| matches!(e, Event::ConsensusSeeded(_))));
    assert!(events().any(|e| matches!(e, Event::StepFailed(_))));
    assert!(events().any(|e| matches!(e, Event::ModelRejected(_))));
    let all_inf = events().any(|e| match e {
        Event::LossesComputed(l) => match &l.outcome {
            EvalOutcome::Losses(losses) => losses.0.iter().all(|x| x.is_infinite()),
            EvalOutcome::Failed(_) | EvalOutcome::TaskLosses(_) => false,
        },
        _ => false,
    });
    assert!(all_inf, "no model whose losses are all failures");
    let sizes: Vec<usize> = events()
        .filter_map(|e| match e {
            Event::MetagraphObserved(m) => Some(m.hotkeys.len()),
            _ => None,
        })
        .collect();
    assert!(
        sizes.windows(2).any(|w| w[1] > w[0]),
        "no growing metagraph"
    );
}

#[test]
fn a_flipped_head_to_head_is_a_divergence() {
    let mut items = read_golden("two_competitions");
    // Make uid 1 lose the first sample of step 0 by a mile: its win there flips to uid 0.
    let target = items
        .iter_mut()
        .find_map(|item| match item {
            Item::Record(record) => match &mut record.event {
                Event::LossesComputed(l) if l.step == 0 && l.uid == 1 => Some(l),
                _ => None,
            },
            Item::Checkpoint(_) => None,
        })
        .unwrap();
    let EvalOutcome::Losses(losses) = &mut target.outcome else {
        panic!("expected losses");
    };
    losses.0[0] = 9.0;
    let options = ReplayOptions {
        from_block: 0,
        to_block: None,
        use_checkpoints: true,
    };
    let report = replay_items(&items, options).unwrap();
    let divergence = report.divergence.expect("a divergence");
    assert_eq!(divergence.step, Some(0));
    assert_eq!(divergence.field, "wins");
    assert_eq!(divergence.uid, Some(0));
    assert_eq!(divergence.position.block, 110);
}

/// The intent is checked against the fold's weights; the answer, journaled after a step has
/// changed them, is checked against the intent it answers.
#[test]
fn an_answer_is_checked_against_its_intent_even_after_a_step_moved_the_weights() {
    use validator::machine::event::{
        SubmitMethod, SubmitOutcome, WeightsPrepared, WeightsSubmitted,
    };
    use validator::machine::weights::to_chain_weights;

    let journal = |tamper_prepared: bool, answer_with_new_weights: bool| {
        let mut s = two_competitions();
        let (uids, mut weights) = to_chain_weights(&s.state().weights).unwrap();
        let sent = weights.clone();
        if tamper_prepared {
            weights[0] = weights[0].wrapping_sub(1);
        }
        s.push(
            210,
            Event::WeightsPrepared(WeightsPrepared {
                mecid: 0,
                uids: uids.clone(),
                weights,
                version_key: 27,
                method: SubmitMethod::Plain,
                block_head: 210,
                due: None,
            }),
        );
        s.run_step(
            230,
            4,
            table(&[
                (0, &[2.0, 2.5, 2.0, 2.0]),
                (1, &[2.5, 2.5, 2.5, 2.5]),
                (4, &[1.0, 1.0, 1.0, 1.0]),
            ]),
        );
        let (new_uids, new_weights) = to_chain_weights(&s.state().weights).unwrap();
        assert_ne!(new_weights, sent, "the step must move the weights");
        let (uids, weights) = if answer_with_new_weights {
            (new_uids, new_weights)
        } else {
            (uids, sent)
        };
        s.push(
            235,
            Event::WeightsSubmitted(WeightsSubmitted {
                uids,
                weights,
                version_key: 27,
                outcome: SubmitOutcome::Included { block: 231 },
            }),
        );
        let items: Vec<Item> = s.drain().into_iter().map(Item::Record).collect();
        replay_items(
            &items,
            ReplayOptions {
                from_block: 0,
                to_block: None,
                use_checkpoints: false,
            },
        )
        .unwrap()
    };
    let honest = journal(false, false);
    assert!(honest.divergence.is_none(), "{:?}", honest.divergence);
    assert_eq!(honest.weights_checked, 4);
    let divergence = journal(true, false).divergence.expect("a tampered intent");
    assert_eq!(divergence.field, "submitted weight");
    assert_eq!(divergence.position.block, 210);
    let divergence = journal(false, true)
        .divergence
        .expect("an answer to another vector");
    assert_eq!(divergence.position.block, 235);
}

/// Replay judges the cadence of every intent on the chain reading journaled with it, under
/// either cadence: a reading the cadence did not have due is reported, one it had is not.
#[test]
fn replay_judges_each_intent_on_its_journaled_reading_under_both_cadences() {
    use validator::machine::event::DueReading;
    use validator::machine::event::{SubmitMethod, WeightsPrepared};
    use validator::machine::params::WeightsCadence;
    use validator::machine::weights::to_chain_weights;

    let undue = |cadence: WeightsCadence, head: u64, last_update: u64| {
        let mut s = two_competitions();
        let mut params = s.state().params.clone();
        params.rules.weights_cadence = cadence;
        s.params(205, params);
        let (uids, weights) = to_chain_weights(s.state().weights_to_set()).unwrap();
        s.push(
            head,
            Event::WeightsPrepared(WeightsPrepared {
                mecid: 0,
                uids,
                weights,
                version_key: 27,
                method: SubmitMethod::Plain,
                block_head: head,
                due: Some(DueReading {
                    head,
                    last_update,
                    rate_limit: 10,
                    blocks_per_epoch: 100,
                }),
            }),
        );
        let items: Vec<Item> = s.drain().into_iter().map(Item::Record).collect();
        let options = ReplayOptions {
            from_block: 0,
            to_block: None,
            use_checkpoints: false,
        };
        let report = replay_items(&items, options).unwrap();
        assert!(report.divergence.is_none(), "{:?}", report.divergence);
        report.weights_undue.len()
    };
    // The chain's clock: due a hundred blocks after LastUpdate (past the journal's inclusions).
    assert_eq!(undue(WeightsCadence::Chain, 360, 300), 1);
    assert_eq!(undue(WeightsCadence::Chain, 400, 300), 0);
    // N's: due after a step made them due, once the rate limit passed. `two_competitions`
    // runs its steps within one epoch, so no step made them due.
    let after_step = WeightsCadence::AfterStep {
        blocks_per_epoch: 100,
    };
    assert_eq!(undue(after_step, 300, 0), 1);
}
