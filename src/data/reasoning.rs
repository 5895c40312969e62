//! The successor's reasoning-trace tasks (competition 4): which `datasets-server` pages it
//! asks for, how it reads their rows into (question, reference) samples, and how each failure
//! ends the task, as F's loaders do it (`F:finetune/datasets/hugging_face/
//! hugging_face_loader.py` at `afd4403`; `../shared/docs/successor-semantics.md` §2).
//!
//! Sans I/O: [`TaskLoad`] says what to ask next ([`Next`]) and is told what came back, so the
//! same code runs against the network, a recorded exchange, or F's own loaders replayed by a
//! test (`fixtures/successor_data/`). The draws are CPython's generator
//! ([`crate::pyrandom::PyRandom`]) seeded by the sync block's hash, one generator per task as
//! each of F's loaders re-seeds the global one, undisturbed by other threads (F's is not: its
//! document's trap 1), so every validator running this draws the same pages.
//!
//! Kept from F because they decide which samples are scored: the offset grid, redrawing a new
//! page after every failure, duplicates checked within a round only, a page that answered with
//! something that is not JSON counting as fetched, the SFT rounds (1, 2, 4, 8, 16, 16, …
//! pages), the task-type filter, the `\boxed{}` and `{"output": ...}` rules with their quirks,
//! and which failures drop a task ([`TaskOutcome::Dropped`]) or abort the step
//! ([`TaskOutcome::StepAborted`]). Changed, because F only loses time there: a `Retry-After`
//! is waited for at most [`RETRY_DELAY_MAX_S`] seconds. Changed, because F fails later and
//! worse: a row whose question or answer is not a string is skipped here, where F keeps it and
//! then either renders it through the chat template as Python prints it or fails the task's
//! tokenization, which scores every model ∞ (datasets-server serves these datasets' messages
//! as strings, so no real page is affected).

use serde_json::Value;

use crate::pyrandom::{DrawError, PyRandom};
use crate::text::python_strip;

/// F's `HuggingFaceLoader.retry_limit`: failed `/rows` requests tolerated per round.
pub const ATTEMPTS_MAX: u32 = 10;
/// F's `initial_retry_delay`, in seconds.
pub const RETRY_DELAY_INITIAL_S: u64 = 5;
/// F's `max_retry_delay`, in seconds (and our cap on a server's `Retry-After`).
pub const RETRY_DELAY_MAX_S: u64 = 60;
/// F's `duplicate_page_threshold`: duplicate draws that end a round early.
pub const DUPLICATES_MAX: u32 = 100;
/// SFT's extra rounds (`_fetch_more_data_until_target_size`'s `max_attempts`).
pub const SFT_ROUNDS_EXTRA_MAX: u32 = 10;
/// The task types SFT keeps, in F's order.
pub const SFT_TASK_TYPES: [&str; 2] = ["verifiable_math", "code_output_prediction"];
/// The system prompt both tasks put before the question (F: validator-side `tokenize`).
pub const SYSTEM_PROMPT: &str = "You are a reflective AI capable of using extended chains of \
thought to consider the problem thoroughly and deliberate through systematic reasoning to \
arrive at a correct solution before answering. Enclose your internal monologue in <think> ... \
</think> tags, then provide your final answer in the format that the user requests.";

/// The two datasets of competition 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasoningDataset {
    /// `PrimeIntellect/SYNTHETIC-1-SFT-Data` (F's dataset 6).
    Synthetic1Sft,
    /// `open-r1/codeforces-cots` (F's dataset 7).
    CodeforcesCots,
}

impl ReasoningDataset {
    /// The dataset's name on the hub, as F passes it to `datasets-server`.
    pub fn name(self) -> &'static str {
        match self {
            ReasoningDataset::Synthetic1Sft => "PrimeIntellect/SYNTHETIC-1-SFT-Data",
            ReasoningDataset::CodeforcesCots => "open-r1/codeforces-cots",
        }
    }
}

