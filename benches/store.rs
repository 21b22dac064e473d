//! The shared store against the embedded one, side by side in one run:
//! registrations/s and DiscoverInstances/s of one `waymark serve` on its
//! embedded store and of three replicas on one etcd, and how long a write on
//! replica A takes to show on replica B.
//!
//!   cargo bench --bench store                 # 6,000 registrations, 64 connections
//!   cargo bench --bench store -- 12000 128    # registrations, connections
//!
//! etcd (built from its Go module by scripts/build-controlplane.sh) runs as
//! one member fsyncing every write (no `--unsafe-no-fsync`): what is measured
//! is durable. Phases:
//!
//! 0. etcd alone: one client, sequential puts (the latency floor of one
//!    durable write), and 64 concurrent puts (etcd batches their fsyncs).
//! 1. Registrations through the Cloud Map API (RegisterInstance, one per
//!    call, over keep-alive connections), spread over 12 services: into the
//!    embedded store, then round-robin into the three etcd replicas.
//! 2. DiscoverInstances of a 100-instance service with wrk (Debian), 10 s:
//!    the embedded server, then all three replicas at once.
//! 3. Visibility: 500 registrations on A, one at a time, while B is polled
//!    with DiscoverInstancesRevision on a keep-alive connection; the time
//!    from sending to A until B answers the new revision.
//!
//! Everything shares this machine's cores (2 on the development machine):
//! etcd, the replicas and the load generator compete for them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::etcd::Etcd;
use support::{Options, Server};

const SERVICES: usize = 12;

/// One keep-alive HTTP/1.1 connection to a Cloud Map API.
struct Api {
    sender: SendRequest<Full<Bytes>>,
}

