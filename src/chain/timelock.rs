//! Commit-reveal v3/v4: weights encrypted to a future drand quicknet round, which the chain
//! decrypts itself once the round's signature is published.
//!
//! What the chain expects (subtensor and bittensor's `bittensor-drand`, both on the
//! `ideal-lab5/timelock` tle revision `5416406c`):
//! - the plaintext is the SCALE encoding of `WeightsTlockPayload { hotkey: Vec<u8>, uids:
//!   Vec<u16>, values: Vec<u16>, version_key: u64 }` (v4; v3 has no `hotkey`);
//! - the identity is `sha256(round as 8 big-endian bytes)`, the message drand quicknet signs
//!   for that round (BLS on G1, RFC 9380 hash-to-curve, public key on G2);
//! - the ciphertext is Boneh-Franklin IBE of a fresh 32-byte key (header) plus AES-256-GCM of
//!   the plaintext under that key (body), serialized with arkworks' canonical compressed form:
//!   `u` (G2, 96 bytes), then `v`, `w`, `body` and `cipher_suite` each as a `Vec<u8>` (a
//!   u64 little-endian length, then the bytes); the body is itself `ciphertext: Vec<u8>,
//!   nonce: Vec<u8>`.
//!
//! The `timelock` crate (0.3.0) provides the cryptography; its own serialization writes `v`
//! and `w` as fixed 32-byte arrays, without the length the chain's revision expects, so this
//! module writes (and reads) the chain's layout itself.

use ark_serialize::{CanonicalDeserialize, CanonicalSerialize};
use sha2::Digest;
use subxt::ext::codec::Encode;
use timelock::block_ciphers::{AESGCMBlockCipherProvider, AESOutput};
use timelock::engines::EngineBLS;
use timelock::engines::drand::TinyBLS381;
use timelock::ibe::fullident::{Ciphertext as IbeCiphertext, Identity};
use timelock::tlock::{TLECiphertext, tld, tle};

/// drand quicknet's group public key (G2, compressed), from the network's `/info`
/// (chain hash `52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971`).
pub const QUICKNET_PUBLIC_KEY_HEX: &str = "83cf0f2896adee7eb8b5f01fcad3912212c437e0073e911fb90022d3e760183c8c4b450b6a0a6c3ac6a5776a2d1064510d1fec758c921cc22b0e17e63aaf4bcb5ed66304de9cf809bd274ca73bab4af5a6e9c76a4bc09e76eae8991ef5ece45a";
/// Quicknet's genesis, Unix seconds.
pub const QUICKNET_GENESIS_S: u64 = 1_692_803_367;
/// Quicknet's period, seconds.
pub const QUICKNET_PERIOD_S: u64 = 3;
/// Blocks after the first reveal block that bittensor aims the round at, so the pulse has
/// reached the chain by then.
pub const SECURITY_BLOCK_OFFSET: u64 = 3;

/// What can go wrong encrypting or decrypting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelockError {
    /// A key, signature or ciphertext is not well formed.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The signature does not open this ciphertext (wrong round, or not drand's).
    #[error("the signature does not decrypt this ciphertext")]
    WrongSignature,
    /// Encryption failed.
    #[error("encryption failed")]
    Encryption,
}

/// The plaintext of a v4 commit: SCALE of `(hotkey, uids, values, version_key)`; v3 leaves the
/// hotkey out.
pub fn weights_payload(
    hotkey: Option<[u8; 32]>,
    uids: &[u16],
    values: &[u16],
    version_key: u64,
) -> Vec<u8> {
    match hotkey {
        Some(account) => (
            account.to_vec(),
            uids.to_vec(),
            values.to_vec(),
            version_key,
        )
            .encode(),
        None => (uids.to_vec(), values.to_vec(), version_key).encode(),
    }
}

/// The message drand signs for `round`: `sha256(round, big-endian)`.
pub fn round_message(round: u64) -> [u8; 32] {
    sha2::Sha256::digest(round.to_be_bytes()).into()
}

