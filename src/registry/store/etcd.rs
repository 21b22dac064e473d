//! The shared store: the registry in etcd, so several replicas (and several
//! clusters) serve one registry.
//!
//! Layout under the prefix (default `/waymark/`): `meta` (format and schema
//! version), `structure` (see below), and one JSON record per key —
//! `ns/<id>`, `svc/<id>`, `inst/<service id>/<instance id>`, `op/<id>`.
//!
//! Every replica keeps the whole registry in its in-memory index and follows
//! etcd with one watch from the revision it loaded. Each commit is one etcd
//! transaction, applied only if nothing it depends on changed since the
//! index was current:
//! - every namespace, service and instance it writes still has the
//!   revision this replica knows (`mod_revision` no newer than the applied
//!   revision, or than this replica's own later write of that key), and
//!   still exists if the index had it;
//! - a write that creates or deletes a namespace or service also bumps
//!   `structure`, under the same check, so such writes are serialised: a
//!   name is taken once, and a namespace is deleted only when it is empty.
//!
//! A service's `InstancesRevision` lives in its record, which every
//! instance-set change rewrites, so it grows strictly across replicas.
//! Operation records have random ids and no checks. A refused transaction
//! becomes [`StoreError::Conflict`]; the registry plans the write again once
//! this replica has applied the newer revision.
//!
//! Freshness: once a second the store reads etcd linearizably (which needs
//! quorum) and asks the watch for a progress notification; a replica that
//! has not seen a revision at least that new within `stale_after` reports
//! itself stale in [`Store::status`] (and so in `/readyz` and the metrics).
//! Reads keep being answered from the index meanwhile. A watch lost to
//! compaction re-reads everything and swaps the index at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KeyValue, TlsOptions, Txn, TxnOp, WatchOptions, WatchRequestSender,
};
use tokio::runtime::Runtime;
use tracing::{info, warn};

use super::{Change, Commit, Follower, Snapshot, Store, StoreError, StoreResult, StoreStatus};

/// The marker identifying a Waymark registry (the same as the embedded store's).
const FORMAT: &str = "waymark-registry";
/// The schema version of the records under the prefix.
const SCHEMA_VERSION: &str = "1";
/// Keys per page when reading the whole registry.
const PAGE: i64 = 500;
/// The largest gRPC message accepted (a page of large instances, a big watch
/// batch); tonic's default of 4 MiB is too small for a large registry.
const MAX_MESSAGE: usize = 256 << 20;
/// How often freshness is confirmed.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Client certificates for etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdTls {
    /// CA bundle that signed the etcd servers' certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Key of the client certificate (PEM).
    pub key: Option<PathBuf>,
}

/// How to reach etcd, as etcd's own clients take it.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// `host:port` of each member.
    pub endpoints: Vec<String>,
    /// Key prefix of this registry (several registries can share one etcd).
    pub prefix: String,
    /// TLS settings; `None` speaks plain HTTP/2.
    pub tls: Option<EtcdTls>,
    /// User name and password (etcd's `--user`).
    pub user: Option<(String, String)>,
    /// How long one request may take before it counts as failed.
    pub request_timeout: Duration,
    /// How long a replica may go without confirming it is current before it
    /// reports itself stale.
    pub stale_after: Duration,
    /// The most operations etcd accepts in one transaction (its
    /// `--max-txn-ops`, 128 by default).
    pub max_txn_ops: usize,
}

impl EtcdConfig {
    /// Parses `etcd://host:port[,host:port…]` into a configuration with the
    /// defaults.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("{url:?} is not an etcd URL (etcd://host:port[,host:port…])"))?;
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .map(str::to_string)
            .collect();
        for e in &endpoints {
            let (host, port) = e
                .rsplit_once(':')
                .ok_or_else(|| format!("etcd endpoint {e:?} needs host:port"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("etcd endpoint {e:?} needs host:port"));
            }
        }
        Ok(Self {
            endpoints,
            prefix: "/waymark/".into(),
            tls: None,
            user: None,
            request_timeout: Duration::from_secs(5),
            stale_after: Duration::from_secs(5),
            max_txn_ops: 128,
        })
    }
}

/// Keys of the records under the prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

