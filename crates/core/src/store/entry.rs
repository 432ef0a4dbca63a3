//! One key's state: its current record, the last N records before it, and what was dropped.

use std::collections::VecDeque;

use bytes::Bytes;

use super::hlc::Hlc;
use super::Version;
use crate::Millis;

/// What a record says happened to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The key was given a value.
    Put = 1,
    /// The key was deleted.
    Delete = 2,
    /// The key's time to live ran out.
    Expire = 3,
}

impl Kind {
    /// The kind behind its wire code.
    #[must_use]
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Put),
            2 => Some(Self::Delete),
            3 => Some(Self::Expire),
            _ => None,
        }
    }

    /// Whether the key holds a value after this record.
    #[must_use]
    pub fn is_put(self) -> bool {
        self == Self::Put
    }
}

/// Who wrote a record and when, for ordering writes across replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The hybrid logical clock reading of the write.
    pub hlc: Hlc,
    /// The writer's interned id ([`super::Store::writer`]).
    pub writer: u32,
}

/// One version of a key. Values are shared (`Bytes`), so history, watchers and snapshots never
/// copy them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The store revision that wrote it.
    pub version: Version,
    /// What happened.
    pub kind: Kind,
    /// The value (empty unless `kind` is `Put`).
    pub value: Bytes,
    /// The write's stamp.
    pub stamp: Stamp,
}

/// A key's state.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The latest record; a deletion or expiry when the key is absent but keeps history.
    pub current: Record,
    /// Older records, oldest first, at most the namespace's history limit.
    pub history: VecDeque<Record>,
    /// The highest version dropped from `history`: replaying from below it is not exact.
    pub floor: Version,
    /// The current record's deadline (host milliseconds): when a value expires, or when a
    /// deletion's tombstone is forgotten; infinity for none.
    pub expires: Millis,
}

impl Entry {
    /// A key's first record.
    #[must_use]
    pub fn new(current: Record, expires: Millis) -> Self {
        Self { current, history: VecDeque::new(), floor: 0, expires }
    }

    /// Whether the key holds a value.
    #[must_use]
    pub fn is_live(&self) -> bool {
        self.current.kind.is_put()
    }

    /// The current version if the key holds a value, else 0.
    #[must_use]
    pub fn live_version(&self) -> Version {
        if self.is_live() {
            self.current.version
        } else {
            0
        }
    }

    /// Makes `record` current, keeping at most `keep` older records.
    pub fn push(&mut self, record: Record, expires: Millis, keep: usize) {
        let previous = std::mem::replace(&mut self.current, record);
        self.expires = expires;
        if keep == 0 {
            self.floor = self.floor.max(previous.version);
            self.history.clear();
            return;
        }
        self.history.push_back(previous);
        self.trim(keep);
    }

    /// Drops the oldest records beyond `keep`, remembering the highest dropped version.
    pub fn trim(&mut self, keep: usize) {
        while self.history.len() > keep {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = self.floor.max(dropped.version);
            }
        }
    }

    /// The record written at `version`, if still kept.
    #[must_use]
    pub fn at(&self, version: Version) -> Option<&Record> {
        if self.current.version == version {
            return Some(&self.current);
        }
        self.history.binary_search_by_key(&version, |r| r.version).ok().map(|i| &self.history[i])
    }

    /// Every kept record, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.history.iter().chain(std::iter::once(&self.current))
    }
}
