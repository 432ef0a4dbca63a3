//! The bus as a JS class. Hot-path calls take and fill JS-owned byte buffers.

use napi::bindgen_prelude::Uint8Array;
use napi_derive::napi;
use orrery_core::bus::Retention;
use orrery_core::{Bus, BusConfig, StartAt};

use crate::error::{to_js, Result};

/// One in-process bus.
#[napi]
pub struct NativeBus {
    bus: Bus,
}

#[napi]
impl NativeBus {
    /// A bus refusing frames over `max_message_bytes`.
    #[napi(constructor, catch_unwind)]
    #[must_use]
    pub fn new(max_message_bytes: u32) -> Self {
        Self {
            bus: Bus::new(BusConfig {
                max_message_bytes: max_message_bytes as usize,
                ..BusConfig::default()
            }),
        }
    }

    /// The id of a channel, created on first use.
    #[napi(catch_unwind)]
    #[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
    pub fn channel(&mut self, name: String) -> Result<u32> {
        self.bus.channel(&name).map_err(to_js)
    }

    /// The name behind a channel id.
    #[napi(catch_unwind)]
    #[must_use]
    pub fn channel_name(&self, channel: u32) -> Option<String> {
        self.bus.channel_name(channel).map(str::to_owned)
    }

    /// Sets a channel's retention; 0 count or bytes means unlimited.
    #[napi(catch_unwind)]
    pub fn set_retention(
        &mut self,
        channel: u32,
        max_count: f64,
        max_bytes: f64,
        max_age: f64,
        now: f64,
    ) -> Result<()> {
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
    #[napi(catch_unwind)]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "napi hands over a JS-owned view"
    )]
    pub fn publish(&mut self, batch: Uint8Array, now: f64) -> Result<u32> {
        self.bus
            .publish(&batch, now)
            .map(|n| n as u32)
            .map_err(to_js)
    }

    /// Subscribes; `mode` 0 latest, 1 earliest, 2 from sequence `value`, 3 from time `value`.
    #[napi(catch_unwind)]
    pub fn subscribe(&mut self, channel: u32, mode: u32, value: f64) -> Result<u32> {
        let start = match mode {
            1 => StartAt::Earliest,
            2 => StartAt::Seq(value as u64),
            3 => StartAt::Time(value),
            _ => StartAt::Latest,
        };
        self.bus.subscribe(channel, start).map_err(to_js)
    }

    /// Ends a subscription.
    #[napi(catch_unwind)]
    pub fn unsubscribe(&mut self, id: u32) -> Result<()> {
        self.bus.unsubscribe(id).map_err(to_js)
    }

    /// Fills `out` with delivery records; returns bytes written, or minus the size needed when
    /// the next record alone does not fit.
    #[napi(catch_unwind)]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "napi hands over a JS-owned view"
    )]
    #[allow(
        unsafe_code,
        reason = "writing into a JS-owned buffer needs napi's unsafe as_mut"
    )]
    pub fn drain(&mut self, mut out: Uint8Array) -> f64 {
        // SAFETY: this call is synchronous on the JS thread that owns `out`; no JS code runs,
        // and nothing else can read or resize the buffer, until it returns.
        let out = unsafe { out.as_mut() };
        match self.bus.drain(out) {
            Ok(written) => written as f64,
            Err(needed) => -(needed as f64),
        }
    }

    /// Whether deliveries wait for `drain`.
    #[napi(catch_unwind)]
    #[must_use]
    pub fn has_pending(&self) -> bool {
        self.bus.has_pending()
    }

    /// Channel counters in the order of `ts/backend.ts`'s `STATS_FIELDS`.
    #[napi(catch_unwind)]
    pub fn stats(&self, channel: u32) -> Result<Vec<f64>> {
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
