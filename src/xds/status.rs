//! What the xDS server reports about each service for its ServiceDiscovery
//! status: the last NACK of one of its resources. The streams record; the
//! controller (under `waymark run`) reads and is told which names changed.

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

#[derive(Debug, Default)]
struct Inner {
    nacks: HashMap<String, NackRecord>,
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
fn service_of(resource: &str) -> &str {
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
