//! The in-memory index that answers every read.
//!
//! The index is a pure data structure: the registry computes a list of
//! [`Change`]s for each write, persists them, and then applies the same list
//! here. Loading at start-up applies the stored records the same way, so the
//! index after a restart is exactly the index before it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::model::{HealthStatus, Instance, Namespace, Operation, Service};
use super::store::{Change, Snapshot};

/// A service together with its instances.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// The service.
    pub service: Service,
    /// Its instances by id.
    pub instances: BTreeMap<String, Instance>,
}

impl ServiceEntry {
    /// The health Cloud Map reports for an instance of this service:
    /// `UNKNOWN` when the service has no health check.
    pub fn reported_health(&self, instance: &Instance) -> HealthStatus {
        if self.service.has_health_check() {
            instance.health
        } else {
            HealthStatus::Unknown
        }
    }
}

/// Normalises a DNS name for case-insensitive lookups.
pub fn dns_key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Every namespace, service, instance and retained operation, with the
/// secondary indexes reads need.
#[derive(Debug, Default, Clone)]
pub struct Index {
    namespaces: HashMap<String, Namespace>,
    namespace_by_http_name: HashMap<String, String>,
    namespace_by_zone: HashMap<String, String>,
    services: HashMap<String, ServiceEntry>,
    services_by_namespace: HashMap<String, BTreeMap<String, String>>,
    operations: HashMap<String, Operation>,
    operation_order: BTreeSet<(u64, String)>,
    operation_by_request: HashMap<String, String>,
    instance_count: usize,
    // Batches of changes applied since the registry was opened: the group
    // commit tells by it whether a write was planned on the current state.
    version: u64,
}

