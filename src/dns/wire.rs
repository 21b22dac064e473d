//! The UDP fast path: a plain query is answered straight from the datagram,
//! without building hickory messages.
//!
//! A plain query is what resolvers and load generators send: a QUERY with one
//! question of class IN whose name is made of ordinary labels (letters,
//! digits, `-`, `_`), optionally an OPT record of EDNS version 0 without the
//! options hickory decodes itself (NSID, client subnet), and nothing else.
//! It is resolved by the one resolution logic ([`Resolver::resolve_into`]),
//! with a [`Sink`] that writes wire format: the question is copied from the
//! query (so its spelling, DNS 0x20 case included, is echoed exactly), owner
//! names are compression pointers into it, SRV targets are written
//! uncompressed (RFC 2782) and the additional records of SRV targets point at
//! them. The response is checked against the UDP size limit: additional
//! records that do not fit are left out (they are optional); a response
//! whose answer or authority section does not fit, and every other packet,
//! goes through hickory and the [`RegistryHandler`](super::RegistryHandler)
//! (truncation, FORMERR, NOTIMP, BADVERS, REFUSED for other classes), which
//! stays the reference: the unit tests compare both paths' responses record
//! by record.

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::{Name, RecordType};
use rand::Rng;

use super::handler::MAX_UDP_PAYLOAD;
use super::resolve::{Data, NameKey, Owner, PoolCache, Resolver, Section, Sink, SrvTarget};
use crate::registry::Index;

/// The DNS header size.
const HEADER_LEN: usize = 12;
/// The size of an OPT record without options.
const OPT_LEN: usize = 11;
/// The longest domain name in wire format (labels, length bytes and root).
const MAX_NAME_LEN: usize = 255;
/// Compression pointers can reach this far into a message.
const MAX_POINTER: usize = 0x3FFF;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
/// EDNS options hickory decodes itself (NSID, client subnet): a malformed one
/// is its to reject, so queries carrying them take the general path.
const DECODED_OPTIONS: [u16; 2] = [3, 8];

/// A parsed plain query.
#[derive(Debug, Clone, Copy)]
struct Query {
    /// Where the question section ends (header plus question).
    question_end: usize,
    qtype: u16,
    /// The UDP payload size advertised in the query's OPT record.
    edns: Option<u16>,
}

/// The fast path's reusable buffers (one per UDP thread).
#[derive(Debug, Default)]
pub struct FastPath {
    key: NameKey,
    /// The offset of each label of the question name.
    label_at: Vec<u16>,
    out: Vec<u8>,
    additional: Vec<u8>,
    /// Where each record in `additional` ends.
    additional_ends: Vec<usize>,
    /// The services' routing candidates.
    pools: PoolCache,
}

/// What the fast path answered (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// The query type.
    pub qtype: RecordType,
    /// The response code.
    pub rcode: ResponseCode,
}

