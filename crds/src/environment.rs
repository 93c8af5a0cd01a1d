//! `Environment`: one compose host and how to deploy to it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyRef, SecretRef, conditions_schema};

/// One compose host (staging, production, ...) and how Slipway deploys to it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "slipway.dev",
    version = "v1alpha1",
    kind = "Environment",
    plural = "environments",
    shortname = "env",
    category = "slipway",
    namespaced,
    status = "EnvironmentStatus",
    doc = "A compose host reached over SSH with a pinned host key, and how to deploy to it.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.host.address"),
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Current", type_ = "string", json_path = ".status.current.ref"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// Free label such as `staging` or `production`; promotion rules (`policy.promoteFrom`) name tiers.
    #[serde(default)]
    #[schemars(length(max = 63))]
    pub tier: String,
    /// The SSH endpoint and the directory holding the application's git checkout.
    pub host: Host,
    /// Secret key holding the private key Slipway logs in with.
    pub ssh_key_secret_ref: SecretKeyRef,
    /// Secret key holding the host's public keys in known_hosts format. Required: Slipway only
    /// talks to a host whose key is listed here and refuses a changed or unknown key.
    pub known_hosts_secret_ref: SecretKeyRef,
    /// Where the application's code comes from, for the first clone onto the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,
    /// The compose project on the host.
    #[serde(default)]
    pub compose: Compose,
    /// Secret whose keys are rendered to `.env` next to the compose file (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_secret_ref: Option<SecretRef>,
    /// Database migrations, run with the NEW revision's image before the stack is rebuilt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Migrations>,
    /// How a deploy is verified. Always implied: every long-running service is running, and
    /// healthy where it has a healthcheck.
    #[serde(default)]
    pub health: Health,
    /// Gates that every DeployRequest for this Environment must pass.
    #[serde(default)]
    pub policy: Policy,
}

/// An SSH endpoint and the application's directory on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Host name or IP address of the compose host.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9_][A-Za-z0-9_.:-]*$')")
        .message("address must be a host name or IP address (letters, digits, . : - _), not starting with -"))]
    pub address: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// User Slipway logs in as; it needs to run docker.
    #[serde(default = "default_user")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z_][a-z0-9_.-]*$')")
        .message("user must be a login name: lowercase letters, digits, _ . -, starting with a letter or _"))]
    pub user: String,
    /// Absolute path of the application's git checkout on the host, such as `/srv/shop`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^/[A-Za-z0-9._/-]*$')")
        .message("path must be an absolute path such as /srv/shop made of letters, digits and . _ / -"))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('/../') && !self.endsWith('/..')")
        .message("path must not contain '..' segments"))]
    pub path: String,
}

fn default_ssh_port() -> i32 {
    22
}

fn default_user() -> String {
    "deploy".to_string()
}

/// Git origin of the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// URL the host clones from when `host.path` holds no checkout yet (ssh, https or file URL).
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(ssh|https?|file|git)://[^ \\'\"`$;&|<>()]+$') || self.matches('^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:[^ \\'\"`$;&|<>()]+$')")
        .message("url must be an ssh://, https://, git:// or file:// URL or user@host:path, without spaces or shell characters"))]
    pub url: String,
}

/// The compose project on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compose {
    /// Compose files, relative to `host.path`.
    #[serde(default = "default_compose_files")]
    #[schemars(length(min = 1, max = 8), inner(length(min = 1, max = 255)))]
    #[x_kube(validation = kube::core::Rule::new("self.all(f, f.matches('^[A-Za-z0-9_][A-Za-z0-9._/-]*$') && !f.contains('..'))")
        .message("compose files must be relative paths inside host.path made of letters, digits and . _ / -"))]
    pub files: Vec<String>,
    /// Compose project name; defaults to the Environment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[a-z0-9][a-z0-9_-]*$')")
        .message("projectName must be lowercase letters, digits, _ and -, starting with a letter or digit"))]
    pub project_name: Option<String>,
}

impl Default for Compose {
    fn default() -> Self {
        Compose { files: default_compose_files(), project_name: None }
    }
}

