//! The Helm chart and the plain manifests install the same objects.

use std::collections::BTreeMap;
use std::process::Command;

use slipway_e2e::cluster::repo_root;
use slipway_e2e::{read_env_file, require_sandbox};

type Objects = BTreeMap<(String, String, String), serde_yaml::Value>;

fn objects(yaml: &str) -> Objects {
    let mut out = Objects::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let field = |path: &[&str]| {
            path.iter().try_fold(&value, |v, k| v.get(k)).and_then(|v| v.as_str()).unwrap_or("").to_string()
        };
        let key = (field(&["kind"]), field(&["metadata", "namespace"]), field(&["metadata", "name"]));
        assert!(out.insert(key.clone(), value).is_none(), "{key:?} rendered twice");
    }
    out
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).current_dir(repo_root()).output().expect("tool runs");
    assert!(out.status.success(), "{program} {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn helm_template_renders_the_same_objects_as_the_manifests() {
    let sandbox = require_sandbox!();
    let env = read_env_file(&sandbox.join("env")).unwrap();
    let (helm, kubectl) = (&env["SLIPWAY_HELM"], &env["SLIPWAY_KUBECTL"]);

    let lint = run(helm, &["lint", "charts/slipway"]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let chart = objects(&run(helm, &["template", "slipway", "charts/slipway", "--include-crds"]));
    let plain = objects(&run(kubectl, &["kustomize", "manifests"]));
    let names = |o: &Objects| o.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&chart), names(&plain), "the chart and manifests/ install different objects");
    for (key, value) in &plain {
        let mut differences = Vec::new();
        diff(&chart[key], value, String::new(), &mut differences);
        assert!(differences.is_empty(), "{key:?} differs between the chart and manifests/ at {differences:?}");
    }
    assert!(
        plain.keys().any(|(kind, _, name)| kind == "CustomResourceDefinition" && name == "deployrequests.slipway.dev")
    );
}

/// Paths where two YAML values differ; numbers compare by value (kustomize writes 65535.0 as 65535).
fn diff(a: &serde_yaml::Value, b: &serde_yaml::Value, path: String, out: &mut Vec<String>) {
    use serde_yaml::Value;
    match (a, b) {
        (Value::Mapping(x), Value::Mapping(y)) => {
            for key in x.keys().chain(y.keys()) {
                let name = key.as_str().unwrap_or("?");
                let missing = Value::Null;
                diff(x.get(key).unwrap_or(&missing), y.get(key).unwrap_or(&missing), format!("{path}.{name}"), out);
            }
        }
        (Value::Sequence(x), Value::Sequence(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => {}
        _ if a == b => {}
        _ => out.push(path),
    }
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn chart_values_render_what_they_say() {
    let sandbox = require_sandbox!();
    let env = read_env_file(&sandbox.join("env")).unwrap();
    let helm = &env["SLIPWAY_HELM"];
    let values = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        values.path(),
        "replicas: 2\nwatchLabelSelector: \"slipway.dev/shard in (a,b)\"\nextraArgs: [\"--leader-election-lease-duration=30\"]\n\
         httpUrlAllow: [\"https://shop.example.com/\", \"http://127.0.0.1:18080/health\"]\n\
         logLevel: debug\nlogFormat: human\nmetrics: {port: 9090, serviceMonitor: {enabled: true, labels: {release: prom}}}\n\
         podDisruptionBudget: {enabled: true}\nhostNetwork: true\npodAnnotations: {prometheus.io/scrape: \"true\"}\n\
         nodeSelector: {kubernetes.io/os: linux}\ntolerations: [{key: dedicated, operator: Exists}]\n\
         affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: []}}\n\
         resources: {limits: {memory: 128Mi}}\n",
    )
    .unwrap();
    let file = values.path().to_str().unwrap();
    let lint = run(helm, &["lint", "charts/slipway", "--values", file]);
    assert!(lint.contains("0 chart(s) failed"), "{lint}");
    let chart = objects(&run(helm, &["template", "slipway", "charts/slipway", "--values", file]));
    let get = |kind: &str, name: &str| {
        chart
            .get(&(kind.to_owned(), "slipway-system".to_owned(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let deployment = get("Deployment", "slipway-controller");
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let args: Vec<&str> =
        spec["containers"][0]["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "--log-format=human",
            "--http-addr=0.0.0.0:9090",
            "--leader-elect",
            "--watch-label-selector=slipway.dev/shard in (a,b)",
            "--http-url-allow=https://shop.example.com/",
            "--http-url-allow=http://127.0.0.1:18080/health",
            "--leader-election-lease-duration=30"
        ]
    );
    assert_eq!(spec["containers"][0]["ports"][0]["containerPort"].as_u64(), Some(9090));
    assert_eq!(spec["containers"][0]["resources"]["limits"]["memory"].as_str(), Some("128Mi"));
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"].as_str(), Some("linux"));
    assert_eq!(spec["tolerations"][0]["key"].as_str(), Some("dedicated"));
    assert!(spec["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"].as_str(),
        Some("true")
    );
    let monitor = get("ServiceMonitor", "slipway-controller");
    assert_eq!(monitor["metadata"]["labels"]["release"].as_str(), Some("prom"));
    assert_eq!(get("Service", "slipway-controller-metrics")["spec"]["ports"][0]["port"].as_u64(), Some(9090));
    assert_eq!(get("PodDisruptionBudget", "slipway-controller")["spec"]["maxUnavailable"].as_u64(), Some(1));
    // The leader election's RBAC is there with or without these values.
    get("Role", "slipway-leader-election");
    get("RoleBinding", "slipway-leader-election");
}
