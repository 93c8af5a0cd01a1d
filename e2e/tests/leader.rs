//! Two replicas of the controller: only the holder of the Lease reconciles; killed during a
//! deploy's Rebuilding, the other takes the Lease within its duration and finishes that deploy
//! from its host job, once.

use std::time::{Duration, Instant};

use slipway_e2e::cluster::TestCluster;
use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest};
use slipway_e2e::require_sandbox;

const LEASE_SECONDS: u64 = 10;

/// `spec.holderIdentity` of the Lease `name` in slipway-system ("" while there is none).
fn holder(cluster: &TestCluster, name: &str) -> String {
    cluster
        .kubectl_ok(&["--namespace", "slipway-system", "get", "lease", name, "-o", "jsonpath={.spec.holderIdentity}"])
        .unwrap_or_default()
}

fn wait_holder(cluster: &TestCluster, lease: &str, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while holder(cluster, lease) != want {
        assert!(
            start.elapsed() < timeout,
            "{want} does not hold the Lease {lease} after {timeout:?}: {:?}",
            holder(cluster, lease)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn leader_metric(http_addr: &str) -> String {
    let (_, body) = slipway_e2e::cluster::http_get(http_addr, "/metrics").unwrap();
    body.lines().filter(|l| l.starts_with("slipway_leader")).collect::<Vec<_>>().join("\n")
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_standby_takes_over_a_deploy_killed_with_its_leader_and_finishes_it_once() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::without_controller(&sandbox, "leader").unwrap();
    // A Lease of this test's own (all tests share slipway-system, where the RBAC allows Leases).
    let lease = t.cluster.namespace.clone();
    let duration = LEASE_SECONDS.to_string();
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        "slipway-system",
        "--leader-election-id",
        &lease,
        "--leader-election-lease-duration",
        &duration,
        "--leader-election-renew-grace",
        "3",
    ];
    let mut first = t.cluster.spawn_controller("first", &args).unwrap();
    wait_holder(&t.cluster, &lease, "first", Duration::from_secs(30));
    let mut second = t.cluster.spawn_controller("second", &args).unwrap();

    let site = t.site(2, "leader").unwrap();
    t.create_environment(&EnvironmentManifest::new("ha", App::Shop, &site)).unwrap();
    t.deploy(&DeployRequestManifest::tag("slow", "ha", "v1.4.0")).unwrap();
    let before = t.wait_phase("slow", "Rebuilding", DEPLOY_TIMEOUT).unwrap();
    // The standby has not reconciled anything, and says so in its metrics.
    assert!(!second.log().contains("starting controllers"), "the standby runs controllers:\n{}", second.log());
    assert!(leader_metric(&second.http_addr).contains("slipway_leader 0"));
    assert!(leader_metric(&first.http_addr).contains("slipway_leader 1"));
    assert_eq!(holder(&t.cluster, &lease), "first");

    first.kill();
    let killed = Instant::now();
    let failover = wait_holder(&t.cluster, &lease, "second", Duration::from_secs(LEASE_SECONDS + 10));
    println!("failover: the standby held the Lease {failover:?} after the leader was killed");
    assert!(
        failover <= Duration::from_secs(LEASE_SECONDS + 5),
        "the standby took {failover:?} for a Lease of {LEASE_SECONDS} s"
    );

    let done = t.expect_outcome("slow", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    println!("the new leader finished the deploy {:?} after the old one was killed", killed.elapsed());
    // Once: the steps were not run again, the migration ran once, one release was recorded.
    assert_eq!(done.step_count("Migrating"), 1, "{:#?}", done.steps);
    assert_eq!(done.step_count("Rebuilding"), 1, "{:#?}", done.steps);
    assert_eq!(done.require_step("Migrating").unwrap(), before.require_step("Migrating").unwrap());
    assert_eq!(site.psql("select n from migration_runs").unwrap(), "1", "migration 0004 ran more than once");
    assert_eq!(site.head().unwrap(), site.commit_of("v1.4.0").unwrap());
    let environment = t.environment("ha").unwrap().status;
    assert_eq!(environment.history_refs().iter().filter(|r| **r == "v1.4.0").count(), 1, "{environment:#?}");
    assert!(environment.active_deploy.is_none(), "the new leader released the deploy lock");
    assert!(second.log().contains("starting controllers"));
    assert!(leader_metric(&second.http_addr).contains("slipway_leader 1"));

    // On SIGTERM the leader gives the Lease up instead of letting it expire.
    let stopped = second.stop(Duration::from_secs(30));
    assert!(stopped.is_some_and(|s| s.success()), "{stopped:?}\n{}", second.log());
    let released = holder(&t.cluster, &lease);
    assert!(released.is_empty(), "the Lease still names {released:?} after its holder stopped");
}
