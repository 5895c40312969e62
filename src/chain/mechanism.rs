//! Subnet mechanisms and the weight calls a runtime offers.
//!
//! Since subtensor v3.2.8 a subnet may run several mechanisms ("sub-subnets"): weights are
//! set per mechanism, and per-mechanism state (`Weights`, `LastUpdate`, weight commits) is
//! kept under the storage index `mecid · 4096 + netuid`, the index bittensor's SDK also hashes
//! commits with and picks drand rounds for. Which call carries weights is read off the
//! runtime's own metadata at each submission: the mechanism calls where the runtime has them,
//! the older calls only for mechanism 0 on runtimes without them (spec 218 among them).

use subxt::Metadata;
use subxt::dynamic::{self, Value};

use super::ChainError;

/// The most subnets a chain holds (subtensor's `GLOBAL_MAX_SUBNET_COUNT`): the stride of
/// mechanisms in storage indices.
pub const SUBNETS_MAX: u16 = 4096;

/// One mechanism of one subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetMechanism {
    /// The subnet.
    pub netuid: u16,
    /// The mechanism (`--mechid`; 0 is the subnet's own).
    pub mecid: u8,
}

impl SubnetMechanism {
    /// SubnetMechanism 0 of `netuid`: the subnet itself.
    pub fn of_subnet(netuid: u16) -> Self {
        Self { netuid, mecid: 0 }
    }

    /// `mecid · 4096 + netuid`: where the mechanism's weights, `LastUpdate` and commits are
    /// stored, and what commit hashes and drand rounds are computed with. An index past u16
    /// (a netuid of 4096 or more, a mechanism of 16 or more) names no storage.
    pub fn storage_index(&self) -> Result<u16, ChainError> {
        if self.netuid >= SUBNETS_MAX {
            return Err(ChainError::Invalid(format!(
                "netuid {} is past the chain's {SUBNETS_MAX} subnets",
                self.netuid
            )));
        }
        u16::from(self.mecid)
            .checked_mul(SUBNETS_MAX)
            .and_then(|base| base.checked_add(self.netuid))
            .ok_or_else(|| {
                ChainError::Invalid(format!(
                    "mechanism {} of netuid {} has no storage index",
                    self.mecid, self.netuid
                ))
            })
    }
}

/// A weight call: its name in `SubtensorModule`, and whether it takes the mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightCall {
    /// The call's name.
    pub name: &'static str,
    /// Whether its second argument is the mechanism.
    pub takes_mecid: bool,
}

/// The weight calls of one runtime, read off its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightCalls {
    names: Vec<&'static str>,
}

/// Every call name this module may use.
const KNOWN: [&str; 10] = [
    "set_mechanism_weights",
    "set_weights",
    "commit_mechanism_weights",
    "commit_weights",
    "reveal_mechanism_weights",
    "reveal_weights",
    "commit_timelocked_mechanism_weights",
    "commit_timelocked_weights",
    "commit_crv3_mechanism_weights",
    "commit_crv3_weights",
];

