//! Rollback end to end, as a user sees it with kubectl: a Rollback returns an Environment to an
//! earlier release with its database downgraded first, refuses before touching anything when it
//! cannot downgrade, survives a controller killed mid-downgrade, and shares the queue with
//! DeployRequests; a DeployRequest that fails after migrating is rolled back automatically and
//! its commit quarantined.
//!
//! Each test has its own namespace, controller and compose projects (`swt-...`), so they run in
//! parallel with the deploy tests; fixture releases in e2e/fixtures/shop-releases/README.md.

use std::time::{Duration, Instant};

use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployStatus, DeployTest, EnvironmentManifest, REFUSAL_TIMEOUT,
    ROLLBACK, ROLLBACK_STEPS, RollbackManifest, Site,
};
use slipway_e2e::require_sandbox;

/// Does `items` have the column `column`?
fn has_column(site: &Site, column: &str) -> bool {
    let sql = format!(
        "select count(*) from information_schema.columns where table_name = 'items' and column_name = '{column}'"
    );
    site.psql(&sql).unwrap() == "1"
}

fn alembic_version(site: &Site) -> String {
    site.psql("select version_num from alembic_version").unwrap()
}

/// Every step of a rollback ran in order and succeeded (the downgrade may be `Skipped`).
fn assert_rollback_steps(name: &str, status: &DeployStatus, downgraded: bool) {
    let names: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ROLLBACK_STEPS, "{name}: {:#?}", status.steps);
    for step in &status.steps {
        let ok = if step.name == "Downgrading" && !downgraded {
            step.result.as_deref() == Some("Skipped")
        } else {
            step.succeeded()
        };
        assert!(ok, "{name}: step {}: {step:#?}", step.name);
    }
}

fn assert_all_healthy(site: &Site) {
    let health = site.health_by_service().unwrap();
    assert_eq!(health.keys().map(String::as_str).collect::<Vec<_>>(), ["backend", "db", "frontend"], "{health:?}");
    assert!(health.values().all(|h| h == "healthy"), "{health:?}");
}

/// Deploys `tags` one after another, each to Succeeded.
fn deploy_all(t: &DeployTest, env: &str, tags: &[&str]) {
    for tag in tags {
        let name = format!("to-{}", tag.replace('.', "-"));
        t.deploy(&DeployRequestManifest::tag(&name, env, tag)).unwrap();
        t.expect_outcome(&name, "Succeeded", DEPLOY_TIMEOUT).unwrap();
    }
}

