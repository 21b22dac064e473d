//! Pod readiness → registry visibility, against a real kube-apiserver, with
//! CoreDNS's `kubernetes` plugin measured side by side on the same pods.
//!
//!   cargo bench --bench controller                 # 1,000 then 10,000 pods
//!   cargo bench --bench controller -- 2000         # chosen pod counts
//!   cargo bench --bench controller -- --waymark-only 10000
//!                                                  # Waymark alone: no CoreDNS, and
//!                                                  # only the minimal controller manager
//!
//! Starts the loopback control plane (`scripts/controlplane.sh
//! --with-controller-manager`: the full kube-controller-manager, so the
//! EndpointSlice controller runs), a release `waymark run` and CoreDNS (built
//! from its Go module by `scripts/build-coredns.sh`; Corefile
//! `kubernetes cluster.local { kubeconfig … }`, no cache). Per 1,000 pods there
//! is one ServiceDiscovery and one headless Kubernetes Service with the same
//! selector. Creates the pods (bound to a Node object — the EndpointSlice
//! controller skips pods whose node does not exist — with IPs and readiness set
//! through the status subresource: there is no kubelet), then flips readiness
//! at 200 changes/s for 10 s. Each change is timed from the API server
//! acknowledging the status patch to
//!  - Waymark: `GetInstancesHealthStatus` on its API showing it, polled every
//!    millisecond by one poller for all pending flips (one request per
//!    service and 10 pods, over a keep-alive connection; see
//!    [`poll_waymark`]), and
//!  - CoreDNS: the pod's endpoint name in its headless Service
//!    (`10-0-3-7.<svc>.bench.svc.cluster.local`, CoreDNS's name for an
//!    endpoint without a hostname) answering the pod's A record (Ready) or not
//!    answering it (not Ready: CoreDNS drops not-ready endpoints), over UDP, on
//!    a runtime of its own. The bench also watches the EndpointSlices itself,
//!    which splits CoreDNS's figure into "patch → EndpointSlice written" and
//!    "EndpointSlice → CoreDNS answer" and paces the DNS poller (see
//!    [`coredns_latency`]) so its load stays bounded when CoreDNS is seconds
//!    behind.
//!
//! The bench also watches the pods itself, which splits Waymark's figure into
//! "patch → pod watch event" (the API server) and "pod watch event → visible"
//! (Waymark), as the EndpointSlice watch splits CoreDNS's.
//!
//! Also prints Waymark's own event → registry histogram for the flips, the CPU
//! time each process used during them (and what other processes on the
//! machine used), per-second medians, and memory per pod: the growth of each
//! process's RSS while the pods were created (Waymark registers not-Ready pods
//! as UNHEALTHY; CoreDNS keeps only Ready endpoints), and again once every pod
//! is Ready.
//!
//! Raw results (every flip's latency, memory per pod): `bench-results/controller.json`
//! (see `results.rs`), for `scripts/plot-benches.sh`.
//!
//! CoreDNS is skipped (with the reason printed) only when its binary cannot be
//! built or lacks the `kubernetes` plugin.

#[path = "results.rs"]
mod results;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use hickory_server::proto::op::{Message, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_waymark");
const NS: &str = "bench";
/// The Node every pod is bound to: the EndpointSlice controller skips a pod
/// whose `spec.nodeName` names no existing Node.
const NODE: &str = "bench-node";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first number of a field of `/proc/PID/status` (0 when unreadable).
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_bytes(pid: u32) -> u64 {
    status_field(pid, "VmRSS") * 1024
}

/// The number of threads of a process (each holds a stack and, with glibc,
/// possibly a malloc arena of its own: part of its RSS).
fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
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

/// Busy CPU time (everything but idle and iowait) of the whole machine, in
/// seconds, from /proc/stat.
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    total.saturating_sub(idle) as f64 / 100.0
}

