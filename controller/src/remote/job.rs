//! Host jobs: a step that changes the host (build, migration, `compose up`) runs detached on the
//! host, keyed by the object's UID and the step name, so it neither dies with the controller (or
//! its SSH master) nor outlives its deadline, and two jobs of one compose project never overlap.
//!
//! On the host, under the deploy user's `$HOME`:
//!
//! ```text
//! ~/.slipway/<project>/lock                  flock(1)ed by the running job for its whole life
//! ~/.slipway/<project>/holder                `<uid>/<step>` of the job that took the lock last
//! ~/.slipway/<project>/runs/<uid>/<step>/    one run; `mkdir` of it is the claim
//!     alive      flock(1)ed by the job (and every process it starts): held = still running
//!     pid        the job's pid = its process group = its session
//!     started    host clock (epoch seconds) at start
//!     exit       `<code> <epoch seconds>`, written by the job when its command returns
//!     terminated epoch seconds, written by `terminate` before it signals
//!     log        stdout and stderr of the job (stays on the host; a 64 KiB tail is read)
//!     argv, cwd, env   what runs, for humans
//! ```
//!
//! Liveness is the `alive` lock, not the pid: the kernel releases it when the last process that
//! inherited it exits, so neither a reused pid nor a reboot can make a dead job look alive.
//! Every operation is one fixed `sh` script ([`JOB_SCRIPT`]) with all variable data as
//! positional parameters, quoted by [`RemoteCommand::render`]; the job's argv runs through
//! `exec "$@"`, never re-parsed by a shell.

use std::time::Duration;

use super::command::RemoteCommand;
use super::error::{self, RemoteError};
use super::exec::Exec;
use super::validate;

/// The Docker label put on every container a job starts (`compose run --label`, `docker run
/// --label`): containers belong to the Docker daemon, not to the job's process group, so
/// [`Jobs::terminate`] removes them by this label.
pub const JOB_LABEL: &str = "slipway.dev/job";
/// Bytes of a finished job's log read back (the whole log stays on the host).
pub const TAIL_READ_BYTES: usize = 64 * 1024;
/// What of a tail may reach status: at most this many bytes ...
pub const STATUS_TAIL_BYTES: usize = 4 * 1024;
/// ... and this many lines.
pub const STATUS_TAIL_LINES: usize = 40;
/// Extra time a `terminate` command gets beyond the grace period (KILL, container removal).
const TERMINATE_SLACK: Duration = Duration::from_secs(90);
/// Time a `wait` command gets beyond its wait (to report, as a poll does).
const WAIT_SLACK: Duration = Duration::from_secs(30);

/// The one script behind every job operation. `$1` is the operation, `$2` the project; the rest
/// depends on the operation (see [`Jobs`]). It prints `key=value` lines, then for a finished job
/// a `--tail--` line followed by the last [`TAIL_READ_BYTES`] of its log.
///
/// The runner (`$runner`) is the job's session leader: it ignores HUP, records its pid and start
/// time, restores the caller's umask, enters the working directory, exports the environment and
/// `exec`s the argv in a subshell, then records the exit status. It inherits fd 8 (`alive`) and
/// fd 9 (the project lock) from the start script, and so do the processes it starts: the project
/// stays locked until every one of them is gone.
pub const JOB_SCRIPT: &str = r#"set -u
op=$1 project=$2
case ${HOME:-} in /*) ;; *) echo "slipway: \$HOME is not an absolute path for this user" >&2; exit 2 ;; esac
base=$HOME/.slipway/$project
need() { command -v "$1" >/dev/null 2>&1 || { printf 'state=missing-tool\ntool=%s\n' "$1"; exit 0; }; }
need flock
alive() { [ -e "$1/alive" ] && ! flock -n -s "$1/alive" true 2>/dev/null; }
# waits (up to 2 s) for a run being started to record its start
settle() { i=0; while [ ! -e "$1/started" ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i + 1)); done; }
report() {
  r=$1
  [ -d "$r" ] || { echo state=notfound; return 0; }
  settle "$r"
  # alive before exit: the job writes exit, then releases alive.
  if alive "$r"; then live=1; else live=0; fi
  state=interrupted code= pid= started=
  if [ -e "$r/terminated" ]; then state=terminated
  elif [ -e "$r/exit" ]; then state=exited; read -r code _ <"$r/exit" || code=
  elif [ $live -eq 1 ]; then state=running
  fi
  [ -f "$r/pid" ] && read -r pid <"$r/pid"
  [ -f "$r/started" ] && read -r started <"$r/started"
  printf 'state=%s\npid=%s\nstarted=%s\nnow=%s\ncode=%s\nalive=%s\n' "$state" "$pid" "$started" "$(date +%s)" "$code" "$live"
  if [ $state != running ] && [ -f "$r/log" ]; then
    # one byte more than the tail kept tells the reader the log was longer
    echo --tail--
    tail -c 65537 "$r/log"
  fi
}
runner='trap "" HUP
r=$1 cwd=$2
echo $$ >"$r/pid.new" && mv -f -- "$r/pid.new" "$r/pid" || exit 1
date +%s >"$r/started.new" && mv -f -- "$r/started.new" "$r/started" || exit 1
umask "$3"
n=$4
shift 4
(
  cd -- "$cwd" || exit 126
  while [ "$n" -gt 0 ]; do export "$1" || exit 126; shift; n=$((n - 1)); done
  exec "$@"
)
rc=$?
printf "%s %s\n" "$rc" "$(date +%s)" >"$r/exit.new" && mv -f -- "$r/exit.new" "$r/exit"'
case $op in
start)
  need setsid
  uid=$3 step=$4 cwd=$5 nenv=$6
  shift 6
  case $nenv in '' | *[!0-9]*) echo "slipway: bad environment count" >&2; exit 2 ;; esac
  r=$base/runs/$uid/$step
  if [ -d "$r" ]; then report "$r"; exit 0; fi
  job_umask=$(umask)
  umask 077
  mkdir -p -- "$base/runs/$uid" || exit 1
  exec 9>>"$base/lock" || exit 1
  if ! flock -n 9; then
    holder=$(cat "$base/holder" 2>/dev/null) || holder=
    case $holder in *[!a-z0-9_/-]* | */*/* | /* | */) holder= ;; esac
    if [ "$holder" = "$uid/$step" ]; then settle "$r"; report "$r"; exit 0; fi
    printf 'state=busy\nholder=%s\n' "$holder"
    if [ -n "$holder" ] && [ -e "$base/runs/$holder/exit" ]; then echo holder_exited=1; fi
    exit 0
  fi
  printf '%s/%s\n' "$uid" "$step" >"$base/holder.new" && mv -f -- "$base/holder.new" "$base/holder" || exit 1
  if ! mkdir -- "$r" 2>/dev/null; then
    [ -d "$r" ] || { echo "slipway: cannot create the run directory $r" >&2; exit 1; }
    report "$r"
    exit 0
  fi
  exec 8>"$r/alive" || exit 1
  flock -w 5 8 || exit 1
  printf '%s\n' "$cwd" >"$r/cwd"
  i=0
  for a in "$@"; do
    if [ $i -lt "$nenv" ]; then printf '%s\n' "$a" >>"$r/env"; else printf '%s\n' "$a" >>"$r/argv"; fi
    i=$((i + 1))
  done
  : >"$r/log"
  # setsid -f, not `&`: an asynchronous list would start the job with INT and QUIT ignored
  setsid -f sh -c "$runner" slipway-job "$r" "$cwd" "$job_umask" "$nenv" "$@" </dev/null >>"$r/log" 2>&1 || exit 1
  exec 8>&- 9>&-
  report "$r"
  ;;
