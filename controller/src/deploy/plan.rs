//! The pure half of a deploy: gates, the queue, the step record and the conditions each phase
//! shows. No I/O: every function here is decided from objects and observations.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use slipway_crds::conditions::reasons;
use slipway_crds::{
    DeployMode, DeployRequest, DeployRequestStatus, Environment, Phase, Release, Rollback, RollbackMigrations, Step,
    StepResult,
};

use crate::conditions::{Decided, Status};
use crate::references::{self, Problem};

use super::request::Req;

/// Step names as they appear in `status.steps`.
pub const PREFLIGHT: &str = "Preflight";
pub const MIGRATING: &str = "Migrating";
pub const DOWNGRADING: &str = "Downgrading";
pub const REBUILDING: &str = "Rebuilding";
pub const RESTARTING: &str = "Restarting";
pub const VERIFYING: &str = "Verifying";
/// The bake period after verification (`health.bakeSeconds`).
pub const BAKING: &str = "Baking";

/// How a lock holder or queue entry names a request: kind, name and UID (a request re-created
/// under the same name is another request).
pub fn holder_id(kind: &str, name: &str, uid: &str) -> String {
    format!("{kind}/{name}/{uid}")
}

/// (kind, name, uid) of a holder id.
pub fn parse_holder(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.splitn(3, '/');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Why a gate holds a request back.
#[derive(Debug)]
pub enum Gate {
    /// It can never pass (its spec is immutable): the request ends Failed.
    Refused(Problem),
    /// It may pass later without a new request (an approver annotates it): the request waits
    /// outside the queue, Stalled, with its phase unset, and the watch wakes it when that happens.
    Awaiting(Problem),
    /// It passes by itself later (a deploy window opens): the request waits visibly, `Queued`
    /// without holding or joining the queue, and looks again at `until` (or when the
    /// Environment changes).
    Waiting { problem: Problem, until: Option<Timestamp> },
}

impl Gate {
    pub fn problem(&self) -> &Problem {
        match self {
            Gate::Refused(p) | Gate::Awaiting(p) | Gate::Waiting { problem: p, .. } => p,
        }
    }
}

/// The gates that depend only on the objects, checked before a request joins the queue (and,
/// where they depend on the resolved commit or the live database, again at preflight).
/// Promotion needs the source Environments: [`not_promoted_from`] judges it by ref before the
/// queue, and preflight by the exact commit under the lock.
pub fn gates(req: &Req, env: &Environment) -> Result<(), Gate> {
    match req {
        Req::Deploy(dr) => deploy_gates(dr, env),
        Req::Rollback(rb) => {
            // What runs is only known on the host (preflight judges again with its HEAD).
            let running = env.status.as_ref().and_then(|s| s.current.as_ref()).map(|r| r.commit.as_str());
            let target = rollback_target(rb, env, running).map_err(Gate::Refused)?;
            let current = env.status.as_ref().and_then(|s| s.current.as_ref()).and_then(|r| r.migration.as_deref());
            downgrade_path(rb, env, current, target).map(|_| ()).map_err(Gate::Refused)
        }
    }
}

fn deploy_gates(dr: &DeployRequest, env: &Environment) -> Result<(), Gate> {
    let policy = &env.spec.policy;
    let env_name = env.name_any();
    if dr.spec.mode == DeployMode::Direct && !policy.allow_direct {
        return Err(Gate::Refused(Problem {
            reason: reasons::DIRECT_NOT_ALLOWED,
            message: format!(
                "mode: Direct is not allowed on Environment {env_name:?} (policy.allowDirect is false): create a \
                 DeployRequest with mode: Change and an issue, or set policy.allowDirect for emergencies"
            ),
        }));
    }
    if policy.require_issue && dr.spec.mode != DeployMode::Direct && dr.spec.issue.is_none() {
        return Err(Gate::Refused(Problem {
            reason: reasons::ISSUE_REQUIRED,
            message: format!(
                "Environment {env_name:?} requires an issue (policy.requireIssue): create a new DeployRequest \
                 with spec.issue, such as \"#45\""
            ),
        }));
    }
    if policy.require_approval && approval(dr, env).is_none() {
        return Err(Gate::Awaiting(Problem {
            reason: reasons::APPROVAL_REQUIRED,
            message: format!(
                "Environment {env_name:?} requires approval (policy.requireApproval): an approver (a user allowed \
                 the `approve` verb on deployrequests) must annotate it: kubectl annotate deployrequest {name} \
                 {key}=<their user name>",
                name = dr.name_any(),
                key = slipway_crds::annotations::APPROVED_BY,
            ),
        }));
    }
    if !dr.spec.override_quarantine
        && let Some(q) = quarantined_ref(env, &dr.spec.revision)
    {
        return Err(Gate::Refused(quarantine_problem(dr, env, q)));
    }
    Ok(())
}

/// Who approved `dr`: its `slipway.dev/approved-by` annotation, or, on a DeployRequest the
/// controller made for the Environment's `spec.revision` (owned by it, asked for by the
/// controller), the live `spec.revision.approvedBy`, as long as the request is for what is
/// declared now (the same declared revision and the commit it stands for).
pub fn approval(dr: &DeployRequest, env: &Environment) -> Option<String> {
    if let Some(user) = dr.approved_by() {
        return Some(user.to_owned());
    }
    let me = crate::context::controller_identity()?;
    if !crate::environment::revision::is_made_for(dr, env) || dr.requested_by() != Some(me) {
        return None;
    }
    let declared = env.spec.revision.as_ref()?;
    let approver = declared.approved_by.as_deref().filter(|a| !a.is_empty())?;
    let for_declared = dr.metadata.annotations.as_ref()?.get(slipway_crds::annotations::DESIRED_REVISION)
        == Some(&declared.revision.display());
    let resolved = env.status.as_ref().and_then(|s| s.revision.as_ref()).and_then(|r| r.commit.as_deref());
    let same_commit = resolved.is_some() && dr.spec.revision.commit.as_deref() == resolved;
    (for_declared && same_commit).then(|| format!("{approver} (Environment spec.revision)"))
}

/// Deploy windows and freezes (`policy.windows`, `policy.freeze`) at `now`: Rollbacks are never
/// held, nor a `mode: Direct` request where `policy.allowDirect` lets it skip the process.
pub fn window_gate(req: &Req, env: &Environment, now: Timestamp) -> Result<(), Gate> {
    let Req::Deploy(dr) = req else { return Ok(()) };
    if dr.spec.mode == DeployMode::Direct && env.spec.policy.allow_direct {
        return Ok(());
    }
    super::windows::judge(&env.name_any(), &env.spec.policy, now).map_err(|closed| Gate::Waiting {
        problem: Problem { reason: reasons::OUTSIDE_DEPLOY_WINDOW, message: closed.message },
        until: closed.until,
    })
}

/// The quarantine entry matching `rev` by ref name or commit prefix (before the commit is known).
fn quarantined_ref<'a>(env: &'a Environment, rev: &slipway_crds::Revision) -> Option<&'a slipway_crds::Quarantined> {
    let list = env.status.as_ref().map(|s| s.quarantined.as_slice()).unwrap_or_default();
    list.iter().find(|q| match (&rev.commit, &rev.tag) {
        (Some(commit), _) => q.commit.starts_with(&commit.to_ascii_lowercase()),
        (None, Some(tag)) => q.ref_ == *tag,
        // A branch moves: only its resolved commit can be judged (at preflight).
        _ => false,
    })
}

