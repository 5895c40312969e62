//! The fold: `apply(&mut State, &Record) -> Outcome`, one journaled event at a time.
//!
//! `apply` never fails. An event that does not fit the state (a verification for a stale
//! commitment, losses for a uid that is not in the step) is a recorded rejection: the state is
//! left as it was, and a replay rejects it in the same way. Only the journal layer can find
//! the journal itself broken.

use super::event::{
    BatchFetched, CommitmentField, CommitmentObserved, EvalOutcome, Event, LossesComputed,
    MetagraphObserved, ModelRejected, ModelVerified, Record, StepAbandoned, StepCompleted,
    StepFailed, StepRecord, StepStarted, SubmitMethod, SubmitOutcome, WeightsCommitted,
    WeightsPrepared, WeightsSubmitted,
};
use super::model_id::{CommitmentInvalid, ModelId, parse_raw_commitment};
use super::numbers::nearest_tempo;
use super::params::{WeightsCadence, WeightsFloat};
use super::pyset::PySet;
use super::rejection::Rejection;
use super::state::{
    CommitmentState, CommitmentStatus, Entry, Metagraph, OpenStep, State, TrackedModel, WeightsDue,
    WeightsIntent,
};
use super::step::{complete_step, merge_pending, plan_participants};
use super::successor_loop::{self, Download};
use super::torch_f32;
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
    Rejected(Rejection),
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
        Event::ModelRejected(event) => model_rejected(state, block, event),
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
            Err(why) => Outcome::Rejected(Rejection::InvalidParams(why)),
        },
        Event::StepFailed(event) => step_failed(state, block, event),
        Event::WeightsPrepared(event) => weights_prepared(state, block, event),
        Event::WeightsCommitted(event) => weights_committed(state, event),
        // Provenance only: it must name the open step, and changes nothing.
        Event::EvaluationReported(event) => match open_step_for(state, event.step) {
            Ok(_) => Outcome::Unchanged,
            Err(why) => reject(why),
        },
        Event::ValidatorWeightsObserved(event) => {
            match successor_loop::validator_weights_observed(state, event) {
                Ok(()) => Outcome::Applied,
                Err(why) => reject(why),
            }
        }
        Event::TasksFetched(event) => {
            let decided = open_step_for(state, event.step)
                .map(|open| open.competition.clone())
                .and_then(|competition| successor_loop::tasks_fetched(state, &competition, event));
            match decided {
                Ok(()) => Outcome::Applied,
                Err(why) => reject(why),
            }
        }
    };
    state.position = Some(record.position());
    outcome
}

fn reject(why: Rejection) -> Outcome {
    Outcome::Rejected(why)
}

