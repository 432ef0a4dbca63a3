use proptest::prelude::*;

use super::*;
use crate::frame::{encode, DELIVERY_HEADER_LEN, HEADER_LEN};
use crate::Coded;

const EP: u32 = MAIN_ENDPOINT;

/// A decoded delivery record.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rec {
    pub(super) consumer: u32,
    pub(super) attempt: u32,
    pub(super) seq: u64,
    /// The payload of a frame, or the 4-byte subject of an event.
    pub(super) body: Vec<u8>,
    pub(super) frame: Vec<u8>,
}

pub(super) fn records(buf: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let consumer = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
        let attempt = u32::from_le_bytes(buf[at + 4..at + 8].try_into().unwrap());
        let seq = f64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap()) as u64;
        let rest = &buf[at + DELIVERY_HEADER_LEN..];
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let frame = rest[..len].to_vec();
        let body = if consumer == EVENT_CONSUMER {
            rest[4..len].to_vec()
        } else {
            let meta =
                u32::from_le_bytes(frame[frame::OFF_META_LEN..frame::OFF_META_LEN + 4].try_into().unwrap()) as usize;
            frame[HEADER_LEN + meta..].to_vec()
        };
        out.push(Rec { consumer, attempt, seq, body, frame });
        at += DELIVERY_HEADER_LEN + len;
    }
    out
}

pub(super) fn drain_all(bus: &mut Bus, endpoint: u32, now: Millis) -> Vec<Rec> {
    let mut buf = vec![0u8; 256];
    let mut out = Vec::new();
    loop {
        match bus.drain(endpoint, &mut buf, now) {
            Ok(0) => return out,
            Ok(n) => out.extend(records(&buf[..n])),
            Err(needed) => buf.resize(needed, 0),
        }
    }
}

pub(super) fn msg(ch: u32, payload: &[u8]) -> Vec<u8> {
    encode(ch, 1, 0.0, b"", payload)
}

pub(super) fn sub(bus: &mut Bus, ch: u32) -> u32 {
    bus.subscribe(EP, ch, SubscribeOptions::default()).unwrap()
}

fn group_of(bus: &mut Bus, ch: u32, visibility: f64, max_deliveries: u32) -> u32 {
    bus.group(ch, "workers", GroupOptions { visibility, max_deliveries, ..GroupOptions::default() }).unwrap()
}

/// The value of header `key` in a frame's metadata.
pub(super) fn header(frame: &[u8], key: &str) -> Option<String> {
    let meta_len = u32::from_le_bytes(frame[frame::OFF_META_LEN..frame::OFF_META_LEN + 4].try_into().unwrap()) as usize;
    let meta = &frame[HEADER_LEN..HEADER_LEN + meta_len];
    let mut at = 0;
    for _ in 0..6 {
        at += 1 + meta[at] as usize;
    }
    let count = u16::from_le_bytes([meta[at], meta[at + 1]]);
    at += 2;
    for _ in 0..count {
        let kl = u16::from_le_bytes([meta[at], meta[at + 1]]) as usize;
        let k = std::str::from_utf8(&meta[at + 2..at + 2 + kl]).unwrap().to_owned();
        at += 2 + kl;
        let vl = u16::from_le_bytes([meta[at], meta[at + 1]]) as usize;
        let v = std::str::from_utf8(&meta[at + 2..at + 2 + vl]).unwrap().to_owned();
        at += 2 + vl;
        if k == key {
            return Some(v);
        }
    }
    None
}

#[test]
fn broadcast_delivers_every_message_in_order_to_every_subscriber() {
    let mut bus = Bus::default();
    let ch = bus.channel("orders").unwrap();
    let (a, b) = (sub(&mut bus, ch), sub(&mut bus, ch));
    let batch: Vec<u8> = (0..3u8).flat_map(|i| msg(ch, &[i])).collect();
    assert_eq!(bus.publish(&batch, 1.0).unwrap(), 3);
    let got = drain_all(&mut bus, EP, 1.0);
    for s in [a, b] {
        let mine: Vec<(u64, u8)> = got.iter().filter(|r| r.consumer == s).map(|r| (r.seq, r.body[0])).collect();
        assert_eq!(mine, vec![(0, 0), (1, 1), (2, 2)]);
    }
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.published, stats.delivered, stats.subscribers), (3, 6, 2));
    assert!(!bus.has_pending(EP));
}

#[test]
fn a_refused_batch_publishes_nothing() {
    let mut bus = Bus::new(BusConfig { max_message_bytes: 80, ..BusConfig::default() });
    let ch = bus.channel("c").unwrap();
    sub(&mut bus, ch);
    let mut batch = msg(ch, b"ok");
    batch.extend(msg(ch, &[0; 100]));
    let err = bus.publish(&batch, 0.0).unwrap_err();
    assert_eq!(err.code(), "MESSAGE_TOO_LARGE");
    assert!(matches!(err, BusError::MessageTooLarge { index: 1, .. }));
    let text = err.to_string();
    assert!(
        text.contains("channel \"c\"") && text.contains("maxMessageBytes = 80") && text.contains("bytes"),
        "{text}"
    );
    let mut unknown = msg(ch, b"ok");
    unknown.extend(msg(99, b"ok"));
    assert_eq!(bus.publish(&unknown, 0.0).unwrap_err(), BusError::UnknownChannel(99));
    assert_eq!(bus.stats(ch).unwrap().published, 0);
    assert!(drain_all(&mut bus, EP, 0.0).is_empty());
}

