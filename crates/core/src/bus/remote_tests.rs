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
    /// A REPLY's reply address (empty for every other kind).
    route: Vec<u8>,
}

fn egress(bus: &mut Bus) -> Vec<Out> {
    let buf = bus.drain_egress();
    let mut out = Vec::new();
    let mut at = 0;
    let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
    while at < buf.len() {
        let len = u32_at(at) as usize;
        assert_eq!(&buf[at + 5..at + 8], &[0; 3]);
        let kind = buf[at + remote::OFF_KIND];
        let route_len = u32_at(at + remote::OFF_ROUTE_LEN) as usize;
        assert_eq!(u32_at(at + 16), 0);
        assert!(kind == remote::REPLY || route_len == 0, "only a REPLY has a route");
        let pos_len = u32_at(at + remote::OFF_POS_LEN) as usize;
        let body = &buf[at + HEADER_LEN..at + len];
        out.push(Out {
            kind,
            id: u32_at(at + remote::OFF_ID),
            value: f64::from_le_bytes(buf[at + 24..at + 32].try_into().unwrap()),
            pos: body[..pos_len].to_vec(),
            route: body[pos_len..pos_len + route_len].to_vec(),
            frame: body[pos_len + route_len..].to_vec(),
        });
        at += len;
    }
    assert!(!bus.has_egress());
    out
}

/// An ingest record.
fn record(kind: u8, id: u32, pos: &[u8], count: u32, value: f64, frame: &[u8]) -> Vec<u8> {
    routed(kind, id, pos, &[], count, value, frame)
}

/// An ingest record with a route (see [`route`]).
fn routed(kind: u8, id: u32, pos: &[u8], route: &[u8], count: u32, value: f64, frame: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&((HEADER_LEN + pos.len() + route.len() + frame.len()) as u32).to_le_bytes());
    r.extend_from_slice(&[kind, 0, 0, 0]);
    r.extend_from_slice(&id.to_le_bytes());
    r.extend_from_slice(&(pos.len() as u32).to_le_bytes());
    r.extend_from_slice(&count.to_le_bytes());
    r.extend_from_slice(&(route.len() as u32).to_le_bytes());
    r.extend_from_slice(&value.to_le_bytes());
    r.extend_from_slice(pos);
    r.extend_from_slice(route);
    r.extend_from_slice(frame);
    r
}

