//! Endpoints and drains. An endpoint is one host thread's mailbox: the consumers it owns, the
//! replies to its requests and the events about them. The host drains its endpoint into a
//! buffer after each call; other threads' endpoints are woken through [`Bus::take_wakeups`].

use std::collections::VecDeque;

use super::consumer::{Consumer, ConsumerKind, Feed, Subscriber};
use super::log::Frame;
use super::options::{check_capacity, SubscribeOptions};
use super::outbox::Writer;
use super::{start_cursor, Bus, MAIN_ENDPOINT};
use crate::error::BusError;
use crate::frame::{self, DELIVERY_HEADER_LEN};
use crate::names::ChannelId;
use crate::slab::Slab;
use crate::Millis;

/// Consumer id of a delivery record that carries a reply (its attempt field is the token).
pub const REPLY_CONSUMER: u32 = u32::MAX;
/// Consumer id of a delivery record that carries an event (attempt: kind; seq: value; the
/// 8-byte body: its length, then the subject id).
pub const EVENT_CONSUMER: u32 = u32::MAX - 1;
const EVENT_BODY_LEN: usize = 8;

/// Events the bus reports to the endpoint concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    /// A consumer's buffer passed three quarters of its capacity (value: buffered count).
    SlowConsumer = 1,
    /// `drop-oldest` dropped messages of a consumer (value: how many).
    Dropped = 2,
    /// A request got no reply in time (subject: its token).
    RequestTimeout = 3,
}

/// One thread's mailbox.
#[derive(Debug, Default)]
pub struct Endpoint {
    pub(super) ready: VecDeque<u32>,
    replies: VecDeque<(u32, Frame)>,
    events: VecDeque<(EventKind, u32, f64)>,
    /// Whether the host was told this endpoint has something (cleared by an empty drain).
    woken: bool,
    /// The room epoch at which a publish from this endpoint was told to wait for room
    /// (`BACKPRESSURE_WAIT`); it is woken once the epoch moves past it.
    waiting_since: Option<u64>,
}

impl Endpoint {
    /// Queues an event for this endpoint's host.
    pub fn event(&mut self, kind: EventKind, subject: u32, value: f64) {
        self.events.push_back((kind, subject, value));
    }

    /// Queues a reply for this endpoint's host.
    pub fn reply(&mut self, token: u32, frame: Frame) {
        self.replies.push_back((token, frame));
    }

    fn has_work(&self) -> bool {
        !(self.ready.is_empty() && self.replies.is_empty() && self.events.is_empty())
    }

    /// Forgets that the host was woken once nothing waits for it (egress was just taken).
    pub(super) fn settle_woken(&mut self) {
        if !self.has_work() {
            self.woken = false;
        }
    }
}

/// Puts a consumer in its endpoint's ready queue (once).
pub fn mark_ready(consumers: &mut Slab<Consumer>, endpoints: &mut Slab<Endpoint>, id: u32) {
    if let Some(c) = consumers.get_mut(id) {
        if !c.queued && !c.paused {
            c.queued = true;
            if let Some(ep) = endpoints.get_mut(c.endpoint) {
                ep.ready.push_back(id);
            }
        }
    }
}

impl Bus {
    /// Opens an endpoint for another host thread.
    pub fn open_endpoint(&mut self) -> Result<u32, BusError> {
        self.endpoints
            .insert(Endpoint::default())
            .ok_or(BusError::Capacity { what: "bus endpoints (threads attached)", limit: crate::slab::MAX_ENTRIES })
    }