fn quicknet_public_key() -> Result<<TinyBLS381 as EngineBLS>::PublicKeyGroup, TimelockError> {
    let bytes = crate::machine::wire::hex_decode(QUICKNET_PUBLIC_KEY_HEX)
        .ok_or(TimelockError::Malformed("public key"))?;
    <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(bytes.as_slice())
        .map_err(|_| TimelockError::Malformed("public key"))
}

/// Whether `signature` (48 bytes, compressed G1) is quicknet's signature of `round`.
pub fn verify_round_signature(round: u64, signature: &[u8]) -> Result<bool, TimelockError> {
    use ark_ec::PrimeGroup;
    use ark_ec::pairing::Pairing;
    let signature = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|_| TimelockError::Malformed("signature"))?;
    let message_point = Identity::new(b"", &round_message(round)).public::<TinyBLS381>();
    let generator = <TinyBLS381 as EngineBLS>::PublicKeyGroup::generator();
    let left = ark_bls12_381::Bls12_381::pairing(signature, generator);
    let right = ark_bls12_381::Bls12_381::pairing(message_point, quicknet_public_key()?);
    Ok(left == right)
}

fn push_vec(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Encrypts `plaintext` to quicknet `round` in the chain's layout. `seed` must be fresh
/// randomness (32 bytes); it keys the RNG that draws the symmetric key, IBE randomness and
/// nonce.
pub fn encrypt(plaintext: &[u8], round: u64, seed: [u8; 32]) -> Result<Vec<u8>, TimelockError> {
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let identity = Identity::new(b"", &round_message(round));
    let ciphertext = tle::<TinyBLS381, AESGCMBlockCipherProvider, _>(
        quicknet_public_key()?,
        key,
        plaintext,
        identity,
        rng,
    )
    .map_err(|_| TimelockError::Encryption)?;
    let mut out = Vec::with_capacity(96 + 2 * 40 + ciphertext.body.len() + 32);
    ciphertext
        .header
        .u
        .serialize_compressed(&mut out)
        .map_err(|_| TimelockError::Encryption)?;
    push_vec(&mut out, &ciphertext.header.v);
    push_vec(&mut out, &ciphertext.header.w);
    push_vec(&mut out, &ciphertext.body);
    push_vec(&mut out, &ciphertext.cipher_suite);
    Ok(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], TimelockError> {
        if self.0.len() < count {
            return Err(TimelockError::Malformed(what));
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Ok(head)
    }

    fn vec(&mut self, what: &'static str) -> Result<&'a [u8], TimelockError> {
        let length: [u8; 8] = self
            .take(8, what)?
            .try_into()
            .map_err(|_| TimelockError::Malformed(what))?;
        let length = usize::try_from(u64::from_le_bytes(length))
            .map_err(|_| TimelockError::Malformed(what))?;
        self.take(length, what)
    }
}

/// Decrypts a commit in the chain's layout with a round's signature (what the chain does
/// once the pulse arrives; auditors and tests use it).
pub fn decrypt(ciphertext: &[u8], signature: &[u8]) -> Result<Vec<u8>, TimelockError> {
    let mut reader = Reader(ciphertext);
    let u = <TinyBLS381 as EngineBLS>::PublicKeyGroup::deserialize_compressed(
        reader.take(96, "ciphertext header")?,
    )
    .map_err(|_| TimelockError::Malformed("ciphertext header"))?;
    let v: [u8; 32] = reader
        .vec("ciphertext header")?
        .try_into()
        .map_err(|_| TimelockError::Malformed("ciphertext header"))?;
    let w: [u8; 32] = reader
        .vec("ciphertext header")?
        .try_into()
        .map_err(|_| TimelockError::Malformed("ciphertext header"))?;
    let body = reader.vec("ciphertext body")?.to_vec();
    let cipher_suite = reader.vec("cipher suite")?.to_vec();
    if !reader.0.is_empty() || cipher_suite != b"AES_GCM_" {
        return Err(TimelockError::Malformed("ciphertext"));
    }
    // The body must be an AES-GCM output, or decryption reports the wrong cause.
    AESOutput::deserialize_compressed(body.as_slice())
        .map_err(|_| TimelockError::Malformed("ciphertext body"))?;
    let signature = <TinyBLS381 as EngineBLS>::SignatureGroup::deserialize_compressed(signature)
        .map_err(|_| TimelockError::Malformed("signature"))?;
    let ciphertext = TLECiphertext::<TinyBLS381> {
        header: IbeCiphertext { u, v, w },
        body,
        cipher_suite,
    };
    tld::<TinyBLS381, AESGCMBlockCipherProvider>(ciphertext, signature)
        .map_err(|_| TimelockError::WrongSignature)
}

/// The drand round a commit made at `block_current` is encrypted to: bittensor's rule (aim at
/// the first block of the reveal epoch plus [`SECURITY_BLOCK_OFFSET`], convert that moment to
/// a quicknet round, rounding down; at least 1).
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn reveal_round(
    block_current: u64,
    netuid: u16,
    tempo: u64,
    reveal_period_epochs: u64,
    block_time_s: f64,
    now_unix_s: f64,
) -> u64 {
    let tempo_plus_one = tempo.saturating_add(1);
    let netuid_plus_one = u64::from(netuid) + 1;
    // A node's values are not trusted to be sane: saturate rather than overflow.
    let epoch_current = block_current.saturating_add(netuid_plus_one) / tempo_plus_one;
    let epoch_reveal = epoch_current.saturating_add(reveal_period_epochs);
    let block_first_reveal = epoch_reveal
        .saturating_mul(tempo_plus_one)
        .saturating_sub(netuid_plus_one);
    let block_target = block_first_reveal.saturating_add(SECURITY_BLOCK_OFFSET);
    let seconds_until = block_target.saturating_sub(block_current) as f64 * block_time_s;
    let round = ((now_unix_s + seconds_until - QUICKNET_GENESIS_S as f64)
        / QUICKNET_PERIOD_S as f64)
        .floor();
    // Rounds are whole and positive; `as` saturates (and maps NaN to 0), then the floor of 1.
    (round as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (review of issue 35): a node answering `RevealPeriodEpochs = u64::MAX`
    /// overflowed the epoch sum (a panic in debug builds); it saturates now.
    #[test]
    fn hostile_reveal_periods_saturate() {
        let round = reveal_round(u64::MAX, u16::MAX, u64::MAX, u64::MAX, 12.0, 1.7e9);
        assert!(round >= 1);
        let round = reveal_round(100, 1, 360, u64::MAX, 12.0, 1.7e9);
        assert!(round >= 1);
    }

    /// drand quicknet's round 123, as its public API serves it
    /// (`/52db9ba7.../public/123`) and drand-verify's documentation quotes it. The test checks
    /// it against quicknet's public key before trusting it.
    const ROUND_123: u64 = 123;
    const SIGNATURE_123: &str = "b75c69d0b72a5d906e854e808ba7e2accb1542ac355ae486d591aa9d43765482e26cd02df835d3546d23c4b13e0dfc92";

    fn signature_123() -> Vec<u8> {
        crate::machine::wire::hex_decode(SIGNATURE_123).unwrap()
    }

    #[test]
    fn the_quicknet_vector_is_a_real_signature() {
        assert!(verify_round_signature(ROUND_123, &signature_123()).unwrap());
        assert!(!verify_round_signature(ROUND_123 + 1, &signature_123()).unwrap());
    }

    #[test]
    fn a_commit_opens_with_drands_signature_of_its_round_only() {
        let payload = weights_payload(Some([5; 32]), &[0, 3, 7], &[65535, 100, 1], 2_003);
        let ciphertext = encrypt(&payload, ROUND_123, [9; 32]).unwrap();
        assert_eq!(decrypt(&ciphertext, &signature_123()).unwrap(), payload);
        // Encrypted to another round, the same signature does not open it.
        let other = encrypt(&payload, ROUND_123 + 1, [9; 32]).unwrap();
        assert_eq!(
            decrypt(&other, &signature_123()),
            Err(TimelockError::WrongSignature)
        );
        // Fresh randomness, a different ciphertext, the same plaintext.
        let again = encrypt(&payload, ROUND_123, [10; 32]).unwrap();
        assert_ne!(again, ciphertext);
        assert_eq!(decrypt(&again, &signature_123()).unwrap(), payload);
    }

    #[test]
    fn the_ciphertext_has_the_chains_layout() {
        let payload = weights_payload(None, &[1], &[65535], 7);
        let ciphertext = encrypt(&payload, ROUND_123, [1; 32]).unwrap();
        // u: 96; v, w: 8 + 32 each; body: 8 + (8 + len + 16 tag) + (8 + 12 nonce);
        // cipher suite: 8 + 8.
        let body = 8 + payload.len() + 16 + 8 + 12;
        assert_eq!(ciphertext.len(), 96 + 40 + 40 + 8 + body + 16);
        assert_eq!(&ciphertext[96..104], &32u64.to_le_bytes());
        assert_eq!(&ciphertext[136..144], &32u64.to_le_bytes());
        assert_eq!(&ciphertext[176..184], &(body as u64).to_le_bytes());
        assert_eq!(
            &ciphertext[ciphertext.len() - 16..ciphertext.len() - 8],
            &8u64.to_le_bytes()
        );
        assert_eq!(&ciphertext[ciphertext.len() - 8..], b"AES_GCM_");
        // Truncated or padded, it is malformed rather than mis-decrypted.
        assert!(matches!(
            decrypt(&ciphertext[..ciphertext.len() - 1], &signature_123()),
            Err(TimelockError::Malformed(_))
        ));
        let mut padded = ciphertext.clone();
        padded.push(0);
        assert!(matches!(
            decrypt(&padded, &signature_123()),
            Err(TimelockError::Malformed(_))
        ));
    }

    #[test]
    fn the_payload_is_scale_of_the_struct_fields() {
        let payload = weights_payload(Some([0xab; 32]), &[1, 2], &[3, 65535], 42);
        let mut expected = vec![128]; // compact(32)
        expected.extend_from_slice(&[0xab; 32]);
        expected.extend_from_slice(&[8, 1, 0, 2, 0]);
        expected.extend_from_slice(&[8, 3, 0, 0xff, 0xff]);
        expected.extend_from_slice(&42u64.to_le_bytes());
        assert_eq!(payload, expected);
        assert_eq!(
            weights_payload(None, &[1, 2], &[3, 65535], 42),
            expected[33..].to_vec()
        );
    }

    #[test]
    fn the_round_follows_bittensors_rule() {
        // netuid 1, tempo 360, block 1000: epoch (1000 + 2) / 361 = 2; reveal epoch 3; its first
        // block 3 · 361 − 2 = 1081; target 1084, 84 blocks · 12 s = 1008 s ahead.
        let now = 1_700_000_000.0;
        let expected = ((now + 1008.0 - 1_692_803_367.0) / 3.0_f64).floor();
        assert_eq!(expected, 2_399_213.0);
        assert_eq!(reveal_round(1000, 1, 360, 1, 12.0, now), 2_399_213);
        // Two epochs of reveal period move it one tempo (361 blocks) further.
        assert_eq!(
            reveal_round(1000, 1, 360, 2, 12.0, now),
            2_399_213 + 361 * 4
        );
        // Before genesis it is round 1.
        assert_eq!(reveal_round(0, 0, 10, 1, 12.0, 0.0), 1);
    }
}
