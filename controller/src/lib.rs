//! Slipway controller library: one module per resource, status math, metrics and the remote layer.

pub mod backoff;
pub mod conditions;
pub mod context;
pub mod deploy;
pub mod deploy_request;
pub mod environment;
pub mod error;
pub mod events;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod references;
pub mod remote;
pub mod rollback;
pub mod secrets;
pub mod shard;
pub mod status;
pub mod url_check;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use slipway_crds::conditions::types;
use slipway_crds::{DeployRequest, Environment, Rollback};

/// Reconciles run at once per controller. Unbounded, a restart with a thousand Environments
/// starts a thousand reconciles together, each reading Secrets and writing status: the API server
/// answered 504s and status writes timed out (benchmark P5). Reconciles are short (host work runs
/// as host jobs and is polled), so a bound keeps the API server's load flat at little cost; it is
/// generous because a reconcile of an unreachable host can take its connect timeout (15 s).
pub const RECONCILE_CONCURRENCY: u16 = 64;

/// The kube-runtime controller settings every Slipway controller uses.
pub fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY)
}

/// API requests in flight at once, over all controllers. kube's client opens one HTTP/1.1
/// connection per request in flight and keeps each open while idle: after a thousand
/// Environments' first reconciles the controller held 137 connections to the API server, each
/// with its TLS state and buffers (benchmark P5). A request waits for a slot once this many are
/// in flight; a watch holds a slot only until its response starts, so watches never starve the
/// rest. (The leader election's Lease has a client of its own.)
pub const API_CONCURRENCY: usize = 32;

/// How long a request may hold a slot waiting for its response to start (kube's retries of a
/// 429 or 503 included). kube sets no read timeout, so without it a request on a connection
/// that died half-open would hold its slot until the kernel gave up on the connection.
pub const API_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The controller's API client: kube's default stack for `config`, with at most
/// [`API_CONCURRENCY`] requests in flight, each answered within [`API_RESPONSE_TIMEOUT`].
pub fn api_client(config: kube::Config) -> Result<Client, kube::Error> {
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&tower::timeout::TimeoutLayer::new(API_RESPONSE_TIMEOUT))
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(API_CONCURRENCY))
        .build())
}

/// The client the leader election renews its Lease over: kube's stack for `config` without its
/// retries, each request answered within `within` (the renewal's grace) or failed, so a renewal
/// can neither wait behind the controllers' requests nor hang on a dead connection.
pub fn lease_client(mut config: kube::Config, within: std::time::Duration) -> Result<Client, kube::Error> {
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&tower::timeout::TimeoutLayer::new(within)).build())
}

/// The annotation in which `kubectl apply` keeps a whole copy of the object as applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the watch cache keeps of an object. The cache holds every DeployRequest, Rollback and
/// Environment in scope for the controller's lifetime, so this is most of its memory
/// (benchmark P5). Nothing sends a cached object back whole (status and metadata changes are
/// patches of their own fields), so nothing trimmed is lost on the server.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    /// Drops what no reconcile reads from the cached copy: by default [`trim_metadata`].
    fn trim_for_cache(&mut self) {
        trim_metadata(self.meta_mut());
    }
}

