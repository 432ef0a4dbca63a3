//! A namespace's keys: a hash map for point reads and writes, and an ordered set of the key
//! names for prefix scans. Lookups in a B-tree alone cost ~280 ns per get in wasm (keys with a
//! long shared prefix compared byte by byte at every level); hashing once costs ~20 ns. The
//! ordered set changes only when a key appears or goes, not when it is overwritten.

use std::collections::BTreeSet;
use std::ops::Bound;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::entry::Entry;

#[derive(Debug, Default)]
pub(super) struct Keys {
    map: FxHashMap<Bytes, Entry>,
    order: BTreeSet<Bytes>,
}

impl Keys {
    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.map.get_mut(key)
    }

    pub(super) fn get_key_value(&self, key: &[u8]) -> Option<(&Bytes, &Entry)> {
        self.map.get_key_value(key)
    }

    /// Adds or replaces a key's entry.
    pub(super) fn insert(&mut self, key: Bytes, entry: Entry) {
        if self.map.insert(key.clone(), entry).is_none() {
            self.order.insert(key);
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<(Bytes, Entry)> {
        let removed = self.map.remove_entry(key)?;
        self.order.remove(key);
        Some(removed)
    }

    /// Every entry, in no particular order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&Bytes, &mut Entry)> {
        self.map.iter_mut()
    }

    /// Every entry in key order.
    pub(super) fn ordered(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.order.iter().filter_map(|key| self.map.get_key_value(key))
    }

    /// The entries whose keys start with `prefix`, in key order, after `after` if given.
    pub(super) fn prefixed<'a: 'p, 'p>(
        &'a self,
        prefix: &'p [u8],
        after: Option<&'p [u8]>,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Entry)> + 'p {
        let start = match after {
            Some(key) if key >= prefix => Bound::Excluded(key),
            _ => Bound::Included(prefix),
        };
        self.order
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(move |key| key.starts_with(prefix))
            .filter_map(|key| self.map.get_key_value(&key[..]))
    }

    /// Removes every entry, handing back the keys.
    pub(super) fn take_keys(&mut self) -> impl Iterator<Item = Bytes> {
        self.map.clear();
        std::mem::take(&mut self.order).into_iter()
    }
}
