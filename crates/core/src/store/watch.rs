//! Watches: a key or a prefix, from now, from a version, or from the current values. Each keeps
//! a bounded queue; one that falls behind stops queueing and catches up from history when it is
//! drained, and is told it lagged (then ends) only when history no longer holds what it missed.

use std::collections::VecDeque;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::entry::{Entry, Record};
use super::{Namespace, Version};
use crate::slab::Slab;
use crate::{Deadline, Millis};

/// When the value `record` of `entry` put expires: the entry's deadline if it is the current put
/// (an older put was replaced before it could expire), else infinity.
fn put_expiry(entry: &Entry, record: &Record) -> Millis {
    if record.kind.is_put() && record.version == entry.current.version {
        entry.expires
    } else {
        f64::INFINITY
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next change.
    Now,
    /// With every change after this version, exactly, from history.
    After(Version),
    /// With the current value of each matching key, then every change.
    Current,
}

/// What a watcher is handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A key changed.
    Change {
        /// The key.
        key: Bytes,
        /// Its new record.
        record: Record,
        /// When a put's value expires (its TTL), infinity for none; infinity for a deletion.
        expires: Deadline,
    },
    /// The watcher missed changes after `after` that history no longer holds; it has ended.
    Lagged {
        /// The last version it was given.
        after: Version,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Live,
    /// Queue nothing; replay records after `from` from history when drained.
    CatchUp {
        from: Version,
        exact: bool,
    },
    /// The lag notice is queued; the watch ends once it is delivered.
    Lagged,
}

#[derive(Debug)]
struct Watch {
    ns: u32,
    target: Bytes,
    prefix: bool,
    queue: VecDeque<Delivery>,
    capacity: usize,
    state: State,
    /// The version of the last queued change.
    last: Version,
    ready: bool,
    /// Drains pass it by (its host is not taking changes); it keeps queueing, then catches up.
    paused: bool,
}

impl Watch {
    fn matches(&self, ns: u32, key: &[u8]) -> bool {
        self.ns == ns && if self.prefix { key.starts_with(&self.target) } else { key == &self.target[..] }
    }

    fn offer(&mut self, key: &Bytes, record: &Record, expires: Millis) {
        if self.state != State::Live {
            return;
        }
        // A transaction's records share one version: they are queued together or not at all,
        // so catching up from `last` never repeats or skips part of one.
        if self.queue.len() >= self.capacity && record.version != self.last {
            self.state = State::CatchUp { from: self.last, exact: true };
            return;
        }
        self.queue.push_back(Delivery::Change { key: key.clone(), record: record.clone(), expires: Deadline(expires) });
        self.last = record.version;
    }

    /// Refills the queue from history after `from`; returns the new state.
    fn catch_up<'s>(&mut self, space: &'s Namespace, from: Version, exact: bool, revision: Version) {
        let mut found: Vec<(&Bytes, &Record, Millis)> = Vec::new();
        // A key removed after `from` (purged, or its tombstone forgotten) can no longer be
        // reported: a replay, or a catch-up to current values already under way, has a gap.
        let removed_since = (exact || from > 0) && space.floor > from;
        // A key watch can rule a removal out when its key's kept records reach back to `from`
        // (the entry then lived throughout); otherwise the namespace floor decides.
        let key_lived_throughout = !self.prefix
            && space
                .entries
                .get(&self.target[..])
                .is_some_and(|e| e.records().next().is_some_and(|r| r.version <= from));
        let mut gap = removed_since && !key_lived_throughout;
        let mut visit = |key: &'s Bytes, entry: &'s Entry| {
            if exact {
                gap |= entry.floor > from;
                found.extend(entry.records().filter(|r| r.version > from).map(|r| (key, r, put_expiry(entry, r))));
            } else if entry.current.version > from && (from > 0 || entry.is_live()) {
                found.push((key, &entry.current, put_expiry(entry, &entry.current)));
            }
        };
        if self.prefix {
            for (key, entry) in space.entries.prefixed(&self.target, None) {
                visit(key, entry);
            }
        } else if let Some((key, entry)) = space.entries.get_key_value(&self.target[..]) {
            visit(key, entry);
        }
        if gap {
            self.queue.push_back(Delivery::Lagged { after: from });
            self.state = State::Lagged;
            return;
        }
        found.sort_by(|a, b| (a.1.version, a.0).cmp(&(b.1.version, b.0)));
        let mut take = found.len().min(self.capacity);
        if take > 0 {
            let edge = found[take - 1].1.version;
            while take < found.len() && found[take].1.version == edge {
                take += 1;
            }
        }
        let complete = take == found.len();
        for (key, record, expires) in found.into_iter().take(take) {
            self.queue.push_back(Delivery::Change {
                key: key.clone(),
                record: record.clone(),
                expires: Deadline(expires),
            });
            self.last = record.version;
        }
        if complete {
            self.state = State::Live;
            self.last = self.last.max(revision);
        } else {
            self.state = State::CatchUp { from: self.last, exact };
        }
    }
}

