//! Who this process is as an evaluation worker: its host, its device and its build, as each
//! `EvaluationReported` records them.

use crate::machine::event::EvaluatedBy;

/// This process as a worker on `device` (the device and the precision it computes in, as
/// `cuda:0 bf16`): host name, device, and build.
pub fn this_worker(device: &str) -> EvaluatedBy {
    EvaluatedBy {
        host: host_name(),
        device: device.to_owned(),
        build: build_id().to_owned(),
    }
}

/// This build: the crate's version and the first 16 hex digits of the SHA-256 of the running
/// executable (so two hosts running the same binary say the same, and a rebuilt one differs).
pub fn build_id() -> &'static str {
    static BUILD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BUILD.get_or_init(|| {
        let exe = std::env::current_exe()
            .ok()
            .and_then(|path| crate::dirhash::hash_of_file(&path).ok())
            .map_or_else(
                || "unknown".to_owned(),
                |hash| hash.chars().take(16).collect(),
            );
        format!("validator {} exe {exe}", env!("CARGO_PKG_VERSION"))
    })
}

/// The host's name, from the kernel (no lookup, no network).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
