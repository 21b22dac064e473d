//! The registry: Cloud Map's domain model and rules, an in-memory index that
//! answers every read, and a durable [`Store`] behind one serialised write path.
//!
//! Nothing here knows about Kubernetes, HTTP or DNS. The API, the DNS server
//! and the controller are thin layers over [`Registry`].

pub mod attributes;
pub mod ids;
pub mod index;
pub mod model;
pub mod store;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

pub use attributes::StrMap;
pub use ids::ArnScope;
use ids::ResourceKind;
pub use index::{Index, ServiceEntry};
use model::*;
pub use store::{Change, MemoryStore, RedbStore, Store, StoreError};
use validate::*;

/// Errors of registry operations. Each variant maps onto one Cloud Map error
/// type (see [`Error::aws_type`]) so the API layer stays a thin translation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request value breaks a Cloud Map rule.
    #[error("{0}")]
    InvalidInput(String),
    /// No namespace with that id or name.
    #[error("Namespace not found: {0}")]
    NamespaceNotFound(String),
    /// No service with that id or name.
    #[error("Service not found: {0}")]
    ServiceNotFound(String),
    /// No instance with that id in the service.
    #[error("Instance not found: {instance_id} in service {service_id}")]
    InstanceNotFound {
        /// The service searched.
        service_id: String,
        /// The missing instance.
        instance_id: String,
    },
    /// No operation with that id.
    #[error("Operation not found: {0}")]
    OperationNotFound(String),
    /// A tagging call named an unknown resource.
    #[error("Resource not found: {0}")]
    ResourceNotFound(String),
    /// A namespace with that name exists.
    #[error("Namespace already exists: {name} ({namespace_id})")]
    NamespaceAlreadyExists {
        /// The conflicting name.
        name: String,
        /// The existing namespace's id.
        namespace_id: String,
        /// The creator request id of the existing namespace.
        creator_request_id: Option<String>,
    },
    /// A service with that name exists in the namespace.
    #[error("Service already exists: {name} ({service_id})")]
    ServiceAlreadyExists {
        /// The conflicting name.
        name: String,
        /// The existing service's id.
        service_id: String,
        /// The existing service's ARN.
        service_arn: String,
        /// The creator request id of the existing service.
        creator_request_id: Option<String>,
    },
    /// The resource still has children, or is managed by someone else.
    #[error("{0}")]
    ResourceInUse(String),
    /// A per-resource quota would be exceeded.
    #[error("{0}")]
    ResourceLimitExceeded(String),
    /// More than 30 service attributes.
    #[error("{0}")]
    ServiceAttributesLimitExceeded(String),
    /// More than 50 tags.
    #[error("Too many tags on {resource}: at most {max} are allowed")]
    TooManyTags {
        /// The resource ARN.
        resource: String,
        /// The limit.
        max: usize,
    },
    /// `UpdateInstanceCustomHealthStatus` on a service without custom health.
    #[error("Service {0} has no HealthCheckCustomConfig")]
    CustomHealthNotFound(String),
    /// The resource is managed by another owner (the controller or the API).
    #[error("{resource} is managed by {owner} and cannot be changed through {actor}")]
    OwnedElsewhere {
        /// What was to be changed.
        resource: String,
        /// Who manages it.
        owner: String,
        /// Who tried.
        actor: String,
    },
    /// The store failed; the write was not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// The Cloud Map `__type` for this error.
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "InvalidInput",
            Self::NamespaceNotFound(_) => "NamespaceNotFound",
            Self::ServiceNotFound(_) => "ServiceNotFound",
            Self::InstanceNotFound { .. } => "InstanceNotFound",
            Self::OperationNotFound(_) => "OperationNotFound",
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::NamespaceAlreadyExists { .. } => "NamespaceAlreadyExists",
            Self::ServiceAlreadyExists { .. } => "ServiceAlreadyExists",
            Self::ResourceInUse(_) | Self::OwnedElsewhere { .. } => "ResourceInUse",
            Self::ResourceLimitExceeded(_) => "ResourceLimitExceeded",
            Self::ServiceAttributesLimitExceeded(_) => "ServiceAttributesLimitExceededException",
            Self::TooManyTags { .. } => "TooManyTagsException",
            Self::CustomHealthNotFound(_) => "CustomHealthNotFound",
            Self::Store(_) => "InternalFailure",
        }
    }
}

/// Result alias for registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Region and account reported in ARNs.
    pub scope: ArnScope,
    /// How many operation records to keep; the oldest are dropped first.
    pub operation_retention: usize,
    /// Maximum instances per service (Cloud Map's fixed quota is 1,000).
    pub max_instances_per_service: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            scope: ArnScope::default(),
            operation_retention: 10_000,
            max_instances_per_service: MAX_INSTANCES_PER_SERVICE,
        }
    }
}

/// Describes an owner for error messages.
fn describe(owner: &Owner) -> String {
    match owner {
        Owner::Api => "the Cloud Map API".into(),
        Owner::Controller { cluster, object } => {
            format!("the Waymark controller of cluster {cluster:?} ({object})")
        }
    }
}

/// Fails unless `actor` may change a resource owned by `owner`. A controller
/// may manage what any controller of the same cluster created (the object may
/// have been renamed), never what the API created, and vice versa.
fn check_owner(resource: impl FnOnce() -> String, owner: &Owner, actor: &Owner) -> Result<()> {
    let allowed = match (owner, actor) {
        (Owner::Api, Owner::Api) => true,
        (Owner::Controller { cluster: a, .. }, Owner::Controller { cluster: b, .. }) => a == b,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::OwnedElsewhere {
            resource: resource(),
            owner: describe(owner),
            actor: describe(actor),
        })
    }
}

