//! `validator chain ...`: the metagraph with every commitment as the fold reads it (operators
//! and miners), a miner's model commitment, and an operator's manual weight submission.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::chain::wallet::{Hotkey, WalletPath, load_hotkey};
use crate::chain::weights::{ChainWeights, os_random, raw_field, submit_outcome, version_key};
use crate::chain::{Chain, ChainError, ChainOptions, WeightsRule, network_endpoint};
use crate::journal::JournalError;
use crate::machine::event::{CommitmentField, WeightsSubmitted};
use crate::machine::model_id::{MAX_METADATA_BYTES, ModelId};
use crate::machine::params::ModelIdFormat;
use crate::machine::state::CommitmentStatus;
use crate::machine::weights::to_chain_weights;
use crate::machine::{Event, MechanismParams, Record, State, apply};
use crate::recorder::Recorder;

/// Why a `chain` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainCliError {
    /// The request is wrong (exit 2).
    #[error("{0}")]
    Input(String),
    /// The chain refused or could not be reached.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// `--subtensor.network` / `--subtensor.chain_endpoint`, as btcli spells them (command-line
/// arguments; the doc comments are the help).
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoint {
    /// finney, test or local.
    #[arg(long = "subtensor.network", default_value = "finney")]
    pub network: String,
    /// A ws:// or wss:// endpoint (wins over --subtensor.network).
    #[arg(long = "subtensor.chain_endpoint")]
    pub chain_endpoint: Option<String>,
    /// Longest wait for one chain call, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

impl Endpoint {
    fn url(&self) -> Result<String, ChainCliError> {
        if let Some(url) = &self.chain_endpoint {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                return Err(ChainCliError::Input(format!(
                    "{url:?} is not a ws:// or wss:// URL"
                )));
            }
            return Ok(url.clone());
        }
        network_endpoint(&self.network).map(str::to_owned).ok_or_else(|| {
            ChainCliError::Input(format!(
                "unknown network {:?}: use finney, test or local, or --subtensor.chain_endpoint",
                self.network
            ))
        })
    }

    async fn connect(&self) -> Result<Chain, ChainCliError> {
        let mut options = ChainOptions::new(&self.url()?);
        options.call_timeout = Duration::from_secs(self.timeout_s.max(1));
        Ok(Chain::connect(options).await?)
    }
}

/// `--wallet.path`, `--wallet.name`, `--wallet.hotkey` (command-line arguments, as btcli's).
#[derive(Debug, Clone, clap::Args)]
pub struct Wallet {
    /// The wallets directory (default ~/.bittensor/wallets).
    #[arg(long = "wallet.path")]
    pub path: Option<PathBuf>,
    /// The wallet.
    #[arg(long = "wallet.name", default_value = "default")]
    pub name: String,
    /// The hotkey.
    #[arg(long = "wallet.hotkey", default_value = "default")]
    pub hotkey: String,
}

impl Wallet {
    fn load(&self) -> Result<Hotkey, ChainCliError> {
        let wallet = WalletPath {
            root: self.path.clone().unwrap_or_else(WalletPath::default_root),
            name: self.name.clone(),
            hotkey: self.hotkey.clone(),
        };
        load_hotkey(&wallet.hotkey_file()).map_err(|e| ChainCliError::Input(e.to_string()))
    }
}

/// One uid of the metagraph as `validator chain metagraph` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NeuronView {
    /// The uid.
    pub uid: u16,
    /// Its hotkey.
    pub hotkey: String,
    /// Stake on the subnet (rao).
    pub stake: u64,
    /// Consensus in [0, 1].
    pub consensus: f64,
    /// Incentive in [0, 1].
    pub incentive: f64,
    /// Validator permit.
    pub validator_permit: bool,
    /// Last weight-setting block.
    pub last_update: u64,
    /// The hotkey's commitment, if any.
    pub commitment: Option<CommitmentView>,
}

/// A commitment as the fold reads it.
#[derive(Debug, Clone, Serialize)]
pub struct CommitmentView {
    /// The commit block.
    pub block_commit: u64,
    /// The first field's bytes as hex (`Raw`), or the variant's name.
    pub field: String,
    /// The parsed model id, when the string parses.
    pub model_id: Option<ModelId>,
    /// Its compressed string.
    pub model_id_string: Option<String>,
    /// `valid` (waiting for download and checks) or `invalid`.
    pub status: &'static str,
    /// Why it is invalid.
    pub reason: Option<String>,
}

/// What `validator chain metagraph` prints.
#[derive(Debug, Clone, Serialize)]
pub struct MetagraphView {
    /// The subnet.
    pub netuid: u16,
    /// The block read.
    pub block: u64,
    /// The subnet's tempo.
    pub tempo: u16,
    /// The uids.
    pub neurons: Vec<NeuronView>,
    /// Commitments of hotkeys that hold no uid (deregistered miners).
    pub unregistered_commitments: BTreeMap<String, CommitmentView>,
}

