//! A competition's tokenizer repository (the successor's `Xenova/gpt-4`) fetched through the
//! hub at a pinned commit: only the files a tokenizer is read from
//! ([`crate::dirhash::TOKENIZER_FILES`]), each bounded, into a directory of their own. The
//! successor loads the repository's latest revision, whatever it is at the time; a validator
//! names the commit, so every step is tokenised with the same files, and journals their hash.

use std::path::{Path, PathBuf};

use super::{Fetched, FileFailure, Hub, HubError, io_error};
use crate::dirhash::TOKENIZER_FILES;

/// The largest tokenizer file fetched (cl100k_base as `tokenizer.json` is about 7 MB).
pub const TOKENIZER_FILE_BYTES_MAX: u64 = 64 << 20;

/// Where a tokenizer repository's files at `commit` are kept under `cache`.
pub fn tokenizer_dir(cache: &Path, repo_id: &str, commit: &str) -> PathBuf {
    cache.join(repo_id).join(commit)
}

impl Hub {
    /// Fetches the tokenizer files of model repository `repo_id` (`OWNER/NAME`) at `commit`
    /// (40 hexadecimal digits) into [`tokenizer_dir`] under `cache`, and returns that
    /// directory; files already there at their listed size are kept. `Ok(Err(why))` when it
    /// cannot be used, for good: no such repository or commit, no `tokenizer.json`, a file
    /// over [`TOKENIZER_FILE_BYTES_MAX`].
    pub async fn tokenizer_files(
        &self,
        repo_id: &str,
        commit: &str,
        cache: &Path,
    ) -> Result<Result<PathBuf, String>, HubError> {
        let Some((owner, name)) = repo_id
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .filter(|(o, n)| !o.starts_with('.') && !n.starts_with('.'))
        else {
            return Ok(Err(format!(
                "tokenizer repository {repo_id:?} is not OWNER/NAME"
            )));
        };
        if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Err(format!(
                "tokenizer revision {commit:?} is not a commit (40 hexadecimal digits): a \
                 branch moves, and every step must be tokenised with the same files"
            )));
        }
        let repo = self.client.model(owner.to_owned(), name.to_owned());
        let listing = match self.listing_of(&repo, commit).await? {
            Ok(listing) => listing,
            Err(Fetched::Rejected { detail, .. }) => return Ok(Err(detail)),
            Err(Fetched::Verified(_)) => return Ok(Err("unexpected verdict".into())),
        };
        let wanted: Vec<(&str, u64)> = TOKENIZER_FILES
            .iter()
            .filter_map(|file| {
                listing
                    .iter()
                    .find(|(path, _)| path == file)
                    .map(|(_, size)| (*file, *size))
            })
            .collect();
        if !wanted.iter().any(|(file, _)| *file == "tokenizer.json") {
            return Ok(Err(format!("{repo_id} at {commit} has no tokenizer.json")));
        }
        if let Some((file, size)) = wanted
            .iter()
            .find(|(_, size)| *size > TOKENIZER_FILE_BYTES_MAX)
        {
            return Ok(Err(format!(
                "{repo_id}'s {file} is {size} bytes, over {TOKENIZER_FILE_BYTES_MAX}"
            )));
        }
        let dir = tokenizer_dir(cache, repo_id, commit);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error(&dir))?;
        for (file, size) in wanted {
            let dest = dir.join(file);
            match self.download_from(&repo, commit, file, size, &dest).await {
                Ok(_) => {}
                Err(FileFailure::Verdict(Fetched::Rejected { detail, .. })) => {
                    return Ok(Err(detail));
                }
                Err(FileFailure::Verdict(Fetched::Verified(_))) => {
                    return Ok(Err("unexpected verdict".into()));
                }
                Err(FileFailure::Retry(error)) => return Err(error),
            }
        }
        Ok(Ok(dir))
    }
}
