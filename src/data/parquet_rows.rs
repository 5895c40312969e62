//! A Parquet dataset file read as a data source needs it: the row count from the footer, then
//! only the rows taken, row group by row group, and only the prompt and response columns.
//!
//! Reading the whole file into JSON values costs many times its size (a 128 MiB file took
//! 1.87 GB); here at most one row group's two columns are decoded at a time, and a row group
//! whose two columns would decompress to more than [`GROUP_COLUMN_BYTES_MAX`] is not decoded at
//! all (its rows are skipped as too long), so a highly compressed column cannot expand without
//! bound.

use std::collections::BTreeMap;
use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::Type;

use super::SkipReason;

/// The most bytes the prompt and response columns of one row group may decompress to.
pub const GROUP_COLUMN_BYTES_MAX: u64 = 256 << 20;

/// One row as the source offers it: a JSON object, or why it is skipped.
pub type Row = Result<serde_json::Value, SkipReason>;

/// A Parquet file opened for sampling.
pub struct ParquetRows {
    reader: SerializedFileReader<File>,
    /// The file's top-level fields named by the source, in the file's order; `None` when it
    /// has neither (every row then lacks a field, and nothing is decoded).
    projection: Option<Type>,
    /// The index of each row group's first row, then the row count (capped).
    group_starts: Vec<usize>,
    /// Whether each row group's projected columns are within [`GROUP_COLUMN_BYTES_MAX`].
    group_within_bound: Vec<bool>,
}

impl std::fmt::Debug for ParquetRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetRows")
            .field("rows", &self.len())
            .field("row_groups", &self.group_within_bound.len())
            .finish()
    }
}

/// The parquet reader is not hardened against every malformed file: a panic in it becomes
/// `Err`.
fn guarded<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|_| Err("the Parquet reader failed on this file".into()))
}

impl ParquetRows {
    /// Opens `path` and reads its footer; `fields` are the columns offered (prompt, response).
    /// At most `rows_max` rows are used, the first ones in file order.
    pub fn open(path: &Path, fields: [&str; 2], rows_max: usize) -> Result<Self, String> {
        Self::open_within(path, fields, rows_max, GROUP_COLUMN_BYTES_MAX)
    }

    /// [`Self::open`] with a row group bound of `group_column_bytes_max`.
    fn open_within(
        path: &Path,
        fields: [&str; 2],
        rows_max: usize,
        group_column_bytes_max: u64,
    ) -> Result<Self, String> {
        guarded(|| {
            let file = File::open(path).map_err(|e| e.to_string())?;
            let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
            let metadata = reader.metadata();
            let root = metadata.file_metadata().schema_descr().root_schema();
            let kept: Vec<Arc<Type>> = root
                .get_fields()
                .iter()
                .filter(|field| fields.contains(&field.name()))
                .cloned()
                .collect();
            let projection = if kept.is_empty() {
                None
            } else {
                Some(
                    Type::group_type_builder(root.name())
                        .with_fields(kept)
                        .build()
                        .map_err(|e| e.to_string())?,
                )
            };
            let mut group_starts = vec![0usize];
            let mut group_within_bound = Vec::new();
            for group in metadata.row_groups() {
                let start = *group_starts.last().unwrap_or(&0);
                if start >= rows_max {
                    break;
                }
                let rows = usize::try_from(group.num_rows())
                    .map_err(|_| format!("a row group claims {} rows", group.num_rows()))?;
                group_starts.push(start.saturating_add(rows).min(rows_max));
                let column_bytes = group
                    .columns()
                    .iter()
                    .filter(|column| {
                        column
                            .column_path()
                            .parts()
                            .first()
                            .is_some_and(|name| fields.contains(&name.as_str()))
                    })
                    .map(|column| u64::try_from(column.uncompressed_size()).unwrap_or(u64::MAX))
                    .fold(0u64, u64::saturating_add);
                group_within_bound.push(column_bytes <= group_column_bytes_max);
            }
            Ok(Self {
                reader,
                projection,
                group_starts,
                group_within_bound,
            })
        })
    }

