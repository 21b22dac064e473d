//! The state of one incremental ("delta") ADS stream, as a pure state
//! machine, beside [`super::ads`] for state of the world.
//!
//! Per resource type the stream remembers what the client subscribed to
//! (names, or every resource for a wildcard LDS/CDS subscription) and which
//! version of each resource the client was sent. A response carries only
//! the resources whose version the client does not have, and the names of
//! subscribed resources that are gone (`removed_resources`), so one
//! instance's change sends one ClusterLoadAssignment, whatever else the
//! stream subscribed to. Following the delta protocol:
//!
//! - every response has its own nonce and is ACKed or NACKed by it; several
//!   may be outstanding, and a nonce Waymark did not send (or already saw
//!   answered) is ignored;
//! - subscription changes ride on any request, ACK or not, and are answered
//!   at once with what they add;
//! - the first request's `initial_resource_versions` (a reconnecting client's
//!   cache) count as sent, so an unchanged resource is not sent again;
//! - a NACKed resource is not sent again until it changes (the client keeps
//!   its last good version); the NACK is recorded like in state of the world.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use sha2::{Digest, Sha256};

use super::ads::{Event, Nack};
use super::snapshot::{ResourceType, Snapshot};

/// What handling one request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// What the request meant.
    pub event: Event,
    /// The response to send, if any.
    pub response: Option<DeltaDiscoveryResponse>,
}

/// One type's subscription on a delta stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    // Name → version the client was sent (or had when it connected).
    has: BTreeMap<String, String>,
    last_nack: Option<Nack>,
}

/// The state of one delta ADS stream.
#[derive(Debug, Default)]
pub struct DeltaStream {
    subscriptions: BTreeMap<ResourceType, Subscription>,
    nonces: u64,
    // Responses not ACKed or NACKed yet: nonce → (type, system version,
    // resource names); at most MAX_OUTSTANDING (a client that never answers
    // cannot grow it).
    outstanding: BTreeMap<u64, (ResourceType, String, Vec<String>)>,
}

/// Unanswered responses remembered per stream; older ones count as stale.
const MAX_OUTSTANDING: usize = 64;

/// A resource's version on the wire.
fn version_text(version: u64) -> String {
    format!("{version:016x}")
}

impl Subscription {
    /// Whether the client asked for `name`.
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

impl DeltaStream {
    /// Every resource name the client subscribes to, of any type.
    pub fn subscribed_names(&self) -> impl Iterator<Item = &str> {
        self.subscriptions
            .values()
            .flat_map(|s| s.names.iter().map(String::as_str))
    }