// 1. back to the previous release, database included ------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn rollback_to_previous_downgrades_the_database_first_and_runs_the_old_code() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-previous").unwrap();
    let site = t.site(1, "rbprev").unwrap();
    t.create_environment(&EnvironmentManifest::new("staging", App::Shop, &site)).unwrap();
    deploy_all(&t, "staging", &["v1.0.0", "v1.1.0"]);
    assert!(has_column(&site, "description"));
    let recorded_v100 = t.environment("staging").unwrap().status.history[1].clone();
    assert_eq!(recorded_v100.ref_, "v1.0.0");

    let start = Instant::now();
    t.rollback(&RollbackManifest::previous("undo-1-1", "staging")).unwrap();
    let done = t.expect_request_outcome(ROLLBACK, "undo-1-1", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    println!("rollback v1.1.0 -> v1.0.0 Ready after {:?}", start.elapsed());
    assert_rollback_steps("undo-1-1", &done, true);
    assert_eq!(done.condition_status("Ready"), "True");
    assert_eq!(done.condition_status("Downgraded"), "True", "{done:#?}");
    let v100 = site.commit_of("v1.0.0").unwrap();
    assert_eq!(done.commit.as_deref(), Some(v100.as_str()));
    assert_eq!(done.previous_commit.as_deref(), Some(site.commit_of("v1.1.0").unwrap().as_str()));

    // the database went back to the revision recorded with v1.0.0, and the v1.0.0 code serves
    assert!(!has_column(&site, "description"), "the v1.1.0 column is still there");
    assert_eq!(Some(alembic_version(&site)), recorded_v100.migration, "alembic current vs v1.0.0's record");
    assert_eq!(site.head().unwrap(), v100);
    assert_eq!(site.exec("backend", &["cat", "/app/VERSION"]).unwrap_or_default().trim(), "1.0.0");
    assert!(site.backend_get("/api/items/1").is_err(), "v1.0.0 has no GET /api/items/{{id}}");
    assert_all_healthy(&site);

    // the Environment: v1.0.0 again, made by the Rollback, three entries in history
    let env = t.environment("staging").unwrap().status;
    let current = env.current.clone().unwrap();
    assert_eq!(current.ref_, "v1.0.0");
    assert!(current.deployed_by.as_deref().unwrap_or("").starts_with("Rollback/undo-1-1/"), "{current:#?}");
    assert_eq!(current.reason.as_deref(), Some("5xx after the release (e2e)"));
    assert_eq!(env.history_refs(), ["v1.0.0", "v1.1.0", "v1.0.0"], "{:#?}", env.history);
    assert!(env.active_deploy.is_none(), "{env:#?}");
    assert_eq!(current.requested_by, Some(t.cluster.user().unwrap()), "who asked is recorded: {current:#?}");
    let table = t.cluster.kubectl_ok(&["get", "rollback", "undo-1-1"]).unwrap();
    assert!(table.contains("previous release") && table.contains("Succeeded"), "{table}");

    // who asked is a fact: the API server refuses a Rollback in someone else's name, and one
    // posing as an automatic rollback (owned by a DeployRequest, which would skip the queue)
    let mut forged = RollbackManifest::previous("forged", "staging");
    forged.requested_by = Some("mallory".into());
    let denied = t.cluster.refused(&forged.to_json().to_string()).unwrap();
    assert!(denied.contains("requested-by must be the user creating"), "{denied}");
    let owner = t.get_json(&["deployrequest/to-v1-1-0"]).unwrap().remove(0);
    forged.requested_by = Some(t.cluster.user().unwrap());
    let mut owned = forged.to_json();
    owned["metadata"]["ownerReferences"] = serde_json::json!([{
        "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest", "name": "to-v1-1-0",
        "uid": owner["metadata"]["uid"], "controller": true
    }]);
    let denied = t.cluster.refused(&owned.to_string()).unwrap();
    assert!(denied.contains("only the Slipway controller makes a Rollback owned by a DeployRequest"), "{denied}");
}

