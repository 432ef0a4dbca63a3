use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::Coded;

fn store(history: usize) -> (Store, u32) {
    let mut s = Store::new(StoreConfig { history, ..StoreConfig::default() }).unwrap();
    let ns = s.namespace("kv").unwrap();
    (s, ns)
}

fn put<'a>(ns: u32, key: &'a str, value: &'a str) -> Write<'a> {
    Write {
        ns,
        key: key.as_bytes(),
        condition: Condition::Any,
        action: Action::Put { value: value.as_bytes(), ttl: 0.0 },
        writer: LOCAL_WRITER,
    }
}

fn with(condition: Condition, write: Write<'_>) -> Write<'_> {
    Write { condition, ..write }
}

fn del(ns: u32, key: &str) -> Write<'_> {
    Write { ns, key: key.as_bytes(), condition: Condition::Any, action: Action::Delete, writer: LOCAL_WRITER }
}

fn value(s: &mut Store, ns: u32, key: &str, now: f64) -> Option<(Version, Vec<u8>)> {
    s.get(ns, key.as_bytes(), now).unwrap().map(|r| (r.version, r.value.to_vec()))
}

fn changes(s: &mut Store) -> Vec<(u32, String, Version, Kind)> {
    let mut out = Vec::new();
    s.drain(|watch, d| {
        match d {
            Delivery::Change { key, record, .. } => {
                out.push((watch, String::from_utf8(key.to_vec()).unwrap(), record.version, record.kind));
            }
            Delivery::Lagged { after } => out.push((watch, "<lagged>".into(), *after, Kind::Delete)),
        }
        true
    });
    out
}

#[test]
fn versions_grow_and_conditions_guard_writes() {
    let (mut s, ns) = store(0);
    let v1 = s.write(&[put(ns, "a", "1")], 0.0).unwrap();
    let v2 = s.write(&[put(ns, "a", "2")], 0.0).unwrap();
    assert!(v2 > v1);
    assert_eq!(value(&mut s, ns, "a", 0.0), Some((v2, b"2".to_vec())));

    let err = s.write(&[with(Condition::Absent, put(ns, "a", "x"))], 0.0).unwrap_err();
    assert_eq!(err, StoreError::VersionConflict { key: "\"a\"".into(), index: 0, expected: 0, current: v2 });
    assert_eq!(err.code(), "VERSION_CONFLICT");
    let err = s.write(&[with(Condition::Version(v1), put(ns, "a", "x"))], 0.0).unwrap_err();
    assert_eq!(err, StoreError::VersionConflict { key: "\"a\"".into(), index: 0, expected: v1, current: v2 });
    assert!(err.to_string().starts_with("version conflict on key \"a\""), "{err}");
    assert_eq!(value(&mut s, ns, "a", 0.0), Some((v2, b"2".to_vec())), "a conflict changes nothing");
    assert_eq!(s.revision(), v2);

    let v3 = s.write(&[with(Condition::Version(v2), put(ns, "a", "3"))], 0.0).unwrap();
    assert!(v3 > v2);
    let err = s.write(&[with(Condition::Version(v2), del(ns, "a"))], 0.0).unwrap_err();
    assert!(matches!(err, StoreError::VersionConflict { current, .. } if current == v3));
    let v4 = s.write(&[with(Condition::Version(v3), del(ns, "a"))], 0.0).unwrap();
    assert!(v4 > v3);
    assert_eq!(value(&mut s, ns, "a", 0.0), None);
    assert_eq!(s.write(&[del(ns, "a")], 0.0).unwrap(), 0, "deleting an absent key changes nothing");
    assert!(s.write(&[with(Condition::Absent, put(ns, "a", "new"))], 0.0).unwrap() > v4);
}

#[test]
fn bad_input_gets_typed_errors() {
    let (mut s, ns) = store(0);
    let long = "k".repeat(MAX_KEY_LEN + 1);
    let err = s.write(&[put(ns, &long, "v")], 0.0).unwrap_err();
    assert_eq!(err.code(), "INVALID_KEY");
    // The key is named, cut to 64 characters so a huge key does not make a huge message.
    assert_eq!(err.to_string(), format!("invalid key \"{}...\": is longer than 1024 bytes", "k".repeat(64)));
    let txn: Vec<Write<'_>> = (0..=MAX_TXN_WRITES).map(|_| put(ns, "a", "v")).collect();
    assert_eq!(s.write(&txn, 0.0).unwrap_err().code(), "CAPACITY_EXCEEDED");
    assert_eq!(s.write(&[put(ns, "", "v")], 0.0).unwrap_err().code(), "INVALID_KEY");
    assert_eq!(s.write(&[put(ns, "a", "v"), put(ns, "a", "w")], 0.0).unwrap_err().code(), "MALFORMED_WRITE");
    assert_eq!(s.write(&[put(9, "a", "v")], 0.0).unwrap_err().code(), "UNKNOWN_NAMESPACE");
    assert_eq!(s.write(&[Write { writer: 7, ..put(ns, "a", "v") }], 0.0).unwrap_err().code(), "UNKNOWN_WRITER");
    assert_eq!(s.namespace("bad name").unwrap_err().code(), "INVALID_NAME");
    let mut small = Store::new(StoreConfig { max_value_bytes: 4, ..StoreConfig::default() }).unwrap();
    let ns = small.namespace("kv").unwrap();
    let err = small.write(&[put(ns, "a", "12345")], 0.0).unwrap_err();
    assert_eq!(err, StoreError::ValueTooLarge { key: "\"a\"".into(), size: 5, limit: 4 });
    assert!(err.to_string().contains("for key \"a\" is 5 bytes, over maxValueBytes = 4"), "{err}");
    assert!(err.to_string().contains("pass a larger maxValueBytes to openStore"), "{err}");
    assert_eq!(small.revision(), 0);
}

