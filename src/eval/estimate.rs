//! What a model will ask of memory, from `config.json` and the safetensors headers alone,
//! before any graph is exported or any session built.
//!
//! A model of a few kilobytes can ask ONNX Runtime for gigabytes: the attention scores are
//! `[heads, S, S]` per layer, the logits `[S, vocab]`, the rotary tables `[positions, rotary
//! dim]`. So the checks and each evaluation first estimate the peak and refuse a model whose
//! figure is over the operator's budget (`--eval-memory-max-bytes`), or whose activations are
//! out of all proportion to its weights: real language models at N's sequence length need far
//! less for activations than for their weights, so a model whose activations exceed twice its
//! weights (beyond [`ACTIVATIONS_FLOOR_BYTES`], which every small test model stays under) is
//! built to exhaust the validator, not to be scored.
//!
//! The estimate follows the graph [`super::export`](mod@super::export) builds in float32, whatever precision the
//! evaluation computes in, so that a refusal never depends on the precision (on CUDA, where
//! bf16 is the default, the card holds 16-bit weights and activations, well under the figure),
//! one decoder layer live at a time (ONNX Runtime frees each layer's intermediates once consumed): the weights as held
//! (a float32 tensor's bytes; a float32 copy of every 16-bit tensor, and beside the copies the
//! largest 16-bit tensor's own bytes: on CPU the embedding table, which the graph gathers its
//! rows from as stored while [`super::widen`] reads the others from their files in 4 MiB
//! chunks; on CUDA in float32, the tensor a folded Cast is widening), the runtime's own footprint ([`RUNTIME_BYTES`]), the rotary tables
//! (in the graph and in the session), and the largest of a layer's attention, a layer's MLP and
//! the output head's logits and log-probabilities.
//!
//! Measured (`benches/eval_cpu_3b.py`, a Llama 3.2 3B-shaped bf16 model at 2,048 tokens): the
//! whole `validator eval` process peaks at 13.05 GiB on a 2-core AVX-512 Xeon (13.74 GiB while
//! ONNX Runtime widened the weights; 14.1 GiB then on a 2-core AVX2 machine); counting every 16-bit file's bytes beside its copy gave 19.3 GiB, over
//! a 24 GiB machine's default budget.

use super::EvalError;
use super::config::ModelConfig;
use super::safetensors::{Dtype, WeightIndex};

/// Activations every model may use whatever its weights: the smallest real models at N's
/// 2,048 tokens (a vocabulary of 50,000, a dozen heads) need a few hundred megabytes.
pub const ACTIVATIONS_FLOOR_BYTES: u64 = 1 << 30;
/// Activations may be this many times the weights (beyond the floor).
pub const ACTIVATIONS_PER_WEIGHT_MAX: u64 = 2;
/// What ONNX Runtime's library, thread pools and arenas and the rest of the evaluation process
/// hold beside the model's weights and activations.
pub const RUNTIME_BYTES: u64 = 512 << 20;
/// The budget when the machine's memory cannot be read.
pub const BUDGET_FALLBACK_BYTES: u64 = 16 << 30;

const F32_BYTES: u64 = 4;

/// A model's estimated peak memory in an evaluation of sequences of `seq_len` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// The sequence length estimated for.
    pub seq_len: u64,
    /// The weights as the session holds them (and the 16-bit tensor being widened).
    pub weights_bytes: u64,
    /// The runtime's own footprint ([`RUNTIME_BYTES`]).
    pub runtime_bytes: u64,
    /// The cos and sin tables.
    pub rotary_tables_bytes: u64,
    /// One layer's attention: projections, rotated q and k, scores, probabilities, context.
    pub attention_bytes: u64,
    /// One layer's MLP.
    pub mlp_bytes: u64,
    /// The output head: logits and log-probabilities.
    pub logits_bytes: u64,
}

fn product(factors: &[u64]) -> u64 {
    factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f))
}