#[test]
fn replay_starts_at_earliest_seq_or_time() {
    let mut bus = Bus::default();
    let ch = bus.channel("log").unwrap();
    for i in 0..5u8 {
        bus.publish(&msg(ch, &[i]), f64::from(i) * 100.0).unwrap();
    }
    let mut at = |start| bus.subscribe(EP, ch, SubscribeOptions { start, ..SubscribeOptions::default() }).unwrap();
    let (earliest, from_seq, from_time, latest) =
        (at(StartAt::Earliest), at(StartAt::Seq(3)), at(StartAt::Time(150.0)), at(StartAt::Latest));
    let got = drain_all(&mut bus, EP, 0.0);
    let seqs = |s| got.iter().filter(|r| r.consumer == s).map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(earliest), vec![0, 1, 2, 3, 4]);
    assert_eq!(seqs(from_seq), vec![3, 4]);
    assert_eq!(seqs(from_time), vec![2, 3, 4]);
    assert!(seqs(latest).is_empty());
}

#[test]
fn a_record_larger_than_the_buffer_asks_for_room() {
    let mut bus = Bus::default();
    let ch = bus.channel("big").unwrap();
    sub(&mut bus, ch);
    let f = msg(ch, &[7; 1000]);
    bus.publish(&f, 0.0).unwrap();
    let mut small = vec![0u8; 100];
    assert_eq!(bus.drain(EP, &mut small, 0.0), Err(DELIVERY_HEADER_LEN + f.len()));
    assert_eq!(drain_all(&mut bus, EP, 0.0).len(), 1);
}

#[test]
fn higher_priority_first_fifo_within_a_level() {
    let mut bus = Bus::default();
    let ch = bus.channel("p").unwrap();
    sub(&mut bus, ch);
    let batch: Vec<u8> =
        [(0u8, 1u8), (1, 3), (2, 0), (3, 3), (4, 2)].iter().flat_map(|&(i, p)| encode(ch, p, 0.0, b"", &[i])).collect();
    bus.publish(&batch, 0.0).unwrap();
    let order: Vec<u8> = drain_all(&mut bus, EP, 0.0).iter().map(|r| r.body[0]).collect();
    assert_eq!(order, vec![1, 3, 4, 0, 2]);
}

#[test]
fn expired_messages_are_never_delivered_and_optionally_dead_lettered() {
    let mut bus = Bus::default();
    let ch = bus.channel("ttl").unwrap();
    bus.configure(ch, ChannelOptions { dead_letter_expired: true, ..ChannelOptions::default() }, 0.0).unwrap();
    let s = sub(&mut bus, ch);
    let batch: Vec<u8> = [encode(ch, 1, 50.0, b"", b"a"), encode(ch, 1, 500.0, b"", b"b")].concat();
    bus.publish(&batch, 0.0).unwrap();
    let got = drain_all(&mut bus, EP, 100.0);
    assert_eq!(got.iter().map(|r| r.body.clone()).collect::<Vec<_>>(), vec![b"b".to_vec()]);
    assert_eq!(bus.subscriber_stats(s).unwrap().expired, 1);
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.expired, stats.dead_lettered), (1, 1));
    let dlq = bus.channel("ttl.dead-letter").unwrap();
    assert_eq!(bus.stats(dlq).unwrap().published, 1);
}

#[test]
fn backpressure_reject_refuses_the_whole_batch_and_block_says_so() {
    let mut bus = Bus::default();
    let ch = bus.channel("bp").unwrap();
    let strict = bus
        .subscribe(EP, ch, SubscribeOptions { capacity: 2, overflow: Overflow::Reject, ..SubscribeOptions::default() })
        .unwrap();
    bus.publish(&msg(ch, b"1"), 0.0).unwrap();
    let two: Vec<u8> = [msg(ch, b"2"), msg(ch, b"3")].concat();
    let err = bus.publish(&two, 0.0).unwrap_err();
    assert_eq!(err.code(), "BACKPRESSURE");
    assert!(matches!(err, BusError::Backpressure { consumer, block: false, .. } if consumer == strict));
    assert!(err.to_string().starts_with("a subscriber of channel \"bp\" is full"), "{err}");
    assert_eq!(bus.stats(ch).unwrap().published, 1);
    drain_all(&mut bus, EP, 0.0);
    assert_eq!(bus.publish(&two, 0.0).unwrap(), 2);

    let other = bus.channel("bp2").unwrap();
    bus.subscribe(
        EP,
        other,
        SubscribeOptions { capacity: 1, overflow: Overflow::Block, ..SubscribeOptions::default() },
    )
    .unwrap();
    bus.publish(&msg(other, b"1"), 0.0).unwrap();
    assert!(matches!(bus.publish(&msg(other, b"2"), 0.0), Err(BusError::Backpressure { block: true, .. })));
}

#[test]
fn drop_oldest_keeps_the_newest_and_reports_slow_consumers() {
    let mut bus = Bus::default();
    let ch = bus.channel("lossy").unwrap();
    let s = bus
        .subscribe(
            EP,
            ch,
            SubscribeOptions { capacity: 4, overflow: Overflow::DropOldest, ..SubscribeOptions::default() },
        )
        .unwrap();
    for i in 0..6u8 {
        bus.publish(&msg(ch, &[i]), 0.0).unwrap();
    }
    let got = drain_all(&mut bus, EP, 0.0);
    let events: Vec<(u32, u64)> =
        got.iter().filter(|r| r.consumer == EVENT_CONSUMER).map(|r| (r.attempt, r.seq)).collect();
    assert_eq!(
        events,
        vec![(EventKind::SlowConsumer as u32, 3), (EventKind::Dropped as u32, 1), (EventKind::Dropped as u32, 1)]
    );
    let payloads: Vec<u8> = got.iter().filter(|r| r.consumer == s).map(|r| r.body[0]).collect();
    assert_eq!(payloads, vec![2, 3, 4, 5]);
    assert_eq!(bus.subscriber_stats(s).unwrap().dropped, 2);
}

