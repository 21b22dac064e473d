//! Pure resolution: one question against the registry index, with Cloud
//! Map's routing semantics. No I/O here: [`Resolver::resolve_into`] hands the
//! records to a [`Sink`], either [`Resolver::resolve`]'s, which builds the
//! hickory records of a [`Resolution`] (the handler turns it into a response
//! message), or the UDP fast path's, which writes wire format
//! (`super::wire`).
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
    DnsConfig, Instance, Namespace, NamespaceType, RecordType as CmRecordType,
};
use crate::registry::{Index, ServiceEntry};

pub use super::routing::PoolCache;
use super::routing::{Candidate, ipv4, ipv6, pick, pool};

/// MULTIVALUE answers carry at most this many records (Route 53's limit).
pub const MULTIVALUE_MAX: usize = 8;
/// The label of the synthesised name server host at each zone apex.
pub const NS_LABEL: &str = "ns1";
/// The TTL of the apex NS record and of the name server's address records.
pub const NS_TTL: u32 = 300;
/// SOA refresh, retry and expire, as Route 53 sets them (no secondaries here).
pub(crate) const SOA_REFRESH: i32 = 7200;
pub(crate) const SOA_RETRY: i32 = 900;
pub(crate) const SOA_EXPIRE: i32 = 1_209_600;
/// The SOA serial. Nothing transfers these zones (AXFR/IXFR are refused), so
/// the serial carries no information; Route 53 uses 1 as well.
pub(crate) const SOA_SERIAL: u32 = 1;
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
}

/// What the resolver needs besides the index.
#[derive(Debug, Clone)]
pub struct Resolver {
    scope: Scope,
    ns_addrs: Vec<IpAddr>,
}

/// Where a record goes in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The answer section.
    Answer,
    /// The authority section (the SOA of negative answers).
    Authority,
    /// The additional section (addresses of SRV targets and of `ns1`).
    Additional,
}

/// The owner name of a record, as the resolver knows it.
#[derive(Debug)]
pub enum Owner<'t, T> {
    /// The query name, in the query's spelling.
    Query,
    /// The zone's origin: a suffix of the query name, in its spelling.
    Origin,
    /// `ns1.<origin>`, the synthesised name server host.
    NsHost,
    /// An SRV target written before, as [`Sink::srv`] returned it.
    Target(&'t T),
}

/// The data of a record.
#[derive(Debug)]
pub enum Data<'a> {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A CNAME target (fully qualified).
    Cname(&'a Name),
    /// `ns1.<origin>`.
    Ns,
    /// The zone's SOA (`ns1.<origin> hostmaster.<origin>`, Route 53's timers)
    /// with this MINIMUM.
    Soa {
        /// The negative-caching TTL.
        minimum: u32,
    },
}

/// An SRV target, `<instance>.<service>.<namespace>.`, in the registry's
/// spelling (each part without a trailing dot).
#[derive(Debug, Clone, Copy)]
pub struct SrvTarget<'a> {
    /// The instance id (a DNS label).
    pub instance: &'a str,
    /// The service name (one or more labels).
    pub service: &'a str,
    /// The namespace name (one or more labels).
    pub namespace: &'a str,
}

impl SrvTarget<'_> {
    /// The labels of the target, in order (without the root).
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        [self.instance, self.service, self.namespace]
            .into_iter()
            .flat_map(|part| part.split('.'))
    }
}

/// Receives the records of a resolution, in section order per section (the
/// additional records of an SRV answer come right after it; a sink keeps
/// the sections apart). One resolution logic, two renderers: `RecordSink`
/// builds hickory records (the general path), the UDP fast path writes wire
/// format directly (`super::wire`).
pub trait Sink {
    /// What [`Sink::srv`] hands back to name the target as an owner later.
    type Target;
    /// The query name lies in a zone whose origin is its last `labels`
    /// labels. Called once, before any record.
    fn zone(&mut self, labels: usize);
    /// One record.
    fn record(
        &mut self,
        section: Section,
        owner: Owner<'_, Self::Target>,
        ttl: u32,
        data: Data<'_>,
    );
    /// An SRV answer `1 1 <port> <target>` owned by the query name. `None`
    /// when the target is not a valid domain name (the instance is then
    /// left out).
    fn srv(&mut self, ttl: u32, port: u16, target: SrvTarget<'_>) -> Option<Self::Target>;
}

/// The response code and AA bit of a resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub rcode: ResponseCode,
    /// Set for every answer from a zone (positive or negative).
    pub authoritative: bool,
}

