//! [`Exec`]: what every remote action needs from a host (run a command, open a forward), so
//! compose, git, `.env` and host jobs are handles over it, implemented by the SSH transport
//! ([`super::HostConnection`]) and by a recording fake ([`FakeHost`]) for unit tests.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use super::command::RemoteCommand;
use super::error::{self, RemoteError};
use super::secret::Redactor;

/// What a remote program did.
pub struct CommandOutput {
    exit_code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    redactor: Redactor,
    pub elapsed: Duration,
}

impl std::fmt::Debug for CommandOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOutput")
            .field("exit_code", &self.exit_code)
            .field("stdout_bytes", &self.stdout.len())
            .field("stderr_bytes", &self.stderr.len())
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

impl CommandOutput {
    pub fn new(
        exit_code: Option<i32>,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        redactor: Redactor,
        elapsed: Duration,
    ) -> CommandOutput {
        CommandOutput { exit_code, stdout, stderr, redactor, elapsed }
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Raw stdout, for parsing. Do not log it: use [`CommandOutput::output_tail`].
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stdout_bytes(&self) -> &[u8] {
        &self.stdout
    }

    pub fn stderr_bytes(&self) -> &[u8] {
        &self.stderr
    }

    /// Raw stderr, for parsing. Do not log it: use [`CommandOutput::stderr_tail`].
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Last lines of stderr, redacted: safe for errors and status.
    pub fn stderr_tail(&self) -> String {
        self.redactor.redact(&error::tail(&self.stderr(), error::STDERR_TAIL_LINES, error::STDERR_TAIL_BYTES))
    }

    /// Last `lines` lines of stdout followed by stderr, redacted: safe for `status.steps[].outputTail`.
    pub fn output_tail(&self, lines: usize, max_bytes: usize) -> String {
        let mut all = self.stdout();
        if !all.is_empty() && !all.ends_with('\n') {
            all.push('\n');
        }
        all.push_str(&self.stderr());
        self.redactor.redact(&error::tail(&all, lines, max_bytes)).to_owned()
    }

    /// The output of one program of a script that ran several, masked like this one.
    pub fn part(&self, exit_code: Option<i32>, stdout: Vec<u8>, stderr: Vec<u8>) -> CommandOutput {
        CommandOutput::new(exit_code, stdout, stderr, self.redactor.clone(), self.elapsed)
    }

    /// `Err(CommandFailed)` unless the program exited 0.
    pub fn into_checked(self, program: &str) -> Result<CommandOutput, RemoteError> {
        if self.success() {
            Ok(self)
        } else {
            Err(RemoteError::CommandFailed {
                program: program.to_owned(),
                exit_code: self.exit_code,
                stderr_tail: self.stderr_tail(),
            })
        }
    }
}

/// A host commands run on. Errors are transport failures and timeouts only: a program that ran
/// and failed is an `Ok` output with its exit code; a program whose exit status was lost because
/// the connection died is [`RemoteError::Unreachable`], never an output.
pub trait Exec: Send + Sync {
    /// `address:port`, for messages.
    fn host(&self) -> &str;

    /// Masks secret values in every text handed out.
    fn redactor(&self) -> &Redactor;

    /// The default limit of one command.
    fn command_timeout(&self) -> Duration;

    /// Runs `cmd` and returns its output whatever its exit status.
    fn output(&self, cmd: &RemoteCommand) -> impl Future<Output = Result<CommandOutput, RemoteError>> + Send;

    /// Runs `cmd`; a non-zero exit becomes [`RemoteError::CommandFailed`].
    fn run(&self, cmd: &RemoteCommand) -> impl Future<Output = Result<CommandOutput, RemoteError>> + Send {
        async move {
            let label = cmd.display_label();
            self.output(cmd).await?.into_checked(&label)
        }
    }

    /// Where the compose CLI flavor found on this host is kept for the life of the connection
    /// (a new SSH master looks again); `None`: not kept, detected on every use.
    fn flavor_cache(&self) -> Option<&std::sync::OnceLock<super::compose::ComposeFlavor>> {
        None
    }

    /// A local unix socket whose connections reach `host:port` as seen from the host.
    fn forward_to_tcp(&self, host: &str, port: u16) -> impl Future<Output = Result<PathBuf, RemoteError>> + Send;

