//! The loop against the scripted fakes of every edge: each failure class ends in a recorded
//! verdict, a failed step that is tried again, or a retry, and the journal always replays.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use validator::data::DataError;
use validator::journal::Journal;
use validator::journal::recorder::fold_existing;
use validator::machine::event::{
    CommitmentField, CommitmentObserved, EvalOutcome, MetagraphObserved, RejectionCode,
};
use validator::machine::params::WeightsCadence;
use validator::machine::wire::RawBytes;
use validator::machine::{Event, State};
use validator::runner::config::{Backoff, RunConfig};
use validator::runner::edges::{EdgeError, Observation, Refusal, StoredModel, Verdict};
use validator::runner::weights::NoWeights;
use validator::runner::{Edges, RunError, RunSummary, run};
use validator::synth::model_string;
use validator::testing::{FakeChain, FakeData, FakeEvaluator, FakeWeights, MemoryStore, Script};

pub const HOTKEYS: [&str; 5] = ["5Validator", "5Alice", "5Bob", "5Carol", "5Dave"];

/// Alice and Bob in l3, Carol and Dave in s1, all committed before block 100.
pub fn observation() -> Observation {
    let size = HOTKEYS.len();
    let mut events = vec![Event::MetagraphObserved(MetagraphObserved {
        netuid: 6,
        hotkeys: HOTKEYS.iter().map(|h| (*h).to_owned()).collect(),
        consensus: vec![0, 40000, 30000, 20000, 10000],
        incentive: Vec::new(),
        stake: vec![1; size],
        validator_permit: Vec::new(),
        last_update: Vec::new(),
        tempo: 360,
    })];
    for (index, (hotkey, competition)) in [
        ("5Alice", "l3"),
        ("5Bob", "l3"),
        ("5Carol", "s1"),
        ("5Dave", "s1"),
    ]
    .into_iter()
    .enumerate()
    {
        events.push(Event::CommitmentObserved(CommitmentObserved {
            hotkey: hotkey.into(),
            block_commit: 90 + u64::try_from(index).unwrap(),
            field: CommitmentField::Raw(RawBytes(
                model_string("miner", &hotkey.to_lowercase(), competition).into_bytes(),
            )),
        }));
    }
    Observation {
        block: 100,
        block_hash: None,
        events,
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub chain: FakeChain,
    pub store: MemoryStore,
    pub evaluator: FakeEvaluator,
    pub data: FakeData,
    /// The chain weights are set on, when the test sets them.
    pub weights: Option<Arc<FakeWeights>>,
}

impl World {
    pub fn new() -> Self {
        Self::in_dir(tempfile::tempdir().unwrap())
    }

    /// A world over an existing directory (its journal, its store), as a restart sees it.
    pub fn in_dir(dir: tempfile::TempDir) -> Self {
        let store = MemoryStore::new(&dir.path().join("store"));
        Self {
            chain: FakeChain::new(100, 10, observation()),
            store,
            evaluator: FakeEvaluator::default(),
            data: FakeData::new(4),
            weights: None,
            dir,
        }
    }

    pub fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("journal")
    }

    pub fn config(&self, max_steps: u64) -> RunConfig {
        let mut config = RunConfig::new(self.db(), self.dir.path().join("cache"));
        config.max_steps = Some(max_steps);
        config.settle_before_step = true;
        config.print_tables = false;
        config.startup_wait = Duration::from_secs(5);
        let fast = Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
        };
        config.step_retry = fast;
        config.fetch_retry = fast;
        // The weight setter's tests drive its own clock; N's cadence has a test of its own.
        config.params.rules.weights_cadence = WeightsCadence::Chain;
        config
    }

    /// The commit of `hotkey`'s model (the last part of its store directory).
    pub fn commit_of(&self, hotkey: &str) -> String {
        let dir = self.dir_of(hotkey);
        dir.file_name().unwrap().to_str().unwrap().to_owned()
    }

    /// `hotkey`'s model as the store accepts it.
    pub fn stored(&self, hotkey: &str) -> StoredModel {
        StoredModel {
            dir: self.dir_of(hotkey),
            hash_kind: validator::machine::model_id::HashKind::Plain,
            bytes_downloaded: 1,
        }
    }

    /// The model directory the store gives `hotkey`.
    pub fn dir_of(&self, hotkey: &str) -> std::path::PathBuf {
        let text = model_string("miner", &hotkey.to_lowercase(), "l3");
        let commit = text.split(':').nth(2).unwrap();
        self.store.root.join(hotkey).join(commit)
    }

    pub fn run(self, max_steps: u64) -> (Result<RunSummary, RunError>, tempfile::TempDir) {
        let config = self.config(max_steps);
        self.run_with(config)
    }

    pub fn run_with(self, config: RunConfig) -> (Result<RunSummary, RunError>, tempfile::TempDir) {
        let edges = Edges {
            chain: self.chain,
            store: self.store,
            evaluator: self.evaluator,
            data: self.data,
            weights: self.weights,
        };
        let (_stop, stop_seen) = tokio::sync::watch::channel(false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let result = runtime.block_on(run(config, edges, stop_seen));
        (result, self.dir)
    }
}

