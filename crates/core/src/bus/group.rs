//! Consumer groups: each message goes to one member; members ack or nack; an unacknowledged
//! message is redelivered after the visibility timeout; stale entries can be claimed by
//! another member; after `max_deliveries` a message moves to the dead-letter channel.
//!
//! Every hand-over carries a fresh attempt token. An ack or nack must name the current
//! attempt: once a lease expired and the message went elsewhere, the old token is `STALE_ACK`.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use super::consumer::{Consumer, ConsumerKind, Feed, Member};
use super::deliver::full;
use super::deliver::mark_ready;
use super::log::Frame;
use super::options::{check_capacity, check_ms, GroupOptions};
use super::outbox::Writer;
use super::remote::{self, RemoteGroup};
use super::timer::TimerKind;
use super::{next_token, start_cursor, Bus};
use crate::error::BusError;
use crate::frame;
use crate::names::{validate, ChannelId};
use crate::slab::Slab;
use crate::Millis;

/// A message handed to the group and not yet acked.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) frame: Frame,
    /// The member holding it, or `None` while it waits for redelivery.
    pub(super) member: Option<u32>,
    /// The current attempt token.
    attempt: u32,
    /// Times it was handed over to a member's host.
    pub(super) deliveries: u32,
    /// When the current attempt was handed over (None: assigned, not yet drained).
    delivered_at: Option<Millis>,
}

impl Pending {
    /// An entry waiting for a member, delivered `deliveries` times before.
    pub(super) fn waiting(frame: Frame, deliveries: u32) -> Self {
        Self { frame, member: None, attempt: 0, deliveries, delivered_at: None }
    }
}

/// One entry of a group's pending-entries list, for inspection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendingInfo {
    /// The message's sequence number.
    pub seq: u64,
    /// The member holding it (`u32::MAX` while it waits for redelivery).
    pub member: u32,
    /// The current attempt token.
    pub attempt: u32,
    /// Times it was delivered.
    pub deliveries: u32,
    /// Ms since the current attempt was delivered (0 if not yet).
    pub idle: Millis,
}

/// Counters of one consumer group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// Live members.
    pub members: u64,
    /// Messages not yet given to any member (buffered, waiting for redelivery, or unread).
    pub backlog: u64,
    /// Messages handed to members and not yet acked.
    pub pending: u64,
    /// Deliveries made (redeliveries included).
    pub delivered: u64,
    /// Messages acked.
    pub acked: u64,
    /// Nacks received.
    pub nacked: u64,
    /// Messages redelivered after a nack, a timeout or a member leaving.
    pub redelivered: u64,
    /// Messages moved to the dead-letter channel.
    pub dead_lettered: u64,
    /// Messages that expired before delivery.
    pub expired: u64,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) channel: ChannelId,
    /// Its name, for error messages.
    name: Box<str>,
    pub(super) feed: Feed,
    pub(super) options: GroupOptions,
    pub(super) members: Vec<u32>,
    next_member: usize,
    pub(super) pending: FxHashMap<u64, Pending>,
    /// Running leases ordered by deadline: (deadline, seq, attempt). A local group's are pushed
    /// at delivery and a remote group's at ingest, each `now + visibility`, so with the host's
    /// clock they arrive in deadline order and go on the back; one that does not (a clock that
    /// went back) is put in its place, so the front is always the earliest. Settled ones are
    /// popped from the front as acks arrive, so this stays near the number of messages in
    /// flight instead of holding every delivery until its deadline.
    leases: VecDeque<(Millis, u64, u32)>,
    /// Entries waiting for a member; a remote group's inbox of what ingest brought.
    pub(super) redeliver: VecDeque<u64>,
    pub(super) stats: GroupStats,
    /// Set on a bound channel: the group is fed by ingest only and settles through egress.
    pub(super) remote: Option<Box<RemoteGroup>>,
}

/// Why an ack of a member that has left is stale (its group keeps what it held, unless deleted).
const LEFT: &str = "the member is no longer in its group (it left, or the group was deleted)";
/// Why an ack of a delivery that is no longer the member's is stale.
const NOT_CURRENT: &str =
    "it is no longer this member's delivery (its lease expired, it went to another member, or it was settled)";

impl Group {
    /// The group's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease `(seq, attempt)` is still running: a local group's runs while that
    /// delivery is out; a remote group's (one per entry, from ingest) while the entry is here,
    /// delivered or not (local sequence numbers are never reused).
    fn lease_running(&self, seq: u64, attempt: u32) -> bool {
        running(&self.pending, self.remote.is_some(), seq, attempt)
    }

