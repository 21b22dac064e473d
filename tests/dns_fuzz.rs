//! Robustness: thousands of random and mutated packets over UDP and TCP at
//! the `waymark serve` binary. The server never crashes or panics, answers
//! malformed queries with FORMERR or drops them, and keeps answering valid
//! queries correctly afterwards.

mod dns_support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use dns_support::*;

/// A small deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Valid queries to start mutations from: every kind the server answers.
fn seeds() -> Vec<Vec<u8>> {
    let names = [
        "inventory-manager.quickship.local",
        "inv-1.inventory-manager.quickship.local",
        "big.quickship.local",
        "quickship.local",
        "_http._tcp.quickship.local",
        "nope.quickship.local",
        "www.public.example",
        "svc.http.namespace",
    ];
    let types = [1u16, 28, 33, 5, 6, 2, 255, 252, 251, 16];
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            let edns = if (i + j) % 2 == 0 { Some(1232) } else { None };
            out.push(raw_query((i * 16 + j) as u16, name, *t, edns));
        }
    }
    out
}

/// One mutation of a valid query: the classic packet-fuzzing operations.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    match rng.below(10) {
        // flip random bits
        0 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(p.len());
                p[i] ^= 1 << rng.below(8);
            }
        }
        // truncate anywhere
        1 => p.truncate(rng.below(p.len())),
        // random header counts (questions, answers, authority, additional)
        2 => {
            let at = 4 + 2 * rng.below(4);
            p[at] = rng.byte();
            p[at + 1] = rng.byte();
        }
        // corrupt a label length (past the end, or huge)
        3 => {
            let i = 12 + rng.below(p.len().saturating_sub(12).max(1));
            if i < p.len() {
                p[i] = [0x3f, 0x40, 0xff, 0x00, 0x7f][rng.below(5)];
            }
        }
        // compression pointers: loops, forward references, out of range
        4 => {
            let i = 12 + rng.below(p.len().saturating_sub(13).max(1));
            if i + 1 < p.len() {
                p[i] = 0xc0 | (rng.byte() & 0x3f);
                p[i + 1] = [12u8, i as u8, 0xff, rng.byte()][rng.below(4)];
            }
        }
        // append garbage (trailing data, bogus extra records)
        5 => {
            let n = rng.below(300);
            p.extend(rng.bytes(n));
        }
        // opcode, QR, rcode and Z bits
        6 => {
            p[2] = rng.byte();
            p[3] = rng.byte();
        }
        // a weird type and class
        7 => {
            let n = p.len();
            if n >= 4 {
                p[n - 4..].copy_from_slice(&rng.bytes(4));
            }
        }
        // splice two queries
        8 => {
            let cut = rng.below(p.len());
            p.truncate(cut);
            p.extend_from_slice(&seed[rng.below(seed.len())..]);
        }
        // an oversized name: 200 one-byte labels
        _ => {
            p.truncate(12);
            for _ in 0..200 {
                p.extend_from_slice(&[1, b'a']);
            }
            p.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
    }
    p
}

