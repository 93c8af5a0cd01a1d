//! The Secrets an Environment names: read once per reconcile, used only when opted in with the
//! `slipway.dev/secret: "true"` label, and judged by pure functions that name the Secret, the
//! field and the fix.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use slipway_crds::SECRET_OPT_IN_LABEL;
use slipway_crds::conditions::reasons;

use crate::error::Result;
use crate::references::Problem;
use crate::remote::SecretBytes;

/// What a `get` of a Secret gave.
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(Box<Secret>),
    NotFound,
    /// HTTP 403: Slipway's ServiceAccount may not read Secrets in the namespace.
    Forbidden,
}

/// Secrets of one namespace, each read at most once per reconcile.
pub struct SecretReader {
    api: Api<Secret>,
    namespace: String,
    seen: HashMap<String, Lookup>,
}

impl SecretReader {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        SecretReader { api: Api::namespaced(client, namespace), namespace: namespace.to_owned(), seen: HashMap::new() }
    }

    /// The Secret `name`; other API errors are the reconcile's (retried with backoff).
    pub async fn get(&mut self, name: &str) -> Result<&Lookup> {
        if !self.seen.contains_key(name) {
            let lookup = match self.api.get_opt(name).await {
                Ok(Some(s)) => Lookup::Found(Box::new(s)),
                Ok(None) => Lookup::NotFound,
                Err(kube::Error::Api(status)) if status.code == 403 => Lookup::Forbidden,
                Err(e) => return Err(e.into()),
            };
            self.seen.insert(name.to_owned(), lookup);
        }
        Ok(&self.seen[name])
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Is the Secret labelled `slipway.dev/secret: "true"`?
pub fn opted_in(secret: &Secret) -> bool {
    secret.metadata.labels.as_ref().and_then(|l| l.get(SECRET_OPT_IN_LABEL)).is_some_and(|v| v == "true")
}

/// The usable Secret behind `lookup`, or the problem naming `field`, the Secret and the fix.
pub fn usable<'a>(lookup: &'a Lookup, field: &str, name: &str, namespace: &str) -> Result<&'a Secret, Problem> {
    match lookup {
        Lookup::NotFound => Err(Problem {
            reason: reasons::SECRET_NOT_FOUND,
            message: format!("Secret {name:?} (named by {field}) not found in namespace {namespace:?}: create it"),
        }),
        Lookup::Forbidden => Err(Problem {
            reason: reasons::SECRET_FORBIDDEN,
            message: format!(
                "Slipway may not read Secret {name:?} (named by {field}) in namespace {namespace:?}: bind the \
                 ClusterRole slipway-secret-reader to the ServiceAccount slipway-system/slipway there \
                 (kubectl -n {namespace} create rolebinding slipway-secret-reader \
                 --clusterrole=slipway-secret-reader --serviceaccount=slipway-system:slipway, or add the \
                 namespace to the chart's secretNamespaces)"
            ),
        }),
        Lookup::Found(secret) if !opted_in(secret) => Err(Problem {
            reason: reasons::SECRET_NOT_OPTED_IN,
            message: format!(
                "Secret {name:?} (named by {field}) is not opted in for use by Slipway: if it is meant for \
                 this Environment, run kubectl -n {namespace} label secret {name} {SECRET_OPT_IN_LABEL}=true"
            ),
        }),
        Lookup::Found(secret) => Ok(secret),
    }
}

/// The value of `key` in a usable Secret.
pub fn key_value(secret: &Secret, field: &str, name: &str, key: &str) -> Result<SecretBytes, Problem> {
    value(secret, key).map(|v| SecretBytes::new(v.to_vec())).ok_or_else(|| Problem {
        reason: reasons::SECRET_KEY_MISSING,
        message: format!("Secret {name:?} (named by {field}) has no key {key:?}: add it to the Secret"),
    })
}

/// Every key and value of a usable Secret (the `.env` of an Environment).
pub fn all_values(secret: &Secret) -> BTreeMap<String, SecretBytes> {
    let mut out: BTreeMap<String, SecretBytes> = BTreeMap::new();
    if let Some(data) = &secret.data {
        for (k, ByteString(v)) in data {
            out.insert(k.clone(), SecretBytes::new(v.clone()));
        }
    }
    if let Some(data) = &secret.string_data {
        for (k, v) in data {
            out.insert(k.clone(), SecretBytes::from(v.as_str()));
        }
    }
    out
}

/// The value of a key of a Secret, whether it came in `data` or `stringData`.
fn value<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    if let Some(ByteString(bytes)) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(bytes);
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &[(&str, &str)], data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some("shop-ssh".into());
        s.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        s.data = Some(data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect());
        s
    }

    #[test]
    fn only_opted_in_secrets_are_usable() {
        let cases = [
            (Lookup::NotFound, Some(reasons::SECRET_NOT_FOUND)),
            (Lookup::Forbidden, Some(reasons::SECRET_FORBIDDEN)),
            (Lookup::Found(Box::new(secret(&[], &[("id", "k")]))), Some(reasons::SECRET_NOT_OPTED_IN)),
            (
                Lookup::Found(Box::new(secret(&[(SECRET_OPT_IN_LABEL, "yes")], &[("id", "k")]))),
                Some(reasons::SECRET_NOT_OPTED_IN),
            ),
            (Lookup::Found(Box::new(secret(&[(SECRET_OPT_IN_LABEL, "true")], &[("id", "k")]))), None),
        ];
        for (lookup, want) in cases {
            let got = usable(&lookup, "spec.sshKeySecretRef", "shop-ssh", "team").err().map(|p| p.reason);
            assert_eq!(got, want, "{lookup:?}");
        }
    }

    #[test]
    fn messages_name_the_secret_and_the_fix() {
        let unlabelled = Lookup::Found(Box::new(secret(&[], &[("id", "PRIVATE-KEY-BYTES")])));
        let p = usable(&unlabelled, "spec.sshKeySecretRef", "shop-ssh", "team").unwrap_err();
        assert!(p.message.contains("kubectl -n team label secret shop-ssh slipway.dev/secret=true"), "{}", p.message);
        assert!(!p.message.contains("PRIVATE-KEY-BYTES"));
        let p = usable(&Lookup::Forbidden, "spec.envSecretRef", "shop-env", "team").unwrap_err();
        assert!(p.message.contains("rolebinding") && p.message.contains("slipway-secret-reader"), "{}", p.message);
    }

    #[test]
    fn key_values_from_data_and_string_data() {
        let mut s = secret(&[(SECRET_OPT_IN_LABEL, "true")], &[("id", "key-bytes")]);
        s.string_data = Some([("known_hosts".to_owned(), "kh".to_owned())].into());
        assert_eq!(key_value(&s, "f", "n", "id").unwrap().expose(), b"key-bytes");
        assert_eq!(key_value(&s, "f", "n", "known_hosts").unwrap().expose(), b"kh");
        assert_eq!(key_value(&s, "f", "n", "nope").unwrap_err().reason, reasons::SECRET_KEY_MISSING);
        assert_eq!(all_values(&s).len(), 2);
    }
}
