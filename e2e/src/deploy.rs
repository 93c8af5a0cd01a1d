//! The deploy tests' vocabulary: Environments and DeployRequests as a user writes them, their
//! status as `kubectl get -o json` shows it, and what a test looks at on the host over SSH
//! (HEAD, `.env`, containers, the database).
//!
//! A [`DeployTest`] is one test's namespace with its own controller plus the compose projects
//! ([`Site`]s) it deploys to; dropping it stops the controller first, then removes every project
//! (containers, volumes, images, work dir, host-job runs), also when the test panicked.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use slipway_controller::remote::{CommandOutput, ConnectOptions, HostConnection, RemoteCommand, RemoteError};

use crate::cluster::TestCluster;
use crate::hosts::{TestHost, TestProject, shop_origin};

/// How long one deploy may take here: a cold build of the reference stack on the sandbox's one
/// Docker engine, shared with the tests running alongside, is 10-60 s; Ready comes well within this.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a request refused by a gate or by preflight may take to say so.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(90);

/// The steps of a deploy, in order.
pub const STEPS: [&str; 4] = ["Preflight", "Migrating", "Rebuilding", "Verifying"];
/// The steps of a rollback, in order.
pub const ROLLBACK_STEPS: [&str; 4] = ["Preflight", "Downgrading", "Rebuilding", "Verifying"];

/// Kinds as kubectl spells them.
pub const DEPLOY_REQUEST: &str = "deployrequest";
pub const ROLLBACK: &str = "rollback";

/// The application an Environment deploys, both from the fixture repository (`shop_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    /// The reference stack: db + backend (alembic migrations) + frontend; tags v1.0.0..v1.4.0.
    Shop,
    /// One service, no migrations, healthy 3 s after start; tags ticker-v1..ticker-v3.
    Ticker,
    /// One service from a prebuilt image (nothing to build), no migrations; tags idle-v1, idle-v2.
    Idle,
}

impl App {
    /// Values for every key of the app's `.env.example`; the shop's password is unique per call.
    pub fn env_values(self) -> Vec<(String, String)> {
        match self {
            App::Shop => {
                let password = format!("pw-{}", crate::hosts::unique_name("shop"));
                vec![
                    ("POSTGRES_USER".into(), "shop".into()),
                    ("POSTGRES_PASSWORD".into(), password.clone()),
                    ("POSTGRES_DB".into(), "shop".into()),
                    ("DATABASE_URL".into(), format!("postgresql+psycopg2://shop:{password}@db:5432/shop")),
                    ("SECRET_KEY".into(), format!("sk-{}-0123456789abcdef", crate::hosts::unique_name("key"))),
                ]
            }
            App::Ticker => vec![("TICKER_NAME".into(), "ticker-e2e".into())],
            App::Idle => vec![("IDLE_NAME".into(), "idle-e2e".into())],
        }
    }
}

/// Gates of an Environment (`spec.policy`; `autoRollback` is false unless a test says so).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    pub require_issue: bool,
    pub allow_direct: bool,
    pub require_approval: bool,
    /// Names of Environments in the same namespace that must each already have run the commit.
    pub promote_from: Vec<String>,
    pub auto_rollback: bool,
}

/// One entry of an Environment's `spec.notifications`; its URL goes into the Environment's
/// hooks Secret (`<env>-hooks`, key = the receiver's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationManifest {
    pub name: String,
    pub url: String,
    /// `Json` or `Slack`.
    pub format: String,
    pub events: Vec<String>,
}

impl NotificationManifest {
    pub fn new(name: &str, url: &str, format: &str, events: &[&str]) -> NotificationManifest {
        NotificationManifest {
            name: name.to_owned(),
            url: url.to_owned(),
            format: format.to_owned(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
        }
    }
}

/// An Environment as a user would write it, for one [`Site`].
#[derive(Debug, Clone)]
pub struct EnvironmentManifest {
    pub name: String,
    pub app: App,
    pub host: TestHost,
    /// `host.path`: the site's work directory, `$HOME/slipway-e2e/swt-...`.
    pub path: String,
    /// `compose.projectName`: `swt-...`, so `e2e/scripts/down.sh` sweeps what a killed run leaves.
    pub project: String,
    pub origin: String,
    /// Secret holding `id_ed25519` and `known_hosts` (made by [`DeployTest::create_environment`]).
    pub ssh_secret: String,
    /// Secret rendered to `.env`, holding [`EnvironmentManifest::env_values`].
    pub env_secret: String,
    pub env_values: Vec<(String, String)>,
    pub health_timeout_seconds: u32,
    /// `health.intervalSeconds` (the CRD's default when `None`).
    pub health_interval_seconds: Option<u32>,
    /// `health.monitorIntervalSeconds` (the CRD's default when `None`).
    pub monitor_interval_seconds: Option<u32>,
    pub gates: Gates,
    /// Declare `migrations.downgrade` (the shop only).
    pub downgrade: bool,
    /// `spec.notifications`; their URLs are kept in the Secret [`EnvironmentManifest::hooks_secret`].
    pub notifications: Vec<NotificationManifest>,
    /// `health.checks` in place of the app's own.
    pub checks: Option<Value>,
}

impl EnvironmentManifest {
    /// Requires an issue, nothing else; health deadline 120 s; `.env` values from [`App::env_values`].
    pub fn new(name: &str, app: App, site: &Site) -> EnvironmentManifest {
        EnvironmentManifest {
            name: name.to_owned(),
            app,
            host: site.host.clone(),
            path: site.project.dir.clone(),
            project: site.project.name.clone(),
            origin: site.origin.clone(),
            ssh_secret: format!("{name}-ssh"),
            env_secret: format!("{name}-env"),
            env_values: app.env_values(),
            health_timeout_seconds: 120,
            health_interval_seconds: None,
            monitor_interval_seconds: None,
            gates: Gates { require_issue: true, ..Gates::default() },
            downgrade: true,
            notifications: Vec::new(),
            checks: None,
        }
    }

    /// The Secret holding the receivers' URLs (made by [`DeployTest::create_environment`]).
    pub fn hooks_secret(&self) -> String {
        format!("{}-hooks", self.name)
    }

