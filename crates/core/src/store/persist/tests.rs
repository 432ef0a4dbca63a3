//! The durability rules against the in-memory engine: acknowledged writes survive a crash at any
//! point, transactions stay whole, a failed or torn commit is never acknowledged, and a reopen
//! refuses what does not check out.

use std::collections::VecDeque;
use std::sync::Arc;

use proptest::prelude::*;

use super::memory::Durable;
use super::*;
use crate::store::{Action, Condition, StoreConfig, Write};

const PATH: &str = "/data/store.redb";

fn fresh() -> Store {
    Store::new(StoreConfig { history: 2, ..StoreConfig::default() }).unwrap()
}

fn journal(each: bool) -> Journal {
    Journal::new(Arc::new(Progress::new(PATH)), each)
}

/// A transaction writing `text` to keys a..e of `ns` as `writer`: whole or not at all.
fn txn(store: &mut Store, ns: u32, writer: u32, text: &str) {
    let batch: Vec<Write<'_>> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|key| Write {
            ns,
            key: key.as_bytes(),
            condition: Condition::Any,
            action: Action::Put { value: text.as_bytes(), ttl: 0.0 },
            writer,
        })
        .collect();
    store.write(&batch, 0.0).unwrap();
}

fn reopen(durable: &Durable) -> Result<Store, PersistError> {
    let mut store = fresh();
    recover(&mut Memory::reopen(durable.clone()), &mut store)?;
    Ok(store)
}

fn value(store: &mut Store, ns: &str, key: &str) -> Option<String> {
    let ns = store.namespace(ns).unwrap();
    store.get(ns, key.as_bytes(), 0.0).unwrap().map(|r| String::from_utf8(r.value.to_vec()).unwrap())
}

/// One run of the writing side: turns of transactions (new writers and namespaces appear as it
/// goes), each turn ending in a commit request, every batch queued for the engine. Returns the
/// queue and, per transaction, (namespace, value, the ticket that acknowledges it).
fn write_turns(turns: &[usize], each: bool) -> (VecDeque<Batch>, Vec<(String, String, u64)>) {
    let mut store = fresh();
    recover(&mut Memory::default(), &mut store).unwrap();
    let mut journal = journal(each);
    let mut queue = VecDeque::new();
    let mut txns = Vec::new();
    let mut n = 0;
    for &size in turns {
        for _ in 0..size {
            let name = format!("ns{}", n / 50);
            let ns = store.namespace(&name).unwrap();
            let writer = store.writer(&format!("agent-{}", n % 7)).unwrap();
            let v = format!("v{n}");
            txn(&mut store, ns, writer, &v);
            journal
                .record(&mut store, |b| {
                    queue.push_back(b);
                    Ok(())
                })
                .unwrap();
            txns.push((name, v, journal.submitted()));
            n += 1;
        }
        journal
            .submit(|b| {
                queue.push_back(b);
                Ok(())
            })
            .unwrap();
    }
    (queue, txns)
}

/// Runs the engine's writer over `queue` until it has taken `crash_after` batches (it still
/// commits what it was asked to by then), as a process killed at that point would. Returns the
/// engine and the tickets it acknowledged.
fn run_until(queue: &VecDeque<Batch>, crash_after: usize, group: bool) -> (Memory, Vec<u64>) {
    let mut left: VecDeque<Batch> = queue.iter().take(crash_after).map(copy).collect();
    let mut committer = Committer::new(Memory::default(), None);
    let mut acks = Vec::new();
    let left = std::cell::RefCell::new(&mut left);
    committer.run(
        group,
        || left.borrow_mut().pop_front(),
        || left.borrow_mut().pop_front(),
        |outcome| {
            acks.push(outcome.unwrap());
        },
    );
    (committer.into_engine(), acks)
}

fn copy(batch: &Batch) -> Batch {
    match batch {
        Batch::Rows { rows, revision, clock } => Batch::Rows { rows: rows.clone(), revision: *revision, clock: *clock },
        Batch::Meta(meta) => Batch::Meta(meta.clone()),
        Batch::Commit { ticket } => Batch::Commit { ticket: *ticket },
    }
}

