//! Model-based test of the sled journal: random appends, reads and restarts against a `Vec`.
//! Also: checkpoints restore the fold, and damage is reported as corruption.

use proptest::prelude::*;
use validator::journal::codec;
use validator::journal::recorder::Recorder;
use validator::journal::{Journal, JournalError, head};
use validator::machine::event::StepAbandoned;
use validator::machine::{Event, Position, Record};
use validator::synth::{Scenario, model_string};

#[derive(Debug, Clone)]
enum Op {
    /// Append a batch of `count` events, `advance` blocks after the last.
    Append { count: usize, advance: u64 },
    /// Append one event at a block before the last (must be refused).
    AppendStale,
    /// Read from the `n`-th record on, up to a block.
    Read { from: usize, to_extra: Option<u64> },
    /// Close and reopen the database.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..6, 0u64..3).prop_map(|(count, advance)| Op::Append { count, advance }),
        1 => Just(Op::AppendStale),
        2 => (0usize..40, proptest::option::of(0u64..5)).prop_map(|(from, to_extra)| Op::Read { from, to_extra }),
        1 => Just(Op::Restart),
    ]
}

/// sled itself on a journal just dropped, whose lock sled releases from a background thread.
fn open_behind_the_journals_back(path: &std::path::Path) -> sled::Db {
    (0..40)
        .find_map(|_| {
            sled::open(path).ok().or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                None
            })
        })
        .unwrap()
}

fn event(tag: u64) -> Event {
    Event::StepAbandoned(StepAbandoned {
        step: tag,
        reason: format!("model event {tag}"),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_journal_behaves_like_a_vec(ops in proptest::collection::vec(op(), 1..30)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Some(Journal::open(&path).unwrap());
        let mut model: Vec<Record> = Vec::new();
        let mut tag = 0u64;
        for op in ops {
            let j = journal.as_mut().unwrap();
            match op {
                Op::Append { count, advance } => {
                    let block = model.last().map_or(1, |r| r.block) + advance;
                    let events: Vec<(u64, Event)> = (0..count).map(|_| { tag += 1; (block, event(tag)) }).collect();
                    let records = j.append(&events).unwrap();
                    for (index, record) in records.iter().enumerate() {
                        prop_assert_eq!(record.seq, (model.len() + index) as u64);
                    }
                    model.extend(records);
                }
                Op::AppendStale => {
                    if let Some(last) = model.last() && last.block > 0 {
                        let refused = j.append(&[(last.block - 1, event(0))]);
                        let out_of_order = matches!(refused, Err(JournalError::OutOfOrder { .. }));
                        prop_assert!(out_of_order, "a stale append was accepted");
                    }
                }
                Op::Read { from, to_extra } => {
                    let start = model.get(from).map_or(Position { block: u64::MAX, seq: 0 }, Record::position);
                    let to_block = to_extra.map(|extra| start.block.saturating_add(extra));
                    let read: Vec<Record> = j.records(start, to_block).map(Result::unwrap).collect();
                    let expected: Vec<Record> = model
                        .iter()
                        .filter(|r| r.position() >= start && to_block.is_none_or(|to| r.block <= to))
                        .cloned()
                        .collect();
                    prop_assert_eq!(read, expected);
                }
                Op::Restart => {
                    drop(journal.take()); // release sled's lock before reopening
                    journal = Some(Journal::open(&path).unwrap());
                    prop_assert_eq!(journal.as_ref().unwrap().last_position(), model.last().map(Record::position));
                }
            }
        }
        let all: Vec<Record> = journal.as_ref().unwrap().all_records().map(Result::unwrap).collect();
        prop_assert_eq!(all, model);
    }
}

#[test]
fn a_recorder_restarts_from_its_checkpoint_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let mut scenario = Scenario::new();
    scenario.metagraph(1, &["a", "b"], &[]);
    scenario.commit_verified(1, "a", 1, &model_string("ns", "ma", "l3"));
    scenario.commit_verified(1, "b", 1, &model_string("ns", "mb", "l3"));
    for step in 0..6u64 {
        let block = 10 + step;
        scenario.run_step(block, 2, |uid| Some(vec![2.0 + f32::from(uid) * 0.25, 2.0]));
    }
    let events: Vec<(u64, Event)> = scenario
        .records
        .iter()
        .map(|r| (r.block, r.event.clone()))
        .collect();
    {
        let mut recorder = Recorder::open(&path, 2).unwrap();
        for chunk in events.chunks(5) {
            recorder.record(chunk).unwrap();
        }
        assert_eq!(
            codec::encode_state(recorder.state()),
            codec::encode_state(scenario.state())
        );
        assert!(recorder.journal().checkpoints().count() >= 2);
    }
    let reopened = Recorder::open(&path, 2).unwrap();
    assert_eq!(
        codec::encode_state(reopened.state()),
        codec::encode_state(scenario.state())
    );
}

#[test]
fn a_damaged_record_is_reported_as_corruption_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    {
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&[(3, event(1)), (4, event(2))]).unwrap();
    }
    {
        // Rot one byte of the second record's payload behind the journal's back.
        let db = open_behind_the_journals_back(&path);
        let events = db.open_tree("events").unwrap();
        let key = codec::key(Position { block: 4, seq: 1 });
        let mut value = events.get(key).unwrap().unwrap().to_vec();
        *value.last_mut().unwrap() ^= 0x55;
        events.insert(key, value).unwrap();
        db.flush().unwrap();
    }
    // The seal already tells that the files changed; without it (a journal that crashed
    // open) the damaged record is still found, and named, when the journal opens.
    let mut found = head::read(&path).unwrap().unwrap();
    assert!(found.seal.is_some());
    found.seal = None;
    head::write(&path, &found).unwrap();
    let error = Journal::open_existing(&path).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("block 4 seq 1") && message.contains("checksum"),
        "{message}"
    );
}

