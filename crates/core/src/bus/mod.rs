//! The message bus: named channels with a retained log and broadcast subscribers.
//!
//! Every call is synchronous and returns before the host sees any delivery: publishing only
//! marks subscribers ready, and the host pulls records out with [`Bus::drain`] after the call
//! returns. User code therefore never runs while the bus is mid-mutation.

mod log;
mod outbox;
mod subscriptions;

use std::collections::VecDeque;

pub use log::{Entry, Log, Retention};
pub use outbox::Writer;
pub use subscriptions::{Subscription, SubscriptionId, Subscriptions};

use crate::error::BusError;
use crate::frame;
use crate::names::{ChannelId, Interner};
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
        Self { max_message_bytes: 10 << 20, default_retention: Retention::default() }
    }
}

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartAt {
    /// Only messages published after subscribing.
    Latest,
    /// The oldest retained message.
    Earliest,
    /// A given sequence number (or the oldest retained, if that one is gone).
    Seq(u64),
    /// The first retained message published at or after a time.
    Time(Millis),
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Messages published.
    pub published: u64,
    /// Broadcast deliveries made.
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
}

#[derive(Debug)]
struct Channel {
    log: Log,
    retention: Retention,
    subscribers: Vec<SubscriptionId>,
    published: u64,
    delivered: u64,
}

/// The bus: channels, their logs and their subscribers.
#[derive(Debug)]
pub struct Bus {
    config: BusConfig,
    names: Interner,
    channels: Vec<Channel>,
    subs: Subscriptions,
    ready: VecDeque<SubscriptionId>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(BusConfig::default())
    }
}

impl Bus {
    /// A bus with the given settings.
    #[must_use]
    pub fn new(config: BusConfig) -> Self {
        Self { config, names: Interner::default(), channels: Vec::new(), subs: Subscriptions::default(), ready: VecDeque::new() }
    }

    /// The bus-wide settings.
    #[must_use]
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The id of channel `name`, creating the channel with default retention on first use.
    pub fn channel(&mut self, name: &str) -> Result<ChannelId, BusError> {
        let id = self.names.intern(name)?;
        if id as usize == self.channels.len() {
            self.channels.push(Channel {
                log: Log::default(),
                retention: self.config.default_retention,
                subscribers: Vec::new(),
                published: 0,
                delivered: 0,
            });
        }
        Ok(id)
    }

    /// Sets a channel's retention, trimming at once what falls outside it.
    pub fn set_retention(&mut self, channel: ChannelId, retention: Retention, now: Millis) -> Result<(), BusError> {
        if retention.max_age.is_nan() || retention.max_age < 0.0 {
            return Err(BusError::InvalidOption { option: "maxAge", reason: "must be a number of ms >= 0" });
        }
        let ch = self.channel_mut(channel)?;
        ch.retention = retention;
        self.trim(channel, now);
        Ok(())
    }

    /// The name behind a channel id.
    #[must_use]
    pub fn channel_name(&self, channel: ChannelId) -> Option<&str> {
        self.names.name(channel)
    }

    fn channel_mut(&mut self, channel: ChannelId) -> Result<&mut Channel, BusError> {
        self.channels.get_mut(channel as usize).ok_or(BusError::UnknownChannel(channel))
    }

    /// Publishes a batch of frames laid end to end, all or nothing: every frame is checked
    /// before any is appended, so a refused batch publishes nothing. Returns the number of
    /// frames published; their sequence numbers are consecutive per channel.
    pub fn publish(&mut self, batch: &[u8], now: Millis) -> Result<usize, BusError> {
        let mut offset = 0;
        let mut count = 0;
        while offset < batch.len() {
            let header = frame::read_header(batch, offset, count, self.config.max_message_bytes)?;
            if header.channel as usize >= self.channels.len() {
                return Err(BusError::UnknownChannel(header.channel));
            }
            offset += header.len;
            count += 1;
        }
        offset = 0;
        while offset < batch.len() {
            let len = frame::read_header(batch, offset, 0, usize::MAX).map_or(0, |h| h.len);
            let mut owned: Box<[u8]> = batch[offset..offset + len].into();
            frame::stamp(&mut owned, now);
            let channel = u32::from_le_bytes(owned[frame::OFF_CHANNEL..frame::OFF_CHANNEL + 4].try_into().unwrap_or_default());
            self.append(channel, owned, now);
            offset += len;
        }
        Ok(count)
    }