    /// The rows used.
    pub fn len(&self) -> usize {
        *self.group_starts.last().unwrap_or(&0)
    }

    /// Whether no row is used.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row group holding row `index`.
    fn group_of(&self, index: usize) -> Option<usize> {
        if index >= self.len() {
            return None;
        }
        // The last start at or below `index`; empty row groups share a start and are skipped.
        Some(self.group_starts.partition_point(|start| *start <= index) - 1)
    }

    /// The rows at `indices` (`None` past the end), each row group among them decoded once.
    pub fn rows(&self, indices: &[usize]) -> Vec<Option<Row>> {
        let mut wanted: BTreeMap<usize, BTreeMap<usize, Option<Row>>> = BTreeMap::new();
        for &index in indices {
            if let Some(group) = self.group_of(index) {
                wanted.entry(group).or_default().insert(index, None);
            }
        }
        for (group, rows) in &mut wanted {
            self.decode_group(*group, rows);
        }
        indices
            .iter()
            .map(|index| {
                let group = self.group_of(*index)?;
                wanted.get(&group)?.get(index).cloned().flatten()
            })
            .collect()
    }

    /// Fills `rows` (keyed by row index) from row group `group`.
    fn decode_group(&self, group: usize, rows: &mut BTreeMap<usize, Option<Row>>) {
        let skip_all = |rows: &mut BTreeMap<usize, Option<Row>>, reason: SkipReason| {
            for row in rows.values_mut() {
                *row = Some(Err(reason));
            }
        };
        let Some(projection) = &self.projection else {
            return skip_all(rows, SkipReason::MissingField);
        };
        if !self.group_within_bound[group] {
            return skip_all(rows, SkipReason::TooLong);
        }
        let start = self.group_starts[group];
        let last = rows.keys().next_back().copied().unwrap_or(start);
        let decoded = guarded(|| {
            let reader = self
                .reader
                .get_row_group(group)
                .map_err(|e| e.to_string())?;
            let iter = reader
                .get_row_iter(Some(projection.clone()))
                .map_err(|e| e.to_string())?;
            for (offset, row) in iter.take(last - start + 1).enumerate() {
                if let Some(slot) = rows.get_mut(&(start + offset)) {
                    *slot = Some(
                        row.map(|row| row.to_json_value())
                            .map_err(|_| SkipReason::Malformed),
                    );
                }
            }
            Ok(())
        });
        // A row group that cannot be read, or ends before its footer says, is malformed rows.
        for row in rows.values_mut() {
            if decoded.is_err() || row.is_none() {
                *row = Some(Err(SkipReason::Malformed));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    /// Writes a file of `groups` row groups, `rows_per_group` rows each: `prompt` is "p{i}",
    /// `response` "r{i}", and `noise` a column of `noise_bytes` repeated bytes per row, which
    /// must never be decoded.
    fn write(path: &Path, groups: usize, rows_per_group: usize, noise_bytes: usize) {
        let schema = Arc::new(
            parse_message_type(
                "message rows { REQUIRED BYTE_ARRAY noise (UTF8); REQUIRED BYTE_ARRAY prompt \
                 (UTF8); REQUIRED BYTE_ARRAY response (UTF8); }",
            )
            .unwrap(),
        );
        let properties = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
                .set_dictionary_enabled(false)
                .build(),
        );
        let mut writer =
            SerializedFileWriter::new(File::create(path).unwrap(), schema, properties).unwrap();
        for group in 0..groups {
            let mut group_writer = writer.next_row_group().unwrap();
            let rows = group * rows_per_group..(group + 1) * rows_per_group;
            let columns: [Vec<ByteArray>; 3] = [
                rows.clone()
                    .map(|_| ByteArray::from(vec![b'n'; noise_bytes]))
                    .collect(),
                rows.clone()
                    .map(|i| ByteArray::from(format!("p{i}").as_str()))
                    .collect(),
                rows.map(|i| ByteArray::from(format!("r{i}").as_str()))
                    .collect(),
            ];
            for values in columns {
                let mut column = group_writer.next_column().unwrap().unwrap();
                column
                    .typed::<ByteArrayType>()
                    .write_batch(&values, None, None)
                    .unwrap();
                column.close().unwrap();
            }
            group_writer.close().unwrap();
        }
        writer.close().unwrap();
    }

    fn prompt(row: &Option<Row>) -> Option<String> {
        let row = row.as_ref()?.as_ref().ok()?;
        assert!(
            row.get("noise").is_none(),
            "only the two columns are decoded"
        );
        row.get("prompt")?.as_str().map(str::to_owned)
    }

    #[test]
    fn rows_come_from_their_row_group_in_the_order_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        write(&path, 5, 7, 3);
        let rows = ParquetRows::open(&path, ["prompt", "response"], usize::MAX).unwrap();
        assert_eq!(rows.len(), 35);
        let indices = [34, 0, 7, 6, 20, 20, 35, 1000, 13];
        let got: Vec<Option<String>> = rows.rows(&indices).iter().map(prompt).collect();
        let expected: Vec<Option<String>> = indices
            .iter()
            .map(|i| (*i < 35).then(|| format!("p{i}")))
            .collect();
        assert_eq!(got, expected);
        let response = rows.rows(&[22]).remove(0).unwrap().unwrap();
        assert_eq!(response["response"], "r22");
    }

    #[test]
    fn the_row_cap_cuts_inside_a_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        write(&path, 3, 10, 1);
        let rows = ParquetRows::open(&path, ["prompt", "response"], 15).unwrap();
        assert_eq!(rows.len(), 15);
        assert_eq!(prompt(&rows.rows(&[14])[0]).as_deref(), Some("p14"));
        assert!(rows.rows(&[15])[0].is_none());
    }

