//! Watches of running host jobs. While a step's host job runs, one task per job waits on the host
//! for it to end (the job's `alive` lock: no CPU on either side) and then wakes the request's
//! reconcile through its controller's trigger stream. The reconcile itself only looks once and
//! lets go: a long build costs one idle SSH session, not a reconcile (a fresh read of the
//! request, of its Environment and its Secrets, and an SSH session) every [`super::POLL`].
//!
//! Benchmark P3 at N=50: with reconciles polling fifty running `up`s four times a second, the
//! API server (on the same two cores as the hosts' Docker engine) and the hosts' shells took the
//! machine, and fifty deploys at once took 2.49 times as long as fifty plain ssh scripts.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use slipway_crds::{DeployRequest, Rollback};

use crate::remote::{HostConnection, JobKey, Jobs};

/// How long one wait on the host lasts before the watch asks again (a job's end is seen at once
/// either way; the bound only limits how long one SSH session stays open).
pub const WATCH_WAIT: Duration = Duration::from_secs(20);
/// How often a watch polls instead when its master has no session to spare for a wait (more
/// jobs running on one host at once than [`HostConnection::try_wait_slot`] allows), or when
/// waits fail on its host; also the least time between two looks of one watch.
pub const WATCH_POLL: Duration = Duration::from_millis(500);
/// Default of how long a reconcile that leaves its running job to a watch lets go for
/// (`--job-watch-fallback-seconds`): a fallback only (the watch wakes it when the job ends),
/// shortened to the step's deadline.
pub const WATCHED: Duration = Duration::from_secs(30);

/// Which request a watch wakes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waker {
    Deploy(ObjectRef<DeployRequest>),
    Rollback(ObjectRef<Rollback>),
}

/// The watches of this process and the controllers' trigger streams they wake.
pub struct JobWatches {
    /// How long a reconcile that left its job to a watch lets go for.
    pub fallback: Duration,
    watching: Arc<Mutex<HashSet<JobKey>>>,
    deploys: mpsc::UnboundedSender<ObjectRef<DeployRequest>>,
    rollbacks: mpsc::UnboundedSender<ObjectRef<Rollback>>,
    receivers: Mutex<Receivers>,
    stop: tokio::sync::watch::Sender<bool>,
}

struct Receivers {
    deploys: Option<mpsc::UnboundedReceiver<ObjectRef<DeployRequest>>>,
    rollbacks: Option<mpsc::UnboundedReceiver<ObjectRef<Rollback>>>,
}

impl Default for JobWatches {
    fn default() -> Self {
        let (deploys, deploys_rx) = mpsc::unbounded();
        let (rollbacks, rollbacks_rx) = mpsc::unbounded();
        JobWatches {
            fallback: WATCHED,
            watching: Arc::default(),
            deploys,
            rollbacks,
            receivers: Mutex::new(Receivers { deploys: Some(deploys_rx), rollbacks: Some(rollbacks_rx) }),
            stop: tokio::sync::watch::channel(false).0,
        }
    }
}

/// What a controller reconciles, as a watch names it.
pub trait Woken: kube::Resource<DynamicType = ()> + Sized {
    /// The trigger stream of this kind's controller (once per process; `None` after).
    fn wakes(watches: &JobWatches) -> Option<mpsc::UnboundedReceiver<ObjectRef<Self>>>;
}

impl Woken for DeployRequest {
    fn wakes(watches: &JobWatches) -> Option<mpsc::UnboundedReceiver<ObjectRef<Self>>> {
        watches.receivers.lock().unwrap_or_else(PoisonError::into_inner).deploys.take()
    }
}

impl Woken for Rollback {
    fn wakes(watches: &JobWatches) -> Option<mpsc::UnboundedReceiver<ObjectRef<Self>>> {
        watches.receivers.lock().unwrap_or_else(PoisonError::into_inner).rollbacks.take()
    }
}

/// Removes a watch from the set when its task ends, however it ends.
struct Registered {
    watching: Arc<Mutex<HashSet<JobKey>>>,
    key: JobKey,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.watching.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

impl JobWatches {
    /// Watches the running job `key` on `conn` until it ends, then wakes `waker`'s reconcile.
    /// At most one watch per job: a second call while one runs adds none. False once the
    /// watches are stopped (nobody will wake the request).
    pub fn watch(&self, conn: Arc<HostConnection>, key: JobKey, waker: Waker) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        {
            let mut watching = self.watching.lock().unwrap_or_else(PoisonError::into_inner);
            if !watching.insert(key.clone()) {
                return true;
            }
        }
        let registered = Registered { watching: self.watching.clone(), key: key.clone() };
        let wake = {
            let (deploys, rollbacks) = (self.deploys.clone(), self.rollbacks.clone());
            move || {
                // A closed stream means the controller stopped: nothing left to wake.
                let _ = match waker {
                    Waker::Deploy(r) => deploys.unbounded_send(r).map_err(drop),
                    Waker::Rollback(r) => rollbacks.unbounded_send(r).map_err(drop),
                };
            }
        };
        let mut stop = self.stop.subscribe();
        tokio::spawn(async move {
            let ended = tokio::select! {
                () = until_ended(&conn, &key) => true,
                _ = stop.wait_for(|s| *s) => false,
            };
            // Unregistered before the wake, so the reconcile it wakes may watch the key again.
            drop(registered);
            drop(conn);
            if ended {
                wake();
            }
        });
        true
    }

    /// Ends every watch (the controllers stop); no new one starts.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Returns once the job `key` no longer runs, or once its host cannot tell (the reconcile then
/// judges what it finds, errors included).
async fn until_ended(conn: &HostConnection, key: &JobKey) {
    let jobs = Jobs::new(conn);
    // Cleared when a wait fails on this host: the watch polls from then on.
    let mut waits = true;
    loop {
        let looked = tokio::time::Instant::now();
        let state = match conn.try_wait_slot().filter(|_| waits) {
            Some(_held) => match jobs.wait(key, WATCH_WAIT).await {
                Err(e) if !e.is_transient() => {
                    tracing::warn!(job = %key, error = %e, "waiting for a host job failed; polling it instead");
                    waits = false;
                    continue;
                }
                other => other,
            },
            None => jobs.poll(key).await,
        };
        match state {
            Ok(s) if s.is_running() => {}
            Ok(_) => return,
            Err(e) => {
                // The reconcile retries with its backoff; woken after a pause, so a host that
                // keeps failing cannot turn the watch and the reconcile into a loop.
                tracing::debug!(job = %key, error = %e, "watching a host job");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        }
        // Never two looks within WATCH_POLL: a wait that returns at once while the job runs (a
        // host whose `flock` cannot wait) must not become a loop of SSH sessions.
        tokio::time::sleep_until(looked + WATCH_POLL).await;
    }
}
