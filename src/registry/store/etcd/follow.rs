//! Following etcd: the watch that applies other writers' changes, the
//! re-list after a compaction, and the heartbeat that confirms (or denies)
//! that this replica is current.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, WatchOptions, WatchRequestSender};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::layout::{self, KeyKind, Keys, Revisions, change_of, instances_revision, revision_base};
use super::members::{Failure, Members};
use crate::registry::store::{Change, Follower};

/// How often freshness is confirmed.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The largest watch message accepted (a big transaction's events); tonic's
/// default of 4 MiB is too small for a large registry.
const MAX_MESSAGE: usize = 256 << 20;

/// What the replica has applied. Changed only under the registry's writer
/// lock (by `accept` and commits), so a plan, its checks and the index agree.
#[derive(Debug, Default)]
pub(super) struct Applied {
    /// Every store event up to this revision is in the index.
    pub(super) revision: i64,
    /// Keys this replica wrote at a revision newer than `revision`: the
    /// index holds them as of that write.
    pub(super) own: HashMap<String, i64>,
    /// Each service's revision key as the index holds it: base and the
    /// revision that wrote it (its `InstancesRevision` is their sum).
    pub(super) revisions: Revisions,
}

/// When the replica last confirmed it held everything etcd had.
#[derive(Debug)]
pub(super) struct Freshness {
    pub(super) confirmed: Instant,
    /// What went wrong since, if anything.
    pub(super) problem: Option<String>,
}

/// One watched event: key, revision, value (`None`: deleted).
pub(super) type Event = (String, i64, Option<Vec<u8>>);

/// State shared between the store, its watch and its heartbeat.
pub(super) struct Shared {
    pub(super) keys: Keys,
    pub(super) members: Members,
    pub(super) applied: Mutex<Applied>,
    pub(super) caught_up: Condvar,
    pub(super) fresh: Mutex<Freshness>,
    pub(super) conflicts: AtomicU64,
    pub(super) relists: AtomicU64,
    /// Own writes taken through the watch (`Committed::pending`).
    pub(super) through_watch: AtomicU64,
    pub(super) stale_after: Duration,
    /// The watch's request side, for progress requests.
    pub(super) watch_requests: tokio::sync::Mutex<Option<WatchRequestSender>>,
    /// Tells the watch to start over on another member.
    pub(super) restart_watch: Notify,
}

impl Shared {
    /// The state of a replica that has applied nothing yet.
    pub(super) fn new(prefix: &str, members: Members, stale_after: Duration) -> Self {
        Self {
            keys: Keys {
                prefix: prefix.to_string(),
            },
            members,
            applied: Mutex::new(Applied::default()),
            caught_up: Condvar::new(),
            fresh: Mutex::new(Freshness {
                confirmed: Instant::now(),
                problem: None,
            }),
            conflicts: AtomicU64::new(0),
            relists: AtomicU64::new(0),
            through_watch: AtomicU64::new(0),
            stale_after,
            watch_requests: tokio::sync::Mutex::new(None),
            restart_watch: Notify::new(),
        }
    }

    pub(super) fn applied(&self) -> MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn freshness(&self) -> MutexGuard<'_, Freshness> {
        self.fresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn problem(&self, what: String) {
        let mut f = self.freshness();
        if f.problem.as_deref() != Some(what.as_str()) {
            warn!(problem = %what, "registry store");
            f.problem = Some(what);
        }
    }

    pub(super) fn confirm(&self) {
        let mut f = self.freshness();
        if f.problem.take().is_some() {
            info!("registry store current again");
        }
        f.confirmed = Instant::now();
    }

    /// The revision the index holds `key` at: the applied revision, or this
    /// replica's own newer write of it.
    pub(super) fn known(applied: &Applied, key: &str) -> i64 {
        applied
            .own
            .get(key)
            .map_or(applied.revision, |&r| r.max(applied.revision))
    }

