//! What each read-only subcommand shows, computed from the objects alone (pure, no I/O): the
//! structures `-o json|yaml` prints, and their tables.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use slipway_crds::conditions::types;
use slipway_crds::{DeployRequestStatus, Environment, Release, StepResult};

use crate::paint::{Cell, Paint, Tone, table};

/// The condition type a drift monitor reports (absent until one runs).
pub const DRIFTED: &str = "Drifted";

/// `status` for one Environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSummary {
    pub name: String,
    /// The running release's ref (`status.current.ref`).
    pub release: Option<String>,
    pub commit: Option<String>,
    /// Ready: `True`, `False` or `Unknown` (`-` when not reported).
    pub ready: String,
    pub ready_reason: Option<String>,
    /// `Healthy`, `Unhealthy`, `Unknown`, or `-` when not reported.
    pub health: String,
    pub health_reason: Option<String>,
    /// `Drifted`, `InSync`, `Unknown`, or `-` when not reported.
    pub drift: String,
    pub drift_message: Option<String>,
    /// The lock holder (`dr/NAME`, `rollback/NAME`).
    pub lock: Option<String>,
    /// Waiting requests, oldest first.
    pub queue: Vec<String>,
    /// Quarantined commits as `ref (commit)`.
    pub quarantined: Vec<String>,
    pub needs_attention: Option<String>,
    pub last_deploy: Option<LastDeploy>,
}

/// The newest entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastDeploy {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub result: Option<String>,
    pub deployed_by: Option<String>,
    pub requested_by: Option<String>,
    /// When it went live (or, when it did not, started).
    pub at: Option<String>,
    /// How long ago, kubectl style (`5m`).
    pub age: Option<String>,
    /// Playbook gates its release waived (`policy.waive`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<String>,
}

