//! The fold, table-driven (TigerBeetle's `state_machine_tests`): each case is a short script of
//! events, one per line, with the outcome the fold must give, all through one `check()`.
//! Every `Rejection` variant has a line here (`every_rejection_variant_has_a_line` keeps it so).
//!
//! A line is `BLOCK COMMAND ARGS... => EXPECTED`, where EXPECTED is `applied`, `unchanged`,
//! `scored`, `weights` or `rejected VARIANT`. `assert` lines check the state instead:
//! `assert step_next N`, `assert eval_set COMPETITION UIDS`, `assert pending COMPETITION UIDS`,
//! `assert open STEP|none`, `assert status HOTKEY STATUS`, and `assert due HEAD LAST_UPDATE
//! RATE_LIMIT BLOCKS_PER_EPOCH yes|no|none` (whether the cadence has weights due on that
//! reading of the chain; `none`: N's cadence has none due at any head).
//!
//! Commands: `metagraph HOTKEYS...`, `metagraph-size N`, `metagraph-short`,
//! `commit HOTKEY BLOCK_COMMIT COMPETITION LABEL` (a valid id derived from LABEL),
//! `commit-raw HOTKEY BLOCK_COMMIT TEXT`, `verify HOTKEY BLOCK_COMMIT plain|salted`,
//! `reject HOTKEY BLOCK_COMMIT`, `reject-missing HOTKEY BLOCK_COMMIT`, `seed`,
//! `start STEP COMPETITION`, `batch STEP SIZE`,
//! `losses STEP UID [HOTKEY [HASH]] LOSSES` (LOSSES comma-separated; HOTKEY and HASH default
//! to the participant's), `eval-failed STEP UID`, `complete STEP`, `abandon STEP`,
//! `fail STEP`, `weights`, `prepare`, `prepare-hash`, `committed`, `answer included BLOCK`,
//! `answer refused`, `params n|successor|later|bad|legacy|chain|f`; for the successor's loop,
//! `tasks STEP NAME:COUNT|NAME:-...` (a task's samples, or `-` for one that was dropped) and
//! `task-losses STEP UID LOSSES/LOSSES...` (one comma list per loaded task), `validators` (one
//! large validator's weights, as the top-model scan reads them).

use std::collections::BTreeSet;

use validator::machine::cadence;
use validator::machine::event::DueReading;
use validator::machine::event::{
    BatchFetched, CommitmentField, CommitmentObserved, ConsensusSeeded, EvalOutcome,
    LossesComputed, MetagraphObserved, ModelRejected, ModelVerified, ParamsChanged, Provenance,
    RejectionCode, StepAbandoned, StepCompleted, StepFailed, StepRecord, StepStarted, SubmitMethod,
    SubmitOutcome, TaskFetchOutcome, TaskFetched, TasksFetched, ValidatorWeightsObserved,
    WeightsCommitted, WeightsPrepared, WeightsSubmitted,
};
use validator::machine::model_id::HashKind;
use validator::machine::params::{CompetitionId, ModelIdFormat, WeightsCadence};
use validator::machine::state::{CommitmentStatus, Entry};
use validator::machine::successor::ValidatorWeights;
use validator::machine::weights::to_chain_weights;
use validator::machine::wire::{LossVec, RawBytes, Samples};
use validator::machine::{Event, MechanismParams, Outcome, Record, State, apply};
use validator::synth::model_string;

fn metagraph(hotkeys: Vec<String>) -> Event {
    let size = hotkeys.len();
    Event::MetagraphObserved(MetagraphObserved {
        netuid: 6,
        hotkeys,
        consensus: vec![0; size],
        incentive: Vec::new(),
        stake: vec![0; size],
        validator_permit: Vec::new(),
        last_update: Vec::new(),
        tempo: 360,
    })
}

fn params(variant: &str) -> MechanismParams {
    let mut params = MechanismParams::default();
    match variant {
        "n" => {}
        "successor" => params.model_id_format = ModelIdFormat::Successor,
        "later" => params.schedule[0].block_start = 1_000,
        "bad" => params.temperature = 0.0,
        "legacy" => params.rules = validator::machine::params::LoopRules::legacy(),
        "chain" => params.rules.weights_cadence = WeightsCadence::Chain,
        "f" => params = MechanismParams::successor(),
        "f-cap1" => {
            params = MechanismParams::successor();
            if let Some(rules) = params.rules.successor.as_mut() {
                rules.updated_models_limit = 1;
            }
        }
        other => panic!("unknown params {other}"),
    }
    params
}

