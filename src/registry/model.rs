//! The registry's domain model: Cloud Map's namespaces, services, instances and
//! operations, as plain data. Everything here is serialisable so the store can
//! persist it and a restart restores exactly the same registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Cloud Map reports dates as epoch seconds
/// with millisecond precision; keeping integers avoids float drift in the store.
pub type EpochMillis = i64;

/// Custom and reserved attributes of an instance, or attributes of a service.
/// Ordered so that serialisation, comparison and hashing are deterministic,
/// and compact because the registry holds one per instance.
pub type Attributes = super::attributes::StrMap;

/// The kind of a namespace, which decides how its services can be discovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NamespaceType {
    /// Discoverable through `DiscoverInstances` only.
    #[serde(rename = "HTTP")]
    Http,
    /// A private DNS zone plus `DiscoverInstances`.
    #[serde(rename = "DNS_PRIVATE")]
    DnsPrivate,
    /// A public DNS zone plus `DiscoverInstances`.
    #[serde(rename = "DNS_PUBLIC")]
    DnsPublic,
}

impl NamespaceType {
    /// Cloud Map's wire name (`HTTP`, `DNS_PRIVATE`, `DNS_PUBLIC`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::DnsPrivate => "DNS_PRIVATE",
            Self::DnsPublic => "DNS_PUBLIC",
        }
    }

    /// Whether the namespace is served as a DNS zone.
    pub fn is_dns(self) -> bool {
        !matches!(self, Self::Http)
    }
}

/// Who created (and therefore may change or delete) a resource.
///
/// The controller never touches what the API created and the API refuses to
/// change what the controller manages, so both writers can share one registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Owner {
    /// Created through the Cloud Map API (or by hand); the controller leaves it alone.
    #[default]
    Api,
    /// Managed by a Waymark controller on behalf of a Kubernetes object.
    Controller {
        /// The cluster the controller runs in, so several clusters can share a registry.
        cluster: String,
        /// The owning Kubernetes object, e.g. `ServiceDiscovery shop/inventory-manager`.
        object: String,
    },
}

impl Owner {
    /// Whether this owner is a controller (as opposed to the API).
    pub fn is_controller(&self) -> bool {
        matches!(self, Self::Controller { .. })
    }
}

/// An AWS resource tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Tag {
    /// Tag key, 1–128 characters.
    pub key: String,
    /// Tag value, 0–256 characters.
    pub value: String,
}

/// A Cloud Map namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// `ns-` followed by 16 lowercase alphanumerics.
    pub id: String,
    /// The namespace name (a DNS name for DNS namespaces).
    pub name: String,
    /// The name `DiscoverInstances` looks the namespace up by.
    pub http_name: String,
    /// HTTP, private DNS or public DNS.
    #[serde(rename = "type")]
    pub kind: NamespaceType,
    /// Free-text description.
    pub description: Option<String>,
    /// The negative-caching TTL of the zone's SOA (DNS namespaces only).
    pub soa_ttl: Option<i64>,
    /// Hosted-zone id reported for DNS namespaces.
    pub hosted_zone_id: Option<String>,
    /// VPC id given at creation of a private DNS namespace.
    pub vpc: Option<String>,
    /// The idempotency token of the creating request.
    pub creator_request_id: Option<String>,
    /// Creation time.
    pub create_date: EpochMillis,
    /// Last update time.
    pub update_date: EpochMillis,
    /// Who manages the namespace.
    pub owner: Owner,
    /// Resource tags.
    pub tags: Vec<Tag>,
}

/// A DNS record type a service registers for each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordType {
    /// IPv4 address record.
    A,
    /// IPv6 address record.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Service record with port.
    #[serde(rename = "SRV")]
    Srv,
    /// Canonical-name record.
    #[serde(rename = "CNAME")]
    Cname,
}

impl RecordType {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
            Self::Cname => "CNAME",
        }
    }
}

/// How DNS answers choose among instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum RoutingPolicy {
    /// Up to eight healthy records per answer.
    #[default]
    #[serde(rename = "MULTIVALUE")]
    Multivalue,
    /// One randomly chosen record per answer.
    #[serde(rename = "WEIGHTED")]
    Weighted,
}

impl RoutingPolicy {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Multivalue => "MULTIVALUE",
            Self::Weighted => "WEIGHTED",
        }
    }
}