    /// Closes an endpoint (its thread is gone) at `now`: its subscribers are removed, its group
    /// members leave (their unacknowledged messages are redelivered, or dead-lettered if
    /// delivered `max_deliveries` times: see `release_member`), its pending requests are dropped.
    pub fn close_endpoint(&mut self, endpoint: u32, now: Millis) -> Result<(), BusError> {
        if endpoint == MAIN_ENDPOINT || self.endpoints.get(endpoint).is_none() {
            return Err(BusError::UnknownEndpoint(endpoint));
        }
        let owned: Vec<u32> = self.consumers.iter().filter(|(_, c)| c.endpoint == endpoint).map(|(id, _)| id).collect();
        for id in owned {
            self.remove_consumer(id, Some(now))?;
        }
        let timers = &mut self.timers;
        self.requests.retain(|&token, r| {
            if r.endpoint == endpoint {
                timers.cancel_request(r.deadline, token);
            }
            r.endpoint != endpoint
        });
        self.endpoints.remove(endpoint);
        Ok(())
    }

    /// Subscribes endpoint `endpoint` to every message of `channel`.
    pub fn subscribe(&mut self, endpoint: u32, channel: ChannelId, options: SubscribeOptions) -> Result<u32, BusError> {
        check_capacity(options.capacity)?;
        if self.endpoints.get(endpoint).is_none() {
            return Err(BusError::UnknownEndpoint(endpoint));
        }
        let ch = self.channel_ref(channel)?;
        let cursor = start_cursor(&ch.log, options.start);
        let pending = cursor < ch.log.next_seq();
        let mut feed = Feed::new(cursor, options.capacity, options.overflow);
        feed.fill(&ch.log);
        let sub = Subscriber { channel, feed, delivered: 0, expired: 0 };
        let id = self.insert_consumer(endpoint, ConsumerKind::Subscriber(sub))?;
        self.channels[channel as usize].subscribers.push(id);
        if pending {
            mark_ready(&mut self.consumers, &mut self.endpoints, id);
        }
        Ok(id)
    }

    /// Stores a new consumer owned by `endpoint`.
    pub(super) fn insert_consumer(&mut self, endpoint: u32, kind: ConsumerKind) -> Result<u32, BusError> {
        let consumer = Consumer { endpoint, queued: false, paused: false, kind };
        self.consumers
            .insert(consumer)
            .ok_or(BusError::Capacity { what: "subscriptions and group members", limit: crate::slab::MAX_ENTRIES })
    }

    /// Removes a subscriber, or makes a member leave its group (its unacknowledged messages go
    /// back to the group for redelivery).
    pub fn unsubscribe(&mut self, id: u32) -> Result<(), BusError> {
        self.remove_consumer(id, None)
    }

    /// Makes a member leave its group because its consumer failed at `now` (an agent that crashed):
    /// like its endpoint's close, what it was delivered `max_deliveries` times is dead-lettered
    /// rather than handed back, so a message that ends its consumer every time is not taken for
    /// ever. The rest goes back for redelivery. A subscriber is removed as by `unsubscribe`.
    pub fn abandon(&mut self, id: u32, now: Millis) -> Result<(), BusError> {
        self.remove_consumer(id, Some(now))
    }

    /// Removes a consumer; `ended`: it failed then (its thread is gone, or it crashed).
    fn remove_consumer(&mut self, id: u32, ended: Option<Millis>) -> Result<(), BusError> {
        let consumer = self.consumers.remove(id).ok_or(BusError::UnknownSubscription(id))?;
        self.room_epoch += 1;
        if let Some(ep) = self.endpoints.get_mut(consumer.endpoint) {
            ep.ready.retain(|&c| c != id);
        }
        match consumer.kind {
            ConsumerKind::Subscriber(sub) => self.channels[sub.channel as usize].subscribers.retain(|&s| s != id),
            ConsumerKind::Member(member) => self.release_member(member.group, id, ended),
        }
        Ok(())
    }

