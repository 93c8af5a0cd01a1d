//! Harness for Slipway's end-to-end tests.
//!
//! The shared sandbox (one control plane, one Docker engine, sshd test hosts) is brought up once
//! by `e2e/run-tests.sh`, which exports `SLIPWAY_SANDBOX`. Each test takes a namespace of its own
//! and, where it needs one, a controller process of its own that watches only that namespace and
//! authenticates as the ServiceAccount installed from `manifests/`.

pub mod cluster;
pub mod hosts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The sandbox directory from `SLIPWAY_SANDBOX`; `None` (and a printed SKIPPED line) only when
/// the variable is unset. When it is set, a missing or broken sandbox fails the test, never skips it.
pub fn require_sandbox(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SLIPWAY_SANDBOX") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => {
            eprintln!("SKIPPED {test}: SLIPWAY_SANDBOX is not set (start the sandbox with e2e/run-tests.sh)");
            None
        }
    }
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

/// The sandbox directory, or a return from the calling test (skipped, loudly) when there is none.
#[macro_export]
macro_rules! require_sandbox {
    () => {
        match $crate::require_sandbox(module_path!()) {
            Some(dir) => dir,
            None => return,
        }
    };
}
