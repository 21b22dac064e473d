//! The Helm chart (`charts/waymark`) and the plain manifests (`manifests/`), with a Helm
//! built from its Go module (`scripts/build-helm.sh`, cached) and a real control plane
//! (`tests/common`):
//!
//! - generated files are up to date (the chart's CRDs, `manifests/waymark.yaml`);
//! - `helm lint` and `helm template` pass, the values schema refuses what it must, every
//!   rendered flag exists in `waymark run`, every option renders objects the API server
//!   accepts;
//! - `helm install` and `kubectl apply -f manifests/` create every object;
//! - `waymark run`, out of cluster with a token of the chart's ServiceAccount (TokenRequest
//!   API) and the Deployment's own arguments, does its whole job — so the chart's RBAC is
//!   sufficient — and that identity can do nothing beyond it.
//!
//! Each test works in its own Kubernetes namespace (and Helm release), so they run in
//! parallel on one control plane.

mod common;
mod support;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{Cleanup, ControlPlane, repo_root, stderr, stdout, unique_name};
use serde_json::{Value, json};
use support::{BIN, free_port, http_get};

const CHART: &str = "charts/waymark";
const TEST_LABEL: &str = "waymark.dev/test";

/// The Helm binary: `$WAYMARK_HELM` (scripts/test.sh exports it), else the one
/// `scripts/build-helm.sh` builds or finds up to date in the cache.
fn helm_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("WAYMARK_HELM").filter(|p| !p.is_empty()) {
            return path.into();
        }
        let script = repo_root().join("scripts/build-helm.sh");
        let out = Command::new(&script)
            .arg("--print-bin")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "scripts/build-helm.sh failed");
        PathBuf::from(stdout(&out).trim())
    })
}

/// A `helm` command with its own (empty) configuration, cache and data directories.
struct Helm {
    home: tempfile::TempDir,
}

impl Helm {
    fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(helm_bin());
        let home = self.home.path();
        cmd.env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .current_dir(repo_root())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }

    /// Runs helm, panics with its output unless it succeeds, returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "helm {args:?} failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Writes a values file into this helm's directory.
    fn values(&self, name: &str, yaml: &str) -> String {
        let path = self.home.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// `helm template` of the chart: the rendered documents, parsed.
    fn template(&self, release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["template", release, CHART, "--namespace", namespace];
        args.extend_from_slice(extra);
        parse_documents(&self.ok(&args))
    }
}

/// The documents of a multi-document YAML stream, as JSON values (empty ones skipped).
fn parse_documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The one document of `kind` named `name`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| {
            let all: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]))
                .collect();
            panic!("no {kind} {name} among {all:?}")
        })
}

/// The container args of the rendered Deployment.
fn deployment_args(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// Every option of the chart turned on (or away from its default), for lint, template and a
/// server-side dry run. `wns` names the Waymark Namespace the values create.
fn every_option_values(wns: &str) -> String {
    format!(
        r#"
image: {{repository: registry.example.com/platform/waymark, digest: "sha256:{digest}"}}
imagePullSecrets: [{{name: regcred}}]
fullnameOverride: wm-opts
log: {{level: "waymark=debug,info", format: json}}
listenAddress: "[::]"
watchNamespaces: [shop, payments]
selector: "team in (payments,shop)"
clusterId: prod-eu-1
resyncSeconds: 60
leaderElection: {{enabled: false}}
aws: {{region: eu-west-1, accountId: "123456789012"}}
audit: {{enabled: true, reads: true}}
rateLimit: {{perSecond: 50, burst: 100, dnsPerSecond: 1000}}
auth: {{mode: sigv4, credentials: {{secretName: wm-api-keys, key: keys.yaml}}, reloadSeconds: 2, controllerPrincipal: waymark-controller}}
tls: {{secretName: wm-api-tls}}
persistence: {{enabled: false, emptyDirSizeLimit: 2Gi}}
service:
  api: {{type: NodePort, annotations: {{example.com/a: b}}}}
  dataAlias: {{enabled: true}}
  dns: {{port: 1053}}
  dnsPublic: {{enabled: true, type: LoadBalancer}}
  metrics: {{port: 9100}}
  xds: {{enabled: true, port: 18001}}
serviceAccount: {{name: waymark-opts, annotations: {{example.com/role: dns}}}}
rbac: {{aggregateToDefaultRoles: false}}
resources: {{requests: {{cpu: 50m, memory: 64Mi}}, limits: {{memory: 256Mi}}}}
terminationGracePeriodSeconds: 10
extraArgs: ["--lease-duration-seconds=30"]
extraEnv: [{{name: RUST_BACKTRACE, value: "1"}}]
podAnnotations: {{example.com/scrape: "true"}}
podLabels: {{team: platform}}
commonLabels: {{cost-center: "42"}}
nodeSelector: {{kubernetes.io/os: linux}}
tolerations: [{{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}}]
affinity: {{nodeAffinity: {{preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 1, preference: {{matchExpressions: [{{key: infra, operator: Exists}}]}}}}]}}}}
serviceMonitor: {{enabled: true, labels: {{release: prometheus}}, relabelings: [{{action: labeldrop, regex: pod}}]}}
dashboards: {{enabled: true, annotations: {{grafana_folder: Waymark}}}}
networkPolicy:
  enabled: true
  ingress:
    dnsFrom: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}}}}]
    xdsFrom: [{{namespaceSelector: {{matchLabels: {{mesh: enabled}}}}}}]
  egress: [{{ports: [{{port: 6443, protocol: TCP}}]}}]
waymarkNamespaces:
  - name: {wns}
    labels: {{team: payments}}
    spec: {{type: DnsPrivate, description: created by the chart}}
serviceDiscoveries:
  - name: inventory-manager
    labels: {{team: payments}}
    spec:
      namespaceRef: {{name: {wns}}}
      selector: {{matchLabels: {{app: inventory-manager}}}}
      port: http
      dns: {{records: [{{type: SRV}}, {{type: A}}]}}
      labelAttributes: {{include: [app, version]}}
"#,
        digest = "0".repeat(64)
    )
}

