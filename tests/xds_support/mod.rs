//! The grpc-go side of the xDS tests: the client binary (built from
//! tests/xds_client by scripts/build-xds-client.sh), its loopback gRPC
//! backends, and one long-lived proxyless gRPC channel driven line by line.
#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The xDS client binary: built (or found up to date) by the build script.
pub fn xds_client_bin() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-xds-client.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--print-bin")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/build-xds-client.sh failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Loopback gRPC backends, each answering with its name.
pub struct Backends {
    _child: KillOnDrop,
    /// Each backend's port, by name.
    pub ports: BTreeMap<String, u16>,
}

impl Backends {
    /// Starts one backend per `NAME` (on 127.0.0.1, a free port) or
    /// `NAME=HOST:PORT`.
    pub fn start(bin: &str, names: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .arg("backends")
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut ports = BTreeMap::new();
        loop {
            let line = lines.next().expect("backends exited").unwrap();
            let words: Vec<_> = line.split_whitespace().collect();
            match words[..] {
                ["listening", name, port] => {
                    ports.insert(name.to_string(), port.parse().unwrap());
                }
                ["ready"] => break,
                _ => panic!("unexpected line from backends: {line}"),
            }
        }
        Self {
            _child: KillOnDrop(child),
            ports,
        }
    }
}

/// What one batch of RPCs found.
#[derive(Debug, serde::Deserialize)]
pub struct Report {
    /// Answers per backend name.
    pub counts: BTreeMap<String, u32>,
    /// Failed RPCs.
    pub errors: u32,
    /// The last failure.
    #[serde(default)]
    pub error: String,
}

/// One long-lived gRPC channel to `xds:///<target>`: its xDS client keeps
/// one ADS stream, so every check sees pushes to a connected client.
pub struct GrpcClient {
    _child: KillOnDrop,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl GrpcClient {
    /// Starts a client of `xds:///<target>` bootstrapped to Waymark's
    /// xDS server on `xds_port`.
    pub fn start(bin: &str, xds_port: u16, target: &str) -> Self {
        let bootstrap = serde_json::json!({
            "xds_servers": [{
                "server_uri": format!("127.0.0.1:{xds_port}"),
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }],
            "node": {"id": "xds-test-client", "locality": {"zone": "test"}},
        });
        let mut child = Command::new(bin)
            .args(["client", &format!("xds:///{target}")])
            // A bootstrap file named by the environment would win over this one.
            .env_remove("GRPC_XDS_BOOTSTRAP")
            .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: KillOnDrop(child),
        }
    }

    /// Sends `n` RPCs one after another.
    pub fn send(&mut self, n: u32) -> Report {
        writeln!(self.stdin, "{n}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad report {line:?}: {e}"))
    }

    /// Sends batches of `n` until one is answered by exactly `backends`
    /// (every one of them, no other, no errors); returns it, or panics with
    /// the last one after 15 s.
    pub fn until_served_by(&mut self, n: u32, backends: &[&str]) -> Report {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let report = self.send(n);
            let served: Vec<&str> = report.counts.keys().map(String::as_str).collect();
            if report.errors == 0 && served == backends {
                return report;
            }
            assert!(
                Instant::now() < deadline,
                "expected traffic on exactly {backends:?}, last batch: {report:?} (last error: {})",
                report.error
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
