//! The Environment controller: validates the Secrets an Environment names and reports Ready.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::{reasons, types};
use slipway_crds::{Environment, EnvironmentStatus};

use crate::conditions::{Decided, Status};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::references::{self, Problem};
use crate::remote::{HostTarget, SecretBytes};
use crate::{Scope, Transition, conditions, status};

pub const CONTROLLER: &str = "environment";

/// Secrets are read with `get` only (no cluster-wide watch), so a missing Secret or an unreachable
/// host is looked at again after this long.
const RECHECK_SOON: Duration = Duration::from_secs(15);
/// A reachable host is checked again after this long.
const RECHECK: Duration = Duration::from_secs(300);

pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let environments: Api<Environment> = scope.api(&ctx.client);
    let controller = Controller::new(environments, watcher::Config::default());
    controller.graceful_shutdown_on(shutdown).run(reconcile, error_policy, ctx).for_each(|_| async {}).await;
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
    status.conditions = conditions::set(&old.conditions, &decided, env.metadata.generation, now);
    let transition = Transition::between(&old.conditions, &status.conditions, type_);
    (status, transition)
}

/// The SSH credentials an Environment names, or the problems with its Secrets, each message
/// naming the Secret and the fix.
async fn credentials(
    env: &Environment,
    secrets: &Api<Secret>,
) -> Result<Result<(SecretBytes, SecretBytes), Vec<Problem>>> {
    let key = references::secret_key(secrets, "spec.sshKeySecretRef", &env.spec.ssh_key_secret_ref).await?;
    let known_hosts =
        references::secret_key(secrets, "spec.knownHostsSecretRef", &env.spec.known_hosts_secret_ref).await?;
    let env_secret = match &env.spec.env_secret_ref {
        Some(r) => references::secret(secrets, "spec.envSecretRef", r).await?,
        None => None,
    };
    Ok(match (key, known_hosts, env_secret) {
        (Ok(key), Ok(known_hosts), None) => Ok((key, known_hosts)),
        (key, known_hosts, env_secret) => {
            Err(key.err().into_iter().chain(known_hosts.err()).chain(env_secret).collect())
        }
    })
}

/// Connects (or reuses the master) with the pinned host key and runs nothing but the handshake.
async fn check_host(ctx: &Context, env: &Environment, key: SecretBytes, known_hosts: &SecretBytes) -> Observation {
    let target = HostTarget {
        address: env.spec.host.address.clone(),
        port: u16::try_from(env.spec.host.port).unwrap_or(22),
        user: env.spec.host.user.clone(),
        private_key: key,
        known_hosts: String::from_utf8_lossy(known_hosts.expose()).into_owned(),
    };
    let pool_key = format!("{}/{}", env.namespace().unwrap_or_default(), env.name_any());
    let checked = match ctx.hosts.get(&pool_key, &target).await {
        Ok(conn) => conn.check().await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Observation::Reachable,
        Err(e) => {
            ctx.hosts.evict(&pool_key).await;
            tracing::info!(environment = %env.name_any(), reason = e.reason(), "host check failed");
            Observation::Unreachable {
                problem: Problem { reason: e.reason(), message: e.to_string() },
                transient: e.is_transient(),
            }
        }
    }
}

async fn reconcile(env: Arc<Environment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = env.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let observed = match credentials(&env, &secrets).await? {
        Ok((key, known_hosts)) => check_host(&ctx, &env, key, &known_hosts).await,
        Err(problems) => Observation::MissingReferences(problems),
    };
    let (status, transition) = decide(&env, &observed, Timestamp::now());
    if env.status.as_ref() != Some(&status) {
        status::apply(&Api::<Environment>::namespaced(ctx.client.clone(), &namespace), env.as_ref(), &status).await?;
    }
    if let Some(t) = transition {
        ctx.event(&env.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    Ok(Action::requeue(if observed == Observation::Reachable { RECHECK } else { RECHECK_SOON }))
}

fn error_policy(env: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    tracing::warn!(environment = %env.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
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
