//! Mechanism parameters: every constant that decides weights, as data.
//!
//! The defaults are the original validator's (N, v0.2.7) constants. A change is journaled as a
//! `ParamsChanged` event, so a replay applies it at the same point as the live validator did.

use serde::{Deserialize, Serialize};

use super::numbers::exact_f64;

/// The identifier of a competition: N's short string (`l3`, `s1`, legacy `m1`) or the
/// successor's integer, written in decimal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CompetitionId(pub String);

impl CompetitionId {
    /// Builds an id from anything string-like.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as written on chain.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CompetitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How much an earlier commit's loss is discounted in a head-to-head comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpsilonRule {
    /// N: a constant (0.01).
    Fixed(f64),
    /// The successor's `LinearDecay`: `start` at the commit block, falling linearly to `end`
    /// over `decay_blocks` blocks.
    LinearDecay {
        /// Epsilon at the commit block.
        start: f64,
        /// Epsilon after `decay_blocks` blocks and forever after.
        end: f64,
        /// Length of the decay, in blocks.
        decay_blocks: u64,
    },
}

impl EpsilonRule {
    /// Epsilon for a model committed at `block_commit`, judged at `block_current`.
    ///
    /// The arithmetic is the successor's, in the same order, so the result is bit-identical
    /// to Python's: `start - min(max(cur - mb, 0) / D, 1) * (start - end)`.
    pub fn epsilon(&self, block_current: u64, block_commit: u64) -> f64 {
        match *self {
            EpsilonRule::Fixed(epsilon) => epsilon,
            EpsilonRule::LinearDecay {
                start,
                end,
                decay_blocks,
            } => {
                let block_difference = block_current.saturating_sub(block_commit);
                let block_adjustment =
                    (exact_f64(block_difference) / exact_f64(decay_blocks)).min(1.0);
                start - block_adjustment * (start - end)
            }
        }
    }
}

/// One competition in a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Competition {
    /// The competition id miners commit to.
    pub id: CompetitionId,
    /// Share of the subnet's weight (N: l3 0.6, s1 0.4).
    pub reward_percentage: f64,
    /// Largest parameter count accepted (N: 8·1024³ for l3, 2·1024³ for s1).
    pub max_parameters: u64,
    /// Largest Hugging Face repository accepted, summed over every file, in bytes.
    pub max_repo_bytes: u64,
    /// The one architecture accepted (`LlamaForCausalLM`, `StableLmForCausalLM`).
    pub architecture: String,
    /// The fixed tokenizer every model is evaluated with, if any.
    pub tokenizer: Option<String>,
}

/// The competitions active from `block_start` on, until the next entry starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    /// First block at which this entry applies.
    pub block_start: u64,
    /// The competitions run round-robin, one per step, in this order.
    pub competitions: Vec<Competition>,
}

/// How a step's win rates become weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsMode {
    /// N: `softmax(win_rate / temperature)`, scaled by `n_competitions × reward_percentage`,
    /// folded into one moving average over every uid.
    Softmax,
    /// The successor: every uid with the best win rate gets an equal share; one moving average
    /// per competition; shares under `min_weight_threshold` are dropped before combining.
    WinnerTakesAll {
        /// The successor's 0.18.
        min_weight_threshold: f64,
    },
}

/// How a commitment string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelIdFormat {
    /// N: `ns:name:commit:hash:comp`, comp a string (missing or `None` means `m1`); the hash
    /// may be the plain directory hash or the hotkey-salted one.
    Original,
    /// The successor: `ns:name:commit:secure_hash:comp_int`, the salted hash mandatory; a
    /// 4-token string is legacy, competition 0, plain or salted hash.
    Successor,
}

/// Every number and rule that decides weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MechanismParams {
    /// Loss discount for the earlier commit.
    pub epsilon: EpsilonRule,
    /// Softmax temperature (N: 0.08).
    pub temperature: f64,
    /// Weight of the old value in the moving average (N: 0.9).
    pub alpha: f64,
    /// How many uids stay in a competition's eval set after a step (N: 5).
    pub sample_min: u32,
    /// Competition schedule by block, sorted by `block_start`.
    pub schedule: Vec<ScheduleEntry>,
    /// How win rates become weights.
    pub weights_mode: WeightsMode,
    /// Blocks a commitment must age before it is evaluated (N: 0; the successor: 460).
    pub eval_delay_blocks: u64,
    /// How commitments are parsed.
    pub model_id_format: ModelIdFormat,
    /// First block of the subnet, the origin of `nearest_tempo` (N: 2,225,782).
    pub subnet_start_block: u64,
    /// How the fold follows the original's loop where its code, not its formulas, decides.
    /// Added in schema 4, last so that older encodings upgrade by appending it; JSON without it
    /// reads as [`LoopRules::legacy`], what journals of schemas 1 to 3 were folded with.
    #[serde(default = "LoopRules::legacy")]
    pub rules: LoopRules,
}

