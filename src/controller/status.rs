//! The one writer of the Kubernetes API: status patches of ServiceDiscoveries
//! and Namespaces, Namespace finalizers, readiness gates, the
//! ServiceDiscoveries of automatic registration and Events all go through
//! one outbox to one task ([`writer`]), so a slow API server never delays
//! the loop or the registry. What was last sent is remembered, so unchanged
//! statuses are not written again.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::cluster::{self, Key};
use super::{Controller, MANAGER, desired};
use crate::crd::{
    InstanceCounts, Namespace as WaymarkNamespace, NamespaceStatus, ServiceDiscovery,
    ServiceDiscoveryStatus,
};
use crate::registry;
use crate::registry::model::{HealthStatus, Owner};

/// Counts-only status changes of one ServiceDiscovery are written at most
/// this often, so a rollout of a thousand pods is a handful of status
/// patches rather than thousands; condition changes go out at once.
const STATUS_INTERVAL_MS: i64 = 1000;

/// A write to the Kubernetes API, done by the writer task.
#[allow(clippy::large_enum_variant)]
pub(super) enum Write {
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
pub(super) async fn writer(
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

/// What reconciling one SD produced, for its status.
pub(super) struct SdOutcome {
    pub(super) service_id: Option<String>,
    pub(super) dns_name: Option<String>,
    pub(super) counts: Option<InstanceCounts>,
    pub(super) failure: Option<(String, String)>,
    pub(super) problems: Vec<desired::Problem>,
    pub(super) skipped_labels: Vec<crate::crd::SkippedLabel>,
}

impl SdOutcome {
    /// The outcome of a reconcile that could not sync the SD.
    pub(super) fn failed(reason: &str, message: String) -> Self {
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

impl Controller {
    pub(super) fn event(
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

    /// Sets the `waymark.dev/registered` condition of gated pods whose
    /// instance's registered-and-healthy state differs from it.
    pub(super) fn update_gates<'a>(
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

    pub(super) fn write_sd_status(&mut self, key: &Key, sd: &ServiceDiscovery, outcome: SdOutcome) {
        let previous = previous_conditions(
            self.sent_sd_status.get(key),
            sd.status.as_ref().map(|s| s.conditions.as_slice()),
        );
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
            xds: self.xds_status(sd),
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
        let write = Write::SdStatus {
            key: key.clone(),
            status: value,
        };
        if !self.queue_status(write) {
            // Forget what was "sent" so a refresh shortly writes it again.
            self.sent_sd_status.remove(key);
            self.status_due
                .entry(now + STATUS_INTERVAL_MS)
                .or_default()
                .insert(key.clone());
        }
    }

    /// What xDS clients reported about the service of `sd`, if anything.
    fn xds_status(&self, sd: &ServiceDiscovery) -> Option<crate::crd::XdsServiceStatus> {
        let xds = self.xds.as_ref()?;
        let name = self.xds_name(sd)?;
        let clients = xds.clients(&name);
        let last_nack = xds.last_nack(&name).and_then(|nack| {
            let time = k8s_openapi::jiff::Timestamp::from_millisecond(nack.at).ok()?;
            Some(crate::crd::XdsNack {
                resource: nack.resource,
                type_: nack.kind.label().to_string(),
                version: nack.version,
                message: nack.message,
                node: nack.node,
                time: Time(time),
            })
        });
        let last_push = xds.last_push(&name).and_then(|p| {
            let time = k8s_openapi::jiff::Timestamp::from_millisecond(p.at).ok()?;
            Some(crate::crd::XdsPush {
                time: Time(time),
                delay_milliseconds: u64::try_from(p.delay.as_millis()).unwrap_or(u64::MAX),
            })
        });
        // Nothing to say until a client subscribes or rejects something.
        (clients > 0 || last_nack.is_some()).then_some(crate::crd::XdsServiceStatus {
            clients,
            last_push,
            last_nack,
        })
    }

    fn previous_ns_conditions(&self, wns: &WaymarkNamespace) -> Vec<Condition> {
        previous_conditions(
            self.sent_ns_status.get(&wns.name_any()),
            wns.status.as_ref().map(|s| s.conditions.as_slice()),
        )
    }

    pub(super) fn ns_failure(&mut self, wns: &WaymarkNamespace, reason: &str, message: &str) {
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

    pub(super) fn write_namespace_status(&mut self, name: &str) {
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
        if ns.owner == Owner::Api {
            return;
        }
        // A namespace another cluster created (a shared registry) is joined:
        // ready, with its settings left to its owner.
        let (reason, message) = match &ns.owner {
            Owner::Controller { cluster, .. } if *cluster != self.cluster_id => (
                "Joined",
                format!("the registry namespace exists, created by cluster {cluster}"),
            ),
            _ => ("Registered", "the registry namespace exists".to_string()),
        };
        self.metrics
            .reconciles
            .with_label_values(&["Namespace", "ok"])
            .inc();
        let status = NamespaceStatus {
            namespace_id: Some(ns.id.clone()),
            service_count: Some(index.service_count(&ns.id) as u32),
            observed_generation: wns.metadata.generation,
            conditions: vec![
                condition(previous, "Ready", true, reason, &message),
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
        let write = Write::NsStatus {
            name: name.to_string(),
            status: value,
        };
        if !self.queue_status(write) {
            // The next pass over the Namespace (its next change, or the
            // resync) writes it again.
            self.sent_ns_status.remove(name);
        }
    }

    /// Hands a status write to the writer task; false (logged) when its
    /// queue is full, so the caller arranges a retry instead of losing it.
    fn queue_status(&self, write: Write) -> bool {
        let accepted = self.writes.try_send(write).is_ok();
        if !accepted {
            warn!("status write queue full; the status is written again later");
        }
        accepted
    }
}

/// A status without its instance counts, to tell counts-only changes apart.
fn without_counts(status: &serde_json::Value) -> serde_json::Value {
    let mut v = status.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("instances");
        // Push times change with every registry change, like the counts.
        if let Some(xds) = o.get_mut("xds").and_then(|x| x.as_object_mut()) {
            xds.remove("lastPush");
        }
    }
    v
}

/// The conditions an object had before this write: those we last sent,
/// which are newer than what the watch may have shown us yet, else the
/// observed ones.
fn previous_conditions(
    sent: Option<&serde_json::Value>,
    observed: Option<&[Condition]>,
) -> Vec<Condition> {
    sent.and_then(|v| serde_json::from_value(v["conditions"].clone()).ok())
        .unwrap_or_else(|| observed.map(<[Condition]>::to_vec).unwrap_or_default())
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
