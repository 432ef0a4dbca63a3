//! Broadcast subscriptions: a cursor into a channel's retained log per subscriber.
//!
//! The retained log doubles as every broadcast subscriber's queue, so fan-out to N
//! subscribers stores a message once, not N times.

use crate::error::BusError;

/// Identifies a subscription: slot index in the low 20 bits, slot generation in the high 12,
/// so a stale id never reaches a newer subscription that reuses the slot.
pub type SubscriptionId = u32;

const SLOT_BITS: u32 = 20;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// One broadcast subscriber.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The channel it reads.
    pub channel: u32,
    /// The next sequence number it has not been given.
    pub cursor: u64,
    /// Messages trimmed from the log before this subscriber received them.
    pub missed: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Whether it sits in the ready queue.
    pub queued: bool,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    sub: Option<Subscription>,
}

/// The table of live subscriptions.
#[derive(Debug, Default)]
pub struct Subscriptions {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Subscriptions {
    /// Stores a subscription and returns its id. Fails past 1,048,576 live subscriptions.
    pub fn insert(&mut self, sub: Subscription) -> Result<SubscriptionId, BusError> {
        let slot = if let Some(slot) = self.free.pop() {
            slot
        } else {
            if self.slots.len() > SLOT_MASK as usize {
                return Err(BusError::InvalidOption { option: "subscriptions", reason: "more than 2^20 live subscriptions" });
            }
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u32
        };
        let entry = &mut self.slots[slot as usize];
        entry.sub = Some(sub);
        Ok(((entry.generation & 0xfff) << SLOT_BITS) | slot)
    }

    fn slot(id: SubscriptionId) -> usize {
        (id & SLOT_MASK) as usize
    }

    /// The live subscription behind `id`.
    pub fn get_mut(&mut self, id: SubscriptionId) -> Result<&mut Subscription, BusError> {
        match self.slots.get_mut(Self::slot(id)) {
            Some(Slot { generation, sub: Some(sub) }) if (*generation & 0xfff) == id >> SLOT_BITS => Ok(sub),
            _ => Err(BusError::UnknownSubscription(id)),
        }
    }

    /// The live subscription behind `id`.
    pub fn get(&self, id: SubscriptionId) -> Result<&Subscription, BusError> {
        match self.slots.get(Self::slot(id)) {
            Some(Slot { generation, sub: Some(sub) }) if (*generation & 0xfff) == id >> SLOT_BITS => Ok(sub),
            _ => Err(BusError::UnknownSubscription(id)),
        }
    }

    /// Removes a subscription, freeing its slot for reuse under a new generation.
    pub fn remove(&mut self, id: SubscriptionId) -> Result<Subscription, BusError> {
        self.get(id)?;
        let slot = &mut self.slots[Self::slot(id)];
        let sub = slot.sub.take().ok_or(BusError::UnknownSubscription(id))?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id & SLOT_MASK);
        Ok(sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription { channel: 0, cursor: 0, missed: 0, delivered: 0, queued: false }
    }

    #[test]
    fn stale_ids_do_not_reach_a_reused_slot() {
        let mut subs = Subscriptions::default();
        let a = subs.insert(sub()).unwrap();
        subs.remove(a).unwrap();
        let b = subs.insert(sub()).unwrap();
        assert_ne!(a, b);
        assert_eq!(subs.get(a).unwrap_err(), BusError::UnknownSubscription(a));
        assert!(subs.get(b).is_ok());
        assert!(subs.remove(a).is_err());
    }
}
