//! Pure resolution: one question against the registry index, with Cloud
//! Map's routing semantics. No I/O and no wire format here; the handler turns
//! a [`Resolution`] into a response message.
//!
//! The zone of a name is the longest DNS namespace that is a suffix of it (and
//! visible on the listener, see [`Scope`]). Inside a zone the names are:
//!
//! | name | records |
//! |---|---|
//! | `<zone>` | SOA, NS (`ns1.<zone>`) |
//! | `ns1.<zone>` | A/AAAA of the listener, when it is bound to a specific address |
//! | `<service>.<zone>` | the service's A, AAAA, SRV or CNAME records, per its routing policy |
//! | `<instance>.<service>.<zone>` | A/AAAA of one instance (services with SRV records only) |
//!
//! Ancestors of multi-label service names (`_tcp.<zone>` for `_http._tcp`)
//! exist without records (NODATA); every other name is NXDOMAIN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use rand::Rng;

use crate::registry::model::{
    DnsConfig, Instance, Namespace, NamespaceType, RecordType as CmRecordType, RoutingPolicy,
};
use crate::registry::validate::{
    AWS_INSTANCE_CNAME, AWS_INSTANCE_IPV4, AWS_INSTANCE_IPV6, AWS_INSTANCE_PORT,
};
use crate::registry::{Index, ServiceEntry};

/// MULTIVALUE answers carry at most this many records (Route 53's limit).
pub const MULTIVALUE_MAX: usize = 8;
/// The label of the synthesised name server host at each zone apex.
pub const NS_LABEL: &str = "ns1";
/// The TTL of the apex NS record and of the name server's address records.
pub const NS_TTL: u32 = 300;
/// SOA refresh, retry and expire, as Route 53 sets them (no secondaries here).
const SOA_REFRESH: i32 = 7200;
const SOA_RETRY: i32 = 900;
const SOA_EXPIRE: i32 = 1_209_600;
/// The SOA serial. Nothing transfers these zones (AXFR/IXFR are refused), so
/// the serial carries no information; Route 53 uses 1 as well.
const SOA_SERIAL: u32 = 1;
/// The SOA TTL (and minimum) of a namespace created without one.
const DEFAULT_SOA_TTL: u32 = 15;

/// Which zones a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Private and public DNS namespaces (the `--dns-addr` listener).
    All,
    /// Public DNS namespaces only (the `--dns-public-addr` listener).
    PublicOnly,
}

impl Scope {
    fn serves(self, kind: NamespaceType) -> bool {
        match self {
            Self::All => kind.is_dns(),
            Self::PublicOnly => kind == NamespaceType::DnsPublic,
        }
    }
}

/// The outcome of resolving one question: the response code, whether the
/// answer is authoritative, and the three record sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub rcode: ResponseCode,
    /// Set for every answer from a zone (positive or negative).
    pub authoritative: bool,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of negative answers, NS is never added
    /// to positive answers to keep them small).
    pub authority: Vec<Record>,
    /// The additional section (addresses of SRV targets and of the name server).
    pub additionals: Vec<Record>,
}

impl Resolution {
    /// A REFUSED answer: the name is in no zone served here, or the question
    /// is one this server never answers (zone transfers).
    pub fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn positive(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        Self {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
            additionals,
        }
    }

    fn negative(rcode: ResponseCode, soa: Record) -> Self {
        Self {
            rcode,
            authoritative: true,
            answers: Vec::new(),
            authority: vec![soa],
            additionals: Vec::new(),
        }
    }
}

/// What the resolver needs besides the index.
#[derive(Debug, Clone)]
pub struct Resolver {
    scope: Scope,
    ns_addrs: Vec<IpAddr>,
}

/// A zone found for a query name.
struct Zone<'a> {
    namespace: &'a Namespace,
    /// The zone's name in the query's spelling.
    origin: Name,
}

/// A name found inside a zone.
enum Node<'a> {
    Apex,
    NameServer,
    Service(&'a ServiceEntry, &'a DnsConfig),
    Instance(&'a DnsConfig, &'a Instance),
    /// An ancestor of a multi-label service name: exists, has no records.
    EmptyNonTerminal,
}

impl Resolver {
    /// A resolver for a listener of `scope`. `ns_addrs` are the addresses
    /// `ns1.<zone>` resolves to (the listener's, when it is bound to a
    /// specific address; empty otherwise).
    pub fn new(scope: Scope, ns_addrs: Vec<IpAddr>) -> Self {
        Self { scope, ns_addrs }
    }

