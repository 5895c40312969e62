//! The validator's loop: the one place the edges meet the machine, and it reaches the fold
//! only through the journal writer (journal and flush first, then fold, then act).
//!
//! - [`edges`]: the traits the loop is generic over (chain, model store, evaluator), their
//!   real implementations, and the shape every answer takes.
//! - [`writer`]: the one writer: a thread owning the recorder.
//! - [`step`]: a step, from the chain's head to `StepCompleted`; restart is resume;
//!   [`tasks`]: a successor step's data and per-task losses.
//! - [`fetch`]: fetching, verifying and checking committed models, the cache sweep.
//! - [`pool`]: one evaluator per local device, models to whichever is free; [`queue`]:
//!   evaluation by remote workers over NATS JetStream, and the worker's own loop.
//! - [`prefetch`]: the next model's weights read ahead while the current one runs.
//! - [`snapshot`]: a recorded chain, for offline runs.
//! - [`weights`]: the weight setter: due epochs, intent first, reconciliation.
//! - [`failpoint`]: named crash points for the crash-safety tests.
//! - [`config`]: what a run is told; [`table`]: N's step table.
//! - [`monitor`]: the leaderboard, metrics, health and step log, fed by the writer;
//!   [`http`]: where they are served; [`metered`]: chain calls counted for the metrics.
//!
//! Tasks: the stepper (this future), the fetcher, on a live chain a poller that journals new
//! commitments between steps, and, when weights are set, the weight setter on its own
//! connection. They share nothing but the writer's published state.

pub mod config;
pub mod demo;
pub mod edges;
pub mod failpoint;
pub mod fetch;
pub mod http;
pub mod identity;
pub mod live;
pub mod metered;
pub mod metrics;
pub mod monitor;
pub mod pool;
pub mod prefetch;
pub mod queue;
pub mod schedule;
pub mod snapshot;
pub mod step;
pub mod table;
pub mod tasks;
pub mod weights;
pub mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::data::DataSource;
use crate::journal::JournalError;
use crate::machine::Event;
use crate::machine::event::{ConsensusSeeded, ParamsChanged};
use config::RunConfig;
use edges::{ChainEdge, EdgeError, ModelEvaluator, ModelStore, WeightsChain};
use fetch::{FetchStatus, Fetcher};
use metered::Metered;
use monitor::{Monitor, MonitorConfig};
use step::{StepTiming, Stepper};
use weights::{Ending, NoWeights, SubmissionReport, WeightSetter};
use writer::{WriteError, Writer, WriterHandle};

/// Why a run stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The journal is missing, locked, of another schema, corrupt, or cannot be written: the
    /// validator stops rather than act on a journal it cannot trust.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The run's options contradict the journal.
    #[error("{0}")]
    Config(String),
    /// The journal writer stopped after an earlier error.
    #[error("the journal writer stopped")]
    WriterStopped,
    /// An edge found what the run relies on changed behind its back (the evaluation queue's
    /// streams): the run stops rather than trust it.
    #[error("{0}")]
    Fatal(String),
}

impl From<WriteError> for RunError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Journal(error) => RunError::Journal(error),
            WriteError::Stopped => RunError::WriterStopped,
        }
    }
}

/// The edges a run is given.
#[derive(Debug)]
pub struct Edges<C, S, E, D, W = NoWeights> {
    /// The chain (live, or a recording).
    pub chain: C,
    /// Where committed models come from.
    pub store: S,
    /// The evaluation worker.
    pub evaluator: E,
    /// Where batches come from.
    pub data: D,
    /// The chain to set weights on, over its own connection; `None` sets none
    /// (`--offline`, `--dont_set_weights`, a recorded chain).
    pub weights: Option<W>,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps completed in the journal (a total over every run on it).
    pub steps_completed: u64,
    /// Where each step of this run spent its time.
    pub timings: Vec<StepTiming>,
    /// The weight vector after the last step.
    pub weights: Vec<f64>,
    /// Whether the run stopped because it was asked to.
    pub stopped: bool,
    /// The weight submissions this run made.
    pub submissions: Vec<SubmissionReport>,
}

