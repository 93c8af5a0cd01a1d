//! Leader election over a coordination Lease (kube-lease-manager): of several controller replicas
//! only the holder runs the controllers; the others wait, and take over once the holder stops
//! renewing (killed, or its node gone) or releases the Lease on shutdown.
//!
//! A replica that loses the Lease it held stops at once (the process exits and its Pod restarts
//! as a standby): it may be in the middle of a step, and the new leader resumes that step from its
//! host job (the pipeline is built for a controller killed at any instant). Two replicas never run
//! one host job twice: the host-side `flock` fences a compose project even across controllers.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use sha2::Digest;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where the Lease lives and how long it is held.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    pub lease: String,
    /// This replica's name in `spec.holderIdentity` (the Pod name).
    pub identity: String,
    /// A holder that has not renewed for this long has lost the Lease.
    pub duration: Duration,
    /// The holder renews this long before the Lease would expire.
    pub renew_before: Duration,
}

/// The Lease's name: `base`, or for a shard (controllers watching only the objects a label
/// selector matches) `base` plus a digest of the selector, so each shard elects its own leader.
pub fn lease_name(base: &str, label_selector: Option<&str>) -> String {
    match label_selector.map(str::trim).filter(|s| !s.is_empty()) {
        None => base.to_owned(),
        Some(selector) => {
            let digest = sha2::Sha256::digest(selector.as_bytes());
            let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
            format!("{base}-{hex}")
        }
    }
}

/// The Lease held by this replica.
pub struct Leadership {
    leader: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
}

impl Election {
    /// Waits until this replica holds the Lease (creating it when missing).
    pub async fn acquire(&self, client: Client) -> anyhow::Result<Leadership> {
        let manager = LeaseManagerBuilder::new(client, &self.lease)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration.as_secs().max(2))
            .with_grace(self.renew_before.as_secs().clamp(1, self.duration.as_secs().max(2) - 1))
            .with_field_manager(format!("slipway-leader-{}", self.identity))
            .build()
            .await?;
        let (mut leader, task) = manager.watch().await;
        tracing::info!(lease = %self.lease, namespace = %self.namespace, identity = %self.identity, "waiting to hold the leader lease");
        leader.wait_for(|held| *held).await?;
        tracing::info!(lease = %self.lease, identity = %self.identity, "holding the leader lease");
        Ok(Leadership { leader, task })
    }
}

impl Leadership {
    /// Resolves when this replica no longer holds the Lease (another took it, or the renewing
    /// task ended).
    pub async fn lost(&mut self) {
        let _ = self.leader.wait_for(|held| !*held).await;
    }

    /// Gives the Lease up (on shutdown), so a standby takes over without waiting for it to expire.
    pub async fn release(self) {
        let Leadership { leader, task } = self;
        // Closing the channel makes the renewing task release the Lease and end.
        drop(leader);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "could not release the leader lease; it expires by itself"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the lease task failed"),
            Err(_) => tracing::warn!("releasing the leader lease timed out; it expires by itself"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_has_a_lease_of_its_own() {
        let cases =
            [(None, "slipway-controller"), (Some(""), "slipway-controller"), (Some("  "), "slipway-controller")];
        for (selector, want) in cases {
            assert_eq!(lease_name("slipway-controller", selector), want, "{selector:?}");
        }
        let a = lease_name("slipway-controller", Some("slipway.dev/shard=a"));
        let b = lease_name("slipway-controller", Some("slipway.dev/shard=b"));
        assert_ne!(a, b);
        assert_eq!(a, lease_name("slipway-controller", Some(" slipway.dev/shard=a ")));
        assert!(a.starts_with("slipway-controller-") && a.len() == "slipway-controller-".len() + 10, "{a}");
    }
}