/// An ingest route: the requester's timeout, then its reply address.
fn route(timeout: f64, address: &[u8]) -> Vec<u8> {
    [&timeout.to_le_bytes()[..], address].concat()
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
fn a_bound_channels_publish_and_request_ignore_local_room() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let full = SubscribeOptions { capacity: 1, overflow: Overflow::Reject, ..SubscribeOptions::default() };
    bus.subscribe(EP, ch, full).unwrap();
    assert_eq!(bus.publish(&[msg(ch, b"a"), msg(ch, b"b")].concat(), 0.0).unwrap(), 2);
    bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    assert_eq!(
        egress(&mut bus).iter().map(|o| o.kind).collect::<Vec<_>>(),
        [remote::PUBLISH, remote::PUBLISH, remote::REQUEST]
    );
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
fn mirror_room_is_what_retention_leaves_the_slowest_refusing_subscriber() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let keep = Retention { max_count: 6, max_bytes: 0, ..Retention::default() };
    bus.configure(ch, ChannelOptions { retention: keep, ..ChannelOptions::default() }, 0.0).unwrap();
    // Nothing bounds a mirror without a subscriber that refuses to lose messages.
    assert_eq!(bus.mirror_room(ch).unwrap(), usize::MAX);
    let dropping = SubscribeOptions { capacity: 1, overflow: Overflow::DropOldest, ..SubscribeOptions::default() };
    bus.subscribe(EP, ch, dropping).unwrap();
    assert_eq!(bus.mirror_room(ch).unwrap(), usize::MAX);
    let small = SubscribeOptions { capacity: 2, overflow: Overflow::Block, ..SubscribeOptions::default() };
    let s = bus.subscribe(EP, ch, small).unwrap();
    assert_eq!(bus.mirror_room(ch).unwrap(), 6);
    // Two buffered, two more unread in the log: room for what the log holds besides those two.
    let batch: Vec<u8> = (0..4u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    bus.ingest(&batch, 1.0).unwrap();
    assert_eq!(bus.subscriber_stats(s).unwrap().buffered, 2);
    assert_eq!(bus.mirror_room(ch).unwrap(), 4);
    // Taking in exactly the room loses nothing; the subscriber reads every one.
    let more: Vec<u8> = (4..8u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    bus.ingest(&more, 1.0).unwrap();
    assert_eq!(bus.mirror_room(ch).unwrap(), 0);
    let got: Vec<u8> = deliveries(&mut bus, 1.0).iter().filter(|r| r.consumer == s).map(|r| r.body[0]).collect();
    assert_eq!(got, (0..8u8).collect::<Vec<_>>());
    assert_eq!(bus.subscriber_stats(s).unwrap().missed, 0);
    assert_eq!(bus.mirror_room(ch).unwrap(), 6);
    // Past the room (a read in flight when it shrank) retention keeps what the subscriber has not
    // read: the log runs over its limit a while, and nothing is missed.
    let past: Vec<u8> = (8..20u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    bus.ingest(&past, 1.0).unwrap();
    assert_eq!(bus.stats(ch).unwrap().retained, 10);
    assert_eq!(bus.mirror_room(ch).unwrap(), 0);
    let got: Vec<u8> = deliveries(&mut bus, 1.0).iter().filter(|r| r.consumer == s).map(|r| r.body[0]).collect();
    assert_eq!(got, (8..20u8).collect::<Vec<_>>());
    assert_eq!(bus.subscriber_stats(s).unwrap().missed, 0);
    bus.ingest(&live(ch, 1.0, &foreign(&[20])), 1.0).unwrap();
    assert_eq!(bus.stats(ch).unwrap().retained, 6);
    deliveries(&mut bus, 1.0);
    // The bytes limit counts what is still to come at the log's mean frame size.
    let frame_len = foreign(&[0]).len();
    let by_bytes = Retention { max_count: 0, max_bytes: 5 * frame_len, ..Retention::default() };
    bus.configure(ch, ChannelOptions { retention: by_bytes, ..ChannelOptions::default() }, 1.0).unwrap();
    let three: Vec<u8> = (0..3u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    bus.ingest(&three, 1.0).unwrap();
    assert_eq!(bus.mirror_room(ch).unwrap(), 4);
    assert_eq!(bus.mirror_room(4242), Err(BusError::UnknownChannel(4242)));
}

#[test]
fn a_mirror_without_room_wakes_its_host_once_a_subscriber_on_another_thread_takes_some() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "orders");
    let keep = Retention { max_count: 2, max_bytes: 0, ..Retention::default() };
    bus.configure(ch, ChannelOptions { retention: keep, ..ChannelOptions::default() }, 0.0).unwrap();
    let worker = bus.open_endpoint().unwrap();
    let one = SubscribeOptions { capacity: 1, overflow: Overflow::Block, ..SubscribeOptions::default() };
    let s = bus.subscribe(worker, ch, one).unwrap();
    let batch: Vec<u8> = (0..3u8).flat_map(|i| live(ch, 1.0, &foreign(&[i]))).collect();
    bus.ingest(&batch, 1.0).unwrap();
    assert_eq!(bus.take_wakeups_except(EP), vec![worker]);
    // Room asked while there is some: nothing to wake for.
    assert_eq!(bus.mirror_room_for(EP, 4242), Err(BusError::UnknownChannel(4242)));
    assert_eq!(bus.mirror_room_for(EP, ch).unwrap(), 0);
    assert_eq!(bus.take_wakeups_except(worker), Vec::<u32>::new(), "not before the subscriber takes some");
    let got: Vec<u8> = drain_all(&mut bus, worker, 1.0).iter().filter(|r| r.consumer == s).map(|r| r.body[0]).collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(bus.take_wakeups_except(worker), vec![EP], "the mirror's host, to read on");
    assert_eq!(bus.mirror_room_for(EP, ch).unwrap(), 2);
    assert_eq!(bus.take_wakeups_except(worker), Vec::<u32>::new(), "woken once");
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
        vec![Out { kind: remote::ACK, id: g, value: 0.0, pos: b"1-1".to_vec(), frame: vec![], route: vec![] }]
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
        vec![Out { kind: remote::ACK, id: g, value: 0.0, pos: b"p0".to_vec(), frame: vec![], route: vec![] }]
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
    bad_kind[4] = 9;
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
        let mut batch = [
            live(ch, 1.0, &foreign(b"a")),
            grouped(g, b"p", 1, &foreign(b"b")),
            routed(remote::LIVE, ch, &[], &route(50.0, b"addr"), 0, 1.0, &asking(b"q", 9)),
            routed(remote::GROUP, g, b"p2", &route(50.0, b"addr"), 1, 0.0, &asking(b"r", 10)),
            replied(&asking(b"s", 11)),
            noise,
        ]
        .concat();
        for (at, byte) in flip {
            if let Some(b) = batch.get_mut(at) {
                *b = byte;
            }
        }
        batch.truncate(cut.min(batch.len()));
        match bus.ingest(&batch, 1.0) {
            Ok(_) => {
                // Answering whatever came in never panics either; every route ends by its expiry.
                for r in deliveries(&mut bus, 1.0) {
                    let mut answer = msg(ch, b"a");
                    frame::set_reply_token(&mut answer, frame::reply_token(&r.frame));
                    let _ = bus.reply_from(EP, &answer);
                }
                bus.tick(500.0);
                egress(&mut bus);
                proptest::prop_assert_eq!(bus.open_routes(), 0);
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
    assert_eq!(bus.claim(g, helper, 500.0, 10, 600.0).unwrap(), 1);
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
    assert_eq!(bus.claim(g, helper, 50.0, 1, 50.0).unwrap(), 1);
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
        vec![Out { kind: remote::RELEASE, id: g, value: 0.0, pos: b"p0".to_vec(), frame: vec![], route: vec![] }]
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

/// A frame as another process would have written it, carrying that process's reply token.
fn asking(payload: &[u8], token: u32) -> Vec<u8> {
    let mut f = foreign(payload);
    frame::set_reply_token(&mut f, token);
    f
}

fn replied(frame: &[u8]) -> Vec<u8> {
    record(remote::REPLIED, 0, &[], 0, 0.0, frame)
}

/// A reply from this process to local token `token` (the frame a responder sends).
fn answer(ch: u32, token: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = msg(ch, payload);
    frame::set_reply_token(&mut f, token);
    f
}

fn events(bus: &mut Bus, now: Millis) -> Vec<(u32, u32)> {
    drain_all(bus, EP, now)
        .into_iter()
        .filter(|r| r.consumer == EVENT_CONSUMER)
        .map(|r| (r.attempt, u32::from_le_bytes(r.body[..4].try_into().unwrap())))
        .collect()
}

#[test]
fn a_request_on_a_bound_channel_leaves_as_request_egress_and_times_out_here() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    // Nobody here responds: a process elsewhere may, so no NO_RESPONDER.
    let token = bus.request(EP, &msg(ch, b"q"), 250.0, 10.0).unwrap();
    let out = egress(&mut bus);
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!((o.kind, o.id, o.value, o.pos.len(), o.route.len()), (remote::REQUEST, ch, 250.0, 0, 0));
    assert_eq!(frame::reply_token(&o.frame), token);
    assert_eq!(f64::from_le_bytes(o.frame[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].try_into().unwrap()), 10.0);
    assert!(o.frame.ends_with(b"q"));
    assert_eq!((bus.stats(ch).unwrap().published, bus.stats(ch).unwrap().retained), (1, 0));
    assert_eq!((bus.open_requests(), bus.next_deadline()), (1, Some(260.0)));
    bus.tick(259.0);
    assert!(events(&mut bus, 259.0).is_empty());
    bus.tick(260.0);
    assert_eq!(events(&mut bus, 260.0), vec![(EventKind::RequestTimeout as u32, token)]);
    // Its reply comes too late: dropped, counted.
    assert_eq!(bus.ingest(&replied(&asking(b"a", token)), 300.0).unwrap(), 0);
    assert_eq!((bus.late_replies(), bus.has_pending(EP)), (1, false));
    // A frame too large for a request is refused as a publish is, before anything is queued.
    let mut small = Bus::new(BusConfig { max_message_bytes: 80, ..BusConfig::default() });
    let ch = bound(&mut small, "svc");
    assert_eq!(small.request(EP, &msg(ch, &[0; 100]), 100.0, 0.0).unwrap_err().code(), "MESSAGE_TOO_LARGE");
    assert_eq!((small.has_egress(), small.open_requests()), (false, 0));
}

#[test]
fn a_replied_record_settles_its_request_under_this_processs_channel_id() {
    let mut bus = Bus::default();
    bus.channel("first").unwrap();
    let ch = bound(&mut bus, "svc");
    let token = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    egress(&mut bus);
    let reply = asking(b"a", token);
    assert_eq!(bus.ingest(&replied(&reply), 5.0).unwrap(), 1);
    let got = drain_all(&mut bus, EP, 5.0);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].consumer, got[0].attempt, got[0].body.as_slice()), (REPLY_CONSUMER, token, &b"a"[..]));
    assert_eq!(frame::channel(&got[0].frame), ch, "the responder's id of the channel is replaced");
    assert_eq!((bus.open_requests(), bus.next_deadline()), (0, None));
    // A second answer (another subscriber elsewhere) is late.
    assert_eq!(bus.ingest(&replied(&reply), 6.0).unwrap(), 0);
    assert_eq!(bus.late_replies(), 1);
    // A reply too large for this process, or malformed, is dropped: the request times out.
    let mut small = Bus::new(BusConfig { max_message_bytes: 80, ..BusConfig::default() });
    let ch = bound(&mut small, "svc");
    let token = small.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    let mut bad = asking(b"b", token);
    bad[frame::OFF_VERSION] = 9;
    assert_eq!(small.ingest(&[replied(&asking(&[0; 100], token)), replied(&bad)].concat(), 1.0).unwrap(), 0);
    assert_eq!((small.open_requests(), small.late_replies()), (1, 0));
}

#[test]
fn a_routed_live_request_is_answered_under_a_local_token_and_its_reply_leaves_for_the_address() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    let s = sub(&mut bus, ch);
    let request = routed(remote::LIVE, ch, &[], &route(500.0, b"proc-a"), 0, 90.0, &asking(b"q", 77));
    assert_eq!(bus.ingest(&request, 100.0).unwrap(), 1);
    let got = deliveries(&mut bus, 100.0);
    assert_eq!((got.len(), got[0].consumer), (1, s));
    let local = frame::reply_token(&got[0].frame);
    assert_ne!(local, 0);
    assert_eq!((bus.open_routes(), bus.next_deadline()), (1, Some(600.0)));
    assert_eq!(bus.reply_from(EP, &answer(ch, local, b"a")).unwrap(), Replied::Remote);
    let out = egress(&mut bus);
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!((o.kind, o.id, o.value, o.pos.len()), (remote::REPLY, ch, 0.0, 0));
    assert_eq!(o.route, b"proc-a");
    assert_eq!(frame::reply_token(&o.frame), 77, "the requester's token again");
    assert!(o.frame.ends_with(b"a"));
    assert_eq!((bus.open_routes(), bus.next_deadline()), (0, None));
    // Answered already (a second subscriber here): late, nothing leaves.
    assert_eq!(bus.reply_from(EP, &answer(ch, local, b"b")).unwrap(), Replied::Late);
    assert_eq!((bus.late_replies(), bus.has_egress()), (1, false));
    // Without a route, or with a route but no requester's token, a frame is a plain message.
    let plain =
        [live(ch, 91.0, &asking(b"p", 78)), routed(remote::LIVE, ch, &[], &route(5.0, b"x"), 0, 92.0, &foreign(b"r"))];
    assert_eq!(bus.ingest(&plain.concat(), 101.0).unwrap(), 2);
    let got = deliveries(&mut bus, 101.0);
    assert_eq!(got.iter().map(|r| frame::reply_token(&r.frame)).collect::<Vec<_>>(), vec![0, 0]);
    assert_eq!(bus.open_routes(), 0);
}

