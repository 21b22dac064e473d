//! Connections to the etcd members, one client per member, and failover:
//! a request goes to the member that last answered and moves on to the next
//! when that one is down, cut off from the quorum or too slow.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::{EtcdConfig, EtcdTls};
use crate::registry::store::{StoreError, StoreResult};

/// How one attempt against one member ended.
pub(super) enum Failure {
    /// The member certainly did not get the request (not connected, or it
    /// refused before doing anything): another member may take it as is.
    NotSent(StoreError),
    /// No answer in time, or the connection broke mid-request: the request
    /// may have been carried out.
    Unknown(StoreError),
    /// etcd refused it (bad request, permissions): no member will take it.
    Refused(StoreError),
}

/// Sorts an etcd error (see [`Failure`]).
pub(super) fn failure(context: &str, e: etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    use tonic::Code;
    let text = e.to_string();
    match &e {
        E::GRpcStatus(s)
            if matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::Unimplemented
            ) =>
        {
            Failure::Refused(StoreError::Refused(format!("{context}: {}", s.message())))
        }
        E::InvalidArgs(_) | E::InvalidUri(_) => {
            Failure::Refused(StoreError::Refused(format!("{context}: {e}")))
        }
        // A member without a leader refuses before proposing anything.
        E::GRpcStatus(s) if s.message().contains("no leader") => Failure::NotSent(
            StoreError::Unavailable(format!("{context}: {}", s.message())),
        ),
        E::TransportError(_) => {
            Failure::NotSent(StoreError::Unavailable(format!("{context}: {e}")))
        }
        _ if text.contains("Connection refused") || text.contains("tcp connect error") => {
            Failure::NotSent(StoreError::Unavailable(format!("{context}: {e}")))
        }
        _ => Failure::Unknown(StoreError::Unavailable(format!("{context}: {e}"))),
    }
}

/// The TLS settings of the client.
fn tls_options(tls: &EtcdTls) -> StoreResult<TlsOptions> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| StoreError::Io {
            path: p.clone(),
            source,
        })
    };
    let mut options = TlsOptions::new();
    if let Some(ca) = &tls.ca {
        options = options.ca_certificate(Certificate::from_pem(read(ca)?));
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            options = options.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Refused(
                "an etcd client certificate needs both --etcd-cert and --etcd-key".into(),
            ));
        }
    }
    Ok(options)
}

/// One client per member, connected on first use.
pub(super) struct Members {
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Mutex<Vec<Option<Client>>>,
    current: AtomicUsize,
    /// How long one attempt against one member may take.
    pub(super) timeout: Duration,
}

impl Members {
    /// The members of `config` (nothing is connected yet).
    pub(super) fn new(config: &EtcdConfig) -> StoreResult<Self> {
        let tls = config.tls.as_ref().map(tls_options).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let urls: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(2), config.request_timeout)
            // A member cut off from the quorum fails requests and watches
            // at once instead of leaving them hanging.
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        Ok(Self {
            clients: Mutex::new(vec![None; urls.len()]),
            urls,
            options,
            current: AtomicUsize::new(0),
            timeout: config.request_timeout,
        })
    }

    /// How many members there are.
    pub(super) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The member requests go to first.
    pub(super) fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Makes the next member the first one to try.
    pub(super) fn rotate(&self) {
        let next = (self.current() + 1) % self.len();
        self.current.store(next, Ordering::Relaxed);
    }

    /// The client of member `i`, connecting it if needed.
    pub(super) async fn client(&self, i: usize) -> Result<Client, Failure> {
        let cached = self.clients.lock().unwrap_or_else(PoisonError::into_inner)[i].clone();
        if let Some(c) = cached {
            return Ok(c);
        }
        let connect = Client::connect([&self.urls[i]], Some(self.options.clone()));
        let client = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(failure(&format!("connecting to {}", self.urls[i]), e)),
            Err(_) => {
                return Err(Failure::NotSent(StoreError::Unavailable(format!(
                    "connecting to {}: no answer within {:?}",
                    self.urls[i], self.timeout
                ))));
            }
        };
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(client.clone());
        Ok(client)
    }

    /// One attempt of `request` against member `i`, with the deadline.
    pub(super) async fn attempt<T, F>(
        &self,
        i: usize,
        context: &str,
        request: impl FnOnce(Client) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client(i).await?;
        match tokio::time::timeout(self.timeout, request(client)).await {
            Ok(Ok(v)) => {
                self.current.store(i, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => Err(failure(context, e)),
            Err(_) => Err(Failure::Unknown(StoreError::Unavailable(format!(
                "{context}: {} did not answer within {:?}",
                self.urls[i], self.timeout
            )))),
        }
    }

    /// Runs a request that is safe to repeat (a read) on the members in
    /// turn until one answers.
    pub(super) async fn read<T, F>(
        &self,
        context: &str,
        mut request: impl FnMut(Client) -> F,
    ) -> StoreResult<T>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = self.deadline();
        let mut last = None;
        for i in self.order(deadline) {
            match self.attempt(i, context, &mut request).await {
                Ok(v) => return Ok(v),
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::NotSent(e) | Failure::Unknown(e)) => last = Some(e),
            }
            self.pause_between_rounds(i).await;
        }
        Err(last.unwrap_or_else(|| StoreError::Unavailable(format!("{context}: no etcd member"))))
    }

    /// When a request that keeps failing over gives up: a few attempt
    /// timeouts, which covers a leader election (about a second).
    pub(super) fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.timeout * 3
    }

    /// The members to try in turn, from the current one, round after round
    /// until `deadline`.
    pub(super) fn order(&self, deadline: tokio::time::Instant) -> impl Iterator<Item = usize> + '_ {
        let start = self.current();
        let n = self.len();
        (0..)
            .map(move |k| (start + k) % n)
            .take_while(move |_| tokio::time::Instant::now() < deadline)
    }

    /// After a full round of failures, a short pause (an election may be
    /// under way).
    pub(super) async fn pause_between_rounds(&self, tried: usize) {
        if (tried + 1) % self.len() == self.current() % self.len() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
