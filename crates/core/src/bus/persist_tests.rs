//! Durable channels against the in-memory engine: what a reopen brings back after a crash at
//! any commit (logs at their seqs and times, groups with their cursor and owed entries and
//! delivery counts, no acked entry again), retention trimming rows, dead letters and the dedup
//! window, and files that do not check out.

use std::sync::Arc;

use super::*;
use crate::bus::tests::{drain_all, header, msg, Rec};
use crate::bus::{SubscribeOptions, MAIN_ENDPOINT as EP};
use crate::store::persist::{Committer, Durable, Memory};
use crate::Coded;

const PATH: &str = "/data/bus.redb";

/// A bus on an engine, its journal and the writer's side run in line: `turn` commits.
struct Disk {
    bus: Bus,
    journal: BusJournal,
    committer: Committer<Memory>,
}

impl Disk {
    fn open(durable: &Durable) -> Result<Self, PersistError> {
        let mut engine = Memory::reopen(durable.clone());
        let mut bus = Bus::default();
        recover(&mut engine, &mut bus, 0.0)?;
        let mut disk = Self {
            bus,
            journal: BusJournal::new(Arc::new(Progress::new(PATH))),
            committer: Committer::new(engine, None),
        };
        disk.turn();
        Ok(disk)
    }

    fn fresh() -> Self {
        Self::open(&Durable::default()).unwrap()
    }

    /// Stages what the last call changed, as the host does after every call.
    fn record(&mut self) {
        let committer = &mut self.committer;
        self.journal.record(&mut self.bus, |b| committer.apply(b)).unwrap();
    }

    /// Ends a turn: a commit of everything staged.
    fn turn(&mut self) {
        self.record();
        let committer = &mut self.committer;
        let mut ticket = None;
        self.journal
            .submit(|b| {
                if let Batch::Commit { ticket: t } = b {
                    ticket = Some(t);
                    Ok(())
                } else {
                    committer.apply(b)
                }
            })
            .unwrap();
        if let Some(t) = ticket {
            self.committer.commit().unwrap();
            self.journal.progress().record(Ok(t));
        }
    }

    /// What a crash now leaves.
    fn crash(&self) -> Durable {
        self.committer.engine().durable().clone()
    }

    fn durable_channel(&mut self, name: &str) -> u32 {
        let ch = self.bus.channel(name).unwrap();
        self.bus.make_durable(ch).unwrap();
        self.record();
        ch
    }

    fn publish(&mut self, ch: u32, payload: &[u8], now: f64) {
        self.bus.publish(&msg(ch, payload), now).unwrap();
        self.record();
    }

    fn drain(&mut self, now: f64) -> Vec<Rec> {
        let recs = drain_all(&mut self.bus, EP, now);
        self.record();
        recs
    }

    fn ack(&mut self, r: &Rec) {
        self.bus.ack(r.consumer, r.seq, r.attempt).unwrap();
        self.record();
    }

    fn log_rows(&self, channel: &str) -> usize {
        let prefix = [b"l", channel.as_bytes(), &[0]].concat();
        self.committer.engine().durable().rows.keys().filter(|k| k.starts_with(&prefix)).count()
    }
}

fn options(max_deliveries: u32) -> GroupOptions {
    GroupOptions { visibility: 1_000.0, max_deliveries, start: StartAt::Earliest, ..GroupOptions::default() }
}

/// (seq, at, payload) of every retained message of `ch`.
fn log_of(bus: &Bus, ch: u32) -> Vec<(u64, f64, Vec<u8>)> {
    let log = &bus.channels[ch as usize].log;
    (log.first_seq()..log.next_seq())
        .map(|s| {
            let f = log.get(s).unwrap();
            (s, log.at(s).unwrap(), f[f.len() - 2..].to_vec())
        })
        .collect()
}

/// (seq, deliveries) of a group's entries, in seq order.
fn owed(bus: &Bus, group: u32) -> Vec<(u64, u32)> {
    bus.pending(group, 0.0).unwrap().iter().map(|p| (p.seq, p.deliveries)).collect()
}

