//! A consumer's bounded buffer: four FIFO lanes, one per priority, drained highest first.

use std::collections::VecDeque;

use super::log::Frame;

/// One buffered message.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its sequence number in the channel.
    pub seq: u64,
    /// The frame (shared with the log and other consumers).
    pub frame: Frame,
}

/// Four priority lanes; `pop` takes from the highest non-empty lane, FIFO within it.
#[derive(Debug, Default)]
pub struct PriorityBuffer {
    lanes: [VecDeque<Item>; 4],
    len: usize,
}

impl PriorityBuffer {
    /// Adds `item` at the back of its priority's lane.
    pub fn push(&mut self, priority: u8, item: Item) {
        self.lanes[usize::from(priority.min(3))].push_back(item);
        self.len += 1;
    }

    /// The next item: highest priority first, oldest first within a priority.
    pub fn pop(&mut self) -> Option<Item> {
        let item = self.lanes.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.len -= 1;
        Some(item)
    }

    /// Puts an item back at the front of its lane (it could not be handed over this time).
    pub fn unpop(&mut self, priority: u8, item: Item) {
        self.lanes[usize::from(priority.min(3))].push_front(item);
        self.len += 1;
    }

    /// Removes the oldest item of any priority (the `drop-oldest` overflow policy).
    pub fn pop_oldest(&mut self) -> Option<Item> {
        let lane =
            self.lanes.iter_mut().filter(|l| !l.is_empty()).min_by_key(|l| l.front().map_or(u64::MAX, |i| i.seq))?;
        let item = lane.pop_front()?;
        self.len -= 1;
        Some(item)
    }

    /// The lowest buffered sequence number (each lane is in sequence order).
    #[must_use]
    pub fn min_seq(&self) -> Option<u64> {
        self.lanes.iter().filter_map(|l| l.front().map(|i| i.seq)).min()
    }

    /// Whether `seq` is buffered (tests only: a walk of every lane).
    #[cfg(test)]
    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.lanes.iter().any(|l| l.iter().any(|i| i.seq == seq))
    }

    /// Buffered items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is buffered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64) -> Item {
        Item { seq, frame: vec![].into() }
    }

    #[test]
    fn highest_priority_first_fifo_within() {
        let mut b = PriorityBuffer::default();
        for (seq, p) in [(0, 1), (1, 3), (2, 1), (3, 0), (4, 3)] {
            b.push(p, item(seq));
        }
        let order: Vec<u64> = std::iter::from_fn(|| b.pop().map(|i| i.seq)).collect();
        assert_eq!(order, vec![1, 4, 0, 2, 3]);
        assert!(b.is_empty());
    }

    #[test]
    fn drop_oldest_takes_the_lowest_seq_of_any_priority() {
        let mut b = PriorityBuffer::default();
        b.push(3, item(5));
        b.push(0, item(2));
        b.push(1, item(4));
        assert_eq!(b.pop_oldest().unwrap().seq, 2);
        assert_eq!(b.len(), 2);
    }
}
