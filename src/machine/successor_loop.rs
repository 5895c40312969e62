//! The successor's loop in the fold (F v3.1.0), where [`LoopRules::successor`] is set: what
//! F's update thread may download and when, one evaluation per competition per sync block,
//! a step's tasks and scores, its float32 tracker and the eval set it keeps
//! (`../shared/docs/successor-semantics.md` §4, with the lines of F and taoverse each rule
//! comes from). N's rules never reach this module.
//!
//! [`LoopRules::successor`]: super::params::LoopRules

use std::cmp::Ordering;

use super::event::{EvalOutcome, RejectionCode, StepRecord, TaskFetchOutcome, TasksFetched};
use super::model_id::{CommitmentInvalid, HashKind, ModelId};
use super::numbers::sync_block;
use super::params::{CompetitionId, EpsilonRule, MechanismParams, SuccessorRules};
use super::rejection::Rejection;
use super::state::{Entry, EvalResult, OpenStep, State, SuccessorState, TaskOpen, TrackedModel};
use super::step::{eval_priority, keep_eval_set, unscored_record};
use super::successor::{
    Scored, compute_wins, model_score, should_retry_model, subnet_weights_f32, task_loss_mean,
    tracker_record_f32,
};
use super::torch_f32::narrow;

/// The competition F records a misconfigured model's failure under (`CompetitionId.NONE`).
const COMPETITION_NONE: &str = "0";

/// The successor's rules, when the parameters in force have them.
pub fn rules(params: &MechanismParams) -> Option<&SuccessorRules> {
    params.rules.successor.as_ref()
}

/// A competition's epsilon: its own under the successor's rules, else the mechanism's.
pub fn epsilon_of(params: &MechanismParams, competition: &CompetitionId) -> EpsilonRule {
    rules(params)
        .and_then(|rules| rules.competition(competition))
        .map_or_else(|| params.epsilon.clone(), |c| c.epsilon.clone())
}

/// A competition's evaluation delay: its own under the successor's rules, else the
/// mechanism's.
fn eval_delay_of(params: &MechanismParams, competition: &CompetitionId) -> u64 {
    rules(params)
        .and_then(|rules| rules.competition(competition))
        .map_or(params.eval_delay_blocks, |c| c.eval_delay_blocks)
}

/// F's sync block of `block` (`None` on absurd heights).
pub fn sync_of(rules: &SuccessorRules, block: u64) -> Option<u64> {
    let cadence = i64::try_from(rules.sync_cadence_blocks).ok()?;
    let genesis = i64::try_from(rules.sync_genesis_block).ok()?;
    let block = i64::try_from(block).ok()?;
    u64::try_from(sync_block(block, cadence, genesis)?).ok()
}

/// taoverse's `sync_model` refuses a commitment whose competition was not in the schedule at
/// its own commit block (T:model_updater.py L102-111), before any download: for good, since
/// the commit block never changes.
pub fn commitment_check(
    params: &MechanismParams,
    model_id: &ModelId,
    block_commit: u64,
) -> Option<CommitmentInvalid> {
    rules(params)?;
    let known = params
        .competition_at(block_commit, &model_id.competition)
        .is_some();
    (!known).then(|| CommitmentInvalid::NoCompetitionAtCommitBlock {
        competition: model_id.competition.to_string(),
        block_commit,
    })
}

fn successor_state(state: &mut State) -> &mut SuccessorState {
    state.successor.get_or_insert_with(SuccessorState::default)
}

/// taoverse's `on_model_evaluated`: appended, kept in block order, the oldest dropped past
/// the history's length.
fn record_evaluation(
    state: &mut State,
    hotkey: &str,
    competition: &CompetitionId,
    result: EvalResult,
) {
    let keep = rules(&state.params).map_or(3, |r| r.eval_history_len);
    let keep = usize::try_from(keep).unwrap_or(usize::MAX);
    let history = successor_state(state)
        .eval_history
        .entry(hotkey.to_owned())
        .or_default()
        .entry(competition.clone())
        .or_default();
    history.push(result);
    // Python's sort is stable: equal blocks keep their order.
    history.sort_by_key(|r| r.block);
    if history.len() > keep {
        history.remove(0);
    }
}

