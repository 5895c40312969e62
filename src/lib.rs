//! A reproducible validator for a Bittensor fine-tuning subnet.
//!
//! # Module map
//!
//! By layer, lowest first (`docs/architecture.md` states the rule; a tidy test keeps it): a
//! module imports only from its own layer or those below it, and no import goes round in a
//! circle.
//!
//! The pure core:
//! - [`machine`]: events, the folded [`machine::State`], [`machine::apply`] and the one
//!   fold driver ([`machine::FoldDriver`]); scoring (N's `iswin`/`compute_wins`, the
//!   successor's score-per-uid wins, retries and top miners), weights
//!   (softmax, moving average, N's float32 update as torch computes it, winner-takes-all,
//!   bittensor's u16 form), the weight cadence, CPython's set order, ModelId parsing. No I/O.
//!
//! Foundations:
//! - [`bounded`]: reading a file someone else wrote: regular files only, through a limit.
//! - [`hashing`]: N's hashes of strings and bytes and the successor's block-hash seed.
//! - [`dirhash`]: N's directory hash over real files (`validator model hash`).
//! - [`seed`]: the consensus-critical batch-selection RNG, pinned by test vectors.
//! - [`pyrandom`]: CPython's `random` (MT19937, `randint`, `choice`), bit for bit, for the
//!   successor's page draws.
//! - [`text`]: Python's `strip`, text made safe for a terminal and for HTML.
//!
//! The journal and what reads it:
//! - [`journal`]: the sled journal, its head, the record codec and schema upgrades, the JSON
//!   Lines form, and the recorder (append, then fold).
//! - [`replay`]: re-folds a journal and compares every recorded step and weight vector.
//! - [`board`]: what operators and miners see, from the journal alone: the leaderboard
//!   (tables, history, SVG plots, its JSON), the journal's counters, N's step log.
//! - [`score`]: `validator score`, one scoring step as JSON in and out.
//! - [`synth`]: generated journals for benchmarks and tests.
//!
//! The edges, each behind its feature:
//! - `chain` (feature `chain`): subxt client for subtensor: metagraph and commitments read
//!   at a block as journal events, weights and commitments written, bittensor hotkey files.
//! - `hub` (feature `hub`): downloading committed models with hf-hub, verifying, caching;
//!   the `local:DIR` store.
//! - `data` (feature `data`): evaluation batches from wandb run history, Hugging Face dataset
//!   files or a local file, chosen by a seeded, deterministic sampler.
//! - `eval` (feature `eval`): our ONNX export of safetensors models, tokenisation with N's
//!   semantics, ONNX Runtime sessions, the norm check, and the evaluation worker child.
//!
//! The loop, where the edges meet the core:
//! - `runner` (feature `node`): the validator's loop: the one journal writer, steps, fetches,
//!   the weight setter, evaluation pools and queues, the monitor and its HTTP endpoints.
//! - `testing` (feature `testing`): in-memory fakes of every edge, for the crate's tests.

pub mod board;
pub mod bounded;
#[cfg(feature = "chain")]
pub mod chain;
#[cfg(feature = "data")]
pub mod data;
pub mod dirhash;
#[cfg(feature = "eval")]
pub mod eval;
pub mod hashing;
#[cfg(feature = "hub")]
pub mod hub;
pub mod journal;
pub mod machine;
pub mod pyrandom;
pub mod replay;
#[cfg(feature = "node")]
pub mod runner;
pub mod score;
pub mod seed;
pub mod synth;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