fn commitment(hotkey: &str, block_commit: &str, text: &str) -> Event {
    Event::CommitmentObserved(CommitmentObserved {
        hotkey: hotkey.into(),
        block_commit: block_commit.parse().unwrap(),
        field: CommitmentField::Raw(RawBytes(text.as_bytes().to_vec())),
    })
}

fn losses(text: &str) -> LossVec {
    LossVec(text.split(',').map(|l| l.parse().unwrap()).collect())
}

/// `outcome` for the open step's participant `uid`, which must have a model, under its
/// hotkey and hash.
fn model_losses(state: &State, step: &str, uid: &str, outcome: EvalOutcome) -> Event {
    let uid: u16 = uid.parse().unwrap();
    let participant = state
        .step_open
        .as_ref()
        .and_then(|open| open.participants.iter().find(|p| p.uid == uid))
        .unwrap();
    let Entry::Model { model_hash, .. } = &participant.entry else {
        panic!("uid {uid} has no model")
    };
    Event::LossesComputed(LossesComputed {
        step: step.parse().unwrap(),
        uid,
        hotkey: participant.hotkey.clone(),
        model_hash: model_hash.clone(),
        outcome,
    })
}

/// The event a script line names, given the state so far (for defaults such as a
/// participant's hotkey and hash).
fn event_of(state: &State, words: &[&str]) -> Event {
    match words {
        ["metagraph", hotkeys @ ..] => metagraph(hotkeys.iter().map(|h| (*h).to_owned()).collect()),
        ["metagraph-size", size] => metagraph(
            (0..size.parse::<usize>().unwrap())
                .map(|i| format!("5H{i}"))
                .collect(),
        ),
        ["metagraph-short"] => {
            let Event::MetagraphObserved(mut observed) = metagraph(vec!["5A".into(), "5B".into()])
            else {
                unreachable!()
            };
            observed.consensus.pop();
            Event::MetagraphObserved(observed)
        }
        ["commit", hotkey, block, competition, label] => {
            commitment(hotkey, block, &model_string("miner", label, competition))
        }
        ["commit-raw", hotkey, block, text] => commitment(hotkey, block, text),
        ["verify", hotkey, block, kind] => Event::ModelVerified(ModelVerified {
            hotkey: (*hotkey).into(),
            block_commit: block.parse().unwrap(),
            hash_kind: if *kind == "salted" {
                HashKind::Salted
            } else {
                HashKind::Plain
            },
        }),
        ["reject", hotkey, block] => Event::ModelRejected(ModelRejected {
            hotkey: (*hotkey).into(),
            block_commit: block.parse().unwrap(),
            code: RejectionCode::HashMismatch,
            detail: "test".into(),
        }),
        ["reject-missing", hotkey, block] => Event::ModelRejected(ModelRejected {
            hotkey: (*hotkey).into(),
            block_commit: block.parse().unwrap(),
            code: RejectionCode::NotFound,
            detail: "test".into(),
        }),
        ["seed"] => Event::ConsensusSeeded(ConsensusSeeded {}),
        ["start", step, competition] => Event::StepStarted(StepStarted {
            step: step.parse().unwrap(),
            competition: CompetitionId::new(*competition),
        }),
        ["batch", step, size] => {
            let mut samples = Samples::new();
            for index in 0..size.parse::<usize>().unwrap() {
                samples
                    .push(&format!("p{index}"), &format!("r{index}"), "")
                    .unwrap();
            }
            Event::BatchFetched(BatchFetched {
                step: step.parse().unwrap(),
                provenance: Provenance {
                    source: "table".into(),
                    seed: String::new(),
                    references: Vec::new(),
                },
                samples,
            })
        }
        ["losses", step, uid, rest @ ..] => {
            let uid: u16 = uid.parse().unwrap();
            let participant = state
                .step_open
                .as_ref()
                .and_then(|open| open.participants.iter().find(|p| p.uid == uid));
            let planned_hotkey = participant.map(|p| p.hotkey.clone()).unwrap_or_default();
            let planned_hash = match participant.map(|p| &p.entry) {
                Some(Entry::Model { model_hash, .. }) => model_hash.clone(),
                _ => "none".into(),
            };
            let (hotkey, hash, values) = match rest {
                [values] => (planned_hotkey, planned_hash, values),
                [hotkey, values] => ((*hotkey).to_owned(), planned_hash, values),
                [hotkey, hash, values] => ((*hotkey).to_owned(), (*hash).to_owned(), values),
                _ => panic!("losses STEP UID [HOTKEY [HASH]] LOSSES"),
            };
            Event::LossesComputed(LossesComputed {
                step: step.parse().unwrap(),
                uid,
                hotkey,
                model_hash: hash,
                outcome: EvalOutcome::Losses(losses(values)),
            })
        }
        ["eval-failed", step, uid] => {
            model_losses(state, step, uid, EvalOutcome::Failed("timeout".into()))
        }
        ["tasks", step, tasks @ ..] => Event::TasksFetched(TasksFetched {
            step: step.parse().unwrap(),
            tasks: tasks
                .iter()
                .map(|task| {
                    let (name, count) = task.split_once(':').unwrap();
                    let outcome = match count {
                        "-" => TaskFetchOutcome::Dropped("429 Too Many Requests".into()),
                        count => {
                            let mut samples = Samples::new();
                            for index in 0..count.parse::<usize>().unwrap() {
                                samples.push(&format!("q{index}"), "r", "").unwrap();
                            }
                            TaskFetchOutcome::Loaded {
                                provenance: Provenance {
                                    source: "table".into(),
                                    seed: String::new(),
                                    references: Vec::new(),
                                },
                                samples,
                            }
                        }
                    };
                    TaskFetched {
                        task: name.to_owned(),
                        outcome,
                    }
                })
                .collect(),
            tokenizer_hash: String::new(),
        }),
        ["validators"] => Event::ValidatorWeightsObserved(ValidatorWeightsObserved {
            validators: vec![ValidatorWeights {
                uid: 0,
                stake: 200_000.0,
                validator_permit: true,
                weights: vec![(1, 65_535)],
            }],
        }),
        ["task-losses", step, uid, values] => model_losses(
            state,
            step,
            uid,
            EvalOutcome::TaskLosses(values.split('/').map(losses).collect()),
        ),
        ["complete", step] => Event::StepCompleted(StepCompleted {
            step: step.parse().unwrap(),
            recorded: StepRecord::empty(CompetitionId::default()),
        }),
        ["abandon", step] => Event::StepAbandoned(StepAbandoned {
            step: step.parse().unwrap(),
            reason: "test".into(),
        }),
        ["fail", step] => Event::StepFailed(StepFailed {
            step: step.parse().unwrap(),
            reason: "no data".into(),
        }),
        ["weights"] => Event::WeightsSubmitted(WeightsSubmitted {
            uids: vec![0],
            weights: vec![65535],
            version_key: 1,
            outcome: SubmitOutcome::Included { block: 1 },
        }),
        ["prepare"] | ["prepare-hash"] => {
            let (uids, weights) = to_chain_weights(&state.weights).unwrap();
            Event::WeightsPrepared(WeightsPrepared {
                mecid: 0,
                uids,
                weights,
                version_key: 27,
                method: if words == ["prepare"] {
                    SubmitMethod::Plain
                } else {
                    SubmitMethod::CommitRevealHash { salt: vec![1, 2] }
                },
                block_head: 0,
                due: None,
            })
        }
        ["committed"] => Event::WeightsCommitted(WeightsCommitted {
            block_commit: 1,
            block_reveal_first: 2,
            block_reveal_last: 3,
        }),
        ["answer", "included", block] => {
            let prepared = &state.weights_intent.as_ref().unwrap().prepared;
            Event::WeightsSubmitted(WeightsSubmitted {
                uids: prepared.uids.clone(),
                weights: prepared.weights.clone(),
                version_key: prepared.version_key,
                outcome: SubmitOutcome::Included {
                    block: block.parse().unwrap(),
                },
            })
        }
        ["answer", "refused"] => Event::WeightsSubmitted(WeightsSubmitted {
            uids: vec![],
            weights: vec![],
            version_key: 27,
            outcome: SubmitOutcome::Refused("SettingWeightsTooFast".into()),
        }),
        ["params", variant] => Event::ParamsChanged(ParamsChanged {
            params: params(variant),
        }),
        other => panic!("unknown script line {other:?}"),
    }
}