#[test]
fn history_keeps_the_last_n_versions() {
    let (mut s, ns) = store(2);
    let versions: Vec<Version> = (0..5).map(|i| s.write(&[put(ns, "a", &i.to_string())], 0.0).unwrap()).collect();
    let entry = s.entry(ns, b"a", 0.0).unwrap().unwrap();
    let kept: Vec<Version> = entry.records().map(|r| r.version).collect();
    assert_eq!(kept, versions[2..]);
    assert_eq!(entry.floor, versions[1]);
    assert_eq!(s.get_at(ns, b"a", versions[3], 0.0).unwrap().unwrap().value.as_ref(), b"3");
    assert!(s.get_at(ns, b"a", versions[1], 0.0).unwrap().is_none());
    // A deletion is a record too; the key stays absent but its history stays readable.
    let gone = s.write(&[del(ns, "a")], 0.0).unwrap();
    assert_eq!(value(&mut s, ns, "a", 0.0), None);
    assert_eq!(s.get_at(ns, b"a", gone, 0.0).unwrap().unwrap().kind, Kind::Delete);
    assert_eq!(s.get_at(ns, b"a", versions[4], 0.0).unwrap().unwrap().value.as_ref(), b"4");
    // Lowering the limit drops records at once.
    s.set_history(ns, 0).unwrap();
    assert_eq!(s.entry(ns, b"a", 0.0).unwrap().unwrap().records().count(), 1);
}

#[test]
fn keys_expire_on_the_host_clock() {
    let (mut s, ns) = store(1);
    let w = Write { action: Action::Put { value: b"v", ttl: 100.0 }, ..put(ns, "a", "") };
    let v = s.write(&[w], 1000.0).unwrap();
    assert_eq!(s.next_deadline(), 1100.0);
    assert!(value(&mut s, ns, "a", 1099.0).is_some());
    assert_eq!(value(&mut s, ns, "a", 1100.0), None);
    let expired = s.entry(ns, b"a", 1100.0).unwrap().unwrap();
    assert_eq!(expired.current.kind, Kind::Expire);
    assert!(expired.current.version > v);
    // The expiry's tombstone is kept for `tombstone_ms`, then the key is forgotten.
    assert_eq!(s.next_deadline(), 1100.0 + TOMBSTONE_MS);
    assert!(s.entry(ns, b"a", 1100.0 + TOMBSTONE_MS).unwrap().is_none());
    // A rewrite without a TTL cancels the old deadline.
    let w = Write { action: Action::Put { value: b"v", ttl: 10.0 }, ..put(ns, "b", "") };
    s.write(&[w], 2000.0 + TOMBSTONE_MS).unwrap();
    s.write(&[put(ns, "b", "forever")], 2001.0 + TOMBSTONE_MS).unwrap();
    assert!(value(&mut s, ns, "b", 5000.0 + TOMBSTONE_MS).is_some());
    assert_eq!(s.next_deadline(), f64::INFINITY);
}

