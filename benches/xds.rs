//! xDS push latency and memory: `waymark serve --xds-addr` with one service
//! of N endpoints (default 1,000) and C subscribed ADS clients (default 100,
//! each on its own HTTP/2 connection, like C proxies), then K health flips
//! through the Cloud Map API (`UpdateInstanceCustomHealthStatus`).
//!
//! Reported: the time from sending the API call to each client receiving the
//! EDS response that carries the change (p50/p99 over every client and flip,
//! and of the slowest client per flip), and the server's resident memory per
//! subscribed client. The clients ACK every response, as Envoy and gRPC do.
//! A client's next request is routed on the new endpoints from that moment,
//! so this is the registry change → first request reflecting it, without a
//! data-plane hop.
//!
//!     cargo bench --bench xds [-- ENDPOINTS CLIENTS FLIPS]

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_waymark");
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn post(api_port: u16, op: &str, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", api_port))
        .await
        .unwrap();
    let req = format!(
        "POST / HTTP/1.0\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.split_whitespace().nth(1) == Some("200"),
        "{op}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or(Value::Null)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One subscribed client: sends every EDS response's arrival time to `seen`
/// and ACKs it.
async fn client(
    id: usize,
    xds_port: u16,
    name: String,
    seen: mpsc::UnboundedSender<(usize, Instant, usize)>,
) {
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds_port}"))
        .await
        .unwrap()
        .max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    let request = |version: &str, nonce: &str| DiscoveryRequest {
        type_url: EDS.into(),
        resource_names: vec![name.clone()],
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    tx.send(request("", "")).await.unwrap();
    let mut responses = ads
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(r)) = responses.message().await {
        let r: DiscoveryResponse = r;
        let at = Instant::now();
        let bytes = r.resources.iter().map(|a| a.value.len()).sum();
        if seen.send((id, at, bytes)).is_err() {
            return;
        }
        if tx.send(request(&r.version_info, &r.nonce)).await.is_err() {
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (endpoints, clients, flips) = (arg(0, 1000), arg(1, 100), arg(2, 100));
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "xds bench: 1 service of {endpoints} endpoints, {clients} ADS clients, {flips} health flips; {cpus} CPUs"
    );

    let dir = tempfile::tempdir().unwrap();
    let (api, metrics, xds) = (free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--dns-addr", "127.0.0.1:0"])
        .args(["--xds-addr", &format!("127.0.0.1:{xds}")])
        .args(["--log", "warn"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", xds))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "waymark did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let op = post(api, "CreateHttpNamespace", &json!({"Name": "bench"})).await;
    let op = post(
        api,
        "GetOperation",
        &json!({"OperationId": op["OperationId"]}),
    )
    .await;
    let ns = op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let svc = post(
        api,
        "CreateService",
        &json!({"Name": "echo", "NamespaceId": ns, "HealthCheckCustomConfig": {}}),
    )
    .await;
    let svc = svc["Service"]["Id"].as_str().unwrap().to_string();
    for i in 0..endpoints {
        post(
            api,
            "RegisterInstance",
            &json!({"ServiceId": svc, "InstanceId": format!("i-{i}"), "Attributes": {
                "AWS_INSTANCE_IPV4": format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                "AWS_INSTANCE_PORT": "8080",
                "AVAILABILITY_ZONE": format!("zone-{}", i % 3),
                "version": "v1",
            }}),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss(pid);

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let started = Instant::now();
    for id in 0..clients {
        tokio::spawn(client(id, xds, "echo.bench".into(), seen_tx.clone()));
    }
    let mut size = 0;
    for _ in 0..clients {
        let (_, _, bytes) = seen.recv().await.unwrap();
        size = bytes;
    }
    println!(
        "{clients} clients subscribed in {:.0} ms; one ClusterLoadAssignment is {:.1} KiB",
        started.elapsed().as_secs_f64() * 1e3,
        size as f64 / 1024.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss(pid);

    let mut all = Vec::with_capacity(flips * clients);
    let mut slowest = Vec::with_capacity(flips);
    for k in 0..flips {
        let status = if k % 2 == 0 { "UNHEALTHY" } else { "HEALTHY" };
        let t0 = Instant::now();
        post(
            api,
            "UpdateInstanceCustomHealthStatus",
            &json!({"ServiceId": svc, "InstanceId": format!("i-{}", k / 2 % endpoints), "Status": status}),
        )
        .await;
        let mut got = vec![false; clients];
        let mut last = 0.0f64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for _ in 0..clients {
            let (id, at, _) = tokio::time::timeout_at(deadline, seen.recv())
                .await
                .expect("a client did not see the change in 30 s")
                .unwrap();
            assert!(!got[id], "client {id} got two responses for one change");
            got[id] = true;
            let ms = at.duration_since(t0).as_secs_f64() * 1e3;
            last = last.max(ms);
            all.push(ms);
        }
        slowest.push(last);
    }
    all.sort_by(f64::total_cmp);
    slowest.sort_by(f64::total_cmp);
    println!(
        "registry change -> EDS response at every client: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({} samples); slowest client per change: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1],
        all.len(),
        percentile(&slowest, 0.5),
        percentile(&slowest, 0.99),
    );
    println!(
        "server RSS: {:.1} MiB before clients, {:.1} MiB with {clients}: {:.1} KiB per subscribed client",
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / clients as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
}