/// The quarantine entry of exactly `commit`.
pub fn quarantined<'a>(env: &'a Environment, commit: &str) -> Option<&'a slipway_crds::Quarantined> {
    env.status.as_ref()?.quarantined.iter().find(|q| q.commit == commit)
}

pub fn quarantine_problem(dr: &DeployRequest, env: &Environment, q: &slipway_crds::Quarantined) -> Problem {
    Problem {
        reason: reasons::QUARANTINED,
        message: format!(
            "{} (commit {}) is quarantined on Environment {:?}: it failed there{} and was rolled back. Fix it in \
             a new release, or create a new DeployRequest with spec.overrideQuarantine: true",
            dr.spec.revision.display(),
            short(&q.commit),
            env.name_any(),
            q.failed_in.as_deref().and_then(parse_holder).map(|(_, name, _)| format!(" in {name}")).unwrap_or_default()
        ),
    }
}

/// How long from `now` to `then` (at least a second, at most five minutes: a changed clock or
/// policy is seen again soon).
pub fn until(now: Timestamp, then: Timestamp) -> std::time::Duration {
    let secs = then.as_second().saturating_sub(now.as_second()).clamp(1, 300);
    std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(1))
}

/// The first 12 characters of a commit id.
pub fn short(commit: &str) -> &str {
    &commit[..12.min(commit.len())]
}

/// The release a Rollback returns to, from the Environment's history: `previous` is the newest
/// release that Succeeded, is not quarantined and has another commit than `running` (what the
/// host runs: after a failed deploy that is not `status.current`).
pub fn rollback_target<'a>(rb: &Rollback, env: &'a Environment, running: Option<&str>) -> Result<&'a Release, Problem> {
    let status = env.status.as_ref();
    let history = status.map(|s| s.history.as_slice()).unwrap_or_default();
    let mut good = history.iter().filter(|r| r.result.as_deref().is_none_or(|x| x == "Succeeded"));
    let to = &rb.spec.to;
    let found = match (&to.tag, &to.release) {
        (Some(tag), _) => good.find(|r| r.ref_ == *tag),
        (_, Some(commit)) => good.find(|r| r.commit.starts_with(&commit.to_ascii_lowercase())),
        _ => good.find(|r| Some(r.commit.as_str()) != running && quarantined(env, &r.commit).is_none()),
    };
    found.ok_or_else(|| {
        let listed: Vec<String> = history
            .iter()
            .map(|r| format!("{} ({}, {})", r.ref_, short(&r.commit), r.result.as_deref().unwrap_or("?")))
            .collect();
        Problem {
            reason: reasons::RELEASE_NOT_IN_HISTORY,
            message: format!(
                "no release that Succeeded matches {} in the history of Environment {:?}{}: create a new Rollback \
                 naming one of them",
                super::request::target_display(to),
                env.name_any(),
                if listed.is_empty() {
                    " (the history is empty)".to_owned()
                } else {
                    format!("; it holds {}", listed.join(", "))
                }
            ),
        }
    })
}

/// Whether a Rollback from database revision `current` to `target` downgrades (`Some(revision)`),
/// leaves the database (`None`: equal revisions, or `migrations: Skip`), or cannot
/// (`NoDowngradePath`, before anything changed).
pub fn downgrade_path(
    rb: &Rollback,
    env: &Environment,
    current: Option<&str>,
    target: &Release,
) -> Result<Option<String>, Problem> {
    if rb.spec.migrations == RollbackMigrations::Skip || current == target.migration.as_deref() {
        return Ok(None);
    }
    let declared = env.spec.migrations.as_ref().is_some_and(|m| !m.downgrade.is_empty());
    match (&target.migration, declared) {
        (Some(revision), true) => Ok(Some(revision.clone())),
        (revision, _) => Err(Problem {
            reason: reasons::NO_DOWNGRADE_PATH,
            message: format!(
                "the database is at revision {} and {} ({}) was recorded at {}, but {}: nothing was changed. Declare \
                 spec.migrations.downgrade on Environment {:?}, or create a new Rollback with migrations: Skip if \
                 the older code works with the newer schema",
                current.unwrap_or("(none)"),
                target.ref_,
                short(&target.commit),
                revision.as_deref().unwrap_or("no revision"),
                if declared {
                    "that release has no recorded revision to downgrade to"
                } else {
                    "the Environment declares no downgrade command"
                },
                env.name_any(),
            ),
        }),
    }
}

