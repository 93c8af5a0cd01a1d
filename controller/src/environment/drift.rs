//! Drift: what runs on the host compared with the recorded release (`status.current`): the
//! checkout's HEAD and its modified tracked files, each service's running image, services missing,
//! stopped or not in the release. With `spec.drift: Heal` the recorded release is redeployed
//! through a DeployRequest the Environment owns, queued, locked and verified like any other.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use kube::api::{ListParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use slipway_crds::conditions::{reasons, types};
use slipway_crds::{DeployMode, DeployRequest, DeployRequestSpec, DriftPolicy, Environment, Phase, Release, Revision};

use crate::conditions::{self, Decided, Status};
use crate::deploy::plan::short;
use crate::remote::{ContainerObservation, DirtyEntry};

/// What the monitor saw of the checkout and the containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub head: Option<String>,
    /// `git status --porcelain` entries of tracked files (untracked ones are not drift).
    pub modified: Vec<DirtyEntry>,
    pub containers: Vec<ContainerObservation>,
    /// Services that run to completion (an exited container is what they should be).
    pub one_shot: Vec<String>,
}

/// Most modified files named in a message.
const FILES_NAMED: usize = 20;

/// `sha256:0123456789ab` of an image id.
fn short_image(id: &str) -> String {
    match id.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", short(hex)),
        None => short(id).to_owned(),
    }
}

/// Each difference between what runs and `current`, for a person; empty when in sync.
pub fn differences(current: &Release, seen: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    match seen.head.as_deref() {
        Some(head) if head == current.commit => {}
        Some(head) => out.push(format!(
            "HEAD is {} instead of the recorded {} ({})",
            short(head),
            short(&current.commit),
            current.ref_
        )),
        None => out.push("the checkout has no commit".to_owned()),
    }
    let tracked: Vec<&DirtyEntry> = seen.modified.iter().filter(|e| e.status != "??").collect();
    if !tracked.is_empty() {
        let mut named: Vec<String> = tracked.iter().take(FILES_NAMED).map(|e| e.path.clone()).collect();
        if tracked.len() > FILES_NAMED {
            named.push(format!("and {} more", tracked.len() - FILES_NAMED));
        }
        out.push(format!("modified tracked files: {}", named.join(", ")));
    }
    let running: Vec<&ContainerObservation> = seen.containers.iter().filter(|c| !c.one_off).collect();
    let mut by_service: BTreeMap<&str, Vec<&ContainerObservation>> = BTreeMap::new();
    for c in &running {
        by_service.entry(c.service.as_deref().unwrap_or("?")).or_default().push(c);
    }
    // Without recorded images (a release recovered from a host that did not answer), only the
    // states can be judged.
    let recorded = &current.images;
    for (service, image) in recorded {
        let Some(containers) = by_service.get(service.as_str()) else {
            out.push(format!("service {service} is missing (no container)"));
            continue;
        };
        for c in containers {
            if c.image_id != *image {
                out.push(format!(
                    "service {service} runs image {} instead of the recorded {}",
                    short_image(&c.image_id),
                    short_image(image)
                ));
            }
        }
    }
    for (service, containers) in &by_service {
        if !recorded.is_empty() && !recorded.contains_key(*service) {
            out.push(format!("service {service} is not in the release"));
            continue;
        }
        let one_shot = seen.one_shot.iter().any(|s| s == service);
        if !one_shot && let Some(c) = containers.iter().find(|c| !c.is_running()) {
            out.push(format!("service {service} is stopped ({})", c.state));
        }
    }
    out
}

/// The `Drifted` condition: `None` leaves it as it is (no round, or a round that could not look).
pub fn drifted(old: &[Condition], finding: &super::monitor::Finding, healing: Option<&str>) -> Option<Decided> {
    use super::monitor::Finding;
    match finding {
        Finding::NotDue => None,
        Finding::NothingDeployed => {
            Some(Decided::new(types::DRIFTED, Status::Unknown, reasons::NOTHING_DEPLOYED, "nothing deployed yet"))
        }
        Finding::NotChecked { message } => Some(Decided::new(
            types::DRIFTED,
            Status::Unknown,
            reasons::NOT_CHECKED,
            format!("drift not checked: {message}"),
        )),
        // Kept during a deploy (its end triggers a round at once); Unknown when never judged.
        Finding::DeployRunning { .. } => conditions::find(old, types::DRIFTED).is_none().then(|| {
            Decided::new(types::DRIFTED, Status::Unknown, reasons::DEPLOY_IN_PROGRESS, "not judged while a deploy runs")
        }),
        Finding::Judged { drift: None, .. } => None,
        Finding::Judged { drift: Some(d), .. } if d.is_empty() => {
            Some(Decided::new(types::DRIFTED, Status::False, reasons::IN_SYNC, "the host runs the recorded release"))
        }
        Finding::Judged { drift: Some(d), .. } => {
            let listed = d.join("; ");
            Some(match healing {
                Some(note) => Decided::new(types::DRIFTED, Status::True, reasons::HEALING, format!("{listed}; {note}")),
                None => Decided::new(types::DRIFTED, Status::True, reasons::DRIFTED, listed),
            })
        }
    }
}

