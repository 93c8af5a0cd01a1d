//! The Environment's monitor: between deploys, every `health.monitorIntervalSeconds`, one round
//! over the Environment's SSH master (the deploy's own health round: container states, then the
//! declared checks) judges condition `Healthy`. A deploy holding the lock is never overlapped:
//! its verification judges, and the monitor keeps the last value meanwhile.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use slipway_crds::Environment;
use slipway_crds::conditions::{reasons, types};

use crate::Transition;
use crate::conditions::{self, Decided, Status};
use crate::deploy::site::{Site, compose_project};
use crate::deploy::steps::{self, HealthRound};
use crate::remote::{HostConnection, RemoteError, detect_flavor};

use super::config_cache::{self, ConfigCache, Source};

/// What the monitor found for one reconcile of the Environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// No round was due: `Healthy` stays as it is.
    NotDue,
    /// No release is recorded (`status.current`).
    NothingDeployed,
    /// A deploy holds the lock (`holder` as `status.activeDeploy` names it).
    DeployRunning { holder: String },
    /// The host could not be asked (unreachable, Secrets missing).
    NotChecked { message: String },
    /// A round ran: `failed` lists what failed (redacted), `passed` says what passed; `drift`
    /// each difference from the recorded release (`None`: the round could not look).
    Judged { failed: Vec<String>, passed: String, drift: Option<Vec<String>> },
}

/// The `Healthy` condition `finding` leads to (`None`: leave it as it is).
pub fn healthy(old: &[Condition], finding: &Finding) -> Option<Decided> {
    let previous = conditions::find(old, types::HEALTHY);
    match finding {
        Finding::NotDue => None,
        Finding::NothingDeployed => {
            Some(Decided::new(types::HEALTHY, Status::Unknown, reasons::NOTHING_DEPLOYED, "nothing deployed yet"))
        }
        Finding::NotChecked { message } => Some(Decided::new(
            types::HEALTHY,
            Status::Unknown,
            reasons::NOT_CHECKED,
            format!("health not checked: {message}"),
        )),
        Finding::DeployRunning { holder } => {
            if previous.is_some_and(|c| c.reason == reasons::DEPLOY_IN_PROGRESS) {
                return None;
            }
            let who = crate::deploy::plan::parse_holder(holder).map_or(holder.clone(), |(k, n, _)| format!("{k} {n}"));
            let (status, last) = match previous {
                Some(c) if c.status == "True" || c.status == "False" => {
                    (parse_status(&c.status), format!("; last judged {}: {}", c.status, c.message))
                }
                _ => (Status::Unknown, String::new()),
            };
            Some(Decided::new(
                types::HEALTHY,
                status,
                reasons::DEPLOY_IN_PROGRESS,
                format!("not judged while {who} deploys (its verification judges){last}"),
            ))
        }
        Finding::Judged { failed, passed, .. } if failed.is_empty() => {
            Some(Decided::new(types::HEALTHY, Status::True, reasons::HEALTHY, passed.clone()))
        }
        Finding::Judged { failed, .. } => {
            Some(Decided::new(types::HEALTHY, Status::False, reasons::UNHEALTHY, failed.join("; ")))
        }
    }
}

fn parse_status(s: &str) -> Status {
    match s {
        "True" => Status::True,
        "False" => Status::False,
        _ => Status::Unknown,
    }
}

/// An Event when `Healthy` changed its status: `Healthy` (Normal), `Unhealthy` (Warning), or the
/// reason it is Unknown.
pub fn transition(old: &[Condition], new: &[Condition]) -> Option<Transition> {
    let after = conditions::find(new, types::HEALTHY)?;
    let before = conditions::find(old, types::HEALTHY);
    if before.is_some_and(|b| b.status == after.status) {
        return None;
    }
    let type_ = if after.status == "False" { EventType::Warning } else { EventType::Normal };
    Some(Transition { type_, reason: after.reason.clone(), note: after.message.clone() })
}

/// The gauge's value: 1 healthy, 0 not healthy, `None` while not judged.
pub fn gauge_value(conditions: &[Condition]) -> Option<i64> {
    match conditions::find(conditions, types::HEALTHY).map(|c| c.status.as_str()) {
        Some("True") => Some(1),
        Some("False") => Some(0),
        _ => None,
    }
}

/// When this process last ran a round for an Environment, and on what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    pub at: Instant,
    pub generation: Option<i64>,
    pub commit: String,
}

