//! The CRDs against a real kube-apiserver: `kubectl apply -f crds/` succeeds, the brief's
//! example objects are created, and invalid objects are rejected by the API server (OpenAPI
//! schema, enums and CEL `x-kubernetes-validations`) with a message that names the problem.
//!
//! Every test creates its own objects (unique names, its own Kubernetes namespace), so they
//! run in parallel against the one control plane of this test binary (`tests/common`).

mod common;

use std::process::Output;

use common::{Cleanup, ControlPlane, TestNamespace, control_plane, stderr, stdout, unique_name};
use serde_yaml::{Mapping, Value};

fn cp() -> &'static ControlPlane {
    let cp = control_plane();
    cp.install_crds();
    cp
}

/// Parses a YAML snippet.
fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("bad YAML in test {text:?}: {e}"))
}

/// A file of `examples/crd/`.
fn example(name: &str) -> Value {
    let path = common::repo_root().join("examples/crd").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    yaml(&text)
}

/// Sets the value at a dot-separated path of map keys, creating maps on the way.
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut node = doc;
    let mut keys = path.split('.').peekable();
    while let Some(key) = keys.next() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("mapping");
        if keys.peek().is_none() {
            map.insert(key.into(), value);
            return;
        }
        node = map.entry(key.into()).or_insert(Value::Null);
    }
}

/// Removes the value at a dot-separated path of map keys, if present.
fn remove(doc: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut node = doc;
    for k in parent.split('.').filter(|k| !k.is_empty()) {
        match node.get_mut(k) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_mapping_mut() {
        map.remove(key);
    }
}

fn to_yaml(doc: &Value) -> String {
    serde_yaml::to_string(doc).expect("serialize test object")
}

fn apply(doc: &Value) -> Output {
    cp().kubectl_apply_stdin(&to_yaml(doc))
}

#[track_caller]
fn assert_accepted(doc: &Value) {
    let out = apply(doc);
    assert!(
        out.status.success(),
        "the API server rejected a valid object:\n{}\n{}",
        to_yaml(doc),
        stderr(&out)
    );
}

/// Asserts that applying `doc` fails and that kubectl's stderr contains every `expected` text.
#[track_caller]
fn assert_rejected(doc: &Value, expected: &[&str]) {
    let out = apply(doc);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "the API server accepted an invalid object (expected {expected:?}):\n{}\n{}",
        to_yaml(doc),
        stdout(&out)
    );
    for text in expected {
        assert!(
            err.contains(text),
            "rejection does not mention {text:?}:\n{err}\nobject:\n{}",
            to_yaml(doc)
        );
    }
}

/// A Kubernetes namespace of its own plus the brief's ServiceDiscovery moved into it.
struct SdTest {
    ns: TestNamespace,
}

impl SdTest {
    fn new(prefix: &str) -> Self {
        Self {
            ns: cp().create_namespace(prefix),
        }
    }

    /// The brief's valid ServiceDiscovery (examples/crd/servicediscovery.yaml), in this
    /// test's namespace.
    fn valid(&self) -> Value {
        let mut sd = example("servicediscovery.yaml");
        set(&mut sd, "metadata.namespace", self.ns.name.as_str().into());
        sd
    }

    /// A minimal valid ServiceDiscovery named `name`.
    fn minimal(&self, name: &str) -> Value {
        let mut sd = yaml(
            "apiVersion: waymark.dev/v1alpha1\n\
             kind: ServiceDiscovery\n\
             spec: {namespaceRef: {name: quickship.local}}",
        );
        set(&mut sd, "metadata.name", name.into());
        set(&mut sd, "metadata.namespace", self.ns.name.as_str().into());
        sd
    }

    fn get(&self, name: &str, jsonpath: &str) -> String {
        cp().kubectl_ok(&[
            "-n",
            &self.ns.name,
            "get",
            "servicediscoveries.waymark.dev",
            name,
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])
    }
}

