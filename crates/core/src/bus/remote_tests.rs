//! Channels bound to a transport: egress, ingest and remote groups (`remote.rs`).

use super::remote::{self, HEADER_LEN};
use super::tests::{drain_all, header, msg, sub, Rec};
use super::*;
use crate::frame::{encode, OFF_CHANNEL, OFF_TIMESTAMP};
use crate::Coded;

const EP: u32 = MAIN_ENDPOINT;
const T: u32 = 7;

/// One egress record, decoded.
#[derive(Debug, Clone, PartialEq)]
struct Out {
    kind: u8,
    id: u32,
    value: f64,
    pos: Vec<u8>,
    frame: Vec<u8>,
}

fn egress(bus: &mut Bus) -> Vec<Out> {
    let buf = bus.drain_egress();
    let mut out = Vec::new();
    let mut at = 0;
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
    while at < buf.len() {
        let len = u32_at(at) as usize;
        assert_eq!(&buf[at + 5..at + 8], &[0; 3]);
        assert_eq!((u32_at(at + 16), u32_at(at + 20)), (0, 0));
        let pos_len = u32_at(at + remote::OFF_POS_LEN) as usize;
        let body = &buf[at + HEADER_LEN..at + len];
        out.push(Out {
            kind: buf[at + remote::OFF_KIND],
            id: u32_at(at + remote::OFF_ID),
            value: f64::from_le_bytes(buf[at + 24..at + 32].try_into().unwrap()),
            pos: body[..pos_len].to_vec(),
            frame: body[pos_len..].to_vec(),
        });
        at += len;
    }
    assert!(!bus.has_egress());
    out
}

/// An ingest record.
fn record(kind: u8, id: u32, pos: &[u8], count: u32, value: f64, frame: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&((HEADER_LEN + pos.len() + frame.len()) as u32).to_le_bytes());
    r.extend_from_slice(&[kind, 0, 0, 0]);
    r.extend_from_slice(&id.to_le_bytes());
    r.extend_from_slice(&(pos.len() as u32).to_le_bytes());
    r.extend_from_slice(&count.to_le_bytes());
    r.extend_from_slice(&[0; 4]);
    r.extend_from_slice(&value.to_le_bytes());
    r.extend_from_slice(pos);
    r.extend_from_slice(frame);
    r
}

fn live(ch: u32, at: f64, frame: &[u8]) -> Vec<u8> {
    record(remote::LIVE, ch, &[], 0, at, frame)
}

fn grouped(group: u32, pos: &[u8], count: u32, frame: &[u8]) -> Vec<u8> {
    record(remote::GROUP, group, pos, count, 0.0, frame)
}

/// A frame as another process would have written it: its own id for the channel.
fn foreign(payload: &[u8]) -> Vec<u8> {
    encode(999, 1, 0.0, b"", payload)
}

fn bound(bus: &mut Bus, name: &str) -> u32 {
    let ch = bus.channel(name).unwrap();
    bus.bind(ch, T).unwrap();
    ch
}

fn remote_group(bus: &mut Bus, ch: u32, visibility: f64, max_deliveries: u32) -> u32 {
    bus.group(ch, "workers", GroupOptions { visibility, max_deliveries, ..GroupOptions::default() }).unwrap()
}

fn deliveries(bus: &mut Bus, now: Millis) -> Vec<Rec> {
    drain_all(bus, EP, now).into_iter().filter(|r| r.consumer != EVENT_CONSUMER).collect()
}

