//! The SSH master connection to one host: pinned host keys, one multiplexed master reused by
//! every command, port forwards, and the private directory holding key, known_hosts, config and
//! sockets (0700, files 0600, removed on close or drop).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openssh::{ControlPersist, ForwardType, KnownHosts, Session, SessionBuilder, Socket, Stdio};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use super::command::RemoteCommand;
use super::error::{RemoteError, classify_ssh_failure};
use super::exec::{CommandOutput, Exec};
use super::secret::{Redactor, SecretBytes};
use super::validate;

/// Seconds an SSH master may sit idle before exiting by itself (bounds a leak if the controller is killed).
const MASTER_IDLE_EXIT: std::num::NonZeroUsize = std::num::NonZeroUsize::new(600).unwrap();

/// Where and as whom to connect; decoupled from the CRDs so the reconcilers build it from an
/// Environment and its Secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTarget {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// OpenSSH private key (PEM/OpenSSH format), unencrypted.
    pub private_key: SecretBytes,
    /// known_hosts lines pinning the host's key(s); the only keys ever accepted.
    pub known_hosts: String,
}

impl HostTarget {
    /// `address:port`, as used in messages.
    pub fn host_label(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }

    fn validate(&self) -> Result<(), RemoteError> {
        validate::host_address(&self.address)?;
        validate::user_name(&self.user)?;
        if self.port == 0 {
            return Err(RemoteError::invalid("SSH port 0", "must be 1-65535"));
        }
        if self.private_key.is_empty() {
            return Err(RemoteError::invalid("SSH private key", "is empty"));
        }
        super::known_hosts::check_pins(&self.known_hosts, &self.address, self.port)
    }
}

/// Timeouts and fixed paths of a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// TCP connect + SSH banner (ssh `ConnectTimeout`); the whole handshake gets 5s more.
    pub connect_timeout: Duration,
    /// Default limit for one remote command (override per command).
    pub command_timeout: Duration,
    /// Keep-alive probe interval; the master gives up after 3 unanswered probes.
    pub server_alive_interval: Duration,
    /// Docker API socket on the host.
    pub remote_docker_socket: String,
    /// Most commands running at once over one master. Every command is a session of the SSH
    /// connection, and sshd refuses sessions beyond its `MaxSessions` (OpenSSH's default is 10);
    /// a master shared by many Environments would otherwise see commands refused at random.
    pub max_sessions: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            server_alive_interval: Duration::from_secs(15),
            remote_docker_socket: "/var/run/docker.sock".to_owned(),
            max_sessions: MAX_SESSIONS,
        }
    }
}

/// Default [`ConnectOptions::max_sessions`]: below OpenSSH's default `MaxSessions` (10), which
/// counts a master's open sessions; a command cut off by its time limit may hold its session on
/// the host a moment after its permit is back.
pub const MAX_SESSIONS: usize = 8;

/// Most stdout kept from one command (compose config of a big project is far below this); the
/// rest is read and dropped. Long outputs (builds, migrations) go to a host job's log instead.
pub const STDOUT_CAP: usize = 4 * 1024 * 1024;
/// Most stderr kept: its tail.
pub const STDERR_CAP: usize = 64 * 1024;
/// Bytes read at a time; a buffer holds at most its cap plus one chunk.
const READ_CHUNK: usize = 16 * 1024;

/// An open local forward: the socket we listen on and where it leads on the host.
struct Forward {
    local: PathBuf,
    remote: Socket<'static>,
}

/// One SSH master connection to a host: its session, private directory, forwards and caches.
/// Several [`HostConnection`]s (one per Environment naming the same address, port, user, key and
/// known_hosts) share one. Dropping the last of them shuts the master down and removes the
/// private directory.
pub(super) struct Master {
    // Field order matters: the session (whose control socket lives inside `dir`) drops first.
    session: Option<Session>,
    dir: Option<TempDir>,
    host: String,
    user: String,
    options: ConnectOptions,
    pub(super) docker: OnceCell<bollard::Docker>,
    /// The compose CLI flavor, detected once per master.
    flavor: std::sync::OnceLock<super::compose::ComposeFlavor>,
    /// Open forwards by key; held while one is set up so a target is forwarded once per key.
    forwards: tokio::sync::Mutex<HashMap<String, Forward>>,
    forward_seq: AtomicU64,
    /// Commands running at once (see [`ConnectOptions::max_sessions`]).
    sessions: tokio::sync::Semaphore,
    /// Commands that may wait on the host at once (half the sessions; none below 4): the rest
    /// stay free for the commands of the Environments sharing the master.
    waits: tokio::sync::Semaphore,
    /// Numbers the handles sharing this master (their TCP forwards are their own).
    handle_seq: AtomicU64,
}

