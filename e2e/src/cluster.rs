//! A test's view of the shared control plane: its own namespace, kubectl, and its own controller.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::read_env_file;

/// One test's namespace on the shared control plane. Dropping it stops its controller.
pub struct TestCluster {
    pub namespace: String,
    pub kubectl: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub sandbox: PathBuf,
    controller: Option<Controller>,
    /// TMPDIRs of stopped controllers, kept until the test ends so it can look inside.
    stopped_tmp: Vec<tempfile::TempDir>,
    /// How many controllers [`TestCluster::kill_controller`] killed (names their kept logs).
    kills: u32,
    /// The admin kubeconfig's user name, once asked ([`TestCluster::user`]).
    user: std::sync::OnceLock<String>,
}

struct Controller {
    child: Child,
    http_addr: String,
    /// The controller's TMPDIR: where its SSH masters keep their private directories.
    tmp: tempfile::TempDir,
}

impl TestCluster {
    /// Creates a fresh namespace `<prefix>-<random>` and lets Slipway read Secrets in it.
    pub fn new(sandbox: &Path, prefix: &str) -> anyhow::Result<Self> {
        let env = read_env_file(&sandbox.join("env"))?;
        let get = |k: &str| env.get(k).cloned().with_context(|| format!("{k} missing from sandbox env"));
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let namespace = format!("{prefix}-{:x}-{n}-{:x}", std::process::id(), nanos() % 0x10000);
        let cluster = TestCluster {
            namespace,
            kubectl: get("SLIPWAY_KUBECTL")?.into(),
            admin_kubeconfig: get("SLIPWAY_KUBECONFIG")?.into(),
            sandbox: sandbox.to_path_buf(),
            controller: None,
            stopped_tmp: Vec::new(),
            kills: 0,
            user: std::sync::OnceLock::new(),
        };
        cluster.kubectl_ok(&["create", "namespace", &cluster.namespace])?;
        cluster.apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: slipway-secret-reader\n  \
             namespace: {ns}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: \
             slipway-secret-reader\nsubjects:\n  - kind: ServiceAccount\n    name: slipway\n    namespace: slipway-system\n",
            ns = cluster.namespace
        ))?;
        Ok(cluster)
    }

    /// Starts a controller process watching only this namespace, as the `slipway` ServiceAccount.
    pub fn start_controller(&mut self) -> anyhow::Result<()> {
        self.start_controller_with(&[])
    }

    /// [`Self::start_controller`] with extra command-line arguments.
    pub fn start_controller_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let bin = controller_binary();
        let port = free_port()?;
        let http_addr = format!("127.0.0.1:{port}");
        let logs = self.sandbox.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{}-controller.log", self.namespace)))?;
        // Short path: SSH control sockets live below it and unix socket paths are limited to 108 bytes.
        let tmp = tempfile::Builder::new().prefix("swc-").tempdir_in("/tmp")?;
        let child = Command::new(&bin)
            .args(["--namespace", &self.namespace, "--http-addr", &http_addr])
            .args(extra)
            .env("KUBECONFIG", self.sandbox.join("controller.kubeconfig"))
            // The benchmarks measure the controller as deployed (SLIPWAY_CONTROLLER_LOG=info).
            .env(
                "RUST_LOG",
                std::env::var("SLIPWAY_CONTROLLER_LOG")
                    .unwrap_or_else(|_| "info,kube=warn,slipway_controller=debug".into()),
            )
            .env("TMPDIR", tmp.path())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        self.controller = Some(Controller { child, http_addr: http_addr.clone(), tmp });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(&http_addr, "/readyz") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("controller for {} not ready within 30 s; see {}", self.namespace, logs.display())
    }

    /// The running controller's process id.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(|c| c.child.id())
    }

    /// GET on the controller's HTTP listener: (status code, body).
    pub fn controller_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let c = self.controller.as_ref().context("controller not started")?;
        http_get(&c.http_addr, path)
    }

    /// Runs kubectl against the shared control plane, in this namespace.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_with_stdin(args, None)
    }

    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin_kubeconfig)
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        if let Some(input) = stdin {
            child.stdin.take().expect("piped").write_all(input.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// The user the admin kubeconfig authenticates as (`kubectl auth whoami`): what the annotation
    /// `slipway.dev/requested-by` must say on a DeployRequest this cluster's kubectl creates.
    pub fn user(&self) -> anyhow::Result<String> {
        if let Some(user) = self.user.get() {
            return Ok(user.clone());
        }
        let user = self.kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])?;
        anyhow::ensure!(!user.is_empty(), "kubectl auth whoami printed no user name");
        Ok(self.user.get_or_init(|| user).clone())
    }

    /// kubectl as `user` (`--as`: the admin kubeconfig may impersonate anyone), with `stdin`.
    pub fn kubectl_as(&self, user: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut all = vec!["--as", user];
        all.extend_from_slice(args);
        self.kubectl_with_stdin(&all, stdin)
    }

    /// Lets `user` create, read and annotate DeployRequests in this namespace (and write their
    /// status, to show that it carries no annotation) and, when `approver`, approve them (a
    /// RoleBinding to the ClusterRole `slipway-approver`).
    pub fn grant_deploy_requests(&self, user: &str, approver: bool) -> anyhow::Result<()> {
        let ns = &self.namespace;
        let binding = |name: &str, kind: &str, role: &str| {
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: {kind}, name: {role}}}\n\
                 subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"{user}\"}}]\n"
            )
        };
        let mut yaml = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: deploy-requester, namespace: {ns}}}\n\
             rules:\n  - apiGroups: [slipway.dev]\n    resources: [deployrequests, deployrequests/status]\n    \
             verbs: [get, list, watch, create, patch, update]\n---\n{}",
            binding(&format!("{user}-requests"), "Role", "deploy-requester")
        );
        if approver {
            yaml.push_str("---\n");
            yaml.push_str(&binding(&format!("{user}-approves"), "ClusterRole", "slipway-approver"));
        }
        self.apply(&yaml)?;
        Ok(())
    }

    /// kubectl that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!("kubectl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `kubectl apply -f -` with `yaml`; returns kubectl's output, stdout and stderr together.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let out = self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("kubectl apply failed: {text}");
        }
        Ok(text)
    }

    /// `kubectl create -f -` expected to be refused; returns the error kubectl printed.
    pub fn refused(&self, yaml: &str) -> anyhow::Result<String> {
        let out = self.kubectl_with_stdin(&["create", "-f", "-"], Some(yaml))?;
        if out.status.success() {
            bail!("the API server accepted an object it should refuse:\n{yaml}");
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `kubectl wait --for=<condition> <object>`; returns how long it took.
    pub fn wait(&self, object: &str, condition: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        self.kubectl_ok(&["wait", object, &format!("--for={condition}"), &format!("--timeout={}s", timeout.as_secs())])
            .with_context(|| format!("waiting for {object} {condition}"))?;
        Ok(start.elapsed())
    }

    /// A JSONPath of one object, as `kubectl get -o jsonpath` prints it.
    pub fn jsonpath(&self, object: &str, path: &str) -> anyhow::Result<String> {
        self.kubectl_ok(&["get", object, "-o", &format!("jsonpath={path}")])
    }

    /// One field (`status`, `reason` or `message`) of the condition `type_` of `object`.
    pub fn condition(&self, object: &str, type_: &str, field: &str) -> anyhow::Result<String> {
        self.jsonpath(object, &format!(r#"{{.status.conditions[?(@.type=="{type_}")].{field}}}"#))
    }

    /// `kubectl wait` until the Ready condition of `object` has `reason`; returns how long it took.
    pub fn wait_ready_reason(&self, object: &str, reason: &str, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait(object, &format!(r#"jsonpath={{.status.conditions[?(@.type=="Ready")].reason}}={reason}"#), timeout)
    }

    /// Creates a Secret from literal key/values.
    pub fn secret(&self, name: &str, data: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut args = vec!["create".to_string(), "secret".into(), "generic".into(), name.into()];
        args.extend(data.iter().map(|(k, v)| format!("--from-literal={k}={v}")));
        self.kubectl_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        Ok(())
    }
}

impl TestCluster {
    /// The controller's TMPDIR, which holds its SSH masters' private directories.
    pub fn controller_tmp(&self) -> Option<PathBuf> {
        let stopped = self.stopped_tmp.last().map(|t| t.path().to_path_buf());
        self.controller.as_ref().map(|c| c.tmp.path().to_path_buf()).or(stopped)
    }

    /// Sends SIGTERM to the controller; returns its exit status if it stopped within `grace`.
    pub fn stop_controller(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let Controller { mut child, tmp, .. } = self.controller.take()?;
        self.stopped_tmp.push(tmp);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Command lines of the `ssh` processes of the controller (running or last stopped): its SSH
    /// masters, found by their control socket below its TMPDIR.
    pub fn ssh_processes(&self) -> Vec<String> {
        self.controller_tmp()
            .map(|dir| ssh_processes_under(&dir).into_iter().map(|(_, cmd)| cmd).collect())
            .unwrap_or_default()
    }

    /// The controller's log so far.
    pub fn controller_log(&self) -> String {
        let path = self.sandbox.join("logs").join(format!("{}-controller.log", self.namespace));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// SIGKILL to the controller, as when its pod dies: no shutdown path runs. The SSH masters it
    /// started die with it (as they would with the pod's container; what they ran on the host in
    /// a session of its own carries on), its TMPDIR is kept for the test to look inside, and its
    /// log is moved to `<namespace>-controller-killed<N>.log` so that the next controller's log
    /// does not overwrite it. Returns the path of that log.
    pub fn kill_controller(&mut self) -> anyhow::Result<PathBuf> {
        let Controller { mut child, tmp, .. } = self.controller.take().context("no controller is running")?;
        let status = Command::new("kill").args(["-KILL", &child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -KILL {} failed", child.id());
        }
        child.wait()?;
        for (pid, _) in ssh_processes_under(tmp.path()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        self.stopped_tmp.push(tmp);
        self.kills += 1;
        let logs = self.sandbox.join("logs");
        let kept = logs.join(format!("{}-controller-killed{}.log", self.namespace, self.kills));
        std::fs::rename(logs.join(format!("{}-controller.log", self.namespace)), &kept)?;
        Ok(kept)
    }
}

/// A further controller process for a test's namespace, apart from the one
/// [`TestCluster::start_controller`] manages: for tests of several replicas (leader election) or
/// shards. Named by `POD_NAME` (its Lease identity and Event reporting instance); killed when
/// dropped.
pub struct ControllerProcess {
    pub name: String,
    pub http_addr: String,
    child: Child,
    log: PathBuf,
    tmp: tempfile::TempDir,
}

impl TestCluster {
    /// Starts controller `name` watching this namespace with `extra` arguments; waits until it
    /// answers /healthz (a standby waiting for the Lease is alive but does not reconcile).
    pub fn spawn_controller(&self, name: &str, extra: &[&str]) -> anyhow::Result<ControllerProcess> {
        let bin = controller_binary();
        let http_addr = format!("127.0.0.1:{}", free_port()?);
        let logs = self.sandbox.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}-controller-{name}.log", self.namespace));
        let file = std::fs::File::create(&log)?;
        let tmp = tempfile::Builder::new().prefix("swc-").tempdir_in("/tmp")?;
        let child = Command::new(&bin)
            .args(["--namespace", &self.namespace, "--http-addr", &http_addr])
            .args(extra)
            .env("KUBECONFIG", self.sandbox.join("controller.kubeconfig"))
            .env("RUST_LOG", "info,kube=warn,kube_lease_manager=info,slipway_controller=debug")
            .env("TMPDIR", tmp.path())
            .env("POD_NAME", name)
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let process = ControllerProcess { name: name.to_owned(), http_addr, child, log, tmp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok((200, _)) = http_get(&process.http_addr, "/healthz") {
                return Ok(process);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("controller {name} for {} not up within 30 s:\n{}", self.namespace, process.log())
    }
}

impl ControllerProcess {
    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, as when its Pod is deleted; returns its exit status if it stopped within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, as when its Pod dies; its SSH masters die with it (as with the Pod's container).
    pub fn kill(&mut self) {
        let _ = Command::new("kill").args(["-KILL", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        for (pid, _) in ssh_processes_under(self.tmp.path()) {
            // (a master may have exited by itself meanwhile)
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            self.kill();
        }
    }
}

/// Ids and command lines of the `ssh` processes whose command line names a path below `dir` (a
/// controller's SSH masters, by their control socket).
fn ssh_processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = String::from_utf8_lossy(&std::fs::read(e.path().join("cmdline")).ok()?).replace('\0', " ");
            (cmdline.starts_with("ssh ") && cmdline.contains(&needle)).then_some((pid, cmdline))
        })
        .collect()
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop_controller(Duration::from_secs(5));
        // The namespace is left for inspection: the sandbox has no namespace controller to empty it,
        // and every test's names are unique.
    }
}

/// The controller binary built by `e2e/run-tests.sh` (or `cargo build` in this workspace).
pub fn controller_binary() -> PathBuf {
    std::env::var_os("SLIPWAY_CONTROLLER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/slipway-controller"))
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root exists")
}

fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() as u64).unwrap_or(0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A minimal HTTP/1.0 GET, enough for the controller's own listener.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status line")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}
