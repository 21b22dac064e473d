//! Writes the DNS benchmark's fixture (scripts/bench-dns.sh runs it):
//!
//!   cargo bench --bench dns_fixture -- OUT_DIR [SERVICES] [INSTANCES_PER_SERVICE]
//!
//! Without arguments (as `cargo test --all-targets` runs it) it writes a small
//! fixture into a temporary directory and checks it.
//!
//! Into OUT_DIR it writes
//! - `data/`: a Waymark data directory (written through `Registry`): the
//!   private DNS namespace `bench.local` with SERVICES services (default 300),
//!   each MULTIVALUE with SRV and A records (TTL 10) and INSTANCES_PER_SERVICE
//!   healthy instances (default 4, at most 8 so every answer is the full set);
//! - `db.bench.local`: the same records as a zone file (SOA, NS, the name
//!   server's A, each service's A and SRV RRsets and each SRV target's A), for
//!   CoreDNS's `file` plugin and Knot DNS;
//! - `queries.txt`: a dnsperf query file, 2/3 A and 1/3 SRV over all services
//!   in a shuffled order.

use std::fmt::Write as _;
use std::path::PathBuf;

use rand::seq::SliceRandom;
use waymark::registry::model::*;
use waymark::registry::{
    CreateNamespace, CreateService, RedbStore, RegisterInstance, Registry, RegistryConfig,
};

const ZONE: &str = "bench.local";
const TTL: i64 = 10;
const SOA_TTL: i64 = 15;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // `cargo test --all-targets` runs this without arguments: write a small
    // fixture into a temporary directory and check it, as a smoke test.
    let smoke = args.is_empty();
    let tmp = tempfile::tempdir().unwrap();
    let out = args
        .first()
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let services: usize = args
        .get(1)
        .map_or(if smoke { 5 } else { 300 }, |v| v.parse().unwrap());
    let per: usize = args
        .get(2)
        .map_or(if smoke { 2 } else { 4 }, |v| v.parse().unwrap());
    assert!((1..=8).contains(&per), "1-8 instances per service");
    std::fs::create_dir_all(&out).unwrap();

    let store = RedbStore::open(&out.join("data")).unwrap();
    let reg = Registry::open(Box::new(store), RegistryConfig::default()).unwrap();
    let op = reg
        .create_namespace(CreateNamespace {
            name: ZONE.into(),
            kind: NamespaceType::DnsPrivate,
            description: Some("DNS benchmark".into()),
            soa_ttl: Some(SOA_TTL),
            vpc: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap();
    let ns = op.targets[&TargetType::Namespace].clone();

    let mut zone = String::new();
    writeln!(zone, "$ORIGIN {ZONE}.").unwrap();
    writeln!(
        zone,
        "@ {SOA_TTL} IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 7200 900 1209600 {SOA_TTL}"
    )
    .unwrap();
    writeln!(zone, "@ 300 IN NS ns1.{ZONE}.").unwrap();
    writeln!(zone, "ns1 300 IN A 127.0.0.1").unwrap();

    let mut queries = Vec::new();
    for s in 0..services {
        let name = format!("svc-{s:04}");
        let svc = reg
            .create_service(CreateService {
                name: name.clone(),
                namespace_id: ns.clone(),
                description: None,
                dns_config: Some(DnsConfig {
                    routing_policy: RoutingPolicy::Multivalue,
                    records: vec![
                        DnsRecord {
                            kind: RecordType::Srv,
                            ttl: TTL,
                        },
                        DnsRecord {
                            kind: RecordType::A,
                            ttl: TTL,
                        },
                    ],
                }),
                health_check_config: None,
                health_check_custom_config: Some(HealthCheckCustomConfig {
                    failure_threshold: None,
                }),
                http_only: false,
                creator_request_id: None,
                tags: vec![],
                owner: Owner::Api,
            })
            .unwrap();
        for i in 0..per {
            let id = format!("pod-{i}");
            let ip = format!("10.{}.{}.{}", s / 250, s % 250, i + 1);
            let port = 8000 + i;
            let attributes = [
                ("AWS_INSTANCE_IPV4", ip.clone()),
                ("AWS_INSTANCE_PORT", port.to_string()),
                ("app", name.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            reg.register_instance(RegisterInstance {
                service_id: svc.id.clone(),
                instance_id: id.clone(),
                attributes,
                creator_request_id: None,
                owner: Owner::Api,
            })
            .unwrap();
            writeln!(zone, "{name} {TTL} IN A {ip}").unwrap();
            writeln!(zone, "{name} {TTL} IN SRV 1 1 {port} {id}.{name}.{ZONE}.").unwrap();
            writeln!(zone, "{id}.{name} {TTL} IN A {ip}").unwrap();
        }
        queries.push(format!("{name}.{ZONE} A"));
        queries.push(format!("{name}.{ZONE} A"));
        queries.push(format!("{name}.{ZONE} SRV"));
    }
    queries.shuffle(&mut rand::rng());
    std::fs::write(out.join(format!("db.{ZONE}")), zone).unwrap();
    std::fs::write(out.join("queries.txt"), queries.join("\n") + "\n").unwrap();
    if smoke {
        // The data directory holds exactly what the zone file describes.
        drop(reg);
        let store = RedbStore::open(&out.join("data")).unwrap();
        let reg = Registry::open(Box::new(store), RegistryConfig::default()).unwrap();
        assert_eq!(reg.read().service_total(), services);
        assert_eq!(reg.read().instance_count(), services * per);
        let zone = std::fs::read_to_string(out.join(format!("db.{ZONE}"))).unwrap();
        assert_eq!(zone.lines().count(), 4 + services * per * 3);
        let queries = std::fs::read_to_string(out.join("queries.txt")).unwrap();
        assert_eq!(queries.lines().count(), services * 3);
    }
    eprintln!(
        "fixture: {services} services x {per} instances in {}",
        out.display()
    );
}