poll)
  report "$base/runs/$3/$4"
  ;;
wait)
  # poll, but first wait (up to the given tenths of a second) for a running job to end: the
  # job holds its alive lock until its last process exits, so the wait takes no CPU
  r=$base/runs/$3/$4 tenths=$5
  case $tenths in '' | *[!0-9]*) echo "slipway: bad wait time" >&2; exit 2 ;; esac
  if [ -d "$r" ]; then
    settle "$r"
    if [ ! -e "$r/exit" ] && alive "$r"; then
      flock -s -w "$((tenths / 10)).$((tenths % 10))" "$r/alive" true 2>/dev/null
    fi
  fi
  report "$r"
  ;;
terminate)
  r=$base/runs/$3/$4 grace=$5 label=$6 signalled=0
  if [ -d "$r" ]; then
    settle "$r"
    pid=$(cat "$r/pid" 2>/dev/null) || pid=
    # never 0, 1 or a leading zero: `kill -TERM -1` would signal every process of the user
    case $pid in '' | 0* | 1 | *[!0-9]*) pid= ;; esac
    if [ -n "$pid" ] && alive "$r"; then
      [ -e "$r/exit" ] || date +%s >"$r/terminated"
      signalled=1
      kill -TERM "-$pid" 2>/dev/null
      i=0; while alive "$r" && [ $i -lt "$grace" ]; do sleep 0.1; i=$((i + 1)); done
      kill -KILL "-$pid" 2>/dev/null
      i=0; while alive "$r" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
  fi
  if command -v docker >/dev/null 2>&1; then
    for pass in 1 2; do
      ids=$(docker ps -aq --filter "label=$label") || exit 1
      [ -z "$ids" ] || docker rm -f -v $ids >/dev/null || exit 1
      [ $signalled -eq 1 ] || break
      # a client killed mid-request may leave the daemon creating its container
      [ $pass -eq 2 ] || sleep 1
    done
  fi
  report "$r"
  ;;
prune)
  keep=$3
  case $keep in '' | *[!0-9]*) echo "slipway: bad keep count" >&2; exit 2 ;; esac
  if [ -d "$base/runs" ]; then
    exec 9>>"$base/lock" || exit 1
    if flock -n 9; then idle=1; else idle=0; fi
    cd -- "$base/runs" || exit 1
    # newest first by the run directory's mtime (last file written: exit or terminated)
    ls -td -- */*/ 2>/dev/null | {
      n=0
      while read -r d; do
        d=./${d%/}
        n=$((n + 1))
        [ $n -le "$keep" ] && continue
        alive "$d" && continue
        # no start time: a start may be under way unless the project is idle
        [ -e "$d/started" ] || [ $idle -eq 1 ] || continue
        rm -rf -- "$d" && echo "removed=${d#./}"
      done
    }
    for u in */; do rmdir -- "$u" 2>/dev/null; done
  fi
  echo state=pruned
  ;;
*)
  echo "slipway: unknown job operation $op" >&2
  exit 2
  ;;
esac
"#;

/// Which job: the compose project it belongs to (the lock), the object's UID and the step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    project: String,
    uid: String,
    step: String,
}

impl JobKey {
    /// A key, refused unless project, UID and step are names safe as path components.
    pub fn new(
        project: impl Into<String>,
        uid: impl Into<String>,
        step: impl Into<String>,
    ) -> Result<Self, RemoteError> {
        let key = JobKey { project: project.into(), uid: uid.into(), step: step.into() };
        validate::project_name(&key.project)?;
        validate::object_uid(&key.uid)?;
        validate::step_name(&key.step)?;
        Ok(key)
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn step(&self) -> &str {
        &self.step
    }

    /// `<uid>/<step>`: how the project's holder file names the job.
    pub fn holder(&self) -> String {
        format!("{}/{}", self.uid, self.step)
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.project, self.uid, self.step)
    }
}

/// The Docker label (key, value) marking containers started by the job `key`. The value is
/// `<project>.<uid>.<step>`: none of the three contains a `.`, so it is unambiguous, and every
/// character is a letter, digit, `-` or `_`.
pub fn job_label(key: &JobKey) -> (String, String) {
    (JOB_LABEL.to_owned(), format!("{}.{}.{}", key.project, key.uid, key.step))
}

/// What a job runs: an argv (executed as is, never through a shell), its working directory on
/// the host and extra environment. Everything here is visible in the host's process list:
/// secrets belong in `.env`, never in a job's argv or environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    pub argv: Vec<String>,
    pub cwd: String,
    pub env: Vec<(String, String)>,
}

impl JobSpec {
    pub fn new<I, S>(cwd: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        JobSpec { argv: argv.into_iter().map(Into::into).collect(), cwd: cwd.into(), env: Vec::new() }
    }

    /// Add a NON-secret environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The job that runs `cmd` (program, arguments, working directory and environment), e.g.
    /// [`super::Compose::run_command`]. `cmd` must have a working directory and no stdin.
    pub fn from_command(cmd: &RemoteCommand) -> Result<JobSpec, RemoteError> {
        let label = cmd.display_label();
        let cwd = cmd
            .working_dir()
            .ok_or_else(|| RemoteError::invalid(format!("job `{label}`"), "needs a working directory"))?;
        if cmd.stdin_bytes().is_some() {
            return Err(RemoteError::invalid(format!("job `{label}`"), "a detached job cannot be fed stdin"));
        }
        let mut argv = vec![cmd.program().to_owned()];
        argv.extend(cmd.arguments().iter().cloned());
        Ok(JobSpec { argv, cwd: cwd.to_owned(), env: cmd.environment().to_vec() })
    }

    fn validate(&self) -> Result<(), RemoteError> {
        match self.argv.first() {
            None => return Err(RemoteError::invalid("job argv", "must not be empty")),
            Some(p) if p.is_empty() => return Err(RemoteError::invalid("job program", "must not be empty")),
            Some(_) => {}
        }
        validate::absolute_path("job working directory", &self.cwd)?;
        for (k, _) in &self.env {
            validate::env_key(k)?;
        }
        Ok(())
    }
}

