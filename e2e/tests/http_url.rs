//! `http.url` health checks, fetched from the controller rather than through the SSH forward:
//! an allowed URL (a server this test runs on the loopback, standing in for the public address
//! behind the reverse proxy) passes or fails verification as it answers, its body never reaching
//! status, events or logs; a URL outside the controller's `--http-url-allow` list is refused
//! before anything on the host changes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployTest, EnvironmentManifest, REFUSAL_TIMEOUT,
};
use slipway_e2e::require_sandbox;

/// Shows up in every answer's body: it must never appear in anything Slipway writes.
const BODY_SECRET: &str = "body-secret-7f3a9c";

/// A tiny HTTP server on `127.0.0.1`: answers every request with the current status and a
/// JSON body, counting requests. Serves until the process ends.
struct Public {
    port: u16,
    answer: Arc<Mutex<(u16, String)>>,
    served: Arc<AtomicUsize>,
}

impl Public {
    fn start() -> Public {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((200, String::new())));
        let served = Arc::new(AtomicUsize::new(0));
        let (a, n) = (answer.clone(), served.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // the request line and headers (GET: no body)
                while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                    line.clear();
                }
                let (status, body) = a.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nLocation: \
                     http://127.0.0.1:1/elsewhere\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let mut stream = stream;
                let _ = stream.write_all(response.as_bytes());
                n.fetch_add(1, Ordering::SeqCst);
            }
        });
        Public { port, answer, served }
    }

    fn answer(&self, status: u16, health: &str) {
        *self.answer.lock().unwrap() = (status, json!({"status": health, "token": BODY_SECRET}).to_string());
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn an_allowed_url_is_checked_from_the_controller_and_another_is_refused_before_the_host_changes() {
    let sandbox = require_sandbox!();
    let public = Public::start();
    public.answer(200, "healthy");
    let allowed = format!("http://127.0.0.1:{}/", public.port);
    let mut t = DeployTest::without_controller(&sandbox, "httpurl").unwrap();
    t.cluster.start_controller_with(&[&format!("--http-url-allow={allowed}")]).unwrap();
    let site = t.site(1, "httpurl").unwrap();
    let other_site = t.site(2, "httpurl").unwrap();
    let checks = |url: &str| {
        json!({"spec": {"health": {"timeoutSeconds": 15, "intervalSeconds": 1, "checks": [
            {"name": "ticker", "exec": {"service": "ticker", "command": ["cat", "/ticker/VERSION"]}},
            {"name": "public", "http": {"url": url, "expectJson": {"status": "healthy"}}},
        ]}}})
    };

    let env = EnvironmentManifest::new("staging", App::Ticker, &site);
    // The schema admits either a url or a service and port, not both.
    let mut both = env.to_json();
    both["metadata"]["name"] = json!("both");
    both["spec"]["health"]["checks"] =
        json!([{"name": "public", "http": {"url": allowed, "service": "ticker", "port": 80}}]);
    let refused = t.cluster.refused(&both.to_string()).unwrap();
    assert!(refused.contains("an http check sets either url"), "{refused}");
    t.create_environment(&env).unwrap();
    let url = format!("{allowed}health?probe=1");
    t.patch_environment("staging", &checks(&url)).unwrap();

    // Allowed and answering as expected: verified, the check counted.
    t.deploy(&DeployRequestManifest::tag("good", "staging", "ticker-v1")).unwrap();
    let status = t.expect_outcome("good", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let verified = status.require_step("Verifying").unwrap().message.clone().unwrap_or_default();
    assert!(verified.contains("2 checks passed"), "{verified}");
    assert!(public.served.load(Ordering::SeqCst) >= 1, "the controller fetched the URL");

    // Answering 503: verification fails, quoting the status code and never the body.
    public.answer(503, "degraded");
    t.deploy(&DeployRequestManifest::tag("bad", "staging", "ticker-v2")).unwrap();
    let status = t.expect_outcome("bad", "VerificationFailed", DEPLOY_TIMEOUT).unwrap();
    let message = status.ready_message();
    assert!(message.contains(&format!("check public: GET {url} returned 503 (expected 2xx)")), "{message}");
    // 200 with the wrong JSON, then a redirect (never followed): each fails in its own words.
    public.answer(200, "degraded");
    t.deploy(&DeployRequestManifest::tag("wrong-json", "staging", "ticker-v1")).unwrap();
    let status = t.expect_outcome("wrong-json", "VerificationFailed", DEPLOY_TIMEOUT).unwrap();
    assert!(
        status.ready_message().contains("does not contain {\"status\":\"healthy\"} (expectJson)"),
        "{}",
        status.ready_message()
    );
    public.answer(302, "healthy");
    t.deploy(&DeployRequestManifest::tag("redirected", "staging", "ticker-v2")).unwrap();
    let status = t.expect_outcome("redirected", "VerificationFailed", DEPLOY_TIMEOUT).unwrap();
    assert!(
        status.ready_message().contains("returned 302 (expected 2xx; redirects are not followed)"),
        "{}",
        status.ready_message()
    );

    // Not on the allow-list: refused before the lock, nothing on the host touched.
    let other = EnvironmentManifest::new("other", App::Ticker, &other_site);
    t.create_environment(&other).unwrap();
    let internal = format!("http://127.0.0.1:{}/admin", public.port + 1);
    t.patch_environment("other", &checks(&internal)).unwrap();
    t.deploy(&DeployRequestManifest::tag("refused", "other", "ticker-v1")).unwrap();
    let status = t.expect_outcome("refused", "UrlNotAllowed", REFUSAL_TIMEOUT).unwrap();
    assert_eq!(status.phase(), "Failed");
    assert!(!status.ran("Preflight"), "refused before anything ran: {:?}", status.steps);
    let message = status.ready_message();
    for part in
        ["Environment \"other\"", &format!("check public fetches {internal}"), "--http-url-allow", "httpUrlAllow"]
    {
        assert!(message.contains(part), "{part}: {message}");
    }
    assert!(other_site.container_ids().unwrap().is_empty(), "the refused request started containers");
    assert_eq!(t.cluster.jsonpath("env/other", "{.status.activeDeploy}").unwrap(), "", "it never took the lock");

    let written = t.everything_written();
    assert!(!written.contains(BODY_SECRET), "a response body reached status, events or logs");
}