/// The release a request made (or failed to make), for the Environment's history. A Rollback's
/// release carries the ref its target was recorded with.
pub fn release(
    req: &Req,
    env: &Environment,
    st: &DeployRequestStatus,
    result: &str,
    images: std::collections::BTreeMap<String, String>,
    deployed_at: Option<String>,
) -> Release {
    let commit = st.commit.clone().unwrap_or_default();
    let current = env.status.as_ref().and_then(|s| s.current.as_ref());
    let (ref_, issue, approved_by, reason) = match req {
        // A restart records the release that runs, as it was asked for.
        Req::Deploy(dr) if dr.is_restart() => (
            current.filter(|r| r.commit == commit).map_or_else(|| short(&commit).to_owned(), |r| r.ref_.clone()),
            dr.spec.issue.clone(),
            approval(dr, env),
            None,
        ),
        Req::Deploy(dr) => {
            (dr.spec.revision.name().unwrap_or_default().to_owned(), dr.spec.issue.clone(), approval(dr, env), None)
        }
        Req::Rollback(rb) => {
            let history = env.status.as_ref().map(|s| s.history.as_slice()).unwrap_or_default();
            let ref_ = history.iter().find(|r| !commit.is_empty() && r.commit == commit).map(|r| r.ref_.clone());
            (ref_.unwrap_or_else(|| short(&commit).to_owned()), None, None, Some(rb.spec.reason.clone()))
        }
    };
    Release {
        ref_,
        commit,
        migration: st.migration_after.clone().or_else(|| st.migration_before.clone()),
        images,
        deployed_by: Some(req.id()),
        deployed_at,
        started_at: st.steps.first().and_then(|s| s.started_at.clone()),
        result: Some(result.to_owned()),
        issue,
        requested_by: req.requested_by().map(str::to_owned),
        approved_by,
        untracked: st.untracked,
        env_hash: st.env_hash.clone(),
        reason,
        waived: st.waived.clone(),
        restarted: req.as_deploy().map(|d| d.spec.restart.clone()).unwrap_or_default(),
        rollback_tested: result == "Succeeded" && super::rehearsal::passed(st),
    }
}

/// Did a request found finished (still holding the lock) succeed?
pub fn recovered_succeeded(st: &DeployRequestStatus) -> bool {
    st.phase == Some(Phase::Succeeded)
}

/// The release of a request found finished while it still held the lock, as the normal path
/// records it: a success with the host's `images` and `deployedAt` when Verifying finished (when
/// the normal path would have written it), a failure with neither.
pub fn recovered_release(
    req: &Req,
    env: &Environment,
    st: &DeployRequestStatus,
    images: std::collections::BTreeMap<String, String>,
) -> Release {
    if !recovered_succeeded(st) {
        return release(req, env, st, "Failed", Default::default(), None);
    }
    // Live since it succeeded: after its bake period, if it baked; else since the last
    // verification passed (a rehearsal's roll forward, or the deploy's own).
    let verified =
        step(st, BAKING).or_else(|| step(st, super::rehearsal::FORWARD_VERIFYING)).or_else(|| step(st, VERIFYING));
    let deployed_at = verified.and_then(|s| s.finished_at.clone());
    release(req, env, st, "Succeeded", images, deployed_at)
}

/// The releases of `source` that count for promotion: `current` and the history entries that
/// Succeeded (an entry without a result predates results and was a success).
fn succeeded_releases(source: &Environment) -> impl Iterator<Item = &slipway_crds::Release> {
    let status = source.status.as_ref();
    let current = status.and_then(|s| s.current.as_ref());
    let history = status.map(|s| s.history.as_slice()).unwrap_or_default();
    current.into_iter().chain(history.iter().filter(|r| r.result.as_deref().is_none_or(|x| x == "Succeeded")))
}

/// Is `commit` recorded as Succeeded in the history (or as current) of `source`?
pub fn promoted(source: &Environment, commit: &str) -> bool {
    succeeded_releases(source).any(|r| r.commit == commit)
}

/// Was the rollback of `commit` rehearsed on `source` (a Succeeded release `rollbackTested`)?
pub fn rollback_tested(source: &Environment, commit: &str) -> bool {
    succeeded_releases(source).any(|r| r.commit == commit && r.rollback_tested)
}

/// [`rollback_tested`] by ref name or commit prefix, before the commit is known.
pub fn rollback_tested_ref(source: &Environment, rev: &slipway_crds::Revision) -> bool {
    let mut releases = succeeded_releases(source).filter(|r| r.rollback_tested);
    match (&rev.commit, rev.name()) {
        (Some(commit), _) => releases.any(|r| r.commit.starts_with(&commit.to_ascii_lowercase())),
        (None, Some(name)) => releases.any(|r| r.ref_ == name),
        _ => false,
    }
}

/// Why a revision is refused by `policy.requireRollbackTested`: `what` has no release whose
/// rollback was rehearsed on each of `missing`.
pub fn not_rehearsed_message(what: &str, missing: &[&str], then: &str) -> String {
    let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
    let noun = if missing.len() == 1 { "Environment" } else { "Environments" };
    format!(
        "{what} has no release whose rollback was rehearsed (rollbackTested) on {noun} {} \
         (policy.requireRollbackTested): deploy it there with policy.rehearseRollback: true first{then}",
        names.join(", ")
    )
}

/// The Environments named by `policy.promoteFrom` (`from`, in that order) on which `passed` does
/// not hold. `sources` are those of them that exist: a missing one has shown nothing.
pub fn not_promoted_from<'a>(
    from: &'a [String],
    sources: &[Environment],
    passed: impl Fn(&Environment) -> bool,
) -> Vec<&'a str> {
    from.iter()
        .filter(|name| !sources.iter().any(|s| s.name_any() == **name && passed(s)))
        .map(String::as_str)
        .collect()
}

/// Why a revision is not promoted: `what` (a revision or a commit) has not succeeded on each of
/// `missing`, then the fix (`then`).
pub fn not_promoted_message(what: &str, missing: &[&str], then: &str) -> String {
    let names: Vec<String> = missing.iter().map(|n| format!("{n:?}")).collect();
    let (noun, them) = if missing.len() == 1 { ("Environment", "there") } else { ("Environments", "on each") };
    format!(
        "{what} has not been deployed successfully to {noun} {} (policy.promoteFrom): deploy it {them} first{then}",
        names.join(", ")
    )
}

/// Still to run: not finished, not following its rollback, and not held back by a gate (Stalled).
pub fn is_waiting(req: &Req) -> bool {
    let status = req.status();
    let phase = status.and_then(|s| s.phase);
    if phase.is_some_and(|p| p.is_terminal() || p == Phase::RollingBack) {
        return false;
    }
    let refused = status
        .and_then(|s| crate::conditions::find(&s.conditions, slipway_crds::conditions::types::STALLED))
        .is_some_and(|c| c.status == "True");
    // Held by a deploy window: it waits outside the queue (else a Rollback behind it would wait
    // for a request that cannot take the lock) and joins it when the window lets it.
    let held = status
        .and_then(|s| crate::conditions::find(&s.conditions, slipway_crds::conditions::types::READY))
        .is_some_and(|c| c.reason == reasons::OUTSIDE_DEPLOY_WINDOW);
    !refused && !held && !req.deleting()
}

