//! The write requests the registry accepts and what each reports back.
//! Plain data: the API and the controller build them, `write/` carries them out.

use super::model::{
    Attributes, DnsConfig, DnsRecord, HealthCheckConfig, HealthCheckCustomConfig, HealthStatus,
    NamespaceType, Operation, Owner, Tag,
};

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

/// An instance a controller wants registered (see [`super::Registry::sync_instances`]).
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

/// An active check's verdict on one instance (see [`super::Registry::apply_probe_verdicts`]).
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

/// One service's share of [`super::Registry::sync_partial`].
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

/// What [`super::Registry::sync_instances`] did.
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
    /// Adds a later round of the same sync: its counts add up, and its
    /// rejections (every round sees every desired instance it reaches, the
    /// last one all of them) replace the earlier ones.
    pub fn absorb(&mut self, later: SyncOutcome) {
        self.registered += later.registered;
        self.updated += later.updated;
        self.health_changed += later.health_changed;
        self.deregistered += later.deregistered;
        self.rejected = later.rejected;
    }

    /// Whether the registry changed.
    pub fn changed(&self) -> bool {
        self.registered + self.updated + self.health_changed + self.deregistered > 0
    }
}
