//! The ValidatingAdmissionPolicy shipped with the install judges the annotations the controller
//! reads (`slipway_crds::annotations`), on the main resource only, and the chart ships the same.

use std::path::PathBuf;

use slipway_crds::annotations::{ADMISSION_POLICY, APPROVE_VERB, APPROVED_BY, REQUESTED_BY};

fn repo_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml).map(|d| serde::Deserialize::deserialize(d).expect("valid YAML")).collect()
}

#[test]
fn the_policy_judges_the_annotations_the_controller_reads() {
    let text = repo_file("manifests/install/admission-policy.yaml");
    let docs = documents(&text);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"].repeat(2));
    // the second judges who may approve through an Environment's spec.revision.approvedBy
    let (env_policy, env_binding) = (&docs[2], &docs[3]);
    assert_eq!(env_binding["spec"]["policyName"], env_policy["metadata"]["name"]);
    assert_eq!(env_binding["spec"]["validationActions"][0].as_str(), Some("Deny"));
    let env_rules = serde_yaml::to_string(&env_policy["spec"]).unwrap();
    assert!(env_rules.contains("resources:\n    - environments"), "{env_rules}");
    assert!(env_rules.contains(&format!(".check('{APPROVE_VERB}')")) && env_rules.contains("revision.?approvedBy"));
    let (policy, binding) = (&docs[0], &docs[1]);
    assert_eq!(policy["metadata"]["name"].as_str(), Some(ADMISSION_POLICY));
    assert_eq!(binding["spec"]["policyName"].as_str(), Some(ADMISSION_POLICY));
    assert_eq!(binding["spec"]["validationActions"][0].as_str(), Some("Deny"));
    assert_eq!(policy["spec"]["failurePolicy"].as_str(), Some("Fail"));

    // The main resource only: status writes (the controller's) carry no metadata change.
    let rules = policy["spec"]["matchConstraints"]["resourceRules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    let resources: Vec<&str> = rules[0]["resources"].as_sequence().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(resources, ["deployrequests", "rollbacks"]);
    let operations: Vec<&str> =
        rules[0]["operations"].as_sequence().unwrap().iter().filter_map(|r| r.as_str()).collect();
    assert_eq!(operations, ["CREATE", "UPDATE"]);

    let expressions = serde_yaml::to_string(&policy["spec"]["variables"]).unwrap();
    for needle in [format!("'{REQUESTED_BY}'"), format!("'{APPROVED_BY}'"), format!(".check('{APPROVE_VERB}')")] {
        assert!(expressions.contains(&needle), "the policy's variables lack {needle}:\n{expressions}");
    }
}

#[test]
fn the_chart_ships_the_same_policy_and_the_approver_role() {
    let plain = repo_file("manifests/install/admission-policy.yaml");
    let chart = repo_file("charts/slipway/templates/admission-policy.yaml");
    let labels = "    {{- include \"slipway.labels\" . | nindent 4 }}";
    let expected = plain.replace("    app.kubernetes.io/name: slipway", labels).replace(
        "system:serviceaccount:slipway-system:slipway",
        "system:serviceaccount:{{ .Values.namespace }}:slipway",
    );
    assert_eq!(chart, expected, "the chart's policy differs");
    for rbac in ["manifests/install/rbac.yaml", "charts/slipway/templates/rbac.yaml"] {
        let text = repo_file(rbac);
        assert!(text.contains("name: slipway-approver"), "{rbac} lacks the ClusterRole slipway-approver");
        assert!(text.contains(&format!("\"{APPROVE_VERB}\"]")), "{rbac}: slipway-approver lacks the approve verb");
    }
    assert!(repo_file("manifests/kustomization.yaml").contains("install/admission-policy.yaml"));
}
