//! Preflight: everything that can refuse a deploy, checked before anything that runs changes.
//! The checkout, `.env` and containers stay as they are; only Slipway's private worktree (inside
//! `.git`) receives the new revision, to validate its compose file.

use kube::Api;
use sha2::{Digest, Sha256};
use slipway_crds::conditions::reasons;
use slipway_crds::{DeployRequest, EnvKeys, Environment};

use super::request::Req;

use crate::references::Problem;
use crate::remote::{
    RemoteCommand, RemoteError, Repo, RevisionRef, health, missing_env_keys, missing_keys, parse_env_example,
    render_env_file, validate, write_env_file,
};

use super::site::Site;
use super::{plan, playbook};

/// What preflight established, written to status before any step changes the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub commit: String,
    pub previous_commit: Option<String>,
    pub migration_before: Option<String>,
    /// A Rollback: the revision to downgrade the database to (`None`: leave it as it is).
    pub migration_target: Option<String>,
    pub env_hash: String,
    /// The Environment already runs exactly this, healthy: nothing to do.
    pub up_to_date: bool,
    /// A drift heal: the checkout's local changes that Rebuilding discards (`git status` lines).
    pub discarded: Vec<String>,
    /// Playbook gates that found something and were waived by `policy.waive`.
    pub waived: Vec<String>,
}

/// Why preflight did not pass: a refusal a person must fix, or a host that could not be asked.
#[derive(Debug)]
pub enum Refusal {
    Stalled(Problem),
    Remote(RemoteError),
}

impl From<RemoteError> for Refusal {
    fn from(e: RemoteError) -> Self {
        Refusal::Remote(e)
    }
}

fn stalled(reason: &'static str, message: String) -> Refusal {
    Refusal::Stalled(Problem { reason, message })
}

pub fn revision(dr: &DeployRequest) -> RevisionRef {
    let r = &dr.spec.revision;
    match (&r.branch, &r.tag, &r.commit) {
        (Some(b), _, _) => RevisionRef::Branch(b.clone()),
        (_, Some(t), _) => RevisionRef::Tag(t.clone()),
        (_, _, Some(c)) => RevisionRef::Commit(c.clone()),
        _ => RevisionRef::Commit(String::new()),
    }
}

/// sha256 of the rendered `.env`, hex (the values never leave the controller).
pub fn env_hash(rendered: &[u8]) -> String {
    Sha256::digest(rendered).iter().map(|b| format!("{b:02x}")).collect()
}

/// The Environments named by `from` (`policy.promoteFrom`) that exist.
pub async fn promotion_sources(environments: &Api<Environment>, from: &[String]) -> kube::Result<Vec<Environment>> {
    let mut found = Vec::new();
    for name in from {
        found.extend(environments.get_opt(name).await?);
    }
    Ok(found)
}

/// Before the queue: why `dr`'s revision (by ref name or commit prefix) is not promoted to `env`
/// (`NotPromoted`, or `RollbackNotTested` under `policy.requireRollbackTested`), or `None` when
/// it is (or `env` has no promotion rule).
pub async fn not_promoted_ref(
    environments: &Api<Environment>,
    env: &Environment,
    dr: &DeployRequest,
) -> kube::Result<Option<Problem>> {
    let from = &env.spec.policy.promote_from;
    // A restart brings nothing new to promote.
    if from.is_empty() || dr.is_restart() {
        return Ok(None);
    }
    let sources = promotion_sources(environments, from).await?;
    let rev = &dr.spec.revision;
    let then = ", then create a new DeployRequest here";
    let missing = plan::not_promoted_from(from, &sources, |s| plan::promoted_ref(s, rev));
    if !missing.is_empty() {
        let message = plan::not_promoted_message(&rev.display(), &missing, then);
        return Ok(Some(Problem { reason: reasons::NOT_PROMOTED, message }));
    }
    if env.spec.policy.require_rollback_tested {
        let untested = plan::not_promoted_from(from, &sources, |s| plan::rollback_tested_ref(s, rev));
        if !untested.is_empty() {
            let message = plan::not_rehearsed_message(&rev.display(), &untested, then);
            return Ok(Some(Problem { reason: reasons::ROLLBACK_NOT_TESTED, message }));
        }
    }
    Ok(None)
}

