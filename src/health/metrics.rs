//! Health-check metrics, registered in the process-wide Prometheus registry:
//!
//! - `waymark_health_probes_total{type, result}`: probes finished, by check
//!   type (`HTTP`, `HTTPS`, `TCP`) and result (`success`, `failure`,
//!   `timeout`, `error` — the prober could not try, counted neither way).
//! - `waymark_health_probe_duration_seconds{type}`: probe latency (connect,
//!   TLS, status line), timeouts included.
//! - `waymark_health_flips_total{direction}`: instances whose effective
//!   health the checks changed (`to_healthy`, `to_unhealthy`).
//! - `waymark_health_checked_instances`: instances under active check by this
//!   process (0 while it is not the active prober).
//! - `waymark_health_probes_in_flight`: probes running now.
//! - `waymark_health_active`: 1 while this process probes (the leader).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

use super::Error;
use crate::registry::model::{HealthCheckType, HealthStatus};

const TYPES: [HealthCheckType; 3] = [
    HealthCheckType::Http,
    HealthCheckType::Https,
    HealthCheckType::Tcp,
];

/// The prober's metrics. Cheap to clone (handles to shared series).
#[derive(Clone, Debug)]
pub struct HealthMetrics {
    probes: IntCounterVec,
    duration: HistogramVec,
    flips: IntCounterVec,
    /// Instances under active check.
    pub checked: IntGauge,
    /// Probes running now.
    pub in_flight: IntGauge,
    /// 1 while this process probes.
    pub active: IntGauge,
}

impl HealthMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, Error> {
        let m = Self::unregistered()?;
        registry.register(Box::new(m.probes.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.flips.clone()))?;
        registry.register(Box::new(m.checked.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.active.clone()))?;
        Ok(m)
    }

    /// Metrics that are counted but exported nowhere (tests).
    pub fn unregistered() -> Result<Self, Error> {
        let probes = IntCounterVec::new(
            Opts::new(
                "waymark_health_probes_total",
                "Active health-check probes finished, by check type and result.",
            ),
            &["type", "result"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "waymark_health_probe_duration_seconds",
                "Time a probe took (connect, TLS handshake, response status), timeouts included.",
            )
            .buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0, 10.0,
            ]),
            &["type"],
        )?;
        let flips = IntCounterVec::new(
            Opts::new(
                "waymark_health_flips_total",
                "Instances whose effective health an active check changed, by direction.",
            ),
            &["direction"],
        )?;
        let checked = IntGauge::with_opts(Opts::new(
            "waymark_health_checked_instances",
            "Instances under active health check by this process.",
        ))?;
        let in_flight = IntGauge::with_opts(Opts::new(
            "waymark_health_probes_in_flight",
            "Active health-check probes running now.",
        ))?;
        let active = IntGauge::with_opts(Opts::new(
            "waymark_health_active",
            "1 while this process runs the active health checks (the leader), else 0.",
        ))?;
        // Export every series from the start, so dashboards see zeros.
        for t in TYPES {
            for r in ["success", "failure", "timeout", "error"] {
                probes.with_label_values(&[t.as_str(), r]);
            }
            duration.with_label_values(&[t.as_str()]);
        }
        for d in ["to_healthy", "to_unhealthy"] {
            flips.with_label_values(&[d]);
        }
        Ok(Self {
            probes,
            duration,
            flips,
            checked,
            in_flight,
            active,
        })
    }

    /// Counts one finished probe.
    pub fn probe(&self, kind: HealthCheckType, result: &str, seconds: f64) {
        self.probes
            .with_label_values(&[kind.as_str(), result])
            .inc();
        self.duration
            .with_label_values(&[kind.as_str()])
            .observe(seconds);
    }

    /// Probes finished so far with this type and result label.
    pub fn probe_count(&self, kind: HealthCheckType, result: &str) -> u64 {
        self.probes
            .with_label_values(&[kind.as_str(), result])
            .get()
    }

    /// Health flips so far towards `to`.
    pub fn flip_count(&self, to: HealthStatus) -> u64 {
        self.flips.with_label_values(&[direction(to)]).get()
    }

    /// Counts one health flip towards `to`.
    pub fn flip(&self, to: HealthStatus) {
        self.flips.with_label_values(&[direction(to)]).inc();
    }
}

fn direction(to: HealthStatus) -> &'static str {
    match to {
        HealthStatus::Healthy => "to_healthy",
        _ => "to_unhealthy",
    }
}