/// One task's loader settings (F's `dataset_kwargs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskData {
    /// Which dataset.
    pub dataset: ReasoningDataset,
    /// Pages in the first round.
    pub pages: u32,
    /// F's `num_rows_per_page`: the offset grid (the server sends at most 100 rows a page
    /// whatever is asked).
    pub rows_per_page: u32,
    /// SFT's `target_size`: samples wanted (more rounds until reached).
    pub target: Option<usize>,
    /// Codeforces' `max_sequence_length`, judged by F's four-characters-a-token estimate.
    pub sequence_tokens_max: Option<usize>,
}

impl TaskData {
    /// Competition 4's SYNTHETIC_1_SFT task.
    pub const fn synthetic_1_sft() -> Self {
        Self {
            dataset: ReasoningDataset::Synthetic1Sft,
            pages: 1,
            rows_per_page: 150,
            target: Some(120),
            sequence_tokens_max: None,
        }
    }

    /// Competition 4's CODEFORCES_COTS task.
    pub const fn codeforces_cots() -> Self {
        Self {
            dataset: ReasoningDataset::CodeforcesCots,
            pages: 1,
            rows_per_page: 120,
            target: None,
            sequence_tokens_max: Some(16_384),
        }
    }
}

/// A config of the dataset as `/size` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRows {
    /// The config's name.
    pub config: String,
    /// Its rows (the last listed split's).
    pub rows: i64,
    /// The split (the last listed).
    pub split: String,
}

/// A page: `/rows?dataset&config&split&offset&limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The config.
    pub config: String,
    /// The first row.
    pub offset: i64,
    /// The split.
    pub split: String,
}

/// What a request came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A status below 400 and its body.
    Body(Vec<u8>),
    /// 429, with the `Retry-After` header as sent, if any.
    RateLimited {
        /// The header's value.
        retry_after: Option<String>,
    },
    /// Any other status of 400 or more.
    Status(u16),
    /// No response at all (refused, reset, timed out).
    NoResponse(String),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Ask `/size?dataset=`.
    Size,
    /// Wait `wait_before_s` seconds, then ask `/rows` for `page` (with `limit` =
    /// `rows_per_page`).
    Rows {
        /// The page.
        page: Page,
        /// F's sleep before this request.
        wait_before_s: u64,
    },
    /// The task is decided.
    Done(TaskOutcome),
}

/// A sample: the question and the reference text the loss is measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The user's message (`messages[0].content`).
    pub question: String,
    /// The reference: SFT's trace with its answer re-attached, or the whole assistant message
    /// stripped (codeforces).
    pub reference: String,
}

/// How a task's loading ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// Rows were buffered: the task is scored on `samples` (none parsed scores ∞ for all).
    Loaded {
        /// The samples, in F's order.
        samples: Vec<Sample>,
        /// The pages fetched, in order.
        pages: Vec<Page>,
        /// Rows kept in F's buffer (what `if data_loader:` tests).
        rows_buffered: usize,
    },
    /// The task is skipped this step (F logs and goes on without it).
    Dropped(String),
    /// F re-raises: the whole step is abandoned.
    StepAborted(String),
}

/// A buffered row, as F keeps it.
#[derive(Debug, Clone)]
struct Buffered {
    messages: Value,
    task_type: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Size,
    Rows,
    Done,
}

/// One task's load, step by step.
#[derive(Debug, Clone)]
pub struct TaskLoad {
    data: TaskData,
    generator: PyRandom,
    phase: Phase,
    configs: Vec<ConfigRows>,
    // The round under way (`_fetch_data_to_buffer`).
    round_pages_wanted: usize,
    round_pages: Vec<Page>,
    offset: i128,
    attempts: u32,
    duplicates: u32,
    retry_delay_s: u64,
    answered_in_round: bool,
    asked: Option<Page>,
    wait_owed_s: u64,
    // SFT's extra rounds.
    rounds_extra: u32,
    pages_next_round: usize,
    pages_all: Vec<Page>,
    buffer: Vec<Buffered>,
    parsed: usize,
    samples: Vec<Sample>,
}

