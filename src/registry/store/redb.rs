//! The embedded store: one redb file in the data directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Change, Commit, Committed, Snapshot, Store, StoreError, StoreResult};
use crate::registry::model::Service;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
const SERVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("services");
const INSTANCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("instances");
const OPERATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("operations");

/// The marker identifying a Waymark registry database.
const FORMAT: &str = "waymark-registry";
/// The on-disk schema version this build reads and writes.
const SCHEMA_VERSION: &str = "1";
/// The database file inside the data directory.
pub const DB_FILE: &str = "registry.redb";
/// redb's page cache size. The in-memory index answers every read and the
/// file is read once at start-up, so the cache only serves the write path's
/// B-tree pages; at 16 MiB it was a fixed cost larger than the controller's
/// whole per-pod state at 10,000 pods.
const CACHE_BYTES: usize = 1 << 20;
/// The lock file that keeps two processes off one data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The embedded ACID store: one redb file in the data directory, every commit
/// fsynced before it is acknowledged.
pub struct RedbStore {
    db: Database,
    // Held for the lifetime of the store: the OS releases the lock when the
    // process exits, even on SIGKILL, so a crash never leaves a stale lock.
    _lock: File,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RedbStore {
    /// Opens (or initialises) the registry in `dir`.
    ///
    /// Refuses — without changing anything — a directory that holds other
    /// files but no registry, a database not written by Waymark, a damaged
    /// database, and a directory another process is using.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        if dir.exists() && !dir.is_dir() {
            return Err(StoreError::Foreign {
                path: dir.to_path_buf(),
                reason: "it is not a directory".into(),
            });
        }
        let db_path = dir.join(DB_FILE);
        if dir.is_dir() && !db_path.exists() {
            let foreign: Vec<String> = fs::read_dir(dir)
                .map_err(io_err(dir))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name != LOCK_FILE)
                .collect();
            if !foreign.is_empty() {
                return Err(StoreError::Foreign {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "it already contains other files ({}) but no {DB_FILE}",
                        foreign.join(", ")
                    ),
                });
            }
        }
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = Self::lock(dir)?;

        let existed = db_path.exists();
        let corrupt = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: dir.to_path_buf(),
                holder: None,
            },
            other => StoreError::Corrupt {
                path: db_path.clone(),
                reason: other.to_string(),
            },
        };
        // Every read is answered by the in-memory index; redb is read once at
        // start-up, so a large page cache would only duplicate the index.
        let mut builder = Database::builder();
        builder.set_cache_size(CACHE_BYTES);
        let db = if existed {
            builder.open(&db_path).map_err(corrupt)?
        } else {
            builder.create(&db_path).map_err(corrupt)?
        };
        let store = Self {
            db,
            _lock: lock,
            path: db_path,
        };
        store.check_or_init_meta(existed)?;
        Ok(store)
    }

    /// Takes the directory lock and records our pid in it for error messages.
    fn lock(dir: &Path) -> StoreResult<File> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(StoreError::InUse {
                    path: dir.to_path_buf(),
                    holder: (!holder.is_empty()).then_some(holder),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        Ok(file)
    }

    fn check_or_init_meta(&self, existed: bool) -> StoreResult<()> {
        let foreign = |reason: String| StoreError::Foreign {
            path: self.path.clone(),
            reason,
        };
        if existed {
            let read = self.db.begin_read().map_err(redb::Error::from)?;
            let meta = match read.open_table(META) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => {
                    return Err(foreign("the database has no waymark metadata".into()));
                }
                Err(e) => return Err(redb::Error::from(e).into()),
            };
            let format = meta.get("format").map_err(redb::Error::from)?;
            match format.as_ref().map(|v| v.value()) {
                Some(FORMAT) => {}
                other => {
                    return Err(foreign(format!(
                        "the database format is {other:?}, expected {FORMAT:?}"
                    )));
                }
            }
            let version = meta.get("schema").map_err(redb::Error::from)?;
            match version.as_ref().map(|v| v.value()) {
                Some(SCHEMA_VERSION) => Ok(()),
                other => Err(foreign(format!(
                    "schema version {other:?} is not supported by this build (expects {SCHEMA_VERSION})"
                ))),
            }
        } else {
            let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
            txn.set_durability(Durability::Immediate)
                .map_err(redb::Error::from)?;
            {
                let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
                meta.insert("format", FORMAT).map_err(redb::Error::from)?;
                meta.insert("schema", SCHEMA_VERSION)
                    .map_err(redb::Error::from)?;
                // Create the data tables up front so readers never race their creation.
                txn.open_table(NAMESPACES).map_err(redb::Error::from)?;
                txn.open_table(SERVICES).map_err(redb::Error::from)?;
                txn.open_table(INSTANCES).map_err(redb::Error::from)?;
                txn.open_table(OPERATIONS).map_err(redb::Error::from)?;
            }
            txn.commit().map_err(redb::Error::from)?;
            Ok(())
        }
    }

    /// The database file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    table: &'static str,
    key: impl Into<String>,
    bytes: &[u8],
) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
        table,
        key: key.into(),
        source,
    })
}

