//! The Environment controller: validates the Secrets an Environment names and reports Ready;
//! between deploys its [`monitor`] judges `Healthy`.

pub mod config_cache;
pub mod drift;
pub mod monitor;
pub mod revision;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::{reasons, types};
use slipway_crds::{Environment, EnvironmentStatus};

use crate::conditions::{Decided, Status};
use crate::context::Context;
use crate::deploy::lock::Cas;
use crate::deploy::teardown;
use crate::error::{Error, Result};
use crate::references::{self, Problem};
use crate::remote::{HostTarget, Redactor, SecretBytes};
use crate::secrets::{self, SecretReader};
use crate::{Scope, Transition, conditions, status};

pub const CONTROLLER: &str = "environment";

/// Secrets are read with `get` only (no cluster-wide watch), so a missing Secret or an unreachable
/// host is looked at again after this long at first, then with exponential backoff.
const RECHECK_SOON: Duration = Duration::from_secs(15);
/// A reachable host is checked again after this long.
const RECHECK: Duration = Duration::from_secs(300);

/// How often SSH masters of deleted Environments are looked for and closed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let environments: Api<Environment> = scope.api(&ctx.client);
    let controller = crate::trimmed_controller(environments, scope.watcher_config());
    let store = controller.store();
    let sweep_ctx = ctx.clone();
    let sweep = async move {
        loop {
            tokio::time::sleep(SWEEP_INTERVAL).await;
            let alive: std::collections::HashSet<String> =
                store.state().iter().map(|e| crate::object_key(e.as_ref())).collect();
            let closed = sweep_ctx.hosts.retain(|key| alive.contains(key)).await;
            // What this process keeps per Environment goes with it (an idle one is deleted
            // without a last reconcile).
            sweep_ctx.monitor.retain(|key| alive.contains(key));
            sweep_ctx.configs.retain(|key| alive.contains(key));
            sweep_ctx.revisions.retain(|key| alive.contains(key));
            sweep_ctx
                .metrics
                .retain_environments(|namespace, name| alive.contains(&format!("Environment/{namespace}/{name}")));
            if closed > 0 {
                tracing::info!(closed, "closed the SSH masters of deleted Environments");
            }
        }
    };
    // The runner takes every Environment as it falls due and the reconciles queue for a slot
    // (`Context::environment_slots`, first come first served). With the runner's own bound
    // instead, a saturated monitor starved some Environments for good: kube-runtime keeps the
    // items it cannot start yet in a hash set and starts them in its iteration order, so the same
    // ones always came first (benchmark P6: 160 of 1,011 never checked in 10 minutes).
    let fresh = controller.store();
    // On shutdown the reconciles still waiting for a slot end at once (the runner waits for
    // every reconcile it started, and a saturated one has started them all).
    let closing = ctx.clone();
    let shutdown = async move {
        shutdown.await;
        closing.environment_slots.close();
    };
    let controller = controller
        .with_config(crate::controller_config().concurrency(0))
        .graceful_shutdown_on(shutdown)
        .run(move |env, ctx| reconcile(env, ctx, fresh.clone()), error_policy, ctx)
        .for_each(|_| async {});
    tokio::select! {
        () = controller => {}
        () = sweep => {}
    }
}

/// What one reconcile found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Secrets the Environment names are missing, so the host was not checked.
    MissingReferences(Vec<Problem>),
    Reachable,
    /// `transient` problems (host down, timeout) clear by themselves; others need a person.
    Unreachable {
        problem: Problem,
        transient: bool,
    },
}

const REACHABLE_MESSAGE: &str = "host reachable with its pinned host key";

