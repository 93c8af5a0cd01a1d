//! The generated CRDs enforce every shape of `slipway_crds::patterns::FIELDS` (lengths and CEL
//! rules), no string field escapes the table unnoticed, and the corpus covers every field.

use std::collections::BTreeSet;

use serde_json::Value;
use slipway_crds::patterns::{self, ARGUMENT, ARGV_MAX_ITEMS, FIELDS, FieldShape, PROGRAM, Shape};

/// String fields that deliberately have no shape: names of Secrets (checked by the API server
/// when read) and the free-form JSON expected from an HTTP check.
const UNSHAPED: &[&str] = &[
    "Environment/spec/sshKeySecretRef/name",
    "Environment/spec/sshKeySecretRef/key",
    "Environment/spec/knownHostsSecretRef/name",
    "Environment/spec/knownHostsSecretRef/key",
    "Environment/spec/envSecretRef/name",
    "Environment/spec/health/checks/0/http/expectJson/*",
    "Environment/spec/notifications/0/urlSecretRef/name",
    "Environment/spec/notifications/0/urlSecretRef/key",
    // A user name as the API server knows it (an e-mail, system:serviceaccount:...): free text
    // of bounded length; who may set it is the admission policy's business.
    "Environment/spec/revision/approvedBy",
    // Enums: the schema admits only their values.
    "Environment/spec/notifications/0/format",
    "Environment/spec/notifications/0/events",
    "DeployRequest/spec/mode",
    // Enums: the schema admits only their values.
    "Rollback/spec/migrations",
    "Environment/spec/drift",
    "Environment/spec/policy/windows/0/kind",
    "Environment/spec/policy/waive",
    "Environment/spec/health/logErrors",
];

fn spec_schema(kind: &str) -> Value {
    let crd = slipway_crds::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema node of a JSON pointer into an object.
fn node<'a>(root: &'a Value, pointer: &str) -> &'a Value {
    let mut n = root;
    for seg in pointer.split('/').skip(1) {
        n = if seg.chars().all(|c| c.is_ascii_digit()) { &n["items"] } else { &n["properties"][seg] };
        assert!(!n.is_null(), "no schema for {pointer} (at {seg})");
    }
    n
}