/// The brief's valid Namespace (examples/crd/namespace.yaml) renamed to a unique name, and a
/// guard deleting it on shared clusters.
fn valid_namespace(prefix: &str) -> (Value, String, Cleanup) {
    let name = format!("{}.local", unique_name(prefix));
    let mut ns = example("namespace.yaml");
    set(&mut ns, "metadata.name", name.as_str().into());
    set(&mut ns, "spec.name", name.as_str().into());
    let cleanup = Cleanup::new(cp(), &["waymarknamespaces.waymark.dev", &name]);
    (ns, name, cleanup)
}

// ---------------------------------------------------------------------------------------
// Installation and valid objects
// ---------------------------------------------------------------------------------------

#[test]
fn crds_apply_and_become_established() {
    // The harness runs `kubectl apply -f crds/` (once per control plane, racing with no
    // other test); applying again, as an upgrade would, is idempotent.
    let cp = cp();
    let crds_dir = common::repo_root().join("crds");
    let crds_dir = crds_dir.to_str().expect("UTF-8 path");
    let out = cp.kubectl_ok(&["apply", "-f", crds_dir]);
    assert!(
        out.contains("waymarknamespaces.waymark.dev unchanged"),
        "{out}"
    );
    assert!(
        out.contains("servicediscoveries.waymark.dev unchanged"),
        "{out}"
    );
    cp.wait_established(common::WAYMARK_CRDS)
        .unwrap_or_else(|e| panic!("{e}"));
    for crd in common::WAYMARK_CRDS {
        let status = cp.kubectl_ok(&[
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
        ]);
        assert_eq!(status, "True", "{crd} Established");
        let accepted = cp.kubectl_ok(&[
            "get",
            "crd",
            crd,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"NamesAccepted\")].status}",
        ]);
        assert_eq!(accepted, "True", "{crd} NamesAccepted");
    }
    // Short names and the category resolve.
    cp.kubectl_ok(&["get", "wns"]);
    cp.kubectl_ok(&["get", "sd", "--all-namespaces"]);
    cp.kubectl_ok(&["get", "waymark", "--all-namespaces"]);
}

#[test]
fn brief_examples_are_created_and_printed() {
    let t = SdTest::new("brief");
    let (ns, ns_name, _cleanup) = valid_namespace("quickship");
    assert_accepted(&ns);
    let mut sd = t.valid();
    set(&mut sd, "spec.namespaceRef.name", ns_name.as_str().into());
    assert_accepted(&sd);

    // They really exist, and can be read back by name (this is what breaks if the
    // Namespace's plural is `namespaces`).
    let cp = cp();
    let ns_type = cp.kubectl_ok(&["get", "wns", &ns_name, "-o", "jsonpath={.spec.type}"]);
    assert_eq!(ns_type, "DnsPrivate");
    assert_eq!(
        t.get("inventory-manager", "{.spec.dns.records[0].type}"),
        "SRV"
    );
    assert_eq!(t.get("inventory-manager", "{.spec.port}"), "http");

    // Printer columns.
    let table = cp.kubectl_ok(&["-n", &t.ns.name, "get", "sd"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "REGISTRY-NAMESPACE",
            "HEALTHY",
            "TOTAL",
            "READY",
            "AGE"
        ]
    );
    assert!(table.contains(&ns_name), "{table}");
    let table = cp.kubectl_ok(&["get", "wns", &ns_name]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "TYPE", "ID", "SERVICES", "READY", "AGE"]);

    // Updating and deleting by name work.
    set(
        &mut sd,
        "spec.description",
        "still the stock service".into(),
    );
    assert_accepted(&sd);
    cp.kubectl_ok(&["-n", &t.ns.name, "delete", "sd", "inventory-manager"]);
    cp.kubectl_ok(&["delete", "wns", &ns_name]);
}

