//! The bus as both engines expose it: flat arguments (ids, numbers, byte batches) and flat
//! results (number arrays), so the N-API and wasm-bindgen glue are one line per call and the
//! conversions live once, here. The orders of the numbers in flat results are the manifest's
//! (`manifest::bus_wire`), which `ts/engines/manifest.ts` is generated from.

use crate::bus::{ChannelOptions, GroupOptions, Overflow, Retention, StartAt, SubscribeOptions};
use crate::error::BusError;
use crate::manifest::bus_wire as manifest;
use crate::{Bus, Millis};

/// Sets a channel's options; 0 count or bytes means unlimited, an infinite age keeps forever.
#[allow(clippy::too_many_arguments, reason = "flat arguments are the point: numbers cross the boundary cheaply")]
pub fn configure(
    bus: &mut Bus,
    channel: u32,
    max_count: f64,
    max_bytes: f64,
    max_age: f64,
    dedup_window: f64,
    dead_letter_expired: bool,
    now: Millis,
) -> Result<(), BusError> {
    if !(max_count >= 0.0 && max_bytes >= 0.0) {
        return Err(BusError::InvalidOption {
            option: "retention",
            reason: "maxCount and maxBytes must be numbers >= 0",
        });
    }
    let retention = Retention { max_count: max_count as usize, max_bytes: max_bytes as usize, max_age };
    bus.configure(channel, ChannelOptions { retention, dedup_window, dead_letter_expired }, now)
}

/// Largest buffer or in-flight limit: keeps capacity arithmetic (`capacity * 3`, `+ room`) far
/// from overflow on wasm32, where usize is 32 bits.
const MAX_CAPACITY: f64 = crate::manifest::limits::MAX_CAPACITY as f64;

fn capacity(value: f64) -> Result<usize, BusError> {
    if (1.0..=MAX_CAPACITY).contains(&value) && value.fract() == 0.0 {
        Ok(value as usize)
    } else {
        Err(BusError::InvalidOption { option: "capacity", reason: "must be a whole number from 1 to 268435456" })
    }
}

/// Subscribes `endpoint`: `mode`/`value` as in [`StartAt::from_code`], `overflow` as in
/// [`Overflow::from_code`].
pub fn subscribe(
    bus: &mut Bus,
    endpoint: u32,
    channel: u32,
    mode: u32,
    value: f64,
    buffer: f64,
    overflow: u32,
) -> Result<u32, BusError> {
    let options = SubscribeOptions {
        start: StartAt::from_code(mode, value)?,
        capacity: capacity(buffer)?,
        overflow: Overflow::from_code(overflow)?,
    };
    bus.subscribe(endpoint, channel, options)
}

/// Finds or creates a consumer group.
#[allow(clippy::too_many_arguments, reason = "flat arguments are the point: numbers cross the boundary cheaply")]
pub fn group(
    bus: &mut Bus,
    channel: u32,
    name: &str,
    mode: u32,
    value: f64,
    buffer: f64,
    overflow: u32,
    visibility: f64,
    max_deliveries: f64,
) -> Result<u32, BusError> {
    if !(max_deliveries >= 1.0 && max_deliveries <= f64::from(u32::MAX)) {
        return Err(BusError::InvalidOption { option: "maxDeliveries", reason: "must be a whole number >= 1" });
    }
    let options = GroupOptions {
        start: StartAt::from_code(mode, value)?,
        capacity: capacity(buffer)?,
        overflow: Overflow::from_code(overflow)?,
        visibility,
        max_deliveries: max_deliveries as u32,
    };
    bus.group(channel, name, options)
}

/// Adds a group member on `endpoint`.
pub fn join(bus: &mut Bus, endpoint: u32, group: u32, max_in_flight: f64) -> Result<u32, BusError> {
    bus.join(group, endpoint, capacity(max_in_flight)?)
}

fn seq(value: f64) -> Result<u64, BusError> {
    if value >= 0.0 && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(BusError::InvalidOption { option: "seq", reason: "must be a whole number >= 0" })
    }
}

/// Acks a delivery.
pub fn ack(bus: &mut Bus, member: u32, sequence: f64, attempt: u32) -> Result<(), BusError> {
    bus.ack(member, seq(sequence)?, attempt)
}

/// Nacks a delivery; an empty `dead_letter_reason` means "retry".
pub fn nack(
    bus: &mut Bus,
    member: u32,
    sequence: f64,
    attempt: u32,
    delay: f64,
    dead_letter_reason: &str,
    now: Millis,
) -> Result<(), BusError> {
    let reason = (!dead_letter_reason.is_empty()).then_some(dead_letter_reason);
    bus.nack(member, seq(sequence)?, attempt, delay, reason, now)
}

