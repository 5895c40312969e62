//! The data edge: each evaluation step's prompt/response batch, from N's Cortex-style wandb run
//! history, from Hugging Face dataset files, or from a local JSON Lines file.
//!
//! A batch is journaled (text and provenance) before any model sees it. Which runs, files and
//! rows are taken is a pure function of a seed and the step ([`Seed`], [`shuffled`]): with the
//! successor's block-hash seed, two validators at the same block take the same batch from the
//! same source data. Bad rows are counted and skipped ([`DataReport`]); a source that cannot be
//! reached is a [`DataError`] and the step is skipped with that reason, never a crash.

pub mod cortex;
pub mod datasets_server;
#[cfg(feature = "hub")]
pub mod hf;
pub mod local;
pub mod parquet_rows;
pub mod phrases;
pub mod reasoning;
pub mod spec;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::machine::event::{BatchFetched, Provenance};
use crate::machine::wire::Samples;
pub use crate::seed::{Seed, shuffled};
use crate::text::python_strip;

/// N's `max_samples` for a step.
pub const DEFAULT_MAX_SAMPLES: usize = 400;
/// The longest prompt or response kept, in bytes (far past any 2048-token window).
pub const TEXT_BYTES_MAX: usize = 256 * 1024;

/// What a step asks a source for.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The step number.
    pub step: u64,
    /// The seed.
    pub seed: Seed,
    /// The most samples taken.
    pub max_samples: usize,
}

/// Why rows were not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The row is not valid JSON (or not an object).
    Malformed,
    /// The row is not UTF-8.
    NotUtf8,
    /// A field is absent.
    MissingField,
    /// A field is not a string.
    WrongType,
    /// Prompt or response is empty after stripping.
    Empty,
    /// Prompt or response exceeds the size bound.
    TooLong,
    /// The response contains one of N's unwanted phrases.
    UnwantedPhrase,
}

/// Counts of what a source read and kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataReport {
    /// Candidate rows looked at.
    pub rows_seen: u64,
    /// Samples kept.
    pub rows_kept: u64,
    /// Rows skipped, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
}

/// A batch and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutcome {
    /// The event to journal.
    pub batch: BatchFetched,
    /// What was read and skipped.
    pub report: DataReport,
}

/// The source could not produce a batch; the step is skipped with this reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DataError {
    /// Unreachable, timed out, or refusing for now (retry, or skip the step).
    #[error("the data source is unavailable: {0}")]
    Unavailable(String),
    /// The source's configuration is unusable.
    #[error("data source configuration: {0}")]
    Config(String),
}

/// An HTTP client whose every request, connection included, ends within `timeout`.
pub(crate) fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, DataError> {
    reqwest::Client::builder()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| DataError::Config(format!("HTTP client: {e}")))
}

/// A source of evaluation batches.
pub trait DataSource {
    /// The source's name, as journaled in the provenance.
    fn name(&self) -> String;

    /// One step's batch.
    fn fetch(
        &self,
        request: &BatchRequest,
    ) -> impl Future<Output = Result<BatchOutcome, DataError>> + Send;
}

impl BatchOutcome {
    /// The batch as its journal event's JSON (`batch_fetched`) with the report beside it.
    pub fn to_json(&self) -> serde_json::Value {
        let record = crate::machine::Record {
            block: 0,
            seq: 0,
            event: crate::machine::Event::BatchFetched(self.batch.clone()),
        };
        let mut line = Vec::new();
        // Writing into a Vec cannot fail; an encoding failure would show as a null batch.
        let _ = crate::journal::jsonl::write_record(&mut line, &record);
        let event: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        serde_json::json!({"batch_fetched": event["event"]["batch_fetched"], "report": self.report})
    }
}

/// Whether `response` contains one of N's unwanted phrases (case-sensitive substrings).
pub fn has_unwanted_phrase(response: &str) -> bool {
    phrases::UNWANTED_PHRASES
        .iter()
        .any(|phrase| response.contains(phrase))
}

/// Collects a batch: N's per-pair checks, counting every skip.
#[derive(Debug)]
pub struct BatchBuilder {
    samples: Samples,
    report: DataReport,
    max_samples: usize,
    phrase_filter: bool,
}

impl BatchBuilder {
    /// An empty batch of at most `max_samples`, with or without N's phrase filter.
    pub fn new(max_samples: usize, phrase_filter: bool) -> Self {
        Self {
            samples: Samples::new(),
            report: DataReport::default(),
            max_samples,
            phrase_filter,
        }
    }

    /// Whether the batch is full.
    pub fn is_full(&self) -> bool {
        self.samples.len() >= self.max_samples
    }

    /// Samples still wanted.
    pub fn remaining(&self) -> usize {
        self.max_samples.saturating_sub(self.samples.len())
    }

    /// Counts a row skipped before its fields were read.
    pub fn skip(&mut self, reason: SkipReason) {
        self.report.rows_seen += 1;
        *self.report.skipped.entry(reason).or_insert(0) += 1;
    }