/// What a key under the prefix holds.
enum KeyKind<'k> {
    Meta,
    Structure,
    Namespace(&'k str),
    Service(&'k str),
    Instance(&'k str, &'k str),
    Operation(&'k str),
    Unknown,
}

impl Keys {
    fn meta(&self) -> String {
        format!("{}meta", self.prefix)
    }

    fn structure(&self) -> String {
        format!("{}structure", self.prefix)
    }

    fn of(&self, change: &Change) -> String {
        let p = &self.prefix;
        match change {
            Change::PutNamespace(n) => format!("{p}ns/{}", n.id),
            Change::DeleteNamespace(id) => format!("{p}ns/{id}"),
            Change::PutService(s) => format!("{p}svc/{}", s.id),
            Change::DeleteService(id) => format!("{p}svc/{id}"),
            Change::PutInstance(i) => format!("{p}inst/{}/{}", i.service_id, i.id),
            Change::DeleteInstance {
                service_id,
                instance_id,
            } => format!("{p}inst/{service_id}/{instance_id}"),
            Change::PutOperation(o) => format!("{p}op/{}", o.id),
            Change::DeleteOperation(id) => format!("{p}op/{id}"),
        }
    }

    fn kind<'k>(&self, key: &'k str) -> KeyKind<'k> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return KeyKind::Unknown;
        };
        if rest == "meta" {
            return KeyKind::Meta;
        }
        if rest == "structure" {
            return KeyKind::Structure;
        }
        if let Some(id) = rest.strip_prefix("ns/") {
            return KeyKind::Namespace(id);
        }
        if let Some(id) = rest.strip_prefix("svc/") {
            return KeyKind::Service(id);
        }
        if let Some(id) = rest.strip_prefix("op/") {
            return KeyKind::Operation(id);
        }
        // Service ids never hold a slash; instance ids may.
        if let Some((service, instance)) =
            rest.strip_prefix("inst/").and_then(|r| r.split_once('/'))
        {
            return KeyKind::Instance(service, instance);
        }
        KeyKind::Unknown
    }

    /// The end of the prefix range (etcd's `--prefix`).
    fn range_end(&self) -> Vec<u8> {
        let mut end = self.prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0]
    }
}

/// The encoded value of a change: `None` for a delete.
fn value_of(change: &Change) -> StoreResult<Option<Vec<u8>>> {
    let encode = |v: serde_json::Result<Vec<u8>>| v.map(Some).map_err(StoreError::Encode);
    match change {
        Change::PutNamespace(n) => encode(serde_json::to_vec(n)),
        Change::PutService(s) => encode(serde_json::to_vec(s)),
        Change::PutInstance(i) => encode(serde_json::to_vec(i)),
        Change::PutOperation(o) => encode(serde_json::to_vec(o)),
        _ => Ok(None),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        table,
        key: key.to_string(),
        source,
    })
}

/// The change a watched event (or a listed key) stands for; `None` for the
/// store's own bookkeeping keys.
fn change_of(keys: &Keys, key: &str, value: Option<&[u8]>) -> StoreResult<Option<Change>> {
    Ok(Some(match (keys.kind(key), value) {
        (KeyKind::Namespace(_), Some(v)) => Change::PutNamespace(decode("namespaces", key, v)?),
        (KeyKind::Namespace(id), None) => Change::DeleteNamespace(id.to_string()),
        (KeyKind::Service(_), Some(v)) => Change::PutService(decode("services", key, v)?),
        (KeyKind::Service(id), None) => Change::DeleteService(id.to_string()),
        (KeyKind::Instance(..), Some(v)) => Change::PutInstance(decode("instances", key, v)?),
        (KeyKind::Instance(service, instance), None) => Change::DeleteInstance {
            service_id: service.to_string(),
            instance_id: instance.to_string(),
        },
        (KeyKind::Operation(_), Some(v)) => Change::PutOperation(decode("operations", key, v)?),
        (KeyKind::Operation(id), None) => Change::DeleteOperation(id.to_string()),
        (KeyKind::Meta | KeyKind::Structure, _) => return Ok(None),
        (KeyKind::Unknown, _) => {
            warn!(key, "ignoring an unknown key under the registry prefix");
            return Ok(None);
        }
    }))
}

