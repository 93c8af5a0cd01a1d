//! `slipway-controller`: runs the Environment, DeployRequest and Rollback controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kube::api::ListParams;
use slipway_controller::context::Context;
use slipway_controller::leader::{self, Election};
use slipway_controller::{Scope, deploy_request, environment, http, rollback};
use slipway_crds::{DeployRequest, Environment, Rollback};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// jemalloc rather than the system allocator: with glibc's per-thread arenas, the memory freed
/// after the first list of thousands of objects stayed with the process (benchmark P5).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read once at start. The controller waits on the network far more than
/// it allocates, so it trades a little allocation speed for a small resident set (benchmark P5:
/// 68.5 MiB with two arenas and thread caches, 62 MiB so): one arena whatever the node's CPU
/// count (the default is four per CPU), no per-thread caches, and freed pages handed back to the
/// system within about a second by a background thread. (Handing them back at once, decay 0,
/// made the freeing thread do it inline: three times the allocation CPU for no measured gain.)
#[cfg(not(target_env = "msvc"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 83] =
    b"narenas:1,tcache:false,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[derive(Parser, Debug)]
#[command(version, about = "Slipway: deploys docker-compose applications to SSH hosts, driven by Kubernetes objects")]
struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SLIPWAY_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /healthz, /readyz and /metrics listener.
    #[arg(long, env = "SLIPWAY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "SLIPWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Reconcile only the Environments, DeployRequests and Rollbacks this label selector matches
    /// (sharding: label each request like the Environment it names).
    #[arg(long, env = "SLIPWAY_WATCH_LABEL_SELECTOR")]
    watch_label_selector: Option<String>,
    /// Run the controllers only while holding a coordination Lease (several replicas: one leads).
    #[arg(long, env = "SLIPWAY_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "slipway-system")]
    leader_election_namespace: String,
    /// Name of the Lease; a shard's gets a digest of its selector appended.
    #[arg(long, default_value = "slipway-controller")]
    leader_election_id: String,
    /// Seconds a leader that stopped renewing keeps the Lease (how long a failover takes at most).
    #[arg(long, default_value_t = 15)]
    leader_election_lease_duration: u64,
    /// Seconds before expiry at which the leader renews the Lease.
    #[arg(long, default_value_t = 5)]
    leader_election_renew_grace: u64,
    /// A URL prefix (such as https://shop.example.com/) that `http.url` health checks may
    /// fetch from the controller; repeat it (or separate with commas) for several. A check of a
    /// URL no prefix matches is refused (UrlNotAllowed). Default: none.
    #[arg(long = "http-url-allow", env = "SLIPWAY_HTTP_URL_ALLOW", value_delimiter = ',')]
    http_url_allow: Vec<String>,
    /// Environment reconciles (Secret reads, host check, monitor round) that run at once; the
    /// rest wait in the order they fell due. When the hosts cannot keep up with the monitor
    /// intervals, every Environment is checked later rather than some never
    /// (`slipway_environment_reconciles_waiting` stays above 0).
    #[arg(long, env = "SLIPWAY_ENVIRONMENT_CONCURRENCY", default_value_t = slipway_controller::RECONCILE_CONCURRENCY.into(), value_parser = clap::value_parser!(u64).range(1..=4096))]
    environment_concurrency: u64,
    /// While a deploy step's host job runs, a watch waits on the host for its end and wakes the
    /// request; the request also looks by itself this often (or at the step's deadline, if
    /// sooner), should a wake never come.
    #[arg(long, env = "SLIPWAY_JOB_WATCH_FALLBACK_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    job_watch_fallback_seconds: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    match args.log_format {
        LogFormat::Human => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }

    let orphaned = slipway_controller::remote::remove_orphaned_private_dirs(&std::env::temp_dir());
    if orphaned > 0 {
        tracing::info!(orphaned, "removed SSH key directories left by a controller that was killed");
    }
    if let Some(problem) = slipway_controller::remote::local_user_problem() {
        tracing::error!(problem, "SSH will not work");
    }
    let shard = slipway_controller::shard::Shard::parse(args.watch_label_selector.as_deref().unwrap_or(""))
        .map_err(|e| anyhow::anyhow!("--watch-label-selector: {e}"))?;
    let config = kube::Config::infer().await?;
    // The Lease is renewed over a client of its own: behind the controllers' bounded client, a
    // renewal could wait out its grace behind their requests while the API server is slow.
    let lease_client = slipway_controller::lease_client(
        config.clone(),
        Duration::from_secs(args.leader_election_renew_grace.clamp(1, args.leader_election_lease_duration.max(2) - 1)),
    )?;
    let client = slipway_controller::api_client(config)?;
    let urls = slipway_controller::url_check::UrlChecker::new(&args.http_url_allow).map_err(|e| anyhow::anyhow!(e))?;
    let ctx = Arc::new(
        Context::new(client)
            .with_shard(shard.clone())
            .with_urls(urls)
            .with_environment_concurrency(usize::try_from(args.environment_concurrency).unwrap_or(usize::MAX))
            .with_job_watch_fallback(Duration::from_secs(args.job_watch_fallback_seconds)),
    );
    ctx.learn_identity().await;
    let scope = Scope { namespace: args.namespace.clone(), shard };
    let election = args.leader_elect.then(|| Election {
        namespace: args.leader_election_namespace.clone(),
        lease: leader::lease_name(&args.leader_election_id, args.watch_label_selector.as_deref()),
        identity: std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        duration: Duration::from_secs(args.leader_election_lease_duration),
        renew_before: Duration::from_secs(args.leader_election_renew_grace),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    tokio::spawn(wait_until_listable(ctx.clone(), scope.clone()));

    let stop_on_error = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let http = http::serve(args.http_addr, ctx.clone(), stopped());
    let controllers = async {
        // A standby serves /healthz and /readyz and waits for the Lease.
        let mut leadership = match &election {
            None => None,
            Some(election) => tokio::select! {
                held = election.acquire(lease_client.clone()) => match held {
                    Ok(held) => Some(held),
                    Err(e) => {
                        let _ = stop_on_error.send(true);
                        return Err(e.context(format!("leader election on Lease {}/{}", election.namespace, election.lease)));
                    }
                },
                () = stopped() => return anyhow::Ok(()),
            },
        };
        tracing::info!(scope = ?scope, "starting controllers");
        ctx.metrics.set_leader(true);
        ctx.monitor.start_now();
        let run = async {
            tokio::join!(
                environment::run(ctx.clone(), scope.clone(), stopped()),
                deploy_request::run(ctx.clone(), scope.clone(), stopped()),
                rollback::run(ctx.clone(), scope.clone(), stopped()),
            );
        };
        match leadership.as_mut() {
            None => run.await,
            Some(held) => tokio::select! {
                () = run => {}
                () = held.lost() => {
                    // Another replica leads now: stop acting at once; the Pod restarts as a standby.
                    tracing::error!("lost the leader lease; exiting");
                    ctx.job_watches.stop();
                    let _ = tokio::time::timeout(Duration::from_secs(3), ctx.hosts.close_all()).await;
                    std::process::exit(1);
                }
            },
        }
        if let Some(held) = leadership {
            held.release().await;
        }
        anyhow::Ok(())
    };
    let (served, ran) = tokio::join!(http, controllers);
    ctx.hosts.close_all().await;
    served?;
    ran?;
    tracing::info!("stopped");
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "slipway".into())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Ready once the three resources can be listed in scope: the API server answers and RBAC allows
/// what the controllers need. (Polling the controllers' own stores for readiness would steal the
/// single waker kube-runtime registers for them.)
async fn wait_until_listable(ctx: Arc<Context>, scope: Scope) {
    let one = ListParams::default().limit(1);
    let (envs, drs, rbs) = (
        scope.api::<Environment>(&ctx.client),
        scope.api::<DeployRequest>(&ctx.client),
        scope.api::<Rollback>(&ctx.client),
    );
    loop {
        let lists = tokio::join!(envs.list(&one), drs.list(&one), rbs.list(&one));
        match lists {
            (Ok(_), Ok(_), Ok(_)) => break,
            (a, b, c) => {
                let error = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                tracing::warn!(error = ?error.map(|e| e.to_string()), "cannot list Slipway resources yet");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
    ctx.ready.store(true, Ordering::Relaxed);
    tracing::info!("API reachable; ready");
}
