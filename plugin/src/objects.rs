//! The objects the plugin creates, and the names people type for them (pure).

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use slipway_crds::annotations::REQUESTED_BY;
use slipway_crds::{
    DeployMode, DeployRequest, DeployRequestSpec, Revision, Rollback, RollbackMigrations, RollbackSpec, RollbackTarget,
};

use crate::cli::{DeployArgs, RollbackArgs};

/// Which kind an object argument names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DeployRequest,
    Rollback,
    /// A bare name: a DeployRequest, else a Rollback of that name.
    Either,
}

/// `dr/NAME`, `deployrequest/NAME`, `rollback/NAME`, `rb/NAME` (plural and `.slipway.dev` forms
/// too), or a bare `NAME`.
pub fn parse_object(text: &str) -> Result<(Kind, String), String> {
    let (kind, name) = match text.split_once('/') {
        None => (Kind::Either, text),
        Some((kind, name)) => {
            let kind = match kind.strip_suffix(".slipway.dev").unwrap_or(kind).to_ascii_lowercase().as_str() {
                "dr" | "deployrequest" | "deployrequests" => Kind::DeployRequest,
                "rb" | "rollback" | "rollbacks" => Kind::Rollback,
                other => {
                    return Err(format!(
                        "{other:?} is not a DeployRequest or Rollback: write dr/NAME, rollback/NAME or a DeployRequest's NAME"
                    ));
                }
            };
            (kind, name)
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!("{text:?} names no object: write dr/NAME, rollback/NAME or a DeployRequest's NAME"));
    }
    Ok((kind, name.to_owned()))
}

/// A `metadata.generateName` from readable parts: `staging-v1-2-3-` (lower case, DNS-1123, at
/// most 50 characters so the API server's 5-character suffix fits in 63).
pub fn name_prefix(parts: &[&str]) -> String {
    let mut out = String::new();
    for c in parts.join("-").chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(49);
    let mut out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        out.push_str("slipway");
    }
    out.push('-');
    out
}

fn metadata(name: Option<&str>, prefix: String, namespace: &str, user: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.map(str::to_owned),
        generate_name: name.is_none().then_some(prefix),
        namespace: Some(namespace.to_owned()),
        annotations: Some(BTreeMap::from([(REQUESTED_BY.to_owned(), user.to_owned())])),
        ..ObjectMeta::default()
    }
}

/// The DeployRequest `deploy` creates, requested by `user` (the API server admits only that).
pub fn deploy_request(args: &DeployArgs, namespace: &str, user: &str) -> DeployRequest {
    let revision = Revision { tag: args.tag.clone(), branch: args.branch.clone(), commit: args.commit.clone() };
    let what = revision.name().unwrap_or("deploy");
    let short = if args.commit.is_some() { what.get(..7).unwrap_or(what) } else { what };
    DeployRequest {
        metadata: metadata(args.name.as_deref(), name_prefix(&[&args.environment, short]), namespace, user),
        spec: DeployRequestSpec {
            restart: Vec::new(),
            environment: args.environment.clone(),
            revision,
            issue: args.issue.clone(),
            mode: if args.direct { DeployMode::Direct } else { DeployMode::Change },
            force: args.force,
            override_quarantine: args.override_quarantine,
        },
        status: None,
    }
}

