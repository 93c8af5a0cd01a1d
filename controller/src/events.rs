//! Kubernetes Events (`events.k8s.io/v1`), folded into series the way kube's `Recorder` folds
//! them: an Event of one object with the type, reason and action of one recorded within the last
//! [`SERIES_WINDOW`] becomes one more count of that Event (its note stays the first one) rather
//! than a new object.
//!
//! Why not kube's `Recorder`: it keeps a full copy of every Event of the last six minutes in a
//! map that never gives memory back, and scans the whole map on every Event. With 1,000
//! Environments each recording a few Events as they are first checked, that map held 5.6 MiB
//! for good (benchmark P5). This one keeps what a series needs (the Event's name and namespace,
//! its count, when it was last seen), sweeps at most once per [`SWEEP_EVERY`], and shrinks the map
//! once most of it has expired.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
pub use kube::runtime::events::{Event, EventType, Reporter};

/// Events of one object with one type, reason and action within this long of each other make
/// one series (kube's `Recorder` uses the same six minutes).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Expired series are dropped at most this often.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What makes two Events one series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    warning: bool,
    reason: String,
    action: String,
    regarding: ObjectKey,
    related: Option<ObjectKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ObjectKey {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    field_path: Option<String>,
}

impl From<&ObjectReference> for ObjectKey {
    fn from(r: &ObjectReference) -> Self {
        ObjectKey {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            uid: r.uid.clone(),
            field_path: r.field_path.clone(),
        }
    }
}

/// A recorded Event, as much as its next count needs.
#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    count: i32,
    last: Instant,
}

/// The series recorded within the window, and when they were last swept.
#[derive(Debug)]
struct Series {
    seen: HashMap<Key, Seen>,
    swept: Instant,
}

impl Series {
    fn new(now: Instant) -> Self {
        Series { seen: HashMap::new(), swept: now }
    }

    /// Drops the series last seen a window ago or more (at most once per [`SWEEP_EVERY`]), and
    /// gives the map's memory back once it is less than a quarter full.
    fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.swept) < SWEEP_EVERY {
            return;
        }
        self.swept = now;
        self.seen.retain(|_, s| now.saturating_duration_since(s.last) < SERIES_WINDOW);
        if self.seen.capacity() > 64 && self.seen.len() < self.seen.capacity() / 4 {
            self.seen.shrink_to(self.seen.len() * 2);
        }
    }

    /// The next count of `key`'s series when it has one within the window; counted by
    /// [`Series::confirm`] once the API server took it.
    fn next(&mut self, key: &Key, now: Instant) -> Option<Seen> {
        self.sweep(now);
        let seen = self.seen.get(key)?;
        if now.saturating_duration_since(seen.last) >= SERIES_WINDOW {
            return None;
        }
        Some(Seen { count: seen.count + 1, last: now, ..seen.clone() })
    }

    /// Records `seen` as `key`'s series, unless a later count is already recorded.
    fn confirm(&mut self, key: Key, seen: Seen) {
        match self.seen.get_mut(&key) {
            Some(old) if old.name == seen.name && old.count >= seen.count => {}
            Some(old) => *old = seen,
            None => {
                self.seen.insert(key, seen);
            }
        }
    }
}