impl TaskLoad {
    /// Starts loading `data` with the generator seeded by `seed_digest` (the sync block
    /// hash's sha256, read as a big-endian integer); the first thing to do is ask `/size`.
    pub fn start(data: TaskData, seed_digest: &[u8]) -> (Self, Next) {
        let load = Self {
            data,
            generator: PyRandom::from_seed_big_endian(seed_digest),
            phase: Phase::Size,
            configs: Vec::new(),
            round_pages_wanted: 0,
            round_pages: Vec::new(),
            offset: 0,
            attempts: 0,
            duplicates: 0,
            retry_delay_s: RETRY_DELAY_INITIAL_S,
            answered_in_round: false,
            asked: None,
            wait_owed_s: 0,
            rounds_extra: 0,
            pages_next_round: 1,
            pages_all: Vec::new(),
            buffer: Vec::new(),
            parsed: 0,
            samples: Vec::new(),
        };
        (load, Next::Size)
    }

    /// The configs `/size` listed (empty before it answered).
    pub fn configs(&self) -> &[ConfigRows] {
        &self.configs
    }

    /// Takes `/size`'s answer. Every failure drops the task: F's retry names an attribute it
    /// lacks (`self.retry_delay`), so its first failure raises.
    pub fn answer_size(&mut self, answer: Answer) -> Next {
        if self.phase != Phase::Size {
            return self.finish(TaskOutcome::Dropped("/size answered twice".into()));
        }
        let body = match answer {
            Answer::Body(body) => body,
            other => {
                return self.finish(TaskOutcome::Dropped(format!(
                    "/size failed ({}); the successor drops the task on its first failure",
                    describe(&other)
                )));
            }
        };
        match configs_of_size(&body) {
            Ok(configs) => self.configs = configs,
            Err(why) => return self.finish(TaskOutcome::Dropped(why)),
        }
        self.phase = Phase::Rows;
        self.start_round(self.data.pages as usize)
    }

    /// Takes the answer to the last [`Next::Rows`].
    pub fn answer_rows(&mut self, answer: Answer) -> Next {
        let Some(page) = self.asked.take().filter(|_| self.phase == Phase::Rows) else {
            return self.finish(TaskOutcome::Dropped("/rows answered unasked".into()));
        };
        let body = match answer {
            Answer::Body(body) => body,
            Answer::RateLimited { retry_after } => {
                self.answered_in_round = true;
                let wait_s = match retry_after {
                    None => self.retry_delay_s,
                    Some(text) => match python_int(&text) {
                        Some(seconds) if seconds >= 0 => u64::try_from(seconds)
                            .unwrap_or(u64::MAX)
                            .min(RETRY_DELAY_MAX_S),
                        Some(_) => {
                            return self.finish(TaskOutcome::Dropped(format!(
                                "rate limited with a negative Retry-After {text:?}"
                            )));
                        }
                        None => {
                            return self.finish(TaskOutcome::Dropped(format!(
                                "rate limited with a Retry-After that is not an integer: \
                                 {:?}",
                                crate::text::printable(&text)
                            )));
                        }
                    },
                };
                self.retry_delay_s = (self.retry_delay_s * 2).min(RETRY_DELAY_MAX_S);
                self.attempts += 1;
                if self.attempts >= ATTEMPTS_MAX {
                    return self.finish(TaskOutcome::Dropped(format!(
                        "rate limited {ATTEMPTS_MAX} times"
                    )));
                }
                return self.next_page(wait_s);
            }
            Answer::Status(status) => {
                self.answered_in_round = true;
                return self.failed(TaskOutcome::StepAborted(format!(
                    "/rows answered HTTP {status} {ATTEMPTS_MAX} times"
                )));
            }
            Answer::NoResponse(why) => {
                if !self.answered_in_round {
                    // F closes a response it never had: the error ends the task.
                    return self.finish(TaskOutcome::Dropped(format!(
                        "/rows could not be reached ({}) before any answer this round",
                        crate::text::printable(&why)
                    )));
                }
                return self.failed(TaskOutcome::Dropped(format!(
                    "/rows could not be reached {ATTEMPTS_MAX} times"
                )));
            }
        };
        self.answered_in_round = true;
        self.retry_delay_s = RETRY_DELAY_INITIAL_S;
        // The page counts as fetched before its body is read.
        self.round_pages.push(page.clone());
        self.pages_all.push(page);
        let parsed: Value = match serde_json::from_slice(&body) {
            Ok(value) => value,
            // requests' JSONDecodeError is a RequestException: a failed attempt.
            Err(_) => {
                return self.failed(TaskOutcome::Dropped(format!(
                    "/rows answered {ATTEMPTS_MAX} times with what is not JSON"
                )));
            }
        };
        if let Err(why) = self.buffer_rows(&parsed) {
            return self.finish(TaskOutcome::Dropped(why));
        }
        self.next_page(0)
    }

