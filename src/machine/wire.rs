//! Serde forms for values whose obvious JSON form would lose information: per-sample losses
//! (non-finite values, f32 precision) and raw commitment bytes.
//!
//! Both keep one compact binary form (for the journal) and a readable, exact JSON form (for
//! JSON Lines exports and golden journals); they tell the two apart by `is_human_readable`.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Per-sample losses as measured (f32), with `+inf` for a sample whose evaluation failed.
///
/// JSON: each finite value is written as the shortest decimal of its exact f64 widening, so it
/// reads back to the same f32 bit for bit; non-finite values are the strings `"inf"`, `"-inf"`
/// and `"NaN"`. On input `null` also means `+inf` (a failed sample).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossVec(pub Vec<f32>);

impl LossVec {
    /// The losses widened to f64, as Python floats hold them.
    pub fn to_f64(&self) -> Vec<f64> {
        self.0.iter().map(|loss| f64::from(*loss)).collect()
    }
}

/// Writes a non-finite float as a string and a finite one as a number.
pub(crate) fn serialize_f64_exact<S: Serializer>(
    value: f64,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if value == f64::INFINITY {
        serializer.serialize_str("inf")
    } else if value == f64::NEG_INFINITY {
        serializer.serialize_str("-inf")
    } else {
        serializer.serialize_f64(value)
    }
}

struct LossJson(f32);

impl Serialize for LossJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_f64_exact(f64::from(self.0), serializer)
    }
}

impl Serialize for LossVec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            // One byte string of little-endian f32s: decoding it is a bulk copy, which keeps
            // replay of a year of losses fast.
            let bytes: Vec<u8> = self.0.iter().flat_map(|loss| loss.to_le_bytes()).collect();
            return serializer.serialize_bytes(&bytes);
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for loss in &self.0 {
            seq.serialize_element(&LossJson(*loss))?;
        }
        seq.end()
    }
}

/// A float read from JSON: a number, `null` (+inf) or one of the non-finite names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FloatJson(pub f64);

impl<'de> Deserialize<'de> for FloatJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FloatVisitor;
        impl Visitor<'_> for FloatVisitor {
            type Value = FloatJson;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, null, \"inf\", \"-inf\" or \"NaN\"")
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<FloatJson, E> {
                Ok(FloatJson(value))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<FloatJson, E> {
                // Integral JSON numbers such as `2` are exact well below 2^53.
                Ok(FloatJson(super::numbers::exact_f64(value)))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<FloatJson, E> {
                let magnitude = super::numbers::exact_f64(value.unsigned_abs());
                Ok(FloatJson(if value < 0 { -magnitude } else { magnitude }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<FloatJson, E> {
                Ok(FloatJson(f64::INFINITY))
            }
            fn visit_none<E: de::Error>(self) -> Result<FloatJson, E> {
                Ok(FloatJson(f64::INFINITY))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<FloatJson, E> {
                match value {
                    "inf" | "Infinity" | "+inf" => Ok(FloatJson(f64::INFINITY)),
                    "-inf" | "-Infinity" => Ok(FloatJson(f64::NEG_INFINITY)),
                    "NaN" | "nan" => Ok(FloatJson(f64::NAN)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        deserializer.deserialize_any(FloatVisitor)
    }
}

/// An f64 that keeps its non-finite values in JSON (`"inf"`, `"NaN"`), for scores: use as
/// `#[serde(with = "f64_exact")]`. The binary form is the plain f64.
pub mod f64_exact {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{FloatJson, serialize_f64_exact};

    /// Writes the value.
    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serialize_f64_exact(*value, serializer)
        } else {
            serializer.serialize_f64(*value)
        }
    }

    /// Reads the value.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        if deserializer.is_human_readable() {
            FloatJson::deserialize(deserializer).map(|float| float.0)
        } else {
            f64::deserialize(deserializer)
        }
    }
}

/// A list of f64s in the form of [`f64_exact`]: `#[serde(with = "f64_vec_exact")]`.
pub mod f64_vec_exact {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{FloatJson, serialize_f64_exact};

    struct Exact(f64);

    impl Serialize for Exact {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serialize_f64_exact(self.0, serializer)
        }
    }

    /// Writes the values.
    pub fn serialize<S: Serializer>(values: &[f64], serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return values.serialize(serializer);
        }
        let mut seq = serializer.serialize_seq(Some(values.len()))?;
        for value in values {
            seq.serialize_element(&Exact(*value))?;
        }
        seq.end()
    }

    /// Reads the values.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f64>, D::Error> {
        if deserializer.is_human_readable() {
            let floats = Vec::<FloatJson>::deserialize(deserializer)?;
            Ok(floats.into_iter().map(|float| float.0).collect())
        } else {
            Vec::<f64>::deserialize(deserializer)
        }
    }
}

