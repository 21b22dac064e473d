//! The pure half of the xDS server: registry state → xDS resources.
//!
//! Every registry service `<service>` of namespace `<namespace>` becomes four
//! resources, all named `<service>.<namespace>` (the name a proxyless gRPC
//! client dials as `xds:///<service>.<namespace>`):
//!
//! - a Listener whose `api_listener` is an HttpConnectionManager that takes its
//!   routes over RDS (through ADS) and ends in the router filter;
//! - a RouteConfiguration with one catch-all route to the cluster;
//! - a Cluster of type EDS whose endpoints come over ADS;
//! - a ClusterLoadAssignment with every instance that has an address and a
//!   port (see [`load_assignment`]).
//!
//! A service attribute [`WAYMARK_TRAFFIC_SPLIT`] (`version:v1=90,v2=10`)
//! adds one Cluster and ClusterLoadAssignment per attribute subset, named
//! `<service>.<namespace>/<key>=<value>` ([`ClusterName`]), and makes the
//! route a weighted one over them (blue/green, canary).
//!
//! Versions are content hashes (SHA-256, 64 bits shown), so two replicas
//! serving the same registry hand out the same versions and an unchanged
//! resource never looks changed. The endpoints' version is hashed from the
//! inputs rather than the encoding, because protobuf `Struct` metadata is a
//! hash map whose encoded order is not stable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, HealthStatus as EnvoyHealth,
    Locality, Metadata, SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, endpoint, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster, route,
    route_action, route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::{Any, Struct, UInt32Value, Value, value};
use prost::{Message, Name};
use sha2::{Digest, Sha256};

// Locality comes from the attributes the controller sets from the node's
// topology labels; an instance carrying WAYMARK_DRAINING (a terminating pod,
// or any instance registered with it) is served as DRAINING.
use crate::controller::desired::{AVAILABILITY_ZONE, REGION, WAYMARK_DRAINING};
use crate::registry::model::{HealthStatus, Instance};
use crate::registry::validate::{AWS_INSTANCE_IPV4, AWS_INSTANCE_IPV6, AWS_INSTANCE_PORT};
use crate::registry::{Index, ServiceEntry};

/// The `filter_metadata` key under which an endpoint's instance attributes
/// are served.
pub const METADATA_KEY: &str = "waymark";

/// The four resource types Waymark serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS).
    Endpoint,
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
}

impl ResourceType {
    /// Every type, in the order pushes go out: clusters before their
    /// endpoints, listeners before their routes (make before break).
    pub const ALL: [Self; 4] = [Self::Cluster, Self::Endpoint, Self::Listener, Self::Route];

    /// The type URL of the resources.
    pub fn url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type a request's type URL names, if Waymark serves it.
    pub fn from_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.url() == url)
    }

    /// A short name for logs and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cluster => "cluster",
            Self::Endpoint => "endpoint",
            Self::Listener => "listener",
            Self::Route => "route",
        }
    }

    /// Whether an empty subscription means "all of them" (LDS and CDS only,
    /// per the xDS protocol).
    pub fn wildcard_capable(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One resource as served.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Its name.
    pub name: String,
    /// A hash of its content.
    pub version: u64,
    /// The encoded message.
    pub body: Any,
}

impl Resource {
    fn encoded<M: Message + Name>(name: String, message: M) -> Self {
        let body = Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        };
        Self {
            version: digest64(&body.value),
            name,
            body,
        }
    }
}

fn digest64(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    u64::from_be_bytes(d[..8].try_into().expect("a SHA-256 digest has 32 bytes"))
}

/// The name of a cluster: a service's, or one of its attribute subsets'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName<'a> {
    /// `<service>.<namespace>`.
    pub service: &'a str,
    /// Attribute filter of the subset (empty: the whole service), in key order.
    pub subset: &'a [(String, String)],
}

impl std::fmt::Display for ClusterName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.service)?;
        for (i, (k, v)) in self.subset.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '/' } else { ',' })?;
        }
        Ok(())
    }
}

