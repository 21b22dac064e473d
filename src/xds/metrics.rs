//! xDS metrics, registered in the process-wide Prometheus registry:
//!
//! - `waymark_xds_clients`: ADS streams open now.
//! - `waymark_xds_pushes_total{type}`: responses sent.
//! - `waymark_xds_nacks_total{type}`: responses clients rejected.
//! - `waymark_xds_last_nack_timestamp_seconds{type}`: when the last one was.
//! - `waymark_xds_resources{type}`: resources in the current snapshot.
//! - `waymark_xds_snapshot_rebuilt_services_total`: services whose resources
//!   were built anew (the rest are reused).
//! - `waymark_xds_push_delay_seconds`: from a registry change being seen to
//!   a response carrying it handed to a stream.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

use super::Error;
use super::snapshot::ResourceType;

/// The xDS server's metrics. Cheap to clone (handles to shared series).
#[derive(Clone, Debug)]
pub struct XdsMetrics {
    pub(super) clients: IntGauge,
    pushes: IntCounterVec,
    nacks: IntCounterVec,
    last_nack: GaugeVec,
    resources: IntGaugeVec,
    pub(super) rebuilt: IntCounter,
    pub(super) push_delay: Histogram,
}

impl XdsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.clients.clone()))?;
        registry.register(Box::new(m.pushes.clone()))?;
        registry.register(Box::new(m.nacks.clone()))?;
        registry.register(Box::new(m.last_nack.clone()))?;
        registry.register(Box::new(m.resources.clone()))?;
        registry.register(Box::new(m.rebuilt.clone()))?;
        registry.register(Box::new(m.push_delay.clone()))?;
        Ok(m)
    }

    /// Metrics that are counted but exported nowhere (tests).
    pub fn unregistered() -> Result<Self, Error> {
        let by_type = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["type"]);
        Ok(Self {
            clients: IntGauge::new("waymark_xds_clients", "ADS streams open now.")?,
            pushes: by_type("waymark_xds_pushes_total", "xDS responses sent, by type.")?,
            nacks: by_type(
                "waymark_xds_nacks_total",
                "xDS responses rejected by clients (NACKs), by type.",
            )?,
            last_nack: GaugeVec::new(
                Opts::new(
                    "waymark_xds_last_nack_timestamp_seconds",
                    "Unix time of the last NACK, by type.",
                ),
                &["type"],
            )?,
            resources: IntGaugeVec::new(
                Opts::new(
                    "waymark_xds_resources",
                    "Resources in the served snapshot, by type.",
                ),
                &["type"],
            )?,
            rebuilt: IntCounter::new(
                "waymark_xds_snapshot_rebuilt_services_total",
                "Services whose xDS resources were built anew after a registry change.",
            )?,
            push_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "waymark_xds_push_delay_seconds",
                    "Time from a registry change being seen to an xDS response carrying it.",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
        })
    }

    pub(super) fn pushed(&self, kind: ResourceType) {
        self.pushes.with_label_values(&[kind.label()]).inc();
    }

    pub(super) fn nacked(&self, kind: ResourceType) {
        self.nacks.with_label_values(&[kind.label()]).inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.last_nack.with_label_values(&[kind.label()]).set(now);
    }

    pub(super) fn set_resources(&self, kind: ResourceType, n: usize) {
        self.resources
            .with_label_values(&[kind.label()])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// NACKs counted so far for `kind` (tests).
    pub fn nacks(&self, kind: ResourceType) -> u64 {
        self.nacks.with_label_values(&[kind.label()]).get()
    }
}
