//! Logging and metrics: tracing set-up, the Prometheus registry, and the
//! metrics server (`/metrics`, `/healthz`, `/readyz`).

use std::collections::HashMap;
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
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, IntGaugeVec, Opts, TextEncoder,
};
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

/// Exposes the registry's sizes and its store's freshness as gauges,
/// computed at scrape time from the index and the store so the write path
/// carries no metrics bookkeeping.
struct RegistryCollector {
    registry: Arc<Registry>,
    namespaces: IntGauge,
    services: IntGauge,
    instances: IntGauge,
    by_health: IntGaugeVec,
    operations: IntGauge,
    store_stale: IntGauge,
    store_revision: IntGauge,
    store_lag: Gauge,
    store_conflicts: IntCounter,
    store_relists: IntCounter,
    store_through_watch: IntCounter,
    commits: IntCounter,
    writes: IntCounter,
    replanned: IntCounter,
    descs: Vec<Desc>,
}

impl RegistryCollector {
    fn new(registry: Arc<Registry>) -> Result<Self, prometheus::Error> {
        let g = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let namespaces = g("waymark_registry_namespaces", "Namespaces in the registry.")?;
        let services = g("waymark_registry_services", "Services in the registry.")?;
        let instances = g("waymark_registry_instances", "Registered instances.")?;
        let by_health = IntGaugeVec::new(
            Opts::new(
                "waymark_registry_instances_by_health",
                "Registered instances by registry namespace (its name) and the health Cloud Map reports for them.",
            ),
            &["registry_namespace", "health"],
        )?;
        let operations = g(
            "waymark_registry_operations",
            "Operation records retained for GetOperation/ListOperations.",
        )?;
        let store_stale = g(
            "waymark_store_stale",
            "1 while this replica cannot confirm it holds the shared store's latest state (reads are then answered from what it has).",
        )?;
        let store_revision = g(
            "waymark_store_revision",
            "The shared store revision this replica has applied (0 for the embedded store).",
        )?;
        let store_lag = Gauge::with_opts(Opts::new(
            "waymark_store_lag_seconds",
            "Seconds since this replica last confirmed it holds the shared store's latest state.",
        ))?;
        let store_conflicts = IntCounter::with_opts(Opts::new(
            "waymark_store_conflicts_total",
            "Writes refused because another replica changed what they were planned on (each is planned again).",
        ))?;
        let store_relists = IntCounter::with_opts(Opts::new(
            "waymark_store_relists_total",
            "Times this replica re-read the whole shared store (a watch lost to compaction).",
        ))?;
        let store_through_watch = IntCounter::with_opts(Opts::new(
            "waymark_store_writes_through_watch_total",
            "Store commits this replica applied through its watch instead of at once (another replica had changed the same service unseen).",
        ))?;
        let c = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let commits = c(
            "waymark_registry_commits_total",
            "Store commits (one fsync, or one etcd transaction each); writes that arrive while one is in flight share the next.",
        )?;
        let writes = c(
            "waymark_registry_writes_total",
            "Writes committed (waymark_registry_writes_total / waymark_registry_commits_total is the mean batch).",
        )?;
        let replanned = c(
            "waymark_registry_writes_replanned_total",
            "Writes planned again because what they read changed before they were committed.",
        )?;
        let mut descs: Vec<Desc> = [
            &namespaces,
            &services,
            &instances,
            &operations,
            &store_stale,
            &store_revision,
        ]
        .iter()
        .flat_map(|m| m.desc().into_iter().cloned())
        .collect();
        descs.extend(store_lag.desc().into_iter().cloned());
        descs.extend(by_health.desc().into_iter().cloned());
        for m in [
            &store_conflicts,
            &store_relists,
            &store_through_watch,
            &commits,
            &writes,
            &replanned,
        ] {
            descs.extend(m.desc().into_iter().cloned());
        }
        Ok(Self {
            registry,
            namespaces,
            services,
            instances,
            by_health,
            operations,
            store_stale,
            store_revision,
            store_lag,
            store_conflicts,
            store_relists,
            store_through_watch,
            commits,
            writes,
            replanned,
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
        // Counted afresh: namespaces and healths that are gone disappear.
        let mut counts: HashMap<(&str, &str), i64> = HashMap::new();
        for entry in index.services() {
            let namespace = index
                .namespace(&entry.service.namespace_id)
                .map_or("", |n| n.name.as_str());
            for instance in entry.instances.values() {
                let health = entry.reported_health(instance).as_str();
                *counts.entry((namespace, health)).or_default() += 1;
            }
        }
        self.by_health.reset();
        for ((namespace, health), n) in counts {
            self.by_health
                .with_label_values(&[namespace, health])
                .set(n);
        }
        drop(index);
        let store = self.registry.store_status();
        self.store_stale.set(i64::from(store.stale.is_some()));
        self.store_revision.set(store.revision);
        self.store_lag.set(store.lag_seconds);
        // Counters only move forward: add what the store counted since.
        self.store_conflicts
            .inc_by(store.conflicts.saturating_sub(self.store_conflicts.get()));
        self.store_relists
            .inc_by(store.relists.saturating_sub(self.store_relists.get()));
        self.store_through_watch.inc_by(
            store
                .through_watch
                .saturating_sub(self.store_through_watch.get()),
        );
        let w = self.registry.write_stats();
        for (counter, now) in [
            (&self.commits, w.commits),
            (&self.writes, w.writes),
            (&self.replanned, w.replanned),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        let mut out: Vec<MetricFamily> = [
            &self.namespaces,
            &self.services,
            &self.instances,
            &self.operations,
            &self.store_stale,
            &self.store_revision,
        ]
        .iter()
        .flat_map(|m| m.collect())
        .collect();
        out.extend(self.store_lag.collect());
        out.extend(self.by_health.collect());
        for c in [
            &self.store_conflicts,
            &self.store_relists,
            &self.store_through_watch,
            &self.commits,
            &self.writes,
            &self.replanned,
        ] {
            out.extend(c.collect());
        }
        out
    }
}

/// The process-wide metrics: one Prometheus registry every component
/// registers into, plus the readiness flag `/readyz` reports.
#[derive(Clone)]
pub struct Telemetry {
    registry: prometheus::Registry,
    ready: Arc<AtomicBool>,
    // For `/readyz`: a replica that cannot confirm it is current says so.
    store: Arc<Registry>,
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
        prom.register(Box::new(RegistryCollector::new(registry.clone())?))?;
        let commits = Histogram::with_opts(
            HistogramOpts::new(
                "waymark_registry_commit_duration_seconds",
                "Time to make one batch of writes durable in the store (an fsync, or an etcd transaction).",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.5, 12)?),
        )?;
        prom.register(Box::new(commits.clone()))?;
        registry.observe_commits(move |took| commits.observe(took.as_secs_f64()));
        Ok(Self {
            registry: prom,
            ready: Arc::new(AtomicBool::new(false)),
            store: registry,
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

/// Ready once started (and, under `waymark run`, synced with the cluster),
/// and not while the shared store cannot confirm this replica is current:
/// a load balancer then prefers the replicas that are.
async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if !t.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    match t.store.store_status().stale {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("stale: {why}\n")),
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}
