//! The chain edge: the subnet's metagraph and commitments read at a block and turned into
//! journal events, and weights (and model commitments) written, through subxt's dynamic API.
//!
//! Everything is read by pallet and item name and decoded into our own types, so it keeps
//! working across runtime upgrades (mainnet's 4xx specs, the test runtime's 218). Every call
//! has a timeout; a dropped connection is re-established with backoff; nothing blocks forever.
//! Errors are sorted as the machine needs them: [`ChainError::Refused`] is the chain's answer
//! (journaled), [`ChainError::Unavailable`] means try again.

pub mod mechanism;
pub mod timelock;
pub mod transactions;
pub mod wallet;
pub mod weights;

use std::sync::Arc;
use std::time::Duration;

use subxt::backend::LegacyBackend;
use subxt::dynamic::{self, Value};
use subxt::ext::frame_decode::storage::{IntoDecodableValues, IntoEncodableValues};
use subxt::ext::scale_value::{Composite, Primitive, ValueDef};
use subxt::utils::AccountId32;
use subxt::{OnlineClient, PolkadotConfig};
use tokio::sync::Mutex;

use crate::machine::Event;
use crate::machine::event::{CommitmentField, CommitmentObserved, MetagraphObserved};
use crate::machine::wire::RawBytes;

/// A hex string (optional `0x`) as bytes.
pub(crate) fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    crate::machine::wire::hex_decode(text)
}

/// What went wrong talking to the chain.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached, dropped the connection, or did not answer in time.
    #[error("the chain is unavailable: {0}")]
    Unavailable(String),
    /// The chain refused a transaction: the error's name (e.g. `SettingWeightsTooFast`).
    #[error("the chain refused it: {name}{}", if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    Refused {
        /// The runtime error's name, or the transaction-pool reason.
        name: String,
        /// More, when the chain said more.
        detail: String,
    },
    /// The request is invalid before it reaches the chain.
    #[error("{0}")]
    Invalid(String),
    /// The chain answered something we cannot read (an unexpected runtime shape).
    #[error("unexpected chain data: {0}")]
    Decode(String),
}

/// btcli's network names.
pub fn network_endpoint(network: &str) -> Option<&'static str> {
    match network {
        "finney" => Some("wss://entrypoint-finney.opentensor.ai:443"),
        "test" => Some("wss://test.finney.opentensor.ai:443"),
        "local" => Some("ws://127.0.0.1:9944"),
        _ => None,
    }
}

/// The endpoint URL of btcli's `--subtensor.network` / `--subtensor.chain_endpoint` pair:
/// an explicit `ws://` or `wss://` endpoint wins over the network name.
pub fn endpoint_url(network: &str, chain_endpoint: Option<&str>) -> Result<String, ChainError> {
    if let Some(url) = chain_endpoint {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(ChainError::Invalid(format!(
                "{url:?} is not a ws:// or wss:// URL"
            )));
        }
        return Ok(url.to_owned());
    }
    network_endpoint(network).map(str::to_owned).ok_or_else(|| {
        ChainError::Invalid(format!(
            "unknown network {network:?}: use finney, test or local, or --subtensor.chain_endpoint"
        ))
    })
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ChainOptions {
    /// `ws://` or `wss://` URL.
    pub endpoint: String,
    /// Longest wait for one call (a read, or a transaction's inclusion).
    pub call_timeout: Duration,
    /// Connection attempts before giving up.
    pub connect_attempts: usize,
    /// First delay between attempts, doubled each time.
    pub backoff: Duration,
}

impl ChainOptions {
    /// Defaults for an endpoint: 60 s per call, 4 attempts from 1 s.
    pub fn new(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            call_timeout: Duration::from_secs(60),
            connect_attempts: 4,
            backoff: Duration::from_secs(1),
        }
    }
}

pub(crate) type Client = OnlineClient<PolkadotConfig>;

/// A connection to a subtensor node.
#[derive(Debug, Clone)]
pub struct Chain {
    options: ChainOptions,
    client: Arc<Mutex<Option<Client>>>,
}

impl Chain {
    /// Connects (with retries) to `options.endpoint`.
    pub async fn connect(options: ChainOptions) -> Result<Self, ChainError> {
        let chain = Self {
            options,
            client: Arc::new(Mutex::new(None)),
        };
        chain.client().await?;
        Ok(chain)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        &self.options.endpoint
    }

