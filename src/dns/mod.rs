//! Authoritative DNS for the registry's DNS namespaces, with Cloud Map's
//! routing semantics, answered live from the registry index.
//!
//! Every DNS namespace (private or public) is a zone. Each query is resolved
//! against the current [`Index`](crate::registry::Index) under a short read
//! lock, so a register, deregister or health change is visible on the very
//! next query: there is no copy of the zone to keep in sync.
//!
//! - [`resolve`]: the pure part, one question against the index (zones,
//!   names, MULTIVALUE/WEIGHTED routing, fail-open, SRV targets, SOA/NS),
//!   rendered through a [`resolve::Sink`].
//! - [`handler`]: the hickory [`RequestHandler`](hickory_server::server::RequestHandler)
//!   (protocol checks, EDNS, truncation): TCP, and UDP packets the fast
//!   path leaves to it.
//! - [`wire`]: the UDP fast path, plain queries parsed and answered in wire
//!   format by the same resolution.
//! - [`metrics`]: queries by type and response code, latency.
//! - [`DnsListener`] / [`serve`]: UDP and TCP on one address. TCP runs on
//!   hickory's [`Server`]; UDP runs on one thread per core, each with its own
//!   `SO_REUSEPORT` socket, in a plain loop (no task, channel or reactor per
//!   datagram): `recvmmsg`, one index read lock per batch, `sendmmsg`.
//! - [`rrl`]: response rate limiting of UDP answers per client network.
//!
//! See `docs/dns.md` for the names served and the decisions taken.

pub mod handler;
pub mod metrics;
pub mod resolve;
pub mod routing;
pub mod rrl;
pub mod wire;

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tracing::{debug, error, info};

pub use handler::RegistryHandler;
pub use metrics::DnsMetrics;
pub use resolve::{Resolution, Resolver, Scope};
pub use rrl::{ResponseRateLimit, RrlConfig};
use wire::FastPath;

use crate::registry::Registry;

/// How long an idle TCP connection is kept open.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest datagram read; larger ones are truncated by the kernel and
/// then fail to parse (a query is far smaller).
const UDP_RECV_BUFFER: usize = 4096;
/// The most datagrams one `recvmmsg` call takes.
const UDP_BATCH: usize = 32;
/// How often a UDP thread blocked in `recvmmsg` checks for shutdown.
const UDP_POLL: Duration = Duration::from_millis(100);

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} ({transport}) for DNS: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The socket error.
        source: std::io::Error,
    },
    /// A metric could not be created or registered.
    #[error("DNS metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The server stopped unexpectedly.
    #[error("DNS server failed: {0}")]
    Serve(#[from] NetError),
    /// A UDP thread could not be started or joined.
    #[error("a DNS worker failed: {0}")]
    Worker(String),
}

/// A bound DNS listener: UDP sockets (one per core, sharing the address
/// through `SO_REUSEPORT`) and a TCP listener on the same address, serving
/// the zones of one [`Scope`].
#[derive(Debug)]
pub struct DnsListener {
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
    scope: Scope,
    addr: SocketAddr,
}

fn bind_udp(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let err = |source| Error::Bind {
        addr,
        transport: "udp",
        source,
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(err)?;
    socket.set_reuse_port(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    let socket = UdpSocket::from(socket);
    socket.set_read_timeout(Some(UDP_POLL)).map_err(err)?;
    Ok(socket)
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr,
        transport: "tcp",
        source,
    })
}

