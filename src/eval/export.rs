//! Our own ONNX export of a safetensors model, with the loss inside the graph.
//!
//! Every weight is an external initializer pointing into its safetensors file at its offset:
//! nothing is copied to disk. The graph takes `input_ids` and `labels` (both `[batch, sequence]`,
//! int64; labels of `-100` are masked, and so is right padding) and returns, per row of the
//! batch, `target_count` (the number of scored next-token targets) and `loss_mean` (the mean
//! negative log-likelihood over them: the Hugging Face shift). Only the rows that predict a
//! scored target go through the LM head, and the cross entropy is computed as
//! `ReduceLogSumExp(logits) - logit[target]`, so nothing of vocabulary size exists for prompt
//! rows or padding and full logits never leave the session.
//!
//! The graph computes in one [`Precision`]: float32 (weights stored as f16 or bf16 are cast
//! once), or float16 or bfloat16, where weights stored in that type are used where they lie with
//! no Cast (so no widened copy of the model exists) and activations and the residual stream are
//! in that type, as transformers runs a model loaded in it; norms accumulate in float32, and the
//! logits are widened to float32 for the loss.
//!
//! Attention is ONNX Runtime's fused `GroupQueryAttention` (com.microsoft) on `[B, S, hidden]`,
//! with the rotary embedding inside it where the whole head rotates and the head size allows,
//! wherever the provider has a kernel for the precision (CUDA has none in float32); elsewhere it
//! is built from MatMul, Softmax and an explicit causal mask. Each Llama residual add is fused
//! with the RMSNorm that follows it (`SkipSimplifiedLayerNormalization`).
//!
//! The layers follow `transformers`' Llama, Mistral, Gemma, Gemma 2 and StableLM classes, each
//! described by data in [`ModelConfig`], which `config.json`'s reader fills per class: the norm
//! (RMSNorm, Gemma's `1 + weight` form, StableLM's LayerNorm) and where norms sit (Gemma 2's
//! post-norms), the embedding scale, the gated MLP's activation (SiLU, GELU tanh), attention and
//! final-logit soft-capping, the sliding window and the layers that have it,
//! `query_pre_attn_scalar`, the rotary dimension and frequency scaling (Llama 3.1's, StableLM's
//! partial rotary), tied embeddings, biases, and StableLM's per-head q/k LayerNorm and parallel
//! residual. The builder walks that description and never asks which class it has (the class
//! only names the graph), so a further decoder class is a page of `config.rs`, not a builder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EvalError;
use super::config::{Activation, ModelConfig, Norm, RopeScaling};
use super::onnx::{Attr, Dim, ElementType, GraphBuilder};
use super::runtime::Device;
use super::safetensors::{Dtype, TensorInfo, WeightIndex};
use super::widen::Widened;

/// The masked-label value (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The floating-point type a graph computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32: what the held-out checks against transformers f32 use, and the CPU default.
    F32,
    /// float16.
    F16,
    /// bfloat16: how N loads models on the GPU, and the CUDA default. ONNX Runtime's CPU
    /// provider has no bfloat16 kernels.
    Bf16,
}

impl Precision {
    /// The default on `device`: bfloat16 on CUDA, float32 on CPU.
    pub fn default_for(device: Device) -> Self {
        match device {
            Device::Cpu => Precision::F32,
            Device::Cuda { .. } => Precision::Bf16,
        }
    }

    /// Why `device` cannot compute in this precision, if it cannot.
    pub fn unsupported_on(self, device: Device) -> Option<String> {
        (self == Precision::Bf16 && device == Device::Cpu).then(|| {
            "bf16 needs the CUDA provider: ONNX Runtime's CPU provider has no bfloat16 kernels; \
             use --precision f32 or f16 on CPU"
                .to_owned()
        })
    }

    fn element(self) -> ElementType {
        element_of(self.dtype()).unwrap_or(ElementType::F32)
    }

    fn dtype(self) -> Dtype {
        match self {
            Precision::F32 => Dtype::F32,
            Precision::F16 => Dtype::F16,
            Precision::Bf16 => Dtype::BF16,
        }
    }

    /// The type's lowest finite value (`torch.finfo(dtype).min`, transformers' causal mask),
    /// exactly representable in float32.
    fn lowest(self) -> f32 {
        match self {
            Precision::F32 => f32::MIN,
            Precision::F16 => half::f16::MIN.to_f32(),
            Precision::Bf16 => half::bf16::MIN.to_f32(),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?}: use bf16, f16 or f32")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        })
    }
}

/// The ONNX element type of a safetensors dtype, or the dtype's name where the graph takes
/// no such type.
fn element_of(dtype: Dtype) -> Result<ElementType, &'static str> {
    match dtype {
        Dtype::F32 => Ok(ElementType::F32),
        Dtype::F16 => Ok(ElementType::F16),
        Dtype::BF16 => Ok(ElementType::BF16),
        Dtype::Other(name, _) => Err(name),
    }
}

/// Export settings.
#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    /// Longest sequence the graph accepts (the rotary tables' length).
    pub max_positions: usize,
    /// What the graph computes in.
    pub precision: Precision,
    /// Whether the fused `GroupQueryAttention` may be used: its provider must have a kernel
    /// for the precision (see [`ExportOptions::for_device`]). The head size decides the rest.
    pub fused_attention: bool,
    /// Whether each sample's log-probabilities are summed one by one in position order, so
    /// that its loss does not depend on the samples sharing its run (the CPU provider's
    /// ordered add-scatter); otherwise a row-wise ReduceSum (CUDA, whose add-scatter uses
    /// atomics in no fixed order).
    pub sums_in_row_order: bool,
    /// Whether a float32 graph takes its 16-bit weights widened by us ([`super::widen`]) instead
    /// of through a Cast that ONNX Runtime folds while it builds the session (CPU).
    pub widen_in_memory: bool,
}

impl ExportOptions {
    /// The options for `device`: fused attention wherever the provider has the kernel
    /// (ONNX Runtime's CUDA `GroupQueryAttention` is flash attention, 16-bit types only).
    pub fn for_device(max_positions: usize, precision: Precision, device: Device) -> Self {
        let cuda = matches!(device, Device::Cuda { .. });
        Self {
            max_positions,
            precision,
            fused_attention: !(cuda && precision == Precision::F32),
            sums_in_row_order: !cuda,
            widen_in_memory: !cuda && precision == Precision::F32,
        }
    }
}

