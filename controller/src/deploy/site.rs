//! A deploy's view of its host: the Environment's SSH master, its compose project (the main
//! checkout that runs, and a private worktree where the next revision is built and migrated
//! without moving the running checkout), and host jobs keyed by the request's UID.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::ResourceExt;
use slipway_crds::Environment;

use crate::remote::{
    Compose, ComposeFlavor, ComposeProject, HostConnection, JobKey, JobSpec, JobState, Jobs, RemoteCommand,
    RemoteError, SecretBytes,
};

use super::watch::{JobWatches, Waker};

/// How long a terminated job's processes get between TERM and KILL.
pub const TERMINATE_GRACE: Duration = Duration::from_secs(10);
/// Exit 0 when no host job holds the project's lock (`$1`), 1 when one does. Constant; the
/// project arrives as a positional parameter.
const IDLE_PROBE: &str = r#"d=$HOME/.slipway/$1; [ -e "$d/lock" ] || exit 0; exec flock -n "$d/lock" true"#;

pub struct Site<'a> {
    pub conn: &'a HostConnection,
    pub env: &'a Environment,
    pub flavor: ComposeFlavor,
    /// The main checkout: what runs.
    pub project: ComposeProject,
    /// The request's UID, the key of its host jobs.
    pub uid: String,
    pub env_values: &'a BTreeMap<String, SecretBytes>,
    /// Where running jobs are left to a watch ([`super::watch`]) that wakes the request when they
    /// end; without one (the monitor's view), a running job is only polled.
    pub watch: Option<SiteWatch<'a>>,
    /// Set once a job of this reconcile was left to its watch.
    pub watched: AtomicBool,
}

/// What a [`Site`] needs to leave a running job to a watch.
pub struct SiteWatch<'a> {
    pub conn: Arc<HostConnection>,
    pub waker: Waker,
    pub watches: &'a JobWatches,
}

/// Where a job of a step stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobProgress {
    Running,
    Succeeded,
    Failed { what: String, tail: Option<String> },
}

/// The compose project name of an Environment: `compose.projectName`, or its name made valid.
pub fn project_name(env: &Environment) -> String {
    env.spec.compose.project_name.clone().unwrap_or_else(|| env.name_any().replace('.', "-"))
}

pub fn compose_project(env: &Environment) -> ComposeProject {
    let files = if env.spec.compose.files.is_empty() {
        vec!["docker-compose.yml".to_owned()]
    } else {
        env.spec.compose.files.clone()
    };
    ComposeProject::new(env.spec.host.path.trim_end_matches('/'), project_name(env), files)
}

impl<'a> Site<'a> {
    /// The worktree holding the next revision, inside the checkout's `.git` (private to Slipway,
    /// never seen as a change of the checkout).
    pub fn next_dir(&self) -> String {
        format!("{}/.git/slipway/next", self.project.dir)
    }

