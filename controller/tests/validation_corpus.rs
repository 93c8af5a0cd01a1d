//! The remote layer accepts every value of `crds/tests/validation-corpus.yaml` that the CRD
//! schema must accept, and refuses every value the schema must refuse, through the entry points
//! that hand spec values to a host. (`e2e/tests/validation_corpus.rs` checks the same corpus
//! against a real API server.)

use slipway_controller::remote::{ComposeProject, RemoteError, RevisionRef, validate};
use slipway_crds::corpus::{self, Sample};
use slipway_crds::patterns;

type Check = fn(&Sample) -> Result<(), RemoteError>;

fn text(s: &Sample) -> &str {
    match s {
        Sample::Text(t) => t,
        Sample::List(_) => panic!("a list where a string belongs: {}", s.label()),
    }
}

fn list(s: &Sample) -> &[String] {
    match s {
        Sample::List(l) => l,
        Sample::Text(_) => panic!("a string where a command belongs: {}", s.label()),
    }
}

/// Every remote entry point that receives a value of the corpus kind `key`.
fn checks(key: &str) -> Vec<(&'static str, Check)> {
    match key {
        "refName" => vec![
            ("RevisionRef::Branch", |s| RevisionRef::Branch(text(s).into()).validate()),
            ("RevisionRef::Tag", |s| RevisionRef::Tag(text(s).into()).validate()),
        ],
        "commit" => vec![
            ("RevisionRef::Commit", |s| RevisionRef::Commit(text(s).into()).validate()),
            ("validate::commit_id", |s| validate::commit_id(text(s))),
        ],
        "hostPath" => vec![
            ("validate::host_path", |s| validate::host_path("work tree path", text(s))),
            ("ComposeProject::validate (dir)", |s| {
                ComposeProject::new(text(s), "shop", vec!["docker-compose.yml".into()]).validate()
            }),
        ],
        "composeFile" => vec![("ComposeProject::validate (files)", |s| {
            ComposeProject::new("/srv/shop", "shop", vec![text(s).to_owned()]).validate()
        })],
        "projectName" => vec![
            ("validate::project_name", |s| validate::project_name(text(s))),
            ("ComposeProject::validate (name)", |s| {
                ComposeProject::new("/srv/shop", text(s), vec!["docker-compose.yml".into()]).validate()
            }),
        ],
        "serviceName" => vec![("validate::service_name", |s| validate::service_name(text(s)))],
        "checkName" => vec![("validate::check_name", |s| validate::check_name(text(s)))],
        "httpPath" => vec![("validate::http_path", |s| validate::http_path(text(s)))],
        "checkUrl" => vec![("url_check (http.url)", |s| validate::field(&patterns::CHECK_URL, "http.url", text(s)))],
        "hostAddress" => vec![("validate::host_address", |s| validate::host_address(text(s)))],
        "hostUser" => vec![("validate::user_name", |s| validate::user_name(text(s)))],
        "repositoryUrl" => vec![("validate::git_url", |s| validate::git_url(text(s)))],
        "argv" => vec![("validate::argv", |s| validate::argv("command", list(s)))],
        // Record-only fields never reach a host; they are held to the same shapes all the same.
        "issue" => vec![("issue", |s| validate::field(&patterns::ISSUE, "issue", text(s)))],
        "tier" => vec![("tier", |s| validate::field(&patterns::TIER, "tier", text(s)))],
        "environmentName" => {
            vec![("environment", |s| validate::field(&patterns::ENVIRONMENT_NAME, "environment", text(s)))]
        }
        "reason" => vec![("reason", |s| validate::field(&patterns::REASON, "reason", text(s)))],
        "cronSchedule" => vec![("schedule", |s| validate::field(&patterns::CRON_SCHEDULE, "schedule", text(s)))],
        "windowDuration" => vec![("duration", |s| validate::field(&patterns::WINDOW_DURATION, "duration", text(s)))],
        "timeZone" => vec![("timeZone", |s| validate::field(&patterns::TIME_ZONE, "timeZone", text(s)))],
        "receiverName" => vec![("receiver", |s| validate::field(&patterns::RECEIVER_NAME, "receiver", text(s)))],
        "logPattern" => vec![("logErrorPatterns", |s| validate::field(&patterns::LOG_PATTERN, "pattern", text(s)))],
        other => panic!("corpus kind {other:?} has no remote check: add one here"),
    }
}

#[test]
fn the_remote_layer_accepts_and_refuses_what_the_schema_does() {
    let corpus = corpus::load();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (key, cases) in &corpus {
        for (name, check) in checks(key) {
            for v in &cases.accept {
                checked += 1;
                if let Err(e) = check(v) {
                    failures.push(format!("{key}: {name} refused {} which the schema accepts: {e}", v.label()));
                }
            }
            for v in &cases.refuse {
                checked += 1;
                match check(v) {
                    Ok(()) => failures.push(format!("{key}: {name} accepted hostile {}", v.label())),
                    Err(RemoteError::InvalidInput { .. }) => {}
                    Err(e) => {
                        failures.push(format!("{key}: {name} refused {} but not as invalid input: {e}", v.label()))
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {checked} checks failed:\n{}", failures.len(), failures.join("\n"));
    assert!(checked > 300, "only {checked} checks ran");
}

#[test]
fn every_field_kind_has_a_remote_check() {
    for f in patterns::FIELDS {
        assert!(!checks(f.shape.corpus_key()).is_empty(), "{} {}", f.kind, f.pointer);
    }
}
