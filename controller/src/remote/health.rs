//! Health verification after `up`: container states and healthchecks, then the declared checks
//! (HTTP and TCP through a port forwarded over SSH to the container's IP, `exec` inside a
//! service container), repeated until everything passes or the deadline passes.

use std::path::Path;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use super::docker::ContainerObservation;
use super::error::{self, RemoteError};
use super::ssh::HostConnection;
use super::validate;

/// Most body bytes read from an HTTP check.
const HTTP_BODY_CAP: usize = 64 * 1024;
/// Characters of a response body quoted in a failure message.
const QUOTED_BODY_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `GET path` on the service container's `port`; passes on `expect_status` (default: any
    /// 2xx) and, when given, a body that contains `expect_json` as a subset.
    Http { service: String, port: u16, path: String, expect_status: Option<u16>, expect_json: Option<Value> },
    /// A TCP connection to the service container's `port` is accepted.
    Tcp { service: String, port: u16 },
    /// `command` exits 0 inside the service's running container.
    Exec { service: String, command: Vec<String> },
}

impl CheckKind {
    pub fn service(&self) -> &str {
        match self {
            CheckKind::Http { service, .. } | CheckKind::Tcp { service, .. } | CheckKind::Exec { service, .. } => {
                service
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub name: String,
    pub kind: CheckKind,
}

#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Overall deadline, extended while a container is still inside its healthcheck start period.
    pub timeout: Duration,
    /// Pause between rounds.
    pub interval: Duration,
    /// Limit for one check.
    pub check_timeout: Duration,
    /// Services that must have a running (and, with a healthcheck, healthy) container.
    pub expected_services: Vec<String>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(180),
            interval: Duration::from_secs(3),
            check_timeout: Duration::from_secs(10),
            expected_services: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// What was observed, quoting what the service returned (redacted, truncated).
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct HealthReport {
    pub passed: bool,
    pub elapsed: Duration,
    pub rounds: u32,
    /// Outcomes of the last round.
    pub checks: Vec<CheckOutcome>,
    /// Container-level problems of the last round (not running, unhealthy, missing).
    pub container_problems: Vec<String>,
    pub containers: Vec<ContainerObservation>,
}

impl HealthReport {
    /// One line for a status message: what failed and what it returned.
    pub fn summary(&self) -> String {
        if self.passed {
            return format!(
                "all {} checks and {} containers healthy after {}s",
                self.checks.len(),
                self.containers.iter().filter(|c| !c.one_off).count(),
                self.elapsed.as_secs()
            );
        }
        let mut parts: Vec<String> = self.container_problems.clone();
        parts.extend(self.checks.iter().filter(|c| !c.passed).map(|c| format!("check {}: {}", c.name, c.message)));
        format!("not healthy after {}s ({} rounds): {}", self.elapsed.as_secs(), self.rounds, parts.join("; "))
    }
}

/// Does `actual` contain everything in `expected`? Objects match when every expected key
/// matches recursively; arrays and scalars must be equal (numbers compared as numbers).
pub fn json_subset(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().all(|(k, ev)| a.get(k).is_some_and(|av| json_subset(ev, av))),
        (Value::Array(e), Value::Array(a)) => e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| json_subset(ev, av)),
        (Value::Number(e), Value::Number(a)) => e.as_f64() == a.as_f64(),
        _ => expected == actual,
    }
}

/// Judge an HTTP answer; `Ok` and `Err` both carry the message for status.
pub fn judge_http(
    path: &str,
    status: u16,
    body: &[u8],
    expect_status: Option<u16>,
    expect_json: Option<&Value>,
) -> Result<String, String> {
    let text = String::from_utf8_lossy(body);
    let quoted = error::truncate(text.trim(), QUOTED_BODY_CHARS);
    let status_ok = match expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = expect_status.map(|s| s.to_string()).unwrap_or_else(|| "2xx".to_owned());
        return Err(format!("GET {path} returned {status} (expected {want}): {quoted:?}"));
    }
    if let Some(expected) = expect_json {
        let actual: Value = serde_json::from_slice(body)
            .map_err(|_| format!("GET {path} returned {status} with a body that is not JSON: {quoted:?}"))?;
        if !json_subset(expected, &actual) {
            return Err(format!("GET {path} returned {status} with {quoted:?}, which does not contain {expected}"));
        }
    }
    Ok(format!("GET {path} returned {status}"))
}

