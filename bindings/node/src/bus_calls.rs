//! The bus's hottest calls as plain functions. A napi-rs class method costs ~220 ns a call
//! here and each argument ~10-60 ns more (see `store.rs`), which was most of an ack or a
//! request round trip. So each endpoint also sits in this thread's registry under a *slot*, and
//! these functions take their arguments from the thread's call block (slot 0: the endpoint's
//! slot; slot 0 again for the result) plus, where a batch travels, one borrowed byte view.

use std::cell::RefCell;
use std::sync::Arc;

use napi::bindgen_prelude::{Float64Array, Uint8Array, Uint8ArraySlice};
use napi_derive::napi;
use orrery_core::bus::wire;
use orrery_core::slab::{self, Slab};
use orrery_core::BusError;

use crate::call_block::{self, whole, Block};
use crate::error::{to_js, Result};
use crate::shared::Shared;

/// One endpoint as the hot calls reach it.
pub struct Endpoint {
    /// The core the endpoint belongs to.
    pub shared: Arc<Shared>,
    /// Its id in that core.
    pub endpoint: u32,
    /// The buffer its drains write into (JS hands it over, and again when it grows).
    pub out: Option<Uint8Array>,
}

thread_local! {
    /// This thread's endpoints, by slot.
    static ENDPOINTS: RefCell<Slab<Endpoint>> = RefCell::new(Slab::default());
    /// This thread's call block for the bus.
    static CALL: Block = const { RefCell::new(None) };
}

/// The slot of a closed endpoint.
pub const NO_SLOT: u32 = u32::MAX;

/// Registers an endpoint; its slot, or `CAPACITY_EXCEEDED` when this thread holds as many
/// endpoints as a slab can (the hot calls are the endpoint's only way to them).
pub fn register(shared: Arc<Shared>, endpoint: u32) -> std::result::Result<u32, BusError> {
    ENDPOINTS
        .with(|all| all.borrow_mut().insert(Endpoint { shared, endpoint, out: None }))
        .ok_or(BusError::Capacity { what: "bus endpoints open on one thread", limit: slab::MAX_ENTRIES })
}

/// Forgets a slot (its endpoint is closed).
pub fn unregister(slot: u32) {
    let _ = ENDPOINTS.try_with(|all| all.borrow_mut().remove(slot));
}

fn unknown(slot: f64) -> napi::Error<crate::error::Code> {
    to_js(BusError::UnknownEndpoint(slot as u32))
}

/// Runs `call` with the endpoint in slot 0 of the call block and arguments from slots 1..;
/// its result goes into slot 0.
fn with_call(call: impl FnOnce(&mut Endpoint, call_block::Args) -> Result<f64>) -> Result<()> {
    with_call_n(|e, args| call(e, args).map(|result| [result]))
}

/// [`with_call`] for a call with `N` results, written into slots 0 on.
fn with_call_n<const N: usize>(call: impl FnOnce(&mut Endpoint, call_block::Args) -> Result<[f64; N]>) -> Result<()> {
    call_block::run(
        &CALL,
        || unknown(f64::NAN),
        |slot, args| {
            ENDPOINTS.with(|all| {
                let mut all = all.borrow_mut();
                let endpoint = all.get_mut(slot).ok_or_else(|| unknown(f64::from(slot)))?;
                call(endpoint, args)
            })
        },
    )
}

/// Hands this thread's call block to the bus's hot calls (once per thread).
#[napi(catch_unwind)]
pub fn bus_use_call_block(block: Float64Array) {
    CALL.with(|slot| *slot.borrow_mut() = Some(block));
}

/// Hands an endpoint the buffer its drains write into.
#[napi(catch_unwind)]
pub fn bus_use_out(slot: u32, out: Uint8Array) -> Result<()> {
    ENDPOINTS.with(|all| {
        let mut all = all.borrow_mut();
        let endpoint = all.get_mut(slot).ok_or_else(|| unknown(f64::from(slot)))?;
        endpoint.out = Some(out);
        Ok(())
    })
}

/// Acks a delivery (call block: slot, member, seq, attempt).
#[napi(catch_unwind)]
pub fn bus_ack() -> Result<()> {
    with_call(|e, [member, seq, attempt, _]| {
        let (member, attempt) = (whole(member).unwrap_or(u32::MAX), whole(attempt).unwrap_or(u32::MAX));
        e.shared.with(e.endpoint, |bus| wire::ack(bus, member, seq, attempt)).map_err(to_js)?;
        Ok(0.0)
    })
}

