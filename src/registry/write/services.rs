//! Services: `CreateService`, `UpdateService`, `DeleteService` and the
//! service attribute calls.

use super::{check_owner, with_health_check_defaults};
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::{
    Attributes, DnsConfig, HealthCheckCustomConfig, Operation, OperationType, Owner, Service,
    ServiceType, TargetType,
};
use crate::registry::validate::{
    MAX_SERVICE_ATTRIBUTES, MAX_TAGS, attribute_key, description, dns_config, health_check_config,
    request_id, service_attributes, service_name, tags,
};
use crate::registry::{Change, CreateService, Error, Registry, Result, UpdateService, now_millis};

impl Registry {
    /// Creates a service (synchronous in Cloud Map).
    pub fn create_service(&self, req: CreateService) -> Result<Service> {
        service_name(&req.name)?;
        if let Some(d) = &req.description {
            description(d)?;
        }
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        if req.health_check_config.is_some() && req.health_check_custom_config.is_some() {
            return Err(Error::InvalidInput(
                "HealthCheckConfig and HealthCheckCustomConfig cannot both be specified".into(),
            ));
        }
        if let Some(hc) = &req.health_check_config {
            health_check_config(hc)?;
        }
        if let Some(dns) = &req.dns_config {
            dns_config(dns, req.health_check_config.as_ref())?;
        }
        tags(&req.tags)?;
        if req.tags.len() > MAX_TAGS {
            return Err(Error::TooManyTags {
                resource: req.name.clone(),
                max: MAX_TAGS,
            });
        }
        let namespace_id = ids::strip_arn(&req.namespace_id, ResourceKind::Namespace).to_string();

        self.write(|index, changes| {
            let ns = index
                .namespace(&namespace_id)
                .ok_or_else(|| Error::NamespaceNotFound(namespace_id.clone()))?;
            if req.dns_config.is_some() && !ns.kind.is_dns() {
                return Err(Error::InvalidInput(format!(
                    "DnsConfig is not allowed for a service in the HTTP namespace {}",
                    ns.name
                )));
            }
            if req.dns_config.is_some() && req.http_only {
                return Err(Error::InvalidInput(
                    "a service of Type HTTP cannot have a DnsConfig".into(),
                ));
            }
            if let Some(existing) = index.service_by_name(&namespace_id, &req.name) {
                let s = &existing.service;
                if req.creator_request_id.is_some()
                    && s.creator_request_id == req.creator_request_id
                {
                    return Ok(s.clone());
                }
                return Err(Error::ServiceAlreadyExists {
                    name: req.name.clone(),
                    service_id: s.id.clone(),
                    service_arn: self.config.scope.service_arn(&s.id),
                    creator_request_id: s.creator_request_id.clone(),
                });
            }
            let now = now_millis();
            let svc = Service {
                id: ids::service_id(),
                name: req.name.clone(),
                namespace_id: namespace_id.clone(),
                description: req.description.clone(),
                kind: if req.dns_config.is_some() {
                    ServiceType::DnsHttp
                } else {
                    ServiceType::Http
                },
                dns_config: req.dns_config.clone(),
                health_check_config: req
                    .health_check_config
                    .clone()
                    .map(with_health_check_defaults),
                // Cloud Map no longer supports the custom threshold and reports 1.
                health_check_custom_config: req.health_check_custom_config.as_ref().map(|_| {
                    HealthCheckCustomConfig {
                        failure_threshold: Some(1),
                    }
                }),
                attributes: Attributes::new(),
                creator_request_id: req.creator_request_id.clone(),
                create_date: now,
                update_date: now,
                revision: 0,
                owner: req.owner.clone(),
                tags: req.tags.clone(),
            };
            changes.push(Change::PutService(svc.clone()));
            Ok(svc)
        })
    }