/// The container a check talks to: a running service container (not a one-off).
pub fn service_container<'a>(
    containers: &'a [ContainerObservation],
    service: &str,
) -> Option<&'a ContainerObservation> {
    containers.iter().filter(|c| !c.one_off && c.service.as_deref() == Some(service)).find(|c| c.is_running())
}

/// Container-level problems: expected services without a running container, containers not
/// running, healthchecks not (yet) healthy.
pub fn container_problems(containers: &[ContainerObservation], expected_services: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for s in expected_services {
        if service_container(containers, s).is_none() {
            let state = containers
                .iter()
                .find(|c| !c.one_off && c.service.as_deref() == Some(s.as_str()))
                .map(|c| match c.exit_code {
                    Some(code) if c.state == "exited" => format!("is exited (exit code {code})"),
                    _ => format!("is {}", c.state),
                })
                .unwrap_or_else(|| "has no container".to_owned());
            problems.push(format!("service {s} {state}"));
        }
    }
    for (c, h) in not_healthy(containers) {
        let mut p = format!("container {} ({}) is {h}", c.name, c.service.as_deref().unwrap_or("?"));
        if let Some(out) = c.last_health_output.as_deref().filter(|o| !o.is_empty()) {
            p.push_str(&format!(": last healthcheck said {out:?}"));
        }
        problems.push(p);
    }
    problems
}

/// The running service containers (not one-offs) whose healthcheck is not `healthy` (yet), each
/// with its health. Each is a problem of [`container_problems`] whatever the compose model
/// expects, so a round that sees one has failed before it reads the model or runs a check.
pub fn not_healthy(containers: &[ContainerObservation]) -> impl Iterator<Item = (&ContainerObservation, &str)> {
    containers.iter().filter(|c| !c.one_off && c.is_running()).filter_map(|c| match c.health.as_deref() {
        Some("healthy") | None => None,
        Some(h) => Some((c, h)),
    })
}

/// The problems of the services that had a running container in `before` and have none in
/// `now` (stopped while a round's checks ran), as [`container_problems`] words them.
pub fn stopped_since(
    before: &[ContainerObservation],
    now: &[ContainerObservation],
    services: &[String],
) -> Vec<String> {
    let stopped: Vec<String> = services
        .iter()
        .filter(|s| service_container(before, s).is_some() && service_container(now, s).is_none())
        .cloned()
        .collect();
    let theirs: Vec<ContainerObservation> =
        now.iter().filter(|c| c.service.as_ref().is_some_and(|s| stopped.contains(s))).cloned().collect();
    container_problems(&theirs, &stopped)
}

/// One-shot services (labelled `slipway.dev/one-shot: "true"`): (still running, problems). A
/// one-shot service passes once its container exited 0; exited otherwise, or no container, is a problem.
pub fn one_shot_problems(containers: &[ContainerObservation], services: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut running, mut problems) = (Vec::new(), Vec::new());
    for s in services {
        let container = containers.iter().rfind(|c| !c.one_off && c.service.as_deref() == Some(s.as_str()));
        match container {
            None => problems.push(format!("one-shot service {s} has no container")),
            Some(c) if c.is_running() || c.state == "created" || c.state == "restarting" => {
                running.push(format!("one-shot service {s} is still {}", c.state))
            }
            Some(c) if c.state == "exited" && c.exit_code == Some(0) => {}
            Some(c) => problems.push(format!(
                "one-shot service {s} is {} with exit code {}",
                c.state,
                c.exit_code.map_or("unknown".to_owned(), |x| x.to_string())
            )),
        }
    }
    (running, problems)
}

/// How long after the start verification may go on: the policy timeout, or longer while a
/// container is still `starting` and its healthcheck start period has not run out — but never
/// more than twice the policy timeout, whatever start period a compose file declares.
pub fn deadline_after_start(timeout: Duration, interval: Duration, containers: &[ContainerObservation]) -> Duration {
    containers
        .iter()
        .filter(|c| !c.one_off && c.health.as_deref() == Some("starting"))
        .filter_map(|c| c.healthcheck_start_period)
        .map(|p| p.saturating_add(interval))
        .fold(timeout, Duration::max)
        .min(timeout.saturating_mul(2))
}

async fn http_get(socket: &Path, host: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    let stream = UnixStream::connect(socket).await.map_err(|e| format!("cannot open the forwarded connection: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "slipway-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {e}"))?;
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("no HTTP response (connection refused or closed by {host}?): {e}"))?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
            if let Some(data) = frame.data_ref() {
                bytes.extend_from_slice(data);
                if bytes.len() >= HTTP_BODY_CAP {
                    bytes.truncate(HTTP_BODY_CAP);
                    break;
                }
            }
        }
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}

