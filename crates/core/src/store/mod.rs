//! The state store: namespaces of versioned keys with compare-and-set, history, watches, TTLs,
//! all-or-nothing transactions, snapshots and replica merges, as a state machine without I/O.
//!
//! Versions are store revisions: every write (or transaction) takes the next revision, so a
//! key's version grows with each write and the revisions of a namespace order all its changes,
//! which is what lets a watcher resume from a version. Keys keep their last N records (the
//! namespace's history limit); a record dropped from history raises that key's *floor*, so a
//! watcher asking to replay from below it learns it cannot, instead of silently missing a change.

mod entry;
mod hlc;
mod keys;
pub mod persist;
mod snapshot;
mod watch;
pub mod wire;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub use bytes::Bytes;

pub use entry::{Entry, Kind, Record, Stamp};
pub use hlc::{Clock, Hlc};
use keys::Keys;
pub use snapshot::{seal_snapshot, EntryState, Meta};
use watch::Watches;
pub use watch::{Delivery, Start};

use crate::error::{shown, StoreError};
use crate::names::Interner;
use crate::Deadline;
use crate::Millis;

/// A store revision. 0 means "absent" wherever a version is expected.
pub type Version = u64;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Most writes in one transaction.
pub const MAX_TXN_WRITES: usize = 4096;

/// The writer id of the store itself (expiries), named by [`StoreConfig::replica`].
pub const LOCAL_WRITER: u32 = 0;

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// How many older records each key keeps, unless its namespace says otherwise.
    pub history: usize,
    /// This replica's writer name: the writer of expiries and of writes that name no other.
    pub replica: String,
    /// How long a deleted key's last record (its tombstone) is kept, in milliseconds: readers
    /// of its history, watchers replaying and merges from other replicas see the deletion until
    /// then (an older remote write arriving later loses to it instead of bringing the key back).
    pub tombstone_ms: Millis,
}

/// The default [`StoreConfig::tombstone_ms`]: ten minutes.
pub const TOMBSTONE_MS: Millis = crate::manifest::defaults::TOMBSTONE_MS;

impl Default for StoreConfig {
    fn default() -> Self {
        use crate::manifest::defaults;
        Self {
            max_value_bytes: defaults::MAX_VALUE_BYTES,
            history: defaults::HISTORY,
            replica: "local".into(),
            tombstone_ms: TOMBSTONE_MS,
        }
    }
}

/// What a write requires of its key before it applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Nothing.
    Any,
    /// The key holds no value (create-if-absent).
    Absent,
    /// The key holds a value at exactly this version (compare-and-set); 0 means absent.
    Version(Version),
}

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action<'a> {
    /// Sets the value; a `ttl` in milliseconds (> 0) makes it expire, otherwise it never does.
    Put {
        /// The new value.
        value: &'a [u8],
        /// Time to live in milliseconds; 0 for none.
        ttl: Millis,
    },
    /// Deletes the key (a no-op when it holds no value).
    Delete,
    /// Writes nothing: only the condition counts (a transaction's guard).
    Check,
}

/// One write of a transaction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Write<'a> {
    /// The namespace id.
    pub ns: u32,
    /// The key.
    pub key: &'a [u8],
    /// What the key must satisfy.
    pub condition: Condition,
    /// What to do.
    pub action: Action<'a>,
    /// The writer id ([`Store::writer`]).
    pub writer: u32,
}

/// A remote replica's change to apply ([`Store::merge`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteChange<'a> {
    /// The namespace id.
    pub ns: u32,
    /// The key.
    pub key: &'a [u8],
    /// Put or delete.
    pub kind: Kind,
    /// The value of a put.
    pub value: &'a [u8],
    /// The remote write's clock reading.
    pub hlc: Hlc,
    /// The remote writer's id, interned here.
    pub writer: u32,
    /// When a put's value expires (host milliseconds, as the writer's TTL set it); infinity for none.
    pub expires: Millis,
}

#[derive(Debug)]
struct Namespace {
    entries: Keys,
    /// The highest version of a key removed entirely: replaying from below it is not exact.
    floor: Version,
    history: usize,
}

/// A deadline of a key's current record: a value's TTL, or when a tombstone is forgotten. Stale
/// ones (the key was written again) are skipped when they come due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Deadline,
    ns: u32,
    key: Bytes,
    version: Version,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    names: Interner,
    namespaces: Vec<Namespace>,
    writers: Interner,
    revision: Version,
    clock: Clock,
    expiry: BinaryHeap<Reverse<Due>>,
    /// Keys whose current record has a deadline: the heap is compacted when stale entries
    /// (keys rewritten before their deadline) outnumber them.
    timed: usize,
    watches: Watches,
    /// Keys changed since the host last took them, when it persists changes.
    dirty: Option<Vec<(u32, Bytes)>>,
    conflict: Option<StoreError>,
}

