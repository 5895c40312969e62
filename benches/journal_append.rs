//! Appending one step's events (start, a 400-sample batch, 8 miners' losses, completion) to
//! the sled journal with a flush, against writing the same bytes to a plain file with
//! `fdatasync` in the same process.
//!
//! `cargo bench --bench journal_append`.

// Measurement code: counts and sizes become floats for reporting.
#![allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]

use std::io::Write;
use std::time::Instant;

use validator::journal::Journal;
use validator::journal::codec;
use validator::machine::Event;
use validator::synth::{Scenario, model_string};

const STEPS: usize = 200;

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    // Build STEPS realistic steps with the scenario builder, then time only the appends.
    let mut scenario = Scenario::new();
    let hotkeys: Vec<String> = (0..16).map(|i| format!("5Miner{i:02}")).collect();
    let refs: Vec<&str> = hotkeys.iter().map(String::as_str).collect();
    scenario.metagraph(1, &refs, &[]);
    for (index, hotkey) in hotkeys.iter().enumerate() {
        let competition = if index % 2 == 0 { "l3" } else { "s1" };
        scenario.commit_verified(
            1,
            hotkey,
            index as u64 + 1,
            &model_string("b", &format!("m{index}"), competition),
        );
    }
    let _setup = scenario.drain();
    let mut steps: Vec<Vec<(u64, Event)>> = Vec::new();
    for step in 0..STEPS {
        let block = 10 + step as u64 * 26;
        scenario.run_step(block, 400, |uid| {
            Some(vec![2.0 + f32::from(uid) * 0.01; 400])
        });
        steps.push(
            scenario
                .drain()
                .into_iter()
                .map(|r| (r.block, r.event))
                .collect(),
        );
    }
    let bytes_per_step: Vec<Vec<u8>> = steps
        .iter()
        .map(|events| {
            events
                .iter()
                .flat_map(|(_, e)| codec::encode_event(e))
                .collect()
        })
        .collect();

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut journal = Journal::open(&dir.path().join("journal")).expect("journal");
    let sled_times: Vec<f64> = steps
        .iter()
        .map(|events| {
            let started = Instant::now();
            journal.append(events).expect("append");
            started.elapsed().as_secs_f64()
        })
        .collect();

    let mut file = std::fs::File::create(dir.path().join("plain")).expect("file");
    let file_times: Vec<f64> = bytes_per_step
        .iter()
        .map(|bytes| {
            let started = Instant::now();
            file.write_all(bytes).expect("write");
            file.sync_data().expect("sync");
            started.elapsed().as_secs_f64()
        })
        .collect();

    let sled_s = median(sled_times);
    let file_s = median(file_times);
    let kib = bytes_per_step[0].len() as f64 / 1024.0;
    println!(
        "one step = {} events, {kib:.0} KiB encoded; median of {STEPS} steps",
        steps[0].len()
    );
    println!(
        "  file write + fdatasync (baseline): {:8.3} ms",
        file_s * 1e3
    );
    println!(
        "  journal append + flush:            {:8.3} ms  ({:.2}× the baseline)",
        sled_s * 1e3,
        sled_s / file_s
    );
}
