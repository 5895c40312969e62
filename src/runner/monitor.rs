//! What the runner shows while it runs: the leaderboard, Prometheus metrics, health and N's
//! step log, all derived from the records the writer journaled (a [`Board`] fed in journal
//! order) plus the few figures only a live process has (the chain's head, durations, chain
//! calls, the fetch queue, the disk).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::board::step_log::{self, StepLogContext};
use crate::board::{Board, Leaderboard};
use crate::journal::head::Head;
use crate::journal::{Journal, JournalError};
use crate::machine::{Event, Outcome, Record, State};

use super::fetch::SharedStatus;
use super::metrics::{EVAL_BUCKETS_S, Histogram, STEP_BUCKETS_S, Scrape};
use super::writer::Subscriber;

/// What the monitor is told.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Longest time without a new journal record before `/healthz` says stuck.
    pub stall: Duration,
    /// Whether this run sets weights (else weights are not part of health).
    pub weights_set: bool,
    /// Blocks between weight submissions: `/healthz` says stuck after three epochs without an
    /// inclusion.
    pub blocks_per_epoch: u64,
    /// The model cache, whose size and free disk are exposed.
    pub model_dir: PathBuf,
    /// Where N's step log goes, one line per step.
    pub step_log: Option<PathBuf>,
    /// What the operator accepted that weakens the validator, said on the page.
    pub warnings: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    board: Board,
    state: Arc<State>,
    last_record_at: Instant,
    /// When the last step completed, or this run started (a fresh run is given the stall time
    /// to complete its first).
    last_step_at: Instant,
    head_block: Option<u64>,
    head_first: Option<u64>,
    /// The open step's participants and their commit blocks.
    step_commits: Vec<(u16, Option<u64>)>,
    step_seconds: Histogram,
    eval_seconds: Histogram,
    /// Chain calls by name: (calls, errors).
    chain_calls: BTreeMap<&'static str, (u64, u64)>,
    step_log_error: Option<String>,
    journal_head: Option<crate::journal::head::Head>,
}

/// The runner's view for operators and miners, shared by the writer (which feeds it), the
/// tasks (which report durations and chain calls) and the HTTP server (which reads it).
#[derive(Debug)]
pub struct Monitor {
    config: MonitorConfig,
    inner: Mutex<Inner>,
    fetch_status: Mutex<Option<SharedStatus>>,
    /// The model cache's size and the fetcher's count of cache changes it was walked at.
    cache_size: Mutex<Option<(u64, u64)>>,
    /// Bumped whenever what the leaderboard shows may have changed (a journal write, a new
    /// head): the page is rendered again only then.
    version: AtomicU64,
    /// The leaderboard as last rendered.
    rendered: Mutex<Option<Arc<Page>>>,
    /// Held while rendering, so concurrent requests of a stale page render it once.
    rendering: Mutex<()>,
}

/// The leaderboard at one version, rendered as HTML and JSON on first request.
#[derive(Debug)]
pub struct Page {
    version: u64,
    leaderboard: Leaderboard,
    html: OnceLock<Arc<[u8]>>,
    json: OnceLock<Result<Arc<[u8]>, String>>,
}

impl Page {
    /// The page, as `validator leaderboard` writes it (live: it refreshes itself).
    pub fn html(&self) -> Result<Arc<[u8]>, String> {
        Ok(self
            .html
            .get_or_init(|| {
                crate::board::html::render(&self.leaderboard, true)
                    .into_bytes()
                    .into()
            })
            .clone())
    }

    /// The leaderboard's JSON (`/api/leaderboard`).
    pub fn json(&self) -> Result<Arc<[u8]>, String> {
        self.json
            .get_or_init(|| {
                serde_json::to_vec_pretty(&self.leaderboard)
                    .map(Into::into)
                    .map_err(|e| e.to_string())
            })
            .clone()
    }
}