#[test]
fn binding_rules() {
    let mut bus = Bus::default();
    let ch = bus.channel("orders").unwrap();
    assert_eq!(bus.bind(ch, 0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(bus.binding(ch), None);
    bus.bind(ch, T).unwrap();
    bus.bind(ch, T).unwrap();
    assert_eq!(bus.binding(ch), Some(T));
    let err = bus.bind(ch, T + 1).unwrap_err();
    assert_eq!(err.code(), "INVALID_OPTION");
    assert!(err.to_string().contains("\"orders\""), "{err}");
    // The dead-letter channel goes with it.
    let dlq = bus.channel("orders.dead-letter").unwrap();
    assert_eq!(bus.binding(dlq), Some(T));
    assert_eq!(bus.bind(u32::MAX, T).unwrap_err().code(), "UNKNOWN_CHANNEL");

    // A channel used here first cannot be bound, whatever the use; nothing changes.
    let published = bus.channel("a").unwrap();
    bus.publish(&msg(published, b"x"), 0.0).unwrap();
    let subscribed = bus.channel("b").unwrap();
    sub(&mut bus, subscribed);
    let grouped = bus.channel("c").unwrap();
    bus.group(grouped, "g", GroupOptions::default()).unwrap();
    for (ch, name) in [(published, "a"), (subscribed, "b"), (grouped, "c")] {
        let err = bus.bind(ch, T).unwrap_err();
        assert_eq!(err.code(), "INVALID_OPTION");
        let text = err.to_string();
        assert!(text.contains(&format!("{name:?}")) && text.contains("before first use"), "{text}");
        assert_eq!(bus.binding(ch), None);
    }
    // So can a channel whose dead-letter channel was used.
    let d = bus.channel("d").unwrap();
    let d_dlq = bus.channel("d.dead-letter").unwrap();
    sub(&mut bus, d_dlq);
    let err = bus.bind(d, T).unwrap_err();
    assert!(err.to_string().contains("\"d.dead-letter\""), "{err}");
    assert_eq!(bus.binding(d), None);
}

#[test]
fn a_batch_mixing_bound_and_local_channels_egresses_the_bound_frames_only() {
    let mut bus = Bus::default();
    let orders = bound(&mut bus, "orders");
    let local = bus.channel("local").unwrap();
    let s = sub(&mut bus, local);
    bus.configure(orders, ChannelOptions { dedup_window: 500.0, ..ChannelOptions::default() }, 0.0).unwrap();
    let batch = [
        encode(orders, 2, 0.0, b"o-1", b"first"),
        msg(local, b"here"),
        encode(orders, 1, 0.0, b"o-2", b"second"),
        encode(orders, 1, 0.0, b"o-1", b"again"), // a duplicate within the window
    ]
    .concat();
    assert_eq!(bus.publish(&batch, 42.0).unwrap(), 3);
    assert!(bus.has_pending(EP) && bus.has_egress());
    let out = egress(&mut bus);
    assert_eq!(out.len(), 2);
    for (o, payload) in out.iter().zip([&b"first"[..], b"second"]) {
        assert_eq!((o.kind, o.id, o.value, o.pos.len()), (remote::PUBLISH, orders, 500.0, 0));
        assert!(o.frame.ends_with(payload));
        assert_eq!(frame::channel(&o.frame), orders);
        assert_eq!(f64::from_le_bytes(o.frame[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].try_into().unwrap()), 42.0);
        assert_eq!(frame::read_header(&o.frame, 0, 0, 1 << 20).unwrap().len, o.frame.len());
    }
    assert_eq!(frame::priority(&out[0].frame), 2);
    let got = deliveries(&mut bus, 42.0);
    assert_eq!(got.iter().map(|r| (r.consumer, r.body.clone())).collect::<Vec<_>>(), vec![(s, b"here".to_vec())]);
    let stats = bus.stats(orders).unwrap();
    assert_eq!((stats.published, stats.duplicates, stats.retained, stats.next_seq), (2, 1, 0, 0));
    assert!(!bus.has_pending(EP));
    assert!(bus.drain_egress().is_empty());
}

#[test]
fn a_bound_channels_publish_ignores_local_room_and_a_request_is_refused() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let full = SubscribeOptions { capacity: 1, overflow: Overflow::Reject, ..SubscribeOptions::default() };
    bus.subscribe(EP, ch, full).unwrap();
    assert_eq!(bus.publish(&[msg(ch, b"a"), msg(ch, b"b")].concat(), 0.0).unwrap(), 2);
    let err = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap_err();
    assert_eq!(err.code(), "CAPABILITY_UNSUPPORTED");
    assert_eq!(err.to_string(), "channel \"orders\" is bound to a transport that cannot carry requests yet");
    assert_eq!(egress(&mut bus).len(), 2);
}

#[test]
fn live_ingest_feeds_the_mirror_and_its_subscribers() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let local = bus.channel("local").unwrap();
    let s = sub(&mut bus, ch);
    // A remote group is never fed from the mirror.
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 10).unwrap();
    let batch = [
        live(ch, 100.0, &foreign(b"one")),
        live(ch, 50.0, &foreign(b"two")), // the broker's clock as given, kept monotone
        live(local, 10.0, &foreign(b"not bound")),
        live(4242, 10.0, &foreign(b"unknown")),
        live(ch, 60.0, &foreign(b"bad")[..30]),
    ]
    .concat();
    assert_eq!(bus.ingest(&batch, 200.0).unwrap(), 2);
    assert!(!bus.has_egress());
    let got = deliveries(&mut bus, 200.0);
    assert_eq!(
        got.iter().map(|r| (r.consumer, r.seq, r.body.clone())).collect::<Vec<_>>(),
        vec![(s, 0, b"one".to_vec()), (s, 1, b"two".to_vec())]
    );
    assert!(got.iter().all(|r| frame::channel(&r.frame) == ch));
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.ingested, stats.rejected, stats.published, stats.retained), (2, 1, 0, 2));
    assert_eq!(bus.stats(local).unwrap().ingested, 0);
    // Replay by time reads the broker's times.
    let late = SubscribeOptions { start: StartAt::Time(100.0), ..SubscribeOptions::default() };
    let r = bus.subscribe(EP, ch, late).unwrap();
    assert_eq!(deliveries(&mut bus, 200.0).iter().filter(|d| d.consumer == r).count(), 2);
    assert_eq!(bus.group_stats(g).unwrap().backlog, 0);
    // Retention trims the mirror as any log.
    let keep_one = Retention { max_count: 1, ..Retention::default() };
    bus.configure(ch, ChannelOptions { retention: keep_one, ..ChannelOptions::default() }, 200.0).unwrap();
    bus.ingest(&live(ch, 300.0, &foreign(b"three")), 300.0).unwrap();
    assert_eq!(bus.stats(ch).unwrap().retained, 1);
}

