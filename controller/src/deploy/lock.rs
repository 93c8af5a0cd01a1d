//! The per-Environment deploy lock and what the deploy path records in an Environment's status
//! (`activeDeploy`, `queue`, `current`, `history`). Every write is a compare-and-swap: a merge
//! patch preconditioned on the `resourceVersion` that was read, under the deploy path's own
//! field manager; a conflict means "re-read and decide again", never a blind overwrite.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use slipway_crds::{Attention, EnvKeys, Environment, Quarantined, Release};

use crate::context::{DEPLOY_MANAGER, STATUS_WRITE_TIMEOUT};
use crate::error::{Error, Result};

/// Did a compare-and-swap land?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    Done,
    /// Someone else changed the Environment since it was read.
    Conflict,
}

async fn swap(api: &Api<Environment>, env: &Environment, status: Value) -> Result<Cas> {
    Ok(if swapped(api, env, status).await?.is_some() { Cas::Done } else { Cas::Conflict })
}

/// [`swap`], returning the Environment as written, or `None` on a conflict.
async fn swapped(api: &Api<Environment>, env: &Environment, status: Value) -> Result<Option<Environment>> {
    let name = env.name_any();
    let body = json!({
        "metadata": {"resourceVersion": env.resource_version()},
        "status": status,
    });
    let params = PatchParams { field_manager: Some(DEPLOY_MANAGER.to_owned()), ..Default::default() };
    match tokio::time::timeout(STATUS_WRITE_TIMEOUT, api.patch_status(&name, &params, &Patch::Merge(&body))).await {
        Ok(Ok(written)) => Ok(Some(written)),
        Ok(Err(kube::Error::Api(s))) if s.code == 409 => Ok(None),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(Error::StatusTimeout { kind: "Environment".into(), name }),
    }
}

/// Takes the free lock for `holder`, publishing the requests still waiting behind it. A request
/// that takes the lock clears `needsAttention`: it was made after the failure, by a person.
/// The Environment as written, or `None` when it changed since `env` was read (decide again).
pub async fn take(
    api: &Api<Environment>,
    env: &Environment,
    holder: &str,
    waiting: &[String],
) -> Result<Option<Environment>> {
    if env.status.as_ref().and_then(|s| s.active_deploy.as_deref()).is_some() {
        return Ok(None);
    }
    swapped(api, env, json!({"activeDeploy": holder, "queue": waiting, "needsAttention": Value::Null})).await
}

/// Publishes the waiting requests (for `kubectl get env -o yaml`), when they changed.
pub async fn publish_queue(api: &Api<Environment>, env: &Environment, waiting: &[String]) -> Result<Cas> {
    let current: &[String] = env.status.as_ref().map(|s| s.queue.as_slice()).unwrap_or_default();
    if current == waiting {
        return Ok(Cas::Done);
    }
    swap(api, env, json!({"queue": waiting})).await
}

/// What a request leaves in its Environment's status when it lets go of the lock.
#[derive(Debug, Default, Clone, Copy)]
pub struct Record<'a> {
    /// The release it made (or failed to make), for the history and, when it succeeded, `current`.
    pub release: Option<&'a Release>,
    /// A commit that failed here and was (or should have been) rolled back.
    pub quarantine: Option<&'a Quarantined>,
    /// The host was left unverified: a person is needed.
    pub attention: Option<&'a Attention>,
    /// The environment variable names the release that went live requires.
    pub env_keys: Option<&'a EnvKeys>,
}

/// Releases the lock held by `holder`, recording `release` (when given) in the history and, when
/// it succeeded, as `current`. Releasing a lock held by someone else does nothing.
pub async fn release(
    api: &Api<Environment>,
    env: &Environment,
    holder: &str,
    release: Option<&Release>,
) -> Result<Cas> {
    finish(api, env, holder, None, Record { release, ..Record::default() }).await
}