fn outcome_name(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Applied => "applied".into(),
        Outcome::Unchanged => "unchanged".into(),
        Outcome::Scored(_) => "scored".into(),
        Outcome::WeightsChecked(_) => "weights".into(),
        Outcome::Rejected(why) => {
            let debug = format!("{why:?}");
            let variant = debug
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default();
            format!("rejected {variant}")
        }
    }
}

/// A list of uids in the order a set iterates (CPython's, for N's rules).
fn uids(text: &str) -> Vec<u16> {
    text.split(',')
        .filter(|t| !t.is_empty() && *t != "-")
        .map(|t| t.parse().unwrap())
        .collect()
}

fn check_assertion(state: &State, words: &[&str], line: &str) {
    match words {
        ["step_next", n] => assert_eq!(state.step_next, n.parse::<u64>().unwrap(), "{line}"),
        ["eval_set", competition, list] => assert_eq!(
            state
                .competitions
                .get(&CompetitionId::new(*competition))
                .map(|c| c.eval_set.iter().collect::<Vec<_>>())
                .unwrap_or_default(),
            uids(list),
            "{line}"
        ),
        ["pending", competition, list] => assert_eq!(
            state
                .competitions
                .get(&CompetitionId::new(*competition))
                .map(|c| c.pending.iter().collect::<Vec<_>>())
                .unwrap_or_default(),
            uids(list),
            "{line}"
        ),
        ["open", "none"] => assert!(state.step_open.is_none(), "{line}"),
        ["open", step] => assert_eq!(
            state.step_open.as_ref().map(|o| o.step),
            Some(step.parse().unwrap()),
            "{line}"
        ),
        ["status", hotkey, status] => {
            let found = state
                .hotkeys
                .get(*hotkey)
                .and_then(|r| r.commitment.as_ref())
                .map(|c| match c.status {
                    CommitmentStatus::Invalid(_) => "invalid",
                    CommitmentStatus::Unverified => "unverified",
                    CommitmentStatus::Verified => "verified",
                    CommitmentStatus::Rejected { .. } => "rejected",
                });
            assert_eq!(found, Some(*status), "{line}");
        }
        ["intent", "open"] => assert!(state.weights_intent.is_some(), "{line}"),
        ["intent", "none"] => assert!(state.weights_intent.is_none(), "{line}"),
        ["included", block] => assert_eq!(
            state.block_weights_included,
            Some(block.parse().unwrap()),
            "{line}"
        ),
        [
            "due",
            head,
            last_update,
            rate_limit,
            blocks_per_epoch,
            expected,
        ] => {
            let reading = DueReading {
                head: head.parse().unwrap(),
                last_update: last_update.parse().unwrap(),
                rate_limit: rate_limit.parse().unwrap(),
                blocks_per_epoch: blocks_per_epoch.parse().unwrap(),
            };
            let found = match cadence::due_block(state, &reading) {
                None => "none",
                Some(_) if cadence::is_due(state, &reading) => "yes",
                Some(_) => "no",
            };
            assert_eq!(found, *expected, "{line}");
        }
        other => panic!("unknown assertion {other:?}"),
    }
}