#[test]
fn a_full_refusing_mirror_subscriber_lags_in_the_log_instead_of_growing() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let small = SubscribeOptions { capacity: 2, overflow: Overflow::Block, ..SubscribeOptions::default() };
    let s = bus.subscribe(EP, ch, small).unwrap();
    let batch: Vec<u8> = (0..5u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    assert_eq!(bus.ingest(&batch, 1.0).unwrap(), 5);
    assert_eq!(bus.subscriber_stats(s).unwrap().buffered, 2);
    let got = deliveries(&mut bus, 1.0);
    assert_eq!(got.iter().map(|r| r.body[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn a_group_delivery_is_handed_to_a_member_and_its_ack_goes_to_the_broker() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    assert_eq!(bus.group_room(g).unwrap(), 0, "no members, no room");
    let m = bus.join(g, EP, 3).unwrap();
    assert_eq!(bus.group_room(g).unwrap(), 3);
    let batch = [grouped(g, b"1-0", 1, &foreign(b"a")), grouped(g, b"1-1", 3, &foreign(b"b"))].concat();
    assert_eq!(bus.ingest(&batch, 10.0).unwrap(), 2);
    assert_eq!(bus.group_room(g).unwrap(), 1);
    let got = deliveries(&mut bus, 10.0);
    assert_eq!(
        got.iter().map(|r| (r.consumer, r.seq, r.body.clone())).collect::<Vec<_>>(),
        vec![(m, 0, b"a".to_vec()), (m, 1, b"b".to_vec())]
    );
    assert!(got.iter().all(|r| frame::channel(&r.frame) == ch));
    let pending = bus.pending(g, 10.0).unwrap();
    assert_eq!(pending.iter().map(|p| p.deliveries).collect::<Vec<_>>(), vec![1, 3], "the broker's count");
    bus.ack(m, got[1].seq, got[1].attempt).unwrap();
    assert_eq!(
        egress(&mut bus),
        vec![Out { kind: remote::ACK, id: g, value: 0.0, pos: b"1-1".to_vec(), frame: vec![] }]
    );
    assert_eq!(bus.ack(m, got[1].seq, got[1].attempt).unwrap_err().code(), "STALE_ACK");
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.acked, stats.pending, stats.backlog, stats.delivered), (1, 1, 0, 2));
    assert_eq!(bus.stats(ch).unwrap().ingested, 2);
    // A group that no longer exists, or a local one, takes nothing.
    let local = bus.channel("local").unwrap();
    let lg = bus.group(local, "l", GroupOptions::default()).unwrap();
    assert_eq!(
        bus.ingest(&[grouped(lg, b"x", 1, &foreign(b"c")), grouped(9999, b"x", 1, &foreign(b"d"))].concat(), 11.0)
            .unwrap(),
        0
    );
}

#[test]
fn members_beyond_their_room_wait_in_the_inbox_which_counts_as_backlog() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, EP, 1).unwrap();
    let batch: Vec<u8> = (0..3u8).flat_map(|i| grouped(g, &[i], 1, &foreign(&[i]))).collect();
    bus.ingest(&batch, 0.0).unwrap();
    assert_eq!(bus.group_room(g).unwrap(), 0);
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.backlog, stats.pending), (2, 1));
    let first = deliveries(&mut bus, 0.0).remove(0);
    bus.ack(m, first.seq, first.attempt).unwrap();
    let next = deliveries(&mut bus, 1.0).remove(0);
    assert_eq!(next.body, vec![1]);
}

#[test]
fn a_nack_releases_to_the_broker_with_its_delay_and_a_later_ack_is_stale() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, EP, 5).unwrap();
    bus.ingest(&[grouped(g, b"p0", 1, &foreign(b"a")), grouped(g, b"p1", 1, &foreign(b"b"))].concat(), 0.0).unwrap();
    let got = deliveries(&mut bus, 0.0);
    bus.nack(m, got[0].seq, got[0].attempt, 250.0, None, 1.0).unwrap();
    bus.nack(m, got[1].seq, got[1].attempt, 0.0, None, 1.0).unwrap();
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.id, o.value, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, g, 250.0, b"p0".to_vec()), (remote::RELEASE, g, 0.0, b"p1".to_vec())]
    );
    // Redelivery is the broker's: nothing comes back here, no timer is armed.
    assert_eq!(bus.next_deadline(), None);
    assert!(deliveries(&mut bus, 300.0).is_empty());
    assert_eq!(bus.ack(m, got[0].seq, got[0].attempt).unwrap_err().code(), "STALE_ACK");
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.nacked, stats.redelivered, stats.pending, stats.backlog), (2, 2, 0, 0));
}

