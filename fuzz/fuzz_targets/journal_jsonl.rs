//! The JSON Lines journal reader (`replay --events`, `replay import`): any bytes end in items
//! in journal order, or in an error naming a line; never a panic. What it reads writes back,
//! reads again and writes the same bytes (export → import → export is byte-identical; bytes,
//! not items, are compared, since a NaN loss is not equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use validator::journal::jsonl;

fuzz_target!(|input: &[u8]| {
    let Ok(items) = jsonl::read(input) else {
        return;
    };
    let write = |items: &[jsonl::Item]| {
        let mut written = Vec::new();
        for item in items {
            jsonl::write_item(&mut written, item).unwrap();
        }
        written
    };
    let written = write(&items);
    let again = jsonl::read(written.as_slice()).expect("what we write reads back");
    assert_eq!(write(&again), written);
});
