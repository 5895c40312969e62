//! `config.json`: both the classic form (`rope_theta`, `rope_scaling`, `torch_dtype`) and the
//! newer one (`rope_parameters`, `dtype`), checked against what we can evaluate.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::EvalError;

/// Structural bounds that keep a hostile config from asking for absurd graphs or
/// allocations, set above every model the competitions take (at most 8·1024³ parameters) and
/// every public Llama or StableLM: Llama 3.1 405B has 126 layers, 128 query heads, head size
/// 128, hidden size 16,384 and an MLP of 53,248; Gemma's vocabulary of 256,000 is the largest
/// in use. A graph past them is not a model the subnet rewards, and some of them are how a
/// model of a few kilobytes asks for gigabytes (1,024 heads of size 2) or for minutes of
/// session build (session build grows faster than the layer count: 128 tiny layers take
/// about 20 s, 256 more than a minute).
const VOCAB_MAX: u64 = 1 << 18;
const HIDDEN_MAX: u64 = 1 << 14;
const LAYERS_MAX: u64 = 128;
const HEADS_MAX: u64 = 128;
const HEAD_DIM_MAX: u64 = 256;
const INTERMEDIATE_MAX: u64 = 1 << 16;

/// The architectures of the competitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (Llama 2/3, Mistral-style weights).
    Llama,
    /// `StableLmForCausalLM`.
    StableLm,
    /// `MistralForCausalLM`: Llama's layers without biases, with a sliding attention window.
    Mistral,
    /// `GemmaForCausalLM`: Llama's layers with a `(1 + weight)` RMSNorm, a GELU-tanh gated
    /// MLP and embeddings scaled by √hidden.
    Gemma,
    /// `Gemma2ForCausalLM`: Gemma's, with norms after attention and MLP too, soft-capped
    /// attention scores and logits, `query_pre_attn_scalar` and alternating sliding windows.
    Gemma2,
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::StableLm => "StableLmForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Gemma => "GemmaForCausalLM",
            Architecture::Gemma2 => "Gemma2ForCausalLM",
        }
    }

    /// Whether the layers are Llama's (RMSNorm before attention and MLP, a gated MLP,
    /// whole-head rotary embedding).
    pub fn is_llama_like(self) -> bool {
        matches!(
            self,
            Architecture::Llama
                | Architecture::Mistral
                | Architecture::Gemma
                | Architecture::Gemma2
        )
    }
}

/// Rotary embedding frequency scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Llama 3.1's frequency-dependent scaling.
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
}

/// What the exporter needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The architecture.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: u64,
    /// Hidden size.
    pub hidden_size: u64,
    /// MLP inner size.
    pub intermediate_size: u64,
    /// Decoder layers.
    pub num_layers: u64,
    /// Query heads.
    pub num_heads: u64,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: u64,
    /// Width of a head.
    pub head_dim: u64,
    /// The normalisation of the residual stream.
    pub norm: Norm,
    /// Epsilon of the normalisations (RMS for Llama, LayerNorm for StableLM).
    pub norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Dimensions of each head that are rotated (StableLM's partial rotary factor).
    pub rotary_dim: u64,
    /// Whether the output projection reuses the embedding.
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v (Llama `attention_bias`, StableLM `use_qkv_bias`).
    pub qkv_bias: bool,
    /// Bias on the attention output projection (Llama `attention_bias`).
    pub o_bias: bool,
    /// Biases in the MLP (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// StableLM: per-head LayerNorm on q and k.
    pub qk_layernorm: bool,
    /// StableLM: attention and MLP both read the first norm's output.
    pub parallel_residual: bool,
    /// The declared weight dtype (`torch_dtype` or `dtype`), for reports.
    pub dtype: Option<String>,
    /// Mistral: a query sees only the `sliding_window` latest positions, itself included
    /// (transformers: `kv_idx > q_idx - sliding_window`); `None` for full causal attention.
    pub sliding_window: Option<u64>,
    /// The gated MLP's activation.
    pub activation: Activation,
    /// Gemma: RMSNorm scales by `1 + weight`, in float32.
    pub norm_unit_offset: bool,
    /// Gemma: embeddings are multiplied by √hidden, rounded to float32 (`embed_scale`).
    pub embedding_scale: Option<f32>,
    /// Gemma 2: which layers use `sliding_window` (`layer_types`); `None`: every layer.
    pub window_layers: Option<Vec<bool>>,
    /// Gemma 2: the attention output and the MLP output are normed before their residual add,
    /// and the MLP's input has its own norm.
    pub post_norms: bool,
    /// Gemma 2: attention scores become `cap · tanh(scores / cap)` before the mask.
    pub attention_softcap: Option<f64>,
    /// Gemma 2: logits become `cap · tanh(logits / cap)`.
    pub final_softcap: Option<f64>,
    /// Gemma 2: scores are scaled by `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5`.
    pub query_scale: Option<f64>,
}