    async fn open(&self) -> Result<Client, ChainError> {
        let endpoint = self.options.endpoint.clone();
        let connect = async move {
            let rpc = subxt::rpcs::RpcClient::from_insecure_url(&endpoint)
                .await
                .map_err(|e| {
                    ChainError::Unavailable(crate::text::redact_url(&format!(
                        "cannot connect to {endpoint}: {e}"
                    )))
                })?;
            // The legacy RPC methods: every node (and chopsticks) serves them.
            let backend = LegacyBackend::builder().build(rpc);
            Client::from_backend(Arc::new(backend)).await.map_err(|e| {
                ChainError::Unavailable(format!("cannot start a client for {endpoint}: {e}"))
            })
        };
        tokio::time::timeout(self.options.call_timeout, connect)
            .await
            .map_err(|_| {
                ChainError::Unavailable(format!(
                    "connecting to {} timed out",
                    self.options.endpoint
                ))
            })?
    }

    /// The client, reconnecting (with backoff) when there is none.
    async fn client(&self) -> Result<Client, ChainError> {
        let mut guard = self.client.lock().await;
        if let Some(client) = guard.as_ref() {
            return Ok(client.clone());
        }
        let mut delay = self.options.backoff;
        let mut last = ChainError::Unavailable("no connection attempt was made".into());
        for attempt in 0..self.options.connect_attempts.max(1) {
            match self.open().await {
                Ok(client) => {
                    *guard = Some(client.clone());
                    return Ok(client);
                }
                Err(error) => last = error,
            }
            if attempt + 1 < self.options.connect_attempts {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
        }
        Err(last)
    }

    /// Runs one call with the timeout; an unavailable chain drops the connection so the next
    /// call reconnects.
    async fn call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ChainError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, ChainError>>,
    {
        let client = self.client().await?;
        let result = match tokio::time::timeout(self.options.call_timeout, call(client)).await {
            Ok(result) => result,
            Err(_) => Err(ChainError::Unavailable(format!(
                "{what} timed out after {} s",
                self.options.call_timeout.as_secs()
            ))),
        };
        if matches!(result, Err(ChainError::Unavailable(_))) {
            *self.client.lock().await = None;
        }
        result
    }

    /// The number of the latest finalized block.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        self.call("reading the block number", |client| async move {
            let at = client_at(&client, None).await?;
            Ok(at.block_number())
        })
        .await
    }

    /// The hash of block `number`, as the `0x...` string the successor's seed hashes.
    pub async fn block_hash(&self, number: u64) -> Result<String, ChainError> {
        self.call("reading a block hash", |client| async move {
            let at = client_at(&client, Some(number)).await?;
            Ok(format!("{:?}", at.block_hash()))
        })
        .await
    }

    /// The metagraph of `netuid` at `block` (latest when `None`), with the block it was read at.
    pub async fn metagraph(
        &self,
        netuid: u16,
        block: Option<u64>,
    ) -> Result<(u64, MetagraphObserved), ChainError> {
        self.call("reading the metagraph", |client| async move {
            let at = client_at(&client, block).await?;
            let storage = at.storage();
            let read = "reading SubtensorModule storage";
            let size: u16 =
                read_value::<(u16,), u16, _>(&storage, "SubtensorModule", "SubnetworkN", (netuid,))
                    .await?;
            let size_usize = usize::from(size);
            let mut hotkeys: Vec<Option<String>> = vec![None; size_usize];
            let keys = dynamic::storage::<(u16, u16), [u8; 32]>("SubtensorModule", "Keys");
            let mut entries = storage
                .iter(keys, (netuid,))
                .await
                .map_err(|e| ChainError::Unavailable(format!("{read}: {e}")))?;
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| ChainError::Unavailable(format!("{read}: {e}")))?;
                let (_, uid) = entry
                    .key()
                    .and_then(|k| k.decode())
                    .map_err(|e| ChainError::Decode(format!("Keys key: {e}")))?;
                let account: [u8; 32] = entry
                    .value()
                    .decode()
                    .map_err(|e| ChainError::Decode(format!("Keys value: {e}")))?;
                // Keys is a ValueQuery: only uids below SubnetworkN are real.
                if let Some(slot) = hotkeys.get_mut(usize::from(uid)) {
                    *slot = Some(AccountId32::from(account).to_string());
                }
            }
            let hotkeys: Vec<String> = hotkeys
                .into_iter()
                .enumerate()
                .map(|(uid, hotkey)| {
                    hotkey.ok_or_else(|| ChainError::Decode(format!("uid {uid} has no hotkey")))
                })
                .collect::<Result<_, _>>()?;
            // Per-uid vectors, padded to the metagraph's size: a vector the chain has not
            // grown yet (a just-registered uid) reads as zeros.
            async fn vector<T, C>(
                storage: &subxt::storage::StorageClient<'_, PolkadotConfig, C>,
                name: &str,
                netuid: u16,
                size: usize,
            ) -> Result<Vec<T>, ChainError>
            where
                T: subxt::ext::scale_decode::DecodeAsType + Clone + Default,
                C: subxt::client::OnlineClientAtBlockT<PolkadotConfig>,
            {
                let mut values: Vec<T> =
                    read_value::<(u16,), Vec<T>, _>(storage, "SubtensorModule", name, (netuid,))
                        .await?;
                values.resize(size, T::default());
                Ok(values)
            }
            let consensus = vector::<u16, _>(&storage, "Consensus", netuid, size_usize).await?;
            let incentive = vector::<u16, _>(&storage, "Incentive", netuid, size_usize).await?;
            let validator_permit =
                vector::<bool, _>(&storage, "ValidatorPermit", netuid, size_usize).await?;
            let last_update = vector::<u64, _>(&storage, "LastUpdate", netuid, size_usize).await?;
            let tempo: u16 =
                read_value::<(u16,), u16, _>(&storage, "SubtensorModule", "Tempo", (netuid,))
                    .await?;
            let mut stake = Vec::with_capacity(size_usize);
            for hotkey in &hotkeys {
                let account: AccountId32 = hotkey
                    .parse()
                    .map_err(|_| ChainError::Decode(format!("hotkey {hotkey}")))?;
                let value: u64 = read_value::<([u8; 32], u16), u64, _>(
                    &storage,
                    "SubtensorModule",
                    "TotalHotkeyAlpha",
                    (account.0, netuid),
                )
                .await?;
                stake.push(value);
            }
            Ok((
                at.block_number(),
                MetagraphObserved {
                    netuid,
                    hotkeys,
                    consensus,
                    incentive,
                    stake,
                    validator_permit,
                    last_update,
                    tempo,
                },
            ))
        })
        .await
    }

    /// Every commitment on `netuid` at `block` (latest when `None`): the first field, unparsed,
    /// and its commit block.
    pub async fn commitments(
        &self,
        netuid: u16,
        block: Option<u64>,
    ) -> Result<(u64, Vec<CommitmentObserved>), ChainError> {
        self.call("reading commitments", |client| async move {
            let at = client_at(&client, block).await?;
            let storage = at.storage();
            let address = dynamic::storage::<(u16, [u8; 32]), Value>("Commitments", "CommitmentOf");
            let mut entries = storage.iter(address, (netuid,)).await.map_err(|e| {
                ChainError::Unavailable(format!("reading Commitments.CommitmentOf: {e}"))
            })?;
            let mut observed = Vec::new();
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| {
                    ChainError::Unavailable(format!("reading Commitments.CommitmentOf: {e}"))
                })?;
                let (_, account) = entry
                    .key()
                    .and_then(|k| k.decode())
                    .map_err(|e| ChainError::Decode(format!("CommitmentOf key: {e}")))?;
                let registration: Value = entry
                    .value()
                    .decode()
                    .map_err(|e| ChainError::Decode(format!("CommitmentOf value: {e}")))?;
                let (block_commit, field) = read_registration(&registration)?;
                observed.push(CommitmentObserved {
                    hotkey: AccountId32::from(account).to_string(),
                    block_commit,
                    field,
                });
            }
            observed.sort_by(|a, b| a.hotkey.cmp(&b.hotkey));
            Ok((at.block_number(), observed))
        })
        .await
    }
}

