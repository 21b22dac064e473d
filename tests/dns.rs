//! DNS end to end: `dig` against the `waymark serve` binary, on a data
//! directory populated through the library (tests/dns_support). Every record
//! type and routing policy: answers, TTLs, the 8-record cap, fail-open, SRV
//! targets with their additional records, NXDOMAIN vs NODATA with the SOA,
//! REFUSED outside the zones, EDNS, truncation and the TCP fallback.

mod dns_support;

use std::collections::BTreeSet;

use dns_support::*;

fn server() -> (tempfile::TempDir, Waymark) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate_data_dir(&data);
    let w = Waymark::start(&data);
    (dir, w)
}

#[test]
fn a_and_srv_answers_with_targets_ttls_and_health() {
    let (_dir, w) = server();

    // MULTIVALUE A: the three healthy instances, never the unhealthy one.
    let r = dig(w.dns, &["inventory-manager.quickship.local", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert!(r.has_flag("aa"), "authoritative: {}", r.raw);
    assert!(!r.has_flag("ra"), "no recursion offered: {}", r.raw);
    assert_eq!(
        r.data("A"),
        ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
        "{}",
        r.raw
    );
    assert!(
        r.answer.iter().all(|rr| rr.ttl == 10),
        "A TTL 10: {}",
        r.raw
    );
    assert!(r.authority.is_empty(), "{}", r.raw);

    // SRV: `1 1 <port> <instance>.<service>.<namespace>.` with the targets'
    // A records in the additional section.
    let r = dig(w.dns, &["inventory-manager.quickship.local", "SRV"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(
        r.data("SRV"),
        [
            "1 1 8081 inv-1.inventory-manager.quickship.local.",
            "1 1 8082 inv-2.inventory-manager.quickship.local.",
            "1 1 8083 inv-3.inventory-manager.quickship.local.",
        ],
        "{}",
        r.raw
    );
    assert!(r.answer.iter().all(|rr| rr.ttl == 10), "{}", r.raw);
    let additional: BTreeSet<(String, String, String)> = r
        .additional
        .iter()
        .map(|rr| (rr.name.clone(), rr.rtype.clone(), rr.data.clone()))
        .collect();
    for i in 1..=3 {
        assert!(
            additional.contains(&(
                format!("inv-{i}.inventory-manager.quickship.local."),
                "A".into(),
                format!("10.0.0.{i}")
            )),
            "additional A for inv-{i}: {}",
            r.raw
        );
    }
    assert_eq!(r.additional.len(), 3, "{}", r.raw);

    // Each target resolves on its own, with the service's A TTL.
    let r = dig(w.dns, &["inv-2.inventory-manager.quickship.local", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("A"), ["10.0.0.2"]);
    assert_eq!(r.answer[0].ttl, 10);
    // ... and has no AAAA (NODATA, with the SOA).
    let r = dig(w.dns, &["inv-2.inventory-manager.quickship.local", "AAAA"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert!(r.answer.is_empty());
    assert_eq!(r.authority.len(), 1);
    assert_eq!(r.authority[0].rtype, "SOA");
    // An unknown instance under the service does not exist.
    let r = dig(w.dns, &["inv-9.inventory-manager.quickship.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);

    // AAAA and A+AAAA, each with its own TTL.
    let r = dig(w.dns, &["dual.quickship.local", "AAAA"]);
    assert_eq!(r.data("AAAA"), ["fd00::1", "fd00::2"], "{}", r.raw);
    assert!(r.answer.iter().all(|rr| rr.ttl == 25), "{}", r.raw);
    let r = dig(w.dns, &["dual.quickship.local", "A"]);
    assert_eq!(r.data("A"), ["10.5.0.1", "10.5.0.2"], "{}", r.raw);
    assert!(r.answer.iter().all(|rr| rr.ttl == 15), "{}", r.raw);
}

#[test]
fn multivalue_caps_at_eight_and_fails_open() {
    let (_dir, w) = server();
    // 20 healthy (no health check): 8 distinct records, a different choice
    // across queries.
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let r = dig(w.dns, &["many.quickship.local", "A"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        let data = r.data("A");
        assert_eq!(data.len(), 8, "capped at 8: {}", r.raw);
        assert_eq!(data.iter().collect::<BTreeSet<_>>().len(), 8, "distinct");
        assert!(data.iter().all(|ip| ip.starts_with("10.1.0.")));
        assert!(r.answer.iter().all(|rr| rr.ttl == 60));
        seen.extend(data);
    }
    assert!(seen.len() > 8, "random choice across queries: {seen:?}");

    // 12 instances, all unhealthy: fail open to 8 of them.
    let r = dig(w.dns, &["down.quickship.local", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("A").len(), 8, "{}", r.raw);
    assert!(r.data("A").iter().all(|ip| ip.starts_with("10.2.0.")));
    assert!(r.answer.iter().all(|rr| rr.ttl == 20));
}

#[test]
fn weighted_returns_one_random_healthy_record_and_fails_open() {
    let (_dir, w) = server();
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let r = dig(w.dns, &["weighted.quickship.local", "A"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.answer.len(), 1, "one record: {}", r.raw);
        assert_eq!(r.answer[0].ttl, 5);
        seen.insert(r.answer[0].data.clone());
    }
    assert_eq!(
        seen,
        BTreeSet::from(["10.3.0.1".to_string(), "10.3.0.2".to_string()]),
        "only (and both of) the healthy ones over 30 queries"
    );

    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let r = dig(w.dns, &["weighted-down.quickship.local", "A"]);
        assert_eq!(r.answer.len(), 1, "fail open: {}", r.raw);
        seen.insert(r.answer[0].data.clone());
    }
    assert!(seen.len() >= 2, "random among the unhealthy: {seen:?}");

    // CNAME (WEIGHTED): one CNAME, whatever type is asked.
    for qtype in ["CNAME", "A", "AAAA"] {
        let r = dig(w.dns, &["alias.quickship.local", qtype]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.answer.len(), 1, "{qtype}: {}", r.raw);
        assert_eq!(r.answer[0].rtype, "CNAME");
        assert_eq!(r.answer[0].ttl, 300);
        assert!(
            ["a.db.example.com.", "b.db.example.com."].contains(&r.answer[0].data.as_str()),
            "{}",
            r.raw
        );
    }
}

#[test]
fn negative_answers_carry_the_soa_and_zones_have_soa_and_ns() {
    let (_dir, w) = server();
    // SOA at the apex: minimum = the namespace's SOA TTL (30), TTL the same.
    let r = dig(w.dns, &["quickship.local", "SOA"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert!(r.has_flag("aa"));
    assert_eq!(r.answer.len(), 1, "{}", r.raw);
    let soa: Vec<&str> = r.answer[0].data.split_whitespace().collect();
    assert_eq!(soa[0], "ns1.quickship.local.");
    assert_eq!(soa[1], "hostmaster.quickship.local.");
    assert_eq!(soa[6], "30", "minimum: {}", r.raw);
    assert_eq!(r.answer[0].ttl, 30);

    // NS at the apex, with the name server's address (the listener's).
    let r = dig(w.dns, &["quickship.local", "NS"]);
    assert_eq!(r.data("NS"), ["ns1.quickship.local."], "{}", r.raw);
    assert_eq!(r.additional.len(), 1, "{}", r.raw);
    assert_eq!(r.additional[0].data, "127.0.0.1");
    let r = dig(w.dns, &["ns1.quickship.local", "A"]);
    assert_eq!(r.data("A"), ["127.0.0.1"], "{}", r.raw);

    // NXDOMAIN: no such name; SOA in authority with TTL min(TTL, minimum).
    let r = dig(w.dns, &["nope.quickship.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert!(r.has_flag("aa"));
    assert!(r.answer.is_empty());
    assert_eq!(r.authority.len(), 1, "{}", r.raw);
    assert_eq!(r.authority[0].rtype, "SOA");
    assert_eq!(r.authority[0].name, "quickship.local.");
    assert_eq!(r.authority[0].ttl, 30);

    // NODATA: the name exists, the type does not.
    for (name, qtype) in [
        ("inventory-manager.quickship.local", "AAAA"),
        ("inventory-manager.quickship.local", "TXT"),
        ("many.quickship.local", "SRV"),
        ("empty.quickship.local", "A"),
        ("quickship.local", "A"),
        // the empty non-terminal above `_http._tcp`
        ("_tcp.quickship.local", "SRV"),
    ] {
        let r = dig(w.dns, &[name, qtype]);
        assert_eq!(r.status, "NOERROR", "{name} {qtype}: {}", r.raw);
        assert!(r.answer.is_empty(), "{name} {qtype}: {}", r.raw);
        assert_eq!(r.authority.len(), 1, "{name} {qtype}: {}", r.raw);
        assert_eq!(r.authority[0].rtype, "SOA");
        assert_eq!(r.authority[0].ttl, 30);
    }
    let r = dig(w.dns, &["_http._tcp.quickship.local", "SRV"]);
    assert_eq!(
        r.data("SRV"),
        ["1 1 80 web-1._http._tcp.quickship.local."],
        "{}",
        r.raw
    );
    assert_eq!(r.answer[0].ttl, 9);

    // An API-only service has no DNS name.
    let r = dig(w.dns, &["api-only.quickship.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);

    // The default SOA TTL (15) of a namespace created without one.
    let r = dig(w.dns, &["missing.public.example", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);
    assert_eq!(r.authority[0].ttl, 15);
    assert!(r.authority[0].data.ends_with(" 15"), "{}", r.raw);
}

#[test]
fn names_outside_dns_zones_are_refused_and_public_listener_serves_public_zones_only() {
    let (_dir, w) = server();
    for name in [
        "svc.http.namespace",
        "http.namespace",
        "example.com",
        "local",
        ".",
    ] {
        let r = dig(w.dns, &[name, "A"]);
        assert_eq!(r.status, "REFUSED", "{name}: {}", r.raw);
        assert!(!r.has_flag("aa"), "{name}: {}", r.raw);
    }
    // The public listener: public zones yes, private ones never.
    let r = dig(w.public_dns, &["www.public.example", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("A"), ["192.0.2.10"]);
    let r = dig(w.public_dns, &["inventory-manager.quickship.local", "A"]);
    assert_eq!(r.status, "REFUSED", "{}", r.raw);
    let r = dig(w.public_dns, &["quickship.local", "SOA"]);
    assert_eq!(r.status, "REFUSED", "{}", r.raw);
    // The main listener serves both.
    let r = dig(w.dns, &["www.public.example", "A"]);
    assert_eq!(r.data("A"), ["192.0.2.10"]);
}

#[test]
fn case_insensitive_names_answered_in_the_query_case() {
    let (_dir, w) = server();
    let r = dig(w.dns, &["InVentory-MANAGER.QuickShip.Local", "A"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("A").len(), 3, "{}", r.raw);
    assert!(
        r.answer
            .iter()
            .all(|rr| rr.name == "InVentory-MANAGER.QuickShip.Local."),
        "owner names keep the query's case: {}",
        r.raw
    );
    let r = dig(w.dns, &["INV-1.inventory-manager.QUICKSHIP.local", "A"]);
    assert_eq!(r.data("A"), ["10.0.0.1"], "{}", r.raw);
    let r = dig(w.dns, &["NOPE.QuickShip.Local", "A"]);
    assert_eq!(r.status, "NXDOMAIN");
    assert_eq!(r.authority[0].name, "QuickShip.Local.", "{}", r.raw);
}

#[test]
fn srv_skips_instance_ids_that_are_not_dns_labels() {
    let (_dir, w) = server();
    let r = dig(w.dns, &["odd-ids.quickship.local", "SRV"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(
        r.data("SRV"),
        ["1 1 7000 ok-1.odd-ids.quickship.local."],
        "{}",
        r.raw
    );
    // Their A records are still served on the service name.
    let r = dig(w.dns, &["odd-ids.quickship.local", "A"]);
    assert_eq!(r.data("A").len(), 4, "{}", r.raw);
}

#[test]
fn any_is_answered_minimally_and_zone_transfers_are_refused() {
    let (_dir, w) = server();
    // RFC 8482: one RRset (SRV is configured first for this service).
    let r = dig(w.dns, &["inventory-manager.quickship.local", "ANY"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    let types: BTreeSet<&str> = r.answer.iter().map(|rr| rr.rtype.as_str()).collect();
    assert_eq!(types, BTreeSet::from(["SRV"]), "{}", r.raw);
    let r = dig(w.dns, &["quickship.local", "ANY"]);
    let types: BTreeSet<&str> = r.answer.iter().map(|rr| rr.rtype.as_str()).collect();
    assert_eq!(types, BTreeSet::from(["SOA"]), "{}", r.raw);

    // AXFR and IXFR are refused (over TCP, where transfers run, and UDP).
    for (qtype, name) in [(252u16, "AXFR"), (251, "IXFR")] {
        let response = tcp_exchange(w.dns, &raw_query(7, "quickship.local", qtype, None)).unwrap();
        assert_eq!(rcode(&response), 5, "{name} over TCP: REFUSED");
        assert_eq!(ancount(&response), 0);
        let response = udp_exchange(
            w.dns,
            &raw_query(8, "quickship.local", qtype, None),
            std::time::Duration::from_secs(3),
        )
        .unwrap();
        assert_eq!(rcode(&response), 5, "{name} over UDP: REFUSED");
    }
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", w.dns.ip()))
        .args(["-p", &w.dns.port().to_string(), "+tries=1", "+time=3"])
        .args(["quickship.local", "AXFR"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Transfer failed"), "{text}");
}

#[test]
fn edns_truncation_and_tcp_fallback() {
    let (_dir, w) = server();
    // Eight SRV records with long targets overflow 512 bytes: without EDNS
    // the UDP answer is truncated (TC, no records) ...
    let r = dig(w.dns, &["big.quickship.local", "SRV", "+ignore", "+noedns"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert!(r.has_flag("tc"), "TC over UDP: {}", r.raw);
    assert!(r.answer.is_empty(), "{}", r.raw);
    assert!(r.size <= 512);
    // ... and dig's automatic retry over TCP gets all eight.
    let r = dig(w.dns, &["big.quickship.local", "SRV", "+noedns"]);
    assert!(!r.has_flag("tc"), "{}", r.raw);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    // Explicit TCP: the complete answer with every target's address.
    let r = dig(w.dns, &["big.quickship.local", "SRV", "+tcp", "+noedns"]);
    assert!(!r.has_flag("tc"), "{}", r.raw);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    assert_eq!(r.additional.len(), 8, "{}", r.raw);
    assert!(r.size > 512, "{}", r.raw);
    for srv in r.data("SRV") {
        let target = srv.split_whitespace().last().unwrap();
        assert!(target.ends_with(".big.quickship.local."), "{srv}");
        assert!(
            r.additional
                .iter()
                .any(|a| a.name == target && a.rtype == "A")
        );
    }

    // EDNS: the client's UDP size is honoured (4096: no truncation), and the
    // response carries an OPT record.
    let r = dig(
        w.dns,
        &["big.quickship.local", "SRV", "+ignore", "+bufsize=4096"],
    );
    assert!(!r.has_flag("tc"), "{}", r.raw);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    assert_eq!(r.additional.len(), 8, "{}", r.raw);
    assert_eq!(r.edns_udp, Some(4096), "{}", r.raw);
    // SRV targets are not compressed (RFC 2782), so each record is ~96 bytes
    // (the targets' addresses in the additional section point at them, 16
    // bytes each): with 900 bytes the eight answers fit but not all
    // additional records, which are dropped without TC.
    let r = dig(
        w.dns,
        &["big.quickship.local", "SRV", "+ignore", "+bufsize=900"],
    );
    assert!(!r.has_flag("tc"), "{}", r.raw);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    assert!(
        !r.additional.is_empty() && r.additional.len() < 8,
        "{}",
        r.raw
    );
    assert!(r.size <= 900, "{}", r.raw);
    assert!(r.edns_udp.is_some(), "OPT kept: {}", r.raw);

    // EDNS version 1 gets BADVERS.
    let r = dig(
        w.dns,
        &["many.quickship.local", "A", "+edns=1", "+noednsneg"],
    );
    assert_eq!(r.status, "BADVERS", "{}", r.raw);
}

#[test]
fn metrics_count_queries_by_type_and_rcode() {
    let (_dir, w) = server();
    dig(w.dns, &["many.quickship.local", "A"]);
    dig(w.dns, &["nope.quickship.local", "AAAA"]);
    dig(w.dns, &["big.quickship.local", "SRV", "+tcp"]);
    let m = w.metrics();
    for needle in [
        r#"waymark_dns_queries_total{protocol="udp",qtype="A",rcode="NOERROR"} 1"#,
        r#"waymark_dns_queries_total{protocol="udp",qtype="AAAA",rcode="NXDOMAIN"} 1"#,
        r#"waymark_dns_queries_total{protocol="tcp",qtype="SRV",rcode="NOERROR"} 1"#,
        r#"waymark_dns_response_duration_seconds_count{protocol="udp"} 2"#,
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

/// A plain `<name> A` query with id `id` (RD set, no EDNS).
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Sends `n` queries from `from` at once; returns (full answers, truncated
/// empty answers) received within a second.
fn flood(from: &str, to: std::net::SocketAddr, n: u16) -> (usize, usize) {
    let sock = std::net::UdpSocket::bind(from).unwrap();
    for id in 0..n {
        sock.send_to(&a_query(id, "inventory-manager.quickship.local"), to)
            .unwrap();
    }
    sock.set_read_timeout(Some(std::time::Duration::from_millis(1000)))
        .unwrap();
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 4096];
    while let Ok(len) = sock.recv(&mut buf) {
        assert!(len >= 12);
        let tc = buf[2] & 0x02 != 0;
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        match (tc, answers) {
            (false, 3) => full += 1,
            (true, 0) => truncated += 1,
            other => panic!("unexpected response {other:?}: {:?}", &buf[..len]),
        }
    }
    (full, truncated)
}

#[test]
fn response_rate_limiting_drops_or_truncates_a_flooding_network_and_tcp_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate_data_dir(&data);
    let w = Waymark::start_with(
        &data,
        &["--dns-rate-limit", "5", "--dns-rate-limit-slip", "2"],
    );
    // 40 queries at once from one network: the burst of 5 (and what the
    // rate refills meanwhile) is answered; of the rest every second gets an
    // empty truncated answer, the others nothing.
    let (full, truncated) = flood("127.0.0.1:0", w.dns, 40);
    assert!((5..=8).contains(&full), "{full} full answers");
    let limited = 40 - full;
    assert!(
        truncated.abs_diff(limited / 2) <= 1,
        "{truncated} truncated of {limited} limited"
    );
    // Another network has its own allowance.
    let (full, truncated) = flood("127.0.1.1:0", w.dns, 1);
    assert_eq!((full, truncated), (1, 0));
    // TCP is never limited: dig gets the whole answer.
    let r = dig(w.dns, &["inventory-manager.quickship.local", "A", "+tcp"]);
    assert_eq!(r.status, "NOERROR", "{}", r.raw);
    assert_eq!(r.data("A").len(), 3, "{}", r.raw);
    let metrics = w.metrics();
    for action in ["dropped", "slipped"] {
        let line = format!("waymark_dns_rate_limited_total{{action=\"{action}\"}}");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&line) && !l.ends_with(" 0")),
            "{line} in {metrics}"
        );
    }
}
