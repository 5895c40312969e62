//! Tokenisation with the original validator's semantics.
//!
//! For each (prompt, response): strip both (Python's `str.strip`); render the chat template for
//! `[user]` with the generation prompt (the prompt ids) and for `[user, assistant]` (the full
//! ids); encode without adding special tokens (the template adds them); truncate both to
//! `max_len` tokens keeping the start; mask labels before `len(prompt ids)`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::EvalError;
use super::export::IGNORE_INDEX;
use super::template::{ChatTemplate, CivilDate, Conversation, Isolation, Message, render};
use crate::text::python_strip;

/// The largest `tokenizer.json` read.
const TOKENIZER_BYTES_MAX: u64 = 128 * 1024 * 1024;
/// The largest `tokenizer_config.json` or template file read.
const CONFIG_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// The most a tokenizer's normalizers may multiply a text's length by. Real ones stay within
/// 18 (NFKC's longest expansion); a chain of replacements that doubles a text ten times would
/// take the worker's memory before it took its time limit.
const NORMALIZER_GROWTH_MAX: f64 = 64.0;
/// The most bytes a tokenizer's normalizers may add to any text (a prepended marker).
const NORMALIZER_ADDED_BYTES_MAX: f64 = 64.0 * 1024.0;

/// The special tokens Hugging Face passes to templates.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// The system prompt of the successor's reasoning tasks (F v3.1.0,
/// finetune/datasets/hugging_face/hugging_face_loader.py L659 and L865).
pub const SUCCESSOR_SYSTEM_PROMPT: &str = "You are a reflective AI capable of using extended \
    chains of thought to consider the problem thoroughly and deliberate through systematic \
    reasoning to arrive at a correct solution before answering. Enclose your internal monologue \
    in <think> ... </think> tags, then provide your final answer in the format that the user \
    requests.";

/// A tokenizer directory: `tokenizer.json`, `tokenizer_config.json`, maybe
/// `chat_template.jinja` and `special_tokens_map.json`.
pub struct TokenizerFiles {
    tokenizer: Tokenizer,
    /// The chat template with its special tokens.
    pub template: ChatTemplate,
}

impl std::fmt::Debug for TokenizerFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizerFiles")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

/// One sample, ready for the model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Prepared {
    /// Token ids of the whole conversation (truncated).
    pub ids: Vec<i64>,
    /// Length of the prompt's ids (truncated): labels before it are masked.
    pub prompt_len: usize,
}

impl Prepared {
    /// The labels: the ids with the prompt masked.
    pub fn labels(&self) -> Vec<i64> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if i < self.prompt_len {
                    IGNORE_INDEX
                } else {
                    *id
                }
            })
            .collect()
    }

    /// Whether anything is left to predict (N gets NaN otherwise; we report +infinity).
    pub fn has_targets(&self) -> bool {
        self.ids.len() > self.prompt_len.max(1)
    }
}

fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, EvalError> {
    use crate::bounded::{BoundedError, read_regular};
    match read_regular(path, limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(BoundedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(BoundedError::Io(source)) => Err(EvalError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(refused) => Err(EvalError::Tokenizer(format!(
            "{}: {refused}",
            path.display()
        ))),
    }
}

/// A special token's text: a string, or an added-token object with `content`.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(object) => object
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn choose_template(value: &Value, path: &Path) -> Result<Option<String>, EvalError> {
    match value {
        Value::Null => Ok(None),
        Value::String(source) => Ok(Some(source.clone())),
        // A list of named templates: transformers makes it a dict (`{t["name"]: t["template"]}`,
        // so an entry without either fails to load and a repeated name keeps its last
        // template) and uses the one called "default".
        Value::Array(named) => {
            let mut default = None;
            for (index, entry) in named.iter().enumerate() {
                let (Some(Value::String(name)), Some(Value::String(template))) =
                    (entry.get("name"), entry.get("template"))
                else {
                    return Err(EvalError::Tokenizer(format!(
                        "{}: chat template {index} of the list has no string \"name\" and \
                         \"template\"",
                        path.display()
                    )));
                };
                if name == "default" {
                    default = Some(template.clone());
                }
            }
            default.map(Some).ok_or_else(|| {
                EvalError::Tokenizer(format!(
                    "{} lists chat templates but none is named \"default\"",
                    path.display()
                ))
            })
        }
        _ => Err(EvalError::Tokenizer(format!(
            "{}: chat_template is neither a string nor a list",
            path.display()
        ))),
    }
}

/// How long a normalizer can make a text: at most `factor` n + `added_bytes` bytes for a text
/// of n bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Growth {
    factor: f64,
    added_bytes: f64,
}

impl Growth {
    const NONE: Growth = Growth {
        factor: 1.0,
        added_bytes: 0.0,
    };

    fn times(factor: f64) -> Self {
        Growth {
            factor: factor.max(1.0),
            added_bytes: 0.0,
        }
    }

    /// `self`, then `next`.
    fn then(self, next: Growth) -> Growth {
        Growth {
            factor: self.factor * next.factor,
            added_bytes: self.added_bytes * next.factor + next.added_bytes,
        }
    }
}

/// A bound on how much the normalizer `config` (as tokenizers serialises it) can lengthen a
/// text, read off its configuration before it ever runs: replacements multiply by their
/// content's length over the shortest match (a regex may match one byte, or none, between
/// every two), Unicode normal forms by their longest expansion, a precompiled character map by
/// its longest replacement.
fn normalizer_growth(config: &Value) -> Result<Growth, String> {
    let text_bytes = |value: Option<&Value>| value.and_then(Value::as_str).map_or(0, str::len);
    let kind = config.get("type").and_then(Value::as_str).unwrap_or("");
    Ok(match kind {
        "Sequence" => {
            let mut growth = Growth::NONE;
            for normalizer in config
                .get("normalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                growth = growth.then(normalizer_growth(normalizer)?);
            }
            growth
        }
        "Replace" => {
            let content = text_bytes(config.get("content"));
            let pattern = config.get("pattern");
            #[allow(clippy::cast_precision_loss)] // lengths far below 2^52
            match pattern
                .and_then(|p| p.get("String"))
                .and_then(Value::as_str)
            {
                Some(literal) if !literal.is_empty() => {
                    Growth::times(content as f64 / literal.len() as f64)
                }
                // A regex (or an empty literal) may match an empty string between every two
                // bytes: each byte may gain the whole content.
                _ => Growth::times(1.0 + content as f64),
            }
        }
        "Prepend" => Growth {
            factor: 1.0,
            #[allow(clippy::cast_precision_loss)]
            added_bytes: text_bytes(config.get("prepend")) as f64,
        },
        "NFKC" | "NFKD" => Growth::times(18.0),
        "NFC" | "NFD" | "Lowercase" | "BertNormalizer" => Growth::times(3.0),
        "ByteLevel" => Growth::times(2.0),
        "Strip" | "StripAccents" => Growth::NONE,
        "Precompiled" => Growth::times(precompiled_growth(
            config.get("precompiled_charsmap").and_then(Value::as_str),
        )?),
        other => return Err(format!("an unknown normalizer {other:?}")),
    })
}

/// The longest replacement of a SentencePiece precompiled character map (a little-endian u32
/// trie size, the trie, then the replacements, each ending in a zero byte), over the one
/// byte it may replace.
fn precompiled_growth(charsmap: Option<&str>) -> Result<f64, String> {
    use base64::Engine as _;
    let Some(charsmap) = charsmap.filter(|c| !c.is_empty()) else {
        return Ok(1.0);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(charsmap)
        .map_err(|_| "the precompiled character map is not base64".to_owned())?;
    let (size, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| "the precompiled character map is truncated".to_owned())?;
    let trie_bytes = usize::try_from(u32::from_le_bytes(*size)).unwrap_or(usize::MAX);
    let replacements = rest
        .get(trie_bytes..)
        .ok_or_else(|| "the precompiled character map is truncated".to_owned())?;
    let longest = replacements
        .split(|b| *b == 0)
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)]
    Ok(longest as f64)
}

