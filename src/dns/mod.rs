//! Authoritative DNS for the registry's DNS namespaces, with Cloud Map's
//! routing semantics, answered live from the registry index.
//!
//! Every DNS namespace (private or public) is a zone. Each query is resolved
//! against the current [`Index`](crate::registry::Index) under a short read
//! lock, so a register, deregister or health change is visible on the very
//! next query: there is no copy of the zone to keep in sync.
//!
//! - [`resolve`]: the pure part, one question against the index (zones,
//!   names, MULTIVALUE/WEIGHTED routing, fail-open, SRV targets, SOA/NS).
//! - [`handler`]: the hickory [`RequestHandler`](hickory_server::server::RequestHandler)
//!   (protocol checks, EDNS, truncation).
//! - [`metrics`]: queries by type and response code, latency.
//! - [`DnsListener`] / [`serve`]: UDP and TCP on one address. TCP runs on
//!   hickory's [`Server`]; UDP runs on one thread per core, each with its own
//!   `SO_REUSEPORT` socket, receiving and answering in a plain loop that
//!   calls the same handler (no task, channel or reactor per datagram).
//!
//! See `docs/dns.md` for the names served and the decisions taken.

pub mod handler;
pub mod metrics;
pub mod resolve;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tracing::{debug, error, info};

pub use handler::RegistryHandler;
pub use metrics::DnsMetrics;
pub use resolve::{Resolution, Resolver, Scope};

use crate::registry::Registry;

/// How long an idle TCP connection is kept open.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest datagram read; larger ones are truncated by the kernel and
/// then fail to parse (a query is far smaller).
const UDP_RECV_BUFFER: usize = 4096;
/// How often a UDP thread blocked in `recv` checks for shutdown.
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

/// Serves DNS on `listeners` from `registry` until `shutdown` resolves.
pub async fn serve(
    listeners: Vec<DnsListener>,
    registry: Arc<Registry>,
    metrics: DnsMetrics,
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
            let (handler, stop) = (handler.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{}-{i}", addr.port()))
                .spawn(move || udp_loop(Arc::new(socket), handler, stop))
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

/// Receives datagrams on one socket and answers each in turn, until `stop`.
fn udp_loop(socket: Arc<UdpSocket>, handler: RegistryHandler, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    while !stop.load(Ordering::Relaxed) {
        let (len, src) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(error) => {
                // ICMP errors from earlier sends surface here on some
                // systems; they concern one peer, not the socket.
                debug!(%error, "UDP receive error");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        // A bug answering one packet must not take the thread down: the
        // panic is reported (by the panic hook) and the loop goes on.
        let answered = std::panic::catch_unwind(AssertUnwindSafe(|| {
            handle_datagram(&socket, &handler, &buf[..len], src)
        }));
        if answered.is_err() {
            error!(%src, "panic while answering a DNS query; dropped it");
        }
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
