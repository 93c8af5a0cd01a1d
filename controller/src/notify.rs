//! Notifications of finished DeployRequests and Rollbacks to the receivers an Environment lists
//! (`spec.notifications`).
//!
//! The outbox is the request's `status.notifications`: the entries due are recorded in the same
//! status write that ends the request ([`enqueue`]), then delivered by its later reconciles
//! (`deploy::outbox`), each attempt recorded. So a restarted controller neither loses an event
//! nor sends a delivered one again; a crash between a delivery and its record sends it once
//! more, with the same `eventId` (at least once). Delivery never holds up the deploy path: the
//! request has already ended and released its lock.
//!
//! Pure functions decide what is due, what is sent and when to try again; [`Sender`] is the
//! only code that talks HTTP.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use slipway_crds::conditions::types;
use slipway_crds::{
    DeliveryState, DeployRequestStatus, NotificationEvent, NotificationFormat, NotificationRecord, Phase, Receiver,
};

use crate::conditions;
use crate::deploy::Req;
use crate::deploy::auto;
use crate::references::Problem;
use crate::remote::{Redactor, SecretBytes};
use crate::secrets::{self, SecretReader};

/// First retry delay after a failed attempt; it doubles with each further one.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest delay between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(120);
/// How long after the event attempts go on; no attempt starts later than this.
pub const RETRY_WINDOW: Duration = Duration::from_secs(600);
/// Bound on connecting, and on a whole request (connect, send, answer).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished request tells: its outcome and, for a DeployRequest rolled back (or whose
/// rollback could not happen), that its commit was quarantined. An automatic Rollback tells
/// nothing of its own: the DeployRequest it undoes reports how it ended.
pub fn outcomes(req: &Req, st: &DeployRequestStatus) -> Vec<NotificationEvent> {
    if auto::is_automatic(req) {
        return Vec::new();
    }
    let mut out = match st.phase {
        Some(Phase::Succeeded) => vec![NotificationEvent::Succeeded],
        Some(Phase::Failed) => vec![NotificationEvent::Failed],
        Some(Phase::RolledBack) => vec![NotificationEvent::RolledBack],
        _ => return Vec::new(),
    };
    if req.as_deploy().is_some() && st.rollback.is_some() {
        out.push(NotificationEvent::Quarantined);
    }
    out
}

/// The stable id of an event: the same on every attempt, to every receiver.
pub fn event_id(uid: &str, event: NotificationEvent) -> String {
    format!("{uid}/{event}")
}

/// The outbox entries due for a request ending with status `st`: one per receiver and event it wants.
pub fn due(req: &Req, receivers: &[Receiver], st: &DeployRequestStatus, now: Timestamp) -> Vec<NotificationRecord> {
    let mut out = Vec::new();
    for event in outcomes(req, st) {
        for r in receivers.iter().filter(|r| r.events.contains(&event)) {
            out.push(NotificationRecord::pending(&r.name, event, event_id(&req.uid(), event), now.to_string()));
        }
    }
    out
}

/// Records the outbox in the status write that ends the request (and only then: a receiver
/// added later is not told about requests that ended before).
pub fn enqueue(
    req: &Req,
    receivers: &[Receiver],
    old: &DeployRequestStatus,
    st: &mut DeployRequestStatus,
    now: Timestamp,
) {
    let ends = st.phase.is_some_and(Phase::is_terminal) && !old.phase.is_some_and(Phase::is_terminal);
    if ends && st.notifications.is_empty() {
        st.notifications = due(req, receivers, st, now);
    }
}

/// Settled entries of an Environment's outbox kept (the newest); pending ones are always kept.
pub const ENVIRONMENT_OUTBOX_KEPT: usize = 20;
/// Longest condition message an Environment's event carries.
const EVENT_MESSAGE_MAX: usize = 1000;

/// The Environment's own events between its conditions before (`old`) and after (`new`) a
/// reconcile, given its outbox: `Healthy` turning False, or True again after a False that was
/// told (a host out of reach in between, `Unknown`, does not hide the recovery), and `Drifted`
/// turning True. Each carries the condition it comes from; its id is the Environment's UID, the
/// event and the condition's transition time, so a reconcile repeated after a failed write
/// enqueues nothing twice.
pub fn environment_events<'a>(
    old: &[Condition],
    new: &'a [Condition],
    outbox: &[NotificationRecord],
) -> Vec<(NotificationEvent, &'a Condition)> {
    let status = |conds: &[Condition], t: &str| conditions::find(conds, t).map(|c| c.status.clone());
    let mut out = Vec::new();
    if let Some(now) = conditions::find(new, types::HEALTHY).filter(|c| c.status == "True" || c.status == "False") {
        let last_told = outbox
            .iter()
            .filter(|r| r.event == NotificationEvent::HealthChanged)
            .max_by(|a, b| a.time.cmp(&b.time))
            .and_then(|r| r.status.clone());
        let before = status(old, types::HEALTHY)
            .filter(|s| s == "True" || s == "False")
            .or(last_told)
            .unwrap_or_else(|| "True".into());
        if before != now.status {
            out.push((NotificationEvent::HealthChanged, now));
        }
    }
    if let Some(now) = conditions::find(new, types::DRIFTED).filter(|c| c.status == "True")
        && status(old, types::DRIFTED).as_deref() != Some("True")
    {
        // The same drift seen again after the host was out of reach (True, Unknown, True) is
        // not news: the last one told said the same.
        let last_told = outbox
            .iter()
            .filter(|r| r.event == NotificationEvent::Drifted)
            .max_by(|a, b| a.time.cmp(&b.time))
            .and_then(|r| r.message.as_deref());
        let message: String = now.message.chars().take(EVENT_MESSAGE_MAX).collect();
        let again = status(old, types::DRIFTED).as_deref() == Some("Unknown") && last_told == Some(message.as_str());
        if !again {
            out.push((NotificationEvent::Drifted, now));
        }
    }
    out
}