/// Three replicas on a shared etcd registry, with TLS and authentication from Secrets.
const HA_VALUES: &str = r#"
replicaCount: 3
fullnameOverride: wm-ha
store:
  type: etcd
  etcd:
    endpoints: [etcd-0.etcd.infra:2379, etcd-1.etcd.infra:2379, etcd-2.etcd.infra:2379]
    prefix: /registries/prod/
    timeoutSeconds: 3
    staleAfterSeconds: 10
    maxTxnOps: 512
    tls: {secretName: etcd-client-tls}
    auth: {secretName: etcd-auth, usernameKey: user}
auth:
  mode: sigv4
  credentials: {secretName: wm-ha-api-keys}
  policies: {configMapName: wm-ha-api-policies}
"#;

// --- generated files -----------------------------------------------------------------

#[test]
fn chart_crds_are_the_generated_crds() {
    let path = repo_root().join(CHART).join("crds/waymark.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); run scripts/generate.sh",
            path.display()
        )
    });
    assert!(
        committed == waymark::crd::crds_yaml(),
        "{} is stale; run scripts/generate.sh and commit the result",
        path.display()
    );
}

#[test]
fn committed_manifests_are_up_to_date() {
    let script = repo_root().join("scripts/render-manifests.sh");
    let out = Command::new(&script)
        .arg(helm_bin())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rendered = stdout(&out);
    let committed = std::fs::read_to_string(repo_root().join("manifests/waymark.yaml"))
        .expect("manifests/waymark.yaml exists; run scripts/generate.sh");
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()))
            + 1;
        panic!(
            "manifests/waymark.yaml is stale (first difference at line {line}); run \
             scripts/generate.sh and commit the result"
        );
    }
    // What it holds: the namespace first, the CRDs, then the release `waymark` in it.
    let docs = parse_documents(&committed);
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[0]["metadata"]["name"], "waymark-system");
    let crds: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 2);
    for d in docs.iter().filter(|d| {
        d["kind"] != "CustomResourceDefinition"
            && d["kind"] != "Namespace"
            && !d["kind"].as_str().unwrap().starts_with("Cluster")
    }) {
        assert_eq!(d["metadata"]["namespace"], "waymark-system", "{d}");
    }
    find(&docs, "Deployment", "waymark");
    find(&docs, "Service", "data-waymark");
}

// --- lint, schema, template ---------------------------------------------------------------

#[test]
fn helm_lint_passes_with_defaults_and_every_option() {
    let helm = Helm::new();
    let out = helm.ok(&["lint", "--strict", CHART]);
    assert!(
        out.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{out}"
    );
    // A dotless Waymark Namespace name: helm lint checks every kind `Namespace` as a core
    // Namespace (a DNS label), whatever its apiVersion, and warns about `quickship.local`.
    let values = helm.values("every-option.yaml", &every_option_values("opts-example"));
    let out = helm.ok(&["lint", "--strict", CHART, "-f", &values]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn values_schema_refuses_more_than_one_replica_and_unknown_or_bad_values() {
    let helm = Helm::new();
    for (set, expect) in [
        ("replicaCount=2", "/replicaCount"),
        ("replicaCount=-1", "/replicaCount"),
        (
            "replicaCuont=1",
            "additional properties 'replicaCuont' not allowed",
        ),
        ("aws.accountId=12345", "/aws/accountId"),
        ("log.format=yaml", "/log/format"),
        ("listenAddress=localhost", "/listenAddress"),
        ("persistence.size=lots", "/persistence/size"),
        // Several replicas need the shared store, with endpoints, and one leader.
        ("replicaCount=3", "/replicaCount"),
        ("store.type=etcd", "/store/etcd/endpoints"),
        (
            "store.type=etcd,store.etcd.endpoints={e:2379},replicaCount=3,leaderElection.enabled=false",
            "/replicaCount",
        ),
        (
            "store.type=etcd,store.etcd.endpoints={http://e:2379}",
            "/store/etcd/endpoints/0",
        ),
        ("store.type=consul", "/store/type"),
        ("podAntiAffinity=always", "/podAntiAffinity"),
        // Signed requests need the Secret holding the keys.
        ("auth.mode=sigv4", "/auth/credentials/secretName"),
        ("auth.mode=iam", "/auth/mode"),
        (
            "auth.mode=sigv4,auth.credentials.secretName=Bad_Name",
            "/auth/credentials/secretName",
        ),
        ("auth.reloadSeconds=0", "/auth/reloadSeconds"),
        ("rateLimit.perSecond=-1", "/rateLimit/perSecond"),
        ("audit.enabled=yes", "/audit/enabled"),
        ("tls.secretName=Bad_Name", "/tls/secretName"),
        ("tls.secret=x", "additional properties 'secret' not allowed"),
    ] {
        let out = helm.run(&["template", "x", CHART, "--set", set]);
        assert!(!out.status.success(), "--set {set} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains("don't meet the specifications of the schema") && err.contains(expect),
            "--set {set}: {err}"
        );
    }
    // Three replicas on etcd are fine.
    let docs = helm.template(
        "x",
        "default",
        &[
            "--set",
            "store.type=etcd,store.etcd.endpoints={e:2379},replicaCount=3",
        ],
    );
    assert_eq!(
        find(&docs, "Deployment", "x-waymark")["spec"]["replicas"],
        3
    );
    // Zero replicas (scaled down) is allowed.
    let docs = helm.template("x", "default", &["--set", "replicaCount=0"]);
    assert_eq!(
        find(&docs, "Deployment", "x-waymark")["spec"]["replicas"],
        0
    );
}

#[test]
fn default_template_is_a_single_locked_down_replica_with_every_service() {
    let helm = Helm::new();
    let docs = helm.template("waymark", "waymark-system", &[]);
    let kinds: BTreeSet<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "ServiceAccount/waymark",
        "PersistentVolumeClaim/waymark-data",
        "ClusterRole/waymark",
        "ClusterRole/waymark-view",
        "ClusterRole/waymark-edit",
        "ClusterRoleBinding/waymark",
        "Role/waymark-leader-election",
        "RoleBinding/waymark-leader-election",
        "Service/waymark",
        "Service/data-waymark",
        "Service/waymark-dns",
        "Service/waymark-metrics",
        "Deployment/waymark",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, want);

    let deploy = find(&docs, "Deployment", "waymark");
    assert_eq!(deploy["spec"]["replicas"], 1);
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "waymark");
    let args = deployment_args(deploy);
    for want in [
        "run",
        "--api-addr=0.0.0.0:8080",
        "--dns-addr=0.0.0.0:5353",
        "--metrics-addr=0.0.0.0:9090",
        "--data-dir=/var/lib/waymark/data",
        "--lease-namespace=waymark-system",
        "--lease-name=waymark",
        // auth.mode none by default: the pod's address is not loopback, so the open API
        // must be asked for.
        "--auth=none",
        "--allow-unauthenticated-remote",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    let c = &pod["containers"][0];
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/var/lib/waymark");
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "waymark-data"
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "NO_COLOR"]);

    // Services: each port reaches a container port by name.
    let container_ports: Vec<(String, i64, String)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["containerPort"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let ports = |svc: &str| -> Vec<(i64, String, i64)> {
        find(&docs, "Service", svc)["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let target = p["targetPort"].as_str().unwrap();
                let (_, container, proto) = container_ports
                    .iter()
                    .find(|(n, _, _)| n == target)
                    .unwrap_or_else(|| panic!("{svc}: no container port named {target}"));
                assert_eq!(p["protocol"].as_str().unwrap(), proto);
                (p["port"].as_i64().unwrap(), proto.clone(), *container)
            })
            .collect()
    };
    assert_eq!(ports("waymark"), [(8080, "TCP".into(), 8080)]);
    assert_eq!(ports("data-waymark"), [(8080, "TCP".into(), 8080)]);
    assert_eq!(
        ports("waymark-dns"),
        [(53, "UDP".into(), 5353), (53, "TCP".into(), 5353)]
    );
    assert_eq!(ports("waymark-metrics"), [(9090, "TCP".into(), 9090)]);
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    for svc in ["waymark", "data-waymark", "waymark-dns", "waymark-metrics"] {
        assert_eq!(&find(&docs, "Service", svc)["spec"]["selector"], selector);
    }
}

