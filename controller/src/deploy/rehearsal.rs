//! The rollback rehearsal (`policy.rehearseRollback`, meant for staging): a deploy that migrated
//! and passed verification is rolled back to the release before it (database downgraded first,
//! by the new code, as a Rollback does), verified, then rolled forward again (migrated, rebuilt,
//! verified). Each of the six steps is recorded in `status.steps` and runs as host jobs of its
//! own, so a controller restart resumes the step it was in; [`next`] decides from the record.
//!
//! When a step going back fails, the rest of the way back is skipped and the release is rolled
//! forward: the new release is the one that was verified, the previous one just proved it cannot
//! be returned to. Only a downgrade that failed without changing the database (one transaction,
//! rolled back) leaves everything as it was, and nothing is rolled forward. Either way the
//! request fails with `RehearsalFailed` naming the step, what the host runs and whether that
//! was verified; its release is never `rollbackTested`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployRequestStatus, Environment, Phase, StepResult};

use crate::remote::{RemoteError, Repo};

use super::plan::{self, short};
use super::request::Req;
use super::site::Site;
use super::steps::{self, Progress};
use super::{Run, StepError};

/// The rehearsal's steps as `status.steps` names them, in order.
pub const DOWNGRADING: &str = "RehearsalDowngrading";
pub const REBUILDING: &str = "RehearsalRebuilding";
pub const VERIFYING: &str = "RehearsalVerifying";
pub const FORWARD_MIGRATING: &str = "RollForwardMigrating";
pub const FORWARD_REBUILDING: &str = "RollForwardRebuilding";
pub const FORWARD_VERIFYING: &str = "RollForwardVerifying";
pub const STEPS: [&str; 6] =
    [DOWNGRADING, REBUILDING, VERIFYING, FORWARD_MIGRATING, FORWARD_REBUILDING, FORWARD_VERIFYING];
/// The steps going back; the others roll forward.
const BACK: [&str; 3] = [DOWNGRADING, REBUILDING, VERIFYING];

/// Host jobs of the rehearsal, named apart from the deploy's own (same request UID).
const DOWNGRADE_JOB: &str = "rehearse-downgrade";
const BACK_JOBS: [&str; 2] = ["rehearse-build", "rehearse-up"];
const FORWARD_MIGRATION_JOBS: [&str; 2] = ["forward-migrate-build", "forward-migrate"];
const FORWARD_JOBS: [&str; 2] = ["forward-build", "forward-up"];
/// Every host job the rehearsal may have running (stopped when the request is abandoned).
pub const JOBS: [&str; 7] = [
    DOWNGRADE_JOB,
    BACK_JOBS[0],
    BACK_JOBS[1],
    FORWARD_MIGRATION_JOBS[0],
    FORWARD_MIGRATION_JOBS[1],
    FORWARD_JOBS[0],
    FORWARD_JOBS[1],
];

/// Whether a verified deploy is rehearsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The Environment does not rehearse (or the request is a Rollback or a restart).
    Off,
    /// It rehearses, but not this deploy: why, for the status message.
    Skip(String),
    /// Back to `previous` (commit) with the database at `revision`, then forward again.
    Rehearse { previous: String, revision: String },
}

/// Decided from the facts preflight and the migration recorded.
pub fn decide(req: &Req, env: &Environment, st: &DeployRequestStatus) -> Decision {
    let Req::Deploy(dr) = req else { return Decision::Off };
    if !env.spec.policy.rehearse_rollback || dr.is_restart() {
        return Decision::Off;
    }
    let skip = |why: String| Decision::Skip(format!("rollback not rehearsed: {why}"));
    let ran = plan::step(st, plan::MIGRATING).is_some_and(|s| s.result == Some(StepResult::Succeeded));
    match (&st.previous_commit, &st.migration_before) {
        (None, _) => skip("the first release on this Environment has no previous release to go back to".into()),
        (Some(p), _) if Some(p) == st.commit.as_ref() => skip("the previous release is the same commit".into()),
        _ if !ran || st.migration_after == st.migration_before => skip(format!(
            "this deploy ran no migrations (the database stayed at revision {})",
            st.migration_after.as_deref().unwrap_or("(none)")
        )),
        (Some(_), None) => skip("the database had no migration revision before this deploy to go back to".into()),
        (Some(previous), Some(revision)) => {
            Decision::Rehearse { previous: previous.clone(), revision: revision.clone() }
        }
    }
}