/// Retries a setup call (not a measured one) that failed for a transient
/// reason, such as a loaded API server dropping a connection; "already
/// exists" counts as done.
async fn retry<T, Fut>(what: &str, mut call: impl FnMut() -> Fut)
where
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    for attempt in 1.. {
        match call().await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 409 => return,
            Err(e) if attempt < 10 => {
                eprintln!("{what}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One call to Waymark's API on a connection of its own.
async fn post(api_port: u16, op: &str, body: &str) -> Option<serde_json::Value> {
    ApiConn {
        port: api_port,
        stream: None,
    }
    .post(op, body)
    .await
}

/// A keep-alive HTTP/1.1 connection to Waymark's API (reopened on error).
struct ApiConn {
    port: u16,
    stream: Option<tokio::io::BufReader<tokio::net::TcpStream>>,
}

impl ApiConn {
    async fn post(&mut self, op: &str, body: &str) -> Option<serde_json::Value> {
        for _ in 0..2 {
            if self.stream.is_none() {
                let s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .ok()?;
                s.set_nodelay(true).ok()?;
                self.stream = Some(tokio::io::BufReader::new(s));
            }
            match Self::exchange(self.stream.as_mut()?, op, body).await {
                Some(v) => return Some(v),
                None => self.stream = None,
            }
        }
        None
    }

    async fn exchange(
        s: &mut tokio::io::BufReader<tokio::net::TcpStream>,
        op: &str,
        body: &str,
    ) -> Option<serde_json::Value> {
        use tokio::io::AsyncBufReadExt;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: waymark\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\n\
             Content-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.get_mut().write_all(req.as_bytes()).await.ok()?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().ok()?;
            }
        }
        let mut out = vec![0; length];
        s.read_exact(&mut out).await.ok()?;
        serde_json::from_slice(&out).ok()
    }
}

/// A readiness flip waiting to show in Waymark.
struct Pending {
    n: usize,
    service_id: String,
    name: String,
    want: &'static str,
    t0: Instant,
}

/// Times each pending flip until `GetInstancesHealthStatus` shows it: every
/// millisecond, one request per service and 10 pending pods (the API's
/// limit per request) over one keep-alive connection. The load is thus set
/// by how many flips are pending, not multiplied by a connection per flip
/// per poll, which on a saturated machine deepened the very delays it
/// measured. Returns (flip number, milliseconds) per flip seen within 30 s.
async fn poll_waymark(
    api_port: u16,
    pending: Arc<std::sync::Mutex<Vec<Pending>>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(usize, f64)> {
    let mut conn = ApiConn {
        port: api_port,
        stream: None,
    };
    let mut seen = Vec::new();
    let mut waiting: Vec<Pending> = Vec::new();
    loop {
        waiting.append(&mut pending.lock().unwrap());
        waiting.retain(|p| p.t0.elapsed() < Duration::from_secs(30));
        if waiting.is_empty() && done.load(std::sync::atomic::Ordering::SeqCst) {
            return seen;
        }
        let mut by_service: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (k, p) in waiting.iter().enumerate() {
            by_service.entry(&p.service_id).or_default().push(k);
        }
        let mut shown = std::collections::BTreeSet::new();
        for (service_id, members) in by_service {
            for chunk in members.chunks(10) {
                let names: Vec<&str> = chunk.iter().map(|&k| waiting[k].name.as_str()).collect();
                let body = json!({"ServiceId": service_id, "Instances": names}).to_string();
                let Some(got) = conn.post("GetInstancesHealthStatus", &body).await else {
                    continue;
                };
                for &k in chunk {
                    let p = &waiting[k];
                    if got["Status"][&p.name].as_str() == Some(p.want) {
                        seen.push((p.n, p.t0.elapsed().as_secs_f64() * 1000.0));
                        shown.insert(k);
                    }
                }
            }
        }
        let mut k = 0;
        waiting.retain(|_| {
            k += 1;
            !shown.contains(&(k - 1))
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn metric(metrics_port: u16, name: &str) -> Option<f64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A UDP socket connected to a DNS server.
async fn dns_socket(server: SocketAddr) -> tokio::net::UdpSocket {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server).await.unwrap();
    sock
}

/// One A query over UDP: the response code and the IPv4 addresses answered,
/// or `None` when no matching response arrived within 500 ms.
async fn dns_a(sock: &tokio::net::UdpSocket, name: &Name) -> Option<(ResponseCode, Vec<Ipv4Addr>)> {
    let mut query = Message::query();
    query.add_query(Query::query(name.clone(), RecordType::A));
    let id = query.metadata.id;
    sock.send(&query.to_vec().ok()?).await.ok()?;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        // A late answer to an earlier, timed-out query has another id.
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if resp.metadata.id != id {
            continue;
        }
        let ips = resp
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        return Some((resp.metadata.response_code, ips));
    }
}

/// Whether CoreDNS's answer for a pod's endpoint name reflects the pod's
/// readiness: its A record when Ready; a clean answer (NOERROR or NXDOMAIN)
/// without it when not Ready.
async fn coredns_shows(
    sock: &tokio::net::UdpSocket,
    name: &Name,
    ip: Ipv4Addr,
    ready: bool,
) -> bool {
    match dns_a(sock, name).await {
        Some((ResponseCode::NoError, ips)) if ready => ips.contains(&ip),
        Some((ResponseCode::NoError | ResponseCode::NXDomain, ips)) if !ready => !ips.contains(&ip),
        _ => false,
    }
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        ((i >> 16) & 255) as u8,
        ((i >> 8) & 255) as u8,
        (i & 255) as u8,
    )
}

/// CoreDNS's name for a headless Service's endpoint without a hostname: the
/// address with dashes (plugin/kubernetes `endpointHostname`).
fn endpoint_name(ip: Ipv4Addr, service: &str) -> Name {
    let dashed = ip.to_string().replace('.', "-");
    Name::from_ascii(format!("{dashed}.{service}.{NS}.svc.cluster.local.")).unwrap()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct ControlPlane(PathBuf);

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/controlplane.sh"))
            .arg("down")
            .arg(&self.0)
            .status();
    }
}

/// A child process killed when the round ends (or panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The CoreDNS binary from `scripts/build-coredns.sh` (cached), or why not.
fn coredns_bin() -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(repo().join("scripts/build-coredns.sh"))
        .arg("--print-bin")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run scripts/build-coredns.sh: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        return Err(format!(
            "scripts/build-coredns.sh failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let plugins = Command::new(&bin)
        .arg("-plugins")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !String::from_utf8_lossy(&plugins.stdout)
        .lines()
        .any(|l| l.trim() == "kubernetes")
    {
        return Err(format!("{} has no `kubernetes` plugin", bin.display()));
    }
    Ok(bin)
}

/// Pids of the control plane's processes, from `DIR/env`.
fn controlplane_pid(cp_dir: &Path, var: &str) -> Option<u32> {
    std::fs::read_to_string(cp_dir.join("env"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("export {var}="))?.parse().ok())
}

struct CoreDns {
    child: KillOnDrop,
    addr: SocketAddr,
}

async fn start_coredns(bin: &Path, kubeconfig: &Path, cp_dir: &Path, round: &str) -> CoreDns {
    let port = free_port();
    let corefile = cp_dir.join(format!("Corefile-{round}"));
    std::fs::write(
        &corefile,
        format!(
            "cluster.local:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local {{\n        kubeconfig {}\n    }}\n}}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(cp_dir.join(format!("coredns-{round}.log"))).unwrap();
    let child = Command::new(bin)
        .arg("-conf")
        .arg(&corefile)
        .current_dir(cp_dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let coredns = CoreDns {
        child: KillOnDrop(child),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    // Ready once it answers from the API server's data: the `kubernetes` Service.
    let probe = Name::from_ascii("kubernetes.default.svc.cluster.local.").unwrap();
    let sock = dns_socket(coredns.addr).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((ResponseCode::NoError, ips)) = dns_a(&sock, &probe).await
            && !ips.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CoreDNS did not become ready; see {}",
            cp_dir.join(format!("coredns-{round}.log")).display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    coredns
}

/// Readiness of each pod as the EndpointSlices say (`targetRef` name → ready),
/// kept current by the bench's own watch: it tells a CoreDNS poller when the
/// change has reached the EndpointSlices, so it can poll tightly from then on
/// without flooding CoreDNS while the EndpointSlice controller is behind.
type SliceView = tokio::sync::watch::Receiver<std::collections::HashMap<String, bool>>;

/// Watches this namespace's EndpointSlices into a [`SliceView`], on a thread
/// of its own (the bench's runtime is busy with thousands of pollers); stops
/// when the view is dropped.
fn watch_slices(kubeconfig: PathBuf) -> SliceView {
    use kube::runtime::watcher;
    let (tx, rx) = tokio::sync::watch::channel(std::collections::HashMap::new());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let api: Api<EndpointSlice> = Api::namespaced(client(&kubeconfig).await, NS);
            let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = tx.closed() => return,
                };
                let Some(Ok(watcher::Event::Apply(slice) | watcher::Event::InitApply(slice))) = ev
                else {
                    continue;
                };
                tx.send_if_modified(|view| {
                    let mut changed = false;
                    for e in &slice.endpoints {
                        if let Some(pod) = e.target_ref.as_ref().and_then(|r| r.name.as_ref()) {
                            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                            changed |= view.insert(pod.clone(), ready) != Some(ready);
                        }
                    }
                    changed
                });
            }
        });
    });
    rx
}

/// Every readiness value each pod was seen with, and when.
type PodView = Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<(bool, Instant)>>>>;

/// Watches this namespace's pods on a thread of its own and records when
/// each pod's `Ready` condition changes: the moment the API server's watch
/// delivered the change, which splits Waymark's figure into "patch → watch
/// event" (the API server) and "watch event → visible" (Waymark). Returns
/// once the initial list is in; stops when `stop` is dropped.
async fn watch_pod_readiness(
    kubeconfig: PathBuf,
    stop: tokio::sync::watch::Receiver<()>,
) -> PodView {
    use kube::runtime::watcher;
    let view: PodView = Default::default();
    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let out = view.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut stop = stop;
            let api: Api<Pod> = Api::namespaced(client(&kubeconfig).await, NS);
            let mut events = std::pin::pin!(watcher::watcher(api, watcher::Config::default()));
            let mut listed = Some(listed_tx);
            loop {
                let ev = tokio::select! {
                    ev = events.next() => ev,
                    _ = stop.changed() => return,
                };
                let pod = match ev {
                    Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => p,
                    Some(Ok(watcher::Event::InitDone)) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let at = Instant::now();
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .is_some_and(|c| c.status == "True");
                let mut view = out.lock().unwrap();
                let seen = view
                    .entry(pod.metadata.name.unwrap_or_default())
                    .or_default();
                if seen.last().is_none_or(|(r, _)| *r != ready) {
                    seen.push((ready, at));
                }
            }
        });
    });
    let _ = listed_rx.await;
    view
}

