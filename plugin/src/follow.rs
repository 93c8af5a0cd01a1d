//! Following a DeployRequest or Rollback: what changed between two statuses (the progress
//! display), how it ended, and the exit code that says so. Pure: the watch is in `main`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use slipway_crds::conditions::{reasons, types};
use slipway_crds::{DeployRequestStatus, Phase, StepResult};

use crate::paint::{Paint, Tone};
use crate::view::{result_tone, step_mark, took};

/// Exit codes (documented in the README).
pub mod exit {
    /// Succeeded, UpToDate; or created with `--no-wait`; or any other command that answered.
    pub const OK: u8 = 0;
    /// Failed: refused by a gate or by preflight, or a step failed (nothing rolled back).
    pub const FAILED: u8 = 1;
    /// The command line is wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// A deploy failed and was rolled back to the previous release.
    pub const ROLLED_BACK: u8 = 3;
    /// A deploy failed and its automatic rollback failed too: the Environment needs a person.
    pub const ROLLBACK_FAILED: u8 = 4;
    /// `--timeout` passed while the request was still running (it carries on).
    pub const TIMED_OUT: u8 = 5;
    /// No answer: no kubeconfig, the API server unreachable or refusing, an object not found.
    pub const ERROR: u8 = 6;
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { message: String },
    UpToDate { message: String },
    Failed { reason: String, message: String },
    RolledBack { rollback: Option<String>, message: String },
    RollbackFailed { message: String },
}

fn ready(st: &DeployRequestStatus) -> Option<&Condition> {
    st.conditions.iter().find(|c| c.type_ == types::READY)
}

/// How the request ended; `None` while it has not (a request waiting for approval has not).
pub fn outcome(st: &DeployRequestStatus) -> Option<Outcome> {
    let phase = st.phase.filter(|p| p.is_terminal())?;
    let (reason, message) = ready(st).map_or((String::new(), String::new()), |c| (c.reason.clone(), c.message.clone()));
    Some(match phase {
        Phase::Succeeded if reason == reasons::UP_TO_DATE => Outcome::UpToDate { message },
        Phase::Succeeded => Outcome::Succeeded { message },
        Phase::RolledBack => Outcome::RolledBack { rollback: st.rollback.clone(), message },
        _ if reason == reasons::ROLLBACK_FAILED => Outcome::RollbackFailed { message },
        _ => Outcome::Failed { reason, message },
    })
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Succeeded { .. } | Outcome::UpToDate { .. } => exit::OK,
            Outcome::Failed { .. } => exit::FAILED,
            Outcome::RolledBack { .. } => exit::ROLLED_BACK,
            Outcome::RollbackFailed { .. } => exit::ROLLBACK_FAILED,
        }
    }

    /// The last line of the progress display, naming where to look next.
    pub fn render(&self, object: &str, elapsed: &str, paint: Paint) -> String {
        match self {
            Outcome::Succeeded { message } => {
                format!("{} after {elapsed}: {message}", paint.tone(Tone::Good, "Succeeded"))
            }
            Outcome::UpToDate { message } => {
                format!("{} after {elapsed}: {message}", paint.tone(Tone::Good, "UpToDate"))
            }
            Outcome::Failed { reason, message } => format!(
                "{} ({reason}) after {elapsed}: {message}\nsteps and output: kubectl slipway logs {object}",
                paint.tone(Tone::Bad, "Failed")
            ),
            Outcome::RolledBack { rollback, message } => {
                let next = rollback.as_deref().map_or(format!("kubectl slipway logs {object}"), |r| {
                    format!("kubectl slipway logs {object}; the rollback: kubectl slipway logs rollback/{r}")
                });
                format!("{} after {elapsed}: {message}\nsteps and output: {next}", paint.tone(Tone::Bad, "RolledBack"))
            }
            Outcome::RollbackFailed { message } => format!(
                "{} after {elapsed}: {message}\nthe Environment needs a person: kubectl slipway status; steps: \
                 kubectl slipway logs {object}",
                paint.tone(Tone::Bad, "RollbackFailed")
            ),
        }
    }
}

