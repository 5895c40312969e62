//! Writes the seed corpus of the `record_codec` target: every record and checkpoint of the
//! golden journals, encoded as the journal stores them, one file each, in the target's input
//! form (schema version, then payload; the target computes the checksum itself).
//!
//! Run from the repository root after a schema change:
//! `cargo run --manifest-path fuzz/Cargo.toml --example record_seeds`

use std::fs;
use std::io::BufReader;
use std::path::Path;

use validator::journal::{codec, jsonl};

fn main() -> std::io::Result<()> {
    let out = Path::new("fuzz/corpus/record_codec");
    fs::create_dir_all(out)?;
    let mut journals: Vec<_> = fs::read_dir("fixtures/journals")?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    // Sorted, so the corpus is the same on every machine.
    journals.sort();
    let mut written = 0;
    for journal in &journals {
        let items = jsonl::read(BufReader::new(fs::File::open(journal)?))
            .map_err(|e| std::io::Error::other(format!("{}: {e}", journal.display())))?;
        let stem = journal.file_stem().unwrap().to_string_lossy().into_owned();
        for (index, item) in items.iter().enumerate() {
            let value = match item {
                jsonl::Item::Record(record) => codec::encode_event(&record.event),
                jsonl::Item::Checkpoint(state) => codec::encode_state(state),
            };
            // Drop the four checksum bytes after the version.
            let mut seed = value[..2].to_vec();
            seed.extend_from_slice(&value[6..]);
            fs::write(out.join(format!("{stem}-{index:03}")), seed)?;
            written += 1;
        }
    }
    println!("{written} seeds in {}", out.display());
    Ok(())
}