/// taoverse's `on_miner_model_updated`: the tracker takes the downloaded commitment, and
/// its evaluation history is cleared when that commitment differs from the one it held.
pub fn track_download(state: &mut State, hotkey: &str, model_id: ModelId, block_commit: u64) {
    let record = state.hotkeys.entry(hotkey.to_owned()).or_default();
    let same = record
        .model
        .as_ref()
        .is_some_and(|m| m.block_commit == block_commit && m.model_id == model_id);
    record.model = Some(TrackedModel {
        model_id,
        block_commit,
        hash_kind: HashKind::Salted,
    });
    if !same && let Some(successor) = state.successor.as_mut() {
        successor.eval_history.remove(hotkey);
    }
}

/// Whether F's update thread would force a download of `hotkey`'s tracked model now: its
/// competition is active, its uid is queued nowhere for it, and `should_retry_model` says so
/// over the hotkey's history (neurons/validator.py L523-560).
fn retry_justified(state: &State, block: u64, hotkey: &str) -> bool {
    let Some(model) = state.hotkeys.get(hotkey).and_then(|r| r.model.as_ref()) else {
        return false;
    };
    let competition = &model.model_id.competition;
    if state.params.competition_at(block, competition).is_none() {
        return false;
    }
    let uid = state.metagraph.as_ref().and_then(|m| m.uid_of(hotkey));
    let queued = uid.is_some_and(|uid| {
        state
            .competitions
            .get(competition)
            .is_some_and(|c| c.pending.contains(uid) || c.eval_set.contains(uid))
    });
    if queued {
        return false;
    }
    let history = state
        .successor
        .as_ref()
        .and_then(|s| s.eval_history.get(hotkey))
        .and_then(|by| by.get(competition))
        .map_or(&[][..], Vec::as_slice);
    should_retry_model(&epsilon_of(&state.params, competition), block, history)
}

/// Whether the update loop has reached its cap: as many uids pending and in eval sets, over
/// every competition, as `updated_models_limit` (F waits there, neurons/validator.py
/// L631-644).
fn at_cap(state: &State) -> bool {
    let Some(rules) = rules(&state.params) else {
        return false;
    };
    let count: usize = state
        .competitions
        .values()
        .map(|c| c.pending.len().saturating_add(c.eval_set.len()))
        .sum();
    count >= usize::try_from(rules.updated_models_limit).unwrap_or(usize::MAX)
}

/// Whether F's top-model scan would force a download of `hotkey`'s model now: its uid is
/// among the latest scan's top miners, queued for no competition, its model's competition is
/// running, and it was never evaluated or last evaluated (any competition, F's records of
/// misconfigurations included) at least `top_retry_blocks` ago (neurons/validator.py
/// L646-757).
fn top_justified(state: &State, block: u64, hotkey: &str) -> bool {
    let running = state
        .hotkeys
        .get(hotkey)
        .and_then(|r| r.model.as_ref())
        .is_some_and(|m| {
            state
                .params
                .competition_at(block, &m.model_id.competition)
                .is_some()
        });
    running && top_eligible(state, block, hotkey)
}

/// The top-model scan's test of a uid, whatever its model: among the latest scan's top
/// miners, queued for no competition, and not evaluated in the last `top_retry_blocks`.
fn top_eligible(state: &State, block: u64, hotkey: &str) -> bool {
    let (Some(rules), Some(successor)) = (rules(&state.params), state.successor.as_ref()) else {
        return false;
    };
    let Some(uid) = state.metagraph.as_ref().and_then(|m| m.uid_of(hotkey)) else {
        return false;
    };
    if !successor.top_miners.contains(&uid) {
        return false;
    }
    let queued = state
        .competitions
        .values()
        .any(|c| c.pending.contains(uid) || c.eval_set.contains(uid));
    let evaluated_last = successor
        .eval_history
        .get(hotkey)
        .and_then(|by| by.values().flatten().map(|r| r.block).max());
    let due =
        evaluated_last.is_none_or(|last| block.saturating_sub(last) >= rules.top_retry_blocks);
    !queued && due
}

