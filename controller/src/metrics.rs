//! Prometheus metrics: reconcile counts, errors and durations per controller.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub namespace: String,
    pub environment: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Family<ControllerLabel, Histogram>,
    deploys: Family<ResultLabel, Counter>,
    phase_durations: Family<PhaseLabel, Histogram>,
    queue_depth: Family<QueueLabels, Gauge>,
    environment_healthy: Family<QueueLabels, Gauge>,
    /// The series `environment_healthy` holds (a Family cannot list its own).
    environment_seen: std::sync::Mutex<std::collections::HashSet<QueueLabels>>,
    notifications: Family<ResultLabel, Counter>,
    compose_configs: Family<SourceLabel, Counter>,
    deploy_compose_configs: Family<SourceLabel, Counter>,
    leader: Gauge,
    ssh_masters: Gauge,
    ssh_handles: Gauge,
    environments_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("slipway");
        let reconciles = Family::<ControllerLabel, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let durations = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register("reconciles", "Reconciliations run, per controller", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, per controller and error kind",
            errors.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", durations.clone());
        let deploys = Family::<ResultLabel, Counter>::default();
        registry.register(
            "deploys",
            "Deploys that ended, per result (Succeeded, UpToDate, Failed, Abandoned)",
            deploys.clone(),
        );
        let phase_durations =
            Family::<PhaseLabel, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.5, 2.0, 14)));
        registry.register(
            "deploy_phase_duration_seconds",
            "Time a deploy spent in each phase",
            phase_durations.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register("queue_depth", "Requests waiting for an Environment's deploy lock", queue_depth.clone());
        let environment_healthy = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "environment_healthy",
            "1 when the Environment's last monitor round passed, 0 when it failed; absent while not judged",
            environment_healthy.clone(),
        );
        let notifications = Family::<ResultLabel, Counter>::default();
        registry.register(
            "notifications",
            "Notification delivery attempts, per result (delivered; failed: will be retried; gave_up: failed for good)",
            notifications.clone(),
        );
        let compose_configs = Family::<SourceLabel, Counter>::default();
        registry.register(
            "monitor_compose_config",
            "Compose models the monitor's rounds judged against, per source (host: `compose config` ran on the host; cache: an earlier round's, nothing it reads having changed)",
            compose_configs.clone(),
        );
        let deploy_compose_configs = Family::<SourceLabel, Counter>::default();
        registry.register(
            "deploy_compose_config",
            "Compose models the verification and bake rounds of deploys and rollbacks judged against, per source (host: `compose config` ran on the host; cache: an earlier round's, nothing it reads having changed)",
            deploy_compose_configs.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (holds the leader Lease, or runs without election)",
            leader.clone(),
        );
        let ssh_masters = Gauge::default();
        registry.register(
            "ssh_masters",
            "SSH master connections open; Environments with the same address, port, user, key and known_hosts share one",
            ssh_masters.clone(),
        );
        let ssh_handles = Gauge::default();
        registry.register("ssh_environments", "Environments holding a handle on an SSH master", ssh_handles.clone());
        let environments_waiting = Gauge::default();
        registry.register(
            "environment_reconciles_waiting",
            "Environment reconciles (host checks and monitor rounds) due but waiting for one of the --environment-concurrency slots; above 0 for long, the hosts cannot keep up with the monitor intervals and every Environment's rounds come later, in the order they fell due",
            environments_waiting.clone(),
        );
        Metrics {
            registry,
            reconciles,
            errors,
            durations,
            deploys,
            phase_durations,
            queue_depth,
            environment_healthy,
            environment_seen: Default::default(),
            notifications,
            compose_configs,
            deploy_compose_configs,
            leader,
            ssh_masters,
            ssh_handles,
            environments_waiting,
        }
    }
}

