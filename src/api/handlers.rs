//! One function per Cloud Map operation: parse the request shape, call the
//! registry, render the response shape.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::discover::{self, HealthFilter};
use super::{ApiError, wire};
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::*;
use crate::registry::validate;
use crate::registry::{self as reg, Registry, ServiceEntry};

type Result<T> = std::result::Result<T, ApiError>;

/// Every operation of the 2017-03-14 API.
const OPERATIONS: [&str; 30] = [
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

/// Whether `op` is a Cloud Map operation.
pub fn is_known(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

/// Operations answered on the async worker (pure in-memory reads).
pub fn is_inline(op: &str) -> bool {
    matches!(op, "DiscoverInstances" | "DiscoverInstancesRevision")
}

/// Everything the API does on behalf of its callers is owned by the API.
const API: Owner = Owner::Api;

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

/// Parses a request body. An empty body is an empty object, as SDKs send
/// `{}` for requests without members.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    // Malformed JSON and members of the wrong type are both
    // SerializationException in the AWS JSON protocol.
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            "SerializationException",
            format!("cannot parse the request body: {e}"),
        )
    })
}

fn required<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| ApiError::invalid(format!("{field} is required")))
}

fn required_str(value: Option<String>, field: &str) -> Result<String> {
    match value {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(ApiError::invalid(format!("{field} is required"))),
    }
}

/// Epoch seconds with millisecond precision, as Cloud Map reports dates.
fn date(ms: EpochMillis) -> Value {
    json!(ms as f64 / 1000.0)
}

fn max_results(value: Option<i64>, max: i64, default: i64) -> Result<usize> {
    match value {
        None => Ok(default as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::invalid(format!(
            "MaxResults must be between 1 and {max} (got {n})"
        ))),
    }
}

fn tags(list: Option<Vec<wire::Tag>>) -> Result<Vec<Tag>> {
    list.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Tag {
                key: required(t.key, &format!("Tags[{i}].Key"))?,
                value: required(t.value, &format!("Tags[{i}].Value"))?,
            })
        })
        .collect()
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Array(
        tags.iter()
            .map(|t| json!({"Key": t.key, "Value": t.value}))
            .collect(),
    )
}

// ----- pagination -----------------------------------------------------------

/// Opaque page tokens: the hex-encoded sort key of the last item returned.
/// Resuming after a key (not an offset) keeps pages stable while the
/// registry changes between calls.
fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String> {
    let bad = || ApiError::invalid("NextToken is not a valid pagination token");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// One page of `items` (sorted by key) after `token`, and the next token.
fn paginate<T>(
    mut items: Vec<(String, T)>,
    token: Option<String>,
    max: usize,
) -> Result<(Vec<T>, Option<String>)> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match token.filter(|t| !t.is_empty()) {
        Some(t) => {
            let after = decode_token(&t)?;
            items.partition_point(|(k, _)| *k <= after)
        }
        None => 0,
    };
    let mut rest: Vec<(String, T)> = items.into_iter().skip(start).collect();
    let next = (rest.len() > max).then(|| encode_token(&rest[max - 1].0));
    rest.truncate(max);
    Ok((rest.into_iter().map(|(_, v)| v).collect(), next))
}

fn page_json(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(items));
    if let Some(n) = next {
        out.insert("NextToken".into(), n.into());
    }
    Value::Object(out)
}

/// A list filter with its condition checked against what the field allows.
struct ParsedFilter {
    name: String,
    values: Vec<String>,
    condition: String,
}