/// How long until the next round is due (`None`: now). A round is due at once when `Healthy`
/// was not judged by a round (absent, Unknown or `DeployInProgress`), when the spec or the
/// recorded release changed since the last one, or once `interval` passed. Without a round of
/// this process (`last` is `None`: it just started) an Environment judged before waits until
/// `first_due`, so that a restart does not send every host its round in the same second.
pub fn wait_before_round(
    last: Option<&Mark>,
    judged: bool,
    generation: Option<i64>,
    commit: &str,
    interval: Duration,
    now: Instant,
    first_due: Instant,
) -> Option<Duration> {
    if last.is_none() && judged {
        return first_due.checked_duration_since(now).filter(|w| !w.is_zero());
    }
    let last = last.filter(|m| judged && m.generation == generation && m.commit == commit)?;
    interval.checked_sub(now.saturating_duration_since(last.at)).filter(|w| !w.is_zero())
}

/// Whether `Healthy` was last set by a round (True or False, not while a deploy ran).
pub fn judged(conditions: &[Condition]) -> bool {
    conditions::find(conditions, types::HEALTHY)
        .is_some_and(|c| c.reason == reasons::HEALTHY || c.reason == reasons::UNHEALTHY)
}

/// [`judged`], at the Environment's current `generation` (a spec changed while no controller
/// ran is judged again at once).
pub fn judged_at(conditions: &[Condition], generation: Option<i64>) -> bool {
    judged(conditions)
        && conditions::find(conditions, types::HEALTHY).is_some_and(|c| c.observed_generation == generation)
}

/// Where in `[0, interval)` the first round of the Environment `key` falls after a start: the
/// same for a key in every process, spread evenly over keys.
pub fn first_round_offset(key: &str, interval: Duration) -> Duration {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or_default());
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(n % millis)
}

/// The monitor interval of an Environment (at least 10 s, whatever an old object says).
pub fn interval(env: &Environment) -> Duration {
    Duration::from_secs(u64::try_from(env.spec.health.monitor_interval_seconds).unwrap_or(60).max(10))
}

/// Rounds run by this process, per Environment (`crate::object_key`).
pub struct Rounds {
    marks: Mutex<HashMap<String, Mark>>,
    /// When this process started watching (set again by [`Rounds::start_now`] when a standby
    /// takes the Lease over): first rounds are spread from here.
    started: Mutex<Instant>,
}

impl Default for Rounds {
    fn default() -> Self {
        Rounds { marks: Mutex::default(), started: Mutex::new(Instant::now()) }
    }
}

impl Rounds {
    /// When the first round of `key` is due in this process (see [`wait_before_round`]).
    pub fn first_due(&self, key: &str, interval: Duration) -> Instant {
        self.started() + first_round_offset(key, interval)
    }

    fn started(&self) -> Instant {
        *self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The controllers start watching now: a replica that waited hours for the Lease spreads
    /// its first rounds from the takeover, not from its own start.
    pub fn start_now(&self) {
        *self.started.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    pub fn last(&self, key: &str) -> Option<Mark> {
        self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).cloned()
    }

    pub fn record(&self, key: &str, mark: Mark) {
        self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.to_owned(), mark);
    }

    pub fn forget(&self, key: &str) {
        self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    /// Keeps the marks of the Environments `alive` says exist.
    pub fn retain(&self, alive: impl Fn(&str) -> bool) {
        self.marks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|k, _| alive(k));
    }
}

/// What one round cost: wall time and the controller process's CPU time (user + system, all
/// threads: an upper bound when other reconciles ran alongside).
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub wall: Duration,
    pub cpu: Duration,
}

/// CPU time (user + system) of this process so far.
pub fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointer it is given and reads nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage returned 0, so it filled the struct (and zeroed() initialised it anyway).
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What one round ran on: the monitor's copies of compose models, and the key of its Environment.
pub struct Copies<'a> {
    pub cache: &'a ConfigCache,
    pub key: &'a str,
}