/// Service attribute asking for a traffic split by one instance attribute:
/// `<key>:<value>=<weight>,<value>=<weight>…`, for example `version:v1=90,v2=10`.
/// The route then sends each value's share of requests to the cluster of
/// the instances with that attribute value (`<service>.<namespace>/<key>=<value>`).
pub const WAYMARK_TRAFFIC_SPLIT: &str = "WAYMARK_TRAFFIC_SPLIT";

/// Most subsets one split may name.
pub const MAX_SPLIT_SUBSETS: usize = 16;

/// A parsed [`WAYMARK_TRAFFIC_SPLIT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSplit {
    /// The instance attribute that tells the subsets apart.
    pub key: String,
    /// Each value's weight, in the order given.
    pub weights: Vec<(String, u32)>,
}

impl std::str::FromStr for TrafficSplit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (key, rest) = text
            .split_once(':')
            .ok_or("expected <key>:<value>=<weight>,… (for example version:v1=90,v2=10)")?;
        let key = key.trim();
        if key.is_empty() {
            return Err("the attribute key is empty".into());
        }
        let mut weights: Vec<(String, u32)> = Vec::new();
        for part in rest.split(',') {
            let (value, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not <value>=<weight>"))?;
            let value = value.trim();
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {value:?} is not a whole number"))?;
            if value.is_empty() {
                return Err("a value is empty".into());
            }
            if weights.iter().any(|(v, _)| v == value) {
                return Err(format!("value {value:?} is given twice"));
            }
            weights.push((value.to_string(), weight));
        }
        if weights.len() > MAX_SPLIT_SUBSETS {
            return Err(format!("at most {MAX_SPLIT_SUBSETS} values"));
        }
        let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 || total > u64::from(u32::MAX) {
            return Err("the weights must add up to more than 0 (and fit 32 bits)".into());
        }
        Ok(Self {
            key: key.to_string(),
            weights,
        })
    }
}

/// A subset a client asked for by name, the way DiscoverInstances'
/// QueryParameters filter: `<service>.<namespace>/<key>=<value>[,<key>=<value>…]`
/// (for example `xds:///inventory.shop/version=v2`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubsetName {
    /// The whole name, as asked for.
    pub name: String,
    /// `<service>.<namespace>`.
    pub base: String,
    /// The attribute filter.
    pub filter: Vec<(String, String)>,
}

impl SubsetName {
    /// Parses a subset name; `None` for a plain (or malformed) name.
    pub fn parse(name: &str) -> Option<Self> {
        let (base, filter) = name.split_once('/')?;
        let filter: Option<Vec<(String, String)>> = filter
            .split(',')
            .map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (!k.is_empty() && !v.is_empty()).then(|| (k.to_string(), v.to_string()))
            })
            .collect();
        let filter = filter?;
        (!base.is_empty()).then(|| Self {
            name: name.to_string(),
            base: base.to_string(),
            filter,
        })
    }
}

/// The resources of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceResources {
    /// The Listener (LDS).
    pub listener: Arc<Resource>,
    /// The RouteConfiguration (RDS).
    pub route: Arc<Resource>,
    /// The Clusters (CDS): the service's, then one per split subset.
    pub clusters: Vec<Arc<Resource>>,
    /// The ClusterLoadAssignments (EDS), one per cluster.
    pub endpoints: Vec<Arc<Resource>>,
    /// Why the service's traffic split was not applied, if it was not.
    pub split_problem: Option<String>,
    /// The resources of the subsets clients asked for by name: a Listener,
    /// RouteConfiguration, Cluster and ClusterLoadAssignment each.
    pub subsets: Vec<(ResourceType, Arc<Resource>)>,
}

/// The xDS name of a service: `<service>.<namespace>`.
pub fn resource_name(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}")
}