/// Other validators' weights as the top-model scan read them: the fold keeps the top miners
/// they name (taoverse `get_top_miners`).
pub fn validator_weights_observed(
    state: &mut State,
    event: &super::event::ValidatorWeightsObserved,
) -> Result<(), Rejection> {
    let Some(rules) = rules(&state.params) else {
        return Err(Rejection::ValidatorWeightsWithoutSuccessorRules);
    };
    let top = super::successor::top_miners(
        &event.validators,
        rules.top_stake_min,
        rules.top_weight_share,
    );
    successor_state(state).top_miners = top;
    Ok(())
}

/// Whether F's update thread would download `hotkey`'s commitment of `competition` made at
/// `block_commit`, at `block`, for the first time: aged past its competition's delay, the
/// competition running, and below the cap (the top-model scan ignores it). Always, without
/// the successor's rules.
pub fn download_due(
    state: &State,
    block: u64,
    hotkey: &str,
    competition: &CompetitionId,
    block_commit: u64,
) -> bool {
    if rules(&state.params).is_none() {
        return true;
    }
    let delay = eval_delay_of(&state.params, competition);
    block.saturating_sub(block_commit) >= delay
        && state.params.competition_at(block, competition).is_some()
        && (!at_cap(state) || top_eligible(state, block, hotkey))
}

/// The decided commitments F's update thread would download again at `block`, by hotkey
/// with their commit blocks: the tracked model of each hotkey that `should_retry_model`
/// (below the cap) or the top-model scan asks for. None without the successor's rules.
pub fn resyncs_due(state: &State, block: u64) -> Vec<(&str, u64)> {
    if rules(&state.params).is_none() {
        return Vec::new();
    }
    let capped = at_cap(state);
    state
        .hotkeys
        .iter()
        .filter_map(|(hotkey, record)| {
            let model = record.model.as_ref()?;
            let commitment = record.commitment.as_ref()?;
            let decided = commitment.block_commit == model.block_commit
                && commitment.status != super::state::CommitmentStatus::Unverified;
            let forced = (!capped && retry_justified(state, block, hotkey))
                || top_justified(state, block, hotkey);
            (decided && forced).then_some((hotkey.as_str(), model.block_commit))
        })
        .collect()
}

/// What F's update thread did with a download, as the fold checks it.
pub enum Download<'a> {
    /// `sync_model` returned True: the model is queued.
    Verified,
    /// `sync_model` raised a misconfiguration.
    Rejected(&'a RejectionCode),
}

/// Whether a rejection is decided after the download, once taoverse's tracker has taken the
/// commitment (T:model_updater.py L138-171): a hash or parameter check.
fn after_download(code: &RejectionCode) -> bool {
    matches!(
        code,
        RejectionCode::HashMismatch
            | RejectionCode::TooManyParameters
            | RejectionCode::NormCheck
            | RejectionCode::UnsupportedArchitecture
            | RejectionCode::NeverScored
    )
}

