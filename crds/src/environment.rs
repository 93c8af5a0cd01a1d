//! `Environment`: one compose host and how to deploy to it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Revision, SecretKeyRef, SecretRef, conditions_schema};
use crate::notifications::{RECEIVERS_MAX_ITEMS, Receiver};
use crate::patterns::{
    ARGUMENT, ARGV_MAX_ITEMS, CHECK_NAME, CHECK_URL, COMPOSE_FILE, CRON_SCHEDULE, ENVIRONMENT_NAME, HOST_ADDRESS,
    HOST_PATH, HOST_USER, HTTP_PATH, ISSUE, LOG_PATTERN, LOG_PATTERNS_MAX_ITEMS, PROJECT_NAME, PROMOTE_FROM_MAX_ITEMS,
    REPOSITORY_URL, SERVICE_NAME, TIER, TIME_ZONE, WINDOW_DURATION, WINDOWS_MAX_ITEMS, program_rule,
};

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
    printcolumn(name = "Desired", type_ = "string", json_path = ".status.revision.desired"),
    printcolumn(name = "Current", type_ = "string", json_path = ".status.current.ref"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Healthy\")].status"
    ),
    printcolumn(
        name = "Drifted",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Drifted\")].status"
    ),
    printcolumn(name = "Quarantined", type_ = "string", priority = "1", json_path = ".status.quarantined[*].ref"),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = "1",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.policy) || !has(self.policy.rehearseRollback) || !self.policy.rehearseRollback || \
     (has(self.migrations) && has(self.migrations.downgrade) && size(self.migrations.downgrade) > 0 && \
     has(self.migrations.current) && size(self.migrations.current) > 0)"
).message("policy.rehearseRollback needs spec.migrations.downgrade and spec.migrations.current (the rehearsal \
    downgrades the database and checks the revision it reached): declare both, or remove rehearseRollback"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.policy) || !has(self.policy.requireRollbackTested) || !self.policy.requireRollbackTested || \
     (has(self.policy.promoteFrom) && size(self.policy.promoteFrom) > 0)"
).message("policy.requireRollbackTested applies to promotion: set policy.promoteFrom to the Environments that \
    rehearse rollbacks (such as [staging]), or remove requireRollbackTested"))]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentSpec {
    /// A label such as `staging` or `production` (letters, digits, . _ -), or empty. Free text for
    /// people and tools: promotion (`policy.promoteFrom`) names Environments, not tiers.
    #[serde(default)]
    #[schemars(length(max = TIER.max_len))]
    #[x_kube(validation = TIER.rule("tier"))]
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
    /// How long each step of a deploy may take before it fails with `ProgressDeadlineExceeded`
    /// and its host job is stopped. Verification is bounded by `health.timeoutSeconds`.
    #[serde(default)]
    pub deadlines: Deadlines,
    /// How many releases `status.history` keeps (newest first); Rollback targets are resolved
    /// from it.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 50))]
    pub history_limit: i32,
    /// What the monitor does when what runs differs from the recorded release (condition
    /// `Drifted`): `Report` (default) only says so; `Heal` redeploys the recorded release through
    /// a DeployRequest it owns, discarding local changes on the host.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// Where outcomes are sent: receivers, each a URL held in a Secret, a format and the events
    /// it wants. Delivery never holds up or fails a deploy; it is retried for up to 10 minutes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = RECEIVERS_MAX_ITEMS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub notifications: Vec<Receiver>,
    /// What the Environment should run, declared (a GitOps repository bumps this one line to
    /// release): when it differs from what runs, the controller creates a DeployRequest it owns,
    /// queued, gated and verified like any other. A branch is followed: a new commit on it is
    /// deployed. A manual Rollback suspends it until it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<DesiredRevision>,
}

