//! A recorded chain (`--chain-snapshot FILE`): a timeline of metagraphs and commitments the
//! validator runs against with no node at all. Its head starts at `start_block` and advances
//! `blocks_per_step` per step begun; what it shows at a block is the latest metagraph, and per
//! hotkey the latest commitment, of the entries at or before that block. Nothing is ever sent
//! to it: the weights are the fold's vector, journaled with each step.
//!
//! ```json
//! {"netuid": 6, "start_block": 1000, "blocks_per_step": 50,
//!  "timeline": [
//!    {"block": 1000,
//!     "metagraph": {"hotkeys": ["5F..", "5G.."], "consensus": [0, 65535], "stake": [0, 10],
//!                   "validator_permit": [false, true], "tempo": 360},
//!     "commitments": {"5F..": {"block": 990, "raw": "ns:name:<40-hex commit>:<hash>:l3"}}},
//!    {"block": 1200, "commitments": {"5G..": {"block": 1190, "raw_hex": "6e733a..."}}}]}
//! ```
//!
//! An entry may also list `validators`, what the successor's top-model scan reads (each
//! validator's uid, stake in whole units, permit and the `[uid, weight]` pairs it set):
//! `{"block": 1200, "validators": [{"uid": 1, "stake": 150000.0, "validator_permit": true,
//! "weights": [[0, 65535]]}]}`. A recording has no block hashes: the successor's data draws
//! are seeded by a stand-in named after the sync block (see `runner::step`).
//!
//! `consensus` and `incentive` are the chain's u16 values; `incentive`, `validator_permit`,
//! `last_update` may be left out; `tempo` defaults to 360. `raw` is the committed string,
//! `raw_hex` its bytes when they are not UTF-8.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::edges::{ChainEdge, EdgeError, Observation};
use crate::machine::Event;
use crate::machine::event::{
    CommitmentField, CommitmentObserved, MetagraphObserved, ValidatorWeights,
    ValidatorWeightsObserved,
};
use crate::machine::wire::{RawBytes, hex_decode};

/// The largest snapshot file read.
const SNAPSHOT_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// The most uids a metagraph has (a uid is a u16), and so the longest of its lists.
const UIDS_MAX: usize = 1 << 16;
/// The most entries a timeline holds.
const TIMELINE_MAX: usize = 1 << 20;
/// The longest hotkey: an SS58 address is 48 characters.
const HOTKEY_CHARS_MAX: usize = 64;

/// A list of at most `MAX` items, refused at the first item past it: counted as it is read,
/// so a file of millions of tiny items is refused before it costs memory by the million.
fn at_most<'de, D, T, const MAX: usize>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const MAX: usize>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const MAX: usize> serde::de::Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a list of at most {MAX} items")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                if items.len() == MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a list of more than {MAX} items"
                    )));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(Bounded::<T, MAX>(std::marker::PhantomData))
}

/// A map of at most [`UIDS_MAX`] commitments.
fn commitments_at_most<'de, D>(
    deserializer: D,
) -> Result<BTreeMap<String, CommitmentFile>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = BTreeMap<String, CommitmentFile>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "a map of at most {UIDS_MAX} commitments")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut found = BTreeMap::new();
            while let Some((hotkey, commitment)) = map.next_entry::<String, CommitmentFile>()? {
                if found.len() == UIDS_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "more than {UIDS_MAX} commitments at one block"
                    )));
                }
                if hotkey.chars().count() > HOTKEY_CHARS_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "a hotkey of more than {HOTKEY_CHARS_MAX} characters"
                    )));
                }
                found.insert(hotkey, commitment);
            }
            Ok(found)
        }
    }
    deserializer.deserialize_map(Bounded)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    netuid: u16,
    start_block: u64,
    blocks_per_step: u64,
    #[serde(deserialize_with = "at_most::<_, _, TIMELINE_MAX>")]
    timeline: Vec<EntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    block: u64,
    #[serde(default)]
    metagraph: Option<MetagraphFile>,
    #[serde(default, deserialize_with = "commitments_at_most")]
    commitments: BTreeMap<String, CommitmentFile>,
    #[serde(default, deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    validators: Vec<ValidatorFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorFile {
    uid: u16,
    stake: f32,
    validator_permit: bool,
    #[serde(deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    weights: Vec<(u16, u16)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetagraphFile {
    #[serde(deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    hotkeys: Vec<String>,
    #[serde(deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    consensus: Vec<u16>,
    #[serde(deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    stake: Vec<u64>,
    #[serde(default, deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    incentive: Vec<u16>,
    #[serde(default, deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    validator_permit: Vec<bool>,
    #[serde(default, deserialize_with = "at_most::<_, _, UIDS_MAX>")]
    last_update: Vec<u64>,
    #[serde(default = "default_tempo")]
    tempo: u16,
}

