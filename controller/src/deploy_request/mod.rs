//! The DeployRequest controller: wiring and the thin async part of a reconcile.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use slipway_crds::DeployRequest;

use crate::Scope;
use crate::context::Context;
use crate::error::{Error, Result};

pub const CONTROLLER: &str = "deployrequest";

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let rollbacks = scope.api::<slipway_crds::Rollback>(&ctx.client);
    let config = scope.watcher_config();
    // A DeployRequest rolled back automatically follows the Rollback it owns.
    let owns = move |c: kube::runtime::Controller<DeployRequest>| c.owns(rollbacks, config);
    crate::run_naming_environment::<DeployRequest, _>(ctx, scope, shutdown, owns, reconcile, error_policy).await;
}

async fn reconcile(dr: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    let name = dr.name_any();
    // The deploy path resets the backoff itself when a step makes progress (a retried step
    // returns Ok too, and must keep backing off).
    crate::guarded("DeployRequest", &name, reconcile_inner(dr, ctx.clone())).await
}

async fn reconcile_inner(dr: Arc<DeployRequest>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    crate::deploy::reconcile_deploy(dr, ctx.clone()).await
}

fn error_policy(dr: Arc<DeployRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&crate::object_key(dr.as_ref()), crate::backoff::BASE);
    tracing::warn!(deployrequest = %dr.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}
