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
use super::{LOCK_FINALIZER, Run, finish_lock, holds};

/// Longest reason a Rollback's schema admits.
const REASON_MAX: usize = 1024;

/// Is a DeployRequest failing in `phase` rolled back automatically? Where the Environment says
/// so, once the host changed: at Verifying or Baking, or at Rebuilding after its migration ran; and only
/// when another commit ran before it (a failed redeploy of the running commit, a changed `.env`,
/// has no other code to return to and quarantining the running commit would be wrong).
pub fn wanted(req: &Req, env: &Environment, st: &DeployRequestStatus, phase: Phase) -> bool {
    let migrated = plan::step(st, MIGRATING).is_some_and(|s| s.result == Some(StepResult::Succeeded));
    matches!(req, Req::Deploy(_))
        && env.spec.policy.auto_rollback
        && st.previous_commit.is_some()
        && st.previous_commit != st.commit
        && (matches!(phase, Phase::Verifying | Phase::Baking) || (phase == Phase::Rebuilding && migrated))
}

/// The name of the Rollback undoing a DeployRequest: its name and the start of its UID (a
/// request re-created under the same name gets another one).
pub fn rollback_name(dr: &DeployRequest) -> String {
    let uid: String = dr.metadata.uid.as_deref().unwrap_or_default().chars().take(5).collect();
    let suffix = format!("-rollback-{uid}");
    let base: String = dr.name_any().chars().take(253 - suffix.len()).collect();
    format!("{}{suffix}", base.trim_end_matches(['-', '.']))
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
    let Req::Deploy(dr) = run.req else { return Ok(Action::await_change()) };
    let name = rollback_name(dr);
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

/// A DeployRequest in `RollingBack` (deleted or not: its rollback must not be lost): makes sure
/// its Rollback exists and holds the lock, and ends as the Rollback ended.
pub(super) async fn follow(run: &Run<'_>, env: &Environment, now: Timestamp) -> Result<Action> {
    let Req::Deploy(dr) = run.req else { return Ok(Action::await_change()) };
    let old = run.old;
    let me = run.req.id();
    let holding = holds(env, &me);
    let name = old.rollback.clone().unwrap_or_else(|| rollback_name(dr));
    let rollbacks: Api<Rollback> = Api::namespaced(run.ctx.client.clone(), &run.req.namespace());
    let rb = match rollbacks.get_opt(&name).await? {
        Some(rb) if is_ours(&rb, dr, old) => rb,
        Some(_) => {
            return give_up(run, env, format!("a Rollback named {name} exists that this request did not make"), now)
                .await;
        }
        // Created, handed the lock, then deleted by a person: it is not made again.
        None if !holding => {
            return give_up(run, env, format!("its Rollback {name} was deleted before it ended"), now).await;
        }
        None => match rollbacks.create(&PostParams::default(), &automatic(dr, env, old, &name)).await {
            Ok(rb) => rb,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_secs(1))),
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) => {
                let why = format!("the Rollback {name} could not be created ({}: {})", s.code, s.message);
                return give_up(run, env, why, now).await;
            }
            Err(e) => return Err(e.into()),
        },
    };
    let rb_req = Req::Rollback(rb.clone());
    let rb_phase = rb_req.phase();
    if holding {
        let record = plan::release(run.req, env, old, "Failed", Default::default(), None);
        let quarantine = quarantine(run.req, old, &record, now);
        let (next, attention) = if rb_phase.is_some_and(Phase::is_terminal) {
            // It ended before it held the lock (refused by a gate): nothing was rolled back, and
            // the host runs a release that failed.
            (None, attention(&rb_req, rb.status.as_ref().unwrap_or(&Default::default()), now))
        } else {
            (Some(rb_req.id()), None)
        };
        let left = lock::Record {
            release: Some(&record),
            quarantine: Some(&quarantine),
            attention: attention.as_ref(),
            env_keys: None,
        };
        if finish_lock(run.ctx, run.envs, env, &me, next.as_deref(), left).await? == Cas::Conflict {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        tracing::info!(deployrequest = %dr.name_any(), rollback = %name, "handed the deploy lock to its rollback");
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
            end(run, Phase::RolledBack, reasons::ROLLED_BACK, message, now).await
        }
        Some(Phase::Failed) => {
            let message = format!(
                "{}; its Rollback {name} failed too: {rb_message}. Environment {:?} needs a person: check the host, \
                 then create a new DeployRequest or Rollback",
                failure(old),
                env.name_any()
            );
            end(run, Phase::Failed, reasons::ROLLBACK_FAILED, message, now).await
        }
        // The Rollback's changes wake this request (it owns the Rollback).
        _ => Ok(Action::requeue(Duration::from_secs(60))),
    }
}

