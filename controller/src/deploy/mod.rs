//! Shared by DeployRequest (and, next, Rollback): the queue and lock, the steps and the step
//! record. [`plan`] decides, [`lock`] swaps the Environment's lock, [`preflight`] and [`steps`]
//! act on the host through [`site::Site`]; this module runs one reconcile of a request.
//!
//! Every step's result is written to status before the next begins, and every step that changes
//! the host is a host job keyed by the request's UID: a controller killed at any instant resumes
//! from status and the host jobs, never repeating a finished step.

pub mod lock;
pub mod plan;
pub mod preflight;
pub mod record;
pub mod site;
pub mod steps;
pub mod teardown;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployMode, DeployRequest, DeployRequestStatus, Environment, Phase, Release, StepResult};

use crate::conditions::{self, Decided};
use crate::context::Context;
use crate::error::Result;
use crate::remote::{RemoteError, detect_flavor};
use crate::secrets::SecretReader;
use crate::{Transition, environment, status};

use lock::Cas;
use plan::{MIGRATING, PREFLIGHT, REBUILDING, VERIFYING};
use preflight::Refusal;
use site::Site;
use steps::Progress;

/// How often a running host job is polled. A poll costs about 10 ms over the master; a job's end is noticed within this long.
const POLL: Duration = Duration::from_millis(500);
/// Host job run directories kept per project (a request leaves up to four).
const RUNS_KEPT: usize = 40;
/// A waiting request looks again this often (the Environment watch usually wakes it sooner).
const WAIT: Duration = Duration::from_secs(20);

