//! The `waymark` command line: flags (each also read from a `WAYMARK_*`
//! environment variable) and the subcommands they drive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;
use tracing::info;

use crate::api;
use crate::registry::{self, ArnScope, RedbStore, Registry, RegistryConfig};
use crate::telemetry::{self, LogFormat, Telemetry};

/// Errors of the command-line layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// Metrics or logging failed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::Error),
    /// The Cloud Map API server failed.
    #[error(transparent)]
    Api(#[from] api::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A background task panicked.
    #[error("a server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Waymark: a Kubernetes-native service registry with AWS Cloud Map's
/// semantics and wire API.
#[derive(Debug, Parser)]
#[command(name = "waymark", version, about, long_about = None)]
pub struct Cli {
    /// Log filter: a level (`info`, `debug`) or `EnvFilter` directives such as `waymark=debug,info`.
    #[arg(long, env = "WAYMARK_LOG", default_value = "info", global = true)]
    pub log: String,
    /// Log format.
    #[arg(
        long,
        env = "WAYMARK_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry standalone (no cluster needed): durable store, Cloud Map API and metrics server.
    Serve(ServeArgs),
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
}

/// Flags of `waymark serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory of the embedded registry database; created if missing.
    #[arg(long, env = "WAYMARK_DATA_DIR", default_value = "waymark-data")]
    pub data_dir: PathBuf,
    /// Address of the Cloud Map API (AWS JSON 1.1 over HTTP; point SDKs' endpoint URL here).
    #[arg(long, env = "WAYMARK_API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Address of the metrics server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "WAYMARK_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,
    /// AWS region reported in ARNs.
    #[arg(long, env = "WAYMARK_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Twelve-digit account id reported in ARNs and as resource owner.
    #[arg(long, env = "WAYMARK_ACCOUNT_ID", default_value = "000000000000", value_parser = parse_account)]
    pub account_id: String,
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err("an AWS account id is exactly 12 digits".into())
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() -> Result<impl Future<Output = ()>, Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received, shutting down"),
            _ = int.recv() => info!("SIGINT received, shutting down"),
        }
    })
}

/// `waymark serve`: opens the registry from `--data-dir`, serves metrics and
/// health, and stops cleanly on SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    let ServeArgs {
        data_dir,
        api_addr,
        metrics_addr,
        region,
        account_id,
    } = args;
    let signal = shutdown_signal().await?;
    let metrics_listener = Telemetry::bind(metrics_addr).await?;
    let api_listener = api::bind(api_addr).await?;

    let started = std::time::Instant::now();
    let store = RedbStore::open(&data_dir).map_err(registry::Error::from)?;
    let config = RegistryConfig {
        scope: ArnScope {
            region,
            account: account_id,
        },
        ..RegistryConfig::default()
    };
    // Loading reads the whole store; keep it off the async workers.
    let registry =
        tokio::task::spawn_blocking(move || Registry::open(Box::new(store), config)).await??;
    let registry = Arc::new(registry);
    {
        let index = registry.read();
        info!(
            data_dir = %data_dir.display(),
            namespaces = index.namespace_total(),
            services = index.service_total(),
            instances = index.instance_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "registry loaded"
        );
    }

    let telemetry = Telemetry::new(registry.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let metrics = tokio::spawn(
        telemetry
            .clone()
            .serve(metrics_listener, stopped(stop_rx.clone())),
    );
    info!(%metrics_addr, "metrics server listening");
    let api = tokio::spawn(api::serve(
        api_listener,
        registry.clone(),
        telemetry.prometheus().clone(),
        stopped(stop_rx.clone()),
    ));
    info!(%api_addr, "Cloud Map API listening");
    telemetry.set_ready(true);

    // Servers only return before the shutdown signal when they fail.
    tokio::select! {
        () = signal => {}
        res = metrics => {
            res??;
            return Ok(());
        }
        res = api => {
            res??;
            return Ok(());
        }
    }
    telemetry.set_ready(false);
    let _ = stop_tx.send(true);
    drop(registry);
    info!("stopped");
    Ok(())
}