fn view_of(state: &State, hotkey: &str) -> Option<CommitmentView> {
    let commitment = state.hotkeys.get(hotkey)?.commitment.as_ref()?;
    let field = match &commitment.field {
        CommitmentField::Raw(raw) => format!("raw:{}", crate::machine::wire::hex_encode(&raw.0)),
        CommitmentField::Other(kind) => kind.clone(),
        CommitmentField::Empty => "empty".into(),
    };
    let (status, reason) = match &commitment.status {
        CommitmentStatus::Invalid(why) => ("invalid", Some(why.to_string())),
        CommitmentStatus::Rejected { detail, .. } => ("rejected", Some(detail.clone())),
        CommitmentStatus::Verified => ("verified", None),
        CommitmentStatus::Unverified => ("valid", None),
    };
    Some(CommitmentView {
        block_commit: commitment.block_commit,
        field,
        model_id_string: commitment
            .model_id
            .as_ref()
            .map(ModelId::to_compressed_string),
        model_id: commitment.model_id.clone(),
        status,
        reason,
    })
}

/// Reads the metagraph and commitments of `netuid` at `block` (latest when `None`), folds
/// them as the validator would (journaling them into `db` when given), and returns the view.
pub async fn metagraph(
    endpoint: &Endpoint,
    netuid: u16,
    block: Option<u64>,
    format: ModelIdFormat,
    db: Option<&std::path::Path>,
) -> Result<MetagraphView, ChainCliError> {
    let chain = endpoint.connect().await?;
    // Both reads at one block, so the commitments belong to the metagraph shown.
    let block = match block {
        Some(block) => block,
        None => chain.block_number().await?,
    };
    let (block, observed) = chain.metagraph(netuid, Some(block)).await?;
    let (_, commitments) = chain.commitments(netuid, Some(block)).await?;
    let mut events = vec![(block, Event::MetagraphObserved(observed))];
    events.extend(
        commitments
            .into_iter()
            .map(|c| (block, Event::CommitmentObserved(c))),
    );
    let state = match db {
        Some(path) => {
            let mut recorder = Recorder::open(path, 100)?;
            recorder.record(&events)?;
            recorder.state().clone()
        }
        None => {
            let params = MechanismParams {
                model_id_format: format,
                ..MechanismParams::default()
            };
            let mut state = State::new(params);
            for (seq, (block, event)) in (0u64..).zip(&events) {
                let record = Record {
                    block: *block,
                    seq,
                    event: event.clone(),
                };
                apply(&mut state, &record);
            }
            state
        }
    };
    let metagraph = state
        .metagraph
        .as_ref()
        .ok_or_else(|| ChainCliError::Input("the journal refused the metagraph".into()))?;
    let observed = &metagraph.observed;
    let mut neurons = Vec::with_capacity(observed.hotkeys.len());
    for (uid, hotkey) in (0u16..).zip(&observed.hotkeys) {
        let at = usize::from(uid);
        neurons.push(NeuronView {
            uid,
            hotkey: hotkey.clone(),
            stake: observed.stake.get(at).copied().unwrap_or(0),
            consensus: f64::from(observed.consensus.get(at).copied().unwrap_or(0)) / 65535.0,
            incentive: f64::from(observed.incentive.get(at).copied().unwrap_or(0)) / 65535.0,
            validator_permit: observed.validator_permit.get(at).copied().unwrap_or(false),
            last_update: observed.last_update.get(at).copied().unwrap_or(0),
            commitment: view_of(&state, hotkey),
        });
    }
    let unregistered_commitments = state
        .hotkeys
        .keys()
        .filter(|hotkey| !observed.hotkeys.contains(hotkey))
        .filter_map(|hotkey| Some((hotkey.clone(), view_of(&state, hotkey)?)))
        .collect();
    Ok(MetagraphView {
        netuid,
        block: metagraph.block,
        tempo: observed.tempo,
        neurons,
        unregistered_commitments,
    })
}

/// The metagraph as a table.
pub fn render_metagraph(view: &MetagraphView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "netuid {} at block {} (tempo {}, {} uids)",
        view.netuid,
        view.block,
        view.tempo,
        view.neurons.len()
    );
    let _ = writeln!(
        out,
        "{:>5}  {:<48}  {:>16}  {:>9}  {:>9}  {:>6}  {:>11}  commitment",
        "uid", "hotkey", "stake (rao)", "consensus", "incentive", "permit", "last update"
    );
    for neuron in &view.neurons {
        let commitment = neuron
            .commitment
            .as_ref()
            .map_or_else(|| "-".to_owned(), describe);
        let _ = writeln!(
            out,
            "{:>5}  {:<48}  {:>16}  {:>9.5}  {:>9.5}  {:>6}  {:>11}  {}",
            neuron.uid,
            neuron.hotkey,
            neuron.stake,
            neuron.consensus,
            neuron.incentive,
            if neuron.validator_permit { "yes" } else { "no" },
            neuron.last_update,
            commitment
        );
    }
    for (hotkey, commitment) in &view.unregistered_commitments {
        let _ = writeln!(out, "(no uid) {hotkey}: {}", describe(commitment));
    }
    out
}

