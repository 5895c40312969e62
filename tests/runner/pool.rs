//! The local evaluation pool against the fakes: every member used at once, dispatch largest
//! model first, and a device that cannot be used taken out of the pool while the others go on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use validator::eval::tokenize::Prepared;
use validator::machine::Event;
use validator::machine::event::{EvalOutcome, ReportVerdict};
use validator::runner::edges::{EdgeError, EvalRequest, ModelEvaluator, TokenizedBatch};
use validator::runner::pool::EvaluatorPool;
use validator::testing::{FakeEvaluator, Script};

use super::fakes::{World, records, replays_cleanly};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn batch() -> TokenizedBatch {
    (0..3)
        .map(|i| Prepared {
            ids: vec![1, 2, 3, i],
            prompt_len: 2,
        })
        .collect::<Vec<_>>()
        .into()
}

fn request(dir: &Path) -> EvalRequest {
    EvalRequest::of_dir(dir, batch())
}

fn slow(device: &str, delay: Duration) -> FakeEvaluator {
    FakeEvaluator {
        evaluation_delay: delay,
        device: device.into(),
        ..FakeEvaluator::default()
    }
}

#[test]
fn every_member_of_the_pool_evaluates_at_once() {
    let delay = Duration::from_millis(300);
    let pool = EvaluatorPool::new(vec![
        ("cuda:0".to_owned(), slow("cuda:0", delay)),
        ("cuda:1".to_owned(), slow("cuda:1", delay)),
    ]);
    assert_eq!(pool.capacity(), 2);
    let dirs: Vec<PathBuf> = (0..4).map(|i| PathBuf::from(format!("/m/{i}"))).collect();
    let started = Instant::now();
    let devices: Vec<String> = runtime().block_on(async {
        let evaluations = dirs.iter().map(|dir| {
            let pool = &pool;
            async move { pool.evaluate(&request(dir)).await.unwrap().worker.device }
        });
        futures::future::join_all(evaluations).await
    });
    let took = started.elapsed();
    // Four evaluations on two members: two rounds, not four.
    assert!(took < delay * 3, "took {took:?}");
    assert_eq!(devices.iter().filter(|d| *d == "cuda:0").count(), 2);
    assert_eq!(devices.iter().filter(|d| *d == "cuda:1").count(), 2);
}

#[test]
fn a_device_that_cannot_be_used_leaves_the_pool_and_its_model_goes_to_another() {
    let dir = PathBuf::from("/m/alice");
    let mut dead = slow("cuda:0", Duration::ZERO);
    dead.outcomes.insert(
        dir.clone(),
        Script::new([Err(EdgeError::Device(
            "CUDA error: an illegal memory access".into(),
        ))]),
    );
    let pool = EvaluatorPool::new(vec![
        ("cuda:0".to_owned(), dead),
        ("cuda:1".to_owned(), slow("cuda:1", Duration::ZERO)),
    ]);
    let runtime = runtime();
    let evaluated = runtime.block_on(pool.evaluate(&request(&dir))).unwrap();
    assert_eq!(evaluated.worker.device, "cuda:1");
    assert!(matches!(evaluated.outcome, EvalOutcome::Losses(_)));
    let out = pool.devices_out();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "cuda:0");
    assert!(out[0].1.contains("illegal memory access"));
    assert_eq!(pool.capacity(), 1);
    // Everything after goes to the member left.
    for _ in 0..3 {
        let evaluated = runtime.block_on(pool.evaluate(&request(&dir))).unwrap();
        assert_eq!(evaluated.worker.device, "cuda:1");
    }
}

#[test]
fn with_every_device_out_the_evaluation_is_the_operators_to_fix() {
    let dir = PathBuf::from("/m/alice");
    let dead = |device: &str| {
        let mut fake = slow(device, Duration::ZERO);
        fake.outcomes.insert(
            dir.clone(),
            Script::new([Err(EdgeError::Device(format!("{device} is gone")))]),
        );
        fake
    };
    let pool = EvaluatorPool::new(vec![
        ("cuda:0".to_owned(), dead("cuda:0")),
        ("cuda:1".to_owned(), dead("cuda:1")),
    ]);
    match runtime().block_on(pool.evaluate(&request(&dir))) {
        Err(EdgeError::Operator(why)) => {
            assert!(why.contains("every evaluation device is out"), "{why}");
            assert!(why.contains("cuda:0 is gone") && why.contains("cuda:1 is gone"));
        }
        other => panic!("expected the operator's error, got {other:?}"),
    }
}

#[test]
fn the_stepper_dispatches_the_largest_model_first_and_journals_who_evaluated() {
    let mut world = World::new();
    // One at a time, so the journal's order is the dispatch order.
    world.evaluator.capacity = 1;
    // Bob's weights are larger than Alice's and Carol's than Dave's: each goes first though
    // its uid is the higher.
    for (hotkey, bytes) in [
        ("5Alice", 1_000),
        ("5Bob", 5_000),
        ("5Carol", 3_000),
        ("5Dave", 10),
    ] {
        let dir = world.dir_of(hotkey);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.safetensors"), vec![0u8; bytes]).unwrap();
    }
    let (result, dir) = world.run(2);
    result.unwrap();
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    let reported: Vec<(u64, u16)> = events
        .iter()
        .filter_map(|e| match e {
            Event::EvaluationReported(r) => {
                assert_eq!(r.worker.device, "fake");
                assert_eq!(r.verdict, ReportVerdict::Accepted);
                Some((r.step, r.uid))
            }
            _ => None,
        })
        .collect();
    let losses: Vec<(u64, u16)> = events
        .iter()
        .filter_map(|e| match e {
            Event::LossesComputed(l) => Some((l.step, l.uid)),
            _ => None,
        })
        .collect();
    // Step 0 is l3 (Alice 1, Bob 2), step 1 s1 (Carol 3, Dave 4).
    assert_eq!(losses, vec![(0, 2), (0, 1), (1, 3), (1, 4)]);
    assert_eq!(reported, losses, "a report with each result");
}
