//! Live updates: the DNS server runs in-process on 127.0.0.1:0 over an
//! `Arc<Registry>` the test keeps writing to; the real `dig` queries it. A
//! register, a deregister and a health change are visible on the very next
//! query (no cache, no resync interval).

mod dns_support;

use std::sync::Arc;

use dns_support::*;
use waymark::dns::{self, DnsListener, DnsMetrics, Scope};
use waymark::registry::Registry;
use waymark::registry::model::{NamespaceType, Owner, RecordType, RoutingPolicy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_deregister_and_health_changes_show_on_the_next_query() {
    let registry = Arc::new(Registry::in_memory());
    let listener = DnsListener::bind("127.0.0.1:0".parse().unwrap(), Scope::All)
        .await
        .unwrap();
    let addr = listener.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dns::serve(
        vec![listener],
        registry.clone(),
        DnsMetrics::unregistered().unwrap(),
        None,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // dig is a blocking process: run each query off the async workers.
    let q = |name: &'static str, qtype: &'static str| async move {
        tokio::task::spawn_blocking(move || dig(addr, &[name, qtype]))
            .await
            .unwrap()
    };

    // No namespace yet: not our zone.
    assert_eq!(q("api.live.test", "A").await.status, "REFUSED");

    let ns = create_ns(&registry, "live.test", NamespaceType::DnsPrivate, Some(5));
    assert_eq!(q("api.live.test", "A").await.status, "NXDOMAIN");

    let svc = create_svc(
        &registry,
        &ns,
        "api",
        dns(
            RoutingPolicy::Multivalue,
            &[(RecordType::A, 10), (RecordType::Srv, 10)],
        ),
        true,
    );
    let r = q("api.live.test", "A").await;
    assert_eq!(
        r.status, "NOERROR",
        "the service exists, no records yet: {}",
        r.raw
    );
    assert!(r.answer.is_empty());

    register(
        &registry,
        &svc,
        "a1",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    assert_eq!(q("api.live.test", "A").await.data("A"), ["10.0.0.1"]);

    register(
        &registry,
        &svc,
        "a2",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.2"),
            ("AWS_INSTANCE_PORT", "81"),
        ],
    );
    assert_eq!(
        q("api.live.test", "A").await.data("A"),
        ["10.0.0.1", "10.0.0.2"]
    );
    assert_eq!(
        q("api.live.test", "SRV").await.data("SRV"),
        ["1 1 80 a1.api.live.test.", "1 1 81 a2.api.live.test."]
    );

    // Health change: a1 unhealthy disappears, comes back when healthy.
    set_health(&registry, &svc, "a1", false);
    assert_eq!(q("api.live.test", "A").await.data("A"), ["10.0.0.2"]);
    assert_eq!(
        q("api.live.test", "SRV").await.data("SRV"),
        ["1 1 81 a2.api.live.test."]
    );
    // Both unhealthy: fail open to both.
    set_health(&registry, &svc, "a2", false);
    assert_eq!(
        q("api.live.test", "A").await.data("A"),
        ["10.0.0.1", "10.0.0.2"]
    );
    set_health(&registry, &svc, "a1", true);
    assert_eq!(q("api.live.test", "A").await.data("A"), ["10.0.0.1"]);

    // Attribute change (re-register with a new address).
    register(
        &registry,
        &svc,
        "a1",
        &[
            ("AWS_INSTANCE_IPV4", "10.0.0.11"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    assert_eq!(q("api.live.test", "A").await.data("A"), ["10.0.0.11"]);
    assert_eq!(
        q("a1.api.live.test", "A").await.data("A"),
        ["10.0.0.11"],
        "the SRV target follows too"
    );

    // Deregister.
    registry
        .deregister_instance(&svc, "a1", &Owner::Api)
        .unwrap();
    assert_eq!(q("api.live.test", "A").await.data("A"), ["10.0.0.2"]);
    assert_eq!(q("a1.api.live.test", "A").await.status, "NXDOMAIN");
    registry
        .deregister_instance(&svc, "a2", &Owner::Api)
        .unwrap();
    let r = q("api.live.test", "A").await;
    assert!(r.answer.is_empty(), "{}", r.raw);

    // Service and namespace deletion.
    registry.delete_service(&svc, &Owner::Api).unwrap();
    assert_eq!(q("api.live.test", "A").await.status, "NXDOMAIN");
    registry.delete_namespace(&ns, &Owner::Api).unwrap();
    assert_eq!(q("api.live.test", "A").await.status, "REFUSED");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server stops on its shutdown signal")
        .unwrap()
        .unwrap();
}
