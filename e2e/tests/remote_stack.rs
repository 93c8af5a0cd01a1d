//! The reference stack (PostgreSQL + FastAPI backend + nginx frontend) driven through the remote
//! layer: compose config/build/run/up, Docker observations over the forwarded socket, health
//! checks through SSH-forwarded connections — v1.0.0 passes, v1.2.0 fails its HTTP check.
//! The same scenario runs on host 1 (docker-compose v1 only) and on the sandbox's compose v2 host
//! (`hosts.sh` gives the last host, when there are 3 or more, the `docker compose` plugin).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use slipway_controller::remote::{
    CheckKind, Compose, ComposeFlavor, HealthCheck, HealthPolicy, HostConnection, RemoteCommand, RemoteError, Repo,
    RevisionRef, SecretBytes, detect_flavor, health, parse_env_example, write_env_file,
};
use slipway_e2e::hosts::{self, TestHost, TestProject};

fn shop_checks() -> Vec<HealthCheck> {
    vec![
        HealthCheck {
            name: "backend".into(),
            kind: CheckKind::Http {
                service: "backend".into(),
                port: 8000,
                path: "/health".into(),
                expect_status: None,
                expect_json: Some(json!({"status": "healthy"})),
            },
        },
        HealthCheck {
            name: "frontend".into(),
            kind: CheckKind::Http {
                service: "frontend".into(),
                port: 80,
                path: "/".into(),
                expect_status: None,
                expect_json: None,
            },
        },
        HealthCheck {
            name: "database".into(),
            kind: CheckKind::Exec { service: "db".into(), command: vec!["pg_isready".into(), "-q".into()] },
        },
        HealthCheck { name: "database-port".into(), kind: CheckKind::Tcp { service: "db".into(), port: 5432 } },
    ]
}

async fn require_base_image(conn: &HostConnection) {
    let out =
        conn.output(&RemoteCommand::new("docker").args(["image", "inspect", "slipway-base:bookworm"])).await.unwrap();
    assert!(out.success(), "image slipway-base:bookworm is missing on the host: run e2e/scripts/images.sh");
}

/// The compose flavor `hosts.sh` set host `index` up with (`SLIPWAY_HOST_COMPOSE`; v1 when absent).
fn host_compose(sandbox: &Path, index: u32) -> Option<String> {
    let env = slipway_e2e::read_env_file(&sandbox.join(format!("hosts/host{index}/env"))).ok()?;
    Some(env.get("SLIPWAY_HOST_COMPOSE").cloned().unwrap_or_else(|| "v1".to_owned()))
}