/// Every acknowledged transaction is on disk after a reopen, and every transaction is whole.
fn check_crash(queue: &VecDeque<Batch>, txns: &[(String, String, u64)], crash_after: usize, group: bool) {
    let (engine, acks) = run_until(queue, crash_after, group);
    assert!(acks.windows(2).all(|w| w[0] < w[1]), "tickets are acknowledged in order: {acks:?}");
    let acked = acks.last().copied().unwrap_or(0);
    let mut store = reopen(engine.durable()).unwrap_or_else(|e| panic!("crash after {crash_after}: {e}"));
    for (name, v, ticket) in txns {
        let values: Vec<_> = ["a", "b", "c", "d", "e"].iter().map(|k| value(&mut store, name, k)).collect();
        assert!(values.iter().all(|x| *x == values[0]), "crash after {crash_after}: a torn transaction {values:?}");
        if *ticket <= acked {
            let at: u64 = values[0].as_deref().unwrap_or("v0")[1..].parse().unwrap();
            let mine: u64 = v[1..].parse().unwrap();
            assert!(at >= mine, "crash after {crash_after}: acknowledged {v} lost (found {values:?})");
        }
    }
}

#[test]
fn a_crash_anywhere_keeps_what_was_acknowledged_and_every_transaction_whole() {
    // Turns big enough that rows go in several chunks within a turn (128 rows a chunk).
    let (queue, txns) = write_turns(&[3, 40, 1, 90, 7, 60], false);
    assert!(queue.iter().filter(|b| matches!(b, Batch::Rows { .. })).count() > 6, "rows were chunked within turns");
    for crash_after in 0..=queue.len() {
        check_crash(&queue, &txns, crash_after, true);
        check_crash(&queue, &txns, crash_after, false);
    }
}

#[test]
fn every_mode_commits_each_call_on_its_own() {
    let (queue, txns) = write_turns(&[5, 5], true);
    let tickets: Vec<u64> = txns.iter().map(|t| t.2).collect();
    assert_eq!(tickets, (1..=10).collect::<Vec<_>>());
    let (_, acks) = run_until(&queue, queue.len(), false);
    assert_eq!(acks, tickets, "no empty commit request for a turn with nothing new");
    for crash_after in 0..=queue.len() {
        check_crash(&queue, &txns, crash_after, false);
    }
}

#[test]
fn group_commit_acknowledges_queued_requests_with_one_commit() {
    let (queue, _) = write_turns(&[2, 2, 2, 2], false);
    let (engine, acks) = run_until(&queue, queue.len(), true);
    assert_eq!(acks, vec![4], "four requests queued up: one commit");
    assert_eq!(engine.commits(), 1);
    let (engine, acks) = run_until(&queue, queue.len(), false);
    assert_eq!(acks, vec![1, 2, 3, 4]);
    assert_eq!(engine.commits(), 4);
}

#[test]
fn the_meta_goes_ahead_of_the_rows_that_need_it() {
    let (queue, _) = write_turns(&[120], false);
    // Each new namespace or writer is a meta batch before its rows; rows staged before it go first.
    let mut namespaces = 0;
    for batch in &queue {
        match batch {
            Batch::Meta(meta) => namespaces = reopen_meta(meta),
            Batch::Rows { rows, .. } => {
                let names = row_namespaces(rows);
                assert!(names.iter().all(|n| *n < namespaces), "a row of namespace {names:?} before its meta");
            }
            Batch::Commit { .. } => {}
        }
    }
}

fn reopen_meta(meta: &Meta) -> usize {
    let mut store = fresh();
    store.load(meta, Vec::new()).unwrap();
    (0..u32::MAX).take_while(|&n| store.namespace_name(n).is_some()).count()
}

fn row_namespaces(rows: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    let word = |at: usize| u32::from_le_bytes(rows[at..at + 4].try_into().unwrap());
    while at < rows.len() {
        let key_len = word(at) as usize;
        let key = &rows[at + 4..at + 4 + key_len];
        let name = std::str::from_utf8(&key[..key.iter().position(|&b| b == 0).unwrap()]).unwrap();
        out.push(name[2..].parse().unwrap());
        at += 4 + key_len;
        let value_len = word(at);
        at += 4 + if value_len == REMOVED { 0 } else { value_len as usize };
    }
    out
}