fn sum(terms: &[u64]) -> u64 {
    terms.iter().fold(0u64, |acc, &t| acc.saturating_add(t))
}

/// Bytes in a readable unit, for messages.
pub fn human_bytes(bytes: u64) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    // Display only: the figure decides nothing.
    #[allow(clippy::cast_precision_loss, reason = "a rounded figure for people")]
    let scaled = |unit: u64| bytes as f64 / unit as f64;
    if bytes >= GIB {
        format!("{:.1} GiB", scaled(GIB))
    } else {
        format!("{:.1} MiB", scaled(MIB))
    }
}

impl MemoryEstimate {
    /// The estimate for `config` with `weights`, on sequences of `seq_len` tokens, with rotary
    /// tables for `max_positions` positions.
    pub fn of(
        config: &ModelConfig,
        weights: &WeightIndex,
        seq_len: u64,
        max_positions: u64,
    ) -> Self {
        Self::of_run(config, weights, seq_len, seq_len, max_positions)
    }

    /// The estimate for one run of `run_tokens` tokens (padding included) of sequences of at
    /// most `seq_len` tokens: everything per token scales with the run, the attention scores
    /// with `run_tokens × seq_len` (each sequence attends only to itself).
    pub fn of_run(
        config: &ModelConfig,
        weights: &WeightIndex,
        seq_len: u64,
        run_tokens: u64,
        max_positions: u64,
    ) -> Self {
        let seq = seq_len.max(1);
        let s = run_tokens.max(seq);
        // A float32 tensor is held as stored; a 16-bit one as its float32 copy, and beside the
        // copies the largest one's own bytes (the embedding table gathered as stored, or the
        // tensor a folded Cast is widening).
        let (held, widening) =
            weights
                .tensors
                .values()
                .fold((0u64, 0u64), |(held, widening), tensor| {
                    match tensor.dtype {
                        Dtype::F32 => (held.saturating_add(tensor.length), widening),
                        _ => (
                            held.saturating_add(tensor.elements().saturating_mul(F32_BYTES)),
                            widening.max(tensor.length),
                        ),
                    }
                });
        let weights_bytes = held.saturating_add(widening);
        // The graph's initializers and the session's copy of each of cos and sin.
        let rotary_tables_bytes = product(&[4, max_positions, config.rotary_dim, F32_BYTES]);
        let hidden = product(&[s, config.hidden_size]);
        let q = product(&[s, config.num_heads, config.head_dim]);
        // k and v, then both repeated to every query head for grouped-query attention.
        let kv = product(&[2, s, config.num_kv_heads, config.head_dim]);
        let kv_repeated = if config.num_kv_heads == config.num_heads {
            0
        } else {
            product(&[2, s, config.num_heads, config.head_dim])
        };
        // Scores, scaled and masked scores, probabilities.
        let scores = product(&[3, config.num_heads, s, seq]);
        let attention_elements = sum(&[
            product(&[3, hidden]),
            product(&[3, q]),
            kv,
            kv_repeated,
            scores,
            q,
        ]);
        let mlp_elements = sum(&[
            product(&[3, hidden]),
            product(&[3, s, config.intermediate_size]),
        ]);
        // Only scored positions reach the LM head (at most one row per token): one
        // `[targets, vocab]` tensor of logits. ONNX Runtime's CUDA log-sum-exp also keeps a
        // scratch buffer of that size; it is left out here because this figure also decides
        // the proportion rule, which must not refuse small models with Llama 3's vocabulary
        // (postmortem: counting it refused a 36M-parameter one), and a card with room for the
        // models a competition takes has the 1/10 headroom of its budget for it.
        let logits_elements = sum(&[hidden, product(&[s, config.vocab_size])]);
        Self {
            seq_len: seq,
            weights_bytes,
            runtime_bytes: RUNTIME_BYTES,
            rotary_tables_bytes,
            attention_bytes: attention_elements.saturating_mul(F32_BYTES),
            mlp_bytes: mlp_elements.saturating_mul(F32_BYTES),
            logits_bytes: logits_elements.saturating_mul(F32_BYTES),
        }
    }