/// What became of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// No run directory for this key (never started, or pruned).
    NotFound,
    /// Still running; `elapsed` by the host's clock since it started. `pid` (its process group)
    /// is `None` only while another start of it is being set up.
    Running { pid: Option<u32>, elapsed: Duration },
    /// The job's command returned `code` (128 + n when a signal n killed it).
    Exited { code: i32, tail: String },
    /// [`Jobs::terminate`] stopped it (past its deadline): never a success, whatever it printed.
    Terminated { tail: String },
    /// It vanished without recording an exit status (host rebooted, killed from outside):
    /// never a success.
    Interrupted { tail: String },
}

impl JobState {
    pub fn is_running(&self) -> bool {
        matches!(self, JobState::Running { .. })
    }

    /// Finished (exited, terminated or interrupted).
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Exited { .. } | JobState::Terminated { .. } | JobState::Interrupted { .. })
    }

    pub fn succeeded(&self) -> bool {
        matches!(self, JobState::Exited { code: 0, .. })
    }

    /// The redacted tail of the job's log (up to [`TAIL_READ_BYTES`]) once it has finished.
    pub fn tail(&self) -> Option<&str> {
        match self {
            JobState::Exited { tail, .. } | JobState::Terminated { tail } | JobState::Interrupted { tail } => {
                Some(tail)
            }
            JobState::NotFound | JobState::Running { .. } => None,
        }
    }

    /// The part of the tail that may go into status (see [`status_tail`]).
    pub fn status_tail(&self) -> Option<String> {
        self.tail().map(status_tail)
    }

    /// A short phrase for messages: "exited with status 3", "interrupted", ...
    pub fn describe(&self) -> String {
        match self {
            JobState::NotFound => "not found".to_owned(),
            JobState::Running { elapsed, .. } => format!("running for {}s", elapsed.as_secs()),
            JobState::Exited { code, .. } => format!("exited with status {code}"),
            JobState::Terminated { .. } => "terminated (past its deadline)".to_owned(),
            JobState::Interrupted { .. } => {
                "interrupted: it vanished without an exit status (host rebooted or process killed)".to_owned()
            }
        }
    }
}

/// The last [`STATUS_TAIL_LINES`] lines, at most [`STATUS_TAIL_BYTES`] bytes, of an (already
/// redacted) output tail: what may reach `status.steps[].outputTail`.
pub fn status_tail(text: &str) -> String {
    error::tail(text, STATUS_TAIL_LINES, STATUS_TAIL_BYTES)
}

/// What the job script printed, before interpretation.
#[derive(Debug, Default, PartialEq, Eq)]
struct Report {
    state: String,
    pid: Option<u32>,
    started: Option<u64>,
    now: Option<u64>,
    code: Option<i32>,
    holder: String,
    holder_exited: bool,
    tool: String,
    removed: Vec<String>,
    tail: Vec<u8>,
}

fn parse_report(stdout: &[u8]) -> Result<Report, String> {
    const MARK: &[u8] = b"--tail--\n";
    let (head, tail) = if stdout.starts_with(MARK) {
        (&[][..], &stdout[MARK.len()..])
    } else {
        match stdout.windows(MARK.len() + 1).position(|w| w[0] == b'\n' && &w[1..] == MARK) {
            Some(i) => (&stdout[..i], &stdout[i + 1 + MARK.len()..]),
            None => (stdout, &[][..]),
        }
    };
    let head = std::str::from_utf8(head).map_err(|_| "the report is not UTF-8".to_owned())?;
    let mut r = Report { tail: tail.to_vec(), ..Report::default() };
    fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<Option<T>, String> {
        if v.is_empty() {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| format!("{key}={} is not a number", error::truncate(v, 20)))
    }
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| format!("unexpected line {:?}", error::truncate(line, 60)))?;
        match k {
            "state" => r.state = v.to_owned(),
            "pid" => r.pid = number(k, v)?,
            "started" => r.started = number(k, v)?,
            "now" => r.now = number(k, v)?,
            "code" => r.code = number(k, v)?,
            "holder" => r.holder = v.to_owned(),
            "holder_exited" => r.holder_exited = v == "1",
            "tool" => r.tool = v.to_owned(),
            "removed" => r.removed.push(v.to_owned()),
            // informational (alive=) or from a newer script: ignored
            _ => {}
        }
    }
    if r.state.is_empty() {
        return Err("no state= line".to_owned());
    }
    Ok(r)
}

/// Decode a log tail read with one byte more than [`TAIL_READ_BYTES`]: when it got that byte,
/// the log was longer, and everything up to the first newline (a cut line) is dropped, so a
/// secret cut in half at the start cannot slip past the redactor.
fn decode_tail(tail: &[u8]) -> String {
    let tail = if tail.len() > TAIL_READ_BYTES {
        match tail.iter().position(|b| *b == b'\n') {
            Some(i) => &tail[i + 1..],
            None => &[][..],
        }
    } else {
        tail
    };
    String::from_utf8_lossy(tail).into_owned()
}

/// Host jobs on one host.
pub struct Jobs<'a, E: Exec> {
    host: &'a E,
}

impl<'a, E: Exec> Jobs<'a, E> {
    pub fn new(host: &'a E) -> Self {
        Jobs { host }
    }

    fn script(op: &str, project: &str) -> RemoteCommand {
        RemoteCommand::new("sh").arg("-c").arg(JOB_SCRIPT).arg("slipway-job").arg(op).arg(project)
    }