#[test]
fn keys_stay_findable_across_chunks_as_others_are_removed() {
    let (mut s, ns) = store(0);
    let names: Vec<String> = (0..10_000).map(|i| format!("k{i:05}")).collect();
    for name in &names {
        s.write(&[put(ns, name, name)], 0.0).unwrap();
    }
    for name in names.iter().step_by(3) {
        s.purge(ns, name.as_bytes(), 0.0).unwrap();
    }
    for (i, name) in names.iter().enumerate() {
        let found = value(&mut s, ns, name, 0.0).map(|(_, v)| v);
        assert_eq!(found, (i % 3 != 0).then(|| name.as_bytes().to_vec()), "{name}");
    }
    let listed: Vec<Bytes> = s.scan(ns, b"k", None, 0.0).unwrap().map(|(k, _)| k.clone()).collect();
    assert_eq!(listed.len(), 10_000 - 3_334);
    assert!(listed.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn deadlines_of_rewritten_keys_do_not_pile_up() {
    let (mut s, ns) = store(0);
    for i in 0..20_000 {
        let w = Write { action: Action::Put { value: b"v", ttl: 1e9 }, ..put(ns, "k", "") };
        s.write(&[w], f64::from(i)).unwrap();
    }
    assert!(s.expiry.len() <= 1024 + 2, "{} deadlines for one key", s.expiry.len());
}

#[test]
fn transactions_apply_all_or_nothing_across_namespaces() {
    let (mut s, a) = store(0);
    let b = s.namespace("other").unwrap();
    let v = s.write(&[put(a, "x", "1"), put(b, "y", "1")], 0.0).unwrap();
    assert_eq!(value(&mut s, a, "x", 0.0).unwrap().0, v);
    assert_eq!(value(&mut s, b, "y", 0.0).unwrap().0, v, "one revision for the whole transaction");
    let err = s
        .write(&[put(a, "x", "2"), with(Condition::Version(v + 5), put(b, "y", "2")), put(a, "z", "2")], 0.0)
        .unwrap_err();
    assert_eq!(err, StoreError::VersionConflict { key: "\"y\"".into(), index: 1, expected: v + 5, current: v });
    assert_eq!(value(&mut s, a, "x", 0.0).unwrap().1, b"1");
    assert_eq!(value(&mut s, a, "z", 0.0), None);
    // A check guards without writing.
    let check = Write { action: Action::Check, condition: Condition::Version(v), ..put(b, "y", "") };
    let v2 = s.write(&[check, put(a, "x", "3")], 0.0).unwrap();
    assert_eq!(value(&mut s, b, "y", 0.0).unwrap().0, v);
    assert_eq!(value(&mut s, a, "x", 0.0).unwrap().0, v2);
}

#[test]
fn watches_see_keys_and_prefixes_and_replay_from_versions() {
    let (mut s, ns) = store(4);
    let v1 = s.write(&[put(ns, "job/1", "a")], 0.0).unwrap();
    let key = s.watch(ns, b"job/1", false, Start::Now, 16).unwrap();
    let pre = s.watch(ns, b"job/", true, Start::Now, 16).unwrap();
    let v2 = s.write(&[put(ns, "job/1", "b")], 0.0).unwrap();
    let v3 = s.write(&[put(ns, "job/2", "c"), put(ns, "other", "x")], 0.0).unwrap();
    let v4 = s.write(&[del(ns, "job/1")], 0.0).unwrap();
    let got = changes(&mut s);
    assert_eq!(
        got,
        vec![
            (key, "job/1".into(), v2, Kind::Put),
            (key, "job/1".into(), v4, Kind::Delete),
            (pre, "job/1".into(), v2, Kind::Put),
            (pre, "job/2".into(), v3, Kind::Put),
            (pre, "job/1".into(), v4, Kind::Delete),
        ]
    );
    // From a version: exactly the changes after it, from history.
    let replay = s.watch(ns, b"job/", true, Start::After(v1), 16).unwrap();
    let got: Vec<_> = changes(&mut s).into_iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(got, vec![("job/1".into(), v2), ("job/2".into(), v3), ("job/1".into(), v4)]);
    // From the current values: one per live key, then live.
    let current = s.watch(ns, b"", true, Start::Current, 16).unwrap();
    let got: Vec<_> = changes(&mut s).into_iter().map(|c| c.1).collect();
    assert_eq!(got, vec!["job/2".to_string(), "other".into()]);
    s.unwatch(replay).unwrap();
    s.unwatch(current).unwrap();
    assert_eq!(s.unwatch(current).unwrap_err().code(), "UNKNOWN_WATCH");
}

#[test]
fn a_watcher_behind_its_buffer_catches_up_from_history_or_is_told_it_lagged() {
    let (mut s, ns) = store(10);
    let w = s.watch(ns, b"", true, Start::Now, 2).unwrap();
    let versions: Vec<Version> = (0..6).map(|i| s.write(&[put(ns, "k", &i.to_string())], 0.0).unwrap()).collect();
    let got: Vec<Version> = changes(&mut s).into_iter().map(|c| c.2).collect();
    assert_eq!(got, versions, "caught up from history without a gap");
    // Without history to replay from, the watcher is told and ends.
    s.set_history(ns, 0).unwrap();
    for i in 0..4 {
        s.write(&[put(ns, "k", &i.to_string())], 0.0).unwrap();
    }
    let got = changes(&mut s);
    assert_eq!(got.last().unwrap().1, "<lagged>");
    assert_eq!(s.unwatch(w).unwrap_err().code(), "UNKNOWN_WATCH", "a lagged watch has ended");
    // Replaying from below what history holds also lags at once.
    let late = s.watch(ns, b"k", false, Start::After(1), 8).unwrap();
    assert_eq!(changes(&mut s), vec![(late, "<lagged>".into(), 1, Kind::Delete)]);
}

#[test]
fn snapshots_round_trip_and_bad_ones_change_nothing() {
    let (mut s, ns) = store(2);
    let other = s.namespace("other").unwrap();
    let agent = s.writer("agent-7").unwrap();
    s.write(&[put(ns, "a", "1")], 10.0).unwrap();
    s.write(&[Write { writer: agent, ..put(ns, "a", "2") }], 11.0).unwrap();
    let ttl = Write { action: Action::Put { value: b"t", ttl: 50.0 }, ..put(other, "b", "") };
    s.write(&[ttl], 12.0).unwrap();
    let bytes = s.export();

    let mut copy = Store::new(StoreConfig { replica: "elsewhere".into(), ..StoreConfig::default() }).unwrap();
    copy.import(&bytes).unwrap();
    let ns2 = copy.namespace("kv").unwrap();
    let other2 = copy.namespace("other").unwrap();
    assert_eq!(copy.revision(), s.revision());
    let rec = copy.get(ns2, b"a", 12.0).unwrap().unwrap().clone();
    assert_eq!(rec.value.as_ref(), b"2");
    assert_eq!(copy.writer_name(rec.stamp.writer), Some("agent-7"));
    assert_eq!(copy.entry(ns2, b"a", 12.0).unwrap().unwrap().records().count(), 2);
    assert_eq!(copy.next_deadline(), 62.0);
    assert!(copy.get(other2, b"b", 62.0).unwrap().is_none(), "TTLs survive the trip");

    let before = copy.export();
    let err = copy.import(&bytes[..bytes.len() / 2]).unwrap_err();
    assert_eq!(err.code(), "INVALID_SNAPSHOT");
    assert_eq!(copy.export(), before);
}

#[test]
fn every_bit_flip_of_a_snapshot_is_refused_and_changes_nothing() {
    let (mut s, ns) = store(1);
    let agent = s.writer("agent-7").unwrap();
    s.write(&[put(ns, "a", "{\"n\":1}")], 10.0).unwrap();
    s.write(&[Write { writer: agent, ..put(ns, "a", "[2]") }, put(ns, "b", "\"x\"")], 11.0).unwrap();
    let bytes = s.export();
    assert_eq!(seal_snapshot(&bytes[12..]), bytes, "export seals its body as seal_snapshot does");
    let mut copy = Store::new(StoreConfig::default()).unwrap();
    let before = copy.export();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let err = copy.import(&flipped).unwrap_err();
        assert_eq!(err.code(), "INVALID_SNAPSHOT", "bit {bit}: {err}");
    }
    // Cut short, or with bytes added, it is refused too.
    for len in 0..bytes.len() {
        assert_eq!(copy.import(&bytes[..len]).unwrap_err().code(), "INVALID_SNAPSHOT", "{len} bytes");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(copy.import(&longer).unwrap_err().code(), "INVALID_SNAPSHOT");
    assert_eq!(copy.export(), before);
    copy.import(&bytes).unwrap();
    assert_eq!(copy.revision(), s.revision());
    // Past the checksum, a body that does not decode is refused as a snapshot, not as a key or
    // a name (a flipped byte in a key once came back as INVALID_KEY).
    let body = &bytes[12..];
    for at in 0..body.len() {
        let mut damaged = body.to_vec();
        damaged[at] ^= 0x80;
        if let Err(err) = copy.import(&seal_snapshot(&damaged)) {
            assert_eq!(err.code(), "INVALID_SNAPSHOT", "byte {at}: {err}");
        }
    }
}

#[test]
fn an_entry_encodes_in_place_exactly_as_its_state() {
    let (mut s, ns) = store(3);
    let agent = s.writer("agent-2").unwrap();
    s.write(&[put(ns, "k", "1")], 5.0).unwrap();
    s.write(&[Write { writer: agent, action: Action::Put { value: b"22", ttl: 9.0 }, ..put(ns, "k", "") }], 6.0)
        .unwrap();
    s.write(&[del(ns, "k")], 7.0).unwrap();
    let mut out = b"prefix".to_vec();
    assert!(s.encode_entry(ns, b"k", &mut out));
    let state = s.entry_state(ns, b"k").unwrap();
    assert_eq!(&out[6..], &state.to_bytes()[..]);
    assert!(EntryState::from_bytes(&out[6..]).is_ok());
    assert!(!s.encode_entry(ns, b"missing", &mut out));
}

#[test]
fn a_paused_watch_keeps_its_changes_and_catches_up_when_resumed() {
    let (mut s, ns) = store(100);
    let w = s.watch(ns, b"", true, Start::Now, 4).unwrap();
    s.set_watch_paused(w, true).unwrap();
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    let txn: Vec<Write<'_>> = keys.iter().map(|k| put(ns, k, "v")).collect();
    let v = s.write(&txn, 0.0).unwrap();
    for i in 0..6 {
        s.write(&[put(ns, "solo", &i.to_string())], 0.0).unwrap();
    }
    assert!(changes(&mut s).is_empty(), "a paused watch delivers nothing");
    s.set_watch_paused(w, false).unwrap();
    let got = changes(&mut s);
    assert_eq!(got.len(), 16, "{got:?}");
    assert!(got[..10].iter().all(|c| c.2 == v), "the transaction's changes stay together");
    assert_eq!(s.set_watch_paused(999, true).unwrap_err().code(), "UNKNOWN_WATCH");
}

#[test]
fn an_import_into_a_written_store_never_reuses_versions() {
    let (mut s, ns) = store(0);
    let snapshot = {
        let (mut other, ons) = store(0);
        other.write(&[put(ons, "a", "theirs")], 0.0).unwrap();
        other.export()
    };
    let mine = s.write(&[put(ns, "a", "mine")], 0.0).unwrap();
    s.write(&[put(ns, "gone", "x")], 0.0).unwrap();
    assert_eq!(mine, 1);
    s.import(&snapshot).unwrap();
    // The imported "a" is version 1 in the snapshot: here it must not be 1 again.
    let imported = s.get(ns, b"a", 0.0).unwrap().unwrap().version;
    assert!(imported > 2, "imported at {imported}");
    let stale = s.write(&[with(Condition::Version(mine), put(ns, "a", "cas"))], 0.0).unwrap_err();
    assert_eq!(stale.code(), "VERSION_CONFLICT");
    // A watcher resuming from before the import cannot see "gone" go: it is told it lagged.
    let late = s.watch(ns, b"", true, Start::After(2), 8).unwrap();
    assert_eq!(changes(&mut s), vec![(late, "<lagged>".into(), 2, Kind::Delete)]);
}

#[test]
fn importing_again_and_again_grows_versions_by_what_was_imported() {
    let (mut s, ns) = store(0);
    for i in 0..1000 {
        s.write(&[put(ns, &format!("k{}", i % 10), "v")], 0.0).unwrap();
    }
    for _ in 0..100 {
        let snapshot = s.export();
        s.import(&snapshot).unwrap();
    }
    // Each import renumbers the ten kept versions after the store's own: linear, not doubling.
    assert_eq!(s.revision(), 1000 + 100 * 10);
}

#[test]
fn a_key_watch_lags_when_its_key_was_purged_and_written_again() {
    let (mut s, ns) = store(4);
    let v1 = s.write(&[put(ns, "k", "1")], 0.0).unwrap();
    s.write(&[put(ns, "k", "2")], 0.0).unwrap();
    s.purge(ns, b"k", 0.0).unwrap();
    s.write(&[put(ns, "k", "4")], 0.0).unwrap();
    let w = s.watch(ns, b"k", false, Start::After(v1), 8).unwrap();
    assert_eq!(changes(&mut s), vec![(w, "<lagged>".into(), v1, Kind::Delete)]);
}

#[test]
fn a_deletion_wins_over_older_remote_writes_while_its_tombstone_lasts() {
    let (mut s, ns) = store(0);
    let remote = s.writer("replica-b").unwrap();
    let change = |kind, wall| RemoteChange {
        ns,
        key: b"k",
        kind,
        value: b"v",
        hlc: Hlc { wall, logical: 0 },
        writer: remote,
        expires: f64::INFINITY,
    };
    s.write(&[put(ns, "k", "local")], 1_000.0).unwrap();
    s.write(&[del(ns, "k")], 2_000.0).unwrap();
    assert_eq!(s.merge(&change(Kind::Put, 1_500), Condition::Any, true, 2_001.0).unwrap(), 0, "older put loses");
    assert!(value(&mut s, ns, "k", 2_001.0).is_none());
    // A remote deletion of a key unknown here is recorded, so its older writes lose too.
    let unknown = |kind, wall| RemoteChange { key: b"fresh", ..change(kind, wall) };
    assert!(s.merge(&unknown(Kind::Delete, 3_000), Condition::Any, true, 3_001.0).unwrap() > 0);
    assert_eq!(s.merge(&unknown(Kind::Put, 2_500), Condition::Any, true, 3_002.0).unwrap(), 0);
    assert!(value(&mut s, ns, "fresh", 3_002.0).is_none());
    // A later remote deletion of a deleted key moves the tombstone's stamp: no new change.
    let w = s.watch(ns, b"fresh", false, Start::Now, 4).unwrap();
    let before = s.revision();
    assert_eq!(s.merge(&unknown(Kind::Delete, 4_000), Condition::Any, true, 4_001.0).unwrap(), 0);
    assert_eq!(s.revision(), before);
    assert!(changes(&mut s).iter().all(|c| c.0 != w));
    assert_eq!(
        s.merge(&unknown(Kind::Put, 3_500), Condition::Any, true, 4_002.0).unwrap(),
        0,
        "the newer tombstone wins"
    );
}

#[test]
fn a_key_watch_does_not_lag_for_other_keys_going_away() {
    let (mut s, ns) = store(4);
    let v = s.write(&[put(ns, "watched", "1")], 0.0).unwrap();
    s.write(&[put(ns, "other", "1")], 0.0).unwrap();
    s.purge(ns, b"other", 0.0).unwrap();
    s.write(&[put(ns, "watched", "2")], 0.0).unwrap();
    let w = s.watch(ns, b"watched", false, Start::After(v), 8).unwrap();
    let got: Vec<_> = changes(&mut s).into_iter().map(|c| (c.0, c.1)).collect();
    assert_eq!(got, vec![(w, "watched".to_string())]);
}

#[test]
fn a_watch_from_the_current_values_reports_a_removal_it_can_no_longer_deliver() {
    let (mut s, ns) = store(0);
    s.write(&[put(ns, "a", "1"), put(ns, "b", "1"), put(ns, "c", "1")], 0.0).unwrap();
    let w = s.watch(ns, b"", true, Start::Current, 1).unwrap();
    // Deliver the first current value only, then remove a key before the catch-up goes on.
    s.drain(|_, _| false);
    let mut first = Vec::new();
    s.drain(|_, d| {
        first.push(d.clone());
        false
    });
    s.purge(ns, b"a", 0.0).unwrap();
    let rest = changes(&mut s);
    assert!(rest.iter().any(|c| c.0 == w && c.1 == "<lagged>"), "{first:?} {rest:?}");
}

#[test]
fn drain_asks_for_room_for_a_record_larger_than_its_buffer() {
    let (mut s, ns) = store(0);
    s.watch(ns, b"big", false, Start::Now, 4).unwrap();
    let big = "x".repeat(500);
    s.write(&[put(ns, "big", &big)], 0.0).unwrap();
    let mut small = vec![0u8; 64];
    let needed = wire::drain(&mut s, &mut small);
    assert_eq!(needed, -(wire::record_len(3, 500) as f64));
    let mut room = vec![0u8; -needed as usize];
    assert_eq!(wire::drain(&mut s, &mut room), (2 * wire::record_len(3, 500) + 1) as f64);
}

#[test]
fn import_tells_every_watcher_it_lagged() {
    let (mut s, ns) = store(0);
    let w = s.watch(ns, b"a", false, Start::Now, 4).unwrap();
    let snapshot = s.export();
    s.import(&snapshot).unwrap();
    assert_eq!(changes(&mut s), vec![(w, "<lagged>".into(), 0, Kind::Delete)]);
}

#[test]
fn merges_keep_the_last_writer_by_clock_then_name() {
    let (mut s, ns) = store(0);
    let remote = s.writer("replica-b").unwrap();
    s.write(&[put(ns, "a", "local")], 1000.0).unwrap();
    let change = |wall, value: &'static str| RemoteChange {
        ns,
        key: b"a",
        kind: Kind::Put,
        value: value.as_bytes(),
        hlc: Hlc { wall, logical: 0 },
        writer: remote,
        expires: f64::INFINITY,
    };
    assert_eq!(s.merge(&change(900, "old"), Condition::Any, true, 1001.0).unwrap(), 0);
    assert_eq!(value(&mut s, ns, "a", 1001.0).unwrap().1, b"local");
    let v = s.merge(&change(2000, "newer"), Condition::Any, true, 1002.0).unwrap();
    assert!(v > 0);
    assert_eq!(value(&mut s, ns, "a", 1002.0).unwrap().1, b"newer");
    assert!(s.clock() > Hlc { wall: 2000, logical: 0 }, "the clock moved past the remote stamp");
    let next = s.write(&[put(ns, "a", "after")], 1003.0).unwrap();
    let stamp = s.get(ns, b"a", 1003.0).unwrap().unwrap().stamp;
    assert!(next > v && stamp.hlc > Hlc { wall: 2000, logical: 0 });
}

#[test]
fn a_merged_put_expires_at_its_writers_deadline_with_the_puts_stamp() {
    let (mut s, ns) = store(0);
    let remote = s.writer("replica-b").unwrap();
    let w = s.watch(ns, b"", true, Start::Now, 16).unwrap();
    let hlc = Hlc { wall: 1000, logical: 3 };
    let change = RemoteChange { ns, key: b"a", kind: Kind::Put, value: b"v", hlc, writer: remote, expires: 1500.0 };
    let v = s.merge(&change, Condition::Any, true, 1001.0).unwrap();
    assert_eq!(s.get(ns, b"a", 1499.0).unwrap().map(|r| r.version), Some(v));
    assert_eq!(s.next_deadline(), 1500.0);
    s.expire(1500.0);
    assert_eq!(s.get(ns, b"a", 1500.0).unwrap().map(|r| r.version), None);
    // The watch was handed the put with its deadline, then the expiry stamped as the put was.
    let mut seen = Vec::new();
    s.drain(|watch, d| {
        if let Delivery::Change { record, expires, .. } = d {
            seen.push((watch, record.kind, record.stamp, expires.0));
        }
        true
    });
    let stamp = Stamp { hlc, writer: remote };
    assert_eq!(seen, vec![(w, Kind::Put, stamp, 1500.0), (w, Kind::Expire, stamp, f64::INFINITY)]);
    // Forwarded as a deletion, an expiry stamped as its put ends that put where it is live.
    let other = RemoteChange { key: b"b", expires: f64::INFINITY, ..change };
    assert!(s.merge(&other, Condition::Any, true, 1500.0).unwrap() > 0);
    let expiry = RemoteChange { kind: Kind::Expire, value: b"", expires: f64::INFINITY, ..other };
    assert!(s.merge(&expiry, Condition::Any, true, 1500.0).unwrap() > 0);
    assert_eq!(s.get(ns, b"b", 1500.0).unwrap().map(|r| r.version), None);
    // A later write from anywhere wins over the expiry; the same put again does not bring it back.
    assert_eq!(s.merge(&change, Condition::Any, true, 1501.0).unwrap(), 0);
    let later = RemoteChange { hlc: Hlc { wall: 1200, logical: 0 }, expires: f64::INFINITY, ..change };
    assert!(s.merge(&later, Condition::Any, true, 1502.0).unwrap() > 0);
}

#[test]
fn the_wire_layout_round_trips_writes_and_records() {
    let (mut s, ns) = store(0);
    let mut buf = vec![0u8; 256];
    let key = b"hello";
    let value = b"world!";
    buf[0] = 1;
    buf[2..4].copy_from_slice(&(key.len() as u16).to_le_bytes());
    buf[4..8].copy_from_slice(&ns.to_le_bytes());
    buf[8..12].copy_from_slice(&(value.len() as u32).to_le_bytes());
    buf[32..37].copy_from_slice(key);
    buf[37..43].copy_from_slice(value);
    let v = wire::write(&mut s, &buf, 1, 0.0).unwrap();
    assert_eq!(v, 1.0);
    buf[1] = 1; // create-if-absent now fails: reported as data
    assert_eq!(wire::write(&mut s, &buf, 1, 0.0).unwrap(), -1.0);
    assert_eq!(wire::conflict(&mut s), vec![0.0, 0.0, 1.0]);

    let mut out = vec![0u8; 128];
    out[..5].copy_from_slice(key);
    let len = wire::get(&mut s, ns, 5, 0.0, 0.0, &mut out).unwrap();
    assert_eq!(len as usize, wire::record_len(0, value.len()));
    assert_eq!(out[4], Kind::Put as u8);
    assert_eq!(f64::from_le_bytes(out[16..24].try_into().unwrap()), 1.0);
    assert_eq!(&out[wire::RECORD_HEADER..wire::RECORD_HEADER + 6], value);
    out[..5].copy_from_slice(b"nope!");
    assert_eq!(wire::get(&mut s, ns, 5, 0.0, 0.0, &mut out).unwrap(), -1.0);
    let mut tiny = vec![0u8; 8];
    tiny[..5].copy_from_slice(key);
    assert_eq!(wire::get(&mut s, ns, 5, 0.0, 0.0, &mut tiny).unwrap() as usize, 56, "too small: asks for room");
}

// ---- the store against a plain model ----

#[derive(Debug, Clone)]
enum Op {
    Put { ns: u32, key: u8, value: u8, ttl: u8 },
    Create { ns: u32, key: u8, value: u8 },
    Cas { ns: u32, key: u8, value: u8, stale: bool },
    Delete { ns: u32, key: u8 },
    DeleteIf { ns: u32, key: u8, stale: bool },
    Txn(Vec<(u32, u8, Option<u8>, bool)>),
    Advance(u8),
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    let ns = 0u32..2;
    let key = 0u8..4;
    prop_oneof![
        4 => (ns.clone(), key.clone(), any::<u8>(), 0u8..4).prop_map(|(ns, key, value, ttl)| Op::Put { ns, key, value, ttl }),
        1 => (ns.clone(), key.clone(), any::<u8>()).prop_map(|(ns, key, value)| Op::Create { ns, key, value }),
        2 => (ns.clone(), key.clone(), any::<u8>(), any::<bool>()).prop_map(|(ns, key, value, stale)| Op::Cas { ns, key, value, stale }),
        1 => (ns.clone(), key.clone()).prop_map(|(ns, key)| Op::Delete { ns, key }),
        1 => (ns.clone(), key.clone(), any::<bool>()).prop_map(|(ns, key, stale)| Op::DeleteIf { ns, key, stale }),
        1 => prop::collection::vec((ns.clone(), key.clone(), prop::option::of(any::<u8>()), any::<bool>()), 1..4).prop_map(Op::Txn),
        1 => (1u8..40).prop_map(Op::Advance),
        1 => Just(Op::Drain),
    ]
}

/// How long the model's store keeps tombstones: shorter than a few `Advance` steps, so runs
/// forget deleted keys as well as keep them.
const MODEL_TOMBSTONE_MS: f64 = 30.0;

/// (namespace, key, Some(value) for a put / None for a delete, condition)
type ModelWrite = (u32, u8, Option<u8>, Condition);

/// (version, Some(value) for a put / None for a deletion or expiry)
type ModelRecord = (Version, Option<u8>);

#[derive(Debug, Default, Clone)]
struct ModelEntry {
    records: Vec<ModelRecord>,
    expires: f64,
}

struct Model {
    keep: usize,
    revision: Version,
    keys: BTreeMap<(u32, u8), ModelEntry>,
    /// Every change to namespace 0, in order: (version, key, value).
    log: Vec<(Version, u8, Option<u8>)>,
}

impl Model {
    fn live(&self, ns: u32, key: u8) -> Version {
        self.keys.get(&(ns, key)).and_then(|e| e.records.last()).filter(|r| r.1.is_some()).map_or(0, |r| r.0)
    }

    fn record(&mut self, ns: u32, key: u8, version: Version, value: Option<u8>, expires: f64) {
        let keep = self.keep;
        let entry = self.keys.entry((ns, key)).or_default();
        entry.records.push((version, value));
        entry.expires = expires;
        if entry.records.len() > keep + 1 {
            entry.records.remove(0);
        }
        if ns == 0 {
            self.log.push((version, key, value));
        }
    }

    /// Tombstones past their time are forgotten (no revision); values past their TTL expire,
    /// each a revision, in deadline order.
    fn expire(&mut self, now: f64) {
        self.keys.retain(|_, e| e.records.last().is_some_and(|r| r.1.is_some()) || e.expires > now);
        let mut due: Vec<(f64, u32, u8)> = self
            .keys
            .iter()
            .filter(|(_, e)| e.records.last().is_some_and(|r| r.1.is_some()) && e.expires <= now)
            .map(|(&(ns, key), e)| (e.expires, ns, key))
            .collect();
        due.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        for (_, ns, key) in due {
            self.revision += 1;
            self.record(ns, key, self.revision, None, now + MODEL_TOMBSTONE_MS);
        }
    }

    /// Applies conditional writes (ns, key, Some(value) put / None delete, expected version or
    /// None for any) as one transaction; `Err(())` on a failed condition.
    fn write(&mut self, writes: &[(u32, u8, Option<u8>, Option<Version>)], now: f64, ttl: f64) -> Result<Version, ()> {
        self.expire(now);
        for &(ns, key, _, expected) in writes {
            if expected.is_some_and(|v| v != self.live(ns, key)) {
                return Err(());
            }
        }
        let changes = writes.iter().any(|&(ns, key, value, _)| value.is_some() || self.live(ns, key) != 0);
        if !changes {
            return Ok(0);
        }
        self.revision += 1;
        let version = self.revision;
        for &(ns, key, value, _) in writes {
            if value.is_none() && self.live(ns, key) == 0 {
                continue;
            }
            let expires = match value {
                Some(_) if ttl > 0.0 => now + ttl,
                Some(_) => f64::INFINITY,
                None => now + MODEL_TOMBSTONE_MS,
            };
            self.record(ns, key, version, value, expires);
        }
        Ok(version)
    }
}

/// Takes the model run's watch deliveries: each change as (version, key index, value of a
/// put), and the version after which the watcher lagged, if it did.
fn watched(s: &mut Store, names: &[String], seen: &mut Vec<(Version, u8, Option<u8>)>, lagged: &mut Option<Version>) {
    s.drain(|_, d| {
        match d {
            Delivery::Change { key, record, .. } => {
                let k = names.iter().position(|n| n.as_bytes() == key.as_ref()).unwrap() as u8;
                seen.push((record.version, k, record.kind.is_put().then(|| record.value[0])));
            }
            Delivery::Lagged { after } => *lagged = Some(*after),
        }
        true
    });
}

fn key_name(key: u8) -> String {
    format!("key-{key}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_store_matches_a_plain_model(keep in 0usize..3, ops in prop::collection::vec(op(), 1..60)) {
        let mut s = Store::new(StoreConfig { history: keep, tombstone_ms: MODEL_TOMBSTONE_MS, ..StoreConfig::default() }).unwrap();
        let spaces = [s.namespace("a").unwrap(), s.namespace("b").unwrap()];
        let mut model = Model { keep, revision: 0, keys: BTreeMap::new(), log: Vec::new() };
        let watch = s.watch(spaces[0], b"", true, Start::Now, 3).unwrap();
        let mut seen: Vec<(Version, u8, Option<u8>)> = Vec::new();
        let mut lagged = None;
        let mut now = 0.0;
        let names: Vec<String> = (0..4).map(key_name).collect();
        for op in ops {
            let (writes, ttl): (Vec<ModelWrite>, f64) = match op {
                Op::Put { ns, key, value, ttl } => (vec![(ns, key, Some(value), Condition::Any)], f64::from(ttl) * 10.0),
                Op::Create { ns, key, value } => (vec![(ns, key, Some(value), Condition::Absent)], 0.0),
                Op::Cas { ns, key, value, stale } => {
                    s.expire(now);
                    let v = model.live(ns, key) + u64::from(stale);
                    (vec![(ns, key, Some(value), Condition::Version(v))], 0.0)
                }
                Op::Delete { ns, key } => (vec![(ns, key, None, Condition::Any)], 0.0),
                Op::DeleteIf { ns, key, stale } => {
                    let v = model.live(ns, key) + u64::from(stale);
                    (vec![(ns, key, None, Condition::Version(v))], 0.0)
                }
                Op::Txn(items) => {
                    let mut seen_keys = std::collections::BTreeSet::new();
                    let items: Vec<_> = items.into_iter().filter(|i| seen_keys.insert((i.0, i.1))).collect();
                    let writes = items.into_iter().map(|(ns, key, value, guard)| {
                        let condition = if guard { Condition::Version(model.live(ns, key)) } else { Condition::Any };
                        (ns, key, value, condition)
                    });
                    (writes.collect(), 0.0)
                }
                Op::Advance(ms) => {
                    now += f64::from(ms);
                    (Vec::new(), 0.0)
                }
                Op::Drain => {
                    watched(&mut s, &names, &mut seen, &mut lagged);
                    (Vec::new(), 0.0)
                }
            };
            if writes.is_empty() {
                continue;
            }
            // The model's expected versions must be read after expiring what is due.
            model.expire(now);
            let values: Vec<[u8; 1]> = writes.iter().map(|w| [w.2.unwrap_or(0)]).collect();
            let real: Vec<Write<'_>> = writes.iter().zip(&values).map(|(&(ns, key, value, condition), v)| Write {
                ns: spaces[ns as usize],
                key: names[key as usize].as_bytes(),
                condition,
                action: if value.is_some() { Action::Put { value: v, ttl } } else { Action::Delete },
                writer: LOCAL_WRITER,
            }).collect();
            let expected: Vec<_> = writes.iter().map(|&(ns, key, value, c)| (ns, key, value, match c {
                Condition::Any => None,
                Condition::Absent => Some(0),
                Condition::Version(v) => Some(v),
            })).collect();
            let got = s.write(&real, now);
            let want = model.write(&expected, now, ttl);
            match (got, want) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(StoreError::VersionConflict { .. }), Err(())) => {}
                (a, b) => prop_assert!(false, "store {:?} vs model {:?}", a, b),
            }
        }
        s.expire(now);
        model.expire(now);
        prop_assert_eq!(s.revision(), model.revision);
        for ns in 0..2u32 {
            for key in 0..4u8 {
                let live = s.get(spaces[ns as usize], names[key as usize].as_bytes(), now).unwrap().map(|r| (r.version, r.value[0]));
                let want = model.keys.get(&(ns, key)).and_then(|e| e.records.last()).and_then(|r| r.1.map(|v| (r.0, v)));
                prop_assert_eq!(live, want);
                let kept: Vec<ModelRecord> = s.entry(spaces[ns as usize], names[key as usize].as_bytes(), now).unwrap()
                    .map(|e| e.records().map(|r| (r.version, r.kind.is_put().then(|| r.value[0]))).collect())
                    .unwrap_or_default();
                prop_assert_eq!(kept, model.keys.get(&(ns, key)).map(|e| e.records.clone()).unwrap_or_default());
            }
        }
        // The watcher saw every change of namespace 0 in version order, or was told where it
        // lagged, and only when history had dropped a change after that point.
        watched(&mut s, &names, &mut seen, &mut lagged);
        let mut log = model.log.clone();
        log.sort_by_key(|c| (c.0, c.1));
        let mut sorted = seen.clone();
        sorted.sort_by_key(|c| (c.0, c.1));
        prop_assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "in version order");
        match lagged {
            None => prop_assert_eq!(sorted, log),
            Some(after) => {
                prop_assert_eq!(&sorted[..], &log[..sorted.len()]);
                prop_assert!(sorted.last().map_or(0, |c| c.0) <= after);
                let kept: usize = model.keys.iter().filter(|((ns, _), _)| *ns == 0)
                    .map(|(_, e)| e.records.iter().filter(|r| r.0 > after).count()).sum();
                let missed = log.iter().filter(|c| c.0 > after).count();
                prop_assert!(kept < missed, "lagged although history held every change after {}", after);
                prop_assert_eq!(s.unwatch(watch).unwrap_err().code(), "UNKNOWN_WATCH");
            }
        }
    }
}
