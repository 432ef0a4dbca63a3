//! A token bucket: up to `capacity` calls at once, refilled at `rate` tokens a second.

use crate::Millis;

/// A token-bucket rate limiter on host time.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    /// Tokens added per millisecond.
    rate: f64,
    tokens: f64,
    last: Millis,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens, refilled at `per_second` tokens a second.
    #[must_use]
    pub fn new(capacity: f64, per_second: f64, now: Millis) -> Self {
        let capacity = capacity.max(0.0);
        Self { capacity, rate: per_second.max(0.0) / 1000.0, tokens: capacity, last: now }
    }

    fn refill(&mut self, now: Millis) {
        if now > self.last {
            self.tokens = (self.tokens + (now - self.last) * self.rate).min(self.capacity);
            self.last = now;
        }
    }

    /// Takes `n` tokens if there are that many; otherwise takes none and says when there will
    /// be (host milliseconds; infinity if never: `n` exceeds the capacity or nothing refills).
    pub fn try_take(&mut self, n: f64, now: Millis) -> Result<(), Millis> {
        self.refill(now);
        // A hair of tolerance: at the time `Err` names, rounding may leave the refill a few
        // ulps short of `n`.
        if self.tokens + 1e-9 >= n {
            self.tokens = (self.tokens - n).max(0.0);
            return Ok(());
        }
        if n > self.capacity || self.rate == 0.0 {
            return Err(f64::INFINITY);
        }
        Err(self.last + (n - self.tokens) / self.rate)
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Millis) -> f64 {
        self.refill(now);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bursts_up_to_capacity_then_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(3.0, 10.0, 0.0);
        for _ in 0..3 {
            assert!(bucket.try_take(1.0, 0.0).is_ok());
        }
        assert_eq!(bucket.try_take(1.0, 0.0), Err(100.0), "one token every 100 ms");
        assert!(bucket.try_take(1.0, 99.0).is_err());
        assert!(bucket.try_take(1.0, 100.0).is_ok());
        assert_eq!(bucket.try_take(4.0, 10_000.0), Err(f64::INFINITY), "more than it can ever hold");
        assert_eq!(bucket.available(10_000.0), 3.0, "never above capacity");
    }

    proptest! {
        #[test]
        fn never_lets_more_through_than_capacity_plus_refill(steps in prop::collection::vec((0.0f64..50.0, 0.5f64..2.0), 1..200)) {
            let mut bucket = TokenBucket::new(5.0, 20.0, 0.0);
            let mut now = 0.0;
            let mut taken = 0.0;
            for (advance, n) in steps {
                now += advance;
                if let Err(at) = bucket.try_take(n, now) {
                    prop_assert!(at > now);
                    prop_assert!(bucket.try_take(n, at).is_ok(), "available at the time it named");
                    now = at;
                }
                taken += n;
                prop_assert!(taken <= 5.0 + now * 20.0 / 1000.0 + 1e-9);
            }
        }
    }
}
