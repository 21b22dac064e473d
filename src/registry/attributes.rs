//! [`StrMap`]: a compact, immutable-by-default map from strings to strings,
//! used for instance and service attributes and for the labels of the pods
//! the controller keeps.
//!
//! A registry holds one attribute map per instance, so its layout decides
//! most of the registry's memory. A `BTreeMap<String, String>` spends a
//! B-tree node plus two heap allocations per entry (about 1.2 KB for a pod's
//! ten attributes); this map keeps every key and value back to back in one
//! string and their end offsets in one slice: two allocations per map,
//! about 300 bytes for the same pod. Entries stay sorted by key and unique,
//! so equality, hashing and serialisation are deterministic and equal to
//! what a `BTreeMap` would give (the stored JSON is unchanged).
//!
//! Attributes are read far more often than they change (an instance's map
//! is replaced whole on re-registration), so the rare in-place edits
//! (`insert`, `remove`) rebuild the map.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A map from strings to strings, sorted by key, in two allocations.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StrMap {
    /// Every key and value back to back: `k0 v0 k1 v1 …`.
    text: Box<str>,
    /// Where each key and each value ends in `text` (two per entry). `u32`
    /// halves the offsets' size; callers' inputs are bounded far below
    /// 4 GiB (request bodies, Kubernetes object sizes).
    ends: Box<[u32]>,
}

impl StrMap {
    /// An empty map (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the map from entries already sorted by key and unique.
    fn from_sorted<K: AsRef<str>, V: AsRef<str>>(entries: &[(K, V)]) -> Self {
        let len: usize = entries
            .iter()
            .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
            .sum();
        let mut text = String::with_capacity(len);
        let mut ends = Vec::with_capacity(entries.len() * 2);
        for (k, v) in entries {
            for s in [k.as_ref(), v.as_ref()] {
                text.push_str(s);
                ends.push(offset(text.len()));
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// Builds the map from entries in any order; a repeated key keeps its
    /// last value, as inserting into a map one by one would.
    fn from_unsorted<K: AsRef<str>, V: AsRef<str>>(mut entries: Vec<(K, V)>) -> Self {
        // Stable sort keeps repeated keys in input order; the last one wins.
        entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut unique: Vec<(K, V)> = Vec::with_capacity(entries.len());
        for e in entries {
            match unique.last_mut() {
                Some(last) if last.0.as_ref() == e.0.as_ref() => *last = e,
                _ => unique.push(e),
            }
        }
        Self::from_sorted(&unique)
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The text of the `n`th string (key `2i`, value `2i + 1`).
    fn part(&self, n: usize) -> &str {
        let start = if n == 0 { 0 } else { self.ends[n - 1] as usize };
        &self.text[start..self.ends[n] as usize]
    }

    /// The key of entry `i`.
    fn key_at(&self, i: usize) -> &str {
        self.part(2 * i)
    }

    /// The value of entry `i`.
    fn value_at(&self, i: usize) -> &str {
        self.part(2 * i + 1)
    }

    /// The position of `key`, or where it would be inserted.
    fn search(&self, key: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key_at(mid).cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.search(key).ok().map(|i| self.value_at(i))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.search(key).is_ok()
    }

    /// The entries in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            map: self,
            front: 0,
            back: self.len(),
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Sets `key` to `value`, returning the previous value. Rebuilds the map.
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Option<String> {
        let (key, value) = (key.as_ref(), value.as_ref());
        let (old, at) = match self.search(key) {
            Ok(i) => (Some(self.value_at(i).to_string()), i),
            Err(i) => (None, i),
        };
        let mut entries: Vec<(&str, &str)> = self.iter().collect();
        if old.is_some() {
            entries[at] = (key, value);
        } else {
            entries.insert(at, (key, value));
        }
        *self = Self::from_sorted(&entries);
        old
    }

    /// Removes `key`, returning its value. Rebuilds the map.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.search(key).ok()?;
        let old = self.value_at(at).to_string();
        let entries: Vec<(&str, &str)> = self
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != at)
            .map(|(_, e)| e)
            .collect();
        *self = Self::from_sorted(&entries);
        Some(old)
    }

    /// Keeps only the entries for which `keep` is true. Rebuilds the map.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        let entries: Vec<(&str, &str)> = self.iter().filter(|(k, v)| keep(k, v)).collect();
        if entries.len() != self.len() {
            *self = Self::from_sorted(&entries);
        }
    }

    /// A `BTreeMap` copy, for callers that build maps entry by entry.
    pub fn to_btree(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Bytes this map owns on the heap (its text and offsets).
    pub fn heap_bytes(&self) -> usize {
        self.text.len() + self.ends.len() * std::mem::size_of::<u32>()
    }
}

/// Converts an offset into `text` to the stored width.
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("attribute maps are bounded far below 4 GiB")
}

/// Iterator over a [`StrMap`]'s entries in key order.
#[derive(Clone)]
pub struct Iter<'a> {
    map: &'a StrMap,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        let i = self.front;
        self.front += 1;
        Some((self.map.key_at(i), self.map.value_at(i)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        Some((self.map.key_at(self.back), self.map.value_at(self.back)))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a StrMap {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self::from_unsorted(iter.into_iter().collect())
    }
}

impl<K: AsRef<str>, V: AsRef<str>> Extend<(K, V)> for StrMap {
    /// Adds or replaces entries (later ones win). Rebuilds the map once.
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let new: Vec<(K, V)> = iter.into_iter().collect();
        if new.is_empty() {
            return;
        }
        let mut all: Vec<(&str, &str)> = self.iter().collect();
        all.extend(new.iter().map(|(k, v)| (k.as_ref(), v.as_ref())));
        *self = Self::from_unsorted(all);
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for StrMap {
    fn from(entries: [(K, V); N]) -> Self {
        Self::from_unsorted(Vec::from(entries))
    }
}

impl From<BTreeMap<String, String>> for StrMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        let entries: Vec<(String, String)> = map.into_iter().collect();
        Self::from_sorted(&entries)
    }
}

impl From<&BTreeMap<String, String>> for StrMap {
    fn from(map: &BTreeMap<String, String>) -> Self {
        let entries: Vec<(&String, &String)> = map.iter().collect();
        Self::from_sorted(&entries)
    }
}

impl std::ops::Index<&str> for StrMap {
    type Output = str;