/// Drops an object's managedFields (each field manager's field set, often larger than the
/// object) and the copy of the object `kubectl apply` keeps in [`LAST_APPLIED`].
pub fn trim_metadata(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A finished request's status in brief: its phase and notification outbox (what the
/// reconcile of a finished request reads; it reads the whole request where it needs more). A
/// finished request never changes again, and most of the requests a cluster stores are finished.
pub fn brief_if_finished(status: &mut slipway_crds::DeployRequestStatus) {
    if status.phase.is_some_and(slipway_crds::Phase::is_terminal) {
        *status = slipway_crds::DeployRequestStatus {
            phase: status.phase,
            observed_generation: status.observed_generation,
            notifications: std::mem::take(&mut status.notifications),
            ..Default::default()
        };
    }
}

impl Cached for Environment {}

impl Cached for DeployRequest {
    fn trim_for_cache(&mut self) {
        trim_metadata(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            brief_if_finished(status);
        }
    }
}

impl Cached for Rollback {
    fn trim_for_cache(&mut self) {
        trim_metadata(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            brief_if_finished(status);
        }
    }
}

/// A controller of `K` over `api`, whose cache holds objects trimmed by [`Cached::trim_for_cache`].
pub fn trimmed_controller<K: Cached>(
    api: Api<K>,
    config: kube::runtime::watcher::Config,
) -> kube::runtime::Controller<K> {
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = cached_objects(writer, kube::runtime::watcher(api, config));
    kube::runtime::Controller::for_stream(objects, reader).with_config(controller_config())
}

/// The objects of a watch, each trimmed before `writer`'s cache stores it (and passed on trimmed).
pub fn cached_objects<K: Cached>(
    writer: kube::runtime::reflector::store::Writer<K>,
    events: impl futures::Stream<Item = kube::runtime::watcher::Result<kube::runtime::watcher::Event<K>>> + Send,
) -> impl futures::Stream<Item = kube::runtime::watcher::Result<K>> + Send {
    use kube::runtime::WatchStreamExt;
    kube::runtime::reflector(writer, events.modify(K::trim_for_cache)).applied_objects()
}

/// What the controllers watch: one namespace or all of them, and of those the objects a shard's
/// label selector matches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub namespace: Option<String>,
    pub shard: shard::Shard,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        match &self.namespace {
            None => Api::all(client.clone()),
            Some(ns) => Api::namespaced(client.clone(), ns),
        }
    }

    /// The watch of the controllers' own kinds: this shard's objects only.
    pub fn watcher_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match self.shard.label_selector() {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }
}

/// An Event worth recording: the Ready condition changed its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub type_: EventType,
    pub reason: String,
    pub note: String,
}

impl Transition {
    /// A transition when `new`'s Ready condition differs in status or reason from `old`'s.
    pub fn between(old: &[Condition], new: &[Condition], type_: EventType) -> Option<Transition> {
        let before = conditions::find(old, types::READY);
        let after = conditions::find(new, types::READY)?;
        let changed = before.is_none_or(|b| b.status != after.status || b.reason != after.reason);
        changed.then(|| Transition { type_, reason: after.reason.clone(), note: after.message.clone() })
    }
}

/// Runs one reconcile; a panic inside it becomes [`error::Error::Panic`] for this object instead
/// of taking the controller down (kube-runtime re-raises reconcile panics), so one hostile input
/// cannot crash-loop the controller for everyone.
pub async fn guarded<F>(kind: &str, name: &str, reconcile: F) -> error::Result<kube::runtime::controller::Action>
where
    F: Future<Output = error::Result<kube::runtime::controller::Action>>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(reconcile).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            tracing::error!(kind, name, detail, "reconcile panicked");
            Err(error::Error::Panic { kind: kind.to_owned(), name: name.to_owned(), detail })
        }
    }
}

/// `kind/namespace/name`: the key of an object in per-object state (backoff, SSH pool).
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{}/{}/{}", K::kind(&()), obj.meta().namespace.as_deref().unwrap_or_default(), obj.name_any())
}

/// Objects whose spec names an Environment in their own namespace.
pub trait NamesEnvironment: Resource<DynamicType = ()> + Clone {
    fn environment(&self) -> &str;
    fn request_status(&self) -> Option<&slipway_crds::DeployRequestStatus>;
}

impl NamesEnvironment for DeployRequest {
    fn environment(&self) -> &str {
        &self.spec.environment
    }
    fn request_status(&self) -> Option<&slipway_crds::DeployRequestStatus> {
        self.status.as_ref()
    }
}

impl NamesEnvironment for Rollback {
    fn environment(&self) -> &str {
        &self.spec.environment
    }
    fn request_status(&self) -> Option<&slipway_crds::DeployRequestStatus> {
        self.status.as_ref()
    }
}