fn parse_filters(
    filters: Option<Vec<wire::Filter>>,
    allowed: &[(&str, &[&str])],
) -> Result<Vec<ParsedFilter>> {
    let mut out = Vec::new();
    for (i, f) in filters.unwrap_or_default().into_iter().enumerate() {
        let name = required_str(f.name, &format!("Filters[{i}].Name"))?;
        let Some((_, conditions)) = allowed.iter().find(|(n, _)| *n == name) else {
            return Err(ApiError::invalid(format!(
                "Filters[{i}].Name {name:?} is not one of {}",
                allowed
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let values = required(f.values, &format!("Filters[{i}].Values"))?;
        let condition = f.condition.unwrap_or_else(|| "EQ".into());
        if !conditions.contains(&condition.as_str()) {
            return Err(ApiError::invalid(format!(
                "Filters[{i}].Condition {condition:?} is not allowed for {name} (allowed: {})",
                conditions.join(", ")
            )));
        }
        let count_ok = match condition.as_str() {
            "EQ" | "BEGINS_WITH" => values.len() == 1,
            "BETWEEN" => values.len() == 2,
            _ => !values.is_empty(),
        };
        if !count_ok {
            return Err(ApiError::invalid(format!(
                "Filters[{i}]: condition {condition} takes {} value(s), got {}",
                match condition.as_str() {
                    "BETWEEN" => "2",
                    "IN" => "1 or more",
                    _ => "1",
                },
                values.len()
            )));
        }
        out.push(ParsedFilter {
            name,
            values,
            condition,
        });
    }
    Ok(out)
}

impl ParsedFilter {
    fn matches(&self, value: &str) -> bool {
        match self.condition.as_str() {
            "BEGINS_WITH" => value.starts_with(&self.values[0]),
            _ => self.values.iter().any(|v| v == value),
        }
    }
}

// ----- namespaces -----------------------------------------------------------

fn namespace_properties(ns: &Namespace) -> Value {
    let mut props = Map::new();
    if ns.kind.is_dns() {
        let mut dns = Map::new();
        if let Some(z) = &ns.hosted_zone_id {
            dns.insert("HostedZoneId".into(), z.clone().into());
        }
        if let Some(ttl) = ns.soa_ttl {
            dns.insert("SOA".into(), json!({"TTL": ttl}));
        }
        props.insert("DnsProperties".into(), Value::Object(dns));
    }
    props.insert("HttpProperties".into(), json!({"HttpName": ns.http_name}));
    Value::Object(props)
}

fn namespace_json(registry: &Registry, index: &reg::Index, ns: &Namespace, summary: bool) -> Value {
    let mut out = Map::new();
    out.insert("Id".into(), ns.id.clone().into());
    out.insert(
        "Arn".into(),
        registry.config().scope.namespace_arn(&ns.id).into(),
    );
    out.insert(
        "ResourceOwner".into(),
        registry.config().scope.account.clone().into(),
    );
    out.insert("Name".into(), ns.name.clone().into());
    out.insert("Type".into(), ns.kind.as_str().into());
    if let Some(d) = &ns.description {
        out.insert("Description".into(), d.clone().into());
    }
    out.insert("ServiceCount".into(), index.service_count(&ns.id).into());
    out.insert("Properties".into(), namespace_properties(ns));
    out.insert("CreateDate".into(), date(ns.create_date));
    if !summary && let Some(c) = &ns.creator_request_id {
        out.insert("CreatorRequestId".into(), c.clone().into());
    }
    Value::Object(out)
}

fn operation_id(op: &Operation) -> Value {
    json!({ "OperationId": op.id })
}

fn create_namespace(
    registry: &Registry,
    kind: NamespaceType,
    req: wire::CreateNamespace,
) -> Result<Value> {
    let name = required_str(req.name, "Name")?;
    let vpc = match kind {
        NamespaceType::DnsPrivate => {
            let vpc = required_str(req.vpc, "Vpc")?;
            if vpc.len() > 64 {
                return Err(ApiError::invalid("Vpc must be at most 64 characters long"));
            }
            Some(vpc)
        }
        _ => None,
    };
    let soa_ttl = req
        .properties
        .and_then(|p| p.dns_properties)
        .map(|d| required(d.soa, "Properties.DnsProperties.SOA"))
        .transpose()?
        .map(|soa| required(soa.ttl, "Properties.DnsProperties.SOA.TTL"))
        .transpose()?;
    let op = registry.create_namespace(reg::CreateNamespace {
        name,
        kind,
        description: req.description,
        soa_ttl,
        vpc,
        creator_request_id: req.creator_request_id,
        tags: tags(req.tags)?,
        owner: API,
    })?;
    Ok(operation_id(&op))
}

fn update_namespace(
    registry: &Registry,
    kind: NamespaceType,
    req: wire::UpdateNamespace,
) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let change = required(req.namespace, "Namespace")?;
    let soa_ttl = if kind.is_dns() {
        let dns = required(
            change.properties.and_then(|p| p.dns_properties),
            "Namespace.Properties.DnsProperties",
        )?;
        Some(required(
            required(dns.soa, "Namespace.Properties.DnsProperties.SOA")?.ttl,
            "Namespace.Properties.DnsProperties.SOA.TTL",
        )?)
    } else {
        if change.description.is_none() {
            return Err(ApiError::invalid("Namespace.Description is required"));
        }
        None
    };
    {
        let index = registry.read();
        let bare = ids::strip_arn(&id, ResourceKind::Namespace);
        let ns = index
            .namespace(bare)
            .ok_or_else(|| ApiError::from(reg::Error::NamespaceNotFound(bare.to_string())))?;
        if ns.kind != kind {
            return Err(ApiError::invalid(format!(
                "namespace {} is of type {}, not {}",
                ns.id,
                ns.kind.as_str(),
                kind.as_str()
            )));
        }
    }
    let op = registry.update_namespace(
        &id,
        reg::UpdateNamespace {
            description: change.description,
            soa_ttl,
            updater_request_id: req.updater_request_id,
        },
        &API,
    )?;
    Ok(operation_id(&op))
}

fn delete_namespace(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let op = registry.delete_namespace(&id, &API)?;
    Ok(operation_id(&op))
}

fn get_namespace(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let bare = ids::strip_arn(&id, ResourceKind::Namespace);
    let index = registry.read();
    let ns = index
        .namespace(bare)
        .ok_or_else(|| ApiError::from(reg::Error::NamespaceNotFound(bare.to_string())))?;
    Ok(json!({ "Namespace": namespace_json(registry, &index, ns, false) }))
}

fn resource_owner_matches(registry: &Registry, f: &ParsedFilter) -> bool {
    // Everything in this registry belongs to its own account.
    let own = &registry.config().scope.account;
    f.values.iter().any(|v| v == "SELF" || v == own)
}

fn list_namespaces(registry: &Registry, req: wire::List) -> Result<Value> {
    let max = max_results(req.max_results, 100, 100)?;
    let filters = parse_filters(
        req.filters,
        &[
            ("TYPE", &["EQ", "IN"]),
            ("NAME", &["EQ", "BEGINS_WITH"]),
            ("HTTP_NAME", &["EQ", "BEGINS_WITH"]),
            ("RESOURCE_OWNER", &["EQ"]),
        ],
    )?;
    let index = registry.read();
    let items = index
        .namespaces()
        .filter(|ns| {
            filters.iter().all(|f| match f.name.as_str() {
                "TYPE" => f.matches(ns.kind.as_str()),
                "NAME" => f.matches(&ns.name),
                "HTTP_NAME" => f.matches(&ns.http_name),
                _ => resource_owner_matches(registry, f),
            })
        })
        .map(|ns| (ns.id.clone(), namespace_json(registry, &index, ns, true)))
        .collect();
    let (page, next) = paginate(items, req.next_token, max)?;
    Ok(page_json("Namespaces", page, next))
}

// ----- services -------------------------------------------------------------

fn record_type(s: &str, field: &str) -> Result<RecordType> {
    Ok(match s {
        "A" => RecordType::A,
        "AAAA" => RecordType::Aaaa,
        "SRV" => RecordType::Srv,
        "CNAME" => RecordType::Cname,
        other => {
            return Err(ApiError::invalid(format!(
                "{field} {other:?} is not one of A, AAAA, SRV, CNAME"
            )));
        }
    })
}

fn dns_records(records: Vec<wire::DnsRecord>, prefix: &str) -> Result<Vec<DnsRecord>> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let field = format!("{prefix}.DnsRecords[{i}]");
            Ok(DnsRecord {
                kind: record_type(
                    &required_str(r.kind, &format!("{field}.Type"))?,
                    &format!("{field}.Type"),
                )?,
                ttl: required(r.ttl, &format!("{field}.TTL"))?,
            })
        })
        .collect()
}

