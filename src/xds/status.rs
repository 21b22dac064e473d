//! What the xDS server reports about each service for its ServiceDiscovery
//! status: how many clients of this replica subscribe to its resources, and
//! the last NACK of one of them. The streams record; the controller (under
//! `waymark run`) reads and is told which names changed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::ads::Nack;
use super::snapshot::ResourceType;
use crate::registry::model::EpochMillis;

/// Most resource names with a recorded NACK (the oldest are dropped).
const MAX_RECORDS: usize = 4096;

/// A NACK as reported on a ServiceDiscovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackRecord {
    /// The resource it concerned.
    pub resource: String,
    /// Its type.
    pub kind: ResourceType,
    /// The rejected version.
    pub version: String,
    /// The client's reason.
    pub message: String,
    /// The client's node id.
    pub node: String,
    /// When it came.
    pub at: EpochMillis,
}

/// The last push of a change to a service's resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushRecord {
    /// When it was sent.
    pub at: EpochMillis,
    /// From this replica seeing the registry change to sending it.
    pub delay: std::time::Duration,
}

#[derive(Debug, Default)]
struct Inner {
    nacks: HashMap<String, NackRecord>,
    pushes: HashMap<String, PushRecord>,
    /// Per open stream, the services it subscribes to by name.
    streams: HashMap<u64, BTreeSet<String>>,
    next_stream: u64,
    changed: BTreeSet<String>,
}

/// The xDS server's per-service findings, shared with the controller.
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct XdsStatus {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl XdsStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a NACK from `node` against the resources it blames.
    pub fn record(&self, nack: &Nack, node: &str, at: EpochMillis) {
        let mut inner = self.lock();
        for name in nack.blamed() {
            if inner.nacks.len() >= MAX_RECORDS && !inner.nacks.contains_key(name) {
                let oldest = inner
                    .nacks
                    .values()
                    .min_by_key(|r| r.at)
                    .map(|r| r.resource.clone());
                if let Some(oldest) = oldest {
                    inner.nacks.remove(&oldest);
                }
            }
            inner.nacks.insert(
                name.to_string(),
                NackRecord {
                    resource: name.to_string(),
                    kind: nack.kind,
                    version: nack.rejected_version.clone(),
                    message: nack.message.clone(),
                    node: node.to_string(),
                    at,
                },
            );
            inner.changed.insert(name.to_string());
        }
        drop(inner);
        self.notify.notify_one();
    }

    /// A new stream's id, for [`XdsStatus::subscribes`] and
    /// [`XdsStatus::ended`].
    pub fn stream(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_stream += 1;
        inner.next_stream
    }

    /// Stream `stream` now subscribes to `names` (resource names of every
    /// type; a wildcard subscription names none): the services it counts as a
    /// client of.
    pub fn subscribes<'a>(&self, stream: u64, names: impl IntoIterator<Item = &'a str>) {
        let services: BTreeSet<String> = names
            .into_iter()
            .map(|n| service_of(n).to_string())
            .collect();
        let mut inner = self.lock();
        let before = inner.streams.get(&stream).cloned().unwrap_or_default();
        if before == services {
            return;
        }
        let moved: Vec<String> = before.symmetric_difference(&services).cloned().collect();
        inner.changed.extend(moved);
        inner.streams.insert(stream, services);
        drop(inner);
        self.notify.notify_one();
    }

    /// Stream `stream` closed.
    pub fn ended(&self, stream: u64) {
        let mut inner = self.lock();
        if let Some(services) = inner.streams.remove(&stream) {
            inner.changed.extend(services);
            drop(inner);
            self.notify.notify_one();
        }
    }

    /// A change to the service named `name` reached a client `delay` after
    /// the registry change. Not announced as news: the figure rides along
    /// with the service's next status write (pushes follow registry changes,
    /// which rewrite the status anyway).
    pub fn pushed(&self, name: &str, delay: std::time::Duration, at: EpochMillis) {
        let mut inner = self.lock();
        if inner.pushes.len() >= MAX_RECORDS && !inner.pushes.contains_key(name) {
            return;
        }
        inner
            .pushes
            .insert(name.to_string(), PushRecord { at, delay });
    }

    /// The last push of a change to the service named `name`.
    pub fn last_push(&self, name: &str) -> Option<PushRecord> {
        self.lock().pushes.get(name).copied()
    }

    /// How many open streams subscribe to resources of the service named
    /// `name` (`<service>.<namespace>`, or one of its subsets).
    pub fn clients(&self, name: &str) -> u32 {
        let inner = self.lock();
        inner.streams.values().filter(|s| s.contains(name)).count() as u32
    }

    /// The last NACK of the resources of the service named `name`
    /// (`<service>.<namespace>`): its own, or one of its subsets'.
    pub fn last_nack(&self, name: &str) -> Option<NackRecord> {
        let inner = self.lock();
        inner
            .nacks
            .values()
            .filter(|r| service_of(&r.resource) == name)
            .max_by_key(|r| (r.at, r.resource.clone()))
            .cloned()
    }

    /// The services (`<service>.<namespace>`) with news since the last call.
    pub fn take_changed(&self) -> BTreeSet<String> {
        let changed = std::mem::take(&mut self.lock().changed);
        changed.iter().map(|n| service_of(n).to_string()).collect()
    }

    /// Resolves when something was recorded since the last call.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

