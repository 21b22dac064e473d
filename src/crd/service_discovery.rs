//! The namespaced `ServiceDiscovery` custom resource: one registry service and where its
//! instances come from.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{limits, schema};

/// TTL in seconds of a DNS record whose `ttl` is unset. Short, because pod instances come and
/// go (CoreDNS's kubernetes plugin uses 5).
pub const DEFAULT_RECORD_TTL: u32 = 10;
/// `drainSeconds` when unset: a terminating pod leaves the registry at once.
pub const DEFAULT_DRAIN_SECONDS: u32 = 0;
/// Failure threshold of an Http, Https or Tcp health check whose `failureThreshold` is unset
/// (Cloud Map's default).
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
/// Probe interval of an Http, Https or Tcp health check whose `intervalSeconds` is unset.
pub const DEFAULT_INTERVAL_SECONDS: u32 = 10;
/// Probe timeout of an Http, Https or Tcp health check whose `timeoutSeconds` is unset.
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 2;

/// A registry service (an AWS Cloud Map service) and the rules that turn the selected pods,
/// and static non-pod instances, into its instances.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "waymark.dev",
    version = "v1alpha1",
    kind = "ServiceDiscovery",
    singular = "servicediscovery",
    plural = "servicediscoveries",
    shortname = "sd",
    category = "waymark",
    namespaced,
    status = "ServiceDiscoveryStatus",
    derive = "PartialEq",
    doc = "A Waymark registry service (an AWS Cloud Map service) in the registry namespace named \
           by spec.namespaceRef. Its instances are the Ready pods chosen by spec.selector or \
           spec.serviceRef, plus the static instances in spec.instances.",
    printcolumn(name = "Registry-Namespace", type_ = "string", json_path = ".spec.namespaceRef.name", description = "The Waymark Namespace the service is registered in"),
    printcolumn(name = "Healthy", type_ = "integer", json_path = ".status.instances.healthy", description = "Number of healthy instances"),
    printcolumn(name = "Total", type_ = "integer", json_path = ".status.instances.total", description = "Number of registered instances"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Status of the Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Service-ID", type_ = "string", json_path = ".status.serviceId", description = "Registry service id (srv-...)", priority = 1),
    printcolumn(name = "DNS-Name", type_ = "string", json_path = ".status.dnsName", description = "DNS name of the service", priority = 1),
    validation = Rule::new(format!(
        "has(self.spec.serviceName) || \
         (size(self.metadata.name) <= {} && self.metadata.name.matches('{}'))",
        limits::MAX_SERVICE_NAME_LEN,
        limits::SERVICE_NAME_PATTERN
    )).message(
        "metadata.name is not a valid service name (dot-separated DNS labels of at most 63 \
         characters, 127 in total); set spec.serviceName"
    ),
)]
#[x_kube(validation = Rule::new("!(has(self.selector) && has(self.serviceRef))")
    .message("selector and serviceRef are mutually exclusive: set at most one"))]
#[x_kube(validation = Rule::new(
        "!has(self.dns) || !self.dns.records.exists(r, r.type == 'SRV') || has(self.port) \
         || !(has(self.selector) || has(self.serviceRef))"
    )
    .message("an SRV record needs spec.port (the pod port that becomes AWS_INSTANCE_PORT and the SRV port)"))]
#[x_kube(validation = Rule::new(
        "!has(self.dns) || !self.dns.records.exists(r, r.type == 'CNAME') || !has(self.healthCheck) \
         || !(self.healthCheck.type in ['Http', 'Https', 'Tcp'])"
    )
    .message("a CNAME record cannot be combined with an Http, Https or Tcp health check"))]
#[serde(rename_all = "camelCase")]
pub struct ServiceDiscoverySpec {
    /// The Waymark `Namespace` (cluster-scoped) that the service is registered in.
    pub namespace_ref: NamespaceReference,