impl ModelConfig {
    /// The sliding window of `layer`, if it has one.
    pub fn window_of(&self, layer: u64) -> Option<u64> {
        let windowed = self.window_layers.as_ref().is_none_or(|layers| {
            usize::try_from(layer)
                .ok()
                .and_then(|index| layers.get(index))
                .copied()
                .unwrap_or(false)
        });
        self.sliding_window.filter(|_| windowed)
    }
}

/// The normalisation of the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// RMSNorm, its statistics in float32 (Llama, Mistral, Gemma, Gemma 2).
    Rms,
    /// LayerNorm with a bias (StableLM).
    LayerWithBias,
}

/// The activation of the gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` (Llama, Mistral, StableLM).
    Silu,
    /// `gelu_pytorch_tanh` (Gemma; its legacy `gelu` means the same).
    GeluTanh,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// The largest `config.json` read.
const CONFIG_BYTES_MAX: u64 = 1 << 20;

fn unsupported(why: String) -> EvalError {
    EvalError::Unsupported(why)
}

fn invalid(why: String) -> EvalError {
    EvalError::Config(why)
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn uint(&self, key: &str, max: u64) -> Result<Option<u64>, EvalError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_u64() {
                Some(0) => Err(invalid(format!("{key} is 0"))),
                Some(n) if n <= max => Ok(Some(n)),
                Some(n) => Err(invalid(format!("{key} = {n} exceeds {max}"))),
                None => Err(invalid(format!(
                    "{key} = {value} is not a positive integer"
                ))),
            },
        }
    }

    fn required(&self, key: &str, max: u64) -> Result<u64, EvalError> {
        self.uint(key, max)?
            .ok_or_else(|| invalid(format!("{key} is missing")))
    }

    fn float(&self, key: &str) -> Result<Option<f64>, EvalError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => match value.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(invalid(format!("{key} = {value} is not a finite number"))),
            },
        }
    }

    fn flag(&self, key: &str) -> Result<bool, EvalError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(value) => Err(invalid(format!("{key} = {value} is not a boolean"))),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(Value::as_str).map(str::to_owned)
    }
}

fn positive(name: &str, value: f64) -> Result<f64, EvalError> {
    if value > 0.0 {
        Ok(value)
    } else {
        Err(invalid(format!("{name} = {value} is not positive")))
    }
}

