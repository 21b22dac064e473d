//! `waymark run` against a real kube-apiserver: pods become instances, health
//! follows readiness, status lands on the CRDs, and restarts lose nothing.
//!
//! Each test runs its own `waymark run` limited (by `--watch-namespaces` and
//! `--selector`) to its own Kubernetes namespace and Waymark objects, so the
//! tests share one control plane and run in parallel.

#[path = "../common/mod.rs"]
mod common;
#[path = "../support/mod.rs"]
mod support;

mod shared_store;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ControlPlane, TestNamespace, control_plane};
use serde_json::{Value, json};
use support::{BIN, free_port};

const TEST_LABEL: &str = "waymark.dev/test";

fn cp() -> &'static ControlPlane {
    let cp = control_plane();
    cp.install_crds();
    cp
}

/// Polls `f` until it returns `Some`, for up to 20 seconds.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One test's world: a Kubernetes namespace, a Waymark Namespace and a
/// `waymark run` scoped to them.
struct World {
    cp: &'static ControlPlane,
    setup: Setup,
    ns: TestNamespace,
    registry_ns: String,
    data_dir: PathBuf,
    api_port: u16,
    metrics_port: u16,
    dns_port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// Which cluster a world's `waymark run` is in, and where its registry lives.
struct Setup {
    cp: &'static ControlPlane,
    cluster_id: &'static str,
    /// `etcd://…` for a shared registry; the embedded store when `None`.
    store: Option<String>,
    /// The registry namespace's name; default `<Kubernetes namespace>.test`.
    registry_ns: Option<String>,
    /// More `waymark run` flags.
    extra_args: Vec<String>,
}

impl Setup {
    fn embedded() -> Self {
        Self {
            cp: cp(),
            cluster_id: "test-cluster",
            store: None,
            registry_ns: None,
            extra_args: Vec::new(),
        }
    }
}

impl World {
    /// Creates the namespaces and starts `waymark run`.
    fn new(prefix: &str, ns_type: &str) -> Self {
        Self::with(prefix, ns_type, Setup::embedded())
    }

    /// Like [`World::new`], in the cluster and on the store `setup` names.
    fn with(prefix: &str, ns_type: &str, setup: Setup) -> Self {
        let cp = setup.cp;
        let ns = cp.create_namespace(prefix);
        let registry_ns = setup
            .registry_ns
            .clone()
            .unwrap_or_else(|| format!("{}.test", ns.name));
        let dir = tempfile::tempdir().unwrap();
        let mut world = Self {
            cp,
            setup,
            registry_ns,
            data_dir: dir.path().join("data"),
            api_port: free_port(),
            metrics_port: free_port(),
            dns_port: free_port(),
            child: None,
            _dir: dir,
            ns,
        };
        world.apply(&format!(
            r#"
apiVersion: waymark.dev/v1alpha1
kind: Namespace
metadata: {{name: {name}, labels: {{{TEST_LABEL}: {label}}}}}
spec: {{type: {ns_type}, description: test namespace}}
"#,
            name = world.registry_ns,
            label = world.ns.name,
        ));
        world.start();
        world
    }

    fn start(&mut self) {
        let child = self.spawn_run(
            &self.data_dir,
            self.api_port,
            self.metrics_port,
            self.dns_port,
        );
        self.child = Some(child);
        eventually("waymark run to become ready", || {
            self.http_get("/readyz")
                .filter(|r| r.contains(" 200 "))
                .map(|_| ())
        });
    }

