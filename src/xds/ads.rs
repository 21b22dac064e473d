//! The state of one ADS stream (state of the world), as a pure state
//! machine: requests and new snapshots in, responses out. The gRPC server
//! only moves messages.
//!
//! Per resource type the stream remembers what the client subscribed to,
//! the version and nonce of the last response, the last version the client
//! ACKed and its last NACK. Following the xDS protocol:
//!
//! - a request whose `response_nonce` is not the last one sent for its type
//!   is stale (a response crossed it) and is ignored;
//! - a request with `error_detail` NACKs the response its nonce names: it is
//!   recorded and the same version is not sent again (the client keeps its
//!   last good configuration); the next change is sent as a new version;
//! - a response goes out on the first request of a type, on a change of
//!   subscription, and whenever the content of the subscribed resources
//!   changes (their version differs from the one last sent).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use sha2::{Digest, Sha256};

use super::snapshot::{Resource, ResourceType, Snapshot};

/// A rejected response, as the client reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The type of the rejected response.
    pub kind: ResourceType,
    /// Its version (the one Waymark sent; the client's `version_info` is
    /// its last good one).
    pub rejected_version: String,
    /// The version the client keeps using (empty before its first ACK).
    pub kept_version: String,
    /// The client's `error_detail` code (a gRPC status code).
    pub code: i32,
    /// The client's `error_detail` message.
    pub message: String,
    /// The names of the resources in the rejected response.
    pub resources: Vec<String>,
}

impl Nack {
    /// The resources the NACK is about: those of the rejected response whose
    /// names the client's message mentions (gRPC and Envoy name the
    /// resource they reject), else all of them.
    pub fn blamed(&self) -> Vec<&str> {
        let named: Vec<&str> = self
            .resources
            .iter()
            .map(String::as_str)
            .filter(|n| self.message.contains(n))
            .collect();
        if named.is_empty() {
            self.resources.iter().map(String::as_str).collect()
        } else {
            named
        }
    }
}

/// What a request meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first request of a type on this stream.
    Subscribe(ResourceType),
    /// The client accepted `version`.
    Ack {
        /// The type.
        kind: ResourceType,
        /// The accepted version.
        version: String,
    },
    /// The client rejected the last response of a type.
    Nack(Nack),
    /// The request answered an older response; ignored.
    Stale(ResourceType),
    /// A type Waymark does not serve; ignored.
    UnknownType(String),
}

/// What handling one request produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// What the request meant.
    pub event: Event,
    /// The response to send, if any.
    pub response: Option<DiscoveryResponse>,
}

/// One type's subscription on a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Subscription {
    wildcard: bool,
    names: BTreeSet<String>,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    sent_names: Vec<String>,
    acked_version: Option<String>,
    last_nack: Option<Nack>,
}

/// The state of one ADS stream.
#[derive(Debug, Default)]
pub struct AdsStream {
    subscriptions: BTreeMap<ResourceType, Subscription>,
    nonces: u64,
}

/// The version of a response: a hash of the names and versions it carries,
/// so equal content always has an equal version.
fn response_version(resources: &[Arc<Resource>]) -> String {
    let mut h = Sha256::new();
    for r in resources {
        h.update(r.name.as_bytes());
        h.update([0]);
        h.update(r.version.to_be_bytes());
    }
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Subscription {
    fn select(&self, kind: ResourceType, snapshot: &Snapshot) -> Vec<Arc<Resource>> {
        let all = snapshot.resources(kind);
        if self.wildcard {
            all.values().cloned().collect()
        } else {
            self.names
                .iter()
                .filter_map(|n| all.get(n).cloned())
                .collect()
        }
    }

    fn subscribed_to_anything(&self) -> bool {
        self.wildcard || !self.names.is_empty()
    }
}

impl AdsStream {
    /// Every resource name the client subscribes to, of any type.
    pub fn subscribed_names(&self) -> impl Iterator<Item = &str> {
        self.subscriptions
            .values()
            .flat_map(|s| s.names.iter().map(String::as_str))
    }

    /// Handles one request against the current snapshot.
    pub fn handle(&mut self, request: &DiscoveryRequest, snapshot: &Snapshot) -> Handled {
        let Some(kind) = ResourceType::from_url(&request.type_url) else {
            return Handled {
                event: Event::UnknownType(request.type_url.clone()),
                response: None,
            };
        };
        let sub = self.subscriptions.entry(kind).or_default();
        let nonce = &request.response_nonce;
        if !nonce.is_empty() && sub.sent_nonce.as_ref() != Some(nonce) {
            return Handled {
                event: Event::Stale(kind),
                response: None,
            };
        }
        let event = if nonce.is_empty() {
            Event::Subscribe(kind)
        } else if let Some(status) = &request.error_detail {
            let nack = Nack {
                kind,
                rejected_version: sub.sent_version.clone().unwrap_or_default(),
                kept_version: request.version_info.clone(),
                code: status.code,
                message: status.message.clone(),
                resources: sub.sent_names.clone(),
            };
            sub.last_nack = Some(nack.clone());
            Event::Nack(nack)
        } else {
            sub.acked_version = Some(request.version_info.clone());
            Event::Ack {
                kind,
                version: request.version_info.clone(),
            }
        };
        let mut names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
        let wildcard = kind.wildcard_capable() && (names.is_empty() || names.remove("*"));
        let changed = wildcard != sub.wildcard || names != sub.names;
        sub.wildcard = wildcard;
        sub.names = names;
        let respond = matches!(event, Event::Subscribe(_)) || changed;
        let response = if respond && sub.subscribed_to_anything() {
            self.respond(kind, snapshot, true)
        } else {
            None
        };
        Handled { event, response }
    }

    /// The responses a new snapshot calls for: one per subscribed type whose
    /// content changed, in push order (clusters, endpoints, listeners, routes).
    pub fn push(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for kind in ResourceType::ALL {
            let subscribed = self
                .subscriptions
                .get(&kind)
                .is_some_and(Subscription::subscribed_to_anything);
            if subscribed && let Some(r) = self.respond(kind, snapshot, false) {
                out.push(r);
            }
        }
        out
    }

    /// A response for `kind` (always when `force`, else only when its
    /// version differs from the one last sent).
    fn respond(
        &mut self,
        kind: ResourceType,
        snapshot: &Snapshot,
        force: bool,
    ) -> Option<DiscoveryResponse> {
        let sub = self.subscriptions.get_mut(&kind)?;
        let resources = sub.select(kind, snapshot);
        let version = response_version(&resources);
        if !force && sub.sent_version.as_ref() == Some(&version) {
            return None;
        }
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        sub.sent_version = Some(version.clone());
        sub.sent_nonce = Some(nonce.clone());
        sub.sent_names = resources.iter().map(|r| r.name.clone()).collect();
        Some(DiscoveryResponse {
            version_info: version,
            resources: resources.iter().map(|r| r.body.clone()).collect(),
            type_url: kind.url().to_string(),
            nonce,
            ..Default::default()
        })
    }

    /// The last version the client ACKed for `kind`.
    pub fn acked_version(&self, kind: ResourceType) -> Option<&str> {
        self.subscriptions.get(&kind)?.acked_version.as_deref()
    }

    /// The client's last NACK of `kind`.
    pub fn last_nack(&self, kind: ResourceType) -> Option<&Nack> {
        self.subscriptions.get(&kind)?.last_nack.as_ref()
    }
}

#[cfg(test)]
#[path = "ads_tests.rs"]
mod tests;
