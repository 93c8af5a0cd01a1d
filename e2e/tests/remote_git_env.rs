//! The work tree on a host (clone, fetch, resolve, dirty, checkout) and the rendered `.env`
//! (atomic 0600 write, values only on stdin, read back verbatim by compose, never in errors).

use std::collections::BTreeMap;

use slipway_controller::remote::{
    Compose, ComposeFlavor, HostConnection, RemoteCommand, RemoteError, Repo, RevisionRef, SecretBytes, detect_flavor,
    missing_env_keys, write_env_file,
};
use slipway_e2e::hosts::{self, TestHost, TestProject};

async fn write_remote_file(conn: &HostConnection, path: &str, content: &str) {
    conn.run(
        &RemoteCommand::new("sh").args(["-c", "cat > \"$1\"", "write-file", path]).stdin(SecretBytes::from(content)),
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn git_clone_fetch_resolve_dirty_and_checkout() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let origin = hosts::shop_origin(&host).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "git").await.unwrap();
    let result = project
        .run_then_clean_up(&conn, async {
            let repo = Repo::new(&conn, project.dir.clone())?;
            assert!(!repo.exists().await?);
            assert!(repo.ensure_cloned(&origin).await?, "first call clones");
            assert!(!repo.ensure_cloned(&origin).await?, "second call finds the clone");
            repo.fetch().await?;

            let v100 = repo.resolve(&RevisionRef::Tag("v1.0.0".into())).await?;
            let v110 = repo.resolve(&RevisionRef::Tag("v1.1.0".into())).await?;
            let v120 = repo.resolve(&RevisionRef::Tag("v1.2.0".into())).await?;
            assert_eq!(v100.len(), 40);
            assert_ne!(v100, v110);
            // branch `main` is at v1.1.0 in the fixture; branches resolve through origin/
            assert_eq!(repo.resolve(&RevisionRef::Branch("main".into())).await?, v110);
            // an abbreviated commit resolves to the full id
            assert_eq!(repo.resolve(&RevisionRef::Commit(v120[..10].to_owned())).await?, v120);
            for missing in [
                RevisionRef::Tag("v9.9.9".into()),
                RevisionRef::Branch("no-such-branch".into()),
                RevisionRef::Commit("0123456789abcdef".into()),
            ] {
                match repo.resolve(&missing).await {
                    Err(RemoteError::RevisionNotFound { .. }) => {}
                    other => panic!("{missing:?}: {other:?}"),
                }
            }

            repo.checkout(&v100).await?;
            assert_eq!(repo.head().await?.as_deref(), Some(v100.as_str()));
            assert!(repo.dirty().await?.is_empty(), "fresh checkout is clean");

            // the rendered .env does not count as dirt; other changes do
            let env: BTreeMap<String, SecretBytes> = [("A".to_owned(), SecretBytes::from("1"))].into_iter().collect();
            write_env_file(&conn, &project.dir, &env, detect_flavor(&conn).await?).await?;
            assert!(repo.dirty().await?.is_empty(), ".env is ignored");
            write_remote_file(&conn, &format!("{}/notes.txt", project.dir), "x").await;
            write_remote_file(&conn, &format!("{}/docker-compose.yml", project.dir), "# edited on the host\n").await;
            let dirty: Vec<String> = repo.dirty().await?.iter().map(ToString::to_string).collect();
            assert_eq!(dirty, [" M docker-compose.yml", "?? notes.txt"], "{dirty:?}");

            // checkout refuses to overwrite a local change to a file the target revision changes
            write_remote_file(&conn, &format!("{}/backend/VERSION", project.dir), "edited on the host\n").await;
            match repo.checkout(&v120).await {
                Err(RemoteError::CommandFailed { stderr_tail, .. }) => {
                    assert!(stderr_tail.contains("overwritten"), "{stderr_tail}")
                }
                other => panic!("checkout over local changes: {other:?}"),
            }
            assert_eq!(repo.head().await?.as_deref(), Some(v100.as_str()));
            let restore = RemoteCommand::new("git").args(["-C", &project.dir, "checkout", "--", "."]);
            conn.run(&restore).await?;
            conn.run(&RemoteCommand::new("rm").arg(format!("{}/notes.txt", project.dir))).await?;
            assert!(repo.dirty().await?.is_empty());
            repo.checkout(&v120).await?;
            assert_eq!(repo.head().await?.as_deref(), Some(v120.as_str()));

            // a file of a revision, and a file a revision does not have
            let example = repo.show_file(&v100, ".env.example").await?.unwrap();
            assert!(example.contains("SECRET_KEY"));
            assert_eq!(repo.show_file(&v100, "no/such/file").await?, None);
            Ok::<_, RemoteError>(())
        })
        .await;
    result.unwrap();
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn env_file_is_private_atomic_verbatim_and_never_leaks() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let origin = hosts::shop_origin(&host).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "envfile").await.unwrap();
    let result = project
        .run_then_clean_up(&conn, async {
            let repo = Repo::new(&conn, project.dir.clone())?;
            repo.ensure_cloned(&origin).await?;
            let v100 = repo.resolve(&RevisionRef::Tag("v1.0.0".into())).await?;
            repo.checkout(&v100).await?;

            // .env.example check reports names only
            let provided = ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "DATABASE_URL"].map(str::to_owned);
            let missing = missing_env_keys(&repo, &v100, provided.iter()).await?;
            assert_eq!(missing, Some(vec!["SECRET_KEY".to_owned()]));

            let secret = "S3cr3t value with $HOME, #hash and \"quotes\"";
            let flavor = detect_flavor(&conn).await?;
            let tricky =
                if flavor == ComposeFlavor::V2 { "${NOT_EXPANDED}-TOPSECRET" } else { "plain-TOPSECRET-value" };
            let values: BTreeMap<String, SecretBytes> = [
                ("POSTGRES_USER", "shop"),
                ("POSTGRES_PASSWORD", secret),
                ("POSTGRES_DB", "shop"),
                ("DATABASE_URL", "postgresql+psycopg2://shop:pw@db:5432/shop"),
                ("SECRET_KEY", tricky),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), SecretBytes::from(v)))
            .collect();
            write_env_file(&conn, &project.dir, &values, detect_flavor(&conn).await?).await?;

            let stat = conn
                .run(&RemoteCommand::new("stat").args(["-c", "%a %U"]).arg(format!("{}/.env", project.dir)))
                .await?;
            assert_eq!(stat.stdout().trim(), format!("600 {}", host.user));
            let listing = conn.run(&RemoteCommand::new("ls").arg("-A").arg(&project.dir)).await?;
            assert!(!listing.stdout().contains(".env.slipway-"), "temp file left behind");

            // compose reads every value back exactly
            let cmd = match flavor {
                ComposeFlavor::V2 => {
                    RemoteCommand::new("docker").args(["compose", "-p", &project.name, "config", "--format", "json"])
                }
                ComposeFlavor::V1 => RemoteCommand::new("docker-compose").args(["-p", &project.name, "config"]),
            };
            let out = conn.run(&cmd.current_dir(project.dir.clone())).await?;
            let model: serde_json::Value = match flavor {
                ComposeFlavor::V2 => serde_json::from_str(&out.stdout()).unwrap(),
                ComposeFlavor::V1 => serde_yaml::from_str(&out.stdout()).unwrap(),
            };
            // `config` prints `$` escaped as `$$` so its output can be fed back to compose
            let value = |service: &str, key: &str| {
                model["services"][service]["environment"][key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{service}.{key} missing in {}", model["services"][service]))
                    .replace("$$", "$")
            };
            assert_eq!(value("db", "POSTGRES_PASSWORD"), secret);
            assert_eq!(value("backend", "SECRET_KEY"), tricky);

            // secret values never appear in errors, even when a program prints them to stderr
            let leak = RemoteCommand::new("sh").args(["-c", "cat .env >&2; exit 3"]).current_dir(project.dir.clone());
            let err = conn.run(&leak).await.unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("POSTGRES_USER"), "{shown}");
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("TOPSECRET"), "{shown}");
            let out = conn.output(&leak).await?;
            assert!(!out.output_tail(50, 10_000).contains(secret));
            assert!(!format!("{out:?}").contains(secret));

            // a value .env cannot carry is refused naming the key only
            let bad: BTreeMap<String, SecretBytes> =
                [("SECRET_KEY".to_owned(), SecretBytes::from("multi\nline-TOPSECRET"))].into_iter().collect();
            let err = write_env_file(&conn, &project.dir, &bad, detect_flavor(&conn).await?).await.unwrap_err();
            assert!(err.to_string().contains("SECRET_KEY"), "{err}");
            assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
            Ok::<_, RemoteError>(())
        })
        .await;
    result.unwrap();
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn a_hostile_healthcheck_duration_is_compose_invalid_not_a_crash() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = TestProject::new(&conn, "hostile-duration").await.unwrap();
    project
        .run_then_clean_up(&conn, async {
            conn.run(&RemoteCommand::new("mkdir").arg("-p").arg(project.dir.clone())).await?;
            let file = format!("{}/docker-compose.yml", project.dir);
            for start_period in ["99999999999999999999h", "-5s"] {
                let compose_file = format!(
                    "services:\n  app:\n    image: slipway-base:bookworm\n    command: [sleep, infinity]\n    \
                     healthcheck:\n      test: [CMD, 'true']\n      start_period: {start_period}\n"
                );
                write_remote_file(&conn, &file, &compose_file).await;
                let compose = Compose::new(&conn, project.compose()).await?;
                let err = compose.config().await.unwrap_err();
                assert_eq!(err.reason(), "ComposeInvalid", "start_period {start_period}: {err}");
                assert!(!err.is_transient());
                assert!(err.to_string().contains(&project.name), "{err}");
            }
            // The same file with a sane duration is accepted and read.
            let sane = "services:\n  app:\n    image: slipway-base:bookworm\n    command: [sleep, infinity]\n    \
                        healthcheck:\n      test: [CMD, 'true']\n      start_period: 30s\n";
            write_remote_file(&conn, &file, sane).await;
            let config = Compose::new(&conn, project.compose()).await?.config().await?;
            let hc = config.services["app"].healthcheck.clone().expect("healthcheck parsed");
            assert_eq!(hc.start_period, Some(std::time::Duration::from_secs(30)));
            Ok::<_, RemoteError>(())
        })
        .await
        .unwrap();
}