#[test]
fn a_reopen_brings_the_log_back_at_its_seqs_and_times() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    for i in 0..5u8 {
        d.publish(ch, &[b'm', i], 100.0 + f64::from(i));
    }
    d.turn();
    d.publish(ch, b"lost", 200.0); // never committed
    let before = log_of(&d.bus, ch);
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch2 = r.bus.channel("jobs").unwrap();
    assert!(r.bus.is_durable(ch2));
    assert_eq!(log_of(&r.bus, ch2), before[..5].to_vec());
    // The next message takes the next seq, and a subscriber from the start reads all of them.
    r.publish(ch2, b"m5", 300.0);
    let sub = r.bus.subscribe(EP, ch2, SubscribeOptions { start: StartAt::Earliest, ..Default::default() }).unwrap();
    let got: Vec<(u64, Vec<u8>)> =
        r.drain(300.0).into_iter().filter(|x| x.consumer == sub).map(|x| (x.seq, x.body)).collect();
    assert_eq!(got.len(), 6);
    assert_eq!(got[5], (5, b"m5".to_vec()));
    // Frames carry this process's channel id.
    assert_eq!(frame::channel(r.bus.channels[ch2 as usize].log.get(0).unwrap()), ch2);
}

#[test]
fn retention_trims_rows_and_survives_a_reopen() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let retention = Retention { max_count: 3, max_bytes: 0, max_age: f64::INFINITY };
    d.bus.configure(ch, ChannelOptions { retention, ..ChannelOptions::default() }, 0.0).unwrap();
    d.record();
    for i in 0..10u8 {
        d.publish(ch, &[b'm', i], f64::from(i));
    }
    d.turn();
    assert_eq!(d.log_rows("jobs"), 3);
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    let stats = r.bus.stats(ch).unwrap();
    assert_eq!((stats.first_seq, stats.next_seq, stats.retained), (7, 10, 3));
    assert_eq!(r.bus.channels[ch as usize].options.retention, retention);
}

#[test]
fn a_group_comes_back_with_its_cursor_and_owed_entries_and_their_counts() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 10).unwrap();
    for i in 0..6u8 {
        d.publish(ch, &[b'm', i], 0.0);
    }
    let recs: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    assert_eq!(recs.len(), 6);
    d.ack(&recs[0]);
    d.ack(&recs[2]); // out of order: a settled row until seq 1 is acked
    d.bus.nack(m, recs[3].seq, recs[3].attempt, 0.0, None, 2.0).unwrap();
    d.record();
    let again: Vec<Rec> = d.drain(3.0).into_iter().filter(|r| r.consumer == m).collect();
    assert_eq!(again.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
    d.turn();
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    let g = r.bus.group(ch, "workers", options(5)).unwrap();
    assert_eq!(owed(&r.bus, g), vec![(1, 1), (3, 2), (4, 1), (5, 1)]);
    assert_eq!(r.bus.group_stats(g).unwrap().backlog, 4, "every owed entry is waiting for a member");
    // Redeliverable at once, each counted once more; acked ones never come back.
    let m = r.bus.join(g, EP, 10).unwrap();
    let recs: Vec<Rec> = r.drain(10.0).into_iter().filter(|x| x.consumer == m).collect();
    assert_eq!(
        recs.iter().map(|x| (x.seq, x.body.clone())).collect::<Vec<_>>(),
        vec![(1, b"m\x01".to_vec()), (3, b"m\x03".to_vec()), (4, b"m\x04".to_vec()), (5, b"m\x05".to_vec())]
    );
    assert_eq!(owed(&r.bus, g), vec![(1, 2), (3, 3), (4, 2), (5, 2)]);
    // A new message continues after the cursor.
    r.publish(ch, b"m6", 11.0);
    let next: Vec<u64> = r.drain(11.0).into_iter().filter(|x| x.consumer == m).map(|x| x.seq).collect();
    assert_eq!(next, vec![6]);
}

#[test]
fn in_order_acks_leave_no_entry_rows() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 100).unwrap();
    for i in 0..50u8 {
        d.publish(ch, &[b'm', i], 0.0);
    }
    let recs: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    d.turn();
    let entries = |d: &Disk| d.committer.engine().durable().rows.keys().filter(|k| k[0] == b'p').count();
    assert_eq!(entries(&d), 50, "a delivered entry's count is on disk");
    for r in recs.iter().rev() {
        d.ack(r);
    }
    d.turn();
    assert_eq!(entries(&d), 0);
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    let g = r.bus.group(ch, "workers", options(5)).unwrap();
    assert!(owed(&r.bus, g).is_empty());
}

