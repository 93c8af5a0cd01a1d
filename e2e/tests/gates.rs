//! The playbook's quality standards, as a user meets them: a revision that breaks one is refused
//! at Preflight with the gate's reason, naming file, line and service, and the host is left as
//! it was; a gate the Environment waives is named in the Preflight step and in the release; and
//! after verification each service's log since its new container started is scanned for errors.
//!
//! Each test makes the revisions it needs in an origin of its own on the host (small changes to
//! the one-service `ticker` app), so the fixture repository stays as it is.

use serde_json::json;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest, REFUSAL_TIMEOUT,
};
use slipway_e2e::require_sandbox;

/// ticker-v1's compose file with `extra` lines added to the service (indented under it).
fn ticker_compose(extra: &str) -> String {
    format!(
        "services:
  ticker:
    build: ./ticker
    environment:
      TICKER_NAME: ${{TICKER_NAME:?set TICKER_NAME in .env}}
{extra}    restart: unless-stopped
    stop_grace_period: 3s
    healthcheck:
      test: [\"CMD\", \"true\"]
      interval: 3s
      timeout: 2s
      retries: 3
"
    )
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn each_gate_refuses_its_revision_before_the_host_changes_and_a_waived_gate_is_recorded() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "gates").unwrap();
    let site = t.site(1, "gates").unwrap();
    let origin = site.own_origin().unwrap();
    let literal = "hunter2-literal-in-compose";
    // two gates in one revision: a literal token, and a committed .env
    site.release(
        "secret",
        "ticker-v1",
        &[
            ("docker-compose.yml", &ticker_compose(&format!("      API_TOKEN: {literal}\n"))),
            (".env", &format!("TICKER_NAME=x\nAPI_TOKEN={literal}\n")),
        ],
    )
    .unwrap();
    site.release(
        "stale-example",
        "ticker-v1",
        &[("docker-compose.yml", &ticker_compose("      TICKER_COLOR: ${TICKER_COLOR}\n"))],
    )
    .unwrap();
    let volume = "    volumes:\n      - ./ticker:/ticker-src:ro\n";
    site.release("code-volume", "ticker-v1", &[("docker-compose.yml", &ticker_compose(volume))]).unwrap();
    site.release("migration", "ticker-v1", &[("migrations/0002_add_color.sql", "ALTER TABLE t ADD color text;\n")])
        .unwrap();
    site.release(
        "both",
        "migration",
        &[("docker-compose.yml", &ticker_compose(volume)), ("ticker/VERSION", "2.0.0\n")],
    )
    .unwrap();

    let mut env = EnvironmentManifest::new("prod", App::Ticker, &site);
    env.origin = origin;
    env.gates.allow_direct = true;
    t.create_environment(&env).unwrap();
    // production by its tier; migrations that need no database, and no downgrade declared
    t.patch_environment(
        "prod",
        &json!({"spec": {"tier": "production", "migrations": {"service": "ticker", "upgrade": ["true"]}}}),
    )
    .unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "prod", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let (ids, head) = (site.container_ids().unwrap(), site.head().unwrap());
    assert_eq!(ids.len(), 1, "{ids:?}");

    let refused = |name: &str, tag: &str, reason: &str, direct: bool| -> String {
        let mut request = DeployRequestManifest::tag(name, "prod", tag);
        if direct {
            request = request.direct();
        }
        t.deploy(&request).unwrap();
        let status = t.expect_outcome(name, reason, REFUSAL_TIMEOUT).unwrap();
        assert_eq!(status.phase(), "Failed", "{name}");
        assert_eq!(status.condition_status("Stalled"), "True", "{name}");
        assert!(!status.ran("Migrating") && !status.ran("Rebuilding"), "{name} changed the host: {:?}", status.steps);
        assert_eq!(site.container_ids().unwrap(), ids, "{name}: the containers changed");
        assert_eq!(site.head().unwrap(), head, "{name}: the checkout moved");
        status.ready_message().to_owned()
    };

    let message = refused("secret", "secret", "SecretInCompose", false);
    assert!(
        message.contains("SecretInCompose: docker-compose.yml:6 service ticker: environment key API_TOKEN"),
        "{message}"
    );
    assert!(message.contains("EnvFileCommitted: .env: is tracked"), "{message}");
    assert!(message.contains("policy.waive"), "{message}");
    // mode: Direct waives nothing
    let direct = refused("secret-direct", "secret", "SecretInCompose", true);
    assert!(direct.contains("API_TOKEN"), "{direct}");

    let message = refused("stale", "stale-example", "EnvExampleMissing", false);
    assert!(
        message.contains("docker-compose.yml:6 service ticker: ${TICKER_COLOR} has no default and .env.example does not list TICKER_COLOR"),
        "{message}"
    );
    let message = refused("volume", "code-volume", "CodeVolumeInProduction", false);
    assert!(message.contains("docker-compose.yml:7 service ticker: bind-mounts ./ticker"), "{message}");
    let message = refused("migration", "migration", "NoRollbackPlan", false);
    assert!(message.contains("migrations/0002_add_color.sql service ticker"), "{message}");
    assert!(message.contains("migrations.downgrade"), "{message}");

    // waived by name: deployed, the waiver named in the Preflight step and in the release
    t.patch_environment("prod", &json!({"spec": {"policy": {"waive": ["CodeVolumeInProduction", "NoRollbackPlan"]}}}))
        .unwrap();
    t.deploy(&DeployRequestManifest::tag("waived", "prod", "both")).unwrap();
    let status = t.expect_outcome("waived", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let preflight = status.require_step("Preflight").unwrap().message.clone().unwrap_or_default();
    assert!(preflight.contains("waived by policy.waive: CodeVolumeInProduction, NoRollbackPlan"), "{preflight}");
    let history = t.environment("prod").unwrap().status.history;
    assert_eq!(history[0].ref_, "both");
    assert_eq!(history[0].waived, ["CodeVolumeInProduction", "NoRollbackPlan"]);
    assert!(history[1].waived.is_empty(), "{:?}", history[1]);
    // a gate not waived still refuses
    refused("secret-again", "secret", "SecretInCompose", false);

    let written = t.everything_written();
    assert!(!written.contains(literal), "the literal value reached status, events or logs");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn error_lines_of_the_new_containers_fail_verification_and_older_lines_do_not() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "gates-logs").unwrap();
    let site = t.site(2, "logs").unwrap();
    let origin = site.own_origin().unwrap();
    let noisy = |text: &str| {
        // `$$`: the container's shell reads TICKER_NAME (an env Secret value: masked in status)
        ticker_compose(&format!(
            "    command: [\"sh\", \"-c\", \"echo \\\"{text} for $$TICKER_NAME\\\"; trap 'exit 0' TERM INT; while :; do sleep 1; done\"]\n"
        ))
    };
    site.release("noisy", "ticker-v1", &[("docker-compose.yml", &noisy("ERROR: payments unreachable"))]).unwrap();
    // the same compose file and image: its container is not recreated
    site.release("noisy-readme", "noisy", &[("README.md", "Ticker, with a note\n")]).unwrap();
    site.release("noisy-again", "noisy", &[("docker-compose.yml", &noisy("FATAL: ledger gone"))]).unwrap();

    let mut env = EnvironmentManifest::new("logs", App::Ticker, &site);
    env.origin = origin;
    let secret = format!("tn-{}", slipway_e2e::hosts::unique_name("name"));
    env.env_values = vec![("TICKER_NAME".into(), secret.clone())];
    t.create_environment(&env).unwrap();

    // Warn: succeeds, saying so
    t.patch_environment("logs", &json!({"spec": {"health": {"logErrors": "Warn"}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("warned", "logs", "noisy")).unwrap();
    let warned = t.expect_outcome("warned", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert!(
        warned.ready_message().contains("warning: error lines in the logs since the deploy: ticker: 1 line(s)"),
        "{}",
        warned.ready_message()
    );
    let container = site.container("ticker").unwrap();

    // Fail (the default): the running container's old ERROR line does not count
    t.patch_environment("logs", &json!({"spec": {"health": {"logErrors": null}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("old-lines", "logs", "noisy-readme")).unwrap();
    let passed = t.expect_outcome("old-lines", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.container("ticker").unwrap(), container, "the container was recreated: nothing tested");
    assert!(!passed.ready_message().contains("warning"), "{}", passed.ready_message());

    // a new container that logs FATAL fails verification, quoting the line, masked
    t.deploy(&DeployRequestManifest::tag("failed", "logs", "noisy-again")).unwrap();
    let failed = t.expect_outcome("failed", "LogErrorsFound", DEPLOY_TIMEOUT).unwrap();
    assert_ne!(site.container("ticker").unwrap(), container);
    assert_eq!(failed.phase(), "Failed");
    let verifying = failed.require_step("Verifying").unwrap();
    let tail = verifying.output_tail.clone().unwrap_or_default();
    assert!(tail.contains("ticker | FATAL: ledger gone for"), "{tail}");
    assert!(failed.ready_message().contains("FATAL: ledger gone"), "{}", failed.ready_message());
    assert!(!t.everything_written().contains(&secret), "an env Secret value reached status, events or logs");
}
