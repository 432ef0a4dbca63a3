//! Request/response: a request is published on a channel with a fresh reply token in its frame;
//! the responder's reply carries the token back and goes straight to the requester's endpoint.
//! No consumer on the channel: `NO_RESPONDER` at once. No reply in time: a `RequestTimeout`
//! event at the deadline. A reply after that is dropped and counted.
//!
//! On a channel bound to a transport the request leaves as egress (`remote.rs`) and is kept
//! here the same way; whether a process anywhere responds cannot be known at once, so a
//! request nobody answers times out instead of failing `NO_RESPONDER`.

use super::group::Group;
use super::options::check_ms;
use super::{next_token, remote, Bus, Frame};
use crate::error::BusError;
use crate::frame;
use crate::names::ChannelId;
use crate::Millis;

/// What became of a reply (its code is what the engines return to the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Replied {
    /// Its request had timed out (or was answered already): dropped, counted as late.
    Late = 0,
    /// Queued for the requester's endpoint, which its drain hands it to.
    Queued = 1,
    /// The request was the replying endpoint's own: settled, not queued; the host resolves it.
    Own = 2,
    /// The request was another process's: the reply left as egress for it.
    Remote = 3,
}

/// A request waiting for its reply.
#[derive(Debug)]
pub(super) struct Request {
    /// The endpoint the reply goes to.
    pub(super) endpoint: u32,
    /// When it times out.
    pub(super) deadline: Millis,
    /// Its channel (a reply from another process takes this process's id of it).
    pub(super) channel: ChannelId,
    /// Set when the request is another process's, answered here under this token: where the
    /// reply goes. Its deadline is then the route's expiry, which fires no event.
    pub(super) route: Option<Box<remote::Route>>,
}

impl Bus {
    /// Publishes the single frame in `batch` as a request from `endpoint`, answered within
    /// `timeout` ms; returns the reply token the reply will carry.
    pub fn request(&mut self, endpoint: u32, batch: &[u8], timeout: Millis, now: Millis) -> Result<u32, BusError> {
        check_ms(timeout, "timeout", false)?;
        if self.endpoints.get(endpoint).is_none() {
            return Err(BusError::UnknownEndpoint(endpoint));
        }
        let header = self.single_frame(batch, "a request is exactly one frame")?;
        let ch = self.channel_ref(header.channel)?;
        if ch.transport.is_some() {
            // Whether another process responds is not known here: no NO_RESPONDER, no room check.
            let token = next_token(&mut self.next_token);
            self.channels[header.channel as usize].stats.published += 1;
            remote::push_request(&mut self.egress, batch, token, timeout, now);
            self.open_request(token, endpoint, header.channel, timeout, now);
            return Ok(token);
        }
        let has_member = ch.groups.iter().any(|&g| self.groups.get(g).is_some_and(Group::has_members));
        if ch.subscribers.is_empty() && !has_member {
            return Err(BusError::NoResponder { channel: self.name_of(header.channel) });
        }
        let room = self.check_room(&[(header.channel, 1, header.len)]);
        self.note_waiting(endpoint, &room);
        room?;
        let token = next_token(&mut self.next_token);
        let ch = &mut self.channels[header.channel as usize];
        ch.stats.published += 1;
        let stored = ch.arena.store(batch, now, token);
        self.append(header.channel, &stored, now);
        self.after_append(header.channel, now);
        self.open_request(token, endpoint, header.channel, timeout, now);
        Ok(token)
    }

    fn open_request(&mut self, token: u32, endpoint: u32, channel: ChannelId, timeout: Millis, now: Millis) {
        self.insert_request(token, Request { endpoint, deadline: now + timeout, channel, route: None });
    }

    /// Delivers the single reply frame in `batch` to the requester. Returns `false` when the
    /// request already timed out (the reply is dropped and counted in `late_replies`).
    pub fn reply(&mut self, batch: &[u8]) -> Result<bool, BusError> {
        self.settle_reply(None, batch).map(|replied| replied != Replied::Late)
    }

    /// Like [`Bus::reply`], sent from `endpoint`. A reply to `endpoint`'s own request is not
    /// queued: the request is settled here (its deadline cancelled) and [`Replied::Own`] tells
    /// the host to resolve it from the frame it holds, which saves a copy and a drain.
    pub fn reply_from(&mut self, endpoint: u32, batch: &[u8]) -> Result<Replied, BusError> {
        self.settle_reply(Some(endpoint), batch)
    }