/// The ClusterRole and Role rules, exactly: any new permission must be added here on
/// purpose (and be used by the code — the RBAC test below shows each one is needed).
#[test]
fn rbac_rules_are_exactly_what_waymark_uses() {
    let helm = Helm::new();
    let rules = |docs: &[Value], kind: &str, name: &str| -> BTreeSet<String> {
        find(docs, kind, name)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                let list = |k: &str| -> Vec<String> {
                    r[k].as_array()
                        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default()
                };
                let names = list("resourceNames").join(",");
                let mut out = Vec::new();
                for g in list("apiGroups") {
                    for res in list("resources") {
                        for v in list("verbs") {
                            out.push(format!("{g}/{res}[{names}]:{v}"));
                        }
                    }
                }
                out
            })
            .collect()
    };
    let docs = helm.template("waymark", "waymark-system", &[]);
    let cluster = rules(&docs, "ClusterRole", "waymark");
    let want: BTreeSet<String> = [
        "/pods[]:list",
        "/pods[]:watch",
        "/services[]:list",
        "/services[]:watch",
        "/nodes[]:list",
        "/nodes[]:watch",
        "/pods/status[]:patch",
        "/namespaces[kube-system]:get",
        "waymark.dev/waymarknamespaces[]:list",
        "waymark.dev/waymarknamespaces[]:watch",
        "waymark.dev/waymarknamespaces[]:patch",
        "waymark.dev/waymarknamespaces/status[]:patch",
        "waymark.dev/servicediscoveries[]:list",
        "waymark.dev/servicediscoveries[]:watch",
        "waymark.dev/servicediscoveries[]:create",
        "waymark.dev/servicediscoveries[]:patch",
        "waymark.dev/servicediscoveries[]:delete",
        "waymark.dev/servicediscoveries/status[]:patch",
        "events.k8s.io/events[]:create",
        "events.k8s.io/events[]:patch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(cluster, want);
    let lease = rules(&docs, "Role", "waymark-leader-election");
    let want: BTreeSet<String> = [
        "coordination.k8s.io/leases[]:create",
        "coordination.k8s.io/leases[waymark]:get",
        "coordination.k8s.io/leases[waymark]:update",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(lease, want);
    let binding = find(&docs, "RoleBinding", "waymark-leader-election");
    assert_eq!(binding["metadata"]["namespace"], "waymark-system");

    // A fixed cluster id needs no access to kube-system; without leader election there is
    // no Lease to touch.
    let docs = helm.template(
        "waymark",
        "waymark-system",
        &[
            "--set",
            "clusterId=prod",
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    assert!(
        !rules(&docs, "ClusterRole", "waymark")
            .iter()
            .any(|r| r.starts_with("/namespaces"))
    );
    assert!(!docs.iter().any(|d| d["kind"] == "Role"));
}

#[test]
fn every_rendered_flag_is_a_flag_of_waymark_run() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = stdout(&out);
    let helm = Helm::new();
    let values = helm.values("every-option.yaml", &every_option_values("opts-example"));
    let default = helm.template("waymark", "waymark-system", &[]);
    let every = helm.template("waymark", "waymark-system", &["-f", &values]);
    let ha_values = helm.values("ha.yaml", HA_VALUES);
    let ha = helm.template("waymark", "waymark-system", &["-f", &ha_values]);
    let mut seen = BTreeSet::new();
    for (docs, name) in [(&default, "waymark"), (&every, "wm-opts"), (&ha, "wm-ha")] {
        let args = deployment_args(find(docs, "Deployment", name));
        assert_eq!(args[0], "run");
        for arg in &args[1..] {
            let flag = arg.split('=').next().unwrap();
            assert!(
                help.contains(&format!("      {flag} "))
                    || help.contains(&format!("      {flag}\n")),
                "{flag} (rendered as {arg:?}) is not a flag of `waymark run`"
            );
            seen.insert(flag.to_owned());
        }
        // And every value parses: with a kubeconfig that does not exist, `waymark run` gets
        // past argument parsing (clap exits 2 on a bad value) and fails on the kubeconfig,
        // before it binds or opens anything.
        let out = Command::new(BIN)
            .args(&args)
            .args(["--kubeconfig", "/nonexistent/kubeconfig"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("/nonexistent/kubeconfig"), "{args:?}: {err}");
    }
    // Every value that maps to a flag was rendered at least once.
    for flag in [
        "--watch-namespaces",
        "--selector",
        "--cluster-id",
        "--resync-seconds",
        "--disable-leader-election",
        "--lease-duration-seconds",
        "--dns-public-addr",
        "--xds-addr",
        "--log",
        "--log-format",
        "--region",
        "--account-id",
        "--store",
        "--etcd-prefix",
        "--etcd-timeout-seconds",
        "--stale-after-seconds",
        "--etcd-max-txn-ops",
        "--etcd-ca",
        "--etcd-cert",
        "--etcd-key",
        "--auth",
        "--auth-credentials",
        "--auth-policies",
        "--auth-reload-seconds",
        "--allow-unauthenticated-remote",
        "--tls-cert",
        "--tls-key",
    ] {
        assert!(seen.contains(flag), "{flag} never rendered");
    }
    let args = deployment_args(find(&every, "Deployment", "wm-opts"));
    for want in [
        "--api-addr=[::]:8080",
        "--watch-namespaces=shop,payments",
        "--selector=team in (payments,shop)",
        "--log=waymark=debug,info",
        "--account-id=123456789012",
        "--auth=sigv4",
        "--auth-credentials=/etc/waymark/auth/keys.yaml",
        "--auth-reload-seconds=2",
        "--tls-cert=/etc/waymark/api-tls/tls.crt",
        "--tls-key=/etc/waymark/api-tls/tls.key",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    for unwanted in ["--allow-unauthenticated-remote", "--auth-policies"] {
        assert!(
            !args.iter().any(|a| a.starts_with(unwanted)),
            "{unwanted} with sigv4 and no policies ConfigMap: {args:?}"
        );
    }
}

#[test]
fn every_option_renders_objects_the_api_server_accepts() {
    let cp = cp();
    let ns = cp.create_namespace("helm-opts");
    let wns = format!("{}.opts", ns.name);
    let helm = Helm::new();
    let values = helm.values("every-option.yaml", &every_option_values(&wns));
    let docs = helm.template("opts", &ns.name, &["-f", &values]);

    let deploy = find(&docs, "Deployment", "wm-opts");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "2Gi");
    // The API's certificate Secret, mounted whole (never subPath) so renewals arrive.
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "api-tls", "secret": {"secretName": "wm-api-tls", "defaultMode": 0o440}})),
        "{volumes:?}"
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(
        mounts.contains(
            &json!({"name": "api-tls", "mountPath": "/etc/waymark/api-tls", "readOnly": true})
        ),
        "{mounts:?}"
    );
    assert_eq!(pod["serviceAccountName"], "waymark-opts");
    assert_eq!(
        pod["containers"][0]["image"],
        format!(
            "registry.example.com/platform/waymark@sha256:{}",
            "0".repeat(64)
        )
    );
    assert!(!docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
    assert!(!docs.iter().any(|d| d["kind"] == "Role"));
    let public = find(&docs, "Service", "wm-opts-dns-public");
    assert_eq!(public["spec"]["type"], "LoadBalancer");
    let xds = find(&docs, "Service", "wm-opts-xds");
    assert_eq!(xds["spec"]["ports"][0]["port"], 18001);
    assert_eq!(xds["spec"]["ports"][0]["targetPort"], "xds");
    let np = find(&docs, "NetworkPolicy", "wm-opts");
    assert!(
        np["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| {
                rule["ports"][0]["port"] == "xds"
                    && rule["from"][0]["namespaceSelector"]["matchLabels"]["mesh"] == "enabled"
            }),
        "{np}"
    );
    let sm = find(&docs, "ServiceMonitor", "wm-opts");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "metrics"
    );
    let metrics = find(&docs, "Service", "wm-opts-metrics");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &metrics["metadata"]["labels"][k], v,
            "ServiceMonitor selects {k}"
        );
    }
    // The Grafana dashboard, as Grafana's sidecar loads it: the chart's file, whole.
    let dashboard = find(&docs, "ConfigMap", "wm-opts-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Waymark"
    );
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["waymark.json"].as_str().unwrap()).unwrap();
    let file = repo_root().join("charts/waymark/dashboards/waymark.json");
    let source: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(shipped, source);
    let np = find(&docs, "NetworkPolicy", "wm-opts");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let sd = find(&docs, "ServiceDiscovery", "inventory-manager");
    assert_eq!(sd["metadata"]["namespace"], ns.name.as_str());
    assert_eq!(
        sd["spec"]["labelAttributes"]["include"],
        json!(["app", "version"])
    );
    assert_eq!(sd["metadata"]["labels"]["team"], "payments");

    // Everything but the ServiceMonitor (no Prometheus Operator CRD here) through the real
    // API server's validation and admission, CEL rules of the Waymark CRDs included.
    let rest: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] != "ServiceMonitor")
        .collect();
    server_dry_run(
        cp,
        &ns.name,
        &rest,
        &[
            "deployment.apps/wm-opts",
            "service/data-wm-opts",
            "networkpolicy.networking.k8s.io/wm-opts",
            "configmap/wm-opts-dashboard",
            "servicediscovery.waymark.dev/inventory-manager",
        ],
    );
}

