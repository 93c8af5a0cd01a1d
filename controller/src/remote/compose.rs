//! docker compose on the host: v2 (`docker compose`) where present, else v1 (`docker-compose`),
//! detected once per connection and driven with `-p project -f files...` from the work tree.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::command::RemoteCommand;
use super::error::RemoteError;
use super::exec::{CommandOutput, Exec};
use super::validate;

/// Which compose CLI the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeFlavor {
    /// The `docker compose` plugin.
    V2,
    /// The standalone Python `docker-compose`.
    V1,
}

impl ComposeFlavor {
    fn base(self) -> RemoteCommand {
        match self {
            ComposeFlavor::V2 => RemoteCommand::new("docker").arg("compose"),
            ComposeFlavor::V1 => RemoteCommand::new("docker-compose"),
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            ComposeFlavor::V2 => "docker compose",
            ComposeFlavor::V1 => "docker-compose",
        }
    }
}

/// A compose project on a host: its work tree, project name and compose files (relative to
/// the work tree).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeProject {
    pub dir: String,
    pub name: String,
    pub files: Vec<String>,
}

impl ComposeProject {
    pub fn new(dir: impl Into<String>, name: impl Into<String>, files: Vec<String>) -> Self {
        Self { dir: dir.into(), name: name.into(), files }
    }

    pub fn validate(&self) -> Result<(), RemoteError> {
        validate::host_path("compose project directory", &self.dir)?;
        validate::project_name(&self.name)?;
        if self.files.is_empty() {
            return Err(RemoteError::invalid("compose files", "at least one compose file is required"));
        }
        for f in &self.files {
            validate::compose_file(f)?;
        }
        Ok(())
    }
}

/// Default limit for build, up, run and down (image builds are slow).
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What `compose config` says about one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub image: Option<String>,
    pub build: bool,
    /// `None`: the compose file declares no healthcheck (the image may still have one).
    pub healthcheck: Option<HealthcheckConfig>,
    pub profiles: Vec<String>,
    pub restart: Option<String>,
    /// Labelled `slipway.dev/one-shot: "true"`: runs to completion (exit 0) instead of serving.
    pub one_shot: bool,
}

/// Label that marks a compose service as one-shot: it needs no healthcheck and must exit 0.
pub const ONE_SHOT_LABEL: &str = "slipway.dev/one-shot";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckConfig {
    /// `disable: true` or `test: ["NONE"]`.
    pub disabled: bool,
    pub test: Vec<String>,
    pub start_period: Option<Duration>,
    pub interval: Option<Duration>,
}

impl ServiceConfig {
    pub fn has_healthcheck(&self) -> bool {
        self.healthcheck.as_ref().is_some_and(|h| !h.disabled)
    }

    /// Started by a plain `up` (services behind a profile are not) and meant to keep running.
    pub fn is_long_running(&self) -> bool {
        self.profiles.is_empty() && !self.one_shot
    }
}

/// The validated, fully resolved compose model (services only; secrets in it are not kept).
/// Services are boxed: a map node holds room for eleven entries, and the monitor keeps one model
/// per Environment (benchmark P5: 2.4 kB per one-service model unboxed, 0.6 kB boxed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComposeConfig {
    pub services: BTreeMap<String, Box<ServiceConfig>>,
}

impl ComposeConfig {
    pub fn long_running_services(&self) -> Vec<String> {
        self.services.values().filter(|s| s.is_long_running()).map(|s| s.name.clone()).collect()
    }

    /// Services started by `up` that run to completion (labelled one-shot).
    pub fn one_shot_services(&self) -> Vec<String> {
        self.services.values().filter(|s| s.profiles.is_empty() && s.one_shot).map(|s| s.name.clone()).collect()
    }

    /// Long-running services whose compose definition has no (enabled) healthcheck.
    pub fn services_without_healthcheck(&self) -> Vec<String> {
        self.services.values().filter(|s| s.is_long_running() && !s.has_healthcheck()).map(|s| s.name.clone()).collect()
    }
}

/// Parse a Go-style duration as compose prints it: `90s`, `1m30s`, `1.5s`, `500ms`, `1h`.
/// A bare integer is taken as nanoseconds (the Docker API unit). `None` for anything else,
/// including values too large for a [`Duration`] (never a panic: the text is the user's).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(ns) = s.parse::<u64>() {
        return Some(Duration::from_nanos(ns));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// An optional duration field; present but unreadable is an error naming the field.
