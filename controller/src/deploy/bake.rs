//! The bake period after verification (`health.bakeSeconds`): the request keeps the lock and
//! runs the Environment's health round every `health.intervalSeconds` until `status.bakeUntil`;
//! a failed round fails it (`BakeFailed`, rolled back where `policy.autoRollback` says so). The
//! end time is in status, so a restarted controller continues the bake rather than restarting it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use slipway_crds::{DeployRequestStatus, Environment};

use super::plan::{self, BAKING};
use super::request::Req;

/// When a request verified at `verified` stops baking, or `None` when it does not bake: only a
/// DeployRequest of a revision bakes (not a restart, nor a Rollback), for `env`'s bake seconds.
pub fn until(req: &Req, env: &Environment, verified: Timestamp) -> Option<Timestamp> {
    let deploys_a_revision = req.as_deploy().is_some_and(|d| !d.is_restart());
    let secs = i64::from(env.spec.bake_seconds());
    (deploys_a_revision && secs > 0)
        .then(|| verified.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs)).unwrap_or(verified))
}

/// What one round of the bake decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bake {
    /// Healthy, the window still open: look again after this long.
    Continue(Duration),
    /// Healthy at or after the end of the window: the request succeeds.
    Passed { message: String },
    /// A check failed inside the window.
    Failed { message: String },
}

/// The end of the bake as recorded; a status without one (written by hand) ends at once.
pub fn recorded_until(st: &DeployRequestStatus, now: Timestamp) -> Timestamp {
    st.bake_until.as_deref().and_then(|t| t.parse().ok()).unwrap_or(now)
}

/// Judges one health round (`failed`: what failed, empty when healthy) at `now`.
pub fn judge(st: &DeployRequestStatus, failed: &[String], interval: Duration, now: Timestamp) -> Bake {
    let until = recorded_until(st, now);
    let started =
        plan::step(st, BAKING).and_then(|s| s.started_at.as_deref()).and_then(|t| t.parse::<Timestamp>().ok());
    let length = started.map_or(0, |s| until.as_second() - s.as_second()).max(0);
    if !failed.is_empty() {
        let into = started.map_or(0, |s| now.as_second() - s.as_second()).max(0);
        return Bake::Failed {
            message: format!(
                "{} failed {into}s into the {length}s bake period (health.bakeSeconds, until {until}): {}",
                if failed.len() == 1 { "a check" } else { "checks" },
                failed.join("; ")
            ),
        };
    }
    if now >= until {
        return Bake::Passed {
            message: format!("every check passed through the {length}s bake period (health.bakeSeconds)"),
        };
    }
    let left = Duration::from_secs(u64::try_from(until.as_second() - now.as_second()).unwrap_or(1).max(1));
    Bake::Continue(interval.min(left).max(Duration::from_secs(1)))
}

/// How long until the next round is due, when the last passing round ran less than `interval`
/// before `now`: writing its time to status wakes the request again at once, and a round on each
/// wake would run the checks back to back instead of once an interval. The round at the window's
/// end is due at the end, whatever the interval.
pub fn next_round_in(st: &DeployRequestStatus, interval: Duration, now: Timestamp) -> Option<Duration> {
    let last: Timestamp = st.bake_checked_at.as_deref()?.parse().ok()?;
    let since = now.duration_since(last);
    let every = k8s_openapi::jiff::SignedDuration::try_from(interval).ok()?;
    let left = recorded_until(st, now).duration_since(now);
    if since.is_negative() || since >= every || !left.is_positive() {
        return None;
    }
    Duration::try_from((every - since).min(left)).ok()
}

/// Where no round ran for longer than two intervals (plus 10 s) before the window's end, since
/// the last passing round (or the bake's start), the end moved later by the time nothing was
/// watched: a bake passes only after `bakeSeconds` of rounds, whatever stopped them.
pub fn extended_until(st: &DeployRequestStatus, interval: Duration, now: Timestamp) -> Option<Timestamp> {
    let until: Timestamp = st.bake_until.as_deref()?.parse().ok()?;
    let parse = |t: Option<&str>| t.and_then(|t| t.parse::<Timestamp>().ok());
    let last = parse(st.bake_checked_at.as_deref())
        .or_else(|| parse(plan::step(st, BAKING).and_then(|s| s.started_at.as_deref())))?;
    let every = i64::try_from(interval.as_secs()).unwrap_or(i64::MAX / 4).max(1);
    let gap = now.as_second() - last.as_second();
    if last >= until || gap <= 2 * every + 10 {
        return None;
    }
    until.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(gap - every)).ok()
}

