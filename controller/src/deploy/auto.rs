//! Automatic rollback: a DeployRequest that fails after it changed the database or the running
//! containers hands its lock, without a gap, to a Rollback it owns, which returns the Environment
//! to the release that ran before (database first). The DeployRequest follows it and ends
//! `RolledBack` (or `Failed` with `RollbackFailed`); it never reports success. The failed commit
//! is quarantined so a GitOps loop does not deploy it again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::reasons;
use slipway_crds::{
    Attention, DeployRequest, DeployRequestStatus, Environment, Phase, Quarantined, Rollback, RollbackMigrations,
    RollbackSpec, RollbackTarget, StepResult,
};

use crate::conditions;
use crate::error::Result;

use super::lock::{self, Cas};
use super::plan::{self, MIGRATING};
use super::request::Req;
use super::{LOCK_FINALIZER, Run, holds, release_lock, release_lock_needing};

/// Longest reason a Rollback's schema admits.
const REASON_MAX: usize = 1024;

/// Is a DeployRequest failing in `phase` rolled back automatically? Where the Environment says
/// so, once the host changed: at Verifying, or at Rebuilding after its migration ran; and only
/// when a release ran before it.
pub fn wanted(req: &Req, env: &Environment, st: &DeployRequestStatus, phase: Phase) -> bool {
    let migrated = plan::step(st, MIGRATING).is_some_and(|s| s.result == Some(StepResult::Succeeded));
    matches!(req, Req::Deploy(_))
        && env.spec.policy.auto_rollback
        && st.previous_commit.is_some()
        && (phase == Phase::Verifying || (phase == Phase::Rebuilding && migrated))
}

/// The name of the Rollback undoing `dr`.
pub fn rollback_name(dr: &str) -> String {
    let mut base: String = dr.chars().take(253 - "-rollback".len()).collect();
    base = base.trim_end_matches(['-', '.']).to_owned();
    format!("{base}-rollback")
}

/// The deploy failed: it records the failure and enters `RollingBack`, then [`follow`] creates
/// the Rollback and hands it the lock.
pub(super) async fn begin(
    run: &Run<'_>,
    mut st: DeployRequestStatus,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> Result<Action> {
    let name = rollback_name(&run.req.name());
    st.phase = Some(Phase::RollingBack);
    st.rollback = Some(name.clone());
    let previous = plan::short(st.previous_commit.as_deref().unwrap_or_default()).to_owned();
    let decided = crate::references::progressing(
        reasons::ROLLING_BACK,
        format!("{reason}: {message}; rolling back to commit {previous} with Rollback {name}"),
    );
    st.conditions = conditions::set(&run.old.conditions, &decided, run.req.generation(), now);
    run.write(st, EventType::Warning).await?;
    Ok(Action::requeue(Duration::ZERO))
}

/// A DeployRequest in `RollingBack`: makes sure its Rollback exists and holds the lock, and ends
/// as the Rollback ended.
pub(super) async fn follow(run: &Run<'_>, env: &Environment, now: Timestamp) -> Result<Action> {
    let Req::Deploy(dr) = run.req else { return Ok(Action::await_change()) };
    let old = run.old;
    let me = run.req.id();
    let name = old.rollback.clone().unwrap_or_else(|| rollback_name(&dr.name_any()));
    let rollbacks: Api<Rollback> = Api::namespaced(run.ctx.client.clone(), &run.req.namespace());
    let rb = match rollbacks.get_opt(&name).await? {
        Some(rb) if owned_by(&rb, dr) => rb,
        Some(_) => {
            let message = format!(
                "{}; a Rollback named {name} already exists and is not this request's, so it was not rolled back: \
                 roll back with a Rollback of your own",
                failure(old)
            );
            return end(run, env, Phase::Failed, reasons::ROLLBACK_FAILED, message, now).await;
        }
        None => match rollbacks.create(&PostParams::default(), &automatic(dr, env, old, &name)).await {
            Ok(rb) => rb,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_secs(1))),
            Err(e) => return Err(e.into()),
        },
    };
    let rb_req = Req::Rollback(rb.clone());
    let rb_phase = rb_req.phase();
    if holds(env, &me) {
        let record = plan::release(run.req, env, old, "Failed", Default::default(), None);
        if rb_phase.is_some_and(Phase::is_terminal) {
            // It ended before it held the lock (refused by a gate): nothing was rolled back, and
            // the host runs a release that failed.
            let rb_status = rb.status.clone().unwrap_or_default();
            let attention = attention(&rb_req, &rb_status, now);
            release_lock_needing(run.envs, env, &me, Some(&record), attention.as_ref()).await?;
        } else {
            let quarantine = Quarantined {
                commit: old.commit.clone().unwrap_or_default(),
                ref_: record.ref_.clone(),
                failed_in: Some(me.clone()),
                reason: Some(failure(old)),
                since: Some(now.to_string()),
            };
            if lock::hand_over(run.envs, env, &me, &rb_req.id(), Some(&record), Some(&quarantine)).await?
                == Cas::Conflict
            {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            tracing::info!(deployrequest = %dr.name_any(), rollback = %name, "handed the deploy lock to its rollback");
        }
    }
    // The lock is the Rollback's now (or passed on): the request may go.
    run.finalizer(false).await?;
    let rb_message = rb
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, slipway_crds::conditions::types::READY))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    match rb_phase {
        Some(Phase::Succeeded) => {
            let message = format!("{}; rolled back by Rollback {name}: {rb_message}", failure(old));
            end(run, env, Phase::RolledBack, reasons::ROLLED_BACK, message, now).await
        }
        Some(Phase::Failed) => {
            let message = format!(
                "{}; its Rollback {name} failed too: {rb_message}. Environment {:?} needs a person: check the host, \
                 then create a new DeployRequest or Rollback",
                failure(old),
                env.name_any()
            );
            end(run, env, Phase::Failed, reasons::ROLLBACK_FAILED, message, now).await
        }
        // The Rollback's changes wake this request (it owns the Rollback).
        _ => Ok(Action::requeue(Duration::from_secs(60))),
    }
}

