//! The shared store: the registry in etcd, so several replicas (and several
//! clusters) serve one registry.
//!
//! Layout under the prefix (default `/waymark/`, `layout.rs`): `meta` (format
//! and schema version), `structure` (see below), and one JSON record per key
//! — `ns/<id>`, `svc/<id>`, `inst/<service id>/<instance id>`, `op/<id>`.
//!
//! Every replica keeps the whole registry in its in-memory index and follows
//! etcd with one watch from the revision it loaded (`follow.rs`). Each
//! commit is one etcd transaction, applied only if nothing it depends on
//! changed since the index was current:
//! - every namespace, service and instance it writes still has the
//!   revision this replica knows (`mod_revision` no newer than the applied
//!   revision, or than this replica's own later write of that key), and
//!   still exists if the index had it;
//! - a write that creates or deletes a namespace or service also bumps
//!   `structure`, under the same check, so such writes are serialised: a
//!   name is taken once, and a namespace is deleted only when it is empty.
//!
//! A service's `InstancesRevision` is not in its record, which would make
//! every two writers of one service on different replicas refuse each
//! other. Every transaction that changes a service's instance set writes
//! the service's `rev/<id>` key, unchecked; the revision is that key's value
//! (a base: the record's revision when the key was first written, so
//! revisions copied in or older than the key carry on) plus the etcd
//! revision that last wrote the key (`layout::instances_revision`). etcd's
//! revision grows with every transaction, so the service's revision grows
//! strictly whichever replica wrote. The transaction also reads the key
//! first: when another replica's change to the instance set is not in this
//! replica's index yet, the write is applied through the watch, after that
//! change, instead of at once, so one revision never stands for two
//! instance sets. A service is deleted only if its key is unchanged.
//! Operation records have random ids and no checks. A refused transaction
//! becomes [`StoreError::Conflict`]; the registry plans the write again once
//! this replica has applied the newer revision.
//!
//! Members (`members.rs`): one client per member; a request goes to the
//! member that last answered and fails over to the next. A transaction
//! whose outcome is unknown (no answer in time) is sent again to the next
//! member: its checks make it apply at most once, and a refusal is then
//! resolved by reading back what it wrote.
//!
//! Freshness: once a second the store reads etcd linearizably (which needs a
//! quorum) and asks the watch for a progress notification; a replica that
//! has not seen a revision at least that new within `stale_after` reports
//! itself stale in [`Store::status`] (and so in `/readyz` and the metrics).
//! Reads keep being answered from the index meanwhile. A watch lost to
//! compaction re-reads everything and swaps the index at once.

mod follow;
mod layout;
mod members;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse, TxnResponse};
use tokio::runtime::Runtime;

use self::follow::Shared;
use self::layout::{Keys, value_of};
use self::members::{Failure, Members};
use super::{
    Bump, Change, Commit, Committed, Follower, Snapshot, Store, StoreError, StoreResult,
    StoreStatus,
};

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
    /// How long one request to one member may take before it counts as failed.
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
            let ok = e
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
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

/// The registry in etcd (see the module docs).
pub struct EtcdStore {
    // The trait is synchronous and its callers are blocking threads; the
    // clients' connections are driven by this store's own small runtime.
    runtime: Option<Runtime>,
    config: EtcdConfig,
    shared: Arc<Shared>,
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

/// What a transaction did: applied, or refused by its checks.
enum Outcome {
    /// Applied at this revision; the response when this attempt got it
    /// (not when a lost answer was resolved by reading back).
    Applied(i64, Option<TxnResponse>),
    Refused(i64),
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
        let members = Members::new(&config)?;
        // Connect now, so a wrong address or credentials fail start-up.
        runtime.block_on(async {
            let mut last = None;
            for i in 0..members.len() {
                match members.client(i).await {
                    Ok(_) => return Ok(()),
                    Err(Failure::Refused(e)) => return Err(e),
                    Err(Failure::NotSent(e) | Failure::Unknown(e)) => last = Some(e),
                }
            }
            Err(StoreError::Unavailable(format!(
                "no etcd member of {} answered: {}",
                config.endpoints.join(","),
                last.map(|e| e.to_string()).unwrap_or_default()
            )))
        })?;
        let shared = Arc::new(Shared::new(&config.prefix, members, config.stale_after));
        Ok(Self {
            runtime: Some(runtime),
            config,
            shared,
        })
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    fn keys(&self) -> &Keys {
        &self.shared.keys
    }