    fn append(&mut self, channel: ChannelId, frame: Box<[u8]>, now: Millis) {
        let ch = &mut self.channels[channel as usize];
        ch.log.append(frame, now);
        ch.published += 1;
        for &id in &ch.subscribers {
            if let Ok(sub) = self.subs.get_mut(id) {
                if !sub.queued {
                    sub.queued = true;
                    self.ready.push_back(id);
                }
            }
        }
        self.trim(channel, now);
    }

    fn trim(&mut self, channel: ChannelId, now: Millis) {
        let ch = &mut self.channels[channel as usize];
        if ch.log.trim(&ch.retention, now) == 0 {
            return;
        }
        let first = ch.log.first_seq();
        for &id in &ch.subscribers {
            if let Ok(sub) = self.subs.get_mut(id) {
                if sub.cursor < first {
                    sub.missed += first - sub.cursor;
                    sub.cursor = first;
                }
            }
        }
    }

    /// Subscribes to every message of `channel` from `start` on.
    pub fn subscribe(&mut self, channel: ChannelId, start: StartAt) -> Result<SubscriptionId, BusError> {
        let ch = self.channels.get(channel as usize).ok_or(BusError::UnknownChannel(channel))?;
        let first = ch.log.first_seq();
        let cursor = match start {
            StartAt::Latest => ch.log.next_seq(),
            StartAt::Earliest => first,
            StartAt::Seq(seq) => seq.clamp(first, ch.log.next_seq()),
            StartAt::Time(time) => ch.log.seq_at_time(time),
        };
        let pending = cursor < ch.log.next_seq();
        let id = self.subs.insert(Subscription { channel, cursor, missed: 0, delivered: 0, queued: pending })?;
        self.channels[channel as usize].subscribers.push(id);
        if pending {
            self.ready.push_back(id);
        }
        Ok(id)
    }

    /// Ends a subscription; nothing more is delivered to it.
    pub fn unsubscribe(&mut self, id: SubscriptionId) -> Result<(), BusError> {
        let sub = self.subs.remove(id)?;
        self.channels[sub.channel as usize].subscribers.retain(|&s| s != id);
        Ok(())
    }

    /// The state of a live subscription.
    pub fn subscription(&self, id: SubscriptionId) -> Result<&Subscription, BusError> {
        self.subs.get(id)
    }

    /// Writes pending deliveries into `out` as delivery records, each subscriber's in channel
    /// order, and returns the bytes written. When the next record alone is larger than `out`,
    /// nothing is written and `Err(needed)` gives the buffer size that record needs.
    pub fn drain(&mut self, out: &mut [u8]) -> Result<usize, usize> {
        let mut writer = Writer::new(out);
        while let Some(&id) = self.ready.front() {
            let Ok(sub) = self.subs.get_mut(id) else {
                self.ready.pop_front();
                continue;
            };
            let ch = &mut self.channels[sub.channel as usize];
            while let Some(entry) = ch.log.get(sub.cursor) {
                if !writer.fits(entry.frame.len()) {
                    let needed = frame::DELIVERY_HEADER_LEN + entry.frame.len();
                    return if writer.written() == 0 { Err(needed) } else { Ok(writer.written()) };
                }
                writer.push(id, 0, entry.seq, &entry.frame);
                sub.cursor += 1;
                sub.delivered += 1;
                ch.delivered += 1;
            }
            sub.queued = false;
            self.ready.pop_front();
        }
        Ok(writer.written())
    }

    /// Whether any delivery waits for [`Bus::drain`].
    #[must_use]
    pub fn has_pending(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Counters of one channel.
    pub fn stats(&self, channel: ChannelId) -> Result<ChannelStats, BusError> {
        let ch = self.channels.get(channel as usize).ok_or(BusError::UnknownChannel(channel))?;
        Ok(ChannelStats {
            published: ch.published,
            delivered: ch.delivered,
            retained: ch.log.len() as u64,
            retained_bytes: ch.log.bytes() as u64,
            first_seq: ch.log.first_seq(),
            next_seq: ch.log.next_seq(),
            subscribers: ch.subscribers.len() as u64,
        })
    }
}

#[cfg(test)]
mod tests;