fn metagraph_observed(state: &mut State, block: u64, event: &MetagraphObserved) -> Outcome {
    let size = event.hotkeys.len();
    if size > UIDS_MAX {
        return reject(Rejection::MetagraphTooLarge {
            size,
            max: UIDS_MAX,
        });
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
    for (field, length) in required {
        if length != size {
            return reject(Rejection::MetagraphLength {
                field,
                length,
                size,
            });
        }
    }
    for (field, length) in optional {
        if length != size && length != 0 {
            return reject(Rejection::MetagraphLength {
                field,
                length,
                size,
            });
        }
    }
    // Under `requeue_registered`, a uid whose hotkey is new (registration or re-registration)
    // and already has a verified model is queued. N does not: its model tracker still holds that
    // model, so `sync_model` finds nothing new until the hotkey commits again.
    let previous = state.metagraph.take();
    if previous.is_none() && state.block_epoch.is_none() {
        // N's `last_epoch` starts at the metagraph it starts with.
        state.block_epoch = Some(block);
    }
    if state.params.rules.weights_sized_at_start && previous.is_none() && state.weights.is_empty() {
        // N starts from `torch.zeros_like(metagraph.S)`.
        state.weights = vec![0.0; size];
    }
    let requeue = state.params.rules.requeue_registered;
    for (index, hotkey) in event.hotkeys.iter().enumerate().filter(|_| requeue) {
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
        queue_tracked(state, block, uid, hotkey);
    }
    successor_loop::hotkeys_changed(state, &event.hotkeys);
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
    let (model_id, mut invalid) = parse_field(&event.field, state);
    if invalid.is_none()
        && let Some(model_id) = &model_id
    {
        invalid = successor_loop::commitment_check(&state.params, model_id, event.block_commit);
    }
    let (status, outcome) = match invalid {
        None => (CommitmentStatus::Unverified, Outcome::Applied),
        Some(why) => {
            let outcome = reject(Rejection::CommitmentInvalid {
                hotkey: event.hotkey.clone(),
                why: why.clone(),
            });
            (CommitmentStatus::Invalid(why), outcome)
        }
    };
    let track_superseded = state.params.rules.track_superseded;
    let record = state.hotkeys.entry(event.hotkey.clone()).or_default();
    let replaced = record.commitment.replace(CommitmentState {
        block_commit: event.block_commit,
        block_observed: block,
        field: event.field.clone(),
        model_id,
        status,
    });
    // A commitment replaced before it was verified may still be downloading; N tracks it if
    // that download verifies.
    record.superseded =
        replaced.filter(|old| track_superseded && old.status == CommitmentStatus::Unverified);
    outcome
}

/// N's tracker takes the model its download verified, even when the hotkey has committed
/// again meanwhile; the newer commitment stays unverified until its own download ends.
fn superseded_verified(state: &mut State, block: u64, event: &ModelVerified) -> Option<Outcome> {
    let record = state.hotkeys.get_mut(&event.hotkey)?;
    let superseded = record
        .superseded
        .take_if(|old| old.block_commit == event.block_commit)?;
    let model_id = superseded.model_id.clone()?;
    if !model_id.hash_rule.accepts(event.hash_kind) {
        record.superseded = Some(superseded);
        return Some(reject(Rejection::SaltedHashRequired {
            hotkey: event.hotkey.clone(),
            hash_kind: event.hash_kind,
        }));
    }
    let block_commit = superseded.block_commit;
    // The successor's tracker clears the history of a model it replaces.
    if successor_loop::rules(&state.params).is_some() {
        successor_loop::track_download(state, &event.hotkey, model_id.clone(), block_commit);
    }
    track_verified(state, block, event, model_id, block_commit);
    Some(Outcome::Applied)
}

/// Makes `model_id` the verified hotkey's tracked model and queues its uid.
fn track_verified(
    state: &mut State,
    block: u64,
    event: &ModelVerified,
    model_id: ModelId,
    block_commit: u64,
) {
    let record = state.hotkeys.entry(event.hotkey.clone()).or_default();
    record.model = Some(TrackedModel {
        model_id,
        block_commit,
        hash_kind: event.hash_kind,
    });
    let uid = state
        .metagraph
        .as_ref()
        .and_then(|m| m.uid_of(&event.hotkey));
    if let Some(uid) = uid {
        queue_tracked(state, block, uid, &event.hotkey);
    }
}

/// Queues `uid` for its tracked model's competition's next step, when the hotkey has a
/// tracked model that is recent enough (not older than the minimum commit block) and whose
/// competition is active at `block`.
fn queue_tracked(state: &mut State, block: u64, uid: u16, hotkey: &str) {
    let Some(model) = state.hotkeys.get(hotkey).and_then(|r| r.model.as_ref()) else {
        return;
    };
    let recent = state
        .block_commit_min
        .is_none_or(|min| model.block_commit >= min);
    let competition = &model.model_id.competition;
    if recent && state.params.competition_at(block, competition).is_some() {
        let competition = competition.clone();
        state
            .competitions
            .entry(competition)
            .or_default()
            .pending
            .add(uid);
    }
}

fn consensus_seeded(state: &mut State, block: u64) -> Outcome {
    // F loads its saved state or starts empty; it never reads consensus.
    if successor_loop::rules(&state.params).is_some() {
        return reject(Rejection::SeedingUnderSuccessor);
    }
    let Some(metagraph) = state.metagraph.as_ref() else {
        return reject(Rejection::SeedingWithoutMetagraph);
    };
    let observed = &metagraph.observed;
    // bittensor's metagraph holds consensus as `float(c) / 65535` in a float32 tensor, and N
    // copies it into its weights.
    let float = state.params.rules.weights_float;
    state.weights = observed
        .consensus
        .iter()
        .map(|c| {
            let share = f64::from(*c) / 65535.0;
            match float {
                WeightsFloat::TorchF32 => f64::from(torch_f32::narrow(share)),
                WeightsFloat::F64 => share,
            }
        })
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
        // N: `set(consensus)` from the ranked list, and an empty pending set.
        entry.eval_set = PySet::from_list(candidates.iter().take(keep).map(|(uid, _)| *uid));
        entry.pending = PySet::new();
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
    if let Some(outcome) = successor_download(
        state,
        block,
        &event.hotkey,
        event.block_commit,
        &Download::Verified,
    ) {
        return outcome;
    }
    let Some(commitment) = state
        .hotkeys
        .get_mut(&event.hotkey)
        .and_then(|record| record.commitment.as_mut())
    else {
        return reject(Rejection::VerificationOfUnknownHotkey {
            hotkey: event.hotkey.clone(),
        });
    };
    if commitment.block_commit != event.block_commit {
        let block_current = commitment.block_commit;
        if let Some(outcome) = superseded_verified(state, block, event) {
            return outcome;
        }
        return reject(Rejection::VerificationStale {
            hotkey: event.hotkey.clone(),
            block_commit: event.block_commit,
            block_current,
        });
    }
    // Only a commitment that parsed is ever unverified, so `model_id` is there whenever the
    // status allows a verification.
    let (CommitmentStatus::Unverified, Some(model_id)) =
        (&commitment.status, commitment.model_id.clone())
    else {
        return reject(Rejection::VerificationNotPending {
            hotkey: event.hotkey.clone(),
            block_commit: event.block_commit,
            status: commitment.status.clone(),
        });
    };
    if !model_id.hash_rule.accepts(event.hash_kind) {
        return reject(Rejection::SaltedHashRequired {
            hotkey: event.hotkey.clone(),
            hash_kind: event.hash_kind,
        });
    }
    commitment.status = CommitmentStatus::Verified;
    let block_commit = commitment.block_commit;
    track_verified(state, block, event, model_id, block_commit);
    Outcome::Applied
}

/// The successor's rules for a download of the hotkey's current commitment (`None`: N's
/// handling applies).
fn successor_download(
    state: &mut State,
    block: u64,
    hotkey: &str,
    block_commit: u64,
    download: &Download<'_>,
) -> Option<Outcome> {
    successor_loop::rules(&state.params)?;
    let commitment = state.hotkeys.get(hotkey)?.commitment.as_ref()?;
    if commitment.block_commit != block_commit {
        return None;
    }
    let pending = match &commitment.status {
        CommitmentStatus::Unverified => true,
        CommitmentStatus::Verified | CommitmentStatus::Rejected { .. } => false,
        CommitmentStatus::Invalid(_) => return None,
    };
    successor_loop::download(state, block, hotkey, block_commit, pending, download).map(|decided| {
        match decided {
            Ok(()) => Outcome::Applied,
            Err(why) => reject(why),
        }
    })
}

fn model_rejected(state: &mut State, block: u64, event: &ModelRejected) -> Outcome {
    if let Some(outcome) = successor_download(
        state,
        block,
        &event.hotkey,
        event.block_commit,
        &Download::Rejected(&event.code),
    ) {
        return outcome;
    }
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
        Some(commitment) => reject(Rejection::RejectionNotPending {
            hotkey: event.hotkey.clone(),
            block_commit: event.block_commit,
            status: commitment.status.clone(),
        }),
        None => {
            // A superseded commitment that failed is simply forgotten: the newer one decides.
            let superseded = state.hotkeys.get_mut(&event.hotkey).and_then(|r| {
                r.superseded
                    .take_if(|old| old.block_commit == event.block_commit)
            });
            match superseded {
                Some(_) => Outcome::Applied,
                None => reject(Rejection::RejectionStale {
                    hotkey: event.hotkey.clone(),
                    block_commit: event.block_commit,
                }),
            }
        }
    }
}