impl Index {
    /// Builds an index from a store snapshot.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let mut index = Self::default();
        // Parents before children: services need their namespace, instances their service.
        for n in snapshot.namespaces {
            index.apply(Change::PutNamespace(n));
        }
        for s in snapshot.services {
            index.apply(Change::PutService(s));
        }
        for i in snapshot.instances {
            index.apply(Change::PutInstance(i));
        }
        for o in snapshot.operations {
            index.apply(Change::PutOperation(o));
        }
        index
    }

    /// The key a service name is unique under within its namespace: DNS
    /// namespaces compare names case-insensitively, HTTP namespaces exactly.
    fn service_name_key(&self, namespace_id: &str, name: &str) -> String {
        match self.namespaces.get(namespace_id) {
            Some(ns) if ns.kind.is_dns() => name.to_ascii_lowercase(),
            _ => name.to_string(),
        }
    }

    /// Applies one change. Changes must be valid (the registry checks them).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::PutNamespace(ns) => {
                if let Some(old) = self.namespaces.get(&ns.id) {
                    self.namespace_by_http_name.remove(&old.http_name);
                    if old.kind.is_dns() {
                        self.namespace_by_zone.remove(&dns_key(&old.name));
                    }
                }
                self.namespace_by_http_name
                    .insert(ns.http_name.clone(), ns.id.clone());
                if ns.kind.is_dns() {
                    self.namespace_by_zone
                        .insert(dns_key(&ns.name), ns.id.clone());
                }
                self.services_by_namespace.entry(ns.id.clone()).or_default();
                self.namespaces.insert(ns.id.clone(), ns);
            }
            Change::DeleteNamespace(id) => {
                if let Some(old) = self.namespaces.remove(&id) {
                    self.namespace_by_http_name.remove(&old.http_name);
                    if old.kind.is_dns() {
                        self.namespace_by_zone.remove(&dns_key(&old.name));
                    }
                }
                self.services_by_namespace.remove(&id);
            }
            Change::PutService(svc) => {
                let key = self.service_name_key(&svc.namespace_id, &svc.name);
                let instances = match self.services.remove(&svc.id) {
                    Some(old) => {
                        let old_key =
                            self.service_name_key(&old.service.namespace_id, &old.service.name);
                        if let Some(names) = self
                            .services_by_namespace
                            .get_mut(&old.service.namespace_id)
                        {
                            names.remove(&old_key);
                        }
                        old.instances
                    }
                    None => BTreeMap::new(),
                };
                self.services_by_namespace
                    .entry(svc.namespace_id.clone())
                    .or_default()
                    .insert(key, svc.id.clone());
                self.services.insert(
                    svc.id.clone(),
                    ServiceEntry {
                        service: svc,
                        instances,
                    },
                );
            }
            Change::DeleteService(id) => {
                if let Some(old) = self.services.remove(&id) {
                    let key = self.service_name_key(&old.service.namespace_id, &old.service.name);
                    if let Some(names) = self
                        .services_by_namespace
                        .get_mut(&old.service.namespace_id)
                    {
                        names.remove(&key);
                    }
                    self.instance_count -= old.instances.len();
                }
            }
            Change::PutInstance(mut inst) => {
                if let Some(entry) = self.services.get_mut(&*inst.service_id) {
                    // A service's instances repeat its id and, nearly always,
                    // one owner: keep one copy of each (most of an instance's
                    // memory otherwise). The neighbours in id order are the
                    // likeliest to share the owner (instances are restored in
                    // that order, and one owner's ids tend to share a prefix).
                    use std::ops::Bound::{Excluded, Unbounded};
                    let id = inst.id.as_str();
                    let mut before = entry.instances.range::<str, _>((Unbounded, Excluded(id)));
                    let after = entry.instances.range::<str, _>((Excluded(id), Unbounded));
                    for other in before.next_back().into_iter().chain(after.take(1)) {
                        let other = other.1;
                        inst.service_id = Arc::clone(&other.service_id);
                        if other.owner == inst.owner {
                            inst.owner = Arc::clone(&other.owner);
                            break;
                        }
                    }
                    if entry.instances.insert(inst.id.clone(), inst).is_none() {
                        self.instance_count += 1;
                    }
                }
            }
            Change::DeleteInstance {
                service_id,
                instance_id,
            } => {
                if let Some(entry) = self.services.get_mut(&service_id)
                    && entry.instances.remove(&instance_id).is_some()
                {
                    self.instance_count -= 1;
                }
            }
            Change::PutOperation(op) => {
                if let Some(old) = self.operations.get(&op.id) {
                    self.operation_order.remove(&(old.sequence, old.id.clone()));
                }
                self.operation_order.insert((op.sequence, op.id.clone()));
                if let Some(r) = &op.request_id {
                    self.operation_by_request.insert(r.clone(), op.id.clone());
                }
                self.operations.insert(op.id.clone(), op);
            }
            Change::SetServiceRevision {
                service_id,
                revision,
            } => {
                if let Some(entry) = self.services.get_mut(&service_id) {
                    entry.service.revision = revision;
                }
            }
            Change::DeleteOperation(id) => {
                if let Some(old) = self.operations.remove(&id) {
                    self.operation_order.remove(&(old.sequence, old.id.clone()));
                    if let Some(r) = &old.request_id
                        && self.operation_by_request.get(r) == Some(&old.id)
                    {
                        self.operation_by_request.remove(r);
                    }
                }
            }
        }
    }

    /// How many batches of changes the index has taken (see [`Index::advance`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Marks the end of one batch of changes.
    pub fn advance(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Continues the version count of the index this one replaces.
    pub fn continue_from(&mut self, previous: &Index) {
        self.version = previous.version + 1;
    }

    /// Whether the record a change writes is in the index.
    pub fn holds(&self, change: &Change) -> bool {
        match change {
            Change::PutNamespace(n) => self.namespaces.contains_key(&n.id),
            Change::DeleteNamespace(id) => self.namespaces.contains_key(id),
            Change::PutService(s) => self.services.contains_key(&s.id),
            Change::DeleteService(id) => self.services.contains_key(id),
            Change::PutInstance(i) => self.instance(&i.service_id, &i.id).is_some(),
            Change::DeleteInstance {
                service_id,
                instance_id,
            } => self.instance(service_id, instance_id).is_some(),
            Change::PutOperation(o) => self.operations.contains_key(&o.id),
            Change::DeleteOperation(id) => self.operations.contains_key(id),
            Change::SetServiceRevision { service_id, .. } => self.services.contains_key(service_id),
        }
    }

    /// A namespace by id.
    pub fn namespace(&self, id: &str) -> Option<&Namespace> {
        self.namespaces.get(id)
    }

    /// All namespaces, in no particular order.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// A namespace by its `HttpName` (what `DiscoverInstances` looks up).
    pub fn namespace_by_http_name(&self, http_name: &str) -> Option<&Namespace> {
        self.namespace_by_http_name
            .get(http_name)
            .and_then(|id| self.namespaces.get(id))
    }

    /// A DNS namespace by zone name (case-insensitive, trailing dot optional).
    pub fn namespace_by_zone(&self, zone: &str) -> Option<&Namespace> {
        self.namespace_by_zone
            .get(&dns_key(zone))
            .and_then(|id| self.namespaces.get(id))
    }

    /// A DNS namespace by an already normalised zone key (lower case, no
    /// trailing dot, as [`dns_key`] makes it): the allocation-free lookup the
    /// DNS server uses on every query.
    pub fn namespace_by_zone_key(&self, key: &str) -> Option<&Namespace> {
        self.namespace_by_zone
            .get(key)
            .and_then(|id| self.namespaces.get(id))
    }

    /// A service of a DNS namespace by its already lower-case name (no
    /// allocation; the DNS server's per-query lookup). Services of HTTP
    /// namespaces are keyed by their exact name and may not be found here.
    pub fn service_by_dns_key(&self, namespace_id: &str, key: &str) -> Option<&ServiceEntry> {
        self.services_by_namespace
            .get(namespace_id)?
            .get(key)
            .and_then(|id| self.services.get(id))
    }

    /// The number of services in a namespace.
    pub fn service_count(&self, namespace_id: &str) -> usize {
        self.services_by_namespace
            .get(namespace_id)
            .map_or(0, BTreeMap::len)
    }

    /// A service (with its instances) by id.
    pub fn service(&self, id: &str) -> Option<&ServiceEntry> {
        self.services.get(id)
    }

    /// All services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.values()
    }

    /// The services of one namespace, ordered by name.
    pub fn services_in(&self, namespace_id: &str) -> impl Iterator<Item = &ServiceEntry> {
        self.services_by_namespace
            .get(namespace_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|id| self.services.get(id))
    }

    /// A service by name within a namespace (case-insensitive in DNS namespaces).
    pub fn service_by_name(&self, namespace_id: &str, name: &str) -> Option<&ServiceEntry> {
        let key = self.service_name_key(namespace_id, name);
        self.services_by_namespace
            .get(namespace_id)?
            .get(&key)
            .and_then(|id| self.services.get(id))
    }

    /// An instance.
    pub fn instance(&self, service_id: &str, instance_id: &str) -> Option<&Instance> {
        self.services.get(service_id)?.instances.get(instance_id)
    }

    /// The total number of instances in the registry.
    pub fn instance_count(&self) -> usize {
        self.instance_count
    }

    /// The number of services.
    pub fn service_total(&self) -> usize {
        self.services.len()
    }

    /// The number of namespaces.
    pub fn namespace_total(&self) -> usize {
        self.namespaces.len()
    }

    /// An operation record by id.
    pub fn operation(&self, id: &str) -> Option<&Operation> {
        self.operations.get(id)
    }

    /// The operation a request id produced, for idempotent retries.
    pub fn operation_for_request(&self, request_id: &str) -> Option<&Operation> {
        self.operation_by_request
            .get(request_id)
            .and_then(|id| self.operations.get(id))
    }

    /// Retained operations, oldest first.
    pub fn operations(&self) -> impl DoubleEndedIterator<Item = &Operation> {
        self.operation_order
            .iter()
            .filter_map(|(_, id)| self.operations.get(id))
    }

    /// The sequence number the next operation record gets.
    pub fn next_operation_sequence(&self) -> u64 {
        self.operation_order.last().map_or(1, |(seq, _)| seq + 1)
    }

    /// The number of retained operations.
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }
}
