//! Notifications end to end: an Environment's receivers (HTTP servers of the test on the
//! loopback, where the controller runs too) are told when a DeployRequest ends, as Slipway's
//! JSON payload or as Slack text; a receiver that fails first gets the event once more with the
//! same id, one that never answers holds up neither the deploy nor the other receivers, and a
//! restarted controller sends what was pending and nothing it had delivered.
//!
//! The one-service Ticker app keeps the deploys short; a tag that does not exist fails at
//! preflight (`RevisionNotFound`).

use std::time::{Duration, Instant};

use serde_json::Value;
use slipway_e2e::deploy::{
    App, DEPLOY_TIMEOUT, DeployRequestManifest, DeployStatus, DeployTest, EnvironmentManifest, NotificationManifest,
    REFUSAL_TIMEOUT, Site,
};
use slipway_e2e::receiver::{Answer, HttpReceiver};
use slipway_e2e::require_sandbox;

/// How long a notification may take to arrive once its request ended (attempts and their
/// record are bounded by the controller's 10 s request timeout).
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// A test with one Ticker Environment `staging` on host `host` telling `receivers`.
fn start(prefix: &str, host: u32, receivers: Vec<NotificationManifest>) -> (DeployTest, Site) {
    let sandbox = require_sandbox!();
    let mut t = DeployTest::start(&sandbox, prefix).unwrap();
    let site = t.site(host, &prefix.replace('-', "")).unwrap();
    let mut env = EnvironmentManifest::new("staging", App::Ticker, &site);
    env.notifications = receivers;
    t.create_environment(&env).unwrap();
    (t, site)
}

