//! Snapshots and per-key records as bytes (postcard): export/import of a whole store at one
//! revision, and the records a durable host keeps on disk, one per key, plus the store's meta.

use bytes::Bytes;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};

use super::entry::{Entry, Kind, Record, Stamp};
use super::hlc::Hlc;
use super::{check_key, Namespace, Store, Version};
use crate::error::StoreError;
use crate::Deadline;

/// Snapshot layout version, bumped on any incompatible change. 2: the checksummed envelope.
const FORMAT: u32 = 2;

/// A snapshot starts with these bytes, then its format (u32 LE), then the CRC-32 (IEEE, u32 LE)
/// of the rest: the postcard body. Without a checksum about four in five single-bit flips
/// imported silently (a changed value, stamp or version) and some left values that no longer
/// decode; CRC-32 catches every flip of up to 3 bits and every burst of up to 32 bits.
const MAGIC: [u8; 4] = *b"ORRS";

/// Magic, format and checksum.
const ENVELOPE: usize = MAGIC.len() + 4 + 4;

/// Versions stay exact in JavaScript numbers up to here.
const MAX_VERSION: Version = 1 << 53;

/// One record as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordState {
    version: Version,
    kind: u8,
    value: Bytes,
    hlc: Hlc,
    writer: u32,
}

/// One key as stored: its records oldest first (the last is current), floor and expiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryState {
    floor: Version,
    expires: Option<f64>,
    records: Vec<RecordState>,
}

/// A namespace's settings and floor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceState {
    name: String,
    history: u64,
    floor: Version,
}

/// Store-wide state: revision, clock, writer names (ids are their positions) and namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    revision: Version,
    clock: Hlc,
    writers: Vec<String>,
    namespaces: Vec<NamespaceState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    meta: Meta,
    /// (namespace position in `meta.namespaces`, key, state)
    entries: Vec<(u32, Bytes, EntryState)>,
}

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidSnapshot { reason: reason.into() }
}

/// A snapshot around `body` (its postcard part): header, format and the body's checksum. For
/// fuzzing and tests that need damaged bodies to reach the decoder past the checksum.
#[must_use]
pub fn seal_snapshot(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A snapshot's body, once its magic, format and checksum check out.
fn open_envelope(bytes: &[u8]) -> Result<&[u8], StoreError> {
    if bytes.len() < ENVELOPE || bytes[..MAGIC.len()] != MAGIC {
        return Err(invalid("not a snapshot (it does not start with one's header)"));
    }
    let word = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let format = word(MAGIC.len());
    if format != FORMAT {
        return Err(invalid(format!("format {format} is not {FORMAT}")));
    }
    let body = &bytes[ENVELOPE..];
    if crc32fast::hash(body) != word(MAGIC.len() + 4) {
        return Err(invalid("its checksum does not match: the bytes were damaged or cut short"));
    }
    Ok(body)
}

impl EntryState {
    fn of(entry: &Entry) -> Self {
        let record = |r: &Record| RecordState {
            version: r.version,
            kind: r.kind as u8,
            value: r.value.clone(),
            hlc: r.stamp.hlc,
            writer: r.stamp.writer,
        };
        Self {
            floor: entry.floor,
            expires: entry.expires.is_finite().then_some(entry.expires),
            records: entry.records().map(record).collect(),
        }
    }

    /// Encodes as a durable host would (the tests compare `Store::encode_entry` with it).
    #[cfg(test)]
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes from disk.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| invalid(format!("key record: {e}")))
    }

    /// The entry, with writer ids mapped through `writers`, checked for order and sense.
    fn into_entry(self, writers: &[u32]) -> Result<Entry, StoreError> {
        let mut records = Vec::with_capacity(self.records.len());
        for r in self.records {
            let kind = Kind::from_code(r.kind).ok_or_else(|| invalid("unknown record kind"))?;
            let writer = *writers.get(r.writer as usize).ok_or_else(|| invalid("unknown writer"))?;
            if records.last().is_some_and(|p: &Record| p.version >= r.version) {
                return Err(invalid("record versions out of order"));
            }
            records.push(Record { version: r.version, kind, value: r.value, stamp: Stamp { hlc: r.hlc, writer } });
        }
        let current = records.pop().ok_or_else(|| invalid("a key without records"))?;
        let expires = match self.expires {
            Some(at) if !at.is_nan() => at,
            _ => f64::INFINITY,
        };
        let mut entry = Entry::new(current, expires);
        entry.history = records.into();
        entry.floor = self.floor;
        Ok(entry)
    }
}