    /// Name of the service in the registry; its DNS name is `<serviceName>.<namespace>`.
    /// Defaults to `metadata.name`. Dot-separated DNS labels of letters, digits, '-' and '_'
    /// (each at most 63 characters, 127 in total), e.g. `inventory-manager` or
    /// `_inventory._tcp` for SRV-style names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_SERVICE_NAME_LEN), regex(pattern = limits::SERVICE_NAME_PATTERN))]
    pub service_name: Option<String>,

    /// Free-form description of the service, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_DESCRIPTION_LEN))]
    pub description: Option<String>,

    /// Pods in this Kubernetes namespace that become instances (one per pod). Mutually
    /// exclusive with serviceRef. With neither, the service has only static instances and
    /// instances registered through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// A Kubernetes Service in this namespace whose pod selector (and ports, to resolve a
    /// named spec.port) are used instead of spec.selector. Mutually exclusive with selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ref: Option<ServiceReference>,

    /// Port of each pod instance: a number (1-65535) or the name of a container port (or of a
    /// port of the serviceRef Service). It becomes the AWS_INSTANCE_PORT attribute and the
    /// port of SRV records; required with an SRV record when pods are selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(
            "type(self) == int ? (self >= 1 && self <= 65535) \
             : (size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]'))"
        )
        .message("port must be a number from 1 to 65535 or a port name (at most 15 lowercase letters, digits and '-', with at least one letter)"))]
    pub port: Option<IntOrString>,

    /// DNS records of the service (DNS namespaces only). Without it, instances are
    /// discoverable through the DiscoverInstances API only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,

    /// How instance health is decided. Omitted: pod instances follow pod readiness
    /// (Readiness), static instances have no health check (health status UNKNOWN, always
    /// returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// Custom attributes added to every instance (pod and static), e.g. `environment: prod`.
    /// At most 30; keys 1-255 printable ASCII characters without spaces, values at most 1024
    /// printable ASCII characters (inner spaces and tabs allowed, no leading space).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::attributes")]
    pub attributes: BTreeMap<String, String>,

    /// Which pod labels become instance attributes. Omitted: none. A label that cannot become
    /// an attribute is skipped and listed in status.skippedLabels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_attributes: Option<LabelAttributes>,

    /// Static, non-pod instances of the service (a database table, an external endpoint), at
    /// most 100, each with a unique id. Put AWS_INSTANCE_IPV4 / AWS_INSTANCE_PORT (or
    /// AWS_INSTANCE_CNAME) in an instance's attributes to give it DNS records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_STATIC_INSTANCES))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub instances: Vec<StaticInstance>,

    /// Seconds a terminating pod stays registered as UNHEALTHY before it is deregistered, so
    /// that clients holding its address can finish. 0 to 3600; defaults to 0 (deregistered as
    /// soon as it starts terminating).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 3600))]
    pub drain_seconds: u32,

    /// Splits the requests of xDS clients (Envoy, proxyless gRPC) between subsets of the
    /// instances told apart by one attribute, for blue/green and canary releases: for example
    /// `{attribute: version, weights: {v1: 90, v2: 10}}`. Written to the registry service as
    /// its WAYMARK_TRAFFIC_SPLIT attribute; Cloud Map API and DNS answers are unaffected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_split: Option<TrafficSplit>,
}

/// A weighted split of a service's xDS traffic between attribute subsets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.weights.exists(v, self.weights[v] > 0)")
    .message("at least one weight must be above 0"))]
pub struct TrafficSplit {
    /// The instance attribute whose values name the subsets (a pod label copied as an
    /// attribute through spec.labelAttributes, or a static instance's attribute).
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[!-9;-~]+$"))]
    pub attribute: String,
    /// Relative weight per attribute value (1 to 16 values; a value's instances receive
    /// weight / sum of weights of the requests). Values may not contain `,` or `=`.
    #[schemars(schema_with = "schema::split_weights")]
    pub weights: BTreeMap<String, u32>,
}