#[test]
fn a_routed_group_request_is_answered_then_acked() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    let g = remote_group(&mut bus, ch, 1000.0, 5);
    let m = bus.join(g, EP, 2).unwrap();
    let request = routed(remote::GROUP, g, b"1-0", &route(300.0, b"b"), 1, 0.0, &asking(b"q", 5));
    assert_eq!(bus.ingest(&request, 0.0).unwrap(), 1);
    let got = deliveries(&mut bus, 0.0);
    assert_eq!((got.len(), got[0].consumer), (1, m));
    let local = frame::reply_token(&got[0].frame);
    assert_eq!(bus.reply_from(EP, &answer(ch, local, b"a")).unwrap(), Replied::Remote);
    bus.ack(m, got[0].seq, got[0].attempt).unwrap();
    let out = egress(&mut bus);
    assert_eq!(
        out.iter().map(|o| (o.kind, o.route.clone(), o.pos.clone())).collect::<Vec<_>>(),
        vec![(remote::REPLY, b"b".to_vec(), vec![]), (remote::ACK, vec![], b"1-0".to_vec())]
    );
    assert_eq!(frame::reply_token(&out[0].frame), 5);
    // A routed entry no member can take goes back at once and maps nothing.
    bus.unsubscribe(m).unwrap();
    egress(&mut bus);
    assert_eq!(
        bus.ingest(&routed(remote::GROUP, g, b"1-1", &route(300.0, b"b"), 1, 0.0, &asking(b"q", 6)), 1.0).unwrap(),
        0
    );
    assert_eq!(bus.open_routes(), 0);
}

