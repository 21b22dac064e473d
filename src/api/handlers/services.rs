//! Services: `CreateService`, `GetService`, `UpdateService`, `DeleteService`,
//! `ListServices` and the service attribute calls.

use serde_json::{Map, Value, json};

use super::common::*;
use super::{API, Result};
use crate::api::ApiError;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::*;
use crate::registry::{self as reg, Registry, ServiceEntry};

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

pub(super) fn create_service(registry: &Registry, req: wire::CreateService) -> Result<Value> {
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

pub(super) fn get_service(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    with_service(registry, &id, |_, entry| {
        Ok(json!({ "Service": service_json(registry, entry, false) }))
    })
}

pub(super) fn update_service(registry: &Registry, req: wire::UpdateService) -> Result<Value> {
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

pub(super) fn delete_service(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    registry.delete_service(&id, &API)?;
    Ok(json!({}))
}

pub(super) fn list_services(registry: &Registry, req: wire::List) -> Result<Value> {
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

pub(super) fn get_service_attributes(
    registry: &Registry,
    req: wire::ServiceAttributes,
) -> Result<Value> {
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

pub(super) fn update_service_attributes(
    registry: &Registry,
    req: wire::ServiceAttributes,
) -> Result<Value> {
    let id = required_str(req.service_id, "ServiceId")?;
    let attrs = required(req.attributes, "Attributes")?;
    registry.update_service_attributes(&id, attrs.into(), &API)?;
    Ok(json!({}))
}

pub(super) fn delete_service_attributes(
    registry: &Registry,
    req: wire::DeleteServiceAttributes,
) -> Result<Value> {
    let id = required_str(req.service_id, "ServiceId")?;
    let keys = required(req.attributes, "Attributes")?;
    registry.delete_service_attributes(&id, &keys, &API)?;
    Ok(json!({}))
}

/// The request shapes of these operations.
mod wire {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    pub(super) use crate::api::handlers::common::wire::*;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct DnsRecord {
        #[serde(rename = "Type")]
        pub kind: Option<String>,
        #[serde(rename = "TTL")]
        pub ttl: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct DnsConfig {
        pub namespace_id: Option<String>,
        pub routing_policy: Option<String>,
        pub dns_records: Option<Vec<DnsRecord>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct HealthCheckConfig {
        #[serde(rename = "Type")]
        pub kind: Option<String>,
        pub resource_path: Option<String>,
        pub failure_threshold: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct HealthCheckCustomConfig {
        pub failure_threshold: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct CreateService {
        pub name: Option<String>,
        pub namespace_id: Option<String>,
        pub creator_request_id: Option<String>,
        pub description: Option<String>,
        pub dns_config: Option<DnsConfig>,
        pub health_check_config: Option<HealthCheckConfig>,
        pub health_check_custom_config: Option<HealthCheckCustomConfig>,
        pub tags: Option<Vec<Tag>>,
        #[serde(rename = "Type")]
        pub kind: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct DnsConfigChange {
        pub dns_records: Option<Vec<DnsRecord>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ServiceChange {
        pub description: Option<String>,
        pub dns_config: Option<DnsConfigChange>,
        pub health_check_config: Option<HealthCheckConfig>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct UpdateService {
        pub id: Option<String>,
        pub service: Option<ServiceChange>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ServiceAttributes {
        pub service_id: Option<String>,
        pub attributes: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct DeleteServiceAttributes {
        pub service_id: Option<String>,
        pub attributes: Option<Vec<String>>,
    }
}
