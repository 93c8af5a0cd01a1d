//! `spec.revision`: what an Environment should run, declared. When the commit it stands for
//! differs from what runs, the Environment gets a DeployRequest of its own (owner reference, a
//! name from the commit and an attempt number, found again by label), as a Deployment gets
//! ReplicaSets; that request is queued, gated, locked, verified and recorded like any other.
//!
//! One request per commit and declaration: a failed one is not retried until `spec.revision`
//! changes or the Environment is annotated `slipway.dev/refresh` anew, so a bad release is not
//! deployed in a loop; a quarantined commit is not deployed by this path at all. A manual
//! Rollback suspends the declaration until it changes (else it would undo the rollback).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::annotations::{DESIRED_REVISION, REFRESH, REQUESTED_BY, REVISION_OF};
use slipway_crds::{
    DeployMode, DeployRequest, DeployRequestSpec, DesiredRevision, Environment, Phase, Revision, RevisionFailure,
    RevisionStatus, Rollback,
};

use crate::Transition;
use crate::context::Context;
use crate::remote::HostConnection;
use crate::remote::git::{self, RevisionRef};

pub const SYNCED: &str = "Synced";
pub const DEPLOYING: &str = "Deploying";
pub const FAILED: &str = "Failed";
pub const SUPERSEDED: &str = "Superseded";
pub const QUARANTINED: &str = "Quarantined";
pub const SUSPENDED: &str = "Suspended";
pub const UNRESOLVED: &str = "Unresolved";
pub const HELD: &str = "Held";

/// A DeployRequest made for the declaration, as far as deciding goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Made {
    pub name: String,
    pub commit: Option<String>,
    pub phase: Option<Phase>,
    /// The declared revision it was made for (`tag v1.1.0`).
    pub desired: String,
    /// The Environment's `slipway.dev/refresh` when it was made.
    pub refresh: String,
    /// Its Ready condition's reason, for the message.
    pub reason: String,
    /// It passed its gates and ran (a phase past `Queued`): it can no longer be withdrawn.
    pub started: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// What runs is the declared commit.
    Synced,
    /// A request made for it has not finished (one at a time).
    Deploying { name: String },
    /// Make this request.
    Create { name: String },
    /// The request made for this commit and declaration failed: not retried by itself.
    Failed { name: String },
    /// The request made for it succeeded, and something else was deployed since.
    Superseded { name: String },
    /// The commit failed here and was rolled back.
    Quarantined,
    /// A manual Rollback ran since the declaration.
    Suspended { by: String },
    /// A request made for an earlier declaration has not started: delete it (the next look
    /// makes the one for what is declared now).
    Withdraw { name: String },
}

/// `<environment>-rev-<commit12>-<attempt>`, a valid object name.
pub fn request_name(env: &str, commit: &str, attempt: usize) -> String {
    let prefix: String = env.chars().take(200).collect();
    format!("{}-rev-{}-{attempt}", prefix.trim_end_matches(['-', '.']), &commit[..commit.len().min(12)].to_lowercase())
}

/// What to do about a declaration `desired` standing for `commit` (made with refresh token
/// `refresh`) on Environment `env`, which runs `current`.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    env: &str,
    desired: &str,
    commit: &str,
    refresh: &str,
    current: Option<&str>,
    quarantined: &[String],
    made: &[Made],
    suspended_by: Option<&str>,
    failed_before: Option<&str>,
) -> Plan {
    if let Some(by) = suspended_by {
        return Plan::Suspended { by: by.to_owned() };
    }
    if let Some(r) = made.iter().find(|r| !r.phase.is_some_and(Phase::is_terminal)) {
        let current = r.commit.as_deref() == Some(commit) && r.desired == desired;
        if !current && !r.started {
            return Plan::Withdraw { name: r.name.clone() };
        }
        return Plan::Deploying { name: r.name.clone() };
    }
    let same_commit = |c: &str| !c.is_empty() && (c.starts_with(commit) || commit.starts_with(c));
    if current.is_some_and(|c| c.starts_with(commit)) {
        return Plan::Synced;
    }
    if quarantined.iter().any(|q| same_commit(q)) {
        return Plan::Quarantined;
    }
    let mut same = made
        .iter()
        .filter(|r| r.commit.as_deref().is_some_and(|c| c == commit) && r.desired == desired && r.refresh == refresh);
    if let Some(r) = same.clone().find(|r| r.phase == Some(Phase::Succeeded)) {
        return Plan::Superseded { name: r.name.clone() };
    }
    if let Some(r) = same.next() {
        return Plan::Failed { name: r.name.clone() };
    }
    // its request failed and was deleted since: still not retried by itself
    if let Some(name) = failed_before {
        return Plan::Failed { name: name.to_owned() };
    }
    let attempt = (1..).find(|n| !made.iter().any(|r| r.name == request_name(env, commit, *n))).unwrap_or(1);
    Plan::Create { name: request_name(env, commit, attempt) }
}