#[test]
fn a_paused_subscriber_fills_up_and_resumes() {
    let mut bus = Bus::default();
    let ch = bus.channel("pause").unwrap();
    let s = bus
        .subscribe(EP, ch, SubscribeOptions { capacity: 2, overflow: Overflow::Reject, ..SubscribeOptions::default() })
        .unwrap();
    bus.set_paused(s, true).unwrap();
    bus.publish(&[msg(ch, b"a"), msg(ch, b"b")].concat(), 0.0).unwrap();
    assert!(drain_all(&mut bus, EP, 0.0).iter().all(|r| r.consumer == EVENT_CONSUMER), "only the slow-consumer event");
    assert!(bus.publish(&msg(ch, b"c"), 0.0).is_err());
    bus.set_paused(s, false).unwrap();
    assert_eq!(drain_all(&mut bus, EP, 0.0).len(), 2);
}

#[test]
fn dedup_drops_a_retried_id_within_the_window() {
    let mut bus = Bus::default();
    let ch = bus.channel("once").unwrap();
    bus.configure(ch, ChannelOptions { dedup_window: 1000.0, ..ChannelOptions::default() }, 0.0).unwrap();
    sub(&mut bus, ch);
    let first = encode(ch, 1, 0.0, b"order-7", b"x");
    assert_eq!(bus.publish(&[first.clone(), first.clone()].concat(), 0.0).unwrap(), 1);
    assert_eq!(bus.publish(&first, 500.0).unwrap(), 0);
    assert_eq!(bus.publish(&first, 1500.0).unwrap(), 1);
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.published, stats.duplicates), (2, 2));
}

#[test]
fn a_group_gives_each_message_to_one_member() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 1000.0, 3);
    let (m1, m2) = (bus.join(g, EP, 10).unwrap(), bus.join(g, EP, 10).unwrap());
    bus.publish(&(0..6u8).flat_map(|i| msg(ch, &[i])).collect::<Vec<_>>(), 0.0).unwrap();
    let got = drain_all(&mut bus, EP, 0.0);
    assert_eq!(got.len(), 6);
    let mut seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
    assert_eq!(got.iter().filter(|r| r.consumer == m1).count(), 3);
    assert_eq!(got.iter().filter(|r| r.consumer == m2).count(), 3);
    for r in &got {
        bus.ack(r.consumer, r.seq, r.attempt).unwrap();
    }
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.delivered, stats.acked, stats.pending, stats.backlog), (6, 6, 0, 0));
    assert_eq!(bus.ack(got[0].consumer, got[0].seq, got[0].attempt).unwrap_err().code(), "STALE_ACK");
}

#[test]
fn an_unacked_message_is_redelivered_after_the_visibility_timeout() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 5);
    let (m1, m2) = (bus.join(g, EP, 1).unwrap(), bus.join(g, EP, 1).unwrap());
    bus.publish(&msg(ch, b"a"), 0.0).unwrap();
    let first = drain_all(&mut bus, EP, 0.0);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].consumer, m1);
    assert_eq!(bus.next_deadline(), Some(100.0));
    assert_eq!(bus.tick(99.0), 0);
    assert_eq!(bus.tick(100.0), 1);
    let second = drain_all(&mut bus, EP, 100.0);
    assert_eq!((second[0].consumer, second[0].seq), (m2, 0));
    assert_ne!(second[0].attempt, first[0].attempt);
    // The first member wakes up late: its ack is stale and changes nothing.
    assert!(matches!(bus.ack(m1, 0, first[0].attempt), Err(BusError::StaleAck { seq: 0, .. })));
    bus.ack(m2, 0, second[0].attempt).unwrap();
    assert_eq!(bus.group_stats(g).unwrap().redelivered, 1);
}