/// The inverse rotary frequencies, computed as `transformers` does in float32.
pub fn inverse_frequencies(config: &ModelConfig) -> Vec<f32> {
    let dim = u32::try_from(config.rotary_dim).unwrap_or(u32::MAX);
    #[allow(clippy::cast_possible_truncation)]
    let base = config.rope_theta as f32;
    let dim_f32 = f32_of_u32(dim);
    let inverse: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| {
            // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), pow in float32; a
            // float64 pow rounded to float32 is the correctly rounded float32 result.
            let exponent = f32_of_u32(i) / dim_f32;
            #[allow(clippy::cast_possible_truncation)]
            let power = libm::pow(f64::from(base), f64::from(exponent)) as f32;
            1.0 / power
        })
        .collect();
    match config.rope_scaling {
        RopeScaling::None => inverse,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            // transformers' _compute_llama3_parameters. Its tensors are float32 and Python
            // scalars join tensor arithmetic and comparisons as float32.
            #[allow(clippy::cast_possible_truncation)]
            let to_f32 = |value: f64| value as f32;
            let (factor_f32, low, old) = (
                to_f32(factor),
                to_f32(low_freq_factor),
                to_f32(original_max_position_embeddings),
            );
            let low_freq_wavelen = to_f32(original_max_position_embeddings / low_freq_factor);
            let high_freq_wavelen = to_f32(original_max_position_embeddings / high_freq_factor);
            let two_pi = to_f32(2.0 * std::f64::consts::PI);
            let high_minus_low = to_f32(high_freq_factor - low_freq_factor);
            inverse
                .iter()
                .map(|&inv| {
                    let wavelen = two_pi / inv;
                    let scaled = if wavelen > low_freq_wavelen {
                        inv / factor_f32
                    } else {
                        inv
                    };
                    let smooth = (old / wavelen - low) / high_minus_low;
                    let smoothed = (1.0 - smooth) * scaled / factor_f32 + smooth * scaled;
                    let medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
                    if medium { smoothed } else { scaled }
                })
                .collect()
        }
    }
}

fn f32_of_u32(value: u32) -> f32 {
    // Rotary dimensions and positions are small (< 2^24), where the conversion is exact.
    f32::from(u16::try_from(value).unwrap_or(u16::MAX))
}

fn f32_of_position(position: usize) -> f32 {
    #[allow(clippy::cast_precision_loss)]
    let value = position as f32;
    value
}

/// The cos and sin tables, `[positions, rotary_dim]` each, as `transformers` builds them:
/// angle = position × inverse frequency (float32), the halves repeated, cos/sin rounded to
/// float32 from float64.
pub fn rotary_tables(inverse: &[f32], positions: usize) -> (Vec<f32>, Vec<f32>) {
    let width = inverse.len() * 2;
    let mut cos = Vec::with_capacity(positions * width);
    let mut sin = Vec::with_capacity(positions * width);
    for position in 0..positions {
        let p = f32_of_position(position);
        for half in 0..2 {
            let _ = half;
            for inv in inverse {
                let angle = f64::from(p * inv);
                #[allow(clippy::cast_possible_truncation)]
                {
                    cos.push(libm::cos(angle) as f32);
                    sin.push(libm::sin(angle) as f32);
                }
            }
        }
    }
    (cos, sin)
}

struct Exporter<'a> {
    graph: GraphBuilder,
    config: &'a ModelConfig,
    weights: &'a WeightIndex,
    precision: Precision,
    sums_in_row_order: bool,
    /// Each weight's initializer, and its value in the compute type, by tensor name (and by
    /// `raw:` name for the stored initializer).
    in_compute: BTreeMap<String, String>,
    widen_in_memory: bool,
    /// The 16-bit weights the session takes widened to float32, in the order they were met.
    widened: Vec<Widened>,
    /// The run's batch size and padded length, each a `[1]` int64 tensor.
    batch: String,
    length: String,
}

/// How the rotary embedding reaches `GroupQueryAttention`.
enum Rotary {
    /// Inside it (`do_rotary`): its caches, `[positions, rotary_dim / 2]`.
    Inside {
        cos_cache: String,
        sin_cache: String,
    },
    /// Explicit ops on the heads before it: cos and sin of `[S, 1, rotary_dim]`, against
    /// `[B, S, heads, head_dim]`.
    Before { cos: String, sin: String },
}

/// The form every layer's attention takes, with the tensors all layers share.
enum AttentionForm {
    /// `GroupQueryAttention`, with its `seqlens_k` and `total_sequence_length`.
    Fused {
        rotary: Rotary,
        seqlens_k: String,
        total_length: String,
    },
    /// MatMul, Softmax and the causal mask on `[B, heads, S, head_dim]`, with cos and sin of
    /// `[S, rotary_dim]`.
    Explicit {
        cos: String,
        sin: String,
        mask: String,
        /// The mask of the layers with a sliding window, when there are any.
        mask_window: Option<String>,
    },
}

fn dims(shape: &[u64]) -> Vec<i64> {
    shape
        .iter()
        .map(|d| i64::try_from(*d).unwrap_or(i64::MAX))
        .collect()
}

impl<'w> Exporter<'w> {
    /// The stored tensor `name`, its element type and the name of its file, checking its shape.
    fn stored(
        &self,
        name: &str,
        shape: &[u64],
    ) -> Result<(&'w TensorInfo, ElementType, String), EvalError> {
        let weights = self.weights;
        let tensor = weights.get(name)?;
        if tensor.shape != shape {
            return Err(EvalError::Config(format!(
                "tensor {name} has shape {:?}, but config.json implies {shape:?}",
                tensor.shape
            )));
        }
        let element = element_of(tensor.dtype).map_err(|dtype| {
            EvalError::Unsupported(format!(
                "weight {name} of dtype {dtype}; weights must be F32, F16 or BF16"
            ))
        })?;
        let location = weights
            .files
            .get(tensor.file)
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .ok_or_else(|| EvalError::Config(format!("tensor {name} has no readable file name")))?
            .to_owned();
        Ok((tensor, element, location))
    }

    /// Registers a weight as an external initializer in its stored dtype, checking its shape.
    fn raw(&mut self, name: &str, shape: &[u64]) -> Result<(String, Dtype), EvalError> {
        let (tensor, element, location) = self.stored(name, shape)?;
        let initializer = format!("w:{name}");
        if self.in_compute.contains_key(&format!("raw:{name}")) {
            return Ok((initializer, tensor.dtype));
        }
        self.in_compute
            .insert(format!("raw:{name}"), initializer.clone());
        self.graph.external(
            &initializer,
            element,
            &dims(shape),
            &location,
            tensor.offset,
            tensor.length,
        );
        Ok((initializer, tensor.dtype))
    }

