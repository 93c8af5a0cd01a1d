//! `kubectl slipway` end to end, as an on-call engineer runs it: each subcommand's output and
//! exit code against a real API server and controller, deploys followed to `Succeeded` and to
//! `Failed`, a rollback, and an approval given by the approver's own command.
//!
//! Each test has its own namespace, controller and compose project (`swt-...`) and deploys the
//! one-service `ticker` app (tags ticker-v1..v3), so they run alongside the other deploy tests.

use std::time::{Duration, Instant};

use serde_json::Value;
use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployTest, EnvironmentManifest, Gates};
use slipway_e2e::require_sandbox;

/// Exit codes of the plugin (README "kubectl slipway").
const OK: i32 = 0;
const FAILED: i32 = 1;
const ERROR: i32 = 6;

/// How long a followed deploy may take before the plugin stops following (exit 5, a failure here).
const FOLLOW: &str = "300s";

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn plugin_deploys_follows_reads_back_and_rolls_back() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "plugin").unwrap();
    let site = t.site(2, "plugin").unwrap();
    t.create_environment(&EnvironmentManifest::new("staging", App::Ticker, &site)).unwrap();
    let c = &t.cluster;
    let ns = c.namespace.clone();
    let user = c.user().unwrap();

    // status before any release
    let run = c.slipway(&["status"]).unwrap().expect_code(OK);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("ENVIRONMENT   RELEASE   COMMIT"), "{run}");
    assert!(lines[1].starts_with("staging       -         -"), "{run}");

    // a deploy followed to Succeeded, phase by phase
    let run = c
        .slipway(&["deploy", "staging", "--tag", "ticker-v1", "--issue", "#7", "--name", "p-v1", "--timeout", FOLLOW])
        .unwrap()
        .expect_code(OK);
    println!("$ kubectl slipway deploy staging --tag ticker-v1 ...\n{}", run.stdout);
    let out = &run.stdout;
    assert!(
        out.starts_with(&format!(
            "deployrequest/p-v1 created: tag ticker-v1 on Environment staging (requested by {user})\n"
        )),
        "{run}"
    );
    for line in [
        "✓ Preflight Succeeded in ",
        "Rebuilding",
        "✓ Rebuilding Succeeded in ",
        "✓ Verifying Succeeded in ",
        "Succeeded after ",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{run}");
    }
    let order = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{run}"));
    assert!(order("✓ Preflight") < order("✓ Rebuilding") && order("✓ Rebuilding") < order("✓ Verifying"), "{run}");
    assert_eq!(site.head().unwrap(), site.commit_of("ticker-v1").unwrap());

    // a second release; then one followed to Failed: the tag does not exist
    c.slipway(&["deploy", "staging", "--tag", "ticker-v2", "--issue", "#8", "--name", "p-v2", "--timeout", FOLLOW])
        .unwrap()
        .expect_code(OK);
    let run = c
        .slipway(&[
            "deploy",
            "staging",
            "--tag",
            "no-such-tag",
            "--issue",
            "#9",
            "--name",
            "p-missing",
            "--timeout",
            FOLLOW,
        ])
        .unwrap()
        .expect_code(FAILED);
    assert!(run.stdout.contains("✗ Preflight Failed"), "{run}");
    println!("$ kubectl slipway deploy staging --tag no-such-tag ...\n{}", run.stdout);
    assert!(run.stdout.contains("Failed (RevisionNotFound) after "), "{run}");
    assert!(run.stdout.contains("steps and output: kubectl slipway logs dr/p-missing"), "{run}");
    // refused by a gate (requireIssue): Failed too
    let run =
        c.slipway(&["deploy", "staging", "--tag", "ticker-v3", "--name", "p-no-issue", "--timeout", FOLLOW]).unwrap();
    let run = run.expect_code(FAILED);
    assert!(run.stdout.contains("Failed (IssueRequired)"), "{run}");

    // status: the table, one Environment in detail, and JSON
    let v2 = site.commit_of("ticker-v2").unwrap();
    let run = c.slipway(&["status"]).unwrap().expect_code(OK);
    let row = run.stdout.lines().nth(1).unwrap_or_default();
    for cell in ["staging", "ticker-v2", &v2[..7], "ticker-v2 Succeeded"] {
        assert!(row.contains(cell), "no {cell:?} in the row of\n{run}");
    }
    let run = c.slipway(&["status", "staging"]).unwrap().expect_code(OK);
    assert!(run.stdout.contains(&format!("Release:         ticker-v2 (commit {})\n", &v2[..7])), "{run}");
    assert!(run.stdout.contains("Lock:            free\n"), "{run}");
    assert!(
        run.stdout.contains(&format!("Last deploy:     ticker-v2 Succeeded by dr/p-v2, requested by {user}, ")),
        "{run}"
    );
    let summary = c.slipway(&["status", "staging", "-o", "json"]).unwrap().expect_code(OK).json();
    assert_eq!(summary["release"], "ticker-v2");
    assert_eq!(summary["commit"], v2.as_str());
    assert_eq!(summary["lock"], Value::Null);
    assert_eq!(summary["queue"], serde_json::json!([]));
    assert_eq!(summary["lastDeploy"]["requestedBy"], user.as_str());
    let yaml = c.slipway(&["status", "-o", "yaml"]).unwrap().expect_code(OK);
    assert!(yaml.stdout.starts_with("- name: staging\n"), "{yaml}");

    // history: newest first, the running one marked, who asked and the issue
    let run = c.slipway(&["history", "staging"]).unwrap().expect_code(OK);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run}");
    assert!(lines[0].contains("REF") && lines[0].contains("MIGRATION") && lines[0].contains("REQUESTED BY"), "{run}");
    assert!(lines[1].starts_with("*   ticker-v2") && lines[1].contains("#8") && lines[1].contains("dr/p-v2"), "{run}");
    assert!(lines[1].contains(&user) && lines[1].contains("Succeeded"), "{run}");
    assert!(lines[2].starts_with("    ticker-v1") && lines[2].contains("#7"), "{run}");
    let history = c.slipway(&["history", "staging", "-o", "json"]).unwrap().expect_code(OK).json();
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history:#}");
    assert_eq!(history[0]["requestedBy"], user.as_str());

    // logs: the steps with their timings, by bare name and kind/name, and as JSON
    let run = c.slipway(&["logs", "p-missing"]).unwrap().expect_code(OK);
    assert!(run.stdout.starts_with("DeployRequest p-missing on Environment staging: tag no-such-tag\n"), "{run}");
    assert!(run.stdout.contains("Phase: Failed (RevisionNotFound): "), "{run}");
    assert!(run.stdout.contains("✗ Preflight    Failed     "), "{run}");
    let run = c.slipway(&["logs", "dr/p-v2"]).unwrap().expect_code(OK);
    assert!(run.stdout.contains("✓ Verifying    Succeeded  ") && run.stdout.contains("  took "), "{run}");
    let log = c.slipway(&["logs", "deployrequest/p-v2", "-o", "json"]).unwrap().expect_code(OK).json();
    let steps: Vec<&str> = log["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps.first(), Some(&"Preflight"), "{log:#}");
    assert_eq!(steps.last(), Some(&"Verifying"), "{log:#}");
    assert_eq!(log["phase"], "Succeeded");

    // env: the running revision's .env.example keys, present or missing (names only)
    let run = c.slipway(&["env", "staging"]).unwrap().expect_code(OK);
    assert!(
        run.stdout.contains(&format!(".env.example at commit {} lists 1 variable; Secret staging-env:", &v2[..7])),
        "{run}"
    );
    assert!(run.stdout.contains("TICKER_NAME   present\n"), "{run}");
    assert!(!run.stdout.contains("ticker-e2e"), "a value was printed:\n{run}");
    let env = c.slipway(&["env", "staging", "-o", "json"]).unwrap().expect_code(OK).json();
    assert_eq!(env["variables"], serde_json::json!([{"name": "TICKER_NAME", "present": true}]));
    assert_eq!(env["commit"], v2.as_str());

    // a rollback to the previous release, followed to Succeeded
    let run = c
        .slipway(&["rollback", "staging", "--reason", "ticker-v2 misbehaves", "--name", "p-undo", "--timeout", FOLLOW])
        .unwrap()
        .expect_code(OK);
    assert!(
        run.stdout.starts_with("rollback/p-undo created: Environment staging back to the previous release"),
        "{run}"
    );
    assert!(run.stdout.contains("✓ Rebuilding Succeeded") && run.stdout.contains("Succeeded after "), "{run}");
    assert_eq!(site.head().unwrap(), site.commit_of("ticker-v1").unwrap());
    // the release is recorded as the lock is released, a moment after Succeeded
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.slipway(&["status", "staging", "-o", "json"]).unwrap().expect_code(OK).json()["release"] != "ticker-v1"
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = c.slipway(&["status", "staging"]).unwrap().expect_code(OK);
    println!("$ kubectl slipway status staging\n{}", run.stdout);
    assert!(run.stdout.contains("Release:         ticker-v1 ("), "{run}");
    assert!(run.stdout.contains("Last deploy:     ticker-v1 Succeeded by rollback/p-undo"), "{run}");
    let run = c.slipway(&["logs", "p-undo"]).unwrap().expect_code(OK);
    println!("$ kubectl slipway logs p-undo\n{}", run.stdout);
    assert!(run.stdout.starts_with("Rollback p-undo on Environment staging: "), "{run}");
    assert!(run.stdout.contains("Downgrading"), "{run}");
    let run = c.slipway(&["history", "staging"]).unwrap().expect_code(OK);
    println!("$ kubectl slipway history staging\n{}", run.stdout);
    assert!(run.stdout.lines().nth(1).unwrap_or_default().contains("ticker-v2 misbehaves"), "{run}");

    // --no-wait returns at once with the object created
    let start = Instant::now();
    let run =
        c.slipway(&["deploy", "staging", "--tag", "ticker-v3", "--issue", "#10", "--no-wait"]).unwrap().expect_code(OK);
    assert!(start.elapsed() < Duration::from_secs(20), "{run}");
    let name = run.stdout.split_whitespace().next().and_then(|w| w.strip_prefix("deployrequest/")).unwrap();
    assert!(name.starts_with("staging-ticker-v3-"), "{run}");
    t.expect_outcome(name, "Succeeded", DEPLOY_TIMEOUT).unwrap();

    // errors that name the fix
    let run = c.slipway(&["status", "nope"]).unwrap().expect_code(ERROR);
    assert!(
        run.stderr.contains(&format!(
            "Environment \"nope\" not found in namespace {ns}: list them with `kubectl get env -n {ns}`"
        )),
        "{run}"
    );
    let run = c.slipway(&["logs", "nothing-here"]).unwrap().expect_code(ERROR);
    assert!(run.stderr.contains(&format!("`kubectl get dr,rollback -n {ns}`")), "{run}");
    let run = c.slipway(&["deploy", "nope", "--tag", "ticker-v1"]).unwrap().expect_code(ERROR);
    assert!(run.stderr.contains("kubectl get env -n"), "{run}");
    let run = c.slipway(&["--context", "no-such-context", "status"]).unwrap().expect_code(ERROR);
    assert!(run.stderr.contains("no-such-context") && run.stderr.contains("kubectl config get-contexts"), "{run}");
    let run =
        c.slipway(&["deploy", "staging", "--tag", "ticker-v1", "--approved-by", "someone"]).unwrap().expect_code(2);
    assert!(run.stderr.contains("kubectl slipway approve"), "{run}");
    // KUBECONFIG from the environment, as kubectl reads it
    let out = std::process::Command::new(slipway_e2e::plugin::plugin_binary())
        .args(["status", "-n", &ns, "-o", "json"])
        .env("KUBECONFIG", &c.admin_kubeconfig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all[0]["name"], "staging");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn plugin_deploy_waits_for_the_approver_who_approves_with_the_plugin() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "plugin-approve").unwrap();
    let site = t.site(3, "plugapp").unwrap();
    let mut env = EnvironmentManifest::new("prod", App::Ticker, &site);
    env.gates = Gates { require_issue: false, require_approval: true, ..Gates::default() };
    t.create_environment(&env).unwrap();
    let c = &t.cluster;
    let user = c.user().unwrap();

    let follower =
        c.slipway_spawn(&["deploy", "prod", "--tag", "ticker-v1", "--name", "a1", "--timeout", FOLLOW]).unwrap();
    // it waits, Stalled, outside the queue until approved
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = t.get_json(&["deployrequest"]).unwrap();
        if !status.is_empty() && t.deploy_request("a1").unwrap().status.condition_status("Stalled") == "True" {
            break;
        }
        assert!(Instant::now() < deadline, "a1 not Stalled within 60 s\n{}", t.describe("a1"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(t.deploy_request("a1").unwrap().status.ready_reason(), "ApprovalRequired");
    let run = c.slipway(&["approve", "a1"]).unwrap().expect_code(OK);
    assert_eq!(run.stdout, format!("deployrequest/a1 approved by {user}\n"));
    assert_eq!(c.jsonpath("deployrequest/a1", "{.metadata.annotations.slipway\\.dev/approved-by}").unwrap(), user);

    let run = follower.wait().unwrap().expect_code(OK);
    println!("$ kubectl slipway deploy prod --tag ticker-v1 --name a1\n{}", run.stdout);
    assert!(
        run.stdout.contains("Environment prod requires approval: an approver runs `kubectl slipway approve a1 -n "),
        "{run}"
    );
    assert!(run.stdout.contains("Waiting ") && run.stdout.contains("Succeeded after "), "{run}");
    // the release is recorded in the history as the lock is released, a moment after Succeeded
    let deadline = Instant::now() + Duration::from_secs(30);
    let history = loop {
        let history = c.slipway(&["history", "prod", "-o", "json"]).unwrap().expect_code(OK).json();
        if !history[0].is_null() || Instant::now() > deadline {
            break history;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(history[0]["approvedBy"], user.as_str(), "{history:#}");

    // approving what does not exist names the fix
    let run = c.slipway(&["approve", "dr/nope"]).unwrap().expect_code(ERROR);
    assert!(run.stderr.contains("kubectl get deployrequests -n"), "{run}");
}
