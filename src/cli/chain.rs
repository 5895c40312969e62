//! `validator chain ...`: the metagraph with every commitment as the fold reads it (operators
//! and miners), a miner's model commitment, and an operator's manual weight submission.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use serde::Serialize;
use validator::chain::mechanism::SubnetMechanism;
use validator::chain::transactions::raw_field;
use validator::chain::wallet::{Hotkey, WalletPath};
use validator::chain::weights::version_key;
use validator::chain::{Chain, ChainError, ChainOptions, endpoint_url};
use validator::journal::recorder::Recorder;
use validator::machine::event::{CommitmentField, SubmitOutcome};
use validator::machine::model_id::{ModelId, commitment_text};
use validator::machine::params::ModelIdFormat;
use validator::machine::state::CommitmentStatus;
use validator::machine::weights::to_chain_weights;
use validator::machine::{Event, FoldDriver, MechanismParams, Record, State};
use validator::runner::edges::EdgeError;
use validator::runner::live::LiveWeights;
use validator::runner::weights::{OnceError, WeightSetter, WeightsConfig};
use validator::runner::writer::Writer;

use super::{Failure, Outcome, print_json_pretty, runtime};

/// `validator chain ...`.
#[derive(Debug, clap::Subcommand)]
pub enum ChainCommand {
    /// The subnet's uids, hotkeys, stake, consensus and each commitment (parsed, or why it
    /// is rejected), at a block.
    Metagraph {
        #[command(flatten)]
        chain: EndpointArgs,
        /// The subnet.
        #[arg(long)]
        netuid: u16,
        /// The block to read at (default: the latest).
        #[arg(long)]
        block: Option<u64>,
        /// How commitment strings are read.
        #[arg(long, value_enum, default_value = "original")]
        model_id_format: IdFormat,
        /// Also journal what was read into this sled journal.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Commit a model id for the wallet's hotkey (the miner's tool).
    Commit {
        #[command(flatten)]
        chain: EndpointArgs,
        #[command(flatten)]
        wallet: WalletArgs,
        #[command(flatten)]
        request: CommitArgs,
        /// How validators read the string (checked before sending).
        #[arg(long, value_enum, default_value = "original")]
        model_id_format: IdFormat,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Set weights from a JSON file (the operator's tool): a list by uid or {"uid": weight}.
    SetWeights {
        #[command(flatten)]
        chain: EndpointArgs,
        #[command(flatten)]
        wallet: WalletArgs,
        /// The subnet.
        #[arg(long)]
        netuid: u16,
        /// The subnet mechanism (0: the subnet's own; refused when the subnet does not have
        /// it).
        #[arg(long, visible_alias = "mecid", default_value_t = 0)]
        mechid: u8,
        /// The weights file.
        #[arg(long)]
        weights: PathBuf,
        /// Override the version key (default: this release's).
        #[arg(long)]
        version_key: Option<u64>,
        /// Journal the submission and the chain's answer into this sled journal.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How commitment strings are read.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum IdFormat {
    /// N's `ns:name:commit:hash[:competition]`.
    Original,
    /// The successor's integer competition ids and salted hashes.
    Successor,
}

impl From<IdFormat> for ModelIdFormat {
    fn from(format: IdFormat) -> Self {
        match format {
            IdFormat::Original => Self::Original,
            IdFormat::Successor => Self::Successor,
        }
    }
}

/// `--subtensor.network` / `--subtensor.chain_endpoint`, as btcli spells them.
#[derive(Debug, Clone, clap::Args)]
pub struct EndpointArgs {
    /// finney, test or local.
    #[arg(long = "subtensor.network", default_value = "finney")]
    pub network: String,
    /// A ws:// or wss:// endpoint (wins over --subtensor.network).
    #[arg(long = "subtensor.chain_endpoint", alias = "subtensor.chain-endpoint")]
    pub chain_endpoint: Option<String>,
    /// Longest wait for one chain call, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout_s: u64,
}

impl EndpointArgs {
    /// The connection settings these flags name.
    pub fn options(&self) -> Result<ChainOptions, ChainError> {
        let mut options = ChainOptions::new(&endpoint_url(
            &self.network,
            self.chain_endpoint.as_deref(),
        )?);
        options.call_timeout = Duration::from_secs(self.timeout_s.max(1));
        Ok(options)
    }

    async fn connect(&self) -> Result<Chain, ChainError> {
        Chain::connect(self.options()?).await
    }
}

/// `--wallet.path`, `--wallet.name`, `--wallet.hotkey`, as btcli's.
#[derive(Debug, Clone, clap::Args)]
pub struct WalletArgs {
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

impl WalletArgs {
    /// Where the hotkey file is.
    pub fn wallet(&self) -> WalletPath {
        WalletPath {
            root: self.path.clone().unwrap_or_else(WalletPath::default_root),
            name: self.name.clone(),
            hotkey: self.hotkey.clone(),
        }
    }

    fn load(&self) -> Result<Hotkey, Failure> {
        self.wallet().load().map_err(Failure::invalid)
    }
}

/// What `validator chain commit` sends.
#[derive(Debug, Clone, clap::Args)]
pub struct CommitArgs {
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

/// Sorts a chain failure: the request's fault (exit 2) or not (exit 1).
fn fail(error: ChainError) -> Failure {
    match error {
        ChainError::Invalid(_) => Failure::invalid(error),
        other => Failure::failed(other),
    }
}

/// Runs a chain command.
pub fn run(command: ChainCommand) -> Outcome {
    let runtime = runtime()?;
    match command {
        ChainCommand::Metagraph {
            chain,
            netuid,
            block,
            model_id_format,
            db,
            json,
        } => {
            let view = runtime.block_on(metagraph(
                &chain,
                netuid,
                block,
                model_id_format.into(),
                db.as_deref(),
            ))?;
            if json {
                print_json_pretty(&view)
            } else {
                print!("{}", render_metagraph(&view));
                Ok(())
            }
        }
        ChainCommand::Commit {
            chain,
            wallet,
            request,
            model_id_format,
            json,
        } => {
            let netuid = request.netuid;
            let text = commitment_text(
                &request.repo,
                &request.commit,
                &request.hash,
                request.competition.as_deref(),
                model_id_format.into(),
            )
            .map_err(|why| Failure::Invalid(anyhow!(why)))?;
            let hotkey = wallet.load()?;
            let block = runtime
                .block_on(async {
                    let chain = chain.connect().await?;
                    chain
                        .set_commitment_field(&hotkey.keypair, netuid, raw_field(text.as_bytes()))
                        .await
                })
                .map_err(fail)?;
            let hotkey = hotkey.ss58;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"netuid": netuid, "hotkey": hotkey, "commitment": text, "block": block})
                );
            } else {
                println!("committed {text:?} for {hotkey} on netuid {netuid} in block {block}");
            }
            Ok(())
        }
        ChainCommand::SetWeights {
            chain,
            wallet,
            netuid,
            mechid,
            weights,
            version_key,
            db,
            json,
        } => {
            let text = std::fs::read_to_string(&weights)
                .map_err(|e| Failure::Invalid(anyhow!("reading {}: {e}", weights.display())))?;
            let dense = read_weights_file(&text).map_err(|why| Failure::Invalid(anyhow!(why)))?;
            let report = runtime.block_on(set_weights(
                &chain,
                &wallet,
                SubnetMechanism {
                    netuid,
                    mecid: mechid,
                },
                &dense,
                version_key,
                db.as_deref(),
            ))?;
            if json {
                let text = serde_json::to_string(&report).map_err(Failure::failed)?;
                println!("{text}");
            } else {
                println!(
                    "{} included in block {}: {} uids, version key {}",
                    report.method,
                    report.block,
                    report.uids.len(),
                    report.version_key
                );
            }
            Ok(())
        }
    }
}

/// One uid of the metagraph as `validator chain metagraph` shows it.
#[derive(Debug, Clone, Serialize)]
struct NeuronView {
    uid: u16,
    hotkey: String,
    /// Stake on the subnet (rao).
    stake: u64,
    /// Consensus in [0, 1].
    consensus: f64,
    /// Incentive in [0, 1].
    incentive: f64,
    validator_permit: bool,
    /// Last weight-setting block.
    last_update: u64,
    commitment: Option<CommitmentView>,
}

/// A commitment as the fold reads it.
#[derive(Debug, Clone, Serialize)]
struct CommitmentView {
    block_commit: u64,
    /// The first field's bytes as hex (`Raw`), or the variant's name.
    field: String,
    model_id: Option<ModelId>,
    model_id_string: Option<String>,
    /// `valid` (waiting for download and checks), `verified`, `rejected` or `invalid`.
    status: &'static str,
    reason: Option<String>,
}

/// What `validator chain metagraph` prints.
#[derive(Debug, Clone, Serialize)]
struct MetagraphView {
    netuid: u16,
    block: u64,
    tempo: u16,
    neurons: Vec<NeuronView>,
    /// Commitments of hotkeys that hold no uid (deregistered miners).
    unregistered_commitments: BTreeMap<String, CommitmentView>,
}

fn view_of(state: &State, hotkey: &str) -> Option<CommitmentView> {
    let commitment = state.hotkeys.get(hotkey)?.commitment.as_ref()?;
    let field = match &commitment.field {
        CommitmentField::Raw(raw) => {
            format!("raw:{}", validator::machine::wire::hex_encode(&raw.0))
        }
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

/// Folds what the chain showed into a state: into the journal `db` when given, else into a
/// scratch state with N's parameters and the given commitment format.
fn fold_observation(
    block: u64,
    events: Vec<Event>,
    format: ModelIdFormat,
    db: Option<&Path>,
) -> Result<State, Failure> {
    let events: Vec<(u64, Event)> = events.into_iter().map(|e| (block, e)).collect();
    if let Some(path) = db {
        let mut recorder = Recorder::open(path, 100)?;
        recorder.record(&events)?;
        return Ok(recorder.state().clone());
    }
    let params = MechanismParams {
        model_id_format: format,
        ..MechanismParams::default()
    };
    let mut driver = FoldDriver::new(Some(State::new(params)));
    let records: Vec<Record> = (0u64..)
        .zip(events)
        .map(|(seq, (block, event))| Record { block, seq, event })
        .collect();
    driver.fold_records(&records);
    Ok(driver.into_state())
}

/// Reads the metagraph and commitments of `netuid` at `block` (latest when `None`), folds
/// them as the validator would, and returns the view.
async fn metagraph(
    endpoint: &EndpointArgs,
    netuid: u16,
    block: Option<u64>,
    format: ModelIdFormat,
    db: Option<&Path>,
) -> Result<MetagraphView, Failure> {
    let chain = endpoint.connect().await.map_err(fail)?;
    let (block, events) = chain.observe(netuid, block).await.map_err(fail)?;
    let state = fold_observation(block, events, format, db)?;
    let metagraph = state
        .metagraph
        .as_ref()
        .ok_or_else(|| Failure::Invalid(anyhow!("the journal refused the metagraph")))?;
    let observed = &metagraph.observed;
    let neurons = (0u16..)
        .zip(&observed.hotkeys)
        .map(|(uid, hotkey)| {
            let at = usize::from(uid);
            NeuronView {
                uid,
                hotkey: hotkey.clone(),
                stake: observed.stake.get(at).copied().unwrap_or(0),
                consensus: f64::from(observed.consensus.get(at).copied().unwrap_or(0)) / 65535.0,
                incentive: f64::from(observed.incentive.get(at).copied().unwrap_or(0)) / 65535.0,
                validator_permit: observed.validator_permit.get(at).copied().unwrap_or(false),
                last_update: observed.last_update.get(at).copied().unwrap_or(0),
                commitment: view_of(&state, hotkey),
            }
        })
        .collect();
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
fn render_metagraph(view: &MetagraphView) -> String {
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

/// Reads `--weights FILE.json`: a list (one weight per uid) or an object `{"uid": weight}`.
fn read_weights_file(text: &str) -> Result<Vec<f64>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("the weights file is not JSON: {e}"))?;
    let number = |v: &serde_json::Value, at: &str| {
        v.as_f64()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| format!("weight of uid {at} is {v}, not a non-negative number"))
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
                let uid: u16 = key
                    .parse()
                    .map_err(|_| format!("{key:?} is not a uid (0..=65535)"))?;
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
        _ => Err(
            "the weights file must be a list of weights by uid or an object {\"uid\": weight}"
                .into(),
        ),
    }
}

/// What `validator chain set-weights` did.
#[derive(Debug, Clone, Serialize)]
struct SetWeightsReport {
    uids: Vec<u16>,
    weights: Vec<u16>,
    version_key: u64,
    /// `set_weights`, `commit_weights+reveal_weights` or `commit_timelocked_weights`.
    method: &'static str,
    /// The block that included it.
    block: u64,
}

/// Sets weights from `dense` (one per uid) on `netuid` by whatever rule the subnet has, as a
/// one-shot of the runner's weight setter: the same write-ahead path (the intent journaled
/// before anything is signed, the chain's answer after), into the journal `db` when given,
/// else into a scratch journal that is removed after.
async fn set_weights(
    endpoint: &EndpointArgs,
    wallet: &WalletArgs,
    mechanism: SubnetMechanism,
    dense: &[f64],
    version_key_override: Option<u64>,
    db: Option<&Path>,
) -> Result<SetWeightsReport, Failure> {
    let (uids, values) = to_chain_weights(dense).map_err(Failure::invalid)?;
    if uids.is_empty() {
        return Err(Failure::Invalid(anyhow!(
            "every weight is zero: nothing to set"
        )));
    }
    let version_key = version_key_override.unwrap_or_else(version_key);
    let hotkey = wallet.load()?;
    // The journal is opened (and locked) before anything is signed.
    let scratch;
    let path = match db {
        Some(db) => db.to_owned(),
        None => {
            scratch = tempfile::tempdir().map_err(Failure::failed)?;
            scratch.path().join("journal")
        }
    };
    let writer = Writer::open(&path, 100)?;
    // Read before the block: a handle alive inside it would keep `close` waiting for it.
    let open_intent = writer.handle().state().weights_intent.clone();
    if let Some(intent) = open_intent {
        writer.close();
        return Err(Failure::Invalid(anyhow!(
            "the journal holds weights prepared at block {} and not yet answered: run \
             `validator run` on it to settle them with the chain before sending others",
            intent.block_prepared
        )));
    }
    let chain = match endpoint.connect().await {
        Ok(chain) => chain,
        Err(error) => {
            writer.close();
            return Err(fail(error));
        }
    };
    // A mechanism the subnet lacks, or a runtime without a weight call, is refused before
    // anything is signed.
    match chain.runtime_offer(mechanism).await {
        Ok(offer) => eprintln!("validator: {offer}"),
        Err(error) => {
            writer.close();
            return Err(fail(error));
        }
    }
    let live = LiveWeights {
        chain,
        netuid: mechanism.netuid,
        mecid: mechanism.mecid,
        hotkey: std::sync::Arc::new(hotkey),
    };
    let mut config = WeightsConfig::new(version_key);
    config.mecid = mechanism.mecid;
    // A hash commit's reveal window is watched every 6 s (half a block).
    config.tick = Duration::from_secs(6);
    let mut setter = WeightSetter::new(writer.handle(), std::sync::Arc::new(live), config);
    let sent = setter.send_once(uids.clone(), values.clone()).await;
    drop(setter);
    writer.close();
    let report = match sent {
        Ok(report) => report,
        Err(OnceError::Undecided(error @ EdgeError::Unavailable(_))) if db.is_some() => {
            // Its fate may be unknown: the intent stays open for `validator run` to settle
            // from the chain, rather than be recorded as failed while it may still land.
            eprintln!(
                "validator: the submission's fate is unknown; the journal keeps it open for \
                 `validator run` to settle from the chain"
            );
            return Err(Failure::failed(error));
        }
        Err(OnceError::JournalRefused(why)) => return Err(Failure::Invalid(anyhow!(why))),
        Err(OnceError::Write(error)) => return Err(Failure::failed(error)),
        Err(other) => return Err(Failure::failed(other)),
    };
    let block = match report.outcome {
        SubmitOutcome::Included { block } => block,
        _ => report.block_prepared,
    };
    Ok(SetWeightsReport {
        uids,
        weights: values,
        version_key,
        method: report.method,
        block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitment_strings_are_checked_before_sending() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let hash = "S5gC8GS1/hrh4dSajTfkgbTTSpvoAwDiuH7TwjlN9Fo=";
        let text = commitment_text(
            "miner/model",
            commit,
            hash,
            Some("m1"),
            ModelIdFormat::Original,
        )
        .unwrap();
        assert_eq!(text, format!("miner:model:{commit}:{hash}:m1"));
        let long = format!("miner/{}", "m".repeat(90));
        let error =
            commitment_text(&long, commit, hash, None, ModelIdFormat::Original).unwrap_err();
        assert!(error.contains("at most 128"), "{error}");
        let error = commitment_text("miner/model", "main", hash, None, ModelIdFormat::Original)
            .unwrap_err();
        assert!(error.contains("40-hex"), "{error}");
        let error = commitment_text(
            "miner/model",
            commit,
            hash,
            Some("m1"),
            ModelIdFormat::Successor,
        )
        .unwrap_err();
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
