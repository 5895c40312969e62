//! Reading safetensors files we did not write: every header field is checked before it is
//! used, so a hostile file gets an error that names the file and the problem, never a panic or
//! an allocation sized by an attacker.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;

use super::EvalError;

/// The largest header accepted (the format's own reference implementation uses 100 MB).
const HEADER_BYTES_MAX: u64 = 100 * 1024 * 1024;
/// The most shards an index may name.
const SHARDS_MAX: usize = 4096;
/// The largest `model.safetensors.index.json` read (a real 8B model's is about 25 KB).
const INDEX_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// IEEE single.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Any other type: its name and element size (size-checked, never evaluated).
    Other(&'static str, u64),
}

impl Dtype {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::Other("F64", 8),
            "I64" => Dtype::Other("I64", 8),
            "U64" => Dtype::Other("U64", 8),
            "I32" => Dtype::Other("I32", 4),
            "U32" => Dtype::Other("U32", 4),
            "I16" => Dtype::Other("I16", 2),
            "U16" => Dtype::Other("U16", 2),
            "I8" => Dtype::Other("I8", 1),
            "U8" => Dtype::Other("U8", 1),
            "BOOL" => Dtype::Other("BOOL", 1),
            "F8_E4M3" => Dtype::Other("F8_E4M3", 1),
            "F8_E5M2" => Dtype::Other("F8_E5M2", 1),
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::Other(_, size) => size,
        }
    }

    /// The safetensors name.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::Other(name, _) => name,
        }
    }
}

/// Where one tensor's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Index of the file in [`WeightIndex::files`].
    pub file: usize,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Every tensor of a model directory (one file, or shards named by an index).
#[derive(Debug, Clone)]
pub struct WeightIndex {
    /// The safetensors files, in the order their tensors refer to them.
    pub files: Vec<PathBuf>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// The most tensors one header may declare: Llama 3.1 405B has about 1,150, so this is far
/// above any model the competitions take, and far below the millions of zero-size entries a
/// 100 MB header can hold (each of which would cost a map entry).
const TENSORS_MAX: usize = 1 << 14;
/// The most dimensions one tensor may have (weights have one or two).
const DIMS_MAX: usize = 8;

/// A header read straight into tensors, without building a JSON tree: `__metadata__` (which
/// the format allows to be anything a miner likes) is skipped without being stored, the tensor
/// count is capped, and a name given twice is refused rather than silently collapsed.
struct TypedHeader {
    tensors: Vec<(String, RawTensor)>,
    /// `__metadata__`: the safetensors library reads it as a map of strings and refuses
    /// anything else.
    metadata: Option<Metadata>,
}

/// `__metadata__`, checked to be a map of strings as it is read, keeping only `format`: the
/// rest is a miner's to fill, so none of it is stored.
struct Metadata {
    format: Option<String>,
}

/// One string value, checked and dropped.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AnyString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Metadata;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata, A::Error> {
                let mut format = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "format" {
                        // A repeated key keeps its last value, as Python's dict does.
                        format = Some(map.next_value::<String>()?);
                    } else {
                        map.next_value::<AnyString>()?;
                    }
                }
                Ok(Metadata { format })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl<'de> Deserialize<'de> for TypedHeader {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = TypedHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of tensors")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TypedHeader, A::Error> {
                use serde::de::Error;
                let mut tensors = Vec::new();
                let mut metadata = None;
                let mut seen = std::collections::BTreeSet::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !seen.insert(name.clone()) {
                        return Err(A::Error::custom(format!("{name:?} appears twice")));
                    }
                    if name == "__metadata__" {
                        metadata = Some(map.next_value().map_err(|e| {
                            A::Error::custom(format!("__metadata__ is not a map of strings: {e}"))
                        })?);
                        continue;
                    }
                    if tensors.len() == TENSORS_MAX {
                        return Err(A::Error::custom(format!("more than {TENSORS_MAX} tensors")));
                    }
                    let tensor: RawTensor = map
                        .next_value()
                        .map_err(|e| A::Error::custom(format!("tensor {name:?}: {e}")))?;
                    if tensor.shape.len() > DIMS_MAX {
                        return Err(A::Error::custom(format!(
                            "tensor {name:?} has {} dimensions; at most {DIMS_MAX} are accepted",
                            tensor.shape.len()
                        )));
                    }
                    tensors.push((name, tensor));
                }
                Ok(TypedHeader { tensors, metadata })
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

