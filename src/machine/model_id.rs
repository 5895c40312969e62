//! The ModelId a miner commits on chain, in both formats, and the checks that decide whether a
//! commitment names something the validator can download and evaluate.

use serde::{Deserialize, Serialize};

use super::params::{CompetitionId, ModelIdFormat};

/// The most bytes a commitment may hold (N's `MAX_METADATA_BYTES`).
pub const MAX_METADATA_BYTES: usize = 128;
/// N's competition for 4-token strings committed before competitions existed.
pub const ORIGINAL_COMPETITION_ID: &str = "m1";
/// The successor's competition for 4-token strings.
pub const SUCCESSOR_LEGACY_COMPETITION_ID: &str = "0";

/// Which directory hashes a commitment accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashRule {
    /// N: the plain directory hash, or the hotkey-salted one.
    PlainOrSalted,
    /// The successor's 5-token strings: only `H2(dirhash, hotkey)`.
    SaltedOnly,
}

impl HashRule {
    /// Whether a verification of `kind` satisfies this rule.
    pub fn accepts(self, kind: HashKind) -> bool {
        matches!(
            (self, kind),
            (HashRule::PlainOrSalted, _) | (HashRule::SaltedOnly, HashKind::Salted)
        )
    }
}

/// Which hash a downloaded model matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKind {
    /// `base64(sha256(...))` over the directory, as committed.
    Plain,
    /// `base64(sha256(dirhash + hotkey))`.
    Salted,
}

/// A parsed commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// Hugging Face namespace (user or organisation).
    pub namespace: String,
    /// Repository name.
    pub name: String,
    /// Git commit of the repository; `None` when the token is `"None"`.
    pub commit: Option<String>,
    /// Committed directory hash (plain or salted); `None` when the token is `"None"`.
    pub hash: Option<String>,
    /// The competition this model enters.
    pub competition: CompetitionId,
    /// Which hashes verify it.
    pub hash_rule: HashRule,
}

/// Why a commitment cannot be turned into an evaluable model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitmentInvalid {
    /// The first field is not `Raw` (a hash, a timelocked payload, `BigRaw`, ...).
    #[error("the commitment's first field is {0}, not Raw")]
    NotRaw(String),
    /// The commitment holds no fields at all.
    #[error("the commitment has no fields")]
    NoFields,
    /// More than 128 bytes.
    #[error("the commitment is {0} bytes, over the {MAX_METADATA_BYTES}-byte limit")]
    TooLong(usize),
    /// Not UTF-8.
    #[error("the commitment is not UTF-8")]
    NotUtf8,
    /// Not 4 or 5 colon-separated tokens.
    #[error("the commitment has {0} colon-separated fields, expected 4 or 5")]
    FieldCount(usize),
    /// The successor's competition token is not a decimal integer.
    #[error("competition id {0:?} is not a decimal integer")]
    CompetitionNotInteger(String),
    /// The model cannot be downloaded or verified as named.
    #[error("{0}")]
    NotEvaluable(String),
    /// The successor: the competition was not in the schedule at the commit block, so F
    /// never downloads it (taoverse `sync_model`).
    #[error("competition {competition} was not running at the commit block {block_commit}")]
    NoCompetitionAtCommitBlock {
        /// The competition named.
        competition: String,
        /// The commit block.
        block_commit: u64,
    },
}

/// The commitment a miner sends for `repo` (`NAMESPACE/NAME`) at `commit` with `hash` (and
/// a competition, or N's 4-field string), checked the way validators will read it: the
/// 128-byte limit, parsing in `format`, and that it names an evaluable model.
pub fn commitment_text(
    repo: &str,
    commit: &str,
    hash: &str,
    competition: Option<&str>,
    format: ModelIdFormat,
) -> Result<String, String> {
    let (namespace, name) = repo
        .split_once('/')
        .ok_or_else(|| format!("--repo {repo:?}: use NAMESPACE/NAME"))?;
    let mut text = format!("{namespace}:{name}:{commit}:{hash}");
    if let Some(competition) = competition {
        text.push(':');
        text.push_str(competition);
    }
    if text.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "the commitment {text:?} is {} bytes; the chain takes at most {MAX_METADATA_BYTES}",
            text.len()
        ));
    }
    let model_id = ModelId::parse(&text, format).map_err(|why| format!("{text:?}: {why}"))?;
    model_id
        .check_evaluable()
        .map_err(|why| format!("validators would reject {text:?}: {why}"))?;
    Ok(text)
}

