//! The successor's competition tokenizer in the form it is published (`Xenova/gpt-4`: cl100k_base
//! as a Hugging Face `tokenizer.json`, with a chat template), built here from the ranks the
//! `tiktoken-rs` crate ships and checked against tiktoken's own encodings through the
//! validator's tokenizer loader. The hub copy is fetched at a pinned revision in production;
//! this one lets the tests tokenize as the successor does without a network.

#![cfg(feature = "eval")]

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;
use serde_json::json;
use validator::eval::tokenize::TokenizerFiles;

/// tiktoken's cl100k_base pre-tokenization pattern, possessive quantifiers included, except
/// `\p{N}{1,3}+`: Oniguruma reads `{1,3}+` as "one or more runs of one to three digits", not
/// as a possessive interval, so the interval is written without it (a bounded run of digits
/// never backtracks into anything else the pattern could match).
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// cl100k_base's special tokens and their ids.
const SPECIALS: [(&str, u32); 5] = [
    ("<|endoftext|>", 100_257),
    ("<|fim_prefix|>", 100_258),
    ("<|fim_middle|>", 100_259),
    ("<|fim_suffix|>", 100_260),
    ("<|endofprompt|>", 100_276),
];

/// The ChatML template the fixture carries.
const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's byte-to-character map, which byte-level BPE vocabularies are written in.
fn byte_characters() -> [char; 256] {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for byte in 0..=255u32 {
        let code = if printable.contains(&byte) {
            byte
        } else {
            next += 1;
            next - 1
        };
        map[usize::try_from(byte).unwrap()] = char::from_u32(code).unwrap();
    }
    map
}

/// The two tokens a token of rank `rank` is merged from: byte-pair merging of its bytes with
/// every lower rank, until two parts are left.
fn merge_parts(bytes: &[u8], rank: u32, ranks: &HashMap<Vec<u8>, u32>) -> (Vec<u8>, Vec<u8>) {
    let mut parts: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
    while parts.len() > 2 {
        let best = (0..parts.len() - 1)
            .filter_map(|i| {
                let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
                ranks.get(&joined).filter(|r| **r < rank).map(|r| (*r, i))
            })
            .min()
            .expect("a token's bytes merge below its own rank");
        let right = parts.remove(best.1 + 1);
        parts[best.1].extend(right);
    }
    (parts[0].clone(), parts[1].clone())
}

/// Writes `tokenizer.json` and `tokenizer_config.json` for cl100k_base into `dir`.
pub fn write_cl100k(dir: &Path) {
    let bpe = tiktoken_rs::cl100k_base().unwrap();
    let characters = byte_characters();
    let text_of = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| characters[usize::from(*b)])
            .collect::<String>()
    };
    let mut ranks: HashMap<Vec<u8>, u32> = HashMap::new();
    for rank in 0..100_256u32 {
        ranks.insert(bpe.decode_bytes(&[rank]).unwrap(), rank);
    }
    let mut by_rank: Vec<(&Vec<u8>, u32)> = ranks.iter().map(|(b, r)| (b, *r)).collect();
    by_rank.sort_by_key(|(_, r)| *r);
    let mut vocab = serde_json::Map::new();
    let mut merges = Vec::new();
    for (bytes, rank) in &by_rank {
        vocab.insert(text_of(bytes), json!(rank));
        if bytes.len() > 1 {
            let (left, right) = merge_parts(bytes, *rank, &ranks);
            merges.push(json!([text_of(&left), text_of(&right)]));
        }
    }
    // The special tokens are in the model's vocabulary too, so they keep cl100k's ids (the
    // ranks leave gaps below and between them).
    for (content, id) in SPECIALS {
        vocab.insert(content.to_string(), json!(id));
    }
    let added: Vec<_> = SPECIALS
        .iter()
        .map(|(content, id)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": CL100K_PATTERN}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": true, "vocab": vocab, "merges": merges}
    });
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec(&tokenizer).unwrap(),
    )
    .unwrap();
    let config = json!({
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
        "chat_template": CHATML, "model_max_length": 8192,
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
}

fn loaded() -> &'static (TokenizerFiles, tiktoken_rs::CoreBPE) {
    static LOADED: std::sync::OnceLock<(TokenizerFiles, tiktoken_rs::CoreBPE)> =
        std::sync::OnceLock::new();
    LOADED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        write_cl100k(dir.path());
        (
            TokenizerFiles::load(dir.path()).unwrap(),
            tiktoken_rs::cl100k_base().unwrap(),
        )
    })
}

fn ids(tiktoken: &[u32]) -> Vec<i64> {
    tiktoken.iter().map(|id| i64::from(*id)).collect()
}

#[test]
fn the_fixture_encodes_as_tiktoken_does() {
    let (ours, tiktoken) = loaded();
    let texts = [
        "Hello, world! It's a test: don't, we'll, they're, I'M, YOU'VE.",
        "  leading and trailing spaces   ",
        "tabs\tand\nnewlines\r\n\r\n\n  mixed \n\t ",
        "numbers 1 12 123 1234 12345 3.14159 -42 1e10 0x1F",
        "café naïve Ünïcödé 中文字符 日本語 한국어 العربية हिन्दी 😀👍🏽 🇫🇷",
        "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }\n",
        "<think>\nStep 1: \\boxed{\\frac{1}{2}}\n</think> {\"output\": \"abc\"}",
        "\u{1c}\u{1f}\u{85}\u{a0}\u{2003}\u{3000} odd spaces",
        "",
        "a",
        "!!!???...,,,;;;:::---___===+++***",
    ];
    for text in texts {
        assert_eq!(
            ours.encode(text).unwrap(),
            ids(&tiktoken.encode_ordinary(text)),
            "{text:?}"
        );
    }
    // transformers' encode reads special tokens in the text as themselves.
    let special = "<|endoftext|> then <|fim_prefix|>x<|endofprompt|>";
    assert_eq!(
        ours.encode(special).unwrap(),
        ids(&tiktoken.encode_with_special_tokens(special))
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text: letters of every script, digits, punctuation, whitespace of every kind.
    #[test]
    fn any_text_encodes_as_tiktoken_does(text in "[a-zA-Z0-9 \t\n\r'.,!?{}()\\\\éü中文😀\u{a0}\u{2003}-]{0,80}") {
        let (ours, tiktoken) = loaded();
        prop_assert_eq!(ours.encode(&text).unwrap(), ids(&tiktoken.encode_ordinary(&text)));
    }
}
