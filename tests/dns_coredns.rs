//! The CoreDNS forward block documented in docs/coredns.md, run by a real
//! CoreDNS built from its Go module (scripts/build-coredns.sh, cached), in
//! front of the `waymark serve` binary: Waymark names resolve through it.

mod dns_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dns_support::*;

/// The `corefile` code block of docs/coredns.md, verbatim.
fn documented_block() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/coredns.md"))
            .unwrap();
    let start = doc.find("```corefile\n").expect("a ```corefile block") + "```corefile\n".len();
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_string()
}

/// The CoreDNS binary: built (or found up to date) by the build script.
fn coredns_bin() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-coredns.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("--print-bin")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/build-coredns.sh failed");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn documented_coredns_forward_block_resolves_waymark_names() {
    let coredns = coredns_bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate_data_dir(&data);
    let waymark = Waymark::start(&data);

    // Only the addresses change: Waymark's DNS Service and CoreDNS's port.
    let block = documented_block();
    assert!(block.contains("forward . 10.96.0.53:53"), "{block}");
    assert!(block.starts_with("quickship.local:53 {"), "{block}");
    let port = free_port();
    let corefile = block
        .replace("10.96.0.53:53", &waymark.dns.to_string())
        .replace("quickship.local:53", &format!("quickship.local:{port}"));
    let corefile_path = dir.path().join("Corefile");
    std::fs::write(&corefile_path, &corefile).unwrap();
    let child = Command::new(&coredns)
        .arg("-conf")
        .arg(&corefile_path)
        .arg("-dns.port")
        .arg(port.to_string())
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _coredns = KillOnDrop(child);
    let cdns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Wait for CoreDNS to answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let out = Command::new("dig")
            .args([&format!("@{}", cdns.ip()), "-p", &port.to_string()])
            .args([
                "+tries=1",
                "+time=1",
                "inventory-manager.quickship.local",
                "A",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("status: NOERROR") {
            break parse_dig(&text);
        }
        assert!(
            Instant::now() < deadline,
            "CoreDNS did not answer in 30 s:\n{text}\nCorefile:\n{corefile}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        first.data("A"),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        "healthy instances through CoreDNS: {}",
        first.raw
    );

    // Queries as a pod's resolver sends them (recursion desired).
    let q = |args: &[&str]| {
        let out = Command::new("dig")
            .args([&format!("@{}", cdns.ip()), "-p", &port.to_string()])
            .args(["+tries=2", "+time=2"])
            .args(args)
            .output()
            .unwrap();
        parse_dig(&String::from_utf8_lossy(&out.stdout))
    };
    let r = q(&["inventory-manager.quickship.local", "SRV"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("SRV").len(), 3, "{}", r.raw);
    assert!(
        r.data("SRV")
            .iter()
            .all(|s| s.ends_with(".inventory-manager.quickship.local.")),
        "{}",
        r.raw
    );
    let r = q(&["inv-3.inventory-manager.quickship.local", "A"]);
    assert_eq!(r.data("A"), ["10.0.0.3"], "{}", r.raw);
    let r = q(&["nope.quickship.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert_eq!(r.authority.first().map(|a| a.rtype.as_str()), Some("SOA"));
    // The cache caps TTLs at 5 s.
    let r = q(&["many.quickship.local", "A"]);
    assert_eq!(r.data("A").len(), 8, "{}", r.raw);
    assert!(r.answer.iter().all(|a| a.ttl <= 5), "{}", r.raw);
    // A truncated UDP answer is completed over TCP end to end.
    let r = q(&["big.quickship.local", "SRV", "+noedns"]);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    let r = q(&["big.quickship.local", "SRV", "+tcp"]);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
}
