//! One evaluation step: who takes part (fixed at step start) and how the step is scored.

use std::cmp::Ordering;

use super::event::{EvalOutcome, StepRecord};
use super::params::{CompetitionId, SetOrder, WeightsFloat, WeightsMode};
use super::pyset::PySet;
use super::scoring::{Contestant, compute_wins};
use super::state::{Absence, Entry, Metagraph, OpenStep, Participant, State};
use super::torch_f32;
use super::weights::{
    moving_average, record_tracker, step_weights_softmax, step_weights_winners, subnet_weights,
};

/// The successor keeps a model by its tracker weight when that weight is at least this.
const TRACKER_PRIORITY_MIN: f64 = 0.001;

/// Fixes the participants of a step, as N's `run_step` does before evaluating anything.
///
/// `uids` are visited in the order given: N's `list(uids_to_eval)`, CPython's set order (see
/// [`visit_order`]). Each uid's model is its hotkey's last verified one. Duplicates by committed hash follow N:
/// a model meets the first earlier participant holding the same hash; the strictly older
/// commit keeps it, and on equal blocks the earlier-listed uid keeps it. Only then are models
/// of other competitions set aside.
pub fn plan_participants(
    state: &State,
    metagraph: &Metagraph,
    competition: &CompetitionId,
    uids: &[u16],
) -> Vec<Participant> {
    let mut participants: Vec<Participant> = Vec::with_capacity(uids.len());
    // The successor has no duplicate rule: a copy is scored as its original is.
    let duplicates = state.params.rules.successor.is_none();
    for &uid in uids {
        let Some(hotkey) = metagraph.hotkey(uid) else {
            // Uids past the metagraph's end have no hotkey and cannot be evaluated.
            continue;
        };
        let model = state.hotkeys.get(hotkey).and_then(|r| r.model.as_ref());
        let mut entry = match model {
            Some(model) => Entry::Model {
                model_hash: model.hash().to_owned(),
                block_commit: model.block_commit,
                model_id: model.model_id.clone(),
            },
            None => Entry::Absent(Absence::NoModel),
        };
        if let Entry::Model {
            model_hash,
            block_commit,
            ..
        } = &entry
            && duplicates
        {
            let holder = participants.iter_mut().find(|other| {
                matches!(&other.entry, Entry::Model { model_hash: h, .. } if h == model_hash)
            });
            if let Some(other) = holder {
                let other_block = match &other.entry {
                    Entry::Model { block_commit, .. } => *block_commit,
                    Entry::Absent(_) => u64::MAX,
                };
                if *block_commit < other_block {
                    other.entry = Entry::Absent(Absence::DuplicateOf(uid));
                } else {
                    entry = Entry::Absent(Absence::DuplicateOf(other.uid));
                }
            }
        }
        participants.push(Participant {
            uid,
            hotkey: hotkey.to_owned(),
            entry,
            outcome: None,
        });
    }
    for participant in &mut participants {
        if let Entry::Model { model_id, .. } = &participant.entry
            && &model_id.competition != competition
        {
            participant.entry =
                Entry::Absent(Absence::OtherCompetition(model_id.competition.clone()));
        }
    }
    participants
}

