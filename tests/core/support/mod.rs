//! Shared by the property tests: random journals built from a script of operations; and, in
//! [`runs`], the recorded whole runs of the original's and the successor's own code.

#![allow(dead_code)]

pub mod runs;

use proptest::prelude::*;
use validator::machine::event::{RejectionCode, StepAbandoned};
use validator::machine::model_id::HashKind;
use validator::machine::params::{EpsilonRule, WeightsMode};
use validator::machine::{Event, MechanismParams};
use validator::synth::{Scenario, SplitMix64, model_string};

/// One operation of a random journal.
#[derive(Debug, Clone)]
pub enum Op {
    /// Observe the metagraph, grown by `grow` uids, with uid `rereg` given a new hotkey.
    Metagraph { grow: u8, rereg: Option<u8> },
    /// Miner `miner` commits (kind 0: l3, 1: s1, 2: m1, 3: garbage), then maybe is verified.
    Commit {
        miner: u8,
        kind: u8,
        verify: bool,
        salted: bool,
    },
    /// The hotkey's commitment fails verification.
    Reject { miner: u8 },
    /// A full step with losses from `seed`; `fail` makes some evaluations fail.
    Step { seed: u64, samples: u8, fail: u8 },
    /// A step that starts and is abandoned.
    Abandon,
    /// New parameters.
    Params { variant: u8 },
    /// Submit weights.
    Submit,
}

pub fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![4 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8)];
    prop_oneof![
        1 => (0u8..3, proptest::option::of(0u8..10)).prop_map(|(grow, rereg)| Op::Metagraph { grow, rereg }),
        6 => (0u8..9, kind, proptest::bool::weighted(0.85), any::<bool>())
            .prop_map(|(miner, kind, verify, salted)| Op::Commit { miner, kind, verify, salted }),
        1 => (0u8..9).prop_map(|miner| Op::Reject { miner }),
        6 => (any::<u64>(), 1u8..6, any::<u8>()).prop_map(|(seed, samples, fail)| Op::Step { seed, samples, fail }),
        1 => (any::<u64>(), 0u8..1, any::<u8>()).prop_map(|(seed, samples, fail)| Op::Step { seed, samples, fail }),
        1 => Just(Op::Abandon),
        1 => (0u8..4).prop_map(|variant| Op::Params { variant }),
        2 => Just(Op::Submit),
    ]
}

pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// A loss drawn from `random`: dyadic (k/64 in [1.5, 3.5)) so JSON shows it exactly, with an
/// occasional failed sample.
pub fn loss(random: &mut SplitMix64) -> f32 {
    let roll = random.next_u64() % 64;
    if roll == 0 {
        f32::INFINITY
    } else {
        1.5 + f32::from(u8::try_from(random.next_u64() % 128).unwrap()) / 64.0
    }
}

fn view(hotkeys: &[String]) -> Vec<&str> {
    hotkeys.iter().map(String::as_str).collect()
}

/// Builds a journal from a script. Blocks advance by 7 per operation.
pub fn build(script: &[Op]) -> Scenario {
    let mut scenario = Scenario::new();
    let mut hotkeys: Vec<String> = (0..6).map(|i| format!("5Hk{i}")).collect();
    let mut next_hotkey = 9;
    let mut block = 10u64;
    scenario.metagraph(block, &view(&hotkeys), &[]);
    for op in script {
        block += 7;
        match op {
            Op::Metagraph { grow, rereg } => {
                for _ in 0..*grow {
                    hotkeys.push(format!("5Hk{next_hotkey}"));
                    next_hotkey += 1;
                }
                if let Some(uid) = rereg {
                    let uid = usize::from(*uid) % hotkeys.len();
                    hotkeys[uid] = format!("5Hk{next_hotkey}");
                    next_hotkey += 1;
                }
                scenario.metagraph(block, &view(&hotkeys), &[]);
            }
            Op::Commit {
                miner,
                kind,
                verify,
                salted,
            } => {
                let hotkey = format!("5Hk{miner}");
                let competition = ["l3", "s1", "None", ""][usize::from(*kind)];
                let text = if competition.is_empty() {
                    "not:a:model".to_owned()
                } else {
                    // Label by block so each commitment is a distinct model, except that
                    // miners 0 and 1 share one (a copy).
                    let label = if *miner < 2 {
                        "shared".to_owned()
                    } else {
                        format!("m{miner}-{block}")
                    };
                    model_string("ns", &label, competition)
                };
                scenario.commit(block, &hotkey, block - 1, &text);
                if *verify {
                    let kind = if *salted {
                        HashKind::Salted
                    } else {
                        HashKind::Plain
                    };
                    scenario.verify(block, &hotkey, kind);
                }
            }
            Op::Reject { miner } => {
                scenario.reject(
                    block,
                    &format!("5Hk{miner}"),
                    RejectionCode::HashMismatch,
                    "mismatch",
                );
            }
            Op::Step {
                seed,
                samples,
                fail,
            } => {
                let mut random = SplitMix64::new(*seed);
                let samples = usize::from(*samples);
                scenario.run_step(block, samples, |uid| {
                    if (u32::from(*fail) >> (uid % 8)) & 1 == 1 && *fail > 200 {
                        None
                    } else {
                        Some((0..samples).map(|_| loss(&mut random)).collect())
                    }
                });
            }
            Op::Abandon => {
                scenario.start_step(block);
                let step = scenario.state().step_next;
                scenario.push(
                    block,
                    Event::StepAbandoned(StepAbandoned {
                        step,
                        reason: "timeout".into(),
                    }),
                );
            }
            Op::Params { variant } => {
                let mut params = MechanismParams::default();
                match variant {
                    0 => {
                        params.epsilon = EpsilonRule::LinearDecay {
                            start: 0.05,
                            end: 0.01,
                            decay_blocks: 50,
                        }
                    }
                    1 => {
                        params.weights_mode = WeightsMode::WinnerTakesAll {
                            min_weight_threshold: 0.18,
                        }
                    }
                    2 => {
                        params.sample_min = 2;
                        params.eval_delay_blocks = 10;
                    }
                    _ => params.temperature = 0.0, // refused
                }
                scenario.params(block, params);
            }
            Op::Submit => {
                scenario.submit_weights(block);
            }
        }
    }
    scenario
}
