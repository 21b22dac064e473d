//! One probe (the I/O): a TCP connect, or an HTTP/1.1 `GET` over TCP or TLS
//! whose status decides.
//!
//! HTTP uses hyper's client connection (`hyper::client::conn::http1`) rather
//! than a hand-written request/status-line reader or reqwest: hyper and
//! tokio-rustls are already compiled into the binary through kube, so this
//! costs no new crates, and hyper gets the protocol details right (partial
//! reads, informational 1xx responses before the final status, malformed
//! responses). There is no pool: every probe opens a fresh connection and
//! sends `Connection: close`, as a health check must see a new connection
//! succeed. The response body is never read; the connection is dropped as
//! soon as the status arrives.
//!
//! HTTPS does not verify the certificate (neither does Route 53): a checked
//! instance usually serves a self-signed or cluster-internal certificate
//! for a name other than its IP. The handshake signature is still checked
//! against the presented key.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Error;
use super::target::Endpoint;
use crate::registry::model::HealthCheckType;

/// The `User-Agent` of HTTP(S) probes.
pub const USER_AGENT_VALUE: &str = concat!("Waymark-Health-Check/", env!("CARGO_PKG_VERSION"));

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Connected (TCP) or got a 2xx/3xx status (HTTP, HTTPS).
    Success,
    /// Refused, reset, TLS or protocol failure, or a 1xx/4xx/5xx status.
    Failure,
    /// No answer within the timeout (a failure).
    Timeout,
    /// The prober itself could not try (out of sockets or ports): counted
    /// neither way, so a starved prober cannot fail healthy instances.
    LocalError,
}

impl Outcome {
    /// The result the threshold rule counts (`None`: not counted).
    pub fn passing(self) -> Option<bool> {
        match self {
            Self::Success => Some(true),
            Self::Failure | Self::Timeout => Some(false),
            Self::LocalError => None,
        }
    }

    /// The `result` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::LocalError => "error",
        }
    }
}

/// Why a probe failed (for debug logs).
#[derive(Debug)]
enum Failed {
    Local(io::Error),
    Remote(String),
}

impl From<hyper::Error> for Failed {
    fn from(e: hyper::Error) -> Self {
        Self::Remote(format!("HTTP: {e}"))
    }
}

/// Whether a connect error is the prober's own shortage rather than the
/// instance's fault: no file descriptors, buffers, memory or ephemeral ports.
fn is_local(e: &io::Error) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    matches!(
        e.kind(),
        io::ErrorKind::AddrNotAvailable | io::ErrorKind::OutOfMemory
    ) || matches!(e.raw_os_error(), Some(ENFILE | EMFILE | ENOBUFS))
}