pub fn decide(env: &Environment, observed: &Observation, now: Timestamp) -> (EnvironmentStatus, Option<Transition>) {
    let old = env.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = env.metadata.generation;
    let (decided, type_) = match observed {
        Observation::MissingReferences(problems) => {
            let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
            let reason = problems.first().map_or(reasons::SECRET_NOT_FOUND, |p| p.reason);
            let mut decided = references::stalled(&Problem { reason, message: message.clone() });
            let not_checked = format!("host not checked: {message}");
            decided.push(Decided::new(types::REACHABLE, Status::Unknown, reasons::NOT_CHECKED, not_checked));
            (decided, EventType::Warning)
        }
        Observation::Reachable => (
            vec![
                Decided::new(types::READY, Status::True, reasons::REACHABLE, REACHABLE_MESSAGE),
                Decided::new(types::REACHABLE, Status::True, reasons::REACHABLE, REACHABLE_MESSAGE),
                Decided::new(types::RECONCILING, Status::False, reasons::REACHABLE, ""),
                Decided::new(types::STALLED, Status::False, reasons::REACHABLE, ""),
            ],
            EventType::Normal,
        ),
        Observation::Unreachable { problem: p, transient } => {
            let mut decided =
                if *transient { references::progressing(p.reason, p.message.clone()) } else { references::stalled(p) };
            decided.push(Decided::new(types::REACHABLE, Status::False, p.reason, p.message.clone()));
            (decided, EventType::Warning)
        }
    };
    // A failed automatic rollback left the host unverified: Ready False and Stalled until a
    // person's request has run (the deploy path clears it), whatever the host check says.
    let (decided, type_) = match &old.needs_attention {
        Some(attention) => {
            let problem = Problem { reason: reasons::ROLLBACK_FAILED, message: attention.message.clone() };
            let mut held = references::stalled(&problem);
            held.extend(decided.into_iter().filter(|d| d.type_ == types::REACHABLE));
            (held, EventType::Warning)
        }
        None => (decided, type_),
    };
    status.conditions = conditions::set(&old.conditions, &decided, env.metadata.generation, now);
    let transition = Transition::between(&old.conditions, &status.conditions, type_);
    (status, transition)
}

/// What an Environment needs from its Secrets to reach its host and render its `.env`.
pub(crate) struct Credentials {
    pub key: SecretBytes,
    pub known_hosts: SecretBytes,
    /// The env Secret's keys and values (empty without `envSecretRef`).
    pub env_values: std::collections::BTreeMap<String, SecretBytes>,
    /// Every secret value of the Environment (env Secret, key), for masking.
    pub redactor: Redactor,
}

/// Reads the Secrets the Environment names (each once), using only those opted in; every
/// problem names the Secret, the field and the fix.
pub(crate) async fn credentials(
    env: &Environment,
    secrets: &mut SecretReader,
) -> Result<Result<Credentials, Vec<Problem>>> {
    let ns = secrets.namespace().to_owned();
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (field, r) in [
        ("spec.sshKeySecretRef", &env.spec.ssh_key_secret_ref),
        ("spec.knownHostsSecretRef", &env.spec.known_hosts_secret_ref),
    ] {
        let lookup = secrets.get(&r.name).await?;
        match secrets::usable(lookup, field, &r.name, &ns).and_then(|s| secrets::key_value(s, field, &r.name, &r.key)) {
            Ok(v) => found.push(v),
            Err(p) => problems.push(p),
        }
    }
    let redactor = Redactor::new();
    let mut env_values = std::collections::BTreeMap::new();
    if let Some(r) = &env.spec.env_secret_ref {
        let lookup = secrets.get(&r.name).await?;
        match secrets::usable(lookup, "spec.envSecretRef", &r.name, &ns) {
            Ok(s) => {
                env_values = secrets::all_values(s);
                env_values.values().for_each(|v| redactor.register(v.expose()));
            }
            Err(p) => problems.push(p),
        }
    }
    // The same Secret named twice for one problem is reported once.
    problems.dedup_by(|a, b| a.message == b.message);
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let known_hosts = found.pop().expect("two values found");
    let key = found.pop().expect("two values found");
    redactor.register(key.expose());
    Ok(Ok(Credentials { key, known_hosts, env_values, redactor }))
}

/// The SSH port, refused (not replaced by 22) when out of range.
pub(crate) fn ssh_port(env: &Environment) -> Result<u16, Problem> {
    u16::try_from(env.spec.host.port).ok().filter(|p| *p != 0).ok_or_else(|| Problem {
        reason: reasons::INVALID_SPEC,
        message: format!("spec.host.port {} is not a TCP port: use 1-65535 (22 for SSH)", env.spec.host.port),
    })
}