    /// Registers a 16-bit weight as a float32 initializer whose values the session is given
    /// widened ([`super::widen`]). ONNX Runtime wants an initializer it is given to be declared,
    /// with external data in a file that exists; the declaration names the weight's own file,
    /// and the value given replaces it before anything is read.
    fn widened(&mut self, name: &str, shape: &[u64]) -> Result<String, EvalError> {
        let (tensor, _, location) = self.stored(name, shape)?;
        let initializer = format!("w32:{name}");
        self.graph.external(
            &initializer,
            ElementType::F32,
            &dims(shape),
            &location,
            tensor.offset,
            tensor.elements().saturating_mul(4),
        );
        self.widened.push(Widened {
            initializer: initializer.clone(),
            tensor: name.to_owned(),
        });
        Ok(initializer)
    }

    /// `x`, of `from`, as `to` (a Cast only where they differ).
    fn cast(&mut self, x: &str, from: Dtype, to: Dtype) -> String {
        match element_of(to) {
            Ok(element) if from != to => {
                let to = Attr::Int(i64::from(element.code()));
                self.graph.op("Cast", &[x], &[("to", to)])
            }
            _ => x.to_owned(),
        }
    }

    /// `x`, stored as `dtype`, in the compute type.
    fn in_compute_type(&mut self, x: &str, dtype: Dtype) -> String {
        self.cast(x, dtype, self.precision.dtype())
    }

    /// A matrix a Gemm multiplies the hidden state by, in the compute type: widened by us
    /// before the session where [`ExportOptions::widen_in_memory`] says so, else as
    /// [`Self::weight`]. Only a Gemm's weight may be given widened: ONNX Runtime's constant
    /// folding treats a given initializer as a constant but reads its declared data, so a node
    /// whose inputs are all constant (Gemma's `1 + weight`, StableLM's stacked head norms)
    /// would compute on the declaration; a Gemm always has the hidden state as its other input.
    fn matrix(&mut self, name: &str, shape: &[u64]) -> Result<String, EvalError> {
        let key = format!("w32:{name}");
        if let Some(existing) = self.in_compute.get(&key) {
            return Ok(existing.clone());
        }
        let stored = self.weights.get(name)?.dtype;
        if self.widen_in_memory
            && self.precision == Precision::F32
            && matches!(stored, Dtype::F16 | Dtype::BF16)
        {
            let value = self.widened(name, shape)?;
            self.in_compute.insert(key, value.clone());
            return Ok(value);
        }
        self.weight(name, shape)
    }

    /// A weight in the compute type (cast once where it is stored otherwise).
    fn weight(&mut self, name: &str, shape: &[u64]) -> Result<String, EvalError> {
        if let Some(existing) = self.in_compute.get(name) {
            return Ok(existing.clone());
        }
        let (raw, dtype) = self.raw(name, shape)?;
        let value = self.in_compute_type(&raw, dtype);
        self.in_compute.insert(name.to_owned(), value.clone());
        Ok(value)
    }

    /// A floating-point constant in the compute type.
    fn constant(&mut self, values: &[f32], dims: &[i64]) -> String {
        self.graph
            .const_float(values, dims, self.precision.element())
    }

    fn linear(
        &mut self,
        x: &str,
        prefix: &str,
        out: u64,
        input: u64,
        bias: bool,
    ) -> Result<String, EvalError> {
        let weight = self.matrix(&format!("{prefix}.weight"), &[out, input])?;
        let trans_b = [("transB", Attr::Int(1))];
        if bias {
            let bias = self.weight(&format!("{prefix}.bias"), &[out])?;
            Ok(self.graph.op("Gemm", &[x, &weight, &bias], &trans_b))
        } else {
            Ok(self.graph.op("Gemm", &[x, &weight], &trans_b))
        }
    }

    fn epsilon(&self) -> Attr {
        #[allow(clippy::cast_possible_truncation)]
        let epsilon = self.config.norm_eps as f32;
        Attr::Float(epsilon)
    }

    /// An RMSNorm's scale: its weight, or Gemma's `1 + weight`.
    fn norm_weight(&mut self, prefix: &str) -> Result<String, EvalError> {
        let weight = self.weight(&format!("{prefix}.weight"), &[self.config.hidden_size])?;
        if !self.config.norm_unit_offset {
            return Ok(weight);
        }
        let one = self.constant(&[1.0], &[]);
        Ok(self.graph.op("Add", &[&weight, &one], &[]))
    }

    fn norm(&mut self, x: &str, prefix: &str) -> Result<String, EvalError> {
        let hidden = self.config.hidden_size;
        let epsilon = self.epsilon();
        if self.config.norm == Norm::Rms {
            let weight = self.norm_weight(prefix)?;
            return Ok(self.graph.op(
                "SimplifiedLayerNormalization",
                &[x, &weight],
                &[
                    ("axis", Attr::Int(-1)),
                    ("epsilon", epsilon),
                    ("stash_type", Attr::Int(1)),
                ],
            ));
        }
        // StableLM's LayerNorm with bias.
        let weight = self.weight(&format!("{prefix}.weight"), &[hidden])?;
        let bias = self.weight(&format!("{prefix}.bias"), &[hidden])?;
        Ok(self.graph.op(
            "LayerNormalization",
            &[x, &weight, &bias],
            &[("axis", Attr::Int(-1)), ("epsilon", epsilon)],
        ))
    }

    /// The residual stream `x` plus `delta` (when there is one), and the norm `prefix` of it:
    /// `(normed, x + delta)`. For RMSNorm the add and the norm are one
    /// `SkipSimplifiedLayerNormalization`, whose fourth output is the sum.
    fn add_and_norm(
        &mut self,
        x: &str,
        delta: Option<&str>,
        prefix: &str,
    ) -> Result<(String, String), EvalError> {
        let Some(delta) = delta else {
            return Ok((self.norm(x, prefix)?, x.to_owned()));
        };
        if self.config.norm != Norm::Rms {
            let sum = self.graph.op("Add", &[x, delta], &[]);
            return Ok((self.norm(&sum, prefix)?, sum));
        }
        let weight = self.norm_weight(prefix)?;
        let epsilon = self.epsilon();
        let outputs = self.graph.op_with_outputs(
            "com.microsoft",
            "SkipSimplifiedLayerNormalization",
            &[x, delta, &weight],
            &[("epsilon", epsilon)],
            &[true, false, false, true],
        );
        Ok((outputs[0].clone(), outputs[3].clone()))
    }