/// A verification or rejection under the successor's rules, for the hotkey's current
/// commitment (`pending`: whether that commitment still waits for its first outcome). Returns
/// `None` to let N's handling apply (a first outcome that passes the successor's checks),
/// else whether the fold applies or rejects it.
pub fn download(
    state: &mut State,
    block: u64,
    hotkey: &str,
    block_commit: u64,
    pending: bool,
    download: &Download<'_>,
) -> Option<Result<(), Rejection>> {
    rules(&state.params)?;
    let commitment = state.hotkeys.get(hotkey)?.commitment.as_ref()?;
    let model_id = commitment.model_id.clone()?;
    let competition = model_id.competition.clone();
    if pending {
        // F waits until the commitment has aged past its competition's delay, and skips
        // competitions that are not running (neurons/validator.py L512-520).
        let delay = eval_delay_of(&state.params, &competition);
        if block.saturating_sub(block_commit) < delay {
            return Some(Err(Rejection::DownloadTooEarly {
                hotkey: hotkey.to_owned(),
                block_commit,
                blocks_due: delay,
            }));
        }
        if state.params.competition_at(block, &competition).is_none() {
            return Some(Err(Rejection::DownloadOfInactiveCompetition {
                hotkey: hotkey.to_owned(),
                competition,
            }));
        }
        // The update loop downloads only below the cap; the top-model scan ignores it.
        if at_cap(state) && !top_eligible(state, block, hotkey) {
            return Some(Err(Rejection::DownloadOverCap {
                hotkey: hotkey.to_owned(),
                block_commit,
            }));
        }
        let Download::Rejected(code) = download else {
            track_download(state, hotkey, model_id, block_commit);
            return None;
        };
        if !after_download(code) {
            // Refused before the tracker took it (a missing, oversized or malformed
            // repository): F downloads it again on its next pass, so it stays pending.
            misconfigured(state, block, hotkey, code);
            return Some(Ok(()));
        }
        track_download(state, hotkey, model_id, block_commit);
        misconfigured(state, block, hotkey, code);
        return None;
    }
    // A download of a commitment already decided: F forces it only when the update thread's
    // retry rule asks for one; a misconfiguration decided before any download (a repository
    // that is missing, too large or malformed) simply repeats on every pass.
    let forced = match download {
        Download::Rejected(code) if !after_download(code) => true,
        _ => {
            let tracked = state
                .hotkeys
                .get(hotkey)
                .and_then(|r| r.model.as_ref())
                .is_some_and(|m| m.block_commit == block_commit);
            tracked
                && ((retry_justified(state, block, hotkey) && !at_cap(state))
                    || top_justified(state, block, hotkey))
        }
    };
    if !forced {
        return Some(Err(Rejection::ResyncUnjustified {
            hotkey: hotkey.to_owned(),
            block_commit,
        }));
    }
    match download {
        Download::Verified => {
            let uid = state.metagraph.as_ref().and_then(|m| m.uid_of(hotkey));
            if let Some(uid) = uid {
                state
                    .competitions
                    .entry(competition)
                    .or_default()
                    .pending
                    .add(uid);
            }
        }
        Download::Rejected(code) => misconfigured(state, block, hotkey, code),
    }
    Some(Ok(()))
}

/// F records a misconfigured model as an evaluation at ∞ under competition 0
/// (neurons/validator.py L568-580); the norm check's AttributeError on a class it never
/// scores is no misconfiguration, and F records nothing for it.
fn misconfigured(state: &mut State, block: u64, hotkey: &str, code: &RejectionCode) {
    if *code == RejectionCode::NeverScored {
        return;
    }
    let result = EvalResult {
        block,
        score: f64::INFINITY,
        winning_block: Some(0),
        winning_score: 0.0,
    };
    record_evaluation(state, hotkey, &CompetitionId::new(COMPETITION_NONE), result);
}

/// F's metagraph listener (taoverse `on_hotkeys_updated`, addendum 3): a hotkey that left
/// the metagraph loses its tracked model and history, so when it returns its commitment is
/// downloaded and queued again.
pub fn hotkeys_changed(state: &mut State, hotkeys: &[String]) {
    if rules(&state.params).is_none() {
        return;
    }
    let present: std::collections::BTreeSet<&str> = hotkeys.iter().map(String::as_str).collect();
    let mut left = Vec::new();
    for (hotkey, record) in &mut state.hotkeys {
        if record.model.is_none() || present.contains(hotkey.as_str()) {
            continue;
        }
        record.model = None;
        record.superseded = None;
        if let Some(commitment) = record.commitment.as_mut()
            && commitment.model_id.is_some()
            && !matches!(
                commitment.status,
                super::state::CommitmentStatus::Invalid(_)
            )
        {
            commitment.status = super::state::CommitmentStatus::Unverified;
        }
        left.push(hotkey.clone());
    }
    if let Some(successor) = state.successor.as_mut() {
        for hotkey in left {
            successor.eval_history.remove(&hotkey);
        }
    }
}

