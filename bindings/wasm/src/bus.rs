//! The bus as a JS class, on one endpoint (a wasm instance belongs to one thread). Deliveries
//! are written into a scratch buffer inside the instance's memory, which JS reads through a
//! view: no copy back out per drain. Conversions live in `orrery_core::bus::wire`.

use orrery_core::bus::wire;
use orrery_core::{Bus, BusConfig, MAIN_ENDPOINT};
use wasm_bindgen::prelude::*;

use crate::error::to_js;

const EP: u32 = MAIN_ENDPOINT;

/// One in-process bus.
#[wasm_bindgen]
pub struct WasmBus {
    bus: Bus,
    scratch: Vec<u8>,
}

#[wasm_bindgen]
impl WasmBus {
    /// A bus refusing frames over `max_message_bytes`.
    #[wasm_bindgen(constructor)]
    #[must_use]
    pub fn new(max_message_bytes: u32) -> Self {
        let config = BusConfig { max_message_bytes: max_message_bytes as usize, ..BusConfig::default() };
        Self { bus: Bus::new(config), scratch: Vec::new() }
    }

    /// The id of a channel, created on first use.
    pub fn channel(&mut self, name: &str) -> Result<u32, JsValue> {
        self.bus.channel(name).map_err(to_js)
    }

    /// The name behind a channel id.
    #[wasm_bindgen(js_name = channelName)]
    #[must_use]
    pub fn channel_name(&self, channel: u32) -> Option<String> {
        self.bus.channel_name(channel).map(str::to_owned)
    }

    /// Sets a channel's retention, dedup window and expired-message policy.
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    pub fn configure(
        &mut self,
        channel: u32,
        max_count: f64,
        max_bytes: f64,
        max_age: f64,
        dedup_window: f64,
        dead_letter_expired: bool,
        now: f64,
    ) -> Result<(), JsValue> {
        wire::configure(&mut self.bus, channel, max_count, max_bytes, max_age, dedup_window, dead_letter_expired, now)
            .map_err(to_js)
    }

    /// Publishes a batch of frames, all or nothing; returns how many were published.
    pub fn publish(&mut self, batch: &[u8], now: f64) -> Result<u32, JsValue> {
        self.bus.publish_from(EP, batch, now).map(|n| n as u32).map_err(to_js)
    }

    /// Subscribes to a channel.
    pub fn subscribe(
        &mut self,
        channel: u32,
        mode: u32,
        value: f64,
        buffer: f64,
        overflow: u32,
    ) -> Result<u32, JsValue> {
        wire::subscribe(&mut self.bus, EP, channel, mode, value, buffer, overflow).map_err(to_js)
    }

    /// Ends a subscription or group membership.
    pub fn unsubscribe(&mut self, id: u32) -> Result<(), JsValue> {
        self.bus.unsubscribe(id).map_err(to_js)
    }

    /// Makes a member leave because its consumer failed at `now` (see the core's `abandon`).
    pub fn abandon(&mut self, id: u32, now: f64) -> Result<(), JsValue> {
        self.bus.abandon(id, now).map_err(to_js)
    }

    /// Pauses or resumes a consumer.
    #[wasm_bindgen(js_name = setPaused)]
    pub fn set_paused(&mut self, id: u32, paused: bool) -> Result<(), JsValue> {
        self.bus.set_paused(id, paused).map_err(to_js)
    }

    /// Finds or creates a consumer group.
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    pub fn group(
        &mut self,
        channel: u32,
        name: &str,
        mode: u32,
        value: f64,
        buffer: f64,
        overflow: u32,
        visibility: f64,
        max_deliveries: f64,
    ) -> Result<u32, JsValue> {
        wire::group(&mut self.bus, channel, name, mode, value, buffer, overflow, visibility, max_deliveries)
            .map_err(to_js)
    }

    /// Deletes a group, its members and its unacknowledged messages.
    #[wasm_bindgen(js_name = deleteGroup)]
    pub fn delete_group(&mut self, group: u32) -> Result<(), JsValue> {
        self.bus.delete_group(group).map_err(to_js)
    }

    /// Joins a group.
    pub fn join(&mut self, group: u32, max_in_flight: f64) -> Result<u32, JsValue> {
        wire::join(&mut self.bus, EP, group, max_in_flight).map_err(to_js)
    }

    /// Acks a delivery.
    pub fn ack(&mut self, member: u32, seq: f64, attempt: u32) -> Result<(), JsValue> {
        wire::ack(&mut self.bus, member, seq, attempt).map_err(to_js)
    }

    /// Acks a run of deliveries in one call: `acks` holds (member, seq, attempt) triples. JS
    /// queues only acks that cannot be stale, so a refused one is counted, not thrown: the
    /// result is how many were refused.
    #[wasm_bindgen(js_name = ackMany)]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "ids and tokens JS took from the core")]
    pub fn ack_many(&mut self, acks: &[f64]) -> u32 {
        let refused =
            acks.chunks_exact(3).filter(|a| wire::ack(&mut self.bus, a[0] as u32, a[1], a[2] as u32).is_err()).count();
        u32::try_from(refused).unwrap_or(u32::MAX)
    }

