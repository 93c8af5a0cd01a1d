//! Who asked for a deploy and who approved it are facts, not claims: the ValidatingAdmissionPolicy
//! installed from `manifests/` admits `slipway.dev/requested-by` and `slipway.dev/approved-by`
//! only with the name of the user the API server authenticated, and an approval only from a user
//! allowed the `approve` verb. Users are impersonated with `kubectl --as`.

use std::time::Duration;

use slipway_e2e::cluster::TestCluster;
use slipway_e2e::require_sandbox;

const DENIED: &str = "ValidatingAdmissionPolicy 'slipway-deployrequest-identity' with binding 'slipway-deployrequest-identity' denied request";

/// An Environment requiring approval whose Secrets do not exist: a request that passes the
/// approval gate takes the lock and stops at preflight (SecretNotFound), no SSH host needed.
const ENVIRONMENT: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Environment
metadata: {name: production}
spec:
  tier: production
  host: {address: 127.0.0.1, port: 22, user: deploy, path: /srv/shop}
  sshKeySecretRef: {name: shop-ssh, key: id_ed25519}
  knownHostsSecretRef: {name: shop-ssh, key: known_hosts}
  policy: {requireApproval: true}
"#;

fn request(name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: slipway.dev/v1alpha1\nkind: DeployRequest\nmetadata:\n  name: {name}\n  annotations: {{{annotations}}}\n\
         spec:\n  environment: production\n  revision: {{tag: v1.2.3}}\n"
    )
}