fn malformed(path: &Path, detail: impl Into<String>) -> EvalError {
    EvalError::Malformed {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

fn io(path: &Path, source: std::io::Error) -> EvalError {
    EvalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One header entry: dtype, shape, absolute offset and length in bytes.
pub type HeaderEntry = (Dtype, Vec<u64>, u64, u64);

/// Parses one safetensors header, checking every offset against the file's length.
pub fn read_header(path: &Path) -> Result<BTreeMap<String, HeaderEntry>, EvalError> {
    let mut file = File::open(path).map_err(|e| io(path, e))?;
    let file_bytes = file.metadata().map_err(|e| io(path, e))?.len();
    let mut length_bytes = [0u8; 8];
    file.read_exact(&mut length_bytes).map_err(|_| {
        malformed(
            path,
            format!("truncated: {file_bytes} bytes, no header length"),
        )
    })?;
    let header_bytes = u64::from_le_bytes(length_bytes);
    if header_bytes > HEADER_BYTES_MAX {
        return Err(malformed(
            path,
            format!("header of {header_bytes} bytes exceeds {HEADER_BYTES_MAX}"),
        ));
    }
    if header_bytes > file_bytes.saturating_sub(8) {
        return Err(malformed(
            path,
            format!("truncated: header of {header_bytes} bytes in a file of {file_bytes}"),
        ));
    }
    let mut header = vec![0u8; usize::try_from(header_bytes).unwrap_or(0)];
    file.read_exact(&mut header).map_err(|e| io(path, e))?;
    let data_start = 8 + header_bytes;
    parse_header(path, &header, data_start, file_bytes - data_start)
}

/// Parses the JSON header of the safetensors file at `path` (named in errors), whose data
/// section starts at `data_start` and holds `data_bytes`; what [`read_header`] does once it
/// has the bytes, and what the fuzz target drives.
pub fn parse_header(
    path: &Path,
    header: &[u8],
    data_start: u64,
    data_bytes: u64,
) -> Result<BTreeMap<String, HeaderEntry>, EvalError> {
    // The safetensors library (so transformers, so N) refuses a header that does not start
    // with `{` or is not UTF-8 anywhere, even in parts a JSON parser could skip.
    if header.first() != Some(&b'{') {
        return Err(malformed(path, "header does not start with '{'"));
    }
    if let Err(e) = std::str::from_utf8(header) {
        return Err(malformed(path, format!("header is not UTF-8: {e}")));
    }
    let TypedHeader {
        tensors: raw,
        metadata,
    } = serde_json::from_slice(header)
        .map_err(|e| malformed(path, format!("header is not a JSON object of tensors: {e}")))?;
    // transformers refuses a file whose metadata names no format it knows.
    if let Some(metadata) = &metadata {
        let format = metadata.format.as_deref();
        if !matches!(format, Some("pt" | "tf" | "flax" | "mlx")) {
            return Err(malformed(
                path,
                format!(
                    "__metadata__ has format {format:?}; transformers loads pt, tf, flax or mlx"
                ),
            ));
        }
    }
    let mut tensors = BTreeMap::new();
    let mut spans: Vec<(u64, u64, String)> = Vec::new();
    for (name, tensor) in raw {
        let dtype = Dtype::parse(&tensor.dtype).ok_or_else(|| {
            malformed(
                path,
                format!("tensor {name:?} has unknown dtype {:?}", tensor.dtype),
            )
        })?;
        let [begin, end] = tensor.data_offsets;
        if begin > end || end > data_bytes {
            return Err(malformed(
                path,
                format!(
                    "tensor {name:?} spans bytes {begin}..{end} of a data section of {data_bytes} (truncated file?)"
                ),
            ));
        }
        let elements = tensor
            .shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| malformed(path, format!("tensor {name:?} has an overflowing shape")))?;
        let expected = elements
            .checked_mul(dtype.size())
            .ok_or_else(|| malformed(path, format!("tensor {name:?} has an overflowing shape")))?;
        if expected != end - begin {
            return Err(malformed(
                path,
                format!(
                    "tensor {name:?} of shape {:?} and dtype {} needs {expected} bytes, its offsets give {}",
                    tensor.shape,
                    dtype.name(),
                    end - begin
                ),
            ));
        }
        spans.push((begin, end, name.clone()));
        let offset = data_start
            .checked_add(begin)
            .ok_or_else(|| malformed(path, format!("tensor {name:?} starts past 2^64")))?;
        tensors.insert(name, (dtype, tensor.shape, offset, end - begin));
    }
    // As the safetensors library validates: sorted by offset, the tensors tile the data
    // section exactly, with no overlap, no gap and nothing after the last.
    spans.sort();
    for pair in spans.windows(2) {
        if let [(_, end, first), (begin, _, second)] = pair
            && begin < end
        {
            return Err(malformed(
                path,
                format!("tensors {first:?} and {second:?} overlap"),
            ));
        }
    }
    let mut covered = 0u64;
    for (begin, end, name) in &spans {
        if *begin > covered {
            return Err(malformed(
                path,
                format!("{} unused bytes before tensor {name:?}", begin - covered),
            ));
        }
        covered = *end;
    }
    if covered != data_bytes {
        return Err(malformed(
            path,
            format!("{} bytes after the last tensor", data_bytes - covered),
        ));
    }
    Ok(tensors)
}

/// The regular files of `dir` named `*.safetensors` (links followed, as a model cache's are;
/// none when `dir` cannot be read), each with its metadata: a model's weight files, by the
/// name's ending as the loader takes shards (one may be called `.safetensors`). What the
/// evaluation's address space, the read-ahead and the dispatch order count.
pub fn weight_files(dir: &Path) -> impl Iterator<Item = (PathBuf, std::fs::Metadata)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| {
            entry
                .file_name()
                .as_encoded_bytes()
                .ends_with(b".safetensors")
        })
        .filter_map(|entry| {
            let path = entry.path();
            let metadata = std::fs::metadata(&path).ok()?;
            metadata.is_file().then_some((path, metadata))
        })
}

