//! The controller: watches Pods, Services, Nodes and the Waymark custom
//! resources, keeps the registry equal to what runs in the cluster, and
//! reports what it did on the custom resources.
//!
//! Shape (as linkerd's policy controller): watch streams feed one loop that
//! owns a slim copy of the cluster ([`cluster::Cluster`]); each event marks
//! the affected ServiceDiscoveries and Namespaces dirty; after each batch of
//! events the loop turns every dirty object into a plan ([`desired::plan`],
//! pure) and applies it to the registry in one atomic write per service.
//! Status patches and Events go to a separate writer task, so a slow API
//! server never delays registration.
//!
//! Safety at restart: nothing is reconciled — and no stale instance is
//! removed — until every watch has listed its objects.

pub mod cluster;
pub mod desired;
pub mod intern;
pub mod lease;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace as KubeNamespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use self::cluster::{Cluster, Key, NodeInfo, PodInfo, ServiceInfo};
use self::desired::{DesiredService, Plan, owner_object};
use self::intern::Interner;
use crate::crd::{
    InstanceCounts, Namespace as WaymarkNamespace, NamespaceStatus, ServiceDiscovery,
    ServiceDiscoveryStatus,
};
use crate::registry::model::{HealthCheckCustomConfig, HealthStatus, NamespaceType, Owner};
use crate::registry::{
    self, CreateNamespace, CreateService, Registry, UpdateNamespace, UpdateService,
};

/// The field manager of every write the controller makes.
pub const MANAGER: &str = "waymark-controller";
/// The finalizer that holds a Namespace while ServiceDiscoveries use it.
pub const NAMESPACE_FINALIZER: &str = "waymark.dev/namespace-in-use";

/// Errors of the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CRDs are not installed.
    #[error(
        "the waymark.dev CRDs are not installed in this cluster ({0}); install them with \
         `kubectl apply -f crds/` or `waymark crds | kubectl apply -f -`, then start again"
    )]
    CrdsMissing(#[source] kube::Error),
    /// The cluster id could not be determined.
    #[error(
        "cannot determine the cluster id from the kube-system namespace ({0}); set --cluster-id"
    )]
    ClusterId(#[source] kube::Error),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// A watch stream ended unexpectedly.
    #[error("the {0} watch ended unexpectedly")]
    WatchEnded(&'static str),
}

/// Controller settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identifies this cluster in ownership markers; defaults to the UID of
    /// the `kube-system` namespace.
    pub cluster_id: Option<String>,
    /// How often every object is reconciled again to repair drift.
    pub resync: Duration,
    /// Name reported as the source of Events (e.g. the pod name).
    pub instance: Option<String>,
    /// Kubernetes namespaces whose Pods, Services and ServiceDiscoveries are
    /// watched; empty means all.
    pub watch_namespaces: Vec<String>,
    /// Label selector for the Waymark Namespaces and ServiceDiscoveries this
    /// instance manages (several installations can share a cluster).
    pub selector: Option<String>,
    /// Leader election; `None` makes this replica always the writer.
    pub lease: Option<lease::LeaseConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cluster_id: None,
            resync: Duration::from_secs(300),
            instance: None,
            watch_namespaces: Vec::new(),
            selector: None,
            lease: None,
        }
    }
}

/// Controller metrics, registered in the process-wide Prometheus registry.
#[derive(Clone)]
pub struct Metrics {
    reconciles: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
    watch_events: prometheus::IntCounterVec,
    event_to_registry: prometheus::Histogram,
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
        prom.register(Box::new(reconciles.clone()))?;
        prom.register(Box::new(duration.clone()))?;
        prom.register(Box::new(watch_events.clone()))?;
        prom.register(Box::new(event_to_registry.clone()))?;
        Ok(Self {
            reconciles,
            duration,
            watch_events,
            event_to_registry,
        })
    }
}

/// Checks that the CRDs are installed (so `waymark run` fails early with
/// instructions) and returns the cluster id to use.
pub async fn preflight(client: &Client, config: &Config) -> Result<String, Error> {
    Api::<WaymarkNamespace>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdsMissing)?;
    // Listed where this instance watches, so namespace-scoped RBAC suffices.
    let sds = match config.watch_namespaces.first() {
        Some(ns) => Api::<ServiceDiscovery>::namespaced(client.clone(), ns),
        None => Api::<ServiceDiscovery>::all(client.clone()),
    };
    sds.list(&ListParams::default().limit(1))
        .await
        .map_err(Error::CrdsMissing)?;
    if let Some(id) = &config.cluster_id {
        return Ok(id.clone());
    }
    let ns = Api::<KubeNamespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(Error::ClusterId)?;
    Ok(ns.uid().unwrap_or_default())
}

/// The Kubernetes namespace a watch is limited to (`None`: all).
type Scope = Option<String>;

/// One watch event, tagged with its kind and its watch's scope. Pods and
/// Nodes arrive already reduced to what the controller keeps, so a backlog
/// in the channel holds those and not whole objects.
// Each message is moved once through the channel; boxing the large variants
// would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Pod(Scope, Event<PodInfo>),
    Service(Scope, Event<Service>),
    Node(Scope, Event<(String, NodeInfo)>),
    Discovery(Scope, Event<ServiceDiscovery>),
    Namespace(Scope, Event<WaymarkNamespace>),
    WatchError(&'static str, String),
}

/// An event with its object replaced by `slim(object)`.
fn slim_event<K, T>(ev: Event<K>, mut slim: impl FnMut(K) -> T) -> Event<T> {
    match ev {
        Event::Apply(k) => Event::Apply(slim(k)),
        Event::Delete(k) => Event::Delete(slim(k)),
        Event::Init => Event::Init,
        Event::InitApply(k) => Event::InitApply(slim(k)),
        Event::InitDone => Event::InitDone,
    }
}