/// The order a step visits its eval set in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOrder {
    /// CPython's `list(set)` over the set's history (N's `list(self.uids_to_eval[c])`).
    Cpython,
    /// Ascending uid: the order journals of schemas 1 to 3 were folded in.
    Ascending,
}

/// The arithmetic of N's softmax weight update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFloat {
    /// float32, as N's torch tensors compute it (see `machine::torch_f32`).
    TorchF32,
    /// f64: the arithmetic journals of schemas 1 to 3 were folded with.
    F64,
}

/// When weights are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsCadence {
    /// N's loop: weights are due after the first step (scored, empty or failed) that started
    /// at least `blocks_per_epoch` blocks after the step that made them due last (after the
    /// first metagraph, at first). The fold knows it, so replay says whether a submission was
    /// due; the weight setter waits for it.
    AfterStep {
        /// N's `--blocks_per_epoch` (100).
        blocks_per_epoch: u64,
    },
    /// The weight setter's own clock, `blocks_per_epoch` past the last inclusion on chain,
    /// whatever the steps do (schemas 1 to 3; the fold takes no part).
    Chain,
}

/// The parts of a mechanism that live in the original's loop rather than in its scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopRules {
    /// The order participants are visited in, which decides duplicate holders on equal commit
    /// blocks and ties at the eval-set cut.
    pub set_order: SetOrder,
    /// Whether a hotkey that registers again with a model already verified is queued for
    /// evaluation. N's model tracker is never pruned, so N does not queue it until the hotkey
    /// commits again.
    pub requeue_registered: bool,
    /// Whether the weight vector is the metagraph's size, all zeros, from the first metagraph
    /// on (N's `torch.zeros_like(metagraph.S)` at start-up), rather than empty until a step.
    pub weights_sized_at_start: bool,
    /// The arithmetic of the softmax weight update and of consensus seeding.
    pub weights_float: WeightsFloat,
    /// Whether a model verified after its hotkey committed again is tracked until the newer
    /// commitment is verified, as N's tracker takes what its download verified; otherwise the
    /// verification is refused as stale and the uid plays without a model meanwhile.
    pub track_superseded: bool,
    /// When weights are due.
    pub weights_cadence: WeightsCadence,
    /// The successor's loop (F v3.1.0), where its code departs from N's: one score per uid,
    /// one evaluation per competition per sync block, the float32 tracker, the evaluation
    /// history and forced re-syncs. `None` for N. Added in schema 9, last, so that older
    /// encodings upgrade by appending `None`.
    #[serde(default)]
    pub successor: Option<SuccessorRules>,
}

/// How a successor task is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalMethod {
    /// The mean cross-entropy of a reference continuation after a chat-templated context.
    ReferenceLoss,
    /// The mean cross-entropy of a text (F's TEXT_LOSS).
    TextLoss,
    /// Generated answers to multiple-choice questions: needs generation.
    MultipleChoice,
    /// Generated answers checked against instruction rules: needs generation.
    IfEval,
}

impl EvalMethod {
    /// Whether the task generates text, which this validator does not do yet.
    pub fn needs_generation(self) -> bool {
        matches!(self, EvalMethod::MultipleChoice | EvalMethod::IfEval)
    }
}

/// One evaluation task of a successor competition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTask {
    /// F's task name (`SYNTHETIC_1_SFT`), which the journal's batches name.
    pub name: String,
    /// How it is scored.
    pub method: EvalMethod,
    /// F's dataset id (`SYNTHETIC_1_SFT`, `CODEFORCES_COTS`, ...).
    pub dataset: String,
    /// Its share of the score (renormalised over the tasks that loaded).
    pub weight: f64,
    /// F's normalization: `none`, or `inverse_exponential:CEILING`.
    pub normalization: String,
}

