//! Active health checks at scale: thousands of HTTP instances probed by a
//! release `waymark serve`, its CPU and memory while probing, and how long a
//! dead instance keeps being handed out.
//!
//!   cargo bench --bench health                      # 5,000 instances every 10 s, 3 trials
//!   cargo bench --bench health -- 2000 5 2          # instances, interval (s), trials
//!   WAYMARK_BIN=/path/to/waymark cargo bench --bench health   # another binary
//!
//! All of 127.0.0.0/8 is loopback on Linux, so one HTTP server bound to
//! 0.0.0.0:PORT (in this process) answers for every instance, each at its own
//! 127.x.y.z address. Phases:
//!
//! 0. Baseline: a `waymark serve` with the same instances and no checks,
//!    its CPU and RSS over three intervals.
//! 1. Register the instances through the Cloud Map API (services of 1,000,
//!    HTTP checks, FailureThreshold 3, A records) in a fresh `waymark serve`,
//!    let the first probes and the spreading settle for two intervals.
//! 2. Measure Waymark's CPU (utime + stime from /proc/PID/stat) and RSS over
//!    three intervals of steady probing, and the probe rate the server saw.
//! 3. Detection: two more services, FailureThreshold 1 and 3, each with a
//!    victim on its own listener and a healthy buddy. Close both victims'
//!    listeners at once and time until each leaves `DiscoverInstances`
//!    (HealthStatus=HEALTHY) and the DNS A answer (both polled every 5 ms);
//!    reopen them and time the recovery. Repeated `trials` times.

#[path = "results.rs"]
mod results;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use hickory_server::proto::op::{Message, Query};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_waymark");
const ZONE: &str = "health.bench";
const PER_SERVICE: usize = 1000;

fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn proc_status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system, seconds) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0 // USER_HZ is 100 on Linux
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
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
    let v: Value = serde_json::from_str(body).unwrap();
    assert!(
        head.split_whitespace().nth(1) == Some("200"),
        "{op}: {head}\n{v}"
    );
    v
}

async fn metrics_text(port: u16) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The sum of the samples of `name` whose labels contain every `labels` item.
async fn metric(port: u16, name: &str, labels: &[&str]) -> f64 {
    metrics_text(port)
        .await
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
                && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The instance ids `DiscoverInstances` returns with HealthStatus=HEALTHY.
async fn healthy(api: u16, service: &str) -> Vec<String> {
    let v = post(
        api,
        "DiscoverInstances",
        &json!({"NamespaceName": ZONE, "ServiceName": service, "HealthStatus": "HEALTHY"}),
    )
    .await;
    v["Instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["InstanceId"].as_str().unwrap().to_string())
        .collect()
}

/// The IPv4 addresses of one A query over UDP.
async fn dns_a(server: SocketAddr, name: &Name) -> Vec<Ipv4Addr> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), RecordType::A));
    let id = query.metadata.id;
    sock.send(&query.to_vec().unwrap()).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf))
            .await
            .expect("a DNS answer")
            .unwrap();
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if resp.metadata.id != id {
            continue;
        }
        return resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
    }
}

/// The address of bulk instance `i`: 127.10.0.1, 127.10.0.2, …
fn bulk_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        10 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

/// An HTTP server answering 200 to every request, counting them.
async fn serve_ok(listener: TcpListener, count: Arc<AtomicU64>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let count = count.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(256);
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            count.fetch_add(1, Ordering::Relaxed);
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        });
    }
}

/// A victim: its own listener, closed and reopened on demand.
struct Victim {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Victim {
    async fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        self.task = Some(tokio::spawn(serve_ok(listener, Arc::default())));
    }