/// Polls the request's status until `done` holds for it.
fn wait_status(t: &DeployTest, name: &str, what: &str, done: impl Fn(&DeployStatus) -> bool) -> DeployStatus {
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    loop {
        let status = t.deploy_request(name).unwrap().status;
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{name}: not {what} within {NOTIFY_TIMEOUT:?}\n{}", t.describe(name));
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The outbox entry `receiver`/`event` is in `state`.
fn state_is(status: &DeployStatus, receiver: &str, event: &str, state: &str) -> bool {
    status.notification(receiver, event).is_some_and(|n| n.state == state)
}

/// Nothing Slipway wrote (status, events, its log) shows a receiver's URL.
fn assert_no_url_leaked(t: &DeployTest, secrets: &[&str]) {
    let written = t.everything_written();
    for s in secrets {
        assert!(!written.contains(s), "a receiver URL ({s}) leaked into status, events or the log");
    }
}

fn events(t: &DeployTest) -> String {
    t.cluster.kubectl_ok(&["get", "events", "-o", "yaml"]).unwrap()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_succeeded_and_a_failed_deploy_are_sent_as_json_and_as_slack_text() {
    let json_rx = HttpReceiver::start(Answer::Ok).unwrap();
    let slack_rx = HttpReceiver::start(Answer::Ok).unwrap();
    let (t, site) = start(
        "nt-payload",
        1,
        vec![
            NotificationManifest::new("qa-json", &json_rx.url(), "Json", &["Succeeded", "Failed"]),
            NotificationManifest::new("qa-slack", &slack_rx.url(), "Slack", &["Succeeded"]),
            NotificationManifest::new("not-http", "file:///etc/slipway-e2e-secret-path", "Json", &["Succeeded"]),
        ],
    );
    let user = t.cluster.user().unwrap();

    t.deploy(&DeployRequestManifest::tag("good", "staging", "ticker-v1")).unwrap();
    t.expect_outcome("good", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let uid = t.deploy_request("good").unwrap().uid;
    let got = json_rx.wait_for(1, NOTIFY_TIMEOUT).unwrap();
    let request = &got[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", format!("/{}", json_rx.token).as_str()));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("x-slipway-event-id"), Some(format!("{uid}/Succeeded").as_str()));
    let p = &request.body;
    let commit = site.commit_of("ticker-v1").unwrap();
    let expect = [
        ("eventId", Value::from(format!("{uid}/Succeeded"))),
        ("event", "Succeeded".into()),
        ("kind", "DeployRequest".into()),
        ("name", "good".into()),
        ("namespace", t.cluster.namespace.clone().into()),
        ("environment", "staging".into()),
        ("phase", "Succeeded".into()),
        ("reason", "Succeeded".into()),
        ("revision", "tag ticker-v1".into()),
        ("issue", "#7".into()),
        ("requestedBy", user.clone().into()),
    ];
    for (key, want) in expect {
        assert_eq!(p[key], want, "payload field {key}: {p:#}");
    }
    assert_eq!(p["release"]["ref"], "ticker-v1", "{p:#}");
    assert_eq!(p["release"]["commit"], commit.as_str(), "{p:#}");
    assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p:#}");
    assert!(slipway_e2e::deploy::rfc3339_nanos(p["time"].as_str().unwrap_or_default()).is_ok(), "{p:#}");

    let slack = slack_rx.wait_for(1, NOTIFY_TIMEOUT).unwrap();
    let body = slack[0].body.as_object().unwrap().clone();
    assert_eq!(body.keys().collect::<Vec<_>>(), ["text"], "{body:?}");
    let text = body["text"].as_str().unwrap();
    for part in ["DeployRequest", "/good", "tag ticker-v1", "succeeded on *staging*", &commit[..7], "#7", &user] {
        assert!(text.contains(part), "slack text lacks {part:?}: {text}");
    }

    // the outbox says what went where; the URL that is no URL is refused once, with an Event
    let status = wait_status(&t, "good", "settled", |s| {
        state_is(s, "qa-json", "Succeeded", "Delivered")
            && state_is(s, "qa-slack", "Succeeded", "Delivered")
            && state_is(s, "not-http", "Succeeded", "Failed")
    });
    assert_eq!(status.notifications.len(), 3, "{:#?}", status.notifications);
    let json_entry = status.notification("qa-json", "Succeeded").unwrap();
    assert_eq!((json_entry.attempts, json_entry.event_id.as_str()), (1, format!("{uid}/Succeeded").as_str()));
    let refused = status.notification("not-http", "Succeeded").unwrap();
    assert_eq!(refused.attempts, 1);
    assert!(
        refused.last_error.as_deref().unwrap_or_default().contains("not an http:// or https:// URL"),
        "{refused:?}"
    );
    let events = events(&t);
    assert!(events.contains("NotificationFailed") && events.contains("receiver not-http"), "{events}");

    // a failed deploy: only the receiver that wants failures hears of it
    t.deploy(&DeployRequestManifest::tag("missing", "staging", "ticker-v9")).unwrap();
    t.expect_outcome("missing", "RevisionNotFound", REFUSAL_TIMEOUT).unwrap();
    let failed_uid = t.deploy_request("missing").unwrap().uid;
    let got = json_rx.wait_for(2, NOTIFY_TIMEOUT).unwrap();
    let p = &got[1].body;
    assert_eq!(p["eventId"], format!("{failed_uid}/Failed"), "{p:#}");
    assert_eq!((p["event"].as_str(), p["phase"].as_str()), (Some("Failed"), Some("Failed")), "{p:#}");
    assert_eq!(p["reason"], "RevisionNotFound", "{p:#}");
    assert_eq!(p["name"], "missing", "{p:#}");
    assert!(p["message"].as_str().is_some_and(|m| m.contains("ticker-v9")), "{p:#}");
    let status = wait_status(&t, "missing", "settled", |s| state_is(s, "qa-json", "Failed", "Delivered"));
    assert_eq!(status.notifications.len(), 1, "only qa-json wants failures: {:#?}", status.notifications);
    assert_eq!(slack_rx.received().len(), 1, "the Slack receiver wants successes only");
    assert_eq!(json_rx.received().len(), 2);

    assert_no_url_leaked(&t, &[&json_rx.token, &slack_rx.token, "slipway-e2e-secret-path"]);
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_failing_receiver_gets_the_event_once_more_and_a_silent_one_holds_up_nothing() {
    let flaky = HttpReceiver::start(Answer::FailFirst(1)).unwrap();
    let silent = HttpReceiver::start(Answer::Hang).unwrap();
    let steady = HttpReceiver::start(Answer::Ok).unwrap();
    let (t, _site) = start(
        "nt-retry",
        2,
        vec![
            NotificationManifest::new("flaky", &flaky.url(), "Json", &["Succeeded"]),
            NotificationManifest::new("silent", &silent.url(), "Json", &["Succeeded"]),
            NotificationManifest::new("steady", &steady.url(), "Slack", &["Succeeded"]),
        ],
    );
    t.deploy(&DeployRequestManifest::tag("first", "staging", "ticker-v1")).unwrap();
    t.expect_outcome("first", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let ended = Instant::now();

    // the steady receiver is told while the silent one still holds its connection open
    steady.wait_for(1, Duration::from_secs(15)).unwrap();
    assert!(ended.elapsed() < Duration::from_secs(10), "the steady receiver waited for the silent one");
    assert_eq!(silent.wait_for(1, Duration::from_secs(5)).unwrap()[0].answered, None);

    // 500, then 200 to the retry: the same event, the same bytes, and no third request
    let got = flaky.wait_for(2, NOTIFY_TIMEOUT).unwrap();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [Some(500), Some(200)]);
    assert_eq!(got[0].event_id(), got[1].event_id());
    assert_eq!(got[0].body, got[1].body, "a retry sends the same payload");
    let status = wait_status(&t, "first", "flaky delivered", |s| state_is(s, "flaky", "Succeeded", "Delivered"));
    let entry = status.notification("flaky", "Succeeded").unwrap();
    assert_eq!((entry.attempts, entry.event_id.as_str()), (2, got[0].event_id()), "{entry:?}");
    assert_eq!(
        status.notification("steady", "Succeeded").map(|n| (n.state.as_str(), n.attempts)),
        Some(("Delivered", 1))
    );

    // the silent receiver: still pending, retried, its failure an Event naming it (not its URL)
    let status = wait_status(&t, "first", "silent attempted", |s| {
        s.notification("silent", "Succeeded").is_some_and(|n| n.attempts >= 1 && n.last_error.is_some())
    });
    let entry = status.notification("silent", "Succeeded").unwrap();
    assert_eq!(entry.state, "Pending", "{entry:?}");
    assert!(entry.last_error.as_deref().unwrap_or_default().contains("no answer within 10 s"), "{entry:?}");
    assert_eq!(status.phase(), "Succeeded");
    let events = events(&t);
    assert!(events.contains("NotificationFailed") && events.contains("receiver silent"), "{events}");
    let (_, metrics) = t.cluster.controller_get("/metrics").unwrap();
    assert!(metrics.contains("slipway_notifications_total{result=\"failed\"}"), "{metrics}");
    assert!(metrics.contains("slipway_notifications_total{result=\"delivered\"}"), "{metrics}");

    // the Environment's lock is free: the next deploy runs while the silent receiver is retried
    assert!(t.environment("staging").unwrap().status.active_deploy.is_none());
    t.deploy(&DeployRequestManifest::tag("second", "staging", "ticker-v2")).unwrap();
    t.expect_outcome("second", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let got = flaky.wait_for(3, NOTIFY_TIMEOUT).unwrap();
    let second_uid = t.deploy_request("second").unwrap().uid;
    assert_eq!(got[2].event_id(), format!("{second_uid}/Succeeded"));
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(flaky.received().len(), 3, "a delivered event was sent again: {:#?}", flaky.received());
    assert_eq!(steady.received().len(), 2);

    assert_no_url_leaked(&t, &[&flaky.token, &silent.token, &steady.token]);
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_restarted_controller_sends_what_was_pending_and_nothing_it_had_delivered() {
    let steady = HttpReceiver::start(Answer::Ok).unwrap();
    let down = HttpReceiver::start(Answer::Switch).unwrap();
    let (mut t, _site) = start(
        "nt-restart",
        3,
        vec![
            NotificationManifest::new("steady", &steady.url(), "Json", &["Succeeded", "Failed"]),
            NotificationManifest::new("down", &down.url(), "Json", &["Succeeded"]),
        ],
    );
    t.deploy(&DeployRequestManifest::tag("release", "staging", "ticker-v1")).unwrap();
    t.expect_outcome("release", "Succeeded", DEPLOY_TIMEOUT).unwrap();
    let status = wait_status(&t, "release", "half delivered", |s| {
        state_is(s, "steady", "Succeeded", "Delivered")
            && s.notification("down", "Succeeded").is_some_and(|n| n.attempts >= 1 && n.state == "Pending")
    });
    let event_id = status.notification("down", "Succeeded").unwrap().event_id.clone();
    assert_eq!(steady.received().len(), 1);

    t.cluster.kill_controller().unwrap();
    down.set_failing(false);
    let tried = down.received().len();
    t.cluster.start_controller().unwrap();

    // the pending event is sent by the new controller, the delivered one is not sent again
    let got = down.wait_for(tried + 1, NOTIFY_TIMEOUT).unwrap();
    let last = got.last().unwrap();
    assert_eq!((last.answered, last.event_id()), (Some(200), event_id.as_str()));
    let status = wait_status(&t, "release", "delivered", |s| state_is(s, "down", "Succeeded", "Delivered"));
    assert_eq!(status.notification("steady", "Succeeded").unwrap().attempts, 1);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(steady.received().len(), 1, "a delivered event was sent again: {:#?}", steady.received());
    assert!(down.received().iter().filter(|r| r.answered == Some(200)).count() == 1, "{:#?}", down.received());
}
