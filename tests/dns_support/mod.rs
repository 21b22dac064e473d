//! Shared helpers of the DNS tests: a registry fixture written through the
//! library, the `waymark serve` binary with its DNS listeners, and `dig`
//! (Debian `dnsutils`) with its output parsed.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use waymark::registry::model::{
    Attributes, DnsConfig, DnsRecord, HealthCheckCustomConfig, HealthStatus, NamespaceType, Owner,
    RecordType, RoutingPolicy, TargetType,
};
use waymark::registry::{CreateNamespace, CreateService, RegisterInstance, Registry};

pub const BIN: &str = env!("CARGO_BIN_EXE_waymark");

/// A port free for both UDP and TCP on 127.0.0.1 (at the time of asking).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

// ----- registry fixture ------------------------------------------------------

pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn create_ns(reg: &Registry, name: &str, kind: NamespaceType, soa_ttl: Option<i64>) -> String {
    let op = reg
        .create_namespace(CreateNamespace {
            name: name.into(),
            kind,
            description: None,
            soa_ttl,
            vpc: None,
            creator_request_id: None,
            tags: vec![],
            owner: Owner::Api,
        })
        .unwrap();
    op.targets[&TargetType::Namespace].clone()
}

pub fn dns(policy: RoutingPolicy, records: &[(RecordType, i64)]) -> Option<DnsConfig> {
    Some(DnsConfig {
        routing_policy: policy,
        records: records
            .iter()
            .map(|&(kind, ttl)| DnsRecord { kind, ttl })
            .collect(),
    })
}

/// Creates a service; `custom_health` gives it a custom health check.
pub fn create_svc(
    reg: &Registry,
    ns: &str,
    name: &str,
    dns: Option<DnsConfig>,
    custom_health: bool,
) -> String {
    reg.create_service(CreateService {
        name: name.into(),
        namespace_id: ns.into(),
        description: None,
        http_only: dns.is_none(),
        dns_config: dns,
        health_check_config: None,
        health_check_custom_config: custom_health.then_some(HealthCheckCustomConfig {
            failure_threshold: None,
        }),
        creator_request_id: None,
        tags: vec![],
        owner: Owner::Api,
    })
    .unwrap()
    .id
}

pub fn register(reg: &Registry, svc: &str, id: &str, a: &[(&str, &str)]) {
    reg.register_instance(RegisterInstance {
        service_id: svc.into(),
        instance_id: id.into(),
        attributes: attrs(a),
        creator_request_id: None,
        owner: Owner::Api,
    })
    .unwrap();
}