/// The failed commit, kept out of the Environment from now on.
fn quarantine(req: &Req, st: &DeployRequestStatus, record: &slipway_crds::Release, now: Timestamp) -> Quarantined {
    Quarantined {
        commit: st.commit.clone().unwrap_or_default(),
        ref_: record.ref_.clone(),
        failed_in: Some(req.id()),
        reason: Some(failure(st)),
        since: Some(now.to_string()),
    }
}

/// The rollback cannot happen: the request ends `RollbackFailed`, its commit quarantined, and
/// (when it still holds the lock) releases it marking the Environment as needing a person.
async fn give_up(run: &Run<'_>, env: &Environment, why: String, now: Timestamp) -> Result<Action> {
    let old = run.old;
    let me = run.req.id();
    let message = format!(
        "{}; {why}, so it was not rolled back. Environment {:?} needs a person: check the host, then create a new \
         DeployRequest or Rollback",
        failure(old),
        env.name_any()
    );
    if holds(env, &me) {
        let record = plan::release(run.req, env, old, "Failed", Default::default(), None);
        let quarantine = quarantine(run.req, old, &record, now);
        let attention = Attention { message: message.clone(), since: now.to_string() };
        let left = lock::Record {
            release: Some(&record),
            quarantine: Some(&quarantine),
            attention: Some(&attention),
            env_keys: None,
        };
        if finish_lock(run.ctx, run.envs, env, &me, None, left).await? == Cas::Conflict {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    run.finalizer(false).await?;
    end(run, Phase::Failed, reasons::ROLLBACK_FAILED, message, now).await
}

/// What failed, as the failing step recorded it.
fn failure(st: &DeployRequestStatus) -> String {
    st.steps
        .iter()
        .rfind(|s| s.result == Some(StepResult::Failed))
        .map(|s| format!("{} failed: {}", s.name, s.message.as_deref().unwrap_or_default()))
        .unwrap_or_else(|| "the deploy failed".to_owned())
}

async fn end(run: &Run<'_>, phase: Phase, reason: &'static str, message: String, now: Timestamp) -> Result<Action> {
    let mut st = run.old.clone();
    st.phase = Some(phase);
    st.conditions =
        conditions::set(&run.old.conditions, &plan::conditions_for(phase, reason, message), run.req.generation(), now);
    run.write(st, EventType::Warning).await?;
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

/// Is `rb` the Rollback this request made: controlled by it, returning to the commit that ran
/// before it, database included? (Only the controller may add such an owner reference: the
/// admission policy; the target is checked too.)
fn is_ours(rb: &Rollback, dr: &DeployRequest, st: &DeployRequestStatus) -> bool {
    let owned =
        rb.owner_references().iter().any(|o| Some(&o.uid) == dr.metadata.uid.as_ref() && o.controller == Some(true));
    owned
        && rb.spec.to.release.is_some()
        && rb.spec.to.release == st.previous_commit
        && rb.spec.migrations == RollbackMigrations::Downgrade
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
        // The shard labels (--watch-label-selector) come along: the shard that ran the deploy
        // watches its Rollback too.
        labels: dr.metadata.labels.clone(),
        finalizers: Some(vec![LOCK_FINALIZER.to_owned()]),
        // Who asked for the deploy asked for its undoing (the admission policy admits this from
        // the controller only).
        annotations: dr
            .requested_by()
            .map(|who| [(slipway_crds::annotations::REQUESTED_BY.to_owned(), who.to_owned())].into()),
        ..Default::default()
    };
    rb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dr(name: &str) -> DeployRequest {
        let mut dr = DeployRequest::new(
            name,
            slipway_crds::DeployRequestSpec {
                restart: Vec::new(),
                environment: "staging".into(),
                revision: slipway_crds::Revision { tag: Some("v2".into()), ..Default::default() },
                issue: None,
                mode: Default::default(),
                force: false,
                override_quarantine: false,
            },
        );
        dr.metadata.uid = Some("0f2c9a1b-7d".into());
        dr
    }

    #[test]
    fn rollback_names_are_valid_object_names() {
        assert_eq!(rollback_name(&dr("shop-45")), "shop-45-rollback-0f2c9");
        for name in ["a".repeat(253), format!("{}.b", "a".repeat(239)), format!("{}-", "a".repeat(238))] {
            let got = rollback_name(&dr(&name));
            assert!(got.len() <= 253, "{got}");
            assert!(!got.contains("--") && !got.contains(".-"), "{got}");
        }
    }

    fn env(auto: bool) -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"},
                "policy": {"autoRollback": auto}
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_a_deploy_that_changed_the_host_away_from_another_commit_is_rolled_back() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let mut st = DeployRequestStatus {
            commit: Some("bbb".into()),
            previous_commit: Some("aaa".into()),
            ..Default::default()
        };
        let req = Req::Deploy(dr("shop-45"));
        assert!(wanted(&req, &env(true), &st, Phase::Verifying));
        assert!(wanted(&req, &env(true), &st, Phase::Baking), "a failure during the bake period");
        assert!(!wanted(&req, &env(false), &st, Phase::Verifying), "autoRollback: false");
        assert!(!wanted(&req, &env(true), &st, Phase::Migrating), "a failed migration changed nothing");
        assert!(!wanted(&req, &env(true), &st, Phase::Rebuilding), "no migration ran: the old containers decide");
        plan::finish_step(&mut st, MIGRATING, StepResult::Succeeded, "ok", None, t);
        assert!(wanted(&req, &env(true), &st, Phase::Rebuilding), "migrated, then the rebuild failed");
        let same = DeployRequestStatus { commit: Some("aaa".into()), ..st.clone() };
        assert!(!wanted(&req, &env(true), &same, Phase::Verifying), "a redeploy of the running commit");
        let first = DeployRequestStatus { previous_commit: None, ..st };
        assert!(!wanted(&req, &env(true), &first, Phase::Verifying), "nothing ran before it");
    }

    #[test]
    fn only_a_failed_automatic_rollback_marks_the_environment() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let owner = dr("shop-45");
        let failed = DeployRequestStatus { phase: Some(Phase::Failed), ..Default::default() };
        let mut made = automatic(
            &owner,
            &env(true),
            &DeployRequestStatus { previous_commit: Some("aaa".into()), ..Default::default() },
            "shop-45-rollback-0f2c9",
        );
        assert!(is_automatic(&Req::Rollback(made.clone())));
        assert!(attention(&Req::Rollback(made.clone()), &failed, t).is_some());
        let succeeded = DeployRequestStatus { phase: Some(Phase::Succeeded), ..Default::default() };
        assert!(attention(&Req::Rollback(made.clone()), &succeeded, t).is_none());
        assert!(is_ours(
            &made,
            &owner,
            &DeployRequestStatus { previous_commit: Some("aaa".into()), ..Default::default() }
        ));
        // another target, or skipping the database, is not the rollback this request asked for
        assert!(!is_ours(
            &made,
            &owner,
            &DeployRequestStatus { previous_commit: Some("ccc".into()), ..Default::default() }
        ));
        made.metadata.owner_references = None;
        assert!(!is_automatic(&Req::Rollback(made.clone())));
        assert!(
            attention(&Req::Rollback(made), &failed, t).is_none(),
            "a person's Rollback failing is its own failure"
        );
        assert!(attention(&Req::Deploy(owner), &failed, t).is_none());
    }
}
