//! The controller's one error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("status write for {kind} {name} timed out")]
    StatusTimeout { kind: String, name: String },

    /// A status body could not be serialized (a bug, not an input problem).
    #[error("could not serialize a status: {0}")]
    Serialize(String),

    /// A reconcile panicked; the controller keeps running and retries the object with backoff.
    #[error("reconcile of {kind} {name} panicked: {detail}")]
    Panic { kind: String, name: String, detail: String },
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// Short, bounded label for the `slipway_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::StatusTimeout { .. } => "status_timeout",
            Error::Panic { .. } => "panic",
            Error::Serialize(_) => "serialize",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
