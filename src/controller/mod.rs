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
//! One file per stage, all but the pure ones `impl` blocks of the loop's
//! state (`Controller`), which this file owns and drives:
//! - `watch`: the watch tasks, which reduce Pods and Nodes to their slim
//!   infos before the loop's queue, and the loop's side that applies each
//!   event to the cache and marks what it affects dirty;
//! - [`cluster`] (with the generic value pools of [`intern`]): the cache;
//! - `namespace`, `discovery`, `automatic`: the reconcile of each kind —
//!   Waymark Namespaces, ServiceDiscoveries (in full or pod by pod), and the
//!   ServiceDiscoveries of annotated Services;
//! - [`desired`]: the pure plan of a ServiceDiscovery;
//! - `status`: the one writer of status patches, Events and readiness gates
//!   (the outbox task);
//! - `metrics`: the controller's metrics; [`lease`]: leader election.
//!
//! Safety at restart: nothing is reconciled — and no stale instance is
//! removed — until every watch has listed its objects.

mod automatic;
pub mod cluster;
pub mod desired;
mod discovery;
pub mod intern;
pub mod lease;
mod metrics;
mod namespace;
mod status;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace as KubeNamespace;
use kube::api::{Api, ListParams};
use kube::runtime::events::Reporter;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use self::cluster::{Cluster, Key};
use self::discovery::SdCache;
pub use self::metrics::Metrics;
use self::status::Write;
use self::watch::{Msg, Scope, Synced};
use crate::crd::{Namespace as WaymarkNamespace, ServiceDiscovery};
use crate::registry::model::Owner;
use crate::registry::{self, Registry};

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
    /// The controller's own principal (`--controller-principal`): every
    /// registry write it makes is decided by that principal's policies, as
    /// the equivalent Cloud Map API call would be. `None`: unrestricted.
    pub acting: Option<crate::auth::ActingPrincipal>,
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
            acting: None,
        }
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

/// What connects the controller to the rest of the process.
pub struct Links {
    /// Called with `true` once every watch has synced (the `/readyz` flag).
    pub ready: Box<dyn Fn(bool) + Send>,
    /// Where the controller publishes whether this replica leads (the
    /// prober only probes on the leader).
    pub leader: tokio::sync::watch::Sender<bool>,
    /// Health flips from the active checks, turned into Events and status.
    pub flips: mpsc::Receiver<Vec<registry::HealthFlip>>,
    /// The xDS server's findings (its last NACK per service), written to the
    /// ServiceDiscovery status; `None` without `--xds-addr`.
    pub xds: Option<crate::xds::XdsStatus>,
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
        xds,
    } = links;
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let (watches, synced) = watch::spawn_all(&client, &config, &tx);
    drop(tx);
    leader_tx.send_replace(config.lease.is_none());
    metrics.leader.set(i64::from(config.lease.is_none()));
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
    let writer = tokio::spawn(status::writer(client, reporter, leader_rx.clone(), wrx));
    let mut policy_changes = config.acting.as_ref().map(|a| a.changes());
    let mut ctl = Controller {
        registry,
        acting: config.acting.clone(),
        cluster_id,
        cluster: Cluster::default(),
        synced,
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
        xds,
    };
    let shared = ctl.registry.is_shared();
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
            () = async {
                match ctl.xds.as_ref() {
                    Some(xds) => xds.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                // A NACK: refresh the status of the ServiceDiscoveries of
                // the services it concerns (through their cached plans).
                let changed = ctl.xds.as_ref().map(|x| x.take_changed()).unwrap_or_default();
                let keys: Vec<Key> = ctl
                    .cluster
                    .discoveries
                    .iter()
                    .filter(|(_, sd)| ctl.xds_name(sd).is_some_and(|n| changed.contains(&n)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    ctl.dirty_pods.entry(key).or_default();
                }
            }
            Some(flips) = flips_rx.recv() => {
                ctl.on_health_flips(flips);
                while let Ok(more) = flips_rx.try_recv() {
                    ctl.on_health_flips(more);
                }
            }
            Ok(()) = leader_rx.changed() => {
                let leading = *leader_rx.borrow_and_update();
                ctl.metrics.leader.set(i64::from(leading));
                if leading {
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
                    ctl.gc_done = false;
                }
            }
            Ok(()) = async {
                match policy_changes.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                // New credentials or policies: what they refused may now be
                // allowed (and the reverse), so everything is planned again.
                ctl.dirty_sds.extend(ctl.cluster.discoveries.keys().cloned());
                ctl.dirty_namespaces.extend(ctl.cluster.namespaces.keys().cloned());
            }
            _ = resync.tick() => {
                ctl.dirty_sds.extend(ctl.cluster.discoveries.keys().cloned());
                ctl.dirty_namespaces.extend(ctl.cluster.namespaces.keys().cloned());
                ctl.gc_done = false;
            }
        }
        if ctl.synced.all() {
            // On a shared store the leader reconciles for every replica; a
            // standby only keeps its cache current (taking over marks
            // everything dirty again).
            if shared && !*leader_rx.borrow() {
                ctl.forget_dirty();
            } else {
                tokio::task::block_in_place(|| ctl.reconcile_dirty());
            }
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

/// The controller loop's state.
struct Controller {
    registry: Arc<Registry>,
    /// Whose policies decide the controller's writes.
    acting: Option<crate::auth::ActingPrincipal>,
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
    // The xDS server's last NACK per service (with --xds-addr).
    xds: Option<crate::xds::XdsStatus>,
}

impl Controller {
    /// The xDS name of a ServiceDiscovery's service, `<service>.<registry
    /// namespace>`, once its Namespace is known.
    fn xds_name(&self, sd: &ServiceDiscovery) -> Option<String> {
        let wns = self.cluster.namespaces.get(&sd.spec.namespace_ref.name)?;
        Some(crate::xds::snapshot::resource_name(
            sd.service_name(),
            wns.registry_name(),
        ))
    }

    /// The ownership marker of what this cluster's controller writes for `object`.
    /// Whether the controller's principal may make the Cloud Map call
    /// `operation` with the request `body` builds (always, without a
    /// principal, and then the body is never built: the pod sync path
    /// calls this for every batch); the denial otherwise.
    fn permitted(
        &self,
        operation: &str,
        body: impl FnOnce() -> serde_json::Value,
    ) -> Result<(), String> {
        match &self.acting {
            Some(acting) => acting.check(&self.registry, operation, &body()),
            None => Ok(()),
        }
    }

    fn owner(&self, object: String) -> Owner {
        Owner::Controller {
            cluster: self.cluster_id.clone(),
            object,
        }
    }

    /// Whether `owner` is another cluster's controller: in a registry
    /// several clusters share, what it created this cluster may join (a
    /// namespace, a service holding pods of both) but never changes or
    /// removes.
    fn owned_elsewhere(&self, owner: &Owner) -> bool {
        matches!(owner, Owner::Controller { cluster, .. } if *cluster != self.cluster_id)
    }

    /// Drops what a pass would have reconciled (a standby on a shared
    /// store). Nothing is lost: the leader reconciles it, and taking over
    /// marks every object dirty and collects garbage again.
    fn forget_dirty(&mut self) {
        self.deleted_sds.clear();
        self.dirty_namespaces.clear();
        self.dirty_services.clear();
        self.dirty_sds.clear();
        self.dirty_pods.clear();
        self.pending_since.clear();
    }

    /// One pass over everything marked dirty, kinds in the order they
    /// depend on each other.
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
}
