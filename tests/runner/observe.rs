//! What operators and miners see, from a runner on the demo's journal: the leaderboard page in
//! a real browser (headless Chromium), its JSON and `/metrics` (parsed by a Prometheus
//! text-format parser) against replay of the same journal, and `/healthz` turning 503 when a
//! fake chain stalls the loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use validator::machine::Event;
use validator::replay::ReplayReport;
use validator::runner::config::{Backoff, RunConfig};
use validator::runner::edges::EdgeError;
use validator::runner::weights::NoWeights;
use validator::runner::{Edges, run};
use validator::testing::{FakeChain, FakeData, FakeEvaluator, MemoryStore};

use crate::replay_clean;

/// `validator run --demo` in a fresh process: the directory it wrote.
fn demo_dir() -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["run", "--demo", "--metrics-addr", "off"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo: files, journal and model cache in "))
        .expect("the demo names its directory");
    PathBuf::from(line.trim())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET: the status code and the body.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(output) = Command::new("which").arg(name).output()
            && output.status.success()
        {
            return PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        }
    }
    panic!("no Chromium: install Debian's `chromium` package (.ci/run does)");
}

/// Headless Chromium on `url` as the issue asks: the DOM after load and every console line.
fn browse(url: &str, screenshot: &Path) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let base = |command: &mut Command| {
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut dump = Command::new(chromium());
    base(&mut dump);
    let output = dump.args(["--dump-dom", url]).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut shot = Command::new(chromium());
    base(&mut shot);
    let shot_output = shot
        .args(["--window-size=1280,1800", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        shot_output.status.success(),
        "{}",
        String::from_utf8_lossy(&shot_output.stderr)
    );
    assert!(
        std::fs::metadata(screenshot).unwrap().len() > 10_000,
        "an empty screenshot"
    );
    let console = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&shot_output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        console,
    )
}

/// The value of `attribute` in each element of `dom` whose opening tag contains `marker`.
fn attribute_values(dom: &str, marker: &str, attribute: &str) -> Vec<String> {
    dom.match_indices(marker)
        .filter_map(|(at, _)| {
            let start = dom[..at].rfind('<')?;
            let end = at + dom[at..].find('>')?;
            let tag = &dom[start..end];
            let key = format!("{attribute}=\"");
            let from = tag.find(&key)? + key.len();
            Some(tag[from..].split('"').next()?.to_owned())
        })
        .collect()
}

/// The last replayed step of `competition`.
fn last_step<'a>(
    report: &'a ReplayReport,
    competition: &str,
) -> &'a validator::machine::StepRecord {
    &report
        .steps
        .iter()
        .rev()
        .find(|s| s.record.competition.as_str() == competition)
        .unwrap()
        .record
}

