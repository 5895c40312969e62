//! Listing a repository at a commit: paths and sizes, capped in count, hostile names refused;
//! and how the hub's errors sort into verdicts and retries.

use futures::StreamExt;
use hf_hub::HFError;
use hf_hub::repository::{HFRepository, RepoType};

use std::path::Path;

use super::{Fetched, FileFailure, Hub, HubError, files, rejected};
use crate::machine::event::RejectionCode;
use crate::machine::model_id::ModelId;

/// How a hub error is classified: a verdict on the model, or "try later".
pub(super) fn classify(error: HFError) -> Result<Fetched, HubError> {
    match error {
        HFError::RepoNotFound { repo_id, .. } => Ok(rejected(
            RejectionCode::NotFound,
            format!("repository {repo_id} does not exist"),
        )),
        HFError::RevisionNotFound {
            repo_id, revision, ..
        } => Ok(rejected(
            RejectionCode::NotFound,
            format!("revision {revision} does not exist in {repo_id}"),
        )),
        HFError::EntryNotFound { path, repo_id, .. } => Ok(rejected(
            RejectionCode::NotFound,
            format!("{path} is listed but cannot be fetched from {repo_id}"),
        )),
        HFError::Http { context } if context.status.as_u16() == 404 => Ok(rejected(
            RejectionCode::NotFound,
            format!("not found: {}", context.url),
        )),
        other => Err(HubError::Unavailable(other.to_string())),
    }
}

/// Why a listed path cannot be fetched, if it cannot.
pub(super) fn hostile_path_reason(path: &str) -> Option<String> {
    files::hostile_path(path)
}

impl Hub {
    /// Lists the model repository at `commit`: file paths and sizes.
    pub(super) async fn listing(
        &self,
        model: &ModelId,
        commit: &str,
    ) -> Result<Result<Vec<(String, u64)>, Fetched>, HubError> {
        let repo = self
            .client
            .model(model.namespace.clone(), model.name.clone());
        self.listing_of(&repo, commit).await
    }

    /// Lists a repository at `commit`: file paths and sizes.
    pub(super) async fn listing_of<T: RepoType>(
        &self,
        repo: &HFRepository<T>,
        commit: &str,
    ) -> Result<Result<Vec<(String, u64)>, Fetched>, HubError> {
        let stream = match repo
            .list_tree()
            .revision(commit.to_owned())
            .recursive(true)
            .send()
        {
            Ok(stream) => stream,
            Err(error) => return classify(error).map(Err),
        };
        let mut stream = std::pin::pin!(stream);
        let mut files = Vec::new();
        loop {
            let next = self
                .with_timeout("listing the repository", stream.next())
                .await?;
            match next {
                None => break,
                Some(Ok(hf_hub::repository::RepoTreeEntry::File { path, size, .. })) => {
                    files.push((path, size));
                    if files.len() > self.options.max_files {
                        return Ok(Err(rejected(
                            RejectionCode::MalformedRepo,
                            format!(
                                "the repository lists more than {} files",
                                self.options.max_files
                            ),
                        )));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return classify(error).map(Err),
            }
        }
        Ok(Ok(files))
    }
}

/// Dataset repositories, for the data edge.
impl Hub {
    fn dataset(
        &self,
        repo_id: &str,
    ) -> Result<HFRepository<hf_hub::repository::RepoTypeDataset>, String> {
        let (owner, name) = repo_id
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| format!("dataset {repo_id:?} is not OWNER/NAME"))?;
        Ok(self.client.dataset(owner.to_owned(), name.to_owned()))
    }

    /// The files of dataset `repo_id` at `revision` with their sizes; `Ok(Err(why))` when the
    /// dataset or revision does not exist or lists a hostile name.
    pub async fn dataset_files(
        &self,
        repo_id: &str,
        revision: &str,
    ) -> Result<Result<Vec<(String, u64)>, String>, HubError> {
        let repo = match self.dataset(repo_id) {
            Ok(repo) => repo,
            Err(why) => return Ok(Err(why)),
        };
        match self.listing_of(&repo, revision).await? {
            Ok(files) => match files.iter().find_map(|(path, _)| hostile_path_reason(path)) {
                Some(why) => Ok(Err(format!("the dataset holds {why}"))),
                None => Ok(Ok(files)),
            },
            Err(Fetched::Rejected { detail, .. }) => Ok(Err(detail)),
            Err(Fetched::Verified(_)) => Ok(Err("unexpected verdict".into())),
        }
    }

    /// Downloads one dataset file (`size` bytes, as listed) to `dest`; `Ok(Err(why))` when the
    /// hub refuses it for good.
    pub async fn dataset_file(
        &self,
        repo_id: &str,
        revision: &str,
        path: &str,
        size: u64,
        dest: &Path,
    ) -> Result<Result<(), String>, HubError> {
        let repo = match self.dataset(repo_id) {
            Ok(repo) => repo,
            Err(why) => return Ok(Err(why)),
        };
        match self.download_from(&repo, revision, path, size, dest).await {
            Ok(_) => Ok(Ok(())),
            Err(FileFailure::Verdict(Fetched::Rejected { detail, .. })) => Ok(Err(detail)),
            Err(FileFailure::Verdict(Fetched::Verified(_))) => Ok(Err("unexpected verdict".into())),
            Err(FileFailure::Retry(error)) => Err(error),
        }
    }
}
