//! The message bus: named channels with a retained log, broadcast subscribers, consumer groups
//! with acks, redelivery and dead-lettering, request/response, priorities, TTL, backpressure
//! and deduplication.
//!
//! Every call is synchronous and returns before the host sees any delivery: calls only queue
//! work on *endpoints* (one per host thread), and the host pulls records out with
//! [`Bus::drain`] after the call returns. User code therefore never runs mid-mutation.
//!
//! The bus is split by concern into `impl Bus` blocks: `publish` (here), `group` (groups,
//! acks, claims), `deliver` (endpoints and drains), `request` (request/response) and `timer`
//! (visibility timeouts, retry delays, request deadlines).

mod arena;
mod buffer;
mod consumer;
mod dedup;
mod deliver;
mod group;
mod log;
mod options;
mod outbox;
pub mod persist;
mod remote;
mod request;
mod timer;
pub mod wire;

use std::collections::HashMap;

use rustc_hash::FxHashMap;

pub use buffer::{Item, PriorityBuffer};
pub use consumer::{Consumer, ConsumerKind, Feed, Member, Subscriber};
pub use deliver::{EventKind, EVENT_CONSUMER, REPLY_CONSUMER};
pub use group::{GroupStats, PendingInfo};
pub use log::{Frame, Log, Retention};
pub use options::{ChannelOptions, GroupOptions, Overflow, StartAt, SubscribeOptions};
pub use outbox::Writer;
pub use remote::{LAYOUT as REMOTE_LAYOUT, MAX_OPEN_ROUTES};
pub use request::Replied;

/// Checks a duration of ms >= 0 (for the host glue).
pub fn options_check_ms(value: Millis, option: &'static str) -> Result<(), BusError> {
    options::check_ms(value, option, true)
}

use arena::Arena;
use consumer::Offer;
use dedup::Dedup;
use deliver::Endpoint;
use group::Group;
use request::Request;
use timer::Timers;

use crate::error::BusError;
use crate::frame;
use crate::names::{ChannelId, Interner};
use crate::slab::Slab;
use crate::Millis;

/// Bus-wide settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BusConfig {
    /// Largest accepted frame, in bytes (default 10 MiB).
    pub max_message_bytes: usize,
    /// Retention given to channels created on first use.
    pub default_retention: Retention,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: crate::manifest::defaults::MAX_MESSAGE_BYTES,
            default_retention: Retention::default(),
        }
    }
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages published (duplicates not counted).
    pub published: u64,
    /// Deliveries made, to subscribers and group members (redeliveries included).
    pub delivered: u64,
    /// Messages currently retained.
    pub retained: u64,
    /// Bytes currently retained.
    pub retained_bytes: u64,
    /// Sequence number of the oldest retained message.
    pub first_seq: u64,
    /// Sequence number the next message gets.
    pub next_seq: u64,
    /// Live broadcast subscribers.
    pub subscribers: u64,
    /// Consumer groups.
    pub groups: u64,
    /// Publishes dropped as duplicates of an id seen within the dedup window.
    pub duplicates: u64,
    /// Messages that expired before a consumer received them (counted per consumer).
    pub expired: u64,
    /// Messages moved from this channel to its dead-letter channel.
    pub dead_lettered: u64,
    /// Frames taken in from the transport the channel is bound to (mirrored or for a remote group).
    pub ingested: u64,
    /// Frames from the transport refused as malformed or too large (skipped).
    pub rejected: u64,
    /// Requests of other processes read here whose route was dropped unanswered, the oldest of
    /// [`MAX_OPEN_ROUTES`] open ones (a reply to one is late).
    pub routes_dropped: u64,
}

/// Counters of one broadcast subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Messages waiting in its buffer.
    pub buffered: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages dropped by `drop-oldest`.
    pub dropped: u64,
    /// Messages trimmed from the log before it read them.
    pub missed: u64,
    /// Messages that expired before delivery.
    pub expired: u64,
    /// Messages published and not yet delivered to it.
    pub lag: u64,
}

#[derive(Debug)]
struct Channel {
    log: Log,
    arena: Arena,
    options: ChannelOptions,
    subscribers: Vec<u32>,
    groups: Vec<u32>,
    dedup: Dedup,
    dead_letter: Option<ChannelId>,
    /// The transport the channel is bound to: its publishes leave as egress, its log mirrors the
    /// broker's (`remote.rs`).
    transport: Option<u32>,
    stats: ChannelStats,
}

