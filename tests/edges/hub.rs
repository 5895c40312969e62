//! The hub edge against a real Hugging Face-compatible server: olah 0.5.4, installed by this
//! harness with pip, serving local git repositories offline on a free port, stopped by pid.
//! Under `CI=true` a missing pip or olah is a failure; elsewhere the tests skip with a message.

#![cfg(feature = "hub")]

use super::olah;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use olah::{Server, free_port, git_repo, olah};

use validator::hashing::{hash_of_bytes, hash_of_file_hashes, hash_of_two_strings};
use validator::hub::{Fetched, Hub, HubError, HubOptions};
use validator::machine::event::RejectionCode;
use validator::machine::model_id::{HashKind, ModelId};
use validator::machine::params::ModelIdFormat;

const HOTKEY: &str = "5HotkeyAliceAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER_HOTKEY: &str = "5HotkeyBobBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/models/llama-f32")
            .join(name),
    )
    .unwrap()
}

/// The files of a small model repository, and the plain hash of what a validator fetches
/// (everything but README.md and .gitattributes, in N's walk order).
fn model_files() -> (Vec<(&'static str, Vec<u8>)>, String) {
    let files = vec![
        ("config.json", fixture("config.json")),
        ("model.safetensors", fixture("model.safetensors")),
        ("tokenizer.json", fixture("tokenizer.json")),
        ("tokenizer_config.json", fixture("tokenizer_config.json")),
        ("generation_config.json", fixture("generation_config.json")),
        ("README.md", b"# a model\n".to_vec()),
        (".gitattributes", b"*.safetensors filter=lfs\n".to_vec()),
    ];
    let hashed = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ];
    let hashes: Vec<String> = hashed
        .iter()
        .map(|name| hash_of_bytes(&files.iter().find(|(n, _)| n == name).unwrap().1))
        .collect();
    (
        files,
        hash_of_file_hashes(hashes.iter().map(String::as_str)),
    )
}