/// Every watch of a store, indexed for the write path: one map lookup per written key, plus a
/// scan of the prefix watches.
#[derive(Debug, Default)]
pub(super) struct Watches {
    all: Slab<Watch>,
    by_key: FxHashMap<(u32, Bytes), Vec<u32>>,
    prefixed: Vec<u32>,
    ready: VecDeque<u32>,
}

impl Watches {
    pub(super) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub(super) fn add(
        &mut self,
        ns: u32,
        target: Bytes,
        prefix: bool,
        start: Start,
        capacity: usize,
        revision: Version,
    ) -> Option<u32> {
        let (state, last) = match start {
            Start::Now => (State::Live, revision),
            Start::After(from) => (State::CatchUp { from, exact: true }, from),
            Start::Current => (State::CatchUp { from: 0, exact: false }, 0),
        };
        let ready = state != State::Live;
        let watch = Watch {
            ns,
            target: target.clone(),
            prefix,
            queue: VecDeque::new(),
            capacity,
            state,
            last,
            ready,
            paused: false,
        };
        let id = self.all.insert(watch)?;
        if prefix {
            self.prefixed.push(id);
        } else {
            self.by_key.entry((ns, target)).or_default().push(id);
        }
        if ready {
            self.ready.push_back(id);
        }
        Some(id)
    }

    pub(super) fn remove(&mut self, id: u32) -> Option<()> {
        let watch = self.all.remove(id)?;
        if watch.prefix {
            self.prefixed.retain(|&w| w != id);
        } else if let Some(ids) = self.by_key.get_mut(&(watch.ns, watch.target.clone())) {
            ids.retain(|&w| w != id);
            if ids.is_empty() {
                self.by_key.remove(&(watch.ns, watch.target));
            }
        }
        Some(())
    }

    /// Pauses or resumes a watch's deliveries.
    pub(super) fn set_paused(&mut self, id: u32, paused: bool) -> Option<()> {
        let watch = self.all.get_mut(id)?;
        watch.paused = paused;
        if !paused && !watch.ready && (!watch.queue.is_empty() || watch.state != State::Live) {
            watch.ready = true;
            self.ready.push_back(id);
        }
        Some(())
    }

    /// Offers `record` to the watches of `key`; `expires` is a put's deadline (infinity for none).
    pub(super) fn notify(&mut self, ns: u32, key: &Bytes, record: &Record, expires: Millis) {
        let keyed = self.by_key.get(&(ns, key.clone())).map_or(&[][..], Vec::as_slice);
        for &id in keyed.iter().chain(&self.prefixed) {
            let Some(watch) = self.all.get_mut(id) else { continue };
            if !watch.matches(ns, key) {
                continue;
            }
            watch.offer(key, record, expires);
            if !watch.ready {
                watch.ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Every watch: behind ones lag (after an import replaced the data).
    pub(super) fn lag_all(&mut self) {
        let ids: Vec<u32> = self.all.iter().map(|(id, _)| id).collect();
        for id in ids {
            let Some(watch) = self.all.get_mut(id) else { continue };
            watch.queue.clear();
            watch.queue.push_back(Delivery::Lagged { after: watch.last });
            watch.state = State::Lagged;
            if !watch.ready {
                watch.ready = true;
                self.ready.push_back(id);
            }
        }
    }

    pub(super) fn drain(
        &mut self,
        spaces: &[Namespace],
        revision: Version,
        sink: &mut impl FnMut(u32, &Delivery) -> bool,
    ) -> bool {
        while let Some(&id) = self.ready.front() {
            let Some(watch) = self.all.get_mut(id) else {
                self.ready.pop_front();
                continue;
            };
            if watch.paused {
                // Resuming makes it ready again if it has anything.
                watch.ready = false;
                self.ready.pop_front();
                continue;
            }
            loop {
                while let Some(delivery) = watch.queue.front() {
                    if !sink(id, delivery) {
                        return false;
                    }
                    watch.queue.pop_front();
                }
                match watch.state {
                    State::CatchUp { from, exact } => {
                        watch.catch_up(&spaces[watch.ns as usize], from, exact, revision);
                    }
                    State::Lagged | State::Live => break,
                }
            }
            watch.ready = false;
            self.ready.pop_front();
            if watch.state == State::Lagged {
                self.remove(id);
            }
        }
        true
    }
}
