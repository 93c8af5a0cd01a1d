//! The status objects the health checks for GitOps tools are tested on (tools/health: Argo CD's
//! Lua scripts under gopher-lua, and kstatus), recorded from the controller's own condition
//! builders for every phase and Environment observation, so they cannot drift from what the
//! controller writes. `SLIPWAY_UPDATE_FIXTURES=1 cargo test -p slipway-controller --test
//! health_fixtures` rewrites the file; otherwise this test fails when it differs.

use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use slipway_controller::conditions;
use slipway_controller::deploy::plan::conditions_for;
use slipway_controller::environment::{Observation, decide};
use slipway_controller::references::Problem;
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployRequest, DeployRequestStatus, Environment, Phase};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/health/testdata/objects.json");

fn now() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn meta(name: &str, generation: i64) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("shop".into()),
        generation: Some(generation),
        ..Default::default()
    }
}

/// A DeployRequest (a Rollback has the same status shape) in `phase` with Ready's `reason`.
fn request(kind: &str, name: &str, phase: Phase, reason: &'static str, observed: i64) -> Value {
    let message = format!("{} ({reason})", phase.as_str());
    let status = DeployRequestStatus {
        observed_generation: Some(observed),
        phase: Some(phase),
        conditions: conditions::set(&[], &conditions_for(phase, reason, message), Some(observed), now()),
        ..Default::default()
    };
    let mut dr = DeployRequest::new(
        name,
        serde_json::from_value(json!({"environment": "staging", "revision": {"tag": "v1.2.3"}})).unwrap(),
    );
    dr.metadata = meta(name, 1);
    dr.status = Some(status);
    let mut value = serde_json::to_value(dr).unwrap();
    value["kind"] = json!(kind);
    value
}

fn environment(name: &str, observed: Option<&Observation>) -> Value {
    let mut env: Environment = serde_json::from_value(json!({
        "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment", "metadata": {"name": name},
        "spec": {"tier": "staging", "host": {"address": "10.0.0.5", "user": "deploy", "path": "/srv/shop"},
                 "sshKeySecretRef": {"name": "ssh", "key": "id_ed25519"},
                 "knownHostsSecretRef": {"name": "ssh", "key": "known_hosts"}}
    }))
    .unwrap();
    env.metadata = meta(name, 1);
    if let Some(observed) = observed {
        env.status = Some(decide(&env, observed, now()).0);
    }
    serde_json::to_value(env).unwrap()
}

fn problem(reason: &'static str) -> Problem {
    Problem { reason, message: format!("{reason}: what to fix") }
}

fn recorded() -> Value {
    let mut objects = serde_json::Map::new();
    let mut put = |name: &str, value: Value| assert!(objects.insert(name.to_owned(), value).is_none(), "{name} twice");

    put("environment-new", environment("new", None));
    put("environment-reachable", environment("reachable", Some(&Observation::Reachable)));
    put(
        "environment-unreachable",
        environment(
            "unreachable",
            Some(&Observation::Unreachable { problem: problem("Unreachable"), transient: true }),
        ),
    );
    put(
        "environment-host-key-mismatch",
        environment(
            "host-key-mismatch",
            Some(&Observation::Unreachable { problem: problem("HostKeyMismatch"), transient: false }),
        ),
    );
    put(
        "environment-secret-not-found",
        environment(
            "secret-not-found",
            Some(&Observation::MissingReferences(vec![problem(reasons::SECRET_NOT_FOUND)])),
        ),
    );

    for kind in ["DeployRequest", "Rollback"] {
        let k = kind.to_ascii_lowercase();
        let mut new = request(kind, "new", Phase::Queued, reasons::QUEUED, 1);
        new.as_object_mut().unwrap().remove("status");
        put(&format!("{k}-new"), new);
        let running = [
            (Phase::Queued, reasons::QUEUED),
            (Phase::Queued, reasons::HOST_BUSY),
            (Phase::Queued, reasons::OUTSIDE_DEPLOY_WINDOW),
            (Phase::Preflight, reasons::PREFLIGHT),
            (Phase::Migrating, reasons::MIGRATING),
            (Phase::Downgrading, reasons::DOWNGRADING),
            (Phase::Rebuilding, reasons::REBUILDING),
            (Phase::Verifying, reasons::VERIFYING),
            (Phase::RollingBack, reasons::ROLLING_BACK),
            (Phase::Restarting, reasons::RESTARTING),
            (Phase::Baking, reasons::BAKING),
            (Phase::Rehearsing, reasons::REHEARSING),
        ];
        for (phase, reason) in running {
            put(&format!("{k}-{}-{reason}", phase.as_str()), request(kind, "running", phase, reason, 1));
        }
        put(&format!("{k}-Succeeded"), request(kind, "done", Phase::Succeeded, reasons::SUCCEEDED, 1));
        put(&format!("{k}-Succeeded-UpToDate"), request(kind, "done", Phase::Succeeded, reasons::UP_TO_DATE, 1));
        for reason in [
            reasons::ISSUE_REQUIRED,
            reasons::ENVIRONMENT_NOT_FOUND,
            reasons::ENV_KEYS_MISSING,
            reasons::MIGRATION_FAILED,
            reasons::REBUILD_FAILED,
            reasons::VERIFICATION_FAILED,
            reasons::ROLLBACK_FAILED,
            reasons::ENVIRONMENT_DELETED,
            reasons::SECRET_IN_COMPOSE,
            reasons::LOG_ERRORS_FOUND,
            reasons::RESTART_FAILED,
            reasons::BAKE_FAILED,
            reasons::URL_NOT_ALLOWED,
            reasons::REHEARSAL_FAILED,
            reasons::ROLLBACK_NOT_TESTED,
        ] {
            put(&format!("{k}-Failed-{reason}"), request(kind, "failed", Phase::Failed, reason, 1));
        }
        put(&format!("{k}-RolledBack"), request(kind, "rolled-back", Phase::RolledBack, reasons::ROLLED_BACK, 1));
        // A status for an older generation: the controller has not seen the latest spec yet.
        let mut stale = request(kind, "stale", Phase::Succeeded, reasons::SUCCEEDED, 1);
        stale["metadata"]["generation"] = json!(2);
        put(&format!("{k}-Succeeded-stale-generation"), stale);
    }
    Value::Object(objects)
}

#[test]
fn health_fixtures_are_what_the_controller_writes() {
    let text = serde_json::to_string_pretty(&recorded()).unwrap() + "\n";
    if std::env::var_os("SLIPWAY_UPDATE_FIXTURES").is_some() {
        std::fs::create_dir_all(std::path::Path::new(FIXTURES).parent().unwrap()).unwrap();
        std::fs::write(FIXTURES, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(FIXTURES).unwrap_or_default();
    assert!(
        committed == text,
        "{FIXTURES} differs from the controller's conditions: run SLIPWAY_UPDATE_FIXTURES=1 cargo test -p \
         slipway-controller --test health_fixtures, then extend the tables in tools/health"
    );
}
