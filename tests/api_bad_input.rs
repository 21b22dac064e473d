//! Bad input against the real `waymark serve`: a table of malformed and
//! out-of-limit Cloud Map requests, sent as raw HTTP POSTs, each answered with
//! the right HTTP status and `__type` (and, for `InvalidInput`, a message that
//! names the field), and the registry unchanged afterwards.
//!
//! The requests are written by hand (no SDK) so that the test can also send
//! what no SDK would: broken JSON, wrong member types, unknown targets,
//! missing headers and oversized bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

mod support;

const TARGET: &str = "Route53AutoNaming_v20170314.";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The server's body limit (`api::MAX_BODY_BYTES`).
const MAX_BODY_BYTES: usize = 256 * 1024;

// ----- a minimal HTTP/1.1 client --------------------------------------------

struct Response {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One request on its own connection (`Connection: close`). `None` when the
/// connection fails before a status line arrives.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413) and close before reading the whole body;
    // a failed write is fine as long as the response arrives.
    let _ = s.write_all(&request);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.split_whitespace().nth(1)?.parse().ok()?;
    Some(Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A Cloud Map call as an SDK sends it.
fn post(port: u16, target: Option<&str>, body: &[u8]) -> Response {
    let mut headers = vec![("Content-Type", CONTENT_TYPE)];
    if let Some(t) = target {
        headers.push(("X-Amz-Target", t));
    }
    http(port, "POST", "/", &headers, body).expect("a response")
}

/// A call that must succeed; returns its JSON output.
fn call(port: u16, op: &str, body: Value) -> Value {
    let r = post(
        port,
        Some(&format!("{TARGET}{op}")),
        body.to_string().as_bytes(),
    );
    assert_eq!(
        r.status,
        200,
        "{op} {body} failed: {}",
        String::from_utf8_lossy(&r.body)
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    }
}

// ----- the registry the bad requests are aimed at ----------------------------

struct Fixture {
    ns_http: String,
    ns_http_arn: String,
    ns_dns: String,
    plain: String,
    custom: String,
    checked: String,
    a_records: String,
    srv_records: String,
    cname: String,
}

fn created_namespace(port: u16, op: &str, body: Value) -> String {
    let op_id = call(port, op, body)["OperationId"]
        .as_str()
        .unwrap()
        .to_string();
    let op = call(port, "GetOperation", json!({ "OperationId": op_id }));
    assert_eq!(op["Operation"]["Status"], "SUCCESS", "{op}");
    op["Operation"]["Targets"]["NAMESPACE"]
        .as_str()
        .unwrap()
        .to_string()
}

fn created_service(port: u16, body: Value) -> String {
    call(port, "CreateService", body)["Service"]["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn populate(port: u16) -> Fixture {
    let ns_http = created_namespace(
        port,
        "CreateHttpNamespace",
        json!({"Name": "bad-input", "Tags": [{"Key": "team", "Value": "core"}]}),
    );
    let ns_dns = created_namespace(
        port,
        "CreatePrivateDnsNamespace",
        json!({"Name": "bad.local", "Vpc": "vpc-1"}),
    );
    let ns_http_arn = call(port, "GetNamespace", json!({ "Id": ns_http }))["Namespace"]["Arn"]
        .as_str()
        .unwrap()
        .to_string();
    let plain = created_service(port, json!({"Name": "plain", "NamespaceId": ns_http}));
    let custom = created_service(
        port,
        json!({"Name": "custom", "NamespaceId": ns_http, "HealthCheckCustomConfig": {}}),
    );
    let checked = created_service(
        port,
        json!({"Name": "checked", "NamespaceId": ns_http,
               "HealthCheckConfig": {"Type": "HTTP", "ResourcePath": "/health"}}),
    );
    let dns = |name: &str, policy: &str, kind: &str| {
        created_service(
            port,
            json!({"Name": name, "NamespaceId": ns_dns, "DnsConfig": {
                "RoutingPolicy": policy, "DnsRecords": [{"Type": kind, "TTL": 10}]}}),
        )
    };
    let a_records = dns("a-records", "MULTIVALUE", "A");
    let srv_records = dns("srv-records", "MULTIVALUE", "SRV");
    let cname = dns("cname", "WEIGHTED", "CNAME");
    call(
        port,
        "RegisterInstance",
        json!({"ServiceId": plain, "InstanceId": "i-1",
               "Attributes": {"environment": "prod", "tablename": "UserAuth"}}),
    );
    call(
        port,
        "RegisterInstance",
        json!({"ServiceId": custom, "InstanceId": "c-1", "Attributes": {"environment": "prod"}}),
    );
    call(
        port,
        "RegisterInstance",
        json!({"ServiceId": a_records, "InstanceId": "a-1",
               "Attributes": {"AWS_INSTANCE_IPV4": "192.0.2.10"}}),
    );
    call(
        port,
        "UpdateServiceAttributes",
        json!({"ServiceId": plain, "Attributes": {"team": "core"}}),
    );
    Fixture {
        ns_http,
        ns_http_arn,
        ns_dns,
        plain,
        custom,
        checked,
        a_records,
        srv_records,
        cname,
    }
}

/// Everything a client can read about the registry, in a deterministic form.
fn snapshot(port: u16, f: &Fixture) -> Value {
    let services = [
        &f.plain,
        &f.custom,
        &f.checked,
        &f.a_records,
        &f.srv_records,
        &f.cname,
    ];
    let per_service: Vec<Value> = services
        .iter()
        .map(|id| {
            let svc = call(port, "GetService", json!({ "Id": id }));
            let name = svc["Service"]["Name"].as_str().unwrap().to_string();
            let ns_name = if svc["Service"]["NamespaceId"] == json!(f.ns_http) {
                "bad-input"
            } else {
                "bad.local"
            };
            json!({
                "service": svc,
                "instances": call(port, "ListInstances", json!({ "ServiceId": id })),
                "health": call(port, "GetInstancesHealthStatus", json!({ "ServiceId": id })),
                "attributes": call(port, "GetServiceAttributes", json!({ "ServiceId": id })),
                "tags": call(port, "ListTagsForResource",
                    json!({ "ResourceARN": svc["Service"]["Arn"] })),
                "revision": call(port, "DiscoverInstancesRevision",
                    json!({ "NamespaceName": ns_name, "ServiceName": name })),
            })
        })
        .collect();
    json!({
        "namespaces": call(port, "ListNamespaces", json!({})),
        "services": call(port, "ListServices", json!({})),
        "operations": call(port, "ListOperations", json!({})),
        "namespace_tags": call(port, "ListTagsForResource", json!({ "ResourceARN": f.ns_http_arn })),
        "dns_namespace": call(port, "GetNamespace", json!({ "Id": f.ns_dns })),
        "per_service": per_service,
    })
}

// ----- the table -------------------------------------------------------------

/// One bad request and the answer it must get.
struct Case {
    name: &'static str,
    /// The `X-Amz-Target` header (`None`: not sent).
    target: Option<String>,
    body: Vec<u8>,
    status: u16,
    kind: &'static str,
    /// A substring of `Message` (case-insensitive); for InvalidInput, the field.
    message: &'static str,
}

fn case(name: &'static str, op: &str, body: Value, kind: &'static str, message: &str) -> Case {
    Case {
        name,
        target: Some(format!("{TARGET}{op}")),
        body: body.to_string().into_bytes(),
        status: 400,
        kind,
        message: Box::leak(message.to_string().into_boxed_str()),
    }
}

fn raw(name: &'static str, op: &str, body: &[u8], kind: &'static str, message: &str) -> Case {
    Case {
        body: body.to_vec(),
        ..case(name, op, json!({}), kind, message)
    }
}

const INVALID: &str = "InvalidInput";
const SERDE: &str = "SerializationException";

fn attrs(pairs: impl IntoIterator<Item = (String, String)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k, v.into())).collect())
}

