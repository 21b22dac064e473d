//! The read side: every read is answered by the in-memory [`Index`] under a
//! brief read lock; components that follow the registry subscribe to its
//! commit count instead of polling.

use std::sync::RwLockReadGuard;

use super::ids::{self, ResourceKind};
use super::model::Tag;
use super::{Error, Index, Registry, Result};

impl Registry {
    /// Read access to the index. Hold the guard briefly: writers wait for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated
        // (apply runs only after a successful commit and does not panic), so
        // a poisoned lock is still consistent.
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that sees the commit count change after every write, for
    /// components that follow the registry (the prober, answer caches).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The number of writes committed since the registry was opened.
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// The tags of a namespace or service ARN.
    pub fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let index = self.read();
        match ids::parse_arn(arn) {
            Some((ResourceKind::Namespace, id)) => index.namespace(id).map(|n| n.tags.clone()),
            Some((ResourceKind::Service, id)) => index.service(id).map(|s| s.service.tags.clone()),
            None => None,
        }
        .ok_or_else(|| Error::ResourceNotFound(arn.to_string()))
    }
}
