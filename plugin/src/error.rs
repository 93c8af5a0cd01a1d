//! What can go wrong before an answer, each message naming the fix.

/// An error the plugin reports and exits with [`crate::follow::exit::ERROR`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no kubeconfig found ({0}): set KUBECONFIG or pass --kubeconfig PATH, as for kubectl")]
    NoKubeconfig(String),
    #[error("kubeconfig: {0}: check it with `kubectl config view` and `kubectl config get-contexts`")]
    Kubeconfig(String),
    #[error("Environment {name:?} not found in namespace {namespace}: list them with `kubectl get env -n {namespace}`")]
    EnvironmentNotFound { name: String, namespace: String },
    #[error("{kind} {name:?} not found in namespace {namespace}: list them with `kubectl get {plural} -n {namespace}`")]
    NotFound { kind: &'static str, plural: &'static str, name: String, namespace: String },
    #[error(
        "no DeployRequest or Rollback named {name:?} in namespace {namespace}: list them with \
         `kubectl get dr,rollback -n {namespace}`"
    )]
    RequestNotFound { name: String, namespace: String },
    #[error(
        "the API server does not serve {resource}.slipway.dev: Slipway's CRDs are not installed in this \
         cluster (install them with `kubectl apply -k manifests/` or the Helm chart), or --context names \
         another cluster"
    )]
    CrdsMissing { resource: &'static str },
    #[error(
        "forbidden: {message}: ask for RBAC that allows it; check with `kubectl auth can-i {verb} {resource} -n \
         {namespace}`"
    )]
    Forbidden { message: String, verb: &'static str, resource: &'static str, namespace: String },
    #[error("the API server refused the {kind}: {message}")]
    Refused { kind: &'static str, message: String },
    #[error("talking to the API server: {0}: check the cluster with `kubectl cluster-info`")]
    Api(kube::Error),
    #[error("{0}")]
    Usage(String),
    #[error(
        "Environment {name:?} has no recorded .env keys: Slipway records them when a deploy or rollback \
         succeeds; deploy the running release again to record them (`kubectl slipway deploy {name} --tag ... \
         --force`)"
    )]
    EnvKeysNotRecorded { name: String },
    #[error("{kind} {name} was deleted while it was being followed")]
    Deleted { kind: &'static str, name: String },
    #[error("writing output: {0}")]
    Output(String),
    #[error(
        "could not watch {object} for {secs} s ({detail}): check access with `kubectl auth can-i watch {resource} \
         -n {namespace}`; the request carries on, see it with `kubectl slipway logs {object}`"
    )]
    WatchFailed { object: String, secs: u64, detail: String, resource: &'static str, namespace: String },
    #[error("{0}")]
    NoAnswer(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What was being done when the API server answered: names the verb and resource in errors.
#[derive(Debug, Clone, Copy)]
pub struct Doing<'a> {
    pub verb: &'static str,
    /// `environments`, `deployrequests`, `rollbacks`, `selfsubjectreviews`.
    pub resource: &'static str,
    pub namespace: &'a str,
}

impl Doing<'_> {
    /// Turns an API error into one naming its fix.
    pub fn error(self, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
                message: s.message,
                verb: self.verb,
                resource: self.resource,
                namespace: self.namespace.to_owned(),
            },
            // A 404 on a list or create: the type itself is unknown.
            kube::Error::Api(s) if s.code == 404 && matches!(self.verb, "list" | "create" | "watch") => {
                match self.resource {
                    "environments" | "deployrequests" | "rollbacks" => Error::CrdsMissing { resource: self.resource },
                    _ => Error::Api(kube::Error::Api(s)),
                }
            }
            kube::Error::Api(s) if matches!(s.code, 400 | 409 | 422) && self.verb == "create" => {
                Error::Refused { kind: kind_of(self.resource), message: s.message }
            }
            other => Error::Api(other),
        }
    }
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "deployrequests" => "DeployRequest",
        "rollbacks" => "Rollback",
        "environments" => "Environment",
        _ => "object",
    }
}