/// The bus: channels, consumers, groups, endpoints, requests and timers.
#[derive(Debug)]
pub struct Bus {
    config: BusConfig,
    names: Interner,
    channels: Vec<Channel>,
    consumers: Slab<Consumer>,
    groups: Slab<Group>,
    group_names: HashMap<(ChannelId, Box<str>), u32>,
    endpoints: Slab<Endpoint>,
    /// Open requests by reply token (`FxHash`: hashed on every request and reply).
    requests: FxHashMap<u32, Request>,
    next_token: u32,
    next_attempt: u32,
    late_replies: u64,
    /// Counts drains, acks and departures: each may have made room for a waiting publisher.
    room_epoch: u64,
    timers: Timers,
    /// Egress records for the transports' driver, in the order made (`remote.rs`).
    egress: Vec<u8>,
    /// The order the open routes of `requests` were opened in (`remote.rs`).
    routes: remote::Routes,
    /// What the disk holds of the durable channels, once one is open (`persist.rs`).
    durable: Option<Box<persist::Tracker>>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(BusConfig::default())
    }
}

/// The endpoint every bus opens at creation: the host thread that created it.
pub const MAIN_ENDPOINT: u32 = 0;

impl Bus {
    /// A bus with the given settings and one endpoint, [`MAIN_ENDPOINT`].
    #[must_use]
    pub fn new(config: BusConfig) -> Self {
        let mut endpoints = Slab::default();
        let main = endpoints.insert(Endpoint::default());
        debug_assert_eq!(main, Some(MAIN_ENDPOINT));
        Self {
            config,
            names: Interner::default(),
            channels: Vec::new(),
            consumers: Slab::default(),
            groups: Slab::default(),
            group_names: HashMap::new(),
            endpoints,
            requests: FxHashMap::default(),
            next_token: 1,
            next_attempt: 1,
            late_replies: 0,
            room_epoch: 0,
            timers: Timers::default(),
            egress: Vec::new(),
            routes: remote::Routes::default(),
            durable: None,
        }
    }

    /// The bus-wide settings.
    #[must_use]
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The id of channel `name`, creating the channel with default options on first use.
    pub fn channel(&mut self, name: &str) -> Result<ChannelId, BusError> {
        let id = self.names.intern(name)?;
        self.ensure_channel(id);
        Ok(id)
    }

    /// Creates the channel behind a freshly interned id.
    fn ensure_channel(&mut self, id: ChannelId) {
        if id as usize == self.channels.len() {
            self.channels.push(Channel {
                log: Log::default(),
                arena: Arena::default(),
                options: ChannelOptions { retention: self.config.default_retention, ..ChannelOptions::default() },
                subscribers: Vec::new(),
                groups: Vec::new(),
                dedup: Dedup::default(),
                dead_letter: None,
                transport: None,
                stats: ChannelStats::default(),
            });
        }
    }

    /// Sets a channel's options, trimming at once what falls outside the new retention.
    pub fn configure(&mut self, channel: ChannelId, options: ChannelOptions, now: Millis) -> Result<(), BusError> {
        options::check_ms(options.retention.max_age, "maxAge", true)?;
        options::check_ms(options.dedup_window, "dedupWindow", true)?;
        let keep_from = self.keep_from(channel);
        let ch = self.channel_mut(channel)?;
        ch.options = options;
        ch.log.trim(&ch.options.retention, now, keep_from);
        Ok(())
    }

