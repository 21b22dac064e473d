//! Sharing of values many pods repeat.
//!
//! Pods of one workload carry identical labels and container ports and run
//! on a handful of nodes in a handful of namespaces, so the controller keeps
//! one copy of each distinct value behind an `Arc` and lets every pod point
//! at it. With 10,000 pods this turns 10,000 label maps into a few dozen.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use super::cluster::ContainerPort;

/// A pool of shared values. Values no pod refers to any more are dropped
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

/// Labels of a Kubernetes object.
pub type Labels = BTreeMap<String, String>;

/// The pools of the values pods share.
#[derive(Debug, Default)]
pub struct Interner {
    /// Namespace and node names.
    pub names: Pool<str>,
    /// Label sets.
    pub labels: Pool<Labels>,
    /// Container port lists.
    pub ports: Pool<[ContainerPort]>,
}

impl Interner {
    /// The shared copy of a name.
    pub fn name(&mut self, name: &str) -> Arc<str> {
        self.names.get(name)
    }

    /// The shared copy of a label set.
    pub fn labels(&mut self, labels: Labels) -> Arc<Labels> {
        self.labels.take(labels)
    }

    /// The shared copy of a port list.
    pub fn ports(&mut self, ports: &[ContainerPort]) -> Arc<[ContainerPort]> {
        self.ports.get(ports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let mut i = Interner::default();
        let a = i.name("node-1");
        let b = i.name(&String::from("node-1"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &i.name("node-2")));
        let l1 = i.labels([("app".into(), "web".into())].into());
        let l2 = i.labels([("app".into(), "web".into())].into());
        assert!(Arc::ptr_eq(&l1, &l2));
        let p = [ContainerPort {
            name: Some("http".into()),
            port: 80,
        }];
        assert!(Arc::ptr_eq(&i.ports(&p), &i.ports(&p.clone())));
    }

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
