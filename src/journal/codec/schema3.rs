//! The shapes of schemas 1 to 3 that schema 4 changed, and their upgrade.
//!
//! Schema 4 added `rules` at the end of the mechanism parameters and keeps eval sets and pending
//! uids as CPython sets. An older record or checkpoint decodes into these shapes and upgrades
//! with [`LoopRules::legacy`], the rules it was folded with, so it replays bit for bit.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::machine::event::{
    BatchFetched, CommitmentObserved, ConsensusSeeded, LossesComputed, MetagraphObserved,
    ModelRejected, ModelVerified, ParamsChanged, StepAbandoned, StepCompleted, StepFailed,
    StepStarted, WeightsCommitted, WeightsPrepared, WeightsSubmitted,
};
use crate::machine::params::{
    EpsilonRule, LoopRules, MechanismParams, ModelIdFormat, ScheduleEntry, WeightsMode,
};
use crate::machine::pyset::PySet;
use crate::machine::state::{
    CommitmentState, CompetitionState, HotkeyRecord, Metagraph, OpenStep, TrackedModel,
    WeightsIntent,
};
use crate::machine::{CompetitionId, Event, Position, State};

/// `MechanismParams` before `rules`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct MechanismParams3 {
    epsilon: EpsilonRule,
    temperature: f64,
    alpha: f64,
    sample_min: u32,
    schedule: Vec<ScheduleEntry>,
    weights_mode: WeightsMode,
    eval_delay_blocks: u64,
    model_id_format: ModelIdFormat,
    subnet_start_block: u64,
}

impl From<MechanismParams3> for MechanismParams {
    fn from(old: MechanismParams3) -> Self {
        Self {
            epsilon: old.epsilon,
            temperature: old.temperature,
            alpha: old.alpha,
            sample_min: old.sample_min,
            schedule: old.schedule,
            weights_mode: old.weights_mode,
            eval_delay_blocks: old.eval_delay_blocks,
            model_id_format: old.model_id_format,
            subnet_start_block: old.subnet_start_block,
            rules: LoopRules::legacy(),
        }
    }
}

/// `CompetitionState` with its sets as `BTreeSet`s.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct CompetitionState3 {
    eval_set: BTreeSet<u16>,
    pending: BTreeSet<u16>,
    tracker: Option<Vec<f64>>,
}

impl From<CompetitionState3> for CompetitionState {
    fn from(old: CompetitionState3) -> Self {
        // Legacy rules visit these in ascending order, whatever the table's layout.
        Self {
            eval_set: PySet::from_list(old.eval_set),
            pending: PySet::from_list(old.pending),
            tracker: old.tracker,
        }
    }
}

/// `HotkeyRecord` before `superseded`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct HotkeyRecord3 {
    commitment: Option<CommitmentState>,
    model: Option<TrackedModel>,
}

impl From<HotkeyRecord3> for HotkeyRecord {
    fn from(old: HotkeyRecord3) -> Self {
        Self {
            commitment: old.commitment,
            model: old.model,
            superseded: None,
        }
    }
}

/// `State` of schema 3 (schemas 1 and 2 end before `weights_intent`; the codec appends it).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct State3 {
    pub(super) params: MechanismParams3,
    position: Option<Position>,
    metagraph: Option<Metagraph>,
    hotkeys: BTreeMap<String, HotkeyRecord3>,
    competitions: BTreeMap<CompetitionId, CompetitionState3>,
    weights: Vec<f64>,
    step_next: u64,
    step_open: Option<OpenStep>,
    block_commit_min: Option<u64>,
    block_weights_included: Option<u64>,
    weights_intent: Option<WeightsIntent>,
}

impl From<State3> for State {
    fn from(old: State3) -> Self {
        Self {
            params: old.params.into(),
            position: old.position,
            metagraph: old.metagraph,
            hotkeys: old
                .hotkeys
                .into_iter()
                .map(|(hotkey, record)| (hotkey, record.into()))
                .collect(),
            competitions: old
                .competitions
                .into_iter()
                .map(|(id, competition)| (id, competition.into()))
                .collect(),
            weights: old.weights,
            step_next: old.step_next,
            step_open: old.step_open,
            block_commit_min: old.block_commit_min,
            block_weights_included: old.block_weights_included,
            weights_intent: old.weights_intent,
            block_epoch: None,
            weights_due: None,
            weights_intent_mecid: 0,
            successor: None,
        }
    }
}