fn default_compose_files() -> Vec<String> {
    vec!["docker-compose.yml".to_string()]
}

/// Database migration commands, each an argv list run in a one-off container of `service`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Migrations {
    /// Compose service whose (new) image runs the migrations, such as `backend`.
    #[x_kube(validation = service_rule())]
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// Command that migrates to the newest schema, such as `[alembic, upgrade, head]`.
    #[schemars(length(min = 1))]
    pub upgrade: Vec<String>,
    /// Command that prints the current schema revision, such as `[alembic, current]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub current: Vec<String>,
    /// Command that downgrades to a revision; `{revision}` is replaced by the target revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downgrade: Vec<String>,
}

pub(crate) fn service_rule() -> kube::core::Rule {
    kube::core::Rule::new("self.matches('^[a-zA-Z0-9][a-zA-Z0-9_.-]*$')")
        .message("service must be a compose service name: letters, digits, _ . -, starting with a letter or digit")
}

/// How a deploy is verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Overall deadline for verification, in seconds.
    #[serde(default = "default_health_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Pause between rounds of checks, in seconds.
    #[serde(default = "default_health_interval")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: i32,
    /// Declared checks; all must pass.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub checks: Vec<HealthCheck>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            timeout_seconds: default_health_timeout(),
            interval_seconds: default_health_interval(),
            checks: Vec::new(),
        }
    }
}

fn default_health_timeout() -> i32 {
    180
}

fn default_health_interval() -> i32 {
    5
}

/// One health check: exactly one of `http`, `tcp` or `exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1"
).message("a health check must set exactly one of http, tcp or exec"))]
pub struct HealthCheck {
    /// Name shown in status and events.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// An HTTP request to a service's container port, through the SSH connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connect to a service's container port, through the SSH connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command run inside a service's running container, such as `[pg_isready]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
}

/// HTTP check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Compose service to call.
    #[x_kube(validation = service_rule())]
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// Container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Request path.
    #[serde(default = "default_http_path")]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')").message("path must start with /"))]
    #[schemars(length(min = 1, max = 1024))]
    pub path: String,
    /// Expected status code; any 2xx when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<i32>,
    /// Top-level JSON fields the response body must contain, such as `{status: healthy}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_json: Option<BTreeMap<String, String>>,
}

fn default_http_path() -> String {
    "/".to_string()
}

/// TCP check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpCheck {
    /// Compose service to connect to.
    #[x_kube(validation = service_rule())]
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// Container port.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Exec check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecCheck {
    /// Compose service whose running container runs the command.
    #[x_kube(validation = service_rule())]
    #[schemars(length(min = 1, max = 63))]
    pub service: String,
    /// The command, as an argv list; exit code 0 passes.
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
}

/// Gates for DeployRequests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Every DeployRequest must name an issue (`spec.issue`): no issue, no deploy.
    #[serde(default)]
    pub require_issue: bool,
    /// DeployRequests may use `mode: Direct` (emergency override, recorded as untracked).
    #[serde(default)]
    pub allow_direct: bool,
    /// Every DeployRequest must name who approved it (`spec.approvedBy`).
    #[serde(default)]
    pub require_approval: bool,
    /// Tier whose Environment must already run the requested commit (promotion), such as `staging`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    /// Roll back automatically when verification fails.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_issue: false,
            allow_direct: false,
            require_approval: false,
            promote_from: None,
            auto_rollback: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Observed state of an Environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reachable, Healthy, Reconciling, Stalled.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The release the host runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<Release>,
    /// The DeployRequest or Rollback holding this Environment's deploy lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deploy: Option<String>,
    /// DeployRequests waiting for the lock, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue: Vec<String>,
    /// The last releases, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Release>,
}

/// One release that ran on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// The ref that was asked for (`v1.2.3`, `main`, or the commit itself).
    #[serde(rename = "ref")]
    pub ref_: String,
    /// Full commit id.
    pub commit: String,
    /// Database migration revision after the deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<String>,
    /// Image id of each compose service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The DeployRequest or Rollback that made this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    /// When the release went live (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at: Option<String>,
}