/// One round on the host: the checkout's HEAD and modified files (for drift, and the key of the
/// compose model's copy), then the deploy's health round over the Environment's master against
/// the compose model (the copy while nothing it was read from changed).
pub async fn round(
    copies: Copies<'_>,
    conn: &HostConnection,
    env: &Environment,
    release: &slipway_crds::Release,
    urls: &crate::url_check::UrlChecker,
) -> Result<(HealthRound, super::drift::Seen, Cost, Source), RemoteError> {
    let (started, cpu) = (Instant::now(), process_cpu());
    let flavor = detect_flavor(conn).await?;
    let no_values = std::collections::BTreeMap::new();
    // Reads only: no host job is started, so the request UID that keys jobs is never used.
    let site = Site {
        conn,
        env,
        flavor,
        project: compose_project(env),
        uid: String::new(),
        env_values: &no_values,
        watch: None,
        watched: Default::default(),
    };
    let (head, modified, config, source) = look_and_model(&copies, &site, Some(release)).await?;
    let health = steps::health_round_with(&site, urls, config).await?;
    let seen = super::drift::Seen {
        head,
        modified,
        containers: health.containers.clone(),
        one_shot: health.config.one_shot_services(),
    };
    let cost = Cost { wall: started.elapsed(), cpu: process_cpu().saturating_sub(cpu) };
    Ok((health, seen, cost, source))
}

/// The checkout's HEAD and modified files, and its compose model ([`compose_model`]), from one
/// session on the host while the checkout has no modified files (two otherwise).
pub(crate) async fn look_and_model(
    copies: &Copies<'_>,
    site: &Site<'_>,
    release: Option<&slipway_crds::Release>,
) -> Result<(Option<String>, Vec<crate::remote::DirtyEntry>, crate::remote::ComposeConfig, Source), RemoteError> {
    let repo = crate::remote::Repo::new(site.conn, site.project.dir.clone())?;
    // The files a clean checkout's key covers, looked at along with HEAD and `git status`.
    let clean = config_cache::fingerprinted(&site.project, &[]).unwrap_or_default();
    let look = repo.observe(config_cache::STAT_FORMAT, &clean).await?;
    let read = look.stat.map(|out| (clean.as_slice(), out));
    let (config, source) = compose_model(copies, site, release, &look.head, &look.dirty, read).await?;
    Ok((look.head, look.dirty, config, source))
}

/// The compose model of the checkout: the copy when the key read now (before deciding) is the
/// one it was read under, else `compose config` on the host (kept under that key when it was read).
/// `read`: files whose `stat` was read already, and its answer (used when they are the key's).
pub(crate) async fn compose_model(
    copies: &Copies<'_>,
    site: &Site<'_>,
    release: Option<&slipway_crds::Release>,
    head: &Option<String>,
    dirty: &[crate::remote::DirtyEntry],
    read: Option<(&[String], crate::remote::CommandOutput)>,
) -> Result<(crate::remote::ComposeConfig, Source), RemoteError> {
    let key = match config_cache::fingerprinted(&site.project, dirty) {
        Some(paths) => {
            let out = match read {
                Some((files, out)) if files == paths.as_slice() => Ok(out),
                _ => site.conn.output(&config_cache::stat_command(&site.project.dir, &paths)).await,
            };
            match out.and_then(|o| config_cache::fingerprint(&o, paths.len())) {
                Ok(files) => Some(config_cache::Key {
                    generation: site.env.metadata.generation,
                    release: release.cloned(),
                    project: site.project.clone(),
                    flavor: site.flavor,
                    head: head.clone(),
                    dirty: dirty.to_vec(),
                    files,
                }),
                Err(e) => {
                    tracing::debug!(environment = %site.env.name_any(), error = %e, "compose inputs not fingerprinted: compose config runs");
                    None
                }
            }
        }
        None => None,
    };
    if let Some(config) = key.as_ref().and_then(|k| copies.cache.reuse(copies.key, k)) {
        return Ok((config, Source::Cache));
    }
    copies.cache.forget(copies.key);
    let config = site.compose().config().await?;
    if let Some(key) = key {
        copies.cache.store(copies.key, key, config.clone());
    }
    Ok((config, Source::Host))
}

/// The finding of a round that could not finish: a host that stopped answering is not judged;
/// anything else (compose refusing the checkout's files, say) is a failure of what runs.
pub fn failed_round(e: &RemoteError, redact: impl Fn(&str) -> String) -> Finding {
    let message = redact(&e.to_string());
    if e.is_transient() {
        Finding::NotChecked { message }
    } else {
        Finding::Judged { failed: vec![message], passed: String::new(), drift: None }
    }
}

