//! ECS-style automatic registration: a Kubernetes Service annotated with
//! `waymark.dev/namespace` gets a ServiceDiscovery that it owns, kept in line
//! with its annotations ([`automatic_discovery`], pure) and deleted when the
//! annotation or the Service goes. The ServiceDiscovery is then reconciled
//! like any other.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use tracing::{info, warn};

use super::Controller;
use super::cluster::{Cluster, Key, ServiceInfo};
use super::status::Write;
use crate::crd::ServiceDiscovery;

impl Controller {
    /// ECS-style automatic registration: keeps the ServiceDiscovery of an
    /// annotated Service in line with its annotations, and deletes it when
    /// the annotation (or the Service) goes.
    pub(super) fn reconcile_automatic(&mut self, key: &Key) {
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
            automatic_discovery(&key.0, &key.1, svc, &self.cluster).map(|o| (svc.uid.clone(), o))
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
}

/// The ServiceDiscovery Waymark creates for a Service annotated with
/// `waymark.dev/namespace` (ECS-style automatic registration), or `None`
/// when the Service is not annotated. The object is owned by the Service.
fn automatic_discovery(
    namespace: &str,
    name: &str,
    svc: &ServiceInfo,
    cluster: &Cluster,
) -> Option<serde_json::Value> {
    use super::cluster::{ANNOTATION_NAMESPACE, ANNOTATION_PORT, ANNOTATION_SERVICE_NAME};
    let registry_ns = svc.annotations.get(ANNOTATION_NAMESPACE)?;
    let port: Option<serde_json::Value> = match svc.annotations.get(ANNOTATION_PORT) {
        Some(p) => Some(match p.parse::<u16>() {
            Ok(n) => n.into(),
            Err(_) => p.clone().into(),
        }),
        None => svc.ports.first().map(|p| match (&p.name, &p.target) {
            // A named Service port resolves through its target port.
            (Some(name), _) => name.clone().into(),
            (None, IntOrString::Int(n)) => (*n).into(),
            (None, IntOrString::String(s)) => s.clone().into(),
        }),
    };
    let dns = cluster
        .namespaces
        .get(registry_ns)
        .filter(|n| n.spec.type_.is_dns())
        .map(|_| {
            let mut records = vec![serde_json::json!({"type": "A"})];
            if port.is_some() {
                records.push(serde_json::json!({"type": "SRV"}));
            }
            serde_json::json!({"records": records})
        });
    let mut labels = svc.labels.clone();
    labels.insert("app.kubernetes.io/managed-by".into(), "waymark".into());
    let mut spec = serde_json::json!({
        "namespaceRef": {"name": registry_ns},
        "serviceName": svc.annotations.get(ANNOTATION_SERVICE_NAME).map_or(name, String::as_str),
        "serviceRef": {"name": name},
    });
    if let Some(p) = port {
        spec["port"] = p;
    }
    if let Some(d) = dns {
        spec["dns"] = d;
    }
    Some(serde_json::json!({
        "apiVersion": crate::crd::API_VERSION,
        "kind": "ServiceDiscovery",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Service",
                "name": name,
                "uid": svc.uid,
                "controller": true,
                "blockOwnerDeletion": false,
            }],
        },
        "spec": spec,
    }))
}
