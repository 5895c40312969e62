//! Remote evaluation workers over a real NATS JetStream server (Debian's `nats-server`, which
//! `.ci/run` installs), on the demo's files: two workers share the steps and agree with a local
//! run; a worker killed mid-job, a stalled worker, a restarted server and a forged result each
//! end with exactly one `LossesComputed` per (step, uid), the local run's.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::StreamExt;
use validator::journal::Journal;
use validator::machine::Event;
use validator::machine::event::{EvalOutcome, ReportVerdict};
use validator::runner::demo::{DemoFiles, write_demo};
use validator::runner::queue::{
    JobMessage, MESSAGE_VERSION, QueueOptions, ResultMessage, WorkerKey, jobs_subject,
    results_subject, workers_consumer,
};

/// The workers every test trusts, by name: their keys are made once, in `work`, before the
/// runner starts (it reads the list of trusted public keys then).
const TRUSTED: [&str; 6] = ["one", "two", "doomed", "survivor", "stalled", "other"];

/// `work/NAME.nk`, the key of the worker `name` (made when missing).
fn key_file(work: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(work).unwrap();
    let path = work.join(format!("{name}.nk"));
    WorkerKey::load_or_create(&path).unwrap();
    path
}

/// `work/trusted`: the public keys of `names`' workers, one a line.
fn trusted_list(work: &Path, names: &[&str]) -> PathBuf {
    let lines: Vec<String> = names
        .iter()
        .map(|name| {
            let (key, _) = WorkerKey::load_or_create(&key_file(work, name)).unwrap();
            format!("{} {name}", key.public_key())
        })
        .collect();
    let path = work.join("trusted");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

/// Steps each queued run goes through: one of each competition.
const STEPS: u64 = 2;

fn program() -> &'static str {
    env!("CARGO_BIN_EXE_validator")
}

/// A JetStream server on a free loopback port, its store in a directory, killed on drop.
struct Nats {
    child: Child,
    port: u16,
    /// Its configuration file.
    config: PathBuf,
}

fn nats_server() -> PathBuf {
    for candidate in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    let found = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    assert!(
        !found.is_empty(),
        "nats-server is missing: `apt-get install nats-server` (.ci/run installs it)"
    );
    found.into()
}

impl Nats {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// A server with `extra` appended to its configuration (users and their permissions).
    fn start_with(dir: &Path, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = dir.join("jetstream");
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: {:?} }}\n{extra}\n",
                store.display().to_string()
            ),
        )
        .unwrap();
        let child = Self::spawn(port, &config);
        Self {
            child,
            port,
            config,
        }
    }

    fn spawn(port: u16, config: &Path) -> Child {
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server outright and starts it again on the same port and store.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(500));
        self.child = Self::spawn(self.port, &self.config);
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed on drop, its stderr in a file.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let file = std::fs::File::open(&self.log).unwrap();
            if std::io::BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(needle))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {} within {limit:?}:\n{}",
                self.log.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_logged(mut command: Command, log: PathBuf) -> Process {
    let file = std::fs::File::create(&log).unwrap();
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Process { child, log }
}

/// `validator run` on the demo's files, evaluating on one local CPU thread or, given a queue,
/// through it.
fn runner(files: &DemoFiles, work: &Path, queue: Option<(&str, u64)>, steps: u64) -> Process {
    let mut command = Command::new(program());
    command
        .arg("run")
        .args(["--metrics-addr", "off", "--offline", "--threads", "1"])
        .arg("--chain-snapshot")
        .arg(&files.snapshot)
        .arg("--hub")
        .arg(format!("local:{}", files.hub.display()))
        .arg("--data-source")
        .arg(format!("local:{}", files.data.display()))
        .arg("--tokenizer")
        .arg(format!("l3={}", files.tokenizer_l3.display()))
        .arg("--tokenizer")
        .arg(format!("s1={}", files.tokenizer_s1.display()))
        .args([
            "--max-steps",
            &steps.to_string(),
            "--disk-free-min-bytes",
            "0",
        ])
        .arg("--db")
        .arg(work.join("journal"))
        .arg("--model_dir")
        .arg(work.join("cache"));
    if let Some((url, ack_wait_s)) = queue {
        let trusted: Vec<&str> = TRUSTED
            .iter()
            .copied()
            .chain(["honest", "intruder"])
            .collect();
        command
            .args(["--eval-queue", url])
            .args(["--queue-ack-wait-s", &ack_wait_s.to_string()])
            .arg("--queue-trusted-workers")
            .arg(trusted_list(work, &trusted));
        if !url.contains('@') {
            command.arg("--eval-queue-insecure");
        }
    }
    std::fs::create_dir_all(work).unwrap();
    spawn_logged(command, work.join("runner.log"))
}