pub fn records(db: &Path) -> Vec<Event> {
    let journal = Journal::open_existing(db).unwrap();
    journal.all_records().map(|r| r.unwrap().event).collect()
}

/// Replays the journal and panics on any divergence.
pub fn replays_cleanly(db: &Path) {
    super::replay_clean(db);
}

fn losses_of(events: &[Event], uid: u16) -> Vec<(u64, EvalOutcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::LossesComputed(l) if l.uid == uid => Some((l.step, l.outcome.clone())),
            _ => None,
        })
        .collect()
}

fn state_of(db: &Path) -> State {
    fold_existing(db).unwrap()
}

#[test]
fn a_clean_run_scores_both_competitions_and_replays() {
    let world = World::new();
    let (result, dir) = world.run(4);
    let summary = result.unwrap();
    assert_eq!(summary.steps_completed, 4);
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ConsensusSeeded(_)))
    );
    // Two steps of each competition, each model evaluated in each of its competition's steps.
    for uid in 1..=4 {
        assert_eq!(losses_of(&events, uid).len(), 2, "uid {uid}");
    }
    let state = state_of(&db);
    assert!(
        state.weights.iter().skip(1).all(|w| *w > 0.0),
        "{:?}",
        state.weights
    );
}

#[test]
fn a_rejected_model_is_journaled_and_plays_without_a_model() {
    let mut world = World::new();
    let commit = world.dir_of("5Bob");
    let commit = commit.file_name().unwrap().to_str().unwrap().to_owned();
    world.store.script(
        "5Bob",
        &commit,
        [Ok(Verdict::Rejected(Refusal::new(
            RejectionCode::HashMismatch,
            "the files hash to something else",
        )))],
    );
    let (result, dir) = world.run(2);
    result.unwrap();
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    assert!(events.iter().any(|e| matches!(e,
        Event::ModelRejected(r) if r.hotkey == "5Bob" && r.code == RejectionCode::HashMismatch)));
    assert!(losses_of(&events, 2).is_empty());
    assert_eq!(losses_of(&events, 1).len(), 1);
}

#[test]
fn a_failed_check_rejects_the_model() {
    let mut world = World::new();
    let dir = world.dir_of("5Alice");
    world.evaluator.checks.insert(
        dir,
        Script::new([Ok(Verdict::Rejected(Refusal::new(
            RejectionCode::TooManyParameters,
            "too big",
        )))]),
    );
    let (result, dir) = world.run(1);
    result.unwrap();
    let events = records(&dir.path().join("journal"));
    assert!(events.iter().any(|e| matches!(e,
        Event::ModelRejected(r) if r.hotkey == "5Alice" && r.code == RejectionCode::TooManyParameters)));
}

#[test]
fn an_evaluation_timeout_or_crash_is_that_models_failure() {
    let mut world = World::new();
    world.evaluator.outcomes.insert(
        world.dir_of("5Alice"),
        Script::new([Ok(EvalOutcome::Failed(
            "timeout: the evaluation took longer than 720 s".into(),
        ))]),
    );
    let (result, dir) = world.run(2);
    result.unwrap();
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let alice = losses_of(&records(&db), 1);
    assert!(matches!(&alice[0].1, EvalOutcome::Failed(why) if why.contains("timeout")));
}

