//! The registry: Cloud Map's domain model and rules, an in-memory index that
//! answers every read, and a durable [`Store`] behind one serialised write path.
//!
//! Nothing here knows about Kubernetes, HTTP or DNS. The API, the DNS server
//! and the controller are thin layers over [`Registry`].
//!
//! Where things live:
//! - `model`, `attributes`, `ids`, `validate`: the domain types, identifiers
//!   and every Cloud Map rule and limit (pure).
//! - `commands`: the write requests and what they report back.
//! - `write/`: one file per resource; each write plans its [`Change`]s against
//!   the index and hands them to [`Registry::write`], the one write path.
//! - `operations`: operation records and idempotent replays.
//! - `read`: the read side — the [`Index`] guard, commit notifications, tags.
//! - `index`: the in-memory [`Index`], a plain data structure with its own tests.
//! - `store/`: the [`Store`] trait and its implementations (`store/redb.rs`).

pub mod attributes;
mod batch;
mod commands;
pub mod ids;
pub mod index;
pub mod model;
mod operations;
mod read;
pub mod store;
pub mod validate;
mod write;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use attributes::StrMap;
pub use commands::{
    CreateNamespace, CreateService, DesiredInstance, HealthFlip, PartialSync, ProbeVerdict,
    RegisterInstance, SyncOutcome, UpdateNamespace, UpdateService, WriteOutcome,
};
pub use ids::ArnScope;
pub use index::{Index, ServiceEntry};
use model::EpochMillis;
pub use store::{
    Change, Commit, EtcdConfig, EtcdStore, EtcdTls, Follower, MemoryStore, RedbStore, Snapshot,
    Store, StoreError, StoreStatus,
};
use validate::MAX_INSTANCES_PER_SERVICE;

/// Where a committed write went.
enum Applied {
    /// Into the index, which then had this version.
    Now(u64),
    /// To the store only: its watch applies it, as of this store revision.
    Later(i64),
}

