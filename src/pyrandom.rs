//! CPython's `random.Random` (the Mersenne Twister MT19937 and the integer draws built on it),
//! reproduced bit for bit for the successor's data path, which picks its dataset pages with
//! the interpreter's global generator seeded by the sync block's hash.
//!
//! Consensus-relevant, like [`crate::seed`]: every validator running us must draw the same
//! pages from the same block hash, so each function is pinned by vectors recorded from CPython
//! itself (`fixtures/cpython_random/`). What is reproduced is CPython 3.11's code path for
//! integer arguments: `seed(int)` (`init_by_array` over the 32-bit little-endian words of the
//! seed's absolute value), `getrandbits(k)`, `_randbelow` (rejection: draw `bit_length(n)` bits
//! until the value is below `n`), `randint(a, b)` and `choice` (which draws even for one
//! element).

/// The generator's state: 624 words and the position of the next one.
#[derive(Clone)]
pub struct PyRandom {
    state: [u32; STATE_WORDS],
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

const STATE_WORDS: usize = 624;
const SHIFT_WORDS: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// Why a draw cannot be made; the messages are CPython's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    /// `randint(a, b)` with `b < a`.
    #[error("empty range for randrange() ({start}, {stop}, {width})")]
    EmptyRange {
        /// `a`.
        start: i128,
        /// `b + 1`.
        stop: i128,
        /// `stop - start`.
        width: i128,
    },
    /// `choice` of an empty sequence.
    #[error("Cannot choose from an empty sequence")]
    EmptySequence,
    /// A draw wider than this model carries (CPython has no limit; the successor never needs
    /// more than a few dozen bits).
    #[error("a draw of {0} bits is wider than 128")]
    TooWide(u32),
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer given as its 32-bit words, least
    /// significant first (CPython seeds with the absolute value; leading zero words do not
    /// change the seed).
    pub fn from_seed_words(words: &[u32]) -> Self {
        let used = words
            .iter()
            .rposition(|word| *word != 0)
            .map_or(1, |last| last + 1);
        let key: &[u32] = if words.is_empty() {
            &[0]
        } else {
            &words[..used]
        };
        let mut generator = Self {
            state: [0; STATE_WORDS],
            index: STATE_WORDS,
        };
        generator.init_by_array(key);
        generator
    }

    /// `random.Random(int.from_bytes(bytes, "big"))`: the successor's seed is the sha256
    /// digest of the block hash read as a big-endian integer.
    pub fn from_seed_big_endian(bytes: &[u8]) -> Self {
        let mut words = Vec::with_capacity(bytes.len().div_ceil(4));
        for chunk in bytes.rchunks(4) {
            let mut word = [0u8; 4];
            word[4 - chunk.len()..].copy_from_slice(chunk);
            words.push(u32::from_be_bytes(word));
        }
        Self::from_seed_words(&words)
    }

    /// `random.Random(seed)` for a machine integer.
    pub fn from_seed_u64(seed: u64) -> Self {
        Self::from_seed_big_endian(&seed.to_be_bytes())
    }

    // Indices are added modulo 2^32, as CPython's C code adds them (`(uint32_t)j`).
    #[allow(clippy::cast_possible_truncation)]
    fn init_genrand(&mut self, seed: u32) {
        self.state[0] = seed;
        for i in 1..STATE_WORDS {
            let previous = self.state[i - 1];
            self.state[i] = 1_812_433_253u32
                .wrapping_mul(previous ^ (previous >> 30))
                .wrapping_add(i as u32);
        }
        self.index = STATE_WORDS;
    }