/// One line of the progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step finished.
    Step { name: String, result: Option<StepResult>, took: Option<String>, message: Option<String> },
    /// The request entered a phase, or says something new in it (queued behind another, waiting
    /// for approval, retrying an unreachable host).
    Progress { phase: String, reason: String, message: String, stalled: bool },
}

/// What changed from `old` to `new`, in the order it happened: finished steps first, then where
/// the request is now. Nothing for a terminal status's phase (the [`Outcome`] says it).
pub fn events(old: &DeployRequestStatus, new: &DeployRequestStatus) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, step) in new.steps.iter().enumerate() {
        let was_done = old.steps.get(i).is_some_and(|o| o.name == step.name && o.finished_at.is_some());
        if step.finished_at.is_some() && !was_done {
            out.push(Event::Step {
                name: step.name.clone(),
                result: step.result,
                took: took(step.started_at.as_deref(), step.finished_at.as_deref()),
                message: step.message.clone(),
            });
        }
    }
    if new.phase.is_some_and(Phase::is_terminal) {
        return out;
    }
    let stalled =
        |st: &DeployRequestStatus| st.conditions.iter().any(|c| c.type_ == types::STALLED && c.status == "True");
    let said = |st: &DeployRequestStatus| (st.phase, ready(st).map(|c| (c.reason.clone(), c.message.clone())));
    if said(old) != said(new)
        && let Some(c) = ready(new)
    {
        let phase = new.phase.map_or("Waiting".to_owned(), |p| p.to_string());
        out.push(Event::Progress {
            phase,
            reason: c.reason.clone(),
            message: c.message.clone(),
            stalled: stalled(new),
        });
    }
    out
}

/// One progress line, prefixed with the time since following began.
pub fn render_event(event: &Event, elapsed: &str, paint: Paint) -> String {
    let at = paint.tone(Tone::Dim, &format!("{elapsed:>6}"));
    match event {
        Event::Step { name, result, took, message } => {
            let r = result.map(|r| match r {
                StepResult::Succeeded => "Succeeded",
                StepResult::Failed => "Failed",
                StepResult::Skipped => "Skipped",
            });
            let mark = paint.tone(result_tone(r), step_mark(*result));
            let took = match result {
                Some(StepResult::Skipped) => String::new(),
                _ => took.as_deref().map(|t| format!(" in {t}")).unwrap_or_default(),
            };
            let message = message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            format!("{at} {mark} {name} {}{took}{message}", r.unwrap_or("finished"))
        }
        Event::Progress { phase, message, stalled, .. } => {
            let tone = if *stalled { Tone::Warn } else { Tone::Bold };
            format!("{at}   {} {message}", paint.tone(tone, phase))
        }
    }
}

