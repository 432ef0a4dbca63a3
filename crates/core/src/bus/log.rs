//! A channel's retained log: a total order of frames, trimmed by count, bytes and age.
//!
//! Frames are shared (reference-counted `Bytes`) between the log and the consumers' buffers: fan-out to N
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

/// The retained log of one channel.
///
/// A retained message is its frame alone (a message's sequence number is its place in the
/// log, its priority the frame's own). Publish times are kept once per run of messages
/// published at the same time: a busy channel publishes thousands a millisecond, so a message
/// costs the 32 bytes of its frame's handle and next to nothing of its time; a quiet one, or
/// one whose times are finer than milliseconds (a broker's), a run per message, costs what a
/// time beside every frame would.
#[derive(Debug, Default)]
pub struct Log {
    frames: VecDeque<Frame>,
    /// (first sequence number, publish time) of each run of messages published at one time,
    /// oldest first; the first run may begin before the oldest message retained.
    times: VecDeque<(u64, Millis)>,
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
    pub fn append(&mut self, frame: Frame, now: Millis) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.last_at = self.last_at.max(now);
        if self.times.back().is_none_or(|&(_, at)| at != self.last_at) {
            self.times.push_back((seq, self.last_at));
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        seq
    }

    /// When the newest message was published (the time `append` kept for it).
    #[must_use]
    pub fn last_at(&self) -> Millis {
        self.last_at
    }

    /// The oldest sequence number left if `extra` more entries of `extra_bytes` were appended
    /// and the log trimmed to `limits` (count and bytes only: age does not grow with appends).
    #[must_use]
    pub fn first_seq_after(&self, extra: usize, extra_bytes: usize, limits: &Retention) -> u64 {
        let mut len = self.frames.len() + extra;
        let mut bytes = self.bytes + extra_bytes;
        let mut first = self.first_seq();
        for f in &self.frames {
            let over =
                (limits.max_count > 0 && len > limits.max_count) || (limits.max_bytes > 0 && bytes > limits.max_bytes);
            if !over {
                break;
            }
            len -= 1;
            bytes -= f.len();
            first += 1;
        }
        first
    }

    /// Drops the oldest messages beyond the limits; returns how many were dropped. The count and
    /// bytes limits drop none at or after `keep_from` (a mirror's unread messages, see
    /// `Bus::keep_from`; `u64::MAX` keeps nothing back); age drops any.
    pub fn trim(&mut self, limits: &Retention, now: Millis, keep_from: u64) -> usize {
        let mut dropped = 0;
        while let (Some(front), Some(&(_, at))) = (self.frames.front(), self.times.front()) {
            let held = self.first_seq() >= keep_from;
            let over_count = !held && limits.max_count > 0 && self.frames.len() > limits.max_count;
            let over_bytes = !held && limits.max_bytes > 0 && self.bytes > limits.max_bytes;
            let too_old = now - at > limits.max_age;
            if !(over_count || over_bytes || too_old) {
                break;
            }
            self.bytes -= front.len();
            self.frames.pop_front();
            dropped += 1;
            // The oldest run is over once the next one begins at the oldest message left.
            let first = self.first_seq();
            while self.times.get(1).is_some_and(|&(seq, _)| seq <= first) {
                self.times.pop_front();
            }
        }
        if self.frames.is_empty() {
            self.times.clear();
        }
        debug_assert!(self.times.front().is_none_or(|&(seq, _)| seq <= self.first_seq()));
        debug_assert!(self.times.get(1).is_none_or(|&(seq, _)| seq > self.first_seq()));
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
        self.next_seq - self.frames.len() as u64
    }

    /// The frame with sequence number `seq`, if still retained.
    #[must_use]
    pub fn get(&self, seq: u64) -> Option<&Frame> {
        let first = self.first_seq();
        if seq < first {
            return None;
        }
        self.frames.get((seq - first) as usize)
    }

    /// When the message with sequence number `seq` was published, if it is still retained.
    #[must_use]
    pub fn at(&self, seq: u64) -> Option<Millis> {
        self.get(seq)?;
        let run = self.times.partition_point(|&(first, _)| first <= seq);
        Some(self.times[run - 1].1)
    }

    /// The first retained sequence number published at or after `time`.
    #[must_use]
    pub fn seq_at_time(&self, time: Millis) -> u64 {
        let run = self.times.partition_point(|&(_, at)| at < time);
        self.times.get(run).map_or(self.next_seq, |&(seq, _)| seq.max(self.first_seq()))
    }

