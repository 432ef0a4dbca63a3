//! The store as both engines expose it: writes arrive as byte records in a JS-owned buffer and
//! results leave as byte records in one, so a `get` or `put` is one boundary call with integer
//! arguments (a string across N-API costs 50-110 ns). Read and written on the TS side by `ts/store/wire.ts`.
//!
//! A write (32-byte header, then key and value, padded to 8 bytes):
//! `0 action u8 (1 put, 2 delete, 3 check) | 1 condition u8 (0 any, 1 absent, 2 version) |
//! 2 key length u16 | 4 namespace u32 | 8 value length u32 | 12 writer u32 |
//! 16 expected version f64 | 24 ttl ms f64`.
//!
//! A record (48-byte header, then key and value, padded to 8 bytes):
//! `0 tag u32 (watch id, or 0) | 4 kind u8 (1 put, 2 delete, 3 expire, 4 lagged) | 5 0 u8 |
//! 6 key length u16 | 8 value length u32 | 12 writer u32 | 16 version f64 | 24 clock wall f64 |
//! 32 clock logical u32 | 36 namespace u32 | 40 expires f64 (0 = never)`.

use super::entry::{Kind, Record};
use super::hlc::Hlc;
use super::{Action, Condition, Delivery, RemoteChange, Start, Store, Version, Write};
use crate::error::StoreError;
use crate::manifest::limits::MAX_CAPACITY;
use crate::manifest::store_wire::{
    ACTION_CHECK, ACTION_DELETE, ACTION_PUT, CONDITION_ABSENT, CONDITION_ANY, CONDITION_VERSION, WATCH_AFTER,
    WATCH_CURRENT, WATCH_NOW,
};
use crate::Millis;

/// Bytes before a write's key.
pub const WRITE_HEADER: usize = 32;
/// Bytes before a record's key.
pub const RECORD_HEADER: usize = 48;
/// The record kind of a lag notice.
pub const LAGGED: u8 = 4;

fn padded(len: usize) -> usize {
    (len + 7) & !7
}

/// The bytes a record with this key and value takes.
#[must_use]
pub fn record_len(key: usize, value: usize) -> usize {
    padded(RECORD_HEADER + key + value)
}

fn u16_at(buf: &[u8], at: usize) -> usize {
    u16::from_le_bytes([buf[at], buf[at + 1]]) as usize
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap_or_default())
}

fn f64_at(buf: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default())
}

/// A whole number from 0 to 2^53 taken as a version.
fn version_of(value: f64, index: usize) -> Result<Version, StoreError> {
    // A round trip rather than `fract()`, which is a libm call on every read.
    if (0.0..=9_007_199_254_740_992.0).contains(&value) && (value as Version) as f64 == value {
        Ok(value as Version)
    } else {
        Err(StoreError::MalformedWrite { index, reason: "a version must be a whole number >= 0" })
    }
}

/// Reads the write at `offset`; returns it and where the next one starts.
fn parse_write(buf: &[u8], offset: usize, index: usize) -> Result<(Write<'_>, usize), StoreError> {
    let bad = |reason| StoreError::MalformedWrite { index, reason };
    if buf.len() < offset + WRITE_HEADER {
        return Err(bad("truncated header"));
    }
    let h = &buf[offset..];
    let key_len = u16_at(h, 2);
    let value_len = u32_at(h, 8) as usize;
    // Checked: on wasm32 a value length near 2^32 would wrap `end` below the key and the slicing
    // below would panic, which poisons the instance.
    let end = (offset + WRITE_HEADER + key_len).checked_add(value_len).ok_or_else(|| bad("truncated key or value"))?;
    if buf.len() < end {
        return Err(bad("truncated key or value"));
    }
    let key = &buf[offset + WRITE_HEADER..offset + WRITE_HEADER + key_len];
    let value = &buf[offset + WRITE_HEADER + key_len..end];
    let condition = match h[1] {
        CONDITION_ANY => Condition::Any,
        CONDITION_ABSENT => Condition::Absent,
        CONDITION_VERSION => Condition::Version(version_of(f64_at(h, 16), index)?),
        _ => return Err(bad("unknown condition")),
    };
    let action = match h[0] {
        ACTION_PUT => Action::Put { value, ttl: f64_at(h, 24) },
        ACTION_DELETE => Action::Delete,
        ACTION_CHECK => Action::Check,
        _ => return Err(bad("unknown action")),
    };
    let write = Write { ns: u32_at(h, 4), key, condition, action, writer: u32_at(h, 12) };
    Ok((write, offset + padded(end - offset)))
}

