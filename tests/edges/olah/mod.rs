//! Shared by the hub and data tests: olah 0.5.4 (a Hugging Face mirror), installed with pip
//! into a virtual environment under the target directory, serving local git repositories
//! offline on a free port, stopped by pid.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn skip_or_fail(why: &str) -> Option<PathBuf> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why} (CI=true: the tests against olah must run)");
    }
    eprintln!("skipping the tests against olah: {why}");
    None
}

/// `olah-cli`, installed once per target directory into its own virtual environment.
pub fn olah() -> Option<PathBuf> {
    static OLAH: OnceLock<Option<PathBuf>> = OnceLock::new();
    OLAH.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("olah-venv");
        let cli = venv.join("bin/olah-cli");
        if cli.is_file() {
            return Some(cli);
        }
        let created = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status();
        if !created.is_ok_and(|s| s.success()) {
            return skip_or_fail("python3 -m venv failed (is python3 installed?)");
        }
        let installed = Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "olah==0.5.4"])
            .status();
        match installed {
            Ok(status) if status.success() && cli.is_file() => Some(cli),
            Ok(status) => skip_or_fail(&format!("pip install olah==0.5.4 failed ({status})")),
            Err(e) => skip_or_fail(&format!("pip is not available ({e})")),
        }
    })
    .clone()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running olah over `mirror`, killed by pid when dropped.
pub struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    pub fn start(cli: &Path, mirror: &Path, dir: &Path, port: u16) -> Self {
        let config = dir.join("olah.toml");
        std::fs::write(
            &config,
            format!(
                "[basic]\nhost = \"127.0.0.1\"\nport = {port}\nmirrors-path = [\"{}\"]\nrepos-path = \"{}\"\n\n[accessibility]\noffline = true\n",
                mirror.display(),
                dir.join("olah-cache").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("olah.log")).unwrap();
        let child = Command::new(cli)
            .arg("-c")
            .arg(&config)
            .current_dir(dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self {
            child,
            port,
            dir: dir.to_owned(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.write_all(b"GET /api/whoami-v2 HTTP/1.0\r\n\r\n");
                let mut reply = [0u8; 12];
                if stream.read(&mut reply).is_ok_and(|n| n > 0) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.join("olah.log")).unwrap_or_default();
        panic!("olah did not start on port {}:\n{log}", self.port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A git repository `kind/org/name` (kind: models or datasets) in the mirror with `files`;
/// returns its commit.
pub fn git_repo_of(
    mirror: &Path,
    kind: &str,
    org: &str,
    name: &str,
    files: &[(&str, Vec<u8>)],
    links: &[(&str, &str)],
) -> String {
    let dir = mirror.join(kind).join(org).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (path, bytes) in files {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    for (path, target) in links {
        std::os::unix::fs::symlink(target, dir.join(path)).unwrap();
    }
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .args(args)
            .current_dir(&dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "model"]);
    git(&["rev-parse", "HEAD"]).trim().to_owned()
}

/// A model repository; returns its commit.
pub fn git_repo(
    mirror: &Path,
    org: &str,
    name: &str,
    files: &[(&str, Vec<u8>)],
    links: &[(&str, &str)],
) -> String {
    git_repo_of(mirror, "models", org, name, files, links)
}