/// What a successor competition adds to [`Competition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessorCompetition {
    /// The competition.
    pub id: CompetitionId,
    /// Fewest parameters accepted (tied weights counted once).
    pub parameters_min: u64,
    /// Every class F lists, in its code's order (only some can pass its norm check).
    pub architectures: Vec<String>,
    /// The competition's epsilon (F's is per competition).
    pub epsilon: EpsilonRule,
    /// Blocks from the commit block to the update loop's block before a download.
    pub eval_delay_blocks: u64,
    /// The tasks, in F's order.
    pub tasks: Vec<EvalTask>,
}

/// The successor's loop, as its code runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessorRules {
    /// Blocks per sync block (360).
    pub sync_cadence_blocks: u64,
    /// The first sync block (F's genesis, 3,138,611).
    pub sync_genesis_block: u64,
    /// Evaluation results kept per hotkey and competition (taoverse's 3).
    pub eval_history_len: u32,
    /// Models pending or in an eval set before the update loop waits (3·3+7 = 16).
    pub updated_models_limit: u32,
    /// Stake (in TAO, as bittensor's float32 `S`) from which a permitted validator's weights
    /// pull miners into evaluation (`WEIGHT_SYNC_VALI_MIN_STAKE`, 100,000).
    pub top_stake_min: f64,
    /// Share of such a validator's weights that makes a miner a top miner (0.01).
    pub top_weight_share: f64,
    /// Blocks after its last evaluation before a top miner is downloaded again
    /// (`model_retry_cadence`, 1,200).
    pub top_retry_blocks: u64,
    /// Per-competition constants beyond [`Competition`].
    pub competitions: Vec<SuccessorCompetition>,
}

impl SuccessorRules {
    /// The successor's data for a competition.
    pub fn competition(&self, id: &CompetitionId) -> Option<&SuccessorCompetition> {
        self.competitions.iter().find(|c| &c.id == id)
    }
}

impl LoopRules {
    /// N's loop, as its code does it.
    pub fn n() -> Self {
        Self {
            set_order: SetOrder::Cpython,
            requeue_registered: false,
            weights_sized_at_start: true,
            weights_float: WeightsFloat::TorchF32,
            track_superseded: true,
            weights_cadence: WeightsCadence::AfterStep {
                blocks_per_epoch: N_BLOCKS_PER_EPOCH,
            },
            successor: None,
        }
    }

    /// The successor's loop (F v3.1.0): N's in CPython set order, float32, start-up weights of
    /// the metagraph's size (F's unthresholded subnet weights of an empty tracker are zeros)
    /// and a model tracker that keeps what its download saw; weights on the weight thread's
    /// clock; and F's own rules.
    pub fn f() -> Self {
        Self {
            weights_cadence: WeightsCadence::Chain,
            successor: Some(successor_rules()),
            ..Self::n()
        }
    }

    /// What the fold did before schema 4; older journals replay with it, bit for bit.
    pub fn legacy() -> Self {
        Self {
            set_order: SetOrder::Ascending,
            requeue_registered: true,
            weights_sized_at_start: false,
            weights_float: WeightsFloat::F64,
            track_superseded: false,
            weights_cadence: WeightsCadence::Chain,
            successor: None,
        }
    }
}

/// N's default `--blocks_per_epoch`.
pub const N_BLOCKS_PER_EPOCH: u64 = 100;

/// N's 15 GiB cap on a repository.
pub const N_MAX_REPO_BYTES: u64 = 15 * 1024 * 1024 * 1024;

impl Default for MechanismParams {
    fn default() -> Self {
        Self {
            epsilon: EpsilonRule::Fixed(0.01),
            temperature: 0.08,
            alpha: 0.9,
            sample_min: 5,
            schedule: vec![ScheduleEntry {
                block_start: 0,
                competitions: vec![
                    Competition {
                        id: CompetitionId::new("l3"),
                        reward_percentage: 0.6,
                        max_parameters: 8 * 1024 * 1024 * 1024,
                        max_repo_bytes: N_MAX_REPO_BYTES,
                        architecture: "LlamaForCausalLM".into(),
                        tokenizer: Some("NousResearch/Meta-Llama-3-8B-Instruct".into()),
                    },
                    Competition {
                        id: CompetitionId::new("s1"),
                        reward_percentage: 0.4,
                        max_parameters: 2 * 1024 * 1024 * 1024,
                        max_repo_bytes: N_MAX_REPO_BYTES,
                        architecture: "StableLmForCausalLM".into(),
                        tokenizer: Some("stabilityai/stablelm-2-zephyr-1_6b".into()),
                    },
                ],
            }],
            weights_mode: WeightsMode::Softmax,
            eval_delay_blocks: 0,
            model_id_format: ModelIdFormat::Original,
            subnet_start_block: 2_225_782,
            rules: LoopRules::n(),
        }
    }
}