impl Chain {
    /// The metagraph of `netuid` and every commitment on it, both read at one block (the
    /// latest when `None`), as the journal events the validator records: the metagraph first,
    /// then the commitments by hotkey.
    pub async fn observe(
        &self,
        netuid: u16,
        block: Option<u64>,
    ) -> Result<(u64, Vec<Event>), ChainError> {
        // Both reads at one block, so the commitments belong to the metagraph.
        let block = match block {
            Some(block) => block,
            None => self.block_number().await?,
        };
        let (block, observed) = self.metagraph(netuid, Some(block)).await?;
        let (_, commitments) = self.commitments(netuid, Some(block)).await?;
        let mut events = vec![Event::MetagraphObserved(observed)];
        events.extend(commitments.into_iter().map(Event::CommitmentObserved));
        Ok((block, events))
    }
}

impl Chain {
    /// `SubtensorModule.Weights(netuid, uid)`: the (uid, u16 weight) pairs `uid` has set.
    pub async fn weights(
        &self,
        netuid: u16,
        uid: u16,
        block: Option<u64>,
    ) -> Result<Vec<(u16, u16)>, ChainError> {
        self.call("reading Weights", |client| async move {
            let at = client_at(&client, block).await?;
            read_value::<(u16, u16), Vec<(u16, u16)>, _>(
                &at.storage(),
                "SubtensorModule",
                "Weights",
                (netuid, uid),
            )
            .await
        })
        .await
    }