fn cases(f: &Fixture) -> Vec<Case> {
    let reg = |name, service: &str, attributes: Value, message: &str| {
        case(
            name,
            "RegisterInstance",
            json!({"ServiceId": service, "InstanceId": "new-1", "Attributes": attributes}),
            INVALID,
            message,
        )
    };
    let svc = |name, extra: Value, message: &str| {
        let mut body = json!({"Name": "new-service", "NamespaceId": f.ns_dns});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        case(name, "CreateService", body, INVALID, message)
    };
    let dns_records = |policy: &str, records: Value| json!({"DnsConfig": {"RoutingPolicy": policy, "DnsRecords": records}});
    let http_hc = |hc: Value| json!({"NamespaceId": f.ns_http, "HealthCheckConfig": hc});
    let list_filter = |op: &'static str, filter: Value| (op, json!({"Filters": [filter]}));
    let many = |n: usize, prefix: &str, value: &str| {
        attrs((0..n).map(|i| (format!("{prefix}{i}"), value.to_string())))
    };

    let mut t = vec![
        // --- protocol ------------------------------------------------------
        Case {
            name: "missing X-Amz-Target",
            target: None,
            body: b"{}".to_vec(),
            status: 400,
            kind: "UnknownOperationException",
            message: "X-Amz-Target",
        },
        case(
            "unknown operation",
            "DescribeEverything",
            json!({}),
            "UnknownOperationException",
            "DescribeEverything",
        ),
        Case {
            name: "wrong service prefix",
            target: Some("Route53AutoNaming_v20990101.ListNamespaces".into()),
            body: b"{}".to_vec(),
            status: 400,
            kind: "UnknownOperationException",
            message: "unknown operation",
        },
        Case {
            name: "operation name in the wrong case",
            target: Some(format!("{TARGET}listnamespaces")),
            body: b"{}".to_vec(),
            status: 400,
            kind: "UnknownOperationException",
            message: "unknown operation",
        },
        raw(
            "malformed JSON",
            "ListNamespaces",
            b"{\"MaxResults\":",
            SERDE,
            "",
        ),
        raw(
            "JSON array instead of an object",
            "ListNamespaces",
            b"[]",
            SERDE,
            "",
        ),
        raw("JSON null body", "GetNamespace", b"null", SERDE, ""),
        raw(
            "trailing garbage after the object",
            "ListNamespaces",
            b"{} x",
            SERDE,
            "",
        ),
        raw(
            "body is not UTF-8",
            "GetNamespace",
            b"{\"Id\":\"\xff\xfe\"}",
            SERDE,
            "",
        ),
        raw(
            "duplicate member",
            "GetNamespace",
            b"{\"Id\":\"a\",\"Id\":\"b\"}",
            SERDE,
            "",
        ),
        case(
            "string member given a number",
            "CreateHttpNamespace",
            json!({"Name": 5}),
            SERDE,
            "",
        ),
        case(
            "MaxResults given a string",
            "ListNamespaces",
            json!({"MaxResults": "10"}),
            SERDE,
            "",
        ),
        case(
            "MaxResults given a fraction",
            "ListServices",
            json!({"MaxResults": 10.5}),
            SERDE,
            "",
        ),
        case(
            "Attributes given a list",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "x", "Attributes": ["a=b"]}),
            SERDE,
            "",
        ),
        case(
            "attribute value given a number",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain",
                   "QueryParameters": {"environment": 1}}),
            SERDE,
            "",
        ),
        case(
            "TTL given a string",
            "CreateService",
            json!({"Name": "x", "NamespaceId": f.ns_dns,
                   "DnsConfig": {"DnsRecords": [{"Type": "A", "TTL": "10"}]}}),
            SERDE,
            "",
        ),
        case(
            "Filters given an object",
            "ListNamespaces",
            json!({"Filters": {}}),
            SERDE,
            "",
        ),
        // --- required members ----------------------------------------------
        case(
            "CreateHttpNamespace without Name",
            "CreateHttpNamespace",
            json!({}),
            INVALID,
            "Name",
        ),
        case(
            "Name null",
            "CreateHttpNamespace",
            json!({"Name": null}),
            INVALID,
            "Name",
        ),
        case(
            "CreatePrivateDnsNamespace without Vpc",
            "CreatePrivateDnsNamespace",
            json!({"Name": "x.local"}),
            INVALID,
            "Vpc",
        ),
        case(
            "CreateService without NamespaceId",
            "CreateService",
            json!({"Name": "x"}),
            INVALID,
            "NamespaceId",
        ),
        case(
            "RegisterInstance without Attributes",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "x"}),
            INVALID,
            "Attributes",
        ),
        case(
            "RegisterInstance without InstanceId",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "Attributes": {}}),
            INVALID,
            "InstanceId",
        ),
        case(
            "DiscoverInstances without ServiceName",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input"}),
            INVALID,
            "ServiceName",
        ),
        case(
            "GetOperation without OperationId",
            "GetOperation",
            json!({}),
            INVALID,
            "OperationId",
        ),
        case(
            "GetNamespace with an empty Id",
            "GetNamespace",
            json!({"Id": ""}),
            INVALID,
            "Id",
        ),
        case(
            "UpdateHttpNamespace without Namespace",
            "UpdateHttpNamespace",
            json!({"Id": f.ns_http}),
            INVALID,
            "Namespace",
        ),
        case(
            "UpdatePrivateDnsNamespace without the SOA TTL",
            "UpdatePrivateDnsNamespace",
            json!({"Id": f.ns_dns, "Namespace": {"Description": "x"}}),
            INVALID,
            "Namespace.Properties.DnsProperties",
        ),
        case(
            "TagResource without Tags",
            "TagResource",
            json!({"ResourceARN": f.ns_http_arn}),
            INVALID,
            "Tags",
        ),
        case(
            "tag without Value",
            "TagResource",
            json!({"ResourceARN": f.ns_http_arn, "Tags": [{"Key": "k"}]}),
            INVALID,
            "Tags[0].Value",
        ),
        case(
            "UpdateInstanceCustomHealthStatus without Status",
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": f.custom, "InstanceId": "c-1"}),
            INVALID,
            "Status",
        ),
        // --- names and lengths ---------------------------------------------
        case(
            "namespace name starting with arn:",
            "CreateHttpNamespace",
            json!({"Name": "arn:aws:x"}),
            INVALID,
            "arn:",
        ),
        case(
            "HTTP namespace name with a space",
            "CreateHttpNamespace",
            json!({"Name": "my api"}),
            INVALID,
            "Name",
        ),
        case(
            "HTTP namespace name of 1025 characters",
            "CreateHttpNamespace",
            json!({"Name": "n".repeat(1025)}),
            INVALID,
            "Name",
        ),
        case(
            "private DNS namespace name of 254 characters",
            "CreatePrivateDnsNamespace",
            json!({"Name": format!("{}.local", "a".repeat(248)), "Vpc": "vpc-1"}),
            INVALID,
            "Name",
        ),
        case(
            "public DNS namespace label starting with a hyphen",
            "CreatePublicDnsNamespace",
            json!({"Name": "-bad.example.com"}),
            INVALID,
            "Name",
        ),
        case(
            "Vpc of 65 characters",
            "CreatePrivateDnsNamespace",
            json!({"Name": "y.local", "Vpc": "v".repeat(65)}),
            INVALID,
            "Vpc",
        ),
        case(
            "Description of 1025 characters",
            "CreateHttpNamespace",
            json!({"Name": "described", "Description": "d".repeat(1025)}),
            INVALID,
            "Description",
        ),
        case(
            "CreatorRequestId of 65 characters",
            "CreateHttpNamespace",
            json!({"Name": "requested", "CreatorRequestId": "r".repeat(65)}),
            INVALID,
            "CreatorRequestId",
        ),
        case(
            "SOA TTL on an HTTP namespace",
            "CreateHttpNamespace",
            json!({"Name": "soa", "Properties": {"DnsProperties": {"SOA": {"TTL": 60}}}}),
            INVALID,
            "SOA TTL",
        ),
        case(
            "SOA TTL below 0",
            "CreatePrivateDnsNamespace",
            json!({"Name": "soa.local", "Vpc": "vpc-1",
                   "Properties": {"DnsProperties": {"SOA": {"TTL": -1}}}}),
            INVALID,
            "SOA.TTL",
        ),
        case(
            "UpdateHttpNamespace on a DNS namespace",
            "UpdateHttpNamespace",
            json!({"Id": f.ns_dns, "Namespace": {"Description": "x"}}),
            INVALID,
            "DNS_PRIVATE",
        ),
        svc(
            "service name starting with a hyphen",
            json!({"Name": "-lead"}),
            "Name",
        ),
        svc(
            "service name of 128 characters",
            json!({"Name": format!("{}.{}", "a".repeat(63), "b".repeat(64))}),
            "Name",
        ),
        svc(
            "service name with an empty label",
            json!({"Name": "a..b"}),
            "Name",
        ),
        // --- instance ids and attributes -----------------------------------
        case(
            "InstanceId of 65 characters",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "i".repeat(65), "Attributes": {}}),
            INVALID,
            "InstanceId",
        ),
        case(
            "InstanceId with a space",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "has space", "Attributes": {}}),
            INVALID,
            "InstanceId",
        ),
        case(
            "InstanceId with non-ASCII letters",
            "RegisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "naïve", "Attributes": {}}),
            INVALID,
            "InstanceId",
        ),
        reg(
            "attribute key of 256 characters",
            &f.plain,
            attrs([("k".repeat(256), "v".into())]),
            "attribute key",
        ),
        reg(
            "attribute key with a space",
            &f.plain,
            json!({"bad key": "v"}),
            "attribute key",
        ),
        reg(
            "empty attribute key",
            &f.plain,
            json!({"": "v"}),
            "attribute key",
        ),
        reg(
            "attribute value of 1025 characters",
            &f.plain,
            json!({"k": "v".repeat(1025)}),
            "attribute \"k\"",
        ),
        reg(
            "attribute value with a leading space",
            &f.plain,
            json!({"k": " v"}),
            "attribute \"k\"",
        ),
        reg(
            "attribute value with a newline",
            &f.plain,
            json!({"k": "a\nb"}),
            "attribute \"k\"",
        ),
        reg(
            "attribute value with non-ASCII text",
            &f.plain,
            json!({"k": "ünicode"}),
            "attribute \"k\"",
        ),
        reg(
            "31 custom attributes",
            &f.plain,
            many(31, "k", "v"),
            "at most 30 custom attributes",
        ),
        reg(
            "attributes over 5,000 characters in all",
            &f.plain,
            many(5, "k", &"v".repeat(999)),
            "5000",
        ),
        reg(
            "AWS_INSTANCE_IPV4 not an address",
            &f.plain,
            json!({"AWS_INSTANCE_IPV4": "192.0.2.300"}),
            "AWS_INSTANCE_IPV4",
        ),
        reg(
            "AWS_INSTANCE_IPV6 not an address",
            &f.plain,
            json!({"AWS_INSTANCE_IPV6": "2001:db8::g"}),
            "AWS_INSTANCE_IPV6",
        ),
        reg(
            "AWS_INSTANCE_PORT out of range",
            &f.plain,
            json!({"AWS_INSTANCE_PORT": "70000"}),
            "AWS_INSTANCE_PORT",
        ),
        reg(
            "AWS_INIT_HEALTH_STATUS not a status",
            &f.custom,
            json!({"AWS_INIT_HEALTH_STATUS": "SICK"}),
            "AWS_INIT_HEALTH_STATUS",
        ),
        reg(
            "A record service without AWS_INSTANCE_IPV4",
            &f.a_records,
            json!({"team": "x"}),
            "AWS_INSTANCE_IPV4",
        ),
        reg(
            "SRV record service without AWS_INSTANCE_PORT",
            &f.srv_records,
            json!({"AWS_INSTANCE_IPV4": "192.0.2.1"}),
            "AWS_INSTANCE_PORT",
        ),
        reg(
            "SRV record service without an address",
            &f.srv_records,
            json!({"AWS_INSTANCE_PORT": "80"}),
            "AWS_INSTANCE_IPV4",
        ),
        reg(
            "CNAME service without AWS_INSTANCE_CNAME",
            &f.cname,
            json!({"team": "x"}),
            "AWS_INSTANCE_CNAME",
        ),
        reg(
            "health-checked service without AWS_INSTANCE_PORT",
            &f.checked,
            json!({"AWS_INSTANCE_IPV4": "192.0.2.1"}),
            "AWS_INSTANCE_PORT",
        ),
        reg(
            "health-checked service without an address",
            &f.checked,
            json!({"AWS_INSTANCE_PORT": "80"}),
            "AWS_INSTANCE_IPV4",
        ),
        reg(
            "AWS_EC2_INSTANCE_ID in a DNS namespace",
            &f.a_records,
            json!({"AWS_EC2_INSTANCE_ID": "i-0123456789abcdef0"}),
            "AWS_EC2_INSTANCE_ID",
        ),
        reg(
            "AWS_EC2_INSTANCE_ID with another attribute",
            &f.plain,
            json!({"AWS_EC2_INSTANCE_ID": "i-0123456789abcdef0", "team": "x"}),
            "AWS_EC2_INSTANCE_ID",
        ),
        reg(
            "AWS_ALIAS_DNS_NAME on a MULTIVALUE service",
            &f.a_records,
            json!({"AWS_ALIAS_DNS_NAME": "lb-1.elb.amazonaws.com"}),
            "WEIGHTED",
        ),
        // --- service definitions -------------------------------------------
        svc(
            "CNAME with MULTIVALUE routing",
            dns_records("MULTIVALUE", json!([{"Type": "CNAME", "TTL": 10}])),
            "WEIGHTED",
        ),
        svc(
            "CNAME with a HealthCheckConfig",
            {
                let mut b = dns_records("WEIGHTED", json!([{"Type": "CNAME", "TTL": 10}]));
                b["HealthCheckConfig"] = json!({"Type": "TCP"});
                b
            },
            "HealthCheckConfig",
        ),
        svc(
            "CNAME combined with A",
            dns_records(
                "WEIGHTED",
                json!([{"Type": "CNAME", "TTL": 10}, {"Type": "A", "TTL": 10}]),
            ),
            "CNAME",
        ),
        svc(
            "record type listed twice",
            dns_records(
                "MULTIVALUE",
                json!([{"Type": "A", "TTL": 10}, {"Type": "A", "TTL": 20}]),
            ),
            "more than once",
        ),
        svc(
            "no DNS records",
            dns_records("MULTIVALUE", json!([])),
            "DnsRecords",
        ),
        svc(
            "record type MX",
            dns_records("MULTIVALUE", json!([{"Type": "MX", "TTL": 10}])),
            "DnsConfig.DnsRecords[0].Type",
        ),
        svc(
            "record without TTL",
            dns_records("MULTIVALUE", json!([{"Type": "A"}])),
            "DnsConfig.DnsRecords[0].TTL",
        ),
        svc(
            "record TTL below 0",
            dns_records("MULTIVALUE", json!([{"Type": "A", "TTL": -1}])),
            "TTL",
        ),
        svc(
            "record TTL above 2147483647",
            dns_records("MULTIVALUE", json!([{"Type": "A", "TTL": 2147483648_i64}])),
            "TTL",
        ),
        svc(
            "routing policy ROUND_ROBIN",
            dns_records("ROUND_ROBIN", json!([{"Type": "A", "TTL": 10}])),
            "RoutingPolicy",
        ),
        svc(
            "DnsConfig in an HTTP namespace",
            {
                let mut b = dns_records("MULTIVALUE", json!([{"Type": "A", "TTL": 10}]));
                b["NamespaceId"] = json!(f.ns_http);
                b
            },
            "DnsConfig",
        ),
        svc("service Type DNS", json!({"Type": "DNS"}), "Type"),
        svc(
            "health check path without '/'",
            http_hc(json!({"Type": "HTTP", "ResourcePath": "health"})),
            "ResourcePath",
        ),
        svc(
            "health check path on TCP",
            http_hc(json!({"Type": "TCP", "ResourcePath": "/"})),
            "ResourcePath",
        ),
        svc(
            "health check path of 256 characters",
            http_hc(json!({"Type": "HTTP", "ResourcePath": format!("/{}", "p".repeat(255))})),
            "ResourcePath",
        ),
        svc(
            "health check FailureThreshold 0",
            http_hc(json!({"Type": "HTTP", "FailureThreshold": 0})),
            "FailureThreshold",
        ),
        svc(
            "health check FailureThreshold 11",
            http_hc(json!({"Type": "HTTP", "FailureThreshold": 11})),
            "FailureThreshold",
        ),
        svc(
            "health check type ICMP",
            http_hc(json!({"Type": "ICMP"})),
            "HealthCheckConfig.Type",
        ),
        svc(
            "health check without Type",
            http_hc(json!({"ResourcePath": "/"})),
            "HealthCheckConfig.Type",
        ),
        svc(
            "HealthCheckConfig and HealthCheckCustomConfig together",
            json!({"NamespaceId": f.ns_http, "HealthCheckConfig": {"Type": "TCP"},
                   "HealthCheckCustomConfig": {}}),
            "HealthCheckCustomConfig",
        ),
        svc(
            "custom FailureThreshold 11",
            json!({"HealthCheckCustomConfig": {"FailureThreshold": 11}}),
            "FailureThreshold",
        ),
        svc(
            "NamespaceId and DnsConfig.NamespaceId disagree",
            json!({"DnsConfig": {"NamespaceId": f.ns_http, "DnsRecords": [{"Type": "A", "TTL": 10}]}}),
            "DnsConfig.NamespaceId",
        ),
        case(
            "UpdateService changing a record type",
            "UpdateService",
            json!({"Id": f.a_records, "Service": {"DnsConfig": {"DnsRecords": [{"Type": "AAAA", "TTL": 10}]}}}),
            INVALID,
            "record types",
        ),
        case(
            "UpdateService adding a HealthCheckConfig to a custom-health service",
            "UpdateService",
            json!({"Id": f.custom, "Service": {"HealthCheckConfig": {"Type": "TCP"}}}),
            INVALID,
            "HealthCheckCustomConfig",
        ),
        case(
            "UpdateService with FailureThreshold 0",
            "UpdateService",
            json!({"Id": f.checked, "Service": {"HealthCheckConfig": {"Type": "HTTP", "FailureThreshold": 0}}}),
            INVALID,
            "FailureThreshold",
        ),
        // --- lists, pages and filters --------------------------------------
        case(
            "ListNamespaces MaxResults 0",
            "ListNamespaces",
            json!({"MaxResults": 0}),
            INVALID,
            "MaxResults",
        ),
        case(
            "ListNamespaces MaxResults 101",
            "ListNamespaces",
            json!({"MaxResults": 101}),
            INVALID,
            "MaxResults",
        ),
        case(
            "ListServices MaxResults 101",
            "ListServices",
            json!({"MaxResults": 101}),
            INVALID,
            "MaxResults",
        ),
        case(
            "ListOperations MaxResults -1",
            "ListOperations",
            json!({"MaxResults": -1}),
            INVALID,
            "MaxResults",
        ),
        case(
            "ListInstances MaxResults 0",
            "ListInstances",
            json!({"ServiceId": f.plain, "MaxResults": 0}),
            INVALID,
            "MaxResults",
        ),
        case(
            "GetInstancesHealthStatus MaxResults 101",
            "GetInstancesHealthStatus",
            json!({"ServiceId": f.plain, "MaxResults": 101}),
            INVALID,
            "MaxResults",
        ),
        case(
            "DiscoverInstances MaxResults 0",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain", "MaxResults": 0}),
            INVALID,
            "MaxResults",
        ),
        case(
            "DiscoverInstances MaxResults 1001",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain", "MaxResults": 1001}),
            INVALID,
            "MaxResults",
        ),
        case(
            "NextToken not hex",
            "ListNamespaces",
            json!({"NextToken": "zz"}),
            INVALID,
            "NextToken",
        ),
        case(
            "NextToken of odd length",
            "ListOperations",
            json!({"NextToken": "abc"}),
            INVALID,
            "NextToken",
        ),
        case(
            "NextToken not UTF-8",
            "ListInstances",
            json!({"ServiceId": f.plain, "NextToken": "ff"}),
            INVALID,
            "NextToken",
        ),
        case(
            "NextToken over 2048 characters",
            "ListServices",
            json!({"NextToken": "61".repeat(1025)}),
            INVALID,
            "NextToken",
        ),
        {
            let (op, body) = list_filter(
                "ListNamespaces",
                json!({"Name": "COLOR", "Values": ["red"]}),
            );
            case(
                "unknown namespace filter",
                op,
                body,
                INVALID,
                "Filters[0].Name",
            )
        },
        {
            let (op, body) = list_filter(
                "ListNamespaces",
                json!({"Name": "TYPE", "Values": ["HTTP"], "Condition": "BETWEEN"}),
            );
            case(
                "filter condition not allowed",
                op,
                body,
                INVALID,
                "Filters[0].Condition",
            )
        },
        {
            let (op, body) = list_filter(
                "ListNamespaces",
                json!({"Name": "NAME", "Values": ["a", "b"], "Condition": "EQ"}),
            );
            case("EQ filter with two values", op, body, INVALID, "Filters[0]")
        },
        {
            let (op, body) = list_filter("ListServices", json!({"Name": "NAMESPACE_ID"}));
            case(
                "filter without Values",
                op,
                body,
                INVALID,
                "Filters[0].Values",
            )
        },
        {
            let (op, body) = list_filter("ListServices", json!({"Values": ["x"]}));
            case("filter without Name", op, body, INVALID, "Filters[0].Name")
        },
        {
            let (op, body) = list_filter(
                "ListOperations",
                json!({"Name": "STATUS", "Values": ["DONE"]}),
            );
            case("operation STATUS filter value", op, body, INVALID, "STATUS")
        },
        {
            let (op, body) = list_filter(
                "ListOperations",
                json!({"Name": "TYPE", "Values": ["CREATE_SERVICE"]}),
            );
            case("operation TYPE filter value", op, body, INVALID, "TYPE")
        },
        {
            let (op, body) = list_filter(
                "ListOperations",
                json!({"Name": "UPDATE_DATE", "Values": ["1"], "Condition": "BETWEEN"}),
            );
            case("BETWEEN with one value", op, body, INVALID, "Filters[0]")
        },
        {
            let (op, body) = list_filter(
                "ListOperations",
                json!({"Name": "UPDATE_DATE", "Values": ["yesterday", "today"], "Condition": "BETWEEN"}),
            );
            case(
                "UPDATE_DATE not a timestamp",
                op,
                body,
                INVALID,
                "UPDATE_DATE",
            )
        },
        case(
            "GetInstancesHealthStatus with an empty Instances list",
            "GetInstancesHealthStatus",
            json!({"ServiceId": f.plain, "Instances": []}),
            INVALID,
            "Instances",
        ),
        case(
            "GetInstancesHealthStatus with a bad instance id",
            "GetInstancesHealthStatus",
            json!({"ServiceId": f.plain, "Instances": ["bad id!"]}),
            INVALID,
            "InstanceId",
        ),
        // --- discovery -----------------------------------------------------
        case(
            "HealthStatus not a filter",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain", "HealthStatus": "SICK"}),
            INVALID,
            "HealthStatus",
        ),
        case(
            "QueryParameters key with a space",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain",
                   "QueryParameters": {"bad key": "v"}}),
            INVALID,
            "QueryParameters",
        ),
        case(
            "OptionalParameters value of 1025 characters",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain",
                   "OptionalParameters": {"k": "v".repeat(1025)}}),
            INVALID,
            "OptionalParameters",
        ),
        case(
            "OwnerAccount of another account",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "plain", "OwnerAccount": "123456789012"}),
            INVALID,
            "OwnerAccount",
        ),
        // --- not found, in use, limits -------------------------------------
        case(
            "DiscoverInstances in an unknown namespace",
            "DiscoverInstances",
            json!({"NamespaceName": "nowhere", "ServiceName": "plain"}),
            "NamespaceNotFound",
            "nowhere",
        ),
        case(
            "DiscoverInstances of an unknown service",
            "DiscoverInstances",
            json!({"NamespaceName": "bad-input", "ServiceName": "nobody"}),
            "ServiceNotFound",
            "nobody",
        ),
        case(
            "DiscoverInstancesRevision in an unknown namespace",
            "DiscoverInstancesRevision",
            json!({"NamespaceName": "nowhere", "ServiceName": "plain"}),
            "NamespaceNotFound",
            "nowhere",
        ),
        case(
            "DiscoverInstances finds namespaces by HttpName, not id",
            "DiscoverInstances",
            json!({"NamespaceName": f.ns_http, "ServiceName": "plain"}),
            "NamespaceNotFound",
            "",
        ),
        case(
            "GetNamespace of an unknown id",
            "GetNamespace",
            json!({"Id": "ns-0000000000000000"}),
            "NamespaceNotFound",
            "ns-0000000000000000",
        ),
        case(
            "GetNamespace with a service ARN",
            "GetNamespace",
            json!({"Id": format!("arn:aws:servicediscovery:us-east-1:000000000000:service/{}", f.plain)}),
            "NamespaceNotFound",
            "",
        ),
        case(
            "GetService of an unknown id",
            "GetService",
            json!({"Id": "srv-0000000000000000"}),
            "ServiceNotFound",
            "srv-0000000000000000",
        ),
        case(
            "CreateService in an unknown namespace",
            "CreateService",
            json!({"Name": "x", "NamespaceId": "ns-0000000000000000"}),
            "NamespaceNotFound",
            "",
        ),
        case(
            "RegisterInstance in an unknown service",
            "RegisterInstance",
            json!({"ServiceId": "srv-0000000000000000", "InstanceId": "x", "Attributes": {}}),
            "ServiceNotFound",
            "",
        ),
        case(
            "GetInstance of an unknown instance",
            "GetInstance",
            json!({"ServiceId": f.plain, "InstanceId": "nobody"}),
            "InstanceNotFound",
            "nobody",
        ),
        case(
            "DeregisterInstance of an unknown instance",
            "DeregisterInstance",
            json!({"ServiceId": f.plain, "InstanceId": "nobody"}),
            "InstanceNotFound",
            "nobody",
        ),
        case(
            "GetInstancesHealthStatus of an unknown instance",
            "GetInstancesHealthStatus",
            json!({"ServiceId": f.plain, "Instances": ["nobody"]}),
            "InstanceNotFound",
            "nobody",
        ),
        case(
            "GetOperation of an unknown id",
            "GetOperation",
            json!({"OperationId": "nope"}),
            "OperationNotFound",
            "nope",
        ),
        case(
            "DeleteNamespace with services",
            "DeleteNamespace",
            json!({"Id": f.ns_http}),
            "ResourceInUse",
            "service",
        ),
        case(
            "DeleteService with instances",
            "DeleteService",
            json!({"Id": f.plain}),
            "ResourceInUse",
            "instance",
        ),
        case(
            "custom health on a service without HealthCheckCustomConfig",
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": f.plain, "InstanceId": "i-1", "Status": "HEALTHY"}),
            "CustomHealthNotFound",
            "",
        ),
        case(
            "custom health Status UNKNOWN",
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": f.custom, "InstanceId": "c-1", "Status": "UNKNOWN"}),
            INVALID,
            "Status",
        ),
        case(
            "custom health of an unknown instance",
            "UpdateInstanceCustomHealthStatus",
            json!({"ServiceId": f.custom, "InstanceId": "nobody", "Status": "UNHEALTHY"}),
            "InstanceNotFound",
            "nobody",
        ),
        case(
            "service attributes over 30 in all",
            "UpdateServiceAttributes",
            json!({"ServiceId": f.plain, "Attributes": many(30, "extra", "v")}),
            "ServiceAttributesLimitExceededException",
            "30",
        ),
        case(
            "31 service attributes in one request",
            "UpdateServiceAttributes",
            json!({"ServiceId": f.plain, "Attributes": many(31, "k", "v")}),
            INVALID,
            "Attributes",
        ),
        case(
            "empty service attributes",
            "UpdateServiceAttributes",
            json!({"ServiceId": f.plain, "Attributes": {}}),
            INVALID,
            "Attributes",
        ),
        case(
            "service attribute value with a newline",
            "UpdateServiceAttributes",
            json!({"ServiceId": f.plain, "Attributes": {"k": "a\nb"}}),
            INVALID,
            "attribute \"k\"",
        ),
        case(
            "DeleteServiceAttributes with no keys",
            "DeleteServiceAttributes",
            json!({"ServiceId": f.plain, "Attributes": []}),
            INVALID,
            "Attributes",
        ),
        case(
            "51 tags on a namespace",
            "TagResource",
            json!({"ResourceARN": f.ns_http_arn, "Tags": (0..50)
                .map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect::<Vec<_>>()}),
            "TooManyTagsException",
            "50",
        ),
        case(
            "tag key of 129 characters",
            "TagResource",
            json!({"ResourceARN": f.ns_http_arn, "Tags": [{"Key": "k".repeat(129), "Value": "v"}]}),
            INVALID,
            "Tags[0].Key",
        ),
        case(
            "tag value of 257 characters",
            "TagResource",
            json!({"ResourceARN": f.ns_http_arn, "Tags": [{"Key": "k", "Value": "v".repeat(257)}]}),
            INVALID,
            "Tags[0].Value",
        ),
        case(
            "TagResource on an unknown ARN",
            "TagResource",
            json!({"ResourceARN": "arn:aws:servicediscovery:us-east-1:000000000000:namespace/ns-0000000000000000",
                   "Tags": [{"Key": "k", "Value": "v"}]}),
            "ResourceNotFoundException",
            "ns-0000000000000000",
        ),
        case(
            "ListTagsForResource on something that is not an ARN",
            "ListTagsForResource",
            json!({"ResourceARN": "not-an-arn"}),
            "ResourceNotFoundException",
            "not-an-arn",
        ),
        case(
            "ResourceARN of 1012 characters",
            "UntagResource",
            json!({"ResourceARN": "a".repeat(1012), "TagKeys": ["k"]}),
            INVALID,
            "ResourceARN",
        ),
        case(
            "CreateHttpNamespace with an existing name",
            "CreateHttpNamespace",
            json!({"Name": "bad-input"}),
            "NamespaceAlreadyExists",
            "bad-input",
        ),
        case(
            "CreateService with an existing name",
            "CreateService",
            json!({"Name": "plain", "NamespaceId": f.ns_http}),
            "ServiceAlreadyExists",
            "plain",
        ),
    ];
    // A body just over the limit: 413, before any parsing.
    t.push(Case {
        status: 413,
        ..raw(
            "oversized body",
            "CreateHttpNamespace",
            format!("{{\"Name\":\"{}\"}}", "a".repeat(MAX_BODY_BYTES)).as_bytes(),
            SERDE,
            "larger than",
        )
    });
    t
}

