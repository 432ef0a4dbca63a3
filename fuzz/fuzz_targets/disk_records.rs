//! On-disk records as a durable store reads them back (`store::persist::recover`, which the native
//! engine's redb file goes through): the meta row and each key's row, keyed by namespace, a 0 byte
//! and the key, decoded, checked and loaded. A damaged file must be refused as damaged, never panic. Half the inputs are raw rows;
//! the other half overwrite bytes of the rows of a real store, to get past the first fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orrery_core::store::persist::{recover, Durable, Memory, PersistError};

/// A meta row, then (namespace, key, row) for each key: what the native engine reads back.
type Rows = (Vec<u8>, Vec<(String, Vec<u8>, Vec<u8>)>);

#[path = "common.rs"]
mod common;
use common::{store, write};

/// The rows a durable store with keys in two namespaces (history, a delete, a TTL) would hold:
/// its meta row, then (namespace, key, row) for each key.
fn populated() -> Rows {
    let mut s = store();
    let a = s.namespace("alpha").expect("a valid name");
    let b = s.namespace("beta").expect("a valid name");
    let writes = [
        (1, a, "k1", "one", 0.0),
        (1, a, "k1", "uno", 0.0),
        (1, b, "k2", "two", 5_000.0),
        (2, a, "k1", "", 0.0),
        (1, a, "k3", "x", 0.0),
    ];
    for (i, (action, ns, key, value, ttl)) in writes.into_iter().enumerate() {
        write(&mut s, action, ns, key, value, ttl, 1_000.0 + i as f64);
    }
    let mut rows = Vec::new();
    for (ns, name, key) in [(a, "alpha", "k1"), (b, "beta", "k2"), (a, "alpha", "k3")] {
        let mut row = Vec::new();
        if s.encode_entry(ns, key.as_bytes(), &mut row) {
            rows.push((name.to_owned(), key.as_bytes().to_vec(), row));
        }
    }
    (s.meta().to_bytes(), rows)
}

/// A length-prefixed slice (`width` bytes of little-endian length), and what follows it.
fn take(bytes: &[u8], width: usize) -> Option<(&[u8], &[u8])> {
    if bytes.len() < width {
        return None;
    }
    let (len, rest) = bytes.split_at(width);
    let len = len.iter().rev().fold(0usize, |n, &b| n << 8 | usize::from(b));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Raw rows: u16 length of the meta row, the meta row, then (u8 namespace length, namespace,
/// u8 key length, key, u16 row length, row) for each key.
fn raw(data: &[u8]) -> Option<Rows> {
    let (meta, mut rest) = take(data, 2)?;
    let mut rows = Vec::new();
    while let Some((name, after)) = take(rest, 1) {
        let Some((key, after)) = take(after, 1) else { break };
        let Some((row, after)) = take(after, 2) else { break };
        rest = after;
        rows.push((String::from_utf8_lossy(name).into_owned(), key.to_vec(), row.to_vec()));
    }
    Some((meta.to_vec(), rows))
}

/// A real store's rows overwritten by (u16 position, u8 value) triples over all their bytes.
fn mutated(edits: &[u8]) -> Rows {
    let (mut meta, mut rows) = populated();
    let total = meta.len() + rows.iter().map(|(_, _, row)| row.len()).sum::<usize>();
    for edit in edits.chunks_exact(3) {
        let mut at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % total;
        if at < meta.len() {
            meta[at] = edit[2];
            continue;
        }
        at -= meta.len();
        for (_, _, row) in &mut rows {
            if at < row.len() {
                row[at] = edit[2];
                break;
            }
            at -= row.len();
        }
    }
    (meta, rows)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((meta, rows)) = (if mode & 1 == 0 { raw(rest) } else { Some(mutated(rest)) }) else { return };
    // The harness's own check: a real store's untouched rows decode and load.
    let untouched = mode & 1 == 1 && rest.len() < 3;
    let mut durable = Durable { meta: Some(meta), ..Durable::default() };
    for (name, key, row) in rows {
        let mut row_key = name.into_bytes();
        row_key.push(0);
        row_key.extend_from_slice(&key);
        durable.rows.insert(row_key, row);
    }
    let mut s = store();
    let loaded = recover(&mut Memory::reopen(durable), &mut s);
    assert!(!untouched || loaded.is_ok(), "untouched rows load: {loaded:?}");
    assert!(matches!(loaded, Ok(_) | Err(PersistError::Damaged(_))), "only ever refused as damaged: {loaded:?}");
    if loaded.is_ok() {
        // A loaded store exports, and its export imports.
        let exported = s.export();
        store().import(&exported).expect("an exported snapshot imports");
    }
});