/// An Event when `Drifted` changed its status: `Drifted`/`Healing` (Warning), `InSync` (Normal).
pub fn transition(old: &[Condition], new: &[Condition]) -> Option<crate::Transition> {
    let after = conditions::find(new, types::DRIFTED)?;
    let before = conditions::find(old, types::DRIFTED);
    if before.is_some_and(|b| b.status == after.status) || after.status == "Unknown" {
        return None;
    }
    let type_ = if after.status == "True" {
        kube::runtime::events::EventType::Warning
    } else {
        kube::runtime::events::EventType::Normal
    };
    Some(crate::Transition { type_, reason: after.reason.clone(), note: after.message.clone() })
}

/// A heal request the Environment owns, as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealRequest {
    pub name: String,
    pub commit: Option<String>,
    /// Succeeded, Failed, ... (`None` while it waits for its first reconcile).
    pub phase: Option<Phase>,
}

/// Heals of one commit that failed before the Environment stops trying (a person must look).
pub const HEAL_ATTEMPTS: usize = 3;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealAction {
    /// Create the heal request `name`.
    Create { name: String },
    /// A heal request has not finished: one at a time.
    Pending { name: String },
    /// The last attempts for this commit failed: stop and say so.
    GaveUp { failed: usize },
}

/// `<environment>-heal-<commit>-<attempt>`, a valid object name.
pub fn heal_name(env: &str, commit: &str, attempt: usize) -> String {
    let prefix: String = env.chars().take(200).collect();
    format!("{}-heal-{}-{attempt}", prefix.trim_end_matches(['-', '.']), &commit[..commit.len().min(12)])
}

/// What to do about drift of `env` from the release at `commit`, given its heal requests.
pub fn heal_action(env: &str, commit: &str, owned: &[HealRequest]) -> HealAction {
    if let Some(r) = owned.iter().find(|r| !r.phase.is_some_and(Phase::is_terminal)) {
        return HealAction::Pending { name: r.name.clone() };
    }
    let of_commit: Vec<&HealRequest> = owned.iter().filter(|r| r.commit.as_deref() == Some(commit)).collect();
    let failed = of_commit.iter().filter(|r| r.phase != Some(Phase::Succeeded)).count();
    let succeeded = of_commit.len() - failed;
    // Failures since the last success count: a heal that worked resets the budget.
    if failed >= HEAL_ATTEMPTS * (succeeded + 1) {
        return HealAction::GaveUp { failed };
    }
    let attempt = (1..).find(|n| !owned.iter().any(|r| r.name == heal_name(env, commit, *n))).unwrap_or(1);
    HealAction::Create { name: heal_name(env, commit, attempt) }
}

/// The DeployRequest that redeploys `current` on `env`, owned by it, asked for by the controller.
pub fn heal_request(env: &Environment, current: &Release, name: &str, identity: &str) -> DeployRequest {
    let labels = [(slipway_crds::annotations::DRIFT_HEAL_OF.to_owned(), env.uid().unwrap_or_default())].into();
    let annotations = [(slipway_crds::annotations::REQUESTED_BY.to_owned(), identity.to_owned())].into();
    let spec = DeployRequestSpec {
        restart: Vec::new(),
        environment: env.name_any(),
        revision: Revision { commit: Some(current.commit.clone()), ..Default::default() },
        issue: Some(HEAL_ISSUE.to_owned()),
        mode: DeployMode::Change,
        force: true,
        override_quarantine: false,
    };
    owned_request(env, name, spec, labels, annotations)
}

/// A DeployRequest the Environment owns as its controller (which only the Slipway controller
/// may make, the admission policy says).
pub fn owned_request(
    env: &Environment,
    name: &str,
    spec: DeployRequestSpec,
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
) -> DeployRequest {
    let owner = OwnerReference {
        api_version: Environment::api_version(&()).into_owned(),
        kind: Environment::kind(&()).into_owned(),
        name: env.name_any(),
        uid: env.uid().unwrap_or_default(),
        controller: Some(true),
        // `true` would need update on environments/finalizers where owner references are enforced
        block_owner_deletion: None,
    };
    let mut dr = DeployRequest::new(name, spec);
    dr.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: env.namespace(),
        owner_references: Some(vec![owner]),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    };
    dr
}

/// The issue a heal request names (it passes `policy.requireIssue`).
pub const HEAL_ISSUE: &str = "drift-heal";