fn describe(commitment: &CommitmentView) -> String {
    match (&commitment.model_id_string, &commitment.reason) {
        (Some(id), None) => format!("{id} (block {})", commitment.block_commit),
        (Some(id), Some(why)) => format!(
            "{id} (block {}): {} ({why})",
            commitment.block_commit, commitment.status
        ),
        (None, Some(why)) => format!(
            "{} (block {}): {why}",
            commitment.status, commitment.block_commit
        ),
        (None, None) => format!("{} (block {})", commitment.field, commitment.block_commit),
    }
}

/// What `validator chain commit` sends (command-line arguments; the doc comments are the help).
#[derive(Debug, Clone, clap::Args)]
pub struct CommitRequest {
    /// The subnet.
    #[arg(long)]
    pub netuid: u16,
    /// NAMESPACE/NAME on Hugging Face.
    #[arg(long)]
    pub repo: String,
    /// The 40-hex git commit of the upload.
    #[arg(long)]
    pub commit: String,
    /// The model hash (`validator model hash DIR --hotkey SS58` gives the salted one).
    #[arg(long)]
    pub hash: String,
    /// The competition id (default: N's 4-field string, competition m1).
    #[arg(long)]
    pub competition: Option<String>,
}

/// The commitment string for a request, checked the way validators will read it.
pub fn commitment_string(
    request: &CommitRequest,
    format: ModelIdFormat,
) -> Result<String, ChainCliError> {
    let (namespace, name) = request.repo.split_once('/').ok_or_else(|| {
        ChainCliError::Input(format!("--repo {:?}: use NAMESPACE/NAME", request.repo))
    })?;
    let mut text = format!("{namespace}:{name}:{}:{}", request.commit, request.hash);
    if let Some(competition) = &request.competition {
        text.push(':');
        text.push_str(competition);
    }
    if text.len() > MAX_METADATA_BYTES {
        return Err(ChainCliError::Input(format!(
            "the commitment {text:?} is {} bytes; the chain takes at most {MAX_METADATA_BYTES}",
            text.len()
        )));
    }
    let model_id = ModelId::parse(&text, format)
        .map_err(|why| ChainCliError::Input(format!("{text:?}: {why}")))?;
    model_id
        .check_evaluable()
        .map_err(|why| ChainCliError::Input(format!("validators would reject {text:?}: {why}")))?;
    Ok(text)
}

/// Commits a model id; returns the string and the block that included it.
pub async fn commit(
    endpoint: &Endpoint,
    wallet: &Wallet,
    request: &CommitRequest,
    format: ModelIdFormat,
) -> Result<(String, u64, String), ChainCliError> {
    let text = commitment_string(request, format)?;
    let hotkey = wallet.load()?;
    let chain = endpoint.connect().await?;
    let block = chain
        .set_commitment_field(&hotkey.keypair, request.netuid, raw_field(text.as_bytes()))
        .await?;
    Ok((text, block, hotkey.ss58))
}

/// Reads `--weights FILE.json`: a list (one weight per uid) or an object `{"uid": weight}`.
pub fn read_weights_file(text: &str) -> Result<Vec<f64>, ChainCliError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ChainCliError::Input(format!("the weights file is not JSON: {e}")))?;
    let number = |v: &serde_json::Value, at: &str| {
        v.as_f64()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| {
                ChainCliError::Input(format!(
                    "weight of uid {at} is {v}, not a non-negative number"
                ))
            })
    };
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(uid, v)| number(v, &uid.to_string()))
            .collect(),
        serde_json::Value::Object(map) => {
            let mut dense: Vec<f64> = Vec::new();
            for (key, v) in &map {
                let uid: u16 = key.parse().map_err(|_| {
                    ChainCliError::Input(format!("{key:?} is not a uid (0..=65535)"))
                })?;
                let at = usize::from(uid);
                if dense.len() <= at {
                    dense.resize(at + 1, 0.0);
                }
                if let Some(slot) = dense.get_mut(at) {
                    *slot = number(v, key)?;
                }
            }
            Ok(dense)
        }
        _ => Err(ChainCliError::Input(
            "the weights file must be a list of weights by uid or an object {\"uid\": weight}"
                .into(),
        )),
    }
}