/// The service a resource name belongs to: subsets (`<name>/<filter>`) are
/// their service's.
pub(super) fn service_of(resource: &str) -> &str {
    resource.split_once('/').map_or(resource, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nack(resources: &[&str], message: &str) -> Nack {
        Nack {
            kind: ResourceType::Endpoint,
            rejected_version: "abc".into(),
            kept_version: String::new(),
            code: 3,
            message: message.into(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn nacks_are_reported_per_service_newest_first_and_changes_are_taken_once() {
        let status = XdsStatus::default();
        status.record(&nack(&["web.shop"], "duplicate endpoint"), "n1", 10);
        status.record(
            &nack(
                &["api.shop", "web.shop/version=v2"],
                "web.shop/version=v2: bad",
            ),
            "n2",
            20,
        );
        let web = status.last_nack("web.shop").unwrap();
        assert_eq!(
            (web.resource.as_str(), web.node.as_str(), web.at),
            ("web.shop/version=v2", "n2", 20)
        );
        assert_eq!(status.last_nack("api.shop"), None, "not blamed");
        assert_eq!(status.last_nack("web.sho"), None);
        assert_eq!(
            status.take_changed().into_iter().collect::<Vec<_>>(),
            ["web.shop"]
        );
        assert!(status.take_changed().is_empty());
    }

    #[test]
    fn clients_are_counted_per_service_while_their_streams_last() {
        let status = XdsStatus::default();
        let (a, b) = (status.stream(), status.stream());
        status.subscribes(a, ["web.shop", "web.shop/version=v2", "api.shop"]);
        status.subscribes(b, ["web.shop"]);
        assert_eq!(status.clients("web.shop"), 2);
        assert_eq!(status.clients("api.shop"), 1);
        assert_eq!(status.clients("db.shop"), 0);
        let changed = status.take_changed();
        assert_eq!(
            changed.into_iter().collect::<Vec<_>>(),
            ["api.shop", "web.shop"]
        );
        // The same subscriptions again change nothing.
        status.subscribes(b, ["web.shop"]);
        assert!(status.take_changed().is_empty());
        // A moves away from api; B closes.
        status.subscribes(a, ["web.shop"]);
        status.ended(b);
        assert_eq!(status.clients("api.shop"), 0);
        assert_eq!(status.clients("web.shop"), 1);
        assert_eq!(
            status.take_changed().into_iter().collect::<Vec<_>>(),
            ["api.shop", "web.shop"]
        );
    }

    #[test]
    fn records_are_bounded() {
        let status = XdsStatus::default();
        for i in 0..MAX_RECORDS + 10 {
            status.record(&nack(&[&format!("s{i}.ns")], "x"), "n", i as i64);
        }
        assert_eq!(status.lock().nacks.len(), MAX_RECORDS);
        assert_eq!(status.last_nack("s0.ns"), None, "the oldest went first");
        assert!(
            status
                .last_nack(&format!("s{}.ns", MAX_RECORDS + 9))
                .is_some()
        );
    }
}