#[test]
fn random_and_mutated_packets_never_break_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    populate_data_dir(&data);
    let mut w = Waymark::start(&data);
    let started = std::time::Instant::now();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let seeds = seeds();

    // --- UDP: 3,000 packets, half pure noise, half mutated queries --------
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut sent = 0;
    let mut answers = 0;
    let mut buf = vec![0u8; 65535];
    let mut drain = |sock: &UdpSocket, answers: &mut usize| {
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            *answers += 1;
            assert!(n >= 12, "every response has a header");
            assert_ne!(buf[2] & 0x80, 0, "only responses come back");
        }
    };
    for i in 0..3000 {
        let packet = if i % 2 == 0 {
            let n = rng.below(600);
            rng.bytes(n)
        } else {
            let k = rng.below(seeds.len());
            mutate(&mut rng, &seeds[k])
        };
        sock.send_to(&packet, w.dns).unwrap();
        sent += 1;
        // Pace the flood a little and collect what came back.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
            drain(&sock, &mut answers);
        }
        if i % 500 == 0 {
            assert!(w.alive(), "server alive after {i} UDP packets");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    drain(&sock, &mut answers);
    assert!(
        answers > 0,
        "some mutated queries are still valid and answered"
    );
    eprintln!(
        "UDP: {sent} packets sent, {answers} responses ({:?})",
        started.elapsed()
    );

    // --- TCP: up to 1,000 frames over 100 connections ----------------------------
    let mut frames = 0;
    for c in 0..100 {
        let Ok(mut s) = TcpStream::connect(w.dns) else {
            panic!("TCP connect {c} failed: server down?");
        };
        s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        s.set_nodelay(true).unwrap();
        for _ in 0..10 {
            let body = if rng.below(2) == 0 {
                let n = rng.below(600);
                rng.bytes(n)
            } else {
                {
                    let k = rng.below(seeds.len());
                    mutate(&mut rng, &seeds[k])
                }
            };
            let mut framed = match rng.below(6) {
                // a length prefix that lies (longer or shorter)
                0 => ((body.len() as u16).wrapping_add(rng.below(50) as u16))
                    .to_be_bytes()
                    .to_vec(),
                1 => ((body.len() as u16).saturating_sub(rng.below(10) as u16))
                    .to_be_bytes()
                    .to_vec(),
                _ => (body.len() as u16).to_be_bytes().to_vec(),
            };
            framed.extend_from_slice(&body);
            frames += 1;
            if s.write_all(&framed).is_err() {
                break; // the server may close a connection it cannot parse
            }
            let mut tmp = [0u8; 4096];
            let _ = s.read(&mut tmp);
        }
        // Half the connections are abandoned mid-frame.
        if c % 2 == 0 {
            let _ = s.write_all(&[0x01]);
        }
    }
    eprintln!("TCP: {frames} frames sent ({:?})", started.elapsed());
    assert!(w.alive(), "server alive after the TCP frames");

    // --- the server still answers valid queries correctly ------------------
    for _ in 0..20 {
        let r = dig(w.dns, &["inventory-manager.quickship.local", "SRV"]);
        assert_eq!(r.status, "NOERROR", "{}", r.raw);
        assert_eq!(r.data("SRV").len(), 3, "{}", r.raw);
    }
    let r = dig(w.dns, &["big.quickship.local", "SRV", "+tcp"]);
    assert_eq!(r.data("SRV").len(), 8, "{}", r.raw);
    let r = dig(w.dns, &["nope.quickship.local", "A"]);
    assert_eq!(r.status, "NXDOMAIN", "{}", r.raw);

    // A truncated header is dropped; a readable header with a broken body
    // gets FORMERR with the query's id.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.send_to(&[0x12, 0x34, 0x00], w.dns).unwrap();
    assert!(sock.recv_from(&mut buf).is_err(), "no answer to 3 bytes");
    let mut broken = raw_query(0xbeef, "quickship.local", 1, None);
    broken[12] = 0x3f; // a label running past the end
    let response = udp_exchange(w.dns, &broken, Duration::from_secs(2)).unwrap();
    assert_eq!(&response[..2], &[0xbe, 0xef]);
    assert_eq!(rcode(&response), 1, "FORMERR");
    // Two questions: FORMERR as well.
    let mut two = raw_query(0x0102, "quickship.local", 6, None);
    let question = two[12..].to_vec();
    two[5] = 2;
    two.extend_from_slice(&question);
    let response = udp_exchange(w.dns, &two, Duration::from_secs(2)).unwrap();
    assert_eq!(rcode(&response), 1, "FORMERR for QDCOUNT 2");
    // A non-QUERY opcode (NOTIFY) gets NOTIMP.
    let mut notify = raw_query(0x0203, "quickship.local", 6, None);
    notify[2] = 4 << 3;
    let response = udp_exchange(w.dns, &notify, Duration::from_secs(2)).unwrap();
    assert_eq!(rcode(&response), 4, "NOTIMP");

    assert!(w.alive());
    let metrics = w.metrics();
    assert!(
        metrics.contains("waymark_dns_malformed_total{protocol=\"udp\"}"),
        "malformed packets are counted:\n{metrics}"
    );
    let log = w.stop_and_log();
    assert!(!log.contains("panicked"), "no panic in the server:\n{log}");
}