/// The index of the sandbox's compose v2 host.
fn v2_host_index(sandbox: &Path) -> u32 {
    (1..=200)
        .take_while(|i| host_compose(sandbox, *i).is_some())
        .find(|i| host_compose(sandbox, *i).as_deref() == Some("v2"))
        .unwrap_or_else(|| {
            panic!(
                "no compose v2 host in {}: hosts.sh makes the last host one when there are 3 or more hosts \
                 and e2e/scripts/compose-v2.sh build has run (see its output in logs/compose-v2.out)",
                sandbox.display()
            )
        })
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn reference_stack_comes_up_healthy_and_v1_2_0_fails_its_http_check() {
    let sandbox = slipway_e2e::require_sandbox!();
    reference_stack_scenario(&sandbox, 1, ComposeFlavor::V1).await;
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn reference_stack_on_the_compose_v2_host() {
    let sandbox = slipway_e2e::require_sandbox!();
    let index = v2_host_index(&sandbox);
    reference_stack_scenario(&sandbox, index, ComposeFlavor::V2).await;
}

/// On host `index`, whose compose CLI must be `flavor`: the reference stack at v1.0.0 comes up
/// healthy (one-off runs, migrations, health checks, logs), then v1.2.0 fails its HTTP check.
async fn reference_stack_scenario(sandbox: &Path, index: u32, flavor: ComposeFlavor) {
    let host = TestHost::load(sandbox, index).unwrap();
    let origin = hosts::shop_origin(&host).unwrap();
    let conn = host.connect().await.unwrap();
    assert_eq!(detect_flavor(&conn).await.unwrap(), flavor, "compose CLI on {}", host.name);
    require_base_image(&conn).await;
    let project = TestProject::new(&conn, "stack").await.unwrap();
    let result = project
        .run_then_clean_up(&conn, async {
            let repo = Repo::new(&conn, project.dir.clone())?;
            repo.ensure_cloned(&origin).await?;
            repo.fetch().await?;
            let v100 = repo.resolve(&RevisionRef::Tag("v1.0.0".into())).await?;
            repo.checkout(&v100).await?;

            // .env from the revision's .env.example keys, with test values
            let example = repo.show_file(&v100, ".env.example").await?.unwrap();
            let password = format!("pw-{}", hosts::unique_name("x"));
            let mut env: BTreeMap<String, SecretBytes> = BTreeMap::new();
            for key in parse_env_example(&example) {
                let value = match key.as_str() {
                    "POSTGRES_USER" | "POSTGRES_DB" => "shop".to_owned(),
                    "POSTGRES_PASSWORD" => password.clone(),
                    "DATABASE_URL" => format!("postgresql+psycopg2://shop:{password}@db:5432/shop"),
                    _ => format!("test-{key}-value-0123456789"),
                };
                env.insert(key, SecretBytes::from(value));
            }
            write_env_file(&conn, &project.dir, &env, detect_flavor(&conn).await?).await?;

            let compose = Compose::new(&conn, project.compose()).await?;
            assert_eq!(compose.flavor(), flavor);
            let config = compose.config().await?;
            assert_eq!(config.long_running_services(), ["backend", "db", "frontend"]);
            assert!(config.services_without_healthcheck().is_empty());
            assert_eq!(
                config.services["backend"].healthcheck.as_ref().unwrap().start_period,
                Some(Duration::from_secs(30))
            );

            compose.build(&[]).await?;
            // one-off containers: exit codes and output are captured
            let out = compose.run("backend", &["python3".into(), "-c".into(), "print('one-off ok')".into()]).await?;
            assert_eq!(out.exit_code(), Some(0), "{}", out.output_tail(20, 4000));
            assert!(out.stdout().contains("one-off ok"));
            let out = compose.run("backend", &["sh".into(), "-c".into(), "echo failing >&2; exit 7".into()]).await?;
            assert_eq!(out.exit_code(), Some(7));
            assert!(out.stderr_tail().contains("failing"));

            compose.up().await?;
            let migrate = compose.run("backend", &["alembic".into(), "upgrade".into(), "head".into()]).await?;
            assert_eq!(migrate.exit_code(), Some(0), "{}", migrate.output_tail(30, 4000));

            let policy = HealthPolicy {
                timeout: Duration::from_secs(120),
                interval: Duration::from_secs(2),
                check_timeout: Duration::from_secs(10),
                expected_services: config.long_running_services(),
            };
            let report = health::verify(&conn, &project.name, &shop_checks(), &policy).await?;
            assert!(report.passed, "{}", report.summary());
            assert!(report.checks.iter().all(|c| c.passed), "{:?}", report.checks);
            for service in ["db", "backend", "frontend"] {
                let c = report
                    .containers
                    .iter()
                    .find(|c| c.service.as_deref() == Some(service) && !c.one_off)
                    .unwrap_or_else(|| panic!("no {service} container"));
                assert_eq!(c.health.as_deref(), Some("healthy"), "{service}");
                assert!(c.image_id.starts_with("sha256:"), "{}", c.image_id);
                let image = conn.image_info(&c.image_id).await?;
                assert_eq!(image.id, c.image_id);
            }
            assert_eq!(compose.ps_ids().await?.len(), 3);
            let backend = &report.containers.iter().find(|c| c.service.as_deref() == Some("backend")).unwrap().id;
            // uvicorn's startup lines, at most the 20 asked for
            let tail = conn.container_log_tail(backend, 20).await?;
            assert!(tail.contains("Application startup complete"), "backend log tail:\n{tail}");
            assert!(tail.lines().count() <= 20, "backend log tail:\n{tail}");
            let logs = compose.logs("db", 50).await?;
            assert!(!logs.contains(&password), "secret in log tail");
            println!("{} v1.0.0: {}", flavor.program(), report.summary());

            // v1.2.0: /health answers 503 {"status":"unhealthy",...}
            repo.fetch().await?;
            let v120 = repo.resolve(&RevisionRef::Tag("v1.2.0".into())).await?;
            repo.checkout(&v120).await?;
            compose.build(&["backend".to_owned()]).await?;
            // `up` may itself complain that backend is unhealthy (frontend depends on it)
            if let Err(e) = compose.up().await {
                println!("{} v1.2.0 up: {e}", flavor.program());
            }
            let policy = HealthPolicy { timeout: Duration::from_secs(15), ..policy };
            let report = health::verify(&conn, &project.name, &shop_checks(), &policy).await?;
            assert!(!report.passed);
            let backend = report.checks.iter().find(|c| c.name == "backend").unwrap();
            assert!(!backend.passed);
            assert!(backend.message.contains("503") && backend.message.contains("unhealthy"), "{}", backend.message);
            assert!(backend.message.contains("maintenance mode is stuck on"), "{}", backend.message);
            let summary = report.summary();
            assert!(summary.contains("check backend"), "{summary}");
            assert!(!summary.contains(&password));
            println!("{} v1.2.0: {summary}", flavor.program());
            Ok::<_, RemoteError>(())
        })
        .await;
    result.unwrap();
}