/// Appends to a caller's buffer (postcard's `to_extend` takes its writer by value).
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// An entry serialized in place, byte for byte as its [`EntryState`] would be, without
/// copying its records first (a durable write encodes one per changed key).
struct EntryView<'a>(&'a Entry);
struct RecordsView<'a>(&'a Entry);
struct RecordView<'a>(&'a Record);

impl Serialize for EntryView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entry = self.0;
        let mut state = serializer.serialize_struct("EntryState", 3)?;
        state.serialize_field("floor", &entry.floor)?;
        state.serialize_field("expires", &entry.expires.is_finite().then_some(entry.expires))?;
        state.serialize_field("records", &RecordsView(entry))?;
        state.end()
    }
}

impl Serialize for RecordsView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.history.len() + 1))?;
        for record in self.0.records() {
            seq.serialize_element(&RecordView(record))?;
        }
        seq.end()
    }
}

impl Serialize for RecordView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut state = serializer.serialize_struct("RecordState", 5)?;
        state.serialize_field("version", &r.version)?;
        state.serialize_field("kind", &(r.kind as u8))?;
        state.serialize_field("value", &r.value)?;
        state.serialize_field("hlc", &r.stamp.hlc)?;
        state.serialize_field("writer", &r.stamp.writer)?;
        state.end()
    }
}

impl Meta {
    /// The revision it was taken at.
    #[must_use]
    pub fn revision(&self) -> Version {
        self.revision
    }

    /// The clock's stamp when it was taken.
    #[must_use]
    pub fn clock(&self) -> Hlc {
        self.clock
    }

    /// Sets the revision and clock (which move with every write, while the rest rarely does).
    pub fn restamp(&mut self, revision: Version, clock: Hlc) {
        self.revision = revision;
        self.clock = clock;
    }

    /// Encodes for disk.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes from disk.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StoreError> {
        postcard::from_bytes(bytes).map_err(|e| invalid(format!("store meta: {e}")))
    }
}

impl Store {
    /// The state of a key as it is persisted, or `None` if it no longer exists (the tests
    /// check `encode_entry` against it).
    #[cfg(test)]
    #[must_use]
    pub fn entry_state(&self, ns: u32, key: &[u8]) -> Option<EntryState> {
        self.namespaces.get(ns as usize)?.entries.get(key).map(EntryState::of)
    }

    /// Appends the state of a key to persist to `out` (as [`EntryState::to_bytes`] would
    /// encode it); returns `false`, appending nothing, if the key no longer exists.
    pub fn encode_entry(&self, ns: u32, key: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(entry) = self.namespaces.get(ns as usize).and_then(|space| space.entries.get(key)) else {
            return false;
        };
        let start = out.len();
        if postcard::to_extend(&EntryView(entry), Appender(out)).is_ok() {
            true
        } else {
            // Writing into a Vec cannot fail; if it ever did, the bytes before stay as they were.
            out.truncate(start);
            false
        }
    }