#[test]
fn an_ack_from_a_member_that_left_is_stale_and_the_message_goes_to_the_others() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 5);
    let (m1, m2) = (bus.join(g, EP, 1).unwrap(), bus.join(g, EP, 1).unwrap());
    bus.publish(&msg(ch, b"a"), 0.0).unwrap();
    let first = drain_all(&mut bus, EP, 0.0);
    assert_eq!(first[0].consumer, m1);
    bus.unsubscribe(m1).unwrap();
    let err = bus.ack(m1, 0, first[0].attempt).unwrap_err();
    assert!(matches!(err, BusError::StaleAck { seq: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("no longer in its group"), "{err}");
    let err = bus.nack(m1, 0, first[0].attempt, 0.0, None, 1.0).unwrap_err();
    assert_eq!(err.code(), "STALE_ACK");
    let second = drain_all(&mut bus, EP, 1.0);
    assert_eq!((second[0].consumer, second[0].seq), (m2, 0));
    bus.ack(m2, 0, second[0].attempt).unwrap();
}

#[test]
fn after_max_deliveries_a_message_is_dead_lettered_with_its_reason() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 2);
    let m = bus.join(g, EP, 1).unwrap();
    bus.publish(&encode(ch, 1, 0.0, b"id-1", b"poison"), 0.0).unwrap();
    let r = drain_all(&mut bus, EP, 0.0).remove(0);
    bus.nack(m, r.seq, r.attempt, 0.0, None, 1.0).unwrap();
    let r = drain_all(&mut bus, EP, 2.0).remove(0);
    bus.nack(m, r.seq, r.attempt, 0.0, None, 3.0).unwrap();
    assert!(drain_all(&mut bus, EP, 4.0).is_empty());
    let dlq = bus.channel("jobs.dead-letter").unwrap();
    let s =
        bus.subscribe(EP, dlq, SubscribeOptions { start: StartAt::Earliest, ..SubscribeOptions::default() }).unwrap();
    let dead = drain_all(&mut bus, EP, 5.0);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].consumer, s);
    assert_eq!(dead[0].body, b"poison");
    assert_eq!(frame::id(&dead[0].frame), b"id-1");
    assert_eq!(header(&dead[0].frame, "x-orrery-dead-letter-reason").as_deref(), Some("max-deliveries"));
    assert_eq!(header(&dead[0].frame, "x-orrery-deliveries").as_deref(), Some("2"));
    assert_eq!(header(&dead[0].frame, "x-orrery-origin-channel").as_deref(), Some("jobs"));
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.nacked, stats.dead_lettered, stats.pending), (2, 1, 0));
}

#[test]
fn a_message_whose_consumers_end_holding_it_max_deliveries_times_is_dead_lettered() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 2);
    bus.publish(&encode(ch, 1, 0.0, b"id-1", b"poison"), 0.0).unwrap();
    // Two threads in turn take it and end (a consumer that dies on it every time).
    for (i, now) in [(1, 1.0), (2, 2.0)] {
        let thread = bus.open_endpoint().unwrap();
        let m = bus.join(g, thread, 1).unwrap();
        let r = drain_all(&mut bus, thread, now).remove(0);
        assert_eq!((r.seq, r.consumer), (0, m), "delivery {i}");
        bus.close_endpoint(thread, now).unwrap();
    }
    // The second ended holding it: dead-lettered then, never delivered again.
    let _next = bus.join(g, EP, 1).unwrap();
    assert!(drain_all(&mut bus, EP, 4.0).is_empty());
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.redelivered, stats.dead_lettered, stats.pending), (1, 1, 0));
    let dlq = bus.channel("jobs.dead-letter").unwrap();
    bus.subscribe(EP, dlq, SubscribeOptions { start: StartAt::Earliest, ..SubscribeOptions::default() }).unwrap();
    let dead = drain_all(&mut bus, EP, 5.0);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0].frame, "x-orrery-dead-letter-reason").as_deref(), Some("max-deliveries"));
    assert_eq!(header(&dead[0].frame, "x-orrery-deliveries").as_deref(), Some("2"));
}

#[test]
fn a_member_abandoned_holding_a_message_max_deliveries_times_dead_letters_it_and_hands_back_the_rest() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 2);
    bus.publish(&msg(ch, b"poison"), 0.0).unwrap();
    // A consumer crashes holding it, twice (the second time with a newer message too).
    let first = bus.join(g, EP, 1).unwrap();
    assert_eq!(drain_all(&mut bus, EP, 1.0).len(), 1);
    bus.abandon(first, 1.0).unwrap();
    let second = bus.join(g, EP, 2).unwrap();
    assert!(drain_all(&mut bus, EP, 2.0).iter().all(|r| r.consumer == second && r.seq == 0));
    bus.publish(&msg(ch, b"fine"), 2.0).unwrap();
    assert_eq!(drain_all(&mut bus, EP, 2.0)[0].seq, 1);
    bus.abandon(second, 3.0).unwrap();
    // The poison is dead-lettered at its second delivery's end; the other is delivered again.
    let third = bus.join(g, EP, 2).unwrap();
    let again = drain_all(&mut bus, EP, 4.0);
    assert_eq!(again.iter().map(|r| (r.consumer, r.seq)).collect::<Vec<_>>(), vec![(third, 1)]);
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.dead_lettered, stats.pending), (1, 1));
    // Unknown ids are refused as by unsubscribe.
    assert_eq!(bus.abandon(first, 5.0).unwrap_err().code(), "UNKNOWN_SUBSCRIPTION");
}

#[test]
fn a_member_that_leaves_on_purpose_hands_back_even_a_message_at_max_deliveries() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 100.0, 1);
    bus.publish(&msg(ch, b"a"), 0.0).unwrap();
    let m = bus.join(g, EP, 1).unwrap();
    assert_eq!(drain_all(&mut bus, EP, 1.0).len(), 1);
    bus.unsubscribe(m).unwrap();
    let next = bus.join(g, EP, 1).unwrap();
    let again = drain_all(&mut bus, EP, 2.0);
    assert_eq!((again[0].consumer, again[0].seq), (next, 0));
    assert_eq!(bus.group_stats(g).unwrap().dead_lettered, 0);
}

#[test]
fn a_permanent_nack_dead_letters_at_once_and_a_delayed_one_waits() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, EP, 5).unwrap();
    bus.publish(&[msg(ch, b"bad"), msg(ch, b"flaky")].concat(), 0.0).unwrap();
    let got = drain_all(&mut bus, EP, 0.0);
    bus.nack(m, got[0].seq, got[0].attempt, 0.0, Some("validation failed"), 1.0).unwrap();
    bus.nack(m, got[1].seq, got[1].attempt, 50.0, None, 1.0).unwrap();
    assert!(drain_all(&mut bus, EP, 2.0).is_empty());
    bus.tick(51.0);
    let retried = drain_all(&mut bus, EP, 51.0);
    assert_eq!(retried.iter().map(|r| r.body.clone()).collect::<Vec<_>>(), vec![b"flaky".to_vec()]);
    assert_eq!(bus.stats(ch).unwrap().dead_lettered, 1);
}

