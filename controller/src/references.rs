//! Checks that the objects a resource names exist, and the conditions that say when they don't.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use slipway_crds::conditions::{reasons, types};
use slipway_crds::{SecretKeyRef, SecretRef};

use crate::conditions::{Decided, Status};
use crate::error::Result;
use crate::remote::SecretBytes;

/// A problem with a reference: a condition reason and a message that names the object and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Ready=False, Reconciling=False, Stalled=True, all for the same problem.
pub fn stalled(problem: &Problem) -> Vec<Decided> {
    vec![
        Decided::new(types::READY, Status::False, problem.reason, problem.message.clone()),
        Decided::new(types::RECONCILING, Status::False, problem.reason, problem.message.clone()),
        Decided::new(types::STALLED, Status::True, problem.reason, problem.message.clone()),
    ]
}

/// Ready=False, Reconciling=True, Stalled=False: waiting, but moving.
pub fn progressing(reason: &'static str, message: String) -> Vec<Decided> {
    vec![
        Decided::new(types::READY, Status::False, reason, message.clone()),
        Decided::new(types::RECONCILING, Status::True, reason, message.clone()),
        Decided::new(types::STALLED, Status::False, reason, message),
    ]
}

/// The problem of a `kind` object naming an Environment that does not exist.
pub fn environment_not_found(kind: &str, environment: &str, namespace: &str) -> Problem {
    Problem {
        reason: reasons::ENVIRONMENT_NOT_FOUND,
        message: format!(
            "Environment {environment:?} not found in namespace {namespace:?}: create it, or create a new \
             {kind} naming an existing Environment"
        ),
    }
}

/// The value of the key `r` names; a missing Secret or key is a [`Problem`] naming `field`.
pub async fn secret_key(
    secrets: &Api<Secret>,
    field: &str,
    r: &SecretKeyRef,
) -> Result<std::result::Result<SecretBytes, Problem>> {
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        return Ok(Err(secret_not_found(field, &r.name, secrets.namespace())));
    };
    Ok(secret_value(&secret, &r.key).map(|v| SecretBytes::new(v.to_vec())).ok_or_else(|| Problem {
        reason: reasons::SECRET_KEY_MISSING,
        message: format!("Secret {:?} (named by {field}) has no key {:?}: add it to the Secret", r.name, r.key),
    }))
}

/// Looks up the Secret `r` names.
pub async fn secret(secrets: &Api<Secret>, field: &str, r: &SecretRef) -> Result<Option<Problem>> {
    Ok(secrets.get_opt(&r.name).await?.is_none().then(|| secret_not_found(field, &r.name, secrets.namespace())))
}

fn secret_not_found(field: &str, name: &str, namespace: Option<&str>) -> Problem {
    Problem {
        reason: reasons::SECRET_NOT_FOUND,
        message: format!(
            "Secret {name:?} (named by {field}) not found in namespace {:?}: create it",
            namespace.unwrap_or_default()
        ),
    }
}

/// The value of a key of a Secret, whether it came in `data` or `stringData`.
fn secret_value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    if let Some(ByteString(bytes)) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(bytes);
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.as_bytes())
}