    /// Starts a `waymark run` replica scoped to this test (its own lease in
    /// the test namespace, 3-second lease duration for quick failover).
    fn spawn_run(&self, data_dir: &std::path::Path, api: u16, metrics: u16, dns: u16) -> Child {
        let mut cmd = Command::new(BIN);
        cmd.arg("run");
        if let Some(store) = &self.setup.store {
            cmd.args(["--store", store]);
        }
        cmd.arg("--kubeconfig")
            .arg(&self.cp.kubeconfig)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .args(["--dns-addr", &format!("127.0.0.1:{dns}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--watch-namespaces", &self.ns.name])
            .args(["--selector", &format!("{TEST_LABEL}={}", self.ns.name)])
            .args(["--cluster-id", self.setup.cluster_id])
            .args(["--lease-namespace", &self.ns.name])
            .args(["--lease-duration-seconds", "3"])
            .args(["--log", "warn"])
            .args(&self.setup.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Kills the controller with SIGKILL (no clean shutdown).
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// The body of a Cloud Map call to the API on `port` (Null on failure).
    fn api_on(port: u16, op: &str, body: Value) -> Value {
        let body = body.to_string();
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return Value::Null;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "POST / HTTP/1.0\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null)
    }

    /// Calls a Cloud Map operation; returns (HTTP status, body).
    fn api(&self, op: &str, body: Value) -> (u16, Value) {
        let body = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.api_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST / HTTP/1.0\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// All instances of a service (health filter ALL), sorted by id, as
    /// (id, health, attributes); `None` while the service does not exist.
    fn instances(&self, service: &str) -> Option<Vec<(String, String, Value)>> {
        self.instances_on(self.api_port, service)
    }

    /// [`World::instances`] as the replica serving the API on `port` answers.
    fn instances_on(&self, port: u16, service: &str) -> Option<Vec<(String, String, Value)>> {
        let body = Self::api_on(
            port,
            "DiscoverInstances",
            json!({"NamespaceName": self.registry_ns, "ServiceName": service, "HealthStatus": "ALL", "MaxResults": 1000}),
        );
        let mut v: Vec<(String, String, Value)> = body["Instances"]
            .as_array()?
            .iter()
            .map(|i| {
                (
                    i["InstanceId"].as_str().unwrap().to_string(),
                    i["HealthStatus"].as_str().unwrap().to_string(),
                    i["Attributes"].clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Some(v)
    }

    fn revision(&self, service: &str) -> i64 {
        let (_, body) = self.api(
            "DiscoverInstancesRevision",
            json!({"NamespaceName": self.registry_ns, "ServiceName": service}),
        );
        body["InstancesRevision"].as_i64().unwrap()
    }

    /// Waits until the service's instances are exactly `want` as (id, health).
    fn expect(&self, service: &str, want: &[(&str, &str)]) -> Vec<(String, String, Value)> {
        self.expect_on(self.api_port, service, want)
    }

    /// [`World::expect`] of the replica serving the API on `port`.
    fn expect_on(
        &self,
        port: u16,
        service: &str,
        want: &[(&str, &str)],
    ) -> Vec<(String, String, Value)> {
        eventually(&format!("{service} instances {want:?} on :{port}"), || {
            let got = self.instances_on(port, service)?;
            let ids: Vec<(&str, &str)> = got
                .iter()
                .map(|(i, h, _)| (i.as_str(), h.as_str()))
                .collect();
            (ids == want).then_some(got.clone())
        })
    }

    fn apply(&self, yaml: &str) {
        let out = self
            .cp
            .kubectl_with_stdin(&["apply", "-n", &self.ns.name, "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            common::stderr(&out)
        );
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.name.as_str()];
        all.extend_from_slice(args);
        self.cp.kubectl_ok(&all)
    }

    /// A ServiceDiscovery named `name` with the given extra spec lines (YAML flow).
    fn discovery(&self, name: &str, spec: &str) {
        self.apply(&format!(
            r#"
apiVersion: waymark.dev/v1alpha1
kind: ServiceDiscovery
metadata: {{name: {name}, labels: {{{TEST_LABEL}: {label}}}}}
spec:
  namespaceRef: {{name: {ns}}}
{spec}
"#,
            label = self.ns.name,
            ns = self.registry_ns,
        ));
    }

    /// Creates a pod with labels and a named container port.
    fn pod(&self, name: &str, labels: &str) {
        self.pod_on(name, labels, None);
    }

    /// Creates a pod, optionally bound to a node. A bound pod, like one a
    /// kubelet runs, stays Terminating after deletion until it is forced.
    fn pod_on(&self, name: &str, labels: &str, node: Option<&str>) {
        let node = node
            .map(|n| format!("\n  nodeName: {n}"))
            .unwrap_or_default();
        self.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:{node}
  containers: [{{name: app, image: example.invalid/app, ports: [{{name: http, containerPort: 8080}}, {{name: admin, containerPort: 9901}}]}}]
"#
        ));
    }

    /// Creates a Node (cluster-scoped, named after the test) with topology labels.
    fn node(&self, zone: &str, region: &str) -> String {
        let name = format!("{}-node", self.ns.name);
        self.cp
            .kubectl_apply_stdin(&format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {{topology.kubernetes.io/zone: {zone}, topology.kubernetes.io/region: {region}}}\n"
            ));
        name
    }

    /// Sets the pod's IPs and Ready condition through the status subresource
    /// (there is no kubelet).
    fn pod_status(&self, name: &str, ips: &[&str], ready: bool) {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }});
        self.kubectl(&[
            "patch",
            "pod",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    }

    /// A status field of a ServiceDiscovery (jsonpath).
    fn sd_status(&self, name: &str, jsonpath: &str) -> String {
        self.kubectl(&[
            "get",
            "servicediscovery",
            name,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    }

    fn condition(&self, kind: &str, name: &str, type_: &str) -> (String, String) {
        let args: Vec<String> = match kind {
            "wns" => vec![
                "get".into(),
                "waymarknamespaces.waymark.dev".into(),
                name.into(),
                "-o".into(),
                "json".into(),
            ],
            _ => vec![
                "get".into(),
                "servicediscovery".into(),
                name.into(),
                "-o".into(),
                "json".into(),
            ],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = if kind == "wns" {
            self.cp.kubectl(&args)
        } else {
            let mut all = vec!["-n", self.ns.name.as_str()];
            all.extend_from_slice(&args);
            self.cp.kubectl(&all)
        };
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The Waymark Namespace is cluster-scoped: remove it (and its finalizer) explicitly.
        let _ = self.cp.kubectl(&[
            "patch",
            "waymarknamespaces.waymark.dev",
            &self.registry_ns,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let _ = self.cp.kubectl(&[
            "delete",
            "waymarknamespaces.waymark.dev",
            &self.registry_ns,
            "--wait=false",
        ]);
    }
}

#[test]
fn pods_become_instances_and_health_follows_readiness() {
    let w = World::new("ctl-basic", "DnsPrivate");
    w.discovery(
        "inventory-manager",
        "  selector: {matchLabels: {app: inv}}\n  port: http\n  dns: {records: [{type: SRV, ttl: 5}, {type: A, ttl: 5}]}\n  attributes: {environment: prod}\n  labelAttributes: {include: [app, version]}",
    );
    w.pod("inv-1", "app: inv, version: v1, other: x");
    w.pod("inv-2", "app: inv, version: v1");
    w.pod("unrelated", "app: other");
    // A pod without an IP is not registered yet.
    w.pod_status("inv-1", &["10.20.0.1"], true);
    w.pod_status("unrelated", &["10.20.0.9"], true);
    let got = w.expect("inventory-manager", &[("inv-1", "HEALTHY")]);
    let attrs = &got[0].2;
    assert_eq!(attrs["AWS_INSTANCE_IPV4"], "10.20.0.1");
    assert_eq!(attrs["AWS_INSTANCE_PORT"], "8080");
    assert_eq!(attrs["K8S_NAMESPACE"], w.ns.name);
    assert_eq!(attrs["K8S_POD_NAME"], "inv-1");
    assert_eq!(attrs["environment"], "prod");
    assert_eq!(attrs["app"], "inv");
    assert_eq!(attrs["version"], "v1");
    assert!(
        attrs.get("other").is_none(),
        "only the chosen labels are copied"
    );
    assert!(
        attrs["WAYMARK_MANAGED_BY"]
            .as_str()
            .unwrap()
            .starts_with("test-cluster/")
    );

    // Not ready: registered but UNHEALTHY. Readiness flips both ways.
    w.pod_status("inv-2", &["10.20.0.2"], false);
    w.expect(
        "inventory-manager",
        &[("inv-1", "HEALTHY"), ("inv-2", "UNHEALTHY")],
    );
    let rev = w.revision("inventory-manager");
    w.pod_status("inv-2", &["10.20.0.2"], true);
    w.pod_status("inv-1", &["10.20.0.1"], false);
    w.expect(
        "inventory-manager",
        &[("inv-1", "UNHEALTHY"), ("inv-2", "HEALTHY")],
    );
    assert_eq!(
        w.revision("inventory-manager"),
        rev,
        "health changes keep the revision"
    );

    // Status on the CRD.
    eventually("SD status counts", || {
        (w.sd_status(
            "inventory-manager",
            "{.status.instances.total}/{.status.instances.healthy}",
        ) == "2/1")
            .then_some(())
    });
    assert_eq!(w.condition("sd", "inventory-manager", "Ready").0, "True");
    assert_eq!(w.condition("sd", "inventory-manager", "Synced").0, "True");
    assert_eq!(
        w.sd_status("inventory-manager", "{.status.dnsName}"),
        format!("inventory-manager.{}", w.registry_ns)
    );
    assert!(
        w.sd_status("inventory-manager", "{.status.serviceId}")
            .starts_with("srv-")
    );

    // A label change updates attributes in place: same id, revision grows.
    w.kubectl(&["label", "pod", "inv-2", "version=v2", "--overwrite"]);
    let got = eventually("label change", || {
        let got = w.instances("inventory-manager")?;
        (got.iter().find(|i| i.0 == "inv-2")?.2["version"] == "v2").then_some(got)
    });
    assert_eq!(got.len(), 2);
    assert!(w.revision("inventory-manager") > rev);

    // Scale up and down.
    w.pod("inv-3", "app: inv, version: v2");
    w.pod_status("inv-3", &["10.20.0.3"], true);
    w.expect(
        "inventory-manager",
        &[
            ("inv-1", "UNHEALTHY"),
            ("inv-2", "HEALTHY"),
            ("inv-3", "HEALTHY"),
        ],
    );
    w.kubectl(&["delete", "pod", "inv-1", "--grace-period=0", "--force"]);
    w.expect(
        "inventory-manager",
        &[("inv-2", "HEALTHY"), ("inv-3", "HEALTHY")],
    );
    // A pod whose labels stop matching leaves.
    w.kubectl(&["label", "pod", "inv-3", "app=moved", "--overwrite"]);
    w.expect("inventory-manager", &[("inv-2", "HEALTHY")]);

    // DNS answers follow (SRV with the pod port).
    let out = Command::new("dig")
        .args(["+short", "-p", &w.dns_port.to_string(), "@127.0.0.1", "SRV"])
        .arg(format!("inventory-manager.{}", w.registry_ns))
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(
                "1 1 8080 inv-2.inventory-manager.{}.",
                w.registry_ns
            )),
            "{text}"
        );
    }

    // Deleting the ServiceDiscovery removes the service and its instances.
    w.kubectl(&["delete", "servicediscovery", "inventory-manager"]);
    eventually("service removed", || {
        w.instances("inventory-manager").is_none().then_some(())
    });
}

#[test]
fn terminating_pods_drain_then_leave() {
    let w = World::new("ctl-drain", "Http");
    w.discovery(
        "web",
        "  selector: {matchLabels: {app: web}}\n  port: 8080\n  drainSeconds: 2",
    );
    let node = w.node("eu-west-1b", "eu-west-1");
    w.pod_on("web-1", "app: web", Some(&node));
    w.pod_status("web-1", &["10.21.0.1"], true);
    let got = w.expect("web", &[("web-1", "HEALTHY")]);
    assert_eq!(got[0].2["K8S_NODE_NAME"], node.as_str());
    assert_eq!(got[0].2["AVAILABILITY_ZONE"], "eu-west-1b");
    assert_eq!(got[0].2["REGION"], "eu-west-1");
    // Without a kubelet the pod stays Terminating: Waymark drains it.
    w.kubectl(&["delete", "pod", "web-1", "--wait=false"]);
    let got = w.expect("web", &[("web-1", "UNHEALTHY")]);
    // Marked as draining (served as DRAINING over xDS) until its deadline.
    assert!(
        got[0].2["WAYMARK_DRAINING"]
            .as_str()
            .and_then(|d| d.parse::<i64>().ok())
            .is_some_and(|d| d > 0),
        "{got:?}"
    );
    let started = Instant::now();
    w.expect("web", &[]);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "drained for drainSeconds, not at once"
    );
    w.kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"]);
    w.cp.kubectl_ok(&["delete", "node", &node]);
}

#[test]
fn dual_stack_pods_static_instances_and_api_instances() {
    let w = World::new("ctl-mixed", "DnsPrivate");
    w.discovery(
        "db",
        "  selector: {matchLabels: {app: db}}\n  port: admin\n  instances:\n  - id: user-auth-prod-01\n    attributes: {tablename: UserAuth, environment: prod}",
    );
    w.pod("db-1", "app: db");
    w.pod_status("db-1", &["10.22.0.1", "fd00::22:1"], true);
    let got = w.expect(
        "db",
        &[("db-1", "HEALTHY"), ("user-auth-prod-01", "HEALTHY")],
    );
    assert_eq!(got[0].2["AWS_INSTANCE_IPV4"], "10.22.0.1");
    assert_eq!(got[0].2["AWS_INSTANCE_IPV6"], "fd00::22:1");
    assert_eq!(got[0].2["AWS_INSTANCE_PORT"], "9901");
    assert_eq!(got[1].2["tablename"], "UserAuth");

    // The seed's query.
    let (_, body) = w.api(
        "DiscoverInstances",
        json!({"NamespaceName": w.registry_ns, "ServiceName": "db", "QueryParameters": {"environment": "prod"}}),
    );
    assert_eq!(body["Instances"][0]["Attributes"]["tablename"], "UserAuth");

    // An instance registered through the API is never touched by the controller.
    let service_id = w.sd_status("db", "{.status.serviceId}");
    let (status, body) = w.api(
        "RegisterInstance",
        json!({"ServiceId": service_id, "InstanceId": "manual", "Attributes": {"AWS_INSTANCE_IPV4": "10.99.0.1"}}),
    );
    assert_eq!(status, 200, "{body}");
    w.pod("db-2", "app: db");
    w.pod_status("db-2", &["10.22.0.2"], true);
    w.expect(
        "db",
        &[
            ("db-1", "HEALTHY"),
            ("db-2", "HEALTHY"),
            ("manual", "HEALTHY"),
            ("user-auth-prod-01", "HEALTHY"),
        ],
    );
    // And the API cannot deregister the controller's pods.
    let (status, body) = w.api(
        "DeregisterInstance",
        json!({"ServiceId": service_id, "InstanceId": "db-1"}),
    );
    assert_eq!(status, 400);
    assert_eq!(body["__type"], "ResourceInUse");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains(&format!("ServiceDiscovery {}/db", w.ns.name))
    );
}

#[test]
fn service_reference_resolves_selector_and_named_target_port() {
    let w = World::new("ctl-svcref", "Http");
    w.discovery("api", "  serviceRef: {name: api}\n  port: web");
    eventually("ServiceNotFound condition", || {
        (w.condition("sd", "api", "Synced") == ("False".into(), "ServiceNotFound".into()))
            .then_some(())
    });
    w.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  ports: [{name: web, port: 80, targetPort: admin}]\n",
    );
    w.pod("api-1", "app: api");
    w.pod_status("api-1", &["10.23.0.1"], true);
    let got = w.expect("api", &[("api-1", "HEALTHY")]);
    assert_eq!(
        got[0].2["AWS_INSTANCE_PORT"], "9901",
        "the Service's target port, resolved by name"
    );
    assert_eq!(w.condition("sd", "api", "Synced").0, "True");
}

#[test]
fn invalid_references_give_conditions_not_crashes() {
    let w = World::new("ctl-invalid", "Http");
    // A namespace that does not exist.
    w.apply(&format!(
        "apiVersion: waymark.dev/v1alpha1\nkind: ServiceDiscovery\nmetadata: {{name: lost, labels: {{{TEST_LABEL}: {}}}}}\nspec:\n  namespaceRef: {{name: no-such-namespace}}\n  selector: {{matchLabels: {{app: lost}}}}\n",
        w.ns.name
    ));
    eventually("NamespaceNotFound", || {
        (w.condition("sd", "lost", "Synced") == ("False".into(), "NamespaceNotFound".into()))
            .then_some(())
    });
    // An unknown port name: the pod is skipped and the SD is Degraded.
    w.discovery(
        "ports",
        "  selector: {matchLabels: {app: ports}}\n  port: grpc",
    );
    w.pod("ports-1", "app: ports");
    w.pod_status("ports-1", &["10.24.0.1"], true);
    eventually("PortNotFound", || {
        (w.condition("sd", "ports", "Degraded") == ("True".into(), "PortNotFound".into()))
            .then_some(())
    });
    assert_eq!(w.instances("ports"), Some(vec![]));
    // The controller is still alive and serving.
    assert!(w.http_get("/readyz").unwrap().contains(" 200 "));
}

#[test]
fn namespace_deletion_is_held_while_service_discoveries_use_it() {
    let w = World::new("ctl-nsdel", "Http");
    eventually("namespace registered", || {
        (w.condition("wns", &w.registry_ns, "Ready").0 == "True").then_some(())
    });
    w.discovery("holder", "  selector: {matchLabels: {app: holder}}");
    eventually("finalizer", || {
        w.cp.kubectl_ok(&[
            "get",
            "waymarknamespaces.waymark.dev",
            &w.registry_ns,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .contains("waymark.dev/namespace-in-use")
        .then_some(())
    });
    w.cp.kubectl_ok(&[
        "delete",
        "waymarknamespaces.waymark.dev",
        &w.registry_ns,
        "--wait=false",
    ]);
    eventually("deletion held", || {
        (w.condition("wns", &w.registry_ns, "Ready") == ("False".into(), "InUse".into()))
            .then_some(())
    });
    let events = w.cp.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        "reason=DeletionHeld",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("holder"),
        "an Event names the users: {events}"
    );
    w.kubectl(&["delete", "servicediscovery", "holder"]);
    eventually("namespace gone", || {
        let out =
            w.cp.kubectl(&["get", "waymarknamespaces.waymark.dev", &w.registry_ns]);
        (!out.status.success()).then_some(())
    });
    let (status, body) = w.api("ListNamespaces", json!({}));
    assert_eq!(status, 200);
    assert!(
        body["Namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["Name"] != w.registry_ns.as_str())
    );
}

#[test]
fn kill_9_and_restart_deregister_nothing_live_and_catch_up() {
    let mut w = World::new("ctl-restart", "Http");
    w.discovery("svc", "  selector: {matchLabels: {app: svc}}\n  port: 8080");
    for i in 1..=3 {
        w.pod(&format!("svc-{i}"), "app: svc");
        w.pod_status(&format!("svc-{i}"), &[&format!("10.25.0.{i}")], true);
    }
    w.expect(
        "svc",
        &[
            ("svc-1", "HEALTHY"),
            ("svc-2", "HEALTHY"),
            ("svc-3", "HEALTHY"),
        ],
    );
    let before = w.revision("svc");
    w.kill9();
    // While it is down: one pod goes away, one arrives, one turns unready.
    w.kubectl(&["delete", "pod", "svc-3", "--grace-period=0", "--force"]);
    w.pod("svc-4", "app: svc");
    w.pod_status("svc-4", &["10.25.0.4"], true);
    w.pod_status("svc-2", &["10.25.0.2"], false);
    w.start();
    w.expect(
        "svc",
        &[
            ("svc-1", "HEALTHY"),
            ("svc-2", "UNHEALTHY"),
            ("svc-4", "HEALTHY"),
        ],
    );
    // Exactly the two membership changes moved the revision: svc-1 and svc-2
    // were never deregistered and registered again.
    assert_eq!(w.revision("svc"), before + 2);
}

#[test]
fn the_registered_readiness_gate_is_set_once_the_pod_is_discoverable() {
    let w = World::new("ctl-gate", "Http");
    w.discovery(
        "gated",
        "  selector: {matchLabels: {app: gated}}\n  port: http",
    );
    w.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: gated-1, labels: {app: gated}}\nspec:\n  readinessGates: [{conditionType: waymark.dev/registered}]\n  containers: [{name: app, image: example.invalid/app, ports: [{name: http, containerPort: 8080}]}]\n",
    );
    // Containers are ready, but the pod is not Ready until the gate is True.
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "10.26.0.1",
        "podIPs": [{"ip": "10.26.0.1"}],
        "conditions": [
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "False"},
        ],
    }});
    w.kubectl(&[
        "patch",
        "pod",
        "gated-1",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    w.expect("gated", &[("gated-1", "HEALTHY")]);
    eventually("gate condition True", || {
        let v = w.kubectl(&[
            "get",
            "pod",
            "gated-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"waymark.dev/registered\")].status}",
        ]);
        (v == "True").then_some(())
    });
}

#[test]
fn annotated_services_are_registered_automatically() {
    let w = World::new("ctl-auto", "DnsPrivate");
    w.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: checkout\n  labels: {{{TEST_LABEL}: {label}}}\n  annotations: {{waymark.dev/namespace: {ns}}}\nspec:\n  selector: {{app: checkout}}\n  ports: [{{name: web, port: 80, targetPort: http}}]\n",
        label = w.ns.name,
        ns = w.registry_ns,
    ));
    w.pod("checkout-1", "app: checkout");
    w.pod_status("checkout-1", &["10.27.0.1"], true);
    let got = w.expect("checkout", &[("checkout-1", "HEALTHY")]);
    assert_eq!(got[0].2["AWS_INSTANCE_PORT"], "8080");
    let owner = w.kubectl(&[
        "get",
        "servicediscovery",
        "checkout",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "Service/checkout");
    // SRV records come with the port, because the namespace is a DNS one.
    assert!(
        w.sd_status("checkout", "{.status.dnsName}")
            .starts_with("checkout.")
    );

    // Removing the annotation removes the ServiceDiscovery and its instances.
    w.kubectl(&["annotate", "service", "checkout", "waymark.dev/namespace-"]);
    eventually("ServiceDiscovery removed", || {
        let out =
            w.cp.kubectl(&["-n", &w.ns.name, "get", "servicediscovery", "checkout"]);
        (!out.status.success()).then_some(())
    });
    eventually("service deregistered", || {
        w.instances("checkout").is_none().then_some(())
    });
}