#[test]
fn a_data_outage_fails_the_step_without_advancing_the_round_robin() {
    let mut world = World::new();
    world.data.script = Script::new([
        Some(DataError::Unavailable("wandb timed out".into())),
        Some(DataError::Unavailable("wandb timed out".into())),
        None,
    ]);
    let (result, dir) = world.run(2);
    result.unwrap();
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    let failed: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepFailed(f) => Some(f.step),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [0, 0]);
    // Step 0 still ran l3 once the data came back.
    let started: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted(s) => Some((s.step, s.competition.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(started, [(0, "l3".into()), (1, "s1".into())]);
}

#[test]
fn a_stalled_hub_is_retried_until_it_answers() {
    let mut world = World::new();
    let (commit, stored) = (world.commit_of("5Alice"), world.stored("5Alice"));
    world.store.script(
        "5Alice",
        &commit,
        [
            Err(EdgeError::Unavailable("the hub timed out".into())),
            Err(EdgeError::Unavailable("the hub timed out".into())),
            Ok(Verdict::Accepted(stored)),
        ],
    );
    let (result, dir) = world.run(1);
    result.unwrap();
    let events = records(&dir.path().join("journal"));
    assert!(events.iter().any(|e| matches!(e,
        Event::ModelVerified(v) if v.hotkey == "5Alice")));
    assert_eq!(losses_of(&events, 1).len(), 1);
}

/// Postmortem (9e4eeb7): a repository not found was refused for good at once, but miners
/// commit while it is still private and publish right after. A `NotFound` inside the window is
/// looked for again, and one that lasts past it is recorded.
#[test]
fn a_repository_not_there_yet_is_looked_for_again_then_refused_after_the_window() {
    let not_found = || {
        Ok(Verdict::Rejected(Refusal::new(
            RejectionCode::NotFound,
            "repository miner/5alice not found",
        )))
    };
    let mut world = World::new();
    let (commit, stored) = (world.commit_of("5Alice"), world.stored("5Alice"));
    world.store.script(
        "5Alice",
        &commit,
        [not_found(), not_found(), Ok(Verdict::Accepted(stored))],
    );
    let (result, dir) = world.run(1);
    result.unwrap();
    let events = records(&dir.path().join("journal"));
    assert!(events.iter().any(|e| matches!(e,
        Event::ModelVerified(v) if v.hotkey == "5Alice")));
    assert!(!events.iter().any(|e| matches!(e, Event::ModelRejected(_))));

    // With no window, the first `NotFound` is the verdict.
    let mut world = World::new();
    world.store.script("5Alice", &commit, [not_found()]);
    let mut config = world.config(1);
    config.not_found_retry_blocks = 0;
    let (result, dir) = world.run_with(config);
    result.unwrap();
    let events = records(&dir.path().join("journal"));
    assert!(events.iter().any(|e| matches!(e,
        Event::ModelRejected(r) if r.hotkey == "5Alice" && r.code == RejectionCode::NotFound)));
}

#[test]
fn a_missing_device_fails_the_step_and_penalises_nobody() {
    let mut world = World::new();
    world.evaluator.outcomes.insert(
        world.dir_of("5Alice"),
        Script::new([
            Err(EdgeError::Operator("the CUDA provider did not load".into())),
            Ok(EvalOutcome::Losses(validator::machine::wire::LossVec(
                vec![2.0, 2.0, 2.0, 2.0],
            ))),
        ]),
    );
    let (result, dir) = world.run(1);
    result.unwrap();
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    assert!(events.iter().any(|e| matches!(e,
        Event::StepFailed(f) if f.step == 0 && f.reason.contains("CUDA"))));
    // The retried step 0 gave Alice her losses; the failed attempt's outcome is gone.
    let state = state_of(&db);
    assert_eq!(state.step_next, 1);
    let alice = losses_of(&events, 1);
    assert!(matches!(alice.last(), Some((0, EvalOutcome::Losses(_)))));
}

#[test]
fn a_model_deleted_from_the_cache_mid_run_is_fetched_again() {
    let world = World::new();
    let alice = world.dir_of("5Alice");
    // Delete Alice's model whenever the evaluator is about to tokenise with it: after it was
    // verified, before it is evaluated.
    let mut world = world;
    let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = removed.clone();
    let target = alice.clone();
    world.evaluator.loss_of = Arc::new(move |dir, index| {
        if dir == target && !flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Too late for this evaluation; the next step's must refetch.
            let _ = std::fs::remove_dir_all(dir);
        }
        2.0 + f32::from(u8::try_from(index % 8).unwrap()) / 8.0
    });
    let (result, dir) = world.run(3);
    result.unwrap();
    assert!(removed.load(std::sync::atomic::Ordering::SeqCst));
    let db = dir.path().join("journal");
    replays_cleanly(&db);
    let events = records(&db);
    // Alice was evaluated in both l3 steps even though her directory vanished in between.
    let alice_losses = losses_of(&events, 1);
    assert_eq!(alice_losses.len(), 2);
    assert!(
        alice_losses
            .iter()
            .all(|(_, o)| matches!(o, EvalOutcome::Losses(_)))
    );
    assert!(alice.is_dir(), "refetched");
}