    /// How `netuid` takes weights now: plainly, or by commit-reveal (and which version).
    pub async fn weights_rule(&self, netuid: u16) -> Result<WeightsRule, ChainError> {
        self.call("reading the commit-reveal settings", |client| async move {
            let at = client_at(&client, None).await?;
            let storage = at.storage();
            let enabled: bool = read_value::<(u16,), bool, _>(
                &storage,
                "SubtensorModule",
                "CommitRevealWeightsEnabled",
                (netuid,),
            )
            .await?;
            if !enabled {
                return Ok(WeightsRule::Plain);
            }
            // Runtimes before the timelocked commits (spec 218 among them) have no
            // `CommitRevealWeightsVersion`: their commit-reveal is the hash commit (v2).
            let has_version = at
                .metadata_ref()
                .pallet_by_name("SubtensorModule")
                .and_then(|pallet| pallet.storage())
                .is_some_and(|storage| {
                    storage
                        .entry_by_name("CommitRevealWeightsVersion")
                        .is_some()
                });
            if !has_version {
                return Ok(WeightsRule::CommitRevealHash);
            }
            let version: u16 = read_value::<(), u16, _>(
                &storage,
                "SubtensorModule",
                "CommitRevealWeightsVersion",
                (),
            )
            .await?;
            Ok(if version >= 3 {
                WeightsRule::CommitRevealTimelocked { version }
            } else {
                WeightsRule::CommitRevealHash
            })
        })
        .await
    }
}

/// How a subnet accepts weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsRule {
    /// `set_weights`.
    Plain,
    /// `commit_weights` of a hash, then `reveal_weights` in the reveal window (v2).
    CommitRevealHash,
    /// `commit_timelocked_weights`: drand-timelocked weights the chain reveals itself.
    CommitRevealTimelocked {
        /// `CommitRevealWeightsVersion`.
        version: u16,
    },
}

/// Reads `pallet.name(key)` at the block `storage` belongs to, decoded into `V`: a node that
/// does not answer is [`ChainError::Unavailable`], a value of another shape
/// [`ChainError::Decode`].
async fn read_value<K, V, C>(
    storage: &subxt::storage::StorageClient<'_, PolkadotConfig, C>,
    pallet: &str,
    name: &str,
    key: K,
) -> Result<V, ChainError>
where
    K: IntoEncodableValues + IntoDecodableValues,
    V: subxt::ext::scale_decode::DecodeAsType,
    C: subxt::client::OnlineClientAtBlockT<PolkadotConfig>,
{
    storage
        .fetch(dynamic::storage::<K, V>(pallet, name), key)
        .await
        .map_err(|e| ChainError::Unavailable(format!("reading {pallet}.{name}: {e}")))?
        .decode()
        .map_err(|e| ChainError::Decode(format!("{pallet}.{name}: {e}")))
}

/// The client at `block`, or at the latest block when `None`.
async fn client_at(
    client: &Client,
    block: Option<u64>,
) -> Result<subxt::client::OnlineClientAtBlock<PolkadotConfig>, ChainError> {
    match block {
        Some(number) => client.at_block(number).await,
        None => client.at_current_block().await,
    }
    .map_err(|e| ChainError::Unavailable(e.to_string()))
}

/// The named field of a composite value.
fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    match &value.value {
        ValueDef::Composite(Composite::Named(fields)) => {
            fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
        }
        _ => None,
    }
}

/// Unwraps single-field wrappers (BoundedVec and the like) down to the sequence they hold;
/// a sequence of one variant (one `Data` field) is kept as it is.
fn unwrap_single(value: &Value) -> &Value {
    let inner = match &value.value {
        ValueDef::Composite(Composite::Unnamed(items)) if items.len() == 1 => items.first(),
        ValueDef::Composite(Composite::Named(items)) if items.len() == 1 => {
            items.first().map(|(_, v)| v)
        }
        _ => None,
    };
    match inner {
        Some(inner) if matches!(inner.value, ValueDef::Composite(_)) => unwrap_single(inner),
        _ => value,
    }
}