fn duration_field(service: &str, field: &str, v: Option<&Value>) -> Result<Option<Duration>, String> {
    let parsed = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => parse_duration(s),
        Some(Value::Number(n)) => n.as_u64().map(Duration::from_nanos),
        Some(_) => None,
    };
    let shown = v.map(|v| super::error::truncate(&v.to_string(), 40)).unwrap_or_default();
    parsed
        .map(Some)
        .ok_or_else(|| format!("service {service}: healthcheck {field} {shown} is not a duration such as 30s or 1m30s"))
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The value of label `key` in a service's `labels` (a mapping, or a list of `key=value`).
pub fn label(labels: Option<&Value>, key: &str) -> Option<String> {
    match labels? {
        Value::Object(map) => map.get(key).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .find_map(|i| i.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v.to_owned())),
        _ => None,
    }
}

/// Extract the services from `compose config` output (v2 JSON or v1 YAML, both as a JSON value).
pub fn parse_compose_config(doc: &Value) -> Result<ComposeConfig, String> {
    let services = doc
        .get("services")
        .and_then(Value::as_object)
        .ok_or_else(|| "no `services` mapping in the compose model".to_owned())?;
    let mut out = ComposeConfig::default();
    for (name, svc) in services {
        let healthcheck = match svc.get("healthcheck") {
            Some(h) => {
                let test = string_list(h.get("test"));
                let disabled = h.get("disable").and_then(Value::as_bool).unwrap_or(false)
                    || test.first().map(String::as_str) == Some("NONE");
                Some(HealthcheckConfig {
                    disabled,
                    test,
                    start_period: duration_field(name, "start_period", h.get("start_period"))?,
                    interval: duration_field(name, "interval", h.get("interval"))?,
                })
            }
            None => None,
        };
        out.services.insert(
            name.clone(),
            Box::new(ServiceConfig {
                name: name.clone(),
                image: svc.get("image").and_then(Value::as_str).map(str::to_owned),
                build: svc.get("build").is_some_and(|b| !b.is_null()),
                healthcheck,
                profiles: string_list(svc.get("profiles")),
                restart: svc.get("restart").and_then(Value::as_str).map(str::to_owned),
                one_shot: label(svc.get("labels"), ONE_SHOT_LABEL).is_some_and(|v| v == "true"),
            }),
        );
    }
    Ok(out)
}

/// Parse `compose config` stdout for the given flavor.
pub fn parse_config_output(flavor: ComposeFlavor, stdout: &str) -> Result<ComposeConfig, String> {
    let doc: Value = match flavor {
        ComposeFlavor::V2 => serde_json::from_str(stdout).map_err(|e| format!("invalid JSON: {e}"))?,
        ComposeFlavor::V1 => serde_yaml::from_str(stdout).map_err(|e| format!("invalid YAML: {e}"))?,
    };
    parse_compose_config(&doc)
}

/// Which compose CLI the host has: v2 where `docker compose` works, else v1. A transport
/// failure is an error, never taken as "v1". Asked once per connection where the connection
/// keeps it (each poll of a running step would otherwise start the CLI once or twice).
pub async fn detect_flavor<E: Exec>(host: &E) -> Result<ComposeFlavor, RemoteError> {
    if let Some(known) = host.flavor_cache().and_then(|c| c.get()) {
        return Ok(*known);
    }
    let flavor = ask_flavor(host).await?;
    if let Some(cache) = host.flavor_cache() {
        let _ = cache.set(flavor);
    }
    Ok(flavor)
}

async fn ask_flavor<E: Exec>(host: &E) -> Result<ComposeFlavor, RemoteError> {
    let v2 = RemoteCommand::new("docker").args(["compose", "version", "--short"]).label("docker compose version");
    if host.output(&v2).await?.success() {
        return Ok(ComposeFlavor::V2);
    }
    let v1 = RemoteCommand::new("docker-compose").args(["version", "--short"]).label("docker-compose version");
    let out = host.output(&v1).await?;
    if out.success() {
        return Ok(ComposeFlavor::V1);
    }
    Err(RemoteError::CommandFailed {
        program: "docker compose / docker-compose".to_owned(),
        exit_code: out.exit_code(),
        stderr_tail: format!(
            "neither the `docker compose` plugin nor `docker-compose` works on {} ({}); install one of them",
            host.host(),
            out.stderr_tail()
        ),
    })
}

/// A compose project bound to a host.
pub struct Compose<'a, E: Exec> {
    host: &'a E,
    project: ComposeProject,
    flavor: ComposeFlavor,
    action_timeout: Duration,
}