    /// The value of one `.env` key.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env_values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn to_json(&self) -> Value {
        let (migrations, checks) = match self.app {
            App::Shop => (
                json!({
                    "service": "backend",
                    "upgrade": ["alembic", "upgrade", "head"],
                    "current": ["alembic", "current"],
                    "downgrade": ["alembic", "downgrade", "{revision}"],
                }),
                json!([
                    {"name": "backend", "http": {"service": "backend", "port": 8000, "path": "/health",
                                                 "expectJson": {"status": "healthy"}}},
                    {"name": "frontend", "http": {"service": "frontend", "port": 80, "path": "/"}},
                    {"name": "database", "exec": {"service": "db", "command": ["pg_isready"]}},
                ]),
            ),
            App::Ticker => (
                Value::Null,
                json!([{"name": "ticker", "exec": {"service": "ticker", "command": ["cat", "/ticker/VERSION"]}}]),
            ),
            App::Idle => (Value::Null, json!([{"name": "idle", "exec": {"service": "idle", "command": ["true"]}}])),
        };
        let mut policy = json!({
            "requireIssue": self.gates.require_issue,
            "allowDirect": self.gates.allow_direct,
            "requireApproval": self.gates.require_approval,
            "autoRollback": self.gates.auto_rollback,
        });
        if !self.gates.promote_from.is_empty() {
            policy["promoteFrom"] = json!(self.gates.promote_from);
        }
        let mut spec = json!({
            "tier": "staging",
            "host": {"address": self.host.addr, "port": self.host.port, "user": self.host.user, "path": self.path},
            "repository": {"url": self.origin},
            "sshKeySecretRef": {"name": self.ssh_secret, "key": "id_ed25519"},
            "knownHostsSecretRef": {"name": self.ssh_secret, "key": "known_hosts"},
            "compose": {"files": ["docker-compose.yml"], "projectName": self.project},
            "envSecretRef": {"name": self.env_secret},
            "health": {"timeoutSeconds": self.health_timeout_seconds, "checks": self.checks.clone().unwrap_or(checks)},
            "policy": policy,
        });
        if let Some(interval) = self.health_interval_seconds {
            spec["health"]["intervalSeconds"] = json!(interval);
        }
        if let Some(interval) = self.monitor_interval_seconds {
            spec["health"]["monitorIntervalSeconds"] = json!(interval);
        }
        if !self.notifications.is_empty() {
            let hooks = self.hooks_secret();
            spec["notifications"] = self
                .notifications
                .iter()
                .map(|n| {
                    json!({
                        "name": n.name,
                        "urlSecretRef": {"name": hooks, "key": n.name},
                        "format": n.format,
                        "events": n.events,
                    })
                })
                .collect();
        }
        if !migrations.is_null() {
            spec["migrations"] = migrations;
            if !self.downgrade {
                spec["migrations"].as_object_mut().map(|m| m.remove("downgrade"));
            }
        }
        json!({
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }
}

/// `spec.revision` of a DeployRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    Tag(String),
    Branch(String),
    Commit(String),
}

/// A DeployRequest as a user would write it.
#[derive(Debug, Clone)]
pub struct DeployRequestManifest {
    pub name: String,
    pub environment: String,
    pub revision: Revision,
    pub issue: Option<String>,
    /// `mode: Direct` (else the default, `Change`, is left out).
    pub direct: bool,
    pub force: bool,
    pub override_quarantine: bool,
    /// Annotation `slipway.dev/requested-by`; [`DeployTest::deploy`] fills in the user it
    /// creates the request as when this is `None`.
    pub requested_by: Option<String>,
    /// Annotation `slipway.dev/approved-by`.
    pub approved_by: Option<String>,
    /// `spec.restart`: services to restart instead of a revision (then `revision` is left out).
    pub restart: Vec<String>,
}

impl DeployRequestManifest {
    /// A `Change` of `environment` to `tag`, naming issue `#7`.
    pub fn tag(name: &str, environment: &str, tag: &str) -> DeployRequestManifest {
        DeployRequestManifest {
            name: name.to_owned(),
            environment: environment.to_owned(),
            revision: Revision::Tag(tag.to_owned()),
            issue: Some("#7".to_owned()),
            direct: false,
            force: false,
            override_quarantine: false,
            requested_by: None,
            approved_by: None,
            restart: Vec::new(),
        }
    }

    /// A restart of `services` on `environment`, naming issue `#7`.
    pub fn restart(name: &str, environment: &str, services: &[&str]) -> DeployRequestManifest {
        DeployRequestManifest {
            restart: services.iter().map(|s| (*s).to_owned()).collect(),
            ..DeployRequestManifest::tag(name, environment, "-")
        }
    }

    pub fn overriding_quarantine(self) -> Self {
        DeployRequestManifest { override_quarantine: true, ..self }
    }

    pub fn without_issue(self) -> Self {
        DeployRequestManifest { issue: None, ..self }
    }

    pub fn direct(self) -> Self {
        DeployRequestManifest { direct: true, ..self }
    }

    pub fn forced(self) -> Self {
        DeployRequestManifest { force: true, ..self }
    }

    pub fn requested_by(self, who: &str) -> Self {
        DeployRequestManifest { requested_by: Some(who.to_owned()), ..self }
    }

    pub fn approved_by(self, who: &str) -> Self {
        DeployRequestManifest { approved_by: Some(who.to_owned()), ..self }
    }

    pub fn to_json(&self) -> Value {
        let revision = match &self.revision {
            Revision::Tag(t) => json!({"tag": t}),
            Revision::Branch(b) => json!({"branch": b}),
            Revision::Commit(c) => json!({"commit": c}),
        };
        let mut spec = json!({"environment": self.environment, "revision": revision});
        if !self.restart.is_empty() {
            spec = json!({"environment": self.environment, "restart": self.restart});
        }
        if let Some(issue) = &self.issue {
            spec["issue"] = json!(issue);
        }
        if self.direct {
            spec["mode"] = json!("Direct");
        }
        if self.force {
            spec["force"] = json!(true);
        }
        if self.override_quarantine {
            spec["overrideQuarantine"] = json!(true);
        }
        let mut metadata = json!({"name": self.name});
        if let Some(who) = &self.requested_by {
            metadata["annotations"]["slipway.dev/requested-by"] = json!(who);
        }
        if let Some(who) = &self.approved_by {
            metadata["annotations"]["slipway.dev/approved-by"] = json!(who);
        }
        json!({
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "DeployRequest",
            "metadata": metadata,
            "spec": spec,
        })
    }
}

/// `spec.to` of a Rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTo {
    Previous,
    Tag(String),
    Release(String),
}

