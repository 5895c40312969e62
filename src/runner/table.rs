//! What an operator reads after each step: N's step table (uid, average loss, perplexity,
//! win rate, wins, weight, commit block) and the weights above 0.001, computed from the step
//! as journaled.

use std::fmt::Write;

use crate::machine::StepRecord;
use crate::machine::event::EvalOutcome;
use crate::machine::state::{Entry, OpenStep};

/// N's table for a completed step: `open` as it stood before completion, `record` what
/// completing it computed.
pub fn step_table(open: &OpenStep, record: &StepRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "step {} · competition {} · block {} · {} uids",
        open.step,
        open.competition,
        open.block_start,
        open.participants.len()
    );
    let _ = writeln!(
        out,
        "{:>5}  {:>12}  {:>12}  {:>8}  {:>9}  {:>8}  {:>10}  note",
        "uid", "average_loss", "perplexity", "win_rate", "win_total", "weight", "block"
    );
    for (index, participant) in open.participants.iter().enumerate() {
        let loss = participant
            .outcome
            .as_ref()
            .map_or(f64::INFINITY, crate::board::loss_mean);
        // Reporting only: perplexity is not part of any decision.
        let perplexity = libm::exp(loss);
        let weight = record
            .weights
            .get(usize::from(participant.uid))
            .copied()
            .unwrap_or(0.0);
        let (block, note) = match (&participant.entry, &participant.outcome) {
            (Entry::Model { block_commit, .. }, Some(EvalOutcome::Failed(why))) => {
                let why = crate::text::printable(why).replace('\n', " ");
                (block_commit.to_string(), format!("failed: {why}"))
            }
            (Entry::Model { block_commit, .. }, _) => (block_commit.to_string(), String::new()),
            (Entry::Absent(absence), _) => ("inf".to_owned(), format!("{absence:?}")),
        };
        let _ = writeln!(
            out,
            "{:>5}  {:>12.4}  {:>12.4}  {:>8.4}  {:>9}  {:>8.4}  {:>10}  {note}",
            participant.uid,
            loss,
            perplexity,
            record.win_rate.get(index).copied().unwrap_or(0.0),
            record.wins.get(index).copied().unwrap_or(0),
            weight,
            block,
        );
    }
    let _ = writeln!(out, "weights > 0.001: {}", weights_line(&record.weights));
    out
}

/// The weights above 0.001, largest first (N's second table), on one line.
pub fn weights_line(weights: &[f64]) -> String {
    let mut ranked: Vec<(usize, f64)> = weights
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, w)| *w > 0.001)
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if ranked.is_empty() {
        return "none".into();
    }
    ranked
        .iter()
        .map(|(uid, weight)| format!("{uid}: {weight:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}