/// One DNS record template of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Record type.
    #[serde(rename = "type")]
    pub kind: RecordType,
    /// Time to live, in seconds.
    pub ttl: i64,
}

/// The DNS settings of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Routing policy for answers.
    pub routing_policy: RoutingPolicy,
    /// Records to create for each instance.
    pub records: Vec<DnsRecord>,
}

impl DnsConfig {
    /// The record of the given type, if the service has one.
    pub fn record(&self, kind: RecordType) -> Option<&DnsRecord> {
        self.records.iter().find(|r| r.kind == kind)
    }
}

/// The protocol of an active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthCheckType {
    /// HTTP GET, healthy on 2xx/3xx.
    #[serde(rename = "HTTP")]
    Http,
    /// HTTPS GET, healthy on 2xx/3xx.
    #[serde(rename = "HTTPS")]
    Https,
    /// TCP connect.
    #[serde(rename = "TCP")]
    Tcp,
}

impl HealthCheckType {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Https => "HTTPS",
            Self::Tcp => "TCP",
        }
    }
}

/// An active health check (Cloud Map's `HealthCheckConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheckConfig {
    /// Protocol.
    #[serde(rename = "type")]
    pub kind: HealthCheckType,
    /// Path requested by HTTP/HTTPS checks; `None` means `/`. Never set for TCP.
    pub resource_path: Option<String>,
    /// Consecutive results needed to flip the status (1–10).
    pub failure_threshold: Option<i32>,
    /// Seconds between probes of one instance. Not part of Cloud Map's API
    /// (Route 53 probes every 30 s); set from a ServiceDiscovery's
    /// `spec.healthCheck`, `None` means the prober's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<u32>,
    /// Seconds a probe may take before it counts as a failure; `None` means
    /// the prober's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u32>,
}

/// Custom health reporting (Cloud Map's `HealthCheckCustomConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheckCustomConfig {
    /// Deprecated in Cloud Map and always reported as 1.
    pub failure_threshold: Option<i32>,
}

/// Cloud Map's service type, derived from how the service was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceType {
    /// Discoverable only through the API.
    #[serde(rename = "HTTP")]
    Http,
    /// Discoverable through the API and DNS.
    #[serde(rename = "DNS_HTTP")]
    DnsHttp,
    /// Discoverable through DNS only (reserved by Cloud Map).
    #[serde(rename = "DNS")]
    Dns,
}

impl ServiceType {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::DnsHttp => "DNS_HTTP",
            Self::Dns => "DNS",
        }
    }
}

/// A Cloud Map service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// `srv-` followed by 16 lowercase alphanumerics.
    pub id: String,
    /// Service name (a DNS label sequence).
    pub name: String,
    /// The namespace the service belongs to.
    pub namespace_id: String,
    /// Free-text description.
    pub description: Option<String>,
    /// How the service is discovered.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// DNS settings (services in DNS namespaces that are not API-only).
    pub dns_config: Option<DnsConfig>,
    /// Active health check.
    pub health_check_config: Option<HealthCheckConfig>,
    /// Custom health reporting.
    pub health_check_custom_config: Option<HealthCheckCustomConfig>,
    /// Service attributes (`UpdateServiceAttributes`).
    pub attributes: Attributes,
    /// The idempotency token of the creating request.
    pub creator_request_id: Option<String>,
    /// Creation time.
    pub create_date: EpochMillis,
    /// Last update time.
    pub update_date: EpochMillis,
    /// The `InstancesRevision`: grows on every register, deregister and
    /// attribute change of an instance, never on a health change.
    pub revision: u64,
    /// Who manages the service.
    pub owner: Owner,
    /// Resource tags.
    pub tags: Vec<Tag>,
}

impl Service {
    /// The effective health of an instance of this service from its parts:
    /// `UNKNOWN` without a health check; with an active check, HEALTHY only
    /// while both the owner's report (if any) and the probe (if any yet)
    /// pass; with custom health, the reported status.
    pub fn combined_health(
        &self,
        reported: Option<HealthStatus>,
        probe: Option<bool>,
    ) -> HealthStatus {
        if self.health_check_config.is_some() {
            let reported_ok = reported != Some(HealthStatus::Unhealthy);
            if reported_ok && probe.unwrap_or(true) {
                HealthStatus::Healthy
            } else {
                HealthStatus::Unhealthy
            }
        } else if self.health_check_custom_config.is_some() {
            reported.unwrap_or(HealthStatus::Healthy)
        } else {
            HealthStatus::Unknown
        }
    }

