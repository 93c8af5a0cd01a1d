//! The deploy pipeline end to end, as a user sees it with kubectl: a DeployRequest moves an
//! Environment's host from one release to the next (Preflight, Migrating, Rebuilding, Verifying),
//! is refused by its gates or by preflight without touching the host, fails at the step that
//! broke, waits its turn behind other requests for the same Environment, survives a controller
//! killed mid-step, and does nothing when the host already runs what it asks for.
//!
//! Each test has its own namespace, controller and compose projects (`swt-...`), so they run in
//! parallel; they spread over the sandbox's hosts 1..3 (host 3 has compose v2). The shop tests
//! use the reference stack; the others use the one-service `ticker` app from the same fixture
//! repository (e2e/fixtures/shop-releases/README.md).

use std::time::{Duration, Instant};

use serde_json::json;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployStatus, DeployTest, EnvironmentManifest, EnvironmentStatus,
    Observed, REFUSAL_TIMEOUT, STEPS, Site, StepRecord,
};
use slipway_e2e::require_sandbox;

/// Every step ran, in order, and succeeded; without migrations (the ticker), Migrating is
/// `Skipped`, recorded as Preflight ended.
fn assert_all_steps_succeeded(name: &str, status: &DeployStatus, app: App) {
    let optional = |s: &StepRecord| app == App::Ticker && s.name == "Migrating";
    let names: Vec<&str> = status.steps.iter().filter(|s| !optional(s)).map(|s| s.name.as_str()).collect();
    let expected: Vec<&str> = STEPS.iter().copied().filter(|s| app == App::Shop || *s != "Migrating").collect();
    assert_eq!(names, expected, "{name}: steps {:#?}", status.steps);
    for step in &status.steps {
        let skipped = optional(step) && step.result.as_deref() == Some("Skipped");
        assert!(step.succeeded() || skipped, "{name}: step {} did not succeed: {step:#?}", step.name);
        if !skipped {
            assert!(step.started().unwrap() <= step.finished().unwrap(), "{name}: {step:#?}");
        }
    }
    // Without migrations, Preflight's end goes straight on to Rebuilding, in one status write:
    // no reconcile is spent on a step with nothing to do (one would start and end Migrating at
    // different times).
    if app == App::Ticker {
        let at = |step: &str, end: bool| {
            let s = status.require_step(step).unwrap();
            if end { s.finished_at.clone() } else { s.started_at.clone() }
        };
        let times = [at("Preflight", true), at("Migrating", false), at("Migrating", true), at("Rebuilding", false)];
        assert!(times[0].is_some() && times.iter().all(|t| *t == times[0]), "{name}: steps {:#?}", status.steps);
    }
}

/// A terminal refusal or failure as kstatus shows it: Ready False + Stalled True with `reason`.
fn assert_stalled(name: &str, status: &DeployStatus, reason: &str) {
    assert_eq!(status.ready_reason(), reason, "{name}: {status:#?}");
    assert_eq!(status.condition_status("Ready"), "False", "{name}: {status:#?}");
    assert_eq!(status.condition_status("Stalled"), "True", "{name}: {status:#?}");
}

/// What a test compares before and after a deploy that must leave the host alone.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    head: String,
    env_sha256: String,
    containers: Vec<String>,
}

fn host_state(site: &Site) -> HostState {
    HostState {
        head: site.head().unwrap(),
        env_sha256: site.env_file_sha256().unwrap(),
        containers: site.container_ids().unwrap(),
    }
}

fn assert_all_healthy(site: &Site, services: &[&str]) {
    let health = site.health_by_service().unwrap();
    let names: Vec<&str> = health.keys().map(String::as_str).collect();
    assert_eq!(names, services, "{health:?}");
    assert!(health.values().all(|h| h == "healthy"), "{health:?}");
}