    /// Offers a (prompt, response) pair: stripped, non-empty, bounded, free of unwanted
    /// phrases. Returns whether it was kept.
    pub fn offer(&mut self, prompt: &str, response: &str, origin: &str) -> bool {
        if self.is_full() {
            return false;
        }
        if prompt.len() > TEXT_BYTES_MAX || response.len() > TEXT_BYTES_MAX {
            self.skip(SkipReason::TooLong);
            return false;
        }
        let (prompt, response) = (python_strip(prompt), python_strip(response));
        if prompt.is_empty() || response.is_empty() {
            self.skip(SkipReason::Empty);
            return false;
        }
        if self.phrase_filter && has_unwanted_phrase(response) {
            self.skip(SkipReason::UnwantedPhrase);
            return false;
        }
        if self.samples.push(prompt, response, origin).is_err() {
            self.skip(SkipReason::TooLong);
            return false;
        }
        self.report.rows_seen += 1;
        self.report.rows_kept += 1;
        true
    }

    /// Offers a JSON row with `prompt_field` and `response_field`.
    pub fn offer_json(
        &mut self,
        row: &serde_json::Value,
        prompt_field: &str,
        response_field: &str,
        origin: &str,
    ) -> bool {
        let Some(object) = row.as_object() else {
            self.skip(SkipReason::Malformed);
            return false;
        };
        match (object.get(prompt_field), object.get(response_field)) {
            (
                Some(serde_json::Value::String(prompt)),
                Some(serde_json::Value::String(response)),
            ) => self.offer(prompt, response, origin),
            (None, _) | (_, None) => {
                self.skip(SkipReason::MissingField);
                false
            }
            _ => {
                self.skip(SkipReason::WrongType);
                false
            }
        }
    }

    /// The finished batch event.
    pub fn finish(
        self,
        step: u64,
        source: String,
        seed: &Seed,
        references: Vec<String>,
    ) -> BatchOutcome {
        BatchOutcome {
            batch: BatchFetched {
                step,
                provenance: Provenance {
                    source,
                    seed: seed.decimal(),
                    references,
                },
                samples: self.samples,
            },
            report: self.report,
        }
    }
}

/// Retries `attempt` with exponential backoff (`base`, 2·`base`, ...), `attempts` times in all.
pub async fn with_retries<T, F, Fut>(
    attempts: usize,
    base: std::time::Duration,
    mut attempt: F,
) -> Result<T, DataError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DataError>>,
{
    let mut delay = base;
    let mut last = DataError::Unavailable("no attempt was made".into());
    for tries in 0..attempts.max(1) {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(DataError::Config(why)) => return Err(DataError::Config(why)),
            Err(error) => last = error,
        }
        if tries + 1 < attempts {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phrase_filter_matches_n() {
        // The doc's quirk: the concatenated entry, and its parts through their own entries.
        assert!(has_unwanted_phrase(
            "x I don't have beliefsI don't have personalgpt y"
        ));
        assert!(has_unwanted_phrase("I don't have beliefs about that."));
        assert!(has_unwanted_phrase("Powered by GPT"));
        assert!(has_unwanted_phrase("a gPt-style model"));
        assert!(has_unwanted_phrase("As an AI language model, I cannot"));
        assert!(has_unwanted_phrase("I'm sorry, but no."));
        // Case-sensitive, as Python's `in`.
        assert!(!has_unwanted_phrase("as an ai language model"));
        assert!(!has_unwanted_phrase("The capital of France is Paris."));
        assert!(has_unwanted_phrase("Я разработчик"));
        assert_eq!(phrases::UNWANTED_PHRASES.len(), 182);
    }

    #[test]
    fn the_builder_applies_n_checks_and_counts() {
        let mut builder = BatchBuilder::new(2, true);
        assert!(builder.offer("  p  ", "\n r \n", "o1"));
        assert!(!builder.offer("p", "   ", "o2"));
        assert!(!builder.offer("p", "Sure! As an AI, I think", "o3"));
        assert!(!builder.offer_json(
            &serde_json::json!({"prompt": 3, "response": "x"}),
            "prompt",
            "response",
            "o4"
        ));
        assert!(!builder.offer_json(
            &serde_json::json!({"prompt": "x"}),
            "prompt",
            "response",
            "o5"
        ));
        assert!(!builder.offer(&"x".repeat(TEXT_BYTES_MAX + 1), "r", "o6"));
        assert!(builder.offer("q", "fine", "o7"));
        assert!(builder.is_full());
        let outcome = builder.finish(9, "test".into(), &Seed::Unsynchronized(5), vec![]);
        assert_eq!(outcome.batch.samples.len(), 2);
        assert_eq!(outcome.batch.samples.get(0).unwrap().prompt, "p");
        assert_eq!(outcome.batch.samples.get(0).unwrap().response, "r");
        assert_eq!(outcome.report.rows_seen, 7);
        assert_eq!(outcome.report.rows_kept, 2);
        assert_eq!(outcome.report.skipped.values().sum::<u64>(), 5);
        assert_eq!(outcome.batch.provenance.seed, "5");
    }
}