/// What the rehearsal does next, from its step record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Start or resume this step.
    Run(&'static str),
    /// Every step succeeded.
    Passed,
    /// Every step ended; this one failed first.
    Failed(&'static str),
}

pub fn next(st: &DeployRequestStatus) -> Next {
    if let Some(step) = STEPS.into_iter().find(|s| plan::step(st, s).is_none_or(|r| r.result.is_none())) {
        return Next::Run(step);
    }
    match STEPS.into_iter().find(|s| plan::step(st, s).is_some_and(|r| r.result == Some(StepResult::Failed))) {
        Some(step) => Next::Failed(step),
        None => Next::Passed,
    }
}

/// Did the rehearsal run and pass (the release is `rollbackTested`)?
pub fn passed(st: &DeployRequestStatus) -> bool {
    STEPS.iter().all(|s| plan::step(st, s).is_some_and(|r| r.result == Some(StepResult::Succeeded)))
}

/// The step of the rehearsal that is running, if any.
pub fn running(st: &DeployRequestStatus) -> Option<&'static str> {
    STEPS.into_iter().find(|s| plan::step(st, s).is_some_and(|r| r.result.is_none()))
}

/// The steps skipped after `failed` failed: the rest of the way back (the release is rolled
/// forward instead), or of the roll forward; everything when the downgrade left the database
/// `unchanged` (the verified release still runs as it was).
pub fn skipped_after(failed: &str, unchanged: bool) -> Vec<(&'static str, String)> {
    let Some(at) = STEPS.iter().position(|s| *s == failed) else { return Vec::new() };
    let back = BACK.contains(&failed);
    STEPS[at + 1..]
        .iter()
        .filter(|s| unchanged || BACK.contains(*s) == back)
        .map(|s| {
            let why = if unchanged {
                format!("{failed} failed without changing the database: the verified release still runs")
            } else if back {
                format!("{failed} failed: rolling forward to the verified release instead")
            } else {
                format!("{failed} failed")
            };
            (*s, why)
        })
        .collect()
}

/// What a rehearsal step does and its deadline (seconds), for the progress message.
fn doing(step: &str, previous: &str, revision: &str) -> String {
    let (n, what) = match step {
        DOWNGRADING => (1, format!("downgrading the database to revision {revision}")),
        REBUILDING => (2, format!("building and starting the previous release (commit {})", short(previous))),
        VERIFYING => (3, "verifying the previous release".to_owned()),
        FORWARD_MIGRATING => (4, "migrating the database forward again".to_owned()),
        FORWARD_REBUILDING => (5, "building and starting the new release again".to_owned()),
        _ => (6, "verifying the new release again".to_owned()),
    };
    format!("Rehearsing the rollback, step {n} of 6: {what}")
}

/// The deploy was verified and is to be rehearsed: enter `Rehearsing` at its first step.
pub(super) async fn begin(
    run: &Run<'_>,
    mut st: DeployRequestStatus,
    previous: &str,
    revision: &str,
) -> crate::error::Result<Action> {
    let now = Timestamp::now();
    st.phase = Some(Phase::Rehearsing);
    plan::start_step(&mut st, DOWNGRADING, now);
    run.progressing(st, Phase::Rehearsing, doing(DOWNGRADING, previous, revision), now).await
}