#[test]
fn routes_expire_on_the_core_timers_silently() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    sub(&mut bus, ch);
    let batch = [
        routed(remote::LIVE, ch, &[], &route(50.0, b"a"), 0, 0.0, &asking(b"q", 1)),
        routed(remote::LIVE, ch, &[], &route(f64::INFINITY, b"a"), 0, 0.0, &asking(b"r", 2)),
    ];
    bus.ingest(&batch.concat(), 10.0).unwrap();
    let got = deliveries(&mut bus, 10.0);
    bus.tick(59.0);
    assert_eq!(bus.open_routes(), 2);
    assert_eq!(bus.tick(60.0), 1);
    assert_eq!(bus.open_routes(), 1, "a route that never expires stays until answered");
    assert!(events(&mut bus, 60.0).is_empty(), "an expired route is no request of this process: no event");
    let late = frame::reply_token(&got[0].frame);
    assert_eq!(bus.reply_from(EP, &answer(ch, late, b"a")).unwrap(), Replied::Late);
    assert!(!bus.has_egress());
    let forever = frame::reply_token(&got[1].frame);
    bus.tick(1e15);
    assert_eq!(bus.reply_from(EP, &answer(ch, forever, b"b")).unwrap(), Replied::Remote);
    assert_eq!(bus.open_routes(), 0);
}