/// Errors of registry operations. Each variant maps onto one Cloud Map error
/// type (see [`Error::aws_type`]) so the API layer stays a thin translation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request value breaks a Cloud Map rule.
    #[error("{0}")]
    InvalidInput(String),
    /// No namespace with that id or name.
    #[error("Namespace not found: {0}")]
    NamespaceNotFound(String),
    /// No service with that id or name.
    #[error("Service not found: {0}")]
    ServiceNotFound(String),
    /// No instance with that id in the service.
    #[error("Instance not found: {instance_id} in service {service_id}")]
    InstanceNotFound {
        /// The service searched.
        service_id: String,
        /// The missing instance.
        instance_id: String,
    },
    /// No operation with that id.
    #[error("Operation not found: {0}")]
    OperationNotFound(String),
    /// A tagging call named an unknown resource.
    #[error("Resource not found: {0}")]
    ResourceNotFound(String),
    /// A namespace with that name exists.
    #[error("Namespace already exists: {name} ({namespace_id})")]
    NamespaceAlreadyExists {
        /// The conflicting name.
        name: String,
        /// The existing namespace's id.
        namespace_id: String,
        /// The creator request id of the existing namespace.
        creator_request_id: Option<String>,
    },
    /// A service with that name exists in the namespace.
    #[error("Service already exists: {name} ({service_id})")]
    ServiceAlreadyExists {
        /// The conflicting name.
        name: String,
        /// The existing service's id.
        service_id: String,
        /// The existing service's ARN.
        service_arn: String,
        /// The creator request id of the existing service.
        creator_request_id: Option<String>,
    },
    /// The resource still has children, or is managed by someone else.
    #[error("{0}")]
    ResourceInUse(String),
    /// A per-resource quota would be exceeded.
    #[error("{0}")]
    ResourceLimitExceeded(String),
    /// More than 30 service attributes.
    #[error("{0}")]
    ServiceAttributesLimitExceeded(String),
    /// More than 50 tags.
    #[error("Too many tags on {resource}: at most {max} are allowed")]
    TooManyTags {
        /// The resource ARN.
        resource: String,
        /// The limit.
        max: usize,
    },
    /// `UpdateInstanceCustomHealthStatus` on a service without custom health.
    #[error("Service {0} has no HealthCheckCustomConfig")]
    CustomHealthNotFound(String),
    /// The resource is managed by another owner (the controller or the API).
    #[error("{resource} is managed by {owner} and cannot be changed through {actor}")]
    OwnedElsewhere {
        /// What was to be changed.
        resource: String,
        /// Who manages it.
        owner: String,
        /// Who tried.
        actor: String,
    },
    /// The store failed; the write was not applied.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Whether the error says a resource the request names does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::NamespaceNotFound(_)
                | Self::ServiceNotFound(_)
                | Self::InstanceNotFound { .. }
                | Self::ResourceNotFound(_)
        )
    }

    /// The Cloud Map `__type` for this error.
    pub fn aws_type(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "InvalidInput",
            Self::NamespaceNotFound(_) => "NamespaceNotFound",
            Self::ServiceNotFound(_) => "ServiceNotFound",
            Self::InstanceNotFound { .. } => "InstanceNotFound",
            Self::OperationNotFound(_) => "OperationNotFound",
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::NamespaceAlreadyExists { .. } => "NamespaceAlreadyExists",
            Self::ServiceAlreadyExists { .. } => "ServiceAlreadyExists",
            Self::ResourceInUse(_) | Self::OwnedElsewhere { .. } => "ResourceInUse",
            Self::ResourceLimitExceeded(_) => "ResourceLimitExceeded",
            Self::ServiceAttributesLimitExceeded(_) => "ServiceAttributesLimitExceededException",
            Self::TooManyTags { .. } => "TooManyTagsException",
            Self::CustomHealthNotFound(_) => "CustomHealthNotFound",
            Self::Store(e) if e.is_retryable() => "ServiceUnavailable",
            Self::Store(_) => "InternalFailure",
        }
    }
}

/// Counters of the group commit (see [`Registry::write_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Store commits made (each one fsync, or one etcd transaction).
    pub commits: u64,
    /// Writes those commits carried (`writes / commits` is the batch size).
    pub writes: u64,
    /// Writes planned again because what they read changed before they were
    /// committed.
    pub replanned: u64,
}

/// Result alias for registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Registry-wide settings.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Region and account reported in ARNs.
    pub scope: ArnScope,
    /// How many operation records to keep; the oldest are dropped first.
    pub operation_retention: usize,
    /// Maximum instances per service (Cloud Map's fixed quota is 1,000).
    pub max_instances_per_service: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            scope: ArnScope::default(),
            operation_retention: 10_000,
            max_instances_per_service: MAX_INSTANCES_PER_SERVICE,
        }
    }
}

/// The current time in epoch milliseconds.
pub fn now_millis() -> EpochMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as EpochMillis)
}

/// The registry: one write path, many readers.
pub struct Registry {
    config: RegistryConfig,
    index: RwLock<Index>,
    // Group commit (`batch.rs`): writes are planned concurrently on the
    // committed index, then committed in batches, each checked against
    // what was written since it was planned; readers only ever wait for
    // the brief index update.
    pipeline: batch::Pipeline,
    store: Box<dyn Store>,
    // Counts commits; subscribers (the prober, caches) wake on each.
    generation: tokio::sync::watch::Sender<u64>,
    // Told how long each store commit took (telemetry's histogram): the
    // registry itself stays free of metrics.
    commit_observer: std::sync::OnceLock<CommitObserver>,
}