/// Which manual Rollback suspends the declaration, and the declaration it suspends:
/// `(suspended_by, suspended_desired)`; suspended while `suspended_desired` is what is declared.
/// `manual_rollback` made what runs now. A Rollback seen for the first time suspends what was
/// declared before it; one that ran before anything was declared suspends nothing. The
/// suspension outlives the rollback's release (a heal or a hotfix deployed since) for as long
/// as the same revision is declared.
pub fn suspension(
    old: Option<&RevisionStatus>,
    manual_rollback: Option<&str>,
    desired: &str,
) -> (Option<String>, Option<String>) {
    match (manual_rollback, old) {
        (Some(rollback), Some(o)) if o.suspended_by.as_deref() == Some(rollback) => {
            (Some(rollback.to_owned()), o.suspended_desired.clone())
        }
        (Some(rollback), Some(o)) => (Some(rollback.to_owned()), Some(o.desired.clone())),
        (Some(rollback), None) => (Some(rollback.to_owned()), None),
        (None, Some(o)) if o.suspended_by.is_some() && o.suspended_desired.as_deref() == Some(desired) => {
            (o.suspended_by.clone(), o.suspended_desired.clone())
        }
        (None, _) => (None, None),
    }
}

/// Is `dr` a request made for `env`'s declaration? Owned by the Environment as its controller
/// (which the admission policy admits only from the Slipway controller) and labelled with its UID.
pub fn is_made_for(dr: &DeployRequest, env: &Environment) -> bool {
    let uid = env.uid();
    let owned = dr.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && Some(&o.uid) == uid.as_ref()
            && o.kind == Environment::kind(&())
            && o.api_version == Environment::api_version(&())
    });
    owned && dr.labels().get(REVISION_OF) == uid.as_ref()
}

fn revision_ref(r: &Revision) -> Option<RevisionRef> {
    match (&r.branch, &r.tag, &r.commit) {
        (Some(b), None, None) => Some(RevisionRef::Branch(b.clone())),
        (None, Some(t), None) => Some(RevisionRef::Tag(t.clone())),
        (None, None, Some(c)) => Some(RevisionRef::Commit(c.to_lowercase())),
        _ => None,
    }
}

/// The request for `desired` at `commit`, owned by `env`, asked for by the controller.
pub fn request(
    env: &Environment,
    desired: &DesiredRevision,
    commit: &str,
    name: &str,
    identity: &str,
) -> DeployRequest {
    let labels = [(REVISION_OF.to_owned(), env.uid().unwrap_or_default())].into();
    let annotations = [
        (REQUESTED_BY.to_owned(), identity.to_owned()),
        (DESIRED_REVISION.to_owned(), desired.revision.display()),
        (REFRESH.to_owned(), refresh_token(env)),
    ]
    .into();
    let spec = DeployRequestSpec {
        restart: Vec::new(),
        environment: env.name_any(),
        revision: Revision { commit: Some(commit.to_owned()), ..Default::default() },
        issue: desired.issue.clone(),
        mode: DeployMode::Change,
        force: false,
        override_quarantine: false,
    };
    super::drift::owned_request(env, name, spec, labels, annotations)
}

fn refresh_token(env: &Environment) -> String {
    env.annotations().get(REFRESH).cloned().unwrap_or_default()
}

/// The last look-up of each Environment's declaration in this process (`crate::object_key`).
#[derive(Default)]
pub struct Lookups {
    seen: Mutex<HashMap<String, Lookup>>,
}

#[derive(Clone, Debug)]
struct Lookup {
    /// The declaration and refresh token it was made for.
    key: String,
    at: Instant,
    resolved_at: String,
    commit: Result<String, String>,
}