#[test]
fn messages_a_group_owes_stay_on_disk_past_retention() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let retention = Retention { max_count: 2, max_bytes: 0, max_age: f64::INFINITY };
    d.bus.configure(ch, ChannelOptions { retention, ..ChannelOptions::default() }, 0.0).unwrap();
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 1).unwrap();
    d.record();
    for i in 0..6u8 {
        d.publish(ch, &[b'm', i], 0.0);
    }
    let first: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    assert_eq!(first.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0]);
    d.turn();
    assert_eq!(d.log_rows("jobs"), 6, "owed messages keep their rows");
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    assert_eq!(r.bus.stats(ch).unwrap().first_seq, 4);
    let g = r.bus.group(ch, "workers", options(5)).unwrap();
    assert_eq!(owed(&r.bus, g), (0..6).map(|s| (s, u32::from(s == 0))).collect::<Vec<_>>());
    let m = r.bus.join(g, EP, 10).unwrap();
    let recs: Vec<Rec> = r.drain(2.0).into_iter().filter(|x| x.consumer == m).collect();
    assert_eq!(recs.len(), 6);
    for x in &recs {
        r.ack(x);
    }
    r.turn();
    assert_eq!(r.log_rows("jobs"), 2, "rows go once retention trimmed them and no group owes them");
}

#[test]
fn one_long_owed_entry_keeps_only_its_own_row_past_retention() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let retention = Retention { max_count: 3, max_bytes: 0, max_age: f64::INFINITY };
    d.bus.configure(ch, ChannelOptions { retention, ..ChannelOptions::default() }, 0.0).unwrap();
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 1_000).unwrap();
    d.record();
    for i in 0..50u8 {
        d.publish(ch, &[b'm', i], 0.0);
    }
    let recs: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    assert_eq!(recs.len(), 50);
    d.bus.nack(m, recs[0].seq, recs[0].attempt, 3_600_000.0, None, 1.0).unwrap(); // back in an hour
    d.record();
    for r in &recs[1..] {
        d.ack(r);
    }
    d.turn();
    assert_eq!(d.log_rows("jobs"), 4, "the 3 retained rows and the owed one, none in between");
    let mut r = Disk::open(&d.crash()).unwrap();
    assert_eq!(r.log_rows("jobs"), 4);
    let ch = r.bus.channel("jobs").unwrap();
    let g = r.bus.group(ch, "workers", options(5)).unwrap();
    assert_eq!(owed(&r.bus, g), vec![(0, 1)]);
    let m = r.bus.join(g, EP, 10).unwrap();
    let back: Vec<Rec> = r.drain(2.0).into_iter().filter(|x| x.consumer == m).collect();
    assert_eq!(back.iter().map(|x| (x.seq, x.body.clone())).collect::<Vec<_>>(), vec![(0, b"m\x00".to_vec())]);
    r.ack(&back[0]);
    r.turn();
    assert_eq!(r.log_rows("jobs"), 3, "its row goes once it is acked");
    assert!(Disk::open(&r.crash()).is_ok());
}

#[test]
fn dead_letters_are_kept_like_any_message() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 1).unwrap();
    d.publish(ch, b"m0", 0.0);
    let rec = d.drain(1.0).into_iter().find(|r| r.consumer == m).unwrap();
    d.bus.nack(m, rec.seq, rec.attempt, 0.0, Some("poison"), 2.0).unwrap();
    d.turn();
    let r = Disk::open(&d.crash()).unwrap();
    let dlq = r.bus.names.get("jobs.dead-letter").unwrap();
    assert!(r.bus.is_durable(dlq));
    let log = &r.bus.channels[dlq as usize].log;
    assert_eq!(log.len(), 1);
    assert_eq!(header(log.get(0).unwrap(), "x-orrery-dead-letter-reason").as_deref(), Some("poison"));
    let g = r.bus.group_names.get(&(r.bus.names.get("jobs").unwrap(), "workers".into())).copied().unwrap();
    assert!(owed(&r.bus, g).is_empty(), "a dead-lettered entry is settled");
}

/// The dead letters of `jobs`: (reason, deliveries) headers.
fn dead_letters(bus: &Bus) -> Vec<(String, String)> {
    let Some(dlq) = bus.names.get("jobs.dead-letter") else { return Vec::new() };
    let log = &bus.channels[dlq as usize].log;
    (log.first_seq()..log.next_seq())
        .map(|s| {
            let f = log.get(s).unwrap();
            let h = |name| header(f, name).unwrap_or_default();
            (h("x-orrery-dead-letter-reason"), h("x-orrery-deliveries"))
        })
        .collect()
}