    /// Nacks a delivery; a non-empty reason dead-letters it at once.
    pub fn nack(
        &mut self,
        member: u32,
        seq: f64,
        attempt: u32,
        delay: f64,
        reason: &str,
        now: f64,
    ) -> Result<(), JsValue> {
        wire::nack(&mut self.bus, member, seq, attempt, delay, reason, now).map_err(to_js)
    }

    /// Claims idle deliveries of a group for its member.
    pub fn claim(&mut self, group: u32, member: u32, min_idle: f64, max: f64, now: f64) -> Result<u32, JsValue> {
        wire::claim(&mut self.bus, group, member, min_idle, max, now).map_err(to_js)
    }

    /// A group's pending-entries list, flattened.
    pub fn pending(&self, group: u32, now: f64) -> Result<Vec<f64>, JsValue> {
        wire::pending(&self.bus, group, now).map_err(to_js)
    }

    /// Publishes a request; returns its reply token.
    pub fn request(&mut self, batch: &[u8], timeout: f64, now: f64) -> Result<u32, JsValue> {
        self.bus.request(EP, batch, timeout, now).map_err(to_js)
    }

    /// Sends a reply: 0 when its request already timed out, 1 when it was queued for the
    /// requester, 2 when the request was this bus's own (settled, not queued: JS resolves it), 3
    /// when it was another process's (the reply left as egress).
    pub fn reply(&mut self, batch: &[u8]) -> Result<u32, JsValue> {
        self.bus.reply_from(EP, batch).map(|r| r as u32).map_err(to_js)
    }

    /// Fires the deadlines due by `now`.
    pub fn tick(&mut self, now: f64) -> u32 {
        self.bus.tick(now) as u32
    }

    /// The next deadline, or the manifest's `NO_DEADLINE` (Infinity) when none is due.
    #[wasm_bindgen(js_name = nextDeadline)]
    #[must_use]
    pub fn next_deadline(&self) -> f64 {
        wire::next_deadline(&self.bus)
    }

    /// Writes up to `capacity` bytes of records into the scratch buffer; bytes written, or
    /// minus the size the next record needs. Read them at `scratchPtr()` before the next call.
    pub fn drain(&mut self, capacity: u32, now: f64) -> f64 {
        self.scratch.resize(capacity as usize, 0);
        wire::drain(&mut self.bus, EP, &mut self.scratch, now)
    }

    /// Where the scratch buffer starts in the instance's memory.
    #[wasm_bindgen(js_name = scratchPtr)]
    #[must_use]
    pub fn scratch_ptr(&self) -> u32 {
        self.scratch.as_ptr() as u32
    }

    /// Whether records wait to be drained.
    #[wasm_bindgen(js_name = hasPending)]
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.bus.has_pending(EP)
    }

    /// Channel counters.
    pub fn stats(&self, channel: u32) -> Result<Vec<f64>, JsValue> {
        wire::channel_stats(&self.bus, channel).map_err(to_js)
    }

    /// Subscriber counters.
    #[wasm_bindgen(js_name = subscriberStats)]
    pub fn subscriber_stats(&self, id: u32) -> Result<Vec<f64>, JsValue> {
        wire::subscriber_stats(&self.bus, id).map_err(to_js)
    }

    /// Group counters.
    #[wasm_bindgen(js_name = groupStats)]
    pub fn group_stats(&self, group: u32) -> Result<Vec<f64>, JsValue> {
        wire::group_stats(&self.bus, group).map_err(to_js)
    }

    /// Replies dropped because their request had timed out.
    #[wasm_bindgen(js_name = lateReplies)]
    #[must_use]
    pub fn late_replies(&self) -> f64 {
        self.bus.late_replies() as f64
    }

    /// Binds a channel (and its dead-letter channel) to a transport, before its first use.
    pub fn bind(&mut self, channel: u32, transport: f64) -> Result<(), JsValue> {
        wire::bind(&mut self.bus, channel, transport).map_err(to_js)
    }

    /// Takes in records a transport's driver read from its broker; how many were applied.
    pub fn ingest(&mut self, batch: &[u8], now: f64) -> Result<u32, JsValue> {
        wire::ingest(&mut self.bus, batch, now).map_err(to_js)
    }

    /// The egress records queued since the last call (a copy JS owns), or undefined when none wait.
    #[wasm_bindgen(js_name = drainEgress)]
    pub fn drain_egress(&mut self) -> Option<Vec<u8>> {
        wire::drain_egress(&mut self.bus)
    }

    /// How many more deliveries a group's members can take now.
    #[wasm_bindgen(js_name = groupRoom)]
    pub fn group_room(&self, group: u32) -> Result<u32, JsValue> {
        wire::group_room(&self.bus, group).map_err(to_js)
    }

    /// How many more records a mirrored channel can take in now.
    #[wasm_bindgen(js_name = mirrorRoom)]
    pub fn mirror_room(&mut self, channel: u32) -> Result<u32, JsValue> {
        wire::mirror_room(&mut self.bus, EP, channel).map_err(to_js)
    }
}
