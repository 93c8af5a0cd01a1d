//! State shared by the three controllers.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::events::{Event, EventType, Recorder, Reporter};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::remote::{ConnectOptions, ConnectionPool};

/// Field manager of the status of DeployRequests and Rollbacks.
pub const FIELD_MANAGER: &str = "slipway-controller";
/// Field manager of an Environment's own conditions (reachability, health), written by its reconcile.
pub const ENVIRONMENT_MANAGER: &str = "slipway-environment";
/// Field manager of what the deploy path owns in an Environment's status: the lock holder, the
/// queue, `current` and `history` (compare-and-swap updates, never a blind apply).
pub const DEPLOY_MANAGER: &str = "slipway-deploy";
/// Reconciles of Environments being deleted that run at once (each may wait for a running
/// step to end, reconnecting to the host meanwhile).
pub const DELETION_CONCURRENCY: usize = 16;
/// Bound on one status write, so a slow API server cannot wedge a reconcile.
pub const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// One SSH master per Environment, reused by every command sent to its host.
    pub hosts: ConnectionPool,
    /// Consecutive failures per object, for exponential retry delays.
    pub backoff: Backoff,
    /// Set once the API server answers and RBAC lets the controllers list their resources.
    pub ready: AtomicBool,
    /// Per Environment: deploy steps against its deletion.
    pub gates: EnvironmentGates,
    /// Per Environment: when its monitor last ran a round.
    pub monitor: crate::environment::monitor::Rounds,
    /// Per Environment: the compose model its monitor last read, and what it was read from.
    pub configs: crate::environment::config_cache::ConfigCache,
    /// Per Environment: the last look-up of its `spec.revision`.
    pub revisions: crate::environment::revision::Lookups,
    /// The controller's own user name as the API server knows it (a SelfSubjectReview at
    /// startup, or `SLIPWAY_USER`): the requester of the DeployRequests it makes itself.
    pub identity: std::sync::OnceLock<String>,
    /// The HTTP client notifications go out with.
    pub notifier: crate::notify::Sender,
    /// The objects this instance reconciles (`--watch-label-selector`).
    pub shard: crate::shard::Shard,
    /// `http.url` checks: the allow-list (`--http-url-allow`) and the client that fetches them.
    pub urls: crate::url_check::UrlChecker,
    /// Environment reconciles doing their work (Secrets, host check, monitor round) at once
    /// (`--environment-concurrency`); the rest wait in the order they fell due.
    pub environment_slots: tokio::sync::Semaphore,
    /// Reconciles of Environments being deleted doing their work at once.
    pub deletion_slots: tokio::sync::Semaphore,
    /// Running host jobs of deploy steps, each watched until it ends (then its request is woken).
    pub job_watches: crate::deploy::watch::JobWatches,
}

/// The controller's own user name, once learned (see [`Context::learn_identity`]): pure
/// decisions that must tell its requests from a person's read it here.
static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn controller_identity() -> Option<&'static str> {
    IDENTITY.get().map(String::as_str)
}

#[cfg(test)]
pub fn set_controller_identity(name: &str) {
    let _ = IDENTITY.set(name.to_owned());
}

/// Between an Environment's deploy steps and its deletion, in this process: a reconcile that may
/// start a host job holds the gate's read side and gives up once the gate is closing; the
/// deletion closes it and takes the write side before it looks for running jobs, so no job can
/// start after it looked.
#[derive(Default)]
pub struct EnvironmentGates {
    gates: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<EnvironmentGate>>>,
}

#[derive(Default)]
pub struct EnvironmentGate {
    pub closing: AtomicBool,
    pub steps: tokio::sync::RwLock<()>,
}

impl EnvironmentGates {
    /// The gate of the Environment `key` (`crate::object_key`).
    pub fn get(&self, key: &str) -> std::sync::Arc<EnvironmentGate> {
        let mut gates = self.gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        gates.entry(key.to_owned()).or_default().clone()
    }