    /// The command that starts `spec` as the job `key` (for tests of its shape).
    pub fn start_command(key: &JobKey, spec: &JobSpec) -> Result<RemoteCommand, RemoteError> {
        spec.validate()?;
        Ok(Self::script("start", &key.project)
            .arg(key.uid.clone())
            .arg(key.step.clone())
            .arg(spec.cwd.clone())
            .arg(spec.env.len().to_string())
            .args(spec.env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(spec.argv.iter().cloned())
            .label("start host job"))
    }

    /// Start `spec` as the job `key`, or return the state of the job `key` if it was started
    /// before (whoever started it, finished or not): one key runs once. [`RemoteError::HostBusy`]
    /// when another job of the project holds its lock; nothing was started then.
    pub async fn start(&self, key: &JobKey, spec: &JobSpec) -> Result<JobState, RemoteError> {
        let cmd = Self::start_command(key, spec)?;
        let report = self.call(&cmd).await?;
        match self.interpret(key, &cmd, report)? {
            // Another start of this very key holds the lock but has not created its run yet.
            JobState::NotFound => Err(RemoteError::HostBusy {
                host: self.host.host().to_owned(),
                project: key.project.clone(),
                holder: format!("job {} (being started)", key.holder()),
            }),
            state => Ok(state),
        }
    }

    /// The state of the job `key` (found by its key alone, e.g. after a controller restart).
    pub async fn poll(&self, key: &JobKey) -> Result<JobState, RemoteError> {
        let cmd = Self::script("poll", &key.project).arg(key.uid.clone()).arg(key.step.clone()).label("poll host job");
        let report = self.call(&cmd).await?;
        self.interpret(key, &cmd, report)
    }

    /// [`Jobs::poll`], after waiting up to `max` for a running job to end (on the host, without
    /// polling: the wait holds one of the master's sessions, and none of the host's CPU).
    pub async fn wait(&self, key: &JobKey, max: Duration) -> Result<JobState, RemoteError> {
        let tenths = (max.as_millis() / 100).min(600);
        let cmd = Self::script("wait", &key.project)
            .arg(key.uid.clone())
            .arg(key.step.clone())
            .arg(tenths.to_string())
            .timeout(max + WAIT_SLACK)
            .label("wait for host job");
        let report = self.call(&cmd).await?;
        self.interpret(key, &cmd, report)
    }

    /// Stop the job `key` and everything it left: TERM to its whole process group, KILL after
    /// `grace`, then remove the containers labelled with [`job_label`]. A job still running is
    /// recorded as terminated; one that had exited keeps its exit status. Safe to repeat, and
    /// on a job that is gone (its containers are still removed).
    pub async fn terminate(&self, key: &JobKey, grace: Duration) -> Result<JobState, RemoteError> {
        let (label_key, label_value) = job_label(key);
        let tenths = (grace.as_millis() / 100).min(u128::from(u32::MAX));
        let cmd = Self::script("terminate", &key.project)
            .arg(key.uid.clone())
            .arg(key.step.clone())
            .arg(tenths.to_string())
            .arg(format!("{label_key}={label_value}"))
            .timeout(grace + TERMINATE_SLACK)
            .label("terminate host job");
        let report = self.call(&cmd).await?;
        self.interpret(key, &cmd, report)
    }

    /// Remove the run directories of `project` beyond the `keep` most recent (by last
    /// activity), never one whose job is still running. Returns the removed `<uid>/<step>`s.
    pub async fn prune(&self, project: &str, keep: usize) -> Result<Vec<String>, RemoteError> {
        validate::project_name(project)?;
        let cmd = Self::script("prune", project).arg(keep.to_string()).label("prune host jobs");
        let report = self.call(&cmd).await?;
        match report.state.as_str() {
            "pruned" => Ok(report.removed),
            "missing-tool" => Err(self.missing_tool(&cmd, &report.tool)),
            other => Err(unexpected(&cmd, format!("state {:?}", error::truncate(other, 30)))),
        }
    }

    async fn call(&self, cmd: &RemoteCommand) -> Result<Report, RemoteError> {
        let out = self.host.run(cmd).await?;
        parse_report(out.stdout_bytes()).map_err(|detail| unexpected(cmd, detail))
    }

    fn missing_tool(&self, cmd: &RemoteCommand, tool: &str) -> RemoteError {
        let tool: String = tool.chars().filter(|c| c.is_ascii_alphanumeric()).take(20).collect();
        RemoteError::CommandFailed {
            program: cmd.display_label(),
            exit_code: Some(127),
            stderr_tail: format!(
                "`{tool}` is not installed on {}: host jobs need flock and setsid from util-linux \
                 (Debian/Ubuntu: apt-get install util-linux)",
                self.host.host()
            ),
        }
    }

    fn interpret(&self, key: &JobKey, cmd: &RemoteCommand, r: Report) -> Result<JobState, RemoteError> {
        let tail = || self.host.redactor().redact(&decode_tail(&r.tail));
        match r.state.as_str() {
            "notfound" => Ok(JobState::NotFound),
            "running" => {
                let elapsed = match (r.started, r.now) {
                    (Some(s), Some(n)) => Duration::from_secs(n.saturating_sub(s)),
                    _ => Duration::ZERO,
                };
                Ok(JobState::Running { pid: r.pid, elapsed })
            }
            "exited" => match r.code {
                Some(code) => Ok(JobState::Exited { code, tail: tail() }),
                None => Err(unexpected(cmd, "an exited job without an exit code".to_owned())),
            },
            "terminated" => Ok(JobState::Terminated { tail: tail() }),
            "interrupted" => Ok(JobState::Interrupted { tail: tail() }),
            "busy" => {
                let holder: String = r
                    .holder
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
                    .take(120)
                    .collect();
                let mut holder =
                    if holder.is_empty() { "another host job".to_owned() } else { format!("job {holder}") };
                if r.holder_exited {
                    holder.push_str(" (exited, but processes it started still run)");
                }
                Err(RemoteError::HostBusy { host: self.host.host().to_owned(), project: key.project.clone(), holder })
            }
            "missing-tool" => Err(self.missing_tool(cmd, &r.tool)),
            other => Err(unexpected(cmd, format!("unknown state {:?}", error::truncate(other, 30)))),
        }
    }
}

fn unexpected(cmd: &RemoteCommand, detail: String) -> RemoteError {
    RemoteError::UnexpectedOutput { program: cmd.display_label(), detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::exec::{FakeHost, FakeReply};

    fn key(uid: &str, step: &str) -> JobKey {
        JobKey::new("shop", uid, step).unwrap()
    }

    #[test]
    fn keys_are_validated() {
        JobKey::new("shop", "0c5f6a1e-8b2d-4c1e-9f3a-1234567890ab", "migrate").unwrap();
        JobKey::new("shop_2", "a", "m").unwrap();
        for (p, u, s) in [
            ("Shop", "a", "m"),
            ("shop", "", "m"),
            ("shop", "A", "m"),
            ("shop", "a/b", "m"),
            ("shop", "-rf", "m"),
            ("shop", "..", "m"),
            ("shop", &"a".repeat(65), "m"),
            ("shop", "a", ""),
            ("shop", "a", "1m"),
            ("shop", "a", "-m"),
            ("shop", "a", "m.x"),
            ("shop", "a", &format!("m{}", "a".repeat(41))),
            ("shop", "a", "m\n"),
            ("shop", "$(id)", "m"),
        ] {
            assert!(JobKey::new(p, u, s).is_err(), "{p:?} {u:?} {s:?}");
        }
    }

    #[test]
    fn label_is_derived_from_the_key() {
        let (k, v) = job_label(&key("0c5f-77", "migrate"));
        assert_eq!(k, "slipway.dev/job");
        assert_eq!(v, "shop.0c5f-77.migrate");
        assert!(v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    }

    #[test]
    fn start_command_is_the_constant_script_with_data_as_positional_arguments() {
        let spec = JobSpec::new("/srv/my shop", ["alembic", "upgrade", "$(touch /tmp/pwned)"]).env("MODE", "a b'c");
        let cmd = Jobs::<FakeHost>::start_command(&key("u1", "migrate"), &spec).unwrap();
        assert_eq!(cmd.program(), "sh");
        let args = cmd.arguments();
        assert_eq!(args[0], "-c");
        assert_eq!(args[1], JOB_SCRIPT, "the script text never varies");
        assert_eq!(
            &args[2..],
            [
                "slipway-job",
                "start",
                "shop",
                "u1",
                "migrate",
                "/srv/my shop",
                "1",
                "MODE=a b'c",
                "alembic",
                "upgrade",
                "$(touch /tmp/pwned)"
            ]
        );
        assert!(cmd.working_dir().is_none());
        // Hostile data reaches the remote shell only inside single quotes.
        let rendered = cmd.render().unwrap();
        assert!(rendered.ends_with(" 'MODE=a b'\\''c' alembic upgrade '$(touch /tmp/pwned)'"), "{rendered}");
    }

    #[test]
    fn start_refuses_bad_specs() {
        let k = key("u1", "migrate");
        for spec in [
            JobSpec::new("/srv", Vec::<String>::new()),
            JobSpec::new("/srv", [""]),
            JobSpec::new("srv", ["true"]),
            JobSpec::new("/srv/../etc", ["true"]),
            JobSpec::new("/srv", ["true"]).env("A;B", "x"),
        ] {
            assert!(Jobs::<FakeHost>::start_command(&k, &spec).is_err(), "{spec:?}");
        }
    }

    #[test]
    fn spec_from_a_compose_command() {
        let cmd = RemoteCommand::new("docker-compose")
            .args(["-p", "shop", "run", "--rm", "-T", "backend", "alembic", "upgrade", "head"])
            .current_dir("/srv/shop")
            .env("COMPOSE_NO_COLOR", "1");
        let spec = JobSpec::from_command(&cmd).unwrap();
        assert_eq!(spec.argv[0], "docker-compose");
        assert_eq!(spec.argv.last().unwrap(), "head");
        assert_eq!(spec.cwd, "/srv/shop");
        assert_eq!(spec.env, [("COMPOSE_NO_COLOR".to_owned(), "1".to_owned())]);
        assert!(JobSpec::from_command(&RemoteCommand::new("true")).is_err());
        let with_stdin = cmd.stdin(crate::remote::SecretBytes::from("x"));
        assert!(JobSpec::from_command(&with_stdin).is_err());
    }

    #[tokio::test]
    async fn poll_and_terminate_and_prune_commands() {
        let host = FakeHost::new();
        host.on("poll", FakeReply::ok("state=notfound\n"));
        host.on("terminate", FakeReply::ok("state=notfound\n"));
        host.on("prune", FakeReply::ok("removed=u1/build\nremoved=u0/migrate\nstate=pruned\n"));
        let jobs = Jobs::new(&host);
        let k = key("u1", "migrate");
        assert_eq!(jobs.poll(&k).await.unwrap(), JobState::NotFound);
        assert_eq!(jobs.terminate(&k, Duration::from_millis(2500)).await.unwrap(), JobState::NotFound);
        assert_eq!(jobs.prune("shop", 5).await.unwrap(), ["u1/build", "u0/migrate"]);
        assert!(jobs.prune("../x", 5).await.is_err());
        let seen = host.commands();
        assert_eq!(seen.len(), 3);
        for c in &seen {
            assert_eq!(&c.argv[..3], ["sh", "-c", JOB_SCRIPT]);
            assert_eq!(c.argv[3], "slipway-job");
        }
        assert_eq!(&seen[0].argv[4..], ["poll", "shop", "u1", "migrate"]);
        assert_eq!(&seen[1].argv[4..], ["terminate", "shop", "u1", "migrate", "25", "slipway.dev/job=shop.u1.migrate"]);
        assert_eq!(&seen[2].argv[4..], ["prune", "shop", "5"]);
    }

    #[tokio::test]
    async fn reports_are_interpreted() {
        let cases: Vec<(&str, JobState)> = vec![
            ("state=notfound\n", JobState::NotFound),
            (
                "state=running\npid=4242\nstarted=1000\nnow=1075\ncode=\nalive=1\n",
                JobState::Running { pid: Some(4242), elapsed: Duration::from_secs(75) },
            ),
            (
                "state=running\npid=\nstarted=\nnow=1075\ncode=\nalive=1\n",
                JobState::Running { pid: None, elapsed: Duration::ZERO },
            ),
            (
                "state=exited\npid=1\nstarted=1\nnow=2\ncode=3\nalive=0\n--tail--\nout\nerr\n",
                JobState::Exited { code: 3, tail: "out\nerr\n".into() },
            ),
            (
                "state=exited\npid=1\nstarted=1\nnow=2\ncode=0\nalive=0\n--tail--\n",
                JobState::Exited { code: 0, tail: String::new() },
            ),
            (
                "state=terminated\npid=1\nstarted=1\nnow=2\ncode=\nalive=0\n--tail--\nwhole\n",
                JobState::Terminated { tail: "whole\n".into() },
            ),
            (
                "state=interrupted\npid=1\nstarted=1\nnow=2\ncode=\nalive=0\n--tail--\nhalf",
                JobState::Interrupted { tail: "half".into() },
            ),
            // A tail that itself contains the marker line is still the tail.
            (
                "state=exited\ncode=1\n--tail--\nx\n--tail--\nstate=ok\n",
                JobState::Exited { code: 1, tail: "x\n--tail--\nstate=ok\n".into() },
            ),
        ];
        for (stdout, want) in cases {
            let host = FakeHost::new();
            host.always("slipway-job", FakeReply::ok(stdout));
            let got = Jobs::new(&host).poll(&key("u1", "migrate")).await.unwrap();
            assert_eq!(got, want, "{stdout:?}");
        }
    }

    #[test]
    fn a_cut_tail_loses_its_cut_first_line() {
        // Read one byte more than kept: the log was longer, its first line is cut.
        let (first, last) = ("ter2-password cut\n", "\nlast\n");
        let ys = "y".repeat(TAIL_READ_BYTES + 1 - first.len() - last.len());
        let read = format!("{first}{ys}{last}");
        assert_eq!(decode_tail(read.as_bytes()), format!("{ys}{last}"));
        let whole = format!("first\n{}", "z\n".repeat(100));
        assert_eq!(decode_tail(whole.as_bytes()), whole);
        let exact = format!("\n{}", "a".repeat(TAIL_READ_BYTES - 1) + "\n");
        assert_eq!(decode_tail(exact.as_bytes()).len(), TAIL_READ_BYTES);
        assert_eq!(decode_tail("q".repeat(TAIL_READ_BYTES + 1).as_bytes()), "");
    }

    #[tokio::test]
    async fn tails_are_redacted() {
        let host = FakeHost::new();
        host.redactor().register(b"hunter2-password");
        host.always(
            "slipway-job",
            FakeReply::ok("state=exited\ncode=1\n--tail--\nFATAL: auth failed for hunter2-password\n"),
        );
        let st = Jobs::new(&host).poll(&key("u1", "migrate")).await.unwrap();
        assert_eq!(st.tail(), Some("FATAL: auth failed for <redacted>\n"));
    }

    #[tokio::test]
    async fn busy_lock_is_host_busy_naming_the_holder() {
        let host = FakeHost::new();
        host.on("slipway-job", FakeReply::ok("state=busy\nholder=0c5f-77/build\n"));
        host.on("slipway-job", FakeReply::ok("state=busy\nholder=0c5f-77/build\nholder_exited=1\n"));
        host.on("slipway-job", FakeReply::ok("state=busy\nholder=\n"));
        let jobs = Jobs::new(&host);
        let spec = JobSpec::new("/srv/shop", ["true"]);
        let k = key("u1", "migrate");
        let e = jobs.start(&k, &spec).await.unwrap_err();
        assert_eq!(e.reason(), "HostBusy");
        assert!(e.is_transient());
        let msg = e.to_string();
        assert!(msg.contains("job 0c5f-77/build") && msg.contains("shop") && msg.contains("fake:22"), "{msg}");
        let msg = jobs.start(&k, &spec).await.unwrap_err().to_string();
        assert!(msg.contains("processes it started still run"), "{msg}");
        let msg = jobs.start(&k, &spec).await.unwrap_err().to_string();
        assert!(msg.contains("another host job"), "{msg}");
    }

    #[tokio::test]
    async fn missing_tool_and_garbage_are_errors() {
        let host = FakeHost::new();
        host.on("slipway-job", FakeReply::ok("state=missing-tool\ntool=setsid\n"));
        host.on("slipway-job", FakeReply::ok("hello\n"));
        host.on("slipway-job", FakeReply::ok("state=exited\ncode=x\n"));
        host.on("slipway-job", FakeReply::ok("state=exited\ncode=\n"));
        host.on("slipway-job", FakeReply::exit(2, "slipway: $HOME is not an absolute path for this user"));
        host.on("slipway-job", FakeReply::Unreachable);
        let jobs = Jobs::new(&host);
        let spec = JobSpec::new("/srv/shop", ["true"]);
        let k = key("u1", "migrate");
        let e = jobs.start(&k, &spec).await.unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`setsid` is not installed on fake:22") && msg.contains("apt-get install util-linux"),
            "{msg}"
        );
        assert!(!e.is_transient());
        for want in ["UnexpectedOutput", "UnexpectedOutput", "UnexpectedOutput", "CommandFailed", "Unreachable"] {
            assert_eq!(jobs.poll(&k).await.unwrap_err().reason(), want);
        }
    }

    #[test]
    fn status_tail_is_short() {
        let long: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let st = JobState::Exited { code: 1, tail: long };
        let t = st.status_tail().unwrap();
        assert!(t.len() <= STATUS_TAIL_BYTES);
        assert_eq!(t.lines().count(), STATUS_TAIL_LINES);
        assert!(t.ends_with("line 4999"));
        assert_eq!(JobState::NotFound.status_tail(), None);
        assert!(!JobState::Interrupted { tail: String::new() }.succeeded());
        assert!(!JobState::Terminated { tail: String::new() }.succeeded());
        assert!(JobState::Exited { code: 0, tail: String::new() }.succeeded());
    }
}

/// The script itself, through the local `sh` with a temporary `$HOME` (flock and setsid from
/// util-linux, as on a Debian host): what `Jobs` sends over SSH, rendered and run the same way.
#[cfg(test)]
mod on_local_sh {
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::Instant;

    use super::*;
    use crate::remote::exec::CommandOutput;
    use crate::remote::secret::Redactor;

    struct LocalSh {
        home: tempfile::TempDir,
        path: Option<PathBuf>,
        redactor: Redactor,
    }

    impl LocalSh {
        /// A host whose `docker` is a fake that logs its arguments to `$HOME/docker.log` (and
        /// lists no containers).
        fn new() -> Self {
            use std::os::unix::fs::PermissionsExt;
            let home = tempfile::tempdir().unwrap();
            let bin = home.path().join("fake-bin");
            std::fs::create_dir(&bin).unwrap();
            std::fs::write(bin.join("docker"), "#!/bin/sh\necho \"$*\" >>\"$HOME/docker.log\"\n").unwrap();
            std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
            LocalSh { home, path: Some(path.into()), redactor: Redactor::new() }
        }

        fn docker_calls(&self) -> String {
            std::fs::read_to_string(self.home.path().join("docker.log")).unwrap_or_default()
        }

        fn cwd(&self) -> &str {
            self.home.path().to_str().unwrap()
        }

        fn run_dir(&self, key: &JobKey) -> PathBuf {
            self.home.path().join(".slipway").join(key.project()).join("runs").join(key.uid()).join(key.step())
        }
    }

    impl Exec for LocalSh {
        fn host(&self) -> &str {
            "local-sh"
        }

        fn redactor(&self) -> &Redactor {
            &self.redactor
        }

        fn command_timeout(&self) -> Duration {
            Duration::from_secs(20)
        }

        async fn output(&self, cmd: &RemoteCommand) -> Result<CommandOutput, RemoteError> {
            let rendered = cmd.render()?;
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(&rendered).env("HOME", self.home.path()).stdin(Stdio::null()).kill_on_drop(true);
            if let Some(p) = &self.path {
                c.env("PATH", p);
            }
            let started = Instant::now();
            // Waits for EOF on stdout and stderr: a job that kept them open would hang here.
            let limit = cmd.timeout_override().unwrap_or(self.command_timeout());
            let out = tokio::time::timeout(limit, c.output())
                .await
                .map_err(|_| RemoteError::Timeout { operation: cmd.display_label(), after: limit })?
                .map_err(|e| RemoteError::Local { detail: e.to_string() })?;
            Ok(CommandOutput::new(out.status.code(), out.stdout, out.stderr, self.redactor.clone(), started.elapsed()))
        }

        async fn forward_to_tcp(&self, _: &str, _: u16) -> Result<PathBuf, RemoteError> {
            Err(RemoteError::Local { detail: "no forwards".into() })
        }

        async fn forward_to_unix(&self, _: &str) -> Result<PathBuf, RemoteError> {
            Err(RemoteError::Local { detail: "no forwards".into() })
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".to_owned(), "-c".to_owned(), script.to_owned(), "job".to_owned()]
    }

    async fn finished(jobs: &Jobs<'_, LocalSh>, key: &JobKey) -> JobState {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = jobs.poll(key).await.unwrap();
            if st.is_finished() {
                return st;
            }
            assert!(Instant::now() < deadline, "{key} still {st:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/proc/<pid>/stat` fields after the command name: state, ppid, pgrp, session.
    fn stat(pid: u32) -> Option<(char, u32, u32, u32)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &text[text.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f[0].chars().next()?, f[1].parse().ok()?, f[2].parse().ok()?, f[3].parse().ok()?))
    }

    /// Gone, or a zombie nobody reaped (this machine's PID 1 does not reap orphans).
    fn is_gone(pid: u32) -> bool {
        stat(pid).is_none_or(|s| s.0 == 'Z')
    }

    fn pid_of(st: &JobState) -> u32 {
        match st {
            JobState::Running { pid: Some(p), .. } => *p,
            other => panic!("expected a running job with a pid, got {other:?}"),
        }
    }

    /// Waits until `file` has a line `name=<pid>` and returns the pid.
    async fn logged_pid(file: &Path, name: &str) -> u32 {
        for _ in 0..200 {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if let Some(p) = text.lines().find_map(|l| l.strip_prefix(&format!("{name}="))) {
                return p.trim().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name}= never appeared in {}", file.display());
    }

    #[tokio::test]
    async fn a_job_runs_detached_in_its_own_session_and_reports_code_and_tail() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let work = host.home.path().join("work dir \"; touch pwned #");
        std::fs::create_dir(&work).unwrap();
        let key = JobKey::new("shop", "0c5f-1", "migrate").unwrap();
        let hostile = "a b'c $(touch pwned) `touch pwned` ${HOME}";
        let spec = JobSpec::new(
            work.to_str().unwrap(),
            sh("pwd; printf '%s\\n' \"$MODE\" \"$1\"; echo to-stderr >&2; sleep 1; exit 3"),
        )
        .env("MODE", hostile);
        let mut spec = spec;
        spec.argv.push(hostile.to_owned());
        let t = Instant::now();
        let st = jobs.start(&key, &spec).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "start waited for the job: {:?}", t.elapsed());
        let pid = pid_of(&st);
        // Its own session and process group, HUP ignored, stdin from /dev/null.
        let (_, _, pgrp, session) = stat(pid).unwrap();
        assert_eq!((pgrp, session), (pid, pid));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let sig_ign = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
        // HUP ignored; INT and QUIT not (as they would be for an asynchronous list of `sh`),
        // unless this test itself runs with them ignored (started in the background by a
        // non-interactive shell): a shell cannot undo what it inherited ignored.
        let own = std::fs::read_to_string("/proc/self/status").unwrap();
        let own = own.lines().find_map(|l| l.strip_prefix("SigIgn:")).unwrap().trim();
        let inherited = u64::from_str_radix(own, 16).unwrap() & 0b110;
        assert_eq!(u64::from_str_radix(sig_ign, 16).unwrap() & 0b111, 0b001 | inherited, "SigIgn: {sig_ign}");
        assert_eq!(std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(), Path::new("/dev/null"));

        let st = finished(&jobs, &key).await;
        let JobState::Exited { code, tail } = &st else { panic!("{st:?}") };
        assert_eq!(*code, 3);
        assert_eq!(*tail, format!("{}\n{hostile}\n{hostile}\nto-stderr\n", work.display()));
        assert!(!st.succeeded());
        assert!(!host.home.path().join("pwned").exists() && !work.join("pwned").exists());
        // The run directory holds what the layout promises, private to the user.
        let run = host.run_dir(&key);
        for f in ["pid", "started", "exit", "log", "argv", "cwd", "env", "alive"] {
            assert!(run.join(f).exists(), "{f} missing in {}", run.display());
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(host.home.path().join(".slipway")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(std::fs::read_to_string(run.join("pid")).unwrap().trim(), pid.to_string());
        assert_eq!(
            std::fs::read_to_string(host.home.path().join(".slipway/shop/holder")).unwrap().trim(),
            "0c5f-1/migrate"
        );
    }

    #[tokio::test]
    async fn a_missing_program_or_directory_is_an_exit_code_not_a_hang() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let a = JobKey::new("shop", "u1", "a").unwrap();
        jobs.start(&a, &JobSpec::new(host.cwd(), ["slipway-no-such-program"])).await.unwrap();
        let st = finished(&jobs, &a).await;
        assert!(matches!(&st, JobState::Exited { code: 127, tail } if tail.contains("not found")), "{st:?}");
        let b = JobKey::new("shop", "u1", "b").unwrap();
        jobs.start(&b, &JobSpec::new("/nonexistent-dir", ["true"])).await.unwrap();
        assert!(matches!(finished(&jobs, &b).await, JobState::Exited { code: 126, .. }));
        // A shell builtin's name is looked up as a program (exec), never run by the job's shell.
        let c = JobKey::new("shop", "u1", "c").unwrap();
        jobs.start(&c, &JobSpec::new(host.cwd(), ["exit", "0"])).await.unwrap();
        assert!(matches!(finished(&jobs, &c).await, JobState::Exited { code: 127, .. }));
    }

    #[tokio::test]
    async fn a_long_log_is_read_as_a_bounded_tail_of_whole_lines() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let key = JobKey::new("shop", "u1", "build").unwrap();
        let script = "i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i + 1)); done";
        jobs.start(&key, &JobSpec::new(host.cwd(), sh(script))).await.unwrap();
        let st = finished(&jobs, &key).await;
        let tail = st.tail().unwrap();
        assert!(tail.len() <= TAIL_READ_BYTES && tail.len() > TAIL_READ_BYTES - 20, "{}", tail.len());
        assert!(tail.starts_with("line ") && tail.ends_with("line 19999\n"), "{:?}", &tail[..20]);
        let short = st.status_tail().unwrap();
        assert!(short.len() <= STATUS_TAIL_BYTES && short.ends_with("line 19999"), "{short}");
        let log = std::fs::metadata(host.run_dir(&key).join("log")).unwrap().len();
        assert!(log > 100_000, "the whole log stays on the host ({log} bytes)");
    }

    #[tokio::test]
    async fn two_starts_with_one_key_run_once() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let key = JobKey::new("shop", "u1", "build").unwrap();
        let count = host.home.path().join("count");
        let spec =
            JobSpec::new(host.cwd(), sh("echo run >> \"$COUNT\"; sleep 0.5")).env("COUNT", count.to_str().unwrap());
        let (a, b) = tokio::join!(jobs.start(&key, &spec), jobs.start(&key, &spec));
        for r in [a, b] {
            match r {
                Ok(st) => assert!(st.is_running() || st.is_finished(), "{st:?}"),
                Err(e) => assert_eq!(e.reason(), "HostBusy", "{e}"),
            }
        }
        assert!(jobs.start(&key, &spec).await.unwrap().is_running());
        assert!(matches!(finished(&jobs, &key).await, JobState::Exited { code: 0, .. }));
        // Started again after it finished: still the one run, reported as such.
        assert!(matches!(jobs.start(&key, &spec).await.unwrap(), JobState::Exited { code: 0, .. }));
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "run\n");
    }