/// A handle on an SSH master, shared (behind an `Arc`) by every command for one Environment:
/// the master may serve several Environments with the same target, but the redactor (the
/// Environment's secret values) and the TCP forwards of health checks belong to the handle, so
/// one Environment's output is never masked with another's redactor swapped in mid-command and
/// one Environment closing its forwards never cuts another's.
pub struct HostConnection {
    pub(super) master: Arc<Master>,
    redactor: Redactor,
    handle: u64,
}

impl std::fmt::Debug for HostConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostConnection")
            .field("host", &self.master.host)
            .field("user", &self.master.user)
            .finish_non_exhaustive()
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), RemoteError> {
    let local = |e: std::io::Error| RemoteError::Local { detail: format!("writing {}: {e}", path.display()) };
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(local)?;
    f.write_all(contents).map_err(local)?;
    if !contents.ends_with(b"\n") {
        f.write_all(b"\n").map_err(local)?;
    }
    f.sync_all().map_err(local)
}

/// ssh_config used with `-F`, so neither ~/.ssh/config nor /etc/ssh/ssh_config can weaken it.
fn ssh_config(dir: &Path, options: &ConnectOptions) -> String {
    let q = |p: PathBuf| format!("\"{}\"", p.display());
    let lines = [
        "Host *".to_owned(),
        "  BatchMode yes".to_owned(),
        "  StrictHostKeyChecking yes".to_owned(),
        format!("  UserKnownHostsFile {}", q(dir.join("known_hosts"))),
        "  GlobalKnownHostsFile /dev/null".to_owned(),
        "  UpdateHostKeys no".to_owned(),
        "  CheckHostIP no".to_owned(),
        "  VerifyHostKeyDNS no".to_owned(),
        format!("  IdentityFile {}", q(dir.join("id"))),
        "  IdentitiesOnly yes".to_owned(),
        "  IdentityAgent none".to_owned(),
        "  PubkeyAuthentication yes".to_owned(),
        "  PasswordAuthentication no".to_owned(),
        "  KbdInteractiveAuthentication no".to_owned(),
        "  HostbasedAuthentication no".to_owned(),
        "  GSSAPIAuthentication no".to_owned(),
        "  ForwardAgent no".to_owned(),
        "  ForwardX11 no".to_owned(),
        "  PermitLocalCommand no".to_owned(),
        "  ProxyCommand none".to_owned(),
        "  ProxyJump none".to_owned(),
        "  ConnectionAttempts 1".to_owned(),
        format!("  ConnectTimeout {}", options.connect_timeout.as_secs().max(1)),
        format!("  ServerAliveInterval {}", options.server_alive_interval.as_secs().max(1)),
        "  ServerAliveCountMax 3".to_owned(),
        "  ExitOnForwardFailure yes".to_owned(),
        "  StreamLocalBindUnlink yes".to_owned(),
        "  StreamLocalBindMask 0177".to_owned(),
    ];
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

fn map_session_error(host: &str, e: openssh::Error) -> RemoteError {
    match e {
        openssh::Error::Disconnected => {
            RemoteError::Unreachable { host: host.to_owned(), detail: "the SSH master connection was lost".to_owned() }
        }
        openssh::Error::RemoteProcessTerminated => RemoteError::Unreachable {
            host: host.to_owned(),
            detail: "the remote process or the connection was terminated".to_owned(),
        },
        other => RemoteError::Session { host: host.to_owned(), detail: error_chain(&other) },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

/// Reads `r` to its end keeping at most `cap` bytes (the head, or the tail with `keep_tail`);
/// memory stays below `cap + READ_CHUNK`. A read error is an error, never the end of output.
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize, keep_tail: bool) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        if keep_tail {
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > cap {
                buf.drain(..buf.len() - cap);
            }
        } else if buf.len() < cap {
            let room = cap - buf.len();
            buf.extend_from_slice(&chunk[..n.min(room)]);
        }
    }
    Ok(buf)
}

