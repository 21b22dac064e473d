//! Namespaces: `Create*Namespace`, `Update*Namespace`, `DeleteNamespace`.

use super::check_owner;
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::{Namespace, Operation, OperationType, Owner, TargetType};
use crate::registry::validate::{MAX_TAGS, description, namespace_name, request_id, tags, ttl};
use crate::registry::{
    Change, CreateNamespace, Error, Registry, Result, UpdateNamespace, now_millis,
};

impl Registry {
    /// Creates a namespace (Cloud Map's `Create*Namespace`). The operation
    /// completes at once; the returned record is already `SUCCESS`.
    pub fn create_namespace(&self, req: CreateNamespace) -> Result<Operation> {
        namespace_name(&req.name, req.kind)?;
        if let Some(d) = &req.description {
            description(d)?;
        }
        if let Some(r) = &req.creator_request_id {
            request_id("CreatorRequestId", r)?;
        }
        if let Some(t) = req.soa_ttl {
            if !req.kind.is_dns() {
                return Err(Error::InvalidInput(
                    "an SOA TTL can only be set on DNS namespaces".into(),
                ));
            }
            ttl("Properties.DnsProperties.SOA.TTL", t)?;
        }
        tags(&req.tags)?;
        if req.tags.len() > MAX_TAGS {
            return Err(Error::TooManyTags {
                resource: req.name.clone(),
                max: MAX_TAGS,
            });
        }

        self.write(|index, changes| {
            let existing = index.namespace_by_http_name(&req.name).or_else(|| {
                req.kind
                    .is_dns()
                    .then(|| index.namespace_by_zone(&req.name))
                    .flatten()
            });
            if let Some(ns) = existing {
                // A retry of the same request returns the original operation.
                if req.creator_request_id.is_some()
                    && ns.creator_request_id == req.creator_request_id
                    && let Some(op) = Self::replay(
                        index,
                        req.creator_request_id.as_deref(),
                        OperationType::CreateNamespace,
                    )
                {
                    return Ok(op);
                }
                return Err(Error::NamespaceAlreadyExists {
                    name: req.name.clone(),
                    namespace_id: ns.id.clone(),
                    creator_request_id: ns.creator_request_id.clone(),
                });
            }

            let now = now_millis();
            let ns = Namespace {
                id: ids::namespace_id(),
                http_name: req.name.clone(),
                name: req.name.clone(),
                kind: req.kind,
                description: req.description.clone(),
                soa_ttl: if req.kind.is_dns() {
                    // Route 53's default negative-caching TTL for new zones.
                    Some(req.soa_ttl.unwrap_or(15))
                } else {
                    None
                },
                hosted_zone_id: req.kind.is_dns().then(ids::hosted_zone_id),
                vpc: req.vpc.clone(),
                creator_request_id: req.creator_request_id.clone(),
                create_date: now,
                update_date: now,
                owner: req.owner.clone(),
                tags: req.tags.clone(),
            };
            let target = ns.id.clone();
            changes.push(Change::PutNamespace(ns));
            Ok(self.record_operation(
                index,
                changes,
                OperationType::CreateNamespace,
                &[(TargetType::Namespace, &target)],
                req.creator_request_id.as_deref(),
            ))
        })
    }

    /// Updates a namespace's description and SOA TTL.
    pub fn update_namespace(
        &self,
        id: &str,
        update: UpdateNamespace,
        actor: &Owner,
    ) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Namespace);
        if let Some(d) = &update.description {
            description(d)?;
        }
        if let Some(r) = &update.updater_request_id {
            request_id("UpdaterRequestId", r)?;
        }
        self.write(|index, changes| {
            if let Some(op) = Self::replay(
                index,
                update.updater_request_id.as_deref(),
                OperationType::UpdateNamespace,
            ) {
                return Ok(op);
            }
            let mut ns = index
                .namespace(id)
                .cloned()
                .ok_or_else(|| Error::NamespaceNotFound(id.to_string()))?;
            check_owner(|| format!("namespace {}", ns.name), &ns.owner, actor)?;
            if let Some(t) = update.soa_ttl {
                if !ns.kind.is_dns() {
                    return Err(Error::InvalidInput(
                        "an SOA TTL can only be set on DNS namespaces".into(),
                    ));
                }
                ttl("Properties.DnsProperties.SOA.TTL", t)?;
                ns.soa_ttl = Some(t);
            }
            if let Some(d) = &update.description {
                ns.description = Some(d.clone());
            }
            ns.update_date = now_millis();
            let target = ns.id.clone();
            changes.push(Change::PutNamespace(ns));
            Ok(self.record_operation(
                index,
                changes,
                OperationType::UpdateNamespace,
                &[(TargetType::Namespace, &target)],
                update.updater_request_id.as_deref(),
            ))
        })
    }

    /// Deletes a namespace that has no services.
    pub fn delete_namespace(&self, id: &str, actor: &Owner) -> Result<Operation> {
        let id = ids::strip_arn(id, ResourceKind::Namespace);
        self.write(|index, changes| {
            let ns = index
                .namespace(id)
                .ok_or_else(|| Error::NamespaceNotFound(id.to_string()))?;
            check_owner(|| format!("namespace {}", ns.name), &ns.owner, actor)?;
            let count = index.service_count(id);
            if count > 0 {
                return Err(Error::ResourceInUse(format!(
                    "namespace {} still has {count} service(s); delete them first",
                    ns.name
                )));
            }
            changes.push(Change::DeleteNamespace(id.to_string()));
            Ok(self.record_operation(
                index,
                changes,
                OperationType::DeleteNamespace,
                &[(TargetType::Namespace, id)],
                None,
            ))
        })
    }
}