/// Checks a key's length only: what reads need, since a key that is not UTF-8 was never
/// written, so reading it simply finds nothing (UTF-8 validation cost ~3 ns a read).
fn check_key_len(key: &[u8]) -> Result<(), StoreError> {
    if key.is_empty() {
        Err(StoreError::InvalidKey { key: shown(key), reason: "is empty" })
    } else if key.len() > MAX_KEY_LEN {
        Err(StoreError::InvalidKey { key: shown(key), reason: "is longer than 1024 bytes" })
    } else {
        Ok(())
    }
}

fn check_key(key: &[u8]) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "is empty"
    } else if key.len() > MAX_KEY_LEN {
        "is longer than 1024 bytes"
    } else if std::str::from_utf8(key).is_err() {
        "is not UTF-8"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey { key: shown(key), reason })
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Result<Self, StoreError> {
        if !(config.tombstone_ms >= 0.0 && config.tombstone_ms.is_finite()) {
            return Err(StoreError::InvalidOption { option: "tombstoneMs", reason: "must be a finite number >= 0" });
        }
        let mut writers = Interner::default();
        writers.intern(&config.replica)?;
        Ok(Self {
            config,
            names: Interner::default(),
            namespaces: Vec::new(),
            writers,
            revision: 0,
            clock: Clock::default(),
            expiry: BinaryHeap::new(),
            timed: 0,
            watches: Watches::default(),
            dirty: None,
            conflict: None,
        })
    }

    /// The store's settings.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The latest revision: the version of the last write.
    #[must_use]
    pub fn revision(&self) -> Version {
        self.revision
    }

    /// The clock's last stamp.
    #[must_use]
    pub fn clock(&self) -> Hlc {
        self.clock.last()
    }

    /// The id of namespace `name`, created on first use with the store's default history.
    pub fn namespace(&mut self, name: &str) -> Result<u32, StoreError> {
        let id = self.names.intern(name)?;
        if id as usize == self.namespaces.len() {
            self.namespaces.push(Namespace { entries: Keys::default(), floor: 0, history: self.config.history });
        }
        Ok(id)
    }

    /// The name behind a namespace id.
    #[must_use]
    pub fn namespace_name(&self, ns: u32) -> Option<&str> {
        self.names.name(ns)
    }

    /// Sets how many older records each key of `ns` keeps; lowering it drops records now.
    pub fn set_history(&mut self, ns: u32, keep: usize) -> Result<(), StoreError> {
        let space = self.namespaces.get_mut(ns as usize).ok_or(StoreError::UnknownNamespace(ns))?;
        space.history = keep;
        for (key, entry) in space.entries.iter_mut() {
            if entry.history.len() > keep {
                entry.trim(keep);
                if let Some(dirty) = &mut self.dirty {
                    dirty.push((ns, key.clone()));
                }
            }
        }
        Ok(())
    }

    /// The id of writer `name` (an agent, a replica), for stamping writes.
    pub fn writer(&mut self, name: &str) -> Result<u32, StoreError> {
        Ok(self.writers.intern(name)?)
    }

    /// The name behind a writer id.
    #[must_use]
    pub fn writer_name(&self, writer: u32) -> Option<&str> {
        self.writers.name(writer)
    }

    fn space(&self, ns: u32) -> Result<&Namespace, StoreError> {
        self.namespaces.get(ns as usize).ok_or(StoreError::UnknownNamespace(ns))
    }

    /// The live record of a key, or `None` if it holds no value (expiring what is due first).
    pub fn get(&mut self, ns: u32, key: &[u8], now: Millis) -> Result<Option<&Record>, StoreError> {
        self.expire(now);
        check_key_len(key)?;
        Ok(self.space(ns)?.entries.get(key).filter(|e| e.is_live()).map(|e| &e.current))
    }

    /// The record a key got at `version` (a put, a deletion or an expiry), if still kept.
    pub fn get_at(
        &mut self,
        ns: u32,
        key: &[u8],
        version: Version,
        now: Millis,
    ) -> Result<Option<&Record>, StoreError> {
        self.expire(now);
        check_key_len(key)?;
        Ok(self.space(ns)?.entries.get(key).and_then(|e| e.at(version)))
    }

    /// A key's entry: its current record and kept history.
    pub fn entry(&mut self, ns: u32, key: &[u8], now: Millis) -> Result<Option<&Entry>, StoreError> {
        self.expire(now);
        check_key_len(key)?;
        Ok(self.space(ns)?.entries.get(key))
    }

    /// Live keys of `ns` starting with `prefix`, in key order, after `after` if given.
    pub fn scan<'s>(
        &'s mut self,
        ns: u32,
        prefix: &'s [u8],
        after: Option<&'s [u8]>,
        now: Millis,
    ) -> Result<impl Iterator<Item = (&'s Bytes, &'s Entry)> + 's, StoreError> {
        self.expire(now);
        Ok(self.space(ns)?.entries.prefixed(prefix, after).filter(|(_, entry)| entry.is_live()))
    }

    /// Applies `writes` all or nothing as one revision; returns it, or 0 when nothing changed
    /// (only checks, or deletes of absent keys). A failed condition is `VERSION_CONFLICT` and
    /// changes nothing.
    pub fn write(&mut self, writes: &[Write<'_>], now: Millis) -> Result<Version, StoreError> {
        self.expire(now);
        self.validate(writes)?;
        // No key appears twice, so whether one write changes anything does not depend on another.
        if !writes.iter().any(|w| self.changes(w)) {
            return Ok(0);
        }
        self.revision += 1;
        let version = self.revision;
        let hlc = self.clock.tick(now);
        for w in writes {
            if !self.changes(w) {
                continue;
            }
            let (kind, value, expires) = match w.action {
                Action::Put { value, ttl } => {
                    (Kind::Put, Bytes::copy_from_slice(value), if ttl > 0.0 { now + ttl } else { f64::INFINITY })
                }
                _ => (Kind::Delete, Bytes::new(), now + self.config.tombstone_ms),
            };
            let stamp = Stamp { hlc, writer: w.writer };
            self.apply(w.ns, w.key, Record { version, kind, value, stamp }, expires);
        }
        Ok(version)
    }

    /// The error of the last refused [`Store::write`] whose condition failed, for hosts that
    /// report conflicts as data rather than thrown errors.
    pub fn take_conflict(&mut self) -> Option<StoreError> {
        self.conflict.take()
    }

    fn validate(&mut self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        if writes.len() > MAX_TXN_WRITES {
            return Err(StoreError::Capacity { what: "writes in one transaction", limit: MAX_TXN_WRITES });
        }
        for (index, w) in writes.iter().enumerate() {
            let space = self.space(w.ns)?;
            check_key(w.key)?;
            if self.writers.name(w.writer).is_none() {
                return Err(StoreError::UnknownWriter(w.writer));
            }
            if let Action::Put { value, ttl } = w.action {
                if value.len() > self.config.max_value_bytes {
                    return Err(StoreError::ValueTooLarge {
                        key: shown(w.key),
                        size: value.len(),
                        limit: self.config.max_value_bytes,
                    });
                }
                if !(ttl >= 0.0 && ttl.is_finite()) {
                    return Err(StoreError::InvalidOption { option: "ttl", reason: "must be a finite number >= 0" });
                }
            }
            if writes[..index].iter().any(|o| o.ns == w.ns && o.key == w.key) {
                return Err(StoreError::MalformedWrite { index, reason: "a transaction names the same key twice" });
            }
            let current = space.entries.get(w.key).map_or(0, Entry::live_version);
            let holds = match w.condition {
                Condition::Any => true,
                Condition::Absent => current == 0,
                Condition::Version(v) => current == v,
            };
            if !holds {
                let expected = match w.condition {
                    Condition::Version(v) => v,
                    _ => 0,
                };
                let err = StoreError::VersionConflict { key: shown(w.key), index, expected, current };
                self.conflict = Some(err.clone());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Whether a validated write changes anything.
    fn changes(&self, w: &Write<'_>) -> bool {
        match w.action {
            Action::Put { .. } => true,
            Action::Check => false,
            Action::Delete => self.namespaces[w.ns as usize].entries.get(w.key).is_some_and(Entry::is_live),
        }
    }

    /// Makes `record` current for a key, keeping history, registering its deadline (a TTL, or
    /// a tombstone's end), telling watchers and marking the key for persistence.
    fn apply(&mut self, ns: u32, key: &[u8], record: Record, expires: Millis) {
        let space = &mut self.namespaces[ns as usize];
        let keep = space.history;
        // One lookup for the whole write: the slot serves both the key and the entry.
        let found = space.entries.find(key);
        let key = match found {
            Some(slot) => space.entries.slot_mut(slot).0.clone(),
            None => Bytes::copy_from_slice(key),
        };
        if !self.watches.is_empty() {
            self.watches.notify(ns, &key, &record, if record.kind.is_put() { expires } else { f64::INFINITY });
        }
        let version = record.version;
        match found {
            Some(slot) => {
                let entry = space.entries.slot_mut(slot).1;
                self.timed -= usize::from(entry.expires.is_finite());
                entry.push(record, expires, keep);
            }
            None => space.entries.insert_new(key.clone(), Entry::new(record, expires)),
        }
        if expires.is_finite() {
            self.timed += 1;
            self.expiry.push(Reverse(Due { at: Deadline(expires), ns, key: key.clone(), version }));
            self.compact_deadlines();
        }
        if let Some(dirty) = &mut self.dirty {
            dirty.push((ns, key));
        }
    }

    /// Drops stale deadlines once they outnumber the live ones (a key rewritten with a TTL
    /// many times would otherwise leave one per write until each came due).
    fn compact_deadlines(&mut self) {
        if self.expiry.len() <= 2 * self.timed + 1024 {
            return;
        }
        let spaces = &self.namespaces;
        self.expiry.retain(|Reverse(due)| {
            spaces[due.ns as usize].entries.get(&due.key).is_some_and(|e| e.current.version == due.version)
        });
    }

    /// Removes a key entirely (a purge, or a tombstone's end), raising its namespace's floor.
    fn forget(&mut self, ns: u32, key: &[u8]) {
        let space = &mut self.namespaces[ns as usize];
        if let Some((key, entry)) = space.entries.remove(key) {
            self.timed -= usize::from(entry.expires.is_finite());
            space.floor = space.floor.max(entry.floor).max(entry.current.version);
            if let Some(dirty) = &mut self.dirty {
                dirty.push((ns, key));
            }
        }
    }

    /// Deletes a key and forgets its history; watchers see a deletion if it held a value.
    /// Returns the deletion's version, or 0 if the key held no value.
    pub fn purge(&mut self, ns: u32, key: &[u8], now: Millis) -> Result<Version, StoreError> {
        let write = Write { ns, key, condition: Condition::Any, action: Action::Delete, writer: LOCAL_WRITER };
        let version = self.write(&[write], now)?;
        self.forget(ns, key);
        Ok(version)
    }

    /// Applies a change from another replica. With `lww` (last writer wins) it applies only if
    /// its stamp orders after the key's current one (by clock, then writer name); otherwise
    /// `condition` decides, as for a local write (a merge function's result). Either way the
    /// local clock moves past the remote stamp. Returns the local version, or 0 if not applied.
    pub fn merge(
        &mut self,
        change: &RemoteChange<'_>,
        condition: Condition,
        lww: bool,
        now: Millis,
    ) -> Result<Version, StoreError> {
        self.expire(now);
        let hlc = self.clock.observe(change.hlc, now);
        let space = self.space(change.ns)?;
        check_key(change.key)?;
        let writer = self.writers.name(change.writer).ok_or(StoreError::UnknownWriter(change.writer))?;
        if lww {
            if let Some(entry) = space.entries.get(change.key) {
                let local = &entry.current.stamp;
                let local_writer = self.writers.name(local.writer).unwrap_or_default();
                // At an equal stamp a deletion wins over the put: an expiry is stamped as the put
                // it ends, so a replica holding the put takes that expiry, whatever came first.
                let tie_deletes = !change.kind.is_put() && entry.is_live();
                match (local.hlc, local_writer).cmp(&(change.hlc, writer)) {
                    std::cmp::Ordering::Greater => return Ok(0),
                    std::cmp::Ordering::Equal if !tie_deletes => return Ok(0),
                    _ => {}
                }
            }
        }
        let action = match change.kind {
            Kind::Put => Action::Put { value: change.value, ttl: 0.0 },
            Kind::Delete | Kind::Expire => Action::Delete,
        };
        let write = Write { ns: change.ns, key: change.key, condition, action, writer: change.writer };
        self.validate(std::slice::from_ref(&write))?;
        if lww && action == Action::Delete {
            // Already deleted here: the later stamp replaces the tombstone's, with no new change.
            let space = &mut self.namespaces[change.ns as usize];
            if let Some(entry) = space.entries.get_mut(change.key).filter(|e| !e.is_live()) {
                entry.current.stamp = Stamp { hlc: change.hlc, writer: change.writer };
                if let Some(dirty) = &mut self.dirty {
                    dirty.push((change.ns, Bytes::copy_from_slice(change.key)));
                }
                return Ok(0);
            }
        }
        // A remote deletion that wins is recorded even where the key holds no value here: its
        // stamp (the tombstone) is what makes an older remote write lose when it arrives later.
        let records_tombstone = lww && action == Action::Delete;
        if !records_tombstone && !self.changes(&write) {
            return Ok(0);
        }
        self.revision += 1;
        let version = self.revision;
        let value = Bytes::copy_from_slice(change.value);
        // A merged record keeps the remote stamp when it won outright; a merge function's
        // result is a new local event, later than both.
        let stamp = Stamp { hlc: if lww { change.hlc } else { hlc }, writer: change.writer };
        let (kind, expires) = if change.kind.is_put() {
            (Kind::Put, change.expires)
        } else {
            (Kind::Delete, now + self.config.tombstone_ms)
        };
        self.apply(change.ns, change.key, Record { version, kind, value, stamp }, expires);
        Ok(version)
    }

    /// Runs every deadline due at `now`: a value whose TTL ran out expires (a write of its
    /// own), and a tombstone past `tombstone_ms` is forgotten.
    pub fn expire(&mut self, now: Millis) {
        while let Some(Reverse(due)) = self.expiry.peek() {
            if due.at.0 > now {
                break;
            }
            let Some(Reverse(due)) = self.expiry.pop() else { break };
            let current = self.namespaces[due.ns as usize]
                .entries
                .get(&due.key)
                .filter(|e| e.current.version == due.version)
                .map(|e| (e.is_live(), e.current.stamp));
            match current {
                // The expiry keeps the stamp of the put it ends: every replica that merged the
                // put expires it alike, and any write stamped later wins over both.
                Some((true, stamp)) => {
                    self.revision += 1;
                    let record = Record { version: self.revision, kind: Kind::Expire, value: Bytes::new(), stamp };
                    self.apply(due.ns, &due.key, record, now + self.config.tombstone_ms);
                }
                Some((false, _)) => self.forget(due.ns, &due.key),
                None => {}
            }
        }
    }

    /// When the next TTL comes due (host milliseconds), or infinity.
    #[must_use]
    pub fn next_deadline(&self) -> Millis {
        self.expiry.peek().map_or(crate::manifest::NO_DEADLINE, |Reverse(due)| due.at.0)
    }

    /// Starts recording changed keys for [`Store::take_dirty`] (a durable host persists them).
    pub fn track_changes(&mut self) {
        self.dirty.get_or_insert_with(Vec::new);
    }

    /// The keys changed since the last call (possibly repeated), in order of change.
    pub fn take_dirty(&mut self) -> Vec<(u32, Bytes)> {
        self.dirty.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Watches a key (or, with `prefix`, every key starting with it) of `ns` from `start`,
    /// buffering at most `capacity` changes before catching up from history.
    pub fn watch(
        &mut self,
        ns: u32,
        target: &[u8],
        prefix: bool,
        start: Start,
        capacity: usize,
    ) -> Result<u32, StoreError> {
        self.space(ns)?;
        if !prefix {
            check_key(target)?;
        } else if target.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidKey { key: shown(target), reason: "is a prefix longer than 1024 bytes" });
        }
        if capacity == 0 {
            return Err(StoreError::InvalidOption { option: "buffer", reason: "must be at least 1" });
        }
        self.watches
            .add(ns, Bytes::copy_from_slice(target), prefix, start, capacity, self.revision)
            .ok_or(StoreError::Capacity { what: "watches at once", limit: crate::slab::MAX_ENTRIES })
    }

    /// Ends a watch.
    pub fn unwatch(&mut self, id: u32) -> Result<(), StoreError> {
        self.watches.remove(id).ok_or(StoreError::UnknownWatch(id))
    }

    /// Pauses a watch (drains pass it by while it keeps its queue, then catches up from
    /// history) or resumes it.
    pub fn set_watch_paused(&mut self, id: u32, paused: bool) -> Result<(), StoreError> {
        self.watches.set_paused(id, paused).ok_or(StoreError::UnknownWatch(id))
    }

    /// Hands queued watch deliveries to `sink` until it returns `false` (no room); returns
    /// whether everything was delivered. A watcher behind its buffer catches up from history
    /// here, or is told it lagged (and ends) when history no longer covers what it missed.
    pub fn drain(&mut self, mut sink: impl FnMut(u32, &Delivery) -> bool) -> bool {
        self.watches.drain(&self.namespaces, self.revision, &mut sink)
    }
}
