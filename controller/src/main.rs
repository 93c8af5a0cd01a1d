//! `slipway-controller`: runs the Environment, DeployRequest and Rollback controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, ValueEnum};
use kube::api::ListParams;
use slipway_controller::context::Context;
use slipway_controller::{Scope, deploy_request, environment, http, rollback};
use slipway_crds::{DeployRequest, Environment, Rollback};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

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
    let client = kube::Client::try_default().await?;
    let ctx = Arc::new(Context::new(client));
    ctx.learn_identity().await;
    let scope = args.namespace.clone().map_or(Scope::All, Scope::Namespace);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    tokio::spawn(wait_until_listable(ctx.clone(), scope.clone()));

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    tracing::info!(scope = ?scope, "starting controllers");
    let http = http::serve(args.http_addr, ctx.clone(), stopped());
    let controllers = async {
        tokio::join!(
            environment::run(ctx.clone(), scope.clone(), stopped()),
            deploy_request::run(ctx.clone(), scope.clone(), stopped()),
            rollback::run(ctx.clone(), scope.clone(), stopped()),
        );
    };
    let (served, ()) = tokio::join!(http, controllers);
    ctx.hosts.close_all().await;
    served?;
    tracing::info!("stopped");
    Ok(())
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