fn health_check_config(hc: wire::HealthCheckConfig, prefix: &str) -> Result<HealthCheckConfig> {
    let kind = match required_str(hc.kind, &format!("{prefix}.Type"))?.as_str() {
        "HTTP" => HealthCheckType::Http,
        "HTTPS" => HealthCheckType::Https,
        "TCP" => HealthCheckType::Tcp,
        other => {
            return Err(ApiError::invalid(format!(
                "{prefix}.Type {other:?} is not one of HTTP, HTTPS, TCP"
            )));
        }
    };
    let failure_threshold = hc
        .failure_threshold
        .map(|t| {
            i32::try_from(t)
                .ok()
                .filter(|t| (1..=10).contains(t))
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{prefix}.FailureThreshold must be between 1 and 10 (got {t})"
                    ))
                })
        })
        .transpose()?;
    Ok(HealthCheckConfig {
        kind,
        resource_path: hc.resource_path,
        failure_threshold,
        interval_seconds: None,
        timeout_seconds: None,
    })
}

fn dns_config_json(svc: &Service) -> Option<Value> {
    svc.dns_config.as_ref().map(|d| {
        json!({
            "NamespaceId": svc.namespace_id,
            "RoutingPolicy": d.routing_policy.as_str(),
            "DnsRecords": d.records.iter().map(|r| json!({"Type": r.kind.as_str(), "TTL": r.ttl})).collect::<Vec<_>>(),
        })
    })
}

fn service_json(registry: &Registry, entry: &ServiceEntry, summary: bool) -> Value {
    let svc = &entry.service;
    let scope = &registry.config().scope;
    let mut out = Map::new();
    out.insert("Id".into(), svc.id.clone().into());
    out.insert("Arn".into(), scope.service_arn(&svc.id).into());
    out.insert("ResourceOwner".into(), scope.account.clone().into());
    out.insert("CreatedByAccount".into(), scope.account.clone().into());
    out.insert("Name".into(), svc.name.clone().into());
    if !summary {
        out.insert("NamespaceId".into(), svc.namespace_id.clone().into());
    }
    out.insert("Type".into(), svc.kind.as_str().into());
    if let Some(d) = &svc.description {
        out.insert("Description".into(), d.clone().into());
    }
    out.insert("InstanceCount".into(), entry.instances.len().into());
    if let Some(dns) = dns_config_json(svc) {
        out.insert("DnsConfig".into(), dns);
    }
    if let Some(hc) = &svc.health_check_config {
        let mut h = Map::new();
        h.insert("Type".into(), hc.kind.as_str().into());
        if let Some(p) = &hc.resource_path {
            h.insert("ResourcePath".into(), p.clone().into());
        }
        if let Some(t) = hc.failure_threshold {
            h.insert("FailureThreshold".into(), t.into());
        }
        out.insert("HealthCheckConfig".into(), Value::Object(h));
    }
    if let Some(c) = &svc.health_check_custom_config {
        out.insert(
            "HealthCheckCustomConfig".into(),
            json!({"FailureThreshold": c.failure_threshold.unwrap_or(1)}),
        );
    }
    out.insert("CreateDate".into(), date(svc.create_date));
    if !summary && let Some(c) = &svc.creator_request_id {
        out.insert("CreatorRequestId".into(), c.clone().into());
    }
    Value::Object(out)
}

