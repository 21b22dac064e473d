//! The UDP fast path against the general path: the same answers (as sorted
//! sections, since MULTIVALUE order is random), the packets it leaves to the
//! general path, and its candidate cache following registry changes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::Message;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;

use super::*;
use crate::dns::RegistryHandler;
use crate::dns::metrics::DnsMetrics;
use crate::dns::wire::FastPath;

/// Captures the response the general path sends over UDP.
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let mut buf = Vec::new();
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap() = buf;
        Ok(info)
    }
}

/// A query in wire format: `flags` is the second header word (RD =
/// 0x0100, CD = 0x0010), `edns` the advertised UDP size of an OPT record.
fn query(id: u16, name: &str, qtype: u16, flags: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0]);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

struct Paths {
    reg: Arc<Registry>,
    handler: RegistryHandler,
    fast: FastPath,
}

impl Paths {
    fn new(reg: Arc<Registry>, ns_addrs: Vec<IpAddr>) -> Self {
        let handler = RegistryHandler::new(
            reg.clone(),
            Resolver::new(Scope::All, ns_addrs),
            DnsMetrics::unregistered().unwrap(),
        );
        Self {
            reg,
            handler,
            fast: FastPath::new(),
        }
    }

    fn general(&self, packet: &[u8]) -> Vec<u8> {
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let request = Request::from_bytes(packet.to_vec(), src, Protocol::Udp).unwrap();
        let capture = Capture::default();
        self.handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .now_or_never()
            .expect("the handler completes synchronously");
        capture.0.lock().unwrap().clone()
    }

    fn fast(&mut self, packet: &[u8]) -> Option<Vec<u8>> {
        let index = self.reg.read();
        self.fast.sync(self.reg.generation());
        self.fast
            .answer(packet, &index, self.handler.resolver(), &mut rand::rng())
            .map(|_| self.fast.response().to_vec())
    }
}

/// A response as comparable text: the header and the question as they
/// are, each section as a sorted list of records (the order of a
/// MULTIVALUE answer is random), and the EDNS payload size.
fn summary(bytes: &[u8]) -> String {
    let m = Message::from_vec(bytes).unwrap();
    let sorted = |records: &[Record]| {
        let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        v.sort();
        v
    };
    format!(
        "{:?}\n{:?}\nanswers {:?}\nauthority {:?}\nadditional {:?}\nedns {:?}",
        m.metadata,
        m.queries,
        sorted(&m.answers),
        sorted(&m.authorities),
        sorted(&m.additionals),
        m.edns
            .as_ref()
            .map(|e| (e.max_payload(), e.version(), e.flags().dnssec_ok)),
    )
}

fn fixture() -> Arc<Registry> {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    let s = svc(
        &reg,
        &n,
        "s",
        RoutingPolicy::Multivalue,
        &[Rt::Srv, Rt::A, Rt::Aaaa],
        true,
    );
    for i in 1..=3 {
        inst(
            &reg,
            &s,
            &format!("i{i}"),
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.0.0.{i}")),
                ("AWS_INSTANCE_IPV6", &format!("fd00::{i}")),
                ("AWS_INSTANCE_PORT", "8080"),
            ],
        );
    }
    reg.set_health(&s, "i3", HealthStatus::Unhealthy, &Owner::Api)
        .unwrap();
    let w = svc(&reg, &n, "w", RoutingPolicy::Weighted, &[Rt::Aaaa], false);
    inst(&reg, &w, "only", &[("AWS_INSTANCE_IPV6", "fd00::9")]);
    let c = svc(&reg, &n, "c", RoutingPolicy::Weighted, &[Rt::Cname], false);
    inst(&reg, &c, "x", &[("AWS_INSTANCE_CNAME", "db.example.com")]);
    let t = svc(
        &reg,
        &n,
        "_http._tcp",
        RoutingPolicy::Multivalue,
        &[Rt::Srv],
        false,
    );
    inst(
        &reg,
        &t,
        "web-1",
        &[
            ("AWS_INSTANCE_IPV4", "10.1.0.1"),
            ("AWS_INSTANCE_PORT", "80"),
        ],
    );
    svc(
        &reg,
        &n,
        "empty",
        RoutingPolicy::Multivalue,
        &[Rt::A],
        false,
    );
    let big = svc(
        &reg,
        &n,
        "big",
        RoutingPolicy::Multivalue,
        &[Rt::Srv],
        false,
    );
    for i in 0..8 {
        inst(
            &reg,
            &big,
            &format!("instance-{i:02}-{}", "x".repeat(44)),
            &[
                ("AWS_INSTANCE_IPV4", &format!("10.2.0.{i}")),
                ("AWS_INSTANCE_PORT", "9000"),
            ],
        );
    }
    ns(&reg, "api.test", NamespaceType::Http);
    Arc::new(reg)
}