/// The requests waiting for `env_name`, oldest first (creation time, then name). `me` (a request
/// id) counts as waiting whatever its stored status says: it has just passed its gates, and a
/// Stalled condition from before its approval is only about to be overwritten.
pub fn queue<'a>(env_name: &str, requests: &'a [Req], me: &str) -> Vec<&'a Req> {
    let mut waiting: Vec<&Req> =
        requests.iter().filter(|d| d.environment() == env_name && (is_waiting(d) || d.id() == me)).collect();
    waiting.sort_by(|a, b| a.created().cmp(&b.created()).then_with(|| a.name().cmp(&b.name())));
    waiting
}

/// The step record named `name`, started now if it was not.
pub fn start_step(status: &mut DeployRequestStatus, name: &str, now: Timestamp) -> bool {
    if status.steps.iter().any(|s| s.name == name) {
        return false;
    }
    status.steps.push(Step { name: name.to_owned(), started_at: Some(now.to_string()), ..Default::default() });
    true
}

pub fn step<'a>(status: &'a DeployRequestStatus, name: &str) -> Option<&'a Step> {
    status.steps.iter().find(|s| s.name == name)
}

/// Seconds since `name` started (0 when it has not).
pub fn step_elapsed(status: &DeployRequestStatus, name: &str, now: Timestamp) -> i64 {
    step(status, name)
        .and_then(|s| s.started_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| now.as_second() - t.as_second())
        .unwrap_or(0)
}

/// Records how step `name` ended.
pub fn finish_step(
    status: &mut DeployRequestStatus,
    name: &str,
    result: StepResult,
    message: impl Into<String>,
    output_tail: Option<String>,
    now: Timestamp,
) {
    start_step(status, name, now);
    if let Some(s) = status.steps.iter_mut().find(|s| s.name == name) {
        s.finished_at = Some(now.to_string());
        s.result = Some(result);
        s.message = Some(message.into());
        s.output_tail = output_tail.filter(|t| !t.is_empty());
    }
}

/// The kstatus conditions of a request in `phase`, for a step in progress or an outcome.
pub fn conditions_for(phase: Phase, reason: &'static str, message: String) -> Vec<Decided> {
    match phase {
        Phase::Succeeded => vec![
            Decided::new(slipway_crds::conditions::types::READY, Status::True, reason, message.clone()),
            Decided::new(slipway_crds::conditions::types::RECONCILING, Status::False, reason, ""),
            Decided::new(slipway_crds::conditions::types::STALLED, Status::False, reason, ""),
        ],
        Phase::Failed | Phase::RolledBack => references::stalled(&Problem { reason, message }),
        _ => references::progressing(reason, message),
    }
}

/// One condition per step recorded in `st.steps` (kstatus tools read the kstatus ones; people
/// and `kubectl wait --for=condition=Migrated` read these).
pub fn step_conditions(st: &DeployRequestStatus) -> Vec<Decided> {
    use slipway_crds::conditions::types;
    st.steps
        .iter()
        .filter_map(|step| {
            let type_ = match step.name.as_str() {
                PREFLIGHT => types::PREFLIGHT_PASSED,
                MIGRATING => types::MIGRATED,
                DOWNGRADING => types::DOWNGRADED,
                REBUILDING => types::REBUILT,
                RESTARTING => types::RESTARTED,
                VERIFYING => types::VERIFIED,
                BAKING => types::BAKED,
                super::rehearsal::DOWNGRADING => types::REHEARSAL_DOWNGRADED,
                super::rehearsal::REBUILDING => types::REHEARSAL_REBUILT,
                super::rehearsal::VERIFYING => types::REHEARSAL_VERIFIED,
                super::rehearsal::FORWARD_MIGRATING => types::ROLL_FORWARD_MIGRATED,
                super::rehearsal::FORWARD_REBUILDING => types::ROLL_FORWARD_REBUILT,
                super::rehearsal::FORWARD_VERIFYING => types::ROLL_FORWARD_VERIFIED,
                _ => return None,
            };
            let message = step.message.clone().unwrap_or_default();
            Some(match step.result {
                Some(StepResult::Succeeded) => Decided::new(type_, Status::True, reasons::SUCCEEDED, message),
                Some(StepResult::Skipped) => Decided::new(type_, Status::True, reasons::STEP_SKIPPED, message),
                Some(StepResult::Failed) => Decided::new(type_, Status::False, reasons::STEP_FAILED, message),
                None => {
                    Decided::new(type_, Status::Unknown, reasons::STEP_RUNNING, format!("{} is running", step.name))
                }
            })
        })
        .collect()
}

/// Was `rev` (by ref name, or by commit prefix) deployed successfully on `source`? Checked before
/// a request joins the queue; preflight checks the exact resolved commit again under the lock.
pub fn promoted_ref(source: &Environment, rev: &slipway_crds::Revision) -> bool {
    let mut releases = succeeded_releases(source);
    match (&rev.commit, rev.name()) {
        (Some(commit), _) => releases.any(|r| r.commit.starts_with(&commit.to_ascii_lowercase())),
        (None, Some(name)) => releases.any(|r| r.ref_ == name),
        _ => false,
    }
}

/// The reason shown while `phase` runs.
pub fn progress_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::Preflight => reasons::PREFLIGHT,
        Phase::Migrating => reasons::MIGRATING,
        Phase::Downgrading => reasons::DOWNGRADING,
        Phase::RollingBack => reasons::ROLLING_BACK,
        Phase::Rebuilding => reasons::REBUILDING,
        Phase::Restarting => reasons::RESTARTING,
        Phase::Verifying => reasons::VERIFYING,
        Phase::Baking => reasons::BAKING,
        Phase::Rehearsing => reasons::REHEARSING,
        _ => reasons::QUEUED,
    }
}