impl Monitor {
    /// A monitor with nothing observed yet.
    pub fn new(config: MonitorConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                board: Board::new(),
                state: Arc::new(State::new(crate::machine::MechanismParams::genesis())),
                last_record_at: Instant::now(),
                last_step_at: Instant::now(),
                head_block: None,
                head_first: None,
                step_commits: Vec::new(),
                step_seconds: Histogram::new(&STEP_BUCKETS_S),
                eval_seconds: Histogram::new(&EVAL_BUCKETS_S),
                chain_calls: BTreeMap::new(),
                step_log_error: None,
                journal_head: None,
            }),
            fetch_status: Mutex::new(None),
            cache_size: Mutex::new(None),
            version: AtomicU64::new(0),
            rendered: Mutex::new(None),
            rendering: Mutex::new(()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the fetcher's queue from `status`.
    pub fn watch_fetches(&self, status: SharedStatus) {
        *self
            .fetch_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(status);
    }

    /// The chain's head as just read.
    pub fn head_read(&self, block: u64) {
        let mut inner = self.inner();
        let head = Some(inner.head_block.map_or(block, |b| b.max(block)));
        if head != inner.head_block {
            self.version.fetch_add(1, Ordering::Release);
        }
        inner.head_block = head;
        inner.head_first.get_or_insert(block);
    }

    /// A chain call ended.
    pub fn chain_call(&self, call: &'static str, ok: bool) {
        let mut inner = self.inner();
        let entry = inner.chain_calls.entry(call).or_default();
        entry.0 += 1;
        if !ok {
            entry.1 += 1;
        }
    }

    /// A step ended after `seconds`.
    pub fn step_took(&self, seconds: f64) {
        self.inner().step_seconds.observe(seconds);
    }

    /// A model's evaluation took `seconds`.
    pub fn evaluation_took(&self, seconds: f64) {
        self.inner().eval_seconds.observe(seconds);
    }

    /// The leaderboard now.
    pub fn leaderboard(&self) -> Leaderboard {
        let inner = self.inner();
        let mut leaderboard = inner.board.view(&inner.state, inner.head_block);
        leaderboard.validator.journal_head = inner.journal_head.as_ref().map(Head::summary);
        leaderboard
    }

    /// The leaderboard page, rendered again only when what it shows changed since the last
    /// rendering (one rendering at a time: concurrent requests wait for it). Rendering runs
    /// outside the lock the journal writer takes, so a huge page never holds up the loop for
    /// longer than the board's view of it.
    pub fn page(&self) -> Arc<Page> {
        let fresh = |rendered: &Option<Arc<Page>>, version: u64| {
            rendered
                .as_ref()
                .filter(|page| page.version == version)
                .cloned()
        };
        let version = self.version.load(Ordering::Acquire);
        if let Some(page) = fresh(&lock(&self.rendered), version) {
            return page;
        }
        let _one = lock(&self.rendering);
        let version = self.version.load(Ordering::Acquire);
        if let Some(page) = fresh(&lock(&self.rendered), version) {
            return page;
        }
        let page = Arc::new(Page {
            version,
            leaderboard: self.leaderboard(),
            html: OnceLock::new(),
            json: OnceLock::new(),
        });
        *lock(&self.rendered) = Some(page.clone());
        page
    }

    /// Whether the loop is making progress: `Err` says why not.
    pub fn health(&self) -> Result<String, String> {
        let inner = self.inner();
        let quiet = inner.last_record_at.elapsed();
        if quiet > self.config.stall {
            return Err(format!(
                "stuck: no journal record for {} s (limit {} s)",
                quiet.as_secs(),
                self.config.stall.as_secs()
            ));
        }
        // Records alone are not progress: a loop that journals head readings while every
        // step fails (a cache it cannot write, a model that never gets a verdict) is stuck.
        let stepless = inner.last_step_at.elapsed();
        if stepless > self.config.stall {
            return Err(format!(
                "stuck: no step completed for {} s (limit {} s, --health-stall-s)",
                stepless.as_secs(),
                self.config.stall.as_secs()
            ));
        }
        if self.config.weights_set
            && let Some(blocks) = blocks_since_weights(&inner)
        {
            let limit = self.config.blocks_per_epoch.saturating_mul(3);
            if blocks > limit {
                return Err(format!(
                    "stuck: no weights included for {blocks} blocks (three epochs are {limit})"
                ));
            }
        }
        Ok(format!(
            "ok: last journal record {} s ago, {} steps completed",
            quiet.as_secs(),
            inner.state.step_next
        ))
    }

    /// Every metric, in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let (fetch_queue, cache_changes) = self
            .fetch_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or((None, 0), |status| {
                let status = status.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    Some(status.in_flight.len() + status.failed.len()),
                    status.cache_changes,
                )
            });
        let cache_bytes = self.cache_bytes(cache_changes);
        let disk_free = fs2::available_space(existing_ancestor(&self.config.model_dir)).ok();
        let healthy = self.health().is_ok();
        let inner = self.inner();
        super::metrics::render(&Scrape {
            healthy,
            state: &inner.state,
            board: &inner.board,
            counts: inner.board.counts(),
            head_block: inner.head_block,
            journal_head: inner.journal_head.as_ref(),
            step_seconds: &inner.step_seconds,
            eval_seconds: &inner.eval_seconds,
            chain_calls: &inner.chain_calls,
            blocks_since_weights: blocks_since_weights(&inner),
            fetch_queue,
            cache_bytes,
            disk_free,
            step_log_failed: inner.step_log_error.is_some(),
        })
    }

    /// The model cache's size, walked again only when the fetcher says the cache changed
    /// (a fetch ended, a sweep ran) since the last walk: a scrape never walks an unchanged
    /// cache.
    fn cache_bytes(&self, changes: u64) -> u64 {
        let mut known = self
            .cache_size
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match *known {
            Some((seen, bytes)) if seen == changes => bytes,
            _ => {
                let bytes = dir_bytes(&self.config.model_dir);
                *known = Some((changes, bytes));
                bytes
            }
        }
    }
}

