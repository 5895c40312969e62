//! The fold: `apply(&mut State, &Record) -> Outcome`, one journaled event at a time.
//!
//! `apply` never fails. An event that does not fit the state (a verification for a stale
//! commitment, losses for a uid that is not in the step) is a recorded rejection: the state is
//! left as it was, and a replay rejects it in the same way. Only the journal layer can find
//! the journal itself broken.

use std::collections::BTreeSet;

use super::event::{
    BatchFetched, CommitmentField, CommitmentObserved, EvalOutcome, Event, LossesComputed,
    MetagraphObserved, ModelRejected, ModelVerified, Record, StepAbandoned, StepCompleted,
    StepRecord, StepStarted, WeightsSubmitted,
};
use super::model_id::{CommitmentInvalid, ModelId, parse_raw_commitment};
use super::numbers::nearest_tempo;
use super::state::{
    CommitmentState, CommitmentStatus, Entry, Metagraph, OpenStep, State, TrackedModel,
};
use super::step::{complete_step, plan_participants};
use super::weights::{ChainWeightsError, to_chain_weights};

/// The most uids a subnet can hold (uids are u16).
const UIDS_MAX: usize = 1 << 16;

/// What folding one record did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The state changed.
    Applied,
    /// The event repeated what the state already held.
    Unchanged,
    /// The event was refused; the state is unchanged except for the journal position (and, for
    /// an invalid commitment, the commitment's recorded status).
    Rejected(String),
    /// A step was scored; this is the recomputed result to compare with the recorded one.
    Scored(StepRecord),
    /// A weight submission; these are the u16 weights the state gives, to compare.
    WeightsChecked(Result<(Vec<u16>, Vec<u16>), ChainWeightsError>),
}

/// Folds one record into the state.
pub fn apply(state: &mut State, record: &Record) -> Outcome {
    let block = record.block;
    let outcome = match &record.event {
        Event::MetagraphObserved(event) => metagraph_observed(state, block, event),
        Event::CommitmentObserved(event) => commitment_observed(state, block, event),
        Event::ConsensusSeeded(_) => consensus_seeded(state, block),
        Event::ModelVerified(event) => model_verified(state, block, event),
        Event::ModelRejected(event) => model_rejected(state, event),
        Event::StepStarted(event) => step_started(state, block, event),
        Event::BatchFetched(event) => batch_fetched(state, event),
        Event::LossesComputed(event) => losses_computed(state, event),
        Event::StepCompleted(event) => step_completed(state, event),
        Event::StepAbandoned(event) => step_abandoned(state, event),
        Event::WeightsSubmitted(event) => weights_submitted(state, event),
        Event::ParamsChanged(event) => match event.params.validate() {
            Ok(()) => {
                state.params = event.params.clone();
                Outcome::Applied
            }
            Err(why) => Outcome::Rejected(why.to_string()),
        },
    };
    state.position = Some(record.position());
    outcome
}

/// Folds records in order, discarding outcomes.
pub fn fold<'a>(state: &mut State, records: impl IntoIterator<Item = &'a Record>) {
    for record in records {
        apply(state, record);
    }
}

fn reject(why: impl Into<String>) -> Outcome {
    Outcome::Rejected(why.into())
}

fn metagraph_observed(state: &mut State, block: u64, event: &MetagraphObserved) -> Outcome {
    let size = event.hotkeys.len();
    if size > UIDS_MAX {
        return reject(format!("metagraph of {size} uids exceeds {UIDS_MAX}"));
    }
    let required = [
        ("consensus", event.consensus.len()),
        ("stake", event.stake.len()),
    ];
    let optional = [
        ("incentive", event.incentive.len()),
        ("validator_permit", event.validator_permit.len()),
        ("last_update", event.last_update.len()),
    ];
    for (name, length) in required {
        if length != size {
            return reject(format!(
                "metagraph {name} has {length} entries for {size} uids"
            ));
        }
    }
    for (name, length) in optional {
        if length != size && length != 0 {
            return reject(format!(
                "metagraph {name} has {length} entries for {size} uids"
            ));
        }
    }
    // A uid whose hotkey is new (registration or re-registration) and whose hotkey already has
    // a verified model is queued, as N's update loop would find that model on its next pass.
    let previous = state.metagraph.take();
    for (index, hotkey) in event.hotkeys.iter().enumerate() {
        let unchanged = previous
            .as_ref()
            .and_then(|m| m.observed.hotkeys.get(index))
            .is_some_and(|old| old == hotkey);
        if unchanged {
            continue;
        }
        let Ok(uid) = u16::try_from(index) else {
            continue;
        };
        if let Some(model) = state.hotkeys.get(hotkey).and_then(|r| r.model.as_ref()) {
            let recent = state
                .block_commit_min
                .is_none_or(|min| model.block_commit >= min);
            if recent
                && state
                    .params
                    .competition_at(block, &model.model_id.competition)
                    .is_some()
            {
                let competition = model.model_id.competition.clone();
                state
                    .competitions
                    .entry(competition)
                    .or_default()
                    .pending
                    .insert(uid);
            }
        }
    }
    state.metagraph = Some(Metagraph {
        block,
        observed: event.clone(),
    });
    Outcome::Applied
}

