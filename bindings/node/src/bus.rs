//! The bus as a JS class: one endpoint of a (possibly shared) core, owning its lifetime, with
//! its colder calls as methods. The hot calls (publish, ack, request, reply, drain, deadlines)
//! are argument-free functions on the endpoint's slot instead (`bus_calls.rs`), and only there.
//! Conversions live in `orrery_core::bus::wire`.

use std::sync::Arc;

use napi::bindgen_prelude::{Function, Uint8Array, Uint8ArraySlice};
use napi_derive::napi;
use orrery_core::bus::wire;
use orrery_core::{Bus, BusConfig, BusError, MAIN_ENDPOINT};

use crate::bus_calls;
use crate::error::{to_js, Result};
use crate::shared::Shared;

/// One thread's endpoint of an in-process bus.
#[napi]
pub struct NativeBus {
    /// The core; `None` once closed. Closing lets go of it at once rather than when the JS object
    /// is collected: 5,000 Orrery create/close cycles kept 437 MiB resident waiting for finalizers.
    shared: Option<Arc<Shared>>,
    endpoint: u32,
    handle: u32,
    /// Its slot in this thread's registry of endpoints (the hot calls, `bus_calls.rs`).
    slot: u32,
}

impl Drop for NativeBus {
    fn drop(&mut self) {
        // The JS object is gone (collected, or its worker exited) without `close()`: close its
        // endpoint so its subscribers stop filling up and its unacked group messages are redelivered
        // (or dead-lettered, if delivered their maximum times).
        self.release();
    }
}

impl NativeBus {
    /// The core, or `CLOSED` after `close()`.
    pub(crate) fn core(&self) -> Result<&Arc<Shared>> {
        self.shared.as_ref().ok_or_else(|| to_js(BusError::Closed))
    }

    /// Lets go of the endpoint's slot (with the drain buffer it references), its waker, its
    /// endpoint in the core and its share of the core. Idempotent.
    fn release(&mut self) {
        if let Some(shared) = self.shared.take() {
            bus_calls::unregister(self.slot);
            self.slot = bus_calls::NO_SLOT;
            shared.detach(self.endpoint);
        }
    }
}

#[napi]
impl NativeBus {
    /// A new bus refusing frames over `max_message_bytes`; this thread is its main endpoint.
    #[napi(constructor, catch_unwind)]
    pub fn new(max_message_bytes: u32) -> Result<Self> {
        let (shared, handle) = Shared::create(Bus::new(BusConfig {
            max_message_bytes: max_message_bytes as usize,
            ..BusConfig::default()
        }));
        let slot = bus_calls::register(Arc::clone(&shared), MAIN_ENDPOINT).map_err(to_js)?;
        Ok(Self { shared: Some(shared), endpoint: MAIN_ENDPOINT, handle, slot })
    }

    /// Opens an endpoint of the bus behind `handle` (from `share()` on another thread).
    #[napi(factory, catch_unwind)]
    pub fn attach(handle: u32) -> Result<Self> {
        let shared = Shared::find(handle).ok_or_else(|| to_js(orrery_core::BusError::UnknownEndpoint(handle)))?;
        shared.mark_across_threads();
        let endpoint = shared.with(u32::MAX, Bus::open_endpoint).map_err(to_js)?;
        let slot = bus_calls::register(Arc::clone(&shared), endpoint).map_err(|e| {
            shared.detach(endpoint);
            to_js(e)
        })?;
        Ok(Self { shared: Some(shared), endpoint, handle, slot })
    }

    /// The handle another thread passes to `attach`.
    #[napi(catch_unwind)]
    pub fn share(&self) -> Result<u32> {
        self.core()?.mark_across_threads();
        Ok(self.handle)
    }