    /// Whether any health check (active or custom) is configured; without one,
    /// Cloud Map reports `UNKNOWN` and ignores health filters.
    pub fn has_health_check(&self) -> bool {
        self.health_check_config.is_some() || self.health_check_custom_config.is_some()
    }
}

/// The stored health of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// Passing.
    #[serde(rename = "HEALTHY")]
    Healthy,
    /// Failing.
    #[serde(rename = "UNHEALTHY")]
    Unhealthy,
    /// No health check is configured.
    #[serde(rename = "UNKNOWN")]
    Unknown,
}

impl HealthStatus {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "HEALTHY",
            Self::Unhealthy => "UNHEALTHY",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// A registered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Instance id, unique within its service.
    pub id: String,
    /// The service the instance belongs to (one copy shared by all its
    /// instances in the index).
    pub service_id: Arc<str>,
    /// Reserved (`AWS_*`) and custom attributes.
    pub attributes: Attributes,
    /// The idempotency token of the registering request.
    pub creator_request_id: Option<String>,
    /// The effective health every reader uses (meaningful only when the
    /// service has a health check): for services with an active check it
    /// combines [`Instance::reported`] and [`Instance::probe`].
    pub health: HealthStatus,
    /// Health reported by the owner alongside an active check: a pod's
    /// readiness, recorded by the controller. `None` for API instances,
    /// whose health the active check alone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<HealthStatus>,
    /// The active check's verdict (`true` passing). `None` until the first
    /// probe finishes (counted as passing, as Route 53 treats a new check)
    /// or when the service has no active check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<bool>,
    /// Who registered the instance (shared with the service's other
    /// instances of the same owner in the index).
    pub owner: Arc<Owner>,
    /// First registration time.
    pub create_date: EpochMillis,
    /// Last registration (update) time.
    pub update_date: EpochMillis,
    /// When [`Instance::health`] last changed (its registration counts as
    /// one): what `waymark inspect explain` shows as its last transition.
    /// 0 for records written before it was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub health_since: EpochMillis,
}

fn is_zero(t: &EpochMillis) -> bool {
    *t == 0
}

/// The kind of asynchronous operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    /// A namespace was created.
    CreateNamespace,
    /// A namespace was deleted.
    DeleteNamespace,
    /// A namespace was updated.
    UpdateNamespace,
    /// A service was updated.
    UpdateService,
    /// An instance was registered or updated.
    RegisterInstance,
    /// An instance was deregistered.
    DeregisterInstance,
}

impl OperationType {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateNamespace => "CREATE_NAMESPACE",
            Self::DeleteNamespace => "DELETE_NAMESPACE",
            Self::UpdateNamespace => "UPDATE_NAMESPACE",
            Self::UpdateService => "UPDATE_SERVICE",
            Self::RegisterInstance => "REGISTER_INSTANCE",
            Self::DeregisterInstance => "DEREGISTER_INSTANCE",
        }
    }
}

/// The state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationStatus {
    /// Accepted, not started.
    Submitted,
    /// Running.
    Pending,
    /// Finished successfully.
    Success,
    /// Finished with an error.
    Fail,
}

impl OperationStatus {
    /// Cloud Map's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "SUBMITTED",
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Fail => "FAIL",
        }
    }
}

/// What an operation acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetType {
    /// A namespace id.
    Namespace,
    /// A service id.
    Service,
    /// An instance id.
    Instance,
}

/// A record of an asynchronous Cloud Map operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// 32 characters, a dash, 8 characters.
    pub id: String,
    /// What was done.
    #[serde(rename = "type")]
    pub kind: OperationType,
    /// Where it stands.
    pub status: OperationStatus,
    /// Error message of a failed operation.
    pub error_message: Option<String>,
    /// Error code of a failed operation.
    pub error_code: Option<String>,
    /// Submission time.
    pub create_date: EpochMillis,
    /// Last status change.
    pub update_date: EpochMillis,
    /// The resources it acted on.
    pub targets: BTreeMap<TargetType, String>,
    /// The idempotency token of the request, used to answer retries with the
    /// same operation.
    pub request_id: Option<String>,
    /// Registry-wide submission order. Dates have millisecond resolution,
    /// so several operations can share one; retention and listing follow
    /// this instead.
    #[serde(default)]
    pub sequence: u64,
}
