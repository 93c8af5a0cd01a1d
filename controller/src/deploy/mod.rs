//! Shared by DeployRequest and Rollback ([`request::Req`]): the queue and lock, the steps and the
//! step record. [`plan`] decides, [`lock`] swaps the Environment's lock, [`preflight`] and
//! [`steps`] act on the host through [`site::Site`], [`auto`] rolls a failed deploy back; this
//! module runs one reconcile of a request.
//!
//! Every step's result is written to status before the next begins, and every step that changes
//! the host is a host job keyed by the request's UID: a controller killed at any instant resumes
//! from status and the host jobs, never repeating a finished step.

pub mod auto;
pub mod bake;
pub mod lock;
pub(crate) mod outbox;
pub mod plan;
pub mod playbook;
pub mod preflight;
pub mod record;
pub mod rehearsal;
pub mod request;
pub mod site;
pub mod steps;
pub mod teardown;
pub mod watch;
pub mod windows;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployMode, DeployRequest, DeployRequestStatus, Environment, Phase, Release, Rollback, StepResult};

use crate::conditions::{self, Decided};
use crate::context::Context;
use crate::error::Result;
use crate::remote::{RemoteError, detect_flavor};
use crate::secrets::SecretReader;
use crate::{Transition, environment};

use lock::Cas;
use plan::{BAKING, DOWNGRADING, MIGRATING, PREFLIGHT, REBUILDING, RESTARTING, VERIFYING};
use preflight::Refusal;
pub use request::Req;
use site::Site;
use steps::Progress;

/// How often a running host job is polled where no watch ([`watch`]) waits for its end (P1: at
/// 500 ms a deploy took 1.06x a plain ssh script, most of it this wait).
const POLL: Duration = Duration::from_millis(250);
/// Host job run directories kept per project (a request leaves up to four).
const RUNS_KEPT: usize = 40;
/// A waiting request looks again this often (the Environment watch usually wakes it sooner).
const WAIT: Duration = Duration::from_secs(20);

/// One reconcile of a DeployRequest.
pub async fn reconcile_deploy(cached: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    reconcile(Req::Deploy(Arc::unwrap_or_clone(cached)), ctx).await
}

/// One reconcile of a Rollback.
pub async fn reconcile_rollback(cached: Arc<Rollback>, ctx: Arc<Context>) -> Result<Action> {
    reconcile(Req::Rollback(Arc::unwrap_or_clone(cached)), ctx).await
}

/// What every decision of one reconcile needs: the request as read, its status before, and the
/// Environments of its namespace.
pub(crate) struct Run<'a> {
    ctx: &'a Context,
    req: &'a Req,
    envs: &'a Api<Environment>,
    old: &'a DeployRequestStatus,
    /// The Environment's notification receivers: a request that ends records what is due to them.
    receivers: &'a [slipway_crds::Receiver],
}

