//! Condition types and reasons, named once. Controllers and tests use these, never literals.

/// Condition types.
pub mod types {
    /// The object did what it asked for (deploy succeeded, environment serving, rollback done).
    pub const READY: &str = "Ready";
    /// kstatus: the controller is still working towards the desired state.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: progress stopped and needs a person (bad reference, failed step).
    pub const STALLED: &str = "Stalled";
    /// The Environment's host answered over SSH with its pinned host key.
    pub const REACHABLE: &str = "Reachable";
    /// The Environment's stack passed its health checks.
    pub const HEALTHY: &str = "Healthy";
}

/// CamelCase reasons.
pub mod reasons {
    pub const ENVIRONMENT_NOT_FOUND: &str = "EnvironmentNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    /// The Secret lacks the `slipway.dev/secret: "true"` label.
    pub const SECRET_NOT_OPTED_IN: &str = "SecretNotOptedIn";
    /// Slipway's ServiceAccount may not read Secrets in the namespace (HTTP 403).
    pub const SECRET_FORBIDDEN: &str = "SecretForbidden";
    /// A spec value the schema should have refused (an object written before a schema change).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const QUEUED: &str = "Queued";
    pub const NOT_CHECKED: &str = "NotChecked";
    pub const REACHABLE: &str = "Reachable";
}