/// A Rollback as a user would write it.
#[derive(Debug, Clone)]
pub struct RollbackManifest {
    pub name: String,
    pub environment: String,
    pub to: RollbackTo,
    pub reason: String,
    /// `migrations: Skip` (else the default, `Downgrade`, is left out).
    pub skip_migrations: bool,
    /// Annotation `slipway.dev/requested-by`; [`DeployTest::rollback`] fills in its user when `None`.
    pub requested_by: Option<String>,
}

impl RollbackManifest {
    /// Back to the previous release, with a reason.
    pub fn previous(name: &str, environment: &str) -> RollbackManifest {
        RollbackManifest {
            name: name.to_owned(),
            environment: environment.to_owned(),
            to: RollbackTo::Previous,
            reason: "5xx after the release (e2e)".to_owned(),
            skip_migrations: false,
            requested_by: None,
        }
    }

    /// Back to the release made from `tag`.
    pub fn tag(name: &str, environment: &str, tag: &str) -> RollbackManifest {
        RollbackManifest { to: RollbackTo::Tag(tag.to_owned()), ..RollbackManifest::previous(name, environment) }
    }

    pub fn skipping_migrations(self) -> Self {
        RollbackManifest { skip_migrations: true, ..self }
    }

    pub fn to_json(&self) -> Value {
        let to = match &self.to {
            RollbackTo::Previous => json!({"previous": true}),
            RollbackTo::Tag(t) => json!({"tag": t}),
            RollbackTo::Release(c) => json!({"release": c}),
        };
        let mut spec = json!({"environment": self.environment, "to": to, "reason": self.reason});
        if self.skip_migrations {
            spec["migrations"] = json!("Skip");
        }
        let mut metadata = json!({"name": self.name});
        if let Some(who) = &self.requested_by {
            metadata["annotations"]["slipway.dev/requested-by"] = json!(who);
        }
        json!({
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "Rollback",
            "metadata": metadata,
            "spec": spec,
        })
    }
}

/// A condition as status shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// `status.steps[]` of a DeployRequest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StepRecord {
    pub name: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub result: Option<String>,
    pub message: Option<String>,
    pub output_tail: Option<String>,
}

impl StepRecord {
    /// `startedAt`, in nanoseconds since the epoch.
    pub fn started(&self) -> anyhow::Result<i128> {
        rfc3339_nanos(self.started_at.as_deref().with_context(|| format!("step {} has no startedAt", self.name))?)
    }

    /// `finishedAt`, in nanoseconds since the epoch.
    pub fn finished(&self) -> anyhow::Result<i128> {
        rfc3339_nanos(self.finished_at.as_deref().with_context(|| format!("step {} has no finishedAt", self.name))?)
    }

    pub fn succeeded(&self) -> bool {
        self.result.as_deref() == Some("Succeeded")
    }
}

/// `status` of a DeployRequest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeployStatus {
    pub phase: Option<String>,
    /// What was asked for, as people write it (`tag v1.2.3`, `restart of backend`).
    pub revision: Option<String>,
    pub conditions: Vec<ConditionView>,
    pub commit: Option<String>,
    pub previous_commit: Option<String>,
    pub migration_before: Option<String>,
    pub migration_after: Option<String>,
    pub queue_position: Option<i64>,
    pub steps: Vec<StepRecord>,
    pub untracked: Option<bool>,
    /// A Rollback: the database revision it downgrades to.
    pub migration_target: Option<String>,
    /// A DeployRequest rolled back automatically: its Rollback's name.
    pub rollback: Option<String>,
    /// The outbox: one entry per receiver and event.
    pub notifications: Vec<NotificationView>,
    /// While baking (and after): when the bake period ends.
    pub bake_until: Option<String>,
}

/// `status.notifications[]` of a finished request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NotificationView {
    pub receiver: String,
    pub event: String,
    pub event_id: String,
    pub time: String,
    pub state: String,
    pub attempts: i64,
    pub last_attempt: Option<String>,
    pub last_error: Option<String>,
}

impl DeployStatus {
    pub fn condition(&self, type_: &str) -> Option<&ConditionView> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// `status` of the condition `type_`, empty when absent.
    pub fn condition_status(&self, type_: &str) -> &str {
        self.condition(type_).map(|c| c.status.as_str()).unwrap_or("")
    }

    pub fn ready_reason(&self) -> &str {
        self.condition("Ready").map(|c| c.reason.as_str()).unwrap_or("")
    }

    pub fn ready_message(&self) -> &str {
        self.condition("Ready").map(|c| c.message.as_str()).unwrap_or("")
    }

    pub fn phase(&self) -> &str {
        self.phase.as_deref().unwrap_or("")
    }

    /// Done for good: Ready True (Succeeded, UpToDate), Stalled True (a refusal or a failure),
    /// or a terminal phase.
    pub fn is_finished(&self) -> bool {
        self.condition_status("Ready") == "True"
            || self.condition_status("Stalled") == "True"
            || matches!(self.phase(), "Succeeded" | "Failed" | "RolledBack")
    }

    /// The last record of step `name`.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().rev().find(|s| s.name == name)
    }

    /// The record of step `name`, or an error showing every step.
    pub fn require_step(&self, name: &str) -> anyhow::Result<&StepRecord> {
        self.step(name).with_context(|| format!("no {name} step in {:#?}", self.steps))
    }

    /// How many records of step `name` there are.
    pub fn step_count(&self, name: &str) -> usize {
        self.steps.iter().filter(|s| s.name == name).count()
    }

    /// The outbox entry of `receiver` for `event`.
    pub fn notification(&self, receiver: &str, event: &str) -> Option<&NotificationView> {
        self.notifications.iter().find(|n| n.receiver == receiver && n.event == event)
    }

    /// Did step `name` run (a record that is not `Skipped`)?
    pub fn ran(&self, name: &str) -> bool {
        self.steps.iter().any(|s| s.name == name && s.result.as_deref() != Some("Skipped"))
    }
}

