//! Replay throughput on a generated journal, as a ratio to a plain sequential scan of the same
//! sled tree (read every key and value, decode nothing).
//!
//! `cargo bench --bench replay_throughput` generates about a year of N (100,000 steps × 8 uids
//! × 400 losses) into a temporary directory first; `BENCH_STEPS` sets another size and
//! `BENCH_JOURNAL` reuses a journal made by `validator journal generate`.

// Measurement code: counts and sizes become floats for reporting.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::path::PathBuf;
use std::time::Instant;

use validator::journal::Journal;
use validator::machine::{Position, State, apply};
use validator::replay::{ReplayOptions, replay};
use validator::synth::{JournalSpec, generate_journal};

fn main() {
    let steps: u64 = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let scratch = tempfile::tempdir().expect("temporary directory");
    let path = match std::env::var_os("BENCH_JOURNAL") {
        Some(path) => PathBuf::from(path),
        None => {
            let path = scratch.path().join("journal");
            let started = Instant::now();
            generate_journal(
                &path,
                JournalSpec {
                    steps,
                    ..JournalSpec::default()
                },
            )
            .expect("generate the journal");
            println!(
                "generated {steps} steps in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            path
        }
    };
    let journal = Journal::open_existing(&path).expect("open the journal");

    let started = Instant::now();
    let (records, bytes) = journal.scan_raw().expect("scan");
    let scan_s = started.elapsed().as_secs_f64();
    println!(
        "plain scan:            {records} records, {:.0} MiB in {scan_s:.2} s",
        bytes as f64 / 1048576.0
    );

    let started = Instant::now();
    let mut decoded = 0u64;
    for record in journal.all_records() {
        record.expect("record");
        decoded += 1;
    }
    let decode_s = started.elapsed().as_secs_f64();
    println!(
        "scan + decode:         {decoded} records in {decode_s:.2} s ({:.2}× the scan)",
        decode_s / scan_s
    );

    let started = Instant::now();
    let mut state = State::default();
    for record in journal.all_records() {
        apply(&mut state, &record.expect("record"));
    }
    let fold_s = started.elapsed().as_secs_f64();
    println!(
        "fold (no checks):      {:.2} s ({:.2}× the scan)",
        fold_s,
        fold_s / scan_s
    );

    let options = ReplayOptions {
        from_block: 0,
        to_block: None,
        use_checkpoints: false,
    };
    let started = Instant::now();
    let report = replay(
        None,
        journal.records(Position { block: 0, seq: 0 }, None),
        journal.checkpoints(),
        options,
    )
    .expect("replay");
    let replay_s = started.elapsed().as_secs_f64();
    assert!(report.divergence.is_none(), "{:?}", report.divergence);
    println!(
        "replay from genesis:   {} steps, {} checkpoints checked in {replay_s:.2} s ({:.2}× the scan, {:.0} steps/s)",
        report.steps.len(),
        report.checkpoints_checked,
        replay_s / scan_s,
        report.steps.len() as f64 / replay_s
    );

    let last_block = journal.last_position().map_or(0, |p| p.block);
    let from_block = last_block.saturating_sub(last_block / 10);
    let started = Instant::now();
    let start = journal.checkpoint_before(from_block).expect("checkpoint");
    let from = start
        .as_ref()
        .and_then(|s| s.position)
        .map_or(Position { block: 0, seq: 0 }, |p| Position {
            block: p.block,
            seq: p.seq + 1,
        });
    let report = replay(
        start,
        journal.records(from, None),
        journal.checkpoints(),
        ReplayOptions {
            from_block,
            to_block: None,
            use_checkpoints: true,
        },
    )
    .expect("replay");
    let tail_s = started.elapsed().as_secs_f64();
    assert!(report.divergence.is_none());
    println!(
        "replay of the last 10% from a checkpoint: {} steps in {tail_s:.2} s ({:.3}× the scan)",
        report.steps.len(),
        tail_s / scan_s
    );
}