/// Sends `docs` through the real API server's validation and admission (`kubectl apply
/// --dry-run=server`) in `namespace`; each of `expect` must be among the objects applied.
fn server_dry_run<T: serde::Serialize>(
    cp: &ControlPlane,
    namespace: &str,
    docs: &[T],
    expect: &[&str],
) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": docs});
    let out = cp.kubectl_with_stdin(
        &["apply", "--dry-run=server", "-n", namespace, "-f", "-"],
        &list.to_string(),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let applied = stdout(&out);
    for what in expect {
        assert!(applied.contains(what), "{what} not applied:\n{applied}");
    }
}

#[test]
fn ha_values_render_replicas_on_etcd_that_the_api_server_accepts() {
    let cp = cp();
    let ns = cp.create_namespace("helm-ha");
    let helm = Helm::new();
    let values = helm.values("ha.yaml", HA_VALUES);
    let docs = helm.template("ha", &ns.name, &["-f", &values]);

    let deploy = find(&docs, "Deployment", "wm-ha");
    assert_eq!(deploy["spec"]["replicas"], 3);
    // No volume to hand over: a new replica starts before an old one stops.
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let args = deployment_args(deploy);
    for want in [
        "--store=etcd://etcd-0.etcd.infra:2379,etcd-1.etcd.infra:2379,etcd-2.etcd.infra:2379",
        "--etcd-prefix=/registries/prod/",
        "--etcd-timeout-seconds=3",
        "--stale-after-seconds=10",
        "--etcd-max-txn-ops=512",
        "--etcd-ca=/etc/waymark/etcd-tls/ca.crt",
        "--etcd-cert=/etc/waymark/etcd-tls/tls.crt",
        "--etcd-key=/etc/waymark/etcd-tls/tls.key",
        "--lease-name=wm-ha",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--data-dir")),
        "no data directory on etcd: {args:?}"
    );
    assert!(
        !args.iter().any(|a| a.contains("password")),
        "the password stays out of the args: {args:?}"
    );
    let pod = &deploy["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let secret_env = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))["valueFrom"]["secretKeyRef"]
            .clone()
    };
    assert_eq!(
        secret_env("WAYMARK_ETCD_USERNAME"),
        json!({"name": "etcd-auth", "key": "user"})
    );
    assert_eq!(
        secret_env("WAYMARK_ETCD_PASSWORD"),
        json!({"name": "etcd-auth", "key": "password"})
    );
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "etcd-tls", "secret": {"secretName": "etcd-client-tls", "defaultMode": 0o440}},
            {"name": "auth-credentials", "secret": {"secretName": "wm-ha-api-keys", "defaultMode": 0o440}},
            {"name": "auth-policies", "configMap": {"name": "wm-ha-api-policies"}},
        ])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([
            {"name": "etcd-tls", "mountPath": "/etc/waymark/etcd-tls", "readOnly": true},
            {"name": "auth-credentials", "mountPath": "/etc/waymark/auth", "readOnly": true},
            {"name": "auth-policies", "mountPath": "/etc/waymark/auth-policies", "readOnly": true},
        ])
    );
    // Signed requests with the mounted keys and policies; never the open API.
    for want in [
        "--auth=sigv4",
        "--auth-credentials=/etc/waymark/auth/credentials.yaml",
        "--auth-policies=/etc/waymark/auth-policies/policies.yaml",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a == "--allow-unauthenticated-remote"));
    assert!(!docs.iter().any(|d| d["kind"] == "PersistentVolumeClaim"));
    // Replicas spread over nodes, and a drain takes one at a time.
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    let term =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        term["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        &term["podAffinityTerm"]["labelSelector"]["matchLabels"],
        selector
    );
    let pdb = find(&docs, "PodDisruptionBudget", "wm-ha");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    // `hard` makes the spread required; an affinity of the user's own is kept as it is.
    let hard = helm.template(
        "ha",
        &ns.name,
        &["-f", &values, "--set", "podAntiAffinity=hard"],
    );
    let hard_pod = &find(&hard, "Deployment", "wm-ha")["spec"]["template"]["spec"];
    assert_eq!(
        hard_pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    // One replica has nothing to spread or protect.
    let one = helm.template("ha", &ns.name, &["-f", &values, "--set", "replicaCount=1"]);
    assert!(!one.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
    assert!(find(&one, "Deployment", "wm-ha")["spec"]["template"]["spec"]["affinity"].is_null());

    // The whole HA install through the real API server's validation and admission.
    server_dry_run(
        cp,
        &ns.name,
        &docs,
        &["deployment.apps/wm-ha", "poddisruptionbudget.policy/wm-ha"],
    );
}

// --- install --------------------------------------------------------------------------------

fn cp() -> &'static ControlPlane {
    let cp = common::control_plane();
    cp.install_crds();
    cp
}