    /// Closes this endpoint now: its slot, drain buffer, waker and endpoint are released, and
    /// its share of the core (the whole core, when no other thread holds it). Later calls fail
    /// with `CLOSED`.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.release();
    }

    /// This endpoint's slot for the hot calls (`busAck` and the rest; they are not methods too),
    /// or 4294967295 once closed.
    #[napi(getter)]
    #[must_use]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// This endpoint's id.
    #[napi(getter, catch_unwind)]
    #[must_use]
    pub fn endpoint(&self) -> u32 {
        self.endpoint
    }

    /// Sets the function called (on this thread) when another thread gives this endpoint work;
    /// it keeps this thread alive until cleared with `null`.
    #[napi(catch_unwind)]
    pub fn set_waker(&self, wake: Option<Function<(), ()>>) -> Result<()> {
        let waker = match wake {
            None => None,
            Some(f) => Some(f.build_threadsafe_function::<()>().callee_handled::<false>().build().map_err(|_| {
                to_js(orrery_core::BusError::InvalidOption {
                    option: "waker",
                    reason: "cannot create a threadsafe function from it",
                })
            })?),
        };
        self.core()?.set_waker(self.endpoint, waker);
        Ok(())
    }

    /// The id of a channel, created on first use.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn channel(&self, name: String) -> Result<u32> {
        self.core()?.with(self.endpoint, |bus| bus.channel(&name)).map_err(to_js)
    }

    /// The name behind a channel id.
    #[napi(catch_unwind)]
    pub fn channel_name(&self, channel: u32) -> Result<Option<String>> {
        Ok(self.core()?.read(|bus| bus.channel_name(channel).map(str::to_owned)))
    }

    /// Sets a channel's retention, dedup window and expired-message policy.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    pub fn configure(
        &self,
        channel: u32,
        max_count: f64,
        max_bytes: f64,
        max_age: f64,
        dedup_window: f64,
        dead_letter_expired: bool,
        now: f64,
    ) -> Result<()> {
        self.core()?
            .with(self.endpoint, |bus| {
                wire::configure(bus, channel, max_count, max_bytes, max_age, dedup_window, dead_letter_expired, now)
            })
            .map_err(to_js)
    }

    /// Subscribes this endpoint to a channel.
    #[napi(catch_unwind)]
    pub fn subscribe(&self, channel: u32, mode: u32, value: f64, buffer: f64, overflow: u32) -> Result<u32> {
        self.core()?
            .with(self.endpoint, |bus| wire::subscribe(bus, self.endpoint, channel, mode, value, buffer, overflow))
            .map_err(to_js)
    }

    /// Ends a subscription or group membership.
    #[napi(catch_unwind)]
    pub fn unsubscribe(&self, id: u32) -> Result<()> {
        self.core()?.with(self.endpoint, |bus| bus.unsubscribe(id)).map_err(to_js)
    }

    /// Makes a member leave because its consumer failed at `now` (see the core's `abandon`).
    #[napi(catch_unwind)]
    pub fn abandon(&self, id: u32, now: f64) -> Result<()> {
        self.core()?.with(self.endpoint, |bus| bus.abandon(id, now)).map_err(to_js)
    }

    /// Pauses or resumes a consumer.
    #[napi(catch_unwind)]
    pub fn set_paused(&self, id: u32, paused: bool) -> Result<()> {
        self.core()?.with(self.endpoint, |bus| bus.set_paused(id, paused)).map_err(to_js)
    }

    /// Finds or creates a consumer group.
    #[napi(catch_unwind)]
    #[allow(clippy::too_many_arguments, reason = "flat numbers cross the boundary cheaply")]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn group(
        &self,
        channel: u32,
        name: String,
        mode: u32,
        value: f64,
        buffer: f64,
        overflow: u32,
        visibility: f64,
        max_deliveries: f64,
    ) -> Result<u32> {
        self.core()?
            .with(self.endpoint, |bus| {
                wire::group(bus, channel, &name, mode, value, buffer, overflow, visibility, max_deliveries)
            })
            .map_err(to_js)
    }

    /// Deletes a group, its members and its unacknowledged messages.
    #[napi(catch_unwind)]
    pub fn delete_group(&self, group: u32) -> Result<()> {
        self.core()?.with(self.endpoint, |bus| bus.delete_group(group)).map_err(to_js)
    }

    /// Joins a group from this endpoint.
    #[napi(catch_unwind)]
    pub fn join(&self, group: u32, max_in_flight: f64) -> Result<u32> {
        self.core()?.with(self.endpoint, |bus| wire::join(bus, self.endpoint, group, max_in_flight)).map_err(to_js)
    }

    /// Nacks a delivery; a non-empty reason dead-letters it at once.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn nack(&self, member: u32, seq: f64, attempt: u32, delay: f64, reason: String, now: f64) -> Result<()> {
        self.core()?
            .with(self.endpoint, |bus| wire::nack(bus, member, seq, attempt, delay, &reason, now))
            .map_err(to_js)
    }

    /// Claims idle deliveries of a group for its member.
    #[napi(catch_unwind)]
    pub fn claim(&self, group: u32, member: u32, min_idle: f64, max: f64, now: f64) -> Result<u32> {
        self.core()?.with(self.endpoint, |bus| wire::claim(bus, group, member, min_idle, max, now)).map_err(to_js)
    }

    /// A group's pending-entries list, flattened (order: the manifest's `PENDING_FIELDS`).
    #[napi(catch_unwind)]
    pub fn pending(&self, group: u32, now: f64) -> Result<Vec<f64>> {
        self.core()?.read(|bus| wire::pending(bus, group, now)).map_err(to_js)
    }

    /// Fires the deadlines due by `now`.
    #[napi(catch_unwind)]
    pub fn tick(&self, now: f64) -> Result<u32> {
        Ok(self.core()?.with(self.endpoint, |bus| bus.tick(now)) as u32)
    }

    /// Channel counters (order: the manifest's `CHANNEL_STATS`).
    #[napi(catch_unwind)]
    pub fn stats(&self, channel: u32) -> Result<Vec<f64>> {
        self.core()?.read(|bus| wire::channel_stats(bus, channel)).map_err(to_js)
    }

    /// Subscriber counters (order: the manifest's `SUBSCRIBER_STATS`).
    #[napi(catch_unwind)]
    pub fn subscriber_stats(&self, id: u32) -> Result<Vec<f64>> {
        self.core()?.read(|bus| wire::subscriber_stats(bus, id)).map_err(to_js)
    }

    /// Group counters (order: the manifest's `GROUP_STATS`).
    #[napi(catch_unwind)]
    pub fn group_stats(&self, group: u32) -> Result<Vec<f64>> {
        self.core()?.read(|bus| wire::group_stats(bus, group)).map_err(to_js)
    }

    /// Replies dropped because their request had timed out.
    #[napi(catch_unwind)]
    pub fn late_replies(&self) -> Result<f64> {
        Ok(self.core()?.read(|bus| bus.late_replies() as f64))
    }

    /// Binds a channel (and its dead-letter channel) to a transport, before its first use.
    #[napi(catch_unwind)]
    pub fn bind(&self, channel: u32, transport: f64) -> Result<()> {
        self.core()?.with(self.endpoint, |bus| wire::bind(bus, channel, transport)).map_err(to_js)
    }

    /// Takes in records a transport's driver read from its broker; how many were applied.
    #[napi(catch_unwind)]
    pub fn ingest(&self, batch: Uint8ArraySlice<'_>, now: f64) -> Result<u32> {
        self.core()?.with(self.endpoint, |bus| wire::ingest(bus, &batch, now)).map_err(to_js)
    }

    /// The egress records queued since the last call (a copy JS owns), or null when none wait.
    #[napi(catch_unwind)]
    pub fn drain_egress(&self) -> Result<Option<Uint8Array>> {
        Ok(self.core()?.with(self.endpoint, wire::drain_egress).map(Uint8Array::from))
    }

    /// How many more deliveries a group's members can take now.
    #[napi(catch_unwind)]
    pub fn group_room(&self, group: u32) -> Result<u32> {
        self.core()?.read(|bus| wire::group_room(bus, group)).map_err(to_js)
    }

    /// How many more records a mirrored channel can take in now; with none, this endpoint is
    /// woken once a subscriber (on any thread) takes some.
    #[napi(catch_unwind)]
    pub fn mirror_room(&self, channel: u32) -> Result<u32> {
        let endpoint = self.endpoint;
        self.core()?.with(endpoint, |bus| wire::mirror_room(bus, endpoint, channel)).map_err(to_js)
    }
}