impl ModelConfig {
    /// Reads `config.json` in `dir`.
    pub fn read(dir: &Path) -> Result<Self, EvalError> {
        let path = dir.join("config.json");
        // Checked before it is read: a 14 GiB config.json fits a 15 GiB repository, and a FIFO
        // or a device never ends.
        let bytes = crate::bounded::read_regular(&path, CONFIG_BYTES_MAX).map_err(|e| match e {
            crate::bounded::BoundedError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                EvalError::MissingFile {
                    path: path.clone(),
                    what: "config.json".into(),
                }
            }
            crate::bounded::BoundedError::Io(source) => EvalError::Io {
                path: path.clone(),
                source,
            },
            crate::bounded::BoundedError::NotRegular => {
                invalid("config.json is not a regular file".into())
            }
            crate::bounded::BoundedError::TooLarge { .. } => {
                invalid("config.json is over 1 MiB".into())
            }
        })?;
        Self::parse(&bytes)
    }

    /// Parses the bytes of a `config.json`.
    pub fn parse(bytes: &[u8]) -> Result<Self, EvalError> {
        let raw: Raw = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("config.json is not a JSON object: {e}")))?;
        let architecture = parse_architecture(&raw.architectures)?;
        check_model_type(&raw.rest, architecture)?;
        let fields = Fields(&raw.rest);
        let shape = Shape::parse(&fields, architecture)?;
        // transformers refuses a `hidden_act` that names no activation (null, a number): so
        // do we, rather than score the model with silu as if it had said so. Gemma's default
        // is the tanh GELU, and GemmaConfig turns a legacy "gelu" into it.
        let gemma = matches!(architecture, Architecture::Gemma | Architecture::Gemma2);
        let gemma2 = architecture == Architecture::Gemma2;
        // Gemma 2's MLP reads `hidden_activation` and takes "gelu" as the exact GELU, which
        // we do not build; Gemma reads `hidden_act` and turns "gelu" into the tanh GELU.
        let activation_key = if gemma2 {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let activation = match raw.rest.get(activation_key) {
            Some(Value::String(activation)) if gemma2 && activation == "gelu" => {
                return Err(unsupported(
                    "hidden_activation \"gelu\" (the exact GELU); Gemma2ForCausalLM supports \
                     \"gelu_pytorch_tanh\""
                        .into(),
                ));
            }
            None if gemma => Activation::GeluTanh,
            None => Activation::Silu,
            Some(Value::String(activation)) if activation == "silu" && !gemma => Activation::Silu,
            Some(Value::String(activation))
                if gemma && (activation == "gelu_pytorch_tanh" || activation == "gelu") =>
            {
                Activation::GeluTanh
            }
            Some(Value::String(activation)) => {
                return Err(unsupported(format!(
                    "hidden_act {activation:?}; {} supports {}",
                    architecture.name(),
                    if gemma {
                        "\"gelu_pytorch_tanh\" (and its legacy \"gelu\")"
                    } else {
                        "\"silu\""
                    }
                )));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "hidden_act = {other} is not the name of an activation"
                )));
            }
        };
        if gemma && fields.flag("use_bidirectional_attention")? {
            return Err(unsupported(
                "use_bidirectional_attention = true: the model would attend to later tokens, \
                 which a causal loss does not evaluate"
                    .into(),
            ));
        }
        let rope = Rope::parse(&raw.rest, architecture, shape.head_dim)?;
        let norm_key = match architecture {
            Architecture::Llama
            | Architecture::Mistral
            | Architecture::Gemma
            | Architecture::Gemma2 => "rms_norm_eps",
            Architecture::StableLm => "layer_norm_eps",
        };
        let sliding_window = match architecture {
            // MistralConfig's and Gemma2Config's default when the key is absent is 4,096;
            // `null` turns it off.
            Architecture::Mistral | Architecture::Gemma2 => match raw.rest.get("sliding_window") {
                None => Some(4096),
                Some(Value::Null) => None,
                Some(_) => match fields.uint("sliding_window", u64::MAX)? {
                    Some(0) | None => {
                        return Err(invalid("sliding_window must be a positive integer".into()));
                    }
                    window => window,
                },
            },
            Architecture::Llama | Architecture::StableLm | Architecture::Gemma => None,
        };
        let window_layers = if gemma2 {
            Some(layer_types(&raw.rest, shape.num_layers)?)
        } else {
            None
        };
        // Gemma2Config's defaults, `null` meaning none.
        let capped = |key: &str, default: f64| -> Result<Option<f64>, EvalError> {
            match raw.rest.get(key) {
                None => Ok(Some(default)),
                Some(Value::Null) => Ok(None),
                Some(_) => match fields.float(key)? {
                    Some(cap) => positive(key, cap).map(Some),
                    None => Ok(None),
                },
            }
        };
        let (attention_softcap, final_softcap, query_scale) = if gemma2 {
            let scalar = match fields.float("query_pre_attn_scalar")? {
                Some(scalar) => positive("query_pre_attn_scalar", scalar)?,
                None => 256.0,
            };
            (
                capped("attn_logit_softcapping", 50.0)?,
                capped("final_logit_softcapping", 30.0)?,
                Some(scalar),
            )
        } else {
            (None, None, None)
        };
        let norm_eps = positive(norm_key, fields.float(norm_key)?.unwrap_or(1e-5))?;
        let tie_word_embeddings = match raw.rest.get("tie_word_embeddings") {
            // GemmaConfig ties them unless told otherwise.
            None | Some(Value::Null) => gemma,
            Some(Value::Bool(flag)) => *flag,
            Some(value) => {
                return Err(invalid(format!(
                    "tie_word_embeddings = {value} is not a boolean"
                )));
            }
        };
        let flags = Flags::parse(&fields, architecture)?;
        Ok(Self {
            architecture,
            vocab_size: shape.vocab_size,
            hidden_size: shape.hidden_size,
            intermediate_size: shape.intermediate_size,
            num_layers: shape.num_layers,
            num_heads: shape.num_heads,
            num_kv_heads: shape.num_kv_heads,
            head_dim: shape.head_dim,
            norm: if architecture.is_llama_like() {
                Norm::Rms
            } else {
                Norm::LayerWithBias
            },
            norm_eps,
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            rotary_dim: rope.rotary_dim,
            tie_word_embeddings,
            qkv_bias: flags.qkv_bias,
            o_bias: flags.o_bias,
            mlp_bias: flags.mlp_bias,
            qk_layernorm: flags.qk_layernorm,
            sliding_window,
            activation,
            norm_unit_offset: gemma,
            // `torch.tensor(hidden_size ** 0.5)`: a float32 of the Python float.
            embedding_scale: gemma.then(|| {
                #[allow(clippy::cast_possible_truncation)]
                let scale = head_dim_f64(shape.hidden_size).sqrt() as f32;
                scale
            }),
            window_layers,
            post_norms: gemma2,
            attention_softcap,
            final_softcap,
            query_scale,
            parallel_residual: flags.parallel_residual,
            dtype: fields
                .string("dtype")
                .or_else(|| fields.string("torch_dtype")),
        })
    }
}