/// The bytes of keys and values the first `count` writes in `buf` carry: what the store will
/// copy in if they apply (a host with bounded memory checks it has room first). Stops at the
/// first malformed write, which the write itself then reports.
#[must_use]
pub fn write_bytes(buf: &[u8], count: u32) -> usize {
    let mut total = 0;
    let mut offset = 0;
    for index in 0..count as usize {
        let Ok((write, next)) = parse_write(buf, offset, index) else { break };
        total += write.key.len() + if let Action::Put { value, .. } = write.action { value.len() } else { 0 };
        offset = next;
    }
    total
}

/// Applies `count` writes from `buf` as one transaction. Returns the version written (0 if
/// nothing changed), or -1 when a condition failed: [`conflict`] then tells which and why.
pub fn write(store: &mut Store, buf: &[u8], count: u32, now: Millis) -> Result<f64, StoreError> {
    let result = if count == 1 {
        let (write, _) = parse_write(buf, 0, 0)?;
        store.write(std::slice::from_ref(&write), now)
    } else {
        // The count is the host's word; the buffer holds at most one write per 32-byte header.
        // Reserving for the count itself let a 4-byte buffer claiming 2^31 writes ask for 52 GB
        // and abort the process (found by fuzz/fuzz_targets/store_wire.rs).
        let mut writes = Vec::with_capacity((count as usize).min(buf.len() / WRITE_HEADER));
        let mut offset = 0;
        for index in 0..count as usize {
            let (write, next) = parse_write(buf, offset, index)?;
            writes.push(write);
            offset = next;
        }
        store.write(&writes, now)
    };
    match result {
        Ok(version) => Ok(version as f64),
        Err(StoreError::VersionConflict { .. }) => Ok(-1.0),
        Err(other) => Err(other),
    }
}

/// The last refused condition as `[index, expected, current]`, or empty.
pub fn conflict(store: &mut Store) -> Vec<f64> {
    match store.take_conflict() {
        Some(StoreError::VersionConflict { index, expected, current, .. }) => {
            vec![index as f64, expected as f64, current as f64]
        }
        _ => Vec::new(),
    }
}

/// Writes one record at `out[at..]`, which must have room ([`record_len`]).
fn put_record(out: &mut [u8], at: usize, tag: u32, ns: u32, key: &[u8], record: &Record, expires: Millis) -> usize {
    let len = record_len(key.len(), record.value.len());
    let o = &mut out[at..at + len];
    o[0..4].copy_from_slice(&tag.to_le_bytes());
    o[4] = record.kind as u8;
    o[5] = 0;
    o[6..8].copy_from_slice(&(key.len() as u16).to_le_bytes());
    o[8..12].copy_from_slice(&(record.value.len() as u32).to_le_bytes());
    o[12..16].copy_from_slice(&record.stamp.writer.to_le_bytes());
    o[16..24].copy_from_slice(&(record.version as f64).to_le_bytes());
    o[24..32].copy_from_slice(&(record.stamp.hlc.wall as f64).to_le_bytes());
    o[32..36].copy_from_slice(&record.stamp.hlc.logical.to_le_bytes());
    o[36..40].copy_from_slice(&ns.to_le_bytes());
    let expires = if expires.is_finite() { expires } else { 0.0 };
    o[40..48].copy_from_slice(&expires.to_le_bytes());
    o[RECORD_HEADER..RECORD_HEADER + key.len()].copy_from_slice(key);
    o[RECORD_HEADER + key.len()..RECORD_HEADER + key.len() + record.value.len()].copy_from_slice(&record.value);
    len
}

