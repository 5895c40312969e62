//! Downloading one file of a repository at a commit: resumed from a partial file, every wait
//! bounded, never more bytes than the hub listed, optionally rate-limited.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hf_hub::repository::{HFRepository, RepoType};
use tokio::io::AsyncWriteExt;

use super::listing::classify;
use super::{FileFailure, Hub, HubError, io_error, rejected};
use crate::machine::event::RejectionCode;
use crate::machine::model_id::ModelId;

impl Hub {
    /// Downloads `name` of a model repository into `dest`, resuming a partial file.
    pub(super) async fn download(
        &self,
        model: &ModelId,
        commit: &str,
        name: &str,
        size: u64,
        dest: &Path,
    ) -> Result<u64, FileFailure> {
        let repo = self
            .client
            .model(model.namespace.clone(), model.name.clone());
        self.download_from(&repo, commit, name, size, dest).await
    }

    /// Downloads `name` (`size` bytes, as listed) into `dest`, resuming a partial file.
    pub(super) async fn download_from<T: RepoType>(
        &self,
        repo: &HFRepository<T>,
        commit: &str,
        name: &str,
        size: u64,
        dest: &Path,
    ) -> Result<u64, FileFailure> {
        let existing = tokio::fs::metadata(dest)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if existing == size && dest.exists() {
            return Ok(0);
        }
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error(parent))?;
        }
        let resume_from = if existing < size { existing } else { 0 };
        let target = if resume_from > 0 {
            dest.with_extension("resume")
        } else {
            dest.to_owned()
        };
        let range = (resume_from > 0).then_some(resume_from..size);
        let request = repo
            .download_file_stream()
            .filename(name.to_owned())
            .revision(commit.to_owned())
            .maybe_range(range);
        let stream = match self
            .with_timeout(&format!("fetching {name}"), request.send())
            .await?
        {
            Ok((_, stream)) => stream,
            Err(error) => {
                return Err(match classify(error) {
                    Ok(verdict) => FileFailure::Verdict(verdict),
                    Err(retry) => FileFailure::Retry(retry),
                });
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(io_error(&target))?;
        let mut received = 0u64;
        let started = Instant::now();
        // A server that ignores the range sends the whole file; either way no more than `size`.
        let limit = size;
        while let Some(chunk) = self
            .with_timeout(&format!("fetching {name}"), stream.next())
            .await?
        {
            let chunk =
                chunk.map_err(|e| HubError::Unavailable(format!("fetching {name}: {e}")))?;
            received = received.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            if received > limit {
                let _ = tokio::fs::remove_file(&target).await;
                return Err(FileFailure::Verdict(rejected(
                    RejectionCode::MalformedRepo,
                    format!("{name} is larger than the {size} bytes the hub listed"),
                )));
            }
            file.write_all(&chunk).await.map_err(io_error(&target))?;
            if let Some(rate) = self.options.bytes_per_second.filter(|r| *r > 0) {
                // Sleep until the average rate falls back under the limit.
                let due = Duration::from_millis(received.saturating_mul(1000) / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        file.flush().await.map_err(io_error(&target))?;
        drop(file);
        let expected = size - resume_from;
        if resume_from > 0 {
            if received == expected {
                // The server honoured the range: append the rest.
                let rest = tokio::fs::read(&target).await.map_err(io_error(&target))?;
                let mut whole = tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(dest)
                    .await
                    .map_err(io_error(dest))?;
                whole.write_all(&rest).await.map_err(io_error(dest))?;
                whole.flush().await.map_err(io_error(dest))?;
                let _ = tokio::fs::remove_file(&target).await;
                return Ok(received);
            }
            if received == size {
                // The server sent the whole file instead.
                tokio::fs::rename(&target, dest)
                    .await
                    .map_err(io_error(dest))?;
                return Ok(received);
            }
        } else if received == size {
            return Ok(received);
        }
        Err(FileFailure::Retry(HubError::Unavailable(format!(
            "{name}: received {received} of {expected} bytes"
        ))))
    }

    pub(super) fn progress_bar(&self, total: u64) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        (self.options.progress && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                bar.set_style(style);
            }
            bar
        })
    }
}
