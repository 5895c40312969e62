//! Who evaluated, proven: every remote worker holds an nkey (an Ed25519 key pair in NATS's
//! text form: a seed `SU...` in a file of its own, a public key `U...`), signs each result it
//! publishes, and the runner takes a result only when its signature verifies under a key the
//! operator told it to trust. Anyone else who can publish to the results subject (a client
//! without credentials, a user meant only to evaluate) can forge nothing: it does not hold a
//! trusted worker's secret. The same key can also authenticate the worker to the server.

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use serde::Serialize;

use super::{QueueError, ResultMessage};

/// The largest file of keys (a seed, or the trusted list) read.
const KEY_FILE_BYTES_MAX: u64 = 1 << 20;

/// The bytes a signature covers: a label that no other message of ours starts with, then the
/// result without its signature, as JSON (its fields in declaration order, the losses in their
/// exact form), so both ends compute them from the same values.
fn signed_bytes(result: &ResultMessage) -> Vec<u8> {
    #[derive(Serialize)]
    struct Signed<'a> {
        label: &'static str,
        result: &'a ResultMessage,
    }
    let unsigned = ResultMessage {
        signature: String::new(),
        ..result.clone()
    };
    serde_json::to_vec(&Signed {
        label: "validator evaluation result",
        result: &unsigned,
    })
    .unwrap_or_default()
}

/// A worker's key pair, from its seed file.
pub struct WorkerKey(nkeys::KeyPair);

impl std::fmt::Debug for WorkerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkerKey")
            .field(&self.0.public_key())
            .finish()
    }
}

fn key_error(path: &Path, why: impl std::fmt::Display) -> QueueError {
    QueueError::Key(format!("{}: {why}", path.display()))
}

impl WorkerKey {
    /// The key whose seed is in `path`, made (mode 0600) when the file does not exist yet.
    /// Returns it and whether it was made.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), QueueError> {
        match std::fs::symlink_metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let pair = nkeys::KeyPair::new_user();
                let seed = pair.seed().map_err(|e| key_error(path, e))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| key_error(path, e))?;
                std::io::Write::write_all(&mut file, format!("{seed}\n").as_bytes())
                    .map_err(|e| key_error(path, e))?;
                file.sync_all().map_err(|e| key_error(path, e))?;
                Ok((Self(pair), true))
            }
            Err(error) => Err(key_error(path, error)),
            Ok(metadata) => {
                let mode = metadata.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(key_error(
                        path,
                        format!(
                            "is readable by others (mode {:o}); run `chmod 600 {}`",
                            mode & 0o777,
                            path.display()
                        ),
                    ));
                }
                let bytes = crate::bounded::read_regular(path, KEY_FILE_BYTES_MAX)
                    .map_err(|e| key_error(path, e))?;
                // Never echo the file: it holds a secret.
                let seed = std::str::from_utf8(&bytes)
                    .map_err(|_| key_error(path, "is not an nkey seed (not UTF-8)"))?
                    .trim();
                let pair = nkeys::KeyPair::from_seed(seed)
                    .ok()
                    .filter(|pair| pair.key_pair_type() == nkeys::KeyPairType::User)
                    .ok_or_else(|| key_error(path, "does not hold a user nkey seed (SU...)"))?;
                Ok((Self(pair), false))
            }
        }
    }

    /// The public key (`U...`) the runner's operator trusts.
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }

    /// The seed, for authenticating to the server with this key. Never print it.
    pub fn seed(&self) -> Option<String> {
        self.0.seed().ok()
    }

    /// Signs `result` (its `worker_key` set to this key first).
    pub fn sign(&self, result: &mut ResultMessage) {
        result.worker_key = self.public_key();
        result.signature = String::new();
        let signature = self.0.sign(&signed_bytes(result)).unwrap_or_default();
        result.signature = base64::engine::general_purpose::STANDARD.encode(signature);
    }
}

/// The workers a runner takes results from, by public key, with the name the operator gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedWorkers {
    keys: BTreeMap<String, String>,
}