    /// Updates a service (Cloud Map's `UpdateService`): TTLs may change but
    /// record types may not; the health check is replaced, and removed when
    /// omitted; custom health cannot be added or removed.
    pub fn update_service(
        &self,
        id: &str,
        update: UpdateService,
        actor: &Owner,
    ) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if let Some(d) = &update.description {
            description(d)?;
        }
        if let Some(hc) = &update.health_check_config {
            health_check_config(hc)?;
        }
        self.write(|index, changes| {
            let entry = index
                .service(id)
                .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
            let mut svc = entry.service.clone();
            check_owner(|| format!("service {}", svc.name), &svc.owner, actor)?;
            if update.health_check_config.is_some() && svc.health_check_custom_config.is_some() {
                return Err(Error::InvalidInput(
                    "a service with HealthCheckCustomConfig cannot also have a HealthCheckConfig"
                        .into(),
                ));
            }
            if let Some(records) = &update.dns_records {
                let Some(dns) = &svc.dns_config else {
                    return Err(Error::InvalidInput(format!(
                        "service {} has no DnsConfig to update",
                        svc.name
                    )));
                };
                let mut old: Vec<_> = dns.records.iter().map(|r| r.kind).collect();
                let mut new: Vec<_> = records.iter().map(|r| r.kind).collect();
                old.sort();
                new.sort();
                if old != new {
                    return Err(Error::InvalidInput(
                        "the DNS record types of a service cannot be changed; only their TTLs"
                            .into(),
                    ));
                }
                let updated = DnsConfig {
                    routing_policy: dns.routing_policy,
                    records: records.clone(),
                };
                dns_config(&updated, update.health_check_config.as_ref())?;
                svc.dns_config = Some(updated);
            } else if let Some(dns) = &svc.dns_config {
                dns_config(dns, update.health_check_config.as_ref())?;
            }
            if let Some(d) = &update.description {
                svc.description = Some(d.clone());
            }
            svc.health_check_config = update
                .health_check_config
                .clone()
                .map(with_health_check_defaults);
            svc.update_date = now_millis();
            let target = svc.id.clone();
            changes.push(Change::PutService(svc));
            Ok(self.record_operation(
                index,
                changes,
                OperationType::UpdateService,
                &[(TargetType::Service, &target)],
                None,
            ))
        })
    }

    /// Deletes a service that has no instances.
    pub fn delete_service(&self, id: &str, actor: &Owner) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        self.write(|index, changes| {
            let entry = index
                .service(id)
                .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?;
            check_owner(
                || format!("service {}", entry.service.name),
                &entry.service.owner,
                actor,
            )?;
            if !entry.instances.is_empty() {
                return Err(Error::ResourceInUse(format!(
                    "service {} still has {} instance(s); deregister them first",
                    entry.service.name,
                    entry.instances.len()
                )));
            }
            changes.push(Change::DeleteService(id.to_string()));
            Ok(())
        })
    }

    /// Adds or replaces service attributes (at most 30 in all).
    pub fn update_service_attributes(
        &self,
        id: &str,
        attrs: Attributes,
        actor: &Owner,
    ) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if attrs.is_empty() || attrs.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(Error::InvalidInput(format!(
                "Attributes must contain 1 to {MAX_SERVICE_ATTRIBUTES} entries"
            )));
        }
        service_attributes(&attrs)?;
        self.edit_service(id, actor, |svc| {
            svc.attributes.extend(&attrs);
            if svc.attributes.len() > MAX_SERVICE_ATTRIBUTES {
                return Err(Error::ServiceAttributesLimitExceeded(format!(
                    "service {} would have {} attributes; the maximum is {MAX_SERVICE_ATTRIBUTES}",
                    svc.name,
                    svc.attributes.len()
                )));
            }
            Ok(())
        })
    }

    /// Removes service attributes by key (unknown keys are ignored).
    pub fn delete_service_attributes(
        &self,
        id: &str,
        keys: &[String],
        actor: &Owner,
    ) -> Result<()> {
        let id = ids::strip_arn(id, ResourceKind::Service);
        if keys.is_empty() || keys.len() > MAX_SERVICE_ATTRIBUTES {
            return Err(Error::InvalidInput(format!(
                "Attributes must list 1 to {MAX_SERVICE_ATTRIBUTES} keys"
            )));
        }
        for k in keys {
            attribute_key(k)?;
        }
        self.edit_service(id, actor, |svc| {
            for k in keys {
                svc.attributes.remove(k);
            }
            Ok(())
        })
    }

    /// Applies `edit` to a copy of the service `actor` may change and stores
    /// it with a new update date.
    fn edit_service(
        &self,
        id: &str,
        actor: &Owner,
        mut edit: impl FnMut(&mut Service) -> Result<()>,
    ) -> Result<()> {
        self.write(|index, changes| {
            let mut svc = index
                .service(id)
                .ok_or_else(|| Error::ServiceNotFound(id.to_string()))?
                .service
                .clone();
            check_owner(|| format!("service {}", svc.name), &svc.owner, actor)?;
            edit(&mut svc)?;
            svc.update_date = now_millis();
            changes.push(Change::PutService(svc));
            Ok(())
        })
    }
}