#[test]
fn plain_queries_get_the_same_answers_as_through_hickory() {
    let mut paths = Paths::new(fixture(), vec!["127.0.0.2".parse().unwrap()]);
    let names = [
        "z.test",
        "Z.TeSt",
        "ns1.z.test",
        "s.z.test",
        "S.z.TEST",
        "i1.s.z.test",
        "I3.S.z.test",
        "nope.s.z.test",
        "w.z.test",
        "c.z.test",
        "_http._tcp.z.test",
        "web-1._http._tcp.z.test",
        "_tcp.z.test",
        "empty.z.test",
        "nope.z.test",
        "a.b.c.nope.z.test",
        "api.test",
        "x.api.test",
        "example.org",
        "big.z.test",
    ];
    // A, NS, CNAME, SOA, MX, TXT, AAAA, SRV, ANY, PTR, an unassigned type,
    // IXFR, AXFR, OPT, 0.
    let types = [
        1u16, 2, 5, 6, 15, 16, 28, 33, 255, 12, 4242, 251, 252, 41, 0,
    ];
    let flags = [0x0000u16, 0x0100, 0x0110, 0x0400];
    let sizes = [
        None,
        Some(100),
        Some(512),
        Some(1232),
        Some(4096),
        Some(65535),
    ];
    let mut fast = 0;
    let mut id = 0u16;
    for name in names {
        for qtype in types {
            for flag in flags {
                for edns in sizes {
                    id = id.wrapping_add(7919);
                    let packet = query(id, name, qtype, flag, edns);
                    let general = paths.general(&packet);
                    let Some(answer) = paths.fast(&packet) else {
                        // Only what does not fit is left to hickory.
                        let m = Message::from_vec(&general).unwrap();
                        assert!(
                            m.metadata.truncation || m.additionals.len() < 8,
                            "{name} {qtype} {edns:?}: the fast path declined"
                        );
                        continue;
                    };
                    fast += 1;
                    assert_eq!(
                        summary(&answer),
                        summary(&general),
                        "{name} type {qtype} flags {flag:#x} edns {edns:?}"
                    );
                    assert!(answer.len() <= general.len(), "{name} {qtype}");
                }
            }
        }
    }
    assert!(fast > 4000, "the fast path answered {fast} queries");
}

#[test]
fn the_id_the_flags_and_the_question_spelling_are_echoed() {
    let mut paths = Paths::new(fixture(), vec![]);
    let packet = query(0xBEEF, "S.z.TeSt", 1, 0x0110, Some(1232));
    let answer = paths.fast(&packet).unwrap();
    assert_eq!(&answer[..2], &[0xBE, 0xEF]);
    // QR AA RD, CD; NOERROR.
    assert_eq!(&answer[2..4], &[0x85, 0x10]);
    // The question is the query's, byte for byte (DNS 0x20 case).
    let question_end = 12 + "S.z.TeSt".len() + 2 + 4;
    assert_eq!(&answer[12..question_end], &packet[12..question_end]);
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.answers.len(), 2, "i1 and i2; i3 is unhealthy");
    for a in &m.answers {
        assert_eq!(
            a.name.to_string(),
            "S.z.TeSt.",
            "owner in the query's spelling"
        );
    }
    // The SOA of a negative answer names the zone as the query spelled it.
    let answer = paths.fast(&query(1, "nope.Z.TEST", 1, 0, None)).unwrap();
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].name.to_string(), "Z.TEST.");
    let RData::SOA(soa) = &m.authorities[0].data else {
        panic!("SOA expected")
    };
    assert_eq!(soa.mname.to_string(), "ns1.Z.TEST.");
    assert_eq!(soa.rname.to_string(), "hostmaster.Z.TEST.");
}