    /// Retained messages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Retained frame bytes.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Frame bytes of the retained messages from `seq` on (all of them below the oldest).
    #[must_use]
    pub fn bytes_from(&self, seq: u64) -> usize {
        let skip = usize::try_from(seq.saturating_sub(self.first_seq())).unwrap_or(usize::MAX);
        self.frames.iter().skip(skip).map(bytes::Bytes::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: u64) -> Log {
        let mut log = Log::default();
        for i in 0..n {
            log.append(vec![0; 10].into(), i as f64 * 10.0);
        }
        log
    }

    #[test]
    fn trims_by_count_bytes_and_age() {
        let mut log = log_of(10);
        let by_count = Retention { max_count: 4, max_bytes: 0, max_age: f64::INFINITY };
        assert_eq!(log.trim(&by_count, 90.0, u64::MAX), 6);
        assert_eq!((log.first_seq(), log.len(), log.bytes()), (6, 4, 40));
        let by_bytes = Retention { max_count: 0, max_bytes: 25, max_age: f64::INFINITY };
        assert_eq!(log.trim(&by_bytes, 90.0, u64::MAX), 2);
        let by_age = Retention { max_count: 0, max_bytes: 0, max_age: 5.0 };
        assert_eq!(log.trim(&by_age, 100.0, u64::MAX), 2);
        assert!(log.is_empty());
        assert_eq!(log.first_seq(), 10);
    }

    #[test]
    fn finds_by_seq_and_time_and_keeps_time_monotone() {
        let mut log = log_of(5);
        log.append(vec![1].into(), 0.0); // clock stepped back
        assert_eq!(log.at(5), Some(40.0));
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

    #[test]
    fn messages_published_at_one_time_share_a_run() {
        let mut log = Log::default();
        for now in [10.0, 10.0, 10.0, 20.0, 20.0, 5.0, 30.0, 30.0] {
            log.append(vec![0; 10].into(), now);
        }
        assert_eq!(log.times.len(), 3, "the stepped-back clock joins the run at 20");
        let ats: Vec<_> = (0..9).map(|s| log.at(s)).collect();
        assert_eq!(ats[..8], [10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 30.0, 30.0].map(Some));
        assert_eq!(ats[8], None);
        assert_eq!([0.0, 15.0, 20.0, 25.0, 31.0].map(|t| log.seq_at_time(t)), [0, 3, 3, 6, 8]);
        // Trimmed into the middle of a run, the run stays and answers for what is left of it.
        log.trim(&Retention { max_count: 4, max_bytes: 0, max_age: f64::INFINITY }, 30.0, u64::MAX);
        assert_eq!((log.first_seq(), log.at(3), log.at(4), log.times.len()), (4, None, Some(20.0), 2));
        assert_eq!([0.0, 15.0, 25.0].map(|t| log.seq_at_time(t)), [4, 4, 6]);
        log.trim(&Retention { max_count: 0, max_bytes: 0, max_age: 20.0 }, 45.0, u64::MAX);
        assert_eq!((log.first_seq(), log.times.len()), (6, 1));
        log.trim(&Retention { max_count: 0, max_bytes: 0, max_age: 0.0 }, 45.0, u64::MAX);
        assert!(log.is_empty() && log.times.is_empty());
        log.append(vec![0; 10].into(), 40.0);
        assert_eq!((log.at(8), log.seq_at_time(0.0), log.seq_at_time(41.0)), (Some(40.0), 8, 9));
    }

    proptest::proptest! {
        /// Appends frames of several sizes at random times (repeats, steps back) and trims by
        /// count, bytes and age; every question agrees with a plain list of (seq, time, size).
        #[test]
        fn answers_as_a_plain_list_does(
            start in 0u64..5,
            ops in proptest::collection::vec((0u8..4, 0u8..5, 0usize..6), 1..200),
            probes in proptest::collection::vec(0u8..60, 1..8),
        ) {
            let mut log = Log::starting_at(start);
            let mut model: Vec<(u64, f64, usize)> = Vec::new();
            let (mut now, mut last, mut next) = (0.0f64, 0.0f64, start);
            let over = |model: &[(u64, f64, usize)], limits: &Retention, now: f64, extra: usize, extra_bytes: usize| {
                let bytes: usize = model.iter().map(|m| m.2).sum::<usize>() + extra_bytes;
                let len = model.len() + extra;
                model.first().is_some_and(|&(_, at, _)| {
                    (limits.max_count > 0 && len > limits.max_count)
                        || (limits.max_bytes > 0 && bytes > limits.max_bytes)
                        || now - at > limits.max_age
                })
            };
            for (kind, step, keep) in ops {
                if kind < 3 {
                    // Appends, the clock moving on by 0..4 ms, or back by 1.
                    now = if step == 4 { now - 1.0 } else { now + f64::from(step) };
                    let size = 10 + usize::from(step);
                    log.append(vec![0; size].into(), now);
                    last = last.max(now);
                    model.push((next, last, size));
                    next += 1;
                } else {
                    let limits = match step % 3 {
                        0 => Retention { max_count: keep.max(1), max_bytes: 0, max_age: f64::INFINITY },
                        1 => Retention { max_count: 0, max_bytes: 12 * keep.max(1), max_age: f64::INFINITY },
                        _ => Retention { max_count: 0, max_bytes: 0, max_age: keep as f64 },
                    };
                    // What one more message of 12 bytes would leave (count and bytes only).
                    let mut after = model.clone();
                    let no_age = Retention { max_age: f64::INFINITY, ..limits };
                    while over(&after, &no_age, now, 1, 12) {
                        after.remove(0);
                    }
                    let want = after.first().map_or(next, |m| m.0);
                    proptest::prop_assert_eq!(log.first_seq_after(1, 12, &limits), want);
                    let dropped = log.trim(&limits, now, u64::MAX);
                    let before = model.len();
                    while over(&model, &limits, now, 0, 0) {
                        model.remove(0);
                    }
                    proptest::prop_assert_eq!(dropped, before - model.len());
                }
                let first = model.first().map_or(next, |m| m.0);
                proptest::prop_assert_eq!((log.first_seq(), log.next_seq(), log.len()), (first, next, model.len()));
                proptest::prop_assert_eq!(log.bytes(), model.iter().map(|m| m.2).sum::<usize>());
                for &(seq, at, size) in &model {
                    proptest::prop_assert_eq!(log.at(seq), Some(at));
                    proptest::prop_assert_eq!(log.get(seq).map(|f| f.as_ref().len()), Some(size));
                }
                proptest::prop_assert_eq!(log.at(next), None);
                for &t in &probes {
                    let t = f64::from(t);
                    let want = model.iter().find(|m| m.1 >= t).map_or(next, |m| m.0);
                    proptest::prop_assert_eq!(log.seq_at_time(t), want);
                }
                proptest::prop_assert!(log.times.len() <= model.len());
            }
        }
    }
}
