//! The Cloud Map API over TLS end to end: `waymark serve --tls-cert
//! --tls-key` with a certificate from a CA made here, the official AWS SDK
//! for Rust, boto3 and the AWS CLI trusting that CA, certificate rotation
//! without a restart, clients that send plain HTTP or nothing at all, the
//! connection limit, and the flags that must stop start-up.

#[path = "api/harness.rs"]
mod harness;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::support::Options;
use harness::{SdkClient, Server, create_service, http_namespace, https_client, register};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// Every name the tests reach the server by: the SDK's endpoint host, the
/// `data-` host it sends DiscoverInstances to, and loopback.
const NAMES: [&str; 4] = [
    "waymark.test",
    "data-waymark.test",
    "localhost",
    "127.0.0.1",
];

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A server certificate and its key, as PEM, and the certificate's DER.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Waymark test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for [`NAMES`] with common name `cn`.
    fn leaf(&self, cn: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(NAMES.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Where a TLS server's files live.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Files {
    fn write(&self, leaf: &Leaf) {
        std::fs::write(&self.key, &leaf.key).unwrap();
        std::fs::write(&self.cert, &leaf.cert).unwrap();
    }
}

/// `waymark serve` over TLS with `leaf`, and more flags.
fn tls_server(ca: &Ca, leaf: &Leaf, args: &[&str]) -> (Server, Files) {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        ca: dir.path().join("ca.crt"),
    };
    files.write(leaf);
    std::fs::write(&files.ca, &ca.pem).unwrap();
    let mut all: Vec<String> = vec![
        "--tls-cert".into(),
        files.cert.display().to_string(),
        "--tls-key".into(),
        files.key.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let data_dir = dir.path().join("data");
    let server = Server::start_on_with(
        dir,
        data_dir,
        Options {
            args: all,
            ..Options::default()
        },
    );
    (server, files)
}

/// The certificate a fresh TLS connection to `port` is shown, verified
/// against `ca` for `localhost`.
async fn peer_certificate(port: u16, ca: &Ca) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), None, "no ALPN offered, none chosen");
    conn.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn the_rust_sdk_speaks_https_trusting_the_ca() {
    let ca = Ca::new();
    let (server, _files) = tls_server(&ca, &ca.leaf("waymark-a"), &[]);
    let client = https_client(&server, &ca.pem);

    let ns = http_namespace(&client, "tls.test").await;
    let service = create_service(&client, &ns, "web").await;
    register(
        &client,
        &service,
        "i-1",
        &[("AWS_INSTANCE_IPV4", "10.0.0.1".into())],
    )
    .await;
    // DiscoverInstances goes to data-waymark.test: the same listener.
    let found = client
        .discover_instances()
        .namespace_name("tls.test")
        .service_name("web")
        .send()
        .await
        .unwrap();
    assert_eq!(found.instances().len(), 1);
    assert_eq!(found.instances()[0].instance_id(), Some("i-1"));

    // The SDK's plain-HTTP client is turned away; a client that does not
    // trust the CA refuses the server.
    assert!(server.client().list_namespaces().send().await.is_err());
    let stranger = Ca::new();
    assert!(
        https_client(&server, &stranger.pem)
            .list_namespaces()
            .send()
            .await
            .is_err()
    );
    assert!(
        server
            .metric("waymark_api_tls_handshake_failures_total")
            .unwrap()
            >= 2.0
    );
}

/// The AWS CLI and boto3 with no configuration but keys and a region.
fn aws_env(mut cmd: Command, home: &Path) -> Command {
    for var in [
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SERVICEDISCOVERY",
        "AWS_CA_BUNDLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_PAGER", "")
        .env("HOME", home)
        .stdin(Stdio::null());
    cmd
}