/// What `validator chain set-weights` did.
#[derive(Debug, Clone, Serialize)]
pub struct SetWeightsReport {
    /// The uids sent.
    pub uids: Vec<u16>,
    /// The u16 weights sent.
    pub weights: Vec<u16>,
    /// `version_key` sent.
    pub version_key: u64,
    /// `set_weights` or `commit_weights+reveal_weights`.
    pub method: &'static str,
    /// The block that included it.
    pub block: u64,
}

/// A fresh salt for a hash commit, from the operating system.
fn fresh_salt() -> Result<Vec<u16>, ChainCliError> {
    let bytes = os_random::<16>()?;
    Ok(bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect())
}

/// Sets weights from `dense` (one per uid) on `netuid`, plainly or by commit-reveal as the
/// subnet requires; journals the outcome into `db` when given.
pub async fn set_weights(
    endpoint: &Endpoint,
    wallet: &Wallet,
    netuid: u16,
    dense: &[f64],
    version_key_override: Option<u64>,
    db: Option<&std::path::Path>,
) -> Result<SetWeightsReport, ChainCliError> {
    let (uids, values) =
        to_chain_weights(dense).map_err(|e| ChainCliError::Input(e.to_string()))?;
    if uids.is_empty() {
        return Err(ChainCliError::Input(
            "every weight is zero: nothing to set".into(),
        ));
    }
    let weights = ChainWeights {
        uids,
        values,
        version_key: version_key_override.unwrap_or_else(version_key),
    };
    let hotkey = wallet.load()?;
    let chain = endpoint.connect().await?;
    let rule = chain.weights_rule(netuid).await?;
    let (method, result) = match rule {
        WeightsRule::Plain => (
            "set_weights",
            chain
                .set_weights(
                    &hotkey.keypair,
                    netuid,
                    &weights.uids,
                    &weights.values,
                    weights.version_key,
                )
                .await,
        ),
        WeightsRule::CommitRevealHash => {
            let salt = fresh_salt()?;
            let result = chain
                .commit_and_reveal_weights(
                    &hotkey.keypair,
                    netuid,
                    &weights,
                    &salt,
                    Duration::from_secs(6),
                )
                .await;
            ("commit_weights+reveal_weights", result)
        }
        WeightsRule::CommitRevealTimelocked { version } => {
            let result = chain
                .commit_timelocked_weights(&hotkey.keypair, netuid, &weights, version)
                .await
                .map(|(block, _round)| block);
            ("commit_timelocked_weights", result)
        }
    };
    if let Some(path) = db {
        let block = match &result {
            Ok(block) => *block,
            Err(_) => chain.block_number().await.unwrap_or(0),
        };
        let mut recorder = Recorder::open(path, 100)?;
        recorder.record(&[(
            block,
            Event::WeightsSubmitted(WeightsSubmitted {
                uids: weights.uids.clone(),
                weights: weights.values.clone(),
                version_key: weights.version_key,
                outcome: submit_outcome(&result),
            }),
        )])?;
    }
    let block = result?;
    Ok(SetWeightsReport {
        uids: weights.uids,
        weights: weights.values,
        version_key: weights.version_key,
        method,
        block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(competition: Option<&str>) -> CommitRequest {
        CommitRequest {
            netuid: 1,
            repo: "miner/model".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            hash: "S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=".into(),
            competition: competition.map(str::to_owned),
        }
    }

    #[test]
    fn commitment_strings_are_checked_before_sending() {
        let text = commitment_string(&request(Some("m1")), ModelIdFormat::Original).unwrap();
        assert_eq!(
            text,
            "miner:model:0123456789abcdef0123456789abcdef01234567:S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=:m1"
        );
        let mut long = request(None);
        long.repo = format!("miner/{}", "m".repeat(90));
        let error = commitment_string(&long, ModelIdFormat::Original)
            .unwrap_err()
            .to_string();
        assert!(error.contains("at most 128"), "{error}");
        let mut branch = request(None);
        branch.commit = "main".into();
        let error = commitment_string(&branch, ModelIdFormat::Original)
            .unwrap_err()
            .to_string();
        assert!(error.contains("40-hex"), "{error}");
        let error = commitment_string(&request(Some("m1")), ModelIdFormat::Successor)
            .unwrap_err()
            .to_string();
        assert!(error.contains("decimal integer"), "{error}");
    }

    #[test]
    fn weights_files_are_lists_or_maps() {
        assert_eq!(
            read_weights_file("[0.5, 0, 1]").unwrap(),
            vec![0.5, 0.0, 1.0]
        );
        assert_eq!(
            read_weights_file(r#"{"3": 0.25, "1": 1}"#).unwrap(),
            vec![0.0, 1.0, 0.0, 0.25]
        );
        assert!(read_weights_file("[-1]").is_err());
        assert!(read_weights_file(r#"{"x": 1}"#).is_err());
        assert!(read_weights_file("3").is_err());
    }
}
