//! Types shared by the three resources, and the schema pieces that keep bad input out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::patterns::{COMMIT, REF_NAME};

/// A key inside a Secret in the same namespace as the object that names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A whole Secret in the same namespace as the object that names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The git revision to deploy: exactly one of `branch`, `tag` or `commit`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.branch), has(self.tag), has(self.commit)].filter(x, x).size() == 1"
).message("revision must set exactly one of branch, tag or commit"))]
pub struct Revision {
    /// A branch of the Environment's repository; its tip is resolved to a commit at preflight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = REF_NAME.rule("branch"))]
    #[x_kube(validation = REF_NAME.forbidden_rule("branch"))]
    #[schemars(length(min = REF_NAME.min_len, max = REF_NAME.max_len))]
    pub branch: Option<String>,
    /// A tag of the Environment's repository, such as `v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = REF_NAME.rule("tag"))]
    #[x_kube(validation = REF_NAME.forbidden_rule("tag"))]
    #[schemars(length(min = REF_NAME.min_len, max = REF_NAME.max_len))]
    pub tag: Option<String>,
    /// A commit id: 7 to 64 hexadecimal characters, abbreviated or full (SHA-1 or SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = COMMIT.rule("commit"))]
    #[schemars(length(min = COMMIT.min_len, max = COMMIT.max_len))]
    pub commit: Option<String>,
}

impl Revision {
    /// None of branch, tag or commit (a DeployRequest that restarts services).
    pub fn is_empty(&self) -> bool {
        self.branch.is_none() && self.tag.is_none() && self.commit.is_none()
    }

    /// The revision as people write it: `tag v1.2.3`, `branch main`, `commit 4f1c2ab`.
    pub fn display(&self) -> String {
        match (&self.branch, &self.tag, &self.commit) {
            (Some(b), None, None) => format!("branch {b}"),
            (None, Some(t), None) => format!("tag {t}"),
            (None, None, Some(c)) => format!("commit {c}"),
            _ => "invalid revision".to_string(),
        }
    }

    /// The one ref that was asked for, whichever kind it is.
    pub fn name(&self) -> Option<&str> {
        self.branch.as_deref().or(self.tag.as_deref()).or(self.commit.as_deref())
    }
}

/// Schema for a `conditions` list: Kubernetes `Condition`s merged by `type`.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator.subschema_for::<Condition>();
    json_schema!({
        "type": "array",
        "description": "Latest observations of the object's state, one per condition type.",
        "items": item,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    })
}