/// Sorts an etcd error into retryable and not.
fn classify(context: &str, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use tonic::Code;
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
            StoreError::Refused(format!("{context}: {}", s.message()))
        }
        E::InvalidArgs(_) | E::InvalidUri(_) => StoreError::Refused(format!("{context}: {e}")),
        _ => StoreError::Unavailable(format!("{context}: {e}")),
    }
}

/// Whether a request certainly never reached etcd (so retrying it cannot
/// apply it twice).
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = e.to_string();
    matches!(e, etcd_client::Error::TransportError(_))
        || text.contains("Connection refused")
        || text.contains("tcp connect error")
}

/// What the replica has applied, under the registry's writer lock.
#[derive(Debug, Default)]
struct Applied {
    /// Every store event up to this revision is in the index.
    revision: i64,
    /// Keys this replica wrote at a revision newer than `revision`: the
    /// index holds them as of that write.
    own: HashMap<String, i64>,
}

/// State shared between the store, its watch and its heartbeat.
#[derive(Debug)]
struct Shared {
    keys: Keys,
    applied: Mutex<Applied>,
    caught_up: Condvar,
    fresh: Mutex<Freshness>,
    conflicts: AtomicU64,
    relists: AtomicU64,
    stale_after: Duration,
}

#[derive(Debug)]
struct Freshness {
    /// When the replica last confirmed it held everything etcd had.
    confirmed: Instant,
    /// What went wrong since, if anything.
    problem: Option<String>,
}

impl Shared {
    fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn freshness(&self) -> MutexGuard<'_, Freshness> {
        self.fresh.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn problem(&self, what: String) {
        let mut f = self.freshness();
        if f.problem.as_deref() != Some(what.as_str()) {
            warn!(problem = %what, "registry store");
            f.problem = Some(what);
        }
    }

    fn confirm(&self) {
        let mut f = self.freshness();
        if f.problem.take().is_some() {
            info!("registry store current again");
        }
        f.confirmed = Instant::now();
    }

    /// The revision a key is known at: the applied revision, or this
    /// replica's own newer write of it.
    fn known(applied: &Applied, key: &str) -> i64 {
        applied
            .own
            .get(key)
            .map_or(applied.revision, |&r| r.max(applied.revision))
    }

    /// Turns one watch response into the changes to apply, skipping what
    /// the index already holds (this replica's own writes), and advances
    /// the applied revision. Runs under the registry's writer lock.
    fn accept(&self, events: &[(String, i64, Option<Vec<u8>>)], revision: i64) -> Vec<Change> {
        let mut applied = self.applied();
        let mut changes = Vec::with_capacity(events.len());
        for (key, rev, value) in events {
            if applied.own.get(key).is_some_and(|own| own >= rev) {
                continue;
            }
            match change_of(&self.keys, key, value.as_deref()) {
                Ok(Some(c)) => changes.push(c),
                Ok(None) => {}
                // A record this build cannot read: skipping it keeps the
                // rest current; the error names it.
                Err(e) => warn!(error = %e, "skipping an undecodable registry record"),
            }
        }
        if revision > applied.revision {
            applied.revision = revision;
            let done = applied.revision;
            applied.own.retain(|_, r| *r > done);
        }
        drop(applied);
        self.caught_up.notify_all();
        changes
    }
}

