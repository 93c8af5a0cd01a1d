//! The per-Environment deploy lock and what the deploy path records in an Environment's status
//! (`activeDeploy`, `queue`, `current`, `history`). Every write is a compare-and-swap: a merge
//! patch preconditioned on the `resourceVersion` that was read, under the deploy path's own
//! field manager; a conflict means "re-read and decide again", never a blind overwrite.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use slipway_crds::{Environment, Release};

use crate::context::{DEPLOY_MANAGER, STATUS_WRITE_TIMEOUT};
use crate::error::{Error, Result};

use super::plan::HISTORY_LIMIT;

/// Did a compare-and-swap land?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    Done,
    /// Someone else changed the Environment since it was read.
    Conflict,
}

async fn swap(api: &Api<Environment>, env: &Environment, status: Value) -> Result<Cas> {
    let name = env.name_any();
    let body = json!({
        "metadata": {"resourceVersion": env.resource_version()},
        "status": status,
    });
    let params = PatchParams { field_manager: Some(DEPLOY_MANAGER.to_owned()), ..Default::default() };
    match tokio::time::timeout(STATUS_WRITE_TIMEOUT, api.patch_status(&name, &params, &Patch::Merge(&body))).await {
        Ok(Ok(_)) => Ok(Cas::Done),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(Cas::Conflict),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Error::StatusTimeout { kind: "Environment".into(), name }),
    }
}

/// Takes the free lock for `holder`, publishing the requests still waiting behind it.
pub async fn take(api: &Api<Environment>, env: &Environment, holder: &str, waiting: &[String]) -> Result<Cas> {
    if env.status.as_ref().and_then(|s| s.active_deploy.as_deref()).is_some() {
        return Ok(Cas::Conflict);
    }
    swap(api, env, json!({"activeDeploy": holder, "queue": waiting})).await
}

/// Publishes the waiting requests (for `kubectl get env -o yaml`), when they changed.
pub async fn publish_queue(api: &Api<Environment>, env: &Environment, waiting: &[String]) -> Result<Cas> {
    let current: &[String] = env.status.as_ref().map(|s| s.queue.as_slice()).unwrap_or_default();
    if current == waiting {
        return Ok(Cas::Done);
    }
    swap(api, env, json!({"queue": waiting})).await
}

/// Releases the lock held by `holder`, recording `release` (when given) in the history and, when
/// it succeeded, as `current`. Releasing a lock held by someone else does nothing.
pub async fn release(
    api: &Api<Environment>,
    env: &Environment,
    holder: &str,
    release: Option<&Release>,
) -> Result<Cas> {
    let status = env.status.clone().unwrap_or_default();
    if status.active_deploy.as_deref() != Some(holder) {
        return Ok(Cas::Done);
    }
    let mut patch = json!({"activeDeploy": Value::Null});
    if let Some(r) = release {
        let mut history = vec![r.clone()];
        history.extend(status.history.into_iter().filter(|h| h.deployed_by != r.deployed_by));
        history.truncate(HISTORY_LIMIT);
        patch["history"] = serde_json::to_value(&history).map_err(|e| Error::Serialize(e.to_string()))?;
        if r.result.as_deref() == Some("Succeeded") {
            patch["current"] = serde_json::to_value(r).map_err(|e| Error::Serialize(e.to_string()))?;
        }
    }
    swap(api, env, patch).await
}
