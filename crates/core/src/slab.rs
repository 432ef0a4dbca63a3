//! A slab with generational `u32` ids: slot index in the low 20 bits, generation in the high 12,
//! so an id kept after its entry was removed never reaches a newer entry in the same slot.

const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
const GEN_MASK: u32 = (1 << (32 - SLOT_BITS)) - 1;

/// The slot index of an id: dense, below [`MAX_ENTRIES`], shared by every generation of the slot.
#[must_use]
pub fn index(id: u32) -> usize {
    (id & SLOT_MASK) as usize
}

/// Most live entries a slab holds.
pub const MAX_ENTRIES: usize = 1 << SLOT_BITS;

#[derive(Debug)]
struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

/// Entries addressed by generational ids.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T> Slab<T> {
    /// Stores `value`; `None` when [`MAX_ENTRIES`] are live.
    pub fn insert(&mut self, value: T) -> Option<u32> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots.len() < MAX_ENTRIES => {
                self.slots.push(Slot { generation: 0, value: None });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let entry = &mut self.slots[slot as usize];
        entry.value = Some(value);
        self.len += 1;
        Some(((entry.generation & GEN_MASK) << SLOT_BITS) | slot)
    }

    fn slot_of(&self, id: u32) -> Option<&Slot<T>> {
        self.slots.get((id & SLOT_MASK) as usize).filter(|s| (s.generation & GEN_MASK) == id >> SLOT_BITS)
    }

    /// The entry behind `id`, if live.
    #[must_use]
    pub fn get(&self, id: u32) -> Option<&T> {
        self.slot_of(id)?.value.as_ref()
    }

    /// The entry behind `id`, if live.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut T> {
        let generation = self.slot_of(id)?.generation;
        let slot = &mut self.slots[(id & SLOT_MASK) as usize];
        debug_assert_eq!(slot.generation, generation);
        slot.value.as_mut()
    }

    /// Removes and returns the entry behind `id`.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        self.slot_of(id)?;
        let slot = &mut self.slots[(id & SLOT_MASK) as usize];
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id & SLOT_MASK);
        self.len -= 1;
        Some(value)
    }

    /// Whether `id` was issued here and its entry has since been removed (rather than never
    /// issued at all). Exact until a slot is reused 4,096 times (its generation wraps).
    #[must_use]
    pub fn was_removed(&self, id: u32) -> bool {
        // Removing bumps the slot's generation; an id of the slot's current generation is live,
        // or, on an empty slot, is the one the next insert will hand out.
        self.slots.get((id & SLOT_MASK) as usize).is_some_and(|s| (s.generation & GEN_MASK) != id >> SLOT_BITS)
    }

    /// Live entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every live entry with its id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_ref().map(|v| (((s.generation & GEN_MASK) << SLOT_BITS) | i as u32, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_ids_do_not_reach_a_reused_slot() {
        let mut slab = Slab::default();
        let a = slab.insert('a').unwrap();
        assert_eq!(slab.remove(a), Some('a'));
        let b = slab.insert('b').unwrap();
        assert_ne!(a, b);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&'b'));
        assert!(slab.was_removed(a));
        assert!(!slab.was_removed(b));
        assert!(!slab.was_removed(b + 1), "never issued");
        assert_eq!(slab.iter().collect::<Vec<_>>(), vec![(b, &'b')]);
        assert_eq!(slab.len(), 1);
    }
}