/// Runs the validator until the journal holds `config.max_steps` completed steps, or `stop`
/// turns true.
pub async fn run<C, S, E, D, W>(
    config: RunConfig,
    edges: Edges<C, S, E, D, W>,
    mut stop: watch::Receiver<bool>,
) -> Result<RunSummary, RunError>
where
    C: ChainEdge + 'static,
    S: ModelStore + 'static,
    E: ModelEvaluator + 'static,
    D: DataSource + Send + Sync + 'static,
    W: WeightsChain + 'static,
{
    let monitor = Arc::new(Monitor::new(MonitorConfig {
        stall: config.health_stall,
        weights_set: edges.weights.is_some(),
        blocks_per_epoch: config.weights.blocks_per_epoch,
        model_dir: config.model_dir.clone(),
        step_log: config.step_log.clone(),
        warnings: config.warnings.clone(),
    }));
    // Bind before the journal is opened: a taken port is the operator's to fix, and should
    // not cost a fold of the journal first.
    let listener = match config.metrics_addr {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let writer = Writer::open_published(
        &config.db,
        config.checkpoint_every_steps,
        vec![monitor.clone()],
    )?;
    let handle = writer.handle();
    // An intent left open on another mechanism is settled only on that mechanism: reading
    // this one's `LastUpdate` would take it for lost and send it again elsewhere.
    let open_mecid = {
        let state = handle.state();
        state
            .weights_intent
            .as_ref()
            .map(|_| state.weights_intent_mecid)
    };
    if let Some(weights) = edges.weights.as_ref()
        && let Some(mecid) = open_mecid.filter(|m| *m != config.weights.mecid)
    {
        // A mechanism the subnet no longer has can never take them: they are answered as
        // failed, or no run could ever settle them (`--mechid` refuses a missing mechanism).
        match weights::abandon_on_removed_mechanism(weights, &handle, mecid).await {
            Ok(true) => {}
            Ok(false) => {
                drop(handle);
                writer.close();
                return Err(RunError::Config(format!(
                    "the journal holds weights prepared for mechanism {mecid} and not yet \
                     answered: run with --mechid {mecid} to settle them with the chain first"
                )));
            }
            Err(error) => {
                drop(handle);
                writer.close();
                return Err(error.into());
            }
        }
    }
    let (serve_stop, serve_stop_seen) = watch::channel(false);
    let serving = listener
        .map(|listener| tokio::spawn(http::serve(listener, monitor.clone(), serve_stop_seen)));
    let chain = Arc::new(Metered {
        inner: edges.chain,
        monitor: monitor.clone(),
    });
    let store = Arc::new(edges.store);
    let evaluator = Arc::new(edges.evaluator);
    let fresh = start_up(&config, &handle, &*chain, &mut stop).await?;

    let status = Arc::new(Mutex::new(FetchStatus::default()));
    monitor.watch_fetches(status.clone());
    let (progress, progress_seen) = watch::channel(0u64);
    let head_seen = fetch::HeadSeen::default();
    let (tasks_stop, tasks_stop_seen) = watch::channel(false);
    let fetcher = Fetcher {
        writer: handle.clone(),
        store: store.clone(),
        evaluator: evaluator.clone(),
        config: config.clone(),
        status: status.clone(),
        progress,
        head: head_seen.clone(),
    };
    let fetching = tokio::spawn(fetcher.run(tasks_stop_seen.clone()));
    let polling = (!config.settle_before_step)
        .then_some(config.poll_interval)
        .flatten()
        .map(|every| {
            tokio::spawn(poll(
                handle.clone(),
                chain.clone(),
                head_seen.clone(),
                every,
                tasks_stop_seen.clone(),
            ))
        });

    let (ending, ending_seen) = watch::channel(None);
    let setting = edges.weights.map(|chain| {
        let chain = Metered {
            inner: chain,
            monitor: monitor.clone(),
        };
        let setter = WeightSetter::new(handle.clone(), Arc::new(chain), config.weights.clone());
        tokio::spawn(setter.run(ending_seen))
    });

    let mut stepper = Stepper {
        writer: handle.clone(),
        chain,
        store,
        evaluator,
        data: Arc::new(edges.data),
        config: config.clone(),
        progress: progress_seen,
        fetches: status,
        head: head_seen.clone(),
        stop: stop.clone(),
        monitor: monitor.clone(),
    };
    let seeded = !config.genesis && config.params.rules.successor.is_none();
    if fresh && seeded && !config.settle_before_step {
        // N syncs the consensus models before its first step; a recorded chain settles
        // before every step anyway.
        let head = handle.state().position.map_or(0, |p| p.block);
        stepper.settle(head, true).await;
    }
    // The weight setter only ends early when it failed (the journal, or a panic): then the
    // run stops too, rather than go on without setting weights.
    let mut setting = setting;
    let mut set_early = None;
    let stepped = match setting.as_mut() {
        Some(handle) => tokio::select! {
            stepped = stepper.run() => stepped,
            set = handle => {
                set_early = Some(set);
                Ok(Vec::new())
            }
        },
        None => stepper.run().await,
    };
    drop(stepper);

    let _ = tasks_stop.send(true);
    let _ = ending.send(Some(if *stop.borrow() || stepped.is_err() {
        Ending::Halt
    } else {
        Ending::Finish
    }));
    let fetched = fetching.await;
    if let Some(polling) = polling {
        let _ = polling.await;
    }
    let ended_early = set_early.is_some();
    let set = match (set_early, setting) {
        (Some(set), _) => Some(set),
        (None, Some(setting)) => Some(setting.await),
        (None, None) => None,
    };
    let state = handle.state();
    drop(handle);
    writer.close();
    let _ = serve_stop.send(true);
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    let timings = stepped?;
    let submissions = match set {
        Some(Ok(Ok(_))) if ended_early => {
            return Err(RunError::Config(
                "the weight setter stopped before the run did".into(),
            ));
        }
        Some(Ok(Ok(reports))) => reports,
        Some(Ok(Err(error))) => return Err(error.into()),
        Some(Err(panic)) => {
            return Err(RunError::Config(format!(
                "the weight setter task failed: {panic}"
            )));
        }
        None => Vec::new(),
    };
    match fetched {
        Ok(Err(error)) => return Err(error.into()),
        Err(panic) => {
            return Err(RunError::Config(format!(
                "the fetcher task failed: {panic}"
            )));
        }
        Ok(Ok(())) => {}
    }
    Ok(RunSummary {
        steps_completed: state.step_next,
        timings,
        weights: state.weights.clone(),
        stopped: *stop.borrow(),
        submissions,
    })
}

/// Listens on `addr` for the leaderboard and metrics.
async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|error| {
        RunError::Config(format!(
            "cannot serve the leaderboard and metrics on {addr}: {error} (choose another \
             --metrics-addr, or `off`)"
        ))
    })
}