    #[test]
    fn absent_columns_are_missing_fields_and_nothing_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        write(&path, 2, 4, 1);
        let rows = ParquetRows::open(&path, ["question", "answer"], usize::MAX).unwrap();
        assert_eq!(rows.len(), 8);
        assert!(matches!(
            rows.rows(&[3])[0],
            Some(Err(SkipReason::MissingField))
        ));
        // One of the two present: the row decodes without the other, which the batch builder
        // then reports as missing.
        let rows = ParquetRows::open(&path, ["prompt", "answer"], usize::MAX).unwrap();
        let row = rows.rows(&[3]).remove(0).unwrap().unwrap();
        assert_eq!(row, serde_json::json!({"prompt": "p3"}));
    }

    /// Postmortem (79feda0): a Parquet file was decoded whole (12 times its size in memory); a
    /// row group whose two columns would decompress past the bound is skipped, not decoded.
    #[test]
    fn a_row_group_that_would_decompress_past_the_bound_is_not_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        // 4 rows of 64 KiB of noise: 256 KiB uncompressed, a few hundred bytes compressed.
        write(&path, 2, 4, 64 << 10);
        let bound = 200 << 10;
        // The noise column is not offered, so it does not count.
        let rows = ParquetRows::open_within(&path, ["prompt", "response"], usize::MAX, bound);
        assert!(rows.unwrap().rows(&[0])[0].as_ref().unwrap().is_ok());
        let rows = ParquetRows::open_within(&path, ["noise", "response"], usize::MAX, bound);
        let rows = rows.unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() < bound);
        assert!(matches!(rows.rows(&[0])[0], Some(Err(SkipReason::TooLong))));
        assert!(matches!(rows.rows(&[7])[0], Some(Err(SkipReason::TooLong))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.parquet");
        std::fs::write(&path, b"PAR1 this is not a parquet file PAR1").unwrap();
        assert!(ParquetRows::open(&path, ["prompt", "response"], usize::MAX).is_err());
    }
}