impl<'a, E: Exec> Compose<'a, E> {
    /// Compose operations for `project` on `host`, detecting the CLI flavor.
    pub async fn new(host: &'a E, project: ComposeProject) -> Result<Self, RemoteError> {
        project.validate()?;
        let flavor = detect_flavor(host).await?;
        Ok(Self::with_flavor(host, project, flavor))
    }

    /// Compose operations with a flavor detected before (validate `project` first).
    pub fn with_flavor(host: &'a E, project: ComposeProject, flavor: ComposeFlavor) -> Self {
        Compose { host, project, flavor, action_timeout: DEFAULT_ACTION_TIMEOUT }
    }

    /// Limit for build, up, run and down.
    pub fn with_action_timeout(mut self, timeout: Duration) -> Self {
        self.action_timeout = timeout;
        self
    }

    pub fn flavor(&self) -> ComposeFlavor {
        self.flavor
    }

    pub fn project(&self) -> &ComposeProject {
        &self.project
    }

    /// The compose command line for `subcommand` (`-p project -f files...`, run in the work tree).
    pub fn command(&self, subcommand: &str) -> RemoteCommand {
        let mut cmd = self.flavor.base().current_dir(self.project.dir.clone()).arg("-p").arg(self.project.name.clone());
        for f in &self.project.files {
            cmd = cmd.arg("-f").arg(f.clone());
        }
        cmd.arg(subcommand).label(format!("{} {subcommand}", self.flavor.program()))
    }

    /// Validate the compose files with the rendered `.env` and return the services.
    /// The full output (which contains interpolated secrets) is parsed, never reported.
    pub async fn config(&self) -> Result<ComposeConfig, RemoteError> {
        let cmd = match self.flavor {
            ComposeFlavor::V2 => self.command("config").args(["--format", "json"]),
            ComposeFlavor::V1 => self.command("config"),
        };
        let out = self.host.output(&cmd).await?;
        if !out.success() {
            return Err(RemoteError::ComposeInvalid {
                project: self.project.name.clone(),
                detail: format!("`{}` {}", cmd.display_label(), out.stderr_tail()),
            });
        }
        parse_config_output(self.flavor, &out.stdout())
            .map_err(|detail| RemoteError::ComposeInvalid { project: self.project.name.clone(), detail })
    }

    /// `build [services]`.
    pub async fn build(&self, services: &[String]) -> Result<CommandOutput, RemoteError> {
        for s in services {
            validate::service_name(s)?;
        }
        let cmd = self.command("build").args(services.iter().cloned()).timeout(self.action_timeout);
        self.host.run(&cmd).await
    }

    /// `run --rm -T [--label k=v]... <service> <argv>`: a one-off container of the service's
    /// current image, carrying `labels` (both flavors take `--label` on `run`). Built, not run,
    /// so that a step can run it as a host job labelled with [`super::job_label`]:
    /// `JobSpec::from_command(&compose.run_command(..)?)`.
    pub fn run_command(
        &self,
        service: &str,
        argv: &[String],
        labels: &[(String, String)],
    ) -> Result<RemoteCommand, RemoteError> {
        validate::service_name(service)?;
        validate::argv("command", argv)?;
        let mut cmd = self.command("run").args(["--rm", "-T"]);
        for (k, v) in labels {
            validate::label(k, v)?;
            cmd = cmd.arg("--label").arg(format!("{k}={v}"));
        }
        Ok(cmd.arg(service).args(argv.iter().cloned()).timeout(self.action_timeout))
    }

    /// [`Compose::run_command`] without labels, run over the connection. Returns the output
    /// whatever the exit code; the caller judges it.
    pub async fn run(&self, service: &str, argv: &[String]) -> Result<CommandOutput, RemoteError> {
        let cmd = self.run_command(service, argv, &[])?;
        self.host.output(&cmd).await
    }

    /// `up -d --remove-orphans`.
    pub async fn up(&self) -> Result<CommandOutput, RemoteError> {
        let cmd = self.command("up").args(["-d", "--remove-orphans"]).timeout(self.action_timeout);
        self.host.run(&cmd).await
    }

    /// `down --remove-orphans` (and `-v` to drop named volumes).
    pub async fn down(&self, volumes: bool) -> Result<CommandOutput, RemoteError> {
        let mut cmd = self.command("down").arg("--remove-orphans");
        if volumes {
            cmd = cmd.arg("-v");
        }
        self.host.run(&cmd.timeout(self.action_timeout)).await
    }