/// A Helm release in a test namespace; uninstalled on drop when the cluster is shared.
struct Release {
    helm: Helm,
    cp: &'static ControlPlane,
    name: String,
    namespace: String,
}

impl Release {
    fn install(cp: &'static ControlPlane, namespace: &str, values: &str) -> Self {
        let helm = Helm::new();
        let name = unique_name("wm");
        let values = helm.values("values.yaml", values);
        let kubeconfig = cp.kubeconfig.to_str().unwrap();
        let out = helm.ok(&[
            "install",
            &name,
            CHART,
            "--namespace",
            namespace,
            "--kubeconfig",
            kubeconfig,
            "-f",
            &values,
        ]);
        assert!(out.contains("STATUS: deployed"), "{out}");
        // NOTES.txt tells how to discover a service.
        assert!(
            out.contains("aws servicediscovery discover-instances"),
            "{out}"
        );
        assert!(out.contains("dig @"), "{out}");
        Self {
            helm,
            cp,
            name,
            namespace: namespace.to_owned(),
        }
    }

    fn fullname(&self) -> String {
        format!("{}-waymark", self.name)
    }

    fn helm(&self, args: &[&str]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--namespace",
            &self.namespace,
            "--kubeconfig",
            self.cp.kubeconfig.to_str().unwrap(),
        ]);
        self.helm.run(&all)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if self.cp.is_external() {
            let _ = self.helm(&["uninstall", &self.name.clone(), "--wait=false"]);
        }
    }
}

