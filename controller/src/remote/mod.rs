//! Remote layer: everything Slipway does on a compose host, over one SSH master connection per
//! Environment.
//!
//! - [`ssh`]: [`HostTarget`] (decoupled from the CRDs), [`HostConnection`] (pinned host keys,
//!   multiplexed master, port forwards, private 0700 directory) and [`ConnectionPool`];
//!   [`known_hosts`]: the known_hosts must pin this one host (no CA, no wildcard) before ssh runs.
//! - [`command`]: [`RemoteCommand`], the argv builder and the one place that quotes for the
//!   remote shell; [`validate`]: refs, paths, names refused before anything runs.
//! - [`compose`], [`git`], [`envfile`]: compose CLI, the work tree, the rendered `.env`.
//! - [`docker`]: observations through the host's Docker socket forwarded over the same master.
//! - [`health`]: verification rounds with HTTP/TCP/exec checks and container health.
//! - [`job`]: host jobs, the steps that run detached on the host under a per-project lock,
//!   found again by key after a controller restart, terminated on the host at their deadline.
//! - [`error`]: [`RemoteError`] with `reason()` / `metric_label()` / `is_transient()`.
//!
//! Secret values (keys, `.env` contents) never appear in errors or logs: [`SecretBytes`] prints
//! `<redacted>`, values travel on stdin only, and every text handed out passes a [`Redactor`].

pub mod command;
pub mod compose;
pub mod docker;
pub mod envfile;
pub mod error;
pub mod exec;
pub mod git;
pub mod health;
pub mod job;
pub mod known_hosts;
pub mod pool;
pub mod secret;
pub mod ssh;
pub mod validate;

pub use command::{RemoteCommand, quote};
pub use compose::{
    Compose, ComposeConfig, ComposeFlavor, ComposeProject, HealthcheckConfig, ONE_SHOT_LABEL, ServiceConfig,
    detect_flavor, label as compose_label,
};
pub use docker::{ContainerObservation, ExecOutcome, ImageInfo};
pub use envfile::{missing_env_keys, missing_keys, parse_env_example, render_env_file, write_env_file};
pub use error::RemoteError;
pub use exec::{CommandOutput, Exec, FakeHost, FakeReply, Recorded};
pub use git::{DirtyEntry, Repo, RevisionRef};
pub use health::{CheckKind, CheckOutcome, HealthCheck, HealthPolicy, HealthReport, verify};
pub use job::{JOB_LABEL, JobKey, JobSpec, JobState, Jobs, job_label, status_tail};
pub use pool::ConnectionPool;
pub use secret::{Redactor, SecretBytes};
pub use ssh::{ConnectOptions, HostConnection, HostTarget, local_user_problem, remove_orphaned_private_dirs};
