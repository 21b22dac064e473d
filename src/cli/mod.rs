//! The `waymark` command line: flags (each also read from a `WAYMARK_*`
//! environment variable) and the subcommands they drive.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::sync::{mpsc, watch};
use tracing::info;

mod access;
mod guards;
mod inspect;
mod progress;
mod store;
mod tls;

pub use self::access::{AuthArgs, AuthMode};
pub use self::guards::{AuditArgs, DnsLimitArgs, LimitArgs};
pub use self::inspect::{InspectArgs, InspectCommand, InspectError, Output, inspect};
pub use self::progress::Progress;
pub use self::store::{CopyArgs, EtcdArgs, StoreArgs, StoreCommand, StoreKind, copy};
pub use self::tls::ListenerArgs;
use crate::api;
use crate::auth::ActingPrincipal;
use crate::controller;
use crate::dns::{self, DnsListener, DnsMetrics, Scope};
use crate::health::{self, ProberConfig};
use crate::registry::HealthFlip;
use crate::registry::{self, ArnScope, Registry, RegistryConfig};
use crate::telemetry::{self, LogFormat, Telemetry};
use crate::xds;

/// Errors of the command-line layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry could not be opened.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// Metrics or logging failed.
    #[error(transparent)]
    Telemetry(#[from] telemetry::Error),
    /// The controller failed.
    #[error(transparent)]
    Controller(#[from] controller::Error),
    /// No usable cluster connection.
    #[error("cannot connect to the cluster: {0}")]
    Kubeconfig(String),
    /// The Cloud Map API server failed.
    #[error(transparent)]
    Api(#[from] api::Error),
    /// The DNS server failed.
    #[error(transparent)]
    Dns(#[from] dns::Error),
    /// The xDS server failed.
    #[error(transparent)]
    Xds(#[from] xds::Error),
    /// The active health checks could not start.
    #[error(transparent)]
    Health(#[from] health::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The API's access flags or files are wrong.
    #[error("API access control: {0}")]
    Access(String),
    /// The audit log cannot be written.
    #[error("{0}")]
    Audit(#[from] crate::api::audit::AuditError),
    /// A request or response rate limit cannot be set up.
    #[error("rate limits: {0}")]
    Limits(String),
    /// The API's TLS certificate or key is unusable, or its metrics failed.
    #[error(transparent)]
    Tls(#[from] api::listener::Error),
    /// Only one of --tls-cert and --tls-key was given.
    #[error("--tls-cert and --tls-key go together")]
    TlsFlags,
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
    #[arg(
        long,
        env = "WAYMARK_LOG",
        default_value = "info,hickory_server=warn",
        global = true
    )]
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
    /// Run the controller with the registry: watch the cluster, register its pods, and serve
    /// the Cloud Map API, DNS and metrics (in-cluster, or with --kubeconfig / KUBECONFIG).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML (for `kubectl apply -f -`).
    Crds,
    /// Manage registry stores.
    Store {
        /// What to do.
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Ask a running Waymark what it holds behind a name, and why (over its Cloud Map API;
    /// SigV4-signed with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY when they are set).
    Inspect(InspectArgs),
}

/// Flags of `waymark run`: everything `serve` takes, plus the cluster connection.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Registry, API, DNS and metrics settings.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Kubeconfig file; without it the in-cluster service account (or $KUBECONFIG, ~/.kube/config) is used.
    #[arg(long, env = "WAYMARK_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Identifies this cluster in ownership markers (default: the UID of the kube-system namespace).
    #[arg(long, env = "WAYMARK_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Seconds between full anti-entropy passes over every ServiceDiscovery and Namespace.
    #[arg(long, env = "WAYMARK_RESYNC_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_seconds: u64,
    /// Kubernetes namespaces to watch for Pods, Services and ServiceDiscoveries (comma-separated; default: all).
    #[arg(long, env = "WAYMARK_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Label selector choosing the Waymark Namespaces and ServiceDiscoveries this instance manages (default: all).
    #[arg(long, env = "WAYMARK_SELECTOR")]
    pub selector: Option<String>,
    /// Turn leader election off: this replica always writes status (run only one).
    #[arg(long, env = "WAYMARK_DISABLE_LEADER_ELECTION")]
    pub disable_leader_election: bool,
    /// Name of the coordination.k8s.io Lease the replicas share.
    #[arg(long, env = "WAYMARK_LEASE_NAME", default_value = "waymark-controller")]
    pub lease_name: String,
    /// Namespace of the Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, env = "WAYMARK_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Seconds a leader's Lease stays valid without renewal (a standby takes over after that).
    #[arg(long, env = "WAYMARK_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_duration_seconds: u64,
    /// The controller's identity: a principal of --auth-credentials whose policies decide every
    /// registry write the controller makes, as they would decide the same Cloud Map API call
    /// (default: the controller is not restricted).
    #[arg(long, env = "WAYMARK_CONTROLLER_PRINCIPAL")]
    pub controller_principal: Option<String>,
}

/// Flags of `waymark serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where the registry lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address of the Cloud Map API (AWS JSON 1.1 over HTTP, or HTTPS with --tls-cert; point SDKs' endpoint URL here).
    #[arg(long, env = "WAYMARK_API_ADDR", default_value = "127.0.0.1:8080")]
    pub api_addr: SocketAddr,
    /// Address of the DNS server (UDP and TCP): authoritative for every DNS namespace, private and public.
    #[arg(long, env = "WAYMARK_DNS_ADDR", default_value = "127.0.0.1:5353")]
    pub dns_addr: SocketAddr,
    /// Optional second DNS address (UDP and TCP) that serves public DNS namespaces only, never private ones.
    #[arg(long, env = "WAYMARK_DNS_PUBLIC_ADDR")]
    pub dns_public_addr: Option<SocketAddr>,
    /// Address of the metrics server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "WAYMARK_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    pub metrics_addr: SocketAddr,
    /// Address of the xDS server (gRPC, plaintext: ADS for Envoy and proxyless gRPC clients,
    /// see docs/xds.md); off unless given.
    #[arg(long, env = "WAYMARK_XDS_ADDR")]
    pub xds_addr: Option<SocketAddr>,
    /// AWS region reported in ARNs.
    #[arg(long, env = "WAYMARK_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Twelve-digit account id reported in ARNs and as resource owner.
    #[arg(long, env = "WAYMARK_ACCOUNT_ID", default_value = "000000000000", value_parser = parse_account)]
    pub account_id: String,
    /// Active health checks (HTTP, HTTPS, TCP).
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Who may call the Cloud Map API.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// The audit log of API calls.
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Request limits of the API.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Response rate limits of DNS.
    #[command(flatten)]
    pub dns_limits: DnsLimitArgs,
    /// TLS and the connection limit of the Cloud Map API.
    #[command(flatten)]
    pub listener: ListenerArgs,
}

/// Flags of the active health checks.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Seconds between two probes of one instance, for health checks that set no interval
    /// (services created through the Cloud Map API; a ServiceDiscovery's
    /// spec.healthCheck.intervalSeconds wins). Fractions allowed (0.25).
    #[arg(long, env = "WAYMARK_PROBE_INTERVAL_SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub probe_interval_seconds: Duration,
    /// Seconds a probe may take (connect, TLS handshake, response status) before it counts as a
    /// failure, for health checks that set no timeout. Fractions allowed.
    #[arg(long, env = "WAYMARK_PROBE_TIMEOUT_SECONDS", default_value = "2", value_parser = parse_seconds)]
    pub probe_timeout_seconds: Duration,
    /// Most health-check probes in flight at once (each holds a socket).
    #[arg(long, env = "WAYMARK_PROBE_CONCURRENCY", default_value_t = health::DEFAULT_CONCURRENCY as u32,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub probe_concurrency: u32,
}

impl ProbeArgs {
    /// The prober settings these flags describe.
    pub fn config(&self) -> ProberConfig {
        ProberConfig {
            defaults: health::Defaults {
                interval: self.probe_interval_seconds,
                timeout: self.probe_timeout_seconds,
            },
            concurrency: self.probe_concurrency as usize,
        }
    }
}

/// A duration in seconds, fractions allowed, from 10 ms to one hour.
pub(crate) fn parse_seconds(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.01..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err("expected seconds between 0.01 and 3600 (fractions allowed, e.g. 0.5)".into()),
    }
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

/// `waymark serve`: opens the registry from `--data-dir`, serves the API,
/// DNS, metrics and health, and stops cleanly on SIGTERM/SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    run_registry(args, None).await
}

/// `waymark run`: `serve` plus the controller.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    let RunArgs {
        serve,
        kubeconfig,
        cluster_id,
        resync_seconds,
        watch_namespaces,
        selector,
        disable_leader_election,
        lease_name,
        lease_namespace,
        lease_duration_seconds,
        controller_principal,
    } = args;
    let client = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(&path)
                .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?
        }
        None => kube::Client::try_default()
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?,
    };
    let config = controller::Config {
        cluster_id,
        resync: std::time::Duration::from_secs(resync_seconds),
        instance: std::env::var("POD_NAME").ok(),
        watch_namespaces,
        selector,
        lease: (!disable_leader_election).then(|| controller::lease::LeaseConfig {
            namespace: lease_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| "default".into()),
            name: lease_name,
            identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                format!(
                    "{}-{}",
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or_else(|_| "waymark".into()),
                    std::process::id()
                )
            }),
            duration: std::time::Duration::from_secs(lease_duration_seconds),
        }),
        // Set once the credentials are loaded (run_registry).
        acting: None,
    };
    run_registry(serve, Some((client, config, controller_principal))).await
}