    /// Handles one request against the current snapshot.
    pub fn handle(&mut self, request: &DeltaDiscoveryRequest, snapshot: &Snapshot) -> Handled {
        let Some(kind) = ResourceType::from_url(&request.type_url) else {
            return Handled {
                event: Event::UnknownType(request.type_url.clone()),
                response: None,
            };
        };
        let first = !self.subscriptions.contains_key(&kind);
        let nonce = &request.response_nonce;
        let event = if nonce.is_empty() {
            Event::Subscribe(kind)
        } else {
            let sent = nonce.parse().ok().and_then(|n| self.outstanding.remove(&n));
            match sent {
                Some((_, version, resources)) => match &request.error_detail {
                    Some(status) => {
                        let nack = Nack {
                            kind,
                            rejected_version: version,
                            kept_version: String::new(),
                            code: status.code,
                            message: status.message.clone(),
                            resources,
                        };
                        let sub = self.subscriptions.entry(kind).or_default();
                        sub.last_nack = Some(nack.clone());
                        Event::Nack(nack)
                    }
                    None => Event::Ack { kind, version },
                },
                None => Event::Stale(kind),
            }
        };
        let sub = self.subscriptions.entry(kind).or_default();
        let mut added = BTreeSet::new();
        if first {
            sub.wildcard = kind.wildcard_capable()
                && (request.resource_names_subscribe.is_empty()
                    || request.resource_names_subscribe.iter().any(|n| n == "*"));
            sub.has = request
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
        for name in &request.resource_names_subscribe {
            if name == "*" {
                sub.wildcard = kind.wildcard_capable();
            } else if sub.names.insert(name.clone()) {
                added.insert(name.clone());
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == "*" {
                sub.wildcard = false;
            } else {
                sub.names.remove(name);
            }
        }
        // What the client no longer wants, it forgets; a name it asks for
        // again is sent again.
        let wanted: Vec<String> = sub.has.keys().filter(|n| !sub.wants(n)).cloned().collect();
        for name in wanted {
            sub.has.remove(&name);
        }
        for name in &request.resource_names_unsubscribe {
            sub.has.remove(name);
        }
        let response = self.respond(kind, snapshot, &added, first);
        Handled { event, response }
    }

    /// The responses a new snapshot calls for: one per subscribed type with
    /// resources the client does not have, or has but are gone.
    pub fn push(&mut self, snapshot: &Snapshot) -> Vec<DeltaDiscoveryResponse> {
        let kinds: Vec<ResourceType> = self.subscriptions.keys().copied().collect();
        let mut order = ResourceType::ALL.to_vec();
        order.retain(|k| kinds.contains(k));
        order
            .into_iter()
            .filter_map(|kind| self.respond(kind, snapshot, &BTreeSet::new(), false))
            .collect()
    }

    /// The changes for `kind`: resources the client lacks, and removed names
    /// (including `announce`d new names that do not exist, so the client
    /// need not wait to learn that). Always a response when `force`.
    fn respond(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        announce: &BTreeSet<String>,
        force: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let sub = self.subscriptions.get_mut(&kind)?;
        let all = snapshot.resources(kind);
        let mut resources = Vec::new();
        let candidates: Box<dyn Iterator<Item = &String>> = if sub.wildcard {
            Box::new(
                all.keys()
                    .chain(sub.names.iter().filter(|n| !all.contains_key(*n))),
            )
        } else {
            Box::new(sub.names.iter())
        };
        let mut removed = Vec::new();
        for name in candidates {
            match all.get(name) {
                Some(r) => {
                    let version = version_text(r.version);
                    if sub.has.get(name) != Some(&version) {
                        resources.push(DeltaResource {
                            name: name.clone(),
                            version,
                            resource: Some(r.body.clone()),
                            ..Default::default()
                        });
                    }
                }
                None if sub.has.contains_key(name) || announce.contains(name) => {
                    removed.push(name.clone());
                }
                None => {}
            }
        }
        // Wildcard: resources the client has that are gone from the snapshot.
        if sub.wildcard {
            for name in sub.has.keys() {
                if !all.contains_key(name) && !removed.contains(name) {
                    removed.push(name.clone());
                }
            }
        }
        if resources.is_empty() && removed.is_empty() && !force {
            return None;
        }
        for r in &resources {
            sub.has.insert(r.name.clone(), r.version.clone());
        }
        for name in &removed {
            sub.has.remove(name);
        }
        let mut h = Sha256::new();
        for (name, version) in &sub.has {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(version.as_bytes());
            h.update([1]);
        }
        let system_version: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.nonces += 1;
        let names = resources.iter().map(|r| r.name.clone()).collect();
        self.outstanding
            .insert(self.nonces, (kind, system_version.clone(), names));
        if self.outstanding.len() > MAX_OUTSTANDING {
            self.outstanding.pop_first();
        }
        let nonce = self.nonces.to_string();
        Some(DeltaDiscoveryResponse {
            system_version_info: system_version,
            resources,
            type_url: kind.url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }

    /// The client's last NACK of `kind`.
    pub fn last_nack(&self, kind: ResourceType) -> Option<&Nack> {
        self.subscriptions.get(&kind)?.last_nack.as_ref()
    }

    /// Responses the client has not answered yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