    /// The listener scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Answers `qtype` for `qname` (spelled as the client spelled it) from the
    /// index. Class and opcode checks are the caller's.
    pub fn resolve(
        &self,
        index: &Index,
        qname: &Name,
        qtype: RecordType,
        rng: &mut impl Rng,
    ) -> Resolution {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Resolution::refused();
        }
        let key = NameKey::new(qname);
        let Some((zone, relative)) = self.find_zone(index, qname, &key) else {
            return Resolution::refused();
        };
        let soa = || soa_record(&zone);
        let Some(node) = self.find_node(index, zone.namespace, relative) else {
            return Resolution::negative(ResponseCode::NXDomain, soa());
        };
        let owner = qname.clone();
        let (answers, additionals) = match node {
            Node::Apex => match qtype {
                RecordType::SOA | RecordType::ANY => (vec![soa()], Vec::new()),
                RecordType::NS => {
                    let host = ns_host(&zone.origin);
                    let glue = self.ns_address_records(&host, RecordType::ANY);
                    let ns = Record::from_rdata(owner, NS_TTL, RData::NS(NS(host)));
                    (vec![ns], glue)
                }
                _ => (Vec::new(), Vec::new()),
            },
            Node::NameServer => (self.ns_address_records(&owner, qtype), Vec::new()),
            Node::Service(entry, dns) => service_records(&zone, entry, dns, owner, qtype, rng),
            Node::Instance(dns, inst) => (instance_records(dns, inst, owner, qtype), Vec::new()),
            Node::EmptyNonTerminal => (Vec::new(), Vec::new()),
        };
        if answers.is_empty() {
            Resolution::negative(ResponseCode::NoError, soa())
        } else {
            Resolution::positive(answers, additionals)
        }
    }

    /// The longest visible zone that is a suffix of the name, with the
    /// lower-case relative part (`""` at the apex).
    fn find_zone<'i, 'k>(
        &self,
        index: &'i Index,
        qname: &Name,
        key: &'k NameKey,
    ) -> Option<(Zone<'i>, &'k str)> {
        let labels = key.starts.len();
        for i in key.first_usable..labels {
            let suffix = &key.lower[key.starts[i]..];
            if let Some(ns) = index.namespace_by_zone_key(suffix)
                && self.scope.serves(ns.kind)
            {
                let relative = if i == 0 {
                    ""
                } else {
                    &key.lower[..key.starts[i] - 1]
                };
                let origin = qname.trim_to(labels - i);
                return Some((
                    Zone {
                        namespace: ns,
                        origin,
                    },
                    relative,
                ));
            }
        }
        None
    }

    fn find_node<'i>(
        &self,
        index: &'i Index,
        ns: &'i Namespace,
        relative: &str,
    ) -> Option<Node<'i>> {
        if relative.is_empty() {
            return Some(Node::Apex);
        }
        if let Some(entry) = index.service_by_dns_key(&ns.id, relative)
            && let Some(dns) = &entry.service.dns_config
        {
            return Some(Node::Service(entry, dns));
        }
        if let Some((first, rest)) = relative.split_once('.')
            && let Some(entry) = index.service_by_dns_key(&ns.id, rest)
            && let Some(dns) = &entry.service.dns_config
            && dns.record(CmRecordType::Srv).is_some()
            && let Some(inst) = find_instance(entry, first)
        {
            return Some(Node::Instance(dns, inst));
        }
        if relative == NS_LABEL {
            return Some(Node::NameServer);
        }
        let is_ancestor = index.services_in(&ns.id).any(|e| {
            e.service.dns_config.is_some()
                && e.service.name.len() > relative.len()
                && e.service.name.as_bytes()[e.service.name.len() - relative.len() - 1] == b'.'
                && e.service.name[e.service.name.len() - relative.len()..]
                    .eq_ignore_ascii_case(relative)
        });
        is_ancestor.then_some(Node::EmptyNonTerminal)
    }

    fn ns_address_records(&self, owner: &Name, qtype: RecordType) -> Vec<Record> {
        self.ns_addrs
            .iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), NS_TTL, rdata))
            .collect()
    }
}

/// The lower-case text of a query name, with where each label starts, and
/// from which label on a suffix can name a zone: labels with bytes outside
/// letters, digits, `-` and `_` never appear in the registry, so a suffix that
/// contains one cannot be a zone (and a `.` inside a label cannot fool the
/// text-based lookups).
struct NameKey {
    lower: String,
    starts: Vec<usize>,
    first_usable: usize,
}

