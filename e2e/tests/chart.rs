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
        assert_eq!(&chart[key], value, "{key:?} differs between the chart and manifests/");
    }
    assert!(plain.keys().any(|(kind, _, name)| kind == "CustomResourceDefinition" && name == "deployrequests.slipway.dev"));
}
