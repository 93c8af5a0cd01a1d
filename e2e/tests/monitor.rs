//! Environments that look after themselves, as a user sees it: between deploys the Environment
//! judges `Healthy` every `health.monitorIntervalSeconds` over its SSH master (an Event on each
//! change, a gauge per Environment), and it never judges while a deploy runs; it reports drift
//! from the recorded release and, with `drift: Heal`, restores it; deploy windows and freezes
//! hold DeployRequests (never Rollbacks) without taking the lock.
//!
//! Each test has its own namespace, controller and compose project; the one-service `ticker` app
//! keeps them fast.

use std::time::{Duration, Instant};

use serde_json::json;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployStatus, DeployTest, EnvironmentManifest, NotificationManifest,
    ROLLBACK, RollbackManifest,
};
use slipway_e2e::receiver::{Answer, HttpReceiver};
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
    let plain = strip_ansi(log);
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
    let mut env = EnvironmentManifest::new("watched", App::Ticker, &site);
    // told of each change of health, as Slipway's JSON
    let receiver = HttpReceiver::start(Answer::Ok).unwrap();
    env.notifications = vec![NotificationManifest::new("ops", &receiver.url(), "Json", &["HealthChanged"])];
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

    let told = receiver.wait_for(1, Duration::from_secs(60)).unwrap();
    let env_uid = t.cluster.jsonpath("environment/watched", "{.metadata.uid}").unwrap();
    let body = &told[0].body;
    assert_eq!((body["kind"].as_str(), body["name"].as_str()), (Some("Environment"), Some("watched")), "{body}");
    assert_eq!((body["event"].as_str(), body["status"].as_str()), (Some("HealthChanged"), Some("False")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("service ticker")), "{body}");
    assert!(told[0].event_id().starts_with(&format!("{env_uid}/HealthChanged/")), "{}", told[0].event_id());

    // started again: back to True
    site.run(&["docker", "start", &container]).unwrap();
    wait_condition(&t, "watched", "Healthy", "True", |_| true, Duration::from_secs(2 * INTERVAL + 10));
    let told = receiver.wait_for(2, Duration::from_secs(60)).unwrap();
    assert_eq!(told[1].body["status"].as_str(), Some("True"), "{}", told[1].body);
    assert_ne!(told[0].event_id(), told[1].event_id());
    // one per change, not one per round
    std::thread::sleep(Duration::from_secs(2 * INTERVAL));
    assert_eq!(receiver.received().len(), 2, "{:?}", receiver.received().iter().map(|r| &r.body).collect::<Vec<_>>());
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
    // judged again at once when the deploy ended (reason Healthy, not DeployInProgress)
    let judged = |t: &DeployTest| {
        t.environment("watched")
            .unwrap()
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Healthy" && c.reason == "Healthy")
    };
    let start = Instant::now();
    while !judged(&t) {
        assert!(start.elapsed() < Duration::from_secs(3 * INTERVAL), "not judged after the deploy");
        std::thread::sleep(Duration::from_millis(500));
    }

    // one round per interval, not one per status write
    let before = round_costs(&t.cluster.controller_log()).len();
    std::thread::sleep(Duration::from_secs(3 * INTERVAL + 2));
    let log = t.cluster.controller_log();
    let rounds = round_costs(&log).len() - before;
    assert!(
        (2..=4).contains(&rounds),
        "{rounds} rounds in {}s with monitorIntervalSeconds {INTERVAL}",
        3 * INTERVAL + 2
    );

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

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn drift_on_the_host_is_reported_and_healed_through_an_owned_deploy_request() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "monitor-drift").unwrap();
    let site = t.site(2, "drift").unwrap();
    let mut env = EnvironmentManifest::new("drifting", App::Ticker, &site);
    let receiver = HttpReceiver::start(Answer::Ok).unwrap();
    env.notifications = vec![NotificationManifest::new("chat", &receiver.url(), "Slack", &["Drifted"])];
    t.create_environment(&env).unwrap();
    t.patch_environment("drifting", &json!({"spec": {"health": {"monitorIntervalSeconds": INTERVAL}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "drifting", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    wait_condition(&t, "drifting", "Drifted", "False", |_| true, Duration::from_secs(3 * INTERVAL));
    let v1 = site.commit_of("ticker-v1").unwrap();
    let v2 = site.commit_of("ticker-v2").unwrap();

    // by hand on the host: a tracked file edited, then another commit checked out (the edit,
    // in a file both commits share, comes along)
    let dir = site.project.dir.clone();
    site.run(&["sh", "-c", &format!("echo 'edited on the host' >> '{dir}/README.md'")]).unwrap();
    site.run(&["git", "-C", &dir, "-c", "advice.detachedHead=false", "checkout", "--quiet", &v2]).unwrap();
    let (message, _) = wait_condition(
        &t,
        "drifting",
        "Drifted",
        "True",
        |m| m.contains("HEAD is") && m.contains("README.md"),
        Duration::from_secs(2 * INTERVAL + 10),
    );
    assert!(message.contains(&v2[..12]) && message.contains(&v1[..12]), "{message}");
    let told = receiver.wait_for(1, Duration::from_secs(60)).unwrap();
    let text = told[0].body["text"].as_str().unwrap_or_default();
    assert!(text.contains("*drifting* drifted from its recorded release") && text.contains("README.md"), "{text}");
    let wide = t.cluster.kubectl_ok(&["get", "environment", "drifting", "-o", "wide"]).unwrap();
    assert!(wide.contains("DRIFTED"), "{wide}");
    // Report (the default) changes nothing on the host
    std::thread::sleep(Duration::from_secs(INTERVAL));
    assert_eq!(site.head().unwrap(), v2);
    let owned = t.cluster.kubectl_ok(&["get", "deployrequests", "-o", "name"]).unwrap();
    assert_eq!(owned.trim(), "deployrequest.slipway.dev/first", "Report created a request");

    // Heal: one owned, forced DeployRequest of the recorded commit restores it
    t.patch_environment("drifting", &json!({"spec": {"drift": "Heal"}})).unwrap();
    let heal = format!("drifting-heal-{}-1", &v1[..12]);
    let start = Instant::now();
    while !t.cluster.kubectl(&["get", "deployrequest", &heal]).unwrap().status.success() {
        assert!(start.elapsed() < Duration::from_secs(3 * INTERVAL), "no heal request {heal}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let healed = t.expect_outcome(&heal, "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(healed.commit.as_deref(), Some(v1.as_str()));
    let preflight = healed.require_step("Preflight").unwrap();
    let said = preflight.message.clone().unwrap_or_default();
    assert!(said.contains("discards local changes") && said.contains("README.md"), "{said}");
    let dr = &t.get_json(&[&format!("deployrequest/{heal}")]).unwrap()[0];
    assert_eq!(dr["spec"]["force"], true);
    assert_eq!(dr["metadata"]["ownerReferences"][0]["kind"], "Environment");
    assert_eq!(dr["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        dr["metadata"]["annotations"]["slipway.dev/requested-by"],
        "system:serviceaccount:slipway-system:slipway"
    );
    assert_eq!(site.head().unwrap(), v1);
    let porcelain = site.run(&["git", "-C", &dir, "status", "--porcelain", "--untracked-files=no"]).unwrap();
    assert_eq!(porcelain.trim(), "", "local changes left");
    wait_condition(&t, "drifting", "Drifted", "False", |_| true, Duration::from_secs(3 * INTERVAL));
    assert_eq!(receiver.received().len(), 1, "told of the drift once; its end is not an event");
    // one heal, not one per round
    let requests = t.cluster.kubectl_ok(&["get", "deployrequests", "-o", "name"]).unwrap();
    assert_eq!(requests.lines().count(), 2, "{requests}");
    let events = t.cluster.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=drifting"]).unwrap();
    assert!(events.contains("Drifted") || events.contains("Healing"), "{events}");
    assert!(events.contains("InSync"), "{events}");

    // nobody but the controller makes a DeployRequest owned by an Environment
    let uid = t.cluster.jsonpath("environment/drifting", "{.metadata.uid}").unwrap();
    let mut forged = DeployRequestManifest::tag("forged", "drifting", "ticker-v1").to_json();
    forged["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment", "name": "drifting", "uid": uid, "controller": true
    }]);
    forged["metadata"]["annotations"] = json!({"slipway.dev/requested-by": t.cluster.user().unwrap()});
    let out = t.cluster.kubectl_with_stdin(&["create", "-f", "-"], Some(&forged.to_string())).unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refusal.contains("only the Slipway controller"), "{refusal}");
    // ... whatever the owner's kind is spelled, nor one carrying the controller's own labels
    forged["metadata"]["ownerReferences"][0]["kind"] = "environment".into();
    let out = t.cluster.kubectl_with_stdin(&["create", "-f", "-"], Some(&forged.to_string())).unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refusal.contains("controller: true"), "{refusal}");
    forged["metadata"]["ownerReferences"] = json!([]);
    forged["metadata"]["labels"] = json!({"slipway.dev/revision-of": uid});
    let out = t.cluster.kubectl_with_stdin(&["create", "-f", "-"], Some(&forged.to_string())).unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refusal.contains("are the controller's"), "{refusal}");
}

/// `(source, wall ms)` of each monitor round the controller logged: `source` says where its
/// compose model came from (`host`: `compose config` ran; `cache`: the copy of an earlier round).
fn round_sources(log: &str) -> Vec<(String, f64)> {
    let plain = strip_ansi(log);
    let field = |line: &str, key: &str| -> Option<String> {
        let rest = line.split(&format!(" {key}=")).nth(1)?;
        Some(rest.split(|c: char| c.is_whitespace()).next()?.trim_matches('"').to_owned())
    };
    plain
        .lines()
        .filter(|l| l.contains("monitor round"))
        .filter_map(|l| Some((field(l, "config")?, field(l, "wall_ms")?.parse().ok()?)))
        .collect()
}

fn strip_ansi(log: &str) -> String {
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
}

/// `slipway_monitor_compose_config_total` as the controller exposes it: (from the host, from the cache).
fn compose_configs(t: &DeployTest) -> (u64, u64) {
    t.by_source("slipway_monitor_compose_config_total")
}

/// Waits until the monitor judged `more` further rounds against its copy of the compose model.
fn wait_cached_rounds(t: &DeployTest, more: u64, timeout: Duration) -> (u64, u64) {
    let (start, (_, cache0)) = (Instant::now(), compose_configs(t));
    loop {
        let now = compose_configs(t);
        if now.1 >= cache0 + more {
            return now;
        }
        assert!(start.elapsed() < timeout, "no round reused the compose model within {timeout:?}: {now:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// CPU seconds (user + system) `script` takes on the host, as the shell's `times` reports it.
fn host_cpu_ms(site: &slipway_e2e::deploy::Site, script: &str) -> f64 {
    let out = site.run(&["sh", "-c", &format!("{script} >/dev/null 2>&1; times")]).unwrap();
    // second line: children's user and system time, e.g. `0m0.352s 0m0.048s`
    let secs = |t: &str| -> f64 {
        let (m, s) = t.trim_end_matches('s').split_once('m').unwrap_or(("0", "0"));
        m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
    };
    let children = out.lines().nth(1).unwrap_or_default();
    children.split_whitespace().map(secs).sum::<f64>() * 1e3
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_monitor_reuses_compose_config_until_env_or_a_compose_file_changes_on_the_host() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "monitor-config").unwrap();
    let site = t.site(1, "config").unwrap();
    let env = EnvironmentManifest::new("cached", App::Ticker, &site);
    t.create_environment(&env).unwrap();
    t.patch_environment("cached", &json!({"spec": {"health": {"monitorIntervalSeconds": INTERVAL}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "cached", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    wait_condition(&t, "cached", "Healthy", "True", |_| true, Duration::from_secs(3 * INTERVAL));

    // nothing changes on the host: the rounds reuse the model, `compose config` does not run;
    // the first round after the deploy reuses the copy the deploy's verification read
    let (host0, cache0) = wait_cached_rounds(&t, 1, Duration::from_secs(3 * INTERVAL + 5));
    assert_eq!(host0, 0, "the first monitor round after the deploy ran compose config itself: cache {cache0}");
    std::thread::sleep(Duration::from_secs(3 * INTERVAL + 2));
    let (host1, cache1) = compose_configs(&t);
    assert!(
        cache1 >= cache0 + 2,
        "rounds did not reuse the compose model: host {host0}->{host1}, cache {cache0}->{cache1}"
    );
    assert!(host1 <= host0 + 1, "compose config ran {} times in 3 quiet intervals", host1 - host0);

    // `.env` edited by hand (git ignores it): the next round runs compose, which refuses it
    let dir = site.project.dir.clone();
    let backup = format!("{dir}.env-backup");
    site.run(&["cp", "-p", &format!("{dir}/.env"), &backup]).unwrap();
    // (grep exits 1 when no line is left)
    site.run(&["sh", "-c", &format!("grep -v '^TICKER_NAME=' '{backup}' > '{dir}/.env'; true")]).unwrap();
    let (message, took) = wait_condition(
        &t,
        "cached",
        "Healthy",
        "False",
        |m| m.contains("TICKER_NAME"),
        Duration::from_secs(2 * INTERVAL + 5),
    );
    println!(".env edited: Healthy=False after {took:?}: {message}");
    site.run(&["mv", &backup, &format!("{dir}/.env")]).unwrap();
    wait_condition(&t, "cached", "Healthy", "True", |_| true, Duration::from_secs(2 * INTERVAL + 5));

    // a compose file edited twice: the first edit (a comment) changes git's list of modified
    // files, the second (a service added) only the file itself
    let compose = format!("{dir}/docker-compose.yml");
    site.run(&["sh", "-c", &format!("echo '# edited on the host' >> '{compose}'")]).unwrap();
    wait_cached_rounds(&t, 1, Duration::from_secs(3 * INTERVAL + 5));
    let healthy = t.environment("cached").unwrap().status.conditions.into_iter().find(|c| c.type_ == "Healthy");
    assert_eq!(healthy.map(|c| c.status).as_deref(), Some("True"), "a comment changes nothing");
    let extra = "  extra:\n    image: slipway-base:bookworm\n    command: [sleep, infinity]\n";
    site.run(&["sh", "-c", &format!("printf '{extra}' >> '{compose}'")]).unwrap();
    let (message, took) = wait_condition(
        &t,
        "cached",
        "Healthy",
        "False",
        |m| m.contains("service extra"),
        Duration::from_secs(2 * INTERVAL + 5),
    );
    println!("compose file edited again: Healthy=False after {took:?}: {message}");
    site.run(&["git", "-C", &dir, "checkout", "--", "docker-compose.yml"]).unwrap();
    wait_condition(&t, "cached", "Healthy", "True", |_| true, Duration::from_secs(2 * INTERVAL + 5));

    // the figures: rounds by where their model came from, and what each costs the host
    let rounds = round_sources(&t.cluster.controller_log());
    let wall = |source: &str| {
        let v: Vec<f64> = rounds.iter().filter(|(s, _)| s == source).map(|(_, w)| *w).collect();
        (v.len(), median(v))
    };
    let ((n_host, host_wall), (n_cache, cache_wall)) = (wall("host"), wall("cache"));
    assert!(n_cache >= 3 && n_host >= 3, "{rounds:?}");
    let project = &site.project.name;
    let config_ms =
        host_cpu_ms(&site, &format!("cd '{dir}' && docker-compose -p {project} -f docker-compose.yml config"));
    let stat_ms =
        host_cpu_ms(&site, &format!("cd '{dir}' && stat -L -c '%i %s %Y %y %z %n' -- .env docker-compose.yml"));
    // `times` counts in clock ticks (10 ms)
    let stat = if stat_ms < 10.0 { "under 10 ms".to_owned() } else { format!("{stat_ms:.0} ms") };
    let line = format!(
        "monitor round by compose model (ticker on host 1, docker-compose v1, debug build): from the host {n_host} rounds, wall median {host_wall:.1} ms; from the cache {n_cache} rounds, wall median {cache_wall:.1} ms; host CPU of `compose config` {config_ms:.0} ms, of the `stat` that replaces it {stat}"
    );
    println!("{line}");
    let path = sandbox.join("logs/benchmarks.txt");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}

/// Polls the DeployRequest until Ready's reason is `reason` (finished or not).
fn wait_reason(t: &DeployTest, name: &str, reason: &str, timeout: Duration) -> DeployStatus {
    let start = Instant::now();
    loop {
        let status = t.deploy_request(name).unwrap().status;
        if status.ready_reason() == reason {
            return status;
        }
        assert!(start.elapsed() < timeout, "{name} not {reason} within {timeout:?}:\n{}", t.describe(name));
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn deploy_windows_and_freezes_hold_deploy_requests_but_never_rollbacks() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "monitor-windows").unwrap();
    let site = t.site(3, "windows").unwrap();
    let env = EnvironmentManifest::new("windowed", App::Ticker, &site);
    t.create_environment(&env).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "windowed", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();

    // a deny window covering now (opened this minute, for two hours): the request waits, visibly,
    // without the lock, and says when it may run
    let since_midnight = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 86_400;
    let schedule = format!("{} {} * * *", since_midnight / 60 % 60, since_midnight / 3600);
    let deny = json!({"kind": "Deny", "schedule": schedule, "duration": "2h", "timeZone": "UTC"});
    t.patch_environment("windowed", &json!({"spec": {"policy": {"windows": [deny]}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("held", "windowed", "ticker-v2")).unwrap();
    let held = wait_reason(&t, "held", "OutsideDeployWindow", Duration::from_secs(60));
    assert_eq!(held.phase(), "Queued", "{held:#?}");
    assert!(
        held.ready_message().contains(&format!("deny window \"{schedule}\""))
            && held.ready_message().contains("may run from"),
        "{}",
        held.ready_message()
    );
    assert!(!held.ran("Preflight"), "{held:#?}");
    let environment = t.environment("windowed").unwrap().status;
    assert!(environment.active_deploy.is_none() && environment.queue.is_empty(), "{environment:#?}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(t.deploy_request("held").unwrap().status.ready_reason(), "OutsideDeployWindow");

    // the window removed: it runs
    t.patch_environment("windowed", &json!({"spec": {"policy": {"windows": null}}})).unwrap();
    t.expect_outcome("held", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), site.commit_of("ticker-v2").unwrap());

    // a freeze holds DeployRequests; a Rollback still runs, and so does Direct where allowed
    t.patch_environment("windowed", &json!({"spec": {"policy": {"freeze": true}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("frozen", "windowed", "ticker-v3")).unwrap();
    let frozen = wait_reason(&t, "frozen", "OutsideDeployWindow", Duration::from_secs(60));
    assert!(frozen.ready_message().contains("frozen"), "{}", frozen.ready_message());
    t.rollback(&RollbackManifest::previous("undo", "windowed")).unwrap();
    t.expect_request_outcome(ROLLBACK, "undo", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), site.commit_of("ticker-v1").unwrap());
    t.patch_environment("windowed", &json!({"spec": {"policy": {"allowDirect": true}}})).unwrap();
    t.deploy(&DeployRequestManifest::tag("direct", "windowed", "ticker-v3").without_issue().direct()).unwrap();
    t.expect_outcome("direct", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(t.deploy_request("frozen").unwrap().status.ready_reason(), "OutsideDeployWindow");
}

/// Polls the Environment until `status.revision.state` is `state`; returns its message.
fn wait_revision(t: &DeployTest, env: &str, state: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let seen = t.cluster.jsonpath(&format!("environment/{env}"), "{.status.revision.state}").unwrap_or_default();
        if seen == state {
            return t.cluster.jsonpath(&format!("environment/{env}"), "{.status.revision.message}").unwrap();
        }
        let revision = t.cluster.jsonpath(&format!("environment/{env}"), "{.status.revision}").unwrap_or_default();
        assert!(start.elapsed() < timeout, "spec.revision of {env} not {state} within {timeout:?}: {revision}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_declared_revision_is_deployed_through_owned_requests_and_a_followed_branch_moves_it() {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, "monitor-revision").unwrap();
    let site = t.site(1, "revision").unwrap();
    let env = EnvironmentManifest::new("declared", App::Ticker, &site);
    t.create_environment(&env).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "declared", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let [v2, v3] = ["ticker-v2", "ticker-v3"].map(|tag| site.commit_of(tag).unwrap());
    let uid = t.cluster.jsonpath("environment/declared", "{.metadata.uid}").unwrap();
    let made = || -> Vec<String> {
        let selector = format!("slipway.dev/revision-of={uid}");
        let out = t.cluster.kubectl_ok(&["get", "deployrequests", "-l", &selector, "-o", "name"]).unwrap();
        out.lines().map(|l| l.trim_start_matches("deployrequest.slipway.dev/").to_owned()).collect()
    };
    let wait_made = |n: usize| {
        let start = Instant::now();
        while made().len() < n {
            assert!(start.elapsed() < Duration::from_secs(60), "no request number {n} made: {:?}", made());
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    // one line declares the release: one owned request appears and succeeds
    let declared = json!({"spec": {"revision": {"tag": "ticker-v2", "issue": "#7", "pollIntervalSeconds": INTERVAL}}});
    t.patch_environment("declared", &declared).unwrap();
    wait_made(1);
    let first = format!("declared-rev-{}-1", &v2[..12]);
    assert_eq!(made(), std::slice::from_ref(&first));
    t.expect_outcome(&first, "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), v2);
    let dr = &t.get_json(&[&format!("deployrequest/{first}")]).unwrap()[0];
    assert_eq!(dr["metadata"]["ownerReferences"][0]["kind"], "Environment");
    assert_eq!(dr["spec"]["revision"]["commit"], v2.as_str());
    assert_eq!(dr["spec"]["issue"], "#7");
    wait_revision(&t, "declared", "Synced", Duration::from_secs(30));
    let table = t.cluster.kubectl_ok(&["get", "environment", "declared"]).unwrap();
    assert!(table.contains("DESIRED") && table.contains("tag ticker-v2") && table.contains("ticker-v2"), "{table}");
    // the same spec again: nothing new, over more than two poll intervals
    t.patch_environment("declared", &declared).unwrap();
    std::thread::sleep(Duration::from_secs(2 * INTERVAL + 5));
    assert_eq!(made(), std::slice::from_ref(&first), "re-applying the spec made a request");

    // a followed branch: declared where it runs, nothing; a new commit on it is deployed once
    let branch = format!("swt-follow-{}", &uid[..8]);
    let origin = site.origin.trim_start_matches("file://").to_owned();
    let move_branch = |to: &str| {
        site.run(&["git", "--git-dir", &origin, "update-ref", &format!("refs/heads/{branch}"), to]).unwrap();
    };
    move_branch(&v2);
    let follow = json!({"spec": {"revision": {"tag": null, "branch": branch}}});
    t.patch_environment("declared", &follow).unwrap();
    let start = Instant::now();
    while t.cluster.jsonpath("environment/declared", "{.status.revision.desired}").unwrap()
        != format!("branch {branch}")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "branch not looked up");
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_revision(&t, "declared", "Synced", Duration::from_secs(30));
    assert_eq!(made().len(), 1);
    move_branch(&v3);
    wait_made(2);
    let second = format!("declared-rev-{}-1", &v3[..12]);
    assert!(made().contains(&second), "{:?}", made());
    t.expect_outcome(&second, "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), v3);
    std::thread::sleep(Duration::from_secs(2 * INTERVAL + 5));
    assert_eq!(made().len(), 2, "the branch's new commit was deployed more than once: {:?}", made());

    // a manual Rollback suspends the declaration (else it would undo the rollback)
    t.rollback(&RollbackManifest::previous("undo", "declared")).unwrap();
    t.expect_request_outcome(ROLLBACK, "undo", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    assert_eq!(site.head().unwrap(), v2);
    let message = wait_revision(&t, "declared", "Suspended", Duration::from_secs(30));
    assert!(message.contains("undo"), "{message}");
    std::thread::sleep(Duration::from_secs(2 * INTERVAL + 5));
    assert_eq!((made().len(), site.head().unwrap()), (2, v2.clone()), "the declaration undid the rollback");
    // ... also when the followed branch moves on
    let v1 = site.commit_of("ticker-v1").unwrap();
    move_branch(&v1);
    std::thread::sleep(Duration::from_secs(2 * INTERVAL + 5));
    assert_eq!((made().len(), site.head().unwrap()), (2, v2.clone()), "a push undid the rollback");
    wait_revision(&t, "declared", "Suspended", Duration::from_secs(5));
    let events = t.cluster.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=declared"]).unwrap();
    assert!(events.contains("RevisionDeploying") && events.contains("RevisionSuspended"), "{events}");
    site.run(&["git", "--git-dir", &origin, "update-ref", "-d", &format!("refs/heads/{branch}")]).unwrap();

    // approval through the declaration: only from a user allowed to approve
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: env-editor, namespace: {ns}}}\n\
         rules: [{{apiGroups: [slipway.dev], resources: [environments], verbs: [get, patch]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: alice-envs, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: env-editor}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n",
        ns = t.cluster.namespace
    );
    t.cluster.apply(&role).unwrap();
    let approve = json!({"spec": {"policy": {"requireApproval": true},
                                  "revision": {"branch": null, "tag": "ticker-v3", "approvedBy": "carol"}}});
    let patch = ["patch", "environment", "declared", "--type=merge", "-p", &approve.to_string()];
    let out = t.cluster.kubectl_as("alice", &patch, None).unwrap();
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && refusal.contains("may not approve"), "{refusal}");
    // an approver (the admin here) declares it approved: the request it makes passes the gate
    t.patch_environment("declared", &approve).unwrap();
    wait_made(3);
    let third = format!("declared-rev-{}-1", &v3[..12]);
    assert!(made().contains(&third), "{:?}", made());
    t.expect_outcome(&third, "Succeeded", DEPLOY_TIMEOUT).unwrap();
    // the release is recorded as the lock is released, a moment after Succeeded
    let start = Instant::now();
    while t.cluster.jsonpath("environment/declared", "{.status.current.commit}").unwrap() != v3 {
        assert!(start.elapsed() < Duration::from_secs(30), "the release of {third} was not recorded");
        std::thread::sleep(Duration::from_millis(300));
    }
    let approved = t.cluster.jsonpath("environment/declared", "{.status.current.approvedBy}").unwrap();
    assert_eq!(approved, "carol (Environment spec.revision)");
}

/// Monitor rounds each Environment's controller log names, per Environment.
fn rounds_by_environment(log: &str) -> std::collections::BTreeMap<String, usize> {
    let plain = strip_ansi(log);
    let mut rounds = std::collections::BTreeMap::new();
    for line in plain.lines().filter(|l| l.contains("monitor round")) {
        if let Some(name) = line.split(" environment=").nth(1).and_then(|r| r.split_whitespace().next()) {
            *rounds.entry(name.trim_matches('"').to_owned()).or_default() += 1;
        }
    }
    rounds
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_saturated_monitor_checks_every_environment_in_turn_rather_than_some_never() {
    const FLEET: usize = 8;
    let sandbox = require_sandbox!();
    let mut t = DeployTest::without_controller(&sandbox, "monitor-fair").unwrap();
    // One slot: the hosts (here, one) cannot keep up with the fleet's intervals.
    t.cluster.start_controller_with(&["--environment-concurrency", "1"]).unwrap();
    let site = t.site(1, "fair").unwrap();
    let base = EnvironmentManifest::new("base", App::Ticker, &site);
    t.create_environment(&base).unwrap();
    t.deploy(&DeployRequestManifest::tag("first", "base", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let current = loop {
        let current = t.cluster.jsonpath("environment/base", "{.status.current}").unwrap();
        if current.contains("ticker-v1") {
            break serde_json::from_str::<serde_json::Value>(&current).unwrap();
        }
        assert!(Instant::now() < deadline, "base recorded no release: {current}");
        std::thread::sleep(Duration::from_millis(300));
    };

    // A fleet on the running release whose every round takes 2 s (its declared check sleeps),
    // due every 10 s: 8 rounds of 2 s each 10 s ask for 1.6 slots of 1.
    let started = Instant::now();
    for i in 0..FLEET {
        let mut env = base.clone();
        env.name = format!("fair-{i}");
        let mut manifest = env.to_json();
        manifest["spec"]["health"]["checks"] =
            json!([{"name": "slow", "exec": {"service": "ticker", "command": ["sleep", "2"]}}]);
        manifest["spec"]["health"]["monitorIntervalSeconds"] = json!(INTERVAL);
        t.cluster.apply(&manifest.to_string()).unwrap();
        let patch = json!({"status": {"current": current}}).to_string();
        t.cluster
            .kubectl_ok(&["patch", "environment", &env.name, "--subresource=status", "--type=merge", "-p", &patch])
            .unwrap();
    }

    // Every one judged, in turn: with the runner's own bound the same few came first every
    // time and the rest were never checked. One slot serves about one 2 s round at a time, so
    // three rounds each take about a minute when shared fairly; a slow machine gets five.
    let rounds_of = |log: &str| -> Vec<(String, usize)> {
        let rounds = rounds_by_environment(log);
        (0..FLEET).map(|i| format!("fair-{i}")).map(|n| (n.clone(), rounds.get(&n).copied().unwrap_or(0))).collect()
    };
    let mut waited = 0_i64;
    let fleet = loop {
        let (_, metrics) = t.cluster.controller_get("/metrics").unwrap();
        let gauge = metrics.lines().find(|l| l.starts_with("slipway_environment_reconciles_waiting "));
        let value = gauge.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<i64>().ok());
        waited = waited.max(value.expect("slipway_environment_reconciles_waiting is exposed"));
        let fleet = rounds_of(&t.cluster.controller_log());
        if fleet.iter().all(|(_, n)| *n >= 3) || started.elapsed() > Duration::from_secs(300) {
            break fleet;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!(
        "rounds after {:?} with one slot: {fleet:?}; most reconciles waiting at once: {waited}",
        started.elapsed()
    );
    for (name, count) in &fleet {
        let status = t.environment(name).unwrap().status;
        let healthy = status.conditions.iter().find(|c| c.type_ == "Healthy").map(|c| c.status.clone());
        assert_eq!(healthy.as_deref(), Some("True"), "{name} never judged: {fleet:?}");
        assert!(*count >= 3, "{name} had {count} monitor rounds in 300 s: {fleet:?}");
    }
    let (min, max) = (fleet.iter().map(|f| f.1).min().unwrap(), fleet.iter().map(|f| f.1).max().unwrap());
    assert!(max <= 2 * min + 2, "rounds shared unevenly: {fleet:?}");
    assert!(waited > 0, "the metric never showed a reconcile waiting for its slot");

    // Stopped while saturated: the reconciles waiting for the slot end without their round
    // (the runner waits for every reconcile it started; draining them all took a round each).
    let status = t.cluster.stop_controller(Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "the controller did not stop cleanly: {status:?}");
    let log = strip_ansi(&t.cluster.controller_log());
    let after = log.split_once("shutting down").map(|(_, rest)| rest).expect("the controller logged its shutdown");
    let late = after.lines().filter(|l| l.contains("monitor round")).count();
    assert!(late <= 1, "{late} monitor rounds ran after the shutdown began (only the one in its slot may finish)");
}
