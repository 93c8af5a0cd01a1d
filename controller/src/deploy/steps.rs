//! The steps that change the host, each a sequence of host jobs resumed across reconciles, and
//! verification, one round per reconcile. Each returns where it stands; the caller records it.

use std::time::Duration;

use slipway_crds::Environment;

use crate::remote::{CheckKind, HealthCheck, JobState, RemoteError, Repo, health, job_label, write_env_file};

use super::site::{JobProgress, Site};
use crate::url_check::UrlChecker;

/// Where a step stands after one reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A host job still runs (or verification has not passed yet): look again soon.
    Running,
    Done {
        message: String,
    },
    Failed {
        message: String,
        tail: Option<String>,
    },
}

/// The states of a step's host jobs `steps`, polled from the last back to the latest one that was
/// started: a job starts only once the one before it succeeded, so those before it need no look
/// (`None`). One poll per reconcile while the last job runs, not one per job.
async fn poll_sequence<const N: usize>(
    site: &Site<'_>,
    steps: &[&str; N],
) -> Result<[Option<JobState>; N], RemoteError> {
    poll_back(|i| site.poll(steps[i])).await
}

/// [`poll_sequence`] over `poll` (the state of the `i`th job).
async fn poll_back<const N: usize, F, Fut>(mut poll: F) -> Result<[Option<JobState>; N], RemoteError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<JobState, RemoteError>>,
{
    let mut states = std::array::from_fn(|_| None);
    for i in (0..N).rev() {
        let state = poll(i).await?;
        let started = state != JobState::NotFound;
        states[i] = Some(state);
        if started {
            break;
        }
    }
    Ok(states)
}

/// No job of the sequence was started yet: what they use is still to be prepared.
fn none_started(states: &[Option<JobState>]) -> bool {
    states.iter().all(|s| s.as_ref() == Some(&JobState::NotFound))
}

/// Runs `jobs` one after another from their `states` ([`poll_sequence`]): the first unfinished
/// one is started or judged; one before the latest started had succeeded.
async fn sequence(
    site: &Site<'_>,
    jobs: &[(&str, crate::remote::RemoteCommand)],
    states: impl IntoIterator<Item = Option<JobState>>,
) -> Result<Progress, RemoteError> {
    for ((step, cmd), state) in jobs.iter().zip(states) {
        let Some(state) = state else { continue };
        match site.job(step, cmd, state).await?.0 {
            JobProgress::Succeeded => continue,
            JobProgress::Running => return Ok(Progress::Running),
            JobProgress::Failed { what, tail } => return Ok(Progress::Failed { message: what, tail }),
        }
    }
    Ok(Progress::Done { message: String::new() })
}

/// The host jobs of the migration step (build the service's image from the next revision, run
/// the upgrade in a one-off container of it), in order.
pub const MIGRATION_JOBS: [&str; 2] = ["migrate-build", "migrate"];
/// The host jobs of the rebuild step.
pub const REBUILD_JOBS: [&str; 2] = ["build", "up"];

/// Migrating: the NEW revision's image for the migration service, built in the worktree, then
/// the upgrade in a one-off container of that image. The running checkout is not touched.
pub async fn migrate(site: &Site<'_>, commit: &str) -> Result<Progress, RemoteError> {
    migrate_as(site, commit, MIGRATION_JOBS).await
}

