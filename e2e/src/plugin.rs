//! `kubectl slipway` as a user runs it: the plugin binary built with the workspace, in a test's
//! namespace, as the admin kubeconfig's user.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::Context as _;

use crate::cluster::TestCluster;

/// The `kubectl-slipway` binary built by `e2e/run-tests.sh` (next to the controller).
pub fn plugin_binary() -> PathBuf {
    std::env::var_os("SLIPWAY_PLUGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kubectl-slipway"))
}

/// How one run ended and what it printed.
#[derive(Debug, Clone)]
pub struct PluginRun {
    pub args: Vec<String>,
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PluginRun {
    fn from_output(args: &[&str], out: Output) -> PluginRun {
        PluginRun {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with everything it printed unless it exited `code`.
    pub fn expect_code(self, code: i32) -> PluginRun {
        assert_eq!(
            self.code,
            code,
            "kubectl slipway {} exited {}, expected {code}\n{self}",
            self.args.join(" "),
            self.code
        );
        // stdout is a pipe here: no colour codes
        assert!(!self.stdout.contains('\x1b'), "colour codes on a pipe:\n{self}");
        self
    }

    /// Parses stdout as JSON (`-o json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for PluginRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout:\n{}--- stderr:\n{}", self.stdout, self.stderr)
    }
}

impl TestCluster {
    fn plugin_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(plugin_binary());
        cmd.arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["-n", &self.namespace])
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `kubectl slipway ARGS -n <namespace> --kubeconfig <admin>`, to its end.
    pub fn slipway(&self, args: &[&str]) -> anyhow::Result<PluginRun> {
        let out =
            self.plugin_command(args).output().with_context(|| format!("running {}", plugin_binary().display()))?;
        Ok(PluginRun::from_output(args, out))
    }

    /// The same, started in the background (a deploy followed while the test acts).
    pub fn slipway_spawn(&self, args: &[&str]) -> anyhow::Result<RunningPlugin> {
        let child =
            self.plugin_command(args).spawn().with_context(|| format!("running {}", plugin_binary().display()))?;
        Ok(RunningPlugin { args: args.iter().map(|a| (*a).to_owned()).collect(), child })
    }
}

/// A `kubectl slipway` run in the background.
pub struct RunningPlugin {
    args: Vec<String>,
    child: Child,
}

impl RunningPlugin {
    /// Waits for it to end.
    pub fn wait(self) -> anyhow::Result<PluginRun> {
        let out = self.child.wait_with_output()?;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Ok(PluginRun::from_output(&args, out))
    }
}