/// Checks the options against the journal and, on an empty journal, records the first
/// observation with N's consensus sync (unless `--genesis`), in one atomic write. Returns
/// whether the journal was empty.
async fn start_up<C: ChainEdge>(
    config: &RunConfig,
    writer: &WriterHandle,
    chain: &C,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, RunError> {
    let state = writer.state();
    let fresh = state.position.is_none();
    if let Some(position) = state.position.filter(|_| config.genesis) {
        return Err(RunError::Config(format!(
            "--genesis starts a validator from scratch, but the journal at {} already holds \
             records up to block {}; use a new --db, or drop --genesis to resume it",
            config.db.display(),
            position.block
        )));
    }
    if let Err(why) = config.params.validate() {
        return Err(RunError::Config(why.to_string()));
    }
    let change = (state.params != config.params).then(|| {
        Event::ParamsChanged(ParamsChanged {
            params: config.params.clone(),
        })
    });
    if !fresh {
        if let Some(change) = change {
            if !config.accept_params_change {
                return Err(RunError::Config(format!(
                    "the journal at {} was run with other mechanism parameters; pass \
                     --accept-params-change to journal the change and go on with these",
                    config.db.display()
                )));
            }
            let block = state.position.map_or(0, |p| p.block);
            writer.record(vec![(block, change)]).await?;
        }
        return Ok(false);
    }
    let mut attempt = 0u32;
    let observation = loop {
        let observed = async {
            let head = chain.head(0).await?;
            chain.observe(head).await
        };
        match observed.await {
            Ok(observation) => break observation,
            Err(error) => {
                let wait = config.step_retry.delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    "cannot read the chain to start ({error}); trying again in {} s",
                    wait.as_secs_f64()
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return Ok(true);
                }
            }
        }
    };
    // The successor never seeds its eval sets from consensus: it starts from nothing.
    let successor = config.params.rules.successor.is_some();
    let seeding =
        (!config.genesis && !successor).then_some(Event::ConsensusSeeded(ConsensusSeeded {}));
    writer
        .observe(
            observation.block,
            change.into_iter().collect(),
            observation.events,
            seeding.into_iter().collect(),
        )
        .await?;
    Ok(true)
}

/// Journals new commitments on a live chain between steps.
async fn poll<C: ChainEdge>(
    writer: WriterHandle,
    chain: Arc<C>,
    head: fetch::HeadSeen,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let step = writer.state().step_next;
        let observed: Result<_, EdgeError> = async {
            let head = chain.head(step).await?;
            chain.observe(head).await
        }
        .await;
        match observed {
            Ok(observation) => {
                head.saw(observation.block);
                let written = writer
                    .observe(
                        observation.block,
                        Vec::new(),
                        observation.events,
                        Vec::new(),
                    )
                    .await;
                if written.is_err() {
                    return;
                }
            }
            Err(error) => tracing::warn!("polling the chain failed: {error}"),
        }
    }
}