fn create_service(registry: &Registry, req: wire::CreateService) -> Result<Value> {
    let name = required_str(req.name, "Name")?;
    let dns_ns = req.dns_config.as_ref().and_then(|d| d.namespace_id.clone());
    let namespace_id = match (req.namespace_id, dns_ns) {
        (Some(a), Some(b))
            if ids::strip_arn(&a, ResourceKind::Namespace)
                != ids::strip_arn(&b, ResourceKind::Namespace) =>
        {
            return Err(ApiError::invalid(
                "NamespaceId and DnsConfig.NamespaceId name different namespaces",
            ));
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => return Err(ApiError::invalid("NamespaceId is required")),
    };
    let http_only = match req.kind.as_deref() {
        None => false,
        Some("HTTP") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Type {other:?} is not valid; the only value is HTTP"
            )));
        }
    };
    let health_check_config = req
        .health_check_config
        .map(|hc| health_check_config(hc, "HealthCheckConfig"))
        .transpose()?;
    let dns_config = req
        .dns_config
        .map(|d| -> Result<DnsConfig> {
            let routing_policy = match d.routing_policy.as_deref() {
                None | Some("MULTIVALUE") => RoutingPolicy::Multivalue,
                Some("WEIGHTED") => RoutingPolicy::Weighted,
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "DnsConfig.RoutingPolicy {other:?} is not one of MULTIVALUE, WEIGHTED"
                    )));
                }
            };
            Ok(DnsConfig {
                routing_policy,
                records: dns_records(
                    required(d.dns_records, "DnsConfig.DnsRecords")?,
                    "DnsConfig",
                )?,
            })
        })
        .transpose()?;
    if let Some(c) = &req.health_check_custom_config
        && let Some(t) = c.failure_threshold
        && !(1..=10).contains(&t)
    {
        return Err(ApiError::invalid(format!(
            "HealthCheckCustomConfig.FailureThreshold must be between 1 and 10 (got {t})"
        )));
    }
    let svc = registry.create_service(reg::CreateService {
        name,
        namespace_id,
        description: req.description,
        dns_config,
        health_check_config,
        health_check_custom_config: req.health_check_custom_config.map(|c| {
            HealthCheckCustomConfig {
                failure_threshold: c.failure_threshold.map(|t| t as i32),
            }
        }),
        http_only,
        creator_request_id: req.creator_request_id,
        tags: tags(req.tags)?,
        owner: API,
    })?;
    let index = registry.read();
    let entry = index
        .service(&svc.id)
        .ok_or_else(|| ApiError::from(reg::Error::ServiceNotFound(svc.id.clone())))?;
    Ok(json!({ "Service": service_json(registry, entry, false) }))
}

fn with_service<T>(
    registry: &Registry,
    id: &str,
    f: impl FnOnce(&reg::Index, &ServiceEntry) -> Result<T>,
) -> Result<T> {
    let bare = ids::strip_arn(id, ResourceKind::Service);
    let index = registry.read();
    let entry = index
        .service(bare)
        .ok_or_else(|| ApiError::from(reg::Error::ServiceNotFound(bare.to_string())))?;
    f(&index, entry)
}

fn get_service(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    with_service(registry, &id, |_, entry| {
        Ok(json!({ "Service": service_json(registry, entry, false) }))
    })
}

fn update_service(registry: &Registry, req: wire::UpdateService) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let change = required(req.service, "Service")?;
    let dns_records = change
        .dns_config
        .map(|d| {
            dns_records(
                required(d.dns_records, "Service.DnsConfig.DnsRecords")?,
                "Service.DnsConfig",
            )
        })
        .transpose()?;
    let health_check_config = change
        .health_check_config
        .map(|hc| health_check_config(hc, "Service.HealthCheckConfig"))
        .transpose()?;
    let op = registry.update_service(
        &id,
        reg::UpdateService {
            description: change.description,
            dns_records,
            health_check_config,
        },
        &API,
    )?;
    Ok(operation_id(&op))
}

fn delete_service(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    registry.delete_service(&id, &API)?;
    Ok(json!({}))
}

fn list_services(registry: &Registry, req: wire::List) -> Result<Value> {
    let max = max_results(req.max_results, 100, 100)?;
    let filters = parse_filters(
        req.filters,
        &[("NAMESPACE_ID", &["EQ"]), ("RESOURCE_OWNER", &["EQ"])],
    )?;
    let index = registry.read();
    let items = index
        .services()
        .filter(|e| {
            filters.iter().all(|f| match f.name.as_str() {
                "NAMESPACE_ID" => f
                    .values
                    .iter()
                    .any(|v| ids::strip_arn(v, ResourceKind::Namespace) == e.service.namespace_id),
                _ => resource_owner_matches(registry, f),
            })
        })
        .map(|e| (e.service.id.clone(), service_json(registry, e, true)))
        .collect();
    let (page, next) = paginate(items, req.next_token, max)?;
    Ok(page_json("Services", page, next))
}