impl TrafficSplit {
    /// The WAYMARK_TRAFFIC_SPLIT attribute value (`<attribute>:<value>=<weight>,…`).
    pub fn attribute_value(&self) -> String {
        let weights: Vec<String> = self
            .weights
            .iter()
            .map(|(v, w)| format!("{v}={w}"))
            .collect();
        format!("{}:{}", self.attribute, weights.join(","))
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl ServiceDiscovery {
    /// The registry name of this service: `spec.serviceName`, or `metadata.name` when unset.
    pub fn service_name(&self) -> &str {
        self.spec
            .service_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// Reference to a cluster-scoped Waymark `Namespace`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct NamespaceReference {
    /// `metadata.name` of the Waymark `Namespace` object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Reference to a Kubernetes Service in the same namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ServiceReference {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

/// DNS configuration of a service (Cloud Map `DnsConfig`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.records.exists(r, r.type == 'CNAME') || self.routingPolicy == 'Weighted'")
    .message("a CNAME record requires routingPolicy Weighted"))]
#[x_kube(validation = Rule::new("!self.records.exists(r, r.type == 'CNAME') || size(self.records) == 1")
    .message("a CNAME record must be the only record: it cannot be combined with A, AAAA or SRV"))]
#[x_kube(validation = Rule::new("self.records.all(r, self.records.exists_one(s, s.type == r.type))")
    .message("record types must be unique"))]
#[serde(rename_all = "camelCase")]
pub struct DnsConfig {
    /// How DNS answers are chosen: `Multivalue` (default: up to 8 healthy instances, or up to
    /// 8 unhealthy ones when none is healthy) or `Weighted` (one random instance; required for
    /// CNAME).
    #[serde(default)]
    pub routing_policy: RoutingPolicy,

    /// The record types served for each instance, each with its TTL. One or more of A, AAAA
    /// and SRV (each at most once), or a single CNAME.
    #[schemars(length(min = 1, max = 4))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub records: Vec<DnsRecord>,
}

/// One DNS record type of a service (Cloud Map `DnsRecord`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct DnsRecord {
    /// Record type: `A` (IPv4 of each instance), `AAAA` (IPv6), `SRV` (`1 1 <port>
    /// <instance>.<service>.<namespace>`, with A/AAAA records at that target) or `CNAME`
    /// (the AWS_INSTANCE_CNAME attribute).
    #[serde(rename = "type")]
    pub type_: RecordType,

    /// Time to live in seconds, 0 to 2147483647; defaults to 10.
    #[serde(default = "default_record_ttl")]
    #[schemars(range(max = limits::MAX_TTL))]
    pub ttl: u32,
}

fn default_record_ttl() -> u32 {
    DEFAULT_RECORD_TTL
}

/// DNS record type.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// IPv4 address record.
    A,
    /// IPv6 address record.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Service record (port and target host).
    #[serde(rename = "SRV")]
    Srv,
    /// Canonical-name record.
    #[serde(rename = "CNAME")]
    Cname,
}

impl RecordType {
    /// The Cloud Map API name of this record type.
    pub const fn cloud_map_name(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Srv => "SRV",
            Self::Cname => "CNAME",
        }
    }
}

/// DNS routing policy (Cloud Map `RoutingPolicy`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RoutingPolicy {
    /// Cloud Map `MULTIVALUE`: up to 8 healthy records per answer.
    #[default]
    Multivalue,
    /// Cloud Map `WEIGHTED`: one random record per answer.
    Weighted,
}

impl RoutingPolicy {
    /// The Cloud Map API name of this policy (`MULTIVALUE`, `WEIGHTED`).
    pub const fn cloud_map_name(self) -> &'static str {
        match self {
            Self::Multivalue => "MULTIVALUE",
            Self::Weighted => "WEIGHTED",
        }
    }
}

