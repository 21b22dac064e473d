//! Restart cost of the embedded store: how long `Registry::open` takes to
//! load N instances from redb into the in-memory index, and how much memory
//! the index holds per instance.
//!
//!   cargo bench --bench restore            # 150,000 instances
//!   WAYMARK_BENCH_INSTANCES=20000 cargo bench --bench restore
//!   WAYMARK_BENCH_INSTANCES=10000,50000,150000 cargo bench --bench restore
//!                                          # one restart per size
//!
//! Raw results: `bench-results/restore.json` (see `results.rs`).
//!
//! Instances look like what the controller registers for a pod: IPv4, port,
//! a few labels, Kubernetes metadata and the controller ownership marker.

#[path = "results.rs"]
mod results;

use std::time::Instant;

use waymark::registry::model::*;
use waymark::registry::{Change, Commit, RedbStore, Registry, RegistryConfig, Store, now_millis};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("WAYMARK_BENCH_INSTANCES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![150_000]);
    let runs: Vec<serde_json::Value> = sizes.into_iter().map(run).collect();
    results::write("restore", serde_json::json!({ "runs": runs }));
}

/// Populates a store with `total` instances, restarts a registry on it and
/// reports what the restart took.
fn run(total: usize) -> serde_json::Value {
    let per_service = 1000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = now_millis();
    let owner = Owner::Controller {
        cluster: "bench-cluster".into(),
        object: "ServiceDiscovery shop/svc".into(),
    };

    let started = Instant::now();
    {
        let store = RedbStore::open(&data).unwrap();
        let ns = Namespace {
            id: "ns-benchbenchbench01".into(),
            name: "bench.local".into(),
            http_name: "bench.local".into(),
            kind: NamespaceType::DnsPrivate,
            description: None,
            soa_ttl: Some(15),
            hosted_zone_id: Some("ZBENCH".into()),
            vpc: None,
            creator_request_id: None,
            create_date: now,
            update_date: now,
            owner: owner.clone(),
            tags: vec![],
        };
        store
            .commit(Commit {
                changes: &[Change::PutNamespace(ns.clone())],
                existed: &[false],
                bumps: &[],
            })
            .unwrap();
        let services = total.div_ceil(per_service);
        for s in 0..services {
            let sid = format!("srv-bench{s:011}");
            let mut batch = vec![Change::PutService(Service {
                id: sid.clone(),
                name: format!("svc-{s}"),
                namespace_id: ns.id.clone(),
                description: None,
                kind: ServiceType::DnsHttp,
                dns_config: Some(DnsConfig {
                    routing_policy: RoutingPolicy::Multivalue,
                    records: vec![DnsRecord {
                        kind: RecordType::A,
                        ttl: 10,
                    }],
                }),
                health_check_config: None,
                health_check_custom_config: Some(HealthCheckCustomConfig {
                    failure_threshold: Some(1),
                }),
                attributes: Attributes::new(),
                creator_request_id: None,
                create_date: now,
                update_date: now,
                revision: per_service as u64,
                owner: owner.clone(),
                tags: vec![],
            })];
            for i in 0..per_service.min(total - s * per_service) {
                let n = s * per_service + i;
                let attributes: Attributes = [
                    (
                        "AWS_INSTANCE_IPV4",
                        format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
                    ),
                    ("AWS_INSTANCE_PORT", "8080".into()),
                    ("app", format!("svc-{s}")),
                    ("version", "v1".into()),
                    ("K8S_NAMESPACE", "shop".into()),
                    ("K8S_POD_NAME", format!("svc-{s}-7d9f8c6b5-{n:05}")),
                    ("K8S_NODE_NAME", format!("node-{}", n % 100)),
                    ("AVAILABILITY_ZONE", "us-east-1a".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                batch.push(Change::PutInstance(Instance {
                    id: format!("svc-{s}-7d9f8c6b5-{n:05}"),
                    service_id: sid.as_str().into(),
                    attributes,
                    creator_request_id: None,
                    health: HealthStatus::Healthy,
                    reported: None,
                    probe: None,
                    owner: owner.clone().into(),
                    create_date: now,
                    update_date: now,
                    health_since: now,
                }));
            }
            store
                .commit(Commit {
                    changes: &batch,
                    existed: &vec![false; batch.len()],
                    bumps: &[],
                })
                .unwrap();
        }
    }
    let db_size = std::fs::metadata(data.join("registry.redb")).unwrap().len();
    println!(
        "populated {total} instances in {:.2} s (database file {:.1} MB)",
        started.elapsed().as_secs_f64(),
        db_size as f64 / 1e6
    );

    let rss_before = rss_bytes();
    let started = Instant::now();
    let registry = Registry::open(
        Box::new(RedbStore::open(&data).unwrap()),
        RegistryConfig::default(),
    )
    .unwrap();
    let elapsed = started.elapsed();
    let rss_after = rss_bytes();
    let loaded = registry.read().instance_count();
    assert_eq!(loaded, total);
    println!(
        "restart: loaded {loaded} instances in {:.3} s ({:.0} instances/s)",
        elapsed.as_secs_f64(),
        loaded as f64 / elapsed.as_secs_f64()
    );
    let per_instance = rss_after.saturating_sub(rss_before) as f64 / loaded as f64;
    println!(
        "memory: RSS grew by {:.1} MB = {per_instance:.0} bytes per instance (includes the redb page cache)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1e6,
    );
    serde_json::json!({
        "instances": loaded,
        "load_seconds": elapsed.as_secs_f64(),
        "bytes_per_instance": per_instance,
        "database_bytes": db_size,
    })
}