#[test]
fn a_reopen_reads_back_the_same_store() {
    let mut store = fresh();
    recover(&mut Memory::default(), &mut store).unwrap();
    let mut journal = journal(false);
    let mut committer = Committer::new(Memory::default(), None);
    let mut apply = |store: &mut Store, journal: &mut Journal| {
        journal.record(store, |b| committer.apply(b)).unwrap();
    };
    let ns = store.namespace("kv").unwrap();
    apply(&mut store, &mut journal);
    txn(&mut store, ns, 0, "one");
    apply(&mut store, &mut journal);
    let planner = store.writer("planner").unwrap();
    txn(&mut store, ns, planner, "two");
    apply(&mut store, &mut journal);
    store.write(&[Write { ns, key: b"a", condition: Condition::Any, action: Action::Delete, writer: 0 }], 0.0).unwrap();
    store
        .write(
            &[Write {
                ns,
                key: b"t",
                condition: Condition::Any,
                action: Action::Put { value: b"x", ttl: 50.0 },
                writer: 0,
            }],
            0.0,
        )
        .unwrap();
    apply(&mut store, &mut journal);
    store.purge(ns, b"b", 0.0).unwrap();
    apply(&mut store, &mut journal);
    journal.submit(|b| committer.apply(b)).unwrap();
    committer.commit().unwrap();

    let mut again = reopen(committer.engine().durable()).unwrap();
    assert_eq!(again.export(), store.export(), "the reopened store is the store");
    assert_eq!(again.revision(), store.revision());
    assert_eq!(value(&mut again, "kv", "c").as_deref(), Some("two"));
    assert_eq!(value(&mut again, "kv", "a"), None);
    assert_eq!(value(&mut again, "kv", "b"), None);
}

#[test]
fn nothing_new_commits_nothing() {
    let mut committer = Committer::new(Memory::default(), None);
    committer.commit().unwrap();
    assert_eq!(committer.engine().commits(), 0);
    let mut journal = journal(false);
    journal.submit(|_| panic!("nothing to hand over")).unwrap();
    assert_eq!(journal.submitted(), 0);
}

#[test]
fn a_failed_commit_acknowledges_nothing_more_and_refuses_every_later_call() {
    let (queue, txns) = write_turns(&[4, 4, 4, 4], false);
    let mut left: VecDeque<Batch> = queue.iter().map(copy).collect();
    let mut engine = Memory::default();
    engine.faults.fail_commit = Some(2);
    let mut committer = Committer::new(engine, None);
    let progress = Arc::new(Progress::new(PATH));
    let mut told = Vec::new();
    let left = std::cell::RefCell::new(&mut left);
    committer.run(false, || left.borrow_mut().pop_front(), || None, |outcome| told.push(progress.record(outcome)));
    assert_eq!(told, vec![1.0, 2.0, FAILED_TICKET], "two commits acknowledged, then the failure, once");
    assert_eq!(progress.committed(), 2);

    let err = progress.check().unwrap_err();
    assert_eq!(err.code(), "STORE_IO");
    assert_eq!(err.to_string(), format!("{PATH:?}: commit 2 failed (injected)"));
    assert!(matches!(&err, PersistError::Failed { cause, .. } if matches!(**cause, PersistError::Io(_))));
    // Only the first failure counts.
    progress.record(Err(PersistError::Stopped));
    assert_eq!(progress.check().unwrap_err(), err);
    let store_error = StoreError::from(err.clone());
    assert_eq!(store_error.code(), "STORE_IO");
    assert!(store_error.to_string().starts_with("the store's disk failed: \"/data/store.redb\""));

    // The writing side refuses before it hands anything over.
    let mut journal = Journal::new(Arc::clone(&progress), false);
    let mut store = fresh();
    assert_eq!(journal.check().unwrap_err(), err);
    assert_eq!(journal.record(&mut store, |_| panic!("nothing after a failure")).unwrap_err(), err);
    assert_eq!(journal.submit(|_| panic!("nothing after a failure")).unwrap_err(), err);

    // What was acknowledged is on disk; nothing of the failed commit is.
    let mut store = reopen(committer.engine().durable()).unwrap();
    for (name, v, ticket) in &txns {
        let found = value(&mut store, name, "a");
        if *ticket <= 2 {
            assert!(found.is_some(), "acknowledged {v} lost");
        }
    }
    assert_eq!(value(&mut store, "ns0", "a").as_deref(), Some("v7"), "the last write of ticket 2");
}

