//! The binary form of journal records and checkpoints.
//!
//! A key is `block` then `seq`, both big-endian u64, so sled's byte order is journal order. A
//! value is an envelope: schema version (u16, big-endian), CRC-32 of the payload (u32,
//! big-endian), then the payload in bincode 2 (standard configuration: little-endian, varint).
//! The envelope lets a reader refuse a record it does not understand, or one that rotted on
//! disk, instead of folding garbage.

use serde::{Deserialize, Serialize};

use crate::machine::event::schema_version_is_readable;
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

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (_, payload) = checked_payload(bytes)?;
    decode_payload(payload)
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

/// Decodes a record value.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    decode(bytes)
}

/// Encodes a checkpointed state.
pub fn encode_state(state: &State) -> Vec<u8> {
    encode(state)
}

/// The schema version whose state first ended with `weights_intent`.
const STATE_WITH_INTENT: u16 = 3;

/// Decodes a checkpointed state. A state of schema 1 or 2 ends before `weights_intent`; bincode
/// writes `None` as one zero byte, so appending it reads the old state exactly, with no intent.
pub fn decode_state(bytes: &[u8]) -> Result<State, CodecError> {
    let (version, payload) = checked_payload(bytes)?;
    if version >= STATE_WITH_INTENT {
        return decode_payload(payload);
    }
    let mut upgraded = Vec::with_capacity(payload.len().saturating_add(1));
    upgraded.extend_from_slice(payload);
    upgraded.push(0);
    decode_payload(&upgraded)
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

    #[test]
    fn a_state_of_schema_2_reads_with_no_intent() {
        let state = State {
            step_next: 9,
            block_weights_included: Some(40),
            ..State::default()
        };
        let current = encode_state(&state);
        // A schema 2 envelope: the payload without the trailing `None` of `weights_intent`.
        let payload = &current[HEADER_BYTES..current.len() - 1];
        let mut old = 2u16.to_be_bytes().to_vec();
        old.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
        old.extend_from_slice(payload);
        assert_eq!(decode_state(&old).unwrap(), state);
        assert_eq!(decode_state(&current).unwrap(), state);
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
