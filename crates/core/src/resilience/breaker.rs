//! A circuit breaker per target: closed (calls pass), open (calls are refused until a
//! cool-down ends), half-open (a few probe calls decide between closing and opening again).
//! Every transition is recorded for the host to report as an event.

use crate::Millis;

/// A breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failures_to_open: u32,
    /// How long an open breaker refuses calls (ms).
    pub cool_down: Millis,
    /// Calls let through at once while half-open.
    pub probes: u32,
    /// Consecutive probe successes that close it again.
    pub successes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        use crate::manifest::defaults;
        Self {
            failures_to_open: defaults::BREAKER_FAILURES,
            cool_down: defaults::BREAKER_COOL_DOWN_MS,
            probes: defaults::BREAKER_PROBES,
            successes_to_close: defaults::BREAKER_SUCCESSES,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// A few probe calls pass.
    HalfOpen,
}

/// A refused call: try again at `retry_at` (host ms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refused {
    /// When a call may pass again (the end of the cool-down, or now when probes are busy).
    pub retry_at: Millis,
}

/// One target's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    failures: u32,
    successes: u32,
    in_flight: u32,
    open_until: Millis,
    transitions: Vec<(BreakerState, BreakerState, Millis)>,
}

impl Breaker {
    /// A closed breaker.
    #[must_use]
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            failures: 0,
            successes: 0,
            in_flight: 0,
            open_until: 0.0,
            transitions: Vec::new(),
        }
    }

    fn move_to(&mut self, to: BreakerState, now: Millis) {
        if self.state != to {
            self.transitions.push((self.state, to, now));
            self.state = to;
        }
        self.failures = 0;
        self.successes = 0;
        self.in_flight = 0;
    }

    /// Moves an open breaker whose cool-down has ended to half-open.
    pub fn tick(&mut self, now: Millis) {
        if self.state == BreakerState::Open && now >= self.open_until {
            self.move_to(BreakerState::HalfOpen, now);
        }
    }

    /// The state at `now`.
    pub fn state(&mut self, now: Millis) -> BreakerState {
        self.tick(now);
        self.state
    }

    /// When an open breaker turns half-open, or infinity.
    #[must_use]
    pub fn next_deadline(&self) -> Millis {
        if self.state == BreakerState::Open {
            self.open_until
        } else {
            f64::INFINITY
        }
    }

    /// Asks to make a call: `Ok` lets it through (report its outcome with
    /// [`Breaker::success`] or [`Breaker::failure`]).
    pub fn allow(&mut self, now: Millis) -> Result<(), Refused> {
        self.tick(now);
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => Err(Refused { retry_at: self.open_until }),
            BreakerState::HalfOpen if self.in_flight < self.config.probes => {
                self.in_flight += 1;
                Ok(())
            }
            BreakerState::HalfOpen => Err(Refused { retry_at: now }),
        }
    }

    /// A call let through succeeded.
    pub fn success(&mut self, now: Millis) {
        match self.state {
            BreakerState::Closed => self.failures = 0,
            BreakerState::HalfOpen => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.successes += 1;
                if self.successes >= self.config.successes_to_close {
                    self.move_to(BreakerState::Closed, now);
                }
            }
            // An outcome arriving after the breaker opened (a slow call) changes nothing.
            BreakerState::Open => {}
        }
    }

    /// A call let through ended with no verdict (its caller gave up): it no longer holds a
    /// half-open breaker's probe.
    pub fn release(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.in_flight = self.in_flight.saturating_sub(1);
        }
    }

    /// A call let through failed.
    pub fn failure(&mut self, now: Millis) {
        match self.state {
            BreakerState::Closed => {
                self.failures += 1;
                if self.failures >= self.config.failures_to_open {
                    self.open(now);
                }
            }
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Open => {}
        }
    }

    fn open(&mut self, now: Millis) {
        self.open_until = now + self.config.cool_down;
        self.move_to(BreakerState::Open, now);
    }

    /// The transitions since the last call, oldest first: (from, to, when).
    pub fn take_transitions(&mut self) -> Vec<(BreakerState, BreakerState, Millis)> {
        std::mem::take(&mut self.transitions)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use BreakerState::{Closed, HalfOpen, Open};

    fn config() -> BreakerConfig {
        BreakerConfig { failures_to_open: 3, cool_down: 1_000.0, probes: 1, successes_to_close: 2 }
    }

    #[test]
    fn opens_after_failures_cools_down_and_probes_before_closing() {
        let mut b = Breaker::new(config());
        for t in 0..2 {
            b.allow(f64::from(t)).unwrap();
            b.failure(f64::from(t));
        }
        b.allow(2.0).unwrap();
        b.success(2.0);
        for t in 3..6 {
            b.allow(f64::from(t)).unwrap();
            b.failure(f64::from(t));
        }
        assert_eq!(b.state(6.0), Open, "three in a row, not three in all");
        assert_eq!(b.allow(500.0), Err(Refused { retry_at: 1_005.0 }));
        assert_eq!(b.next_deadline(), 1_005.0);
        b.allow(1_005.0).unwrap();
        assert_eq!(b.allow(1_005.0), Err(Refused { retry_at: 1_005.0 }), "one probe at a time");
        b.success(1_006.0);
        b.allow(1_007.0).unwrap();
        b.failure(1_008.0);
        assert_eq!(b.state(1_008.0), Open, "a failed probe opens it again");
        b.allow(2_008.0).unwrap();
        b.success(2_008.0);
        b.allow(2_009.0).unwrap();
        b.success(2_009.0);
        assert_eq!(b.state(2_009.0), Closed);
        let moves: Vec<_> = b.take_transitions().into_iter().map(|(from, to, _)| (from, to)).collect();
        assert_eq!(
            moves,
            vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Open), (Open, HalfOpen), (HalfOpen, Closed)]
        );
        assert!(b.take_transitions().is_empty());
    }

    proptest! {
        #[test]
        fn never_lets_calls_through_while_open_or_past_its_probes(ops in prop::collection::vec((0u8..3, 0.0f64..400.0), 1..300)) {
            let mut b = Breaker::new(config());
            let mut now = 0.0;
            let mut in_flight = 0u32;
            for (op, advance) in ops {
                now += advance;
                match op {
                    0 => {
                        let state = b.state(now);
                        let allowed = b.allow(now).is_ok();
                        if state == Open {
                            prop_assert!(!allowed);
                        }
                        if allowed {
                            in_flight += 1;
                        }
                        if b.state(now) == HalfOpen {
                            prop_assert!(in_flight <= config().probes || state == Closed);
                        }
                    }
                    1 if in_flight > 0 => {
                        in_flight -= 1;
                        b.success(now);
                    }
                    2 if in_flight > 0 => {
                        in_flight -= 1;
                        b.failure(now);
                    }
                    _ => {}
                }
                if b.state(now) == Open {
                    // Calls still out when it opened report later; none may pass until then.
                    prop_assert!(b.allow(now).is_err());
                    in_flight = 0;
                }
            }
            for (from, to, _) in b.take_transitions() {
                prop_assert!(matches!((from, to), (Closed | HalfOpen, Open) | (Open, HalfOpen) | (HalfOpen, Closed)));
            }
        }
    }
}
