//! A local JSON Lines file of `{"prompt": ..., "response": ...}`, the format `validator eval`
//! reads. Rows are taken in the order the seed gives for the step.

use std::path::PathBuf;

use super::{
    BatchBuilder, BatchOutcome, BatchRequest, DataError, DataSource, SkipReason, shuffled,
};

/// The largest file read.
const FILE_BYTES_MAX: u64 = 1 << 30;
/// The most rows a local file may hold: 12 bytes of index and 8 of shuffle each, so a file of
/// tiny lines cannot make the index outgrow the file many times over.
pub const LOCAL_ROWS_MAX: usize = 16 << 20;
/// The longest line parsed. A row is two texts of at most [`TEXT_BYTES_MAX`] bytes each
/// (six times that when every character is a `\u` escape) plus whatever else the row holds;
/// a longer line is skipped as too long without being parsed.
///
/// [`TEXT_BYTES_MAX`]: super::TEXT_BYTES_MAX
pub const LINE_BYTES_MAX: usize = 16 << 20;

/// The non-blank lines of JSON Lines bytes, indexed without parsing them: a source shuffles
/// the index and parses only the lines it takes, so a file of a million tiny rows costs a
/// few megabytes, not a JSON tree per row.
#[derive(Debug)]
pub struct LineIndex<'a> {
    bytes: &'a [u8],
    /// Where each line starts and ends (32 bits: files are at most [`FILE_BYTES_MAX`]).
    spans: Vec<(u32, u32)>,
    /// Each line's 1-based number in the file.
    numbers: Vec<u32>,
}

/// A file with more rows than an index takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyRows;

impl<'a> LineIndex<'a> {
    /// Indexes the first `rows_max` non-blank lines of `bytes`; with `refuse_more`, a file
    /// that has more is [`TooManyRows`], otherwise the rest is ignored.
    pub fn new(bytes: &'a [u8], rows_max: usize, refuse_more: bool) -> Result<Self, TooManyRows> {
        let mut spans = Vec::new();
        let mut numbers = Vec::new();
        let mut start = 0usize;
        let mut number = 0u32;
        while start <= bytes.len() {
            let rest = bytes.get(start..).unwrap_or_default();
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |at| start + at);
            number = number.saturating_add(1);
            let line = bytes.get(start..end).unwrap_or_default();
            if !line.iter().all(u8::is_ascii_whitespace) {
                if spans.len() == rows_max {
                    if refuse_more {
                        return Err(TooManyRows);
                    }
                    break;
                }
                let offset = |at: usize| u32::try_from(at).map_err(|_| TooManyRows);
                spans.push((offset(start)?, offset(end)?));
                numbers.push(number);
            }
            start = end + 1;
        }
        Ok(Self {
            bytes,
            spans,
            numbers,
        })
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Row `index`: its 1-based line number and its value, parsed now, or why it is skipped.
    pub fn row(&self, index: usize) -> Option<(usize, Result<serde_json::Value, SkipReason>)> {
        let &(start, end) = self.spans.get(index)?;
        let number = usize::try_from(*self.numbers.get(index)?).unwrap_or(usize::MAX);
        let span = usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0);
        let line = self.bytes.get(span).unwrap_or_default();
        if line.len() > LINE_BYTES_MAX {
            return Some((number, Err(SkipReason::TooLong)));
        }
        let parsed = match std::str::from_utf8(line) {
            Err(_) => Err(SkipReason::NotUtf8),
            Ok(text) => serde_json::from_str(text).map_err(|_| SkipReason::Malformed),
        };
        Some((number, parsed))
    }
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
        let rows = LineIndex::new(&bytes, LOCAL_ROWS_MAX, true).map_err(|TooManyRows| {
            DataError::Config(format!(
                "{}: more than {LOCAL_ROWS_MAX} rows",
                self.path.display()
            ))
        })?;
        let mut builder = BatchBuilder::new(request.max_samples, self.phrase_filter);
        let name = self
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        for index in shuffled(rows.len(), &request.seed, request.step, "local-rows") {
            if builder.is_full() {
                break;
            }
            let Some((line, row)) = rows.row(index) else {
                continue;
            };
            match row {
                Ok(value) => {
                    builder.offer_json(
                        &value,
                        &self.prompt_field,
                        &self.response_field,
                        &format!("{name}#L{line}"),
                    );
                }
                Err(reason) => builder.skip(reason),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_not_rows_and_line_numbers_count_every_line() {
        let bytes = b"{\"a\": 1}\n\n  \r\n[]\r\nnot json\n\xff\n{\"b\": 2}";
        let index = LineIndex::new(bytes, 100, true).unwrap();
        let rows: Vec<_> = (0..index.len()).map(|i| index.row(i).unwrap()).collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0], (1, Ok(serde_json::json!({"a": 1}))));
        assert_eq!(rows[1], (4, Ok(serde_json::json!([]))));
        assert_eq!(rows[2], (5, Err(SkipReason::Malformed)));
        assert_eq!(rows[3], (6, Err(SkipReason::NotUtf8)));
        assert_eq!(rows[4], (7, Ok(serde_json::json!({"b": 2}))));
        assert!(index.row(5).is_none());
        assert!(LineIndex::new(b"\n\n", 10, true).unwrap().is_empty());
    }

    /// Postmortem (b54ad4c): every row of a data file was parsed before the sampler took any,
    /// so millions of tiny rows cost a JSON tree each; rows are indexed, bounded and cut.
    #[test]
    fn a_file_of_more_rows_than_allowed_is_refused_or_cut() {
        let bytes = "[]\n".repeat(1000);
        assert_eq!(
            LineIndex::new(bytes.as_bytes(), 999, true).unwrap_err(),
            TooManyRows
        );
        assert_eq!(
            LineIndex::new(bytes.as_bytes(), 10, false).unwrap().len(),
            10
        );
        assert_eq!(
            LineIndex::new(bytes.as_bytes(), 1000, true).unwrap().len(),
            1000
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_unparsed() {
        let long = format!("{{\"p\": \"{}\"}}\n", "x".repeat(LINE_BYTES_MAX));
        let index = LineIndex::new(long.as_bytes(), 10, true).unwrap();
        assert_eq!(index.row(0), Some((1, Err(SkipReason::TooLong))));
    }
}
