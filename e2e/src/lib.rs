//! Harness for Slipway's end-to-end tests.
//!
//! The shared sandbox (one control plane, one Docker engine, sshd test hosts) is brought up once
//! by `e2e/run-tests.sh`, which exports `SLIPWAY_SANDBOX`. Each test takes a namespace of its own
//! and, where it needs one, a controller process of its own that watches only that namespace and
//! authenticates as the ServiceAccount installed from `manifests/`.

pub mod bench;
pub mod cluster;
pub mod container;
pub mod deploy;
pub mod hosts;
pub mod node;
pub mod plugin;
pub mod receiver;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sandbox directory from `SLIPWAY_SANDBOX`. Every test that needs it carries
/// `#[ignore = "needs the sandbox: run e2e/run-tests.sh"]`, so a plain `cargo test` reports it as
/// ignored; `e2e/run-tests.sh` starts the sandbox and runs it with `--include-ignored`. Run
/// without a sandbox, it fails saying so, never passes.
pub fn require_sandbox(test: &str) -> PathBuf {
    match std::env::var_os("SLIPWAY_SANDBOX") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "{test} needs the sandbox, but SLIPWAY_SANDBOX is not set: run it through e2e/run-tests.sh, \
             or set SLIPWAY_SANDBOX to the directory of a sandbox started by e2e/scripts/up.sh"
        ),
    }
}

/// The median of timing samples (benchmarks print medians, never assert them).
pub fn median(mut samples: Vec<std::time::Duration>) -> std::time::Duration {
    samples.sort();
    let n = samples.len();
    if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2 }
}

/// Reads a shell-style `KEY=value` file as written by the sandbox scripts.
pub fn read_env_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').trim_matches('\'').to_string()))
        .collect())
}

/// The sandbox directory, or a failure of the calling test naming it (see [`require_sandbox`]).
#[macro_export]
macro_rules! require_sandbox {
    () => {
        $crate::require_sandbox(::std::thread::current().name().unwrap_or(module_path!()))
    };
}
