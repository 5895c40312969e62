//! Which repository files a validator fetches, and which names it refuses.
//!
//! N's directory hash covers the files that `from_pretrained` and `AutoTokenizer` pull into
//! the snapshot: the config, the safetensors (one file, or the index and its shards), the
//! generation config and the tokenizer files that exist. Which optional files a given
//! `transformers` version pulls varies, so the hash is checked against every subset of the
//! optional files present (see [`candidate_sets`]); the required ones are always in.

use std::collections::BTreeSet;

/// Files every evaluation needs.
pub const REQUIRED: [&str; 1] = ["config.json"];
/// The single-file weights.
pub const WEIGHTS_SINGLE: &str = "model.safetensors";
/// The sharded weights' index.
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
/// Files `transformers` fetches when they exist (tokenizer and generation files).
pub const OPTIONAL: [&str; 10] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
];
/// Files that are always hashed when present (the tokenizer every version fetches).
const ALWAYS_HASHED: [&str; 2] = ["tokenizer.json", "tokenizer_config.json"];

/// Why a repository path is refused.
pub fn hostile_path(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("an empty file name".into());
    }
    if path.len() > 1024 {
        return Some(format!("a {}-byte file name", path.len()));
    }
    if path.starts_with('/') {
        return Some(format!("an absolute path {path:?}"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return Some(format!(
            "a file name with a control character, backslash or colon: {path:?}"
        ));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some(format!(
            "a path with an empty, '.' or '..' component: {path:?}"
        ));
    }
    None
}

/// The files to fetch from a repository listing: the required ones, the weights, and the
/// optional files present. `Err` names what is missing.
pub fn selection(listing: &BTreeSet<String>) -> Result<Vec<String>, String> {
    let mut chosen: Vec<String> = Vec::new();
    for name in REQUIRED {
        if !listing.contains(name) {
            return Err(format!("the repository has no {name}"));
        }
        chosen.push(name.to_owned());
    }
    if listing.contains(WEIGHTS_SINGLE) {
        chosen.push(WEIGHTS_SINGLE.to_owned());
    } else if listing.contains(WEIGHTS_INDEX) {
        chosen.push(WEIGHTS_INDEX.to_owned());
    } else {
        return Err(format!(
            "the repository has neither {WEIGHTS_SINGLE} nor {WEIGHTS_INDEX}"
        ));
    }
    chosen.extend(
        OPTIONAL
            .iter()
            .filter(|name| listing.contains(**name))
            .map(|name| (*name).to_owned()),
    );
    Ok(chosen)
}

/// Shard file names of an index (`weight_map` values), each a plain name present in the
/// listing.
pub fn shards_of_index(index: &[u8], listing: &BTreeSet<String>) -> Result<Vec<String>, String> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| format!("{WEIGHTS_INDEX} is not a shard index: {e}"))?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if shards.len() > 4096 {
        return Err(format!("{WEIGHTS_INDEX} names {} shards", shards.len()));
    }
    for shard in &shards {
        if shard.contains('/') || hostile_path(shard).is_some() || !shard.ends_with(".safetensors")
        {
            return Err(format!(
                "{WEIGHTS_INDEX} names a shard {shard:?} that is not a plain .safetensors name"
            ));
        }
        if !listing.contains(shard) {
            return Err(format!(
                "{WEIGHTS_INDEX} names a shard {shard:?} the repository does not have"
            ));
        }
    }
    Ok(shards.into_iter().collect())
}

/// The sets of fetched files the committed hash may cover: everything fetched, then every
/// subset that drops some optional files (the tokenizer files every version fetches stay).
/// Largest sets first, so the most complete match wins.
pub fn candidate_sets(fetched: &[String]) -> Vec<Vec<String>> {
    let droppable: Vec<&String> = fetched
        .iter()
        .filter(|name| OPTIONAL.contains(&name.as_str()) && !ALWAYS_HASHED.contains(&name.as_str()))
        .collect();
    let count = droppable.len().min(12);
    let mut sets: Vec<Vec<String>> = (0u32..(1 << count))
        .map(|mask| {
            fetched
                .iter()
                .filter(|name| {
                    droppable
                        .iter()
                        .position(|d| d == name)
                        .is_none_or(|bit| mask & (1 << bit) == 0)
                })
                .cloned()
                .collect()
        })
        .collect();
    sets.sort_by_key(|set| std::cmp::Reverse(set.len()));
    sets
}