/// The classes the successor's competitions list whose layers lack what its norm check reads
/// (`model.layers[i].self_attn.{q,k,v,o}_proj`, `.mlp.{up,down}_proj`, taoverse
/// model_updater.py L188-272): the check raises AttributeError after the tracker has taken the
/// model, so the successor never queues them. What each has instead.
const NEVER_SCORED: [(&str, &str); 5] = [
    ("BartForCausalLM", "model.decoder.layers, with fc1/fc2"),
    (
        "FalconForCausalLM",
        "transformer.h, with self_attention.query_key_value",
    ),
    (
        "GPTNeoXForCausalLM",
        "gpt_neox.layers, with attention.query_key_value",
    ),
    ("PhiForCausalLM", "self_attn.dense and mlp.fc1/fc2"),
    ("Phi3ForCausalLM", "self_attn.qkv_proj and mlp.gate_up_proj"),
];

/// Gemma 2's `layer_types`: one per layer, `sliding_attention` or `full_attention`; when
/// absent, Gemma2Config's alternation (even layers slide).
fn layer_types(rest: &Map<String, Value>, layers: u64) -> Result<Vec<bool>, EvalError> {
    let count = usize::try_from(layers).unwrap_or(usize::MAX);
    match rest.get("layer_types") {
        None | Some(Value::Null) => Ok((0..count).map(|i| i % 2 == 0).collect()),
        Some(Value::Array(types)) if types.len() == count => types
            .iter()
            .map(|kind| match kind.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(unsupported(format!(
                    "layer_types entry {kind}; Gemma2ForCausalLM supports \
                     \"sliding_attention\" and \"full_attention\""
                ))),
            })
            .collect(),
        Some(Value::Array(types)) => Err(invalid(format!(
            "layer_types lists {} types for {layers} layers",
            types.len()
        ))),
        Some(_) => Err(invalid("layer_types is not a list".into())),
    }
}

fn parse_architecture(architectures: &[String]) -> Result<Architecture, EvalError> {
    if let [one] = architectures
        && let Some((name, instead)) = NEVER_SCORED.iter().find(|(name, _)| one == name)
    {
        return Err(EvalError::NeverScored(format!(
            "{name}: the successor lists it but never scores it, since its norm check reads \
             self_attn.{{q,k,v,o}}_proj and mlp.{{up,down}}_proj and {name} has {instead} \
             (taoverse model_updater.py L188-272); no validator sets weight on it"
        )));
    }
    match architectures {
        [one] if one == "LlamaForCausalLM" => Ok(Architecture::Llama),
        [one] if one == "StableLmForCausalLM" => Ok(Architecture::StableLm),
        [one] if one == "MistralForCausalLM" => Ok(Architecture::Mistral),
        [one] if one == "GemmaForCausalLM" => Ok(Architecture::Gemma),
        [one] if one == "Gemma2ForCausalLM" => Ok(Architecture::Gemma2),
        [] => Err(unsupported("config.json names no architecture".into())),
        other => Err(unsupported(format!(
            "architecture {other:?}; we evaluate LlamaForCausalLM, MistralForCausalLM, \
             GemmaForCausalLM, Gemma2ForCausalLM and StableLmForCausalLM"
        ))),
    }
}

/// transformers builds the class `model_type` names, not the one `architectures` names: a
/// `LlamaForCausalLM` declared as `mistral` or `qwen2` is a Mistral or a Qwen2 model to N, and
/// without a `model_type` transformers only guesses the class from the directory's name. So
/// the two must agree, or we would score a different model from the one N loads.
fn check_model_type(
    rest: &Map<String, Value>,
    architecture: Architecture,
) -> Result<(), EvalError> {
    let expected = match architecture {
        Architecture::Llama => "llama",
        Architecture::StableLm => "stablelm",
        Architecture::Mistral => "mistral",
        Architecture::Gemma => "gemma",
        Architecture::Gemma2 => "gemma2",
    };
    match rest.get("model_type") {
        Some(Value::String(model_type)) if model_type == expected => Ok(()),
        Some(Value::String(model_type)) => Err(unsupported(format!(
            "model_type {model_type:?} with architecture {}: transformers would build a \
             {model_type:?} model, and we evaluate {expected:?} only",
            architecture.name()
        ))),
        None | Some(Value::Null) => Err(invalid(format!(
            "config.json has no model_type (transformers needs one; {expected:?} for {})",
            architecture.name()
        ))),
        Some(other) => Err(invalid(format!("model_type = {other} is not a name"))),
    }
}

/// The model's dimensions, each within its structural bound.
struct Shape {
    vocab_size: u64,
    hidden_size: u64,
    intermediate_size: u64,
    num_layers: u64,
    num_heads: u64,
    num_kv_heads: u64,
    head_dim: u64,
}