fn get_service_attributes(registry: &Registry, req: wire::ServiceAttributes) -> Result<Value> {
    let id = required_str(req.service_id, "ServiceId")?;
    with_service(registry, &id, |_, entry| {
        let scope = &registry.config().scope;
        Ok(json!({
            "ServiceAttributes": {
                "ServiceArn": scope.service_arn(&entry.service.id),
                "ResourceOwner": scope.account,
                "Attributes": entry.service.attributes,
            }
        }))
    })
}

fn update_service_attributes(registry: &Registry, req: wire::ServiceAttributes) -> Result<Value> {
    let id = required_str(req.service_id, "ServiceId")?;
    let attrs = required(req.attributes, "Attributes")?;
    registry.update_service_attributes(&id, attrs.into(), &API)?;
    Ok(json!({}))
}

fn delete_service_attributes(
    registry: &Registry,
    req: wire::DeleteServiceAttributes,
) -> Result<Value> {
    let id = required_str(req.service_id, "ServiceId")?;
    let keys = required(req.attributes, "Attributes")?;
    registry.delete_service_attributes(&id, &keys, &API)?;
    Ok(json!({}))
}

// ----- instances ------------------------------------------------------------

fn register_instance(registry: &Registry, req: wire::RegisterInstance) -> Result<Value> {
    let outcome = registry.register_instance(reg::RegisterInstance {
        service_id: required_str(req.service_id, "ServiceId")?,
        instance_id: required_str(req.instance_id, "InstanceId")?,
        attributes: required(req.attributes, "Attributes")?.into(),
        creator_request_id: req.creator_request_id,
        owner: API,
    })?;
    let op = outcome
        .operation
        .ok_or_else(|| ApiError::new("InternalFailure", "no operation was recorded"))?;
    Ok(operation_id(&op))
}

fn deregister_instance(registry: &Registry, req: wire::InstanceRef) -> Result<Value> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let instance_id = required_str(req.instance_id, "InstanceId")?;
    let outcome = registry.deregister_instance(&service_id, &instance_id, &API)?;
    let op = outcome
        .operation
        .ok_or_else(|| ApiError::new("InternalFailure", "no operation was recorded"))?;
    Ok(operation_id(&op))
}

fn instance_not_found(service_id: &str, instance_id: &str) -> ApiError {
    reg::Error::InstanceNotFound {
        service_id: service_id.to_string(),
        instance_id: instance_id.to_string(),
    }
    .into()
}

fn get_instance(registry: &Registry, req: wire::InstanceRef) -> Result<Value> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let instance_id = required_str(req.instance_id, "InstanceId")?;
    with_service(registry, &service_id, |_, entry| {
        let inst = entry
            .instances
            .get(&instance_id)
            .ok_or_else(|| instance_not_found(&entry.service.id, &instance_id))?;
        let account = &registry.config().scope.account;
        let mut i = Map::new();
        i.insert("Id".into(), inst.id.clone().into());
        if let Some(c) = &inst.creator_request_id {
            i.insert("CreatorRequestId".into(), c.clone().into());
        }
        i.insert("Attributes".into(), json!(inst.attributes));
        i.insert("CreatedByAccount".into(), account.clone().into());
        Ok(json!({ "ResourceOwner": account, "Instance": i }))
    })
}

fn list_instances(registry: &Registry, req: wire::ListInstances) -> Result<Value> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let max = max_results(req.max_results, 100, 100)?;
    with_service(registry, &service_id, |_, entry| {
        let account = &registry.config().scope.account;
        let items = entry
            .instances
            .values()
            .map(|i| {
                (
                    i.id.clone(),
                    json!({"Id": i.id, "Attributes": i.attributes, "CreatedByAccount": account}),
                )
            })
            .collect();
        let (page, next) = paginate(items, req.next_token, max)?;
        let mut out = page_json("Instances", page, next);
        out["ResourceOwner"] = account.clone().into();
        Ok(out)
    })
}

fn get_instances_health_status(
    registry: &Registry,
    req: wire::GetInstancesHealthStatus,
) -> Result<Value> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let max = max_results(req.max_results, 100, 100)?;
    if let Some(list) = &req.instances {
        if list.is_empty() {
            return Err(ApiError::invalid(
                "Instances must list at least one instance id",
            ));
        }
        for id in list {
            validate::instance_id(id).map_err(ApiError::from)?;
        }
    }
    with_service(registry, &service_id, |_, entry| {
        let chosen: Vec<&Instance> = match &req.instances {
            Some(list) => list
                .iter()
                .map(|id| {
                    entry
                        .instances
                        .get(id)
                        .ok_or_else(|| instance_not_found(&entry.service.id, id))
                })
                .collect::<Result<_>>()?,
            None => entry.instances.values().collect(),
        };
        let items = chosen
            .into_iter()
            .map(|i| {
                (
                    i.id.clone(),
                    (i.id.clone(), entry.reported_health(i).as_str()),
                )
            })
            .collect();
        let (page, next) = paginate(items, req.next_token, max)?;
        let status: Map<String, Value> = page.into_iter().map(|(id, h)| (id, h.into())).collect();
        let mut out = json!({ "Status": status });
        if let Some(n) = next {
            out["NextToken"] = n.into();
        }
        Ok(out)
    })
}