#[test]
fn a_member_can_claim_stale_entries_and_a_leaving_member_releases_its_own() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 10_000.0, 5);
    let stuck = bus.join(g, EP, 5).unwrap();
    bus.publish(&[msg(ch, b"a"), msg(ch, b"b")].concat(), 0.0).unwrap();
    drain_all(&mut bus, EP, 0.0);
    let helper = bus.join(g, EP, 5).unwrap();
    assert_eq!(bus.claim(g, helper, 500.0, 10, 100.0).unwrap(), 0, "not idle long enough");
    // A member of another group is refused: its group's deliveries never move through this one.
    let other = bus.group(ch, "others", GroupOptions::default()).unwrap();
    assert_ne!(other, g);
    let outsider = bus.join(other, EP, 5).unwrap();
    assert_eq!(bus.claim(other, helper, 500.0, 10, 600.0).unwrap_err().code(), "UNKNOWN_SUBSCRIPTION");
    assert_eq!(bus.claim(g, outsider, 500.0, 10, 600.0).unwrap_err().code(), "UNKNOWN_SUBSCRIPTION");
    assert_eq!(bus.claim(g, helper, 500.0, 1, 600.0).unwrap(), 1);
    let claimed = drain_all(&mut bus, EP, 600.0);
    assert_eq!((claimed[0].consumer, claimed[0].seq), (helper, 0));
    let pending = bus.pending(g, 600.0).unwrap();
    assert_eq!(pending.iter().map(|p| (p.seq, p.member)).collect::<Vec<_>>(), vec![(0, helper), (1, stuck)]);
    bus.unsubscribe(stuck).unwrap();
    let released = drain_all(&mut bus, EP, 700.0);
    assert_eq!((released[0].consumer, released[0].seq), (helper, 1));
}

#[test]
fn a_group_with_no_room_pushes_back_on_publishers() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = bus
        .group(ch, "w", GroupOptions { capacity: 1, overflow: Overflow::Reject, ..GroupOptions::default() })
        .unwrap();
    bus.join(g, EP, 1).unwrap();
    bus.publish(&msg(ch, b"1"), 0.0).unwrap(); // handed to the member
    bus.publish(&msg(ch, b"2"), 0.0).unwrap(); // buffered
    let err = bus.publish(&msg(ch, b"3"), 0.0).unwrap_err();
    assert_eq!(err.code(), "BACKPRESSURE");
    assert!(err.to_string().starts_with("consumer group \"w\" of channel \"jobs\" is full"), "{err}");
    assert_eq!(bus.group_stats(g).unwrap().backlog, 1);
}

#[test]
fn request_reply_no_responder_timeout_and_late_reply() {
    let mut bus = Bus::default();
    let ch = bus.channel("svc").unwrap();
    let err = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap_err();
    assert_eq!(err, BusError::NoResponder { channel: "svc".into() });
    assert!(err.to_string().contains("channel \"svc\""), "{err}");
    let responder = sub(&mut bus, ch);
    let token = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    let req = drain_all(&mut bus, EP, 0.0).remove(0);
    assert_eq!((req.consumer, frame::reply_token(&req.frame)), (responder, token));
    let mut answer = msg(ch, b"a");
    frame::set_reply_token(&mut answer, token);
    assert!(bus.reply(&answer).unwrap());
    let reply = drain_all(&mut bus, EP, 1.0).remove(0);
    assert_eq!((reply.consumer, reply.attempt, reply.body.as_slice()), (REPLY_CONSUMER, token, &b"a"[..]));

    let token = bus.request(EP, &msg(ch, b"slow"), 100.0, 0.0).unwrap();
    drain_all(&mut bus, EP, 0.0);
    bus.tick(100.0);
    let events = drain_all(&mut bus, EP, 100.0);
    assert_eq!((events[0].consumer, events[0].attempt), (EVENT_CONSUMER, EventKind::RequestTimeout as u32));
    assert_eq!(u32::from_le_bytes(events[0].body[..4].try_into().unwrap()), token);
    frame::set_reply_token(&mut answer, token);
    assert!(!bus.reply(&answer).unwrap());
    assert_eq!(bus.late_replies(), 1);
    assert_eq!(bus.reply(&msg(ch, b"x")).unwrap_err().code(), "NOT_A_REPLY");
}

#[test]
fn endpoints_get_their_own_deliveries_and_wakeups_and_closing_one_releases_its_work() {
    let mut bus = Bus::default();
    let ch = bus.channel("x").unwrap();
    let worker = bus.open_endpoint().unwrap();
    let g = group_of(&mut bus, ch, 1000.0, 5);
    let remote = bus.join(g, worker, 5).unwrap();
    let local_sub = sub(&mut bus, ch);
    bus.publish(&msg(ch, b"m"), 0.0).unwrap();
    assert_eq!(bus.take_wakeups(), vec![EP, worker]);
    assert!(bus.take_wakeups().is_empty(), "woken once until drained");
    assert_eq!(drain_all(&mut bus, EP, 0.0).iter().map(|r| r.consumer).collect::<Vec<_>>(), vec![local_sub]);
    let at_worker = drain_all(&mut bus, worker, 0.0);
    assert_eq!(at_worker[0].consumer, remote);
    bus.close_endpoint(worker, 0.0).unwrap();
    assert_eq!(bus.group_stats(g).unwrap().members, 0);
    let local = bus.join(g, EP, 5).unwrap();
    let again = drain_all(&mut bus, EP, 1.0);
    assert_eq!((again[0].consumer, again[0].seq), (local, 0), "the closed endpoint's unacked message is redelivered");
    assert_eq!(bus.close_endpoint(worker, 1.0).unwrap_err().code(), "UNKNOWN_ENDPOINT");
}