    /// The value of `key`; panics when it is absent, like `BTreeMap`.
    fn index(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no entry for key {key:?}"))
    }
}

impl fmt::Debug for StrMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for StrMap {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor;

        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StrMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrMap, A::Error> {
                let mut entries: Vec<(String, String)> =
                    Vec::with_capacity(access.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = access.next_entry()? {
                    entries.push(entry);
                }
                Ok(StrMap::from_unsorted(entries))
            }
        }

        deserializer.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> StrMap {
        pairs.iter().copied().collect()
    }

    #[test]
    fn behaves_like_a_btree_map() {
        let m = map(&[("b", "2"), ("a", "1"), ("c", ""), ("b", "3")]);
        assert_eq!(m.len(), 3);
        assert_eq!(m.get("a"), Some("1"));
        assert_eq!(m.get("b"), Some("3"), "the last of repeated keys wins");
        assert_eq!(m.get("c"), Some(""));
        assert_eq!(m.get("d"), None);
        assert_eq!(&m["a"], "1");
        let order: Vec<_> = m.iter().collect();
        assert_eq!(order, [("a", "1"), ("b", "3"), ("c", "")]);
        let back: Vec<_> = m.iter().rev().map(|(k, _)| k).collect();
        assert_eq!(back, ["c", "b", "a"]);
        let btree: BTreeMap<String, String> = [("b", "3"), ("a", "1"), ("c", "")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(StrMap::from(&btree), m);
        assert_eq!(m.to_btree(), btree);
        assert_eq!(format!("{m:?}"), format!("{btree:?}"));
    }

    #[test]
    fn empty_strings_and_empty_maps() {
        let m = map(&[("", ""), ("k", "")]);
        assert_eq!(m.get(""), Some(""));
        assert_eq!(m.get("k"), Some(""));
        assert_eq!(m.len(), 2);
        let e = StrMap::new();
        assert!(e.is_empty());
        assert_eq!(e.get(""), None);
        assert_eq!(e.iter().next(), None);
        assert_eq!(e, map(&[]));
    }

    #[test]
    fn edits_keep_the_map_sorted_and_unique() {
        let mut m = map(&[("b", "2")]);
        assert_eq!(m.insert("a", "1"), None);
        assert_eq!(m.insert("c", "3"), None);
        assert_eq!(m.insert("b", "two"), Some("2".into()));
        assert_eq!(m, map(&[("a", "1"), ("b", "two"), ("c", "3")]));
        assert_eq!(m.remove("b"), Some("two".into()));
        assert_eq!(m.remove("b"), None);
        assert_eq!(m, map(&[("a", "1"), ("c", "3")]));
        m.extend([("c", "x"), ("0", "y"), ("0", "z")]);
        assert_eq!(m, map(&[("0", "z"), ("a", "1"), ("c", "x")]));
        m.retain(|k, _| k != "a");
        assert_eq!(m, map(&[("0", "z"), ("c", "x")]));
    }

    #[test]
    fn equal_content_means_equal_maps_and_hashes() {
        use std::hash::{BuildHasher, RandomState};
        let a = map(&[("x", "1"), ("y", "2")]);
        let mut b = map(&[("y", "2")]);
        b.insert("x", "1");
        assert_eq!(a, b);
        let s = RandomState::new();
        assert_eq!(s.hash_one(&a), s.hash_one(&b));
        // Same concatenation, different split: not equal.
        assert_ne!(map(&[("ab", "c")]), map(&[("a", "bc")]));
    }

    #[test]
    fn serialises_as_the_btree_map_json() {
        let m = map(&[
            ("z", "last"),
            ("AWS_INSTANCE_IPV4", "10.0.0.1"),
            ("é", "ü\""),
        ]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, serde_json::to_string(&m.to_btree()).unwrap());
        let back: StrMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        // Unsorted input with a repeated key, as a hand-written request may be.
        let back: StrMap = serde_json::from_str(r#"{"b":"1","a":"2","b":"3"}"#).unwrap();
        assert_eq!(back, map(&[("a", "2"), ("b", "3")]));
        assert!(serde_json::from_str::<StrMap>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<StrMap>(r#"["a"]"#).is_err());
    }

    #[test]
    fn is_smaller_than_a_btree_map() {
        let m = map(&[
            ("AWS_INSTANCE_IPV4", "10.1.2.3"),
            ("AWS_INSTANCE_PORT", "8080"),
            ("K8S_NAMESPACE", "shop"),
            ("K8S_POD_NAME", "inventory-7d9f8c6b5-x2x9q"),
        ]);
        let text: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert_eq!(m.heap_bytes(), text + 8 * 4);
        assert_eq!(std::mem::size_of::<StrMap>(), 32);
    }
}
