//! Deduplication by message id within a time window: a producer that retries a publish with
//! the same id does not publish twice (effectively-once on top of at-least-once).

use std::collections::{HashMap, VecDeque};

use crate::Millis;

/// Ids seen within the window, oldest first.
#[derive(Debug, Default)]
pub struct Dedup {
    seen: HashMap<Box<[u8]>, Millis>,
    order: VecDeque<(Millis, Box<[u8]>)>,
}

impl Dedup {
    /// Whether `id` was seen within `window` ms before `now`; records it if not. Empty ids
    /// (derived by the host from the sequence number) are never duplicates.
    pub fn is_duplicate(&mut self, id: &[u8], window: Millis, now: Millis) -> bool {
        if id.is_empty() || window <= 0.0 {
            return false;
        }
        while let Some((at, _)) = self.order.front() {
            if now - *at < window {
                break;
            }
            if let Some((at, old)) = self.order.pop_front() {
                if self.seen.get(&old) == Some(&at) {
                    self.seen.remove(&old);
                }
            }
        }
        if self.seen.contains_key(id) {
            return true;
        }
        self.seen.insert(id.into(), now);
        self.order.push_back((now, id.into()));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_window_only() {
        let mut d = Dedup::default();
        assert!(!d.is_duplicate(b"a", 100.0, 0.0));
        assert!(d.is_duplicate(b"a", 100.0, 50.0));
        assert!(!d.is_duplicate(b"a", 100.0, 100.0));
        assert!(!d.is_duplicate(b"", 100.0, 100.0));
        assert!(!d.is_duplicate(b"", 100.0, 100.0));
        assert_eq!(d.seen.len(), 1);
    }
}