    /// Whether the parts of [`Store::meta`] other than revision and clock (writers, namespaces,
    /// their floors and history limits) changed since `seen` was last filled by this call.
    /// Lets a durable host re-encode the meta only when it changed: building it per write
    /// allocated every name.
    pub fn meta_changed(&self, seen: &mut Vec<u64>) -> bool {
        let mut at = 0;
        let mut changed = false;
        let mut note = |value: u64| {
            match seen.get_mut(at) {
                Some(old) if *old == value => {}
                Some(old) => {
                    *old = value;
                    changed = true;
                }
                None => {
                    seen.push(value);
                    changed = true;
                }
            }
            at += 1;
        };
        note(self.writers.len() as u64);
        note(self.namespaces.len() as u64);
        for space in &self.namespaces {
            note(space.floor);
            note(space.history as u64);
        }
        changed
    }

    /// Store-wide state to persist beside the keys.
    #[must_use]
    pub fn meta(&self) -> Meta {
        let namespaces = (0..self.namespaces.len() as u32)
            .map(|id| {
                let space = &self.namespaces[id as usize];
                NamespaceState {
                    name: self.names.name(id).unwrap_or_default().to_owned(),
                    history: space.history as u64,
                    floor: space.floor,
                }
            })
            .collect();
        let writers = (0..self.writers.len() as u32).map(|id| self.writers.name(id).unwrap_or_default().to_owned());
        Meta { revision: self.revision, clock: self.clock.last(), writers: writers.collect(), namespaces }
    }

    /// The whole store at this revision, as bytes.
    #[must_use]
    pub fn export(&self) -> Vec<u8> {
        self.try_export().unwrap_or_default()
    }

    /// [`Self::export`], with the snapshot's buffer allocated fallibly and exactly once (its
    /// size is measured first): `Err(bytes)` when that many bytes cannot be had. A host with
    /// bounded memory (a wasm instance: 4 GiB at most) refuses the export instead of aborting.
    pub fn try_export(&self) -> Result<Vec<u8>, usize> {
        let entries = self
            .namespaces
            .iter()
            .enumerate()
            .flat_map(|(ns, space)| {
                space.entries.ordered().map(move |(key, entry)| (ns as u32, key.clone(), EntryState::of(entry)))
            })
            .collect();
        let snapshot = Snapshot { format: FORMAT, meta: self.meta(), entries };
        let size = ENVELOPE + postcard::experimental::serialized_size(&snapshot).unwrap_or(0);
        let mut out = Vec::new();
        out.try_reserve_exact(size).map_err(|_| size)?;
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let mut out = postcard::to_extend(&snapshot, out).unwrap_or_default();
        let crc = crc32fast::hash(out.get(ENVELOPE..).unwrap_or_default());
        if let Some(slot) = out.get_mut(MAGIC.len() + 4..ENVELOPE) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        Ok(out)
    }

    /// Replaces every key with a snapshot's. Namespace and writer ids stay valid; versions never
    /// go backwards (the revision becomes the larger of the two), and every watch is told it
    /// lagged. A snapshot that does not decode or check out changes nothing.
    pub fn import(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let body = open_envelope(bytes)?;
        let snapshot: Snapshot = postcard::from_bytes(body).map_err(|e| invalid(e.to_string()))?;
        if snapshot.format != FORMAT {
            return Err(invalid(format!("format {} is not {FORMAT}", snapshot.format)));
        }
        let names: Vec<String> = snapshot.meta.namespaces.iter().map(|n| n.name.clone()).collect();
        let entries = snapshot.entries.into_iter().map(|(ns, key, state)| {
            let name = names.get(ns as usize).ok_or_else(|| invalid("unknown namespace"))?;
            Ok((name.clone(), key, state))
        });
        let entries = entries.collect::<Result<Vec<_>, StoreError>>()?;
        // Whatever a snapshot holds that does not check out (a name, a key) is a bad snapshot,
        // not a bad argument of the caller's.
        self.load(&snapshot.meta, entries).map_err(|e| match e {
            StoreError::InvalidSnapshot { .. } => e,
            other => invalid(other.to_string()),
        })?;
        self.watches.lag_all();
        Ok(())
    }

