//! Instances: `RegisterInstance`, `DeregisterInstance`, `GetInstance`,
//! `ListInstances`, `GetInstancesHealthStatus`,
//! `UpdateInstanceCustomHealthStatus`.

use serde_json::{Map, Value, json};

use super::common::*;
use super::{API, Result};
use crate::api::ApiError;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::*;
use crate::registry::validate;
use crate::registry::{self as reg, Registry};

pub(super) fn register_instance(registry: &Registry, req: wire::RegisterInstance) -> Result<Value> {
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

pub(super) fn deregister_instance(registry: &Registry, req: wire::InstanceRef) -> Result<Value> {
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

pub(super) fn get_instance(registry: &Registry, req: wire::InstanceRef) -> Result<Value> {
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

/// `ExplainInstance` (a Waymark extension, authorized as `GetInstance`):
/// why an instance is registered and what decides its health — its owner
/// (the API, a pod through a ServiceDiscovery, or a static endpoint), the
/// health sources and their current verdicts — for `waymark inspect explain`.
pub(super) fn explain_instance(registry: &Registry, req: wire::InstanceRef) -> Result<Value> {
    let service_id = required_str(req.service_id, "ServiceId")?;
    let instance_id = required_str(req.instance_id, "InstanceId")?;
    with_service(registry, &service_id, |index, entry| {
        let inst = entry
            .instances
            .get(&instance_id)
            .ok_or_else(|| instance_not_found(&entry.service.id, &instance_id))?;
        let svc = &entry.service;
        let namespace = index.namespace(&svc.namespace_id);
        let mut why = Vec::new();
        let owner = match &*inst.owner {
            Owner::Api => {
                why.push("registered through the Cloud Map API (RegisterInstance)".to_string());
                json!({"Kind": "Api"})
            }
            Owner::Controller { cluster, object } => {
                let pod = match (
                    inst.attributes.get("K8S_NAMESPACE"),
                    inst.attributes.get("K8S_POD_NAME"),
                ) {
                    (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
                    _ => None,
                };
                match &pod {
                    Some(pod) => why.push(format!(
                        "pod {pod} is selected by {object} (cluster {cluster}); the controller keeps it registered while the pod exists"
                    )),
                    None => why.push(format!(
                        "a static endpoint listed by {object} (cluster {cluster})"
                    )),
                }
                let mut o = json!({
                    "Kind": if pod.is_some() { "Pod" } else { "Static" },
                    "Cluster": cluster,
                    "Object": object,
                });
                if let Some(pod) = pod {
                    o["Pod"] = pod.into();
                }
                o
            }
        };
        let reported = entry.reported_health(inst);
        let verdict = |v: Option<bool>| match v {
            Some(true) => "passing",
            Some(false) => "failing",
            None => "not probed yet (counted as passing)",
        };
        let mut sources = Vec::new();
        if let Some(check) = &svc.health_check_config {
            let path = check.resource_path.as_deref().unwrap_or("/");
            sources.push(json!({
                "Source": "Check",
                "Type": check.kind.as_str(),
                "ResourcePath": path,
                "FailureThreshold": check.failure_threshold,
                "Passing": inst.probe,
            }));
            why.push(format!(
                "an active {} check of {path} is {}",
                check.kind.as_str(),
                verdict(inst.probe)
            ));
        }
        match (inst.reported, &*inst.owner) {
            (Some(r), Owner::Controller { .. }) => {
                sources.push(json!({"Source": "Readiness", "Status": r.as_str()}));
                why.push(format!("the pod's readiness reports {}", r.as_str()));
            }
            (Some(r), Owner::Api) => {
                sources.push(json!({"Source": "Custom", "Status": r.as_str()}));
                why.push(format!(
                    "UpdateInstanceCustomHealthStatus reported {}",
                    r.as_str()
                ));
            }
            (None, _) if svc.health_check_custom_config.is_some() => {
                sources.push(json!({"Source": "Custom", "Status": inst.health.as_str()}));
                why.push(format!(
                    "custom health (UpdateInstanceCustomHealthStatus) is {}",
                    inst.health.as_str()
                ));
            }
            (None, _) => {}
        }
        if !svc.has_health_check() {
            why.push(
                "the service has no health check: the instance is always handed out (UNKNOWN)"
                    .to_string(),
            );
        }
        if svc.has_health_check() && inst.health_since > 0 {
            let since = jiff::Timestamp::from_millisecond(inst.health_since)
                .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                .unwrap_or_default();
            why.push(format!(
                "it has been {} since {since}",
                inst.health.as_str()
            ));
        }
        why.push(match reported {
            HealthStatus::Healthy => "DiscoverInstances hands it out as HEALTHY".to_string(),
            HealthStatus::Unhealthy => {
                "DiscoverInstances leaves it out unless asked for ALL or UNHEALTHY".to_string()
            }
            HealthStatus::Unknown => {
                "DiscoverInstances hands it out (its health is UNKNOWN)".to_string()
            }
        });
        Ok(json!({
            "Instance": {"Id": inst.id, "Attributes": inst.attributes},
            "Service": {"Id": svc.id, "Name": svc.name},
            "Namespace": {
                "Id": svc.namespace_id,
                "Name": namespace.map(|n| n.name.as_str()),
            },
            "Owner": owner,
            "Health": {
                "Status": reported.as_str(),
                "Sources": sources,
                // The last transition (0: not recorded, an older record).
                "Since": if inst.health_since > 0 { date(inst.health_since) } else { Value::Null },
            },
            "CreateDate": date(inst.create_date),
            "UpdateDate": date(inst.update_date),
            "Explanation": why,
        }))
    })
}

pub(super) fn list_instances(registry: &Registry, req: wire::ListInstances) -> Result<Value> {
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

pub(super) fn get_instances_health_status(
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

pub(super) fn update_custom_health(
    registry: &Registry,
    req: wire::UpdateCustomHealth,
) -> Result<()> {
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

/// The request shapes of these operations.
mod wire {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct RegisterInstance {
        pub service_id: Option<String>,
        pub instance_id: Option<String>,
        pub creator_request_id: Option<String>,
        pub attributes: Option<BTreeMap<String, String>>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct InstanceRef {
        pub service_id: Option<String>,
        pub instance_id: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct ListInstances {
        pub service_id: Option<String>,
        pub next_token: Option<String>,
        pub max_results: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct GetInstancesHealthStatus {
        pub service_id: Option<String>,
        pub instances: Option<Vec<String>>,
        pub next_token: Option<String>,
        pub max_results: Option<i64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct UpdateCustomHealth {
        pub service_id: Option<String>,
        pub instance_id: Option<String>,
        pub status: Option<String>,
    }
}