async fn tcp_probe(socket: &Path) -> Result<(), String> {
    let mut stream =
        UnixStream::connect(socket).await.map_err(|e| format!("cannot open the forwarded connection: {e}"))?;
    // The master closes our side at once when the host cannot connect; a live server either
    // sends a banner or waits for us.
    let mut buf = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("connection refused or closed immediately".to_owned()),
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Ok(Ok(_)) | Err(_) => Ok(()),
    }
}

/// Run one check once against the current containers.
pub async fn run_check(
    conn: &HostConnection,
    check: &HealthCheck,
    containers: &[ContainerObservation],
    check_timeout: Duration,
) -> CheckOutcome {
    let outcome = |passed: bool, message: String| CheckOutcome {
        name: check.name.clone(),
        passed,
        message: conn.redactor().redact(&message),
    };
    let service = check.kind.service();
    if let Err(e) = validate::check_name(&check.name).and_then(|()| validate::service_name(service)) {
        return outcome(false, e.to_string());
    }
    let Some(container) = service_container(containers, service) else {
        return outcome(false, format!("service {service} has no running container"));
    };
    let work = async {
        match &check.kind {
            CheckKind::Http { port, path, expect_status, expect_json, .. } => {
                validate::http_path(path).map_err(|e| e.to_string())?;
                let ip =
                    container.ip_address().ok_or_else(|| format!("container {} has no IP address", container.name))?;
                let socket = conn.forward_to_tcp(ip, *port).await.map_err(|e| e.to_string())?;
                let (status, body) = http_get(&socket, &format!("{service}:{port}"), path).await?;
                // Masked before judge_http cuts and quotes it: a quoted or cut secret no longer
                // matches the redactor.
                let body = conn.redactor().redact(&String::from_utf8_lossy(&body)).into_bytes();
                judge_http(path, status, &body, *expect_status, expect_json.as_ref())
            }
            CheckKind::Tcp { port, .. } => {
                let ip =
                    container.ip_address().ok_or_else(|| format!("container {} has no IP address", container.name))?;
                let socket = conn.forward_to_tcp(ip, *port).await.map_err(|e| e.to_string())?;
                tcp_probe(&socket)
                    .await
                    .map(|()| format!("TCP {service}:{port} accepted a connection"))
                    .map_err(|e| format!("TCP {service}:{port}: {e}"))
            }
            CheckKind::Exec { command, .. } => {
                let program = command.first().cloned().unwrap_or_default();
                let r =
                    conn.exec_in_container(&container.id, command, check_timeout).await.map_err(|e| e.to_string())?;
                match r.exit_code {
                    Some(0) => Ok(format!("`{program}` exited 0")),
                    Some(code) => Err(format!(
                        "`{program}` exited {code}: {:?}",
                        error::truncate(r.output.trim(), QUOTED_BODY_CHARS)
                    )),
                    None => Err(format!("`{program}` did not report an exit code")),
                }
            }
        }
    };
    match tokio::time::timeout(check_timeout, work).await {
        Ok(Ok(msg)) => outcome(true, msg),
        Ok(Err(msg)) => outcome(false, msg),
        Err(_) => outcome(false, format!("no answer within {}s", check_timeout.as_secs_f32())),
    }
}

