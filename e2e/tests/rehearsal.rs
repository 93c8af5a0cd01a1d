//! The rollback rehearsal (`policy.rehearseRollback`) as a user sees it: a staging deploy that
//! migrates is rolled back to the release before it and forward again, each step in the
//! DeployRequest's status, and its release marked `rollbackTested`, which production's
//! `policy.requireRollbackTested` asks for before it takes a commit; a rehearsal whose downgrade
//! fails fails the request, saying what the host runs, and the host runs exactly that.
//!
//! Each test has its own namespace, controller and compose projects (`swt-...`).

use std::time::Instant;

use serde_json::json;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployStatus, DeployTest, EnvironmentManifest, REFUSAL_TIMEOUT, STEPS,
    Site,
};
use slipway_e2e::require_sandbox;

const REHEARSAL_STEPS: [&str; 6] = [
    "RehearsalDowngrading",
    "RehearsalRebuilding",
    "RehearsalVerifying",
    "RollForwardMigrating",
    "RollForwardRebuilding",
    "RollForwardVerifying",
];
const REHEARSAL_CONDITIONS: [&str; 6] = [
    "RehearsalDowngraded",
    "RehearsalRebuilt",
    "RehearsalVerified",
    "RollForwardMigrated",
    "RollForwardRebuilt",
    "RollForwardVerified",
];

fn alembic_version(site: &Site) -> String {
    site.psql("select version_num from alembic_version").unwrap()
}

fn has_column(site: &Site, column: &str) -> bool {
    let sql = format!(
        "select count(*) from information_schema.columns where table_name = 'items' and column_name = '{column}'"
    );
    site.psql(&sql).unwrap() == "1"
}

fn assert_all_healthy(site: &Site) {
    let health = site.health_by_service().unwrap();
    assert_eq!(health.keys().map(String::as_str).collect::<Vec<_>>(), ["backend", "db", "frontend"], "{health:?}");
    assert!(health.values().all(|h| h == "healthy"), "{health:?}");
}

fn step_names(status: &DeployStatus) -> Vec<&str> {
    status.steps.iter().map(|s| s.name.as_str()).collect()
}

