//! Durable storage behind the registry.
//!
//! The registry keeps everything it serves in memory; a [`Store`] only has to
//! persist changes atomically and durably and hand them back at start-up. The
//! embedded [`RedbStore`] (`redb.rs`) is the default; another backend sits
//! beside it as a second implementation of the same trait.

use std::path::PathBuf;

use super::model::{Instance, Namespace, Operation, Service};

mod redb;

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
}

/// Durable storage for the registry.
pub trait Store: Send + Sync {
    /// Reads everything back.
    fn load(&self) -> StoreResult<Snapshot>;
    /// Persists a batch atomically; once this returns `Ok` the changes survive
    /// a crash of the process or the machine.
    fn commit(&self, changes: &[Change]) -> StoreResult<()>;
}

/// A store that keeps nothing (for unit tests of pure logic and for
/// `--data-dir`-less experiments). Writes are acknowledged and forgotten.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> StoreResult<Snapshot> {
        Ok(Snapshot::default())
    }

    fn commit(&self, _changes: &[Change]) -> StoreResult<()> {
        Ok(())
    }
}
