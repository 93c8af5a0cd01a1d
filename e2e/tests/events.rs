//! The controller's Event recorder against the real API server, as the controller's own
//! ServiceAccount: a repeated Event of one object, type, reason and action becomes one more count
//! of its series (the first note stays), anything else is an Event of its own.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use slipway_controller::events::{Event, EventType, Recorder, Reporter};
use slipway_e2e::cluster::TestCluster;
use slipway_e2e::require_sandbox;

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn a_repeated_event_counts_in_its_series_and_another_reason_is_an_event_of_its_own() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "events").unwrap();
    let ns = cluster.namespace.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(sandbox.join("controller.kubeconfig")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.unwrap();
        let client = slipway_controller::api_client(config).unwrap();
        let reporter = Reporter { controller: "slipway-controller".into(), instance: Some("events-test".into()) };
        let recorder = Recorder::new(client.clone(), reporter);
        let regarding = |name: &str| ObjectReference {
            api_version: Some("slipway.dev/v1alpha1".into()),
            kind: Some("Environment".into()),
            namespace: Some(ns.clone()),
            name: Some(name.into()),
            uid: Some(format!("00000000-0000-0000-0000-00000000000{}", name.len())),
            ..Default::default()
        };
        let event = |reason: &str, note: &str| Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        for note in ["first", "second", "third"] {
            recorder.publish(&event("Unhealthy", note), &regarding("shop")).await.unwrap();
        }
        recorder.publish(&event("Healthy", "back"), &regarding("shop")).await.unwrap();
        recorder.publish(&event("Unhealthy", "other object"), &regarding("blog")).await.unwrap();

        // Read as the admin: the controller may create and patch Events, not list them.
        let admin = slipway_e2e::bench::admin_client(&cluster.admin_kubeconfig).await.unwrap();
        let api: Api<K8sEvent> = Api::namespaced(admin, &ns);
        let events = api.list(&ListParams::default()).await.unwrap().items;
        let mut seen: Vec<(String, String, String, i32)> = events
            .iter()
            .map(|e| {
                (
                    e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                    e.series.as_ref().map_or(1, |s| s.count),
                )
            })
            .collect();
        seen.sort();
        let expected = [
            ("blog", "Unhealthy", "other object", 1),
            ("shop", "Healthy", "back", 1),
            ("shop", "Unhealthy", "first", 3),
        ]
        .map(|(o, r, n, c)| (o.to_owned(), r.to_owned(), n.to_owned(), c));
        assert_eq!(seen, expected, "{events:#?}");
        let folded = events.iter().find(|e| e.series.is_some()).unwrap();
        assert_eq!(folded.reporting_controller.as_deref(), Some("slipway-controller"));
        assert_eq!(folded.reporting_instance.as_deref(), Some("events-test"));
        assert_eq!(folded.type_.as_deref(), Some("Warning"));
        assert_eq!(recorder.series_len(), 3);
    });
}
