//! Resolution semantics against an in-memory registry (no sockets): zone
//! selection, listener scopes, routing and fail-open, SRV targets, negative
//! answers. The wire-level behaviour is tested with `dig` in tests/dns*.rs.

use std::net::IpAddr;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, RData, RecordType};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::resolve::{Resolution, Resolver, Scope, is_dns_label};
use crate::registry::model::{
    DnsConfig, DnsRecord, HealthCheckCustomConfig, HealthStatus, NamespaceType, Owner,
    RecordType as Rt, RoutingPolicy, TargetType,
};
use crate::registry::{CreateNamespace, CreateService, RegisterInstance, Registry};

fn ns(reg: &Registry, name: &str, kind: NamespaceType) -> String {
    reg.create_namespace(CreateNamespace {
        name: name.into(),
        kind,
        description: None,
        soa_ttl: None,
        vpc: None,
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
    .targets[&TargetType::Namespace]
        .clone()
}

fn svc(
    reg: &Registry,
    ns: &str,
    name: &str,
    policy: RoutingPolicy,
    kinds: &[Rt],
    health: bool,
) -> String {
    reg.create_service(CreateService {
        name: name.into(),
        namespace_id: ns.into(),
        description: None,
        dns_config: Some(DnsConfig {
            routing_policy: policy,
            records: kinds
                .iter()
                .map(|&kind| DnsRecord { kind, ttl: 10 })
                .collect(),
        }),
        health_check_config: None,
        health_check_custom_config: health.then_some(HealthCheckCustomConfig {
            failure_threshold: None,
        }),
        http_only: false,
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
    .id
}

fn inst(reg: &Registry, svc: &str, id: &str, attrs: &[(&str, &str)]) {
    reg.register_instance(RegisterInstance {
        service_id: svc.into(),
        instance_id: id.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        creator_request_id: None,
        owner: Owner::Api,
    })
    .unwrap();
}

fn resolve(
    reg: &Registry,
    resolver: &Resolver,
    name: &str,
    qtype: RecordType,
    seed: u64,
) -> Resolution {
    let name = Name::from_ascii(name).unwrap();
    resolver.resolve(&reg.read(), &name, qtype, &mut StdRng::seed_from_u64(seed))
}

fn ips(res: &Resolution) -> Vec<String> {
    let mut v: Vec<String> = res
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_longest_zone_wins_and_scopes_hide_private_zones() {
    let reg = Registry::in_memory();
    let parent = ns(&reg, "example.test", NamespaceType::DnsPublic);
    let child = ns(&reg, "dev.example.test", NamespaceType::DnsPrivate);
    let a = svc(
        &reg,
        &parent,
        "api.dev",
        RoutingPolicy::Multivalue,
        &[Rt::A],
        false,
    );
    inst(&reg, &a, "p1", &[("AWS_INSTANCE_IPV4", "192.0.2.1")]);
    let b = svc(
        &reg,
        &child,
        "api",
        RoutingPolicy::Multivalue,
        &[Rt::A],
        false,
    );
    inst(&reg, &b, "c1", &[("AWS_INSTANCE_IPV4", "10.0.0.1")]);

    let all = Resolver::new(Scope::All, vec![]);
    let public = Resolver::new(Scope::PublicOnly, vec![]);
    // The private child zone answers on the main listener ...
    assert_eq!(
        ips(&resolve(
            &reg,
            &all,
            "api.dev.example.test.",
            RecordType::A,
            1
        )),
        ["10.0.0.1"]
    );
    // ... and is invisible on the public one, where the public parent answers.
    assert_eq!(
        ips(&resolve(
            &reg,
            &public,
            "api.dev.example.test.",
            RecordType::A,
            1
        )),
        ["192.0.2.1"]
    );
    let res = resolve(&reg, &public, "dev.example.test.", RecordType::SOA, 1);
    assert!(
        res.answers.is_empty(),
        "no SOA of the private zone in public"
    );
    assert_eq!(
        res.rcode,
        ResponseCode::NoError,
        "an empty non-terminal of the parent"
    );
    // Outside every zone.
    let res = resolve(&reg, &all, "example.org.", RecordType::A, 1);
    assert_eq!(res.rcode, ResponseCode::Refused);
    assert!(!res.authoritative);
}

#[test]
fn multivalue_picks_up_to_eight_healthy_at_random_and_fails_open() {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    let s = svc(&reg, &n, "s", RoutingPolicy::Multivalue, &[Rt::A], true);
    for i in 1..=12 {
        inst(
            &reg,
            &s,
            &format!("i{i}"),
            &[("AWS_INSTANCE_IPV4", &format!("10.0.0.{i}"))],
        );
    }
    let r = Resolver::new(Scope::All, vec![]);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..20 {
        let got = ips(&resolve(&reg, &r, "s.z.test.", RecordType::A, seed));
        assert_eq!(got.len(), 8);
        seen.extend(got);
    }
    assert_eq!(seen.len(), 12, "every instance is picked sometimes");

    // Three healthy: exactly those.
    for i in 4..=12 {
        reg.set_health(&s, &format!("i{i}"), HealthStatus::Unhealthy, &Owner::Api)
            .unwrap();
    }
    assert_eq!(
        ips(&resolve(&reg, &r, "s.z.test.", RecordType::A, 3)),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    );
    // None healthy: up to eight of the unhealthy.
    for i in 1..=3 {
        reg.set_health(&s, &format!("i{i}"), HealthStatus::Unhealthy, &Owner::Api)
            .unwrap();
    }
    assert_eq!(
        ips(&resolve(&reg, &r, "s.z.test.", RecordType::A, 3)).len(),
        8
    );
}

#[test]
fn weighted_picks_one_healthy_record() {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    let s = svc(
        &reg,
        &n,
        "w",
        RoutingPolicy::Weighted,
        &[Rt::A, Rt::Aaaa],
        true,
    );
    for i in 1..=4 {
        inst(
            &reg,
            &s,
            &format!("i{i}"),
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.0.0.{i}")),
                ("AWS_INSTANCE_IPV6", &format!("fd00::{i}")),
            ],
        );
    }
    reg.set_health(&s, "i1", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let r = Resolver::new(Scope::All, vec![]);
    for seed in 0..30 {
        let a = ips(&resolve(&reg, &r, "w.z.test.", RecordType::A, seed));
        assert_eq!(a.len(), 1);
        assert_ne!(a[0], "10.0.0.1");
        let aaaa = ips(&resolve(&reg, &r, "w.z.test.", RecordType::AAAA, seed));
        assert_eq!(aaaa.len(), 1);
        assert_ne!(aaaa[0], "fd00::1");
    }
}

#[test]
fn srv_answers_skip_ids_that_are_not_labels_and_instances_without_address() {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    let s = svc(
        &reg,
        &n,
        "s",
        RoutingPolicy::Multivalue,
        &[Rt::Srv, Rt::Aaaa],
        false,
    );
    inst(
        &reg,
        &s,
        "ok",
        &[
            ("AWS_INSTANCE_IPV6", "fd00::1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    inst(
        &reg,
        &s,
        "pod/x",
        &[
            ("AWS_INSTANCE_IPV6", "fd00::2"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    inst(
        &reg,
        &s,
        "a:b",
        &[
            ("AWS_INSTANCE_IPV6", "fd00::3"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    let r = Resolver::new(Scope::All, vec![]);
    let res = resolve(&reg, &r, "s.z.test.", RecordType::SRV, 1);
    assert_eq!(res.answers.len(), 1);
    let RData::SRV(srv) = &res.answers[0].data else {
        panic!("SRV expected")
    };
    assert_eq!((srv.priority, srv.weight, srv.port), (1, 1, 80));
    assert_eq!(srv.target.to_ascii(), "ok.s.z.test.");
    // The target's AAAA goes to the additional section, and resolves.
    assert_eq!(res.additionals.len(), 1);
    assert_eq!(res.additionals[0].record_type(), RecordType::AAAA);
    let t = resolve(&reg, &r, "OK.s.z.test.", RecordType::AAAA, 1);
    assert_eq!(ips(&t), ["fd00::1"]);
    // A name with a '.' inside a label is not confused with two labels.
    let odd = Name::from_labels(vec![
        b"pod.x".to_vec(),
        b"s".to_vec(),
        b"z".to_vec(),
        b"test".to_vec(),
    ])
    .unwrap();
    let res = r.resolve(
        &reg.read(),
        &odd,
        RecordType::A,
        &mut StdRng::seed_from_u64(1),
    );
    assert_eq!(res.rcode, ResponseCode::NXDomain);

    assert!(is_dns_label("pod-1_a"));
    for bad in ["", "pod/x", "a:b", "u@h", "a.b", &"x".repeat(64)] {
        assert!(!is_dns_label(bad), "{bad:?}");
    }
}

#[test]
fn negative_answers_and_apex_records() {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    svc(
        &reg,
        &n,
        "_http._tcp",
        RoutingPolicy::Multivalue,
        &[Rt::Srv],
        false,
    );
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let r = Resolver::new(Scope::All, vec![ip]);

    let res = resolve(&reg, &r, "nope.z.test.", RecordType::A, 1);
    assert_eq!(res.rcode, ResponseCode::NXDomain);
    assert!(res.authoritative);
    assert_eq!(res.authority.len(), 1);
    let RData::SOA(soa) = &res.authority[0].data else {
        panic!("SOA expected")
    };
    assert_eq!(soa.minimum, 15, "the default SOA TTL");
    assert_eq!(res.authority[0].ttl, 15);

    for (name, qtype) in [
        ("_tcp.z.test.", RecordType::SRV),
        ("z.test.", RecordType::A),
        ("_http._tcp.z.test.", RecordType::A),
    ] {
        let res = resolve(&reg, &r, name, qtype, 1);
        assert_eq!(res.rcode, ResponseCode::NoError, "{name}");
        assert!(res.answers.is_empty(), "{name}");
        assert_eq!(res.authority.len(), 1, "{name}");
    }
    let res = resolve(&reg, &r, "z.test.", RecordType::NS, 1);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(
        ips(&Resolution {
            answers: res.additionals.clone(),
            ..res.clone()
        }),
        ["127.0.0.2"]
    );
    let res = resolve(&reg, &r, "ns1.z.test.", RecordType::A, 1);
    assert_eq!(ips(&res), ["127.0.0.2"]);
    let res = resolve(&reg, &r, "z.test.", RecordType::AXFR, 1);
    assert_eq!(res.rcode, ResponseCode::Refused);
}

mod fast_path;

#[test]
fn pick_is_the_partial_fisher_yates_shuffle() {
    use super::routing::pick;
    // The same selection, from the same random numbers, as shuffling the
    // whole list of candidates and keeping its head.
    for n in 1..40 {
        for (policy, keep) in [(RoutingPolicy::Multivalue, 8), (RoutingPolicy::Weighted, 1)] {
            for seed in 0..20 {
                let mut pool: Vec<usize> = (0..n).collect();
                let mut rng = StdRng::seed_from_u64(seed);
                let keep = keep.min(n);
                for i in 0..keep {
                    use rand::Rng as _;
                    let j = rng.random_range(i..n);
                    pool.swap(i, j);
                }
                let picked: Vec<usize> = pick(n, policy, &mut StdRng::seed_from_u64(seed))
                    .iter()
                    .collect();
                assert_eq!(picked, pool[..keep], "n {n} seed {seed}");
            }
        }
    }
}

/// The cost of answering one query in process (no sockets), for services
/// of 4 and 1,000 instances: through hickory (parse, resolve, encode: the
/// general path), and on the fast path with the candidate cache and without
/// it (the registry generation changing before every query):
/// `cargo test --release --lib dns::tests::fast_path_cost -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn fast_path_cost() {
    use fast_path::Capture;
    use futures_util::FutureExt as _;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::server::{Request, RequestHandler};
    use std::net::SocketAddr;
    use std::sync::Arc;

    use crate::dns::RegistryHandler;
    use crate::dns::metrics::DnsMetrics;
    use crate::dns::wire::FastPath;
    let reg = Arc::new(Registry::in_memory());
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    for (name, count) in [("small", 4), ("large", 1000)] {
        let s = svc(
            &reg,
            &n,
            name,
            RoutingPolicy::Multivalue,
            &[Rt::Srv, Rt::A],
            true,
        );
        for i in 0..count {
            inst(
                &reg,
                &s,
                &format!("pod-{i}"),
                &[
                    (
                        "AWS_INSTANCE_IPV4",
                        &format!("10.0.{}.{}", i / 256, i % 256),
                    ),
                    ("AWS_INSTANCE_PORT", "8080"),
                ],
            );
        }
    }
    let resolver = Resolver::new(Scope::All, vec![]);
    let mut fast = FastPath::new();
    for name in ["small", "large"] {
        for (qtype, type_name) in [(1u8, "A"), (33, "SRV")] {
            let mut packet = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in [name, "z", "test"] {
                packet.push(label.len() as u8);
                packet.extend_from_slice(label.as_bytes());
            }
            packet.extend_from_slice(&[0, 0, qtype, 0, 1]);
            let handler = RegistryHandler::new(
                reg.clone(),
                Resolver::new(Scope::All, vec![]),
                DnsMetrics::unregistered().unwrap(),
            );
            let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
            let started = std::time::Instant::now();
            let rounds = if name == "small" { 20_000 } else { 1_000 };
            for _ in 0..rounds {
                let request = Request::from_bytes(packet.clone(), src, Protocol::Udp).unwrap();
                handler
                    .handle_request::<_, TokioTime>(&request, Capture::default())
                    .now_or_never()
                    .unwrap();
            }
            eprintln!(
                "{name} ({}), {type_name}, through hickory: {:?} per query",
                if name == "small" { 4 } else { 1000 },
                started.elapsed() / rounds
            );
            let index = reg.read();
            let mut rng = rand::rng();
            for cached in [true, false] {
                let rounds = if cached { 100_000 } else { 2_000 };
                let started = std::time::Instant::now();
                for round in 0..rounds {
                    fast.sync(if cached { 0 } else { round + 1 });
                    assert!(fast.answer(&packet, &index, &resolver, &mut rng).is_some());
                }
                eprintln!(
                    "{name} ({}), {type_name}, {}: {:?} per query",
                    if name == "small" { 4 } else { 1000 },
                    if cached { "cached" } else { "uncached" },
                    started.elapsed() / rounds as u32
                );
            }
        }
    }
}