    /// Where retention by count and bytes must stop trimming `channel`'s log: for a mirror (a
    /// bound channel, whose appends are never refused), the first message a subscriber that
    /// refuses to lose messages (`block`, `reject`) has not read; it holds the rest until then,
    /// and its reader reads no more meanwhile (`mirror_room`). `u64::MAX` otherwise.
    fn keep_from(&self, channel: ChannelId) -> u64 {
        let Some(ch) = self.channels.get(channel as usize).filter(|ch| ch.transport.is_some()) else {
            return u64::MAX;
        };
        ch.subscribers
            .iter()
            .filter_map(|&id| match self.consumers.get(id) {
                Some(Consumer { kind: ConsumerKind::Subscriber(sub), .. })
                    if sub.feed.overflow != Overflow::DropOldest =>
                {
                    Some(sub.feed.cursor)
                }
                _ => None,
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The name behind a channel id.
    #[must_use]
    pub fn channel_name(&self, channel: ChannelId) -> Option<&str> {
        self.names.name(channel)
    }

    /// A channel's name for an error message (ids mean nothing to the people reading them).
    pub(super) fn name_of(&self, channel: ChannelId) -> String {
        self.names.name(channel).map_or_else(|| format!("#{channel}"), str::to_owned)
    }

    /// Reads and checks one frame of `batch`, naming its channel when it is too large.
    pub(super) fn read_header(&self, batch: &[u8], offset: usize, index: usize) -> Result<frame::Header, BusError> {
        frame::read_header(batch, offset, index, self.config.max_message_bytes).map_err(|err| match err {
            // read_header checked the whole header is there before it checked the length.
            BusError::MessageTooLarge { index, size, limit, .. } => BusError::MessageTooLarge {
                index,
                channel: self.name_of(frame::channel(&batch[offset..])),
                size,
                limit,
            },
            other => other,
        })
    }

    fn channel_mut(&mut self, channel: ChannelId) -> Result<&mut Channel, BusError> {
        self.channels.get_mut(channel as usize).ok_or(BusError::UnknownChannel(channel))
    }

    fn channel_ref(&self, channel: ChannelId) -> Result<&Channel, BusError> {
        self.channels.get(channel as usize).ok_or(BusError::UnknownChannel(channel))
    }

    /// Checks every frame of a batch; returns per-channel (frames, bytes) of the batch.
    fn check_batch(&self, batch: &[u8]) -> Result<Vec<(ChannelId, usize, usize)>, BusError> {
        let mut offset = 0;
        let mut index = 0;
        let mut per_channel: Vec<(ChannelId, usize, usize)> = Vec::new();
        while offset < batch.len() {
            let header = self.read_header(batch, offset, index)?;
            self.channel_ref(header.channel)?;
            self.check_disk(header.channel)?;
            match per_channel.iter_mut().find(|(c, _, _)| *c == header.channel) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.2 += header.len;
                }
                None => per_channel.push((header.channel, 1, header.len)),
            }
            offset += header.len;
            index += 1;
        }
        Ok(per_channel)
    }

    /// Refuses the batch if a consumer whose policy refuses has no room for it.
    fn check_room(&self, per_channel: &[(ChannelId, usize, usize)]) -> Result<(), BusError> {
        for &(channel, n, bytes) in per_channel {
            let ch = &self.channels[channel as usize];
            // A bound channel's frames leave as egress: no local consumer takes them here.
            if ch.transport.is_some() {
                continue;
            }
            let head = ch.log.next_seq();
            // Where retention would trim to after this batch: a refusing consumer still reading
            // the log before that point would lose messages it has not read.
            let trim_to = ch.log.first_seq_after(n, bytes, &ch.options.retention);
            for &id in &ch.subscribers {
                if let Some(Consumer { kind: ConsumerKind::Subscriber(sub), .. }) = self.consumers.get(id) {
                    if sub.feed.refuses(head, n, 0) || sub.feed.would_lose(trim_to) {
                        return Err(self.backpressure(id, "a subscriber".to_owned(), channel, &sub.feed));
                    }
                }
            }
            for &gid in &ch.groups {
                if let Some(group) = self.groups.get(gid) {
                    // A group without members keeps its backlog in the log: it never blocks publishers.
                    let full = group.feed.refuses(head, n, group.member_room(&self.consumers));
                    if !group.is_memberless() && (full || group.feed.would_lose(trim_to)) {
                        let holder = format!("consumer group {:?}", group.name());
                        return Err(self.backpressure(gid, holder, channel, &group.feed));
                    }
                }
            }
        }
        Ok(())
    }

    /// Publishes a batch of frames laid end to end, all or nothing: every frame is checked, and
    /// every refusing consumer's room, before any is appended, so a refused batch publishes
    /// nothing. Returns the number published (duplicates within the dedup window are skipped).
    pub fn publish(&mut self, batch: &[u8], now: Millis) -> Result<usize, BusError> {
        let per_channel = self.check_batch(batch)?;
        self.check_room(&per_channel)?;
        let mut published = 0;
        let mut offset = 0;
        while offset < batch.len() {
            let len =
                u32::from_le_bytes([batch[offset], batch[offset + 1], batch[offset + 2], batch[offset + 3]]) as usize;
            let bytes = &batch[offset..offset + len];
            offset += len;
            let channel = frame::channel(bytes);
            let ch = &mut self.channels[channel as usize];
            if ch.dedup.is_duplicate(frame::id(bytes), ch.options.dedup_window, now) {
                ch.stats.duplicates += 1;
                continue;
            }
            ch.stats.published += 1;
            published += 1;
            if ch.transport.is_some() {
                remote::push_publish(&mut self.egress, bytes, ch.options.dedup_window, now);
                continue;
            }
            let stored = ch.arena.store(bytes, now, 0);
            self.append(channel, &stored, now);
        }
        for &(channel, _, _) in &per_channel {
            self.after_append(channel, now);
        }
        Ok(published)
    }

    /// Appends one checked frame to a channel and offers it to every consumer. Callers count
    /// it (published or ingested) and run [`Bus::after_append`] once per touched channel
    /// afterwards.
    fn append(&mut self, channel: ChannelId, frame: &Frame, now: Millis) -> u64 {
        let priority = frame::priority(frame);
        let ch = &mut self.channels[channel as usize];
        let seq = ch.log.append(frame.clone(), now);
        if let Some(t) = self.durable.as_deref_mut() {
            t.appended(channel, seq, ch.log.last_at(), priority, frame);
        }
        // A mirror's appends were never checked for room: a full subscriber that refuses to lose
        // messages lags in the log instead of growing its buffer without bound.
        let mirror = ch.transport.is_some();
        for &id in &ch.subscribers {
            let Some(consumer) = self.consumers.get_mut(id) else {
                continue;
            };
            let endpoint = consumer.endpoint;
            let ConsumerKind::Subscriber(sub) = &mut consumer.kind else {
                continue;
            };
            if mirror && sub.feed.overflow != Overflow::DropOldest && sub.feed.buffer.len() >= sub.feed.capacity {
                continue;
            }
            let item = Item { seq, frame: frame.clone() };
            let offer = sub.feed.offer(seq, priority, item, &ch.log);
            if offer == Offer::Behind {
                continue;
            }
            let buffered = sub.feed.buffer.len();
            // Raised once at three quarters full, re-armed by a drain below one quarter.
            if !sub.feed.slow && buffered * 4 >= sub.feed.capacity * 3 {
                sub.feed.slow = true;
                if let Some(ep) = self.endpoints.get_mut(endpoint) {
                    ep.event(EventKind::SlowConsumer, id, buffered as f64);
                }
            }
            if offer == Offer::DroppedOldest {
                if let Some(ep) = self.endpoints.get_mut(endpoint) {
                    ep.event(EventKind::Dropped, id, 1.0);
                }
            }
            deliver::mark_ready(&mut self.consumers, &mut self.endpoints, id);
        }
        // A bound channel's groups are remote: fed by ingest only, never from the log.
        let groups: &[u32] = if mirror { &[] } else { &ch.groups };
        for &gid in groups {
            if let Some(group) = self.groups.get_mut(gid) {
                // Without members a full group buffer does not grow: the rest waits in the log.
                if group.is_memberless() && group.feed.buffer.len() >= group.feed.capacity {
                    continue;
                }
                group.feed.offer(seq, priority, Item { seq, frame: frame.clone() }, &ch.log);
            }
        }
        seq
    }

    /// Trims the channel's log and hands buffered group messages to members.
    fn after_append(&mut self, channel: ChannelId, now: Millis) {
        let keep_from = self.keep_from(channel);
        let ch = &mut self.channels[channel as usize];
        ch.log.trim(&ch.options.retention, now, keep_from);
        // By index: dispatching never changes the channel's group list, and a clone per
        // publish would allocate on the hot path.
        for i in 0..self.channels[channel as usize].groups.len() {
            let gid = self.channels[channel as usize].groups[i];
            self.dispatch(gid);
        }
    }

    /// The dead-letter channel of `channel`: `<name>.dead-letter`, created on first use.
    fn dead_letter_channel(&mut self, channel: ChannelId) -> Option<ChannelId> {
        if let Some(id) = self.channels[channel as usize].dead_letter {
            return Some(id);
        }
        let name = format!("{}.dead-letter", self.names.name(channel)?);
        let id = self.names.intern_derived(&name);
        self.ensure_channel(id);
        self.channels[channel as usize].dead_letter = Some(id);
        Some(id)
    }

    /// The dead-letter frame of a message: moved to the dead-letter channel, with why and how
    /// often it was delivered in headers, and where it came from (`origin_seq`: its seq in
    /// the origin's log, or a remote group entry's broker position).
    fn dead_letter_frame(
        &mut self,
        origin: ChannelId,
        origin_seq: &str,
        frame: &[u8],
        reason: &str,
        deliveries: u32,
    ) -> Option<(ChannelId, Vec<u8>)> {
        let dlq = self.dead_letter_channel(origin)?;
        let origin_name = self.names.name(origin).unwrap_or_default().to_owned();
        let moved = frame::with_headers(
            frame,
            dlq,
            &[
                ("x-orrery-dead-letter-reason", reason),
                ("x-orrery-deliveries", &deliveries.to_string()),
                ("x-orrery-origin-channel", &origin_name),
                ("x-orrery-origin-seq", origin_seq),
            ],
        );
        Some((dlq, moved))
    }

    /// Moves a message to its channel's dead-letter channel, recording why and how often it
    /// was delivered. Dead-letter channels are ordinary channels: readable and replayable (a
    /// bound one's dead letters are published to its transport).
    fn dead_letter(&mut self, origin: ChannelId, seq: u64, frame: &[u8], reason: &str, deliveries: u32, now: Millis) {
        let Some((dlq, moved)) = self.dead_letter_frame(origin, &seq.to_string(), frame, reason, deliveries) else {
            return;
        };
        self.channels[origin as usize].stats.dead_lettered += 1;
        let dl = &mut self.channels[dlq as usize];
        dl.stats.published += 1;
        if dl.transport.is_some() {
            remote::push_publish(&mut self.egress, &moved, 0.0, now);
            return;
        }
        self.append(dlq, &Frame::from(moved), now);
        self.after_append(dlq, now);
    }

    /// Counters of one channel.
    pub fn stats(&self, channel: ChannelId) -> Result<ChannelStats, BusError> {
        let ch = self.channel_ref(channel)?;
        Ok(ChannelStats {
            retained: ch.log.len() as u64,
            retained_bytes: ch.log.bytes() as u64,
            first_seq: ch.log.first_seq(),
            next_seq: ch.log.next_seq(),
            subscribers: ch.subscribers.len() as u64,
            groups: ch.groups.len() as u64,
            ..ch.stats
        })
    }

    /// Counters of one subscriber.
    pub fn subscriber_stats(&self, id: u32) -> Result<SubscriberStats, BusError> {
        match self.consumers.get(id) {
            Some(Consumer { kind: ConsumerKind::Subscriber(sub), .. }) => {
                let log = &self.channels[sub.channel as usize].log;
                Ok(SubscriberStats {
                    buffered: sub.feed.buffer.len() as u64,
                    delivered: sub.delivered,
                    dropped: sub.feed.dropped,
                    missed: sub.feed.missed,
                    expired: sub.expired,
                    lag: sub.feed.lag(log),
                })
            }
            _ => Err(BusError::UnknownSubscription(id)),
        }
    }

    /// The refusal of a full consumer. Built only when a publish is refused, so the names it
    /// formats cost nothing on the path that publishes.
    fn backpressure(&self, consumer: u32, holder: String, channel: ChannelId, feed: &Feed) -> BusError {
        let block = feed.overflow == Overflow::Block;
        BusError::Backpressure { consumer, holder, channel: self.name_of(channel), capacity: feed.capacity, block }
    }

    /// Replies that arrived after their request had timed out (dropped).
    #[must_use]
    pub fn late_replies(&self) -> u64 {
        self.late_replies
    }
}

/// Takes the next non-zero token from a counter (attempt tokens, reply tokens; 0 means none).
fn next_token(counter: &mut u32) -> u32 {
    let token = *counter;
    *counter = counter.checked_add(1).unwrap_or(1);
    token
}

/// Where a new feed's cursor starts in `log`.
fn start_cursor(log: &Log, start: StartAt) -> u64 {
    match start {
        StartAt::Latest => log.next_seq(),
        StartAt::Earliest => log.first_seq(),
        StartAt::Seq(seq) => seq.clamp(log.first_seq(), log.next_seq()),
        StartAt::Time(time) => log.seq_at_time(time),
    }
}

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
