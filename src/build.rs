//! Build script. With the `eval` feature it
//!
//! 1. compiles the vendored `src/eval/onnx.proto` into Rust types (prost + protox: no `protoc`);
//! 2. finds the ONNX Runtime library the evaluator loads at run time: `ORT_DYLIB_PATH` when set,
//!    otherwise `libonnxruntime.so.1.31.1` from the PyPI wheel, fetched with pip into
//!    `target/onnxruntime-1.31.1/`, checksum-verified and reused by later builds. Its path is
//!    compiled in as `VALIDATOR_ORT_DYLIB` (an `ORT_DYLIB_PATH` at run time still overrides it).
//!
//! Without pip the build still succeeds and says how to set `ORT_DYLIB_PATH` instead.

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    #[cfg(feature = "eval")]
    eval::build();
}

/// Everything the `eval` feature needs; absent otherwise, so `replay` builds without prost or
/// protox.
#[cfg(feature = "eval")]
mod eval {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const ORT_VERSION: &str = "1.31.1";
    const ORT_WHEEL: &str = "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl";
    const ORT_WHEEL_SHA256: &str =
        "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f";
    const ORT_LIBRARIES: [(&str, &str); 2] = [
        (
            "libonnxruntime.so.1.31.1",
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        ),
        (
            "libonnxruntime_providers_shared.so",
            "086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d",
        ),
    ];

    pub fn build() {
        compile_onnx_proto();
        locate_onnxruntime();
    }

    fn locate_onnxruntime() {
        println!("cargo:rerun-if-env-changed=ORT_DYLIB_PATH");
        let library = match std::env::var("ORT_DYLIB_PATH") {
            Ok(path) if !path.is_empty() => path,
            _ => match fetch_onnxruntime() {
                Ok(path) => path.display().to_string(),
                Err(why) => {
                    println!("cargo:warning=ONNX Runtime {ORT_VERSION} was not fetched: {why}");
                    println!(
                        "cargo:warning=`validator eval` needs it at run time: set ORT_DYLIB_PATH to \
                         libonnxruntime.so.{ORT_VERSION} (inside the onnxruntime=={ORT_VERSION} wheel: \
                         `pip download --no-deps onnxruntime=={ORT_VERSION}`, file \
                         onnxruntime/capi/libonnxruntime.so.{ORT_VERSION})"
                    );
                    String::new()
                }
            },
        };
        println!("cargo:rustc-env=VALIDATOR_ORT_DYLIB={library}");
    }

    fn compile_onnx_proto() {
        println!("cargo:rerun-if-changed=src/eval/onnx.proto");
        let descriptors = protox::compile(["onnx.proto"], ["src/eval"])
            .unwrap_or_else(|e| panic!("compiling src/eval/onnx.proto: {e}"));
        prost_build::Config::new()
            .compile_fds(descriptors)
            .unwrap_or_else(|e| panic!("generating ONNX types: {e}"));
    }

    /// `target/` of this build: OUT_DIR is `target/<profile>/build/<package>-<hash>/out`.
    fn target_dir() -> Option<PathBuf> {
        let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
        out.ancestors().nth(4).map(Path::to_path_buf)
    }

    fn sha256_of(path: &Path) -> Result<String, String> {
        use sha2::{Digest, Sha256};
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        Ok(Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    fn verified(path: &Path, expected: &str) -> bool {
        sha256_of(path).is_ok_and(|digest| digest == expected)
    }

    fn fetch_onnxruntime() -> Result<PathBuf, String> {
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        if os != "linux" || arch != "x86_64" {
            return Err(format!(
                "the pinned wheel is for linux x86_64, not {os} {arch}"
            ));
        }
        let cache = target_dir()
            .ok_or("no target directory")?
            .join(format!("onnxruntime-{ORT_VERSION}"));
        let library = cache.join(ORT_LIBRARIES[0].0);
        if ORT_LIBRARIES
            .iter()
            .all(|(name, digest)| verified(&cache.join(name), digest))
        {
            return Ok(library);
        }
        std::fs::create_dir_all(&cache)
            .map_err(|e| format!("creating {}: {e}", cache.display()))?;
        let wheel = cache.join(ORT_WHEEL);
        if !verified(&wheel, ORT_WHEEL_SHA256) {
            // Pin the interpreter and platform so every machine fetches the same, checksummed file.
            let status = Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--no-deps",
                    "--only-binary=:all:",
                ])
                .args(["--python-version", "3.11", "--implementation", "cp"])
                .args(["--platform", "manylinux_2_28_x86_64"])
                .arg(format!("onnxruntime=={ORT_VERSION}"))
                .arg("--dest")
                .arg(&cache)
                .status()
                .map_err(|e| format!("running python3 -m pip: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "pip download onnxruntime=={ORT_VERSION} failed ({status})"
                ));
            }
        }
        let digest = sha256_of(&wheel)?;
        if digest != ORT_WHEEL_SHA256 {
            let _ = std::fs::remove_file(&wheel);
            return Err(format!(
                "{ORT_WHEEL} has SHA-256 {digest}, expected {ORT_WHEEL_SHA256}; removed it"
            ));
        }
        for (name, expected) in ORT_LIBRARIES {
            let script = format!(
                "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
                 open(sys.argv[2], 'wb').write(z.read('onnxruntime/capi/{name}'))"
            );
            let target = cache.join(name);
            let status = Command::new("python3")
                .args(["-c", &script])
                .arg(&wheel)
                .arg(&target)
                .status()
                .map_err(|e| format!("extracting {name}: {e}"))?;
            if !status.success() || !verified(&target, expected) {
                let _ = std::fs::remove_file(&target);
                return Err(format!("{name} from {ORT_WHEEL} failed its checksum"));
            }
        }
        Ok(library)
    }
}