/// Folds `script` line by line, checking each outcome; returns every rejection variant seen.
fn check(script: &str) -> BTreeSet<String> {
    let mut state = State::new(MechanismParams::default());
    let mut seen = BTreeSet::new();
    let mut seq = 0;
    for line in script.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (command, expected) = line.split_once("=>").map_or((line, ""), |(c, e)| (c, e));
        let words: Vec<&str> = command.split_whitespace().collect();
        if let ["assert", rest @ ..] = words.as_slice() {
            check_assertion(&state, rest, line);
            continue;
        }
        let (block, words) = words.split_first().expect("a block first");
        let record = Record {
            block: block.parse().unwrap(),
            seq,
            event: event_of(&state, words),
        };
        seq += 1;
        let outcome = outcome_name(&apply(&mut state, &record));
        assert_eq!(outcome, expected.trim(), "line `{line}`");
        if let Some(variant) = outcome.strip_prefix("rejected ") {
            seen.insert(variant.to_owned());
        }
    }
    seen
}

const METAGRAPHS_AND_COMMITMENTS: &str = "
    10 seed                                  => rejected SeedingWithoutMetagraph
    10 start 0 l3                            => rejected StepWithoutMetagraph
    10 metagraph-size 65537                  => rejected MetagraphTooLarge
    10 metagraph-short                       => rejected MetagraphLength
    10 metagraph 5A 5B 5C                    => applied
    11 commit 5A 11 l3 a                     => applied
    11 commit 5A 11 l3 a                     => unchanged
    11 commit-raw 5B 11 not:a:model          => rejected CommitmentInvalid
    assert status 5B invalid
    12 verify 5B 11 plain                    => rejected VerificationNotPending
    12 verify 5Z 11 plain                    => rejected VerificationOfUnknownHotkey
    12 verify 5A 10 plain                    => rejected VerificationStale
    12 verify 5A 11 plain                    => applied
    assert status 5A verified
    assert pending l3 0
    12 verify 5A 11 plain                    => rejected VerificationNotPending
    13 reject 5A 11                          => rejected RejectionNotPending
    13 reject 5A 9                           => rejected RejectionStale
    14 commit 5C 14 s1 c                     => applied
    14 reject 5C 14                          => applied
    assert status 5C rejected
    15 params bad                            => rejected InvalidParams
    15 params successor                      => applied
    16 commit-raw 5B 16 miner:b:0123456789abcdef0123456789abcdef01234567:S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=:1 => applied
    16 verify 5B 16 plain                    => rejected SaltedHashRequired
    16 verify 5B 16 salted                   => applied
    17 seed                                  => applied
