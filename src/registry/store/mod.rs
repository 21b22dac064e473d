//! Durable storage behind the registry.
//!
//! The registry keeps everything it serves in memory; a [`Store`] only has to
//! persist changes atomically and durably and hand them back at start-up. The
//! embedded [`RedbStore`] (`redb.rs`) is the default; [`EtcdStore`]
//! (`etcd.rs`) shares one registry between replicas and clusters.
//!
//! A shared store has other writers. It turns each commit into a conditional
//! write — applied only if nothing the plan read has changed since — and
//! reports [`StoreError::Conflict`] otherwise, so the registry plans again
//! on a fresher index. It delivers the other writers' changes to a
//! [`Follower`] (the registry), and says in [`Store::status`] whether what
//! this replica serves is known to be current.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use super::model::{Instance, Namespace, Operation, Service};

mod copy;
mod etcd;
mod redb;

pub use self::copy::{CopyReport, copy};
pub use self::etcd::{EtcdConfig, EtcdStore, EtcdTls};
pub use self::redb::{DB_FILE, LOCK_FILE, RedbStore};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be prepared or read.
    #[error("data directory {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error(
        "data directory {path} is in use by another waymark process{}; stop it or choose another --data-dir",
        holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The pid recorded by the holder, if readable.
        holder: Option<String>,
    },
    /// The directory holds something that is not a Waymark registry.
    #[error("{path} is not a waymark data directory: {reason}; nothing was changed")]
    Foreign {
        /// The offending path.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The database file is damaged.
    #[error("registry database {path} is corrupt or unreadable: {reason}; nothing was changed")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the database engine reported.
        reason: String,
    },
    /// The embedded database failed.
    #[error("registry database error: {0}")]
    Database(#[from] ::redb::Error),
    /// A stored record could not be decoded.
    #[error("stored {table} record {key:?} cannot be decoded: {source}")]
    Decode {
        /// Table name.
        table: &'static str,
        /// Record key.
        key: String,
        /// Decoder error.
        source: serde_json::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(#[source] serde_json::Error),
    /// Another writer changed what the write was planned on; nothing was
    /// written. The registry plans again once it has seen `revision`.
    #[error(
        "a concurrent write on another replica changed the records this write depends on (store revision {revision})"
    )]
    Conflict {
        /// The store's revision when the write was refused.
        revision: i64,
    },
    /// The store cannot take writes now (no quorum, unreachable, timed out).
    /// Retryable: a write that timed out may still have been applied, and
    /// then reaches this replica through its watch.
    #[error("the registry store is unavailable: {0}")]
    Unavailable(String),
    /// The shared store refused the request or its configuration.
    #[error("the registry store refused the request: {0}")]
    Refused(String),
}

impl StoreError {
    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::Unavailable(_))
    }
}

/// Result alias for storage operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// One change to persist. A batch of changes is applied atomically.
#[derive(Debug, Clone)]
pub enum Change {
    /// Insert or replace a namespace.
    PutNamespace(Namespace),
    /// Remove a namespace by id.
    DeleteNamespace(String),
    /// Insert or replace a service.
    PutService(Service),
    /// Remove a service by id.
    DeleteService(String),
    /// Insert or replace an instance.
    PutInstance(Instance),
    /// Remove an instance.
    DeleteInstance {
        /// Its service.
        service_id: String,
        /// Its id.
        instance_id: String,
    },
    /// Insert or replace an operation record.
    PutOperation(Operation),
    /// Remove an operation record (retention).
    DeleteOperation(String),
    /// Set a service's `InstancesRevision` to what a shared store assigned
    /// (see [`Committed::revisions`]). Only ever applied to the index: it
    /// comes from the store, after a commit or from its watch, and is never
    /// committed to one.
    SetServiceRevision {
        /// The service.
        service_id: String,
        /// Its revision.
        revision: u64,
    },
}

impl Change {
    /// Whether this change creates or removes a namespace or service, given
    /// whether the record existed: such changes are serialised against each
    /// other on shared stores (a namespace is only deleted empty, a name is
    /// only taken once).
    pub fn is_structural(&self, existed: bool) -> bool {
        match self {
            Self::PutNamespace(_) | Self::PutService(_) => !existed,
            Self::DeleteNamespace(_) | Self::DeleteService(_) => true,
            _ => false,
        }
    }
}

/// One atomic write: the changes, and for each whether its record existed in
/// the index the write was planned on (shared stores check that it still
/// does, unchanged).
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The changes, in order.
    pub changes: &'a [Change],
    /// `existed[i]`: the record `changes[i]` writes was in the index.
    pub existed: &'a [bool],
    /// The services whose `InstancesRevision` the write grows (their
    /// instance set changed): each has a [`Change::PutService`] in
    /// `changes`.
    pub bumps: &'a [Bump<'a>],
}

