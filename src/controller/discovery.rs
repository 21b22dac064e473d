//! The ServiceDiscovery reconcile: a full pass plans an SD
//! ([`desired::plan`]) and applies the plan in one registry write; pod
//! changes of an SD with a cached clean plan are applied one pod at a time,
//! all SDs in one commit. Also the removal of what no SD asks for any more,
//! and the Events of active-check health flips.

use std::collections::{BTreeMap, BTreeSet};

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::Controller;
use super::cluster::Key;
use super::desired::{self, DesiredService, Plan, owner_object};
use super::status::SdOutcome;
use crate::crd::{InstanceCounts, ServiceDiscovery};
use crate::registry::model::{HealthCheckCustomConfig, HealthStatus, NamespaceType, Owner};
use crate::registry::{self, CreateService, DesiredInstance, UpdateService};
use crate::xds::snapshot::WAYMARK_TRAFFIC_SPLIT;
use serde_json::json;

/// What the last full reconcile of a ServiceDiscovery found, so pod changes
/// can be applied one pod at a time without planning every pod again.
pub(super) struct SdCache {
    service_id: String,
    object: String,
    dns_name: Option<String>,
    service_problems: Vec<desired::Problem>,
    pods: BTreeMap<String, desired::PodState>,
}

impl Controller {
    pub(super) fn reconcile_sd(&mut self, key: &Key) {
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
    pub(super) fn reconcile_pods(&mut self) {
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
        // Services the controller's principal may not change leave the
        // batch; the full pass reports the denial on the ServiceDiscovery.
        batch.retain(|p| {
            match self.instance_writes_permitted(&p.service_id, &p.upserts, &p.removals) {
                Ok(()) => true,
                Err(_) => {
                    failed.insert(p.service_id.clone());
                    false
                }
            }
        });
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
        let joined = existing
            .as_ref()
            .is_some_and(|svc| self.owned_elsewhere(&svc.owner));
        let service_id = match existing {
            // Another cluster created it in a shared registry: one service
            // holds the pods of both (Cloud Map's discovery across VPCs).
            // Its owner keeps its settings; this cluster syncs only its own
            // instances, which need the same record types and health model.
            Some(svc) if self.owned_elsewhere(&svc.owner) => {
                if let Err(message) = self.joinable(&svc, want, object) {
                    return SdOutcome::failed("ServiceNameConflict", message);
                }
                svc.id
            }
            Some(svc) if svc.owner != owner => {
                return SdOutcome::failed(
                    "ServiceNameConflict",
                    format!(
                        "service {} in namespace {} is already managed by {}",
                        want.name,
                        want.namespace,
                        describe_owner(&svc.owner)
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
                    if let Err(denied) = self.permitted("UpdateService", || json!({"Id": svc.id})) {
                        return SdOutcome::failed("AccessDenied", denied);
                    }
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
                if let Err(denied) = self.permitted(
                    "CreateService",
                    || json!({"Name": want.name, "NamespaceId": ns_id}),
                ) {
                    return SdOutcome::failed("AccessDenied", denied);
                }
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
        // The traffic split is the owner's to set; a cluster that joined
        // another's service leaves it alone.
        if !joined
            && let Err((reason, message)) = self.sync_traffic_split(&service_id, want, &owner)
        {
            return SdOutcome::failed(reason, message);
        }
        // A renamed service or a new namespaceRef leaves the old one behind:
        // removed when this cluster owns it, left when it was joined (the
        // cached plan names it; after a restart garbage collection does).
        self.remove_services_of(object, Some(&service_id));
        let key = (sd.namespace().unwrap_or_default(), sd.name_any());
        if let Some(previous) = self.sd_cache.get(&key).map(|c| c.service_id.as_str())
            && previous != service_id
            && self
                .registry
                .read()
                .service(previous)
                .is_some_and(|e| self.owned_elsewhere(&e.service.owner))
        {
            self.leave_service(previous, object);
        }
        if let Err(denied) = self.sync_permitted(&service_id, &plan.instances, &owner) {
            return SdOutcome::failed("AccessDenied", denied);
        }
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

    /// Active-check health flips of this controller's instances: an Event
    /// on the ServiceDiscovery (one per SD and direction per batch, naming
    /// up to five instances) and a status and readiness-gate refresh.
    pub(super) fn on_health_flips(&mut self, flips: Vec<registry::HealthFlip>) {
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

    /// Why this cluster cannot join `svc`, another cluster's service, for
    /// the ServiceDiscovery `object`, if it cannot.
    fn joinable(
        &self,
        svc: &crate::registry::model::Service,
        want: &DesiredService,
        object: &str,
    ) -> Result<(), String> {
        let by = describe_owner(&svc.owner);
        if !compatible(svc, want) {
            return Err(format!(
                "service {} in namespace {} is managed by {by} with other DNS records, routing \
                 or health model; a service shared by clusters needs the same ones",
                want.name, want.namespace
            ));
        }
        // Within this cluster one ServiceDiscovery syncs a service's pods.
        let index = self.registry.read();
        let other = index.service(&svc.id).and_then(|e| {
            e.instances.values().find_map(|i| match &*i.owner {
                Owner::Controller { cluster, object: o }
                    if *cluster == self.cluster_id && o != object =>
                {
                    Some(o.clone())
                }
                _ => None,
            })
        });
        match other {
            Some(o) => Err(format!(
                "service {} in namespace {} (managed by {by}) already holds this cluster's pods \
                 of {o}",
                want.name, want.namespace
            )),
            None => Ok(()),
        }
    }

    /// Makes the service's WAYMARK_TRAFFIC_SPLIT attribute what spec.trafficSplit
    /// asks for (the xDS server turns it into weighted routes); on failure,
    /// the condition reason and message.
    fn sync_traffic_split(
        &self,
        service_id: &str,
        want: &DesiredService,
        owner: &Owner,
    ) -> Result<(), (&'static str, String)> {
        let current = self.registry.read().service(service_id).and_then(|e| {
            e.service
                .attributes
                .get(WAYMARK_TRAFFIC_SPLIT)
                .map(String::from)
        });
        if current == want.traffic_split {
            return Ok(());
        }
        let result = match &want.traffic_split {
            Some(value) => {
                self.permitted("UpdateServiceAttributes", || {
                    json!({"ServiceId": service_id, "Attributes": {WAYMARK_TRAFFIC_SPLIT: value}})
                })
                .map_err(|denied| ("AccessDenied", denied))?;
                self.registry.update_service_attributes(
                    service_id,
                    [(WAYMARK_TRAFFIC_SPLIT, value.as_str())]
                        .into_iter()
                        .collect(),
                    owner,
                )
            }
            None => {
                self.permitted(
                    "DeleteServiceAttributes",
                    || json!({"ServiceId": service_id, "Attributes": [WAYMARK_TRAFFIC_SPLIT]}),
                )
                .map_err(|denied| ("AccessDenied", denied))?;
                self.registry.delete_service_attributes(
                    service_id,
                    &[WAYMARK_TRAFFIC_SPLIT.to_string()],
                    owner,
                )
            }
        };
        result.map_err(|e| ("RegistryError", e.to_string()))
    }

    /// Whether the ServiceDiscovery an owner marker names still exists.
    fn discovery_exists(&self, object: &str) -> bool {
        object
            .strip_prefix("ServiceDiscovery ")
            .and_then(|k| k.split_once('/'))
            .is_some_and(|(ns, name)| {
                self.cluster
                    .discoveries
                    .contains_key(&(ns.to_string(), name.to_string()))
            })
    }

    /// Removes what this cluster's controller owns but no object asks for any
    /// more: its services, and its instances in services other clusters
    /// own. Runs only once every watch has synced, so a restart never
    /// deregisters live pods; never touches another cluster's instances.
    pub(super) fn collect_garbage(&mut self) {
        let (owned, joined) = {
            let index = self.registry.read();
            let mut owned = Vec::new();
            let mut joined = BTreeSet::new();
            for e in index.services() {
                match &e.service.owner {
                    Owner::Controller { cluster, object } if *cluster == self.cluster_id => {
                        owned.push((e.service.id.clone(), object.clone()));
                    }
                    _ => {
                        for i in e.instances.values() {
                            if let Owner::Controller { cluster, object } = &*i.owner
                                && *cluster == self.cluster_id
                            {
                                joined.insert((e.service.id.clone(), object.clone()));
                            }
                        }
                    }
                }
            }
            (owned, joined)
        };
        for (id, object) in owned {
            if !self.discovery_exists(&object) {
                info!(service = %id, %object, "removing a service whose ServiceDiscovery no longer exists");
                self.remove_service(&id, &object);
            }
        }
        for (id, object) in joined {
            if !self.discovery_exists(&object) {
                info!(service = %id, %object, "removing this cluster's instances of a ServiceDiscovery that no longer exists");
                self.leave_service(&id, &object);
            }
        }
    }

    /// Whether the controller's principal may register `upserts` in the
    /// service and deregister `removals` from it (the Cloud Map calls
    /// `RegisterInstance` and `DeregisterInstance` on the service).
    fn instance_writes_permitted(
        &self,
        service_id: &str,
        upserts: &[DesiredInstance],
        removals: &[String],
    ) -> Result<(), String> {
        if let Some(first) = upserts.first() {
            self.permitted(
                "RegisterInstance",
                || json!({"ServiceId": service_id, "InstanceId": first.id}),
            )?;
        }
        if let Some(first) = removals.first() {
            self.permitted(
                "DeregisterInstance",
                || json!({"ServiceId": service_id, "InstanceId": first}),
            )?;
        }
        Ok(())
    }

    /// Whether the controller's principal may sync the service's instances
    /// of `owner` to `instances`: register those, deregister the others.
    fn sync_permitted(
        &self,
        service_id: &str,
        instances: &[DesiredInstance],
        owner: &registry::model::Owner,
    ) -> Result<(), String> {
        if self.acting.is_none() {
            return Ok(());
        }
        let stale: Vec<String> = {
            let index = self.registry.read();
            index
                .service(service_id)
                .map(|e| {
                    e.instances
                        .values()
                        .filter(|i| *i.owner == *owner && !instances.iter().any(|d| d.id == i.id))
                        .take(1)
                        .map(|i| i.id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        self.instance_writes_permitted(service_id, instances, &stale)
    }

    fn remove_service(&self, id: &str, object: &str) {
        let owner = self.owner(object.to_string());
        let allowed = self
            .sync_permitted(id, &[], &owner)
            .and_then(|()| self.permitted("DeleteService", || json!({"Id": id})));
        if let Err(denied) = allowed {
            warn!(service = %id, "cannot remove service: {denied}");
            return;
        }
        if let Err(e) = self
            .registry
            .sync_instances(id, Vec::new(), &owner)
            .and_then(|_| self.registry.delete_service(id, &owner))
        {
            // Other clusters' instances keep a shared service; garbage
            // collection tries again once they are gone.
            warn!(service = %id, error = %e, "cannot remove service");
        }
    }

    /// Deregisters this cluster's instances from another cluster's service.
    fn leave_service(&self, id: &str, object: &str) {
        let owner = self.owner(object.to_string());
        if let Err(denied) = self.sync_permitted(id, &[], &owner) {
            warn!(service = %id, "cannot deregister this cluster's instances: {denied}");
            return;
        }
        if let Err(e) = self.registry.sync_instances(id, Vec::new(), &owner) {
            warn!(service = %id, error = %e, "cannot deregister this cluster's instances");
        }
    }

    /// Removes the services `object` owns, except `keep`. Without `keep`
    /// (the ServiceDiscovery is gone) also its instances in other clusters'
    /// services — a scan of every instance, so only on that rare path.
    pub(super) fn remove_services_of(&self, object: &str, keep: Option<&str>) {
        let (owned, joined): (Vec<String>, Vec<String>) = {
            let index = self.registry.read();
            let mine = |o: &Owner| {
                matches!(o, Owner::Controller { cluster, object: x }
                    if *cluster == self.cluster_id && x == object)
            };
            let others = index
                .services()
                .filter(|e| Some(e.service.id.as_str()) != keep);
            let (owned, rest): (Vec<_>, Vec<_>) = others.partition(|e| mine(&e.service.owner));
            let joined = match keep {
                Some(_) => Vec::new(),
                None => rest
                    .iter()
                    .filter(|e| e.instances.values().any(|i| mine(&i.owner)))
                    .map(|e| e.service.id.clone())
                    .collect(),
            };
            (owned.iter().map(|e| e.service.id.clone()).collect(), joined)
        };
        for id in owned {
            self.remove_service(&id, object);
        }
        for id in joined {
            self.leave_service(&id, object);
        }
    }
}

/// Who manages a registry resource, for messages.
fn describe_owner(owner: &Owner) -> String {
    match owner {
        Owner::Api => "the Cloud Map API".to_string(),
        Owner::Controller { cluster, object } => format!("{object} (cluster {cluster})"),
    }
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
