//! Armed timers of every run, ordered by deadline, so the host arms one host timer for the
//! earliest (`next_deadline`) and asks what is `due`. A timer stays until it is fired or
//! disarmed: `due` only reports. Each timer knows its frame, so a fire finds it at once.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use crate::{Deadline, Millis};

/// Deadlines and frames by (run, timer token), and the same ordered by deadline.
#[derive(Debug, Default)]
pub struct Timers {
    by_deadline: BTreeSet<(Deadline, u32, u32)>,
    by_timer: FxHashMap<(u32, u32), (Millis, u32)>,
}

impl Timers {
    /// Arms `timer` of `run`'s `frame` for `at`.
    pub fn arm(&mut self, run: u32, timer: u32, at: Millis, frame: u32) {
        self.by_deadline.insert((Deadline(at), run, timer));
        self.by_timer.insert((run, timer), (at, frame));
    }

    /// Disarms `timer` of `run`; its frame, if it was armed.
    pub fn disarm(&mut self, run: u32, timer: u32) -> Option<u32> {
        let (at, frame) = self.by_timer.remove(&(run, timer))?;
        self.by_deadline.remove(&(Deadline(at), run, timer));
        Some(frame)
    }

    /// `[run, timer, ...]` of every timer due at `now`, earliest first.
    pub fn due(&self, now: Millis) -> Vec<f64> {
        let mut out = Vec::new();
        if now.is_nan() {
            return out;
        }
        for &(Deadline(at), run, timer) in &self.by_deadline {
            if at > now {
                break;
            }
            out.push(f64::from(run));
            out.push(f64::from(timer));
        }
        out
    }

    /// The earliest deadline, if any.
    pub fn next(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(Deadline(at), _, _)| *at)
    }
}