/// Merges the competition's pending uids whose models are old enough (the successor's eval
/// delay; N's is zero) into its eval set, as N merges `pending_uids_to_eval` at the start of a
/// step (`uids_to_eval[c].update(pending[c]); pending[c].clear()`), drops uids past the
/// metagraph's end, and returns the eval set in the order the step visits it.
pub fn merge_pending(
    state: &mut State,
    metagraph: &Metagraph,
    block: u64,
    competition: &CompetitionId,
) -> Vec<u16> {
    // The successor applies its delay where its update thread downloads, not here.
    let delay = if state.params.rules.successor.is_some() {
        0
    } else {
        state.params.eval_delay_blocks
    };
    let order = state.params.rules.set_order;
    let (ready, waiting): (Vec<u16>, Vec<u16>) = state
        .competitions
        .get(competition)
        .map(|c| {
            c.pending.iter().partition(|uid| {
                let model = metagraph
                    .hotkey(*uid)
                    .and_then(|h| state.hotkeys.get(h))
                    .and_then(|r| r.model.as_ref());
                model.is_none_or(|m| block.saturating_sub(m.block_commit) >= delay)
            })
        })
        .unwrap_or_default();
    let competition_state = state.competitions.entry(competition.clone()).or_default();
    if waiting.is_empty() {
        let pending = std::mem::take(&mut competition_state.pending);
        competition_state.eval_set.update(&pending);
    } else {
        for uid in ready {
            competition_state.pending.discard(uid);
            competition_state.eval_set.add(uid);
        }
    }
    let size = metagraph.size();
    competition_state
        .eval_set
        .retain(|uid| usize::from(uid) < size);
    visit_order(&competition_state.eval_set, order)
}

/// The uids of a set in the order the mechanism visits them.
pub fn visit_order(set: &PySet, order: SetOrder) -> Vec<u16> {
    match order {
        SetOrder::Cpython => set.iter().collect(),
        SetOrder::Ascending => set.sorted(),
    }
}

/// Scores a finished step and updates the weights, trackers and eval set, returning what was
/// computed. The step's parameters are those in force now (a `ParamsChanged` inside a step
/// applies to its scoring).
pub fn complete_step(state: &mut State, open: OpenStep) -> StepRecord {
    let competition = open.competition.clone();
    if open.participants.is_empty() {
        // N returns before scoring when there is nobody to evaluate.
        return unscored_record(state, competition);
    }
    let losses: Vec<Vec<f64>> = open
        .participants
        .iter()
        .map(|p| match &p.outcome {
            Some(EvalOutcome::Losses(losses)) => losses.to_f64(),
            Some(EvalOutcome::Failed(_) | EvalOutcome::TaskLosses(_)) | None => Vec::new(),
        })
        .collect();
    let contestants: Vec<Contestant<'_>> = open
        .participants
        .iter()
        .zip(&losses)
        .map(|(p, losses)| Contestant {
            uid: p.uid,
            block_commit: match &p.entry {
                Entry::Model { block_commit, .. } => Some(*block_commit),
                Entry::Absent(_) => None,
            },
            losses,
        })
        .collect();
    let tallies = compute_wins(&contestants, &state.params.epsilon, open.block_start);
    let uids: Vec<u16> = open.participants.iter().map(|p| p.uid).collect();
    let win_rate: Vec<f64> = tallies.iter().map(|t| t.win_rate).collect();

    let params = state.params.clone();
    let eval_priority: Vec<f64> = match params.weights_mode {
        WeightsMode::Softmax => {
            match params.rules.weights_float {
                WeightsFloat::F64 => {
                    let new = step_weights_softmax(
                        &uids,
                        &win_rate,
                        open.size,
                        params.temperature,
                        open.scale,
                    );
                    moving_average(&mut state.weights, &new, params.alpha);
                }
                WeightsFloat::TorchF32 => {
                    // The weights are float32 values held widened, so narrowing is exact.
                    let mut weights: Vec<f32> = state
                        .weights
                        .iter()
                        .map(|w| torch_f32::narrow(*w))
                        .collect();
                    torch_f32::n_update(
                        &mut weights,
                        &uids,
                        &win_rate,
                        open.size,
                        params.temperature,
                        open.scale,
                        params.alpha,
                    );
                    state.weights = weights.into_iter().map(f64::from).collect();
                }
            }
            win_rate.clone()
        }
        WeightsMode::WinnerTakesAll {
            min_weight_threshold,
        } => winner_takes_all_update(state, &open, &uids, &win_rate, min_weight_threshold),
    };
    let eval_next = keep_eval_set(&uids, eval_priority, params.sample_min);
    let eval_next_sorted = eval_next.sorted();
    state
        .competitions
        .entry(competition.clone())
        .or_default()
        .eval_set = eval_next;

    StepRecord {
        competition,
        uids,
        wins: tallies.iter().map(|t| t.wins).collect(),
        matches: tallies.iter().map(|t| t.matches).collect(),
        win_rate,
        weights: state.weights.clone(),
        eval_next: eval_next_sorted,
        scores: Vec::new(),
    }
}