/// One entry of an Environment's `status.current` / `status.history`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReleaseView {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub commit: String,
    pub migration: Option<String>,
    pub images: BTreeMap<String, String>,
    pub deployed_by: Option<String>,
    pub deployed_at: Option<String>,
    pub result: Option<String>,
    pub untracked: Option<bool>,
    /// A Rollback's reason.
    pub reason: Option<String>,
    pub requested_by: Option<String>,
    /// Playbook gates waived by `policy.waive` that found something in this release.
    pub waived: Vec<String>,
    /// A restart's services.
    pub restarted: Vec<String>,
    /// Its rollback was rehearsed (`policy.rehearseRollback`).
    pub rollback_tested: bool,
}

/// `status` of an Environment (the deploy path's fields and the conditions).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvironmentStatus {
    pub conditions: Vec<ConditionView>,
    pub current: Option<ReleaseView>,
    pub active_deploy: Option<String>,
    /// Waiting requests, oldest first; kept as JSON so that a name or an object both read.
    pub queue: Vec<Value>,
    pub history: Vec<ReleaseView>,
    /// Quarantined commits (`commit`, `ref`, ...).
    pub quarantined: Vec<Value>,
}

impl EnvironmentStatus {
    /// The queue's entries as text (an entry that is an object, as its JSON).
    pub fn queue_entries(&self) -> Vec<String> {
        self.queue.iter().map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())).collect()
    }

    /// Where in the queue the request `name` waits (0 = next), matched as a whole name.
    pub fn queue_index(&self, name: &str) -> Option<usize> {
        self.queue_entries().iter().position(|e| names(e, name))
    }

    /// The `ref`s of the history, newest first.
    pub fn history_refs(&self) -> Vec<&str> {
        self.history.iter().map(|r| r.ref_.as_str()).collect()
    }
}

