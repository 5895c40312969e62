//! Why the fold refused an event: one variant per reason, with its data.
//!
//! A rejection is not an error. The event stays in the journal, the state is left as it was
//! (but for the journal position and, for an invalid commitment, its recorded status), and a
//! replay refuses it in the same way. Each variant displays as the sentence operators and
//! miners read in reports.

use super::model_id::{CommitmentInvalid, HashKind};
use super::params::{CompetitionId, InvalidParams};
use super::state::{Absence, CommitmentStatus};

/// Why an event does not fit the state.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// A metagraph with more uids than a u16 can name.
    #[error("metagraph of {size} uids exceeds {max}")]
    MetagraphTooLarge {
        /// The uids observed.
        size: usize,
        /// The most a subnet can hold.
        max: usize,
    },
    /// A metagraph vector whose length is not the number of uids.
    #[error("metagraph {field} has {length} entries for {size} uids")]
    MetagraphLength {
        /// The vector.
        field: &'static str,
        /// Its length.
        length: usize,
        /// The number of hotkeys.
        size: usize,
    },
    /// A commitment that cannot name an evaluable model (its status records why).
    #[error("commitment of {hotkey}: {why}")]
    CommitmentInvalid {
        /// The committing hotkey.
        hotkey: String,
        /// What is wrong with it.
        why: CommitmentInvalid,
    },
    /// Consensus seeding before any metagraph.
    #[error("consensus seeding needs a metagraph")]
    SeedingWithoutMetagraph,
    /// A verification or rejection for a hotkey that never committed.
    #[error("verification for {hotkey} which never committed")]
    VerificationOfUnknownHotkey {
        /// The hotkey.
        hotkey: String,
    },
    /// A verification of a commitment that has since been replaced.
    #[error(
        "verification of {hotkey}'s commitment at block {block_commit} but the current one is \
         at {block_current}"
    )]
    VerificationStale {
        /// The hotkey.
        hotkey: String,
        /// The commitment verified.
        block_commit: u64,
        /// The commitment in force.
        block_current: u64,
    },
    /// A verification of a commitment that is not waiting for one.
    #[error("verification of {hotkey}'s commitment at block {block_commit} which is {status:?}")]
    VerificationNotPending {
        /// The hotkey.
        hotkey: String,
        /// The commitment.
        block_commit: u64,
        /// Where it stands.
        status: CommitmentStatus,
    },
    /// A plain-hash verification of a commitment that requires the salted hash.
    #[error("{hotkey}'s commitment requires the salted hash, verified with {hash_kind:?}")]
    SaltedHashRequired {
        /// The hotkey.
        hotkey: String,
        /// The hash that matched.
        hash_kind: HashKind,
    },
    /// A model rejection for a commitment that is not waiting for a verdict.
    #[error("rejection of {hotkey}'s commitment at block {block_commit} which is {status:?}")]
    RejectionNotPending {
        /// The hotkey.
        hotkey: String,
        /// The commitment.
        block_commit: u64,
        /// Where it stands.
        status: CommitmentStatus,
    },
    /// A model rejection for a commitment that is not the hotkey's current one.
    #[error(
        "rejection of {hotkey}'s commitment at block {block_commit}, which is not its current one"
    )]
    RejectionStale {
        /// The hotkey.
        hotkey: String,
        /// The commitment named.
        block_commit: u64,
    },
    /// A step started while another is open.
    #[error("step {step} started while step {step_open} is open")]
    StepAlreadyOpen {
        /// The step started.
        step: u64,
        /// The step still open.
        step_open: u64,
    },
    /// A step started out of turn.
    #[error("step {step} started, expected step {step_expected}")]
    StepOutOfOrder {
        /// The step started.
        step: u64,
        /// The next step.
        step_expected: u64,
    },
    /// A step started before any metagraph was observed.
    #[error("a step cannot start before a metagraph is observed")]
    StepWithoutMetagraph,
    /// No competition is active at the step's block.
    #[error("no competition is scheduled at block {block}")]
    NoCompetitionScheduled {
        /// The block.
        block: u64,
    },
    /// A step for the wrong competition of the round-robin.
    #[error("step {step} is for competition {expected}, not {found}")]
    WrongCompetition {
        /// The step.
        step: u64,
        /// The competition the schedule gives.
        expected: CompetitionId,
        /// The competition the event names.
        found: CompetitionId,
    },
    /// An event for a step other than the open one.
    #[error("event for step {step} while step {step_open} is open")]
    OtherStepOpen {
        /// The step named.
        step: u64,
        /// The open step.
        step_open: u64,
    },
    /// An event for a step when none is open.
    #[error("event for step {step} but no step is open")]
    NoStepOpen {
        /// The step named.
        step: u64,
    },
    /// A second batch for a step.
    #[error("a second batch for step {step}")]
    SecondBatch {
        /// The step.
        step: u64,
    },
    /// Losses before the step's batch.
    #[error("losses for step {step} before its batch")]
    LossesBeforeBatch {
        /// The step.
        step: u64,
    },
    /// Losses for a uid that is not a participant.
    #[error("uid {uid} is not in step {step}")]
    UidNotInStep {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
    },
    /// Losses for a uid under another hotkey.
    #[error("uid {uid} is {hotkey_expected} in step {step}, not {hotkey_found}")]
    HotkeyMismatch {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
        /// The hotkey at step start.
        hotkey_expected: String,
        /// The hotkey the event names.
        hotkey_found: String,
    },
    /// Losses of another model than the one fixed at step start.
    #[error("uid {uid} evaluates model {hash_expected} in step {step}, not {hash_found}")]
    ModelHashMismatch {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
        /// The hash fixed at step start.
        hash_expected: String,
        /// The hash the event names.
        hash_found: String,
    },
    /// Losses for a participant without a model.
    #[error("uid {uid} has no model in step {step}: {absence:?}")]
    UidHasNoModel {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
        /// Why it has none.
        absence: Absence,
    },
    /// A second outcome for a participant.
    #[error("second losses for uid {uid} in step {step}")]
    SecondLosses {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
    },
    /// A loss vector whose length is not the batch's.
    #[error("{count} losses for uid {uid} on a batch of {batch_size}")]
    LossCount {
        /// The uid.
        uid: u16,
        /// Losses given.
        count: usize,
        /// Samples in the batch.
        batch_size: usize,
    },
    /// An abandonment of a step that is neither open nor next.
    #[error("abandoning step {step} which is not current")]
    AbandonNotCurrent {
        /// The step named.
        step: u64,
    },
    /// A failure of a step that is neither open nor next.
    #[error("failing step {step} which is not current")]
    FailureNotCurrent {
        /// The step named.
        step: u64,
    },
    /// Parameters that break an invariant.
    #[error("{0}")]
    InvalidParams(InvalidParams),
    /// Weights prepared while earlier prepared weights have no answer yet.
    #[error("weights prepared at block {block_prepared} are still unanswered")]
    WeightsIntentOpen {
        /// The block of the unanswered `WeightsPrepared`.
        block_prepared: u64,
    },
    /// A hash commit with no prepared commit-reveal weights waiting for one.
    #[error("a weights commit without prepared commit-reveal weights waiting for it")]
    CommitWithoutIntent,
    /// The successor: a download before the commitment aged past its competition's delay.
    #[error(
        "{hotkey}'s commitment at block {block_commit} was downloaded before its {blocks_due}-block delay"
    )]
    DownloadTooEarly {
        /// The hotkey.
        hotkey: String,
        /// The commit block.
        block_commit: u64,
        /// The competition's delay.
        blocks_due: u64,
    },
    /// The successor: a download for a competition that is not running.
    #[error(
        "{hotkey}'s model for competition {competition} was downloaded while that competition is not running"
    )]
    DownloadOfInactiveCompetition {
        /// The hotkey.
        hotkey: String,
        /// Its competition.
        competition: CompetitionId,
    },
    /// The successor: a download while the update loop's cap is reached.
    #[error(
        "{hotkey}'s commitment at block {block_commit} was downloaded while the update loop's cap of models wait"
    )]
    DownloadOverCap {
        /// The hotkey.
        hotkey: String,
        /// The commit block.
        block_commit: u64,
    },
    /// The successor has no start-up seeding from consensus.
    #[error("the successor's loop does not seed from consensus")]
    SeedingUnderSuccessor,
    /// The successor: a decided commitment downloaded again without the retry rule asking.
    #[error(
        "{hotkey}'s commitment at block {block_commit} was downloaded again without the retry rule asking for it"
    )]
    ResyncUnjustified {
        /// The hotkey.
        hotkey: String,
        /// The commit block.
        block_commit: u64,
    },
    /// The successor: a second step of a competition in one sync block.
    #[error("competition {competition} already ran in sync block {sync_block}")]
    SyncBlockAlreadyRun {
        /// The competition.
        competition: CompetitionId,
        /// The sync block.
        sync_block: u64,
    },
    /// Other validators' weights under parameters without the successor's rules.
    #[error("other validators' weights, but the mechanism has no top-model scan")]
    ValidatorWeightsWithoutSuccessorRules,
    /// Task data under parameters without the successor's rules.
    #[error("step {step}: task data, but the mechanism has no tasks")]
    TasksWithoutSuccessorRules {
        /// The step.
        step: u64,
    },
    /// The tasks journaled are not the competition's.
    #[error("step {step}: tasks [{found}], the competition has [{expected}]")]
    TasksMismatch {
        /// The step.
        step: u64,
        /// The competition's tasks.
        expected: String,
        /// The tasks journaled.
        found: String,
    },
    /// Losses of the other mechanism's form.
    #[error("uid {uid} at step {step}: losses in the other mechanism's form")]
    LossesForm {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
    },
    /// Task losses that do not match the tasks that loaded.
    #[error(
        "uid {uid} at step {step}: {counts} losses per task, the tasks loaded {expected} samples"
    )]
    TaskLossCount {
        /// The uid.
        uid: u16,
        /// The step.
        step: u64,
        /// Losses per task journaled.
        counts: String,
        /// Samples per loaded task.
        expected: String,
    },
}