#[test]
fn bad_ids_and_options_get_typed_errors() {
    let mut bus = Bus::default();
    let ch = bus.channel("c").unwrap();
    assert_eq!(bus.unsubscribe(12345).unwrap_err().code(), "UNKNOWN_SUBSCRIPTION");
    assert_eq!(bus.subscribe(EP, 42, SubscribeOptions::default()).unwrap_err().code(), "UNKNOWN_CHANNEL");
    assert_eq!(bus.subscribe(77, ch, SubscribeOptions::default()).unwrap_err().code(), "UNKNOWN_ENDPOINT");
    assert_eq!(
        bus.subscribe(EP, ch, SubscribeOptions { capacity: 0, ..SubscribeOptions::default() }).unwrap_err().code(),
        "INVALID_OPTION"
    );
    assert_eq!(bus.join(999, EP, 1).unwrap_err().code(), "UNKNOWN_GROUP");
    assert_eq!(bus.group(ch, "bad name", GroupOptions::default()).unwrap_err().code(), "INVALID_NAME");
    assert_eq!(
        bus.group(ch, "g", GroupOptions { max_deliveries: 0, ..GroupOptions::default() }).unwrap_err().code(),
        "INVALID_OPTION"
    );
    assert_eq!(bus.request(EP, &msg(ch, b""), -1.0, 0.0).unwrap_err().code(), "INVALID_OPTION");
    assert_eq!(Overflow::from_code(9).unwrap_err().code(), "INVALID_OPTION");
    assert_eq!(StartAt::from_code(2, -1.0).unwrap_err().code(), "INVALID_OPTION");
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Drain(u8),
    Ack(u8),
    Nack(u8),
    Tick(u16),
    Claim(u8),
    Leave(u8),
    Join,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..6u8).prop_map(Op::Publish),
        4 => any::<u8>().prop_map(Op::Drain),
        4 => any::<u8>().prop_map(Op::Ack),
        2 => any::<u8>().prop_map(Op::Nack),
        2 => (1..300u16).prop_map(Op::Tick),
        1 => any::<u8>().prop_map(Op::Claim),
        1 => any::<u8>().prop_map(Op::Leave),
        1 => Just(Op::Join),
    ]
}

proptest! {
    /// Consumer groups against a model, through random publishes, drains, acks, nacks, timeouts,
    /// claims and members leaving and joining: every message is acked or dead-lettered or still
    /// in the group (none lost), none is delivered after its ack, and (while no work is
    /// reassigned) each member receives its first deliveries in channel order.
    #[test]
    fn groups_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        // Order holds while no member leaves or has work claimed from it: reassigned messages
        // may go to a member that already received later ones.
        let reassigns = ops.iter().any(|op| matches!(op, Op::Leave(_) | Op::Claim(_)));
        let mut bus = Bus::default();
        let ch = bus.channel("jobs").unwrap();
        let g = bus.group(ch, "w", GroupOptions { visibility: 100.0, max_deliveries: 3, capacity: 1000, ..GroupOptions::default() }).unwrap();
        let mut members = vec![bus.join(g, EP, 3).unwrap(), bus.join(g, EP, 3).unwrap()];
        let mut now = 0.0;
        let mut published = 0u64;
        let mut outstanding: Vec<Rec> = Vec::new(); // delivered, not settled by us
        let mut acked = std::collections::HashSet::new();
        let mut first_deliveries: std::collections::HashMap<u32, Vec<u64>> = std::collections::HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Publish(n) => {
                    let batch: Vec<u8> = (0..n).flat_map(|_| { published += 1; msg(ch, &(published - 1).to_le_bytes()) }).collect();
                    bus.publish(&batch, now).unwrap();
                }
                Op::Drain(size) => {
                    let mut buf = vec![0u8; 40 + size as usize * 2];
                    if let Ok(n) = bus.drain(EP, &mut buf, now) {
                        for r in records(&buf[..n]) {
                            prop_assert!(!acked.contains(&r.seq), "delivered after its ack");
                            prop_assert_eq!(u64::from_le_bytes(r.body.clone().try_into().unwrap()), r.seq);
                            if seen.insert(r.seq) { first_deliveries.entry(r.consumer).or_default().push(r.seq); }
                            outstanding.push(r);
                        }
                    }
                }
                Op::Ack(i) | Op::Nack(i) if !outstanding.is_empty() => {
                    let r = outstanding.remove(i as usize % outstanding.len());
                    let result = if matches!(op, Op::Ack(_)) { bus.ack(r.consumer, r.seq, r.attempt) } else { bus.nack(r.consumer, r.seq, r.attempt, 0.0, None, now) };
                    match result {
                        Ok(()) => { if matches!(op, Op::Ack(_)) { acked.insert(r.seq); } }
                        // Stale (lease gone) or from a member that has left since.
                        Err(e) => prop_assert!(matches!(e.code(), "STALE_ACK" | "UNKNOWN_SUBSCRIPTION"), "{e}"),
                    }
                }
                Op::Tick(dt) => { now += f64::from(dt); bus.tick(now); }
                Op::Claim(i) if !members.is_empty() => { bus.claim(g, members[i as usize % members.len()], 50.0, 2, now).unwrap(); }
                Op::Leave(i) if members.len() > 1 => { bus.unsubscribe(members.remove(i as usize % members.len())).unwrap(); }
                Op::Join => members.push(bus.join(g, EP, 3).unwrap()),
                _ => {}
            }
        }
        for seqs in first_deliveries.values().filter(|_| !reassigns) {
            prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "each member's first deliveries keep channel order");
        }
        let stats = bus.group_stats(g).unwrap();
        let dead = bus.stats(ch).unwrap().dead_lettered;
        prop_assert_eq!(stats.acked, acked.len() as u64);
        prop_assert_eq!(stats.acked + dead + stats.pending + stats.backlog, published, "every message acked, dead-lettered or still in the group");
    }
}

