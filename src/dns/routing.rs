//! Cloud Map's routing over a service's instances: which records an answer
//! may carry (healthy ones, failing open to all when none is healthy), the
//! random MULTIVALUE / WEIGHTED pick among them, and the per-thread cache of
//! candidates the UDP fast path draws from.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_server::proto::rr::Name;
use rand::Rng;

use super::resolve::{MULTIVALUE_MAX, is_dns_label};
use crate::registry::ServiceEntry;
use crate::registry::model::{Instance, RecordType as CmRecordType, RoutingPolicy};
use crate::registry::validate::{
    AWS_INSTANCE_CNAME, AWS_INSTANCE_IPV4, AWS_INSTANCE_IPV6, AWS_INSTANCE_PORT,
};

pub(super) fn healthy(entry: &ServiceEntry, inst: &Instance) -> bool {
    use crate::registry::model::HealthStatus;
    !entry.service.has_health_check() || inst.health != HealthStatus::Unhealthy
}

/// A record an answer can carry, one per instance that has the data for it.
#[derive(Debug, Clone)]
pub enum Candidate<'a> {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A CNAME target.
    Cname(Name),
    /// An SRV record and its target's addresses.
    Srv {
        /// `AWS_INSTANCE_PORT`.
        port: u16,
        /// The instance id (a DNS label).
        instance: Cow<'a, str>,
        /// `AWS_INSTANCE_IPV4`.
        v4: Option<Ipv4Addr>,
        /// `AWS_INSTANCE_IPV6`.
        v6: Option<Ipv6Addr>,
    },
}

impl Candidate<'_> {
    fn into_owned(self) -> Candidate<'static> {
        match self {
            Self::A(ip) => Candidate::A(ip),
            Self::Aaaa(ip) => Candidate::Aaaa(ip),
            Self::Cname(name) => Candidate::Cname(name),
            Self::Srv {
                port,
                instance,
                v4,
                v6,
            } => Candidate::Srv {
                port,
                instance: Cow::Owned(instance.into_owned()),
                v4,
                v6,
            },
        }
    }
}

/// The candidates routing chooses from for records of `kind`: the healthy
/// instances that have the data, or all of them when none is healthy (fail
/// open), in instance order. Instances without a health check count as
/// healthy. SRV candidates need an id that is a DNS label, a port and an
/// address (so every target resolves).
pub(super) fn candidates(entry: &ServiceEntry, kind: CmRecordType) -> Vec<Candidate<'_>> {
    let mut healthy_set = Vec::new();
    let mut unhealthy_set = Vec::new();
    for inst in entry.instances.values() {
        let candidate = match kind {
            CmRecordType::A => ipv4(inst).map(Candidate::A),
            CmRecordType::Aaaa => ipv6(inst).map(Candidate::Aaaa),
            CmRecordType::Cname => cname(inst).map(Candidate::Cname),
            CmRecordType::Srv if is_dns_label(&inst.id) => {
                let (v4, v6) = (ipv4(inst), ipv6(inst));
                if v4.is_none() && v6.is_none() {
                    None
                } else {
                    port(inst).map(|port| Candidate::Srv {
                        port,
                        instance: Cow::Borrowed(&inst.id),
                        v4,
                        v6,
                    })
                }
            }
            CmRecordType::Srv => None,
        };
        if let Some(c) = candidate {
            if healthy(entry, inst) {
                healthy_set.push(c);
            } else {
                unhealthy_set.push(c);
            }
        }
    }
    if healthy_set.is_empty() {
        unhealthy_set
    } else {
        healthy_set
    }
}

/// The candidates an answer carries, per routing policy: up to eight
/// (MULTIVALUE) or one (WEIGHTED), a uniformly random selection in random
/// order. Returns indexes into the `n` candidates.
pub(crate) fn pick(n: usize, policy: RoutingPolicy, rng: &mut impl Rng) -> Picks {
    let keep = match policy {
        RoutingPolicy::Multivalue => MULTIVALUE_MAX,
        RoutingPolicy::Weighted => 1,
    }
    .min(n);
    // A partial Fisher-Yates shuffle of 0..n whose first `keep` positions
    // are the selection. Only the (at most 2 * keep) moved positions are
    // stored, so a pick among thousands of instances costs `keep` steps.
    let mut moved = [(0usize, 0usize); 2 * MULTIVALUE_MAX];
    let mut moved_len = 0;
    let mut picks = Picks {
        index: [0; MULTIVALUE_MAX],
        len: keep,
    };
    for i in 0..keep {
        let j = rng.random_range(i..n);
        let at = |moved: &[(usize, usize)], pos: usize| {
            moved
                .iter()
                .rev()
                .find(|(p, _)| *p == pos)
                .map_or(pos, |(_, v)| *v)
        };
        let (vi, vj) = (at(&moved[..moved_len], i), at(&moved[..moved_len], j));
        moved[moved_len] = (j, vi);
        moved[moved_len + 1] = (i, vj);
        moved_len += 2;
        picks.index[i] = vj;
    }
    picks
}