impl MechanismParams {
    /// The parameters a journal starts from before any `ParamsChanged`: N's, with the loop rules
    /// that schemas 1 to 3 folded with. Journals of those schemas journaled parameters only when
    /// they differed from these, so they replay unchanged; a new journal under N's rules
    /// journals them as its first record.
    pub fn genesis() -> Self {
        Self {
            rules: LoopRules::legacy(),
            ..Self::default()
        }
    }

    /// The successor's (F v3.1.0's) mechanism: its whole schedule (B7_MULTI_CHOICE and
    /// INSTRUCT_8B from block 0, INSTRUCT_8B alone from 4,675,163, DISTILLED_REASONING_3B
    /// alone from 5,158,632), winner-takes-all weights with the 0.18 threshold, an eval set of
    /// 3, its ModelId format and its loop ([`LoopRules::f`]). Epsilon and the evaluation delay
    /// are per competition in F ([`SuccessorCompetition`]); the top-level ones are
    /// competition 4's.
    pub fn successor() -> Self {
        let gib = 1024 * 1024 * 1024;
        let competition = |id: &str, share: f64, max_parameters: u64, gib_max: u64| Competition {
            id: CompetitionId::new(id),
            reward_percentage: share,
            max_parameters,
            max_repo_bytes: gib_max.saturating_mul(gib),
            architecture: "LlamaForCausalLM".into(),
            tokenizer: (id != "3").then(|| SUCCESSOR_TOKENIZER.to_owned()),
        };
        Self {
            epsilon: SUCCESSOR_EPSILON_4,
            temperature: 0.08,
            alpha: 0.9,
            sample_min: 3,
            schedule: vec![
                ScheduleEntry {
                    block_start: 0,
                    competitions: vec![
                        competition("2", 0.75, 6_900_000_000, 15),
                        competition("3", 0.25, 8_100_000_000, 20),
                    ],
                },
                ScheduleEntry {
                    block_start: SUCCESSOR_SUNSET_B7_BLOCK,
                    competitions: vec![competition("3", 1.0, 8_100_000_000, 20)],
                },
                ScheduleEntry {
                    block_start: SUCCESSOR_SUNSET_INSTRUCT_8B_BLOCK,
                    competitions: vec![competition("4", 1.0, 3_400_000_000, 15)],
                },
            ],
            weights_mode: WeightsMode::WinnerTakesAll {
                min_weight_threshold: 0.18,
            },
            eval_delay_blocks: 460,
            model_id_format: ModelIdFormat::Successor,
            subnet_start_block: SUCCESSOR_GENESIS_BLOCK,
            rules: LoopRules::f(),
        }
    }
}

/// F's `GENESIS_BLOCK`, the origin of its sync blocks.
pub const SUCCESSOR_GENESIS_BLOCK: u64 = 3_138_611;
/// F's `SUNSET_B7_BLOCK`.
pub const SUCCESSOR_SUNSET_B7_BLOCK: u64 = 4_675_163;
/// F's `SUNSET_INSTRUCT_8B_BLOCK`, where DISTILLED_REASONING_3B starts.
pub const SUCCESSOR_SUNSET_INSTRUCT_8B_BLOCK: u64 = 5_158_632;
/// The tokenizer F's competitions 2 and 4 evaluate with (cl100k_base as a tokenizers file).
pub const SUCCESSOR_TOKENIZER: &str = "Xenova/gpt-4";
/// Competition 4's `LinearDecay(0.05, 0.01, 7200 * 3)`.
const SUCCESSOR_EPSILON_4: EpsilonRule = EpsilonRule::LinearDecay {
    start: 0.05,
    end: 0.01,
    decay_blocks: 21_600,
};

/// Every class F's competitions list, in its code's order.
const SUCCESSOR_ARCHITECTURES: [&str; 9] = [
    "BartForCausalLM",
    "FalconForCausalLM",
    "Gemma2ForCausalLM",
    "GemmaForCausalLM",
    "GPTNeoXForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Phi3ForCausalLM",
    "PhiForCausalLM",
];

fn task(name: &str, method: EvalMethod, weight: f64, normalization: &str) -> EvalTask {
    EvalTask {
        name: name.into(),
        method,
        dataset: name.into(),
        weight,
        normalization: normalization.into(),
    }
}