/// How the health of the service's instances is decided.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.path) || self.type in ['Http', 'Https']")
    .message("path is only allowed with an Http or Https health check"))]
#[x_kube(validation = Rule::new(
        "!(has(self.failureThreshold) || has(self.intervalSeconds) || has(self.timeoutSeconds)) \
         || self.type in ['Http', 'Https', 'Tcp']"
    )
    .message("failureThreshold, intervalSeconds and timeoutSeconds are only allowed with an Http, Https or Tcp health check"))]
#[x_kube(validation = Rule::new(
        "!has(self.timeoutSeconds) || !has(self.intervalSeconds) || self.timeoutSeconds <= self.intervalSeconds"
    )
    .message("timeoutSeconds must not exceed intervalSeconds"))]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `Readiness` (default): a pod instance is healthy while its pod is Ready.
    /// `Http` / `Https`: Waymark probes `path` on each instance (healthy on status 200-399).
    /// `Tcp`: Waymark opens a TCP connection to each instance.
    /// `Custom`: health is set through the UpdateInstanceCustomHealthStatus API.
    /// Http, Https and Tcp cannot be combined with a CNAME record.
    #[serde(rename = "type", default)]
    pub type_: HealthCheckType,

    /// Path probed by Http and Https health checks; must start with '/'. Defaults to `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_PATH_LEN))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must start with '/'"))]
    pub path: Option<String>,

    /// Consecutive probe results needed to change an instance's health, 1 to 10; defaults to
    /// 3. Http, Https and Tcp only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub failure_threshold: Option<u32>,

    /// Seconds between probes, 1 to 300; defaults to 10. Http, Https and Tcp only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub interval_seconds: Option<u32>,

    /// Seconds before a probe fails, 1 to 60 and at most intervalSeconds; defaults to 2. Http,
    /// Https and Tcp only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<u32>,
}

impl HealthCheck {
    /// `failureThreshold`, or [`DEFAULT_FAILURE_THRESHOLD`].
    pub fn effective_failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD)
    }

    /// `intervalSeconds`, or [`DEFAULT_INTERVAL_SECONDS`].
    pub fn effective_interval_seconds(&self) -> u32 {
        self.interval_seconds.unwrap_or(DEFAULT_INTERVAL_SECONDS)
    }

    /// `timeoutSeconds`, or [`DEFAULT_TIMEOUT_SECONDS`].
    pub fn effective_timeout_seconds(&self) -> u32 {
        self.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS)
    }

    /// `path`, or `/`.
    pub fn effective_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// Kind of health check.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HealthCheckType {
    /// Pod readiness decides (a Cloud Map custom health check driven by Kubernetes).
    #[default]
    Readiness,
    /// HTTP probe (Cloud Map `HTTP`).
    Http,
    /// HTTPS probe (Cloud Map `HTTPS`).
    Https,
    /// TCP connect probe (Cloud Map `TCP`).
    Tcp,
    /// Health set through UpdateInstanceCustomHealthStatus (Cloud Map custom health check).
    Custom,
}

impl HealthCheckType {
    /// Whether Waymark probes the instances itself (Http, Https or Tcp).
    pub const fn is_probe(self) -> bool {
        matches!(self, Self::Http | Self::Https | Self::Tcp)
    }
}

/// Which pod labels become instance attributes.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelAttributes {
    /// Label keys copied to attributes (attribute key = label key), or `*` for every label
    /// that is a valid attribute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = limits::MAX_LABEL_KEY_LEN), regex(pattern = limits::LABEL_KEY_OR_STAR_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub include: Vec<String>,

    /// Label keys never copied, even when include is `*` (e.g. `pod-template-hash`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = limits::MAX_LABEL_KEY_LEN), regex(pattern = limits::LABEL_KEY_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub exclude: Vec<String>,
}