#[test]
fn helm_install_creates_every_object_and_uninstall_removes_them() {
    let cp = cp();
    let ns = cp.create_namespace("helm-install");
    let release = Release::install(cp, &ns.name, "{}");
    let full = release.fullname();
    let status = stdout(&release.helm(&["status", &release.name, "-o", "json"]));
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["info"]["status"], "deployed");

    let namespaced = [
        format!("deployment/{full}"),
        format!("serviceaccount/{full}"),
        format!("persistentvolumeclaim/{full}-data"),
        format!("service/{full}"),
        format!("service/data-{full}"),
        format!("service/{full}-dns"),
        format!("service/{full}-metrics"),
        format!("role/{full}-leader-election"),
        format!("rolebinding/{full}-leader-election"),
    ];
    for obj in &namespaced {
        cp.kubectl_ok(&["-n", &ns.name, "get", obj]);
    }
    let cluster = [
        format!("clusterrole/{full}"),
        format!("clusterrole/{full}-view"),
        format!("clusterrole/{full}-edit"),
        format!("clusterrolebinding/{full}"),
    ];
    for obj in &cluster {
        cp.kubectl_ok(&["get", obj]);
    }
    // The API server defaulted and accepted the Deployment as rendered.
    let deploy: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "-n",
        &ns.name,
        "get",
        "deployment",
        &full,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(deploy["spec"]["strategy"]["type"], "Recreate");
    let dns = cp.kubectl_ok(&[
        "-n",
        &ns.name,
        "get",
        "service",
        &format!("{full}-dns"),
        "-o",
        "jsonpath={.spec.ports[*].protocol}",
    ]);
    assert_eq!(dns, "UDP TCP");

    let out = release.helm(&["uninstall", &release.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Gone, or on their way out (the PVC waits for the pvc-protection controller, which
    // this minimal control plane does not run).
    for obj in cluster.iter().chain(&namespaced) {
        let out = cp.kubectl(&[
            "-n",
            &ns.name,
            "get",
            obj,
            "--ignore-not-found",
            "-o",
            "jsonpath={.metadata.name}:{.metadata.deletionTimestamp}",
        ]);
        let left = stdout(&out);
        assert!(
            left.is_empty() || !left.ends_with(':'),
            "{obj} left after uninstall: {left}"
        );
    }
}

#[test]
fn plain_manifests_apply_with_kubectl() {
    let cp = cp();
    let manifests = repo_root().join("manifests");
    let manifests = manifests.to_str().unwrap();
    // Removes what the manifests created, except the CRDs (other tests use them).
    let _cleanup = Cleanup::new(
        cp,
        &["-f", manifests, "-l", "app.kubernetes.io/part-of=waymark"],
    );
    let out = cp.kubectl(&["apply", "-f", manifests]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let applied = stdout(&out);
    for what in [
        "namespace/waymark-system",
        "customresourcedefinition.apiextensions.k8s.io/servicediscoveries.waymark.dev",
        "clusterrole.rbac.authorization.k8s.io/waymark",
        "deployment.apps/waymark",
        "service/data-waymark",
    ] {
        assert!(applied.contains(what), "{what} missing:\n{applied}");
    }
    for obj in [
        "deployment/waymark",
        "service/waymark-dns",
        "persistentvolumeclaim/waymark-data",
        "rolebinding/waymark-leader-election",
    ] {
        cp.kubectl_ok(&["-n", "waymark-system", "get", obj]);
    }
    // Applying again changes nothing (idempotent; the command to upgrade).
    let out = cp.kubectl(&["apply", "-f", manifests]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("configured"), "{}", stdout(&out));
}

// --- RBAC: the whole job, and nothing more ----------------------------------------------------

/// Polls `f` until it returns `Some`, for up to 30 seconds.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Cloud Map call: (HTTP status, body).
fn api(port: u16, op: &str, body: Value) -> (u16, Value) {
    let body = body.to_string();
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, Value::Null);
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST / HTTP/1.0\r\nX-Amz-Target: Route53AutoNaming_v20170314.{op}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Instances of a service as (id, health, attributes), sorted; `None` while it does not exist.
fn instances(port: u16, namespace: &str, service: &str) -> Option<Vec<(String, String, Value)>> {
    let (status, body) = api(
        port,
        "DiscoverInstances",
        json!({"NamespaceName": namespace, "ServiceName": service, "HealthStatus": "ALL"}),
    );
    if status != 200 {
        return None;
    }
    let mut v: Vec<_> = body["Instances"]
        .as_array()?
        .iter()
        .map(|i| {
            (
                i["InstanceId"].as_str().unwrap().to_owned(),
                i["HealthStatus"].as_str().unwrap().to_owned(),
                i["Attributes"].clone(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v)
}

/// A kubeconfig for the same cluster that authenticates with `token` only.
fn token_kubeconfig(cp: &ControlPlane, token: &str, namespace: &str, path: &Path) {
    let admin: Value = serde_json::from_str(&cp.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
    ]))
    .unwrap();
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "waymark", "user": {"token": token}}],
        "contexts": [{"name": "waymark", "context": {"cluster": "test", "user": "waymark", "namespace": namespace}}],
        "current-context": "waymark",
    });
    std::fs::write(path, config.to_string()).unwrap();
}

fn kubectl_bin(cp: &ControlPlane) -> OsString {
    std::env::var_os("WAYMARK_KUBECTL")
        .or_else(|| {
            cp.env
                .get("WAYMARK_KUBECTL")
                .filter(|k| !k.is_empty())
                .map(Into::into)
        })
        .unwrap_or_else(|| "kubectl".into())
}

/// `waymark run`, killed on drop (its log printed if the test failed).
struct Waymark {
    child: Child,
    log: PathBuf,
}

