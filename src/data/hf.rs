//! Hugging Face dataset files (JSON Lines or Parquet) at a pinned revision, through the hub
//! code, with a configurable mapping of fields to prompt and response. Files and rows are taken
//! in the order the seed gives for the step.

use std::path::PathBuf;

use super::local::LineIndex;
use super::parquet_rows::ParquetRows;
use super::{
    BatchBuilder, BatchOutcome, BatchRequest, DataError, DataSource, SkipReason, shuffled,
};
use crate::hub::{Hub, HubError};

/// The largest dataset file read.
const FILE_BYTES_MAX: u64 = 1 << 30;
/// The most rows read from one file.
const ROWS_MAX: usize = 2_000_000;

/// A Hugging Face dataset source.
#[derive(Debug, Clone)]
pub struct HfDataset {
    /// The hub client (endpoint, token, timeouts).
    pub hub: Hub,
    /// `owner/name`.
    pub repo: String,
    /// The pinned revision (a commit).
    pub revision: String,
    /// Only files whose path starts with this (e.g. `data/train`).
    pub path_prefix: String,
    /// The prompt's field name.
    pub prompt_field: String,
    /// The response's field name.
    pub response_field: String,
    /// Apply N's unwanted-phrase filter to responses.
    pub phrase_filter: bool,
    /// Where downloaded files are kept.
    pub cache_dir: PathBuf,
}

/// One file's rows: a Parquet file's first [`ROWS_MAX`], decoded row group by row group when
/// taken, or a JSON Lines file's first [`ROWS_MAX`] lines, indexed and parsed when taken.
enum Rows<'a> {
    Parquet(ParquetRows),
    Lines(LineIndex<'a>),
}

/// Rows decoded at a time: a Parquet row group among them is decoded once per chunk.
const ROWS_PER_CHUNK: usize = 1024;

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Parquet(rows) => rows.len(),
            Rows::Lines(index) => index.len(),
        }
    }

    fn rows(&self, indices: &[usize]) -> Vec<Option<Result<serde_json::Value, SkipReason>>> {
        match self {
            Rows::Parquet(rows) => rows.rows(indices),
            Rows::Lines(lines) => indices
                .iter()
                .map(|index| lines.row(*index).map(|(_, row)| row))
                .collect(),
        }
    }
}

fn unavailable(error: HubError) -> DataError {
    DataError::Unavailable(error.to_string())
}

impl HfDataset {
    fn local_path(&self, path: &str) -> PathBuf {
        self.cache_dir
            .join("datasets")
            .join(self.repo.replace('/', "--"))
            .join(&self.revision)
            .join(path)
    }
}

impl DataSource for HfDataset {
    fn name(&self) -> String {
        format!("hf:{}@{}", self.repo, self.revision)
    }

    async fn fetch(&self, request: &BatchRequest) -> Result<BatchOutcome, DataError> {
        let files = match self
            .hub
            .dataset_files(&self.repo, &self.revision)
            .await
            .map_err(unavailable)?
        {
            Ok(files) => files,
            Err(why) => return Err(DataError::Config(why)),
        };
        let mut candidates: Vec<(String, u64)> = files
            .into_iter()
            .filter(|(path, _)| {
                path.starts_with(&self.path_prefix)
                    && (path.ends_with(".jsonl")
                        || path.ends_with(".json")
                        || path.ends_with(".parquet"))
            })
            .collect();
        candidates.sort();
        if candidates.is_empty() {
            return Err(DataError::Config(format!(
                "{} has no .jsonl, .json or .parquet files under {:?}",
                self.name(),
                self.path_prefix
            )));
        }
        let mut builder = BatchBuilder::new(request.max_samples, self.phrase_filter);
        let mut references = Vec::new();
        for file_index in shuffled(candidates.len(), &request.seed, request.step, "hf-files") {
            if builder.is_full() {
                break;
            }
            let Some((path, size)) = candidates.get(file_index) else {
                continue;
            };
            if *size > FILE_BYTES_MAX {
                continue;
            }
            let local = self.local_path(path);
            let complete = std::fs::metadata(&local).is_ok_and(|m| m.len() == *size);
            if !complete
                && let Err(why) = self
                    .hub
                    .dataset_file(&self.repo, &self.revision, path, *size, &local)
                    .await
                    .map_err(unavailable)?
            {
                return Err(DataError::Unavailable(format!("{path}: {why}")));
            }
            let bytes;
            let rows = if path.ends_with(".parquet") {
                Rows::Parquet(
                    ParquetRows::open(
                        &local,
                        [self.prompt_field.as_str(), self.response_field.as_str()],
                        ROWS_MAX,
                    )
                    .map_err(|why| DataError::Unavailable(format!("{path}: {why}")))?,
                )
            } else {
                bytes = crate::bounded::read_regular(&local, FILE_BYTES_MAX)
                    .map_err(|e| DataError::Unavailable(format!("{}: {e}", local.display())))?;
                // Indexed, then parsed only where sampled.
                Rows::Lines(
                    LineIndex::new(&bytes, ROWS_MAX, false)
                        .map_err(|_| DataError::Unavailable(format!("{path}: over 4 GiB")))?,
                )
            };
            references.push(format!("{}/{path}", self.name()));
            let purpose = format!("hf-rows:{path}");
            let order = shuffled(rows.len(), &request.seed, request.step, &purpose);
            let mut taken = 0;
            while taken < order.len() && !builder.is_full() {
                // A little more than the batch still needs, since some rows are skipped: a
                // Parquet row group is decoded once per chunk, so chunks stay near the need.
                let want = builder.remaining();
                let chunk_len = want.saturating_add(want / 4).clamp(16, ROWS_PER_CHUNK);
                let chunk = &order[taken..order.len().min(taken + chunk_len)];
                taken += chunk.len();
                for (row_index, row) in chunk.iter().zip(rows.rows(chunk)) {
                    if builder.is_full() {
                        break;
                    }
                    match row {
                        Some(Ok(row)) => {
                            builder.offer_json(
                                &row,
                                &self.prompt_field,
                                &self.response_field,
                                &format!("{path}#{row_index}"),
                            );
                        }
                        Some(Err(reason)) => builder.skip(reason),
                        None => {}
                    }
                }
            }
        }
        Ok(builder.finish(request.step, self.name(), &request.seed, references))
    }
}
