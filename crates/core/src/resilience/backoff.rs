//! Exponential backoff with jitter: the delay before retry `attempt` (1 = the first retry).

use super::random::SplitMix64;
use crate::Millis;

/// How much randomness spreads retries that failed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the exponential delay.
    None,
    /// Uniform in `[0, delay]` ("full jitter"): spreads a thundering herd the most.
    Full,
    /// Uniform in `[delay / 2, delay]`: keeps at least half the wait.
    Equal,
}

/// `base * factor^(attempt - 1)`, capped at `max`, then jittered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first retry's delay (ms).
    pub base: Millis,
    /// Growth per attempt (>= 1).
    pub factor: f64,
    /// The largest delay (ms).
    pub max: Millis,
    /// How the delay is randomized.
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: 100.0, factor: 2.0, max: 30_000.0, jitter: Jitter::Full }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (1-based; 0 is treated as 1).
    pub fn delay(&self, attempt: u32, random: &mut SplitMix64) -> Millis {
        let exponent = f64::from(attempt.max(1) - 1);
        let delay = (self.base * self.factor.powf(exponent)).min(self.max).max(0.0);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => delay * random.next_f64(),
            Jitter::Equal => delay / 2.0 + delay / 2.0 * random.next_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let mut random = SplitMix64::new(3);
        let exact = Backoff { base: 100.0, factor: 2.0, max: 1_000.0, jitter: Jitter::None };
        let delays: Vec<f64> = (1..=6).map(|a| exact.delay(a, &mut random)).collect();
        assert_eq!(delays, vec![100.0, 200.0, 400.0, 800.0, 1_000.0, 1_000.0]);
        let full = Backoff { jitter: Jitter::Full, ..exact };
        let equal = Backoff { jitter: Jitter::Equal, ..exact };
        for attempt in 1..10 {
            let cap = exact.delay(attempt, &mut random);
            assert!((0.0..=cap).contains(&full.delay(attempt, &mut random)));
            assert!((cap / 2.0..=cap).contains(&equal.delay(attempt, &mut random)));
        }
        // Huge attempts stay capped rather than overflowing.
        assert_eq!(exact.delay(u32::MAX, &mut random), 1_000.0);
    }
}