/// The Environment's shared SSH master (connecting when needed), masking its secret values.
pub(crate) async fn connection(
    ctx: &Context,
    env: &Environment,
    port: u16,
    credentials: &Credentials,
) -> Result<Arc<crate::remote::HostConnection>, crate::remote::RemoteError> {
    let target = HostTarget {
        address: env.spec.host.address.clone(),
        port,
        user: env.spec.host.user.clone(),
        private_key: credentials.key.clone(),
        known_hosts: String::from_utf8_lossy(credentials.known_hosts.expose()).into_owned(),
    };
    let conn = ctx.hosts.get(&crate::object_key(env), &target).await?;
    conn.redactor().replace_with(&credentials.redactor);
    Ok(conn)
}

/// Connects (or reuses the master) with the pinned host key and runs nothing but the handshake.
async fn check_host(
    ctx: &Context,
    env: &Environment,
    port: u16,
    credentials: &Credentials,
) -> (Observation, Option<Arc<crate::remote::HostConnection>>) {
    let pool_key = crate::object_key(env);
    // The pool checked the master it hands out (or connected it just now).
    let checked = connection(ctx, env, port, credentials).await;
    let observation = match checked {
        Ok(conn) => return (Observation::Reachable, Some(conn)),
        Err(e) => {
            ctx.hosts.evict(&pool_key).await;
            let message = credentials.redactor.redact(&e.to_string());
            tracing::info!(environment = %env.name_any(), reason = e.reason(), error = %message, "host check failed");
            Observation::Unreachable { problem: Problem { reason: e.reason(), message }, transient: e.is_transient() }
        }
    };
    (observation, None)
}

async fn reconcile(
    env: Arc<Environment>,
    ctx: Arc<Context>,
    store: kube::runtime::reflector::Store<Environment>,
) -> Result<Action> {
    let name = env.name_any();
    // A reconcile waits for a slot, then works on the Environment as it is now (the wait can be
    // long on a saturated controller). Deletions have slots of their own, so they neither wait
    // behind monitor rounds nor, many at once, each hold an SSH connection going.
    let deleting = env.metadata.deletion_timestamp.is_some();
    let slots = if deleting { &ctx.deletion_slots } else { &ctx.environment_slots };
    let slot = {
        let _waiting = (!deleting).then(|| Waiting::start(&ctx.metrics));
        match slots.acquire().await {
            Ok(slot) => slot,
            // Closed: the controller is stopping.
            Err(_) => return Ok(Action::await_change()),
        }
    };
    let env = match store.get(&kube::runtime::reflector::ObjectRef::from_obj(env.as_ref())) {
        Some(now) => now,
        None if deleting => env,
        None => return Ok(Action::await_change()),
    };
    let _slot = slot;
    // Boxed: a thousand reconciles may wait at once, each future only as big as this one.
    crate::guarded("Environment", &name, Box::pin(reconcile_inner(env, ctx.clone()))).await
}

/// Counts a reconcile waiting for its slot, for as long as it waits (or until it is dropped).
struct Waiting<'a>(&'a crate::metrics::Metrics);

impl<'a> Waiting<'a> {
    fn start(metrics: &'a crate::metrics::Metrics) -> Self {
        metrics.environments_waiting(1);
        Waiting(metrics)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.environments_waiting(-1);
    }
}