#[test]
fn malformed_routes_and_replied_records_refuse_the_batch() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    sub(&mut bus, ch);
    let q = asking(b"q", 1);
    let mut past = routed(remote::LIVE, ch, &[], &route(5.0, b"a"), 0, 0.0, &q);
    past[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (routed(remote::LIVE, ch, &[], &5.0f64.to_le_bytes(), 0, 0.0, &q), "reply address of 1 byte"),
        (routed(remote::LIVE, ch, &[], &route(0.0, b"a"), 0, 0.0, &q), "timeout must be a number of ms > 0"),
        (routed(remote::LIVE, ch, &[], &route(f64::NAN, b"a"), 0, 0.0, &q), "timeout must be a number of ms > 0"),
        (routed(remote::LIVE, ch, &[], &route(-1.0, b"a"), 0, 0.0, &q), "timeout must be a number of ms > 0"),
        (past, "route runs past"),
        (record(remote::REPLIED, 1, &[], 0, 0.0, &q), "only its frame"),
        (record(remote::REPLIED, 0, b"p", 0, 0.0, &q), "only its frame"),
        (routed(remote::REPLIED, 0, &[], &route(5.0, b"a"), 0, 0.0, &q), "only its frame"),
        (record(remote::REPLIED, 0, &[], 0, 1.0, &q), "only its frame"),
    ];
    for (bad, says) in cases {
        let err = bus.ingest(&[live(ch, 0.0, &foreign(b"ok")), bad].concat(), 0.0).unwrap_err();
        assert_eq!(err.code(), "MALFORMED_FRAME");
        let text = err.to_string();
        assert!(text.contains("ingest record 1") && text.contains(says), "{text}");
        assert_eq!((bus.open_routes(), bus.stats(ch).unwrap().ingested, bus.has_pending(EP)), (0, 0, false));
    }
}

/// Carries process A's REQUEST egress to process B as its driver would: a LIVE record (or a
/// GROUP one) with A's address and the request's timeout as the route.
fn carry_requests(out: &[Out], to: u32, group: Option<u32>) -> Vec<u8> {
    let mut batch = Vec::new();
    for (i, o) in out.iter().filter(|o| o.kind == remote::REQUEST).enumerate() {
        let r = route(o.value, b"process-a");
        batch.extend(match group {
            Some(g) => routed(remote::GROUP, g, format!("1-{i}").as_bytes(), &r, 1, 0.0, &o.frame),
            None => routed(remote::LIVE, to, &[], &r, 0, 0.0, &o.frame),
        });
    }
    batch
}

#[test]
fn a_request_crosses_two_processes_and_back() {
    let (mut a, mut b) = (Bus::default(), Bus::default());
    b.channel("other").unwrap();
    let (ca, cb) = (bound(&mut a, "svc"), bound(&mut b, "svc"));
    assert_ne!(ca, cb, "ids are per process");
    sub(&mut b, cb);
    let token = a.request(EP, &msg(ca, b"2+2"), 1000.0, 0.0).unwrap();
    b.ingest(&carry_requests(&egress(&mut a), cb, None), 1.0).unwrap();
    let got = deliveries(&mut b, 1.0);
    assert_eq!(b.reply_from(EP, &answer(cb, frame::reply_token(&got[0].frame), b"4")).unwrap(), Replied::Remote);
    let out = egress(&mut b);
    assert_eq!(out[0].route, b"process-a");
    a.ingest(&replied(&out[0].frame), 2.0).unwrap();
    let got = drain_all(&mut a, EP, 2.0);
    assert_eq!((got[0].consumer, got[0].attempt, got[0].body.as_slice()), (REPLY_CONSUMER, token, &b"4"[..]));
    assert_eq!(frame::channel(&got[0].frame), ca);
    assert_eq!((a.open_requests(), b.open_routes(), a.late_replies(), b.late_replies()), (0, 0, 0, 0));
}

proptest::proptest! {
    /// Requests from process A answered in process B at random times, by a subscriber or a
    /// group member: each is settled in A exactly when it was answered before its timeout,
    /// timed out otherwise, and neither side keeps anything once every deadline has passed.
    #[test]
    fn requests_across_processes_settle_or_time_out_consistently(
        asks in proptest::collection::vec((1.0f64..1000.0, proptest::option::of(0.0f64..1500.0)), 1..24),
        by_group in proptest::prelude::any::<bool>(),
    ) {
        let (mut a, mut b) = (Bus::default(), Bus::default());
        let (ca, cb) = (bound(&mut a, "svc"), bound(&mut b, "svc"));
        let group = if by_group {
            let g = remote_group(&mut b, cb, 1e9, 5);
            b.join(g, EP, 1000).unwrap();
            Some(g)
        } else {
            sub(&mut b, cb);
            None
        };
        let tokens: Vec<u32> = asks.iter().map(|&(t, _)| a.request(EP, &msg(ca, b"q"), t, 0.0).unwrap()).collect();
        b.ingest(&carry_requests(&egress(&mut a), cb, group), 0.0).unwrap();
        let got = deliveries(&mut b, 0.0);
        proptest::prop_assert_eq!(got.len(), asks.len());
        proptest::prop_assert_eq!(b.open_routes(), asks.len());
        let mut order: Vec<usize> = (0..asks.len()).filter(|&i| asks[i].1.is_some()).collect();
        order.sort_by(|&x, &y| asks[x].1.unwrap().total_cmp(&asks[y].1.unwrap()));
        let (mut settled, mut timeouts) = (Vec::new(), 0);
        for i in order {
            let (timeout, Some(at)) = asks[i] else { continue };
            b.tick(at);
            a.tick(at);
            let local = frame::reply_token(&got[i].frame);
            let replied_here = b.reply_from(EP, &answer(cb, local, &[i as u8])).unwrap();
            proptest::prop_assert_eq!(replied_here, if at < timeout { Replied::Remote } else { Replied::Late });
            for o in egress(&mut b) {
                proptest::prop_assert_eq!(o.kind, remote::REPLY);
                proptest::prop_assert_eq!(frame::reply_token(&o.frame), tokens[i]);
                proptest::prop_assert_eq!(a.ingest(&replied(&o.frame), at).unwrap(), 1);
            }
            for r in drain_all(&mut a, EP, at) {
                if r.consumer == EVENT_CONSUMER {
                    timeouts += 1;
                    continue;
                }
                proptest::prop_assert_eq!((r.attempt, r.body.clone()), (tokens[i], vec![i as u8]));
                settled.push(i);
            }
        }
        let in_time: Vec<usize> = (0..asks.len()).filter(|&i| asks[i].1.is_some_and(|at| at < asks[i].0)).collect();
        settled.sort_unstable();
        proptest::prop_assert_eq!(&settled, &in_time);
        a.tick(2000.0);
        b.tick(2000.0);
        timeouts += drain_all(&mut a, EP, 2000.0).into_iter().filter(|r| r.consumer == EVENT_CONSUMER).count();
        proptest::prop_assert_eq!(timeouts, asks.len() - in_time.len());
        proptest::prop_assert_eq!((a.open_requests(), b.open_routes(), a.next_deadline(), a.late_replies()), (0, 0, None, 0));
    }
}