/// `spec.revision`: a branch, tag or commit, and what the gates ask of the DeployRequests it
/// makes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRevision {
    /// Exactly one of branch, tag or commit.
    #[serde(flatten)]
    pub revision: Revision,
    /// The issue the DeployRequests it makes name (for `policy.requireIssue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = ISSUE.min_len, max = ISSUE.max_len))]
    #[x_kube(validation = ISSUE.rule("issue"))]
    pub issue: Option<String>,
    /// Who approved this revision (for `policy.requireApproval`), recorded in the release as
    /// approved in the Environment's spec. Admitted only from a user allowed the verb `approve`
    /// on deployrequests in the namespace (the GitOps tool's account, bound to slipway-approver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub approved_by: Option<String>,
    /// How often a branch is looked up on the remote, in seconds (default 60); annotating the
    /// Environment `slipway.dev/refresh=<anything new>` looks at once.
    #[serde(default = "default_poll_interval")]
    #[schemars(range(min = 10, max = 86400))]
    pub poll_interval_seconds: i32,
}

fn default_poll_interval() -> i32 {
    60
}

/// What became of `spec.revision` (written by the Environment controller).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The revision as declared (`tag v1.1.0`, `branch main`).
    pub desired: String,
    /// The commit it stood for when last looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the look-up last found it standing for another commit (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// `Synced`, `Deploying`, `Failed`, `Superseded`, `Quarantined`, `Suspended`, `Held` (the
    /// Environment needs a person) or `Unresolved`.
    pub state: String,
    /// What the state means, for a person.
    #[serde(default)]
    pub message: String,
    /// The last DeployRequest made for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The manual Rollback that suspended it, and the revision then declared: a change of
    /// `spec.revision` resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_desired: Option<String>,
    /// The last request made for it that failed, and what it was made for: that commit is not
    /// retried for the same declaration and refresh annotation, even once the request is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<RevisionFailure>,
}

/// A request made for `spec.revision` that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionFailure {
    pub request: String,
    pub commit: String,
    /// The declared revision (`tag v1.1.0`).
    pub desired: String,
    /// The Environment's `slipway.dev/refresh` annotation then.
    #[serde(default)]
    pub refresh: String,
}

/// What drift leads to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DriftPolicy {
    /// Condition `Drifted=True` listing each difference; nothing else.
    #[default]
    Report,
    /// Also redeploy the recorded release (forced, local changes on the host discarded) through
    /// an owned DeployRequest, queued, locked and verified like any other; one at a time.
    Heal,
}

fn default_history_limit() -> i32 {
    10
}

/// Step deadlines of a deploy, in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deadlines {
    /// Preflight (fetch, checks; changes nothing on the host).
    #[serde(default = "default_preflight_seconds")]
    #[schemars(range(min = 10, max = 3600))]
    pub preflight_seconds: i32,
    /// Building the migration image and running the upgrade.
    #[serde(default = "default_step_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub migration_seconds: i32,
    /// Checkout, build and `up`.
    #[serde(default = "default_step_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub rebuild_seconds: i32,
    /// A Rollback's database downgrade.
    #[serde(default = "default_step_seconds")]
    #[schemars(range(min = 10, max = 86400))]
    pub downgrade_seconds: i32,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            preflight_seconds: default_preflight_seconds(),
            migration_seconds: default_step_seconds(),
            rebuild_seconds: default_step_seconds(),
            downgrade_seconds: default_step_seconds(),
        }
    }
}

fn default_preflight_seconds() -> i32 {
    300
}

fn default_step_seconds() -> i32 {
    1800
}