/// Postmortem-free contract test: the operator's and miner's view of the demo journal.
#[test]
fn a_runner_on_the_demo_journal_serves_the_page_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal");
    copy_dir(&demo_dir().join("journal"), &db);
    let report = replay_clean(&db);
    let final_weights = report.steps.last().unwrap().record.weights.clone();
    let port = free_port();

    let mut config = RunConfig::new(db.clone(), dir.path().join("cache"));
    config.print_tables = false;
    config.poll_interval = None;
    config.metrics_addr = Some(([127, 0, 0, 1], port).into());
    config.health_stall = Duration::from_secs(2);
    config.step_retry = Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(50),
    };
    // The chain never answers: the loop is alive but journals nothing, as a stalled edge does.
    let chain = FakeChain::new(0, 1, crate::fakes::observation());
    chain
        .failures
        .lock()
        .unwrap()
        .extend((0..100_000).map(|_| EdgeError::Unavailable("the chain is down (test)".into())));
    let edges = Edges::<_, _, _, _, NoWeights> {
        chain,
        store: MemoryStore::new(&dir.path().join("store")),
        evaluator: FakeEvaluator::default(),
        data: FakeData::new(4),
        weights: None,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    let running = runtime.spawn(run(config, edges, stop_seen));
    let started = Instant::now();

    let health = loop {
        match get(port, "/healthz") {
            Ok(answer) => break answer,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("the runner never served: {error}"),
        }
    };
    assert_eq!(health.0, 200, "{}", health.1);

    // The JSON agrees with replay of the same journal.
    let (code, api) = get(port, "/api/leaderboard").unwrap();
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["validator"]["steps_completed"], report.steps.len());
    let competitions = api["competitions"].as_array().unwrap();
    let names: Vec<&str> = competitions
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["l3", "s1"]);
    for competition in competitions {
        let id = competition["id"].as_str().unwrap();
        let recorded = last_step(&report, id);
        let history = competition["history"].as_array().unwrap();
        let replayed: Vec<u64> = report
            .steps
            .iter()
            .filter(|s| s.record.competition.as_str() == id)
            .map(|s| s.step)
            .collect();
        let shown: Vec<u64> = history
            .iter()
            .map(|p| p["step"].as_u64().unwrap())
            .collect();
        assert_eq!(shown, replayed, "competition {id}'s history");
        let last = history.last().unwrap()["uids"].as_array().unwrap();
        for (index, uid) in recorded.uids.iter().enumerate() {
            let point = last.iter().find(|p| p["uid"] == *uid).unwrap();
            assert_eq!(
                point["win_rate"].as_f64().unwrap(),
                recorded.win_rate[index]
            );
            assert_eq!(
                point["weight"].as_f64().unwrap(),
                recorded.weights[usize::from(*uid)]
            );
        }
        for row in competition["rows"].as_array().unwrap() {
            let uid = usize::try_from(row["uid"].as_u64().unwrap()).unwrap();
            assert_eq!(
                row["weight"].as_f64().unwrap(),
                final_weights[uid],
                "uid {uid}"
            );
        }
    }
    // The demo's Mallory fails its hash: miners see why.
    let rejected: Vec<&serde_json::Value> = competitions
        .iter()
        .flat_map(|c| c["rows"].as_array().unwrap())
        .filter(|r| r["status"] == "rejected")
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("hash_mismatch: ")
    );

    // Every documented metric, through a Prometheus text-format parser, agreeing with replay.
    // Chain calls are counted as they end: the first may still be under way on a busy machine
    // (postmortem: CI scraped before it ended and found no chain-call samples).
    let metrics = loop {
        let (code, metrics) = get(port, "/metrics").unwrap();
        assert_eq!(code, 200);
        if metrics.contains("validator_chain_calls_total{")
            || started.elapsed() > Duration::from_secs(60)
        {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let scrape =
        prometheus_parse::Scrape::parse(metrics.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for documented in [
        "validator_build_info",
        "validator_healthy",
        "validator_journal_block",
        "validator_journal_records_total",
        "validator_steps_completed",
        "validator_steps_total",
        "validator_step_duration_seconds_count",
        "validator_model_evaluation_duration_seconds_count",
        "validator_evaluations_total",
        "validator_models_verified_total",
        "validator_models_rejected_total",
        "validator_fetch_queue_length",
        "validator_eval_set_size",
        "validator_pending_size",
        "validator_uid_win_rate",
        "validator_uid_loss_mean",
        "validator_uid_weight",
        "validator_chain_calls_total",
        "validator_chain_errors_total",
        "validator_model_cache_bytes",
        "validator_disk_free_bytes",
    ] {
        assert!(
            names.contains(documented),
            "{documented} missing from\n{metrics}"
        );
    }
    let value = |sample: &prometheus_parse::Sample| match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => f64::NAN,
    };
    let completed: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "validator_steps_total" && s.labels.get("outcome") == Some("completed")
        })
        .map(value)
        .sum();
    assert_eq!(completed, 6.0);
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "validator_uid_weight")
    {
        let uid: usize = sample.labels.get("uid").unwrap().parse().unwrap();
        assert_eq!(value(sample), final_weights[uid], "uid {uid}");
    }
    let rejected: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "validator_models_rejected_total")
        .map(value)
        .sum();
    assert_eq!(rejected, 1.0);

    // The page in a real browser: every competition's table and plots, no console error, and
    // the numbers of the JSON.
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("leaderboard.png");
    let (dom, console) = browse(&format!("http://127.0.0.1:{port}/"), &screenshot);
    eprintln!("leaderboard screenshot: {}", screenshot.display());
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        std::fs::copy(
            &screenshot,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/leaderboard.png"),
        )
        .unwrap();
    }
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run:\n{dom}"
    );
    assert!(
        dom.contains("<p id=\"page-errors\"></p>"),
        "script errors on the page:\n{dom}"
    );
    let console_lines: Vec<&str> = console.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console_lines.is_empty(), "console: {console_lines:?}");
    let sections = attribute_values(&dom, "class=\"competition\"", "data-competition");
    assert_eq!(sections, ["l3", "s1"]);
    assert_eq!(
        dom.matches("<svg").count(),
        3 * sections.len(),
        "three plots per competition"
    );
    assert!(dom.contains("class=\"plot loss\"") && dom.contains("class=\"series\""));
    let weights_shown = attribute_values(&dom, "class=\"num weight\"", "data-sort");
    let weights_api: Vec<String> = competitions
        .iter()
        .flat_map(|c| c["rows"].as_array().unwrap())
        .map(|r| r["weight"].as_f64().unwrap().to_string())
        .collect();
    assert_eq!(weights_shown, weights_api);

    // Nothing journaled since: health turns 503.
    let stalled = loop {
        let answer = get(port, "/healthz").unwrap();
        if answer.0 == 503 || started.elapsed() > Duration::from_secs(60) {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stalled.0, 503, "{}", stalled.1);
    assert!(stalled.1.contains("no journal record"), "{}", stalled.1);
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(metrics.contains("\nvalidator_healthy 0\n"));

    stop.send(true).unwrap();
    let summary = runtime.block_on(running).unwrap().unwrap();
    assert_eq!(summary.steps_completed, 6);
    assert!(
        get(port, "/healthz").is_err(),
        "the endpoint outlived the run"
    );
    replay_clean(&db);

    // The same page and JSON as static files from the journal at rest.
    let out = dir.path().join("site");
    let written = Command::new(env!("CARGO_BIN_EXE_validator"))
        .args(["leaderboard", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    let at_rest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("leaderboard.json")).unwrap()).unwrap();
    assert_eq!(at_rest["competitions"], api["competitions"]);
    assert_eq!(at_rest["steps_recent"], api["steps_recent"]);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(page.matches("<svg").count(), 6);
}