/// Blocks from the last inclusion of weights to the head, counted from this run's first head
/// at the latest: a restart after an outage is not judged on blocks it could not act in.
fn blocks_since_weights(inner: &Inner) -> Option<u64> {
    let head = inner.head_block?;
    let since = match (inner.state.block_weights_included, inner.head_first) {
        (Some(included), Some(first)) => included.max(first),
        (included, first) => included.or(first).unwrap_or(head),
    };
    Some(head.saturating_sub(since))
}

/// The monitor hears every write the journal writer publishes.
impl Subscriber for Monitor {
    /// The writer opened `journal` at `state`: the board folds every record so far (from
    /// genesis, or the earliest checkpoint of an imported journal), each with the fold's
    /// verdict.
    fn opened(&self, journal: &Journal, state: &State) -> Result<(), JournalError> {
        let (board, _) = crate::board::board_of_journal(journal)?;
        let mut inner = self.inner();
        inner.board = board;
        inner.state = Arc::new(state.clone());
        inner.journal_head = journal.head().cloned();
        inner.last_record_at = Instant::now();
        inner.last_step_at = Instant::now();
        snapshot_step(&mut inner, state);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The writer journaled `written`, folding to `state` (the very state it published).
    fn written(&self, written: &[(Record, Outcome)], state: Arc<State>, head: Option<&Head>) {
        let mut lines = Vec::new();
        {
            let mut inner = self.inner();
            for (record, outcome) in written {
                let completed = match (&record.event, outcome) {
                    (Event::StepCompleted(completed), Outcome::Scored(_)) => Some(completed),
                    _ => None,
                };
                if completed.is_some() {
                    inner.last_step_at = Instant::now();
                }
                let pages = completed.map(|_| inner.board.open_pages().to_vec());
                inner.board.observe(record, outcome);
                if let (Some(completed), Some(pages), true) =
                    (completed, pages, self.config.step_log.is_some())
                {
                    let competition = completed.recorded.competition.as_str().to_owned();
                    if let Some(point) = inner.board.history(&competition).last() {
                        let time_s = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64());
                        let context = StepLogContext {
                            time_s,
                            competition: &competition,
                            block: record.block,
                            pages: &pages,
                            block_commit: &inner.step_commits,
                            perf: [None, None, None],
                        };
                        lines.push(step_log::line(point, &context));
                    }
                }
            }
            if !written.is_empty() {
                inner.last_record_at = Instant::now();
            }
            snapshot_step(&mut inner, &state);
            inner.state = state;
            inner.journal_head = head.cloned();
            self.version.fetch_add(1, Ordering::Release);
        }
        if let (Some(path), false) = (&self.config.step_log, lines.is_empty()) {
            let appended = append_lines(path, &lines);
            if let Err(error) = &appended {
                tracing::warn!("cannot append to the step log {}: {error}", path.display());
            }
            self.inner().step_log_error = appended.err().map(|e| e.to_string());
        }
    }
}

