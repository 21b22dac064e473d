//! The Cloud Map API's listener: plain TCP or TLS (rustls, HTTP/1.1 only),
//! with a cap on open connections and a certificate that is reloaded when
//! its files change.
//!
//! TCP connections are accepted by a background task; TLS handshakes run in
//! their own tasks with a deadline, so a slow or silent client never holds
//! up anyone else. Finished connections reach axum through a channel that
//! [`ApiListener`]'s [`axum::serve::Listener::accept`] reads from.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished connections waiting for axum to pick them up. axum accepts in a
/// tight loop, so this only absorbs bursts; the connection cap is the
/// semaphore, not this.
const QUEUE: usize = 64;

/// Errors of the listener: its certificate files and its metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("cannot read the API's TLS {what} file {}: {source}", path.display())]
    Read {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The read error.
        source: io::Error,
    },
    /// A certificate or key file is not the PEM it should be.
    #[error("the API's TLS {what} file {} is not usable: {message}", path.display())]
    Pem {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The key does not load, or does not belong to the certificate.
    #[error("the API's TLS key {} does not fit the certificate {}: {source}", key.display(), cert.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The listening socket's address could not be read.
    #[error("cannot read the API listener's address: {0}")]
    Socket(#[source] io::Error),
    /// The TLS configuration could not be built.
    #[error("cannot configure TLS for the API: {0}")]
    Config(#[source] rustls::Error),
    /// Metrics could not be registered.
    #[error("API listener metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// What the listener serves: plain HTTP or TLS, and how many connections
/// at most.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most connections open at once (plain or TLS, handshaking included).
    pub max_connections: usize,
    /// TLS, when configured.
    pub tls: Option<TlsSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }
}

/// The TLS side of [`Settings`].
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The certificate in use, reloaded from its files.
    pub certs: Arc<ReloadingCert>,
    /// How often the files are checked for changes.
    pub reload_every: Duration,
}

/// A PEM certificate chain and key pair, loaded and checked.
struct Loaded {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

/// The server certificate: a certificate chain and key from two PEM files,
/// swapped for a new pair when the files change and the new pair is sound.
/// rustls asks it for the certificate on every handshake.
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The digest of the files last looked at, taken or refused, so an
    /// unchanged broken pair is not retried (and reported) on every tick.
    seen: RwLock<[u8; 32]>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the certificate chain at `cert` and the private key (PKCS#8,
    /// PKCS#1 RSA or SEC1 EC) at `key`, both PEM. Errors name the file.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = load_pair(cert, key, &provider)?;
        Ok(Self {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            provider,
            current: RwLock::new(loaded.key),
            seen: RwLock::new(loaded.digest),
        })
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The certificate chain served now (end entity first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current().cert.clone()
    }

    fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a complete Arc: keep serving it.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rereads the files: `Ok(true)` when a changed pair was taken,
    /// `Ok(false)` when nothing changed since the last look, an error when
    /// the changed files are refused (the current pair keeps serving).
    pub fn reload(&self) -> Result<bool, Error> {
        let cert = read(&self.cert_path, "certificate")?;
        let key = read(&self.key_path, "key")?;
        let digest = digest(&cert, &key);
        if *self.seen.read().unwrap_or_else(PoisonError::into_inner) == digest {
            return Ok(false);
        }
        *self.seen.write().unwrap_or_else(PoisonError::into_inner) = digest;
        let loaded = parse_pair(&self.cert_path, &cert, &self.key_path, &key, &self.provider)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded.key;
        Ok(true)
    }

    /// Checks the files every `interval` and takes a changed, sound pair,
    /// counting outcomes in `waymark_tls_reloads_total`. Stops once the
    /// listener (the last holder of `self`) is gone.
    fn spawn_reloader(
        self: &Arc<Self>,
        interval: Duration,
        prom: &prometheus::Registry,
    ) -> Result<(), Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "waymark_tls_reloads_total",
                "Changes of the API's TLS certificate/key files taken (ok) or refused (the previous pair keeps serving).",
            ),
            &["result"],
        )?;
        prom.register(Box::new(reloads.clone()))?;
        // Both series exist from the start, so a dashboard sees zeros.
        reloads.with_label_values(&["ok"]);
        reloads.with_label_values(&["refused"]);
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                // File reads and signature-key parsing block: keep them off
                // the async workers.
                match tokio::task::spawn_blocking(move || {
                    let outcome = me.reload();
                    (outcome, me)
                })
                .await
                {
                    Ok((Ok(true), me)) => {
                        reloads.with_label_values(&["ok"]).inc();
                        tracing::info!(cert = %me.cert_path.display(), "API TLS certificate reloaded");
                    }
                    Ok((Ok(false), _)) => {}
                    Ok((Err(e), _)) => {
                        reloads.with_label_values(&["refused"]).inc();
                        tracing::error!(error = %e, "API TLS certificate change refused; the previous certificate keeps serving");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reloading the API TLS certificate failed")
                    }
                }
            }
        });
        Ok(())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefixed, so moving bytes between the files changes the digest.
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

fn load_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Loaded, Error> {
    let cert_pem = read(cert, "certificate")?;
    let key_pem = read(key, "key")?;
    parse_pair(cert, &cert_pem, key, &key_pem, provider)
}