    /// A failed `/rows` attempt: ends the task with `exhausted` after [`ATTEMPTS_MAX`], else
    /// waits the doubling delay and draws a new page.
    fn failed(&mut self, exhausted: TaskOutcome) -> Next {
        self.attempts += 1;
        if self.attempts >= ATTEMPTS_MAX {
            return self.finish(exhausted);
        }
        let wait_s = self.retry_delay_s;
        self.retry_delay_s = (self.retry_delay_s * 2).min(RETRY_DELAY_MAX_S);
        self.next_page(wait_s)
    }

    fn finish(&mut self, outcome: TaskOutcome) -> Next {
        self.phase = Phase::Done;
        self.asked = None;
        Next::Done(outcome)
    }

    fn draw_error(&mut self, error: DrawError) -> Next {
        self.finish(TaskOutcome::Dropped(format!(
            "the page draw failed: {error}"
        )))
    }

    /// `_fetch_data_to_buffer(pages)`: a fresh offset, then pages until enough.
    fn start_round(&mut self, pages: usize) -> Next {
        self.round_pages_wanted = pages;
        self.round_pages.clear();
        self.attempts = 0;
        self.duplicates = 0;
        self.retry_delay_s = RETRY_DELAY_INITIAL_S;
        self.answered_in_round = false;
        match self
            .generator
            .randint(0, i128::from(self.data.rows_per_page) - 1)
        {
            Ok(offset) => self.offset = offset,
            Err(error) => return self.draw_error(error),
        }
        self.next_page(0)
    }

    /// The loop's head: the round is complete, or a page is drawn (duplicates drawn again).
    /// A wait is owed to the next request, in this round or the next: F sleeps after a body
    /// that is not JSON even when that page ended its round.
    fn next_page(&mut self, wait_s: u64) -> Next {
        self.wait_owed_s = self.wait_owed_s.saturating_add(wait_s);
        loop {
            if self.round_pages.len() >= self.round_pages_wanted {
                return self.round_done();
            }
            let page = match self.draw_page() {
                Ok(page) => page,
                Err(error) => return self.draw_error(error),
            };
            if self.round_pages.contains(&page) {
                self.duplicates += 1;
                if self.duplicates >= DUPLICATES_MAX {
                    return self.round_done();
                }
                continue;
            }
            self.asked = Some(page.clone());
            return Next::Rows {
                page,
                wait_before_s: std::mem::take(&mut self.wait_owed_s),
            };
        }
    }