/// `heal`: a drift heal the controller made ([`crate::environment::drift::is_heal`]): local
/// changes of the checkout do not refuse it, they are listed for Rebuilding to discard.
pub async fn run(site: &Site<'_>, req: &Req, environments: &Api<Environment>, heal: bool) -> Result<Facts, Refusal> {
    let env = site.env;
    let dir = site.project.dir.clone();
    let repo = Repo::new(site.conn, dir.clone())?;
    if !repo.exists().await? {
        let Some(origin) = &env.spec.repository else {
            return Err(stalled(
                reasons::REVISION_NOT_FOUND,
                format!(
                    "{dir} on {} holds no git checkout and the Environment names no spec.repository.url to clone",
                    site.conn.host()
                ),
            ));
        };
        repo.ensure_cloned(&origin.url).await?;
    }
    if let Req::Deploy(dr) = req
        && dr.is_restart()
    {
        return restart_facts(site, &repo, dr).await;
    }
    repo.fetch().await?;
    let head = repo.head().await?;
    let (wanted, target) = match req {
        Req::Deploy(dr) => (revision(dr), None),
        Req::Rollback(rb) => {
            let target = plan::rollback_target(rb, env, head.as_deref()).map_err(Refusal::Stalled)?;
            (RevisionRef::Commit(target.commit.clone()), Some(target))
        }
    };
    let commit = match repo.resolve(&wanted).await {
        Ok(c) => c,
        Err(e @ RemoteError::RevisionNotFound { .. }) => {
            return Err(stalled(reasons::REVISION_NOT_FOUND, e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    // How messages name what is being put on the host.
    let what = match target {
        Some(t) => format!("{} ({})", t.ref_, plan::short(&t.commit)),
        None => req.describe(),
    };
    if let Req::Deploy(dr) = req {
        deploy_gates(dr, env, &commit, environments).await?;
    }

    let dirty = repo.dirty().await?;
    // Untracked files are neither discarded nor in the way of `checkout --force`.
    let discarded: Vec<String> =
        if heal { dirty.iter().filter(|e| e.status != "??").map(ToString::to_string).collect() } else { Vec::new() };
    if !dirty.is_empty() && !heal {
        let files: Vec<String> = dirty.iter().take(20).map(ToString::to_string).collect();
        return Err(stalled(
            reasons::DIRTY_CHECKOUT,
            format!(
                "the checkout {dir} on {} has local changes ({}): commit them upstream or discard them on the host",
                site.conn.host(),
                files.join(", ")
            ),
        ));
    }

    if let Some(missing) = missing_env_keys(&repo, &commit, site.env_values.keys()).await?
        && !missing.is_empty()
    {
        let secret = env.spec.env_secret_ref.as_ref().map_or("(no envSecretRef)".to_owned(), |r| r.name.clone());
        return Err(stalled(
            reasons::ENV_KEYS_MISSING,
            format!(
                "Secret {secret} lacks keys {} listed in .env.example at {}: add them to the Secret",
                missing.join(", "),
                what
            ),
        ));
    }

    // The playbook's gates, on the files of the commit as git holds them: before the private
    // worktree or anything else on the host changes.
    let waived = match req {
        Req::Deploy(_) => playbook_gates(&repo, env, &commit, &what).await?,
        Req::Rollback(_) => Vec::new(),
    };

    // The next revision in the private worktree, with its .env: its compose file is validated
    // as compose itself reads it. Never under a job that still runs (a request deleted or
    // failed while its step ran passes the lock on before its job has ended).
    site.ensure_idle().await?;
    prepare_worktree(site, &commit).await?;
    write_env_file(site.conn, &site.next_dir(), site.env_values, site.flavor).await?;
    let config = match site.compose_next().config().await {
        Ok(c) => c,
        Err(e @ RemoteError::ComposeInvalid { .. }) => return Err(stalled(reasons::COMPOSE_INVALID, e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let unchecked = config.services_without_healthcheck();
    if !unchecked.is_empty() {
        return Err(stalled(
            reasons::MISSING_HEALTHCHECK,
            format!(
                "services {} at {} have no healthcheck: add one to each long-running service, or label a \
                 service that runs to completion slipway.dev/one-shot: \"true\" (it must then exit 0)",
                unchecked.join(", "),
                what
            ),
        ));
    }

    let rendered = render_env_file(site.env_values, site.flavor)?;
    let env_hash = env_hash(rendered.expose());
    let current = env.status.as_ref().and_then(|s| s.current.clone());
    let containers = site.conn.project_containers(&site.project.name).await?;
    let running = containers.iter().any(|c| !c.one_off && c.is_running());
    // Asked of the running release's code, which knows the revision it migrated to. Without a
    // recorded release (a first deploy, or one abandoned half-way) the main checkout may have
    // no `.env`: ask with the next revision's code, and an answer it cannot give is "unknown".
    let migration_before = match (running, &current) {
        (false, _) => None,
        (true, Some(_)) => site.migration_revision(false).await?,
        (true, None) => match site.migration_revision(true).await {
            Ok(revision) => revision,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::info!(project = %site.project.name, error = %e, "migration revision before the deploy is unknown");
                None
            }
        },
    };
    let migration_target = match (req, target) {
        (Req::Rollback(rb), Some(target)) => {
            plan::downgrade_path(rb, env, migration_before.as_deref(), target).map_err(Refusal::Stalled)?
        }
        _ => None,
    };
    let healthy = running && health::container_problems(&containers, &config.long_running_services()).is_empty();
    // Nothing to do only for a DeployRequest whose commit the checkout is on, recorded with this
    // .env, healthy. A Rollback always runs: after a failed deploy the host may run a release
    // other than the recorded one, with a database ahead of it.
    let up_to_date = req.as_deploy().is_some_and(|d| !d.spec.force)
        && healthy
        && head.as_deref() == Some(commit.as_str())
        && current.as_ref().is_some_and(|r| r.commit == commit && r.env_hash.as_deref() == Some(env_hash.as_str()));
    // What the Rollback leaves is what the checkout is on; a deploy's "previous" is the last
    // release that succeeded, the one an automatic rollback returns to.
    let previous_commit = match req {
        Req::Rollback(_) => head.clone(),
        Req::Deploy(_) => current.map(|r| r.commit),
    };
    Ok(Facts { previous_commit, commit, migration_before, migration_target, env_hash, up_to_date, discarded, waived })
}

/// Reads what the playbook's gates judge at `commit` ([`playbook::judge`]) and refuses with the
/// first gate's reason unless the Environment waives every gate that found something; returns
/// the names of the waived gates that did.
async fn playbook_gates<E: crate::remote::Exec>(
    repo: &Repo<'_, E>,
    env: &Environment,
    commit: &str,
    what: &str,
) -> Result<Vec<String>, Refusal> {
    let mut files = playbook::RevisionFiles::default();
    let mut env_paths = vec![".env".to_owned()];
    for path in &env.spec.compose.files {
        if let Some(text) = repo.show_file(commit, path).await? {
            files.compose.push((path.clone(), text));
        }
        if let Some((dir, _)) = path.rsplit_once('/') {
            env_paths.push(format!("{dir}/.env"));
        }
    }
    for path in env_paths {
        if !files.env_tracked.contains(&path) && repo.tracks(commit, &path).await? {
            files.env_tracked.push(path);
        }
    }
    files.env_example = repo.show_file(commit, ".env.example").await?;
    let production = env.spec.policy.is_production(&env.spec.tier);
    let running = env.status.as_ref().and_then(|s| s.current.as_ref()).map(|r| r.commit.clone());
    if production
        && env.spec.migrations.is_some()
        && let Some(running) = running.filter(|r| r != commit)
    {
        files.added_migrations = Some(playbook::migration_files(&repo.added_files(&running, commit).await?));
    }
    let rules = playbook::Rules {
        production,
        checkout: env.spec.host.path.clone(),
        migration_service: env.spec.migrations.as_ref().map(|m| m.service.clone()),
        downgrade_declared: env.spec.migrations.as_ref().is_some_and(|m| !m.downgrade.is_empty()),
    };
    let (refused, waived) = playbook::split_waived(playbook::judge(&files, &rules), &env.spec.policy.waive);
    if let Some(first) = refused.first() {
        return Err(stalled(first.gate.as_str(), playbook::refusal_message(&refused, what)));
    }
    Ok(waived)
}

/// A restart's Preflight: a release runs, and the services it names are in its compose files.
/// Nothing is fetched, checked out or written.
async fn restart_facts(
    site: &Site<'_>,
    repo: &Repo<'_, crate::remote::HostConnection>,
    dr: &DeployRequest,
) -> Result<Facts, Refusal> {
    let env = site.env;
    let Some(current) = env.status.as_ref().and_then(|s| s.current.clone()) else {
        return Err(stalled(
            reasons::NOTHING_DEPLOYED,
            "the Environment has no release recorded (status.current) to restart: deploy a revision first".into(),
        ));
    };
    let head = repo.head().await?.unwrap_or_else(|| current.commit.clone());
    let config = match site.compose().config().await {
        Ok(c) => c,
        Err(e @ RemoteError::ComposeInvalid { .. }) => return Err(stalled(reasons::COMPOSE_INVALID, e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let unknown: Vec<&str> =
        dr.spec.restart.iter().filter(|s| !config.services.contains_key(*s)).map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(stalled(
            reasons::SERVICE_NOT_FOUND,
            format!(
                "{} not in the compose files of the running release {} ({}): it has {}; create a new DeployRequest \
                 naming its services",
                unknown.join(", "),
                current.ref_,
                plan::short(&head),
                config.services.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(Facts {
        commit: head.clone(),
        previous_commit: Some(head),
        migration_before: current.migration.clone(),
        migration_target: None,
        env_hash: current.env_hash.clone().unwrap_or_default(),
        up_to_date: false,
        discarded: Vec::new(),
        waived: Vec::new(),
    })
}

/// What a Preflight message adds: the gates waived, and for a drift heal the local changes
/// Rebuilding discards.
pub fn discard_note(facts: &Facts) -> String {
    let mut note = String::new();
    if !facts.waived.is_empty() {
        note.push_str(&format!("; waived by policy.waive: {}", facts.waived.join(", ")));
    }
    if !facts.discarded.is_empty() {
        note.push_str(&format!(
            "; drift heal: Rebuilding discards local changes on the host: {}",
            facts.discarded.join(", ")
        ));
    }
    note
}

/// The gates a DeployRequest can only be judged by once its commit is known: promotion and
/// quarantine of exactly that commit.
async fn deploy_gates(
    dr: &DeployRequest,
    env: &Environment,
    commit: &str,
    environments: &Api<Environment>,
) -> Result<(), Refusal> {
    if !dr.spec.override_quarantine
        && let Some(q) = plan::quarantined(env, commit)
    {
        return Err(Refusal::Stalled(plan::quarantine_problem(dr, env, q)));
    }
    // Promotion: every named Environment must show this very commit deployed successfully.
    let from = &env.spec.policy.promote_from;
    if !from.is_empty() {
        let sources = promotion_sources(environments, from).await.map_err(|e| {
            Refusal::Remote(RemoteError::Local {
                detail: format!("reading the Environments of policy.promoteFrom: {e}"),
            })
        })?;
        let missing = plan::not_promoted_from(from, &sources, |s| plan::promoted(s, commit));
        if !missing.is_empty() {
            let what = format!("commit {} ({})", plan::short(commit), dr.spec.revision.display());
            return Err(stalled(reasons::NOT_PROMOTED, plan::not_promoted_message(&what, &missing, "")));
        }
        if env.spec.policy.require_rollback_tested {
            let untested = plan::not_promoted_from(from, &sources, |s| plan::rollback_tested(s, commit));
            if !untested.is_empty() {
                let what = format!("commit {} ({})", plan::short(commit), dr.spec.revision.display());
                return Err(stalled(reasons::ROLLBACK_NOT_TESTED, plan::not_rehearsed_message(&what, &untested, "")));
            }
        }
    }
    Ok(())
}

/// The key names `commit`'s `.env.example` lists and those of them the env Secret lacks, for
/// the Environment's status (`kubectl slipway env`): names only, never values.
pub async fn env_keys(site: &Site<'_>, commit: &str) -> Result<EnvKeys, RemoteError> {
    let repo = Repo::new(site.conn, site.project.dir.clone())?;
    let required = repo.show_file(commit, ".env.example").await?.map(|t| parse_env_example(&t)).unwrap_or_default();
    let missing = missing_keys(&required, site.env_values.keys());
    Ok(EnvKeys { commit: commit.to_owned(), required, missing })
}

/// Checks the worktree out at `commit` (creating it when absent), discarding anything in it.
pub async fn prepare_worktree(site: &Site<'_>, commit: &str) -> Result<(), RemoteError> {
    validate::commit_id(commit)?;
    let dir = site.project.dir.clone();
    let next = site.next_dir();
    let git = |label: &str| {
        RemoteCommand::new("git")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args(["-c", "advice.detachedHead=false"])
            .label(format!("git {label}"))
    };
    site.conn.run(&git("worktree prune").arg("-C").arg(dir.clone()).args(["worktree", "prune"])).await?;
    let exists = site.conn.output(&RemoteCommand::new("test").arg("-e").arg(format!("{next}/.git"))).await?;
    if exists.success() {
        let checkout = git("checkout")
            .arg("-C")
            .arg(next.clone())
            .args(["checkout", "--quiet", "--force", "--detach"])
            .arg(commit)
            .arg("--");
        site.conn.run(&checkout).await?;
    } else {
        let add = git("worktree add")
            .arg("-C")
            .arg(dir)
            .args(["worktree", "add", "--quiet", "--force", "--detach", "--end-of-options"])
            .arg(next)
            .arg(commit);
        site.conn.run(&add).await?;
    }
    Ok(())
}