#[derive(Debug, Clone)]
enum SubOp {
    Publish { channel: u8, count: u8, priority: u8 },
    Subscribe { channel: u8, earliest: bool },
    Unsubscribe(u8),
    Drain(u16),
}

fn sub_op() -> impl Strategy<Value = SubOp> {
    prop_oneof![
        4 => (0..3u8, 1..6u8, 0..4u8).prop_map(|(channel, count, priority)| SubOp::Publish { channel, count, priority }),
        2 => (0..3u8, any::<bool>()).prop_map(|(channel, earliest)| SubOp::Subscribe { channel, earliest }),
        1 => any::<u8>().prop_map(SubOp::Unsubscribe),
        2 => (60..400u16).prop_map(SubOp::Drain),
    ]
}

proptest! {
    /// Broadcast subscribers against a model: each live subscriber receives exactly its
    /// channel's messages from its start (the retained ones, for `earliest`), each once, and
    /// within one priority in channel order.
    #[test]
    fn subscribers_match_the_model(ops in proptest::collection::vec(sub_op(), 1..80), keep in 1..20usize) {
        let retention = Retention { max_count: keep, max_bytes: 0, max_age: f64::INFINITY };
        let mut bus = Bus::new(BusConfig { default_retention: retention, ..BusConfig::default() });
        let channels: Vec<u32> = (0..3).map(|i| bus.channel(&format!("ch{i}")).unwrap()).collect();
        let mut published = [0u64; 3];
        let mut live: Vec<(u32, usize, u64)> = Vec::new();
        let mut received: std::collections::HashMap<u32, Vec<(u8, u64)>> = std::collections::HashMap::new();
        let take = |bus: &mut Bus, buf: &mut [u8], received: &mut std::collections::HashMap<u32, Vec<(u8, u64)>>| -> Result<(), TestCaseError> {
            if let Ok(n) = bus.drain(EP, buf, 0.0) {
                for r in records(&buf[..n]) {
                    prop_assert_eq!(u64::from_le_bytes(r.body.clone().try_into().unwrap()), r.seq);
                    received.get_mut(&r.consumer).expect("delivery to a live subscriber").push((frame::priority(&r.frame), r.seq));
                }
            }
            Ok(())
        };
        for op in ops {
            match op {
                SubOp::Publish { channel, count, priority } => {
                    let c = channel as usize;
                    let batch: Vec<u8> = (0..count).flat_map(|_| { published[c] += 1; encode(channels[c], priority, 0.0, b"", &(published[c] - 1).to_le_bytes()) }).collect();
                    bus.publish(&batch, 0.0).unwrap();
                }
                SubOp::Subscribe { channel, earliest } => {
                    let c = channel as usize;
                    let start = if earliest { StartAt::Earliest } else { StartAt::Latest };
                    let id = bus.subscribe(EP, channels[c], SubscribeOptions { start, ..SubscribeOptions::default() }).unwrap();
                    let from = if earliest { published[c].saturating_sub(keep as u64) } else { published[c] };
                    live.push((id, c, from));
                    received.insert(id, Vec::new());
                }
                SubOp::Unsubscribe(which) if !live.is_empty() => {
                    let (id, _, _) = live.remove(which as usize % live.len());
                    bus.unsubscribe(id).unwrap();
                    received.remove(&id);
                }
                SubOp::Drain(size) => take(&mut bus, &mut vec![0u8; size as usize], &mut received)?,
                SubOp::Unsubscribe(_) => {}
            }
        }
        let mut buf = vec![0u8; 1 << 16];
        while bus.has_pending(EP) {
            take(&mut bus, &mut buf, &mut received)?;
        }
        for (id, c, from) in live {
            let got = &received[&id];
            let mut seqs: Vec<u64> = got.iter().map(|&(_, s)| s).collect();
            seqs.sort_unstable();
            prop_assert_eq!(seqs, (from..published[c]).collect::<Vec<_>>(), "each message once, none lost");
            for p in 0..4u8 {
                let lane: Vec<u64> = got.iter().filter(|&&(q, _)| q == p).map(|&(_, s)| s).collect();
                prop_assert!(lane.windows(2).all(|w| w[0] < w[1]), "channel order within a priority");
            }
        }
    }
}