/// When the next step must wait for the sync block after `block` because its competition
/// already ran in this one (F sleeps until then, neurons/validator.py L1021-1032): the
/// competition, this sync block and the next. `None` when it may run now, or without the
/// successor's rules.
pub fn gate_closed(state: &State, block: u64) -> Option<(CompetitionId, u64, u64)> {
    let rules = rules(&state.params)?;
    let competition = state
        .params
        .competition_for_step(block, state.step_next)?
        .id
        .clone();
    let sync = sync_of(rules, block)?;
    let last = state
        .successor
        .as_ref()?
        .sync_block_last
        .get(&competition)
        .copied()?;
    (last == sync).then(|| {
        let next = sync.saturating_add(rules.sync_cadence_blocks);
        (competition, sync, next)
    })
}

/// F runs a competition at most once per sync block (neurons/validator.py L1021-1032).
pub fn step_gate(
    state: &mut State,
    block: u64,
    competition: &CompetitionId,
) -> Result<(), Rejection> {
    let Some(rules) = rules(&state.params) else {
        return Ok(());
    };
    let sync = sync_of(rules, block);
    let last = state
        .successor
        .as_ref()
        .and_then(|s| s.sync_block_last.get(competition).copied());
    if let (Some(sync), Some(last)) = (sync, last)
        && sync == last
    {
        return Err(Rejection::SyncBlockAlreadyRun {
            competition: competition.clone(),
            sync_block: sync,
        });
    }
    successor_state(state).tasks_open = None;
    Ok(())
}

/// A successor step's data: every task of the open step's `competition`, in its order.
pub fn tasks_fetched(
    state: &mut State,
    competition: &CompetitionId,
    event: &TasksFetched,
) -> Result<(), Rejection> {
    let Some(tasks) = rules(&state.params)
        .and_then(|r| r.competition(competition))
        .map(|c| c.tasks.clone())
    else {
        return Err(Rejection::TasksWithoutSuccessorRules { step: event.step });
    };
    if state
        .successor
        .as_ref()
        .is_some_and(|s| s.tasks_open.is_some())
    {
        return Err(Rejection::SecondBatch { step: event.step });
    }
    let names: Vec<&str> = event.tasks.iter().map(|t| t.task.as_str()).collect();
    let expected: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    if names != expected {
        return Err(Rejection::TasksMismatch {
            step: event.step,
            expected: expected.join(", "),
            found: names.join(", "),
        });
    }
    let open: Vec<TaskOpen> = tasks
        .iter()
        .zip(&event.tasks)
        .map(|(task, fetched)| TaskOpen {
            weight: task.weight,
            samples: match &fetched.outcome {
                TaskFetchOutcome::Loaded { samples, .. } => Some(samples.len()),
                TaskFetchOutcome::Dropped(_) => None,
            },
        })
        .collect();
    successor_state(state).tasks_open = Some(open);
    Ok(())
}

/// Checks a model's losses against the open step's tasks: one list per task that loaded, each
/// as long as its samples, or a failure.
pub fn check_losses(
    state: &State,
    step: u64,
    uid: u16,
    outcome: &EvalOutcome,
) -> Result<(), Rejection> {
    let tasks = state
        .successor
        .as_ref()
        .and_then(|s| s.tasks_open.as_ref())
        .ok_or(Rejection::LossesBeforeBatch { step })?;
    match outcome {
        EvalOutcome::Failed(_) => Ok(()),
        EvalOutcome::Losses(_) => Err(Rejection::LossesForm { uid, step }),
        EvalOutcome::TaskLosses(losses) => {
            let loaded: Vec<usize> = tasks.iter().filter_map(|t| t.samples).collect();
            let counts: Vec<usize> = losses.iter().map(|l| l.0.len()).collect();
            if loaded == counts {
                Ok(())
            } else {
                Err(Rejection::TaskLossCount {
                    uid,
                    step,
                    counts: format!("{counts:?}"),
                    expected: format!("{loaded:?}"),
                })
            }
        }
    }
}