/// Seconds as the progress display prints them: `7s`, `2m05s`.
pub fn elapsed(secs: u64) -> String {
    if secs < 60 { format!("{secs}s") } else { format!("{}m{:02}s", secs / 60, secs % 60) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> DeployRequestStatus {
        serde_json::from_value(v).unwrap()
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2025-01-06T10:00:00Z"})
    }

    #[test]
    fn outcomes_map_to_exit_codes() {
        let ended = |phase: &str, reason: &str| {
            outcome(&status(json!({"phase": phase, "conditions": [cond("Ready", "False", reason, "m")]}))).unwrap()
        };
        assert_eq!(ended("Succeeded", "Succeeded").exit_code(), 0);
        assert_eq!(ended("Succeeded", "UpToDate"), Outcome::UpToDate { message: "m".into() });
        assert_eq!(ended("Succeeded", "UpToDate").exit_code(), 0);
        assert_eq!(ended("Failed", "RevisionNotFound").exit_code(), exit::FAILED);
        assert_eq!(ended("Failed", "IssueRequired").exit_code(), exit::FAILED);
        assert_eq!(ended("RolledBack", "RolledBack").exit_code(), exit::ROLLED_BACK);
        assert_eq!(ended("Failed", "RollbackFailed").exit_code(), exit::ROLLBACK_FAILED);
        // not ended: running, queued, waiting for approval (no phase, Stalled)
        assert_eq!(outcome(&status(json!({"phase": "Verifying"}))), None);
        assert_eq!(outcome(&status(json!({"phase": "Queued"}))), None);
        let awaiting = json!({"conditions": [cond("Stalled", "True", "ApprovalRequired", "approve it")]});
        assert_eq!(outcome(&status(awaiting)), None);
        let text = ended("Failed", "RevisionNotFound").render("dr/x", "3s", Paint { on: false });
        assert_eq!(text, "Failed (RevisionNotFound) after 3s: m\nsteps and output: kubectl slipway logs dr/x");
    }

    #[test]
    fn events_report_finished_steps_then_the_new_phase() {
        let queued = status(json!({"phase": "Queued", "queuePosition": 1,
            "conditions": [cond("Ready", "False", "Queued", "Queued (position 1): dr a holds its lock")]}));
        let preflight = status(json!({"phase": "Preflight",
            "conditions": [cond("Ready", "False", "Preflight", "Checking tag v1")],
            "steps": [{"name": "Preflight", "startedAt": "2025-01-06T10:00:00Z"}]}));
        let migrating = status(json!({"phase": "Migrating",
            "conditions": [cond("Ready", "False", "Migrating", "Migrating the database")],
            "steps": [{"name": "Preflight", "startedAt": "2025-01-06T10:00:00Z", "finishedAt": "2025-01-06T10:00:02Z",
                       "result": "Succeeded", "message": "tag v1 is commit abc1234"},
                      {"name": "Migrating", "startedAt": "2025-01-06T10:00:02Z"}]}));
        let start = DeployRequestStatus::default();
        assert_eq!(
            events(&start, &queued),
            [Event::Progress {
                phase: "Queued".into(),
                reason: "Queued".into(),
                message: "Queued (position 1): dr a holds its lock".into(),
                stalled: false
            }]
        );
        assert_eq!(events(&queued, &queued), []);
        assert!(matches!(&events(&queued, &preflight)[..], [Event::Progress { phase, .. }] if phase == "Preflight"));
        let e = events(&preflight, &migrating);
        assert_eq!(
            e[0],
            Event::Step {
                name: "Preflight".into(),
                result: Some(StepResult::Succeeded),
                took: Some("2.0s".into()),
                message: Some("tag v1 is commit abc1234".into())
            }
        );
        assert!(matches!(&e[1], Event::Progress { phase, .. } if phase == "Migrating"));
        // a watch that skipped states still reports every step that finished, once
        assert_eq!(events(&start, &migrating).len(), 2);
        assert_eq!(events(&migrating, &migrating), []);
        let lines: Vec<String> = e.iter().map(|e| render_event(e, "2s", Paint { on: false })).collect();
        assert_eq!(
            lines,
            [
                "    2s ✓ Preflight Succeeded in 2.0s: tag v1 is commit abc1234",
                "    2s   Migrating Migrating the database"
            ]
        );
    }

    #[test]
    fn waiting_for_approval_is_reported_as_stalled_and_an_end_only_by_its_steps() {
        let awaiting = status(json!({"conditions": [
            cond("Ready", "False", "ApprovalRequired", "an approver runs kubectl annotate ..."),
            cond("Stalled", "True", "ApprovalRequired", "an approver runs kubectl annotate ...")]}));
        let e = events(&DeployRequestStatus::default(), &awaiting);
        assert!(matches!(&e[..], [Event::Progress { phase, stalled: true, .. }] if phase == "Waiting"), "{e:?}");
        let failed = status(json!({"phase": "Failed",
            "conditions": [cond("Ready", "False", "RevisionNotFound", "no tag")],
            "steps": [{"name": "Preflight", "startedAt": "2025-01-06T10:00:00Z", "finishedAt": "2025-01-06T10:00:01Z",
                       "result": "Failed", "message": "no tag"}]}));
        let e = events(&DeployRequestStatus::default(), &failed);
        assert!(matches!(&e[..], [Event::Step { result: Some(StepResult::Failed), .. }]), "{e:?}");
    }

    #[test]
    fn elapsed_reads_short() {
        assert_eq!(elapsed(7), "7s");
        assert_eq!(elapsed(125), "2m05s");
    }
}