/// Parses a commitment field: the id when the string parses, and why it cannot be evaluated.
fn parse_field(
    field: &CommitmentField,
    state: &State,
) -> (Option<ModelId>, Option<CommitmentInvalid>) {
    let raw = match field {
        CommitmentField::Raw(raw) => raw,
        CommitmentField::Other(kind) => {
            return (None, Some(CommitmentInvalid::NotRaw(kind.clone())));
        }
        CommitmentField::Empty => return (None, Some(CommitmentInvalid::NoFields)),
    };
    match parse_raw_commitment(&raw.0, state.params.model_id_format) {
        Ok(model_id) => {
            let invalid = model_id.check_evaluable().err();
            (Some(model_id), invalid)
        }
        Err(why) => (None, Some(why)),
    }
}

fn commitment_observed(state: &mut State, block: u64, event: &CommitmentObserved) -> Outcome {
    let known = state
        .hotkeys
        .get(&event.hotkey)
        .and_then(|r| r.commitment.as_ref())
        .is_some_and(|c| c.block_commit == event.block_commit && c.field == event.field);
    if known {
        return Outcome::Unchanged;
    }
    let (model_id, invalid) = parse_field(&event.field, state);
    let (status, outcome) = match invalid {
        None => (CommitmentStatus::Unverified, Outcome::Applied),
        Some(why) => {
            let outcome = reject(format!("commitment of {}: {why}", event.hotkey));
            (CommitmentStatus::Invalid(why), outcome)
        }
    };
    state
        .hotkeys
        .entry(event.hotkey.clone())
        .or_default()
        .commitment = Some(CommitmentState {
        block_commit: event.block_commit,
        block_observed: block,
        field: event.field.clone(),
        model_id,
        status,
    });
    outcome
}

fn consensus_seeded(state: &mut State, block: u64) -> Outcome {
    let Some(metagraph) = state.metagraph.as_ref() else {
        return reject("consensus seeding needs a metagraph");
    };
    let observed = &metagraph.observed;
    state.weights = observed
        .consensus
        .iter()
        .map(|c| f64::from(*c) / 65535.0)
        .collect();
    let active = state.params.schedule_at(block).to_vec();
    let keep = usize::try_from(state.params.sample_min).unwrap_or(usize::MAX);
    for competition in &active {
        // N: uids whose commitment names this competition (a missing competition is "m1"),
        // by consensus, highest first; `sorted` is stable, so equal consensus keeps uid order.
        let mut candidates: Vec<(u16, u16)> = observed
            .hotkeys
            .iter()
            .zip(&observed.consensus)
            .enumerate()
            .filter_map(|(index, (hotkey, consensus))| {
                let commitment = state.hotkeys.get(hotkey)?.commitment.as_ref()?;
                let model_id = commitment.model_id.as_ref()?;
                let uid = u16::try_from(index).ok()?;
                (model_id.competition == competition.id).then_some((uid, *consensus))
            })
            .collect();
        candidates.sort_by_key(|(_, consensus)| std::cmp::Reverse(*consensus));
        let entry = state
            .competitions
            .entry(competition.id.clone())
            .or_default();
        entry.eval_set = candidates.iter().take(keep).map(|(uid, _)| *uid).collect();
        entry.pending = BTreeSet::new();
    }
    let tempo = i64::from(observed.tempo);
    let start = i64::try_from(state.params.subnet_start_block).unwrap_or(i64::MAX);
    let now = i64::try_from(block).unwrap_or(i64::MAX);
    state.block_commit_min = now
        .checked_sub(tempo)
        .and_then(|before| nearest_tempo(start, tempo, before))
        .map(|min| u64::try_from(min).unwrap_or(0));
    Outcome::Applied
}