    /// `get_random_pages(1, offset)`: a config by `choice`, a page of its grid by `randint`.
    fn draw_page(&mut self) -> Result<Page, DrawError> {
        let index = self.generator.choice_index(self.configs.len())?;
        let config = &self.configs[index];
        let rows_per_page = i128::from(self.data.rows_per_page);
        let data_rows = i128::from(config.rows) - self.offset;
        // Python's `//` floors.
        let page_count = (data_rows + 1).div_euclid(rows_per_page);
        let page = self.generator.randint(0, page_count - 1)?;
        let offset = self.offset + page * rows_per_page;
        Ok(Page {
            config: config.config.clone(),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            split: config.split.clone(),
        })
    }

    /// F's `for row in response.json()["rows"]`: every row must carry `row.messages`; one
    /// that does not raises, and the task is dropped.
    fn buffer_rows(&mut self, parsed: &Value) -> Result<(), String> {
        let rows: Vec<&Value> = match parsed.get("rows") {
            Some(Value::Array(rows)) => rows.iter().collect(),
            // Iterating an empty object or string yields nothing; anything else raises.
            Some(Value::Object(map)) if map.is_empty() => Vec::new(),
            Some(Value::String(text)) if text.is_empty() => Vec::new(),
            Some(_) => return Err("/rows answered rows that are not a list".into()),
            None => return Err("/rows answered without rows".into()),
        };
        for row in rows {
            let Some(Value::Object(fields)) = row.get("row") else {
                return Err("/rows answered a row without its fields".into());
            };
            let Some(messages) = fields.get("messages") else {
                return Err("/rows answered a row without messages".into());
            };
            self.buffer.push(Buffered {
                messages: messages.clone(),
                task_type: fields.get("task_type").cloned().unwrap_or(Value::Null),
            });
        }
        Ok(())
    }

    /// After a round: SFT filters, parses and goes on while short of its target; codeforces
    /// parses once.
    fn round_done(&mut self) -> Next {
        match self.data.dataset {
            ReasoningDataset::Synthetic1Sft => {
                self.buffer.retain(|row| {
                    row.task_type
                        .as_str()
                        .is_some_and(|kind| SFT_TASK_TYPES.contains(&kind))
                });
                self.parse_new_rows();
                let short = self.data.target.is_some_and(|t| self.samples.len() < t);
                if short && self.rounds_extra < SFT_ROUNDS_EXTRA_MAX {
                    self.rounds_extra += 1;
                    let pages = self.pages_next_round;
                    self.pages_next_round = (self.pages_next_round * 2).min(16);
                    return self.start_round(pages);
                }
            }
            ReasoningDataset::CodeforcesCots => self.parse_new_rows(),
        }
        let outcome = if self.buffer.is_empty() {
            TaskOutcome::Dropped("no rows were loaded".into())
        } else {
            TaskOutcome::Loaded {
                samples: std::mem::take(&mut self.samples),
                pages: std::mem::take(&mut self.pages_all),
                rows_buffered: self.buffer.len(),
            }
        };
        self.finish(outcome)
    }

    /// `_parse_additional_samples`: rows not parsed yet, in order, until the target.
    fn parse_new_rows(&mut self) {
        while self.parsed < self.buffer.len() {
            if self.data.target.is_some_and(|t| self.samples.len() >= t) {
                return;
            }
            let row = &self.buffer[self.parsed];
            self.parsed += 1;
            let sample = match self.data.dataset {
                ReasoningDataset::Synthetic1Sft => sft_sample(row),
                ReasoningDataset::CodeforcesCots => {
                    codeforces_sample(&row.messages, self.data.sequence_tokens_max)
                }
            };
            if let Some(sample) = sample {
                self.samples.push(sample);
            }
        }
    }
}

