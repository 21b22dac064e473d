//! Group commit: writes that arrive while a commit is in flight travel
//! together in the next one, so a busy registry pays one fsync (embedded) or
//! one etcd round trip (shared) per batch instead of per write.
//!
//! Each caller plans its own write, concurrently with the others, against
//! the committed index under its read lock, so readers never see a change
//! before it is durable. The plan becomes a [`Submission`]: its changes, the
//! index version it was planned on, and what it read and writes (derived
//! from its changes, [`Submission::new`]). Submissions queue; one caller at a
//! time leads: it takes every queued submission and keeps those that are
//! still valid — nothing they read was written after they were planned, by
//! an earlier batch, another replica, or an earlier member of this batch
//! ([`merge`]) — and commits them as one. The others are planned again on
//! the fresher index, ahead of newer writes. The outcome is that of running
//! the accepted writes one after another in queue order.
//!
//! What makes busy services batch: the `InstancesRevision` bumps of one
//! service commute. A write that only bumps a service's revision (every
//! registration, deregistration and attribute change) does not count as
//! writing the service record; the batch writes the record once, with the
//! revision grown by every member's bump, on top of the committed record
//! (or of the one member that changed the record's settings).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::store::Change;
use super::{Error, Index};

/// What a write depends on or changes, at the grain conflicts are told by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// Which namespaces and services exist, and their names: creations and
    /// deletions read and write it, so they are serialised.
    Structure,
    /// A namespace record.
    Namespace(String),
    /// A service record apart from its `InstancesRevision`.
    Service(String),
    /// One instance.
    Instance(String, String),
    /// Which instances a service has (written by every instance change; read
    /// by plans that look at all of them: deleting a service, a full sync).
    Instances(String),
}

/// One planned write waiting to be committed.
#[derive(Debug)]
pub(super) struct Submission {
    /// The changes, without the service records whose revision is merged.
    changes: Vec<Change>,
    /// The index version the plan read.
    version: u64,
    reads: HashSet<Key>,
    writes: HashSet<Key>,
    /// Per service: how much the write grows its revision, and the record
    /// when the write also changes the service's settings.
    services: HashMap<String, ServiceWrite>,
    /// Per service: how many instances the write adds.
    added: HashMap<String, usize>,
}

#[derive(Debug, Default)]
struct ServiceWrite {
    bump: u64,
    record: Option<super::model::Service>,
}

impl Submission {
    /// Classifies a plan's changes against the index it was planned on.
    /// `reads` names what the plan read beyond what its changes imply.
    pub(super) fn new(index: &Index, changes: Vec<Change>, reads: &[Key]) -> Self {
        let mut sub = Self {
            changes: Vec::with_capacity(changes.len()),
            version: index.version(),
            reads: reads.iter().cloned().collect(),
            writes: HashSet::new(),
            services: HashMap::new(),
            added: HashMap::new(),
        };
        for change in changes {
            match &change {
                Change::PutNamespace(ns) => {
                    if index.namespace(&ns.id).is_none() {
                        sub.write(Key::Structure);
                    }
                    sub.write(Key::Namespace(ns.id.clone()));
                }
                Change::DeleteNamespace(id) => {
                    sub.write(Key::Structure);
                    sub.write(Key::Namespace(id.clone()));
                }
                Change::PutService(svc) => {
                    if let Some(old) = index.service(&svc.id) {
                        // Kept out of `changes`: the batch writes the record once.
                        let mut settings = svc.clone();
                        settings.revision = old.service.revision;
                        let entry = sub.services.entry(svc.id.clone()).or_default();
                        entry.bump = svc.revision.saturating_sub(old.service.revision);
                        let reads = Key::Service(svc.id.clone());
                        if settings == old.service {
                            entry.record = None;
                            sub.reads.insert(reads);
                        } else {
                            entry.record = Some(settings);
                            sub.write(reads);
                        }
                        continue;
                    }
                    sub.write(Key::Structure);
                    sub.reads.insert(Key::Namespace(svc.namespace_id.clone()));
                    sub.write(Key::Service(svc.id.clone()));
                }
                Change::DeleteService(id) => {
                    sub.write(Key::Structure);
                    sub.write(Key::Service(id.clone()));
                    sub.reads.insert(Key::Instances(id.clone()));
                    // A deleted service's record is not written again.
                    sub.services.remove(id);
                }
                Change::PutInstance(inst) => {
                    let service = inst.service_id.to_string();
                    if index.instance(&service, &inst.id).is_none() {
                        *sub.added.entry(service.clone()).or_default() += 1;
                    }
                    sub.instance(service, &inst.id);
                }
                Change::DeleteInstance {
                    service_id,
                    instance_id,
                } => sub.instance(service_id.clone(), instance_id),
                // Operation records have unique ids; retention trims them
                // again on the next write if a batch overshoots.
                Change::PutOperation(_)
                | Change::DeleteOperation(_)
                | Change::SetServiceRevision { .. } => {}
            }
            sub.changes.push(change);
        }
        sub
    }