/// Whether a change of `env` concerns `obj`, which names it: everything but a finished request
/// that neither holds `env`'s lock nor has a notification left to deliver. Such a request never
/// changes again, and a reconcile of it reads the Environment from the API server to decide so:
/// with ten finished requests per Environment, each Environment status write made ten such reads.
pub fn woken_by<K: NamesEnvironment>(obj: &K, env: &Environment) -> bool {
    let Some(st) = obj.request_status() else { return true };
    if !st.phase.is_some_and(slipway_crds::Phase::is_terminal) {
        return true;
    }
    let holder = env.status.as_ref().and_then(|s| s.active_deploy.as_deref());
    let holds = holder.is_some_and(|h| {
        deploy::plan::parse_holder(h).is_some_and(|(kind, name, uid)| {
            kind == K::kind(&()) && Some(name) == obj.meta().name.as_deref() && Some(uid) == obj.meta().uid.as_deref()
        })
    });
    holds || st.notifications.iter().any(|n| n.state == slipway_crds::DeliveryState::Pending)
}

/// The objects in `store` naming `env` that a change of it concerns ([`woken_by`]): an
/// Environment appearing or changing wakes exactly these.
pub fn naming<K: NamesEnvironment>(store: &Store<K>, env: &Environment) -> Vec<ObjectRef<K>> {
    // Compared in place: this runs over every cached request on each Environment event.
    let (namespace, name) = (env.meta().namespace.as_deref(), env.meta().name.as_deref());
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == namespace && Some(o.environment()) == name)
        .filter(|o| woken_by(o.as_ref(), env))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