    /// Everything but the weights.
    pub fn activations_bytes(&self) -> u64 {
        self.rotary_tables_bytes.saturating_add(
            self.attention_bytes
                .max(self.mlp_bytes)
                .max(self.logits_bytes),
        )
    }

    /// The estimated peak.
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes
            .saturating_add(self.runtime_bytes)
            .saturating_add(self.activations_bytes())
    }

    /// The largest part of the activations, named, for messages.
    fn largest(&self) -> (&'static str, u64) {
        [
            (
                "attention scores and projections per layer",
                self.attention_bytes,
            ),
            ("MLP per layer", self.mlp_bytes),
            ("logits", self.logits_bytes),
            ("rotary tables", self.rotary_tables_bytes),
        ]
        .into_iter()
        .fold(
            ("logits", 0),
            |best, part| if part.1 > best.1 { part } else { best },
        )
    }

    /// Refuses a model over `budget_bytes`, or one whose activations are out of proportion to
    /// its weights; the error names the figures.
    pub fn check(&self, budget_bytes: u64) -> Result<(), EvalError> {
        let activations = self.activations_bytes();
        let allowed = self
            .weights_bytes
            .saturating_mul(ACTIVATIONS_PER_WEIGHT_MAX)
            .max(ACTIVATIONS_FLOOR_BYTES);
        let (part, part_bytes) = self.largest();
        if activations > allowed {
            return Err(EvalError::Resources(format!(
                "at {} tokens the model needs an estimated {} of activations ({part}: {}) for \
                 {} of weights; more than {}x its weights (or {}) is refused",
                self.seq_len,
                human_bytes(activations),
                human_bytes(part_bytes),
                human_bytes(self.weights_bytes),
                ACTIVATIONS_PER_WEIGHT_MAX,
                human_bytes(ACTIVATIONS_FLOOR_BYTES),
            )));
        }
        if self.total_bytes() > budget_bytes {
            return Err(EvalError::Resources(format!(
                "at {} tokens the model needs an estimated {} ({} of weights, {part}: {}), over \
                 this validator's evaluation memory budget of {} (--eval-memory-max-bytes)",
                self.seq_len,
                human_bytes(self.total_bytes()),
                human_bytes(self.weights_bytes),
                human_bytes(part_bytes),
                human_bytes(budget_bytes),
            )));
        }
        Ok(())
    }
}

/// The default budget: three quarters of the machine's memory (`MemTotal` in `text`, the
/// contents of `/proc/meminfo`), leaving room for the validator, the page cache and the
/// operating system; [`BUDGET_FALLBACK_BYTES`] when it cannot be read. On CUDA the card's memory
/// bounds instead: see [`cuda_device_budget_bytes`].
pub fn default_budget_bytes(meminfo: Option<&str>) -> u64 {
    meminfo
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|kib| kib.trim().parse::<u64>().ok())
        })
        .map_or(BUDGET_FALLBACK_BYTES, |kib| {
            kib.saturating_mul(1024) / 4 * 3
        })
}

/// [`default_budget_bytes`] of this machine.
pub fn machine_budget_bytes() -> u64 {
    let meminfo = crate::bounded::read_regular(std::path::Path::new("/proc/meminfo"), 1 << 20)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    default_budget_bytes(meminfo.as_deref())
}

/// The default budget on a CUDA card of `memory_total_mib` (what `nvidia-smi
/// --query-gpu=memory.total --format=csv,noheader,nounits` prints for it): nine tenths of it,
/// since the CUDA context, cuBLAS's workspace and the allocator's slack take the rest. `None`
/// when the text is not one positive number.
pub fn cuda_budget_bytes(memory_total_mib: &str) -> Option<u64> {
    let mib: u64 = memory_total_mib
        .trim()
        .parse()
        .ok()
        .filter(|mib| *mib > 0)?;
    Some(mib.saturating_mul(1 << 20) / 10 * 9)
}