/// The first 7 characters of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// `DeployRequest/<name>/<uid>` (a lock holder or queue entry) as kubectl names it: `dr/<name>`.
pub fn object_name(holder: &str) -> String {
    let mut parts = holder.splitn(3, '/');
    match (parts.next(), parts.next()) {
        (Some("DeployRequest"), Some(name)) => format!("dr/{name}"),
        (Some("Rollback"), Some(name)) => format!("rollback/{name}"),
        _ => holder.to_owned(),
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// How long ago, as kubectl prints ages: `45s`, `3m12s`, `25m`, `5h10m`, `30h`, `3d4h`, `40d`, `2y`.
pub fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = (now.as_second() - since.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match secs {
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", secs % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ if d < 365 * 2 => format!("{d}d"),
        _ => format!("{}y", d / 365),
    }
}

fn age_of(at: Option<&str>, now: Timestamp) -> Option<String> {
    at.and_then(|t| t.parse::<Timestamp>().ok()).map(|t| age(t, now))
}

/// How long a step took: `0.8s`, `12s`, `3m04s`.
pub fn took(started: Option<&str>, finished: Option<&str>) -> Option<String> {
    let (a, b) = (started?.parse::<Timestamp>().ok()?, finished?.parse::<Timestamp>().ok()?);
    let ms = (b.as_millisecond() - a.as_millisecond()).max(0);
    Some(match ms {
        ms if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        ms if ms < 120_000 => format!("{}s", ms / 1000),
        ms => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
    })
}

impl EnvironmentSummary {
    pub fn of(env: &Environment, now: Timestamp) -> EnvironmentSummary {
        let st = env.status.clone().unwrap_or_default();
        let ready = condition(&st.conditions, types::READY);
        let healthy = condition(&st.conditions, types::HEALTHY);
        let drifted = condition(&st.conditions, DRIFTED);
        let (health, health_reason) = match healthy {
            None => ("-".to_owned(), None),
            Some(c) => (
                match c.status.as_str() {
                    "True" => "Healthy",
                    "False" => "Unhealthy",
                    _ => "Unknown",
                }
                .to_owned(),
                Some(c.reason.clone()).filter(|r| !r.is_empty()),
            ),
        };
        let (drift, drift_message) = match drifted {
            None => ("-".to_owned(), None),
            Some(c) => (
                match c.status.as_str() {
                    "True" => "Drifted",
                    "False" => "InSync",
                    _ => "Unknown",
                }
                .to_owned(),
                Some(c.message.clone()).filter(|m| !m.is_empty()),
            ),
        };
        let last_deploy = st.history.first().map(|r| {
            let at = r.deployed_at.clone().or_else(|| r.started_at.clone());
            LastDeploy {
                ref_: r.ref_.clone(),
                result: r.result.clone(),
                deployed_by: r.deployed_by.as_deref().map(object_name),
                requested_by: r.requested_by.clone(),
                age: age_of(at.as_deref(), now),
                at,
                waived: r.waived.clone(),
            }
        });
        EnvironmentSummary {
            name: env.metadata.name.clone().unwrap_or_default(),
            release: st.current.as_ref().map(|c| c.ref_.clone()),
            commit: st.current.as_ref().map(|c| c.commit.clone()),
            ready: ready.map_or("-".to_owned(), |c| c.status.clone()),
            ready_reason: ready.map(|c| c.reason.clone()).filter(|r| !r.is_empty()),
            health,
            health_reason,
            drift,
            drift_message,
            lock: st.active_deploy.as_deref().map(object_name),
            queue: st.queue.iter().map(|q| object_name(q)).collect(),
            quarantined: st.quarantined.iter().map(|q| format!("{} ({})", q.ref_, short(&q.commit))).collect(),
            needs_attention: st.needs_attention.as_ref().map(|a| format!("{} (since {})", a.message, a.since)),
            last_deploy,
        }
    }
}

fn ready_tone(s: &str) -> Tone {
    match s {
        "True" => Tone::Good,
        "False" => Tone::Bad,
        _ => Tone::Plain,
    }
}

fn health_tone(s: &str) -> Tone {
    match s {
        "Healthy" | "InSync" => Tone::Good,
        "Unhealthy" | "Drifted" => Tone::Bad,
        "Unknown" => Tone::Warn,
        _ => Tone::Plain,
    }
}

pub fn result_tone(result: Option<&str>) -> Tone {
    match result {
        Some("Succeeded") => Tone::Good,
        Some("Failed") | Some("Abandoned") => Tone::Bad,
        Some("Skipped") => Tone::Dim,
        _ => Tone::Plain,
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

/// `status` of several Environments: one row each, then what needs a person.
pub fn status_table(summaries: &[EnvironmentSummary], paint: Paint) -> String {
    let rows: Vec<Vec<Cell>> = summaries
        .iter()
        .map(|s| {
            let last = s
                .last_deploy
                .as_ref()
                .map_or("-".to_owned(), |l| format!("{} {}", l.ref_, l.result.as_deref().unwrap_or("?")));
            let last_tone = result_tone(s.last_deploy.as_ref().and_then(|l| l.result.as_deref()));
            vec![
                Cell::from(s.name.as_str()),
                Cell::from(or_dash(s.release.as_deref())),
                Cell::from(or_dash(s.commit.as_deref().map(short))),
                Cell::new(s.ready.clone(), ready_tone(&s.ready)),
                Cell::new(s.health.clone(), health_tone(&s.health)),
                Cell::new(s.drift.clone(), health_tone(&s.drift)),
                Cell::from(or_dash(s.lock.as_deref())),
                Cell::from(s.queue.len().to_string()),
                Cell::new(last, last_tone),
                Cell::from(or_dash(s.last_deploy.as_ref().and_then(|l| l.age.as_deref()))),
            ]
        })
        .collect();
    let mut out = table(
        &["ENVIRONMENT", "RELEASE", "COMMIT", "READY", "HEALTH", "DRIFT", "LOCK", "QUEUE", "LAST DEPLOY", "AGE"],
        &rows,
        paint,
    );
    for s in summaries {
        if let Some(a) = &s.needs_attention {
            out.push_str(&format!("{} {}: needs attention: {a}\n", paint.tone(Tone::Bad, "!"), s.name));
        }
        if !s.quarantined.is_empty() {
            out.push_str(&format!(
                "{} {}: quarantined: {}\n",
                paint.tone(Tone::Warn, "!"),
                s.name,
                s.quarantined.join(", ")
            ));
        }
    }
    out
}

/// `status ENV`: one Environment in detail.
pub fn status_detail(s: &EnvironmentSummary, paint: Paint) -> String {
    let with = |value: &str, why: Option<&str>| match why {
        Some(w) => format!("{value} ({w})"),
        None => value.to_owned(),
    };
    let release = match (&s.release, &s.commit) {
        (Some(r), Some(c)) => format!("{r} (commit {})", short(c)),
        _ => "none recorded".to_owned(),
    };
    let last = s.last_deploy.as_ref().map_or("none".to_owned(), |l| {
        let mut text =
            format!("{} {}", l.ref_, paint.tone(result_tone(l.result.as_deref()), l.result.as_deref().unwrap_or("?")));
        if let Some(by) = &l.deployed_by {
            text.push_str(&format!(" by {by}"));
        }
        if let Some(who) = &l.requested_by {
            text.push_str(&format!(", requested by {who}"));
        }
        if let Some(age) = &l.age {
            text.push_str(&format!(", {age} ago"));
        }
        if !l.waived.is_empty() {
            text.push_str(&format!(", {}", paint.tone(Tone::Warn, &waived_note(&l.waived))));
        }
        text
    });
    let queue = if s.queue.is_empty() { "empty".to_owned() } else { s.queue.join(", ") };
    let quarantined = if s.quarantined.is_empty() { "none".to_owned() } else { s.quarantined.join(", ") };
    let rows = [
        ("Environment", paint.tone(Tone::Bold, &s.name)),
        ("Release", release),
        ("Ready", paint.tone(ready_tone(&s.ready), &with(&s.ready, s.ready_reason.as_deref()))),
        ("Health", paint.tone(health_tone(&s.health), &with(&s.health, s.health_reason.as_deref()))),
        ("Drift", paint.tone(health_tone(&s.drift), &with(&s.drift, s.drift_message.as_deref()))),
        ("Lock", s.lock.clone().unwrap_or_else(|| "free".to_owned())),
        ("Queue", queue),
        ("Quarantined", quarantined),
        ("Needs attention", s.needs_attention.as_deref().map_or("no".to_owned(), |a| paint.tone(Tone::Bad, a))),
        ("Last deploy", last),
    ];
    rows.iter().map(|(k, v)| format!("{:<17}{v}\n", format!("{k}:"))).collect()
}

/// What the history's NOTE column says of a release: a Rollback's reason, a Direct deploy, the
/// gates it waived.
fn release_note(r: &Release) -> String {
    let mut notes: Vec<String> = Vec::new();
    match (&r.reason, r.untracked) {
        (Some(reason), _) => notes.push(reason.clone()),
        (None, true) => notes.push("untracked (Direct)".to_owned()),
        (None, false) => {}
    }
    if !r.waived.is_empty() {
        notes.push(waived_note(&r.waived));
    }
    notes.join("; ")
}

/// `waived CodeVolumeInProduction, NoRollbackPlan` (by the Environment's `policy.waive`).
fn waived_note(gates: &[String]) -> String {
    format!("waived {}", gates.join(", "))
}

/// `history ENV`: one row per release, newest first; `*` marks the running one.
pub fn history_table(env: &Environment, now: Timestamp, paint: Paint) -> String {
    let st = env.status.clone().unwrap_or_default();
    let current = st.current.as_ref();
    let rows: Vec<Vec<Cell>> = st
        .history
        .iter()
        .map(|r: &Release| {
            let running = current.is_some_and(|c| c.deployed_by == r.deployed_by && c.commit == r.commit);
            let at = r.deployed_at.as_deref().or(r.started_at.as_deref());
            vec![
                Cell::from(if running { "*" } else { "" }),
                Cell::from(r.ref_.as_str()),
                Cell::from(short(&r.commit)),
                Cell::new(or_dash(r.result.as_deref()), result_tone(r.result.as_deref())),
                Cell::from(or_dash(r.migration.as_deref())),
                Cell::from(or_dash(r.requested_by.as_deref())),
                Cell::from(or_dash(r.approved_by.as_deref())),
                Cell::from(or_dash(r.issue.as_deref())),
                Cell::from(or_dash(r.deployed_by.as_deref().map(object_name).as_deref())),
                Cell::from(or_dash(age_of(at, now).as_deref())),
                Cell::new(release_note(r), if r.waived.is_empty() { Tone::Plain } else { Tone::Warn }),
            ]
        })
        .collect();
    table(
        &[
            "",
            "REF",
            "COMMIT",
            "RESULT",
            "MIGRATION",
            "REQUESTED BY",
            "APPROVED BY",
            "ISSUE",
            "DEPLOYED BY",
            "AGE",
            "NOTE",
        ],
        &rows,
        paint,
    )
}

/// `logs`: a DeployRequest's or Rollback's steps, as `-o json|yaml` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepLog {
    pub kind: String,
    pub name: String,
    pub environment: String,
    pub revision: Option<String>,
    pub commit: Option<String>,
    pub phase: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// A DeployRequest rolled back automatically: the Rollback that undid it.
    pub rollback: Option<String>,
    pub steps: Vec<slipway_crds::Step>,
}

impl StepLog {
    pub fn of(kind: &str, name: &str, environment: &str, st: Option<&DeployRequestStatus>) -> StepLog {
        let st = st.cloned().unwrap_or_default();
        let ready = condition(&st.conditions, types::READY);
        StepLog {
            kind: kind.to_owned(),
            name: name.to_owned(),
            environment: environment.to_owned(),
            revision: st.revision.clone(),
            commit: st.commit.clone(),
            phase: st.phase.map(|p| p.to_string()),
            reason: ready.map(|c| c.reason.clone()),
            message: ready.map(|c| c.message.clone()),
            rollback: st.rollback.clone(),
            steps: st.steps,
        }
    }
}

fn step_result(r: Option<StepResult>) -> Option<&'static str> {
    r.map(|r| match r {
        StepResult::Succeeded => "Succeeded",
        StepResult::Failed => "Failed",
        StepResult::Skipped => "Skipped",
    })
}

/// The mark a finished (or running) step gets.
pub fn step_mark(result: Option<StepResult>) -> &'static str {
    match result {
        Some(StepResult::Succeeded) => "✓",
        Some(StepResult::Failed) => "✗",
        Some(StepResult::Skipped) => "-",
        None => "…",
    }
}

pub fn logs_text(log: &StepLog, paint: Paint) -> String {
    let mut out = format!(
        "{} {} on Environment {}: {}{}\n",
        log.kind,
        paint.tone(Tone::Bold, &log.name),
        log.environment,
        log.revision.as_deref().unwrap_or("-"),
        log.commit.as_deref().map(|c| format!(" (commit {})", short(c))).unwrap_or_default()
    );
    let phase = log.phase.as_deref().unwrap_or("Pending");
    let tone = match phase {
        "Succeeded" => Tone::Good,
        "Failed" | "RolledBack" => Tone::Bad,
        _ => Tone::Warn,
    };
    out.push_str(&format!(
        "Phase: {}{}\n",
        paint.tone(tone, phase),
        match (&log.reason, &log.message) {
            (Some(r), Some(m)) => format!(" ({r}): {m}"),
            (Some(r), None) => format!(" ({r})"),
            _ => String::new(),
        }
    ));
    if let Some(rb) = &log.rollback {
        out.push_str(&format!("Rolled back by rollback/{rb}: kubectl slipway logs rollback/{rb}\n"));
    }
    if log.steps.is_empty() {
        out.push_str("No steps ran yet.\n");
        return out;
    }
    for step in &log.steps {
        let result = step_result(step.result);
        let took = took(step.started_at.as_deref(), step.finished_at.as_deref())
            .filter(|_| step.result != Some(StepResult::Skipped));
        out.push('\n');
        out.push_str(&format!(
            "{} {:<12} {:<10} {}{}\n",
            paint.tone(result_tone(result), step_mark(step.result)),
            step.name,
            result.unwrap_or("Running"),
            step.started_at.as_deref().unwrap_or("-"),
            took.map(|t| format!("  took {t}")).unwrap_or_default(),
        ));
        if let Some(m) = step.message.as_deref().filter(|m| !m.is_empty()) {
            out.push_str(&format!("    {m}\n"));
        }
        if let Some(tail) = step.output_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            for line in tail.trim_end().lines() {
                out.push_str(&format!("    {} {line}\n", paint.tone(Tone::Dim, "|")));
            }
        }
    }
    out
}