/// The registry in etcd (see the module docs).
pub struct EtcdStore {
    // The trait is synchronous and its callers are blocking threads; the
    // client's connections are driven by this store's own small runtime.
    runtime: Option<Runtime>,
    client: Client,
    config: EtcdConfig,
    shared: Arc<Shared>,
    // The watch's request side, for progress requests by the heartbeat.
    watch_requests: Arc<tokio::sync::Mutex<Option<WatchRequestSender>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks on its tasks; the watch never ends.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdStore {
    /// Connects to etcd. Fails when no member answers within the request
    /// timeout, or credentials or certificates are refused.
    pub fn connect(config: EtcdConfig) -> StoreResult<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("waymark-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unavailable(format!("cannot start the etcd client: {e}")))?;
        let tls = config.tls.as_ref().map(tls_options).transpose()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoints: Vec<String> = config
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_timeout(config.request_timeout)
            .with_keep_alive(Duration::from_secs(5), config.request_timeout)
            // A member cut off from the quorum fails watches instead of
            // leaving them silent.
            .with_require_leader(true);
        if let Some(tls) = tls {
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &config.user {
            options = options.with_user(user, password);
        }
        let client = runtime
            .block_on(async {
                tokio::time::timeout(
                    config.request_timeout,
                    Client::connect(&endpoints, Some(options)),
                )
                .await
            })
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no etcd member of {} answered within {:?}",
                    config.endpoints.join(","),
                    config.request_timeout
                ))
            })?
            .map_err(|e| classify("connecting to etcd", e))?;
        let shared = Arc::new(Shared {
            keys: Keys {
                prefix: config.prefix.clone(),
            },
            applied: Mutex::new(Applied::default()),
            caught_up: Condvar::new(),
            fresh: Mutex::new(Freshness {
                confirmed: Instant::now(),
                problem: None,
            }),
            conflicts: AtomicU64::new(0),
            relists: AtomicU64::new(0),
            stale_after: config.stale_after,
        });
        Ok(Self {
            runtime: Some(runtime),
            client,
            config,
            shared,
            watch_requests: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// Checks (or writes, on an empty prefix) the format marker.
    async fn check_meta(client: &mut Client, keys: &Keys, timeout: Duration) -> StoreResult<()> {
        let meta_key = keys.meta();
        let want = serde_json::json!({"format": FORMAT, "schema": SCHEMA_VERSION}).to_string();
        let foreign = |reason: String| StoreError::Foreign {
            path: PathBuf::from(&keys.prefix),
            reason,
        };
        let got = with_timeout(
            timeout,
            "reading the registry marker",
            client.get(meta_key.clone(), None),
        )
        .await?;
        let Some(kv) = got.kvs().first() else {
            // Empty prefix: claim it. Anything else already there is foreign.
            let any = with_timeout(
                timeout,
                "reading the registry prefix",
                client.get(
                    keys.prefix.clone(),
                    Some(
                        GetOptions::new()
                            .with_range(keys.range_end())
                            .with_count_only(),
                    ),
                ),
            )
            .await?;
            if any.count() > 0 {
                return Err(foreign(format!(
                    "{} keys under the prefix but no {meta_key}",
                    any.count()
                )));
            }
            let txn = Txn::new()
                .when([Compare::create_revision(
                    meta_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(meta_key, want, None)]);
            with_timeout(timeout, "writing the registry marker", client.txn(txn)).await?;
            return Ok(());
        };
        let meta: serde_json::Value = serde_json::from_slice(kv.value())
            .map_err(|e| foreign(format!("its marker is not JSON: {e}")))?;
        if meta["format"] != FORMAT {
            return Err(foreign(format!(
                "the marker's format is {}, expected {FORMAT:?}",
                meta["format"]
            )));
        }
        if meta["schema"] != SCHEMA_VERSION {
            return Err(foreign(format!(
                "schema version {} is not supported by this build (expects {SCHEMA_VERSION})",
                meta["schema"]
            )));
        }
        Ok(())
    }

    /// Reads every key under the prefix at one revision, page by page.
    async fn read_all(
        client: &mut Client,
        keys: &Keys,
        timeout: Duration,
    ) -> StoreResult<(Vec<KeyValue>, i64)> {
        let end = keys.range_end();
        'attempt: for _ in 0..3 {
            let mut from = keys.prefix.as_bytes().to_vec();
            let mut revision = 0;
            let mut all = Vec::new();
            loop {
                let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let mut page = match with_timeout(
                    timeout,
                    "reading the registry",
                    client.get(from.clone(), Some(options)),
                )
                .await
                {
                    Ok(p) => p,
                    // Compacted between pages: start over at a newer revision.
                    Err(StoreError::Refused(m)) if m.contains("compacted") => continue 'attempt,
                    Err(e) => return Err(e),
                };
                if revision == 0 {
                    revision = page.header().map_or(0, |h| h.revision());
                }
                let more = page.more();
                let kvs = page.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                all.extend(kvs);
                if !more {
                    return Ok((all, revision));
                }
            }
        }
        Err(StoreError::Unavailable(
            "the registry kept being compacted while it was read".into(),
        ))
    }

    fn snapshot_of(keys: &Keys, kvs: Vec<KeyValue>, revision: i64) -> StoreResult<Snapshot> {
        let mut snap = Snapshot {
            revision,
            ..Snapshot::default()
        };
        for kv in &kvs {
            let key = String::from_utf8_lossy(kv.key());
            match change_of(keys, &key, Some(kv.value()))? {
                Some(Change::PutNamespace(n)) => snap.namespaces.push(n),
                Some(Change::PutService(s)) => snap.services.push(s),
                Some(Change::PutInstance(i)) => snap.instances.push(i),
                Some(Change::PutOperation(o)) => snap.operations.push(o),
                _ => {}
            }
        }
        Ok(snap)
    }
}

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

/// Runs one etcd request with a deadline.
async fn with_timeout<T>(
    timeout: Duration,
    context: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> StoreResult<T> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(context, e)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{context}: etcd did not answer within {timeout:?}"
        ))),
    }
}

