//! DNS metrics, registered in the process-wide Prometheus registry:
//!
//! - `waymark_dns_queries_total{qtype, rcode, protocol}`: answered queries.
//! - `waymark_dns_malformed_total{protocol}`: packets that were not a DNS query
//!   (dropped, or answered with FORMERR when the header was readable).
//! - `waymark_dns_response_duration_seconds{protocol}`: time from a parsed
//!   request to its response handed to the socket.

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

use super::Error;

/// The DNS server's metrics. Cheap to clone (handles to shared counters).
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    queries: IntCounterVec,
    malformed: IntCounterVec,
    duration: HistogramVec,
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
        let proto = protocol_label(protocol);
        self.queries
            .with_label_values(&[qtype.map_or("NONE", qtype_label), rcode_label(rcode), proto])
            .inc();
        self.duration.with_label_values(&[proto]).observe(seconds);
    }

    /// Counts one malformed packet.
    pub fn malformed(&self, protocol: Protocol) {
        self.malformed
            .with_label_values(&[protocol_label(protocol)])
            .inc();
    }
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Udp => "udp",
        Protocol::Tcp => "tcp",
        _ => "other",
    }
}

/// Query types as label values; anything else is `OTHER`, so a client cannot
/// create unbounded label sets.
fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::CNAME => "CNAME",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::AXFR => "AXFR",
        RecordType::IXFR => "IXFR",
        RecordType::PTR => "PTR",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::HTTPS => "HTTPS",
        _ => "OTHER",
    }
}

fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}
