//! The xDS server end to end, with a real proxyless gRPC client: grpc-go's
//! own xDS resolver and balancers (tests/xds_client, built from its Go
//! module by scripts/build-xds-client.sh and cached) dial
//! `xds:///echo.<namespace>` through `waymark serve --xds-addr` and send RPCs
//! to loopback gRPC backends registered through the Cloud Map API. Every
//! check is on which backend answered.

use std::time::{Duration, Instant};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::{CustomHealthStatus, HealthCheckCustomConfig};

#[path = "api/harness.rs"]
mod harness;
mod xds_support;

use harness::support::{Options, free_port, http_get};
use harness::{SdkClient, Server, http_namespace, register};
use xds_support::{Backends, GrpcClient, xds_client_bin};

fn start_waymark() -> (Server, u16) {
    let xds_port = free_port();
    let server = Server::start_with(Options {
        args: vec!["--xds-addr".into(), format!("127.0.0.1:{xds_port}")],
        ..Options::default()
    });
    (server, xds_port)
}

async fn custom_health_service(client: &Client, ns: &str, name: &str) -> String {
    client
        .create_service()
        .name(name)
        .namespace_id(ns)
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string()
}

async fn register_backend(client: &Client, svc: &str, id: &str, port: u16, extra: &[(&str, &str)]) {
    let mut attrs = vec![
        ("AWS_INSTANCE_IPV4", "127.0.0.1".to_string()),
        ("AWS_INSTANCE_PORT", port.to_string()),
    ];
    attrs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    register(client, svc, id, &attrs).await;
}

async fn set_health(client: &Client, svc: &str, id: &str, status: CustomHealthStatus) {
    client
        .update_instance_custom_health_status()
        .service_id(svc)
        .instance_id(id)
        .status(status)
        .send()
        .await
        .unwrap();
}