async fn reconcile(cached: Req, ctx: Arc<Context>) -> Result<Action> {
    let ns = cached.namespace();
    let envs: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
    let req = if cached.phase().is_some_and(Phase::is_terminal) {
        // A finished request never changes again: the cached copy, kept in brief (phase,
        // notifications, metadata; see `crate::Cached`), is all this path reads, except where
        // it says otherwise.
        cached
    } else {
        // Decide from the object as it is now, not as the watch cache last saw it: a status
        // write that has not reached the cache yet must never be undone (a finished request set
        // back to Queued would deploy again; a finished step would run twice).
        match cached.fresh(&ctx.client).await? {
            Some(fresh) => fresh,
            None => return Ok(Action::await_change()),
        }
    };
    let me = req.id();
    let old = req.status().cloned().unwrap_or_default();
    let env = envs.get_opt(req.environment()).await?;
    if let Some(env) = &env
        && !ctx.shard.owns(env.labels())
    {
        // Its Environment belongs to another shard: that shard's instance deploys to that host.
        tracing::debug!(request = %req.name(), environment = %env.name_any(), "left to the shard owning its Environment");
        return Ok(Action::await_change());
    }
    let now = Timestamp::now();
    let receivers = env.as_ref().map(|e| e.spec.notifications.clone()).unwrap_or_default();
    let run = Run { ctx: &ctx, req: &req, envs: &envs, old: &old, receivers: &receivers };

    if old.phase.is_some_and(Phase::is_terminal) {
        // Finished but still holding the lock: the controller stopped between the final status
        // write and the release. Release it, recording the release it made if the history lost it.
        if let Some(env) = &env
            && holds(env, &me)
        {
            // The watch cache keeps a finished request in brief (`crate::Cached`): the release
            // record and the attention note are made from the whole request, read now.
            let Some(full) = req.fresh(&ctx.client).await? else { return Ok(Action::await_change()) };
            let old = full.status().cloned().unwrap_or_default();
            let record = if changed_host(&old) { Some(record::recovered(&ctx, &full, env, &old).await) } else { None };
            let attention = auto::attention(&full, &old, now);
            let left = lock::Record { release: record.as_ref(), attention: attention.as_ref(), ..Default::default() };
            finish_lock(&ctx, &envs, env, &me, None, left).await?;
        }
        run.finalizer(false).await?;
        return outbox::deliver(&run, env.as_ref()).await;
    }
    // A failed deploy hands its lock to the Rollback that undoes it even when it is being
    // deleted (or pruned by a GitOps tool): the host must not be left half-way.
    if old.phase == Some(Phase::RollingBack)
        && let Some(env) = &env
    {
        return auto::follow(&run, env, now).await;
    }
    // An automatic rollback runs to its end even when deleted (with the DeployRequest that owns
    // it): stopping a downgrade half-way would leave the database between two releases.
    if req.deleting() && !auto::is_automatic(&req) {
        return abandon(&run, env.as_ref(), now).await;
    }
    let Some(env) = env else {
        let mut st = old.clone();
        let decided = if old.phase.is_some() {
            // It waited for or ran on an Environment that is gone: that is final.
            st.phase = Some(Phase::Failed);
            st.queue_position = None;
            let message = format!(
                "Environment {:?} was deleted while this request {}; create it again and a new {}",
                req.environment(),
                if old.phase == Some(Phase::Queued) { "waited" } else { "ran" },
                req.kind()
            );
            plan::conditions_for(Phase::Failed, reasons::ENVIRONMENT_DELETED, message)
        } else {
            crate::references::stalled(&crate::references::environment_not_found(req.kind(), req.environment(), &ns))
        };
        st.conditions = conditions::set(&old.conditions, &decided, req.generation(), now);
        run.write(st, EventType::Warning).await?;
        if old.phase.is_some() {
            run.finalizer(false).await?;
        }
        return Ok(Action::await_change());
    };
    if env.metadata.deletion_timestamp.is_some() {
        // Its finalizer waits for the lock holder's host job (teardown): no step starts meanwhile,
        // and every request ends EnvironmentDeleted (above) once it is gone.
        return Ok(Action::requeue(WAIT));
    }

    let mut st = old.clone();
    st.revision = Some(req.revision_display());
    st.observed_generation = req.generation();
    st.untracked = req.as_deploy().is_some_and(|d| d.spec.mode == DeployMode::Direct);

    let holder = env.status.as_ref().and_then(|s| s.active_deploy.clone());
    let holding = holder.as_deref() == Some(me.as_str());
    // Gates are judged until the request holds the lock. Once it does, its host jobs may be
    // running: a policy change or a withdrawn approval must not abandon them half-way.
    let gated = plan::gates(&req, &env)
        .and_then(|()| plan::window_gate(&req, &env, now))
        // Only deploys: a Rollback returns to a release that ran, and must not be refused for a
        // check the allow-list no longer admits (its verification skips such a check).
        .and_then(|()| match req.as_deploy() {
            Some(_) => crate::url_check::gate(&env, &ctx.urls).map_err(plan::Gate::Refused),
            None => Ok(()),
        });
    if !holding && let Err(gate) = gated {
        // A request held back by a gate never joins the queue (and leaves it, had it joined).
        st.queue_position = None;
        let mut wake = None;
        let decided = match gate {
            // The spec cannot change, so a refusal is final.
            plan::Gate::Refused(problem) => {
                st.phase = Some(Phase::Failed);
                plan::conditions_for(Phase::Failed, problem.reason, problem.message)
            }
            // An approver's annotation lets it pass: it waits, Stalled, until the watch wakes it.
            plan::Gate::Awaiting(problem) => {
                st.phase = None;
                crate::references::stalled(&problem)
            }
            // A deploy window opens by itself: waiting, visibly, for then.
            plan::Gate::Waiting { problem, until } => {
                st.phase = Some(Phase::Queued);
                wake = Some(until.map_or(WAIT * 15, |t| plan::until(now, t)));
                plan::conditions_for(Phase::Queued, problem.reason, problem.message)
            }
        };
        st.conditions = conditions::set(&old.conditions, &decided, req.generation(), now);
        let queued = env.status.as_ref().map(|s| s.queue.as_slice()).unwrap_or_default();
        if queued.contains(&me) {
            let rest: Vec<String> = queued.iter().filter(|i| **i != me).cloned().collect();
            // A conflict is harmless: the next waiting request publishes the queue again.
            let _ = lock::publish_queue(&envs, &env, &rest).await?;
            ctx.metrics.queue_depth(&ns, &env.name_any(), rest.len());
        }
        run.write(st, EventType::Warning).await?;
        return Ok(wake.map_or_else(Action::await_change, Action::requeue));
    }

    // Promotion, judged on the object level before the queue (by ref name or commit prefix); the
    // exact commit is checked again at preflight. A refused request never holds up the queue.
    if !holding
        && let Some(dr) = req.as_deploy()
        && let Some(problem) = preflight::not_promoted_ref(&envs, &env, dr).await?
    {
        st.phase = Some(Phase::Failed);
        st.queue_position = None;
        st.conditions = conditions::set(
            &old.conditions,
            &plan::conditions_for(Phase::Failed, problem.reason, problem.message),
            req.generation(),
            now,
        );
        run.write(st, EventType::Warning).await?;
        return Ok(Action::await_change());
    }

    if !holding {
        return wait_or_take(&run, &env, holder, st, now).await;
    }
    advance(&run, &env, st, now).await
}

