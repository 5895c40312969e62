//! What the runner shows while it runs: the leaderboard, Prometheus metrics, health and N's
//! step log, all derived from the records the writer journaled (a [`Board`] fed in journal
//! order) plus the few figures only a live process has (the chain's head, durations, chain
//! calls, the fetch queue, the disk).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::board::step_log::{self, StepLogContext};
use crate::board::{Board, Leaderboard};
use crate::journal::head::Head;
use crate::journal::{Journal, JournalError};
use crate::machine::{Event, Outcome, Record, State};

use super::fetch::SharedStatus;
use super::writer::Subscriber;

/// Upper bounds of the step duration histogram, in seconds.
const STEP_BUCKETS_S: [f64; 11] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Upper bounds of the per-model evaluation histogram, in seconds (N's timeout is 720).
const EVAL_BUCKETS_S: [f64; 11] = [
    0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 720.0,
];

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
}

/// A histogram with fixed buckets, as Prometheus exposes it.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(&mut self.counts) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", float(self.sum));
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// A sample value as the text format writes it.
fn float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

/// A label value, escaped as the text format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[derive(Debug)]
struct Inner {
    board: Board,
    state: Arc<State>,
    last_record_at: Instant,
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
        inner.head_block = Some(inner.head_block.map_or(block, |b| b.max(block)));
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
        let fetch_queue = self
            .fetch_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|status| {
                let status = status.lock().unwrap_or_else(PoisonError::into_inner);
                status.in_flight.len() + status.failed.len()
            });
        let cache_bytes = dir_bytes(&self.config.model_dir);
        let disk_free = fs2::available_space(existing_ancestor(&self.config.model_dir)).ok();
        let healthy = self.health().is_ok();
        let inner = self.inner();
        let state = &inner.state;
        let counts = inner.board.counts();
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            &mut out,
            "validator_build_info",
            "gauge",
            "The validator's build: version and journal schema.",
        );
        let _ = writeln!(
            out,
            "validator_build_info{{version=\"{}\",schema=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::machine::SCHEMA_VERSION
        );
        family(
            &mut out,
            "validator_healthy",
            "gauge",
            "1 while /healthz answers 200, else 0.",
        );
        let _ = writeln!(out, "validator_healthy {}", u8::from(healthy));
        family(
            &mut out,
            "validator_chain_head_block",
            "gauge",
            "The chain's head as last read.",
        );
        if let Some(head) = inner.head_block {
            let _ = writeln!(out, "validator_chain_head_block {head}");
        }
        family(
            &mut out,
            "validator_journal_block",
            "gauge",
            "The block of the journal's last record.",
        );
        if let Some(position) = state.position {
            let _ = writeln!(out, "validator_journal_block {}", position.block);
        }
        family(
            &mut out,
            "validator_journal_records_total",
            "counter",
            "Records in the journal.",
        );
        let _ = writeln!(out, "validator_journal_records_total {}", counts.records);
        family(
            &mut out,
            "validator_journal_head_info",
            "gauge",
            "The journal's head (records, last position, hash chain), as replay prints the head it verified.",
        );
        if let Some(head) = &inner.journal_head {
            let (block, seq) = head.last.map_or((String::new(), String::new()), |p| {
                (p.block.to_string(), p.seq.to_string())
            });
            let _ = writeln!(
                out,
                "validator_journal_head_info{{records=\"{}\",block=\"{block}\",seq=\"{seq}\",chain_sha256=\"{}\"}} 1",
                head.records,
                label(&head.chain_sha256)
            );
        }
        family(
            &mut out,
            "validator_steps_completed",
            "gauge",
            "Completed steps (the next step's number).",
        );
        let _ = writeln!(out, "validator_steps_completed {}", state.step_next);
        family(
            &mut out,
            "validator_steps_total",
            "counter",
            "Steps ended, by competition and outcome (completed, abandoned, failed).",
        );
        for ((competition, end), count) in &counts.steps {
            let _ = writeln!(
                out,
                "validator_steps_total{{competition=\"{}\",outcome=\"{}\"}} {count}",
                label(competition),
                end.as_str()
            );
        }
        inner.step_seconds.write(
            &mut out,
            "validator_step_duration_seconds",
            "Duration of each completed step run by this process.",
        );
        inner.eval_seconds.write(
            &mut out,
            "validator_model_evaluation_duration_seconds",
            "Duration of each model's evaluation in this process (child start, session, scoring).",
        );
        family(
            &mut out,
            "validator_evaluations_total",
            "counter",
            "Model evaluations journaled, by outcome (losses, failed).",
        );
        for (outcome, count) in &counts.evaluations {
            let _ = writeln!(
                out,
                "validator_evaluations_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
        family(
            &mut out,
            "validator_models_verified_total",
            "counter",
            "Models verified.",
        );
        let _ = writeln!(
            out,
            "validator_models_verified_total {}",
            counts.models_verified
        );
        family(
            &mut out,
            "validator_models_rejected_total",
            "counter",
            "Models rejected, by rejection code.",
        );
        for (code, count) in &counts.models_rejected {
            let _ = writeln!(
                out,
                "validator_models_rejected_total{{code=\"{}\"}} {count}",
                label(code)
            );
        }
        family(
            &mut out,
            "validator_fetch_queue_length",
            "gauge",
            "Model fetches under way or waiting for a retry.",
        );
        if let Some(queue) = fetch_queue {
            let _ = writeln!(out, "validator_fetch_queue_length {queue}");
        }
        family(
            &mut out,
            "validator_eval_set_size",
            "gauge",
            "Uids in each competition's eval set.",
        );
        for (id, competition) in &state.competitions {
            let _ = writeln!(
                out,
                "validator_eval_set_size{{competition=\"{}\"}} {}",
                label(id.as_str()),
                competition.eval_set.len()
            );
        }
        family(
            &mut out,
            "validator_pending_size",
            "gauge",
            "Uids waiting to join each competition's eval set.",
        );
        for (id, competition) in &state.competitions {
            let _ = writeln!(
                out,
                "validator_pending_size{{competition=\"{}\"}} {}",
                label(id.as_str()),
                competition.pending.len()
            );
        }
        let mut per_uid = [String::new(), String::new(), String::new()];
        for (competition, last) in inner.board.latest() {
            let id = label(competition);
            for point in &last.uids {
                let labels = format!("competition=\"{id}\",uid=\"{}\"", point.uid);
                let loss = point.loss_mean.unwrap_or(f64::INFINITY);
                let weight = crate::board::weight_of(&state.weights, point.uid);
                let _ = writeln!(
                    per_uid[0],
                    "validator_uid_win_rate{{{labels}}} {}",
                    float(point.win_rate)
                );
                let _ = writeln!(
                    per_uid[1],
                    "validator_uid_loss_mean{{{labels}}} {}",
                    float(loss)
                );
                let _ = writeln!(
                    per_uid[2],
                    "validator_uid_weight{{{labels}}} {}",
                    float(weight)
                );
            }
        }
        let helps = [
            (
                "validator_uid_win_rate",
                "Each uid's win rate at its competition's latest step.",
            ),
            (
                "validator_uid_loss_mean",
                "Each uid's mean loss at its competition's latest step (+Inf: no losses).",
            ),
            ("validator_uid_weight", "Each uid's weight now."),
        ];
        for ((name, help), samples) in helps.iter().zip(&per_uid) {
            family(&mut out, name, "gauge", help);
            out.push_str(samples);
        }
        family(
            &mut out,
            "validator_weight_submissions_total",
            "counter",
            "Weight submissions answered, by method and outcome.",
        );
        for ((method, outcome), count) in &counts.weights {
            let _ = writeln!(
                out,
                "validator_weight_submissions_total{{method=\"{method}\",outcome=\"{outcome}\"}} {count}"
            );
        }
        family(
            &mut out,
            "validator_blocks_since_weights_included",
            "gauge",
            "Head less the block the last weights were included in (or this run's first head, before any).",
        );
        if let Some(blocks) = blocks_since_weights(&inner) {
            let _ = writeln!(out, "validator_blocks_since_weights_included {blocks}");
        }
        family(
            &mut out,
            "validator_chain_calls_total",
            "counter",
            "Chain calls made, by call.",
        );
        for (call, (calls, _)) in &inner.chain_calls {
            let _ = writeln!(
                out,
                "validator_chain_calls_total{{call=\"{call}\"}} {calls}"
            );
        }
        family(
            &mut out,
            "validator_chain_errors_total",
            "counter",
            "Chain calls that failed, by call.",
        );
        for (call, (_, errors)) in &inner.chain_calls {
            let _ = writeln!(
                out,
                "validator_chain_errors_total{{call=\"{call}\"}} {errors}"
            );
        }
        family(
            &mut out,
            "validator_model_cache_bytes",
            "gauge",
            "Bytes in the model cache.",
        );
        let _ = writeln!(out, "validator_model_cache_bytes {cache_bytes}");
        family(
            &mut out,
            "validator_disk_free_bytes",
            "gauge",
            "Free bytes on the model cache's disk.",
        );
        if let Some(free) = disk_free {
            let _ = writeln!(out, "validator_disk_free_bytes {free}");
        }
        family(
            &mut out,
            "validator_step_log_errors",
            "gauge",
            "1 when the last append to the step log failed.",
        );
        let _ = writeln!(
            out,
            "validator_step_log_errors {}",
            u8::from(inner.step_log_error.is_some())
        );
        out
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
        snapshot_step(&mut inner, state);
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