impl DnsListener {
    /// Binds UDP and TCP on `addr`. With port 0 both get the same free port.
    /// Binding is separate from serving so a bad or busy address fails
    /// start-up before anything else runs. (The TCP listener does not share
    /// its port, so a second server on a busy address fails there even if
    /// the busy UDP socket also allowed port reuse.)
    pub async fn bind(addr: SocketAddr, scope: Scope) -> Result<Self, Error> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut last = None;
        // Port 0: take a free UDP port and the same TCP port, retrying when
        // that TCP port happens to be taken.
        for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
            let first = bind_udp(addr)?;
            let bound = first.local_addr().map_err(|source| Error::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            match bind_tcp(bound).await {
                Ok(tcp) => {
                    let mut udp = vec![first];
                    for _ in 1..threads {
                        udp.push(bind_udp(bound)?);
                    }
                    return Ok(Self {
                        udp,
                        tcp,
                        scope,
                        addr: bound,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The zones this listener serves.
    pub fn scope(&self) -> Scope {
        self.scope
    }
}

/// The addresses `ns1.<zone>` resolves to for a listener on `addr`: that
/// address when it is a specific one, none for a wildcard bind.
pub fn name_server_addrs(addr: SocketAddr) -> Vec<IpAddr> {
    if addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![addr.ip()]
    }
}

/// Serves DNS on `listeners` from `registry` until `shutdown` resolves;
/// UDP answers are rate-limited per client network by `rrl` when given.
pub async fn serve(
    listeners: Vec<DnsListener>,
    registry: Arc<Registry>,
    metrics: DnsMetrics,
    rrl: Option<Arc<ResponseRateLimit>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    let mut threads = Vec::new();
    for listener in listeners {
        let addr = listener.addr;
        let resolver = Resolver::new(listener.scope, name_server_addrs(addr));
        let handler = RegistryHandler::new(registry.clone(), resolver, metrics.clone());
        let mut server = Server::new(handler.clone());
        server.register_listener(listener.tcp, TCP_IDLE_TIMEOUT, 32);
        for (i, socket) in listener.udp.into_iter().enumerate() {
            let (handler, stop, rrl) = (handler.clone(), stop.clone(), rrl.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{}-{i}", addr.port()))
                .spawn(move || udp_loop(socket, handler, rrl, stop))
                .map_err(|e| Error::Worker(e.to_string()))?;
            threads.push(thread);
        }
        info!(%addr, scope = ?listener.scope, "DNS server listening (UDP and TCP)");
        servers.push(server);
    }
    shutdown.await;
    stop.store(true, Ordering::SeqCst);
    let mut result = Ok(());
    for server in &mut servers {
        if let Err(e) = server.shutdown_gracefully().await {
            result = Err(Error::Serve(e));
        }
    }
    let joined = tokio::task::spawn_blocking(move || {
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| Error::Worker("a UDP thread panicked".into()))
            })
            .collect::<Result<Vec<()>, Error>>()
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?;
    joined?;
    result
}

/// Receives datagrams on one socket in batches (`recvmmsg`) and answers
/// them, until `stop`. Plain queries are answered by the fast path under one
/// read lock of the registry per batch; every other packet goes through
/// hickory and the handler. Over `rrl`'s rate, a client network's
/// queries are dropped or answered truncated, before any resolution.
fn udp_loop(
    socket: UdpSocket,
    handler: RegistryHandler,
    rrl: Option<Arc<ResponseRateLimit>>,
    stop: Arc<AtomicBool>,
) {
    let socket = Arc::new(socket);
    let mut bufs: Box<[[u8; UDP_RECV_BUFFER]; UDP_BATCH]> = vec![[0u8; UDP_RECV_BUFFER]; UDP_BATCH]
        .into_boxed_slice()
        .try_into()
        .expect("UDP_BATCH buffers");
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut received = [(0usize, None::<SocketAddr>); UDP_BATCH];
    let mut reply = [0usize; UDP_BATCH];
    let mut general = [false; UDP_BATCH];
    let mut fast = FastPath::new();
    let mut metrics = handler.metrics().local_udp();
    while !stop.load(Ordering::Relaxed) {
        let n = match receive(&socket, &mut headers, &mut bufs, &mut received) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Err(error) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                debug!(%error, "UDP receive error");
                continue;
            }
        };
        reply[..n].fill(0);
        general[..n].fill(false);
        {
            let index = handler.registry().read();
            fast.sync(handler.registry().generation());
            let mut rng = rand::rng();
            let mut clock = Instant::now();
            for i in 0..n {
                let (len, src) = received[i];
                let Some(src) = src.filter(|s| s.port() != 0) else {
                    continue;
                };
                let packet = &bufs[i][..len];
                if len < 12 || packet[2] & 0x80 != 0 {
                    // Shorter than a header, or a response: never answered
                    // (no reflection loops).
                    handler.metrics().malformed(Protocol::Udp);
                    continue;
                }
                match rrl.as_ref().map(|r| r.check(src.ip())) {
                    None | Some(rrl::Verdict::Answer) => {}
                    Some(rrl::Verdict::Drop) => continue,
                    Some(rrl::Verdict::Slip) => {
                        reply[i] = rrl::truncate_in_place(&mut bufs[i], len).unwrap_or(0);
                        continue;
                    }
                }
                // A bug answering one packet must not take the thread down:
                // the panic is reported (by the panic hook) and the loop
                // goes on.
                let answered = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    fast.answer(packet, &index, handler.resolver(), &mut rng)
                }));
                match answered {
                    Ok(Some(answered)) => {
                        let response = fast.response();
                        bufs[i][..response.len()].copy_from_slice(response);
                        reply[i] = response.len();
                        let now = Instant::now();
                        metrics.observe(
                            answered.qtype,
                            answered.rcode,
                            now.duration_since(clock).as_secs_f64(),
                        );
                        clock = now;
                    }
                    Ok(None) => general[i] = true,
                    Err(_) => error!(%src, "panic while answering a DNS query; dropped it"),
                }
            }
        }
        for i in 0..n {
            if let (true, Some(src)) = (general[i], received[i].1) {
                let answered = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    handle_datagram(&socket, &handler, &bufs[i][..received[i].0], src)
                }));
                if answered.is_err() {
                    error!(%src, "panic while answering a DNS query; dropped it");
                }
            }
        }
        send(&socket, &bufs[..n], &reply[..n], &received[..n]);
        metrics.flush();
    }
}