/// A LIVE request read back at broker time `at`, from requester token `token`.
fn live_request(ch: u32, at: f64, timeout: f64, token: u32) -> Vec<u8> {
    routed(remote::LIVE, ch, &[], &route(timeout, b"0123456789abcdef"), 0, at, &asking(b"q", token))
}

fn unsent(token: u32) -> Vec<u8> {
    record(remote::UNSENT, token, &[], 0, 0.0, &[])
}

#[test]
fn a_mirror_with_no_subscriber_opens_no_route() {
    // The review's repro: 10,000 requests with timeout Infinity read by a mirror nobody here
    // subscribes to kept 10,000 routes for ever.
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    let batch: Vec<u8> = (0..10_000u32).flat_map(|i| live_request(ch, 1.0, f64::INFINITY, i + 1)).collect();
    assert_eq!(bus.ingest(&batch, 1.0).unwrap(), 10_000);
    bus.tick(1e15);
    assert_eq!((bus.open_routes(), bus.next_deadline()), (0, None));
    // They are plain messages of the mirror: a subscriber that replays them cannot answer.
    let s =
        bus.subscribe(EP, ch, SubscribeOptions { start: StartAt::Earliest, ..SubscribeOptions::default() }).unwrap();
    let got = deliveries(&mut bus, 2.0);
    assert!(!got.is_empty() && got.iter().all(|r| r.consumer == s && frame::reply_token(&r.frame) == 0));
    assert_eq!(bus.stats(ch).unwrap().routes_dropped, 0);
}

#[test]
fn open_routes_are_capped_and_the_oldest_goes_first() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    let other = bound(&mut bus, "other");
    // A subscriber that only listens (it never answers) on each channel.
    let options = SubscribeOptions { start: StartAt::Latest, capacity: 1, overflow: Overflow::DropOldest };
    bus.subscribe(EP, ch, options).unwrap();
    bus.subscribe(EP, other, options).unwrap();
    let first = bus.ingest(&live_request(other, 1.0, f64::INFINITY, 1), 1.0).unwrap();
    let n = MAX_OPEN_ROUTES as u32 + 10_000;
    let batch: Vec<u8> = (0..n).flat_map(|i| live_request(ch, 1.0, f64::INFINITY, i + 2)).collect();
    assert_eq!(first + bus.ingest(&batch, 1.0).unwrap(), n + 1);
    bus.tick(1e15);
    assert_eq!(bus.open_routes(), MAX_OPEN_ROUTES);
    assert_eq!((bus.stats(other).unwrap().routes_dropped, bus.stats(ch).unwrap().routes_dropped), (1, 10_000));
    assert_eq!(bus.requests.len(), MAX_OPEN_ROUTES, "a dropped route leaves nothing behind");
    // Local tokens were handed out in ingest order: the oldest 10,001 are gone, a reply to one
    // is late and nothing leaves; the newest still reaches its requester.
    let oldest = 1;
    assert_eq!(bus.reply_from(EP, &answer(other, oldest, b"a")).unwrap(), Replied::Late);
    assert_eq!(bus.reply_from(EP, &answer(ch, oldest + 10_000, b"a")).unwrap(), Replied::Late);
    assert_eq!((bus.late_replies(), bus.has_egress()), (2, false));
    assert_eq!(bus.reply_from(EP, &answer(ch, oldest + 10_001, b"a")).unwrap(), Replied::Remote);
    assert_eq!(bus.reply_from(EP, &answer(ch, n + 1, b"a")).unwrap(), Replied::Remote);
    let out = egress(&mut bus);
    assert_eq!(out.iter().map(|o| frame::reply_token(&o.frame)).collect::<Vec<_>>(), vec![10_002, n + 1]);
    assert_eq!(bus.open_routes(), MAX_OPEN_ROUTES - 2);
    // A local request is no route: neither counted against the cap nor dropped by it.
    let own = bus.request(EP, &msg(ch, b"mine"), f64::INFINITY, 2.0).unwrap();
    egress(&mut bus);
    let more: Vec<u8> = (0..3u32).flat_map(|i| live_request(ch, 2.0, f64::INFINITY, i + 1)).collect();
    bus.ingest(&more, 2.0).unwrap();
    assert_eq!((bus.open_routes(), bus.open_requests()), (MAX_OPEN_ROUTES, 1));
    assert_eq!(bus.stats(ch).unwrap().routes_dropped, 10_001);
    assert_eq!(bus.ingest(&replied(&asking(b"a", own)), 3.0).unwrap(), 1);
}