    /// Queues a lease ending at `deadline`, keeping the queue in deadline order.
    pub(super) fn push_lease(&mut self, deadline: Millis, seq: u64, attempt: u32) {
        if self.leases.back().is_none_or(|&(last, _, _)| last <= deadline) {
            self.leases.push_back((deadline, seq, attempt));
        } else {
            let at = self.leases.partition_point(|&(d, _, _)| d <= deadline);
            self.leases.insert(at, (deadline, seq, attempt));
        }
    }

    /// Pops settled leases off the front.
    fn trim_leases(&mut self) {
        while let Some(&(_, seq, attempt)) = self.leases.front() {
            if self.lease_running(seq, attempt) {
                break;
            }
            self.leases.pop_front();
        }
        // One message held for long keeps every later settled lease queued behind it; compact
        // when settled ones are the large majority, so the queue follows what is in flight.
        if self.leases.len() > 1024 && self.leases.len() > 4 * self.pending.len() {
            let (pending, remote) = (&self.pending, self.remote.is_some());
            self.leases.retain(|&(_, seq, attempt)| running(pending, remote, seq, attempt));
        }
    }

    /// Whether the group has no member (then its backlog stays in the log instead of its buffer).
    pub(super) fn is_memberless(&self) -> bool {
        self.members.is_empty()
    }

    /// The deadline of the oldest running lease.
    pub(super) fn next_lease(&self) -> Option<Millis> {
        self.leases.iter().find(|&&(_, seq, attempt)| self.lease_running(seq, attempt)).map(|&(at, _, _)| at)
    }

    /// Whether the oldest queued lease is due by `now` (it may turn out settled).
    pub(super) fn has_due_lease(&self, now: Millis) -> bool {
        self.leases.front().is_some_and(|&(at, _, _)| at <= now)
    }

    /// Takes the leases due by `now` off the front: (seq, attempt) of each still running.
    pub(super) fn due_leases(&mut self, now: Millis) -> Vec<(u64, u32)> {
        let mut due = Vec::new();
        while let Some(&(at, seq, attempt)) = self.leases.front() {
            if at > now {
                break;
            }
            self.leases.pop_front();
            if self.lease_running(seq, attempt) {
                due.push((seq, attempt));
            }
        }
        due
    }

    /// Whether any member belongs to the group.
    pub(super) fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    /// Free in-flight slots over all unpaused members: how much a publish can hand over at once.
    pub(super) fn member_room(&self, consumers: &Slab<Consumer>) -> usize {
        if !self.redeliver.is_empty() {
            return 0;
        }
        self.members
            .iter()
            .filter_map(|&id| match consumers.get(id) {
                Some(Consumer { paused: false, kind: ConsumerKind::Member(m), .. }) => {
                    Some(m.max_in_flight.saturating_sub(m.in_flight))
                }
                _ => None,
            })
            .sum()
    }
}

/// See [`Group::lease_running`].
fn running(pending: &FxHashMap<u64, Pending>, remote: bool, seq: u64, attempt: u32) -> bool {
    pending.get(&seq).is_some_and(|p| remote || (p.attempt == attempt && p.delivered_at.is_some()))
}

fn member_mut(consumers: &mut Slab<Consumer>, id: u32) -> Option<&mut Member> {
    match consumers.get_mut(id) {
        Some(Consumer { kind: ConsumerKind::Member(m), .. }) => Some(m),
        _ => None,
    }
}

impl Bus {
    /// The consumer group `name` on `channel`, created with `options` if it does not exist
    /// (an existing group keeps its options).
    pub fn group(&mut self, channel: ChannelId, name: &str, options: GroupOptions) -> Result<u32, BusError> {
        validate(name)?;
        check_capacity(options.capacity)?;
        check_ms(options.visibility, "visibilityTimeout", false)?;
        if options.max_deliveries == 0 {
            return Err(BusError::InvalidOption { option: "maxDeliveries", reason: "must be at least 1" });
        }
        let ch = self.channel_ref(channel)?;
        let (log, bound) = (&ch.log, ch.transport.is_some());
        if let Some(&id) = self.group_names.get(&(channel, name.into())) {
            return Ok(id);
        }
        let mut feed = Feed::new(start_cursor(log, options.start), options.capacity, options.overflow);
        // A remote group never reads the mirror log: the broker feeds it.
        if !bound {
            feed.fill(log);
        }
        let group = Group {
            channel,
            name: name.into(),
            feed,
            options,
            members: Vec::new(),
            next_member: 0,
            pending: FxHashMap::default(),
            leases: VecDeque::new(),
            redeliver: VecDeque::new(),
            stats: GroupStats::default(),
            remote: bound.then(Box::default),
        };
        let id = self
            .groups
            .insert(group)
            .ok_or(BusError::Capacity { what: "consumer groups", limit: crate::slab::MAX_ENTRIES })?;
        self.group_names.insert((channel, name.into()), id);
        self.channels[channel as usize].groups.push(id);
        Ok(id)
    }