#[test]
fn an_entry_delivered_max_deliveries_times_is_dead_lettered_by_the_reopen() {
    // A message whose handler kills the process: each life hands it over once and crashes.
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    d.bus.group(ch, "workers", options(2)).unwrap();
    d.record();
    d.publish(ch, b"m0", 0.0);
    d.publish(ch, b"m1", 0.0);
    d.turn();
    let mut durable = d.crash();
    let mut lives = 0;
    loop {
        let mut r = Disk::open(&durable).unwrap();
        let ch = r.bus.channel("jobs").unwrap();
        let g = r.bus.group(ch, "workers", options(2)).unwrap();
        let m = r.bus.join(g, EP, 1).unwrap();
        let recs: Vec<Rec> = r.drain(10.0).into_iter().filter(|x| x.consumer == m).collect();
        // m0 is never acked (each life ends in its handler), so it holds the member's only slot.
        if recs.first().map(|x| x.seq) != Some(0) {
            break;
        }
        r.turn(); // the host commits the hand-over before the handler runs
        durable = r.crash();
        lives += 1;
        assert!(lives <= 2, "delivered more than maxDeliveries times");
    }
    assert_eq!(lives, 2);
    let mut r = Disk::open(&durable).unwrap();
    assert_eq!(dead_letters(&r.bus), vec![("max-deliveries".to_owned(), "2".to_owned())]);
    let ch = r.bus.channel("jobs").unwrap();
    let g2 = r.bus.group(ch, "workers", options(2)).unwrap();
    assert_eq!(owed(&r.bus, g2), vec![(1, 0)], "only m1 is owed, never delivered");
    let m = r.bus.join(g2, EP, 1).unwrap();
    let recs: Vec<Rec> = r.drain(20.0).into_iter().filter(|x| x.consumer == m).collect();
    assert_eq!(recs.iter().map(|x| x.seq).collect::<Vec<_>>(), vec![1]);
    r.ack(&recs[0]);
    r.turn();
    // The dead letter was committed: it stays one, and m0 is not owed any more.
    let mut r = Disk::open(&r.crash()).unwrap();
    assert_eq!(dead_letters(&r.bus).len(), 1);
    let ch = r.bus.channel("jobs").unwrap();
    assert!(owed(&r.bus, r.bus.group_names[&(ch, "workers".into())]).is_empty());
}

#[test]
fn a_hand_over_asks_the_host_to_commit_before_the_handler_runs() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 10).unwrap();
    d.publish(ch, b"m0", 0.0);
    assert!(!d.journal.take_hand_over(), "a publish hands nothing over");
    let rec = d.drain(1.0).into_iter().find(|r| r.consumer == m).unwrap();
    assert!(d.journal.take_hand_over());
    assert!(!d.journal.take_hand_over(), "taken once");
    d.ack(&rec);
    assert!(!d.journal.take_hand_over(), "an ack hands nothing over");
    // A memory channel's group on the same bus does not ask.
    let mem = d.bus.channel("memo").unwrap();
    let g = d.bus.group(mem, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 10).unwrap();
    d.publish(mem, b"x", 2.0);
    assert!(d.drain(2.0).iter().any(|r| r.consumer == m));
    assert!(!d.journal.take_hand_over());
}

#[test]
fn once_the_disk_failed_durable_publishes_are_refused_before_anything_is_published() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let mem = d.bus.channel("memo").unwrap();
    let sub = d.bus.subscribe(EP, ch, SubscribeOptions::default()).unwrap();
    d.publish(ch, b"m0", 0.0);
    d.bus.disk_failed("disk full");
    d.bus.disk_failed("a later failure");
    let err = d.bus.publish(&msg(ch, b"m1"), 1.0).unwrap_err();
    assert_eq!(err.code(), "TRANSPORT_UNAVAILABLE");
    assert!(err.to_string().contains("disk full"), "{err}");
    // A batch touching a durable channel publishes nothing, not even its memory frames.
    let batch = [msg(mem, b"a"), msg(ch, b"m2")].concat();
    assert_eq!(d.bus.publish(&batch, 1.0).unwrap_err().code(), "TRANSPORT_UNAVAILABLE");
    assert_eq!(d.bus.stats(mem).unwrap().next_seq, 0);
    assert_eq!(d.bus.stats(ch).unwrap().next_seq, 1);
    let got: Vec<Vec<u8>> = d.drain(2.0).into_iter().filter(|r| r.consumer == sub).map(|r| r.body).collect();
    assert_eq!(got, vec![b"m0".to_vec()]);
    // Channels not kept on disk publish as before.
    assert_eq!(d.bus.publish(&msg(mem, b"b"), 3.0).unwrap(), 1);
}