    /// Sends a transaction, failing over between members. When an attempt
    /// ended without an answer the transaction may have been applied: if a
    /// later attempt is then refused, `marker` (a key and the value the
    /// transaction puts there) tells whether it was this transaction that
    /// got there first.
    async fn send(&self, txn: Txn, marker: Option<(String, Vec<u8>)>) -> StoreResult<Outcome> {
        let members = &self.shared.members;
        let mut uncertain: Option<StoreError> = None;
        let mut last = None;
        for i in members.order(members.deadline()) {
            let attempt = members
                .attempt(i, "committing to etcd", |mut c| {
                    let t = txn.clone();
                    async move { c.txn(t).await }
                })
                .await;
            match attempt {
                Ok(r) => return self.outcome(r, uncertain.is_some(), marker.as_ref()).await,
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::NotSent(e)) => last = Some(e),
                Err(Failure::Unknown(e)) => uncertain = Some(e),
            }
            members.pause_between_rounds(i).await;
        }
        Err(match uncertain {
            Some(e) => StoreError::Unavailable(format!(
                "{e}; the write may still have been applied, and then shows up once etcd answers"
            )),
            None => last.unwrap_or_else(|| StoreError::Unavailable("no etcd member".into())),
        })
    }

    async fn outcome(
        &self,
        response: TxnResponse,
        uncertain: bool,
        marker: Option<&(String, Vec<u8>)>,
    ) -> StoreResult<Outcome> {
        let revision = response.header().map_or(0, |h| h.revision());
        if response.succeeded() {
            return Ok(Outcome::Applied(revision, Some(response)));
        }
        if let (true, Some((key, value))) = (uncertain, marker) {
            let got = self
                .shared
                .members
                .read("reading back a write", |mut c| {
                    let k = key.clone();
                    async move { c.get(k, None).await }
                })
                .await?;
            if let Some(kv) = got.kvs().first()
                && kv.value() == value.as_slice()
            {
                return Ok(Outcome::Applied(kv.mod_revision(), None));
            }
        }
        Ok(Outcome::Refused(revision))
    }
}

impl Store for EtcdStore {
    fn load(&self) -> StoreResult<Snapshot> {
        let shared = &self.shared;
        let (kvs, revision) = self.runtime().block_on(async {
            layout::check_meta(&shared.members, &shared.keys).await?;
            layout::read_all(&shared.members, &shared.keys).await
        })?;
        let (snapshot, revisions) = layout::snapshot_of(self.keys(), &kvs, revision)?;
        let mut applied = self.shared.applied();
        applied.revision = revision;
        applied.own.clear();
        applied.revisions = revisions;
        drop(applied);
        self.shared.confirm();
        Ok(snapshot)
    }

