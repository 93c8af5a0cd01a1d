//! A finished request's outbox (`status.notifications`): each pending notification whose time
//! has come is sent, all at once, and every attempt recorded in one status write. A request
//! reconciled while some are pending is requeued until the next is due.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use slipway_crds::Environment;
use slipway_crds::conditions::reasons;

use k8s_openapi::api::core::v1::ObjectReference;
use slipway_crds::{NotificationFormat, NotificationRecord, Receiver};

use crate::context::Context;
use crate::error::Result;
use crate::notify::{self, Attempt, Settled};
use crate::secrets::SecretReader;

use super::Run;

/// Delivers what is due of a finished request's outbox; never touches the deploy path.
pub(super) async fn deliver(run: &Run<'_>, env: Option<&Environment>) -> Result<Action> {
    if notify::wait(&run.old.notifications, Timestamp::now()).is_none() {
        return Ok(Action::await_change());
    }
    // A finished request is reconciled from the watch cache, which may not show the last
    // attempt recorded yet: decide from the object as it is, so nothing delivered goes twice.
    let Some(req) = run.req.fresh(&run.ctx.client).await? else { return Ok(Action::await_change()) };
    let old = req.status().cloned().unwrap_or_default();
    let now = Timestamp::now();
    match notify::wait(&old.notifications, now) {
        None => return Ok(Action::await_change()),
        Some(wait) if !wait.is_zero() => return Ok(Action::requeue(wait)),
        Some(_) => {}
    }
    let receivers = env.map(|e| e.spec.notifications.as_slice()).unwrap_or_default();
    let mut secrets = SecretReader::new(run.ctx.client.clone(), &req.namespace());
    let attempts = attempt_due(run.ctx, &mut secrets, receivers, &old.notifications, now, |format, record| {
        notify::body(format, &req, &old, record)
    })
    .await?;
    let mut st = old.clone();
    settle_all(run.ctx, &req.object_ref(), req.kind(), &req.name(), &mut st.notifications, &attempts).await;
    let fresh = Run { ctx: run.ctx, req: &req, envs: run.envs, old: &old, receivers: run.receivers };
    fresh.write(st.clone(), EventType::Normal).await?;
    Ok(match notify::wait(&st.notifications, Timestamp::now()) {
        None => Action::await_change(),
        Some(wait) => Action::requeue(wait.max(Duration::from_secs(1))),
    })
}

/// Sends each entry of `records` that is due at `now` to its receiver, all at once; returns the
/// attempts made (entry index, attempt). A receiver no longer listed, or a URL Slipway refuses,
/// settles the entry without sending.
pub(crate) async fn attempt_due(
    ctx: &Context,
    secrets: &mut SecretReader,
    receivers: &[Receiver],
    records: &[NotificationRecord],
    now: Timestamp,
    body: impl Fn(NotificationFormat, &NotificationRecord) -> Vec<u8>,
) -> Result<Vec<(usize, Attempt)>> {
    let mut attempts: Vec<(usize, Attempt)> = Vec::new();
    let mut sends = Vec::new();
    for (i, record) in records.iter().enumerate() {
        if notify::next_attempt(record).is_none_or(|at| at > now) {
            continue;
        }
        let Some(receiver) = receivers.iter().find(|r| r.name == record.receiver) else {
            let why =
                format!("receiver {:?} is no longer listed in the Environment's spec.notifications", record.receiver);
            attempts.push((i, Attempt::Refused(why)));
            continue;
        };
        let url = match notify::receiver_url(secrets, receiver).await? {
            Ok(url) => url,
            // The Secret may be fixed within the retry window.
            Err(problem) => {
                attempts.push((i, Attempt::Failed(problem.message)));
                continue;
            }
        };
        let url = match notify::check_url(&url, receiver) {
            Ok(url) => url,
            Err(why) => {
                attempts.push((i, Attempt::Refused(why)));
                continue;
            }
        };
        let body = body(receiver.format, record);
        let (sender, event_id) = (ctx.notifier.clone(), record.event_id.clone());
        sends.push(async move { (i, sender.send(url, &event_id, body).await) });
    }
    // One receiver that hangs delays the record of the others by its timeout, never their delivery.
    attempts.extend(futures::future::join_all(sends).await);
    Ok(attempts)
}

/// Records `attempts` in `records` (at the time they ended), each with a metric and a log line,
/// and a Warning Event on `regarding` for each failure: one action per receiver, so that the
/// recorder does not fold one receiver's failure into another's.
pub(crate) async fn settle_all(
    ctx: &Context,
    regarding: &ObjectReference,
    kind: &str,
    name: &str,
    records: &mut [NotificationRecord],
    attempts: &[(usize, Attempt)],
) {
    let now = Timestamp::now();
    for (i, attempt) in attempts {
        let record = &mut records[*i];
        let settled = notify::settle(record, attempt, now);
        let (receiver, event, id, n) = (&record.receiver, record.event, &record.event_id, record.attempts);
        let error = record.last_error.clone().unwrap_or_default();
        let note = match &settled {
            Settled::Delivered => {
                ctx.metrics.notification("delivered");
                tracing::info!(kind, name, receiver, event_id = %id, attempts = n, "notification delivered");
                continue;
            }
            Settled::RetryIn(delay) => {
                ctx.metrics.notification("failed");
                format!(
                    "could not notify receiver {receiver} of {event} (event {id}, attempt {n}): {error}; retrying in {} s",
                    delay.as_secs()
                )
            }
            Settled::GaveUp => {
                ctx.metrics.notification("gave_up");
                format!("gave up notifying receiver {receiver} of {event} (event {id}) after {n} attempt(s): {error}")
            }
        };
        tracing::warn!(kind, name, receiver, event_id = %id, attempts = n, error = %error, "notification not delivered");
        let action: String = format!("Notify {receiver}").chars().take(128).collect();
        ctx.event_for(regarding, EventType::Warning, reasons::NOTIFICATION_FAILED, &action, note).await;
    }
}
