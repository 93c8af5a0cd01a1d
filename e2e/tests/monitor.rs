//! Environments that look after themselves, as a user sees it: between deploys the Environment
//! judges `Healthy` every `health.monitorIntervalSeconds` over its SSH master (an Event on each
//! change, a gauge per Environment), and it never judges while a deploy runs.
//!
//! Each test has its own namespace, controller and compose project; the one-service `ticker` app
//! keeps them fast.

use std::time::{Duration, Instant};

use serde_json::json;
use slipway_e2e::deploy::{App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest};
use slipway_e2e::require_sandbox;

/// The monitor interval the tests set (the schema's minimum).
const INTERVAL: u64 = 10;

/// Polls the Environment until its condition `type_` has `status` and its message satisfies
/// `message`; returns the message and how long it took.
fn wait_condition(
    t: &DeployTest,
    env: &str,
    type_: &str,
    status: &str,
    message: impl Fn(&str) -> bool,
    timeout: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let observed = t.environment(env).unwrap().status;
        if let Some(c) = observed.conditions.iter().find(|c| c.type_ == type_)
            && c.status == status
            && message(&c.message)
        {
            return (c.message.clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{env}: {type_} not {status} within {timeout:?}: {:#?}\n{}",
            observed.conditions,
            t.cluster.controller_log().lines().rev().take(40).collect::<Vec<_>>().join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `(wall ms, cpu ms)` of each monitor round the controller logged.
fn round_costs(log: &str) -> Vec<(f64, f64)> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = line.split(&format!("{key}=")).nth(1)?;
        rest.split(|c: char| c.is_whitespace()).next()?.parse().ok()
    };
    // the log may carry ANSI colours around field names
    let plain: String = {
        let mut out = String::new();
        let mut chars = log.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    plain
        .lines()
        .filter(|l| l.contains("monitor round"))
        .filter_map(|l| Some((field(l, "wall_ms")?, field(l, "cpu_ms")?)))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_stopped_service_makes_the_environment_unhealthy_and_starting_it_heals_the_condition() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "monitor-health").unwrap();
    let site = t.site(1, "health").unwrap();
    let env = EnvironmentManifest::new("watched", App::Ticker, &site);
    t.create_environment(&env).unwrap();
    t.patch_environment("watched", &json!({"spec": {"health": {"monitorIntervalSeconds": INTERVAL}}})).unwrap();

    // nothing recorded yet: not judged
    wait_condition(
        &t,
        "watched",
        "Healthy",
        "Unknown",
        |m| m.contains("nothing deployed yet"),
        Duration::from_secs(60),
    );

    t.deploy(&DeployRequestManifest::tag("first", "watched", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    wait_condition(&t, "watched", "Healthy", "True", |_| true, Duration::from_secs(3 * INTERVAL));

    // stopped by hand: False naming the service within two intervals
    let container = site.container("ticker").unwrap();
    site.run(&["docker", "stop", &container]).unwrap();
    let (message, took) = wait_condition(
        &t,
        "watched",
        "Healthy",
        "False",
        |m| m.contains("service ticker"),
        Duration::from_secs(2 * INTERVAL + 5),
    );
    println!("Healthy=False after {took:?}: {message}");
    let (_, metrics) = t.cluster.controller_get("/metrics").unwrap();
    let gauge = metrics.lines().find(|l| l.starts_with("slipway_environment_healthy{") && l.contains("watched"));
    assert!(gauge.is_some_and(|l| l.ends_with(" 0")), "gauge: {gauge:?}");

    // started again: back to True
    site.run(&["docker", "start", &container]).unwrap();
    wait_condition(&t, "watched", "Healthy", "True", |_| true, Duration::from_secs(2 * INTERVAL + 10));
    let (_, metrics) = t.cluster.controller_get("/metrics").unwrap();
    let gauge = metrics.lines().find(|l| l.starts_with("slipway_environment_healthy{") && l.contains("watched"));
    assert!(gauge.is_some_and(|l| l.ends_with(" 1")), "gauge: {gauge:?}");

    let events = t.cluster.kubectl_ok(&["get", "events", "-o", "json"]).unwrap();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let reasons: Vec<(&str, &str)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "watched" || e["regarding"]["name"] == "watched")
        .map(|e| (e["reason"].as_str().unwrap_or_default(), e["message"].as_str().unwrap_or_default()))
        .collect();
    assert!(reasons.iter().any(|(r, m)| *r == "Unhealthy" && m.contains("service ticker")), "{reasons:#?}");
    assert!(reasons.iter().any(|(r, _)| *r == "Healthy"), "{reasons:#?}");

    // a deploy is never overlapped: while it holds the lock, Healthy keeps its value and says it
    // is not judged (the rebuild stops the container: a round then would say False)
    t.deploy(&DeployRequestManifest::tag("second", "watched", "ticker-v2")).unwrap();
    let (mut seen, start) = (Vec::new(), Instant::now());
    while !t.deploy_request("second").unwrap().status.is_finished() {
        assert!(start.elapsed() < DEPLOY_TIMEOUT, "second did not finish");
        let st = t.environment("watched").unwrap().status;
        if let Some(c) = st.conditions.iter().find(|c| c.type_ == "Healthy") {
            seen.push((st.active_deploy.is_some(), c.status.clone(), c.reason.clone()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    t.expect_outcome("second", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert!(!seen.iter().any(|(_, status, _)| status == "False"), "judged during the deploy: {seen:?}");
    assert!(seen.iter().any(|(_, _, reason)| reason == "DeployInProgress"), "{seen:?}");
    wait_condition(&t, "watched", "Healthy", "True", |_| true, Duration::from_secs(3 * INTERVAL));
    let log = t.cluster.controller_log();

    // the cost of one round, for the benchmark note
    let costs = round_costs(&log);
    assert!(!costs.is_empty(), "no monitor round logged");
    let line = format!(
        "monitor round ({} rounds, ticker on host 1, debug build): wall median {:.1} ms, max {:.1} ms; controller CPU median {:.2} ms, max {:.2} ms",
        costs.len(),
        median(costs.iter().map(|c| c.0).collect()),
        costs.iter().map(|c| c.0).fold(0.0, f64::max),
        median(costs.iter().map(|c| c.1).collect()),
        costs.iter().map(|c| c.1).fold(0.0, f64::max),
    );
    println!("{line}");
    let path = sandbox.join("logs/benchmarks.txt");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}