/// One reconcile of the rehearsal: the next step started or polled, or the outcome.
pub(super) async fn advance(
    run: &Run<'_>,
    site: &Site<'_>,
    env: &Environment,
    mut st: DeployRequestStatus,
    now: Timestamp,
) -> Result<Action, StepError> {
    let previous = st.previous_commit.clone().unwrap_or_default();
    let revision = st.migration_before.clone().unwrap_or_default();
    let step = match next(&st) {
        Next::Run(step) => step,
        Next::Passed => {
            let note = summary(&st);
            let verified = plan::step(&st, FORWARD_VERIFYING).and_then(|s| s.finished_at.as_deref());
            let at = verified.and_then(|t| t.parse::<Timestamp>().ok()).unwrap_or(now);
            return super::verified(run, site, env, st, note, at).await;
        }
        Next::Failed(step) => return failed(run, site, env, st, step, now).await,
    };
    plan::start_step(&mut st, step, now);
    let progress = match run_step(site, run.ctx, &st, step, &previous, &revision, now).await {
        Ok(p) => p,
        Err(e) if e.is_transient() => return Err(e.into()),
        // Anything else ends this step: the rehearsal goes on to leave the host on a known release.
        Err(e) => {
            Progress::Failed { message: crate::remote::Exec::redactor(site.conn).redact(&e.to_string()), tail: None }
        }
    };
    let now = Timestamp::now();
    match progress {
        Progress::Running => {
            let verifying = matches!(step, VERIFYING | FORWARD_VERIFYING);
            let interval = u64::try_from(env.spec.health.interval_seconds).unwrap_or(3).max(1);
            let left = step_deadline(site, step).map_or(i64::MAX, |d| d - plan::step_elapsed(&st, step, now));
            let wait = if verifying { Duration::from_secs(interval) } else { site.running_requeue(left) };
            return Ok(Action::requeue(wait));
        }
        Progress::Done { message } => plan::finish_step(&mut st, step, StepResult::Succeeded, message, None, now),
        Progress::Failed { message, tail } => {
            plan::finish_step(&mut st, step, StepResult::Failed, message, tail, now);
            // A downgrade that failed inside its transaction changed nothing: stop there.
            // Unknown counts as changed: migrating forward to the head again is harmless.
            let unchanged = step == DOWNGRADING
                && matches!(site.migration_revision(false).await, Ok(at) if at == st.migration_after);
            for (skipped, why) in skipped_after(step, unchanged) {
                plan::finish_step(&mut st, skipped, StepResult::Skipped, why, None, now);
            }
        }
    }
    if let Next::Run(following) = next(&st) {
        plan::start_step(&mut st, following, now);
        return Ok(run.progressing(st, Phase::Rehearsing, doing(following, &previous, &revision), now).await?);
    }
    // The outcome is judged on the next reconcile, from the record just written.
    Ok(run.progressing(st, Phase::Rehearsing, "Rehearsing the rollback: judging the outcome".into(), now).await?)
}

/// The deadline (seconds) of a rehearsal step that runs host jobs, as for the deploy's own steps.
fn step_deadline(site: &Site<'_>, step: &str) -> Option<i64> {
    let d = &site.env.spec.deadlines;
    let secs = match step {
        DOWNGRADING => d.downgrade_seconds,
        REBUILDING | FORWARD_REBUILDING => d.rebuild_seconds,
        FORWARD_MIGRATING => d.migration_seconds,
        _ => return None,
    };
    Some(i64::from(secs.max(1)))
}

