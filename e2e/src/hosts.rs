//! The sandbox's SSH test hosts (`e2e/scripts/hosts.sh`) for the remote-layer tests: load a
//! host's env file into a [`HostTarget`], give each test its own compose project name and work
//! directory on the host, and provide the shop fixture repository as an origin the deploy user
//! can clone.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::FutureExt;
use slipway_controller::remote::{
    ComposeProject, ConnectOptions, HostConnection, HostTarget, JobKey, Jobs, RemoteCommand, SecretBytes,
};

/// Options for tests: short connect timeout so failure cases finish quickly.
pub fn test_options() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(120),
        ..ConnectOptions::default()
    }
}

/// One test host as described by `$SLIPWAY_SANDBOX/hosts/host<i>/env`.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub user: String,
    pub key_path: PathBuf,
    pub known_hosts_path: PathBuf,
    pub sandbox: PathBuf,
}

impl TestHost {
    pub fn load(sandbox: &Path, index: u32) -> anyhow::Result<TestHost> {
        let path = sandbox.join(format!("hosts/host{index}/env"));
        let env = crate::read_env_file(&path)
            .with_context(|| format!("test host {index} is not set up; run e2e/scripts/hosts.sh start N"))?;
        let get = |k: &str| env.get(k).cloned().with_context(|| format!("{} lacks {k}", path.display()));
        Ok(TestHost {
            name: env.get("SLIPWAY_HOST_NAME").cloned().unwrap_or_else(|| format!("host{index}")),
            addr: get("SLIPWAY_HOST_ADDR")?,
            port: get("SLIPWAY_HOST_PORT")?.parse().context("SLIPWAY_HOST_PORT")?,
            user: get("SLIPWAY_HOST_USER")?,
            key_path: get("SLIPWAY_HOST_KEY")?.into(),
            known_hosts_path: get("SLIPWAY_HOST_KNOWN_HOSTS")?.into(),
            sandbox: sandbox.to_owned(),
        })
    }

    /// Host 1 of the sandbox (`SLIPWAY_TEST_HOST` picks another).
    pub fn default_host(sandbox: &Path) -> anyhow::Result<TestHost> {
        let index = std::env::var("SLIPWAY_TEST_HOST").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
        TestHost::load(sandbox, index)
    }

    /// The host's public key (`type base64`), from its pinned known_hosts line.
    pub fn host_public_key(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.known_hosts_path)?;
        let line = text.lines().find(|l| !l.trim().is_empty() && !l.starts_with('#')).context("empty known_hosts")?;
        Ok(line.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "))
    }

    /// A known_hosts line pinning this host's real key for another address and port (to reach
    /// the same key through a closed port or a proxy).
    pub fn known_hosts_for(&self, addr: &str, port: u16) -> anyhow::Result<String> {
        Ok(known_hosts_line(addr, port, &self.host_public_key()?))
    }

    pub fn target(&self) -> anyhow::Result<HostTarget> {
        let key = std::fs::read(&self.key_path).with_context(|| format!("reading {}", self.key_path.display()))?;
        let known_hosts = std::fs::read_to_string(&self.known_hosts_path)
            .with_context(|| format!("reading {}", self.known_hosts_path.display()))?;
        Ok(HostTarget {
            address: self.addr.clone(),
            port: self.port,
            user: self.user.clone(),
            private_key: SecretBytes::from(key),
            known_hosts,
        })
    }

    pub async fn connect(&self) -> anyhow::Result<HostConnection> {
        self.connect_with(test_options()).await
    }

    /// [`TestHost::connect`] with options of the caller's.
    pub async fn connect_with(&self, options: ConnectOptions) -> anyhow::Result<HostConnection> {
        HostConnection::connect(&self.target()?, options)
            .await
            .with_context(|| format!("connecting to {} ({}:{})", self.name, self.addr, self.port))
    }

    /// Arguments for a plain one-shot `ssh` with the same pinning as the controller
    /// (for the multiplexing benchmark).
    pub fn one_shot_ssh_args(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            "-o".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts_path.display()),
            "-i".to_owned(),
            self.key_path.display().to_string(),
            "-p".to_owned(),
            self.port.to_string(),
            format!("{}@{}", self.user, self.addr),
        ])
        .collect()
    }
}

