//! Notifications: where an Environment's outcomes are sent (`spec.notifications`), and what a
//! DeployRequest or Rollback has sent (`status.notifications`, its outbox).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;
use crate::patterns::RECEIVER_NAME;

/// Most receivers one Environment may list.
pub const RECEIVERS_MAX_ITEMS: usize = 10;

/// One place an Environment's outcomes are sent to: an HTTP(S) URL kept in a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receiver {
    /// Name shown in status and events (never the URL), such as `qa-slack`.
    #[schemars(length(min = RECEIVER_NAME.min_len, max = RECEIVER_NAME.max_len))]
    #[x_kube(validation = RECEIVER_NAME.rule("name"))]
    pub name: String,
    /// Secret key holding the URL (`https://` or `http://`) to POST to. The Secret must carry the
    /// label `slipway.dev/secret: "true"`; the URL is treated as a secret and never shown.
    pub url_secret_ref: SecretKeyRef,
    /// `Json` (default): Slipway's documented payload; `Slack`: a Slack-compatible incoming-webhook
    /// message (`{"text": ...}`).
    #[serde(default)]
    pub format: NotificationFormat,
    /// The events this receiver wants: outcomes of DeployRequests and Rollbacks, and the
    /// Environment's own `HealthChanged` and `Drifted`.
    #[schemars(length(min = 1, max = 6), extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<NotificationEvent>,
}

/// The body a receiver gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NotificationFormat {
    /// `application/json`: eventId, event, time, kind, name, namespace, environment, phase,
    /// reason, message, release, issue, requestedBy (see the README).
    #[default]
    Json,
    /// A Slack incoming webhook (or anything that reads its `{"text": ...}` shape).
    Slack,
}

/// What a receiver may be told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NotificationEvent {
    /// A DeployRequest or Rollback succeeded (`UpToDate` included: its reason says so).
    Succeeded,
    /// A DeployRequest or Rollback failed (refused by a gate or preflight, or a step failed).
    Failed,
    /// A DeployRequest failed and was rolled back automatically.
    RolledBack,
    /// A DeployRequest's commit was quarantined on the Environment (it was rolled back).
    Quarantined,
    /// The Environment's health changed (condition `Healthy` turned False, or True again after
    /// False), judged by its monitor between deploys.
    HealthChanged,
    /// The host no longer runs what the Environment recorded (condition `Drifted` turned True).
    Drifted,
}

impl NotificationEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationEvent::Succeeded => "Succeeded",
            NotificationEvent::Failed => "Failed",
            NotificationEvent::RolledBack => "RolledBack",
            NotificationEvent::Quarantined => "Quarantined",
            NotificationEvent::HealthChanged => "HealthChanged",
            NotificationEvent::Drifted => "Drifted",
        }
    }
}

impl std::fmt::Display for NotificationEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one notification stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryState {
    /// Not delivered yet; retried with backoff.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Given up: refused (not an http(s) URL) or not delivered within the retry window.
    Failed,
}

/// One notification of a finished DeployRequest or Rollback to one receiver: the outbox entry,
/// written before it is sent and updated after each attempt, so that a restarted controller
/// neither loses nor re-sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRecord {
    /// The receiver's name (`spec.notifications[].name` of the Environment).
    pub receiver: String,
    /// What happened.
    pub event: NotificationEvent,
    /// Stable id of the event (`<uid>/<event>`), sent in the payload on every attempt so a
    /// receiver can drop repeats.
    pub event_id: String,
    /// When the event happened (RFC 3339); the payload's `time`, and the start of the retry window.
    pub time: String,
    pub state: DeliveryState,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: i32,
    /// When the last attempt was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<String>,
    /// Why the last attempt failed (never the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// An Environment's event: the condition's status and message when it happened (the
    /// payload's `status` and `message`, the same on every attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl NotificationRecord {
    /// A delivery not attempted yet of `event` (id `event_id`, at `time`) to `receiver`.
    pub fn pending(receiver: &str, event: NotificationEvent, event_id: String, time: String) -> NotificationRecord {
        NotificationRecord {
            receiver: receiver.to_owned(),
            event,
            event_id,
            time,
            state: DeliveryState::Pending,
            attempts: 0,
            last_attempt: None,
            last_error: None,
            status: None,
            message: None,
        }
    }
}