fn rules(n: &Value) -> BTreeSet<String> {
    n["x-kubernetes-validations"]
        .as_array()
        .map(|a| a.iter().map(|r| r["rule"].as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn assert_lengths(n: &Value, shape: &Shape, what: &str) {
    assert_eq!(n["maxLength"].as_u64(), Some(shape.max_len as u64), "{what}: maxLength");
    let min = n["minLength"].as_u64().unwrap_or(0);
    assert_eq!(min, shape.min_len as u64, "{what}: minLength");
}

#[test]
fn every_shaped_field_is_enforced_by_the_schema() {
    for f in FIELDS {
        let root = spec_schema(f.kind);
        let n = node(&root, f.pointer);
        let what = format!("{} {}", f.kind, f.pointer);
        let have = rules(n);
        match f.shape {
            FieldShape::One(shape) => {
                assert_eq!(n["type"], "string", "{what}");
                assert_lengths(n, shape, &what);
                assert!(have.contains(&shape.rule("x").rule), "{what}: lacks {}", shape.rule("x").rule);
                if shape.forbidden.is_some() {
                    let r = shape.forbidden_rule("x").rule;
                    assert!(have.contains(&r), "{what}: lacks {r}");
                }
            }
            FieldShape::Each(shape) => {
                assert_eq!(n["type"], "array", "{what}");
                assert_lengths(&n["items"], shape, &what);
                assert!(have.contains(&shape.each_rule("x").rule), "{what}: lacks the pattern rule");
                if shape.forbidden.is_some() {
                    assert!(have.contains(&shape.each_forbidden_rule("x").rule), "{what}: lacks the forbidden rule");
                }
            }
            FieldShape::Argv => {
                assert_eq!(n["type"], "array", "{what}");
                assert_eq!(n["maxItems"].as_u64(), Some(ARGV_MAX_ITEMS as u64), "{what}: maxItems");
                assert_eq!(n["items"]["maxLength"].as_u64(), Some(ARGUMENT.max_len as u64), "{what}: item maxLength");
                assert_eq!(PROGRAM.max_len, ARGUMENT.max_len, "a program is an argument");
                assert!(have.contains(&patterns::program_rule("x").rule), "{what}: lacks the program rule");
                assert!(have.contains(&ARGUMENT.each_rule("x").rule), "{what}: lacks the argument rule");
            }
        }
    }
}

/// Pointers of every string (or list of strings) under `spec`, list items as `0`.
fn string_fields(n: &Value, pointer: &str, out: &mut Vec<String>) {
    match n["type"].as_str() {
        Some("string") => out.push(pointer.to_owned()),
        Some("array") if n["items"]["type"] == "string" => out.push(pointer.to_owned()),
        Some("array") => string_fields(&n["items"], &format!("{pointer}/0"), out),
        _ => {}
    }
    if let Some(props) = n["properties"].as_object() {
        for (k, v) in props {
            string_fields(v, &format!("{pointer}/{k}"), out);
        }
    }
    if n["additionalProperties"].is_object() {
        string_fields(&n["additionalProperties"], &format!("{pointer}/*"), out);
    }
}

#[test]
fn no_string_field_of_a_spec_is_left_without_a_shape() {
    let shaped: BTreeSet<String> = FIELDS.iter().map(|f| format!("{}/{}", f.kind, &f.pointer[1..])).collect();
    let shaped_or_exempt: BTreeSet<String> =
        shaped.iter().cloned().chain(UNSHAPED.iter().map(|s| (*s).to_owned())).collect();
    for kind in ["Environment", "DeployRequest", "Rollback"] {
        let root = spec_schema(kind);
        let mut found = Vec::new();
        string_fields(&root["properties"]["spec"], "/spec", &mut found);
        assert!(found.iter().any(|p| p == "/spec/environment" || p == "/spec/host/path"), "{kind}: {found:?}");
        for p in found {
            // The four health checks differ only in which of http/tcp/exec/http.url they set.
            let p = p
                .replace("/checks/0/tcp/", "/checks/1/tcp/")
                .replace("/checks/0/exec/", "/checks/2/exec/")
                .replace("/checks/0/http/url", "/checks/3/http/url");
            assert!(
                shaped_or_exempt.contains(&format!("{kind}/{}", &p[1..])),
                "{kind} {p} is a string field without a shape: add it to patterns::FIELDS (or to UNSHAPED here)"
            );
        }
    }
}

#[test]
fn the_corpus_covers_every_field_and_only_fields() {
    let corpus = slipway_crds::corpus::load();
    let used: BTreeSet<&str> = FIELDS.iter().map(|f| f.shape.corpus_key()).collect();
    for key in &used {
        let cases = corpus.get(*key).unwrap_or_else(|| panic!("the corpus has no {key:?}"));
        assert!(!cases.accept.is_empty() && !cases.refuse.is_empty(), "{key}: needs values to accept and to refuse");
    }
    for key in corpus.keys() {
        assert!(used.contains(key.as_str()), "corpus key {key:?} is no field's shape");
    }
}

#[test]
fn shapes_are_consistent() {
    let mut names = BTreeSet::new();
    for s in patterns::ALL {
        assert!(names.insert(s.name), "two shapes called {}", s.name);
        assert!(s.pattern.starts_with('^') && s.pattern.ends_with('$'), "{}: pattern must be anchored", s.name);
        assert!(s.min_len <= s.max_len, "{}", s.name);
    }
    for f in FIELDS {
        if let FieldShape::One(s) | FieldShape::Each(s) = f.shape {
            assert!(patterns::ALL.contains(&s), "{} {}: shape {} missing from ALL", f.kind, f.pointer, s.name);
        }
    }
}

#[test]
fn promote_from_is_a_short_set_of_environment_names() {
    let root = spec_schema("Environment");
    let n = node(&root, "/spec/policy/promoteFrom");
    assert_eq!(n["type"], "array");
    assert_eq!(n["maxItems"].as_u64(), Some(patterns::PROMOTE_FROM_MAX_ITEMS as u64));
    assert_eq!(n["x-kubernetes-list-type"], "set", "the API server refuses duplicates");
    assert!(rules(n).contains(&patterns::ENVIRONMENT_NAME.each_rule("x").rule));
}