    #[tokio::test]
    async fn a_second_job_of_the_project_is_host_busy_until_the_first_ends() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let first = JobKey::new("shop", "u1", "build").unwrap();
        let second = JobKey::new("shop", "u2", "migrate").unwrap();
        let other_project = JobKey::new("blog", "u2", "migrate").unwrap();
        jobs.start(&first, &JobSpec::new(host.cwd(), ["sleep", "30"])).await.unwrap();
        let err = jobs.start(&second, &JobSpec::new(host.cwd(), ["true"])).await.unwrap_err();
        let RemoteError::HostBusy { project, holder, .. } = &err else { panic!("{err}") };
        assert_eq!((project.as_str(), holder.as_str()), ("shop", "job u1/build"));
        assert_eq!(jobs.poll(&second).await.unwrap(), JobState::NotFound, "a refused job left a run behind");
        // Other projects are not fenced.
        jobs.start(&other_project, &JobSpec::new(host.cwd(), ["true"])).await.unwrap();
        assert!(matches!(jobs.terminate(&first, Duration::from_secs(2)).await.unwrap(), JobState::Terminated { .. }));
        jobs.start(&second, &JobSpec::new(host.cwd(), ["sleep", "30"])).await.unwrap();
        // A job that ran before is reported, not refused, while another holds the lock.
        let again = jobs.start(&first, &JobSpec::new(host.cwd(), ["sleep", "30"])).await.unwrap();
        assert!(matches!(again, JobState::Terminated { .. }), "{again:?}");
        jobs.terminate(&second, Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn a_job_that_leaves_processes_keeps_the_project_locked() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let first = JobKey::new("shop", "u1", "build").unwrap();
        jobs.start(&first, &JobSpec::new(host.cwd(), sh("sleep 30 & exit 0"))).await.unwrap();
        assert!(finished(&jobs, &first).await.succeeded());
        let second = JobKey::new("shop", "u2", "up").unwrap();
        let err = jobs.start(&second, &JobSpec::new(host.cwd(), ["true"])).await.unwrap_err();
        assert!(err.to_string().contains("job u1/build (exited, but processes it started still run)"), "{err}");
        // terminate cleans up what it left, and keeps its exit status.
        assert!(jobs.terminate(&first, Duration::from_secs(1)).await.unwrap().succeeded());
        jobs.start(&second, &JobSpec::new(host.cwd(), ["true"])).await.unwrap();
    }

