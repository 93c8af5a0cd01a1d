//! Status writes: server-side apply of the whole status under one field manager, with a timeout.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{FIELD_MANAGER, STATUS_WRITE_TIMEOUT};
use crate::error::{Error, Result};

/// Applies `status` as the controller's default field manager.
pub async fn apply<K, S>(api: &Api<K>, obj: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    apply_as(api, obj, status, FIELD_MANAGER).await
}

/// Applies `status` as `manager`: the fields it leaves out that other managers own stay theirs.
pub async fn apply_as<K, S>(api: &Api<K>, obj: &K, status: &S, manager: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let name = obj.name_any();
    let params = PatchParams::apply(manager).force();
    match tokio::time::timeout(STATUS_WRITE_TIMEOUT, api.patch_status(&name, &params, &Patch::Apply(&body))).await {
        Ok(result) => result.map(|_| ()).map_err(Error::from),
        Err(_) => Err(Error::StatusTimeout { kind: K::kind(&()).to_string(), name }),
    }
}