/// Postmortem (15140d2): readers (replay, exports) let sled open the journal they audited,
/// and sled's recovery rewrites what it opens. They open a private copy.
#[test]
fn a_journal_opened_to_be_read_refuses_changes_and_leaves_the_original_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    {
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&[(3, event(1))]).unwrap();
    }
    let before = head::read(&path).unwrap();
    let mut reader = Journal::open_existing(&path).unwrap();
    let refused = reader.append(&[(4, event(2))]);
    assert!(
        matches!(refused, Err(JournalError::ReadOnly { .. })),
        "{refused:?}"
    );
    drop(reader);
    assert_eq!(head::read(&path).unwrap(), before);
    let journal = Journal::open_existing(&path).unwrap();
    assert_eq!(journal.all_records().count(), 1);
}

/// Postmortem (15140d2): a restarted validator appended after the hole sled's recovery left.
/// A writer that finds its journal shorter than its head says stops: it must never append
/// after a hole that sled's recovery left.
#[test]
fn a_writer_refuses_a_journal_that_lost_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    {
        let mut journal = Journal::open(&path).unwrap();
        journal
            .append(&[(3, event(1)), (4, event(2)), (5, event(3))])
            .unwrap();
    }
    let sealed = head::read(&path).unwrap().unwrap();
    {
        // Lose the last record behind the journal's back, as a truncating recovery would.
        let db = open_behind_the_journals_back(&path);
        let events = db.open_tree("events").unwrap();
        events
            .remove(codec::key(Position { block: 5, seq: 2 }))
            .unwrap();
        db.flush().unwrap();
    }
    // First with the seal (the files changed), then as a journal that crashed open.
    let error = Journal::open(&path).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
    let mut unsealed = sealed;
    unsealed.seal = None;
    head::write(&path, &unsealed).unwrap();
    let error = Journal::open(&path).unwrap_err();
    assert!(error.to_string().contains("1 records were lost"), "{error}");
}
