//! The evaluation worker as a real child process: checks, tokenisation and evaluation of the
//! fixture models (losses as transformers computed them), a worker past its timeout killed
//! with its process group, a crash retried once, and a device that cannot be opened reported
//! as the machine's fault.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use validator::eval::batch::CheckRules;
use validator::eval::runtime::Device;
use validator::eval::worker::WorkerEvaluator;
use validator::machine::MechanismParams;
use validator::machine::event::{EvalOutcome, RejectionCode};
use validator::machine::params::CompetitionId;
use validator::runner::edges::{EdgeError, EvalRequest, ModelEvaluator, Verdict};

use super::models;

fn evaluator(program: PathBuf, timeout: Duration) -> WorkerEvaluator {
    let mut evaluator = WorkerEvaluator::new(program, Device::Cpu, timeout);
    evaluator.threads = 2;
    evaluator
}

fn validator_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_validator"))
}

fn pairs() -> Arc<[(String, String)]> {
    let text = std::fs::read_to_string(models().join("samples.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["prompt"].as_str().unwrap().to_owned(),
                value["response"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A script standing in for the validator executable.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_worker_checks_tokenises_and_evaluates_as_transformers_does() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(models().join("reference.json")).unwrap())
            .unwrap();
    let worker = evaluator(validator_program(), Duration::from_secs(120));
    let params = MechanismParams::default();
    let runtime = runtime();
    for (model, competition) in [("llama-f32", "l3"), ("stablelm-f32", "s1")] {
        let dir = models().join(model);
        let competition = params
            .competition_by_id(&CompetitionId::new(competition))
            .unwrap();
        let checked = runtime
            .block_on(worker.check(&dir, &CheckRules::of(competition)))
            .unwrap();
        assert!(
            matches!(checked, Verdict::Accepted(_)),
            "{model}: {checked:?}"
        );
        let Verdict::Accepted(batch) = runtime.block_on(worker.tokenize(&dir, pairs())).unwrap()
        else {
            panic!("{model}: tokenising failed")
        };
        let evaluated = runtime
            .block_on(worker.evaluate(&EvalRequest::of_dir(&dir, batch)))
            .unwrap();
        let EvalOutcome::Losses(losses) = &evaluated.outcome else {
            panic!("{model}: {evaluated:?}")
        };
        let expected = reference["models"][model]["losses"].as_array().unwrap();
        assert_eq!(losses.0.len(), expected.len());
        for (ours, theirs) in losses.0.iter().zip(expected) {
            match theirs.as_f64() {
                Some(theirs) => assert!(
                    (f64::from(*ours) - theirs).abs() < 1e-4,
                    "{model}: {ours} vs {theirs}"
                ),
                // Nothing to predict: N gets NaN, we +infinity.
                None => assert!(ours.is_infinite()),
            }
        }
        assert!(evaluated.session_seconds > 0.0 && evaluated.scoring_seconds > 0.0);
        assert_eq!(evaluated.worker.device, "cpu f32");
        assert!(evaluated.worker.build.starts_with("validator "));
    }
}

#[test]
fn a_model_over_its_competitions_limit_is_rejected_by_the_worker() {
    let worker = evaluator(validator_program(), Duration::from_secs(60));
    let mut competition = MechanismParams::default()
        .competition_by_id(&CompetitionId::new("l3"))
        .unwrap()
        .clone();
    competition.max_parameters = 1_000;
    let verdict = runtime()
        .block_on(worker.check(&models().join("llama-f32"), &CheckRules::of(&competition)))
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Rejected(r) if r.code == RejectionCode::TooManyParameters),
        "{verdict:?}"
    );
    // A StableLM model in the Llama competition.
    let verdict = runtime()
        .block_on(worker.check(
            &models().join("stablelm-f32"),
            &CheckRules::of(&competition),
        ))
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Rejected(r) if r.code == RejectionCode::UnsupportedArchitecture),
        "{verdict:?}"
    );
}

