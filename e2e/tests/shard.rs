//! Sharding: two controllers with disjoint `--watch-label-selector`s each reconcile only their
//! own Environments and requests, and each elects its leader on a Lease of its own.

use std::time::{Duration, Instant};

use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest};
use slipway_e2e::require_sandbox;

const SHARD: &str = "slipway.dev/shard";

/// `reportingInstance` of the Events about `object` (`Kind/name`): who reconciled it.
fn reporters(t: &DeployTest, kind: &str, name: &str) -> Vec<String> {
    let selector = format!("regarding.kind={kind},regarding.name={name}");
    let out = t
        .cluster
        .kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &selector,
            "-o",
            "jsonpath={.items[*].reportingInstance}",
        ])
        .unwrap();
    let mut all: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
    all.sort();
    all.dedup();
    all
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn two_shards_each_reconcile_only_their_own_objects() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::without_controller(&sandbox, "shard").unwrap();
    let id = t.cluster.namespace.clone();
    let mut shards = Vec::new();
    for shard in ["a", "b"] {
        let selector = format!("{SHARD}={shard}");
        let args = [
            "--watch-label-selector",
            &selector,
            "--leader-elect",
            "--leader-election-namespace",
            "slipway-system",
            "--leader-election-id",
            &id,
        ];
        shards.push(t.cluster.spawn_controller(&format!("shard-{shard}"), &args).unwrap());
    }
    // One Lease per shard, each held by its shard.
    for shard in ["a", "b"] {
        let lease = slipway_controller::leader::lease_name(&id, Some(&format!("{SHARD}={shard}")));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let holder = t.cluster.kubectl_ok(&[
                "--namespace",
                "slipway-system",
                "get",
                "lease",
                &lease,
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ]);
            if holder.as_deref().ok() == Some(&format!("shard-{shard}")) {
                break;
            }
            assert!(Instant::now() < deadline, "Lease {lease} of shard {shard}: {holder:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // An Environment and a deploy for each shard, labelled alike; plus requests nobody owns.
    let sites = [t.site(1, "shard-a").unwrap(), t.site(3, "shard-b").unwrap()];
    for (shard, site) in ["a", "b"].iter().zip(&sites) {
        let env = format!("env-{shard}");
        t.create_environment(&EnvironmentManifest::new(&env, App::Ticker, site)).unwrap();
        t.cluster.kubectl_ok(&["label", "environment", &env, &format!("{SHARD}={shard}")]).unwrap();
    }
    let user = t.cluster.user().unwrap();
    for (name, env, shard) in [
        ("deploy-a", "env-a", Some("a")),
        ("deploy-b", "env-b", Some("b")),
        // no shard label: no shard watches it
        ("unlabelled", "env-a", None),
        // labelled for shard b, but its Environment belongs to shard a: shard b leaves it alone
        ("crossed", "env-a", Some("b")),
    ] {
        let mut request = DeployRequestManifest::tag(name, env, "ticker-v1").requested_by(&user).to_json();
        if let Some(shard) = shard {
            request["metadata"]["labels"] = serde_json::json!({ SHARD: shard });
        }
        t.cluster.apply(&request.to_string()).unwrap();
    }

    for shard in ["a", "b"] {
        t.expect_outcome(&format!("deploy-{shard}"), "Succeeded", DEPLOY_TIMEOUT).unwrap();
        let me = vec![format!("shard-{shard}")];
        assert_eq!(reporters(&t, "Environment", &format!("env-{shard}")), me, "Events of env-{shard}");
        assert_eq!(reporters(&t, "DeployRequest", &format!("deploy-{shard}")), me, "Events of deploy-{shard}");
    }
    for name in ["unlabelled", "crossed"] {
        let status = t.deploy_request(name).unwrap().status;
        assert!(status.phase.is_none() && status.conditions.is_empty(), "{name} was reconciled: {status:#?}");
        assert!(reporters(&t, "DeployRequest", name).is_empty(), "{name} has Events");
    }
    let a = shards[0].log();
    assert!(!a.contains("env-b") && !a.contains("deploy-b"), "shard a saw shard b's objects:\n{a}");
    let b = shards[1].log();
    assert!(!b.contains("deploy-a") && !b.contains("unlabelled"), "shard b saw shard a's objects:\n{b}");
    assert!(b.contains("left to the shard owning its Environment"), "shard b did not see `crossed`:\n{b}");
}