async fn reconcile_inner(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = env.namespace().unwrap_or_default();
    if env.metadata.deletion_timestamp.is_some() {
        ctx.metrics.environment_healthy(&namespace, &env.name_any(), None);
        ctx.monitor.forget(&crate::object_key(env.as_ref()));
        ctx.configs.forget(&crate::object_key(env.as_ref()));
        ctx.revisions.forget(&crate::object_key(env.as_ref()));
        return teardown::reconcile(&ctx, &env).await;
    }
    // The finalizer that makes a deletion wait for a running deploy is added by the request
    // taking the lock; once no request holds it, it goes (an idle Environment is deleted at once).
    let api = Api::<Environment>::namespaced(ctx.client.clone(), &namespace);
    let idle = env.status.as_ref().and_then(|s| s.active_deploy.as_ref()).is_none();
    if idle && teardown::set_finalizer(&api, &env, false).await? == Cas::Conflict {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut secrets = SecretReader::new(ctx.client.clone(), &namespace);
    let (observed, conn) = match (ssh_port(&env), credentials(&env, &mut secrets).await?) {
        (Ok(port), Ok(credentials)) => check_host(&ctx, &env, port, &credentials).await,
        (port, credentials) => (
            Observation::MissingReferences(
                port.err().into_iter().chain(credentials.err().into_iter().flatten()).collect(),
            ),
            None,
        ),
    };
    let (finding, next_round) = match &conn {
        Some(conn) => monitor::observe(&ctx, &env, conn).await?,
        None if env.status.as_ref().and_then(|s| s.current.as_ref()).is_none() => {
            (monitor::Finding::NothingDeployed, RECHECK)
        }
        None => (monitor::Finding::NotChecked { message: "the host was not reached".into() }, RECHECK),
    };
    let now = Timestamp::now();
    let (mut status, transition) = decide(&env, &observed, now);
    let current = env.status.as_ref().and_then(|s| s.current.as_ref());
    let healing = match (&finding, current) {
        (monitor::Finding::Judged { drift: Some(d), .. }, Some(current)) if !d.is_empty() => {
            // A failed heal (the API refused the request) is said in Drifted, never stops the rest.
            let note = drift::heal(&ctx, &env, current).await.unwrap_or_else(|e| {
                tracing::warn!(environment = %env.name_any(), error = %e, "drift heal failed");
                format!("not healed: {e}")
            });
            Some(note).filter(|note| !note.is_empty())
        }
        _ => None,
    };
    // A failed look-up or create keeps the last status and is tried again soon; Ready, Healthy
    // and Drifted are written all the same.
    let declared = revision::reconcile(&ctx, &env, conn.as_deref()).await.unwrap_or_else(|e| {
        tracing::warn!(environment = %env.name_any(), error = %e, "spec.revision: reconcile failed");
        revision::Outcome {
            status: env.status.as_ref().and_then(|s| s.revision.clone()).filter(|_| env.spec.revision.is_some()),
            next: Some(RECHECK_SOON),
            transition: None,
        }
    });
    status.revision = declared.status;
    let decided: Vec<_> = monitor::healthy(&status.conditions, &finding)
        .into_iter()
        .chain(drift::drifted(&status.conditions, &finding, healing.as_deref()))
        .collect();
    status.conditions = conditions::set(&status.conditions, &decided, env.metadata.generation, now);
    let old_conditions = env.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    status.notifications = outbox(&ctx, &env, old_conditions, &status.conditions).await.unwrap_or_else(|e| {
        tracing::warn!(environment = %env.name_any(), error = %e, "notifications: reconcile failed");
        env.status.as_ref().map(|s| s.notifications.clone()).unwrap_or_default()
    });
    let health_transition = monitor::transition(old_conditions, &status.conditions);
    let drift_transition = drift::transition(old_conditions, &status.conditions);
    ctx.metrics.environment_healthy(&namespace, &env.name_any(), monitor::gauge_value(&status.conditions));
    if env.status.as_ref() != Some(&status) {
        // Only the fields this reconcile owns: the lock, queue, current and history belong to
        // the deploy path and an apply that named them would fight it.
        let mut own = serde_json::json!({
            "observedGeneration": status.observed_generation,
            "conditions": status.conditions,
            "notifications": status.notifications,
        });
        // Left out when nothing is declared: the apply then drops what this manager wrote.
        if let Some(revision) = &status.revision {
            own["revision"] = serde_json::json!(revision);
        }
        status::apply_as(&api, env.as_ref(), &own, crate::context::ENVIRONMENT_MANAGER).await?;
    }
    for t in transition.into_iter().chain(health_transition).chain(drift_transition).chain(declared.transition) {
        ctx.event(&env.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    let key = crate::object_key(env.as_ref());
    Ok(match observed {
        Observation::Reachable => {
            ctx.backoff.succeeded(&key);
            let outbox_wait =
                crate::notify::wait(&status.notifications, Timestamp::now()).map(|w| w.max(Duration::from_secs(1)));
            Action::requeue(
                RECHECK.min(next_round).min(declared.next.unwrap_or(RECHECK)).min(outbox_wait.unwrap_or(RECHECK)),
            )
        }
        // Secrets are read with `get` (no watch) and hosts come back by themselves: look again,
        // less and less often while nothing changes.
        _ => Action::requeue(ctx.backoff.failed(&key, RECHECK_SOON)),
    })
}

/// The Environment's outbox after this reconcile: what was due sent (each attempt recorded),
/// then its own events since the last status (`HealthChanged`, `Drifted`) enqueued for the
/// receivers that want them, to be sent by the next reconcile once this status is written.
async fn outbox(
    ctx: &Context,
    env: &Environment,
    old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Result<Vec<slipway_crds::NotificationRecord>> {
    let mut records = env.status.as_ref().map(|s| s.notifications.clone()).unwrap_or_default();
    let receivers = &env.spec.notifications;
    let now = Timestamp::now();
    if crate::notify::wait(&records, now).is_some_and(|w| w.is_zero()) {
        let mut secrets = SecretReader::new(ctx.client.clone(), &env.namespace().unwrap_or_default());
        let attempts = crate::deploy::outbox::attempt_due(ctx, &mut secrets, receivers, &records, now, |format, r| {
            crate::notify::environment_body(format, env, r)
        })
        .await?;
        let name = env.name_any();
        crate::deploy::outbox::settle_all(ctx, &env.object_ref(&()), "Environment", &name, &mut records, &attempts)
            .await;
    }
    let events = crate::notify::environment_events(old, new, &records);
    let due = crate::notify::environment_due(&env.uid().unwrap_or_default(), receivers, &events, &records, now);
    Ok(crate::notify::environment_outbox(records, due))
}

fn error_policy(env: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&crate::object_key(env.as_ref()), crate::backoff::BASE);
    tracing::warn!(environment = %env.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment() -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team", "generation": 2},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"}
            }
        }))
        .unwrap()
    }

    fn problem(reason: &'static str) -> Problem {
        Problem { reason, message: format!("{reason} happened") }
    }

    /// (Ready, Reachable, Reconciling, Stalled) statuses and Ready's reason.
    fn summary(status: &EnvironmentStatus) -> (Vec<&str>, &str) {
        let get = |t| conditions::find(&status.conditions, t).map_or("-", |c| c.status.as_str());
        let ready = conditions::find(&status.conditions, types::READY).unwrap();
        (vec![get(types::READY), get(types::REACHABLE), get(types::RECONCILING), get(types::STALLED)], &ready.reason)
    }

    #[test]
    fn a_failed_automatic_rollback_keeps_the_environment_stalled_while_the_host_answers() {
        let mut env = environment();
        env.status = Some(EnvironmentStatus {
            needs_attention: Some(slipway_crds::Attention {
                message: "the automatic Rollback bad-rollback failed".into(),
                since: "2026-11-29T00:00:00Z".into(),
            }),
            ..Default::default()
        });
        let (status, transition) = decide(&env, &Observation::Reachable, Timestamp::now());
        assert_eq!(summary(&status), (vec!["False", "True", "False", "True"], reasons::ROLLBACK_FAILED));
        let ready = conditions::find(&status.conditions, types::READY).unwrap();
        assert!(ready.message.contains("bad-rollback"), "{}", ready.message);
        assert_eq!(transition.map(|t| t.type_), Some(EventType::Warning));
    }

    #[test]
    fn each_observation_gives_honest_conditions() {
        let cases = [
            (Observation::Reachable, ["True", "True", "False", "False"], "Reachable"),
            (
                Observation::MissingReferences(vec![problem(reasons::SECRET_NOT_FOUND)]),
                ["False", "Unknown", "False", "True"],
                "SecretNotFound",
            ),
            (
                Observation::Unreachable { problem: problem("Unreachable"), transient: true },
                ["False", "False", "True", "False"],
                "Unreachable",
            ),
            (
                Observation::Unreachable { problem: problem("HostKeyMismatch"), transient: false },
                ["False", "False", "False", "True"],
                "HostKeyMismatch",
            ),
        ];
        for (observed, expected, reason) in cases {
            let (status, transition) = decide(&environment(), &observed, Timestamp::now());
            assert_eq!(summary(&status), (expected.to_vec(), reason), "{observed:?}");
            assert_eq!(status.observed_generation, Some(2));
            assert_eq!(transition.map(|t| t.reason), Some(reason.to_string()));
        }
    }

    #[test]
    fn a_reachable_host_that_loses_its_secret_is_no_longer_reported_reachable() {
        let mut env = environment();
        env.status = Some(decide(&env, &Observation::Reachable, Timestamp::now()).0);
        let missing = Observation::MissingReferences(vec![problem(reasons::SECRET_KEY_MISSING)]);
        let (status, _) = decide(&env, &missing, Timestamp::now());
        assert_eq!(conditions::find(&status.conditions, types::REACHABLE).unwrap().status, "Unknown");
    }
}