fn worker(files: &DemoFiles, work: &Path, name: &str, url: &str, ack_wait_s: u64) -> Command {
    let mut command = Command::new(program());
    command
        .arg("eval-worker")
        .args([
            "--queue",
            url,
            "--threads",
            "1",
            "--disk-free-min-bytes",
            "0",
        ])
        .args(["--queue-ack-wait-s", &ack_wait_s.to_string()])
        .arg("--hub")
        .arg(format!("local:{}", files.hub.display()))
        .arg("--model-dir")
        .arg(work.join(format!("{name}-cache")))
        .arg("--worker-key")
        .arg(key_file(work, name));
    command
}

fn spawn_worker(files: &DemoFiles, work: &Path, name: &str, url: &str, ack_wait_s: u64) -> Process {
    std::fs::create_dir_all(work).unwrap();
    spawn_logged(
        worker(files, work, name, url, ack_wait_s),
        work.join(format!("{name}.log")),
    )
}

fn finish(mut runner: Process, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = runner.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the runner failed: {status}\n{}",
                runner.log_text()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the runner did not finish within {limit:?}:\n{}",
            runner.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every `LossesComputed` of a journal by (step, uid), checked to be one each, with the
/// reports journaled beside them.
struct Journaled {
    losses: BTreeMap<(u64, u16), EvalOutcome>,
    accepted: BTreeMap<(u64, u16), String>,
    refused: Vec<((u64, u16), String)>,
}

fn journaled(db: &Path) -> Journaled {
    super::replay_clean(db);
    let journal = Journal::open_existing(db).unwrap();
    let mut losses = BTreeMap::new();
    let mut accepted = BTreeMap::new();
    let mut refused = Vec::new();
    for record in journal.all_records() {
        match record.unwrap().event {
            Event::LossesComputed(l) => {
                let again = losses.insert((l.step, l.uid), l.outcome);
                assert!(
                    again.is_none(),
                    "a second LossesComputed for {:?}",
                    (l.step, l.uid)
                );
            }
            Event::EvaluationReported(r) => match r.verdict {
                ReportVerdict::Accepted => {
                    let again = accepted.insert((r.step, r.uid), r.worker_id);
                    assert!(
                        again.is_none(),
                        "a second accepted report for {:?}",
                        (r.step, r.uid)
                    );
                }
                ReportVerdict::Refused(why) => refused.push(((r.step, r.uid), why)),
            },
            Event::StepFailed(f) => panic!("step {} failed: {}", f.step, f.reason),
            _ => {}
        }
    }
    Journaled {
        losses,
        accepted,
        refused,
    }
}

/// Where the demo's files are, the files, and a local run's losses by (step, uid).
type Reference = (PathBuf, DemoFiles, BTreeMap<(u64, u16), EvalOutcome>);

/// The demo's files and the losses of a local run of them (one CPU thread), made once.
fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let files = write_demo(&dir.join("files")).unwrap();
        let work = dir.join("local");
        finish(runner(&files, &work, None, STEPS), Duration::from_secs(300));
        let losses = journaled(&work.join("journal")).losses;
        assert!(!losses.is_empty());
        (dir, files, losses)
    })
}

/// The queued run's losses are the local run's, and every one came with an accepted report.
fn check_against_reference(db: &Path) -> Journaled {
    let (_, _, expected) = reference();
    let journaled = journaled(db);
    assert_eq!(
        &journaled.losses, expected,
        "the queued losses differ from the local run's"
    );
    let evaluated: Vec<&(u64, u16)> = journaled
        .losses
        .iter()
        .filter(|(_, outcome)| matches!(outcome, EvalOutcome::Losses(_)))
        .map(|(key, _)| key)
        .collect();
    for key in evaluated {
        assert!(
            journaled.accepted.contains_key(key),
            "no report for {key:?}"
        );
    }
    journaled
}

