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

/// Connections keyed by Environment (e.g. `namespace/name`).
pub struct ConnectionPool {
    options: ConnectOptions,
    entries: Mutex<HashMap<String, Entry>>,
}

impl ConnectionPool {
    pub fn new(options: ConnectOptions) -> Self {
        Self { options, entries: Mutex::new(HashMap::new()) }
    }

    /// The live connection for `key`, connecting (again) when there is none, the target
    /// changed, or the master no longer answers.
    pub async fn get(&self, key: &str, target: &HostTarget) -> Result<Arc<HostConnection>, RemoteError> {
        let fp = fingerprint(target);
        let existing = {
            let entries = self.entries.lock().await;
            entries.get(key).filter(|e| e.fingerprint == fp).map(|e| e.conn.clone())
        };
        if let Some(conn) = existing {
            if conn.check().await.is_ok() {
                return Ok(conn);
            }
            tracing::info!(environment = key, host = conn.host(), "ssh master is gone; reconnecting");
        }
        let conn = Arc::new(HostConnection::connect(target, self.options.clone()).await?);
        self.entries.lock().await.insert(key.to_owned(), Entry { fingerprint: fp, conn: conn.clone() });
        Ok(conn)
    }

    /// Forget the connection for `key` (Environment deleted); it closes when the last user drops it.
    pub async fn evict(&self, key: &str) {
        self.entries.lock().await.remove(key);
    }

    /// Closes every master (on shutdown), so no ssh process or key directory outlives the controller.
    pub async fn close_all(&self) {
        let entries: Vec<Entry> = self.entries.lock().await.drain().map(|(_, e)| e).collect();
        for entry in entries {
            match Arc::try_unwrap(entry.conn) {
                Ok(conn) => {
                    let host = conn.host().to_owned();
                    if let Err(e) = conn.close().await {
                        tracing::debug!(host, error = %e, "closing ssh master");
                    }
                }
                // Still in use by a reconcile that is winding down; it closes when that drops it.
                Err(shared) => drop(shared),
            }
        }
    }

    pub async fn len(&self) -> usize {
        self.entries.lock().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.entries.lock().await.is_empty()
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