/// N's walk order over repository paths: in each directory its files sorted by name, then its
/// sub-directories sorted by name, depth first.
pub fn walk_sorted(paths: &[String]) -> Vec<String> {
    fn visit(prefix: &str, paths: &[&str], out: &mut Vec<String>) {
        let mut files: Vec<&str> = Vec::new();
        let mut directories: BTreeSet<&str> = BTreeSet::new();
        for path in paths {
            match path.split_once('/') {
                None => files.push(path),
                Some((directory, _)) => {
                    directories.insert(directory);
                }
            }
        }
        files.sort_unstable();
        for file in files {
            out.push(format!("{prefix}{file}"));
        }
        for directory in directories {
            let inner: Vec<&str> = paths
                .iter()
                .filter_map(|path| path.strip_prefix(directory)?.strip_prefix('/'))
                .collect();
            visit(&format!("{prefix}{directory}/"), &inner, out);
        }
    }
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(paths.len());
    visit("", &refs, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn hostile_names_are_named() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a\\b",
            "c:x",
            "a\nb",
        ] {
            assert!(hostile_path(bad).is_some(), "{bad:?}");
        }
        for good in [
            "config.json",
            "original/params.json",
            "tokenizer.model",
            "ünï.txt",
        ] {
            assert!(hostile_path(good).is_none(), "{good:?}");
        }
    }

    #[test]
    fn selection_takes_weights_and_present_tokenizer_files() {
        let listing = set(&[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "README.md",
            ".gitattributes",
        ]);
        assert_eq!(
            selection(&listing).unwrap(),
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
        assert!(
            selection(&set(&["config.json"]))
                .unwrap_err()
                .contains("neither")
        );
        assert!(
            selection(&set(&["model.safetensors"]))
                .unwrap_err()
                .contains("config.json")
        );
    }

    #[test]
    fn shard_indexes_are_checked() {
        let listing = set(&["a.safetensors", "b.safetensors"]);
        let good = br#"{"weight_map": {"x": "a.safetensors", "y": "b.safetensors", "z": "a.safetensors"}}"#;
        assert_eq!(
            shards_of_index(good, &listing).unwrap(),
            ["a.safetensors", "b.safetensors"]
        );
        let escape = br#"{"weight_map": {"x": "../a.safetensors"}}"#;
        assert!(shards_of_index(escape, &listing).is_err());
        let absent = br#"{"weight_map": {"x": "c.safetensors"}}"#;
        assert!(
            shards_of_index(absent, &listing)
                .unwrap_err()
                .contains("does not have")
        );
    }

    #[test]
    fn candidate_sets_keep_required_files() {
        let fetched: Vec<String> = [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "generation_config.json",
            "chat_template.jinja",
        ]
        .map(str::to_owned)
        .to_vec();
        let sets = candidate_sets(&fetched);
        assert_eq!(sets.len(), 4);
        assert_eq!(sets[0], fetched);
        assert!(
            sets.iter().all(|s| s.contains(&"tokenizer.json".to_owned())
                && s.contains(&"config.json".to_owned()))
        );
        assert_eq!(
            sets[3],
            ["config.json", "model.safetensors", "tokenizer.json"]
        );
    }

    #[test]
    fn walk_order_puts_files_before_directories() {
        let paths: Vec<String> = ["b/x", "a.txt", "b/c/y", "Z.txt", "a/z", "b/a"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            walk_sorted(&paths),
            ["Z.txt", "a.txt", "a/z", "b/a", "b/x", "b/c/y"]
        );
    }
}