/// Is `dr` a heal of `env` made by this controller? Owned by the Environment (which only the
/// controller may make, the admission policy says), labelled, and asked for by `identity`.
pub fn is_heal(dr: &DeployRequest, env: &Environment, identity: Option<&str>) -> bool {
    let uid = env.uid();
    let owned = dr.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
    let labelled = dr.labels().get(slipway_crds::annotations::DRIFT_HEAL_OF) == uid.as_ref();
    let by_me = identity.is_some_and(|me| dr.requested_by() == Some(me));
    owned && labelled && by_me
}

/// Lists the heal requests of `env`, decides, and creates one when it should: returns a note
/// for the `Drifted` message.
pub(crate) async fn heal(
    ctx: &crate::context::Context,
    env: &Environment,
    current: &Release,
) -> crate::error::Result<String> {
    if env.spec.drift != DriftPolicy::Heal {
        return Ok(String::new());
    }
    let Some(identity) = ctx.identity.get() else {
        return Ok("not healed: the controller does not know its own user name (SelfSubjectReview failed)".into());
    };
    // A failed automatic rollback left the host for a person to look at: no heal replaces them.
    if env.status.as_ref().and_then(|s| s.needs_attention.as_ref()).is_some() {
        return Ok("not healed: the Environment needs a person (a failed automatic rollback)".into());
    }
    let api: Api<DeployRequest> = Api::namespaced(ctx.client.clone(), &env.namespace().unwrap_or_default());
    let selector = format!("{}={}", slipway_crds::annotations::DRIFT_HEAL_OF, env.uid().unwrap_or_default());
    let owned: Vec<HealRequest> = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter(|d| is_heal(d, env, Some(identity)))
        .map(|d| HealRequest {
            name: d.name_any(),
            commit: d.spec.revision.commit.clone(),
            phase: d.status.as_ref().and_then(|s| s.phase),
        })
        .collect();
    Ok(match heal_action(&env.name_any(), &current.commit, &owned) {
        HealAction::Pending { name } => format!("healing: DeployRequest {name} redeploys the recorded release"),
        HealAction::GaveUp { failed } => format!(
            "not healed: {failed} heals of {} failed; look at the host, then create a DeployRequest",
            short(&current.commit)
        ),
        HealAction::Create { name } => {
            match api.create(&PostParams::default(), &heal_request(env, current, &name, identity)).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            tracing::info!(environment = %env.name_any(), request = %name, "drift: healing with an owned DeployRequest");
            format!("healing: DeployRequest {name} redeploys the recorded release")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(service: &str, image: &str, state: &str) -> ContainerObservation {
        ContainerObservation {
            id: format!("{service}-id"),
            name: format!("p-{service}-1"),
            service: Some(service.into()),
            state: state.into(),
            image_id: image.into(),
            ..Default::default()
        }
    }

    fn release() -> Release {
        Release {
            ref_: "v1".into(),
            commit: "a".repeat(40),
            images: [("web".to_owned(), "sha256:1111".to_owned()), ("db".to_owned(), "sha256:2222".to_owned())].into(),
            ..Default::default()
        }
    }

    fn in_sync() -> Seen {
        Seen {
            head: Some("a".repeat(40)),
            modified: vec![DirtyEntry { status: "??".into(), path: "notes.txt".into() }],
            containers: vec![container("web", "sha256:1111", "running"), container("db", "sha256:2222", "running")],
            one_shot: vec![],
        }
    }

    #[test]
    fn the_recorded_release_running_is_in_sync() {
        assert_eq!(differences(&release(), &in_sync()), Vec::<String>::new());
    }

    #[test]
    fn each_difference_is_listed() {
        let mut seen = in_sync();
        seen.head = Some("b".repeat(40));
        seen.modified.push(DirtyEntry { status: " M".into(), path: "app/main.py".into() });
        seen.containers = vec![
            container("web", "sha256:9999", "running"),
            container("cache", "sha256:3333", "running"),
            container("migrate", "sha256:4444", "exited"),
        ];
        seen.one_shot = vec!["migrate".into()];
        let mut recorded = release();
        recorded.images.insert("migrate".into(), "sha256:4444".into());
        let d = differences(&recorded, &seen);
        assert_eq!(
            d,
            [
                "HEAD is bbbbbbbbbbbb instead of the recorded aaaaaaaaaaaa (v1)",
                "modified tracked files: app/main.py",
                "service db is missing (no container)",
                "service web runs image sha256:9999 instead of the recorded sha256:1111",
                "service cache is not in the release",
            ]
        );
        let mut stopped = in_sync();
        stopped.containers[1].state = "exited".into();
        assert_eq!(differences(&release(), &stopped), ["service db is stopped (exited)"]);
    }

    #[test]
    fn drifted_follows_the_finding() {
        use super::super::monitor::Finding;
        let judged = |d: Option<Vec<String>>| Finding::Judged { failed: vec![], passed: String::new(), drift: d };
        let get = |finding: &Finding, healing: Option<&str>| drifted(&[], finding, healing);
        let d = get(&judged(Some(vec!["service db is missing (no container)".into()])), None).unwrap();
        assert_eq!((d.status, d.reason), (Status::True, reasons::DRIFTED));
        let d = get(&judged(Some(vec!["x".into()])), Some("healing: DeployRequest h-1")).unwrap();
        assert_eq!(
            (d.status, d.reason, d.message.as_str()),
            (Status::True, reasons::HEALING, "x; healing: DeployRequest h-1")
        );
        let d = get(&judged(Some(vec![])), None).unwrap();
        assert_eq!((d.status, d.reason), (Status::False, reasons::IN_SYNC));
        assert_eq!(get(&judged(None), None), None, "a round that could not look keeps the last value");
        assert_eq!(get(&Finding::NothingDeployed, None).unwrap().status, Status::Unknown);
        let running = Finding::DeployRunning { holder: "DeployRequest/x/1".into() };
        let first = get(&running, None).unwrap();
        assert_eq!((first.status, first.reason), (Status::Unknown, reasons::DEPLOY_IN_PROGRESS));
        let was = conditions::set(
            &[],
            &[Decided::new(types::DRIFTED, Status::True, reasons::DRIFTED, "x")],
            None,
            k8s_openapi::jiff::Timestamp::now(),
        );
        assert_eq!(drifted(&was, &running, None), None, "kept during a deploy");
        let synced = conditions::set(
            &was,
            &[Decided::new(types::DRIFTED, Status::False, reasons::IN_SYNC, "ok")],
            None,
            k8s_openapi::jiff::Timestamp::now(),
        );
        assert_eq!(transition(&[], &was).map(|t| t.reason), Some(reasons::DRIFTED.to_owned()));
        assert_eq!(transition(&was, &synced).map(|t| t.reason), Some(reasons::IN_SYNC.to_owned()));
        assert_eq!(transition(&synced, &synced), None);
    }

    fn req(name: &str, commit: &str, phase: Option<Phase>) -> HealRequest {
        HealRequest { name: name.into(), commit: Some(commit.into()), phase }
    }

    #[test]
    fn one_heal_at_a_time_numbered_per_commit_until_it_gives_up() {
        let c = "c".repeat(40);
        let name = |n| heal_name("staging", &c, n);
        assert_eq!(name(1), "staging-heal-cccccccccccc-1");
        assert_eq!(heal_action("staging", &c, &[]), HealAction::Create { name: name(1) });
        let pending = [req(&name(1), &c, None)];
        assert_eq!(heal_action("staging", &c, &pending), HealAction::Pending { name: name(1) });
        let queued = [req(&name(1), &c, Some(Phase::Queued))];
        assert_eq!(heal_action("staging", &c, &queued), HealAction::Pending { name: name(1) });
        let healed = [req(&name(1), &c, Some(Phase::Succeeded))];
        assert_eq!(heal_action("staging", &c, &healed), HealAction::Create { name: name(2) });
        let failing: Vec<HealRequest> = (1..=3).map(|n| req(&name(n), &c, Some(Phase::Failed))).collect();
        assert_eq!(heal_action("staging", &c, &failing), HealAction::GaveUp { failed: 3 });
        // another release has its own budget and numbers
        let d = "d".repeat(40);
        assert_eq!(heal_action("staging", &d, &failing), HealAction::Create { name: heal_name("staging", &d, 1) });
    }

    #[test]
    fn a_heal_request_is_forced_owned_and_asked_for_by_the_controller() {
        let env: Environment = serde_json::from_value(serde_json::json!({
            "apiVersion": "slipway.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "staging", "namespace": "team", "uid": "u-1"},
            "spec": {
                "host": {"address": "10.0.0.5", "path": "/srv/shop"},
                "sshKeySecretRef": {"name": "s", "key": "id"},
                "knownHostsSecretRef": {"name": "s", "key": "known_hosts"}
            }
        }))
        .unwrap();
        let me = "system:serviceaccount:slipway-system:slipway";
        let dr = heal_request(&env, &release(), "staging-heal-aaaaaaaaaaaa-1", me);
        assert!(dr.spec.force && dr.spec.revision.commit.as_deref() == Some(release().commit.as_str()));
        assert_eq!(dr.spec.issue.as_deref(), Some(HEAL_ISSUE));
        assert!(is_heal(&dr, &env, Some(me)));
        assert!(!is_heal(&dr, &env, Some("alice")), "asked for by someone else");
        assert!(!is_heal(&dr, &env, None));
        let mut foreign = dr.clone();
        foreign.metadata.owner_references = None;
        assert!(!is_heal(&foreign, &env, Some(me)), "not owned");
    }
}