fn key_in(buf: &[u8], len: u32) -> Result<&[u8], StoreError> {
    buf.get(..len as usize)
        .ok_or(StoreError::InvalidKey { key: String::new(), reason: "is longer than the buffer holding it" })
}

/// Reads the key in `buf[..key_len]` (at `version`, or its live value when 0) and writes its
/// record (without the key) over `buf`. Returns -1 if there is none, else the record's size,
/// written only if `buf` has room for it (otherwise the host grows `buf` and asks again).
pub fn get(
    store: &mut Store,
    ns: u32,
    key_len: u32,
    version: f64,
    now: Millis,
    buf: &mut [u8],
) -> Result<f64, StoreError> {
    let version = version_of(version, 0)?;
    let key = key_in(buf, key_len)?;
    let Some(entry) = store.entry(ns, key, now)? else { return Ok(-1.0) };
    let (record, expires) = if version == 0 {
        if !entry.is_live() {
            return Ok(-1.0);
        }
        (&entry.current, entry.expires)
    } else {
        match entry.at(version) {
            Some(record) => (record, f64::INFINITY),
            None => return Ok(-1.0),
        }
    };
    let len = record_len(0, record.value.len());
    if len <= buf.len() {
        put_record(buf, 0, 0, ns, &[], record, expires);
    }
    Ok(len as f64)
}

/// Writes every kept record of the key in `buf[..key_len]`, oldest first, over `buf`. Returns
/// -1 if the key has none, else their total size, written only if `buf` has room.
pub fn history(store: &mut Store, ns: u32, key_len: u32, now: Millis, buf: &mut [u8]) -> Result<f64, StoreError> {
    let key = key_in(buf, key_len)?.to_vec();
    let Some(entry) = store.entry(ns, &key, now)? else { return Ok(-1.0) };
    let total: usize = entry.records().map(|r| record_len(0, r.value.len())).sum();
    if total <= buf.len() {
        let mut at = 0;
        for record in entry.records() {
            at += put_record(buf, at, 0, ns, &[], record, f64::INFINITY);
        }
    }
    Ok(total as f64)
}

/// Writes the live keys of `ns` starting with the prefix in `buf[..prefix_len]`, after the key
/// in `buf[prefix_len..prefix_len + after_len]` if any, as records over `buf` (values only if
/// `values`). Returns `2 * bytes written + (1 if that was the last of them)`.
pub fn scan(
    store: &mut Store,
    ns: u32,
    prefix_len: u32,
    after_len: u32,
    values: bool,
    now: Millis,
    buf: &mut [u8],
) -> Result<f64, StoreError> {
    let prefix = key_in(buf, prefix_len)?.to_vec();
    // Added without wrapping: `prefix_len + after_len` in u32 overflowed for lengths near 2^32
    // (a panic with overflow checks, a wrong range without; found by fuzz/fuzz_targets/store_wire.rs).
    let start = prefix_len as usize;
    let after = start.checked_add(after_len as usize).and_then(|end| buf.get(start..end)).map(<[u8]>::to_vec);
    let after = after.filter(|a| !a.is_empty());
    let mut at = 0;
    let mut done = true;
    for (key, entry) in store.scan(ns, &prefix, after.as_deref(), now)? {
        let value_len = if values { entry.current.value.len() } else { 0 };
        if at + record_len(key.len(), value_len) > buf.len() {
            done = false;
            break;
        }
        let record =
            if values { entry.current.clone() } else { Record { value: bytes::Bytes::new(), ..entry.current.clone() } };
        at += put_record(buf, at, 0, ns, key, &record, entry.expires);
    }
    Ok((2 * at + usize::from(done)) as f64)
}

/// Deletes the key in `buf[..key_len]` and forgets its history; the deletion's version or 0.
pub fn purge(store: &mut Store, ns: u32, key_len: u32, now: Millis, buf: &[u8]) -> Result<f64, StoreError> {
    store.purge(ns, key_in(buf, key_len)?, now).map(|v| v as f64)
}

