//! Instances through the API: `RegisterInstance` and `DeregisterInstance`.
//! (The controller's instances go through `sync.rs`; health through `health.rs`.)

use std::sync::Arc;

use super::{check_owner, instance_of, service_entry};
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::{
    HealthStatus, Instance, NamespaceType, OperationType, Owner, TargetType,
};
use crate::registry::validate::{
    AWS_INIT_HEALTH_STATUS, instance_attributes_for_service, instance_id, request_id,
};
use crate::registry::{
    Change, Error, RegisterInstance, Registry, Result, WriteOutcome, now_millis,
};

impl Registry {
    /// Registers an instance, or updates it when the id exists. The service's
    /// revision grows when the instance is new or its attributes change.
    pub fn register_instance(&self, req: RegisterInstance) -> Result<WriteOutcome> {
        instance_id(&req.instance_id)?;
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        let service_id = ids::strip_arn(&req.service_id, ResourceKind::Service).to_string();
        let record = !req.owner.is_controller();

        self.write(|index, changes| {
            let entry = service_entry(index, &service_id)?;
            let ns_type = index
                .namespace(&entry.service.namespace_id)
                .map_or(NamespaceType::Http, |n| n.kind);
            instance_attributes_for_service(&req.attributes, &entry.service, ns_type)?;
            let existing = entry.instances.get(&req.instance_id);
            if let Some(old) = existing {
                check_owner(
                    || format!("instance {} of service {}", old.id, entry.service.name),
                    &old.owner,
                    &req.owner,
                )?;
                // A retry with the same token and attributes returns the original operation.
                if record
                    && old.attributes == req.attributes
                    && let Some(op) = Self::replay(
                        index,
                        req.creator_request_id.as_deref(),
                        OperationType::RegisterInstance,
                    )
                    && op.targets.get(&TargetType::Instance) == Some(&req.instance_id)
                {
                    return Ok(WriteOutcome {
                        operation: Some(op),
                        changed: false,
                    });
                }
            } else if entry.instances.len() >= self.config.max_instances_per_service {
                return Err(Error::ResourceLimitExceeded(format!(
                    "service {} already has {} instances, the maximum",
                    entry.service.name,
                    entry.instances.len()
                )));
            }
            let now = now_millis();
            let changed_attrs = existing.is_none_or(|o| o.attributes != req.attributes);
            let health = match existing {
                Some(old) => old.health,
                None if entry.service.health_check_custom_config.is_some() => {
                    match req.attributes.get(AWS_INIT_HEALTH_STATUS) {
                        Some("UNHEALTHY") => HealthStatus::Unhealthy,
                        _ => HealthStatus::Healthy,
                    }
                }
                None if entry.service.health_check_config.is_some() => HealthStatus::Healthy,
                None => HealthStatus::Unknown,
            };
            let inst = Instance {
                id: req.instance_id.clone(),
                service_id: service_id.as_str().into(),
                attributes: req.attributes.clone(),
                creator_request_id: req.creator_request_id.clone(),
                health,
                reported: existing.and_then(|o| o.reported),
                probe: existing.and_then(|o| o.probe),
                owner: Arc::new(req.owner.clone()),
                create_date: existing.map_or(now, |o| o.create_date),
                update_date: now,
                // Re-registering keeps the health, so its transition time.
                health_since: existing.map_or(now, |o| o.health_since),
            };
            let changed = existing.is_none_or(|o| {
                changed_attrs
                    || o.owner != inst.owner
                    || o.creator_request_id != inst.creator_request_id
            });
            if changed_attrs {
                let mut svc = entry.service.clone();
                svc.revision += 1;
                changes.push(Change::PutService(svc));
            }
            if changed {
                changes.push(Change::PutInstance(inst));
            }
            let operation = record.then(|| {
                self.record_operation(
                    index,
                    changes,
                    OperationType::RegisterInstance,
                    &[
                        (TargetType::Instance, &req.instance_id),
                        (TargetType::Service, &service_id),
                    ],
                    req.creator_request_id.as_deref(),
                )
            });
            Ok(WriteOutcome { operation, changed })
        })
    }

    /// Deregisters an instance; the service's revision grows.
    pub fn deregister_instance(
        &self,
        service_id: &str,
        instance_id: &str,
        actor: &Owner,
    ) -> Result<WriteOutcome> {
        let service_id = ids::strip_arn(service_id, ResourceKind::Service);
        self.write(|index, changes| {
            let entry = service_entry(index, service_id)?;
            let inst = instance_of(entry, instance_id)?;
            check_owner(
                || format!("instance {} of service {}", inst.id, entry.service.name),
                &inst.owner,
                actor,
            )?;
            let mut svc = entry.service.clone();
            svc.revision += 1;
            changes.push(Change::DeleteInstance {
                service_id: service_id.to_string(),
                instance_id: instance_id.to_string(),
            });
            changes.push(Change::PutService(svc));
            let operation = (!actor.is_controller()).then(|| {
                self.record_operation(
                    index,
                    changes,
                    OperationType::DeregisterInstance,
                    &[
                        (TargetType::Instance, instance_id),
                        (TargetType::Service, service_id),
                    ],
                    None,
                )
            });
            Ok(WriteOutcome {
                operation,
                changed: true,
            })
        })
    }
}