/// Rounds a JSON float to the nearest f32, as a loss is stored.
///
/// Values written by [`LossVec`] are exact f32 widenings, so they come back unchanged; a
/// hand-written decimal such as `2.01` rounds to the nearest f32 once, on import.
#[allow(clippy::cast_possible_truncation)]
fn nearest_f32(value: f64) -> f32 {
    value as f32
}

impl<'de> Deserialize<'de> for LossVec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return deserializer.deserialize_bytes(LossBytesVisitor);
        }
        struct SeqVisitor;
        impl<'de> Visitor<'de> for SeqVisitor {
            type Value = LossVec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of losses")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LossVec, A::Error> {
                let mut losses = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(FloatJson(value)) = seq.next_element()? {
                    losses.push(nearest_f32(value));
                }
                Ok(LossVec(losses))
            }
        }
        deserializer.deserialize_seq(SeqVisitor)
    }
}

/// Reads the binary form of [`LossVec`]: little-endian f32s in one byte string.
struct LossBytesVisitor;

impl LossBytesVisitor {
    fn convert<E: de::Error>(bytes: &[u8]) -> Result<LossVec, E> {
        if !bytes.len().is_multiple_of(4) {
            return Err(E::custom("loss bytes are not a whole number of f32s"));
        }
        Ok(LossVec(
            bytes
                .chunks_exact(4)
                .map(|chunk| chunk.try_into().map_or(f32::NAN, f32::from_le_bytes))
                .collect(),
        ))
    }
}

impl<'de> Visitor<'de> for LossBytesVisitor {
    type Value = LossVec;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("little-endian f32 bytes")
    }
    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<LossVec, E> {
        Self::convert(value)
    }
    fn visit_borrowed_bytes<E: de::Error>(self, value: &'de [u8]) -> Result<LossVec, E> {
        Self::convert(value)
    }
    fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<LossVec, E> {
        Self::convert(&value)
    }
}

/// A batch's prompt/response pairs, all text in one buffer.
///
/// A year of batches is tens of millions of short strings; keeping each batch's text in one
/// allocation makes decoding it a copy instead of a million allocations. JSON: a list of
/// `{"prompt", "response", "origin"}` objects.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Samples {
    text: String,
    /// Three end offsets per sample: prompt, response, origin.
    ends: Vec<u32>,
}

/// One sample, borrowed from [`Samples`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleRef<'a> {
    /// The user's prompt.
    pub prompt: &'a str,
    /// The reference response.
    pub response: &'a str,
    /// Where the pair came from (run, step and uid; file and row).
    pub origin: &'a str,
}

/// A batch's text does not fit 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a batch's text may not exceed 4 GiB")]
pub struct BatchTooLarge;