    fn write(&mut self, key: Key) {
        self.reads.insert(key.clone());
        self.writes.insert(key);
    }

    fn instance(&mut self, service: String, id: &str) {
        self.write(Key::Instance(service.clone(), id.to_string()));
        self.writes.insert(Key::Instances(service.clone()));
        self.reads.insert(Key::Service(service));
    }

    /// Whether committing it would change nothing.
    pub(super) fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self
                .services
                .values()
                .all(|s| s.bump == 0 && s.record.is_none())
    }

    fn size(&self) -> usize {
        self.changes.len() + self.services.len()
    }
}

/// What the index took since recent versions, for telling stale plans.
#[derive(Debug, Default)]
pub(super) struct History {
    entries: VecDeque<(u64, Written)>,
}

/// What one batch (local or from another replica) wrote.
#[derive(Debug)]
pub(super) enum Written {
    /// These keys.
    Keys(HashSet<Key>),
    /// Everything (the index was reloaded).
    Everything,
}

/// Versions remembered; a plan older than that is planned again.
const HISTORY: usize = 256;

impl History {
    /// Records what the batch that made the index `version` wrote.
    pub(super) fn record(&mut self, version: u64, written: Written) {
        self.entries.push_back((version, written));
        while self.entries.len() > HISTORY {
            self.entries.pop_front();
        }
    }

    /// Whether something `sub` read was written after it was planned.
    fn stale(&self, sub: &Submission, current: u64) -> bool {
        if sub.version >= current {
            return false;
        }
        if self
            .entries
            .front()
            .is_none_or(|(v, _)| *v > sub.version + 1)
        {
            return true;
        }
        self.entries
            .iter()
            .rev()
            .take_while(|(v, _)| *v > sub.version)
            .any(|(_, w)| match w {
                Written::Everything => true,
                Written::Keys(keys) => !keys.is_disjoint(&sub.reads),
            })
    }
}

/// The keys a batch of changes from elsewhere (another replica) writes,
/// told against the index before it is applied: everything it touches,
/// except that a service record whose revision alone changed is not a
/// write of the record (revision bumps commute).
pub(super) fn written_by(index: &Index, changes: &[Change]) -> Written {
    let mut keys = HashSet::new();
    for c in changes {
        match c {
            Change::PutNamespace(ns) => {
                keys.insert(Key::Namespace(ns.id.clone()));
                keys.insert(Key::Structure);
            }
            Change::DeleteNamespace(id) => {
                keys.insert(Key::Namespace(id.clone()));
                keys.insert(Key::Structure);
            }
            Change::PutService(s) => {
                let bump_only = index.service(&s.id).is_some_and(|old| {
                    let mut settings = s.clone();
                    settings.revision = old.service.revision;
                    settings == old.service
                });
                if !bump_only {
                    keys.insert(Key::Service(s.id.clone()));
                    keys.insert(Key::Structure);
                }
            }
            Change::DeleteService(id) => {
                keys.insert(Key::Service(id.clone()));
                keys.insert(Key::Structure);
            }
            Change::PutInstance(i) => {
                keys.insert(Key::Instance(i.service_id.to_string(), i.id.clone()));
                keys.insert(Key::Instances(i.service_id.to_string()));
            }
            Change::DeleteInstance {
                service_id,
                instance_id,
            } => {
                keys.insert(Key::Instance(service_id.clone(), instance_id.clone()));
                keys.insert(Key::Instances(service_id.clone()));
            }
            // A revision alone: bumps commute (as above).
            Change::PutOperation(_)
            | Change::DeleteOperation(_)
            | Change::SetServiceRevision { .. } => {}
        }
    }
    Written::Keys(keys)
}

/// A batch sorted into what is committed and what is planned again.
#[derive(Debug)]
pub(super) struct Merged<T> {
    /// Members whose changes are in `changes`.
    pub accepted: Vec<T>,
    /// Members to plan again (stale, or in conflict with an earlier member).
    pub deferred: Vec<T>,
    /// The one commit.
    pub changes: Vec<Change>,
    /// What it writes, for the history.
    pub written: Written,
}

