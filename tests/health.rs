//! Active health checks end to end: `waymark serve` (probing every 250 ms)
//! checks real HTTP, HTTPS and TCP servers on loopback that this test takes
//! down and brings back; the official AWS SDK for Rust reads the result
//! through `DiscoverInstances` with `HealthStatus=HEALTHY`, and `dig` reads
//! it from the DNS server. Every count of probes is taken on the server side
//! (requests answered, connections accepted) or from Waymark's `/metrics`.
//!
//! All of 127.0.0.0/8 is loopback on Linux, so instances get distinct
//! addresses (127.0.0.2, 127.0.0.3, …) and DNS answers tell them apart.

mod dns_support;
#[path = "api/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::error::ProvideErrorMetadata;
use aws_sdk_servicediscovery::types::*;
use harness::support::{Options, http_get};
use harness::{SdkClient, Server, http_namespace, private_namespace, register};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ----- servers under check -------------------------------------------------------

const UP: u8 = 0;
const FAILING: u8 = 1;
const SILENT: u8 = 2;

/// An HTTP server whose answer the test switches: 200, 503, or nothing at all
/// (accepts, reads the request and never answers). Counts what it answered.
struct HttpServer {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    async fn start(addr: &str, mode: u8) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(mode));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, o, f, h) = (mode.clone(), ok.clone(), failed.clone(), heads.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                let (m, o, f, h) = (m.clone(), o.clone(), f.clone(), h.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let response: &[u8] = match m.load(Ordering::SeqCst) {
                        UP => {
                            o.fetch_add(1, Ordering::SeqCst);
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        }
                        FAILING => {
                            f.fetch_add(1, Ordering::SeqCst);
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        }
                        _ => {
                            // Hold the connection open without a word.
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                    };
                    let _ = s.write_all(response).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Self {
            addr,
            mode,
            ok,
            failed,
            heads,
            task,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that counts accepted connections; stopping it closes the
/// port (connections are refused) until it starts again on the same address.
struct TcpServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TcpServer {
    async fn start(addr: &str) -> Self {
        let mut s = Self {
            addr: addr.parse().unwrap(),
            accepted: Arc::new(AtomicUsize::new(0)),
            task: None,
        };
        s.listen().await;
        s
    }

    async fn listen(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let accepted = self.accepted.clone();
        self.task = Some(tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        }));
    }

    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

// ----- Waymark and its clients ---------------------------------------------------

/// `waymark serve` probing every 250 ms (timeout 500 ms) with DNS on a known port.
fn waymark() -> Server {
    Server::start_with(Options {
        args: [
            "--probe-interval-seconds",
            "0.25",
            "--probe-timeout-seconds",
            "0.5",
        ]
        .map(String::from)
        .to_vec(),
        dns: true,
    })
}

fn record(t: RecordType) -> DnsRecord {
    DnsRecord::builder().r#type(t).ttl(5).build().unwrap()
}

fn check(kind: HealthCheckType, path: Option<&str>, threshold: i32) -> HealthCheckConfig {
    HealthCheckConfig::builder()
        .r#type(kind)
        .set_resource_path(path.map(str::to_string))
        .failure_threshold(threshold)
        .build()
        .unwrap()
}

/// A checked service with MULTIVALUE records of `records` in namespace `ns`.
async fn checked_service(
    client: &Client,
    ns: &str,
    name: &str,
    records: &[RecordType],
    hc: HealthCheckConfig,
) -> String {
    let mut dns = DnsConfig::builder().routing_policy(RoutingPolicy::Multivalue);
    for r in records {
        dns = dns.dns_records(record(r.clone()));
    }
    client
        .create_service()
        .name(name)
        .namespace_id(ns)
        .dns_config(dns.build().unwrap())
        .health_check_config(hc)
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string()
}

fn v4(addr: SocketAddr) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_INSTANCE_IPV4", addr.ip().to_string()),
        ("AWS_INSTANCE_PORT", addr.port().to_string()),
    ]
}

/// The ids `DiscoverInstances` returns with `HealthStatus=HEALTHY`.
async fn healthy(client: &Client, ns: &str, svc: &str) -> BTreeSet<String> {
    client
        .discover_instances()
        .namespace_name(ns)
        .service_name(svc)
        .health_status(HealthStatusFilter::Healthy)
        .send()
        .await
        .unwrap()
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect()
}

/// `GetInstancesHealthStatus` of one instance.
async fn status(client: &Client, svc: &str, id: &str) -> HealthStatus {
    client
        .get_instances_health_status()
        .service_id(svc)
        .instances(id)
        .send()
        .await
        .unwrap()
        .status()
        .unwrap()[id]
        .clone()
}

/// `dig` (blocking) off the async workers: the answer's data of `qtype`.
async fn dig(server: &Server, name: &str, qtype: &str) -> Vec<String> {
    let addr: SocketAddr = format!("127.0.0.1:{}", server.dns_port.unwrap())
        .parse()
        .unwrap();
    let (name, qtype) = (name.to_string(), qtype.to_string());
    tokio::task::spawn_blocking(move || {
        let out = dns_support::dig(addr, &[&name, &qtype]);
        assert_eq!(out.status, "NOERROR", "{}", out.raw);
        out.data(&qtype)
    })
    .await
    .unwrap()
}

/// The sum of a counter over the series whose labels contain `labels`.
fn metric(server: &Server, name: &str, labels: &[&str]) -> f64 {
    let (_, text) = http_get(server.metrics_port, "/metrics").unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn eventually<F: Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Watches one instance flip while a server-side counter of the results
/// that push it (failures or successes) grows: the flip must wait for
/// `threshold` of them, and must not wait much longer. Returns the count
/// at the moment the flip was seen.
async fn watch_flip(
    what: &str,
    threshold: usize,
    counted: impl Fn() -> usize,
    mut flipped: impl AsyncFnMut() -> bool,
) -> usize {
    let base = counted();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut most_before_flip = 0;
    loop {
        let before = counted() - base;
        let done = flipped().await;
        let after = counted() - base;
        if done {
            assert!(
                after >= threshold,
                "{what}: flipped after {after} results, threshold {threshold}"
            );
            assert!(
                most_before_flip + 1 >= threshold,
                "{what}: never seen unflipped at {} results",
                threshold - 1
            );
            return after;
        }
        // Seen unflipped: no more than `threshold` results were in (the
        // last may still be on its way into the registry).
        assert!(
            before <= threshold,
            "{what}: {before} results and no flip, threshold {threshold}"
        );
        most_before_flip = most_before_flip.max(before);
        assert!(Instant::now() < deadline, "{what}: no flip");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ----- tests ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_check_respects_the_threshold_both_ways_in_discover_instances_and_dns() {
    let flaky = HttpServer::start("127.0.0.2:0", UP).await;
    let steady = HttpServer::start("127.0.0.3:0", UP).await;
    let server = waymark();
    let client = server.client();
    let ns = private_namespace(&client, "health.test").await;
    let svc = checked_service(
        &client,
        &ns,
        "web",
        &[RecordType::A, RecordType::Srv],
        check(HealthCheckType::Http, Some("/healthz?deep=1"), 3),
    )
    .await;
    register(&client, &svc, "web-1", &v4(flaky.addr)).await;
    register(&client, &svc, "web-2", &v4(steady.addr)).await;

    // Both are probed (the first results apply at once) and healthy.
    eventually("first probes", || async {
        flaky.ok() > 0 && steady.ok() > 0
    })
    .await;
    let both: BTreeSet<String> = ["web-1", "web-2"].map(String::from).into();
    assert_eq!(healthy(&client, "health.test", "web").await, both);
    let head = flaky.heads.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("GET /healthz?deep=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("\r\nhost: {}\r\n", flaky.addr)),
        "Host is the instance's address and port: {head}"
    );
    assert_eq!(
        dig(&server, "web.health.test", "A").await,
        ["127.0.0.2", "127.0.0.3"]
    );

    // 503s: UNHEALTHY after the third, not before.
    flaky.set(FAILING);
    watch_flip(
        "HEALTHY -> UNHEALTHY",
        3,
        || flaky.failed(),
        async || {
            !healthy(&client, "health.test", "web")
                .await
                .contains("web-1")
        },
    )
    .await;
    assert_eq!(
        healthy(&client, "health.test", "web").await,
        ["web-2".to_string()].into()
    );
    assert_eq!(
        status(&client, &svc, "web-1").await,
        HealthStatus::Unhealthy
    );
    assert_eq!(dig(&server, "web.health.test", "A").await, ["127.0.0.3"]);
    let srv = dig(&server, "web.health.test", "SRV").await;
    assert_eq!(
        srv,
        [format!("1 1 {} web-2.web.health.test.", steady.addr.port())]
    );

    // Back to 200: HEALTHY after the third success, not before.
    flaky.set(UP);
    watch_flip(
        "UNHEALTHY -> HEALTHY",
        3,
        || flaky.ok(),
        async || {
            healthy(&client, "health.test", "web")
                .await
                .contains("web-1")
        },
    )
    .await;
    assert_eq!(healthy(&client, "health.test", "web").await, both);
    assert_eq!(
        dig(&server, "web.health.test", "A").await,
        ["127.0.0.2", "127.0.0.3"]
    );

    // The flips are counted.
    assert_eq!(
        metric(&server, "waymark_health_flips_total", &["to_unhealthy"]),
        1.0
    );
    assert_eq!(
        metric(&server, "waymark_health_flips_total", &["to_healthy"]),
        1.0
    );
    assert_eq!(
        metric(&server, "waymark_health_checked_instances", &[]),
        2.0
    );
    assert!(
        metric(
            &server,
            "waymark_health_probes_total",
            &["type=\"HTTP\"", "result=\"failure\""]
        ) >= 3.0
    );
    assert!(
        metric(
            &server,
            "waymark_health_probe_duration_seconds_count",
            &["type=\"HTTP\""]
        ) >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_accepts_and_never_answers_times_out() {
    let silent = HttpServer::start("127.0.0.4:0", SILENT).await;
    let steady = HttpServer::start("127.0.0.5:0", UP).await;
    let server = waymark();
    let client = server.client();
    let ns = http_namespace(&client, "timeouts").await;
    let svc = client
        .create_service()
        .name("slow")
        .namespace_id(&ns)
        .health_check_config(check(HealthCheckType::Http, None, 1))
        .send()
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    register(&client, &svc, "silent", &v4(silent.addr)).await;
    register(&client, &svc, "steady", &v4(steady.addr)).await;

    eventually("the silent instance to fail", || async {
        status(&client, &svc, "silent").await == HealthStatus::Unhealthy
    })
    .await;
    assert!(
        !silent.heads.lock().unwrap().is_empty(),
        "the request reached it"
    );
    assert!(
        metric(
            &server,
            "waymark_health_probes_total",
            &["type=\"HTTP\"", "result=\"timeout\""]
        ) >= 1.0
    );
    // A hanging instance does not hold up the others.
    let before = steady.ok();
    eventually("the steady instance to be probed on", || async {
        steady.ok() >= before + 3
    })
    .await;
    assert_eq!(
        healthy(&client, "timeouts", "slow").await,
        ["steady".to_string()].into()
    );

    // It starts answering: HEALTHY again.
    silent.set(UP);
    eventually("recovery", || async {
        status(&client, &svc, "silent").await == HealthStatus::Healthy
    })
    .await;
}

/// `openssl s_server -www` (an independent TLS stack) with a self-signed
/// certificate made by the `openssl` CLI.
struct TlsServer {
    child: Child,
}

impl TlsServer {
    fn start(dir: &std::path::Path, addr: SocketAddr) -> Self {
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the openssl CLI is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_check_accepts_a_self_signed_certificate() {
    let server = waymark();
    let client = server.client();
    let dir = server.dir.path();
    let status_ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not-the-instance.example"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl CLI is installed");
    assert!(status_ok.success());
    let port = harness::support::free_port();
    let addr: SocketAddr = format!("127.0.0.6:{port}").parse().unwrap();
    let tls = TlsServer::start(dir, addr);

    let ns = private_namespace(&client, "tls.test").await;
    let svc = checked_service(
        &client,
        &ns,
        "secure",
        &[RecordType::A],
        check(HealthCheckType::Https, Some("/"), 1),
    )
    .await;
    register(&client, &svc, "tls-1", &v4(addr)).await;

    eventually("a successful HTTPS probe", || async {
        metric(
            &server,
            "waymark_health_probes_total",
            &["type=\"HTTPS\"", "result=\"success\""],
        ) >= 2.0
    })
    .await;
    assert_eq!(status(&client, &svc, "tls-1").await, HealthStatus::Healthy);
    assert_eq!(
        metric(
            &server,
            "waymark_health_probes_total",
            &["type=\"HTTPS\"", "result=\"failure\""]
        ),
        0.0,
        "the self-signed certificate is accepted"
    );

    // Down: refused, UNHEALTHY; back up: HEALTHY.
    drop(tls);
    eventually("UNHEALTHY", || async {
        healthy(&client, "tls.test", "secure").await.is_empty()
    })
    .await;
    // DNS fails open with no healthy instance: the record is still served.
    assert_eq!(dig(&server, "secure.tls.test", "A").await, ["127.0.0.6"]);
    let _tls = TlsServer::start(dir, addr);
    eventually("HEALTHY again", || async {
        healthy(&client, "tls.test", "secure").await.len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_check_over_ipv6_loopback_goes_down_and_comes_back() {
    let mut flaky = TcpServer::start("[::1]:0").await;
    let steady = TcpServer::start("[::1]:0").await;
    let server = waymark();
    let client = server.client();
    let ns = private_namespace(&client, "v6.test").await;
    let svc = checked_service(
        &client,
        &ns,
        "db",
        &[RecordType::Aaaa, RecordType::Srv],
        check(HealthCheckType::Tcp, None, 2),
    )
    .await;
    for (id, s) in [("db-1", &flaky), ("db-2", &steady)] {
        let attrs = [
            ("AWS_INSTANCE_IPV6", "::1".to_string()),
            ("AWS_INSTANCE_PORT", s.addr.port().to_string()),
        ];
        register(&client, &svc, id, &attrs).await;
    }
    eventually("first probes", || async {
        flaky.accepted() > 0 && steady.accepted() > 0
    })
    .await;
    let srv = |port: u16, id: &str| format!("1 1 {port} {id}.db.v6.test.");
    let mut both = vec![
        srv(flaky.addr.port(), "db-1"),
        srv(steady.addr.port(), "db-2"),
    ];
    both.sort();
    assert_eq!(dig(&server, "db.v6.test", "SRV").await, both);
    assert!(
        dig(&server, "db.v6.test", "AAAA")
            .await
            .contains(&"::1".to_string())
    );

    // The port closes: refused connections, counted by Waymark. UNHEALTHY
    // after the second, not the first.
    flaky.stop().await;
    let failures = || {
        metric(
            &server,
            "waymark_health_probes_total",
            &["type=\"TCP\"", "result=\"failure\""],
        ) as usize
    };
    watch_flip("TCP down", 2, failures, async || {
        !healthy(&client, "v6.test", "db").await.contains("db-1")
    })
    .await;
    assert_eq!(
        dig(&server, "db.v6.test", "SRV").await,
        [srv(steady.addr.port(), "db-2")]
    );
    assert_eq!(dig(&server, "db.v6.test", "AAAA").await, ["::1"]);

    // It listens again: HEALTHY after two accepted connections.
    flaky.listen().await;
    let accepted = flaky.accepted.clone();
    watch_flip(
        "TCP back",
        2,
        move || accepted.load(Ordering::SeqCst),
        async || healthy(&client, "v6.test", "db").await.contains("db-1"),
    )
    .await;
    assert_eq!(dig(&server, "db.v6.test", "SRV").await, both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_health_checks_are_rejected_through_the_sdk() {
    let server = waymark();
    let client = server.client();
    let ns = private_namespace(&client, "bad-checks.test").await;
    let create = |name: &str, hc: HealthCheckConfig| {
        client
            .create_service()
            .name(name)
            .namespace_id(&ns)
            .dns_config(
                DnsConfig::builder()
                    .routing_policy(RoutingPolicy::Multivalue)
                    .dns_records(record(RecordType::A))
                    .build()
                    .unwrap(),
            )
            .health_check_config(hc)
            .send()
    };
    let cases = [
        (
            "ResourcePath without a leading slash",
            check(HealthCheckType::Http, Some("health"), 1),
            "ResourcePath",
        ),
        (
            "FailureThreshold 0",
            check(HealthCheckType::Http, Some("/"), 0),
            "FailureThreshold",
        ),
        (
            "FailureThreshold 11",
            check(HealthCheckType::Https, Some("/"), 11),
            "FailureThreshold",
        ),
    ];
    for (what, hc, field) in cases {
        let err = create("bad", hc).await.expect_err(what);
        let err = err.into_service_error();
        assert!(err.is_invalid_input(), "{what}: {err:?}");
        assert_eq!(err.code(), Some("InvalidInput"), "{what}");
        assert!(
            err.message().unwrap_or("").contains(field),
            "{what}: {err:?}"
        );
    }

    let cname = client
        .create_service()
        .name("alias")
        .namespace_id(&ns)
        .dns_config(
            DnsConfig::builder()
                .routing_policy(RoutingPolicy::Weighted)
                .dns_records(record(RecordType::Cname))
                .build()
                .unwrap(),
        )
        .health_check_config(check(HealthCheckType::Tcp, None, 1))
        .send()
        .await
        .expect_err("a health check on a CNAME service")
        .into_service_error();
    assert!(cname.is_invalid_input(), "{cname:?}");
    assert!(cname.message().unwrap().contains("CNAME"), "{cname:?}");

    // A checked service needs an address and a port on every instance.
    let svc = create("checked", check(HealthCheckType::Tcp, None, 1))
        .await
        .unwrap()
        .service()
        .unwrap()
        .id()
        .unwrap()
        .to_string();
    for (what, attrs, missing) in [
        (
            "no port",
            vec![("AWS_INSTANCE_IPV4", "192.0.2.1")],
            "AWS_INSTANCE_PORT",
        ),
        (
            "no address",
            vec![("AWS_INSTANCE_PORT", "80")],
            "AWS_INSTANCE_IPV4",
        ),
    ] {
        let mut req = client
            .register_instance()
            .service_id(&svc)
            .instance_id("i-1");
        for (k, v) in attrs {
            req = req.attributes(k, v);
        }
        let err = req.send().await.expect_err(what).into_service_error();
        assert!(err.is_invalid_input(), "{what}: {err:?}");
        assert!(err.message().unwrap().contains(missing), "{what}: {err:?}");
    }
    // The service has no instances, so nothing was probed.
    assert_eq!(
        metric(&server, "waymark_health_checked_instances", &[]),
        0.0
    );
}