";

const STEPS: &str = "
    10 metagraph 5A 5B 5C 5D                 => applied
    11 commit 5A 11 l3 a                     => applied
    11 verify 5A 11 plain                    => applied
    11 commit 5B 12 l3 b                     => applied
    11 verify 5B 12 plain                    => applied
    11 commit 5C 13 s1 c                     => applied
    11 verify 5C 13 plain                    => applied
    20 batch 0 2                             => rejected NoStepOpen
    20 start 1 l3                            => rejected StepOutOfOrder
    20 start 0 s1                            => rejected WrongCompetition
    20 start 0 l3                            => applied
    assert open 0
    assert eval_set l3 0,1
    20 start 0 l3                            => rejected StepAlreadyOpen
    20 losses 0 0 2.0,2.0                    => rejected LossesBeforeBatch
    20 batch 1 2                             => rejected OtherStepOpen
    20 batch 0 2                             => applied
    20 batch 0 2                             => rejected SecondBatch
    21 losses 0 3 2.0,2.0                    => rejected UidNotInStep
    21 losses 0 0 5Z 2.0,2.0                 => rejected HotkeyMismatch
    21 losses 0 0 5A other-hash 2.0,2.0      => rejected ModelHashMismatch
    21 losses 0 0 2.0                        => rejected LossCount
    21 losses 0 0 2.0,2.5                    => applied
    21 losses 0 0 2.0,2.5                    => rejected SecondLosses
    21 eval-failed 0 1                       => applied
    22 complete 1                            => rejected OtherStepOpen
    22 complete 0                            => scored
    assert step_next 1
    assert open none
    22 weights                               => weights
    23 abandon 5                             => rejected AbandonNotCurrent
    23 fail 5                                => rejected FailureNotCurrent
    23 start 1 s1                            => applied
    23 fail 1                                => applied
    assert step_next 1
    assert open none
    24 fail 1                                => applied
    assert step_next 1
    24 start 1 s1                            => applied
    24 abandon 1                             => applied
    assert step_next 2
    25 params later                          => applied
    25 start 2 l3                            => rejected NoCompetitionScheduled
";

// A duplicate by hash: the later commit has no model and cannot be given losses.
const DUPLICATES: &str = "
    10 metagraph 5A 5B                       => applied
    11 commit 5A 11 l3 same                  => applied
    11 verify 5A 11 plain                    => applied
    12 commit 5B 12 l3 same                  => applied
    12 verify 5B 12 plain                    => applied
    20 start 0 l3                            => applied
    20 batch 0 1                             => applied
    21 losses 0 1 5B none 2.0                => rejected UidHasNoModel
    21 losses 0 0 2.0                        => applied
    22 complete 0                            => scored
    assert eval_set l3 0,1
";

// N merges pending uids before it pulls data: a step that fails for want of data before it
// started has merged them, and the same competition runs next.
const FAILED_BEFORE_START: &str = "
    10 metagraph 5A                          => applied
    11 commit 5A 11 l3 a                     => applied
    11 verify 5A 11 plain                    => applied
    assert pending l3 0
    20 fail 0                                => applied
    assert pending l3 -
    assert eval_set l3 0
    assert step_next 0
    21 start 0 l3                            => applied