/// The request passed its gates and does not hold the lock: it takes the free lock when it is
/// first in line, frees a lock its holder can no longer release, or waits its turn.
async fn wait_or_take(
    run: &Run<'_>,
    env: &Environment,
    holder: Option<String>,
    mut st: DeployRequestStatus,
    now: Timestamp,
) -> Result<Action> {
    let (ctx, req, envs) = (run.ctx, run.req, run.envs);
    let (me, ns) = (req.id(), req.namespace());
    if let Some(attention) = env.status.as_ref().and_then(|s| s.needs_attention.as_ref())
        && req.created().zip(attention.since.parse::<Timestamp>().ok()).is_some_and(|(c, since)| c <= since)
    {
        // Asked for before the host was left unverified: held (out of the queue, Stalled) until
        // a request made since has run; the Environment's watch wakes it then.
        st.phase = Some(Phase::Queued);
        st.queue_position = None;
        let problem = crate::references::Problem {
            reason: reasons::ROLLBACK_FAILED,
            message: format!(
                "held: Environment {:?} needs a person ({}); this request runs once a newer DeployRequest or \
                 Rollback has taken the lock",
                env.name_any(),
                attention.message
            ),
        };
        st.conditions =
            conditions::set(&run.old.conditions, &crate::references::stalled(&problem), req.generation(), now);
        run.write(st, EventType::Warning).await?;
        return Ok(Action::await_change());
    }
    let all = Req::list(&ctx.client, &ns, &ctx.shard).await?;
    let queue = plan::queue(&env.name_any(), &all, &me);
    let ids: Vec<String> = queue.iter().map(|d| d.id()).collect();
    match holder.as_deref() {
        None if ids.first() == Some(&me) => {
            // Deleting a request that holds the lock must not abandon its host job half-way.
            if run.finalizer(true).await? == Cas::Conflict {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            ctx.metrics.queue_depth(&ns, &env.name_any(), ids.len() - 1);
            let Some(taken) = lock::take(envs, env, &me, &ids[1..]).await? else {
                tracing::debug!(request = %req.name(), environment = %env.name_any(), "the Environment changed as the lock was taken; again in 1 s");
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            tracing::info!(kind = req.kind(), name = %req.name(), environment = %env.name_any(), "took the deploy lock");
            // The Environment's deletion waits for the deploy it runs: its finalizer goes on now
            // the lock is held, and no step starts without it (`advance`). Added before the lock,
            // the Environment's own reconcile, seeing no holder yet, took it off again, and the
            // lock's write then failed on the changed object: under load, requests went round
            // that loop for seconds before their first step.
            // Should this write fail, `advance` adds it before the first step all the same.
            if let Err(e) = teardown::add_finalizer(envs, &taken).await {
                tracing::warn!(request = %req.name(), environment = %env.name_any(), error = %e, "could not add the Environment's finalizer; again before the first step");
            }
            st.queue_position = None;
            st.phase = Some(Phase::Preflight);
            plan::start_step(&mut st, PREFLIGHT, now);
            let message = format!("Checking {} for Environment {:?}", req.describe(), env.name_any());
            st.conditions = conditions::set(
                &run.old.conditions,
                &plan::conditions_for(Phase::Preflight, reasons::PREFLIGHT, message),
                req.generation(),
                now,
            );
            run.write(st, EventType::Normal).await?;
            Ok(Action::requeue(Duration::ZERO))
        }
        Some(h) if holder_gone(h, &all) => {
            // The holder is gone without releasing (deleted): free it. A holder that exists
            // releases the lock itself, recording its release (after a crash too). Its host jobs
            // are fenced by the project's flock, so nothing can overlap anyway.
            let _ = lock::release(envs, env, h, None).await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        _ => {
            let waiting: Vec<String> = ids.iter().filter(|i| Some(i.as_str()) != holder.as_deref()).cloned().collect();
            let position = waiting.iter().position(|i| i == &me).map_or(waiting.len() + 1, |p| p + 1);
            let _ = lock::publish_queue(envs, env, &waiting).await?;
            ctx.metrics.queue_depth(&ns, &env.name_any(), waiting.len());
            st.phase = Some(Phase::Queued);
            st.queue_position = i32::try_from(position).ok();
            let message = match &holder {
                Some(h) => format!(
                    "Queued for Environment {:?} (position {position}): {} holds its deploy lock",
                    env.name_any(),
                    plan::parse_holder(h).map_or(h.clone(), |p| format!("{} {}", p.0, p.1))
                ),
                None => format!("Queued for Environment {:?} (position {position})", env.name_any()),
            };
            st.conditions = conditions::set(
                &run.old.conditions,
                &plan::conditions_for(Phase::Queued, reasons::QUEUED, message),
                req.generation(),
                now,
            );
            run.write(st, EventType::Normal).await?;
            Ok(Action::requeue(WAIT))
        }
    }
}

/// Is the request named by lock holder `id` gone?
fn holder_gone(id: &str, all: &[Req]) -> bool {
    let Some((_, _, uid)) = plan::parse_holder(id) else { return true };
    !all.iter().any(|d| d.uid() == uid)
}

/// The request holds the lock: take its next step.
async fn advance(run: &Run<'_>, env: &Environment, mut st: DeployRequestStatus, now: Timestamp) -> Result<Action> {
    let (ctx, req) = (run.ctx, run.req);
    // Taking the lock added it, unless that write failed (see `wait_or_take`): the steps work
    // on the Environment as written.
    let added;
    let env = if teardown::has_finalizer(env) {
        env
    } else {
        match teardown::add_finalizer(run.envs, env).await? {
            Some(written) => {
                added = written;
                &added
            }
            None => return Ok(Action::requeue(Duration::from_secs(1))),
        }
    };
    // No step starts once the Environment's deletion looked for running host jobs.
    let gate = ctx.gates.get(&crate::object_key(env));
    let _steps = gate.steps.read().await;
    if gate.closing.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(Action::requeue(WAIT));
    }
    let me = req.id();
    let key = req.key();
    let mut secrets = SecretReader::new(ctx.client.clone(), &req.namespace());
    let credentials = match environment::credentials(env, &mut secrets).await? {
        Ok(c) => c,
        Err(problems) => {
            let p = problems.into_iter().next().expect("at least one problem");
            return run.fail(env, st, p.reason, p.message, None, now).await;
        }
    };
    let port = match environment::ssh_port(env) {
        Ok(p) => p,
        Err(p) => return run.fail(env, st, p.reason, p.message, None, now).await,
    };
    let redactor = credentials.redactor.clone();
    let connected = match environment::connection(ctx, env, port, &credentials).await {
        Ok(conn) => detect_flavor(conn.as_ref()).await.map(|f| (conn, f)),
        Err(e) => Err(e),
    };
    let (conn, flavor) = match connected {
        Ok(c) => c,
        Err(e) => return run.remote_error(env, st, e, &redactor, now).await,
    };
    let waker = match req {
        Req::Deploy(dr) => watch::Waker::Deploy(kube::runtime::reflector::ObjectRef::from_obj(dr)),
        Req::Rollback(rb) => watch::Waker::Rollback(kube::runtime::reflector::ObjectRef::from_obj(rb)),
    };
    let site = Site {
        conn: conn.as_ref(),
        env,
        flavor,
        project: site::compose_project(env),
        uid: req.uid(),
        env_values: &credentials.env_values,
        watch: Some(site::SiteWatch { conn: conn.clone(), waker, watches: &ctx.job_watches }),
        watched: Default::default(),
    };
    let phase = st.phase.unwrap_or(Phase::Preflight);
    let heal =
        req.as_deploy().is_some_and(|d| environment::drift::is_heal(d, env, ctx.identity.get().map(|s| s.as_str())));
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
                match preflight::run(&site, req, run.envs, heal).await {
                    Ok(facts) => {
                        // Steps end when their work ended, not when the reconcile began.
                        let now = Timestamp::now();
                        st.commit = Some(facts.commit.clone());
                        st.previous_commit = facts.previous_commit.clone();
                        st.migration_before = facts.migration_before.clone();
                        st.migration_target = facts.migration_target.clone();
                        st.env_hash = Some(facts.env_hash.clone());
                        st.waived = facts.waived.clone();
                        let short = plan::short(&facts.commit).to_owned();
                        plan::finish_step(
                            &mut st,
                            PREFLIGHT,
                            StepResult::Succeeded,
                            format!("{} is commit {short}{}", req.revision_display(), preflight::discard_note(&facts)),
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
                                &run.old.conditions,
                                &plan::conditions_for(Phase::Succeeded, reasons::UP_TO_DATE, message),
                                req.generation(),
                                now,
                            );
                            run.write(st.clone(), EventType::Normal).await?;
                            lock::release(run.envs, env, &me, None).await?;
                            return Ok(Some(Action::await_change()));
                        }
                        let (next, doing) = match req {
                            Req::Deploy(dr) if dr.is_restart() => {
                                (Phase::Restarting, format!("Restarting {}", dr.spec.restart.join(", ")))
                            }
                            // Nothing to migrate: the step is recorded skipped in this same
                            // write, and the release is built at once (a reconcile and a status
                            // write fewer).
                            Req::Deploy(_) if site.env.spec.migrations.is_none() => {
                                plan::finish_step(&mut st, MIGRATING, StepResult::Skipped, NO_MIGRATIONS, None, now);
                                (Phase::Rebuilding, BUILDING.to_owned())
                            }
                            Req::Deploy(_) => (Phase::Migrating, format!("Migrating the database with commit {short}")),
                            Req::Rollback(_) => (Phase::Downgrading, "Downgrading the database".to_owned()),
                        };
                        enter(&mut st, next, plan_step_name(next), now);
                        Ok(Some(run.progressing(st.clone(), next, doing, now).await?))
                    }
                    Err(Refusal::Stalled(p)) => {
                        Ok(Some(run.fail(env, st.clone(), p.reason, redactor.redact(&p.message), None, now).await?))
                    }
                    Err(Refusal::Remote(e)) => Err(e.into()),
                }
            }
            Phase::Migrating => {
                let commit = st.commit.clone().unwrap_or_default();
                // Entered before the Environment's migrations were removed (or by an earlier
                // version, which entered Migrating whether or not any were declared).
                if site.env.spec.migrations.is_none() {
                    plan::finish_step(&mut st, MIGRATING, StepResult::Skipped, NO_MIGRATIONS, None, now);
                    enter(&mut st, Phase::Rebuilding, REBUILDING, now);
                    return Ok(Some(run.progressing(st.clone(), Phase::Rebuilding, BUILDING.into(), now).await?));
                }
                if past_deadline(&site, &st, Phase::Migrating, deadline(deadlines.migration_seconds), now).await? {
                    return Ok(None);
                }
                match steps::migrate(&site, &commit).await? {
                    Progress::Running => Ok(Some(running(&site, &st, Phase::Migrating, deadlines.migration_seconds))),
                    Progress::Done { message } => {
                        st.migration_after = site.migration_revision(true).await?;
                        Ok(Some(run.step(st.clone(), MIGRATING, message, Phase::Rebuilding).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        run.fail(
                            env,
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
            Phase::Downgrading => {
                let Some(target) = st.migration_target.clone() else {
                    let why = match req.as_rollback().map(|r| r.spec.migrations) {
                        Some(slipway_crds::RollbackMigrations::Skip) => {
                            "migrations: Skip: the database was left as it is"
                        }
                        _ => "the database is already at the target's revision",
                    };
                    plan::finish_step(&mut st, DOWNGRADING, StepResult::Skipped, why, None, now);
                    enter(&mut st, Phase::Rebuilding, REBUILDING, now);
                    return Ok(Some(
                        run.progressing(
                            st.clone(),
                            Phase::Rebuilding,
                            "Building and starting the target release".into(),
                            now,
                        )
                        .await?,
                    ));
                };
                if past_deadline(&site, &st, Phase::Downgrading, deadline(deadlines.downgrade_seconds), now).await? {
                    return Ok(None);
                }
                match steps::downgrade(&site, &target).await? {
                    Progress::Running => Ok(Some(running(&site, &st, Phase::Downgrading, deadlines.downgrade_seconds))),
                    Progress::Done { message } => {
                        st.migration_after = site.migration_revision(false).await?;
                        if st.migration_after.as_deref() != Some(target.as_str()) {
                            let message = format!(
                                "{message}, but the database is now at revision {} instead of {target}",
                                st.migration_after.as_deref().unwrap_or("(none)")
                            );
                            return Ok(Some(
                                run.fail(env, st.clone(), reasons::DOWNGRADE_FAILED, message, None, now).await?,
                            ));
                        }
                        Ok(Some(run.step(st.clone(), DOWNGRADING, message, Phase::Rebuilding).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        run.fail(
                            env,
                            st.clone(),
                            reasons::DOWNGRADE_FAILED,
                            format!("downgrade failed: {message}; the running release was not touched"),
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
                match steps::rebuild(&site, &commit, since, heal).await? {
                    Progress::Running => Ok(Some(running(&site, &st, Phase::Rebuilding, deadlines.rebuild_seconds))),
                    Progress::Done { message } => {
                        Ok(Some(run.step(st.clone(), REBUILDING, message, Phase::Verifying).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        run.fail(
                            env,
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
            Phase::Restarting => {
                if past_deadline(&site, &st, Phase::Restarting, deadline(deadlines.rebuild_seconds), now).await? {
                    return Ok(None);
                }
                let services = req.as_deploy().map(|d| d.spec.restart.clone()).unwrap_or_default();
                match steps::restart(&site, &services).await? {
                    Progress::Running => Ok(Some(running(&site, &st, Phase::Restarting, deadlines.rebuild_seconds))),
                    Progress::Done { message } => {
                        Ok(Some(run.step(st.clone(), RESTARTING, message, Phase::Verifying).await?))
                    }
                    Progress::Failed { message, tail } => Ok(Some(
                        run.fail(
                            env,
                            st.clone(),
                            reasons::RESTART_FAILED,
                            format!("restart failed: {message}"),
                            tail,
                            now,
                        )
                        .await?,
                    )),
                }
            }
            Phase::Verifying => {
                let elapsed = Duration::from_secs(u64::try_from(plan::step_elapsed(&st, VERIFYING, now)).unwrap_or(0));
                match steps::verify_round(&site, ctx, elapsed).await? {
                    Progress::Running => Ok(Some(Action::requeue(Duration::from_secs(
                        u64::try_from(env.spec.health.interval_seconds).unwrap_or(3).max(1),
                    )))),
                    Progress::Done { message } => {
                        // Lines logged since the deploy began its changes (or since the
                        // container started, if later): the previous container's never count.
                        let since = plan::step(&st, REBUILDING)
                            .or_else(|| plan::step(&st, RESTARTING))
                            .and_then(|s| s.started_at.as_deref())
                            .and_then(|t| t.parse::<Timestamp>().ok())
                            .unwrap_or(now);
                        let scan = steps::log_scan(&site, since).await?;
                        let mut message = message;
                        let mut warning = String::new();
                        if !scan.found.is_empty() {
                            let found = format!("error lines in the logs since the deploy: {}", scan.summary());
                            if env.spec.health.log_errors == slipway_crds::LogErrors::Fail {
                                let message = format!(
                                    "{message}, but {found} (health.logErrorPatterns; health.logErrors: Warn only \
                                     warns)"
                                );
                                return Ok(Some(
                                    run.fail(
                                        env,
                                        st.clone(),
                                        reasons::LOG_ERRORS_FOUND,
                                        message,
                                        Some(scan.tail()),
                                        now,
                                    )
                                    .await?,
                                ));
                            }
                            // Also in the step's message: a bake's end reads it from there.
                            warning = format!("{WARNING}{found}");
                            message.push_str(&warning);
                        }
                        let now = Timestamp::now();
                        plan::finish_step(&mut st, VERIFYING, StepResult::Succeeded, message, None, now);
                        match rehearsal::decide(req, env, &st) {
                            rehearsal::Decision::Rehearse { previous, revision } => {
                                return Ok(Some(rehearsal::begin(run, st.clone(), &previous, &revision).await?));
                            }
                            rehearsal::Decision::Skip(why) => warning = format!("; {why}{warning}"),
                            rehearsal::Decision::Off => {}
                        }
                        Ok(Some(verified(run, &site, env, st.clone(), warning, now).await?))
                    }
                    Progress::Failed { message, tail } => {
                        Ok(Some(run.fail(env, st.clone(), reasons::VERIFICATION_FAILED, message, tail, now).await?))
                    }
                }
            }
            Phase::Rehearsing => Ok(Some(rehearsal::advance(run, &site, env, st.clone(), now).await?)),
            Phase::Baking => {
                let interval = Duration::from_secs(u64::try_from(env.spec.health.interval_seconds).unwrap_or(5).max(1));
                if let Some(later) = bake::extended_until(&st, interval, Timestamp::now()) {
                    tracing::info!(request = %req.name(), until = %later, "no bake round ran for a while; the bake period ends later");
                    st.bake_until = Some(later.to_string());
                    let secs = env.spec.bake_seconds();
                    let message = bake::baking_message(&env.name_any(), later, secs);
                    return Ok(Some(run.progressing(st.clone(), Phase::Baking, message, Timestamp::now()).await?));
                }
                if let Some(wait) = bake::next_round_in(&st, interval, Timestamp::now()) {
                    return Ok(Some(Action::requeue(wait)));
                }
                let round = steps::health_round(&site, ctx).await?;
                match bake::judge(&st, &round.failed, interval, Timestamp::now()) {
                    bake::Bake::Continue(wait) => {
                        st.bake_checked_at = Some(Timestamp::now().to_string());
                        run.write(st.clone(), EventType::Normal).await?;
                        Ok(Some(Action::requeue(wait)))
                    }
                    bake::Bake::Passed { message } => {
                        let now = Timestamp::now();
                        plan::finish_step(&mut st, BAKING, StepResult::Succeeded, message, None, now);
                        let note = bake_note(req, env, &st);
                        Ok(Some(succeed(run, &site, env, st.clone(), note, now).await?))
                    }
                    bake::Bake::Failed { message } => {
                        Ok(Some(run.fail(env, st.clone(), reasons::BAKE_FAILED, message, None, now).await?))
                    }
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
            return run.fail(env, st, reasons::PROGRESS_DEADLINE_EXCEEDED, message, None, now).await;
        }
        // The Kubernetes API failed (a status write timed out, a 5xx): retried with backoff by
        // the error policy, never taken for the step's failure.
        Err(StepError::Kube(e)) => return Err(e),
        Err(StepError::Remote(e)) => {
            if !e.is_transient() {
                // The request fails and passes the lock on: nothing it started may keep running.
                stop_jobs(&site, phase).await;
            }
            return run.remote_error(env, st, e, &redactor, now).await;
        }
    };
    Ok(action)
}

/// The Migrating step's message where the Environment declares no migrations.
const NO_MIGRATIONS: &str = "no migrations declared";

/// What the request says while the new release is built and started.
const BUILDING: &str = "Building and starting the new release";

/// What the log scan's warning adds to the Verifying step's message (and to the Ready message).
const WARNING: &str = "; warning: ";

/// Verified (and rehearsed, where it is): where the Environment bakes (`health.bakeSeconds`),
/// the request enters `Baking` until `status.bakeUntil`; otherwise it succeeds at once.
async fn verified(
    run: &Run<'_>,
    site: &Site<'_>,
    env: &Environment,
    mut st: DeployRequestStatus,
    note: String,
    now: Timestamp,
) -> std::result::Result<Action, StepError> {
    let Some(until) = bake::until(run.req, env, now) else {
        return succeed(run, site, env, st, note, now).await;
    };
    st.phase = Some(Phase::Baking);
    st.bake_until = Some(until.to_string());
    plan::start_step(&mut st, BAKING, now);
    let message = bake::baking_message(&env.name_any(), until, env.spec.bake_seconds());
    Ok(run.progressing(st, Phase::Baking, message, now).await?)
}

/// The note a baked request's success message ends with, as it would have without the bake
/// (read again from status: a restarted controller has only that).
fn bake_note(req: &Req, env: &Environment, st: &DeployRequestStatus) -> String {
    let rehearsed =
        plan::step(st, rehearsal::FORWARD_VERIFYING).is_some_and(|s| s.result == Some(StepResult::Succeeded));
    if rehearsed {
        return rehearsal::summary(st);
    }
    let warning = plan::step(st, VERIFYING)
        .and_then(|s| s.message.as_deref())
        .and_then(|m| m.split_once(WARNING))
        .map(|(_, w)| format!("{WARNING}{w}"))
        .unwrap_or_default();
    match rehearsal::decide(req, env, st) {
        rehearsal::Decision::Skip(why) => format!("; {why}{warning}"),
        _ => warning,
    }
}

/// The request passed (verified, rehearsed and baked where it is): it ends `Succeeded`, its
/// release recorded with the images that run, live since `now` (when the last verification or
/// the bake passed), and the lock passed on. `note` ends the message.
async fn succeed(
    run: &Run<'_>,
    site: &Site<'_>,
    env: &Environment,
    mut st: DeployRequestStatus,
    note: String,
    now: Timestamp,
) -> std::result::Result<Action, StepError> {
    let req = run.req;
    let release = release_record(site, req, &st, "Succeeded", now).await?;
    let commit = st.commit.clone().unwrap_or_default();
    // A record for people, never a reason to fail a verified release.
    let env_keys = match preflight::env_keys(site, &commit).await {
        Ok(keys) => Some(keys),
        Err(e) => {
            tracing::warn!(kind = req.kind(), name = %req.name(), error = %e, "could not record the release's .env.example keys");
            None
        }
    };
    st.phase = Some(Phase::Succeeded);
    let short = plan::short(st.commit.as_deref().unwrap_or_default()).to_owned();
    let baked = plan::step(&st, BAKING)
        .map(|_| format!(" and through its {}s bake period", env.spec.bake_seconds()))
        .unwrap_or_default();
    let message = match req {
        Req::Deploy(dr) if dr.is_restart() => format!(
            "restarted {} of {} (commit {short}) on Environment {:?}, verified healthy",
            dr.spec.restart.join(", "),
            release.ref_,
            env.name_any()
        ),
        Req::Deploy(dr) => format!(
            "{} (commit {short}) runs on Environment {:?}, verified healthy{baked}",
            dr.spec.revision.display(),
            env.name_any()
        ),
        Req::Rollback(_) => format!(
            "Environment {:?} is back on {} (commit {short}), database at {}, verified healthy",
            env.name_any(),
            release.ref_,
            release.migration.as_deref().unwrap_or("(no revision)")
        ),
    } + &note;
    st.conditions = conditions::set(
        &run.old.conditions,
        &plan::conditions_for(Phase::Succeeded, reasons::SUCCEEDED, message),
        req.generation(),
        now,
    );
    run.write(st, EventType::Normal).await?;
    let left = lock::Record { release: Some(&release), env_keys: env_keys.as_ref(), ..Default::default() };
    finish_lock(run.ctx, run.envs, env, &req.id(), None, left).await?;
    Ok(Action::await_change())
}

/// The finalizer a request carries while it may hold its Environment's lock.
pub const LOCK_FINALIZER: &str = "slipway.dev/deploy-lock";

fn holds(env: &Environment, me: &str) -> bool {
    env.status.as_ref().and_then(|s| s.active_deploy.as_deref()) == Some(me)
}

/// Did the request get past preflight (so the host changed)?
fn changed_host(st: &DeployRequestStatus) -> bool {
    st.steps
        .iter()
        .any(|s| [MIGRATING, DOWNGRADING, REBUILDING, RESTARTING, VERIFYING, BAKING].contains(&s.name.as_str()))
}

/// The host jobs a phase may have running.
fn phase_jobs(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Migrating => &steps::MIGRATION_JOBS,
        Phase::Downgrading => &steps::DOWNGRADE_JOBS,
        Phase::Rebuilding => &steps::REBUILD_JOBS,
        Phase::Restarting => &steps::RESTART_JOBS,
        Phase::Rehearsing => &rehearsal::JOBS,
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
async fn abandon(run: &Run<'_>, env: Option<&Environment>, now: Timestamp) -> Result<Action> {
    let (ctx, req, old) = (run.ctx, run.req, run.old);
    let me = req.id();
    if let Some(env) = env
        && holds(env, &me)
    {
        let phase = old.phase.unwrap_or(Phase::Preflight);
        let deleted = req.meta().deletion_timestamp.as_ref().map_or(now.as_second(), |t| t.0.as_second());
        if !phase_jobs(phase).is_empty() && now.as_second() - deleted < ABANDON_GRACE {
            let mut secrets = SecretReader::new(ctx.client.clone(), &req.namespace());
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
                    uid: req.uid(),
                    env_values: &credentials.env_values,
                    watch: None,
                    watched: Default::default(),
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
                return Ok(Action::requeue(ctx.backoff.failed(&req.key(), Duration::from_secs(5))));
            }
        }
        let record = changed_host(old).then(|| plan::release(req, env, old, "Abandoned", Default::default(), None));
        if release_lock(run.ctx, run.envs, env, &me, record.as_ref()).await? == Cas::Conflict {
            // Keep the finalizer: the object must not go while it still holds the lock.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        ctx.metrics.deploy_ended("Abandoned");
        ctx.event(
            &req.object_ref(),
            EventType::Warning,
            "Abandoned",
            format!("deleted during {phase}: its host job was stopped and the lock passed on"),
        )
        .await;
    }
    run.finalizer(false).await?;
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

/// When to look again at `phase`, whose host job runs ([`Site::running_requeue`]).
/// (Measured from now: the reconcile's own work, a checkout say, has taken some of the time.)
fn running(site: &Site<'_>, st: &DeployRequestStatus, phase: Phase, deadline_seconds: i32) -> Action {
    let elapsed = plan::step_elapsed(st, plan_step_name(phase), Timestamp::now());
    Action::requeue(site.running_requeue(i64::from(deadline_seconds.max(1)) - elapsed))
}

fn plan_step_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Migrating => MIGRATING,
        Phase::Downgrading => DOWNGRADING,
        Phase::Rebuilding => REBUILDING,
        Phase::Restarting => RESTARTING,
        Phase::Verifying => VERIFYING,
        Phase::Baking => BAKING,
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

impl Run<'_> {
    /// Adds (`on`) or removes the lock finalizer; `Conflict` when the object changed since it was read.
    async fn finalizer(&self, on: bool) -> Result<Cas> {
        let mut list: Vec<String> = self.req.finalizers().to_vec();
        let has = list.iter().any(|f| f == LOCK_FINALIZER);
        if has == on {
            return Ok(Cas::Done);
        }
        if on {
            list.push(LOCK_FINALIZER.to_owned());
        } else {
            list.retain(|f| f != LOCK_FINALIZER);
        }
        // Changed meanwhile (approval withdrawn, deletion begun) or gone: decide again.
        self.req.patch_metadata(&self.ctx.client, serde_json::json!({ "finalizers": list })).await
    }

    /// Records `finished` as Succeeded with `message` and enters `phase`, writing status.
    async fn step(&self, mut st: DeployRequestStatus, finished: &str, message: String, phase: Phase) -> Result<Action> {
        // Steps end when their work ended, not when the reconcile began.
        let now = Timestamp::now();
        plan::finish_step(&mut st, finished, StepResult::Succeeded, message, None, now);
        enter(&mut st, phase, plan_step_name(phase), now);
        let doing = match (phase, self.req) {
            (Phase::Rebuilding, Req::Deploy(_)) => "Building and starting the new release",
            (Phase::Rebuilding, Req::Rollback(_)) => "Building and starting the target release",
            (Phase::Verifying, _) => "Verifying the release's health",
            _ => "Migrating the database",
        };
        self.progressing(st, phase, doing.to_owned(), now).await
    }

    async fn progressing(
        &self,
        mut st: DeployRequestStatus,
        phase: Phase,
        message: String,
        now: Timestamp,
    ) -> Result<Action> {
        st.conditions = conditions::set(
            &self.old.conditions,
            &plan::conditions_for(phase, plan::progress_reason(phase), message),
            self.req.generation(),
            now,
        );
        self.write(st, EventType::Normal).await?;
        Ok(Action::requeue(Duration::ZERO))
    }

    /// A remote failure during a step: transient ones (host unreachable, busy) are retried with
    /// backoff and leave the step where it was; others fail the request.
    async fn remote_error(
        &self,
        env: &Environment,
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
            st.conditions = conditions::set(&self.old.conditions, &decided, self.req.generation(), now);
            self.write(st, EventType::Warning).await?;
            tracing::info!(kind = self.req.kind(), name = %self.req.name(), reason = e.reason(), error = %message, "deploy step will be retried");
            return Ok(Action::requeue(self.ctx.backoff.failed(&self.req.key(), Duration::from_secs(5))));
        }
        self.fail(env, st, e.reason(), message, None, now).await
    }

    /// Ends the request `Failed` with `reason`, records it in the Environment's history when the
    /// host was changed, and passes the lock on; or, where the Environment rolls failed deploys
    /// back, hands the lock to the Rollback that undoes it ([`auto`]).
    async fn fail(
        &self,
        env: &Environment,
        mut st: DeployRequestStatus,
        reason: &'static str,
        message: String,
        tail: Option<String>,
        now: Timestamp,
    ) -> Result<Action> {
        let me = self.req.id();
        let phase = st.phase.unwrap_or(Phase::Preflight);
        // A rehearsal records its own steps; an error in one of them ends it.
        let step = if phase == Phase::Rehearsing { rehearsal::running(&st) } else { Some(plan_step_name(phase)) };
        if let Some(step) = step {
            plan::finish_step(&mut st, step, StepResult::Failed, message.clone(), tail, now);
        }
        st.queue_position = None;
        if auto::wanted(self.req, env, &st, phase) {
            return auto::begin(self, st, reason, message, now).await;
        }
        // An automatic rollback that fails leaves a host nobody verified: say so plainly.
        let (reason, message) = if auto::is_automatic(self.req) {
            (reasons::ROLLBACK_FAILED, format!("{reason}: {message}"))
        } else {
            (reason, message)
        };
        let changed_host = matches!(
            phase,
            Phase::Migrating
                | Phase::Downgrading
                | Phase::Rebuilding
                | Phase::Restarting
                | Phase::Verifying
                | Phase::Rehearsing
                | Phase::Baking
        );
        st.phase = Some(Phase::Failed);
        st.conditions = conditions::set(
            &self.old.conditions,
            &plan::conditions_for(Phase::Failed, reason, message),
            self.req.generation(),
            now,
        );
        let record = changed_host.then(|| plan::release(self.req, env, &st, "Failed", Default::default(), None));
        let attention = auto::attention(self.req, &st, now);
        self.write(st, EventType::Warning).await?;
        let left = lock::Record { release: record.as_ref(), attention: attention.as_ref(), ..Default::default() };
        finish_lock(self.ctx, self.envs, env, &me, None, left).await?;
        Ok(Action::await_change())
    }

    /// Writes the request's status when it changed, and an Event when Ready changed its reason.
    async fn write(&self, st: DeployRequestStatus, type_: EventType) -> Result<()> {
        let mut st = st;
        crate::notify::enqueue(self.req, self.receivers, self.old, &mut st, Timestamp::now());
        let steps = plan::step_conditions(&st);
        st.conditions = conditions::set(&st.conditions, &steps, self.req.generation(), Timestamp::now());
        if self.req.status() != Some(&st) {
            self.req.apply_status(&self.ctx.client, &st).await?;
            observe(self.ctx, self.old, &st);
            tracing::info!(kind = self.req.kind(), name = %self.req.name(), phase = st.phase.map(|p| p.as_str()).unwrap_or("-"), "status written");
        }
        if let Some(t) = Transition::between(&self.old.conditions, &st.conditions, type_) {
            self.ctx.event(&self.req.object_ref(), t.type_, &t.reason, t.note).await;
        }
        Ok(())
    }
}

/// Releases the lock, re-reading the Environment on a conflict (its monitor writes conditions).
/// `Conflict` when it stayed contended: the next reconcile of this (terminal) request releases it.
async fn release_lock(
    ctx: &Context,
    envs: &Api<Environment>,
    env: &Environment,
    me: &str,
    record: Option<&Release>,
) -> Result<Cas> {
    finish_lock(ctx, envs, env, me, None, lock::Record { release: record, ..Default::default() }).await
}

/// [`lock::finish`] (release, or hand over to `next`), re-reading the Environment on a conflict.
/// The copy of the compose model the deploy's own rounds read goes to the monitor's rounds of the
/// release it records as current (their key is read again before it serves); any other goes.
async fn finish_lock(
    ctx: &Context,
    envs: &Api<Environment>,
    env: &Environment,
    me: &str,
    next: Option<&str>,
    record: lock::Record<'_>,
) -> Result<Cas> {
    let succeeded = record.release.filter(|r| next.is_none() && lock::becomes_current(r));
    match succeeded {
        Some(release) => ctx.configs.hand_over(&crate::object_key(env), release),
        None => ctx.configs.forget(&crate::object_key(env)),
    }
    let mut current = env.clone();
    for _ in 0..5 {
        if lock::finish(envs, &current, me, next, record).await? == Cas::Done {
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
    req: &Req,
    st: &DeployRequestStatus,
    result: &str,
    now: Timestamp,
) -> std::result::Result<Release, RemoteError> {
    let images = record::images(&site.conn.project_containers(&site.project.name).await?);
    Ok(plan::release(req, site.env, st, result, images, Some(now.to_string())))
}

/// Metrics of what a status write records: steps that finished, a deploy that ended.
fn observe(ctx: &Context, old: &DeployRequestStatus, st: &DeployRequestStatus) {
    for step in &st.steps {
        let newly = step.finished_at.is_some() && plan::step(old, &step.name).is_none_or(|o| o.finished_at.is_none());
        let name = [PREFLIGHT, MIGRATING, DOWNGRADING, REBUILDING, RESTARTING, VERIFYING, BAKING]
            .into_iter()
            .find(|n| *n == step.name);
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
            (Some(Phase::RolledBack), _) => "RolledBack",
            _ => "Failed",
        });
    }
}
