//! The Waymark Namespace reconcile: creates and updates the registry
//! namespace, holds the Namespace's deletion (through its finalizer) while
//! ServiceDiscoveries use it, and deletes the registry namespace it owns
//! once the Namespace goes. Its status is written after the SDs of the same
//! pass (see `status`), so the service count is current.

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::status::Write;
use super::{Controller, NAMESPACE_FINALIZER};
use crate::crd::Namespace as WaymarkNamespace;
use crate::registry::model::{NamespaceType, Owner};
use crate::registry::{self, CreateNamespace, UpdateNamespace};

impl Controller {
    pub(super) fn reconcile_namespace(&mut self, name: &str) {
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
        let (create_op, update_op) = match kind {
            NamespaceType::Http => ("CreateHttpNamespace", "UpdateHttpNamespace"),
            NamespaceType::DnsPrivate => ("CreatePrivateDnsNamespace", "UpdatePrivateDnsNamespace"),
            NamespaceType::DnsPublic => ("CreatePublicDnsNamespace", "UpdatePublicDnsNamespace"),
        };
        let denied = match &existing {
            None => self
                .permitted(create_op, || serde_json::json!({"Name": registry_name}))
                .err(),
            Some(ns)
                if ns.owner != Owner::Api
                    && !self.owned_elsewhere(&ns.owner)
                    && ns.kind == kind
                    && (ns.description != wns.spec.description || ns.soa_ttl != soa_ttl) =>
            {
                self.permitted(update_op, || serde_json::json!({"Id": ns.id}))
                    .err()
            }
            Some(_) => None,
        };
        if let Some(message) = denied {
            self.ns_failure(&wns, "AccessDenied", &message);
            return;
        }
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
            Some(ns) if ns.owner == Owner::Api => Err(registry::Error::ResourceInUse(format!(
                "registry namespace {registry_name} already exists and is not managed by this Namespace"
            ))),
            Some(ns) if ns.kind != kind => Err(registry::Error::ResourceInUse(format!(
                "registry namespace {registry_name} exists with type {}",
                ns.kind.as_str()
            ))),
            // Another cluster's controller created it in a shared registry:
            // this cluster joins it and leaves its settings to that owner.
            Some(ns) if self.owned_elsewhere(&ns.owner) => Ok(()),
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
        self.permitted("DeleteNamespace", || serde_json::json!({"Id": ns.id}))?;
        match self.registry.delete_namespace(&ns.id, &ns.owner) {
            Ok(_) => {
                info!(namespace = %registry_name, "registry namespace deleted");
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }
}