/// The outbox entries for an Environment's `events`: one per receiver wanting each, skipping
/// those already in `outbox` (same event id and receiver).
pub fn environment_due(
    uid: &str,
    receivers: &[Receiver],
    events: &[(NotificationEvent, &Condition)],
    outbox: &[NotificationRecord],
    now: Timestamp,
) -> Vec<NotificationRecord> {
    let mut out = Vec::new();
    for (event, condition) in events {
        let id = format!("{uid}/{event}/{}", condition.last_transition_time.0);
        for r in receivers.iter().filter(|r| r.events.contains(event)) {
            if outbox.iter().any(|o| o.event_id == id && o.receiver == r.name) {
                continue;
            }
            let message: String = condition.message.chars().take(EVENT_MESSAGE_MAX).collect();
            out.push(NotificationRecord {
                status: Some(condition.status.clone()),
                message: Some(message).filter(|m| !m.is_empty()),
                ..NotificationRecord::pending(&r.name, *event, id.clone(), now.to_string())
            });
        }
    }
    out
}

/// The outbox with `added` appended, keeping every pending entry and the newest settled ones.
pub fn environment_outbox(
    mut outbox: Vec<NotificationRecord>,
    added: Vec<NotificationRecord>,
) -> Vec<NotificationRecord> {
    outbox.extend(added);
    let settled = outbox.iter().filter(|r| r.state != DeliveryState::Pending).count();
    let mut drop = settled.saturating_sub(ENVIRONMENT_OUTBOX_KEPT);
    // oldest first: entries are appended in time order
    outbox.retain(|r| {
        if drop > 0 && r.state != DeliveryState::Pending {
            drop -= 1;
            return false;
        }
        true
    });
    outbox
}

/// The body of an Environment's event for a receiver's format (documented in the README).
pub fn environment_body(
    format: NotificationFormat,
    env: &slipway_crds::Environment,
    r: &NotificationRecord,
) -> Vec<u8> {
    use kube::ResourceExt;
    let current = env.status.as_ref().and_then(|s| s.current.as_ref());
    let (name, namespace) = (env.name_any(), env.namespace().unwrap_or_default());
    let value = match format {
        NotificationFormat::Json => json!({
            "eventId": r.event_id,
            "event": r.event,
            "time": r.time,
            "kind": "Environment",
            "name": name,
            "namespace": namespace,
            "environment": name,
            "status": r.status,
            "message": r.message,
            "release": {"ref": current.map(|c| &c.ref_), "commit": current.map(|c| &c.commit)},
        }),
        NotificationFormat::Slack => {
            let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let healthy = r.status.as_deref() == Some("True");
            let (mark, what) = match r.event {
                NotificationEvent::HealthChanged if healthy => (":white_check_mark:", "is healthy again"),
                NotificationEvent::HealthChanged => (":warning:", "is unhealthy"),
                _ => (":warning:", "drifted from its recorded release"),
            };
            let mut text = format!("{mark} Environment {namespace}/*{name}* {what}");
            if let Some(c) = current {
                text.push_str(&format!(" (runs {}, commit {})", esc(&c.ref_), crate::deploy::plan::short(&c.commit)));
            }
            if let Some(m) = &r.message {
                text.push_str(&format!("\n{}", esc(m)));
            }
            text.push_str(&format!("\n(event {})", r.event_id));
            json!({"text": text})
        }
    };
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// The delay after `attempts` failed attempts.
pub fn retry_delay(attempts: i32) -> Duration {
    crate::backoff::delay(u32::try_from(attempts).unwrap_or(0), RETRY_BASE, RETRY_MAX)
}

fn parse(t: &str) -> Option<Timestamp> {
    t.parse().ok()
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(t)
}

/// When an entry is next tried: `None` once it is settled (delivered or given up).
pub fn next_attempt(r: &NotificationRecord) -> Option<Timestamp> {
    if r.state != DeliveryState::Pending {
        return None;
    }
    let event = parse(&r.time).unwrap_or(Timestamp::UNIX_EPOCH);
    match r.last_attempt.as_deref().and_then(parse) {
        Some(last) if r.attempts > 0 => Some(add(last, retry_delay(r.attempts))),
        _ => Some(event),
    }
}

/// How long until the earliest pending entry is due (zero when one is due now); `None` when
/// nothing is pending.
pub fn wait(records: &[NotificationRecord], now: Timestamp) -> Option<Duration> {
    records
        .iter()
        .filter_map(next_attempt)
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
        .min()
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// Failed; worth trying again (a timeout, a 5xx, a missing Secret).
    Failed(String),
    /// Failed for good: trying again cannot help (not an http(s) URL).
    Refused(String),
}

/// Where an entry stands after an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    RetryIn(Duration),
    GaveUp,
}

