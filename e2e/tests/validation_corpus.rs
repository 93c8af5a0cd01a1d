//! Every value of `crds/tests/validation-corpus.yaml`, in every field of
//! `slipway_crds::patterns::FIELDS`, submitted to the real API server with
//! `kubectl apply --dry-run=server`: values to accept are accepted, values to refuse are refused
//! with the field named in the error. `controller/tests/validation_corpus.rs` holds the remote
//! layer to the same corpus, so what the API server lets through the remote layer accepts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use slipway_crds::corpus::{self, Sample};
use slipway_crds::patterns::{FIELDS, Field, FieldShape};
use slipway_e2e::cluster::TestCluster;
use slipway_e2e::require_sandbox;

/// kubectl calls in flight at once.
const THREADS: usize = 4;

/// Who submits the objects (impersonated, with an administrator's rights): the DeployRequests
/// name this user in `slipway.dev/requested-by`, as the admission policy requires.
const AS: [&str; 4] = ["--as", "slipway-corpus", "--as-group", "system:masters"];

/// A valid object of `kind` whose `spec.health.checks` are an http, a tcp, an exec and an
/// `http.url` check, as the pointers of `FIELDS` expect.
fn base(kind: &str) -> Value {
    let spec = match kind {
        "Environment" => json!({
            "tier": "production",
            "host": {"address": "10.0.0.5", "port": 22, "user": "deploy", "path": "/srv/shop"},
            "sshKeySecretRef": {"name": "shop-ssh", "key": "id_ed25519"},
            "knownHostsSecretRef": {"name": "shop-ssh", "key": "known_hosts"},
            "repository": {"url": "ssh://git@git.example.internal/shop.git"},
            "compose": {"files": ["docker-compose.yml"], "projectName": "shop"},
            "migrations": {
                "service": "backend",
                "upgrade": ["alembic", "upgrade", "head"],
                "current": ["alembic", "current"],
                "downgrade": ["alembic", "downgrade", "{revision}"],
            },
            "health": {"checks": [
                {"name": "backend", "http": {"service": "backend", "port": 8000, "path": "/health"}},
                {"name": "db-port", "tcp": {"service": "db", "port": 5432}},
                {"name": "db", "exec": {"service": "db", "command": ["pg_isready"]}},
                {"name": "public", "http": {"url": "https://shop.example.com/health"}},
            ]},
            "policy": {
                "promoteFrom": ["staging"],
                "windows": [{"kind": "Deny", "schedule": "0 22 * * 5", "duration": "60h", "timeZone": "Europe/Berlin"}],
            },
            "notifications": [
                {"name": "qa", "urlSecretRef": {"name": "shop-hooks", "key": "qa"}, "events": ["Succeeded"]},
            ],
            "revision": {"tag": "v1.0.0", "issue": "#45"},
        }),
        "DeployRequest" => json!({
            "environment": "production",
            "revision": {"tag": "v1.0.0"},
            "issue": "#45",
        }),
        "Rollback" => json!({"environment": "production", "to": {"previous": true}, "reason": "5xx after v1.2.3"}),
        other => panic!("no base object for {other}"),
    };
    let mut metadata = json!({"name": "base"});
    if kind == "DeployRequest" || kind == "Rollback" {
        metadata["annotations"] = json!({"slipway.dev/requested-by": AS[1]});
    }
    json!({"apiVersion": "slipway.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

/// Objects that must set exactly one of their fields: emptied before one is set.
const ONE_OF: &[&str] = &["/spec/revision", "/spec/to"];

/// The base object of the field's kind, called `name`, with `sample` in the field.
fn object(field: &Field, name: &str, sample: &Sample) -> Value {
    let value = match (field.shape, sample) {
        (FieldShape::One(_), Sample::Text(_)) | (FieldShape::Argv, Sample::List(_)) => sample.to_json(),
        (FieldShape::Each(_), Sample::Text(t)) => json!([t]),
        _ => panic!("{} {}: corpus value {} has the wrong type", field.kind, field.pointer, sample.label()),
    };
    let mut obj = base(field.kind);
    obj["metadata"]["name"] = name.into();
    // Only the one-of members themselves empty their object (an Environment's revision also
    // holds its issue, which needs a member next to it).
    let member = ["branch", "tag", "commit", "release"].iter().any(|k| field.pointer.ends_with(&format!("/{k}")));
    if let Some(one_of) = ONE_OF.iter().find(|p| member && field.pointer.starts_with(&format!("{p}/"))) {
        *obj.pointer_mut(one_of).expect("one-of object in base") = json!({});
    }
    // a DeployRequest sets exactly one of revision and restart
    if field.pointer == "/spec/restart" {
        obj["spec"].as_object_mut().expect("spec").remove("revision");
    }
    let (parent, key) = field.pointer.rsplit_once('/').expect("pointer has a parent");
    let parent = obj.pointer_mut(parent).unwrap_or_else(|| panic!("base {} lacks {parent}", field.kind));
    parent.as_object_mut().expect("parent is an object").insert(key.to_owned(), value);
    obj
}

/// `/spec/health/checks/0/name` as the API server writes it: `spec.health.checks[0].name`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// What the API server said about one object.
enum Verdict {
    Accepted,
    Refused(String),
}

/// `kubectl apply --dry-run=server` of one object.
fn dry_run_one(cluster: &TestCluster, obj: &Value) -> Verdict {
    let args = [&AS[..], &["apply", "--dry-run=server", "-f", "-"]].concat();
    let out = cluster.kubectl_with_stdin(&args, Some(&obj.to_string())).unwrap();
    if out.status.success() {
        Verdict::Accepted
    } else {
        Verdict::Refused(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `kubectl apply --dry-run=server` of many objects in one List; an object whose fate the
/// output does not tell is submitted again on its own.
fn dry_run(cluster: &TestCluster, objects: &[(String, Value)]) -> Vec<Verdict> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects.iter().map(|(_, o)| o).collect::<Vec<_>>()});
    let args = [&AS[..], &["apply", "--dry-run=server", "-f", "-"]].concat();
    let out = cluster.kubectl_with_stdin(&args, Some(&list.to_string())).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    objects
        .iter()
        .map(|(name, obj)| {
            let accepted = stdout.lines().any(|l| l.contains(&format!("/{name} ")) && l.contains("server dry run"));
            let quoted = format!("\"{name}\"");
            let refusal: Vec<&str> = stderr.lines().filter(|l| l.contains(&quoted)).collect();
            match (accepted, refusal.is_empty()) {
                (true, true) => Verdict::Accepted,
                (false, false) => Verdict::Refused(refusal.join("\n")),
                _ => dry_run_one(cluster, obj),
            }
        })
        .collect()
}

/// Checks every corpus value in `field`; returns what went wrong.
fn check_field(cluster: &TestCluster, index: usize, field: &Field) -> Vec<String> {
    let corpus = corpus::load();
    let key = field.shape.corpus_key();
    let cases = corpus.get(key).unwrap_or_else(|| panic!("the corpus has no {key:?}"));
    let mut objects = Vec::new();
    let mut expected = Vec::new();
    for (accept, samples) in [(true, &cases.accept), (false, &cases.refuse)] {
        for (i, s) in samples.iter().enumerate() {
            let name = format!("f{index}-{}{i}", if accept { 'a' } else { 'r' });
            objects.push((name.clone(), object(field, &name, s)));
            expected.push((accept, s));
        }
    }
    let path = dotted(field.pointer);
    let what = format!("{} {path}", field.kind);
    let mut failures = Vec::new();
    for (((accept, sample), verdict), (_, obj)) in expected.iter().zip(dry_run(cluster, &objects)).zip(&objects) {
        match (accept, verdict) {
            (true, Verdict::Accepted) => {}
            (true, Verdict::Refused(err)) => {
                failures.push(format!("{what}: refused {} which must be accepted: {err}", sample.label()))
            }
            (false, Verdict::Accepted) => failures.push(format!("{what}: accepted hostile {}", sample.label())),
            (false, Verdict::Refused(err)) => {
                // The error names the field, so the user knows what to fix.
                let names_field = err.contains(&path)
                    || matches!(dry_run_one(cluster, obj), Verdict::Refused(e) if e.contains(&path));
                if !names_field {
                    failures.push(format!("{what}: refused {} without naming {path}: {err}", sample.label()));
                }
            }
        }
    }
    eprintln!("{what}: {} values checked", objects.len());
    failures
}

#[test]
#[ignore = "needs the sandbox: run e2e/run-tests.sh"]
fn the_api_server_accepts_and_refuses_the_corpus() {
    let sandbox = require_sandbox!();
    let cluster = TestCluster::new(&sandbox, "corpus").unwrap();
    // The base objects themselves must be valid, or every refusal would prove nothing.
    for kind in ["Environment", "DeployRequest", "Rollback"] {
        if let Verdict::Refused(err) = dry_run_one(&cluster, &base(kind)) {
            panic!("the base {kind} is refused: {err}");
        }
    }
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(field) = FIELDS.get(i) else { break };
                    let found = check_field(&cluster, i, field);
                    failures.lock().unwrap().extend(found);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} values were judged wrongly:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn objects_are_built_as_the_fields_say() {
    // Runs without a sandbox: every pointer lands in its base object, and one-of siblings go.
    let corpus = corpus::load();
    for (i, field) in FIELDS.iter().enumerate() {
        let sample = &corpus[field.shape.corpus_key()].accept[0];
        let obj = object(field, &format!("f{i}"), sample);
        let want = match field.shape {
            FieldShape::Each(_) => json!([sample.to_json()]),
            _ => sample.to_json(),
        };
        assert_eq!(obj.pointer(field.pointer), Some(&want), "{} {}", field.kind, field.pointer);
    }
    let branch = FIELDS.iter().find(|f| f.pointer == "/spec/revision/branch").unwrap();
    let obj = object(branch, "b", &Sample::Text("main".into()));
    assert_eq!(obj["spec"]["revision"], json!({"branch": "main"}));
    assert_eq!(dotted("/spec/health/checks/0/http/path"), "spec.health.checks[0].http.path");
}
