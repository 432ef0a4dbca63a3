use proptest::prelude::*;

use super::*;
use crate::frame::{encode, DELIVERY_HEADER_LEN};
use crate::Coded;

/// A decoded delivery record: (subscription, seq, payload byte).
fn records(buf: &[u8]) -> Vec<(u32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let sub = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap());
        let seq = f64::from_le_bytes(buf[at + 8..at + 16].try_into().unwrap()) as u64;
        let frame = &buf[at + DELIVERY_HEADER_LEN..];
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        out.push((sub, seq, frame[frame::HEADER_LEN..len].to_vec()));
        at += DELIVERY_HEADER_LEN + len;
    }
    out
}

fn drain_all(bus: &mut Bus) -> Vec<(u32, u64, Vec<u8>)> {
    let mut buf = vec![0u8; 256];
    let mut out = Vec::new();
    loop {
        match bus.drain(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend(records(&buf[..n])),
            Err(needed) => buf.resize(needed, 0),
        }
    }
}

#[test]
fn broadcast_delivers_every_message_in_order_to_every_subscriber() {
    let mut bus = Bus::default();
    let ch = bus.channel("orders").unwrap();
    let a = bus.subscribe(ch, StartAt::Latest).unwrap();
    let b = bus.subscribe(ch, StartAt::Latest).unwrap();
    let mut batch = Vec::new();
    for i in 0..3u8 {
        batch.extend(encode(ch, 1, 0.0, b"", &[i]));
    }
    assert_eq!(bus.publish(&batch, 1.0).unwrap(), 3);
    let got = drain_all(&mut bus);
    let for_sub = |s| got.iter().filter(|r| r.0 == s).map(|r| (r.1, r.2[0])).collect::<Vec<_>>();
    assert_eq!(for_sub(a), vec![(0, 0), (1, 1), (2, 2)]);
    assert_eq!(for_sub(b), vec![(0, 0), (1, 1), (2, 2)]);
    assert!(!bus.has_pending());
    let stats = bus.stats(ch).unwrap();
    assert_eq!((stats.published, stats.delivered, stats.subscribers), (3, 6, 2));
}

#[test]
fn a_refused_batch_publishes_nothing() {
    let mut bus = Bus::new(BusConfig { max_message_bytes: 64, ..BusConfig::default() });
    let ch = bus.channel("c").unwrap();
    bus.subscribe(ch, StartAt::Latest).unwrap();
    let mut batch = encode(ch, 1, 0.0, b"", b"ok");
    batch.extend(encode(ch, 1, 0.0, b"", &[0; 100]));
    let err = bus.publish(&batch, 0.0).unwrap_err();
    assert_eq!(err.code(), "MESSAGE_TOO_LARGE");
    assert!(matches!(err, BusError::MessageTooLarge { index: 1, .. }));
    let mut unknown = encode(ch, 1, 0.0, b"", b"ok");
    unknown.extend(encode(99, 1, 0.0, b"", b"ok"));
    assert_eq!(bus.publish(&unknown, 0.0).unwrap_err(), BusError::UnknownChannel(99));
    assert_eq!(bus.stats(ch).unwrap().published, 0);
    assert!(drain_all(&mut bus).is_empty());
}

#[test]
fn replay_starts_at_earliest_seq_or_time() {
    let mut bus = Bus::default();
    let ch = bus.channel("log").unwrap();
    for i in 0..5u8 {
        bus.publish(&encode(ch, 1, 0.0, b"", &[i]), f64::from(i) * 100.0).unwrap();
    }
    let earliest = bus.subscribe(ch, StartAt::Earliest).unwrap();
    let from_seq = bus.subscribe(ch, StartAt::Seq(3)).unwrap();
    let from_time = bus.subscribe(ch, StartAt::Time(150.0)).unwrap();
    let latest = bus.subscribe(ch, StartAt::Latest).unwrap();
    let got = drain_all(&mut bus);
    let seqs = |s| got.iter().filter(|r| r.0 == s).map(|r| r.1).collect::<Vec<_>>();
    assert_eq!(seqs(earliest), vec![0, 1, 2, 3, 4]);
    assert_eq!(seqs(from_seq), vec![3, 4]);
    assert_eq!(seqs(from_time), vec![2, 3, 4]);
    assert!(seqs(latest).is_empty());
}