/// Records one attempt made at `now`. A failed entry is tried again after [`retry_delay`], as
/// long as that falls within [`RETRY_WINDOW`] of the event; otherwise it is given up.
pub fn settle(r: &mut NotificationRecord, attempt: &Attempt, now: Timestamp) -> Settled {
    r.attempts = r.attempts.saturating_add(1);
    r.last_attempt = Some(now.to_string());
    match attempt {
        Attempt::Delivered => {
            r.state = DeliveryState::Delivered;
            r.last_error = None;
            Settled::Delivered
        }
        Attempt::Refused(e) => {
            r.state = DeliveryState::Failed;
            r.last_error = Some(e.clone());
            Settled::GaveUp
        }
        Attempt::Failed(e) => {
            r.last_error = Some(e.clone());
            let delay = retry_delay(r.attempts);
            let event = parse(&r.time).unwrap_or(now);
            if add(now, delay) > add(event, RETRY_WINDOW) {
                r.state = DeliveryState::Failed;
                Settled::GaveUp
            } else {
                Settled::RetryIn(delay)
            }
        }
    }
}

/// What a payload says about the request, read from the request and its status.
struct Subject {
    kind: &'static str,
    name: String,
    namespace: String,
    environment: String,
    phase: Option<Phase>,
    reason: Option<String>,
    message: Option<String>,
    revision: Option<String>,
    release_ref: Option<String>,
    commit: Option<String>,
    previous_commit: Option<String>,
    issue: Option<String>,
    requested_by: Option<String>,
    rollback: Option<String>,
}

fn subject(req: &Req, st: &DeployRequestStatus) -> Subject {
    let ready = conditions::find(&st.conditions, types::READY);
    let (release_ref, issue) = match req {
        Req::Deploy(d) => (d.spec.revision.name().map(str::to_owned), d.spec.issue.clone()),
        Req::Rollback(r) => (r.spec.to.tag.clone(), None),
    };
    Subject {
        kind: req.kind(),
        name: req.name(),
        namespace: req.namespace(),
        environment: req.environment().to_owned(),
        phase: st.phase,
        reason: ready.map(|c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
        revision: st.revision.clone().or_else(|| Some(req.revision_display())),
        release_ref,
        commit: st.commit.clone(),
        previous_commit: st.previous_commit.clone(),
        issue,
        requested_by: req.requested_by().map(str::to_owned),
        rollback: st.rollback.clone(),
    }
}

/// The `Json` payload (documented in the README): the same bytes on every attempt.
pub fn json_payload(req: &Req, st: &DeployRequestStatus, r: &NotificationRecord) -> Value {
    let s = subject(req, st);
    json!({
        "eventId": r.event_id,
        "event": r.event,
        "time": r.time,
        "kind": s.kind,
        "name": s.name,
        "namespace": s.namespace,
        "environment": s.environment,
        "phase": s.phase,
        "reason": s.reason,
        "message": s.message,
        "revision": s.revision,
        "release": {"ref": s.release_ref, "commit": s.commit, "previousCommit": s.previous_commit},
        "issue": s.issue,
        "requestedBy": s.requested_by,
        "rollback": s.rollback,
    })
}

/// The one line (plus the message) a Slack channel shows.
pub fn slack_text(req: &Req, st: &DeployRequestStatus, r: &NotificationRecord) -> String {
    let s = subject(req, st);
    // Slack reads `<...>` as mentions and links and `&` as entities: text from the cluster (a
    // host's stderr in a message) must not ping a channel or hide a link.
    let esc = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mark = match r.event {
        NotificationEvent::Succeeded => ":white_check_mark:",
        NotificationEvent::Failed => ":x:",
        NotificationEvent::RolledBack => ":rewind:",
        NotificationEvent::Quarantined => ":no_entry:",
        NotificationEvent::HealthChanged | NotificationEvent::Drifted => ":warning:",
    };
    let what = match r.event {
        NotificationEvent::Succeeded => "succeeded on",
        NotificationEvent::Failed => "failed on",
        NotificationEvent::RolledBack => "failed and was rolled back on",
        NotificationEvent::Quarantined => "was quarantined on",
        NotificationEvent::HealthChanged => "changed health on",
        NotificationEvent::Drifted => "drifted on",
    };
    let mut text = format!(
        "{mark} {} {}/{} ({}) {what} *{}*",
        s.kind,
        s.namespace,
        s.name,
        esc(s.revision.as_deref().unwrap_or("-")),
        s.environment
    );
    if let Some(commit) = &s.commit {
        text.push_str(&format!(", commit {}", crate::deploy::plan::short(commit)));
    }
    if let Some(issue) = &s.issue {
        text.push_str(&format!(", issue {}", esc(issue)));
    }
    if let Some(who) = &s.requested_by {
        text.push_str(&format!(", asked by {}", esc(who)));
    }
    if let (Some(reason), Some(message)) = (&s.reason, &s.message) {
        text.push_str(&format!("\n{reason}: {}", esc(message)));
    }
    text.push_str(&format!("\n(event {})", r.event_id));
    text
}

/// The request body for a receiver's format.
pub fn body(format: NotificationFormat, req: &Req, st: &DeployRequestStatus, r: &NotificationRecord) -> Vec<u8> {
    let value = match format {
        NotificationFormat::Json => json_payload(req, st, r),
        NotificationFormat::Slack => json!({"text": slack_text(req, st, r)}),
    };
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// The URL of `receiver`, from its opted-in Secret; the problem names the Secret and the fix,
/// never the value.
pub async fn receiver_url(
    secrets: &mut SecretReader,
    receiver: &Receiver,
) -> crate::error::Result<Result<SecretBytes, Problem>> {
    let field = format!("spec.notifications[{}].urlSecretRef", receiver.name);
    let r = &receiver.url_secret_ref;
    let ns = secrets.namespace().to_owned();
    let lookup = secrets.get(&r.name).await?;
    Ok(secrets::usable(lookup, &field, &r.name, &ns).and_then(|s| secrets::key_value(s, &field, &r.name, &r.key)))
}

/// The URL as a `reqwest::Url` when it is an absolute `http://` or `https://` URL; the error
/// never repeats it.
pub fn check_url(url: &SecretBytes, receiver: &Receiver) -> Result<reqwest::Url, String> {
    let r = &receiver.url_secret_ref;
    let text = std::str::from_utf8(url.expose()).map(str::trim).unwrap_or_default();
    match reqwest::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if link_local(&u) {
                return Err(format!(
                    "the URL in key {:?} of Secret {:?} names a link-local address (such as a cloud metadata \
                     service): Slipway does not send notifications there; put the receiver's URL there",
                    r.key, r.name
                ));
            }
            Ok(u)
        }
        _ => Err(format!(
            "the value of key {:?} in Secret {:?} is not an http:// or https:// URL: Slipway sends notifications \
             only over HTTP(S); put the receiver's URL there",
            r.key, r.name
        )),
    }
}