#[tokio::test]
async fn boto3_and_the_aws_cli_trust_a_ca_bundle() {
    let ca = Ca::new();
    let (server, files) = tls_server(&ca, &ca.leaf("waymark-a"), &[]);
    let endpoint = format!("https://127.0.0.1:{}", server.api_port);

    let mut cmd = aws_env(Command::new("python3"), server.dir.path());
    cmd.env("AWS_CA_BUNDLE", &files.ca).args([
        "-c",
        "import sys, boto3\n\
         sd = boto3.client('servicediscovery', endpoint_url=sys.argv[1])\n\
         print(sd.create_http_namespace(Name='boto.test')['OperationId'])",
        &endpoint,
    ]);
    let out = cmd.output().expect("python3 with boto3");
    assert!(
        out.status.success(),
        "boto3 over HTTPS: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut cmd = aws_env(Command::new("aws"), server.dir.path());
    cmd.args(["--endpoint-url", &endpoint, "--ca-bundle"])
        .arg(&files.ca)
        .args(["servicediscovery", "list-namespaces", "--output", "json"]);
    let out = cmd.output().expect("the AWS CLI");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("boto.test"),
        "aws over HTTPS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without the bundle the CLI refuses the unknown CA.
    let mut cmd = aws_env(Command::new("aws"), server.dir.path());
    cmd.args(["--endpoint-url", &endpoint])
        .args(["servicediscovery", "list-namespaces"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn plain_http_and_silent_clients_do_not_disturb_https() {
    let ca = Ca::new();
    let (server, _files) = tls_server(&ca, &ca.leaf("waymark-a"), &[]);
    let client = https_client(&server, &ca.pem);

    // Connected, saying nothing: its handshake waits on its own.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", server.api_port)).unwrap())
        .collect();
    let started = Instant::now();
    client.list_namespaces().send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "silent clients held up a handshake for {:?}",
        started.elapsed()
    );

    // Plain HTTP to the TLS port: no HTTP answer, the connection is closed.
    let mut plain = TcpStream::connect(("127.0.0.1", server.api_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut answer = Vec::new();
    match plain.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was not closed: {e}"),
    }
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        server
            .metric("waymark_api_tls_handshake_failures_total")
            .unwrap()
            >= 1.0
    );

    // Still serving, silent clients and all.
    http_namespace(&client, "after.test").await;
    assert_eq!(
        server.metric("waymark_api_connections").unwrap() as usize,
        silent.len() + 1,
        "the silent clients and the SDK's pooled connection"
    );
    drop(silent);
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_a_broken_one_refused() {
    let ca = Ca::new();
    let first = ca.leaf("waymark-a");
    let (server, files) = tls_server(&ca, &first, &["--tls-reload-seconds", "0.25"]);
    assert_eq!(peer_certificate(server.api_port, &ca).await, first.der);
    let refused = r#"waymark_tls_reloads_total{result="refused"}"#;
    let ok = r#"waymark_tls_reloads_total{result="ok"}"#;
    assert_eq!(server.metric(ok), Some(0.0));

    // Rotated in place, as cert-manager and a Secret volume do.
    let second = ca.leaf("waymark-b");
    files.write(&second);
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_certificate(server.api_port, &ca).await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.metric(ok).unwrap() >= 1.0);
    https_client(&server, &ca.pem)
        .list_namespaces()
        .send()
        .await
        .unwrap();

    // A broken replacement (garbage, then a certificate without its key)
    // is refused and the last good one keeps serving.
    let before = server.metric(refused).unwrap();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(refused).unwrap() <= before {
        assert!(
            Instant::now() < deadline,
            "the broken certificate was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peer_certificate(server.api_port, &ca).await, second.der);
    let third = ca.leaf("waymark-c");
    std::fs::write(&files.cert, &third.cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric(refused).unwrap() <= before + 1.0 {
        assert!(
            Instant::now() < deadline,
            "the mismatched pair was not refused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(peer_certificate(server.api_port, &ca).await, second.der);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("certificate change refused"), "{log}");
    assert!(log.contains("tls.crt"), "{log}");
}

/// Reads what a raw connection gets within `wait`: `None` if nothing came.
fn response_within(s: &mut TcpStream, wait: Duration) -> Option<String> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("read failed: {e}"),
    }
}

#[test]
fn at_the_connection_limit_the_next_connection_waits_for_a_free_slot() {
    let server = Server::start_with(Options {
        args: vec!["--max-connections".into(), "2".into()],
        ..Options::default()
    });
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", server.api_port)).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("waymark_api_connections") != Some(2.0) {
        assert!(
            Instant::now() < deadline,
            "the idle connections were not accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The kernel takes the third connection, the server does not yet.
    let mut third = TcpStream::connect(("127.0.0.1", server.api_port)).unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(response_within(&mut third, Duration::from_secs(1)), None);
    assert_eq!(server.metric("waymark_api_connections"), Some(2.0));

    // One idle connection closes: the third gets its answer.
    let mut idle = idle.into_iter();
    drop(idle.next());
    let answer = response_within(&mut third, Duration::from_secs(10))
        .expect("the waiting connection was served");
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert_eq!(log.matches("connection limit").count(), 1, "{log}");
}

/// `waymark serve` with `args`; returns its stderr once it failed.
fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .arg("serve")
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--dns-addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .args(args)
        .env_remove("WAYMARK_TLS_CERT")
        .env_remove("WAYMARK_TLS_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn incomplete_or_unusable_tls_settings_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let ca = Ca::new();
    let leaf = ca.leaf("waymark-a");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let err = serve_fails(&["--data-dir", data, "--tls-cert", cert]);
    assert!(err.contains("--tls-key"), "{err}");
    let err = serve_fails(&["--data-dir", data, "--tls-key", key]);
    assert!(err.contains("--tls-cert"), "{err}");

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "garbage").unwrap();
    let err = serve_fails(&[
        "--data-dir",
        data,
        "--tls-cert",
        garbage.to_str().unwrap(),
        "--tls-key",
        key,
    ]);
    assert!(err.contains("garbage.crt"), "{err}");

    let missing = dir.path().join("missing.key");
    let err = serve_fails(&[
        "--data-dir",
        data,
        "--tls-cert",
        cert,
        "--tls-key",
        missing.to_str().unwrap(),
    ]);
    assert!(err.contains("missing.key"), "{err}");

    // Nothing was opened: the bad settings stopped start-up first.
    assert!(!Path::new(data).exists());
}
