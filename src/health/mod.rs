//! Active health checks: HTTP, HTTPS and TCP probes of every instance of
//! every service with a `HealthCheckConfig`, with Cloud Map's (Route 53's)
//! semantics.
//!
//! - Targets come from the registry index and follow it through
//!   [`Registry::subscribe`]: new instances are probed at once, removed ones
//!   dropped, changed addresses, ports and checks picked up.
//! - One scheduler ([`schedule::Scheduler`], a binary heap of due times) and
//!   a bounded number of probes in flight, spread with jitter over each
//!   interval: nothing runs per instance at rest.
//! - TCP passes when the connection opens; HTTP and HTTPS `GET` the
//!   resource path with a `Host` header and pass on 2xx/3xx (redirects are
//!   not followed; HTTPS accepts any certificate). A timeout is a failure.
//! - The first result of a new check applies at once; afterwards it takes
//!   `FailureThreshold` consecutive failures to fail and as many successes to
//!   pass again ([`threshold::Verdict`]). Verdict changes are written with
//!   [`Registry::apply_probe_verdicts`], batched: while one write is in
//!   progress the next verdicts queue up and go together in the next one.
//! - Probes run only while the `active` flag is true (the leader, with
//!   several replicas). The health flips they cause are logged, counted and
//!   sent to an optional channel (the controller's Events and status).
//!
//! The pure parts — targets, the threshold rule, the schedule — are apart
//! from the I/O ([`probe`]) and the loop that joins them ([`Prober::run`]).

pub mod metrics;
pub mod probe;
pub mod schedule;
pub mod target;
pub mod threshold;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Fuse, FusedFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

pub use metrics::HealthMetrics;
pub use probe::Outcome;
use schedule::{Scheduler, TargetId};
pub use target::Defaults;

use crate::crd::{DEFAULT_INTERVAL_SECONDS, DEFAULT_TIMEOUT_SECONDS};
use crate::registry::model::HealthCheckType;
use crate::registry::{HealthFlip, ProbeVerdict, Registry};

/// Errors of the health checks (all at start-up; probing itself only
/// produces outcomes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A metric could not be created or registered.
    #[error("health-check metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS client for HTTPS checks could not be configured.
    #[error("TLS client for HTTPS health checks: {0}")]
    Tls(#[from] rustls::Error),
}

/// Probe interval of checks that set none: the ServiceDiscovery default, so
/// API and CRD services behave alike (Route 53 offers 10 s and 30 s).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(DEFAULT_INTERVAL_SECONDS as u64);
/// Probe timeout of checks that set none (the ServiceDiscovery default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(DEFAULT_TIMEOUT_SECONDS as u64);
/// Probes in flight at most, by default. Each holds a socket; 512 probes
/// that all time out after 2 s still cover 256 instances a second.
pub const DEFAULT_CONCURRENCY: usize = 512;

/// Prober settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProberConfig {
    /// Interval and timeout of checks that set none.
    pub defaults: Defaults,
    /// Most probes in flight at once (at least 1).
    pub concurrency: usize,
}

