//! The successor's data path against the successor's own loaders: `fixtures/successor_data/
//! exchanges.json` holds what F's `Synthetic1SFTLoader` and `CodeforcesCOTSLoader` asked a
//! scripted datasets-server, what they were answered (pages, rate limits with and without
//! `Retry-After`, server errors, refused connections, bodies that are not JSON, broken rows,
//! datasets too small for the grid) and how each task ended, recorded by
//! `fixtures/successor_data/generate.py` running F's code. [`TaskLoad`] must ask for the same
//! pages in the same order after the same waits, and end the same way with the same samples.

#![cfg(feature = "data")]

use serde_json::Value;
use sha2::{Digest, Sha256};
use validator::data::reasoning::{
    Answer, Next, Page, RETRY_DELAY_MAX_S, TaskData, TaskLoad, TaskOutcome,
};

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/successor_data/exchanges.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn answer_of(exchange: &Value) -> Answer {
    let answer = &exchange["answer"];
    if let Some(error) = answer.get("error") {
        return Answer::NoResponse(error.as_str().unwrap().into());
    }
    let status = u16::try_from(answer["status"].as_u64().unwrap()).unwrap();
    match status {
        200 => Answer::Body(answer["body"].as_str().unwrap().as_bytes().to_vec()),
        429 => Answer::RateLimited {
            retry_after: answer["headers"]
                .get("Retry-After")
                .map(|v| v.as_str().unwrap().to_string()),
        },
        other => Answer::Status(other),
    }
}

fn check_scenario(scenario: &Value) {
    let name = scenario["name"].as_str().unwrap();
    let data = match scenario["dataset"].as_str().unwrap() {
        "PrimeIntellect/SYNTHETIC-1-SFT-Data" => TaskData::synthetic_1_sft(),
        "open-r1/codeforces-cots" => TaskData::codeforces_cots(),
        other => panic!("{name}: unknown dataset {other}"),
    };
    let digest = validator::hashing::seed_from_block_hash(scenario["block_hash"].as_str().unwrap());
    let (mut load, mut next) = TaskLoad::start(data, &digest);
    let mut fetched: Vec<Page> = Vec::new();
    for (index, exchange) in scenario["exchanges"].as_array().unwrap().iter().enumerate() {
        let context = format!("{name}, request {index}");
        let params = &exchange["params"];
        let answer = answer_of(exchange);
        match (&next, exchange["path"].as_str().unwrap()) {
            (Next::Size, "size") => {
                assert_eq!(params["dataset"], data.dataset.name(), "{context}");
                next = load.answer_size(answer);
            }
            (
                Next::Rows {
                    page,
                    wait_before_s,
                },
                "rows",
            ) => {
                let expected = Page {
                    config: params["config"].as_str().unwrap().into(),
                    offset: params["offset"].as_i64().unwrap(),
                    split: params["split"].as_str().unwrap().into(),
                };
                assert_eq!(page, &expected, "{context}");
                assert_eq!(
                    params["limit"].as_u64(),
                    Some(u64::from(data.rows_per_page))
                );
                // F sleeps a server's Retry-After whatever it says; we wait at most a minute.
                let slept = exchange["sleep_before"].as_u64().unwrap();
                assert_eq!(*wait_before_s, slept.min(RETRY_DELAY_MAX_S), "{context}");
                if matches!(answer, Answer::Body(_)) {
                    fetched.push(expected);
                }
                next = load.answer_rows(answer);
            }
            (other, path) => panic!("{context}: F asked /{path}, the model says {other:?}"),
        }
    }
    let Next::Done(outcome) = next else {
        panic!("{name}: F stopped asking, the model asks on: {next:?}");
    };
    let recorded = &scenario["outcome"];
    match (outcome, recorded) {
        (
            TaskOutcome::Loaded {
                samples,
                pages,
                rows_buffered,
            },
            recorded,
        ) if recorded.get("loaded").is_some() => {
            let loaded = &recorded["loaded"];
            assert_eq!(pages, fetched, "{name}");
            assert_eq!(
                rows_buffered as u64,
                loaded["rows_buffered"].as_u64().unwrap()
            );
            let pairs: Vec<[&str; 2]> = samples
                .iter()
                .map(|s| [s.question.as_str(), s.reference.as_str()])
                .collect();
            assert_eq!(pairs.len() as u64, loaded["sample_count"].as_u64().unwrap());
            for (ours, theirs) in pairs
                .iter()
                .zip(loaded["samples_first"].as_array().unwrap())
            {
                assert_eq!(ours[0], theirs[0].as_str().unwrap(), "{name}");
                assert_eq!(ours[1], theirs[1].as_str().unwrap(), "{name}");
            }
            let text = serde_json::to_string(&pairs).unwrap();
            assert_eq!(
                hex(&Sha256::digest(text.as_bytes())),
                loaded["samples_sha256"].as_str().unwrap(),
                "{name}: the samples differ"
            );
        }
        (TaskOutcome::Dropped(_), recorded) if recorded.get("dropped").is_some() => {}
        (TaskOutcome::StepAborted(_), recorded) if recorded.get("aborted").is_some() => {}
        (ours, recorded) => panic!("{name}: the model ends {ours:?}, F ends {recorded}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_successors_loaders_are_reproduced_request_by_request() {
    let fixture = fixture();
    let scenarios = fixture["scenarios"].as_array().unwrap();
    assert!(scenarios.len() >= 30);
    for scenario in scenarios {
        check_scenario(scenario);
    }
}