#[test]
fn dead_letters_leave_as_one_dead_record_with_the_dead_letter_frame() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let dlq = bus.channel("jobs.dead-letter").unwrap();
    let g = remote_group(&mut bus, ch, 1000.0, 3);
    let m = bus.join(g, EP, 5).unwrap();
    let batch = [
        grouped(g, b"p0", 1, &encode(999, 1, 0.0, b"id-0", b"bad")),
        grouped(g, b"p1", 3, &foreign(b"last try")),
        grouped(g, b"p2", 4, &encode(999, 1, 0.0, b"id-2", b"poison")), // past maxDeliveries: dead at once
    ]
    .concat();
    assert_eq!(bus.ingest(&batch, 0.0).unwrap(), 3);
    let at_once = egress(&mut bus);
    assert_eq!(at_once.len(), 1);
    let dead = &at_once[0];
    assert_eq!((dead.kind, dead.id, dead.pos.as_slice()), (remote::DEAD, g, &b"p2"[..]));
    assert_eq!(frame::channel(&dead.frame), dlq);
    assert_eq!(frame::id(&dead.frame), b"id-2");
    assert!(dead.frame.ends_with(b"poison"));
    assert_eq!(header(&dead.frame, "x-orrery-dead-letter-reason").as_deref(), Some("max-deliveries"));
    assert_eq!(header(&dead.frame, "x-orrery-deliveries").as_deref(), Some("3"));
    assert_eq!(header(&dead.frame, "x-orrery-origin-channel").as_deref(), Some("jobs"));
    assert_eq!(frame::read_header(&dead.frame, 0, 0, 1 << 20).unwrap().len, dead.frame.len());

    let got = deliveries(&mut bus, 0.0);
    assert_eq!(got.len(), 2);
    bus.nack(m, got[0].seq, got[0].attempt, 0.0, Some("validation failed"), 1.0).unwrap();
    bus.nack(m, got[1].seq, got[1].attempt, 0.0, None, 1.0).unwrap(); // its third delivery: dead
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::DEAD, b"p0".to_vec()), (remote::DEAD, b"p1".to_vec())]
    );
    assert_eq!(header(&out[0].frame, "x-orrery-dead-letter-reason").as_deref(), Some("validation failed"));
    assert_eq!(header(&out[0].frame, "x-orrery-deliveries").as_deref(), Some("1"));
    assert_eq!(header(&out[1].frame, "x-orrery-deliveries").as_deref(), Some("3"));
    assert!(out.iter().all(|o| frame::channel(&o.frame) == dlq));
    // Nothing was appended here: the dead letters are the broker's.
    assert_eq!(bus.stats(dlq).unwrap().retained, 0);
    assert_eq!(bus.stats(ch).unwrap().dead_lettered, 3);
    assert_eq!(bus.group_stats(g).unwrap().dead_lettered, 3);
}

#[test]
fn an_expired_lease_releases_and_at_max_deliveries_dead_letters() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 100.0, 2);
    let m = bus.join(g, EP, 5).unwrap();
    bus.ingest(&[grouped(g, b"p0", 1, &foreign(b"a")), grouped(g, b"p1", 2, &foreign(b"b"))].concat(), 0.0).unwrap();
    let got = deliveries(&mut bus, 0.0);
    assert_eq!(bus.next_deadline(), Some(100.0));
    bus.tick(100.0);
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.value, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, 0.0, b"p0".to_vec()), (remote::DEAD, 0.0, b"p1".to_vec())]
    );
    assert_eq!(header(&out[1].frame, "x-orrery-dead-letter-reason").as_deref(), Some("max-deliveries"));
    for r in &got {
        assert_eq!(bus.ack(m, r.seq, r.attempt).unwrap_err().code(), "STALE_ACK");
    }
    assert_eq!(bus.group_stats(g).unwrap().pending, 0);
    assert_eq!(bus.group_room(g).unwrap(), 5);
}

#[test]
fn a_leaving_member_releases_what_it_held_and_the_last_one_the_inbox_too() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    let a = bus.join(g, EP, 1).unwrap();
    let b = bus.join(g, EP, 1).unwrap();
    let batch: Vec<u8> = (0..4u8).flat_map(|i| grouped(g, &[b'p', b'0' + i], 1, &foreign(&[i]))).collect();
    bus.ingest(&batch, 0.0).unwrap();
    let got = deliveries(&mut bus, 0.0);
    assert_eq!(got.len(), 2);
    let held_by_a = got.iter().find(|r| r.consumer == a).unwrap().clone();
    bus.unsubscribe(a).unwrap();
    let out = egress(&mut bus);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].kind, out[0].pos[1] - b'0'), (remote::RELEASE, held_by_a.body[0]));
    assert_eq!(bus.ack(a, held_by_a.seq, held_by_a.attempt).unwrap_err().code(), "STALE_ACK");
    // The last member leaves: its delivery and the two waiting in the inbox go back.
    bus.unsubscribe(b).unwrap();
    let out = egress(&mut bus);
    assert_eq!(out.iter().map(|o| o.kind).collect::<Vec<_>>(), vec![remote::RELEASE; 3]);
    assert!(out.iter().all(|o| o.value == 0.0));
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.pending, stats.backlog, stats.redelivered), (0, 0, 2));
}

#[test]
fn deleting_a_remote_group_releases_every_entry() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 1).unwrap();
    bus.ingest(&[grouped(g, b"p0", 1, &foreign(b"a")), grouped(g, b"p1", 1, &foreign(b"b"))].concat(), 0.0).unwrap();
    deliveries(&mut bus, 0.0);
    bus.delete_group(g).unwrap();
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, b"p0".to_vec()), (remote::RELEASE, b"p1".to_vec())]
    );
    assert_eq!(bus.ingest(&grouped(g, b"p2", 1, &foreign(b"c")), 1.0).unwrap(), 0);
    assert!(!bus.has_egress());
}

