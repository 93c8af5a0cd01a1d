//! What a DeployRequest's status should be, decided from what was observed. Pure: no I/O.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use slipway_crds::conditions::reasons;
#[cfg(test)]
use slipway_crds::conditions::types;
use slipway_crds::{DeployRequest, DeployRequestStatus, Environment, Phase};

use crate::Transition;
use crate::conditions;
use crate::references;

pub struct Decision {
    pub status: DeployRequestStatus,
    /// An Event to record, when the Ready condition changed its reason.
    pub transition: Option<Transition>,
}

pub fn decide(dr: &DeployRequest, environment: Option<&Environment>, now: Timestamp) -> Decision {
    let old = dr.status.clone().unwrap_or_default();
    if old.phase.is_some_and(Phase::is_terminal) {
        return Decision { status: old, transition: None };
    }
    let env_name = &dr.spec.environment;
    let namespace = dr.namespace().unwrap_or_default();
    let mut status = old.clone();
    status.revision = Some(dr.spec.revision.display());
    status.observed_generation = dr.metadata.generation;

    let (decided, event_type) = match environment {
        None => (
            references::stalled(&references::environment_not_found("DeployRequest", env_name, &namespace)),
            EventType::Warning,
        ),
        Some(_) => {
            status.phase = Some(Phase::Queued);
            let message = format!("Queued for Environment {env_name:?}: waiting for its deploy lock");
            (references::progressing(reasons::QUEUED, message), EventType::Normal)
        }
    };
    status.conditions = conditions::set(&old.conditions, &decided, dr.metadata.generation, now);
    let transition = Transition::between(&old.conditions, &status.conditions, event_type);
    Decision { status, transition }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_crds::{DeployRequestSpec, Revision};

    fn request() -> DeployRequest {
        let mut dr = DeployRequest::new(
            "shop-45",
            DeployRequestSpec {
                environment: "staging".into(),
                revision: Revision { tag: Some("v1.2.3".into()), ..Default::default() },
                issue: Some("#45".into()),
                mode: Default::default(),
                force: false,
            },
        );
        dr.metadata.namespace = Some("team".into());
        dr.metadata.generation = Some(1);
        dr
    }

    fn environment() -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"}
            }
        }))
        .unwrap()
    }

    fn ready(status: &DeployRequestStatus) -> (&str, &str) {
        let c = conditions::find(&status.conditions, types::READY).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn missing_environment_is_reported_and_stalls() {
        let d = decide(&request(), None, Timestamp::now());
        assert_eq!(ready(&d.status), ("False", reasons::ENVIRONMENT_NOT_FOUND));
        assert_eq!(d.status.phase, None);
        assert_eq!(d.status.revision.as_deref(), Some("tag v1.2.3"));
        let stalled = conditions::find(&d.status.conditions, types::STALLED).unwrap();
        assert_eq!(stalled.status, "True");
        assert!(stalled.message.contains("\"staging\" not found in namespace \"team\""));
        let t = d.transition.expect("first observation records an event");
        assert_eq!(t.reason, reasons::ENVIRONMENT_NOT_FOUND);
        assert_eq!(t.type_, EventType::Warning);
    }

    #[test]
    fn existing_environment_queues() {
        let d = decide(&request(), Some(&environment()), Timestamp::now());
        assert_eq!(d.status.phase, Some(Phase::Queued));
        assert_eq!(ready(&d.status), ("False", reasons::QUEUED));
        assert_eq!(d.status.observed_generation, Some(1));
    }

    #[test]
    fn deciding_again_changes_nothing_and_records_no_event() {
        let mut dr = request();
        let first = decide(&dr, Some(&environment()), Timestamp::now());
        dr.status = Some(first.status.clone());
        let second = decide(&dr, Some(&environment()), Timestamp::now());
        assert_eq!(second.status, first.status);
        assert!(second.transition.is_none());
    }

    #[test]
    fn terminal_requests_are_left_alone() {
        let mut dr = request();
        dr.status = Some(DeployRequestStatus { phase: Some(Phase::Succeeded), ..Default::default() });
        let d = decide(&dr, None, Timestamp::now());
        assert_eq!(d.status.phase, Some(Phase::Succeeded));
        assert!(d.status.conditions.is_empty());
        assert!(d.transition.is_none());
    }
}