/// Sorts `batch` (in queue order) into one commit on top of `index`.
pub(super) fn merge<T: Copy>(
    history: &History,
    index: &Index,
    batch: &[(T, Submission)],
    max_instances: usize,
) -> Merged<T> {
    let current = index.version();
    let mut accepted = Vec::new();
    let mut deferred = Vec::new();
    let mut changes = Vec::new();
    let mut written: HashSet<Key> = HashSet::new();
    let mut added: HashMap<&str, usize> = HashMap::new();
    let mut services: HashMap<&str, ServiceWrite> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for (tag, sub) in batch {
        let conflict = history.stale(sub, current) || !sub.reads.is_disjoint(&written);
        let full = sub.added.iter().any(|(s, n)| {
            let held = index.service(s).map_or(0, |e| e.instances.len());
            held + added.get(s.as_str()).copied().unwrap_or(0) + n > max_instances
        });
        if conflict || full {
            deferred.push(*tag);
            continue;
        }
        for (s, n) in &sub.added {
            *added.entry(s).or_default() += n;
        }
        for (id, w) in &sub.services {
            let entry = services.entry(id).or_insert_with(|| {
                order.push(id);
                ServiceWrite::default()
            });
            entry.bump += w.bump;
            if w.record.is_some() {
                entry.record.clone_from(&w.record);
            }
        }
        written.extend(sub.writes.iter().cloned());
        // Cloned: a batch refused by a shared store is merged again.
        changes.extend(sub.changes.iter().cloned());
        accepted.push(*tag);
    }
    for id in order {
        let w = &services[id];
        // A member that deletes a service conflicts with every other write
        // to it, so a record to write belongs to a service that stays.
        let Some(current) = index.service(id) else {
            continue;
        };
        if w.bump == 0 && w.record.is_none() {
            continue;
        }
        let mut record = w.record.clone().unwrap_or_else(|| current.service.clone());
        record.revision = current.service.revision + w.bump;
        changes.push(Change::PutService(record));
    }
    Merged {
        accepted,
        deferred,
        changes,
        written: Written::Keys(written),
    }
}

/// What became of a submission.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Durable and visible.
    Committed,
    /// Plan again; after a refused shared-store commit, once this replica
    /// has seen the store's revision.
    Retry(Option<i64>),
    /// The commit failed.
    Failed(Error),
}

/// The queue of submissions and the history, shared by every writer.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    queue: Mutex<Queue>,
    turn: Condvar,
    history: Mutex<History>,
    /// What the group commit did, for the metrics.
    pub(super) stats: Stats,
}

/// Counters of the group commit.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Store commits made.
    pub commits: AtomicU64,
    /// Writes they carried.
    pub writes: AtomicU64,
    /// Writes planned again (stale, or in conflict within a batch).
    pub replanned: AtomicU64,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<(u64, Submission)>,
    verdicts: HashMap<u64, Verdict>,
    leading: bool,
    next: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pipeline {
    /// The history lock: held while a batch is validated, committed and
    /// applied, and while another replica's changes are applied.
    pub(super) fn history(&self) -> MutexGuard<'_, History> {
        lock(&self.history)
    }

    /// Queues `sub` and waits for its verdict, leading batches while no one
    /// else does. `lead` commits one batch and returns every member's
    /// verdict. A write planned again goes ahead of newer ones (`first`).
    pub(super) fn submit(
        &self,
        sub: Submission,
        first: bool,
        budget: usize,
        lead: impl Fn(Vec<(u64, Submission)>) -> Vec<(u64, Verdict)>,
    ) -> Verdict {
        let mut q = lock(&self.queue);
        let ticket = q.next;
        q.next += 1;
        if first {
            q.waiting.push_front((ticket, sub));
        } else {
            q.waiting.push_back((ticket, sub));
        }
        loop {
            if let Some(v) = q.verdicts.remove(&ticket) {
                return v;
            }
            if q.leading || q.waiting.is_empty() {
                q = self.turn.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            q.leading = true;
            let mut batch = Vec::new();
            let mut size = 0;
            while let Some((_, next)) = q.waiting.front() {
                if !batch.is_empty() && size + next.size() > budget {
                    break;
                }
                size += next.size();
                batch.extend(q.waiting.pop_front());
            }
            drop(q);
            let mut guard = Leading {
                pipeline: self,
                tickets: batch.iter().map(|(t, _)| *t).collect(),
                verdicts: Vec::new(),
            };
            guard.verdicts = lead(batch);
            drop(guard);
            q = lock(&self.queue);
        }
    }
}

/// Hands a led batch's verdicts over and lets the next leader in, also when
/// committing panicked (its members then fail instead of waiting forever).
struct Leading<'a> {
    pipeline: &'a Pipeline,
    tickets: Vec<u64>,
    verdicts: Vec<(u64, Verdict)>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut q = lock(&self.pipeline.queue);
        let verdicts = std::mem::take(&mut self.verdicts);
        let done: HashSet<u64> = verdicts.iter().map(|(t, _)| *t).collect();
        q.verdicts.extend(verdicts);
        for t in &self.tickets {
            if !done.contains(t) {
                q.verdicts.insert(
                    *t,
                    Verdict::Failed(Error::Store(super::StoreError::Refused(
                        "the commit this write was part of failed unexpectedly".into(),
                    ))),
                );
            }
        }
        q.leading = false;
        drop(q);
        self.pipeline.turn.notify_all();
    }
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
