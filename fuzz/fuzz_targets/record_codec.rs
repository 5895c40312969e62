//! The record codec (sled values): any bytes decode to an event or a state, or to an error;
//! never a panic. A decoded event encodes, decodes and encodes again to the same bytes.
//!
//! The input is a schema version (two bytes) and a payload; the target decodes it both as it
//! came and wrapped in an envelope with the payload's true checksum, so the fuzzer reaches the
//! payload decoder instead of stopping at the CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use validator::journal::codec;

fn decode(bytes: &[u8]) {
    let _ = codec::check_envelope(bytes);
    if let Ok(event) = codec::decode_event(bytes) {
        let encoded = codec::encode_event(&event);
        let again = codec::decode_event(&encoded).expect("what we encode decodes");
        assert_eq!(codec::encode_event(&again), encoded);
    }
    if let Ok(state) = codec::decode_state(bytes) {
        let encoded = codec::encode_state(&state);
        let again = codec::decode_state(&encoded).expect("what we encode decodes");
        assert_eq!(codec::encode_state(&again), encoded);
    }
}

fuzz_target!(|input: &[u8]| {
    let _ = codec::position(input);
    decode(input);
    let (version, payload) = input.split_at(input.len().min(2));
    let mut enveloped = version.to_vec();
    enveloped.resize(2, 0);
    enveloped.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    enveloped.extend_from_slice(payload);
    decode(&enveloped);
});