// 2. automatic rollback and quarantine --------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_release_that_migrates_then_fails_verification_is_rolled_back_and_quarantined() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-auto").unwrap();
    let site = t.site(2, "rbauto").unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Shop, &site);
    env.gates.auto_rollback = true;
    env.health_timeout_seconds = 30;
    t.create_environment(&env).unwrap();
    deploy_all(&t, "staging", &["v1.1.0"]);
    let v110 = site.commit_of("v1.1.0").unwrap();
    let v150 = site.commit_of("v1.5.0").unwrap();

    t.deploy(&DeployRequestManifest::tag("bad", "staging", "v1.5.0")).unwrap();
    // a request waiting behind it must not slip in between the failure and the rollback
    t.wait_phase("bad", "Migrating", DEPLOY_TIMEOUT).unwrap();
    t.deploy(&DeployRequestManifest::tag("behind", "staging", "v1.1.0")).unwrap();
    let ended = t.expect_outcome("bad", "RolledBack", DEPLOY_TIMEOUT * 2).unwrap();
    // it never reports success: RolledBack, Ready False, Stalled True, quoting the failing check
    assert_eq!(ended.phase(), "RolledBack", "{ended:#?}");
    assert_eq!(ended.condition_status("Ready"), "False");
    assert_eq!(ended.condition_status("Stalled"), "True");
    assert!(ended.ready_message().contains("check backend"), "{}", ended.ready_message());
    assert!(ended.require_step("Migrating").unwrap().succeeded(), "{:#?}", ended.steps);
    assert_eq!(ended.require_step("Verifying").unwrap().result.as_deref(), Some("Failed"));
    let rollback = ended.rollback.clone().expect("status.rollback names the Rollback");
    assert!(ended.ready_message().contains(&rollback), "{}", ended.ready_message());

    // the Rollback is owned by the request and ran: database first, then the old release
    let rb = t.get_json(&[&format!("rollback/{rollback}")]).unwrap().remove(0);
    let bad_uid = t.deploy_request("bad").unwrap().uid;
    let owner = &rb["metadata"]["ownerReferences"][0];
    assert_eq!((owner["name"].as_str(), owner["uid"].as_str()), (Some("bad"), Some(bad_uid.as_str())), "{rb:#}");
    assert_eq!(owner["controller"], true, "{rb:#}");
    let rb_status = t.request(ROLLBACK, &rollback).unwrap().status;
    assert_rollback_steps(&rollback, &rb_status, true);
    assert_eq!(rb_status.commit.as_deref(), Some(v110.as_str()));
    assert!(!has_column(&site, "color"), "migration 0005 was not downgraded");
    assert_eq!(alembic_version(&site), "0002");
    assert_eq!(site.head().unwrap(), v110);
    assert_all_healthy(&site);
    let status = t.environment("staging").unwrap().status;
    assert_eq!(status.current.as_ref().map(|c| c.commit.as_str()), Some(v110.as_str()));
    assert_eq!(status.quarantined.len(), 1, "{status:#?}");
    assert_eq!(status.quarantined[0]["commit"], v150.as_str());
    let wide = t.cluster.kubectl_ok(&["get", "environment", "staging", "-o", "wide"]).unwrap();
    assert!(wide.contains("QUARANTINED") && wide.contains("v1.5.0"), "{wide}");
    // the waiting request ran only after the rollback: the lock went from the failed deploy
    // straight to its Rollback
    let behind = t.expect_outcome("behind", "UpToDate", DEPLOY_TIMEOUT).unwrap();
    let rolled_back_at = rb_status.steps.iter().map(|s| s.finished().unwrap()).max().unwrap();
    let behind_started = behind.steps.iter().map(|s| s.started().unwrap()).min().unwrap();
    assert!(rolled_back_at <= behind_started, "{behind:#?}\n{rb_status:#?}");
    let status = t.environment("staging").unwrap().status;
    assert!(status.active_deploy.is_none() && status.queue.is_empty(), "{status:#?}");

    // a GitOps repo still naming v1.5.0 does not deploy it again ...
    t.deploy(&DeployRequestManifest::tag("bad-again", "staging", "v1.5.0")).unwrap();
    let refused = t.expect_outcome("bad-again", "Quarantined", REFUSAL_TIMEOUT).unwrap();
    assert!(refused.ready_message().contains("overrideQuarantine"), "{}", refused.ready_message());
    assert!(refused.steps.is_empty(), "refused before the queue: {:#?}", refused.steps);
    // ... unless a person overrides it
    t.deploy(&DeployRequestManifest::tag("bad-override", "staging", "v1.5.0").overriding_quarantine()).unwrap();
    let passed = t.wait_phase("bad-override", "Migrating", DEPLOY_TIMEOUT).unwrap();
    assert!(passed.require_step("Preflight").unwrap().succeeded(), "{passed:#?}");
}