/// Cloud Map's defaults for a health check: `ResourcePath` `/` for HTTP(S),
/// `FailureThreshold` 1.
fn with_health_check_defaults(mut hc: HealthCheckConfig) -> HealthCheckConfig {
    if hc.kind != HealthCheckType::Tcp && hc.resource_path.is_none() {
        hc.resource_path = Some("/".into());
    }
    hc.failure_threshold.get_or_insert(1);
    hc
}

/// The current time in epoch milliseconds.
pub fn now_millis() -> EpochMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as EpochMillis)
}

/// A request to create a namespace.
#[derive(Debug, Clone)]
pub struct CreateNamespace {
    /// Namespace name.
    pub name: String,
    /// Namespace type.
    pub kind: NamespaceType,
    /// Description.
    pub description: Option<String>,
    /// SOA (negative caching) TTL for DNS namespaces.
    pub soa_ttl: Option<i64>,
    /// VPC id (private DNS namespaces).
    pub vpc: Option<String>,
    /// Idempotency token.
    pub creator_request_id: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Who creates it.
    pub owner: Owner,
}

/// Changes to a namespace; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateNamespace {
    /// New description.
    pub description: Option<String>,
    /// New SOA TTL (DNS namespaces).
    pub soa_ttl: Option<i64>,
    /// Idempotency token.
    pub updater_request_id: Option<String>,
}

/// A request to create a service.
#[derive(Debug, Clone)]
pub struct CreateService {
    /// Service name.
    pub name: String,
    /// The namespace (id or ARN).
    pub namespace_id: String,
    /// Description.
    pub description: Option<String>,
    /// DNS settings.
    pub dns_config: Option<DnsConfig>,
    /// Active health check.
    pub health_check_config: Option<HealthCheckConfig>,
    /// Custom health reporting.
    pub health_check_custom_config: Option<HealthCheckCustomConfig>,
    /// `Type: HTTP` — API-only even in a DNS namespace.
    pub http_only: bool,
    /// Idempotency token.
    pub creator_request_id: Option<String>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Who creates it.
    pub owner: Owner,
}

/// Changes to a service, with Cloud Map's `UpdateService` semantics.
#[derive(Debug, Clone, Default)]
pub struct UpdateService {
    /// New description (`None` keeps it).
    pub description: Option<String>,
    /// New record TTLs; the record types must stay the same.
    pub dns_records: Option<Vec<DnsRecord>>,
    /// The health check; omitting it removes an existing one.
    pub health_check_config: Option<HealthCheckConfig>,
}

/// A request to register (or update) an instance.
#[derive(Debug, Clone)]
pub struct RegisterInstance {
    /// The service (id or ARN).
    pub service_id: String,
    /// The instance id.
    pub instance_id: String,
    /// Attributes.
    pub attributes: Attributes,
    /// Idempotency token.
    pub creator_request_id: Option<String>,
    /// Who registers it.
    pub owner: Owner,
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// The operation record (for API writes; controller writes keep none).
    pub operation: Option<Operation>,
    /// Whether anything changed (an idempotent retry or no-op changes nothing).
    pub changed: bool,
}

/// An instance a controller wants registered (see [`Registry::sync_instances`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredInstance {
    /// Instance id.
    pub id: String,
    /// Attributes.
    pub attributes: Attributes,
    /// Health the controller reports (pod readiness); ignored when the
    /// service has no health check. `None` leaves the health of a custom
    /// health service to `UpdateInstanceCustomHealthStatus` calls.
    pub health: Option<HealthStatus>,
}

/// An active check's verdict on one instance (see [`Registry::apply_probe_verdicts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// Service id.
    pub service_id: String,
    /// Instance id.
    pub instance_id: String,
    /// Whether the check now passes (after its failure threshold).
    pub passing: bool,
}

/// An instance whose effective health changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFlip {
    /// Service id.
    pub service_id: String,
    /// Instance id.
    pub instance_id: String,
    /// Who owns the instance (the controller turns its own into Events).
    pub owner: Owner,
    /// Health before.
    pub from: HealthStatus,
    /// Health after.
    pub to: HealthStatus,
}

/// Which controller-owned instances a sync removes.
enum Removals {
    /// Every one not desired (a full sync).
    AllOthers,
    /// Only these ids (a partial sync).
    Only(Vec<String>),
}

/// One service's share of [`Registry::sync_partial`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSync {
    /// Service id.
    pub service_id: String,
    /// The controller that owns the instances.
    pub owner: Owner,
    /// Instances to register or update.
    pub upserts: Vec<DesiredInstance>,
    /// Instance ids to deregister (ignored when not owned by `owner`).
    pub removals: Vec<String>,
}

/// What [`Registry::sync_instances`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Instances newly registered.
    pub registered: usize,
    /// Instances whose attributes changed.
    pub updated: usize,
    /// Instances whose only change was their health.
    pub health_changed: usize,
    /// Instances deregistered because they are no longer desired.
    pub deregistered: usize,
    /// Desired instances that could not be registered, with the reason.
    pub rejected: Vec<(String, String)>,
}

impl SyncOutcome {
    /// Whether the registry changed.
    pub fn changed(&self) -> bool {
        self.registered + self.updated + self.health_changed + self.deregistered > 0
    }
}

