//! State shared by the three controllers.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::metrics::Metrics;
use crate::remote::{ConnectOptions, ConnectionPool};

/// Field manager for every status write; one owner for Slipway's status fields.
pub const FIELD_MANAGER: &str = "slipway-controller";
/// Bound on one status write, so a slow API server cannot wedge a reconcile.
pub const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    pub recorder: Recorder,
    /// One SSH master per Environment, reused by every command sent to its host.
    pub hosts: ConnectionPool,
    /// Set once the API server answers and RBAC lets the controllers list their resources.
    pub ready: AtomicBool,
}

impl Context {
    pub fn new(client: Client) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::default(),
            hosts: ConnectionPool::new(ConnectOptions::default()),
            ready: AtomicBool::new(false),
        }
    }

    /// Records a Kubernetes Event; a failure to record is logged, never fatal.
    pub async fn event(&self, regarding: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let event =
            Event { type_, reason: reason.into(), note: Some(note), action: "Reconcile".into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }
}
