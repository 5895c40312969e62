//! The batch-selection RNG. Consensus-critical: two validators on different releases must take
//! the same batch from the same block hash, so every function here is pinned by test vectors
//! (seed → generator output; seed, step and purpose → chosen indices). Changing any of them
//! changes which samples every validator evaluates: it needs a new mechanism version, never a
//! silent edit.
//!
//! A step's seed ([`Seed`]) is the successor's `int(sha256(block_hash_string))` or N's
//! unsynchronised draw (journaled either way). Each use in a step (`purpose`: which runs,
//! which files, which rows) derives its own 64-bit generator seed as the first 8 bytes,
//! big-endian, of `sha256(seed bytes ‖ step as u64 big-endian ‖ purpose)`, and [`shuffled`]
//! is Fisher-Yates from the last index down, `pick = next_u64() % (index + 1)`.

use sha2::{Digest, Sha256};

use crate::hashing::{decimal_of_big_endian, seed_from_block_hash};

/// SplitMix64 (Vigna's reference constants): the generator behind every shuffle, and the
/// synthetic data of tests and benchmarks.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1) with 24 random bits (exact in f32).
    pub fn next_unit_f32(&mut self) -> f32 {
        let bits = u32::try_from(self.next_u64() >> 40).unwrap_or(0);
        // Exact: a 24-bit integer fits f32's significand.
        let value = u16::try_from(bits >> 8).map_or(0.0, f32::from) * 256.0
            + u8::try_from(bits & 0xff).map_or(0.0, f32::from);
        value / 16_777_216.0
    }
}

/// The seed that decides what a step takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// The successor's synchronised seed: `int(sha256(block_hash_string))`, as 32 bytes.
    BlockHash([u8; 32]),
    /// N's unsynchronised seed, drawn by the validator and journaled.
    Unsynchronized(u64),
}

impl Seed {
    /// The seed of a block hash string (as the chain returns it, `0x...`).
    pub fn from_block_hash(block_hash: &str) -> Self {
        Seed::BlockHash(seed_from_block_hash(block_hash))
    }

    /// A fresh unsynchronised seed from the operating system's randomness.
    pub fn unsynchronized() -> Self {
        let mut bytes = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if read.is_err() {
            // No /dev/urandom: fall back to the clock, which is still journaled.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            bytes = u64::from(nanos).to_le_bytes();
        }
        Seed::Unsynchronized(u64::from_le_bytes(bytes))
    }

    /// The seed in decimal, as journaled (the successor's integer for a block hash).
    pub fn decimal(&self) -> String {
        match self {
            Seed::BlockHash(bytes) => decimal_of_big_endian(bytes),
            Seed::Unsynchronized(seed) => seed.to_string(),
        }
    }

    /// A 64-bit generator seed for one use (`purpose`) in one step.
    fn derive(&self, step: u64, purpose: &str) -> u64 {
        let mut hasher = Sha256::new();
        match self {
            Seed::BlockHash(bytes) => hasher.update(bytes),
            Seed::Unsynchronized(seed) => hasher.update(seed.to_be_bytes()),
        }
        hasher.update(step.to_be_bytes());
        hasher.update(purpose.as_bytes());
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(first)
    }
}

/// The indices `0..count` in the order `seed` gives them for `step` and `purpose`
/// (Fisher-Yates over SplitMix64): a pure function, identical on every machine.
pub fn shuffled(count: usize, seed: &Seed, step: u64, purpose: &str) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut random = SplitMix64::new(seed.derive(step, purpose));
    for index in (1..count).rev() {
        let bound = u64::try_from(index.saturating_add(1)).unwrap_or(u64::MAX);
        let pick = usize::try_from(random.next_u64() % bound).unwrap_or(0);
        order.swap(index, pick);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK_HASH: &str = "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2";

    #[test]
    fn the_block_hash_seed_is_the_successors_integer() {
        let seed = Seed::from_block_hash(BLOCK_HASH);
        assert_eq!(
            seed.decimal(),
            "592572197532882810092427479703237300164718763613437077128565525142151814165"
        );
    }

    #[test]
    fn shuffles_are_permutations_fixed_by_seed_and_step() {
        let seed = Seed::from_block_hash("0xabc");
        let a = shuffled(50, &seed, 3, "rows");
        assert_eq!(a, shuffled(50, &seed, 3, "rows"));
        assert_ne!(a, shuffled(50, &seed, 4, "rows"));
        assert_ne!(a, shuffled(50, &Seed::from_block_hash("0xabd"), 3, "rows"));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    // The vectors below were computed by an independent Python transcription of this module's
    // doc (hashlib's sha256, SplitMix64 from Vigna's constants); SplitMix64(0)'s first output
    // is the reference implementation's published 0xe220a8397b1dcdaf.
    #[test]
    fn the_generator_is_pinned() {
        let mut zero = SplitMix64::new(0);
        assert_eq!(
            [zero.next_u64(), zero.next_u64(), zero.next_u64()],
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
        let mut seven = SplitMix64::new(7);
        assert_eq!(
            [seven.next_u64(), seven.next_u64(), seven.next_u64()],
            [
                7_191_089_600_892_374_487,
                309_689_372_594_955_804,
                16_616_101_746_815_609_346
            ]
        );
    }

    #[test]
    fn derived_seeds_and_shuffles_are_pinned() {
        let seed = Seed::from_block_hash(BLOCK_HASH);
        assert_eq!(seed.derive(0, "local-rows"), 11_180_172_743_984_561_606);
        assert_eq!(
            shuffled(10, &seed, 0, "local-rows"),
            [4, 3, 2, 6, 5, 8, 1, 9, 0, 7]
        );
        assert_eq!(
            shuffled(10, &seed, 1, "local-rows"),
            [6, 0, 8, 3, 7, 1, 2, 5, 4, 9]
        );
        assert_eq!(
            shuffled(400, &seed, 0, "local-rows").get(..10).unwrap(),
            [352, 120, 280, 375, 21, 10, 197, 148, 384, 147]
        );
        assert_eq!(
            shuffled(12, &Seed::Unsynchronized(5), 3, "cortex-runs"),
            [1, 7, 9, 8, 11, 3, 4, 10, 0, 5, 6, 2]
        );
        assert_eq!(shuffled(0, &seed, 0, "x"), Vec::<usize>::new());
        assert_eq!(shuffled(1, &seed, 0, "x"), [0]);
    }
}
