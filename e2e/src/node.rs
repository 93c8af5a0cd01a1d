//! A real node for the sandbox's control plane (`e2e/scripts/node.sh`): kube-scheduler,
//! kube-controller-manager, a containerd of its own with the CRI plugin, and a kubelet. Started by
//! the tests that run Pods, stopped (Pods, kubelet, containerd and the kubelet's mounts) when
//! dropped.
//!
//! While it runs, kube-controller-manager garbage-collects objects whose owner is gone and empties
//! deleted namespaces, for every test of the sandbox: start it only in tests that hold the sandbox
//! alone for that while (the tests of one test binary run together; the binaries one after the other).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cluster::repo_root;

pub struct SandboxNode {
    pub name: String,
    pub dir: PathBuf,
    sandbox: PathBuf,
    containerd: PathBuf,
}

impl SandboxNode {
    /// `node.sh start`: returns once the Node is Ready.
    pub fn start(sandbox: &Path) -> anyhow::Result<SandboxNode> {
        let dir = sandbox.join("node");
        let mut node = SandboxNode {
            name: String::new(),
            dir: dir.clone(),
            sandbox: sandbox.to_owned(),
            containerd: dir.join("containerd/containerd.sock"),
        };
        node.script(&["start", dir.to_str().context("sandbox path")?])?;
        let env = crate::read_env_file(&dir.join("env"))?;
        node.name = env.get("SLIPWAY_NODE_NAME").cloned().unwrap_or_default();
        Ok(node)
    }

    /// Copies `image` from the Docker engine into the node's containerd (no registry needed).
    pub fn import_image(&self, image: &str) -> anyhow::Result<()> {
        self.script(&["import-image", image, self.dir.to_str().context("sandbox path")?])
    }

    /// The host pid of the init process of a container (`containerd://<id>` as a Pod's status
    /// names it).
    pub fn container_init_pid(&self, container_id: &str) -> anyhow::Result<u32> {
        let id = container_id.strip_prefix("containerd://").unwrap_or(container_id);
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.containerd)
            .args(["--namespace", "k8s.io", "tasks", "ls"])
            .output()
            .context("running ctr")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // TASK PID STATUS
        text.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(id)).then(|| f.next().and_then(|p| p.parse().ok())).flatten()
            })
            .with_context(|| format!("no task {id} in the node's containerd:\n{text}"))
    }

    /// The logs the kubelet kept of the containers of the Pods whose name starts with `prefix` in
    /// `namespace` (all restarts).
    pub fn pod_logs(&self, namespace: &str, prefix: &str) -> String {
        let mut out = String::new();
        let Ok(pods) = std::fs::read_dir(self.dir.join("pod-logs")) else { return out };
        for pod in pods.flatten() {
            if !pod.file_name().to_string_lossy().starts_with(&format!("{namespace}_{prefix}")) {
                continue;
            }
            for container in std::fs::read_dir(pod.path()).into_iter().flatten().flatten() {
                let mut files: Vec<_> =
                    std::fs::read_dir(container.path()).into_iter().flatten().flatten().map(|f| f.path()).collect();
                files.sort();
                for f in files {
                    out.push_str(&format!("--- {}\n", f.display()));
                    out.push_str(&std::fs::read_to_string(&f).unwrap_or_default());
                }
            }
        }
        out
    }

    fn script(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = Command::new(repo_root().join("e2e/scripts/node.sh"))
            .args(args)
            .env("SLIPWAY_SANDBOX", &self.sandbox)
            .output()
            .context("running e2e/scripts/node.sh")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        print!("{stderr}");
        if !out.status.success() {
            bail!("e2e/scripts/node.sh {} failed:\n{stderr}", args.join(" "));
        }
        Ok(())
    }
}

impl Drop for SandboxNode {
    fn drop(&mut self) {
        let _ = self.script(&["stop", self.dir.to_str().unwrap_or_default()]);
    }
}