/// The Ready message while baking.
pub fn baking_message(env_name: &str, until: Timestamp, secs: i32) -> String {
    format!(
        "Verified healthy; baking: the checks keep running on Environment {env_name:?} until {until} \
         (health.bakeSeconds: {secs}) before the deploy succeeds"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_crds::{DeployMode, DeployRequest, DeployRequestSpec, Revision, StepResult};

    fn env(spec: serde_json::Value) -> Environment {
        let mut base = serde_json::json!({
            "host": {"address": "10.0.0.5", "path": "/srv/shop"},
            "sshKeySecretRef": {"name": "s", "key": "id"},
            "knownHostsSecretRef": {"name": "s", "key": "known_hosts"},
        });
        base.as_object_mut().unwrap().extend(spec.as_object().unwrap().clone());
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "prod", "namespace": "team"}, "spec": base
        }))
        .unwrap()
    }

    fn deploy(restart: &[&str]) -> Req {
        Req::Deploy(DeployRequest::new(
            "shop-45",
            DeployRequestSpec {
                environment: "prod".into(),
                revision: if restart.is_empty() {
                    Revision { tag: Some("v2".into()), ..Default::default() }
                } else {
                    Revision::default()
                },
                restart: restart.iter().map(|s| (*s).to_owned()).collect(),
                issue: None,
                mode: DeployMode::Change,
                force: false,
                override_quarantine: false,
            },
        ))
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn production_bakes_300_seconds_unless_it_says_otherwise() {
        use serde_json::json;
        let cases = [
            (json!({}), 0),
            (json!({"tier": "staging"}), 0),
            (json!({"tier": "production"}), 300),
            (json!({"policy": {"production": true}}), 300),
            (json!({"tier": "production", "policy": {"production": false}}), 0),
            (json!({"tier": "production", "health": {"bakeSeconds": 0}}), 0),
            (json!({"tier": "staging", "health": {"bakeSeconds": 60}}), 60),
            (json!({"health": {"bakeSeconds": 86400}}), 86400),
        ];
        for (spec, want) in cases {
            let e = env(spec.clone());
            assert_eq!(e.spec.bake_seconds(), want, "{spec}");
            let got = until(&deploy(&[]), &e, t(0));
            assert_eq!(got, (want > 0).then(|| t(i64::from(want))), "{spec}");
        }
        let prod = env(json!({"tier": "production"}));
        assert_eq!(until(&deploy(&["backend"]), &prod, t(0)), None, "a restart does not bake");
        let rb = slipway_crds::Rollback::new(
            "undo",
            slipway_crds::RollbackSpec {
                environment: "prod".into(),
                to: Default::default(),
                reason: "x".into(),
                migrations: Default::default(),
            },
        );
        assert_eq!(until(&Req::Rollback(rb), &prod, t(0)), None, "a Rollback does not bake");
    }

    #[test]
    fn a_bake_continues_to_its_recorded_end_and_fails_on_any_failed_round() {
        let mut st = DeployRequestStatus { bake_until: Some(t(300).to_string()), ..Default::default() };
        plan::start_step(&mut st, BAKING, t(0));
        let five = Duration::from_secs(5);
        assert_eq!(judge(&st, &[], five, t(10)), Bake::Continue(five));
        // never past the end: the last round runs at the end
        assert_eq!(judge(&st, &[], five, t(298)), Bake::Continue(Duration::from_secs(2)));
        assert!(matches!(judge(&st, &[], five, t(300)), Bake::Passed { .. }));
        // a controller restarted late continues from the recorded end, not from its own start
        assert!(matches!(judge(&st, &[], five, t(4000)), Bake::Passed { .. }));
        let Bake::Failed { message } = judge(&st, &["service backend is exited (exit code 137)".into()], five, t(42))
        else {
            panic!("a failed round fails the bake")
        };
        assert!(message.contains("42s into the 300s bake period"), "{message}");
        assert!(message.contains("service backend is exited"), "{message}");
        // a failure at the very end still fails: success needs a passing round at the end
        assert!(matches!(judge(&st, &["x".into()], five, t(300)), Bake::Failed { .. }));
        // the step record: Baked condition once finished
        plan::finish_step(&mut st, BAKING, StepResult::Succeeded, "ok", None, t(300));
        let conds = plan::step_conditions(&st);
        assert_eq!(conds[0].type_, slipway_crds::conditions::types::BAKED);
    }

    #[test]
    fn a_gap_in_the_rounds_moves_the_end_later_by_the_unwatched_time() {
        let every = Duration::from_secs(5);
        let mut st = DeployRequestStatus { bake_until: Some(t(300).to_string()), ..Default::default() };
        plan::start_step(&mut st, BAKING, t(0));
        // Rounds every interval: nothing moves.
        assert_eq!(extended_until(&st, every, t(12)), None);
        st.bake_checked_at = Some(t(100).to_string());
        assert_eq!(extended_until(&st, every, t(118)), None);
        // The controller was down from t(100) to t(400): past the end, but 295 s unwatched.
        assert_eq!(extended_until(&st, every, t(400)), Some(t(595)));
        // A restart before any round (checked from the bake's start).
        st.bake_checked_at = None;
        assert_eq!(extended_until(&st, every, t(60)), Some(t(355)));
        // A round that passed at or after the end leaves nothing to extend.
        st.bake_checked_at = Some(t(300).to_string());
        assert_eq!(extended_until(&st, every, t(900)), None);
    }

    #[test]
    fn a_round_waits_for_its_interval_after_the_last_one() {
        let every = Duration::from_secs(5);
        let mut st = DeployRequestStatus { bake_until: Some(t(300).to_string()), ..Default::default() };
        // no round yet: one is due
        assert_eq!(next_round_in(&st, every, t(0)), None);
        st.bake_checked_at = Some(t(100).to_string());
        // woken by its own status write: the rest of the interval
        assert_eq!(next_round_in(&st, every, t(100)), Some(every));
        assert_eq!(next_round_in(&st, every, t(103)), Some(Duration::from_secs(2)));
        // due at the interval and after it
        assert_eq!(next_round_in(&st, every, t(105)), None);
        assert_eq!(next_round_in(&st, every, t(200)), None);
        // a clock that went back runs the round rather than wait on it
        assert_eq!(next_round_in(&st, every, t(90)), None);
        // the last round comes at the window's end, not an interval after the one before
        st.bake_until = Some(t(102).to_string());
        assert_eq!(next_round_in(&st, every, t(100)), Some(Duration::from_secs(2)));
        assert_eq!(next_round_in(&st, every, t(102)), None);
        assert_eq!(next_round_in(&st, every, t(103)), None);
    }
}