/// Does `text` (a queue entry such as `DeployRequest/<name>/<uid>`, a bare name, or an object's
/// JSON) name the object `name`, not merely contain it?
fn names(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    text.match_indices(name).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// An object as read back: its identity and its status.
#[derive(Debug, Clone)]
pub struct Observed<S> {
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub created: String,
    pub status: S,
}

impl<S: for<'de> Deserialize<'de> + Default> Observed<S> {
    pub fn from_object(object: &Value) -> anyhow::Result<Observed<S>> {
        let meta = &object["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let status = match object.get("status") {
            Some(s) if !s.is_null() => {
                serde_json::from_value(s.clone()).with_context(|| format!("reading status {s:#}"))?
            }
            _ => S::default(),
        };
        Ok(Observed {
            kind: text(&object["kind"]),
            name: text(&meta["name"]),
            uid: text(&meta["uid"]),
            created: text(&meta["creationTimestamp"]),
            status,
        })
    }
}

/// A host and a compose project of a test's own on it, plus the fixture origin it clones.
#[derive(Clone)]
pub struct Site {
    pub host: TestHost,
    pub project: TestProject,
    /// `file://` URL of the fixture repository (shop and ticker tags).
    pub origin: String,
    shell: Arc<HostShell>,
}

impl Site {
    /// Connects to host `index` of the sandbox and names a project `swt-<prefix>-...` on it.
    pub fn new(sandbox: &Path, index: u32, prefix: &str) -> anyhow::Result<Site> {
        let host = TestHost::load(sandbox, index)?;
        let origin = shop_origin(&host)?;
        let shell = Arc::new(HostShell::connect(&host)?);
        let project = shell.block_on(TestProject::new(&shell.conn()?, prefix))?;
        Ok(Site { host, project, origin, shell })
    }

    /// Runs `argv` on the host; a non-zero exit is an error carrying stderr. Returns stdout.
    pub fn run(&self, argv: &[&str]) -> anyhow::Result<String> {
        self.shell.run(argv)
    }

    /// Runs `argv` on the host, whatever its exit status.
    pub fn output(&self, argv: &[&str]) -> anyhow::Result<CommandOutput> {
        self.shell.output(argv)
    }

    /// The full commit id `rev` (a tag, branch or commit) names in the fixture repository.
    pub fn commit_of(&self, rev: &str) -> anyhow::Result<String> {
        // the sandbox's own build of it (`origin` is a copy owned by the deploy user, which git
        // would refuse to read for anyone else: "dubious ownership")
        let repo = self.host.sandbox.join("origin/shop.git");
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .output()?;
        if !out.status.success() {
            bail!("{rev} is not in {}: {}", repo.display(), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    }

    /// The checkout's HEAD on the host.
    pub fn head(&self) -> anyhow::Result<String> {
        Ok(self.run(&["git", "-C", &self.project.dir, "rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// sha256 of the `.env` the deploy wrote on the host.
    pub fn env_file_sha256(&self) -> anyhow::Result<String> {
        let out = self.run(&["sha256sum", &format!("{}/.env", self.project.dir)])?;
        Ok(out.split_whitespace().next().context("sha256sum printed nothing")?.to_owned())
    }

    /// Full ids of the project's running containers, sorted.
    pub fn container_ids(&self) -> anyhow::Result<Vec<String>> {
        let project = format!("label=com.docker.compose.project={}", self.project.name);
        let out = self.run(&["docker", "ps", "-q", "--no-trunc", "--filter", &project])?;
        let mut ids: Vec<String> = out.split_whitespace().map(str::to_owned).collect();
        ids.sort();
        Ok(ids)
    }

    /// The id of the running (not one-off) container of `service`.
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let out = self.run(&[
            "docker",
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project.name),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
            "--filter",
            "label=com.docker.compose.oneoff=False",
        ])?;
        let ids: Vec<&str> = out.split_whitespace().collect();
        match ids.as_slice() {
            [id] => Ok((*id).to_owned()),
            _ => bail!("expected one running {service} container in {}, found {ids:?}", self.project.name),
        }
    }

    /// Service name -> health (`healthy`, `unhealthy`, `starting`, or `none` without a
    /// healthcheck) of the project's running containers.
    pub fn health_by_service(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let ids = self.container_ids()?;
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut argv = vec![
            "docker",
            "inspect",
            "-f",
            r#"{{index .Config.Labels "com.docker.compose.service"}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"#,
        ];
        argv.extend(ids.iter().map(String::as_str));
        let out = self.run(&argv)?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(service, health)| (service.to_owned(), health.trim().to_owned()))
            .collect())
    }

    /// Runs `argv` in the running container of `service` (`docker exec`); returns stdout.
    pub fn exec(&self, service: &str, argv: &[&str]) -> anyhow::Result<String> {
        let container = self.container(service)?;
        let mut full = vec!["docker", "exec", container.as_str()];
        full.extend_from_slice(argv);
        self.run(&full)
    }

    /// One SQL statement through `psql` in the shop's db container (user and database `shop`);
    /// unaligned, tuples only, trimmed.
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        Ok(self
            .exec("db", &["psql", "-U", "shop", "-d", "shop", "-v", "ON_ERROR_STOP=1", "-tAc", sql])?
            .trim()
            .to_owned())
    }

    /// `GET path` on the shop backend, from inside its container.
    pub fn backend_get(&self, path: &str) -> anyhow::Result<String> {
        self.exec("backend", &["curl", "-fsS", &format!("http://127.0.0.1:8000{path}")])
    }

    /// Does `path` exist on the host?
    pub fn exists(&self, path: &str) -> anyhow::Result<bool> {
        Ok(self.output(&["test", "-e", path])?.success())
    }

    /// An origin of this site's own (`<dir>-origin.git`, a bare copy of [`Site::origin`]) that
    /// [`Site::release`] adds commits to; its `file://` URL, for `EnvironmentManifest::origin`.
    pub fn own_origin(&self) -> anyhow::Result<String> {
        let dir = &self.project.dir;
        let (origin, work) = (format!("{dir}-origin.git"), format!("{dir}-work"));
        self.run(&["git", "clone", "-q", "--bare", &self.origin, &origin])?;
        self.run(&["git", "clone", "-q", &origin, &work])?;
        Ok(format!("file://{origin}"))
    }

    /// Commits `files` (path, content; `.gitignore` does not hold them back) over `base` in the
    /// site's own origin ([`Site::own_origin`]) and tags the commit `tag`; returns the commit.
    pub fn release(&self, tag: &str, base: &str, files: &[(&str, &str)]) -> anyhow::Result<String> {
        const SCRIPT: &str = r#"set -eu
work=$1 base=$2 tag=$3
shift 3
cd "$work"
git -c advice.detachedHead=false checkout -q --force "$base^{commit}"
while [ $# -gt 1 ]; do
  mkdir -p "$(dirname "$1")"
  printf '%s' "$2" > "$1"
  shift 2
done
git add -A -f
git -c user.name=e2e -c user.email=e2e@slipway.test commit -q -m "$tag"
git tag "$tag"
git push -q origin "refs/tags/$tag"
git rev-parse HEAD
"#;
        let work = format!("{}-work", self.project.dir);
        let mut argv = vec!["sh", "-c", SCRIPT, "release", work.as_str(), base, tag];
        for (path, content) in files {
            argv.extend([*path, *content]);
        }
        Ok(self.run(&argv)?.trim().to_owned())
    }

    /// Removes the project: compose down, the label sweep, its work dir and its host-job runs
    /// (`~/.slipway/<project>`). Errors are printed: cleanup must not hide the test's result.
    pub fn clean_up(&self) {
        match self.shell.conn() {
            Ok(conn) => self.shell.block_on(self.project.cleanup(&conn)),
            Err(e) => eprintln!("cleanup of {}: {e:#}", self.project.name),
        }
        let dir = &self.project.dir;
        if let Err(e) = self.run(&["rm", "-rf", &format!("{dir}-origin.git"), &format!("{dir}-work")]) {
            eprintln!("cleanup of {dir}'s own origin: {e}");
        }
        if let Some((home, _)) = self.project.dir.rsplit_once("/slipway-e2e/") {
            let runs = format!("{home}/.slipway/{}", self.project.name);
            if let Err(e) = self.run(&["rm", "-rf", &runs]) {
                eprintln!("cleanup of {runs}: {e}");
            }
        }
    }
}

/// A blocking SSH shell on one test host, over the controller's own remote layer. Its master
/// exits after ten minutes without a session (as the controller's do): a test that waits longer
/// than that (a benchmark) would lose it, so each command first checks it and connects again.
struct HostShell {
    runtime: tokio::runtime::Runtime,
    host: TestHost,
    kept: std::sync::Mutex<Kept>,
}

/// The shell's master, and the last failure to connect again (so that callers which waited on
/// it share its outcome instead of each running the whole series of tries again).
struct Kept {
    conn: Option<HostConnection>,
    failed: Option<(Instant, String)>,
}

impl HostShell {
    /// Tries per connect; only an unreachable host is tried again (a refused key never is).
    const TRIES: u32 = 3;

    fn connect(host: &TestHost) -> anyhow::Result<HostShell> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let shell =
            HostShell { runtime, host: host.clone(), kept: std::sync::Mutex::new(Kept { conn: None, failed: None }) };
        let conn = shell.dial()?;
        shell.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner).conn = Some(conn);
        Ok(shell)
    }

    /// A new master. A machine under load (P3 at N=50: fifty masters connecting again at once,
    /// the load average at 80 to 100) took more than the tests' 10 s to answer a handshake,
    /// three times over: here the handshake gets 35 s, and an unreachable host is tried again
    /// after a pause with jitter (so that fifty shells do not try again in step).
    fn dial(&self) -> anyhow::Result<HostConnection> {
        let options = ConnectOptions { connect_timeout: Duration::from_secs(30), ..crate::hosts::test_options() };
        let mut attempt = 1;
        loop {
            match self.block_on(self.host.connect_with(options.clone())) {
                Ok(conn) => return Ok(conn),
                Err(e) if attempt < Self::TRIES && unreachable(&e) => {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos());
                    let pause =
                        Duration::from_secs(2 * u64::from(attempt)) + Duration::from_millis(u64::from(nanos % 2000));
                    eprintln!("[e2e] {e:#} (attempt {attempt} of {}); connecting again in {pause:.1?}", Self::TRIES);
                    std::thread::sleep(pause);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A handle on a live master: the one kept, or a new one if it exited.
    fn conn(&self) -> anyhow::Result<HostConnection> {
        let asked = Instant::now();
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // a connect that failed while this caller waited for the lock is its answer too
        if let Some((at, error)) = &kept.failed
            && *at >= asked
        {
            anyhow::bail!("connecting again failed while this call waited for it: {error}");
        }
        // bounded: a master that hangs rather than exits counts as gone
        let alive = |conn: &HostConnection| {
            // the timer is made inside the runtime (it needs its clock)
            self.block_on(async { tokio::time::timeout(Duration::from_secs(5), conn.check()).await })
                .is_ok_and(|r| r.is_ok())
        };
        if let Some(conn) = kept.conn.as_ref()
            && alive(conn)
        {
            return Ok(conn.share());
        }
        if let Some(dead) = kept.conn.take() {
            let _ = self.block_on(dead.close());
        }
        match self.dial() {
            Ok(conn) => {
                let handle = conn.share();
                kept.conn = Some(conn);
                kept.failed = None;
                Ok(handle)
            }
            Err(e) => {
                kept.failed = Some((Instant::now(), format!("{e:#}")));
                Err(e)
            }
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn command(argv: &[&str]) -> anyhow::Result<RemoteCommand> {
        let (program, args) = argv.split_first().context("empty command")?;
        Ok(RemoteCommand::new(*program).args(args.iter().copied()).timeout(Duration::from_secs(120)))
    }

    fn output(&self, argv: &[&str]) -> anyhow::Result<CommandOutput> {
        let conn = self.conn()?;
        Ok(self.block_on(conn.output(&Self::command(argv)?))?)
    }

    fn run(&self, argv: &[&str]) -> anyhow::Result<String> {
        let conn = self.conn()?;
        let out = self.block_on(conn.run(&Self::command(argv)?)).with_context(|| argv.join(" "))?;
        Ok(out.stdout())
    }
}

/// Whether connecting failed because the host did not answer (worth another try), not because
/// it refused the key or its host key is not the pinned one.
fn unreachable(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<RemoteError>(), Some(RemoteError::Unreachable { .. }))
}

impl Drop for HostShell {
    fn drop(&mut self) {
        let kept = self.kept.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).conn.take();
        if let Some(conn) = kept {
            let _ = self.runtime.block_on(conn.close());
        }
    }
}

/// One deploy test: its namespace and controller, and the sites it deploys to.
pub struct DeployTest {
    pub cluster: TestCluster,
    pub sandbox: std::path::PathBuf,
    sites: Vec<Site>,
}

impl DeployTest {
    /// A fresh namespace `<prefix>-...` with a controller of its own watching it.
    pub fn start(sandbox: &Path, prefix: &str) -> anyhow::Result<DeployTest> {
        let mut test = DeployTest::without_controller(sandbox, prefix)?;
        test.cluster.start_controller()?;
        Ok(test)
    }

    /// A fresh namespace whose controller the test starts itself (`cluster.start_controller`),
    /// for instance once it has stored what the controller must find, or from the image, or
    /// several of them.
    pub fn without_controller(sandbox: &Path, prefix: &str) -> anyhow::Result<DeployTest> {
        let cluster = TestCluster::new(sandbox, prefix)?;
        Ok(DeployTest { cluster, sandbox: sandbox.to_owned(), sites: Vec::new() })
    }

    /// A project of this test's own on host `index` (1..=3), removed when the test ends.
    pub fn site(&mut self, index: u32, prefix: &str) -> anyhow::Result<Site> {
        let site = Site::new(&self.sandbox, index, prefix)?;
        self.sites.push(site.clone());
        Ok(site)
    }

    /// Creates the SSH Secret (once per name), the env Secret and the Environment. Both Secrets
    /// carry the opt-in label `slipway.dev/secret=true`.
    pub fn create_environment(&self, env: &EnvironmentManifest) -> anyhow::Result<()> {
        let exists = self.cluster.kubectl(&["get", "secret", &env.ssh_secret])?.status.success();
        if !exists {
            self.cluster.kubectl_ok(&[
                "create",
                "secret",
                "generic",
                &env.ssh_secret,
                &format!("--from-file=id_ed25519={}", env.host.key_path.display()),
                &format!("--from-file=known_hosts={}", env.host.known_hosts_path.display()),
            ])?;
            self.label_secret(&env.ssh_secret)?;
        }
        let values: Vec<(&str, &str)> = env.env_values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.cluster.secret(&env.env_secret, &values)?;
        self.label_secret(&env.env_secret)?;
        if !env.notifications.is_empty() {
            let urls: Vec<(&str, &str)> = env.notifications.iter().map(|n| (n.name.as_str(), n.url.as_str())).collect();
            self.cluster.secret(&env.hooks_secret(), &urls)?;
            self.label_secret(&env.hooks_secret())?;
        }
        self.cluster.apply(&env.to_json().to_string())?;
        Ok(())
    }

    fn label_secret(&self, name: &str) -> anyhow::Result<()> {
        self.cluster.kubectl_ok(&["label", "--overwrite", "secret", name, "slipway.dev/secret=true"])?;
        Ok(())
    }

    /// `kubectl patch environment <name> --type=merge -p <patch>`.
    pub fn patch_environment(&self, name: &str, patch: &Value) -> anyhow::Result<()> {
        self.cluster.kubectl_ok(&["patch", "environment", name, "--type=merge", "-p", &patch.to_string()])?;
        Ok(())
    }

    /// Creates the DeployRequest, as requested by the admin kubeconfig's user unless it names
    /// someone (the API server admits `slipway.dev/requested-by` only from that user).
    pub fn deploy(&self, request: &DeployRequestManifest) -> anyhow::Result<()> {
        let mut request = request.clone();
        if request.requested_by.is_none() {
            request.requested_by = Some(self.cluster.user()?);
        }
        self.cluster.apply(&request.to_json().to_string())?;
        Ok(())
    }

    /// Deletes the DeployRequest `name` and waits until it is gone.
    pub fn delete_deploy(&self, name: &str) -> anyhow::Result<()> {
        self.cluster.kubectl_ok(&["delete", "deployrequest", name, "--wait=true", "--timeout=120s"])?;
        Ok(())
    }

    /// Every object named (`kind/name` or a kind for all of them), as JSON.
    pub fn get_json(&self, objects: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut args = vec!["get"];
        args.extend_from_slice(objects);
        args.extend(["-o", "json"]);
        let value: Value = serde_json::from_str(&self.cluster.kubectl_ok(&args)?)?;
        Ok(match value["items"].as_array() {
            Some(items) if value["kind"].as_str().is_some_and(|k| k.ends_with("List")) => items.clone(),
            _ => vec![value],
        })
    }

    pub fn deploy_request(&self, name: &str) -> anyhow::Result<Observed<DeployStatus>> {
        self.request(DEPLOY_REQUEST, name)
    }

    /// A DeployRequest or Rollback (`kind` as kubectl spells it: `deployrequest`, `rollback`):
    /// both have the same status shape.
    pub fn request(&self, kind: &str, name: &str) -> anyhow::Result<Observed<DeployStatus>> {
        let object = self.get_json(&[&format!("{kind}/{name}")])?;
        Observed::from_object(&object[0])
    }

    pub fn environment(&self, name: &str) -> anyhow::Result<Observed<EnvironmentStatus>> {
        let object = self.get_json(&[&format!("environment/{name}")])?;
        Observed::from_object(&object[0])
    }

    /// A counter with a `source` label (`host`, `cache`) as the controller's `/metrics` shows it,
    /// e.g. `slipway_monitor_compose_config_total`: (from the host, from the cache).
    pub fn by_source(&self, metric: &str) -> (u64, u64) {
        let (_, metrics) = self.cluster.controller_get("/metrics").unwrap();
        let count = |source: &str| -> u64 {
            let prefix = format!("{metric}{{source=\"{source}\"}} ");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        (count("host"), count("cache"))
    }

    /// The Environment once it released its lock: a request writes its own Succeeded first and
    /// records its release in the Environment with the lock's release, one write later.
    pub fn environment_released(&self, name: &str) -> anyhow::Result<Observed<EnvironmentStatus>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let env = self.environment(name)?;
            if env.status.active_deploy.is_none() || Instant::now() > deadline {
                return Ok(env);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates the Rollback, as requested by the admin kubeconfig's user unless it names someone.
    pub fn rollback(&self, rollback: &RollbackManifest) -> anyhow::Result<()> {
        let mut rollback = rollback.clone();
        if rollback.requested_by.is_none() {
            rollback.requested_by = Some(self.cluster.user()?);
        }
        self.cluster.apply(&rollback.to_json().to_string())?;
        Ok(())
    }

    /// Polls the DeployRequest until it is finished ([`DeployStatus::is_finished`]).
    pub fn wait_finished(&self, name: &str, timeout: Duration) -> anyhow::Result<DeployStatus> {
        self.wait_request_finished(DEPLOY_REQUEST, name, timeout)
    }

    /// [`DeployTest::wait_finished`] for either kind.
    pub fn wait_request_finished(&self, kind: &str, name: &str, timeout: Duration) -> anyhow::Result<DeployStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.request(kind, name)?.status;
            if status.is_finished() {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("{kind} {name} not finished within {timeout:?}\n{}", self.describe_request(kind, name));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until the DeployRequest is finished with Ready's reason `reason` (`Succeeded`,
    /// `UpToDate`, or a refusal or failure); any other ending is an error showing the request.
    pub fn expect_outcome(&self, name: &str, reason: &str, timeout: Duration) -> anyhow::Result<DeployStatus> {
        self.expect_request_outcome(DEPLOY_REQUEST, name, reason, timeout)
    }

    /// [`DeployTest::expect_outcome`] for either kind.
    pub fn expect_request_outcome(
        &self,
        kind: &str,
        name: &str,
        reason: &str,
        timeout: Duration,
    ) -> anyhow::Result<DeployStatus> {
        let status = self.wait_request_finished(kind, name, timeout)?;
        if status.ready_reason() != reason {
            bail!(
                "{kind} {name} ended with Ready reason {:?}, expected {reason:?}\n{}",
                status.ready_reason(),
                self.describe_request(kind, name)
            );
        }
        Ok(status)
    }

    /// Polls (every 100 ms) until the DeployRequest's phase is `phase`; an error when it
    /// finishes first.
    pub fn wait_phase(&self, name: &str, phase: &str, timeout: Duration) -> anyhow::Result<DeployStatus> {
        self.wait_request_phase(DEPLOY_REQUEST, name, phase, timeout)
    }

    /// [`DeployTest::wait_phase`] for either kind.
    pub fn wait_request_phase(
        &self,
        kind: &str,
        name: &str,
        phase: &str,
        timeout: Duration,
    ) -> anyhow::Result<DeployStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.request(kind, name)?.status;
            if status.phase() == phase {
                return Ok(status);
            }
            if status.is_finished() {
                bail!("{kind} {name} finished without being seen in {phase}\n{}", self.describe_request(kind, name));
            }
            if Instant::now() > deadline {
                bail!("{kind} {name} not in {phase} within {timeout:?}\n{}", self.describe_request(kind, name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The request's YAML, its Environment's status and the controller's last log lines, for
    /// failure messages.
    pub fn describe(&self, name: &str) -> String {
        self.describe_request(DEPLOY_REQUEST, name)
    }

    /// [`DeployTest::describe`] for either kind.
    pub fn describe_request(&self, kind: &str, name: &str) -> String {
        let dr = self
            .cluster
            .kubectl_ok(&["get", kind, name, "-o", "yaml"])
            .unwrap_or_else(|e| format!("(kubectl get failed: {e})"));
        let env = dr
            .lines()
            .find_map(|l| l.trim().strip_prefix("environment: "))
            .and_then(|e| self.cluster.kubectl_ok(&["get", "environment", e.trim(), "-o", "jsonpath={.status}"]).ok())
            .unwrap_or_default();
        let log = self.cluster.controller_log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- {kind}/{name}:\n{dr}\n--- its environment's status:\n{env}\n--- controller log (last lines):\n{}",
            tail.join("\n")
        )
    }

    /// Everything Slipway wrote that a user can read: the namespace's Environments,
    /// DeployRequests and events as YAML, and the controller's log (to look for leaked secrets).
    pub fn everything_written(&self) -> String {
        let mut all = String::new();
        for kind in ["environments", "deployrequests", "rollbacks", "events"] {
            all.push_str(&self.cluster.kubectl_ok(&["get", kind, "-o", "yaml"]).unwrap_or_default());
        }
        all.push_str(&self.cluster.controller_log());
        all
    }
}

impl Drop for DeployTest {
    fn drop(&mut self) {
        // the controller first: it must not start anything on a host being cleaned
        self.cluster.stop_controller(Duration::from_secs(10));
        for site in &self.sites {
            site.clean_up();
        }
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp such as Kubernetes writes
/// (`2025-01-06T10:00:00Z`, with an optional fraction, `Z` or a `+01:00` offset).
pub fn rfc3339_nanos(text: &str) -> anyhow::Result<i128> {
    let bad = || anyhow!("not an RFC 3339 timestamp: {text:?}");
    let (date, time) = text.split_once(['T', 't', ' ']).ok_or_else(bad)?;
    let field = |s: &str, len: usize| -> anyhow::Result<i64> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(s.parse()?)
    };
    let [year, month, day] = split3(date, '-').ok_or_else(bad)?;
    let (year, month, day) = (field(year, 4)?, field(month, 2)?, field(day, 2)?);
    let (clock, offset_seconds) = match time.strip_suffix(['Z', 'z']) {
        Some(clock) => (clock, 0),
        None => {
            let at = time.rfind(['+', '-']).ok_or_else(bad)?;
            let (clock, offset) = time.split_at(at);
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let (h, m) = offset[1..].split_once(':').ok_or_else(bad)?;
            (clock, sign * (field(h, 2)? * 3600 + field(m, 2)? * 60))
        }
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let [h, m, s] = split3(hms, ':').ok_or_else(bad)?;
    let seconds = field(h, 2)? * 3600 + field(m, 2)? * 60 + field(s, 2)?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || (clock.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    let nanos: i128 = format!("{:0<9}", &fraction[..fraction.len().min(9)]).parse()?;
    let days = days_from_civil(year, month, day);
    Ok(i128::from(days * 86_400 + seconds - offset_seconds) * 1_000_000_000 + nanos)
}

fn split3(text: &str, sep: char) -> Option<[&str; 3]> {
    let mut parts = text.split(sep);
    let three = [parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(three)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_host_is_tried_again() {
        let host = || "host1".to_owned();
        let wrapped = |e: RemoteError| anyhow::Error::new(e).context("connecting to host1 (127.0.0.11:2201)");
        assert!(unreachable(&wrapped(RemoteError::Unreachable {
            host: host(),
            detail: "no SSH handshake within 35s".into()
        })));
        assert!(!unreachable(&wrapped(RemoteError::HostKeyMismatch { host: host(), detail: "changed".into() })));
        assert!(!unreachable(&wrapped(RemoteError::HostKeyNotPinned { host: host(), detail: "no line".into() })));
        assert!(!unreachable(&wrapped(RemoteError::AuthenticationFailed {
            host: host(),
            user: "slipway".into(),
            detail: "denied".into()
        })));
        assert!(!unreachable(&anyhow!("reading /nonexistent/known_hosts")));
    }

    #[test]
    fn rfc3339_timestamps_order_as_instants() {
        assert_eq!(rfc3339_nanos("1970-01-01T00:00:00Z").unwrap(), 0);
        // `date -u -d 2025-01-06T10:00:00Z +%s`
        assert_eq!(rfc3339_nanos("2025-01-06T10:00:00Z").unwrap(), 1_736_157_600 * 1_000_000_000);
        assert_eq!(rfc3339_nanos("2024-02-29T23:59:59Z").unwrap(), 1_709_251_199 * 1_000_000_000);
        assert_eq!(rfc3339_nanos("2025-01-06T11:00:00+01:00").unwrap(), rfc3339_nanos("2025-01-06T10:00:00Z").unwrap());
        assert_eq!(rfc3339_nanos("2025-01-06T09:30:00-00:30").unwrap(), rfc3339_nanos("2025-01-06T10:00:00Z").unwrap());
        // a fraction is later than the whole second (plain string order says otherwise)
        assert!(rfc3339_nanos("2025-01-06T10:00:00.5Z").unwrap() > rfc3339_nanos("2025-01-06T10:00:00Z").unwrap());
        assert_eq!(
            rfc3339_nanos("2025-01-06T10:00:00.123456Z").unwrap() - rfc3339_nanos("2025-01-06T10:00:00Z").unwrap(),
            123_456_000
        );
        for bad in ["", "2025-01-06", "2025-1-06T10:00:00Z", "2025-01-06T10:00Z", "2025-01-06T10:00:00.Z", "now"] {
            assert!(rfc3339_nanos(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn queue_entries_match_whole_names() {
        let status = EnvironmentStatus {
            queue: vec![json!("DeployRequest/deploy-b/0c1d"), json!({"name": "deploy-a", "position": 2})],
            ..EnvironmentStatus::default()
        };
        assert_eq!(status.queue_index("deploy-b"), Some(0));
        assert_eq!(status.queue_index("deploy-a"), Some(1));
        assert_eq!(status.queue_index("deploy"), None);
        assert_eq!(status.queue_index("b"), None);
    }

    #[test]
    fn manifests_are_what_a_user_writes() {
        let request = DeployRequestManifest::tag("r", "staging", "v1.1.0").without_issue().direct().forced();
        assert_eq!(
            request.to_json()["spec"],
            json!({"environment": "staging", "revision": {"tag": "v1.1.0"}, "mode": "Direct", "force": true})
        );
        let request = DeployRequestManifest::tag("r", "staging", "v1.1.0").requested_by("alice").approved_by("carol");
        assert_eq!(request.to_json()["spec"]["issue"], "#7");
        assert_eq!(
            request.to_json()["metadata"],
            json!({"name": "r", "annotations": {"slipway.dev/requested-by": "alice", "slipway.dev/approved-by": "carol"}})
        );
        assert!(request.to_json()["spec"].get("mode").is_none());
        assert_eq!(DeployRequestManifest::tag("r", "staging", "v1").to_json()["metadata"], json!({"name": "r"}));
    }
}
