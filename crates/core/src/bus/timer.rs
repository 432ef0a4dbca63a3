//! Deadlines the host asks the core about: visibility timeouts, retry delays and request
//! timeouts. The core never reads a clock; the host calls [`Bus::tick`] with `now` at (or
//! after) [`Bus::next_deadline`]. Stale entries (an ack came first) are skipped when they fire.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::deliver::EventKind;
use super::Bus;
use crate::Millis;

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
    /// A request's timeout.
    Request {
        /// The request's token.
        token: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Deadline(Millis);

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Deadline, TimerKind)>>,
}

impl Timers {
    /// Schedules `kind` at `at`.
    pub fn push(&mut self, at: Millis, kind: TimerKind) {
        self.heap.push(Reverse((Deadline(at), kind)));
    }

    fn pop_due(&mut self, now: Millis) -> Option<TimerKind> {
        let Reverse((Deadline(at), _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, kind))| kind)
    }

    fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((Deadline(at), _))| *at)
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
        let groups: Vec<u32> = self.groups.iter().map(|(id, _)| id).collect();
        for group in groups {
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
                TimerKind::Request { token } => {
                    if let Some(request) = self.requests.remove(&token) {
                        if let Some(ep) = self.endpoints.get_mut(request.endpoint) {
                            ep.event(EventKind::RequestTimeout, token, 0.0);
                        }
                    }
                }
            }
        }
        fired
    }
}