    /// Turns watched events into the changes to apply, skipping what the
    /// index already holds (this replica's own writes), and advances the
    /// applied revision. Runs under the registry's writer lock.
    pub(super) fn accept(&self, events: &[Event], revision: i64) -> Vec<Change> {
        let mut applied = self.applied();
        let mut changes = Vec::with_capacity(events.len());
        let news = |applied: &Applied, key: &str, rev: i64| {
            applied.own.get(key).is_none_or(|own| *own < rev)
        };
        // Revision keys first: a service record in the same response then
        // gets the revision its key gives.
        for (key, rev, value) in events {
            let KeyKind::Revision(id) = self.keys.kind(key) else {
                continue;
            };
            if !news(&applied, key, *rev) {
                continue;
            }
            match value.as_deref().map(|v| revision_base(key, v)) {
                Some(Ok(base)) => {
                    applied.revisions.insert(id.to_string(), (base, *rev));
                    changes.push(Change::SetServiceRevision {
                        service_id: id.to_string(),
                        revision: instances_revision(base, *rev),
                    });
                }
                Some(Err(e)) => warn!(error = %e, "skipping an undecodable revision key"),
                // Deleted with its service.
                None => {
                    applied.revisions.remove(id);
                }
            }
        }
        for (key, rev, value) in events {
            if !news(&applied, key, *rev) {
                continue;
            }
            match change_of(&self.keys, key, value.as_deref()) {
                Ok(Some(Change::PutService(mut service))) => {
                    // The record's own revision is the base's history; the
                    // key's sum is the revision (see `layout::snapshot_of`).
                    if let Some(&(base, at)) = applied.revisions.get(&service.id) {
                        service.revision = instances_revision(base, at);
                    }
                    changes.push(Change::PutService(service));
                }
                Ok(Some(c)) => changes.push(c),
                Ok(None) => {}
                // A record this build cannot read: skipping it keeps the
                // rest current; the warning names it.
                Err(e) => warn!(error = %e, "skipping an undecodable registry record"),
            }
        }
        if revision > applied.revision {
            applied.revision = revision;
            applied.own.retain(|_, r| *r > revision);
        }
        debug!(revision, events = events.len(), "applied watched changes");
        drop(applied);
        self.caught_up.notify_all();
        changes
    }

    /// Asks the watch for a progress notification (which carries etcd's
    /// revision even when nothing under the prefix changed).
    pub(super) async fn request_progress(&self) {
        if let Some(sender) = self.watch_requests.lock().await.as_mut() {
            let _ = sender.request_progress().await;
        }
    }
}

