//! Docker observations through the host's Docker socket, forwarded over the SAME SSH master:
//! the containers of a compose project, their state and health, image ids and digests, log
//! tails, and `exec` for health checks.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use futures::StreamExt;

use super::error::{self, RemoteError};
use super::ssh::HostConnection;
use super::validate;

pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_SERVICE: &str = "com.docker.compose.service";
pub const LABEL_ONEOFF: &str = "com.docker.compose.oneoff";

/// Seconds bollard waits for one API answer.
const DOCKER_API_TIMEOUT_SECS: u64 = 60;

/// How long an idle connection to the forwarded Docker socket is kept for the next request.
const DOCKER_IDLE: Duration = Duration::from_secs(5);

/// A Docker API client whose idle connections to the forwarded socket `path` are kept for
/// `idle` and used again: bollard's own Unix client opens one per request, and each is a new
/// channel of the SSH master and a new connection to the host's Docker socket (five per monitor
/// round). An upgraded connection (`docker exec`'s output) is never reused. The pool's timer
/// closes a connection once idle that long (without one, hyper only looks at the next request).
fn kept_alive(path: &str, idle: Duration) -> Result<Docker, bollard::errors::Error> {
    let mut builder = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    builder.pool_max_idle_per_host(2).pool_idle_timeout(idle).pool_timer(hyper_util::rt::TokioTimer::new());
    let client = std::sync::Arc::new(builder.build(ForwardedSocket(std::sync::Arc::new(path.into()))));
    Docker::connect_with_custom_transport(
        move |request: bollard::BollardRequest| {
            let client = client.clone();
            async move { client.request(request).await.map_err(bollard::errors::Error::from) }
        },
        // Every connection goes to the socket, whatever the URI names.
        Some("http://docker"),
        DOCKER_API_TIMEOUT_SECS,
        bollard::API_DEFAULT_VERSION,
    )
}

/// Connects to the forwarded Docker socket, whatever the request's URI names.
#[derive(Clone)]
struct ForwardedSocket(std::sync::Arc<std::path::PathBuf>);

impl tower::Service<hyper::Uri> for ForwardedSocket {
    type Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move { tokio::net::UnixStream::connect(path.as_path()).await.map(hyper_util::rt::TokioIo::new) })
    }
}

/// One container of a compose project, as Docker reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerObservation {
    pub id: String,
    pub name: String,
    pub service: Option<String>,
    /// A `compose run` container rather than a service container.
    pub one_off: bool,
    /// `running`, `exited`, `restarting`, `created`, ...
    pub state: String,
    pub exit_code: Option<i64>,
    pub restart_count: i64,
    /// Health status when the container has a healthcheck: `starting`, `healthy`, `unhealthy`.
    pub health: Option<String>,
    /// Last healthcheck output (truncated), useful when `unhealthy`.
    pub last_health_output: Option<String>,
    pub healthcheck_start_period: Option<Duration>,
    /// Image id (`sha256:...`) the container runs.
    pub image_id: String,
    /// Image reference from the container config (e.g. `shop-backend:latest`).
    pub image: Option<String>,
    pub started_at: Option<String>,
    /// Network name -> IP address on the host's bridge networks.
    pub ip_addresses: Vec<(String, String)>,
}

impl ContainerObservation {
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// First IP address of the container, preferring the project's default network.
    pub fn ip_address(&self) -> Option<&str> {
        self.ip_addresses
            .iter()
            .find(|(net, _)| net.ends_with("_default"))
            .or_else(|| self.ip_addresses.first())
            .map(|(_, ip)| ip.as_str())
    }
}

/// An image as Docker knows it: locally built images have an id but no repo digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

/// Result of a command run with `docker exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: Option<i64>,
    /// Combined output tail, redacted.
    pub output: String,
}