#[test]
fn controller_metrics_are_exported() {
    let w = World::new("ctl-metrics", "Http");
    w.discovery("m", "  selector: {matchLabels: {app: m}}");
    w.pod("m-1", "app: m");
    w.pod_status("m-1", &["10.28.0.1"], true);
    w.expect("m", &[("m-1", "HEALTHY")]);
    let metrics = w.http_get("/metrics").unwrap();
    for name in [
        "waymark_controller_reconciles_total{kind=\"ServiceDiscovery\",result=\"ok\"}",
        "waymark_controller_watch_events_total{kind=\"Pod\"}",
        "waymark_controller_event_to_registry_seconds_count",
        "waymark_controller_reconcile_duration_seconds_bucket",
        "waymark_registry_instances 1",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
}

/// Runs `waymark inspect` against a world's API; (success, stdout, stderr).
fn inspect(w: &World, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("inspect")
        .args([
            "--endpoint-url",
            &format!("http://127.0.0.1:{}", w.api_port),
        ])
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn inspect_ok(w: &World, args: &[&str]) -> String {
    let (ok, stdout, stderr) = inspect(w, args);
    assert!(ok, "waymark inspect {args:?} failed: {stderr}");
    stdout
}

fn inspect_json(w: &World, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&inspect_ok(w, &all)).unwrap()
}

#[test]
fn inspect_shows_namespaces_services_instances_and_why() {
    let w = World::new("ctl-inspect", "DnsPrivate");
    w.discovery(
        "db",
        "  selector: {matchLabels: {app: db}}\n  port: admin\n  labelAttributes: {include: [version]}\n  attributes: {environment: prod}\n  instances:\n  - id: user-auth-prod-01\n    attributes: {tablename: UserAuth}",
    );
    w.pod("db-1", "app: db");
    w.pod_status("db-1", &["10.23.0.1"], true);
    w.pod("db-2", "app: db, version: v2");
    w.pod_status("db-2", &["10.23.0.2"], false);
    w.expect(
        "db",
        &[
            ("db-1", "HEALTHY"),
            ("db-2", "UNHEALTHY"),
            ("user-auth-prod-01", "HEALTHY"),
        ],
    );
    let service_id = w.sd_status("db", "{.status.serviceId}");
    let (status, body) = w.api(
        "RegisterInstance",
        json!({"ServiceId": service_id, "InstanceId": "manual", "Attributes": {"AWS_INSTANCE_IPV4": "10.99.0.1", "environment": "prod"}}),
    );
    assert_eq!(status, 200, "{body}");
    let ns = w.registry_ns.as_str();
    eventually("the API instance", || {
        (w.instances("db")?.len() == 4).then_some(())
    });

    // namespaces: a table, and JSON.
    let table = inspect_ok(&w, &["namespaces"]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("SERVICES"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(ns) && l.contains("DNS_PRIVATE")),
        "{table}"
    );
    let all = inspect_json(&w, &["namespaces"]);
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == ns)
        .unwrap();
    assert_eq!(mine["services"], 1);

    // services <ns>.
    let services = inspect_json(&w, &["services", ns]);
    assert_eq!(services[0]["name"], "db");
    assert_eq!(services[0]["id"], service_id.as_str());
    assert_eq!(services[0]["instances"], 4);
    assert!(inspect_ok(&w, &["services", ns]).contains("db "));

    // instances: all, healthy only, filtered; YAML too.
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let all = inspect_json(&w, &["instances", ns, "db"]);
    assert_eq!(ids(&all), ["db-1", "db-2", "manual", "user-auth-prod-01"]);
    let healthy = inspect_json(&w, &["instances", ns, "db", "--healthy"]);
    assert_eq!(ids(&healthy), ["db-1", "manual", "user-auth-prod-01"]);
    let v2 = inspect_json(&w, &["instances", ns, "db", "--filter", "version=v2"]);
    assert_eq!(ids(&v2), ["db-2"]);
    assert_eq!(v2[0]["address"], "10.23.0.2");
    assert_eq!(v2[0]["health"], "UNHEALTHY");
    let yaml = inspect_ok(&w, &["instances", ns, "db", "--healthy", "-o", "yaml"]);
    let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(ids(&parsed), ["db-1", "manual", "user-auth-prod-01"]);
    let table = inspect_ok(&w, &["instances", ns, "db"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("db-2") && l.contains("10.23.0.2") && l.contains("UNHEALTHY")),
        "{table}"
    );

    // explain: a pod, a static endpoint and an API instance.
    let pod = inspect_json(&w, &["explain", ns, "db", "db-2"]);
    assert_eq!(pod["Owner"]["Kind"], "Pod");
    assert_eq!(pod["Owner"]["Pod"], format!("{}/db-2", w.ns.name));
    assert_eq!(
        pod["Owner"]["Object"],
        format!("ServiceDiscovery {}/db", w.ns.name)
    );
    assert_eq!(pod["Health"]["Status"], "UNHEALTHY");
    assert_eq!(pod["Health"]["Sources"][0]["Source"], "Readiness");
    // Its last transition: when it turned UNHEALTHY (at registration here).
    let since = pod["Health"]["Since"].as_f64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(since > now - 300.0 && since <= now + 1.0, "{pod}");
    let text = inspect_ok(&w, &["explain", ns, "db", "db-2"]);
    assert!(
        text.contains(&format!("pod {}/db-2 via ServiceDiscovery", w.ns.name)),
        "{text}"
    );
    assert!(text.contains("readiness reports UNHEALTHY"), "{text}");
    assert!(text.contains("it has been UNHEALTHY since 20"), "{text}");
    let fixed = inspect_json(&w, &["explain", ns, "db", "user-auth-prod-01"]);
    assert_eq!(fixed["Owner"]["Kind"], "Static");
    assert_eq!(fixed["Instance"]["Attributes"]["tablename"], "UserAuth");
    let api = inspect_json(&w, &["explain", ns, "db", "manual"]);
    assert_eq!(api["Owner"]["Kind"], "Api");
    assert!(
        api["Explanation"][0]
            .as_str()
            .unwrap()
            .contains("Cloud Map API"),
        "{api}"
    );

    // Clear errors for what does not exist.
    let (ok, _, err) = inspect(&w, &["services", "no-such.ns"]);
    assert!(
        !ok && err.contains("no namespace named \"no-such.ns\""),
        "{err}"
    );
    let (ok, _, err) = inspect(&w, &["instances", ns, "nope"]);
    assert!(!ok && err.contains("ServiceNotFound"), "{err}");
    let (ok, _, err) = inspect(&w, &["explain", ns, "nope", "x"]);
    assert!(
        !ok && err.contains("has no service named \"nope\" (it has: db)"),
        "{err}"
    );
    let (ok, _, err) = inspect(&w, &["explain", ns, "db", "ghost"]);
    assert!(!ok && err.contains("InstanceNotFound"), "{err}");
    let (ok, _, err) = inspect(&w, &["instances", ns, "db", "--filter", "version"]);
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
}

