//! The DeployRequest controller: wiring and the thin async part of a reconcile.

mod decide;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use slipway_crds::{DeployRequest, Environment};

pub use decide::decide;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::{Scope, status};

pub const CONTROLLER: &str = "deployrequest";

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    crate::run_naming_environment::<DeployRequest, _>(ctx, scope, shutdown, reconcile, error_policy).await;
}

async fn reconcile(dr: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    let name = dr.name_any();
    let key = crate::object_key(dr.as_ref());
    let result = crate::guarded("DeployRequest", &name, reconcile_inner(dr, ctx.clone())).await;
    if result.is_ok() {
        ctx.backoff.succeeded(&key);
    }
    result
}

async fn reconcile_inner(dr: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = dr.namespace().unwrap_or_default();
    let environments: Api<Environment> = Api::namespaced(ctx.client.clone(), &namespace);
    let environment = environments.get_opt(&dr.spec.environment).await?;

    let decision = decide(&dr, environment.as_ref(), Timestamp::now());
    if dr.status.as_ref() != Some(&decision.status) {
        let api: Api<DeployRequest> = Api::namespaced(ctx.client.clone(), &namespace);
        status::apply(&api, dr.as_ref(), &decision.status).await?;
        tracing::info!(
            deployrequest = %dr.name_any(), namespace,
            phase = decision.status.phase.map(|p| p.as_str()).unwrap_or("-"),
            "status written"
        );
    }
    if let Some(t) = decision.transition {
        ctx.event(&dr.object_ref(&()), t.type_, &t.reason, t.note).await;
    }
    Ok(Action::await_change())
}

fn error_policy(dr: Arc<DeployRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&crate::object_key(dr.as_ref()), crate::backoff::BASE);
    tracing::warn!(deployrequest = %dr.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}