/// The longest `nvidia-smi` may take to answer (a wedged driver can make it hang).
const NVIDIA_SMI_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `nvidia-smi` says card `device_id` holds, in MiB, or why it could not be asked.
fn cuda_memory_total_mib(device_id: i32) -> Result<String, String> {
    nvidia_smi(&[
        "--query-gpu=memory.total",
        "--format=csv,noheader,nounits",
        &format!("--id={device_id}"),
    ])
}

/// How many CUDA devices nvidia-smi lists.
pub fn cuda_device_count() -> Result<i32, String> {
    let text = nvidia_smi(&["--query-gpu=index", "--format=csv,noheader,nounits"])?;
    let count = text.lines().filter(|line| !line.trim().is_empty()).count();
    match i32::try_from(count) {
        Ok(0) | Err(_) => Err(format!("nvidia-smi listed no device ({:?})", text.trim())),
        Ok(count) => Ok(count),
    }
}

/// What `nvidia-smi ARGS` prints, within its time limit.
fn nvidia_smi(args: &[&str]) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new("nvidia-smi")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("nvidia-smi: {e}"))?;
    match super::wait_or_kill(
        &mut child,
        NVIDIA_SMI_TIMEOUT,
        std::time::Duration::from_millis(20),
    ) {
        Ok(Some(status)) if status.success() => {}
        Ok(Some(status)) => return Err(format!("nvidia-smi: {status}")),
        Ok(None) => {
            return Err(format!(
                "nvidia-smi gave no answer in {NVIDIA_SMI_TIMEOUT:?}"
            ));
        }
        Err(e) => return Err(format!("nvidia-smi: {e}")),
    }
    let mut text = String::new();
    child
        .stdout
        .take()
        .ok_or("nvidia-smi: no output")?
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("nvidia-smi: {e}"))?;
    Ok(text)
}