impl WeightCalls {
    /// The weight calls `metadata`'s `SubtensorModule` has.
    pub fn of(metadata: &Metadata) -> Self {
        let pallet = metadata.pallet_by_name("SubtensorModule");
        Self {
            names: KNOWN
                .into_iter()
                .filter(|name| {
                    pallet.is_some_and(|pallet| pallet.call_variant_by_name(name).is_some())
                })
                .collect(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(&name)
    }

    /// The first of `(mechanism call, legacy call)` the runtime has for `mecid`: the legacy
    /// call only for mechanism 0 and only without the mechanism call.
    fn pick(&self, mecid: u8, mechanism: &'static str, legacy: &'static str) -> Option<WeightCall> {
        if self.has(mechanism) {
            return Some(WeightCall {
                name: mechanism,
                takes_mecid: true,
            });
        }
        (mecid == 0 && self.has(legacy)).then_some(WeightCall {
            name: legacy,
            takes_mecid: false,
        })
    }

    /// Plain weights.
    pub fn plain(&self, mecid: u8) -> Option<WeightCall> {
        self.pick(mecid, "set_mechanism_weights", "set_weights")
    }

    /// A hash commit (commit-reveal v2).
    pub fn hash_commit(&self, mecid: u8) -> Option<WeightCall> {
        self.pick(mecid, "commit_mechanism_weights", "commit_weights")
    }

    /// The reveal of a hash commit.
    pub fn hash_reveal(&self, mecid: u8) -> Option<WeightCall> {
        self.pick(mecid, "reveal_mechanism_weights", "reveal_weights")
    }

    /// A drand-timelocked commit the chain reveals itself: the versioned call, or the older
    /// unversioned CRv3 one.
    pub fn timelocked(&self, mecid: u8) -> Option<WeightCall> {
        self.pick(
            mecid,
            "commit_timelocked_mechanism_weights",
            "commit_timelocked_weights",
        )
        .or_else(|| {
            self.pick(
                mecid,
                "commit_crv3_mechanism_weights",
                "commit_crv3_weights",
            )
        })
    }

    /// Whether the runtime has any call this validator sets weights with.
    pub fn any(&self) -> bool {
        !self.names.is_empty()
    }
}

/// Why a call cannot be made: the runtime lacks it for this mechanism.
fn missing(what: &str, mechanism: SubnetMechanism) -> ChainError {
    ChainError::Invalid(format!(
        "the connected runtime has no call for {what} on mechanism {} of netuid {}",
        mechanism.mecid, mechanism.netuid
    ))
}

/// The arguments of `call`: `(netuid[, mecid], rest…)`.
fn arguments(call: WeightCall, mechanism: SubnetMechanism, rest: Vec<Value>) -> Vec<Value> {
    let mut values = vec![Value::u128(u128::from(mechanism.netuid))];
    if call.takes_mecid {
        values.push(Value::u128(u128::from(mechanism.mecid)));
    }
    values.extend(rest);
    values
}

fn u16_list(values: &[u16]) -> Value {
    Value::unnamed_composite(values.iter().map(|v| Value::u128(u128::from(*v))))
}

/// A weight call's payload.
pub type Payload = subxt::tx::DynamicPayload<Vec<Value>>;

/// Plain weights for `mechanism`.
pub fn set_weights_payload(
    calls: &WeightCalls,
    mechanism: SubnetMechanism,
    uids: &[u16],
    weights: &[u16],
    version_key: u64,
) -> Result<(WeightCall, Payload), ChainError> {
    let call = calls
        .plain(mechanism.mecid)
        .ok_or_else(|| missing("plain weights", mechanism))?;
    let values = arguments(
        call,
        mechanism,
        vec![
            u16_list(uids),
            u16_list(weights),
            Value::u128(u128::from(version_key)),
        ],
    );
    Ok((call, dynamic::tx("SubtensorModule", call.name, values)))
}

/// The hash commit of weights for `mechanism`.
pub fn hash_commit_payload(
    calls: &WeightCalls,
    mechanism: SubnetMechanism,
    hash: [u8; 32],
) -> Result<(WeightCall, Payload), ChainError> {
    let call = calls
        .hash_commit(mechanism.mecid)
        .ok_or_else(|| missing("a weights hash commit", mechanism))?;
    let values = arguments(call, mechanism, vec![Value::from_bytes(hash)]);
    Ok((call, dynamic::tx("SubtensorModule", call.name, values)))
}

/// The reveal of hash-committed weights for `mechanism`.
pub fn hash_reveal_payload(
    calls: &WeightCalls,
    mechanism: SubnetMechanism,
    uids: &[u16],
    values: &[u16],
    salt: &[u16],
    version_key: u64,
) -> Result<(WeightCall, Payload), ChainError> {
    let call = calls
        .hash_reveal(mechanism.mecid)
        .ok_or_else(|| missing("a weights reveal", mechanism))?;
    let arguments = arguments(
        call,
        mechanism,
        vec![
            u16_list(uids),
            u16_list(values),
            u16_list(salt),
            Value::u128(u128::from(version_key)),
        ],
    );
    Ok((call, dynamic::tx("SubtensorModule", call.name, arguments)))
}

/// A timelocked commit of `ciphertext` to drand round `round` for `mechanism`, under
/// `CommitRevealWeightsVersion` `version` (the CRv3 calls take none).
pub fn timelocked_payload(
    calls: &WeightCalls,
    mechanism: SubnetMechanism,
    ciphertext: &[u8],
    round: u64,
    version: u16,
) -> Result<(WeightCall, Payload), ChainError> {
    let call = calls
        .timelocked(mechanism.mecid)
        .ok_or_else(|| missing("a timelocked weights commit", mechanism))?;
    let mut rest = vec![
        Value::from_bytes(ciphertext),
        Value::u128(u128::from(round)),
    ];
    if !call.name.contains("crv3") {
        rest.push(Value::u128(u128::from(version)));
    }
    let values = arguments(call, mechanism, rest);
    Ok((call, dynamic::tx("SubtensorModule", call.name, values)))
}

/// What the connected runtime offers for weights, as the start-up line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOffer {
    /// The runtime's `spec_version`.
    pub spec_version: u32,
    /// The call the next submission will use.
    pub weights_call: &'static str,
    /// `CommitRevealWeightsEnabled` for the subnet, and `CommitRevealWeightsVersion` where
    /// the runtime has it.
    pub commit_reveal: Option<Option<u16>>,
    /// `MechanismCountCurrent` (1 on runtimes without mechanisms).
    pub mechanism_count: u8,
}

impl std::fmt::Display for RuntimeOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let commit_reveal = match self.commit_reveal {
            None => "off".to_owned(),
            Some(None) => "on (hash commits)".to_owned(),
            Some(Some(version)) => format!("on, version {version}"),
        };
        write!(
            f,
            "runtime spec {}: weights by {}, commit-reveal {commit_reveal}, {} mechanism{}",
            self.spec_version,
            self.weights_call,
            self.mechanism_count,
            if self.mechanism_count == 1 { "" } else { "s" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_indices_are_the_sdks() {
        assert_eq!(SubnetMechanism::of_subnet(9).storage_index().unwrap(), 9);
        let first = SubnetMechanism {
            netuid: 9,
            mecid: 1,
        };
        assert_eq!(first.storage_index().unwrap(), 4105);
        let last = SubnetMechanism {
            netuid: 4095,
            mecid: 15,
        };
        assert_eq!(last.storage_index().unwrap(), 65535);
        assert!(
            SubnetMechanism {
                netuid: 1,
                mecid: 16
            }
            .storage_index()
            .is_err()
        );
        assert!(SubnetMechanism::of_subnet(4096).storage_index().is_err());
    }

    #[test]
    fn legacy_calls_serve_only_mechanism_zero_without_the_new_ones() {
        let old = WeightCalls {
            names: vec!["set_weights", "commit_weights", "reveal_weights"],
        };
        assert_eq!(old.plain(0).unwrap().name, "set_weights");
        assert!(old.plain(1).is_none());
        assert!(old.timelocked(0).is_none());
        let new = WeightCalls {
            names: vec![
                "set_mechanism_weights",
                "set_weights",
                "commit_timelocked_mechanism_weights",
                "commit_timelocked_weights",
            ],
        };
        for mecid in [0, 1] {
            let plain = new.plain(mecid).unwrap();
            assert_eq!(plain.name, "set_mechanism_weights");
            assert!(plain.takes_mecid);
            assert_eq!(
                new.timelocked(mecid).unwrap().name,
                "commit_timelocked_mechanism_weights"
            );
        }
        assert!(!WeightCalls::default().any());
    }
}
