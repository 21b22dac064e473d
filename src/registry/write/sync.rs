//! The controller's write path: a controller's desired set of instances for a
//! service, applied in one commit (a full sync) or pod by pod (partial syncs
//! of several services in one commit).

use std::sync::Arc;

use super::{check_owner, describe, service_entry};
use crate::registry::model::{HealthStatus, Instance, NamespaceType, Owner};
use crate::registry::validate::{instance_attributes_for_service, instance_id};
use crate::registry::{
    Change, DesiredInstance, Index, PartialSync, Registry, Result, SyncOutcome, now_millis,
};

/// Which controller-owned instances a sync removes.
enum Removals<'a> {
    /// Every one not desired (a full sync).
    AllOthers,
    /// Only these ids (a partial sync).
    Only(&'a [String]),
}

impl Registry {
    /// Makes the instances a controller owns in a service exactly `desired`,
    /// in one atomic commit: new ones are registered, changed ones updated,
    /// missing ones deregistered, and health recorded. Instances owned by
    /// anyone else are never touched; a desired instance that fails
    /// validation or collides with someone else's is reported and skipped.
    /// The revision grows by the number of registrations, attribute changes
    /// and deregistrations; health changes alone leave it as it is.
    pub fn sync_instances(
        &self,
        service_id: &str,
        desired: Vec<DesiredInstance>,
        actor: &Owner,
    ) -> Result<SyncOutcome> {
        self.write(|index, changes| {
            self.plan_sync(
                index,
                changes,
                service_id,
                &desired,
                Removals::AllOthers,
                actor,
            )
        })
    }

    /// Applies several partial syncs — each only upserting and removing the
    /// instances it names — in one commit (one fsync), for a controller that
    /// follows individual pod changes. A sync whose service is gone fails on
    /// its own without holding back the others.
    pub fn sync_partial(&self, batch: Vec<PartialSync>) -> Result<Vec<Result<SyncOutcome>>> {
        self.write(|index, changes| {
            // Each sync sees the index before the batch; syncs of one batch
            // must therefore name distinct services.
            Ok(batch
                .iter()
                .map(|p| {
                    self.plan_sync(
                        index,
                        changes,
                        &p.service_id,
                        &p.upserts,
                        Removals::Only(&p.removals),
                        &p.owner,
                    )
                })
                .collect())
        })
    }

    /// The changes that bring a service's controller-owned instances to
    /// `desired` (see [`Registry::sync_instances`]).
    fn plan_sync(
        &self,
        index: &Index,
        changes: &mut Vec<Change>,
        service_id: &str,
        desired: &[DesiredInstance],
        removals: Removals<'_>,
        actor: &Owner,
    ) -> Result<SyncOutcome> {
        let entry = service_entry(index, service_id)?;
        let ns_type = index
            .namespace(&entry.service.namespace_id)
            .map_or(NamespaceType::Http, |n| n.kind);
        let mine = |owner: &Owner| check_owner(String::new, owner, actor).is_ok();
        // One copy of the owner for every instance this sync writes.
        let owner = Arc::new(actor.clone());
        // Likewise the service id (the index then shares it with the
        // service's other instances).
        let service_arc: Arc<str> = Arc::from(service_id);
        let now = now_millis();
        let mut outcome = SyncOutcome::default();
        let mut keep = std::collections::HashSet::new();
        let mut count = entry.instances.len();
        for d in desired {
            if !keep.insert(d.id.clone()) {
                outcome
                    .rejected
                    .push((d.id.clone(), "duplicate instance id".into()));
                continue;
            }
            let existing = entry.instances.get(&d.id);
            // An unchanged instance needs no validation: it passed when stored.
            let same_attrs = existing.is_some_and(|o| o.attributes == d.attributes);
            if !same_attrs
                && let Err(e) = instance_id(&d.id).and_then(|()| {
                    instance_attributes_for_service(&d.attributes, &entry.service, ns_type)
                })
            {
                outcome.rejected.push((d.id.clone(), e.to_string()));
                continue;
            }
            // With an active check the pod's readiness is one of two inputs;
            // with custom health it is the health itself, unless the
            // controller leaves it to API reports.
            let active = entry.service.health_check_config.is_some();
            let custom = entry.service.health_check_custom_config.is_some();
            let reported = if active || custom { d.health } else { None };
            let probe = |old: Option<&Instance>| {
                if active {
                    old.and_then(|o| o.probe)
                } else {
                    None
                }
            };
            let health = match (custom, reported) {
                (true, Some(h)) => h,
                (true, None) => existing.map_or(HealthStatus::Healthy, |o| o.health),
                (false, _) => entry.service.combined_health(reported, probe(existing)),
            };
            match existing {
                Some(old) if !mine(&old.owner) => {
                    outcome.rejected.push((
                        d.id.clone(),
                        format!("the id is already registered by {}", describe(&old.owner)),
                    ));
                }
                Some(old) => {
                    if !same_attrs
                        || old.health != health
                        || old.reported != reported
                        || *old.owner != *actor
                    {
                        if !same_attrs {
                            outcome.updated += 1;
                        } else if old.health != health {
                            outcome.health_changed += 1;
                        }
                        changes.push(Change::PutInstance(Instance {
                            attributes: d.attributes.clone(),
                            health,
                            reported,
                            probe: probe(Some(old)),
                            owner: Arc::clone(&owner),
                            update_date: if same_attrs { old.update_date } else { now },
                            ..old.clone()
                        }));
                    }
                }
                None => {
                    if count >= self.config.max_instances_per_service {
                        outcome.rejected.push((
                            d.id.clone(),
                            format!(
                                "service {} already has {count} instances, the maximum",
                                entry.service.name
                            ),
                        ));
                        continue;
                    }
                    count += 1;
                    outcome.registered += 1;
                    changes.push(Change::PutInstance(Instance {
                        id: d.id.clone(),
                        service_id: Arc::clone(&service_arc),
                        attributes: d.attributes.clone(),
                        creator_request_id: None,
                        health,
                        reported,
                        probe: None,
                        owner: Arc::clone(&owner),
                        create_date: now,
                        update_date: now,
                    }));
                }
            }
        }
        let mut remove = |id: &String| {
            outcome.deregistered += 1;
            changes.push(Change::DeleteInstance {
                service_id: service_id.to_string(),
                instance_id: id.clone(),
            });
        };
        match removals {
            Removals::AllOthers => {
                for (id, inst) in &entry.instances {
                    if mine(&inst.owner) && !keep.contains(id) {
                        remove(id);
                    }
                }
            }
            Removals::Only(ids) => {
                for id in ids {
                    if !keep.contains(id) && entry.instances.get(id).is_some_and(|i| mine(&i.owner))
                    {
                        remove(id);
                    }
                }
            }
        }
        let bump = (outcome.registered + outcome.updated + outcome.deregistered) as u64;
        if bump > 0 {
            let mut svc = entry.service.clone();
            svc.revision += bump;
            changes.push(Change::PutService(svc));
        }
        Ok(outcome)
    }
}