/// Lets go of the lock held by `holder`, in one write with what it leaves (`record`): released,
/// or handed straight to `next` (a failed deploy to the Rollback that undoes it: no other request
/// can slip in between). A lock held by someone else is left alone.
pub async fn finish(
    api: &Api<Environment>,
    env: &Environment,
    holder: &str,
    next: Option<&str>,
    record: Record<'_>,
) -> Result<Cas> {
    let status = env.status.clone().unwrap_or_default();
    if status.active_deploy.as_deref() != Some(holder) {
        return Ok(Cas::Done);
    }
    let mut patch = recording(env, record.release)?;
    patch["activeDeploy"] = next.map_or(Value::Null, Value::from);
    if let Some(next) = next {
        // It no longer waits.
        let queue: Vec<&String> = status.queue.iter().filter(|q| q.as_str() != next).collect();
        patch["queue"] = Value::from(queue.into_iter().cloned().collect::<Vec<String>>());
    }
    if let Some(q) = record.quarantine {
        let mut list: Vec<Quarantined> = status.quarantined.into_iter().filter(|o| o.commit != q.commit).collect();
        list.push(q.clone());
        patch["quarantined"] = to_json(&list)?;
    }
    if let Some(a) = record.attention {
        patch["needsAttention"] = to_json(a)?;
    }
    if let Some(k) = record.env_keys {
        // Replaced whole: a merge patch would merge the lists' parent object, not the lists.
        patch["envKeys"] = to_json(k)?;
    }
    swap(api, env, patch).await
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Serialize(e.to_string()))
}

/// Whether recording `release` makes it the Environment's `current` (it succeeded).
pub fn becomes_current(release: &Release) -> bool {
    release.result.as_deref() == Some("Succeeded")
}

/// The status fields recording `release`: the history (bounded by `spec.historyLimit`, always
/// keeping the release that is `current`, which an automatic rollback returns to) and, when it
/// succeeded, `current`.
fn recording(env: &Environment, release: Option<&Release>) -> Result<Value> {
    let status = env.status.clone().unwrap_or_default();
    let mut patch = json!({});
    if let Some(r) = release {
        let current = if becomes_current(r) { Some(r) } else { status.current.as_ref() };
        let mut history = vec![r.clone()];
        history.extend(status.history.iter().filter(|h| h.deployed_by != r.deployed_by).cloned());
        let limit = usize::try_from(env.spec.history_limit).unwrap_or(10).max(1);
        if history.len() > limit {
            let kept = current.and_then(|c| history.iter().position(|h| h.deployed_by == c.deployed_by));
            match kept {
                Some(i) if i >= limit => {
                    let entry = history.remove(i);
                    history.truncate(limit.saturating_sub(1).max(1));
                    history.push(entry);
                }
                _ => history.truncate(limit),
            }
        }
        patch["history"] = to_json(&history)?;
        if becomes_current(r) {
            patch["current"] = replacing(status.current.as_ref(), r)?;
        }
    }
    Ok(patch)
}

/// A merge patch that makes an object field exactly `new`: a merge patch merges objects, so a
/// field `new` leaves out (a `false` or `None` skipped when serialized) must be nulled explicitly
/// or the old value would survive (a tracked release still marked untracked).
fn replacing(old: Option<&Release>, new: &Release) -> Result<Value> {
    let mut value = serde_json::to_value(new).map_err(|e| Error::Serialize(e.to_string()))?;
    let old = old.map(serde_json::to_value).transpose().map_err(|e| Error::Serialize(e.to_string()))?;
    if let (Some(Value::Object(old)), Value::Object(new)) = (old, &mut value) {
        for key in old.keys() {
            new.entry(key.clone()).or_insert(Value::Null);
        }
        // Maps inside (image ids) are replaced whole as well.
        if let Some(Value::Object(images)) = new.get_mut("images")
            && let Some(Value::Object(old_images)) = old.get("images")
        {
            for key in old_images.keys() {
                images.entry(key.clone()).or_insert(Value::Null);
            }
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacing_nulls_what_the_new_release_leaves_out() {
        let old = Release {
            commit: "a".into(),
            untracked: true,
            issue: Some("#1".into()),
            images: [("web".to_owned(), "sha256:1".to_owned()), ("old".to_owned(), "sha256:2".to_owned())].into(),
            ..Default::default()
        };
        let new = Release {
            commit: "b".into(),
            images: [("web".to_owned(), "sha256:3".to_owned())].into(),
            ..Default::default()
        };
        let patch = replacing(Some(&old), &new).unwrap();
        assert_eq!(patch["untracked"], Value::Null);
        assert_eq!(patch["issue"], Value::Null);
        assert_eq!(patch["commit"], "b");
        assert_eq!(patch["images"]["old"], Value::Null);
        assert_eq!(patch["images"]["web"], "sha256:3");
        // Applied as a JSON merge patch, the result is exactly `new`.
        let mut merged = serde_json::to_value(&old).unwrap();
        json_merge(&mut merged, &patch);
        assert_eq!(serde_json::from_value::<Release>(merged).unwrap(), new);
    }

    /// RFC 7386.
    fn json_merge(target: &mut Value, patch: &Value) {
        if let Value::Object(p) = patch {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        } else {
            *target = patch.clone();
        }
    }
}