// 1. staging v1.0.0 then v1.1.0 ---------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn staging_moves_from_v1_0_0_to_v1_1_0_with_its_migration_and_new_endpoint() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-staging").unwrap();
    let site = t.site(1, "staging").unwrap();
    let env = EnvironmentManifest::new("staging", App::Shop, &site);
    t.create_environment(&env).unwrap();
    let v100 = site.commit_of("v1.0.0").unwrap();
    let v110 = site.commit_of("v1.1.0").unwrap();

    t.deploy(&DeployRequestManifest::tag("release-1-0", "staging", "v1.0.0")).unwrap();
    let first = t.expect_outcome("release-1-0", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_all_steps_succeeded("release-1-0", &first, App::Shop);
    assert_eq!(first.commit.as_deref(), Some(v100.as_str()));
    assert_eq!(site.head().unwrap(), v100);
    assert_eq!(
        site.psql(
            "select count(*) from information_schema.columns where table_name = 'items' and column_name = 'description'"
        )
        .unwrap(),
        "0"
    );

    let start = Instant::now();
    t.deploy(&DeployRequestManifest::tag("release-1-1", "staging", "v1.1.0")).unwrap();
    let second = t.expect_outcome("release-1-1", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    println!("v1.0.0 -> v1.1.0 Ready after {:?}", start.elapsed());
    assert_all_steps_succeeded("release-1-1", &second, App::Shop);
    assert_eq!(second.condition_status("Ready"), "True");
    assert_eq!(second.commit.as_deref(), Some(v110.as_str()), "status.commit is the full id");
    assert_eq!(second.previous_commit.as_deref(), Some(v100.as_str()));
    assert!(second.migration_before.as_deref().unwrap_or("").contains("0001"), "{second:#?}");
    assert!(second.migration_after.as_deref().unwrap_or("").contains("0002"), "{second:#?}");

    // the host: the new commit, the new column, the new endpoint
    assert_eq!(site.head().unwrap(), v110);
    let column = site
        .psql("select column_name from information_schema.columns where table_name = 'items' and column_name = 'description'")
        .unwrap();
    assert_eq!(column, "description");
    let item = site.backend_get("/api/items/1").unwrap();
    let item: serde_json::Value = serde_json::from_str(&item).unwrap();
    assert_eq!(item["id"], 1, "{item}");
    assert_eq!(item["description"], "Keeps the ship in place", "{item}");
    assert_all_healthy(&site, &["backend", "db", "frontend"]);

    // the Environment: v1.1.0 current, both releases in history, newest first
    let environment = t.environment("staging").unwrap().status;
    let current = environment.current.clone().expect("status.current");
    assert_eq!(current.ref_, "v1.1.0");
    assert_eq!(current.commit, v110);
    assert!(current.migration.as_deref().unwrap_or("").contains("0002"), "{current:#?}");
    assert!(current.deployed_by.as_deref().unwrap_or("").contains("release-1-1"), "{current:#?}");
    assert!(current.deployed_at.is_some(), "{current:#?}");
    assert!(!current.images.is_empty(), "{current:#?}");
    let refs = environment.history_refs();
    let newer = refs.iter().position(|r| *r == "v1.1.0");
    let older = refs.iter().position(|r| *r == "v1.0.0");
    assert!(newer.is_some() && older.is_some() && newer < older, "history {refs:?}");
    assert!(environment.active_deploy.is_none(), "the lock is released: {environment:#?}");
    let table = t.cluster.kubectl_ok(&["get", "environment", "staging"]).unwrap();
    assert!(table.contains("v1.1.0"), "CURRENT column: {table}");

    // secret values stay on the host: not in status, events or the controller's log
    let written = t.everything_written();
    for key in ["POSTGRES_PASSWORD", "SECRET_KEY"] {
        assert!(!written.contains(env.env_value(key).unwrap()), "{key}'s value was written out");
    }
}

// 3. gates ------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn gates_refuse_without_taking_the_lock_and_an_allowed_direct_deploy_is_untracked() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-gates").unwrap();
    let site = t.site(2, "gates").unwrap();
    let env = EnvironmentManifest::new("gated", App::Ticker, &site);
    assert!(env.gates.require_issue && !env.gates.allow_direct);
    t.create_environment(&env).unwrap();

    t.deploy(&DeployRequestManifest::tag("no-issue", "gated", "ticker-v1").without_issue()).unwrap();
    let refused = t.expect_outcome("no-issue", "IssueRequired", REFUSAL_TIMEOUT).unwrap();
    assert_stalled("no-issue", &refused, "IssueRequired");
    t.deploy(&DeployRequestManifest::tag("direct", "gated", "ticker-v1").without_issue().direct()).unwrap();
    let refused = t.expect_outcome("direct", "DirectNotAllowed", REFUSAL_TIMEOUT).unwrap();
    assert_stalled("direct", &refused, "DirectNotAllowed");
    for name in ["no-issue", "direct"] {
        let status = t.deploy_request(name).unwrap().status;
        assert!(
            !["Migrating", "Rebuilding", "Verifying"].iter().any(|s| status.ran(s)),
            "{name} was refused but ran steps: {:#?}",
            status.steps
        );
    }
    // refusals never take the lock nor wait in the queue
    let environment = t.environment("gated").unwrap().status;
    assert!(environment.active_deploy.is_none(), "{environment:#?}");
    assert!(environment.queue.is_empty(), "{environment:#?}");
    assert!(environment.current.is_none(), "{environment:#?}");

    // allowed, a Direct deploy needs no issue, succeeds, and is recorded as untracked
    t.patch_environment("gated", &json!({"spec": {"policy": {"allowDirect": true}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("emergency", "gated", "ticker-v1").without_issue().direct()).unwrap();
    let direct = t.expect_outcome("emergency", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(direct.commit.as_deref(), Some(site.commit_of("ticker-v1").unwrap().as_str()));
    assert_eq!(t.cluster.jsonpath("environment/gated", "{.status.current.untracked}").unwrap(), "true");
    assert_eq!(t.cluster.jsonpath("environment/gated", "{.status.current.ref}").unwrap(), "ticker-v1");

    // a tracked change afterwards is not marked untracked
    t.deploy(&DeployRequestManifest::tag("tracked", "gated", "ticker-v2")).unwrap();
    t.expect_outcome("tracked", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let current = t.environment("gated").unwrap().status.current.unwrap();
    assert_eq!(current.ref_, "ticker-v2");
    assert_ne!(current.untracked, Some(true), "{current:#?}");

    // approval: an unapproved request waits (Stalled, phase unset) outside the queue and holds up
    // nobody; the API server refuses an approval from a user without the `approve` verb, and an
    // approver's lets the request run. Both annotations are recorded in the history.
    t.patch_environment("gated", &json!({"spec": {"policy": {"requireApproval": true}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("unapproved", "gated", "ticker-v3")).unwrap();
    let waiting = t.expect_outcome("unapproved", "ApprovalRequired", REFUSAL_TIMEOUT).unwrap();
    assert_stalled("unapproved", &waiting, "ApprovalRequired");
    assert_eq!(waiting.phase(), "", "{waiting:#?}");
    let admin = t.cluster.user().unwrap();
    t.deploy(&DeployRequestManifest::tag("approved", "gated", "ticker-v1").approved_by(&admin)).unwrap();
    t.expect_outcome("approved", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(t.deploy_request("unapproved").unwrap().status.ready_reason(), "ApprovalRequired");
    t.cluster.grant_deploy_requests("alice", false).unwrap();
    let out = t
        .cluster
        .kubectl_as("alice", &["annotate", "deployrequest", "unapproved", "slipway.dev/approved-by=alice"], None)
        .unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refusal.contains("user alice may not approve DeployRequests"), "{refusal}");
    t.cluster
        .kubectl_ok(&["annotate", "deployrequest", "unapproved", &format!("slipway.dev/approved-by={admin}")])
        .unwrap();
    t.cluster.wait_ready_reason("deployrequest/unapproved", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let current = t.environment_released("gated").unwrap().status.current.unwrap();
    assert_eq!(current.ref_, "ticker-v3");
    assert_eq!(t.cluster.jsonpath("environment/gated", "{.status.current.approvedBy}").unwrap(), admin);
    assert_eq!(t.cluster.jsonpath("environment/gated", "{.status.current.requestedBy}").unwrap(), admin);

    // a refusal is final: allowing Direct later did not revive the refused request
    assert_eq!(t.deploy_request("direct").unwrap().status.ready_reason(), "DirectNotAllowed");
}

// 4. missing .env keys ------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn missing_env_keys_stop_preflight_and_leave_the_host_as_it_was() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-envkeys").unwrap();
    let site = t.site(3, "envkeys").unwrap();
    let env = EnvironmentManifest::new("keys", App::Shop, &site);
    t.create_environment(&env).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "keys", "v1.0.0")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let before = host_state(&site);
    assert_eq!(before.head, site.commit_of("v1.0.0").unwrap());
    assert_eq!(before.containers.len(), 3, "{before:?}");

    t.cluster
        .kubectl_ok(&[
            "patch",
            "secret",
            &env.env_secret,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data/SECRET_KEY"}]"#,
        ])
        .unwrap();
    t.deploy(&DeployRequestManifest::tag("second", "keys", "v1.1.0")).unwrap();
    let refused = t.expect_outcome("second", "EnvKeysMissing", REFUSAL_TIMEOUT).unwrap();
    assert_stalled("second", &refused, "EnvKeysMissing");
    assert!(refused.ready_message().contains("SECRET_KEY"), "{:?}", refused.ready_message());
    assert_eq!(refused.phase(), "Failed", "{refused:#?}");
    let preflight = refused.require_step("Preflight").unwrap();
    assert_eq!(preflight.result.as_deref(), Some("Failed"), "{preflight:#?}");
    assert!(!refused.ran("Migrating") && !refused.ran("Rebuilding"), "{:#?}", refused.steps);

    // nothing on the host changed: same HEAD, same .env bytes, same containers
    assert_eq!(host_state(&site), before);
    let environment = t.environment("keys").unwrap().status;
    assert_eq!(environment.current.map(|c| c.ref_).as_deref(), Some("v1.0.0"));
    assert!(environment.active_deploy.is_none(), "the lock is released after a refusal");
}

// 5. failing migration ------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn failing_migration_stops_before_the_rebuild_and_the_app_keeps_running() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-migfail").unwrap();
    let site = t.site(1, "migfail").unwrap();
    t.create_environment(&EnvironmentManifest::new("migfail", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("base", "migfail", "v1.1.0")).unwrap();
    t.expect_outcome("base", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let containers = site.container_ids().unwrap();

    t.deploy(&DeployRequestManifest::tag("stock", "migfail", "v1.3.0")).unwrap();
    let failed = t.expect_outcome("stock", "MigrationFailed", DEPLOY_TIMEOUT).unwrap();
    assert_stalled("stock", &failed, "MigrationFailed");
    assert_eq!(failed.phase(), "Failed", "{failed:#?}");
    assert!(failed.require_step("Preflight").unwrap().succeeded());
    let migrating = failed.require_step("Migrating").unwrap();
    assert_eq!(migrating.result.as_deref(), Some("Failed"), "{migrating:#?}");
    let tail = migrating.output_tail.as_deref().unwrap_or("");
    assert!(tail.contains("warehouses"), "alembic's error is not in the Migrating step's outputTail:\n{tail}");
    assert!(!failed.ran("Rebuilding") && !failed.ran("Verifying"), "{:#?}", failed.steps);

    // the running app was not rebuilt, is still healthy, and its database is still at 0002
    assert_eq!(site.container_ids().unwrap(), containers);
    assert_all_healthy(&site, &["backend", "db", "frontend"]);
    assert_eq!(site.psql("select version_num from alembic_version").unwrap(), "0002");
    assert!(site.backend_get("/api/items/1").unwrap().contains("Keeps the ship in place"));
    let environment = t.environment("migfail").unwrap().status;
    assert_eq!(environment.current.map(|c| c.ref_).as_deref(), Some("v1.1.0"));
    assert!(environment.active_deploy.is_none());
}

// 6. unhealthy release ------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn unhealthy_release_fails_verification_quoting_the_failing_check() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-unhealthy").unwrap();
    let site = t.site(2, "unhealthy").unwrap();
    // a shorter deadline than 120 s: verification of v1.2.0 waits all of it
    let env = EnvironmentManifest { health_timeout_seconds: 60, ..EnvironmentManifest::new("shaky", App::Shop, &site) };
    t.create_environment(&env).unwrap();
    t.deploy(&DeployRequestManifest::tag("base", "shaky", "v1.1.0")).unwrap();
    t.expect_outcome("base", "Succeeded", DEPLOY_TIMEOUT).unwrap();

    t.deploy(&DeployRequestManifest::tag("maintenance", "shaky", "v1.2.0")).unwrap();
    let failed = t.expect_outcome("maintenance", "VerificationFailed", DEPLOY_TIMEOUT).unwrap();
    assert_stalled("maintenance", &failed, "VerificationFailed");
    assert_eq!(failed.phase(), "Failed", "{failed:#?}");
    for step in ["Preflight", "Migrating", "Rebuilding"] {
        assert!(failed.require_step(step).unwrap().succeeded(), "{:#?}", failed.steps);
    }
    let verifying = failed.require_step("Verifying").unwrap();
    assert_eq!(verifying.result.as_deref(), Some("Failed"), "{verifying:#?}");
    let message = failed.ready_message();
    assert!(message.contains("backend"), "the message does not name the failing check: {message}");
    // The round at the deadline runs every check, even with a container unhealthy (earlier
    // rounds stop at the container): the message quotes the check's own failure.
    assert!(
        message.contains("check backend: ") && message.contains("503"),
        "the message does not quote the failing check: {message}"
    );
    // autoRollback is off: no rollback was started
    assert!(!failed.steps.iter().any(|s| s.name.contains("Rollback") || s.name.contains("RollingBack")));
}

// 7. one deploy at a time per Environment, in creation order -----------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deploys_to_one_environment_run_one_at_a_time_in_creation_order_while_another_environment_deploys() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-queue").unwrap();
    let queue_site = t.site(1, "queue").unwrap();
    let other_site = t.site(2, "alongside").unwrap();
    t.create_environment(&EnvironmentManifest::new("queued", App::Ticker, &queue_site)).unwrap();
    t.create_environment(&EnvironmentManifest::new("other", App::Ticker, &other_site)).unwrap();

    // names in reverse alphabetical order, created >= 1 s apart: c first, a last
    let order = [("deploy-c", "ticker-v1"), ("deploy-b", "ticker-v2"), ("deploy-a", "ticker-v3")];
    for (i, (name, tag)) in order.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(1200));
        }
        t.deploy(&DeployRequestManifest::tag(name, "queued", tag)).unwrap();
        if i == 0 {
            t.deploy(&DeployRequestManifest::tag("alongside", "other", "ticker-v1")).unwrap();
        }
    }

    // watch until all four are done, noting what the lock and the queue looked like meanwhile
    let watched = ["environment/queued", "dr/deploy-c", "dr/deploy-b", "dr/deploy-a", "dr/alongside"];
    let mut holders: Vec<String> = Vec::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut saw_b_then_a_waiting = false;
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    loop {
        let objects = t.get_json(&watched).unwrap();
        let environment: Observed<EnvironmentStatus> =
            Observed::from_object(objects.iter().find(|o| o["kind"] == "Environment").unwrap()).unwrap();
        let requests: Vec<Observed<DeployStatus>> = objects
            .iter()
            .filter(|o| o["kind"] == "DeployRequest")
            .map(|o| Observed::from_object(o).unwrap())
            .collect();
        let request = |name: &str| requests.iter().find(|r| r.name == name).unwrap();
        if let Some(holder) = &environment.status.active_deploy
            && holders.last() != Some(holder)
        {
            holders.push(holder.clone());
        }
        let (b, a) = (request("deploy-b"), request("deploy-a"));
        if b.status.phase() == "Queued" || a.status.phase() == "Queued" {
            let queue = &environment.status;
            let seen = format!(
                "b {:?} at {:?}, a {:?} at {:?}, status.queue {:?}",
                b.status.phase(),
                b.status.queue_position,
                a.status.phase(),
                a.status.queue_position,
                queue.queue_entries()
            );
            if waiting.last() != Some(&seen) {
                waiting.push(seen);
            }
            // reads of several objects are not one snapshot: look for the picture, don't assert each read
            saw_b_then_a_waiting |= b.status.phase() == "Queued"
                && a.status.phase() == "Queued"
                && b.status.queue_position == Some(1)
                && a.status.queue_position == Some(2)
                && queue.queue_index("deploy-b") == Some(0)
                && queue.queue_index("deploy-a") == Some(1);
        }
        if requests.len() == 4 && requests.iter().all(|r| r.status.is_finished()) {
            break;
        }
        assert!(Instant::now() < deadline, "not all finished within {DEPLOY_TIMEOUT:?}: {requests:#?}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        saw_b_then_a_waiting,
        "never saw deploy-b waiting at position 1 and deploy-a at 2 (status.queue [b, a]); seen: {waiting:#?}; lock holders {holders:?}"
    );

    let requests: Vec<Observed<DeployStatus>> = order.iter().map(|(name, _)| t.deploy_request(name).unwrap()).collect();
    for r in &requests {
        assert_eq!(r.status.ready_reason(), "Succeeded", "{}\n{}", r.name, t.describe(&r.name));
        assert_all_steps_succeeded(&r.name, &r.status, App::Ticker);
    }
    // the lock went c -> b -> a, each named as DeployRequest/<name>/<uid>
    let expected: Vec<String> = requests.iter().map(|r| format!("DeployRequest/{}/{}", r.name, r.uid)).collect();
    let seen: Vec<&String> = holders.iter().filter(|h| expected.contains(h)).collect();
    assert_eq!(seen, expected.iter().collect::<Vec<_>>(), "lock holders seen: {holders:?}");
    // one after another: each one's verification ended before the next one's preflight began
    for pair in requests.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let ended = before.status.require_step("Verifying").unwrap().finished().unwrap();
        let began = after.status.require_step("Preflight").unwrap().started().unwrap();
        assert!(
            ended <= began,
            "{} started before {} had finished:\n{:#?}\n{:#?}",
            after.name,
            before.name,
            before.status.steps,
            after.status.steps
        );
    }
    // the other Environment did not wait for this queue: its run overlaps the queue's
    let alongside = t.expect_outcome("alongside", "Succeeded", Duration::from_secs(10)).unwrap();
    let other_start = alongside.require_step("Preflight").unwrap().started().unwrap();
    let other_end = alongside.require_step("Verifying").unwrap().finished().unwrap();
    let queue_start = requests[0].status.require_step("Preflight").unwrap().started().unwrap();
    let queue_end = requests[2].status.require_step("Verifying").unwrap().finished().unwrap();
    assert!(
        other_start < queue_end && queue_start < other_end,
        "the other Environment's deploy did not overlap the queue's: {:#?} vs {:#?}",
        alongside.steps,
        requests.iter().map(|r| &r.status.steps).collect::<Vec<_>>()
    );

    let environment = t.environment("queued").unwrap().status;
    assert_eq!(environment.current.as_ref().map(|c| c.ref_.as_str()), Some("ticker-v3"));
    let refs = environment.history_refs();
    assert_eq!(refs.get(..3), Some(&["ticker-v3", "ticker-v2", "ticker-v1"][..]), "history {refs:?}");
    assert!(environment.active_deploy.is_none() && environment.queue.is_empty(), "{environment:#?}");
    assert_eq!(queue_site.head().unwrap(), queue_site.commit_of("ticker-v3").unwrap());
    assert_eq!(queue_site.exec("ticker", &["cat", "/ticker/VERSION"]).unwrap().trim(), "3.0.0");
}

// 8. the controller killed mid-step -----------------------------------------------------------

/// `migration_runs.n`, once the v1.4.0 migration has created it.
fn migration_runs(site: &Site) -> Option<String> {
    site.psql("select n from migration_runs").ok()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn controller_killed_while_migrating_resumes_without_running_the_migration_twice() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-crash-mig").unwrap();
    let site = t.site(3, "crashmig").unwrap();
    t.create_environment(&EnvironmentManifest::new("crashing", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("slow", "crashing", "v1.4.0")).unwrap();

    // kill while migration 0004 sleeps: it has counted itself and not yet committed
    t.wait_phase("slow", "Migrating", DEPLOY_TIMEOUT).unwrap();
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    while migration_runs(&site).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "migration 0004 never started\n{}", t.describe("slow"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = t.deploy_request("slow").unwrap().status;
    assert_eq!(before.phase(), "Migrating", "the migration runs, so the request must still say so: {before:#?}");
    let killed_log = t.cluster.kill_controller().unwrap();
    println!("controller killed while migrating; its log: {}", killed_log.display());
    std::thread::sleep(Duration::from_secs(1));
    t.cluster.start_controller().unwrap();

    let done = t.expect_outcome("slow", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_all_steps_succeeded("slow", &done, App::Shop);
    assert_eq!(migration_runs(&site).as_deref(), Some("1"), "migration 0004 ran more than once");
    assert_eq!(site.psql("select version_num from alembic_version").unwrap(), "0004");
    assert!(done.migration_after.as_deref().unwrap_or("").contains("0004"), "{done:#?}");
    assert_eq!(site.head().unwrap(), site.commit_of("v1.4.0").unwrap());
    assert_all_healthy(&site, &["backend", "db", "frontend"]);
    let environment = t.environment("crashing").unwrap().status;
    assert_eq!(environment.current.map(|c| c.ref_).as_deref(), Some("v1.4.0"));
    assert!(environment.active_deploy.is_none(), "the resumed deploy released the lock");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn controller_killed_while_rebuilding_resumes_without_repeating_the_migration() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-crash-up").unwrap();
    let site = t.site(2, "crashup").unwrap();
    t.create_environment(&EnvironmentManifest::new("crashing", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("slow", "crashing", "v1.4.0")).unwrap();

    let before = t.wait_phase("slow", "Rebuilding", DEPLOY_TIMEOUT).unwrap();
    let killed_log = t.cluster.kill_controller().unwrap();
    println!("controller killed while rebuilding; its log: {}", killed_log.display());
    let migrated = before.require_step("Migrating").unwrap().clone();
    assert!(migrated.succeeded(), "Rebuilding began before Migrating succeeded: {:#?}", before.steps);
    std::thread::sleep(Duration::from_secs(1));
    t.cluster.start_controller().unwrap();

    let done = t.expect_outcome("slow", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_all_steps_succeeded("slow", &done, App::Shop);
    // the finished step was not run again: its record is as it was, and the migration ran once
    assert_eq!(done.step_count("Migrating"), 1, "{:#?}", done.steps);
    assert_eq!(done.require_step("Migrating").unwrap(), &migrated);
    assert_eq!(migration_runs(&site).as_deref(), Some("1"), "migration 0004 ran more than once");
    assert_eq!(site.psql("select version_num from alembic_version").unwrap(), "0004");
    assert_all_healthy(&site, &["backend", "db", "frontend"]);
    let environment = t.environment("crashing").unwrap().status;
    assert_eq!(environment.current.map(|c| c.ref_).as_deref(), Some("v1.4.0"));
    assert!(environment.active_deploy.is_none(), "the resumed deploy released the lock");
}

/// `slipway_reconciles_total` of the DeployRequest controller.
fn deploy_reconciles(t: &DeployTest) -> f64 {
    let (_, metrics) = t.cluster.controller_get("/metrics").unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("slipway_reconciles_total{controller=\"deployrequest\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no slipway_reconciles_total of the DeployRequest controller in:\n{metrics}"))
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_running_host_job_is_left_to_a_watch_that_wakes_the_request_as_it_ends() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::without_controller(&sandbox, "deploy-watch").unwrap();
    // The reconcile's own fallback look comes only after 300 s: a job's end seen sooner was
    // seen by its watch.
    t.cluster.start_controller_with(&["--job-watch-fallback-seconds", "300"]).unwrap();
    let site = t.site(1, "watch").unwrap();
    t.create_environment(&EnvironmentManifest::new("watched", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("slow", "watched", "v1.4.0")).unwrap();

    // Migration 0004 sleeps 8 s inside the `migrate` host job once it has counted itself.
    t.wait_phase("slow", "Migrating", DEPLOY_TIMEOUT).unwrap();
    let uid = t.deploy_request("slow").unwrap().uid;
    let exit_file = format!("$HOME/.slipway/{}/runs/{uid}/migrate/exit", site.project.name);
    let job_exit =
        || site.output(&["sh", "-c", &format!("cat \"{exit_file}\" 2>/dev/null")]).unwrap().stdout().trim().to_owned();
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    while migration_runs(&site).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "migration 0004 never started\n{}", t.describe("slow"));
        std::thread::sleep(Duration::from_millis(200));
    }

    // While the job sleeps nobody reconciles the request: its watch waits on the host. (Polled,
    // a reconcile ran every 250 ms, or every 2.25 s where it could wait on the host itself.)
    let before = deploy_reconciles(&t);
    std::thread::sleep(Duration::from_secs(3));
    let during = deploy_reconciles(&t) - before;
    assert_eq!(job_exit(), "", "the migration ended within the 3 s looked at; the test cannot judge");
    assert!(during < 1.0, "{during} reconciles of the request while its host job slept 3 s");

    // ... and its end is seen at once.
    let done = t.expect_outcome("slow", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_all_steps_succeeded("slow", &done, App::Shop);
    let exit = job_exit();
    let (code, ended) = exit.split_once(' ').expect("the host job recorded its exit");
    assert_eq!(code, "0", "migrate exited {exit}");
    let ended_ns = i128::from(ended.parse::<i64>().unwrap()) * 1_000_000_000;
    let finished_ns = done.require_step("Migrating").unwrap().finished().unwrap();
    let seen_after = Duration::from_nanos(u64::try_from(finished_ns - ended_ns).unwrap_or(0));
    println!("the migration's end was recorded {seen_after:?} after the host job exited");
    // The step's end includes asking alembic for the revision reached (a one-off container).
    assert!(seen_after < Duration::from_secs(60), "Migrating finished {seen_after:?} after its host job ended");
    assert_eq!(migration_runs(&site).as_deref(), Some("1"), "migration 0004 ran more than once");
}

// 9. the same request again -------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_same_request_again_is_up_to_date_and_force_redeploys() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-again").unwrap();
    let site = t.site(3, "again").unwrap();
    t.create_environment(&EnvironmentManifest::new("again", App::Ticker, &site)).unwrap();
    let request = DeployRequestManifest::tag("ticker", "again", "ticker-v1");
    t.deploy(&request).unwrap();
    t.expect_outcome("ticker", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let deployed = host_state(&site);
    assert_eq!(deployed.containers.len(), 1, "{deployed:?}");

    // deleted and applied again as it was: nothing to do, the host is left alone
    t.delete_deploy("ticker").unwrap();
    t.deploy(&request).unwrap();
    let again = t.expect_outcome("ticker", "UpToDate", REFUSAL_TIMEOUT).unwrap();
    assert_eq!(again.condition_status("Ready"), "True", "{again:#?}");
    assert!(!again.ran("Migrating") && !again.ran("Rebuilding"), "{:#?}", again.steps);
    assert_eq!(host_state(&site), deployed);

    // with force it deploys again all the same
    t.delete_deploy("ticker").unwrap();
    t.deploy(&request.clone().forced()).unwrap();
    let forced = t.expect_outcome("ticker", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let rebuilt = forced.require_step("Rebuilding").unwrap();
    assert!(rebuilt.succeeded(), "{rebuilt:#?}");
    assert!(forced.require_step("Verifying").unwrap().succeeded(), "{:#?}", forced.steps);
    assert_eq!(site.head().unwrap(), deployed.head);
    let environment = t.environment("again").unwrap().status;
    assert_eq!(environment.current.map(|c| c.ref_).as_deref(), Some("ticker-v1"));
}

// Verification waits for the healthchecks before it runs a declared check ---------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn verification_runs_the_declared_checks_only_once_the_containers_are_healthy() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-checks").unwrap();
    let site = t.site(1, "checks").unwrap();
    // A round every second; the ticker's first healthcheck runs 3 s after it starts. The check
    // records, inside the container, when each run of it began.
    let log = "/tmp/slipway-check-runs";
    let env = EnvironmentManifest {
        health_interval_seconds: Some(1),
        checks: Some(json!([{"name": "recorded", "exec": {"service": "ticker",
            "command": ["sh", "-c", format!("date +%s%N >> {log}")]}}])),
        ..EnvironmentManifest::new("checks", App::Ticker, &site)
    };
    t.create_environment(&env).unwrap();
    t.deploy(&DeployRequestManifest::tag("ticker", "checks", "ticker-v1")).unwrap();
    let done = t.expect_outcome("ticker", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let verifying = done.require_step("Verifying").unwrap();
    let (from, to) = (verifying.started().unwrap(), verifying.finished().unwrap());
    let runs: Vec<i128> = site.exec("ticker", &["cat", log]).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    let during: Vec<i128> = runs.iter().copied().filter(|r| (from..=to).contains(r)).collect();
    let span = Duration::from_nanos(u64::try_from(to - from).unwrap_or(0));
    println!("Verifying took {span:?}; the check ran {} time(s) in it ({} in all)", during.len(), runs.len());
    // Rounds every second over more than a second: a round that ran the check into the
    // container while its healthcheck was still `starting` would leave two runs or more.
    assert!(span >= Duration::from_secs(1), "Verifying took {span:?}: too short to tell rounds apart");
    assert_eq!(during.len(), 1, "the check ran at {during:?}, within Verifying ({from}..{to})");
    assert!(verifying.message.as_deref().unwrap_or_default().contains("1 checks passed"), "{verifying:#?}");
}

// Deleting the request that holds the lock ------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deleting_the_lock_holder_stops_its_host_job_records_abandoned_and_passes_the_lock_on() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-abandon").unwrap();
    let site = t.site(2, "abandon").unwrap();
    t.create_environment(&EnvironmentManifest::new("abandoned", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("doomed", "abandoned", "v1.4.0")).unwrap();

    // Delete it while migration 0004 sleeps inside its host job.
    t.wait_phase("doomed", "Migrating", DEPLOY_TIMEOUT).unwrap();
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    while migration_runs(&site).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "migration 0004 never started\n{}", t.describe("doomed"));
        std::thread::sleep(Duration::from_millis(200));
    }
    let holder = t.cluster.jsonpath("environment/abandoned", "{.status.activeDeploy}").unwrap();
    assert!(holder.starts_with("DeployRequest/doomed/"), "{holder}");
    // Nobody but the controller may strip the finalizer of a running request (that would skip
    // stopping its job): the API server refuses, naming the way to do it.
    let strip = t
        .cluster
        .kubectl(&["patch", "dr", "doomed", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#])
        .unwrap();
    let refusal = String::from_utf8_lossy(&strip.stderr);
    assert!(!strip.status.success() && refusal.contains("only the Slipway controller removes"), "{refusal}");
    // The finalizer holds the object until its job is stopped and the lock passed on.
    t.delete_deploy("doomed").unwrap();
    let gone = t.cluster.kubectl(&["get", "dr", "doomed"]).unwrap();
    assert!(!gone.status.success(), "the request outlived its deletion");

    assert_eq!(t.cluster.jsonpath("environment/abandoned", "{.status.activeDeploy}").unwrap(), "");
    assert_eq!(t.cluster.jsonpath("environment/abandoned", "{.status.history[0].result}").unwrap(), "Abandoned");
    assert_eq!(t.cluster.jsonpath("environment/abandoned", "{.status.history[0].ref}").unwrap(), "v1.4.0");
    // The migration was stopped, not left to finish: past its 8 s sleep, nothing of its upgrade
    // committed (on a first deploy the whole upgrade, 0001 to 0004, is one transaction).
    std::thread::sleep(Duration::from_secs(10));
    if site.psql("select to_regclass('alembic_version') is not null").unwrap() == "t" {
        assert_ne!(site.psql("select version_num from alembic_version").unwrap(), "0004");
    }
    let described = t.cluster.kubectl_ok(&["get", "events", "-o", "yaml"]).unwrap();
    assert!(described.contains("Abandoned"), "no Abandoned event");

    // The lock passed on: the next request deploys.
    t.deploy(&DeployRequestManifest::tag("next", "abandoned", "v1.1.0")).unwrap();
    let done = t.expect_outcome("next", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_all_steps_succeeded("next", &done, App::Shop);
    // Still 0002: nothing of the abandoned release's migration came back to life.
    assert_eq!(site.psql("select version_num from alembic_version").unwrap(), "0002");
    assert_eq!(migration_runs(&site).as_deref(), Some("1"), "the stopped migration ran again");
}

// 2. Promotion ------------------------------------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn production_takes_only_a_commit_that_succeeded_on_every_environment_it_promotes_from() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-promote").unwrap();
    let staging_site = t.site(1, "promo-stg").unwrap();
    let qa_site = t.site(3, "promo-qa").unwrap();
    let production_site = t.site(2, "promo-prd").unwrap();
    t.create_environment(&EnvironmentManifest::new("staging", App::Ticker, &staging_site)).unwrap();
    t.create_environment(&EnvironmentManifest::new("qa", App::Ticker, &qa_site)).unwrap();
    let mut production = EnvironmentManifest::new("production", App::Ticker, &production_site);
    production.gates.promote_from = vec!["staging".to_owned(), "qa".to_owned()];
    t.create_environment(&production).unwrap();

    // The API server holds promoteFrom to a handful of distinct Environment names.
    let mut bad = production.clone();
    bad.name = "too-many".to_owned();
    bad.gates.promote_from = (1..=6).map(|i| format!("env-{i}")).collect();
    let refusal = t.cluster.refused(&bad.to_json().to_string()).unwrap();
    assert!(refusal.contains("promoteFrom") && refusal.contains("at most 5"), "{refusal}");
    bad.gates.promote_from = vec!["staging".to_owned(), "staging".to_owned()];
    let refusal = t.cluster.refused(&bad.to_json().to_string()).unwrap();
    assert!(refusal.contains("promoteFrom") && refusal.contains("Duplicate"), "{refusal}");
    bad.gates.promote_from = vec!["staging".to_owned(), "QA_1".to_owned()];
    let refusal = t.cluster.refused(&bad.to_json().to_string()).unwrap();
    assert!(refusal.contains("promoteFrom must each be the name of an Environment"), "{refusal}");

    // Never deployed anywhere: refused before the queue, naming both Environments.
    t.deploy(&DeployRequestManifest::tag("too-early", "production", "ticker-v2")).unwrap();
    let refused = t.expect_outcome("too-early", "NotPromoted", DEPLOY_TIMEOUT).unwrap();
    assert_stalled("too-early", &refused, "NotPromoted");
    let message = refused.ready_message();
    assert!(message.contains("\"staging\", \"qa\""), "{message}");
    assert!(!refused.ran("Rebuilding"), "{refused:#?}");
    let environment = t.environment("production").unwrap().status;
    assert!(environment.active_deploy.is_none() && environment.current.is_none(), "{environment:#?}");
    assert!(production_site.container_ids().unwrap().is_empty(), "the refused request started containers");

    // Succeeded on staging only: still refused, and the message names only qa.
    t.deploy(&DeployRequestManifest::tag("on-staging", "staging", "ticker-v2")).unwrap();
    t.expect_outcome("on-staging", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    t.deploy(&DeployRequestManifest::tag("half-way", "production", "ticker-v2")).unwrap();
    let refused = t.expect_outcome("half-way", "NotPromoted", DEPLOY_TIMEOUT).unwrap();
    let message = refused.ready_message();
    assert!(message.contains("\"qa\"") && !message.contains("\"staging\""), "{message}");
    assert!(production_site.container_ids().unwrap().is_empty(), "the refused request started containers");

    // Once qa ran it too, production takes the very same commit.
    t.deploy(&DeployRequestManifest::tag("on-qa", "qa", "ticker-v2")).unwrap();
    t.expect_outcome("on-qa", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    t.deploy(&DeployRequestManifest::tag("promoted", "production", "ticker-v2")).unwrap();
    let done = t.expect_outcome("promoted", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(done.commit.as_deref(), Some(staging_site.commit_of("ticker-v2").unwrap().as_str()));
    assert_eq!(production_site.head().unwrap(), staging_site.commit_of("ticker-v2").unwrap());
}

// A request found finished while it still holds the lock ------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_release_found_finished_while_holding_the_lock_is_recorded_as_completely_as_a_normal_one() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-recover").unwrap();
    let site = t.site(1, "recover").unwrap();
    t.create_environment(&EnvironmentManifest::new("recovering", App::Ticker, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("finished", "recovering", "ticker-v1")).unwrap();
    let done = t.expect_outcome("finished", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let normal = t.environment("recovering").unwrap().status.history[0].clone();
    assert!(!normal.images.is_empty() && normal.deployed_at.is_some(), "{normal:#?}");

    // What a controller stopped between the request's final status write and the lock's release
    // leaves behind: the request Succeeded, the Environment still locked by it, no record of it.
    t.cluster.stop_controller(Duration::from_secs(10));
    let uid = t.deploy_request("finished").unwrap().uid;
    let crashed =
        json!({"status": {"activeDeploy": format!("DeployRequest/finished/{uid}"), "history": [], "current": null}});
    t.cluster
        .kubectl_ok(&[
            "patch",
            "environment",
            "recovering",
            "--subresource=status",
            "--type=merge",
            "-p",
            &crashed.to_string(),
        ])
        .unwrap();
    t.cluster.start_controller().unwrap();

    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let environment = loop {
        let status = t.environment("recovering").unwrap().status;
        if status.active_deploy.is_none() {
            break status;
        }
        assert!(Instant::now() < deadline, "the lock was not released: {status:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let record = environment.history.first().expect("the release is recorded again");
    assert_eq!(record.result.as_deref(), Some("Succeeded"), "{record:#?}");
    assert_eq!((&record.ref_, &record.commit), (&normal.ref_, &normal.commit));
    // deployedAt is when Verifying finished, as on the normal path; the images are the host's.
    assert_eq!(record.deployed_at, done.require_step("Verifying").unwrap().finished_at, "{record:#?}");
    assert_eq!(record.deployed_at, normal.deployed_at);
    assert_eq!(record.images, normal.images, "{record:#?}");
    assert_eq!(environment.current.map(|c| c.images), Some(normal.images));
}

// Deleting the Environment during a deploy --------------------------------------------------------

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deleting_the_environment_mid_migration_waits_for_the_host_job_fails_its_requests_and_closes_the_ssh_master() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "deploy-envdel").unwrap();
    let site = t.site(3, "envdel").unwrap();
    // on another host: an idle Environment's master is closed by the pool's sweep (within a
    // minute), not by its deletion, and must not be mistaken for the deleted one's
    let idle_site = t.site(2, "envdel-idle").unwrap();
    t.create_environment(&EnvironmentManifest::new("doomed", App::Shop, &site)).unwrap();
    t.create_environment(&EnvironmentManifest::new("idle", App::Ticker, &idle_site)).unwrap();
    let finalizers = |env: &str| t.cluster.jsonpath(&format!("environment/{env}"), "{.metadata.finalizers}").unwrap();
    // An Environment with no deploy carries no finalizer, and goes at once (also with no controller).
    std::thread::sleep(Duration::from_secs(2));
    assert!(!finalizers("idle").contains("slipway.dev/environment"), "{}", finalizers("idle"));
    let start = Instant::now();
    t.cluster.kubectl_ok(&["delete", "environment", "idle", "--wait=true", "--timeout=60s"]).unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "an idle Environment took {:?} to delete", start.elapsed());

    // A deploy whose migration 0004 sleeps 8 s inside its host job, and a request queued behind it.
    t.deploy(&DeployRequestManifest::tag("slow", "doomed", "v1.4.0")).unwrap();
    t.wait_phase("slow", "Migrating", DEPLOY_TIMEOUT).unwrap();
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    while migration_runs(&site).as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "migration 0004 never started\n{}", t.describe("slow"));
        std::thread::sleep(Duration::from_millis(200));
    }
    t.deploy(&DeployRequestManifest::tag("behind", "doomed", "v1.1.0")).unwrap();
    t.wait_phase("behind", "Queued", REFUSAL_TIMEOUT).unwrap();
    assert!(finalizers("doomed").contains("slipway.dev/environment"), "a deploy runs: {}", finalizers("doomed"));
    let host = site.host.addr.clone();
    assert!(t.cluster.ssh_processes().iter().any(|c| c.contains(&host)), "no SSH master to {host} before the deletion");
    let uid = t.deploy_request("slow").unwrap().uid;
    let exit_file = format!("$HOME/.slipway/{}/runs/{uid}/migrate/exit", site.project.name);
    let job_exit = || site.output(&["sh", "-c", &format!("cat \"{exit_file}\"")]).unwrap().stdout().trim().to_owned();
    assert_eq!(job_exit(), "", "the migration ended before the test could delete its Environment");

    // Deleted while the migration runs: the object stays until the host job has ended.
    t.cluster.kubectl_ok(&["delete", "environment", "doomed", "--wait=false"]).unwrap();
    let deleted = Instant::now();
    let mut seen_waiting = false;
    let gone_epoch = loop {
        let exists = t.cluster.kubectl(&["get", "environment", "doomed"]).unwrap().status.success();
        let ended = !job_exit().is_empty();
        if !exists {
            break std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        }
        seen_waiting |= !ended;
        assert!(
            deleted.elapsed() < Duration::from_secs(150),
            "the Environment was not deleted\n{}",
            t.describe("slow")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("Environment gone {:?} after its deletion", deleted.elapsed());
    assert!(seen_waiting, "the Environment's deletion was never seen waiting for the running host job");
    let exit = job_exit();
    let (code, ended_epoch) = exit.split_once(' ').expect("the host job recorded its exit");
    assert_eq!(code, "0", "the migration did not run to completion: exit {exit}");
    assert!(
        ended_epoch.parse::<u64>().unwrap() <= gone_epoch,
        "the job ended at {ended_epoch}, after the Environment went ({gone_epoch})"
    );
    // The whole upgrade (0001..0004, one transaction on a first deploy) committed; it ran once.
    assert_eq!(site.psql("select version_num from alembic_version").unwrap(), "0004");
    assert_eq!(migration_runs(&site).as_deref(), Some("1"));

    // Both requests end Failed, EnvironmentDeleted; the holder started no step after the migration.
    for name in ["slow", "behind"] {
        let status = t.expect_outcome(name, "EnvironmentDeleted", REFUSAL_TIMEOUT).unwrap();
        assert_stalled(name, &status, "EnvironmentDeleted");
        assert_eq!(status.phase(), "Failed", "{name}: {status:#?}");
    }
    let slow = t.deploy_request("slow").unwrap().status;
    assert!(!slow.ran("Rebuilding"), "a step started while the Environment was being deleted: {:#?}", slow.steps);
    assert!(!t.deploy_request("behind").unwrap().status.ran("Preflight"), "the queued request ran");

    // Its SSH master is closed with it, not by the pool's sweep a minute later.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let masters: Vec<String> = t.cluster.ssh_processes().into_iter().filter(|c| c.contains(&host)).collect();
        if masters.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "SSH master to {host} outlived its Environment: {masters:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let events = t.cluster.kubectl_ok(&["get", "events", "-o", "yaml"]).unwrap();
    assert!(events.contains("HostJobEnded"), "no HostJobEnded event");
}