impl TokenizerFiles {
    /// Loads a tokenizer directory.
    pub fn load(dir: &Path) -> Result<Self, EvalError> {
        let tokenizer_path = dir.join("tokenizer.json");
        let bytes = read_bounded(&tokenizer_path, TOKENIZER_BYTES_MAX)?.ok_or_else(|| {
            EvalError::MissingFile {
                path: tokenizer_path.clone(),
                what: "tokenizer.json (a fast tokenizer)".into(),
            }
        })?;
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|e| EvalError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        if let Some(normalizer) = tokenizer.get_normalizer() {
            let config = serde_json::to_value(normalizer)
                .map_err(|e| EvalError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
            let growth = normalizer_growth(&config).map_err(|why| {
                EvalError::Tokenizer(format!("{}: {why}", tokenizer_path.display()))
            })?;
            if growth.factor > NORMALIZER_GROWTH_MAX
                || growth.added_bytes > NORMALIZER_ADDED_BYTES_MAX
            {
                return Err(EvalError::Tokenizer(format!(
                    "{}: the normalizers can make a text of n bytes {:.0} n + {:.0} bytes long \
                     (at most {NORMALIZER_GROWTH_MAX} n + {NORMALIZER_ADDED_BYTES_MAX})",
                    tokenizer_path.display(),
                    growth.factor.min(1e18),
                    growth.added_bytes.min(1e18)
                )));
            }
        }
        // The call decides truncation (and never pads), as transformers' apply_chat_template.
        tokenizer
            .with_truncation(None)
            .map_err(|e| EvalError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);

        let config_path = dir.join("tokenizer_config.json");
        let config: Value = match read_bounded(&config_path, CONFIG_BYTES_MAX)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EvalError::Tokenizer(format!("{}: {e}", config_path.display())))?,
            None => Value::Object(serde_json::Map::new()),
        };
        let map_path = dir.join("special_tokens_map.json");
        let map: Value = match read_bounded(&map_path, CONFIG_BYTES_MAX)? {
            Some(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            None => Value::Null,
        };
        let mut special_tokens = BTreeMap::new();
        for key in SPECIAL_TOKEN_KEYS {
            let value = config
                .get(key)
                .and_then(token_text)
                .or_else(|| map.get(key).and_then(token_text));
            if let Some(text) = value {
                special_tokens.insert(key.to_owned(), text);
            }
        }
        // Newer repositories keep the template in its own file, which takes precedence.
        let jinja_path = dir.join("chat_template.jinja");
        let source = match read_bounded(&jinja_path, CONFIG_BYTES_MAX)? {
            Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
                EvalError::Tokenizer(format!("{} is not UTF-8", jinja_path.display()))
            })?),
            None => choose_template(
                config.get("chat_template").unwrap_or(&Value::Null),
                &config_path,
            )?,
        };
        let source = source.ok_or_else(|| {
            EvalError::Tokenizer(format!(
                "{} has no chat template (tokenizer_config.json chat_template or chat_template.jinja)",
                dir.display()
            ))
        })?;
        Ok(Self {
            tokenizer,
            template: ChatTemplate {
                source,
                special_tokens,
            },
        })
    }

    /// The tokenizer's vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Encodes text without adding special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, EvalError> {
        self.encode_ids(text, false)
    }

    fn encode_ids(&self, text: &str, special_tokens: bool) -> Result<Vec<i64>, EvalError> {
        let encoding = self
            .tokenizer
            .encode(text, special_tokens)
            .map_err(|e| EvalError::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(encoding.get_ids().iter().map(|id| i64::from(*id)).collect())
    }

    /// Encodes text as the tokenizer's `encode` does by default, with the special tokens its
    /// post-processor adds (the successor's `tokenizer.encode(text, truncation=False)`).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<i64>, EvalError> {
        self.encode_ids(text, true)
    }

    /// Prepares `(question, reference)` pairs in the successor's reference-loss form (F's
    /// reasoning loaders, hugging_face_loader.py L645-695): the context is the chat template
    /// over [`SUCCESSOR_SYSTEM_PROMPT`] and the question with the generation prompt, the
    /// reference (already formatted by the data path) is encoded apart, both with the
    /// tokenizer's special tokens and never truncated; the loss is over the reference's
    /// positions only. A template error fails the whole batch.
    pub fn prepare_reference(
        &self,
        samples: &[(String, String)],
        date: CivilDate,
        isolation: &Isolation,
    ) -> Result<Vec<Prepared>, EvalError> {
        let conversations: Vec<Conversation> = samples
            .iter()
            .map(|(question, _)| Conversation {
                messages: vec![
                    Message {
                        role: "system".into(),
                        content: SUCCESSOR_SYSTEM_PROMPT.into(),
                    },
                    Message {
                        role: "user".into(),
                        content: question.clone(),
                    },
                ],
                add_generation_prompt: true,
            })
            .collect();
        let rendered = render(&self.template, &conversations, date, isolation)?;
        rendered
            .iter()
            .zip(samples)
            .map(|(context, (_, reference))| {
                let mut ids = self.encode_with_special_tokens(context)?;
                let prompt_len = ids.len();
                ids.extend(self.encode_with_special_tokens(reference)?);
                Ok(Prepared { ids, prompt_len })
            })
            .collect()
    }

    /// Prepares every sample. A template error fails the whole batch, as in N.
    pub fn prepare(
        &self,
        samples: &[(String, String)],
        max_len: usize,
        date: CivilDate,
        isolation: &Isolation,
    ) -> Result<Vec<Prepared>, EvalError> {
        let mut conversations = Vec::with_capacity(samples.len() * 2);
        for (prompt, response) in samples {
            let user = Message {
                role: "user".into(),
                content: python_strip(prompt).to_owned(),
            };
            let assistant = Message {
                role: "assistant".into(),
                content: python_strip(response).to_owned(),
            };
            conversations.push(Conversation {
                messages: vec![user.clone()],
                add_generation_prompt: true,
            });
            conversations.push(Conversation {
                messages: vec![user, assistant],
                add_generation_prompt: false,
            });
        }
        let rendered = render(&self.template, &conversations, date, isolation)?;
        rendered
            .chunks(2)
            .map(|pair| {
                let [prompt, full] = pair else {
                    return Err(EvalError::Template(
                        "the renderer lost a conversation".into(),
                    ));
                };
                let mut prompt_ids = self.encode(prompt)?;
                let mut ids = self.encode(full)?;
                prompt_ids.truncate(max_len);
                ids.truncate(max_len);
                Ok(Prepared {
                    ids,
                    prompt_len: prompt_ids.len(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postmortem (hostile-input round): a list with two templates named "default" used the
    /// first, where transformers' dict keeps the last, so we rendered a one-token template N
    /// never sees.
    #[test]
    fn a_template_list_keeps_the_last_default_as_transformers_does() {
        let path = Path::new("tokenizer_config.json");
        let list = serde_json::json!([
            {"name": "default", "template": "first"},
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "last"},
        ]);
        assert_eq!(
            choose_template(&list, path).unwrap().as_deref(),
            Some("last")
        );
        let unnamed = serde_json::json!([{"template": "x"}, {"name": "default", "template": "y"}]);
        assert!(
            choose_template(&unnamed, path)
                .unwrap_err()
                .to_string()
                .contains("no string")
        );
        let no_default = serde_json::json!([{"name": "tool_use", "template": "tools"}]);
        assert!(choose_template(&no_default, path).is_err());
    }

    /// Postmortem (issue 33, class 11): a chain of replacements that doubled a text at each
    /// link made tokenising take the worker's whole memory and a minute before the refusal.
    /// The normalizers' growth is read off their configuration, and such a tokenizer is
    /// refused before it runs.
    #[test]
    fn normalizer_growth_is_bounded_before_it_runs() {
        let doubling =
            serde_json::json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aa"});
        let chain =
            serde_json::json!({"type": "Sequence", "normalizers": vec![doubling.clone(); 10]});
        assert_eq!(normalizer_growth(&chain).unwrap().factor, 1024.0);
        let gemma = serde_json::json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u{2581}"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
        let growth = normalizer_growth(&gemma).unwrap();
        // The marker is prepended first, so the replacement may lengthen it too.
        assert_eq!((growth.factor, growth.added_bytes), (3.0, 9.0));
        let regex =
            serde_json::json!({"type": "Replace", "pattern": {"Regex": ""}, "content": "xyz"});
        assert_eq!(normalizer_growth(&regex).unwrap().factor, 4.0);
        assert!(normalizer_growth(&serde_json::json!({"type": "Nope"})).is_err());
    }

    #[test]
    fn labels_mask_the_prompt() {
        let prepared = Prepared {
            ids: vec![5, 6, 7, 8],
            prompt_len: 2,
        };
        assert_eq!(prepared.labels(), vec![-100, -100, 7, 8]);
        assert!(prepared.has_targets());
        let all_prompt = Prepared {
            ids: vec![5, 6],
            prompt_len: 2,
        };
        assert!(!all_prompt.has_targets());
    }
}