/// Keeps the open step's commit blocks for the step log (the completed step's participants
/// are no longer in the state once it is folded).
fn snapshot_step(inner: &mut Inner, state: &State) {
    if let Some(open) = &state.step_open {
        inner.step_commits = open
            .participants
            .iter()
            .map(|p| (p.uid, crate::board::entry_block(&p.entry)))
            .collect();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn append_lines(path: &Path, lines: &[String]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut text = lines.join("\n");
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.flush()
}

/// Bytes of the regular files under `dir` (links are not followed).
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total = total.saturating_add(entry.metadata().map_or(0, |m| m.len()));
                }
                _ => {}
            }
        }
    }
    total
}

fn existing_ancestor(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (issue 32): every scrape of `/metrics` walked the whole model cache for its
    /// size, hundreds of gigabytes of files at production scale. The size is walked again only
    /// when the fetcher says the cache changed.
    #[test]
    fn a_scrape_walks_the_model_cache_only_after_it_changed() {
        let cache = tempfile::tempdir().unwrap();
        let monitor = Monitor::new(MonitorConfig {
            stall: Duration::from_secs(60),
            weights_set: false,
            blocks_per_epoch: 100,
            model_dir: cache.path().to_owned(),
            step_log: None,
            warnings: Vec::new(),
        });
        let status = SharedStatus::default();
        monitor.watch_fetches(status.clone());
        let size = |monitor: &Monitor| {
            let text = monitor.metrics_text();
            let line = text
                .lines()
                .find(|l| l.starts_with("validator_model_cache_bytes "))
                .unwrap()
                .to_owned();
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        };
        std::fs::write(cache.path().join("a"), [0u8; 100]).unwrap();
        assert_eq!(size(&monitor), 100);
        std::fs::write(cache.path().join("b"), [0u8; 50]).unwrap();
        assert_eq!(
            size(&monitor),
            100,
            "an unchanged cache is not walked again"
        );
        status.lock().unwrap().cache_changes += 1;
        assert_eq!(size(&monitor), 150);
    }

    /// Postmortem (a1e8d6f): health counted blocks since the last inclusion from the journal
    /// alone, so a validator restarted after a long outage was "stuck" at once, judged on
    /// blocks it could not act in. It counts from this run's first head at the latest.
    #[test]
    fn a_restarted_run_is_judged_from_its_first_head() {
        let monitor = Monitor::new(MonitorConfig {
            stall: Duration::from_secs(60),
            weights_set: true,
            blocks_per_epoch: 100,
            model_dir: PathBuf::from("/nonexistent"),
            step_log: None,
            warnings: Vec::new(),
        });
        monitor.inner().state = Arc::new(State {
            block_weights_included: Some(1_000),
            ..State::default()
        });
        monitor.head_read(50_000);
        assert!(monitor.health().is_ok(), "{:?}", monitor.health());
        monitor.head_read(50_301);
        let why = monitor.health().unwrap_err();
        assert!(why.contains("301 blocks"), "{why}");
    }
}
