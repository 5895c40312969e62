//! The embedded default (`validator run --demo`): a recorded chain of two competitions and
//! seven miners, the fixture models as a local hub, the competitions' tokenizers and a data
//! file, all compiled into the binary (`fixtures/demo/README.md` tells the story) and written
//! into a directory of the caller's choosing, so the demo runs anywhere, offline.

use std::path::{Path, PathBuf};

/// A file compiled into the binary, by its path under `fixtures/`.
struct Asset {
    path: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal) => {
        Asset {
            path: $path,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/", $path)),
        }
    };
}

const LLAMA_F32: &[Asset] = &[
    asset!("models/llama-f32/chat_template.jinja"),
    asset!("models/llama-f32/config.json"),
    asset!("models/llama-f32/generation_config.json"),
    asset!("models/llama-f32/model.safetensors"),
    asset!("models/llama-f32/tokenizer.json"),
    asset!("models/llama-f32/tokenizer_config.json"),
];

const LLAMA_BF16: &[Asset] = &[
    asset!("models/llama-bf16/chat_template.jinja"),
    asset!("models/llama-bf16/config.json"),
    asset!("models/llama-bf16/generation_config.json"),
    asset!("models/llama-bf16/model-00001-of-00004.safetensors"),
    asset!("models/llama-bf16/model-00002-of-00004.safetensors"),
    asset!("models/llama-bf16/model-00003-of-00004.safetensors"),
    asset!("models/llama-bf16/model-00004-of-00004.safetensors"),
    asset!("models/llama-bf16/model.safetensors.index.json"),
    asset!("models/llama-bf16/tokenizer.json"),
    asset!("models/llama-bf16/tokenizer_config.json"),
];

const STABLELM_F32: &[Asset] = &[
    asset!("models/stablelm-f32/chat_template.jinja"),
    asset!("models/stablelm-f32/config.json"),
    asset!("models/stablelm-f32/generation_config.json"),
    asset!("models/stablelm-f32/model.safetensors"),
    asset!("models/stablelm-f32/tokenizer.json"),
    asset!("models/stablelm-f32/tokenizer_config.json"),
];

const STABLELM_BF16: &[Asset] = &[
    asset!("models/stablelm-bf16/chat_template.jinja"),
    asset!("models/stablelm-bf16/config.json"),
    asset!("models/stablelm-bf16/generation_config.json"),
    asset!("models/stablelm-bf16/model.safetensors"),
    asset!("models/stablelm-bf16/tokenizer.json"),
    asset!("models/stablelm-bf16/tokenizer_config.json"),
];

const TOKENIZER_LLAMA3: &[Asset] = &[
    asset!("models/tokenizer-llama3/chat_template.jinja"),
    asset!("models/tokenizer-llama3/tokenizer.json"),
    asset!("models/tokenizer-llama3/tokenizer_config.json"),
];

const TOKENIZER_ZEPHYR: &[Asset] = &[
    asset!("models/tokenizer-zephyr/chat_template.jinja"),
    asset!("models/tokenizer-zephyr/tokenizer.json"),
    asset!("models/tokenizer-zephyr/tokenizer_config.json"),
];

const SNAPSHOT: Asset = asset!("demo/snapshot.json");
const DATA: Asset = asset!("demo/data.jsonl");

/// The hub's repositories: `demo/<name>` at `<commit>`, holding a fixture's files.
const REPOSITORIES: &[(&str, &str, &[Asset])] = &[
    (
        "llama-f32",
        "3062d9494295383df402efa01c8f6fc895fae3a1",
        LLAMA_F32,
    ),
    (
        "llama-bf16",
        "8ed0560ecf667e8c017d355e954b5a794f34c135",
        LLAMA_BF16,
    ),
    (
        "stablelm-f32",
        "f66db76c0cecba9949a5279849c95c87000db331",
        STABLELM_F32,
    ),
    (
        "stablelm-bf16",
        "0af687657bd4f745ecf50a51637357b807829031",
        STABLELM_BF16,
    ),
    (
        "llama-copy",
        "265226b86bb068ac38ba9e9319a35866b202d0e3",
        LLAMA_F32,
    ),
    (
        "stablelm-tuned",
        "53676b8cbebd85f7e2daa88d29560124e92c3a4c",
        STABLELM_F32,
    ),
    (
        "stablelm-zephyr",
        "84c2a6b43557bff027347cf98a1392a6c8ce121d",
        STABLELM_BF16,
    ),
];

/// Steps the demo runs: three of each competition.
pub const DEMO_STEPS: u64 = 6;

/// Where the demo's files were written.
#[derive(Debug, Clone)]
pub struct DemoFiles {
    /// The recorded chain.
    pub snapshot: PathBuf,
    /// The local hub (`local:DIR`).
    pub hub: PathBuf,
    /// The data file (`local:FILE`).
    pub data: PathBuf,
    /// The l3 competition's tokenizer.
    pub tokenizer_l3: PathBuf,
    /// The s1 competition's tokenizer.
    pub tokenizer_s1: PathBuf,
}

fn write_asset(dir: &Path, asset: &Asset) -> std::io::Result<PathBuf> {
    let name = Path::new(asset.path)
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", asset.path)))?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, asset.bytes)?;
    Ok(path)
}

/// Writes the demo's chain, hub, tokenizers and data under `dir`.
pub fn write_demo(dir: &Path) -> std::io::Result<DemoFiles> {
    let hub = dir.join("hub");
    for (name, commit, assets) in REPOSITORIES {
        let repository = hub.join("demo").join(name).join(commit);
        for asset in *assets {
            write_asset(&repository, asset)?;
        }
    }
    let tokenizers = dir.join("tokenizers");
    for asset in TOKENIZER_LLAMA3 {
        write_asset(&tokenizers.join("l3"), asset)?;
    }
    for asset in TOKENIZER_ZEPHYR {
        write_asset(&tokenizers.join("s1"), asset)?;
    }
    Ok(DemoFiles {
        snapshot: write_asset(dir, &SNAPSHOT)?,
        hub,
        data: write_asset(dir, &DATA)?,
        tokenizer_l3: tokenizers.join("l3"),
        tokenizer_s1: tokenizers.join("s1"),
    })
}