/// Observe and check in rounds until everything passes or the deadline passes.
/// `Err` when the host could not be observed (connection lost, Docker API failing): that says
/// nothing about the release, so it is never reported as unhealthy. Unhealthy services give
/// `Ok` with `passed: false`.
pub async fn verify(
    conn: &HostConnection,
    project: &str,
    checks: &[HealthCheck],
    policy: &HealthPolicy,
) -> Result<HealthReport, RemoteError> {
    let start = Instant::now();
    let mut rounds = 0;
    let mut deadline = policy.timeout;
    let redactor = conn.redactor();
    let report = loop {
        rounds += 1;
        let containers = match conn.project_containers(project).await {
            Ok(c) => c,
            Err(e) => break Err(e),
        };
        let problems: Vec<String> =
            container_problems(&containers, &policy.expected_services).iter().map(|p| redactor.redact(p)).collect();
        let mut outcomes = Vec::with_capacity(checks.len());
        for check in checks {
            outcomes.push(run_check(conn, check, &containers, policy.check_timeout).await);
        }
        let passed = problems.is_empty() && outcomes.iter().all(|o| o.passed);
        if !passed {
            // A check that failed because the master died failed for the connection, not the release.
            if let Err(e) = conn.check().await {
                break Err(e);
            }
        }
        deadline = deadline.max(deadline_after_start(policy.timeout, policy.interval, &containers));
        let elapsed = start.elapsed();
        if passed || elapsed + policy.interval > deadline {
            break Ok(HealthReport {
                passed,
                elapsed,
                rounds,
                checks: outcomes,
                container_problems: problems,
                containers,
            });
        }
        tracing::debug!(project, rounds, "health not yet reached; waiting");
        tokio::time::sleep(policy.interval).await;
    };
    // Every round forwards to the containers' current addresses; none is needed afterwards.
    conn.close_tcp_forwards().await;
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(service: &str, state: &str, health: Option<&str>) -> ContainerObservation {
        ContainerObservation {
            id: format!("id-{service}"),
            name: format!("shop-{service}-1"),
            service: Some(service.to_owned()),
            one_off: false,
            state: state.to_owned(),
            exit_code: Some(if state == "exited" { 1 } else { 0 }),
            restart_count: 0,
            health: health.map(str::to_owned),
            last_health_output: None,
            healthcheck_start_period: None,
            image_id: "sha256:x".into(),
            image: None,
            started_at: None,
            ip_addresses: vec![("shop_default".into(), "172.18.0.2".into())],
        }
    }

    #[test]
    fn a_running_container_short_of_healthy_is_not_healthy_whatever_the_model() {
        let mut one_off = container("migrate", "running", Some("starting"));
        one_off.one_off = true;
        let ready = [
            container("db", "running", Some("healthy")),
            container("worker", "running", None),
            // Not running: judged by the model (a one-shot exits), never "not healthy".
            container("init", "exited", Some("unhealthy")),
            one_off,
        ];
        assert_eq!(not_healthy(&ready).count(), 0);
        for health in ["starting", "unhealthy"] {
            let mut containers = ready.to_vec();
            containers.push(container("backend", "running", Some(health)));
            let found: Vec<_> = not_healthy(&containers).map(|(c, h)| (c.service.clone().unwrap(), h)).collect();
            assert_eq!(found, vec![("backend".to_owned(), health)]);
            // ... and each is a problem of the round for any model, even one that expects nothing.
            for services in [vec![], vec!["backend".to_owned(), "db".to_owned()]] {
                let problems = container_problems(&containers, &services);
                assert!(
                    problems.iter().any(|p| p.contains(&format!("(backend) is {health}"))),
                    "{services:?}: {problems:?}"
                );
            }
        }
    }

    #[test]
    fn a_service_stopped_between_two_looks_is_named_with_its_state() {
        let services = vec!["ticker".to_owned(), "backend".to_owned(), "db".to_owned()];
        let before = [container("ticker", "running", None), container("backend", "running", Some("healthy"))];
        let mut stopped = container("ticker", "exited", None);
        stopped.exit_code = Some(137);
        // backend turned unhealthy (not stopped), db had no container either time
        let now = [stopped, container("backend", "running", Some("unhealthy"))];
        assert_eq!(stopped_since(&before, &now, &services), ["service ticker is exited (exit code 137)"]);
        assert!(stopped_since(&before, &before, &services).is_empty());
    }

    #[test]
    fn json_subset_table() {
        let actual = json!({"status": "healthy", "db": {"ok": true, "latency": 3}, "tags": [1, 2]});
        let cases = [
            (json!({"status": "healthy"}), true),
            (json!({}), true),
            (json!({"db": {"ok": true}}), true),
            (json!({"db": {"latency": 3.0}}), true),
            (json!({"status": "unhealthy"}), false),
            (json!({"missing": 1}), false),
            (json!({"tags": [1, 2]}), true),
            (json!({"tags": [1]}), false),
            (json!({"db": {"ok": "true"}}), false),
        ];
        for (expected, want) in cases {
            assert_eq!(json_subset(&expected, &actual), want, "{expected}");
        }
        assert!(!json_subset(&json!({"a": 1}), &json!([1])));
    }

    #[test]
    fn http_judgement_quotes_what_was_returned() {
        let exp = json!({"status": "healthy"});
        assert!(judge_http("/health", 200, br#"{"status":"healthy","v":"1"}"#, None, Some(&exp)).is_ok());
        let e = judge_http("/health", 503, br#"{"status":"unhealthy"}"#, None, Some(&exp)).unwrap_err();
        assert!(e.contains("503"), "{e}");
        assert!(e.contains("unhealthy"), "{e}");
        let e = judge_http("/health", 200, br#"{"status":"degraded"}"#, None, Some(&exp)).unwrap_err();
        assert!(e.contains("degraded") && e.contains("healthy"), "{e}");
        let e = judge_http("/health", 200, b"<html>oops</html>", None, Some(&exp)).unwrap_err();
        assert!(e.contains("not JSON") && e.contains("oops"), "{e}");
        assert!(judge_http("/", 204, b"", None, None).is_ok());
        assert!(judge_http("/", 301, b"", None, None).is_err());
        assert!(judge_http("/", 301, b"", Some(301), None).is_ok());
        let long = "x".repeat(5000);
        let e = judge_http("/", 500, long.as_bytes(), None, None).unwrap_err();
        assert!(e.len() < 400, "{}", e.len());
    }

    #[test]
    fn container_problem_table() {
        let expected = vec!["backend".to_owned(), "db".to_owned(), "frontend".to_owned()];
        let all_good = vec![
            container("backend", "running", Some("healthy")),
            container("db", "running", Some("healthy")),
            container("frontend", "running", None),
        ];
        assert!(container_problems(&all_good, &expected).is_empty());

        let mut bad = all_good.clone();
        bad[0].health = Some("unhealthy".into());
        bad[0].last_health_output = Some("curl: (7) refused".into());
        bad[1].state = "exited".into();
        bad[1].exit_code = Some(1);
        bad.pop();
        let p = container_problems(&bad, &expected);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("db") && p[0].contains("exited (exit code 1)"), "{p:?}");
        assert!(p[1].contains("frontend") && p[1].contains("no container"), "{p:?}");
        assert!(p[2].contains("unhealthy") && p[2].contains("refused"), "{p:?}");

        let mut oneoff = container("backend", "exited", None);
        oneoff.one_off = true;
        let mut with_oneoff = all_good.clone();
        with_oneoff.push(oneoff);
        assert!(container_problems(&with_oneoff, &expected).is_empty());
    }

    #[test]
    fn one_shot_services_must_exit_zero() {
        let mut done = container("seed", "exited", None);
        done.exit_code = Some(0);
        let mut failed = container("bad", "exited", None);
        failed.exit_code = Some(3);
        let busy = container("slow", "running", None);
        let all = [done, failed, busy];
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (running, problems) = one_shot_problems(&all, &names(&["seed", "bad", "slow", "gone"]));
        assert_eq!(running, ["one-shot service slow is still running"]);
        assert_eq!(
            problems,
            ["one-shot service bad is exited with exit code 3", "one-shot service gone has no container"]
        );
    }

    #[test]
    fn deadline_respects_start_period_of_starting_containers() {
        let t = Duration::from_secs(60);
        let i = Duration::from_secs(2);
        let mut c = container("backend", "running", Some("starting"));
        assert_eq!(deadline_after_start(t, i, std::slice::from_ref(&c)), t);
        c.healthcheck_start_period = Some(Duration::from_secs(100));
        assert_eq!(deadline_after_start(t, i, std::slice::from_ref(&c)), Duration::from_secs(102));
        // A start period of years extends the deadline to twice the timeout, no further.
        c.healthcheck_start_period = Some(Duration::MAX);
        assert_eq!(deadline_after_start(t, i, std::slice::from_ref(&c)), Duration::from_secs(120));
        c.health = Some("healthy".into());
        assert_eq!(deadline_after_start(t, i, std::slice::from_ref(&c)), t);
    }

    #[test]
    fn service_container_prefers_running_service_containers() {
        let mut oneoff = container("backend", "running", None);
        oneoff.one_off = true;
        oneoff.id = "oneoff".into();
        let stopped = container("backend", "exited", None);
        let running = container("backend", "running", None);
        let list = vec![oneoff, stopped, running];
        assert_eq!(service_container(&list, "backend").unwrap().state, "running");
        assert!(!service_container(&list, "backend").unwrap().one_off);
        assert!(service_container(&list, "db").is_none());
    }

    #[test]
    fn report_summary_names_failures() {
        let r = HealthReport {
            passed: false,
            elapsed: Duration::from_secs(30),
            rounds: 5,
            checks: vec![
                CheckOutcome { name: "backend".into(), passed: false, message: "GET /health returned 503".into() },
                CheckOutcome { name: "frontend".into(), passed: true, message: "ok".into() },
            ],
            container_problems: vec!["service db is exited".into()],
            containers: vec![],
        };
        let s = r.summary();
        assert!(s.contains("check backend: GET /health returned 503"), "{s}");
        assert!(s.contains("service db is exited"), "{s}");
        assert!(!s.contains("frontend"), "{s}");
    }
}