fn model_id(org: &str, name: &str, commit: &str, hash: &str) -> ModelId {
    ModelId::parse(
        &format!("{org}:{name}:{commit}:{hash}:l3"),
        ModelIdFormat::Original,
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn hub(endpoint: &str, cache: &Path) -> Hub {
    let mut options = HubOptions::new(cache.to_owned());
    options.endpoint = Some(endpoint.to_owned());
    options.request_timeout = Duration::from_secs(10);
    Hub::new(options).unwrap()
}

fn snapshot_dirs(cache: &Path) -> Vec<PathBuf> {
    validator::hub::cache::scan(cache)
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect()
}

#[test]
fn good_mismatched_oversize_and_missing_models() {
    let Some(cli) = olah() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mirror = scratch.path().join("mirror");
    let (files, plain) = model_files();
    let commit = git_repo(&mirror, "alice", "llama", &files, &[]);
    let mut big_files = files.clone();
    big_files.push(("big.bin", vec![7u8; 3 << 20]));
    let big_commit = git_repo(&mirror, "bob", "big", &big_files, &[]);
    let server = Server::start(&cli, &mirror, scratch.path(), free_port());
    let cache = scratch.path().join("cache");
    let hub = hub(&server.endpoint(), &cache);
    let runtime = runtime();

    // The plain hash.
    let verdict = runtime
        .block_on(hub.fetch(
            HOTKEY,
            &model_id("alice", "llama", &commit, &plain),
            1 << 30,
        ))
        .unwrap();
    let Fetched::Verified(verified) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(verified.hash_kind, HashKind::Plain);
    assert!(!verified.files.contains(&"README.md".to_owned()));
    let on_disk = validator::dirhash::hash_of_directory(&verified.dir, None).unwrap();
    assert_eq!(
        on_disk.plain, plain,
        "the cached snapshot hashes as committed"
    );
    assert!(verified.bytes_downloaded > 0);
    // Fetching again uses the cache.
    let again = runtime
        .block_on(hub.fetch(
            HOTKEY,
            &model_id("alice", "llama", &commit, &plain),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(again, Fetched::Verified(ref v) if v.bytes_downloaded == 0),
        "{again:?}"
    );

    // The hotkey-salted hash, for another miner.
    let salted = hash_of_two_strings(&plain, OTHER_HOTKEY);
    let verdict = runtime
        .block_on(hub.fetch(
            OTHER_HOTKEY,
            &model_id("alice", "llama", &commit, &salted),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(verdict, Fetched::Verified(ref v) if v.hash_kind == HashKind::Salted),
        "{verdict:?}"
    );

    // A hash that matches neither is a recorded rejection, and nothing stays in the cache.
    let wrong = hash_of_bytes(b"not this model");
    let before = snapshot_dirs(&cache).len();
    let verdict = runtime
        .block_on(hub.fetch(
            "5HotkeyCarol",
            &model_id("alice", "llama", &commit, &wrong),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(verdict, Fetched::Rejected { code: RejectionCode::HashMismatch, ref detail } if detail.contains(&plain)),
        "{verdict:?}"
    );
    assert_eq!(snapshot_dirs(&cache).len(), before);

    // Over the size cap (every repo file counts): refused before any file is fetched.
    let log_before = std::fs::read_to_string(scratch.path().join("olah.log")).unwrap();
    let verdict = runtime
        .block_on(hub.fetch(
            "5HotkeyDave",
            &model_id("bob", "big", &big_commit, &plain),
            2 << 20,
        ))
        .unwrap();
    assert!(
        matches!(
            verdict,
            Fetched::Rejected {
                code: RejectionCode::RepoTooLarge,
                ..
            }
        ),
        "{verdict:?}"
    );
    let log_after = std::fs::read_to_string(scratch.path().join("olah.log")).unwrap();
    let new_requests = log_after.get(log_before.len()..).unwrap_or("");
    assert!(
        !new_requests.contains("/resolve/"),
        "a file was requested:\n{new_requests}"
    );
    assert!(!cache.join("models/5HotkeyDave").exists());

    // A revision that does not exist, and a repository that does not.
    let missing = "0123456789abcdef0123456789abcdef01234567";
    let verdict = runtime
        .block_on(hub.fetch(
            "5HotkeyErin",
            &model_id("alice", "llama", missing, &plain),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(
            verdict,
            Fetched::Rejected {
                code: RejectionCode::NotFound,
                ..
            }
        ),
        "{verdict:?}"
    );
    let verdict = runtime
        .block_on(hub.fetch(
            "5HotkeyErin",
            &model_id("alice", "gone", &commit, &plain),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(
            verdict,
            Fetched::Rejected {
                code: RejectionCode::NotFound,
                ..
            }
        ),
        "{verdict:?}"
    );

    // Too many files.
    let mut options = HubOptions::new(scratch.path().join("cache-small"));
    options.endpoint = Some(server.endpoint());
    options.max_files = 3;
    let strict = Hub::new(options).unwrap();
    let verdict = runtime
        .block_on(strict.fetch(
            HOTKEY,
            &model_id("alice", "llama", &commit, &plain),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(verdict, Fetched::Rejected { code: RejectionCode::MalformedRepo, ref detail } if detail.contains("more than 3 files")),
        "{verdict:?}"
    );
    server.stop();
}

#[test]
fn hostile_names_and_links_stay_inside_the_cache() {
    let Some(cli) = olah() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mirror = scratch.path().join("mirror");
    let (files, plain) = model_files();
    let mut hostile = files.clone();
    hostile.push(("..\\..\\escape.json", b"{}".to_vec()));
    let hostile_commit = git_repo(&mirror, "mallory", "names", &hostile, &[]);
    // A repository whose tokenizer.json is a link to /etc/passwd: the hub serves the link's
    // text, and we write it as a plain file.
    let linked: Vec<(&str, Vec<u8>)> = files
        .iter()
        .filter(|(n, _)| *n != "tokenizer.json")
        .cloned()
        .collect();
    let linked_commit = git_repo(
        &mirror,
        "mallory",
        "links",
        &linked,
        &[("tokenizer.json", "/etc/passwd")],
    );
    let server = Server::start(&cli, &mirror, scratch.path(), free_port());
    let cache = scratch.path().join("cache");
    let hub = hub(&server.endpoint(), &cache);
    let runtime = runtime();

    let verdict = runtime
        .block_on(hub.fetch(
            HOTKEY,
            &model_id("mallory", "names", &hostile_commit, &plain),
            1 << 30,
        ))
        .unwrap();
    assert!(
        matches!(verdict, Fetched::Rejected { code: RejectionCode::MalformedRepo, ref detail } if detail.contains("backslash")),
        "{verdict:?}"
    );
    assert!(snapshot_dirs(&cache).is_empty());
    assert!(!scratch.path().join("escape.json").exists());

    let hashes: Vec<String> = ["config.json", "generation_config.json", "model.safetensors"]
        .iter()
        .map(|n| hash_of_bytes(&files.iter().find(|(f, _)| f == n).unwrap().1))
        .chain([hash_of_bytes(b"/etc/passwd")])
        .chain(std::iter::once(hash_of_bytes(&fixture(
            "tokenizer_config.json",
        ))))
        .collect();
    let linked_hash = hash_of_file_hashes(hashes.iter().map(String::as_str));
    let verdict = runtime
        .block_on(hub.fetch(
            HOTKEY,
            &model_id("mallory", "links", &linked_commit, &linked_hash),
            1 << 30,
        ))
        .unwrap();
    let Fetched::Verified(verified) = verdict else {
        panic!("{verdict:?}")
    };
    let tokenizer = verified.dir.join("tokenizer.json");
    assert!(
        std::fs::symlink_metadata(&tokenizer)
            .unwrap()
            .file_type()
            .is_file()
    );
    assert_eq!(std::fs::read(&tokenizer).unwrap(), b"/etc/passwd");
    server.stop();
}

#[test]
fn a_server_stopped_mid_download_is_a_clear_error_then_the_fetch_resumes() {
    let Some(cli) = olah() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mirror = scratch.path().join("mirror");
    // Larger than what loopback sockets can hold in flight (receive buffers autotune up to
    // 32 MiB here, send buffers 4 MiB): a smaller file may be wholly buffered before the
    // server dies, and the download then completes.
    let weights: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let files = vec![
        ("config.json", fixture("config.json")),
        ("model.safetensors", weights.clone()),
        ("tokenizer.json", fixture("tokenizer.json")),
    ];
    let hashes: Vec<String> = files
        .iter()
        .map(|(_, bytes)| hash_of_bytes(bytes))
        .collect();
    let plain = hash_of_file_hashes(hashes.iter().map(String::as_str));
    let commit = git_repo(&mirror, "carol", "slow", &files, &[]);
    let port = free_port();
    let server = Server::start(&cli, &mirror, scratch.path(), port);
    let cache = scratch.path().join("cache");
    let model = model_id("carol", "slow", &commit, &plain);

    let mut options = HubOptions::new(cache.clone());
    options.endpoint = Some(server.endpoint());
    options.request_timeout = Duration::from_secs(5);
    options.bytes_per_second = Some(1 << 20);
    let slow = Hub::new(options).unwrap();
    let staged = cache.join(format!(
        "models/{HOTKEY}/models--carol--slow/snapshots/{commit}.partial/model.safetensors"
    ));
    let fetch = {
        let model = model.clone();
        std::thread::spawn(move || runtime().block_on(slow.fetch(HOTKEY, &model, 1 << 30)))
    };
    let started = Instant::now();
    while std::fs::metadata(&staged).map_or(0, |m| m.len()) < (1 << 20) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the download never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let result = fetch.join().unwrap();
    let Err(HubError::Unavailable(why)) = result else {
        panic!("expected an unavailable hub, got {result:?}")
    };
    assert!(!why.is_empty());
    let partial = std::fs::metadata(&staged).unwrap().len();
    assert!(partial > 0 && partial < weights.len() as u64, "{partial}");

    let server = Server::start(&cli, &mirror, scratch.path(), port);
    let verdict = runtime()
        .block_on(hub(&server.endpoint(), &cache).fetch(HOTKEY, &model, 1 << 30))
        .unwrap();
    let Fetched::Verified(verified) = verdict else {
        panic!("{verdict:?}")
    };
    assert_eq!(
        std::fs::read(verified.dir.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(!staged.exists());
    server.stop();
}

/// A hand-written server that lists a file as 10 bytes and then serves 1 MiB of it.
fn lying_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let started = Instant::now();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buffer[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let line = request.lines().next().unwrap_or("").to_owned();
            let (status, body): (&str, Vec<u8>) = if line.contains("/tree/") {
                let listing = r#"[{"type":"file","oid":"a","size":10,"path":"config.json"},{"type":"file","oid":"b","size":10,"path":"model.safetensors"}]"#;
                ("200 OK", listing.as_bytes().to_vec())
            } else if line.contains("/resolve/") {
                ("200 OK", vec![b'x'; 1 << 20])
            } else {
                ("404 Not Found", b"{}".to_vec())
            };
            let head = line.starts_with("HEAD");
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\netag: \"x\"\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            if !head {
                let _ = stream.write_all(&body);
            }
            if started.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
    });
    (port, handle)
}

#[test]
fn a_file_larger_than_listed_is_refused() {
    let (port, _server) = lying_server();
    let scratch = tempfile::tempdir().unwrap();
    let hub = hub(&format!("http://127.0.0.1:{port}"), scratch.path());
    let model = model_id(
        "liar",
        "model",
        "0123456789abcdef0123456789abcdef01234567",
        &hash_of_bytes(b"x"),
    );
    let verdict = runtime()
        .block_on(hub.fetch(HOTKEY, &model, 1 << 30))
        .unwrap();
    assert!(
        matches!(verdict, Fetched::Rejected { code: RejectionCode::MalformedRepo, ref detail } if detail.contains("larger than")),
        "{verdict:?}"
    );
    assert!(snapshot_dirs(scratch.path()).is_empty());
}

/// The competition's tokenizer through the hub: only its tokenizer files, at the commit given,
/// hashing as the files committed; a branch, a missing commit or a repository without a
/// tokenizer is refused with the reason.
#[test]
fn a_tokenizer_repository_is_fetched_at_its_commit() {
    let Some(cli) = olah() else { return };
    let scratch = tempfile::tempdir().unwrap();
    let mirror = scratch.path().join("mirror");
    let files = vec![
        ("tokenizer.json", fixture("tokenizer.json")),
        ("tokenizer_config.json", fixture("tokenizer_config.json")),
        ("README.md", b"# a tokenizer\n".to_vec()),
        ("onnx/encoder.onnx", vec![1u8; 4096]),
    ];
    let commit = git_repo(&mirror, "xenova", "gpt-4", &files, &[]);
    let no_tokenizer = git_repo(
        &mirror,
        "xenova",
        "empty",
        &[("README.md", b"# nothing\n".to_vec())],
        &[],
    );
    let server = Server::start(&cli, &mirror, scratch.path(), free_port());
    let cache = scratch.path().join("tokenizers");
    let hub = hub(&server.endpoint(), &scratch.path().join("models"));
    let runtime = runtime();

    let dir = runtime
        .block_on(hub.tokenizer_files("xenova/gpt-4", &commit, &cache))
        .unwrap()
        .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["tokenizer.json", "tokenizer_config.json"]);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llama-f32");
    let expected = std::fs::read(fixtures.join("tokenizer.json")).unwrap();
    assert_eq!(std::fs::read(dir.join("tokenizer.json")).unwrap(), expected);
    // The same files as the fixture's, so the same hash.
    let fetched_hash = validator::dirhash::hash_of_tokenizer_files(&dir);
    let mut copy = scratch.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join(name), copy.join(name)).unwrap();
    }
    assert_eq!(
        fetched_hash,
        validator::dirhash::hash_of_tokenizer_files(&copy)
    );
    // Fetched again, it is read from the cache.
    copy = runtime
        .block_on(hub.tokenizer_files("xenova/gpt-4", &commit, &cache))
        .unwrap()
        .unwrap();
    assert_eq!(copy, dir);

    let refused = |repo: &str, revision: &str| {
        runtime
            .block_on(hub.tokenizer_files(repo, revision, &cache))
            .unwrap()
            .unwrap_err()
    };
    assert!(refused("xenova/gpt-4", "main").contains("not a commit"));
    assert!(refused("xenova", &commit).contains("not OWNER/NAME"));
    assert!(refused("xenova/empty", &no_tokenizer).contains("no tokenizer.json"));
    let missing = refused("xenova/gpt-4", &"0".repeat(40));
    assert!(!missing.is_empty());
}
