//! The pure part of `DiscoverInstances`: which instances a query returns.
//!
//! Cloud Map's rules: QueryParameters must all match exactly;
//! OptionalParameters narrow the result only when at least one instance
//! matches them too (all-or-nothing fallback); the HealthStatus filter is
//! ignored for services without a health check; the order is random; at
//! most MaxResults instances are returned.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;

use crate::registry::ServiceEntry;
use crate::registry::model::{HealthStatus, Instance};

/// The `HealthStatus` parameter of `DiscoverInstances`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFilter {
    /// Healthy instances only.
    Healthy,
    /// Unhealthy instances only.
    Unhealthy,
    /// Every instance.
    All,
    /// Healthy instances, or every instance when none is healthy (fail open).
    HealthyOrElseAll,
}

impl HealthFilter {
    /// Parses Cloud Map's wire value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "HEALTHY" => Self::Healthy,
            "UNHEALTHY" => Self::Unhealthy,
            "ALL" => Self::All,
            "HEALTHY_OR_ELSE_ALL" => Self::HealthyOrElseAll,
            _ => return None,
        })
    }
}

fn matches(instance: &Instance, params: &BTreeMap<String, String>) -> bool {
    params
        .iter()
        .all(|(k, v)| instance.attributes.get(k) == Some(v))
}

/// Applies the health filter to a candidate set.
fn by_health<'a>(
    entry: &ServiceEntry,
    candidates: Vec<&'a Instance>,
    filter: HealthFilter,
) -> Vec<&'a Instance> {
    // Without a health check every instance is UNKNOWN and the filter is ignored.
    if !entry.service.has_health_check() {
        return candidates;
    }
    let is = |i: &&Instance, h| entry.reported_health(i) == h;
    match filter {
        HealthFilter::All => candidates,
        HealthFilter::Healthy => candidates
            .into_iter()
            .filter(|i| is(i, HealthStatus::Healthy))
            .collect(),
        HealthFilter::Unhealthy => candidates
            .into_iter()
            .filter(|i| is(i, HealthStatus::Unhealthy))
            .collect(),
        HealthFilter::HealthyOrElseAll => {
            if candidates.iter().any(|i| is(i, HealthStatus::Healthy)) {
                candidates
                    .into_iter()
                    .filter(|i| is(i, HealthStatus::Healthy))
                    .collect()
            } else {
                candidates
            }
        }
    }
}

