//! The weight rules: how weights go on chain for one mechanism of a subnet by whatever rule
//! it has (plain weights, hash commit-reveal, drand-timelocked commits) and whichever calls
//! the runtime offers ([`super::mechanism`]), what a submission needs decided before anything
//! is signed (the salt, the drand round), and where a validator stands (its uid, permit,
//! `LastUpdate`, `Weights`, the rate limit). Signing and following a transaction is
//! [`super::transactions`]'s.

use subxt::dynamic;
use subxt::ext::codec::Encode;
use subxt_signer::sr25519::Keypair;

use super::mechanism::{
    RuntimeOffer, SubnetMechanism, WeightCalls, hash_commit_payload, hash_reveal_payload,
    set_weights_payload, timelocked_payload,
};
use super::{Chain, ChainError, client_at, read_value, timelock};
use crate::machine::event::{SubmitMethod, WeightsCommitted, WeightsPrepared};

/// `version_key` of this release: `1000·major + 10·minor + patch`, as N computes its own.
pub fn version_key() -> u64 {
    let mut parts = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    1000 * major + 10 * minor + patch
}

impl Chain {
    /// Plain weights for `mechanism` (`set_mechanism_weights`, or `set_weights` where the
    /// runtime has only that) with a bounded retry of transport failures (a refusal is
    /// final). `uids` must be sorted and unique; `weights` are already in u16 form.
    pub async fn set_weights(
        &self,
        hotkey: &Keypair,
        mechanism: SubnetMechanism,
        uids: &[u16],
        weights: &[u16],
        version_key: u64,
    ) -> Result<u64, ChainError> {
        self.set_weights_attempts(hotkey, mechanism, uids, weights, version_key, 3)
            .await
    }

    /// Plain weights with up to `attempts` sends on transport failures. A journaled intent
    /// is sent once: a second transaction signed while the first may still be in the pool
    /// would be refused by the rate limit and hide the first one's fate.
    async fn set_weights_attempts(
        &self,
        hotkey: &Keypair,
        mechanism: SubnetMechanism,
        uids: &[u16],
        weights: &[u16],
        version_key: u64,
        attempts: usize,
    ) -> Result<u64, ChainError> {
        if uids.len() != weights.len() {
            return Err(ChainError::Invalid(format!(
                "{} uids for {} weights",
                uids.len(),
                weights.len()
            )));
        }
        if uids.windows(2).any(|pair| matches!(pair, [a, b] if a >= b)) {
            return Err(ChainError::Invalid("uids must be sorted and unique".into()));
        }
        let mut last = ChainError::Unavailable("no attempt was made".into());
        for _ in 0..attempts.max(1) {
            let calls = self.weight_calls().await?;
            let (call, payload) =
                set_weights_payload(&calls, mechanism, uids, weights, version_key)?;
            match self.submit(call.name, payload, hotkey).await {
                Err(error @ ChainError::Unavailable(_)) => last = error,
                other => return other,
            }
        }
        Err(last)
    }

    /// The hash commit of weights for `mechanism` (commit-reveal v2).
    pub async fn commit_weights(
        &self,
        hotkey: &Keypair,
        mechanism: SubnetMechanism,
        hash: [u8; 32],
    ) -> Result<u64, ChainError> {
        let calls = self.weight_calls().await?;
        let (call, payload) = hash_commit_payload(&calls, mechanism, hash)?;
        self.submit(call.name, payload, hotkey).await
    }

    /// The reveal of hash-committed weights for `mechanism`.
    pub async fn reveal_weights(
        &self,
        hotkey: &Keypair,
        mechanism: SubnetMechanism,
        uids: &[u16],
        values: &[u16],
        salt: &[u16],
        version_key: u64,
    ) -> Result<u64, ChainError> {
        let calls = self.weight_calls().await?;
        let (call, payload) =
            hash_reveal_payload(&calls, mechanism, uids, values, salt, version_key)?;
        self.submit(call.name, payload, hotkey).await
    }

    /// The weight calls the runtime at the head offers.
    pub async fn weight_calls(&self) -> Result<WeightCalls, ChainError> {
        self.call("reading the runtime's calls", |client| async move {
            Ok(WeightCalls::of(
                client_at(&client, None).await?.metadata_ref(),
            ))
        })
        .await
    }