/// Watches the key (or prefix) in `buf[..target_len]`: `mode` 0 from now, 1 after version
/// `from`, 2 from the current values; at most `capacity` changes buffered.
#[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
pub fn watch(
    store: &mut Store,
    ns: u32,
    target_len: u32,
    prefix: bool,
    mode: u32,
    from: f64,
    capacity: f64,
    buf: &[u8],
) -> Result<u32, StoreError> {
    let start = match mode {
        WATCH_NOW => Start::Now,
        WATCH_AFTER => Start::After(version_of(from, 0)?),
        WATCH_CURRENT => Start::Current,
        _ => return Err(StoreError::InvalidOption { option: "from", reason: "unknown start mode" }),
    };
    if !(1.0..=MAX_CAPACITY as f64).contains(&capacity) || capacity.fract() != 0.0 {
        return Err(StoreError::InvalidOption {
            option: "buffer",
            reason: "must be a whole number from 1 to 268435456",
        });
    }
    store.watch(ns, key_in(buf, target_len)?, prefix, start, capacity as usize)
}

/// Writes queued watch deliveries as records into `out`. Returns `2 * bytes written + (1 if
/// nothing is left)`, or minus the size of the next record when not even that one fits (a
/// value loaded from a snapshot may exceed the store's limit): the host grows `out` and asks
/// again.
pub fn drain(store: &mut Store, out: &mut [u8]) -> f64 {
    let mut at = 0;
    let mut needed = 0;
    let done = store.drain(|watch, delivery| match delivery {
        Delivery::Change { key, record, expires } => {
            let len = record_len(key.len(), record.value.len());
            if at + len > out.len() {
                needed = len;
                return false;
            }
            // The namespace is the watch's; the host knows it, so 0 saves a lookup.
            at += put_record(out, at, watch, 0, key, record, expires.0);
            true
        }
        Delivery::Lagged { after } => {
            if at + RECORD_HEADER > out.len() {
                needed = RECORD_HEADER;
                return false;
            }
            let stamp = super::Stamp { hlc: Hlc::default(), writer: 0 };
            let notice = Record { version: *after, kind: Kind::Put, value: bytes::Bytes::new(), stamp };
            put_record(out, at, watch, 0, &[], &notice, f64::INFINITY);
            out[at + 4] = LAGGED;
            at += RECORD_HEADER;
            true
        }
    });
    if at == 0 && !done {
        return -(needed as f64);
    }
    (2 * at + usize::from(done)) as f64
}

/// Applies a replica's change: the one write in `buf` (put or delete; its writer is the remote
/// writer) stamped `wall`/`logical`. With `lww` the later stamp wins; otherwise the write's
/// condition decides (a merge function's result). Returns the local version, or 0 if ignored,
/// or -1 on a failed condition.
pub fn merge(
    store: &mut Store,
    buf: &[u8],
    wall: f64,
    logical: f64,
    lww: bool,
    now: Millis,
) -> Result<f64, StoreError> {
    let (write, _) = parse_write(buf, 0, 0)?;
    // A put's `ttl` is what is left of the remote one's (the host counts it from the writer's deadline).
    let (kind, value, expires) = match write.action {
        Action::Put { value, ttl } => (Kind::Put, value, if ttl > 0.0 { now + ttl } else { f64::INFINITY }),
        Action::Delete => (Kind::Delete, &[][..], f64::INFINITY),
        Action::Check => return Err(StoreError::MalformedWrite { index: 0, reason: "a merge puts or deletes" }),
    };
    // Checked here, not converted: `as` would turn 2^64 into u64::MAX-ish walls that pin the
    // clock, and -1 or 1.5 into another logical counter.
    let Some(hlc) = Hlc::from_parts(wall, logical) else {
        return Err(StoreError::InvalidOption {
            option: "stamp",
            reason:
                "wall must be a whole number of ms from 0 to 2^53 - 1 and logical a whole number from 0 to 2^32 - 1",
        });
    };
    let change = RemoteChange { ns: write.ns, key: write.key, kind, value, hlc, writer: write.writer, expires };
    match store.merge(&change, write.condition, lww, now) {
        Ok(version) => Ok(version as f64),
        Err(StoreError::VersionConflict { .. }) => Ok(-1.0),
        Err(other) => Err(other),
    }
}