/// At most [`MULTIVALUE_MAX`] candidate indexes.
pub(crate) struct Picks {
    index: [usize; MULTIVALUE_MAX],
    len: usize,
}

impl Picks {
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.index[..self.len].iter().copied()
    }
}

/// A [`PoolCache`] holding more candidates than this starts over (about
/// 100 bytes each at most).
const POOL_CACHE_MAX_CANDIDATES: usize = 1 << 16;

/// The routing candidates of services, per record type, valid for one
/// registry generation: a query then costs a lookup and at most eight random
/// steps instead of reading (and parsing) every instance's attributes, which
/// for a service of 1,000 instances is 60 times faster. Each UDP thread
/// keeps its own (no locking); the general path uses none. Random selection
/// stays per query: only the candidates are kept, never an answer.
#[derive(Debug, Default)]
pub struct PoolCache {
    generation: Option<u64>,
    pools: HashMap<String, [Option<Vec<Candidate<'static>>>; 4]>,
    candidates: usize,
}

impl PoolCache {
    /// Empties the cache when the registry changed since it was filled.
    /// Call with [`Registry::generation`](crate::registry::Registry::generation)
    /// read while holding the index read lock the answers are computed under.
    pub fn sync(&mut self, generation: u64) {
        if self.generation != Some(generation) {
            self.pools.clear();
            self.candidates = 0;
            self.generation = Some(generation);
        }
    }

    /// The number of candidates held.
    pub fn len(&self) -> usize {
        self.candidates
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.candidates == 0
    }

    fn pool(&mut self, entry: &ServiceEntry, kind: CmRecordType) -> &[Candidate<'static>] {
        let slot = match kind {
            CmRecordType::A => 0,
            CmRecordType::Aaaa => 1,
            CmRecordType::Srv => 2,
            CmRecordType::Cname => 3,
        };
        let cached = self
            .pools
            .get(entry.service.id.as_str())
            .is_some_and(|p| p[slot].is_some());
        if !cached {
            let pool: Vec<Candidate<'static>> = candidates(entry, kind)
                .into_iter()
                .map(Candidate::into_owned)
                .collect();
            if self.candidates + pool.len() > POOL_CACHE_MAX_CANDIDATES {
                self.pools.clear();
                self.candidates = 0;
            }
            self.candidates += pool.len();
            self.pools.entry(entry.service.id.clone()).or_default()[slot] = Some(pool);
        }
        self.pools[entry.service.id.as_str()][slot]
            .as_deref()
            .unwrap_or_default()
    }
}

/// The candidates for `kind`, from the cache when there is one.
pub(super) fn pool<'c>(
    entry: &'c ServiceEntry,
    kind: CmRecordType,
    cache: Option<&'c mut PoolCache>,
) -> Cow<'c, [Candidate<'c>]> {
    match cache {
        Some(cache) => Cow::Borrowed(cache.pool(entry, kind)),
        None => Cow::Owned(candidates(entry, kind)),
    }
}

pub(super) fn ipv4(inst: &Instance) -> Option<Ipv4Addr> {
    inst.attributes.get(AWS_INSTANCE_IPV4)?.parse().ok()
}

pub(super) fn ipv6(inst: &Instance) -> Option<Ipv6Addr> {
    inst.attributes.get(AWS_INSTANCE_IPV6)?.parse().ok()
}

pub(super) fn port(inst: &Instance) -> Option<u16> {
    inst.attributes.get(AWS_INSTANCE_PORT)?.parse().ok()
}

pub(super) fn cname(inst: &Instance) -> Option<Name> {
    let mut name = Name::from_ascii(inst.attributes.get(AWS_INSTANCE_CNAME)?).ok()?;
    name.set_fqdn(true);
    Some(name)
}