#[test]
fn an_entry_expired_at_drain_is_acked_or_dead_lettered_as_its_channel_says() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 5).unwrap();
    bus.ingest(&grouped(g, b"p0", 1, &encode(999, 1, 50.0, b"", b"stale")), 0.0).unwrap();
    assert!(deliveries(&mut bus, 60.0).is_empty());
    assert_eq!(
        egress(&mut bus),
        vec![Out { kind: remote::ACK, id: g, value: 0.0, pos: b"p0".to_vec(), frame: vec![] }]
    );
    bus.configure(ch, ChannelOptions { dead_letter_expired: true, ..ChannelOptions::default() }, 60.0).unwrap();
    bus.ingest(&grouped(g, b"p1", 2, &encode(999, 1, 50.0, b"", b"stale")), 60.0).unwrap();
    assert!(deliveries(&mut bus, 60.0).is_empty());
    let out = egress(&mut bus);
    assert_eq!((out[0].kind, out[0].pos.as_slice()), (remote::DEAD, &b"p1"[..]));
    assert_eq!(header(&out[0].frame, "x-orrery-dead-letter-reason").as_deref(), Some("expired"));
    assert_eq!(header(&out[0].frame, "x-orrery-deliveries").as_deref(), Some("1"));
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.expired, stats.dead_lettered), (2, 1));
}

#[test]
fn an_expired_mirror_message_dead_letters_to_the_broker() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let dlq = bus.channel("orders.dead-letter").unwrap();
    bus.configure(ch, ChannelOptions { dead_letter_expired: true, ..ChannelOptions::default() }, 0.0).unwrap();
    sub(&mut bus, ch);
    bus.ingest(&live(ch, 1.0, &encode(999, 1, 5.0, b"", b"late")), 1.0).unwrap();
    assert!(deliveries(&mut bus, 10.0).is_empty());
    let out = egress(&mut bus);
    assert_eq!((out.len(), out[0].kind, out[0].id), (1, remote::PUBLISH, dlq));
    assert_eq!(header(&out[0].frame, "x-orrery-dead-letter-reason").as_deref(), Some("expired"));
}

#[test]
fn a_malformed_record_refuses_the_whole_batch_and_a_bad_frame_is_skipped() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 5).unwrap();
    let good = grouped(g, b"p0", 1, &foreign(b"a"));
    let mut bad_kind = live(ch, 1.0, &foreign(b"b"));
    bad_kind[4] = 3;
    let mut reserved = live(ch, 1.0, &foreign(b"b"));
    reserved[6] = 1;
    let mut long = live(ch, 1.0, &foreign(b"b"));
    long[0] += 1;
    let mut short = live(ch, 1.0, &foreign(b"b"));
    short[0..4].copy_from_slice(&31u32.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bad_kind, "kind"),
        (reserved, "reserved"),
        (long, "past the end"),
        (short, "shorter than the record header"),
        (good[..20].to_vec(), "32-byte"),
        (record(remote::LIVE, ch, b"x", 0, 1.0, &foreign(b"b")), "no position"),
        (record(remote::LIVE, ch, &[], 0, f64::NAN, &foreign(b"b")), "finite"),
        (record(remote::GROUP, g, b"x", 0, 0.0, &foreign(b"b")), "at least 1"),
        (record(remote::GROUP, g, b"x", 1, 5.0, &foreign(b"b")), "value"),
        (
            {
                let mut r = grouped(g, b"pp", 1, &foreign(b"b"));
                r[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
                r
            },
            "position runs past",
        ),
    ];
    for (bad, says) in cases {
        let err = bus.ingest(&[good.clone(), bad].concat(), 0.0).unwrap_err();
        assert_eq!(err.code(), "MALFORMED_FRAME");
        let text = err.to_string();
        assert!(text.contains("ingest record 1") && text.contains(says), "{text}");
        assert_eq!(bus.group_stats(g).unwrap().backlog + bus.group_stats(g).unwrap().pending, 0);
        assert!(!bus.has_egress() && !bus.has_pending(EP));
    }
    // A bad frame inside a good record: skipped, counted, and a group one acked on the broker.
    let mut bad_frame = foreign(b"zz");
    bad_frame[frame::OFF_VERSION] = 9;
    let too_big = vec![0u8; 0];
    let batch =
        [grouped(g, b"bad", 2, &bad_frame), live(ch, 1.0, &bad_frame), grouped(g, b"empty", 1, &too_big), good.clone()]
            .concat();
    assert_eq!(bus.ingest(&batch, 0.0).unwrap(), 1);
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::ACK, b"bad".to_vec()), (remote::ACK, b"empty".to_vec())]
    );
    assert_eq!(bus.stats(ch).unwrap().rejected, 3);
    assert_eq!(deliveries(&mut bus, 0.0).len(), 1);
}

