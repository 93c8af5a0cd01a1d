//! `DeployRequest`: "put revision X on environment E", a record of what was asked.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::annotations;
use crate::common::{Revision, conditions_schema};
use crate::notifications::NotificationRecord;
use crate::patterns::{ENVIRONMENT_NAME, ISSUE, RESTART_MAX_ITEMS, SERVICE_NAME};

/// A request to put one git revision on one Environment. Its spec cannot change once created.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "DeployRequest",
    plural = "deployrequests",
    shortname = "dr",
    category = "slipway",
    namespaced,
    status = "DeployRequestStatus",
    doc = "A request to put one git revision on one Environment, moved through preflight, migration, rebuild and verification. The annotation slipway.dev/requested-by (required) must be the creating user's name; slipway.dev/approved-by is admitted only from a user allowed the approve verb on deployrequests, naming that user.",
    printcolumn(name = "Environment", type_ = "string", json_path = ".spec.environment"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf")
    .message("DeployRequest spec is immutable: it records what was asked; create a new DeployRequest instead"))]
#[x_kube(validation = kube::core::Rule::new("[has(self.revision), has(self.restart)].filter(x, x).size() == 1")
    .message("a DeployRequest sets exactly one of revision (a deploy) or restart (services to restart)"))]
#[serde(rename_all = "camelCase")]
pub struct DeployRequestSpec {
    /// Name of the Environment (same namespace) to deploy to.
    #[schemars(length(min = ENVIRONMENT_NAME.min_len, max = ENVIRONMENT_NAME.max_len))]
    #[x_kube(validation = ENVIRONMENT_NAME.rule("environment"))]
    pub environment: String,
    /// The git revision to deploy: exactly one of branch, tag or commit. Exactly one of
    /// `revision` and `restart` is set.
    #[serde(default, skip_serializing_if = "Revision::is_empty")]
    pub revision: Revision,
    /// Instead of a revision: compose services to restart (`compose restart`), such as
    /// `[backend]`. Goes through the queue, the lock and the gates like a deploy, restarts only
    /// these services of the release that runs, verifies, and is recorded in the history; it is
    /// never `UpToDate`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = RESTART_MAX_ITEMS),
        inner(length(min = SERVICE_NAME.min_len, max = SERVICE_NAME.max_len)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = SERVICE_NAME.each_rule("restart"))]
    pub restart: Vec<String>,
    /// The issue this deploy resolves, such as `#45` or `SHOP-45`. Required where the
    /// Environment's policy says `requireIssue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = ISSUE.min_len, max = ISSUE.max_len))]
    #[x_kube(validation = ISSUE.rule("issue"))]
    pub issue: Option<String>,
    /// `Change` (default) follows every gate; `Direct` is an emergency override allowed only
    /// where the Environment's policy says `allowDirect`, and is recorded as untracked.
    #[serde(default)]
    pub mode: DeployMode,
    /// Deploy even when the Environment already runs this commit with the same `.env` and
    /// compose configuration (otherwise such a request ends `UpToDate` without touching the host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Deploy a commit the Environment quarantined (it failed there and was rolled back):
    /// without it such a request is refused `Quarantined`, so a GitOps repository still naming a
    /// bad tag does not redeploy it in a loop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub override_quarantine: bool,
}

/// Who asked and who approved are annotations, admitted by the API server only from the user it
/// authenticated (see [`crate::annotations`]).
impl DeployRequest {
    /// A restart of services (`spec.restart`) rather than a deploy of a revision.
    pub fn is_restart(&self) -> bool {
        !self.spec.restart.is_empty()
    }

    /// What it asks for, as people write it: `tag v1.2.3`, `restart of backend, worker`.
    pub fn describe(&self) -> String {
        if self.is_restart() {
            format!("restart of {}", self.spec.restart.join(", "))
        } else {
            self.spec.revision.display()
        }
    }

    /// The user who created it (annotation `slipway.dev/requested-by`).
    pub fn requested_by(&self) -> Option<&str> {
        self.annotation(annotations::REQUESTED_BY)
    }

    /// The user who approved it (annotation `slipway.dev/approved-by`); an empty value is none.
    pub fn approved_by(&self) -> Option<&str> {
        self.annotation(annotations::APPROVED_BY)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.as_ref()?.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// How a deploy relates to the tracked change process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeployMode {
    /// A tracked change: every gate applies.
    #[default]
    Change,
    /// Emergency override: skips the issue gate where the Environment allows it.
    Direct,
}

/// Where a DeployRequest or Rollback is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    Queued,
    Preflight,
    Migrating,
    /// A Rollback's database downgrade.
    Downgrading,
    Rebuilding,
    /// A restart's `compose restart` of the named services.
    Restarting,
    Verifying,
    /// `policy.rehearseRollback`: the verified release is rolled back and forward again, each
    /// step recorded (`Rehearsal*`, `RollForward*`).
    Rehearsing,
    /// Verified (and rehearsed), then watched for `health.bakeSeconds` (until `status.bakeUntil`) before it succeeds.
    Baking,
    Succeeded,
    Failed,
    RollingBack,
    RolledBack,
}

impl Phase {
    /// Terminal phases never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::RolledBack)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "Queued",
            Phase::Preflight => "Preflight",
            Phase::Migrating => "Migrating",
            Phase::Downgrading => "Downgrading",
            Phase::Rebuilding => "Rebuilding",
            Phase::Restarting => "Restarting",
            Phase::Verifying => "Verifying",
            Phase::Rehearsing => "Rehearsing",
            Phase::Baking => "Baking",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a DeployRequest (and of a Rollback: `revision` is then its target, `commit`
/// the commit it returns to, `previousCommit` the one it leaves).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployRequestStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The requested revision as people write it, such as `tag v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Ready, Reconciling, Stalled, and one per step.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Full commit id the revision resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Commit the host ran before this deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_commit: Option<String>,
    /// Database migration revision before the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_before: Option<String>,
    /// Database migration revision after the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_after: Option<String>,
    /// Position in the Environment's queue while waiting for its lock (1 = next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<i32>,
    /// Steps run so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Step>,
    /// A `mode: Direct` deploy: outside the tracked change process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// sha256 of the `.env` rendered for this deploy (never the values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_hash: Option<String>,
    /// A Rollback: the database migration revision it downgrades to (recorded with its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_target: Option<String>,
    /// A DeployRequest rolled back automatically: the name of the Rollback (same namespace) that
    /// undid it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The outbox of notifications: one entry per receiver and event, recorded when the request
    /// finished and updated after each delivery attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationRecord>,
    /// Playbook gates that found something at Preflight and were waived by the Environment's
    /// `policy.waive` (recorded in the release).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<String>,
    /// While `Baking` (and after): when the bake period ends (RFC 3339). Set once, when
    /// verification passed; a restarted controller continues to this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<String>,
    /// While `Baking`: when the last round passed (RFC 3339). Where rounds stopped for longer than
    /// two intervals (the controller down, the host unreachable), `bakeUntil` moves later by the
    /// time nothing was watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_checked_at: Option<String>,
}

/// One step of a deploy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    /// Step name, such as `Preflight` or `Migrating`.
    pub name: String,
    /// When the step started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the step finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Outcome, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<StepResult>,
    /// What happened, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last lines of the step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
}

/// Outcome of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StepResult {
    Succeeded,
    Failed,
    Skipped,
}