/// Does `url` name a link-local address (169.254.0.0/16, fe80::/10: where cloud metadata services
/// answer) or the metadata host names? The controller would reach them from its own position.
fn link_local(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            (ip.segments()[0] & 0xffc0) == 0xfe80 || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "metadata.google.internal" || d == "metadata"
        }
    }
}

/// A Redactor masking `url` and its parts (a webhook's token is its path).
pub fn redactor_for(url: &reqwest::Url) -> Redactor {
    let redactor = Redactor::new();
    redactor.register(url.as_str().as_bytes());
    redactor.register(url.as_str().trim_end_matches('/').as_bytes());
    redactor.register(url.path().as_bytes());
    if let Some(q) = url.query() {
        redactor.register(q.as_bytes());
    }
    redactor
}

/// Sends notifications: one HTTP client, bounded in time, following no redirect.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
}

impl Sender {
    pub fn new() -> Sender {
        Sender::with_timeout(REQUEST_TIMEOUT)
    }

    /// A sender whose requests (connecting included) end after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Sender {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with rustls and webpki roots always builds");
        Sender { client, timeout }
    }

    /// POSTs `body` to `url`; any 2xx is delivered. Errors never name the URL.
    pub async fn send(&self, url: reqwest::Url, event_id: &str, body: Vec<u8>) -> Attempt {
        let redactor = redactor_for(&url);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Slipway-Event-Id", event_id)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => Attempt::Delivered,
            Ok(answer) if answer.status().is_redirection() => Attempt::Failed(format!(
                "the receiver answered HTTP {} (redirects are not followed: use the final URL)",
                answer.status()
            )),
            Ok(answer) => Attempt::Failed(format!("the receiver answered HTTP {}", answer.status())),
            Err(e) => Attempt::Failed(redactor.redact(&describe(e.without_url(), self.timeout))),
        }
    }
}

impl Default for Sender {
    fn default() -> Self {
        Sender::new()
    }
}