/// Publishes Events with series folding; see the module documentation.
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Mutex<Series>,
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Recorder { client, reporter, series: Mutex::new(Series::new(Instant::now())) }
    }

    fn series(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Series remembered (for tests and the benchmark's account of memory).
    pub fn series_len(&self) -> usize {
        self.series().seen.len()
    }

    /// Records `ev` about `regarding`: one more count of its series when there is one within
    /// the window, else a new Event in `regarding`'s namespace ("default" for a cluster-scoped
    /// object).
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = Key {
            warning: matches!(ev.type_, EventType::Warning),
            reason: ev.reason.clone(),
            action: ev.action.clone(),
            regarding: regarding.into(),
            related: ev.secondary.as_ref().map(ObjectKey::from),
        };
        let now = Instant::now();
        let next = self.series().next(&key, now);
        if let Some(seen) = next {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &seen.namespace);
            let patch = serde_json::json!({
                "series": EventSeries { count: seen.count, last_observed_time: MicroTime(Timestamp::now()) }
            });
            match api.patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.series().confirm(key, seen);
                    return Ok(());
                }
                // The Event expired on the server (its TTL is an hour by default): start anew.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.new_event(ev, regarding);
        let namespace = event.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let name = event.metadata.name.clone().unwrap_or_default();
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.series().confirm(key, Seen { namespace, name, count: 1, last: now });
        Ok(())
    }

    /// The Event as kube's `Recorder` writes it: named after the object and the time.
    fn new_event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = Timestamp::now();
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(regarding.namespace.clone().unwrap_or_else(|| "default".to_owned())),
                name: Some(format!("{}.{:x}", regarding.name.as_ref().unwrap_or(controller), now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(self.reporter.instance.clone().unwrap_or_else(|| controller.clone())),
            type_: Some(if matches!(ev.type_, EventType::Warning) { "Warning" } else { "Normal" }.to_owned()),
            related: ev.secondary.clone(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, reason: &str) -> Key {
        Key {
            warning: false,
            reason: reason.into(),
            action: "Reconcile".into(),
            regarding: ObjectKey::from(&ObjectReference {
                kind: Some("Environment".into()),
                namespace: Some("shop".into()),
                name: Some(name.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            }),
            related: None,
        }
    }

    fn seen(name: &str, at: Instant) -> Seen {
        Seen { namespace: "shop".into(), name: name.into(), count: 1, last: at }
    }

    #[test]
    fn a_repeat_within_the_window_counts_and_one_after_it_starts_anew() {
        let t0 = Instant::now();
        let mut s = Series::new(t0);
        assert!(s.next(&key("a", "Healthy"), t0).is_none(), "nothing recorded yet");
        s.confirm(key("a", "Healthy"), seen("a.1", t0));
        let second = s.next(&key("a", "Healthy"), t0 + Duration::from_secs(60)).unwrap();
        assert_eq!((second.name.as_str(), second.count), ("a.1", 2));
        let again = s.next(&key("a", "Healthy"), t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(again.count, 2, "a count the API server did not take is not used up");
        s.confirm(key("a", "Healthy"), again);
        s.confirm(key("a", "Healthy"), second);
        let third = s.next(&key("a", "Healthy"), t0 + Duration::from_secs(61) + SERIES_WINDOW / 2).unwrap();
        assert_eq!(third.count, 3, "the window runs from the last count; an older answer does not go back");
        assert!(s.next(&key("a", "Unhealthy"), t0).is_none(), "another reason is another series");
        assert!(s.next(&key("b", "Healthy"), t0).is_none(), "another object is another series");
        s.confirm(key("a", "Healthy"), third);
        let late = t0 + Duration::from_secs(61) + SERIES_WINDOW / 2 + SERIES_WINDOW;
        assert!(s.next(&key("a", "Healthy"), late).is_none(), "a window after the last count");
    }

    #[test]
    fn expired_series_go_and_the_map_gives_its_memory_back() {
        let t0 = Instant::now();
        let mut s = Series::new(t0);
        for i in 0..4000 {
            s.seen.insert(key(&format!("env-{i}"), "Healthy"), seen(&format!("env-{i}.1"), t0));
        }
        s.seen.insert(key("late", "Healthy"), seen("late.1", t0 + SERIES_WINDOW));
        let big = s.seen.capacity();
        // Within SWEEP_EVERY of the last sweep nothing is scanned.
        s.sweep(t0 + SWEEP_EVERY / 2);
        assert_eq!(s.seen.len(), 4001);
        s.sweep(t0 + SERIES_WINDOW + Duration::from_secs(1));
        assert_eq!(s.seen.len(), 1, "only the series seen within the window stays");
        assert!(s.seen.contains_key(&key("late", "Healthy")));
        assert!(s.seen.capacity() < big / 8, "capacity {} of {big}", s.seen.capacity());
    }
}
