//! `validator run --mechanism f --offline` as a process: a recorded chain past the start of
//! competition 4, a local hub of tiny models of the classes the successor scores, a local
//! `datasets-server` answering `/size` and `/rows` in Hugging Face's form, and the fixture
//! schedule with competition 4's lower parameter bound lifted (the one thing tiny models need).
//! Its journal must hold the successor's steps (tasks, per-task losses, scores) and replay
//! clean, and the losses must be the reference loss the evaluator computes in process.

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use serde_json::{Value, json};
use validator::eval::template::{CivilDate, Isolation};
use validator::eval::tokenize::TokenizerFiles;
use validator::eval::{EvalOptions, Evaluator, ModelDir};
use validator::machine::event::{EvalOutcome, RejectionCode, TaskFetchOutcome};
use validator::machine::params::CompetitionId;
use validator::machine::{Event, MechanismParams};

use super::{journal_events, models, publish};

/// Rows of a reasoning dataset: `(config, rows)` per config, as `/size` lists them.
const CONFIGS: [(&str, u64); 2] = [("math", 700), ("code", 400)];

/// One row of `dataset` at `index`: SFT's verifiable math (every seventh of another task
/// type, which F filters), or a codeforces trace.
fn row(dataset: &str, index: u64) -> Value {
    if dataset.contains("SYNTHETIC") {
        let sum = index + 7;
        let task_type = if index % 7 == 3 {
            "llm_judgeable"
        } else {
            "verifiable_math"
        };
        json!({"row_idx": index, "row": {
            "messages": [
                {"role": "user", "content": format!("What is {index} plus 7?")},
                {"role": "assistant",
                 "content": format!("<think>{index} and 7 make {sum}.</think> So it is \\boxed{{{sum}}}.")}],
            "task_type": task_type}, "truncated_cells": []})
    } else {
        json!({"row_idx": index, "row": {
            "messages": [
                {"role": "user", "content": format!("Print {index}.")},
                {"role": "assistant", "content": format!("<think>Just print.</think>\nprint({index})  ")}]},
            "truncated_cells": []})
    }
}

fn answer(target: &str) -> (u16, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.replace("%2F", "/"))
    };
    let dataset = param("dataset").unwrap_or_default();
    match path {
        "/size" => {
            let splits: Vec<Value> = CONFIGS
                .iter()
                .map(|(config, rows)| {
                    json!({"dataset": dataset, "config": config, "split": "train", "num_rows": rows})
                })
                .collect();
            (
                200,
                json!({"size": {"dataset": dataset, "splits": splits}}).to_string(),
            )
        }
        "/rows" => {
            let offset: u64 = param("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
            let limit: u64 = param("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            let config = param("config").unwrap_or_default();
            let total = CONFIGS
                .iter()
                .find(|(c, _)| *c == config)
                .map_or(0, |(_, rows)| *rows);
            let end = (offset + limit.min(100)).min(total);
            let rows: Vec<Value> = (offset..end).map(|i| row(&dataset, i)).collect();
            (200, json!({"features": [], "rows": rows}).to_string())
        }
        _ => (404, "{}".into()),
    }
}

/// A `datasets-server` on a local port, answering every request until the process ends.
fn datasets_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header == "\r\n" || header.is_empty() {
                    break;
                }
            }
            let target = request_line.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = answer(target);
            let head = format!(
                "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    url
}

