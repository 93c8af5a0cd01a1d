//! The controller run from its image in the sandbox's Docker engine, the way the chart runs it as a
//! Pod: uid/gid 65532, read-only root filesystem, `/tmp` and `$HOME` on tmpfs, no capabilities, no
//! privilege escalation, the runtime's default seccomp profile. The host network stands in for the
//! Pod's `hostNetwork: true`: the sandbox's API server and SSH test hosts listen on loopback.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::cluster::{TestCluster, http_get};

/// The image `e2e/run-tests.sh` built from the controller binary (`e2e/scripts/controller-image.sh`).
pub fn controller_image() -> String {
    match std::env::var("SLIPWAY_CONTROLLER_IMAGE") {
        Ok(image) if !image.is_empty() => image,
        _ => panic!(
            "SLIPWAY_CONTROLLER_IMAGE is not set: run the test through e2e/run-tests.sh, which builds the \
             image with e2e/scripts/controller-image.sh"
        ),
    }
}

/// One controller container for a test's namespace; removed (after saving its log) when dropped.
pub struct ControllerContainer {
    pub name: String,
    pub http_addr: String,
    /// `docker logs -f` into the namespace's controller log, so failure messages can quote it.
    follower: Child,
    log: PathBuf,
    _kubeconfig: tempfile::TempDir,
}

/// One process of the container, as the host's /proc shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerProcess {
    pub pid: u32,
    pub ppid: u32,
    /// `R`, `S`, `Z`, ... (the third field of /proc/PID/stat)
    pub state: char,
    pub comm: String,
}

impl ControllerContainer {
    /// Starts `image` watching `cluster`'s namespace, authenticated as the `slipway`
    /// ServiceAccount, with `entrypoint` overriding the image's when given; waits for /readyz.
    pub fn start(
        cluster: &TestCluster,
        image: &str,
        entrypoint: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<ControllerContainer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let http_addr = format!("127.0.0.1:{port}");
        // swt-: e2e/scripts/down.sh removes what a killed run leaves.
        let name = format!("swt-controller-{}", cluster.namespace);
        // The controller's kubeconfig, readable by uid 65532 only (the sandbox's is root's, 0600).
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::copy(cluster.sandbox.join("controller.kubeconfig"), &kubeconfig)?;
        std::os::unix::fs::chown(&kubeconfig, Some(65532), Some(65532))?;
        let mut args: Vec<String> = [
            "run",
            "--detach",
            "--name",
            &name,
            "--network",
            "host",
            "--user",
            "65532:65532",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,mode=1777,size=16m",
            "--tmpfs",
            "/home/slipway:rw,nosuid,nodev,uid=65532,gid=65532,mode=0700,size=16m",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--volume",
            &format!("{}:/var/run/slipway/kubeconfig:ro", kubeconfig.display()),
            "--env",
            "KUBECONFIG=/var/run/slipway/kubeconfig",
            "--env",
            "RUST_LOG=info,kube=warn,slipway_controller=debug",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(entrypoint) = entrypoint {
            args.extend(["--entrypoint".into(), entrypoint.into()]);
        }
        args.push(image.into());
        args.extend(["--namespace".into(), cluster.namespace.clone(), "--http-addr".into(), http_addr.clone()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let _ = docker(&["rm", "--force", &name]);
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        let log = cluster.sandbox.join("logs").join(format!("{}-controller.log", cluster.namespace));
        let file = std::fs::File::create(&log)?;
        let follower = Command::new("docker")
            .args(["logs", "--follow", &name])
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("docker logs")?;
        let container = ControllerContainer { name, http_addr, follower, log, _kubeconfig: dir };
        container.wait_ready(Duration::from_secs(60))?;
        Ok(container)
    }

    /// Polls /readyz until it answers 200; returns how long that took.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok((200, _)) = http_get(&self.http_addr, "/readyz") {
                return Ok(start.elapsed());
            }
            if !self.running() {
                bail!("the controller container {} exited:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("the controller container {} not ready within {timeout:?}:\n{}", self.name, self.log())
    }

    pub fn running(&self) -> bool {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.name]).is_ok_and(|s| s.trim() == "true")
    }

    /// The container's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The host pid of the container's PID 1.
    pub fn init_pid(&self) -> anyhow::Result<u32> {
        Ok(docker(&["inspect", "--format", "{{.State.Pid}}", &self.name])?.trim().parse()?)
    }

    /// Every process of the container (PID 1 and its descendants, zombies included), from /proc.
    pub fn processes(&self) -> anyhow::Result<Vec<ContainerProcess>> {
        processes_under(self.init_pid()?).with_context(|| format!("PID 1 of {}", self.name))
    }

    /// `docker stop` (SIGTERM to PID 1, SIGKILL after `grace`); returns the exit code.
    pub fn stop(&self, grace: Duration) -> anyhow::Result<i32> {
        docker(&["stop", "--time", &grace.as_secs().to_string(), &self.name])?;
        Ok(docker(&["inspect", "--format", "{{.State.ExitCode}}", &self.name])?.trim().parse()?)
    }
}

/// The host process `init` and its descendants (zombies included), from /proc: a container's
/// processes, given the host pid of its PID 1.
pub fn processes_under(init: u32) -> anyhow::Result<Vec<ContainerProcess>> {
    let all = all_processes();
    let mut inside: Vec<ContainerProcess> = all.iter().filter(|p| p.pid == init).cloned().collect();
    anyhow::ensure!(!inside.is_empty(), "host pid {init} not found in /proc");
    let mut added = true;
    while added {
        added = false;
        for p in &all {
            if !inside.iter().any(|q| q.pid == p.pid) && inside.iter().any(|q| q.pid == p.ppid) {
                inside.push(p.clone());
                added = true;
            }
        }
    }
    Ok(inside)
}

impl Drop for ControllerContainer {
    fn drop(&mut self) {
        let _ = docker(&["rm", "--force", &self.name]);
        let _ = self.follower.kill();
        let _ = self.follower.wait();
    }
}

fn all_processes() -> Vec<ContainerProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            parse_stat(pid, &std::fs::read_to_string(e.path().join("stat")).ok()?)
        })
        .collect()
}

/// `/proc/PID/stat`: `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
fn parse_stat(pid: u32, stat: &str) -> Option<ContainerProcess> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(ContainerProcess { pid, ppid, state, comm })
}

/// Runs docker; a non-zero exit is an error carrying stderr. Returns stdout.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8(out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let p = parse_stat(42, "42 (ssh) Z 7 42 42 0 -1 4194560 0 0").unwrap();
        assert_eq!(p, ContainerProcess { pid: 42, ppid: 7, state: 'Z', comm: "ssh".into() });
        let q = parse_stat(9, "9 (a) b (c)) S 1 9 9").unwrap();
        assert_eq!((q.comm.as_str(), q.state, q.ppid), ("a) b (c)", 'S', 1));
    }
}