/// The value of one Prometheus series, if exported.
fn metric(server: &Server, series: &str) -> Option<f64> {
    let (_, body) = http_get(server.metrics_port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn grpc_clients_route_to_healthy_instances_only_and_follow_the_registry_live() {
    let bin = xds_client_bin();
    let backends = Backends::start(&bin, &["b0", "b1", "b2"]);
    let (server, xds_port) = start_waymark();
    let client = server.client();
    let ns = http_namespace(&client, "mesh").await;
    let svc = custom_health_service(&client, &ns, "echo").await;
    for name in ["b0", "b1", "b2"] {
        register_backend(&client, &svc, name, backends.ports[name], &[]).await;
    }

    let mut grpc = GrpcClient::start(&bin, xds_port, "echo.mesh");
    let first = grpc.until_served_by(30, &["b0", "b1", "b2"]);
    // Round robin over the three: an even spread.
    let report = grpc.send(300);
    assert_eq!(report.errors, 0, "{report:?}");
    for name in ["b0", "b1", "b2"] {
        assert_eq!(report.counts[name], 100, "{first:?} then {report:?}");
    }
    assert_eq!(metric(&server, "waymark_xds_clients"), Some(1.0));

    // UNHEALTHY: the same connected client stops sending to it.
    set_health(&client, &svc, "b1", CustomHealthStatus::Unhealthy).await;
    grpc.until_served_by(20, &["b0", "b2"]);
    let report = grpc.send(200);
    assert_eq!(report.counts.get("b1"), None, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");

    // Draining (the marker a terminating pod's instance carries): no new
    // requests, although it is still registered and healthy.
    register_backend(
        &client,
        &svc,
        "b2",
        backends.ports["b2"],
        &[("WAYMARK_DRAINING", "1767225600000")],
    )
    .await;
    grpc.until_served_by(20, &["b0"]);

    // Healthy again, and a deregistration: b1 only.
    set_health(&client, &svc, "b1", CustomHealthStatus::Healthy).await;
    client
        .deregister_instance()
        .service_id(&svc)
        .instance_id("b0")
        .send()
        .await
        .unwrap();
    grpc.until_served_by(20, &["b1"]);
    let report = grpc.send(100);
    assert_eq!(report.counts.get("b1"), Some(&100), "{report:?}");

    let pushes = metric(&server, "waymark_xds_pushes_total{type=\"endpoint\"}").unwrap();
    assert!(
        pushes >= 5.0,
        "one EDS push per change at least, got {pushes}"
    );
    assert_eq!(
        metric(&server, "waymark_xds_nacks_total{type=\"endpoint\"}"),
        None,
        "nothing was rejected"
    );
    drop(grpc);
    // The stream closes with the client.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "waymark_xds_clients") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the client's stream was not closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_rejected_configuration_is_reported_and_the_client_keeps_its_last_good_one() {
    let bin = xds_client_bin();
    let backends = Backends::start(&bin, &["b0", "b1", "b2"]);
    let (server, xds_port) = start_waymark();
    let client = server.client();
    let ns = http_namespace(&client, "mesh").await;
    let svc = custom_health_service(&client, &ns, "echo").await;
    for name in ["b0", "b1"] {
        register_backend(&client, &svc, name, backends.ports[name], &[]).await;
    }
    let mut grpc = GrpcClient::start(&bin, xds_port, "echo.mesh");
    grpc.until_served_by(20, &["b0", "b1"]);

    // Cloud Map lets two instances share an address; grpc-go rejects an EDS
    // resource with duplicate addresses, so this version is NACKed.
    register_backend(&client, &svc, "b0-again", backends.ports["b0"], &[]).await;
    let series = "waymark_xds_nacks_total{type=\"endpoint\"}";
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server, series).is_none() {
        assert!(Instant::now() < deadline, "no NACK was counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        metric(
            &server,
            "waymark_xds_last_nack_timestamp_seconds{type=\"endpoint\"}"
        )
        .unwrap()
            > 0.0
    );
    // b2 joins while the duplicate is still there: that version is rejected
    // too, and the client keeps routing on the last one it accepted.
    register_backend(&client, &svc, "b2", backends.ports["b2"], &[]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&server, series).unwrap_or_default() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the second version was not NACKed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = grpc.send(200);
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(
        report.counts.keys().collect::<Vec<_>>(),
        ["b0", "b1"],
        "the last good configuration keeps serving: {report:?}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("rejected a response (NACK)") && log.contains("duplicate endpoint"),
        "the NACK and the client's reason are logged:\n{log}"
    );

    // Without the duplicate the next version is accepted: b2 gets traffic.
    client
        .deregister_instance()
        .service_id(&svc)
        .instance_id("b0-again")
        .send()
        .await
        .unwrap();
    grpc.until_served_by(30, &["b0", "b1", "b2"]);
}

/// A raw delta-xDS client (tonic, Envoy's generated API): what Envoy with
/// `api_type: DELTA_GRPC` does, checked message by message.
#[tokio::test]
async fn delta_xds_sends_only_what_changed_and_records_nacks() {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse,
    };
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use prost::Message;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    let (server, xds_port) = start_waymark();
    let client = server.client();
    let ns = http_namespace(&client, "mesh").await;
    let svc = custom_health_service(&client, &ns, "echo").await;
    register_backend(&client, &svc, "a", 1001, &[]).await;

    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds_port}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut responses = ads
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || -> DeltaDiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("no response in 10 s")
            .unwrap()
            .unwrap()
    };
    let request = |type_url: &str, names: &[&str], nonce: &str| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let endpoints = |r: &DeltaDiscoveryResponse| -> usize {
        let cla = ClusterLoadAssignment::decode(&*r.resources[0].resource.as_ref().unwrap().value)
            .unwrap();
        cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum()
    };
    let names = |r: &DeltaDiscoveryResponse| -> Vec<String> {
        r.resources.iter().map(|r| r.name.clone()).collect()
    };

    tx.send(request(EDS, &["echo.mesh"], "")).await.unwrap();
    let eds = next().await;
    assert_eq!(
        (names(&eds), endpoints(&eds)),
        (vec!["echo.mesh".into()], 1)
    );
    tx.send(request(EDS, &[], &eds.nonce)).await.unwrap();
    tx.send(request(CDS, &[], "")).await.unwrap();
    let cds = next().await;
    assert_eq!(names(&cds), ["echo.mesh"]);
    tx.send(request(CDS, &[], &cds.nonce)).await.unwrap();

    // A new instance: one EDS update with the one resource, nothing else.
    register_backend(&client, &svc, "b", 1002, &[]).await;
    let eds = next().await;
    assert_eq!(eds.type_url, EDS);
    assert_eq!(
        (names(&eds), endpoints(&eds)),
        (vec!["echo.mesh".into()], 2)
    );
    tx.send(request(EDS, &[], &eds.nonce)).await.unwrap();

    // A new service: the wildcard CDS subscription gets that cluster only;
    // the client rejects it.
    let other = custom_health_service(&client, &ns, "other").await;
    let cds = next().await;
    assert_eq!(
        (cds.type_url.as_str(), names(&cds)),
        (CDS, vec!["other.mesh".into()])
    );
    tx.send(DeltaDiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: 3,
            message: "test rejects other.mesh".into(),
            details: vec![],
        }),
        ..request(CDS, &[], &cds.nonce)
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&server, "waymark_xds_nacks_total{type=\"cluster\"}") != Some(1.0) {
        assert!(Instant::now() < deadline, "the NACK was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        std::fs::read_to_string(&server.log)
            .unwrap()
            .contains("test rejects other.mesh")
    );

    // The service goes: removed by name.
    client.delete_service().id(&other).send().await.unwrap();
    let cds = next().await;
    assert_eq!(cds.type_url, CDS);
    assert!(cds.resources.is_empty(), "{cds:?}");
    assert_eq!(cds.removed_resources, ["other.mesh"]);
}