    /// Forgets the gate of an Environment that is gone.
    pub fn remove(&self, key: &str) {
        self.gates.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

impl Context {
    /// This instance reconciles only the objects `shard` owns.
    pub fn with_shard(self, shard: crate::shard::Shard) -> Self {
        Context { shard, ..self }
    }

    /// `http.url` checks may fetch only what `urls` allows.
    pub fn with_urls(self, urls: crate::url_check::UrlChecker) -> Self {
        Context { urls, ..self }
    }

    /// A reconcile that left its running host job to a watch looks itself after `fallback`.
    pub fn with_job_watch_fallback(mut self, fallback: Duration) -> Self {
        self.job_watches.fallback = fallback.max(Duration::from_secs(1));
        self
    }

    /// At most `slots` Environment reconciles do their work at once.
    pub fn with_environment_concurrency(self, slots: usize) -> Self {
        Context { environment_slots: tokio::sync::Semaphore::new(slots.max(1)), ..self }
    }

    pub fn new(client: Client) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::default(),
            hosts: ConnectionPool::new(ConnectOptions::default()),
            backoff: Backoff::default(),
            ready: AtomicBool::new(false),
            gates: EnvironmentGates::default(),
            monitor: Default::default(),
            configs: Default::default(),
            revisions: Default::default(),
            identity: std::sync::OnceLock::new(),
            notifier: crate::notify::Sender::new(),
            shard: crate::shard::Shard::default(),
            urls: crate::url_check::UrlChecker::default(),
            environment_slots: tokio::sync::Semaphore::new(usize::from(crate::RECONCILE_CONCURRENCY)),
            deletion_slots: tokio::sync::Semaphore::new(DELETION_CONCURRENCY),
            job_watches: Default::default(),
        }
    }

    /// Learns the controller's own user name: `SLIPWAY_USER`, else a SelfSubjectReview (what
    /// `kubectl auth whoami` asks). Without it the controller makes no DeployRequest itself.
    pub async fn learn_identity(&self) {
        let name = match std::env::var("SLIPWAY_USER").ok().filter(|u| !u.is_empty()) {
            Some(u) => Some(u),
            None => {
                use k8s_openapi::api::authentication::v1::SelfSubjectReview;
                let api: kube::Api<SelfSubjectReview> = kube::Api::all(self.client.clone());
                let review = SelfSubjectReview::default();
                match api.create(&kube::api::PostParams::default(), &review).await {
                    Ok(r) => r.status.and_then(|s| s.user_info).and_then(|u| u.username),
                    Err(e) => {
                        tracing::warn!(error = %e, "SelfSubjectReview failed: drift heals are disabled");
                        None
                    }
                }
            }
        };
        if let Some(name) = name {
            tracing::info!(user = %name, "the controller's own user name");
            let _ = IDENTITY.set(name.clone());
            let _ = self.identity.set(name);
        }
    }

    /// Records a Kubernetes Event; a failure to record is logged, never fatal. The note is cut
    /// to what the Events API accepts.
    pub async fn event(&self, regarding: &ObjectReference, type_: EventType, reason: &str, note: String) {
        self.event_for(regarding, type_, reason, "Reconcile", note).await;
    }

    /// [`Context::event`] with its own `action`. The recorder ([`crate::events`]) folds Events of one object with the
    /// same type, reason and action into one series and keeps only the first note: Events that
    /// must each be read (a failed delivery per receiver) need an action of their own.
    pub async fn event_for(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = event_note(&note);
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }
}

/// The Events API refuses a note longer than 1 kB.
pub const EVENT_NOTE_MAX_BYTES: usize = 1024;

/// `note` cut at a character boundary to at most [`EVENT_NOTE_MAX_BYTES`], marked with `…` when cut.
pub fn event_note(note: &str) -> String {
    if note.len() <= EVENT_NOTE_MAX_BYTES {
        return note.to_owned();
    }
    let mut cut = EVENT_NOTE_MAX_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &note[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_fit_the_events_api() {
        assert_eq!(event_note("short"), "short");
        let long = "é".repeat(2000);
        let cut = event_note(&long);
        assert!(cut.len() <= EVENT_NOTE_MAX_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        let exact = "a".repeat(EVENT_NOTE_MAX_BYTES);
        assert_eq!(event_note(&exact), exact);
    }
}