fn items(value: &Value) -> Vec<&Value> {
    match &value.value {
        ValueDef::Composite(Composite::Unnamed(items)) => items.iter().collect(),
        ValueDef::Composite(Composite::Named(items)) => items.iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    }
}

/// Bytes from a byte array or sequence value.
fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match &value.value {
        ValueDef::Primitive(Primitive::U128(byte)) => u8::try_from(*byte).ok().map(|b| vec![b]),
        ValueDef::Composite(_) => {
            let mut out = Vec::new();
            for item in items(value) {
                match &item.value {
                    ValueDef::Primitive(Primitive::U128(byte)) => {
                        out.push(u8::try_from(*byte).ok()?)
                    }
                    ValueDef::Composite(_) => out.extend(bytes_of(item)?),
                    _ => return None,
                }
            }
            Some(out)
        }
        _ => None,
    }
}

fn number_of(value: &Value) -> Option<u64> {
    match &value.value {
        ValueDef::Primitive(Primitive::U128(n)) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// `Registration { deposit, block, info: CommitmentInfo { fields: BoundedVec<Data> } }`: the
/// commit block and the first field (`Raw{len}` bytes, or the other variant's name).
fn read_registration(registration: &Value) -> Result<(u64, CommitmentField), ChainError> {
    let block = field(registration, "block")
        .and_then(number_of)
        .ok_or_else(|| ChainError::Decode("a commitment without a block".into()))?;
    let info = field(registration, "info")
        .ok_or_else(|| ChainError::Decode("a commitment without info".into()))?;
    let fields = field(info, "fields")
        .map(unwrap_single)
        .ok_or_else(|| ChainError::Decode("a commitment without fields".into()))?;
    let Some(first) = items(fields).into_iter().next() else {
        return Ok((block, CommitmentField::Empty));
    };
    let ValueDef::Variant(variant) = &first.value else {
        return Err(ChainError::Decode(
            "a commitment field that is not a Data variant".into(),
        ));
    };
    let field = if variant.name.starts_with("Raw") && variant.name != "Raw" {
        let payload: Vec<&Value> = match &variant.values {
            Composite::Unnamed(values) => values.iter().collect(),
            Composite::Named(values) => values.iter().map(|(_, v)| v).collect(),
        };
        let bytes = match payload.as_slice() {
            [] => Vec::new(),
            [only] => bytes_of(only)
                .ok_or_else(|| ChainError::Decode(format!("{} is not bytes", variant.name)))?,
            _ => {
                return Err(ChainError::Decode(format!(
                    "{} has several fields",
                    variant.name
                )));
            }
        };
        CommitmentField::Raw(RawBytes(bytes))
    } else {
        CommitmentField::Other(variant.name.clone())
    };
    Ok((block, field))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(fields: Vec<Value>) -> Value {
        Value::named_composite([
            ("deposit", Value::u128(0)),
            ("block", Value::u128(1234)),
            (
                "info",
                Value::named_composite([(
                    "fields",
                    Value::unnamed_composite([Value::unnamed_composite(fields)]),
                )]),
            ),
        ])
    }

    #[test]
    fn registrations_read_as_the_journal_wants() {
        let raw = Value::unnamed_variant("Raw5", [Value::from_bytes(b"ns:ab")]);
        assert_eq!(
            read_registration(&registration(vec![raw])).unwrap(),
            (1234, CommitmentField::Raw(RawBytes(b"ns:ab".to_vec())))
        );
        let empty = Value::unnamed_variant("Raw0", []);
        assert_eq!(
            read_registration(&registration(vec![empty])).unwrap().1,
            CommitmentField::Raw(RawBytes(vec![]))
        );
        let hash = Value::unnamed_variant("Sha256", [Value::from_bytes([0u8; 32])]);
        assert_eq!(
            read_registration(&registration(vec![hash])).unwrap().1,
            CommitmentField::Other("Sha256".into())
        );
        assert_eq!(
            read_registration(&registration(vec![])).unwrap().1,
            CommitmentField::Empty
        );
    }

    #[test]
    fn networks_have_btclis_endpoints() {
        assert_eq!(network_endpoint("local"), Some("ws://127.0.0.1:9944"));
        assert!(network_endpoint("finney").unwrap().starts_with("wss://"));
        assert_eq!(network_endpoint("mainnet"), None);
    }
}
