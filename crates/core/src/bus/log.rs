//! A channel's retained log: a total order of frames, trimmed by count, bytes and age.
//!
//! Frames are shared (`Arc`) between the log and the consumers' buffers: fan-out to N
//! consumers stores a message once, and a message still buffered or pending for a consumer
//! outlives its trimming from the log.

use std::collections::VecDeque;

pub use super::arena::Frame;
use crate::Millis;

/// Retention limits of one channel. A limit of 0 means "no limit" for count and bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Most messages kept.
    pub max_count: usize,
    /// Most frame bytes kept.
    pub max_bytes: usize,
    /// Oldest message age kept, in ms; `f64::INFINITY` keeps forever.
    pub max_age: Millis,
}

impl Default for Retention {
    fn default() -> Self {
        use crate::manifest::defaults;
        Self {
            max_count: defaults::RETENTION_MAX_COUNT,
            max_bytes: defaults::RETENTION_MAX_BYTES,
            max_age: defaults::RETENTION_MAX_AGE_MS,
        }
    }
}

/// One retained message; its sequence number is implied by its place in the log.
#[derive(Debug)]
pub struct Entry {
    /// When it was published, on the host clock.
    pub at: Millis,
    /// Its priority, 0 low … 3 critical.
    pub priority: u8,
    /// The frame as published (timestamp stamped).
    pub frame: Frame,
}

/// The retained log of one channel.
#[derive(Debug, Default)]
pub struct Log {
    entries: VecDeque<Entry>,
    next_seq: u64,
    bytes: usize,
    last_at: Millis,
}

impl Log {
    /// An empty log whose next append gets `seq` (a durable channel read back from disk).
    #[must_use]
    pub fn starting_at(seq: u64) -> Self {
        Self { next_seq: seq, ..Self::default() }
    }

    /// Appends a frame and returns its sequence number. `now` is kept monotone so that a
    /// host clock that steps back cannot break time-based replay.
    pub fn append(&mut self, frame: Frame, priority: u8, now: Millis) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_at = self.last_at.max(now);
        self.bytes += frame.len();
        self.entries.push_back(Entry { at: self.last_at, priority, frame });
        seq
    }

    /// The oldest sequence number left if `extra` more entries of `extra_bytes` were appended
    /// and the log trimmed to `limits` (count and bytes only: age does not grow with appends).
    #[must_use]
    pub fn first_seq_after(&self, extra: usize, extra_bytes: usize, limits: &Retention) -> u64 {
        let mut len = self.entries.len() + extra;
        let mut bytes = self.bytes + extra_bytes;
        let mut first = self.first_seq();
        for e in &self.entries {
            let over =
                (limits.max_count > 0 && len > limits.max_count) || (limits.max_bytes > 0 && bytes > limits.max_bytes);
            if !over {
                break;
            }
            len -= 1;
            bytes -= e.frame.len();
            first += 1;
        }
        first
    }

    /// Drops the oldest entries beyond the limits; returns how many were dropped.
    pub fn trim(&mut self, limits: &Retention, now: Millis) -> usize {
        let mut dropped = 0;
        while let Some(front) = self.entries.front() {
            let over_count = limits.max_count > 0 && self.entries.len() > limits.max_count;
            let over_bytes = limits.max_bytes > 0 && self.bytes > limits.max_bytes;
            let too_old = now - front.at > limits.max_age;
            if !(over_count || over_bytes || too_old) {
                break;
            }
            self.bytes -= front.frame.len();
            self.entries.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// The sequence number the next append gets.
    #[must_use]
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest retained sequence number (equal to `next_seq` when empty).
    #[must_use]
    pub fn first_seq(&self) -> u64 {
        self.next_seq - self.entries.len() as u64
    }

    /// The entry with sequence number `seq`, if still retained.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<&Entry> {
        let first = self.first_seq();
        if seq < first {
            return None;
        }
        self.entries.get((seq - first) as usize)
    }

    /// The first retained sequence number published at or after `time`.
    #[must_use]
    pub fn seq_at_time(&self, time: Millis) -> u64 {
        let idx = self.entries.partition_point(|e| e.at < time);
        self.first_seq() + idx as u64
    }

    /// Retained messages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Retained frame bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> Log {
        let mut log = Log::default();
        for i in 0..n {
            log.append(vec![0; 10].into(), 1, i as f64 * 10.0);
        }
        log
    }

    #[test]
    fn trims_by_count_bytes_and_age() {
        let mut log = log_of(10);
        let by_count = Retention { max_count: 4, max_bytes: 0, max_age: f64::INFINITY };
        assert_eq!(log.trim(&by_count, 90.0), 6);
        assert_eq!((log.first_seq(), log.len(), log.bytes()), (6, 4, 40));
        let by_bytes = Retention { max_count: 0, max_bytes: 25, max_age: f64::INFINITY };
        assert_eq!(log.trim(&by_bytes, 90.0), 2);
        let by_age = Retention { max_count: 0, max_bytes: 0, max_age: 5.0 };
        assert_eq!(log.trim(&by_age, 100.0), 2);
        assert!(log.is_empty());
        assert_eq!(log.first_seq(), 10);
    }

    #[test]
    fn finds_by_seq_and_time_and_keeps_time_monotone() {
        let mut log = log_of(5);
        log.append(vec![1].into(), 1, 0.0); // clock stepped back
        assert_eq!(log.get(5).unwrap().at, 40.0);
        assert_eq!(log.seq_at_time(15.0), 2);
        assert_eq!(log.seq_at_time(1e9), 6);
        assert!(log.get(6).is_none());
    }

    #[test]
    fn predicts_the_first_seq_after_appends() {
        let log = log_of(10);
        let limits = Retention { max_count: 10, max_bytes: 0, max_age: f64::INFINITY };
        assert_eq!(log.first_seq_after(0, 0, &limits), 0);
        assert_eq!(log.first_seq_after(3, 30, &limits), 3);
        let by_bytes = Retention { max_count: 0, max_bytes: 95, max_age: f64::INFINITY };
        assert_eq!(log.first_seq_after(1, 10, &by_bytes), 2);
    }
}
