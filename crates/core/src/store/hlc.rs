//! Hybrid logical clock stamps. Every write carries one, with the writer's id, so replicas can
//! order concurrent writes the same way everywhere: by wall time, then by a logical counter
//! that breaks ties within one millisecond, then by writer name.

use serde::{Deserialize, Serialize};

use crate::Millis;

/// A hybrid logical clock reading: milliseconds of the host's wall clock plus a counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Wall-clock milliseconds (the largest seen, never going backwards).
    pub wall: u64,
    /// Orders events within the same `wall` millisecond.
    pub logical: u32,
}

/// The largest wall a stamp may carry: what a JavaScript number holds exactly (2^53 - 1 ms,
/// some 285,000 years), so a stamp read back is the stamp written.
pub const MAX_WALL: u64 = (1 << 53) - 1;

impl Hlc {
    /// A stamp from host numbers, or `None` unless `wall` is a whole number in 0..=[`MAX_WALL`]
    /// and `logical` a whole number in 0..=2^32 - 1 (never rounded, wrapped or clamped).
    #[must_use]
    pub fn from_parts(wall: f64, logical: f64) -> Option<Self> {
        let whole = |n: f64, max: f64| n.is_finite() && n >= 0.0 && n <= max && n.fract() == 0.0;
        (whole(wall, MAX_WALL as f64) && whole(logical, f64::from(u32::MAX)))
            .then_some(Self { wall: wall as u64, logical: logical as u32 })
    }
}

/// A store's clock: it never goes backwards, whatever the host's time does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    last: Hlc,
}

/// The host's time as a wall, held to [`MAX_WALL`]: a host clock gone wild (1e300) must not
/// push stamps past what JavaScript reads back exactly.
fn wall_of(now: Millis) -> u64 {
    if now.is_finite() && now > 0.0 {
        (now as u64).min(MAX_WALL)
    } else {
        0
    }
}

impl Clock {
    /// The clock's last reading.
    #[must_use]
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A stamp for a local event at host time `now`: later than every stamp issued or observed.
    pub fn tick(&mut self, now: Millis) -> Hlc {
        let wall = wall_of(now);
        self.last = if wall > self.last.wall { Hlc { wall, logical: 0 } } else { Self::after(self.last) };
        self.last
    }

    /// A stamp for applying a remote event stamped `remote`: later than both it and every local
    /// stamp, so causality holds across replicas.
    pub fn observe(&mut self, remote: Hlc, now: Millis) -> Hlc {
        let wall = wall_of(now);
        let high = self.last.max(remote);
        self.last = if wall > high.wall { Hlc { wall, logical: 0 } } else { Self::after(high) };
        self.last
    }

    /// Moves the clock to at least `seen` (after loading state stamped by it).
    pub fn witness(&mut self, seen: Hlc) {
        self.last = self.last.max(seen);
    }

    fn after(at: Hlc) -> Hlc {
        match at.logical.checked_add(1) {
            Some(logical) => Hlc { wall: at.wall, logical },
            None => Hlc { wall: at.wall.saturating_add(1), logical: 0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_goes_backwards_and_breaks_ties() {
        let mut clock = Clock::default();
        let a = clock.tick(100.0);
        let b = clock.tick(100.0);
        let c = clock.tick(50.0);
        assert_eq!(a, Hlc { wall: 100, logical: 0 });
        assert!(a < b && b < c);
        let remote = Hlc { wall: 500, logical: 7 };
        let d = clock.observe(remote, 120.0);
        assert!(d > remote && d > c);
        assert!(clock.tick(120.0) > d);
        assert_eq!(clock.tick(1000.0), Hlc { wall: 1000, logical: 0 });
    }

    #[test]
    fn a_wild_host_clock_stays_within_what_js_reads_exactly() {
        let mut clock = Clock::default();
        assert_eq!(clock.tick(1e300).wall, MAX_WALL);
        assert_eq!(clock.observe(Hlc { wall: MAX_WALL, logical: u32::MAX }, 1e300).wall, MAX_WALL + 1);
    }

    #[test]
    fn stamps_from_host_numbers_are_checked_not_converted() {
        assert_eq!(Hlc::from_parts(5.0, 7.0), Some(Hlc { wall: 5, logical: 7 }));
        assert_eq!(
            Hlc::from_parts(MAX_WALL as f64, f64::from(u32::MAX)),
            Some(Hlc { wall: MAX_WALL, logical: u32::MAX })
        );
        for (wall, logical) in [
            (2f64.powi(64), 0.0),
            (1e300, 0.0),
            (2f64.powi(53), 0.0),
            (-1.0, 0.0),
            (1.5, 0.0),
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (0.0, -1.0),
            (0.0, 1.5),
            (0.0, 2f64.powi(32)),
            (0.0, f64::NAN),
        ] {
            assert_eq!(Hlc::from_parts(wall, logical), None, "{wall} {logical}");
        }
    }
}