#[test]
fn a_successor_run_scores_competition_4_with_its_tasks_and_replays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let hub = dir.path().join("hub");
    let miners = [
        (
            "5A",
            "llama-f32",
            "1111111111111111111111111111111111111111",
            5_299_000,
        ),
        (
            "5B",
            "mistral-f32",
            "2222222222222222222222222222222222222222",
            5_299_100,
        ),
        (
            "5C",
            "gemma2-f32",
            "3333333333333333333333333333333333333333",
            5_299_900,
        ),
    ];
    let mut commitments = serde_json::Map::new();
    for (hotkey, model, commit, block) in miners {
        publish(&hub, model, "miner", model, commit);
        let hash = validator::dirhash::hash_of_directory(&models().join(model), Some(hotkey))
            .unwrap()
            .salted
            .unwrap();
        commitments.insert(
            hotkey.into(),
            json!({"block": block, "raw": format!("miner:{model}:{commit}:{hash}:4")}),
        );
    }
    // 5D's repository has a config.json that is not JSON: refused before the successor's
    // tracker takes it, so it stays pending and is looked at again later, not in a loop.
    let broken = "4444444444444444444444444444444444444444";
    publish(&hub, "llama-f32", "miner", "broken", broken);
    let broken_dir = hub.join("miner/broken").join(broken);
    std::fs::write(broken_dir.join("config.json"), "{").unwrap();
    let hash = validator::dirhash::hash_of_directory(&broken_dir, Some("5D"))
        .unwrap()
        .salted
        .unwrap();
    commitments.insert(
        "5D".into(),
        json!({"block": 5_299_000, "raw": format!("miner:broken:{broken}:{hash}:4")}),
    );
    let snapshot = json!({
        "netuid": 37, "start_block": 5_300_000, "blocks_per_step": 360,
        "timeline": [
            {"block": 5_299_000,
             "metagraph": {"hotkeys": ["5Owner", "5A", "5B", "5C", "5D"],
                           "consensus": [0, 0, 0, 0, 0],
                           "stake": [200_000, 1, 1, 1, 1],
                           "validator_permit": [true, false, false, false, false]},
             "commitments": commitments,
             "validators": [{"uid": 0, "stake": 200_000.0, "validator_permit": true,
                             "weights": [[3, 65_535]]}]}]});
    let snapshot_path = dir.path().join("chain.json");
    std::fs::write(&snapshot_path, snapshot.to_string()).unwrap();

    // The live schedule, with competition 4's lower bound down to what tiny models have.
    let mut params = MechanismParams::successor();
    let rules = params.rules.successor.as_mut().unwrap();
    for competition in &mut rules.competitions {
        competition.parameters_min = 1_000;
    }
    let params_path = dir.path().join("params.json");
    std::fs::write(&params_path, serde_json::to_string(&params).unwrap()).unwrap();

    let db = dir.path().join("journal");
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .arg("run")
        .args(["--metrics-addr", "off", "--offline", "--mechanism", "f"])
        .arg("--mechanism-params")
        .arg(&params_path)
        .arg("--chain-snapshot")
        .arg(&snapshot_path)
        .arg("--hub")
        .arg(format!("local:{}", hub.display()))
        .arg("--tokenizer")
        .arg(format!("4={}", models().join("llama-f32").display()))
        .arg("--datasets-server")
        .arg(datasets_server())
        .args(["--max-steps", "3", "--disk-free-min-bytes", "0"])
        .arg("--db")
        .arg(&db)
        .arg("--model_dir")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 completed steps"), "{stdout}");

    let events = journal_events(&db);
    let tasks: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::TasksFetched(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert!(!tasks.is_empty(), "no step loaded its tasks");
    let tokenizer_hash = validator::dirhash::hash_of_tokenizer_files(&models().join("llama-f32"));
    for fetched in &tasks {
        assert_eq!(fetched.tokenizer_hash, tokenizer_hash);
        let names: Vec<&str> = fetched.tasks.iter().map(|t| t.task.as_str()).collect();
        assert_eq!(names, ["SYNTHETIC_1_SFT", "CODEFORCES_COTS"]);
        for task in &fetched.tasks {
            let TaskFetchOutcome::Loaded {
                samples,
                provenance,
            } = &task.outcome
            else {
                panic!("{} dropped: {:?}", task.task, task.outcome)
            };
            assert!(!samples.is_empty());
            assert!(!provenance.references.is_empty() && !provenance.seed.is_empty());
        }
        // SFT loads until its target of 120 samples.
        let TaskFetchOutcome::Loaded { samples, .. } = &fetched.tasks[0].outcome else {
            unreachable!()
        };
        assert_eq!(samples.len(), 120);
    }
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ValidatorWeightsObserved(_))),
        "the recording's validators were not journaled"
    );

    // The first scored losses of the Llama are its reference losses, as evaluated here.
    let (step, losses) = events
        .iter()
        .find_map(|e| match e {
            Event::LossesComputed(l) if l.hotkey == "5A" => Some((l.step, l.outcome.clone())),
            _ => None,
        })
        .expect("the Llama was never evaluated");
    let EvalOutcome::TaskLosses(losses) = losses else {
        panic!("not per-task losses: {losses:?}")
    };
    let fetched = tasks.iter().find(|t| t.step == step).unwrap();
    let pairs = validator::runner::tasks::pairs_of(fetched);
    let tokenizer = TokenizerFiles::load(&models().join("llama-f32")).unwrap();
    let prepared = tokenizer
        .prepare_reference(&pairs, CivilDate::today(), &Isolation::InProcess)
        .unwrap();
    let model = ModelDir::open(&models().join("llama-f32")).unwrap();
    let options = EvalOptions {
        threads: 2,
        isolation: Isolation::InProcess,
        max_seq_len: validator::eval::SUCCESSOR_MAX_SEQ_LEN,
        ..EvalOptions::default()
    };
    let mut evaluator = Evaluator::new(&model, &options).unwrap();
    let journaled: Vec<f32> = losses.iter().flat_map(|l| l.0.iter().copied()).collect();
    assert_eq!(journaled.len(), prepared.len());
    for (sample, loss) in prepared.iter().zip(&journaled) {
        let here = evaluator.score_unpadded(sample);
        assert!(
            (here.loss - f64::from(*loss)).abs() < 1e-5,
            "{} vs {loss}",
            here.loss
        );
    }

    // Every participant got one score per step; the later commitment waited for its delay.
    let completed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepCompleted(c) => Some(c.recorded.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 3);
    assert!(
        completed
            .iter()
            .all(|r| r.competition == CompetitionId::new("4"))
    );
    let scored = completed.iter().filter(|r| !r.scores.is_empty()).count();
    assert!(scored >= 2, "{completed:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LossesComputed(l) if l.hotkey == "5C")),
        "the late commitment was never evaluated"
    );
    // 5C committed 100 blocks before the first step: it is downloaded only once 460 blocks
    // old, after step 0, and is scored in step 1. Postmortem: the fetcher counted the delay to
    // the journal's last block, which a quiet recorded chain does not move, so the step waited
    // out the start-up wait (600 s) and went on without it.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::LossesComputed(l) if l.hotkey == "5C" && l.step == 1)),
        "the late commitment missed the step after its delay"
    );
    let position = |wanted: &dyn Fn(&Event) -> bool| events.iter().position(wanted);
    let verified_late = position(&|e| matches!(e, Event::ModelVerified(v) if v.hotkey == "5C"));
    let first_completed = position(&|e| matches!(e, Event::StepCompleted(_)));
    assert!(
        verified_late > first_completed,
        "{verified_late:?} {first_completed:?}"
    );
    let refusals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::ModelRejected(r) if r.hotkey == "5D" => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(refusals, [RejectionCode::MalformedRepo], "{refusals:?}");
    validator::testing::replay_clean(&db);
}