    /// `MechanismCountCurrent(netuid)`: how many mechanisms the subnet runs (1 on runtimes
    /// without mechanisms).
    pub async fn mechanism_count(&self, netuid: u16) -> Result<u8, ChainError> {
        self.call("reading MechanismCountCurrent", |client| async move {
            let at = client_at(&client, None).await?;
            if !has_storage(&at, "MechanismCountCurrent") {
                return Ok(1);
            }
            read_value::<(u16,), u8, _>(
                &at.storage(),
                "SubtensorModule",
                "MechanismCountCurrent",
                (netuid,),
            )
            .await
        })
        .await
    }

    /// What the runtime offers for weights on `mechanism`, after checking the mechanism
    /// exists and a call for the subnet's rule does: the start-up line, or why weights cannot
    /// be set here.
    pub async fn runtime_offer(
        &self,
        mechanism: SubnetMechanism,
    ) -> Result<RuntimeOffer, ChainError> {
        let count = self.mechanism_count(mechanism.netuid).await?;
        if mechanism.mecid >= count {
            return Err(ChainError::Invalid(format!(
                "netuid {} has {count} mechanism{} (MechanismCountCurrent): mechanism {} does \
                 not exist (--mechid counts from 0)",
                mechanism.netuid,
                if count == 1 { "" } else { "s" },
                mechanism.mecid
            )));
        }
        mechanism.storage_index()?;
        let calls = self.weight_calls().await?;
        if !calls.any() {
            return Err(ChainError::Invalid(
                "the connected runtime has none of the weight calls this validator knows \
                 (set_mechanism_weights, set_weights, their commit-reveal forms): upgrade the \
                 validator"
                    .into(),
            ));
        }
        let rule = self.weights_rule(mechanism.netuid).await?;
        let (call, commit_reveal) = match rule {
            super::WeightsRule::Plain => (calls.plain(mechanism.mecid), None),
            super::WeightsRule::CommitRevealHash => {
                (calls.hash_commit(mechanism.mecid), Some(None))
            }
            super::WeightsRule::CommitRevealTimelocked { version } => {
                (calls.timelocked(mechanism.mecid), Some(Some(version)))
            }
        };
        let call = call.ok_or_else(|| {
            ChainError::Invalid(format!(
                "the connected runtime has no call for {rule:?} weights on mechanism {} of \
                 netuid {}",
                mechanism.mecid, mechanism.netuid
            ))
        })?;
        let spec_version = self
            .call("reading the runtime version", |client| async move {
                Ok(client_at(&client, None).await?.spec_version())
            })
            .await?;
        Ok(RuntimeOffer {
            spec_version,
            weights_call: call.name,
            commit_reveal,
            mechanism_count: count,
        })
    }
}

/// Whether the runtime at `at` has `SubtensorModule.name` in storage.
fn has_storage(at: &subxt::client::OnlineClientAtBlock<subxt::PolkadotConfig>, name: &str) -> bool {
    at.metadata_ref()
        .pallet_by_name("SubtensorModule")
        .and_then(|pallet| pallet.storage())
        .is_some_and(|storage| storage.entry_by_name(name).is_some())
}

/// One pending hash commit: `(hash, commit block, first reveal block, last reveal block)`.
pub type WeightCommit = ([u8; 32], u64, u64, u64);

impl Chain {
    /// `SubtensorModule.WeightCommits(index, hotkey)`: the hotkey's unrevealed commits on
    /// `mechanism`.
    pub async fn weight_commits(
        &self,
        mechanism: SubnetMechanism,
        hotkey: [u8; 32],
    ) -> Result<Vec<WeightCommit>, ChainError> {
        let index = mechanism.storage_index()?;
        self.call("reading WeightCommits", |client| async move {
            let at = client_at(&client, None).await?;
            let address = dynamic::storage::<(u16, [u8; 32]), Vec<WeightCommit>>(
                "SubtensorModule",
                "WeightCommits",
            );
            // An OptionQuery: no entry once every commit is revealed or expired.
            match at
                .storage()
                .try_fetch(address, (index, hotkey))
                .await
                .map_err(|e| ChainError::Unavailable(format!("reading WeightCommits: {e}")))?
            {
                Some(value) => value
                    .decode()
                    .map_err(|e| ChainError::Decode(format!("WeightCommits: {e}"))),
                None => Ok(Vec::new()),
            }
        })
        .await
    }
}