impl Metrics {
    /// Counts a reconcile now and its duration when the returned guard drops.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles.get_or_create(&ControllerLabel { controller }).inc();
        ReconcileTimer {
            histogram: self.durations.get_or_create(&ControllerLabel { controller }).clone(),
            start: Instant::now(),
        }
    }

    pub fn error(&self, controller: &'static str, error: &'static str) {
        self.errors.get_or_create(&ErrorLabels { controller, error }).inc();
    }

    /// This replica runs the controllers (`true`) or stands by.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The SSH pool's size, set when metrics are scraped.
    pub fn set_ssh(&self, masters: usize, environments: usize) {
        self.ssh_masters.set(i64::try_from(masters).unwrap_or(i64::MAX));
        self.ssh_handles.set(i64::try_from(environments).unwrap_or(i64::MAX));
    }

    /// An Environment reconcile starts (`1`) or stops (`-1`) waiting for a slot.
    pub fn environments_waiting(&self, change: i64) {
        self.environments_waiting.inc_by(change);
    }

    /// A deploy ended with `result`.
    pub fn deploy_ended(&self, result: &'static str) {
        self.deploys.get_or_create(&ResultLabel { result }).inc();
    }

    /// A deploy spent `seconds` in `phase`.
    pub fn phase_took(&self, phase: &'static str, seconds: f64) {
        self.phase_durations.get_or_create(&PhaseLabel { phase }).observe(seconds.max(0.0));
    }

    /// `depth` requests wait for the lock of `namespace/environment`.
    pub fn queue_depth(&self, namespace: &str, environment: &str, depth: usize) {
        let labels = QueueLabels { namespace: namespace.to_owned(), environment: environment.to_owned() };
        self.queue_depth.get_or_create(&labels).set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// The health of `namespace/environment` (1 or 0); `None` removes its series (not judged, deleted).
    pub fn environment_healthy(&self, namespace: &str, environment: &str, value: Option<i64>) {
        let labels = QueueLabels { namespace: namespace.to_owned(), environment: environment.to_owned() };
        match value {
            Some(v) => {
                self.environment_healthy.get_or_create(&labels).set(v);
                self.environment_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(labels);
            }
            None => {
                self.environment_healthy.remove(&labels);
            }
        }
    }

    /// Drops the health series of Environments `alive` does not name (deleted ones).
    pub fn retain_environments(&self, alive: impl Fn(&str, &str) -> bool) {
        let seen = self.environment_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for labels in seen.iter().filter(|l| !alive(&l.namespace, &l.environment)) {
            self.environment_healthy.remove(labels);
        }
        self.environment_seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|l| alive(&l.namespace, &l.environment));
    }

    /// A notification attempt ended with `result` (`delivered`, `failed`, `gave_up`).
    pub fn notification(&self, result: &'static str) {
        self.notifications.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts a monitor round's compose model by where it came from (`host` or `cache`).
    pub fn compose_config(&self, source: &'static str) {
        self.compose_configs.get_or_create(&SourceLabel { source }).inc();
    }

    /// Counts a deploy's verification or bake round's compose model by where it came from.
    pub fn deploy_compose_config(&self, source: &'static str) {
        self.deploy_compose_configs.get_or_create(&SourceLabel { source }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer {
    histogram: Histogram,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_and_errors_per_controller() {
        let m = Metrics::default();
        drop(m.reconcile("deployrequest"));
        drop(m.reconcile("deployrequest"));
        m.error("environment", "kube");
        let text = m.render();
        assert!(text.contains("slipway_reconciles_total{controller=\"deployrequest\"} 2"), "{text}");
        assert!(text.contains("slipway_reconcile_errors_total{controller=\"environment\",error=\"kube\"} 1"), "{text}");
        assert!(text.contains("slipway_reconcile_duration_seconds_count{controller=\"deployrequest\"} 2"), "{text}");
        m.deploy_ended("Succeeded");
        m.phase_took("Migrating", 3.0);
        m.queue_depth("team", "staging", 2);
        let text = m.render();
        assert!(text.contains("slipway_deploys_total{result=\"Succeeded\"} 1"), "{text}");
        assert!(text.contains("slipway_deploy_phase_duration_seconds_count{phase=\"Migrating\"} 1"), "{text}");
        assert!(text.contains("slipway_queue_depth{namespace=\"team\",environment=\"staging\"} 2"), "{text}");
        m.environment_healthy("team", "staging", Some(0));
        let text = m.render();
        assert!(text.contains("slipway_environment_healthy{namespace=\"team\",environment=\"staging\"} 0"), "{text}");
        m.environment_healthy("team", "staging", None);
        assert!(!m.render().contains("slipway_environment_healthy{"), "not judged: no series");
        m.environment_healthy("team", "staging", Some(1));
        m.environment_healthy("team", "gone", Some(1));
        m.retain_environments(|_, name| name == "staging");
        let text = m.render();
        assert!(text.contains("environment=\"staging\"") && !text.contains("environment=\"gone\""), "{text}");
        m.compose_config("cache");
        assert!(m.render().contains("slipway_monitor_compose_config_total{source=\"cache\"} 1"));
        m.notification("delivered");
        m.notification("gave_up");
        let text = m.render();
        assert!(text.contains("slipway_notifications_total{result=\"delivered\"} 1"), "{text}");
        assert!(text.contains("slipway_notifications_total{result=\"gave_up\"} 1"), "{text}");
    }
}