/// `tier: staging` with `policy.rehearseRollback`. The log scan only warns: PostgreSQL may log
/// `FATAL:  the database system is starting up` when the db container restarts during a
/// deploy, which is not what these tests are about.
fn rehearsing(t: &DeployTest, env: &EnvironmentManifest) {
    t.create_environment(env).unwrap();
    let patch = json!({"spec": {"policy": {"rehearseRollback": true}, "health": {"logErrors": "Warn"}}});
    t.patch_environment(&env.name, &patch).unwrap();
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_migrating_staging_deploy_is_rolled_back_and_forward_and_production_requires_it() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rehearse-pass").unwrap();
    let staging_site = t.site(1, "rhpass").unwrap();
    let prod_site = t.site(2, "rhprod").unwrap();

    // where it cannot work, the API server refuses it, naming the fix
    let mut no_downgrade = EnvironmentManifest::new("nodown", App::Shop, &staging_site);
    no_downgrade.downgrade = false;
    let mut manifest = no_downgrade.to_json();
    manifest["spec"]["policy"]["rehearseRollback"] = json!(true);
    let refused = t.cluster.refused(&manifest.to_string()).unwrap();
    assert!(
        refused.contains("policy.rehearseRollback needs spec.migrations.downgrade and spec.migrations.current"),
        "{refused}"
    );
    let mut manifest = EnvironmentManifest::new("noprom", App::Shop, &prod_site).to_json();
    manifest["spec"]["policy"]["requireRollbackTested"] = json!(true);
    let refused = t.cluster.refused(&manifest.to_string()).unwrap();
    assert!(refused.contains("policy.requireRollbackTested applies to promotion"), "{refused}");

    rehearsing(&t, &EnvironmentManifest::new("staging", App::Shop, &staging_site));
    let mut prod = EnvironmentManifest::new("production", App::Shop, &prod_site);
    prod.gates.promote_from = vec!["staging".into()];
    t.create_environment(&prod).unwrap();
    t.patch_environment("production", &json!({"spec": {"policy": {"requireRollbackTested": true}}})).unwrap();

    // the first release has nothing to go back to: not rehearsed, and it says so
    t.deploy(&DeployRequestManifest::tag("first", "staging", "v1.0.0")).unwrap();
    let first = t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(step_names(&first), STEPS, "{first:#?}");
    assert!(first.ready_message().contains("rollback not rehearsed: the first release"), "{}", first.ready_message());
    assert!(!t.environment("staging").unwrap().status.current.unwrap().rollback_tested);

    // production refuses v1.0.0: it succeeded on staging, but its rollback was never rehearsed
    let prod_containers = prod_site.container_ids().unwrap();
    t.deploy(&DeployRequestManifest::tag("prod-v1-0", "production", "v1.0.0")).unwrap();
    let refused = t.expect_outcome("prod-v1-0", "RollbackNotTested", REFUSAL_TIMEOUT).unwrap();
    assert_eq!(refused.phase(), "Failed");
    assert_eq!(refused.condition_status("Stalled"), "True");
    assert!(
        refused.ready_message().contains("rollback was rehearsed (rollbackTested) on Environment \"staging\""),
        "{}",
        refused.ready_message()
    );
    assert!(refused.steps.is_empty(), "refused before anything ran: {:#?}", refused.steps);
    assert_eq!(prod_site.container_ids().unwrap(), prod_containers, "production's host changed");

    // v1.1.0 migrates (0001 -> 0002): rehearsed, with a controller restart in the middle
    let start = Instant::now();
    t.deploy(&DeployRequestManifest::tag("second", "staging", "v1.1.0")).unwrap();
    let rehearsing = t.wait_phase("second", "Rehearsing", DEPLOY_TIMEOUT).unwrap();
    assert!(rehearsing.require_step("Verifying").unwrap().succeeded(), "{rehearsing:#?}");
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    loop {
        // back on v1.0.0's code: the rehearsal really went back
        let status = t.deploy_request("second").unwrap().status;
        if status.steps.iter().any(|s| s.name == "RehearsalRebuilding" && s.result.is_none()) {
            break;
        }
        assert!(Instant::now() < deadline, "never rebuilt the previous release\n{}", t.describe("second"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(alembic_version(&staging_site), "0001", "downgraded before the previous code is rebuilt");
    assert!(!has_column(&staging_site, "description"));
    let killed_log = t.cluster.kill_controller().unwrap();
    println!("controller killed during RehearsalRebuilding; its log: {}", killed_log.display());
    t.cluster.start_controller().unwrap();
    let done = t.expect_outcome("second", "Succeeded", DEPLOY_TIMEOUT * 2).unwrap();
    println!("v1.1.0 deployed and rehearsed in {:?}", start.elapsed());

    let mut want: Vec<&str> = STEPS.to_vec();
    want.extend(REHEARSAL_STEPS);
    assert_eq!(step_names(&done), want, "each step once, in order: {:#?}", done.steps);
    for step in &done.steps {
        assert!(step.succeeded(), "{step:#?}");
    }
    for c in REHEARSAL_CONDITIONS {
        assert_eq!(done.condition_status(c), "True", "{c}: {done:#?}");
    }
    let downgrade = done.require_step("RehearsalDowngrading").unwrap();
    assert!(downgrade.message.as_deref().unwrap_or("").contains("alembic downgrade 0001"), "{downgrade:#?}");
    assert!(done.ready_message().contains("rollback rehearsed"), "{}", done.ready_message());
    let described = t.cluster.kubectl_ok(&["describe", "deployrequest", "second"]).unwrap();
    assert!(described.contains("RollForwardVerifying") && described.contains("RehearsalVerified"), "{described}");

    // the host ends on v1.1.0: database at the new head, the new code serving
    let v110 = staging_site.commit_of("v1.1.0").unwrap();
    assert_eq!(staging_site.head().unwrap(), v110);
    assert_eq!(alembic_version(&staging_site), "0002");
    assert!(has_column(&staging_site, "description"));
    assert_eq!(staging_site.exec("backend", &["cat", "/app/VERSION"]).unwrap().trim(), "1.1.0");
    assert!(staging_site.backend_get("/api/items/1").is_ok(), "v1.1.0's GET /api/items/{{id}}");
    assert_all_healthy(&staging_site);
    let env = t.environment("staging").unwrap().status;
    let current = env.current.clone().unwrap();
    assert_eq!((current.ref_.as_str(), current.rollback_tested), ("v1.1.0", true), "{current:#?}");
    assert_eq!(current.migration.as_deref(), Some("0002"));
    assert!(env.history[0].rollback_tested && !env.history[1].rollback_tested, "{:#?}", env.history);
    assert!(env.active_deploy.is_none(), "{env:#?}");

    // production takes the rehearsed commit
    t.deploy(&DeployRequestManifest::tag("prod-v1-1", "production", "v1.1.0")).unwrap();
    let promoted = t.expect_outcome("prod-v1-1", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(step_names(&promoted), STEPS, "production does not rehearse: {promoted:#?}");
    assert_eq!(prod_site.head().unwrap(), v110);
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_rehearsal_whose_downgrade_fails_fails_the_deploy_and_names_what_the_host_runs() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rehearse-fail").unwrap();
    let site = t.site(3, "rhfail").unwrap();
    let origin = site.own_origin().unwrap();
    // v1.1.0 plus migration 0006, whose downgrade drops its column and then fails (one
    // transaction: PostgreSQL undoes the drop)
    let migration = r#""""items.note, with a downgrade that fails (e2e fixture)"""
from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("note", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("items", "note")
    op.execute("SELECT * FROM no_such_table_in_the_rehearsal")
"#;
    let bad = site
        .release(
            "v1.6.0-baddown",
            "v1.1.0",
            &[("backend/migrations/versions/0006_item_note.py", migration), ("backend/VERSION", "1.6.0\n")],
        )
        .unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Shop, &site);
    env.origin = origin;
    rehearsing(&t, &env);
    t.deploy(&DeployRequestManifest::tag("base", "staging", "v1.1.0")).unwrap();
    t.expect_outcome("base", "Succeeded", DEPLOY_TIMEOUT).unwrap();

    t.deploy(&DeployRequestManifest::tag("baddown", "staging", "v1.6.0-baddown")).unwrap();
    let ended = t.expect_outcome("baddown", "RehearsalFailed", DEPLOY_TIMEOUT * 2).unwrap();
    assert_eq!(ended.phase(), "Failed", "{ended:#?}");
    assert_eq!(ended.condition_status("Ready"), "False");
    assert_eq!(ended.condition_status("Stalled"), "True");
    let message = ended.ready_message();
    assert!(message.contains("rollback rehearsal failed at RehearsalDowngrading"), "{message}");
    assert!(message.contains("not rollbackTested"), "{message}");
    let short = &bad[..12];
    let runs = format!("the host runs tag v1.6.0-baddown (commit {short}) with the database at revision 0006");
    assert!(message.contains(&runs), "{message}");
    assert!(message.contains("nothing was changed"), "{message}");
    // the deploy's own steps passed, the downgrade failed, the rest was skipped
    for s in STEPS {
        assert!(ended.require_step(s).unwrap().succeeded(), "{s}: {ended:#?}");
    }
    let downgrade = ended.require_step("RehearsalDowngrading").unwrap();
    assert_eq!(downgrade.result.as_deref(), Some("Failed"), "{downgrade:#?}");
    assert!(
        downgrade.output_tail.as_deref().unwrap_or("").contains("no_such_table_in_the_rehearsal"),
        "{downgrade:#?}"
    );
    for s in &REHEARSAL_STEPS[1..] {
        assert_eq!(ended.require_step(s).unwrap().result.as_deref(), Some("Skipped"), "{s}: {ended:#?}");
    }
    assert_eq!(ended.condition_status("RehearsalDowngraded"), "False");
    assert_eq!(ended.migration_after.as_deref(), Some("0006"));

    // ... and it is what the host runs: the new commit, its column, its code, healthy
    assert_eq!(site.head().unwrap(), bad);
    assert_eq!(alembic_version(&site), "0006");
    assert!(has_column(&site, "note"), "the failed downgrade's drop was undone");
    assert_eq!(site.exec("backend", &["cat", "/app/VERSION"]).unwrap().trim(), "1.6.0");
    assert_all_healthy(&site);
    let env = t.environment("staging").unwrap().status;
    let recorded = &env.history[0];
    assert_eq!(
        (recorded.commit.as_str(), recorded.result.as_deref(), recorded.migration.as_deref(), recorded.rollback_tested),
        (bad.as_str(), Some("Failed"), Some("0006"), false),
        "{:#?}",
        env.history
    );
    assert!(env.active_deploy.is_none(), "{env:#?}");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_previous_release_that_fails_after_the_downgrade_is_rolled_forward_and_the_deploy_fails() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "rehearse-fwd").unwrap();
    let site = t.site(2, "rhfwd").unwrap();
    let origin = site.own_origin().unwrap();
    // v1.1.0 plus migration 0006 whose downgrade also drops `items.description`, which v1.1.0's
    // GET /api/items/{id} reads: the rollback it would take breaks the previous release
    let migration = r#""""items.note, with a downgrade that breaks v1.1.0 (e2e fixture)"""
from alembic import op

revision = "0006"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE items ADD COLUMN IF NOT EXISTS note text")
    op.execute("ALTER TABLE items ADD COLUMN IF NOT EXISTS description text")


def downgrade() -> None:
    op.execute("ALTER TABLE items DROP COLUMN note")
    op.execute("ALTER TABLE items DROP COLUMN description")
"#;
    let new = site
        .release(
            "v1.7.0-breaksback",
            "v1.1.0",
            &[("backend/migrations/versions/0006_item_note.py", migration), ("backend/VERSION", "1.7.0\n")],
        )
        .unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Shop, &site);
    env.origin = origin;
    env.health_timeout_seconds = 30;
    rehearsing(&t, &env);
    // a check that reads an item, as users do
    let mut checks = env.to_json()["spec"]["health"]["checks"].clone();
    checks
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "item", "http": {"service": "backend", "port": 8000, "path": "/api/items/1"}}));
    t.patch_environment("staging", &json!({"spec": {"health": {"checks": checks}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("base", "staging", "v1.1.0")).unwrap();
    t.expect_outcome("base", "Succeeded", DEPLOY_TIMEOUT).unwrap();

    t.deploy(&DeployRequestManifest::tag("breaksback", "staging", "v1.7.0-breaksback")).unwrap();
    let ended = t.expect_outcome("breaksback", "RehearsalFailed", DEPLOY_TIMEOUT * 2).unwrap();
    assert_eq!(ended.phase(), "Failed", "{ended:#?}");
    let message = ended.ready_message();
    assert!(message.contains("rollback rehearsal failed at RehearsalVerifying"), "{message}");
    assert!(message.contains("check item"), "the failing check is quoted: {message}");
    let runs = format!(
        "rolled forward: the host runs tag v1.7.0-breaksback (commit {}) with the database at revision 0006, verified healthy",
        &new[..12]
    );
    assert!(message.contains(&runs), "{message}");
    let results: Vec<(&str, Option<&str>)> =
        ended.steps.iter().map(|s| (s.name.as_str(), s.result.as_deref())).collect();
    let ok = Some("Succeeded");
    assert_eq!(
        results,
        [
            ("Preflight", ok),
            ("Migrating", ok),
            ("Rebuilding", ok),
            ("Verifying", ok),
            ("RehearsalDowngrading", ok),
            ("RehearsalRebuilding", ok),
            ("RehearsalVerifying", Some("Failed")),
            ("RollForwardMigrating", ok),
            ("RollForwardRebuilding", ok),
            ("RollForwardVerifying", ok),
        ],
        "{ended:#?}"
    );

    // the host: the new release again, its database, its code, serving items
    assert_eq!(site.head().unwrap(), new);
    assert_eq!(alembic_version(&site), "0006");
    assert!(has_column(&site, "note") && has_column(&site, "description"));
    assert_eq!(site.exec("backend", &["cat", "/app/VERSION"]).unwrap().trim(), "1.7.0");
    assert!(site.backend_get("/api/items/1").is_ok());
    assert_all_healthy(&site);
    let env = t.environment("staging").unwrap().status;
    assert_eq!(
        (env.history[0].commit.as_str(), env.history[0].result.as_deref(), env.history[0].rollback_tested),
        (new.as_str(), Some("Failed"), false),
        "{:#?}",
        env.history
    );
}