fn check(port: u16, c: &Case) -> Result<(), String> {
    let r = post(port, c.target.as_deref(), &c.body);
    let text = String::from_utf8_lossy(&r.body);
    if r.status != c.status {
        return Err(format!("status {} (want {}): {text}", r.status, c.status));
    }
    if r.header("content-type") != Some(CONTENT_TYPE) {
        return Err(format!("content-type {:?}", r.header("content-type")));
    }
    let v: Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("not JSON ({e}): {text}"))?;
    if v["__type"] != c.kind {
        return Err(format!("__type {} (want {}): {text}", v["__type"], c.kind));
    }
    let message = v["Message"].as_str().ok_or(format!("no Message: {text}"))?;
    if !message.to_lowercase().contains(&c.message.to_lowercase()) {
        return Err(format!(
            "Message {message:?} does not mention {:?}",
            c.message
        ));
    }
    if r.header("x-amzn-errortype") != Some(c.kind) {
        return Err(format!(
            "x-amzn-ErrorType {:?}",
            r.header("x-amzn-errortype")
        ));
    }
    Ok(())
}

#[test]
fn bad_requests_get_the_right_error_and_change_nothing() {
    let server = Server::start();
    let port = server.api_port;
    let fixture = populate(port);
    let before = snapshot(port, &fixture);

    let table = cases(&fixture);
    assert!(table.len() >= 40, "{} cases", table.len());
    let failures: Vec<String> = table
        .iter()
        .filter_map(|c| check(port, c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad requests got a wrong answer:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );

    let after = snapshot(port, &fixture);
    assert_eq!(before, after, "the bad requests changed the registry");

    // The server is still healthy and answers the seed's query.
    let found = call(
        port,
        "DiscoverInstances",
        json!({"NamespaceName": "bad-input", "ServiceName": "plain",
               "QueryParameters": {"environment": "prod"}}),
    );
    assert_eq!(found["Instances"][0]["Attributes"]["tablename"], "UserAuth");
}

#[test]
fn error_shapes_carry_their_extra_members() {
    let server = Server::start();
    let port = server.api_port;
    let f = populate(port);
    let ns = post(
        port,
        Some(&format!("{TARGET}CreateHttpNamespace")),
        json!({"Name": "bad-input"}).to_string().as_bytes(),
    );
    let v = ns.json();
    assert_eq!(v["__type"], "NamespaceAlreadyExists");
    assert_eq!(v["NamespaceId"], json!(f.ns_http), "{v}");
    let svc = post(
        port,
        Some(&format!("{TARGET}CreateService")),
        json!({"Name": "plain", "NamespaceId": f.ns_http})
            .to_string()
            .as_bytes(),
    );
    let v = svc.json();
    assert_eq!(v["__type"], "ServiceAlreadyExists");
    assert_eq!(v["ServiceId"], json!(f.plain), "{v}");
    assert!(v["ServiceArn"].as_str().unwrap().ends_with(&f.plain), "{v}");
    let tags = post(
        port,
        Some(&format!("{TARGET}TagResource")),
        json!({"ResourceARN": f.ns_http_arn, "Tags": (0..51)
            .map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect::<Vec<_>>()})
        .to_string()
        .as_bytes(),
    );
    let v = tags.json();
    assert_eq!(v["__type"], "TooManyTagsException");
    assert_eq!(v["ResourceName"], json!(f.ns_http_arn), "{v}");
}

#[test]
fn non_post_requests_and_other_paths_are_refused() {
    let server = Server::start();
    let port = server.api_port;
    let get = http(port, "GET", "/", &[], b"").unwrap();
    assert_eq!(get.status, 405);
    assert_eq!(get.json()["__type"], "UnknownOperationException");
    let other = http(
        port,
        "POST",
        "/v1/namespaces",
        &[("X-Amz-Target", &format!("{TARGET}ListNamespaces"))],
        b"{}",
    )
    .unwrap();
    assert_eq!(other.status, 404);
    assert_eq!(other.json()["__type"], "UnknownOperationException");
    // An empty body is an empty request, as SDKs send for member-less calls.
    let empty = post(port, Some(&format!("{TARGET}ListNamespaces")), b"");
    assert_eq!(
        empty.status,
        200,
        "{}",
        String::from_utf8_lossy(&empty.body)
    );
    assert_eq!(empty.json()["Namespaces"], json!([]));
}

#[test]
fn a_slow_or_truncated_body_does_not_hang_the_server() {
    let server = Server::start();
    let port = server.api_port;
    // A client that announces more body than it sends and then goes away.
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: {TARGET}ListNamespaces\r\n\
             Content-Length: 100\r\n\r\n{{\"Max"
        )
        .unwrap();
    }
    // Others are still served at once.
    let started = Instant::now();
    let r = post(port, Some(&format!("{TARGET}ListNamespaces")), b"{}");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    // Garbage that is not HTTP at all gets 400 or a closed connection, and
    // the server keeps serving.
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let head = String::from_utf8_lossy(&buf);
        assert!(buf.is_empty() || head.starts_with("HTTP/1.1 400"), "{head}");
    }
    let r = post(port, Some(&format!("{TARGET}ListNamespaces")), b"{}");
    assert_eq!(r.status, 200);
}