#[test]
fn defaults_are_applied_by_the_api_server() {
    let t = SdTest::new("defaults");
    let mut sd = t.minimal("defaults");
    set(&mut sd, "spec.dns", yaml("{records: [{type: A}]}"));
    set(&mut sd, "spec.healthCheck", yaml("{}"));
    assert_accepted(&sd);
    assert_eq!(t.get("defaults", "{.spec.dns.routingPolicy}"), "Multivalue");
    assert_eq!(t.get("defaults", "{.spec.dns.records[0].ttl}"), "10");
    assert_eq!(t.get("defaults", "{.spec.healthCheck.type}"), "Readiness");
}

#[test]
fn valid_variants_are_accepted() {
    let t = SdTest::new("variants");
    let cp = cp();

    // CNAME alone, Weighted, custom health, static instance carrying its CNAME.
    let mut cname = t.minimal("cname");
    set(
        &mut cname,
        "spec.dns",
        yaml("{routingPolicy: Weighted, records: [{type: CNAME, ttl: 300}]}"),
    );
    set(&mut cname, "spec.healthCheck", yaml("{type: Custom}"));
    set(
        &mut cname,
        "spec.instances",
        yaml("[{id: db-1, attributes: {AWS_INSTANCE_CNAME: db.example.com}}]"),
    );
    assert_accepted(&cname);

    // A + AAAA + SRV with a numeric port, a Service reference and a Tcp probe.
    let mut all = t.minimal("all-records");
    set(&mut all, "spec.serviceRef", yaml("{name: all-records}"));
    set(&mut all, "spec.port", yaml("8080"));
    set(
        &mut all,
        "spec.dns",
        yaml("{records: [{type: A, ttl: 0}, {type: AAAA, ttl: 2147483647}, {type: SRV, ttl: 5}]}"),
    );
    set(
        &mut all,
        "spec.healthCheck",
        yaml("{type: Tcp, failureThreshold: 10, intervalSeconds: 5, timeoutSeconds: 5}"),
    );
    set(
        &mut all,
        "spec.labelAttributes",
        yaml("{include: ['*'], exclude: [pod-template-hash]}"),
    );
    set(&mut all, "spec.drainSeconds", yaml("3600"));
    assert_accepted(&all);

    // SRV without spec.port when only static instances exist (they carry AWS_INSTANCE_PORT).
    let mut static_srv = t.minimal("static-srv");
    set(&mut static_srv, "spec.serviceName", "_ldap._tcp".into());
    set(
        &mut static_srv,
        "spec.dns",
        yaml("{records: [{type: SRV, ttl: 60}]}"),
    );
    set(
        &mut static_srv,
        "spec.instances",
        yaml(
            "[{id: 'ldap-1', attributes: {AWS_INSTANCE_IPV4: 10.0.0.7, AWS_INSTANCE_PORT: '389'}}]",
        ),
    );
    assert_accepted(&static_srv);

    // 30 attributes with long keys and values, printable ASCII with inner spaces.
    let mut attrs = t.minimal("attrs");
    let mut map = Mapping::new();
    for i in 0..30 {
        map.insert(
            format!("k{i:02}-{}", "x".repeat(250)).into(),
            format!("v{i} with\tinner spaces {}", "y".repeat(990)).into(),
        );
    }
    set(&mut attrs, "spec.attributes", Value::Mapping(map));
    assert_accepted(&attrs);

    // Namespaces: Http without soaTtl, DnsPublic with a hostname, name defaulting to
    // metadata.name.
    for (prefix, spec) in [
        ("http", "{type: Http, description: API only}"),
        ("public", "{type: DnsPublic, soaTtl: 0}"),
    ] {
        let name = format!("{}.example.com", unique_name(prefix));
        let _cleanup = Cleanup::new(cp, &["waymarknamespaces.waymark.dev", &name]);
        let mut ns = yaml("{apiVersion: waymark.dev/v1alpha1, kind: Namespace}");
        set(&mut ns, "metadata.name", name.as_str().into());
        set(&mut ns, "spec", yaml(spec));
        assert_accepted(&ns);
    }
}