impl Shape {
    fn parse(fields: &Fields<'_>, architecture: Architecture) -> Result<Self, EvalError> {
        let hidden_size = fields.required("hidden_size", HIDDEN_MAX)?;
        let num_heads = fields.required("num_attention_heads", HEADS_MAX)?;
        let num_kv_heads = fields
            .uint("num_key_value_heads", HEADS_MAX)?
            .unwrap_or(num_heads);
        let vocab_size = fields.required("vocab_size", VOCAB_MAX)?;
        let intermediate_size = fields.required("intermediate_size", INTERMEDIATE_MAX)?;
        let num_layers = fields.required("num_hidden_layers", LAYERS_MAX)?;
        if num_heads % num_kv_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        let head_dim = match (architecture, fields.uint("head_dim", HIDDEN_MAX)?) {
            // Mistral reads `head_dim or hidden // heads`: 0 falls back.
            (Architecture::Llama, Some(head_dim)) => head_dim,
            (Architecture::Mistral, Some(head_dim)) if head_dim > 0 => head_dim,
            // GemmaConfig always has one (256 unless told); zero makes no heads.
            (Architecture::Gemma | Architecture::Gemma2, Some(0)) => {
                return Err(invalid("head_dim must be positive".into()));
            }
            (Architecture::Gemma2, _) if hidden_size % num_heads != 0 => {
                // Gemma2Config validates this whatever the head size.
                return Err(invalid(format!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
                )));
            }
            (Architecture::Gemma | Architecture::Gemma2, Some(head_dim)) => head_dim,
            (Architecture::Gemma | Architecture::Gemma2, None) => 256,
            _ => {
                if hidden_size % num_heads != 0 {
                    return Err(invalid(format!(
                        "hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}"
                    )));
                }
                hidden_size / num_heads
            }
        };
        if head_dim > HEAD_DIM_MAX {
            return Err(invalid(format!(
                "a head size of {head_dim}; at most {HEAD_DIM_MAX} is accepted"
            )));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
        })
    }
}

/// Rotary position embedding: the newer `rope_parameters` dict, or the classic top-level
/// keys and `rope_scaling`.
struct Rope {
    theta: f64,
    scaling: RopeScaling,
    rotary_dim: u64,
}

impl Rope {
    fn parse(
        rest: &Map<String, Value>,
        architecture: Architecture,
        head_dim: u64,
    ) -> Result<Self, EvalError> {
        let fields = Fields(rest);
        let parameters = object_or_null(rest, "rope_parameters")?;
        let classic = object_or_null(rest, "rope_scaling")?;
        let scaling_fields = Fields(parameters.or(classic).unwrap_or(rest));
        let theta = match parameters {
            Some(parameters) => Fields(parameters).float("rope_theta")?,
            None => fields.float("rope_theta")?,
        }
        .unwrap_or(10_000.0);
        let theta = positive("rope_theta", theta)?;
        let rope_type = match parameters
            .or(classic)
            .and_then(|p| p.get("rope_type").or_else(|| p.get("type")))
        {
            None => "default",
            Some(Value::String(name)) => name.as_str(),
            Some(other) => {
                return Err(invalid(format!(
                    "the rope scaling type {other} is not a name"
                )));
            }
        };
        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "llama3" => llama3_scaling(&scaling_fields)?,
            other => {
                return Err(unsupported(format!(
                    "rope scaling of type {other:?}; we support llama3"
                )));
            }
        };
        let partial_rotary_factor = parameters
            .and_then(|p| Fields(p).float("partial_rotary_factor").transpose())
            .transpose()?
            .or(fields.float("partial_rotary_factor")?)
            .unwrap_or(match architecture {
                Architecture::Llama
                | Architecture::Mistral
                | Architecture::Gemma
                | Architecture::Gemma2 => 1.0,
                Architecture::StableLm => 0.25,
            });
        // transformers' Llama rotates the whole head: a smaller factor gives rotary tables
        // narrower than the queries, which its `apply_rotary_pos_emb` cannot broadcast.
        if architecture.is_llama_like() && partial_rotary_factor != 1.0 {
            return Err(unsupported(format!(
                "partial_rotary_factor {partial_rotary_factor} on LlamaForCausalLM, which \
                 rotates the whole head"
            )));
        }
        if !(partial_rotary_factor > 0.0 && partial_rotary_factor <= 1.0) {
            return Err(invalid(format!(
                "partial_rotary_factor {partial_rotary_factor} is outside (0, 1]"
            )));
        }
        // Python's int(head_dim * factor), truncating.
        let rotary_dim = truncate_to_u64(head_dim_f64(head_dim) * partial_rotary_factor);
        if rotary_dim == 0 || !rotary_dim.is_multiple_of(2) {
            return Err(unsupported(format!(
                "a rotary dimension of {rotary_dim}; it must be even and positive"
            )));
        }
        Ok(Self {
            theta,
            scaling,
            rotary_dim,
        })
    }
}

/// `key` of the config as an object, `None` when absent or null; anything else (a list, a
/// string) is refused, as transformers refuses it, rather than read as "no scaling".
fn object_or_null<'a>(
    rest: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, EvalError> {
    match rest.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(invalid(format!("{key} = {other} is not an object"))),
    }
}

