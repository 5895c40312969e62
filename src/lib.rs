//! A reproducible validator for a Bittensor fine-tuning subnet.
//!
//! # Module map
//!
//! - [`machine`]: the pure core. Events, the folded [`machine::State`], and
//!   [`machine::apply`]; scoring (N's `iswin`/`compute_wins`), weights (softmax, moving
//!   average, N's float32 update as torch computes it, winner-takes-all, bittensor's u16
//!   form), CPython's set order, ModelId parsing. No I/O.
//! - [`board`]: what operators and miners see, from the journal alone: the leaderboard
//!   (tables, history, SVG plots, its JSON), the journal's counters, N's step log.
//! - [`bounded`]: reading a file someone else wrote: regular files only, through a limit.
//! - [`hashing`]: N's hashes of strings and bytes and the successor's block-hash seed;
//!   [`dirhash`]: N's directory hash over real files (`validator model hash`).
//! - `data` (feature `data`): evaluation batches from wandb run history, Hugging Face dataset
//!   files or a local file, chosen by a seeded, deterministic sampler.
//! - `hub` (feature `hub`): downloading committed models with hf-hub, verifying, caching.
//! - `chain` (feature `chain`): subxt client for subtensor: metagraph and commitments read
//!   at a block as journal events, weights and commitments written, bittensor hotkey files;
//!   `chain_cli`: `validator chain metagraph|commit|set-weights`.
//! - [`codec`]: the binary form of journal records and checkpoints (schema version, checksum),
//!   and the upgrade of older schemas.
//! - [`journal`]: the sled journal: typed trees, atomic append + flush, checkpoints, locks.
//! - [`jsonl`]: the JSON Lines form of a journal (exports, golden journals).
//! - [`recorder`]: append-then-fold, the one way events enter a journal and the state.
//! - [`replay`]: re-folds a journal and compares every recorded step and weight vector.
//! - [`whatif`]: `validator score`, one scoring step as JSON in and out.
//! - [`model_cli`]: `validator model hash|fetch|cache`.
//! - [`synth`]: generated journals for benchmarks and tests.
//! - `eval` (feature `eval`): our ONNX export of safetensors models, tokenisation with N's
//!   semantics, ONNX Runtime sessions, the norm check; `eval_cli`: `validator eval`.

pub mod board;
pub mod bounded;
#[cfg(feature = "chain")]
pub mod chain;
pub mod codec;
#[cfg(feature = "data")]
pub mod data;
pub mod dirhash;
#[cfg(feature = "eval")]
pub mod eval;
pub mod hashing;
#[cfg(feature = "hub")]
pub mod hub;
pub mod journal;
pub mod jsonl;
pub mod machine;
pub mod recorder;
pub mod replay;
#[cfg(feature = "node")]
pub mod runner;
pub mod seed;
pub mod synth;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod whatif;
