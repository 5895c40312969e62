//! A safetensors header: any bytes, with any data-section length, end in tensors whose spans
//! lie inside the data section and do not overlap, or in an error; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|input: &[u8]| {
    let (length, header) = input.split_at(input.len().min(8));
    let mut data_bytes = [0u8; 8];
    data_bytes[..length.len()].copy_from_slice(length);
    let data_bytes = u64::from_le_bytes(data_bytes) >> 16;
    let data_start = 8 + header.len() as u64;
    let path = Path::new("fuzz.safetensors");
    if let Ok(tensors) =
        validator::eval::safetensors::parse_header(path, header, data_start, data_bytes)
    {
        let mut spans: Vec<(u64, u64)> = tensors
            .values()
            .map(|(_, _, offset, length)| (*offset, offset + length))
            .collect();
        spans.sort_unstable();
        for (begin, end) in &spans {
            assert!(*begin >= data_start && *end <= data_start + data_bytes);
        }
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "overlapping spans accepted");
        }
    }
});