/// The monitor's part of one reconcile of a reachable Environment: a round when one is due and
/// no deploy holds the lock. Returns the finding and how soon to look again.
pub(crate) async fn observe(
    ctx: &crate::context::Context,
    env: &Environment,
    conn: &HostConnection,
) -> crate::error::Result<(Finding, Duration)> {
    let key = crate::object_key(env);
    let every = interval(env);
    let status = env.status.clone().unwrap_or_default();
    let Some(current) = status.current.as_ref() else {
        return Ok((Finding::NothingDeployed, every));
    };
    if let Some(holder) = status.active_deploy.clone() {
        return Ok((Finding::DeployRunning { holder }, every));
    }
    let last = ctx.monitor.last(&key);
    let generation = env.metadata.generation;
    let now = Instant::now();
    let judged = judged_at(&status.conditions, generation);
    let first_due = ctx.monitor.first_due(&key, every);
    if let Some(wait) = wait_before_round(last.as_ref(), judged, generation, &current.commit, every, now, first_due) {
        return Ok((Finding::NotDue, wait));
    }
    let copies = Copies { cache: &ctx.configs, key: &key };
    let outcome = round(copies, conn, env, current, &ctx.urls).await;
    let redactor = crate::remote::Exec::redactor(conn);
    let (finding, judged) = match outcome {
        Ok((health, seen, cost, source)) => {
            let healthy = health.failed.is_empty();
            let drift = super::drift::differences(current, &seen);
            let finding =
                Finding::Judged { passed: health.passed_message(), failed: health.failed, drift: Some(drift) };
            (finding, Some((cost, healthy, source)))
        }
        Err(e) => (failed_round(&e, |t| redactor.redact(t)), None),
    };
    // A deploy may have taken the lock while the round ran: its own verification judges, and a
    // round that saw its rebuild half-way must not be published. A round that finds what the
    // status already says publishes nothing (no write, Event or heal), so it needs no fresh look:
    // a deploy that took the lock meanwhile wakes the next reconcile with its own write.
    if !confirms(&status.conditions, generation, &finding) {
        let api: kube::Api<Environment> =
            kube::Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
        let fresh = api.get_opt(&env.name_any()).await?.and_then(|e| e.status).unwrap_or_default();
        if let Some(holder) = fresh.active_deploy {
            return Ok((Finding::DeployRunning { holder }, every));
        }
        if fresh.current.as_ref().map(|r| r.commit.as_str()) != Some(current.commit.as_str()) {
            return Ok((Finding::NotDue, Duration::from_secs(1)));
        }
    }
    ctx.monitor.record(&key, Mark { at: now, generation, commit: current.commit.clone() });
    if let Some((cost, healthy, source)) = judged {
        ctx.metrics.compose_config(source.as_str());
        log_cost(env, cost, healthy, source);
    }
    Ok((finding, every))
}

/// Whether publishing `finding` would change nothing: a judged round without drift (nothing to
/// heal) whose `Healthy` and `Drifted` are what `old` says (status, reason, message, generation).
pub fn confirms(old: &[Condition], generation: Option<i64>, finding: &Finding) -> bool {
    if !matches!(finding, Finding::Judged { drift: Some(d), .. } if d.is_empty()) {
        return false;
    }
    let same = |decided: Option<Decided>| {
        decided.is_some_and(|d| {
            conditions::find(old, d.type_).is_some_and(|c| {
                c.status == d.status.as_str()
                    && c.reason == d.reason
                    && c.message == d.message
                    && c.observed_generation == generation
            })
        })
    };
    same(healthy(old, finding)) && same(super::drift::drifted(old, finding, None))
}