/// Spawns a watch that forwards its events into the loop, each object first
/// reduced by `slim` (on the watch's task, off the loop).
fn spawn_watch<K, T>(
    api: Api<K>,
    config: watcher::Config,
    name: &'static str,
    scope: Scope,
    tx: mpsc::Sender<Msg>,
    mut slim: impl FnMut(K) -> T + Send + 'static,
    wrap: fn(Scope, Event<T>) -> Msg,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    T: 'static,
{
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(item) = stream.next().await {
            let msg = match item {
                Ok(ev) => wrap(scope.clone(), slim_event(ev, &mut slim)),
                Err(e) => Msg::WatchError(name, e.to_string()),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    })
}

/// A write to the Kubernetes API, done by the writer task.
#[allow(clippy::large_enum_variant)]
enum Write {
    SdStatus {
        key: Key,
        status: serde_json::Value,
    },
    NsStatus {
        name: String,
        status: serde_json::Value,
    },
    NsFinalizers {
        name: String,
        finalizers: Vec<String>,
    },
    PodGate {
        key: Key,
        status: bool,
    },
    ApplySd {
        key: Key,
        object: serde_json::Value,
    },
    DeleteSd {
        key: Key,
        uid: String,
    },
    Event {
        reference: k8s_openapi::api::core::v1::ObjectReference,
        event: KubeEvent,
    },
}

/// Applies status patches, finalizer changes and Events with a timeout each,
/// but only while this replica leads: a standby drops its writes (and
/// rewrites everything when it takes over).
async fn writer(
    client: Client,
    reporter: Reporter,
    leader: tokio::sync::watch::Receiver<bool>,
    mut rx: mpsc::Receiver<Write>,
) {
    let recorder = Recorder::new(client.clone(), reporter);
    let params = PatchParams::apply(MANAGER).force();
    let timeout = Duration::from_secs(10);
    while let Some(w) = rx.recv().await {
        if !*leader.borrow() {
            continue;
        }
        let result = match w {
            Write::SdStatus { key, status } => {
                let api = Api::<ServiceDiscovery>::namespaced(client.clone(), &key.0);
                let patch = json!({"apiVersion": "waymark.dev/v1alpha1", "kind": "ServiceDiscovery", "status": status});
                tokio::time::timeout(
                    timeout,
                    api.patch_status(&key.1, &params, &Patch::Apply(patch)),
                )
                .await
                .map(|r| r.map(|_| ()))
            }
            Write::NsStatus { name, status } => {
                let api = Api::<WaymarkNamespace>::all(client.clone());
                let patch = json!({"apiVersion": "waymark.dev/v1alpha1", "kind": "Namespace", "status": status});
                tokio::time::timeout(
                    timeout,
                    api.patch_status(&name, &params, &Patch::Apply(patch)),
                )
                .await
                .map(|r| r.map(|_| ()))
            }
            Write::NsFinalizers { name, finalizers } => {
                let api = Api::<WaymarkNamespace>::all(client.clone());
                // A merge patch of the whole list: finalizers are a plain list
                // that other actors may also edit, so SSA ownership does not fit.
                let patch = json!({"metadata": {"finalizers": finalizers}});
                tokio::time::timeout(
                    timeout,
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)),
                )
                .await
                .map(|r| r.map(|_| ()))
            }
            Write::PodGate { key, status } => {
                let api = Api::<Pod>::namespaced(client.clone(), &key.0);
                // A strategic merge patch merges pod conditions by type.
                let patch = json!({"status": {"conditions": [{
                    "type": cluster::REGISTERED_GATE,
                    "status": if status { "True" } else { "False" },
                    "reason": if status { "Registered" } else { "NotRegistered" },
                    "message": if status { "registered and healthy in the Waymark registry" } else { "not yet registered and healthy in the Waymark registry" },
                    "lastTransitionTime": Time(k8s_openapi::jiff::Timestamp::now()),
                }]}});
                tokio::time::timeout(
                    timeout,
                    api.patch_status(&key.1, &PatchParams::default(), &Patch::Strategic(patch)),
                )
                .await
                .map(|r| r.map(|_| ()))
            }
            Write::ApplySd { key, object } => {
                let api = Api::<ServiceDiscovery>::namespaced(client.clone(), &key.0);
                tokio::time::timeout(timeout, api.patch(&key.1, &params, &Patch::Apply(object)))
                    .await
                    .map(|r| r.map(|_| ()))
            }
            Write::DeleteSd { key, uid } => {
                let api = Api::<ServiceDiscovery>::namespaced(client.clone(), &key.0);
                // The precondition makes sure only the object we created goes.
                let dp = kube::api::DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                tokio::time::timeout(timeout, api.delete(&key.1, &dp))
                    .await
                    .map(|r| r.map(|_| ()))
            }
            Write::Event { reference, event } => {
                tokio::time::timeout(timeout, recorder.publish(&event, &reference)).await
            }
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(kube::Error::Api(e))) if e.code == 404 => {
                debug!("object gone before the write: {}", e.message)
            }
            Ok(Err(e)) => warn!(error = %e, "Kubernetes write failed"),
            Err(_) => warn!("Kubernetes write timed out"),
        }
    }
}