/// An SSH endpoint and the application's directory on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    /// Host name or IP address of the compose host.
    #[schemars(length(min = HOST_ADDRESS.min_len, max = HOST_ADDRESS.max_len))]
    #[x_kube(validation = HOST_ADDRESS.rule("address"))]
    pub address: String,
    /// SSH port.
    #[serde(default = "default_ssh_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// User Slipway logs in as; it needs to run docker.
    #[serde(default = "default_user")]
    #[schemars(length(min = HOST_USER.min_len, max = HOST_USER.max_len))]
    #[x_kube(validation = HOST_USER.rule("user"))]
    pub user: String,
    /// Absolute path of the application's git checkout on the host, such as `/srv/shop`.
    #[schemars(length(min = HOST_PATH.min_len, max = HOST_PATH.max_len))]
    #[x_kube(validation = HOST_PATH.rule("path"))]
    #[x_kube(validation = HOST_PATH.forbidden_rule("path"))]
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
    /// URL the host clones from when `host.path` holds no checkout yet: an `ssh://`, `https://`,
    /// `http://`, `git://` or `file://` URL, or `user@host:path`. No credentials in it: the host
    /// authenticates with its own keys.
    #[schemars(length(min = REPOSITORY_URL.min_len, max = REPOSITORY_URL.max_len))]
    #[x_kube(validation = REPOSITORY_URL.rule("url"))]
    pub url: String,
}

/// The compose project on the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compose {
    /// Compose files, relative to `host.path`.
    #[serde(default = "default_compose_files")]
    #[schemars(length(min = 1, max = 8), inner(length(min = COMPOSE_FILE.min_len, max = COMPOSE_FILE.max_len)))]
    #[x_kube(validation = COMPOSE_FILE.each_rule("compose files"))]
    #[x_kube(validation = COMPOSE_FILE.each_forbidden_rule("compose files"))]
    pub files: Vec<String>,
    /// Compose project name; defaults to the Environment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = PROJECT_NAME.min_len, max = PROJECT_NAME.max_len))]
    #[x_kube(validation = PROJECT_NAME.rule("projectName"))]
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
    #[x_kube(validation = SERVICE_NAME.rule("service"))]
    #[schemars(length(min = SERVICE_NAME.min_len, max = SERVICE_NAME.max_len))]
    pub service: String,
    /// Command that migrates to the newest schema, such as `[alembic, upgrade, head]`.
    #[schemars(length(min = 1, max = ARGV_MAX_ITEMS), inner(length(max = ARGUMENT.max_len)))]
    #[x_kube(validation = program_rule("upgrade"))]
    #[x_kube(validation = ARGUMENT.each_rule("upgrade arguments"))]
    pub upgrade: Vec<String>,
    /// Command that prints the current schema revision, such as `[alembic, current]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ARGV_MAX_ITEMS), inner(length(max = ARGUMENT.max_len)))]
    #[x_kube(validation = program_rule("current"))]
    #[x_kube(validation = ARGUMENT.each_rule("current arguments"))]
    pub current: Vec<String>,
    /// Command that downgrades to a revision; `{revision}` is replaced by the target revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = ARGV_MAX_ITEMS), inner(length(max = ARGUMENT.max_len)))]
    #[x_kube(validation = program_rule("downgrade"))]
    #[x_kube(validation = ARGUMENT.each_rule("downgrade arguments"))]
    pub downgrade: Vec<String>,
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
    /// Between deploys, how often the Environment runs its checks (container states and the
    /// declared checks) over its SSH master and reports condition `Healthy`, in seconds.
    #[serde(default = "default_monitor_interval")]
    #[schemars(range(min = 10, max = 3600))]
    pub monitor_interval_seconds: i32,
    /// After the checks passed, each service's log lines written since its container started
    /// (and since the deploy began) are scanned for these texts (plain, case-sensitive
    /// substrings; default `Traceback`, `ERROR`, `FATAL`, `panic:`). A match fails verification
    /// with the matching lines (masked), or only warns with `logErrors: Warn`.
    #[serde(default = "default_log_error_patterns")]
    #[schemars(
        length(max = LOG_PATTERNS_MAX_ITEMS),
        inner(length(min = LOG_PATTERN.min_len, max = LOG_PATTERN.max_len))
    )]
    #[x_kube(validation = LOG_PATTERN.each_rule("logErrorPatterns"))]
    pub log_error_patterns: Vec<String>,
    /// Lines holding any of these texts never count as errors, whatever they match (default:
    /// PostgreSQL's messages to clients that connect while it starts or stops, such as
    /// `the database system is starting up`, which its log prints with `FATAL` during every
    /// start, as readiness probes knock). Set `[]` to count every matching line.
    #[serde(default = "default_log_ignore_patterns")]
    #[schemars(
        length(max = LOG_PATTERNS_MAX_ITEMS),
        inner(length(min = LOG_PATTERN.min_len, max = LOG_PATTERN.max_len))
    )]
    #[x_kube(validation = LOG_PATTERN.each_rule("logIgnorePatterns"))]
    pub log_ignore_patterns: Vec<String>,
    /// What a match of `logErrorPatterns` does: `Fail` (default) fails verification, `Warn`
    /// records it in the Verifying step and the Ready message, `Ignore` skips the scan.
    #[serde(default)]
    pub log_errors: LogErrors,
    /// How many of each service's last log lines are scanned (default 50).
    #[serde(default = "default_log_lines")]
    #[schemars(range(min = 1, max = 1000))]
    pub log_lines: i32,
    /// After verification passed, how long the deploy keeps running these checks (every
    /// `intervalSeconds`, still holding the lock) before it is `Succeeded`, in seconds: a failure
    /// inside the window fails it (`BakeFailed`) and, with `policy.autoRollback`, rolls it back.
    /// Unset: 300 on a production Environment (`policy.production`, or tier `production`), else 0.
    /// Restarts and Rollbacks do not bake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub bake_seconds: Option<i32>,
}

