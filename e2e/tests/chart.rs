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
