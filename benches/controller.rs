//! Pod readiness → registry visibility, against a real kube-apiserver.
//!
//!   cargo bench --bench controller                 # 1,000 then 10,000 pods
//!   cargo bench --bench controller -- 2000         # chosen pod counts
//!
//! Starts the loopback control plane (`scripts/controlplane.sh`) and a
//! release `waymark run`, creates the pods (IPs and readiness set through the
//! status subresource — there is no kubelet), then flips readiness at 200
//! changes/s for 10 s. Each change is timed from the API server acknowledging
//! the status patch to `GetInstancesHealthStatus` on Waymark's API showing it
//! (polled every millisecond). Also reports the controller's memory per pod
//! (growth of its RSS while the pods were registered).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_waymark");
const NS: &str = "bench";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn post(api_port: u16, op: &str, body: &str) -> Option<serde_json::Value> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", api_port))
        .await
        .ok()?;
    let req = format!(
        "POST / HTTP/1.0\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out);
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
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

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn run(pods: usize, kubeconfig: &Path, client: kube::Client) {
    let round = format!("r{pods}");
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
    }

    let mut child: Child = Command::new(BIN)
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
    while metric(metrics_port, "waymark_registry_namespaces")
        .await
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_bytes(pid);

    // Create the pods, then give them IPs (not Ready yet).
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    stream::iter(0..pods)
        .map(|i| {
            let pod_api = pod_api.clone();
            let round = round.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{round}-{i}"), "labels": {"round": round, "group": (i / 1000).to_string()}},
                    "spec": {"containers": [{"name": "app", "image": "example.invalid/app"}]}}))
                .unwrap();
                pod_api.create(&PostParams::default(), &pod).await.unwrap();
                let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                let status = json!({"status": {"podIP": ip, "podIPs": [{"ip": ip}],
                    "conditions": [{"type": "Ready", "status": "False"}]}});
                pod_api
                    .patch_status(
                        &format!("{round}-{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(status),
                    )
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
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
    // Service ids by group (service name = ServiceDiscovery name).
    let service_ids: Arc<Vec<String>> = Arc::new(loop {
        let listed = post(api_port, "ListServices", "{}")
            .await
            .unwrap_or_default();
        let mut ids = vec![String::new(); groups];
        for s in listed["Services"].as_array().into_iter().flatten() {
            if let Some(g) = s["Name"]
                .as_str()
                .and_then(|n| n.rsplit('-').next()?.parse::<usize>().ok())
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

    // Flip readiness at 200 changes/s for 10 s; time each change.
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(5));
    for n in 0..2000usize {
        ticker.tick().await;
        let i = (n * 7919) % pods;
        let ready = (n / pods).is_multiple_of(2);
        let name = format!("{round}-{i}");
        let pod_api = pod_api.clone();
        let latencies = latencies.clone();
        let service_id = service_ids[i / 1000].clone();
        tasks.push(tokio::spawn(async move {
            let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
            pod_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status)).await.unwrap();
            let t0 = Instant::now();
            let want = if ready { "HEALTHY" } else { "UNHEALTHY" };
            let body = json!({"ServiceId": service_id, "Instances": [name]}).to_string();
            loop {
                let got = post(api_port, "GetInstancesHealthStatus", &body).await;
                if got.as_ref().and_then(|g| g["Status"][&name].as_str()) == Some(want) {
                    latencies.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1000.0);
                    return;
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{pods} pods: created+IPs in {:.1} s, all registered after {:.1} s; readiness flips at 200/s: \
         {} measured, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; controller RSS +{:.1} MB = {:.0} bytes/pod",
        created.as_secs_f64(),
        registered.as_secs_f64(),
        l.len(),
        percentile(&l, 0.5),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or_default(),
        rss_after.saturating_sub(rss_before) as f64 / 1e6,
        rss_after.saturating_sub(rss_before) as f64 / pods as f64,
    );
    let _ = child.kill();
    let _ = child.wait();
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
    let cp_dir = tempfile::tempdir().unwrap().keep();
    let status = Command::new(repo().join("scripts/controlplane.sh"))
        .arg("up")
        .arg(&cp_dir)
        .arg("--owner-pid")
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "control plane did not start");
    let _cp = ControlPlane(cp_dir.clone());
    let kubeconfig = cp_dir.join("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
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
    // Let the CRDs become established.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for pods in rounds {
        run(pods, &kubeconfig, client.clone()).await;
    }
}
