//! The cluster-scoped `Namespace` custom resource: one registry namespace.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{limits, schema};

/// SOA TTL (negative-caching TTL, seconds) of a DNS namespace whose `spec.soaTtl` is unset.
pub const DEFAULT_SOA_TTL: u32 = 15;

/// A registry namespace: the equivalent of a Cloud Map HTTP, private DNS or public DNS
/// namespace. Services (`ServiceDiscovery` objects in any Kubernetes namespace) are created in
/// it by referring to it in `spec.namespaceRef.name`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "waymark.dev",
    version = "v1alpha1",
    kind = "Namespace",
    singular = "namespace",
    // Not `namespaces`: the API server parses `/apis/<group>/<version>/namespaces/<name>` as
    // "namespace <name>" (k8s.io/apiserver requestinfo.go), so a cluster-scoped resource with
    // that plural could be created and listed but never read, updated or deleted by name.
    plural = "waymarknamespaces",
    shortname = "wns",
    category = "waymark",
    status = "NamespaceStatus",
    derive = "PartialEq",
    doc = "A Waymark registry namespace (an AWS Cloud Map namespace): the DNS zone or HTTP \
           namespace that ServiceDiscovery objects register their services in. Cluster-scoped.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type", description = "Namespace type: Http, DnsPrivate or DnsPublic"),
    printcolumn(name = "ID", type_ = "string", json_path = ".status.namespaceId", description = "Registry namespace id (ns-...)"),
    printcolumn(name = "Services", type_ = "integer", json_path = ".status.serviceCount", description = "Number of services in the namespace"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Status of the Ready condition"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new(format!(
        "self.spec.type != 'DnsPublic' || \
         (has(self.spec.name) ? self.spec.name : self.metadata.name).matches('{}')",
        limits::HOSTNAME_PATTERN
    )).message(
        "the name of a DnsPublic namespace (spec.name, or metadata.name when unset) must be a \
         hostname: dot-separated labels of letters, digits and '-', each at most 63 characters"
    ),
    validation = Rule::new(
        "(has(self.spec.name) ? self.spec.name : self.metadata.name) == \
         (has(oldSelf.spec.name) ? oldSelf.spec.name : oldSelf.metadata.name)"
    ).message("the registry name (spec.name, or metadata.name when unset) is immutable"),
)]
#[x_kube(validation = Rule::new("self.type != 'Http' || !has(self.soaTtl)")
    .message("soaTtl is only allowed for DnsPrivate and DnsPublic namespaces (Http namespaces have no DNS zone)"))]
#[x_kube(validation = Rule::new(format!(
        "self.type == 'Http' || !has(self.name) || size(self.name) <= {}",
        limits::MAX_DNS_NAMESPACE_NAME_LEN
    ))
    .message("the name of a DNS namespace must be at most 253 characters"))]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Name of the namespace in the registry, as Cloud Map clients see it (for DNS
    /// namespaces, the zone: `quickship.local`). Defaults to `metadata.name`. Printable ASCII
    /// without spaces, must not start with `arn:`; at most 253 characters for DNS namespaces
    /// (a hostname for DnsPublic) and 1024 for Http namespaces. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_NAMESPACE_NAME_LEN), regex(pattern = limits::NAMESPACE_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("!self.startsWith('arn:')").message("name must not start with 'arn:'"))]
    pub name: Option<String>,

    /// Kind of namespace: `Http` (discoverable only through the DiscoverInstances API),
    /// `DnsPrivate` (API plus DNS, served to the cluster) or `DnsPublic` (API plus DNS, for a
    /// public zone). Immutable.
    #[serde(rename = "type")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("type is immutable"))]
    pub type_: NamespaceType,

    /// Free-form description, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_DESCRIPTION_LEN))]
    pub description: Option<String>,

    /// TTL in seconds of the zone's SOA record, which resolvers use to cache negative answers
    /// (NXDOMAIN, NODATA). 0 to 2147483647; defaults to 15. Only for DnsPrivate and DnsPublic
    /// namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = limits::MAX_TTL))]
    pub soa_ttl: Option<u32>,
}

impl NamespaceSpec {
    /// The SOA TTL to serve: `soaTtl`, or [`DEFAULT_SOA_TTL`].
    pub fn effective_soa_ttl(&self) -> u32 {
        self.soa_ttl.unwrap_or(DEFAULT_SOA_TTL)
    }
}

impl Namespace {
    /// The registry name of this namespace: `spec.name`, or `metadata.name` when unset.
    pub fn registry_name(&self) -> &str {
        self.spec
            .name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

/// Kind of registry namespace, as Cloud Map's namespace types.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceType {
    /// Cloud Map `HTTP`: instances are found through the DiscoverInstances API only.
    Http,
    /// Cloud Map `DNS_PRIVATE`: API plus DNS records served inside the cluster.
    DnsPrivate,
    /// Cloud Map `DNS_PUBLIC`: API plus DNS records for a public zone.
    DnsPublic,
}

impl NamespaceType {
    /// The Cloud Map API name of this type (`HTTP`, `DNS_PRIVATE`, `DNS_PUBLIC`).
    pub const fn cloud_map_name(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::DnsPrivate => "DNS_PRIVATE",
            Self::DnsPublic => "DNS_PUBLIC",
        }
    }

    /// Whether the namespace is a DNS zone (DnsPrivate or DnsPublic).
    pub const fn is_dns(self) -> bool {
        matches!(self, Self::DnsPrivate | Self::DnsPublic)
    }
}

/// Observed state of a registry namespace, written by the controller.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// Registry id of the namespace: `ns-` followed by 16 lowercase letters and digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_id: Option<String>,

    /// Number of services registered in the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_count: Option<u32>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state: `Ready` (the namespace exists in the registry and serves), `Synced`
    /// (the last reconciliation succeeded) and `Degraded`, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "schema::conditions")]
    pub conditions: Vec<Condition>,
}