impl FastPath {
    /// Empty buffers.
    pub fn new() -> Self {
        Self {
            out: Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD)),
            additional: Vec::with_capacity(512),
            ..Self::default()
        }
    }

    /// Forgets cached routing candidates when the registry changed: call
    /// with the registry's generation, read under the same index read lock
    /// as the [`FastPath::answer`] calls that follow.
    pub fn sync(&mut self, generation: u64) {
        self.pools.sync(generation);
    }

    /// The number of cached routing candidates.
    pub fn cached_candidates(&self) -> usize {
        self.pools.len()
    }

    /// Answers `packet` if it is a plain query whose response fits in a UDP
    /// datagram; the response is then in [`FastPath::response`]. `None`
    /// means the packet needs the general path.
    pub fn answer(
        &mut self,
        packet: &[u8],
        index: &Index,
        resolver: &Resolver,
        rng: &mut impl Rng,
    ) -> Option<Answered> {
        let query = parse(packet, &mut self.key, &mut self.label_at)?;
        self.out.clear();
        self.additional.clear();
        self.additional_ends.clear();
        self.out.extend_from_slice(&packet[..query.question_end]);
        let qtype = RecordType::from(query.qtype);
        let mut sink = WireSink {
            out: &mut self.out,
            additional: &mut self.additional,
            additional_ends: &mut self.additional_ends,
            label_at: &self.label_at,
            origin: HEADER_LEN as u16,
            name_end: query.question_end - 4,
            ns_host: None,
            counts: [0; 3],
            fallback: false,
        };
        let outcome = resolver.resolve_into(
            index,
            &self.key,
            qtype,
            rng,
            &mut sink,
            Some(&mut self.pools),
        );
        if sink.fallback {
            return None;
        }
        let counts = sink.counts;
        let opt = query.edns.map(|size| size.clamp(512, MAX_UDP_PAYLOAD));
        let limit = usize::from(opt.unwrap_or(512));
        let opt_len = if opt.is_some() { OPT_LEN } else { 0 };
        if self.out.len() + opt_len > limit {
            // The answer (or authority) section does not fit: truncation is
            // the general path's to decide (TC, then TCP).
            return None;
        }
        // Additional records are optional: as many as fit, without TC (as
        // the handler does; the OPT record is always kept).
        let room = limit - opt_len - self.out.len();
        let fit = self
            .additional_ends
            .iter()
            .take_while(|&&end| end <= room)
            .count();
        let fit_len = fit.checked_sub(1).map_or(0, |i| self.additional_ends[i]);
        self.out.extend_from_slice(&self.additional[..fit_len]);
        let counts = [counts[0], counts[1], fit as u16];
        if let Some(size) = opt {
            let [hi, lo] = size.to_be_bytes();
            // Root owner, type OPT, class = payload size, extended RCODE 0,
            // version 0, no flags, no options.
            self.out
                .extend_from_slice(&[0, 0, TYPE_OPT as u8, hi, lo, 0, 0, 0, 0, 0, 0]);
        }
        let rcode = outcome.rcode;
        // QR, opcode QUERY, AA as resolved, RD copied; RA clear, CD copied.
        self.out[2] = 0x80 | (packet[2] & 0x01) | if outcome.authoritative { 0x04 } else { 0 };
        self.out[3] = (packet[3] & 0x10) | (u16::from(rcode) & 0x0F) as u8;
        let additionals = counts[2] + u16::from(opt.is_some());
        for (i, n) in [1, counts[0], counts[1], additionals]
            .into_iter()
            .enumerate()
        {
            self.out[4 + 2 * i..6 + 2 * i].copy_from_slice(&n.to_be_bytes());
        }
        Some(Answered { qtype, rcode })
    }

    /// The response the last successful [`FastPath::answer`] wrote.
    pub fn response(&self) -> &[u8] {
        &self.out
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Parses a plain query (see the module docs), filling `key` and `label_at`
/// with its name. `None` for anything else.
fn parse(packet: &[u8], key: &mut NameKey, label_at: &mut Vec<u16>) -> Option<Query> {
    if packet.len() < HEADER_LEN + 5 {
        return None;
    }
    // QR clear and opcode QUERY; the other flag bits of a query do not matter.
    if packet[2] & 0xF8 != 0 {
        return None;
    }
    if read_u16(packet, 4) != 1 || read_u16(packet, 6) != 0 || read_u16(packet, 8) != 0 {
        return None;
    }
    let additionals = read_u16(packet, 10);
    if additionals > 1 {
        return None;
    }
    key.clear();
    label_at.clear();
    let mut pos = HEADER_LEN;
    loop {
        let len = usize::from(*packet.get(pos)?);
        if len == 0 {
            pos += 1;
            break;
        }
        // Longer "labels" are compression pointers or extended label types.
        if len > 63 {
            return None;
        }
        let label = packet.get(pos + 1..pos + 1 + len)?;
        if !label.iter().all(|&b| is_label_byte(b)) {
            return None;
        }
        label_at.push(pos as u16);
        key.push_label(label);
        pos += 1 + len;
        if pos - HEADER_LEN >= MAX_NAME_LEN {
            return None;
        }
    }
    if label_at.is_empty() {
        return None;
    }
    let fixed = packet.get(pos..pos + 4)?;
    if read_u16(fixed, 2) != CLASS_IN {
        return None;
    }
    let qtype = read_u16(fixed, 0);
    let question_end = pos + 4;
    let mut end = question_end;
    let edns = if additionals == 1 {
        // OPT: root owner, type, class = payload size, TTL = extended RCODE,
        // version and flags, then the options.
        let rr = packet.get(end..end + OPT_LEN)?;
        if rr[0] != 0 || read_u16(rr, 1) != TYPE_OPT || rr[6] != 0 {
            return None;
        }
        let size = read_u16(rr, 3);
        let rdlen = usize::from(read_u16(rr, 9));
        end += OPT_LEN;
        let mut options = packet.get(end..end + rdlen)?;
        while !options.is_empty() {
            if options.len() < 4 {
                return None;
            }
            let code = read_u16(options, 0);
            let len = usize::from(read_u16(options, 2));
            if DECODED_OPTIONS.contains(&code) || options.len() < 4 + len {
                return None;
            }
            options = &options[4 + len..];
        }
        end += rdlen;
        Some(size)
    } else {
        None
    };
    // Trailing bytes: leave the judgement to the general path.
    (end == packet.len()).then_some(Query {
        question_end,
        qtype,
        edns,
    })
}

/// Writes records in wire format. Owner names are compression pointers: to
/// the question (the query name and its zone origin, in the query's
/// spelling), to `ns1.<zone>` where an NS or SOA record wrote it, or to an
/// SRV target. Additional records are kept apart until the answer and
/// authority sections are complete.
struct WireSink<'b> {
    out: &'b mut Vec<u8>,
    additional: &'b mut Vec<u8>,
    additional_ends: &'b mut Vec<usize>,
    label_at: &'b [u16],
    /// The offset of the zone origin within the question.
    origin: u16,
    /// Where the question name ends.
    name_end: usize,
    /// The offset of a written `ns1.<origin>` name.
    ns_host: Option<u16>,
    /// Answer, authority and additional record counts.
    counts: [u16; 3],
    /// Something this renderer does not write: use the general path.
    fallback: bool,
}

