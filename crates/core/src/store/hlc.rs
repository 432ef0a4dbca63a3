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

/// A store's clock: it never goes backwards, whatever the host's time does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    last: Hlc,
}

fn wall_of(now: Millis) -> u64 {
    if now.is_finite() && now > 0.0 {
        now as u64
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
            None => Hlc { wall: at.wall + 1, logical: 0 },
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
}