/// [`migrate`] as the host jobs `jobs` (a rehearsal's roll forward migrates again).
pub async fn migrate_as(site: &Site<'_>, commit: &str, jobs: [&str; 2]) -> Result<Progress, RemoteError> {
    let Some(m) = &site.env.spec.migrations else {
        return Ok(Progress::Done { message: "no migrations declared".into() });
    };
    // Once: while the jobs run, the worktree and its .env stay as they started (a Secret rotated
    // mid-deploy must not change files under a running build).
    let states = poll_sequence(site, &jobs).await?;
    if none_started(&states) {
        site.ensure_idle().await?;
        super::preflight::prepare_worktree(site, commit).await?;
        write_env_file(site.conn, &site.next_dir(), site.env_values, site.flavor).await?;
    }
    let next = site.compose_next();
    let build = next.command("build").arg(m.service.clone());
    let label = job_label(&site.key(jobs[1])?);
    let upgrade = next.run_command(&m.service, &m.upgrade, &[label])?;
    // With a release running, the one-off container must not start or recreate its
    // dependencies from the worktree's configuration (the database above all): it joins them.
    // (Looked at only while the upgrade is still to start: the command is not used after.)
    let to_start = states[1] == Some(JobState::NotFound);
    let upgrade = if to_start && site.runs().await? { with_no_deps(upgrade) } else { upgrade };
    match sequence(site, &[(jobs[0], build), (jobs[1], upgrade)], states).await? {
        Progress::Done { .. } => Ok(Progress::Done { message: format!("`{}` succeeded", m.upgrade.join(" ")) }),
        other => Ok(other),
    }
}

/// The host job of a restart (`DeployRequest.spec.restart`).
pub const RESTART_JOBS: [&str; 1] = ["restart"];

/// Restarting: `compose restart` of exactly the named services of the checkout as it is.
pub async fn restart(site: &Site<'_>, services: &[String]) -> Result<Progress, RemoteError> {
    for s in services {
        crate::remote::validate::service_name(s)?;
    }
    let states = poll_sequence(site, &RESTART_JOBS).await?;
    if none_started(&states) {
        site.ensure_idle().await?;
    }
    let cmd = site.compose().command("restart").args(services.iter().cloned());
    match sequence(site, &[(RESTART_JOBS[0], cmd)], states).await? {
        Progress::Done { .. } => Ok(Progress::Done { message: format!("restarted {}", services.join(", ")) }),
        other => Ok(other),
    }
}

/// The host job of a Rollback's database step.
pub const DOWNGRADE_JOBS: [&str; 1] = ["downgrade"];

/// The downgrade command with `{revision}` replaced (appended when it names no `{revision}`).
pub fn downgrade_argv(command: &[String], revision: &str) -> Vec<String> {
    let mut argv: Vec<String> = command.iter().map(|a| a.replace("{revision}", revision)).collect();
    if !command.iter().any(|a| a.contains("{revision}")) {
        argv.push(revision.to_owned());
    }
    argv
}

/// Downgrading (a Rollback): the database goes back to `revision` FIRST, run by the code that
/// runs now (only it has the newer migrations' downgrade steps), in a one-off container of the
/// main checkout; the checkout, `.env` and the running containers are not touched.
pub async fn downgrade(site: &Site<'_>, revision: &str) -> Result<Progress, RemoteError> {
    downgrade_as(site, revision, DOWNGRADE_JOBS[0]).await
}

/// [`downgrade`] as the host job `job` (a rollback rehearsal).
pub async fn downgrade_as(site: &Site<'_>, revision: &str, job: &str) -> Result<Progress, RemoteError> {
    let Some(m) = site.env.spec.migrations.as_ref().filter(|m| !m.downgrade.is_empty()) else {
        return Ok(Progress::Failed {
            message: "the Environment declares no spec.migrations.downgrade command".into(),
            tail: None,
        });
    };
    crate::remote::validate::migration_revision(revision)?;
    let states = poll_sequence(site, &[job]).await?;
    let to_start = none_started(&states);
    if to_start {
        site.ensure_idle().await?;
    }
    let argv = downgrade_argv(&m.downgrade, revision);
    let label = job_label(&site.key(job)?);
    let cmd = site.compose().run_command(&m.service, &argv, &[label])?;
    let cmd = if to_start && site.runs().await? { with_no_deps(cmd) } else { cmd };
    match sequence(site, &[(job, cmd)], states).await? {
        Progress::Done { .. } => Ok(Progress::Done { message: format!("`{}` succeeded", argv.join(" ")) }),
        other => Ok(other),
    }
}