/// Acks a run of deliveries in one crossing (call block: slot, count; `acks` holds count
/// triples of member, seq, attempt). JS queues only acks that cannot be stale, so each is
/// applied in order and a refused one is counted, not thrown: the result is how many failed.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn bus_ack_many(acks: Float64Array) -> Result<()> {
    with_call(|e, [count, ..]| {
        let n = whole(count).map_or(0, |n| n as usize).min(acks.len() / 3);
        let failed = e.shared.with(e.endpoint, |bus| {
            acks.chunks_exact(3)
                .take(n)
                .filter(|a| {
                    let (member, attempt) = (whole(a[0]).unwrap_or(u32::MAX), whole(a[2]).unwrap_or(u32::MAX));
                    wire::ack(bus, member, a[1], attempt).is_err()
                })
                .count()
        });
        Ok(failed as f64)
    })
}

/// Publishes a batch of frames (call block: slot, now); the result is how many were published.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn bus_publish(batch: Uint8ArraySlice<'_>) -> Result<()> {
    with_call(|e, [now, ..]| {
        let ep = e.endpoint;
        e.shared.with(ep, |bus| bus.publish_from(ep, &batch, now)).map(|n| n as f64).map_err(to_js)
    })
}

/// Publishes a request (call block: slot, timeout, now); the result is its reply token.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn bus_request(batch: Uint8ArraySlice<'_>) -> Result<()> {
    with_call(|e, [timeout, now, ..]| {
        let ep = e.endpoint;
        e.shared.with(ep, |bus| bus.request(ep, &batch, timeout, now)).map(f64::from).map_err(to_js)
    })
}

/// Sends a reply (call block: slot); the result is 0 when its request already timed out, 1 when
/// it was queued for the requester, 2 when the request was this endpoint's own (settled, not
/// queued: JS resolves it from the frame it holds, without a drain), 3 when it was another
/// process's (the reply left as egress).
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn bus_reply(batch: Uint8ArraySlice<'_>) -> Result<()> {
    with_call(|e, _| {
        let ep = e.endpoint;
        e.shared.with(ep, |bus| bus.reply_from(ep, &batch)).map(|r| f64::from(r as u8)).map_err(to_js)
    })
}

/// Fills the endpoint's drain buffer (call block: slot, now); the result is as `wire::drain`'s.
#[napi(catch_unwind)]
#[allow(unsafe_code, reason = "writing into the JS-owned drain buffer needs napi's unsafe as_mut")]
pub fn bus_drain() -> Result<()> {
    with_call(|e, [now, ..]| {
        let ep = e.endpoint;
        let Some(out) = e.out.as_mut() else { return Err(unknown(f64::from(ep))) };
        // SAFETY: as for the call block: synchronous on the thread that owns the buffer, which
        // `e.out` keeps alive; the slice does not outlive the call.
        let out = unsafe { out.as_mut() };
        Ok(e.shared.with(ep, |bus| wire::drain(bus, ep, out, now)))
    })
}

/// Acks one delivery, then fills the drain buffer (call block: slot, now, member, seq, attempt).
/// An agent acks after it answers, the ack waits in JS's queue, and the next call is most often
/// the drain that follows: the two share one crossing. The results: the drain's (as
/// `wire::drain`'s), then 1 if the ack was refused (counted, as `bus_ack_many` counts it: its
/// message is redelivered) or 0.
#[napi(catch_unwind)]
#[allow(unsafe_code, reason = "writing into the JS-owned drain buffer needs napi's unsafe as_mut")]
pub fn bus_ack_drain() -> Result<()> {
    with_call_n(|e, [now, member, seq, attempt]| {
        let ep = e.endpoint;
        let Some(out) = e.out.as_mut() else { return Err(unknown(f64::from(ep))) };
        // SAFETY: as in `bus_drain`.
        let out = unsafe { out.as_mut() };
        let (member, attempt) = (whole(member).unwrap_or(u32::MAX), whole(attempt).unwrap_or(u32::MAX));
        Ok(e.shared.with(ep, |bus| {
            let refused = wire::ack(bus, member, seq, attempt).is_err();
            [wire::drain(bus, ep, out, now), f64::from(u8::from(refused))]
        }))
    })
}

/// The bus's next deadline, or the manifest's `NO_DEADLINE` (Infinity) (call block: slot). The
/// class method cost ~280 ns a call, and the bus asks after every flush that may have added a
/// deadline (a request, a group delivery).
#[napi(catch_unwind)]
pub fn bus_next_deadline() -> Result<()> {
    with_call(|e, _| Ok(e.shared.read(wire::next_deadline)))
}

/// Whether the endpoint has records to drain (call block: slot); the result is 1 or 0.
#[napi(catch_unwind)]
pub fn bus_has_pending() -> Result<()> {
    with_call(|e, _| Ok(f64::from(u8::from(e.shared.read(|bus| bus.has_pending(e.endpoint))))))
}