/// Selects the instances a `DiscoverInstances` call returns, in random order.
///
/// OptionalParameters are honoured when some instance matches them *and*
/// passes the health filter; otherwise they are ignored as a whole.
pub fn select<'a>(
    entry: &'a ServiceEntry,
    query: &BTreeMap<String, String>,
    optional: &BTreeMap<String, String>,
    health: HealthFilter,
    max_results: usize,
) -> Vec<&'a Instance> {
    let base: Vec<&Instance> = entry
        .instances
        .values()
        .filter(|i| matches(i, query))
        .collect();
    let mut chosen = if optional.is_empty() {
        by_health(entry, base, health)
    } else {
        let narrowed: Vec<&Instance> = base
            .iter()
            .copied()
            .filter(|i| matches(i, optional))
            .collect();
        let narrowed = by_health(entry, narrowed, health);
        if narrowed.is_empty() {
            by_health(entry, base, health)
        } else {
            narrowed
        }
    };
    chosen.shuffle(&mut rand::rng());
    chosen.truncate(max_results);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::*;

    /// An instance fixture: id, health, attributes.
    type Fixture<'a> = (&'a str, HealthStatus, &'a [(&'a str, &'a str)]);

    fn entry(health_check: bool, instances: &[Fixture<'_>]) -> ServiceEntry {
        ServiceEntry {
            service: Service {
                id: "srv-x".into(),
                name: "svc".into(),
                namespace_id: "ns-x".into(),
                description: None,
                kind: ServiceType::Http,
                dns_config: None,
                health_check_config: None,
                health_check_custom_config: health_check.then_some(HealthCheckCustomConfig {
                    failure_threshold: Some(1),
                }),
                attributes: Attributes::new(),
                creator_request_id: None,
                create_date: 0,
                update_date: 0,
                revision: 0,
                owner: Owner::Api,
                tags: vec![],
            },
            instances: instances
                .iter()
                .map(|(id, h, attrs)| {
                    (
                        id.to_string(),
                        Instance {
                            id: id.to_string(),
                            service_id: "srv-x".into(),
                            attributes: attrs
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            creator_request_id: None,
                            health: *h,
                            reported: None,
                            probe: None,
                            owner: Owner::Api.into(),
                            create_date: 0,
                            update_date: 0,
                            health_since: 0,
                        },
                    )
                })
                .collect(),
        }
    }

    fn params(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ids(v: Vec<&Instance>) -> Vec<String> {
        let mut ids: Vec<String> = v.into_iter().map(|i| i.id.clone()).collect();
        ids.sort();
        ids
    }

    use HealthStatus::{Healthy as H, Unhealthy as U};

    #[test]
    fn query_parameters_must_all_match_exactly() {
        let e = entry(
            true,
            &[
                ("a", H, &[("env", "prod"), ("v", "1")]),
                ("b", H, &[("env", "prod"), ("v", "2")]),
                ("c", H, &[("env", "Prod")]),
            ],
        );
        let none = params(&[]);
        assert_eq!(
            ids(select(
                &e,
                &params(&[("env", "prod")]),
                &none,
                HealthFilter::All,
                100
            )),
            ["a", "b"]
        );
        assert_eq!(
            ids(select(
                &e,
                &params(&[("env", "prod"), ("v", "2")]),
                &none,
                HealthFilter::All,
                100
            )),
            ["b"]
        );
        assert!(
            select(
                &e,
                &params(&[("missing", "x")]),
                &none,
                HealthFilter::All,
                100
            )
            .is_empty()
        );
    }

    #[test]
    fn optional_parameters_fall_back_all_or_nothing() {
        let e = entry(
            true,
            &[
                ("a", H, &[("env", "prod"), ("zone", "a"), ("v", "1")]),
                ("b", H, &[("env", "prod"), ("zone", "b"), ("v", "1")]),
            ],
        );
        let q = params(&[("env", "prod")]);
        assert_eq!(
            ids(select(
                &e,
                &q,
                &params(&[("zone", "a")]),
                HealthFilter::All,
                100
            )),
            ["a"]
        );
        // One optional key matches nothing: the whole set is ignored, not relaxed per key.
        assert_eq!(
            ids(select(
                &e,
                &q,
                &params(&[("zone", "a"), ("v", "9")]),
                HealthFilter::All,
                100
            )),
            ["a", "b"]
        );
    }

    #[test]
    fn health_filters() {
        let e = entry(true, &[("a", H, &[]), ("b", U, &[])]);
        let none = params(&[]);
        assert_eq!(
            ids(select(&e, &none, &none, HealthFilter::Healthy, 100)),
            ["a"]
        );
        assert_eq!(
            ids(select(&e, &none, &none, HealthFilter::Unhealthy, 100)),
            ["b"]
        );
        assert_eq!(
            ids(select(&e, &none, &none, HealthFilter::All, 100)),
            ["a", "b"]
        );
        assert_eq!(
            ids(select(
                &e,
                &none,
                &none,
                HealthFilter::HealthyOrElseAll,
                100
            )),
            ["a"]
        );
        let sick = entry(true, &[("a", U, &[]), ("b", U, &[])]);
        assert!(select(&sick, &none, &none, HealthFilter::Healthy, 100).is_empty());
        assert_eq!(
            ids(select(
                &sick,
                &none,
                &none,
                HealthFilter::HealthyOrElseAll,
                100
            )),
            ["a", "b"]
        );
    }

    #[test]
    fn health_filter_is_ignored_without_a_health_check() {
        let e = entry(
            false,
            &[
                ("a", HealthStatus::Unknown, &[]),
                ("b", HealthStatus::Unknown, &[]),
            ],
        );
        let none = params(&[]);
        assert_eq!(
            ids(select(&e, &none, &none, HealthFilter::Healthy, 100)),
            ["a", "b"]
        );
        assert_eq!(
            ids(select(&e, &none, &none, HealthFilter::Unhealthy, 100)),
            ["a", "b"]
        );
    }

    #[test]
    fn max_results_and_random_order() {
        let many: Vec<String> = (0..50).map(|i| format!("i{i:02}")).collect();
        let refs: Vec<Fixture<'_>> = many.iter().map(|id| (id.as_str(), H, &[][..])).collect();
        let e = entry(true, &refs);
        let none = params(&[]);
        assert_eq!(select(&e, &none, &none, HealthFilter::All, 10).len(), 10);
        let orders: std::collections::HashSet<Vec<String>> = (0..20)
            .map(|_| {
                select(&e, &none, &none, HealthFilter::All, 50)
                    .into_iter()
                    .map(|i| i.id.clone())
                    .collect()
            })
            .collect();
        assert!(orders.len() > 1, "the order is randomised");
    }
}
