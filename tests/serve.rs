//! `waymark serve` as a user runs it: the metrics server answers, SIGTERM
//! stops it cleanly, and bad input gives clear errors without touching data.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{BIN, free_port, http_get as get};

fn start(data_dir: &Path, port: u16) -> Child {
    Command::new(BIN)
        .args([
            "serve",
            "--api-addr",
            "127.0.0.1:0",
            "--dns-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some((200, _)) = get(port, "/readyz") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("waymark serve did not become ready");
}

fn sigterm(child: &Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// Runs the binary to completion; the API listens on an ephemeral port so
/// parallel tests never collide on the default one.
fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("WAYMARK_API_ADDR", "127.0.0.1:0")
        .env("WAYMARK_DNS_ADDR", "127.0.0.1:0")
        .output()
        .unwrap()
}

#[test]
fn serve_exposes_metrics_and_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = start(&dir.path().join("data"), port);
    wait_ready(port);
    let (status, body) = get(port, "/healthz").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "ok");
    let (status, body) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    for metric in [
        "waymark_registry_instances 0",
        "waymark_registry_namespaces 0",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(metric), "missing {metric} in\n{body}");
    }
    let (status, _) = get(port, "/nope").unwrap();
    assert_eq!(status, 404);

    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("SIGTERM received"), "{log}");
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut first = start(&data, port);
    wait_ready(port);
    let out = run(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--metrics-addr",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another waymark process"), "{err}");
    assert!(
        err.contains(&first.id().to_string()),
        "names the holder: {err}"
    );
    // The first one is unaffected.
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    sigterm(&first);
    assert!(first.wait().unwrap().success());
}

#[test]
fn foreign_and_corrupt_data_dirs_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("home");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("important.txt"), "keep me").unwrap();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let out = run(&[
        "serve",
        "--data-dir",
        foreign.to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a waymark data directory"), "{err}");
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing created or deleted"
    );

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("registry.redb"), b"not a database at all").unwrap();
    let out = run(&[
        "serve",
        "--data-dir",
        corrupt.to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt or unreadable"), "{err}");
    assert_eq!(
        std::fs::read(corrupt.join("registry.redb")).unwrap(),
        b"not a database at all"
    );
}

#[test]
fn bad_flags_get_clap_errors() {
    let out = run(&["serve", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unexpected argument"));
    let out = run(&["serve", "--metrics-addr", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid socket address"));
    let out = run(&["serve", "--account-id", "12"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("12 digits"));
}

#[test]
fn environment_variables_configure_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("WAYMARK_DATA_DIR", dir.path().join("data"))
        .env("WAYMARK_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("WAYMARK_API_ADDR", "127.0.0.1:0")
        .env("WAYMARK_DNS_ADDR", "127.0.0.1:0")
        .env("WAYMARK_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port);
    assert!(dir.path().join("data").join("registry.redb").exists());
    sigterm(&child);
    assert!(child.wait().unwrap().success());
    let first = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&first).expect("JSON log lines");
    assert!(v.get("level").is_some(), "{first}");
}

#[test]
fn metrics_port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[
        "serve",
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
        "--metrics-addr",
        &addr,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
}