/// Seconds per block on subtensor (what bittensor assumes when it picks a drand round).
pub const BLOCK_TIME_S: f64 = 12.0;

/// `N` bytes from the operating system's random source.
pub fn os_random<const N: usize>() -> Result<[u8; N], ChainError> {
    use std::io::Read;
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(|e| ChainError::Invalid(format!("no randomness available: {e}")))?;
    Ok(bytes)
}

impl Chain {
    /// The drand round bittensor's rule picks for a timelocked commit made now on
    /// `mechanism`: the subnet's tempo and reveal period, with the mechanism's storage index
    /// where the rule says netuid, as the SDK computes it.
    pub async fn timelock_round(&self, mechanism: SubnetMechanism) -> Result<u64, ChainError> {
        let netuid = mechanism.netuid;
        let index = mechanism.storage_index()?;
        let (block, tempo, reveal_period) = self
            .call("reading the reveal period", |client| async move {
                let at = client_at(&client, None).await?;
                let storage = at.storage();
                let tempo: u16 =
                    read_value::<(u16,), u16, _>(&storage, "SubtensorModule", "Tempo", (netuid,))
                        .await?;
                let period: u64 = read_value::<(u16,), u64, _>(
                    &storage,
                    "SubtensorModule",
                    "RevealPeriodEpochs",
                    (netuid,),
                )
                .await?;
                Ok((at.block_number(), tempo, period))
            })
            .await?;
        let now_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| ChainError::Invalid(format!("the clock is before 1970: {e}")))?
            .as_secs_f64();
        Ok(timelock::reveal_round(
            block,
            index,
            u64::from(tempo),
            reveal_period,
            BLOCK_TIME_S,
            now_unix_s,
        ))
    }

    /// Commit-reveal v3/v4: encrypts the weights to drand round `round` and commits them for
    /// `mechanism`; the chain reveals them itself. Returns the including block.
    pub async fn commit_timelocked_weights(
        &self,
        hotkey: &Keypair,
        mechanism: SubnetMechanism,
        weights: &ChainWeights,
        version: u16,
        round: u64,
    ) -> Result<u64, ChainError> {
        let calls = self.weight_calls().await?;
        let account = hotkey.public_key().0;
        let payload = timelock::weights_payload(
            (version >= 4).then_some(account),
            &weights.uids,
            &weights.values,
            weights.version_key,
        );
        let ciphertext = timelock::encrypt(&payload, round, os_random::<32>()?)
            .map_err(|e| ChainError::Invalid(format!("encrypting the weights: {e}")))?;
        let (call, payload) = timelocked_payload(&calls, mechanism, &ciphertext, round, version)?;
        self.submit(call.name, payload, hotkey).await
    }
}

/// A fresh salt for a hash commit, from the operating system.
pub fn fresh_salt() -> Result<Vec<u16>, ChainError> {
    let bytes = os_random::<16>()?;
    Ok(bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect())
}

/// What sending prepared weights achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The weights are on chain (plain), or committed for the chain to reveal (timelocked):
    /// the including block.
    Included(u64),
    /// The hash commit is on chain; the weights are revealed inside its window.
    Committed(WeightsCommitted),
}

impl Chain {
    /// How weights go on `mechanism` now, with what the method needs decided before anything
    /// is signed (a fresh salt, the drand round), so it can be journaled first.
    pub async fn plan_submission(
        &self,
        mechanism: SubnetMechanism,
    ) -> Result<SubmitMethod, ChainError> {
        Ok(match self.weights_rule(mechanism.netuid).await? {
            super::WeightsRule::Plain => SubmitMethod::Plain,
            super::WeightsRule::CommitRevealHash => SubmitMethod::CommitRevealHash {
                salt: fresh_salt()?,
            },
            super::WeightsRule::CommitRevealTimelocked { version } => {
                let reveal_round = self.timelock_round(mechanism).await?;
                SubmitMethod::Timelocked {
                    version,
                    reveal_round,
                }
            }
        })
    }