type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens a registry over a store, loading everything it holds.
    pub fn open(store: Box<dyn Store>, config: RegistryConfig) -> Result<Self> {
        let snapshot = store.load()?;
        Ok(Self {
            config,
            index: RwLock::new(Index::from_snapshot(snapshot)),
            pipeline: batch::Pipeline::default(),
            store,
            generation: tokio::sync::watch::Sender::new(0),
            commit_observer: std::sync::OnceLock::new(),
        })
    }

    /// A registry that persists nothing (for unit tests).
    pub fn in_memory() -> Self {
        Self::open(Box::new(MemoryStore), RegistryConfig::default())
            .expect("the memory store cannot fail")
    }

    /// Calls `observe` with the duration of every store commit (one batch
    /// of writes made durable). Only the first observer set is kept.
    pub fn observe_commits(&self, observe: impl Fn(Duration) + Send + Sync + 'static) {
        let _ = self.commit_observer.set(Box::new(observe));
    }

    /// Settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The one write path. `plan` sees the committed index, pushes the
    /// [`Change`]s the write consists of and returns what the caller
    /// reports; the changes are persisted in one atomic store commit (with
    /// whatever other writes arrived meanwhile, `batch.rs`) and only then
    /// applied to the index. A plan that fails, or pushes nothing, changes
    /// nothing.
    ///
    /// A plan whose reads another write changed before it was committed —
    /// one of the same batch, or another replica's on a shared store — runs
    /// again on the fresher index (so `plan` is `FnMut`).
    fn write<T>(&self, plan: impl FnMut(&Index, &mut Vec<Change>) -> Result<T>) -> Result<T> {
        self.write_reading(&[], plan)
    }

    /// [`Registry::write`] for a plan that reads more than its changes
    /// imply (`reads`), e.g. every instance of a service.
    fn write_reading<T>(
        &self,
        reads: &[batch::Key],
        mut plan: impl FnMut(&Index, &mut Vec<Change>) -> Result<T>,
    ) -> Result<T> {
        let deadline = std::time::Instant::now() + CONFLICT_BUDGET;
        let mut attempt: u32 = 0;
        let mut caught_up = false;
        let mut again = false;
        loop {
            // The read guard must be gone before anything below waits: the
            // follower needs the index to apply what this write waits for.
            let planned = {
                let index = self.read();
                let mut changes = Vec::new();
                plan(&index, &mut changes)
                    .map(|out| (out, batch::Submission::new(&index, changes, reads)))
            };
            let (out, submission) = match planned {
                Ok(planned) => planned,
                // Not here may mean not here yet: on a shared store, look
                // again once this replica holds everything the store does.
                Err(e) if e.is_not_found() && !caught_up => {
                    caught_up = true;
                    if self.store.catch_up_latest(CATCH_UP_TIMEOUT)? {
                        self.settle();
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            if submission.is_empty() {
                return Ok(out);
            }
            let verdict = self
                .pipeline
                .submit(submission, again, self.max_changes(), |b| self.lead(b));
            again = true;
            match verdict {
                batch::Verdict::Committed => return Ok(out),
                batch::Verdict::Failed(e) => return Err(e),
                batch::Verdict::Retry(refused) if std::time::Instant::now() >= deadline => {
                    return Err(StoreError::Conflict {
                        revision: refused.unwrap_or_default(),
                    }
                    .into());
                }
                batch::Verdict::Retry(None) => {}
                batch::Verdict::Retry(Some(revision)) => {
                    attempt += 1;
                    self.store.catch_up(revision, CATCH_UP_TIMEOUT)?;
                    self.settle();
                    // Writers on several replicas racing for one record
                    // (a busy service's revision): a random pause that grows
                    // with each lost race lets one of them through.
                    if attempt > 2 {
                        let cap = 1u64 << attempt.min(6);
                        std::thread::sleep(Duration::from_millis(rand::random_range(0..cap)));
                    }
                }
            }
        }
    }

    /// Waits for a remote batch being applied to be in the index. The store
    /// counts a watched revision as applied as it hands the changes over,
    /// under the history lock, before the index has them; the lock is held
    /// until it does.
    fn settle(&self) {
        drop(self.pipeline.history());
    }

    /// Commits one batch of submissions (`batch.rs`): the valid ones in one
    /// store commit, the rest sent back to be planned again. When a shared
    /// store refuses the commit (another replica wrote first), the batch is
    /// merged again once this replica has that write: only members whose
    /// reads it changed are planned again (revision bumps commute), so a
    /// busy service's writers on several replicas do not all start over.
    fn lead(&self, members: Vec<(u64, batch::Submission)>) -> Vec<(u64, batch::Verdict)> {
        let mut verdicts: Vec<(u64, batch::Verdict)> = Vec::with_capacity(members.len());
        let mut members = members;
        let mut attempt: u32 = 0;
        loop {
            let mut history = self.pipeline.history();
            let merged = batch::merge(
                &history,
                &self.read(),
                &members,
                self.config.max_instances_per_service,
            );
            let stats = &self.pipeline.stats;
            stats
                .replanned
                .fetch_add(merged.deferred.len() as u64, Relaxed);
            verdicts.extend(
                merged
                    .deferred
                    .iter()
                    .map(|&t| (t, batch::Verdict::Retry(None))),
            );
            if merged.accepted.is_empty() {
                return verdicts;
            }
            let result = self.commit(merged.changes);
            let accepted = merged.accepted;
            match result {
                Ok(applied) => {
                    match applied {
                        Applied::Now(version) => history.record(version, merged.written),
                        Applied::Later(revision) => {
                            // The watch applies it (and records it in the
                            // history), which needs the history lock.
                            drop(history);
                            if let Err(e) = self.store.catch_up(revision, CATCH_UP_TIMEOUT) {
                                tracing::warn!(error = %e, "a committed write is not visible on this replica yet");
                            }
                            self.settle();
                        }
                    }
                    stats.commits.fetch_add(1, Relaxed);
                    stats.writes.fetch_add(accepted.len() as u64, Relaxed);
                    verdicts.extend(accepted.into_iter().map(|t| (t, batch::Verdict::Committed)));
                    return verdicts;
                }
                Err(Error::Store(StoreError::Conflict { revision })) => {
                    drop(history);
                    attempt += 1;
                    let caught_up = attempt <= LEADER_RETRIES
                        && self.store.catch_up(revision, CATCH_UP_TIMEOUT).is_ok();
                    if !caught_up {
                        verdicts.extend(
                            accepted
                                .into_iter()
                                .map(|t| (t, batch::Verdict::Retry(Some(revision)))),
                        );
                        return verdicts;
                    }
                    // Replicas racing for the same records: a short random
                    // pause that grows with each lost race lets one through.
                    if attempt > 1 {
                        let cap = 1u64 << attempt.min(5);
                        std::thread::sleep(Duration::from_micros(rand::random_range(0..cap * 250)));
                    }
                    members.retain(|(t, _)| accepted.contains(t));
                }
                Err(e) => {
                    let message = e.to_string();
                    let retryable = matches!(&e, Error::Store(s) if s.is_retryable());
                    verdicts.extend(accepted.into_iter().map(|t| {
                        // Every member gets the same error (errors are not Clone).
                        let store = if retryable {
                            StoreError::Unavailable(message.clone())
                        } else {
                            StoreError::Refused(message.clone())
                        };
                        (t, batch::Verdict::Failed(store.into()))
                    }));
                    return verdicts;
                }
            }
        }
    }

    /// Persists `changes` and then makes them visible to readers: at once
    /// (the index version they made), or through the store's watch.
    fn commit(&self, changes: Vec<Change>) -> Result<Applied> {
        if changes.is_empty() {
            return Ok(Applied::Now(self.read().version()));
        }
        let index = self.read();
        let existed: Vec<bool> = changes.iter().map(|c| index.holds(c)).collect();
        // The services whose revision this write grows, with what the index had.
        let bumps: Vec<store::Bump<'_>> = changes
            .iter()
            .filter_map(|c| {
                let Change::PutService(svc) = c else {
                    return None;
                };
                let old = &index.service(&svc.id)?.service;
                (svc.revision != old.revision).then(|| {
                    let mut settings = svc.clone();
                    settings.revision = old.revision;
                    store::Bump {
                        service_id: &svc.id,
                        previous: old.revision,
                        record_unchanged: settings == *old,
                    }
                })
            })
            .collect();
        drop(index);
        let started = std::time::Instant::now();
        let committed = self.store.commit(Commit {
            changes: &changes,
            existed: &existed,
            bumps: &bumps,
        });
        if let Some(observe) = self.commit_observer.get() {
            observe(started.elapsed());
        }
        let committed = committed?;
        drop(bumps);
        if let Some(revision) = committed.pending {
            return Ok(Applied::Later(revision));
        }
        let mut changes = changes;
        // The store's revisions replace the planned ones (after them).
        changes.extend(
            committed
                .revisions
                .into_iter()
                .map(|(service_id, revision)| Change::SetServiceRevision {
                    service_id,
                    revision,
                }),
        );
        Ok(Applied::Now(self.apply(changes)))
    }

    /// Applies changes to the index as one batch and wakes subscribers;
    /// returns the index version they made.
    fn apply(&self, changes: Vec<Change>) -> u64 {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            index.apply(c);
        }
        let version = index.advance();
        drop(index);
        self.generation.send_modify(|g| *g += 1);
        version
    }

    /// The most changes one commit may carry (the store's limit).
    fn max_changes(&self) -> usize {
        self.store.max_changes().unwrap_or(usize::MAX)
    }

    /// Starts following the store's other writers (shared stores; a no-op
    /// for the embedded one). Call once, after [`Registry::open`].
    pub fn follow(self: &Arc<Self>) -> Result<()> {
        let follower: Arc<dyn Follower> = Arc::<Self>::clone(self);
        self.store.follow(Arc::downgrade(&follower))?;
        Ok(())
    }

    /// Whether other processes write this registry too (a shared store): then
    /// one controller leader among them reconciles for all its replicas.
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Whether what this replica serves is known to be current.
    pub fn store_status(&self) -> StoreStatus {
        self.store.status()
    }

    /// What the group commit did: store commits made, writes they
    /// carried, and writes planned again.
    pub fn write_stats(&self) -> WriteStats {
        let s = &self.pipeline.stats;
        WriteStats {
            commits: s.commits.load(Relaxed),
            writes: s.writes.load(Relaxed),
            replanned: s.replanned.load(Relaxed),
        }
    }

    /// Where the registry's data lives, for logs.
    pub fn store_description(&self) -> String {
        self.store.describe()
    }
}

/// How long a write keeps being planned again after conflicting with other
/// replicas' writes before it fails (retryably).
const CONFLICT_BUDGET: Duration = Duration::from_secs(10);
/// How often a batch leader merges a batch again after a shared store
/// refused it, before handing its members back to be planned again.
const LEADER_RETRIES: u32 = 8;
/// How long a conflicting write waits for this replica to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(5);

impl Follower for Registry {
    fn apply_remote(&self, accept: &mut dyn FnMut() -> Vec<Change>) {
        let mut history = self.pipeline.history();
        let changes = accept();
        if changes.is_empty() {
            return;
        }
        let written = batch::written_by(&self.read(), &changes);
        let version = self.apply(changes);
        history.record(version, written);
    }

    fn replace_all(&self, accept: &mut dyn FnMut() -> Snapshot) {
        let mut history = self.pipeline.history();
        // Built before taking the index lock: readers keep the old index
        // until the new one is complete, never a half-loaded one.
        let mut fresh = Index::from_snapshot(accept());
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        fresh.continue_from(&index);
        let version = fresh.version();
        *index = fresh;
        drop(index);
        history.record(version, batch::Written::Everything);
        self.generation.send_modify(|g| *g += 1);
    }
}

#[cfg(test)]
pub(crate) mod tests;
