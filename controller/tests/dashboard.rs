//! The Grafana dashboard (manifests/grafana) queries only metrics the controller exports.

use slipway_controller::metrics::Metrics;

#[test]
fn the_dashboard_queries_metrics_the_controller_exports() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/grafana/slipway-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // A family shows in the exposition once it has a sample.
    let metrics = Metrics::default();
    drop(metrics.reconcile("deployrequest"));
    metrics.error("deployrequest", "kube");
    metrics.deploy_ended("Succeeded");
    metrics.phase_took("Migrating", 1.0);
    metrics.queue_depth("shop", "staging", 1);
    metrics.notification("delivered");
    let exported = metrics.render();
    let metric = regex::Regex::new(r"slipway_[a-z_]+").unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric.find_iter(expr).map(|m| m.as_str()) {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                assert!(
                    exported.contains(&format!("# TYPE {family} ")),
                    "panel {:?} queries {name}, which the controller does not export",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 8, "the dashboard queries {queried} metrics");
}