/// Follows etcd from the applied revision on, through the member requests
/// go to, and re-lists when the watch falls behind a compaction.
pub(super) async fn watch_loop(shared: Arc<Shared>, follower: Weak<dyn Follower>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if follower.strong_count() == 0 {
            return;
        }
        let member = shared.members.current();
        let from = shared.applied().revision + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from)
            .with_progress_notify();
        let prefix = shared.keys.prefix.clone();
        let watched = shared
            .members
            .attempt(member, "watching etcd", |c| async move {
                c.watch_client()
                    .max_decoding_message_size(MAX_MESSAGE)
                    .watch(prefix, Some(options))
                    .await
            })
            .await;
        let stream = match watched {
            Ok(s) => s,
            Err(Failure::NotSent(e) | Failure::Unknown(e) | Failure::Refused(e)) => {
                shared.problem(format!("cannot watch etcd: {e}"));
                shared.members.rotate();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (sender, mut responses) = stream.split();
        *shared.watch_requests.lock().await = Some(sender);
        let ended = loop {
            let next = tokio::select! {
                r = responses.message() => r,
                () = shared.restart_watch.notified() => {
                    break "the watch stopped delivering".to_string();
                }
            };
            let response = match next {
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
            let events: Vec<Event> = response
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
            let Some(revision) = delivered_through(
                response.created(),
                response.header().map_or(0, |h| h.revision()),
                &events,
            ) else {
                continue;
            };
            let Some(f) = follower.upgrade() else {
                return;
            };
            // Applying waits for the registry's writer lock, and a writer
            // may be waiting on this runtime for its commit: never block the
            // runtime's worker with it.
            let accepting = Arc::clone(&shared);
            let applied = tokio::task::spawn_blocking(move || {
                f.apply_remote(&mut || accepting.accept(&events, revision));
            })
            .await;
            if applied.is_err() {
                break "applying watched changes failed".to_string();
            }
        };
        *shared.watch_requests.lock().await = None;
        shared.problem(ended.clone());
        if ended.contains("compaction") {
            relist(&shared, &follower).await;
        } else {
            // Another member may serve the watch better (this one may be
            // down or cut off from the quorum).
            shared.members.rotate();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// The revision a watch response proves every event up to has been
/// delivered, if it proves any.
///
/// The header's revision is etcd's current revision when the response was
/// sent, which is not always what the stream has delivered: the response that
/// confirms a watch's creation carries it before any catch-up event is sent,
/// and a catching-up (unsynced) watcher gets its events in batches, each
/// headed by the current revision. Taking the header there and then losing
/// the stream would restart the watch past events never applied, and the
/// heartbeat would call the replica current: a stale read served silently. An
/// events response proves its last event's revision; a response without
/// events that is not a creation is a progress notification, which etcd sends
/// only to a watcher that has caught up, so its header holds.
pub(super) fn delivered_through(created: bool, header: i64, events: &[Event]) -> Option<i64> {
    match events.iter().map(|(_, rev, _)| *rev).max() {
        Some(last) => Some(last),
        None if created => None,
        None => Some(header),
    }
}

/// Re-reads everything and replaces the index with it at once.
async fn relist(shared: &Arc<Shared>, follower: &Weak<dyn Follower>) {
    loop {
        let read = layout::read_all(&shared.members, &shared.keys).await;
        let snapshot = read.and_then(|(kvs, revision)| {
            layout::snapshot_of(&shared.keys, &kvs, revision).map(|s| (s, revision))
        });
        let ((snapshot, revisions), revision) = match snapshot {
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
        let mut revisions = Some(revisions);
        let resetting = Arc::clone(shared);
        // Off the runtime's worker, as in `watch_loop`.
        let replaced = tokio::task::spawn_blocking(move || {
            f.replace_all(&mut || {
                let mut applied = resetting.applied();
                applied.revision = revision;
                applied.own.clear();
                applied.revisions = revisions.take().unwrap_or_default();
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
        shared
            .relists
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(revision, "re-read the registry from etcd");
        return;
    }
}

/// Confirms once a second that this replica holds everything etcd has: a
/// linearizable read (which needs a quorum) gives etcd's revision, and the
/// watch must reach it. A watch that does not is started over.
pub(super) async fn heartbeat_loop(shared: Weak<Shared>) {
    // Beats in a row the watch was behind without moving at all.
    let mut stuck = 0;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let meta = shared.keys.meta();
        let read = shared
            .members
            .read("checking etcd", |mut c| {
                let k = meta.clone();
                async move { c.get(k, Some(GetOptions::new().with_count_only())).await }
            })
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
            stuck = 0;
            continue;
        }
        let last_applied = shared.applied().revision;
        shared.request_progress().await;
        let deadline = Instant::now() + HEARTBEAT;
        loop {
            if shared.applied().revision >= target {
                shared.confirm();
                break;
            }
            if Instant::now() >= deadline {
                let applied = shared.applied().revision;
                shared.problem(format!(
                    "the watch is behind etcd (applied {applied}, etcd at {target})"
                ));
                // Behind but moving is load; behind and still is a watch
                // that stopped (its member lost, or cut off).
                stuck = if applied == last_applied {
                    stuck + 1
                } else {
                    0
                };
                if stuck >= 2 {
                    stuck = 0;
                    shared.restart_watch.notify_one();
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::delivered_through;

    #[test]
    fn only_events_and_progress_notifications_advance_the_applied_revision() {
        // A creation's header is etcd's revision, not what was delivered.
        assert_eq!(delivered_through(true, 40, &[]), None);
        // A catch-up batch headed by the current revision proves its events.
        let batch = vec![
            ("/k/a".to_string(), 12, None),
            ("/k/b".to_string(), 17, None),
        ];
        assert_eq!(delivered_through(false, 40, &batch), Some(17));
        // A progress notification proves the header.
        assert_eq!(delivered_through(false, 40, &[]), Some(40));
    }
}
