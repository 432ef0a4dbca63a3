//! Orrery's core: the delivery semantics of the message bus as a state machine without I/O.
//!
//! The core never reads a clock, sleeps, spawns threads or touches sockets. The host passes
//! `now` (milliseconds) into every call that needs time. One core therefore runs unchanged in
//! Node (N-API), in a browser (WebAssembly) and under a simulated clock in tests.
//!
//! Messages cross the boundary as [`frame`]s: byte records whose fixed header the core reads
//! (channel, priority, expiry) and whose variable part (ids, headers, payload) it stores and
//! hands back untouched. Deliveries leave in batches through an [`bus::Outbox`], so a host
//! pays one boundary crossing per batch instead of one per message.

pub mod bus;
pub mod directory;
pub mod error;
pub mod frame;
pub mod manifest;
pub mod names;
pub mod resilience;
pub mod routing;
pub mod slab;
pub mod store;
pub mod workflow;

pub use bus::{Bus, BusConfig, ChannelOptions, GroupOptions, Overflow, StartAt, SubscribeOptions, MAIN_ENDPOINT};
pub use error::{BusError, Coded, RoutingError, StoreError, WorkflowError};
pub use names::ChannelId;
pub use store::{Store, StoreConfig};
pub use workflow::Workflows;

/// Milliseconds on the host's clock. The core only compares and adds them.
pub type Millis = f64;

/// A host time with a total order, for deadline heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadline(pub Millis);

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}