impl Samples {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a sample.
    pub fn push(
        &mut self,
        prompt: &str,
        response: &str,
        origin: &str,
    ) -> Result<(), BatchTooLarge> {
        let mut ends = [0u32; 3];
        let mut length = self.text.len();
        for (end, part) in ends.iter_mut().zip([prompt, response, origin]) {
            length = length.checked_add(part.len()).ok_or(BatchTooLarge)?;
            *end = u32::try_from(length).map_err(|_| BatchTooLarge)?;
        }
        self.text.push_str(prompt);
        self.text.push_str(response);
        self.text.push_str(origin);
        self.ends.extend_from_slice(&ends);
        Ok(())
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.ends.len() / 3
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The sample at `index`.
    pub fn get(&self, index: usize) -> Option<SampleRef<'_>> {
        let start = match index.checked_mul(3)? {
            0 => 0,
            at => usize::try_from(*self.ends.get(at.checked_sub(1)?)?).ok()?,
        };
        let first = index.checked_mul(3)?;
        let bounds = self.ends.get(first..first.checked_add(3)?)?;
        let mut parts = [""; 3];
        let mut from = start;
        for (part, end) in parts.iter_mut().zip(bounds) {
            let end = usize::try_from(*end).ok()?;
            *part = self.text.get(from..end)?;
            from = end;
        }
        let [prompt, response, origin] = parts;
        Some(SampleRef {
            prompt,
            response,
            origin,
        })
    }

    /// The samples in order.
    pub fn iter(&self) -> impl Iterator<Item = SampleRef<'_>> {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    /// Total bytes of text.
    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    /// Checks that every offset is in order, in range and on a character boundary.
    fn validate(text: String, ends: Vec<u32>) -> Result<Self, &'static str> {
        if !ends.len().is_multiple_of(3) {
            return Err("sample offsets are not in threes");
        }
        let mut previous = 0usize;
        for end in &ends {
            let end = usize::try_from(*end).map_err(|_| "sample offset out of range")?;
            if end < previous || end > text.len() || !text.is_char_boundary(end) {
                return Err("sample offsets are out of order, out of range or split a character");
            }
            previous = end;
        }
        if previous != text.len() {
            return Err("sample text has bytes past the last sample");
        }
        Ok(Self { text, ends })
    }
}

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Samples {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let mut seq = serializer.serialize_seq(Some(self.len()))?;
            for sample in self.iter() {
                seq.serialize_element(&sample)?;
            }
            return seq.end();
        }
        let ends: Vec<u8> = self.ends.iter().flat_map(|end| end.to_le_bytes()).collect();
        (serde_bytes_ref(&ends), self.text.as_str()).serialize(serializer)
    }
}

/// Serialises a byte slice as bytes (serde's default for `&[u8]` is a sequence).
struct BytesRef<'a>(&'a [u8]);

fn serde_bytes_ref(bytes: &[u8]) -> BytesRef<'_> {
    BytesRef(bytes)
}

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

#[derive(Deserialize)]
struct SampleOwned {
    prompt: String,
    response: String,
    #[serde(default)]
    origin: String,
}

struct BytesOwned(Vec<u8>);

impl<'de> Deserialize<'de> for BytesOwned {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_bytes_vec(deserializer).map(BytesOwned)
    }
}

impl<'de> Deserialize<'de> for Samples {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let samples = Vec::<SampleOwned>::deserialize(deserializer)?;
            let mut batch = Samples::new();
            for sample in &samples {
                batch
                    .push(&sample.prompt, &sample.response, &sample.origin)
                    .map_err(de::Error::custom)?;
            }
            return Ok(batch);
        }
        let (BytesOwned(ends), text) = <(BytesOwned, String)>::deserialize(deserializer)?;
        if ends.len() % 4 != 0 {
            return Err(de::Error::custom("sample offsets are not whole u32s"));
        }
        let ends = ends
            .chunks_exact(4)
            .map(|chunk| chunk.try_into().map_or(u32::MAX, u32::from_le_bytes))
            .collect();
        Samples::validate(text, ends).map_err(de::Error::custom)
    }
}

/// Bytes read from chain. JSON: a string when they are UTF-8, else `{"hex": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBytes(pub Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawBytesJson {
    Text(String),
    Hex { hex: String },
}

impl Serialize for RawBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return serializer.serialize_bytes(&self.0);
        }
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => RawBytesJson::Hex {
                hex: hex_encode(&self.0),
            }
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if !deserializer.is_human_readable() {
            return serde_bytes_vec(deserializer).map(RawBytes);
        }
        match RawBytesJson::deserialize(deserializer)? {
            RawBytesJson::Text(text) => Ok(RawBytes(text.into_bytes())),
            RawBytesJson::Hex { hex } => hex_decode(&hex)
                .map(RawBytes)
                .ok_or_else(|| de::Error::custom(format!("{hex:?} is not hex"))),
        }
    }
}

