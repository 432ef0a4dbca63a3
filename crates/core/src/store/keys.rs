//! A namespace's keys: entries in a dense vector (in order of first write), a hash index from
//! key to slot for point reads and writes, and an ordered set of the key names for prefix
//! scans. Lookups in a B-tree alone cost ~280 ns per get in wasm (keys with a long shared
//! prefix compared byte by byte at every level); hashing once costs ~20 ns. Slots keep the hash
//! table small (a key and an index, not a whole entry), so probing touches fewer cache lines.
//! The ordered set changes only when a key appears or goes, not when it is overwritten. The hash
//! index is split in [`SHARDS`] maps by a hash of the key, so growing it rehashes one shard's keys,
//! not all (one map of 800,000 keys stalled a write for 10-60 ms while it grew). Its keys
//! carry their first 16 bytes inline ([`Ordered`]): a B-tree insert compares ~40 keys, and
//! following each key's pointer to its bytes was most of a new key's write (1.2 of 2 µs).

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::hash::Hasher;
use std::ops::Bound;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHasher};

use super::entry::Entry;

#[derive(Debug, Default)]
pub(super) struct Keys {
    index: Index,
    slots: Slots,
    order: BTreeSet<Ordered>,
}

/// Maps of the hash index, each growing on its own.
const SHARDS: usize = 64;

/// The hash index: key to slot, in [`SHARDS`] maps (empty ones allocate nothing).
#[derive(Debug)]
struct Index {
    shards: Vec<FxHashMap<Bytes, u32>>,
}

impl Default for Index {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| FxHashMap::default()).collect() }
    }
}

impl Index {
    /// The shard of a key: a hash of its bytes other than the maps' own (which hash the length
    /// too), so each shard's keys still spread over its buckets.
    fn shard(key: &[u8]) -> usize {
        let mut hasher = FxHasher::default();
        hasher.write(key);
        (hasher.finish() as usize) % SHARDS
    }

    fn get(&self, key: &[u8]) -> Option<&u32> {
        self.shards[Self::shard(key)].get(key)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut u32> {
        self.shards[Self::shard(key)].get_mut(key)
    }

    fn insert(&mut self, key: Bytes, slot: u32) {
        self.shards[Self::shard(&key)].insert(key, slot);
    }

    fn remove(&mut self, key: &[u8]) -> Option<u32> {
        self.shards[Self::shard(key)].remove(key)
    }

    fn clear(&mut self) {
        for shard in &mut self.shards {
            *shard = FxHashMap::default();
        }
    }
}

/// A key in the ordered set: its first 16 bytes, zero-padded, as a big-endian number, then the
/// key. Byte order of the keys is the order of the heads where they differ (a zero of padding
/// sorts like the end of a shorter key: that key is a prefix of the other, so sorts first), and
/// the bytes decide only between keys whose heads are equal.
#[derive(Debug, Clone)]
struct Ordered {
    head: u128,
    key: Bytes,
}

impl Ordered {
    fn new(key: Bytes) -> Self {
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        Self { head: u128::from_be_bytes(head), key }
    }
}

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.head == other.head && self.key == other.key
    }
}

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.head.cmp(&other.head).then_with(|| self.key.cmp(&other.key))
    }
}

/// Lookups by plain bytes (ranges for prefix scans) compare the bytes, in the same order.
impl Borrow<[u8]> for Ordered {
    fn borrow(&self) -> &[u8] {
        &self.key
    }
}

/// Slots per chunk of [`Slots`].
const CHUNK: usize = 4096;

/// A vector of slots in fixed-size chunks: growing never moves what is stored (one vector
/// doubling at 300,000 keys copied ~50 MB, a 10 ms pause in the middle of a write).
#[derive(Debug, Default)]
struct Slots {
    chunks: Vec<Vec<(Bytes, Entry)>>,
    len: usize,
}

impl Slots {
    fn get(&self, i: u32) -> &(Bytes, Entry) {
        let i = i as usize;
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    fn get_mut(&mut self, i: u32) -> &mut (Bytes, Entry) {
        let i = i as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    fn push(&mut self, slot: (Bytes, Entry)) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(last) = self.chunks.last_mut() {
            last.push(slot);
        }
        self.len += 1;
    }

    /// Removes slot `i`, moving the last slot into its place (returned with its new index).
    fn swap_remove(&mut self, i: u32) -> ((Bytes, Entry), Option<&Bytes>) {
        let last = self.chunks.last_mut().and_then(Vec::pop);
        self.len -= 1;
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        let Some(last) = last else { unreachable!("swap_remove on an empty slot vector") };
        if i as usize == self.len {
            return (last, None);
        }
        let removed = std::mem::replace(self.get_mut(i), last);
        (removed, Some(&self.get(i).0))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut (Bytes, Entry)> {
        self.chunks.iter_mut().flatten()
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

impl Keys {
    pub(super) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.index.get(key).map(|&i| &self.slots.get(i).1)
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.index.get(key).map(|&i| &mut self.slots.get_mut(i).1)
    }

    pub(super) fn get_key_value(&self, key: &[u8]) -> Option<(&Bytes, &Entry)> {
        self.index.get(key).map(|&i| {
            let (key, entry) = self.slots.get(i);
            (key, entry)
        })
    }

    /// The slot of a key's entry: one hash lookup, for a caller that goes on to read or change it.
    pub(super) fn find(&self, key: &[u8]) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// The key and entry in a slot `find` returned.
    pub(super) fn slot_mut(&mut self, slot: u32) -> (&Bytes, &mut Entry) {
        let (key, entry) = self.slots.get_mut(slot);
        (key, entry)
    }

    /// Adds or replaces a key's entry.
    pub(super) fn insert(&mut self, key: Bytes, entry: Entry) {
        match self.find(&key) {
            Some(slot) => *self.slot_mut(slot).1 = entry,
            None => self.insert_new(key, entry),
        }
    }

    /// Adds the entry of a key `find` did not find.
    pub(super) fn insert_new(&mut self, key: Bytes, entry: Entry) {
        self.index.insert(key.clone(), self.slots.len as u32);
        self.order.insert(Ordered::new(key.clone()));
        self.slots.push((key, entry));
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Option<(Bytes, Entry)> {
        let i = self.index.remove(key)?;
        self.order.remove(&Ordered::new(self.slots.get(i).0.clone()));
        let (removed, moved) = self.slots.swap_remove(i);
        if let Some(moved) = moved {
            if let Some(slot) = self.index.get_mut(moved) {
                *slot = i;
            }
        }
        Some(removed)
    }

    /// Every entry, in no particular order.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&Bytes, &mut Entry)> {
        self.slots.iter_mut().map(|(key, entry)| (&*key, entry))
    }

    /// Every entry in key order.
    pub(super) fn ordered(&self) -> impl Iterator<Item = (&Bytes, &Entry)> {
        self.order.iter().filter_map(|key| self.get_key_value(&key.key))
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
            .take_while(move |key| key.key.starts_with(prefix))
            .filter_map(|key| self.get_key_value(&key.key))
    }

    /// Removes every entry, handing back the keys.
    pub(super) fn take_keys(&mut self) -> impl Iterator<Item = Bytes> {
        self.index.clear();
        self.slots.clear();
        std::mem::take(&mut self.order).into_iter().map(|key| key.key)
    }
}
