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
//!   hickory's [`Server`]; UDP runs on a small receive loop per core that
//!   calls the same handler (no task or channel per datagram).
//!
//! See `docs/dns.md` for the names served and the decisions taken.

pub mod handler;
pub mod metrics;
pub mod resolve;

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use hickory_server::Server;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::{TcpListener, UdpSocket};
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
    /// A UDP worker task panicked.
    #[error("a DNS worker failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A bound DNS listener: a UDP socket and a TCP listener on the same address,
/// serving the zones of one [`Scope`].
#[derive(Debug)]
pub struct DnsListener {
    udp: UdpSocket,
    tcp: TcpListener,
    scope: Scope,
}

impl DnsListener {
    /// Binds UDP and TCP on `addr`. With port 0 both get the same free port.
    /// Binding is separate from serving so a bad or busy address fails
    /// start-up before anything else runs.
    pub async fn bind(addr: SocketAddr, scope: Scope) -> Result<Self, Error> {
        let bind_udp = |a: SocketAddr| async move {
            UdpSocket::bind(a).await.map_err(|source| Error::Bind {
                addr: a,
                transport: "udp",
                source,
            })
        };
        let bind_tcp = |a: SocketAddr| async move {
            TcpListener::bind(a).await.map_err(|source| Error::Bind {
                addr: a,
                transport: "tcp",
                source,
            })
        };
        if addr.port() != 0 {
            let udp = bind_udp(addr).await?;
            let tcp = bind_tcp(addr).await?;
            return Ok(Self { udp, tcp, scope });
        }
        // Port 0: take a free UDP port and the same TCP port, retrying when
        // that TCP port happens to be taken.
        let mut last = None;
        for _ in 0..20 {
            let udp = bind_udp(addr).await?;
            let port = udp.local_addr().map_err(|source| Error::Bind {
                addr,
                transport: "udp",
                source,
            })?;
            match bind_tcp(port).await {
                Ok(tcp) => return Ok(Self { udp, tcp, scope }),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.udp
            .local_addr()
            .expect("a bound UDP socket has an address")
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
    let mut servers = Vec::new();
    let mut workers = tokio::task::JoinSet::new();
    let udp_workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    for listener in listeners {
        let addr = listener.local_addr();
        let resolver = Resolver::new(listener.scope, name_server_addrs(addr));
        let handler = RegistryHandler::new(registry.clone(), resolver, metrics.clone());
        let mut server = Server::new(handler.clone());
        server.register_listener(listener.tcp, TCP_IDLE_TIMEOUT, 32);
        let token = server.shutdown_token().clone();
        let udp = Arc::new(listener.udp);
        for _ in 0..udp_workers {
            let (udp, handler, token) = (udp.clone(), handler.clone(), token.clone());
            workers.spawn(async move {
                tokio::select! {
                    () = udp_loop(udp, handler) => {}
                    () = token.cancelled() => {}
                }
            });
        }
        info!(%addr, scope = ?listener.scope, "DNS server listening (UDP and TCP)");
        servers.push(server);
    }
    shutdown.await;
    let mut result = Ok(());
    for server in &mut servers {
        if let Err(e) = server.shutdown_gracefully().await {
            result = Err(Error::Serve(e));
        }
    }
    while let Some(joined) = workers.join_next().await {
        joined?;
    }
    result
}

/// Receives datagrams on one shared socket and answers each in turn. Several
/// of these run per socket, one per core.
async fn udp_loop(socket: Arc<UdpSocket>, handler: RegistryHandler) {
    let mut buf = vec![0u8; UDP_RECV_BUFFER];
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
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
        // A bug answering one packet must not take the worker down: the
        // panic is logged (by the panic hook) and the loop goes on.
        let answered = AssertUnwindSafe(handle_datagram(&socket, &handler, &buf[..len], src))
            .catch_unwind()
            .await;
        if answered.is_err() {
            error!(%src, "panic while answering a DNS query; dropped it");
        }
    }
}

/// Answers one datagram: a well-formed query through the handler, a
/// malformed one with FORMERR when its header is readable and it is not a
/// response (never answer responses: no reflection loops), else nothing.
async fn handle_datagram(
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
            handler
                .handle_request::<_, TokioTime>(&request, response)
                .await;
        }
        Err(error) => {
            debug!(%src, %error, "malformed DNS query");
            handler.metrics().malformed(Protocol::Udp);
            let _ = socket.send_to(&formerr(packet), src).await;
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
        response: hickory_server::zone_handler::MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_server::proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let mut buf = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(max);
        let info = response.destructive_emit(&mut encoder)?;
        self.socket.send_to(&buf, self.dst).await?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests;