    pub fn compose(&self) -> Compose<'a, HostConnection> {
        Compose::with_flavor(self.conn, self.project.clone(), self.flavor)
    }

    /// The same compose project (same name: same network, volumes and database) from the worktree.
    pub fn compose_next(&self) -> Compose<'a, HostConnection> {
        let next = ComposeProject::new(self.next_dir(), self.project.name.clone(), self.project.files.clone());
        Compose::with_flavor(self.conn, next, self.flavor)
    }

    pub fn key(&self, step: &str) -> Result<JobKey, RemoteError> {
        JobKey::new(self.project.name.clone(), self.uid.clone(), step)
    }

    /// The state of this request's host job `step` (`NotFound` before it started).
    pub async fn poll(&self, step: &str) -> Result<JobState, RemoteError> {
        Jobs::new(self.conn).poll(&self.key(step)?).await
    }

    /// Runs `cmd` as the host job `step` across reconciles, from its state as [`Self::poll`]ed
    /// this reconcile: started when absent (never twice: a start finds a job started meanwhile),
    /// looked at while it runs (and left to its watch, which wakes the request when it ends),
    /// judged once it ended.
    pub async fn job(
        &self,
        step: &str,
        cmd: &RemoteCommand,
        polled: JobState,
    ) -> Result<(JobProgress, JobState), RemoteError> {
        let key = self.key(step)?;
        let state = match polled {
            JobState::NotFound => Jobs::new(self.conn).start(&key, &JobSpec::from_command(cmd)?).await?,
            state => state,
        };
        if state.is_running()
            && let Some(w) = &self.watch
        {
            let watched = w.watches.watch(w.conn.clone(), key, w.waker.clone());
            self.watched.store(watched, Ordering::Relaxed);
        }
        let progress = match &state {
            JobState::Running { .. } | JobState::NotFound => JobProgress::Running,
            s if s.succeeded() => JobProgress::Succeeded,
            s => JobProgress::Failed {
                what: format!("`{}` {}", cmd.display_label(), s.describe()),
                tail: s.status_tail(),
            },
        };
        Ok((progress, state))
    }

    /// When to look again at a step whose host job runs, `left` seconds before its deadline:
    /// once its watch wakes the request, or after the watches' fallback (or at the deadline,
    /// if sooner) should no wake come; every [`super::POLL`] where no watch runs.
    pub fn running_requeue(&self, left: i64) -> Duration {
        let Some(w) = self.watch.as_ref().filter(|_| self.watched.load(Ordering::Relaxed)) else {
            return super::POLL;
        };
        let left = Duration::from_secs(u64::try_from(left.saturating_add(1)).unwrap_or(0).max(1));
        w.watches.fallback.min(left)
    }

    /// `HostBusy` while any host job of the project holds its lock: files a running job uses
    /// (the worktree, the checkout, `.env`) are changed only when none runs.
    pub async fn ensure_idle(&self) -> Result<(), RemoteError> {
        let probe = RemoteCommand::new("sh")
            .args(["-c", IDLE_PROBE, "slipway-idle"])
            .arg(self.project.name.clone())
            .label("host job lock probe");
        let out = crate::remote::Exec::output(self.conn, &probe).await?;
        match out.exit_code() {
            Some(0) => Ok(()),
            Some(1) => Err(RemoteError::HostBusy {
                host: self.conn.host().to_owned(),
                project: self.project.name.clone(),
                holder: "a host job (another request's step still running)".to_owned(),
            }),
            _ => out.into_checked("host job lock probe").map(|_| ()),
        }
    }

    /// Removes old run directories of the project (never a running job's).
    pub async fn prune(&self, keep: usize) {
        if let Err(e) = Jobs::new(self.conn).prune(&self.project.name, keep).await {
            tracing::debug!(project = %self.project.name, error = %e, "pruning host job runs");
        }
    }

    /// Stops the job `step` (past its deadline) with everything it started.
    pub async fn stop(&self, step: &str) -> Result<JobState, RemoteError> {
        self.stop_within(step, TERMINATE_GRACE).await
    }

    /// [`Site::stop`] with its own grace between TERM and KILL.
    pub async fn stop_within(&self, step: &str, grace: Duration) -> Result<JobState, RemoteError> {
        Jobs::new(self.conn).terminate(&self.key(step)?, grace).await
    }

    /// Does a release run (any service container of the project running)?
    pub async fn runs(&self) -> Result<bool, RemoteError> {
        Ok(self.conn.project_containers(&self.project.name).await?.iter().any(|c| !c.one_off && c.is_running()))
    }

    /// The migration revision the database is at, asked with `current` in a one-off container
    /// of the main checkout (`next: false`) or of the next revision's image (`next: true`).
    /// `None` when no migrations are declared or the database has no revision yet.
    pub async fn migration_revision(&self, next: bool) -> Result<Option<String>, RemoteError> {
        let Some(m) = &self.env.spec.migrations else { return Ok(None) };
        if m.current.is_empty() {
            return Ok(None);
        }
        let compose = if next { self.compose_next() } else { self.compose() };
        let cmd = compose.run_command(&m.service, &m.current, &[])?;
        // Never start or recreate the running release's dependencies just to ask.
        let cmd = if self.runs().await? { super::steps::with_no_deps(cmd) } else { cmd };
        let out = crate::remote::Exec::output(self.conn, &cmd).await?;
        if !out.success() {
            return Err(RemoteError::CommandFailed {
                program: format!("{} (migration revision)", m.current.join(" ")),
                exit_code: out.exit_code(),
                stderr_tail: out.stderr_tail(),
            });
        }
        Ok(super::plan::parse_migration_revision(&out.stdout()))
    }
}