#[test]
fn the_successors_competition_takes_its_listed_classes_within_its_parameter_bounds() {
    let worker = evaluator(validator_program(), Duration::from_secs(60));
    let params = MechanismParams::successor();
    let competition = params.competition_by_id(&CompetitionId::new("4")).unwrap();
    let rules = CheckRules::at(&params, competition);
    // The live bounds (3.2e9 and up) refuse a tiny model for having too few parameters.
    let verdict = runtime()
        .block_on(worker.check(&models().join("mistral-f32"), &rules))
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Rejected(r) if r.code == RejectionCode::TooManyParameters
            && r.detail.contains("under competition 4's least")),
        "{verdict:?}"
    );
    // With the lower bound lifted, every class the successor can score passes (N's check
    // takes the competition's one architecture and would refuse three of them).
    let mut open = rules.clone();
    open.parameters_min = 0;
    for model in ["llama-f32", "mistral-f32", "gemma-f32", "gemma2-f32"] {
        let verdict = runtime()
            .block_on(worker.check(&models().join(model), &open))
            .unwrap();
        assert!(
            matches!(verdict, Verdict::Accepted(_)),
            "{model}: {verdict:?}"
        );
    }
    // A class outside the list is refused as before.
    let verdict = runtime()
        .block_on(worker.check(&models().join("stablelm-f32"), &open))
        .unwrap();
    assert!(
        matches!(&verdict, Verdict::Rejected(r) if r.code == RejectionCode::UnsupportedArchitecture),
        "{verdict:?}"
    );
}

#[test]
fn a_worker_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    // The "worker" starts a grandchild and both sleep; both must die with the group.
    let program = script(
        dir.path(),
        "slow",
        &format!(
            "sleep 60 & echo $! >> {0}\necho $$ >> {0}\nsleep 60",
            pids.display()
        ),
    );
    let worker = evaluator(program, Duration::from_secs(1));
    let started = Instant::now();
    let outcome = runtime()
        .block_on(worker.evaluate(&EvalRequest::of_dir(dir.path(), Arc::from(Vec::new()))))
        .unwrap()
        .outcome;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(&outcome, EvalOutcome::Failed(why) if why.starts_with("timeout")),
        "{outcome:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let pids = std::fs::read_to_string(&pids).unwrap();
    for pid in pids.split_whitespace() {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "process {pid} outlived its worker's timeout");
    }
}

#[test]
fn a_crash_is_retried_once_in_a_fresh_child() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("crashed-once");
    let flaky = script(
        dir.path(),
        "flaky",
        &format!(
            "if [ ! -e {0} ]; then touch {0}; kill -SEGV $$; fi\nexec {1} \"$@\"",
            marker.display(),
            validator_program().display()
        ),
    );
    let model = models().join("llama-f32");
    let worker = evaluator(flaky, Duration::from_secs(120));
    let runtime = runtime();
    let Verdict::Accepted(batch) = runtime.block_on(worker.tokenize(&model, pairs())).unwrap()
    else {
        panic!("tokenising failed")
    };
    assert!(marker.exists(), "the first child crashed");
    let outcome = runtime
        .block_on(worker.evaluate(&EvalRequest::of_dir(&model, batch.clone())))
        .unwrap()
        .outcome;
    assert!(matches!(outcome, EvalOutcome::Losses(_)), "{outcome:?}");
    // A worker that always crashes fails the model, with the reason.
    let broken = script(dir.path(), "broken", "echo boom >&2; exit 3");
    let outcome = runtime
        .block_on(
            evaluator(broken, Duration::from_secs(60))
                .evaluate(&EvalRequest::of_dir(&model, batch)),
        )
        .unwrap()
        .outcome;
    assert!(
        matches!(&outcome, EvalOutcome::Failed(why) if why.contains("crashed") && why.contains("boom")),
        "{outcome:?}"
    );
}

#[test]
fn a_device_that_cannot_be_opened_is_the_machines_fault() {
    let model = models().join("llama-f32");
    let mut worker = evaluator(validator_program(), Duration::from_secs(60));
    let runtime = runtime();
    let Verdict::Accepted(batch) = runtime.block_on(worker.tokenize(&model, pairs())).unwrap()
    else {
        panic!("tokenising failed")
    };
    // The build's ONNX Runtime is the CPU package: CUDA cannot be opened here.
    worker.device = Device::Cuda { device_id: 0 };
    match runtime.block_on(worker.evaluate(&EvalRequest::of_dir(&model, batch))) {
        Err(EdgeError::Device(why)) => assert!(why.contains("CUDA"), "{why}"),
        other => panic!("expected the machine's fault, got {other:?}"),
    }
}