fn encode<T: serde::Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(StoreError::Encode)
}

impl Store for RedbStore {
    fn load(&self) -> StoreResult<Snapshot> {
        let read = self.db.begin_read().map_err(redb::Error::from)?;
        let mut snap = Snapshot::default();
        let ns = read.open_table(NAMESPACES).map_err(redb::Error::from)?;
        for row in ns.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            snap.namespaces
                .push(decode("namespaces", k.value(), v.value())?);
        }
        let svc = read.open_table(SERVICES).map_err(redb::Error::from)?;
        for row in svc.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            snap.services
                .push(decode("services", k.value(), v.value())?);
        }
        let inst = read.open_table(INSTANCES).map_err(redb::Error::from)?;
        for row in inst.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            let (s, i) = k.value();
            snap.instances
                .push(decode("instances", format!("{s}/{i}"), v.value())?);
        }
        let ops = read.open_table(OPERATIONS).map_err(redb::Error::from)?;
        for row in ops.iter().map_err(redb::Error::from)? {
            let (k, v) = row.map_err(redb::Error::from)?;
            snap.operations
                .push(decode("operations", k.value(), v.value())?);
        }
        Ok(snap)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn commit(&self, commit: Commit<'_>) -> StoreResult<Committed> {
        let changes = commit.changes;
        if changes.is_empty() {
            return Ok(Committed::default());
        }
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb::Error::from)?;
        {
            let mut ns = txn.open_table(NAMESPACES).map_err(redb::Error::from)?;
            let mut svc = txn.open_table(SERVICES).map_err(redb::Error::from)?;
            let mut inst = txn.open_table(INSTANCES).map_err(redb::Error::from)?;
            let mut ops = txn.open_table(OPERATIONS).map_err(redb::Error::from)?;
            for change in changes {
                match change {
                    Change::PutNamespace(n) => {
                        ns.insert(n.id.as_str(), encode(n)?.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::DeleteNamespace(id) => {
                        ns.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Change::PutService(s) => {
                        svc.insert(s.id.as_str(), encode(s)?.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::DeleteService(id) => {
                        svc.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Change::PutInstance(i) => {
                        inst.insert((&*i.service_id, i.id.as_str()), encode(i)?.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::DeleteInstance {
                        service_id,
                        instance_id,
                    } => {
                        inst.remove((service_id.as_str(), instance_id.as_str()))
                            .map_err(redb::Error::from)?;
                    }
                    Change::PutOperation(o) => {
                        ops.insert(o.id.as_str(), encode(o)?.as_slice())
                            .map_err(redb::Error::from)?;
                    }
                    Change::DeleteOperation(id) => {
                        ops.remove(id.as_str()).map_err(redb::Error::from)?;
                    }
                    Change::SetServiceRevision {
                        service_id,
                        revision,
                    } => {
                        let stored = svc
                            .get(service_id.as_str())
                            .map_err(redb::Error::from)?
                            .map(|bytes| {
                                decode::<Service>("services", service_id.as_str(), bytes.value())
                            })
                            .transpose()?;
                        if let Some(mut record) = stored {
                            record.revision = *revision;
                            svc.insert(service_id.as_str(), encode(&record)?.as_slice())
                                .map_err(redb::Error::from)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(Committed::default())
    }
}