    #[allow(clippy::cast_possible_truncation)]
    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..STATE_WORDS.max(key.len()) {
            let previous = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (previous ^ (previous >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= STATE_WORDS {
                self.state[0] = self.state[STATE_WORDS - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..STATE_WORDS - 1 {
            let previous = self.state[i - 1];
            self.state[i] = (self.state[i]
                ^ (previous ^ (previous >> 30)).wrapping_mul(1_566_083_941))
            .wrapping_sub(i as u32);
            i += 1;
            if i >= STATE_WORDS {
                self.state[0] = self.state[STATE_WORDS - 1];
                i = 1;
            }
        }
        self.state[0] = UPPER_MASK;
        self.index = STATE_WORDS;
    }

    fn twist(&mut self) {
        let mag = |y: u32| if y & 1 == 0 { 0 } else { MATRIX_A };
        for k in 0..STATE_WORDS {
            let next = self.state[(k + 1) % STATE_WORDS];
            let y = (self.state[k] & UPPER_MASK) | (next & LOWER_MASK);
            self.state[k] = self.state[(k + SHIFT_WORDS) % STATE_WORDS] ^ (y >> 1) ^ mag(y);
        }
        self.index = 0;
    }

    /// The next raw 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= STATE_WORDS {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)`: `k ≤ 32` bits are the top bits of one output; wider values take one
    /// output per 32 bits, least significant word first, the last word cut to what is left.
    pub fn getrandbits(&mut self, bits: u32) -> Result<u128, DrawError> {
        if bits > 128 {
            return Err(DrawError::TooWide(bits));
        }
        if bits == 0 {
            return Ok(0);
        }
        if bits <= 32 {
            return Ok(u128::from(self.next_u32() >> (32 - bits)));
        }
        let mut value = 0u128;
        let mut left = bits;
        let mut shift = 0;
        while left > 0 {
            let mut word = self.next_u32();
            if left < 32 {
                word >>= 32 - left;
            }
            value |= u128::from(word) << shift;
            shift += 32;
            left = left.saturating_sub(32);
        }
        Ok(value)
    }

    /// `_randbelow(n)` for `n > 0`: `bit_length(n)` bits, drawn again until below `n`.
    pub fn randbelow(&mut self, below: u128) -> Result<u128, DrawError> {
        if below == 0 {
            return Err(DrawError::EmptySequence);
        }
        let bits = 128 - below.leading_zeros();
        loop {
            let value = self.getrandbits(bits)?;
            if value < below {
                return Ok(value);
            }
        }
    }

    /// `randint(a, b)`: `a + _randbelow(b - a + 1)`.
    pub fn randint(&mut self, low: i128, high: i128) -> Result<i128, DrawError> {
        let stop = high.saturating_add(1);
        let width = stop.saturating_sub(low);
        if width <= 0 {
            return Err(DrawError::EmptyRange {
                start: low,
                stop,
                width,
            });
        }
        // Below a positive i128 `width`, so it converts back.
        let offset = self.randbelow(width.unsigned_abs())?;
        let offset = i128::try_from(offset).map_err(|_| DrawError::TooWide(128))?;
        Ok(low.saturating_add(offset))
    }

    /// The index `choice` takes from a sequence of `len` items.
    pub fn choice_index(&mut self, len: usize) -> Result<usize, DrawError> {
        if len == 0 {
            return Err(DrawError::EmptySequence);
        }
        // Below `len`, so it fits.
        Ok(self.randbelow(len as u128)? as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPython's own: `random.seed(5489)`'s first output is the reference MT19937's.
    #[test]
    fn the_reference_generator_seeded_by_init_genrand() {
        let mut generator = PyRandom {
            state: [0; STATE_WORDS],
            index: STATE_WORDS,
        };
        generator.init_genrand(5489);
        assert_eq!(generator.next_u32(), 3_499_211_612);
    }

    /// The successor's test seed, from `F:tests/finetune/test_utils.py` and the semantics
    /// document's MT draws.
    #[test]
    fn the_successors_seed_draws_its_documented_pages() {
        let digest = crate::hashing::seed_from_block_hash(
            "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2",
        );
        let mut sft = PyRandom::from_seed_big_endian(&digest);
        assert_eq!(sft.randint(0, 149), Ok(112));
        let mut probe = PyRandom::from_seed_big_endian(&digest);
        let raw: Vec<u32> = (0..6).map(|_| probe.next_u32()).collect();
        assert_eq!(
            raw,
            [
                3567563177, 3921579003, 1888845137, 3708636887, 133906108, 3272655952
            ]
        );
        // A one-config `choice` eats draws 4 and 5, then a page of 6665.
        assert_eq!(sft.choice_index(1), Ok(0));
        assert_eq!(sft.randint(0, 6664), Ok(6242));
        let mut codeforces = PyRandom::from_seed_big_endian(&digest);
        assert_eq!(codeforces.randint(0, 119), Ok(106));
        assert_eq!(codeforces.choice_index(11), Ok(7));
    }

    #[test]
    fn empty_draws_are_refused_as_cpython_refuses_them() {
        let mut generator = PyRandom::from_seed_u64(1);
        assert!(matches!(
            generator.randint(0, -1),
            Err(DrawError::EmptyRange { width: 0, .. })
        ));
        assert_eq!(generator.choice_index(0), Err(DrawError::EmptySequence));
        assert_eq!(generator.getrandbits(129), Err(DrawError::TooWide(129)));
    }
}
