//! `validator run`: the loop against scripted fakes of every edge, the evaluation worker as a
//! real child process, the demo end to end, an offline run on files it has not seen, and the
//! kill -9 harness. One binary, so the crate links once.

mod fakes;
mod kill9;
mod offline;
mod worker;