fn llama3_scaling(fields: &Fields<'_>) -> Result<RopeScaling, EvalError> {
    let get = |key: &str| -> Result<f64, EvalError> {
        fields
            .float(key)?
            .ok_or_else(|| invalid(format!("llama3 rope scaling lacks {key}")))
            .and_then(|v| positive(key, v))
    };
    let factor = get("factor")?;
    let low_freq_factor = get("low_freq_factor")?;
    let high_freq_factor = get("high_freq_factor")?;
    let original_max_position_embeddings = get("original_max_position_embeddings")?;
    if high_freq_factor <= low_freq_factor {
        return Err(invalid(
            "llama3 rope scaling needs high_freq_factor > low_freq_factor".into(),
        ));
    }
    Ok(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    })
}

/// The architecture's optional features.
struct Flags {
    qkv_bias: bool,
    o_bias: bool,
    mlp_bias: bool,
    qk_layernorm: bool,
    parallel_residual: bool,
}

impl Flags {
    fn parse(fields: &Fields<'_>, architecture: Architecture) -> Result<Self, EvalError> {
        Ok(match architecture {
            Architecture::Llama => {
                let attention_bias = fields.flag("attention_bias")?;
                Self {
                    qkv_bias: attention_bias,
                    o_bias: attention_bias,
                    mlp_bias: fields.flag("mlp_bias")?,
                    qk_layernorm: false,
                    parallel_residual: false,
                }
            }
            // Gemma: `attention_bias` on all four projections; no MLP bias.
            Architecture::Gemma | Architecture::Gemma2 => {
                let attention_bias = fields.flag("attention_bias")?;
                Self {
                    qkv_bias: attention_bias,
                    o_bias: attention_bias,
                    mlp_bias: false,
                    qk_layernorm: false,
                    parallel_residual: false,
                }
            }
            // Mistral's projections have no biases, whatever the config says.
            Architecture::Mistral => Self {
                qkv_bias: false,
                o_bias: false,
                mlp_bias: false,
                qk_layernorm: false,
                parallel_residual: false,
            },
            Architecture::StableLm => Self {
                qkv_bias: fields.flag("use_qkv_bias")?,
                o_bias: false,
                mlp_bias: false,
                qk_layernorm: fields.flag("qk_layernorm")?,
                parallel_residual: fields.flag("use_parallel_residual")?,
            },
        })
    }
}

