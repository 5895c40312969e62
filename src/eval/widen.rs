//! Float32 copies of a model's 16-bit weights, made on the evaluation's threads and handed to
//! ONNX Runtime as they are.
//!
//! A float32 graph on CPU needs every bf16 or f16 matrix widened (the exporter gives only a
//! Gemm's weight this way: see `Exporter::matrix` for why). Left to a Cast in the graph,
//! ONNX Runtime folds each one while it builds the session, on one thread, writing memory
//! touched for the first time: for a 3.2e9-parameter model, 12 GiB at the rate a virtual machine
//! backs fresh pages, most of the session build. Here each weight is read once from its file and
//! written once into a buffer of its own, the weights shared among the evaluation's threads, and
//! the session takes the buffers as they are (ONNX Runtime's `AddInitializer` uses a value it
//! is given without copying it). Widening a 16-bit float to float32 is exact, so the values are
//! the Cast's, bit for bit.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::EvalError;
use super::safetensors::{Dtype, TensorInfo, WeightIndex};

/// A float32 initializer the session is given, made from a stored 16-bit tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widened {
    /// The initializer's name in the graph.
    pub initializer: String,
    /// The stored tensor's name in the weight index.
    pub tensor: String,
}

/// A widened weight, ready to hand to the session.
#[derive(Debug)]
pub struct Initializer {
    /// The initializer's name in the graph.
    pub name: String,
    /// Its dimensions.
    pub shape: Vec<i64>,
    /// Its values.
    pub values: Vec<f32>,
}

/// Bytes read from a file at a time (a multiple of every element size).
const CHUNK_BYTES: usize = 1 << 22;

/// Widens every tensor of `widened` on `threads` threads. Returns the initializers in the
/// order of `widened`.
pub fn widen(
    weights: &WeightIndex,
    widened: &[Widened],
    threads: usize,
) -> Result<Vec<Initializer>, EvalError> {
    let names: Vec<String> = widened.iter().map(|w| w.tensor.clone()).collect();
    let values = weights.map_tensors(&names, threads, |name, tensor| {
        let values = widen_one(weights, name, tensor)?;
        let shape = tensor
            .shape
            .iter()
            .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
            .collect();
        Ok((shape, values))
    })?;
    Ok(widened
        .iter()
        .zip(values)
        .map(|(entry, (shape, values))| Initializer {
            name: entry.initializer.clone(),
            shape,
            values,
        })
        .collect())
}

/// Reads the 16-bit tensor `name` and returns its values as float32.
fn widen_one(
    weights: &WeightIndex,
    name: &str,
    tensor: &TensorInfo,
) -> Result<Vec<f32>, EvalError> {
    let path = weights
        .files
        .get(tensor.file)
        .ok_or_else(|| EvalError::MissingFile {
            path: Path::new(name).to_owned(),
            what: "the shard of this tensor".into(),
        })?;
    let io = |source| EvalError::Io {
        path: path.clone(),
        source,
    };
    let bf16 = match tensor.dtype {
        Dtype::BF16 => true,
        Dtype::F16 => false,
        other => {
            return Err(EvalError::Unsupported(format!(
                "widening weight {name} of dtype {other:?}: only F16 and BF16 are widened"
            )));
        }
    };
    let elements = usize::try_from(tensor.elements()).unwrap_or(usize::MAX);
    if tensor.length != tensor.elements().saturating_mul(2) {
        return Err(EvalError::Malformed {
            path: path.clone(),
            detail: format!(
                "tensor {name} holds {} bytes for {} 16-bit elements",
                tensor.length, elements
            ),
        });
    }
    let mut values = Vec::new();
    values.try_reserve_exact(elements).map_err(|_| {
        EvalError::OutOfMemory(format!(
            "widening {name} to float32 ({} bytes)",
            tensor.elements().saturating_mul(4)
        ))
    })?;
    let file = File::open(path).map_err(io)?;
    let mut buffer = vec![0u8; CHUNK_BYTES];
    let mut offset = tensor.offset;
    let end = tensor.offset + tensor.length;
    while offset < end {
        let take = usize::try_from((end - offset).min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
        let chunk = &mut buffer[..take];
        file.read_exact_at(chunk, offset).map_err(io)?;
        // Two loops, not a function pointer per element, so that each vectorises.
        let pairs = chunk
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]));
        if bf16 {
            values.extend(pairs.map(|bits| f32::from_bits(u32::from(bits) << 16)));
        } else {
            values.extend(pairs.map(|bits| half::f16::from_bits(bits).to_f32()));
        }
        offset += take as u64;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_and_f16_widen_exactly() {
        // Values exact in both 16-bit types: signed zeros, small integers and halves, f16's
        // smallest normal and subnormal, infinities.
        let exact: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -2.5,
            0.156_25,
            2f32.powi(-14),
            2f32.powi(-24),
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let bf16: Vec<u8> = [
            0x0000u16, 0x8000, 0x3f80, 0xc020, 0x3e20, 0x3880, 0x3380, 0x7f80, 0xff80,
        ]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
        let f16: Vec<u8> = [
            0x0000u16, 0x8000, 0x3c00, 0xc100, 0x3100, 0x0400, 0x0001, 0x7c00, 0xfc00,
        ]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(
            &path,
            [bf16.as_slice(), f16.as_slice(), &[0xc0, 0x7f, 0x01, 0x7c]].concat(),
        )
        .unwrap();
        let tensor = |dtype, shape: Vec<u64>, offset| TensorInfo {
            dtype,
            length: shape.iter().product::<u64>() * 2,
            shape,
            file: 0,
            offset,
        };
        let weights = WeightIndex {
            files: vec![path],
            tensors: [
                ("b".to_owned(), tensor(Dtype::BF16, vec![3, 3], 0)),
                ("h".to_owned(), tensor(Dtype::F16, vec![9], 18)),
                ("nan_b".to_owned(), tensor(Dtype::BF16, vec![1], 36)),
                ("nan_h".to_owned(), tensor(Dtype::F16, vec![1], 38)),
            ]
            .into(),
        };
        let plan: Vec<Widened> = ["h", "b", "nan_b", "nan_h"]
            .iter()
            .map(|name| Widened {
                initializer: format!("w32:{name}"),
                tensor: (*name).to_owned(),
            })
            .collect();
        let widened = widen(&weights, &plan, 2).unwrap();
        let names: Vec<&str> = widened.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["w32:h", "w32:b", "w32:nan_b", "w32:nan_h"]);
        assert_eq!(widened[1].shape, vec![3, 3]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&widened[0].values), bits(&exact));
        assert_eq!(bits(&widened[1].values), bits(&exact));
        assert!(widened[2].values[0].is_nan() && widened[3].values[0].is_nan());
    }

    #[test]
    fn a_truncated_file_is_an_error_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, [0u8; 10]).unwrap();
        let weights = WeightIndex {
            files: vec![path],
            tensors: [(
                "b".to_owned(),
                TensorInfo {
                    dtype: Dtype::BF16,
                    shape: vec![8],
                    file: 0,
                    offset: 0,
                    length: 16,
                },
            )]
            .into(),
        };
        let plan = [Widened {
            initializer: "w32:b".into(),
            tensor: "b".into(),
        }];
        assert!(matches!(
            widen(&weights, &plan, 2),
            Err(EvalError::Io { .. })
        ));
    }
}