#[test]
fn two_remote_workers_share_the_steps_and_agree_with_a_local_run() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let one = spawn_worker(files, &work, "one", &nats.url(), 30);
    let two = spawn_worker(files, &work, "two", &nats.url(), 30);
    finish(
        runner(files, &work, Some((&nats.url(), 30)), STEPS),
        Duration::from_secs(300),
    );
    let journaled = check_against_reference(&work.join("journal"));
    assert!(journaled.refused.is_empty(), "{:?}", journaled.refused);
    // Both workers took jobs, and the journal tells them apart though they share a host and
    // a device (postmortem, issue 33, class 8: they were indistinguishable).
    let ids: std::collections::BTreeSet<&str> = journaled
        .accepted
        .values()
        .map(|id| id.split(':').next().unwrap())
        .collect();
    assert_eq!(ids, ["one", "two"].into(), "{:?}", journaled.accepted);
    for worker in [&one, &two] {
        assert!(
            worker.log_text().contains("result published"),
            "{} evaluated nothing:\n{}",
            worker.log.display(),
            worker.log_text()
        );
    }
}

/// A worker killed mid-job hands its job to another within the runner's ack wait. Postmortem
/// (issue 33, class 1): the `workers` consumer kept the settings of whoever made it first, so
/// a worker started before the runner set its own ack wait and the runner's
/// `--queue-ack-wait-s` was silently ignored: here the doomed worker asks for 600 s and makes
/// the consumer, and the job must still come back after the runner's 3 s.
#[test]
fn a_worker_killed_mid_job_hands_its_job_to_another() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    std::fs::create_dir_all(&work).unwrap();
    // This worker kills itself (SIGKILL) after evaluating its first job, before publishing.
    let mut doomed = worker(files, &work, "doomed", &nats.url(), 600);
    doomed.env("VALIDATOR_FAILPOINT", "eval-worker-before-publishing");
    let mut doomed = spawn_logged(doomed, work.join("doomed.log"));
    doomed.wait_for("pulling evaluation jobs", Duration::from_secs(60));
    let run = runner(files, &work, Some((&nats.url(), 3)), STEPS);
    let status = doomed.child.wait().unwrap();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&status) == Some(9),
        "the worker should have died of SIGKILL mid-job: {status}\n{}",
        doomed.log_text()
    );
    let survivor = spawn_worker(files, &work, "survivor", &nats.url(), 3);
    finish(run, Duration::from_secs(120));
    assert!(
        survivor.log_text().contains("(delivery 2)"),
        "the killed worker's job was not delivered again:\n{}",
        survivor.log_text()
    );
    check_against_reference(&work.join("journal"));
}

#[test]
fn a_stalled_worker_is_overtaken_and_its_late_result_is_not_journaled_twice() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let stalled = spawn_worker(files, &work, "stalled", &nats.url(), 3);
    let run = runner(files, &work, Some((&nats.url(), 3)), STEPS);
    // Frozen as soon as it holds a job: it never answers within the ack wait.
    stalled.wait_for("(delivery 1)", Duration::from_secs(120));
    stalled.signal("STOP");
    let other = spawn_worker(files, &work, "other", &nats.url(), 3);
    other.wait_for("(delivery 2)", Duration::from_secs(60));
    // Thawed: it finishes and publishes a result that is now a duplicate.
    stalled.signal("CONT");
    finish(run, Duration::from_secs(300));
    check_against_reference(&work.join("journal"));
}

#[test]
fn a_queue_server_restarted_mid_step_loses_and_duplicates_nothing() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let one = spawn_worker(files, &work, "one", &nats.url(), 10);
    let _two = spawn_worker(files, &work, "two", &nats.url(), 10);
    let run = runner(files, &work, Some((&nats.url(), 10)), STEPS);
    one.wait_for("(delivery 1)", Duration::from_secs(120));
    nats.restart();
    finish(run, Duration::from_secs(300));
    check_against_reference(&work.join("journal"));
}