fn put_pointer(buf: &mut Vec<u8>, offset: u16) {
    buf.extend_from_slice(&(0xC000 | offset).to_be_bytes());
}

/// Writes `ns1.<origin>` and returns its offset.
fn put_ns_host(buf: &mut Vec<u8>, origin: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(b"\x03ns1");
    put_pointer(buf, origin);
    at
}

/// Writes a name uncompressed.
fn put_name(buf: &mut Vec<u8>, name: &Name) {
    for label in name.iter() {
        buf.push(label.len() as u8);
        buf.extend_from_slice(label);
    }
    buf.push(0);
}

impl WireSink<'_> {
    fn pointer_to(&mut self, at: usize) -> Option<u16> {
        if at > MAX_POINTER {
            self.fallback = true;
            return None;
        }
        Some(at as u16)
    }
}

impl Sink for WireSink<'_> {
    type Target = u16;

    fn zone(&mut self, labels: usize) {
        self.origin = self.label_at[self.label_at.len() - labels];
        // `hostmaster.<origin>` must be a valid name (hickory falls back to
        // the origin itself for the longest zones).
        if self.name_end - usize::from(self.origin) + 11 > MAX_NAME_LEN {
            self.fallback = true;
        }
    }

    fn record(&mut self, section: Section, owner: Owner<'_, u16>, ttl: u32, data: Data<'_>) {
        if self.fallback {
            return;
        }
        let owner = match owner {
            Owner::Query => HEADER_LEN as u16,
            Owner::Origin => self.origin,
            Owner::Target(&at) => at,
            Owner::NsHost => match self.ns_host {
                Some(at) => at,
                None => {
                    self.fallback = true;
                    return;
                }
            },
        };
        let origin = self.origin;
        let written_host = self.ns_host;
        let main = section != Section::Additional;
        let buf: &mut Vec<u8> = if main { self.out } else { self.additional };
        let rtype = match data {
            Data::A(_) => RecordType::A,
            Data::Aaaa(_) => RecordType::AAAA,
            Data::Cname(_) => RecordType::CNAME,
            Data::Ns => RecordType::NS,
            Data::Soa { .. } => RecordType::SOA,
        };
        put_pointer(buf, owner);
        buf.extend_from_slice(&u16::from(rtype).to_be_bytes());
        buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        buf.extend_from_slice(&ttl.to_be_bytes());
        let rdlen_at = buf.len();
        buf.extend_from_slice(&[0, 0]);
        let mut ns_host = None;
        match data {
            Data::A(ip) => buf.extend_from_slice(&ip.octets()),
            Data::Aaaa(ip) => buf.extend_from_slice(&ip.octets()),
            Data::Cname(name) => put_name(buf, name),
            Data::Ns => ns_host = Some(put_ns_host(buf, origin)),
            Data::Soa { minimum } => {
                match written_host {
                    Some(at) => put_pointer(buf, at),
                    None => ns_host = Some(put_ns_host(buf, origin)),
                }
                buf.extend_from_slice(b"\x0ahostmaster");
                put_pointer(buf, origin);
                for value in [
                    super::resolve::SOA_SERIAL,
                    super::resolve::SOA_REFRESH as u32,
                    super::resolve::SOA_RETRY as u32,
                    super::resolve::SOA_EXPIRE as u32,
                    minimum,
                ] {
                    buf.extend_from_slice(&value.to_be_bytes());
                }
            }
        }
        let rdlen = (buf.len() - rdlen_at - 2) as u16;
        buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        let end = buf.len();
        self.counts[match section {
            Section::Answer => 0,
            Section::Authority => 1,
            Section::Additional => 2,
        }] += 1;
        if !main {
            self.additional_ends.push(end);
        }
        // Only names in the main buffer have final offsets.
        if main
            && self.ns_host.is_none()
            && let Some(at) = ns_host
            && end <= MAX_POINTER
        {
            self.ns_host = Some(at as u16);
        }
    }

    fn srv(&mut self, ttl: u32, port: u16, target: SrvTarget<'_>) -> Option<u16> {
        if self.fallback {
            return None;
        }
        let buf = &mut *self.out;
        put_pointer(buf, HEADER_LEN as u16);
        buf.extend_from_slice(&u16::from(RecordType::SRV).to_be_bytes());
        buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        buf.extend_from_slice(&ttl.to_be_bytes());
        let rdlen_at = buf.len();
        buf.extend_from_slice(&[0, 0, 0, 1, 0, 1]);
        buf.extend_from_slice(&port.to_be_bytes());
        let at = buf.len();
        let mut len = 1;
        for label in target.labels() {
            let bytes = label.as_bytes();
            // Exactly the labels hickory's `Name::from_ascii` takes as they
            // are; anything else is left to the general path.
            if bytes.is_empty()
                || bytes.len() > 63
                || bytes[0] == b'-'
                || !bytes.iter().all(|&b| is_label_byte(b))
            {
                self.fallback = true;
                return None;
            }
            len += 1 + bytes.len();
            buf.push(bytes.len() as u8);
            buf.extend_from_slice(bytes);
        }
        buf.push(0);
        if len > MAX_NAME_LEN {
            self.fallback = true;
            return None;
        }
        let rdlen = (buf.len() - rdlen_at - 2) as u16;
        buf[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
        self.counts[0] += 1;
        self.pointer_to(at)
    }
}