fn step_started(state: &mut State, block: u64, event: &StepStarted) -> Outcome {
    if let Some(open) = &state.step_open {
        return reject(Rejection::StepAlreadyOpen {
            step: event.step,
            step_open: open.step,
        });
    }
    if event.step != state.step_next {
        return reject(Rejection::StepOutOfOrder {
            step: event.step,
            step_expected: state.step_next,
        });
    }
    let Some(metagraph) = state.metagraph.clone() else {
        return reject(Rejection::StepWithoutMetagraph);
    };
    let count = state.params.schedule_at(block).len();
    let Some(competition) = state.params.competition_for_step(block, event.step) else {
        return reject(Rejection::NoCompetitionScheduled { block });
    };
    if competition.id != event.competition {
        return reject(Rejection::WrongCompetition {
            step: event.step,
            expected: competition.id.clone(),
            found: event.competition.clone(),
        });
    }
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let scale = f64::from(count) * competition.reward_percentage;
    let id = competition.id.clone();
    if let Err(why) = successor_loop::step_gate(state, block, &id) {
        return reject(why);
    }
    let eval_set = merge_pending(state, &metagraph, block, &id);
    let participants = plan_participants(state, &metagraph, &id, &eval_set);
    state.step_open = Some(OpenStep {
        step: event.step,
        block_start: block,
        competition: id,
        scale,
        size: metagraph.size(),
        participants,
        batch_size: None,
    });
    Outcome::Applied
}