impl ModelId {
    /// Parses N's or the successor's compressed string, exactly as they read it.
    ///
    /// N indexes `tokens[0..4]` (fewer than 4 raise) and reads `tokens[4]` when present; it
    /// ignores any further tokens. We refuse 6 or more tokens instead: no honest miner's
    /// tooling writes them, and accepting them would make the string ambiguous.
    pub fn parse(text: &str, format: ModelIdFormat) -> Result<Self, CommitmentInvalid> {
        let tokens: Vec<&str> = text.split(':').collect();
        let (namespace, name, commit, hash, competition) = match tokens.as_slice() {
            [namespace, name, commit, hash] => (*namespace, *name, *commit, *hash, None),
            [namespace, name, commit, hash, competition] => {
                (*namespace, *name, *commit, *hash, Some(*competition))
            }
            _ => return Err(CommitmentInvalid::FieldCount(tokens.len())),
        };
        let optional = |token: &str| (token != "None").then(|| token.to_owned());
        let (competition, hash_rule) = match format {
            ModelIdFormat::Original => {
                let id = competition
                    .filter(|token| *token != "None")
                    .unwrap_or(ORIGINAL_COMPETITION_ID);
                (CompetitionId::new(id), HashRule::PlainOrSalted)
            }
            ModelIdFormat::Successor => match competition {
                None => (
                    CompetitionId::new(SUCCESSOR_LEGACY_COMPETITION_ID),
                    HashRule::PlainOrSalted,
                ),
                Some(token) => {
                    let number = parse_decimal(token)
                        .ok_or_else(|| CommitmentInvalid::CompetitionNotInteger(token.into()))?;
                    (CompetitionId::new(number.to_string()), HashRule::SaltedOnly)
                }
            },
        };
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            commit: optional(commit),
            hash: optional(hash),
            competition,
            hash_rule,
        })
    }

    /// N's `to_compressed_str`: `None` for missing values.
    pub fn to_compressed_string(&self) -> String {
        let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| "None".into());
        format!(
            "{}:{}:{}:{}:{}",
            self.namespace,
            self.name,
            or_none(&self.commit),
            or_none(&self.hash),
            self.competition
        )
    }

    /// `namespace/name`.
    pub fn repo_id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks that the model can be fetched and verified as named: a valid Hugging Face repo
    /// id, an immutable 40-hex commit (a branch name would let the content change under the
    /// committed hash, and is a path-injection risk), and a 44-character base64 SHA-256 hash.
    pub fn check_evaluable(&self) -> Result<(), CommitmentInvalid> {
        let fail = |why: String| Err(CommitmentInvalid::NotEvaluable(why));
        for (what, part) in [("namespace", &self.namespace), ("name", &self.name)] {
            if let Err(why) = check_repo_part(part) {
                return fail(format!("repository {what} {part:?} {why}"));
            }
        }
        match &self.commit {
            None => return fail("no commit revision".into()),
            Some(commit) if !is_git_commit(commit) => {
                return fail(format!("commit {commit:?} is not a 40-hex git commit id"));
            }
            Some(_) => {}
        }
        match &self.hash {
            None => return fail("no model hash".into()),
            Some(hash) if !is_base64_sha256(hash) => {
                return fail(format!("hash {hash:?} is not a base64 SHA-256 digest"));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// Parses the bytes of a `Raw` commitment field.
pub fn parse_raw_commitment(
    raw: &[u8],
    format: ModelIdFormat,
) -> Result<ModelId, CommitmentInvalid> {
    if raw.len() > MAX_METADATA_BYTES {
        return Err(CommitmentInvalid::TooLong(raw.len()));
    }
    let text = std::str::from_utf8(raw).map_err(|_| CommitmentInvalid::NotUtf8)?;
    ModelId::parse(text, format)
}

fn parse_decimal(token: &str) -> Option<u64> {
    if token.is_empty() || token.len() > 19 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Hugging Face's repo-name rule: letters, digits, `-`, `_`, `.`; no `--` or `..`; not
/// starting or ending with `-` or `.`; at most 96 characters.
fn check_repo_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("is empty");
    }
    if part.len() > 96 {
        return Err("is longer than 96 characters");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("has characters outside [A-Za-z0-9._-]");
    }
    if part.contains("--") || part.contains("..") {
        return Err("contains '--' or '..'");
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err("starts or ends with '-' or '.'");
    }
    Ok(())
}

fn is_git_commit(commit: &str) -> bool {
    commit.len() == 40
        && commit
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_base64_sha256(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    let Some((body, padding)) = bytes.split_at_checked(43) else {
        return false;
    };
    padding == b"="
        && body
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const HASH: &str = "k2oYXKqiZrucvpgengXLeM1zKwsygOuURBK7b4+PB68=";

    #[test]
    fn n_round_trips_its_own_test_strings() {
        // N's tests/model/test_data.py: ModelId(namespace, name, commit, hash) round-trips,
        // and a missing commit is written and read back as "None".
        let text = "test_model:test_name:test_commit:test_hash:None";
        let id = ModelId::parse(text, ModelIdFormat::Original).unwrap();
        assert_eq!(id.commit.as_deref(), Some("test_commit"));
        assert_eq!(id.hash.as_deref(), Some("test_hash"));
        assert_eq!(id.competition.as_str(), "m1");
        let id = ModelId::parse(
            "test_model:test_name:None:test_hash",
            ModelIdFormat::Original,
        )
        .unwrap();
        assert_eq!(id.commit, None);
        assert_eq!(id.competition.as_str(), ORIGINAL_COMPETITION_ID);
    }

    #[test]
    fn original_format_keeps_string_competitions() {
        let text = format!("ns:model:{COMMIT}:{HASH}:l3");
        let id = ModelId::parse(&text, ModelIdFormat::Original).unwrap();
        assert_eq!(id.competition.as_str(), "l3");
        assert_eq!(id.hash_rule, HashRule::PlainOrSalted);
        assert_eq!(id.to_compressed_string(), text);
        id.check_evaluable().unwrap();
    }

    #[test]
    fn successor_format_reads_integers_and_legacy_strings() {
        let text = format!("ns:model:{COMMIT}:{HASH}:4");
        let id = ModelId::parse(&text, ModelIdFormat::Successor).unwrap();
        assert_eq!(id.competition.as_str(), "4");
        assert_eq!(id.hash_rule, HashRule::SaltedOnly);
        let legacy = format!("ns:model:{COMMIT}:{HASH}");
        let id = ModelId::parse(&legacy, ModelIdFormat::Successor).unwrap();
        assert_eq!(id.competition.as_str(), "0");
        assert_eq!(id.hash_rule, HashRule::PlainOrSalted);
        let bad = format!("ns:model:{COMMIT}:{HASH}:x4");
        assert!(matches!(
            ModelId::parse(&bad, ModelIdFormat::Successor),
            Err(CommitmentInvalid::CompetitionNotInteger(_))
        ));
    }

    #[test]
    fn wrong_shapes_are_refused() {
        assert_eq!(
            ModelId::parse("a:b:c", ModelIdFormat::Original),
            Err(CommitmentInvalid::FieldCount(3))
        );
        assert_eq!(
            ModelId::parse("a:b:c:d:e:f", ModelIdFormat::Original),
            Err(CommitmentInvalid::FieldCount(6))
        );
        assert_eq!(
            parse_raw_commitment(&[0xff, 0xfe], ModelIdFormat::Original),
            Err(CommitmentInvalid::NotUtf8)
        );
        assert_eq!(
            parse_raw_commitment(&[b'a'; 129], ModelIdFormat::Original),
            Err(CommitmentInvalid::TooLong(129))
        );
    }

    #[test]
    fn unevaluable_ids_say_why() {
        let check = |text: &str| {
            ModelId::parse(text, ModelIdFormat::Original)
                .unwrap()
                .check_evaluable()
                .unwrap_err()
                .to_string()
        };
        assert!(check(&format!("ns:model:None:{HASH}:l3")).contains("no commit"));
        assert!(check(&format!("ns:model:main:{HASH}:l3")).contains("40-hex"));
        assert!(check(&format!("ns:model:{COMMIT}:None:l3")).contains("no model hash"));
        assert!(check(&format!("ns:model:{COMMIT}:short:l3")).contains("base64"));
        assert!(check(&format!("..:model:{COMMIT}:{HASH}:l3")).contains("namespace"));
        assert!(check(&format!("ns:a b:{COMMIT}:{HASH}:l3")).contains("name"));
    }
}