/// Postmortem (issue 33, class 1): without queue credentials any client could publish
/// results, and 8 of 8 forged results were journaled as `LossesComputed` (losses of 0.001 for
/// chosen uids): the runner took the first result naming the job's batch digest and model
/// hash, both public to every queue client. A result now counts only when a worker the
/// runner trusts signed it, for the very job the runner published. Unsigned results, results
/// signed by a stranger's key and signed results changed after signing are dropped, never
/// journaled; a trusted worker's result for another batch is refused and journaled once,
/// however often it comes; the honest worker's result is taken.
#[test]
fn forged_unsigned_and_tampered_results_are_never_journaled() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let run = runner(files, &work, Some((&nats.url(), 30)), STEPS);
    let (trusted_key, _) = WorkerKey::load_or_create(&key_file(&work, "one")).unwrap();
    let stranger = WorkerKey::load_or_create(&work.join("stranger.nk"))
        .unwrap()
        .0;
    // A hostile client takes the first job, answers it in every forged way it can, and gives
    // the job back.
    let mut options = QueueOptions::new(&nats.url(), Duration::from_secs(30));
    options.ack_wait = Duration::from_secs(30);
    let forged_key = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (js, consumer) = workers_consumer(&options).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(Instant::now() < deadline, "no job was published");
            let mut messages = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            let Some(message) = messages.next().await else {
                continue;
            };
            let message = message.unwrap();
            let job: JobMessage = serde_json::from_slice(&message.payload).unwrap();
            let result = |batch_digest: &str| ResultMessage {
                version: MESSAGE_VERSION,
                job_id: job.job_id.clone(),
                step: job.step,
                uid: job.uid,
                model_hash: job.model_hash.clone(),
                batch_digest: batch_digest.to_owned(),
                shard: job.shard,
                outcome: EvalOutcome::Losses(validator::machine::wire::LossVec(vec![0.001; 50])),
                worker: validator::machine::event::EvaluatedBy {
                    host: "mallory".into(),
                    device: "cuda:0".into(),
                    build: "forged".into(),
                },
                session_seconds: 0.0,
                scoring_seconds: 0.0,
                worker_key: String::new(),
                signature: String::new(),
            };
            let unsigned = result(&job.batch_digest);
            let mut by_stranger = result(&job.batch_digest);
            stranger.sign(&mut by_stranger);
            let mut tampered = result(&job.batch_digest);
            trusted_key.sign(&mut tampered);
            tampered.outcome =
                EvalOutcome::Losses(validator::machine::wire::LossVec(vec![0.0001; 50]));
            let mut other_batch = result("another-batch");
            trusted_key.sign(&mut other_batch);
            for forged in [
                &unsigned,
                &by_stranger,
                &tampered,
                &other_batch,
                &other_batch,
            ] {
                js.publish(
                    results_subject(&options),
                    serde_json::to_vec(forged).unwrap().into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
            }
            // Confirmed by the server before this client goes away.
            message
                .double_ack_with(async_nats::jetstream::AckKind::Nak(None))
                .await
                .unwrap();
            break (job.step, job.uid);
        }
    });
    let _honest = spawn_worker(files, &work, "honest", &nats.url(), 30);
    finish(run, Duration::from_secs(300));
    let journaled = check_against_reference(&work.join("journal"));
    assert_eq!(journaled.refused.len(), 1, "{:?}", journaled.refused);
    let (key, why) = &journaled.refused[0];
    assert_eq!(*key, forged_key);
    assert!(why.contains("batch digest another-batch"), "{why}");
}

/// Postmortem (issue 33, class 7): one forged job whose hotkey was not SS58 made a worker
/// exit 1, so one message could stop every worker, and a job naming a huge batch object made
/// a worker read all of it (4.3 GB resident). A worker refuses a job whose fields are out of
/// shape or bound, or whose batch object is not the size the job declares (before reading
/// it), drops it and goes on with the honest jobs.
#[test]
fn forged_jobs_are_dropped_and_the_worker_goes_on() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let run = runner(files, &work, Some((&nats.url(), 30)), STEPS);
    let options = QueueOptions::new(&nats.url(), Duration::from_secs(30));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (js, consumer) = workers_consumer(&options).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        // The first real job, as a template for the forged ones, then given back.
        let (message, job) = loop {
            assert!(Instant::now() < deadline, "no job was published");
            let mut messages = consumer
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .unwrap();
            if let Some(message) = messages.next().await {
                let message = message.unwrap();
                let job: JobMessage = serde_json::from_slice(&message.payload).unwrap();
                break (message, job);
            }
        };
        let forged = |index: usize, change: &dyn Fn(&mut JobMessage)| {
            let mut forged = job.clone();
            forged.job_id = format!("forged-{index}");
            change(&mut forged);
            serde_json::to_vec(&forged).unwrap()
        };
        let payloads = [
            forged(0, &|j| j.hotkey = "../../not-ss58".into()),
            forged(1, &|j| j.batch_bytes = 1),
            forged(2, &|j| j.batch_bytes = u64::MAX),
            forged(3, &|j| j.version = 99),
            forged(4, &|j| j.model_hash = "h".repeat(900_000)),
            b"{not json".to_vec(),
        ];
        for payload in payloads {
            js.publish(jobs_subject(&options), payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        message
            .double_ack_with(async_nats::jetstream::AckKind::Nak(None))
            .await
            .unwrap();
    });
    let mut one = spawn_worker(files, &work, "one", &nats.url(), 30);
    finish(run, Duration::from_secs(300));
    check_against_reference(&work.join("journal"));
    let log = one.log_text();
    assert_eq!(log.matches("dropped").count(), 6, "{log}");
    assert!(
        one.child.try_wait().unwrap().is_none(),
        "the worker exited:\n{log}"
    );
}