/// `health.bakeSeconds` when unset on a production Environment.
pub const DEFAULT_PRODUCTION_BAKE_SECONDS: i32 = 300;

impl EnvironmentSpec {
    /// The bake period after verification, in seconds: `health.bakeSeconds`, else 300 on a
    /// production Environment and 0 elsewhere.
    pub fn bake_seconds(&self) -> i32 {
        match self.health.bake_seconds {
            Some(s) => s.clamp(0, 86400),
            None if self.policy.is_production(&self.tier) => DEFAULT_PRODUCTION_BAKE_SECONDS,
            None => 0,
        }
    }
}

/// What an error line in a service's log after a deploy does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogErrors {
    /// Verification fails (reason `LogErrorsFound`), quoting the lines.
    #[default]
    Fail,
    /// The deploy succeeds; the lines are quoted in the Verifying step and the Ready message.
    Warn,
    /// Logs are not scanned.
    Ignore,
}

/// The default `health.logErrorPatterns`.
pub fn default_log_error_patterns() -> Vec<String> {
    ["Traceback", "ERROR", "FATAL", "panic:"].map(String::from).to_vec()
}

/// The default `health.logIgnorePatterns`: PostgreSQL refusing clients while it starts or stops.
pub fn default_log_ignore_patterns() -> Vec<String> {
    [
        "the database system is starting up",
        "the database system is shutting down",
        "terminating connection due to administrator command",
    ]
    .map(String::from)
    .to_vec()
}

fn default_log_lines() -> i32 {
    50
}

impl Default for Health {
    fn default() -> Self {
        Health {
            timeout_seconds: default_health_timeout(),
            interval_seconds: default_health_interval(),
            checks: Vec::new(),
            monitor_interval_seconds: default_monitor_interval(),
            log_error_patterns: default_log_error_patterns(),
            log_ignore_patterns: default_log_ignore_patterns(),
            log_errors: LogErrors::default(),
            log_lines: default_log_lines(),
            bake_seconds: None,
        }
    }
}

fn default_health_timeout() -> i32 {
    180
}

fn default_health_interval() -> i32 {
    5
}

fn default_monitor_interval() -> i32 {
    60
}