/// The first line of an alembic `current` output that names a revision: `0002 (head)` -> `0002`.
/// `None` when the database has no revision yet.
pub fn parse_migration_revision(output: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("INFO") && !l.starts_with("WARN"))
        .filter_map(|l| l.split_whitespace().next())
        .rfind(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_crds::{DeployRequestSpec, Release, Revision};

    fn env(policy: serde_json::Value) -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"},
                "policy": policy
            }
        }))
        .unwrap()
    }

    fn request(name: &str, created: i64, issue: Option<&str>, mode: DeployMode) -> DeployRequest {
        let mut dr = DeployRequest::new(
            name,
            DeployRequestSpec {
                restart: Vec::new(),
                environment: "staging".into(),
                revision: Revision { tag: Some("v1.0.0".into()), ..Default::default() },
                issue: issue.map(str::to_owned),
                mode,
                force: false,
                override_quarantine: false,
            },
        );
        dr.metadata.uid = Some(format!("uid-{name}"));
        dr.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(1_700_000_000 + created).unwrap(),
        ));
        dr
    }

    #[test]
    fn a_declared_revisions_approval_holds_only_for_the_controllers_own_request_for_it() {
        let me = "system:serviceaccount:slipway-system:slipway";
        crate::context::set_controller_identity(me);
        let commit = "2".repeat(40);
        let mut environment = env(serde_json::json!({"requireApproval": true}));
        environment.metadata.uid = Some("env-uid".into());
        environment.spec.revision =
            Some(serde_json::from_value(serde_json::json!({"tag": "v2", "approvedBy": "carol"})).unwrap());
        environment.status = Some(
            serde_json::from_value(serde_json::json!({
                "revision": {"desired": "tag v2", "commit": commit, "state": "Deploying"}
            }))
            .unwrap(),
        );
        let made = |kind: &str, by: &str, desired: &str, commit: &str| {
            let mut dr = request("staging-rev-222222222222-1", 0, None, DeployMode::Change);
            dr.spec.revision = Revision { commit: Some(commit.into()), ..Default::default() };
            dr.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "slipway.dev/v1alpha1".into(),
                kind: kind.into(),
                name: "staging".into(),
                uid: "env-uid".into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]);
            dr.metadata.labels = Some([("slipway.dev/revision-of".to_owned(), "env-uid".to_owned())].into());
            dr.metadata.annotations = Some(
                [
                    ("slipway.dev/requested-by".to_owned(), by.to_owned()),
                    ("slipway.dev/desired-revision".to_owned(), desired.to_owned()),
                ]
                .into(),
            );
            dr
        };
        let approved = approval(&made("Environment", me, "tag v2", &commit), &environment);
        assert_eq!(approved.as_deref(), Some("carol (Environment spec.revision)"));
        assert!(gates(&Req::Deploy(made("Environment", me, "tag v2", &commit)), &environment).is_ok());
        for (why, dr) in [
            ("another kind", made("environment", me, "tag v2", &commit)),
            ("someone else's", made("Environment", "mallory", "tag v2", &commit)),
            ("an earlier declaration", made("Environment", me, "tag v1", &commit)),
            ("another commit", made("Environment", me, "tag v2", &"3".repeat(40))),
        ] {
            assert_eq!(approval(&dr, &environment), None, "{why}");
        }
        environment.spec.revision.as_mut().unwrap().approved_by = None;
        assert_eq!(approval(&made("Environment", me, "tag v2", &commit), &environment), None, "nobody approved it");
    }

    #[test]
    fn gates_table() {
        let strict = env(serde_json::json!({"requireIssue": true, "requireApproval": true}));
        let direct_ok = env(serde_json::json!({"requireIssue": true, "allowDirect": true}));
        let cases = [
            (&strict, request("a", 0, None, DeployMode::Change), Some(reasons::ISSUE_REQUIRED)),
            (&strict, request("a", 0, Some("#1"), DeployMode::Change), Some(reasons::APPROVAL_REQUIRED)),
            (&strict, request("a", 0, Some("#1"), DeployMode::Direct), Some(reasons::DIRECT_NOT_ALLOWED)),
            (&direct_ok, request("a", 0, None, DeployMode::Direct), None),
            (&direct_ok, request("a", 0, None, DeployMode::Change), Some(reasons::ISSUE_REQUIRED)),
        ];
        for (env, dr, want) in cases {
            let gate = gates(&Req::Deploy(dr.clone()), env).err();
            assert_eq!(gate.as_ref().map(|g| g.problem().reason), want, "{:?}", dr.spec);
            // Only a missing approval can be made good on the same request.
            let waits = matches!(gate, Some(Gate::Awaiting(_)));
            assert_eq!(waits, want == Some(reasons::APPROVAL_REQUIRED), "{:?}", dr.spec);
        }
    }

    #[test]
    fn approval_is_an_annotation_and_its_absence_waits() {
        let strict = env(serde_json::json!({"requireIssue": true, "requireApproval": true}));
        let mut dr = request("shop-45", 0, Some("#1"), DeployMode::Change);
        let Err(Gate::Awaiting(problem)) = gates(&Req::Deploy(dr.clone()), &strict) else {
            panic!("an unapproved request waits")
        };
        assert_eq!(problem.reason, reasons::APPROVAL_REQUIRED);
        assert!(
            problem
                .message
                .contains("kubectl annotate deployrequest shop-45 slipway.dev/approved-by=<their user name>"),
            "{}",
            problem.message
        );
        let annotate = |dr: &mut DeployRequest, key: &str, value: &str| {
            dr.metadata.annotations.get_or_insert_default().insert(key.into(), value.into());
        };
        annotate(&mut dr, "slipway.dev/approved-by", "");
        assert!(
            matches!(gates(&Req::Deploy(dr.clone()), &strict), Err(Gate::Awaiting(_))),
            "an empty approval is none"
        );
        annotate(&mut dr, "slipway.dev/approved-by", "carol");
        assert!(gates(&Req::Deploy(dr.clone()), &strict).is_ok());
        // Issue and mode refusals are final: the spec that caused them cannot change.
        let no_issue = request("b", 0, None, DeployMode::Change);
        assert!(matches!(gates(&Req::Deploy(no_issue), &strict), Err(Gate::Refused(_))));

        annotate(&mut dr, "slipway.dev/requested-by", "alice");
        let st = DeployRequestStatus { commit: Some("abc".into()), ..Default::default() };
        let release = release(&Req::Deploy(dr.clone()), &strict, &st, "Succeeded", Default::default(), None);
        assert_eq!(release.requested_by.as_deref(), Some("alice"));
        assert_eq!(release.approved_by.as_deref(), Some("carol"));
        assert_eq!(release.deployed_by.as_deref(), Some("DeployRequest/shop-45/uid-shop-45"));
    }

    #[test]
    fn queue_is_fifo_by_creation_then_name_and_skips_finished_and_refused() {
        let mut done = request("done", 0, None, DeployMode::Change);
        done.status = Some(DeployRequestStatus { phase: Some(Phase::Succeeded), ..Default::default() });
        let mut refused = request("refused", 1, None, DeployMode::Change);
        refused.status = Some(DeployRequestStatus {
            conditions: crate::conditions::set(
                &[],
                &references::stalled(&Problem { reason: reasons::ISSUE_REQUIRED, message: String::new() }),
                None,
                Timestamp::now(),
            ),
            ..Default::default()
        });
        // held by a deploy window: Queued, but outside the queue until the window lets it
        let mut held = request("held", 2, None, DeployMode::Change);
        held.status = Some(DeployRequestStatus {
            phase: Some(Phase::Queued),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: slipway_crds::conditions::types::READY.into(),
                status: "False".into(),
                reason: reasons::OUTSIDE_DEPLOY_WINDOW.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
            }],
            ..Default::default()
        });
        let all: Vec<Req> = [
            request("c", 10, None, DeployMode::Change),
            request("b", 20, None, DeployMode::Change),
            request("a", 30, None, DeployMode::Change),
            request("z", 10, None, DeployMode::Change),
            done,
            refused,
            held,
        ]
        .into_iter()
        .map(Req::Deploy)
        .collect();
        let names: Vec<String> = queue("staging", &all, "").iter().map(|d| d.name()).collect();
        assert_eq!(names, ["c", "z", "b", "a"]);
        // A request that just passed its gates (approved) counts as waiting before its Stalled
        // condition is overwritten.
        let me = all[5].id();
        let names: Vec<String> = queue("staging", &all, &me).iter().map(|d| d.name()).collect();
        assert_eq!(names, ["refused", "c", "z", "b", "a"]);
    }

    #[test]
    fn promotion_before_the_queue_matches_the_ref_or_the_commit_prefix() {
        let mut staging = env(serde_json::json!({}));
        let tag = |t: &str| Revision { tag: Some(t.into()), ..Default::default() };
        let commit = |c: &str| Revision { commit: Some(c.into()), ..Default::default() };
        assert!(!promoted_ref(&staging, &tag("v1")));
        staging.status = Some(slipway_crds::EnvironmentStatus {
            history: vec![
                Release {
                    ref_: "v1".into(),
                    commit: "abcdef123".into(),
                    result: Some("Succeeded".into()),
                    ..Default::default()
                },
                Release {
                    ref_: "v2".into(),
                    commit: "bad".into(),
                    result: Some("Failed".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert!(promoted_ref(&staging, &tag("v1")));
        assert!(!promoted_ref(&staging, &tag("v2")), "a failed release does not promote");
        assert!(promoted_ref(&staging, &commit("ABCDEF1")));
        assert!(!promoted_ref(&staging, &commit("fedcba1")));
    }

    /// An Environment called `name` whose history shows `succeeded` (commits) Succeeded and
    /// `failed` Failed.
    fn source(name: &str, current: Option<&str>, succeeded: &[&str], failed: &[&str]) -> Environment {
        let mut e = env(serde_json::json!({}));
        e.metadata.name = Some(name.into());
        let release = |c: &&str, result: &str| Release {
            ref_: format!("ref-{c}"),
            commit: (*c).into(),
            result: Some(result.into()),
            ..Default::default()
        };
        e.status = Some(slipway_crds::EnvironmentStatus {
            current: current.map(|c| release(&c, "Succeeded")),
            history: succeeded
                .iter()
                .map(|c| release(c, "Succeeded"))
                .chain(failed.iter().map(|c| release(c, "Failed")))
                .collect(),
            ..Default::default()
        });
        e
    }

    #[test]
    fn promotion_from_several_environments_needs_a_success_on_every_one() {
        let from: Vec<String> = ["staging", "qa", "perf"].map(String::from).to_vec();
        let staging = source("staging", Some("c1"), &["c0"], &["c2"]);
        let qa = source("qa", None, &["c1", "c2"], &[]);
        // perf does not exist: nothing succeeded there.
        let sources = [staging.clone(), qa.clone()];
        let commit = |c: &'static str| move |e: &Environment| promoted(e, c);
        let cases: [(&str, Vec<&str>); 4] = [
            // current on staging, history on qa: only the missing Environment is named
            ("c1", vec!["perf"]),
            // failed on staging
            ("c2", vec!["staging", "perf"]),
            // history on staging only
            ("c0", vec!["qa", "perf"]),
            ("c9", vec!["staging", "qa", "perf"]),
        ];
        for (c, want) in cases {
            assert_eq!(not_promoted_from(&from, &sources, commit(c)), want, "{c}");
        }
        let two: Vec<String> = ["staging", "qa"].map(String::from).to_vec();
        assert!(not_promoted_from(&two, &sources, commit("c1")).is_empty(), "c1 succeeded on both");
        assert!(not_promoted_from(&[], &sources, commit("c9")).is_empty(), "no rule, nothing missing");
        // the pre-queue check by ref name goes through the same list
        let tag = Revision { tag: Some("ref-c1".into()), ..Default::default() };
        assert!(not_promoted_from(&two, &sources, |e| promoted_ref(e, &tag)).is_empty());
        let tag = Revision { tag: Some("ref-c2".into()), ..Default::default() };
        assert_eq!(not_promoted_from(&two, &sources, |e| promoted_ref(e, &tag)), ["staging"]);
    }

    #[test]
    fn require_rollback_tested_counts_only_rehearsed_successes() {
        let mut staging = source("staging", None, &["c1", "c2"], &["c3"]);
        let status = staging.status.as_mut().unwrap();
        status.history[0].rollback_tested = true;
        status.history[2].rollback_tested = true; // a failed release never counts
        assert!(rollback_tested(&staging, "c1"));
        assert!(!rollback_tested(&staging, "c2"), "deployed, but not rehearsed");
        assert!(!rollback_tested(&staging, "c3"));
        let tag = |t: &str| Revision { tag: Some(t.into()), ..Default::default() };
        assert!(rollback_tested_ref(&staging, &tag("ref-c1")));
        assert!(!rollback_tested_ref(&staging, &tag("ref-c2")));
        assert!(rollback_tested_ref(&staging, &Revision { commit: Some("C1".into()), ..Default::default() }));
        let from: Vec<String> = ["staging", "qa"].map(String::from).to_vec();
        let missing = not_promoted_from(&from, std::slice::from_ref(&staging), |e| rollback_tested(e, "c1"));
        assert_eq!(missing, ["qa"]);
        let message = not_rehearsed_message("tag v2", &missing, "");
        assert!(message.contains("Environment \"qa\" (policy.requireRollbackTested)"), "{message}");
        assert!(message.contains("rehearseRollback: true"), "{message}");
        // a release records rollbackTested only when it succeeded after a passed rehearsal
        let dr = Req::Deploy(request("shop-45", 0, Some("#45"), DeployMode::Change));
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let mut st = DeployRequestStatus { commit: Some("c1".into()), ..Default::default() };
        assert!(!release(&dr, &staging, &st, "Succeeded", Default::default(), None).rollback_tested);
        for s in super::super::rehearsal::STEPS {
            finish_step(&mut st, s, StepResult::Succeeded, "ok", None, t);
        }
        assert!(release(&dr, &staging, &st, "Succeeded", Default::default(), None).rollback_tested);
        assert!(!release(&dr, &staging, &st, "Failed", Default::default(), None).rollback_tested);
        // recovered after a crash: rollbackTested too, live since the roll forward was verified
        finish_step(&mut st, VERIFYING, StepResult::Succeeded, "ok", None, t);
        st.phase = Some(Phase::Succeeded);
        let later = Timestamp::from_second(1_700_000_100).unwrap();
        if let Some(s) = st.steps.iter_mut().find(|s| s.name == super::super::rehearsal::FORWARD_VERIFYING) {
            s.finished_at = Some(later.to_string());
        }
        let recovered = recovered_release(&dr, &staging, &st, Default::default());
        assert!(recovered.rollback_tested);
        assert_eq!(recovered.deployed_at, Some(later.to_string()));
    }

    #[test]
    fn the_not_promoted_message_names_each_missing_environment() {
        let one = not_promoted_message("tag v2", &["staging"], "");
        assert_eq!(
            one,
            "tag v2 has not been deployed successfully to Environment \"staging\" (policy.promoteFrom): deploy it there first"
        );
        let two = not_promoted_message("tag v2", &["staging", "qa"], ", then create a new DeployRequest here");
        assert!(
            two.contains("to Environments \"staging\", \"qa\" (policy.promoteFrom): deploy it on each first, then"),
            "{two}"
        );
    }

    #[test]
    fn a_release_recovered_after_a_crash_is_as_complete_as_the_normal_one() {
        let dr = Req::Deploy(request("shop-45", 0, Some("#45"), DeployMode::Change));
        let staging = env(serde_json::json!({}));
        let t = |s: i64| Timestamp::from_second(1_700_000_000 + s).unwrap();
        let mut st = DeployRequestStatus { commit: Some("abc1234".into()), ..Default::default() };
        finish_step(&mut st, PREFLIGHT, StepResult::Succeeded, "ok", None, t(0));
        finish_step(&mut st, MIGRATING, StepResult::Succeeded, "ok", None, t(10));
        finish_step(&mut st, REBUILDING, StepResult::Succeeded, "ok", None, t(20));
        finish_step(&mut st, VERIFYING, StepResult::Succeeded, "ok", None, t(30));
        st.phase = Some(Phase::Succeeded);
        let images: std::collections::BTreeMap<String, String> = [("backend".into(), "sha256:b".into())].into();

        let recovered = recovered_release(&dr, &staging, &st, images.clone());
        // What the normal path writes when Verifying succeeds at t(30).
        let normal = release(&dr, &staging, &st, "Succeeded", images.clone(), Some(t(30).to_string()));
        assert_eq!(recovered, normal);
        assert_eq!(recovered.deployed_at.as_deref(), Some(t(30).to_string().as_str()));
        assert_eq!(recovered.images, images);
        assert_eq!(recovered.started_at.as_deref(), Some(t(0).to_string().as_str()));

        // A failure is recorded as `fail` records it: no images, no deployedAt.
        st.phase = Some(Phase::Failed);
        let failed = recovered_release(&dr, &staging, &st, images);
        assert_eq!(failed, release(&dr, &staging, &st, "Failed", Default::default(), None));
    }

    fn rollback(to: slipway_crds::RollbackTarget, migrations: RollbackMigrations) -> Rollback {
        let mut rb = Rollback::new(
            "undo",
            slipway_crds::RollbackSpec { environment: "staging".into(), to, reason: "5xx".into(), migrations },
        );
        rb.metadata.uid = Some("uid-undo".into());
        rb
    }

    fn recorded(ref_: &str, commit: &str, migration: Option<&str>, result: &str) -> Release {
        Release {
            ref_: ref_.into(),
            commit: commit.into(),
            migration: migration.map(str::to_owned),
            result: Some(result.into()),
            ..Default::default()
        }
    }

    #[test]
    fn rollback_targets_come_from_history() {
        use slipway_crds::RollbackTarget;
        let mut env = env(serde_json::json!({}));
        let previous = RollbackTarget { previous: Some(true), ..Default::default() };
        let err = rollback_target(&rollback(previous.clone(), RollbackMigrations::Downgrade), &env, None).unwrap_err();
        assert_eq!(err.reason, reasons::RELEASE_NOT_IN_HISTORY);
        assert!(err.message.contains("the history is empty"), "{}", err.message);
        env.status = Some(slipway_crds::EnvironmentStatus {
            current: Some(recorded("v3", "ccc333", Some("0003"), "Succeeded")),
            history: vec![
                recorded("v3", "ccc333", Some("0003"), "Succeeded"),
                recorded("v2.9", "bad999", Some("0009"), "Failed"),
                recorded("v2", "bbb222", Some("0002"), "Succeeded"),
                recorded("v1", "aaa111", Some("0001"), "Succeeded"),
            ],
            quarantined: vec![slipway_crds::Quarantined { commit: "bbb222".into(), ..Default::default() }],
            ..Default::default()
        });
        let target = |to: RollbackTarget| {
            rollback_target(&rollback(to, RollbackMigrations::Downgrade), &env, Some("ccc333")).map(|r| r.ref_.clone())
        };
        // previous: not the running commit, not failed, not quarantined
        assert_eq!(target(previous.clone()).unwrap(), "v1");
        // after a failed deploy the host runs another commit than status.current: previous is
        // measured from what runs (here v3 itself is the previous release)
        let after_failure = rollback_target(&rollback(previous, RollbackMigrations::Downgrade), &env, Some("bad999"));
        assert_eq!(after_failure.unwrap().ref_, "v3");
        assert_eq!(target(RollbackTarget { tag: Some("v2".into()), ..Default::default() }).unwrap(), "v2");
        assert_eq!(target(RollbackTarget { release: Some("AAA111".into()), ..Default::default() }).unwrap(), "v1");
        let missing = target(RollbackTarget { tag: Some("v2.9".into()), ..Default::default() }).unwrap_err();
        assert_eq!(missing.reason, reasons::RELEASE_NOT_IN_HISTORY, "a failed release is no target");
        assert!(missing.message.contains("v2 (bbb222, Succeeded)"), "names what is there: {}", missing.message);
    }

    #[test]
    fn downgrade_path_is_judged_before_anything_changes() {
        use slipway_crds::RollbackTarget;
        let previous = RollbackTarget { previous: Some(true), ..Default::default() };
        let downgrade = rollback(previous.clone(), RollbackMigrations::Downgrade);
        let skip = rollback(previous, RollbackMigrations::Skip);
        let mut declared = env(serde_json::json!({}));
        declared.spec.migrations = Some(slipway_crds::Migrations {
            service: "backend".into(),
            upgrade: vec!["alembic".into(), "upgrade".into(), "head".into()],
            current: vec![],
            downgrade: vec!["alembic".into(), "downgrade".into(), "{revision}".into()],
        });
        let mut undeclared = declared.clone();
        undeclared.spec.migrations.as_mut().unwrap().downgrade.clear();
        let v1 = recorded("v1", "aaa111", Some("0001"), "Succeeded");
        let unrecorded = recorded("v0", "000000", None, "Succeeded");
        assert_eq!(downgrade_path(&downgrade, &declared, Some("0002"), &v1).unwrap().as_deref(), Some("0001"));
        assert_eq!(downgrade_path(&downgrade, &declared, Some("0001"), &v1).unwrap(), None, "equal: skipped");
        assert_eq!(downgrade_path(&skip, &undeclared, Some("0002"), &v1).unwrap(), None, "Skip leaves the database");
        let refused = downgrade_path(&downgrade, &undeclared, Some("0002"), &v1).unwrap_err();
        assert_eq!(refused.reason, reasons::NO_DOWNGRADE_PATH);
        assert!(refused.message.contains("no downgrade command"), "{}", refused.message);
        let refused = downgrade_path(&downgrade, &declared, Some("0002"), &unrecorded).unwrap_err();
        assert!(refused.message.contains("no recorded revision"), "{}", refused.message);
    }

    #[test]
    fn a_quarantined_commit_is_refused_unless_overridden() {
        let mut staging = env(serde_json::json!({}));
        staging.status = Some(slipway_crds::EnvironmentStatus {
            quarantined: vec![slipway_crds::Quarantined {
                commit: "abcdef1234".into(),
                ref_: "v1.0.0".into(),
                failed_in: Some("DeployRequest/bad/uid-bad".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        let dr = request("again", 0, Some("#1"), DeployMode::Change);
        let Err(Gate::Refused(p)) = gates(&Req::Deploy(dr.clone()), &staging) else { panic!("not refused") };
        assert_eq!(p.reason, reasons::QUARANTINED);
        assert!(p.message.contains("in bad") && p.message.contains("overrideQuarantine"), "{}", p.message);
        let mut overriding = dr;
        overriding.spec.override_quarantine = true;
        assert!(gates(&Req::Deploy(overriding), &staging).is_ok());
    }

    #[test]
    fn one_condition_per_recorded_step() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let mut s = DeployRequestStatus::default();
        finish_step(&mut s, PREFLIGHT, StepResult::Succeeded, "ok", None, t);
        finish_step(&mut s, MIGRATING, StepResult::Failed, "alembic failed", None, t);
        start_step(&mut s, REBUILDING, t);
        let got: Vec<(&str, Status)> = step_conditions(&s).iter().map(|d| (d.type_, d.status)).collect();
        assert_eq!(got, [("PreflightPassed", Status::True), ("Migrated", Status::False), ("Rebuilt", Status::Unknown)]);
    }

    #[test]
    fn promotion_reads_history_and_current() {
        let mut staging = env(serde_json::json!({}));
        assert!(!promoted(&staging, "abc"));
        staging.status = Some(slipway_crds::EnvironmentStatus {
            history: vec![
                Release { commit: "abc".into(), result: Some("Succeeded".into()), ..Default::default() },
                Release { commit: "bad".into(), result: Some("Failed".into()), ..Default::default() },
            ],
            ..Default::default()
        });
        assert!(promoted(&staging, "abc"));
        assert!(!promoted(&staging, "bad"));
    }

    #[test]
    fn steps_are_recorded_once_and_finished() {
        let mut s = DeployRequestStatus::default();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        assert!(start_step(&mut s, PREFLIGHT, t0));
        assert!(!start_step(&mut s, PREFLIGHT, t0), "a resumed reconcile does not restart a step");
        let t1 = Timestamp::from_second(1_700_000_042).unwrap();
        assert_eq!(step_elapsed(&s, PREFLIGHT, t1), 42);
        finish_step(&mut s, PREFLIGHT, StepResult::Succeeded, "ok", Some(String::new()), t1);
        let st = step(&s, PREFLIGHT).unwrap();
        assert_eq!(st.result, Some(StepResult::Succeeded));
        assert_eq!(st.output_tail, None);
    }

    #[test]
    fn alembic_revisions() {
        let out = "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n0002 (head)\n";
        assert_eq!(parse_migration_revision(out).as_deref(), Some("0002"));
        assert_eq!(parse_migration_revision("INFO  [alembic] Will assume transactional DDL.\n"), None);
        assert_eq!(parse_migration_revision(""), None);
    }

    #[test]
    fn holder_ids_round_trip() {
        let id = holder_id("DeployRequest", "shop-45", "0f-12");
        assert_eq!(parse_holder(&id), Some(("DeployRequest", "shop-45", "0f-12")));
    }
}