#[test]
fn a_frame_over_the_size_limit_is_rejected_on_ingest() {
    let mut bus = Bus::new(BusConfig { max_message_bytes: 80, ..BusConfig::default() });
    let ch = bound(&mut bus, "orders");
    sub(&mut bus, ch);
    assert_eq!(bus.ingest(&live(ch, 1.0, &foreign(&[0; 100])), 1.0).unwrap(), 0);
    assert_eq!(bus.stats(ch).unwrap().rejected, 1);
}

#[test]
fn egress_makes_the_main_endpoint_drainable_and_wakes_it_from_other_threads() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let worker = bus.open_endpoint().unwrap();
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, worker, 5).unwrap();
    bus.ingest(&grouped(g, b"p0", 1, &foreign(b"a")), 0.0).unwrap();
    assert_eq!(bus.take_wakeups_except(EP), vec![worker]);
    let r = drain_all(&mut bus, worker, 0.0).remove(0);
    assert!(!bus.has_pending(EP));
    bus.ack(m, r.seq, r.attempt).unwrap();
    assert!(bus.has_pending(EP) && !bus.has_records(EP));
    assert_eq!(bus.take_wakeups_except(worker), vec![EP]);
    assert_eq!(bus.take_wakeups_except(worker), Vec::<u32>::new(), "woken once");
    // A records drain says it is done with records; the egress waits for drain_egress.
    let mut out = vec![0u8; 256];
    assert_eq!(wire::drain(&mut bus, EP, &mut out, 0.0), 1.0);
    assert_eq!(egress(&mut bus).len(), 1);
    assert!(!bus.has_pending(EP));
    // Woken again for the next egress.
    bus.ingest(&grouped(g, b"p1", 1, &foreign(b"b")), 0.0).unwrap();
    let r = drain_all(&mut bus, worker, 0.0).remove(0);
    bus.ack(m, r.seq, r.attempt).unwrap();
    assert_eq!(bus.take_wakeups_except(worker), vec![EP]);
}

#[test]
fn ingested_frames_keep_their_bytes_but_take_this_processs_channel_id() {
    let mut bus = Bus::default();
    let _other = bus.channel("first").unwrap();
    let ch = bound(&mut bus, "orders");
    let s = sub(&mut bus, ch);
    let mut f = encode(12345, 3, 0.0, b"m-1", b"payload");
    f[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].copy_from_slice(&77.0f64.to_le_bytes());
    bus.ingest(&live(ch, 5.0, &f), 9.0).unwrap();
    let got = deliveries(&mut bus, 9.0).remove(0);
    assert_eq!(got.consumer, s);
    assert_eq!(&got.frame[OFF_CHANNEL..OFF_CHANNEL + 4], &ch.to_le_bytes());
    let mut want = f.clone();
    want[OFF_CHANNEL..OFF_CHANNEL + 4].copy_from_slice(&ch.to_le_bytes());
    assert_eq!(got.frame, want, "everything else as the broker had it");
}

proptest::proptest! {
    /// Ingest takes outside bytes: whatever they are, it never panics, and a refused batch
    /// changes nothing (no delivery, no egress, no stat).
    #[test]
    fn ingest_survives_any_bytes(
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        cut in 0usize..400,
        flip in proptest::collection::vec((0usize..400, proptest::prelude::any::<u8>()), 0..4),
    ) {
        let mut bus = Bus::default();
        let ch = bound(&mut bus, "orders");
        sub(&mut bus, ch);
        let g = remote_group(&mut bus, ch, 100.0, 2);
        bus.join(g, EP, 5).unwrap();
        let mut batch = [live(ch, 1.0, &foreign(b"a")), grouped(g, b"p", 1, &foreign(b"b")), noise].concat();
        for (at, byte) in flip {
            if let Some(b) = batch.get_mut(at) {
                *b = byte;
            }
        }
        batch.truncate(cut.min(batch.len()));
        match bus.ingest(&batch, 1.0) {
            Ok(_) => {
                deliveries(&mut bus, 1.0);
                bus.tick(500.0);
                egress(&mut bus);
            }
            Err(err) => {
                proptest::prop_assert_eq!(err.code(), "MALFORMED_FRAME");
                proptest::prop_assert!(!bus.has_pending(EP));
                let stats = bus.stats(ch).unwrap();
                proptest::prop_assert_eq!((stats.ingested, stats.rejected, stats.retained), (0, 0, 0));
            }
        }
    }
}

#[test]
fn claim_moves_a_delivery_between_this_processs_members_and_its_ack_still_names_the_position() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 10_000.0, 5);
    let stuck = bus.join(g, EP, 1).unwrap();
    bus.ingest(&grouped(g, b"p0", 1, &foreign(b"a")), 0.0).unwrap();
    deliveries(&mut bus, 0.0);
    let helper = bus.join(g, EP, 1).unwrap();
    assert_eq!(bus.claim(helper, 500.0, 10, 600.0).unwrap(), 1);
    assert!(!bus.has_egress(), "a claim stays local");
    let r = deliveries(&mut bus, 600.0).remove(0);
    assert_eq!((r.consumer, r.body.as_slice()), (helper, &b"a"[..]));
    assert_eq!(bus.pending(g, 600.0).unwrap()[0].deliveries, 2);
    bus.ack(helper, r.seq, r.attempt).unwrap();
    assert_eq!(
        egress(&mut bus).iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::ACK, b"p0".to_vec())]
    );
    bus.unsubscribe(stuck).unwrap();
    assert!(!bus.has_egress(), "the member that left held nothing any more");
}