fn default_tempo() -> u16 {
    360
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitmentFile {
    block: u64,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    raw_hex: Option<String>,
}

/// Why a snapshot cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("chain snapshot {path}: {detail}")]
pub struct SnapshotError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub detail: String,
}

/// A recorded chain.
#[derive(Debug, Clone)]
pub struct RecordedChain {
    /// The subnet.
    pub netuid: u16,
    /// The head at step 0.
    pub start_block: u64,
    /// Blocks the head advances per step begun.
    pub blocks_per_step: u64,
    /// Metagraphs by the block they start showing.
    metagraphs: BTreeMap<u64, MetagraphObserved>,
    /// Commitments by hotkey, then by the block they start showing.
    commitments: BTreeMap<String, BTreeMap<u64, CommitmentObserved>>,
    /// Validators' weights by the block they start showing.
    validators: BTreeMap<u64, Vec<ValidatorWeights>>,
}

impl RecordedChain {
    /// Reads a snapshot file.
    pub fn read(path: &Path) -> Result<Self, SnapshotError> {
        let fail = |detail: String| SnapshotError {
            path: path.display().to_string(),
            detail,
        };
        let bytes = crate::bounded::read_regular(path, SNAPSHOT_BYTES_MAX)
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8".into()))?;
        Self::parse(&text).map_err(fail)
    }

    /// Parses a snapshot's JSON.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: SnapshotFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.blocks_per_step == 0 {
            return Err("blocks_per_step must be positive".into());
        }
        let mut chain = Self {
            netuid: file.netuid,
            start_block: file.start_block,
            blocks_per_step: file.blocks_per_step,
            metagraphs: BTreeMap::new(),
            commitments: BTreeMap::new(),
            validators: BTreeMap::new(),
        };
        for entry in file.timeline {
            if let Some(metagraph) = entry.metagraph {
                let observed = metagraph.into_observed(file.netuid, entry.block)?;
                if chain.metagraphs.insert(entry.block, observed).is_some() {
                    return Err(format!("two metagraphs at block {}", entry.block));
                }
            }
            if !entry.validators.is_empty() {
                let validators = entry
                    .validators
                    .into_iter()
                    .map(|v| ValidatorWeights {
                        uid: v.uid,
                        stake: v.stake,
                        validator_permit: v.validator_permit,
                        weights: v.weights,
                    })
                    .collect();
                if chain.validators.insert(entry.block, validators).is_some() {
                    return Err(format!("two validator lists at block {}", entry.block));
                }
            }
            for (hotkey, commitment) in entry.commitments {
                let field = commitment.field(&hotkey)?;
                let observed = CommitmentObserved {
                    hotkey: hotkey.clone(),
                    block_commit: commitment.block,
                    field,
                };
                let by_block = chain.commitments.entry(hotkey.clone()).or_default();
                if by_block.insert(entry.block, observed).is_some() {
                    return Err(format!(
                        "two commitments of {hotkey} at block {}",
                        entry.block
                    ));
                }
            }
        }
        match chain.metagraphs.keys().next() {
            Some(first) if *first <= chain.start_block => Ok(chain),
            Some(first) => Err(format!(
                "the first metagraph is at block {first}, after start_block {}",
                chain.start_block
            )),
            None => Err("the timeline has no metagraph".into()),
        }
    }

    /// What the chain shows at `block`: the metagraph, then commitments by hotkey.
    pub fn at(&self, block: u64) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some((_, metagraph)) = self.metagraphs.range(..=block).next_back() {
            events.push(Event::MetagraphObserved(metagraph.clone()));
        }
        for by_block in self.commitments.values() {
            if let Some((_, commitment)) = by_block.range(..=block).next_back() {
                events.push(Event::CommitmentObserved(commitment.clone()));
            }
        }
        events
    }
}