impl Drop for Waymark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- waymark run log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Deletes a (cluster-scoped) Waymark Namespace, finalizer included, on drop.
struct WnsCleanup(&'static ControlPlane, String);

impl Drop for WnsCleanup {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&[
            "patch",
            "waymarknamespaces.waymark.dev",
            &self.1,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let _ = self.0.kubectl(&[
            "delete",
            "waymarknamespaces.waymark.dev",
            &self.1,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

#[test]
fn the_chart_service_account_does_the_whole_job_and_nothing_more() {
    let cp = cp();
    let ns = cp.create_namespace("helm-rbac");
    let n = ns.name.as_str();
    let selector = format!("{TEST_LABEL}={n}");
    // The release watches only this namespace and manages only this test's objects, like
    // the controller tests; the cluster id comes from kube-system (the default).
    let release = Release::install(
        cp,
        n,
        &format!("watchNamespaces: [{n}]\nselector: \"{selector}\"\n"),
    );
    let full = release.fullname();

    // A token of the chart's ServiceAccount, from the TokenRequest API.
    let token = cp.kubectl_ok(&["-n", n, "create", "token", &full, "--duration=1h"]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("token-kubeconfig");
    token_kubeconfig(cp, token.trim(), n, &kubeconfig);
    let as_waymark = |args: &[&str]| -> Output {
        Command::new(kubectl_bin(cp))
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let whoami = stdout(&as_waymark(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]));
    assert_eq!(whoami, format!("system:serviceaccount:{n}:{full}"));

    // `waymark run` with the Deployment's own arguments, as installed; only the listen
    // addresses and the data directory change (out of cluster), plus the kubeconfig.
    let deploy: Value =
        serde_json::from_str(&cp.kubectl_ok(&["-n", n, "get", "deployment", &full, "-o", "json"]))
            .unwrap();
    let (api_port, metrics_port, dns_port) = (free_port(), free_port(), free_port());
    let args: Vec<String> = deployment_args(&deploy)
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--api-addr", _)) => format!("--api-addr=127.0.0.1:{api_port}"),
            Some(("--dns-addr", _)) => format!("--dns-addr=127.0.0.1:{dns_port}"),
            Some(("--metrics-addr", _)) => format!("--metrics-addr=127.0.0.1:{metrics_port}"),
            Some(("--data-dir", _)) => format!("--data-dir={}", dir.path().join("data").display()),
            _ => a,
        })
        .collect();
    assert!(args.contains(&format!("--lease-namespace={n}")), "{args:?}");
    let log = dir.path().join("waymark.log");
    let pod_name = format!("{full}-test");
    // The Deployment's environment: its literal values, and what the downward API would
    // give this pod.
    let mut cmd = Command::new(BIN);
    for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
    {
        if let Some(value) = e["value"].as_str() {
            cmd.env(e["name"].as_str().unwrap(), value);
        }
    }
    let child = cmd
        .args(&args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("POD_NAME", &pod_name)
        .env("POD_NAMESPACE", n)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut waymark = Waymark { child, log };
    // Ready = every watch (Pods, Services, Nodes, both CRDs) has listed the cluster.
    eventually("waymark run to become ready", || {
        assert!(
            waymark.child.try_wait().unwrap().is_none(),
            "waymark run exited:\n{}",
            std::fs::read_to_string(&waymark.log).unwrap_or_default()
        );
        matches!(http_get(metrics_port, "/readyz"), Some((200, _))).then_some(())
    });

    let apply = |yaml: &str| {
        let out = cp.kubectl_with_stdin(&["apply", "-n", n, "-f", "-"], yaml);
        assert!(out.status.success(), "kubectl apply: {}", stderr(&out));
    };
    let set_status = |pod: &str, ip: &str, conditions: Value| {
        let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "conditions": conditions}});
        cp.kubectl_ok(&[
            "-n",
            n,
            "patch",
            "pod",
            pod,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ]);
    };
    let registry = format!("{n}.rbac");
    let held = format!("{n}.held");
    let _wns = (
        WnsCleanup(cp, registry.clone()),
        WnsCleanup(cp, held.clone()),
    );
    let node = format!("{n}-node");
    let _node = Cleanup::new(cp, &["node", &node]);
    cp.kubectl_apply_stdin(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{topology.kubernetes.io/zone: eu-west-1a, topology.kubernetes.io/region: eu-west-1}}\n"
    ));
    apply(&format!(
        r#"
apiVersion: waymark.dev/v1alpha1
kind: Namespace
metadata: {{name: {registry}, labels: {{{TEST_LABEL}: {n}}}}}
spec: {{type: DnsPrivate}}
---
apiVersion: waymark.dev/v1alpha1
kind: Namespace
metadata: {{name: {held}, labels: {{{TEST_LABEL}: {n}}}}}
spec: {{type: Http}}
---
apiVersion: waymark.dev/v1alpha1
kind: ServiceDiscovery
metadata: {{name: inv, labels: {{{TEST_LABEL}: {n}}}}}
spec:
  namespaceRef: {{name: {registry}}}
  selector: {{matchLabels: {{app: inv}}}}
  port: http
  dns: {{records: [{{type: SRV}}, {{type: A}}]}}
---
apiVersion: waymark.dev/v1alpha1
kind: ServiceDiscovery
metadata: {{name: broken, labels: {{{TEST_LABEL}: {n}}}}}
spec:
  namespaceRef: {{name: {n}.missing}}
---
apiVersion: waymark.dev/v1alpha1
kind: ServiceDiscovery
metadata: {{name: holder, labels: {{{TEST_LABEL}: {n}}}}}
spec:
  namespaceRef: {{name: {held}}}
---
apiVersion: v1
kind: Service
metadata:
  name: checkout
  labels: {{{TEST_LABEL}: {n}}}
  annotations: {{waymark.dev/namespace: {registry}}}
spec:
  selector: {{app: checkout}}
  ports: [{{name: web, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: inv-1, labels: {{app: inv}}}}
spec:
  nodeName: {node}
  containers: [{{name: app, image: example.invalid/app, ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: gated-1, labels: {{app: inv}}}}
spec:
  readinessGates: [{{conditionType: waymark.dev/registered}}]
  containers: [{{name: app, image: example.invalid/app, ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: checkout-1, labels: {{app: checkout}}}}
spec:
  containers: [{{name: app, image: example.invalid/app, ports: [{{name: http, containerPort: 8080}}]}}]
"#
    ));
    set_status(
        "inv-1",
        "10.30.0.1",
        json!([{"type": "Ready", "status": "True"}]),
    );
    set_status(
        "gated-1",
        "10.30.0.2",
        json!([{"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "False"}]),
    );
    set_status(
        "checkout-1",
        "10.30.0.3",
        json!([{"type": "Ready", "status": "True"}]),
    );

    // Pods become instances (with their node's zone), served by the API...
    let got = eventually("inv instances", || {
        let got = instances(api_port, &registry, "inv")?;
        let ids: Vec<(&str, &str)> = got
            .iter()
            .map(|(i, h, _)| (i.as_str(), h.as_str()))
            .collect();
        (ids == [("gated-1", "HEALTHY"), ("inv-1", "HEALTHY")]).then_some(got)
    });
    assert_eq!(got[1].2["AVAILABILITY_ZONE"], "eu-west-1a");
    assert!(
        got[1].2["WAYMARK_MANAGED_BY"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/{n}/inv"))
    );
    // ...and DNS.
    let dig = Command::new("dig")
        .args(["+short", "-p", &dns_port.to_string(), "@127.0.0.1", "SRV"])
        .arg(format!("inv.{registry}"))
        .output()
        .expect("dig (dnsutils) is installed");
    assert!(
        stdout(&dig).contains(&format!("1 1 8080 inv-1.inv.{registry}.")),
        "{}",
        stdout(&dig)
    );
    // The readiness gate (pods/status patch).
    eventually("readiness gate set", || {
        let v = cp.kubectl_ok(&[
            "-n",
            n,
            "get",
            "pod",
            "gated-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"waymark.dev/registered\")].status}",
        ]);
        (v == "True").then_some(())
    });
    // Status on both kinds (server-side apply of the status subresources).
    eventually("ServiceDiscovery status", || {
        let v = cp.kubectl_ok(&[
            "-n", n, "get", "servicediscovery", "inv", "-o",
            "jsonpath={.status.instances.healthy}/{.status.conditions[?(@.type==\"Synced\")].status}",
        ]);
        (v == "2/True").then_some(())
    });
    eventually("Namespace status", || {
        let v = cp.kubectl_ok(&[
            "get",
            "waymarknamespaces.waymark.dev",
            &registry,
            "-o",
            "jsonpath={.status.namespaceId}",
        ]);
        v.starts_with("ns-").then_some(())
    });
    // A Warning Event on a ServiceDiscovery, in its namespace.
    eventually("NamespaceNotFound Event", || {
        let v = cp.kubectl_ok(&[
            "-n",
            n,
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "reason=NamespaceNotFound",
            "-o",
            "jsonpath={.items[*].regarding.name}",
        ]);
        (v == "broken").then_some(())
    });
    // The annotated Service gets its ServiceDiscovery (created by server-side apply) and
    // its pod is registered; without the annotation the ServiceDiscovery is deleted.
    eventually("automatic ServiceDiscovery", || {
        let got = instances(api_port, &registry, "checkout")?;
        (got.len() == 1 && got[0].0 == "checkout-1").then_some(())
    });
    cp.kubectl_ok(&[
        "-n",
        n,
        "annotate",
        "service",
        "checkout",
        "waymark.dev/namespace-",
    ]);
    eventually("automatic ServiceDiscovery deleted", || {
        let out = cp.kubectl(&[
            "-n",
            n,
            "get",
            "servicediscovery",
            "checkout",
            "--ignore-not-found",
            "-o",
            "name",
        ]);
        stdout(&out).trim().is_empty().then_some(())
    });
    // The namespace-in-use finalizer (a patch of the Waymark Namespace), the Event of a
    // held deletion (cluster-scoped object: in `default`), and the finalizer's removal.
    eventually("finalizer", || {
        let v = cp.kubectl_ok(&[
            "get",
            "waymarknamespaces.waymark.dev",
            &held,
            "-o",
            "jsonpath={.metadata.finalizers}",
        ]);
        v.contains("waymark.dev/namespace-in-use").then_some(())
    });
    cp.kubectl_ok(&[
        "delete",
        "waymarknamespaces.waymark.dev",
        &held,
        "--wait=false",
    ]);
    eventually("DeletionHeld Event", || {
        let v = cp.kubectl_ok(&[
            "-n",
            "default",
            "get",
            "events.events.k8s.io",
            "--field-selector",
            "reason=DeletionHeld",
            "-o",
            "jsonpath={.items[*].regarding.name}",
        ]);
        v.split_whitespace().any(|name| name == held).then_some(())
    });
    cp.kubectl_ok(&["-n", n, "delete", "servicediscovery", "holder"]);
    eventually("held Namespace deleted", || {
        let out = cp.kubectl(&[
            "get",
            "waymarknamespaces.waymark.dev",
            &held,
            "--ignore-not-found",
            "-o",
            "name",
        ]);
        stdout(&out).trim().is_empty().then_some(())
    });
    // Leader election: the Lease in the release namespace names this process.
    let holder = cp.kubectl_ok(&[
        "-n",
        n,
        "get",
        "lease",
        &full,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, pod_name);
    // It did all of that without a single refused request.
    assert!(
        waymark.child.try_wait().unwrap().is_none(),
        "waymark run exited"
    );
    let text = std::fs::read_to_string(&waymark.log).unwrap();
    assert!(
        !text.to_lowercase().contains("forbidden"),
        "a request was refused:\n{text}"
    );

    // Nothing more: what Waymark never does is forbidden to its identity.
    let can = |args: &[&str]| -> bool {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = as_waymark(&all);
        let answer = stdout(&out);
        assert!(
            matches!(answer.trim(), "yes" | "no"),
            "can-i {args:?}: {answer}{}",
            stderr(&out)
        );
        answer.trim() == "yes"
    };
    for denied in [
        &["get", "secrets"][..],
        &["list", "secrets", "--all-namespaces"],
        &["get", "configmaps"],
        &["update", "pods"],
        &["patch", "pods"],
        &["create", "pods"],
        &["delete", "pods"],
        &["get", "pods"],
        &["update", "pods", "--subresource=status"],
        &["patch", "services"],
        &["delete", "services"],
        &["patch", "nodes"],
        &["get", "namespaces/default"],
        &["list", "namespaces"],
        &["update", "servicediscoveries.waymark.dev"],
        &["delete", "waymarknamespaces.waymark.dev"],
        &["create", "waymarknamespaces.waymark.dev"],
        &["update", "leases", &format!("--namespace={n}")],
        &["get", "leases/other", &format!("--namespace={n}")],
        &["create", "leases", "--namespace=default"],
        &["create", "events"],
        &["create", "deployments.apps"],
        &["create", "serviceaccounts/token"],
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        &["impersonate", "users"],
        &["*", "*"],
    ] {
        assert!(!can(denied), "the chart's ServiceAccount may {denied:?}");
    }
    // And what it does is allowed (the bindings work, not just the denials).
    for allowed in [
        &["list", "pods", "--all-namespaces"][..],
        &["watch", "services", "--all-namespaces"],
        &["patch", "pods", "--subresource=status"],
        &["get", "namespaces/kube-system"],
        &[
            "patch",
            "servicediscoveries.waymark.dev",
            "--subresource=status",
        ],
        &["create", "events.events.k8s.io", "--namespace=default"],
        &[
            "update",
            &format!("leases/{full}"),
            &format!("--namespace={n}"),
        ],
    ] {
        assert!(
            can(allowed),
            "the chart's ServiceAccount may not {allowed:?}"
        );
    }
    // A real request beyond its job is refused by the API server.
    let out = as_waymark(&["-n", n, "get", "secrets"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    drop(waymark);
    // A pod bound to a node waits for a kubelet to confirm its deletion: force it, so the
    // test namespace can go.
    cp.kubectl_ok(&[
        "-n",
        n,
        "delete",
        "pod",
        "inv-1",
        "--grace-period=0",
        "--force",
    ]);
}
