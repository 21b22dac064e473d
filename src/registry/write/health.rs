//! Health writes: custom health reports, recorded health and active-check
//! verdicts. None of them changes a service's `InstancesRevision`.

use super::{check_owner, instance_of, service_entry};
use crate::registry::ids::{self, ResourceKind};
use crate::registry::model::{HealthStatus, Instance, Owner};
use crate::registry::{Change, Error, HealthFlip, ProbeVerdict, Registry, Result, now_millis};

impl Registry {
    /// Cloud Map's `UpdateInstanceCustomHealthStatus`: only for services with
    /// custom health, effective immediately, never changes the revision.
    pub fn update_custom_health(
        &self,
        service_id: &str,
        instance_id: &str,
        status: HealthStatus,
        actor: &Owner,
    ) -> Result<bool> {
        let service_id = ids::strip_arn(service_id, ResourceKind::Service);
        if status == HealthStatus::Unknown {
            return Err(Error::InvalidInput(
                "Status must be HEALTHY or UNHEALTHY".into(),
            ));
        }
        self.write(|index, changes| {
            let entry = service_entry(index, service_id)?;
            if entry.service.health_check_custom_config.is_none() {
                return Err(Error::CustomHealthNotFound(service_id.to_string()));
            }
            let inst = instance_of(entry, instance_id)?;
            // A controller's instance takes reports when the controller does not
            // report its health itself (a `Custom` ServiceDiscovery).
            if !(inst.owner.is_controller() && inst.reported.is_none()) {
                check_owner(
                    || format!("instance {} of service {}", inst.id, entry.service.name),
                    &inst.owner,
                    actor,
                )?;
            }
            Ok(put_health(inst, status, changes))
        })
    }

    /// Records an instance's health (from a probe, pod readiness or a custom
    /// report). Returns whether it changed. Never changes the revision.
    pub fn set_health(
        &self,
        service_id: &str,
        instance_id: &str,
        status: HealthStatus,
        actor: &Owner,
    ) -> Result<bool> {
        self.write(|index, changes| {
            let entry = service_entry(index, service_id)?;
            let inst = instance_of(entry, instance_id)?;
            check_owner(
                || format!("instance {} of service {}", inst.id, entry.service.name),
                &inst.owner,
                actor,
            )?;
            Ok(put_health(inst, status, changes))
        })
    }

    /// Records active-check verdicts (`true` passing) in one commit and
    /// returns the instances whose effective health changed. Verdicts for
    /// instances or services that are gone, or whose service no longer has an
    /// active check, are ignored: the prober works from a snapshot that a
    /// concurrent write may have overtaken.
    pub fn apply_probe_verdicts(&self, verdicts: &[ProbeVerdict]) -> Result<Vec<HealthFlip>> {
        self.write(|index, changes| {
            let mut flips = Vec::new();
            for v in verdicts {
                let Some(entry) = index.service(&v.service_id) else {
                    continue;
                };
                if entry.service.health_check_config.is_none() {
                    continue;
                }
                let Some(inst) = entry.instances.get(&v.instance_id) else {
                    continue;
                };
                if inst.probe == Some(v.passing) {
                    continue;
                }
                let health = entry
                    .service
                    .combined_health(inst.reported, Some(v.passing));
                if health != inst.health {
                    flips.push(HealthFlip {
                        service_id: v.service_id.clone(),
                        instance_id: v.instance_id.clone(),
                        owner: Owner::clone(&inst.owner),
                        from: inst.health,
                        to: health,
                    });
                }
                changes.push(Change::PutInstance(Instance {
                    health,
                    probe: Some(v.passing),
                    health_since: if health == inst.health {
                        inst.health_since
                    } else {
                        now_millis()
                    },
                    ..inst.clone()
                }));
            }
            Ok(flips)
        })
    }
}

/// Plans `inst`'s health as `status`; returns whether that is a change.
fn put_health(inst: &Instance, status: HealthStatus, changes: &mut Vec<Change>) -> bool {
    if inst.health == status {
        return false;
    }
    changes.push(Change::PutInstance(Instance {
        health: status,
        health_since: now_millis(),
        ..inst.clone()
    }));
    true
}