/// One health check: exactly one of `http`, `tcp` or `exec`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.http), has(self.tcp), has(self.exec)].filter(x, x).size() == 1"
).message("a health check must set exactly one of http, tcp or exec"))]
pub struct HealthCheck {
    /// Name shown in status and events, such as `backend` or `db-ready`.
    #[schemars(length(min = CHECK_NAME.min_len, max = CHECK_NAME.max_len))]
    #[x_kube(validation = CHECK_NAME.rule("name"))]
    pub name: String,
    /// An HTTP request to a service's container port, through the SSH connection; or, with
    /// `url`, to an address users reach, fetched from the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// A TCP connect to a service's container port, through the SSH connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// A command run inside a service's running container, such as `[pg_isready]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecCheck>,
}

/// HTTP check: `service` and `port` (through the SSH connection), or `url` (from the controller).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.url) ? !has(self.service) && !has(self.port) && self.path == '/' : has(self.service) && has(self.port)"
).message("an http check sets either url (fetched from the controller; the path goes in the url) or service and port (through the SSH connection)"))]
pub struct HttpCheck {
    /// Compose service to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = SERVICE_NAME.rule("service"))]
    #[schemars(length(min = SERVICE_NAME.min_len, max = SERVICE_NAME.max_len))]
    pub service: Option<String>,
    /// Container port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Request path (and query), such as `/health`: starts with `/`, no spaces, ASCII only.
    #[serde(default = "default_http_path")]
    #[x_kube(validation = HTTP_PATH.rule("path"))]
    #[schemars(length(min = HTTP_PATH.min_len, max = HTTP_PATH.max_len))]
    pub path: String,
    /// Instead of service and port: an `http://` or `https://` URL users reach, such as the
    /// public address behind the reverse proxy, fetched directly from the controller (no
    /// redirects followed, 10 s timeout; only the status code and whether the body matched are
    /// reported). It must match an entry of the controller's allow-list (`--http-url-allow`,
    /// chart value `httpUrlAllow`), else deploys are refused `UrlNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = CHECK_URL.rule("url"))]
    #[schemars(length(min = CHECK_URL.min_len, max = CHECK_URL.max_len))]
    pub url: Option<String>,
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
    #[x_kube(validation = SERVICE_NAME.rule("service"))]
    #[schemars(length(min = SERVICE_NAME.min_len, max = SERVICE_NAME.max_len))]
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
    #[x_kube(validation = SERVICE_NAME.rule("service"))]
    #[schemars(length(min = SERVICE_NAME.min_len, max = SERVICE_NAME.max_len))]
    pub service: String,
    /// The command, as an argv list; exit code 0 passes.
    #[schemars(length(min = 1, max = ARGV_MAX_ITEMS), inner(length(max = ARGUMENT.max_len)))]
    #[x_kube(validation = program_rule("command"))]
    #[x_kube(validation = ARGUMENT.each_rule("command arguments"))]
    pub command: Vec<String>,
}

