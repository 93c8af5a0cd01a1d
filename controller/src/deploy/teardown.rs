//! Deleting an Environment. Its finalizer holds the object until the lock holder's host job has
//! ended: waited for a bounded time (judged from `deletionTimestamp`, so a controller restart does
//! not start the wait again), then terminated. Then the Environment's SSH master is closed and the
//! finalizer removed; the requests that held or waited for the lock end `EnvironmentDeleted` as
//! soon as the deploy path sees the Environment gone. Meanwhile the deploy path starts no step.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployRequest, Environment, Phase, Rollback};

use super::request::Req;

use crate::context::{Context, ENVIRONMENT_MANAGER};
use crate::environment;
use crate::error::Result;
use crate::remote::{HostConnection, JobKey, Jobs, RemoteError};
use crate::secrets::SecretReader;

use super::lock::Cas;
use super::{plan, site, steps};

/// The finalizer an Environment carries while a request holds its deploy lock, so that its
/// deletion waits for the deploy it runs. An idle Environment has none: it is deleted at once,
/// also with the controller uninstalled.
pub const FINALIZER: &str = "slipway.dev/environment";
/// Longest wait (seconds after the deletion began) for the lock holder's host job to end.
pub const WAIT_MAX: i64 = 120;
/// How often a running host job is looked at while the deletion waits.
const POLL: Duration = Duration::from_secs(1);
/// How soon an unreachable host is asked again while the deletion waits.
const RETRY: Duration = Duration::from_secs(3);

/// What the lock holder's host jobs were seen doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobsSeen {
    /// No request holds the lock.
    NoHolder,
    /// These jobs (their step names) still run.
    Running(Vec<String>),
    /// None runs: ended, or never started.
    Ended,
    /// The host could not be asked; `transient` when asking again may work (host down).
    Unchecked { why: String, transient: bool },
}

/// What the deletion does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Teardown {
    /// The holder's job runs (or the host is briefly unreachable) and the wait is not over.
    Wait(Duration),
    /// The wait is over and these jobs still run: terminate them, then finish.
    Terminate(Vec<String>),
    /// Close the SSH master and let the Environment go; `unchecked` says why the job could not
    /// be looked at (an Event tells).
    Finish { unchecked: Option<String> },
}

/// When the wait for the holder's job ends (seconds since the epoch): [`WAIT_MAX`] after the
/// deletion began, or sooner when the running step's own deadline (`step`: started at, deadline
/// in seconds) comes first; never before the deletion began.
pub fn wait_until(deleted_at: i64, step: Option<(i64, i64)>) -> i64 {
    let cap = deleted_at + WAIT_MAX;
    step.map_or(cap, |(started, secs)| cap.min(started + secs).max(deleted_at))
}

/// The next move of a deletion at `now`, waiting until `until`.
pub fn decide(now: i64, until: i64, seen: &JobsSeen) -> Teardown {
    let left = Duration::from_secs(u64::try_from(until - now).unwrap_or(0));
    match seen {
        JobsSeen::NoHolder | JobsSeen::Ended => Teardown::Finish { unchecked: None },
        JobsSeen::Running(_) if !left.is_zero() => Teardown::Wait(POLL.min(left)),
        JobsSeen::Running(jobs) => Teardown::Terminate(jobs.clone()),
        JobsSeen::Unchecked { transient: true, .. } if !left.is_zero() => Teardown::Wait(RETRY.min(left)),
        JobsSeen::Unchecked { why, .. } => Teardown::Finish { unchecked: Some(why.clone()) },
    }
}

/// The running step of a holder in `phase` and its deadline in seconds, from the Environment.
fn step_deadline(env: &Environment, phase: Phase) -> Option<(&'static str, i64)> {
    let d = &env.spec.deadlines;
    match phase {
        Phase::Preflight => Some((plan::PREFLIGHT, d.preflight_seconds.into())),
        Phase::Migrating => Some((plan::MIGRATING, d.migration_seconds.into())),
        Phase::Downgrading => Some((plan::DOWNGRADING, d.downgrade_seconds.into())),
        Phase::Rebuilding => Some((plan::REBUILDING, d.rebuild_seconds.into())),
        Phase::Restarting => Some((plan::RESTARTING, d.rebuild_seconds.into())),
        _ => None,
    }
}