impl Default for ProberConfig {
    fn default() -> Self {
        Self {
            defaults: Defaults {
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
            },
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// The active health checker of one registry.
#[derive(Debug)]
pub struct Prober {
    registry: Arc<Registry>,
    config: ProberConfig,
    /// Probe only this cluster's controller's instances (and the API's).
    cluster: Option<Arc<str>>,
    metrics: HealthMetrics,
    client: probe::Client,
}

/// A running probe: a spawned task (so probes use every worker thread),
/// aborted when dropped, that reports which target it was for.
struct InFlight {
    id: TargetId,
    kind: HealthCheckType,
    task: JoinHandle<(Outcome, Duration)>,
}

impl Future for InFlight {
    type Output = (TargetId, HealthCheckType, Outcome, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (id, kind) = (self.id, self.kind);
        Pin::new(&mut self.task).poll(cx).map(|r| match r {
            Ok((outcome, took)) => (id, kind, outcome, took),
            // Aborted or panicked: counted neither way, rescheduled.
            Err(_) => (id, kind, Outcome::LocalError, Duration::ZERO),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A verdict write in progress: the verdicts (to reset them if it fails)
/// and its result.
type Apply = Fuse<BoxFuture<'static, (Vec<ProbeVerdict>, bool)>>;

impl Prober {
    /// A prober over `registry`.
    pub fn new(
        registry: Arc<Registry>,
        config: ProberConfig,
        metrics: HealthMetrics,
    ) -> Result<Self, Error> {
        Ok(Self {
            registry,
            config: ProberConfig {
                concurrency: config.concurrency.max(1),
                ..config
            },
            cluster: None,
            metrics,
            client: probe::Client::new()?,
        })
    }

    /// Probes only the instances this cluster's controller owns and those
    /// registered through the API (see [`Scheduler::scoped_to`]).
    pub fn scoped_to(mut self, cluster: Option<&str>) -> Self {
        self.cluster = cluster.map(Arc::from);
        self
    }

    fn scheduler(&self) -> Scheduler {
        Scheduler::new(self.config.defaults).scoped_to(self.cluster.clone())
    }

    /// Probes until `shutdown` resolves, while `active` is true. Verdict
    /// changes go to the registry; the flips they cause are logged, counted
    /// and sent to `flips` (when given; a full channel delays the next
    /// verdict write, never the probes).
    pub async fn run(
        self,
        mut active: watch::Receiver<bool>,
        flips: Option<mpsc::Sender<Vec<HealthFlip>>>,
        shutdown: impl Future<Output = ()>,
    ) {
        let mut rng = SmallRng::from_os_rng();
        let mut changes = self.registry.subscribe();
        let mut changes_open = true;
        let mut active_open = true;
        let mut is_active = *active.borrow_and_update();
        let mut sched = self.scheduler();
        let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
        // Verdicts waiting for the next write; a newer verdict for the same
        // instance replaces a queued one.
        let mut pending: HashMap<(String, String), bool> = HashMap::new();
        let mut applying: Apply = Fuse::terminated();
        if is_active {
            self.start(&mut sched, &mut rng);
        }
        tokio::pin!(shutdown);
        loop {
            if is_active {
                let now = Instant::now();
                while in_flight.len() < self.config.concurrency {
                    let Some(launch) = sched.pop_due(now) else {
                        break;
                    };
                    let client = self.client.clone();
                    let kind = launch.endpoint.kind;
                    let task = tokio::spawn(async move {
                        client.probe(&launch.endpoint, launch.timeout).await
                    });
                    in_flight.push(InFlight {
                        id: launch.id,
                        kind,
                        task,
                    });
                }
                self.metrics.in_flight.set(in_flight.len() as i64);
            }
            if applying.is_terminated() && !pending.is_empty() {
                let batch = pending
                    .drain()
                    .map(|((service_id, instance_id), passing)| ProbeVerdict {
                        service_id,
                        instance_id,
                        passing,
                    })
                    .collect();
                applying = self.apply(batch, flips.clone());
            }
            let wake = if is_active && in_flight.len() < self.config.concurrency {
                sched.next_due()
            } else {
                None
            };
            let sleep = tokio::time::sleep_until(wake.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                tokio::time::Instant::from_std,
            ));
            tokio::select! {
                () = &mut shutdown => break,
                r = active.changed(), if active_open => {
                    if r.is_err() {
                        // The flag's owner is gone: keep the last value.
                        active_open = false;
                        continue;
                    }
                    let now_active = *active.borrow_and_update();
                    if now_active != is_active {
                        is_active = now_active;
                        in_flight = FuturesUnordered::new();
                        pending.clear();
                        sched = self.scheduler();
                        if is_active {
                            info!("active health checks start (this replica leads)");
                            self.start(&mut sched, &mut rng);
                        } else {
                            info!("active health checks stop (this replica no longer leads)");
                            self.metrics.checked.set(0);
                            self.metrics.in_flight.set(0);
                            self.metrics.active.set(0);
                        }
                    }
                }
                r = changes.changed(), if changes_open => {
                    if r.is_err() {
                        changes_open = false;
                    } else if is_active {
                        sched.sync(&self.registry.read(), Instant::now(), &mut rng);
                        self.metrics.checked.set(sched.len() as i64);
                    }
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    self.finished(&mut sched, &mut rng, &mut pending, done);
                    // Everything else already finished goes into the same batch.
                    while let Some(Some(done)) = in_flight.next().now_or_never() {
                        self.finished(&mut sched, &mut rng, &mut pending, done);
                    }
                    self.metrics.in_flight.set(in_flight.len() as i64);
                }
                (batch, ok) = &mut applying, if !applying.is_terminated() => {
                    if !ok && is_active {
                        sched.reset_verdicts(&self.registry.read(), &batch);
                    }
                }
                () = sleep, if wake.is_some() => {}
            }
        }
        self.metrics.in_flight.set(0);
        self.metrics.active.set(0);
    }

    /// Loads every target from the registry (verdicts as recorded).
    fn start(&self, sched: &mut Scheduler, rng: &mut SmallRng) {
        sched.sync(&self.registry.read(), Instant::now(), rng);
        self.metrics.checked.set(sched.len() as i64);
        self.metrics.active.set(1);
    }

    fn finished(
        &self,
        sched: &mut Scheduler,
        rng: &mut SmallRng,
        pending: &mut HashMap<(String, String), bool>,
        (id, kind, outcome, took): (TargetId, HealthCheckType, Outcome, Duration),
    ) {
        self.metrics
            .probe(kind, outcome.label(), took.as_secs_f64());
        if let Some(v) = sched.complete(id, outcome.passing(), Instant::now(), rng) {
            pending.insert((v.service_id, v.instance_id), v.passing);
        }
    }

    /// Writes a batch of verdicts off the async workers (the store syncs to
    /// disk), then logs, counts and publishes the flips.
    fn apply(
        &self,
        batch: Vec<ProbeVerdict>,
        flips_tx: Option<mpsc::Sender<Vec<HealthFlip>>>,
    ) -> Apply {
        let registry = self.registry.clone();
        let metrics = self.metrics.clone();
        async move {
            let reg = registry.clone();
            let kept = batch.clone();
            let result = tokio::task::spawn_blocking(move || {
                let r = reg.apply_probe_verdicts(&batch);
                (batch, r)
            })
            .await;
            let (batch, flips) = match result {
                Ok((batch, Ok(flips))) => (batch, flips),
                Ok((batch, Err(e))) => {
                    error!(error = %e, verdicts = batch.len(), "cannot record health-check verdicts");
                    return (batch, false);
                }
                Err(e) => {
                    error!(error = %e, "the health-check verdict write failed");
                    return (kept, false);
                }
            };
            if !flips.is_empty() {
                log_flips(&registry, &metrics, &flips);
                if let Some(tx) = flips_tx {
                    // A closed receiver only means nobody listens any more.
                    let _ = tx.send(flips).await;
                }
            }
            (batch, true)
        }
        .boxed()
        .fuse()
    }
}

/// Logs and counts health flips.
fn log_flips(registry: &Registry, metrics: &HealthMetrics, flips: &[HealthFlip]) {
    let index = registry.read();
    for f in flips {
        metrics.flip(f.to);
        let service = index
            .service(&f.service_id)
            .map_or("", |e| e.service.name.as_str());
        info!(
            service,
            service_id = %f.service_id,
            instance_id = %f.instance_id,
            from = f.from.as_str(),
            to = f.to.as_str(),
            "instance health changed by its active check"
        );
    }
}

/// Creates the prober's metrics in `prometheus` and spawns [`Prober::run`].
pub fn spawn(
    registry: Arc<Registry>,
    config: ProberConfig,
    cluster: Option<&str>,
    prometheus: &prometheus::Registry,
    active: watch::Receiver<bool>,
    flips: Option<mpsc::Sender<Vec<HealthFlip>>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<JoinHandle<()>, Error> {
    let metrics = HealthMetrics::register(prometheus)?;
    let prober = Prober::new(registry, config, metrics)?.scoped_to(cluster);
    Ok(tokio::spawn(prober.run(active, flips, shutdown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::{
        Attributes, HealthCheckConfig, HealthStatus, NamespaceType, Owner, TargetType,
    };
    use crate::registry::{CreateNamespace, CreateService, RegisterInstance};

    fn checked_service(reg: &Registry, threshold: i32) -> String {
        let op = reg
            .create_namespace(CreateNamespace {
                name: "loop.test".into(),
                kind: NamespaceType::Http,
                description: None,
                soa_ttl: None,
                vpc: None,
                creator_request_id: None,
                tags: vec![],
                owner: Owner::Api,
            })
            .unwrap();
        reg.create_service(CreateService {
            name: "svc".into(),
            namespace_id: op.targets[&TargetType::Namespace].clone(),
            description: None,
            http_only: true,
            dns_config: None,
            health_check_config: Some(HealthCheckConfig {
                kind: HealthCheckType::Tcp,
                resource_path: None,
                failure_threshold: Some(threshold),
                interval_seconds: None,
                timeout_seconds: None,
            }),
            health_check_custom_config: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap()
        .id
    }

    fn register(reg: &Registry, svc: &str, id: &str, port: u16) {
        let attributes: Attributes = [
            ("AWS_INSTANCE_IPV4".to_string(), "127.0.0.1".to_string()),
            ("AWS_INSTANCE_PORT".to_string(), port.to_string()),
        ]
        .into();
        reg.register_instance(RegisterInstance {
            service_id: svc.into(),
            instance_id: id.into(),
            attributes,
            creator_request_id: None,
            owner: Owner::Api,
        })
        .unwrap();
    }

    fn probes(m: &HealthMetrics) -> u64 {
        ["success", "failure", "timeout", "error"]
            .iter()
            .map(|r| m.probe_count(HealthCheckType::Tcp, r))
            .sum()
    }

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn probes_only_while_active_follows_the_registry_and_publishes_flips() {
        let registry = Arc::new(Registry::in_memory());
        let svc = checked_service(&registry, 1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        register(&registry, &svc, "up", port);

        let metrics = HealthMetrics::unregistered().unwrap();
        let config = ProberConfig {
            defaults: Defaults {
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(200),
            },
            concurrency: 4,
        };
        let prober = Prober::new(registry.clone(), config, metrics.clone()).unwrap();
        let (active_tx, active) = watch::channel(false);
        let (flips_tx, mut flips_rx) = mpsc::channel(16);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(prober.run(active, Some(flips_tx), async {
            let _ = stop_rx.await;
        }));

        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(probes(&metrics), 0, "inactive: no probes");
        assert_eq!(metrics.active.get(), 0);

        active_tx.send(true).unwrap();
        eventually("the first probe", || {
            registry.read().instance(&svc, "up").unwrap().probe == Some(true)
        })
        .await;
        assert_eq!(metrics.checked.get(), 1);
        assert_eq!(metrics.active.get(), 1);

        // A new instance nobody listens on: probed at once, fails, and the
        // flip is published.
        register(&registry, &svc, "down", 1);
        let flips = tokio::time::timeout(Duration::from_secs(5), flips_rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(flips.len(), 1);
        assert_eq!(flips[0].instance_id, "down");
        assert_eq!(
            (flips[0].from, flips[0].to),
            (HealthStatus::Healthy, HealthStatus::Unhealthy)
        );
        assert_eq!(metrics.checked.get(), 2);
        assert_eq!(metrics.flip_count(HealthStatus::Unhealthy), 1);

        // Removed instances stop being probed.
        registry
            .deregister_instance(&svc, "down", &Owner::Api)
            .unwrap();
        eventually("the removal", || metrics.checked.get() == 1).await;

        // Losing leadership stops probing.
        active_tx.send(false).unwrap();
        eventually("deactivation", || metrics.active.get() == 0).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = probes(&metrics);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(probes(&metrics), before, "inactive again: no probes");

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap()
            .unwrap();
        drop(listener);
    }
}