/// N's step log: one line per completed step, the shape N logged to wandb, with the journal's
/// figures.
#[test]
fn the_step_log_has_a_line_per_step_in_n_wandb_shape() {
    let world = crate::fakes::World::new();
    let log = world.dir.path().join("steps.jsonl");
    let mut config = world.config(4);
    config.step_log = Some(log.clone());
    let (summary, dir) = world.run_with(config);
    summary.unwrap();
    let report = replay_clean(&dir.path().join("journal"));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), report.steps.len());
    for (line, step) in lines.iter().zip(&report.steps) {
        assert_eq!(line["step"], step.step);
        assert_eq!(line["competition_id"], step.record.competition.as_str());
        let original = line["original_format_json"].as_str().unwrap();
        // N's json.dumps writes an infinite loss as Infinity; read it as Python would.
        let original: serde_json::Value =
            serde_json::from_str(&original.replace("Infinity", "null")).unwrap();
        for (index, uid) in step.record.uids.iter().enumerate() {
            let key = uid.to_string();
            assert_eq!(line["win_rate_data"][&key], step.record.win_rate[index]);
            assert_eq!(line["win_total_data"][&key], step.record.wins[index]);
            assert_eq!(
                line["weight_data"][&key],
                step.record.weights[usize::from(*uid)]
            );
            let data = &original["uid_data"][&key];
            assert_eq!(data["uid"], *uid);
            assert_eq!(data["win_rate"], step.record.win_rate[index]);
            assert_eq!(data["win_total"], step.record.wins[index]);
            // An absent model is N's math.inf (null once read here); a model has its mean.
            if let Some(loss) = data["average_loss"].as_f64() {
                assert_eq!(line["uid_data"][&key].as_f64().unwrap(), loss);
                let perplexity = data["perplexity"].as_f64().unwrap();
                assert_eq!(perplexity, libm::exp(loss));
                assert!(data["block"].is_u64(), "{data}");
            } else {
                assert!(line["uid_data"][&key].is_null());
            }
        }
        assert_eq!(original["uids"], serde_json::json!(step.record.uids));
    }
}