    /// Deletes a group: its members are removed and its backlog and unacknowledged messages are
    /// discarded (the channel's log keeps its messages; a new group can replay them).
    pub fn delete_group(&mut self, group: u32) -> Result<(), BusError> {
        let g = self.groups.remove(group).ok_or(BusError::UnknownGroup(group))?;
        if let Some(r) = &g.remote {
            remote::release_all(&mut self.egress, group, r, &g.pending);
        }
        for member in g.members {
            if let Some(consumer) = self.consumers.remove(member) {
                if let Some(ep) = self.endpoints.get_mut(consumer.endpoint) {
                    ep.ready.retain(|&c| c != member);
                }
            }
        }
        self.channels[g.channel as usize].groups.retain(|&id| id != group);
        self.group_names.retain(|_, id| *id != group);
        self.room_epoch += 1;
        Ok(())
    }

    /// Adds a member on `endpoint` that holds at most `max_in_flight` unacknowledged messages.
    pub fn join(&mut self, group: u32, endpoint: u32, max_in_flight: usize) -> Result<u32, BusError> {
        check_capacity(max_in_flight)?;
        if self.groups.get(group).is_none() {
            return Err(BusError::UnknownGroup(group));
        }
        if self.endpoints.get(endpoint).is_none() {
            return Err(BusError::UnknownEndpoint(endpoint));
        }
        let member = Member { group, queue: VecDeque::new(), in_flight: 0, max_in_flight };
        let id = self.insert_consumer(endpoint, ConsumerKind::Member(member))?;
        if let Some(g) = self.groups.get_mut(group) {
            g.members.push(id);
        }
        self.dispatch(group);
        Ok(id)
    }