/// Milliseconds from `t0` to `at`, negative when `at` came first.
fn ms_since(t0: Instant, at: Instant) -> f64 {
    match at.checked_duration_since(t0) {
        Some(d) => d.as_secs_f64() * 1000.0,
        None => -(t0 - at).as_secs_f64() * 1000.0,
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// One readiness change as CoreDNS showed it, in ms from the patch ack.
#[derive(Clone, Copy)]
struct CoreDnsFlip {
    /// The first answer showing the change.
    visible: f64,
    /// The bench's own EndpointSlice watch seeing the change (`None` when
    /// CoreDNS showed it first).
    in_slices: Option<f64>,
}

/// DNS queries sent by the CoreDNS pollers.
static DNS_QUERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Polls CoreDNS for one readiness change until an answer shows it. The schedule keeps the poller's
/// load bounded (a fixed 1 ms poll feeds back: the slower CoreDNS gets, the
/// more queries it receives, and it shares the two cores with everything
/// else): until the watch sees the change, every quarter of the time elapsed
/// (at least 50 ms apart); from then on every quarter of the time since the
/// watch saw it (at least 1 ms apart). A figure is therefore late by at most
/// a quarter of CoreDNS's lag behind the EndpointSlice write as the bench saw
/// it (1 ms when it is under 4 ms). Gives up after 60 s.
async fn coredns_latency(
    server: SocketAddr,
    name: Name,
    ip: Ipv4Addr,
    ready: bool,
    t0: Instant,
    pod: String,
    mut slices: SliceView,
) -> Option<CoreDnsFlip> {
    let sock = dns_socket(server).await;
    let mut in_slices: Option<Instant> = None;
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
    loop {
        DNS_QUERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if coredns_shows(&sock, &name, ip, ready).await {
            return Some(CoreDnsFlip {
                visible: ms(Instant::now()),
                in_slices: in_slices.map(ms),
            });
        }
        let elapsed = t0.elapsed();
        if elapsed > Duration::from_secs(60) {
            return None;
        }
        match in_slices {
            Some(seen) => {
                tokio::time::sleep((seen.elapsed() / 4).max(Duration::from_millis(1))).await
            }
            None => tokio::select! {
                _ = tokio::time::sleep((elapsed / 4).max(Duration::from_millis(50))) => {}
                _ = slices.wait_for(|v| v.get(&pod) == Some(&ready)) => {
                    in_slices = Some(Instant::now())
                }
            },
        }
    }
}

/// Waymark's own histogram of pod event → registry write: (count, sum seconds,
/// cumulative bucket counts by upper bound).
async fn event_histogram(metrics_port: u16) -> (f64, f64, Vec<(f64, f64)>) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let name = "waymark_controller_event_to_registry_seconds";
    let value = |suffix: &str| {
        out.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}{suffix} "))?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let buckets = out
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{name}_bucket{{le=\""))?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((
                le.parse().unwrap_or(f64::INFINITY),
                count.trim().parse().ok()?,
            ))
        })
        .collect();
    (value("_count"), value("_sum"), buckets)
}