fn serde_bytes_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct BytesVisitor;
    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Vec<u8>, E> {
            Ok(value.to_vec())
        }
        fn visit_borrowed_bytes<E: de::Error>(self, value: &'de [u8]) -> Result<Vec<u8>, E> {
            Ok(value.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(value)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut bytes = Vec::new();
            while let Some(byte) = seq.next_element()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
    deserializer.deserialize_byte_buf(BytesVisitor)
}

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len().saturating_mul(2));
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            text.push(char::from(
                *DIGITS.get(usize::from(nibble)).unwrap_or(&b'0'),
            ));
        }
    }
    text
}

/// Parses hex (either case, optional `0x`); `None` when it is not hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.strip_prefix("0x").unwrap_or(text);
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [high, low] => Some(digit(*high)? << 4 | digit(*low)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_round_trip_through_json_bit_for_bit() {
        let losses = LossVec(vec![
            2.01,
            0.1,
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            1.0e-30,
        ]);
        let json = serde_json::to_string(&losses).unwrap();
        let back: LossVec = serde_json::from_str(&json).unwrap();
        let bits = |v: &LossVec| v.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&losses), bits(&back));
        assert_eq!(json, serde_json::to_string(&back).unwrap());
    }

    #[test]
    fn loss_json_accepts_null_and_integers() {
        let back: LossVec = serde_json::from_str("[null, 2, \"inf\", 0.5]").unwrap();
        assert_eq!(back.0[0], f32::INFINITY);
        assert_eq!(back.0[1], 2.0);
        assert_eq!(back.0[2], f32::INFINITY);
        assert_eq!(back.0[3], 0.5);
        assert!(serde_json::from_str::<LossVec>("[\"fast\"]").is_err());
    }

    #[test]
    fn samples_round_trip_in_both_forms() {
        let mut samples = Samples::new();
        samples.push("What is 2+2?", "4", "run/1").unwrap();
        samples.push("", "empty prompt", "").unwrap();
        samples.push("ünïcødé", "✓", "row 3").unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples.get(2).unwrap().prompt, "ünïcødé");
        assert_eq!(samples.get(1).unwrap().prompt, "");
        assert!(samples.get(3).is_none());
        let json = serde_json::to_string(&samples).unwrap();
        assert!(json.starts_with(r#"[{"prompt":"What is 2+2?","response":"4","origin":"run/1"}"#));
        assert_eq!(serde_json::from_str::<Samples>(&json).unwrap(), samples);
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&samples, config).unwrap();
        let (back, _): (Samples, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(back, samples);
    }

    #[test]
    fn damaged_sample_offsets_are_refused() {
        assert!(Samples::validate("ab".into(), vec![1, 3, 3]).is_err());
        assert!(Samples::validate("ab".into(), vec![2, 1, 2]).is_err());
        assert!(Samples::validate("é".into(), vec![1, 2, 2]).is_err());
        assert!(Samples::validate("ab".into(), vec![1, 1]).is_err());
        assert!(Samples::validate("abc".into(), vec![1, 2, 2]).is_err());
        assert!(Samples::validate("ab".into(), vec![1, 2, 2]).is_ok());
    }

    #[test]
    fn raw_bytes_are_text_or_hex() {
        let text = RawBytes(b"ns:name:c:h:l3".to_vec());
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"ns:name:c:h:l3\"");
        let binary = RawBytes(vec![0xff, 0x00, 0x10]);
        let json = serde_json::to_string(&binary).unwrap();
        assert_eq!(json, "{\"hex\":\"ff0010\"}");
        assert_eq!(serde_json::from_str::<RawBytes>(&json).unwrap(), binary);
    }

    #[test]
    fn hex_decode_refuses_garbage() {
        assert_eq!(hex_decode("0xA0ff"), Some(vec![0xa0, 0xff]));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
