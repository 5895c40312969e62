//! A local JSON Lines file of `{"prompt": ..., "response": ...}`, the format `validator eval`
//! reads. Rows are taken in the order the seed gives for the step.

use std::path::PathBuf;

use super::{
    BatchBuilder, BatchOutcome, BatchRequest, DataError, DataSource, SkipReason, shuffled,
};

/// The largest file read.
const FILE_BYTES_MAX: u64 = 1 << 30;

/// Splits JSON Lines bytes into rows (line number, parsed value or skip reason).
pub fn parse_lines(bytes: &[u8]) -> Vec<(usize, Result<serde_json::Value, SkipReason>)> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(index, line)| {
            let parsed = match std::str::from_utf8(line) {
                Err(_) => Err(SkipReason::NotUtf8),
                Ok(text) => serde_json::from_str(text).map_err(|_| SkipReason::Malformed),
            };
            (index + 1, parsed)
        })
        .collect()
}

/// A local JSON Lines source.
#[derive(Debug, Clone)]
pub struct LocalFile {
    /// The file.
    pub path: PathBuf,
    /// The prompt's field name.
    pub prompt_field: String,
    /// The response's field name.
    pub response_field: String,
    /// Apply N's unwanted-phrase filter to responses.
    pub phrase_filter: bool,
}

impl LocalFile {
    /// A file with `prompt`/`response` fields and no phrase filter.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            prompt_field: "prompt".into(),
            response_field: "response".into(),
            phrase_filter: false,
        }
    }
}

impl DataSource for LocalFile {
    fn name(&self) -> String {
        format!("local:{}", self.path.display())
    }

    async fn fetch(&self, request: &BatchRequest) -> Result<BatchOutcome, DataError> {
        let bytes = crate::bounded::read_regular(&self.path, FILE_BYTES_MAX)
            .map_err(|e| DataError::Config(format!("{}: {e}", self.path.display())))?;
        let rows = parse_lines(&bytes);
        let mut builder = BatchBuilder::new(request.max_samples, self.phrase_filter);
        let name = self
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for index in shuffled(rows.len(), &request.seed, request.step, "local-rows") {
            if builder.is_full() {
                break;
            }
            let Some((line, row)) = rows.get(index) else {
                continue;
            };
            match row {
                Ok(value) => {
                    builder.offer_json(
                        value,
                        &self.prompt_field,
                        &self.response_field,
                        &format!("{name}#L{line}"),
                    );
                }
                Err(reason) => builder.skip(*reason),
            }
        }
        Ok(builder.finish(
            request.step,
            self.name(),
            &request.seed,
            vec![self.path.display().to_string()],
        ))
    }
}
