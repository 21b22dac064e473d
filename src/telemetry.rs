//! Logging and metrics: tracing set-up, the Prometheus registry, and the
//! metrics server (`/metrics`, `/healthz`, `/readyz`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, IntGauge, Opts, TextEncoder};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::registry::Registry;

/// Errors of the telemetry module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The log filter directive did not parse.
    #[error("invalid log filter {directive:?}: {source}")]
    LogFilter {
        /// The directive given.
        directive: String,
        /// The parser error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadyInitialised,
    /// A metric could not be registered.
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The metrics listener could not bind.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The metrics server failed.
    #[error("metrics server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `directive` is an `EnvFilter`
/// directive such as `info` or `waymark=debug,info`; logs go to stderr so
/// stdout stays free for command output such as `waymark crds`.
pub fn init_logging(directive: &str, format: LogFormat) -> Result<(), Error> {
    let filter = EnvFilter::try_new(directive).map_err(|source| Error::LogFilter {
        directive: directive.to_string(),
        source,
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not for log collectors.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|_| Error::AlreadyInitialised)
}

/// Exposes the registry's sizes as gauges, computed at scrape time from the
/// index so the write path carries no metrics bookkeeping.
struct RegistryCollector {
    registry: Arc<Registry>,
    namespaces: IntGauge,
    services: IntGauge,
    instances: IntGauge,
    operations: IntGauge,
    descs: Vec<Desc>,
}

impl RegistryCollector {
    fn new(registry: Arc<Registry>) -> Result<Self, prometheus::Error> {
        let g = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let namespaces = g("waymark_registry_namespaces", "Namespaces in the registry.")?;
        let services = g("waymark_registry_services", "Services in the registry.")?;
        let instances = g("waymark_registry_instances", "Registered instances.")?;
        let operations = g(
            "waymark_registry_operations",
            "Operation records retained for GetOperation/ListOperations.",
        )?;
        let descs = [&namespaces, &services, &instances, &operations]
            .iter()
            .flat_map(|m| m.desc().into_iter().cloned())
            .collect();
        Ok(Self {
            registry,
            namespaces,
            services,
            instances,
            operations,
            descs,
        })
    }
}

impl Collector for RegistryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let index = self.registry.read();
        self.namespaces.set(index.namespace_total() as i64);
        self.services.set(index.service_total() as i64);
        self.instances.set(index.instance_count() as i64);
        self.operations.set(index.operation_count() as i64);
        drop(index);
        [
            &self.namespaces,
            &self.services,
            &self.instances,
            &self.operations,
        ]
        .iter()
        .flat_map(|m| m.collect())
        .collect()
    }
}

/// The process-wide metrics: one Prometheus registry every component
/// registers into, plus the readiness flag `/readyz` reports.
#[derive(Clone)]
pub struct Telemetry {
    registry: prometheus::Registry,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("ready", &self.ready.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// A fresh metrics registry with the process collector (memory, CPU,
    /// file descriptors) and the registry gauges.
    pub fn new(registry: Arc<Registry>) -> Result<Self, Error> {
        let prom = prometheus::Registry::new();
        prom.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        prom.register(Box::new(RegistryCollector::new(registry)?))?;
        Ok(Self {
            registry: prom,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The Prometheus registry, for components to register their metrics.
    pub fn prometheus(&self) -> &prometheus::Registry {
        &self.registry
    }

    /// Marks the process ready (or not) to serve.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Renders all metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Binds the metrics listener. Binding is separate from serving so a bad
    /// address fails start-up before anything else runs.
    pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
        TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .with_state(self);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(Error::Serve)
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        t.render(),
    )
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