    /// A local unix socket whose connections reach the unix socket `remote_path` on the host.
    fn forward_to_unix(&self, remote_path: &str) -> impl Future<Output = Result<PathBuf, RemoteError>> + Send;
}

/// One command the fake saw: the argv, working directory and the rendered string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    pub rendered: String,
    pub stdin: bool,
}

impl Recorded {
    /// The argv joined with spaces, for readable assertions.
    pub fn line(&self) -> String {
        self.argv.join(" ")
    }
}

/// A scripted answer of the fake.
#[derive(Debug, Clone)]
pub enum FakeReply {
    Exit {
        code: i32,
        stdout: String,
        stderr: String,
    },
    /// The connection died while the command ran.
    Unreachable,
}

impl FakeReply {
    pub fn ok(stdout: impl Into<String>) -> Self {
        FakeReply::Exit { code: 0, stdout: stdout.into(), stderr: String::new() }
    }

    pub fn exit(code: i32, stderr: impl Into<String>) -> Self {
        FakeReply::Exit { code, stdout: String::new(), stderr: stderr.into() }
    }
}

/// A recording fake [`Exec`]: every command is recorded; replies come from rules matched on the
/// argv line (first rule whose needle the line contains, each rule used once unless sticky),
/// else exit 0 with no output.
#[derive(Default)]
pub struct FakeHost {
    redactor: Redactor,
    seen: Mutex<Vec<Recorded>>,
    rules: Mutex<VecDeque<(String, FakeReply, bool)>>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reply `reply` to the next command whose argv line contains `needle`.
    pub fn on(&self, needle: &str, reply: FakeReply) -> &Self {
        self.rules.lock().expect("fake rules").push_back((needle.to_owned(), reply, false));
        self
    }

    /// Reply `reply` to every command whose argv line contains `needle`.
    pub fn always(&self, needle: &str, reply: FakeReply) -> &Self {
        self.rules.lock().expect("fake rules").push_back((needle.to_owned(), reply, true));
        self
    }

    /// Every command seen so far.
    pub fn commands(&self) -> Vec<Recorded> {
        self.seen.lock().expect("fake log").clone()
    }

    /// Argv lines seen so far.
    pub fn lines(&self) -> Vec<String> {
        self.commands().iter().map(Recorded::line).collect()
    }
}

impl Exec for FakeHost {
    fn host(&self) -> &str {
        "fake:22"
    }

    fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_secs(120)
    }

    async fn output(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
        let rendered = cmd.render()?;
        let mut argv = vec![cmd.program().to_owned()];
        argv.extend(cmd.arguments().iter().cloned());
        let rec =
            Recorded { argv, cwd: cmd.working_dir().map(str::to_owned), rendered, stdin: cmd.stdin_bytes().is_some() };
        let line = rec.line();
        self.seen.lock().expect("fake log").push(rec);
        let reply = {
            let mut rules = self.rules.lock().expect("fake rules");
            let found = rules.iter().position(|(needle, _, _)| line.contains(needle.as_str()));
            match found {
                Some(i) if rules[i].2 => Some(rules[i].1.clone()),
                Some(i) => rules.remove(i).map(|r| r.1),
                None => None,
            }
        };
        match reply.unwrap_or_else(|| FakeReply::ok("")) {
            FakeReply::Exit { code, stdout, stderr } => Ok(CommandOutput::new(
                Some(code),
                stdout.into_bytes(),
                stderr.into_bytes(),
                self.redactor.clone(),
                Duration::ZERO,
            )),
            FakeReply::Unreachable => {
                Err(RemoteError::Unreachable { host: self.host().to_owned(), detail: "fake connection lost".into() })
            }
        }
    }

    async fn forward_to_tcp(&self, host: &str, port: u16) -> Result<PathBuf, RemoteError> {
        Err(RemoteError::Local { detail: format!("the fake host cannot forward to {host}:{port}") })
    }

    async fn forward_to_unix(&self, remote_path: &str) -> Result<PathBuf, RemoteError> {
        Err(RemoteError::Local { detail: format!("the fake host cannot forward to {remote_path}") })
    }
}