fn open_step_for(state: &mut State, step: u64) -> Result<&mut OpenStep, Rejection> {
    match state.step_open.as_mut() {
        Some(open) if open.step == step => Ok(open),
        Some(open) => Err(Rejection::OtherStepOpen {
            step,
            step_open: open.step,
        }),
        None => Err(Rejection::NoStepOpen { step }),
    }
}

fn batch_fetched(state: &mut State, event: &BatchFetched) -> Outcome {
    let open = match open_step_for(state, event.step) {
        Ok(open) => open,
        Err(why) => return reject(why),
    };
    if open.batch_size.is_some() {
        return reject(Rejection::SecondBatch { step: event.step });
    }
    open.batch_size = Some(event.samples.len());
    Outcome::Applied
}

fn losses_computed(state: &mut State, event: &LossesComputed) -> Outcome {
    let successor = state.params.rules.successor.is_some();
    let open = match open_step_for(state, event.step) {
        Ok(open) => open,
        Err(why) => return reject(why),
    };
    let batch_size = open.batch_size;
    if !successor && batch_size.is_none() {
        return reject(Rejection::LossesBeforeBatch { step: event.step });
    }
    let (uid, step) = (event.uid, event.step);
    let Some(participant) = open.participants.iter_mut().find(|p| p.uid == uid) else {
        return reject(Rejection::UidNotInStep { uid, step });
    };
    if participant.hotkey != event.hotkey {
        return reject(Rejection::HotkeyMismatch {
            uid,
            step,
            hotkey_expected: participant.hotkey.clone(),
            hotkey_found: event.hotkey.clone(),
        });
    }
    match &participant.entry {
        Entry::Model { model_hash, .. } if *model_hash == event.model_hash => {}
        Entry::Model { model_hash, .. } => {
            return reject(Rejection::ModelHashMismatch {
                uid,
                step,
                hash_expected: model_hash.clone(),
                hash_found: event.model_hash.clone(),
            });
        }
        Entry::Absent(absence) => {
            return reject(Rejection::UidHasNoModel {
                uid,
                step,
                absence: absence.clone(),
            });
        }
    }
    if participant.outcome.is_some() {
        return reject(Rejection::SecondLosses { uid, step });
    }
    match (&event.outcome, batch_size) {
        (EvalOutcome::Losses(losses), Some(batch_size)) if losses.0.len() != batch_size => {
            return reject(Rejection::LossCount {
                uid,
                count: losses.0.len(),
                batch_size,
            });
        }
        (EvalOutcome::TaskLosses(_), _) if !successor => {
            return reject(Rejection::LossesForm { uid, step });
        }
        _ => {}
    }
    if successor && let Err(why) = successor_loop::check_losses(state, step, uid, &event.outcome) {
        return reject(why);
    }
    if let Some(participant) = state
        .step_open
        .as_mut()
        .and_then(|open| open.participants.iter_mut().find(|p| p.uid == uid))
    {
        participant.outcome = Some(event.outcome.clone());
    }
    Outcome::Applied
}

fn step_completed(state: &mut State, event: &StepCompleted) -> Outcome {
    if let Err(why) = open_step_for(state, event.step) {
        return reject(why);
    }
    let Some(open) = state.step_open.take() else {
        return reject(Rejection::NoStepOpen { step: event.step });
    };
    let block_start = open.block_start;
    let record = if state.params.rules.successor.is_some() {
        successor_loop::complete_step(state, open)
    } else {
        complete_step(state, open)
    };
    state.step_next = state.step_next.saturating_add(1);
    end_of_step(state, block_start);
    Outcome::Scored(record)
}