impl NameKey {
    fn new(name: &Name) -> Self {
        let mut lower = String::with_capacity(name.len());
        let mut starts = Vec::with_capacity(name.num_labels() as usize);
        let mut first_usable = 0;
        for (i, label) in name.iter().enumerate() {
            if i > 0 {
                lower.push('.');
            }
            starts.push(lower.len());
            let mut usable = !label.is_empty();
            for &b in label {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    lower.push(b.to_ascii_lowercase() as char);
                } else {
                    usable = false;
                    lower.push('?');
                }
            }
            if !usable {
                first_usable = i + 1;
            }
        }
        Self {
            lower,
            starts,
            first_usable,
        }
    }
}

/// Whether an instance id can be the first label of an SRV target: 1–63
/// letters, digits, `-` or `_`. Ids such as `pod/x`, `a:b` or `u@h` cannot,
/// and such instances are left out of SRV answers.
pub fn is_dns_label(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An instance by the (lower-case) first label of an SRV target name.
fn find_instance<'a>(entry: &'a ServiceEntry, label: &str) -> Option<&'a Instance> {
    if !is_dns_label(label) {
        return None;
    }
    entry.instances.get(label).or_else(|| {
        entry
            .instances
            .values()
            .find(|i| i.id.eq_ignore_ascii_case(label))
    })
}

fn ns_host(origin: &Name) -> Name {
    // The origin is a valid zone name, one label shorter than the limit at most.
    origin
        .prepend_label(NS_LABEL)
        .unwrap_or_else(|_| origin.clone())
}

fn ttl(seconds: i64) -> u32 {
    u32::try_from(seconds.clamp(0, i64::from(i32::MAX))).unwrap_or(0)
}

/// The zone's SOA. Its TTL and MINIMUM are both the namespace's SOA TTL, so
/// negative answers are cached for min(TTL, MINIMUM) = that TTL (RFC 2308).
fn soa_record(zone: &Zone<'_>) -> Record {
    let negative = zone.namespace.soa_ttl.map_or(DEFAULT_SOA_TTL, ttl);
    let rname = zone
        .origin
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| zone.origin.clone());
    let soa = SOA::new(
        ns_host(&zone.origin),
        rname,
        SOA_SERIAL,
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        negative,
    );
    Record::from_rdata(zone.origin.clone(), negative, RData::SOA(soa))
}

fn healthy(entry: &ServiceEntry, inst: &Instance) -> bool {
    use crate::registry::model::HealthStatus;
    !entry.service.has_health_check() || inst.health != HealthStatus::Unhealthy
}

/// Chooses the instances an answer carries, per routing policy: up to eight
/// (MULTIVALUE) or one (WEIGHTED) at random among the healthy candidates, or
/// among all candidates when none is healthy (fail open). Instances without
/// a health check count as healthy.
fn route<'a, T>(
    entry: &'a ServiceEntry,
    policy: RoutingPolicy,
    rng: &mut impl Rng,
    mut value: impl FnMut(&'a Instance) -> Option<T>,
) -> Vec<(&'a Instance, T)> {
    let mut healthy_set = Vec::new();
    let mut unhealthy_set = Vec::new();
    for inst in entry.instances.values() {
        if let Some(v) = value(inst) {
            if healthy(entry, inst) {
                healthy_set.push((inst, v));
            } else {
                unhealthy_set.push((inst, v));
            }
        }
    }
    let mut pool = if healthy_set.is_empty() {
        unhealthy_set
    } else {
        healthy_set
    };
    let keep = match policy {
        RoutingPolicy::Multivalue => MULTIVALUE_MAX,
        RoutingPolicy::Weighted => 1,
    };
    // A partial Fisher-Yates shuffle: the first `keep` entries become a
    // uniformly random selection in random order.
    let keep = keep.min(pool.len());
    for i in 0..keep {
        let j = rng.random_range(i..pool.len());
        pool.swap(i, j);
    }
    pool.truncate(keep);
    pool
}

fn ipv4(inst: &Instance) -> Option<Ipv4Addr> {
    inst.attributes.get(AWS_INSTANCE_IPV4)?.parse().ok()
}

fn ipv6(inst: &Instance) -> Option<Ipv6Addr> {
    inst.attributes.get(AWS_INSTANCE_IPV6)?.parse().ok()
}

fn port(inst: &Instance) -> Option<u16> {
    inst.attributes.get(AWS_INSTANCE_PORT)?.parse().ok()
}