/// An HTTP error as a person reads it: what failed and why, with its causes.
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    let what = if e.is_timeout() {
        format!("no answer within {} s", timeout.as_secs_f32())
    } else if e.is_connect() {
        "could not connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let text = s.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    if causes.is_empty() { what } else { format!("{what}: {}", causes.join(": ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_hosts_are_refused() {
        for bad in [
            "http://169.254.169.254/latest",
            "http://[fe80::1]/x",
            "http://metadata.google.internal/",
            "http://[::ffff:169.254.1.1]/",
        ] {
            assert!(link_local(&reqwest::Url::parse(bad).unwrap()), "{bad}");
        }
        for ok in ["https://hooks.slack.com/services/T/B/X", "http://127.0.0.1:9000/hook", "http://10.0.0.5/"] {
            assert!(!link_local(&reqwest::Url::parse(ok).unwrap()), "{ok}");
        }
    }
    use slipway_crds::{DeployRequest, DeployRequestSpec, Revision, Rollback, SecretKeyRef};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn receiver(name: &str, events: &[NotificationEvent], format: NotificationFormat) -> Receiver {
        Receiver {
            name: name.into(),
            url_secret_ref: SecretKeyRef { name: "hooks".into(), key: name.into() },
            format,
            events: events.to_vec(),
        }
    }

    fn deploy() -> Req {
        let mut dr = DeployRequest::new(
            "shop-45",
            DeployRequestSpec {
                restart: Vec::new(),
                environment: "staging".into(),
                revision: Revision { tag: Some("v1.2.3".into()), ..Default::default() },
                issue: Some("#45".into()),
                mode: Default::default(),
                force: false,
                override_quarantine: false,
            },
        );
        dr.metadata.namespace = Some("team".into());
        dr.metadata.uid = Some("0f2c9a1b-7d".into());
        dr.metadata.annotations = Some([("slipway.dev/requested-by".to_owned(), "alice".to_owned())].into());
        Req::Deploy(dr)
    }

    fn ended(phase: Phase, reason: &'static str, message: &str) -> DeployRequestStatus {
        let decided = crate::deploy::plan::conditions_for(phase, reason, message.to_owned());
        DeployRequestStatus {
            phase: Some(phase),
            revision: Some("tag v1.2.3".into()),
            commit: Some("4f1c2ab0123456789abcdef0123456789abcdef0".into()),
            previous_commit: Some("aaaaaaa0123456789abcdef0123456789abcdef0".into()),
            conditions: conditions::set(&[], &decided, Some(1), t(0)),
            ..Default::default()
        }
    }

    use NotificationEvent::*;

    #[test]
    fn each_ending_tells_its_events_to_the_receivers_that_want_them() {
        let all = [Succeeded, Failed, RolledBack, Quarantined, HealthChanged, Drifted];
        let receivers = [
            receiver("everything", &all, NotificationFormat::Json),
            receiver("failures", &[Failed, RolledBack], NotificationFormat::Slack),
            receiver("quarantine", &[Quarantined], NotificationFormat::Json),
        ];
        let rolled_back = DeployRequestStatus {
            rollback: Some("shop-45-rollback-0f2c9".into()),
            ..ended(Phase::RolledBack, "RolledBack", "x")
        };
        let rollback_failed =
            DeployRequestStatus { rollback: Some("r".into()), ..ended(Phase::Failed, "RollbackFailed", "x") };
        let cases: [(DeployRequestStatus, &[(&str, NotificationEvent)]); 5] = [
            (ended(Phase::Succeeded, "Succeeded", "ok"), &[("everything", Succeeded)]),
            (ended(Phase::Failed, "RevisionNotFound", "no"), &[("everything", Failed), ("failures", Failed)]),
            (
                rolled_back,
                &[
                    ("everything", RolledBack),
                    ("failures", RolledBack),
                    ("everything", Quarantined),
                    ("quarantine", Quarantined),
                ],
            ),
            (
                rollback_failed,
                &[
                    ("everything", Failed),
                    ("failures", Failed),
                    ("everything", Quarantined),
                    ("quarantine", Quarantined),
                ],
            ),
            (DeployRequestStatus { phase: Some(Phase::Verifying), ..Default::default() }, &[]),
        ];
        for (st, want) in cases {
            let got = due(&deploy(), &receivers, &st, t(0));
            let pairs: Vec<(&str, NotificationEvent)> = got.iter().map(|r| (r.receiver.as_str(), r.event)).collect();
            assert_eq!(pairs, want, "{:?}", st.phase);
            for r in &got {
                assert_eq!(r.event_id, format!("0f2c9a1b-7d/{}", r.event));
                assert_eq!((r.state, r.attempts, r.time.as_str()), (DeliveryState::Pending, 0, "2023-11-14T22:13:20Z"));
            }
        }
    }

    #[test]
    fn the_outbox_is_filled_once_when_the_request_ends() {
        let receivers = [receiver("qa", &[Succeeded], NotificationFormat::Json)];
        let running = DeployRequestStatus { phase: Some(Phase::Verifying), ..Default::default() };
        let mut st = ended(Phase::Succeeded, "Succeeded", "ok");
        enqueue(&deploy(), &receivers, &running, &mut st, t(0));
        assert_eq!(st.notifications.len(), 1);
        // a later write of the finished request (or a receiver added since) adds nothing
        let old = st.clone();
        let more = [
            receiver("qa", &[Succeeded], NotificationFormat::Json),
            receiver("new", &[Succeeded], NotificationFormat::Json),
        ];
        let mut again = old.clone();
        again.notifications.clear();
        enqueue(&deploy(), &more, &old, &mut again, t(60));
        assert!(again.notifications.is_empty());
    }

    #[test]
    fn an_automatic_rollback_leaves_the_telling_to_its_deploy_request() {
        let Req::Deploy(owner) = deploy() else { unreachable!() };
        let mut rb = Rollback::new(
            "shop-45-rollback-0f2c9",
            slipway_crds::RollbackSpec {
                environment: "staging".into(),
                to: slipway_crds::RollbackTarget { release: Some("aaaaaaa".into()), ..Default::default() },
                reason: "automatic".into(),
                migrations: Default::default(),
            },
        );
        let st = ended(Phase::Succeeded, "Succeeded", "ok");
        assert_eq!(outcomes(&Req::Rollback(rb.clone()), &st), [Succeeded], "a person's Rollback tells");
        rb.metadata.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "slipway.dev/v1alpha1".into(),
            kind: "DeployRequest".into(),
            name: "shop-45".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        assert!(outcomes(&Req::Rollback(rb), &st).is_empty());
    }

    #[test]
    fn the_json_payload_carries_what_a_receiver_needs() {
        let st = ended(Phase::Failed, "RevisionNotFound", "tag v9 not found in the repository");
        let r = &due(&deploy(), &[receiver("qa", &[Failed], NotificationFormat::Json)], &st, t(0))[0];
        let payload = json_payload(&deploy(), &st, r);
        assert_eq!(
            payload,
            json!({
                "eventId": "0f2c9a1b-7d/Failed",
                "event": "Failed",
                "time": "2023-11-14T22:13:20Z",
                "kind": "DeployRequest",
                "name": "shop-45",
                "namespace": "team",
                "environment": "staging",
                "phase": "Failed",
                "reason": "RevisionNotFound",
                "message": "tag v9 not found in the repository",
                "revision": "tag v1.2.3",
                "release": {
                    "ref": "v1.2.3",
                    "commit": "4f1c2ab0123456789abcdef0123456789abcdef0",
                    "previousCommit": "aaaaaaa0123456789abcdef0123456789abcdef0"
                },
                "issue": "#45",
                "requestedBy": "alice",
                "rollback": null,
            })
        );
        // the same bytes on every attempt, whatever the attempt count says
        let mut later = r.clone();
        settle(&mut later, &Attempt::Failed("HTTP 500".into()), t(1));
        assert_eq!(
            body(NotificationFormat::Json, &deploy(), &st, r),
            body(NotificationFormat::Json, &deploy(), &st, &later)
        );
    }

    #[test]
    fn the_slack_text_says_it_in_one_line_and_the_message() {
        let st = ended(Phase::Succeeded, "Succeeded", "tag v1.2.3 is live");
        let r = &due(&deploy(), &[receiver("qa", &[Succeeded], NotificationFormat::Slack)], &st, t(0))[0];
        let body: Value = serde_json::from_slice(&body(NotificationFormat::Slack, &deploy(), &st, r)).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 1, "only `text`: {body}");
        assert_eq!(
            body["text"],
            ":white_check_mark: DeployRequest team/shop-45 (tag v1.2.3) succeeded on *staging*, commit 4f1c2ab01234, \
             issue #45, asked by alice\nSucceeded: tag v1.2.3 is live\n(event 0f2c9a1b-7d/Succeeded)"
        );
    }

    fn pending() -> NotificationRecord {
        NotificationRecord::pending("qa", Succeeded, "u/Succeeded".into(), t(0).to_string())
    }

    #[test]
    fn retries_back_off_and_end_within_the_window() {
        assert_eq!((1..=8).map(|n| retry_delay(n).as_secs()).collect::<Vec<_>>(), [5, 10, 20, 40, 80, 120, 120, 120]);
        // an entry that always fails, retried as soon as it is due
        let mut r = pending();
        assert_eq!(next_attempt(&r), Some(t(0)), "due at once");
        let mut now = t(0);
        let mut attempts = Vec::new();
        loop {
            attempts.push(now.as_second() - t(0).as_second());
            match settle(&mut r, &Attempt::Failed("HTTP 500".into()), now) {
                Settled::RetryIn(d) => {
                    now = next_attempt(&r).unwrap();
                    assert_eq!(now, add(t(attempts[attempts.len() - 1]), d));
                }
                Settled::GaveUp => break,
                Settled::Delivered => unreachable!(),
            }
        }
        assert_eq!(attempts, [0, 5, 15, 35, 75, 155, 275, 395, 515]);
        assert!(attempts.iter().all(|a| *a <= RETRY_WINDOW.as_secs() as i64));
        assert_eq!((r.state, r.attempts, r.last_error.as_deref()), (DeliveryState::Failed, 9, Some("HTTP 500")));
        assert_eq!(next_attempt(&r), None, "given up: never tried again");
        assert_eq!(wait(&[r], now), None);
    }

    #[test]
    fn a_late_controller_tries_once_before_giving_up() {
        // the controller was down for the whole window: the entry still gets one attempt
        let r = pending();
        assert_eq!(wait(std::slice::from_ref(&r), t(3600)), Some(Duration::ZERO));
        let mut late = r.clone();
        assert_eq!(settle(&mut late, &Attempt::Failed("timeout".into()), t(3600)), Settled::GaveUp);
        let mut ok = r;
        assert_eq!(settle(&mut ok, &Attempt::Delivered, t(3600)), Settled::Delivered);
        assert_eq!((ok.state, ok.last_error), (DeliveryState::Delivered, None));
    }

    #[test]
    fn delivered_and_refused_entries_are_settled() {
        let mut r = pending();
        settle(&mut r, &Attempt::Failed("HTTP 500".into()), t(0));
        assert_eq!(wait(std::slice::from_ref(&r), t(2)), Some(Duration::from_secs(3)));
        assert_eq!(settle(&mut r, &Attempt::Delivered, t(5)), Settled::Delivered);
        assert_eq!((r.attempts, r.state), (2, DeliveryState::Delivered));
        assert_eq!(next_attempt(&r), None);
        let mut refused = pending();
        assert_eq!(settle(&mut refused, &Attempt::Refused("not http".into()), t(0)), Settled::GaveUp);
        assert_eq!(refused.state, DeliveryState::Failed);
    }

    #[test]
    fn only_http_urls_are_used_and_never_repeated() {
        let qa = receiver("qa", &[Succeeded], NotificationFormat::Json);
        for ok in ["https://hooks.example.com/services/T0/B0/XYZ", "http://127.0.0.1:8080/hook\n"] {
            assert!(check_url(&SecretBytes::from(ok), &qa).is_ok(), "{ok}");
        }
        for bad in ["file:///etc/passwd", "ftp://example.com/x", "hooks.example.com/x", "", "gopher://h/secret-token"] {
            let e = check_url(&SecretBytes::from(bad), &qa).unwrap_err();
            assert!(e.contains("Secret \"hooks\"") && e.contains("http://"), "{e}");
            if !bad.is_empty() {
                assert!(!e.contains(bad), "{e}");
            }
        }
    }

    #[test]
    fn errors_are_masked_of_the_url() {
        let url = reqwest::Url::parse("https://hooks.example.com/services/T0/B0/SECRETTOKEN?k=abcdefgh").unwrap();
        let r = redactor_for(&url);
        let text =
            r.redact("error sending request for url (https://hooks.example.com/services/T0/B0/SECRETTOKEN?k=abcdefgh)");
        assert!(!text.contains("SECRETTOKEN") && !text.contains("abcdefgh"), "{text}");
    }

    /// A one-connection-at-a-time HTTP server on the loopback answering `status` (and `extra`
    /// headers), or never when `status` is 0; returns its URL and the requests it read.
    fn serve(status: u16, extra: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook-token-abcdef", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let (mut read, mut buf) = (Vec::new(), [0; 4096]);
                // the head, then as many body bytes as it announces
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    read.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&read).to_ascii_lowercase();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                record.lock().unwrap().push(String::from_utf8_lossy(&read).into_owned());
                if status == 0 {
                    std::thread::sleep(Duration::from_secs(5));
                    continue;
                }
                let _ = write!(stream, "HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn answers_are_judged_and_errors_name_no_url() {
        let sender = Sender::with_timeout(Duration::from_millis(500));
        let (url, seen) = serve(204, String::new());
        let url = reqwest::Url::parse(&url).unwrap();
        assert_eq!(sender.send(url, "u/Succeeded", b"{\"a\":1}".to_vec()).await, Attempt::Delivered);
        let request = seen.lock().unwrap()[0].clone();
        assert!(request.starts_with("POST /hook-token-abcdef HTTP/1.1"), "{request}");
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/json") && lower.contains("x-slipway-event-id: u/succeeded"));
        assert!(request.ends_with("{\"a\":1}"), "{request}");

        let (url, _) = serve(500, String::new());
        let got = sender.send(reqwest::Url::parse(&url).unwrap(), "u/Failed", Vec::new()).await;
        assert_eq!(got, Attempt::Failed("the receiver answered HTTP 500 Internal Server Error".into()));

        // a redirect is not followed (it could lead anywhere, the URL's token with it)
        let (target, followed) = serve(200, String::new());
        let (url, _) = serve(302, format!("Location: {target}\r\n"));
        match sender.send(reqwest::Url::parse(&url).unwrap(), "u/Succeeded", Vec::new()).await {
            Attempt::Failed(e) => assert!(e.contains("302") && e.contains("not followed"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(followed.lock().unwrap().is_empty(), "the redirect was followed");

        // a receiver that reads and never answers: bounded by the timeout
        let (url, _) = serve(0, String::new());
        let start = std::time::Instant::now();
        match sender.send(reqwest::Url::parse(&url).unwrap(), "u/Succeeded", Vec::new()).await {
            Attempt::Failed(e) => {
                assert!(e.starts_with("no answer within 0.5 s"), "{e}");
                assert!(!e.contains("hook-token"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_closed_port_is_a_failed_attempt_that_names_no_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = reqwest::Url::parse(&format!("http://127.0.0.1:{port}/hook-with-token-abcdef")).unwrap();
        match Sender::new().send(url, "u/Succeeded", b"{}".to_vec()).await {
            Attempt::Failed(e) => {
                assert!(e.starts_with("could not connect"), "{e}");
                assert!(!e.contains("hook-with-token"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    fn cond(type_: &str, status: &str, at: i64, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t(at)),
        }
    }

    fn events_of(
        old: &[Condition],
        new: &[Condition],
        outbox: &[NotificationRecord],
    ) -> Vec<(NotificationEvent, String)> {
        environment_events(old, new, outbox).into_iter().map(|(e, c)| (e, c.status.clone())).collect()
    }

    #[test]
    fn an_environment_tells_health_changes_and_drift_once_each() {
        let healthy = [cond("Healthy", "True", 0, "1 containers running and healthy")];
        let sick = [cond("Healthy", "False", 5, "container p-web-1 is exited")];
        let unknown = [cond("Healthy", "Unknown", 9, "the host was not reached")];
        assert_eq!(events_of(&[], &healthy, &[]), [], "first judged healthy: nothing to tell");
        assert_eq!(events_of(&healthy, &healthy, &[]), []);
        assert_eq!(events_of(&healthy, &sick, &[]), [(HealthChanged, "False".into())]);
        assert_eq!(events_of(&sick, &healthy, &[]), [(HealthChanged, "True".into())]);
        assert_eq!(events_of(&[], &sick, &[]), [(HealthChanged, "False".into())], "first judged unhealthy");
        assert_eq!(events_of(&sick, &unknown, &[]), [], "not judged: nothing to tell");
        // recovered while out of reach: the last told status decides
        let receivers = [receiver("qa", &[HealthChanged, Drifted], NotificationFormat::Json)];
        let told = environment_due("uid", &receivers, &environment_events(&healthy, &sick, &[]), &[], t(5));
        assert_eq!(told.len(), 1);
        assert_eq!(events_of(&unknown, &healthy, &told), [(HealthChanged, "True".into())]);
        assert_eq!(events_of(&unknown, &sick, &told), [], "still unhealthy: told already");
        // drift: when it appears, not while it lasts nor when it goes
        let drifted = [cond("Drifted", "True", 7, "HEAD is 2222 instead of 1111")];
        let in_sync = [cond("Drifted", "False", 8, "the host runs the recorded release")];
        assert_eq!(events_of(&in_sync, &drifted, &[]), [(Drifted, "True".into())]);
        assert_eq!(events_of(&drifted, &drifted, &[]), []);
        assert_eq!(events_of(&drifted, &in_sync, &[]), []);
        // the same drift again after the host was out of reach: told once
        let receivers = [receiver("qa", &[Drifted], NotificationFormat::Json)];
        let told = environment_due("uid", &receivers, &environment_events(&in_sync, &drifted, &[]), &[], t(7));
        let out_of_reach = [cond("Drifted", "Unknown", 9, "the host was not reached")];
        let again = [cond("Drifted", "True", 11, "HEAD is 2222 instead of 1111")];
        assert_eq!(events_of(&out_of_reach, &again, &told), []);
        let other = [cond("Drifted", "True", 11, "HEAD is 3333 instead of 1111")];
        assert_eq!(events_of(&out_of_reach, &other, &told), [(Drifted, "True".into())], "a new drift is news");
    }

    #[test]
    fn environment_events_go_to_the_receivers_that_want_them_once_and_the_outbox_stays_small() {
        let receivers = [
            receiver("ops", &[HealthChanged], NotificationFormat::Json),
            receiver("chat", &[Drifted, HealthChanged], NotificationFormat::Slack),
            receiver("qa", &[Succeeded], NotificationFormat::Json),
        ];
        let sick = [cond("Healthy", "False", 5, "container p-web-1 is exited")];
        let events = environment_events(&[], &sick, &[]);
        let due = environment_due("uid", &receivers, &events, &[], t(6));
        let to: Vec<&str> = due.iter().map(|r| r.receiver.as_str()).collect();
        assert_eq!(to, ["ops", "chat"]);
        assert_eq!(due[0].event_id, format!("uid/HealthChanged/{}", t(5)));
        assert_eq!(
            (due[0].status.as_deref(), due[0].message.as_deref()),
            (Some("False"), Some("container p-web-1 is exited"))
        );
        // the same transition again (a reconcile repeated after a failed write): nothing new
        assert!(environment_due("uid", &receivers, &events, &due, t(7)).is_empty());
        // settled entries beyond the limit go, oldest first; pending ones stay
        let mut settled = due[0].clone();
        settled.state = DeliveryState::Delivered;
        let many: Vec<NotificationRecord> =
            (0..30).map(|i| NotificationRecord { event_id: format!("e{i}"), ..settled.clone() }).collect();
        let kept = environment_outbox(many, due.clone());
        assert_eq!(kept.len(), ENVIRONMENT_OUTBOX_KEPT + 2);
        assert_eq!(kept[0].event_id, "e10");
        assert!(kept.iter().filter(|r| r.state == DeliveryState::Pending).count() == 2);
    }

    #[test]
    fn an_environment_event_body_says_what_changed_and_escapes_for_slack() {
        let env: slipway_crds::Environment = serde_json::from_value(json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team", "uid": "uid"},
            "spec": {"host": {"address": "10.0.0.5", "path": "/srv/shop"},
                     "sshKeySecretRef": {"name": "s", "key": "id"}, "knownHostsSecretRef": {"name": "s", "key": "k"}},
            "status": {"current": {"ref": "v1.2.3", "commit": "4f1c2ab0123456789abcdef0123456789abcdef0"}}
        }))
        .unwrap();
        let receivers = [receiver("chat", &[HealthChanged], NotificationFormat::Slack)];
        let sick = [cond("Healthy", "False", 5, "container <p-web-1> is exited")];
        let due = environment_due("uid", &receivers, &environment_events(&[], &sick, &[]), &[], t(6));
        let json: Value = serde_json::from_slice(&environment_body(NotificationFormat::Json, &env, &due[0])).unwrap();
        assert_eq!(json["kind"], "Environment");
        assert_eq!(json["event"], "HealthChanged");
        assert_eq!(json["status"], "False");
        assert_eq!(json["release"]["ref"], "v1.2.3");
        let slack: Value = serde_json::from_slice(&environment_body(NotificationFormat::Slack, &env, &due[0])).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(
            text.starts_with(":warning: Environment team/*staging* is unhealthy (runs v1.2.3, commit 4f1c2ab01234)"),
            "{text}"
        );
        assert!(text.contains("container &lt;p-web-1&gt; is exited"), "{text}");
    }
}