impl TrustedWorkers {
    /// The list in `path`: one worker a line, its public key (`U...`) and an optional name;
    /// blank lines and `#` comments are skipped.
    pub fn read(path: &Path) -> Result<Self, QueueError> {
        let bytes = crate::bounded::read_regular(path, KEY_FILE_BYTES_MAX)
            .map_err(|e| key_error(path, e))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| key_error(path, "is not UTF-8 text"))?;
        Self::parse(text).map_err(|why| key_error(path, why))
    }

    /// The list in `text` (see [`TrustedWorkers::read`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or("");
            let valid = nkeys::KeyPair::from_public_key(key)
                .is_ok_and(|pair| pair.key_pair_type() == nkeys::KeyPairType::User);
            if !valid {
                // The token is not echoed: a seed pasted here by mistake is a secret.
                return Err(format!(
                    "line {}: not a worker's public nkey (U...)",
                    number + 1
                ));
            }
            let name: String = words.collect::<Vec<_>>().join(" ");
            let name = if name.is_empty() {
                key.chars().take(12).collect()
            } else {
                name.chars().take(64).collect()
            };
            keys.insert(key.to_owned(), name);
        }
        if keys.is_empty() {
            return Err("lists no worker".into());
        }
        Ok(Self { keys })
    }

    /// How many workers are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted worker's name when `result` is signed by a key on the list and its
    /// signature verifies; otherwise why not.
    pub fn verify(&self, result: &ResultMessage) -> Result<&str, String> {
        let Some(name) = self.keys.get(&result.worker_key) else {
            return Err("signed by no trusted worker".into());
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(result.signature.as_bytes())
            .map_err(|_| "its signature is not base64".to_owned())?;
        let key = nkeys::KeyPair::from_public_key(&result.worker_key)
            .map_err(|_| "not a public key".to_owned())?;
        key.verify(&signed_bytes(result), &signature)
            .map_err(|_| format!("its signature does not verify under {name}'s key"))?;
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::event::{EvalOutcome, EvaluatedBy};
    use crate::machine::wire::LossVec;

    fn result() -> ResultMessage {
        ResultMessage {
            version: super::super::MESSAGE_VERSION,
            job_id: "job-1".into(),
            step: 3,
            uid: 7,
            model_hash: "h".into(),
            batch_digest: "d".into(),
            shard: 0,
            outcome: EvalOutcome::Losses(LossVec(vec![1.5, f32::INFINITY])),
            worker: EvaluatedBy {
                host: "h".into(),
                device: "cpu".into(),
                build: "b".into(),
            },
            session_seconds: 0.5,
            scoring_seconds: 0.25,
            worker_key: String::new(),
            signature: String::new(),
        }
    }

    #[test]
    fn a_result_signed_by_a_trusted_key_verifies_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.nk");
        let (key, made) = WorkerKey::load_or_create(&path).unwrap();
        assert!(made);
        let (again, made) = WorkerKey::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(again.public_key(), key.public_key());
        let trusted = TrustedWorkers::parse(&format!("{} gpu-1\n", key.public_key())).unwrap();
        let mut signed = result();
        key.sign(&mut signed);
        assert_eq!(trusted.verify(&signed), Ok("gpu-1"));
        // Any field changed after signing: the losses, the job, the batch.
        let mut tampered = signed.clone();
        tampered.outcome = EvalOutcome::Losses(LossVec(vec![0.001, 0.001]));
        assert!(trusted.verify(&tampered).is_err());
        let mut other_job = signed.clone();
        other_job.job_id = "job-2".into();
        assert!(trusted.verify(&other_job).is_err());
        // A key nobody trusts, even with a valid signature of its own.
        let stranger = WorkerKey(nkeys::KeyPair::new_user());
        let mut forged = result();
        stranger.sign(&mut forged);
        assert!(
            trusted
                .verify(&forged)
                .unwrap_err()
                .contains("no trusted worker")
        );
        // A trusted key with another key's signature.
        forged.worker_key = key.public_key();
        assert!(trusted.verify(&forged).is_err());
    }

    #[test]
    fn key_files_are_private_and_lists_hold_only_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.nk");
        let (key, _) = WorkerKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = WorkerKey::load_or_create(&path).unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
        let seed = key.seed().unwrap();
        let error = TrustedWorkers::parse(&seed).unwrap_err();
        assert!(
            !error.contains(&seed[4..]),
            "the list's error printed a seed: {error}"
        );
        assert!(TrustedWorkers::parse("# nobody\n").is_err());
    }
}
