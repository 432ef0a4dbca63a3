//! The bus as a JS class. Deliveries are written into a scratch buffer inside the instance's
//! memory, which JS reads through a view: no copy back out per drain.

use orrery_core::bus::Retention;
use orrery_core::{Bus, BusConfig, StartAt};
use wasm_bindgen::prelude::*;

use crate::error::to_js;

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
        let config = BusConfig {
            max_message_bytes: max_message_bytes as usize,
            ..BusConfig::default()
        };
        Self {
            bus: Bus::new(config),
            scratch: Vec::new(),
        }
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

    /// Sets a channel's retention; 0 count or bytes means unlimited.
    #[wasm_bindgen(js_name = setRetention)]
    pub fn set_retention(
        &mut self,
        channel: u32,
        max_count: f64,
        max_bytes: f64,
        max_age: f64,
        now: f64,
    ) -> Result<(), JsValue> {
        let retention = Retention {
            max_count: max_count as usize,
            max_bytes: max_bytes as usize,
            max_age,
        };
        self.bus
            .set_retention(channel, retention, now)
            .map_err(to_js)
    }

    /// Publishes a batch of frames, all or nothing; returns how many were published.
    pub fn publish(&mut self, batch: &[u8], now: f64) -> Result<u32, JsValue> {
        self.bus
            .publish(batch, now)
            .map(|n| n as u32)
            .map_err(to_js)
    }

    /// Subscribes; `mode` 0 latest, 1 earliest, 2 from sequence `value`, 3 from time `value`.
    pub fn subscribe(&mut self, channel: u32, mode: u32, value: f64) -> Result<u32, JsValue> {
        let start = match mode {
            1 => StartAt::Earliest,
            2 => StartAt::Seq(value as u64),
            3 => StartAt::Time(value),
            _ => StartAt::Latest,
        };
        self.bus.subscribe(channel, start).map_err(to_js)
    }

    /// Ends a subscription.
    pub fn unsubscribe(&mut self, id: u32) -> Result<(), JsValue> {
        self.bus.unsubscribe(id).map_err(to_js)
    }

    /// Writes up to `capacity` bytes of delivery records into the scratch buffer; returns bytes
    /// written, or minus the size needed when the next record alone does not fit. Read them at
    /// [`WasmBus::scratch_ptr`] before the next call.
    pub fn drain(&mut self, capacity: u32) -> f64 {
        self.scratch.resize(capacity as usize, 0);
        match self.bus.drain(&mut self.scratch) {
            Ok(written) => written as f64,
            Err(needed) => -(needed as f64),
        }
    }

    /// Where the scratch buffer starts in the instance's memory.
    #[wasm_bindgen(js_name = scratchPtr)]
    #[must_use]
    pub fn scratch_ptr(&self) -> u32 {
        self.scratch.as_ptr() as u32
    }

    /// Whether deliveries wait for `drain`.
    #[wasm_bindgen(js_name = hasPending)]
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.bus.has_pending()
    }

    /// Channel counters in the order of `ts/backend.ts`'s `STATS_FIELDS`.
    pub fn stats(&self, channel: u32) -> Result<Vec<f64>, JsValue> {
        let s = self.bus.stats(channel).map_err(to_js)?;
        Ok([
            s.published,
            s.delivered,
            s.retained,
            s.retained_bytes,
            s.first_seq,
            s.next_seq,
            s.subscribers,
        ]
        .map(|v| v as f64)
        .to_vec())
    }
}
