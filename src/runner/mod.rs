//! The validator's loop: the one place the edges meet the machine, reaching it only through
//! the recorder.
//!
//! - [`edges`]: the traits the loop is generic over (chain, model store, evaluator), their
//!   real implementations, and the shape every answer takes.

pub mod edges;