    /// A member left: what it held goes back for redelivery, in sequence order. When it failed
    /// (`ended`: its endpoint closed, or it was abandoned, at that time), what it was delivered
    /// `max_deliveries` times is dead-lettered instead: a consumer that dies on a message every
    /// time does not get it for ever. A member that leaves on purpose hands everything back.
    pub(super) fn release_member(&mut self, group: u32, member: u32, ended: Option<Millis>) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.members.retain(|&m| m != member);
        if g.remote.is_some() {
            self.remote_member_left(group, member);
            return;
        }
        let mut held: Vec<u64> =
            g.pending.iter().filter(|(_, p)| p.member == Some(member)).map(|(&seq, _)| seq).collect();
        held.sort_unstable();
        let max_deliveries = g.options.max_deliveries;
        let mut spent = Vec::new();
        for seq in held.into_iter().rev() {
            if let Some(p) = g.pending.get_mut(&seq) {
                if ended.is_some() && p.delivered_at.is_some() && p.deliveries >= max_deliveries {
                    spent.push(seq);
                    continue;
                }
                p.member = None;
                p.delivered_at = None;
                g.redeliver.push_front(seq);
                g.stats.redelivered += 1;
            }
        }
        if let Some(now) = ended {
            for seq in spent.into_iter().rev() {
                self.settle_dead(group, seq, "max-deliveries", now);
            }
        }
        self.dispatch(group);
    }

    /// Hands waiting messages (redeliveries first, then new ones by priority) to members with
    /// room, round-robin.
    pub(super) fn dispatch(&mut self, group: u32) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let log = &self.channels[g.channel as usize].log;
        // A remote group's only source is its inbox (`redeliver`), never the log.
        let feeds = g.remote.is_none();
        // Most calls come from acks of a caught-up group: nothing waits, so skip the member search.
        if g.redeliver.is_empty() && (!feeds || (g.feed.buffer.is_empty() && g.feed.cursor >= log.next_seq())) {
            return;
        }
        while !g.members.is_empty() {
            let count = g.members.len();
            let Some(index) = (0..count).map(|i| (g.next_member + i) % count).find(|&i| {
                matches!(self.consumers.get(g.members[i]), Some(Consumer { paused: false, kind: ConsumerKind::Member(m), .. }) if m.in_flight < m.max_in_flight)
            }) else {
                break;
            };
            let member = g.members[index];
            let seq = if let Some(seq) = g.redeliver.pop_front() {
                let attempt = next_token(&mut self.next_attempt);
                if let Some(p) = g.pending.get_mut(&seq) {
                    p.member = Some(member);
                    p.attempt = attempt;
                    p.delivered_at = None;
                }
                seq
            } else if let Some(item) = feeds.then(|| g.feed.next(log)).flatten() {
                let attempt = next_token(&mut self.next_attempt);
                let pending =
                    Pending { frame: item.frame, member: Some(member), attempt, deliveries: 0, delivered_at: None };
                g.pending.insert(item.seq, pending);
                item.seq
            } else {
                break;
            };
            if let Some(m) = member_mut(&mut self.consumers, member) {
                m.queue.push_back(seq);
                m.in_flight += 1;
            }
            g.next_member = (index + 1) % count;
            mark_ready(&mut self.consumers, &mut self.endpoints, member);
        }
    }

    /// Hands a member's assigned messages over; `Ok(true)` when none are left.
    pub(super) fn drain_member(&mut self, id: u32, w: &mut Writer<'_>, now: Millis) -> Result<bool, usize> {
        let Some(m) = member_mut(&mut self.consumers, id) else {
            return Ok(true);
        };
        let group = m.group;
        let Some(g) = self.groups.get_mut(group) else {
            return Ok(true);
        };
        let mut expired = Vec::new();
        let mut delivered = 0;
        let result = loop {
            let Some(seq) = m.queue.pop_front() else {
                break Ok(true);
            };
            let Some(p) = g.pending.get_mut(&seq) else {
                continue;
            };
            if p.member != Some(id) || p.delivered_at.is_some() {
                continue; // claimed by another member meanwhile
            }
            if g.remote.as_deref().is_some_and(|r| r.lease_over(seq, g.options.visibility, now)) {
                continue; // its lease from ingest is over: the next tick gives it back to the broker
            }
            let ttl_end = frame::expires_at(&p.frame);
            if ttl_end != 0.0 && ttl_end <= now {
                if let Some(p) = g.pending.remove(&seq) {
                    if let Some(t) = self.durable.as_deref_mut() {
                        t.touch(group, seq);
                    }
                    m.in_flight -= 1;
                    g.stats.expired += 1;
                    expired.push((seq, p.frame, p.deliveries));
                }
                continue;
            }
            if !w.fits(p.frame.len()) {
                let needed = p.frame.len();
                m.queue.push_front(seq);
                break full(w, needed).map(|_| false);
            }
            w.push(id, p.attempt, seq, &p.frame);
            p.delivered_at = Some(now);
            p.deliveries += 1;
            delivered += 1;
            if let Some(t) = self.durable.as_deref_mut() {
                t.handed_over(group, seq);
            }
            // A remote entry's lease runs from ingest (queued then), never from the hand-over.
            if g.remote.is_none() {
                let (deadline, attempt) = (now + g.options.visibility, p.attempt);
                g.push_lease(deadline, seq, attempt);
            }
        };
        g.stats.delivered += delivered;
        let channel = g.channel;
        let ch = &mut self.channels[channel as usize];
        ch.stats.delivered += delivered;
        ch.stats.expired += expired.len() as u64;
        if !expired.is_empty() {
            if self.groups.get(group).is_some_and(|g| g.remote.is_some()) {
                for (seq, frame, deliveries) in &expired {
                    self.remote_expired(group, *seq, frame, *deliveries);
                }
            } else if ch.options.dead_letter_expired {
                for (seq, frame, deliveries) in &expired {
                    self.dead_letter(channel, *seq, frame, "expired", *deliveries, now);
                }
            }
            self.dispatch(group);
        }
        result
    }

    /// Checks that `attempt` is the current delivery of `seq` to member `id`.
    fn current(&self, id: u32, seq: u64, attempt: u32) -> Result<u32, BusError> {
        let m = match self.consumers.get(id) {
            Some(Consumer { kind: ConsumerKind::Member(m), .. }) => m,
            // Ids are generational: a removed one was a member that has left (its deliveries
            // went back to the group) or whose group was deleted. Settling one is stale, as a
            // delivery's documentation promises; only an id never issued is unknown.
            None if self.consumers.was_removed(id) => return Err(BusError::StaleAck { seq, attempt, reason: LEFT }),
            _ => return Err(BusError::UnknownSubscription(id)),
        };
        let g = self.groups.get(m.group).ok_or(BusError::UnknownGroup(m.group))?;
        match g.pending.get(&seq) {
            Some(p) if p.member == Some(id) && p.attempt == attempt && p.delivered_at.is_some() => Ok(m.group),
            _ => Err(BusError::StaleAck { seq, attempt, reason: NOT_CURRENT }),
        }
    }

    /// Acknowledges a delivery: the message is done and will not be delivered again.
    pub fn ack(&mut self, id: u32, seq: u64, attempt: u32) -> Result<(), BusError> {
        let group = self.current(id, seq, attempt)?;
        if let Some(g) = self.groups.get_mut(group) {
            g.pending.remove(&seq);
            if let Some(t) = self.durable.as_deref_mut() {
                t.touch(group, seq);
            }
            if let Some(r) = g.remote.as_deref_mut() {
                r.settle(&mut self.egress, remote::ACK, group, seq, 0.0);
            }
            g.stats.acked += 1;
            self.room_epoch += 1;
            g.trim_leases();
        }
        if let Some(m) = member_mut(&mut self.consumers, id) {
            m.in_flight -= 1;
        }
        self.dispatch(group);
        Ok(())
    }

    /// Refuses a delivery. With `dead_letter_reason` the message goes straight to the
    /// dead-letter channel (a permanent failure); otherwise it is redelivered, after `delay` ms
    /// if given, or dead-lettered once it was delivered `max_deliveries` times.
    pub fn nack(
        &mut self,
        id: u32,
        seq: u64,
        attempt: u32,
        delay: Millis,
        dead_letter_reason: Option<&str>,
        now: Millis,
    ) -> Result<(), BusError> {
        check_ms(delay, "delay", true)?;
        let group = self.current(id, seq, attempt)?;
        if let Some(m) = member_mut(&mut self.consumers, id) {
            m.in_flight -= 1;
        }
        let g = self.groups.get_mut(group).ok_or(BusError::UnknownGroup(group))?;
        g.stats.nacked += 1;
        self.room_epoch += 1;
        let max_deliveries = g.options.max_deliveries;
        let p = g.pending.get_mut(&seq).ok_or(BusError::StaleAck { seq, attempt, reason: NOT_CURRENT })?;
        p.member = None;
        p.delivered_at = None;
        if dead_letter_reason.is_some() || p.deliveries >= max_deliveries {
            self.settle_dead(group, seq, dead_letter_reason.unwrap_or("max-deliveries"), now);
        } else if g.remote.is_some() {
            // Redelivery is the broker's: the entry goes back to it, to come back after `delay`.
            self.remote_release(group, seq, delay);
        } else if delay > 0.0 {
            let retry = next_token(&mut self.next_attempt);
            p.attempt = retry;
            self.timers.push(now + delay, TimerKind::Retry { group, seq, attempt: retry });
        } else {
            g.redeliver.push_back(seq);
            g.stats.redelivered += 1;
        }
        self.dispatch(group);
        Ok(())
    }

    /// Takes a pending message out of its group and into the dead-letter channel.
    pub(super) fn settle_dead(&mut self, group: u32, seq: u64, reason: &str, now: Millis) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let Some(p) = g.pending.remove(&seq) else {
            return;
        };
        if let Some(t) = self.durable.as_deref_mut() {
            t.touch(group, seq);
        }
        g.stats.dead_lettered += 1;
        let channel = g.channel;
        if g.remote.is_some() {
            self.remote_dead(group, seq, &p.frame, reason, p.deliveries);
            return;
        }
        self.dead_letter(channel, seq, &p.frame, reason, p.deliveries, now);
    }

    /// A lease ended for `seq` at `attempt`; stale ones do nothing. A remote group's lease is
    /// the entry's time here (from ingest): it ends whether the entry is delivered, assigned
    /// and not yet handed over, or waiting in the inbox, and the entry goes back to the broker.
    pub(super) fn lease_expired(&mut self, group: u32, seq: u64, attempt: u32, now: Millis) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let Some(p) = g.pending.get_mut(&seq) else {
            return;
        };
        let remote = g.remote.is_some();
        if !remote && (p.attempt != attempt || (p.member.is_some() && p.delivered_at.is_none())) {
            return; // superseded, or assigned and not yet delivered: no lease is running
        }
        if let Some(holder) = p.member.take() {
            p.delivered_at = None;
            if let Some(m) = member_mut(&mut self.consumers, holder) {
                m.in_flight -= 1;
            }
        } else if remote {
            // Waiting in the inbox; the oldest are at its front.
            if let Some(at) = g.redeliver.iter().position(|&s| s == seq) {
                g.redeliver.remove(at);
            }
        }
        // Only an entry delivered here can be at max deliveries: one waiting has the broker's
        // count less one, below the limit (above it, ingest dead-lettered it).
        if p.deliveries >= g.options.max_deliveries {
            self.settle_dead(group, seq, "max-deliveries", now);
        } else if g.remote.is_some() {
            self.remote_release(group, seq, 0.0);
        } else {
            g.redeliver.push_back(seq);
            g.stats.redelivered += 1;
        }
        self.dispatch(group);
    }

    /// A nacked message's retry delay ended: it becomes deliverable again.
    pub(super) fn retry_due(&mut self, group: u32, seq: u64, attempt: u32) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.pending.get(&seq).is_some_and(|p| p.attempt == attempt && p.member.is_none()) {
            g.redeliver.push_back(seq);
            g.stats.redelivered += 1;
            self.dispatch(group);
        }
    }

    /// Moves up to `max` delivered messages of `group` idle for at least `min_idle` ms from
    /// other members to member `id` (for a member that stopped without leaving). Returns how
    /// many it took. A deleted group is `UnknownGroup`; a member of another group (or none) is
    /// `UnknownSubscription`: a claim never moves another group's deliveries.
    pub fn claim(&mut self, group: u32, id: u32, min_idle: Millis, max: usize, now: Millis) -> Result<usize, BusError> {
        let g = self.groups.get_mut(group).ok_or(BusError::UnknownGroup(group))?;
        match self.consumers.get(id) {
            Some(Consumer { kind: ConsumerKind::Member(m), .. }) if m.group == group => {}
            _ => return Err(BusError::UnknownSubscription(id)),
        }
        let mut stale: Vec<u64> = g
            .pending
            .iter()
            .filter(|(_, p)| p.member != Some(id) && p.delivered_at.is_some_and(|t| now - t >= min_idle))
            .map(|(&seq, _)| seq)
            .collect();
        stale.sort_unstable();
        stale.truncate(max);
        for &seq in &stale {
            let Some(p) = g.pending.get_mut(&seq) else {
                continue;
            };
            if let Some(holder) = p.member {
                if let Some(old) = member_mut(&mut self.consumers, holder) {
                    old.in_flight -= 1;
                }
            }
            p.member = Some(id);
            p.delivered_at = None;
            p.attempt = next_token(&mut self.next_attempt);
            g.stats.redelivered += 1;
            if let Some(m) = member_mut(&mut self.consumers, id) {
                m.queue.push_back(seq);
                m.in_flight += 1;
            }
        }
        mark_ready(&mut self.consumers, &mut self.endpoints, id);
        Ok(stale.len())
    }

    /// The group's pending-entries list, in sequence order.
    pub fn pending(&self, group: u32, now: Millis) -> Result<Vec<PendingInfo>, BusError> {
        let g = self.groups.get(group).ok_or(BusError::UnknownGroup(group))?;
        let mut list: Vec<PendingInfo> = g
            .pending
            .iter()
            .map(|(&seq, p)| PendingInfo {
                seq,
                member: p.member.unwrap_or(u32::MAX),
                attempt: p.attempt,
                deliveries: p.deliveries,
                idle: p.delivered_at.map_or(0.0, |t| now - t),
            })
            .collect();
        list.sort_by_key(|p| p.seq);
        Ok(list)
    }

    /// Counters of one group.
    pub fn group_stats(&self, group: u32) -> Result<GroupStats, BusError> {
        let g = self.groups.get(group).ok_or(BusError::UnknownGroup(group))?;
        let log = &self.channels[g.channel as usize].log;
        let waiting = g.pending.values().filter(|p| p.member.is_none()).count() as u64;
        // A remote group's backlog beyond its inbox is the broker's.
        let unread = if g.remote.is_some() { 0 } else { g.feed.lag(log) };
        Ok(GroupStats {
            members: g.members.len() as u64,
            backlog: unread + waiting,
            pending: g.pending.len() as u64 - waiting,
            ..g.stats
        })
    }
}
