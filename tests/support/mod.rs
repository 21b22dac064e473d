//! `waymark serve` as a child process for the integration tests: free
//! loopback ports, its own data directory, readiness, restart, and its log
//! printed when a test fails. Shared by every test that drives the binary.
#![allow(dead_code)] // each test binary uses a different part of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod etcd;

/// The `waymark` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_waymark");

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port free for both UDP and TCP a moment ago (for DNS).
pub fn free_udp_tcp_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Extra settings for [`Server::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// More `waymark serve` flags.
    pub args: Vec<String>,
    /// Serve DNS on a known free port ([`Server::dns_port`]); by default it
    /// takes an ephemeral one the test does not learn.
    pub dns: bool,
}

/// A minimal HTTP/1.0 GET: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// A running `waymark serve`; killed on drop.
pub struct Server {
    child: Option<Child>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Cloud Map API port.
    pub api_port: u16,
    /// Metrics port (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_port: u16,
    /// DNS port (UDP and TCP on 127.0.0.1) when [`Options::dns`] asked for one.
    pub dns_port: Option<u16>,
    options: Options,
    /// The server's stderr.
    pub log: PathBuf,
    /// The temporary directory holding the data directory and the log (also
    /// a scratch HOME for client tools).
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    /// Starts a server on a fresh data directory, with extra settings.
    pub fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_on_with(dir, data_dir, options)
    }

    /// Starts a server on a data directory prepared by the caller.
    pub fn start_on(dir: tempfile::TempDir, data_dir: PathBuf) -> Self {
        Self::start_on_with(dir, data_dir, Options::default())
    }

    /// Starts a server on a data directory prepared by the caller, with extra settings.
    pub fn start_on_with(dir: tempfile::TempDir, data_dir: PathBuf, options: Options) -> Self {
        let log = dir.path().join("serve.log");
        let mut server = Self {
            child: None,
            data_dir,
            api_port: 0,
            metrics_port: 0,
            dns_port: None,
            options,
            log,
            dir,
        };
        // A port picked by free_port() can be taken by a parallel test before
        // the server binds it: retry with new ports.
        for _ in 0..5 {
            server.api_port = free_port();
            server.metrics_port = free_port();
            server.dns_port = server.options.dns.then(free_udp_tcp_port);
            if server.spawn() {
                return server;
            }
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            assert!(
                text.contains("cannot listen on"),
                "waymark serve did not start:\n{text}"
            );
        }
        panic!("no free ports for waymark serve after 5 attempts");
    }

    /// Starts the process; false if it exited before becoming ready.
    fn spawn(&mut self) -> bool {
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--api-addr", &format!("127.0.0.1:{}", self.api_port)])
            .args([
                "--metrics-addr",
                &format!("127.0.0.1:{}", self.metrics_port),
            ])
            // The DNS listener must not take a fixed port.
            .args([
                "--dns-addr",
                &format!("127.0.0.1:{}", self.dns_port.unwrap_or(0)),
            ])
            .args(
                (!self.options.args.iter().any(|a| a == "--log"))
                    .then_some(["--log", "warn"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let exited = self
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().unwrap().is_some());
            if exited {
                self.child = None;
                return false;
            }
            if let Some((200, _)) = http_get(self.metrics_port, "/readyz") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("waymark serve did not become ready in 30 s");
    }

    /// Stops the server with SIGTERM (asserting a clean exit) and starts it
    /// again on the same data directory and ports.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let status = child.wait().unwrap();
            assert!(status.success(), "clean shutdown, got {status}");
        }
        assert!(self.spawn(), "waymark serve did not restart");
    }

    /// Kills the server with SIGKILL (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `(status, body)` of `/readyz`.
    pub fn readyz(&self) -> Option<(u16, String)> {
        http_get(self.metrics_port, "/readyz")
    }

    /// One metric's value from `/metrics` (the first sample of that name).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.metrics_port, "/metrics")?;
        body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n == name || n.starts_with(&format!("{name}{{"))).then(|| v.parse().ok())?
        })
    }

    /// `http://127.0.0.1:<api port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- waymark serve log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}
