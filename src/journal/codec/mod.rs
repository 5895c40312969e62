//! The binary form of journal records and checkpoints.
//!
//! A key is `block` then `seq`, both big-endian u64, so sled's byte order is journal order. A
//! value is an envelope: schema version (u16, big-endian), CRC-32 of the payload (u32,
//! big-endian), then the payload in bincode 2 (standard configuration: little-endian, varint).
//! The envelope lets a reader refuse a record it does not understand, or one that rotted on
//! disk, instead of folding garbage.

use serde::{Deserialize, Serialize};

mod schema3;
mod schema8;

use crate::machine::event::{
    EvaluatedBy, EvaluationReported, ReportVerdict, SubmitMethod, TasksFetched, WeightsPrepared,
    schema_version_is_readable,
};
use crate::machine::{Event, Position, SCHEMA_VERSION, State};

/// Bytes in an envelope header.
const HEADER_BYTES: usize = 6;
/// The largest payload decoded (a guard against a corrupt length claiming gigabytes).
const PAYLOAD_LIMIT_BYTES: usize = 256 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer bytes than a header or a key.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Written by a newer (or unknown) schema.
    #[error(
        "schema version {found} is not supported (this build reads {}..={SCHEMA_VERSION})",
        crate::machine::event::SCHEMA_VERSION_OLDEST_READ
    )]
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// The payload does not match its checksum.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// The stored CRC.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// The payload is not a valid encoding.
    #[error("undecodable payload: {0}")]
    Payload(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<PAYLOAD_LIMIT_BYTES>()
}

/// The 16-byte key of a position.
pub fn key(position: Position) -> [u8; 16] {
    let mut key = [0u8; 16];
    let (block, seq) = key.split_at_mut(8);
    block.copy_from_slice(&position.block.to_be_bytes());
    seq.copy_from_slice(&position.seq.to_be_bytes());
    key
}

/// The key of the first record at `block`.
pub fn key_of_block(block: u64) -> [u8; 16] {
    key(Position { block, seq: 0 })
}

