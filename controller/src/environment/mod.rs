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

/// What was found about the host, once its references resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reachability {
    NotChecked,
    Reachable,
    /// `transient` problems (host down, timeout) clear by themselves; others need a person.
    Unreachable {
        problem: Problem,
        transient: bool,
    },
}

pub fn decide(
    env: &Environment,
    problems: &[Problem],
    host: &Reachability,
    now: Timestamp,
) -> (EnvironmentStatus, Option<Transition>) {
    let old = env.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = env.metadata.generation;
    let (decided, type_) = if let Some(first) = problems.first() {
        let message = problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; ");
        (references::stalled(&Problem { reason: first.reason, message }), EventType::Warning)
    } else {
        match host {
            Reachability::NotChecked => (
                vec![
                    Decided::new(
                        types::READY,
                        Status::Unknown,
                        reasons::NOT_CHECKED,
                        "Secrets resolved; host not checked yet",
                    ),
                    Decided::new(types::REACHABLE, Status::Unknown, reasons::NOT_CHECKED, "host not checked yet"),
                    Decided::new(types::RECONCILING, Status::True, reasons::NOT_CHECKED, "checking the host"),
                    Decided::new(types::STALLED, Status::False, reasons::REFERENCES_RESOLVED, "Secrets resolved"),
                ],
                EventType::Normal,
            ),
            Reachability::Reachable => (
                vec![
                    Decided::new(
                        types::READY,
                        Status::True,
                        reasons::REACHABLE,
                        "host reachable with its pinned host key",
                    ),
                    Decided::new(
                        types::REACHABLE,
                        Status::True,
                        reasons::REACHABLE,
                        "host reachable with its pinned host key",
                    ),
                    Decided::new(types::RECONCILING, Status::False, reasons::REACHABLE, ""),
                    Decided::new(types::STALLED, Status::False, reasons::REACHABLE, ""),
                ],
                EventType::Normal,
            ),
            Reachability::Unreachable { problem: p, transient } => {
                let mut decided = if *transient {
                    references::progressing(p.reason, p.message.clone())
                } else {
                    references::stalled(p)
                };
                decided.push(Decided::new(types::REACHABLE, Status::False, p.reason, p.message.clone()));
                (decided, EventType::Warning)
            }
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
async fn check_host(ctx: &Context, env: &Environment, key: SecretBytes, known_hosts: &SecretBytes) -> Reachability {
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
        Ok(()) => Reachability::Reachable,
        Err(e) => {
            ctx.hosts.evict(&pool_key).await;
            tracing::info!(environment = %env.name_any(), reason = e.reason(), "host check failed");
            Reachability::Unreachable {
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
    let (problems, host) = match credentials(&env, &secrets).await? {
        Ok((key, known_hosts)) => (Vec::new(), check_host(&ctx, &env, key, &known_hosts).await),
        Err(problems) => (problems, Reachability::NotChecked),
    };
    let (status, transition) = decide(&env, &problems, &host, Timestamp::now());
    if env.status.as_ref() != Some(&status) {
        status::apply(&Api::<Environment>::namespaced(ctx.client.clone(), &namespace), env.as_ref(), &status).await?;
    }
    if let Some(t) = transition {
        ctx.event(&env.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    Ok(Action::requeue(if host == Reachability::Reachable { RECHECK } else { RECHECK_SOON }))
}

fn error_policy(env: Arc<Environment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    tracing::warn!(environment = %env.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