#[tokio::test]
async fn a_90_10_split_by_version_holds_within_3_percent_over_2000_requests() {
    let bin = xds_client_bin();
    let backends = Backends::start(&bin, &["v1-a", "v1-b", "v2-a"]);
    let (server, xds_port) = start_waymark();
    let client = server.client();
    let ns = http_namespace(&client, "mesh").await;
    let svc = custom_health_service(&client, &ns, "echo").await;
    for (name, version) in [("v1-a", "v1"), ("v1-b", "v1"), ("v2-a", "v2")] {
        register_backend(
            &client,
            &svc,
            name,
            backends.ports[name],
            &[("version", version)],
        )
        .await;
    }
    let split = async |text: &str| {
        client
            .update_service_attributes()
            .service_id(&svc)
            .attributes("WAYMARK_TRAFFIC_SPLIT", text)
            .send()
            .await
            .unwrap();
    };
    let mut grpc = GrpcClient::start(&bin, xds_port, "echo.mesh");
    grpc.until_served_by(30, &["v1-a", "v1-b", "v2-a"]);

    // Blue/green: everything to v1, then the canary gets its 10 %.
    split("version:v1=100,v2=0").await;
    grpc.until_served_by(30, &["v1-a", "v1-b"]);
    split("version:v1=90,v2=10").await;
    grpc.until_served_by(200, &["v1-a", "v1-b", "v2-a"]);
    let report = grpc.send(2000);
    assert_eq!(report.errors, 0, "{report:?}");
    let v2 = f64::from(report.counts["v2-a"]) / 2000.0;
    assert!(
        (0.07..=0.13).contains(&v2),
        "v2 share {v2:.3}, want 0.10 ± 0.03: {report:?}"
    );
    eprintln!("90/10 split over 2000 requests: {report:?}");
    // Within v1, round robin keeps the two even.
    let (a, b) = (report.counts["v1-a"], report.counts["v1-b"]);
    assert!(a.abs_diff(b) <= 2, "{report:?}");

    // Back to no split: the whole service again.
    client
        .delete_service_attributes()
        .service_id(&svc)
        .attributes("WAYMARK_TRAFFIC_SPLIT")
        .send()
        .await
        .unwrap();
    grpc.until_served_by(30, &["v1-a", "v1-b", "v2-a"]);
    let report = grpc.send(300);
    assert_eq!(report.counts["v2-a"], 100, "round robin again: {report:?}");
    split("version:v1=0,v2=100").await;
    grpc.until_served_by(30, &["v2-a"]);
}

#[tokio::test]
async fn a_client_can_dial_a_subset_by_attributes() {
    let bin = xds_client_bin();
    let backends = Backends::start(&bin, &["v1-a", "v2-a", "v2-b"]);
    let (server, xds_port) = start_waymark();
    let client = server.client();
    let ns = http_namespace(&client, "mesh").await;
    let svc = custom_health_service(&client, &ns, "echo").await;
    for (name, version) in [("v1-a", "v1"), ("v2-a", "v2")] {
        register_backend(
            &client,
            &svc,
            name,
            backends.ports[name],
            &[("version", version)],
        )
        .await;
    }
    // Like DiscoverInstances with QueryParameters={version: v2}.
    let mut v2 = GrpcClient::start(&bin, xds_port, "echo.mesh/version=v2");
    v2.until_served_by(20, &["v2-a"]);
    // The subset follows the registry like the whole service.
    register_backend(
        &client,
        &svc,
        "v2-b",
        backends.ports["v2-b"],
        &[("version", "v2")],
    )
    .await;
    v2.until_served_by(20, &["v2-a", "v2-b"]);
    set_health(&client, &svc, "v2-a", CustomHealthStatus::Unhealthy).await;
    v2.until_served_by(20, &["v2-b"]);
    // The whole service is still there for everyone else.
    let mut all = GrpcClient::start(&bin, xds_port, "echo.mesh");
    all.until_served_by(20, &["v1-a", "v2-b"]);
}