/// Reads a key back into a position.
pub fn position(key: &[u8]) -> Result<Position, CodecError> {
    let (block, seq) = key
        .split_first_chunk::<8>()
        .ok_or(CodecError::Truncated(key.len()))?;
    let seq: &[u8; 8] = seq
        .try_into()
        .map_err(|_| CodecError::Truncated(key.len()))?;
    Ok(Position {
        block: u64::from_be_bytes(*block),
        seq: u64::from_be_bytes(*seq),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a Vec only fails for types serde cannot express; ours are all plain data.
    let payload = bincode::serde::encode_to_vec(value, config()).unwrap_or_default();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
    bytes.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    bytes.extend_from_slice(&payload);
    bytes
}

/// Checks a stored value's envelope (schema version and checksum) without decoding it: what
/// the journal does to every record when it opens, so damage is named by its position.
pub fn check_envelope(bytes: &[u8]) -> Result<(), CodecError> {
    checked_payload(bytes).map(|_| ())
}

/// The schema version and the payload of an envelope, its version and checksum checked.
fn checked_payload(bytes: &[u8]) -> Result<(u16, &[u8]), CodecError> {
    let (version, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or(CodecError::Truncated(bytes.len()))?;
    let (stored, payload) = rest
        .split_first_chunk::<4>()
        .ok_or(CodecError::Truncated(bytes.len()))?;
    let version = u16::from_be_bytes(*version);
    if !schema_version_is_readable(version) {
        return Err(CodecError::UnsupportedVersion { found: version });
    }
    let stored = u32::from_be_bytes(*stored);
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    Ok((version, payload))
}

fn decode_payload<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::borrow_decode_from_slice(payload, config())
        .map_err(|e| CodecError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(CodecError::Payload(format!(
            "{} trailing bytes",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// Encodes an event into a record value.
pub fn encode_event(event: &Event) -> Vec<u8> {
    encode(event)
}

/// The first schema version whose parameters carry `rules` and whose sets are CPython's.
const SCHEMA_WITH_RULES: u16 = 4;

/// The first schema version whose `WeightsPrepared` ends with the chain reading `due`.
const SCHEMA_WITH_DUE_READING: u16 = 6;

/// The first schema version whose `EvaluationReported` ends with the worker's id.
const SCHEMA_WITH_WORKER_ID: u16 = 7;

/// The first schema version whose `WeightsPrepared` and state end with a mechanism.
const SCHEMA_WITH_MECHANISM: u16 = 8;

/// The first schema version whose loop rules end with the successor's, whose state ends with
/// the successor's state, and whose `StepRecord` ends with scores.
const SCHEMA_WITH_SUCCESSOR: u16 = 9;

/// The first schema version whose `TasksFetched` ends with the tokenizer's hash.
const SCHEMA_WITH_TOKENIZER_HASH: u16 = 10;

/// The first byte of a record's payload: its variant's index, which bincode writes as a
/// one-byte varint (the same index in every schema's enum).
fn tag_of(event: &Event) -> Option<u8> {
    encode(event).get(HEADER_BYTES).copied()
}

/// The tags of the records an older schema ended early, read off sample encodings once:
/// every record a journal decodes is compared with them.
struct UpgradedTags {
    /// `WeightsPrepared`: before schema 6 it ended before `due`, before 8 before `mecid`.
    weights_prepared: Option<u8>,
    /// `EvaluationReported`: before schema 7 it ended before `worker_id`.
    evaluation_reported: Option<u8>,
    /// `ParamsChanged`: its payload ends with the loop rules.
    params_changed: Option<u8>,
    /// `StepCompleted`: its payload ends with its `StepRecord`.
    step_completed: Option<u8>,
    /// `TasksFetched`: before schema 10 it ended before `tokenizer_hash`.
    tasks_fetched: Option<u8>,
}

fn upgraded_tags() -> &'static UpgradedTags {
    use crate::machine::event::{ParamsChanged, StepCompleted, StepRecord};
    static TAGS: std::sync::OnceLock<UpgradedTags> = std::sync::OnceLock::new();
    TAGS.get_or_init(|| UpgradedTags {
        weights_prepared: tag_of(&Event::WeightsPrepared(WeightsPrepared {
            uids: Vec::new(),
            weights: Vec::new(),
            version_key: 0,
            method: SubmitMethod::Plain,
            block_head: 0,
            due: None,
            mecid: 0,
        })),
        evaluation_reported: tag_of(&Event::EvaluationReported(EvaluationReported {
            step: 0,
            uid: 0,
            model_hash: String::new(),
            batch_digest: String::new(),
            worker: EvaluatedBy {
                host: String::new(),
                device: String::new(),
                build: String::new(),
            },
            verdict: ReportVerdict::Accepted,
            worker_id: String::new(),
        })),
        params_changed: tag_of(&Event::ParamsChanged(ParamsChanged {
            params: crate::machine::MechanismParams::default(),
        })),
        step_completed: tag_of(&Event::StepCompleted(StepCompleted {
            step: 0,
            recorded: StepRecord::empty(crate::machine::CompetitionId::new("")),
        })),
        tasks_fetched: tag_of(&Event::TasksFetched(TasksFetched {
            step: 0,
            tasks: Vec::new(),
            tokenizer_hash: String::new(),
        })),
    })
}

/// Decodes a record value, upgrading one of an older schema.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    let (version, payload) = checked_payload(bytes)?;
    // Before schema 6 a `WeightsPrepared` ended before `due`, which is the record's last
    // field: bincode writes `None` as one zero byte, so appending it reads the old record
    // exactly, with no reading. Likewise before schema 7 an `EvaluationReported` ended before
    // `worker_id`, and an empty string is one zero byte (its length).
    // Before schema 8 a `WeightsPrepared` ended before `mecid` (a u8: one byte, 0 for the
    // subnet's own mechanism).
    let tag = payload.first().copied();
    let tags = upgraded_tags();
    let mut appended: Vec<u8> = Vec::new();
    if tag == tags.weights_prepared {
        if version < SCHEMA_WITH_DUE_READING {
            appended.push(0);
        }
        if version < SCHEMA_WITH_MECHANISM {
            appended.push(0);
        }
    } else if version < SCHEMA_WITH_WORKER_ID && tag == tags.evaluation_reported {
        appended.push(0);
    } else if version < SCHEMA_WITH_TOKENIZER_HASH && tag == tags.tasks_fetched {
        // Schema 9's `TasksFetched` ended before the tokenizer's hash (empty: its length).
        appended.push(0);
    }
    // Before schema 9 the parameters ended before the successor's rules (`None`: one zero
    // byte) and a step's record before its scores (empty: one zero byte, the length).
    // (Parameters of schemas 1 to 3 have no rules at all; `schema3` reads them.)
    if version < SCHEMA_WITH_SUCCESSOR
        && ((version >= SCHEMA_WITH_RULES && tag == tags.params_changed)
            || tag == tags.step_completed)
    {
        appended.push(0);
    }
    let upgraded;
    let payload = if appended.is_empty() {
        payload
    } else {
        upgraded = [payload, &appended].concat();
        upgraded.as_slice()
    };
    if version >= SCHEMA_WITH_RULES {
        return decode_payload(payload);
    }
    decode_payload::<schema3::Event3>(payload).map(Event::from)
}

/// Encodes a checkpointed state.
pub fn encode_state(state: &State) -> Vec<u8> {
    encode(state)
}

/// The schema version whose state first ended with `weights_intent`.
const STATE_WITH_INTENT: u16 = 3;

/// Decodes a checkpointed state, upgrading one of an older schema. A state of schema 1 or 2
/// ends before `weights_intent`; bincode writes `None` as one zero byte, so appending it reads
/// the old state exactly, with no intent.
pub fn decode_state(bytes: &[u8]) -> Result<State, CodecError> {
    let (version, payload) = checked_payload(bytes)?;
    if (SCHEMA_WITH_RULES..SCHEMA_WITH_SUCCESSOR).contains(&version) {
        // The parameters come first: find where they end, insert the successor's rules
        // there (`None`), and append what the state has gained since (the intent's mechanism
        // before schema 8, the successor's state: `None`).
        let (_, used): (schema8::MechanismParams8, usize) =
            bincode::serde::borrow_decode_from_slice(payload, config())
                .map_err(|e| CodecError::Payload(e.to_string()))?;
        let (params, rest) = payload.split_at(used);
        let mut upgraded = Vec::with_capacity(payload.len().saturating_add(3));
        upgraded.extend_from_slice(params);
        upgraded.push(0);
        upgraded.extend_from_slice(rest);
        if version < SCHEMA_WITH_MECHANISM {
            upgraded.push(0);
        }
        upgraded.push(0);
        let mut state: State = decode_payload(&upgraded)?;
        if let Some(intent) = &mut state.weights_intent {
            intent.prepared.mecid = state.weights_intent_mecid;
        }
        return Ok(state);
    }
    if version >= SCHEMA_WITH_MECHANISM {
        let mut state: State = decode_payload(payload)?;
        // The intent keeps its stored shape; its mechanism is the state's last field.
        if let Some(intent) = &mut state.weights_intent {
            intent.prepared.mecid = state.weights_intent_mecid;
        }
        return Ok(state);
    }
    if version >= STATE_WITH_INTENT {
        return decode_payload::<schema3::State3>(payload).map(State::from);
    }
    let mut upgraded = Vec::with_capacity(payload.len().saturating_add(1));
    upgraded.extend_from_slice(payload);
    upgraded.push(0);
    decode_payload::<schema3::State3>(&upgraded).map(State::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::{EvalOutcome, LossesComputed};
    use crate::machine::wire::LossVec;

    fn event() -> Event {
        Event::LossesComputed(LossesComputed {
            step: 3,
            uid: 7,
            hotkey: "5F".into(),
            model_hash: "h".into(),
            outcome: EvalOutcome::Losses(LossVec(vec![1.5, f32::INFINITY, f32::NAN])),
        })
    }

    fn envelope(version: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn states_of_schemas_2_and_3_read_with_legacy_rules() {
        use crate::machine::CompetitionId;
        use crate::machine::params::LoopRules;
        use crate::machine::pyset::PySet;
        let mut state = State {
            step_next: 9,
            block_weights_included: Some(40),
            ..State::default()
        };
        let competition = state
            .competitions
            .entry(CompetitionId::new("l3"))
            .or_default();
        competition.eval_set = PySet::from_list([40, 10, 3]);
        let old = schema3::State3::from_current(&state);
        let payload = bincode::serde::encode_to_vec(&old, config()).unwrap();
        // Schema 2 ends before `weights_intent`, which bincode writes as one zero byte.
        let v2 = envelope(2, &payload[..payload.len() - 1]);
        let v3 = envelope(3, &payload);
        let mut expected = state.clone();
        expected.params.rules = LoopRules::legacy();
        // The old form kept the uids ascending; they come back as a set built in that order.
        expected
            .competitions
            .get_mut(&CompetitionId::new("l3"))
            .unwrap()
            .eval_set = PySet::from_list([3, 10, 40]);
        assert_eq!(decode_state(&v2).unwrap(), expected);
        assert_eq!(decode_state(&v3).unwrap(), expected);
        assert_eq!(decode_state(&encode_state(&state)).unwrap(), state);
    }

    #[test]
    fn a_params_change_of_schema_3_reads_with_legacy_rules() {
        use crate::machine::MechanismParams;
        use crate::machine::params::LoopRules;
        let mut params = MechanismParams::successor();
        params.rules = LoopRules::n();
        let state = State::new(params.clone());
        let old = schema3::State3::from_current(&state);
        let old_params =
            schema3::Event3::ParamsChanged(schema3::ParamsChanged3 { params: old.params });
        let payload = bincode::serde::encode_to_vec(&old_params, config()).unwrap();
        let Event::ParamsChanged(read) = decode_event(&envelope(3, &payload)).unwrap() else {
            panic!("not a params change");
        };
        params.rules = LoopRules::legacy();
        assert_eq!(read.params, params);
    }

    /// Postmortem (schema 6): `WeightsPrepared` gained the chain reading `due` as its last
    /// field; a record written before reads with none, and an intent in a checkpoint keeps
    /// the five fields it always had, so older checkpoints read unchanged.
    #[test]
    fn weights_prepared_of_schema_5_reads_with_no_reading_and_checkpoints_keep_their_shape() {
        use crate::machine::event::DueReading;
        use crate::machine::state::WeightsIntent;
        let prepared = WeightsPrepared {
            mecid: 0,
            uids: vec![1, 3],
            weights: vec![65535, 7],
            version_key: 27,
            method: SubmitMethod::CommitRevealHash { salt: vec![9] },
            block_head: 40,
            due: Some(DueReading {
                head: 40,
                last_update: 12,
                rate_limit: 10,
                blocks_per_epoch: 100,
            }),
        };
        let current = encode_event(&Event::WeightsPrepared(prepared.clone()));
        let payload = &current[HEADER_BYTES..];
        // Schema 5 wrote the same bytes without the reading's `Some` and its four varints.
        let without = WeightsPrepared {
            due: None,
            ..prepared.clone()
        };
        let new_none = encode_event(&Event::WeightsPrepared(without.clone()));
        // ... and without the mechanism (schema 8), one more byte.
        let old = envelope(5, &new_none[HEADER_BYTES..new_none.len() - 2]);
        assert_eq!(
            decode_event(&old).unwrap(),
            Event::WeightsPrepared(without.clone())
        );
        assert_eq!(
            decode_event(&current).unwrap(),
            Event::WeightsPrepared(prepared.clone())
        );
        assert!(payload.len() > new_none.len() - HEADER_BYTES);
        // A state holding the intent encodes without the reading, as before schema 6.
        let state = State {
            weights_intent: Some(WeightsIntent {
                block_prepared: 41,
                prepared: prepared.clone(),
                committed: None,
            }),
            ..State::default()
        };
        let read = decode_state(&encode_state(&state)).unwrap();
        assert_eq!(read.weights_intent.unwrap().prepared, without);
        let mut old_state = state.clone();
        old_state.weights_intent.as_mut().unwrap().prepared = without;
        assert_eq!(encode_state(&old_state), encode_state(&state));
    }

    /// Issue 35: schema 8 names the subnet mechanism of a `WeightsPrepared` (its last field)
    /// and of the state's open intent (the state's last field, so the intent keeps the shape
    /// older checkpoints have). Records and checkpoints of schema 7 read with mechanism 0; a
    /// mechanism other than 0 survives a checkpoint.
    #[test]
    fn weights_prepared_and_states_of_schema_7_read_with_mechanism_zero() {
        use crate::machine::state::WeightsIntent;
        let prepared = WeightsPrepared {
            uids: vec![0, 2],
            weights: vec![65535, 11],
            version_key: 1,
            method: SubmitMethod::Plain,
            block_head: 90,
            due: None,
            mecid: 0,
        };
        let current = encode_event(&Event::WeightsPrepared(prepared.clone()));
        let old = envelope(7, &current[HEADER_BYTES..current.len() - 1]);
        assert_eq!(
            decode_event(&old).unwrap(),
            Event::WeightsPrepared(prepared.clone())
        );
        let second = WeightsPrepared {
            mecid: 1,
            ..prepared.clone()
        };
        let bytes = encode_event(&Event::WeightsPrepared(second.clone()));
        assert_eq!(
            decode_event(&bytes).unwrap(),
            Event::WeightsPrepared(second.clone())
        );
        // A schema 7 record is exactly one byte short of a schema 8 one.
        assert!(decode_event(&envelope(8, &current[HEADER_BYTES..current.len() - 1])).is_err());
        let intent = |prepared: WeightsPrepared| WeightsIntent {
            block_prepared: 91,
            prepared,
            committed: None,
        };
        let state = State {
            weights_intent: Some(intent(second.clone())),
            weights_intent_mecid: 1,
            ..State::default()
        };
        let read = decode_state(&encode_state(&state)).unwrap();
        assert_eq!(read, state);
        assert_eq!(read.weights_intent.unwrap().prepared.mecid, 1);
        // A schema 7 checkpoint ended before the intent's mechanism.
        let zero = State {
            weights_intent: Some(intent(prepared)),
            weights_intent_mecid: 0,
            ..State::default()
        };
        let old_state = envelope(7, &older_state_payload(&encode_state(&zero), 7));
        assert_eq!(decode_state(&old_state).unwrap(), zero);
    }

    /// A current checkpoint's payload in the shape of schema 7 or 8: without the successor's
    /// rules at the end of the parameters, without the successor's state at the end, and (7)
    /// without the intent's mechanism before it.
    fn older_state_payload(encoded: &[u8], version: u16) -> Vec<u8> {
        let payload = &encoded[HEADER_BYTES..];
        let (_, used): (schema8::MechanismParams8, usize) =
            bincode::serde::borrow_decode_from_slice(payload, config()).unwrap();
        assert_eq!(payload[used], 0, "the successor's rules are None");
        assert_eq!(*payload.last().unwrap(), 0, "the successor's state is None");
        let mut old = payload[..used].to_vec();
        old.extend_from_slice(&payload[used + 1..payload.len() - 1]);
        if version < 8 {
            old.pop();
        }
        old
    }

    /// Schema 9 extended the parameters (the successor's rules), the state (the successor's
    /// state) and a step's record (scores): records and checkpoints of schema 8 read with
    /// none of them.
    #[test]
    fn records_and_checkpoints_of_schema_8_read_without_the_successor() {
        use crate::machine::MechanismParams;
        use crate::machine::event::{ParamsChanged, StepCompleted, StepRecord};
        let params = Event::ParamsChanged(ParamsChanged {
            params: MechanismParams::default(),
        });
        let current = encode_event(&params);
        let old = envelope(8, &current[HEADER_BYTES..current.len() - 1]);
        assert_eq!(decode_event(&old).unwrap(), params);
        let mut recorded = StepRecord::empty(crate::machine::CompetitionId::new("l3"));
        recorded.uids = vec![3, 1];
        recorded.win_rate = vec![0.5, 1.0];
        let step = Event::StepCompleted(StepCompleted { step: 4, recorded });
        let current = encode_event(&step);
        let old = envelope(8, &current[HEADER_BYTES..current.len() - 1]);
        assert_eq!(decode_event(&old).unwrap(), step);
        let state = State {
            step_next: 12,
            weights: vec![0.25, 0.75],
            ..State::default()
        };
        let old = envelope(8, &older_state_payload(&encode_state(&state), 8));
        assert_eq!(decode_state(&old).unwrap(), state);
        // A successor state round-trips in the current schema.
        let mut successor = State::new(MechanismParams::successor());
        successor.successor = Some(crate::machine::state::SuccessorState::default());
        assert_eq!(decode_state(&encode_state(&successor)).unwrap(), successor);
    }

    /// A schema-9 `TasksFetched` ended with its tasks: it reads with no tokenizer hash, and a
    /// schema-10 one keeps its hash.
    #[test]
    fn tasks_fetched_of_schema_9_reads_without_a_tokenizer_hash() {
        use crate::machine::event::{TaskFetchOutcome, TaskFetched};
        let fetched = TasksFetched {
            step: 3,
            tasks: vec![TaskFetched {
                task: "CODEFORCES_COTS".into(),
                outcome: TaskFetchOutcome::Dropped("HTTP 500".into()),
            }],
            tokenizer_hash: String::new(),
        };
        let current = encode_event(&Event::TasksFetched(fetched.clone()));
        let old = envelope(9, &current[HEADER_BYTES..current.len() - 1]);
        assert_eq!(
            decode_event(&old).unwrap(),
            Event::TasksFetched(fetched.clone())
        );
        let hashed = TasksFetched {
            tokenizer_hash: "k3Y=".into(),
            ..fetched
        };
        let current = encode_event(&Event::TasksFetched(hashed.clone()));
        assert_eq!(decode_event(&current).unwrap(), Event::TasksFetched(hashed));
    }

    /// Postmortem (issue 33, class 8): two workers on one host and device were the same in
    /// `EvaluationReported`; schema 7 adds the worker's id as its last field, and a record
    /// written before reads with an empty one.
    #[test]
    fn evaluation_reported_of_schema_6_reads_with_an_empty_worker_id() {
        let report = EvaluationReported {
            step: 4,
            uid: 2,
            model_hash: "h".into(),
            batch_digest: "d".into(),
            worker: EvaluatedBy {
                host: "box".into(),
                device: "cuda:0 bf16".into(),
                build: "b".into(),
            },
            verdict: ReportVerdict::Refused("late".into()),
            worker_id: String::new(),
        };
        let current = encode_event(&Event::EvaluationReported(report.clone()));
        let old = envelope(6, &current[HEADER_BYTES..current.len() - 1]);
        assert_eq!(
            decode_event(&old).unwrap(),
            Event::EvaluationReported(report.clone())
        );
        let named = EvaluationReported {
            worker_id: "gpu-2:UABC".into(),
            ..report
        };
        let current = encode_event(&Event::EvaluationReported(named.clone()));
        assert_eq!(
            decode_event(&current).unwrap(),
            Event::EvaluationReported(named)
        );
        assert!(decode_event(&envelope(7, &current[HEADER_BYTES..current.len() - 1])).is_err());
    }

    #[test]
    fn keys_sort_in_journal_order() {
        let a = key(Position { block: 1, seq: 900 });
        let b = key(Position { block: 2, seq: 0 });
        assert!(a < b);
        assert_eq!(position(&b).unwrap(), Position { block: 2, seq: 0 });
        assert!(position(&[1, 2, 3]).is_err());
    }

    #[test]
    fn envelope_round_trips_and_detects_damage() {
        let bytes = encode_event(&event());
        let back = decode_event(&bytes).unwrap();
        // NaN != NaN, so compare the encodings.
        assert_eq!(encode_event(&back), bytes);
        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode_event(&damaged),
            Err(CodecError::Checksum { .. })
        ));
        let mut future = bytes.clone();
        future[1] = 99;
        assert!(matches!(
            decode_event(&future),
            Err(CodecError::UnsupportedVersion { found: 99 })
        ));
        assert!(matches!(
            decode_event(&bytes[..4]),
            Err(CodecError::Truncated(4))
        ));
    }
}