fn model_verified(state: &mut State, block: u64, event: &ModelVerified) -> Outcome {
    let Some(record) = state.hotkeys.get_mut(&event.hotkey) else {
        return reject(format!(
            "verification for {} which never committed",
            event.hotkey
        ));
    };
    let Some(commitment) = record.commitment.as_mut() else {
        return reject(format!(
            "verification for {} which never committed",
            event.hotkey
        ));
    };
    if commitment.block_commit != event.block_commit {
        return reject(format!(
            "verification of {}'s commitment at block {} but the current one is at {}",
            event.hotkey, event.block_commit, commitment.block_commit
        ));
    }
    if commitment.status != CommitmentStatus::Unverified {
        return reject(format!(
            "verification of {}'s commitment at block {} which is {:?}",
            event.hotkey, event.block_commit, commitment.status
        ));
    }
    let Some(model_id) = commitment.model_id.clone() else {
        return reject("verification of an unparsed commitment");
    };
    if !model_id.hash_rule.accepts(event.hash_kind) {
        return reject(format!(
            "{}'s commitment requires the salted hash, verified with {:?}",
            event.hotkey, event.hash_kind
        ));
    }
    commitment.status = CommitmentStatus::Verified;
    let block_commit = commitment.block_commit;
    let competition = model_id.competition.clone();
    record.model = Some(TrackedModel {
        model_id,
        block_commit,
        hash_kind: event.hash_kind,
    });
    let recent = state.block_commit_min.is_none_or(|min| block_commit >= min);
    let active = state.params.competition_at(block, &competition).is_some();
    let uid = state
        .metagraph
        .as_ref()
        .and_then(|m| m.uid_of(&event.hotkey));
    if let (true, true, Some(uid)) = (recent, active, uid) {
        state
            .competitions
            .entry(competition)
            .or_default()
            .pending
            .insert(uid);
    }
    Outcome::Applied
}

fn model_rejected(state: &mut State, event: &ModelRejected) -> Outcome {
    let commitment = state
        .hotkeys
        .get_mut(&event.hotkey)
        .and_then(|r| r.commitment.as_mut())
        .filter(|c| c.block_commit == event.block_commit);
    match commitment {
        Some(commitment) if commitment.status == CommitmentStatus::Unverified => {
            commitment.status = CommitmentStatus::Rejected {
                code: event.code,
                detail: event.detail.clone(),
            };
            Outcome::Applied
        }
        Some(commitment) => reject(format!(
            "rejection of {}'s commitment at block {} which is {:?}",
            event.hotkey, event.block_commit, commitment.status
        )),
        None => reject(format!(
            "rejection of {}'s commitment at block {}, which is not its current one",
            event.hotkey, event.block_commit
        )),
    }
}

fn step_started(state: &mut State, block: u64, event: &StepStarted) -> Outcome {
    if let Some(open) = &state.step_open {
        return reject(format!(
            "step {} started while step {} is open",
            event.step, open.step
        ));
    }
    if event.step != state.step_next {
        return reject(format!(
            "step {} started, expected step {}",
            event.step, state.step_next
        ));
    }
    let Some(metagraph) = state.metagraph.clone() else {
        return reject("a step cannot start before a metagraph is observed");
    };
    let active = state.params.schedule_at(block);
    let Some(competition) = state.params.competition_for_step(block, event.step) else {
        return reject(format!("no competition is scheduled at block {block}"));
    };
    if competition.id != event.competition {
        return reject(format!(
            "step {} is for competition {}, not {}",
            event.step, competition.id, event.competition
        ));
    }
    let count = u32::try_from(active.len()).unwrap_or(u32::MAX);
    let scale = f64::from(count) * competition.reward_percentage;
    let id = competition.id.clone();

    // Merge the pending uids whose models are old enough (the successor's eval delay; N's is
    // zero), as N merges `pending_uids_to_eval` at the start of a step.
    let delay = state.params.eval_delay_blocks;
    let ready: Vec<u16> = state
        .competitions
        .get(&id)
        .map(|c| {
            c.pending
                .iter()
                .copied()
                .filter(|uid| {
                    let model = metagraph
                        .hotkey(*uid)
                        .and_then(|h| state.hotkeys.get(h))
                        .and_then(|r| r.model.as_ref());
                    model.is_none_or(|m| block.saturating_sub(m.block_commit) >= delay)
                })
                .collect()
        })
        .unwrap_or_default();
    let competition_state = state.competitions.entry(id.clone()).or_default();
    for uid in ready {
        competition_state.pending.remove(&uid);
        competition_state.eval_set.insert(uid);
    }
    let size = metagraph.size();
    competition_state
        .eval_set
        .retain(|uid| usize::from(*uid) < size);
    let eval_set = competition_state.eval_set.clone();
    let participants = plan_participants(state, &metagraph, &id, &eval_set);
    state.step_open = Some(OpenStep {
        step: event.step,
        block_start: block,
        competition: id,
        scale,
        size,
        participants,
        batch_size: None,
    });
    Outcome::Applied
}