    /// Sends `prepared` by its method: `set_weights`, the hash commit, or the timelocked
    /// commit. A hash commit answers with its reveal window; [`Chain::reveal_prepared`]
    /// finishes it.
    pub async fn send_prepared(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        prepared: &WeightsPrepared,
    ) -> Result<Sent, ChainError> {
        // The mechanism is the journaled intent's, so what is sent is what was recorded.
        let mechanism = SubnetMechanism {
            netuid,
            mecid: prepared.mecid,
        };
        let weights = ChainWeights::of(prepared);
        match &prepared.method {
            SubmitMethod::Plain => self
                .set_weights_attempts(
                    hotkey,
                    mechanism,
                    &weights.uids,
                    &weights.values,
                    weights.version_key,
                    1,
                )
                .await
                .map(Sent::Included),
            SubmitMethod::CommitRevealHash { salt } => {
                let account = hotkey.public_key().0;
                let hash = weights_commit_hash(
                    account,
                    mechanism.storage_index()?,
                    &weights.uids,
                    &weights.values,
                    salt,
                    weights.version_key,
                );
                self.commit_weights(hotkey, mechanism, hash).await?;
                self.find_commit(netuid, account, prepared)
                    .await?
                    .map(Sent::Committed)
                    .ok_or_else(|| {
                        ChainError::Decode(
                            "the commit is not in WeightCommits after inclusion".into(),
                        )
                    })
            }
            SubmitMethod::Timelocked {
                version,
                reveal_round,
            } => self
                .commit_timelocked_weights(hotkey, mechanism, &weights, *version, *reveal_round)
                .await
                .map(Sent::Included),
        }
    }

    /// The chain's record of the hash commit of `prepared` by `account`, while unrevealed.
    pub async fn find_commit(
        &self,
        netuid: u16,
        account: [u8; 32],
        prepared: &WeightsPrepared,
    ) -> Result<Option<WeightsCommitted>, ChainError> {
        let SubmitMethod::CommitRevealHash { salt } = &prepared.method else {
            return Ok(None);
        };
        let mechanism = SubnetMechanism {
            netuid,
            mecid: prepared.mecid,
        };
        let hash = weights_commit_hash(
            account,
            mechanism.storage_index()?,
            &prepared.uids,
            &prepared.weights,
            salt,
            prepared.version_key,
        );
        Ok(self
            .weight_commits(mechanism, account)
            .await?
            .into_iter()
            .find(|commit| commit.0 == hash)
            .map(|(_, block_commit, first, last)| WeightsCommitted {
                block_commit,
                block_reveal_first: first,
                block_reveal_last: last,
            }))
    }

    /// Reveals the committed `prepared` weights (commit-reveal v2). Returns the block.
    pub async fn reveal_prepared(
        &self,
        hotkey: &Keypair,
        netuid: u16,
        prepared: &WeightsPrepared,
    ) -> Result<u64, ChainError> {
        let SubmitMethod::CommitRevealHash { salt } = &prepared.method else {
            return Err(ChainError::Invalid(
                "only hash-committed weights are revealed".into(),
            ));
        };
        let mechanism = SubnetMechanism {
            netuid,
            mecid: prepared.mecid,
        };
        self.reveal_weights(
            hotkey,
            mechanism,
            &prepared.uids,
            &prepared.weights,
            salt,
            prepared.version_key,
        )
        .await
    }

    /// Where the validator `account` stands on `mechanism` at the head, in one read: its uid,
    /// permit and the subnet's limits, with `LastUpdate` and `Weights` of the mechanism.
    pub async fn standing(
        &self,
        mechanism: SubnetMechanism,
        account: [u8; 32],
    ) -> Result<Standing, ChainError> {
        let netuid = mechanism.netuid;
        let index = mechanism.storage_index()?;
        self.call("reading the validator's standing", |client| async move {
            let at = client_at(&client, None).await?;
            let storage = at.storage();
            let uid: Option<u16> = storage
                .try_fetch(
                    dynamic::storage::<(u16, [u8; 32]), u16>("SubtensorModule", "Uids"),
                    (netuid, account),
                )
                .await
                .map_err(|e| ChainError::Unavailable(format!("reading Uids: {e}")))?
                .map(|value| value.decode())
                .transpose()
                .map_err(|e| ChainError::Decode(format!("Uids: {e}")))?;
            let rate_limit: u64 = read_value::<(u16,), u64, _>(
                &storage,
                "SubtensorModule",
                "WeightsSetRateLimit",
                (netuid,),
            )
            .await?;
            let version_key_min: u64 = read_value::<(u16,), u64, _>(
                &storage,
                "SubtensorModule",
                "WeightsVersionKey",
                (netuid,),
            )
            .await?;
            let mut standing = Standing {
                head: at.block_number(),
                uid,
                validator_permit: false,
                last_update: 0,
                weights: Vec::new(),
                rate_limit,
                version_key_min,
            };
            if let Some(uid) = uid {
                let at_uid = usize::from(uid);
                let permits: Vec<bool> = read_value::<(u16,), Vec<bool>, _>(
                    &storage,
                    "SubtensorModule",
                    "ValidatorPermit",
                    (netuid,),
                )
                .await?;
                let updates: Vec<u64> = read_value::<(u16,), Vec<u64>, _>(
                    &storage,
                    "SubtensorModule",
                    "LastUpdate",
                    (index,),
                )
                .await?;
                standing.validator_permit = permits.get(at_uid).copied().unwrap_or(false);
                standing.last_update = updates.get(at_uid).copied().unwrap_or(0);
                standing.weights = read_value::<(u16, u16), Vec<(u16, u16)>, _>(
                    &storage,
                    "SubtensorModule",
                    "Weights",
                    (index, uid),
                )
                .await?;
            }
            Ok(standing)
        })
        .await
    }
}

