//! The signed-access fixture shared by the access-control tests: principals
//! with keys and IAM-shaped policies, and a `waymark serve` requiring SigV4.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aws_sdk_servicediscovery::error::ProvideErrorMetadata;

use super::harness::support::Options;
use super::harness::{SdkClient, Server, create_service, http_namespace};

pub const ADMIN: (&str, &str) = ("AKIAWAYMARKADMIN0001", "admin-secret-0123456789abcdef");
pub const INVENTORY: (&str, &str) = ("AKIAWAYMARKINVENTORY", "inventory-secret-0123456789abc");
/// May only DiscoverInstances.
pub const READER: (&str, &str) = ("AKIAWAYMARKREADER001", "reader-secret-0123456789abcdef");

/// The seed's policy: the inventory manager may register and deregister
/// only in the `inventory-manager` service, and read everything. The admin
/// may do anything except delete namespaces (an explicit Deny beats its
/// `servicediscovery:*`).
pub const CREDENTIALS: &str = r#"
principals:
  - name: admin
    accessKeys:
      - accessKeyId: AKIAWAYMARKADMIN0001
        secretAccessKey: admin-secret-0123456789abcdef
    policies: [everything, keep-namespaces]
  - name: reader
    accessKeys:
      - accessKeyId: AKIAWAYMARKREADER001
        secretAccessKey: reader-secret-0123456789abcdef
    inlinePolicies:
      - Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: servicediscovery:DiscoverInstances
            Resource: "*"
  - name: inventory-manager
    accessKeys:
      - accessKeyId: AKIAWAYMARKINVENTORY
        secretAccessKey: inventory-secret-0123456789abc
    inlinePolicies:
      - Version: "2012-10-17"
        Statement:
          - Sid: OwnServiceOnly
            Effect: Allow
            Action: ["servicediscovery:RegisterInstance", "servicediscovery:DeregisterInstance"]
            Resource: "*"
            Condition:
              StringEquals:
                "servicediscovery:ServiceName": inventory-manager
          - Effect: Allow
            Action: ["servicediscovery:DiscoverInstances", "servicediscovery:Get*", "servicediscovery:List*"]
            Resource: "*"
policies:
  everything:
    Version: "2012-10-17"
    Statement:
      - Effect: Allow
        Action: "servicediscovery:*"
        Resource: "*"
  keep-namespaces:
    Version: "2012-10-17"
    Statement:
      - Sid: KeepNamespaces
        Effect: Deny
        Action: "servicediscovery:DeleteNamespace"
        Resource: "*"
"#;

/// A server requiring SigV4 with [`CREDENTIALS`], reloading them every
/// quarter second.
pub fn secured() -> Server {
    secured_with(&[])
}

/// [`secured`] with more flags of `waymark serve`.
pub fn secured_with(extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.yaml");
    std::fs::write(&creds, CREDENTIALS).unwrap();
    let data_dir = dir.path().join("data");
    Server::start_on_with(
        dir,
        data_dir,
        Options {
            args: vec![
                "--auth-credentials".into(),
                creds.display().to_string(),
                "--auth-reload-seconds".into(),
                "0.25".into(),
            ]
            .into_iter()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect(),
            ..Options::default()
        },
    )
}

pub fn code<E: ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or("<none>").to_string()
}

/// The admin sets up `<ns>` with the services `inventory-manager` and
/// `order-processor`; returns (namespace id, inventory id, order-processor id).
pub async fn setup(server: &Server, ns: &str) -> (String, String, String) {
    let admin = server.client_as(ADMIN.0, ADMIN.1);
    let ns_id = http_namespace(&admin, ns).await;
    let inventory = create_service(&admin, &ns_id, "inventory-manager").await;
    let orders = create_service(&admin, &ns_id, "order-processor").await;
    (ns_id, inventory, orders)
}

pub struct Signing<'a> {
    pub key: (&'a str, &'a str),
    pub time: SystemTime,
    pub body: &'a str,
    /// The Cloud Map operation.
    pub operation: &'a str,
    /// Presign (query parameters) valid this long, instead of a header.
    pub presign_for: Option<Duration>,
}

/// Signs a POST of `s.operation` to `server` with the AWS SDK's signer;
/// returns (path and query, headers).
pub fn sign(server: &Server, s: &Signing<'_>) -> (String, Vec<(String, String)>) {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    let identity =
        aws_credential_types::Credentials::new(s.key.0, s.key.1, None, None, "test").into();
    let mut settings = SigningSettings::default();
    if let Some(expires) = s.presign_for {
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(expires);
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("servicediscovery")
        .time(s.time)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let host = format!("127.0.0.1:{}", server.api_port);
    let headers = vec![
        ("host".to_string(), host.clone()),
        (
            "content-type".to_string(),
            "application/x-amz-json-1.1".to_string(),
        ),
        (
            "x-amz-target".to_string(),
            format!("Route53AutoNaming_v20170314.{}", s.operation),
        ),
    ];
    let request = SignableRequest::new(
        "POST",
        format!("http://{host}/"),
        headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::Bytes(s.body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut all = headers;
    for (name, value) in instructions.headers() {
        all.push((name.to_string(), value.to_string()));
    }
    let query: Vec<String> = instructions
        .params()
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let path = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{}", query.join("&"))
    };
    (path, all)
}

/// Percent-encodes a query value as SigV4 does (unreserved characters
/// only).
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// POSTs `body` with `headers` to `path`; returns (status, body).
pub fn post(
    server: &Server,
    path: &str,
    headers: &[(String, String)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", server.api_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

/// The `__type` of an error body.
pub fn error_type(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    v["__type"].as_str().unwrap_or(body).to_string()
}
