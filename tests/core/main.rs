//! The pure core and the journal: property tests of scoring and the fold, the table-driven fold
//! script, golden journals, N's reference answers, named regressions, and the tidy checks. One
//! binary, so the crate links once for all of them.

mod cpython_random;
mod cpython_set;
mod docs;
mod f_runs;
mod fold_properties;
mod fold_table;
mod golden_journals;
mod journal_model;
mod n_reference;
mod n_runs;
mod regressions;
mod support;
mod tidy;
mod torch_f32;