    /// Replaces every key with `entries` (namespace name, key, state) under `meta`: an import,
    /// or a durable host opening its files. Checked whole before anything changes.
    ///
    /// Into a store that was written to, the loaded versions are shifted past its revision, so
    /// one version never names two different values (a compare-and-set prepared before the
    /// import fails after it), and every namespace's floor rises past it, so a watcher resuming
    /// from before the import is told it lagged rather than missing the keys that went away.
    pub fn load(&mut self, meta: &Meta, entries: Vec<(String, Bytes, EntryState)>) -> Result<(), StoreError> {
        let mut writers = Vec::with_capacity(meta.writers.len());
        for name in &meta.writers {
            crate::names::validate(name)?;
        }
        for space in &meta.namespaces {
            crate::names::validate(&space.name)?;
        }
        let mut staged = Vec::with_capacity(entries.len());
        let writer_ids: Vec<u32> = (0..meta.writers.len() as u32).collect();
        let mut top = meta.revision;
        let mut clock = meta.clock;
        for (name, key, state) in entries {
            crate::names::validate(&name)?;
            check_key(&key)?;
            let entry = state.into_entry(&writer_ids)?;
            for record in entry.records() {
                top = top.max(record.version);
                clock = clock.max(record.stamp.hlc);
            }
            staged.push((name, key, entry));
        }
        // Checked: now apply. Writer ids map from the snapshot's positions to ours.
        for name in &meta.writers {
            writers.push(self.writers.intern(name)?);
        }
        // Into a written store, the snapshot's versions are renumbered densely after ours, in
        // order (a plain shift doubled the revision with every import of an export); a floor
        // maps to the highest renumbered version at or below it. Into a fresh store (a durable
        // reopen, a browser restoring its snapshot) versions stay exactly as they were.
        let offset = self.revision;
        let mut versions: Vec<Version> = staged.iter().flat_map(|(_, _, e)| e.records().map(|r| r.version)).collect();
        versions.sort_unstable();
        versions.dedup();
        let rank = |version: Version| versions.partition_point(|&v| v <= version) as Version;
        let shift = |version: Version| match (offset, version) {
            (0, _) | (_, 0) => version,
            _ => offset + rank(version),
        };
        if offset > 0 && offset + versions.len() as Version + 1 > MAX_VERSION {
            return Err(invalid("the store's versions would pass 2^53"));
        }
        let floor = if offset == 0 { 0 } else { offset + 1 };
        for ns in 0..self.namespaces.len() {
            let space = &mut self.namespaces[ns];
            space.floor = space.floor.max(floor);
            let old = space.entries.take_keys();
            match &mut self.dirty {
                Some(dirty) => dirty.extend(old.map(|key| (ns as u32, key))),
                None => old.for_each(drop),
            }
        }
        for space in &meta.namespaces {
            let known = self.names.get(&space.name).is_some();
            let id = self.namespace(&space.name)?;
            let local = &mut self.namespaces[id as usize];
            local.floor = local.floor.max(shift(space.floor)).max(floor);
            if !known {
                local.history = space.history as usize;
            }
        }
        self.expiry.clear();
        self.timed = 0;
        for (name, key, mut entry) in staged {
            let ns = self.namespace(&name)?;
            for record in entry.history.iter_mut().chain(std::iter::once(&mut entry.current)) {
                record.stamp.writer = writers[record.stamp.writer as usize];
                record.version = shift(record.version);
            }
            entry.floor = shift(entry.floor);
            let space: &mut Namespace = &mut self.namespaces[ns as usize];
            entry.trim(space.history);
            if entry.expires.is_finite() {
                self.timed += 1;
                let due =
                    super::Due { at: Deadline(entry.expires), ns, key: key.clone(), version: entry.current.version };
                self.expiry.push(std::cmp::Reverse(due));
            }
            space.entries.insert(key.clone(), entry);
            if let Some(dirty) = &mut self.dirty {
                dirty.push((ns, key));
            }
        }
        self.revision = if offset == 0 { top } else { (offset + versions.len() as Version).max(floor) };
        self.clock.witness(clock);
        Ok(())
    }
}