impl MetagraphFile {
    fn into_observed(self, netuid: u16, block: u64) -> Result<MetagraphObserved, String> {
        let size = self.hotkeys.len();
        if let Some(long) = self
            .hotkeys
            .iter()
            .find(|hotkey| hotkey.chars().count() > HOTKEY_CHARS_MAX)
        {
            return Err(format!(
                "the metagraph at block {block} has a hotkey of {} characters (at most \
                 {HOTKEY_CHARS_MAX})",
                long.chars().count()
            ));
        }
        let lengths = [
            ("consensus", self.consensus.len(), false),
            ("stake", self.stake.len(), false),
            ("incentive", self.incentive.len(), true),
            ("validator_permit", self.validator_permit.len(), true),
            ("last_update", self.last_update.len(), true),
        ];
        for (name, length, optional) in lengths {
            if length != size && !(optional && length == 0) {
                return Err(format!(
                    "the metagraph at block {block} has {length} {name} entries for {size} hotkeys"
                ));
            }
        }
        Ok(MetagraphObserved {
            netuid,
            hotkeys: self.hotkeys,
            consensus: self.consensus,
            incentive: self.incentive,
            stake: self.stake,
            validator_permit: self.validator_permit,
            last_update: self.last_update,
            tempo: self.tempo,
        })
    }
}

impl CommitmentFile {
    fn field(&self, hotkey: &str) -> Result<CommitmentField, String> {
        let bytes = match (&self.raw, &self.raw_hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => hex_decode(hex)
                .ok_or_else(|| format!("the raw_hex of {hotkey}'s commitment is not hex"))?,
            _ => {
                return Err(format!(
                    "{hotkey}'s commitment needs exactly one of raw and raw_hex"
                ));
            }
        };
        Ok(CommitmentField::Raw(RawBytes(bytes)))
    }
}

impl ChainEdge for RecordedChain {
    async fn head(&self, steps_begun: u64) -> Result<u64, EdgeError> {
        Ok(self
            .start_block
            .saturating_add(self.blocks_per_step.saturating_mul(steps_begun)))
    }

    async fn observe(&self, block: u64) -> Result<Observation, EdgeError> {
        Ok(Observation {
            block,
            block_hash: None,
            events: self.at(block),
        })
    }

    async fn validator_weights(
        &self,
        block: u64,
        stake_min: f32,
    ) -> Result<Option<ValidatorWeightsObserved>, EdgeError> {
        let Some((_, listed)) = self.validators.range(..=block).next_back() else {
            return Ok(None);
        };
        let validators = listed
            .iter()
            .filter(|v| v.validator_permit && v.stake >= stake_min)
            .cloned()
            .collect();
        Ok(Some(ValidatorWeightsObserved { validators }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = r#"{"netuid": 6, "start_block": 1000, "blocks_per_step": 50,
        "timeline": [
          {"block": 1000,
           "metagraph": {"hotkeys": ["5A", "5B"], "consensus": [0, 65535], "stake": [0, 10],
                         "validator_permit": [false, true]},
           "commitments": {"5A": {"block": 990, "raw": "a:b:c:d"}}},
          {"block": 1100, "commitments": {"5A": {"block": 1090, "raw_hex": "ff00"},
                                          "5B": {"block": 1095, "raw": "x"}}},
          {"block": 1200, "metagraph": {"hotkeys": ["5A", "5B", "5C"], "consensus": [0, 0, 0],
                                        "stake": [0, 0, 0]}}]}"#;

    #[test]
    fn the_head_and_what_it_shows_follow_the_timeline() {
        let chain = RecordedChain::parse(SNAPSHOT).unwrap();
        let at = |block| chain.at(block);
        let events = at(1000);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], Event::MetagraphObserved(m) if m.tempo == 360));
        let events = at(1150);
        let Event::CommitmentObserved(a) = &events[1] else {
            panic!()
        };
        assert_eq!(a.block_commit, 1090);
        assert_eq!(a.field, CommitmentField::Raw(RawBytes(vec![0xff, 0])));
        assert_eq!(events.len(), 3);
        let Event::MetagraphObserved(m) = &at(1200)[0] else {
            panic!()
        };
        assert_eq!(m.hotkeys.len(), 3);
    }

    #[test]
    fn bad_snapshots_are_refused_with_a_reason() {
        let late = SNAPSHOT.replace("\"start_block\": 1000", "\"start_block\": 900");
        assert!(
            RecordedChain::parse(&late)
                .unwrap_err()
                .contains("after start_block")
        );
        let both = SNAPSHOT.replace("\"raw\": \"x\"", "\"raw\": \"x\", \"raw_hex\": \"00\"");
        assert!(
            RecordedChain::parse(&both)
                .unwrap_err()
                .contains("exactly one")
        );
        let short = SNAPSHOT.replace("\"stake\": [0, 10]", "\"stake\": [0]");
        assert!(RecordedChain::parse(&short).unwrap_err().contains("stake"));
        assert!(RecordedChain::parse("{}").is_err());
    }
}