#[test]
fn a_remote_entrys_lease_runs_from_ingest_whether_delivered_or_still_waiting() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 100.0, 5);
    let m = bus.join(g, EP, 1).unwrap();
    // The driver read three with room for one: two wait in the inbox, each with a lease.
    let batch: Vec<u8> = (0..3u8).flat_map(|i| grouped(g, &[b'p', b'0' + i], 1, &foreign(&[i]))).collect();
    bus.ingest(&batch, 0.0).unwrap();
    assert_eq!(bus.next_deadline(), Some(100.0));
    let first = deliveries(&mut bus, 10.0).remove(0);
    bus.ack(m, first.seq, first.attempt).unwrap();
    assert_eq!(egress(&mut bus)[0].kind, remote::ACK);
    // Handed over at 60, its lease still ends at 100 (ingest + visibility), not at 160.
    let second = deliveries(&mut bus, 60.0).remove(0);
    assert_eq!(second.body, vec![1]);
    assert_eq!(bus.next_deadline(), Some(100.0));
    assert_eq!(bus.tick(99.0), 0);
    assert!(!bus.has_egress());
    assert_eq!(bus.tick(100.0), 2);
    // Both go back: the one delivered and the one that never left the inbox.
    assert_eq!(
        egress(&mut bus).iter().map(|o| (o.kind, o.value, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, 0.0, b"p1".to_vec()), (remote::RELEASE, 0.0, b"p2".to_vec())]
    );
    assert_eq!(bus.ack(m, second.seq, second.attempt).unwrap_err().code(), "STALE_ACK");
    assert!(deliveries(&mut bus, 100.0).is_empty());
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.redelivered, stats.pending, stats.backlog, stats.acked), (2, 0, 0, 1));
    assert_eq!(bus.group_room(g).unwrap(), 1);
    assert_eq!(bus.next_deadline(), None);
}

#[test]
fn neither_a_claim_nor_a_late_drain_extends_a_remote_lease() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 100.0, 5);
    let stuck = bus.join(g, EP, 1).unwrap();
    bus.ingest(&grouped(g, b"p0", 1, &foreign(b"a")), 0.0).unwrap();
    deliveries(&mut bus, 0.0);
    let helper = bus.join(g, EP, 1).unwrap();
    assert_eq!(bus.claim(helper, 50.0, 1, 50.0).unwrap(), 1);
    let claimed = deliveries(&mut bus, 50.0).remove(0);
    assert_eq!(bus.next_deadline(), Some(100.0));
    bus.tick(100.0);
    assert_eq!(
        egress(&mut bus).iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, b"p0".to_vec())]
    );
    assert_eq!(bus.ack(helper, claimed.seq, claimed.attempt).unwrap_err().code(), "STALE_ACK");
    // A drain past the lease (no tick first) hands nothing over; the tick gives it back.
    bus.unsubscribe(stuck).unwrap();
    bus.ingest(&grouped(g, b"p1", 1, &foreign(b"b")), 200.0).unwrap();
    assert!(deliveries(&mut bus, 300.0).is_empty());
    assert_eq!(bus.next_deadline(), Some(300.0));
    bus.tick(300.0);
    assert_eq!(
        egress(&mut bus).iter().map(|o| (o.kind, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, b"p1".to_vec())]
    );
    assert_eq!(bus.group_room(g).unwrap(), 1, "the slot it was assigned is free again");
    assert_eq!(bus.group_stats(g).unwrap().redelivered, 3);
}

#[test]
fn remote_leases_fire_in_deadline_order_even_if_the_host_clock_went_back() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 100.0, 5);
    bus.join(g, EP, 5).unwrap();
    bus.ingest(&grouped(g, b"late", 1, &foreign(b"a")), 500.0).unwrap();
    bus.ingest(&grouped(g, b"early", 1, &foreign(b"b")), 20.0).unwrap();
    deliveries(&mut bus, 500.0);
    assert_eq!(bus.next_deadline(), Some(120.0));
    assert_eq!(bus.tick(120.0), 1);
    assert_eq!(egress(&mut bus)[0].pos, b"early".to_vec());
    assert_eq!(bus.next_deadline(), Some(600.0));
}