/// Receives up to [`UDP_BATCH`] datagrams: waits for the first (at most
/// the socket's read timeout), then takes what is already queued.
fn receive(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [[u8; UDP_RECV_BUFFER]; UDP_BATCH],
    received: &mut [(usize, Option<SocketAddr>); UDP_BATCH],
) -> Result<usize, Errno> {
    let mut slices = bufs.each_mut().map(|b| [IoSliceMut::new(b)]);
    let results = recvmmsg(
        socket.as_raw_fd(),
        headers,
        slices.iter_mut(),
        MsgFlags::MSG_WAITFORONE,
        None,
    )?;
    let mut n = 0;
    for (slot, msg) in received.iter_mut().zip(results) {
        *slot = (msg.bytes, msg.address.as_ref().and_then(socket_addr));
        n += 1;
    }
    Ok(n)
}

/// Sends the fast path's responses (`reply[i]` bytes of `bufs[i]` to the
/// sender of datagram `i`; 0: none) with as few `sendmmsg` calls as it
/// takes. A datagram the kernel refuses is dropped, as a failed `send_to`
/// would be.
fn send(
    socket: &UdpSocket,
    bufs: &[[u8; UDP_RECV_BUFFER]],
    reply: &[usize],
    received: &[(usize, Option<SocketAddr>)],
) {
    let to: Vec<(usize, SocketAddrAny)> = (0..reply.len())
        .filter(|&i| reply[i] > 0)
        .filter_map(|i| Some((i, SocketAddrAny::from(received[i].1?))))
        .collect();
    if to.is_empty() {
        return;
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = to
        .iter()
        .map(|&(i, _)| [IoSlice::new(&bufs[i][..reply[i]])])
        .collect();
    let mut control: Vec<SendAncillaryBuffer<'_, '_, '_>> =
        to.iter().map(|_| SendAncillaryBuffer::default()).collect();
    let mut messages: Vec<MMsgHdr<'_>> = to
        .iter()
        .zip(&iovs)
        .zip(control.iter_mut())
        .map(|(((_, addr), iov), control)| MMsgHdr::new_with_addr(addr, iov, control))
        .collect();
    let mut start = 0;
    while start < messages.len() {
        match rustix::net::sendmmsg(socket, &mut messages[start..], SendFlags::empty()) {
            Ok(0) => break,
            Ok(sent) => start += sent,
            Err(error) => {
                debug!(%error, "failed to send a DNS response");
                start += 1;
            }
        }
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}

/// Answers one datagram: a well-formed query through the handler, a
/// malformed one with FORMERR when its header is readable and it is not a
/// response (never answer responses: no reflection loops), else nothing.
fn handle_datagram(
    socket: &Arc<UdpSocket>,
    handler: &RegistryHandler,
    packet: &[u8],
    src: SocketAddr,
) {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        handler.metrics().malformed(Protocol::Udp);
        return;
    }
    match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(request) => {
            let response = UdpResponse {
                socket: socket.clone(),
                dst: src,
            };
            // The handler never waits for anything but the send, which is a
            // plain (blocking) socket call here: the future completes in one
            // poll, with no runtime needed.
            let done = handler
                .handle_request::<_, TokioTime>(&request, response)
                .now_or_never();
            if done.is_none() {
                error!(%src, "DNS handler did not complete synchronously; query dropped");
            }
        }
        Err(error) => {
            debug!(%src, %error, "malformed DNS query");
            handler.metrics().malformed(Protocol::Udp);
            let _ = socket.send_to(&formerr(packet), src);
        }
    }
}

/// A FORMERR response to a query whose header could be read: the same id and
/// opcode, RD copied, no sections.
fn formerr(query: &[u8]) -> [u8; 12] {
    let opcode_rd = query[2] & 0x79;
    [
        query[0],
        query[1],
        0x80 | opcode_rd,
        0x01,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Sends one response datagram straight to the socket.
#[derive(Clone)]
struct UdpResponse {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponse {
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
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        self.socket.send_to(&buf, self.dst)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests;