/// Logs a round's cost (the figure the closing benchmark note quotes).
pub fn log_cost(env: &Environment, cost: Cost, healthy: bool, config: Source) {
    tracing::info!(
        environment = %env.name_any(),
        healthy,
        config = %config.as_str(),
        wall_ms = cost.wall.as_secs_f64() * 1e3,
        cpu_ms = cost.cpu.as_secs_f64() * 1e3,
        "monitor round"
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn with(decided: Option<Decided>, old: &[Condition]) -> Vec<Condition> {
        conditions::set(old, &decided.into_iter().collect::<Vec<_>>(), Some(1), Timestamp::now())
    }

    fn judged_finding(failed: &[&str]) -> Finding {
        Finding::Judged {
            failed: failed.iter().map(|s| s.to_string()).collect(),
            passed: "2 containers".into(),
            drift: Some(vec![]),
        }
    }

    #[test]
    fn only_a_round_that_repeats_the_status_word_for_word_is_taken_without_a_fresh_look() {
        let healthy_round = judged_finding(&[]);
        let published = |finding: &Finding| {
            let decided: Vec<Decided> =
                healthy(&[], finding).into_iter().chain(super::super::drift::drifted(&[], finding, None)).collect();
            conditions::set(&[], &decided, Some(1), Timestamp::now())
        };
        let stored = published(&healthy_round);
        assert!(confirms(&stored, Some(1), &healthy_round), "the same round again");
        let unhealthy = judged_finding(&["service ticker is exited (exit code 0)"]);
        assert!(!confirms(&stored, Some(1), &unhealthy), "health changed");
        let judged =
            |passed: &str, drift: Option<Vec<String>>| Finding::Judged { failed: vec![], passed: passed.into(), drift };
        let other_message = judged("3 containers", Some(vec![]));
        assert!(!confirms(&stored, Some(1), &other_message), "message changed");
        assert!(!confirms(&stored, Some(2), &healthy_round), "spec changed since");
        let drifted = judged("2 containers", Some(vec!["HEAD is abc".into()]));
        assert!(!confirms(&published(&drifted), Some(1), &drifted), "drift is healed, never taken as is");
        let unlooked = judged("2 containers", None);
        assert!(!confirms(&stored, Some(1), &unlooked), "drift not looked at");
        let failed = Finding::NotChecked { message: "host down".into() };
        assert!(!confirms(&published(&failed), Some(1), &failed), "only judged rounds");
        assert!(!confirms(&[], Some(1), &healthy_round), "nothing stored yet");
        let only_healthy = conditions::set(&[], &[healthy(&[], &healthy_round).unwrap()], Some(1), Timestamp::now());
        assert!(!confirms(&only_healthy, Some(1), &healthy_round), "Drifted not stored yet");
    }

    #[test]
    fn each_finding_sets_healthy_honestly() {
        let cases = [
            (Finding::NothingDeployed, "Unknown", reasons::NOTHING_DEPLOYED, "nothing deployed yet"),
            (
                Finding::NotChecked { message: "host down".into() },
                "Unknown",
                reasons::NOT_CHECKED,
                "health not checked: host down",
            ),
            (judged_finding(&[]), "True", reasons::HEALTHY, "2 containers"),
            (
                judged_finding(&["service ticker is exited (exit code 0)", "check ticker: exit 1"]),
                "False",
                reasons::UNHEALTHY,
                "service ticker is exited (exit code 0); check ticker: exit 1",
            ),
        ];
        for (finding, status, reason, message) in cases {
            let out = with(healthy(&[], &finding), &[]);
            let c = conditions::find(&out, types::HEALTHY).unwrap();
            assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), (status, reason, message));
        }
        assert_eq!(healthy(&[], &Finding::NotDue), None);
    }

    #[test]
    fn a_deploy_keeps_the_last_value_and_says_it_is_not_judged() {
        let unhealthy = with(healthy(&[], &judged_finding(&["service web is exited (exit code 1)"])), &[]);
        let running = Finding::DeployRunning { holder: "DeployRequest/shop-45/0a1b".into() };
        let during = with(healthy(&unhealthy, &running), &unhealthy);
        let c = conditions::find(&during, types::HEALTHY).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", reasons::DEPLOY_IN_PROGRESS));
        assert!(c.message.contains("DeployRequest shop-45"), "{}", c.message);
        assert!(c.message.contains("service web is exited"), "{}", c.message);
        // The same deploy seen again changes nothing (no nesting of messages).
        assert_eq!(healthy(&during, &running), None);
        assert_eq!(transition(&unhealthy, &during), None, "keeping the value is no change");
        // Before any judgment: Unknown.
        let first = with(healthy(&[], &running), &[]);
        assert_eq!(conditions::find(&first, types::HEALTHY).unwrap().status, "Unknown");
        assert!(!judged(&during));
        assert!(judged(&unhealthy));
    }

    #[test]
    fn events_on_each_change_of_status_only() {
        let up = with(healthy(&[], &judged_finding(&[])), &[]);
        let first = transition(&[], &up).unwrap();
        assert_eq!((first.reason.as_str(), first.type_), (reasons::HEALTHY, EventType::Normal));
        let down = with(healthy(&up, &judged_finding(&["check web: refused"])), &up);
        let t = transition(&up, &down).unwrap();
        assert_eq!((t.reason.as_str(), t.type_), (reasons::UNHEALTHY, EventType::Warning));
        assert_eq!(t.note, "check web: refused");
        let still_down = with(healthy(&down, &judged_finding(&["check web: 500"])), &down);
        assert_eq!(transition(&down, &still_down), None);
        assert_eq!(transition(&still_down, &up).map(|t| t.reason), Some(reasons::HEALTHY.to_owned()));
        assert_eq!((gauge_value(&up), gauge_value(&down), gauge_value(&[])), (Some(1), Some(0), None));
    }

    #[test]
    fn rounds_are_due_once_per_interval_and_at_once_after_a_change() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(60);
        let mark = Mark { at: t0, generation: Some(3), commit: "abc".into() };
        let wait = |judged, generation, commit: &str, after: u64| {
            wait_before_round(Some(&mark), judged, generation, commit, interval, t0 + Duration::from_secs(after), t0)
        };
        assert_eq!(wait(true, Some(3), "abc", 20), Some(Duration::from_secs(40)));
        assert_eq!(wait(true, Some(3), "abc", 60), None);
        assert_eq!(wait(true, Some(3), "abc", 600), None);
        assert_eq!(wait(true, Some(4), "abc", 20), None, "the spec changed");
        assert_eq!(wait(true, Some(3), "def", 20), None, "another release");
        assert_eq!(wait(false, Some(3), "abc", 20), None, "not judged by a round (after a deploy)");
        assert_eq!(wait_before_round(None, false, Some(3), "abc", interval, t0, t0), None, "never judged");
    }

    #[test]
    fn after_a_start_first_rounds_of_judged_environments_spread_over_one_interval() {
        let interval = Duration::from_secs(60);
        let rounds = Rounds::default();
        let start = rounds.started();
        let key = "Environment/shop/production";
        let offset = first_round_offset(key, interval);
        assert!(offset < interval);
        assert_eq!(first_round_offset(key, interval), offset, "stable for a key");
        assert_eq!(rounds.first_due(key, interval), start + offset);
        let due = start + offset;
        let wait = |judged, at: Instant| wait_before_round(None, judged, Some(3), "abc", interval, at, due);
        assert_eq!(wait(true, start), Some(offset).filter(|o| !o.is_zero()), "judged before: waits its turn");
        assert_eq!(wait(true, due), None, "then runs");
        assert_eq!(wait(true, due + interval), None);
        assert_eq!(wait(false, start), None, "never judged (or at another generation): at once");

        // 1,000 Environments: no second of the minute takes more than a few of them
        let mut per_second = [0u32; 60];
        for i in 0..1000 {
            per_second[first_round_offset(&format!("Environment/fleet/env-{i}"), interval).as_secs() as usize] += 1;
        }
        let busiest = per_second.iter().max().copied().unwrap_or(0);
        assert!(busiest <= 35, "busiest second holds {busiest} of 1,000 first rounds: {per_second:?}");
        assert!(per_second.iter().all(|&n| n > 0), "{per_second:?}");
    }

    #[test]
    fn a_takeover_spreads_first_rounds_from_when_the_controllers_start() {
        let (rounds, interval) = (Rounds::default(), Duration::from_secs(60));
        let before = rounds.first_due("Environment/shop/production", interval);
        std::thread::sleep(Duration::from_millis(30));
        rounds.start_now();
        let after = rounds.first_due("Environment/shop/production", interval);
        assert!(after >= before + Duration::from_millis(30), "{before:?} -> {after:?}");
    }

    #[test]
    fn judged_counts_at_the_current_generation_only() {
        let up = conditions::set(&[], &[healthy(&[], &judged_finding(&[])).unwrap()], Some(3), Timestamp::now());
        assert!(judged_at(&up, Some(3)));
        assert!(!judged_at(&up, Some(4)), "the spec changed while no round ran");
        assert!(!judged_at(&[], Some(3)));
    }

    #[test]
    fn a_host_that_stops_answering_is_not_judged() {
        let down = RemoteError::Unreachable { host: "h".into(), detail: "timeout".into() };
        assert!(matches!(failed_round(&down, str::to_owned), Finding::NotChecked { .. }));
        let invalid = RemoteError::ComposeInvalid { project: "p".into(), detail: "services.web: secret-value".into() };
        let Finding::Judged { failed, .. } = failed_round(&invalid, |s| s.replace("secret-value", "***")) else {
            panic!("judged")
        };
        assert!(failed[0].contains("***") && !failed[0].contains("secret-value"), "{failed:?}");
    }

    #[test]
    fn process_cpu_moves_forward() {
        let before = process_cpu();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(process_cpu() >= before, "{x}");
    }
}