#[test]
fn a_worker_without_permission_to_publish_results_is_refused_by_the_server() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    // The intruder may pull jobs but not publish results: the server, not the runner, says no.
    let nats = Nats::start_with(
        dir.path(),
        r#"authorization { users = [
            { user: "runner", password: "runner-secret" }
            { user: "worker", password: "worker-secret" }
            { user: "intruder", password: "intruder-secret", permissions: { publish: { deny: ["validator.results"] } } }
        ] }"#,
    );
    let url =
        |user: &str, password: &str| format!("nats://{user}:{password}@127.0.0.1:{}", nats.port);
    let work = dir.path().join("queued");
    let intruder = spawn_worker(
        files,
        &work,
        "intruder",
        &url("intruder", "intruder-secret"),
        3,
    );
    let run = runner(
        files,
        &work,
        Some((&url("runner", "runner-secret"), 3)),
        STEPS,
    );
    intruder.wait_for("left for redelivery", Duration::from_secs(120));
    drop(intruder);
    let honest = spawn_worker(files, &work, "honest", &url("worker", "worker-secret"), 3);
    finish(run, Duration::from_secs(300));
    // The intruder's job came back to the queue (once or more) and the honest worker took it.
    let honest_log = honest.log_text();
    assert!(
        ["(delivery 2)", "(delivery 3)"]
            .iter()
            .any(|d| honest_log.contains(d)),
        "{honest_log}"
    );
    let journaled = check_against_reference(&work.join("journal"));
    assert!(journaled.refused.is_empty(), "{:?}", journaled.refused);
    // No credentials at all: the server refuses the connection and the worker says why.
    let output = worker(files, &work, "anonymous", &nats.url(), 3)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("evaluation queue"), "{stderr}");
    // Nor does a refused worker's message give its password away.
    let output = worker(files, &work, "wrong", &url("worker", "not-the-secret"), 3)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("authorization violation"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
}

/// Postmortem (issue 33, class 1): the queue's streams were made once, at connect, so a
/// deleted results stream failed every step until the runner restarted. It is made again
/// (and the runner's consumer with it), and the run goes on.
#[test]
fn a_deleted_results_stream_is_made_again_and_the_run_goes_on() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let one = spawn_worker(files, &work, "one", &nats.url(), 10);
    let run = runner(files, &work, Some((&nats.url(), 10)), STEPS);
    one.wait_for("result published", Duration::from_secs(120));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.delete_stream("VALIDATOR_RESULTS").await.unwrap();
    });
    finish(run, Duration::from_secs(300));
    check_against_reference(&work.join("journal"));
}

/// Postmortem (issue 33, class 1): a client allowed to manage streams could add its own
/// subject to the results stream and answer through it, and nothing noticed. A stream changed
/// behind the runner's back stops the run with the reason (exit 1), before another result
/// from it is taken.
#[test]
fn a_results_stream_changed_behind_our_back_stops_the_run() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let work = dir.path().join("queued");
    let one = spawn_worker(files, &work, "one", &nats.url(), 10);
    let mut run = runner(files, &work, Some((&nats.url(), 10)), 50);
    one.wait_for("result published", Duration::from_secs(120));
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("VALIDATOR_RESULTS").await.unwrap();
        let mut config = stream.info().await.unwrap().config.clone();
        config.subjects.push("mallory.answers".into());
        js.update_stream(config).await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the run went on:\n{}",
            run.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1), "{}", run.log_text());
    let log = run.log_text();
    assert!(log.contains("changed behind our back"), "{log}");
    assert!(log.contains("mallory.answers"), "{log}");
}