/// `compose ... run --no-deps ...`: the same command without starting dependencies.
pub fn with_no_deps(cmd: crate::remote::RemoteCommand) -> crate::remote::RemoteCommand {
    let mut argv = cmd.arguments().to_vec();
    // The subcommand, not a project or file named `run`.
    let sub = (0..argv.len()).find(|&i| argv[i] == "run" && (i == 0 || !matches!(argv[i - 1].as_str(), "-p" | "-f")));
    if let Some(i) = sub {
        argv.insert(i + 1, "--no-deps".to_owned());
    }
    let mut out = crate::remote::RemoteCommand::new(cmd.program()).args(argv).label(cmd.display_label());
    if let Some(dir) = cmd.working_dir() {
        out = out.current_dir(dir);
    }
    if let Some(t) = cmd.timeout_override() {
        out = out.timeout(t);
    }
    for (k, v) in cmd.environment() {
        out = out.env(k.clone(), v.clone());
    }
    out
}

/// Rebuilding: the checkout moves to the commit, `.env` is written, then build and `up`.
/// `discard` (a drift heal) throws local changes of the checkout away; otherwise they stop it.
pub async fn rebuild(
    site: &Site<'_>,
    commit: &str,
    since: k8s_openapi::jiff::Timestamp,
    discard: bool,
) -> Result<Progress, RemoteError> {
    rebuild_as(site, commit, since, discard, REBUILD_JOBS).await
}

/// [`rebuild`] as the host jobs `jobs` (a rollback rehearsal rebuilds twice more).
pub async fn rebuild_as(
    site: &Site<'_>,
    commit: &str,
    since: k8s_openapi::jiff::Timestamp,
    discard: bool,
    jobs: [&str; 2],
) -> Result<Progress, RemoteError> {
    let states = poll_sequence(site, &jobs).await?;
    if none_started(&states) {
        site.ensure_idle().await?;
        let repo = Repo::new(site.conn, site.project.dir.clone())?;
        if discard {
            repo.checkout_discarding(commit).await?;
        } else if repo.head().await?.as_deref() != Some(commit) {
            repo.checkout(commit).await?;
        }
        write_env_file(site.conn, &site.project.dir, site.env_values, site.flavor).await?;
    }
    let [build_state, up_state] = states;
    let compose = site.compose();
    let build = compose.command("build");
    match sequence(site, &[(jobs[0], build)], [build_state]).await? {
        Progress::Done { .. } => {}
        other => return Ok(other),
    }
    let up = compose.command("up").args(["-d", "--remove-orphans"]);
    // (the last job's state is always polled; were it not, a start finds a job started already)
    match site.job(jobs[1], &up, up_state.unwrap_or(JobState::NotFound)).await? {
        (JobProgress::Running, _) => Ok(Progress::Running),
        (JobProgress::Succeeded, _) => Ok(Progress::Done { message: "built and started".into() }),
        // `up` also fails when a dependency is not healthy in time (`depends_on:
        // service_healthy`): the containers exist and verification, which quotes the failing
        // check, is the judge. A job that did not exit (terminated, interrupted) is a failure.
        (JobProgress::Failed { what, tail }, crate::remote::JobState::Exited { .. })
            if started_since(site, since).await? =>
        {
            Ok(Progress::Done {
                message: format!(
                    "built; {what} ({}), so verification decides",
                    tail.as_deref()
                        .and_then(|t| t.lines().rfind(|l| !l.trim().is_empty()))
                        .unwrap_or("no output")
                        .trim()
                ),
            })
        }
        (JobProgress::Failed { what, tail }, _) => Ok(Progress::Failed { message: what, tail }),
    }
}

/// Did `up` (re)start any service container since `since`? A failed `up` that started none
/// (a missing image, a pull error) changed nothing: the old release would pass verification.
async fn started_since(site: &Site<'_>, since: k8s_openapi::jiff::Timestamp) -> Result<bool, RemoteError> {
    let containers = site.conn.project_containers(&site.project.name).await?;
    Ok(containers.iter().filter(|c| !c.one_off).any(|c| {
        c.started_at.as_deref().and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok()).is_some_and(|t| t >= since)
    }))
}