/// Claims idle deliveries of `group` for its member; returns how many.
pub fn claim(bus: &mut Bus, group: u32, member: u32, min_idle: f64, max: f64, now: Millis) -> Result<u32, BusError> {
    crate::bus::options_check_ms(min_idle, "minIdle")?;
    bus.claim(group, member, min_idle, capacity(max)?, now).map(|n| n as u32)
}

/// Fields per entry of [`pending`], in the manifest's `PENDING_FIELDS` order.
pub const PENDING_FIELDS: usize = manifest::PENDING_FIELDS.len();

/// A group's pending-entries list, flattened.
pub fn pending(bus: &Bus, group: u32, now: Millis) -> Result<Vec<f64>, BusError> {
    Ok(bus
        .pending(group, now)?
        .iter()
        .flat_map(|p| manifest::PENDING_FIELDS.iter().map(move |(_, get)| get(p)))
        .collect())
}

/// Channel counters, in the manifest's `CHANNEL_STATS` order.
pub fn channel_stats(bus: &Bus, channel: u32) -> Result<Vec<f64>, BusError> {
    let s = bus.stats(channel)?;
    Ok(manifest::CHANNEL_STATS.iter().map(|(_, get)| get(&s) as f64).collect())
}

/// Subscriber counters, in the manifest's `SUBSCRIBER_STATS` order.
pub fn subscriber_stats(bus: &Bus, id: u32) -> Result<Vec<f64>, BusError> {
    let s = bus.subscriber_stats(id)?;
    Ok(manifest::SUBSCRIBER_STATS.iter().map(|(_, get)| get(&s) as f64).collect())
}

/// Group counters, in the manifest's `GROUP_STATS` order.
pub fn group_stats(bus: &Bus, group: u32) -> Result<Vec<f64>, BusError> {
    let s = bus.group_stats(group)?;
    Ok(manifest::GROUP_STATS.iter().map(|(_, get)| get(&s) as f64).collect())
}

/// The next deadline, or [`NO_DEADLINE`](crate::manifest::NO_DEADLINE) when there is none.
#[must_use]
pub fn next_deadline(bus: &Bus) -> f64 {
    bus.next_deadline().unwrap_or(crate::manifest::NO_DEADLINE)
}

/// Fires the deadlines due by `now`, then drains `endpoint` into `out`. Returns minus the size
/// the next record needs when it does not fit; otherwise `2 * written + done`, where `done` (1)
/// says the endpoint has no records left, so the host needs no further call to find out
/// (egress is not a record: the host takes it with `drain_egress`).
pub fn drain(bus: &mut Bus, endpoint: u32, out: &mut [u8], now: Millis) -> f64 {
    bus.tick(now);
    match bus.drain(endpoint, out, now) {
        Ok(written) => (written * 2 + usize::from(!bus.has_records(endpoint))) as f64,
        Err(needed) => -(needed as f64),
    }
}

/// Binds a channel to transport `transport`, a whole number from 1 to 2^32 - 1.
pub fn bind(bus: &mut Bus, channel: u32, transport: f64) -> Result<(), BusError> {
    if !(transport >= 1.0 && transport <= f64::from(u32::MAX) && transport.fract() == 0.0) {
        return Err(BusError::InvalidArgument {
            argument: "transport",
            reason: "must be a transport id from 1 to 4294967295",
        });
    }
    bus.bind(channel, transport as u32)
}

/// Takes in records read from a transport; how many were applied.
pub fn ingest(bus: &mut Bus, batch: &[u8], now: Millis) -> Result<u32, BusError> {
    bus.ingest(batch, now)
}

/// How many more deliveries a group's members can take now.
pub fn group_room(bus: &Bus, group: u32) -> Result<u32, BusError> {
    bus.group_room(group).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// How many more records mirrored `channel` can take in now, at most `u32::MAX`; with none,
/// `endpoint` is woken once a subscriber takes some (see [`Bus::mirror_room_for`]).
pub fn mirror_room(bus: &mut Bus, endpoint: u32, channel: u32) -> Result<u32, BusError> {
    bus.mirror_room_for(endpoint, channel).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The egress records queued since the last call, or `None` when there are none.
pub fn drain_egress(bus: &mut Bus) -> Option<Vec<u8>> {
    bus.has_egress().then(|| bus.drain_egress())
}