#[test]
fn acked_leases_leave_no_deadline_behind() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 30_000.0, 5);
    bus.join(g, EP, 1024).unwrap();
    for round in 0..10 {
        bus.publish(&(0..1000).flat_map(|_| msg(ch, b"x")).collect::<Vec<_>>(), f64::from(round)).unwrap();
        for r in drain_all(&mut bus, EP, f64::from(round)) {
            bus.ack(r.consumer, r.seq, r.attempt).unwrap();
        }
    }
    assert_eq!(bus.group_stats(g).unwrap().acked, 10_000);
    assert_eq!(bus.next_deadline(), None, "no lease is running, so nothing is due");
}

#[test]
fn a_publisher_told_to_wait_is_woken_when_another_endpoint_makes_room() {
    let mut bus = Bus::default();
    let ch = bus.channel("x").unwrap();
    let publisher = bus.open_endpoint().unwrap();
    bus.subscribe(EP, ch, SubscribeOptions { capacity: 1, overflow: Overflow::Block, ..SubscribeOptions::default() })
        .unwrap();
    bus.publish_from(publisher, &msg(ch, b"1"), 0.0).unwrap();
    assert!(matches!(
        bus.publish_from(publisher, &msg(ch, b"2"), 0.0),
        Err(BusError::Backpressure { block: true, .. })
    ));
    assert_eq!(bus.take_wakeups(), vec![EP], "only the subscriber has work so far");
    drain_all(&mut bus, EP, 0.0);
    assert_eq!(bus.take_wakeups(), vec![publisher], "the drain made room: wake the waiting publisher");
    assert!(bus.take_wakeups().is_empty());
    bus.publish_from(publisher, &msg(ch, b"2"), 0.0).unwrap();
}

#[test]
fn a_group_without_members_never_blocks_publishers_and_keeps_its_backlog_in_the_log() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = bus
        .group(ch, "later", GroupOptions { capacity: 2, overflow: Overflow::Block, ..GroupOptions::default() })
        .unwrap();
    for i in 0..5u8 {
        bus.publish(&msg(ch, &[i]), 0.0).unwrap();
    }
    let m = bus.join(g, EP, 10).unwrap();
    let got: Vec<u8> = drain_all(&mut bus, EP, 0.0).iter().filter(|r| r.consumer == m).map(|r| r.body[0]).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
}

#[test]
fn dead_letters_of_a_channel_with_a_maximal_name_are_kept() {
    let mut bus = Bus::default();
    let ch = bus.channel(&"c".repeat(255)).unwrap();
    let g = group_of(&mut bus, ch, 100.0, 1);
    let m = bus.join(g, EP, 1).unwrap();
    bus.publish(&msg(ch, b"x"), 0.0).unwrap();
    let r = drain_all(&mut bus, EP, 0.0).remove(0);
    bus.nack(m, r.seq, r.attempt, 0.0, Some("bad"), 1.0).unwrap();
    let dlq = bus.names.get(&format!("{}.dead-letter", "c".repeat(255))).unwrap();
    assert_eq!(bus.stats(dlq).unwrap().published, 1);
}

#[test]
fn retention_does_not_trim_what_a_refusing_consumer_has_not_read() {
    let retention = Retention { max_count: 4, max_bytes: 0, max_age: f64::INFINITY };
    let mut bus = Bus::new(BusConfig { default_retention: retention, ..BusConfig::default() });
    let ch = bus.channel("log").unwrap();
    for i in 0..4u8 {
        bus.publish(&msg(ch, &[i]), 0.0).unwrap();
    }
    // Replays from the start with room for only two: the other two stay in the log, unread.
    let options = SubscribeOptions { start: StartAt::Earliest, capacity: 2, overflow: Overflow::Reject };
    let s = bus.subscribe(EP, ch, options).unwrap();
    // Trimming 0 and 1 is fine (they sit in its buffer); trimming 2 would lose an unread message.
    bus.publish(&msg(ch, &[4]), 0.0).unwrap();
    bus.publish(&msg(ch, &[5]), 0.0).unwrap();
    assert_eq!(bus.publish(&msg(ch, b"x"), 0.0).unwrap_err().code(), "BACKPRESSURE");
    let got: Vec<u8> = drain_all(&mut bus, EP, 0.0).iter().filter(|r| r.consumer == s).map(|r| r.body[0]).collect();
    assert_eq!(got, vec![0, 1, 2, 3, 4, 5], "nothing trimmed before it was read");
    assert_eq!(bus.subscriber_stats(s).unwrap().missed, 0);
    bus.publish(&msg(ch, &[6]), 0.0).unwrap();
}

#[test]
fn a_deleted_group_is_gone_with_its_members_and_its_name_can_be_reused() {
    let mut bus = Bus::default();
    let ch = bus.channel("jobs").unwrap();
    let g = group_of(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, EP, 5).unwrap();
    bus.publish(&msg(ch, b"a"), 0.0).unwrap();
    bus.delete_group(g).unwrap();
    assert!(drain_all(&mut bus, EP, 0.0).is_empty(), "its member is gone with it");
    assert_eq!(bus.ack(m, 0, 1).unwrap_err().code(), "STALE_ACK", "its member's deliveries are stale");
    assert_eq!(bus.stats(ch).unwrap().groups, 0);
    assert_eq!(bus.delete_group(g).unwrap_err().code(), "UNKNOWN_GROUP");
    let again = bus.group(ch, "workers", GroupOptions { start: StartAt::Earliest, ..GroupOptions::default() }).unwrap();
    assert_ne!(again, g);
    bus.join(again, EP, 5).unwrap();
    assert_eq!(drain_all(&mut bus, EP, 0.0).len(), 1, "a new group replays from the log");
}
