//! Sharing of values many objects repeat: a generic pool that keeps one
//! copy of each distinct value behind an `Arc`.
//!
//! Pods of one workload carry identical labels and container ports and run
//! on a handful of nodes in a handful of namespaces, so the controller lets
//! every pod point at one pooled copy (see `cluster::Interner`, which holds
//! the pools of the values pods share). With 10,000 pods this turns 10,000
//! label maps into a few dozen. Nothing here knows what is pooled.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// A pool of shared values. Values nothing refers to any more are dropped
/// whenever the pool has doubled since its last sweep, so the pool stays
/// proportional to the distinct values in use.
#[derive(Debug)]
pub struct Pool<T: ?Sized> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

/// Pools start sweeping once they hold this many values.
const MIN_SWEEP: usize = 64;

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Self {
            values: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Pool<T> {
    /// The shared copy of `value`, copied into the pool when new.
    pub fn get(&mut self, value: &T) -> Arc<T>
    where
        for<'a> Arc<T>: From<&'a T>,
    {
        match self.values.get(value) {
            Some(shared) => Arc::clone(shared),
            None => self.insert(Arc::from(value)),
        }
    }

    /// The shared copy of an owned value (moved into the pool when new).
    pub fn take(&mut self, value: T) -> Arc<T>
    where
        T: Sized,
    {
        match self.values.get(&value) {
            Some(shared) => Arc::clone(shared),
            None => self.insert(Arc::new(value)),
        }
    }

    fn insert(&mut self, shared: Arc<T>) -> Arc<T> {
        self.values.insert(Arc::clone(&shared));
        if self.values.len() >= self.sweep_at {
            self.sweep();
        }
        shared
    }

    /// Drops the values only the pool still holds.
    fn sweep(&mut self) {
        self.values.retain(|v| Arc::strong_count(v) > 1);
        self.sweep_at = (self.values.len() * 2).max(MIN_SWEEP);
    }

    /// The number of distinct values pooled (including unused ones not yet swept).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_values_are_swept_as_the_pool_grows() {
        let mut pool: Pool<str> = Pool::default();
        let kept = pool.get("kept");
        for n in 0..10 * MIN_SWEEP {
            pool.get(&format!("gone-{n}"));
        }
        assert!(pool.len() < 2 * MIN_SWEEP, "{} values pooled", pool.len());
        // What is still referenced stays shared.
        assert!(Arc::ptr_eq(&kept, &pool.get("kept")));
    }
}
