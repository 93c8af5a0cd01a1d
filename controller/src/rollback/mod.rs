//! The Rollback controller: validates its Environment reference and queues.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::reasons;
use slipway_crds::{Environment, Rollback, RollbackPhase, RollbackStatus, RollbackTarget};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::{Scope, Transition, conditions, references, status};

pub const CONTROLLER: &str = "rollback";

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    crate::run_naming_environment::<Rollback, _>(ctx, scope, shutdown, reconcile, error_policy).await;
}

/// The target as people write it: `previous release`, `tag v1.1.0`, `release 4f1c2ab`.
pub fn target_display(to: &RollbackTarget) -> String {
    match (&to.tag, &to.release) {
        (Some(tag), _) => format!("tag {tag}"),
        (_, Some(commit)) => format!("release {commit}"),
        _ => "previous release".to_string(),
    }
}

pub fn decide(
    rb: &Rollback,
    environment: Option<&Environment>,
    now: Timestamp,
) -> (RollbackStatus, Option<Transition>) {
    let old = rb.status.clone().unwrap_or_default();
    if matches!(old.phase, Some(RollbackPhase::Succeeded | RollbackPhase::Failed)) {
        return (old, None);
    }
    let namespace = rb.namespace().unwrap_or_default();
    let mut status = old.clone();
    status.target = Some(target_display(&rb.spec.to));
    status.observed_generation = rb.metadata.generation;
    let (decided, type_) = match environment {
        None => (
            references::stalled(&references::environment_not_found("Rollback", &rb.spec.environment, &namespace)),
            EventType::Warning,
        ),
        Some(_) => {
            status.phase = Some(RollbackPhase::Queued);
            let message = format!("Queued for Environment {:?}: waiting for its deploy lock", rb.spec.environment);
            (references::progressing(reasons::QUEUED, message), EventType::Normal)
        }
    };
    status.conditions = conditions::set(&old.conditions, &decided, rb.metadata.generation, now);
    let transition = Transition::between(&old.conditions, &status.conditions, type_);
    (status, transition)
}

async fn reconcile(rb: Arc<Rollback>, ctx: Arc<Context>) -> Result<Action> {
    let name = rb.name_any();
    let key = crate::object_key(rb.as_ref());
    let result = crate::guarded("Rollback", &name, reconcile_inner(rb, ctx.clone())).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

async fn reconcile_inner(rb: Arc<Rollback>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = rb.namespace().unwrap_or_default();
    let environment =
        Api::<Environment>::namespaced(ctx.client.clone(), &namespace).get_opt(&rb.spec.environment).await?;
    let (status, transition) = decide(&rb, environment.as_ref(), Timestamp::now());
    if rb.status.as_ref() != Some(&status) {
        status::apply(&Api::<Rollback>::namespaced(ctx.client.clone(), &namespace), rb.as_ref(), &status).await?;
    }
    if let Some(t) = transition {
        ctx.event(&rb.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    Ok(Action::await_change())
}

fn error_policy(rb: Arc<Rollback>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&crate::object_key(rb.as_ref()), crate::backoff::BASE);
    tracing::warn!(rollback = %rb.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_crds::RollbackSpec;
    use slipway_crds::conditions::types;

    #[test]
    fn missing_environment_then_queued() {
        let mut rb = Rollback::new(
            "undo",
            RollbackSpec {
                environment: "prod".into(),
                to: RollbackTarget { previous: Some(true), ..Default::default() },
                reason: None,
            },
        );
        rb.metadata.namespace = Some("team".into());
        let (missing, t) = decide(&rb, None, Timestamp::now());
        let ready = conditions::find(&missing.conditions, types::READY).unwrap();
        assert_eq!(ready.reason, reasons::ENVIRONMENT_NOT_FOUND);
        assert!(ready.message.contains("new Rollback"));
        assert_eq!(t.unwrap().type_, EventType::Warning);
        assert_eq!(missing.target.as_deref(), Some("previous release"));
    }
}