#[test]
fn a_live_request_expired_by_its_broker_time_opens_no_route() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    sub(&mut bus, ch);
    let now = 1_000_000.0;
    let skew = remote::ROUTE_CLOCK_SKEW_MS;
    let batch = [
        // Written longer ago than its timeout and the clocks' allowed skew: expired.
        live_request(ch, now - 500.0 - skew, 500.0, 1),
        // Just inside: open until the broker time + timeout + skew.
        live_request(ch, now - 500.0 - skew + 10.0, 500.0, 2),
        // The broker's clock ahead of this one: the ingest time bounds it.
        live_request(ch, now + 5_000.0, 500.0, 3),
    ];
    assert_eq!(bus.ingest(&batch.concat(), now).unwrap(), 3);
    let got = deliveries(&mut bus, now);
    let tokens: Vec<u32> = got.iter().map(|r| frame::reply_token(&r.frame)).collect();
    assert_eq!((tokens[0], bus.open_routes()), (0, 2));
    assert_eq!(bus.next_deadline(), Some(now + 10.0));
    assert_eq!(bus.tick(now + 10.0), 1);
    assert_eq!(bus.reply_from(EP, &answer(ch, tokens[1], b"a")).unwrap(), Replied::Late);
    assert_eq!(bus.next_deadline(), Some(now + 500.0));
    assert_eq!(bus.reply_from(EP, &answer(ch, tokens[2], b"a")).unwrap(), Replied::Remote);
    assert_eq!(bus.open_routes(), 0);
    // A GROUP record carries no broker time: its route runs from ingest, whatever it says.
    let g = remote_group(&mut bus, ch, 1e9, 5);
    bus.join(g, EP, 5).unwrap();
    let request = routed(remote::GROUP, g, b"1-0", &route(500.0, b"b"), 3, 0.0, &asking(b"q", 4));
    assert_eq!(bus.ingest(&request, now).unwrap(), 1);
    assert_eq!((bus.open_routes(), bus.next_deadline()), (1, Some(now + 500.0)));
}

#[test]
fn a_request_its_driver_could_not_write_is_forgotten_by_an_unsent_record() {
    let mut bus = Bus::default();
    let ch = bound(&mut bus, "svc");
    sub(&mut bus, ch);
    let failed = bus.request(EP, &msg(ch, b"q"), f64::INFINITY, 0.0).unwrap();
    let kept = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    egress(&mut bus);
    bus.ingest(&live_request(ch, 0.0, 50.0, 9), 0.0).unwrap();
    let route_token = frame::reply_token(&deliveries(&mut bus, 0.0)[0].frame);
    assert_eq!((bus.open_requests(), bus.open_routes()), (2, 1));
    // Unknown tokens and a route's token are left alone (a route is another process's request).
    let batch = [unsent(failed), unsent(failed), unsent(route_token), unsent(12_345), unsent(0)].concat();
    assert_eq!(bus.ingest(&batch, 1.0).unwrap(), 1);
    assert_eq!((bus.open_requests(), bus.open_routes()), (1, 1));
    // No timeout event for it, ever: its caller was failed by the host already.
    bus.tick(1e15);
    assert_eq!(events(&mut bus, 1e15), vec![(EventKind::RequestTimeout as u32, kept)]);
    assert_eq!((bus.open_requests(), bus.open_routes(), bus.next_deadline()), (0, 0, None));
    // A reply that comes anyway is late.
    assert_eq!(bus.ingest(&replied(&asking(b"a", failed)), 2.0).unwrap(), 0);
    assert_eq!(bus.late_replies(), 1);
    // An unsent record is its header alone.
    let q = bus.request(EP, &msg(ch, b"q"), 100.0, 0.0).unwrap();
    let cases = [
        record(remote::UNSENT, q, &[], 0, 0.0, b"x"),
        record(remote::UNSENT, q, b"p", 0, 0.0, &[]),
        record(remote::UNSENT, q, &[], 1, 0.0, &[]),
        record(remote::UNSENT, q, &[], 0, 1.0, &[]),
        routed(remote::UNSENT, q, &[], &route(5.0, b"a"), 0, 0.0, &[]),
    ];
    for bad in cases {
        let err = bus.ingest(&[unsent(q), bad].concat(), 0.0).unwrap_err();
        assert_eq!(err.code(), "MALFORMED_FRAME");
        assert!(err.to_string().contains("unsent record is its header alone"), "{err}");
        assert_eq!(bus.open_requests(), 1);
    }
}

