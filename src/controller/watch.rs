//! The watches: one task per kind and watched namespace reduces each object
//! to what the controller keeps (Pods and Nodes to their slim infos, before
//! the loop's queue, so a backlog holds those and not whole objects) and
//! forwards it to the loop; on the loop's side each event is applied to the
//! cluster cache and marks the objects it affects dirty.
//!
//! A (re)list is tracked per watch, so objects deleted while the controller
//! was not watching are dropped once the list is complete, and the loop
//! knows when every watch has synced.

use std::collections::BTreeSet;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::cluster::{Cluster, Interner, Key, NodeInfo, PodInfo, ServiceInfo};
use super::{Config, Controller};
use crate::crd::{Namespace as WaymarkNamespace, ServiceDiscovery};

/// The Kubernetes namespace a watch is limited to (`None`: all).
pub(super) type Scope = Option<String>;

/// One watch event, tagged with its kind and its watch's scope. Pods and
/// Nodes arrive already reduced to what the controller keeps, so a backlog
/// in the channel holds those and not whole objects.
// Each message is moved once through the channel; boxing the large variants
// would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub(super) enum Msg {
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

/// Spawns every watch this instance needs, each forwarding into `tx`, and
/// returns their tasks and the sync tracker that expects them all.
pub(super) fn spawn_all(
    client: &Client,
    config: &Config,
    tx: &mpsc::Sender<Msg>,
) -> (Vec<tokio::task::JoinHandle<()>>, Synced) {
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
        let (pods, services, sds) = api(client);
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
    let synced = Synced {
        expected,
        done: BTreeSet::new(),
    };
    (watches, synced)
}

/// Which watches have completed their initial list.
#[derive(Debug, Default)]
pub(super) struct Synced {
    expected: BTreeSet<(&'static str, Scope)>,
    done: BTreeSet<(&'static str, Scope)>,
}

impl Synced {
    fn mark(&mut self, kind: &'static str, scope: &Scope) {
        self.done.insert((kind, scope.clone()));
    }

    pub(super) fn all(&self) -> bool {
        self.expected.is_subset(&self.done)
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

impl Controller {
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

    pub(super) fn handle(&mut self, msg: Msg) {
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
            Msg::Pod(scope, ev) => self.on_event(
                "Pod",
                &scope,
                ev,
                |p| (p.namespace.to_string(), p.name.clone()),
                |c| {
                    c.pods
                        .iter()
                        .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
                        .collect()
                },
                Self::pod_changed,
            ),
            Msg::Service(scope, ev) => self.on_event(
                "Service",
                &scope,
                ev,
                |s| (s.namespace().unwrap_or_default(), s.name_any()),
                |c| c.services.keys().cloned().collect(),
                |ctl, k, s| ctl.service_changed(k, s.map(|s| ServiceInfo::from_service(&s))),
            ),
            Msg::Node(scope, ev) => self.on_event(
                "Node",
                &scope,
                ev,
                |(name, _)| (String::new(), name.clone()),
                |c| c.nodes.keys().map(|n| (String::new(), n.clone())).collect(),
                |ctl, (_, name), n| ctl.node_changed(name, n.map(|(_, info)| info)),
            ),
            Msg::Discovery(scope, ev) => self.on_event(
                "ServiceDiscovery",
                &scope,
                ev,
                |s| (s.namespace().unwrap_or_default(), s.name_any()),
                |c| c.discoveries.keys().cloned().collect(),
                Self::discovery_changed,
            ),
            Msg::Namespace(scope, ev) => self.on_event(
                "Namespace",
                &scope,
                ev,
                |n| (String::new(), n.name_any()),
                |c| {
                    c.namespaces
                        .keys()
                        .map(|n| (String::new(), n.clone()))
                        .collect()
                },
                |ctl, (_, name), n| ctl.namespace_changed(name, n),
            ),
        }
    }

    /// Applies one watch event of `kind` through `changed` (called with the
    /// object's key and the object, or `None` once it is gone) and tracks the
    /// watch's (re)list; `known` lists the keys of that kind in the cache.
    /// Nodes and Waymark Namespaces are cluster-wide: their key has an empty
    /// namespace.
    fn on_event<T>(
        &mut self,
        kind: &'static str,
        scope: &Scope,
        ev: Event<T>,
        key: impl Fn(&T) -> Key,
        known: impl Fn(&Cluster) -> Vec<Key>,
        changed: impl Fn(&mut Self, Key, Option<T>),
    ) {
        match ev {
            Event::Init => {
                self.relist(kind, scope, Phase::Init);
            }
            Event::InitApply(o) | Event::Apply(o) => {
                let k = key(&o);
                self.relist(kind, scope, Phase::Item(k.clone()));
                changed(self, k, Some(o));
            }
            Event::Delete(o) => changed(self, key(&o), None),
            Event::InitDone => {
                let existing = known(&self.cluster);
                for k in self.relist(kind, scope, Phase::Done(existing)) {
                    changed(self, k, None);
                }
            }
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
}