/// Runs (starts or polls) `step`; deadlines as for the deploy's own steps.
async fn run_step(
    site: &Site<'_>,
    ctx: &crate::context::Context,
    st: &DeployRequestStatus,
    step: &'static str,
    previous: &str,
    revision: &str,
    now: Timestamp,
) -> Result<Progress, RemoteError> {
    let commit = st.commit.clone().unwrap_or_default();
    let started = plan::step(st, step).and_then(|s| s.started_at.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    let since = started.unwrap_or(now);
    let elapsed = plan::step_elapsed(st, step, now);
    let jobs: &[&str] = match step {
        DOWNGRADING => &[DOWNGRADE_JOB],
        REBUILDING => &BACK_JOBS,
        FORWARD_MIGRATING => &FORWARD_MIGRATION_JOBS,
        FORWARD_REBUILDING => &FORWARD_JOBS,
        _ => &[],
    };
    if step_deadline(site, step).is_some_and(|deadline| elapsed > deadline) {
        for job in jobs {
            site.stop(job).await?;
        }
        return Ok(Progress::Failed {
            message: format!("{step} did not finish within its deadline (spec.deadlines); its host job was stopped"),
            tail: None,
        });
    }
    let checked = |progress: Progress, at: Option<String>, want: Option<&str>| match progress {
        Progress::Done { message } if at.as_deref() != want => Progress::Failed {
            message: format!(
                "{message}, but the database is now at revision {} instead of {}",
                at.as_deref().unwrap_or("(none)"),
                want.unwrap_or("(none)")
            ),
            tail: None,
        },
        other => other,
    };
    Ok(match step {
        DOWNGRADING => match steps::downgrade_as(site, revision, DOWNGRADE_JOB).await? {
            p @ Progress::Done { .. } => checked(p, site.migration_revision(false).await?, Some(revision)),
            other => other,
        },
        REBUILDING => steps::rebuild_as(site, previous, since, false, BACK_JOBS).await?,
        FORWARD_MIGRATING => match steps::migrate_as(site, &commit, FORWARD_MIGRATION_JOBS).await? {
            p @ Progress::Done { .. } => {
                checked(p, site.migration_revision(true).await?, st.migration_after.as_deref())
            }
            other => other,
        },
        FORWARD_REBUILDING => steps::rebuild_as(site, &commit, since, false, FORWARD_JOBS).await?,
        _ => {
            let elapsed = Duration::from_secs(u64::try_from(elapsed).unwrap_or(0));
            steps::verify_round(site, ctx, elapsed).await?
        }
    })
}

/// The note a passed rehearsal adds to the success message.
pub fn summary(st: &DeployRequestStatus) -> String {
    format!(
        "; rollback rehearsed: database downgraded to {} and commit {} verified, then migrated to {} and verified again",
        st.migration_before.as_deref().unwrap_or("(none)"),
        short(st.previous_commit.as_deref().unwrap_or_default()),
        st.migration_after.as_deref().unwrap_or("(none)")
    )
}

/// Every step ended and `step` failed first: the request fails, naming what the host runs now
/// as read from it (HEAD of the checkout, the database revision) and whether that was verified.
async fn failed(
    run: &Run<'_>,
    site: &Site<'_>,
    env: &Environment,
    mut st: DeployRequestStatus,
    step: &'static str,
    now: Timestamp,
) -> Result<Action, StepError> {
    // A host that cannot be read now is retried; one that answers with an error is said so.
    let mut unread = Vec::new();
    let mut read = |what: &str, r: Result<Option<String>, RemoteError>| match r {
        Ok(v) => Ok(v),
        Err(e) if e.is_transient() => Err(StepError::from(e)),
        Err(e) => {
            unread.push(format!("{what} could not be read: {e}"));
            Ok(None)
        }
    };
    let head = match Repo::new(site.conn, site.project.dir.clone()) {
        Ok(repo) => read("the checkout's HEAD", repo.head().await)?,
        Err(e) => read("the checkout's HEAD", Err(e))?,
    };
    let database = read("the database revision", site.migration_revision(false).await)?;
    let why = plan::step(&st, step).and_then(|s| s.message.clone()).unwrap_or_default();
    let mut runs = outcome(run.req, &st, head.as_deref(), database.as_deref());
    if !unread.is_empty() {
        runs = format!("{runs} ({})", crate::remote::Exec::redactor(site.conn).redact(&unread.join("; ")));
    }
    // The database as it is: the release recorded as Failed names it.
    st.migration_after = database;
    let message = format!("rollback rehearsal failed at {step}: {why}; {runs}; the release is not rollbackTested");
    Ok(run.fail(env, st, reasons::REHEARSAL_FAILED, message, None, now).await?)
}

/// What the host runs after a failed rehearsal, and whether it was verified so.
pub fn outcome(req: &Req, st: &DeployRequestStatus, head: Option<&str>, database: Option<&str>) -> String {
    let ok = |s: &str| plan::step(st, s).is_some_and(|r| r.result == Some(StepResult::Succeeded));
    let skipped = |s: &str| plan::step(st, s).is_some_and(|r| r.result == Some(StepResult::Skipped));
    let release = match head {
        Some(h) if Some(h) == st.commit.as_deref() => format!("{} (commit {})", req.revision_display(), short(h)),
        Some(h) if Some(h) == st.previous_commit.as_deref() => format!("the previous release (commit {})", short(h)),
        Some(h) => format!("commit {}", short(h)),
        None => "no commit (the checkout has none)".to_owned(),
    };
    let at = format!("the host runs {release} with the database at revision {}", database.unwrap_or("(none)"));
    if ok(FORWARD_VERIFYING) {
        format!("rolled forward: {at}, verified healthy")
    } else if STEPS[3..].iter().all(|s| skipped(s)) {
        format!("nothing was changed: {at}, as verified before the rehearsal")
    } else {
        format!("{at}, NOT verified: check the host, then deploy or roll back")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_crds::{DeployMode, DeployRequest, DeployRequestSpec, Revision};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn deploy(restart: bool) -> Req {
        let spec = DeployRequestSpec {
            environment: "staging".into(),
            revision: if restart {
                Revision::default()
            } else {
                Revision { tag: Some("v2".into()), ..Default::default() }
            },
            restart: if restart { vec!["backend".into()] } else { vec![] },
            issue: None,
            mode: DeployMode::Change,
            force: false,
            override_quarantine: false,
        };
        Req::Deploy(DeployRequest::new("to-v2", spec))
    }

    fn staging(rehearse: bool) -> Environment {
        let mut env: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment", "metadata": {"name": "staging"},
            "spec": {"host": {"address": "10.0.0.5", "path": "/srv/shop"},
                     "sshKeySecretRef": {"name": "s", "key": "k"}, "knownHostsSecretRef": {"name": "s", "key": "h"}}
        }))
        .unwrap();
        env.spec.policy.rehearse_rollback = rehearse;
        env
    }

    /// A deploy from commit `prev` (database `before`) to `new` that migrated to `after`.
    fn verified(prev: Option<&str>, before: Option<&str>, after: Option<&str>, migrated: bool) -> DeployRequestStatus {
        let mut st = DeployRequestStatus {
            commit: Some("new222".into()),
            previous_commit: prev.map(str::to_owned),
            migration_before: before.map(str::to_owned),
            migration_after: after.map(str::to_owned),
            ..Default::default()
        };
        plan::finish_step(&mut st, plan::PREFLIGHT, StepResult::Succeeded, "ok", None, t(0));
        let migrating = if migrated { StepResult::Succeeded } else { StepResult::Skipped };
        plan::finish_step(&mut st, plan::MIGRATING, migrating, "ok", None, t(1));
        plan::finish_step(&mut st, plan::REBUILDING, StepResult::Succeeded, "ok", None, t(2));
        plan::finish_step(&mut st, plan::VERIFYING, StepResult::Succeeded, "ok", None, t(3));
        st
    }

    #[test]
    fn only_a_deploy_that_migrated_past_a_previous_release_is_rehearsed() {
        let on = staging(true);
        let rehearse = Decision::Rehearse { previous: "old111".into(), revision: "0001".into() };
        let cases: [(&str, &Req, &Environment, DeployRequestStatus, Option<&str>); 7] = [
            ("migrated", &deploy(false), &on, verified(Some("old111"), Some("0001"), Some("0002"), true), None),
            (
                "policy off",
                &deploy(false),
                &staging(false),
                verified(Some("old111"), Some("0001"), Some("0002"), true),
                Some(""),
            ),
            ("restart", &deploy(true), &on, verified(Some("old111"), Some("0001"), Some("0002"), true), Some("")),
            ("first deploy", &deploy(false), &on, verified(None, None, Some("0002"), true), Some("first release")),
            (
                "no migration",
                &deploy(false),
                &on,
                verified(Some("old111"), Some("0002"), Some("0002"), true),
                Some("ran no migrations"),
            ),
            (
                "none declared",
                &deploy(false),
                &on,
                verified(Some("old111"), None, None, false),
                Some("ran no migrations"),
            ),
            (
                "no revision before",
                &deploy(false),
                &on,
                verified(Some("old111"), None, Some("0002"), true),
                Some("no migration revision before"),
            ),
        ];
        for (name, req, env, st, skip) in cases {
            let got = decide(req, env, &st);
            match skip {
                None => assert_eq!(got, rehearse, "{name}"),
                Some("") => assert_eq!(got, Decision::Off, "{name}"),
                Some(why) => {
                    let Decision::Skip(message) = &got else { panic!("{name}: {got:?}") };
                    assert!(
                        message.starts_with("rollback not rehearsed: ") && message.contains(why),
                        "{name}: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_steps_run_in_order_and_a_failure_going_back_rolls_forward() {
        let mut st = verified(Some("old111"), Some("0001"), Some("0002"), true);
        assert_eq!(next(&st), Next::Run(DOWNGRADING));
        plan::start_step(&mut st, DOWNGRADING, t(4));
        assert_eq!(next(&st), Next::Run(DOWNGRADING), "a resumed reconcile polls the running step");
        assert_eq!(running(&st), Some(DOWNGRADING));
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(next(&st), Next::Run(step), "step {i}");
            plan::finish_step(&mut st, step, StepResult::Succeeded, "ok", None, t(5 + i as i64));
        }
        assert_eq!(next(&st), Next::Passed);
        assert!(passed(&st));
        assert_eq!(running(&st), None);

        // the previous release fails verification: the rest of the way back is skipped (none
        // left) and the release is rolled forward
        let mut st = verified(Some("old111"), Some("0001"), Some("0002"), true);
        plan::finish_step(&mut st, DOWNGRADING, StepResult::Succeeded, "ok", None, t(4));
        plan::finish_step(&mut st, REBUILDING, StepResult::Failed, "build failed", None, t(5));
        let skipped = skipped_after(REBUILDING, false);
        assert_eq!(skipped.iter().map(|s| s.0).collect::<Vec<_>>(), [VERIFYING]);
        assert!(skipped[0].1.contains("rolling forward"), "{}", skipped[0].1);
        for (s, why) in skipped {
            plan::finish_step(&mut st, s, StepResult::Skipped, why, None, t(6));
        }
        assert_eq!(next(&st), Next::Run(FORWARD_MIGRATING));
        for s in &STEPS[3..] {
            plan::finish_step(&mut st, s, StepResult::Succeeded, "ok", None, t(7));
        }
        assert_eq!(next(&st), Next::Failed(REBUILDING), "rolled forward, but the rehearsal failed");
        assert!(!passed(&st));
        let said = outcome(&deploy(false), &st, Some("new222"), Some("0002"));
        assert_eq!(
            said,
            "rolled forward: the host runs tag v2 (commit new222) with the database at revision 0002, verified healthy"
        );
    }

    #[test]
    fn a_downgrade_that_changed_nothing_ends_the_rehearsal_there() {
        let all_rest: Vec<&str> = skipped_after(DOWNGRADING, true).iter().map(|s| s.0).collect();
        assert_eq!(all_rest, STEPS[1..]);
        let back_only: Vec<&str> = skipped_after(DOWNGRADING, false).iter().map(|s| s.0).collect();
        assert_eq!(back_only, [REBUILDING, VERIFYING], "a partial downgrade rolls forward");
        let forward: Vec<&str> = skipped_after(FORWARD_MIGRATING, false).iter().map(|s| s.0).collect();
        assert_eq!(forward, [FORWARD_REBUILDING, FORWARD_VERIFYING]);
        assert!(skipped_after(FORWARD_VERIFYING, false).is_empty());

        let mut st = verified(Some("old111"), Some("0001"), Some("0002"), true);
        plan::finish_step(&mut st, DOWNGRADING, StepResult::Failed, "`alembic downgrade 0001` exited 1", None, t(4));
        for (s, why) in skipped_after(DOWNGRADING, true) {
            plan::finish_step(&mut st, s, StepResult::Skipped, why, None, t(4));
        }
        assert_eq!(next(&st), Next::Failed(DOWNGRADING));
        let said = outcome(&deploy(false), &st, Some("new222"), Some("0002"));
        assert!(said.starts_with("nothing was changed: the host runs tag v2 (commit new222)"), "{said}");

        // a failed roll forward is said to be unverified, naming what the host shows
        let mut st = verified(Some("old111"), Some("0001"), Some("0002"), true);
        for s in &STEPS[..3] {
            plan::finish_step(&mut st, s, StepResult::Succeeded, "ok", None, t(5));
        }
        plan::finish_step(&mut st, FORWARD_MIGRATING, StepResult::Failed, "exited 1", None, t(6));
        let said = outcome(&deploy(false), &st, Some("old111"), Some("0001"));
        assert!(said.contains("the previous release (commit old111)") && said.contains("NOT verified"), "{said}");
    }
}