/// The bytes of [`weight_files`].
pub fn weight_file_bytes(dir: &Path) -> u64 {
    weight_files(dir).fold(0, |total, (_, metadata)| {
        total.saturating_add(metadata.len())
    })
}

/// A file name from an index: a plain name in the directory, nothing that leaves it.
fn shard_path(dir: &Path, index_path: &Path, name: &str) -> Result<PathBuf, EvalError> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\'])
        && name != "."
        && name != ".."
        && name.ends_with(".safetensors");
    if !plain {
        return Err(malformed(
            index_path,
            format!("shard name {name:?} is not a plain .safetensors file name"),
        ));
    }
    Ok(dir.join(name))
}

impl WeightIndex {
    /// Indexes `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self, EvalError> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let (files, owners): (Vec<PathBuf>, Option<BTreeMap<String, String>>) =
            if index_path.is_file() {
                let text = crate::bounded::read_regular(&index_path, INDEX_BYTES_MAX).map_err(
                    |e| match e {
                        crate::bounded::BoundedError::Io(e) => io(&index_path, e),
                        refused => malformed(&index_path, refused.to_string()),
                    },
                )?;
                let index: ShardIndex = serde_json::from_slice(&text)
                    .map_err(|e| malformed(&index_path, format!("not a shard index: {e}")))?;
                let mut names: Vec<&String> = index.weight_map.values().collect();
                names.sort();
                names.dedup();
                if names.len() > SHARDS_MAX {
                    return Err(malformed(
                        &index_path,
                        format!("{} shards exceed {SHARDS_MAX}", names.len()),
                    ));
                }
                let files = names
                    .iter()
                    .map(|name| shard_path(dir, &index_path, name))
                    .collect::<Result<Vec<_>, _>>()?;
                (files, Some(index.weight_map))
            } else if single.is_file() {
                (vec![single], None)
            } else {
                return Err(EvalError::MissingFile {
                    path: dir.to_owned(),
                    what: "model.safetensors or model.safetensors.index.json".into(),
                });
            };
        if let Some(absent) = files.iter().find(|path| !path.is_file()) {
            return Err(EvalError::MissingFile {
                path: absent.clone(),
                what: "a shard named by the index".into(),
            });
        }
        let mut tensors = BTreeMap::new();
        for (file_index, path) in files.iter().enumerate() {
            for (name, (dtype, shape, offset, length)) in read_header(path)? {
                if let Some(owners) = &owners
                    && owners.get(&name).map(|owner| dir.join(owner)) != Some(path.clone())
                {
                    return Err(malformed(
                        path,
                        format!("tensor {name:?} is not listed for this shard in the index"),
                    ));
                }
                let info = TensorInfo {
                    dtype,
                    shape,
                    file: file_index,
                    offset,
                    length,
                };
                if tensors.insert(name.clone(), info).is_some() {
                    return Err(malformed(
                        path,
                        format!("tensor {name:?} appears in two shards"),
                    ));
                }
            }
        }
        if let Some(owners) = &owners
            && let Some(missing) = owners.keys().find(|name| !tensors.contains_key(*name))
        {
            return Err(EvalError::MissingTensor {
                name: missing.clone(),
                detail: "listed in the shard index but in no shard".into(),
            });
        }
        Ok(Self { files, tensors })
    }

    /// The tensor called `name`, or a clear error.
    pub fn get(&self, name: &str) -> Result<&TensorInfo, EvalError> {
        self.tensors
            .get(name)
            .ok_or_else(|| EvalError::MissingTensor {
                name: name.to_owned(),
                detail: "not in the model's safetensors".into(),
            })
    }

    /// Total number of parameters (elements of every tensor).
    pub fn parameter_count(&self) -> u64 {
        self.tensors.values().map(TensorInfo::elements).sum()
    }

    /// `work` on each tensor of `names`, on up to `threads` threads, the largest tensors first
    /// so that the threads finish together: the results in the order of `names`. An error
    /// stops the threads at their next tensor; the earliest in `names` of those met is
    /// returned. A thread the machine cannot start is the machine's fault (`Runtime`).
    pub fn map_tensors<R: Send>(
        &self,
        names: &[String],
        threads: usize,
        work: impl Fn(&str, &TensorInfo) -> Result<R, EvalError> + Sync,
    ) -> Result<Vec<R>, EvalError> {
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            tensors.push(self.get(name)?);
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        // Largest first; equal sizes in the order given.
        order.sort_by_key(|&i| std::cmp::Reverse(tensors[i].elements()));
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<R, EvalError>>>> =
            Mutex::new((0..names.len()).map(|_| None).collect());
        let mut spawn_error = None;
        std::thread::scope(|scope| {
            for _ in 0..threads.clamp(1, names.len().max(1)) {
                let spawned = std::thread::Builder::new().spawn_scoped(scope, || {
                    while let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let result = work(&names[index], tensors[index]);
                        let failed = result.is_err();
                        if let Ok(mut results) = results.lock() {
                            results[index] = Some(result);
                        }
                        if failed {
                            next.store(order.len(), Ordering::Relaxed);
                        }
                    }
                });
                if let Err(error) = spawned {
                    spawn_error.get_or_insert(error);
                    break;
                }
            }
        });
        let results = results
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut done = Vec::with_capacity(names.len());
        if results.iter().all(Option::is_none)
            && let Some(error) = spawn_error
        {
            return Err(EvalError::Runtime(format!(
                "no thread could be started to read the weights: {error}"
            )));
        }
        for result in results {
            match result {
                Some(Ok(value)) => done.push(value),
                Some(Err(error)) => return Err(error),
                // Skipped after another tensor's error, which comes first or later in order.
                None => {}
            }
        }
        if done.len() == names.len() {
            return Ok(done);
        }
        Err(EvalError::Runtime(
            "reading the weights stopped without an error".into(),
        ))
    }

    /// Streams a float tensor's values, as f64, in chunks, to `visit`.
    pub fn stream_values(
        &self,
        tensor: &TensorInfo,
        mut visit: impl FnMut(&[f64]),
    ) -> Result<(), EvalError> {
        let path = self
            .files
            .get(tensor.file)
            .ok_or_else(|| EvalError::MissingFile {
                path: PathBuf::new(),
                what: "a shard".into(),
            })?;
        let decode: fn(&[u8]) -> f64 = match tensor.dtype {
            Dtype::F32 => |b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            Dtype::F16 => |b| f64::from(half::f16::from_le_bytes([b[0], b[1]])),
            Dtype::BF16 => |b| f64::from(half::bf16::from_le_bytes([b[0], b[1]])),
            Dtype::Other(name, _) => {
                return Err(EvalError::Unsupported(format!(
                    "a {name} weight; expected F32, F16 or BF16"
                )));
            }
        };
        let element = usize::try_from(tensor.dtype.size()).unwrap_or(4);
        let mut file = File::open(path).map_err(|e| io(path, e))?;
        file.seek(SeekFrom::Start(tensor.offset))
            .map_err(|e| io(path, e))?;
        const CHUNK_BYTES: usize = 1 << 22;
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut values = Vec::with_capacity(CHUNK_BYTES / element);
        let mut remaining = tensor.length;
        while remaining > 0 {
            let take = usize::try_from(remaining.min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
            let chunk = &mut buffer[..take];
            file.read_exact(chunk).map_err(|e| io(path, e))?;
            values.clear();
            values.extend(chunk.chunks_exact(element).map(decode));
            visit(&values);
            remaining -= take as u64;
        }
        Ok(())
    }

    /// Reads a (small) float tensor as f32.
    pub fn read_f32(&self, tensor: &TensorInfo) -> Result<Vec<f32>, EvalError> {
        let mut out = Vec::new();
        #[allow(clippy::cast_possible_truncation)]
        self.stream_values(tensor, |values| {
            out.extend(values.iter().map(|v| *v as f32))
        })?;
        Ok(out)
    }
}