/// Postmortem (issue 33, class 6): a loop that journals but never completes a step (every
/// batch refused, a cache it cannot write, a model that never gets a verdict) kept `/healthz`
/// at 200, because health only asked whether records were still written. It now also asks
/// when a step last completed.
#[test]
fn health_turns_503_when_records_flow_but_no_step_completes() {
    let world = crate::fakes::World::new();
    let port = free_port();
    let mut config = world.config(1_000);
    config.metrics_addr = Some(([127, 0, 0, 1], port).into());
    config.health_stall = Duration::from_secs(2);
    let mut data = FakeData::new(4);
    data.script = validator::testing::Script::new([Some(validator::data::DataError::Unavailable(
        "the data source is down (test)".into(),
    ))]);
    let db = world.db();
    let edges = Edges {
        chain: world.chain,
        store: world.store,
        evaluator: world.evaluator,
        data,
        weights: None::<std::sync::Arc<validator::testing::FakeWeights>>,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    let running = runtime.spawn(run(config, edges, stop_seen));
    let started = Instant::now();
    let stuck = loop {
        if let Ok(answer) = get(port, "/healthz")
            && (answer.0 == 503 || started.elapsed() > Duration::from_secs(60))
        {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never served");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stuck.0, 503, "{}", stuck.1);
    assert!(stuck.1.contains("no step completed"), "{}", stuck.1);
    stop.send(true).unwrap();
    let _ = runtime.block_on(running).unwrap();
    let failed = crate::fakes::records(&db)
        .iter()
        .filter(|e| matches!(e, Event::StepFailed(_)))
        .count();
    assert!(failed > 2, "records kept flowing: {failed} failed steps");
}

/// `count` hotkeys: the fakes' five, then miners whose commitments are not model ids (each a
/// row of the page with its refusal, and nothing to fetch).
fn crowded_observation(count: usize) -> validator::runner::edges::Observation {
    use validator::machine::event::{CommitmentField, CommitmentObserved};
    let mut observation = crate::fakes::observation();
    let mut commitments = Vec::new();
    let Event::MetagraphObserved(metagraph) = &mut observation.events[0] else {
        panic!("the fakes' observation starts with the metagraph")
    };
    for index in metagraph.hotkeys.len()..count {
        let hotkey = format!("5Crowd{index}");
        metagraph.hotkeys.push(hotkey.clone());
        metagraph.consensus.push(0);
        metagraph.stake.push(1);
        commitments.push(Event::CommitmentObserved(CommitmentObserved {
            hotkey,
            block_commit: 50,
            field: CommitmentField::Raw(validator::machine::wire::RawBytes(
                format!("not a model id {index}").into_bytes(),
            )),
        }));
    }
    observation.events.extend(commitments);
    observation
}

/// The steps the runner on `port` says it completed.
fn steps_completed(port: u16) -> Option<u64> {
    let (_, body) = get(port, "/healthz").ok()?;
    body.split(" steps completed")
        .next()?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Postmortem (issue 33, class 8): 16 slow connections held every slot, so the page and
/// `/healthz` were unreachable; and 8 clients of a 30,000-row page stopped the loop (0 steps
/// in 20 s), each request rendering the page on the runtime's threads under the lock the
/// journal writer needs. Connections now have bounded phases and more slots, probes have
/// overflow slots of their own, and the page comes from a cache rendered once per change on
/// a blocking thread, at most four sent at once.
#[test]
fn slow_clients_and_clients_of_a_huge_page_starve_neither_health_nor_the_loop() {
    let mut world = crate::fakes::World::new();
    world.chain = FakeChain::new(100, 10, crowded_observation(30_000));
    world.evaluator.evaluation_delay = Duration::from_millis(100);
    let port = free_port();
    let mut config = world.config(100_000);
    config.metrics_addr = Some(([127, 0, 0, 1], port).into());
    let edges = Edges {
        chain: world.chain,
        store: world.store,
        evaluator: world.evaluator,
        data: world.data,
        weights: None::<std::sync::Arc<validator::testing::FakeWeights>>,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stop_seen) = tokio::sync::watch::channel(false);
    let running = runtime.spawn(run(config, edges, stop_seen));
    let started = Instant::now();
    while steps_completed(port).unwrap_or(0) < 1 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no first step"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, api) = get(port, "/api/leaderboard").unwrap();
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let rows: usize = api["competitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rows"].as_array().unwrap().len())
        .sum::<usize>()
        + api["unassigned"].as_array().map_or(0, Vec::len);
    assert!(rows >= 29_000, "a crowded page: {rows} rows");

    // Slow clients: connected, a request begun and never finished.
    let slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();
    // Clients of the huge page, as fast as they can.
    let hammering = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let hammering = hammering.clone();
            std::thread::spawn(move || {
                let mut pages = 0u32;
                while hammering.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((200, body)) = get(port, "/") {
                        assert!(body.contains("5Crowd29999"));
                        pages += 1;
                    }
                }
                pages
            })
        })
        .collect();
    let steps_before = steps_completed(port).unwrap();
    let window = Instant::now();
    let mut slowest = Duration::ZERO;
    while window.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        let (code, body) = get(port, "/healthz").unwrap();
        slowest = slowest.max(asked.elapsed());
        assert_eq!(code, 200, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let steps_after = steps_completed(port).unwrap();
    hammering.store(false, std::sync::atomic::Ordering::Relaxed);
    let pages: u32 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    drop(slow);
    stop.send(true).unwrap();
    runtime.block_on(running).unwrap().unwrap();
    assert!(
        slowest < Duration::from_secs(2),
        "health answered in {slowest:?}"
    );
    assert!(pages >= 8, "the page was served {pages} times");
    assert!(
        steps_after > steps_before,
        "the loop went on: {steps_before} then {steps_after} steps"
    );
}

/// Postmortem (issue 33, class 8): what an operator saw in a real browser. Losses 2e-5 apart
/// got five identical y labels; a competition whose steps completed with no finite loss said
/// "no completed steps yet"; a long rejection reason pushed its table past a 1,400 px window.
/// The page of such a journal, in headless Chromium at 1,400 px.
#[test]
fn the_page_reads_right_in_a_browser_at_1400_px() {
    use validator::machine::event::{CommitmentField, CommitmentObserved, EvalOutcome};
    use validator::runner::edges::{Refusal, Verdict};
    let mut world = crate::fakes::World::new();
    world.evaluator.loss_of = std::sync::Arc::new(|dir, _| {
        if dir.to_string_lossy().contains("5Alice") {
            2.31
        } else {
            2.310_02
        }
    });
    for hotkey in ["5Carol", "5Dave"] {
        world.evaluator.outcomes.insert(
            world.dir_of(hotkey),
            validator::testing::Script::new([Ok(EvalOutcome::Failed("it fails".into()))]),
        );
    }
    let mut observation = crate::fakes::observation();
    if let Event::MetagraphObserved(metagraph) = &mut observation.events[0] {
        metagraph.hotkeys.push("5Erin".into());
        metagraph.consensus.push(0);
        metagraph.stake.push(1);
    }
    let raw = validator::synth::model_string("miner", "5erin", "l3");
    observation
        .events
        .push(Event::CommitmentObserved(CommitmentObserved {
            hotkey: "5Erin".into(),
            block_commit: 95,
            field: CommitmentField::Raw(validator::machine::wire::RawBytes(
                raw.clone().into_bytes(),
            )),
        }));
    world.chain = FakeChain::new(100, 10, observation);
    let commit = raw.split(':').nth(2).unwrap().to_owned();
    let reason = format!("a reason with no place to break {}", "x".repeat(3_000));
    world.store.script(
        "5Erin",
        &commit,
        [Ok(Verdict::Rejected(Refusal::new(
            validator::machine::event::RejectionCode::MalformedRepo,
            reason,
        )))],
    );
    let (ran, dir) = world.run(4);
    ran.unwrap();
    let out = dir.path().join("page");
    let written = Command::new(env!("CARGO_BIN_EXE_validator"))
        .arg("leaderboard")
        .arg("--db")
        .arg(dir.path().join("journal"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        written.status.success(),
        "{}",
        String::from_utf8_lossy(&written.stderr)
    );
    // The page as written, with a line that reports its layout into the DOM.
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("no place to break"), "the reason is shown");
    let measured = page.replace(
        "</body>",
        "<script>document.body.setAttribute('data-scroll-width',\
         String(document.documentElement.scrollWidth));</script></body>",
    );
    std::fs::write(out.join("measured.html"), measured).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1400,900",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", out.join("measured.html").display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let width: u32 = dom
        .split("data-scroll-width=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no measure in\n{}", &dom[..dom.len().min(2_000)]));
    assert!(width <= 1_400, "the page is {width} px wide");

    let section = |competition: &str| {
        let marker = format!("data-competition=\"{competition}\"");
        let start = dom.find(&marker).unwrap();
        let end = dom[start..]
            .find("</section>")
            .map_or(dom.len(), |e| start + e);
        dom[start..end].to_owned()
    };
    let l3 = section("l3");
    let loss_plot = l3.split("class=\"plot loss\"").nth(1).unwrap();
    let loss_plot = &loss_plot[..loss_plot.find("</svg>").unwrap()];
    let labels = attribute_free_texts(loss_plot, "class=\"tick-y\"");
    assert_eq!(labels.len(), 5, "{loss_plot}");
    assert!(
        labels.windows(2).all(|pair| pair[0] != pair[1]),
        "{labels:?}"
    );
    let s1 = section("s1");
    assert!(!s1.contains("no completed steps yet"), "{s1}");
    assert!(s1.contains("no finite value in the completed steps"));
}

/// The texts of the elements of `svg` whose opening tag contains `marker`.
fn attribute_free_texts(svg: &str, marker: &str) -> Vec<String> {
    svg.match_indices(marker)
        .filter_map(|(at, _)| {
            let from = at + svg[at..].find('>')? + 1;
            Some(svg[from..from + svg[from..].find('<')?].to_owned())
        })
        .collect()
}
