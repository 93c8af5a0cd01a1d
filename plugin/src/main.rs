//! `kubectl slipway`: Slipway's Environments, DeployRequests and Rollbacks for people at a
//! terminal. Every action is an object created or annotated through the API server; nothing here
//! reaches a host. The views are pure functions of the objects ([`view`], [`follow`]); this file
//! only reads and writes them.

mod cli;
mod cluster;
mod error;
mod follow;
mod objects;
mod paint;
mod view;

use std::fmt::Debug;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use slipway_crds::annotations::APPROVED_BY;
use slipway_crds::{DeployRequest, DeployRequestStatus, Environment, Rollback};

use cli::{Cli, Command, Format, Wait};
use cluster::Cluster;
use error::{Doing, Error, Result};
use follow::{elapsed, events, exit, outcome, render_event};
use objects::Kind;
use paint::Paint;
use view::{EnvVariables, EnvironmentSummary, StepLog};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                Error::Usage(_) => exit::USAGE,
                _ => exit::ERROR,
            })
        }
    }
}

async fn run(cli: Cli) -> Result<u8> {
    if let Command::Deploy(d) = &cli.command
        && d.approved_by.is_some()
    {
        return Err(Error::Usage(
            "--approved-by: approval is the approver's own act, recorded as the user the API server \
             authenticates: create the DeployRequest, then the approver runs `kubectl slipway approve NAME`"
                .to_owned(),
        ));
    }
    let cluster = Cluster::connect(&cli.target).await?;
    let paint = Paint::for_stdout();
    let ns = cluster.namespace.clone();
    match cli.command {
        Command::Status { environment, output } => {
            let now = Timestamp::now();
            match environment {
                Some(name) => {
                    let summary = EnvironmentSummary::of(&environment_named(&cluster, &name).await?, now);
                    emit(output, &summary, || view::status_detail(&summary, paint))?;
                }
                None => {
                    let doing = Doing { verb: "list", resource: "environments", namespace: &ns };
                    let api: Api<Environment> = cluster.api();
                    let list = api.list(&ListParams::default()).await.map_err(|e| doing.error(e))?;
                    let summaries: Vec<EnvironmentSummary> =
                        list.items.iter().map(|e| EnvironmentSummary::of(e, now)).collect();
                    if summaries.is_empty() && output.is_none() {
                        eprintln!("No Environments in namespace {ns} (another namespace: -n NAMESPACE).");
                        return Ok(exit::OK);
                    }
                    emit(output, &summaries, || view::status_table(&summaries, paint))?;
                }
            }
            Ok(exit::OK)
        }
        Command::History { environment, output } => {
            let env = environment_named(&cluster, &environment).await?;
            let history = env.status.as_ref().map(|s| s.history.clone()).unwrap_or_default();
            emit(output, &history, || {
                if history.is_empty() {
                    format!("Environment {environment} has no releases yet.\n")
                } else {
                    view::history_table(&env, Timestamp::now(), paint)
                }
            })?;
            Ok(exit::OK)
        }
        Command::Env { environment, output } => {
            let env = environment_named(&cluster, &environment).await?;
            let vars = EnvVariables::of(&env).ok_or(Error::EnvKeysNotRecorded { name: environment })?;
            emit(output, &vars, || view::env_text(&vars, paint))?;
            Ok(exit::OK)
        }
        Command::Logs { object, output } => {
            let log = step_log(&cluster, &object).await?;
            emit(output, &log, || view::logs_text(&log, paint))?;
            Ok(exit::OK)
        }
        Command::Approve { deploy_request } => {
            let (kind, name) = objects::parse_object(&deploy_request).map_err(Error::Usage)?;
            if kind == Kind::Rollback {
                return Err(Error::Usage(
                    "a Rollback needs no approval (RBAC on creating rollbacks decides who may roll back)".to_owned(),
                ));
            }
            let user = cluster.whoami().await?;
            let api: Api<DeployRequest> = cluster.api();
            let patch = serde_json::json!({"metadata": {"annotations": {APPROVED_BY: user}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| {
                not_found(e, "DeployRequest", "deployrequests", &name, &ns)
                    .unwrap_or_else(|e| Doing { verb: "approve", resource: "deployrequests", namespace: &ns }.error(e))
            })?;
            println!("deployrequest/{name} approved by {user}");
            Ok(exit::OK)
        }
        Command::Deploy(args) => {
            let env = environment_named(&cluster, &args.environment).await?;
            let user = cluster.whoami().await?;
            let api: Api<DeployRequest> = cluster.api();
            let doing = Doing { verb: "create", resource: "deployrequests", namespace: &ns };
            let created = api
                .create(&PostParams::default(), &objects::deploy_request(&args, &ns, &user))
                .await
                .map_err(|e| doing.error(e))?;
            let name = created.name_any();
            println!(
                "deployrequest/{name} created: {} on Environment {} (requested by {user})",
                created.spec.revision.display(),
                args.environment
            );
            if env.spec.policy.require_approval {
                println!(
                    "Environment {} requires approval: an approver runs `kubectl slipway approve {name} -n {ns}`",
                    args.environment
                );
            }
            follow_request(api, &ns, &name, &format!("dr/{name}"), |d| d.status.as_ref(), args.wait, paint).await
        }
        Command::Rollback(args) => {
            environment_named(&cluster, &args.environment).await?;
            let user = cluster.whoami().await?;
            let api: Api<Rollback> = cluster.api();
            let doing = Doing { verb: "create", resource: "rollbacks", namespace: &ns };
            let created = api
                .create(&PostParams::default(), &objects::rollback(&args, &ns, &user))
                .await
                .map_err(|e| doing.error(e))?;
            let name = created.name_any();
            let to = match (&args.to_tag, &args.to_release) {
                (Some(t), _) => format!("the release of tag {t}"),
                (None, Some(c)) => format!("release {c}"),
                (None, None) => "the previous release".to_owned(),
            };
            println!("rollback/{name} created: Environment {} back to {to} (requested by {user})", args.environment);
            follow_request(api, &ns, &name, &format!("rollback/{name}"), |r| r.status.as_ref(), args.wait, paint).await
        }
    }
}

/// A 404 as "not found" naming how to list that kind; any other error back.
fn not_found(
    e: kube::Error,
    kind: &'static str,
    plural: &'static str,
    name: &str,
    ns: &str,
) -> Result<Error, kube::Error> {
    match e {
        kube::Error::Api(s) if s.code == 404 => {
            Ok(Error::NotFound { kind, plural, name: name.to_owned(), namespace: ns.to_owned() })
        }
        e => Err(e),
    }
}

async fn environment_named(cluster: &Cluster, name: &str) -> Result<Environment> {
    let api: Api<Environment> = cluster.api();
    let ns = &cluster.namespace;
    match api.get_opt(name).await {
        Ok(Some(env)) => Ok(env),
        Ok(None) => Err(Error::EnvironmentNotFound { name: name.to_owned(), namespace: ns.clone() }),
        Err(e) => Err(Doing { verb: "get", resource: "environments", namespace: ns }.error(e)),
    }
}

/// The steps of `dr/NAME`, `rollback/NAME`, or of a bare name (a DeployRequest, else a Rollback).
async fn step_log(cluster: &Cluster, object: &str) -> Result<StepLog> {
    let (kind, name) = objects::parse_object(object).map_err(Error::Usage)?;
    let ns = &cluster.namespace;
    if matches!(kind, Kind::DeployRequest | Kind::Either) {
        let api: Api<DeployRequest> = cluster.api();
        let doing = Doing { verb: "get", resource: "deployrequests", namespace: ns };
        match api.get_opt(&name).await.map_err(|e| doing.error(e))? {
            Some(dr) => return Ok(StepLog::of("DeployRequest", &name, &dr.spec.environment, dr.status.as_ref())),
            None if kind == Kind::DeployRequest => {
                return Err(Error::NotFound { kind: "DeployRequest", plural: "dr", name, namespace: ns.clone() });
            }
            None => {}
        }
    }
    let api: Api<Rollback> = cluster.api();
    let doing = Doing { verb: "get", resource: "rollbacks", namespace: ns };
    match api.get_opt(&name).await.map_err(|e| doing.error(e))? {
        Some(rb) => Ok(StepLog::of("Rollback", &name, &rb.spec.environment, rb.status.as_ref())),
        None if kind == Kind::Rollback => {
            Err(Error::NotFound { kind: "Rollback", plural: "rollback", name, namespace: ns.clone() })
        }
        None => Err(Error::RequestNotFound { name, namespace: ns.clone() }),
    }
}

/// Prints `value` as JSON or YAML, or the text view.
fn emit<T: Serialize>(output: Option<Format>, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    let out = match output {
        Some(Format::Json) => {
            let mut s = serde_json::to_string_pretty(value).map_err(|e| Error::Output(e.to_string()))?;
            s.push('\n');
            s
        }
        Some(Format::Yaml) => serde_yaml::to_string(value).map_err(|e| Error::Output(e.to_string()))?,
        // Text from the cluster never drives the terminal.
        None => paint::terminal_safe(&text()),
    };
    print!("{out}");
    Ok(())
}

/// How long a watch may keep failing before following gives up.
const WATCH_GIVE_UP: Duration = Duration::from_secs(60);

/// Follows a DeployRequest or Rollback phase by phase until it ends (or `--timeout` passes),
/// printing each finished step and each new phase; returns the exit code of its outcome.
async fn follow_request<K>(
    api: Api<K>,
    api_namespace: &str,
    name: &str,
    object: &str,
    status_of: fn(&K) -> Option<&DeployRequestStatus>,
    wait: Wait,
    paint: Paint,
) -> Result<u8>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    if wait.no_wait {
        println!("follow it: kubectl slipway logs {object}");
        return Ok(exit::OK);
    }
    let start = Instant::now();
    let deadline = wait.timeout.map(|t| tokio::time::Instant::now() + t);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut last = DeployRequestStatus::default();
    let mut warned = false;
    // A watch that keeps failing (no watch permission, an expired token) ends the command
    // rather than hang it: the request itself carries on.
    let mut failing_since: Option<Instant> = None;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let phase = last.phase.map_or("waiting".to_owned(), |p| p.to_string());
                    println!(
                        "still {phase} after {}: it carries on; see it with `kubectl slipway logs {object}`",
                        elapsed(start.elapsed().as_secs())
                    );
                    return Ok(exit::TIMED_OUT);
                }
            },
            None => stream.next().await,
        };
        let object_now = match next {
            None => return Err(Error::NoAnswer(format!("the watch of {object} ended"))),
            Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => o,
            Some(Ok(watcher::Event::Delete(_))) => {
                return Err(Error::Deleted {
                    kind: if object.starts_with("dr/") { "DeployRequest" } else { "Rollback" },
                    name: name.to_owned(),
                });
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= WATCH_GIVE_UP {
                    return Err(Error::WatchFailed {
                        object: object.to_owned(),
                        secs: WATCH_GIVE_UP.as_secs(),
                        detail: e.to_string(),
                        resource: if object.starts_with("dr/") { "deployrequests" } else { "rollbacks" },
                        namespace: api_namespace.to_owned(),
                    });
                }
                if !warned {
                    eprintln!("warning: watching {object}: {e}; retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        failing_since = None;
        let st = status_of(&object_now).cloned().unwrap_or_default();
        let at = elapsed(start.elapsed().as_secs());
        for event in events(&last, &st) {
            println!("{}", paint::terminal_safe(&render_event(&event, &at, paint)));
        }
        if let Some(end) = outcome(&st) {
            println!("{}", paint::terminal_safe(&end.render(object, &at, paint)));
            return Ok(end.exit_code());
        }
        last = st;
    }
}