/// One step of the route proptest.
#[derive(Debug, Clone)]
enum Step {
    /// A LIVE request: broker time offset from now, timeout (None: infinite), token.
    Live(f64, Option<f64>, u32),
    /// A GROUP request with a timeout (None: infinite).
    Group(Option<f64>),
    /// A local request of this process's, then maybe its UNSENT record.
    Own(Option<f64>, bool),
    /// Answer the `n`th delivery received so far.
    Answer(usize),
    /// Subscribe or unsubscribe the listening subscriber.
    Toggle,
    /// Time passes.
    Wait(f64),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    let timeout = proptest::option::of(1.0f64..5_000.0);
    prop_oneof![
        (-100_000.0f64..1_000.0, timeout.clone(), 1u32..50).prop_map(|(at, t, token)| Step::Live(at, t, token)),
        timeout.clone().prop_map(Step::Group),
        (timeout, any::<bool>()).prop_map(|(t, u)| Step::Own(t, u)),
        (0usize..64).prop_map(Step::Answer),
        Just(Step::Toggle),
        (0.0f64..3_000.0).prop_map(Step::Wait),
    ]
}

proptest::proptest! {
    /// Whatever mix of routed and local requests, answers, subscriber changes and time: the
    /// open routes are exactly the routed requests kept, no route outlives its timeout (from
    /// ingest, or from its broker time + the skew allowance), none opens without someone here
    /// to answer, and once every finite deadline has passed only the infinite ones are left.
    #[test]
    fn routes_stay_consistent_and_bounded(steps in proptest::collection::vec(step(), 1..60)) {
        let mut bus = Bus::default();
        let ch = bound(&mut bus, "svc");
        let g = remote_group(&mut bus, ch, 1e12, 1000);
        bus.join(g, EP, 1000).unwrap();
        let mut listener = None;
        let (mut now, mut got, mut pos, mut infinite) = (0.0f64, Vec::new(), 0u32, 0usize);
        for s in steps {
            match s {
                Step::Live(at, timeout, token) => {
                    let t = timeout.unwrap_or(f64::INFINITY);
                    let before = bus.open_routes();
                    bus.ingest(&live_request(ch, now + at, t, token), now).unwrap();
                    let opened = bus.open_routes() - before;
                    let expected = listener.is_some() && now + at + remote::ROUTE_CLOCK_SKEW_MS + t > now;
                    proptest::prop_assert_eq!(opened, usize::from(expected));
                    infinite += usize::from(expected && timeout.is_none());
                }
                Step::Group(timeout) => {
                    pos += 1;
                    let r = route(timeout.unwrap_or(f64::INFINITY), b"b");
                    bus.ingest(&routed(remote::GROUP, g, pos.to_string().as_bytes(), &r, 1, 0.0, &asking(b"q", pos)), now).unwrap();
                    infinite += usize::from(timeout.is_none());
                }
                Step::Own(timeout, fail) => {
                    let token = bus.request(EP, &msg(ch, b"q"), timeout.unwrap_or(f64::INFINITY), now).unwrap();
                    egress(&mut bus);
                    if fail {
                        proptest::prop_assert_eq!(bus.ingest(&unsent(token), now).unwrap(), 1);
                    }
                }
                Step::Answer(n) => {
                    if let Some(r) = got.get(n % got.len().max(1)).cloned() {
                        let r: Rec = r;
                        let token = frame::reply_token(&r.frame);
                        let infinite_route = bus.requests.get(&token).is_some_and(|q| q.route.is_some() && q.deadline.is_infinite());
                        if token != 0 && bus.reply_from(EP, &answer(ch, token, b"a")).unwrap() == Replied::Remote {
                            infinite -= usize::from(infinite_route);
                        }
                    }
                }
                Step::Toggle => match listener.take() {
                    Some(id) => bus.unsubscribe(id).unwrap(),
                    None => listener = Some(sub(&mut bus, ch)),
                },
                Step::Wait(ms) => {
                    now += ms;
                    bus.tick(now);
                }
            }
            got.extend(deliveries(&mut bus, now));
            egress(&mut bus);
            let routes: Vec<&Request> = bus.requests.values().filter(|r| r.route.is_some()).collect();
            proptest::prop_assert_eq!(bus.open_routes(), routes.len());
            proptest::prop_assert!(bus.open_routes() <= MAX_OPEN_ROUTES);
            proptest::prop_assert!(routes.iter().all(|r| r.deadline > now));
        }
        bus.tick(now + 1e9);
        // Only routes nobody answered with an infinite timeout are left (until the cap).
        proptest::prop_assert_eq!(bus.open_routes(), infinite);
        proptest::prop_assert_eq!(bus.requests.values().filter(|r| r.route.is_none() && r.deadline.is_finite()).count(), 0);
    }
}