/// The successor's loop constants and its competitions' tasks (F:constants/__init__.py).
fn successor_rules() -> SuccessorRules {
    // Competitions 2 and 3 score the same four tasks, two of which generate text.
    let retired_tasks = || {
        vec![
            task("SYNTHETIC_MMLU", EvalMethod::MultipleChoice, 0.75, "none"),
            task(
                "WORD_SORTING",
                EvalMethod::ReferenceLoss,
                0.05,
                "inverse_exponential:40",
            ),
            task(
                "FINEWEB",
                EvalMethod::TextLoss,
                0.1,
                "inverse_exponential:20",
            ),
            task("IF_EVAL_V2", EvalMethod::IfEval, 0.1, "none"),
        ]
    };
    let architectures = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    SuccessorRules {
        sync_cadence_blocks: 360,
        sync_genesis_block: SUCCESSOR_GENESIS_BLOCK,
        eval_history_len: 3,
        updated_models_limit: 16,
        top_stake_min: 100_000.0,
        top_weight_share: 0.01,
        top_retry_blocks: 1_200,
        competitions: vec![
            SuccessorCompetition {
                id: CompetitionId::new("2"),
                parameters_min: 0,
                architectures: architectures(&[
                    "MistralForCausalLM",
                    "LlamaForCausalLM",
                    "BartForCausalLM",
                    "FalconForCausalLM",
                    "GPTNeoXForCausalLM",
                ]),
                epsilon: EpsilonRule::LinearDecay {
                    start: 0.05,
                    end: 0.01,
                    decay_blocks: 36_000,
                },
                eval_delay_blocks: 460,
                tasks: retired_tasks(),
            },
            SuccessorCompetition {
                id: CompetitionId::new("3"),
                parameters_min: 0,
                architectures: architectures(&SUCCESSOR_ARCHITECTURES),
                epsilon: EpsilonRule::LinearDecay {
                    start: 0.05,
                    end: 0.01,
                    decay_blocks: 7_200,
                },
                eval_delay_blocks: 1_600,
                tasks: retired_tasks(),
            },
            SuccessorCompetition {
                id: CompetitionId::new("4"),
                parameters_min: 3_200_000_000,
                architectures: architectures(&SUCCESSOR_ARCHITECTURES),
                epsilon: SUCCESSOR_EPSILON_4,
                eval_delay_blocks: 460,
                tasks: vec![
                    task("SYNTHETIC_1_SFT", EvalMethod::ReferenceLoss, 0.5, "none"),
                    task("CODEFORCES_COTS", EvalMethod::ReferenceLoss, 0.5, "none"),
                ],
            },
        ],
    }
}

/// Why a parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mechanism parameters: {0}")]
pub struct InvalidParams(pub String);

impl MechanismParams {
    /// The competitions active at `block`: the last schedule entry that has started.
    pub fn schedule_at(&self, block: u64) -> &[Competition] {
        self.schedule
            .iter()
            .rev()
            .find(|entry| entry.block_start <= block)
            .map_or(&[], |entry| entry.competitions.as_slice())
    }

    /// The competition a step runs: round-robin over the active schedule by step number.
    pub fn competition_for_step(&self, block: u64, step: u64) -> Option<&Competition> {
        let active = self.schedule_at(block);
        let count = u64::try_from(active.len())
            .ok()
            .filter(|count| *count > 0)?;
        let index = usize::try_from(step.checked_rem(count)?).ok()?;
        active.get(index)
    }

    /// Looks a competition up in the schedule active at `block`.
    pub fn competition_at(&self, block: u64, id: &CompetitionId) -> Option<&Competition> {
        self.schedule_at(block).iter().find(|c| &c.id == id)
    }

    /// A competition by id, whatever the block: the newest schedule entry that lists it (the
    /// limits a tool applies when it is told a competition but no block).
    pub fn competition_by_id(&self, id: &CompetitionId) -> Option<&Competition> {
        self.schedule
            .iter()
            .rev()
            .flat_map(|entry| &entry.competitions)
            .find(|c| &c.id == id)
    }

    /// The newest competition that accepts `architecture` (a transformers class name).
    pub fn competition_by_architecture(&self, architecture: &str) -> Option<&Competition> {
        self.schedule
            .iter()
            .rev()
            .flat_map(|entry| &entry.competitions)
            .find(|c| c.architecture == architecture)
    }