    fn commit(&self, commit: Commit<'_>) -> StoreResult<Committed> {
        if commit.changes.is_empty() {
            return Ok(Committed::default());
        }
        let keys = self.keys();
        let bumps: HashMap<&str, &Bump<'_>> =
            commit.bumps.iter().map(|b| (b.service_id, b)).collect();
        // etcd refuses a key twice in one transaction: the last change to a
        // key wins, checked against what the index had before the first.
        let mut order: Vec<String> = Vec::with_capacity(commit.changes.len());
        let mut by_key: HashMap<String, (&Change, bool)> = HashMap::new();
        let mut structural = false;
        let mut deleted_services = Vec::new();
        for (change, &existed) in commit.changes.iter().zip(commit.existed) {
            match change {
                Change::SetServiceRevision { .. } => {
                    return Err(StoreError::Refused(
                        "a service's revision is assigned by the store, not written to it".into(),
                    ));
                }
                Change::DeleteService(id) => deleted_services.push(id.as_str()),
                _ => {}
            }
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
        let mut marker = None;
        let mut written = Vec::with_capacity(order.len() + bumps.len() + 1);
        for key in order {
            let (change, existed) = by_key[&key];
            // A service record whose revision alone changed is not
            // rewritten: its revision key is (below), so writers of one
            // service on several replicas do not refuse each other. It must
            // still exist.
            if let Change::PutService(svc) = change
                && bumps
                    .get(svc.id.as_str())
                    .is_some_and(|b| b.record_unchanged)
            {
                compares.push(Compare::version(key, CompareOp::Greater, 0));
                continue;
            }
            let checked = !matches!(change, Change::PutOperation(_) | Change::DeleteOperation(_));
            if checked {
                let known = Shared::known(&applied, &key);
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
                Some(v) => {
                    // Records carry fresh timestamps and ids: a value is this
                    // write's own.
                    marker.get_or_insert_with(|| (key.clone(), v.clone()));
                    TxnOp::put(key.clone(), v, None)
                }
                None => TxnOp::delete(key.clone(), None),
            });
            written.push(key);
        }
        // A service is deleted only if no other replica changed its
        // instance set since this one looked (its revision key is
        // unchanged); the key goes with it.
        for id in &deleted_services {
            let key = keys.revision(id);
            let known = Shared::known(&applied, &key);
            compares.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Less,
                known + 1,
            ));
            ops.push(TxnOp::delete(key, None));
        }
        // Each bumped service's revision key, unchecked: this transaction's
        // etcd revision makes its `InstancesRevision` (`layout::instances_revision`).
        // The base is what the key already holds, or for its first write the
        // revision the record gives (the same on every replica).
        //
        // The key is read just before it is written: if another replica
        // changed the instance set since this one last saw it, this
        // replica's index lacks that change, and giving the service this
        // transaction's revision now would let one revision stand for two
        // instance sets. The index then takes this write through its watch,
        // in etcd's order (`Committed::pending`).
        let mut assigned = Vec::with_capacity(bumps.len());
        for bump in commit.bumps {
            if deleted_services.contains(&bump.service_id) {
                continue;
            }
            let base = applied
                .revisions
                .get(bump.service_id)
                .map_or(bump.previous, |&(base, _)| base);
            let key = keys.revision(bump.service_id);
            let known = Shared::known(&applied, &key);
            let read_at = ops.len();
            ops.push(TxnOp::get(
                key.clone(),
                Some(GetOptions::new().with_keys_only()),
            ));
            ops.push(TxnOp::put(key.clone(), base.to_string(), None));
            written.push(key);
            assigned.push((bump.service_id.to_string(), base, read_at, known));
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
            written.push(key);
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
        match self.runtime().block_on(self.send(txn, marker))? {
            Outcome::Applied(revision, response) => {
                let replies = response.map(|r| r.op_responses());
                let unseen = |read_at: usize, known: i64| {
                    let Some(replies) = &replies else {
                        // Answered by reading back: what the key held
                        // before is not known.
                        return true;
                    };
                    match replies.get(read_at) {
                        Some(TxnOpResponse::Get(got)) => got
                            .kvs()
                            .first()
                            .is_some_and(|kv| kv.mod_revision() > known),
                        _ => true,
                    }
                };
                if assigned.iter().any(|&(_, _, at, known)| unseen(at, known)) {
                    // Nothing goes into `own`: the watch delivers this write
                    // like another replica's, after the ones before it.
                    self.shared.through_watch.fetch_add(1, Ordering::Relaxed);
                    return Ok(Committed {
                        revisions: Vec::new(),
                        pending: Some(revision),
                    });
                }
                let mut applied = self.shared.applied();
                for key in written {
                    applied.own.insert(key, revision);
                }
                for id in deleted_services {
                    applied.revisions.remove(id);
                }
                let revisions = assigned
                    .into_iter()
                    .map(|(id, base, _, _)| {
                        applied.revisions.insert(id.clone(), (base, revision));
                        (id, layout::instances_revision(base, revision))
                    })
                    .collect();
                Ok(Committed {
                    revisions,
                    pending: None,
                })
            }
            Outcome::Refused(revision) => {
                self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Conflict { revision })
            }
        }
    }

    fn follow(&self, follower: Weak<dyn Follower>) -> StoreResult<()> {
        self.runtime()
            .spawn(follow::watch_loop(Arc::clone(&self.shared), follower));
        self.runtime()
            .spawn(follow::heartbeat_loop(Arc::downgrade(&self.shared)));
        Ok(())
    }

    fn catch_up(&self, revision: i64, timeout: Duration) -> StoreResult<()> {
        let deadline = Instant::now() + timeout;
        // The revision may belong to keys outside the prefix, which the
        // watch never delivers: a progress notification moves us past it.
        let shared = Arc::clone(&self.shared);
        self.runtime()
            .spawn(async move { shared.request_progress().await });
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

    fn catch_up_latest(&self, timeout: Duration) -> StoreResult<bool> {
        let meta = self.keys().meta();
        let read = self.runtime().block_on(self.shared.members.read(
            "reading etcd's revision",
            |mut c| {
                let k = meta.clone();
                async move { c.get(k, Some(GetOptions::new().with_count_only())).await }
            },
        ))?;
        let revision = read.header().map_or(0, |h| h.revision());
        self.catch_up(revision, timeout)?;
        Ok(true)
    }

    fn max_changes(&self) -> Option<usize> {
        // Each change costs up to two checks, plus the structure key.
        Some((self.config.max_txn_ops.saturating_sub(1) / 2).max(1))
    }

    fn is_shared(&self) -> bool {
        true
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
            through_watch: self.shared.through_watch.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = EtcdConfig::from_url("etcd://127.0.0.1:2379,etcd-1.db:2380").unwrap();
        assert_eq!(c.endpoints, ["127.0.0.1:2379", "etcd-1.db:2380"]);
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:port",
            "etcd://:1",
            "etcd://a:1,,b:2",
        ] {
            assert!(EtcdConfig::from_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_services_revision_is_its_keys_base_plus_the_revision_that_wrote_it() {
        let members = Members::new(&EtcdConfig::from_url("etcd://127.0.0.1:1").unwrap()).unwrap();
        let shared = Shared::new("/w/", members, Duration::from_secs(5));
        shared.applied().revision = 10;
        let svc = r#"{"id":"srv-1","name":"api","namespace_id":"ns-1","description":null,"type":"HTTP","dns_config":null,"health_check_config":null,"health_check_custom_config":null,"attributes":{},"creator_request_id":null,"create_date":0,"update_date":0,"revision":7,"owner":{"kind":"api"},"tags":[]}"#;
        // Another replica's update of the record and a registration, in
        // one response: the record's stale revision is replaced.
        let events = vec![
            (
                "/w/svc/srv-1".to_string(),
                20,
                Some(svc.as_bytes().to_vec()),
            ),
            ("/w/rev/srv-1".to_string(), 20, Some(b"3".to_vec())),
        ];
        let changes = shared.accept(&events, 20);
        let revision_of = |c: &Change| match c {
            Change::PutService(s) => Some(s.revision),
            Change::SetServiceRevision { revision, .. } => Some(*revision),
            _ => None,
        };
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(
            changes.iter().all(|c| revision_of(c) == Some(23)),
            "{changes:?}"
        );
        assert_eq!(shared.applied().revisions["srv-1"], (3, 20));
        // This replica's own later write of the key shadows an older event.
        shared.applied().own.insert("/w/rev/srv-1".into(), 30);
        let older = vec![("/w/rev/srv-1".to_string(), 25, Some(b"3".to_vec()))];
        assert!(shared.accept(&older, 25).is_empty());
        // The key goes with its service.
        let gone = vec![("/w/rev/srv-1".to_string(), 40, None)];
        shared.accept(&gone, 40);
        assert!(shared.applied().revisions.is_empty());
    }

    #[test]
    fn own_writes_shadow_older_events_until_the_watch_passes_them() {
        let members = Members::new(&EtcdConfig::from_url("etcd://127.0.0.1:1").unwrap()).unwrap();
        let shared = Shared::new("/w/", members, Duration::from_secs(5));
        shared.applied().revision = 10;
        // This replica wrote ns/a at 12 and ns/a again at 14.
        shared.applied().own.insert("/w/ns/a".into(), 14);
        assert_eq!(Shared::known(&shared.applied(), "/w/ns/a"), 14);
        assert_eq!(Shared::known(&shared.applied(), "/w/ns/b"), 10);
        let ns = |id: &str| {
            format!(
                r#"{{"id":"{id}","name":"n","httpName":"n","type":"HTTP","createDate":0,"updateDate":0,"owner":"Api"}}"#
            )
        };
        let events = vec![
            // Its own older write comes back: skipped (the index has 14).
            ("/w/ns/a".to_string(), 12, Some(ns("a").into_bytes())),
            // Someone else's: applied.
            ("/w/ns/b".to_string(), 13, None),
        ];
        let changes = shared.accept(&events, 13);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(&changes[0], Change::DeleteNamespace(id) if id == "b"));
        assert_eq!(shared.applied().revision, 13);
        assert!(shared.applied().own.contains_key("/w/ns/a"), "still newer");
        // Once the watch passes 14 the own write is history.
        shared.accept(&[], 15);
        assert!(shared.applied().own.is_empty());
        assert_eq!(Shared::known(&shared.applied(), "/w/ns/a"), 15);
    }
}
