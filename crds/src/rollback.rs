//! `Rollback`: put an Environment back on an earlier good release, database included.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::patterns::{COMMIT, ENVIRONMENT_NAME, REASON, REF_NAME};

/// A request to put an Environment back on its previous (or a named) release.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "Rollback",
    plural = "rollbacks",
    shortname = "rb",
    category = "slipway",
    namespaced,
    status = "RollbackStatus",
    doc = "A request to put an Environment back on an earlier release, downgrading its database first.",
    printcolumn(name = "Environment", type_ = "string", json_path = ".spec.environment"),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.revision"),
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
    .message("Rollback spec is immutable: it records what was asked; create a new Rollback instead"))]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Name of the Environment (same namespace) to roll back.
    #[schemars(length(min = ENVIRONMENT_NAME.min_len, max = ENVIRONMENT_NAME.max_len))]
    #[x_kube(validation = ENVIRONMENT_NAME.rule("environment"))]
    pub environment: String,
    /// The release to return to: exactly one of previous, tag or release.
    pub to: RollbackTarget,
    /// Why, for the record: one line of text (shown in events and in the Environment's history).
    #[schemars(length(min = REASON.min_len, max = REASON.max_len))]
    #[x_kube(validation = REASON.rule("reason"))]
    pub reason: String,
    /// `Downgrade` (default): the database is downgraded first to the migration revision
    /// recorded with the target, with the code running now; refused with `NoDowngradePath` when
    /// that cannot be done. `Skip`: the database is left as it is (the target's code must cope).
    #[serde(default)]
    pub migrations: RollbackMigrations,
}

impl Rollback {
    /// The user who created it (annotation `slipway.dev/requested-by`, admitted by the API server
    /// only from that user; an automatic rollback carries its DeployRequest's requester).
    pub fn requested_by(&self) -> Option<&str> {
        let annotations = self.metadata.annotations.as_ref()?;
        annotations.get(crate::annotations::REQUESTED_BY).map(String::as_str).filter(|v| !v.is_empty())
    }
}

/// What a Rollback does with the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RollbackMigrations {
    #[default]
    Downgrade,
    Skip,
}

/// The release to return to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.previous) && self.previous, has(self.tag), has(self.release)].filter(x, x).size() == 1"
).message("to must set exactly one of previous: true, tag or release"))]
pub struct RollbackTarget {
    /// Return to the release before the current one in the Environment's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<bool>,
    /// Return to the release made from this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = REF_NAME.min_len, max = REF_NAME.max_len))]
    #[x_kube(validation = REF_NAME.rule("tag"))]
    #[x_kube(validation = REF_NAME.forbidden_rule("tag"))]
    pub tag: Option<String>,
    /// Return to the release with this commit id (7 to 64 hexadecimal characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = COMMIT.rule("release"))]
    #[schemars(length(min = COMMIT.min_len, max = COMMIT.max_len))]
    pub release: Option<String>,
}

/// Observed state of a Rollback: the same shape as a DeployRequest's (`revision` is the target as
/// people write it, `commit` the commit it returns to, `previousCommit` the commit it leaves).
pub type RollbackStatus = crate::deploy_request::DeployRequestStatus;