/// `ParamsChanged` before `rules`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct ParamsChanged3 {
    pub(super) params: MechanismParams3,
}

/// `Event` of schemas 1 to 3: the same variants in the same order (bincode writes the index).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub enum Event3 {
    MetagraphObserved(MetagraphObserved),
    CommitmentObserved(CommitmentObserved),
    ConsensusSeeded(ConsensusSeeded),
    ModelVerified(ModelVerified),
    ModelRejected(ModelRejected),
    StepStarted(StepStarted),
    BatchFetched(BatchFetched),
    LossesComputed(LossesComputed),
    StepCompleted(StepCompleted),
    StepAbandoned(StepAbandoned),
    WeightsSubmitted(WeightsSubmitted),
    ParamsChanged(ParamsChanged3),
    StepFailed(StepFailed),
    WeightsPrepared(WeightsPrepared),
    WeightsCommitted(WeightsCommitted),
}

impl From<Event3> for Event {
    fn from(old: Event3) -> Self {
        match old {
            Event3::MetagraphObserved(e) => Event::MetagraphObserved(e),
            Event3::CommitmentObserved(e) => Event::CommitmentObserved(e),
            Event3::ConsensusSeeded(e) => Event::ConsensusSeeded(e),
            Event3::ModelVerified(e) => Event::ModelVerified(e),
            Event3::ModelRejected(e) => Event::ModelRejected(e),
            Event3::StepStarted(e) => Event::StepStarted(e),
            Event3::BatchFetched(e) => Event::BatchFetched(e),
            Event3::LossesComputed(e) => Event::LossesComputed(e),
            Event3::StepCompleted(e) => Event::StepCompleted(e),
            Event3::StepAbandoned(e) => Event::StepAbandoned(e),
            Event3::WeightsSubmitted(e) => Event::WeightsSubmitted(e),
            Event3::ParamsChanged(e) => Event::ParamsChanged(ParamsChanged {
                params: e.params.into(),
            }),
            Event3::StepFailed(e) => Event::StepFailed(e),
            Event3::WeightsPrepared(e) => Event::WeightsPrepared(e),
            Event3::WeightsCommitted(e) => Event::WeightsCommitted(e),
        }
    }
}

#[cfg(test)]
impl State3 {
    /// The schema 3 shape of a state (its rules dropped, its sets as `BTreeSet`s), for tests
    /// that need an old encoding.
    pub fn from_current(state: &State) -> Self {
        let p = &state.params;
        Self {
            params: MechanismParams3 {
                epsilon: p.epsilon.clone(),
                temperature: p.temperature,
                alpha: p.alpha,
                sample_min: p.sample_min,
                schedule: p.schedule.clone(),
                weights_mode: p.weights_mode.clone(),
                eval_delay_blocks: p.eval_delay_blocks,
                model_id_format: p.model_id_format,
                subnet_start_block: p.subnet_start_block,
            },
            position: state.position,
            metagraph: state.metagraph.clone(),
            hotkeys: state
                .hotkeys
                .iter()
                .map(|(hotkey, record)| {
                    let old = HotkeyRecord3 {
                        commitment: record.commitment.clone(),
                        model: record.model.clone(),
                    };
                    (hotkey.clone(), old)
                })
                .collect(),
            competitions: state
                .competitions
                .iter()
                .map(|(id, c)| {
                    let competition = CompetitionState3 {
                        eval_set: c.eval_set.iter().collect(),
                        pending: c.pending.iter().collect(),
                        tracker: c.tracker.clone(),
                    };
                    (id.clone(), competition)
                })
                .collect(),
            weights: state.weights.clone(),
            step_next: state.step_next,
            step_open: state.step_open.clone(),
            block_commit_min: state.block_commit_min,
            block_weights_included: state.block_weights_included,
            weights_intent: state.weights_intent.clone(),
        }
    }
}