";

// A hotkey commits again while its previous model downloads: under N's rules the download's
// verification is tracked (the uid plays with that model) until the newer one is verified; a
// superseded commitment that fails is forgotten. The legacy rules refuse it as stale.
const SUPERSEDED: &str = "
    10 metagraph 5A                          => applied
    11 commit 5A 11 l3 a                     => applied
    12 commit 5A 12 l3 b                     => applied
    13 verify 5A 11 plain                    => applied
    assert pending l3 0
    assert status 5A unverified
    13 verify 5A 11 plain                    => rejected VerificationStale
    14 start 0 l3                            => applied
    14 batch 0 1                             => applied
    14 losses 0 0 2.0                        => applied
    15 complete 0                            => scored
    16 verify 5A 12 plain                    => applied
    assert status 5A verified
    17 commit 5A 17 l3 c                     => applied
    17 reject 5A 12                          => rejected RejectionStale
    18 commit 5A 18 l3 d                     => applied
    19 reject 5A 17                          => applied
    19 verify 5A 17 plain                    => rejected VerificationStale
    20 params legacy                         => applied
    21 commit 5A 21 l3 e                     => applied
    22 verify 5A 18 plain                    => rejected VerificationStale
";

/// Postmortem (9e4eeb7): a download that verified after the miner committed again was refused
/// as stale, so the uid played with no model where N plays it with the verified one.
#[test]
fn a_superseded_download_is_tracked_under_ns_rules() {
    check(SUPERSEDED);
}

/// Weights: the intent, a hash commit, the chain's answer; one intent at a time.
const WEIGHTS: &str = "
    10 metagraph 5A 5B 5C                    => applied
    11 committed                             => rejected CommitWithoutIntent
    11 prepare                               => weights
    assert intent open
    12 prepare                               => rejected WeightsIntentOpen
    12 committed                             => rejected CommitWithoutIntent
    13 answer included 13                    => weights
    assert intent none
    assert included 13
    14 prepare-hash                          => weights
    15 committed                             => applied
    15 committed                             => rejected CommitWithoutIntent
    20 answer refused                        => weights
    assert intent none
    assert included 13
";

#[test]
fn weights_intents_commits_and_answers() {
    check(WEIGHTS);
}

/// The successor's loop (F v3.1.0): a commitment to a competition that was not running at its
/// commit block is invalid; downloads wait for the competition's delay and skip competitions
/// not running; a decided commitment is downloaded again only when F's retry rule asks; a
/// step's data is its competition's tasks, its losses one list per loaded task; and a
/// competition runs once per sync block (360 blocks from 3,138,611: 5,199,971 to 5,200,330).
const SUCCESSOR: &str = "
    5200000 params f                         => applied
    5200000 metagraph 5A 5B 5C 5D            => applied
    5200000 seed                             => rejected SeedingUnderSuccessor
    5200000 commit 5A 5100000 4 old          => rejected CommitmentInvalid
    5200000 commit 5B 5199800 4 b            => applied
    5200000 verify 5B 5199800 salted         => rejected DownloadTooEarly
    5200000 commit 5C 5000000 3 c            => applied
    5200000 verify 5C 5000000 salted         => rejected DownloadOfInactiveCompetition
    5200300 verify 5B 5199800 salted         => applied
    5200300 commit 5D 5199000 4 d            => applied
    5200300 verify 5D 5199000 salted         => applied
    5200300 verify 5D 5199000 salted         => rejected ResyncUnjustified
    assert pending 4 1,3
    5200300 start 0 4                        => applied
    5200300 task-losses 0 1 2.0              => rejected LossesBeforeBatch
    5200300 tasks 0 CODEFORCES_COTS:2 SYNTHETIC_1_SFT:2 => rejected TasksMismatch
    5200300 tasks 0 SYNTHETIC_1_SFT:2 CODEFORCES_COTS:- => applied
    5200300 tasks 0 SYNTHETIC_1_SFT:2 CODEFORCES_COTS:- => rejected SecondBatch
    5200300 losses 0 1 2.0,2.0               => rejected LossesForm
    5200300 task-losses 0 1 2.0              => rejected TaskLossCount
    5200300 task-losses 0 1 2.0,2.5          => applied
    5200300 task-losses 0 3 1.5,1.5          => applied
    5200300 complete 0                       => scored
    assert eval_set 4 1,3
    5200320 start 1 4                        => rejected SyncBlockAlreadyRun
    5200331 start 1 4                        => applied
    5200331 abandon 1                        => applied
    5200400 params n                         => applied
    5200400 start 2 l3                       => applied
    5200400 tasks 2 SYNTHETIC_1_SFT:1        => rejected TasksWithoutSuccessorRules
    5200400 validators                       => rejected ValidatorWeightsWithoutSuccessorRules
