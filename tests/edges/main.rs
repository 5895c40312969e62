//! The edges against real components: the chain on a subtensor runtime (chopsticks), the hub
//! against olah, the data sources against recorded wandb exchanges and dataset files, the
//! successor's data path against the successor's own loaders, its competition tokenizer
//! (cl100k_base as a `tokenizer.json`) against tiktoken, the evaluation engine on the
//! fixture models, and `validator run` on the real runtime with olah. One binary, so the
//! crate links once.

mod cache_links;
mod chain;
#[cfg(feature = "chain")]
mod chain_encoding;
mod data;
mod eval_hostile;
mod eval_models;
#[cfg(feature = "chain")]
#[path = "chain_node/harness.rs"]
mod harness;
mod hub;
mod olah;
mod successor_data;
mod successor_reference;
mod tokenizer_cl100k;
mod tokenizer_llama3;
mod validator_live;