/// The record of a step with nobody to evaluate: nothing scored, the weights and the eval set
/// as they stand (both N and the successor return before scoring).
pub(super) fn unscored_record(state: &State, competition: CompetitionId) -> StepRecord {
    let eval_next = state
        .competitions
        .get(&competition)
        .map(|c| c.eval_set.sorted())
        .unwrap_or_default();
    StepRecord {
        weights: state.weights.clone(),
        eval_next,
        ..StepRecord::empty(competition)
    }
}

/// N: `set(sorted(win_rate, key=win_rate.get, reverse=True)[:sample_min])`. `win_rate` is a
/// dict filled in participant order and Python's sort is stable with `reverse=True`, so equal
/// keys keep participant order; the set is built from the ranked list, in rank order.
pub(super) fn keep_eval_set(uids: &[u16], priority: Vec<f64>, sample_min: u32) -> PySet {
    let mut ranked: Vec<(u16, f64)> = uids.iter().copied().zip(priority).collect();
    ranked.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
    let keep = usize::try_from(sample_min).unwrap_or(usize::MAX);
    PySet::from_list(ranked.iter().take(keep).map(|(uid, _)| *uid))
}

/// The successor's update: the step's winners into the competition's tracker, every active
/// tracker combined into the subnet's weights. Returns each participant's eval-set priority
/// (`1 + tracker weight` where that weight counts, else its win rate).
fn winner_takes_all_update(
    state: &mut State,
    open: &OpenStep,
    uids: &[u16],
    win_rate: &[f64],
    min_weight_threshold: f64,
) -> Vec<f64> {
    let params = state.params.clone();
    let competition = &open.competition;
    let new = step_weights_winners(uids, win_rate, open.size);
    let tracker = &mut state
        .competitions
        .entry(competition.clone())
        .or_default()
        .tracker;
    record_tracker(tracker, new, params.alpha);
    let active = params.schedule_at(open.block_start);
    for (id, competition_state) in &mut state.competitions {
        if !active.iter().any(|c| &c.id == id) {
            competition_state.tracker = None;
        }
    }
    // Take the active trackers out in schedule order, combine them, and put them back (the
    // combination renormalises them in place, as the successor does).
    let mut taken: Vec<(CompetitionId, Vec<f64>, f64)> = active
        .iter()
        .filter_map(|c| {
            let tracker = state.competitions.get_mut(&c.id)?.tracker.take()?;
            Some((c.id.clone(), tracker, c.reward_percentage))
        })
        .collect();
    let mut trackers: Vec<(&mut Vec<f64>, f64)> = taken
        .iter_mut()
        .map(|(_, tracker, share)| (tracker, *share))
        .collect();
    state.weights = subnet_weights(&mut trackers, open.size, min_weight_threshold);
    for (id, tracker, _) in taken {
        state.competitions.entry(id).or_default().tracker = Some(tracker);
    }
    eval_priority(state, competition, uids, win_rate)
}

/// The successor's keep priority of each participant: `1 + its weight` in the competition's
/// tracker where that weight counts, else its win rate.
pub(super) fn eval_priority(
    state: &State,
    competition: &CompetitionId,
    uids: &[u16],
    win_rate: &[f64],
) -> Vec<f64> {
    let tracker = state
        .competitions
        .get(competition)
        .and_then(|c| c.tracker.as_deref())
        .unwrap_or_default();
    uids.iter()
        .zip(win_rate)
        .map(|(uid, rate)| {
            let weight = tracker.get(usize::from(*uid)).copied().unwrap_or(0.0);
            if weight >= TRACKER_PRIORITY_MIN {
                1.0 + weight
            } else {
                *rate
            }
        })
        .collect()
}