/// Where a validator's hotkey stands on a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The head block read.
    pub head: u64,
    /// Its uid, when registered.
    pub uid: Option<u16>,
    /// Whether it holds a validator permit.
    pub validator_permit: bool,
    /// `LastUpdate` of its uid: the block its weights last changed (0 when never).
    pub last_update: u64,
    /// `Weights` of its uid: (uid, u16 weight) pairs.
    pub weights: Vec<(u16, u16)>,
    /// `WeightsSetRateLimit`: blocks between weight changes.
    pub rate_limit: u64,
    /// `WeightsVersionKey`: the lowest `version_key` the subnet accepts.
    pub version_key_min: u64,
}

/// Weights in the chain's form, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainWeights {
    /// Ascending, unique uids.
    pub uids: Vec<u16>,
    /// u16 weights, the largest 65535.
    pub values: Vec<u16>,
    /// `version_key`.
    pub version_key: u64,
}

impl ChainWeights {
    /// The weights of a prepared submission.
    pub fn of(prepared: &WeightsPrepared) -> Self {
        Self {
            uids: prepared.uids.clone(),
            values: prepared.weights.clone(),
            version_key: prepared.version_key,
        }
    }
}

/// The commit-reveal v2 hash subtensor checks on reveal: `blake2_256` of the SCALE encoding of
/// `(account, netuid, uids, values, salt, version_key)` (bittensor's `generate_weight_hash`).
pub fn weights_commit_hash(
    account: [u8; 32],
    netuid: u16,
    uids: &[u16],
    values: &[u16],
    salt: &[u16],
    version_key: u64,
) -> [u8; 32] {
    let encoded = (
        account,
        netuid,
        uids.to_vec(),
        values.to_vec(),
        salt.to_vec(),
        version_key,
    )
        .encode();
    blake2_256(&encoded)
}

fn blake2_256(bytes: &[u8]) -> [u8; 32] {
    sp_crypto_hashing::blake2_256(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_key_follows_n() {
        // N 0.2.7 → 27; this crate's version gives its own key the same way.
        let version = env!("CARGO_PKG_VERSION");
        let parts: Vec<u64> = version.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(version_key(), 1000 * parts[0] + 10 * parts[1] + parts[2]);
    }

    #[test]
    fn commit_hash_is_blake2_of_the_scale_tuple() {
        // The SCALE layout: 32-byte account, u16 LE, then each Vec<u16> as compact length and
        // LE elements, then u64 LE.
        let account = [7u8; 32];
        let hash = weights_commit_hash(account, 1, &[0, 2], &[65535, 100], &[9], 27);
        let mut expected_input = account.to_vec();
        expected_input.extend_from_slice(&1u16.to_le_bytes());
        expected_input.extend_from_slice(&[8, 0, 0, 2, 0]);
        expected_input.extend_from_slice(&[8, 0xff, 0xff, 100, 0]);
        expected_input.extend_from_slice(&[4, 9, 0]);
        expected_input.extend_from_slice(&27u64.to_le_bytes());
        assert_eq!(hash, blake2_256(&expected_input));
        // blake2b-256 of the empty string (RFC 7693 parameters, 32-byte digest).
        assert_eq!(
            crate::machine::wire::hex_encode(&blake2_256(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }
}
