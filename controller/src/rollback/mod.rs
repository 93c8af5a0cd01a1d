//! The Rollback controller: wiring. A Rollback runs the deploy path (`crate::deploy`): the same
//! queue, lock, steps and status shape as a DeployRequest, with a database downgrade first.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use slipway_crds::Rollback;

use crate::Scope;
use crate::context::Context;
use crate::error::{Error, Result};

pub use crate::deploy::request::target_display;

pub const CONTROLLER: &str = "rollback";

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, scope: Scope, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    crate::run_naming_environment::<Rollback, _>(ctx, scope, shutdown, |c| c, reconcile, error_policy).await;
}

async fn reconcile(rb: Arc<Rollback>, ctx: Arc<Context>) -> Result<Action> {
    let name = rb.name_any();
    // The deploy path resets the backoff itself when a step makes progress.
    crate::guarded("Rollback", &name, reconcile_inner(rb, ctx.clone())).await
}

async fn reconcile_inner(rb: Arc<Rollback>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    crate::deploy::reconcile_rollback(rb, ctx.clone()).await
}

fn error_policy(rb: Arc<Rollback>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(CONTROLLER, error.metric_label());
    let delay = ctx.backoff.failed(&crate::object_key(rb.as_ref()), crate::backoff::BASE);
    tracing::warn!(rollback = %rb.name_any(), error = %error, retry_in_s = delay.as_secs(), "reconcile failed; retrying");
    Action::requeue(delay)
}
