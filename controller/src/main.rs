//! `slipway-controller`: runs the Environment, DeployRequest and Rollback controllers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use clap::{Parser, ValueEnum};
use kube::runtime::reflector::Store;
use slipway_controller::context::Context;
use slipway_controller::{Scope, deploy_request, environment, http, rollback};
use slipway_crds::{DeployRequest, Environment, Rollback};
use tokio::sync::{oneshot, watch};
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

    let client = kube::Client::try_default().await?;
    let ctx = Arc::new(Context::new(client));
    let scope = args.namespace.clone().map_or(Scope::All, Scope::Namespace);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let (env_tx, env_rx) = oneshot::channel::<Store<Environment>>();
    let (dr_tx, dr_rx) = oneshot::channel::<Store<DeployRequest>>();
    let (rb_tx, rb_rx) = oneshot::channel::<Store<Rollback>>();
    let ready_ctx = ctx.clone();
    tokio::spawn(async move {
        let (Ok(envs), Ok(drs), Ok(rbs)) = (env_rx.await, dr_rx.await, rb_rx.await) else {
            return;
        };
        let synced = tokio::join!(envs.wait_until_ready(), drs.wait_until_ready(), rbs.wait_until_ready());
        if synced.0.is_ok() && synced.1.is_ok() && synced.2.is_ok() {
            ready_ctx.ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced; ready");
        }
    });

    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    tracing::info!(scope = ?scope, "starting controllers");
    let http = http::serve(args.http_addr, ctx.clone(), stopped());
    let controllers = async {
        tokio::join!(
            environment::run(ctx.clone(), scope.clone(), stopped(), |s| drop(env_tx.send(s))),
            deploy_request::run(ctx.clone(), scope.clone(), stopped(), |s| drop(dr_tx.send(s))),
            rollback::run(ctx.clone(), scope.clone(), stopped(), |s| drop(rb_tx.send(s))),
        );
    };
    let (served, ()) = tokio::join!(http, controllers);
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