impl Outcome {
    const REFUSED: Self = Self {
        rcode: ResponseCode::Refused,
        authoritative: false,
    };
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
        let key = NameKey::from_name(qname);
        let mut sink = RecordSink::new(qname);
        let outcome = self.resolve_into(index, &key, qtype, rng, &mut sink, None);
        sink.finish(outcome)
    }

    /// Resolves `qtype` for the name `key` holds into `sink`: the one
    /// resolution logic both renderers share. `cache` (synced to the
    /// registry generation of `index`) keeps the services' routing
    /// candidates.
    pub fn resolve_into<S: Sink>(
        &self,
        index: &Index,
        key: &NameKey,
        qtype: RecordType,
        rng: &mut impl Rng,
        sink: &mut S,
        cache: Option<&mut PoolCache>,
    ) -> Outcome {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            return Outcome::REFUSED;
        }
        let Some((namespace, labels, relative)) = self.find_zone(index, key) else {
            return Outcome::REFUSED;
        };
        sink.zone(labels);
        let negative = namespace.soa_ttl.map_or(DEFAULT_SOA_TTL, ttl);
        let soa = |sink: &mut S, section| {
            sink.record(
                section,
                Owner::Origin,
                negative,
                Data::Soa { minimum: negative },
            );
        };
        let Some(node) = self.find_node(index, namespace, relative) else {
            soa(sink, Section::Authority);
            return Outcome {
                rcode: ResponseCode::NXDomain,
                authoritative: true,
            };
        };
        let answered = match node {
            Node::Apex => match qtype {
                RecordType::SOA | RecordType::ANY => {
                    soa(sink, Section::Answer);
                    1
                }
                RecordType::NS => {
                    sink.record(Section::Answer, Owner::Query, NS_TTL, Data::Ns);
                    self.ns_address_records(sink, Section::Additional, RecordType::ANY);
                    1
                }
                _ => 0,
            },
            Node::NameServer => self.ns_address_records(sink, Section::Answer, qtype),
            Node::Service(entry, dns) => {
                service_records(namespace, entry, dns, qtype, rng, sink, cache)
            }
            Node::Instance(dns, inst) => instance_records(dns, inst, qtype, sink),
            Node::EmptyNonTerminal => 0,
        };
        if answered == 0 {
            soa(sink, Section::Authority);
        }
        Outcome {
            rcode: ResponseCode::NoError,
            authoritative: true,
        }
    }

    /// The longest visible zone that is a suffix of the name: its namespace,
    /// the number of labels of its origin, and the lower-case relative part
    /// (`""` at the apex).
    fn find_zone<'i, 'k>(
        &self,
        index: &'i Index,
        key: &'k NameKey,
    ) -> Option<(&'i Namespace, usize, &'k str)> {
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
                return Some((ns, labels - i, relative));
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

    /// The name server's addresses of type `qtype` (A, AAAA or both for
    /// ANY): owned by the query name in the answer section, by `ns1.<zone>`
    /// as glue in the additional section. Returns how many were written.
    fn ns_address_records<S: Sink>(
        &self,
        sink: &mut S,
        section: Section,
        qtype: RecordType,
    ) -> usize {
        let mut n = 0;
        for ip in &self.ns_addrs {
            let data = match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Data::A(*v4),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Data::Aaaa(*v6),
                _ => continue,
            };
            let owner = match section {
                Section::Answer => Owner::Query,
                _ => Owner::NsHost,
            };
            sink.record(section, owner, NS_TTL, data);
            n += 1;
        }
        n
    }
}