    #[tokio::test]
    async fn terminate_kills_the_whole_process_group() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let key = JobKey::new("shop", "u1", "migrate").unwrap();
        let log = host.run_dir(&key).join("log");
        // A child that ignores TERM (needs the KILL), one that shuts down on TERM (gets it: the
        // whole group is signalled, not only the leader), a plain child, and the job itself.
        let script = r#"sh -c 'trap "" TERM; echo stubborn=$$; while :; do sleep 1; done' &
sh -c 'trap "echo graceful; exit 0" TERM; echo graceful=$$; while :; do sleep 1 & wait; done' &
sleep 300 & echo child=$!
echo main=$$
wait"#;
        let st = jobs.start(&key, &JobSpec::new(host.cwd(), sh(script))).await.unwrap();
        let leader = pid_of(&st);
        let pids = [
            logged_pid(&log, "stubborn").await,
            logged_pid(&log, "graceful").await,
            logged_pid(&log, "child").await,
            logged_pid(&log, "main").await,
        ];
        for p in pids {
            assert_eq!(stat(p).unwrap().2, leader, "pid {p} is not in the job's process group");
        }
        let t = Instant::now();
        let st = jobs.terminate(&key, Duration::from_millis(300)).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
        assert!(matches!(st, JobState::Terminated { ref tail } if tail.contains("\ngraceful\n")), "{st:?}");
        for p in pids.into_iter().chain([leader]) {
            assert!(is_gone(p), "pid {p} survived terminate: {:?}", stat(p));
        }
        assert!(matches!(jobs.poll(&key).await.unwrap(), JobState::Terminated { .. }));
        // Containers are the daemon's, not the process group's: looked up by the job's label
        // (twice: a killed client may leave the daemon finishing its container).
        assert_eq!(host.docker_calls(), "ps -aq --filter label=slipway.dev/job=shop.u1.migrate\n".repeat(2));
        // Repeating it is harmless.
        assert!(matches!(jobs.terminate(&key, Duration::ZERO).await.unwrap(), JobState::Terminated { .. }));
    }

    #[tokio::test]
    async fn a_job_gone_without_an_exit_status_is_interrupted_even_if_its_pid_is_reused() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let key = JobKey::new("shop", "u1", "migrate").unwrap();
        let leader = pid_of(&jobs.start(&key, &JobSpec::new(host.cwd(), sh("echo hello; sleep 300"))).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Killed from outside (or the host rebooted): no exit status was written.
        let killed = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{leader}")]).status().unwrap();
        assert!(killed.success());
        let st = finished(&jobs, &key).await;
        assert_eq!(st, JobState::Interrupted { tail: "hello\n".into() });
        assert!(!st.succeeded());
        // Its pid now names a live process of someone else (this test): still interrupted, and
        // terminate signals nothing.
        let stranger = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        std::fs::write(host.run_dir(&key).join("pid"), format!("{}\n", stranger.id())).unwrap();
        assert!(matches!(jobs.poll(&key).await.unwrap(), JobState::Interrupted { .. }));
        assert!(matches!(jobs.terminate(&key, Duration::ZERO).await.unwrap(), JobState::Interrupted { .. }));
        let mut stranger = stranger;
        assert!(stranger.try_wait().unwrap().is_none(), "terminate killed a process that is not the job's");
        stranger.kill().unwrap();
        let _ = stranger.wait();
    }

    #[tokio::test]
    async fn prune_keeps_the_newest_and_every_running_job() {
        let host = LocalSh::new();
        let jobs = Jobs::new(&host);
        let mut done = Vec::new();
        for i in 0..4 {
            let key = JobKey::new("shop", format!("u{i}"), "build").unwrap();
            jobs.start(&key, &JobSpec::new(host.cwd(), ["true"])).await.unwrap();
            finished(&jobs, &key).await;
            done.push(key);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let running = JobKey::new("shop", "u9", "up").unwrap();
        jobs.start(&running, &JobSpec::new(host.cwd(), ["sleep", "30"])).await.unwrap();
        let mut removed = jobs.prune("shop", 2).await.unwrap();
        removed.sort();
        assert_eq!(removed, ["u0/build", "u1/build", "u2/build"]);
        assert_eq!(jobs.poll(&done[0]).await.unwrap(), JobState::NotFound);
        assert!(!host.home.path().join(".slipway/shop/runs/u0").exists(), "empty uid directory left");
        assert!(jobs.poll(&done[3]).await.unwrap().succeeded());
        assert_eq!(jobs.prune("shop", 0).await.unwrap(), ["u3/build"]);
        assert!(jobs.poll(&running).await.unwrap().is_running(), "prune removed a running job");
        assert!(jobs.prune("nothing-here", 0).await.unwrap().is_empty());
        jobs.terminate(&running, Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_tool_is_named_with_its_fix() {
        let mut host = LocalSh::new();
        let bin = host.home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["sh", "flock"] {
            let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists()).unwrap();
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
        host.path = Some(bin);
        let jobs = Jobs::new(&host);
        let key = JobKey::new("shop", "u1", "build").unwrap();
        let err = jobs.start(&key, &JobSpec::new(host.cwd(), ["true"])).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`setsid` is not installed on local-sh") && msg.contains("util-linux"), "{msg}");
    }
}