/// A name unique to this test run, usable as compose project name and directory name.
pub fn unique_name(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let prefix: String =
        prefix.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{prefix}-{:x}{:x}-{}", std::process::id(), nanos & 0xfff, SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Removes whatever a compose project left (containers, volumes, networks, images built for it),
/// by label and image name, without needing its compose files. `$1` is the project name.
const PROJECT_SWEEP: &str = r#"p="$1"; l="label=com.docker.compose.project=$p"
ids=$(docker ps -aq --filter "$l"); [ -z "$ids" ] || docker rm -f -v $ids >/dev/null
vols=$(docker volume ls -q --filter "$l"); [ -z "$vols" ] || docker volume rm -f $vols >/dev/null
nets=$(docker network ls -q --filter "$l"); [ -z "$nets" ] || docker network rm $nets >/dev/null
imgs=$( (docker images -q --filter "reference=${p}_*"; docker images -q --filter "reference=${p}-*"; docker images -q --filter "$l") | sort -u)
[ -z "$imgs" ] || docker rmi -f $imgs >/dev/null
exit 0"#;

/// The start of every compose project name (and work directory) the tests make: `e2e/scripts/down.sh`
/// sweeps what a killed run left by this prefix, and touches nothing without it.
pub const PROJECT_PREFIX: &str = "swt-";

/// A test's own compose project name and work directory on the host.
#[derive(Debug, Clone)]
pub struct TestProject {
    pub name: String,
    /// Absolute path on the host (`$HOME/slipway-e2e/<name>`), not yet created.
    pub dir: String,
}

impl TestProject {
    pub async fn new(conn: &HostConnection, prefix: &str) -> anyhow::Result<TestProject> {
        let name = unique_name(&format!("{PROJECT_PREFIX}{prefix}"));
        let home = conn.run(&RemoteCommand::new("printenv").arg("HOME")).await?.stdout().trim().to_owned();
        if !home.starts_with('/') {
            bail!("remote HOME is {home:?}");
        }
        let dir = format!("{home}/slipway-e2e/{name}");
        conn.run(&RemoteCommand::new("mkdir").arg("-p").arg(format!("{home}/slipway-e2e"))).await?;
        Ok(TestProject { name, dir })
    }

    pub fn compose(&self) -> ComposeProject {
        ComposeProject::new(self.dir.clone(), self.name.clone(), vec!["docker-compose.yml".to_owned()])
    }

    /// Run `body`, then [`TestProject::cleanup`] — also when `body` panics (the panic is
    /// re-raised after cleaning up).
    pub async fn run_then_clean_up<T>(&self, conn: &HostConnection, body: impl Future<Output = T>) -> T {
        let outcome = AssertUnwindSafe(body).catch_unwind().await;
        self.cleanup(conn).await;
        match outcome {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Terminate the project's host jobs (their processes and labelled containers), `down -v
    /// --rmi local` when the project has a compose file, then remove the work dir and the jobs'
    /// run directories. Errors are printed, not raised: cleanup must not hide the test's own result.
    pub async fn cleanup(&self, conn: &HostConnection) {
        self.terminate_jobs(conn).await;
        let has_compose = conn
            .output(&RemoteCommand::new("test").arg("-f").arg(format!("{}/docker-compose.yml", self.dir)))
            .await
            .map(|o| o.success())
            .unwrap_or(false);
        if has_compose {
            let program = match slipway_controller::remote::detect_flavor(conn).await {
                Ok(slipway_controller::remote::ComposeFlavor::V2) => RemoteCommand::new("docker").arg("compose"),
                _ => RemoteCommand::new("docker-compose"),
            };
            let down = program
                .current_dir(self.dir.clone())
                .args(["-p", &self.name, "down", "-v", "--remove-orphans", "--rmi", "local"])
                .timeout(Duration::from_secs(300));
            // `down` needs a valid model (.env included); the label sweep below does not.
            let _ = conn.run(&down).await;
        }
        let sweep = RemoteCommand::new("sh")
            .args(["-c", PROJECT_SWEEP, "project-sweep", &self.name])
            .timeout(Duration::from_secs(300))
            .label("project sweep");
        if let Err(e) = conn.run(&sweep).await {
            eprintln!("cleanup of {}: {e}", self.name);
        }
        if let Err(e) = conn.run(&RemoteCommand::new("rm").arg("-rf").arg(self.dir.clone())).await {
            eprintln!("cleanup of {}: {e}", self.dir);
        }
        let runs = RemoteCommand::new("sh").args(["-c", r#"rm -rf -- "$HOME/.slipway/$1""#, "rm-runs", &self.name]);
        if let Err(e) = conn.run(&runs).await {
            eprintln!("cleanup of the host jobs of {}: {e}", self.name);
        }
    }

    /// Every host job of the project that a failed test may have left running.
    async fn terminate_jobs(&self, conn: &HostConnection) {
        let list = RemoteCommand::new("sh").args([
            "-c",
            r#"cd -- "$HOME/.slipway/$1/runs" 2>/dev/null && ls -d -- */* 2>/dev/null; exit 0"#,
            "list-runs",
            &self.name,
        ]);
        let runs = match conn.run(&list).await {
            Ok(out) => out.stdout(),
            Err(e) => return eprintln!("cleanup of the host jobs of {}: {e}", self.name),
        };
        let jobs = Jobs::new(conn);
        for run in runs.lines() {
            let Some((uid, step)) = run.split_once('/') else { continue };
            match JobKey::new(self.name.clone(), uid, step) {
                Ok(key) => {
                    if let Err(e) = jobs.terminate(&key, Duration::ZERO).await {
                        eprintln!("cleanup of host job {key}: {e}");
                    }
                }
                Err(e) => eprintln!("cleanup of host job {run}: {e}"),
            }
        }
    }
}

/// The shop fixture as a bare repository the deploy user can clone: (re)built by
/// `e2e/scripts/fixture-repo.sh` into `$SLIPWAY_SANDBOX/origin/shop.git` once per process, then
/// copied to `$SLIPWAY_SANDBOX/remote-tests/shop-<user>.git` owned by the deploy user (git
/// refuses to serve a repository owned by someone else: "dubious ownership").
/// Returns a `file://` URL.
pub fn shop_origin(host: &TestHost) -> anyhow::Result<String> {
    static LOCK: Mutex<bool> = Mutex::new(false);
    let mut built = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let origin = host.sandbox.join("origin/shop.git");
    if !*built {
        // Cheap and idempotent: rewrites the origin only when the fixtures changed.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fixture-repo.sh");
        run_local(Command::new("bash").arg(&script).arg(&origin))?;
        *built = true;
    }
    let copy = host.sandbox.join(format!("remote-tests/shop-{}.git", host.user));
    let refs = |p: &Path| {
        Command::new("git")
            .arg("--git-dir")
            .arg(p)
            .args(["for-each-ref", "--format=%(objectname) %(refname)"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    // Refs a test added to the copy (a branch it moves) are kept: another test's Site must not
    // wipe them; only a ref of the origin missing or different in the copy makes a new copy.
    let stale = || {
        let have = refs(&copy);
        let have: std::collections::HashSet<&[u8]> = have.split(|b| *b == b'\n').collect();
        refs(&origin).split(|b| *b == b'\n').any(|line| !have.contains(line))
    };
    if !copy.join("HEAD").exists() || stale() {
        let parent = copy.parent().expect("copy has a parent");
        std::fs::create_dir_all(parent)?;
        run_local(Command::new("chmod").arg("755").arg(parent))?;
        let _ = std::fs::remove_dir_all(&copy);
        run_local(Command::new("cp").arg("-a").arg(&origin).arg(&copy))?;
        run_local(Command::new("chown").arg("-R").arg(format!("{0}:{0}", host.user)).arg(&copy))?;
    }
    Ok(format!("file://{}", copy.display()))
}

fn run_local(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A fresh ed25519 key pair (private key text, public key line), made with `ssh-keygen`.
pub fn generate_keypair() -> anyhow::Result<(String, String)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("key");
    run_local(
        Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "slipway-e2e-other", "-f"]).arg(&path),
    )?;
    let private = std::fs::read_to_string(&path)?;
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok((private, public.trim().to_owned()))
}

/// A known_hosts line pinning `public_key` (`type base64 [comment]`) for `addr:port`.
pub fn known_hosts_line(addr: &str, port: u16, public_key: &str) -> String {
    let key: Vec<&str> = public_key.split_whitespace().take(2).collect();
    if port == 22 { format!("{addr} {}\n", key.join(" ")) } else { format!("[{addr}]:{port} {}\n", key.join(" ")) }
}
