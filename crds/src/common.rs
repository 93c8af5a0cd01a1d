//! Types shared by the three resources, and the schema pieces that keep bad input out.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

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
    #[x_kube(validation = ref_name_rule("branch"))]
    #[x_kube(validation = ref_dots_rule("branch"))]
    #[schemars(length(min = 1, max = 200))]
    pub branch: Option<String>,
    /// A tag of the Environment's repository, such as `v1.2.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = ref_name_rule("tag"))]
    #[x_kube(validation = ref_dots_rule("tag"))]
    #[schemars(length(min = 1, max = 200))]
    pub tag: Option<String>,
    /// A commit id: 7 to 40 hexadecimal characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9a-fA-F]{7,40}$')")
        .message("commit must be 7 to 40 hexadecimal characters, such as 4f1c2ab"))]
    #[schemars(length(min = 7, max = 40))]
    pub commit: Option<String>,
}

/// Characters git accepts in a ref name that no shell treats specially.
pub const REF_NAME_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._/+-]*$";

fn ref_name_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.matches('{REF_NAME_PATTERN}')")).message(kube::core::Message::Message(format!(
        "{field} must be a git ref name made of letters, digits and . _ / + - that does not start \
         with - or . (no spaces or shell characters such as ; $ ` | & < > ( ) * ? or quotes)"
    )))
}

fn ref_dots_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(
        "!self.contains('..') && !self.contains('//') && !self.contains('/.') \
         && !self.endsWith('/') && !self.endsWith('.') && !self.endsWith('.lock')",
    )
    .message(kube::core::Message::Message(format!(
        "{field} is not a name git accepts: it must not contain '..', '//' or '/.', \
         nor end with '/', '.' or '.lock'"
    )))
}

impl Revision {
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
