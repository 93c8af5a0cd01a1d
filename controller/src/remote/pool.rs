//! SSH masters shared by every Environment that names the same target (address, port, user,
//! key and known_hosts): 1,000 Environments on 10 hosts with one key need 10 masters. Each
//! Environment gets its own [`HostConnection`] handle on the master (its own redactor and TCP
//! forwards). A master is replaced when it has died, and closed when no Environment uses it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::error::RemoteError;
use super::ssh::{ConnectOptions, HostConnection, HostTarget};

/// What makes two Environments' masters interchangeable: everything the connection is made of.
/// Compared in full (not by a digest), so two targets share a master only when they are equal.
/// The handles on one master share its key (one copy of the key and known_hosts per master, not
/// per Environment: benchmark P5 kept 4 MiB of known_hosts copies for 1,000 Environments).
#[derive(Clone)]
struct MasterKey(Arc<HostTarget>);

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (&self.0, &other.0);
        Arc::ptr_eq(a, b)
            || a.address == b.address
                && a.port == b.port
                && a.user == b.user
                && a.known_hosts == b.known_hosts
                && a.private_key.expose() == b.private_key.expose()
    }
}

impl Eq for MasterKey {}

impl Hash for MasterKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // The key bytes are compared by `eq`; the hash (SipHash with a per-process random key,
        // never stored or shown) needs only to spread the entries.
        self.0.address.hash(h);
        self.0.port.hash(h);
        self.0.user.hash(h);
        self.0.known_hosts.hash(h);
        self.0.private_key.expose().hash(h);
    }
}

/// One master; its lock is held while connecting, so one target connects once at a time.
type Slot = Arc<Mutex<Option<Arc<HostConnection>>>>;

/// An Environment's handle, and which master it is on.
struct Handle {
    key: MasterKey,
    conn: Arc<HostConnection>,
}

#[derive(Default)]
struct State {
    masters: HashMap<MasterKey, Slot>,
    /// Handles by Environment (`kind/namespace/name`).
    handles: HashMap<String, Handle>,
}

/// Masters by target, handles by Environment.
pub struct ConnectionPool {
    options: ConnectOptions,
    state: std::sync::Mutex<State>,
}

impl ConnectionPool {
    pub fn new(options: ConnectOptions) -> Self {
        Self { options, state: std::sync::Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The live master for `key`, connecting (again) when there is none or it no longer
    /// answers. Concurrent callers for one target share one connect.
    async fn master(&self, key: &MasterKey) -> Result<Arc<HostConnection>, RemoteError> {
        let slot = self.state().masters.entry(key.clone()).or_default().clone();
        let mut master = slot.lock().await;
        if let Some(m) = master.as_ref() {
            if m.check().await.is_ok() {
                return Ok(m.clone());
            }
            tracing::info!(host = m.host(), user = m.user(), "ssh master is gone; reconnecting");
        }
        if let Some(old) = master.take() {
            close(old).await;
        }
        match HostConnection::connect(&key.0, self.options.clone()).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                *master = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                // No master: forget the slot (and the key it holds), unless another caller
                // already put a new one in its place. A host that never answers leaves nothing.
                let mut state = self.state();
                if state.masters.get(key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    state.masters.remove(key);
                }
                Err(e)
            }
        }
    }

    /// The live connection for Environment `env`, connecting (again) when there is no master for
    /// its target, the target changed, or the master no longer answers.
    pub async fn get(&self, env: &str, target: &HostTarget) -> Result<Arc<HostConnection>, RemoteError> {
        let key = MasterKey(Arc::new(target.clone()));
        let master = self.master(&key).await?;
        let previous = {
            let mut state = self.state();
            // The master's own key, so this handle shares it rather than keeping a copy.
            let shared = state.masters.get_key_value(&key).map_or_else(|| key.clone(), |(k, _)| k.clone());
            if let Some(h) = state.handles.get(env)
                && h.key == shared
                && h.conn.same_master(&master)
            {
                return Ok(h.conn.clone());
            }
            let conn = Arc::new(master.share());
            let old = state.handles.insert(env.to_owned(), Handle { key: shared, conn: conn.clone() });
            (old, conn)
        };
        // The Environment moved to another target: the old master closes if nothing else uses it.
        let (old, conn) = previous;
        if let Some(old) = old
            && old.key != key
        {
            drop(old.conn);
            self.release(&old.key).await;
        }
        Ok(conn)
    }

    /// The pooled connection for `env` when it is alive; never connects (for a caller that can
    /// no longer read the target's credentials, such as an Environment whose Secrets are gone).
    pub async fn current(&self, env: &str) -> Option<Arc<HostConnection>> {
        let conn = self.state().handles.get(env).map(|h| h.conn.clone())?;
        conn.check().await.is_ok().then_some(conn)
    }

    /// Closes the master of `key` when no Environment's handle is on it any more.
    async fn release(&self, key: &MasterKey) {
        let slot = {
            let mut state = self.state();
            if state.handles.values().any(|h| &h.key == key) {
                return;
            }
            state.masters.remove(key)
        };
        if let Some(slot) = slot
            && let Some(master) = slot.lock().await.take()
        {
            close(master).await;
        }
    }

    /// Forgets `env`'s handle (Environment deleted, host check failed), and closes its master
    /// when no other Environment uses it. A master that failed the check is replaced by the
    /// next `get` of any Environment on it.
    pub async fn evict(&self, env: &str) {
        let handle = self.state().handles.remove(env);
        if let Some(h) = handle {
            drop(h.conn);
            self.release(&h.key).await;
        }
    }

    /// Evicts every Environment for which `keep` says no (Environments that no longer exist).
    pub async fn retain(&self, keep: impl Fn(&str) -> bool) -> usize {
        let gone: Vec<String> = self.state().handles.keys().filter(|k| !keep(k)).cloned().collect();
        for env in &gone {
            self.evict(env).await;
        }
        gone.len()
    }

    /// Closes every master (on shutdown), so no ssh process or key directory outlives the controller.
    pub async fn close_all(&self) {
        let envs: Vec<String> = self.state().handles.keys().cloned().collect();
        for env in envs {
            self.evict(&env).await;
        }
        let slots: Vec<Slot> = self.state().masters.drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(master) = slot.lock().await.take() {
                close(master).await;
            }
        }
    }

    /// Environments with a handle.
    pub fn len(&self) -> usize {
        self.state().handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Masters open (or being opened); a failed connect leaves none.
    pub fn masters(&self) -> usize {
        self.state().masters.len()
    }
}

async fn close(conn: Arc<HostConnection>) {
    match Arc::try_unwrap(conn) {
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
    fn targets_share_a_master_only_when_every_field_is_equal() {
        let base = HostTarget {
            address: "10.0.0.5".into(),
            port: 22,
            user: "deploy".into(),
            private_key: SecretBytes::from("key"),
            known_hosts: "kh".into(),
        };
        let key = MasterKey(Arc::new(base.clone()));
        let variants = [
            HostTarget { address: "10.0.0.6".into(), ..base.clone() },
            HostTarget { port: 2222, ..base.clone() },
            HostTarget { user: "root".into(), ..base.clone() },
            HostTarget { private_key: SecretBytes::from("key2"), ..base.clone() },
            HostTarget { known_hosts: "kh2".into(), ..base.clone() },
        ];
        for v in variants {
            assert!(MasterKey(Arc::new(v)) != key);
        }
        assert!(MasterKey(Arc::new(base.clone())) == key);
        let mut map = HashMap::new();
        map.insert(key, 1);
        assert_eq!(map.get(&MasterKey(Arc::new(base))), Some(&1));
    }
}