/// The Environment's declared checks as the remote layer runs them.
pub fn declared_checks(env: &Environment) -> Vec<HealthCheck> {
    env.spec
        .health
        .checks
        .iter()
        .filter_map(|c| {
            let port = |p: i32| u16::try_from(p).ok();
            let kind = if let Some(h) = &c.http {
                // An `http.url` check is fetched from the controller ([`crate::url_check`]).
                CheckKind::Http {
                    service: h.service.clone()?,
                    port: port(h.port?)?,
                    path: h.path.clone(),
                    expect_status: h.expect_status.and_then(|s| u16::try_from(s).ok()),
                    expect_json: h.expect_json.as_ref().map(|m| serde_json::to_value(m).unwrap_or_default()),
                }
            } else if let Some(t) = &c.tcp {
                CheckKind::Tcp { service: t.service.clone(), port: port(t.port)? }
            } else if let Some(e) = &c.exec {
                CheckKind::Exec { service: e.service.clone(), command: e.command.clone() }
            } else {
                return None;
            };
            Some(HealthCheck { name: c.name.clone(), kind })
        })
        .collect()
}

/// One round of health checks, as a deploy's verification and the Environment's monitor run it.
#[derive(Debug, Clone)]
pub struct HealthRound {
    /// What failed (redacted): containers, one-shot services, declared checks; empty when healthy.
    pub failed: Vec<String>,
    /// The project's containers as observed at the start of the round, or after its checks when
    /// a container stopped while they ran.
    pub containers: Vec<crate::remote::ContainerObservation>,
    /// The compose model of the checkout.
    pub config: crate::remote::ComposeConfig,
    /// How many declared checks ran.
    pub checks: usize,
}

impl HealthRound {
    /// One line for a status message when everything passed.
    pub fn passed_message(&self) -> String {
        format!(
            "{} containers running and healthy, {} checks passed",
            self.containers.iter().filter(|c| !c.one_off).count(),
            self.checks
        )
    }
}

/// Every long-running service running (and healthy where it has a healthcheck), one-shot
/// services exited 0, then the declared checks. A round with failures first checks the master:
/// one that died under the checks is the connection's failure (an error), not the release's.
pub async fn health_round(site: &Site<'_>, ctx: &crate::context::Context) -> Result<HealthRound, RemoteError> {
    let config = compose_model(site, ctx).await?;
    health_round_with(site, &ctx.urls, config).await
}

/// [`health_round`] of the project's `containers`, as listed just before.
async fn health_round_of(
    site: &Site<'_>,
    ctx: &crate::context::Context,
    containers: Vec<crate::remote::ContainerObservation>,
) -> Result<HealthRound, RemoteError> {
    let config = compose_model(site, ctx).await?;
    judge_round(site, &ctx.urls, config, containers).await
}

/// The compose model a deploy's verification or bake round judges against: the copy an earlier
/// round read, while nothing `compose config` reads changed on the host (the monitor's key and
/// cache, see [`crate::environment::config_cache`]; the Environment's lock keeps the monitor off
/// it meanwhile, and releasing the lock hands the copy to the monitor's rounds of the release
/// recorded as current, or forgets it).
async fn compose_model(
    site: &Site<'_>,
    ctx: &crate::context::Context,
) -> Result<crate::remote::ComposeConfig, RemoteError> {
    let key = crate::object_key(site.env);
    let copies = crate::environment::monitor::Copies { cache: &ctx.configs, key: &key };
    let (_, _, config, source) = crate::environment::monitor::look_and_model(&copies, site, None).await?;
    ctx.metrics.deploy_compose_config(source.as_str());
    Ok(config)
}

/// [`health_round`] judged against `config`, the compose model read already (the monitor's
/// copy, see [`crate::environment::config_cache`]).
pub async fn health_round_with(
    site: &Site<'_>,
    urls: &UrlChecker,
    config: crate::remote::ComposeConfig,
) -> Result<HealthRound, RemoteError> {
    let containers = site.conn.project_containers(&site.project.name).await?;
    judge_round(site, urls, config, containers).await
}