fn open_step_for(state: &mut State, step: u64) -> Result<&mut OpenStep, String> {
    match state.step_open.as_mut() {
        Some(open) if open.step == step => Ok(open),
        Some(open) => Err(format!(
            "event for step {step} while step {} is open",
            open.step
        )),
        None => Err(format!("event for step {step} but no step is open")),
    }
}

fn batch_fetched(state: &mut State, event: &BatchFetched) -> Outcome {
    let open = match open_step_for(state, event.step) {
        Ok(open) => open,
        Err(why) => return Outcome::Rejected(why),
    };
    if open.batch_size.is_some() {
        return reject(format!("a second batch for step {}", event.step));
    }
    open.batch_size = Some(event.samples.len());
    Outcome::Applied
}

fn losses_computed(state: &mut State, event: &LossesComputed) -> Outcome {
    let open = match open_step_for(state, event.step) {
        Ok(open) => open,
        Err(why) => return Outcome::Rejected(why),
    };
    let Some(batch_size) = open.batch_size else {
        return reject(format!("losses for step {} before its batch", event.step));
    };
    let Some(participant) = open.participants.iter_mut().find(|p| p.uid == event.uid) else {
        return reject(format!("uid {} is not in step {}", event.uid, event.step));
    };
    if participant.hotkey != event.hotkey {
        return reject(format!(
            "uid {} is {} in step {}, not {}",
            event.uid, participant.hotkey, event.step, event.hotkey
        ));
    }
    match &participant.entry {
        Entry::Model { model_hash, .. } if *model_hash == event.model_hash => {}
        Entry::Model { model_hash, .. } => {
            return reject(format!(
                "uid {} evaluates model {model_hash} in step {}, not {}",
                event.uid, event.step, event.model_hash
            ));
        }
        Entry::Absent(why) => {
            return reject(format!(
                "uid {} has no model in step {}: {why:?}",
                event.uid, event.step
            ));
        }
    }
    if participant.outcome.is_some() {
        return reject(format!(
            "second losses for uid {} in step {}",
            event.uid, event.step
        ));
    }
    if let EvalOutcome::Losses(losses) = &event.outcome
        && losses.0.len() != batch_size
    {
        return reject(format!(
            "{} losses for uid {} on a batch of {batch_size}",
            losses.0.len(),
            event.uid
        ));
    }
    participant.outcome = Some(event.outcome.clone());
    Outcome::Applied
}

fn step_completed(state: &mut State, event: &StepCompleted) -> Outcome {
    if let Err(why) = open_step_for(state, event.step) {
        return Outcome::Rejected(why);
    }
    let Some(open) = state.step_open.take() else {
        return reject("no step is open");
    };
    let record = complete_step(state, open);
    state.step_next = state.step_next.saturating_add(1);
    Outcome::Scored(record)
}

fn step_abandoned(state: &mut State, event: &StepAbandoned) -> Outcome {
    match &state.step_open {
        Some(open) if open.step == event.step => state.step_open = None,
        None if event.step == state.step_next => {}
        _ => {
            return reject(format!(
                "abandoning step {} which is not current",
                event.step
            ));
        }
    }
    state.step_next = state.step_next.saturating_add(1);
    Outcome::Applied
}

fn weights_submitted(state: &mut State, event: &WeightsSubmitted) -> Outcome {
    if let super::event::SubmitOutcome::Included { block } = event.outcome {
        state.block_weights_included = Some(block);
    }
    Outcome::WeightsChecked(to_chain_weights(&state.weights))
}