#[test]
fn an_empty_eval_set_completes_at_once_without_data() {
    let mut world = World::new();
    // Nobody committed: the metagraph alone.
    let mut observation = observation();
    observation.events.truncate(1);
    world.chain = FakeChain::new(100, 10, observation);
    let (result, dir) = world.run(2);
    result.unwrap();
    let events = records(&dir.path().join("journal"));
    assert!(!events.iter().any(|e| matches!(e, Event::BatchFetched(_))));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::StepCompleted(_)))
            .count(),
        2
    );
}

#[test]
fn restart_resumes_and_a_second_run_is_refused_while_the_first_holds_the_journal() {
    let world = World::new();
    let db = world.db();
    let (result, dir) = world.run(2);
    result.unwrap();
    // The same journal, more steps: it resumes at step 2 without seeding again.
    let (result, dir) = World::in_dir(dir).run(4);
    assert_eq!(result.unwrap().steps_completed, 4);
    let events = records(&db);
    let seeded = events
        .iter()
        .filter(|e| matches!(e, Event::ConsensusSeeded(_)))
        .count();
    assert_eq!(seeded, 1);
    replays_cleanly(&db);
    // While a journal is held, another run is refused as locked.
    let _held = Journal::open(&db).unwrap();
    let (result, _dir) = World::in_dir(dir).run(5);
    match result {
        Err(RunError::Journal(error)) => {
            assert!(error.to_string().contains("locked"), "{error}");
        }
        other => panic!("expected a locked journal, got {other:?}"),
    }
}

#[test]
fn genesis_and_parameter_changes_are_checked_against_the_journal() {
    let world = World::new();
    let (result, dir) = world.run(1);
    result.unwrap();
    let genesis = World::in_dir(dir);
    let db = genesis.db();
    let mut config = genesis.config(2);
    config.genesis = true;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_stop, stop_seen) = tokio::sync::watch::channel(false);
    let edges = |w: &World| Edges {
        chain: FakeChain::new(100, 10, observation()),
        store: MemoryStore::new(&w.dir.path().join("store")),
        evaluator: FakeEvaluator::default(),
        data: FakeData::new(4),
        weights: None::<NoWeights>,
    };
    let refused = runtime.block_on(run(config.clone(), edges(&genesis), stop_seen.clone()));
    assert!(matches!(&refused, Err(RunError::Config(why)) if why.contains("--genesis")));
    config.genesis = false;
    config.params.sample_min = 3;
    let refused = runtime.block_on(run(config.clone(), edges(&genesis), stop_seen.clone()));
    assert!(
        matches!(&refused, Err(RunError::Config(why)) if why.contains("--accept-params-change"))
    );
    config.accept_params_change = true;
    runtime
        .block_on(run(config, edges(&genesis), stop_seen))
        .unwrap();
    let events = records(&db);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::ParamsChanged(p) if p.params.sample_min == 3))
    );
    replays_cleanly(&db);
}

#[test]
fn genesis_on_an_empty_journal_seeds_nothing() {
    let world = World::new();
    let db = world.db();
    let mut config = world.config(1);
    config.genesis = true;
    let edges = Edges {
        chain: world.chain,
        store: world.store,
        evaluator: world.evaluator,
        data: world.data,
        weights: None::<NoWeights>,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_stop, stop_seen) = tokio::sync::watch::channel(false);
    runtime.block_on(run(config, edges, stop_seen)).unwrap();
    let events = records(&db);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ConsensusSeeded(_)))
    );
    // Without seeding, every model was fetched and is pending for its competition.
    let verified = events
        .iter()
        .filter(|e| matches!(e, Event::ModelVerified(_)))
        .count();
    assert_eq!(verified, 4);
}
