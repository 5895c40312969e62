//! The pure core: events, state, and the fold that turns one into the other.
//!
//! Architecture invariant: nothing in this module does I/O, reads a clock, draws randomness or
//! awaits. Block heights and seeds arrive inside events. Iteration order is explicit (`BTreeMap`,
//! `BTreeSet`, uid-indexed `Vec`), and floating point that decides weights is f64 with `libm`'s
//! `exp`, so a fold gives the same bits on every machine. `tests/tidy.rs` guards this.
//!
//! The lint block below is Lighthouse's for its consensus code: no panics, no indexing, no
//! integer arithmetic that can overflow (`arithmetic_side_effects` checks integers; float
//! arithmetic cannot panic and its rounding is IEEE's), no ignored results, and, through
//! `clippy.toml`, none of the standard library's platform-dependent float functions.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented,
    clippy::float_cmp_const,
    clippy::arithmetic_side_effects,
    clippy::let_underscore_must_use,
    clippy::disallowed_methods
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::float_cmp,
        clippy::cast_precision_loss,
        clippy::field_reassign_with_default,
        clippy::arithmetic_side_effects
    )
)]

pub mod cadence;
pub mod driver;
pub mod event;
pub mod fold;
pub mod model_id;
pub mod numbers;
pub mod params;
pub mod preview;
pub mod pyset;
pub mod rejection;
pub mod scoring;
pub mod state;
pub mod step;
pub mod successor;
pub mod successor_loop;
pub mod torch_f32;
pub mod weights;
pub mod wire;

pub use driver::{FoldDriver, FoldHook};
pub use event::{Event, Position, Record, SCHEMA_VERSION, StepRecord};
pub use fold::{Outcome, apply};
pub use params::{CompetitionId, MechanismParams};
pub use rejection::Rejection;
pub use state::State;