/// One reconcile of a DeployRequest.
pub async fn reconcile(cached: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace().unwrap_or_default();
    let envs: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
    let drs: Api<DeployRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let dr = if cached.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_terminal) {
        // A finished request never changes again: the cached copy is as good as a fresh one.
        cached
    } else {
        // Decide from the object as it is now, not as the watch cache last saw it: a status
        // write that has not reached the cache yet must never be undone (a finished request set
        // back to Queued would deploy again; a finished step would run twice).
        match drs.get_opt(&cached.name_any()).await? {
            Some(fresh) if fresh.metadata.uid == cached.metadata.uid => Arc::new(fresh),
            _ => return Ok(Action::await_change()),
        }
    };
    let me = plan::request_id(&dr);
    let old = dr.status.clone().unwrap_or_default();
    let env = envs.get_opt(&dr.spec.environment).await?;
    let now = Timestamp::now();

    if old.phase.is_some_and(Phase::is_terminal) {
        // Finished but still holding the lock: the controller stopped between the final status
        // write and the release. Release it, recording the release it made if the history lost it.
        if let Some(env) = &env
            && holds(env, &me)
        {
            let record = if changed_host(&old) { Some(record::recovered(&ctx, &dr, env, &old).await) } else { None };
            release_lock(&envs, env, &me, record.as_ref()).await?;
        }
        finalizer(&drs, &dr, false).await?;
        return Ok(Action::await_change());
    }
    if dr.metadata.deletion_timestamp.is_some() {
        return abandon(&ctx, &dr, env.as_ref(), &envs, &drs, &old, now).await;
    }
    let Some(env) = env else {
        if old.phase.is_some() {
            // It waited for or ran on an Environment that is gone: that is final.
            let mut st = old.clone();
            st.phase = Some(Phase::Failed);
            st.queue_position = None;
            let message = format!(
                "Environment {:?} was deleted while this request {}; create it again and a new DeployRequest",
                dr.spec.environment,
                if old.phase == Some(Phase::Queued) { "waited" } else { "ran" }
            );
            st.conditions = conditions::set(
                &old.conditions,
                &plan::conditions_for(Phase::Failed, reasons::ENVIRONMENT_DELETED, message),
                dr.metadata.generation,
                now,
            );
            write(&ctx, &drs, &dr, &old, st, EventType::Warning).await?;
            finalizer(&drs, &dr, false).await?;
            return Ok(Action::await_change());
        }
        let decision = crate::deploy_request::decide(&dr, None, now);
        write(&ctx, &drs, &dr, &old, decision.status, EventType::Warning).await?;
        return Ok(Action::await_change());
    };
    if env.metadata.deletion_timestamp.is_some() {
        // Its finalizer waits for the lock holder's host job (teardown): no step starts meanwhile,
        // and every request ends EnvironmentDeleted (above) once it is gone.
        return Ok(Action::requeue(WAIT));
    }

    let mut st = old.clone();
    st.revision = Some(dr.spec.revision.display());
    st.observed_generation = dr.metadata.generation;
    st.untracked = dr.spec.mode == DeployMode::Direct;

    let holder = env.status.as_ref().and_then(|s| s.active_deploy.clone());
    // Gates are judged until the request holds the lock. Once it does, its host jobs may be
    // running: a policy change or a withdrawn approval must not abandon them half-way.
    if holder.as_deref() != Some(me.as_str())
        && let Err(gate) = plan::gates(&dr, &env)
    {
        // A request held back by a gate never joins the queue (and leaves it, had it joined).
        st.queue_position = None;
        let decided = match gate {
            // The spec cannot change, so an issue or mode refusal is final.
            plan::Gate::Refused(problem) => {
                st.phase = Some(Phase::Failed);
                plan::conditions_for(Phase::Failed, problem.reason, problem.message)
            }
            // An approver's annotation lets it pass: it waits, Stalled, until the watch wakes it.
            plan::Gate::Awaiting(problem) => {
                st.phase = None;
                crate::references::stalled(&problem)
            }
        };
        st.conditions = conditions::set(&old.conditions, &decided, dr.metadata.generation, now);
        let queued = env.status.as_ref().map(|s| s.queue.as_slice()).unwrap_or_default();
        if queued.contains(&me) {
            let rest: Vec<String> = queued.iter().filter(|i| **i != me).cloned().collect();
            // A conflict is harmless: the next waiting request publishes the queue again.
            let _ = lock::publish_queue(&envs, &env, &rest).await?;
            ctx.metrics.queue_depth(&ns, &env.name_any(), rest.len());
        }
        write(&ctx, &drs, &dr, &old, st, EventType::Warning).await?;
        return Ok(Action::await_change());
    }

    // Promotion, judged on the object level before the queue (by ref name or commit prefix); the
    // exact commit is checked again at preflight. A refused request never holds up the queue.
    if holder.as_deref() != Some(me.as_str())
        && let Some(message) = preflight::not_promoted_ref(&envs, &env, &dr).await?
    {
        st.phase = Some(Phase::Failed);
        st.queue_position = None;
        st.conditions = conditions::set(
            &old.conditions,
            &plan::conditions_for(Phase::Failed, reasons::NOT_PROMOTED, message),
            dr.metadata.generation,
            now,
        );
        write(&ctx, &drs, &dr, &old, st, EventType::Warning).await?;
        return Ok(Action::await_change());
    }

    if holder.as_deref() != Some(me.as_str()) {
        let all = drs.list(&ListParams::default()).await?.items;
        let queue = plan::queue(&env.name_any(), &all, &me);
        let ids: Vec<String> = queue.iter().map(|d| plan::request_id(d)).collect();
        match holder.as_deref() {
            None if ids.first() == Some(&me) => {
                // Deleting a request that holds the lock must not abandon its host job half-way.
                if finalizer(&drs, &dr, true).await? == Cas::Conflict {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                ctx.metrics.queue_depth(&ns, &env.name_any(), ids.len() - 1);
                if lock::take(&envs, &env, &me, &ids[1..]).await? == Cas::Conflict {
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                tracing::info!(deployrequest = %dr.name_any(), environment = %env.name_any(), "took the deploy lock");
                st.queue_position = None;
                st.phase = Some(Phase::Preflight);
                plan::start_step(&mut st, PREFLIGHT, now);
                let message = format!("Checking {} for Environment {:?}", dr.spec.revision.display(), env.name_any());
                st.conditions = conditions::set(
                    &old.conditions,
                    &plan::conditions_for(Phase::Preflight, reasons::PREFLIGHT, message),
                    dr.metadata.generation,
                    now,
                );
                write(&ctx, &drs, &dr, &old, st, EventType::Normal).await?;
                return Ok(Action::requeue(Duration::ZERO));
            }
            Some(h) if holder_finished(h, &all) => {
                // The holder is gone or finished without releasing (deleted, or a crash): free it.
                // Its host jobs are fenced by the project's flock, so nothing can overlap anyway.
                let _ = lock::release(&envs, &env, h, None).await?;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            _ => {
                let waiting: Vec<String> =
                    ids.iter().filter(|i| Some(i.as_str()) != holder.as_deref()).cloned().collect();
                let position = waiting.iter().position(|i| i == &me).map_or(waiting.len() + 1, |p| p + 1);
                let _ = lock::publish_queue(&envs, &env, &waiting).await?;
                ctx.metrics.queue_depth(&ns, &env.name_any(), waiting.len());
                st.phase = Some(Phase::Queued);
                st.queue_position = i32::try_from(position).ok();
                let message = match &holder {
                    Some(h) => format!(
                        "Queued for Environment {:?} (position {position}): {} holds its deploy lock",
                        env.name_any(),
                        plan::parse_holder(h).map_or(h.as_str(), |p| p.1)
                    ),
                    None => format!("Queued for Environment {:?} (position {position})", env.name_any()),
                };
                st.conditions = conditions::set(
                    &old.conditions,
                    &plan::conditions_for(Phase::Queued, reasons::QUEUED, message),
                    dr.metadata.generation,
                    now,
                );
                write(&ctx, &drs, &dr, &old, st, EventType::Normal).await?;
                return Ok(Action::requeue(WAIT));
            }
        }
    }
    advance(&ctx, &dr, &env, &envs, &drs, old, st, now).await
}

/// Did the request named by lock holder `id` finish or disappear?
fn holder_finished(id: &str, all: &[DeployRequest]) -> bool {
    let Some((kind, _, uid)) = plan::parse_holder(id) else { return true };
    if kind != "DeployRequest" {
        return false;
    }
    all.iter()
        .find(|d| d.metadata.uid.as_deref() == Some(uid))
        .is_none_or(|d| d.status.as_ref().and_then(|s| s.phase).is_some_and(Phase::is_terminal))
}

/// The request holds the lock: take its next step.
#[allow(clippy::too_many_arguments)]
async fn advance(
    ctx: &Context,
    dr: &DeployRequest,
    env: &Environment,
    envs: &Api<Environment>,
    drs: &Api<DeployRequest>,
    old: DeployRequestStatus,
    mut st: DeployRequestStatus,
    now: Timestamp,
) -> Result<Action> {
    let me = plan::request_id(dr);
    let key = crate::object_key(dr);
    let mut secrets = SecretReader::new(ctx.client.clone(), &dr.namespace().unwrap_or_default());
    let credentials = match environment::credentials(env, &mut secrets).await? {
        Ok(c) => c,
        Err(problems) => {
            let p = problems.into_iter().next().expect("at least one problem");
            return fail(ctx, dr, env, envs, drs, &old, st, p.reason, p.message, None, now).await;
        }
    };
    let port = match environment::ssh_port(env) {
        Ok(p) => p,
        Err(p) => return fail(ctx, dr, env, envs, drs, &old, st, p.reason, p.message, None, now).await,
    };
    let redactor = credentials.redactor.clone();
    let connected = match environment::connection(ctx, env, port, &credentials).await {
        Ok(conn) => detect_flavor(conn.as_ref()).await.map(|f| (conn, f)),
        Err(e) => Err(e),
    };
    let (conn, flavor) = match connected {
        Ok(c) => c,
        Err(e) => return remote_error(ctx, dr, env, envs, drs, &old, st, e, &redactor, now).await,
    };
    let site = Site {
        conn: conn.as_ref(),
        env,
        flavor,
        project: site::compose_project(env),
        uid: dr.metadata.uid.clone().unwrap_or_default(),
        env_values: &credentials.env_values,
    };
    let phase = st.phase.unwrap_or(Phase::Preflight);
    let deadline = |secs: i32| i64::from(secs.max(1));
    let deadlines = &env.spec.deadlines;
    let result: std::result::Result<Option<Action>, StepError> = async {
        match phase {
            Phase::Queued | Phase::Preflight => {
                plan::start_step(&mut st, PREFLIGHT, now);
                if plan::step_elapsed(&st, PREFLIGHT, now) > deadline(deadlines.preflight_seconds) {
                    return Ok(None);
                }
                site.prune(RUNS_KEPT).await;
                match preflight::run(&site, dr, envs).await {
                    Ok(facts) => {
                        // Steps end when their work ended, not when the reconcile began.
                        let now = Timestamp::now();
                        st.commit = Some(facts.commit.clone());
                        st.previous_commit = facts.previous_commit.clone();
                        st.migration_before = facts.migration_before.clone();
                        st.env_hash = Some(facts.env_hash.clone());
                        let short = &facts.commit[..12.min(facts.commit.len())];
                        plan::finish_step(
                            &mut st,
                            PREFLIGHT,
                            StepResult::Succeeded,
                            format!("{} is commit {short}", dr.spec.revision.display()),
                            None,
                            now,
                        );
                        if facts.up_to_date {
                            st.phase = Some(Phase::Succeeded);
                            let message = format!(
                                "Environment {:?} already runs commit {short} with this .env, healthy: nothing to do",
                                env.name_any()
                            );
                            st.conditions = conditions::set(
                                &old.conditions,
                                &plan::conditions_for(Phase::Succeeded, reasons::UP_TO_DATE, message),
                                dr.metadata.generation,
                                now,
                            );
                            write(ctx, drs, dr, &old, st.clone(), EventType::Normal).await?;
                            lock::release(envs, env, &me, None).await?;
                            return Ok(Some(Action::await_change()));
                        }
                        enter(&mut st, Phase::Migrating, MIGRATING, now);
                        Ok(Some(
                            progressing(
                                ctx,
                                dr,
                                drs,
                                &old,
                                st.clone(),
                                Phase::Migrating,
                                format!("Migrating the database with commit {short}"),
                                now,
                            )
                            .await?,
                        ))
                    }
                    Err(Refusal::Stalled(p)) => Ok(Some(
                        fail(
                            ctx,
                            dr,
                            env,
                            envs,
                            drs,
                            &old,
                            st.clone(),
                            p.reason,
                            redactor.redact(&p.message),
                            None,
                            now,
                        )
                        .await?,
                    )),
                    Err(Refusal::Remote(e)) => Err(e.into()),
                }
            }
            Phase::Migrating => {
                let commit = st.commit.clone().unwrap_or_default();
                if site.env.spec.migrations.is_none() {
                    plan::finish_step(&mut st, MIGRATING, StepResult::Skipped, "no migrations declared", None, now);
                    enter(&mut st, Phase::Rebuilding, REBUILDING, now);
                    return Ok(Some(
                        progressing(
                            ctx,
                            dr,
                            drs,
                            &old,
                            st.clone(),
                            Phase::Rebuilding,
                            "Building and starting the new release".into(),
                            now,
                        )
                        .await?,
                    ));
                }
                if past_deadline(&site, &st, Phase::Migrating, deadline(deadlines.migration_seconds), now).await? {
                    return Ok(None);
                }
                match steps::migrate(&site, &commit).await? {
                    Progress::Running => Ok(Some(Action::requeue(POLL))),
                    Progress::Done { message } => {
                        st.migration_after = site.migration_revision(true).await?;
                        let next = Next { ctx, dr, drs, old: &old };
                        Ok(Some(next.step(st.clone(), MIGRATING, message, Phase::Rebuilding).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        fail(
                            ctx,
                            dr,
                            env,
                            envs,
                            drs,
                            &old,
                            st.clone(),
                            reasons::MIGRATION_FAILED,
                            format!("migration failed: {message}; the running release was not touched"),
                            tail,
                            now,
                        )
                        .await?,
                    )),
                }
            }
            Phase::Rebuilding => {
                let commit = st.commit.clone().unwrap_or_default();
                if past_deadline(&site, &st, Phase::Rebuilding, deadline(deadlines.rebuild_seconds), now).await? {
                    return Ok(None);
                }
                let since = plan::step(&st, REBUILDING)
                    .and_then(|s| s.started_at.as_deref())
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(now);
                match steps::rebuild(&site, &commit, since).await? {
                    Progress::Running => Ok(Some(Action::requeue(POLL))),
                    Progress::Done { message } => {
                        let next = Next { ctx, dr, drs, old: &old };
                        Ok(Some(next.step(st.clone(), REBUILDING, message, Phase::Verifying).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        fail(
                            ctx,
                            dr,
                            env,
                            envs,
                            drs,
                            &old,
                            st.clone(),
                            reasons::REBUILD_FAILED,
                            format!("rebuild failed: {message}"),
                            tail,
                            now,
                        )
                        .await?,
                    )),
                }
            }
            Phase::Verifying => {
                let elapsed = Duration::from_secs(u64::try_from(plan::step_elapsed(&st, VERIFYING, now)).unwrap_or(0));
                match steps::verify_round(&site, elapsed).await? {
                    Progress::Running => Ok(Some(Action::requeue(Duration::from_secs(
                        u64::try_from(env.spec.health.interval_seconds).unwrap_or(3).max(1),
                    )))),
                    Progress::Done { message } => {
                        let now = Timestamp::now();
                        plan::finish_step(&mut st, VERIFYING, StepResult::Succeeded, message, None, now);
                        let release = release_record(&site, dr, &st, "Succeeded", now).await?;
                        st.phase = Some(Phase::Succeeded);
                        let short = st.commit.as_deref().map_or("", |c| &c[..12.min(c.len())]).to_owned();
                        let message = format!(
                            "{} (commit {short}) runs on Environment {:?}, verified healthy",
                            dr.spec.revision.display(),
                            env.name_any()
                        );
                        st.conditions = conditions::set(
                            &old.conditions,
                            &plan::conditions_for(Phase::Succeeded, reasons::SUCCEEDED, message),
                            dr.metadata.generation,
                            now,
                        );
                        write(ctx, drs, dr, &old, st.clone(), EventType::Normal).await?;
                        release_lock(envs, env, &me, Some(&release)).await?;
                        Ok(Some(Action::await_change()))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        fail(
                            ctx,
                            dr,
                            env,
                            envs,
                            drs,
                            &old,
                            st.clone(),
                            reasons::VERIFICATION_FAILED,
                            message,
                            tail,
                            now,
                        )
                        .await?,
                    )),
                }
            }
            Phase::Succeeded | Phase::Failed | Phase::RollingBack | Phase::RolledBack => {
                Ok(Some(Action::await_change()))
            }
        }
    }
    .await;
    let action = match result {
        Ok(Some(action)) => {
            ctx.backoff.succeeded(&key);
            action
        }
        // Past the step's deadline (its host jobs were stopped).
        Ok(None) => {
            let step = st.phase.map_or("step", plan_step_name);
            let message =
                format!("{step} did not finish within its deadline (spec.deadlines); its host job was stopped");
            return fail(ctx, dr, env, envs, drs, &old, st, reasons::PROGRESS_DEADLINE_EXCEEDED, message, None, now)
                .await;
        }
        // The Kubernetes API failed (a status write timed out, a 5xx): retried with backoff by
        // the error policy, never taken for the step's failure.
        Err(StepError::Kube(e)) => return Err(e),
        Err(StepError::Remote(e)) => {
            if !e.is_transient() {
                // The request fails and passes the lock on: nothing it started may keep running.
                stop_jobs(&site, phase).await;
            }
            return remote_error(ctx, dr, env, envs, drs, &old, st, e, &redactor, now).await;
        }
    };
    Ok(action)
}

/// The finalizer a request carries while it may hold its Environment's lock.
pub const LOCK_FINALIZER: &str = "slipway.dev/deploy-lock";

fn holds(env: &Environment, me: &str) -> bool {
    env.status.as_ref().and_then(|s| s.active_deploy.as_deref()) == Some(me)
}

/// Did the request get past preflight (so the host changed)?
fn changed_host(st: &DeployRequestStatus) -> bool {
    st.steps.iter().any(|s| s.name == MIGRATING || s.name == REBUILDING || s.name == VERIFYING)
}

/// Adds (`on`) or removes the lock finalizer; `Conflict` when the object changed since it was read.
async fn finalizer(drs: &Api<DeployRequest>, dr: &DeployRequest, on: bool) -> Result<Cas> {
    let mut list: Vec<String> = dr.finalizers().to_vec();
    let has = list.iter().any(|f| f == LOCK_FINALIZER);
    if has == on {
        return Ok(Cas::Done);
    }
    if on {
        list.push(LOCK_FINALIZER.to_owned());
    } else {
        list.retain(|f| f != LOCK_FINALIZER);
    }
    let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": dr.resource_version()}});
    match drs.patch(&dr.name_any(), &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        Ok(_) => Ok(Cas::Done),
        // Changed meanwhile (approval withdrawn, deletion begun) or gone: decide again.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Cas::Conflict),
        Err(e) => Err(e.into()),
    }
}

/// The host jobs a phase may have running.
fn phase_jobs(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Migrating => &steps::MIGRATION_JOBS,
        Phase::Rebuilding => &steps::REBUILD_JOBS,
        _ => &[],
    }
}

/// Stops what the phase's host jobs still run (best effort: the project's flock fences them anyway).
async fn stop_jobs(site: &Site<'_>, phase: Phase) {
    for job in phase_jobs(phase) {
        if let Err(e) = site.stop(job).await {
            tracing::warn!(job, error = %e, "could not stop a host job");
        }
    }
}

/// How long a deleted request that holds the lock tries to stop its host job before it gives up
/// (its job stays fenced by the project's flock) and passes the lock on.
const ABANDON_GRACE: i64 = 600;
/// TERM-to-KILL grace of an abandoned request's host job.
const ABANDON_STOP_GRACE: Duration = Duration::from_secs(2);

/// A deleted request: if it holds the lock, its running step is stopped, the outcome recorded as
/// `Abandoned`, and the lock passed on; then its finalizer goes.
async fn abandon(
    ctx: &Context,
    dr: &DeployRequest,
    env: Option<&Environment>,
    envs: &Api<Environment>,
    drs: &Api<DeployRequest>,
    old: &DeployRequestStatus,
    now: Timestamp,
) -> Result<Action> {
    let me = plan::request_id(dr);
    if let Some(env) = env
        && holds(env, &me)
    {
        let phase = old.phase.unwrap_or(Phase::Preflight);
        let deleted = dr.metadata.deletion_timestamp.as_ref().map_or(now.as_second(), |t| t.0.as_second());
        if !phase_jobs(phase).is_empty() && now.as_second() - deleted < ABANDON_GRACE {
            let mut secrets = SecretReader::new(ctx.client.clone(), &dr.namespace().unwrap_or_default());
            // An API error here is retried (the finalizer keeps the object), never a skipped stop.
            let credentials = environment::credentials(env, &mut secrets).await?;
            let stopped: std::result::Result<(), RemoteError> = async {
                let Ok(credentials) = credentials else {
                    return Ok(());
                };
                let port = environment::ssh_port(env).map_err(|p| RemoteError::Local { detail: p.message })?;
                let conn = environment::connection(ctx, env, port, &credentials).await?;
                let flavor = detect_flavor(conn.as_ref()).await?;
                let site = Site {
                    conn: conn.as_ref(),
                    env,
                    flavor,
                    project: site::compose_project(env),
                    uid: dr.metadata.uid.clone().unwrap_or_default(),
                    env_values: &credentials.env_values,
                };
                // A short grace: the step is being abandoned, and a one-off container's process
                // (PID 1 of its container) ignores TERM anyway; what it did not commit rolls back.
                for job in phase_jobs(phase) {
                    site.stop_within(job, ABANDON_STOP_GRACE).await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = stopped
                && e.is_transient()
            {
                return Ok(Action::requeue(ctx.backoff.failed(&crate::object_key(dr), Duration::from_secs(5))));
            }
        }
        let record = changed_host(old).then(|| plan::release(dr, old, "Abandoned", Default::default(), None));
        if release_lock(envs, env, &me, record.as_ref()).await? == Cas::Conflict {
            // Keep the finalizer: the object must not go while it still holds the lock.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        ctx.metrics.deploy_ended("Abandoned");
        ctx.event(
            &dr.object_ref(&()),
            EventType::Warning,
            "Abandoned",
            format!("deleted during {phase}: its host job was stopped and the lock passed on"),
        )
        .await;
    }
    finalizer(drs, dr, false).await?;
    Ok(Action::await_change())
}

/// Past the step's deadline (`secs` since it started): its host jobs are stopped and the caller
/// fails the request with `ProgressDeadlineExceeded`.
async fn past_deadline(
    site: &Site<'_>,
    st: &DeployRequestStatus,
    phase: Phase,
    secs: i64,
    now: Timestamp,
) -> std::result::Result<bool, RemoteError> {
    if plan::step_elapsed(st, plan_step_name(phase), now) <= secs {
        return Ok(false);
    }
    for job in phase_jobs(phase) {
        site.stop(job).await?;
    }
    Ok(true)
}

/// What a request needs to move from a finished step to the next.
struct Next<'a> {
    ctx: &'a Context,
    dr: &'a DeployRequest,
    drs: &'a Api<DeployRequest>,
    old: &'a DeployRequestStatus,
}

impl Next<'_> {
    /// Records `finished` as Succeeded with `message` and enters `phase`, writing status.
    async fn step(&self, mut st: DeployRequestStatus, finished: &str, message: String, phase: Phase) -> Result<Action> {
        // Steps end when their work ended, not when the reconcile began.
        let now = Timestamp::now();
        plan::finish_step(&mut st, finished, StepResult::Succeeded, message, None, now);
        enter(&mut st, phase, plan_step_name(phase), now);
        let doing = match phase {
            Phase::Rebuilding => "Building and starting the new release",
            Phase::Verifying => "Verifying the new release's health",
            _ => "Migrating the database",
        };
        progressing(self.ctx, self.dr, self.drs, self.old, st, phase, doing.to_owned(), now).await
    }
}

fn plan_step_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Migrating => MIGRATING,
        Phase::Rebuilding => REBUILDING,
        Phase::Verifying => VERIFYING,
        _ => PREFLIGHT,
    }
}

/// What can stop a step: the host (judged: transient or a failure of the request) or the
/// Kubernetes API (always retried).
enum StepError {
    Remote(RemoteError),
    Kube(crate::error::Error),
}

impl From<RemoteError> for StepError {
    fn from(e: RemoteError) -> Self {
        StepError::Remote(e)
    }
}

impl From<crate::error::Error> for StepError {
    fn from(e: crate::error::Error) -> Self {
        StepError::Kube(e)
    }
}

fn enter(st: &mut DeployRequestStatus, phase: Phase, step: &str, now: Timestamp) {
    st.phase = Some(phase);
    plan::start_step(st, step, now);
}

#[allow(clippy::too_many_arguments)]
async fn progressing(
    ctx: &Context,
    dr: &DeployRequest,
    drs: &Api<DeployRequest>,
    old: &DeployRequestStatus,
    mut st: DeployRequestStatus,
    phase: Phase,
    message: String,
    now: Timestamp,
) -> Result<Action> {
    st.conditions = conditions::set(
        &old.conditions,
        &plan::conditions_for(phase, plan::progress_reason(phase), message),
        dr.metadata.generation,
        now,
    );
    write(ctx, drs, dr, old, st, EventType::Normal).await?;
    Ok(Action::requeue(Duration::ZERO))
}

/// A remote failure during a step: transient ones (host unreachable, busy) are retried with
/// backoff and leave the step where it was; others fail the request.
#[allow(clippy::too_many_arguments)]
async fn remote_error(
    ctx: &Context,
    dr: &DeployRequest,
    env: &Environment,
    envs: &Api<Environment>,
    drs: &Api<DeployRequest>,
    old: &DeployRequestStatus,
    mut st: DeployRequestStatus,
    e: RemoteError,
    redactor: &crate::remote::Redactor,
    now: Timestamp,
) -> Result<Action> {
    let message = redactor.redact(&e.to_string());
    if e.is_transient() {
        let phase = st.phase.unwrap_or(Phase::Preflight);
        let decided: Vec<Decided> =
            crate::references::progressing(e.reason(), format!("{}: {message}; retrying", phase));
        st.conditions = conditions::set(&old.conditions, &decided, dr.metadata.generation, now);
        write(ctx, drs, dr, old, st, EventType::Warning).await?;
        tracing::info!(deployrequest = %dr.name_any(), reason = e.reason(), error = %message, "deploy step will be retried");
        return Ok(Action::requeue(ctx.backoff.failed(&crate::object_key(dr), Duration::from_secs(5))));
    }
    fail(ctx, dr, env, envs, drs, old, st, e.reason(), message, None, now).await
}

/// Ends the request `Failed` with `reason`, records it in the Environment's history when the
/// host was changed, and passes the lock on.
#[allow(clippy::too_many_arguments)]
async fn fail(
    ctx: &Context,
    dr: &DeployRequest,
    env: &Environment,
    envs: &Api<Environment>,
    drs: &Api<DeployRequest>,
    old: &DeployRequestStatus,
    mut st: DeployRequestStatus,
    reason: &'static str,
    message: String,
    tail: Option<String>,
    now: Timestamp,
) -> Result<Action> {
    let me = plan::request_id(dr);
    let phase = st.phase.unwrap_or(Phase::Preflight);
    let step = plan_step_name(phase);
    plan::finish_step(&mut st, step, StepResult::Failed, message.clone(), tail, now);
    let changed_host = matches!(phase, Phase::Migrating | Phase::Rebuilding | Phase::Verifying);
    st.phase = Some(Phase::Failed);
    st.queue_position = None;
    st.conditions = conditions::set(
        &old.conditions,
        &plan::conditions_for(Phase::Failed, reason, message),
        dr.metadata.generation,
        now,
    );
    let record = changed_host.then(|| plan::release(dr, &st, "Failed", Default::default(), None));
    write(ctx, drs, dr, old, st, EventType::Warning).await?;
    release_lock(envs, env, &me, record.as_ref()).await?;
    Ok(Action::await_change())
}

/// Releases the lock, re-reading the Environment on a conflict (its monitor writes conditions).
/// `Conflict` when it stayed contended: the next reconcile of this (terminal) request releases it.
async fn release_lock(envs: &Api<Environment>, env: &Environment, me: &str, record: Option<&Release>) -> Result<Cas> {
    let mut current = env.clone();
    for _ in 0..5 {
        if lock::release(envs, &current, me, record).await? == Cas::Done {
            return Ok(Cas::Done);
        }
        match envs.get_opt(&current.name_any()).await? {
            Some(e) => current = e,
            None => return Ok(Cas::Done),
        }
    }
    Ok(Cas::Conflict)
}

async fn release_record(
    site: &Site<'_>,
    dr: &DeployRequest,
    st: &DeployRequestStatus,
    result: &str,
    now: Timestamp,
) -> std::result::Result<Release, RemoteError> {
    let images = record::images(&site.conn.project_containers(&site.project.name).await?);
    Ok(plan::release(dr, st, result, images, Some(now.to_string())))
}

/// Metrics of what a status write records: steps that finished, a deploy that ended.
fn observe(ctx: &Context, old: &DeployRequestStatus, st: &DeployRequestStatus) {
    for step in &st.steps {
        let newly = step.finished_at.is_some() && plan::step(old, &step.name).is_none_or(|o| o.finished_at.is_none());
        let name = [PREFLIGHT, MIGRATING, REBUILDING, VERIFYING].into_iter().find(|n| *n == step.name);
        let parse = |t: &Option<String>| t.as_deref().and_then(|t| t.parse::<Timestamp>().ok());
        if let (true, Some(name), Some(a), Some(b)) = (newly, name, parse(&step.started_at), parse(&step.finished_at)) {
            ctx.metrics.phase_took(name, (b.as_millisecond() - a.as_millisecond()) as f64 / 1000.0);
        }
    }
    let ended = st.phase.is_some_and(Phase::is_terminal) && !old.phase.is_some_and(Phase::is_terminal);
    if ended {
        let reason =
            conditions::find(&st.conditions, slipway_crds::conditions::types::READY).map(|c| c.reason.as_str());
        ctx.metrics.deploy_ended(match (st.phase, reason) {
            (Some(Phase::Succeeded), Some(reasons::UP_TO_DATE)) => "UpToDate",
            (Some(Phase::Succeeded), _) => "Succeeded",
            _ => "Failed",
        });
    }
}

/// Writes the request's status when it changed, and an Event when Ready changed its reason.
async fn write(
    ctx: &Context,
    drs: &Api<DeployRequest>,
    dr: &DeployRequest,
    old: &DeployRequestStatus,
    st: DeployRequestStatus,
    type_: EventType,
) -> Result<()> {
    let mut st = st;
    let steps = plan::step_conditions(&st);
    st.conditions = conditions::set(&st.conditions, &steps, dr.metadata.generation, Timestamp::now());
    if dr.status.as_ref() != Some(&st) {
        status::apply(drs, dr, &st).await?;
        observe(ctx, old, &st);
        tracing::info!(deployrequest = %dr.name_any(), phase = st.phase.map(|p| p.as_str()).unwrap_or("-"), "status written");
    }
    if let Some(t) = Transition::between(&old.conditions, &st.conditions, type_) {
        ctx.event(&dr.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    Ok(())
}