// 3. no downgrade path ------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn without_a_downgrade_command_a_rollback_is_refused_untouched_unless_migrations_are_skipped() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-nopath").unwrap();
    let site = t.site(3, "rbnopath").unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Shop, &site);
    env.downgrade = false;
    t.create_environment(&env).unwrap();
    deploy_all(&t, "staging", &["v1.0.0", "v1.1.0"]);
    let containers = site.container_ids().unwrap();

    t.rollback(&RollbackManifest::previous("refused", "staging")).unwrap();
    let refused = t.expect_request_outcome(ROLLBACK, "refused", "NoDowngradePath", REFUSAL_TIMEOUT).unwrap();
    assert_eq!(refused.condition_status("Stalled"), "True");
    assert!(refused.ready_message().contains("migrations: Skip"), "{}", refused.ready_message());
    assert!(refused.steps.is_empty(), "refused before anything ran: {:#?}", refused.steps);
    assert_eq!(site.container_ids().unwrap(), containers, "the host changed");
    assert_eq!(site.head().unwrap(), site.commit_of("v1.1.0").unwrap());
    assert!(has_column(&site, "description"));

    t.rollback(&RollbackManifest::previous("skipping", "staging").skipping_migrations()).unwrap();
    let done = t.expect_request_outcome(ROLLBACK, "skipping", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_rollback_steps("skipping", &done, false);
    assert_eq!(site.head().unwrap(), site.commit_of("v1.0.0").unwrap());
    assert!(has_column(&site, "description"), "migrations: Skip leaves the database as it is");
    assert_eq!(alembic_version(&site), "0002");
    assert_all_healthy(&site);
}

// 4. the controller killed during a downgrade -------------------------------------------------