/// Forgets the open step's tasks (a step that ended without scoring).
pub fn step_closed(state: &mut State) {
    if let Some(successor) = state.successor.as_mut() {
        successor.tasks_open = None;
    }
}

/// F's score of one participant: its weighted task score over the tasks that loaded, ∞ for
/// a failed or missing evaluation or a model of another competition.
fn participant_score(tasks: &[TaskOpen], entry: &Entry, outcome: Option<&EvalOutcome>) -> f64 {
    let (Entry::Model { .. }, Some(EvalOutcome::TaskLosses(losses))) = (entry, outcome) else {
        return f64::INFINITY;
    };
    let weighted: Vec<(f64, f64)> = tasks
        .iter()
        .filter(|t| t.samples.is_some())
        .zip(losses)
        .map(|(task, losses)| (task.weight, task_loss_mean(&losses.to_f64())))
        .collect();
    model_score(&weighted).unwrap_or(f64::INFINITY)
}

/// Scores a finished successor step as F's `run_step` does (neurons/validator.py
/// L1123-1344): one score per uid, `compute_wins` with the competition's epsilon, every
/// participant's evaluation recorded against the first uid with the best win rate, the step's
/// winners into the competition's float32 tracker, the subnet's weights with the threshold,
/// and the eval set kept by `1 + tracker weight` or win rate.
pub fn complete_step(state: &mut State, open: OpenStep) -> StepRecord {
    let competition = open.competition.clone();
    let params = state.params.clone();
    let Some(rules) = rules(&params) else {
        return StepRecord::empty(competition);
    };
    let tasks = state
        .successor
        .as_mut()
        .and_then(|s| s.tasks_open.take())
        .unwrap_or_default();
    if open.participants.is_empty() {
        // F returns before loading data when nobody is queued; the sync block is not spent.
        return unscored_record(state, competition);
    }
    let scored: Vec<Scored> = open
        .participants
        .iter()
        .map(|p| Scored {
            uid: p.uid,
            score: participant_score(&tasks, &p.entry, p.outcome.as_ref()),
            block_commit: match &p.entry {
                Entry::Model { block_commit, .. } => Some(*block_commit),
                Entry::Absent(_) => None,
            },
        })
        .collect();
    let epsilon = epsilon_of(&params, &competition);
    let tallies = compute_wins(&scored, &epsilon, open.block_start);
    let uids: Vec<u16> = scored.iter().map(|s| s.uid).collect();
    let win_rate: Vec<f64> = tallies.iter().map(|(_, rate)| *rate).collect();
    let rate_best = win_rate.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Python's `max(win_rate, key=win_rate.get)`: the first uid with the best rate.
    let top = win_rate
        .iter()
        .position(|rate| rate.total_cmp(&rate_best) == Ordering::Equal)
        .and_then(|index| scored.get(index).copied());
    for (participant, me) in open.participants.iter().zip(&scored) {
        let result = EvalResult {
            block: open.block_start,
            score: me.score,
            winning_block: top.and_then(|t| t.block_commit),
            winning_score: top.map_or(f64::INFINITY, |t| t.score),
        };
        record_evaluation(state, &participant.hotkey, &competition, result);
    }

    // The step's winners, then the competition's moving average, then every active tracker
    // combined (taoverse's CompetitionTracker, float32 as torch computes it).
    let mut step_weights = vec![0.0f32; open.size];
    for (uid, rate) in uids.iter().zip(&win_rate) {
        if let Some(slot) = step_weights.get_mut(usize::from(*uid)) {
            *slot = if *rate == rate_best { 1.0 } else { 0.0 };
        }
    }
    let active = params.schedule_at(open.block_start).to_vec();
    for competition_state in state.competitions.values_mut() {
        if let Some(tracker) = competition_state.tracker.as_mut()
            && tracker.len() < open.size
        {
            tracker.resize(open.size, 0.0);
        }
    }
    let entry = state.competitions.entry(competition.clone()).or_default();
    let mut tracker: Option<Vec<f32>> = entry
        .tracker
        .take()
        .map(|t| t.into_iter().map(narrow).collect());
    tracker_record_f32(&mut tracker, step_weights, params.alpha);
    entry.tracker = tracker.map(|t| t.into_iter().map(f64::from).collect());
    for (id, competition_state) in &mut state.competitions {
        if !active.iter().any(|c| &c.id == id) {
            competition_state.tracker = None;
        }
    }
    let threshold = match params.weights_mode {
        super::params::WeightsMode::WinnerTakesAll {
            min_weight_threshold,
        } => min_weight_threshold,
        super::params::WeightsMode::Softmax => 0.0,
    };
    let mut taken: Vec<(CompetitionId, Vec<f32>, f64)> = active
        .iter()
        .filter_map(|c| {
            let tracker = state.competitions.get_mut(&c.id)?.tracker.take()?;
            let tracker = tracker.into_iter().map(narrow).collect();
            Some((c.id.clone(), tracker, c.reward_percentage))
        })
        .collect();
    let size = open
        .size
        .max(taken.iter().map(|(_, t, _)| t.len()).max().unwrap_or(0));
    let mut trackers: Vec<(&mut Vec<f32>, f64)> = taken
        .iter_mut()
        .map(|(_, tracker, share)| (tracker, *share))
        .collect();
    let weights = subnet_weights_f32(&mut trackers, size, threshold);
    state.weights = weights.into_iter().map(f64::from).collect();
    for (id, tracker, _) in taken {
        state.competitions.entry(id).or_default().tracker =
            Some(tracker.into_iter().map(f64::from).collect());
    }

    // F's keep rule over its `win_rate` dict, in participant order.
    let priority = eval_priority(state, &competition, &uids, &win_rate);
    let eval_next = keep_eval_set(&uids, priority, params.sample_min);
    let eval_next_sorted = eval_next.sorted();
    state
        .competitions
        .entry(competition.clone())
        .or_default()
        .eval_set = eval_next;
    // F's `_update_uids_to_eval`: competitions no longer scheduled lose their sets.
    state
        .competitions
        .retain(|id, _| active.iter().any(|c| &c.id == id));
    if let Some(sync) = sync_of(rules, open.block_start) {
        successor_state(state)
            .sync_block_last
            .insert(competition.clone(), sync);
    }
    let matches = u64::try_from(uids.len().saturating_sub(1)).unwrap_or(u64::MAX);
    StepRecord {
        competition,
        wins: tallies.iter().map(|(wins, _)| u64::from(*wins)).collect(),
        matches: vec![matches; uids.len()],
        win_rate,
        weights: state.weights.clone(),
        eval_next: eval_next_sorted,
        scores: scored.iter().map(|s| s.score).collect(),
        uids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(block: u64, score: f64) -> EvalResult {
        EvalResult {
            block,
            score,
            winning_block: Some(100),
            winning_score: 2.0,
        }
    }

    /// taoverse keeps the last three results by block: a model whose last finite result still
    /// asks for a retry is retried after two failures, and not after a third.
    #[test]
    fn the_history_keeps_three_results_and_the_last_finite_one_decides() {
        let mut state = State::new(MechanismParams::successor());
        let competition = CompetitionId::new("4");
        record_evaluation(&mut state, "5A", &competition, result(10, 1.0));
        record_evaluation(&mut state, "5A", &competition, result(30, f64::INFINITY));
        record_evaluation(&mut state, "5A", &competition, result(20, f64::INFINITY));
        let history = |state: &State| {
            state.successor.as_ref().unwrap().eval_history["5A"][&competition].clone()
        };
        let blocks: Vec<u64> = history(&state).iter().map(|r| r.block).collect();
        assert_eq!(blocks, [10, 20, 30]);
        let epsilon = epsilon_of(&state.params, &competition);
        assert!(should_retry_model(&epsilon, 40_000, &history(&state)));
        record_evaluation(&mut state, "5A", &competition, result(40, f64::INFINITY));
        assert_eq!(history(&state).len(), 3);
        assert!(!should_retry_model(&epsilon, 40_000, &history(&state)));
    }

    /// The runner's view of the gate is the fold's: closed for the rest of the sync block a
    /// competition ran in, open from the next.
    #[test]
    fn the_gate_is_closed_until_the_next_sync_block() {
        let mut state = State::new(MechanismParams::successor());
        let competition = CompetitionId::new("4");
        let rules = rules(&state.params).unwrap().clone();
        let block = 5_300_000;
        let sync = sync_of(&rules, block).unwrap();
        assert_eq!(gate_closed(&state, block), None);
        successor_state(&mut state)
            .sync_block_last
            .insert(competition.clone(), sync);
        let next = sync + rules.sync_cadence_blocks;
        assert_eq!(
            gate_closed(&state, block),
            Some((competition.clone(), sync, next))
        );
        assert!(step_gate(&mut state.clone(), block, &competition).is_err());
        assert_eq!(gate_closed(&state, next), None);
        assert!(step_gate(&mut state, next, &competition).is_ok());
    }

    /// A download of a commitment already decided is refused unless the retry rule or the
    /// top-model scan asks for it.
    #[test]
    fn forced_downloads_need_a_reason() {
        use super::super::event::Event;
        use super::super::event::{CommitmentField, CommitmentObserved, MetagraphObserved};
        use super::super::wire::RawBytes;
        use super::super::{Record, apply};
        let mut state = State::new(MechanismParams::successor());
        let text = "ns:m:0123456789abcdef0123456789abcdef01234567:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:4";
        let events = [
            Event::MetagraphObserved(MetagraphObserved {
                netuid: 37,
                hotkeys: vec!["5A".into()],
                consensus: vec![0],
                incentive: Vec::new(),
                stake: vec![0],
                validator_permit: Vec::new(),
                last_update: Vec::new(),
                tempo: 360,
            }),
            Event::CommitmentObserved(CommitmentObserved {
                hotkey: "5A".into(),
                block_commit: 5_200_000,
                field: CommitmentField::Raw(RawBytes(text.as_bytes().to_vec())),
            }),
        ];
        for (seq, event) in events.into_iter().enumerate() {
            let record = Record {
                block: 5_200_500,
                seq: seq as u64,
                event,
            };
            assert_eq!(apply(&mut state, &record), super::super::Outcome::Applied);
        }
        // The fetcher's view agrees with the fold's: not before the 460-block delay.
        let competition = CompetitionId::new("4");
        assert!(!download_due(
            &state,
            5_200_459,
            "5A",
            &competition,
            5_200_000
        ));
        assert!(download_due(
            &state,
            5_200_460,
            "5A",
            &competition,
            5_200_000
        ));
        let verify = Download::Verified;
        assert_eq!(
            download(&mut state, 5_200_500, "5A", 5_200_000, true, &verify),
            None
        );
        // N's handling marks it verified; queued, so a forced download has no reason.
        state
            .hotkeys
            .get_mut("5A")
            .unwrap()
            .commitment
            .as_mut()
            .unwrap()
            .status = super::super::state::CommitmentStatus::Verified;
        state
            .competitions
            .entry(CompetitionId::new("4"))
            .or_default()
            .pending
            .add(0);
        assert!(resyncs_due(&state, 5_200_600).is_empty());
        assert!(matches!(
            download(&mut state, 5_200_600, "5A", 5_200_000, false, &verify),
            Some(Err(Rejection::ResyncUnjustified { .. }))
        ));
        // Dropped from every set and never evaluated: the retry rule asks, and the fetcher
        // sees it.
        state.competitions.clear();
        assert_eq!(resyncs_due(&state, 5_200_700), [("5A", 5_200_000)]);
        assert_eq!(
            download(&mut state, 5_200_700, "5A", 5_200_000, false, &verify),
            Some(Ok(()))
        );
    }
}