    /// StableLM's per-head LayerNorm (no bias) over `[.., heads, S, head_dim]` or, with
    /// `heads_last`, `[.., S, heads, head_dim]`.
    fn per_head_norm(
        &mut self,
        x: &str,
        prefix: &str,
        heads: u64,
        heads_last: bool,
    ) -> Result<String, EvalError> {
        let head_dim = self.config.head_dim;
        let mut rows = Vec::new();
        for head in 0..heads {
            let weight = self.weight(&format!("{prefix}.norms.{head}.weight"), &[head_dim])?;
            let axes = self.graph.const_i64(&[0], &[1]);
            rows.push(self.graph.op("Unsqueeze", &[&weight, &axes], &[]));
        }
        let row_refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let mut scale = self
            .graph
            .op("Concat", &row_refs, &[("axis", Attr::Int(0))]);
        if !heads_last {
            let axes = self.graph.const_i64(&[1], &[1]);
            scale = self.graph.op("Unsqueeze", &[&scale, &axes], &[]);
        }
        let ones = self.constant(
            &vec![1.0; usize::try_from(head_dim).unwrap_or(0)],
            &[i64::try_from(head_dim).unwrap_or(0)],
        );
        let epsilon = self.epsilon();
        let normalized = self.graph.op(
            "LayerNormalization",
            &[x, &ones],
            &[("axis", Attr::Int(-1)), ("epsilon", epsilon)],
        );
        Ok(self.graph.op("Mul", &[&normalized, &scale], &[]))
    }

    fn slice(&mut self, x: &str, start: i64, end: i64, axis: i64) -> String {
        let starts = self.graph.const_i64(&[start], &[1]);
        let ends = self.graph.const_i64(&[end], &[1]);
        let axes = self.graph.const_i64(&[axis], &[1]);
        self.graph.op("Slice", &[x, &starts, &ends, &axes], &[])
    }

    /// Rotary embedding on the last axis of `x` (head_dim), with `cos`/`sin` of
    /// `[S, rotary_dim]` shaped to broadcast over `x`'s other axes.
    fn rope(&mut self, x: &str, cos: &str, sin: &str) -> String {
        let rotary = i64::try_from(self.config.rotary_dim).unwrap_or(0);
        let head_dim = i64::try_from(self.config.head_dim).unwrap_or(0);
        let partial = rotary < head_dim;
        let rotated_part = if partial {
            self.slice(x, 0, rotary, -1)
        } else {
            x.to_owned()
        };
        let first = self.slice(&rotated_part, 0, rotary / 2, -1);
        let second = self.slice(&rotated_part, rotary / 2, rotary, -1);
        let negated = self.graph.op("Neg", &[&second], &[]);
        let half_rotated = self
            .graph
            .op("Concat", &[&negated, &first], &[("axis", Attr::Int(-1))]);
        let with_cos = self.graph.op("Mul", &[&rotated_part, cos], &[]);
        let with_sin = self.graph.op("Mul", &[&half_rotated, sin], &[]);
        let rotated = self.graph.op("Add", &[&with_cos, &with_sin], &[]);
        if partial {
            let pass = self.slice(x, rotary, head_dim, -1);
            self.graph
                .op("Concat", &[&rotated, &pass], &[("axis", Attr::Int(-1))])
        } else {
            rotated
        }
    }

    /// `[B·S, heads·head_dim]` → `[B, S, heads, head_dim]`.
    fn split_heads_last(&mut self, x: &str, heads: u64) -> String {
        let head_dim = i64::try_from(self.config.head_dim).unwrap_or(0);
        let heads = i64::try_from(heads).unwrap_or(0);
        let tail = self.graph.const_i64(&[heads, head_dim], &[2]);
        let shape = self.graph.op(
            "Concat",
            &[&self.batch, &self.length, &tail],
            &[("axis", Attr::Int(0))],
        );
        self.graph.op("Reshape", &[x, &shape], &[])
    }

    /// `[B·S, heads·head_dim]` → `[B, heads, S, head_dim]`.
    fn split_heads(&mut self, x: &str, heads: u64) -> String {
        let reshaped = self.split_heads_last(x, heads);
        self.graph.op(
            "Transpose",
            &[&reshaped],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        )
    }

