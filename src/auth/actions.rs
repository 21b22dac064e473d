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

use std::borrow::Cow;

use serde::Deserialize;
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

/// The members of a Cloud Map request that name what it acts on, borrowed
/// from the request body. Read with a typed parse, not into a JSON tree:
/// this runs before every authorized call, DiscoverInstances included.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct Names<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "ResourceARN")]
    resource_arn: Option<Cow<'a, str>>,
}

impl<'a> Names<'a> {
    /// The names in a request body; none when it is not a JSON object of
    /// the expected shape (its handler then refuses it with a specific
    /// error, after a decision that could rely on no name).
    pub fn parse(body: &'a [u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// The names in a JSON request.
    pub fn of(body: &'a Value) -> Self {
        Names::deserialize(body).unwrap_or_default()
    }

    fn field(&self, name: &str) -> &str {
        let value = match name {
            "Id" => &self.id,
            "Name" => &self.name,
            "NamespaceId" => &self.namespace_id,
            "NamespaceName" => &self.namespace_name,
            "ServiceId" => &self.service_id,
            "ServiceName" => &self.service_name,
            "ResourceARN" => &self.resource_arn,
            _ => &None,
        };
        value.as_deref().unwrap_or("")
    }
}

/// The request context of `operation` with JSON `body` on `registry`.
pub fn request_context(registry: &Registry, operation: &str, body: &Value) -> RequestContext {
    request_context_of(registry, operation, &Names::of(body), true)
}

/// The request context of `operation` naming `names` on `registry`; its
/// condition keys only `with_keys` (policies without conditions never read
/// them, and DiscoverInstances is on the hot path).
pub fn request_context_of(
    registry: &Registry,
    operation: &str,
    names: &Names<'_>,
    with_keys: bool,
) -> RequestContext {
    let scope = &registry.config().scope;
    let field = |name: &str| names.field(name);
    let mut context = Context::new();
    let mut put = |key: &str, value: &str| {
        if with_keys && !value.is_empty() {
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
        // From the body alone: the hot path takes no registry lock here.
        "DiscoverInstances" | "DiscoverInstancesRevision" => {
            put(NAMESPACE_NAME, field("NamespaceName"));
            put(SERVICE_NAME, field("ServiceName"));
            "*".to_string()
        }
        _ => {
            let index = registry.read();
            match operation {
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
                        Some((ResourceKind::Namespace, id)) => {
                            namespace(&index, scope, id, &mut put)
                        }
                        Some((ResourceKind::Service, id)) => service(&index, scope, id, &mut put),
                        None => arn.to_string(),
                    }
                }
                // Every other operation names its service by `ServiceId`.
                _ => service(&index, scope, field("ServiceId"), &mut put),
            }
        }
    };
    // Waymark's ExplainInstance shows what GetInstance does and who owns
    // it: the same permission.
    let action = match operation {
        "ExplainInstance" => "GetInstance",
        other => other,
    };
    RequestContext {
        action: format!("servicediscovery:{action}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_the_body_and_other_members_skipped() {
        let body = br#"{"NamespaceName":"shop.local","ServiceName":"web","QueryParameters":{"env":"prod","x":[1,{"y":null}]},"MaxItems":5,"HealthStatus":"HEALTHY"}"#;
        let names = Names::parse(body);
        assert_eq!(names.field("NamespaceName"), "shop.local");
        assert_eq!(names.field("ServiceName"), "web");
        assert_eq!(names.field("Id"), "");
        // Escapes are decoded (an owned copy), as the handler will read them.
        let names = Names::parse(br#"{"ServiceName":"w\u0065b"}"#);
        assert_eq!(names.field("ServiceName"), "web");
        let arn =
            br#"{"ResourceARN":"arn:aws:servicediscovery:us-east-1:000000000000:service/srv-1"}"#;
        assert!(
            Names::parse(arn)
                .field("ResourceARN")
                .ends_with("service/srv-1")
        );
        // The same from a JSON value (the controller's calls).
        let v = serde_json::json!({"Id": "ns-1", "Name": "a"});
        let names = Names::of(&v);
        assert_eq!((names.field("Id"), names.field("Name")), ("ns-1", "a"));
    }

    #[test]
    fn a_body_of_the_wrong_shape_names_nothing() {
        for body in [&b"not json"[..], b"[1,2]", br#"{"ServiceName": 7}"#, b""] {
            let names = Names::parse(body);
            assert_eq!(names.field("ServiceName"), "", "{body:?}");
        }
    }
}