fn cname(inst: &Instance) -> Option<Name> {
    let mut name = Name::from_ascii(inst.attributes.get(AWS_INSTANCE_CNAME)?).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The SRV target of an instance: `<instance-id>.<service>.<namespace>.`.
fn srv_target(zone: &Zone<'_>, entry: &ServiceEntry, inst: &Instance) -> Option<Name> {
    let mut text = String::with_capacity(
        inst.id.len() + entry.service.name.len() + zone.namespace.name.len() + 3,
    );
    for part in [&inst.id, &entry.service.name, &zone.namespace.name] {
        text.push_str(part.trim_end_matches('.'));
        text.push('.');
    }
    Name::from_ascii(text).ok()
}

/// The TTL of an instance's own address records (SRV targets): the A record's
/// TTL when the service has one, else the SRV record's.
fn target_ttl(dns: &DnsConfig) -> u32 {
    dns.record(CmRecordType::A)
        .or_else(|| dns.record(CmRecordType::Aaaa))
        .or_else(|| dns.record(CmRecordType::Srv))
        .map_or(0, |r| ttl(r.ttl))
}

fn address_records(inst: &Instance, owner: &Name, ttl: u32, qtype: RecordType) -> Vec<Record> {
    let mut out = Vec::with_capacity(2);
    if matches!(qtype, RecordType::A | RecordType::ANY)
        && let Some(v4) = ipv4(inst)
    {
        out.push(Record::from_rdata(owner.clone(), ttl, RData::A(A(v4))));
    }
    if matches!(qtype, RecordType::AAAA | RecordType::ANY)
        && let Some(v6) = ipv6(inst)
    {
        out.push(Record::from_rdata(
            owner.clone(),
            ttl,
            RData::AAAA(AAAA(v6)),
        ));
    }
    out
}

fn instance_records(
    dns: &DnsConfig,
    inst: &Instance,
    owner: Name,
    qtype: RecordType,
) -> Vec<Record> {
    let records = address_records(inst, &owner, target_ttl(dns), qtype);
    if qtype == RecordType::ANY {
        // RFC 8482: one RRset is enough.
        let first = records.first().map(Record::record_type);
        records
            .into_iter()
            .filter(|r| Some(r.record_type()) == first)
            .collect()
    } else {
        records
    }
}

/// The records of a service name for one query type. A CNAME service answers
/// every type with its CNAME; ANY is answered with the first configured
/// record type that has records (RFC 8482).
fn service_records(
    zone: &Zone<'_>,
    entry: &ServiceEntry,
    dns: &DnsConfig,
    owner: Name,
    qtype: RecordType,
    rng: &mut impl Rng,
) -> (Vec<Record>, Vec<Record>) {
    if let Some(rec) = dns.record(CmRecordType::Cname) {
        let picked = route(entry, dns.routing_policy, rng, cname);
        let answers = picked
            .into_iter()
            .map(|(_, target)| {
                Record::from_rdata(owner.clone(), ttl(rec.ttl), RData::CNAME(CNAME(target)))
            })
            .collect();
        return (answers, Vec::new());
    }
    let wanted: Vec<CmRecordType> = match qtype {
        RecordType::A => vec![CmRecordType::A],
        RecordType::AAAA => vec![CmRecordType::Aaaa],
        RecordType::SRV => vec![CmRecordType::Srv],
        RecordType::ANY => dns.records.iter().map(|r| r.kind).collect(),
        _ => Vec::new(),
    };
    for kind in wanted {
        let Some(rec) = dns.record(kind) else {
            continue;
        };
        let rttl = ttl(rec.ttl);
        let out = match kind {
            CmRecordType::A => (
                route(entry, dns.routing_policy, rng, ipv4)
                    .into_iter()
                    .map(|(_, ip)| Record::from_rdata(owner.clone(), rttl, RData::A(A(ip))))
                    .collect(),
                Vec::new(),
            ),
            CmRecordType::Aaaa => (
                route(entry, dns.routing_policy, rng, ipv6)
                    .into_iter()
                    .map(|(_, ip)| Record::from_rdata(owner.clone(), rttl, RData::AAAA(AAAA(ip))))
                    .collect(),
                Vec::new(),
            ),
            CmRecordType::Srv => {
                // Pick on cheap checks first; names are built for the
                // picked instances only.
                let picked = route(entry, dns.routing_policy, rng, |inst| {
                    if !is_dns_label(&inst.id) || (ipv4(inst).is_none() && ipv6(inst).is_none()) {
                        return None;
                    }
                    port(inst)
                });
                let target_ttl = target_ttl(dns);
                let mut answers = Vec::with_capacity(picked.len());
                let mut additionals = Vec::with_capacity(picked.len());
                for (inst, port) in picked {
                    let Some(target) = srv_target(zone, entry, inst) else {
                        continue;
                    };
                    additionals.extend(address_records(inst, &target, target_ttl, RecordType::ANY));
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        rttl,
                        RData::SRV(SRV::new(1, 1, port, target)),
                    ));
                }
                (answers, additionals)
            }
            CmRecordType::Cname => (Vec::new(), Vec::new()),
        };
        if !out.0.is_empty() {
            return out;
        }
    }
    (Vec::new(), Vec::new())
}