impl Api {
    async fn connect(port: u16) -> Self {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    async fn call(&mut self, op: &str, body: &Value) -> (u16, Value) {
        self.sender.ready().await.unwrap();
        let req = hyper::Request::post("/")
            .header("host", "127.0.0.1")
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("Route53AutoNaming_v20170314.{op}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let resp = self.sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&mut self, op: &str, body: &Value) -> Value {
        let (status, v) = self.call(op, body).await;
        assert_eq!(status, 200, "{op}: {v}");
        v
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    )
}

/// A namespace `bench` with services `s0…`, and `inventory` with 100
/// instances for the read phase. Returns the service ids.
async fn prepare(port: u16) -> Vec<String> {
    let mut api = Api::connect(port).await;
    let op = api
        .ok("CreateHttpNamespace", &json!({"Name": "bench"}))
        .await;
    let op = api
        .ok("GetOperation", &json!({"OperationId": op["OperationId"]}))
        .await;
    let ns = op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = Vec::new();
    for s in 0..=SERVICES {
        let name = if s == SERVICES {
            "inventory".to_string()
        } else {
            format!("s{s}")
        };
        let v = api
            .ok("CreateService", &json!({"Name": name, "NamespaceId": ns}))
            .await;
        ids.push(v["Service"]["Id"].as_str().unwrap().to_string());
    }
    let inventory = ids.pop().unwrap();
    for i in 0..100 {
        api.ok(
            "RegisterInstance",
            &json!({"ServiceId": inventory, "InstanceId": format!("i-{i:03}"),
                    "Attributes": {"AWS_INSTANCE_IPV4": format!("10.0.0.{i}"), "AWS_INSTANCE_PORT": "8080",
                                   "environment": "prod", "version": "v1"}}),
        )
        .await;
    }
    ids
}

/// Registers `total` instances over `connections` keep-alive connections
/// spread over `ports`; returns (registrations/s, per-call latencies in ms).
async fn register_load(
    ports: &[u16],
    services: &[String],
    total: usize,
    connections: usize,
    tag: &str,
) -> (f64, Vec<f64>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // A bar at a terminal, plain lines otherwise (`waymark store copy`'s).
    let reporter = {
        let next = next.clone();
        tokio::spawn(async move {
            let mut progress = waymark::cli::Progress::new("registrations");
            loop {
                let n = next.load(Ordering::Relaxed).min(total);
                progress.at(n, total);
                if n >= total {
                    progress.finish();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let port = ports[c % ports.len()];
            let (next, services, tag) = (next.clone(), services.to_vec(), tag.to_string());
            tokio::spawn(async move {
                let mut api = Api::connect(port).await;
                let mut lat = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return lat;
                    }
                    let body = json!({
                        "ServiceId": services[n % services.len()],
                        "InstanceId": format!("{tag}-{n:06}"),
                        "Attributes": {"AWS_INSTANCE_IPV4": "10.9.0.1", "AWS_INSTANCE_PORT": "80"},
                    });
                    let t = Instant::now();
                    // A retryable refusal (503) is retried, as an SDK would.
                    loop {
                        let (status, v) = api.call("RegisterInstance", &body).await;
                        if status == 200 {
                            break;
                        }
                        assert_eq!(status, 503, "{v}");
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _ = reporter.await;
    (rate, all)
}

/// wrk against each port at once for `seconds`: total requests/s, and the
/// worst p99 (ms).
fn discover_load(ports: &[u16], seconds: u64, dir: &std::path::Path) -> (f64, f64) {
    let script = dir.join("discover.lua");
    std::fs::write(
        &script,
        r#"wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-amz-json-1.1"
wrk.headers["X-Amz-Target"] = "Route53AutoNaming_v20170314.DiscoverInstances"
wrk.body = '{"NamespaceName":"bench","ServiceName":"inventory","QueryParameters":{"environment":"prod"}}'
function done(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read))
end
"#,
    )
    .unwrap();
    let handles: Vec<_> = ports
        .iter()
        .map(|&p| {
            let script = script.clone();
            std::thread::spawn(move || {
                let out = Command::new("wrk")
                    .args(["-t1", "-c32", &format!("-d{seconds}s"), "-s"])
                    .arg(&script)
                    .arg(format!("http://127.0.0.1:{p}/"))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let line = text
                    .lines()
                    .find(|l| l.starts_with("RESULT"))
                    .unwrap_or("RESULT 0 0 1")
                    .to_string();
                let f: Vec<f64> = line
                    .split_whitespace()
                    .skip(1)
                    .map(|x| x.parse().unwrap())
                    .collect();
                assert_eq!(f[2], 0.0, "wrk saw errors: {text}");
                (f[0], f[1])
            })
        })
        .collect();
    let mut rps = 0.0;
    let mut p99: f64 = 0.0;
    for h in handles {
        let (r, p) = h.join().unwrap();
        rps += r;
        p99 = p99.max(p);
    }
    (rps, p99)
}

/// 500 registrations on `a`, each followed by polling `b` until it answers
/// the new revision: latencies (ms) from sending to A until B shows it.
async fn visibility(a: u16, b: u16, service: &str, rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let mut on_a = Api::connect(a).await;
    let mut on_b = Api::connect(b).await;
    let query = json!({"NamespaceName": "bench", "ServiceName": "inventory"});
    let revision = |v: &Value| v["InstancesRevision"].as_i64().unwrap_or(0);
    let mut ack = Vec::new();
    let mut seen = Vec::new();
    for n in 0..rounds {
        let before = revision(&on_b.ok("DiscoverInstancesRevision", &query).await);
        let t = Instant::now();
        on_a.ok(
            "RegisterInstance",
            &json!({"ServiceId": service, "InstanceId": format!("vis-{n:04}"),
                    "Attributes": {"AWS_INSTANCE_IPV4": "10.8.0.1"}}),
        )
        .await;
        ack.push(t.elapsed().as_secs_f64() * 1e3);
        loop {
            if revision(&on_b.ok("DiscoverInstancesRevision", &query).await) > before {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "B never saw the write"
            );
        }
        seen.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (ack, seen)
}

/// etcd on its own: sequential durable puts, then 64 concurrent ones.
async fn etcd_floor(etcd: &Etcd) -> (Vec<f64>, f64) {
    let client = etcd.client().await;
    let mut c = client.clone();
    let mut lat = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        c.put(format!("/floor/seq-{i}"), vec![b'x'; 300], None)
            .await
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total = 6000;
    let started = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let mut c = client.clone();
            async move {
                c.put(format!("/floor/par-{i}"), vec![b'x'; 300], None)
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    (lat, total as f64 / started.elapsed().as_secs_f64())
}

/// Commits, writes and re-planned writes over `servers` since `before`,
/// read from their metrics: "mean batch N writes (C commits, R planned again)".
fn batching(servers: &[&Server], before: [f64; 3]) -> ([f64; 3], String) {
    let sum = |name: &str| -> f64 { servers.iter().filter_map(|s| s.metric(name)).sum() };
    let now = [
        sum("waymark_registry_commits_total"),
        sum("waymark_registry_writes_total"),
        sum("waymark_registry_writes_replanned_total"),
    ];
    let [c, w, r] = [0, 1, 2].map(|i| now[i] - before[i]);
    (
        now,
        format!(
            "mean batch {:.1} writes ({c:.0} commits, {r:.0} planned again)",
            w / c.max(1.0)
        ),
    )
}

fn replica(url: &str) -> Server {
    Server::start_with(Options {
        args: vec!["--store".into(), url.into(), "--log".into(), "warn".into()],
        ..Options::default()
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(6000);
    let connections = args.get(1).copied().unwrap_or(64);
    assert!(
        Command::new("wrk").arg("--version").output().is_ok(),
        "wrk is needed (Debian package wrk)"
    );
    let scratch = tempfile::tempdir().unwrap();
    println!(
        "store bench: {total} registrations over {connections} connections, {SERVICES} services"
    );

    // 0. etcd alone.
    let etcd = Etcd::cluster_with(1, true);
    let (seq, par) = etcd_floor(&etcd).await;
    println!(
        "etcd alone (1 member, fsync): sequential put {}; 64 concurrent puts {par:.0}/s",
        summary(seq)
    );

    // 1. Registrations.
    let embedded = Server::start();
    let services = prepare(embedded.api_port).await;
    let (e_rps, e_lat) =
        register_load(&[embedded.api_port], &services, total, connections, "e").await;
    let (_, e_batch) = batching(&[&embedded], [0.0; 3]);
    println!(
        "embedded, 1 replica: {e_rps:.0} registrations/s, {}; {e_batch}",
        summary(e_lat)
    );

    let replicas: Vec<Server> = (0..3).map(|_| replica(&etcd.url())).collect();
    let ports: Vec<u16> = replicas.iter().map(|r| r.api_port).collect();
    let shared_services = prepare(ports[0]).await;
    let all: Vec<&Server> = replicas.iter().collect();
    let (start, _) = batching(&all, [0.0; 3]);
    let (s_rps, s_lat) = register_load(&ports, &shared_services, total, connections, "s").await;
    let conflicts: f64 = replicas
        .iter()
        .filter_map(|r| r.metric("waymark_store_conflicts_total"))
        .sum();
    let through_watch: f64 = replicas
        .iter()
        .filter_map(|r| r.metric("waymark_store_writes_through_watch_total"))
        .sum();
    let (after, s_batch) = batching(&all, start);
    println!(
        "etcd, 3 replicas: {s_rps:.0} registrations/s, {} ({conflicts:.0} etcd transactions refused, \
         {through_watch:.0} applied through the watch); {s_batch}",
        summary(s_lat)
    );
    let (one_rps, one_lat) =
        register_load(&ports[..1], &shared_services, total / 2, connections, "o").await;
    let (_, one_batch) = batching(&all, after);
    println!(
        "etcd, writes to 1 of the 3 replicas: {one_rps:.0} registrations/s, {}; {one_batch}",
        summary(one_lat)
    );

    // 2. Reads.
    let (e_read, e_p99) = discover_load(&[embedded.api_port], 10, scratch.path());
    println!("DiscoverInstances (100 instances), embedded: {e_read:.0} req/s, p99 {e_p99:.2} ms");
    let (s_read, s_p99) = discover_load(&ports, 10, scratch.path());
    println!(
        "DiscoverInstances (100 instances), 3 etcd replicas at once: {s_read:.0} req/s, worst p99 {s_p99:.2} ms"
    );

    // 3. Visibility A -> B.
    let inventory = {
        let mut api = Api::connect(ports[0]).await;
        let v = api.ok("ListServices", &json!({})).await;
        v["Services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Name"] == "inventory")
            .unwrap()["Id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ack, seen) = visibility(ports[0], ports[1], &inventory, 500).await;
    let after_ack: Vec<f64> = ack
        .iter()
        .zip(&seen)
        .map(|(a, s)| (s - a).max(0.0))
        .collect();
    println!("write on A acknowledged: {}", summary(ack));
    println!("write on A visible on B (from sending): {}", summary(seen));
    println!(
        "visible on B after A's acknowledgement: {}",
        summary(after_ack)
    );
}
