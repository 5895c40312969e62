//! The CPython `random` model against CPython itself: `fixtures/cpython_random/draws.json`
//! holds, for twenty seeds (machine-sized, wider than 64 bits, negative, the successor's
//! block-hash seeds), the first raw outputs and a script of `getrandbits`, `randint` and
//! `choice` calls with CPython's results, recorded by `fixtures/cpython_random/generate.py`.

use serde_json::Value;
use validator::pyrandom::PyRandom;

fn fixture() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cpython_random/draws.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The 32-bit words, least significant first, of the absolute value of a decimal integer.
#[allow(clippy::cast_possible_truncation)] // Keeping the low word is the point.
fn words_of_decimal(decimal: &str) -> Vec<u32> {
    let digits = decimal.trim_start_matches('-');
    let mut words: Vec<u32> = vec![0];
    for digit in digits.bytes() {
        let mut carry = u64::from(digit - b'0');
        for word in &mut words {
            let value = u64::from(*word) * 10 + carry;
            *word = value as u32;
            carry = value >> 32;
        }
        if carry > 0 {
            words.push(carry as u32);
        }
    }
    words
}

fn as_i128(value: &Value) -> i128 {
    value.as_i64().map(i128::from).unwrap()
}

#[test]
fn draws_match_cpython_for_every_recorded_seed() {
    let fixture = fixture();
    let seeds = fixture["seeds"].as_array().unwrap();
    assert!(seeds.len() >= 20);
    for vector in seeds {
        let seed = vector["seed"].as_str().unwrap();
        let mut generator = PyRandom::from_seed_words(&words_of_decimal(seed));
        let raw: Vec<u64> = (0..vector["raw"].as_array().unwrap().len())
            .map(|_| u64::from(generator.next_u32()))
            .collect();
        let expected: Vec<u64> = vector["raw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(raw, expected, "seed {seed}");
        let mut generator = PyRandom::from_seed_words(&words_of_decimal(seed));
        for (index, call) in vector["calls"].as_array().unwrap().iter().enumerate() {
            let context = format!("seed {seed}, call {index}: {call}");
            match call["call"].as_str().unwrap() {
                "getrandbits" => {
                    let bits = u32::try_from(call["k"].as_u64().unwrap()).unwrap();
                    let value: u128 = call["value"].as_str().unwrap().parse().unwrap();
                    assert_eq!(generator.getrandbits(bits), Ok(value), "{context}");
                }
                "randint" => {
                    let (low, high) = (as_i128(&call["a"]), as_i128(&call["b"]));
                    assert_eq!(
                        generator.randint(low, high),
                        Ok(as_i128(&call["value"])),
                        "{context}"
                    );
                }
                "choice" => {
                    let len = usize::try_from(call["n"].as_u64().unwrap()).unwrap();
                    let value = usize::try_from(call["value"].as_u64().unwrap()).unwrap();
                    assert_eq!(generator.choice_index(len), Ok(value), "{context}");
                }
                other => panic!("unknown call {other}"),
            }
        }
    }
}

/// The seed's words as the successor makes them: the block hash's sha256, big-endian.
#[test]
fn a_digest_seeds_as_its_big_endian_integer() {
    let digest = validator::hashing::seed_from_block_hash(
        "0xf0c1d88fffb58f2de2798abb2236460f426b02a9c84cad7463188eff75140bd2",
    );
    let decimal = validator::hashing::decimal_of_big_endian(&digest);
    let mut from_words = PyRandom::from_seed_words(&words_of_decimal(&decimal));
    let mut from_digest = PyRandom::from_seed_big_endian(&digest);
    for _ in 0..1000 {
        assert_eq!(from_words.next_u32(), from_digest.next_u32());
    }
    // Leading zero bytes do not change the integer, so they do not change the draws.
    let mut padded = vec![0u8; 5];
    padded.extend_from_slice(&digest);
    let mut from_padded = PyRandom::from_seed_big_endian(&padded);
    let mut from_digest = PyRandom::from_seed_big_endian(&digest);
    assert_eq!(from_padded.next_u32(), from_digest.next_u32());
}
