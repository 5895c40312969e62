//! Verifying fetched files against the committed hash: N's directory hash over each candidate
//! file set (different transformers versions fetch different optional tokenizer files), plain
//! or hotkey-salted as the commitment's rule allows.

use std::collections::BTreeMap;
use std::path::Path;

use super::{Expected, Fetched, HubError, VerifiedModel, files};
use crate::dirhash::hash_of_file;
use crate::hashing::{hash_of_file_hashes, hash_of_two_strings};
use crate::machine::model_id::HashKind;

pub(super) fn file_hashes(
    dir: &Path,
    files: &[String],
) -> Result<BTreeMap<String, String>, HubError> {
    files
        .iter()
        .map(|name| {
            let hash = hash_of_file(&dir.join(name)).map_err(|e| HubError::Io {
                path: e.path,
                source: e.source,
            })?;
            Ok((name.clone(), hash))
        })
        .collect()
}

pub(super) fn plain_hash(dir: &Path, files: &[String]) -> Result<String, HubError> {
    let hashes = file_hashes(dir, files)?;
    let ordered = files::walk_sorted(files);
    Ok(hash_of_file_hashes(
        ordered
            .iter()
            .filter_map(|n| hashes.get(n).map(String::as_str)),
    ))
}

/// Checks the committed hash against every candidate file set, plain then salted (as the
/// rule allows). `None` when nothing matches.
pub(super) fn verify(
    dir: &Path,
    files: &[String],
    expected: &Expected<'_>,
    bytes_downloaded: u64,
) -> Result<Option<Fetched>, HubError> {
    let (hotkey, committed, rule) = (expected.hotkey, expected.hash, expected.rule);
    let hashes = file_hashes(dir, files)?;
    for candidate in files::candidate_sets(files) {
        let ordered = files::walk_sorted(&candidate);
        let plain = hash_of_file_hashes(
            ordered
                .iter()
                .filter_map(|n| hashes.get(n).map(String::as_str)),
        );
        let kind = if plain == committed {
            Some(HashKind::Plain)
        } else if hash_of_two_strings(&plain, hotkey) == committed {
            Some(HashKind::Salted)
        } else {
            None
        };
        if let Some(kind) = kind.filter(|k| rule.accepts(*k)) {
            return Ok(Some(Fetched::Verified(VerifiedModel {
                dir: dir.to_owned(),
                hash_kind: kind,
                files: candidate,
                bytes_downloaded,
            })));
        }
    }
    Ok(None)
}