/// Every metric the Grafana dashboard (charts/waymark/dashboards/waymark.json)
/// queries, as its expressions name them.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/waymark/dashboards/waymark.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} queries nothing");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            // Metric names: identifiers followed by a selector.
            let mut rest = expr;
            while let Some(at) = rest.find(['{', '[']) {
                let before = &rest[..at];
                let name = before
                    .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or("");
                if !name.is_empty() && rest.as_bytes()[at] == b'{' {
                    names.insert(name.to_string());
                }
                rest = &rest[at + 1..];
                // Skip the selector's own contents.
                if let Some(end) = rest.find(['}', ']']) {
                    rest = &rest[end + 1..];
                }
            }
        }
    }
    names
}

#[test]
fn the_dashboard_queries_only_metrics_waymark_exports() {
    use std::sync::atomic::Ordering;
    let wanted = dashboard_metrics();
    assert!(wanted.len() > 30, "{wanted:?}");
    let (port, code) = status_server();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let w = World::with(
        "ctl-dashboard",
        "DnsPrivate",
        Setup {
            extra_args: vec![
                "--rate-limit".into(),
                "1000".into(),
                "--audit-log".into(),
                audit.display().to_string(),
                "--dns-rate-limit".into(),
                "1".into(),
                "--dns-rate-limit-burst".into(),
                "1".into(),
            ],
            ..Setup::embedded()
        },
    );
    // Something behind every panel: a pod with an active check that fails
    // once (probes, a flip), API calls (one audited write), DNS queries
    // beyond the rate limit and a malformed one.
    w.discovery(
        "web",
        &format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  port: {port}\n  healthCheck: {{type: Http, path: /healthz, failureThreshold: 1, intervalSeconds: 1, timeoutSeconds: 1}}"
        ),
    );
    w.pod("web-1", "app: web");
    w.pod_status("web-1", &["127.0.0.1"], true);
    w.expect("web", &[("web-1", "HEALTHY")]);
    code.store(503, Ordering::SeqCst);
    w.expect("web", &[("web-1", "UNHEALTHY")]);
    let (status, _) = w.api(
        "CreateHttpNamespace",
        json!({"Name": format!("{}-api", w.ns.name)}),
    );
    assert_eq!(status, 200);
    let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    dns.send_to(b"\x12", ("127.0.0.1", w.dns_port)).unwrap();
    let name = format!("web.{}", w.registry_ns);
    for _ in 0..5 {
        let _ = Command::new("dig")
            .args([
                "+short",
                "+tries=1",
                "+time=1",
                "-p",
                &w.dns_port.to_string(),
            ])
            .args(["@127.0.0.1", &name, "A"])
            .output();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        let metrics = w.http_get("/metrics").unwrap_or_default();
        let exported = |name: &str| {
            metrics.lines().any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        };
        let missing: Vec<&String> = wanted.iter().filter(|m| !exported(m)).collect();
        if missing.is_empty() {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries metrics /metrics does not have: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("waymark_controller_leader 1"),
        "one replica leads"
    );
    assert!(
        metrics.contains(&format!(
            "waymark_registry_instances_by_health{{health=\"UNHEALTHY\",registry_namespace=\"{}\"}} 1",
            w.registry_ns
        )),
        "{metrics}"
    );
}