/// The default budget on CUDA card `device_id`: [`cuda_budget_bytes`] of what `nvidia-smi`
/// reports for it, or why the card could not be asked.
pub fn cuda_device_budget_bytes(device_id: i32) -> Result<u64, String> {
    let text = cuda_memory_total_mib(device_id)?;
    cuda_budget_bytes(&text).ok_or_else(|| format!("nvidia-smi printed {:?}", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (1b617f8): on CUDA the default budget was the host's memory, which bounds
    /// the wrong thing on a host with less (or more) RAM than its card.
    #[test]
    fn the_cuda_budget_is_nine_tenths_of_the_card() {
        // An H200 as nvidia-smi reports it.
        assert_eq!(
            cuda_budget_bytes("143771\n"),
            Some(143_771 * (1 << 20) / 10 * 9)
        );
        assert_eq!(cuda_budget_bytes("0"), None);
        assert_eq!(cuda_budget_bytes("[N/A]"), None);
        assert_eq!(cuda_budget_bytes("81559\n81559\n"), None);
    }

    #[test]
    fn the_default_budget_is_three_quarters_of_the_machine() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(
            default_budget_bytes(Some(meminfo)),
            24_576_000 * 1024 / 4 * 3
        );
        assert_eq!(default_budget_bytes(Some("garbage")), BUDGET_FALLBACK_BYTES);
        assert_eq!(default_budget_bytes(None), BUDGET_FALLBACK_BYTES);
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}

#[cfg(test)]
mod cases {
    use std::collections::BTreeMap;

    use super::*;
    use crate::eval::safetensors::TensorInfo;

    fn config(fields: &str) -> ModelConfig {
        let json = format!(
            r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5, {fields}}}"#
        );
        ModelConfig::parse(json.as_bytes()).unwrap()
    }

    /// Weights of `bytes` in one bf16 tensor.
    fn weights(bytes: u64) -> WeightIndex {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "model.embed_tokens.weight".to_owned(),
            TensorInfo {
                dtype: Dtype::BF16,
                shape: vec![bytes / 2],
                file: 0,
                offset: 0,
                length: bytes,
            },
        );
        WeightIndex {
            files: Vec::new(),
            tensors,
        }
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_small_test_model_fits_at_the_full_length() {
        let tiny = config(
            r#""hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
               "head_dim": 16, "num_hidden_layers": 2, "vocab_size": 420,
               "intermediate_size": 96"#,
        );
        let estimate = MemoryEstimate::of(&tiny, &weights(200_000), 2048, 2048);
        assert!(
            estimate.total_bytes() - estimate.runtime_bytes < GIB / 4,
            "{estimate:?}"
        );
        estimate.check(GIB).unwrap();
    }

    /// Postmortem (b54ad4c): a model of a few kilobytes with 128 heads of size 2 asked ONNX
    /// Runtime for gigabytes of attention scores; the estimate refuses it before any graph.
    #[test]
    fn many_tiny_heads_are_refused_for_their_attention_scores() {
        let heads = config(
            r#""hidden_size": 64, "num_attention_heads": 128, "head_dim": 2,
               "num_hidden_layers": 1, "vocab_size": 420, "intermediate_size": 96"#,
        );
        let estimate = MemoryEstimate::of(&heads, &weights(100_000), 2048, 2048);
        // Three [128, 2048, 2048] float32 tensors: 6 GiB.
        assert_eq!(estimate.attention_bytes / GIB, 6);
        let refused = estimate.check(64 * GIB).unwrap_err().to_string();
        assert!(refused.contains("attention scores"), "{refused}");
        // The same model on short samples is fine.
        MemoryEstimate::of(&heads, &weights(100_000), 64, 2048)
            .check(GIB)
            .unwrap();
    }

    #[test]
    fn a_huge_vocabulary_on_a_tiny_model_is_refused_for_its_logits() {
        let vocabulary = config(
            r#""hidden_size": 2, "num_attention_heads": 1, "head_dim": 2,
               "num_hidden_layers": 1, "vocab_size": 262144, "intermediate_size": 2"#,
        );
        let estimate = MemoryEstimate::of(&vocabulary, &weights(2 << 20), 2048, 2048);
        let refused = estimate.check(64 * GIB).unwrap_err().to_string();
        assert!(refused.contains("logits"), "{refused}");
    }

    /// Postmortem: counting the log-sum-exp's scratch beside the logits refused these at the
    /// checks, as out of proportion to their weights.
    #[test]
    fn small_models_with_llama3s_vocabulary_fit_at_the_full_length() {
        for (fields, bytes) in [
            // benches/eval_gpu.py's dry-run model: 35.8M parameters in bf16.
            (
                r#""hidden_size": 256, "num_attention_heads": 8, "num_key_value_heads": 2,
                   "num_hidden_layers": 4, "vocab_size": 128256, "intermediate_size": 768"#,
                71_700_000,
            ),
            // benches/eval_cpu.py's 128k profile: 247M parameters in f32 (here as bf16's half).
            (
                r#""hidden_size": 768, "num_attention_heads": 12, "num_key_value_heads": 4,
                   "num_hidden_layers": 8, "vocab_size": 128256, "intermediate_size": 2048"#,
                494_600_000,
            ),
        ] {
            let estimate = MemoryEstimate::of(&config(fields), &weights(bytes), 2048, 2048);
            estimate.check(64 * GIB).unwrap();
        }
    }

    #[test]
    fn a_real_8b_model_fits_a_large_budget_and_not_a_small_one() {
        let llama3 = config(
            r#""hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
               "num_hidden_layers": 32, "vocab_size": 128256, "intermediate_size": 14336"#,
        );
        // 8.03 B parameters in bf16, widened to float32 in the session: 45 GiB.
        let estimate = MemoryEstimate::of(&llama3, &weights(16_060_000_000), 2048, 2048);
        assert!(estimate.activations_bytes() < estimate.weights_bytes / 10);
        estimate.check(64 * GIB).unwrap();
        let refused = estimate.check(16 * GIB).unwrap_err().to_string();
        assert!(
            refused.contains("--eval-memory-max-bytes") && refused.contains("16.0 GiB"),
            "{refused}"
        );
    }

    /// Postmortem (#34): a Llama 3.2 3B-shaped bf16 model was refused on a 24 GiB machine for
    /// an estimated 19.3 GiB (every file's bytes beside their float32 copies) while its real
    /// peak was 13.74 GiB (2-core AVX-512 Xeon) and 14.1 GiB (2-core AVX2). The estimate must
    /// stay at most 15 % above each measured peak, never below, and within the default budget.
    #[test]
    #[allow(clippy::cast_precision_loss)] // ratios for assertions
    fn the_successors_3b_model_is_estimated_within_15_percent_of_its_real_peak() {
        let llama32 = config(
            r#""hidden_size": 3072, "num_attention_heads": 24, "num_key_value_heads": 8,
               "num_hidden_layers": 28, "vocab_size": 128256, "intermediate_size": 8192,
               "tie_word_embeddings": true"#,
        );
        // benches/eval_cpu_3b.py's model, tensor by tensor.
        let mut tensors = BTreeMap::new();
        let mut add = |name: String, rows: u64, columns: u64| {
            let shape = if columns == 0 {
                vec![rows]
            } else {
                vec![rows, columns]
            };
            let elements = shape.iter().product::<u64>();
            tensors.insert(
                name,
                TensorInfo {
                    dtype: Dtype::BF16,
                    shape,
                    file: 0,
                    offset: 0,
                    length: elements * 2,
                },
            );
        };
        add("model.embed_tokens.weight".into(), 128_256, 3072);
        for layer in 0..28 {
            let p = format!("model.layers.{layer}.");
            add(format!("{p}self_attn.q_proj.weight"), 3072, 3072);
            add(format!("{p}self_attn.k_proj.weight"), 1024, 3072);
            add(format!("{p}self_attn.v_proj.weight"), 1024, 3072);
            add(format!("{p}self_attn.o_proj.weight"), 3072, 3072);
            add(format!("{p}mlp.gate_proj.weight"), 8192, 3072);
            add(format!("{p}mlp.up_proj.weight"), 8192, 3072);
            add(format!("{p}mlp.down_proj.weight"), 3072, 8192);
            add(format!("{p}input_layernorm.weight"), 3072, 0);
            add(format!("{p}post_attention_layernorm.weight"), 3072, 0);
        }
        add("model.norm.weight".into(), 3072, 0);
        let weights = WeightIndex {
            files: Vec::new(),
            tensors,
        };
        let estimate = MemoryEstimate::of(&llama32, &weights, 2048, 2048);
        let total = estimate.total_bytes() as f64;
        for peak_gib in [13.74, 14.1] {
            let ratio = total / (peak_gib * GIB as f64);
            assert!(
                (1.0..=1.15).contains(&ratio),
                "{ratio} of {peak_gib} GiB: {estimate:?}"
            );
        }
        // A 24 GiB machine's default budget holds it.
        let meminfo = format!("MemTotal: {} kB\n", 24 * GIB / 1024);
        estimate
            .check(default_budget_bytes(Some(&meminfo)))
            .unwrap();
    }

    #[test]
    fn absurd_shapes_saturate_instead_of_wrapping() {
        let wide = config(
            r#""hidden_size": 16384, "num_attention_heads": 128, "head_dim": 256,
               "num_hidden_layers": 128, "vocab_size": 262144, "intermediate_size": 65536"#,
        );
        let estimate = MemoryEstimate::of(&wide, &weights(u64::MAX - 1), u64::MAX, u64::MAX);
        assert_eq!(estimate.total_bytes(), u64::MAX);
        assert!(estimate.check(u64::MAX - 1).is_err());
    }
}
