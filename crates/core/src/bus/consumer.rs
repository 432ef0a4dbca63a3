//! Consumers: broadcast subscribers and consumer-group members, and the feed (cursor plus
//! bounded priority buffer) through which subscribers and groups read a channel.

use std::collections::VecDeque;

use super::buffer::{Item, PriorityBuffer};
use super::log::Log;
use super::options::Overflow;

/// How a consumer reads its channel: messages not yet buffered are read from the log at the
/// cursor (replay, catch-up); buffered ones wait in priority order.
#[derive(Debug)]
pub struct Feed {
    /// The next sequence number not yet buffered.
    pub cursor: u64,
    /// Messages waiting to be handed over.
    pub buffer: PriorityBuffer,
    /// Most buffered messages before `overflow` applies.
    pub capacity: usize,
    /// What a full buffer does.
    pub overflow: Overflow,
    /// Messages dropped by `drop-oldest`.
    pub dropped: u64,
    /// Messages trimmed from the log before this feed read them.
    pub missed: u64,
    /// Whether a slow-consumer event was raised and not yet cleared.
    pub slow: bool,
}

/// What offering a message to a feed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Buffered.
    Buffered,
    /// Buffered after dropping the oldest message.
    DroppedOldest,
    /// Left in the log: the feed is still catching up and will read it from there.
    Behind,
}

impl Feed {
    /// A feed starting at `cursor`.
    #[must_use]
    pub fn new(cursor: u64, capacity: usize, overflow: Overflow) -> Self {
        Self { cursor, buffer: PriorityBuffer::default(), capacity, overflow, dropped: 0, missed: 0, slow: false }
    }

    /// Whether `n` more messages at the head of the log would overflow a policy that refuses.
    /// A `block` feed with an empty buffer takes any batch: waiting could never make room for
    /// a batch larger than the whole buffer.
    #[must_use]
    pub fn refuses(&self, head: u64, n: usize, room_elsewhere: usize) -> bool {
        let waits_in_vain = self.overflow == Overflow::Block && self.buffer.is_empty();
        self.overflow != Overflow::DropOldest
            && !waits_in_vain
            && self.cursor == head
            && self.buffer.len() + n > self.capacity + room_elsewhere
    }

    /// Whether trimming the log to `trim_to` would drop messages this feed has not read yet and
    /// its policy refuses to lose (`drop-oldest` accepts the loss and counts it as missed).
    #[must_use]
    pub fn would_lose(&self, trim_to: u64) -> bool {
        self.overflow != Overflow::DropOldest && self.cursor < trim_to
    }

    /// Offers the message just appended at `seq`. A feed still reading the log tops up from
    /// it instead (so it lags only while its buffer is full). A full `drop-oldest` buffer drops
    /// its oldest message; the refusing policies were checked by [`Feed::refuses`] before the
    /// append, so they buffer (a `block` feed may briefly exceed its capacity by one batch).
    pub fn offer(&mut self, seq: u64, priority: u8, item: Item, log: &Log) -> Offer {
        if self.cursor != seq {
            let before = self.buffer.len();
            self.fill(log);
            return if self.buffer.len() > before { Offer::Buffered } else { Offer::Behind };
        }
        self.cursor += 1;
        let mut offer = Offer::Buffered;
        if self.overflow == Overflow::DropOldest
            && self.buffer.len() >= self.capacity
            && self.buffer.pop_oldest().is_some()
        {
            self.dropped += 1;
            offer = Offer::DroppedOldest;
        }
        self.buffer.push(priority, item);
        offer
    }

    /// Tops the buffer up from the log (catch-up after replay or a full buffer), counting
    /// messages the log trimmed before they were read.
    pub fn fill(&mut self, log: &Log) {
        let first = log.first_seq();
        if self.cursor < first {
            self.missed += first - self.cursor;
            self.cursor = first;
        }
        while self.buffer.len() < self.capacity && self.cursor < log.next_seq() {
            if let Some(frame) = log.get(self.cursor) {
                self.buffer.push(crate::frame::priority(frame), Item { seq: self.cursor, frame: frame.clone() });
            }
            self.cursor += 1;
        }
    }

    /// The next message to hand over, reading from the log when the buffer is empty.
    pub fn next(&mut self, log: &Log) -> Option<Item> {
        if self.buffer.is_empty() {
            self.fill(log);
        }
        self.buffer.pop()
    }

    /// Messages waiting for this feed: buffered plus not yet read from the log.
    #[must_use]
    pub fn lag(&self, log: &Log) -> u64 {
        self.buffer.len() as u64 + log.next_seq().saturating_sub(self.cursor.max(log.first_seq()))
    }
}

/// A broadcast subscriber: receives every message of its channel.
#[derive(Debug)]
pub struct Subscriber {
    /// Its channel.
    pub channel: u32,
    /// What it reads.
    pub feed: Feed,
    /// Messages delivered to it.
    pub delivered: u64,
    /// Messages that expired before it received them.
    pub expired: u64,
}

/// A member of a consumer group: receives its share of the group's messages.
#[derive(Debug)]
pub struct Member {
    /// Its group.
    pub group: u32,
    /// Sequence numbers assigned to it and not yet handed over, in order.
    pub queue: VecDeque<u64>,
    /// Messages assigned to it and not yet acked or nacked.
    pub in_flight: usize,
    /// Most messages in flight at once.
    pub max_in_flight: usize,
}

/// Either kind of consumer, with what both share.
#[derive(Debug)]
pub struct Consumer {
    /// The endpoint (thread) whose drains receive its deliveries.
    pub endpoint: u32,
    /// Whether it sits in its endpoint's ready queue.
    pub queued: bool,
    /// Whether it is paused: nothing is handed over (and members get nothing new).
    pub paused: bool,
    /// Subscriber or member.
    pub kind: ConsumerKind,
}

/// The two kinds of consumer.
#[derive(Debug)]
pub enum ConsumerKind {
    /// A broadcast subscriber.
    Subscriber(Subscriber),
    /// A consumer-group member.
    Member(Member),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_buffer_in_order_and_drop_oldest_when_full() {
        let mut log = Log::default();
        let mut feed = Feed::new(0, 2, Overflow::DropOldest);
        for seq in 0..3u64 {
            let frame: super::super::log::Frame = crate::frame::encode(1, 1, 0.0, b"", &[seq as u8]).into();
            log.append(frame.clone(), 0.0);
            feed.offer(seq, 1, Item { seq, frame }, &log);
        }
        assert_eq!((feed.dropped, feed.buffer.len()), (1, 2));
        assert_eq!(feed.next(&log).unwrap().seq, 1);
        assert!(Feed::new(3, 2, Overflow::Reject).refuses(3, 3, 0));
        assert!(!Feed::new(3, 2, Overflow::Block).refuses(3, 3, 0), "an empty blocking feed takes an oversized batch");
        assert!(!Feed::new(3, 2, Overflow::Reject).refuses(3, 3, 1));
        assert!(!Feed::new(1, 2, Overflow::Reject).refuses(3, 3, 0), "a feed catching up reads from the log");
    }
}
