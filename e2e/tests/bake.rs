//! The bake period after a production deploy (`health.bakeSeconds`), as a user meets it: the
//! DeployRequest shows `Baking` and until when, keeps the Environment's lock while the checks keep
//! running, survives a controller restart without starting the window again, succeeds only once
//! the window passed, and a failure inside the window rolls the deploy back.

use std::time::{Duration, Instant};

use serde_json::json;
use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest, rfc3339_nanos};
use slipway_e2e::require_sandbox;

const SECOND: i128 = 1_000_000_000;

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_production_deploy_bakes_until_its_recorded_end_and_a_failure_while_baking_rolls_it_back() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "bake").unwrap();
    let site = t.site(1, "bake").unwrap();
    let mut env = EnvironmentManifest::new("prod", App::Ticker, &site);
    env.gates.auto_rollback = true;
    env.health_interval_seconds = Some(1);
    t.create_environment(&env).unwrap();
    // production by its tier, a short bake for the first release
    t.patch_environment("prod", &json!({"spec": {"tier": "production", "health": {"bakeSeconds": 6}}})).unwrap();

    // A bake that passes: Succeeded only once the window passed, recorded as today.
    t.deploy(&DeployRequestManifest::tag("first", "prod", "ticker-v1")).unwrap();
    let baking = t.wait_phase("first", "Baking", DEPLOY_TIMEOUT).unwrap();
    let until = rfc3339_nanos(baking.bake_until.as_deref().expect("status.bakeUntil while Baking")).unwrap();
    let verified = baking.require_step("Verifying").unwrap().finished().unwrap();
    assert_eq!((until - verified) / SECOND, 6, "bakeUntil is 6 s after verification passed");
    let status = t.wait_finished("first", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(status.ready_reason(), "Succeeded", "{}", t.describe("first"));
    assert!(status.ready_message().contains("through its 6s bake period"), "{}", status.ready_message());
    let baked = status.require_step("Baking").unwrap();
    assert!(baked.finished().unwrap() >= until, "succeeded before the window passed");
    assert_eq!(status.condition_status("Baked"), "True");
    let env_status = t.environment("prod").unwrap().status;
    assert_eq!(env_status.history_refs(), ["ticker-v1"]);
    let v1 = site.commit_of("ticker-v1").unwrap();
    // Verification and the bake's rounds (about one a second) judge against the compose model
    // the first of them read: nothing it was read from changed on the host meanwhile.
    let (host, cache) = t.by_source("slipway_deploy_compose_config_total");
    assert!(
        cache >= 4 && host <= 1 + (host + cache) / 10,
        "compose config ran {host} times, its copy served {cache} rounds"
    );
    // ... once an interval, not back to back each time a round's status write wakes the request
    let verifying = status.require_step("Verifying").unwrap();
    let verify_s = (verifying.finished().unwrap() - verifying.started().unwrap()) / SECOND;
    assert!(
        host + cache <= 6 + verify_s as u64 + 4,
        "{} rounds in {verify_s}s of verification and 6s of baking",
        host + cache
    );

    // A longer bake: the request holds the lock, shows Baking in `kubectl get`, and continues
    // to its recorded end after a controller restart.
    t.patch_environment("prod", &json!({"spec": {"health": {"bakeSeconds": 120}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("second", "prod", "ticker-v2")).unwrap();
    let baking = t.wait_phase("second", "Baking", DEPLOY_TIMEOUT).unwrap();
    let until = baking.bake_until.clone().unwrap();
    assert!(baking.ready_message().contains(&format!("until {until}")), "{}", baking.ready_message());
    let row = t.cluster.kubectl_ok(&["get", "dr", "second", "--no-headers"]).unwrap();
    assert!(row.split_whitespace().any(|c| c == "Baking"), "kubectl get dr shows the phase: {row}");
    let described = t.cluster.kubectl_ok(&["describe", "dr", "second"]).unwrap();
    assert!(described.contains("Bake Until:") && described.contains(&until), "{described}");
    let holder = t.cluster.jsonpath("env/prod", "{.status.activeDeploy}").unwrap();
    assert!(holder.starts_with("DeployRequest/second/"), "the lock stays held while baking: {holder}");

    t.cluster.kill_controller().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    t.cluster.start_controller().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let resumed = t.deploy_request("second").unwrap().status;
    assert_eq!(resumed.phase(), "Baking", "{}", t.describe("second"));
    assert_eq!(resumed.bake_until.as_deref(), Some(until.as_str()), "a restarted controller kept the window");
    assert_eq!(resumed.step_count("Baking"), 1);

    // Stopped by hand during the bake: the deploy fails BakeFailed and is rolled back to v1.
    let stopped_at = Instant::now();
    let id = site.container("ticker").unwrap();
    site.run(&["docker", "stop", &id]).unwrap();
    let status = t.wait_finished("second", DEPLOY_TIMEOUT).unwrap();
    assert!(stopped_at.elapsed() < Duration::from_secs(110), "the failure was noticed inside the window");
    assert_eq!(status.phase(), "RolledBack", "{}", t.describe("second"));
    let failed = status.require_step("Baking").unwrap();
    let message = failed.message.clone().unwrap_or_default();
    assert!(message.contains("bake period") && message.contains("service ticker"), "{message}");
    assert!(status.ready_message().contains("Baking failed"), "{}", status.ready_message());
    let rollback = status.rollback.clone().expect("rolled back by a Rollback");
    let rb = t.request("rollback", &rollback).unwrap().status;
    assert_eq!(rb.phase(), "Succeeded", "{}", t.describe_request("rollback", &rollback));
    assert!(!rb.ran("Baking"), "a Rollback does not bake");
    assert_eq!(site.head().unwrap(), v1, "the host runs the previous release again");
    assert_eq!(site.container_ids().unwrap().len(), 1, "the rollback started the service again");
    let history = t.environment("prod").unwrap().status;
    assert_eq!(history.history_refs()[..2], ["ticker-v1", "ticker-v2"], "{:?}", history.history_refs());
    let events = t.cluster.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=second"]).unwrap();
    assert!(events.contains("BakeFailed"), "an Event says why it rolled back: {events}");
}
