//! The connection to the API server, chosen as kubectl chooses it, and who the user is.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Api, Client, Config};

use crate::cli::Target;
use crate::error::{Doing, Error, Result};

pub struct Cluster {
    pub client: Client,
    pub namespace: String,
}

impl Cluster {
    /// `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`; `--context`, else the current
    /// context; `-n`, else the context's namespace, else `default`. Inside a pod without a
    /// kubeconfig, the pod's ServiceAccount.
    pub async fn connect(target: &Target) -> Result<Cluster> {
        let options = KubeConfigOptions { context: target.context.clone(), ..KubeConfigOptions::default() };
        let config = match &target.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
                Config::from_custom_kubeconfig(file, &options).await.map_err(kubeconfig_error)?
            }
            None => match Config::from_kubeconfig(&options).await {
                Ok(c) => c,
                Err(KubeconfigError::FindPath) if target.context.is_none() => {
                    Config::incluster().map_err(|e| Error::NoKubeconfig(format!("and not in a pod: {e}")))?
                }
                Err(e) => return Err(kubeconfig_error(e)),
            },
        };
        let namespace = target.namespace.clone().unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Cluster { client, namespace })
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The user the API server authenticates this connection as (`kubectl auth whoami`): what
    /// the admission policy requires in `slipway.dev/requested-by` and `approved-by`.
    pub async fn whoami(&self) -> Result<String> {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let doing = Doing { verb: "create", resource: "selfsubjectreviews", namespace: &self.namespace };
        let review =
            api.create(&PostParams::default(), &SelfSubjectReview::default()).await.map_err(|e| doing.error(e))?;
        review.status.and_then(|s| s.user_info).and_then(|u| u.username).filter(|u| !u.is_empty()).ok_or_else(|| {
            Error::NoAnswer(
                "the API server did not say who you are (SelfSubjectReview has no user name): check `kubectl auth \
                 whoami`"
                    .to_owned(),
            )
        })
    }
}

fn kubeconfig_error(e: KubeconfigError) -> Error {
    match e {
        KubeconfigError::FindPath => Error::NoKubeconfig("no $KUBECONFIG and no ~/.kube/config".to_owned()),
        KubeconfigError::ReadConfig(err, path) => Error::NoKubeconfig(format!("reading {}: {err}", path.display())),
        KubeconfigError::LoadContext(c) => {
            Error::Kubeconfig(format!("no context {c:?} in the kubeconfig (list them: `kubectl config get-contexts`)"))
        }
        KubeconfigError::CurrentContextNotSet => Error::Kubeconfig(
            "no current context: pass --context NAME or run `kubectl config use-context NAME`".to_owned(),
        ),
        other => Error::Kubeconfig(other.to_string()),
    }
}