/// The round of [`health_round_with`] once the project's `containers` are listed.
async fn judge_round(
    site: &Site<'_>,
    urls: &UrlChecker,
    config: crate::remote::ComposeConfig,
    containers: Vec<crate::remote::ContainerObservation>,
) -> Result<HealthRound, RemoteError> {
    let redactor = crate::remote::Exec::redactor(site.conn);
    let mut failed: Vec<String> = health::container_problems(&containers, &config.long_running_services())
        .iter()
        .map(|p| redactor.redact(p))
        .collect();
    let check_timeout = Duration::from_secs(10);
    let (one_shots_running, one_shot_problems) = health::one_shot_problems(&containers, &config.one_shot_services());
    failed.extend(one_shot_problems.iter().map(|p| redactor.redact(p)));
    failed.extend(one_shots_running);
    let container_failed_before_checks = failed.len();
    let checks = declared_checks(site.env);
    for check in &checks {
        let outcome = health::run_check(site.conn, check, &containers, check_timeout).await;
        if !outcome.passed {
            failed.push(format!("check {}: {}", outcome.name, outcome.message));
        }
    }
    site.conn.close_tcp_forwards().await;
    // A URL off the allow-list refuses a deploy before it starts (`url_check::gate`); a
    // Rollback, or a round after the list was narrowed, skips it rather than fail for it.
    let (url_checks, off_list): (Vec<_>, Vec<_>) =
        crate::url_check::declared(site.env).into_iter().partition(|c| urls.allowed(&c.url));
    for check in &off_list {
        tracing::warn!(environment = %kube::ResourceExt::name_any(site.env), check = %check.name, "http.url check skipped: not on the controller's allow-list");
    }
    for check in &url_checks {
        if let Err(message) = urls.run(check).await {
            failed.push(format!("check {}: {message}", check.name));
        }
    }
    let checks = checks.len() + url_checks.len();
    if !failed.is_empty() {
        site.conn.check().await?;
    }
    // A container that stopped while the checks ran (its exec refused, its port closed): look
    // again, and name the service's state first, since that, not the check, is the cause. A
    // second look that fails keeps what the round found.
    let mut containers = containers;
    let again = if failed.len() > container_failed_before_checks {
        site.conn
            .project_containers(&site.project.name)
            .await
            .inspect_err(
                |e| tracing::debug!(error = %e, "second look at the containers failed; the round's findings stand"),
            )
            .ok()
    } else {
        None
    };
    if let Some(now) = again {
        let stopped: Vec<String> = health::stopped_since(&containers, &now, &config.long_running_services())
            .iter()
            .map(|p| redactor.redact(p))
            .collect();
        if !stopped.is_empty() {
            failed.splice(0..0, stopped);
            containers = now;
        }
    }
    Ok(HealthRound { failed, containers, config, checks })
}

/// Verifying, one round: a look at the containers, then [`health_round`] once none is still
/// starting (or unhealthy). `Failed` only once `elapsed` passed the deadline.
pub async fn verify_round(
    site: &Site<'_>,
    ctx: &crate::context::Context,
    elapsed: Duration,
) -> Result<Progress, RemoteError> {
    let timeout = Duration::from_secs(u64::try_from(site.env.spec.health.timeout_seconds).unwrap_or(180));
    // One look at the containers first. One still `starting` (or `unhealthy`) fails the round
    // whatever the compose model and the checks would say, so until the deadline that look is
    // the round: no check is run into a container that is not ready yet (each `exec` costs the
    // host what a healthcheck does; a plain script waits too), and the checkout is read only
    // once. The round at the deadline runs in full, so its failure names every check's outcome.
    let containers = site.conn.project_containers(&site.project.name).await?;
    if elapsed < health::deadline_after_start(timeout, Duration::from_secs(3), &containers)
        && health::not_healthy(&containers).next().is_some()
    {
        // The compose model is read once while they start (`compose config` takes a second or
        // so), so the round that finds them healthy reuses it instead of reading it then. The
        // step began about `elapsed` ago (whole seconds, so give or take one): at worst a second
        // round reads it again. Noted before the read, so a checkout whose key cannot be read
        // (and so keeps no copy) is not read every round either. A failed read here decides
        // nothing: the round that judges reads it again and reports what fails.
        let key = crate::object_key(site.env);
        let began = std::time::SystemTime::now().checked_sub(elapsed + Duration::from_secs(1));
        if ctx.configs.claim_read(&key, began) {
            match compose_model(site, ctx).await {
                Err(e) if e.is_transient() => {
                    tracing::debug!(environment = %kube::ResourceExt::name_any(site.env), error = %e, "compose model not read ahead");
                }
                Err(e) => {
                    tracing::warn!(environment = %kube::ResourceExt::name_any(site.env), error = %e, "compose model not read ahead; the round that judges reads it again");
                }
                Ok(_) => {}
            }
        }
        return Ok(Progress::Running);
    }
    let round = health_round_of(site, ctx, containers).await?;
    if round.failed.is_empty() {
        return Ok(Progress::Done { message: round.passed_message() });
    }
    let deadline = health::deadline_after_start(timeout, Duration::from_secs(3), &round.containers);
    if elapsed >= deadline {
        return Ok(Progress::Failed {
            message: format!("not healthy after {}s: {}", elapsed.as_secs(), round.failed.join("; ")),
            tail: None,
        });
    }
    Ok(Progress::Running)
}