fn downgrade_runs(site: &Site) -> Option<String> {
    site.psql("select n from downgrade_runs").ok()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn controller_killed_while_downgrading_resumes_without_running_the_downgrade_twice() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-crash").unwrap();
    let site = t.site(1, "rbcrash").unwrap();
    t.create_environment(&EnvironmentManifest::new("staging", App::Shop, &site)).unwrap();
    deploy_all(&t, "staging", &["v1.1.0", "v1.4.0"]);
    assert_eq!(alembic_version(&site), "0004");

    t.rollback(&RollbackManifest::previous("slow-undo", "staging")).unwrap();
    t.wait_request_phase(ROLLBACK, "slow-undo", "Downgrading", DEPLOY_TIMEOUT).unwrap();
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    while downgrade_runs(&site).as_deref() != Some("1") {
        assert!(
            Instant::now() < deadline,
            "the 0004 downgrade never started\n{}",
            t.describe_request(ROLLBACK, "slow-undo")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = t.request(ROLLBACK, "slow-undo").unwrap().status;
    assert_eq!(before.phase(), "Downgrading", "{before:#?}");
    let killed_log = t.cluster.kill_controller().unwrap();
    println!("controller killed while downgrading; its log: {}", killed_log.display());
    std::thread::sleep(Duration::from_secs(1));
    t.cluster.start_controller().unwrap();

    let done = t.expect_request_outcome(ROLLBACK, "slow-undo", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_rollback_steps("slow-undo", &done, true);
    assert_eq!(done.step_count("Downgrading"), 1, "{:#?}", done.steps);
    assert_eq!(downgrade_runs(&site).as_deref(), Some("1"), "the downgrade ran more than once");
    assert_eq!(alembic_version(&site), "0002");
    assert_eq!(site.head().unwrap(), site.commit_of("v1.1.0").unwrap());
    assert_all_healthy(&site);
    let env = t.environment("staging").unwrap().status;
    assert_eq!(env.current.map(|c| c.ref_).as_deref(), Some("v1.1.0"));
    assert!(env.active_deploy.is_none(), "the resumed rollback released the lock");
}

// 5. one queue for both kinds -----------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_deploy_request_and_a_rollback_for_one_environment_run_one_after_the_other() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-queue").unwrap();
    let site = t.site(2, "rbqueue").unwrap();
    t.create_environment(&EnvironmentManifest::new("ticker", App::Ticker, &site)).unwrap();
    deploy_all(&t, "ticker", &["ticker-v1", "ticker-v2"]);

    // applied together, a second apart: a DeployRequest, a Rollback, a DeployRequest (named so
    // that name order is not creation order)
    t.deploy(&DeployRequestManifest::tag("z-to-v3", "ticker", "ticker-v3")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    t.rollback(&RollbackManifest::previous("undo", "ticker")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    t.deploy(&DeployRequestManifest::tag("a-to-v1", "ticker", "ticker-v1")).unwrap();

    let deployed = t.expect_outcome("z-to-v3", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let rolled = t.expect_request_outcome(ROLLBACK, "undo", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let last = t.expect_outcome("a-to-v1", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let span = |s: &DeployStatus| {
        (
            s.steps.iter().map(|s| s.started().unwrap()).min().unwrap(),
            s.steps.iter().map(|s| s.finished().unwrap()).max().unwrap(),
        )
    };
    let (d, r, l) = (span(&deployed), span(&rolled), span(&last));
    assert!(
        d.1 <= r.0 && r.1 <= l.0,
        "not one after the other in creation order:\n{deployed:#?}\n{rolled:#?}\n{last:#?}"
    );
    // "previous" was resolved when the rollback ran: back from ticker-v3 to ticker-v2
    assert_eq!(rolled.commit.as_deref(), Some(site.commit_of("ticker-v2").unwrap().as_str()));
    assert_eq!(rolled.previous_commit.as_deref(), Some(site.commit_of("ticker-v3").unwrap().as_str()));
    assert_rollback_steps("undo", &rolled, false);
    assert_eq!(site.head().unwrap(), site.commit_of("ticker-v1").unwrap());
    assert_eq!(site.exec("ticker", &["cat", "/ticker/VERSION"]).unwrap().trim(), "1.0.0");
    let env = t.environment("ticker").unwrap().status;
    assert_eq!(env.history_refs().get(..4), Some(&["ticker-v1", "ticker-v2", "ticker-v3", "ticker-v2"][..]));
}

// 6. the automatic rollback fails too ---------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn when_the_automatic_rollback_fails_too_both_say_so_and_the_environment_needs_a_person() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rb-fails").unwrap();
    let site = t.site(3, "rbfails").unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Shop, &site);
    env.gates.auto_rollback = true;
    env.health_timeout_seconds = 30;
    // without a downgrade command the rollback of a migrated release cannot work
    env.downgrade = false;
    t.create_environment(&env).unwrap();
    deploy_all(&t, "staging", &["v1.1.0"]);

    t.deploy(&DeployRequestManifest::tag("bad", "staging", "v1.5.0")).unwrap();
    let ended = t.expect_outcome("bad", "RollbackFailed", DEPLOY_TIMEOUT * 2).unwrap();
    assert_eq!(ended.phase(), "Failed", "{ended:#?}");
    assert_eq!(ended.condition_status("Stalled"), "True");
    assert!(ended.ready_message().contains("needs a person"), "{}", ended.ready_message());
    let rollback = ended.rollback.clone().expect("status.rollback");
    let rb = t.wait_request_finished(ROLLBACK, &rollback, REFUSAL_TIMEOUT).unwrap();
    assert_eq!(rb.ready_reason(), "RollbackFailed", "{rb:#?}");
    assert!(rb.ready_message().contains("NoDowngradePath"), "{}", rb.ready_message());

    // the Environment says a person is needed, and why, while its host still answers
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        let status = t.environment("staging").unwrap().status;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.clone());
        if ready.as_deref() == Some("RollbackFailed") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "RollbackFailed"), "{status:#?}");
    assert!(ready.message.contains(&rollback), "{}", ready.message);
    assert!(status.active_deploy.is_none(), "{status:#?}");

    // a person's new request runs, and clears it: back to v1.1.0's code, leaving the database
    // (its code works with the extra column)
    t.rollback(&RollbackManifest::tag("fix", "staging", "v1.1.0").skipping_migrations()).unwrap();
    t.expect_request_outcome(ROLLBACK, "fix", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), site.commit_of("v1.1.0").unwrap());
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    loop {
        let status = t.environment("staging").unwrap().status;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
        if ready.as_deref() == Some("True") {
            break;
        }
        assert!(Instant::now() < deadline, "the Environment stayed stalled: {status:#?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
