//! The controller's Prometheus metrics.

/// Controller metrics, registered in the process-wide Prometheus registry.
#[derive(Clone)]
pub struct Metrics {
    pub(super) reconciles: prometheus::IntCounterVec,
    pub(super) duration: prometheus::HistogramVec,
    pub(super) watch_events: prometheus::IntCounterVec,
    pub(super) event_to_registry: prometheus::Histogram,
    pub(super) leader: prometheus::IntGauge,
}

impl Metrics {
    /// Creates and registers the controller's metrics.
    pub fn register(prom: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let reconciles = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "waymark_controller_reconciles_total",
                "Reconciliations by kind and result (ok or error).",
            ),
            &["kind", "result"],
        )?;
        let duration = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "waymark_controller_reconcile_duration_seconds",
                "Time to reconcile one object, including the registry write.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.5, 12)?),
            &["kind"],
        )?;
        let watch_events = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "waymark_controller_watch_events_total",
                "Watch events received by kind.",
            ),
            &["kind"],
        )?;
        // Measured from the moment the controller receives a pod change to
        // the moment the registry (and so the API and DNS) reflects it. The
        // pod's own Ready transition time has only one-second resolution in
        // Kubernetes, too coarse for a millisecond-scale path.
        let event_to_registry = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "waymark_controller_event_to_registry_seconds",
                "Time from receiving a pod change to the registry reflecting it.",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.5, 12)?),
        )?;
        let leader = prometheus::IntGauge::new(
            "waymark_controller_leader",
            "1 while this replica leads (reconciles, writes status and probes), 0 on a standby.",
        )?;
        prom.register(Box::new(leader.clone()))?;
        prom.register(Box::new(reconciles.clone()))?;
        prom.register(Box::new(duration.clone()))?;
        prom.register(Box::new(watch_events.clone()))?;
        prom.register(Box::new(event_to_registry.clone()))?;
        Ok(Self {
            reconciles,
            duration,
            watch_events,
            event_to_registry,
            leader,
        })
    }
}
