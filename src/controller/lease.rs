//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! Every replica watches the cluster and keeps its own registry in sync (it
//! serves the API and DNS from it), but only the holder of the Lease writes
//! to Kubernetes: status, finalizers, Events, pod conditions and
//! automatically created ServiceDiscoveries. A replica takes the Lease over
//! when its holder has not renewed it for the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name (replicas of one installation share it).
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Whether the lease is held by someone else and still valid.
fn held_by_other(spec: &LeaseSpec, me: &str, duration: Duration) -> bool {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return false;
    };
    if holder == me {
        return false;
    }
    let secs = spec
        .lease_duration_seconds
        .map_or(duration.as_secs() as i64, i64::from);
    match &spec.renew_time {
        Some(t) => {
            let expires = t.0.as_millisecond() + secs * 1000;
            expires > k8s_openapi::jiff::Timestamp::now().as_millisecond()
        }
        None => false,
    }
}

/// One attempt to acquire or renew; returns whether we hold the lease.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let me = cfg.identity.as_str();
    let secs = cfg.duration.as_secs().max(1) as i32;
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.to_string()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if held_by_other(spec, me, cfg.duration) {
                return Ok(false);
            }
            if spec.holder_identity.as_deref() != Some(me) {
                spec.holder_identity = Some(me.to_string());
                spec.acquire_time = Some(now());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(secs);
            spec.renew_time = Some(now());
            // `replace` carries the resourceVersion we read: if another
            // replica wrote in between, this fails with 409 and we re-read.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Keeps trying to hold the lease, publishing leadership on `tx`. Renews at a
/// third of the duration; steps down when renewal has failed for the whole
/// duration (another replica may then take over).
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api = Api::<Lease>::namespaced(client, &cfg.namespace);
    let renew = cfg.duration / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        let leader = match try_acquire(&api, &cfg).await {
            Ok(held) => {
                if held {
                    last_ok = tokio::time::Instant::now();
                }
                held
            }
            Err(e) => {
                warn!(error = %e, "lease renewal failed");
                // Keep leading only while the lease we hold is still valid.
                *tx.borrow() && last_ok.elapsed() < cfg.duration
            }
        };
        if *tx.borrow() != leader {
            info!(identity = %cfg.identity, leader, "leadership changed");
        }
        tx.send_replace(leader);
        tokio::time::sleep(if leader {
            renew
        } else {
            renew.min(Duration::from_secs(2))
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_ms_ago: i64, secs: i32) -> LeaseSpec {
        let t = k8s_openapi::jiff::Timestamp::from_millisecond(
            k8s_openapi::jiff::Timestamp::now().as_millisecond() - renewed_ms_ago,
        )
        .unwrap();
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(t)),
            lease_duration_seconds: Some(secs),
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_lease_of_another_holder_is_respected_until_it_expires() {
        let d = Duration::from_secs(15);
        assert!(held_by_other(&spec(Some("a"), 1_000, 15), "b", d));
        assert!(
            !held_by_other(&spec(Some("a"), 16_000, 15), "b", d),
            "expired"
        );
        assert!(!held_by_other(&spec(Some("b"), 1_000, 15), "b", d), "ours");
        assert!(!held_by_other(&spec(None, 1_000, 15), "b", d), "released");
    }
}