/// What failed, as the failing step recorded it.
fn failure(st: &DeployRequestStatus) -> String {
    st.steps
        .iter()
        .rfind(|s| s.result == Some(StepResult::Failed))
        .map(|s| format!("{} failed: {}", s.name, s.message.as_deref().unwrap_or_default()))
        .unwrap_or_else(|| "the deploy failed".to_owned())
}

async fn end(
    run: &Run<'_>,
    env: &Environment,
    phase: Phase,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> Result<Action> {
    let mut st = run.old.clone();
    st.phase = Some(phase);
    st.conditions =
        conditions::set(&run.old.conditions, &plan::conditions_for(phase, reason, message), run.req.generation(), now);
    run.write(st, EventType::Warning).await?;
    if holds(env, &run.req.id()) {
        release_lock(run.envs, env, &run.req.id(), None).await?;
    }
    Ok(Action::await_change())
}

/// Is `req` a Rollback some DeployRequest made to undo itself?
pub fn is_automatic(req: &Req) -> bool {
    req.as_rollback().is_some_and(|rb| {
        rb.owner_references().iter().any(|o| o.controller == Some(true) && o.kind == DeployRequest::kind(&()))
    })
}

/// What a failed automatic rollback leaves on its Environment: a mark that a person is needed.
pub fn attention(req: &Req, st: &DeployRequestStatus, now: Timestamp) -> Option<Attention> {
    if !is_automatic(req) || st.phase != Some(Phase::Failed) {
        return None;
    }
    let why = conditions::find(&st.conditions, slipway_crds::conditions::types::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    Some(Attention {
        message: format!(
            "the automatic Rollback {} failed ({why}): check the host, then create a new DeployRequest or Rollback",
            req.name()
        ),
        since: now.to_string(),
    })
}

fn owned_by(rb: &Rollback, dr: &DeployRequest) -> bool {
    rb.owner_references().iter().any(|o| Some(&o.uid) == dr.metadata.uid.as_ref() && o.controller == Some(true))
}

/// The Rollback undoing `dr`: back to the commit that ran before it, database included; it
/// carries the lock finalizer from birth, as it receives the lock without queueing.
fn automatic(dr: &DeployRequest, env: &Environment, st: &DeployRequestStatus, name: &str) -> Rollback {
    let reason: String = format!(
        "automatic: DeployRequest {} failed ({})",
        dr.name_any(),
        failure(st).chars().filter(|c| !c.is_control()).collect::<String>()
    )
    .chars()
    .take(REASON_MAX)
    .collect();
    let owner = OwnerReference {
        api_version: DeployRequest::api_version(&()).into_owned(),
        kind: DeployRequest::kind(&()).into_owned(),
        name: dr.name_any(),
        uid: dr.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let mut rb = Rollback::new(
        name,
        RollbackSpec {
            environment: env.name_any(),
            to: RollbackTarget { release: st.previous_commit.clone(), ..Default::default() },
            reason,
            migrations: RollbackMigrations::Downgrade,
        },
    );
    rb.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: dr.namespace(),
        owner_references: Some(vec![owner]),
        finalizers: Some(vec![LOCK_FINALIZER.to_owned()]),
        labels: Some([("slipway.dev/rolls-back".to_owned(), dr.name_any().chars().take(63).collect())].into()),
        ..Default::default()
    };
    rb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_names_fit() {
        assert_eq!(rollback_name("shop-45"), "shop-45-rollback");
        let long = "a".repeat(253);
        assert!(rollback_name(&long).len() <= 253);
    }
}
