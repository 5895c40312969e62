//! The original validator's hashes, and the successor's block-hash seed. Pure functions of
//! bytes; walking a directory to hash it belongs to the hub edge.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// `base64(sha256(bytes))`, 44 characters with padding: N's `get_hash_of_file` of a file's
/// content.
pub fn hash_of_bytes(bytes: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(bytes))
}

/// N's `get_hash_of_two_strings(a, b)`: `base64(sha256(utf8(a + b)))`. The salted model hash
/// is `hash_of_two_strings(directory_hash, hotkey_ss58)`.
pub fn hash_of_two_strings(first: &str, second: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update(second.as_bytes());
    STANDARD.encode(hasher.finalize())
}

/// N's directory hash from the hashes of its files, in walk order: `base64(sha256(h1 ++ h2 ++
/// ...))` over the ASCII of each file's base64 hash. (N walks top-down, each directory's files
/// sorted by name before its sub-directories sorted by name; names are not hashed.)
pub fn hash_of_file_hashes<'a>(file_hashes: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for hash in file_hashes {
        hasher.update(hash.as_bytes());
    }
    STANDARD.encode(hasher.finalize())
}

/// The successor's seed: `int(sha256(block_hash_string).hexdigest(), 16)`, as its 32
/// big-endian bytes. The block hash is hashed as the string the chain returns (`0x...`).
pub fn seed_from_block_hash(block_hash: &str) -> [u8; 32] {
    Sha256::digest(block_hash.as_bytes()).into()
}

/// The decimal form of a big-endian unsigned integer (how Python prints the seed).
pub fn decimal_of_big_endian(bytes: &[u8]) -> String {
    // Repeated division by 10^9 over base-2^32 limbs; the input is tiny (32 bytes).
    let mut limbs: Vec<u32> = bytes
        .rchunks(4)
        .rev()
        .map(|chunk| chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
        .collect();
    let mut groups: Vec<u32> = Vec::new();
    while limbs.iter().any(|limb| *limb != 0) {
        let mut remainder = 0u64;
        for limb in &mut limbs {
            let value = (remainder << 32) | u64::from(*limb);
            *limb = u32::try_from(value / 1_000_000_000).unwrap_or(u32::MAX);
            remainder = value % 1_000_000_000;
        }
        groups.push(u32::try_from(remainder).unwrap_or(0));
    }
    let mut text = groups
        .last()
        .map_or_else(|| "0".to_owned(), |group| group.to_string());
    for group in groups.iter().rev().skip(1) {
        text.push_str(&format!("{group:09}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_from_the_reference_semantics() {
        assert_eq!(
            hash_of_two_strings("hello", "world"),
            "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68="
        );
        assert_eq!(
            hash_of_bytes(b"test text."),
            "tXNDvHVzqYIRiUx0rvK+M5+Lu4OLzhfPJH+gf7HvCeA="
        );
    }

    #[test]
    fn seed_matches_the_successors_test() {
        // macrocosm-os/finetuning tests/finetune/test_utils.py, block 4,632,000.
        let seed = seed_from_block_hash(
            "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2",
        );
        assert_eq!(
            decimal_of_big_endian(&seed),
            "592572197532882810092427479703237300164718763613437077128565525142151814165"
        );
    }

    #[test]
    fn decimal_of_small_numbers() {
        assert_eq!(decimal_of_big_endian(&[0, 0]), "0");
        assert_eq!(decimal_of_big_endian(&[1, 0]), "256");
        assert_eq!(
            decimal_of_big_endian(&[0x3b, 0x9a, 0xca, 0x00]),
            "1000000000"
        );
        assert_eq!(decimal_of_big_endian(&[0xff; 8]), u64::MAX.to_string());
    }
}
