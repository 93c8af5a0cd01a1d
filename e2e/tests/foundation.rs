//! The foundation, as `kubectl` shows it: schema docs and validation, printer columns, status
//! conditions driven by a real controller process, and its metrics.

use std::time::Duration;

use slipway_e2e::cluster::TestCluster;
use slipway_e2e::require_sandbox;

const ENVIRONMENT: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Environment
metadata: {name: staging}
spec:
  tier: staging
  host: {address: 127.0.0.1, port: 22, user: deploy, path: /srv/shop}
  sshKeySecretRef: {name: shop-ssh, key: id_ed25519}
  knownHostsSecretRef: {name: shop-ssh, key: known_hosts}
"#;

/// A DeployRequest as the admin kubeconfig's user asks for it (the API server admits
/// `slipway.dev/requested-by` only with the name of the user creating the request).
fn deploy_request(cluster: &TestCluster, name: &str, revision: &str) -> String {
    let user = cluster.user().unwrap();
    format!(
        "apiVersion: slipway.dev/v1alpha1\nkind: DeployRequest\nmetadata:\n  name: {name}\n  annotations: {{slipway.dev/requested-by: \"{user}\"}}\nspec:\n  environment: staging\n  revision: {revision}\n"
    )
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn kubectl_explain_documents_the_revision() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "explain").unwrap();
    let out = cluster.kubectl_ok(&["explain", "deployrequest.spec.revision"]).unwrap();
    for expected in ["exactly one of branch, tag or commit", "branch", "tag", "commit", "7 to 64 hexadecimal"] {
        assert!(out.contains(expected), "`kubectl explain deployrequest.spec.revision` lacks {expected:?}:\n{out}");
    }
    let env = cluster.kubectl_ok(&["explain", "environment.spec"]).unwrap();
    let words = env.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("knownHostsSecretRef <Object> -required-"), "knownHostsSecretRef not required:\n{env}");
    assert!(words.contains("refuses a changed or unknown key"), "{env}");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn invalid_deploy_requests_are_refused_with_what_to_fix() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "invalid-dr").unwrap();
    let cases: &[(&str, &str)] = &[
        ("{tag: v1.0.0, branch: main}", "exactly one of branch, tag or commit"),
        ("{}", "exactly one of branch, tag or commit"),
        ("{tag: \"v1 .0\"}", "tag must be a git ref name"),
        ("{tag: \"v1;reboot\"}", "tag must be a git ref name"),
        ("{branch: \"$(id)\"}", "branch must be a git ref name"),
        ("{branch: \"`id`\"}", "branch must be a git ref name"),
        ("{branch: \"-rf\"}", "branch must be a git ref name"),
        ("{branch: \"feature/../main\"}", "must not contain '..'"),
        ("{tag: \"v1.lock\"}", "nor end with '/', '.' or '.lock'"),
        ("{commit: xyz1234}", "commit must be 7 to 64 hexadecimal characters"),
        ("{commit: abc12}", "commit must be 7 to 64 hexadecimal characters"),
    ];
    for (i, (revision, message)) in cases.iter().enumerate() {
        let err = cluster.refused(&deploy_request(&cluster, &format!("bad-{i}"), revision)).unwrap();
        assert!(err.contains(message), "revision {revision}: expected {message:?} in:\n{err}");
        assert!(err.contains("DeployRequest"), "the error does not name the kind: {err}");
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn invalid_environments_are_refused_with_what_to_fix() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "invalid-env").unwrap();
    let cases: &[(&str, &str, &str)] = &[
        ("path: /srv/shop", "path: srv/shop", "path must be an absolute path"),
        ("path: /srv/shop", "path: \"/srv/shop; rm -rf /\"", "path must be an absolute path"),
        ("path: /srv/shop", "path: /srv/../etc", "must not contain '..' or '.' segments"),
        ("path: /srv/shop", "path: /", "path must be an absolute path below /"),
        ("port: 22", "port: 0", "should be greater than or equal to 1"),
        ("port: 22", "port: 70000", "should be less than or equal to 65535"),
        ("address: 127.0.0.1", "address: \"-oProxyCommand=id\"", "address must be a host name or IP address"),
        ("  knownHostsSecretRef: {name: shop-ssh, key: known_hosts}\n", "", "knownHostsSecretRef: Required value"),
    ];
    for (i, (from, to, message)) in cases.iter().enumerate() {
        let yaml = ENVIRONMENT.replace("name: staging", &format!("name: bad-{i}")).replace(from, to);
        assert_ne!(yaml, ENVIRONMENT.replace("name: staging", &format!("name: bad-{i}")), "case {i} changed nothing");
        let err = cluster.refused(&yaml).unwrap();
        assert!(err.contains(message), "{to:?}: expected {message:?} in:\n{err}");
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deploy_request_spec_is_immutable() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "immutable").unwrap();
    cluster.apply(&deploy_request(&cluster, "shop-1", "{tag: v1.0.0}")).unwrap();
    let out = cluster
        .kubectl(&[
            "patch",
            "deployrequest",
            "shop-1",
            "--type=merge",
            "-p",
            r#"{"spec":{"revision":{"tag":"v9.9.9"}}}"#,
        ])
        .unwrap();
    assert!(!out.status.success(), "the spec change was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DeployRequest spec is immutable"), "{err}");
    assert_eq!(cluster.jsonpath("dr/shop-1", "{.spec.revision.tag}").unwrap(), "v1.0.0");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deploy_request_waits_for_its_environment_then_runs() {
    let sandbox = require_sandbox!();
    let mut cluster = TestCluster::new(&sandbox, "envwatch").unwrap();
    cluster.start_controller().unwrap();
    cluster.apply(&deploy_request(&cluster, "shop-45", "{tag: v1.2.3}")).unwrap();

    cluster.wait_ready_reason("deployrequest/shop-45", "EnvironmentNotFound", Duration::from_secs(30)).unwrap();
    let message = cluster.condition("dr/shop-45", "Ready", "message").unwrap();
    assert!(message.contains(&format!("Environment \"staging\" not found in namespace \"{}\"", cluster.namespace)));
    assert_eq!(cluster.condition("dr/shop-45", "Stalled", "status").unwrap(), "True");

    // The Environment appears (a watch wakes the request, no polling): the request takes its
    // lock and stops at preflight, because the Secrets the Environment names do not exist.
    cluster.apply(ENVIRONMENT).unwrap();
    let took = cluster
        .wait(
            "deployrequest/shop-45",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}=SecretNotFound",
            Duration::from_secs(10),
        )
        .unwrap();
    eprintln!("DeployRequest reached preflight {} ms after its Environment was created", took.as_millis());
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.phase}").unwrap(), "Failed");
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.steps[0].name}").unwrap(), "Preflight");
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.steps[0].result}").unwrap(), "Failed");
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.observedGeneration}").unwrap(), "1");
    // It stalled under the lock and released it.
    assert_eq!(cluster.jsonpath("env/staging", "{.status.activeDeploy}").unwrap(), "");

    let described = cluster.kubectl_ok(&["describe", "deployrequest", "shop-45"]).unwrap();
    let events = described.split_once("Events:").map(|(_, e)| e).unwrap_or_default();
    assert!(events.contains("EnvironmentNotFound") && events.contains("SecretNotFound"), "describe:\n{described}");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn kubectl_get_shows_printer_columns_and_metrics_count_reconciles() {
    let sandbox = require_sandbox!();
    let mut cluster = TestCluster::new(&sandbox, "columns").unwrap();
    cluster.start_controller().unwrap();
    cluster.apply(ENVIRONMENT).unwrap();
    cluster.apply(&deploy_request(&cluster, "shop-7", "{commit: 4f1c2ab}")).unwrap();
    cluster.wait("dr/shop-7", "jsonpath={.status.phase}=Failed", Duration::from_secs(30)).unwrap();

    let table = cluster.kubectl_ok(&["get", "dr"]).unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ENVIRONMENT", "REVISION", "PHASE", "READY", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..6], ["shop-7", "staging", "commit", "4f1c2ab", "Failed", "False"], "{table}");
    let wide = cluster.kubectl_ok(&["get", "dr", "-o", "wide"]).unwrap();
    assert!(wide.lines().next().unwrap().ends_with("MESSAGE"), "{wide}");
    assert!(wide.contains("Secret \"shop-ssh\" (named by spec.sshKeySecretRef) not found"), "{wide}");

    let envs = cluster.kubectl_ok(&["get", "env"]).unwrap();
    let header: Vec<&str> = envs.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "HOST", "TIER", "DESIRED", "CURRENT", "READY", "AGE"], "{envs}");
    // The Secrets the Environment names do not exist: the controller (reading Secrets through the
    // RoleBinding the test made) says so, naming the Secret.
    cluster.wait_ready_reason("env/staging", "SecretNotFound", Duration::from_secs(30)).unwrap();
    let message = cluster.condition("env/staging", "Ready", "message").unwrap();
    assert!(message.contains("Secret \"shop-ssh\" (named by spec.sshKeySecretRef) not found"), "{message}");

    let (code, metrics) = cluster.controller_get("/metrics").unwrap();
    assert_eq!(code, 200);
    let count = |controller: &str| -> u64 {
        let prefix = format!("slipway_reconciles_total{{controller=\"{controller}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    assert!(count("deployrequest") >= 1, "{metrics}");
    assert!(count("environment") >= 1, "{metrics}");
    assert!(metrics.contains("slipway_reconcile_duration_seconds_bucket"), "{metrics}");
    assert_eq!(cluster.controller_get("/healthz").unwrap().0, 200);
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn rollback_reports_a_missing_environment() {
    let sandbox = require_sandbox!();
    let mut cluster = TestCluster::new(&sandbox, "rollback").unwrap();
    cluster.start_controller().unwrap();
    let user = cluster.user().unwrap();
    cluster
        .apply(&format!(
            "apiVersion: slipway.dev/v1alpha1\nkind: Rollback\nmetadata: {{name: undo, annotations: {{slipway.dev/requested-by: {user:?}}}}}\n\
             spec:\n  environment: staging\n  to: {{previous: true}}\n  reason: 5xx after v1.1.0\n"
        ))
        .unwrap();
    cluster.wait_ready_reason("rollback/undo", "EnvironmentNotFound", Duration::from_secs(30)).unwrap();
    // Once the Environment exists it is judged: a new Environment has no release to go back to.
    cluster.apply(ENVIRONMENT).unwrap();
    cluster.wait_ready_reason("rollback/undo", "ReleaseNotInHistory", Duration::from_secs(30)).unwrap();
    let message = cluster.jsonpath("rollback/undo", "{.status.conditions[?(@.type==\"Ready\")].message}").unwrap();
    assert!(message.contains("the history is empty"), "{message}");
    let refused = cluster
        .refused("apiVersion: slipway.dev/v1alpha1\nkind: Rollback\nmetadata: {name: two}\nspec:\n  environment: staging\n  to: {previous: true, tag: v1.0.0}\n  reason: x\n")
        .unwrap();
    assert!(refused.contains("to must set exactly one of previous: true, tag or release"), "{refused}");
    let refused = cluster
        .refused("apiVersion: slipway.dev/v1alpha1\nkind: Rollback\nmetadata: {name: three}\nspec:\n  environment: staging\n  to: {previous: true}\n")
        .unwrap();
    assert!(refused.contains("spec.reason: Required value"), "a Rollback says why: {refused}");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn controller_logs_json_on_request_and_stops_cleanly_on_sigterm() {
    let sandbox = require_sandbox!();
    let mut cluster = TestCluster::new(&sandbox, "shutdown").unwrap();
    cluster.start_controller_with(&["--log-format", "json"]).unwrap();
    cluster.apply(&deploy_request(&cluster, "shop-9", "{branch: main}")).unwrap();
    cluster.wait_ready_reason("dr/shop-9", "EnvironmentNotFound", Duration::from_secs(30)).unwrap();
    let status =
        cluster.stop_controller(Duration::from_secs(10)).expect("controller did not stop within 10 s of SIGTERM");
    assert!(status.success(), "controller exited with {status}");
    let log = cluster.controller_log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"shutting down") && messages.last() == Some(&"stopped"), "{messages:?}");
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_documented_examples_are_accepted_by_the_api_server() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "examples").unwrap();
    let examples = slipway_e2e::cluster::repo_root().join("manifests/examples");
    for file in ["environment.yaml", "deployrequest.yaml", "rollback.yaml", "rbac.yaml", "approver.yaml"] {
        let path = examples.join(file);
        // As the user the example DeployRequest names as its requester (the admission policy
        // admits it from that user only), with an administrator's rights for the rest.
        let as_alice = ["--as", "alice", "--as-group", "system:masters"];
        let out = cluster
            .kubectl(&[&as_alice[..], &["apply", "--dry-run=server", "-f", path.to_str().unwrap()]].concat())
            .unwrap();
        assert!(out.status.success(), "{file} refused: {}", String::from_utf8_lossy(&out.stderr));
    }
}
