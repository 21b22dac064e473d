//! Response rate limiting (RRL) of UDP answers per client network, as BIND
//! and Knot do it: a DNS server reachable from the internet can otherwise
//! be used to reflect and amplify floods at a spoofed victim's address.
//!
//! Clients are grouped by network (an IPv4 /24, an IPv6 /56, BIND's
//! defaults), since a spoofed flood rotates source addresses within one.
//! Above the rate, responses are dropped; every `slip`-th of them is
//! instead sent as an empty truncated answer (TC=1), so a real client that
//! shares the network retries over TCP and still gets its answer. TCP is
//! never limited: its source cannot be spoofed.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::{IntCounterVec, Opts};

/// How often idle networks' buckets are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// Response-rate-limit settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlConfig {
    /// Responses per second to one client network.
    pub per_second: NonZeroU32,
    /// Responses at once above the rate.
    pub burst: NonZeroU32,
    /// Every `slip`-th limited response is sent truncated instead of
    /// dropped; 0: all are dropped.
    pub slip: u32,
}

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate: answer.
    Answer,
    /// Over the rate: send nothing.
    Drop,
    /// Over the rate: send an empty truncated answer (retry over TCP).
    Slip,
}

/// The client network a source address counts against.
pub fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let mut o = v6.octets();
                o[7..].fill(0);
                IpAddr::from(o)
            }
        },
    }
}

/// The UDP listeners' response rate limiter, shared by their threads.
#[derive(Debug)]
pub struct ResponseRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    slip: u32,
    limited: AtomicU64,
    counted: IntCounterVec,
}

impl ResponseRateLimit {
    /// A limiter of `config`, counting in `prom`; forgets idle networks in
    /// the background (call from within the async runtime).
    pub fn new(
        config: RrlConfig,
        prom: &prometheus::Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let counted = IntCounterVec::new(
            Opts::new(
                "waymark_dns_rate_limited_total",
                "UDP responses over the per-network response rate limit: dropped, or sent truncated (slipped).",
            ),
            &["action"],
        )?;
        prom.register(Box::new(counted.clone()))?;
        let quota = Quota::per_second(config.per_second).allow_burst(config.burst);
        let me = Arc::new(Self {
            limiter: RateLimiter::keyed(quota),
            slip: config.slip,
            limited: AtomicU64::new(0),
            counted,
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FORGET_EVERY);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                me.limiter.retain_recent();
                me.limiter.shrink_to_fit();
            }
        });
        Ok(me)
    }

    /// Charges one response to `client`'s network.
    pub fn check(&self, client: IpAddr) -> Verdict {
        if self.limiter.check_key(&network(client)).is_ok() {
            return Verdict::Answer;
        }
        let n = self.limited.fetch_add(1, Ordering::Relaxed) + 1;
        let verdict = slip_or_drop(n, self.slip);
        let action = match verdict {
            Verdict::Slip => "slipped",
            _ => "dropped",
        };
        self.counted.with_label_values(&[action]).inc();
        verdict
    }
}

/// The `n`-th limited response (from 1) slips when `slip` divides it.
fn slip_or_drop(n: u64, slip: u32) -> Verdict {
    if slip > 0 && n.is_multiple_of(u64::from(slip)) {
        Verdict::Slip
    } else {
        Verdict::Drop
    }
}

/// Rewrites the query of `len` bytes in `packet` into an empty truncated
/// response to it, in place: the header (QR and TC set, counts but the
/// question zeroed, RCODE NOERROR) and its first question. Returns the
/// response's length, or `None` when the question cannot be read (then
/// nothing is sent).
pub fn truncate_in_place(packet: &mut [u8], len: usize) -> Option<usize> {
    let query = packet.get(..len)?;
    if len < 12 || u16::from_be_bytes([query[4], query[5]]) == 0 {
        return None;
    }
    // The question's name: plain labels (a query's first name is never
    // compressed), then QTYPE and QCLASS.
    let mut at = 12;
    loop {
        let label = *query.get(at)? as usize;
        if label == 0 {
            at += 1;
            break;
        }
        if label & 0xC0 != 0 {
            return None;
        }
        at += 1 + label;
    }
    let end = at + 4;
    if end > len {
        return None;
    }
    // QR=1, keep OPCODE and RD, set TC, clear AA; RA=0, RCODE=0.
    packet[2] = (packet[2] & 0x79) | 0x80 | 0x02;
    packet[3] = 0;
    packet[4..6].copy_from_slice(&1u16.to_be_bytes());
    packet[6..12].fill(0);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_count_against_their_network() {
        let n = |s: &str| network(s.parse().unwrap()).to_string();
        assert_eq!(n("192.0.2.77"), "192.0.2.0");
        assert_eq!(n("2001:db8:1:2ff:aaaa::1"), "2001:db8:1:200::");
        assert_eq!(n("::ffff:192.0.2.9"), "192.0.2.0");
    }

    #[test]
    fn every_slip_th_limited_response_is_truncated() {
        let v: Vec<Verdict> = (1..=6).map(|n| slip_or_drop(n, 2)).collect();
        assert_eq!(
            v,
            [
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip
            ]
        );
        assert!((1..=10).all(|n| slip_or_drop(n, 0) == Verdict::Drop));
        assert!((1..=10).all(|n| slip_or_drop(n, 1) == Verdict::Slip));
    }

    #[tokio::test]
    async fn a_network_over_its_rate_is_limited_and_others_are_not() {
        let prom = prometheus::Registry::new();
        let config = RrlConfig {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
            slip: 2,
        };
        let rrl = ResponseRateLimit::new(config, &prom).unwrap();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let same_net: IpAddr = "198.51.100.200".parse().unwrap();
        let other: IpAddr = "203.0.113.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(rrl.check(a), Verdict::Answer);
        }
        assert_eq!(rrl.check(same_net), Verdict::Drop);
        assert_eq!(rrl.check(a), Verdict::Slip);
        assert_eq!(rrl.check(other), Verdict::Answer);
    }

    #[test]
    fn a_truncated_reply_echoes_the_question_and_nothing_else() {
        // id 0xBEEF, RD, 1 question, 1 additional (OPT): web.example. A IN
        let mut q = vec![0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(b"\x03web\x07example\x00\x00\x01\x00\x01");
        let question_end = q.len();
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        let len = q.len();
        let n = truncate_in_place(&mut q, len).unwrap();
        assert_eq!(n, question_end);
        let r = &q[..n];
        assert_eq!(&r[..2], &[0xBE, 0xEF]);
        assert_eq!(r[2], 0x80 | 0x02 | 0x01, "QR, TC, RD kept");
        assert_eq!(r[3], 0, "NOERROR");
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[12..], b"\x03web\x07example\x00\x00\x01\x00\x01");
    }

    #[test]
    fn unreadable_questions_get_no_reply() {
        let header = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for tail in [
            &b""[..],
            b"\x03web",
            b"\x03web\x00\x00\x01",
            b"\xC0\x0C\x00\x01\x00\x01",
        ] {
            let mut p = header.to_vec();
            p.extend_from_slice(tail);
            let len = p.len();
            assert_eq!(truncate_in_place(&mut p, len), None, "{tail:?}");
        }
        // No question at all.
        let mut p = [0u8, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(truncate_in_place(&mut p, 12), None);
    }
}