impl Store for EtcdStore {
    fn load(&self) -> StoreResult<Snapshot> {
        let mut client = self.client.clone();
        let keys = self.keys().clone();
        let timeout = self.config.request_timeout;
        let (kvs, revision) = self.runtime().block_on(async move {
            Self::check_meta(&mut client, &keys, timeout).await?;
            Self::read_all(&mut client, &keys, timeout).await
        })?;
        let snapshot = Self::snapshot_of(self.keys(), kvs, revision)?;
        let mut applied = self.shared.applied();
        applied.revision = revision;
        applied.own.clear();
        drop(applied);
        self.shared.confirm();
        Ok(snapshot)
    }

    fn commit(&self, commit: Commit<'_>) -> StoreResult<()> {
        if commit.changes.is_empty() {
            return Ok(());
        }
        let keys = self.keys();
        // etcd refuses a key twice in one transaction: the last change to a
        // key wins, checked against what the index had before the first.
        let mut order: Vec<String> = Vec::with_capacity(commit.changes.len());
        let mut by_key: HashMap<String, (&Change, bool)> = HashMap::new();
        let mut structural = false;
        for (change, &existed) in commit.changes.iter().zip(commit.existed) {
            structural |= change.is_structural(existed);
            let key = keys.of(change);
            match by_key.get_mut(&key) {
                Some(entry) => entry.0 = change,
                None => {
                    by_key.insert(key.clone(), (change, existed));
                    order.push(key);
                }
            }
        }
        let applied = self.shared.applied();
        let mut compares = Vec::new();
        let mut ops = Vec::with_capacity(order.len() + 1);
        for key in &order {
            let (change, existed) = by_key[key];
            let checked = !matches!(change, Change::PutOperation(_) | Change::DeleteOperation(_));
            if checked {
                let known = Shared::known(&applied, key);
                compares.push(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Less,
                    known + 1,
                ));
                if existed {
                    compares.push(Compare::version(key.clone(), CompareOp::Greater, 0));
                }
            }
            ops.push(match value_of(change)? {
                Some(v) => TxnOp::put(key.clone(), v, None),
                None => TxnOp::delete(key.clone(), None),
            });
        }
        if structural {
            let key = keys.structure();
            let known = Shared::known(&applied, &key);
            compares.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Less,
                known + 1,
            ));
            ops.push(TxnOp::put(key.clone(), Vec::new(), None));
            order.push(key);
        }
        drop(applied);
        let limit = self.config.max_txn_ops;
        if compares.len() > limit || ops.len() > limit {
            return Err(StoreError::Refused(format!(
                "one write needs {} operations and {} checks, more than --etcd-max-txn-ops {limit} \
                 (raise etcd's --max-txn-ops and this flag together)",
                ops.len(),
                compares.len()
            )));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let timeout = self.config.request_timeout;
        let response = self.runtime().block_on(async {
            let deadline = Instant::now() + timeout;
            loop {
                let mut client = self.client.clone();
                match tokio::time::timeout_at(deadline.into(), client.txn(txn.clone())).await {
                    Ok(Ok(r)) => return Ok(r),
                    // Not sent (a member is down): another member may take it.
                    Ok(Err(e)) if never_sent(&e) && Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(Err(e)) => return Err(classify("committing to etcd", e)),
                    Err(_) => {
                        return Err(StoreError::Unavailable(format!(
                            "etcd did not confirm the write within {timeout:?}; it may still \
                             be applied, and then shows up once etcd answers again"
                        )));
                    }
                }
            }
        })?;
        let revision = response.header().map_or(0, |h| h.revision());
        if !response.succeeded() {
            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Conflict { revision });
        }
        let mut applied = self.shared.applied();
        for key in order {
            applied.own.insert(key, revision);
        }
        Ok(())
    }

    fn follow(&self, follower: Weak<dyn Follower>) -> StoreResult<()> {
        let client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        let requests = Arc::clone(&self.watch_requests);
        let timeout = self.config.request_timeout;
        self.runtime().spawn(watch_loop(
            client.clone(),
            Arc::clone(&shared),
            Arc::clone(&requests),
            follower,
            timeout,
        ));
        self.runtime()
            .spawn(heartbeat_loop(client, shared, requests, timeout));
        Ok(())
    }

    fn catch_up(&self, revision: i64, timeout: Duration) -> StoreResult<()> {
        let deadline = Instant::now() + timeout;
        // The revision may belong to keys outside the prefix, which the
        // watch never delivers: a progress notification moves us past it.
        let requests = Arc::clone(&self.watch_requests);
        self.runtime().spawn(async move {
            if let Some(sender) = requests.lock().await.as_mut() {
                let _ = sender.request_progress().await;
            }
        });
        let mut applied = self.shared.applied();
        while applied.revision < revision {
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "this replica has not caught up with etcd revision {revision} within {timeout:?} (at {})",
                    applied.revision
                )));
            }
            applied = self
                .shared
                .caught_up
                .wait_timeout(applied, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    fn max_changes(&self) -> Option<usize> {
        // Each change costs up to two checks, plus the structure key.
        Some((self.config.max_txn_ops.saturating_sub(1) / 2).max(1))
    }

    fn status(&self) -> StoreStatus {
        let f = self.shared.freshness();
        let age = f.confirmed.elapsed();
        let stale = (age > self.shared.stale_after).then(|| {
            format!(
                "not confirmed current for {:.1}s: {}",
                age.as_secs_f64(),
                f.problem.as_deref().unwrap_or("no answer from etcd")
            )
        });
        drop(f);
        StoreStatus {
            stale,
            revision: self.shared.applied().revision,
            conflicts: self.shared.conflicts.load(Ordering::Relaxed),
            relists: self.shared.relists.load(Ordering::Relaxed),
            lag_seconds: age.as_secs_f64(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "etcd://{} (prefix {})",
            self.config.endpoints.join(","),
            self.config.prefix
        )
    }
}

/// Follows etcd from the applied revision on, re-listing when the watch
/// falls behind a compaction.
async fn watch_loop(
    mut client: Client,
    shared: Arc<Shared>,
    requests: Arc<tokio::sync::Mutex<Option<WatchRequestSender>>>,
    follower: Weak<dyn Follower>,
    timeout: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if follower.strong_count() == 0 {
            return;
        }
        let from = shared.applied().revision + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let watched = tokio::time::timeout(
            timeout,
            client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE)
                .watch(shared.keys.prefix.clone(), Some(options)),
        )
        .await;
        let stream = match watched {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                shared.problem(format!("cannot watch etcd: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                shared.problem("cannot watch etcd: no answer".into());
                continue;
            }
        };
        let (sender, mut responses) = stream.split();
        *requests.lock().await = Some(sender);
        let ended = loop {
            let response = match responses.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break "the watch stream ended".to_string(),
                Err(e) => break format!("the watch failed: {e}"),
            };
            if response.compact_revision() > 0 {
                break format!(
                    "the watch fell behind compaction (compacted at {})",
                    response.compact_revision()
                );
            }
            if response.canceled() {
                break format!("the watch was cancelled: {}", response.cancel_reason());
            }
            backoff = Duration::from_millis(100);
            let revision = response.header().map_or(0, |h| h.revision());
            let events: Vec<(String, i64, Option<Vec<u8>>)> = response
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let value = match ev.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    };
                    Some((key, kv.mod_revision(), value))
                })
                .collect();
            let Some(f) = follower.upgrade() else {
                return;
            };
            // Applying waits for the registry's writer lock, and a writer
            // may be waiting on this runtime for its commit: never block
            // the runtime's worker with it.
            let accepting = Arc::clone(&shared);
            let applied = tokio::task::spawn_blocking(move || {
                f.apply_remote(&mut || accepting.accept(&events, revision));
            })
            .await;
            if applied.is_err() {
                break "applying watched changes failed".to_string();
            }
        };
        *requests.lock().await = None;
        shared.problem(ended.clone());
        if ended.contains("compaction") {
            relist(&mut client, &shared, &follower, timeout).await;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// Re-reads everything and replaces the index with it at once.
async fn relist(
    client: &mut Client,
    shared: &Arc<Shared>,
    follower: &Weak<dyn Follower>,
    timeout: Duration,
) {
    loop {
        match EtcdStore::read_all(client, &shared.keys, timeout).await {
            Ok((kvs, revision)) => {
                let snapshot = match EtcdStore::snapshot_of(&shared.keys, kvs, revision) {
                    Ok(s) => s,
                    Err(e) => {
                        shared.problem(format!("cannot re-read the registry: {e}"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(f) = follower.upgrade() else {
                    return;
                };
                let mut snapshot = Some(snapshot);
                let resetting = Arc::clone(shared);
                // Off the runtime's worker, as in `watch_loop`.
                let replaced = tokio::task::spawn_blocking(move || {
                    f.replace_all(&mut || {
                        let mut applied = resetting.applied();
                        applied.revision = revision;
                        applied.own.clear();
                        drop(applied);
                        resetting.caught_up.notify_all();
                        snapshot.take().unwrap_or_default()
                    });
                })
                .await;
                if replaced.is_err() {
                    shared.problem("replacing the index after a re-read failed".into());
                    continue;
                }
                shared.relists.fetch_add(1, Ordering::Relaxed);
                info!(revision, "re-read the registry from etcd");
                return;
            }
            Err(e) => {
                shared.problem(format!("cannot re-read the registry: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Confirms once a second that this replica holds everything etcd has: a
/// linearizable read (which needs quorum) gives etcd's revision, and the
/// watch must reach it.
async fn heartbeat_loop(
    mut client: Client,
    shared: Arc<Shared>,
    requests: Arc<tokio::sync::Mutex<Option<WatchRequestSender>>>,
    timeout: Duration,
) {
    let meta = shared.keys.meta();
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if Arc::strong_count(&shared) == 1 {
            return;
        }
        let read = with_timeout(
            timeout,
            "checking etcd",
            client.get(meta.clone(), Some(GetOptions::new().with_count_only())),
        )
        .await;
        let target = match read {
            Ok(r) => r.header().map_or(0, |h| h.revision()),
            Err(e) => {
                shared.problem(e.to_string());
                continue;
            }
        };
        if shared.applied().revision >= target {
            shared.confirm();
            continue;
        }
        if let Some(sender) = requests.lock().await.as_mut() {
            let _ = sender.request_progress().await;
        }
        let deadline = Instant::now() + HEARTBEAT;
        loop {
            if shared.applied().revision >= target {
                shared.confirm();
                break;
            }
            if Instant::now() >= deadline {
                shared.problem(format!(
                    "the watch is behind etcd (applied {}, etcd at {target})",
                    shared.applied().revision
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys() {
        let c = EtcdConfig::from_url("etcd://127.0.0.1:2379,etcd-1.db:2380").unwrap();
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "etcd-1.db:2380"]);
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "etcd://:1",
        ] {
            assert!(EtcdConfig::from_url(bad).is_err(), "{bad}");
        }
        let keys = Keys {
            prefix: "/w/".into(),
        };
        assert_eq!(keys.range_end(), b"/w0");
        assert!(matches!(
            keys.kind("/w/inst/srv-a/pod/x:1"),
            KeyKind::Instance("srv-a", "pod/x:1")
        ));
        assert!(matches!(
            keys.kind("/w/ns/ns-1"),
            KeyKind::Namespace("ns-1")
        ));
        assert!(matches!(keys.kind("/w/structure"), KeyKind::Structure));
        assert!(matches!(keys.kind("/other/ns/x"), KeyKind::Unknown));
        assert!(matches!(
            change_of(&keys, "/w/inst/srv-a/i-1", None).unwrap(),
            Some(Change::DeleteInstance { service_id, instance_id }) if service_id == "srv-a" && instance_id == "i-1"
        ));
    }
}
