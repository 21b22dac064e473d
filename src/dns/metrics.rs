//! DNS metrics, registered in the process-wide Prometheus registry:
//!
//! - `waymark_dns_queries_total{qtype, rcode, protocol}`: answered queries.
//! - `waymark_dns_malformed_total{protocol}`: UDP packets that were not a DNS
//!   query (dropped, or answered with FORMERR when the header was readable).
//! - `waymark_dns_response_duration_seconds{protocol}`: time from a parsed
//!   request to its response handed to the socket.

use std::sync::{Arc, OnceLock};

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus::local::LocalHistogram;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

use super::Error;

/// Query type label values; anything else is `OTHER`, so a client cannot
/// create unbounded label sets.
const QTYPES: [&str; 14] = [
    "A", "AAAA", "SRV", "CNAME", "SOA", "NS", "ANY", "AXFR", "IXFR", "PTR", "MX", "TXT", "HTTPS",
    "OTHER",
];
const RCODES: [&str; 8] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "BADVERS", "OTHER",
];
const PROTOCOLS: [&str; 3] = ["udp", "tcp", "other"];

/// The DNS server's metrics. Cheap to clone (handles to shared counters).
///
/// Each labelled series is resolved once, on first use, into a fixed table,
/// so counting a query costs no label hashing or map lookup.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    queries: IntCounterVec,
    malformed: IntCounterVec,
    duration: HistogramVec,
    query_series: Arc<[OnceLock<IntCounter>]>,
    duration_series: Arc<[OnceLock<Histogram>]>,
}

impl DnsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &prometheus::Registry) -> Result<Self, Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.queries.clone()))?;
        registry.register(Box::new(metrics.malformed.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        Ok(metrics)
    }

    /// Metrics that are counted but exported nowhere (tests, benchmarks).
    pub fn unregistered() -> Result<Self, Error> {
        let queries = IntCounterVec::new(
            Opts::new(
                "waymark_dns_queries_total",
                "DNS queries answered, by query type, response code and transport.",
            ),
            &["qtype", "rcode", "protocol"],
        )?;
        let malformed = IntCounterVec::new(
            Opts::new(
                "waymark_dns_malformed_total",
                "Packets that were not a well-formed DNS query, by transport.",
            ),
            &["protocol"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "waymark_dns_response_duration_seconds",
                "Time from a parsed DNS request to its response being sent.",
            )
            .buckets(vec![
                0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
                0.01, 0.025, 0.1,
            ]),
            &["protocol"],
        )?;
        Ok(Self {
            queries,
            malformed,
            duration,
            query_series: (0..QTYPES.len() * RCODES.len() * PROTOCOLS.len())
                .map(|_| OnceLock::new())
                .collect(),
            duration_series: (0..PROTOCOLS.len()).map(|_| OnceLock::new()).collect(),
        })
    }

    /// Counts one answered query and its latency.
    pub fn observe(
        &self,
        protocol: Protocol,
        qtype: Option<RecordType>,
        rcode: ResponseCode,
        seconds: f64,
    ) {
        let p = protocol_index(protocol);
        let q = qtype.map_or(QTYPES.len() - 1, qtype_index);
        let r = rcode_index(rcode);
        self.query_series(q, r, p).inc();
        self.duration_series[p]
            .get_or_init(|| self.duration.with_label_values(&[PROTOCOLS[p]]))
            .observe(seconds);
    }

    /// Per-thread counters for the UDP threads: counting costs no atomic
    /// operation on shared memory; [`LocalDnsMetrics::flush`] adds them to
    /// these metrics.
    pub fn local_udp(&self) -> LocalDnsMetrics {
        let p = protocol_index(Protocol::Udp);
        LocalDnsMetrics {
            shared: self.clone(),
            counts: vec![0; QTYPES.len() * RCODES.len()],
            duration: self.duration_series[p]
                .get_or_init(|| self.duration.with_label_values(&[PROTOCOLS[p]]))
                .local(),
            pending: false,
        }
    }

    fn query_series(&self, q: usize, r: usize, p: usize) -> &IntCounter {
        self.query_series[(q * RCODES.len() + r) * PROTOCOLS.len() + p].get_or_init(|| {
            self.queries
                .with_label_values(&[QTYPES[q], RCODES[r], PROTOCOLS[p]])
        })
    }

    /// Counts one malformed packet.
    pub fn malformed(&self, protocol: Protocol) {
        self.malformed
            .with_label_values(&[protocol_label(protocol)])
            .inc();
    }
}

/// A UDP thread's own query counts and latency histogram, added to the
/// shared [`DnsMetrics`] by [`LocalDnsMetrics::flush`] (after each batch of
/// datagrams).
pub struct LocalDnsMetrics {
    shared: DnsMetrics,
    /// Queries by (qtype, rcode).
    counts: Vec<u64>,
    duration: LocalHistogram,
    pending: bool,
}

impl std::fmt::Debug for LocalDnsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalDnsMetrics").finish_non_exhaustive()
    }
}

impl LocalDnsMetrics {
    /// Counts one query answered over UDP and its latency.
    pub fn observe(&mut self, qtype: RecordType, rcode: ResponseCode, seconds: f64) {
        self.counts[qtype_index(qtype) * RCODES.len() + rcode_index(rcode)] += 1;
        self.duration.observe(seconds);
        self.pending = true;
    }

    /// Adds what was counted since the last flush to the shared metrics.
    pub fn flush(&mut self) {
        if !self.pending {
            return;
        }
        self.pending = false;
        let p = protocol_index(Protocol::Udp);
        for (i, count) in self.counts.iter_mut().enumerate() {
            if *count > 0 {
                self.shared
                    .query_series(i / RCODES.len(), i % RCODES.len(), p)
                    .inc_by(*count);
                *count = 0;
            }
        }
        self.duration.flush();
    }
}

impl Drop for LocalDnsMetrics {
    fn drop(&mut self) {
        self.flush();
    }
}

fn protocol_label(p: Protocol) -> &'static str {
    PROTOCOLS[protocol_index(p)]
}

fn protocol_index(p: Protocol) -> usize {
    match p {
        Protocol::Udp => 0,
        Protocol::Tcp => 1,
        _ => 2,
    }
}

/// The index of a query type in [`QTYPES`].
fn qtype_index(t: RecordType) -> usize {
    match t {
        RecordType::A => 0,
        RecordType::AAAA => 1,
        RecordType::SRV => 2,
        RecordType::CNAME => 3,
        RecordType::SOA => 4,
        RecordType::NS => 5,
        RecordType::ANY => 6,
        RecordType::AXFR => 7,
        RecordType::IXFR => 8,
        RecordType::PTR => 9,
        RecordType::MX => 10,
        RecordType::TXT => 11,
        RecordType::HTTPS => 12,
        _ => 13,
    }
}

/// The index of a response code in [`RCODES`].
fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        ResponseCode::BADVERS => 6,
        _ => 7,
    }
}