#[test]
fn a_standby_replica_takes_over_status_when_the_leader_dies() {
    let mut w = World::new("ctl-ha", "Http");
    w.discovery("ha", "  selector: {matchLabels: {app: ha}}");
    w.pod("ha-1", "app: ha");
    w.pod_status("ha-1", &["10.29.0.1"], true);
    w.expect("ha", &[("ha-1", "HEALTHY")]);
    let service_id_of = |api_port: u16| -> Option<String> {
        let listed = World::api_on(api_port, "ListServices", json!({}));
        listed["Services"]
            .as_array()?
            .iter()
            .find(|s| s["Name"] == "ha")
            .map(|s| s["Id"].as_str().unwrap().to_string())
    };
    let leader_id = eventually("leader's service", || service_id_of(w.api_port));
    eventually("status from the leader", || {
        (w.sd_status("ha", "{.status.serviceId}") == leader_id).then_some(())
    });

    // A second replica keeps its own registry in sync (to serve reads) but,
    // as a standby, writes nothing to Kubernetes.
    let dir = tempfile::tempdir().unwrap();
    let (api2, metrics2, dns2) = (free_port(), free_port(), free_port());
    let mut standby = w.spawn_run(&dir.path().join("data"), api2, metrics2, dns2);
    let standby_id = eventually("standby's registry in sync", || service_id_of(api2));
    assert_ne!(
        standby_id, leader_id,
        "each replica has its own embedded registry"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        w.sd_status("ha", "{.status.serviceId}"),
        leader_id,
        "the standby does not write status"
    );

    // The leader dies; within the lease duration the standby takes over.
    w.kill9();
    w.pod("ha-2", "app: ha");
    w.pod_status("ha-2", &["10.29.0.2"], true);
    eventually("status from the new leader", || {
        (w.sd_status("ha", "{.status.serviceId}/{.status.instances.total}")
            == format!("{standby_id}/2"))
        .then_some(())
    });
    let _ = standby.kill();
    let _ = standby.wait();
}

