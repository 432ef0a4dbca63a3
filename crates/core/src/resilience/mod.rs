//! Resilience primitives as state machines on host time: a token-bucket rate limiter, a
//! circuit breaker, exponential backoff with jitter, and a seeded random source. The agent
//! runtime (routing, retries, supervision) builds on them; each is deterministic given the
//! host's clock and seed, so a run under a fake clock replays exactly.

mod backoff;
mod breaker;
mod bucket;
mod random;

pub use backoff::{Backoff, Jitter};
pub use breaker::{Breaker, BreakerConfig, BreakerState, Refused};
pub use bucket::TokenBucket;
pub use random::SplitMix64;