/// A service whose `InstancesRevision` a commit grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bump<'a> {
    /// The service.
    pub service_id: &'a str,
    /// Its revision in the index the write was planned on.
    pub previous: u64,
    /// Whether its record changes only in its revision (so a shared store
    /// need not rewrite the record itself).
    pub record_unchanged: bool,
}

/// What a store did with a commit beyond persisting it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The `InstancesRevision` a shared store assigned to each bumped
    /// service, which replaces the one the registry planned: on etcd it is
    /// derived from the transaction's revision, so concurrent writers on
    /// several replicas need not serialise on the service record to keep it
    /// strictly increasing. Empty for local stores (the planned revisions
    /// stand).
    pub revisions: Vec<(String, u64)>,
    /// `Some(revision)`: the write is durable at that store revision, but
    /// the index must take it from the store's watch (after everything
    /// before it) rather than apply it now — another replica changed what
    /// it touches since this one last looked. The writer waits with
    /// [`Store::catch_up`] before acknowledging, so it still reads its own
    /// write.
    pub pending: Option<i64>,
}

/// Everything a store holds, as loaded at start-up.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// All namespaces.
    pub namespaces: Vec<Namespace>,
    /// All services.
    pub services: Vec<Service>,
    /// All instances.
    pub instances: Vec<Instance>,
    /// All retained operation records.
    pub operations: Vec<Operation>,
    /// The store revision the snapshot was read at (0 for local stores).
    pub revision: i64,
}

/// Whether what a replica serves is known to be current.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStatus {
    /// Why the replica may be serving stale data (store unreachable, watch
    /// broken or lagging); `None` when it is current. Local stores are
    /// always current.
    pub stale: Option<String>,
    /// The store revision this replica has applied (0 for local stores).
    pub revision: i64,
    /// Writes refused because another writer got there first (each one is
    /// planned again).
    pub conflicts: u64,
    /// Committed writes the replica took through its watch rather than at
    /// once ([`Committed::pending`]).
    pub through_watch: u64,
    /// Times the replica re-read the whole store (a watch lost to
    /// compaction, or broken for too long).
    pub relists: u64,
    /// Seconds since the replica last confirmed it is current.
    pub lag_seconds: f64,
}

/// Receives the changes other writers commit to a shared store.
pub trait Follower: Send + Sync {
    /// Runs `accept` while no write of this replica is in progress and
    /// applies the changes it returns, all at once for readers.
    fn apply_remote(&self, accept: &mut dyn FnMut() -> Vec<Change>);
    /// Replaces everything with the snapshot `accept` returns (after a
    /// re-list), at once for readers.
    fn replace_all(&self, accept: &mut dyn FnMut() -> Snapshot);
}

/// Durable storage for the registry.
pub trait Store: Send + Sync {
    /// Reads everything back.
    fn load(&self) -> StoreResult<Snapshot>;
    /// Persists a batch atomically; once this returns `Ok` the changes survive
    /// a crash of the process or the machine (or of a store member).
    fn commit(&self, commit: Commit<'_>) -> StoreResult<Committed>;
    /// Starts delivering other writers' changes to `follower`, from the
    /// revision [`Store::load`] read on. Local stores have no other writers.
    fn follow(&self, _follower: Weak<dyn Follower>) -> StoreResult<()> {
        Ok(())
    }
    /// After a [`StoreError::Conflict`]: waits until this replica has applied
    /// the store up to `revision`.
    fn catch_up(&self, _revision: i64, _timeout: Duration) -> StoreResult<()> {
        Ok(())
    }
    /// Shared stores: waits until this replica has applied everything the
    /// store holds now (a linearizable read of its revision, then
    /// [`Store::catch_up`]) and returns true; local stores return false.
    /// A write whose target is missing from the index asks this before it
    /// answers "not found", so a write sent to one replica right after
    /// another replica acknowledged the target still finds it.
    fn catch_up_latest(&self, _timeout: Duration) -> StoreResult<bool> {
        Ok(false)
    }
    /// The most changes one commit may carry, when the store limits it.
    fn max_changes(&self) -> Option<usize> {
        None
    }
    /// Whether other processes write the same registry (other replicas,
    /// other clusters' controllers), so one of them may do a job for all.
    fn is_shared(&self) -> bool {
        false
    }
    /// Whether this replica is current.
    fn status(&self) -> StoreStatus {
        StoreStatus::default()
    }
    /// Where the data lives, for logs.
    fn describe(&self) -> String;
}

/// A store that keeps nothing (for unit tests of pure logic and for
/// `--data-dir`-less experiments). Writes are acknowledged and forgotten.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> StoreResult<Snapshot> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _commit: Commit<'_>) -> StoreResult<Committed> {
        Ok(Committed::default())
    }

    fn describe(&self) -> String {
        "memory (nothing persisted)".into()
    }
}
