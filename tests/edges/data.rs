//! The data edge: the local file source, N's Cortex source against recorded wandb API
//! exchanges served by a local HTTP server (wiremock), and the Hugging Face source against
//! olah. No network beyond loopback.

#![cfg(feature = "data")]

use super::olah;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use validator::data::cortex::Cortex;
use validator::data::local::LocalFile;
use validator::data::{BatchOutcome, BatchRequest, DataError, DataSource, Seed, SkipReason};
use wiremock::matchers::{body_partial_json, body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BLOCK_HASH: &str = "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir)
}

fn request(seed: Seed, max_samples: usize) -> BatchRequest {
    BatchRequest {
        step: 7,
        seed,
        max_samples,
    }
}

fn json_of(outcome: &BatchOutcome) -> String {
    format!("{}\n", outcome.to_json())
}

fn prompts(outcome: &BatchOutcome) -> Vec<String> {
    outcome
        .batch
        .samples
        .iter()
        .map(|s| s.prompt.to_owned())
        .collect()
}

#[test]
fn local_batches_are_a_function_of_seed_and_step_and_skip_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.jsonl");
    let mut bytes = Vec::new();
    for i in 0..30 {
        bytes.extend_from_slice(
            format!("{{\"prompt\": \"p{i}\", \"response\": \"r{i}\"}}\n").as_bytes(),
        );
    }
    bytes.extend_from_slice(b"{\"prompt\": \"missing\"}\n{\"prompt\": [1], \"response\": \"x\"}\n");
    bytes
        .extend_from_slice(b"{\"prompt\": \"\xff\xfe\", \"response\": \"x\"}\nnot json at all\n\n");
    bytes.extend_from_slice(
        format!(
            "{{\"prompt\": \"{}\", \"response\": \"x\"}}\n",
            "y".repeat(300_000)
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(b"{\"prompt\": \"  \", \"response\": \"x\"}\n");
    std::fs::write(&file, &bytes).unwrap();
    let source = LocalFile::new(file.clone());
    let runtime = runtime();
    let fetch =
        |seed: Seed, max: usize| runtime.block_on(source.fetch(&request(seed, max))).unwrap();

    let first = fetch(Seed::from_block_hash(BLOCK_HASH), 1000);
    let second = fetch(Seed::from_block_hash(BLOCK_HASH), 1000);
    assert_eq!(
        json_of(&first),
        json_of(&second),
        "same block hash, same batch, byte for byte"
    );
    assert_eq!(first.batch.samples.len(), 30);
    assert_eq!(first.report.rows_seen, 36);
    let skipped = &first.report.skipped;
    assert_eq!(skipped[&SkipReason::MissingField], 1);
    assert_eq!(skipped[&SkipReason::WrongType], 1);
    assert_eq!(skipped[&SkipReason::NotUtf8], 1);
    assert_eq!(skipped[&SkipReason::Malformed], 1);
    assert_eq!(skipped[&SkipReason::TooLong], 1);
    assert_eq!(skipped[&SkipReason::Empty], 1);
    assert_eq!(
        first.batch.provenance.seed,
        "592572197532882810092427479703237300164718763613437077128565525142151814165"
    );

    let other = fetch(Seed::from_block_hash("0x01"), 10);
    assert_ne!(
        prompts(&fetch(Seed::from_block_hash(BLOCK_HASH), 10)),
        prompts(&other)
    );
    assert_eq!(other.batch.samples.len(), 10);

    // An empty source gives an empty batch, not an error.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").unwrap();
    let outcome = runtime
        .block_on(LocalFile::new(empty).fetch(&request(Seed::Unsynchronized(3), 10)))
        .unwrap();
    assert!(outcome.batch.samples.is_empty());
}

#[test]
fn the_sample_command_prints_identical_batches_for_one_block_hash() {
    let data = fixtures("models").join("samples.jsonl");
    let run = || {
        let output = Command::new(env!("CARGO_BIN_EXE_validator"))
            .args([
                "data",
                "sample",
                "--json",
                "--block-hash",
                BLOCK_HASH,
                "--max-samples",
                "5",
                "--source",
            ])
            .arg(format!("local:{}", data.display()))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let first = run();
    assert_eq!(first, run());
    let json: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        json["batch_fetched"]["samples"].as_array().unwrap().len(),
        5
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["data", "sample", "--source", "ftp:nowhere"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_same_seed_always_yields_the_same_batch(rows in 2usize..60, a in any::<u64>(), b in any::<u64>(), step in 0u64..100) {
        prop_assume!(a != b);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.jsonl");
        let text: String = (0..rows).map(|i| format!("{{\"prompt\": \"p{i}\", \"response\": \"r{i}\"}}\n")).collect();
        std::fs::write(&file, text).unwrap();
        let source = LocalFile::new(file);
        let runtime = runtime();
        let take = rows.min(40);
        let fetch = |seed: u64| {
            let request = BatchRequest { step, seed: Seed::Unsynchronized(seed), max_samples: take };
            runtime.block_on(source.fetch(&request)).unwrap()
        };
        prop_assert_eq!(json_of(&fetch(a)), json_of(&fetch(a)));
        // Two seeds give the same order only by coincidence (1 in rows! when all are taken).
        if rows >= 8 {
            prop_assert_ne!(prompts(&fetch(a)), prompts(&fetch(b)));
        }
    }
}

fn recorded(name: &str) -> ResponseTemplate {
    let body = std::fs::read(fixtures("wandb").join(name)).unwrap();
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

/// A server answering the recorded exchanges.
async fn wandb_server() -> MockServer {
    let server = MockServer::start().await;
    let graphql = || Mock::given(method("POST")).and(path("/graphql"));
    graphql()
        .and(body_string_contains("query Runs("))
        .and(body_partial_json(serde_json::json!({"variables": {"cursor": null, "entity": "cortex-t", "project": "multi-modality"}})))
        .respond_with(recorded("runs_page1.json"))
        .mount(&server)
        .await;
    graphql()
        .and(body_string_contains("query Runs("))
        .and(body_partial_json(
            serde_json::json!({"variables": {"cursor": "YXJyYXljb25uZWN0aW9uOjE="}}),
        ))
        .respond_with(recorded("runs_page2.json"))
        .mount(&server)
        .await;
    for run in ["r2b7xq01", "k9ma3c22", "z0q5pn33"] {
        graphql()
            .and(body_string_contains("query RunHistoryKeys("))
            .and(body_partial_json(
                serde_json::json!({"variables": {"name": run}}),
            ))
            .respond_with(recorded(&format!("history_keys_{run}.json")))
            .mount(&server)
            .await;
    }
    for (run, step) in [("r2b7xq01", 1234), ("k9ma3c22", 87)] {
        graphql()
            .and(body_string_contains("query HistoryPage("))
            .and(body_partial_json(serde_json::json!({"variables": {"run": run, "minStep": step, "maxStep": step + 1, "pageSize": 1}})))
            .respond_with(recorded(&format!("history_{run}.json")))
            .mount(&server)
            .await;
    }
    server
}

fn cortex(server: &MockServer) -> Cortex {
    let mut source = Cortex::n_defaults(&server.uri());
    source.api_key = None;
    source.timeout = Duration::from_secs(5);
    source.attempts = 3;
    source.backoff = Duration::from_millis(10);
    source
}

#[test]
fn cortex_follows_n_over_the_recorded_api() {
    let runtime = runtime();
    let server = runtime.block_on(wandb_server());
    let source = cortex(&server);
    let outcome = runtime
        .block_on(source.fetch(&request(Seed::from_block_hash(BLOCK_HASH), 400)))
        .unwrap();
    let mut pairs: Vec<(String, String)> = outcome
        .batch
        .samples
        .iter()
        .map(|s| (s.prompt.to_owned(), s.response.to_owned()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("Count to three.", "One, two, three."),
            (
                "Explain photosynthesis in one sentence.",
                "Plants turn light, water and CO2 into sugar and oxygen."
            ),
            ("Name a prime number.", "Seven."),
            ("The last uid.", "Still read."),
            ("Translate 'bonjour'.", "Hello."),
        ]
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
    );
    let skipped = &outcome.report.skipped;
    assert_eq!(skipped[&SkipReason::Empty], 1);
    assert_eq!(
        skipped[&SkipReason::UnwantedPhrase],
        2,
        "'As an AI' and 'GPT'"
    );
    assert_eq!(skipped[&SkipReason::WrongType], 1);
    assert_eq!(skipped[&SkipReason::MissingField], 1);
    assert_eq!(skipped[&SkipReason::Malformed], 1);
    assert!(
        outcome
            .batch
            .samples
            .iter()
            .all(|s| s.origin.contains("/step"))
    );
    assert_eq!(
        outcome.batch.provenance.source,
        "wandb:cortex-t/multi-modality"
    );
    assert_eq!(outcome.batch.provenance.references.len(), 3);

    // The same block hash gives the same batch byte for byte; another seed, another run order.
    let again = runtime
        .block_on(source.fetch(&request(Seed::from_block_hash(BLOCK_HASH), 400)))
        .unwrap();
    assert_eq!(json_of(&outcome), json_of(&again));
    let orders: std::collections::BTreeSet<Vec<String>> = (0..8u64)
        .map(|seed| {
            runtime
                .block_on(source.fetch(&request(Seed::Unsynchronized(seed), 400)))
                .unwrap()
                .batch
                .provenance
                .references
        })
        .collect();
    assert!(orders.len() > 1, "the seed does not change the run order");

    // max_samples stops the batch.
    let two = runtime
        .block_on(source.fetch(&request(Seed::from_block_hash(BLOCK_HASH), 2)))
        .unwrap();
    assert_eq!(two.batch.samples.len(), 2);
}

#[test]
fn cortex_retries_with_backoff_and_gives_up_clearly() {
    let runtime = runtime();
    let server = runtime.block_on(wandb_server());
    // One failure first: the retry succeeds.
    runtime.block_on(
        Mock::given(method("POST"))
            .and(path("/graphql"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server),
    );
    let outcome = runtime
        .block_on(cortex(&server).fetch(&request(Seed::from_block_hash(BLOCK_HASH), 400)))
        .unwrap();
    assert_eq!(outcome.batch.samples.len(), 5);

    // A server that never answers in time: a clear error after the attempts, no hang.
    let slow = runtime.block_on(MockServer::start());
    runtime.block_on(
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&slow),
    );
    let mut source = cortex(&slow);
    source.timeout = Duration::from_millis(300);
    source.attempts = 2;
    let started = std::time::Instant::now();
    let error = runtime
        .block_on(source.fetch(&request(Seed::Unsynchronized(1), 10)))
        .unwrap_err();
    assert!(matches!(error, DataError::Unavailable(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // Garbage instead of GraphQL: unavailable, not a crash.
    let garbage = runtime.block_on(MockServer::start());
    runtime.block_on(
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_raw(vec![0xffu8, 0x00, 0x13], "application/json"),
            )
            .mount(&garbage),
    );
    let error = runtime
        .block_on(cortex(&garbage).fetch(&request(Seed::Unsynchronized(1), 10)))
        .unwrap_err();
    assert!(error.to_string().contains("not JSON"), "{error}");
}

#[cfg(feature = "hub")]
#[test]
fn hugging_face_dataset_files_through_olah() {
    use validator::data::hf::HfDataset;
    use validator::hub::{Hub, HubOptions};

    let Some(cli) = olah::olah() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mirror = scratch.path().join("mirror");
    let files = vec![
        (
            "data/qa.jsonl",
            std::fs::read(fixtures("datasets").join("qa.jsonl")).unwrap(),
        ),
        (
            "data/qa.parquet",
            std::fs::read(fixtures("datasets").join("qa.parquet")).unwrap(),
        ),
        ("README.md", b"# qa\n".to_vec()),
    ];
    let commit = olah::git_repo_of(&mirror, "datasets", "acme", "qa", &files, &[]);
    let server = olah::Server::start(&cli, &mirror, scratch.path(), olah::free_port());
    let source = |prefix: &str, cache: &Path| {
        let mut options = HubOptions::new(cache.to_owned());
        options.endpoint = Some(server.endpoint());
        HfDataset {
            hub: Hub::new(options).unwrap(),
            repo: "acme/qa".into(),
            revision: commit.clone(),
            path_prefix: prefix.into(),
            prompt_field: "question".into(),
            response_field: "answer".into(),
            phrase_filter: false,
            cache_dir: cache.to_owned(),
        }
    };
    let runtime = runtime();
    for prefix in ["data/qa.jsonl", "data/qa.parquet"] {
        let outcome = runtime
            .block_on(
                source(prefix, &scratch.path().join("cache-a"))
                    .fetch(&request(Seed::from_block_hash(BLOCK_HASH), 100)),
            )
            .unwrap();
        assert_eq!(
            outcome.batch.samples.len(),
            38,
            "{prefix}: 40 rows, one empty answer, one missing question"
        );
        assert!(
            outcome
                .batch
                .samples
                .iter()
                .all(|s| s.prompt.starts_with("Question")),
            "{prefix}"
        );
        // A fresh cache, the same block hash: the same batch, byte for byte.
        let again = runtime
            .block_on(
                source(prefix, &scratch.path().join("cache-b"))
                    .fetch(&request(Seed::from_block_hash(BLOCK_HASH), 100)),
            )
            .unwrap();
        assert_eq!(json_of(&outcome), json_of(&again), "{prefix}");
    }
    let both = runtime
        .block_on(
            source("data", &scratch.path().join("cache-a"))
                .fetch(&request(Seed::from_block_hash(BLOCK_HASH), 10)),
        )
        .unwrap();
    assert_eq!(both.batch.samples.len(), 10);
    assert!(both.batch.provenance.source.starts_with("hf:acme/qa@"));

    // A revision that does not exist is a configuration error, said clearly.
    let mut missing = source("data", &scratch.path().join("cache-c"));
    missing.revision = "0123456789abcdef0123456789abcdef01234567".into();
    let error = runtime
        .block_on(missing.fetch(&request(Seed::Unsynchronized(1), 10)))
        .unwrap_err();
    assert!(matches!(error, DataError::Config(_)), "{error}");
    server.stop();
}