/// The registry: one write path, many readers.
pub struct Registry {
    config: RegistryConfig,
    index: RwLock<Index>,
    // Serialises writes so each is validated against the state it will
    // modify, while readers only ever wait for the brief index update.
    writer: Mutex<()>,
    store: Box<dyn Store>,
    // Counts commits; subscribers (the prober, caches) wake on each.
    generation: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens a registry over a store, loading everything it holds.
    pub fn open(store: Box<dyn Store>, config: RegistryConfig) -> Result<Self> {
        let snapshot = store.load()?;
        Ok(Self {
            config,
            index: RwLock::new(Index::from_snapshot(snapshot)),
            writer: Mutex::new(()),
            store,
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A registry that persists nothing (for unit tests).
    pub fn in_memory() -> Self {
        Self::open(Box::new(MemoryStore), RegistryConfig::default())
            .expect("the memory store cannot fail")
    }

    /// Settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Read access to the index. Hold the guard briefly: writers wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated
        // (apply runs only after a successful commit and does not panic), so
        // a poisoned lock is still consistent.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Persists `changes` and then makes them visible to readers.
    fn commit(&self, changes: Vec<Change>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.store.commit(&changes)?;
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            index.apply(c);
        }
        drop(index);
        self.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// A receiver that sees the commit count change after every write, for
    /// components that follow the registry (the prober, answer caches).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The number of writes committed since the registry was opened.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A successful operation record plus the retention deletions it causes.
    fn record_operation(
        &self,
        index: &Index,
        changes: &mut Vec<Change>,
        kind: OperationType,
        targets: &[(TargetType, &str)],
        request_id: Option<&str>,
    ) -> Operation {
        let now = now_millis();
        let op = Operation {
            id: ids::operation_id(),
            kind,
            status: OperationStatus::Success,
            error_message: None,
            error_code: None,
            create_date: now,
            update_date: now,
            targets: targets
                .iter()
                .map(|(t, id)| (*t, id.to_string()))
                .collect::<BTreeMap<_, _>>(),
            request_id: request_id.map(str::to_string),
            sequence: index.next_operation_sequence(),
        };
        let excess = (index.operation_count() + 1).saturating_sub(self.config.operation_retention);
        for old in index.operations().take(excess) {
            changes.push(Change::DeleteOperation(old.id.clone()));
        }
        changes.push(Change::PutOperation(op.clone()));
        op
    }

    /// A previous operation for the same idempotency token and kind, if any.
    fn replay(index: &Index, request_id: Option<&str>, kind: OperationType) -> Option<Operation> {
        let op = index.operation_for_request(request_id?)?;
        (op.kind == kind).then(|| op.clone())
    }

    // ----- namespaces -------------------------------------------------------

    /// Creates a namespace (Cloud Map's `Create*Namespace`). The operation
    /// completes at once; the returned record is already `SUCCESS`.
    pub fn create_namespace(&self, req: CreateNamespace) -> Result<Operation> {
        namespace_name(&req.name, req.kind)?;
        if let Some(d) = &req.description {
            description(d)?;
        }
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        if let Some(t) = req.soa_ttl {
            if !req.kind.is_dns() {
                return Err(Error::InvalidInput(
                    "an SOA TTL can only be set on DNS namespaces".into(),
                ));
            }
            ttl("Properties.DnsProperties.SOA.TTL", t)?;
        }
        tags(&req.tags)?;
        if req.tags.len() > MAX_TAGS {
            return Err(Error::TooManyTags {
                resource: req.name.clone(),
                max: MAX_TAGS,
            });
        }

        let _w = self.lock_writer();
        let index = self.read();
        let existing = index.namespace_by_http_name(&req.name).or_else(|| {
            req.kind
                .is_dns()
                .then(|| index.namespace_by_zone(&req.name))
                .flatten()
        });
        if let Some(ns) = existing {
            // A retry of the same request returns the original operation.
            if req.creator_request_id.is_some()
                && ns.creator_request_id == req.creator_request_id
                && let Some(op) = Self::replay(
                    &index,
                    req.creator_request_id.as_deref(),
                    OperationType::CreateNamespace,
                )
            {
                return Ok(op);
            }
            return Err(Error::NamespaceAlreadyExists {
                name: req.name,
                namespace_id: ns.id.clone(),
                creator_request_id: ns.creator_request_id.clone(),
            });
        }

        let now = now_millis();
        let ns = Namespace {
            id: ids::namespace_id(),
            http_name: req.name.clone(),
            name: req.name,
            kind: req.kind,
            description: req.description,
            soa_ttl: if req.kind.is_dns() {
                // Route 53's default negative-caching TTL for new zones.
                Some(req.soa_ttl.unwrap_or(15))
            } else {
                None
            },
            hosted_zone_id: req.kind.is_dns().then(ids::hosted_zone_id),
            vpc: req.vpc,
            creator_request_id: req.creator_request_id,
            create_date: now,
            update_date: now,
            owner: req.owner,
            tags: req.tags,
        };
        let mut changes = vec![Change::PutNamespace(ns.clone())];
        let op = self.record_operation(
            &index,
            &mut changes,
            OperationType::CreateNamespace,
            &[(TargetType::Namespace, &ns.id)],
            ns.creator_request_id.as_deref(),
        );
        drop(index);
        self.commit(changes)?;
        Ok(op)
    }

    /// Updates a namespace's description and SOA TTL.
    pub fn update_namespace(
        &self,
        id: &str,
        update: UpdateNamespace,
        actor: &Owner,
    ) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Namespace);
        if let Some(d) = &update.description {
            description(d)?;
        }
        if let Some(r) = &update.updater_request_id {
            request_id("UpdaterRequestId", r)?;
        }
        let _w = self.lock_writer();
        let index = self.read();
        if let Some(op) = Self::replay(
            &index,
            update.updater_request_id.as_deref(),
            OperationType::UpdateNamespace,
        ) {
            return Ok(op);
        }
        let mut ns = index
            .namespace(id)
            .cloned()
            .ok_or_else(|| Error::NamespaceNotFound(id.to_string()))?;
        check_owner(|| format!("namespace {}", ns.name), &ns.owner, actor)?;
        if let Some(t) = update.soa_ttl {
            if !ns.kind.is_dns() {
                return Err(Error::InvalidInput(
                    "an SOA TTL can only be set on DNS namespaces".into(),
                ));
            }
            ttl("Properties.DnsProperties.SOA.TTL", t)?;
            ns.soa_ttl = Some(t);
        }
        if let Some(d) = update.description {
            ns.description = Some(d);
        }
        ns.update_date = now_millis();
        let mut changes = vec![Change::PutNamespace(ns.clone())];
        let op = self.record_operation(
            &index,
            &mut changes,
            OperationType::UpdateNamespace,
            &[(TargetType::Namespace, &ns.id)],
            update.updater_request_id.as_deref(),
        );
        drop(index);
        self.commit(changes)?;
        Ok(op)
    }

    /// Deletes a namespace that has no services.
    pub fn delete_namespace(&self, id: &str, actor: &Owner) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Namespace);
        let _w = self.lock_writer();
        let index = self.read();
        let ns = index
            .namespace(id)
            .ok_or_else(|| Error::NamespaceNotFound(id.to_string()))?;
        check_owner(|| format!("namespace {}", ns.name), &ns.owner, actor)?;
        let count = index.service_count(id);
        if count > 0 {
            return Err(Error::ResourceInUse(format!(
                "namespace {} still has {count} service(s); delete them first",
                ns.name
            )));
        }
        let mut changes = vec![Change::DeleteNamespace(id.to_string())];
        let op = self.record_operation(
            &index,
            &mut changes,
            OperationType::DeleteNamespace,
            &[(TargetType::Namespace, id)],
            None,
        );
        drop(index);
        self.commit(changes)?;
        Ok(op)
    }

    // ----- services ---------------------------------------------------------

    /// Creates a service (synchronous in Cloud Map).
    pub fn create_service(&self, req: CreateService) -> Result<Service> {
        service_name(&req.name)?;
        if let Some(d) = &req.description {
            description(d)?;
        }
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        if req.health_check_config.is_some() && req.health_check_custom_config.is_some() {
            return Err(Error::InvalidInput(
                "HealthCheckConfig and HealthCheckCustomConfig cannot both be specified".into(),
            ));
        }
        if let Some(hc) = &req.health_check_config {
            health_check_config(hc)?;
        }
        if let Some(dns) = &req.dns_config {
            dns_config(dns, req.health_check_config.as_ref())?;
        }
        tags(&req.tags)?;
        if req.tags.len() > MAX_TAGS {
            return Err(Error::TooManyTags {
                resource: req.name.clone(),
                max: MAX_TAGS,
            });
        }
        let namespace_id = ids::strip_arn(&req.namespace_id, ResourceKind::Namespace).to_string();

        let _w = self.lock_writer();
        let index = self.read();
        let ns = index
            .namespace(&namespace_id)
            .ok_or_else(|| Error::NamespaceNotFound(namespace_id.clone()))?;
        if req.dns_config.is_some() && !ns.kind.is_dns() {
            return Err(Error::InvalidInput(format!(
                "DnsConfig is not allowed for a service in the HTTP namespace {}",
                ns.name
            )));
        }
        if req.dns_config.is_some() && req.http_only {
            return Err(Error::InvalidInput(
                "a service of Type HTTP cannot have a DnsConfig".into(),
            ));
        }
        if let Some(existing) = index.service_by_name(&namespace_id, &req.name) {
            let s = &existing.service;
            if req.creator_request_id.is_some() && s.creator_request_id == req.creator_request_id {
                return Ok(s.clone());
            }
            return Err(Error::ServiceAlreadyExists {
                name: req.name,
                service_id: s.id.clone(),
                service_arn: self.config.scope.service_arn(&s.id),
                creator_request_id: s.creator_request_id.clone(),
            });
        }
        let now = now_millis();
        let svc = Service {
            id: ids::service_id(),
            name: req.name,
            namespace_id,
            description: req.description,
            kind: if req.dns_config.is_some() {
                ServiceType::DnsHttp
            } else {
                ServiceType::Http
            },
            dns_config: req.dns_config,
            health_check_config: req.health_check_config.map(with_health_check_defaults),
            // Cloud Map no longer supports the custom threshold and reports 1.
            health_check_custom_config: req.health_check_custom_config.map(|_| {
                HealthCheckCustomConfig {
                    failure_threshold: Some(1),
                }
            }),
            attributes: Attributes::new(),
            creator_request_id: req.creator_request_id,
            create_date: now,
            update_date: now,
            revision: 0,
            owner: req.owner,
            tags: req.tags,
        };
        drop(index);
        self.commit(vec![Change::PutService(svc.clone())])?;
        Ok(svc)
    }

    /// Updates a service (Cloud Map's `UpdateService`): TTLs may change but
    /// record types may not; the health check is replaced, and removed when
    /// omitted; custom health cannot be added or removed.
    pub fn update_service(
        &self,
        id: &str,
        update: UpdateService,
        actor: &Owner,
    ) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if let Some(d) = &update.description {
            description(d)?;
        }
        if let Some(hc) = &update.health_check_config {
            health_check_config(hc)?;
        }
        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(id)
            .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        let mut svc = entry.service.clone();
        check_owner(|| format!("service {}", svc.name), &svc.owner, actor)?;
        if update.health_check_config.is_some() && svc.health_check_custom_config.is_some() {
            return Err(Error::InvalidInput(
                "a service with HealthCheckCustomConfig cannot also have a HealthCheckConfig"
                    .into(),
            ));
        }
        if let Some(records) = update.dns_records {
            let Some(dns) = &svc.dns_config else {
                return Err(Error::InvalidInput(format!(
                    "service {} has no DnsConfig to update",
                    svc.name
                )));
            };
            let mut old: Vec<_> = dns.records.iter().map(|r| r.kind).collect();
            let mut new: Vec<_> = records.iter().map(|r| r.kind).collect();
            old.sort();
            new.sort();
            if old != new {
                return Err(Error::InvalidInput(
                    "the DNS record types of a service cannot be changed; only their TTLs".into(),
                ));
            }
            let updated = DnsConfig {
                routing_policy: dns.routing_policy,
                records,
            };
            dns_config(&updated, update.health_check_config.as_ref())?;
            svc.dns_config = Some(updated);
        } else if let Some(dns) = &svc.dns_config {
            dns_config(dns, update.health_check_config.as_ref())?;
        }
        if let Some(d) = update.description {
            svc.description = Some(d);
        }
        svc.health_check_config = update.health_check_config.map(with_health_check_defaults);
        svc.update_date = now_millis();
        let mut changes = vec![Change::PutService(svc.clone())];
        let op = self.record_operation(
            &index,
            &mut changes,
            OperationType::UpdateService,
            &[(TargetType::Service, &svc.id)],
            None,
        );
        drop(index);
        self.commit(changes)?;
        Ok(op)
    }

    /// Deletes a service that has no instances.
    pub fn delete_service(&self, id: &str, actor: &Owner) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(id)
            .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
        check_owner(
            || format!("service {}", entry.service.name),
            &entry.service.owner,
            actor,
        )?;
        if !entry.instances.is_empty() {
            return Err(Error::ResourceInUse(format!(
                "service {} still has {} instance(s); deregister them first",
                entry.service.name,
                entry.instances.len()
            )));
        }
        drop(index);
        self.commit(vec![Change::DeleteService(id.to_string())])
    }

    /// Adds or replaces service attributes (at most 30 in all).
    pub fn update_service_attributes(
        &self,
        id: &str,
        attrs: Attributes,
        actor: &Owner,
    ) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if attrs.is_empty() || attrs.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(Error::InvalidInput(format!(
                "Attributes must contain 1 to {MAX_SERVICE_ATTRIBUTES} entries"
            )));
        }
        service_attributes(&attrs)?;
        let _w = self.lock_writer();
        let index = self.read();
        let mut svc = index
            .service(id)
            .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?
            .service
            .clone();
        check_owner(|| format!("service {}", svc.name), &svc.owner, actor)?;
        svc.attributes.extend(&attrs);
        if svc.attributes.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(Error::ServiceAttributesLimitExceeded(format!(
                "service {} would have {} attributes; the maximum is {MAX_SERVICE_ATTRIBUTES}",
                svc.name,
                svc.attributes.len()
            )));
        }
        svc.update_date = now_millis();
        drop(index);
        self.commit(vec![Change::PutService(svc)])
    }

    /// Removes service attributes by key (unknown keys are ignored).
    pub fn delete_service_attributes(
        &self,
        id: &str,
        keys: &[String],
        actor: &Owner,
    ) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if keys.is_empty() || keys.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(Error::InvalidInput(format!(
                "Attributes must list 1 to {MAX_SERVICE_ATTRIBUTES} keys"
            )));
        }
        for k in keys {
            attribute_key(k)?;
        }
        let _w = self.lock_writer();
        let index = self.read();
        let mut svc = index
            .service(id)
            .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?
            .service
            .clone();
        check_owner(|| format!("service {}", svc.name), &svc.owner, actor)?;
        for k in keys {
            svc.attributes.remove(k);
        }
        svc.update_date = now_millis();
        drop(index);
        self.commit(vec![Change::PutService(svc)])
    }

    // ----- instances --------------------------------------------------------

    /// Registers an instance, or updates it when the id exists. The service's
    /// revision grows when the instance is new or its attributes change.
    pub fn register_instance(&self, req: RegisterInstance) -> Result<WriteOutcome> {
        instance_id(&req.instance_id)?;
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        let service_id = ids::strip_arn(&req.service_id, ResourceKind::Service).to_string();
        let record = !req.owner.is_controller();

        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(&service_id)
            .ok_or_else(|| Error::ServiceNotFound(service_id.clone()))?;
        let ns_type = index
            .namespace(&entry.service.namespace_id)
            .map_or(NamespaceType::Http, |n| n.kind);
        instance_attributes_for_service(&req.attributes, &entry.service, ns_type)?;
        let existing = entry.instances.get(&req.instance_id);
        if let Some(old) = existing {
            check_owner(
                || format!("instance {} of service {}", old.id, entry.service.name),
                &old.owner,
                &req.owner,
            )?;
            // A retry with the same token and attributes returns the original operation.
            if record
                && old.attributes == req.attributes
                && let Some(op) = Self::replay(
                    &index,
                    req.creator_request_id.as_deref(),
                    OperationType::RegisterInstance,
                )
                && op.targets.get(&TargetType::Instance) == Some(&req.instance_id)
            {
                return Ok(WriteOutcome {
                    operation: Some(op),
                    changed: false,
                });
            }
        } else if entry.instances.len() >= self.config.max_instances_per_service {
            return Err(Error::ResourceLimitExceeded(format!(
                "service {} already has {} instances, the maximum",
                entry.service.name,
                entry.instances.len()
            )));
        }
        let now = now_millis();
        let changed_attrs = existing.is_none_or(|o| o.attributes != req.attributes);
        let health = match existing {
            Some(old) => old.health,
            None if entry.service.health_check_custom_config.is_some() => {
                match req.attributes.get(AWS_INIT_HEALTH_STATUS) {
                    Some("UNHEALTHY") => HealthStatus::Unhealthy,
                    _ => HealthStatus::Healthy,
                }
            }
            None if entry.service.health_check_config.is_some() => HealthStatus::Healthy,
            None => HealthStatus::Unknown,
        };
        let inst = Instance {
            id: req.instance_id.clone(),
            service_id: service_id.as_str().into(),
            attributes: req.attributes,
            creator_request_id: req.creator_request_id.clone(),
            health,
            reported: existing.and_then(|o| o.reported),
            probe: existing.and_then(|o| o.probe),
            owner: Arc::new(req.owner),
            create_date: existing.map_or(now, |o| o.create_date),
            update_date: now,
        };
        let mut changes = Vec::new();
        let changed = existing.is_none_or(|o| {
            changed_attrs
                || o.owner != inst.owner
                || o.creator_request_id != inst.creator_request_id
        });
        if changed_attrs {
            let mut svc = entry.service.clone();
            svc.revision += 1;
            changes.push(Change::PutService(svc));
        }
        if changed {
            changes.push(Change::PutInstance(inst));
        }
        let operation = record.then(|| {
            self.record_operation(
                &index,
                &mut changes,
                OperationType::RegisterInstance,
                &[
                    (TargetType::Instance, &req.instance_id),
                    (TargetType::Service, &service_id),
                ],
                req.creator_request_id.as_deref(),
            )
        });
        drop(index);
        self.commit(changes)?;
        Ok(WriteOutcome { operation, changed })
    }

    /// Deregisters an instance; the service's revision grows.
    pub fn deregister_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        actor: &Owner,
    ) -> Result<WriteOutcome> {
        let service_id = ids::strip_arn(service_id, ResourceKind::Service);
        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(service_id)
            .ok_or_else(|| Error::ServiceNotFound(service_id.to_string()))?;
        let inst = entry
            .instances
            .get(instance_id)
            .ok_or_else(|| Error::InstanceNotFound {
                service_id: service_id.to_string(),
                instance_id: instance_id.to_string(),
            })?;
        check_owner(
            || format!("instance {} of service {}", inst.id, entry.service.name),
            &inst.owner,
            actor,
        )?;
        let mut svc = entry.service.clone();
        svc.revision += 1;
        let mut changes = vec![
            Change::DeleteInstance {
                service_id: service_id.to_string(),
                instance_id: instance_id.to_string(),
            },
            Change::PutService(svc),
        ];
        let operation = (!actor.is_controller()).then(|| {
            self.record_operation(
                &index,
                &mut changes,
                OperationType::DeregisterInstance,
                &[
                    (TargetType::Instance, instance_id),
                    (TargetType::Service, service_id),
                ],
                None,
            )
        });
        drop(index);
        self.commit(changes)?;
        Ok(WriteOutcome {
            operation,
            changed: true,
        })
    }

    /// Cloud Map's `UpdateInstanceCustomHealthStatus`: only for services with
    /// custom health, effective immediately, never changes the revision.
    pub fn update_custom_health(
        &self,
        service_id: &str,
        instance_id: &str,
        status: HealthStatus,
        actor: &Owner,
    ) -> Result<bool> {
        let service_id = ids::strip_arn(service_id, ResourceKind::Service);
        if status == HealthStatus::Unknown {
            return Err(Error::InvalidInput(
                "Status must be HEALTHY or UNHEALTHY".into(),
            ));
        }
        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(service_id)
            .ok_or_else(|| Error::ServiceNotFound(service_id.to_string()))?;
        if entry.service.health_check_custom_config.is_none() {
            return Err(Error::CustomHealthNotFound(service_id.to_string()));
        }
        let inst = entry
            .instances
            .get(instance_id)
            .ok_or_else(|| Error::InstanceNotFound {
                service_id: service_id.to_string(),
                instance_id: instance_id.to_string(),
            })?;
        // A controller's instance takes reports when the controller does not
        // report its health itself (a `Custom` ServiceDiscovery).
        if !(inst.owner.is_controller() && inst.reported.is_none()) {
            check_owner(
                || format!("instance {} of service {}", inst.id, entry.service.name),
                &inst.owner,
                actor,
            )?;
        }
        if inst.health == status {
            return Ok(false);
        }
        let inst = Instance {
            health: status,
            ..inst.clone()
        };
        drop(index);
        self.commit(vec![Change::PutInstance(inst)])?;
        Ok(true)
    }

    /// Records an instance's health (from a probe, pod readiness or a custom
    /// report). Returns whether it changed. Never changes the revision.
    pub fn set_health(
        &self,
        service_id: &str,
        instance_id: &str,
        status: HealthStatus,
        actor: &Owner,
    ) -> Result<bool> {
        let _w = self.lock_writer();
        let index = self.read();
        let entry = index
            .service(service_id)
            .ok_or_else(|| Error::ServiceNotFound(service_id.to_string()))?;
        let inst = entry
            .instances
            .get(instance_id)
            .ok_or_else(|| Error::InstanceNotFound {
                service_id: service_id.to_string(),
                instance_id: instance_id.to_string(),
            })?;
        check_owner(
            || format!("instance {} of service {}", inst.id, entry.service.name),
            &inst.owner,
            actor,
        )?;
        if inst.health == status {
            return Ok(false);
        }
        let mut inst = inst.clone();
        inst.health = status;
        drop(index);
        self.commit(vec![Change::PutInstance(inst)])?;
        Ok(true)
    }

    /// Records active-check verdicts (`true` passing) in one commit and
    /// returns the instances whose effective health changed. Verdicts for
    /// instances or services that are gone, or whose service no longer has an
    /// active check, are ignored: the prober works from a snapshot that a
    /// concurrent write may have overtaken.
    pub fn apply_probe_verdicts(&self, verdicts: &[ProbeVerdict]) -> Result<Vec<HealthFlip>> {
        let _w = self.lock_writer();
        let index = self.read();
        let mut changes = Vec::new();
        let mut flips = Vec::new();
        for v in verdicts {
            let Some(entry) = index.service(&v.service_id) else {
                continue;
            };
            if entry.service.health_check_config.is_none() {
                continue;
            }
            let Some(inst) = entry.instances.get(&v.instance_id) else {
                continue;
            };
            if inst.probe == Some(v.passing) {
                continue;
            }
            let health = entry
                .service
                .combined_health(inst.reported, Some(v.passing));
            if health != inst.health {
                flips.push(HealthFlip {
                    service_id: v.service_id.clone(),
                    instance_id: v.instance_id.clone(),
                    owner: Owner::clone(&inst.owner),
                    from: inst.health,
                    to: health,
                });
            }
            changes.push(Change::PutInstance(Instance {
                health,
                probe: Some(v.passing),
                ..inst.clone()
            }));
        }
        drop(index);
        self.commit(changes)?;
        Ok(flips)
    }

    /// Makes the instances a controller owns in a service exactly `desired`,
    /// in one atomic commit: new ones are registered, changed ones updated,
    /// missing ones deregistered, and health recorded. Instances owned by
    /// anyone else are never touched; a desired instance that fails
    /// validation or collides with someone else's is reported and skipped.
    /// The revision grows by the number of registrations, attribute changes
    /// and deregistrations; health changes alone leave it as it is.
    pub fn sync_instances(
        &self,
        service_id: &str,
        desired: Vec<DesiredInstance>,
        actor: &Owner,
    ) -> Result<SyncOutcome> {
        let _w = self.lock_writer();
        let index = self.read();
        let mut changes = Vec::new();
        let outcome = self.plan_sync(
            &index,
            &mut changes,
            service_id,
            desired,
            Removals::AllOthers,
            actor,
        )?;
        drop(index);
        self.commit(changes)?;
        Ok(outcome)
    }

    /// Applies several partial syncs — each only upserting and removing the
    /// instances it names — in one commit (one fsync), for a controller that
    /// follows individual pod changes. A sync whose service is gone fails on
    /// its own without holding back the others.
    pub fn sync_partial(&self, batch: Vec<PartialSync>) -> Result<Vec<Result<SyncOutcome>>> {
        let _w = self.lock_writer();
        let index = self.read();
        let mut changes = Vec::new();
        let mut results = Vec::with_capacity(batch.len());
        for p in batch {
            // Each sync sees the index before the batch; syncs of one batch
            // must therefore name distinct services.
            results.push(self.plan_sync(
                &index,
                &mut changes,
                &p.service_id,
                p.upserts,
                Removals::Only(p.removals),
                &p.owner,
            ));
        }
        drop(index);
        self.commit(changes)?;
        Ok(results)
    }

    /// The changes that bring a service's controller-owned instances to
    /// `desired` (see [`Registry::sync_instances`]).
    fn plan_sync(
        &self,
        index: &Index,
        changes: &mut Vec<Change>,
        service_id: &str,
        desired: Vec<DesiredInstance>,
        removals: Removals,
        actor: &Owner,
    ) -> Result<SyncOutcome> {
        let entry = index
            .service(service_id)
            .ok_or_else(|| Error::ServiceNotFound(service_id.to_string()))?;
        let ns_type = index
            .namespace(&entry.service.namespace_id)
            .map_or(NamespaceType::Http, |n| n.kind);
        let mine = |owner: &Owner| check_owner(String::new, owner, actor).is_ok();
        // One copy of the owner for every instance this sync writes.
        let owner = Arc::new(actor.clone());
        // Likewise the service id (the index then shares it with the
        // service's other instances).
        let service_arc: Arc<str> = Arc::from(service_id);
        let now = now_millis();
        let mut outcome = SyncOutcome::default();
        let mut keep = std::collections::HashSet::new();
        let mut count = entry.instances.len();
        for d in desired {
            if !keep.insert(d.id.clone()) {
                outcome
                    .rejected
                    .push((d.id, "duplicate instance id".into()));
                continue;
            }
            let existing = entry.instances.get(&d.id);
            // An unchanged instance needs no validation: it passed when stored.
            let same_attrs = existing.is_some_and(|o| o.attributes == d.attributes);
            if !same_attrs
                && let Err(e) = instance_id(&d.id).and_then(|()| {
                    instance_attributes_for_service(&d.attributes, &entry.service, ns_type)
                })
            {
                outcome.rejected.push((d.id, e.to_string()));
                continue;
            }
            // With an active check the pod's readiness is one of two inputs;
            // with custom health it is the health itself, unless the
            // controller leaves it to API reports.
            let active = entry.service.health_check_config.is_some();
            let custom = entry.service.health_check_custom_config.is_some();
            let reported = if active || custom { d.health } else { None };
            let probe = |old: Option<&Instance>| {
                if active {
                    old.and_then(|o| o.probe)
                } else {
                    None
                }
            };
            let health = match (custom, reported) {
                (true, Some(h)) => h,
                (true, None) => existing.map_or(HealthStatus::Healthy, |o| o.health),
                (false, _) => entry.service.combined_health(reported, probe(existing)),
            };
            match existing {
                Some(old) if !mine(&old.owner) => {
                    outcome.rejected.push((
                        d.id,
                        format!("the id is already registered by {}", describe(&old.owner)),
                    ));
                }
                Some(old) => {
                    if !same_attrs
                        || old.health != health
                        || old.reported != reported
                        || *old.owner != *actor
                    {
                        if !same_attrs {
                            outcome.updated += 1;
                        } else if old.health != health {
                            outcome.health_changed += 1;
                        }
                        changes.push(Change::PutInstance(Instance {
                            attributes: d.attributes,
                            health,
                            reported,
                            probe: probe(Some(old)),
                            owner: Arc::clone(&owner),
                            update_date: if same_attrs { old.update_date } else { now },
                            ..old.clone()
                        }));
                    }
                }
                None => {
                    if count >= self.config.max_instances_per_service {
                        outcome.rejected.push((
                            d.id,
                            format!(
                                "service {} already has {count} instances, the maximum",
                                entry.service.name
                            ),
                        ));
                        continue;
                    }
                    count += 1;
                    outcome.registered += 1;
                    changes.push(Change::PutInstance(Instance {
                        id: d.id,
                        service_id: Arc::clone(&service_arc),
                        attributes: d.attributes,
                        creator_request_id: None,
                        health,
                        reported,
                        probe: None,
                        owner: Arc::clone(&owner),
                        create_date: now,
                        update_date: now,
                    }));
                }
            }
        }
        let mut remove = |id: &String| {
            outcome.deregistered += 1;
            changes.push(Change::DeleteInstance {
                service_id: service_id.to_string(),
                instance_id: id.clone(),
            });
        };
        match removals {
            Removals::AllOthers => {
                for (id, inst) in &entry.instances {
                    if mine(&inst.owner) && !keep.contains(id) {
                        remove(id);
                    }
                }
            }
            Removals::Only(ids) => {
                for id in &ids {
                    if !keep.contains(id) && entry.instances.get(id).is_some_and(|i| mine(&i.owner))
                    {
                        remove(id);
                    }
                }
            }
        }
        let bump = (outcome.registered + outcome.updated + outcome.deregistered) as u64;
        if bump > 0 {
            let mut svc = entry.service.clone();
            svc.revision += bump;
            changes.push(Change::PutService(svc));
        }
        Ok(outcome)
    }

    // ----- tags -------------------------------------------------------------

    /// Adds or replaces tags on a namespace or service ARN.
    pub fn tag_resource(&self, arn: &str, new_tags: Vec<Tag>) -> Result<()> {
        tags(&new_tags)?;
        self.edit_tags(arn, |current| {
            for t in new_tags {
                match current.iter_mut().find(|c| c.key == t.key) {
                    Some(c) => c.value = t.value,
                    None => current.push(t),
                }
            }
        })
    }

    /// Removes tags by key from a namespace or service ARN.
    pub fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        self.edit_tags(arn, |current| current.retain(|t| !keys.contains(&t.key)))
    }

    /// The tags of a namespace or service ARN.
    pub fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let index = self.read();
        match ids::parse_arn(arn) {
            Some((ResourceKind::Namespace, id)) => index.namespace(id).map(|n| n.tags.clone()),
            Some((ResourceKind::Service, id)) => index.service(id).map(|s| s.service.tags.clone()),
            None => None,
        }
        .ok_or_else(|| Error::ResourceNotFound(arn.to_string()))
    }

    fn edit_tags(&self, arn: &str, edit: impl FnOnce(&mut Vec<Tag>)) -> Result<()> {
        let _w = self.lock_writer();
        let index = self.read();
        let not_found = || Error::ResourceNotFound(arn.to_string());
        let change = match ids::parse_arn(arn).ok_or_else(not_found)? {
            (ResourceKind::Namespace, id) => {
                let mut ns = index.namespace(id).cloned().ok_or_else(not_found)?;
                edit(&mut ns.tags);
                if ns.tags.len() > MAX_TAGS {
                    return Err(Error::TooManyTags {
                        resource: arn.to_string(),
                        max: MAX_TAGS,
                    });
                }
                Change::PutNamespace(ns)
            }
            (ResourceKind::Service, id) => {
                let mut svc = index.service(id).ok_or_else(not_found)?.service.clone();
                edit(&mut svc.tags);
                if svc.tags.len() > MAX_TAGS {
                    return Err(Error::TooManyTags {
                        resource: arn.to_string(),
                        max: MAX_TAGS,
                    });
                }
                Change::PutService(svc)
            }
        };
        drop(index);
        self.commit(vec![change])
    }
}

#[cfg(test)]
mod tests;