    /// Pauses (`true`) or resumes a consumer. A paused subscriber's buffer fills and its
    /// overflow policy applies; a paused member gets no new messages.
    pub fn set_paused(&mut self, id: u32, paused: bool) -> Result<(), BusError> {
        let consumer = self.consumers.get_mut(id).ok_or(BusError::UnknownSubscription(id))?;
        consumer.paused = paused;
        let group = match &consumer.kind {
            ConsumerKind::Member(m) => Some(m.group),
            ConsumerKind::Subscriber(_) => None,
        };
        if !paused {
            mark_ready(&mut self.consumers, &mut self.endpoints, id);
            if let Some(g) = group {
                self.dispatch(g);
            }
        }
        Ok(())
    }

    /// Whether `endpoint` has anything to drain: records, or (the main endpoint) egress.
    #[must_use]
    pub fn has_pending(&self, endpoint: u32) -> bool {
        self.has_records(endpoint) || (endpoint == MAIN_ENDPOINT && !self.egress.is_empty())
    }

    /// Whether `endpoint` has records to drain (egress aside: [`Bus::drain_egress`] takes it).
    #[must_use]
    pub fn has_records(&self, endpoint: u32) -> bool {
        self.endpoints.get(endpoint).is_some_and(Endpoint::has_work)
    }

    /// Endpoints that got work since they were last woken or drained empty (each is returned
    /// once until it drains empty again), and endpoints waiting for room once some was made.
    /// Hosts with several threads notify these.
    pub fn take_wakeups(&mut self) -> Vec<u32> {
        self.take_wakeups_except(u32::MAX)
    }

    /// Like [`Bus::take_wakeups`], leaving out the calling thread's own endpoint (its host
    /// drains after its own call anyway, and must not be marked woken without being woken).
    pub fn take_wakeups_except(&mut self, own: u32) -> Vec<u32> {
        let epoch = self.room_epoch;
        let egress = !self.egress.is_empty();
        let room_for = |ep: &Endpoint| ep.waiting_since.is_some_and(|since| epoch > since);
        // Egress waits for the main endpoint's host, which hands it to the transports.
        let has_work = |id: u32, ep: &Endpoint| ep.has_work() || (egress && id == MAIN_ENDPOINT);
        let due: Vec<u32> = self
            .endpoints
            .iter()
            .filter(|&(id, ep)| id != own && ((has_work(id, ep) && !ep.woken) || room_for(ep)))
            .map(|(id, _)| id)
            .collect();
        for &id in &due {
            if let Some(ep) = self.endpoints.get_mut(id) {
                ep.woken |= has_work(id, ep);
                if room_for(ep) {
                    ep.waiting_since = None;
                }
            }
        }
        due
    }

    /// Publishes like [`Bus::publish`] on behalf of `endpoint`: when a blocking consumer is full,
    /// the endpoint is remembered and woken (see [`Bus::take_wakeups`]) once room is made, on
    /// whichever thread makes it.
    pub fn publish_from(&mut self, endpoint: u32, batch: &[u8], now: Millis) -> Result<usize, BusError> {
        let result = self.publish(batch, now);
        self.note_waiting(endpoint, &result);
        result
    }

    /// Remembers that `endpoint` was told to wait for room, so it is woken when room is made.
    pub(super) fn note_waiting<T>(&mut self, endpoint: u32, result: &Result<T, BusError>) {
        if let Err(BusError::Backpressure { block: true, .. }) = result {
            self.wait_for_room(endpoint);
        }
    }

    /// Wakes `endpoint` (see [`Bus::take_wakeups`]) once room is made after now.
    pub(super) fn wait_for_room(&mut self, endpoint: u32) {
        if let Some(ep) = self.endpoints.get_mut(endpoint) {
            ep.waiting_since = Some(self.room_epoch);
        }
    }

