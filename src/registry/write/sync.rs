//! The controller's write path: a controller's desired set of instances for a
//! service, applied in one commit (a full sync) or pod by pod (partial syncs
//! of several services in one commit).

use std::sync::Arc;

use super::{check_owner, describe, service_entry};
use crate::registry::batch::Key;
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
        let budget = self.max_changes();
        let mut total = SyncOutcome::default();
        // A store that limits one commit's size takes a large sync in rounds,
        // each a complete write of its own (see `plan_sync`).
        loop {
            // Removals look at every instance of the service.
            let reads = [Key::Instances(service_id.to_string())];
            let (outcome, complete) = self.write_reading(&reads, |index, changes| {
                self.plan_sync(
                    index,
                    changes,
                    service_id,
                    &desired,
                    Removals::AllOthers,
                    actor,
                    budget,
                )
            })?;
            total.absorb(outcome);
            if complete {
                return Ok(total);
            }
        }
    }

    /// Applies several partial syncs — each only upserting and removing the
    /// instances it names — in one commit (one fsync), for a controller that
    /// follows individual pod changes. A sync whose service is gone fails on
    /// its own without holding back the others. Syncs of one batch must name
    /// distinct services. On a store that limits a commit's size, a batch
    /// that does not fit is committed in rounds.
    pub fn sync_partial(&self, batch: Vec<PartialSync>) -> Result<Vec<Result<SyncOutcome>>> {
        let budget = self.max_changes();
        let mut results: Vec<Option<Result<SyncOutcome>>> = batch.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        while !pending.is_empty() {
            let round = self.write(|index, changes| {
                // Each sync sees the index before the round.
                let mut planned = Vec::new();
                for &i in &pending {
                    let room = budget.saturating_sub(changes.len());
                    if room < 2 && !planned.is_empty() {
                        break;
                    }
                    let p = &batch[i];
                    let result = self.plan_sync(
                        index,
                        changes,
                        &p.service_id,
                        &p.upserts,
                        Removals::Only(&p.removals),
                        &p.owner,
                        room.max(2),
                    );
                    planned.push((i, result));
                }
                Ok(planned)
            })?;
            let mut unfinished = Vec::new();
            for (i, result) in round {
                match result {
                    Ok((outcome, complete)) => {
                        let slot = results[i].get_or_insert_with(|| Ok(SyncOutcome::default()));
                        if let Ok(total) = slot {
                            total.absorb(outcome);
                        }
                        if !complete {
                            unfinished.push(i);
                        }
                    }
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            let planned: std::collections::HashSet<usize> = results
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.is_some().then_some(i))
                .collect();
            // Next round: the unfinished ones first, then those not reached.
            let mut next = unfinished.clone();
            next.extend(
                pending
                    .iter()
                    .copied()
                    .filter(|i| !planned.contains(i) && !unfinished.contains(i)),
            );
            pending = next;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Ok(SyncOutcome::default())))
            .collect())
    }

    /// The changes that bring a service's controller-owned instances to
    /// `desired` (see [`Registry::sync_instances`]), at most `budget` of
    /// them. Returns what they do and whether that is everything: when the
    /// budget runs out the plan stops short (removing nothing yet, since
    /// removals of a full sync assume every desired instance was seen), and
    /// the next round, planned on the index this one leaves, goes on from
    /// there. Each round is a valid write of its own, revision bump included.
    #[allow(clippy::too_many_arguments)]
    fn plan_sync(
        &self,
        index: &Index,
        changes: &mut Vec<Change>,
        service_id: &str,
        desired: &[DesiredInstance],
        removals: Removals<'_>,
        actor: &Owner,
        budget: usize,
    ) -> Result<(SyncOutcome, bool)> {
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
        // One change is kept for the service record (the revision bump).
        let start = changes.len();
        let room = budget.saturating_sub(1).max(1);
        let mut complete = true;
        for d in desired {
            if changes.len() - start >= room {
                complete = false;
                break;
            }
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
                            health_since: if old.health == health {
                                old.health_since
                            } else {
                                now
                            },
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
                        health_since: now,
                    }));
                }
            }
        }
        let upserted_all = complete;
        let mut remove = |id: &String| {
            if changes.len() - start >= room {
                complete = false;
                return;
            }
            outcome.deregistered += 1;
            changes.push(Change::DeleteInstance {
                service_id: service_id.to_string(),
                instance_id: id.clone(),
            });
        };
        match removals {
            _ if !upserted_all => {}
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
        Ok((outcome, complete))
    }
}