/// Prefix of the private directories in the temp dir.
const PRIVATE_DIR_PREFIX: &str = "slipway-ssh-";
/// File in a private directory naming the process that made it: `<pid> <start time>`.
const OWNER_FILE: &str = "owner";

/// `<pid> <start time in clock ticks>`: unlike a pid alone, not reused by a later process (a
/// restarted container's controller is PID 1 again).
fn process_identity(pid: u32) -> String {
    let start = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        // The command name is in parentheses and may contain spaces; fields after it are plain.
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.to_owned()))
        .and_then(|rest| rest.split_whitespace().nth(19).map(str::to_owned))
        .unwrap_or_default();
    format!("{pid} {start}")
}

/// Removes the private directories (keys included) left in `dir` by controllers that no longer
/// run, e.g. one killed while it connected. Returns how many it removed.
/// Why OpenSSH cannot run as this process's user, if it cannot: `ssh` refuses to start for a uid
/// without a passwd entry ("No user exists for uid 65532"), as in an image that lacks one.
pub fn local_user_problem() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uid: u32 = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()?;
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    (!has_passwd_entry(&passwd, uid)).then(|| {
        format!("uid {uid} has no entry in /etc/passwd, and OpenSSH refuses to run without one: run the controller image, or add the entry")
    })
}

/// Does `passwd` (the text of /etc/passwd) hold an entry for `uid`?
fn has_passwd_entry(passwd: &str, uid: u32) -> bool {
    passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.split(':').nth(2).and_then(|u| u.parse::<u32>().ok()) == Some(uid))
}