#[test]
fn the_dedup_window_is_rebuilt_from_the_log() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let options = ChannelOptions { dedup_window: 1_000.0, ..ChannelOptions::default() };
    d.bus.configure(ch, options, 0.0).unwrap();
    d.bus.publish(&frame::encode(ch, 1, 0.0, b"id-1", b"a"), 100.0).unwrap();
    d.turn();
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    assert_eq!(r.bus.publish(&frame::encode(ch, 1, 0.0, b"id-1", b"a"), 500.0).unwrap(), 0);
    assert_eq!(r.bus.publish(&frame::encode(ch, 1, 0.0, b"id-1", b"a"), 1_200.0).unwrap(), 1);
}

#[test]
fn a_deleted_group_leaves_no_rows_and_a_new_one_of_its_name_starts_clean() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 10).unwrap();
    d.publish(ch, b"m0", 0.0);
    d.publish(ch, b"m1", 0.0);
    let recs: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    d.ack(&recs[1]);
    d.turn();
    d.bus.delete_group(g).unwrap();
    let g2 = d.bus.group(ch, "workers", GroupOptions { start: StartAt::Latest, ..options(5) }).unwrap();
    d.record();
    d.turn();
    let rows = &d.committer.engine().durable().rows;
    assert_eq!(rows.keys().filter(|k| k[0] == b'p').count(), 0);
    assert_eq!(rows.keys().filter(|k| k[0] == b'g').count(), 1);
    let mut r = Disk::open(&d.crash()).unwrap();
    let ch = r.bus.channel("jobs").unwrap();
    let g = r.bus.group(ch, "workers", options(5)).unwrap();
    assert!(owed(&r.bus, g).is_empty());
    let _ = g2;
}

#[test]
fn durability_comes_before_first_use_and_needs_a_disk() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    assert_eq!(bus.make_durable(ch).unwrap_err().code(), "INVALID_OPTION");
    let mut d = Disk::fresh();
    let used = d.bus.channel("used").unwrap();
    d.bus.publish(&msg(used, b"x"), 0.0).unwrap();
    let err = d.bus.make_durable(used).unwrap_err();
    assert!(err.to_string().contains("used locally"), "{err}");
    assert!(!d.bus.is_durable(used));
    // Plain channels stage nothing.
    d.turn();
    assert!(d.committer.engine().durable().rows.is_empty());
}

#[test]
fn a_file_that_does_not_check_out_is_refused() {
    let mut d = Disk::fresh();
    let ch = d.durable_channel("jobs");
    let g = d.bus.group(ch, "workers", options(5)).unwrap();
    let m = d.bus.join(g, EP, 10).unwrap();
    for i in 0..3u8 {
        d.publish(ch, &[b'm', i], 0.0);
    }
    let recs: Vec<Rec> = d.drain(1.0).into_iter().filter(|r| r.consumer == m).collect();
    d.ack(&recs[1]);
    d.turn();
    let good = d.crash();
    assert!(Disk::open(&good).is_ok());
    let damaged = |edit: &dyn Fn(&mut Durable)| {
        let mut bad = good.clone();
        edit(&mut bad);
        match Disk::open(&bad) {
            Err(PersistError::Damaged(reason)) => reason,
            other => panic!("opened: {:?}", other.map(|_| ())),
        }
    };
    let log_key = |seq: u64| [b"l".as_slice(), b"jobs", &[0], &seq.to_be_bytes()].concat();
    let reason = damaged(&|bad| {
        bad.rows.remove(&log_key(1));
    });
    assert!(reason.contains("message 1 of channel \"jobs\" is missing"), "{reason}");
    let reason = damaged(&|bad| {
        bad.rows.remove(&[b"g".as_slice(), b"jobs", &[0], b"workers"].concat());
    });
    assert!(reason.contains("without the group's record"), "{reason}");
    let reason = damaged(&|bad| {
        bad.rows.insert(log_key(0), vec![1, 2, 3]);
    });
    assert!(reason.contains("truncated") || reason.contains("frame"), "{reason}");
    let reason = damaged(&|bad| {
        bad.rows.remove(&[b"c".as_slice(), b"jobs", &[0]].concat());
    });
    assert!(reason.contains("without its channel record"), "{reason}");
    let reason = damaged(&|bad| {
        bad.rows.insert(b"zzz".to_vec(), vec![]);
    });
    assert!(reason.contains("channel") || reason.contains("kind"), "{reason}");
}

