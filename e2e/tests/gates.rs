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
        &json!({"spec": {"tier": "production", "health": {"bakeSeconds": 0},
                         "migrations": {"service": "ticker", "upgrade": ["true"]}}}),
    )
    .unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "prod", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.container_ids().unwrap().len(), 1);

    let refused = |name: &str, tag: &str, reason: &str, direct: bool| -> String {
        let (ids, head) = (site.container_ids().unwrap(), site.head().unwrap());
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
    // An image of this project's own: the engine is shared, and its classic builder takes the
    // newest image that matches a step. Two tests building the same ticker-v1 Dockerfile at once
    // on a cold cache make two images; a later build could take the other one as this project's
    // next image and recreate the container.
    let dockerfile = format!(
        "FROM slipway-base:bookworm\nLABEL dev.slipway.e2e.project={}\nCOPY VERSION /ticker/VERSION\n\
         CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM INT; while :; do sleep 1; done\"]\n",
        site.project.name
    );
    site.release(
        "noisy",
        "ticker-v1",
        &[("docker-compose.yml", &noisy("ERROR: payments unreachable")), ("ticker/Dockerfile", &dockerfile)],
    )
    .unwrap();
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
    let inspect = |id: &str| {
        let format = "image {{.Image}} config-hash {{index .Config.Labels \"com.docker.compose.config-hash\"}}";
        site.run(&["docker", "inspect", "--format", format, id]).unwrap_or_else(|e| e.to_string())
    };
    let before = inspect(&container);

    // Fail (the default): the running container's old ERROR line does not count
    t.patch_environment("logs", &json!({"spec": {"health": {"logErrors": null}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("old-lines", "logs", "noisy-readme")).unwrap();
    let passed = t.expect_outcome("old-lines", "Succeeded", DEPLOY_TIMEOUT);
    match site.container("ticker") {
        Ok(now) => {
            assert_eq!(
                now,
                container,
                "the container was recreated: nothing tested (was {before}, is {})",
                inspect(&now)
            )
        }
        Err(e) => panic!("{e:#}; the deploy: {passed:?}"),
    }
    let passed = passed.unwrap();
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

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_restart_restarts_only_the_named_service_through_the_lock_and_is_recorded() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "gates-restart").unwrap();
    let site = t.site(3, "restart").unwrap();
    let origin = site.own_origin().unwrap();
    let sidekick = "  sidekick:\n    build: ./ticker\n    stop_grace_period: 3s\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 3s\n";
    site.release("pair", "ticker-v1", &[("docker-compose.yml", &format!("{}{sidekick}", ticker_compose("")))]).unwrap();
    let mut env = EnvironmentManifest::new("restarts", App::Ticker, &site);
    env.origin = origin;
    t.create_environment(&env).unwrap();

    // exactly one of revision and restart, said by the API server
    let both = json!({
        "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest",
        "metadata": {"name": "both", "annotations": {"slipway.dev/requested-by": t.cluster.user().unwrap()}},
        "spec": {"environment": "restarts", "revision": {"tag": "pair"}, "restart": ["ticker"]},
    });
    let refused = t.cluster.apply(&both.to_string()).unwrap_err().to_string();
    assert!(refused.contains("exactly one of revision (a deploy) or restart"), "{refused}");

    // nothing deployed yet: nothing to restart
    t.deploy(&DeployRequestManifest::restart("too-early", "restarts", &["ticker"])).unwrap();
    t.expect_outcome("too-early", "NothingDeployed", REFUSAL_TIMEOUT).unwrap();

    t.deploy(&DeployRequestManifest::tag("pair", "restarts", "pair")).unwrap();
    t.expect_outcome("pair", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let started = |service: &str| {
        let id = site.container(service).unwrap();
        (id.clone(), site.run(&["docker", "inspect", "-f", "{{.State.StartedAt}}", &id]).unwrap().trim().to_owned())
    };
    let (ticker, sidekick) = (started("ticker"), started("sidekick"));

    t.deploy(&DeployRequestManifest::restart("unknown", "restarts", &["tickr"])).unwrap();
    let status = t.expect_outcome("unknown", "ServiceNotFound", REFUSAL_TIMEOUT).unwrap();
    assert!(status.ready_message().contains("tickr not in the compose files"), "{}", status.ready_message());
    assert_eq!(started("ticker"), ticker);

    t.deploy(&DeployRequestManifest::restart("bounce", "restarts", &["ticker"])).unwrap();
    let status = t.expect_outcome("bounce", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["Preflight", "Restarting", "Verifying"]);
    assert_eq!(status.revision.as_deref(), Some("restart of ticker"));
    let after = started("ticker");
    assert_eq!(after.0, ticker.0, "restarted, not recreated");
    assert_ne!(after.1, ticker.1, "ticker was not restarted");
    assert_eq!(started("sidekick"), sidekick, "sidekick was restarted too");
    let history = t.environment("restarts").unwrap().status.history;
    assert_eq!(history[0].ref_, "pair");
    assert_eq!(history[0].restarted, ["ticker"]);
    assert_eq!(history[0].result.as_deref(), Some("Succeeded"));
    // never UpToDate: the same restart again restarts again
    t.deploy(&DeployRequestManifest::restart("bounce-again", "restarts", &["ticker"])).unwrap();
    t.expect_outcome("bounce-again", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_ne!(started("ticker").1, after.1);
}