    async fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

struct Waymark {
    child: Child,
    api: u16,
    metrics: u16,
    dns: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Waymark {
    async fn start(interval: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (api, metrics, dns) = (free_port(), free_port(), free_port());
        let dns: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
        // WAYMARK_BIN overrides the binary (a copy, when other checkouts share
        // the target directory and may rebuild it mid-run).
        let bin = std::env::var("WAYMARK_BIN").unwrap_or_else(|_| BIN.to_string());
        let child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--dns-addr", &dns.to_string()])
            .args(["--probe-interval-seconds", &interval.to_string()])
            .args(["--log", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let w = Self {
            child,
            api,
            metrics,
            dns,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", metrics)).await {
                let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.split_whitespace().nth(1) == Some("200") {
                    return w;
                }
            }
            assert!(Instant::now() < deadline, "waymark serve did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Waymark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A MULTIVALUE A service; with `threshold`, an HTTP check of `/health`.
async fn create_service(w: &Waymark, ns: &str, name: &str, threshold: Option<u32>) -> String {
    let mut body = json!({
        "Name": name, "NamespaceId": ns,
        "DnsConfig": {"RoutingPolicy": "MULTIVALUE", "DnsRecords": [{"Type": "A", "TTL": 5}]},
    });
    if let Some(t) = threshold {
        body["HealthCheckConfig"] =
            json!({"Type": "HTTP", "ResourcePath": "/health", "FailureThreshold": t});
    }
    let v = post(w.api, "CreateService", &body).await;
    v["Service"]["Id"].as_str().unwrap().to_string()
}

async fn namespace(w: &Waymark) -> String {
    let op = post(
        w.api,
        "CreatePrivateDnsNamespace",
        &json!({"Name": ZONE, "Vpc": "vpc-bench"}),
    )
    .await;
    let op = post(
        w.api,
        "GetOperation",
        &json!({"OperationId": op["OperationId"]}),
    )
    .await;
    op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Registers `instances` instances (services of 1,000) at 127.x.y.z:`port`.
async fn load(w: &Waymark, ns: &str, instances: usize, port: u16, threshold: Option<u32>) {
    let mut services = Vec::new();
    for s in 0..instances.div_ceil(PER_SERVICE) {
        services.push(create_service(w, ns, &format!("bulk-{s}"), threshold).await);
    }
    let progress = std::sync::Mutex::new(waymark::cli::Progress::new("registering instances"));
    let done = AtomicU64::new(0);
    stream::iter(0..instances)
        .for_each_concurrent(16, |i| {
            let svc = services[i / PER_SERVICE].clone();
            let addr = SocketAddr::new(bulk_ip(i).into(), port);
            let (progress, done) = (&progress, &done);
            async move {
                register(w, &svc, &format!("i-{i}"), addr).await;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if let Ok(mut p) = progress.lock() {
                    p.at(n as usize, instances);
                }
            }
        })
        .await;
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
}

/// CPU, memory and probes over a window.
struct Steady {
    secs: f64,
    cpu: f64,
    rss: u64,
    rss_peak: u64,
    probes: u64,
}

async fn steady(w: &Waymark, window: Duration, served: &AtomicU64) -> Steady {
    let pid = w.pid();
    let (cpu0, served0, t0) = (
        cpu_seconds(pid),
        served.load(Ordering::Relaxed),
        Instant::now(),
    );
    let mut rss_peak = 0;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_peak = rss_peak.max(proc_status(pid, "VmRSS:"));
    }
    Steady {
        secs: t0.elapsed().as_secs_f64(),
        cpu: cpu_seconds(pid) - cpu0,
        rss: proc_status(pid, "VmRSS:"),
        rss_peak,
        probes: served.load(Ordering::Relaxed) - served0,
    }
}

async fn register(w: &Waymark, svc: &str, id: &str, addr: SocketAddr) {
    post(
        w.api,
        "RegisterInstance",
        &json!({"ServiceId": svc, "InstanceId": id, "Attributes": {
            "AWS_INSTANCE_IPV4": addr.ip().to_string(),
            "AWS_INSTANCE_PORT": addr.port().to_string(),
        }}),
    )
    .await;
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
    let instances = arg(0, 5000) as usize;
    let interval = arg(1, 10);
    let trials = arg(2, 3) as usize;

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    println!(
        "health bench: {instances} HTTP instances, interval {interval} s, {trials} trials; {cpus} CPUs ({model})"
    );

    // The shared instance server, on every loopback address.
    let port = {
        let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let served = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve_ok(l, served.clone()));
        (port, served)
    };
    let (port, served) = port;

    let window = Duration::from_secs(3 * interval);

    // 0. Baseline: the same instances, no health checks.
    {
        let w = Waymark::start(interval).await;
        let rss_empty = proc_status(w.pid(), "VmRSS:");
        let ns = namespace(&w).await;
        load(&w, &ns, instances, port, None).await;
        tokio::time::sleep(Duration::from_secs(2 * interval)).await;
        let b = steady(&w, window, &served).await;
        println!(
            "baseline, no checks, over {:.0} s: CPU {:.2} % of one core, RSS {:.1} MiB \
             ({:.1} MiB before any instance), {} probes",
            b.secs,
            100.0 * b.cpu / b.secs,
            mib(b.rss),
            mib(rss_empty),
            b.probes
        );
    }

    let w = Waymark::start(interval).await;
    let pid = w.pid();
    let ns = namespace(&w).await;

    // 1. Register.
    let started = Instant::now();
    let served_before = served.load(Ordering::Relaxed);
    load(&w, &ns, instances, port, Some(3)).await;
    println!(
        "registered {instances} checked instances in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while ((served.load(Ordering::Relaxed) - served_before) as usize) < instances {
        assert!(Instant::now() < deadline, "first probes did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "every instance probed once {:.1} s after the first registration",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2 * interval)).await;

    // 2. Steady probing.
    let (dur_sum0, dur_n0) = (
        metric(w.metrics, "waymark_health_probe_duration_seconds_sum", &[]).await,
        metric(
            w.metrics,
            "waymark_health_probe_duration_seconds_count",
            &[],
        )
        .await,
    );
    let st = steady(&w, window, &served).await;
    let (dur_sum, dur_n) = (
        metric(w.metrics, "waymark_health_probe_duration_seconds_sum", &[]).await - dur_sum0,
        metric(
            w.metrics,
            "waymark_health_probe_duration_seconds_count",
            &[],
        )
        .await
            - dur_n0,
    );
    let failures = metric(
        w.metrics,
        "waymark_health_probes_total",
        &["result=\"failure\""],
    )
    .await
        + metric(
            w.metrics,
            "waymark_health_probes_total",
            &["result=\"timeout\""],
        )
        .await;
    let checked = metric(w.metrics, "waymark_health_checked_instances", &[]).await;
    println!(
        "probing over {:.0} s: {:.0} probes/s (expected {:.0}), CPU {:.2} % of one core \
         ({:.1} µs per probe), RSS {:.1} MiB (peak {:.1} MiB), mean probe latency {:.2} ms, \
         {checked} checked, {failures} failed probes; load average {}",
        st.secs,
        st.probes as f64 / st.secs,
        instances as f64 / interval as f64,
        100.0 * st.cpu / st.secs,
        1e6 * st.cpu / st.probes.max(1) as f64,
        mib(st.rss),
        mib(st.rss_peak.max(proc_status(pid, "VmHWM:"))),
        1e3 * dur_sum / dur_n.max(1.0),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim(),
    );

    // 3. Detection.
    let mut victims = Vec::new();
    for (t, threshold) in [(0u8, 1u32), (1, 3)] {
        let name = format!("victim-t{threshold}");
        let svc = create_service(&w, &ns, &name, Some(threshold)).await;
        let mut v = Victim {
            addr: SocketAddr::new(Ipv4Addr::new(127, 0, 0, 250 + t).into(), 0),
            task: None,
        };
        v.up().await;
        register(&w, &svc, "victim", v.addr).await;
        let buddy = SocketAddr::new(Ipv4Addr::new(127, 0, 0, 240 + t).into(), port);
        register(&w, &svc, "buddy", buddy).await;
        victims.push((threshold, name, v));
    }
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); victims.len()];
    for trial in 0..trials {
        // Both victims healthy and answered before each trial.
        for (_, name, v) in &victims {
            let fqdn = Name::from_ascii(format!("{name}.{ZONE}.")).unwrap();
            let ip = match v.addr.ip() {
                std::net::IpAddr::V4(ip) => ip,
                _ => unreachable!(),
            };
            let deadline = Instant::now() + Duration::from_secs(10 * interval);
            while !(healthy(w.api, name).await.contains(&"victim".to_string())
                && dns_a(w.dns, &fqdn).await.contains(&ip))
            {
                assert!(Instant::now() < deadline, "victim not healthy before trial");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Desynchronise the trial from the probe phase.
        let jitter = Duration::from_millis(rand::random_range(0..interval * 1000));
        tokio::time::sleep(jitter).await;
        let down = Instant::now();
        for (_, _, v) in &mut victims {
            v.down().await;
        }
        let polls = victims.iter().enumerate().map(|(i, (_, name, v))| {
            let fqdn = Name::from_ascii(format!("{name}.{ZONE}.")).unwrap();
            let ip = match v.addr.ip() {
                std::net::IpAddr::V4(ip) => ip,
                _ => unreachable!(),
            };
            let (w, name) = (&w, name.clone());
            async move {
                let (mut api_at, mut dns_at) = (None, None);
                while api_at.is_none() || dns_at.is_none() {
                    if api_at.is_none()
                        && !healthy(w.api, &name).await.contains(&"victim".to_string())
                    {
                        api_at = Some(down.elapsed().as_secs_f64());
                    }
                    if dns_at.is_none() && !dns_a(w.dns, &fqdn).await.contains(&ip) {
                        dns_at = Some(down.elapsed().as_secs_f64());
                    }
                    assert!(
                        down.elapsed() < Duration::from_secs(20 * interval),
                        "victim never left"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (i, api_at.unwrap(), dns_at.unwrap())
            }
        });
        let left = futures::future::join_all(polls).await;
        let up = Instant::now();
        for (_, _, v) in &mut victims {
            v.up().await;
        }
        let recov = victims.iter().enumerate().map(|(i, (_, name, _))| {
            let (w, name) = (&w, name.clone());
            async move {
                while !healthy(w.api, &name).await.contains(&"victim".to_string()) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (i, up.elapsed().as_secs_f64())
            }
        });
        let back = futures::future::join_all(recov).await;
        for ((i, api, dns), (_, rec)) in left.into_iter().zip(back) {
            println!(
                "trial {}: FailureThreshold {}: out of DiscoverInstances after {api:.2} s, out of DNS after {dns:.2} s, healthy again after {rec:.2} s",
                trial + 1,
                victims[i].0
            );
            results[i].push((api, dns, rec));
        }
    }
    let mut raw = Vec::new();
    for (i, (threshold, _, _)) in victims.iter().enumerate() {
        raw.push(serde_json::json!({
            "failure_threshold": threshold,
            "bound_seconds": interval as f64 * *threshold as f64,
            "out_of_discover_seconds": results[i].iter().map(|r| r.0).collect::<Vec<_>>(),
            "out_of_dns_seconds": results[i].iter().map(|r| r.1).collect::<Vec<_>>(),
            "recovery_seconds": results[i].iter().map(|r| r.2).collect::<Vec<_>>(),
        }));
        let mut api: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let mut dns: Vec<f64> = results[i].iter().map(|r| r.1).collect();
        let mut rec: Vec<f64> = results[i].iter().map(|r| r.2).collect();
        for v in [&mut api, &mut dns, &mut rec] {
            v.sort_by(f64::total_cmp);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let bound = interval as f64 * *threshold as f64;
        println!(
            "FailureThreshold {threshold}: down -> out of DiscoverInstances mean {:.2} s (min {:.2}, max {:.2}); \
             out of DNS mean {:.2} s (max {:.2}); recovery mean {:.2} s; bound {bound:.0} s (threshold x interval)",
            mean(&api),
            percentile(&api, 0.0),
            percentile(&api, 1.0),
            mean(&dns),
            percentile(&dns, 1.0),
            mean(&rec),
        );
        let lag: Vec<f64> = results[i].iter().map(|r| (r.1 - r.0).abs()).collect();
        println!(
            "  DNS vs DiscoverInstances difference: max {:.3} s (same registry commit; the poll period is 5 ms)",
            lag.iter().cloned().fold(0.0, f64::max)
        );
    }
    println!(
        "Waymark at the end: RSS {:.1} MiB, {:.1} s CPU in total",
        mib(proc_status(pid, "VmRSS:")),
        cpu_seconds(pid)
    );
    results::write(
        "health",
        serde_json::json!({"instances": instances, "interval_seconds": interval, "thresholds": raw}),
    );
}