/// `/size`'s configs as F reads them: `size.splits`, config `default` dropped unless it is
/// the only entry, the last split of a config winning while the config keeps its first place.
pub fn configs_of_size(body: &[u8]) -> Result<Vec<ConfigRows>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "/size answered what is not JSON".to_string())?;
    let Some(Value::Array(splits)) = value.get("size").and_then(|size| size.get("splits")) else {
        return Err("/size answered without size.splits".into());
    };
    let keep_default = splits.len() == 1;
    let mut configs: Vec<ConfigRows> = Vec::new();
    for entry in splits {
        let field = |name: &str| {
            entry
                .get(name)
                .ok_or_else(|| format!("/size lists a split without {name}"))
        };
        let Some(config) = field("config")?.as_str() else {
            return Err("/size lists a config that is not a string".into());
        };
        if !keep_default && config == "default" {
            continue;
        }
        let Some(rows) = field("num_rows")?.as_i64() else {
            return Err("/size lists a row count that is not an integer".into());
        };
        let Some(split) = field("split")?.as_str() else {
            return Err("/size lists a split that is not a string".into());
        };
        let read = ConfigRows {
            config: config.to_string(),
            rows,
            split: split.to_string(),
        };
        match configs.iter_mut().find(|known| known.config == config) {
            Some(known) => *known = read,
            None => configs.push(read),
        }
    }
    Ok(configs)
}

/// The user's and the assistant's messages, both strings (F indexes `messages[0]` and
/// `messages[1]`; a row it cannot index is skipped).
fn two_messages(messages: &Value) -> Option<(&str, &str)> {
    let messages = messages.as_array()?;
    let content = |index: usize| messages.get(index)?.get("content")?.as_str();
    Some((content(0)?, content(1)?))
}

/// An SFT row as F parses and formats it; `None` is a row F skips.
fn sft_sample(row: &Buffered) -> Option<Sample> {
    let (question, assistant) = two_messages(&row.messages)?;
    let reference = match row.task_type.as_str()? {
        "verifiable_math" => math_reference(assistant),
        "code_output_prediction" => code_output_reference(assistant),
        _ => return None,
    };
    Some(Sample {
        question: question.to_string(),
        reference,
    })
}

/// A codeforces row: exactly two messages, within the length estimate; the reference is the
/// assistant's message stripped.
fn codeforces_sample(messages: &Value, tokens_max: Option<usize>) -> Option<Sample> {
    if messages.as_array()?.len() != 2 {
        return None;
    }
    let (question, assistant) = two_messages(messages)?;
    if let Some(max) = tokens_max {
        // F's estimate: code points / 4, floored, each text apart, plus 10.
        let estimate = question.chars().count() / 4 + assistant.chars().count() / 4 + 10;
        if estimate > max {
            return None;
        }
    }
    Some(Sample {
        question: question.to_string(),
        reference: python_strip(assistant).to_string(),
    })
}

/// Every match of the regex `open(.*?)close` (`.` not matching a newline), left to right,
/// without overlap, as Python's `re.findall` gives them.
fn find_all_lazy<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(open) {
        let start = from + at + open.len();
        let inner_end = text[start..].find(close).map(|end| start + end);
        let newline = text[start..].find('\n').map(|end| start + end);
        match inner_end {
            Some(end) if newline.is_none_or(|n| n > end) => {
                found.push(&text[start..end]);
                from = end + close.len();
            }
            // No match starts here: the search goes on one character later.
            _ => {
                let step = text[from + at..].chars().next().map_or(1, char::len_utf8);
                from = from + at + step;
            }
        }
    }
    found
}

/// SFT's `verifiable_math` reference: the last `\boxed{...}` (cut at its first `}`), the text
/// before its last occurrence stripped, and the box put back after a space.
pub fn math_reference(assistant: &str) -> String {
    let answer = find_all_lazy(assistant, "\\boxed{", "}")
        .last()
        .copied()
        .unwrap_or("");
    let trace = if answer.is_empty() {
        assistant
    } else {
        match assistant.rfind(&format!("\\boxed{{{answer}}}")) {
            Some(at) => python_strip(&assistant[..at]),
            None => assistant,
        }
    };
    format!("{} \\boxed{{{answer}}}", python_strip(trace))
}