#[test]
fn custom_health_is_reported_through_the_api_for_pod_instances() {
    let w = World::new("ctl-custom", "DnsPrivate");
    w.discovery(
        "jobs",
        "  selector: {matchLabels: {app: jobs}}\n  healthCheck: {type: Custom}",
    );
    w.pod("jobs-1", "app: jobs");
    // Not Ready: with Custom health readiness does not decide.
    w.pod_status("jobs-1", &["10.23.0.1"], false);
    w.expect("jobs", &[("jobs-1", "HEALTHY")]);
    let service_id = w.sd_status("jobs", "{.status.serviceId}");
    let (status, body) = w.api(
        "UpdateInstanceCustomHealthStatus",
        json!({"ServiceId": service_id, "InstanceId": "jobs-1", "Status": "UNHEALTHY"}),
    );
    assert_eq!(status, 200, "{body}");
    w.expect("jobs", &[("jobs-1", "UNHEALTHY")]);
    eventually("status counts follow the report", || {
        (w.sd_status("jobs", "{.status.instances.unhealthy}") == "1").then_some(())
    });
    // A pod change re-syncs the instance but keeps the reported health.
    w.pod_status("jobs-1", &["10.23.0.1"], true);
    w.kubectl(&["label", "pod", "jobs-1", "tier=batch"]);
    std::thread::sleep(Duration::from_millis(500));
    w.expect("jobs", &[("jobs-1", "UNHEALTHY")]);
    // Still, the API cannot deregister the controller's pod.
    let (status, body) = w.api(
        "DeregisterInstance",
        json!({"ServiceId": service_id, "InstanceId": "jobs-1"}),
    );
    assert_eq!(
        (status, body["__type"].as_str()),
        (400, Some("ResourceInUse"))
    );
}