/// Which watches have completed their initial list.
#[derive(Debug, Default)]
struct Synced {
    expected: BTreeSet<(&'static str, Scope)>,
    done: BTreeSet<(&'static str, Scope)>,
}

impl Synced {
    fn mark(&mut self, kind: &'static str, scope: &Scope) {
        self.done.insert((kind, scope.clone()));
    }

    fn all(&self) -> bool {
        self.expected.is_subset(&self.done)
    }
}

/// The controller loop's state.
struct Controller {
    registry: Arc<Registry>,
    cluster_id: String,
    cluster: Cluster,
    synced: Synced,
    // Keys seen since a watch's Init, to drop what disappeared at InitDone.
    relist: HashMap<(&'static str, Scope), BTreeSet<Key>>,
    dirty_sds: BTreeSet<Key>,
    dirty_namespaces: BTreeSet<String>,
    dirty_services: BTreeSet<Key>,
    deleted_sds: Vec<Key>,
    deadlines: BTreeMap<i64, BTreeSet<Key>>,
    sent_sd_status: HashMap<Key, serde_json::Value>,
    sent_ns_status: HashMap<String, serde_json::Value>,
    gc_done: bool,
    writes: mpsc::Sender<Write>,
    metrics: Metrics,
    // When the oldest unreconciled pod change of each dirty SD arrived.
    pending_since: HashMap<Key, std::time::Instant>,
    // Pods that changed since the last pass, by the SDs selecting them: with
    // a cached plan these are applied one pod at a time.
    dirty_pods: HashMap<Key, BTreeSet<String>>,
    // The last full plan of each synced SD, kept up to date pod by pod.
    sd_cache: HashMap<Key, SdCache>,
    // When each SD's status was last written, and deferred status refreshes:
    // counts alone are written at most once per STATUS_INTERVAL_MS.
    status_sent_at: HashMap<Key, i64>,
    status_due: BTreeMap<i64, BTreeSet<Key>>,
}

/// Counts-only status changes of one ServiceDiscovery are written at most
/// this often, so a rollout of a thousand pods is a handful of status
/// patches rather than thousands; condition changes go out at once.
const STATUS_INTERVAL_MS: i64 = 1000;

/// What the last full reconcile of a ServiceDiscovery found, so pod changes
/// can be applied one pod at a time without planning every pod again.
struct SdCache {
    service_id: String,
    object: String,
    dns_name: Option<String>,
    service_problems: Vec<desired::Problem>,
    pods: BTreeMap<String, desired::PodState>,
}

/// A status without its instance counts, to tell counts-only changes apart.
fn without_counts(status: &serde_json::Value) -> serde_json::Value {
    let mut v = status.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("instances");
    }
    v
}

/// The instance counts reported in a ServiceDiscovery's status.
fn instance_counts(index: &registry::index::Index, service_id: &str) -> Option<InstanceCounts> {
    index.service(service_id).map(|e| {
        let healthy = e
            .instances
            .values()
            .filter(|i| {
                matches!(
                    e.reported_health(i),
                    HealthStatus::Healthy | HealthStatus::Unknown
                )
            })
            .count() as u32;
        InstanceCounts {
            total: e.instances.len() as u32,
            healthy,
            unhealthy: e.instances.len() as u32 - healthy,
        }
    })
}

/// What connects the controller to the rest of the process.
pub struct Links {
    /// Called with `true` once every watch has synced (the `/readyz` flag).
    pub ready: Box<dyn Fn(bool) + Send>,
    /// Where the controller publishes whether this replica leads (the
    /// prober only probes on the leader).
    pub leader: tokio::sync::watch::Sender<bool>,
    /// Health flips from the active checks, turned into Events and status.
    pub flips: mpsc::Receiver<Vec<registry::HealthFlip>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    registry: Arc<Registry>,
    config: Config,
    cluster_id: String,
    metrics: Metrics,
    links: Links,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let Links {
        ready,
        leader: leader_tx,
        flips: mut flips_rx,
    } = links;
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let all = watcher::Config::default();
    let selected = match &config.selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    };
    let mut watches = vec![
        spawn_watch(
            Api::<Node>::all(client.clone()),
            all.clone(),
            "Node",
            None,
            tx.clone(),
            |n: Node| (n.name_any(), NodeInfo::from_node(&n)),
            Msg::Node,
        ),
        spawn_watch(
            Api::<WaymarkNamespace>::all(client.clone()),
            selected.clone(),
            "Namespace",
            None,
            tx.clone(),
            std::convert::identity,
            Msg::Namespace,
        ),
    ];
    let mut expected: BTreeSet<(&'static str, Scope)> =
        [("Node", None), ("Namespace", None)].into();
    // One watch per kind and namespace; the loop treats a kind as synced once
    // every one of its watches has listed.
    let scopes: Vec<Option<&str>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config
            .watch_namespaces
            .iter()
            .map(|n| Some(n.as_str()))
            .collect()
    };
    for ns in &scopes {
        let api = |c: &Client| match ns {
            Some(ns) => (
                Api::<Pod>::namespaced(c.clone(), ns),
                Api::<Service>::namespaced(c.clone(), ns),
                Api::<ServiceDiscovery>::namespaced(c.clone(), ns),
            ),
            None => (
                Api::all(c.clone()),
                Api::all(c.clone()),
                Api::all(c.clone()),
            ),
        };
        let (pods, services, sds) = api(&client);
        let scope: Scope = ns.map(str::to_string);
        watches.push(spawn_watch(
            pods,
            all.clone(),
            "Pod",
            scope.clone(),
            tx.clone(),
            {
                // Shares labels, ports and names among this watch's pods.
                let mut interner = Interner::default();
                move |p: Pod| PodInfo::from_pod(&p, &mut interner)
            },
            Msg::Pod,
        ));
        watches.push(spawn_watch(
            services,
            all.clone(),
            "Service",
            scope.clone(),
            tx.clone(),
            std::convert::identity,
            Msg::Service,
        ));
        watches.push(spawn_watch(
            sds,
            selected.clone(),
            "ServiceDiscovery",
            scope.clone(),
            tx.clone(),
            std::convert::identity,
            Msg::Discovery,
        ));
        for kind in ["Pod", "Service", "ServiceDiscovery"] {
            expected.insert((kind, scope.clone()));
        }
    }
    drop(tx);
    leader_tx.send_replace(config.lease.is_none());
    let mut leader_rx = leader_tx.subscribe();
    // Without election the sender stays here, so receivers never see it closed.
    let mut _always_leader = None;
    let lease_task = match config.lease.clone() {
        Some(cfg) => Some(tokio::spawn(lease::run(client.clone(), cfg, leader_tx))),
        None => {
            _always_leader = Some(leader_tx);
            None
        }
    };
    let (wtx, wrx) = mpsc::channel(4096);
    let reporter = Reporter {
        controller: MANAGER.into(),
        instance: config.instance.clone(),
    };
    let writer = tokio::spawn(writer(client, reporter, leader_rx.clone(), wrx));
    let mut ctl = Controller {
        registry,
        cluster_id,
        cluster: Cluster::default(),
        synced: Synced {
            expected,
            done: BTreeSet::new(),
        },
        relist: HashMap::new(),
        dirty_sds: BTreeSet::new(),
        dirty_namespaces: BTreeSet::new(),
        dirty_services: BTreeSet::new(),
        deleted_sds: Vec::new(),
        deadlines: BTreeMap::new(),
        sent_sd_status: HashMap::new(),
        sent_ns_status: HashMap::new(),
        gc_done: false,
        writes: wtx,
        metrics,
        pending_since: HashMap::new(),
        dirty_pods: HashMap::new(),
        sd_cache: HashMap::new(),
        status_sent_at: HashMap::new(),
        status_due: BTreeMap::new(),
    };
    let mut resync = tokio::time::interval(config.resync);
    resync.tick().await;
    tokio::pin!(shutdown);
    let result = loop {
        let next_deadline = [
            ctl.deadlines.keys().next().copied(),
            ctl.status_due.keys().next().copied(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = async {
            match next_deadline {
                Some(at) => {
                    let wait = (at - registry::now_millis()).max(0) as u64;
                    tokio::time::sleep(Duration::from_millis(wait)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            msg = rx.recv() => {
                let Some(msg) = msg else { break Err(Error::WatchEnded("all")) };
                ctl.handle(msg);
                // Drain what is already queued so a burst is reconciled once.
                while let Ok(msg) = rx.try_recv() {
                    ctl.handle(msg);
                }
            }
            () = sleep => {
                let now = registry::now_millis();
                let due: Vec<i64> = ctl.deadlines.range(..=now).map(|(k, _)| *k).collect();
                for k in due {
                    if let Some(keys) = ctl.deadlines.remove(&k) {
                        ctl.dirty_sds.extend(keys);
                    }
                }
                let due: Vec<i64> = ctl.status_due.range(..=now).map(|(k, _)| *k).collect();
                for k in due {
                    for key in ctl.status_due.remove(&k).unwrap_or_default() {
                        ctl.dirty_pods.entry(key).or_default();
                    }
                }
            }
            Some(flips) = flips_rx.recv() => {
                ctl.on_health_flips(flips);
                while let Ok(more) = flips_rx.try_recv() {
                    ctl.on_health_flips(more);
                }
            }
            Ok(()) = leader_rx.changed() => {
                if *leader_rx.borrow_and_update() {
                    // Taking over: everything we dropped as a standby is
                    // written again.
                    ctl.sent_sd_status.clear();
                    ctl.sent_ns_status.clear();
                    ctl.dirty_sds.extend(ctl.cluster.discoveries.keys().cloned());
                    ctl.dirty_namespaces.extend(ctl.cluster.namespaces.keys().cloned());
                    let annotated: Vec<Key> = ctl
                        .cluster
                        .services
                        .iter()
                        .filter(|(_, s)| !s.annotations.is_empty())
                        .map(|(k, _)| k.clone())
                        .collect();
                    ctl.dirty_services.extend(annotated);
                }
            }
            _ = resync.tick() => {
                ctl.dirty_sds.extend(ctl.cluster.discoveries.keys().cloned());
                ctl.dirty_namespaces.extend(ctl.cluster.namespaces.keys().cloned());
                ctl.gc_done = false;
            }
        }
        if ctl.synced.all() {
            tokio::task::block_in_place(|| ctl.reconcile_dirty());
            ready(true);
        }
    };
    for w in watches {
        w.abort();
    }
    if let Some(t) = lease_task {
        t.abort();
    }
    drop(ctl);
    let _ = writer.await;
    result
}

impl Controller {
    fn owner(&self, object: String) -> Owner {
        Owner::Controller {
            cluster: self.cluster_id.clone(),
            object,
        }
    }

    /// Tracks keys listed since a watch's `Init`; at `InitDone` returns the
    /// keys of that watch's scope that were not listed again (deleted while
    /// we were not watching) and marks the watch synced.
    fn relist(&mut self, kind: &'static str, scope: &Scope, phase: Phase) -> Vec<Key> {
        let id = (kind, scope.clone());
        match phase {
            Phase::Init => {
                self.relist.insert(id, BTreeSet::new());
                Vec::new()
            }
            Phase::Item(key) => {
                if let Some(set) = self.relist.get_mut(&id) {
                    set.insert(key);
                }
                Vec::new()
            }
            Phase::Done(existing) => {
                let seen = self.relist.remove(&id).unwrap_or_default();
                self.synced.mark(kind, scope);
                existing
                    .into_iter()
                    .filter(|k| !seen.contains(k))
                    .filter(|(ns, _)| scope.as_ref().is_none_or(|s| s == ns))
                    .collect()
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        let kind = match &msg {
            Msg::Pod(..) => "Pod",
            Msg::Service(..) => "Service",
            Msg::Node(..) => "Node",
            Msg::Discovery(..) => "ServiceDiscovery",
            Msg::Namespace(..) => "Namespace",
            Msg::WatchError(..) => "error",
        };
        self.metrics.watch_events.with_label_values(&[kind]).inc();
        match msg {
            Msg::WatchError(kind, e) => warn!(kind, error = %e, "watch error (retrying)"),
            Msg::Pod(scope, ev) => self.on_pod(&scope, ev),
            Msg::Service(scope, ev) => self.on_service(&scope, ev),
            Msg::Node(scope, ev) => self.on_node(&scope, ev),
            Msg::Discovery(scope, ev) => self.on_discovery(&scope, ev),
            Msg::Namespace(scope, ev) => self.on_namespace(&scope, ev),
        }
    }

    fn pod_changed(&mut self, key: Key, new: Option<PodInfo>) {
        let pods = self.cluster.pods.entry(key.0.clone()).or_default();
        let old = match &new {
            Some(info) => pods.insert(key.1.clone(), info.clone()),
            None => pods.remove(&key.1),
        };
        if old == new {
            return;
        }
        let mut dirty = BTreeSet::new();
        for info in [old.as_ref(), new.as_ref()].into_iter().flatten() {
            dirty.extend(self.cluster.discoveries_selecting(&key.0, &info.labels));
        }
        let now = std::time::Instant::now();
        for k in dirty {
            self.pending_since.entry(k.clone()).or_insert(now);
            self.dirty_pods.entry(k).or_default().insert(key.1.clone());
        }
    }

    fn on_pod(&mut self, scope: &Scope, ev: Event<PodInfo>) {
        let key = |p: &PodInfo| (p.namespace.to_string(), p.name.clone());
        match ev {
            Event::Init => {
                self.relist("Pod", scope, Phase::Init);
            }
            Event::InitApply(p) | Event::Apply(p) => {
                let k = key(&p);
                self.relist("Pod", scope, Phase::Item(k.clone()));
                self.pod_changed(k, Some(p));
            }
            Event::Delete(p) => self.pod_changed(key(&p), None),
            Event::InitDone => {
                let existing: Vec<Key> = self
                    .cluster
                    .pods
                    .iter()
                    .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
                    .collect();
                for k in self.relist("Pod", scope, Phase::Done(existing)) {
                    self.pod_changed(k, None);
                }
            }
        }
    }

    fn service_changed(&mut self, key: Key, new: Option<ServiceInfo>) {
        let old = match &new {
            Some(info) => self.cluster.services.insert(key.clone(), info.clone()),
            None => self.cluster.services.remove(&key),
        };
        if old != new {
            let dirty: Vec<Key> = self
                .cluster
                .discoveries_referencing(&key.0, &key.1)
                .collect();
            self.dirty_sds.extend(dirty);
            if [&old, &new]
                .iter()
                .any(|s| s.as_ref().is_some_and(|s| !s.annotations.is_empty()))
            {
                self.dirty_services.insert(key);
            }
        }
    }

    fn on_service(&mut self, scope: &Scope, ev: Event<Service>) {
        let key = |s: &Service| (s.namespace().unwrap_or_default(), s.name_any());
        match ev {
            Event::Init => {
                self.relist("Service", scope, Phase::Init);
            }
            Event::InitApply(s) | Event::Apply(s) => {
                let k = key(&s);
                self.relist("Service", scope, Phase::Item(k.clone()));
                self.service_changed(k, Some(ServiceInfo::from_service(&s)));
            }
            Event::Delete(s) => self.service_changed(key(&s), None),
            Event::InitDone => {
                let existing: Vec<Key> = self.cluster.services.keys().cloned().collect();
                for k in self.relist("Service", scope, Phase::Done(existing)) {
                    self.service_changed(k, None);
                }
            }
        }
    }

    fn node_changed(&mut self, name: String, new: Option<NodeInfo>) {
        let old = match &new {
            Some(info) => self.cluster.nodes.insert(name.clone(), info.clone()),
            None => self.cluster.nodes.remove(&name),
        };
        // Node objects change constantly (heartbeats); only topology matters.
        if old != new {
            let affected: BTreeSet<String> = self
                .cluster
                .pods
                .iter()
                .filter(|(_, pods)| {
                    pods.values()
                        .any(|p| p.node.as_deref() == Some(name.as_str()))
                })
                .map(|(ns, _)| ns.clone())
                .collect();
            let dirty: Vec<Key> = self
                .cluster
                .discoveries
                .keys()
                .filter(|(ns, _)| affected.contains(ns))
                .cloned()
                .collect();
            self.dirty_sds.extend(dirty);
        }
    }

    fn on_node(&mut self, scope: &Scope, ev: Event<(String, NodeInfo)>) {
        match ev {
            Event::Init => {
                self.relist("Node", scope, Phase::Init);
            }
            Event::InitApply((name, info)) | Event::Apply((name, info)) => {
                self.relist("Node", scope, Phase::Item((String::new(), name.clone())));
                self.node_changed(name, Some(info));
            }
            Event::Delete((name, _)) => self.node_changed(name, None),
            Event::InitDone => {
                let existing: Vec<Key> = self
                    .cluster
                    .nodes
                    .keys()
                    .map(|n| (String::new(), n.clone()))
                    .collect();
                for (_, n) in self.relist("Node", scope, Phase::Done(existing)) {
                    self.node_changed(n, None);
                }
            }
        }
    }

    fn discovery_changed(&mut self, key: Key, new: Option<ServiceDiscovery>) {
        let old = match &new {
            Some(sd) => self.cluster.discoveries.insert(key.clone(), sd.clone()),
            None => self.cluster.discoveries.remove(&key),
        };
        match (&old, &new) {
            // Our own status writes come back as events: only spec changes matter.
            (Some(o), Some(n))
                if o.metadata.generation == n.metadata.generation && o.spec == n.spec => {}
            (_, Some(_)) => {
                self.dirty_sds.insert(key);
            }
            (Some(_), None) => {
                self.deleted_sds.push(key.clone());
                self.sent_sd_status.remove(&key);
                self.sd_cache.remove(&key);
                self.status_sent_at.remove(&key);
            }
            (None, None) => {}
        }
        // The Namespace's service count and deletion hold only change when
        // an SD appears, goes, or points elsewhere (not on status updates).
        let old_ns = old.as_ref().map(|sd| &sd.spec.namespace_ref.name);
        let new_ns = new.as_ref().map(|sd| &sd.spec.namespace_ref.name);
        if old_ns != new_ns {
            for ns in [old_ns, new_ns].into_iter().flatten() {
                self.dirty_namespaces.insert(ns.clone());
            }
        }
    }

    fn on_discovery(&mut self, scope: &Scope, ev: Event<ServiceDiscovery>) {
        let key = |s: &ServiceDiscovery| (s.namespace().unwrap_or_default(), s.name_any());
        match ev {
            Event::Init => {
                self.relist("ServiceDiscovery", scope, Phase::Init);
            }
            Event::InitApply(s) | Event::Apply(s) => {
                let k = key(&s);
                self.relist("ServiceDiscovery", scope, Phase::Item(k.clone()));
                self.discovery_changed(k, Some(s));
            }
            Event::Delete(s) => self.discovery_changed(key(&s), None),
            Event::InitDone => {
                let existing: Vec<Key> = self.cluster.discoveries.keys().cloned().collect();
                for k in self.relist("ServiceDiscovery", scope, Phase::Done(existing)) {
                    self.discovery_changed(k, None);
                }
            }
        }
    }

    fn namespace_changed(&mut self, name: String, new: Option<WaymarkNamespace>) {
        let old = match &new {
            Some(ns) => self.cluster.namespaces.insert(name.clone(), ns.clone()),
            None => self.cluster.namespaces.remove(&name),
        };
        let same = match (&old, &new) {
            (Some(o), Some(n)) => {
                o.metadata.generation == n.metadata.generation
                    && o.metadata.deletion_timestamp == n.metadata.deletion_timestamp
                    && o.metadata.finalizers == n.metadata.finalizers
            }
            _ => false,
        };
        if !same {
            self.dirty_namespaces.insert(name.clone());
            let dirty: Vec<Key> = self
                .cluster
                .discoveries
                .iter()
                .filter(|(_, sd)| sd.spec.namespace_ref.name == name)
                .map(|(k, _)| k.clone())
                .collect();
            self.dirty_sds.extend(dirty);
        }
        if new.is_none() {
            self.sent_ns_status.remove(&name);
        }
    }

    fn on_namespace(&mut self, scope: &Scope, ev: Event<WaymarkNamespace>) {
        match ev {
            Event::Init => {
                self.relist("Namespace", scope, Phase::Init);
            }
            Event::InitApply(n) | Event::Apply(n) => {
                self.relist(
                    "Namespace",
                    scope,
                    Phase::Item((String::new(), n.name_any())),
                );
                self.namespace_changed(n.name_any(), Some(n));
            }
            Event::Delete(n) => self.namespace_changed(n.name_any(), None),
            Event::InitDone => {
                let existing: Vec<Key> = self
                    .cluster
                    .namespaces
                    .keys()
                    .map(|n| (String::new(), n.clone()))
                    .collect();
                for (_, n) in self.relist("Namespace", scope, Phase::Done(existing)) {
                    self.namespace_changed(n, None);
                }
            }
        }
    }

    /// Active-check health flips of this controller's instances: an Event
    /// on the ServiceDiscovery (one per SD and direction per batch, naming
    /// up to five instances) and a status and readiness-gate refresh.
    fn on_health_flips(&mut self, flips: Vec<registry::HealthFlip>) {
        let mut by_sd: BTreeMap<(Key, bool), Vec<String>> = BTreeMap::new();
        for f in flips {
            let Owner::Controller { cluster, object } = &f.owner else {
                continue;
            };
            let Some((ns, name)) = object
                .strip_prefix("ServiceDiscovery ")
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            if *cluster != self.cluster_id {
                continue;
            }
            let key = (ns.to_string(), name.to_string());
            let pod = self.sd_cache.get(&key).and_then(|c| {
                c.pods.iter().find_map(|(pod, st)| match st {
                    desired::PodState::Instance { id, .. } if *id == f.instance_id => {
                        Some(pod.clone())
                    }
                    _ => None,
                })
            });
            let dirty = self.dirty_pods.entry(key.clone()).or_default();
            dirty.extend(pod);
            by_sd
                .entry((key, f.to == HealthStatus::Healthy))
                .or_default()
                .push(f.instance_id);
        }
        for ((key, healthy), ids) in by_sd {
            let Some(sd) = self.cluster.discoveries.get(&key) else {
                continue;
            };
            let (type_, reason, state) = if healthy {
                (EventType::Normal, "InstanceHealthy", "HEALTHY")
            } else {
                (EventType::Warning, "InstanceUnhealthy", "UNHEALTHY")
            };
            let mut names = ids.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if ids.len() > 5 {
                names.push_str(&format!(" and {} more", ids.len() - 5));
            }
            let note = format!(
                "{} instance(s) now {state} by the active health check: {names}",
                ids.len()
            );
            self.event(sd.object_ref(&()), type_, reason, note);
        }
    }

    // ----- reconciliation ---------------------------------------------------

    fn reconcile_dirty(&mut self) {
        // Services of deleted SDs go first, so a Namespace waiting for them
        // can be released in this same pass.
        for key in std::mem::take(&mut self.deleted_sds) {
            if !self.cluster.discoveries.contains_key(&key) {
                self.remove_services_of(&format!("ServiceDiscovery {}/{}", key.0, key.1), None);
            }
        }
        // Then namespaces, so services find their registry namespace.
        let namespaces = std::mem::take(&mut self.dirty_namespaces);
        for name in &namespaces {
            self.reconcile_namespace(name);
        }
        for key in std::mem::take(&mut self.dirty_services) {
            self.reconcile_automatic(&key);
        }
        for key in std::mem::take(&mut self.dirty_sds) {
            self.dirty_pods.remove(&key);
            self.reconcile_sd(&key);
        }
        self.reconcile_pods();
        if !self.gc_done {
            self.collect_garbage();
            self.gc_done = true;
        }
        // Service counts may have changed while SDs were reconciled.
        for name in namespaces {
            self.write_namespace_status(&name);
        }
    }

    /// Removes what this cluster's controller owns but no object asks for any
    /// more. Runs only once every watch has synced, so a restart never
    /// deregisters live pods.
    fn collect_garbage(&mut self) {
        let owned: Vec<(String, String)> = {
            let index = self.registry.read();
            index
                .services()
                .filter_map(|e| match &e.service.owner {
                    Owner::Controller { cluster, object } if *cluster == self.cluster_id => {
                        Some((e.service.id.clone(), object.clone()))
                    }
                    _ => None,
                })
                .collect()
        };
        for (id, object) in owned {
            let wanted = object
                .strip_prefix("ServiceDiscovery ")
                .and_then(|k| k.split_once('/'))
                .is_some_and(|(ns, name)| {
                    self.cluster
                        .discoveries
                        .contains_key(&(ns.to_string(), name.to_string()))
                });
            if !wanted {
                info!(service = %id, %object, "removing a service whose ServiceDiscovery no longer exists");
                self.remove_service(&id, &object);
            }
        }
    }

    fn remove_service(&self, id: &str, object: &str) {
        let owner = self.owner(object.to_string());
        if let Err(e) = self
            .registry
            .sync_instances(id, Vec::new(), &owner)
            .and_then(|_| self.registry.delete_service(id, &owner))
        {
            warn!(service = %id, error = %e, "cannot remove service");
        }
    }

    /// Removes the services `object` owns, except `keep`.
    fn remove_services_of(&self, object: &str, keep: Option<&str>) {
        let ids: Vec<String> = {
            let index = self.registry.read();
            index
                .services()
                .filter(|e| Some(e.service.id.as_str()) != keep)
                .filter(|e| {
                    matches!(&e.service.owner, Owner::Controller { cluster, object: o }
                        if *cluster == self.cluster_id && o == object)
                })
                .map(|e| e.service.id.clone())
                .collect()
        };
        for id in ids {
            self.remove_service(&id, object);
        }
    }

    /// ECS-style automatic registration: keeps the ServiceDiscovery of an
    /// annotated Service in line with its annotations, and deletes it when
    /// the annotation (or the Service) goes.
    fn reconcile_automatic(&mut self, key: &Key) {
        let existing = self.cluster.discoveries.get(key);
        let owner_uid = |sd: &ServiceDiscovery| {
            sd.metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.kind == "Service" && o.controller == Some(true))
                .map(|o| o.uid.clone())
        };
        let desired = self.cluster.services.get(key).and_then(|svc| {
            desired::automatic_discovery(&key.0, &key.1, svc, &self.cluster)
                .map(|o| (svc.uid.clone(), o))
        });
        match (desired, existing) {
            (Some((uid, object)), existing) => {
                if let Some(sd) = existing
                    && owner_uid(sd).as_deref() != Some(uid.as_str())
                {
                    warn!(sd = %format!("{}/{}", key.0, key.1),
                        "not replacing a ServiceDiscovery that the annotated Service does not own");
                    return;
                }
                let current = existing.map(|sd| serde_json::to_value(&sd.spec).unwrap_or_default());
                let wanted: Option<crate::crd::ServiceDiscoverySpec> =
                    serde_json::from_value(object["spec"].clone()).ok();
                let wanted = wanted.map(|w| serde_json::to_value(&w).unwrap_or_default());
                let labels_match = existing.is_some_and(|sd| {
                    let have = sd.metadata.labels.clone().unwrap_or_default();
                    object["metadata"]["labels"]
                        .as_object()
                        .is_some_and(|want| {
                            want.iter()
                                .all(|(k, v)| have.get(k).map(String::as_str) == v.as_str())
                        })
                });
                if current != wanted || !labels_match {
                    let _ = self.writes.try_send(Write::ApplySd {
                        key: key.clone(),
                        object,
                    });
                }
            }
            (None, Some(sd)) => {
                let managed = sd
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                    .map(String::as_str)
                    == Some("waymark");
                if managed && owner_uid(sd).is_some() {
                    info!(sd = %format!("{}/{}", key.0, key.1),
                        "Service no longer annotated: removing its ServiceDiscovery");
                    let _ = self.writes.try_send(Write::DeleteSd {
                        key: key.clone(),
                        uid: sd.uid().unwrap_or_default(),
                    });
                }
            }
            (None, None) => {}
        }
    }

    fn event(
        &self,
        reference: k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let _ = self.writes.try_send(Write::Event {
            reference,
            event: KubeEvent {
                type_,
                reason: reason.into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            },
        });
    }

    fn reconcile_sd(&mut self, key: &Key) {
        let Some(sd) = self.cluster.discoveries.get(key).cloned() else {
            self.pending_since.remove(key);
            return;
        };
        let timer = self
            .metrics
            .duration
            .with_label_values(&["ServiceDiscovery"])
            .start_timer();
        let object = owner_object(&sd);
        let now = registry::now_millis();
        self.sd_cache.remove(key);
        let outcome = match desired::plan(&sd, &self.cluster, &self.cluster_id, now) {
            Ok(mut plan) => {
                if let Some(at) = plan.next_deadline {
                    self.deadlines.entry(at).or_default().insert(key.clone());
                }
                let pods = std::mem::take(&mut plan.pods);
                let service_problems = std::mem::take(&mut plan.service_problems);
                let outcome = self.apply_plan(&sd, &object, plan);
                // Only a clean sync is a base for pod-by-pod updates; after a
                // failure or rejected instances every change plans in full.
                if let Some(service_id) = &outcome.service_id
                    && outcome.failure.is_none()
                    && !outcome
                        .problems
                        .iter()
                        .any(|p| p.reason == "InstancesRejected")
                {
                    self.sd_cache.insert(
                        key.clone(),
                        SdCache {
                            service_id: service_id.clone(),
                            object: object.clone(),
                            dns_name: outcome.dns_name.clone(),
                            service_problems,
                            pods,
                        },
                    );
                }
                outcome
            }
            Err(e) => {
                // Without a valid target nothing may stay registered for it.
                self.remove_services_of(&object, None);
                SdOutcome::failed(e.reason(), e.to_string())
            }
        };
        timer.observe_duration();
        let result = if outcome.failure.is_some() {
            "error"
        } else {
            "ok"
        };
        self.metrics
            .reconciles
            .with_label_values(&["ServiceDiscovery", result])
            .inc();
        if let Some(since) = self.pending_since.remove(key) {
            self.metrics
                .event_to_registry
                .observe(since.elapsed().as_secs_f64());
        }
        self.write_sd_status(key, &sd, outcome);
    }

    /// Applies the pod changes of SDs with a cached plan one pod at a time,
    /// all in one registry commit; SDs without a usable cache are planned in
    /// full on the next pass.
    fn reconcile_pods(&mut self) {
        let work = std::mem::take(&mut self.dirty_pods);
        if work.is_empty() {
            return;
        }
        let timer = self
            .metrics
            .duration
            .with_label_values(&["Pods"])
            .start_timer();
        let now = registry::now_millis();
        let mut batch = Vec::new();
        let mut done = Vec::new();
        for (key, names) in work {
            let (Some(sd), Some(cache)) = (
                self.cluster.discoveries.get(&key),
                self.sd_cache.get_mut(&key),
            ) else {
                self.dirty_sds.insert(key);
                continue;
            };
            let Ok(selector) = self.cluster.selector_of(sd) else {
                self.dirty_sds.insert(key);
                continue;
            };
            let ctx = desired::PodContext::new(sd, &self.cluster, &self.cluster_id);
            let pods = self.cluster.pods.get(&key.0);
            let mut upserts = Vec::new();
            let mut removals = Vec::new();
            let mut gates = Vec::new();
            for name in &names {
                let plan = pods
                    .and_then(|m| m.get(name))
                    .filter(|p| selector.matches(&p.labels))
                    .map(|p| ctx.plan_pod(p, now));
                let old = match &plan {
                    Some(p) => cache.pods.insert(name.clone(), p.state()),
                    None => cache.pods.remove(name),
                };
                let old_id = match &old {
                    Some(desired::PodState::Instance { id, .. }) => Some(id.as_str()),
                    _ => None,
                };
                match plan {
                    Some(desired::PodPlan::Instance {
                        instance,
                        gate,
                        deadline,
                        ..
                    }) => {
                        if old.as_ref() != cache.pods.get(name) {
                            if old_id.is_some_and(|o| o != instance.id) {
                                removals.extend(old_id.map(str::to_string));
                            }
                            upserts.push(instance);
                        }
                        if let Some(at) = deadline {
                            self.deadlines.entry(at).or_default().insert(key.clone());
                        }
                        gates.extend(gate);
                    }
                    _ => removals.extend(old_id.map(str::to_string)),
                }
            }
            if !upserts.is_empty() || !removals.is_empty() {
                batch.push(registry::PartialSync {
                    service_id: cache.service_id.clone(),
                    owner: Owner::Controller {
                        cluster: self.cluster_id.clone(),
                        object: cache.object.clone(),
                    },
                    upserts,
                    removals,
                });
            }
            done.push((key, gates));
        }
        let mut failed = BTreeSet::new();
        if !batch.is_empty() {
            let ids: Vec<String> = batch.iter().map(|p| p.service_id.clone()).collect();
            match self.registry.sync_partial(batch) {
                Ok(results) => {
                    for (id, r) in ids.into_iter().zip(results) {
                        match r {
                            Ok(o) if o.rejected.is_empty() => {}
                            Ok(_) => {
                                failed.insert(id);
                            }
                            Err(e) => {
                                warn!(service = %id, error = %e, "pod sync failed; planning in full");
                                failed.insert(id);
                            }
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "registry write failed; planning in full");
                    failed.extend(ids);
                }
            }
        }
        timer.observe_duration();
        for (key, gates) in done {
            let Some(cache) = self.sd_cache.get(&key) else {
                continue;
            };
            if failed.contains(&cache.service_id) {
                // The full pass reports what was rejected and why.
                self.sd_cache.remove(&key);
                self.dirty_sds.insert(key);
                continue;
            }
            self.metrics
                .reconciles
                .with_label_values(&["Pods", "ok"])
                .inc();
            if let Some(since) = self.pending_since.remove(&key) {
                self.metrics
                    .event_to_registry
                    .observe(since.elapsed().as_secs_f64());
            }
            let index = self.registry.read();
            if let Some(entry) = index.service(&cache.service_id) {
                self.update_gates(&key.0, entry, gates.iter().map(|g| &**g));
            }
            let summary = desired::summarize(cache.pods.values());
            let mut problems = cache.service_problems.clone();
            problems.extend(summary.problems);
            let outcome = SdOutcome {
                service_id: Some(cache.service_id.clone()),
                dns_name: cache.dns_name.clone(),
                counts: instance_counts(&index, &cache.service_id),
                failure: None,
                problems,
                skipped_labels: summary.skipped_labels,
            };
            drop(index);
            if let Some(sd) = self.cluster.discoveries.get(&key).cloned() {
                self.write_sd_status(&key, &sd, outcome);
            }
        }
    }

    /// Sets the `waymark.dev/registered` condition of gated pods whose
    /// instance's registered-and-healthy state differs from it.
    fn update_gates<'a>(
        &self,
        namespace: &str,
        entry: &registry::ServiceEntry,
        gates: impl Iterator<Item = &'a desired::GatedPod>,
    ) {
        for g in gates {
            let registered = entry
                .instances
                .get(&g.instance_id)
                .is_some_and(|i| entry.reported_health(i) == HealthStatus::Healthy);
            if g.current != Some(registered) {
                let _ = self.writes.try_send(Write::PodGate {
                    key: (namespace.to_string(), g.pod.clone()),
                    status: registered,
                });
            }
        }
    }

    fn apply_plan(&self, sd: &ServiceDiscovery, object: &str, plan: Plan) -> SdOutcome {
        let owner = self.owner(object.to_string());
        let want = &plan.service;
        let (ns_id, ns_kind, existing) = {
            let index = self.registry.read();
            let Some(ns) = index.namespace_by_http_name(&want.namespace) else {
                return SdOutcome::failed(
                    "NamespaceNotReady",
                    format!("registry namespace {} does not exist yet", want.namespace),
                );
            };
            let existing = index
                .service_by_name(&ns.id, &want.name)
                .map(|e| e.service.clone());
            (ns.id.clone(), ns.kind, existing)
        };
        let service_id = match existing {
            Some(svc) if svc.owner != owner => {
                return SdOutcome::failed(
                    "ServiceNameConflict",
                    format!(
                        "service {} in namespace {} is already managed by {}",
                        want.name,
                        want.namespace,
                        match &svc.owner {
                            Owner::Api => "the Cloud Map API".to_string(),
                            Owner::Controller { cluster, object } =>
                                format!("{object} (cluster {cluster})"),
                        }
                    ),
                );
            }
            Some(svc) if compatible(&svc, want) => {
                let hc_differs = svc
                    .health_check_config
                    .as_ref()
                    .map(|h| (h.kind, h.resource_path.clone(), h.failure_threshold))
                    != want
                        .health_check_config
                        .as_ref()
                        .map(|h| (h.kind, h.resource_path.clone(), h.failure_threshold));
                let ttl_differs = svc.dns_config.as_ref().map(|d| &d.records)
                    != want.dns_config.as_ref().map(|d| &d.records);
                if hc_differs || ttl_differs || svc.description != want.description {
                    let update = UpdateService {
                        description: want.description.clone(),
                        dns_records: want.dns_config.as_ref().map(|d| d.records.clone()),
                        health_check_config: want.health_check_config.clone(),
                    };
                    if let Err(e) = self.registry.update_service(&svc.id, update, &owner) {
                        return SdOutcome::failed("RegistryError", e.to_string());
                    }
                }
                svc.id
            }
            existing => {
                if let Some(old) = existing {
                    // Record types, routing and custom health are immutable in
                    // Cloud Map: replace the service.
                    info!(service = %old.id, "recreating service after an immutable change");
                    self.remove_service(&old.id, object);
                }
                let created = self.registry.create_service(CreateService {
                    name: want.name.clone(),
                    namespace_id: ns_id.clone(),
                    description: want.description.clone(),
                    dns_config: want.dns_config.clone(),
                    health_check_config: want.health_check_config.clone(),
                    health_check_custom_config: want.custom_health.then_some(
                        HealthCheckCustomConfig {
                            failure_threshold: None,
                        },
                    ),
                    http_only: false,
                    creator_request_id: None,
                    tags: Vec::new(),
                    owner: owner.clone(),
                });
                match created {
                    Ok(svc) => svc.id,
                    Err(e) => return SdOutcome::failed("RegistryError", e.to_string()),
                }
            }
        };
        // A renamed service or a new namespaceRef leaves the old one behind.
        self.remove_services_of(object, Some(&service_id));
        let result = match self
            .registry
            .sync_instances(&service_id, plan.instances, &owner)
        {
            Ok(r) => r,
            Err(e) => return SdOutcome::failed("RegistryError", e.to_string()),
        };
        if result.changed() {
            debug!(sd = %object, registered = result.registered, updated = result.updated,
                deregistered = result.deregistered, health = result.health_changed, "instances synced");
        }
        let mut problems = plan.problems;
        if !result.rejected.is_empty() {
            let sample: Vec<String> = result
                .rejected
                .iter()
                .take(3)
                .map(|(id, why)| format!("{id}: {why}"))
                .collect();
            problems.push(desired::Problem {
                reason: "InstancesRejected",
                message: format!(
                    "{} instance(s) rejected by the registry: {}",
                    result.rejected.len(),
                    sample.join("; ")
                ),
            });
        }
        let index = self.registry.read();
        if let Some(entry) = index.service(&service_id) {
            self.update_gates(
                &sd.namespace().unwrap_or_default(),
                entry,
                plan.gated.iter(),
            );
        }
        let counts = instance_counts(&index, &service_id);
        SdOutcome {
            service_id: Some(service_id),
            dns_name: (ns_kind != NamespaceType::Http)
                .then(|| format!("{}.{}", want.name, want.namespace)),
            counts,
            failure: None,
            problems,
            skipped_labels: plan.skipped_labels,
        }
    }

    fn write_sd_status(&mut self, key: &Key, sd: &ServiceDiscovery, outcome: SdOutcome) {
        // What we last wrote is newer than what the watch may have shown us yet.
        let previous: Vec<Condition> = self
            .sent_sd_status
            .get(key)
            .and_then(|v| serde_json::from_value(v["conditions"].clone()).ok())
            .unwrap_or_else(|| {
                sd.status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default()
            });
        let previous = previous.as_slice();
        let healthy = outcome.counts.as_ref().map_or(0, |c| c.healthy);
        let mut conditions = Vec::new();
        conditions.push(match &outcome.failure {
            Some((reason, message)) => condition(previous, "Ready", false, reason, message),
            None if healthy > 0 => condition(
                previous,
                "Ready",
                true,
                "InstancesHealthy",
                &format!("{healthy} healthy instance(s)"),
            ),
            None => condition(
                previous,
                "Ready",
                false,
                "NoHealthyInstances",
                "no instance is healthy",
            ),
        });
        conditions.push(match &outcome.failure {
            Some((reason, message)) => condition(previous, "Synced", false, reason, message),
            None => condition(
                previous,
                "Synced",
                true,
                "Synced",
                "the registry matches the cluster",
            ),
        });
        conditions.push(if outcome.problems.is_empty() {
            condition(
                previous,
                "Degraded",
                false,
                "AsExpected",
                "nothing is skipped",
            )
        } else {
            let reason = outcome.problems[0].reason;
            let message: Vec<&str> = outcome
                .problems
                .iter()
                .map(|p| p.message.as_str())
                .collect();
            condition(previous, "Degraded", true, reason, &message.join("; "))
        });
        let status = ServiceDiscoveryStatus {
            service_id: outcome.service_id,
            dns_name: outcome.dns_name,
            instances: outcome.counts,
            observed_generation: sd.metadata.generation,
            last_sync_time: None,
            conditions,
            skipped_labels: outcome.skipped_labels,
        };
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        let sent = self.sent_sd_status.get(key);
        if sent == Some(&value) {
            return;
        }
        // Counts alone wait for the status interval; the deferred refresh
        // writes whatever they are by then.
        let now = registry::now_millis();
        if let (Some(sent), Some(at)) = (sent, self.status_sent_at.get(key))
            && now < at + STATUS_INTERVAL_MS
            && without_counts(sent) == without_counts(&value)
        {
            self.status_due
                .entry(at + STATUS_INTERVAL_MS)
                .or_default()
                .insert(key.clone());
            return;
        }
        self.status_sent_at.insert(key.clone(), now);
        let was_failing = sd
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Synced"))
            .map(|c| c.status == "False");
        if let Some((reason, message)) = &outcome.failure
            && was_failing != Some(true)
        {
            self.event(
                sd.object_ref(&()),
                EventType::Warning,
                reason,
                message.clone(),
            );
        }
        self.sent_sd_status.insert(key.clone(), value.clone());
        value["lastSyncTime"] =
            serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or_default();
        let _ = self.writes.try_send(Write::SdStatus {
            key: key.clone(),
            status: value,
        });
    }

    fn reconcile_namespace(&mut self, name: &str) {
        let _timer = self
            .metrics
            .duration
            .with_label_values(&["Namespace"])
            .start_timer();
        let Some(wns) = self.cluster.namespaces.get(name).cloned() else {
            // The CR is gone: its registry namespace goes too, once empty.
            if let Err(e) = self.delete_registry_namespace(name, None) {
                warn!(namespace = %name, error = %e, "cannot delete the registry namespace of a deleted Namespace");
            }
            return;
        };
        let object = format!("Namespace {name}");
        let owner = self.owner(object.clone());
        let users: Vec<String> = self
            .cluster
            .discoveries_in_namespace(name)
            .map(|sd| format!("{}/{}", sd.namespace().unwrap_or_default(), sd.name_any()))
            .collect();
        let finalizers = wns.metadata.finalizers.clone().unwrap_or_default();
        if wns.metadata.deletion_timestamp.is_some() {
            if !users.is_empty() {
                let message = format!(
                    "deletion is held: still used by ServiceDiscovery {}",
                    users.join(", ")
                );
                if self
                    .sent_ns_status
                    .get(name)
                    .and_then(|v| v["conditions"].as_array())
                    .is_none_or(|c| !c.iter().any(|c| c["reason"] == "InUse"))
                {
                    self.event(
                        wns.object_ref(&()),
                        EventType::Warning,
                        "DeletionHeld",
                        message.clone(),
                    );
                }
                self.ns_failure(&wns, "InUse", &message);
                return;
            }
            match self.delete_registry_namespace(name, Some(&wns)) {
                Ok(()) => {
                    if finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
                        let rest: Vec<String> = finalizers
                            .into_iter()
                            .filter(|f| f != NAMESPACE_FINALIZER)
                            .collect();
                        let _ = self.writes.try_send(Write::NsFinalizers {
                            name: name.to_string(),
                            finalizers: rest,
                        });
                    }
                }
                Err(message) => self.ns_failure(&wns, "RegistryNamespaceInUse", &message),
            }
            return;
        }
        if !finalizers.iter().any(|f| f == NAMESPACE_FINALIZER) {
            let mut all = finalizers;
            all.push(NAMESPACE_FINALIZER.into());
            let _ = self.writes.try_send(Write::NsFinalizers {
                name: name.to_string(),
                finalizers: all,
            });
        }
        let kind = match wns.spec.type_ {
            crate::crd::NamespaceType::Http => NamespaceType::Http,
            crate::crd::NamespaceType::DnsPrivate => NamespaceType::DnsPrivate,
            crate::crd::NamespaceType::DnsPublic => NamespaceType::DnsPublic,
        };
        let registry_name = wns.registry_name().to_string();
        let soa_ttl = kind
            .is_dns()
            .then(|| i64::from(wns.spec.effective_soa_ttl()));
        let existing = self
            .registry
            .read()
            .namespace_by_http_name(&registry_name)
            .cloned();
        let result = match existing {
            None => self
                .registry
                .create_namespace(CreateNamespace {
                    name: registry_name.clone(),
                    kind,
                    description: wns.spec.description.clone(),
                    soa_ttl,
                    vpc: None,
                    creator_request_id: None,
                    tags: Vec::new(),
                    owner: owner.clone(),
                })
                .map(|_| ()),
            Some(ns)
                if ns.owner != owner
                    && !matches!(&ns.owner, Owner::Controller { cluster, .. } if *cluster == self.cluster_id) =>
            {
                Err(registry::Error::ResourceInUse(format!(
                    "registry namespace {registry_name} already exists and is not managed by this Namespace"
                )))
            }
            Some(ns) if ns.kind != kind => Err(registry::Error::ResourceInUse(format!(
                "registry namespace {registry_name} exists with type {}",
                ns.kind.as_str()
            ))),
            Some(ns) => {
                if ns.description != wns.spec.description || ns.soa_ttl != soa_ttl {
                    self.registry
                        .update_namespace(
                            &ns.id,
                            UpdateNamespace {
                                description: wns.spec.description.clone(),
                                soa_ttl,
                                updater_request_id: None,
                            },
                            &owner,
                        )
                        .map(|_| ())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = result {
            self.ns_failure(&wns, "RegistryError", &e.to_string());
        }
        // Status is written after the SDs have been reconciled (service count).
    }

    /// Deletes the registry namespace of a Waymark Namespace if this
    /// controller owns it; fails while it still has services.
    fn delete_registry_namespace(
        &self,
        name: &str,
        wns: Option<&WaymarkNamespace>,
    ) -> Result<(), String> {
        let registry_name = wns.map_or(name.to_string(), |w| w.registry_name().to_string());
        let found = self
            .registry
            .read()
            .namespace_by_http_name(&registry_name)
            .cloned();
        let Some(ns) = found else {
            return Ok(());
        };
        let ours = matches!(&ns.owner, Owner::Controller { cluster, object } if *cluster == self.cluster_id && *object == format!("Namespace {name}"));
        if !ours {
            return Ok(());
        }
        match self.registry.delete_namespace(&ns.id, &ns.owner) {
            Ok(_) => {
                info!(namespace = %registry_name, "registry namespace deleted");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn previous_ns_conditions(&self, wns: &WaymarkNamespace) -> Vec<Condition> {
        self.sent_ns_status
            .get(&wns.name_any())
            .and_then(|v| serde_json::from_value(v["conditions"].clone()).ok())
            .unwrap_or_else(|| {
                wns.status
                    .as_ref()
                    .map(|s| s.conditions.clone())
                    .unwrap_or_default()
            })
    }

    fn ns_failure(&mut self, wns: &WaymarkNamespace, reason: &str, message: &str) {
        self.metrics
            .reconciles
            .with_label_values(&["Namespace", "error"])
            .inc();
        let previous = self.previous_ns_conditions(wns);
        let previous = previous.as_slice();
        let status = NamespaceStatus {
            namespace_id: wns.status.as_ref().and_then(|s| s.namespace_id.clone()),
            service_count: wns.status.as_ref().and_then(|s| s.service_count),
            observed_generation: wns.metadata.generation,
            conditions: vec![
                condition(previous, "Ready", false, reason, message),
                condition(previous, "Synced", false, reason, message),
            ],
        };
        self.send_ns_status(&wns.name_any(), status);
    }

    fn write_namespace_status(&mut self, name: &str) {
        let Some(wns) = self.cluster.namespaces.get(name).cloned() else {
            return;
        };
        if wns.metadata.deletion_timestamp.is_some() {
            return;
        }
        let previous = self.previous_ns_conditions(&wns);
        let previous = previous.as_slice();
        let index = self.registry.read();
        let Some(ns) = index.namespace_by_http_name(wns.registry_name()) else {
            return;
        };
        if !matches!(&ns.owner, Owner::Controller { cluster, .. } if *cluster == self.cluster_id) {
            return;
        }
        self.metrics
            .reconciles
            .with_label_values(&["Namespace", "ok"])
            .inc();
        let status = NamespaceStatus {
            namespace_id: Some(ns.id.clone()),
            service_count: Some(index.service_count(&ns.id) as u32),
            observed_generation: wns.metadata.generation,
            conditions: vec![
                condition(
                    previous,
                    "Ready",
                    true,
                    "Registered",
                    "the registry namespace exists",
                ),
                condition(
                    previous,
                    "Synced",
                    true,
                    "Synced",
                    "the registry matches the spec",
                ),
            ],
        };
        drop(index);
        self.send_ns_status(name, status);
    }

    fn send_ns_status(&mut self, name: &str, status: NamespaceStatus) {
        let value = serde_json::to_value(&status).unwrap_or_default();
        if self.sent_ns_status.get(name) == Some(&value) {
            return;
        }
        self.sent_ns_status.insert(name.to_string(), value.clone());
        let _ = self.writes.try_send(Write::NsStatus {
            name: name.to_string(),
            status: value,
        });
    }
}

/// Phases of a watch's (re)list.
enum Phase {
    /// The watch (re)starts listing.
    Init,
    /// An object was listed.
    Item(Key),
    /// The list is complete; these are all the keys currently known.
    Done(Vec<Key>),
}

/// What reconciling one SD produced, for its status.
struct SdOutcome {
    service_id: Option<String>,
    dns_name: Option<String>,
    counts: Option<InstanceCounts>,
    failure: Option<(String, String)>,
    problems: Vec<desired::Problem>,
    skipped_labels: Vec<crate::crd::SkippedLabel>,
}

impl SdOutcome {
    fn failed(reason: &str, message: String) -> Self {
        Self {
            service_id: None,
            dns_name: None,
            counts: None,
            failure: Some((reason.to_string(), message)),
            problems: Vec::new(),
            skipped_labels: Vec::new(),
        }
    }
}

/// Whether an existing registry service can be updated in place to `want`
/// (Cloud Map cannot change record types, routing or custom health).
fn compatible(svc: &crate::registry::model::Service, want: &DesiredService) -> bool {
    let types = |d: Option<&crate::registry::model::DnsConfig>| {
        d.map(|d| {
            let mut t: Vec<_> = d.records.iter().map(|r| r.kind).collect();
            t.sort();
            (d.routing_policy, t)
        })
    };
    types(svc.dns_config.as_ref()) == types(want.dns_config.as_ref())
        && svc.health_check_custom_config.is_some() == want.custom_health
}

/// A condition that keeps its `lastTransitionTime` while its status is unchanged.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message: message.into(),
        last_transition_time: since,
        observed_generation: None,
    }
}