#[test]
fn a_record_larger_than_the_buffer_asks_for_room() {
    let mut bus = Bus::default();
    let ch = bus.channel("big").unwrap();
    bus.subscribe(ch, StartAt::Latest).unwrap();
    let f = encode(ch, 1, 0.0, b"", &[7; 1000]);
    bus.publish(&f, 0.0).unwrap();
    let mut small = vec![0u8; 100];
    assert_eq!(bus.drain(&mut small), Err(DELIVERY_HEADER_LEN + f.len()));
    assert_eq!(drain_all(&mut bus).len(), 1);
}

#[test]
fn unsubscribed_subscribers_get_nothing_more() {
    let mut bus = Bus::default();
    let ch = bus.channel("c").unwrap();
    let s = bus.subscribe(ch, StartAt::Latest).unwrap();
    bus.publish(&encode(ch, 1, 0.0, b"", b"a"), 0.0).unwrap();
    bus.unsubscribe(s).unwrap();
    assert!(drain_all(&mut bus).is_empty());
    assert_eq!(bus.unsubscribe(s).unwrap_err().code(), "UNKNOWN_SUBSCRIPTION");
    assert_eq!(bus.subscribe(42, StartAt::Latest).unwrap_err().code(), "UNKNOWN_CHANNEL");
}

#[derive(Debug, Clone)]
enum Op {
    Publish { channel: u8, count: u8 },
    Subscribe { channel: u8, earliest: bool },
    Unsubscribe { which: u8 },
    Drain { buf: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 1..6u8).prop_map(|(channel, count)| Op::Publish { channel, count }),
        2 => (0..3u8, any::<bool>()).prop_map(|(channel, earliest)| Op::Subscribe { channel, earliest }),
        1 => any::<u8>().prop_map(|which| Op::Unsubscribe { which }),
        2 => (60..400u16).prop_map(|buf| Op::Drain { buf }),
    ]
}

proptest! {
    /// Against a model: each subscriber sees exactly its channel's messages from its start,
    /// in order, without duplicates, except those trimmed by retention (counted as missed).
    #[test]
    fn matches_the_model(ops in proptest::collection::vec(op(), 1..80), keep in 1..20usize) {
        let retention = Retention { max_count: keep, max_bytes: 0, max_age: f64::INFINITY };
        let mut bus = Bus::new(BusConfig { default_retention: retention, ..BusConfig::default() });
        let channels: Vec<u32> = (0..3).map(|i| bus.channel(&format!("ch{i}")).unwrap()).collect();
        let mut published = [0u64; 3];
        // model: subscription -> (channel, next expected seq lower bound, received seqs)
        let mut live: Vec<(u32, usize, u64)> = Vec::new();
        let mut received = std::collections::HashMap::<u32, Vec<u64>>::new();
        for op in ops {
            match op {
                Op::Publish { channel, count } => {
                    let c = channel as usize;
                    let mut batch = Vec::new();
                    for _ in 0..count {
                        batch.extend(encode(channels[c], 1, 0.0, b"", &published[c].to_le_bytes()));
                        published[c] += 1;
                    }
                    bus.publish(&batch, 0.0).unwrap();
                }
                Op::Subscribe { channel, earliest } => {
                    let c = channel as usize;
                    let start = if earliest { StartAt::Earliest } else { StartAt::Latest };
                    let id = bus.subscribe(channels[c], start).unwrap();
                    let from = if earliest { published[c].saturating_sub(keep as u64) } else { published[c] };
                    live.push((id, c, from));
                    received.insert(id, Vec::new());
                }
                Op::Unsubscribe { which } => {
                    if !live.is_empty() {
                        let (id, _, _) = live.remove(which as usize % live.len());
                        bus.unsubscribe(id).unwrap();
                        received.remove(&id);
                    }
                }
                Op::Drain { buf } => {
                    let mut b = vec![0u8; buf as usize];
                    if let Ok(n) = bus.drain(&mut b) {
                        for (sub, seq, payload) in records(&b[..n]) {
                            prop_assert_eq!(u64::from_le_bytes(payload.try_into().unwrap()), seq);
                            received.get_mut(&sub).expect("delivery to a live subscriber").push(seq);
                        }
                    }
                }
            }
        }
        for (sub, seq, _) in drain_all(&mut bus) {
            received.get_mut(&sub).expect("delivery to a live subscriber").push(seq);
        }
        for (id, c, from) in live {
            let got = &received[&id];
            prop_assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept, no duplicates");
            prop_assert!(got.iter().all(|&s| s >= from && s < published[c]));
            let missed = bus.subscription(id).unwrap().missed;
            prop_assert_eq!(got.len() as u64 + missed, published[c] - from, "each message delivered or counted missed");
        }
    }
}