/// The change of Waymark's event → registry histogram between two scrapes:
/// mean and the bucket bound under which 50 % and 99 % fall.
fn event_histogram_delta(
    before: &(f64, f64, Vec<(f64, f64)>),
    after: &(f64, f64, Vec<(f64, f64)>),
) -> String {
    let n = after.0 - before.0;
    let bound = |q: f64| {
        after
            .2
            .iter()
            .zip(&before.2)
            .find(|((_, a), (_, b))| a - b >= q * n)
            .map_or(f64::INFINITY, |((le, _), _)| *le * 1000.0)
    };
    format!(
        "{n:.0} events, mean {:.1} ms, p50 ≤ {:.1} ms, p99 ≤ {:.1} ms",
        (after.1 - before.1) / n.max(1.0) * 1000.0,
        bound(0.5),
        bound(0.99)
    )
}

/// Endpoints (ready or not) in this round's EndpointSlices.
async fn slice_endpoints(slices: &Api<EndpointSlice>, round: &str) -> usize {
    slices
        .list(&ListParams::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        .is_some_and(|n| n.starts_with(&format!("{round}-")))
                })
                .map(|s| s.endpoints.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Median and maximum per second of flips (200 flips each), to show whether
/// latency builds up during the run.
fn by_second(by_flip: &[(usize, f64)]) -> String {
    (0..10)
        .map(|sec| {
            let mut l: Vec<f64> = by_flip
                .iter()
                .filter(|(n, _)| n / 200 == sec)
                .map(|(_, ms)| *ms)
                .collect();
            l.sort_by(|a, b| a.partial_cmp(b).unwrap());
            format!(
                "{:.0}/{:.0}",
                percentile(&l, 0.5),
                l.last().copied().unwrap_or(f64::NAN)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn stats(l: &mut [f64]) -> String {
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{} measured, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        l.len(),
        percentile(l, 0.5),
        percentile(l, 0.99),
        l.last().copied().unwrap_or_default(),
    )
}

async fn run(
    pods: usize,
    kubeconfig: &Path,
    cp_dir: &Path,
    coredns_bin: Option<&Path>,
    client: kube::Client,
) -> serde_json::Value {
    let round = format!("r{pods}");
    println!("--- {pods} pods (load average {})", loadavg());
    let dir = tempfile::tempdir().unwrap();
    let (api_port, metrics_port) = (free_port(), free_port());
    // One Waymark Namespace and ServiceDiscovery per round.
    let ar = |kind: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("waymark.dev", "v1alpha1", kind),
            plural,
        )
    };
    let wns: Api<DynamicObject> =
        Api::all_with(client.clone(), &ar("Namespace", "waymarknamespaces"));
    let sds: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        NS,
        &ar("ServiceDiscovery", "servicediscoveries"),
    );
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let ssa = PatchParams::apply("bench").force();
    wns.patch(
        &format!("{round}.bench"),
        &ssa,
        &Patch::Apply(json!({
        "apiVersion": "waymark.dev/v1alpha1", "kind": "Namespace",
        "metadata": {"name": format!("{round}.bench")}, "spec": {"type": "DnsPrivate"}})),
    )
    .await
    .unwrap();
    // Cloud Map allows 1,000 instances per service: one service per 1,000 pods.
    let groups = pods.div_ceil(1000);
    for g in 0..groups {
        sds.patch(
            &format!("{round}-{g}"),
            &ssa,
            &Patch::Apply(json!({
            "apiVersion": "waymark.dev/v1alpha1", "kind": "ServiceDiscovery",
            "metadata": {"name": format!("{round}-{g}"), "namespace": NS},
            "spec": {"namespaceRef": {"name": format!("{round}.bench")},
                     "selector": {"matchLabels": {"round": round, "group": g.to_string()}},
                     "port": 8080, "dns": {"records": [{"type": "A"}]}}})),
        )
        .await
        .unwrap();
        // The same pods as a headless Service, for CoreDNS (EndpointSlices).
        services
            .patch(
                &format!("{round}-{g}"),
                &ssa,
                &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("{round}-{g}"), "namespace": NS},
                "spec": {"clusterIP": "None",
                         "selector": {"round": round, "group": g.to_string()},
                         "ports": [{"name": "http", "port": 8080}]}})),
            )
            .await
            .unwrap();
    }

    let child: Child = Command::new(BIN)
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args([
            "--dns-addr",
            "127.0.0.1:0",
            "--disable-leader-election",
            "--log",
            "warn",
        ])
        .args(["--watch-namespaces", NS])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let _waymark = KillOnDrop(child);
    let coredns = match coredns_bin {
        Some(bin) => Some(start_coredns(bin, kubeconfig, cp_dir, &round).await),
        None => None,
    };
    let cdns_pid = coredns.as_ref().map(|c| c.child.0.id());
    while metric(metrics_port, "waymark_registry_namespaces")
        .await
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_bytes(pid);
    let cdns_rss_before = cdns_pid.map_or(0, rss_bytes);

    // Create the pods, then give them IPs (not Ready yet).
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    let progress = std::sync::Mutex::new(waymark::cli::Progress::new("creating pods"));
    let made = std::sync::atomic::AtomicUsize::new(0);
    stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            let round = round.clone();
            let (progress, made) = (&progress, &made);
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{round}-{i}"), "labels": {"round": round, "group": (i / 1000).to_string()}},
                    "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "example.invalid/app"}]}}))
                .unwrap();
                let (post, pp) = (PostParams::default(), PatchParams::default());
                retry("create pod", || pod_api.create(&post, &pod)).await;
                let ip = pod_ip(i).to_string();
                let status = Patch::Merge(json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": "False"}]}}));
                let name = format!("{round}-{i}");
                retry("set pod IP", || pod_api.patch_status(&name, &pp, &status)).await;
                let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if let Ok(mut p) = progress.lock() {
                    p.at(n, pods);
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    if let Ok(p) = progress.into_inner() {
        p.finish();
    }
    let created = started.elapsed();
    loop {
        let n = metric(metrics_port, "waymark_registry_instances")
            .await
            .unwrap_or(0.0) as usize;
        if n >= pods {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let registered = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_bytes(pid);
    let threads_after = threads(pid);
    // Every pod in the EndpointSlices (as not-ready endpoints) before flipping.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    while coredns_bin.is_some() && slice_endpoints(&slices, &round).await < pods {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "EndpointSlices incomplete after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sliced = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cdns_rss_created = cdns_pid.map_or(0, rss_bytes);
    // Service ids by group (service name = ServiceDiscovery name). Only this
    // round's services: `r1000-0` of an earlier round must not stand in for
    // `r10000-0` (its pollers would wait 30 s for a pod it does not hold).
    let service_ids: Arc<Vec<String>> = Arc::new(loop {
        let listed = post(api_port, "ListServices", "{}")
            .await
            .unwrap_or_default();
        let mut ids = vec![String::new(); groups];
        for s in listed["Services"].as_array().into_iter().flatten() {
            if let Some(g) = s["Name"]
                .as_str()
                .and_then(|n| n.strip_prefix(&format!("{round}-"))?.parse::<usize>().ok())
                && g < groups
            {
                ids[g] = s["Id"].as_str().unwrap_or_default().to_string();
            }
        }
        if ids.iter().all(|i| !i.is_empty()) {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    });

    // Flip readiness at 200 changes/s for 10 s; time each change in both.
    let cp_pids: Vec<(&str, Option<u32>)> = vec![
        ("waymark", Some(pid)),
        ("coredns", cdns_pid),
        (
            "kube-controller-manager",
            controlplane_pid(cp_dir, "WAYMARK_CONTROLLER_MANAGER_PID"),
        ),
        (
            "kube-apiserver",
            controlplane_pid(cp_dir, "WAYMARK_APISERVER_PID"),
        ),
        ("etcd", controlplane_pid(cp_dir, "WAYMARK_ETCD_PID")),
        ("bench client", Some(std::process::id())),
    ];
    let busy_before = machine_busy_seconds();
    let cpu_before: Vec<f64> = cp_pids
        .iter()
        .map(|(_, p)| p.map_or(0.0, cpu_seconds))
        .collect();
    let slice_view = watch_slices(kubeconfig.to_path_buf());
    let dns_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let flips_started = Instant::now();
    let cdns_addr = coredns.as_ref().map(|c| c.addr);
    let (stop_pod_view, pod_view_stop) = tokio::sync::watch::channel(());
    let pod_view = watch_pod_readiness(kubeconfig.to_path_buf(), pod_view_stop).await;
    let flip_meta = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let histogram_before = event_histogram(metrics_port).await;
    let waymark_pending = Arc::new(std::sync::Mutex::new(Vec::new()));
    let flips_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waymark_poller = tokio::spawn(poll_waymark(
        api_port,
        waymark_pending.clone(),
        flips_done.clone(),
    ));
    let cdns_latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    for n in 0..2000usize {
        ticker.tick().await;
        let i = (n * 7919) % pods;
        let ready = (n / pods).is_multiple_of(2);
        let name = format!("{round}-{i}");
        let pod = name.clone();
        let pod_api = pod_api.clone();
        let waymark_pending = waymark_pending.clone();
        let flip_meta = flip_meta.clone();
        let cdns_latencies = cdns_latencies.clone();
        let service_id = service_ids[i / 1000].clone();
        let dns_name = endpoint_name(pod_ip(i), &format!("{round}-{}", i / 1000));
        let slice_view = slice_view.clone();
        let dns_rt = dns_runtime.handle().clone();
        tasks.push(tokio::spawn(async move {
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
            pod_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
            let t0 = Instant::now();
            let want = if ready { "HEALTHY" } else { "UNHEALTHY" };
            flip_meta.lock().unwrap().insert(n, (name.clone(), ready, t0));
            waymark_pending.lock().unwrap().push(Pending { n, service_id, name, want, t0 });
            // CoreDNS is polled on its own runtime, so the Waymark poll
            // loop runs on this one exactly as without CoreDNS.
            let coredns = cdns_addr.map(|addr| {
                dns_rt.spawn(async move {
                    if let Some(m) = coredns_latency(addr, dns_name, pod_ip(i), ready, t0, pod, slice_view).await {
                        cdns_latencies.lock().unwrap().push((n, m));
                    }
                })
            });
            if let Some(coredns) = coredns {
                let _ = coredns.await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    flips_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let waymark_by_flip = waymark_poller.await.unwrap();
    let flips_took = flips_started.elapsed();
    drop(stop_pod_view);
    // Split each Waymark figure at the moment the bench's own pod watch saw
    // the change: a pod flips at most every 5 s, so the first matching
    // change from 2 s before the ack on is this flip's.
    let (mut to_event, mut after_event, mut before_ack) = (Vec::new(), Vec::new(), 0);
    {
        let view = pod_view.lock().unwrap();
        let meta = flip_meta.lock().unwrap();
        for (n, ms) in &waymark_by_flip {
            let Some((name, ready, t0)) = meta.get(n) else {
                continue;
            };
            let Some(&(_, at)) = view.get(name).and_then(|seen| {
                seen.iter()
                    .find(|(r, at)| r == ready && ms_since(*t0, *at) > -2000.0)
            }) else {
                continue;
            };
            let event = ms_since(*t0, at);
            before_ack += usize::from(event < 0.0);
            to_event.push(event.max(0.0));
            after_event.push(ms - event.max(0.0));
        }
    }
    dns_runtime.shutdown_background();
    let histogram_after = event_histogram(metrics_port).await;
    let busy = machine_busy_seconds() - busy_before;
    let used: Vec<(&str, f64)> = cp_pids
        .iter()
        .zip(&cpu_before)
        .filter_map(|((what, p), before)| Some((*what, cpu_seconds((*p)?) - before)))
        .collect();
    let ours: f64 = used.iter().map(|(_, s)| s).sum();
    let mut cpu: Vec<String> = used
        .iter()
        .map(|(what, s)| format!("{what} {s:.1} s"))
        .collect();
    cpu.push(format!(
        "machine total {busy:.1} s of {:.1} s available (other processes {:.1} s)",
        flips_took.as_secs_f64()
            * std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        (busy - ours).max(0.0)
    ));
    let mut l: Vec<f64> = waymark_by_flip.iter().map(|(_, ms)| *ms).collect();
    println!(
        "{pods} pods: created+IPs in {:.1} s, all registered after {:.1} s; readiness flips at 200/s: \
         {}; controller RSS +{:.1} MB = {:.0} bytes/pod ({threads_after} threads; {} after the flips)",
        created.as_secs_f64(),
        registered.as_secs_f64(),
        stats(&mut l),
        rss_after.saturating_sub(rss_before) as f64 / 1e6,
        rss_after.saturating_sub(rss_before) as f64 / pods as f64,
        threads(pid),
    );
    // `stats` sorted the samples.
    let mut out = json!({
        "pods": pods,
        "waymark_ms": l,
        "waymark_bytes_per_pod_not_ready": rss_after.saturating_sub(rss_before) as f64 / pods as f64,
    });
    println!(
        "{pods} pods: Waymark path split: patch ack → pod watch event (bench's own watch) {}; \
         pod watch event → visible in Waymark {} ({before_ack} events arrived before the ack, counted as 0)",
        stats(&mut to_event),
        stats(&mut after_event),
    );
    let Some(coredns) = coredns else {
        println!("{pods} pods: CoreDNS skipped (see above)");
        return out;
    };
    println!(
        "{pods} pods: Waymark's own pod event → registry histogram during the flips: {}",
        event_histogram_delta(&histogram_before, &histogram_after)
    );
    let measured: Vec<(usize, CoreDnsFlip)> = cdns_latencies.lock().unwrap().clone();
    let early = measured
        .iter()
        .filter(|(_, f)| f.in_slices.is_none())
        .count();
    let cdns_by_flip: Vec<(usize, f64)> = measured.iter().map(|(n, f)| (*n, f.visible)).collect();
    let mut c: Vec<f64> = cdns_by_flip.iter().map(|(_, ms)| *ms).collect();
    let mut to_slice: Vec<f64> = measured.iter().filter_map(|(_, f)| f.in_slices).collect();
    let mut after_slice: Vec<f64> = measured
        .iter()
        .filter_map(|(_, f)| Some(f.visible - f.in_slices?))
        .collect();
    println!(
        "{pods} pods: CoreDNS kubernetes plugin (EndpointSlices complete after {:.1} s): readiness flips: {} \
         ({early} seen before the bench's EndpointSlice watch); RSS +{:.1} MB = {:.0} bytes/pod (pods not Ready)",
        sliced.as_secs_f64(),
        stats(&mut c),
        cdns_rss_created.saturating_sub(cdns_rss_before) as f64 / 1e6,
        cdns_rss_created.saturating_sub(cdns_rss_before) as f64 / pods as f64,
    );
    out["coredns_ms"] = json!(c);
    out["coredns_bytes_per_pod_not_ready"] =
        json!(cdns_rss_created.saturating_sub(cdns_rss_before) as f64 / pods as f64);
    println!(
        "{pods} pods: CoreDNS path split: patch ack → EndpointSlice (bench's watch) {}; \
         EndpointSlice → CoreDNS answer {}; {} DNS poll queries",
        stats(&mut to_slice),
        stats(&mut after_slice),
        DNS_QUERIES.swap(0, std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "{pods} pods: flip phase {:.1} s, CPU used: {}; load average {}",
        flips_took.as_secs_f64(),
        cpu.join(", "),
        loadavg()
    );

    println!(
        "{pods} pods: p50/max ms by second of the flips, Waymark: {}",
        by_second(&waymark_by_flip)
    );
    println!(
        "{pods} pods: p50/max ms by second of the flips, CoreDNS: {}",
        by_second(&cdns_by_flip)
    );

    // Memory with every pod Ready (CoreDNS keeps only ready endpoints).
    let all_ready = Instant::now();
    stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            let name = format!("{round}-{i}");
            async move {
                let status = Patch::Merge(
                    json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                );
                let pp = PatchParams::default();
                retry("set pod Ready", || {
                    pod_api.patch_status(&name, &pp, &status)
                })
                .await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let round = &round;
    stream::iter(0..pods)
        .map(|i| {
            let name = endpoint_name(pod_ip(i), &format!("{round}-{}", i / 1000));
            async move {
                let sock = dns_socket(coredns.addr).await;
                while !coredns_shows(&sock, &name, pod_ip(i), true).await {
                    assert!(
                        all_ready.elapsed() < Duration::from_secs(600),
                        "CoreDNS does not show {name} after 600 s"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let visible = all_ready.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, cdns_rss) = (rss_bytes(pid), rss_bytes(coredns.child.0.id()));
    println!(
        "{pods} pods: all Ready and in CoreDNS after {:.1} s; RSS growth since before the pods: \
         Waymark +{:.1} MB = {:.0} bytes/pod ({} threads), CoreDNS +{:.1} MB = {:.0} bytes/pod",
        visible.as_secs_f64(),
        rss.saturating_sub(rss_before) as f64 / 1e6,
        rss.saturating_sub(rss_before) as f64 / pods as f64,
        threads(pid),
        cdns_rss.saturating_sub(cdns_rss_before) as f64 / 1e6,
        cdns_rss.saturating_sub(cdns_rss_before) as f64 / pods as f64,
    );
    out["waymark_bytes_per_pod_ready"] = json!(rss.saturating_sub(rss_before) as f64 / pods as f64);
    out["coredns_bytes_per_pod_ready"] =
        json!(cdns_rss.saturating_sub(cdns_rss_before) as f64 / pods as f64);
    out
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = if args.is_empty() {
        vec![1000, 10_000]
    } else {
        args
    };
    // Waymark alone shows what it does with the cores to itself; the side by
    // side run shares 2 vCPUs with the full controller manager and CoreDNS.
    let waymark_only = std::env::args().any(|a| a == "--waymark-only");
    let coredns = match coredns_bin() {
        _ if waymark_only => {
            println!("CoreDNS side SKIPPED: --waymark-only");
            None
        }
        Ok(bin) => Some(bin),
        Err(why) => {
            println!("CoreDNS side SKIPPED: {why}");
            None
        }
    };
    let cp_dir = tempfile::tempdir().unwrap().keep();
    let status = Command::new(repo().join("scripts/controlplane.sh"))
        .arg("up")
        .arg(&cp_dir)
        .args((!waymark_only).then_some("--with-controller-manager"))
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "control plane did not start");
    let _cp = ControlPlane(cp_dir.clone());
    let kubeconfig = cp_dir.join("kubeconfig");
    let client = client(&kubeconfig).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in waymark::crd::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
        )
        .await
        .unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap(),
        )
        .await
        .unwrap();
    // Let the CRDs become established.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "machine: {} vCPU, {}; control plane in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l
                .strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string()))
            .unwrap_or_default(),
        cp_dir.display()
    );
    let mut runs = Vec::new();
    for pods in rounds {
        runs.push(
            run(
                pods,
                &kubeconfig,
                &cp_dir,
                coredns.as_deref(),
                client.clone(),
            )
            .await,
        );
    }
    results::write("controller", json!({ "runs": runs }));
}
