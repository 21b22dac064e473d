//! The hickory [`RequestHandler`] that answers every query from the registry
//! index: protocol checks (opcode, question count, class, EDNS version),
//! resolution under a short read lock, EDNS payload sizes, and truncation.

use std::sync::Arc;
use std::time::Instant;

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, RData, Record};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::metrics::DnsMetrics;
use super::resolve::{Resolution, Resolver};
use crate::registry::Registry;

/// The largest UDP payload Waymark sends, whatever a client advertises
/// (responses to EDNS clients are bounded by min(advertised, this)).
pub const MAX_UDP_PAYLOAD: u16 = 4096;
/// The size of an OPT record without options.
const OPT_LEN: usize = 11;
/// The header size.
const HEADER_LEN: usize = 12;

/// Answers DNS requests from the registry. Cheap to clone; clones share the
/// registry and the metrics.
#[derive(Clone, Debug)]
pub struct RegistryHandler {
    registry: Arc<Registry>,
    resolver: Arc<Resolver>,
    metrics: DnsMetrics,
}

impl RegistryHandler {
    /// A handler answering with `resolver` from `registry`.
    pub fn new(registry: Arc<Registry>, resolver: Resolver, metrics: DnsMetrics) -> Self {
        Self {
            registry,
            resolver: Arc::new(resolver),
            metrics,
        }
    }

    /// The metrics this handler counts into.
    pub fn metrics(&self) -> &DnsMetrics {
        &self.metrics
    }

    /// The registry it answers from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The resolver (the listener's scope and name server addresses).
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    async fn respond<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_version(0);
            edns
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());

        let early = if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Some(ResponseCode::BADVERS)
        } else if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            Some(ResponseCode::FormErr)
        } else if request.queries.queries()[0].query_class() != DNSClass::IN {
            Some(ResponseCode::Refused)
        } else {
            None
        };
        if let Some(rcode) = early {
            metadata.response_code = rcode;
            return send(&mut handle, builder.build_no_records(metadata), metadata).await;
        }

        let query = &request.queries.queries()[0];
        let resolution = {
            let index = self.registry.read();
            self.resolver.resolve(
                &index,
                query.original().name(),
                query.query_type(),
                &mut rand::rng(),
            )
        };
        metadata.authoritative = resolution.authoritative;
        metadata.response_code = resolution.rcode;

        let limit = match request.protocol() {
            Protocol::Udp => response_edns.as_ref().map_or(512, Edns::max_payload),
            _ => u16::MAX,
        };
        let fit = fit(
            request,
            &resolution,
            metadata,
            response_edns.is_some(),
            limit,
        );
        metadata.truncation = fit.truncated;
        let (answers, authority, additionals) = if fit.truncated {
            (&[][..], &[][..], &[][..])
        } else {
            (
                &resolution.answers[..],
                &resolution.authority[..],
                &resolution.additionals[..fit.additionals],
            )
        };
        let response = builder.build(
            metadata,
            answers.iter(),
            authority.iter(),
            std::iter::empty(),
            additionals.iter(),
        );
        send(&mut handle, response, metadata).await
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    metadata: Metadata,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            tracing::debug!(%error, "failed to send a DNS response");
            let mut metadata = metadata;
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for RegistryHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let info = self.respond(request, response_handle).await;
        let qtype = request.queries.queries().first().map(|q| q.query_type());
        self.metrics.observe(
            request.protocol(),
            qtype,
            info.response_code,
            started.elapsed().as_secs_f64(),
        );
        info
    }
}

/// What of a resolution fits into a response of `limit` bytes.
struct Fit {
    /// The answer or authority section does not fit: send TC and no records,
    /// so the client retries over TCP (RFC 2181 section 9).
    truncated: bool,
    /// How many additional records fit (the rest is left out without TC,
    /// since the additional section is optional).
    additionals: usize,
}

/// Decides what fits. A cheap upper bound settles the common case; only
/// responses that may be too large are encoded once to measure them. The OPT
/// record is always kept (RFC 6891).
fn fit(request: &Request, res: &Resolution, metadata: Metadata, edns: bool, limit: u16) -> Fit {
    let opt = if edns { OPT_LEN } else { 0 };
    let bound: usize = HEADER_LEN
        + request.queries.as_bytes().len()
        + opt
        + res
            .answers
            .iter()
            .chain(&res.authority)
            .chain(&res.additionals)
            .map(record_bound)
            .sum::<usize>();
    if bound <= usize::from(limit) {
        return Fit {
            truncated: false,
            additionals: res.additionals.len(),
        };
    }
    let mut buf = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buf);
    encoder.set_max_size(limit.saturating_sub(opt as u16));
    let trial = MessageResponseBuilder::new(&request.queries, None).build(
        metadata,
        res.answers.iter(),
        res.authority.iter(),
        std::iter::empty(),
        res.additionals.iter(),
    );
    match trial.destructive_emit(&mut encoder) {
        Ok(info) => {
            let counts = info.counts();
            if usize::from(counts.answers) < res.answers.len()
                || usize::from(counts.authorities) < res.authority.len()
            {
                Fit {
                    truncated: true,
                    additionals: 0,
                }
            } else {
                Fit {
                    truncated: false,
                    additionals: usize::from(counts.additionals),
                }
            }
        }
        Err(_) => Fit {
            truncated: true,
            additionals: 0,
        },
    }
}

/// An upper bound of a record's wire size (names uncompressed).
fn record_bound(record: &Record) -> usize {
    let name = |n: &hickory_server::proto::rr::Name| n.len() + 2;
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name(&srv.target),
        RData::CNAME(c) => name(&c.0),
        RData::NS(ns) => name(&ns.0),
        RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
        _ => usize::from(u16::MAX),
    };
    name(&record.name) + 10 + rdata
}
