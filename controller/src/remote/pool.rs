//! One master connection per Environment, reused across reconciles and replaced when the
//! target (address, user, key, known_hosts) changes or the master has died.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::error::RemoteError;
use super::ssh::{ConnectOptions, HostConnection, HostTarget};

fn fingerprint(target: &HostTarget) -> u64 {
    let mut h = DefaultHasher::new();
    target.address.hash(&mut h);
    target.port.hash(&mut h);
    target.user.hash(&mut h);
    target.private_key.expose().hash(&mut h);
    target.known_hosts.hash(&mut h);
    h.finish()
}

struct Entry {
    fingerprint: u64,
    conn: Arc<HostConnection>,
}

/// One key's connection; its lock is held while connecting, so one key connects once at a time.
type Slot = Arc<Mutex<Option<Entry>>>;

/// Connections keyed by Environment (`kind/namespace/name`).
pub struct ConnectionPool {
    options: ConnectOptions,
    slots: std::sync::Mutex<HashMap<String, Slot>>,
}

impl ConnectionPool {
    pub fn new(options: ConnectOptions) -> Self {
        Self { options, slots: std::sync::Mutex::new(HashMap::new()) }
    }

    fn slot(&self, key: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// The live connection for `key`, connecting (again) when there is none, the target
    /// changed, or the master no longer answers. Concurrent callers for one key share one connect.
    pub async fn get(&self, key: &str, target: &HostTarget) -> Result<Arc<HostConnection>, RemoteError> {
        let fp = fingerprint(target);
        let slot = self.slot(key);
        let mut entry = slot.lock().await;
        if let Some(e) = entry.as_ref().filter(|e| e.fingerprint == fp) {
            if e.conn.check().await.is_ok() {
                return Ok(e.conn.clone());
            }
            tracing::info!(environment = key, host = e.conn.host(), "ssh master is gone; reconnecting");
        }
        if let Some(old) = entry.take() {
            close(old).await;
        }
        let conn = Arc::new(HostConnection::connect(target, self.options.clone()).await?);
        *entry = Some(Entry { fingerprint: fp, conn: conn.clone() });
        Ok(conn)
    }

    /// The pooled connection for `key` when it is alive; never connects (for a caller that can
    /// no longer read the target's credentials, such as an Environment whose Secrets are gone).
    pub async fn current(&self, key: &str) -> Option<Arc<HostConnection>> {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()?;
        let conn = slot.lock().await.as_ref()?.conn.clone();
        conn.check().await.is_ok().then_some(conn)
    }

    /// Forgets and closes the connection for `key` (Environment deleted, host check failed).
    pub async fn evict(&self, key: &str) {
        let slot = self.slots.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        if let Some(slot) = slot
            && let Some(entry) = slot.lock().await.take()
        {
            close(entry).await;
        }
    }

    /// Evicts every key for which `keep` says no (Environments that no longer exist).
    pub async fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> =
            self.slots.lock().unwrap_or_else(|e| e.into_inner()).keys().filter(|k| !keep(k)).cloned().collect();
        for key in &gone {
            self.evict(key).await;
        }
        gone.len()
    }

    /// Closes every master (on shutdown), so no ssh process or key directory outlives the controller.
    pub async fn close_all(&self) {
        let keys: Vec<String> = self.slots.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        for key in keys {
            self.evict(&key).await;
        }
    }

    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn close(entry: Entry) {
    match Arc::try_unwrap(entry.conn) {
        Ok(conn) => {
            let host = conn.host().to_owned();
            if let Err(e) = conn.close().await {
                tracing::debug!(host, error = %e, "closing ssh master");
            }
        }
        // Still in use by a reconcile; the master closes when its last user drops it.
        Err(shared) => drop(shared),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::SecretBytes;

    #[test]
    fn fingerprint_changes_with_every_field() {
        let base = HostTarget {
            address: "10.0.0.5".into(),
            port: 22,
            user: "deploy".into(),
            private_key: SecretBytes::from("key"),
            known_hosts: "kh".into(),
        };
        let fp = fingerprint(&base);
        let variants = [
            HostTarget { address: "10.0.0.6".into(), ..base.clone() },
            HostTarget { port: 2222, ..base.clone() },
            HostTarget { user: "root".into(), ..base.clone() },
            HostTarget { private_key: SecretBytes::from("key2"), ..base.clone() },
            HostTarget { known_hosts: "kh2".into(), ..base.clone() },
        ];
        for v in variants {
            assert_ne!(fingerprint(&v), fp);
        }
        assert_eq!(fingerprint(&base.clone()), fp);
    }
}