fn head_dim_f64(head_dim: u64) -> f64 {
    f64::from(u32::try_from(head_dim).unwrap_or(u32::MAX))
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn truncate_to_u64(value: f64) -> u64 {
    value as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Fault;
    use crate::machine::event::RejectionCode;

    fn parse(json: &str) -> Result<ModelConfig, EvalError> {
        ModelConfig::parse(json.as_bytes())
    }

    const LLAMA: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
        "intermediate_size": 96, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_hidden_layers": 2, "vocab_size": 420, "rms_norm_eps": 1e-6"#;

    /// The five classes the successor lists but never scores are refused with their own
    /// rejection, naming what the norm check misses; a class outside the list is refused as
    /// unsupported, as before.
    #[test]
    fn the_classes_the_successor_never_scores_are_refused_by_name() {
        for (name, _) in NEVER_SCORED {
            let json = LLAMA.replace("LlamaForCausalLM", name);
            let error = parse(&format!("{json}}}")).unwrap_err();
            assert!(
                matches!(error, EvalError::NeverScored(_)),
                "{name}: {error}"
            );
            assert!(error.to_string().contains(name));
            assert_eq!(error.fault(), Fault::Model(RejectionCode::NeverScored));
        }
        let other = parse(&format!(
            "{}}}",
            LLAMA.replace("LlamaForCausalLM", "GPT2LMHeadModel")
        ))
        .unwrap_err();
        assert_eq!(
            other.fault(),
            Fault::Model(RejectionCode::UnsupportedArchitecture)
        );
    }

    /// Mistral reads as transformers' MistralConfig: no `sliding_window` key is its 4,096,
    /// `null` is full causal attention, a zero or a non-integer window is refused, biases are
    /// never read, and `model_type` must be `mistral`.
    #[test]
    fn mistral_reads_its_window_as_transformers_does() {
        let mistral = LLAMA
            .replace("LlamaForCausalLM", "MistralForCausalLM")
            .replace(r#""model_type": "llama""#, r#""model_type": "mistral""#);
        let read = |extra: &str| parse(&format!("{mistral}{extra}}}"));
        assert_eq!(read("").unwrap().sliding_window, Some(4096));
        assert_eq!(
            read(r#", "sliding_window": null"#).unwrap().sliding_window,
            None
        );
        assert_eq!(
            read(r#", "sliding_window": 16"#).unwrap().sliding_window,
            Some(16)
        );
        assert!(read(r#", "sliding_window": 0"#).is_err());
        assert!(read(r#", "sliding_window": "wide""#).is_err());
        let biased = read(r#", "attention_bias": true, "mlp_bias": true"#).unwrap();
        assert!(!biased.qkv_bias && !biased.o_bias && !biased.mlp_bias);
        assert_eq!(biased.architecture, Architecture::Mistral);
        let as_llama = LLAMA.replace("LlamaForCausalLM", "MistralForCausalLM");
        assert!(parse(&format!("{as_llama}}}")).is_err());
        assert_eq!(parse(&format!("{LLAMA}}}")).unwrap().sliding_window, None);
    }

    /// Gemma reads as GemmaConfig: the tanh GELU by default and for the legacy "gelu", any
    /// other activation refused, bidirectional attention refused, a head size of 256 unless
    /// told, tied embeddings unless told, `1 + weight` norms and a float32 √hidden scale.
    #[test]
    fn gemma_reads_as_gemmaconfig() {
        let gemma = LLAMA
            .replace("LlamaForCausalLM", "GemmaForCausalLM")
            .replace(r#""model_type": "llama""#, r#""model_type": "gemma""#);
        let read = |extra: &str| parse(&format!("{gemma}{extra}}}"));
        let plain = read("").unwrap();
        assert_eq!(plain.activation, Activation::GeluTanh);
        assert_eq!(plain.head_dim, 256);
        assert!(plain.tie_word_embeddings && plain.norm_unit_offset);
        assert_eq!(plain.embedding_scale, Some(8.0));
        let legacy = read(r#", "hidden_act": "gelu""#).unwrap();
        assert_eq!(legacy.activation, Activation::GeluTanh);
        assert!(read(r#", "hidden_act": "silu""#).is_err());
        assert!(read(r#", "use_bidirectional_attention": true"#).is_err());
        assert!(read(r#", "use_bidirectional_attention": null"#).is_ok());
        assert!(read(r#", "head_dim": 0"#).is_err());
        assert!(
            !read(r#", "tie_word_embeddings": false"#)
                .unwrap()
                .tie_word_embeddings
        );
        assert!(parse(&format!("{}, \"hidden_act\": \"gelu\"}}", LLAMA)).is_err());
    }

    /// Gemma 2 reads as Gemma2Config: soft-caps of 50 and 30 and a query scalar of 256 unless
    /// told (`null` caps are none), layers alternating from a sliding first one unless
    /// `layer_types` says otherwise (one known type per layer), `hidden_activation` read (its
    /// exact "gelu" refused), and hidden / heads a whole number whatever the head size.
    #[test]
    fn gemma2_reads_as_gemma2config() {
        let gemma2 = LLAMA
            .replace("LlamaForCausalLM", "Gemma2ForCausalLM")
            .replace(r#""model_type": "llama""#, r#""model_type": "gemma2""#);
        let read = |extra: &str| parse(&format!("{gemma2}{extra}}}"));
        let plain = read("").unwrap();
        assert_eq!(plain.attention_softcap, Some(50.0));
        assert_eq!(plain.final_softcap, Some(30.0));
        assert_eq!(plain.query_scale, Some(256.0));
        assert_eq!(plain.sliding_window, Some(4096));
        assert_eq!(plain.window_of(0), Some(4096));
        assert_eq!(plain.window_of(1), None);
        assert!(plain.post_norms && plain.norm_unit_offset);
        let uncapped =
            read(r#", "attn_logit_softcapping": null, "final_logit_softcapping": null"#).unwrap();
        assert_eq!(
            (uncapped.attention_softcap, uncapped.final_softcap),
            (None, None)
        );
        let types = read(r#", "layer_types": ["full_attention", "sliding_attention"]"#).unwrap();
        assert_eq!(types.window_layers, Some(vec![false, true]));
        assert!(read(r#", "layer_types": ["full_attention"]"#).is_err());
        assert!(read(r#", "layer_types": ["chunked_attention", "full_attention"]"#).is_err());
        assert!(read(r#", "hidden_activation": "gelu""#).is_err());
        assert!(read(r#", "hidden_act": "silu""#).is_ok());
        assert!(read(r#", "attn_logit_softcapping": 0"#).is_err());
        let odd = gemma2.replace(r#""hidden_size": 64"#, r#""hidden_size": 66"#);
        assert!(parse(&format!("{odd}, \"head_dim\": 16}}")).is_err());
    }

    #[test]
    fn both_rope_styles_read_the_same() {
        let classic = parse(&format!(
            r#"{LLAMA}, "rope_theta": 500000.0, "rope_scaling": {{"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
            "torch_dtype": "bfloat16"}}"#
        ))
        .unwrap();
        let newer = parse(&format!(
            r#"{LLAMA}, "rope_parameters": {{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
            "dtype": "bfloat16"}}"#
        ))
        .unwrap();
        assert_eq!(classic, newer);
        assert_eq!(classic.rope_theta, 500000.0);
        assert_eq!(classic.head_dim, 16);
        assert!(matches!(classic.rope_scaling, RopeScaling::Llama3 { .. }));
    }

    /// Postmortem (hostile-input round): `model_type` was never read, so a config declaring
    /// `mistral` (or none) with `LlamaForCausalLM` was scored as a Llama, a model N builds as
    /// something else or not at all; and a Llama with `partial_rotary_factor` 0.5 was scored
    /// with half-rotary attention transformers cannot run.
    #[test]
    fn model_type_must_name_the_architecture_and_llama_rotates_whole_heads() {
        let without = LLAMA.replace(r#""model_type": "llama", "#, "");
        let error = |json: String| parse(&json).unwrap_err().to_string();
        assert!(error(format!("{without}}}")).contains("no model_type"));
        for other in ["mistral", "qwen2", "stablelm", "nonexistent"] {
            let message = error(format!("{without}, \"model_type\": \"{other}\"}}"));
            assert!(
                message.contains(&format!("model_type \"{other}\"")),
                "{message}"
            );
        }
        assert!(error(format!("{without}, \"model_type\": 3}}")).contains("not a name"));
        assert!(parse(&format!("{LLAMA}, \"partial_rotary_factor\": 1.0}}")).is_ok());
        let partial = error(format!("{LLAMA}, \"partial_rotary_factor\": 0.5}}"));
        assert!(partial.contains("rotates the whole head"), "{partial}");
    }

    #[test]
    fn stablelm_partial_rotary_in_either_place() {
        let base = r#""architectures": ["StableLmForCausalLM"], "model_type": "stablelm", "hidden_size": 64, "intermediate_size": 96,
            "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100"#;
        let classic = parse(&format!("{{{base}, \"partial_rotary_factor\": 0.5}}")).unwrap();
        let newer = parse(&format!(
            "{{{base}, \"rope_parameters\": {{\"rope_type\": \"default\", \"rope_theta\": 10000.0, \"partial_rotary_factor\": 0.5}}}}"
        ))
        .unwrap();
        assert_eq!(classic.rotary_dim, 8);
        assert_eq!(newer.rotary_dim, 8);
        assert_eq!(parse(&format!("{{{base}}}")).unwrap().rotary_dim, 4);
    }

    /// Postmortem (5815bbb): values transformers refuses (zero heads, `rope_scaling` as a list,
    /// `hidden_act: null`) were read as defaults and the model scored as one it does not name.
    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let error = |json: String| parse(&json).unwrap_err().to_string();
        assert!(
            error(LLAMA.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 0") + "}")
                .contains("num_attention_heads is 0")
        );
        assert!(
            error(LLAMA.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3") + "}")
                .contains("multiple")
        );
        assert!(
            error(LLAMA.replace("\"vocab_size\": 420", "\"vocab_size\": 100000000000") + "}")
                .contains("exceeds")
        );
        assert!(
            error(LLAMA.replace("LlamaForCausalLM", "GPT2LMHeadModel") + "}")
                .contains("GPT2LMHeadModel")
        );
        assert!(
            error(format!(
                "{LLAMA}, \"rope_scaling\": {{\"type\": \"yarn\", \"factor\": 2.0}}}}"
            ))
            .contains("yarn")
        );
        assert!(error(format!("{LLAMA}, \"hidden_act\": \"gelu\"}}")).contains("gelu"));
        // Postmortem (hostile-input round): these were read as default RoPE and silu, and the
        // model was scored as a model it is not; transformers refuses each of them.
        assert!(error(format!("{LLAMA}, \"hidden_act\": null}}")).contains("hidden_act = null"));
        assert!(error(format!("{LLAMA}, \"hidden_act\": 3}}")).contains("hidden_act = 3"));
        assert!(
            error(format!("{LLAMA}, \"rope_scaling\": [\"llama3\", 8.0]}}"))
                .contains("rope_scaling = [")
        );
        assert!(
            error(format!("{LLAMA}, \"rope_parameters\": \"llama3\"}}"))
                .contains("rope_parameters = \"llama3\" is not an object")
        );
        assert!(
            error(format!(
                "{LLAMA}, \"rope_scaling\": {{\"rope_type\": 3, \"factor\": 8.0}}}}"
            ))
            .contains("is not a name")
        );
        parse(&format!(
            "{LLAMA}, \"rope_scaling\": null, \"hidden_act\": \"silu\"}}"
        ))
        .unwrap();
        let stable = r#"{"architectures": ["StableLmForCausalLM"], "model_type": "stablelm", "hidden_size": 65, "intermediate_size": 96,
            "num_attention_heads": 4, "num_hidden_layers": 2, "vocab_size": 100}"#;
        assert!(error(stable.into()).contains("not divisible"));
        assert!(error("[]".into()).contains("not a JSON object"));
    }
}