/// `env ENV`, as `-o json|yaml` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVariables {
    pub environment: String,
    /// The commit whose `.env.example` was read.
    pub commit: String,
    /// The Environment's running commit, when it differs from `commit` (the record is older).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_commit: Option<String>,
    /// The env Secret's name.
    pub secret: Option<String>,
    pub variables: Vec<EnvVariable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVariable {
    pub name: String,
    pub present: bool,
}

impl EnvVariables {
    /// `None` when the controller has not recorded the keys yet.
    pub fn of(env: &Environment) -> Option<EnvVariables> {
        let st = env.status.as_ref()?;
        let keys = st.env_keys.as_ref()?;
        let running = st.current.as_ref().map(|c| c.commit.clone()).filter(|c| *c != keys.commit);
        Some(EnvVariables {
            environment: env.metadata.name.clone().unwrap_or_default(),
            commit: keys.commit.clone(),
            running_commit: running,
            secret: env.spec.env_secret_ref.as_ref().map(|r| r.name.clone()),
            variables: keys
                .required
                .iter()
                .map(|k| EnvVariable { name: k.clone(), present: !keys.missing.contains(k) })
                .collect(),
        })
    }
}

pub fn env_text(v: &EnvVariables, paint: Paint) -> String {
    let secret = v.secret.as_deref().map_or("(no envSecretRef)".to_owned(), |s| format!("Secret {s}"));
    let mut out = format!(
        "Environment {}: .env.example at commit {} lists {} variable{}; {}:\n",
        v.environment,
        short(&v.commit),
        v.variables.len(),
        if v.variables.len() == 1 { "" } else { "s" },
        secret
    );
    if let Some(running) = &v.running_commit {
        out.push_str(&format!(
            "{} recorded for commit {}, but the Environment runs {}: the next successful deploy records it again\n",
            paint.tone(Tone::Warn, "note:"),
            short(&v.commit),
            short(running)
        ));
    }
    if v.variables.is_empty() {
        return out;
    }
    let rows: Vec<Vec<Cell>> = v
        .variables
        .iter()
        .map(|k| {
            let (text, tone) = if k.present { ("present", Tone::Good) } else { ("missing", Tone::Bad) };
            vec![Cell::from(k.name.as_str()), Cell::new(text, tone)]
        })
        .collect();
    out.push_str(&table(&["NAME", "IN SECRET"], &rows, paint));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(status: serde_json::Value) -> Environment {
        serde_json::from_value(json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "shop"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "ssh", "key": "id_ed25519"},
                "knownHostsSecretRef": {"name": "ssh", "key": "known_hosts"},
                "envSecretRef": {"name": "shop-env"},
            },
            "status": status,
        }))
        .unwrap()
    }

    fn now() -> Timestamp {
        "2025-01-06T10:00:00Z".parse().unwrap()
    }

    fn busy() -> Environment {
        env(json!({
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "Reachable", "message": "", "lastTransitionTime": "2025-01-06T09:00:00Z"},
                {"type": "Healthy", "status": "False", "reason": "ContainerUnhealthy", "message": "backend", "lastTransitionTime": "2025-01-06T09:00:00Z"},
            ],
            "current": {"ref": "v1.1.0", "commit": "4f1c2ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f", "deployedBy": "DeployRequest/to-v1-1-0/u1"},
            "activeDeploy": "DeployRequest/to-v1-2-0/u2",
            "queue": ["Rollback/undo/u3"],
            "history": [
                {"ref": "v1.1.0", "commit": "4f1c2ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f", "result": "Succeeded",
                 "migration": "0002", "requestedBy": "alice", "issue": "#45",
                 "deployedBy": "DeployRequest/to-v1-1-0/u1", "deployedAt": "2025-01-06T09:55:00Z",
                 "waived": ["CodeVolumeInProduction", "NoRollbackPlan"]},
                {"ref": "v1.0.0", "commit": "0000000aaaa", "result": "Succeeded", "migration": "0001",
                 "deployedBy": "Rollback/undo-1/u0", "deployedAt": "2025-01-05T10:00:00Z", "reason": "5xx"},
            ],
            "quarantined": [{"commit": "badbadbadbad", "ref": "v1.3.0"}],
            "needsAttention": {"message": "rollback failed", "since": "2025-01-06T09:00:00Z"},
            "envKeys": {"commit": "4f1c2ab9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f", "required": ["A", "B"], "missing": ["B"]},
        }))
    }

    #[test]
    fn ages_read_like_kubectl() {
        let at = |s: i64| Timestamp::from_second(now().as_second() - s).unwrap();
        let cases =
            [(5, "5s"), (119, "119s"), (200, "3m20s"), (3000, "50m"), (4 * 3600 + 60, "4h1m"), (30 * 3600, "30h")];
        for (secs, want) in cases {
            assert_eq!(age(at(secs), now()), want, "{secs}s");
        }
        assert_eq!(age(at(3 * 86_400 + 3600), now()), "3d1h");
        assert_eq!(age(at(40 * 86_400), now()), "40d");
        assert_eq!(age(at(-5), now()), "0s", "a clock skew is no negative age");
        assert_eq!(took(Some("2025-01-06T10:00:00Z"), Some("2025-01-06T10:00:00.800Z")).as_deref(), Some("0.8s"));
        assert_eq!(took(Some("2025-01-06T10:00:00Z"), Some("2025-01-06T10:03:04Z")).as_deref(), Some("3m04s"));
        assert_eq!(took(Some("2025-01-06T10:00:00Z"), None), None);
    }

    #[test]
    fn a_summary_reads_every_field_the_status_shows() {
        let s = EnvironmentSummary::of(&busy(), now());
        assert_eq!(s.release.as_deref(), Some("v1.1.0"));
        assert_eq!(s.ready, "True");
        assert_eq!((s.health.as_str(), s.health_reason.as_deref()), ("Unhealthy", Some("ContainerUnhealthy")));
        assert_eq!(s.drift, "-");
        assert_eq!(s.lock.as_deref(), Some("dr/to-v1-2-0"));
        assert_eq!(s.queue, ["rollback/undo"]);
        assert_eq!(s.quarantined, ["v1.3.0 (badbadb)"]);
        assert!(s.needs_attention.as_deref().unwrap().starts_with("rollback failed"));
        let last = s.last_deploy.unwrap();
        assert_eq!((last.ref_.as_str(), last.age.as_deref()), ("v1.1.0", Some("5m0s")));
        assert_eq!(last.deployed_by.as_deref(), Some("dr/to-v1-1-0"));

        let empty = EnvironmentSummary::of(&env(json!({})), now());
        assert_eq!((empty.ready.as_str(), empty.release, empty.lock, empty.last_deploy), ("-", None, None, None));
    }

    #[test]
    fn the_status_table_shows_a_row_and_what_needs_a_person() {
        let text = status_table(&[EnvironmentSummary::of(&busy(), now())], Paint { on: false });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ENVIRONMENT   RELEASE   COMMIT    READY   HEALTH      DRIFT   LOCK           QUEUE   LAST DEPLOY        AGE"
        );
        assert_eq!(
            lines[1],
            "staging       v1.1.0    4f1c2ab   True    Unhealthy   -       dr/to-v1-1-0   1       v1.1.0 Succeeded   5m0s"
                .replace("dr/to-v1-1-0", "dr/to-v1-2-0")
        );
        assert!(lines[2].contains("staging: needs attention: rollback failed"), "{text}");
        assert_eq!(lines[3], "! staging: quarantined: v1.3.0 (badbadb)");
        let detail = status_detail(&EnvironmentSummary::of(&busy(), now()), Paint { on: false });
        assert!(detail.contains("Release:         v1.1.0 (commit 4f1c2ab)\n"), "{detail}");
        assert!(detail.contains("Health:          Unhealthy (ContainerUnhealthy)\n"), "{detail}");
        assert!(detail.contains("Lock:            dr/to-v1-2-0\n"), "{detail}");
        assert!(
            detail.contains(
                "Last deploy:     v1.1.0 Succeeded by dr/to-v1-1-0, requested by alice, 5m0s ago, waived \
                 CodeVolumeInProduction, NoRollbackPlan\n"
            ),
            "{detail}"
        );
    }

    #[test]
    fn history_marks_the_running_release() {
        let text = history_table(&busy(), now(), Paint { on: false });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("    REF      COMMIT    RESULT      MIGRATION   REQUESTED BY"), "{text}");
        assert!(lines[1].starts_with("*   v1.1.0   4f1c2ab   Succeeded   0002        alice"), "{text}");
        assert!(lines[1].contains("#45") && lines[1].contains("dr/to-v1-1-0"), "{text}");
        assert!(lines[1].ends_with("5m0s   waived CodeVolumeInProduction, NoRollbackPlan"), "{text}");
        // a Direct deploy that waived a gate says both
        let mut direct = busy();
        let history = &mut direct.status.as_mut().unwrap().history;
        history[0].untracked = true;
        let text = history_table(&direct, now(), Paint { on: false });
        assert!(
            text.lines().nth(1).unwrap().ends_with("untracked (Direct); waived CodeVolumeInProduction, NoRollbackPlan")
        );
        // a waiver stands out in colour
        let painted = history_table(&busy(), now(), Paint { on: true });
        let plain = Paint { on: true }.tone(Tone::Warn, "waived CodeVolumeInProduction, NoRollbackPlan");
        assert!(painted.contains(&plain), "{painted:?}");
        assert!(lines[2].starts_with("    v1.0.0   0000000   Succeeded   0001        -"), "{text}");
        assert!(lines[2].ends_with("rollback/undo-1   24h    5xx"), "{text}");
    }

    #[test]
    fn logs_show_each_step_with_timing_and_tail() {
        let st: DeployRequestStatus = serde_json::from_value(json!({
            "phase": "Failed", "revision": "tag v9", "commit": "4f1c2ab9d0",
            "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionNotFound",
                            "message": "tag v9 not found", "lastTransitionTime": "2025-01-06T10:00:01Z"}],
            "steps": [
                {"name": "Preflight", "startedAt": "2025-01-06T10:00:00Z", "finishedAt": "2025-01-06T10:00:01.500Z",
                 "result": "Failed", "message": "tag v9 not found", "outputTail": "fatal: bad ref\nexit 128\n"},
            ],
        }))
        .unwrap();
        let log = StepLog::of("DeployRequest", "to-v9", "staging", Some(&st));
        let text = logs_text(&log, Paint { on: false });
        assert_eq!(
            text,
            "DeployRequest to-v9 on Environment staging: tag v9 (commit 4f1c2ab)\n\
             Phase: Failed (RevisionNotFound): tag v9 not found\n\
             \n\
             ✗ Preflight    Failed     2025-01-06T10:00:00Z  took 1.5s\n    tag v9 not found\n    | fatal: bad ref\n    | exit 128\n"
        );
        let empty = logs_text(&StepLog::of("Rollback", "undo", "staging", None), Paint { on: false });
        assert!(empty.contains("Phase: Pending\n") && empty.ends_with("No steps ran yet.\n"), "{empty}");
    }

    #[test]
    fn env_marks_each_key_present_or_missing_names_only() {
        let v = EnvVariables::of(&busy()).unwrap();
        assert_eq!(
            v.variables,
            [EnvVariable { name: "A".into(), present: true }, EnvVariable { name: "B".into(), present: false }]
        );
        assert_eq!(v.running_commit, None);
        let text = env_text(&v, Paint { on: false });
        assert_eq!(
            text,
            "Environment staging: .env.example at commit 4f1c2ab lists 2 variables; Secret shop-env:\n\
             NAME   IN SECRET\nA      present\nB      missing\n"
        );
        assert!(EnvVariables::of(&env(json!({}))).is_none());
    }
}