#[test]
fn multivalue_order_stays_random() {
    let mut paths = Paths::new(fixture(), vec![]);
    let packet = query(7, "s.z.test", 1, 0, None);
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let answer = paths.fast(&packet).unwrap();
        let m = Message::from_vec(&answer).unwrap();
        orders.insert(
            m.answers
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(orders.len(), 2, "both orders of the two healthy records");
}

#[test]
fn unusual_packets_are_left_to_the_general_path() {
    let mut paths = Paths::new(fixture(), vec![]);
    let plain = query(1, "s.z.test", 1, 0, None);
    assert!(paths.fast(&plain).is_some());
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut p = plain.clone();
    p[2] |= 0x80;
    cases.push(("a response", p));
    let mut p = plain.clone();
    p[2] |= 4 << 3;
    cases.push(("opcode NOTIFY", p));
    let mut p = plain.clone();
    p[5] = 2;
    cases.push(("two questions", p));
    let mut p = plain.clone();
    p[7] = 1;
    cases.push(("an answer record", p));
    let mut p = plain.clone();
    let class = p.len() - 1;
    p[class] = 3;
    cases.push(("class CH", p));
    let mut p = plain.clone();
    p.push(0);
    cases.push(("trailing bytes", p));
    cases.push(("truncated", plain[..plain.len() - 1].to_vec()));
    let mut p = query(1, "s.z.test", 1, 0, Some(1232));
    let version = p.len() - 5;
    p[version] = 1;
    cases.push(("EDNS version 1", p));
    let mut p = query(1, "s.z.test", 1, 0, Some(1232));
    let n = p.len();
    p[n - 1] = 8;
    p.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 0]);
    cases.push(("client subnet option", p));
    cases.push(("a label with a dot", {
        let mut p = query(1, "s.z.test", 1, 0, None);
        p[13] = b'.';
        p
    }));
    cases.push(("a compression pointer", {
        let mut p = plain[..12].to_vec();
        p.extend_from_slice(&[1, b's', 0xC0, 12, 0, 1, 0, 1]);
        p
    }));
    cases.push(("the root", query(1, ".", 1, 0, None).split_off(0)));
    for (what, packet) in cases {
        assert!(paths.fast(&packet).is_none(), "{what}");
    }
    // A cookie (an option hickory does not decode) is fine.
    let mut p = query(1, "s.z.test", 1, 0, Some(1232));
    let n = p.len();
    p[n - 1] = 12;
    p.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(paths.fast(&p).is_some());
}

#[test]
fn oversized_answers_are_left_to_the_general_path_which_truncates() {
    let mut paths = Paths::new(fixture(), vec![]);
    let packet = query(1, "big.z.test", 33, 0, None);
    assert!(paths.fast(&packet).is_none());
    let m = Message::from_vec(&paths.general(&packet)).unwrap();
    assert!(m.metadata.truncation);
    // With EDNS, room for the answers but not every additional record:
    // the fast path drops the additional records that do not fit.
    let answer = paths
        .fast(&query(1, "big.z.test", 33, 0, Some(800)))
        .unwrap();
    assert!(answer.len() <= 800);
    let m = Message::from_vec(&answer).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 8);
    assert!(!m.additionals.is_empty() && m.additionals.len() < 8);
    assert!(m.edns.is_some());
}

#[test]
fn a_write_shows_on_the_next_fast_answer() {
    let reg = fixture();
    let mut paths = Paths::new(reg.clone(), vec![]);
    let packet = query(1, "w.z.test", 28, 0, None);
    let ips = |bytes: Vec<u8>| {
        Message::from_vec(&bytes)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ips(paths.fast(&packet).unwrap()), ["fd00::9"]);
    let id = reg.read().namespace_by_zone("z.test").unwrap().id.clone();
    let w = reg
        .read()
        .service_by_name(&id, "w")
        .unwrap()
        .service
        .id
        .clone();
    inst(&reg, &w, "only", &[("AWS_INSTANCE_IPV6", "fd00::10")]);
    assert_eq!(ips(paths.fast(&packet).unwrap()), ["fd00::10"]);
    reg.deregister_instance(&w, "only", &Owner::Api).unwrap();
    let m = Message::from_vec(&paths.fast(&packet).unwrap()).unwrap();
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1, "NODATA with the SOA");
}

#[test]
fn mutated_packets_never_panic_and_fast_answers_always_parse() {
    use rand::Rng as _;
    let mut paths = Paths::new(fixture(), vec!["127.0.0.2".parse().unwrap()]);
    let seeds = [
        query(1, "s.z.test", 33, 0x0100, Some(1232)),
        query(2, "I1.s.z.test", 1, 0, None),
        query(3, "z.test", 2, 0, Some(512)),
        query(4, "nope.z.test", 6, 0, None),
        query(5, "big.z.test", 33, 0, Some(4096)),
    ];
    let mut rng = StdRng::seed_from_u64(42);
    let mut answered = 0;
    for round in 0..30_000 {
        let mut p = seeds[round % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..4) {
                0 if !p.is_empty() => {
                    let i = rng.random_range(0..p.len());
                    p[i] = rng.random();
                }
                1 if !p.is_empty() => {
                    let len = rng.random_range(0..p.len());
                    p.truncate(len);
                }
                2 => p.push(rng.random()),
                _ => {
                    let i = rng.random_range(0..p.len().max(1));
                    p.insert(i.min(p.len()), rng.random());
                }
            }
        }
        if let Some(answer) = paths.fast(&p) {
            answered += 1;
            let m = Message::from_vec(&answer).expect("a fast answer parses");
            assert_eq!(m.metadata.id, u16::from_be_bytes([p[0], p[1]]));
            assert!(answer.len() <= 4096);
            // And it is what hickory's path answers.
            assert_eq!(summary(&answer), summary(&paths.general(&p)), "{p:?}");
        }
    }
    assert!(answered > 500, "{answered}");
}

