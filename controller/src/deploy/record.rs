//! The release a request records in its Environment's history, and what of it is read from the
//! host: the image each service runs.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use slipway_crds::{DeployRequestStatus, Environment, Release};

use crate::context::Context;
use crate::environment;
use crate::remote::{ContainerObservation, RemoteError};
use crate::secrets::SecretReader;

use super::request::Req;
use super::{plan, site};

/// How long a recovered record waits for the host's image ids before it is written without them:
/// the lock it releases must not wait for an unreachable host.
const IMAGES_WITHIN: Duration = Duration::from_secs(20);

/// Service -> image id of the project's service containers (one-off containers left out).
pub fn images(containers: &[ContainerObservation]) -> BTreeMap<String, String> {
    containers.iter().filter(|c| !c.one_off).filter_map(|c| Some((c.service.clone()?, c.image_id.clone()))).collect()
}

/// The record of a request found finished while it still held its Environment's lock (the
/// controller stopped between the final status write and the release): as complete as the
/// record written on the normal path, images read from the host best effort.
pub async fn recovered(ctx: &Context, req: &Req, env: &Environment, st: &DeployRequestStatus) -> Release {
    let images = if plan::recovered_succeeded(st) {
        match tokio::time::timeout(IMAGES_WITHIN, host_images(ctx, env)).await {
            Ok(Ok(images)) => images,
            Ok(Err(e)) => {
                tracing::warn!(kind = req.kind(), name = %req.name(), error = %e, "release recorded without image ids");
                BTreeMap::new()
            }
            Err(_) => {
                tracing::warn!(kind = req.kind(), name = %req.name(), "host did not answer in time; release recorded without image ids");
                BTreeMap::new()
            }
        }
    } else {
        BTreeMap::new()
    };
    plan::recovered_release(req, env, st, images)
}

/// The images the Environment's project runs, over its pooled SSH master.
async fn host_images(ctx: &Context, env: &Environment) -> Result<BTreeMap<String, String>, RemoteError> {
    let local = |detail: String| RemoteError::Local { detail };
    let mut secrets = SecretReader::new(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let credentials = environment::credentials(env, &mut secrets)
        .await
        .map_err(|e| local(format!("reading the Environment's Secrets: {e}")))?
        .map_err(|p| local(p.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ")))?;
    let port = environment::ssh_port(env).map_err(|p| local(p.message))?;
    let conn = environment::connection(ctx, env, port, &credentials).await?;
    Ok(images(&conn.project_containers(&site::project_name(env)).await?))
}