/// The lower-case text of a query name, with where each label starts, and
/// from which label on a suffix can name a zone: labels with bytes outside
/// letters, digits, `-` and `_` never appear in the registry, so a suffix that
/// contains one cannot be a zone (and a `.` inside a label cannot fool the
/// text-based lookups). Reusable: [`NameKey::clear`] keeps the buffers.
#[derive(Debug, Default)]
pub struct NameKey {
    lower: String,
    starts: Vec<usize>,
    first_usable: usize,
}

impl NameKey {
    /// The key of a hickory name.
    pub fn from_name(name: &Name) -> Self {
        let mut key = Self {
            lower: String::with_capacity(name.len()),
            starts: Vec::with_capacity(name.num_labels() as usize),
            first_usable: 0,
        };
        for label in name.iter() {
            key.push_label(label);
        }
        key
    }

    /// Empties the key, keeping its buffers.
    pub fn clear(&mut self) {
        self.lower.clear();
        self.starts.clear();
        self.first_usable = 0;
    }

    /// Appends the next label (raw bytes, any case).
    pub fn push_label(&mut self, label: &[u8]) {
        let i = self.starts.len();
        if i > 0 {
            self.lower.push('.');
        }
        self.starts.push(self.lower.len());
        let mut usable = !label.is_empty();
        for &b in label {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                self.lower.push(b.to_ascii_lowercase() as char);
            } else {
                usable = false;
                self.lower.push('?');
            }
        }
        if !usable {
            self.first_usable = i + 1;
        }
    }

    /// The number of labels.
    pub fn labels(&self) -> usize {
        self.starts.len()
    }
}

/// Builds hickory records: the general path's renderer, and what
/// [`Resolver::resolve`] returns.
struct RecordSink<'q> {
    qname: &'q Name,
    origin: Name,
    res: Resolution,
}

impl<'q> RecordSink<'q> {
    fn new(qname: &'q Name) -> Self {
        Self {
            qname,
            origin: Name::root(),
            res: Resolution::refused(),
        }
    }

    fn finish(mut self, outcome: Outcome) -> Resolution {
        self.res.rcode = outcome.rcode;
        self.res.authoritative = outcome.authoritative;
        self.res
    }

    fn section(&mut self, section: Section) -> &mut Vec<Record> {
        match section {
            Section::Answer => &mut self.res.answers,
            Section::Authority => &mut self.res.authority,
            Section::Additional => &mut self.res.additionals,
        }
    }
}