/// A loopback HTTP server answering every request with the status in `code`.
fn status_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicU16>) {
    use std::sync::atomic::{AtomicU16, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = std::sync::Arc::new(AtomicU16::new(200));
    let c = code.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.read(&mut buf);
            let status = c.load(Ordering::SeqCst);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, code)
}

#[test]
fn readiness_and_the_active_check_must_both_pass() {
    use std::sync::atomic::Ordering;
    let (port, code) = status_server();
    let w = World::new("ctl-active", "DnsPrivate");
    w.discovery(
        "web",
        &format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  port: {port}\n  healthCheck: {{type: Http, path: /healthz, failureThreshold: 1, intervalSeconds: 1, timeoutSeconds: 1}}"
        ),
    );
    w.pod("web-1", "app: web");
    w.pod_status("web-1", &["127.0.0.1"], true);
    w.expect("web", &[("web-1", "HEALTHY")]);

    // The check fails while the pod stays Ready.
    code.store(503, Ordering::SeqCst);
    w.expect("web", &[("web-1", "UNHEALTHY")]);
    eventually("status counts follow the check", || {
        (w.sd_status("web", "{.status.instances.unhealthy}") == "1").then_some(())
    });
    eventually("an InstanceUnhealthy Event", || {
        w.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .contains("InstanceUnhealthy")
        .then_some(())
    });

    // The check passes again.
    code.store(200, Ordering::SeqCst);
    w.expect("web", &[("web-1", "HEALTHY")]);
    eventually("an InstanceHealthy Event", || {
        w.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .contains("InstanceHealthy")
        .then_some(())
    });
    // The check passes but the pod is not Ready: unhealthy.
    w.pod_status("web-1", &["127.0.0.1"], false);
    w.expect("web", &[("web-1", "UNHEALTHY")]);
    // Neither passes, then only readiness comes back: still unhealthy.
    code.store(500, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2500));
    w.pod_status("web-1", &["127.0.0.1"], true);
    std::thread::sleep(Duration::from_millis(1000));
    w.expect("web", &[("web-1", "UNHEALTHY")]);
    code.store(200, Ordering::SeqCst);
    w.expect("web", &[("web-1", "HEALTHY")]);
}

/// The controller's credentials: everything, except registering in the
/// `vault` service unless `allow_vault`.
fn controller_credentials(allow_vault: bool) -> String {
    let deny = if allow_vault {
        ""
    } else {
        r#"
          - Sid: NotTheVault
            Effect: Deny
            Action: servicediscovery:RegisterInstance
            Resource: "*"
            Condition:
              StringEquals: {"servicediscovery:ServiceName": vault}"#
    };
    format!(
        r#"
principals:
  - name: waymark-controller
    inlinePolicies:
      - Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: "servicediscovery:*"
            Resource: "*"{deny}
"#
    )
}

#[test]
fn the_controllers_writes_are_decided_by_its_principals_policies() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.yaml");
    std::fs::write(&creds, controller_credentials(false)).unwrap();
    let w = World::with(
        "ctl-authz",
        "Http",
        Setup {
            extra_args: vec![
                "--auth-credentials".into(),
                creds.display().to_string(),
                "--auth-reload-seconds".into(),
                "0.25".into(),
                "--controller-principal".into(),
                "waymark-controller".into(),
            ],
            ..Setup::embedded()
        },
    );
    w.discovery("web", "  selector: {matchLabels: {app: web}}");
    w.discovery("vault", "  selector: {matchLabels: {app: vault}}");
    w.pod("web-1", "app: web");
    w.pod_status("web-1", &["10.30.0.1"], true);
    w.pod("vault-1", "app: vault");
    w.pod_status("vault-1", &["10.30.0.2"], true);
    let total = |sd: &str| w.sd_status(sd, "{.status.instances.total}");
    eventually("web registered", || (total("web") == "1").then_some(()));
    // The Deny names the service: the controller may create it, not fill it.
    eventually("vault refused", || {
        (w.condition("sd", "vault", "Synced") == ("False".into(), "AccessDenied".into()))
            .then_some(())
    });
    let message = w.sd_status(
        "vault",
        "{.status.conditions[?(@.type==\"Synced\")].message}",
    );
    assert!(
        message.contains("arn:aws:iam::000000000000:user/waymark-controller")
            && message.contains("servicediscovery:RegisterInstance")
            && message.contains("\"NotTheVault\""),
        "{message}"
    );
    assert_ne!(total("vault"), "1", "nothing registered in vault");
    let events = w.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=vault,reason=AccessDenied,type=Warning",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("servicediscovery:RegisterInstance"),
        "{events}"
    );

    // The policy is widened: without a restart, the vault fills.
    std::fs::write(&creds, controller_credentials(true)).unwrap();
    eventually("vault registered after the reload", || {
        (total("vault") == "1").then_some(())
    });
    assert_eq!(w.condition("sd", "vault", "Synced").0, "True");
    assert_eq!(total("web"), "1");
}

#[test]
fn a_controller_principal_needs_signed_access_and_a_known_name() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.yaml");
    std::fs::write(&creds, controller_credentials(true)).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&cp().kubeconfig)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--api-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["--controller-principal", "waymark-controller"]);
    assert!(
        err.contains("--controller-principal needs --auth sigv4"),
        "{err}"
    );
    let creds = creds.display().to_string();
    let err = run(&[
        "--auth-credentials",
        &creds,
        "--controller-principal",
        "nobody",
    ]);
    assert!(
        err.contains("\"nobody\" is not a principal of the credentials file"),
        "{err}"
    );
}

#[path = "../xds_support/mod.rs"]
mod xds_support;