/// The host jobs a lock holder may run, whatever its recorded phase says.
const HOLDER_JOBS: [&str; 6] = [
    steps::MIGRATION_JOBS[0],
    steps::MIGRATION_JOBS[1],
    steps::DOWNGRADE_JOBS[0],
    steps::REBUILD_JOBS[0],
    steps::REBUILD_JOBS[1],
    steps::RESTART_JOBS[0],
];

/// Adds (`on`) or removes the finalizer; `Conflict` when the Environment changed since it was read.
pub async fn set_finalizer(api: &Api<Environment>, env: &Environment, on: bool) -> Result<Cas> {
    let mut list: Vec<String> = env.finalizers().to_vec();
    if list.iter().any(|f| f == FINALIZER) == on {
        return Ok(Cas::Done);
    }
    if on {
        list.push(FINALIZER.to_owned());
    } else {
        list.retain(|f| f != FINALIZER);
    }
    let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": env.resource_version()}});
    // The Environment's own reconcile adds and removes it, under its own field manager.
    let params = PatchParams { field_manager: Some(ENVIRONMENT_MANAGER.to_owned()), ..Default::default() };
    match api.patch(&env.name_any(), &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(Cas::Done),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Cas::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// Does `env` carry the finalizer that makes its deletion wait for the deploy it runs?
pub fn has_finalizer(env: &Environment) -> bool {
    env.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer once a request holds the lock, before its first step: the Environment as
/// it is now, or `None` when it changed since it was read, or its deletion began (decide again).
pub async fn add_finalizer(api: &Api<Environment>, env: &Environment) -> Result<Option<Environment>> {
    if has_finalizer(env) {
        return Ok(Some(env.clone()));
    }
    let mut list: Vec<String> = env.finalizers().to_vec();
    list.push(FINALIZER.to_owned());
    let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": env.resource_version()}});
    match api.patch(&env.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
        // No finalizer may be added once the deletion began: the next reconcile sees it.
        Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains("finalizers") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// One reconcile of an Environment being deleted.
pub async fn reconcile(ctx: &Context, env: &Environment) -> Result<Action> {
    let gate_key = crate::object_key(env);
    if !env.finalizers().iter().any(|f| f == FINALIZER) {
        ctx.gates.remove(&gate_key);
        return Ok(Action::await_change());
    }
    // From now on no step starts (in this process), and none is starting while we look.
    let gate = ctx.gates.get(&gate_key);
    gate.closing.store(true, std::sync::atomic::Ordering::SeqCst);
    let _steps = gate.steps.write().await;
    let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let now = Timestamp::now().as_second();
    let deleted_at = env.metadata.deletion_timestamp.as_ref().map_or(now, |t| t.0.as_second());
    let holder = env.status.as_ref().and_then(|s| s.active_deploy.as_deref()).unwrap_or_default();
    let parsed = plan::parse_holder(holder);
    let Some((kind, name, uid)) = parsed else {
        return finish(ctx, &api, env, None, None).await;
    };
    let until = wait_until(deleted_at, holder_step(ctx, env, kind, name, uid).await?);
    let connected = connect(ctx, env).await;
    // Asking the host is bounded too: a host that accepts SSH and then hangs must not stretch
    // the wait past `until`.
    let ask_within = Duration::from_secs(u64::try_from(until - now).unwrap_or(0).max(10));
    let seen = match &connected {
        Ok(conn) => match tokio::time::timeout(ask_within, running_jobs(conn, env, uid)).await {
            Ok(Ok(running)) if running.is_empty() => JobsSeen::Ended,
            Ok(Ok(running)) => JobsSeen::Running(running),
            Ok(Err(e)) => {
                JobsSeen::Unchecked { why: conn.redactor().redact(&e.to_string()), transient: e.is_transient() }
            }
            Err(_) => JobsSeen::Unchecked {
                why: format!("the host did not answer within {}s", ask_within.as_secs()),
                transient: true,
            },
        },
        Err(unchecked) => unchecked.clone(),
    };
    let waited = now - deleted_at;
    let note = match decide(now, until, &seen) {
        Teardown::Wait(after) => return Ok(Action::requeue(after)),
        Teardown::Finish { unchecked: Some(why) } => (
            EventType::Warning,
            reasons::HOST_JOB_NOT_CHECKED,
            format!(
                "could not check the host job of {holder} ({why}); deleted without waiting for it (the project's \
                 flock still keeps another job from overlapping it)"
            ),
        ),
        Teardown::Finish { unchecked: None } => (
            EventType::Normal,
            reasons::HOST_JOB_ENDED,
            format!("no host job of {holder} runs (waited {waited}s); SSH master closed"),
        ),
        Teardown::Terminate(jobs) => {
            let conn = connected.as_ref().expect("running jobs were seen over a connection");
            let mut failed = Vec::new();
            for job in &jobs {
                let key = JobKey::new(site::project_name(env), uid, job.as_str());
                if let Err(e) = async { Jobs::new(conn.as_ref()).terminate(&key?, site::TERMINATE_GRACE).await }.await {
                    failed.push(format!("{job}: {}", conn.redactor().redact(&e.to_string())));
                }
            }
            let failed =
                if failed.is_empty() { String::new() } else { format!(" (not stopped: {})", failed.join("; ")) };
            (
                EventType::Warning,
                reasons::HOST_JOB_TERMINATED,
                format!(
                    "host job {} of {holder} still ran {waited}s after the deletion began: terminated{failed}",
                    jobs.join(", ")
                ),
            )
        }
    };
    drop(connected);
    finish(ctx, &api, env, Some(note), Some(holder)).await
}

/// The holder's running step as (started at, deadline seconds), when it is a DeployRequest or
/// Rollback that still exists and runs a step with a deadline.
async fn holder_step(
    ctx: &Context,
    env: &Environment,
    kind: &str,
    name: &str,
    uid: &str,
) -> Result<Option<(i64, i64)>> {
    let ns = env.namespace().unwrap_or_default();
    let found = match kind {
        super::request::DEPLOY_REQUEST => {
            Api::<DeployRequest>::namespaced(ctx.client.clone(), &ns).get_opt(name).await?.map(Req::Deploy)
        }
        super::request::ROLLBACK => {
            Api::<Rollback>::namespaced(ctx.client.clone(), &ns).get_opt(name).await?.map(Req::Rollback)
        }
        _ => None,
    };
    let Some(holder) = found.filter(|h| h.uid() == uid) else { return Ok(None) };
    let st = holder.status().cloned().unwrap_or_default();
    let Some((step, secs)) = st.phase.and_then(|p| step_deadline(env, p)) else { return Ok(None) };
    let started = plan::step(&st, step).and_then(|s| s.started_at.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    Ok(started.map(|t| (t.as_second(), secs)))
}

/// The Environment's SSH master: from its Secrets, or the pooled one when they are gone (deleted
/// along with it).
async fn connect(ctx: &Context, env: &Environment) -> std::result::Result<Arc<HostConnection>, JobsSeen> {
    let unchecked = |why: String, transient: bool| JobsSeen::Unchecked { why, transient };
    let mut secrets = SecretReader::new(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let credentials = match environment::credentials(env, &mut secrets).await {
        Ok(Ok(c)) => c,
        Ok(Err(problems)) => {
            if let Some(conn) = ctx.hosts.current(&crate::object_key(env)).await {
                return Ok(conn);
            }
            let why = problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ");
            return Err(unchecked(why, false));
        }
        Err(e) => return Err(unchecked(format!("reading the Environment's Secrets: {e}"), true)),
    };
    let port = environment::ssh_port(env).map_err(|p| unchecked(p.message, false))?;
    environment::connection(ctx, env, port, &credentials).await.map_err(|e| {
        let why = credentials.redactor.redact(&e.to_string());
        unchecked(why, e.is_transient())
    })
}

/// The holder's host jobs that still run.
async fn running_jobs(
    conn: &HostConnection,
    env: &Environment,
    uid: &str,
) -> std::result::Result<Vec<String>, RemoteError> {
    let jobs = Jobs::new(conn);
    let mut running = Vec::new();
    for job in HOLDER_JOBS.into_iter().chain(super::rehearsal::JOBS) {
        if jobs.poll(&JobKey::new(site::project_name(env), uid, job)?).await?.is_running() {
            running.push(job.to_owned());
        }
    }
    Ok(running)
}

/// Closes the Environment's SSH master, tells what happened (`note`), and removes the finalizer.
async fn finish(
    ctx: &Context,
    api: &Api<Environment>,
    env: &Environment,
    note: Option<(EventType, &str, String)>,
    holder: Option<&str>,
) -> Result<Action> {
    ctx.hosts.evict(&crate::object_key(env)).await;
    // A conflict means the Environment changed since it was read (the lock passed to another
    // request, an automatic Rollback took it): decide again rather than let it go unexamined.
    if set_finalizer(api, env, false).await? == Cas::Conflict {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if let Some((type_, reason, text)) = note {
        ctx.event(&env.object_ref(&()), type_, reason, text).await;
    }
    tracing::info!(environment = %env.name_any(), holder = holder.unwrap_or("-"), "Environment deleted; its SSH master closed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn the_wait_is_bounded_from_the_deletion_and_by_the_step_deadline() {
        // No step known: WAIT_MAX after the deletion, however often the controller restarts.
        assert_eq!(wait_until(T, None), T + WAIT_MAX);
        // The step's own deadline comes first.
        assert_eq!(wait_until(T, Some((T - 100, 130))), T + 30);
        // A step with a longer deadline is still waited for at most WAIT_MAX.
        assert_eq!(wait_until(T, Some((T - 10, 1800))), T + WAIT_MAX);
        // Already past its deadline: no wait at all.
        assert_eq!(wait_until(T, Some((T - 1000, 600))), T);
    }

    #[test]
    fn each_observation_leads_to_one_move() {
        let until = T + 60;
        let running = JobsSeen::Running(vec!["migrate".into()]);
        let down = JobsSeen::Unchecked { why: "host unreachable".into(), transient: true };
        let gone = JobsSeen::Unchecked { why: "Secret shop-ssh not found".into(), transient: false };
        let finish = Teardown::Finish { unchecked: None };
        let cases = [
            // nothing to wait for: at once
            (T, JobsSeen::NoHolder, finish.clone()),
            (T, JobsSeen::Ended, finish.clone()),
            // a running job is polled until the bound, then terminated
            (T, running.clone(), Teardown::Wait(POLL)),
            (until - 1, running.clone(), Teardown::Wait(Duration::from_secs(1))),
            (until, running.clone(), Teardown::Terminate(vec!["migrate".into()])),
            (until + 500, running, Teardown::Terminate(vec!["migrate".into()])),
            // an unreachable host is asked again until the bound, then given up on
            (T, down.clone(), Teardown::Wait(RETRY)),
            (until, down, Teardown::Finish { unchecked: Some("host unreachable".into()) }),
            // credentials gone (deleted along with it): never blocks the deletion
            (T, gone, Teardown::Finish { unchecked: Some("Secret shop-ssh not found".into()) }),
        ];
        for (now, seen, want) in cases {
            assert_eq!(decide(now, until, &seen), want, "at {} with {seen:?}", now - T);
        }
    }

    #[test]
    fn the_holder_jobs_are_every_step_job() {
        for job in steps::MIGRATION_JOBS.iter().chain(steps::REBUILD_JOBS.iter()) {
            assert!(HOLDER_JOBS.contains(job), "{job}");
        }
    }
}