pub fn remove_orphaned_private_dirs(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PRIVATE_DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let owner_alive = fs::read_to_string(path.join(OWNER_FILE)).ok().is_some_and(|owner| {
            let pid = owner.split_whitespace().next().and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| process_identity(pid) == owner.trim())
        });
        if !owner_alive && fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl HostConnection {
    /// Open the master connection. Nothing runs on the host unless the host proves a key listed
    /// in `target.known_hosts`; there is no code path that accepts an unknown or changed key.
    pub async fn connect(target: &HostTarget, options: ConnectOptions) -> Result<HostConnection, RemoteError> {
        target.validate()?;
        let host = target.host_label();
        let local = |what: &str, e: std::io::Error| RemoteError::Local { detail: format!("{what}: {e}") };
        let dir = tempfile::Builder::new()
            .prefix(PRIVATE_DIR_PREFIX)
            .tempdir()
            .map_err(|e| local("creating the private SSH directory", e))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(|e| local("restricting the private SSH directory", e))?;
        // Written first, so a controller killed while connecting leaves a directory that the
        // next controller recognises as orphaned and removes, key included.
        write_private_file(&dir.path().join(OWNER_FILE), process_identity(std::process::id()).as_bytes())?;
        write_private_file(&dir.path().join("id"), target.private_key.expose())?;
        write_private_file(&dir.path().join("known_hosts"), target.known_hosts.as_bytes())?;
        write_private_file(&dir.path().join("ssh_config"), ssh_config(dir.path(), &options).as_bytes())?;

        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .port(target.port)
            .keyfile(dir.path().join("id"))
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(dir.path().join("known_hosts"))
            .config_file(dir.path().join("ssh_config"))
            .connect_timeout(options.connect_timeout.max(Duration::from_secs(1)))
            .server_alive_interval(options.server_alive_interval.max(Duration::from_secs(1)))
            .control_directory(dir.path())
            // A master orphaned by a killed controller exits on its own once idle.
            .control_persist(ControlPersist::IdleFor(MASTER_IDLE_EXIT));

        let started = Instant::now();
        let limit = options.connect_timeout + Duration::from_secs(5);
        let session = match tokio::time::timeout(limit, builder.connect_mux(target.address.as_str())).await {
            Err(_) => {
                return Err(RemoteError::Unreachable {
                    host,
                    detail: format!("no SSH handshake within {}s", limit.as_secs_f32()),
                });
            }
            Ok(Err(openssh::Error::Connect(e))) => {
                if e.kind() == std::io::ErrorKind::NotFound {
                    let why = local_user_problem().unwrap_or_else(|| "is openssh-client installed?".into());
                    return Err(RemoteError::Local {
                        detail: format!("cannot run the local `ssh` client ({why}): {e}"),
                    });
                }
                return Err(classify_ssh_failure(&host, &target.user, &e.to_string()));
            }
            Ok(Err(openssh::Error::Master(e))) => {
                return Err(local("creating the SSH control directory", e));
            }
            Ok(Err(e)) => return Err(map_session_error(&host, e)),
            Ok(Ok(s)) => s,
        };
        // The master is authenticated; the key need not stay on disk for the connection's lifetime.
        let _ = fs::remove_file(dir.path().join("id"));
        tracing::debug!(host = %host, user = %target.user, elapsed_ms = started.elapsed().as_millis() as u64, "ssh master connected");

        let max_sessions = options.max_sessions.max(1);
        let master = Master {
            session: Some(session),
            dir: Some(dir),
            host,
            user: target.user.clone(),
            options,
            docker: OnceCell::new(),
            flavor: std::sync::OnceLock::new(),
            forwards: tokio::sync::Mutex::new(HashMap::new()),
            forward_seq: AtomicU64::new(0),
            sessions: tokio::sync::Semaphore::new(max_sessions),
            waits: tokio::sync::Semaphore::new(if max_sessions >= 4 { max_sessions / 2 } else { 0 }),
            handle_seq: AtomicU64::new(0),
        };
        Ok(HostConnection { master: Arc::new(master), redactor: Redactor::new(), handle: 0 })
    }

    /// Another handle on the same master, with its own (empty) redactor and its own TCP forwards.
    pub fn share(&self) -> HostConnection {
        let handle = self.master.handle_seq.fetch_add(1, Ordering::Relaxed) + 1;
        HostConnection { master: self.master.clone(), redactor: Redactor::new(), handle }
    }

    /// Do both handles use the same master?
    pub fn same_master(&self, other: &HostConnection) -> bool {
        Arc::ptr_eq(&self.master, &other.master)
    }

    /// `address:port` of the host.
    pub fn host(&self) -> &str {
        &self.master.host
    }

    pub fn user(&self) -> &str {
        &self.master.user
    }

    pub fn options(&self) -> &ConnectOptions {
        &self.master.options
    }

    /// The redactor of this connection: register secret values so they are masked in every
    /// text this connection hands out.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// The private directory (key, known_hosts, sockets). For tests that check its permissions.
    pub fn private_dir(&self) -> &Path {
        self.master.dir.as_ref().map(TempDir::path).unwrap_or_else(|| Path::new("/nonexistent"))
    }

    fn session(&self) -> &Session {
        self.master.session.as_ref().expect("session is only taken by close(self)")
    }

    /// Leave to run one command that waits on the host (for a host job to end), held while it
    /// runs; `None` when half the master's sessions already wait, so waiting never takes the
    /// sessions the Environments sharing the master need for their own commands.
    pub fn try_wait_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.master.waits.try_acquire().ok()
    }

    /// Is the master still alive?
    pub async fn check(&self) -> Result<(), RemoteError> {
        self.session().check().await.map_err(|e| map_session_error(&self.master.host, e))
    }

    /// Run a command and return its output whatever its exit status; errors are transport
    /// failures and timeouts only.
    pub async fn output(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let rendered = cmd.render()?;
        let label = cmd.display_label();
        let limit = cmd.timeout_override().unwrap_or(self.master.options.command_timeout);
        let started = Instant::now();
        let run = async {
            // Waiting for a free session counts against the command's time limit.
            let _session = self.master.sessions.acquire().await.map_err(|_| self.lost(&label))?;
            let mut c = self.session().raw_command(&rendered);
            c.stdin(if cmd.stdin_bytes().is_some() { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = match c.spawn().await {
                Ok(child) => child,
                Err(e) => return Err(self.lost_or(&label, map_session_error(&self.master.host, e)).await),
            };
            let stdin = child.stdin().take();
            let stdout = child.stdout().take();
            let stderr = child.stderr().take();
            let feed = async move {
                if let (Some(mut w), Some(input)) = (stdin, cmd.stdin_bytes()) {
                    // A program that exits without reading is judged by its exit status.
                    let _ = w.write_all(input.expose()).await;
                    let _ = w.shutdown().await;
                }
            };
            let out = async move {
                match stdout {
                    Some(r) => read_capped(r, STDOUT_CAP, false).await,
                    None => Ok(Vec::new()),
                }
            };
            let err = async move {
                match stderr {
                    Some(r) => read_capped(r, STDERR_CAP, true).await,
                    None => Ok(Vec::new()),
                }
            };
            let ((), stdout, stderr) = tokio::join!(feed, out, err);
            let waited = child.wait().await;
            let (stdout, stderr) = match (stdout, stderr) {
                (Ok(o), Ok(e)) => (o, e),
                (Err(e), _) | (_, Err(e)) => {
                    let detail = format!("reading the output of `{label}` failed: {e}");
                    return Err(self
                        .lost_or(&label, RemoteError::Session { host: self.master.host.clone(), detail })
                        .await);
                }
            };
            let exit_code = match waited {
                Ok(status) => status.code(),
                // The native mux reports exit 127 as an error; keep it an exit status.
                Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => Some(127),
                Err(openssh::Error::RemoteProcessTerminated) => None,
                Err(e) => return Err(self.lost_or(&label, map_session_error(&self.master.host, e)).await),
            };
            if exit_code.is_none() {
                // No exit status: the program was killed on the host, or the connection died
                // and its outcome is unknown. Only a live master makes it the former.
                if self.session().check().await.is_err() {
                    return Err(self.lost(&label));
                }
            }
            Ok(CommandOutput::new(exit_code, stdout, stderr, self.redactor.clone(), started.elapsed()))
        };
        let result = match tokio::time::timeout(limit, run).await {
            Ok(r) => r,
            Err(_) => {
                Err(RemoteError::Timeout { operation: format!("`{label}` on {}", self.master.host), after: limit })
            }
        };
        match &result {
            Ok(o) => {
                tracing::debug!(host = %self.master.host, command = %label, exit_code = ?o.exit_code(), elapsed_ms = o.elapsed.as_millis() as u64, "remote command finished")
            }
            Err(e) => {
                tracing::debug!(host = %self.master.host, command = %label, reason = e.reason(), "remote command failed")
            }
        }
        result
    }

    /// `Unreachable` when the master is gone (the command's outcome on the host is unknown),
    /// else `otherwise`.
    pub(super) async fn lost_or(&self, label: &str, otherwise: RemoteError) -> RemoteError {
        match self.session().check().await {
            Ok(()) => otherwise,
            Err(_) => self.lost(label),
        }
    }

    fn lost(&self, label: &str) -> RemoteError {
        RemoteError::Unreachable {
            host: self.master.host.clone(),
            detail: format!("the SSH connection was lost while `{label}` ran; its outcome on the host is unknown"),
        }
    }

    /// Run a command; a non-zero exit becomes [`RemoteError::CommandFailed`].
    pub async fn run(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let label = cmd.display_label();
        self.output(cmd).await?.into_checked(&label)
    }

    fn next_socket_path(&self, prefix: &str) -> PathBuf {
        let n = self.master.forward_seq.fetch_add(1, Ordering::Relaxed);
        self.private_dir().join(format!("{prefix}-{n}.sock"))
    }

    async fn forward(&self, key: String, remote: Socket<'static>) -> Result<PathBuf, RemoteError> {
        let mut forwards = self.master.forwards.lock().await;
        if let Some(f) = forwards.get(&key) {
            return Ok(f.local.clone());
        }
        let local = self.next_socket_path("fwd");
        if let Err(e) = self.session().request_port_forward(ForwardType::Local, local.clone(), remote.clone()).await {
            let refused = RemoteError::Session {
                host: self.master.host.clone(),
                detail: format!(
                    "forwarding to {key} was refused: {} (is AllowTcpForwarding / AllowStreamLocalForwarding enabled in sshd?)",
                    error_chain(&e)
                ),
            };
            return Err(self.lost_or(&format!("forward to {key}"), refused).await);
        }
        forwards.insert(key, Forward { local: local.clone(), remote });
        Ok(local)
    }

    /// Closes this handle's forwards to TCP ports (health checks open one per container address,
    /// and container addresses change with every release); the Docker socket's forward, and the
    /// forwards of other handles on the same master, stay.
    pub async fn close_tcp_forwards(&self) {
        let mut forwards = self.master.forwards.lock().await;
        let mine = self.tcp_forward_prefix();
        let tcp: Vec<String> = forwards.keys().filter(|k| k.starts_with(&mine)).cloned().collect();
        for key in tcp {
            if let Some(f) = forwards.remove(&key) {
                if let Err(e) =
                    self.session().close_port_forward(ForwardType::Local, f.local.clone(), f.remote.clone()).await
                {
                    tracing::debug!(host = %self.master.host, forward = key, error = %error_chain(&e), "closing a forward");
                }
                let _ = fs::remove_file(&f.local);
            }
        }
    }

    /// The key prefix of this handle's TCP forwards.
    fn tcp_forward_prefix(&self) -> String {
        format!("tcp{}:", self.handle)
    }

    /// Forwards currently open on the master, for every handle (for tests and metrics).
    pub async fn forward_count(&self) -> usize {
        self.master.forwards.lock().await.len()
    }

    /// A local unix socket (inside the private directory) whose connections reach
    /// `host:port` as seen from the host, through the master connection.
    pub async fn forward_to_tcp(&self, host: &str, port: u16) -> Result<PathBuf, RemoteError> {
        let key = format!("{}{host}:{port}", self.tcp_forward_prefix());
        self.forward(key, Socket::TcpSocket { host: host.to_owned().into(), port }).await
    }

    /// A local unix socket whose connections reach the unix socket `remote_path` on the host.
    pub async fn forward_to_unix(&self, remote_path: &str) -> Result<PathBuf, RemoteError> {
        validate::absolute_path("remote socket path", remote_path)?;
        let key = format!("unix:{remote_path}");
        self.forward(key, Socket::UnixSocket { path: PathBuf::from(remote_path).into() }).await
    }

    /// Shut the master down and remove the private directory, unless other handles still use
    /// it (it then shuts down when the last of them is dropped).
    pub async fn close(self) -> Result<(), RemoteError> {
        let Ok(mut master) = Arc::try_unwrap(self.master) else {
            return Ok(());
        };
        let host = master.host.clone();
        let res = match master.session.take() {
            Some(s) => s.close().await.map_err(|e| map_session_error(&host, e)),
            None => Ok(()),
        };
        if let Some(dir) = master.dir.take() {
            let _ = dir.close();
        }
        res
    }
}

impl Exec for HostConnection {
    fn host(&self) -> &str {
        &self.master.host
    }

    fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn command_timeout(&self) -> Duration {
        self.master.options.command_timeout
    }

    fn flavor_cache(&self) -> Option<&std::sync::OnceLock<super::compose::ComposeFlavor>> {
        Some(&self.master.flavor)
    }

    fn output(&self, cmd: &RemoteCommand) -> impl Future<Output = Result<CommandOutput, RemoteError>> + Send {
        HostConnection::output(self, cmd)
    }

    fn forward_to_tcp(&self, host: &str, port: u16) -> impl Future<Output = Result<PathBuf, RemoteError>> + Send {
        HostConnection::forward_to_tcp(self, host, port)
    }

    fn forward_to_unix(&self, remote_path: &str) -> impl Future<Output = Result<PathBuf, RemoteError>> + Send {
        HostConnection::forward_to_unix(self, remote_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_has_a_passwd_entry_only_when_a_line_names_it() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# slipway:x:65533:65533::/:/bin/false\nslipway:x:65532:65532:Slipway controller:/home/slipway:/usr/sbin/nologin\n";
        for (uid, want) in [(0, true), (65532, true), (65533, false), (1000, false)] {
            assert_eq!(has_passwd_entry(passwd, uid), want, "uid {uid}");
        }
        assert!(!has_passwd_entry("", 0));
    }

    #[test]
    fn orphaned_private_dirs_are_removed_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let make = |name: &str, owner: Option<String>| {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("id"), "PRIVATE KEY").unwrap();
            if let Some(o) = owner {
                fs::write(d.join(OWNER_FILE), o).unwrap();
            }
            d
        };
        let live = make("slipway-ssh-live", Some(process_identity(std::process::id())));
        // The same pid with another start time: a restarted container reusing the pid.
        let reused = make("slipway-ssh-reused", Some(format!("{} 1", std::process::id())));
        let dead = make("slipway-ssh-dead", Some("4194303 12345".to_owned()));
        let killed_early = make("slipway-ssh-noowner", None);
        let unrelated = make("something-else", None);
        assert_eq!(remove_orphaned_private_dirs(tmp.path()), 3);
        assert!(live.join("id").exists());
        assert!(unrelated.exists());
        for d in [reused, dead, killed_early] {
            assert!(!d.exists(), "{} survived", d.display());
        }
    }
}