fn update_custom_health(registry: &Registry, req: wire::UpdateCustomHealth) -> Result<()> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let instance_id = required_str(req.instance_id, "InstanceId")?;
    let status = match required_str(req.status, "Status")?.as_str() {
        "HEALTHY" => HealthStatus::Healthy,
        "UNHEALTHY" => HealthStatus::Unhealthy,
        other => {
            return Err(ApiError::invalid(format!(
                "Status {other:?} is not one of HEALTHY, UNHEALTHY"
            )));
        }
    };
    let bare = ids::strip_arn(&service_id, ResourceKind::Service);
    registry.update_custom_health(bare, &instance_id, status, &API)?;
    Ok(())
}

// ----- discovery ------------------------------------------------------------

fn check_owner_account(registry: &Registry, owner: Option<&str>) -> Result<()> {
    match owner {
        Some(a) if a != registry.config().scope.account => Err(ApiError::invalid(format!(
            "OwnerAccount {a:?} is not this registry's account"
        ))),
        _ => Ok(()),
    }
}

/// Looks up the service a discovery call names: the namespace by `HttpName`,
/// then the service by name.
fn discovered<'a>(
    index: &'a reg::Index,
    namespace: &str,
    service: &str,
) -> Result<&'a ServiceEntry> {
    let ns = index
        .namespace_by_http_name(namespace)
        .ok_or_else(|| ApiError::from(reg::Error::NamespaceNotFound(namespace.to_string())))?;
    index.service_by_name(&ns.id, service).ok_or_else(|| {
        ApiError::from(reg::Error::ServiceNotFound(format!(
            "{service} in namespace {namespace}"
        )))
    })
}

fn check_parameters(params: &BTreeMap<String, String>, field: &str) -> Result<()> {
    for (k, v) in params {
        validate::attribute_key(k)
            .and_then(|()| validate::attribute_value(k, v))
            .map_err(|e| ApiError::invalid(format!("{field}: {e}")))?;
    }
    Ok(())
}

/// Appends `s` as a JSON string. Ids, names and attribute keys and values
/// are printable ASCII that almost never needs escaping, so a branch-free
/// scan (which the compiler vectorises) decides and the common case is one
/// copy; serde_json escapes the rest.
fn push_json_str(out: &mut String, s: &str) {
    let needs_escape = s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        out.push_str(&serde_json::to_string(s).expect("a str always serialises"));
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Appends an attribute map as a JSON object.
///
/// Written without escaping first, then checked in one pass over the bytes
/// written: the object is valid JSON exactly when no key or value held a
/// quote, a backslash or a control character, that is when the only quotes
/// are the four per attribute written here. Otherwise it is written again,
/// escaped. (One scan of the whole object is much cheaper than one per key
/// and value: they are short.)
fn push_json_attributes(out: &mut String, attributes: &Attributes) {
    let start = out.len();
    out.push('{');
    for (n, (k, v)) in attributes.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":\"");
        out.push_str(v);
        out.push('"');
    }
    out.push('}');
    let written = &out.as_bytes()[start..];
    // Counted in byte-sized lanes (chunks of at most 255) so that it
    // vectorises 16 bytes at a time.
    let quotes: usize = written
        .chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &b| n + u8::from(b == b'"'))))
        .sum();
    let unsafe_bytes = written
        .iter()
        .fold(false, |bad, &b| bad | (b < 0x20) | (b == b'\\'));
    if unsafe_bytes || quotes != 4 * attributes.len() {
        out.truncate(start);
        out.push('{');
        for (n, (k, v)) in attributes.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            push_json_str(out, k);
            out.push(':');
            push_json_str(out, v);
        }
        out.push('}');
    }
}

/// Renders the `DiscoverInstances` output: `{"Instances": [HttpInstanceSummary],
/// "InstancesRevision": n}`.
///
/// Written by hand because this is the hottest call: building a
/// `serde_json::Value` tree (a map per instance, a copy of every attribute)
/// made allocation dominate it, and escaping string by string was then the
/// largest cost left (see `push_json_attributes`).
fn render_discovered(entry: &ServiceEntry, namespace: &str, instances: &[&Instance]) -> String {
    // What every summary repeats, rendered once.
    let mut names = String::from(",\"NamespaceName\":");
    push_json_str(&mut names, namespace);
    names.push_str(",\"ServiceName\":");
    push_json_str(&mut names, &entry.service.name);
    names.push_str(",\"HealthStatus\":\"");

    let mut out = String::with_capacity(48 + instances.len() * (names.len() + 192));
    out.push_str("{\"Instances\":[");
    for (n, i) in instances.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str("{\"InstanceId\":");
        push_json_str(&mut out, &i.id);
        out.push_str(&names);
        out.push_str(entry.reported_health(i).as_str());
        out.push_str("\",\"Attributes\":");
        push_json_attributes(&mut out, &i.attributes);
        out.push('}');
    }
    out.push_str("],\"InstancesRevision\":");
    out.push_str(&entry.service.revision.to_string());
    out.push('}');
    out
}

