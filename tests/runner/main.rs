//! `validator run`: the loop against scripted fakes of every edge, the evaluation worker as a
//! real child process, the weight setter against a simulated chain, the demo end to end, an
//! offline run on files it has not seen, and the kill -9 harness. One binary, so the crate
//! links once.

mod fakes;
mod hostile;
mod kill9;
mod observe;
mod offline;
mod pool;
mod queue;
mod successor;
mod weights;
mod worker;

pub use validator::testing::replay_clean;
