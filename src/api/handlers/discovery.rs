//! Discovery: `DiscoverInstances` (the hot path, rendered straight from the
//! index) and `DiscoverInstancesRevision`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::Result;
use super::common::*;
use crate::api::ApiError;
use crate::api::discover::{self, HealthFilter};
use crate::registry::model::*;
use crate::registry::validate;
use crate::registry::{self as reg, Registry, ServiceEntry};

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

pub(super) fn discover_instances(
    registry: &Registry,
    req: wire::DiscoverInstances,
) -> Result<String> {
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

pub(super) fn discover_instances_revision(
    registry: &Registry,
    req: wire::DiscoverInstances,
) -> Result<Value> {
    let namespace = required_str(req.namespace_name, "NamespaceName")?;
    let service = required_str(req.service_name, "ServiceName")?;
    check_owner_account(registry, req.owner_account.as_deref())?;
    let index = registry.read();
    let entry = discovered(&index, &namespace, &service)?;
    Ok(json!({ "InstancesRevision": entry.service.revision }))
}

/// The request shapes of these operations.
mod wire {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct DiscoverInstances {
        pub namespace_name: Option<String>,
        pub service_name: Option<String>,
        pub max_results: Option<i64>,
        pub query_parameters: Option<BTreeMap<String, String>>,
        pub optional_parameters: Option<BTreeMap<String, String>>,
        pub health_status: Option<String>,
        pub owner_account: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            health_since: 0,
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
}
