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

/// A datasets-server that answers one recorded scenario, request by request, over real HTTP
/// on loopback: each connection gets the next recorded answer (a recorded connection error
/// is a connection closed without a word). What each request asked is kept for the test.
struct Replayed {
    url: String,
    asked: std::sync::Arc<std::sync::Mutex<Vec<Asked>>>,
}

/// A request's path and its decoded query pairs.
type Asked = (String, Vec<(String, String)>);

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn replay_server(exchanges: Vec<Value>) -> Replayed {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for exchange in exchanges {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header == "\r\n" || header.is_empty() {
                    break;
                }
            }
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decoded(key), percent_decoded(value))
                })
                .collect();
            seen.lock().unwrap().push((path.to_string(), params));
            let answer = &exchange["answer"];
            let mut stream = stream;
            if answer.get("error").is_some() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                continue;
            }
            let status = answer["status"].as_u64().unwrap();
            let body = answer["body"].as_str().unwrap();
            let mut head = format!(
                "HTTP/1.1 {status} Recorded\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            if let Some(retry_after) = answer["headers"].get("Retry-After") {
                head.push_str(&format!(
                    "Retry-After: {}\r\n",
                    retry_after.as_str().unwrap()
                ));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    Replayed { url, asked }
}

/// The model driven over real HTTP by [`DatasetsServer`] ends each scenario as the model
/// driven by the recorded answers does, asking what F asked, and keeps every exchange.
#[test]
fn datasets_server_over_http_asks_what_the_successor_asked() {
    use validator::data::datasets_server::DatasetsServer;
    let fixture = fixture();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut checked = 0;
    for scenario in fixture["scenarios"].as_array().unwrap() {
        let name = scenario["name"].as_str().unwrap();
        if !(name.contains("storm")
            || name.contains("connection")
            || name.contains("exhaustion")
            || name.contains("retry_after")
            || name == "sft_sparse_0"
            || name == "codeforces_0")
        {
            continue;
        }
        let data = match scenario["dataset"].as_str().unwrap() {
            "PrimeIntellect/SYNTHETIC-1-SFT-Data" => TaskData::synthetic_1_sft(),
            _ => TaskData::codeforces_cots(),
        };
        let digest =
            validator::hashing::seed_from_block_hash(scenario["block_hash"].as_str().unwrap());
        let exchanges = scenario["exchanges"].as_array().unwrap().clone();
        let server = replay_server(exchanges.clone());
        let source = DatasetsServer {
            endpoint: server.url.clone(),
            timeout: std::time::Duration::from_secs(20),
        };
        let waited = std::sync::Mutex::new(Vec::new());
        let loaded = runtime
            .block_on(source.load(data, &digest, |wait| {
                waited.lock().unwrap().push(wait.as_secs());
                std::future::ready(())
            }))
            .unwrap();
        // The same model fed the recorded answers directly.
        let (mut load, mut next) = TaskLoad::start(data, &digest);
        for exchange in &exchanges {
            next = match next {
                Next::Size => load.answer_size(answer_of(exchange)),
                Next::Rows { .. } => load.answer_rows(answer_of(exchange)),
                Next::Done(_) => panic!("{name}: done early"),
            };
        }
        let Next::Done(expected) = next else {
            panic!("{name}: not done")
        };
        match (&loaded.outcome, &expected) {
            (TaskOutcome::Dropped(_), TaskOutcome::Dropped(_))
            | (TaskOutcome::StepAborted(_), TaskOutcome::StepAborted(_)) => {}
            (ours, theirs) => assert_eq!(ours, theirs, "{name}"),
        }
        assert_eq!(loaded.exchanges.len(), exchanges.len(), "{name}");
        let asked = server.asked.lock().unwrap().clone();
        for ((path, params), recorded) in asked.iter().zip(&exchanges) {
            assert_eq!(path, &format!("/{}", recorded["path"].as_str().unwrap()));
            for (key, value) in recorded["params"].as_object().unwrap() {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                assert!(
                    params.contains(&(key.clone(), value.clone())),
                    "{name}: {key}={value} not in {params:?}"
                );
            }
        }
        let recorded_waits: Vec<u64> = exchanges
            .iter()
            .map(|e| e["sleep_before"].as_u64().unwrap().min(RETRY_DELAY_MAX_S))
            .filter(|s| *s > 0)
            .collect();
        assert_eq!(*waited.lock().unwrap(), recorded_waits, "{name}");
        checked += 1;
    }
    assert!(checked >= 8, "{checked} scenarios over HTTP");
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Any answer a server could give: bodies that are JSON of the right shape, of the wrong
    /// shape, or not JSON; rate limits with any header; any status; silence.
    fn answer() -> impl Strategy<Value = Answer> {
        let rows = prop_oneof![
            Just(r#"{"rows": []}"#.to_string()),
            Just(r#"{"rows": {}}"#.to_string()),
            Just(r#"{"rows": "x"}"#.to_string()),
            Just(r#"{"nothing": 1}"#.to_string()),
            Just(r#"[1, 2]"#.to_string()),
            (0usize..120, any::<bool>()).prop_map(|(count, math)| {
                let kind = if math { "verifiable_math" } else { "code_output_prediction" };
                let row = format!(
                    r#"{{"row": {{"task_type": "{kind}", "messages": [{{"content": "q"}}, {{"content": "a \\boxed{{1}}"}}]}}}}"#
                );
                format!(r#"{{"rows": [{}]}}"#, vec![row; count].join(","))
            }),
            ".{0,40}".prop_map(|text| text),
        ];
        let size = prop_oneof![
            Just(r#"{"size": {"splits": [{"config": "a", "split": "train", "num_rows": 100000}]}}"#.to_string()),
            Just(r#"{"size": {"splits": [{"config": "a", "split": "train", "num_rows": 5}, {"config": "b", "split": "t", "num_rows": 1000}]}}"#.to_string()),
            Just(r#"{"size": {"splits": []}}"#.to_string()),
            Just(r#"{"size": {"splits": [{"config": "a", "split": "train", "num_rows": -4}]}}"#.to_string()),
            Just(r#"{"size": {"splits": [{"config": 1, "split": "train", "num_rows": 4}]}}"#.to_string()),
        ];
        prop_oneof![
            4 => rows.prop_map(|body| Answer::Body(body.into_bytes())),
            1 => size.prop_map(|body| Answer::Body(body.into_bytes())),
            1 => proptest::option::of(".{0,12}").prop_map(|retry_after| Answer::RateLimited { retry_after }),
            1 => (400u16..600).prop_map(Answer::Status),
            1 => Just(Answer::NoResponse("reset".into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever the server says, a task ends, within a bounded number of requests, and
        /// never waits longer than the cap before one.
        #[test]
        fn every_task_ends_whatever_the_server_says(
            sft in any::<bool>(),
            seed in proptest::collection::vec(any::<u8>(), 32),
            answers in proptest::collection::vec(answer(), 1..400),
        ) {
            let data = if sft { TaskData::synthetic_1_sft() } else { TaskData::codeforces_cots() };
            let (mut load, mut next) = TaskLoad::start(data, &seed);
            let mut asked = 0usize;
            // Eleven rounds of at most 16 pages, each with at most 10 failed attempts.
            let bound = 1 + 11 * (16 + 10);
            for answer in answers.iter().cycle() {
                next = match next {
                    Next::Size => load.answer_size(answer.clone()),
                    Next::Rows { wait_before_s, .. } => {
                        prop_assert!(wait_before_s <= RETRY_DELAY_MAX_S);
                        load.answer_rows(answer.clone())
                    }
                    Next::Done(_) => break,
                };
                asked += 1;
                prop_assert!(asked <= bound, "{asked} requests");
            }
        }
    }
}
