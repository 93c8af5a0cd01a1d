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
    /// The Environment's stack passed its health checks (its monitor, between deploys).
    pub const HEALTHY: &str = "Healthy";
    /// What runs differs from the recorded release (`status.current`): commit, files, images, services.
    pub const DRIFTED: &str = "Drifted";
    /// One per deploy step: True once it succeeded (or was skipped), False when it failed,
    /// Unknown while it runs.
    pub const PREFLIGHT_PASSED: &str = "PreflightPassed";
    pub const MIGRATED: &str = "Migrated";
    pub const REBUILT: &str = "Rebuilt";
    pub const VERIFIED: &str = "Verified";
    /// A Rollback's database downgrade.
    pub const DOWNGRADED: &str = "Downgraded";
    /// A restart's `compose restart` of its services.
    pub const RESTARTED: &str = "Restarted";
    /// The bake period after verification (`health.bakeSeconds`) passed without a failure.
    pub const BAKED: &str = "Baked";
    /// The rollback rehearsal's steps (`policy.rehearseRollback`): back to the previous release,
    /// then forward again.
    pub const REHEARSAL_DOWNGRADED: &str = "RehearsalDowngraded";
    pub const REHEARSAL_REBUILT: &str = "RehearsalRebuilt";
    pub const REHEARSAL_VERIFIED: &str = "RehearsalVerified";
    pub const ROLL_FORWARD_MIGRATED: &str = "RollForwardMigrated";
    pub const ROLL_FORWARD_REBUILT: &str = "RollForwardRebuilt";
    pub const ROLL_FORWARD_VERIFIED: &str = "RollForwardVerified";
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

    // The deploy path: gates (checked before a request joins the queue).
    pub const ISSUE_REQUIRED: &str = "IssueRequired";
    pub const DIRECT_NOT_ALLOWED: &str = "DirectNotAllowed";
    pub const APPROVAL_REQUIRED: &str = "ApprovalRequired";
    pub const NOT_PROMOTED: &str = "NotPromoted";
    /// `policy.requireRollbackTested`: no `policy.promoteFrom` Environment rehearsed the
    /// commit's rollback (`rollbackTested`).
    pub const ROLLBACK_NOT_TESTED: &str = "RollbackNotTested";
    /// Outside the Environment's deploy windows, or during a freeze: the request waits (`Queued`).
    pub const OUTSIDE_DEPLOY_WINDOW: &str = "OutsideDeployWindow";
    /// The commit failed on this Environment and was rolled back (`spec.overrideQuarantine`).
    pub const QUARANTINED: &str = "Quarantined";
    /// A Rollback's target is not in the Environment's history.
    pub const RELEASE_NOT_IN_HISTORY: &str = "ReleaseNotInHistory";
    /// A Rollback would need a database downgrade it cannot do (`spec.migrations: Skip`).
    pub const NO_DOWNGRADE_PATH: &str = "NoDowngradePath";
    // Steps in progress.
    pub const PREFLIGHT: &str = "Preflight";
    pub const MIGRATING: &str = "Migrating";
    pub const DOWNGRADING: &str = "Downgrading";
    /// A failed DeployRequest waits for the Rollback that undoes it.
    pub const ROLLING_BACK: &str = "RollingBack";
    pub const REBUILDING: &str = "Rebuilding";
    pub const RESTARTING: &str = "Restarting";
    pub const VERIFYING: &str = "Verifying";
    /// Verified; the checks keep running until `status.bakeUntil` (`health.bakeSeconds`).
    pub const BAKING: &str = "Baking";
    /// The verified release is rolled back and forward again (`policy.rehearseRollback`).
    pub const REHEARSING: &str = "Rehearsing";
    pub const HOST_BUSY: &str = "HostBusy";
    // Preflight refusals (nothing on the host changed).
    pub const DIRTY_CHECKOUT: &str = "DirtyCheckout";
    pub const REVISION_NOT_FOUND: &str = "RevisionNotFound";
    pub const ENV_KEYS_MISSING: &str = "EnvKeysMissing";
    pub const COMPOSE_INVALID: &str = "ComposeInvalid";
    pub const MISSING_HEALTHCHECK: &str = "MissingHealthcheck";
    // The playbook's gates (Preflight refusals, waivable by `policy.waive`).
    /// A literal value for a secret-looking key in a service's `environment` or `build.args`.
    pub const SECRET_IN_COMPOSE: &str = "SecretInCompose";
    /// `.env` is tracked in git at the requested commit.
    pub const ENV_FILE_COMMITTED: &str = "EnvFileCommitted";
    /// No `.env.example` while compose uses `${VAR}`s, or a `${VAR}` without default not in it.
    pub const ENV_EXAMPLE_MISSING: &str = "EnvExampleMissing";
    /// Production: a long-running service bind-mounts a path of the checkout.
    pub const CODE_VOLUME_IN_PRODUCTION: &str = "CodeVolumeInProduction";
    /// Production: the release adds migrations and no downgrade command is declared.
    pub const NO_ROLLBACK_PLAN: &str = "NoRollbackPlan";
    // Step failures.
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const DOWNGRADE_FAILED: &str = "DowngradeFailed";
    pub const REBUILD_FAILED: &str = "RebuildFailed";
    pub const VERIFICATION_FAILED: &str = "VerificationFailed";
    /// A check failed during the bake period after verification (`health.bakeSeconds`).
    pub const BAKE_FAILED: &str = "BakeFailed";
    /// An `http.url` check names a URL the controller's allow-list (`--http-url-allow`) lacks.
    pub const URL_NOT_ALLOWED: &str = "UrlNotAllowed";
    /// A restart's `compose restart` failed.
    pub const RESTART_FAILED: &str = "RestartFailed";
    /// A step of the rollback rehearsal failed; the message names it and what the host runs.
    pub const REHEARSAL_FAILED: &str = "RehearsalFailed";
    /// A restart names a service the running release's compose files do not have.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    /// A service's log since its container started holds lines matching `health.logErrorPatterns`.
    pub const LOG_ERRORS_FOUND: &str = "LogErrorsFound";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const INTERRUPTED: &str = "Interrupted";
    // Step conditions.
    pub const STEP_RUNNING: &str = "Running";
    pub const STEP_FAILED: &str = "Failed";
    pub const STEP_SKIPPED: &str = "Skipped";
    /// The Environment was deleted while the request waited or ran.
    pub const ENVIRONMENT_DELETED: &str = "EnvironmentDeleted";
    // Events of an Environment's deletion (its finalizer).
    /// The lock holder's host job ended while the deletion waited for it.
    pub const HOST_JOB_ENDED: &str = "HostJobEnded";
    /// The lock holder's host job still ran when the deletion's wait ended: it was terminated.
    pub const HOST_JOB_TERMINATED: &str = "HostJobTerminated";
    /// The host could not be asked about the lock holder's host job; the deletion went ahead.
    pub const HOST_JOB_NOT_CHECKED: &str = "HostJobNotChecked";
    // Events of notifications.
    /// A notification could not be delivered to a receiver (retried, or given up: the note says which).
    pub const NOTIFICATION_FAILED: &str = "NotificationFailed";
    // Outcomes.
    pub const SUCCEEDED: &str = "Succeeded";
    pub const UP_TO_DATE: &str = "UpToDate";
    /// A DeployRequest that failed and was rolled back: it never reports success.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// The automatic rollback of a failed DeployRequest failed too: a person is needed.
    pub const ROLLBACK_FAILED: &str = "RollbackFailed";
    pub const QUEUED: &str = "Queued";
    pub const NOT_CHECKED: &str = "NotChecked";
    pub const REACHABLE: &str = "Reachable";
    // The Environment's monitor (condition Healthy).
    /// Every long-running service runs (healthy where it has a healthcheck) and every declared check passed.
    pub const HEALTHY: &str = "Healthy";
    /// A container or a declared check failed; the message quotes it.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// No release recorded (`status.current`): nothing to judge.
    pub const NOTHING_DEPLOYED: &str = "NothingDeployed";
    /// A deploy holds the lock: its own verification judges; the last value is kept.
    pub const DEPLOY_IN_PROGRESS: &str = "DeployInProgress";
    // Condition Drifted.
    /// What runs differs from the recorded release; the message lists each difference.
    pub const DRIFTED: &str = "Drifted";
    /// What runs is the recorded release.
    pub const IN_SYNC: &str = "InSync";
    /// Drifted with `drift: Heal`: an owned DeployRequest redeploys the recorded release.
    pub const HEALING: &str = "Healing";
}