/// Gates for DeployRequests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Every DeployRequest must name an issue (`spec.issue`): no issue, no deploy.
    #[serde(default)]
    pub require_issue: bool,
    /// DeployRequests may use `mode: Direct` (emergency override, recorded as untracked).
    #[serde(default)]
    pub allow_direct: bool,
    /// Every DeployRequest must be approved: a user allowed the `approve` verb on deployrequests
    /// annotates it with `slipway.dev/approved-by: <their user name>`. Until then it waits, Stalled.
    #[serde(default)]
    pub require_approval: bool,
    /// Names of Environments (same namespace) that must each show the requested commit deployed
    /// successfully (as `current` or in `history`) before this one takes it (promotion), such as
    /// `[staging]`. Empty: no promotion rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = PROMOTE_FROM_MAX_ITEMS),
        inner(length(min = ENVIRONMENT_NAME.min_len, max = ENVIRONMENT_NAME.max_len)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = ENVIRONMENT_NAME.each_rule("promoteFrom"))]
    pub promote_from: Vec<String>,
    /// Roll back automatically when verification fails.
    #[serde(default = "default_true")]
    pub auto_rollback: bool,
    /// Deploy windows, as Argo CD sync windows: a DeployRequest runs only while no `Deny` window
    /// is open and, when any `Allow` window is declared, one of them is. Outside, it waits
    /// (`Queued`, reason `OutsideDeployWindow`, saying when it may run) without holding the lock.
    /// Rollbacks are never held; `mode: Direct` passes where `allowDirect` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = WINDOWS_MAX_ITEMS))]
    pub windows: Vec<DeployWindow>,
    /// A freeze: no DeployRequest runs until it is lifted (Rollbacks do; `mode: Direct` where
    /// `allowDirect` is set).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub freeze: bool,
    /// Whether this Environment is production for the playbook's gates (`CodeVolumeInProduction`,
    /// `NoRollbackPlan`); unset: when `tier` is `production`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub production: Option<bool>,
    /// Playbook gates this Environment waives by name: a finding of a waived gate does not
    /// refuse the deploy; it is named in the Preflight step and recorded in the release
    /// (`waived`). `mode: Direct` waives nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub waive: Vec<QualityGate>,
    /// Rehearse the rollback of every deploy that migrates (meant for staging): once verified,
    /// the database is downgraded to the revision it had before and the previous release
    /// rebuilt and verified, then the release migrated, rebuilt and verified again. The
    /// DeployRequest succeeds only if all of it passes; its release is then `rollbackTested`.
    /// Needs `migrations.downgrade` and `migrations.current`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rehearse_rollback: bool,
    /// With `promoteFrom`: a commit is promoted only when each of those Environments holds a
    /// release of it whose rollback was rehearsed there (`rollbackTested`); otherwise the
    /// DeployRequest is refused with `RollbackNotTested`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_rollback_tested: bool,
}

/// The playbook's quality standards, checked at Preflight on the requested commit before
/// anything on the host changes; each refuses with a reason of its own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum QualityGate {
    /// A service's `environment` or `build.args` gives a literal value to a secret-looking key
    /// (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, `*_KEY`), or any URL a literal password.
    SecretInCompose,
    /// `.env` is tracked in git at the requested commit.
    EnvFileCommitted,
    /// The compose files use `${VAR}`s but the revision has no `.env.example`, or a `${VAR}`
    /// without a default is not listed in it.
    EnvExampleMissing,
    /// Production only: a long-running service bind-mounts a path of the checkout.
    CodeVolumeInProduction,
    /// Production only: the release adds migration files and the Environment declares no
    /// `migrations.downgrade`.
    NoRollbackPlan,
}

impl QualityGate {
    pub const ALL: [QualityGate; 5] = [
        QualityGate::SecretInCompose,
        QualityGate::EnvFileCommitted,
        QualityGate::EnvExampleMissing,
        QualityGate::CodeVolumeInProduction,
        QualityGate::NoRollbackPlan,
    ];

    /// The gate's name, which is also the reason it refuses with.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityGate::SecretInCompose => crate::conditions::reasons::SECRET_IN_COMPOSE,
            QualityGate::EnvFileCommitted => crate::conditions::reasons::ENV_FILE_COMMITTED,
            QualityGate::EnvExampleMissing => crate::conditions::reasons::ENV_EXAMPLE_MISSING,
            QualityGate::CodeVolumeInProduction => crate::conditions::reasons::CODE_VOLUME_IN_PRODUCTION,
            QualityGate::NoRollbackPlan => crate::conditions::reasons::NO_ROLLBACK_PLAN,
        }
    }
}

impl std::fmt::Display for QualityGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Policy {
    /// Production for the playbook's gates: `production` when set, else a `production` tier.
    pub fn is_production(&self, tier: &str) -> bool {
        self.production.unwrap_or(tier == "production")
    }
}