";

/// The successor's update loop downloads nothing new while its cap of models wait (here 1);
/// a repository missing before download stays pending, as F downloads it again.
const SUCCESSOR_CAP: &str = "
    5200000 params f-cap1                    => applied
    5200000 metagraph 5A 5B                  => applied
    5200000 commit 5A 5199000 4 a            => applied
    5200000 commit 5B 5199000 4 b            => applied
    5200000 verify 5A 5199000 salted         => applied
    5200000 verify 5B 5199000 salted         => rejected DownloadOverCap
    5200000 reject-missing 5B 5199000        => rejected DownloadOverCap
    5200000 params f                         => applied
    5200000 reject-missing 5B 5199000        => applied
    assert status 5B unverified
    5200000 verify 5B 5199000 salted         => applied
    assert pending 4 0,1
";

/// When weights are due, under each cadence, from what the weight setter read of the chain
/// (head, `LastUpdate`, the rate limit, `--blocks_per_epoch`): the judgement the setter makes
/// before it journals an intent and replay makes again of every `WeightsPrepared`.
const CADENCE: &str = "
    10 metagraph 5A 5B                       => applied
    11 commit 5A 11 l3 a                     => applied
    11 verify 5A 11 plain                    => applied
    assert due 50 0 10 100 none
    60 start 0 l3                            => applied
    60 batch 0 1                             => applied
    61 losses 0 0 2.0                        => applied
    62 complete 0                            => scored
    assert due 70 0 10 100 none
    120 fail 1                               => applied
    assert due 130 0 10 100 yes
    assert due 130 125 10 100 no
    assert due 135 125 10 100 yes
    135 prepare                              => weights
    assert due 500 0 10 100 none
    136 answer included 136                  => weights
    assert due 500 0 10 100 none
    200 params chain                         => applied
    assert due 200 0 10 100 no
    assert due 236 0 10 100 yes
    assert due 300 250 10 100 no
    assert due 350 250 10 100 yes
    assert due 350 250 200 100 no
    assert due 450 250 200 100 yes
    assert due 100 0 10 100 yes
";

#[test]
fn weights_are_due_by_each_cadence() {
    check(CADENCE);
}

#[test]
fn metagraphs_and_commitments() {
    check(METAGRAPHS_AND_COMMITMENTS);
}

#[test]
fn steps() {
    check(STEPS);
}

#[test]
fn duplicates() {
    check(DUPLICATES);
}

#[test]
fn a_step_failed_before_it_started_merges_pending_and_does_not_advance() {
    check(FAILED_BEFORE_START);
}

#[test]
fn the_successors_loop() {
    check(SUCCESSOR);
    check(SUCCESSOR_CAP);
}

#[test]
fn every_rejection_variant_has_a_line() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/machine/rejection.rs"),
    )
    .unwrap();
    // Variants are the enum's lines of the form `    Name {` or `    Name(` or `    Name,`.
    let variants: BTreeSet<String> = source
        .lines()
        .filter(|l| l.starts_with("    ") && !l.starts_with("     "))
        .map(str::trim)
        .filter(|l| l.chars().next().is_some_and(char::is_uppercase))
        .filter_map(|l| l.split(|c: char| !c.is_alphanumeric()).next())
        .map(str::to_owned)
        .collect();
    assert!(variants.len() >= 25, "{variants:?}");
    let mut seen = BTreeSet::new();
    for script in [
        METAGRAPHS_AND_COMMITMENTS,
        STEPS,
        DUPLICATES,
        FAILED_BEFORE_START,
        WEIGHTS,
        SUCCESSOR,
        SUCCESSOR_CAP,
    ] {
        seen.extend(check(script));
    }
    let missing: Vec<&String> = variants.difference(&seen).collect();
    assert!(missing.is_empty(), "rejections without a line: {missing:?}");
}