fn parse_pair(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Loaded, Error> {
    let pem_error = |what, path: &Path, message: String| Error::Pem {
        what,
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            "certificate",
            cert_path,
            "no PEM CERTIFICATE block found".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        let message = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block found".to_string()
            }
            e => e.to_string(),
        };
        pem_error("key", key_path, message)
    })?;
    // from_der parses the key and checks it matches the end-entity
    // certificate, which also rejects a certificate that is not DER X.509.
    let certified =
        CertifiedKey::from_der(chain, private, provider).map_err(|source| Error::Key {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
            source,
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        digest: digest(cert, key),
    })
}

/// Connection metrics.
#[derive(Clone)]
struct Metrics {
    open: IntGauge,
    handshake_failures: IntCounter,
}

impl Metrics {
    fn register(prom: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let open = IntGauge::new(
            "waymark_api_connections",
            "Open Cloud Map API connections (TLS handshakes in progress included).",
        )?;
        let handshake_failures = IntCounter::new(
            "waymark_api_tls_handshake_failures_total",
            "TLS handshakes on the Cloud Map API port that failed or timed out.",
        )?;
        prom.register(Box::new(open.clone()))?;
        prom.register(Box::new(handshake_failures.clone()))?;
        Ok(Self {
            open,
            handshake_failures,
        })
    }
}

/// One connection's place under `--max-connections`, released (and
/// uncounted) when the connection is dropped.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: IntGauge) -> Self {
        open.inc();
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted API connection, plain or TLS, holding its slot under the
/// connection limit for as long as it lives.
pub struct Connection {
    stream: Stream,
    _slot: Slot,
}

impl Connection {
    /// The TCP socket under the connection (under TLS too).
    pub fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The API's listener for [`axum::serve`]: connections come out of a
/// channel fed by the accept task, already through TLS when configured.
pub struct ApiListener {
    incoming: mpsc::Receiver<(Connection, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for ApiListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for ApiListener {
    fn drop(&mut self) {
        // axum drops the listener at shutdown: stop accepting, which closes
        // the socket.
        self.acceptor.abort();
    }
}

impl ApiListener {
    /// Starts accepting on `listener` with `settings`, registering the
    /// listener's metrics (and starting the certificate reloader) in `prom`.
    pub fn new(
        listener: TcpListener,
        settings: Settings,
        prom: &prometheus::Registry,
    ) -> Result<Self, Error> {
        let local_addr = listener.local_addr().map_err(Error::Socket)?;
        let metrics = Metrics::register(prom)?;
        let tls = match settings.tls {
            Some(tls) => {
                tls.certs.spawn_reloader(tls.reload_every, prom)?;
                let mut config =
                    rustls::ServerConfig::builder_with_provider(tls.certs.provider.clone())
                        .with_safe_default_protocol_versions()
                        .map_err(Error::Config)?
                        .with_no_client_auth()
                        .with_cert_resolver(tls.certs.clone());
                // axum serves HTTP/1 only.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let (tx, incoming) = mpsc::channel(QUEUE);
        let limit = Arc::new(Semaphore::new(settings.max_connections.max(1)));
        let acceptor = tokio::spawn(accept_loop(
            listener,
            tls,
            limit,
            settings.max_connections,
            metrics,
            tx,
        ));
        Ok(Self {
            incoming,
            local_addr,
            acceptor,
        })
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted, i.e. after this
            // listener is dropped; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    max: usize,
    metrics: Metrics,
    tx: mpsc::Sender<(Connection, SocketAddr)>,
) {
    let mut warned = false;
    loop {
        // A slot first: at the limit nothing is accepted, so new connections
        // wait in the kernel's backlog rather than being taken and dropped.
        let permit = match limit.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !warned {
                    warned = true;
                    tracing::warn!(
                        max_connections = max,
                        "the Cloud Map API is at its connection limit (--max-connections); new connections wait until one closes"
                    );
                }
                match limit.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // Never closed.
                    Err(_) => return,
                }
            }
        };
        let (tcp, peer) = loop {
            match listener.accept().await {
                Ok(accepted) => break accepted,
                Err(e) => accept_error(e).await,
            }
        };
        // Requests and responses are small and latency-bound.
        let _ = tcp.set_nodelay(true);
        let slot = Slot::new(permit, metrics.open.clone());
        match &tls {
            None => {
                let conn = Connection {
                    stream: Stream::Plain(tcp),
                    _slot: slot,
                };
                if tx.send((conn, peer)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let failures = metrics.handshake_failures.clone();
                tokio::spawn(async move {
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                failures.inc();
                                tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                failures.inc();
                                tracing::debug!(%peer, "API TLS handshake timed out");
                                return;
                            }
                        };
                    let conn = Connection {
                        stream: Stream::Tls(Box::new(stream)),
                        _slot: slot,
                    };
                    let _ = tx.send((conn, peer)).await;
                });
            }
        }
    }
}

/// A failed `accept` is never fatal: a connection that died in the backlog
/// is skipped; anything else (EMFILE, ENFILE, ENOBUFS) is logged and retried
/// after a pause, as axum's own TCP listener does, in the hope that
/// descriptors or memory are freed meanwhile.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "Cloud Map API accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
