//! The data edge: each evaluation step's prompt/response batch, from N's Cortex-style wandb run
//! history, from Hugging Face dataset files, or from a local JSON Lines file.
//!
//! A batch is journaled (text and provenance) before any model sees it. Which runs, files and
//! rows are taken is a pure function of a seed and the step ([`Seed`], [`shuffled`]): with the
//! successor's block-hash seed, two validators at the same block take the same batch from the
//! same source data. Bad rows are counted and skipped ([`DataReport`]); a source that cannot be
//! reached is a [`DataError`] and the step is skipped with that reason, never a crash.

pub mod cortex;
#[cfg(feature = "hub")]
pub mod hf;
pub mod local;
pub mod phrases;

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::hashing::{decimal_of_big_endian, seed_from_block_hash};
use crate::machine::event::{BatchFetched, Provenance};
use crate::machine::wire::Samples;
use crate::synth::SplitMix64;
use crate::text::python_strip;

/// N's `max_samples` for a step.
pub const DEFAULT_MAX_SAMPLES: usize = 400;
/// The longest prompt or response kept, in bytes (far past any 2048-token window).
pub const TEXT_BYTES_MAX: usize = 256 * 1024;

/// The seed that decides what a step takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// The successor's synchronised seed: `int(sha256(block_hash_string))`, as 32 bytes.
    BlockHash([u8; 32]),
    /// N's unsynchronised seed, drawn by the validator and journaled.
    Unsynchronized(u64),
}

impl Seed {
    /// The seed of a block hash string (as the chain returns it, `0x...`).
    pub fn from_block_hash(block_hash: &str) -> Self {
        Seed::BlockHash(seed_from_block_hash(block_hash))
    }

    /// A fresh unsynchronised seed from the operating system's randomness.
    pub fn unsynchronized() -> Self {
        let mut bytes = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if read.is_err() {
            // No /dev/urandom: fall back to the clock, which is still journaled.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            bytes = u64::from(nanos).to_le_bytes();
        }
        Seed::Unsynchronized(u64::from_le_bytes(bytes))
    }

    /// The seed in decimal, as journaled (the successor's integer for a block hash).
    pub fn decimal(&self) -> String {
        match self {
            Seed::BlockHash(bytes) => decimal_of_big_endian(bytes),
            Seed::Unsynchronized(seed) => seed.to_string(),
        }
    }

    /// A 64-bit generator seed for one use (`purpose`) in one step.
    fn derive(&self, step: u64, purpose: &str) -> u64 {
        let mut hasher = Sha256::new();
        match self {
            Seed::BlockHash(bytes) => hasher.update(bytes),
            Seed::Unsynchronized(seed) => hasher.update(seed.to_be_bytes()),
        }
        hasher.update(step.to_be_bytes());
        hasher.update(purpose.as_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(first)
    }
}

/// The indices `0..count` in the order `seed` gives them for `step` and `purpose`
/// (Fisher-Yates over SplitMix64): a pure function, identical on every machine.
pub fn shuffled(count: usize, seed: &Seed, step: u64, purpose: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut random = SplitMix64::new(seed.derive(step, purpose));
    for index in (1..count).rev() {
        let bound = u64::try_from(index + 1).unwrap_or(u64::MAX);
        let pick = usize::try_from(random.next_u64() % bound).unwrap_or(0);
        order.swap(index, pick);
    }
    order
}

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
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Unreachable, timed out, or refusing for now (retry, or skip the step).
    #[error("the data source is unavailable: {0}")]
    Unavailable(String),
    /// The source's configuration is unusable.
    #[error("data source configuration: {0}")]
    Config(String),
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
    fn the_block_hash_seed_is_the_successors_integer() {
        let seed = Seed::from_block_hash(
            "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2",
        );
        assert_eq!(
            seed.decimal(),
            "592572197532882810092427479703237300164718763613437077128565525142151814165"
        );
    }

    #[test]
    fn shuffles_are_permutations_fixed_by_seed_and_step() {
        let seed = Seed::from_block_hash("0xabc");
        let a = shuffled(50, &seed, 3, "rows");
        assert_eq!(a, shuffled(50, &seed, 3, "rows"));
        assert_ne!(a, shuffled(50, &seed, 4, "rows"));
        assert_ne!(a, shuffled(50, &Seed::from_block_hash("0xabd"), 3, "rows"));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

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