    /// Checks the invariants every rule relies on.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let fail = |why: String| Err(InvalidParams(why));
        match self.epsilon {
            EpsilonRule::Fixed(epsilon) if !(0.0..1.0).contains(&epsilon) => {
                return fail(format!("epsilon {epsilon} is outside [0, 1)"));
            }
            EpsilonRule::LinearDecay {
                start,
                end,
                decay_blocks,
            } => {
                if !(0.0..1.0).contains(&start) || !(0.0..1.0).contains(&end) {
                    return fail(format!("epsilon decay {start} -> {end} leaves [0, 1)"));
                }
                if decay_blocks == 0 {
                    return fail("epsilon decay over 0 blocks".into());
                }
            }
            EpsilonRule::Fixed(_) => {}
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return fail(format!("temperature {} is not positive", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return fail(format!("alpha {} is outside [0, 1]", self.alpha));
        }
        if let WeightsMode::WinnerTakesAll {
            min_weight_threshold,
        } = self.weights_mode
            && !(0.0..1.0).contains(&min_weight_threshold)
        {
            return fail(format!(
                "min weight threshold {min_weight_threshold} is outside [0, 1)"
            ));
        }
        if self.schedule.is_empty() {
            return fail("the competition schedule is empty".into());
        }
        let mut block_previous = None;
        for entry in &self.schedule {
            if block_previous.is_some_and(|previous| previous >= entry.block_start) {
                return fail("schedule entries are not in increasing block order".into());
            }
            block_previous = Some(entry.block_start);
            if entry.competitions.is_empty() {
                return fail(format!(
                    "the schedule entry at block {} has no competitions",
                    entry.block_start
                ));
            }
            let mut share_total = 0.0;
            for (index, competition) in entry.competitions.iter().enumerate() {
                if competition.id.0.is_empty() {
                    return fail("a competition has an empty id".into());
                }
                let later = entry.competitions.iter().skip(index.saturating_add(1));
                if later.into_iter().any(|other| other.id == competition.id) {
                    return fail(format!("competition {} is listed twice", competition.id));
                }
                if !(competition.reward_percentage.is_finite()
                    && competition.reward_percentage > 0.0)
                {
                    return fail(format!(
                        "competition {} has reward percentage {}",
                        competition.id, competition.reward_percentage
                    ));
                }
                share_total += competition.reward_percentage;
            }
            // N asserts `math.isclose(sum, 1.0)`; its default tolerance is 1e-9 relative.
            if (share_total - 1.0).abs() > 1e-9 {
                return fail(format!(
                    "reward percentages at block {} sum to {share_total}, not 1",
                    entry.block_start
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_n() {
        let params = MechanismParams::default();
        params.validate().unwrap();
        let ids: Vec<_> = params
            .schedule_at(0)
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, ["l3", "s1"]);
        assert_eq!(params.competition_for_step(5, 0).unwrap().id.as_str(), "l3");
        assert_eq!(params.competition_for_step(5, 3).unwrap().id.as_str(), "s1");
    }

    #[test]
    fn linear_decay_matches_the_successor() {
        let rule = EpsilonRule::LinearDecay {
            start: 0.05,
            end: 0.01,
            decay_blocks: 21_600,
        };
        assert_eq!(rule.epsilon(1000, 1000), 0.05);
        assert_eq!(rule.epsilon(900, 1000), 0.05);
        // Python: 0.05 - min(10800 / 21600, 1) * (0.05 - 0.01)
        assert_eq!(rule.epsilon(11_800, 1000), 0.05 - 0.5 * (0.05 - 0.01));
        assert_eq!(rule.epsilon(100_000, 1000), 0.05 - (0.05 - 0.01));
    }

    #[test]
    fn schedule_switches_by_block() {
        let mut params = MechanismParams::default();
        let mut later = params.schedule[0].clone();
        later.block_start = 100;
        later.competitions.truncate(1);
        later.competitions[0].reward_percentage = 1.0;
        params.schedule.push(later);
        params.validate().unwrap();
        assert_eq!(params.schedule_at(99).len(), 2);
        assert_eq!(params.schedule_at(100).len(), 1);
        params.schedule.swap(0, 1);
        assert!(params.validate().is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut params = MechanismParams::default();
        params.temperature = 0.0;
        assert!(params.validate().is_err());
        let mut params = MechanismParams::default();
        params.schedule[0].competitions[0].reward_percentage = 0.7;
        assert!(params.validate().is_err());
    }
}
