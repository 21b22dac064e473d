//! One function per Cloud Map operation: parse the request shape, call the
//! registry, render the response shape. Grouped by resource, one file each,
//! with the request shapes next to the handlers that read them; `common.rs`
//! holds parsing, pagination and list filters.

mod common;
mod discovery;
mod instances;
mod namespaces;
mod operations;
mod services;
mod tags;

use self::common::parse;
use self::discovery::*;
use self::instances::*;
use self::namespaces::*;
use self::operations::*;
use self::services::*;
use self::tags::*;
use super::ApiError;
use crate::registry::Registry;
use crate::registry::model::*;

pub(super) type Result<T> = std::result::Result<T, ApiError>;

/// Every operation of the 2017-03-14 API.
pub const OPERATIONS: [&str; 30] = [
    "CreateHttpNamespace",
    "CreatePrivateDnsNamespace",
    "CreatePublicDnsNamespace",
    "UpdateHttpNamespace",
    "UpdatePrivateDnsNamespace",
    "UpdatePublicDnsNamespace",
    "DeleteNamespace",
    "GetNamespace",
    "ListNamespaces",
    "CreateService",
    "GetService",
    "UpdateService",
    "DeleteService",
    "ListServices",
    "GetServiceAttributes",
    "UpdateServiceAttributes",
    "DeleteServiceAttributes",
    "RegisterInstance",
    "DeregisterInstance",
    "GetInstance",
    "ListInstances",
    "GetInstancesHealthStatus",
    "UpdateInstanceCustomHealthStatus",
    "DiscoverInstances",
    "DiscoverInstancesRevision",
    "GetOperation",
    "ListOperations",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// Waymark's own operations on the same endpoint (`waymark inspect`), each
/// authorized as the Cloud Map action whose data it shows.
pub const EXTENSIONS: [&str; 1] = ["ExplainInstance"];

/// Whether `op` is a Cloud Map operation (or one of Waymark's extensions).
pub fn is_known(op: &str) -> bool {
    OPERATIONS.contains(&op) || EXTENSIONS.contains(&op)
}

/// Operations answered on the async worker (pure in-memory reads).
pub fn is_inline(op: &str) -> bool {
    matches!(op, "DiscoverInstances" | "DiscoverInstancesRevision")
}

/// Everything the API does on behalf of its callers is owned by the API.
pub(super) const API: Owner = Owner::Api;

/// Runs one operation and renders its JSON response body.
pub fn handle(registry: &Registry, op: &str, body: &[u8]) -> Result<String> {
    let out = match op {
        "CreateHttpNamespace" => create_namespace(registry, NamespaceType::Http, parse(body)?),
        "CreatePrivateDnsNamespace" => {
            create_namespace(registry, NamespaceType::DnsPrivate, parse(body)?)
        }
        "CreatePublicDnsNamespace" => {
            create_namespace(registry, NamespaceType::DnsPublic, parse(body)?)
        }
        "UpdateHttpNamespace" => update_namespace(registry, NamespaceType::Http, parse(body)?),
        "UpdatePrivateDnsNamespace" => {
            update_namespace(registry, NamespaceType::DnsPrivate, parse(body)?)
        }
        "UpdatePublicDnsNamespace" => {
            update_namespace(registry, NamespaceType::DnsPublic, parse(body)?)
        }
        "DeleteNamespace" => delete_namespace(registry, parse(body)?),
        "GetNamespace" => get_namespace(registry, parse(body)?),
        "ListNamespaces" => list_namespaces(registry, parse(body)?),
        "CreateService" => create_service(registry, parse(body)?),
        "GetService" => get_service(registry, parse(body)?),
        "UpdateService" => update_service(registry, parse(body)?),
        "DeleteService" => delete_service(registry, parse(body)?),
        "ListServices" => list_services(registry, parse(body)?),
        "GetServiceAttributes" => get_service_attributes(registry, parse(body)?),
        "UpdateServiceAttributes" => update_service_attributes(registry, parse(body)?),
        "DeleteServiceAttributes" => delete_service_attributes(registry, parse(body)?),
        "RegisterInstance" => register_instance(registry, parse(body)?),
        "DeregisterInstance" => deregister_instance(registry, parse(body)?),
        "GetInstance" => get_instance(registry, parse(body)?),
        "ExplainInstance" => explain_instance(registry, parse(body)?),
        "ListInstances" => list_instances(registry, parse(body)?),
        "GetInstancesHealthStatus" => get_instances_health_status(registry, parse(body)?),
        "UpdateInstanceCustomHealthStatus" => {
            update_custom_health(registry, parse(body)?)?;
            // The operation has no output shape: an empty body.
            return Ok(String::new());
        }
        // The hot path: rendered straight from the index (`render_discovered`).
        "DiscoverInstances" => return discover_instances(registry, parse(body)?),
        "DiscoverInstancesRevision" => discover_instances_revision(registry, parse(body)?),
        "GetOperation" => get_operation(registry, parse(body)?),
        "ListOperations" => list_operations(registry, parse(body)?),
        "TagResource" => tag_resource(registry, parse(body)?),
        "UntagResource" => untag_resource(registry, parse(body)?),
        "ListTagsForResource" => list_tags(registry, parse(body)?),
        other => {
            return Err(ApiError::new(
                "UnknownOperationException",
                format!("unknown operation {other:?}"),
            ));
        }
    }?;
    Ok(out.to_string())
}