pub(crate) fn observe(inspect: ContainerInspectResponse) -> ContainerObservation {
    let labels = inspect.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
    let state = inspect.state.clone().unwrap_or_default();
    let health = state.health.as_ref().and_then(|h| match h.status {
        Some(HealthStatusEnum::STARTING) => Some("starting".to_owned()),
        Some(HealthStatusEnum::HEALTHY) => Some("healthy".to_owned()),
        Some(HealthStatusEnum::UNHEALTHY) => Some("unhealthy".to_owned()),
        _ => None,
    });
    let last_health_output = state
        .health
        .as_ref()
        .and_then(|h| h.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|r| r.output.clone())
        .map(|o| o.trim().to_owned());
    let start_period = inspect
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.start_period)
        .filter(|ns| *ns > 0)
        .map(|ns| Duration::from_nanos(ns as u64));
    let mut ip_addresses: Vec<(String, String)> = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|nets| {
            nets.iter()
                .filter_map(|(name, ep)| {
                    ep.ip_address.as_ref().filter(|ip| !ip.is_empty()).map(|ip| (name.clone(), ip.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    ip_addresses.sort();
    ContainerObservation {
        id: inspect.id.clone().unwrap_or_default(),
        name: inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_owned(),
        service: labels.get(LABEL_SERVICE).cloned(),
        one_off: labels.get(LABEL_ONEOFF).is_some_and(|v| v.eq_ignore_ascii_case("true")),
        state: state.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".to_owned()),
        exit_code: state.exit_code,
        restart_count: inspect.restart_count.unwrap_or(0),
        health,
        last_health_output,
        healthcheck_start_period: start_period,
        image_id: inspect.image.clone().unwrap_or_default(),
        image: inspect.config.as_ref().and_then(|c| c.image.clone()),
        started_at: state.started_at.clone(),
        ip_addresses,
    }
}

fn docker_err(operation: &str, e: bollard::errors::Error) -> RemoteError {
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    RemoteError::Docker { operation: operation.to_owned(), detail: error::truncate(&detail, 500) }
}

impl HostConnection {
    /// A Docker API error while the master is dead is the connection's failure, not Docker's.
    async fn honest<T>(&self, what: &str, r: Result<T, RemoteError>) -> Result<T, RemoteError> {
        match r {
            Err(e @ RemoteError::Docker { .. }) => Err(self.lost_or(what, e).await),
            other => other,
        }
    }

    /// All containers (running or not) labelled with the compose project.
    pub async fn project_containers(&self, project: &str) -> Result<Vec<ContainerObservation>, RemoteError> {
        self.honest("docker ps", self.project_containers_unchecked(project).await).await
    }

    /// Tags and digests of an image id (for release history).
    pub async fn image_info(&self, image_id: &str) -> Result<ImageInfo, RemoteError> {
        self.honest("docker image inspect", self.image_info_unchecked(image_id).await).await
    }

    /// Last `lines` lines of a container's log, redacted.
    pub async fn container_log_tail(&self, container_id: &str, lines: usize) -> Result<String, RemoteError> {
        self.honest("docker logs", self.container_log_tail_unchecked(container_id, lines).await).await
    }

    /// The last `lines` lines a container logged at or after `since` (a container's start, so
    /// lines of an earlier run of the same container do not count), redacted, without their
    /// timestamps.
    pub async fn container_log_since(
        &self,
        container_id: &str,
        since: k8s_openapi::jiff::Timestamp,
        lines: usize,
    ) -> Result<Vec<String>, RemoteError> {
        self.honest("docker logs", self.container_log_since_unchecked(container_id, since, lines).await).await
    }

    /// Run `argv` inside a running container (`docker exec`), bounded by `timeout`.
    pub async fn exec_in_container(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RemoteError> {
        self.honest("docker exec", self.exec_in_container_unchecked(container_id, argv, timeout).await).await
    }

    /// A Docker API client over the forwarded socket (created once per connection, API version
    /// negotiated with the host's daemon).
    pub async fn docker(&self) -> Result<&Docker, RemoteError> {
        self.master
            .docker
            .get_or_try_init(|| async {
                let remote = self.options().remote_docker_socket.clone();
                let local = self.forward_to_unix(&remote).await?;
                let path = local
                    .to_str()
                    .ok_or_else(|| RemoteError::Local { detail: "forwarded socket path is not UTF-8".into() })?;
                let docker = kept_alive(path, DOCKER_IDLE).map_err(|e| docker_err("connect", e))?;
                docker.negotiate_version().await.map_err(|e| {
                    let mut err = docker_err("version", e);
                    if let RemoteError::Docker { detail, .. } = &mut err {
                        detail.push_str(&format!(
                            " (can {} use {remote} on {}? it must be in the docker group)",
                            self.user(),
                            self.host()
                        ));
                    }
                    err
                })
            })
            .await
    }

    /// All containers (running or not) labelled with the compose project.
    async fn project_containers_unchecked(&self, project: &str) -> Result<Vec<ContainerObservation>, RemoteError> {
        validate::project_name(project)?;
        let docker = self.honest("docker version", self.docker().await).await?;
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec![format!("{LABEL_PROJECT}={project}")]);
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let list = docker.list_containers(Some(opts)).await.map_err(|e| docker_err("list containers", e))?;
        let mut out = Vec::with_capacity(list.len());
        for summary in list {
            let Some(id) = summary.id else { continue };
            match docker.inspect_container(&id, None).await {
                Ok(inspect) => {
                    let mut o = observe(inspect);
                    // Masked whole, then cut: a cut first could leave half a secret unmasked.
                    o.last_health_output =
                        o.last_health_output.map(|t| error::truncate(&self.redactor().redact(&t), 300));
                    out.push(o);
                }
                // Removed between list and inspect (e.g. a finished `run --rm`).
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => continue,
                Err(e) => return Err(docker_err("inspect container", e)),
            }
        }
        out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(out)
    }

    /// Tags and digests of an image id (for release history).
    async fn image_info_unchecked(&self, image_id: &str) -> Result<ImageInfo, RemoteError> {
        let docker = self.docker().await?;
        let inspect = docker.inspect_image(image_id).await.map_err(|e| docker_err("inspect image", e))?;
        Ok(ImageInfo {
            id: inspect.id.unwrap_or_else(|| image_id.to_owned()),
            repo_tags: inspect.repo_tags.unwrap_or_default(),
            repo_digests: inspect.repo_digests.unwrap_or_default(),
        })
    }

    /// Last `lines` lines of a container's log, redacted.
    async fn container_log_tail_unchecked(&self, container_id: &str, lines: usize) -> Result<String, RemoteError> {
        let docker = self.docker().await?;
        let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build();
        let mut stream = docker.logs(container_id, Some(opts));
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| docker_err("logs", e))?;
            text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
            if text.len() > 1024 * 1024 {
                text = error::tail(&text, lines, 512 * 1024);
            }
        }
        Ok(error::tail(&self.redactor().redact(&text), lines, 64 * 1024))
    }

    async fn container_log_since_unchecked(
        &self,
        container_id: &str,
        since: k8s_openapi::jiff::Timestamp,
        lines: usize,
    ) -> Result<Vec<String>, RemoteError> {
        let docker = self.docker().await?;
        // Docker's `since` is whole seconds: the lines of that second before `since` are dropped
        // here by their own timestamps.
        let seconds = i32::try_from(since.as_second()).unwrap_or(0);
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(seconds)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.logs(container_id, Some(opts));
        let mut text = String::new();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| docker_err("logs", e))?;
            text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
            if text.len() > 2 * 1024 * 1024 {
                text = error::tail(&text, lines, 1024 * 1024);
            }
        }
        let text = self.redactor().redact(&text);
        Ok(lines_since(&text, since))
    }

    /// Run `argv` inside a running container (`docker exec`), bounded by `timeout`.
    async fn exec_in_container_unchecked(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RemoteError> {
        validate::argv("exec command", argv)?;
        let docker = self.docker().await?;
        let label = argv[0].clone();
        let work = async {
            let exec = docker
                .create_exec(
                    container_id,
                    CreateExecOptions {
                        cmd: Some(argv.to_vec()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| docker_err("create exec", e))?;
            let mut text = String::new();
            if let StartExecResults::Attached { mut output, .. } =
                docker.start_exec(&exec.id, None).await.map_err(|e| docker_err("start exec", e))?
            {
                while let Some(item) = output.next().await {
                    let chunk = item.map_err(|e| docker_err("exec output", e))?;
                    if text.len() < 256 * 1024 {
                        text.push_str(&String::from_utf8_lossy(chunk.as_ref()));
                    }
                }
            }
            // The stream ends when the process closes its output; its exit code may lag a moment.
            let mut exit_code = None;
            for _ in 0..20 {
                let inspect = docker.inspect_exec(&exec.id).await.map_err(|e| docker_err("inspect exec", e))?;
                if inspect.running != Some(true) {
                    exit_code = inspect.exit_code;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(ExecOutcome { exit_code, output: error::tail(&self.redactor().redact(&text), 20, 2048) })
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(RemoteError::Timeout {
                operation: format!("`{label}` in container {container_id}"),
                after: timeout,
            }),
        }
    }
}

/// The lines of a `docker logs --timestamps` text stamped at or after `since`, without their
/// stamps (a line without one, such as a continuation, belongs to the line before it).
pub fn lines_since(text: &str, since: k8s_openapi::jiff::Timestamp) -> Vec<String> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        let stamped =
            line.split_once(' ').and_then(|(t, rest)| Some((t.parse::<k8s_openapi::jiff::Timestamp>().ok()?, rest)));
        match stamped {
            Some((t, rest)) => {
                keep = t >= since;
                if keep {
                    out.push(rest.to_owned());
                }
            }
            None if keep => out.push(line.to_owned()),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState, EndpointSettings, Health, HealthConfig, NetworkSettings};

    /// A Docker API stand-in on a Unix socket answering `[]` to every request: how many
    /// connections were opened, and how many the client has closed since.
    async fn fake_dockerd(
        path: &std::path::Path,
    ) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                o.fetch_add(1, SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // Requests without a body: each ends with an empty line.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply =
                                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]";
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                    c.fetch_add(1, SeqCst);
                });
            }
        });
        (opened, closed)
    }

    #[tokio::test]
    async fn requests_reuse_one_connection_to_the_socket_and_it_closes_once_idle() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let (opened, closed) = fake_dockerd(&socket).await;
        let docker = kept_alive(socket.to_str().unwrap(), Duration::from_millis(300)).unwrap();
        for _ in 0..5 {
            assert!(docker.list_containers(None).await.unwrap().is_empty());
        }
        assert_eq!(opened.load(SeqCst), 1, "five requests one after another share one connection");
        assert_eq!(closed.load(SeqCst), 0, "kept while in use");
        // idle past its time: closed by the client, with no further request
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while closed.load(SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "an idle connection was never closed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(docker.list_containers(None).await.unwrap().is_empty(), "a new connection after the idle one closed");
        assert_eq!(opened.load(SeqCst), 2);
    }

    #[test]
    fn observation_from_inspect() {
        let mut labels = HashMap::new();
        labels.insert(LABEL_SERVICE.to_owned(), "backend".to_owned());
        labels.insert(LABEL_ONEOFF.to_owned(), "False".to_owned());
        let mut nets = HashMap::new();
        nets.insert(
            "shop_default".to_owned(),
            EndpointSettings { ip_address: Some("172.18.0.3".into()), ..Default::default() },
        );
        nets.insert("other".to_owned(), EndpointSettings { ip_address: Some("10.9.0.2".into()), ..Default::default() });
        let inspect = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/shop-backend-1".into()),
            image: Some("sha256:1234".into()),
            state: Some(ContainerState {
                status: Some(bollard::models::ContainerStateStatusEnum::RUNNING),
                health: Some(Health { status: Some(HealthStatusEnum::STARTING), ..Default::default() }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                labels: Some(labels),
                image: Some("shop-backend:latest".into()),
                healthcheck: Some(HealthConfig { start_period: Some(30_000_000_000), ..Default::default() }),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings { networks: Some(nets), ..Default::default() }),
            ..Default::default()
        };
        let o = observe(inspect);
        assert_eq!(o.name, "shop-backend-1");
        assert_eq!(o.service.as_deref(), Some("backend"));
        assert!(!o.one_off);
        assert!(o.is_running());
        assert_eq!(o.health.as_deref(), Some("starting"));
        assert_eq!(o.healthcheck_start_period, Some(Duration::from_secs(30)));
        assert_eq!(o.ip_address(), Some("172.18.0.3"));
        assert_eq!(o.image_id, "sha256:1234");
    }

    #[test]
    fn log_lines_before_the_start_do_not_count() {
        let text = [
            "2025-01-06T10:00:00.100000000Z ERROR old run",
            "2025-01-06T10:00:00.900000000Z started",
            "2025-01-06T10:00:01.000000000Z Traceback (most recent call last):",
            "  File \"x.py\"",
        ]
        .join("\n");
        let since: k8s_openapi::jiff::Timestamp = "2025-01-06T10:00:00.5Z".parse().unwrap();
        assert_eq!(lines_since(&text, since), ["started", "Traceback (most recent call last):", "  File \"x.py\""]);
    }

    #[test]
    fn observation_without_health_or_network() {
        let o = observe(ContainerInspectResponse::default());
        assert_eq!(o.state, "unknown");
        assert_eq!(o.health, None);
        assert_eq!(o.ip_address(), None);
    }
}
