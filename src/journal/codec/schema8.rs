//! The shape of the mechanism parameters of schemas 4 to 8, which schema 9 extended.
//!
//! Schema 9 appended the successor's loop (`successor`) to the loop rules, the last field of
//! the parameters. A record carrying parameters ends with them, so the codec appends the
//! missing `None`; a checkpoint holds them first, so the codec decodes this shape to find
//! where they end and inserts the `None` there.

use serde::Deserialize;

use crate::machine::params::{
    EpsilonRule, ModelIdFormat, ScheduleEntry, SetOrder, WeightsCadence, WeightsFloat, WeightsMode,
};

/// `LoopRules` before `successor`.
#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded only to measure its encoding")]
struct LoopRules8 {
    set_order: SetOrder,
    requeue_registered: bool,
    weights_sized_at_start: bool,
    weights_float: WeightsFloat,
    track_superseded: bool,
    weights_cadence: WeightsCadence,
}

/// `MechanismParams` of schemas 4 to 8.
#[derive(Deserialize)]
#[allow(dead_code, reason = "decoded only to measure its encoding")]
pub struct MechanismParams8 {
    epsilon: EpsilonRule,
    temperature: f64,
    alpha: f64,
    sample_min: u32,
    schedule: Vec<ScheduleEntry>,
    weights_mode: WeightsMode,
    eval_delay_blocks: u64,
    model_id_format: ModelIdFormat,
    subnet_start_block: u64,
    rules: LoopRules8,
}
