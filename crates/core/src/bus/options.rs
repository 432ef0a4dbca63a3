//! Options of channels, subscribers and consumer groups.

use super::log::Retention;
use crate::error::BusError;
use crate::manifest::defaults;
use crate::Millis;

/// What happens when a message arrives for a consumer whose buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// The publish is refused with `BACKPRESSURE` (block = true): the host waits and retries.
    Block,
    /// The oldest buffered message is dropped (counted) to make room.
    DropOldest,
    /// The publish is refused with `BACKPRESSURE`; nothing is published.
    Reject,
}

impl Overflow {
    /// From the boundary's code: 0 block, 1 drop-oldest, 2 reject.
    pub fn from_code(code: u32) -> Result<Self, BusError> {
        match code {
            0 => Ok(Self::Block),
            1 => Ok(Self::DropOldest),
            2 => Ok(Self::Reject),
            _ => Err(BusError::InvalidOption { option: "overflow", reason: "must be block, drop-oldest or reject" }),
        }
    }
}

/// Where a new consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartAt {
    /// Only messages published after it joined.
    Latest,
    /// The oldest retained message.
    Earliest,
    /// A given sequence number (or the oldest retained, if that one is gone).
    Seq(u64),
    /// The first retained message published at or after a time.
    Time(Millis),
}

impl StartAt {
    /// From the boundary's code: 0 latest, 1 earliest, 2 sequence `value`, 3 time `value`.
    pub fn from_code(mode: u32, value: f64) -> Result<Self, BusError> {
        match mode {
            0 => Ok(Self::Latest),
            1 => Ok(Self::Earliest),
            2 if value >= 0.0 && value.fract() == 0.0 => Ok(Self::Seq(value as u64)),
            3 if value.is_finite() => Ok(Self::Time(value)),
            _ => Err(BusError::InvalidOption {
                option: "from",
                reason: "must be latest, earliest, a sequence number >= 0 or a time",
            }),
        }
    }
}

/// Options of a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelOptions {
    /// Retention of the log.
    pub retention: Retention,
    /// Messages whose id was seen on this channel within this many ms are dropped (0: off).
    pub dedup_window: Millis,
    /// Whether messages that expire before delivery go to the dead-letter channel.
    pub dead_letter_expired: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self { retention: Retention::default(), dedup_window: 0.0, dead_letter_expired: false }
    }
}

/// Options of a broadcast subscriber.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SubscribeOptions {
    /// Where it starts.
    pub start: StartAt,
    /// Most messages buffered for it before its overflow policy applies.
    pub capacity: usize,
    /// What a full buffer does.
    pub overflow: Overflow,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self { start: StartAt::Latest, capacity: defaults::BUFFER, overflow: Overflow::Block }
    }
}

/// Options of a consumer group, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupOptions {
    /// Where it starts.
    pub start: StartAt,
    /// Most messages buffered (not yet given to a member) before its overflow policy applies.
    pub capacity: usize,
    /// What a full buffer does.
    pub overflow: Overflow,
    /// How long a member holds a delivered message before it is redelivered, in ms.
    pub visibility: Millis,
    /// Deliveries after which an unacknowledged message is dead-lettered.
    pub max_deliveries: u32,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            start: StartAt::Latest,
            capacity: defaults::BUFFER,
            overflow: Overflow::Block,
            visibility: defaults::VISIBILITY_TIMEOUT_MS,
            max_deliveries: defaults::MAX_DELIVERIES,
        }
    }
}

/// Checks a duration option: a number of ms, > 0 (or >= 0 with `zero_ok`); NaN is refused.
pub fn check_ms(value: Millis, option: &'static str, zero_ok: bool) -> Result<(), BusError> {
    let ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if ok {
        Ok(())
    } else if zero_ok {
        Err(BusError::InvalidOption { option, reason: "must be a number of ms >= 0" })
    } else {
        Err(BusError::InvalidOption { option, reason: "must be a number of ms > 0" })
    }
}

/// Checks the numbers of consumer options.
pub fn check_capacity(capacity: usize) -> Result<(), BusError> {
    if capacity == 0 {
        return Err(BusError::InvalidOption { option: "capacity", reason: "must be at least 1" });
    }
    Ok(())
}