pub fn set_health(reg: &Registry, svc: &str, id: &str, healthy: bool) {
    let status = if healthy {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    reg.update_custom_health(svc, id, status, &Owner::Api)
        .unwrap();
}

/// A long SRV target label, so eight SRV records overflow 512 bytes.
pub fn long_id(i: usize) -> String {
    format!("instance-{i:02}-{}", "x".repeat(44))
}

/// The registry every binary-level DNS test queries:
///
/// - `quickship.local` (private, SOA TTL 30):
///   - `inventory-manager`: MULTIVALUE SRV+A (TTL 10), custom health; inv-1..3
///     healthy (10.0.0.1-3, ports 8081-8083), inv-4 unhealthy (10.0.0.4).
///   - `many`: MULTIVALUE A (TTL 60), no health check, 20 instances 10.1.0.1-20.
///   - `down`: MULTIVALUE A (TTL 20), custom health, 12 instances, all unhealthy.
///   - `weighted`: WEIGHTED A (TTL 5), custom health: w-1, w-2 healthy
///     (10.3.0.1-2), w-3..5 unhealthy (10.3.0.3-5).
///   - `weighted-down`: WEIGHTED A, custom health, 3 unhealthy (10.4.0.1-3).
///   - `dual`: MULTIVALUE A (TTL 15) + AAAA (TTL 25): 10.5.0.1 / fd00::1, 10.5.0.2 / fd00::2.
///   - `alias`: WEIGHTED CNAME (TTL 300): db-a -> a.db.example.com, db-b -> b.db.example.com.
///   - `big`: MULTIVALUE SRV (TTL 7), 10 instances with 57-character ids.
///   - `_http._tcp`: MULTIVALUE SRV (TTL 9): web-1 10.6.0.1:80.
///   - `odd-ids`: MULTIVALUE SRV+A (TTL 11): `pod/x`, `a:b`, `u@h` and `ok-1`.
///   - `empty`: MULTIVALUE A (TTL 10), no instances.
///   - `api-only`: HTTP-only service (no DNS config), one instance.
/// - `public.example` (public, default SOA TTL 15): `www` MULTIVALUE A 192.0.2.10.
/// - `http.namespace` (HTTP): `svc`, one instance.
pub fn populate(reg: &Registry) -> BTreeMap<&'static str, String> {
    use RecordType::*;
    use RoutingPolicy::*;
    let mut ids = BTreeMap::new();
    let ns = create_ns(reg, "quickship.local", NamespaceType::DnsPrivate, Some(30));

    let inv = create_svc(
        reg,
        &ns,
        "inventory-manager",
        dns(Multivalue, &[(Srv, 10), (A, 10)]),
        true,
    );
    for i in 1..=4 {
        let ip = format!("10.0.0.{i}");
        let port = format!("{}", 8080 + i);
        register(
            reg,
            &inv,
            &format!("inv-{i}"),
            &[("AWS_INSTANCE_IPV4", &ip), ("AWS_INSTANCE_PORT", &port)],
        );
    }
    set_health(reg, &inv, "inv-4", false);
    ids.insert("inventory-manager", inv);

    let many = create_svc(reg, &ns, "many", dns(Multivalue, &[(A, 60)]), false);
    for i in 1..=20 {
        register(
            reg,
            &many,
            &format!("m-{i}"),
            &[("AWS_INSTANCE_IPV4", &format!("10.1.0.{i}"))],
        );
    }
    ids.insert("many", many);

    let down = create_svc(reg, &ns, "down", dns(Multivalue, &[(A, 20)]), true);
    for i in 1..=12 {
        let id = format!("d-{i}");
        register(
            reg,
            &down,
            &id,
            &[("AWS_INSTANCE_IPV4", &format!("10.2.0.{i}"))],
        );
        set_health(reg, &down, &id, false);
    }
    ids.insert("down", down);

    let weighted = create_svc(reg, &ns, "weighted", dns(Weighted, &[(A, 5)]), true);
    for i in 1..=5 {
        let id = format!("w-{i}");
        register(
            reg,
            &weighted,
            &id,
            &[("AWS_INSTANCE_IPV4", &format!("10.3.0.{i}"))],
        );
        if i > 2 {
            set_health(reg, &weighted, &id, false);
        }
    }
    ids.insert("weighted", weighted);

    let wdown = create_svc(reg, &ns, "weighted-down", dns(Weighted, &[(A, 5)]), true);
    for i in 1..=3 {
        let id = format!("wd-{i}");
        register(
            reg,
            &wdown,
            &id,
            &[("AWS_INSTANCE_IPV4", &format!("10.4.0.{i}"))],
        );
        set_health(reg, &wdown, &id, false);
    }
    ids.insert("weighted-down", wdown);

    let dual = create_svc(
        reg,
        &ns,
        "dual",
        dns(Multivalue, &[(A, 15), (Aaaa, 25)]),
        false,
    );
    for i in 1..=2 {
        register(
            reg,
            &dual,
            &format!("dual-{i}"),
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.5.0.{i}")),
                ("AWS_INSTANCE_IPV6", &format!("fd00::{i}")),
            ],
        );
    }
    ids.insert("dual", dual);

    let alias = create_svc(reg, &ns, "alias", dns(Weighted, &[(Cname, 300)]), false);
    register(
        reg,
        &alias,
        "db-a",
        &[("AWS_INSTANCE_CNAME", "a.db.example.com")],
    );
    register(
        reg,
        &alias,
        "db-b",
        &[("AWS_INSTANCE_CNAME", "b.db.example.com")],
    );
    ids.insert("alias", alias);

    let big = create_svc(reg, &ns, "big", dns(Multivalue, &[(Srv, 7)]), false);
    for i in 1..=10 {
        register(
            reg,
            &big,
            &long_id(i),
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.7.0.{i}")),
                ("AWS_INSTANCE_PORT", "9000"),
            ],
        );
    }
    ids.insert("big", big);

    let web = create_svc(reg, &ns, "_http._tcp", dns(Multivalue, &[(Srv, 9)]), false);
    register(
        reg,
        &web,
        "web-1",
        &[
            ("AWS_INSTANCE_IPV4", "10.6.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    ids.insert("_http._tcp", web);

    let odd = create_svc(
        reg,
        &ns,
        "odd-ids",
        dns(Multivalue, &[(Srv, 11), (A, 11)]),
        false,
    );
    for (i, id) in ["pod/x", "a:b", "u@h", "ok-1"].iter().enumerate() {
        register(
            reg,
            &odd,
            id,
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.8.0.{}", i + 1)),
                ("AWS_INSTANCE_PORT", "7000"),
            ],
        );
    }
    ids.insert("odd-ids", odd);

    ids.insert(
        "empty",
        create_svc(reg, &ns, "empty", dns(Multivalue, &[(A, 10)]), false),
    );

    let api_only = create_svc(reg, &ns, "api-only", None, false);
    register(reg, &api_only, "x-1", &[("AWS_INSTANCE_IPV4", "10.9.0.1")]);
    ids.insert("api-only", api_only);

    let public = create_ns(reg, "public.example", NamespaceType::DnsPublic, None);
    let www = create_svc(reg, &public, "www", dns(Multivalue, &[(A, 60)]), false);
    register(reg, &www, "www-1", &[("AWS_INSTANCE_IPV4", "192.0.2.10")]);
    ids.insert("www", www);

    let http = create_ns(reg, "http.namespace", NamespaceType::Http, None);
    let svc = create_svc(reg, &http, "svc", None, false);
    register(reg, &svc, "h-1", &[("AWS_INSTANCE_IPV4", "10.10.0.1")]);
    ids
}

/// Writes the fixture into a fresh data directory through the library.
pub fn populate_data_dir(dir: &Path) {
    let store = waymark::registry::RedbStore::open(dir).unwrap();
    let reg = Registry::open(Box::new(store), Default::default()).unwrap();
    populate(&reg);
}

// ----- the binary ------------------------------------------------------------

/// `waymark serve` with DNS on a free port (and a public-only listener).
pub struct Waymark {
    pub child: Child,
    pub dns: SocketAddr,
    pub public_dns: SocketAddr,
    pub metrics_port: u16,
}

impl Waymark {
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// [`Waymark::start`] with more `waymark serve` flags.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Self {
        let dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let public_dns: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_port = free_port();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-addr", "127.0.0.1:0"])
            .args(["--dns-addr", &dns.to_string()])
            .args(["--dns-public-addr", &public_dns.to_string()])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--log", "warn"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut w = Self {
            child,
            dns,
            public_dns,
            metrics_port,
        };
        w.wait_ready();
        w
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(body) = http_get(self.metrics_port, "/readyz")
                && body.split_whitespace().nth(1) == Some("200")
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "waymark serve exited early: {status}\n{}",
                    self.stop_and_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("waymark serve did not become ready");
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Stops the process (SIGTERM) and returns its stderr.
    pub fn stop_and_log(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Waymark {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.0 GET returning the whole response.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    Some(buf)
}

// ----- dig -------------------------------------------------------------------

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// A parsed dig response.
#[derive(Debug, Clone, Default)]
pub struct DigOutput {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<Rr>,
    pub authority: Vec<Rr>,
    pub additional: Vec<Rr>,
    /// The EDNS UDP size the server advertised, when it sent an OPT record.
    pub edns_udp: Option<u16>,
    /// Response size in bytes (`;; MSG SIZE  rcvd: N`).
    pub size: usize,
    pub raw: String,
}

impl DigOutput {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data fields of the answer records of one type, sorted.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect();
        v.sort();
        v
    }
}

/// Runs `dig @server -p port <args>` (no recursion, one try) and parses it.
pub fn dig(server: SocketAddr, args: &[&str]) -> DigOutput {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(["+norec", "+tries=1", "+time=3", "+nocookie"])
        .args(args)
        .output()
        .expect("dig (Debian package dnsutils) is installed");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dig {args:?} failed: {raw}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_dig(&raw)
}

pub fn parse_dig(raw: &str) -> DigOutput {
    let mut o = DigOutput {
        raw: raw.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
            o.status = rest
                .split(',')
                .find_map(|p| p.trim().strip_prefix("status: "))
                .unwrap_or_default()
                .to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or_default();
            o.flags = flags.split_whitespace().map(str::to_string).collect();
        } else if let Some(rest) = line.strip_prefix("; EDNS: version: 0, flags:; udp: ") {
            o.edns_udp = rest.trim().parse().ok();
        } else if line.starts_with("; EDNS:") {
            o.edns_udp = line
                .rsplit("udp: ")
                .next()
                .and_then(|v| v.trim().parse().ok());
        } else if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
            o.size = rest.trim().parse().unwrap_or(0);
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.starts_with(';') || line.is_empty() {
            if line.is_empty() {
                section = "";
            }
        } else if !section.is_empty() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(ttl), Some(_class), Some(rtype)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rr = Rr {
                name: name.to_string(),
                ttl: ttl.parse().unwrap_or(u32::MAX),
                rtype: rtype.to_string(),
                data: parts.collect::<Vec<_>>().join(" "),
            };
            match section {
                "answer" => o.answer.push(rr),
                "authority" => o.authority.push(rr),
                _ => o.additional.push(rr),
            }
        }
    }
    o
}

// ----- raw DNS messages --------------------------------------------------------

/// A query message: id, RD clear, one question of class IN, optionally an
/// OPT record advertising `edns_udp`.
pub fn raw_query(id: u16, name: &str, qtype: u16, edns_udp: Option<u16>) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[
        0x00,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns_udp.is_some()),
    ]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns_udp {
        m.push(0); // root
        m.extend_from_slice(&41u16.to_be_bytes());
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

/// The response code (low four bits) of a response message.
pub fn rcode(response: &[u8]) -> u8 {
    response[3] & 0x0f
}

/// The answer count of a response message.
pub fn ancount(response: &[u8]) -> u16 {
    u16::from_be_bytes([response[6], response[7]])
}

/// Sends one message over TCP (length-prefixed) and reads one response.
pub fn tcp_exchange(server: SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut s = TcpStream::connect(server)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut framed = (message.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    s.write_all(&framed)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

/// Sends one datagram and waits (up to `timeout`) for the response.
pub fn udp_exchange(server: SocketAddr, message: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.send_to(message, server).ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}