/// Starts the active health checks of `registry` with the `--probe-*` flags:
/// they probe while `active` is true and send the health flips they cause
/// to `flips`, until `shutdown` resolves.
pub fn spawn_prober(
    registry: Arc<Registry>,
    flags: &ProbeArgs,
    cluster: Option<&str>,
    prometheus: &prometheus::Registry,
    active: watch::Receiver<bool>,
    flips: Option<mpsc::Sender<Vec<HealthFlip>>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    info!(
        default_interval_ms = flags.probe_interval_seconds.as_millis() as u64,
        default_timeout_ms = flags.probe_timeout_seconds.as_millis() as u64,
        concurrency = flags.probe_concurrency,
        "active health checks enabled"
    );
    Ok(health::spawn(
        registry,
        flags.config(),
        cluster,
        prometheus,
        active,
        flips,
        shutdown,
    )?)
}

/// Runs the registry and its servers, and the controller when given a client.
async fn run_registry(
    args: ServeArgs,
    controller: Option<(kube::Client, controller::Config, Option<String>)>,
) -> Result<(), Error> {
    let ServeArgs {
        store,
        api_addr,
        dns_addr,
        dns_public_addr,
        metrics_addr,
        xds_addr,
        region,
        account_id,
        probe,
        auth,
        audit,
        limits,
        dns_limits,
        listener,
    } = args;
    // Access and TLS settings first: an unsafe or broken one stops start-up
    // before anything is bound or opened.
    let (access, authority) = auth.access(api_addr, &region)?;
    // The controller's principal, checked now like the rest of access.
    let controller = match controller {
        Some((client, mut config, principal)) => {
            if let Some(name) = principal {
                let Some(authority) = &authority else {
                    return Err(Error::Access(
                        "--controller-principal needs --auth sigv4 (--auth-credentials)".into(),
                    ));
                };
                let acting = ActingPrincipal::new(authority.clone(), &name, &account_id)
                .ok_or_else(|| {
                    Error::Access(format!(
                        "--controller-principal {name:?} is not a principal of the credentials file"
                    ))
                })?;
                info!(principal = %name, "the controller's writes are decided by its principal's policies");
                config.acting = Some(acting);
            }
            Some((client, config))
        }
        None => None,
    };
    let listener = listener.settings()?;
    let scheme = if listener.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let signal = shutdown_signal().await?;
    let metrics_listener = Telemetry::bind(metrics_addr).await?;
    let api_listener = api::bind(api_addr).await?;
    let mut dns_listeners = vec![DnsListener::bind(dns_addr, Scope::All).await?];
    if let Some(addr) = dns_public_addr {
        dns_listeners.push(DnsListener::bind(addr, Scope::PublicOnly).await?);
    }
    let xds_listener = match xds_addr {
        Some(addr) => Some(xds::bind(addr).await?),
        None => None,
    };

    let started = std::time::Instant::now();
    let config = RegistryConfig {
        scope: ArnScope {
            region,
            account: account_id,
        },
        ..RegistryConfig::default()
    };
    // Opening connects or reads files, and loading reads the whole store:
    // keep both off the async workers.
    let registry =
        tokio::task::spawn_blocking(move || Registry::open(store.open()?, config)).await??;
    let registry = Arc::new(registry);
    registry.follow()?;
    {
        let index = registry.read();
        info!(
            store = %registry.store_description(),
            namespaces = index.namespace_total(),
            services = index.service_total(),
            instances = index.instance_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "registry loaded"
        );
    }

    // Check the cluster before serving anything, so a missing CRD is a clear
    // start-up error rather than a process that never becomes ready.
    let controller = match controller {
        Some((client, config)) => {
            let cluster_id = controller::preflight(&client, &config).await?;
            info!(%cluster_id, "connected to the cluster");
            Some((client, config, cluster_id))
        }
        None => None,
    };

    let telemetry = Telemetry::new(registry.clone())?;
    if let Some(authority) = &authority {
        auth.watch(authority, telemetry.prometheus())?;
    }
    let scope = &registry.config().scope;
    let audit = audit.open(&scope.region, &scope.account, telemetry.prometheus())?;
    let guards = api::Guards {
        access,
        audit: audit.as_ref().map(|(log, _)| log.clone()),
        throttle: limits.throttle(telemetry.prometheus())?,
    };
    let audit_writer = audit.map(|(_, writer)| writer);
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
    let max_connections = listener.max_connections;
    let mut api = tokio::spawn(api::serve(
        api_listener,
        listener,
        registry.clone(),
        guards,
        telemetry.prometheus().clone(),
        stopped(stop_rx.clone()),
    ));
    info!(%api_addr, scheme, max_connections, "Cloud Map API listening");
    let dns_metrics = DnsMetrics::register(telemetry.prometheus())?;
    let rrl = dns_limits.limiter(telemetry.prometheus())?;
    let dns = tokio::spawn(dns::serve(
        dns_listeners,
        registry.clone(),
        dns_metrics,
        rrl,
        stopped(stop_rx.clone()),
    ));
    // The xDS server's NACKs reach the ServiceDiscovery status under `run`.
    let xds_status = xds_listener.as_ref().map(|_| xds::XdsStatus::default());
    let xds = match xds_listener {
        Some(listener) => {
            let metrics = xds::XdsMetrics::register(telemetry.prometheus())?;
            let addr = listener.local_addr().ok();
            let server = tokio::spawn(xds::serve(
                listener,
                registry.clone(),
                metrics,
                xds_status.clone().unwrap_or_default(),
                stopped(stop_rx.clone()),
            ));
            info!(xds_addr = ?addr, "xDS server (ADS) listening");
            server
        }
        None => tokio::spawn(std::future::pending::<Result<(), xds::Error>>()),
    };
    // Active health checks: `serve` always probes; under `run` only the
    // leader does, and the controller turns the flips into Events and status.
    let leads = controller
        .as_ref()
        .is_none_or(|(_, config, _)| config.lease.is_none());
    let (leader_tx, probe_active) = watch::channel(leads);
    let (flips_tx, flips_rx) = mpsc::channel::<Vec<HealthFlip>>(256);
    let probe_flips = controller.is_some().then_some(flips_tx);
    // Under `run`, this cluster's pods (and the API's instances) only: other
    // clusters sharing the registry probe their own.
    let mut prober = spawn_prober(
        registry.clone(),
        &probe,
        controller.as_ref().map(|(_, _, cluster)| cluster.as_str()),
        telemetry.prometheus(),
        probe_active,
        probe_flips,
        stopped(stop_rx.clone()),
    )?;
    // With a controller, ready means every watch has synced and the registry
    // reflects the cluster; standalone, it means the registry is loaded.
    let controller = match controller {
        Some((client, config, cluster_id)) => {
            let ready = telemetry.clone();
            let metrics = controller::Metrics::register(telemetry.prometheus())
                .map_err(telemetry::Error::from)?;
            tokio::spawn(controller::run(
                client,
                registry.clone(),
                config,
                cluster_id,
                metrics,
                controller::Links {
                    ready: Box::new(move |r| ready.set_ready(r)),
                    leader: leader_tx,
                    flips: flips_rx,
                    xds: xds_status,
                },
                stopped(stop_rx.clone()),
            ))
        }
        None => {
            telemetry.set_ready(true);
            tokio::spawn(std::future::pending())
        }
    };

    // Servers only return before the shutdown signal when they fail.
    tokio::select! {
        () = signal => {}
        res = controller => {
            res??;
            return Ok(());
        }
        res = metrics => {
            res??;
            return Ok(());
        }
        res = &mut api => {
            res??;
            return Ok(());
        }
        res = dns => {
            res??;
            return Ok(());
        }
        res = xds => {
            res??;
            return Ok(());
        }
        res = &mut prober => {
            res?;
            return Ok(());
        }
    }
    telemetry.set_ready(false);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), prober).await;
    // The API's last calls reach the audit log: once the server has
    // stopped, its handles are gone and the writer drains its queue (a sink
    // that never drains is given up on).
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut api).await;
    if let Some(writer) = audit_writer {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || writer.finish()),
        )
        .await;
    }
    // Give the controller a moment to finish its in-flight writes.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(registry);
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        let cli = Cli::try_parse_from(["waymark", "serve"].iter().chain(args))?;
        match cli.command {
            Command::Serve(a) => Ok(a),
            _ => unreachable!(),
        }
    }

    #[test]
    fn probe_flags_default_to_the_service_discovery_defaults_and_take_fractions() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.probe.config(), ProberConfig::default());
        assert_eq!(a.probe.probe_interval_seconds, Duration::from_secs(10));
        assert_eq!(a.probe.probe_timeout_seconds, Duration::from_secs(2));
        let a = serve(&[
            "--probe-interval-seconds",
            "0.25",
            "--probe-timeout-seconds",
            "1.5",
            "--probe-concurrency",
            "64",
        ])
        .unwrap();
        assert_eq!(a.probe.probe_interval_seconds, Duration::from_millis(250));
        assert_eq!(a.probe.probe_timeout_seconds, Duration::from_millis(1500));
        assert_eq!(a.probe.config().concurrency, 64);
        for bad in [
            ["--probe-interval-seconds", "0"],
            ["--probe-interval-seconds", "-1"],
            ["--probe-interval-seconds", "NaN"],
            ["--probe-timeout-seconds", "3601"],
            ["--probe-concurrency", "0"],
        ] {
            assert!(serve(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_flags_go_together_and_the_connection_limit_has_bounds() {
        let a = serve(&[]).unwrap();
        assert_eq!(a.listener.tls_cert, None);
        assert_eq!(a.listener.max_connections, 4096);
        assert_eq!(a.listener.tls_reload_seconds, Duration::from_secs(5));
        assert!(a.listener.settings().unwrap().tls.is_none());
        let a = serve(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-reload-seconds",
            "0.25",
            "--max-connections",
            "2",
        ])
        .unwrap();
        assert_eq!(a.listener.tls_reload_seconds, Duration::from_millis(250));
        assert_eq!(a.listener.max_connections, 2);
        // Missing files are only found when loading.
        let err = a.listener.settings().unwrap_err().to_string();
        assert!(err.contains("c.pem"), "{err}");
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--max-connections", "0"],
        ] {
            assert!(serve(bad).is_err(), "{bad:?}");
        }
    }
}