/// A small deterministic random source for the crash test.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Random publishes, drains, acks, nacks, lease expiries and retention, a commit now and then;
/// at every commit a crash is reopened and checked: the log is the committed one, every
/// committed ack stays acked, every other taken entry is owed with its delivery count.
#[test]
fn a_crash_after_any_commit_keeps_what_was_acknowledged() {
    for seed in 1..=20u64 {
        let mut rng = Lcg(seed);
        let mut d = Disk::fresh();
        let ch = d.durable_channel("jobs");
        let retention = Retention { max_count: 1 + rng.below(8) as usize, max_bytes: 0, max_age: f64::INFINITY };
        d.bus.configure(ch, ChannelOptions { retention, ..ChannelOptions::default() }, 0.0).unwrap();
        let g = d.bus.group(ch, "workers", GroupOptions { visibility: 50.0, ..options(4) }).unwrap();
        let m = d.bus.join(g, EP, 1 + rng.below(5) as usize).unwrap();
        d.record();
        let mut held: Vec<Rec> = Vec::new();
        let mut now = 0.0;
        let mut count = 0u8;
        for _ in 0..300 {
            now += 1.0 + rng.below(5) as f64;
            match rng.below(10) {
                0..=2 => {
                    d.publish(ch, &[b'm', count], now);
                    count = count.wrapping_add(1);
                }
                3..=4 => held.extend(d.drain(now).into_iter().filter(|x| x.consumer == m)),
                5..=6 if !held.is_empty() => {
                    let rec = held.remove(rng.below(held.len() as u64) as usize);
                    if d.bus.ack(rec.consumer, rec.seq, rec.attempt).is_ok() {
                        d.record();
                    }
                }
                7 if !held.is_empty() => {
                    let rec = held.remove(rng.below(held.len() as u64) as usize);
                    // Back at once, or much later: retention trims past it meanwhile.
                    let delay = if rng.below(2) == 0 { 0.0 } else { 500.0 };
                    if d.bus.nack(rec.consumer, rec.seq, rec.attempt, delay, None, now).is_ok() {
                        d.record();
                    }
                }
                8 => {
                    d.bus.tick(now);
                    d.record();
                }
                _ => {
                    d.turn();
                    let expect_log = log_of(&d.bus, ch);
                    let expect_owed = owed_model(&d.bus, g);
                    // The file holds the retained messages and the owed ones, nothing in between.
                    let owed_total = d.bus.groups.get(g).unwrap().pending.len() + expect_owed.len();
                    assert!(d.log_rows("jobs") <= expect_log.len() + owed_total, "seed {seed}");
                    let mut reopened = Disk::open(&d.crash()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    let ch2 = reopened.bus.channel("jobs").unwrap();
                    assert_eq!(log_of(&reopened.bus, ch2), expect_log, "seed {seed}");
                    let g2 = reopened.bus.group(ch2, "workers", options(4)).unwrap();
                    assert_eq!(owed(&reopened.bus, g2), expect_owed, "seed {seed}");
                    // And the reopened bus writes on from there.
                    reopened.publish(ch2, b"zz", now);
                    reopened.turn();
                    assert!(Disk::open(&reopened.crash()).is_ok(), "seed {seed}");
                }
            }
        }
    }
}

/// What a reopen must owe: every pending entry (its count) not delivered `maxDeliveries` times
/// yet (those are dead-lettered by the reopen), then every buffered one (count 0).
fn owed_model(bus: &Bus, group: u32) -> Vec<(u64, u32)> {
    let g = bus.groups.get(group).unwrap();
    let max = g.options.max_deliveries;
    let mut all: Vec<(u64, u32)> =
        g.pending.iter().filter(|(_, p)| p.deliveries < max).map(|(&s, p)| (s, p.deliveries)).collect();
    let low = g.pending.keys().copied().chain(g.feed.buffer.min_seq()).fold(g.feed.cursor, u64::min);
    for seq in low..g.feed.cursor {
        if !g.pending.contains_key(&seq) && bus.is_buffered(group, seq) {
            all.push((seq, 0));
        }
    }
    all.sort_unstable();
    all
}

impl Bus {
    /// Whether `seq` waits in the group's buffer (tests only: a linear walk).
    fn is_buffered(&self, group: u32, seq: u64) -> bool {
        self.groups.get(group).is_some_and(|g| g.feed.buffer.contains(seq))
    }
}