/// The lines of `lines` holding any of `patterns` (plain, case-sensitive substrings).
pub fn log_matches<'a>(lines: &'a [String], patterns: &[String], ignore: &[String]) -> Vec<&'a str> {
    let holds = |l: &str, texts: &[String]| texts.iter().any(|p| !p.is_empty() && l.contains(p.as_str()));
    lines.iter().filter(|l| holds(l, patterns) && !holds(l, ignore)).map(String::as_str).collect()
}

/// What the log scan after verification found: per service, its matching lines (redacted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogScan {
    pub found: Vec<(String, Vec<String>)>,
}

impl LogScan {
    /// One line for a message: each service and its first matching line.
    pub fn summary(&self) -> String {
        self.found
            .iter()
            .map(|(service, lines)| {
                let first = lines.first().map_or("", |l| l.trim());
                let first: String = first.chars().take(200).collect();
                format!("{service}: {} line(s), first {first:?}", lines.len())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The matching lines, each prefixed with its service, for the step's output tail.
    pub fn tail(&self) -> String {
        self.found
            .iter()
            .flat_map(|(service, lines)| lines.iter().map(move |l| format!("{service} | {l}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// After verification: each running service container's log lines written since `since` (the
/// deploy's Rebuilding began), the last `health.logLines`, scanned for
/// `health.logErrorPatterns`. Lines of the previous container, or of a kept container from
/// before the deploy, never count.
pub async fn log_scan(site: &Site<'_>, since: k8s_openapi::jiff::Timestamp) -> Result<LogScan, RemoteError> {
    let health = &site.env.spec.health;
    if health.log_errors == slipway_crds::LogErrors::Ignore || health.log_error_patterns.is_empty() {
        return Ok(LogScan::default());
    }
    let lines = usize::try_from(health.log_lines).unwrap_or(50).max(1);
    let containers = site.conn.project_containers(&site.project.name).await?;
    let mut scan = LogScan::default();
    for c in containers.iter().filter(|c| !c.one_off && c.is_running()) {
        let Some(service) = c.service.as_ref() else { continue };
        // From the deploy's own start, not the container's: Docker records `StartedAt` after the
        // process is running, so a first line written at once can carry an earlier timestamp.
        let logged = site.conn.container_log_since(&c.id, since, lines).await?;
        let matching: Vec<String> = log_matches(&logged, &health.log_error_patterns, &health.log_ignore_patterns)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !matching.is_empty() {
            scan.found.push((service.clone(), matching));
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteCommand;

    /// [`poll_back`] over jobs in these states: what it returns, and which jobs it looked at.
    fn polled<const N: usize>(host: [JobState; N]) -> ([Option<JobState>; N], Vec<usize>) {
        let looked = std::sync::Mutex::new(Vec::new());
        let states = futures::executor::block_on(poll_back::<N, _, _>(|i| {
            looked.lock().unwrap().push(i);
            let state = host[i].clone();
            async move { Ok(state) }
        }))
        .unwrap();
        (states, looked.into_inner().unwrap())
    }

    #[test]
    fn a_sequence_is_polled_from_its_last_job_back_to_the_latest_started() {
        let running = JobState::Running { pid: Some(7), elapsed: Duration::from_secs(3) };
        let ok = JobState::Exited { code: 0, tail: String::new() };
        let failed = JobState::Exited { code: 2, tail: "no such image".into() };
        let none = JobState::NotFound;

        let (states, looked) = polled([none.clone(), none.clone()]);
        assert_eq!(looked, [1, 0], "nothing started: both looked at");
        assert!(none_started(&states));

        let (states, looked) = polled([running.clone(), none.clone()]);
        assert_eq!(looked, [1, 0]);
        assert_eq!(states, [Some(running.clone()), Some(none.clone())], "the build runs, up is still to start");
        assert!(!none_started(&states), "no preparation again while the first job runs");

        let (states, looked) = polled([failed.clone(), none.clone()]);
        assert_eq!(states, [Some(failed), Some(none.clone())], "a failed first job is judged, never skipped");
        assert_eq!(looked, [1, 0]);

        let (states, looked) = polled([ok.clone(), running.clone()]);
        assert_eq!(looked, [1], "up runs: the build (it succeeded, or up would not exist) is not looked at");
        assert_eq!(states, [None, Some(running)]);
        assert!(!none_started(&states));

        let (states, looked) = polled([ok.clone()]);
        assert_eq!((states, looked), ([Some(ok)], vec![0]));
    }

    #[test]
    fn log_lines_match_the_patterns_as_plain_text() {
        let lines: Vec<String> = [
            "INFO started",
            "ERROR: connection refused",
            "Traceback (most recent call last):",
            "error in lower case",
            "goroutine 1 [running]: panic: boom",
        ]
        .map(String::from)
        .to_vec();
        let defaults = slipway_crds::environment::default_log_error_patterns();
        let ignored = slipway_crds::environment::default_log_ignore_patterns();
        assert_eq!(
            log_matches(&lines, &defaults, &ignored),
            ["ERROR: connection refused", "Traceback (most recent call last):", "goroutine 1 [running]: panic: boom"]
        );
        assert!(log_matches(&lines, &[], &[]).is_empty());
        assert!(log_matches(&lines, &[String::new()], &[]).is_empty(), "an empty pattern matches nothing");
        // PostgreSQL answering a readiness probe while it starts is not an error by default;
        // a failed login is.
        let postgres: Vec<String> = [
            "2026-11-30 05:01:02.345 UTC [63] FATAL:  the database system is starting up",
            "2026-11-30 05:01:09.001 UTC [70] FATAL:  password authentication failed for user \"app\"",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(log_matches(&postgres, &defaults, &ignored), [postgres[1].as_str()]);
        assert_eq!(log_matches(&postgres, &defaults, &[]).len(), 2, "with no ignore list every FATAL counts");
        let scan = LogScan { found: vec![("backend".into(), vec!["ERROR: x".into(), "ERROR: y".into()])] };
        assert_eq!(scan.summary(), "backend: 2 line(s), first \"ERROR: x\"");
        assert_eq!(scan.tail(), "backend | ERROR: x\nbackend | ERROR: y");
    }

    #[test]
    fn no_deps_goes_after_the_run_subcommand_only() {
        let cmd = RemoteCommand::new("docker-compose")
            .args(["-p", "run", "-f", "run", "run", "--rm", "-T", "backend", "alembic", "run"])
            .current_dir("/srv/shop");
        let out = with_no_deps(cmd);
        assert_eq!(
            out.arguments(),
            ["-p", "run", "-f", "run", "run", "--no-deps", "--rm", "-T", "backend", "alembic", "run"]
        );
        assert_eq!(out.working_dir(), Some("/srv/shop"));
    }
}