    fn settle_reply(&mut self, own: Option<u32>, batch: &[u8]) -> Result<Replied, BusError> {
        self.single_frame(batch, "a reply is exactly one frame")?;
        let token = frame::reply_token(batch);
        if token == 0 {
            return Err(BusError::NotAReply);
        }
        let Some(request) = self.requests.remove(&token) else {
            self.late_replies += 1;
            return Ok(Replied::Late);
        };
        self.timers.cancel_request(request.deadline, token);
        if let Some(route) = request.route {
            self.routes.closed(&route);
            remote::push_reply(&mut self.egress, &route, request.channel, batch);
            return Ok(Replied::Remote);
        }
        if own == Some(request.endpoint) {
            return Ok(Replied::Own);
        }
        if let Some(ep) = self.endpoints.get_mut(request.endpoint) {
            ep.reply(token, Frame::copy_from_slice(batch));
        }
        Ok(Replied::Queued)
    }

    /// Checks that `batch` holds exactly one valid frame.
    fn single_frame(&self, batch: &[u8], reason: &'static str) -> Result<frame::Header, BusError> {
        let header = self.read_header(batch, 0, 0)?;
        if header.len != batch.len() {
            return Err(BusError::MalformedFrame { index: 1, offset: header.len, reason });
        }
        Ok(header)
    }

    /// Requests of this process still waiting for a reply.
    #[must_use]
    pub fn open_requests(&self) -> usize {
        self.requests.values().filter(|r| r.route.is_none()).count()
    }

    /// Requests of other processes this one may still answer (`remote.rs`; at most
    /// [`remote::MAX_OPEN_ROUTES`]).
    #[must_use]
    pub fn open_routes(&self) -> usize {
        self.routes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{Overflow, StartAt, SubscribeOptions};

    fn frame_on(ch: u32, payload: &[u8], token: u32) -> Vec<u8> {
        let mut f = frame::encode(ch, 1, 0.0, b"", payload);
        frame::set_reply_token(&mut f, token);
        f
    }

    fn responder(bus: &mut Bus, endpoint: u32, ch: u32) {
        let options = SubscribeOptions { start: StartAt::Latest, capacity: 16, overflow: Overflow::Block };
        bus.subscribe(endpoint, ch, options).unwrap();
    }

    #[test]
    fn a_reply_to_the_senders_own_request_is_settled_not_queued() {
        let mut bus = Bus::default();
        let ch = bus.channel("svc").unwrap();
        responder(&mut bus, 0, ch);
        let token = bus.request(0, &frame_on(ch, b"q", 0), 100.0, 0.0).unwrap();
        assert_eq!(bus.reply_from(0, &frame_on(ch, b"a", token)).unwrap(), Replied::Own);
        assert_eq!((bus.open_requests(), bus.next_deadline()), (0, None));
        // Nothing is queued for the requester: the host resolves the request itself.
        let mut out = vec![0u8; 4096];
        let _ = bus.drain(0, &mut out, 0.0);
        assert!(!bus.has_pending(0));
        // A second answer to it is late, as from any responder.
        assert_eq!(bus.reply_from(0, &frame_on(ch, b"b", token)).unwrap(), Replied::Late);
        assert_eq!(bus.late_replies(), 1);
    }

    #[test]
    fn a_reply_to_another_endpoints_request_is_queued_for_it() {
        let mut bus = Bus::default();
        let other = bus.open_endpoint().unwrap();
        let ch = bus.channel("svc").unwrap();
        responder(&mut bus, other, ch);
        let token = bus.request(0, &frame_on(ch, b"q", 0), 100.0, 0.0).unwrap();
        assert_eq!(bus.reply_from(other, &frame_on(ch, b"a", token)).unwrap(), Replied::Queued);
        assert!(bus.has_pending(0));
        // A reply after the timeout is late wherever it comes from.
        let token = bus.request(0, &frame_on(ch, b"q", 0), 100.0, 0.0).unwrap();
        bus.tick(100.0);
        assert_eq!(bus.reply_from(0, &frame_on(ch, b"a", token)).unwrap(), Replied::Late);
    }
}