impl Lookups {
    fn get(&self, key: &str) -> Option<Lookup> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    fn put(&self, key: &str, lookup: Lookup) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.to_owned(), lookup);
    }

    pub fn forget(&self, key: &str) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    /// Keeps the look-ups of the Environments `alive` says exist.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|k, _| alive(k));
    }
}

/// What the declaration came to this reconcile.
pub struct Outcome {
    pub status: Option<RevisionStatus>,
    /// When to look again.
    pub next: Option<Duration>,
    pub transition: Option<Transition>,
}

/// Looks the declaration up (at most once per poll interval, or at once when it or the refresh
/// annotation changed), decides, and creates the request when one is due. Without a host
/// connection it keeps the last status and decides with the last look-up.
pub(crate) async fn reconcile(
    ctx: &Context,
    env: &Environment,
    conn: Option<&HostConnection>,
) -> crate::error::Result<Outcome> {
    let old = env.status.as_ref().and_then(|s| s.revision.clone());
    let Some(declared) = env.spec.revision.as_ref() else {
        return Ok(Outcome { status: None, next: None, transition: None });
    };
    let desired = declared.revision.display();
    let Some(rev) = revision_ref(&declared.revision) else {
        return Ok(Outcome { status: old, next: None, transition: None });
    };
    let key = crate::object_key(env);
    let interval = Duration::from_secs(u64::try_from(declared.poll_interval_seconds.max(10)).unwrap_or(60));
    let lookup_key = format!("{desired}\n{}", refresh_token(env));
    let lookup = match (ctx.revisions.get(&key), conn) {
        (Some(l), _) if l.key == lookup_key && l.at.elapsed() < interval => l,
        (_, Some(conn)) => {
            let commit =
                git::ls_remote(conn, &env.spec.host.path, env.spec.repository.as_ref().map(|r| r.url.as_str()), &rev)
                    .await
                    .map_err(|e| {
                        format!(
                            "could not look up {desired} at the repository: {}",
                            conn.redactor().redact(&e.to_string())
                        )
                    });
            let l = Lookup { key: lookup_key, at: Instant::now(), resolved_at: Timestamp::now().to_string(), commit };
            ctx.revisions.put(&key, l.clone());
            l
        }
        (Some(l), None) if l.key == lookup_key => l,
        _ => return Ok(Outcome { status: old, next: None, transition: None }),
    };
    let next = Some(interval.saturating_sub(lookup.at.elapsed()).max(Duration::from_secs(1)));
    let current = env.status.as_ref().and_then(|s| s.current.as_ref());
    // `deployed_by` is `<kind>/<name>/<uid>`
    let rollback = current.and_then(|r| r.deployed_by.as_deref()).and_then(|by| by.strip_prefix("Rollback/"));
    let manual_rollback = match rollback.and_then(|rest| rest.split('/').next()) {
        Some(name) => manual(ctx, env, name).await?.then_some(name),
        None => None,
    };
    let (suspended_by, suspended_desired) = suspension(old.as_ref(), manual_rollback, &desired);
    // Written only when the commit changes: a status write per poll would wake every request
    // that names this Environment.
    let resolved_at = match &old {
        Some(o) if o.commit.is_some() && o.commit == lookup.commit.as_ref().ok().cloned() => o.resolved_at.clone(),
        _ => Some(lookup.resolved_at.clone()),
    };
    let mut status = RevisionStatus {
        desired: desired.clone(),
        commit: lookup.commit.as_ref().ok().cloned(),
        resolved_at,
        suspended_by: suspended_by.clone(),
        suspended_desired: suspended_desired.clone(),
        request: old.as_ref().and_then(|o| o.request.clone()),
        failed: old.as_ref().and_then(|o| o.failed.clone()),
        ..Default::default()
    };
    let commit = match &lookup.commit {
        Ok(c) => c.clone(),
        Err(message) => {
            status.state = UNRESOLVED.into();
            status.message = message.clone();
            return Ok(finish(old.as_ref(), status, next));
        }
    };
    if let Some(attention) = env.status.as_ref().and_then(|s| s.needs_attention.as_ref()) {
        status.state = HELD.into();
        status.message = format!(
            "held: the Environment needs a person ({}); the controller makes no request until a person's \
             DeployRequest or Rollback has run",
            attention.message
        );
        return Ok(finish(old.as_ref(), status, next));
    }
    let made = made_for(ctx, env).await?;
    let quarantined: Vec<String> =
        env.status.as_ref().map(|s| s.quarantined.iter().map(|q| q.commit.clone()).collect()).unwrap_or_default();
    let suspended = suspended_by.is_some() && suspended_desired.as_deref() == Some(desired.as_str());
    let refresh = refresh_token(env);
    let failed_before = status
        .failed
        .as_ref()
        .filter(|f| f.commit == commit && f.desired == desired && f.refresh == refresh)
        .map(|f| f.request.clone());
    let plan = plan(
        &env.name_any(),
        &desired,
        &commit,
        &refresh,
        current.map(|r| r.commit.as_str()),
        &quarantined,
        &made,
        suspended_by.as_deref().filter(|_| suspended),
        failed_before.as_deref(),
    );
    let short = &commit[..commit.len().min(12)];
    let made_named = |name: &str| made.iter().find(|r| r.name == name).cloned().unwrap_or_default();
    let api: Api<DeployRequest> = Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    (status.state, status.message) = match plan {
        Plan::Synced => (SYNCED.into(), format!("{desired} is commit {short}, which runs")),
        Plan::Deploying { name } => {
            let r = made_named(&name);
            let of = r.commit.as_deref().map_or("", |c| &c[..c.len().min(12)]).to_owned();
            status.request = Some(name.clone());
            (DEPLOYING.into(), format!("DeployRequest {name} deploys {} ({of}){}", r.desired, paren(&r.reason)))
        }
        Plan::Withdraw { name } => {
            match api.delete(&name, &kube::api::DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            let was = made_named(&name).desired;
            tracing::info!(environment = %env.name_any(), request = %name, "spec.revision changed: withdrew a request that had not started");
            let message = format!("withdrew DeployRequest {name} (made for {was}, not started): {desired} is next");
            return Ok(finish(
                old.as_ref(),
                RevisionStatus { state: DEPLOYING.into(), message, ..status },
                Some(Duration::from_secs(1)),
            ));
        }
        Plan::Failed { name } => {
            status.failed = Some(RevisionFailure {
                request: name.clone(),
                commit: commit.clone(),
                desired: desired.clone(),
                refresh: refresh.clone(),
            });
            (
                FAILED.into(),
                format!(
                    "DeployRequest {name} for {desired} ({short}) failed{}: not retried until spec.revision changes \
                     or the Environment is annotated {REFRESH}=<a new value>",
                    paren(&made_named(&name).reason)
                ),
            )
        }
        Plan::Superseded { name } => (
            SUPERSEDED.into(),
            format!(
                "DeployRequest {name} deployed {desired} ({short}) and something else was deployed since: to deploy \
                 it again, annotate the Environment {REFRESH}=<a new value> or change spec.revision"
            ),
        ),
        Plan::Quarantined => (
            QUARANTINED.into(),
            format!(
                "{desired} is commit {short}, which is quarantined here (it failed and was rolled back): declare \
                 another revision, or deploy it with a DeployRequest setting overrideQuarantine"
            ),
        ),
        Plan::Suspended { by } => (
            SUSPENDED.into(),
            format!("suspended since the manual Rollback {by}: change spec.revision to deploy from it again"),
        ),
        Plan::Create { name } => match ctx.identity.get() {
            None => (
                FAILED.into(),
                "the controller does not know its own user name (SelfSubjectReview failed): it makes no \
                 DeployRequest"
                    .into(),
            ),
            Some(identity) => {
                let name = create(&api, env, declared, &commit, &name, identity).await?;
                tracing::info!(environment = %env.name_any(), request = %name, %desired, "spec.revision: created a DeployRequest");
                status.request = Some(name.clone());
                (DEPLOYING.into(), format!("DeployRequest {name} deploys {desired} ({short})"))
            }
        },
    };
    Ok(finish(old.as_ref(), status, next))
}

/// Creates the request, under `name` or, where someone else's object took that name, the next
/// free attempt number; an object of ours by that name (a watch that lags) counts as created.
async fn create(
    api: &Api<DeployRequest>,
    env: &Environment,
    declared: &DesiredRevision,
    commit: &str,
    name: &str,
    identity: &str,
) -> crate::error::Result<String> {
    let first = name.rsplit_once('-').and_then(|(_, n)| n.parse::<usize>().ok()).unwrap_or(1);
    let mut last = None;
    for attempt in first..first + 10 {
        let candidate = request_name(&env.name_any(), commit, attempt);
        match api.create(&PostParams::default(), &request(env, declared, commit, &candidate, identity)).await {
            Ok(_) => return Ok(candidate),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let theirs = api.get_opt(&candidate).await?;
                if theirs.as_ref().is_some_and(|d| is_made_for(d, env) && d.requested_by() == Some(identity)) {
                    return Ok(candidate);
                }
                last = Some(kube::Error::Api(s));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.expect("ten attempts were made").into())
}

fn paren(s: &str) -> String {
    if s.is_empty() { String::new() } else { format!(" ({s})") }
}

/// The outcome, with an Event when the state or the request changed.
fn finish(old: Option<&RevisionStatus>, status: RevisionStatus, next: Option<Duration>) -> Outcome {
    let changed =
        old.is_none_or(|o| o.state != status.state || o.request != status.request || o.desired != status.desired);
    let transition = changed.then(|| Transition {
        type_: match status.state.as_str() {
            SYNCED | DEPLOYING => EventType::Normal,
            _ => EventType::Warning,
        },
        reason: format!("Revision{}", status.state),
        note: status.message.clone(),
    });
    Outcome { status: Some(status), next, transition }
}

/// The requests made for `env`'s declaration by this controller.
async fn made_for(ctx: &Context, env: &Environment) -> crate::error::Result<Vec<Made>> {
    let api: Api<DeployRequest> = Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let selector = format!("{REVISION_OF}={}", env.uid().unwrap_or_default());
    let identity = ctx.identity.get().map(String::as_str);
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter(|d| is_made_for(d, env) && identity.is_some_and(|me| d.requested_by() == Some(me)))
        .map(|d| {
            let annotation = |k: &str| d.annotations().get(k).cloned().unwrap_or_default();
            Made {
                name: d.name_any(),
                commit: d.spec.revision.commit.clone(),
                phase: d.status.as_ref().and_then(|s| s.phase),
                desired: annotation(DESIRED_REVISION),
                refresh: annotation(REFRESH),
                reason: d
                    .status
                    .as_ref()
                    .and_then(|s| crate::conditions::find(&s.conditions, slipway_crds::conditions::types::READY))
                    .map(|c| c.reason.clone())
                    .unwrap_or_default(),
                started: d.status.as_ref().and_then(|s| s.phase).is_some_and(|p| p != Phase::Queued),
            }
        })
        .collect())
}

/// Did a person ask for the Rollback `name` (rather than the controller, after a failed
/// deploy)? One that is gone counts as a person's: the declaration is then suspended, the safe side.
async fn manual(ctx: &Context, env: &Environment, name: &str) -> crate::error::Result<bool> {
    let api: Api<Rollback> = Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    Ok(match api.get_opt(name).await? {
        Some(rb) => !crate::deploy::auto::is_automatic(&crate::deploy::request::Req::Rollback(rb)),
        None => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";

    fn made(name: &str, commit: &str, phase: Option<Phase>) -> Made {
        Made {
            name: name.into(),
            commit: Some(commit.into()),
            phase,
            desired: "tag v2".into(),
            refresh: String::new(),
            reason: String::new(),
            started: phase.is_some_and(|p| p != Phase::Queued),
        }
    }

    fn decide(current: Option<&str>, made: &[Made]) -> Plan {
        plan("staging", "tag v2", C2, "", current, &[], made, None, None)
    }

    #[test]
    fn a_declared_commit_that_does_not_run_gets_one_request_at_a_time() {
        assert_eq!(decide(Some(C1), &[]), Plan::Create { name: "staging-rev-222222222222-1".into() });
        assert_eq!(decide(Some(C2), &[]), Plan::Synced, "it runs: nothing to do");
        assert_eq!(decide(None, &[]), Plan::Create { name: "staging-rev-222222222222-1".into() });
        let running = made("staging-rev-111111111111-1", C1, Some(Phase::Verifying));
        assert_eq!(decide(Some(C1), &[running]), Plan::Deploying { name: "staging-rev-111111111111-1".into() });
        let waiting = made("staging-rev-222222222222-1", C2, None);
        assert_eq!(decide(Some(C1), &[waiting]), Plan::Deploying { name: "staging-rev-222222222222-1".into() });
    }

    #[test]
    fn a_failed_request_is_not_retried_until_the_declaration_or_the_refresh_token_changes() {
        let failed = made("staging-rev-222222222222-1", C2, Some(Phase::Failed));
        assert_eq!(decide(Some(C1), std::slice::from_ref(&failed)), Plan::Failed { name: failed.name.clone() });
        let next = Plan::Create { name: "staging-rev-222222222222-2".into() };
        assert_eq!(
            plan("staging", "tag v2", C2, "again", Some(C1), &[], std::slice::from_ref(&failed), None, None),
            next
        );
        assert_eq!(
            plan("staging", "branch main", C2, "", Some(C1), &[], std::slice::from_ref(&failed), None, None),
            next
        );
        let done = made("staging-rev-222222222222-1", C2, Some(Phase::Succeeded));
        assert_eq!(decide(Some(C1), &[done]), Plan::Superseded { name: "staging-rev-222222222222-1".into() });
    }

    #[test]
    fn a_request_for_an_earlier_declaration_is_withdrawn_until_it_has_started() {
        // declared tag v2 (C2); a request for branch main at C1 waits for approval
        let waiting = Made { desired: "branch main".into(), ..made("staging-rev-111111111111-1", C1, None) };
        assert_eq!(decide(Some(C1), std::slice::from_ref(&waiting)), Plan::Withdraw { name: waiting.name.clone() });
        let running =
            Made { desired: "branch main".into(), ..made("staging-rev-111111111111-1", C1, Some(Phase::Migrating)) };
        assert_eq!(decide(Some(C1), &[running]), Plan::Deploying { name: "staging-rev-111111111111-1".into() });
    }

    #[test]
    fn a_failed_request_deleted_since_is_still_not_retried() {
        let failed = plan("staging", "tag v2", C2, "", Some(C1), &[], &[], None, Some("staging-rev-222222222222-1"));
        assert_eq!(failed, Plan::Failed { name: "staging-rev-222222222222-1".into() });
    }

    #[test]
    fn quarantined_commits_and_manual_rollbacks_stop_the_declaration() {
        assert_eq!(plan("s", "tag v2", C2, "", Some(C1), &[C2[..12].to_owned()], &[], None, None), Plan::Quarantined);
        assert_eq!(
            plan("s", "tag v2", C2, "", Some(C1), &[], &[], Some("undo"), None),
            Plan::Suspended { by: "undo".into() }
        );
        // an abbreviated declared commit runs when the full id starts with it
        assert_eq!(plan("s", "commit 2222222", "2222222", "", Some(C2), &[], &[], None, None), Plan::Synced);
    }

    #[test]
    fn a_manual_rollback_suspends_what_was_declared_before_it_until_that_changes() {
        let declared = RevisionStatus { desired: "tag v2".into(), ..Default::default() };
        assert_eq!(suspension(Some(&declared), None, "tag v2"), (None, None), "no rollback: nothing suspended");
        let (by, what) = suspension(Some(&declared), Some("undo"), "tag v2");
        assert_eq!((by.as_deref(), what.as_deref()), (Some("undo"), Some("tag v2")));
        // remembered while the same rollback's release runs, also after the declaration changed
        let seen = RevisionStatus { desired: "tag v3".into(), suspended_by: by, suspended_desired: what, ..declared };
        assert_eq!(suspension(Some(&seen), Some("undo"), "tag v3").1.as_deref(), Some("tag v2"));
        // something else deployed since (a heal, a hotfix): still suspended while tag v2 is declared
        let kept = RevisionStatus { desired: "tag v2".into(), ..seen.clone() };
        assert_eq!(suspension(Some(&kept), None, "tag v2"), (Some("undo".into()), Some("tag v2".into())));
        assert_eq!(suspension(Some(&kept), None, "tag v3"), (None, None), "a new declaration resumes");
        // a rollback that ran before anything was declared suspends nothing
        assert_eq!(suspension(None, Some("undo"), "tag v2"), (Some("undo".into()), None));
    }

    #[test]
    fn request_names_are_object_names() {
        assert_eq!(request_name("shop-", "ABCDEF1234567890", 3), "shop-rev-abcdef123456-3");
        assert!(request_name(&"e".repeat(253), C1, 10).len() <= 253);
    }
}
