//! Deadlines the host asks the core about: visibility timeouts, retry delays and request
//! timeouts. The core never reads a clock; the host calls [`Bus::tick`] with `now` at (or
//! after) [`Bus::next_deadline`]. Stale entries (an ack came first) are skipped when they fire.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use super::deliver::EventKind;
use super::Bus;
use crate::{Deadline, Millis};

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A nacked message's retry delay ends.
    Retry {
        /// Its group.
        group: u32,
        /// Its sequence number.
        seq: u64,
        /// The attempt the delay belongs to.
        attempt: u32,
    },
}

/// Deadlines: retry delays in a min-heap (they are rare, and a stale one costs a no-op when it
/// fires), request timeouts in an ordered set (one per request, removed when the reply comes,
/// so a busy request/response stream leaves no stale entries behind).
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Deadline, TimerKind)>>,
    requests: BTreeSet<(Deadline, u32)>,
}

impl Timers {
    /// Schedules `kind` at `at`.
    pub fn push(&mut self, at: Millis, kind: TimerKind) {
        self.heap.push(Reverse((Deadline(at), kind)));
    }

    /// Schedules the timeout of request `token` at `at`.
    pub fn add_request(&mut self, at: Millis, token: u32) {
        self.requests.insert((Deadline(at), token));
    }

    /// Cancels the timeout of request `token`, scheduled at `at`.
    pub fn cancel_request(&mut self, at: Millis, token: u32) {
        self.requests.remove(&(Deadline(at), token));
    }

    fn pop_due_request(&mut self, now: Millis) -> Option<u32> {
        let &(Deadline(at), token) = self.requests.first()?;
        if at > now {
            return None;
        }
        self.requests.pop_first();
        Some(token)
    }

    fn pop_due(&mut self, now: Millis) -> Option<TimerKind> {
        let Reverse((Deadline(at), _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, kind))| kind)
    }

    fn next(&self) -> Option<Millis> {
        let retry = self.heap.peek().map(|Reverse((Deadline(at), _))| *at);
        let request = self.requests.first().map(|(Deadline(at), _)| *at);
        retry.into_iter().chain(request).min_by(f64::total_cmp)
    }
}

impl Bus {
    /// The earliest deadline the host should call [`Bus::tick`] at, if any.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Millis> {
        self.groups.iter().filter_map(|(_, g)| g.next_lease()).chain(self.timers.next()).min_by(f64::total_cmp)
    }

    /// Fires every deadline due by `now`: expired leases are redelivered (or dead-lettered),
    /// delayed retries become deliverable, and timed-out requests are reported to their
    /// endpoint. Returns how many deadlines fired.
    pub fn tick(&mut self, now: Millis) -> usize {
        let mut fired = 0;
        // Every drain ticks: collect the groups only when some lease is due, not on every call.
        let due_groups: Vec<u32> = if self.groups.iter().any(|(_, g)| g.has_due_lease(now)) {
            self.groups.iter().filter(|(_, g)| g.has_due_lease(now)).map(|(id, _)| id).collect()
        } else {
            Vec::new()
        };
        for group in due_groups {
            let due = self.groups.get_mut(group).map(|g| g.due_leases(now)).unwrap_or_default();
            for (seq, attempt) in due {
                fired += 1;
                self.lease_expired(group, seq, attempt, now);
            }
        }
        while let Some(kind) = self.timers.pop_due(now) {
            fired += 1;
            match kind {
                TimerKind::Retry { group, seq, attempt } => self.retry_due(group, seq, attempt),
            }
        }
        while let Some(token) = self.timers.pop_due_request(now) {
            fired += 1;
            let Some(request) = self.requests.remove(&token) else {
                continue;
            };
            // Another process's request (a route) expires silently: that process reports it.
            if let Some(route) = &request.route {
                self.routes.closed(route);
            } else if let Some(ep) = self.endpoints.get_mut(request.endpoint) {
                ep.event(EventKind::RequestTimeout, token, 0.0);
            }
        }
        fired
    }
}