#[test]
fn a_group_record_no_member_can_take_is_released_at_once() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    assert_eq!(bus.ingest(&grouped(g, b"p0", 1, &foreign(b"a")), 0.0).unwrap(), 0);
    assert_eq!(
        egress(&mut bus),
        vec![Out { kind: remote::RELEASE, id: g, value: 0.0, pos: b"p0".to_vec(), frame: vec![] }]
    );
    // Only paused members: the same.
    let m = bus.join(g, EP, 5).unwrap();
    bus.set_paused(m, true).unwrap();
    assert_eq!(bus.ingest(&grouped(g, b"p1", 2, &foreign(b"b")), 0.0).unwrap(), 0);
    assert_eq!(
        egress(&mut bus).iter().map(|o| (o.kind, o.value, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::RELEASE, 0.0, b"p1".to_vec())]
    );
    let stats = bus.group_stats(g).unwrap();
    assert_eq!((stats.backlog, stats.pending, stats.redelivered), (0, 0, 0));
    assert_eq!(bus.stats(ch).unwrap().ingested, 0);
    assert_eq!(bus.next_deadline(), None);
    // Resumed, it takes what comes.
    bus.set_paused(m, false).unwrap();
    assert_eq!(bus.ingest(&grouped(g, b"p2", 1, &foreign(b"c")), 0.0).unwrap(), 1);
    assert_eq!(deliveries(&mut bus, 0.0).len(), 1);
    assert!(!bus.has_egress());
}

#[test]
fn a_group_frame_too_large_for_this_process_is_dead_lettered_and_a_malformed_one_acked() {
    let mut bus = Bus::new(BusConfig { max_message_bytes: 80, ..BusConfig::default() });
    let ch = bound(&mut bus, "jobs");
    let dlq = bus.channel("jobs.dead-letter").unwrap();
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 5).unwrap();
    let big = encode(999, 1, 0.0, b"big-1", &[7; 100]);
    let mut broken = foreign(b"x");
    broken[frame::OFF_VERSION] = 9;
    let batch = [grouped(g, b"1-0", 2, &big), grouped(g, b"1-1", 1, &broken)].concat();
    assert_eq!(bus.ingest(&batch, 0.0).unwrap(), 1);
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.id, o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::DEAD, g, b"1-0".to_vec()), (remote::ACK, g, b"1-1".to_vec())]
    );
    let dead = &out[0].frame;
    assert_eq!(frame::channel(dead), dlq);
    assert_eq!(frame::id(dead), b"big-1");
    assert!(dead.ends_with(&[7; 100]));
    assert_eq!(header(dead, "x-orrery-dead-letter-reason").as_deref(), Some("too-large"));
    assert_eq!(header(dead, "x-orrery-deliveries").as_deref(), Some("1"));
    assert_eq!(header(dead, "x-orrery-origin-seq").as_deref(), Some("1-0"));
    assert!(deliveries(&mut bus, 0.0).is_empty());
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.rejected, stats.ingested, stats.dead_lettered), (2, 0, 1));
    assert_eq!(bus.group_stats(g).unwrap().dead_lettered, 1);
}

#[test]
fn a_remote_dead_letter_names_the_broker_position_as_its_origin_seq() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 1);
    let m = bus.join(g, EP, 5).unwrap();
    let batch = [grouped(g, b"1700000000000-3", 1, &foreign(b"a")), grouped(g, &[0xff, 0x00, 0x1a], 1, &foreign(b"b"))]
        .concat();
    bus.ingest(&batch, 0.0).unwrap();
    for r in deliveries(&mut bus, 0.0) {
        bus.nack(m, r.seq, r.attempt, 0.0, None, 1.0).unwrap();
    }
    // One past maxDeliveries at ingest goes the same way.
    bus.ingest(&grouped(g, b"1700000000001-0", 2, &foreign(b"c")), 2.0).unwrap();
    let out = egress(&mut bus);
    assert!(out.iter().all(|o| o.kind == remote::DEAD));
    assert_eq!(
        out.iter().map(|o| header(&o.frame, "x-orrery-origin-seq").unwrap()).collect::<Vec<_>>(),
        vec!["1700000000000-3", "ff001a", "1700000000001-0"]
    );
    // A local group's dead letter keeps its seq there.
    let local = bus.channel("local").unwrap();
    let local_dlq = bus.channel("local.dead-letter").unwrap();
    let reader = sub(&mut bus, local_dlq);
    let lg = bus.group(local, "l", GroupOptions { max_deliveries: 1, ..GroupOptions::default() }).unwrap();
    let lm = bus.join(lg, EP, 5).unwrap();
    bus.publish(&[msg(local, b"x"), msg(local, b"y")].concat(), 3.0).unwrap();
    let got = deliveries(&mut bus, 3.0);
    bus.nack(lm, got[1].seq, got[1].attempt, 0.0, None, 4.0).unwrap();
    let dead = deliveries(&mut bus, 4.0).into_iter().find(|d| d.consumer == reader).unwrap();
    assert_eq!(header(&dead.frame, "x-orrery-origin-seq").as_deref(), Some("1"));
}

#[test]
fn ingest_refuses_a_time_that_is_not_finite() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "jobs");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    bus.join(g, EP, 5).unwrap();
    for now in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let err = wire::ingest(&mut bus, &grouped(g, b"p0", 1, &foreign(b"a")), now).unwrap_err();
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        assert_eq!(err.to_string(), bus.ingest(&[], now).unwrap_err().to_string());
        assert!(err.to_string().contains("now") && err.to_string().contains("finite"), "{err}");
    }
    assert_eq!((bus.group_stats(g).unwrap().backlog, bus.group_stats(g).unwrap().pending), (0, 0));
    assert!(!bus.has_egress() && bus.next_deadline().is_none());
}