/// The server configuration `docs/operating.md` documents, with this test's port, store,
/// runner password and worker key put in place of the documented ones.
fn documented_config(port: u16, store: &Path, worker_key: &str) -> String {
    let guide =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operating.md"))
            .unwrap();
    let start = guide
        .find("```conf\n# /etc/nats/validator.conf")
        .expect("docs/operating.md has no server configuration");
    let block = &guide[start + "```conf\n".len()..];
    let block = &block[..block.find("```").unwrap()];
    let replaced = block
        .replace("\"0.0.0.0:4222\"", &format!("\"127.0.0.1:{port}\""))
        .replace(
            "\"/var/lib/nats\"",
            &format!("{:?}", store.display().to_string()),
        )
        .replace("$RUNNER_PASSWORD", "runner-secret")
        .replace("UWORKERPUBLICKEYFROMITSLOG", worker_key);
    assert_ne!(
        replaced, block,
        "the documented configuration changed its placeholders"
    );
    replaced
}

/// Postmortem (issue 33, class 1): with the documented server configuration a user meant to
/// evaluate could add its own subject to the results stream and answer, and could delete the
/// results stream, after which every step failed. The documented roles are now checked on a
/// real server: a run with the runner's password and a worker's key completes, and the
/// worker, with its own key, can make, change, purge or delete no stream, publish no job and
/// read no result; a client without credentials is refused.
#[test]
fn the_documented_server_roles_run_the_queue_and_nothing_more() {
    let (_, files, _) = reference();
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("queued");
    let (worker_key, _) = WorkerKey::load_or_create(&key_file(&work, "one")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        documented_config(
            port,
            &dir.path().join("jetstream"),
            &worker_key.public_key(),
        ),
    )
    .unwrap();
    let nats = Nats {
        child: Nats::spawn(port, &config),
        port,
        config,
    };
    let runner_url = format!("nats://runner:runner-secret@127.0.0.1:{port}");
    let run = runner(files, &work, Some((&runner_url, 30)), STEPS);
    // The worker authenticates with its key alone.
    let _one = spawn_worker(files, &work, "one", &nats.url(), 30);
    finish(run, Duration::from_secs(300));
    check_against_reference(&work.join("journal"));

    let seed = worker_key.seed().unwrap();
    let url = nats.url();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let client = async_nats::ConnectOptions::with_nkey(seed)
                .connect(&url)
                .await
                .unwrap();
            let js = async_nats::jetstream::new(client.clone());
            let refused = |what: &str, denied: bool| assert!(denied, "a worker could {what}");
            refused(
                "delete the results stream",
                js.delete_stream("VALIDATOR_RESULTS").await.is_err(),
            );
            let mut results = js.get_stream("VALIDATOR_RESULTS").await.unwrap();
            let mut config = results.info().await.unwrap().config.clone();
            config.subjects.push("mallory.answers".into());
            refused(
                "add a subject to the results stream",
                js.update_stream(config).await.is_err(),
            );
            refused("purge the jobs stream", {
                let jobs = js.get_stream("VALIDATOR_JOBS").await.unwrap();
                jobs.purge().await.is_err()
            });
            refused(
                "make a stream of its own over the results",
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: "MALLORY".into(),
                    subjects: vec!["validator.results.>".into()],
                    ..Default::default()
                })
                .await
                .is_err(),
            );
            refused(
                "read the results",
                results
                    .create_consumer(async_nats::jetstream::consumer::pull::Config {
                        durable_name: Some("mallory".into()),
                        ..Default::default()
                    })
                    .await
                    .is_err(),
            );
            refused(
                "delete the workers' consumer",
                js.delete_consumer_from_stream("workers", "VALIDATOR_JOBS")
                    .await
                    .is_err(),
            );
            let published = tokio::time::timeout(Duration::from_secs(5), async {
                js.publish("validator.jobs", "{}".into()).await?.await
            })
            .await;
            refused("publish a job", !matches!(published, Ok(Ok(_))));
            // Without credentials, nothing at all.
            assert!(async_nats::connect(&url).await.is_err());
        });
}
