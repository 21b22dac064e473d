//! The write side, one file per resource. Every write validates its request
//! (pure, `validate`), then plans its [`Change`](super::Change)s against the
//! index inside [`Registry::write`](super::Registry), which persists them in
//! one atomic store commit before any reader sees them.

mod health;
mod instances;
mod namespaces;
mod services;
mod sync;
mod tags;

use super::model::{HealthCheckConfig, HealthCheckType, Instance, Owner};
use super::{Error, Index, Result, ServiceEntry};

/// Describes an owner for error messages.
fn describe(owner: &Owner) -> String {
    match owner {
        Owner::Api => "the Cloud Map API".into(),
        Owner::Controller { cluster, object } => {
            format!("the Waymark controller of cluster {cluster:?} ({object})")
        }
    }
}

/// Fails unless `actor` may change a resource owned by `owner`. A controller
/// may manage what any controller of the same cluster created (the object may
/// have been renamed), never what the API created, and vice versa.
fn check_owner(resource: impl FnOnce() -> String, owner: &Owner, actor: &Owner) -> Result<()> {
    let allowed = match (owner, actor) {
        (Owner::Api, Owner::Api) => true,
        (Owner::Controller { cluster: a, .. }, Owner::Controller { cluster: b, .. }) => a == b,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::OwnedElsewhere {
            resource: resource(),
            owner: describe(owner),
            actor: describe(actor),
        })
    }
}

/// Cloud Map's defaults for a health check: `ResourcePath` `/` for HTTP(S),
/// `FailureThreshold` 1.
fn with_health_check_defaults(mut hc: HealthCheckConfig) -> HealthCheckConfig {
    if hc.kind != HealthCheckType::Tcp && hc.resource_path.is_none() {
        hc.resource_path = Some("/".into());
    }
    hc.failure_threshold.get_or_insert(1);
    hc
}

/// The service `id` in `index`, or Cloud Map's `ServiceNotFound`.
fn service_entry<'a>(index: &'a Index, id: &str) -> Result<&'a ServiceEntry> {
    index
        .service(id)
        .ok_or_else(|| Error::ServiceNotFound(id.to_string()))
}

/// The instance `instance_id` of a service, or Cloud Map's `InstanceNotFound`.
fn instance_of<'a>(entry: &'a ServiceEntry, instance_id: &str) -> Result<&'a Instance> {
    entry
        .instances
        .get(instance_id)
        .ok_or_else(|| Error::InstanceNotFound {
            service_id: entry.service.id.clone(),
            instance_id: instance_id.to_string(),
        })
}
