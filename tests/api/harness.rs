//! Runs `waymark serve` on free loopback ports and builds an unmodified AWS
//! SDK client for it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns};

const BIN: &str = env!("CARGO_BIN_EXE_waymark");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resolves every name to 127.0.0.1. The SDK sends `DiscoverInstances` to
/// `data-<endpoint host>` (a host prefix the Rust SDK cannot turn off), so,
/// like the Helm chart's `data-<release>` Service alias, both `waymark.test`
/// and `data-waymark.test` must reach the server.
#[derive(Debug, Clone)]
struct Loopback;

impl ResolveDns for Loopback {
    fn resolve_dns<'a>(&'a self, _name: &'a str) -> DnsFuture<'a> {
        DnsFuture::ready(Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
    }
}

/// A running `waymark serve`.
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub api_port: u16,
    pub metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_on(dir, data_dir)
    }

    /// Starts a server on a data directory prepared by the caller.
    pub fn start_on(dir: tempfile::TempDir, data_dir: PathBuf) -> Self {
        let mut server = Self {
            child: None,
            data_dir,
            api_port: free_port(),
            metrics_port: free_port(),
            _dir: dir,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--api-addr", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--dns-addr", "127.0.0.1:0"])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .http_get("/readyz")
                .is_some_and(|s| s.starts_with("HTTP/1.0 200") || s.starts_with("HTTP/1.1 200"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("waymark serve did not become ready");
    }

    fn http_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Stops the server with SIGTERM and starts it again on the same data
    /// directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "clean shutdown, got {status}");
        }
    }

    /// The endpoint URL to give an SDK.
    pub fn endpoint(&self) -> String {
        format!("http://waymark.test:{}", self.api_port)
    }

    /// An unmodified AWS SDK client pointed at this server.
    pub fn client(&self) -> Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(Loopback);
        let config = aws_sdk_servicediscovery::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ))
            .endpoint_url(self.endpoint())
            .http_client(http)
            .build();
        Client::from_conf(config)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