/// A static, non-pod instance (Cloud Map `RegisterInstance` done declaratively).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct StaticInstance {
    /// Instance id, unique in the service: at most 64 letters, digits and `_/:.@-`. With an
    /// SRV record it becomes part of a DNS name.
    #[schemars(length(min = 1, max = limits::MAX_INSTANCE_ID_LEN), regex(pattern = limits::INSTANCE_ID_PATTERN))]
    pub id: String,

    /// Attributes of the instance, merged over spec.attributes. At most 30; same key and
    /// value rules as spec.attributes. Reserved keys such as AWS_INSTANCE_IPV4,
    /// AWS_INSTANCE_PORT and AWS_INSTANCE_CNAME give it DNS records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "schema::attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// Observed state of a registry service, written by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDiscoveryStatus {
    /// Registry id of the service: `srv-` followed by 16 lowercase letters and digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,

    /// DNS name of the service, `<serviceName>.<namespace>` (set for DNS namespaces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,

    /// Instance counts of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceCounts>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the registry was last brought in line with this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// Current state: `Ready` (registered and serving), `Synced` (the last reconciliation
    /// succeeded) and `Degraded` (working, with a problem such as skipped labels), each with a
    /// reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,

    /// Pod labels selected by spec.labelAttributes that could not become attributes, with the
    /// reason. Labels are never dropped silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["label"]))]
    pub skipped_labels: Vec<SkippedLabel>,

    /// What xDS clients (`--xds-addr`) of the replica writing this status reported about
    /// the service's resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xds: Option<XdsServiceStatus>,
}

/// What xDS clients reported about a service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct XdsServiceStatus {
    /// xDS clients (streams) connected to the replica writing this status that subscribe
    /// to the service's resources (or its subsets') by name.
    #[serde(default)]
    pub clients: u32,
    /// The last push of a change to the service's resources to one of those clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_push: Option<XdsPush>,
    /// The last configuration a client rejected (NACKed); the client keeps using its
    /// previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_nack: Option<XdsNack>,
}

/// A change pushed to xDS clients.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct XdsPush {
    /// When it was sent.
    pub time: Time,
    /// Milliseconds from the replica seeing the registry change to sending it.
    pub delay_milliseconds: u64,
}

/// A configuration an xDS client rejected.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct XdsNack {
    /// The rejected resource: `<service>.<namespace>`, or one of its subsets.
    pub resource: String,
    /// Its type: `listener`, `route`, `cluster` or `endpoint`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The rejected version.
    pub version: String,
    /// The client's reason.
    pub message: String,
    /// The client's node id.
    pub node: String,
    /// When the client rejected it.
    pub time: Time,
}

/// Instance counts of a service.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounts {
    /// Registered instances (pods and static instances).
    pub total: u32,
    /// Instances whose health status is HEALTHY (or UNKNOWN, without a health check).
    pub healthy: u32,
    /// Instances whose health status is UNHEALTHY, including draining pods.
    pub unhealthy: u32,
}

/// A pod label that could not become an instance attribute.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SkippedLabel {
    /// The label key.
    pub label: String,
    /// Why it was skipped: `InvalidKey` (not a valid attribute key), `InvalidValue` (a pod's
    /// value is not a valid attribute value), `TooManyAttributes` (the 30-attribute or
    /// 5000-character limit was reached), `Reserved` (an AWS_* key Waymark sets itself) or
    /// `Conflict` (the key is already set by spec.attributes or a static attribute).
    pub reason: SkippedLabelReason,
    /// Human-readable detail, e.g. the offending pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a pod label could not become an attribute.
#[derive(
    Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum SkippedLabelReason {
    /// The label key is not a valid attribute key.
    InvalidKey,
    /// A pod's label value is not a valid attribute value.
    InvalidValue,
    /// The instance already has the maximum number (or total size) of attributes.
    TooManyAttributes,
    /// The key is reserved (AWS_*), set by Waymark itself.
    Reserved,
    /// The key is already set by spec.attributes or a static attribute.
    Conflict,
}