/// N's loop checks the epoch after every step it ran, scored, empty or failed: weights are
/// due once a step started `blocks_per_epoch` blocks after the one that made them due last.
fn end_of_step(state: &mut State, block_start: u64) {
    let WeightsCadence::AfterStep { blocks_per_epoch } = state.params.rules.weights_cadence else {
        return;
    };
    let block_epoch = *state.block_epoch.get_or_insert(block_start);
    if block_start.saturating_sub(block_epoch) >= blocks_per_epoch {
        state.weights_due = Some(WeightsDue {
            block: block_start,
            weights: state.weights.clone(),
        });
        state.block_epoch = Some(block_start);
    }
}

fn step_abandoned(state: &mut State, event: &StepAbandoned) -> Outcome {
    match &state.step_open {
        Some(open) if open.step == event.step => state.step_open = None,
        None if event.step == state.step_next => {}
        _ => return reject(Rejection::AbandonNotCurrent { step: event.step }),
    }
    successor_loop::step_closed(state);
    state.step_next = state.step_next.saturating_add(1);
    Outcome::Applied
}

/// A failed step leaves `step_next` where it is. N merges the pending uids into the eval set
/// before it pulls data, so a step that failed before it started (no data) still merges them;
/// a step that failed once open already did.
fn step_failed(state: &mut State, block: u64, event: &StepFailed) -> Outcome {
    match &state.step_open {
        Some(open) if open.step == event.step => {
            let block_start = open.block_start;
            state.step_open = None;
            successor_loop::step_closed(state);
            end_of_step(state, block_start);
            Outcome::Applied
        }
        None if event.step == state.step_next => {
            let scheduled = state
                .params
                .competition_for_step(block, event.step)
                .map(|c| c.id.clone());
            if let (Some(id), Some(metagraph)) = (scheduled, state.metagraph.clone()) {
                merge_pending(state, &metagraph, block, &id);
            }
            end_of_step(state, block);
            Outcome::Applied
        }
        _ => reject(Rejection::FailureNotCurrent { step: event.step }),
    }
}

/// The intent is checked against the state's weights as a submission is (replay compares the
/// two), then held until the chain's answer.
fn weights_prepared(state: &mut State, block: u64, event: &WeightsPrepared) -> Outcome {
    if let Some(open) = &state.weights_intent {
        return reject(Rejection::WeightsIntentOpen {
            block_prepared: open.block_prepared,
        });
    }
    // The reading the intent was judged due on is the record's, not the state's.
    state.weights_intent = Some(WeightsIntent {
        block_prepared: block,
        prepared: WeightsPrepared {
            due: None,
            ..event.clone()
        },
        committed: None,
    });
    state.weights_intent_mecid = event.mecid;
    let checked = to_chain_weights(state.weights_to_set());
    state.weights_due = None;
    Outcome::WeightsChecked(checked)
}

fn weights_committed(state: &mut State, event: &WeightsCommitted) -> Outcome {
    match &mut state.weights_intent {
        Some(intent)
            if intent.committed.is_none()
                && matches!(
                    intent.prepared.method,
                    SubmitMethod::CommitRevealHash { .. }
                ) =>
        {
            intent.committed = Some(event.clone());
            Outcome::Applied
        }
        _ => reject(Rejection::CommitWithoutIntent),
    }
}

/// The chain's answer. After a `WeightsPrepared` it answers that intent: what was sent is
/// what was prepared, whatever steps completed while it was on its way. Without one (journals
/// of schema 1 and 2), it is checked against the state's weights, as it was then.
fn weights_submitted(state: &mut State, event: &WeightsSubmitted) -> Outcome {
    if let SubmitOutcome::Included { block } = event.outcome {
        state.block_weights_included = Some(block);
    }
    state.weights_intent_mecid = 0;
    match state.weights_intent.take() {
        Some(intent) => {
            Outcome::WeightsChecked(Ok((intent.prepared.uids, intent.prepared.weights)))
        }
        None => {
            let checked = to_chain_weights(state.weights_to_set());
            state.weights_due = None;
            Outcome::WeightsChecked(checked)
        }
    }
}