/// Runs kubectl as `user` (the admin kubeconfig's own user when `None`); Ok(stdout) when it
/// succeeded, Err(stderr) when the API refused.
fn kubectl(cluster: &TestCluster, user: Option<&str>, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let out = match user {
        Some(user) => cluster.kubectl_as(user, args, stdin),
        None => cluster.kubectl_with_stdin(args, stdin),
    }
    .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn as_user(cluster: &TestCluster, user: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    kubectl(cluster, Some(user), args, stdin)
}

fn refused(result: Result<String, String>, what: &str, message: &str) {
    match result {
        Ok(out) => panic!("{what}: accepted ({out}), expected the refusal {message:?}"),
        Err(err) => {
            assert!(err.contains(DENIED) && err.contains(message), "{what}: expected {message:?} in:\n{err}");
            assert!(err.contains("Forbidden"), "{what}: not Forbidden:\n{err}");
        }
    }
}

fn annotation(cluster: &TestCluster, name: &str, key: &str) -> String {
    cluster.jsonpath(&format!("dr/{name}"), &format!("{{.metadata.annotations.{}}}", key.replace('.', "\\."))).unwrap()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_api_server_records_who_asked_and_admits_approval_only_from_an_approver() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "approval").unwrap();
    cluster.grant_deploy_requests("alice", false).unwrap();
    cluster.grant_deploy_requests("carol", true).unwrap();
    let create = ["create", "-f", "-"];

    // The requester is the authenticated user: a claim of someone else, or none, is refused.
    refused(
        as_user(&cluster, "alice", &create, Some(&request("shop-1", "slipway.dev/requested-by: bob"))),
        "alice claiming bob asked",
        "slipway.dev/requested-by must be the user creating the object: it says bob but the request comes from alice",
    );
    refused(
        as_user(&cluster, "alice", &create, Some(&request("shop-1", ""))),
        "no requester",
        "the annotation slipway.dev/requested-by is required: set it to the name of the user creating it, alice",
    );
    as_user(&cluster, "alice", &create, Some(&request("shop-1", "slipway.dev/requested-by: alice"))).unwrap();
    assert_eq!(annotation(&cluster, "shop-1", "slipway.dev/requested-by"), "alice");
    // ... and stays what it was, whoever tries (an administrator below).
    for user in ["alice", "carol"] {
        refused(
            as_user(
                &cluster,
                user,
                &["annotate", "--overwrite", "dr", "shop-1", "slipway.dev/requested-by=carol"],
                None,
            ),
            &format!("{user} rewriting the requester"),
            "slipway.dev/requested-by is immutable: it records who asked",
        );
    }
    refused(
        kubectl(&cluster, None, &["annotate", "--overwrite", "dr", "shop-1", "slipway.dev/requested-by=root"], None),
        "an administrator rewriting the requester",
        "slipway.dev/requested-by is immutable",
    );
    // Other metadata changes pass (the policy judges only the two annotations).
    as_user(&cluster, "alice", &["label", "dr", "shop-1", "team=shop"], None).unwrap();

    // Approval needs the `approve` verb: alice has none.
    let approve = |user: &str, who: &str| {
        as_user(
            &cluster,
            user,
            &["annotate", "--overwrite", "dr", "shop-1", &format!("slipway.dev/approved-by={who}")],
            None,
        )
    };
    refused(
        approve("alice", "alice"),
        "alice approving without the approve verb",
        &format!(
            "user alice may not approve DeployRequests in namespace {}: approving needs the verb approve on \
             deployrequests.slipway.dev (a RoleBinding to the ClusterRole slipway-approver)",
            cluster.namespace
        ),
    );
    // The status subresource carries no metadata: it is no way around the policy.
    as_user(
        &cluster,
        "alice",
        &[
            "patch",
            "dr",
            "shop-1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"metadata":{"annotations":{"slipway.dev/approved-by":"alice"}}}"#,
        ],
        None,
    )
    .unwrap();
    assert_eq!(annotation(&cluster, "shop-1", "slipway.dev/approved-by"), "", "a status write approved");

    // carol may approve, under her own name only.
    refused(
        approve("carol", "alice"),
        "carol approving as alice",
        "slipway.dev/approved-by must name the user who sets it, carol",
    );
    approve("carol", "carol").unwrap();
    assert_eq!(annotation(&cluster, "shop-1", "slipway.dev/approved-by"), "carol");
    // An unchanged approval passes any later update; alice cannot put her own name in its place.
    as_user(&cluster, "alice", &["label", "--overwrite", "dr", "shop-1", "team=payments"], None).unwrap();
    refused(approve("alice", "alice"), "alice replacing carol's approval", "user alice may not approve DeployRequests");
    // Withdrawing an approval is allowed.
    as_user(&cluster, "alice", &["annotate", "dr", "shop-1", "slipway.dev/approved-by-"], None).unwrap();
    assert_eq!(annotation(&cluster, "shop-1", "slipway.dev/approved-by"), "");

    // An approver may create a request approved from the start, under her own name.
    let both = "slipway.dev/requested-by: carol, slipway.dev/approved-by: carol";
    as_user(&cluster, "carol", &create, Some(&request("shop-2", both))).unwrap();
    let by_alice = "slipway.dev/requested-by: alice, slipway.dev/approved-by: alice";
    refused(
        as_user(&cluster, "alice", &create, Some(&request("shop-3", by_alice))),
        "alice creating a request approved by herself",
        "user alice may not approve DeployRequests",
    );

    // The admin kubeconfig is held to the same rule, with its own user name.
    let admin = cluster.user().unwrap();
    refused(
        kubectl(&cluster, None, &create, Some(&request("shop-4", "slipway.dev/requested-by: alice"))),
        "the admin claiming alice asked",
        &format!("it says alice but the request comes from {admin}"),
    );
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn an_unapproved_request_waits_outside_the_queue_until_an_approver_annotates_it() {
    let sandbox = require_sandbox!();
    let mut cluster = TestCluster::new(&sandbox, "approval-wait").unwrap();
    cluster.grant_deploy_requests("alice", false).unwrap();
    cluster.grant_deploy_requests("carol", true).unwrap();
    cluster.start_controller().unwrap();
    cluster.apply(ENVIRONMENT).unwrap();
    as_user(&cluster, "alice", &["create", "-f", "-"], Some(&request("shop-45", "slipway.dev/requested-by: alice")))
        .unwrap();

    // Not approved: Stalled with the fix named, no phase, not queued, no lock taken.
    cluster.wait_ready_reason("dr/shop-45", "ApprovalRequired", Duration::from_secs(30)).unwrap();
    assert_eq!(cluster.condition("dr/shop-45", "Stalled", "status").unwrap(), "True");
    let message = cluster.condition("dr/shop-45", "Ready", "message").unwrap();
    assert!(
        message.contains(
            "an approver (a user allowed the `approve` verb on deployrequests) must annotate it: \
                          kubectl annotate deployrequest shop-45 slipway.dev/approved-by=<their user name>"
        ),
        "{message}"
    );
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.phase}").unwrap(), "");
    assert_eq!(cluster.jsonpath("env/production", "{.status.activeDeploy}").unwrap(), "");
    assert_eq!(cluster.jsonpath("env/production", "{.status.queue}").unwrap(), "");

    // Refused approval changes nothing; carol's wakes the request through the watch: it moves past
    // the gate, takes the lock and stops at preflight on the missing Secrets.
    let annotate = |user: &str| {
        as_user(&cluster, user, &["annotate", "dr", "shop-45", &format!("slipway.dev/approved-by={user}")], None)
    };
    refused(annotate("alice"), "alice approving", "user alice may not approve DeployRequests");
    annotate("carol").unwrap();
    let took = cluster.wait_ready_reason("dr/shop-45", "SecretNotFound", Duration::from_secs(15)).unwrap();
    eprintln!("the approved request reached preflight {} ms after its approval", took.as_millis());
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.phase}").unwrap(), "Failed");
    assert_eq!(cluster.jsonpath("dr/shop-45", "{.status.steps[0].name}").unwrap(), "Preflight");
    assert_eq!(cluster.jsonpath("env/production", "{.status.activeDeploy}").unwrap(), "");

    let described = cluster.kubectl_ok(&["describe", "dr", "shop-45"]).unwrap();
    let events = described.split_once("Events:").map(|(_, e)| e).unwrap_or_default();
    assert!(events.contains("ApprovalRequired") && events.contains("SecretNotFound"), "describe:\n{described}");
}
