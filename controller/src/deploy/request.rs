//! The two kinds of request the deploy path runs. A DeployRequest and a Rollback share the
//! Environment's queue and lock, the status shape, the step record and the host steps; they
//! differ in their gates, their preflight and their database step.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use slipway_crds::{DeployRequest, DeployRequestStatus, Phase, Rollback, RollbackTarget};

use crate::error::Result;

use super::lock::Cas;

#[derive(Clone, Debug)]
pub enum Req {
    Deploy(DeployRequest),
    Rollback(Rollback),
}

pub const DEPLOY_REQUEST: &str = "DeployRequest";
pub const ROLLBACK: &str = "Rollback";

/// The target as people write it: `previous release`, `tag v1.1.0`, `release 4f1c2ab`.
pub fn target_display(to: &RollbackTarget) -> String {
    match (&to.tag, &to.release) {
        (Some(tag), _) => format!("tag {tag}"),
        (_, Some(commit)) => format!("release {commit}"),
        _ => "previous release".to_string(),
    }
}

impl Req {
    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Req::Deploy(d) => &d.metadata,
            Req::Rollback(r) => &r.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Req::Deploy(_) => DEPLOY_REQUEST,
            Req::Rollback(_) => ROLLBACK,
        }
    }

    pub fn name(&self) -> String {
        self.meta().name.clone().unwrap_or_default()
    }

    pub fn namespace(&self) -> String {
        self.meta().namespace.clone().unwrap_or_default()
    }

    pub fn uid(&self) -> String {
        self.meta().uid.clone().unwrap_or_default()
    }

    pub fn environment(&self) -> &str {
        match self {
            Req::Deploy(d) => &d.spec.environment,
            Req::Rollback(r) => &r.spec.environment,
        }
    }

    pub fn status(&self) -> Option<&DeployRequestStatus> {
        match self {
            Req::Deploy(d) => d.status.as_ref(),
            Req::Rollback(r) => r.status.as_ref(),
        }
    }

    pub fn phase(&self) -> Option<Phase> {
        self.status().and_then(|s| s.phase)
    }

    /// Lock holder and queue entry: kind, name and UID.
    pub fn id(&self) -> String {
        super::plan::holder_id(self.kind(), &self.name(), &self.uid())
    }

    /// `kind/namespace/name`, the key of per-object state (backoff).
    pub fn key(&self) -> String {
        match self {
            Req::Deploy(d) => crate::object_key(d),
            Req::Rollback(r) => crate::object_key(r),
        }
    }

    pub fn object_ref(&self) -> ObjectReference {
        match self {
            Req::Deploy(d) => d.object_ref(&()),
            Req::Rollback(r) => r.object_ref(&()),
        }
    }

    pub fn created(&self) -> Option<Timestamp> {
        self.meta().creation_timestamp.as_ref().map(|t| t.0)
    }

    pub fn generation(&self) -> Option<i64> {
        self.meta().generation
    }

    /// What it asks for, as people write it: `tag v1.2.3`, `rollback to previous release`.
    pub fn describe(&self) -> String {
        match self {
            Req::Deploy(d) => d.describe(),
            Req::Rollback(r) => format!("rollback to {}", target_display(&r.spec.to)),
        }
    }

    /// `status.revision`: the revision (`tag v1.2.3`) or the Rollback's target (`previous release`).
    pub fn revision_display(&self) -> String {
        match self {
            Req::Deploy(d) => d.describe(),
            Req::Rollback(r) => target_display(&r.spec.to),
        }
    }

    pub fn as_deploy(&self) -> Option<&DeployRequest> {
        match self {
            Req::Deploy(d) => Some(d),
            Req::Rollback(_) => None,
        }
    }

    pub fn as_rollback(&self) -> Option<&Rollback> {
        match self {
            Req::Rollback(r) => Some(r),
            Req::Deploy(_) => None,
        }
    }

    /// The same object as it is now on the API server (`None` when gone or re-created).
    pub async fn fresh(&self, client: &Client) -> Result<Option<Req>> {
        let (ns, name) = (self.namespace(), self.name());
        let fresh = match self {
            Req::Deploy(_) => {
                Api::<DeployRequest>::namespaced(client.clone(), &ns).get_opt(&name).await?.map(Req::Deploy)
            }
            Req::Rollback(_) => {
                Api::<Rollback>::namespaced(client.clone(), &ns).get_opt(&name).await?.map(Req::Rollback)
            }
        };
        Ok(fresh.filter(|f| f.meta().uid == self.meta().uid))
    }

    /// Every request of the namespace that `shard` owns, both kinds.
    pub async fn list(client: &Client, ns: &str, shard: &crate::shard::Shard) -> Result<Vec<Req>> {
        let lp = match shard.label_selector() {
            Some(selector) => kube::api::ListParams::default().labels(selector),
            None => kube::api::ListParams::default(),
        };
        let mut all: Vec<Req> = Api::<DeployRequest>::namespaced(client.clone(), ns)
            .list(&lp)
            .await?
            .items
            .into_iter()
            .map(Req::Deploy)
            .collect();
        all.extend(
            Api::<Rollback>::namespaced(client.clone(), ns).list(&lp).await?.items.into_iter().map(Req::Rollback),
        );
        Ok(all)
    }

    pub async fn apply_status(&self, client: &Client, st: &DeployRequestStatus) -> Result<()> {
        let ns = self.namespace();
        match self {
            Req::Deploy(d) => crate::status::apply(&Api::<DeployRequest>::namespaced(client.clone(), &ns), d, st).await,
            Req::Rollback(r) => crate::status::apply(&Api::<Rollback>::namespaced(client.clone(), &ns), r, st).await,
        }
    }

    /// A merge patch of the object's metadata, preconditioned on its resourceVersion:
    /// `Conflict` when it changed since it was read (or is gone).
    pub async fn patch_metadata(&self, client: &Client, metadata: serde_json::Value) -> Result<Cas> {
        let mut metadata = metadata;
        metadata["resourceVersion"] = serde_json::Value::from(self.meta().resource_version.clone());
        let patch = serde_json::json!({ "metadata": metadata });
        let (ns, name, params) = (self.namespace(), self.name(), PatchParams::default());
        let result = match self {
            Req::Deploy(_) => Api::<DeployRequest>::namespaced(client.clone(), &ns)
                .patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            Req::Rollback(_) => Api::<Rollback>::namespaced(client.clone(), &ns)
                .patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(Cas::Done),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(Cas::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    pub fn finalizers(&self) -> &[String] {
        self.meta().finalizers.as_deref().unwrap_or_default()
    }

    pub fn deleting(&self) -> bool {
        self.meta().deletion_timestamp.is_some()
    }

    /// The user who created it (an annotation the admission policy admits only from them).
    pub fn requested_by(&self) -> Option<&str> {
        match self {
            Req::Deploy(d) => d.requested_by(),
            Req::Rollback(r) => r.requested_by(),
        }
    }
}