/// The Rollback `rollback` creates: to the previous release unless a tag or release is named.
pub fn rollback(args: &RollbackArgs, namespace: &str, user: &str) -> Rollback {
    let to = match (&args.to_tag, &args.to_release) {
        (Some(tag), _) => RollbackTarget { tag: Some(tag.clone()), ..RollbackTarget::default() },
        (None, Some(release)) => RollbackTarget { release: Some(release.clone()), ..RollbackTarget::default() },
        (None, None) => RollbackTarget { previous: Some(true), ..RollbackTarget::default() },
    };
    Rollback {
        metadata: metadata(args.name.as_deref(), name_prefix(&[&args.environment, "rollback"]), namespace, user),
        spec: RollbackSpec {
            environment: args.environment.clone(),
            to,
            reason: args.reason.clone(),
            migrations: if args.skip_migrations { RollbackMigrations::Skip } else { RollbackMigrations::Downgrade },
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn object_arguments_read_as_kubectl_names() {
        assert_eq!(parse_object("dr/a").unwrap(), (Kind::DeployRequest, "a".into()));
        assert_eq!(parse_object("deployrequests.slipway.dev/a").unwrap(), (Kind::DeployRequest, "a".into()));
        assert_eq!(parse_object("rollback/b").unwrap(), (Kind::Rollback, "b".into()));
        assert_eq!(parse_object("rb/b").unwrap(), (Kind::Rollback, "b".into()));
        assert_eq!(parse_object("c").unwrap(), (Kind::Either, "c".into()));
        for bad in ["pod/x", "dr/", "", "dr/a/b"] {
            assert!(parse_object(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_names_are_dns_labels() {
        assert_eq!(name_prefix(&["staging", "v1.2.3"]), "staging-v1-2-3-");
        assert_eq!(name_prefix(&["staging", "feature/Big_Thing"]), "staging-feature-big-thing-");
        assert_eq!(name_prefix(&["--", "."]), "slipway-");
        let long = name_prefix(&["staging", &"x".repeat(80)]);
        assert!(long.len() <= 50 && long.ends_with("x-"), "{long}");
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from([&["kubectl-slipway"], args].concat()).unwrap().command
    }

    #[test]
    fn deploy_creates_the_request_a_user_would_write() {
        let Command::Deploy(args) = parse(&["deploy", "staging", "--tag", "v1.2.3", "--issue", "#45", "--direct"])
        else {
            panic!()
        };
        let dr = serde_json::to_value(deploy_request(&args, "shop", "alice")).unwrap();
        assert_eq!(
            dr["metadata"],
            json!({"generateName": "staging-v1-2-3-", "namespace": "shop",
                   "annotations": {"slipway.dev/requested-by": "alice"}})
        );
        assert_eq!(
            dr["spec"],
            json!({"environment": "staging", "revision": {"tag": "v1.2.3"}, "issue": "#45", "mode": "Direct"})
        );
        let Command::Deploy(args) =
            parse(&["deploy", "staging", "--commit", "4f1c2ab9d0", "--name", "mine", "--force"])
        else {
            panic!()
        };
        let dr = serde_json::to_value(deploy_request(&args, "shop", "alice")).unwrap();
        assert_eq!(dr["metadata"]["name"], "mine");
        assert!(dr["metadata"].get("generateName").is_none());
        assert_eq!(dr["spec"]["force"], true);
        assert_eq!(dr["spec"]["mode"], "Change");
    }

    #[test]
    fn rollback_goes_to_the_previous_release_unless_told() {
        let Command::Rollback(args) = parse(&["rollback", "staging", "--reason", "5xx"]) else { panic!() };
        let rb = serde_json::to_value(rollback(&args, "shop", "bob")).unwrap();
        assert_eq!(
            rb["spec"],
            json!({"environment": "staging", "to": {"previous": true}, "reason": "5xx",
                                      "migrations": "Downgrade"})
        );
        assert_eq!(rb["metadata"]["generateName"], "staging-rollback-");
        assert_eq!(rb["metadata"]["annotations"]["slipway.dev/requested-by"], "bob");
        let Command::Rollback(args) =
            parse(&["rollback", "staging", "--reason", "5xx", "--to-tag", "v1", "--skip-migrations"])
        else {
            panic!()
        };
        let rb = serde_json::to_value(rollback(&args, "shop", "bob")).unwrap();
        assert_eq!(rb["spec"]["to"], json!({"tag": "v1"}));
        assert_eq!(rb["spec"]["migrations"], "Skip");
    }
}