/// SFT's `code_output_prediction` reference: the last `{"output": "..."}`, its first
/// occurrence removed from the message, and it put back at the end after a space.
pub fn code_output_reference(assistant: &str) -> String {
    let answer = find_all_lazy(assistant, "{\"output\": \"", "\"}")
        .last()
        .copied()
        .unwrap_or("");
    let trace = if answer.is_empty() {
        assistant.to_string()
    } else {
        assistant.replacen(&format!("{{\"output\": \"{answer}\"}}"), "", 1)
    };
    format!("{} {{\"output\": \"{answer}\"}}", python_strip(&trace))
}

/// Python's `int(text)` for a header value: surrounding whitespace, an optional sign, ASCII
/// digits with single underscores between them. `None` where Python raises.
fn python_int(text: &str) -> Option<i128> {
    let trimmed = python_strip(text);
    let (negative, digits) = match trimmed.as_bytes().first()? {
        b'-' => (true, &trimmed[1..]),
        b'+' => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    let mut value: i128 = 0;
    for c in digits.chars().filter(char::is_ascii_digit) {
        value = value
            .saturating_mul(10)
            .saturating_add(i128::from(c as u8 - b'0'));
    }
    Some(if negative { -value } else { value })
}

fn describe(answer: &Answer) -> String {
    match answer {
        Answer::Body(_) => "an answer".into(),
        Answer::RateLimited { .. } => "HTTP 429".into(),
        Answer::Status(status) => format!("HTTP {status}"),
        Answer::NoResponse(why) => crate::text::printable(why).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boxed_rule_keeps_its_quirks() {
        // The last box, cut at its first closing brace.
        assert_eq!(
            math_reference("a \\boxed{1} then\n \\boxed{\\frac{1}{2}}  "),
            "a \\boxed{1} then \\boxed{\\frac{1}"
        );
        // No box, or an empty one: the whole message and an empty box.
        assert_eq!(math_reference("  no box "), "no box \\boxed{}");
        assert_eq!(math_reference("x \\boxed{} y"), "x \\boxed{} y \\boxed{}");
        // A box that a newline interrupts is no match.
        assert_eq!(
            math_reference("\\boxed{a\nb} \\boxed{c}"),
            "\\boxed{a\nb} \\boxed{c}"
        );
        assert_eq!(math_reference("\\boxed{a\nb}"), "\\boxed{a\nb} \\boxed{}");
    }

    #[test]
    fn the_output_rule_removes_the_first_occurrence() {
        let message = "{\"output\": \"7\"} reason {\"output\": \"7\"}";
        assert_eq!(
            code_output_reference(message),
            "reason {\"output\": \"7\"} {\"output\": \"7\"}"
        );
        assert_eq!(code_output_reference("none"), "none {\"output\": \"\"}");
    }

    #[test]
    fn the_page_grid_is_the_successors() {
        // F:tests/finetune/datasets/hugging_face/test_hugging_face_loader.py, R = 100.
        let starts = |rows: i64, offset: i64| {
            let rows_per_page = 100;
            let page_count = (rows - offset + 1).div_euclid(rows_per_page);
            (0..page_count)
                .map(|page| offset + page * rows_per_page)
                .collect::<Vec<_>>()
        };
        assert_eq!(starts(599, 0), [0, 100, 200, 300, 400, 500]);
        assert_eq!(starts(598, 0), [0, 100, 200, 300, 400]);
        assert_eq!(starts(599, 50), [50, 150, 250, 350, 450]);
        assert_eq!(starts(548, 50), [50, 150, 250, 350]);
    }

    #[test]
    fn header_integers_read_as_python_reads_them() {
        assert_eq!(python_int(" 12 "), Some(12));
        assert_eq!(python_int("1_0"), Some(10));
        assert_eq!(python_int("-3"), Some(-3));
        for bad in [
            "",
            "1__0",
            "_1",
            "1.5",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "+",
        ] {
            assert_eq!(python_int(bad), None, "{bad}");
        }
    }
}