    /// Writes `endpoint`'s pending events, replies and deliveries into `out` as delivery
    /// records and returns the bytes written; each consumer's messages come highest priority
    /// first, in channel order within a priority. Messages whose TTL passed by `now` are
    /// dropped (and counted). When the next record alone is larger than `out`, nothing is
    /// written and `Err(needed)` gives the buffer size it needs.
    pub fn drain(&mut self, endpoint: u32, out: &mut [u8], now: Millis) -> Result<usize, usize> {
        let mut w = Writer::new(out);
        let Some(ep) = self.endpoints.get_mut(endpoint) else {
            return Ok(0);
        };
        while let Some(&(kind, subject, value)) = ep.events.front() {
            if !w.fits(EVENT_BODY_LEN) {
                return full(&w, EVENT_BODY_LEN);
            }
            let mut body = [0u8; EVENT_BODY_LEN];
            body[..4].copy_from_slice(&(EVENT_BODY_LEN as u32).to_le_bytes());
            body[4..].copy_from_slice(&subject.to_le_bytes());
            w.push(EVENT_CONSUMER, kind as u32, value as u64, &body);
            ep.events.pop_front();
        }
        while let Some((token, frame)) = ep.replies.front() {
            if !w.fits(frame.len()) {
                return full(&w, frame.len());
            }
            w.push(REPLY_CONSUMER, *token, 0, frame);
            ep.replies.pop_front();
        }
        while let Some(&id) = self.endpoints.get(endpoint).and_then(|ep| ep.ready.front()) {
            let done = match self.consumers.get(id).map(|c| (c.paused, matches!(c.kind, ConsumerKind::Member(_)))) {
                None | Some((true, _)) => true,
                Some((false, false)) => self.drain_subscriber(id, &mut w, now)?,
                Some((false, true)) => self.drain_member(id, &mut w, now)?,
            };
            if !done {
                break;
            }
            if let Some(c) = self.consumers.get_mut(id) {
                c.queued = false;
            }
            if let Some(ep) = self.endpoints.get_mut(endpoint) {
                ep.ready.pop_front();
            }
        }
        let egress = endpoint == MAIN_ENDPOINT && !self.egress.is_empty();
        if let Some(ep) = self.endpoints.get_mut(endpoint) {
            if !ep.has_work() && !egress {
                ep.woken = false;
            }
        }
        if w.written() > 0 {
            self.room_epoch += 1;
        }
        Ok(w.written())
    }

    /// Hands a subscriber's buffered messages over; `Ok(true)` when it has none left.
    fn drain_subscriber(&mut self, id: u32, w: &mut Writer<'_>, now: Millis) -> Result<bool, usize> {
        let Some(Consumer { kind: ConsumerKind::Subscriber(sub), .. }) = self.consumers.get_mut(id) else {
            return Ok(true);
        };
        let ch = &mut self.channels[sub.channel as usize];
        let mut expired = Vec::new();
        let result = loop {
            let Some(item) = sub.feed.next(&ch.log) else {
                break Ok(true);
            };
            let ttl_end = frame::expires_at(&item.frame);
            if ttl_end != 0.0 && ttl_end <= now {
                sub.expired += 1;
                ch.stats.expired += 1;
                if ch.options.dead_letter_expired {
                    expired.push(item);
                }
                continue;
            }
            if !w.fits(item.frame.len()) {
                let needed = item.frame.len();
                sub.feed.buffer.unpop(frame::priority(&item.frame), item);
                break full(w, needed).map(|_| false);
            }
            w.push(id, 0, item.seq, &item.frame);
            sub.delivered += 1;
            ch.stats.delivered += 1;
        };
        if sub.feed.slow && sub.feed.buffer.len() * 4 <= sub.feed.capacity {
            sub.feed.slow = false;
        }
        let channel = sub.channel;
        for item in expired {
            self.dead_letter(channel, item.seq, &item.frame, "expired", 0, now);
        }
        result
    }
}

/// The drain result when the next record does not fit: what was written so far, or, if
/// nothing was, the buffer size that record needs.
pub(super) fn full(w: &Writer<'_>, frame_len: usize) -> Result<usize, usize> {
    if w.written() == 0 {
        Err(DELIVERY_HEADER_LEN + frame_len)
    } else {
        Ok(w.written())
    }
}