#[test]
fn a_failed_row_write_fails_the_engine_and_lands_nothing_of_its_commit() {
    let (queue, _) = write_turns(&[4, 4], false);
    let mut left: VecDeque<Batch> = queue.iter().map(copy).collect();
    let mut engine = Memory::default();
    engine.faults.fail_write = Some(25);
    let mut committer = Committer::new(engine, None);
    let mut outcomes = Vec::new();
    let left = std::cell::RefCell::new(&mut left);
    committer.run(true, || left.borrow_mut().pop_front(), || left.borrow_mut().pop_front(), |o| outcomes.push(o));
    assert_eq!(outcomes.len(), 1);
    assert!(matches!(&outcomes[0], Err(PersistError::Io(m)) if m.contains("row write 25")));
    assert_eq!(committer.engine().commits(), 0);
    assert_eq!(committer.engine().durable(), &Durable::default());
}

#[test]
fn a_torn_commit_is_refused_on_reopen_instead_of_loading_half_of_it() {
    // The first turn names every writer the second uses, so its torn rows all decode: only the
    // revision tells them from a whole commit.
    let (queue, _) = write_turns(&[8, 4], false);
    let mut left: VecDeque<Batch> = queue.iter().map(copy).collect();
    let mut engine = Memory::default();
    engine.faults = Faults { fail_commit: Some(1), tear: true, fail_write: None };
    let mut committer = Committer::new(engine, None);
    let mut outcomes = Vec::new();
    let left = std::cell::RefCell::new(&mut left);
    committer.run(false, || left.borrow_mut().pop_front(), || None, |o| outcomes.push(o.map_err(|e| e.to_string())));
    assert_eq!(outcomes, vec![Ok(1), Err("commit 1 failed (injected)".to_owned())]);
    match reopen(committer.engine().durable()) {
        Err(PersistError::Damaged(reason)) => assert!(reason.contains("did not land whole"), "{reason}"),
        other => panic!("a torn commit must be refused, got {:?}", other.map(|s| s.revision())),
    }
}

#[test]
fn a_reopen_refuses_rows_that_do_not_check_out() {
    let (queue, _) = write_turns(&[3], false);
    let (engine, _) = run_until(&queue, queue.len(), false);
    let good = engine.durable().clone();
    assert!(reopen(&good).is_ok());

    let damaged = |durable: Durable| match reopen(&durable) {
        Err(err @ PersistError::Damaged(_)) => {
            assert_eq!(err.code(), "STORE_IO");
            assert!(err.to_string().starts_with("the file is damaged: "));
            err.to_string()
        }
        other => panic!("expected a damaged file, got {:?}", other.map(|s| s.revision())),
    };
    let mut without_meta = good.clone();
    without_meta.meta = None;
    assert!(damaged(without_meta).contains("without the store's meta record"));

    let mut bad_meta = good.clone();
    bad_meta.meta = Some(vec![0xff; 3]);
    assert!(damaged(bad_meta).contains("store record"));

    let mut bad_key = good.clone();
    let row = bad_key.rows.values().next().unwrap().clone();
    bad_key.rows.insert(b"no-separator".to_vec(), row);
    assert!(damaged(bad_key).contains("without a namespace"));

    let mut bad_row = good.clone();
    bad_row.rows.values_mut().next().unwrap().truncate(2);
    assert!(damaged(bad_row).contains("a row"));

    let mut bad_name = good;
    let row = bad_name.rows.values().next().unwrap().clone();
    bad_name.rows.insert(b"\xff\xfe\0k".to_vec(), row);
    damaged(bad_name);

    // An engine that was never written to opens empty.
    let mut store = reopen(&Durable::default()).unwrap();
    assert_eq!(store.revision(), 0);
    assert_eq!(value(&mut store, "ns0", "a"), None);
}

#[test]
fn progress_keeps_the_highest_ticket() {
    let progress = Progress::new(PATH);
    assert_eq!(progress.record(Ok(3)), 3.0);
    progress.record(Ok(2));
    assert_eq!(progress.committed(), 3);
    assert!(progress.check().is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any turn sizes, any crash point, either mode.
    #[test]
    fn acknowledged_writes_survive_any_crash(
        turns in prop::collection::vec(1usize..70, 1..6),
        crash in 0.0f64..=1.0,
        each in any::<bool>(),
        group in any::<bool>(),
    ) {
        let (queue, txns) = write_turns(&turns, each);
        let crash_after = (crash * queue.len() as f64) as usize;
        check_crash(&queue, &txns, crash_after, group);
    }
}