#[test]
fn cached_candidates_last_until_the_registry_changes() {
    let reg = fixture();
    let mut paths = Paths::new(reg.clone(), vec![]);
    let packet = query(1, "w.z.test", 28, 0, None);
    let aaaa = |bytes: &[u8]| {
        Message::from_vec(bytes)
            .unwrap()
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(aaaa(&paths.fast(&packet).unwrap()), ["fd00::9"]);
    assert_eq!(paths.fast.cached_candidates(), 1);
    let id = reg.read().namespace_by_zone("z.test").unwrap().id.clone();
    let w = reg
        .read()
        .service_by_name(&id, "w")
        .unwrap()
        .service
        .id
        .clone();
    inst(&reg, &w, "only", &[("AWS_INSTANCE_IPV6", "fd00::10")]);
    // Without a sync the thread's cache still routes among the old
    // candidates: the generation is what invalidates it ...
    let stale = {
        let index = reg.read();
        paths
            .fast
            .answer(&packet, &index, paths.handler.resolver(), &mut rand::rng())
            .unwrap();
        paths.fast.response().to_vec()
    };
    assert_eq!(aaaa(&stale), ["fd00::9"]);
    // ... and the UDP loop syncs before every batch.
    assert_eq!(aaaa(&paths.fast(&packet).unwrap()), ["fd00::10"]);
    assert_eq!(paths.fast.cached_candidates(), 1);
}

#[test]
fn cached_candidates_follow_health_in_a_large_service() {
    let reg = Registry::in_memory();
    let n = ns(&reg, "z.test", NamespaceType::DnsPrivate);
    let s = svc(
        &reg,
        &n,
        "many",
        RoutingPolicy::Multivalue,
        &[Rt::A, Rt::Srv],
        true,
    );
    for i in 0..300 {
        inst(
            &reg,
            &s,
            &format!("pod-{i}"),
            &[
                (
                    "AWS_INSTANCE_IPV4",
                    &format!("10.0.{}.{}", i / 256, i % 256),
                ),
                ("AWS_INSTANCE_PORT", "80"),
            ],
        );
    }
    let reg = Arc::new(reg);
    let mut paths = Paths::new(reg.clone(), vec![]);
    let a = query(1, "many.z.test", 1, 0, None);
    let srv = query(2, "many.z.test", 33, 0, Some(4096));
    let answers = |bytes: Vec<u8>| {
        let m = Message::from_vec(&bytes).unwrap();
        let data: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        (data, m.additionals.len())
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let (ips, _) = answers(paths.fast(&a).unwrap());
        assert_eq!(ips.len(), 8);
        let distinct: std::collections::BTreeSet<_> = ips.iter().collect();
        assert_eq!(distinct.len(), 8, "eight different records");
        seen.extend(ips);
    }
    assert!(seen.len() > 250, "random over all 300: saw {}", seen.len());
    let (targets, additional) = answers(paths.fast(&srv).unwrap());
    assert_eq!((targets.len(), additional), (8, 8));
    assert_eq!(paths.fast.cached_candidates(), 600, "A and SRV candidates");

    // Only three stay healthy: exactly those, on the next query.
    for i in 3..300 {
        reg.set_health(
            &s,
            &format!("pod-{i}"),
            HealthStatus::Unhealthy,
            &Owner::Api,
        )
        .unwrap();
    }
    for _ in 0..20 {
        let (mut ips, _) = answers(paths.fast(&a).unwrap());
        ips.sort();
        assert_eq!(ips, ["10.0.0.0", "10.0.0.1", "10.0.0.2"]);
        let (targets, _) = answers(paths.fast(&srv).unwrap());
        assert_eq!(targets.len(), 3);
    }
    // None healthy: eight of the unhealthy (fail open).
    for i in 0..3 {
        reg.set_health(
            &s,
            &format!("pod-{i}"),
            HealthStatus::Unhealthy,
            &Owner::Api,
        )
        .unwrap();
    }
    let (ips, _) = answers(paths.fast(&a).unwrap());
    assert_eq!(ips.len(), 8);
    // A deregistered instance is gone from the next answer, as through hickory.
    reg.deregister_instance(&s, "pod-0", &Owner::Api).unwrap();
    let general = paths.general(&a);
    let fast = paths.fast(&a).unwrap();
    assert_eq!(
        Message::from_vec(&fast).unwrap().answers.len(),
        Message::from_vec(&general).unwrap().answers.len()
    );
}