/// A loopback port free on both 127.0.0.2 and 127.0.0.3 a moment ago: two
/// "pods" with their own loopback IPs and the ServiceDiscovery's one port.
fn port_free_on_two_loopback_ips() -> u16 {
    loop {
        let a = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.3", port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn xds_clients_follow_pod_readiness_and_drain_terminating_pods() {
    use xds_support::{Backends, GrpcClient, xds_client_bin};
    let bin = xds_client_bin();
    let port = port_free_on_two_loopback_ips();
    let backends = Backends::start(
        &bin,
        &[
            &format!("web-1=127.0.0.2:{port}"),
            &format!("web-2=127.0.0.3:{port}"),
        ],
    );
    assert_eq!(backends.ports.len(), 2);
    let xds_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_args = vec!["--xds-addr".into(), format!("127.0.0.1:{xds_port}")];
    let w = World::with("ctl-xds", "Http", setup);
    w.discovery(
        "web",
        &format!("  selector: {{matchLabels: {{app: web}}}}\n  port: {port}\n  drainSeconds: 60"),
    );
    let node = w.node("eu-west-1b", "eu-west-1");
    for (pod, ip) in [("web-1", "127.0.0.2"), ("web-2", "127.0.0.3")] {
        w.pod_on(pod, "app: web", Some(&node));
        w.pod_status(pod, &[ip], true);
    }
    w.expect("web", &[("web-1", "HEALTHY"), ("web-2", "HEALTHY")]);
    let mut grpc = GrpcClient::start(&bin, xds_port, &format!("web.{}", w.registry_ns));
    grpc.until_served_by(20, &["web-1", "web-2"]);

    // Not Ready: no traffic; Ready again: traffic again.
    w.pod_status("web-1", &["127.0.0.2"], false);
    grpc.until_served_by(20, &["web-2"]);
    // The push of that change, on the status with its delay.
    let delay = eventually("the last xDS push on the status", || {
        w.sd_status("web", "{.status.xds.lastPush.delayMilliseconds}")
            .parse::<u64>()
            .ok()
    });
    assert!(delay < 10_000, "{delay} ms");
    assert_eq!(w.sd_status("web", "{.status.xds.clients}"), "1");
    w.pod_status("web-1", &["127.0.0.2"], true);
    grpc.until_served_by(20, &["web-1", "web-2"]);

    // Terminating (a bound pod stays so without a kubelet): drained at once,
    // while its instance stays registered for drainSeconds.
    w.kubectl(&["delete", "pod", "web-2", "--wait=false"]);
    grpc.until_served_by(20, &["web-1"]);
    let report = grpc.send(100);
    assert_eq!(report.counts.get("web-1"), Some(&100), "{report:?}");
    let got = w.expect("web", &[("web-1", "HEALTHY"), ("web-2", "UNHEALTHY")]);
    assert!(got[1].2.get("WAYMARK_DRAINING").is_some(), "{got:?}");

    for pod in ["web-1", "web-2"] {
        w.kubectl(&["delete", "pod", pod, "--grace-period=0", "--force"]);
    }
    w.cp.kubectl_ok(&["delete", "node", &node]);
}

#[test]
fn editing_the_traffic_split_of_a_service_discovery_moves_xds_traffic() {
    use xds_support::{Backends, GrpcClient, xds_client_bin};
    let bin = xds_client_bin();
    let port = port_free_on_two_loopback_ips();
    let _backends = Backends::start(
        &bin,
        &[
            &format!("web-v1=127.0.0.2:{port}"),
            &format!("web-v2=127.0.0.3:{port}"),
        ],
    );
    let xds_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_args = vec!["--xds-addr".into(), format!("127.0.0.1:{xds_port}")];
    let w = World::with("ctl-split", "Http", setup);
    let spec = |split: &str| {
        format!(
            "  selector: {{matchLabels: {{app: web}}}}\n  port: {port}\n  labelAttributes: {{include: [version]}}{split}"
        )
    };
    w.discovery(
        "web",
        &spec("\n  trafficSplit: {attribute: version, weights: {v1: 100, v2: 0}}"),
    );
    for (pod, ip, version) in [("web-v1", "127.0.0.2", "v1"), ("web-v2", "127.0.0.3", "v2")] {
        w.pod(pod, &format!("app: web, version: {version}"));
        w.pod_status(pod, &[ip], true);
    }
    w.expect("web", &[("web-v1", "HEALTHY"), ("web-v2", "HEALTHY")]);
    let mut grpc = GrpcClient::start(&bin, xds_port, &format!("web.{}", w.registry_ns));
    grpc.until_served_by(20, &["web-v1"]);

    // Green: one edit of the CR moves every request.
    w.discovery(
        "web",
        &spec("\n  trafficSplit: {attribute: version, weights: {v1: 0, v2: 100}}"),
    );
    grpc.until_served_by(20, &["web-v2"]);
    // Without a split, the whole service again.
    w.kubectl(&[
        "patch",
        "servicediscovery",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/trafficSplit"}]"#,
    ]);
    grpc.until_served_by(20, &["web-v1", "web-v2"]);
}

#[test]
fn an_xds_nack_is_reported_on_the_service_discovery_status() {
    use xds_support::{Backends, GrpcClient, xds_client_bin};
    let bin = xds_client_bin();
    let port = port_free_on_two_loopback_ips();
    let _backends = Backends::start(&bin, &[&format!("web-1=127.0.0.2:{port}")]);
    let xds_port = free_port();
    let mut setup = Setup::embedded();
    setup.extra_args = vec!["--xds-addr".into(), format!("127.0.0.1:{xds_port}")];
    let w = World::with("ctl-nack", "Http", setup);
    w.discovery(
        "web",
        &format!("  selector: {{matchLabels: {{app: web}}}}\n  port: {port}"),
    );
    w.pod("web-1", "app: web");
    w.pod_status("web-1", &["127.0.0.2"], true);
    w.expect("web", &[("web-1", "HEALTHY")]);
    let mut grpc = GrpcClient::start(&bin, xds_port, &format!("web.{}", w.registry_ns));
    grpc.until_served_by(20, &["web-1"]);
    // The connected client is counted; nothing was rejected yet.
    eventually("the xDS client on the status", || {
        (w.sd_status("web", "{.status.xds.clients}") == "1").then_some(())
    });
    assert_eq!(w.sd_status("web", "{.status.xds.lastNack}"), "");

    // A second pod with the same address: grpc-go rejects the endpoints.
    w.pod("web-2", "app: web");
    w.pod_status("web-2", &["127.0.0.2"], true);
    let message = eventually("the NACK on the status", || {
        let m = w.sd_status("web", "{.status.xds.lastNack.message}");
        (!m.is_empty()).then_some(m)
    });
    assert!(message.contains("duplicate endpoint"), "{message}");
    assert_eq!(
        w.sd_status("web", "{.status.xds.lastNack.type}"),
        "endpoint"
    );
    assert_eq!(
        w.sd_status("web", "{.status.xds.lastNack.resource}"),
        format!("web.{}", w.registry_ns)
    );
    assert_eq!(
        w.sd_status("web", "{.status.xds.lastNack.node}"),
        "xds-test-client"
    );
    // The client keeps its last good configuration.
    let report = grpc.send(50);
    assert_eq!(report.counts.get("web-1"), Some(&50), "{report:?}");
    // Gone: no longer counted (the NACK stays on record).
    drop(grpc);
    eventually("the xDS client leaving the status", || {
        (w.sd_status("web", "{.status.xds.clients}") == "0").then_some(())
    });
    assert!(
        !w.sd_status("web", "{.status.xds.lastNack.message}")
            .is_empty()
    );
}
