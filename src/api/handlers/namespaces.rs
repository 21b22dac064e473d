//! Namespaces: `Create*Namespace`, `Update*Namespace`, `DeleteNamespace`,
//! `GetNamespace`, `ListNamespaces`.

use serde_json::{Map, Value, json};

use super::common::*;
use super::{API, Result};
use crate::api::ApiError;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::*;
use crate::registry::{self as reg, Registry};

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

pub(super) fn create_namespace(
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

pub(super) fn update_namespace(
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

pub(super) fn delete_namespace(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let op = registry.delete_namespace(&id, &API)?;
    Ok(operation_id(&op))
}

pub(super) fn get_namespace(registry: &Registry, req: wire::ById) -> Result<Value> {
    let id = required_str(req.id, "Id")?;
    let bare = ids::strip_arn(&id, ResourceKind::Namespace);
    let index = registry.read();
    let ns = index
        .namespace(bare)
        .ok_or_else(|| ApiError::from(reg::Error::NamespaceNotFound(bare.to_string())))?;
    Ok(json!({ "Namespace": namespace_json(registry, &index, ns, false) }))
}

pub(super) fn list_namespaces(registry: &Registry, req: wire::List) -> Result<Value> {
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

/// The request shapes of these operations.
mod wire {

    use serde::Deserialize;

    pub(super) use crate::api::handlers::common::wire::*;

    /// `Properties.DnsProperties.SOA.TTL` of namespace requests.
    #[derive(Debug, Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    pub struct NamespaceProperties {
        pub dns_properties: Option<DnsProperties>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    pub struct DnsProperties {
        #[serde(rename = "SOA")]
        pub soa: Option<Soa>,
    }

    #[derive(Debug, Deserialize, Default)]
    pub struct Soa {
        #[serde(rename = "TTL")]
        pub ttl: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct CreateNamespace {
        pub name: Option<String>,
        pub creator_request_id: Option<String>,
        pub description: Option<String>,
        pub tags: Option<Vec<Tag>>,
        pub vpc: Option<String>,
        pub properties: Option<NamespaceProperties>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct NamespaceChange {
        pub description: Option<String>,
        pub properties: Option<NamespaceProperties>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct UpdateNamespace {
        pub id: Option<String>,
        pub updater_request_id: Option<String>,
        pub namespace: Option<NamespaceChange>,
    }
}