/// A time window for deploys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployWindow {
    /// `Allow`: deploys run while it is open. `Deny`: they do not.
    pub kind: WindowKind,
    /// When the window opens: a five-field cron schedule such as `0 22 * * 1-5`, or `@daily`.
    #[schemars(length(min = CRON_SCHEDULE.min_len, max = CRON_SCHEDULE.max_len))]
    #[x_kube(validation = CRON_SCHEDULE.rule("schedule"))]
    pub schedule: String,
    /// How long it stays open after each start, such as `1h`, `90m` or `1h30m`.
    #[schemars(length(min = WINDOW_DURATION.min_len, max = WINDOW_DURATION.max_len))]
    #[x_kube(validation = WINDOW_DURATION.rule("duration"))]
    pub duration: String,
    /// The IANA time zone the schedule is read in, such as `Europe/Berlin`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = TIME_ZONE.min_len, max = TIME_ZONE.max_len))]
    #[x_kube(validation = TIME_ZONE.rule("timeZone"))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// Whether a window lets deploys run or holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WindowKind {
    Allow,
    Deny,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            require_issue: false,
            allow_direct: false,
            require_approval: false,
            promote_from: Vec::new(),
            auto_rollback: true,
            windows: Vec::new(),
            freeze: false,
            production: None,
            waive: Vec::new(),
            rehearse_rollback: false,
            require_rollback_tested: false,
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
    /// The last releases, newest first (`spec.historyLimit` of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Release>,
    /// Commits that failed here and were rolled back: a DeployRequest for one is refused
    /// `Quarantined` unless it sets `spec.overrideQuarantine`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<Quarantined>,
    /// Set when a failed deploy's automatic rollback failed too: the host is in a state nobody
    /// verified. Requests that were already waiting are held until a newer DeployRequest or
    /// Rollback (made by a person who looked) has taken the lock, which clears this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_attention: Option<Attention>,
    /// The environment variables the running release requires (key names only, never values),
    /// recorded when a deploy or rollback succeeds, for people without access to the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_keys: Option<EnvKeys>,
    /// What became of `spec.revision`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<RevisionStatus>,
    /// The outbox of the Environment's own events (`HealthChanged`, `Drifted`): one entry per
    /// receiver and event, each attempt recorded; the last 20 settled ones are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::NotificationRecord>,
}

/// Key names of a release's `.env.example`, and which of them the env Secret lacked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvKeys {
    /// The commit whose `.env.example` lists them.
    pub commit: String,
    /// Keys listed in that `.env.example`, in its order; empty when it has none (or no such file).
    #[serde(default)]
    pub required: Vec<String>,
    /// Required keys absent from the env Secret when the release went live.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// Why an Environment needs a person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attention {
    /// What happened, for a person.
    pub message: String,
    /// When (RFC 3339): requests created before this are held.
    pub since: String,
}

/// A commit kept out of an Environment after it failed there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    /// Full commit id.
    pub commit: String,
    /// The ref that was asked for (`v1.2.3`).
    #[serde(rename = "ref")]
    pub ref_: String,
    /// The DeployRequest that failed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<String>,
    /// Why, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
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
    /// When the deploy that made it started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `Succeeded`, `Failed` or `Abandoned` (a failed release undone by a Rollback is `Failed`, and
    /// the Rollback's own release follows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The issue the deploy named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<String>,
    /// Who asked for it: the user the API server authenticated when the DeployRequest was
    /// created (its `slipway.dev/requested-by` annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Who approved it: the user who annotated the DeployRequest `slipway.dev/approved-by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// A `mode: Direct` deploy, outside the tracked change process.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// sha256 of the rendered `.env` (never the values), to tell a changed Secret from a re-sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_hash: Option<String>,
    /// A Rollback's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Playbook gates that found something in this release and were waived by the
    /// Environment's `policy.waive`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waived: Vec<String>,
    /// A restart (`DeployRequest.spec.restart`): the services it restarted, the release as it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarted: Vec<String>,
    /// Its rollback was rehearsed on this Environment (`policy.rehearseRollback`): downgraded,
    /// the previous release verified, rolled forward and verified again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback_tested: bool,
}