    /// The q, k and v projections, each `[B·S, heads·head_dim]`.
    fn projections(&mut self, h: &str, prefix: &str) -> Result<[String; 3], EvalError> {
        let c = self.config;
        let (hidden, heads, kv_heads, head_dim) =
            (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let q = self.linear(
            h,
            &format!("{prefix}.q_proj"),
            heads * head_dim,
            hidden,
            c.qkv_bias,
        )?;
        let k = self.linear(
            h,
            &format!("{prefix}.k_proj"),
            kv_heads * head_dim,
            hidden,
            c.qkv_bias,
        )?;
        let v = self.linear(
            h,
            &format!("{prefix}.v_proj"),
            kv_heads * head_dim,
            hidden,
            c.qkv_bias,
        )?;
        Ok([q, k, v])
    }

    /// Attention through `GroupQueryAttention` on `[B, S, heads·head_dim]`, no transposes:
    /// every row attends causally to its own sample over the whole padded length (a real
    /// position never sees right padding, and padding is never scored), so `seqlens_k` is
    /// the padded length less one for every row and a sample's result does not depend on the
    /// others of its run.
    fn attention_fused(
        &mut self,
        h: &str,
        prefix: &str,
        rotary: &Rotary,
        seqlens_k: &str,
        total_length: &str,
        window: Option<u64>,
    ) -> Result<String, EvalError> {
        let c = self.config;
        let [q, k, v] = self.projections(h, prefix)?;
        let width = self.graph.const_i64(&[-1], &[1]);
        let by_sequence = self.graph.op(
            "Concat",
            &[&self.batch, &self.length, &width],
            &[("axis", Attr::Int(0))],
        );
        let before = matches!(rotary, Rotary::Before { .. });
        let mut rotated = Vec::new();
        for (x, heads, norm) in [
            (&q, c.num_heads, "q_layernorm"),
            (&k, c.num_kv_heads, "k_layernorm"),
        ] {
            if !(c.qk_layernorm || before) {
                rotated.push(self.graph.op("Reshape", &[x, &by_sequence], &[]));
                continue;
            }
            let mut x = self.split_heads_last(x, heads);
            if c.qk_layernorm {
                x = self.per_head_norm(&x, &format!("{prefix}.{norm}"), heads, true)?;
            }
            if let Rotary::Before { cos, sin } = rotary {
                x = self.rope(&x, cos, sin);
            }
            rotated.push(self.graph.op("Reshape", &[&x, &by_sequence], &[]));
        }
        let v = self.graph.op("Reshape", &[&v, &by_sequence], &[]);
        let mut inputs = vec![
            rotated[0].as_str(),
            rotated[1].as_str(),
            &v,
            "",
            "",
            seqlens_k,
            total_length,
        ];
        let do_rotary = match rotary {
            Rotary::Inside {
                cos_cache,
                sin_cache,
            } => {
                inputs.extend([cos_cache.as_str(), sin_cache.as_str()]);
                1
            }
            Rotary::Before { .. } => 0,
        };
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let mut attributes = vec![
            ("num_heads", Attr::Int(to_i64(c.num_heads))),
            ("kv_num_heads", Attr::Int(to_i64(c.num_kv_heads))),
            ("do_rotary", Attr::Int(do_rotary)),
            ("rotary_interleaved", Attr::Int(0)),
            ("local_window_size", Attr::Int(local_window_size(window))),
        ];
        if let Some(scale) = self.query_scale() {
            attributes.push(("scale", Attr::Float(scale)));
        }
        if let Some(cap) = c.attention_softcap {
            #[allow(clippy::cast_possible_truncation)]
            attributes.push(("softcap", Attr::Float(cap as f32)));
        }
        // Outputs: the context, and the present key and value (unused).
        let outputs = self.graph.op_in(
            "com.microsoft",
            "GroupQueryAttention",
            &inputs,
            &attributes,
            3,
        );
        let flat = self
            .graph
            .const_i64(&[-1, to_i64(c.num_heads * c.head_dim)], &[2]);
        let context = self.graph.op("Reshape", &[&outputs[0], &flat], &[]);
        self.linear(
            &context,
            &format!("{prefix}.o_proj"),
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.o_bias,
        )
    }

    /// Gemma 2's score scale, `query_pre_attn_scalar^-0.5` as float32 (`None`: the head
    /// size's, which the kernels default to).
    fn query_scale(&self) -> Option<f32> {
        #[allow(clippy::cast_possible_truncation)]
        self.config
            .query_scale
            .map(|scalar| (1.0 / scalar.sqrt()) as f32)
    }

    /// `cap · tanh(x / cap)` (Gemma 2's soft-capping), in the compute type.
    fn soft_cap(&mut self, x: &str, cap: f64) -> String {
        #[allow(clippy::cast_possible_truncation)]
        let cap = self.constant(&[cap as f32], &[]);
        let scaled = self.graph.op("Div", &[x, &cap], &[]);
        let tanh = self.graph.op("Tanh", &[&scaled], &[]);
        self.graph.op("Mul", &[&tanh, &cap], &[])
    }

    /// Attention from MatMul, Softmax and an explicit causal mask, on `[B, heads, S, d]`.
    fn attention_explicit(
        &mut self,
        h: &str,
        prefix: &str,
        cos: &str,
        sin: &str,
        mask: &str,
    ) -> Result<String, EvalError> {
        let c = self.config;
        let (hidden, heads, kv_heads, head_dim) =
            (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let [q, k, v] = self.projections(h, prefix)?;
        let mut q = self.split_heads(&q, heads);
        let mut k = self.split_heads(&k, kv_heads);
        let v = self.split_heads(&v, kv_heads);
        if c.qk_layernorm {
            q = self.per_head_norm(&q, &format!("{prefix}.q_layernorm"), heads, false)?;
            k = self.per_head_norm(&k, &format!("{prefix}.k_layernorm"), kv_heads, false)?;
        }
        let q = self.rope(&q, cos, sin);
        let k = self.rope(&k, cos, sin);
        // Grouped heads by broadcasting: q as [B, kv_heads, group, S, d], k and v as
        // [B, kv_heads, 1, S, d]; query head h uses key/value head h / group, as repeat_kv does.
        let group = i64::try_from(heads / kv_heads).unwrap_or(1);
        let (kv, d) = (
            i64::try_from(kv_heads).unwrap_or(1),
            i64::try_from(head_dim).unwrap_or(1),
        );
        let grouped = self.graph.const_i64(&[kv, group, -1, d], &[4]);
        let q_shape = self.graph.op(
            "Concat",
            &[&self.batch, &grouped],
            &[("axis", Attr::Int(0))],
        );
        let q = self.graph.op("Reshape", &[&q, &q_shape], &[]);
        let axis2 = self.graph.const_i64(&[2], &[1]);
        let k = self.graph.op("Unsqueeze", &[&k, &axis2], &[]);
        let k_t = self.graph.op(
            "Transpose",
            &[&k],
            &[("perm", Attr::Ints(vec![0, 1, 2, 4, 3]))],
        );
        let v = self.graph.op("Unsqueeze", &[&v, &axis2], &[]);
        let scores = self.graph.op("MatMul", &[&q, &k_t], &[]);
        #[allow(clippy::cast_possible_truncation)]
        let scale = self
            .query_scale()
            .unwrap_or((1.0 / (head_dim_f64(head_dim)).sqrt()) as f32);
        let scale = self.constant(&[scale], &[]);
        let mut scores = self.graph.op("Mul", &[&scores, &scale], &[]);
        if let Some(cap) = c.attention_softcap {
            scores = self.soft_cap(&scores, cap);
        }
        let scores = self.graph.op("Add", &[&scores, mask], &[]);
        let probabilities = self
            .graph
            .op("Softmax", &[&scores], &[("axis", Attr::Int(-1))]);
        let context = self.graph.op("MatMul", &[&probabilities, &v], &[]);
        let heads_i = i64::try_from(heads).unwrap_or(1);
        let by_head = self.graph.const_i64(&[heads_i, -1, d], &[3]);
        let shape = self.graph.op(
            "Concat",
            &[&self.batch, &by_head],
            &[("axis", Attr::Int(0))],
        );
        let context = self.graph.op("Reshape", &[&context, &shape], &[]);
        let context = self.graph.op(
            "Transpose",
            &[&context],
            &[("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        );
        let flat = self.graph.const_i64(&[-1, heads_i * d], &[2]);
        let context = self.graph.op("Reshape", &[&context, &flat], &[]);
        self.linear(
            &context,
            &format!("{prefix}.o_proj"),
            hidden,
            heads * head_dim,
            c.o_bias,
        )
    }

    /// PyTorch's `gelu(x, approximate="tanh")`:
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    fn gelu_tanh(&mut self, x: &str) -> String {
        #[allow(clippy::cast_possible_truncation)]
        let beta = (2.0 / std::f64::consts::PI).sqrt() as f32;
        let kappa = self.constant(&[0.044_715], &[]);
        let beta = self.constant(&[beta], &[]);
        let half = self.constant(&[0.5], &[]);
        let one = self.constant(&[1.0], &[]);
        let square = self.graph.op("Mul", &[x, x], &[]);
        let cube = self.graph.op("Mul", &[&square, x], &[]);
        let scaled_cube = self.graph.op("Mul", &[&cube, &kappa], &[]);
        let inner = self.graph.op("Add", &[x, &scaled_cube], &[]);
        let inner = self.graph.op("Mul", &[&inner, &beta], &[]);
        let tanh = self.graph.op("Tanh", &[&inner], &[]);
        let shifted = self.graph.op("Add", &[&tanh, &one], &[]);
        let halved = self.graph.op("Mul", &[x, &half], &[]);
        self.graph.op("Mul", &[&halved, &shifted], &[])
    }

    fn mlp(&mut self, h: &str, prefix: &str) -> Result<String, EvalError> {
        let (hidden, inner, bias) = (
            self.config.hidden_size,
            self.config.intermediate_size,
            self.config.mlp_bias,
        );
        let gate = self.linear(h, &format!("{prefix}.gate_proj"), inner, hidden, bias)?;
        let up = self.linear(h, &format!("{prefix}.up_proj"), inner, hidden, bias)?;
        let activated = match self.config.activation {
            Activation::Silu => {
                let sigmoid = self.graph.op("Sigmoid", &[&gate], &[]);
                self.graph.op("Mul", &[&gate, &sigmoid], &[])
            }
            Activation::GeluTanh => self.gelu_tanh(&gate),
        };
        let product = self.graph.op("Mul", &[&activated, &up], &[]);
        self.linear(
            &product,
            &format!("{prefix}.down_proj"),
            hidden,
            inner,
            bias,
        )
    }

    /// The attention's form and the tensors every layer shares. `GroupQueryAttention` where
    /// the options allow it and ONNX Runtime's kernels take the shape (a head size that is a
    /// multiple of 8), with the rotary embedding inside it where the whole head rotates and
    /// the head size is a multiple of 16. The rotary tables are in the compute type, as
    /// transformers hands cos and sin to the layers (`.to(x.dtype)`).
    fn attention_form(&mut self, options: &ExportOptions, length: &str) -> AttentionForm {
        let c = self.config;
        let fused = options.fused_attention
            && c.head_dim.is_multiple_of(8)
            && c.num_kv_heads > 0
            && c.num_heads.is_multiple_of(c.num_kv_heads);
        let rotary_inside = fused && c.rotary_dim == c.head_dim && c.head_dim.is_multiple_of(16);
        let inverse = inverse_frequencies(c);
        let (cos_table, sin_table) = rotary_tables(&inverse, options.max_positions);
        let positions = i64::try_from(options.max_positions).unwrap_or(0);
        let rotary_dim = i64::try_from(c.rotary_dim).unwrap_or(0);
        let axis0 = self.graph.const_i64(&[0], &[1]);
        let (cos, sin) = if rotary_inside {
            // GroupQueryAttention takes one half of each row (the halves repeat).
            let half = |table: &[f32]| -> Vec<f32> {
                table
                    .chunks(inverse.len() * 2)
                    .flat_map(|row| row[..row.len() / 2].iter().copied())
                    .collect()
            };
            let dims = [positions, rotary_dim / 2];
            (
                self.constant(&half(&cos_table), &dims),
                self.constant(&half(&sin_table), &dims),
            )
        } else {
            let dims = [positions, rotary_dim];
            let zero = self.graph.const_i64(&[0], &[1]);
            let cos_table = self.constant(&cos_table, &dims);
            let sin_table = self.constant(&sin_table, &dims);
            let cos = self
                .graph
                .op("Slice", &[&cos_table, &zero, length, &axis0], &[]);
            let sin = self
                .graph
                .op("Slice", &[&sin_table, &zero, length, &axis0], &[]);
            (cos, sin)
        };
        if !fused {
            // The causal mask: the compute type's lowest value strictly above the diagonal,
            // as transformers. Samples are right-padded, so a real position never sees
            // padding and no other mask is needed; padded positions are never scored.
            let square = self
                .graph
                .op("Concat", &[length, length], &[("axis", Attr::Int(0))]);
            let filled = self.graph.op(
                "ConstantOfShape",
                &[&square],
                &[("value", Attr::FloatTensor(self.precision.lowest()))],
            );
            let one = self.graph.const_i64(&[1], &[]);
            let causal = self
                .graph
                .op("Trilu", &[&filled, &one], &[("upper", Attr::Int(1))]);
            let windowed = (0..c.num_layers).any(|layer| c.window_of(layer).is_some());
            let mask_window = c.sliding_window.filter(|_| windowed).map(|window| {
                // Key j is also hidden from query i once i - j >= window: the part of the
                // lower triangle on or below diagonal -window.
                let below = self
                    .graph
                    .const_i64(&[-i64::try_from(window).unwrap_or(i64::MAX)], &[]);
                let outside =
                    self.graph
                        .op("Trilu", &[&filled, &below], &[("upper", Attr::Int(0))]);
                let mask = self.graph.op("Add", &[&causal, &outside], &[]);
                self.in_compute_type(&mask, Dtype::F32)
            });
            let mask = self.in_compute_type(&causal, Dtype::F32);
            return AttentionForm::Explicit {
                cos,
                sin,
                mask,
                mask_window,
            };
        }
        let rotary = if rotary_inside {
            Rotary::Inside {
                cos_cache: cos,
                sin_cache: sin,
            }
        } else {
            let axis1 = self.graph.const_i64(&[1], &[1]);
            Rotary::Before {
                cos: self.graph.op("Unsqueeze", &[&cos, &axis1], &[]),
                sin: self.graph.op("Unsqueeze", &[&sin, &axis1], &[]),
            }
        };
        // seqlens_k: int32 [B], the padded length less one; total_sequence_length: an int32
        // scalar.
        let one = self.graph.const_i64(&[1], &[1]);
        let last = self.graph.op("Sub", &[length, &one], &[]);
        let last = self.graph.op("Expand", &[&last, &self.batch], &[]);
        let int32 = Attr::Int(6);
        let seqlens_k = self.graph.op("Cast", &[&last], &[("to", int32.clone())]);
        let total = self.graph.op("Squeeze", &[length, &axis0], &[]);
        let total_length = self.graph.op("Cast", &[&total], &[("to", int32)]);
        AttentionForm::Fused {
            rotary,
            seqlens_k,
            total_length,
        }
    }

    fn build(mut self, options: &ExportOptions) -> Result<Exported, EvalError> {
        let c = self.config;
        let ids = self.graph.input(
            "input_ids",
            ElementType::I64,
            &[Dim::Named("batch"), Dim::Named("sequence")],
        );
        let labels = self.graph.input(
            "labels",
            ElementType::I64,
            &[Dim::Named("batch"), Dim::Named("sequence")],
        );
        let shape = self.graph.op("Shape", &[&ids], &[]);
        self.batch = self.slice(&shape, 0, 1, 0);
        self.length = self.slice(&shape, 1, 2, 0);
        let length = self.length.clone();

        // Embedding rows are gathered in their stored dtype, then cast. The hidden state is
        // `[B·S, hidden]` throughout, so every projection is one Gemm on the stored weight.
        let (embedding, embedding_dtype) =
            self.raw("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let flat_ids = self.graph.const_i64(&[-1], &[1]);
        let flat_ids = self.graph.op("Reshape", &[&ids, &flat_ids], &[]);
        let x = self.graph.op(
            "Gather",
            &[&embedding, &flat_ids],
            &[("axis", Attr::Int(0))],
        );
        let mut x = self.in_compute_type(&x, embedding_dtype);
        if let Some(scale) = c.embedding_scale {
            // Gemma: `embeds * embed_scale.to(weight.dtype)`.
            let scale = self.constant(&[scale], &[]);
            x = self.graph.op("Mul", &[&x, &scale], &[]);
        }

        let attention = self.attention_form(options, &length);

        // The residual stream `x` and the delta still to be added to it: each add is made
        // with the norm that reads it.
        let mut pending: Option<String> = None;
        for layer in 0..c.num_layers {
            let prefix = format!("model.layers.{layer}");
            let (normed, sum) =
                self.add_and_norm(&x, pending.as_deref(), &format!("{prefix}.input_layernorm"))?;
            x = sum;
            let attention_prefix = format!("{prefix}.self_attn");
            let window = c.window_of(layer);
            let attention = match &attention {
                AttentionForm::Fused {
                    rotary,
                    seqlens_k,
                    total_length,
                } => self.attention_fused(
                    &normed,
                    &attention_prefix,
                    rotary,
                    seqlens_k,
                    total_length,
                    window,
                )?,
                AttentionForm::Explicit {
                    cos,
                    sin,
                    mask,
                    mask_window,
                } => {
                    let mask = match (window, mask_window) {
                        (Some(_), Some(windowed)) => windowed,
                        _ => mask,
                    };
                    self.attention_explicit(&normed, &attention_prefix, cos, sin, mask)?
                }
            };
            if c.post_norms {
                // Gemma 2: each block's output is normed before its residual add, and the
                // MLP reads its own norm of the stream.
                let attention =
                    self.norm(&attention, &format!("{prefix}.post_attention_layernorm"))?;
                let (normed, sum) = self.add_and_norm(
                    &x,
                    Some(&attention),
                    &format!("{prefix}.pre_feedforward_layernorm"),
                )?;
                x = sum;
                let mlp = self.mlp(&normed, &format!("{prefix}.mlp"))?;
                pending = Some(self.norm(&mlp, &format!("{prefix}.post_feedforward_layernorm"))?);
            } else if c.parallel_residual {
                let mlp = self.mlp(&normed, &format!("{prefix}.mlp"))?;
                x = self.graph.op("Add", &[&x, &attention], &[]);
                pending = Some(mlp);
            } else {
                let (normed, sum) = self.add_and_norm(
                    &x,
                    Some(&attention),
                    &format!("{prefix}.post_attention_layernorm"),
                )?;
                x = sum;
                pending = Some(self.mlp(&normed, &format!("{prefix}.mlp"))?);
            }
        }
        let (x, _) = self.add_and_norm(&x, pending.as_deref(), "model.norm")?;
        self.loss(&x, &labels)
    }

    /// The loss of every row from the final hidden state `x` (`[B·S, hidden]`). Only the
    /// positions that predict an unmasked target (the Hugging Face shift: position t predicts
    /// label t+1) go through the LM head: nothing of vocabulary size exists for prompt or
    /// padding rows. Each target's log-probability is its logit minus the log-sum-exp of its
    /// row, in float32.
    fn loss(&mut self, x: &str, labels: &str) -> Result<Exported, EvalError> {
        let c = self.config;
        let hidden = i64::try_from(c.hidden_size).unwrap_or(0);
        let by_row = self.graph.const_i64(&[-1, hidden], &[2]);
        let by_position = self.graph.const_i64(&[-1, hidden], &[2]);
        let sample_shape = self.graph.op(
            "Concat",
            &[&self.batch, &by_position],
            &[("axis", Attr::Int(0))],
        );
        let x = self.graph.op("Reshape", &[x, &sample_shape], &[]);
        let predicting = self.slice(&x, 0, -1, 1);
        let predicting = self.graph.op("Reshape", &[&predicting, &by_row], &[]);
        let targets = self.slice(labels, 1, i64::MAX, 1);
        let flat = self.graph.const_i64(&[-1], &[1]);
        let targets = self.graph.op("Reshape", &[&targets, &flat], &[]);
        let zero_label = self.graph.const_i64(&[0], &[]);
        let valid = self
            .graph
            .op("GreaterOrEqual", &[&targets, &zero_label], &[]);
        // The flat indices of the scored positions, in order.
        let scored = self.graph.op("NonZero", &[&valid], &[]);
        let scored = self.graph.op("Reshape", &[&scored, &flat], &[]);
        let rows = self
            .graph
            .op("Gather", &[&predicting, &scored], &[("axis", Attr::Int(0))]);
        let picked_targets =
            self.graph
                .op("Gather", &[&targets, &scored], &[("axis", Attr::Int(0))]);
        let head_name = if c.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let head = self.matrix(head_name, &[c.vocab_size, c.hidden_size])?;
        let logits = self
            .graph
            .op("Gemm", &[&rows, &head], &[("transB", Attr::Int(1))]);
        let logits = match c.final_softcap {
            Some(cap) => self.soft_cap(&logits, cap),
            None => logits,
        };
        // The loss in float32, as transformers widens the logits (`logits.float()`).
        let logits = self.cast(&logits, self.precision.dtype(), Dtype::F32);
        let axis1 = self.graph.const_i64(&[1], &[1]);
        let normaliser = self.graph.op(
            "ReduceLogSumExp",
            &[&logits, &axis1],
            &[("keepdims", Attr::Int(0))],
        );
        let index = self.graph.op("Unsqueeze", &[&picked_targets, &axis1], &[]);
        let target_logits = self.graph.op(
            "GatherElements",
            &[&logits, &index],
            &[("axis", Attr::Int(1))],
        );
        let target_logits = self.graph.op("Squeeze", &[&target_logits, &axis1], &[]);
        let logprobs = self.graph.op("Sub", &[&target_logits, &normaliser], &[]);
        // Back to every position (0 where not scored), so each row sums its own targets.
        let per_sample = self
            .graph
            .op("Concat", &[&self.batch, &flat], &[("axis", Attr::Int(0))]);
        let weight = self.graph.op("Cast", &[&valid], &[("to", Attr::Int(1))]);
        let weight = self.graph.op("Reshape", &[&weight, &per_sample], &[]);
        let keep = [("keepdims", Attr::Int(0))];
        // Counts are sums of ones: exact in any order.
        let count = self.graph.op("ReduceSum", &[&weight, &axis1], &keep);
        let total = if self.sums_in_row_order {
            // Each sample's log-probabilities are added one by one in position order
            // (ScatterElements' add visits its updates in order on the CPU provider), so a
            // sample's total is the same bit for bit whichever samples share its run.
            // Postmortem: ReduceSum over the `[B, S - 1]` rows starts its vector lanes where
            // each row's address falls, and a row of odd length falls anywhere, so a loss
            // moved by an ulp with its position in the run.
            let one = self.graph.const_i64(&[1], &[1]);
            let width = self.graph.op("Sub", &[&self.length, &one], &[]);
            let sample = self.graph.op("Div", &[&scored, &width], &[]);
            let zeros = self.graph.op(
                "ConstantOfShape",
                &[&self.batch],
                &[("value", Attr::FloatTensor(0.0))],
            );
            self.graph.op(
                "ScatterElements",
                &[&zeros, &sample, &logprobs],
                &[("axis", Attr::Int(0)), ("reduction", Attr::String("add"))],
            )
        } else {
            // Back to every position (0 where not scored), so each row sums its own targets
            // (in parallel: CUDA's add-scatter uses atomics, whose order is not fixed).
            let positions = self.graph.op("Shape", &[&targets], &[]);
            let zeros = self.graph.op(
                "ConstantOfShape",
                &[&positions],
                &[("value", Attr::FloatTensor(0.0))],
            );
            let logprobs = self.graph.op(
                "ScatterElements",
                &[&zeros, &scored, &logprobs],
                &[("axis", Attr::Int(0))],
            );
            let logprobs = self.graph.op("Reshape", &[&logprobs, &per_sample], &[]);
            self.graph.op("ReduceSum", &[&logprobs, &axis1], &keep)
        };
        let mean = self.graph.op("Div", &[&total, &count], &[]);
        let loss = self.graph.op("Neg", &[&mean], &[]);
        self.graph.output(
            "target_count",
            &count,
            ElementType::F32,
            &[Dim::Named("batch")],
        );
        self.graph
            .output("loss_mean", &loss, ElementType::F32, &[Dim::Named("batch")]);
        let model = std::mem::take(&mut self.graph).finish(c.architecture.name());
        Ok(Exported {
            model,
            widened: std::mem::take(&mut self.widened),
        })
    }
}

fn head_dim_f64(head_dim: u64) -> f64 {
    f64::from(u32::try_from(head_dim).unwrap_or(u32::MAX))
}

/// An exported model: its ONNX bytes, and the 16-bit weights its session is given widened.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The serialised model.
    pub model: Vec<u8>,
    /// The initializers [`super::widen::widen`] makes, each from its stored tensor.
    pub widened: Vec<Widened>,
}

/// Builds the ONNX model of `config` over `weights`.
pub fn export(
    config: &ModelConfig,
    weights: &WeightIndex,
    options: &ExportOptions,
) -> Result<Exported, EvalError> {
    if options.max_positions == 0 || options.max_positions > 1 << 20 {
        return Err(EvalError::Config(format!(
            "a maximum sequence length of {} is outside 1..=1048576",
            options.max_positions
        )));
    }
    Exporter {
        graph: GraphBuilder::new(),
        config,
        weights,
        precision: options.precision,
        sums_in_row_order: options.sums_in_row_order,
        in_compute: BTreeMap::new(),
        widen_in_memory: options.widen_in_memory,
        widened: Vec::new(),
        batch: String::new(),
        length: String::new(),
    }
    .build(options)
}

/// `GroupQueryAttention`'s `local_window_size`: -1 for full causal attention, else the sliding
/// window itself (ONNX Runtime, like transformers, lets query i see the keys j with
/// i - j < window; checked against the explicit mask on the Mistral fixture).
fn local_window_size(window: Option<u64>) -> i64 {
    window.map_or(-1, |window| i64::try_from(window).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_match_torch() {
        // torch: 1.0 / (10000.0 ** (torch.arange(0, 8, 2).float() / 8))
        let config = ModelConfig::parse(
            br#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 8,
                "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 10}"#,
        )
        .unwrap();
        let inverse = inverse_frequencies(&config);
        assert_eq!(inverse, vec![1.0, 0.1, 0.01, 0.001]);
    }

    #[test]
    fn rotary_tables_repeat_their_halves() {
        let (cos, sin) = rotary_tables(&[1.0, 0.5], 3);
        assert_eq!(cos.len(), 12);
        assert_eq!(cos[0..4], [1.0, 1.0, 1.0, 1.0]);
        assert!((sin[4] - libm::sinf(1.0)).abs() < 1e-7);
        assert_eq!(sin[4], sin[6]);
        assert_eq!(sin[5], sin[7]);
    }
}
