//! What each Cloud Map operation asks permission for: its IAM action, the
//! resources (namespace and service ARNs, or `*`) and the condition keys,
//! following AWS's Service Authorization Reference for AWS Cloud Map.
//!
//! - Actions without resource-level permissions (`Create*Namespace`,
//!   `List*`, `GetOperation`, `DiscoverInstances*`) are on `*`.
//! - Namespace actions are on the namespace's ARN, service and instance
//!   actions on the service's, `CreateService` on its namespace's, tagging
//!   on the ARN named.
//! - Condition keys: `servicediscovery:NamespaceArn`,
//!   `servicediscovery:NamespaceName` and `servicediscovery:ServiceName`
//!   where the request or the registry tells them (`DiscoverInstances`
//!   from its body; the others by looking the named resource up).
//!
//! A named resource that does not exist still gets a decision, on its ARN
//! and with the keys it has not: a denied caller learns nothing of what
//! exists, because authorization comes before the operation answers
//! `…NotFound`.

use serde_json::Value;

use super::policy::Context;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::{Index, Registry};

/// The condition key of a namespace's ARN.
pub const NAMESPACE_ARN: &str = "servicediscovery:namespacearn";
/// The condition key of a namespace's name.
pub const NAMESPACE_NAME: &str = "servicediscovery:namespacename";
/// The condition key of a service's name.
pub const SERVICE_NAME: &str = "servicediscovery:servicename";

/// What one request asks permission for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// `servicediscovery:<Operation>`.
    pub action: String,
    /// ARNs, or `*`.
    pub resources: Vec<String>,
    /// Condition keys (lower-case) and values.
    pub context: Context,
}

/// The request context of `operation` with JSON `body` on `registry`.
pub fn request_context(registry: &Registry, operation: &str, body: &Value) -> RequestContext {
    let index = registry.read();
    let scope = &registry.config().scope;
    let field = |name: &str| body.get(name).and_then(Value::as_str).unwrap_or("");
    let mut context = Context::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            context.insert(key.to_string(), vec![value.to_string()]);
        }
    };
    let resource = match operation {
        "CreateHttpNamespace"
        | "CreatePrivateDnsNamespace"
        | "CreatePublicDnsNamespace"
        | "ListNamespaces"
        | "ListServices"
        | "ListOperations"
        | "GetOperation" => "*".to_string(),
        "DiscoverInstances" | "DiscoverInstancesRevision" => {
            put(NAMESPACE_NAME, field("NamespaceName"));
            put(SERVICE_NAME, field("ServiceName"));
            "*".to_string()
        }
        "UpdateHttpNamespace"
        | "UpdatePrivateDnsNamespace"
        | "UpdatePublicDnsNamespace"
        | "DeleteNamespace"
        | "GetNamespace" => namespace(&index, scope, field("Id"), &mut put),
        "CreateService" => {
            put(SERVICE_NAME, field("Name"));
            namespace(&index, scope, field("NamespaceId"), &mut put)
        }
        "GetService" | "UpdateService" | "DeleteService" => {
            service(&index, scope, field("Id"), &mut put)
        }
        "TagResource" | "UntagResource" | "ListTagsForResource" => {
            let arn = field("ResourceARN");
            match ids::parse_arn(arn) {
                Some((ResourceKind::Namespace, id)) => namespace(&index, scope, id, &mut put),
                Some((ResourceKind::Service, id)) => service(&index, scope, id, &mut put),
                None => arn.to_string(),
            }
        }
        // Every other operation names its service by `ServiceId`.
        _ => service(&index, scope, field("ServiceId"), &mut put),
    };
    RequestContext {
        action: format!("servicediscovery:{operation}"),
        resources: vec![resource],
        context,
    }
}

fn namespace(
    index: &Index,
    scope: &ids::ArnScope,
    id: &str,
    put: &mut impl FnMut(&str, &str),
) -> String {
    let id = ids::strip_arn(id, ResourceKind::Namespace);
    let arn = scope.namespace_arn(id);
    put(NAMESPACE_ARN, &arn);
    if let Some(ns) = index.namespace(id) {
        put(NAMESPACE_NAME, &ns.name);
    }
    arn
}

fn service(
    index: &Index,
    scope: &ids::ArnScope,
    id: &str,
    put: &mut impl FnMut(&str, &str),
) -> String {
    let id = ids::strip_arn(id, ResourceKind::Service);
    if let Some(entry) = index.service(id) {
        put(SERVICE_NAME, &entry.service.name);
        let ns = &entry.service.namespace_id;
        put(NAMESPACE_ARN, &scope.namespace_arn(ns));
        if let Some(ns) = index.namespace(ns) {
            put(NAMESPACE_NAME, &ns.name);
        }
    }
    scope.service_arn(id)
}