impl Sink for RecordSink<'_> {
    type Target = Name;

    fn zone(&mut self, labels: usize) {
        self.origin = self.qname.trim_to(labels);
    }

    fn record(&mut self, section: Section, owner: Owner<'_, Name>, ttl: u32, data: Data<'_>) {
        let owner = match owner {
            Owner::Query => self.qname.clone(),
            Owner::Origin => self.origin.clone(),
            Owner::NsHost => ns_host(&self.origin),
            Owner::Target(t) => t.clone(),
        };
        let rdata = match data {
            Data::A(ip) => RData::A(A(ip)),
            Data::Aaaa(ip) => RData::AAAA(AAAA(ip)),
            Data::Cname(target) => RData::CNAME(CNAME(target.clone())),
            Data::Ns => RData::NS(NS(ns_host(&self.origin))),
            Data::Soa { minimum } => {
                let rname = self
                    .origin
                    .prepend_label("hostmaster")
                    .unwrap_or_else(|_| self.origin.clone());
                RData::SOA(SOA::new(
                    ns_host(&self.origin),
                    rname,
                    SOA_SERIAL,
                    SOA_REFRESH,
                    SOA_RETRY,
                    SOA_EXPIRE,
                    minimum,
                ))
            }
        };
        self.section(section)
            .push(Record::from_rdata(owner, ttl, rdata));
    }

    fn srv(&mut self, ttl: u32, port: u16, target: SrvTarget<'_>) -> Option<Name> {
        let mut text = String::with_capacity(
            target.instance.len() + target.service.len() + target.namespace.len() + 3,
        );
        for part in [target.instance, target.service, target.namespace] {
            text.push_str(part);
            text.push('.');
        }
        let name = Name::from_ascii(text).ok()?;
        self.res.answers.push(Record::from_rdata(
            self.qname.clone(),
            ttl,
            RData::SRV(SRV::new(1, 1, port, name.clone())),
        ));
        Some(name)
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

/// The TTL of an instance's own address records (SRV targets): the A record's
/// TTL when the service has one, else the SRV record's.
fn target_ttl(dns: &DnsConfig) -> u32 {
    dns.record(CmRecordType::A)
        .or_else(|| dns.record(CmRecordType::Aaaa))
        .or_else(|| dns.record(CmRecordType::Srv))
        .map_or(0, |r| ttl(r.ttl))
}

/// The address records of an instance's own name (an SRV target). ANY is
/// answered with one RRset (RFC 8482): A when there is one, else AAAA.
fn instance_records<S: Sink>(
    dns: &DnsConfig,
    inst: &Instance,
    qtype: RecordType,
    sink: &mut S,
) -> usize {
    let ttl = target_ttl(dns);
    let data = match qtype {
        RecordType::A => ipv4(inst).map(Data::A),
        RecordType::AAAA => ipv6(inst).map(Data::Aaaa),
        RecordType::ANY => ipv4(inst)
            .map(Data::A)
            .or_else(|| ipv6(inst).map(Data::Aaaa)),
        _ => None,
    };
    match data {
        Some(data) => {
            sink.record(Section::Answer, Owner::Query, ttl, data);
            1
        }
        None => 0,
    }
}

/// The records of a service name for one query type. A CNAME service answers
/// every type with its CNAME; ANY is answered with the first configured
/// record type that has records (RFC 8482). Returns the number of answers.
fn service_records<S: Sink>(
    namespace: &Namespace,
    entry: &ServiceEntry,
    dns: &DnsConfig,
    qtype: RecordType,
    rng: &mut impl Rng,
    sink: &mut S,
    mut cache: Option<&mut PoolCache>,
) -> usize {
    let single = match qtype {
        _ if dns.record(CmRecordType::Cname).is_some() => Some(CmRecordType::Cname),
        RecordType::A => Some(CmRecordType::A),
        RecordType::AAAA => Some(CmRecordType::Aaaa),
        RecordType::SRV => Some(CmRecordType::Srv),
        RecordType::ANY => None,
        _ => return 0,
    };
    let kinds = dns
        .records
        .iter()
        .map(|r| r.kind)
        .filter(|k| single.is_none_or(|s| s == *k));
    let service = entry.service.name.trim_end_matches('.');
    let zone = namespace.name.trim_end_matches('.');
    for kind in kinds {
        let Some(rec) = dns.record(kind) else {
            continue;
        };
        let rttl = ttl(rec.ttl);
        let target_ttl = target_ttl(dns);
        let pool = pool(entry, kind, cache.as_deref_mut());
        let mut answered = 0;
        for i in pick(pool.len(), dns.routing_policy, rng).iter() {
            let data = match &pool[i] {
                Candidate::A(ip) => Data::A(*ip),
                Candidate::Aaaa(ip) => Data::Aaaa(*ip),
                Candidate::Cname(name) => Data::Cname(name),
                Candidate::Srv {
                    port,
                    instance,
                    v4,
                    v6,
                } => {
                    let target = SrvTarget {
                        instance,
                        service,
                        namespace: zone,
                    };
                    // A target that is not a valid name leaves the
                    // instance out.
                    let Some(target) = sink.srv(rttl, *port, target) else {
                        continue;
                    };
                    for data in [v4.map(Data::A), v6.map(Data::Aaaa)].into_iter().flatten() {
                        sink.record(
                            Section::Additional,
                            Owner::Target(&target),
                            target_ttl,
                            data,
                        );
                    }
                    answered += 1;
                    continue;
                }
            };
            sink.record(Section::Answer, Owner::Query, rttl, data);
            answered += 1;
        }
        if answered > 0 {
            return answered;
        }
    }
    0
}
