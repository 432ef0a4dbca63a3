//! Request/response: a request is published on a channel with a fresh reply token in its frame;
//! the responder's reply carries the token back and goes straight to the requester's endpoint.
//! No consumer on the channel: `NO_RESPONDER` at once. No reply in time: a `RequestTimeout`
//! event at the deadline. A reply after that is dropped and counted.

use super::group::Group;
use super::options::check_ms;
use super::{next_token, Bus, Frame};
use crate::error::BusError;
use crate::frame;
use crate::Millis;

/// A request waiting for its reply.
#[derive(Debug)]
pub(super) struct Request {
    /// The endpoint the reply goes to.
    pub(super) endpoint: u32,
    /// When it times out.
    pub(super) deadline: Millis,
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
        let has_member = ch.groups.iter().any(|&g| self.groups.get(g).is_some_and(Group::has_members));
        if ch.subscribers.is_empty() && !has_member {
            return Err(BusError::NoResponder { channel: self.name_of(header.channel) });
        }
        let room = self.check_room(&[(header.channel, 1, header.len)]);
        self.note_waiting(endpoint, &room);
        room?;
        let token = next_token(&mut self.next_token);
        let stored = self.channels[header.channel as usize].arena.store(batch, now, token);
        self.append(header.channel, &stored, now);
        self.after_append(header.channel, now);
        self.requests.insert(token, Request { endpoint, deadline: now + timeout });
        self.timers.add_request(now + timeout, token);
        Ok(token)
    }

    /// Delivers the single reply frame in `batch` to the requester. Returns `false` when the
    /// request already timed out (the reply is dropped and counted in `late_replies`).
    pub fn reply(&mut self, batch: &[u8]) -> Result<bool, BusError> {
        self.single_frame(batch, "a reply is exactly one frame")?;
        let token = frame::reply_token(batch);
        if token == 0 {
            return Err(BusError::NotAReply);
        }
        let Some(request) = self.requests.remove(&token) else {
            self.late_replies += 1;
            return Ok(false);
        };
        self.timers.cancel_request(request.deadline, token);
        if let Some(ep) = self.endpoints.get_mut(request.endpoint) {
            ep.reply(token, Frame::copy_from_slice(batch));
        }
        Ok(true)
    }

    /// Checks that `batch` holds exactly one valid frame.
    fn single_frame(&self, batch: &[u8], reason: &'static str) -> Result<frame::Header, BusError> {
        let header = self.read_header(batch, 0, 0)?;
        if header.len != batch.len() {
            return Err(BusError::MalformedFrame { index: 1, offset: header.len, reason });
        }
        Ok(header)
    }

    /// Requests still waiting for a reply.
    #[must_use]
    pub fn open_requests(&self) -> usize {
        self.requests.len()
    }
}