fn discover_instances(registry: &Registry, req: wire::DiscoverInstances) -> Result<String> {
    let namespace = required_str(req.namespace_name, "NamespaceName")?;
    let service = required_str(req.service_name, "ServiceName")?;
    let max = max_results(req.max_results, 1000, 100)?;
    check_owner_account(registry, req.owner_account.as_deref())?;
    let health = match req.health_status.as_deref() {
        // Undocumented default; Waymark hands out healthy endpoints only,
        // failing open when none is healthy.
        None => HealthFilter::HealthyOrElseAll,
        Some(s) => HealthFilter::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "HealthStatus {s:?} is not one of HEALTHY, UNHEALTHY, ALL, HEALTHY_OR_ELSE_ALL"
            ))
        })?,
    };
    let query = req.query_parameters.unwrap_or_default();
    let optional = req.optional_parameters.unwrap_or_default();
    check_parameters(&query, "QueryParameters")?;
    check_parameters(&optional, "OptionalParameters")?;
    let index = registry.read();
    let entry = discovered(&index, &namespace, &service)?;
    let chosen = discover::select(entry, &query, &optional, health, max);
    Ok(render_discovered(entry, &namespace, &chosen))
}

fn discover_instances_revision(registry: &Registry, req: wire::DiscoverInstances) -> Result<Value> {
    let namespace = required_str(req.namespace_name, "NamespaceName")?;
    let service = required_str(req.service_name, "ServiceName")?;
    check_owner_account(registry, req.owner_account.as_deref())?;
    let index = registry.read();
    let entry = discovered(&index, &namespace, &service)?;
    Ok(json!({ "InstancesRevision": entry.service.revision }))
}

// ----- operations -----------------------------------------------------------

fn operation_json(registry: &Registry, op: &Operation) -> Value {
    let mut out = Map::new();
    out.insert("Id".into(), op.id.clone().into());
    out.insert(
        "OwnerAccount".into(),
        registry.config().scope.account.clone().into(),
    );
    out.insert("Type".into(), op.kind.as_str().into());
    out.insert("Status".into(), op.status.as_str().into());
    if let Some(m) = &op.error_message {
        out.insert("ErrorMessage".into(), m.clone().into());
    }
    if let Some(c) = &op.error_code {
        out.insert("ErrorCode".into(), c.clone().into());
    }
    out.insert("CreateDate".into(), date(op.create_date));
    out.insert("UpdateDate".into(), date(op.update_date));
    let targets: Map<String, Value> = op
        .targets
        .iter()
        .map(|(t, id)| {
            let key = match t {
                TargetType::Namespace => "NAMESPACE",
                TargetType::Service => "SERVICE",
                TargetType::Instance => "INSTANCE",
            };
            (key.to_string(), id.clone().into())
        })
        .collect();
    out.insert("Targets".into(), Value::Object(targets));
    Value::Object(out)
}

fn get_operation(registry: &Registry, req: wire::GetOperation) -> Result<Value> {
    let id = required_str(req.operation_id, "OperationId")?;
    check_owner_account(registry, req.owner_account.as_deref())?;
    let index = registry.read();
    let op = index
        .operation(&id)
        .ok_or_else(|| ApiError::from(reg::Error::OperationNotFound(id.clone())))?;
    Ok(json!({ "Operation": operation_json(registry, op) }))
}

fn parse_epoch(s: &str, field: &str) -> Result<EpochMillis> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| (v * 1000.0) as EpochMillis)
        .ok_or_else(|| ApiError::invalid(format!("{field}: {s:?} is not a Unix timestamp")))
}

