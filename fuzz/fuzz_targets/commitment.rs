//! A commitment as read from chain: any bytes, in either format, parse to a model id or to a
//! recorded reason; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use validator::machine::model_id::parse_raw_commitment;
use validator::machine::params::ModelIdFormat;

fuzz_target!(|input: &[u8]| {
    for format in [ModelIdFormat::Original, ModelIdFormat::Successor] {
        let _ = parse_raw_commitment(input, format);
    }
});