/// Runs the controller of `K` until `shutdown`: each object is reconciled when it changes and
/// whenever the Environment it names appears or changes (a watch relation, not polling);
/// `configure` adds further relations.
pub async fn run_naming_environment<K, F>(
    ctx: std::sync::Arc<context::Context>,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    configure: impl FnOnce(kube::runtime::Controller<K>) -> kube::runtime::Controller<K>,
    reconcile: impl FnMut(std::sync::Arc<K>, std::sync::Arc<context::Context>) -> F,
    error_policy: impl Fn(
        std::sync::Arc<K>,
        &error::Error,
        std::sync::Arc<context::Context>,
    ) -> kube::runtime::controller::Action,
) where
    K: NamesEnvironment<Scope = NamespaceResourceScope> + Cached + deploy::watch::Woken,
    F: Future<Output = error::Result<kube::runtime::controller::Action>> + Send + 'static,
{
    use futures::StreamExt;
    let controller = trimmed_controller(scope.api::<K>(&ctx.client), scope.watcher_config());
    let store = controller.store();
    let controller = configure(controller);
    // Requests whose running host job ended, woken by its watch (`deploy::watch`).
    let controller = match K::wakes(&ctx.job_watches) {
        Some(wakes) => controller.reconcile_on(wakes),
        None => controller,
    };
    // On shutdown the watches end too: the next leader looks at the jobs again.
    let closing = ctx.clone();
    let shutdown = async move {
        shutdown.await;
        closing.job_watches.stop();
    };
    controller
        .watches(scope.api::<Environment>(&ctx.client), scope.watcher_config(), move |env| naming(&store, &env))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind = K::kind(&()).as_ref(), error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_reconcile_is_an_error_for_that_object_only() {
        let err = guarded("Environment", "staging", async {
            // What `Duration::from_secs_f64` did with a hostile compose duration.
            let _ = std::time::Duration::from_secs_f64(std::hint::black_box(f64::MAX));
            Ok(kube::runtime::controller::Action::await_change())
        })
        .await
        .unwrap_err();
        assert_eq!(err.metric_label(), "panic");
        assert!(err.to_string().contains("staging"), "{err}");
        let ok = guarded("Environment", "staging", async { Ok(kube::runtime::controller::Action::await_change()) });
        assert!(ok.await.is_ok());
    }

    #[test]
    fn the_cache_keeps_what_reconciles_read_and_drops_managed_fields_and_the_applied_copy() {
        let mut dr: DeployRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1",
            "kind": "DeployRequest",
            "metadata": {
                "name": "v2", "namespace": "shop", "labels": {"team": "a"},
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "slipway.dev/desired-revision": "abc"},
                "finalizers": ["slipway.dev/deploy"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {"f:ref": {}}}}],
            },
            "spec": {"environment": "staging", "ref": "v2"},
            "status": {"phase": "Succeeded"},
        }))
        .unwrap();
        let before = dr.clone();
        dr.trim_for_cache();
        assert_eq!(dr.metadata.managed_fields, None);
        let annotations = dr.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["slipway.dev/desired-revision"]);
        assert_eq!((dr.spec, dr.status), (before.spec, before.status));
        assert_eq!((dr.metadata.labels, dr.metadata.finalizers), (before.metadata.labels, before.metadata.finalizers));

        let mut only_applied: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "annotations": {LAST_APPLIED: "{}"}},
            "spec": {"host": {"address": "h", "user": "deploy", "path": "/srv/shop"},
                     "sshKeySecretRef": {"name": "k", "key": "id"},
                     "knownHostsSecretRef": {"name": "k", "key": "known_hosts"}, "compose": {"files": ["docker-compose.yml"]}},
        }))
        .unwrap();
        only_applied.trim_for_cache();
        assert_eq!(only_applied.metadata.annotations, None);
    }

    /// The Environment `shop/staging` the wake tests name.
    fn staging_in_shop() -> Environment {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "shop"},
            "spec": {"host": {"address": "h", "user": "deploy", "path": "/srv/shop"},
                     "sshKeySecretRef": {"name": "k", "key": "id"},
                     "knownHostsSecretRef": {"name": "k", "key": "known_hosts"}, "compose": {"files": ["docker-compose.yml"]}},
        }))
        .unwrap()
    }

    #[test]
    fn an_environment_wakes_the_requests_naming_it_in_its_own_namespace_only() {
        let request = |ns: &str, name: &str, env: &str| -> DeployRequest {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest",
                "metadata": {"name": name, "namespace": ns}, "spec": {"environment": env, "ref": "v2"},
            }))
            .unwrap()
        };
        let (store, mut writer) = kube::runtime::reflector::store::<DeployRequest>();
        for dr in [request("shop", "a", "staging"), request("shop", "b", "production"), request("blog", "c", "staging")]
        {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(dr));
        }
        let mut staging = staging_in_shop();
        let names = |env: &Environment| naming(&store, env).into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(names(&staging), ["a"]);
        staging.metadata.namespace = Some("blog".into());
        assert_eq!(names(&staging), ["c"]);
        staging.metadata.name = Some("qa".into());
        assert!(names(&staging).is_empty());
    }

    #[test]
    fn a_finished_request_is_woken_only_while_it_holds_the_lock_or_has_a_notification_to_deliver() {
        use slipway_crds::{DeployRequestStatus, NotificationEvent, NotificationRecord, Phase};
        let request = |name: &str, status: Option<DeployRequestStatus>| -> DeployRequest {
            let mut dr: DeployRequest = serde_json::from_value(serde_json::json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest",
                "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
                "spec": {"environment": "staging", "ref": "v2"},
            }))
            .unwrap();
            dr.status = status;
            dr
        };
        let phase = |p: Phase| Some(DeployRequestStatus { phase: Some(p), ..Default::default() });
        let pending = NotificationRecord::pending(
            "chat",
            NotificationEvent::Succeeded,
            "e1".into(),
            "2026-11-30T08:00:00Z".into(),
        );
        let mut delivered = pending.clone();
        delivered.state = slipway_crds::DeliveryState::Delivered;
        let (store, mut writer) = kube::runtime::reflector::store::<DeployRequest>();
        for dr in [
            request("new", None),
            request("queued", phase(Phase::Queued)),
            request("done", phase(Phase::Succeeded)),
            request("failed", phase(Phase::Failed)),
            request(
                "told",
                Some(DeployRequestStatus {
                    phase: Some(Phase::Succeeded),
                    notifications: vec![delivered],
                    ..Default::default()
                }),
            ),
            request(
                "telling",
                Some(DeployRequestStatus {
                    phase: Some(Phase::Succeeded),
                    notifications: vec![pending],
                    ..Default::default()
                }),
            ),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(dr));
        }
        let mut staging = staging_in_shop();
        let names = |env: &Environment| {
            let mut n = naming(&store, env).into_iter().map(|r| r.name).collect::<Vec<_>>();
            n.sort();
            n
        };
        assert_eq!(names(&staging), ["new", "queued", "telling"]);
        // Finished, but the controller stopped before it released the lock: woken to release it.
        staging.status = Some(slipway_crds::EnvironmentStatus {
            active_deploy: Some(deploy::plan::holder_id("DeployRequest", "failed", "uid-failed")),
            ..Default::default()
        });
        assert_eq!(names(&staging), ["failed", "new", "queued", "telling"]);
        // A lock held by another object of that name (another uid) is not this request's.
        staging.status.as_mut().unwrap().active_deploy =
            Some(deploy::plan::holder_id("DeployRequest", "failed", "uid-old"));
        assert_eq!(names(&staging), ["new", "queued", "telling"]);
    }

    #[tokio::test]
    async fn the_controllers_cache_holds_what_the_watch_brought_trimmed() {
        use futures::StreamExt;
        use kube::runtime::watcher::Event;
        let request = |name: &str, phase: &str| -> DeployRequest {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest",
                "metadata": {"name": name, "namespace": "shop", "annotations": {LAST_APPLIED: "{}"},
                             "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
                "spec": {"environment": "staging", "ref": "v2"},
                "status": {"phase": phase, "commit": "abc"},
            }))
            .unwrap()
        };
        let (reader, writer) = kube::runtime::reflector::store::<DeployRequest>();
        let events = futures::stream::iter([
            Ok(Event::Init),
            Ok(Event::InitApply(request("done", "Succeeded"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(request("running", "Verifying"))),
        ]);
        let passed: Vec<DeployRequest> = cached_objects(writer, events).map(Result::unwrap).collect().await;
        assert_eq!(passed.len(), 2);
        let cached = |name: &str| reader.get(&ObjectRef::new(name).within("shop")).unwrap();
        for name in ["done", "running"] {
            assert_eq!(cached(name).metadata.managed_fields, None, "{name}");
            assert_eq!(cached(name).metadata.annotations, None, "{name}");
        }
        assert_eq!(cached("done").status.clone().unwrap().commit, None, "a finished request is cached in brief");
        assert_eq!(cached("running").status.clone().unwrap().commit.as_deref(), Some("abc"));
        assert!(passed.iter().all(|o| o.metadata.managed_fields.is_none()), "passed on trimmed too");
    }

    #[test]
    fn the_cache_keeps_a_finished_request_in_brief_and_a_running_one_whole() {
        use slipway_crds::{DeployRequestStatus, Phase};
        let at = k8s_openapi::jiff::Timestamp::now();
        let condition = |t: &str| Condition {
            type_: t.into(),
            status: "True".into(),
            reason: "Succeeded".into(),
            message: "deployed v2".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
            observed_generation: Some(1),
        };
        let outbox = vec![slipway_crds::NotificationRecord::pending(
            "chat",
            slipway_crds::NotificationEvent::Succeeded,
            "e1".into(),
            "2026-11-30T08:00:00Z".into(),
        )];
        let status = |phase: Phase| DeployRequestStatus {
            phase: Some(phase),
            observed_generation: Some(1),
            conditions: vec![condition("Ready")],
            commit: Some("abc".into()),
            notifications: outbox.clone(),
            ..Default::default()
        };
        let request = |phase: Phase| {
            let mut dr: DeployRequest = serde_json::from_value(serde_json::json!({
                "apiVersion": "slipway.dev/v1alpha1", "kind": "DeployRequest",
                "metadata": {"name": "v2"}, "spec": {"environment": "staging", "ref": "v2"},
            }))
            .unwrap();
            dr.status = Some(status(phase));
            dr
        };
        let mut finished = request(Phase::Succeeded);
        finished.trim_for_cache();
        let brief = finished.status.unwrap();
        assert_eq!((brief.phase, brief.observed_generation), (Some(Phase::Succeeded), Some(1)));
        assert_eq!(brief.notifications, outbox, "the outbox a finished request still delivers is kept");
        assert!(brief.conditions.is_empty() && brief.commit.is_none());
        for phase in [Phase::Verifying, Phase::RollingBack] {
            let mut running = request(phase);
            running.trim_for_cache();
            assert_eq!(running.status, Some(status(phase)), "{phase:?} is cached whole");
        }
        let mut rollback: Rollback = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Rollback",
            "metadata": {"name": "undo"}, "spec": {"environment": "staging", "to": {"ref": "v1"}, "reason": "v2 broke checkout"},
        }))
        .unwrap();
        rollback.status = Some(status(Phase::Failed));
        rollback.trim_for_cache();
        assert!(rollback.status.unwrap().conditions.is_empty());
    }
}