fn list_operations(registry: &Registry, req: wire::List) -> Result<Value> {
    let max = max_results(req.max_results, 100, 100)?;
    let filters = parse_filters(
        req.filters,
        &[
            ("NAMESPACE_ID", &["EQ"]),
            ("SERVICE_ID", &["EQ"]),
            ("STATUS", &["EQ", "IN"]),
            ("TYPE", &["EQ", "IN"]),
            ("UPDATE_DATE", &["BETWEEN"]),
        ],
    )?;
    let mut ranges = Vec::new();
    for f in &filters {
        match f.name.as_str() {
            "UPDATE_DATE" => {
                let start = parse_epoch(&f.values[0], "UPDATE_DATE")?;
                let end = parse_epoch(&f.values[1], "UPDATE_DATE")?;
                ranges.push((start, end));
            }
            "STATUS" => {
                for v in &f.values {
                    if !["SUBMITTED", "PENDING", "SUCCESS", "FAIL"].contains(&v.as_str()) {
                        return Err(ApiError::invalid(format!(
                            "STATUS filter value {v:?} is not valid"
                        )));
                    }
                }
            }
            "TYPE" => {
                for v in &f.values {
                    if ![
                        "CREATE_NAMESPACE",
                        "DELETE_NAMESPACE",
                        "UPDATE_NAMESPACE",
                        "UPDATE_SERVICE",
                        "REGISTER_INSTANCE",
                        "DEREGISTER_INSTANCE",
                    ]
                    .contains(&v.as_str())
                    {
                        return Err(ApiError::invalid(format!(
                            "TYPE filter value {v:?} is not valid"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    let index = registry.read();
    let items = index
        .operations()
        .filter(|op| {
            filters.iter().all(|f| match f.name.as_str() {
                "NAMESPACE_ID" => op
                    .targets
                    .get(&TargetType::Namespace)
                    .is_some_and(|id| f.matches(id)),
                "SERVICE_ID" => op
                    .targets
                    .get(&TargetType::Service)
                    .is_some_and(|id| f.matches(id)),
                "STATUS" => f.matches(op.status.as_str()),
                "TYPE" => f.matches(op.kind.as_str()),
                _ => ranges
                    .iter()
                    .all(|(s, e)| (*s..=*e).contains(&op.update_date)),
            })
        })
        .map(|op| {
            (
                format!("{:020}", op.sequence),
                json!({"Id": op.id, "Status": op.status.as_str()}),
            )
        })
        .collect();
    let (page, next) = paginate(items, req.next_token, max)?;
    Ok(page_json("Operations", page, next))
}

// ----- tags -----------------------------------------------------------------

fn resource_arn(value: Option<String>) -> Result<String> {
    let arn = required_str(value, "ResourceARN")?;
    if arn.len() > 1011 {
        return Err(ApiError::invalid(
            "ResourceARN must be at most 1011 characters long",
        ));
    }
    Ok(arn)
}

fn tag_resource(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let tags = tags(Some(required(req.tags, "Tags")?))?;
    registry.tag_resource(&arn, tags)?;
    Ok(json!({}))
}

fn untag_resource(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let keys = required(req.tag_keys, "TagKeys")?;
    registry.untag_resource(&arn, &keys)?;
    Ok(json!({}))
}

fn list_tags(registry: &Registry, req: wire::TagResource) -> Result<Value> {
    let arn = resource_arn(req.resource_arn)?;
    let tags = registry.list_tags(&arn)?;
    Ok(json!({ "Tags": tags_json(&tags) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = encode_token("ns-abc/ü");
        assert_eq!(decode_token(&t).unwrap(), "ns-abc/ü");
        assert!(decode_token("zz").is_err());
        assert!(decode_token("abc").is_err());
    }

    #[test]
    fn discovered_instances_render_as_their_json_value() {
        // Plain attributes (the fast path), then each kind of character
        // that needs escaping on its own (the slow path).
        let sets: [&[(&str, &str)]; 6] = [
            &[
                ("tablename", "UserAuth"),
                ("environment", "prod"),
                ("empty", ""),
            ],
            &[("quote", "say \"hi\"")],
            &[("back\\slash", "x")],
            &[("tab", "a\tb c")],
            &[("unicode", "\u{e9}t\u{e9}"), ("k", "v")],
            &[],
        ];
        let inst = |id: &str, attrs: &[(&str, &str)]| Instance {
            id: id.into(),
            service_id: "srv-x".into(),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            creator_request_id: None,
            health: HealthStatus::Healthy,
            reported: None,
            probe: None,
            owner: Owner::Api.into(),
            create_date: 0,
            update_date: 0,
        };
        let entry = ServiceEntry {
            service: Service {
                id: "srv-x".into(),
                name: "user-auth-db".into(),
                namespace_id: "ns-x".into(),
                description: None,
                kind: ServiceType::Http,
                dns_config: None,
                health_check_config: None,
                health_check_custom_config: Some(HealthCheckCustomConfig {
                    failure_threshold: Some(1),
                }),
                attributes: Attributes::new(),
                creator_request_id: None,
                create_date: 0,
                update_date: 0,
                revision: 7,
                owner: Owner::Api,
                tags: vec![],
            },
            instances: Default::default(),
        };
        let instances: Vec<Instance> = sets
            .iter()
            .enumerate()
            .map(|(n, attrs)| inst(&format!("i/{n}\"q"), attrs))
            .collect();
        let refs: Vec<&Instance> = instances.iter().collect();
        let rendered = render_discovered(&entry, "quick\\ship", &refs);
        let summaries: Vec<Value> = instances
            .iter()
            .map(|i| {
                json!({"InstanceId": i.id, "NamespaceName": "quick\\ship",
                       "ServiceName": "user-auth-db", "HealthStatus": "HEALTHY",
                       "Attributes": i.attributes})
            })
            .collect();
        let expected = json!({"Instances": summaries, "InstancesRevision": 7});
        let parsed: Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(parsed, expected, "{rendered}");
        let none = render_discovered(&entry, "ns", &[]);
        assert_eq!(none, r#"{"Instances":[],"InstancesRevision":7}"#);
    }

    #[test]
    fn pages_resume_after_the_last_key() {
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        let (p1, t1) = paginate(items.clone(), None, 2).unwrap();
        assert_eq!(p1, [0, 1]);
        let (p2, t2) = paginate(items.clone(), t1, 2).unwrap();
        assert_eq!(p2, [2, 3]);
        let (p3, t3) = paginate(items, t2, 2).unwrap();
        assert_eq!(p3, [4]);
        assert!(t3.is_none());
    }
}