/// Builds the resources of one service of namespace `namespace`: with a
/// valid [`WAYMARK_TRAFFIC_SPLIT`], a cluster per subset and a weighted
/// route over them; without one (or with an invalid one, reported in
/// [`ServiceResources::split_problem`]), one route to the whole service.
/// Each of `demanded` (subsets of this service clients asked for by name)
/// adds its own four resources.
pub fn service_resources(
    namespace: &str,
    entry: &ServiceEntry,
    demanded: &[&SubsetName],
) -> ServiceResources {
    let name = resource_name(&entry.service.name, namespace);
    let split = entry
        .service
        .attributes
        .get(WAYMARK_TRAFFIC_SPLIT)
        .map(str::parse::<TrafficSplit>);
    let split_problem = match &split {
        Some(Err(e)) => Some(format!("{WAYMARK_TRAFFIC_SPLIT}: {e}")),
        _ => None,
    };
    let mut subsets: Vec<(Vec<(String, String)>, u32)> = vec![(Vec::new(), 0)];
    if let Some(Ok(split)) = &split {
        subsets.extend(
            split
                .weights
                .iter()
                .map(|(v, w)| (vec![(split.key.clone(), v.clone())], *w)),
        );
    }
    let mut clusters = Vec::new();
    let mut endpoints = Vec::new();
    let mut weighted = Vec::new();
    for (subset, weight) in &subsets {
        let cluster_name = ClusterName {
            service: &name,
            subset,
        }
        .to_string();
        let (cla, version) = load_assignment(&cluster_name, entry, subset);
        let mut cla = Resource::encoded(cluster_name.clone(), cla);
        cla.version = version;
        endpoints.push(Arc::new(cla));
        clusters.push(Arc::new(Resource::encoded(
            cluster_name.clone(),
            eds_cluster(&cluster_name),
        )));
        if !subset.is_empty() {
            weighted.push((cluster_name, *weight));
        }
    }
    let target = if weighted.is_empty() {
        route_action::ClusterSpecifier::Cluster(name.clone())
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: weighted
                .into_iter()
                .map(|(name, weight)| weighted_cluster::ClusterWeight {
                    name,
                    weight: Some(UInt32Value { value: weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut subsets = Vec::new();
    for subset in demanded {
        let n = &subset.name;
        let cluster = route_action::ClusterSpecifier::Cluster(n.clone());
        let (cla, version) = load_assignment(n, entry, &subset.filter);
        let mut cla = Resource::encoded(n.clone(), cla);
        cla.version = version;
        subsets.extend([
            (
                ResourceType::Listener,
                Arc::new(Resource::encoded(n.clone(), listener(n))),
            ),
            (
                ResourceType::Route,
                Arc::new(Resource::encoded(
                    n.clone(),
                    route_configuration(n, cluster),
                )),
            ),
            (
                ResourceType::Cluster,
                Arc::new(Resource::encoded(n.clone(), eds_cluster(n))),
            ),
            (ResourceType::Endpoint, Arc::new(cla)),
        ]);
    }
    ServiceResources {
        listener: Arc::new(Resource::encoded(name.clone(), listener(&name))),
        route: Arc::new(Resource::encoded(
            name.clone(),
            route_configuration(&name, target),
        )),
        clusters,
        endpoints,
        split_problem,
        subsets,
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn pack<M: Message + Name>(message: M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// The client-side listener: routes come over RDS, requests end in the
/// router filter (gRPC requires it last).
fn listener(name: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                pack(Router::default()),
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(hcm)),
        }),
        ..Default::default()
    }
}

/// One virtual host for every authority, one route for every path.
fn route_configuration(name: &str, target: route_action::ClusterSpecifier) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: name.to_string(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(target),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster whose endpoints come over ADS, balanced round robin.
fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.to_string(),
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// The health an instance is served with: `DRAINING` when marked so, else
/// the health Cloud Map reports (`UNKNOWN` without a health check, which
/// clients treat as usable).
pub fn endpoint_health(entry: &ServiceEntry, instance: &Instance) -> EnvoyHealth {
    if instance.attributes.contains_key(WAYMARK_DRAINING) {
        return EnvoyHealth::Draining;
    }
    match entry.reported_health(instance) {
        HealthStatus::Healthy => EnvoyHealth::Healthy,
        HealthStatus::Unhealthy => EnvoyHealth::Unhealthy,
        HealthStatus::Unknown => EnvoyHealth::Unknown,
    }
}

/// Where an instance is reached: its IPv4 address, else its IPv6 one, and
/// its port; also the IPv6 address when it has both. `None` for instances
/// without an address or a port (a CNAME-only or port-less instance cannot
/// be an endpoint).
fn socket_addresses(instance: &Instance) -> Option<(SocketAddress, Option<SocketAddress>)> {
    let port: u32 = instance.attributes.get(AWS_INSTANCE_PORT)?.parse().ok()?;
    let v4 = instance.attributes.get(AWS_INSTANCE_IPV4);
    let v6 = instance.attributes.get(AWS_INSTANCE_IPV6);
    let socket = |ip: &str| SocketAddress {
        address: ip.to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
        ..Default::default()
    };
    match (v4, v6) {
        (Some(v4), v6) => Some((socket(v4), v6.map(socket))),
        (None, Some(v6)) => Some((socket(v6), None)),
        (None, None) => None,
    }
}

fn address_of(socket: SocketAddress) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(socket)),
    }
}

/// The ClusterLoadAssignment `cluster_name` of `entry`'s instances whose
/// attributes match every pair of `subset`, grouped by locality
/// (`REGION`, `AVAILABILITY_ZONE`), with its content version.
///
/// A locality's weight is its number of usable (healthy or unknown)
/// endpoints, at least 1, so clients that pick a locality first (gRPC's
/// weighted target) still spread requests evenly over endpoints.
pub fn load_assignment(
    cluster_name: &str,
    entry: &ServiceEntry,
    subset: &[(String, String)],
) -> (ClusterLoadAssignment, u64) {
    let mut hash = Sha256::new();
    hash.update(cluster_name.as_bytes());
    let mut localities: BTreeMap<(&str, &str), Vec<LbEndpoint>> = BTreeMap::new();
    for instance in entry.instances.values() {
        let attrs = &instance.attributes;
        if !subset.iter().all(|(k, v)| attrs.get(k) == Some(v.as_str())) {
            continue;
        }
        let Some((primary, extra)) = socket_addresses(instance) else {
            continue;
        };
        let health = endpoint_health(entry, instance);
        let locality = (
            attrs.get(REGION).unwrap_or_default(),
            attrs.get(AVAILABILITY_ZONE).unwrap_or_default(),
        );
        // The version covers everything the endpoint is built from.
        hash.update([0]);
        hash.update(instance.id.as_bytes());
        hash.update([health as u8]);
        for (k, v) in attrs.iter() {
            hash.update([1]);
            hash.update(k.as_bytes());
            hash.update([2]);
            hash.update(v.as_bytes());
        }
        let mut fields: HashMap<String, Value> = attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect();
        fields.insert(
            "INSTANCE_ID".into(),
            Value {
                kind: Some(value::Kind::StringValue(instance.id.clone())),
            },
        );
        localities.entry(locality).or_default().push(LbEndpoint {
            health_status: health as i32,
            metadata: Some(Metadata {
                filter_metadata: HashMap::from([(METADATA_KEY.into(), Struct { fields })]),
                ..Default::default()
            }),
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(address_of(primary)),
                hostname: instance.id.clone(),
                additional_addresses: extra
                    .into_iter()
                    .map(|s| endpoint::AdditionalAddress {
                        address: Some(address_of(s)),
                    })
                    .collect(),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    let endpoints = localities
        .into_iter()
        .map(|((region, zone), lb_endpoints)| {
            let usable = lb_endpoints
                .iter()
                .filter(|e| {
                    e.health_status == EnvoyHealth::Healthy as i32
                        || e.health_status == EnvoyHealth::Unknown as i32
                })
                .count();
            LocalityLbEndpoints {
                locality: Some(Locality {
                    region: region.to_string(),
                    zone: zone.to_string(),
                    ..Default::default()
                }),
                load_balancing_weight: Some(UInt32Value {
                    value: u32::try_from(usable.max(1)).unwrap_or(u32::MAX),
                }),
                lb_endpoints,
                ..Default::default()
            }
        })
        .collect();
    let version = u64::from_be_bytes(hash.finalize()[..8].try_into().expect("32 bytes"));
    (
        ClusterLoadAssignment {
            cluster_name: cluster_name.to_string(),
            endpoints,
            ..Default::default()
        },
        version,
    )
}

/// Every resource Waymark serves at one moment, by type and name (shared
/// with the builder's cache, so a snapshot copies no encoded bytes).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    by_type: [BTreeMap<String, Arc<Resource>>; 4],
}

impl Snapshot {
    /// The resources of one type, by name.
    pub fn resources(&self, kind: ResourceType) -> &BTreeMap<String, Arc<Resource>> {
        &self.by_type[kind.index()]
    }

    fn insert(&mut self, kind: ResourceType, resource: Arc<Resource>) {
        self.by_type[kind.index()].insert(resource.name.clone(), resource);
    }
}

/// What one rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// Services whose resources were built anew.
    pub rebuilt: usize,
    /// Services served.
    pub services: usize,
    /// Rebuilt services whose traffic split was not applied: (name, why).
    pub problems: Vec<(String, String)>,
}

/// Builds snapshots from the registry, rebuilding only the services whose
/// inputs changed since the last build.
#[derive(Debug, Default)]
pub struct Builder {
    // Service id → (fingerprint of its inputs, its resources).
    services: HashMap<String, (u64, Arc<ServiceResources>)>,
}

/// A cheap digest of everything a service's resources are built from:
/// attribute changes bump the service's revision, health is per instance,
/// and any change to the service record moves its update date.
fn fingerprint(namespace: &str, entry: &ServiceEntry, demanded: &[&SubsetName]) -> u64 {
    let mut h = DefaultHasher::new();
    demanded.hash(&mut h);
    namespace.hash(&mut h);
    entry.service.name.hash(&mut h);
    entry.service.revision.hash(&mut h);
    entry.service.update_date.hash(&mut h);
    entry.service.has_health_check().hash(&mut h);
    // Directly too: two edits within one millisecond keep the update date.
    entry.service.attributes.hash(&mut h);
    for instance in entry.instances.values() {
        instance.id.hash(&mut h);
        instance.health.hash(&mut h);
    }
    h.finish()
}

impl Builder {
    /// A snapshot of `index`, with the subsets in `demanded` (clients asked
    /// for them by name) of the services that exist. Services are served in
    /// id order; when two services map to one name (`a.b` in `c` and `a` in
    /// `b.c`), the first keeps it.
    pub fn build(
        &mut self,
        index: &Index,
        demanded: &BTreeSet<SubsetName>,
    ) -> (Snapshot, BuildStats) {
        let mut by_base: HashMap<&str, Vec<&SubsetName>> = HashMap::new();
        for s in demanded {
            by_base.entry(s.base.as_str()).or_default().push(s);
        }
        let mut stats = BuildStats::default();
        let mut seen: HashMap<String, (u64, Arc<ServiceResources>)> = HashMap::new();
        let mut entries: Vec<_> = index.services().collect();
        entries.sort_by(|a, b| a.service.id.cmp(&b.service.id));
        let mut snapshot = Snapshot::default();
        for entry in entries {
            let Some(ns) = index.namespace(&entry.service.namespace_id) else {
                continue;
            };
            let name = resource_name(&entry.service.name, &ns.name);
            let subsets = by_base.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            let print = fingerprint(&ns.name, entry, subsets);
            let resources = match self.services.remove(&entry.service.id) {
                Some((old, resources)) if old == print => resources,
                _ => {
                    stats.rebuilt += 1;
                    let built = service_resources(&ns.name, entry, subsets);
                    if let Some(problem) = &built.split_problem {
                        stats
                            .problems
                            .push((built.listener.name.clone(), problem.clone()));
                    }
                    Arc::new(built)
                }
            };
            stats.services += 1;
            let name = &resources.listener.name;
            if !snapshot
                .resources(ResourceType::Listener)
                .contains_key(name)
            {
                snapshot.insert(ResourceType::Listener, resources.listener.clone());
                snapshot.insert(ResourceType::Route, resources.route.clone());
                for c in &resources.clusters {
                    snapshot.insert(ResourceType::Cluster, c.clone());
                }
                for e in &resources.endpoints {
                    snapshot.insert(ResourceType::Endpoint, e.clone());
                }
                for (kind, r) in &resources.subsets {
                    // A split's subset of the same name is already served.
                    if !snapshot.resources(*kind).contains_key(&r.name) {
                        snapshot.insert(*kind, r.clone());
                    }
                }
            }
            seen.insert(entry.service.id.clone(), (print, resources));
        }
        // Services gone since the last build are dropped with the old map.
        self.services = seen;
        (snapshot, stats)
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
pub(super) mod tests;