#[test]
fn kubectl_explain_shows_the_field_docs() {
    let cp = cp();
    // kubectl wraps the text itself: compare with whitespace collapsed.
    let explain = |field: &str| {
        let text = cp.kubectl_ok(&["explain", field]);
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let text = explain("sd.spec.dns.routingPolicy");
    assert!(text.contains("ENUM: Multivalue Weighted"), "{text}");
    assert!(
        text.contains("(default: up to 8 healthy instances"),
        "{text}"
    );
    let text = explain("wns.spec.soaTtl");
    assert!(
        text.contains("cache negative answers (NXDOMAIN, NODATA)"),
        "{text}"
    );
    let text = explain("sd.status.skippedLabels");
    assert!(text.contains("could not become attributes"), "{text}");
}

// ---------------------------------------------------------------------------------------
// Invalid ServiceDiscovery objects
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_unknown_record_type() {
    let t = SdTest::new("bad-record");
    let mut sd = t.valid();
    set(&mut sd, "spec.dns.records", yaml("[{type: MX, ttl: 10}]"));
    assert_rejected(
        &sd,
        &[
            "spec.dns.records[0].type",
            "Unsupported value: \"MX\"",
            "\"SRV\"",
        ],
    );
}

#[test]
fn rejects_unknown_routing_policy() {
    let t = SdTest::new("bad-routing");
    let mut sd = t.valid();
    set(&mut sd, "spec.dns.routingPolicy", "Random".into());
    assert_rejected(
        &sd,
        &[
            "spec.dns.routingPolicy",
            "Unsupported value: \"Random\"",
            "\"Weighted\"",
        ],
    );
}

#[test]
fn rejects_unknown_health_check_type() {
    let t = SdTest::new("bad-hc");
    let mut sd = t.valid();
    set(&mut sd, "spec.healthCheck.type", "Grpc".into());
    assert_rejected(
        &sd,
        &["spec.healthCheck.type", "Unsupported value: \"Grpc\""],
    );
}

#[test]
fn rejects_selector_with_service_ref() {
    let t = SdTest::new("sel-ref");
    let mut sd = t.valid();
    set(
        &mut sd,
        "spec.serviceRef",
        yaml("{name: inventory-manager}"),
    );
    assert_rejected(&sd, &["selector and serviceRef are mutually exclusive"]);
}

#[test]
fn rejects_cname_with_multivalue() {
    let t = SdTest::new("cname-mv");
    let mut sd = t.valid();
    remove(&mut sd, "spec.healthCheck");
    set(
        &mut sd,
        "spec.dns",
        yaml("{routingPolicy: Multivalue, records: [{type: CNAME, ttl: 10}]}"),
    );
    assert_rejected(&sd, &["a CNAME record requires routingPolicy Weighted"]);
}

#[test]
fn rejects_cname_with_other_records() {
    let t = SdTest::new("cname-a");
    let mut sd = t.valid();
    remove(&mut sd, "spec.healthCheck");
    set(
        &mut sd,
        "spec.dns",
        yaml("{routingPolicy: Weighted, records: [{type: CNAME, ttl: 10}, {type: A, ttl: 10}]}"),
    );
    assert_rejected(&sd, &["a CNAME record must be the only record"]);
}

#[test]
fn rejects_cname_with_http_health_check() {
    let t = SdTest::new("cname-http");
    let mut sd = t.valid(); // its health check is Http
    set(
        &mut sd,
        "spec.dns",
        yaml("{routingPolicy: Weighted, records: [{type: CNAME, ttl: 10}]}"),
    );
    assert_rejected(
        &sd,
        &["a CNAME record cannot be combined with an Http, Https or Tcp health check"],
    );
}

#[test]
fn rejects_srv_without_port() {
    let t = SdTest::new("srv-port");
    let mut sd = t.valid(); // SRV + A, pods selected
    remove(&mut sd, "spec.port");
    assert_rejected(&sd, &["an SRV record needs spec.port"]);
}

#[test]
fn rejects_duplicate_record_types() {
    let t = SdTest::new("dup-records");
    let mut sd = t.valid();
    set(
        &mut sd,
        "spec.dns.records",
        yaml("[{type: A, ttl: 10}, {type: A, ttl: 20}]"),
    );
    assert_rejected(
        &sd,
        &[
            "spec.dns.records[1]: Duplicate value",
            "record types must be unique",
        ],
    );
}

#[test]
fn rejects_empty_records() {
    let t = SdTest::new("no-records");
    let mut sd = t.valid();
    set(&mut sd, "spec.dns.records", yaml("[]"));
    assert_rejected(&sd, &["spec.dns.records", "should have at least 1 items"]);
}

#[test]
fn rejects_out_of_range_ttl() {
    let t = SdTest::new("ttl");
    let mut sd = t.valid();
    set(
        &mut sd,
        "spec.dns.records",
        yaml("[{type: A, ttl: 2147483648}]"),
    );
    assert_rejected(
        &sd,
        &[
            "spec.dns.records[0].ttl",
            "should be less than or equal to 2147483647",
        ],
    );
}

#[test]
fn rejects_path_without_leading_slash() {
    let t = SdTest::new("path-slash");
    let mut sd = t.valid();
    set(&mut sd, "spec.healthCheck.path", "health".into());
    assert_rejected(&sd, &["spec.healthCheck.path", "path must start with '/'"]);
}

#[test]
fn rejects_path_on_tcp_health_check() {
    let t = SdTest::new("path-tcp");
    let mut sd = t.valid();
    set(&mut sd, "spec.healthCheck.type", "Tcp".into());
    assert_rejected(
        &sd,
        &["path is only allowed with an Http or Https health check"],
    );
}

#[test]
fn rejects_failure_threshold_11() {
    let t = SdTest::new("threshold");
    let mut sd = t.valid();
    set(&mut sd, "spec.healthCheck.failureThreshold", yaml("11"));
    assert_rejected(
        &sd,
        &[
            "spec.healthCheck.failureThreshold",
            "should be less than or equal to 10",
        ],
    );
}

#[test]
fn rejects_probe_settings_on_readiness_health_check() {
    let t = SdTest::new("probe-readiness");
    let mut sd = t.valid();
    set(
        &mut sd,
        "spec.healthCheck",
        yaml("{type: Readiness, intervalSeconds: 10}"),
    );
    assert_rejected(
        &sd,
        &[
            "failureThreshold, intervalSeconds and timeoutSeconds are only allowed with an Http, Https or Tcp health check",
        ],
    );
}

#[test]
fn rejects_timeout_longer_than_interval() {
    let t = SdTest::new("timeout");
    let mut sd = t.valid();
    set(&mut sd, "spec.healthCheck.timeoutSeconds", yaml("20"));
    assert_rejected(&sd, &["timeoutSeconds must not exceed intervalSeconds"]);
}

#[test]
fn rejects_attribute_key_with_a_space() {
    let t = SdTest::new("attr-key");
    let mut sd = t.valid();
    set(&mut sd, "spec.attributes", yaml("{'bad key': prod}"));
    assert_rejected(
        &sd,
        &[
            "spec.attributes",
            "attribute keys must be 1-255 printable ASCII characters without spaces",
        ],
    );
}

#[test]
fn rejects_attribute_key_longer_than_255() {
    let t = SdTest::new("attr-key-len");
    let mut sd = t.valid();
    let mut map = Mapping::new();
    map.insert("k".repeat(256).into(), "v".into());
    set(&mut sd, "spec.attributes", Value::Mapping(map));
    assert_rejected(
        &sd,
        &["attribute keys must be 1-255 printable ASCII characters"],
    );
}

#[test]
fn rejects_attribute_value_with_leading_space() {
    let t = SdTest::new("attr-value");
    let mut sd = t.valid();
    set(&mut sd, "spec.attributes", yaml("{environment: ' prod'}"));
    assert_rejected(&sd, &["spec.attributes.environment", "should match"]);
}

#[test]
fn rejects_attribute_value_longer_than_1024() {
    let t = SdTest::new("attr-value-len");
    let mut sd = t.valid();
    set(
        &mut sd,
        "spec.attributes.environment",
        "v".repeat(1025).into(),
    );
    assert_rejected(
        &sd,
        &[
            "spec.attributes.environment",
            "may not be more than 1024 bytes",
        ],
    );
}

#[test]
fn rejects_more_than_30_attributes() {
    let t = SdTest::new("attr-count");
    let mut sd = t.valid();
    let map: Mapping = (0..31)
        .map(|i| (Value::from(format!("key{i}")), Value::from("v")))
        .collect();
    set(&mut sd, "spec.attributes", Value::Mapping(map.clone()));
    assert_rejected(&sd, &["spec.attributes", "must have at most 30 items"]);

    // The same limit holds for a static instance's own attributes.
    let mut sd = t.valid();
    let mut instances = yaml("[{id: one}]");
    set(&mut instances[0], "attributes", Value::Mapping(map));
    set(&mut sd, "spec.instances", instances);
    assert_rejected(
        &sd,
        &["spec.instances[0].attributes", "must have at most 30 items"],
    );
}

#[test]
fn rejects_bad_instance_ids() {
    let t = SdTest::new("instance-id");
    let mut sd = t.valid();
    set(&mut sd, "spec.instances", yaml("[{id: 'has space'}]"));
    assert_rejected(&sd, &["spec.instances[0].id", "should match"]);

    let mut sd = t.valid();
    let mut instances = yaml("[{}]");
    set(&mut instances[0], "id", "i".repeat(65).into());
    set(&mut sd, "spec.instances", instances);
    assert_rejected(
        &sd,
        &["spec.instances[0].id", "may not be more than 64 bytes"],
    );

    let mut sd = t.valid();
    set(&mut sd, "spec.instances", yaml("[{id: same}, {id: same}]"));
    assert_rejected(&sd, &["spec.instances[1]: Duplicate value"]);
}

#[test]
fn rejects_bad_ports() {
    let t = SdTest::new("port");
    for port in ["0", "65536", "Not_A_Name", "'1234'"] {
        let mut sd = t.valid();
        set(&mut sd, "spec.port", yaml(port));
        assert_rejected(
            &sd,
            &[
                "spec.port",
                "port must be a number from 1 to 65535 or a port name",
            ],
        );
    }
}

#[test]
fn rejects_drain_seconds_over_3600() {
    let t = SdTest::new("drain");
    let mut sd = t.valid();
    set(&mut sd, "spec.drainSeconds", yaml("3601"));
    assert_rejected(
        &sd,
        &["spec.drainSeconds", "should be less than or equal to 3600"],
    );
}

#[test]
fn rejects_bad_service_names() {
    let t = SdTest::new("svc-name");
    let mut sd = t.valid();
    set(&mut sd, "spec.serviceName", "bad name!".into());
    assert_rejected(&sd, &["spec.serviceName", "should match"]);

    // Without spec.serviceName, metadata.name (a valid DNS subdomain, but 138 characters
    // long) is the service name, and too long for one.
    let long = format!("{}.{}.service", "a".repeat(63), "b".repeat(63));
    let mut sd = t.minimal(&long);
    assert_rejected(
        &sd,
        &[
            "metadata.name is not a valid service name",
            "set spec.serviceName",
        ],
    );
    set(&mut sd, "spec.serviceName", "short".into());
    assert_accepted(&sd);
}

#[test]
fn rejects_unknown_fields() {
    let t = SdTest::new("unknown");
    let mut sd = t.valid();
    set(&mut sd, "spec.dns.recrods", yaml("[]"));
    assert_rejected(&sd, &["unknown field \"spec.dns.recrods\""]);
}

// ---------------------------------------------------------------------------------------
// Invalid Namespace objects
// ---------------------------------------------------------------------------------------

#[test]
fn rejects_unknown_namespace_type() {
    let (mut ns, _, _cleanup) = valid_namespace("bad-type");
    set(&mut ns, "spec.type", "DnsPrivateZone".into());
    assert_rejected(
        &ns,
        &[
            "spec.type",
            "Unsupported value: \"DnsPrivateZone\"",
            "\"Http\"",
        ],
    );
}

#[test]
fn rejects_soa_ttl_on_http_namespace() {
    let (mut ns, _, _cleanup) = valid_namespace("http-soa");
    set(&mut ns, "spec.type", "Http".into()); // the example sets soaTtl: 15
    assert_rejected(
        &ns,
        &["soaTtl is only allowed for DnsPrivate and DnsPublic namespaces"],
    );
}

#[test]
fn rejects_arn_and_non_hostname_namespace_names() {
    let (mut ns, _, _cleanup) = valid_namespace("arn");
    set(&mut ns, "spec.name", "arn:aws:servicediscovery".into());
    assert_rejected(&ns, &["spec.name", "name must not start with 'arn:'"]);

    let (mut ns, _, _cleanup) = valid_namespace("public");
    set(&mut ns, "spec.type", "DnsPublic".into());
    set(&mut ns, "spec.name", "under_score.example.com".into());
    assert_rejected(
        &ns,
        &["the name of a DnsPublic namespace", "must be a hostname"],
    );

    let (mut ns, _, _cleanup) = valid_namespace("space");
    set(&mut ns, "spec.name", "has space".into());
    assert_rejected(&ns, &["spec.name", "should match"]);
}

#[test]
fn rejects_changing_a_namespace_type() {
    let (mut ns, _, _cleanup) = valid_namespace("immutable-type");
    assert_accepted(&ns);
    set(&mut ns, "spec.type", "DnsPublic".into());
    assert_rejected(&ns, &["spec.type", "type is immutable"]);
}

#[test]
fn rejects_changing_a_namespace_registry_name() {
    let (mut ns, name, _cleanup) = valid_namespace("immutable-name");
    assert_accepted(&ns);
    // Dropping spec.name keeps the registry name (it defaults to metadata.name): allowed.
    remove(&mut ns, "spec.name");
    assert_accepted(&ns);
    set(&mut ns, "spec.name", format!("other-{name}").into());
    assert_rejected(&ns, &["the registry name", "is immutable"]);
}

#[test]
fn rejects_out_of_range_soa_ttl() {
    let (mut ns, _, _cleanup) = valid_namespace("soa-range");
    set(&mut ns, "spec.soaTtl", yaml("-1"));
    assert_rejected(
        &ns,
        &["spec.soaTtl", "should be greater than or equal to 0"],
    );
}

#[test]
fn traffic_splits_are_validated() {
    let t = SdTest::new("split");
    let mut sd = t.minimal("split-ok");
    set(
        &mut sd,
        "spec.trafficSplit",
        yaml("{attribute: version, weights: {v1: 90, v2: 10, v3: 0}}"),
    );
    assert_accepted(&sd);
    for (split, expected) in [
        (
            "{attribute: version, weights: {v1: 0, v2: 0}}",
            "at least one weight must be above 0",
        ),
        (
            "{attribute: version, weights: {'a,b': 1}}",
            "values are 1-255 characters without ',' or '='",
        ),
        (
            "{attribute: version, weights: {}}",
            "spec.trafficSplit.weights",
        ),
        (
            "{attribute: 'ver:sion', weights: {v1: 1}}",
            "spec.trafficSplit.attribute",
        ),
        ("{attribute: version, weights: {v1: 1000001}}", "1000000"),
        ("{weights: {v1: 1}}", "attribute"),
    ] {
        let mut sd = t.minimal("split-bad");
        set(&mut sd, "spec.trafficSplit", yaml(split));
        assert_rejected(&sd, &[expected]);
    }
}