    /// Container ids of the project (`ps -q`); details come from [`HostConnection::project_containers`].
    pub async fn ps_ids(&self) -> Result<Vec<String>, RemoteError> {
        let cmd = match self.flavor {
            ComposeFlavor::V2 => self.command("ps").args(["-a", "-q"]),
            ComposeFlavor::V1 => self.command("ps").arg("-q"),
        };
        let out = self.host.run(&cmd).await?;
        Ok(out.stdout().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// Service names of the project (`ps --services`). The flavors differ (seen with 1.29.2 and
    /// v2.29.7): v1 lists every service of the compose files (profiled ones included) whether or
    /// not it has containers, v2 only the services with a running container.
    pub async fn ps_services(&self) -> Result<Vec<String>, RemoteError> {
        let out = self.host.run(&self.command("ps").arg("--services")).await?;
        Ok(out.stdout().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
    }

    /// Last `lines` log lines of a service, redacted.
    pub async fn logs(&self, service: &str, lines: usize) -> Result<String, RemoteError> {
        validate::service_name(service)?;
        let cmd = self.command("logs").args(["--no-color", "--tail"]).arg(lines.to_string()).arg(service);
        let out = self.host.run(&cmd).await?;
        Ok(out.output_tail(lines.max(1) * 2, 64 * 1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_CONFIG: &str = r#"services:
  backend:
    build:
      context: /srv/shop/backend
    environment:
      DATABASE_URL: postgresql://shop:hunter2@db/shop
    healthcheck:
      interval: 5s
      start_period: 90s
      test:
      - CMD
      - curl
      - -f
      - http://localhost:8000/health
    image: shop-backend:dev
  db:
    healthcheck:
      test:
      - NONE
    image: postgres
  frontend:
    image: nginx
  migrate:
    image: shop-backend:dev
    profiles:
    - tools
    restart: "no"
version: '3.8'
"#;

    const V2_CONFIG: &str = r#"{
  "name": "shop",
  "services": {
    "backend": {
      "build": {"context": "/srv/shop/backend", "dockerfile": "Dockerfile"},
      "healthcheck": {"test": ["CMD-SHELL", "curl -f localhost:8000/health"], "interval": "5s", "start_period": "1m30s"},
      "image": "shop-backend:dev",
      "networks": {"default": null}
    },
    "db": {"image": "postgres", "healthcheck": {"disable": true}},
    "frontend": {"image": "nginx", "restart": "always"}
  }
}"#;

    #[test]
    fn parses_v1_yaml() {
        let c = parse_config_output(ComposeFlavor::V1, V1_CONFIG).unwrap();
        assert_eq!(c.services.keys().collect::<Vec<_>>(), ["backend", "db", "frontend", "migrate"]);
        let b = &c.services["backend"];
        assert!(b.build);
        assert!(b.has_healthcheck());
        let hc = b.healthcheck.as_ref().unwrap();
        assert_eq!(hc.start_period, Some(Duration::from_secs(90)));
        assert_eq!(hc.interval, Some(Duration::from_secs(5)));
        assert!(!c.services["db"].has_healthcheck());
        assert!(c.services["db"].healthcheck.as_ref().unwrap().disabled);
        assert!(!c.services["migrate"].is_long_running());
        assert_eq!(c.services_without_healthcheck(), ["db", "frontend"]);
        assert_eq!(c.long_running_services(), ["backend", "db", "frontend"]);
    }

    #[test]
    fn parses_v2_json() {
        let c = parse_config_output(ComposeFlavor::V2, V2_CONFIG).unwrap();
        assert_eq!(c.services.len(), 3);
        let b = &c.services["backend"];
        assert!(b.build);
        assert_eq!(b.healthcheck.as_ref().unwrap().start_period, Some(Duration::from_secs(90)));
        assert!(c.services["db"].healthcheck.as_ref().unwrap().disabled);
        assert_eq!(c.services["frontend"].restart.as_deref(), Some("always"));
        assert_eq!(c.services_without_healthcheck(), ["db", "frontend"]);
    }

    #[test]
    fn one_shot_services_need_no_healthcheck_and_are_not_long_running() {
        let doc = serde_json::json!({"services": {
            "web": {"image": "x", "healthcheck": {"test": ["CMD", "true"]}},
            "seed": {"image": "x", "labels": {"slipway.dev/one-shot": "true"}},
            "seed2": {"image": "x", "labels": ["a=b", "slipway.dev/one-shot=true"]},
            "lying": {"image": "x", "labels": {"slipway.dev/one-shot": "yes"}}
        }});
        let c = parse_compose_config(&doc).unwrap();
        assert_eq!(c.one_shot_services(), ["seed", "seed2"]);
        assert_eq!(c.long_running_services(), ["lying", "web"]);
        assert_eq!(c.services_without_healthcheck(), ["lying"]);
    }

    #[test]
    fn hostile_healthcheck_durations_are_an_error_naming_the_service() {
        let doc = serde_json::json!({"services": {"api": {"image": "x",
            "healthcheck": {"test": ["CMD", "true"], "start_period": "99999999999999999999999h"}}}});
        let err = parse_compose_config(&doc).unwrap_err();
        assert!(err.contains("service api") && err.contains("start_period"), "{err}");
        let doc = serde_json::json!({"services": {"api": {"image": "x", "healthcheck": {"interval": [1]}}}});
        assert!(parse_compose_config(&doc).unwrap_err().contains("interval"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_config_output(ComposeFlavor::V2, "not json").is_err());
        assert!(parse_config_output(ComposeFlavor::V1, "foo: [").is_err());
        assert!(parse_config_output(ComposeFlavor::V1, "version: '3'\n").is_err());
    }

    #[test]
    fn durations() {
        let cases: &[(&str, Option<f64>)] = &[
            ("90s", Some(90.0)),
            ("1m30s", Some(90.0)),
            ("1.5s", Some(1.5)),
            ("500ms", Some(0.5)),
            ("1h", Some(3600.0)),
            ("2h1m", Some(7260.0)),
            ("30000000000", Some(30.0)),
            ("", None),
            ("s", None),
            ("10x", None),
            // Hostile values from a compose file: too large, not finite. Never a panic.
            ("99999999999999999999999h", None),
            ("1e400s", None),
            ("18446744073709551616", None),
        ];
        for (input, want) in cases {
            let got = parse_duration(input).map(|d| d.as_secs_f64());
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn project_validation() {
        let p = ComposeProject::new("/srv/shop", "shop", vec!["docker-compose.yml".into()]);
        p.validate().unwrap();
        let bad = [
            ComposeProject::new("srv", "shop", vec!["a.yml".into()]),
            ComposeProject::new("/srv", "Shop", vec!["a.yml".into()]),
            ComposeProject::new("/srv", "shop", vec![]),
            ComposeProject::new("/srv", "shop", vec!["../a.yml".into()]),
            ComposeProject::new("/srv", "shop", vec!["-a.yml".into()]),
        ];
        for b in bad {
            assert!(b.validate().is_err(), "{b:?}");
        }
    }

    #[test]
    fn run_command_carries_labels_before_the_service() {
        let project = ComposeProject::new("/srv/shop", "shop", vec!["docker-compose.yml".into()]);
        let host = crate::remote::FakeHost::new();
        let argv = vec!["alembic".to_owned(), "upgrade".to_owned(), "head".to_owned()];
        let labels = vec![("slipway.dev/job".to_owned(), "shop.u1.migrate".to_owned())];
        for (flavor, program) in [(ComposeFlavor::V1, "docker-compose"), (ComposeFlavor::V2, "docker compose")] {
            let compose = Compose::with_flavor(&host, project.clone(), flavor);
            let cmd = compose.run_command("backend", &argv, &labels).unwrap();
            let mut line = vec![cmd.program().to_owned()];
            line.extend(cmd.arguments().iter().cloned());
            assert_eq!(
                line.join(" "),
                format!(
                    "{program} -p shop -f docker-compose.yml run --rm -T --label slipway.dev/job=shop.u1.migrate backend alembic upgrade head"
                )
            );
            assert_eq!(cmd.working_dir(), Some("/srv/shop"));
            assert!(compose.run_command("-backend", &argv, &labels).is_err());
            let bad = vec![("a=b".to_owned(), "x".to_owned())];
            assert!(compose.run_command("backend", &argv, &bad).is_err());
            let bad = vec![("k".to_owned(), "x\ny".to_owned())];
            assert!(compose.run_command("backend", &argv, &bad).is_err());
        }
    }

    #[test]
    fn commands_are_argv_with_project_and_files() {
        let flavor = ComposeFlavor::V1;
        let cmd = flavor.base().current_dir("/srv/shop").args(["-p", "shop", "-f", "docker-compose.yml", "up", "-d"]);
        assert_eq!(cmd.render().unwrap(), "cd -- /srv/shop && 'docker-compose' -p shop -f docker-compose.yml up -d");
        let cmd = ComposeFlavor::V2.base().arg("ps");
        assert_eq!(cmd.render().unwrap(), "'docker' compose ps");
    }
}
