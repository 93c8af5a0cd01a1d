//! Hostile refs, paths and service names either arrive verbatim (quoting) or are refused
//! (validation) — and nothing they try to run ever runs.

use slipway_controller::remote::{Compose, ComposeProject, RemoteCommand, RemoteError, Repo, RevisionRef};
use slipway_e2e::hosts::{self, TestHost};

const PWNED: &str = "/tmp/pwned";

const HOSTILE: &[&str] = &[
    "\"; touch /tmp/pwned #",
    "'; touch /tmp/pwned; '",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "x\ntouch /tmp/pwned",
    "x\r\ntouch /tmp/pwned",
    "$(id)",
    "`id`",
    "-rf",
    "--upload-pack=touch /tmp/pwned",
    "${IFS}touch${IFS}/tmp/pwned",
    "a;b|c&d>e<f",
    "*",
    "~",
    "back\\slash",
    "",
];

async fn pwned_exists(conn: &slipway_controller::remote::HostConnection) -> bool {
    conn.output(&RemoteCommand::new("test").arg("-e").arg(PWNED)).await.unwrap().success()
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn hostile_arguments_arrive_verbatim() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    assert!(!pwned_exists(&conn).await, "{PWNED} exists on the host before the test; remove it");
    for h in HOSTILE {
        // as an argument
        let out = conn.run(&RemoteCommand::new("printf").arg("%s").arg(*h)).await.unwrap();
        assert_eq!(out.stdout(), *h, "argument {h:?}");
        // several in one argv keep their boundaries
        let out = conn.run(&RemoteCommand::new("printf").arg("[%s]").args([*h, *h])).await.unwrap();
        assert_eq!(out.stdout(), format!("[{h}][{h}]"));
        // as a (non-secret) environment value
        let out = conn
            .run(&RemoteCommand::new("printenv").arg("SLIPWAY_TEST_VALUE").env("SLIPWAY_TEST_VALUE", *h))
            .await
            .unwrap();
        assert_eq!(out.stdout().strip_suffix('\n').unwrap(), *h, "env {h:?}");
        // as a file name: `test -e` gets it as one operand and simply says "no"
        let out = conn.output(&RemoteCommand::new("test").arg("-e").arg(format!("/nonexistent/{h}"))).await.unwrap();
        assert_eq!(out.exit_code(), Some(1), "path {h:?}");
    }
    // a working directory with shell syntax in it is a directory name, nothing more
    let dir = "/tmp/slipway \"; touch /tmp/pwned #";
    let out = conn.output(&RemoteCommand::new("pwd").current_dir(dir)).await.unwrap();
    assert!(!out.success());
    assert!(!pwned_exists(&conn).await, "a hostile value was executed");
}

#[tokio::test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
async fn hostile_refs_paths_and_service_names_are_refused() {
    let sandbox = slipway_e2e::require_sandbox!();
    let host = TestHost::default_host(&sandbox).unwrap();
    let conn = host.connect().await.unwrap();
    let project = hosts::TestProject::new(&conn, "quoting").await.unwrap();
    assert!(!pwned_exists(&conn).await, "{PWNED} exists before the test");
    let is_invalid = |r: Result<(), RemoteError>, what: &str| match r {
        Err(RemoteError::InvalidInput { .. }) => {}
        other => panic!("{what}: expected InvalidInput, got {other:?}"),
    };

    project
        .run_then_clean_up(&conn, async {
            let repo = Repo::new(&conn, project.dir.clone()).unwrap();
            let compose = Compose::new(&conn, project.compose()).await.unwrap();
            for h in HOSTILE {
                is_invalid(repo.resolve(&RevisionRef::Tag((*h).into())).await.map(|_| ()), &format!("tag {h:?}"));
                is_invalid(repo.resolve(&RevisionRef::Branch((*h).into())).await.map(|_| ()), &format!("branch {h:?}"));
                is_invalid(repo.resolve(&RevisionRef::Commit((*h).into())).await.map(|_| ()), &format!("commit {h:?}"));
                is_invalid(repo.checkout(h).await, &format!("checkout {h:?}"));
                is_invalid(Repo::new(&conn, *h).map(|_| ()), &format!("work tree {h:?}"));
                is_invalid(compose.logs(h, 10).await.map(|_| ()), &format!("logs {h:?}"));
                is_invalid(compose.run(h, &["true".to_owned()]).await.map(|_| ()), &format!("run {h:?}"));
                is_invalid(compose.build(&[(*h).to_owned()]).await.map(|_| ()), &format!("build {h:?}"));
                is_invalid(
                    Compose::new(
                        &conn,
                        ComposeProject::new(project.dir.clone(), *h, vec!["docker-compose.yml".into()]),
                    )
                    .await
                    .map(|_| ()),
                    &format!("project name {h:?}"),
                );
                // Origin URLs and compose files come from a spec: held to the schema's shapes.
                is_invalid(repo.ensure_cloned(h).await.map(|_| ()), &format!("origin {h:?}"));
                is_invalid(
                    Compose::new(&conn, ComposeProject::new(project.dir.clone(), "ok", vec![(*h).into()]))
                        .await
                        .map(|_| ()),
                    &format!("compose file {h:?}"),
                );
                // A file Slipway names itself may legally contain shell syntax: it arrives verbatim;
                // empty, option-like and multi-line ones are refused.
                let file = repo.show_file("0123abcd", h).await;
                if h.is_empty() || h.starts_with('-') || h.contains(['\n', '\r']) {
                    is_invalid(file.map(|_| ()), &format!("file {h:?}"));
                } else {
                    // Reached git verbatim, which knows no such commit: an error, never "absent".
                    assert!(matches!(file, Err(RemoteError::CommandFailed { .. })), "file {h:?}: {file:?}");
                }
                is_invalid(conn.project_containers(h).await.map(|_| ()), &format!("project for docker {h:?}"));
            }
            // A work tree path comes from `host.path`: shell syntax in it is refused like the schema
            // refuses it (a working directory Slipway names itself is quoted instead, see above).
            is_invalid(Repo::new(&conn, "/tmp/slipway-odd \"; touch /tmp/pwned #").map(|_| ()), "odd work tree");
            assert!(!pwned_exists(&conn).await, "a hostile value was executed");
        })
        .await;
}
