//! Bittensor wallets: a hotkey file (`~/.bittensor/wallets/<wallet>/hotkeys/<hotkey>`) is plain
//! JSON with `secretSeed`, `secretPhrase` and `ss58Address`. The key file must not be readable
//! by others, and no secret is ever printed: errors name the file, never its contents.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use subxt_signer::SecretUri;
use subxt_signer::sr25519::Keypair;

use super::ChainError;

/// Where a hotkey lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletPath {
    /// `--wallet.path` (default `~/.bittensor/wallets`).
    pub root: PathBuf,
    /// `--wallet.name`.
    pub name: String,
    /// `--wallet.hotkey`.
    pub hotkey: String,
}

impl WalletPath {
    /// btcli's default root: `~/.bittensor/wallets`.
    pub fn default_root() -> PathBuf {
        std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join(".bittensor/wallets")
    }

    /// The hotkey file.
    pub fn hotkey_file(&self) -> PathBuf {
        self.root
            .join(&self.name)
            .join("hotkeys")
            .join(&self.hotkey)
    }

    /// Loads the hotkey (refusing a file others can read).
    pub fn load(&self) -> Result<Hotkey, ChainError> {
        load_hotkey(&self.hotkey_file())
    }
}

#[derive(Deserialize)]
struct HotkeyFile {
    #[serde(rename = "secretSeed")]
    secret_seed: Option<String>,
    #[serde(rename = "secretPhrase")]
    secret_phrase: Option<String>,
    #[serde(rename = "ss58Address")]
    ss58_address: Option<String>,
}

/// A loaded hotkey: the signer and its address.
pub struct Hotkey {
    /// The sr25519 keypair.
    pub keypair: Keypair,
    /// Its SS58 address.
    pub ss58: String,
}

impl std::fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Hotkey")
            .field("ss58", &self.ss58)
            .finish_non_exhaustive()
    }
}

/// The SS58 address (generic prefix 42) of a keypair.
pub fn ss58_of(keypair: &Keypair) -> String {
    keypair.public_key().to_account_id().to_string()
}

fn invalid(path: &Path, why: &str) -> ChainError {
    ChainError::Invalid(format!("hotkey file {}: {why}", path.display()))
}

/// Loads a hotkey file, refusing one that others can read.
pub fn load_hotkey(path: &Path) -> Result<Hotkey, ChainError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|e| invalid(path, &e.to_string()))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(invalid(
            path,
            &format!(
                "is readable by others (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    if metadata.len() > 64 * 1024 {
        return Err(invalid(path, "is too large to be a hotkey file"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, &e.to_string()))?;
    if text.starts_with("$NACL") || text.starts_with("$BT") {
        return Err(invalid(
            path,
            "is encrypted; a validator's hotkey file is plain JSON",
        ));
    }
    let file: HotkeyFile = serde_json::from_str(&text)
        .map_err(|_| invalid(path, "is not a bittensor keyfile (JSON)"))?;
    let keypair = if let Some(seed) = &file.secret_seed {
        let bytes = super::hex_bytes(seed).ok_or_else(|| invalid(path, "secretSeed is not hex"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| invalid(path, "secretSeed is not 32 bytes"))?;
        Keypair::from_secret_key(seed)
            .map_err(|_| invalid(path, "secretSeed is not a valid sr25519 seed"))?
    } else if let Some(phrase) = &file.secret_phrase {
        let uri: SecretUri = phrase
            .parse()
            .map_err(|_| invalid(path, "secretPhrase cannot be read"))?;
        Keypair::from_uri(&uri)
            .map_err(|_| invalid(path, "secretPhrase is not a valid mnemonic"))?
    } else {
        return Err(invalid(path, "holds neither secretSeed nor secretPhrase"));
    };
    let ss58 = ss58_of(&keypair);
    if let Some(expected) = &file.ss58_address
        && expected != &ss58
    {
        return Err(invalid(
            path,
            &format!("its key gives {ss58}, but ss58Address says {expected}"),
        ));
    }
    Ok(Hotkey { keypair, ss58 })
}

/// Loads a key from a secret URI (`//Alice`, a mnemonic) for development and tests.
pub fn hotkey_from_uri(uri: &str) -> Result<Hotkey, ChainError> {
    let uri: SecretUri = uri
        .parse()
        .map_err(|_| ChainError::Invalid("the secret URI cannot be read".into()))?;
    let keypair = Keypair::from_uri(&uri)
        .map_err(|_| ChainError::Invalid("the secret URI is not a valid key".into()))?;
    let ss58 = ss58_of(&keypair);
    Ok(Hotkey { keypair, ss58 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // Alice's well-known development key (the substrate dev seed).
    const ALICE_SEED: &str = "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a";
    const ALICE_SS58: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    fn write(dir: &Path, json: &str, mode: u32) -> PathBuf {
        let path = dir.join("hotkey");
        std::fs::write(&path, json).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_seed_file_gives_its_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &format!(r#"{{"secretSeed": "{ALICE_SEED}", "ss58Address": "{ALICE_SS58}"}}"#),
            0o600,
        );
        let hotkey = load_hotkey(&path).unwrap();
        assert_eq!(hotkey.ss58, ALICE_SS58);
        assert_eq!(hotkey_from_uri("//Alice").unwrap().ss58, ALICE_SS58);
        assert!(!format!("{hotkey:?}").contains("e5be9a"));
    }

    #[test]
    fn unsafe_or_wrong_files_are_refused_without_leaking_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            &format!(r#"{{"secretSeed": "{ALICE_SEED}"}}"#),
            0o644,
        );
        let error = load_hotkey(&path).unwrap_err().to_string();
        assert!(
            error.contains("readable by others") && error.contains("chmod 600"),
            "{error}"
        );
        assert!(!error.contains("e5be9a"));
        let path = write(
            dir.path(),
            &format!(r#"{{"secretSeed": "{ALICE_SEED}", "ss58Address": "5Fwrong"}}"#),
            0o600,
        );
        let error = load_hotkey(&path).unwrap_err().to_string();
        assert!(error.contains("ss58Address says"), "{error}");
        assert!(!error.contains("e5be9a"));
        let path = write(dir.path(), "$NACL...", 0o600);
        assert!(
            load_hotkey(&path)
                .unwrap_err()
                .to_string()
                .contains("encrypted")
        );
        let path = write(dir.path(), r#"{"secretSeed": "0x1234"}"#, 0o600);
        assert!(
            load_hotkey(&path)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
}