/// Runs probes; cheap to clone (shares the TLS configuration).
#[derive(Clone)]
pub struct Client {
    tls: TlsConnector,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// A probe client with TLS that accepts any server certificate.
    pub fn new() -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Probes `endpoint` within `timeout`; returns the outcome and how long
    /// it took.
    pub async fn probe(&self, endpoint: &Endpoint, timeout: Duration) -> (Outcome, Duration) {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.check(endpoint)).await {
            Ok(Ok(())) => Outcome::Success,
            Ok(Err(Failed::Local(e))) => {
                tracing::warn!(addr = ?endpoint.addr, error = %e, "health probe could not run");
                Outcome::LocalError
            }
            Ok(Err(Failed::Remote(reason))) => {
                tracing::debug!(addr = ?endpoint.addr, %reason, "health probe failed");
                Outcome::Failure
            }
            Err(_) => Outcome::Timeout,
        };
        (outcome, started.elapsed())
    }

    async fn check(&self, endpoint: &Endpoint) -> Result<(), Failed> {
        let addr = endpoint
            .addr
            .ok_or_else(|| Failed::Remote("the instance has no address and port".into()))?;
        let tcp = connect(addr).await?;
        match endpoint.kind {
            HealthCheckType::Tcp => Ok(()),
            HealthCheckType::Http => get(tcp, endpoint).await,
            HealthCheckType::Https => {
                let name = ServerName::IpAddress(addr.ip().into());
                let tls = self
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Failed::Remote(format!("TLS: {e}")))?;
                get(tls, endpoint).await
            }
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failed> {
    TcpStream::connect(addr).await.map_err(|e| {
        if is_local(&e) {
            Failed::Local(e)
        } else {
            Failed::Remote(format!("connect: {e}"))
        }
    })
}

/// `GET path` with `Host`, healthy on 2xx/3xx (redirects are not followed).
async fn get<S>(io: S, endpoint: &Endpoint) -> Result<(), Failed>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = hyper::Request::get(endpoint.path.as_str())
        .header(HOST, endpoint.host_header().unwrap_or_default())
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(String::new())
        .map_err(|e| Failed::Remote(format!("bad request: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    // Drive the connection in this future rather than a spawned task: the
    // response future completes once the status line and headers are in.
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    let response = tokio::select! {
        r = &mut response => r?,
        c = &mut conn => {
            c?;
            response.await?
        }
    };
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(Failed::Remote(format!("status {status}")))
    }
}

/// Accepts every server certificate (health checks do not authenticate the
/// instance), but still verifies handshake signatures with the provider's
/// algorithms.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn endpoint(kind: HealthCheckType, addr: SocketAddr, path: &str) -> Endpoint {
        Endpoint {
            kind,
            addr: Some(addr),
            path: path.into(),
        }
    }

    /// A server answering every connection with `response` after reading the
    /// request head; returns its address and the request heads it saw.
    async fn http_server(
        response: &'static str,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 256];
                    while !head.ends_with(b"\r\n\r\n") {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                    // Dribble the response out to exercise partial reads.
                    for chunk in response.as_bytes().chunks(7) {
                        let _ = s.write_all(chunk).await;
                        tokio::task::yield_now().await;
                    }
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn http_status_decides() {
        let p = Client::new().unwrap();
        let t = Duration::from_secs(2);
        for (response, want) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                Outcome::Success,
            ),
            ("HTTP/1.1 204 No Content\r\n\r\n", Outcome::Success),
            (
                "HTTP/1.0 302 Found\r\nLocation: /elsewhere\r\n\r\n",
                Outcome::Success,
            ),
            (
                "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Outcome::Success,
            ),
            (
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                Outcome::Failure,
            ),
            ("HTTP/1.1 503 Service Unavailable\r\n\r\n", Outcome::Failure),
            ("SSH-2.0-OpenSSH_9.2\r\n", Outcome::Failure),
        ] {
            let (addr, mut heads) = http_server(response).await;
            let (outcome, _) = p
                .probe(&endpoint(HealthCheckType::Http, addr, "/health?x=1"), t)
                .await;
            assert_eq!(outcome, want, "{response:?}");
            let head = heads.recv().await.unwrap();
            assert!(head.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{head}");
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
            assert!(lower.contains("\r\nconnection: close\r\n"), "{head}");
            assert!(
                lower.contains("\r\nuser-agent: waymark-health-check/"),
                "{head}"
            );
        }
    }

    #[tokio::test]
    async fn tcp_connect_decides_and_refusal_fails() {
        let p = Client::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let e = endpoint(HealthCheckType::Tcp, addr, "");
        assert_eq!(
            p.probe(&e, Duration::from_secs(2)).await.0,
            Outcome::Success
        );
        drop(listener);
        assert_eq!(
            p.probe(&e, Duration::from_secs(2)).await.0,
            Outcome::Failure
        );
        let none = Endpoint {
            addr: None,
            ..e.clone()
        };
        assert_eq!(
            p.probe(&none, Duration::from_secs(2)).await.0,
            Outcome::Failure
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let p = Client::new().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts (the kernel completes the handshake) and never answers.
        let (outcome, took) = p
            .probe(
                &endpoint(HealthCheckType::Http, addr, "/"),
                Duration::from_millis(200),
            )
            .await;
        assert_eq!(outcome, Outcome::Timeout);
        assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(2));
        drop(listener);
    }

    #[tokio::test]
    async fn https_to_a_plain_http_server_fails() {
        let p = Client::new().unwrap();
        // What an HTTP server does with a TLS ClientHello: a 400, then close.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let (outcome, _) = p
            .probe(
                &endpoint(HealthCheckType::Https, addr, "/"),
                Duration::from_secs(2),
            )
            .await;
        assert_eq!(outcome, Outcome::Failure);
    }

    #[test]
    fn local_shortages_are_not_the_instances_fault() {
        assert!(is_local(&io::Error::from_raw_os_error(24)));
        assert!(is_local(&io::Error::from(io::ErrorKind::AddrNotAvailable)));
        assert!(!is_local(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        assert_eq!(Outcome::LocalError.passing(), None);
        assert_eq!(Outcome::Timeout.passing(), Some(false));
    }
}
