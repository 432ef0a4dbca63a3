//! The agent mesh's routing state (registry, breakers, bulkheads, rate limiters) through
//! N-API, shaped like the store: the class owns the mesh's lifetime, calls are plain functions
//! taking its handle, and the hot ones (`meshRoute`, `meshFinish`, `meshFind`, `meshTake`)
//! take no arguments: JS writes them into this thread's mesh call block, and results come back
//! in it. Encodings are `orrery_core::routing::wire`'s.

use std::cell::RefCell;

use napi::bindgen_prelude::Float64Array;
use napi_derive::napi;
use orrery_core::routing::{encode_events, parse_capabilities, wire, RoutingConfig, RoutingState, STATE_FIELDS};
use orrery_core::slab::Slab;
use orrery_core::RoutingError;

use crate::call_block::{self, whole, Block};
use crate::error::{to_js, Code, Result};

thread_local! {
    /// This thread's meshes; a mesh belongs to the thread that made it.
    static MESHES: RefCell<Slab<RoutingState>> = RefCell::new(Slab::default());
    /// The mesh call block: slot 0 the mesh's handle, then the arguments; results from slot 0.
    static CALL: Block = const { RefCell::new(None) };
    /// `mesh_find`'s results before they are copied into the call block, kept between calls.
    static FOUND: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

fn closed() -> napi::Error<Code> {
    to_js(RoutingError::Closed)
}

fn with<T>(handle: u32, call: impl FnOnce(&mut RoutingState) -> std::result::Result<T, RoutingError>) -> Result<T> {
    MESHES.with(|meshes| {
        let mut meshes = meshes.borrow_mut();
        let mesh = meshes.get_mut(handle).ok_or_else(closed)?;
        call(mesh).map_err(to_js)
    })
}

/// A hot call: the mesh's handle in slot 0 and arguments from slot 1; results from slot 0.
fn with_call(call: impl FnOnce(&mut RoutingState, &mut [f64]) -> std::result::Result<(), RoutingError>) -> Result<()> {
    call_block::run_slots(&CALL, closed, |handle, slots| with(handle, |mesh| call(mesh, slots)))
}

/// Argument `i` (from 0, in slot `i + 1`) as a whole number.
fn arg(slots: &[f64], i: usize) -> std::result::Result<u32, RoutingError> {
    slots.get(i + 1).copied().and_then(whole).ok_or_else(|| RoutingError::InvalidArgument {
        argument: format!("argument {i} of a mesh call"),
        reason: "is not a whole number from 0 to 2^32 - 1",
    })
}

/// Argument `i` (from 0, in slot `i + 1`) as a number (NaN when the block is too short).
fn num(slots: &[f64], i: usize) -> f64 {
    slots.get(i + 1).copied().unwrap_or(f64::NAN)
}

/// Owns one mesh: dropping or closing it releases the mesh.
#[napi]
pub struct NativeMesh {
    handle: u32,
}

impl Drop for NativeMesh {
    fn drop(&mut self) {
        let _ = MESHES.try_with(|meshes| meshes.borrow_mut().remove(self.handle));
    }
}

#[napi]
impl NativeMesh {
    /// A mesh: `seed` for random choices; liveness (beat interval, missed beats to degraded,
    /// unhealthy and offline, ms offline before deregistration); every agent's breaker
    /// (failures to open, cool-down ms, probes, successes to close).
    #[napi(constructor, catch_unwind)]
    #[allow(clippy::too_many_arguments, reason = "a flat constructor keeps the boundary numeric")]
    pub fn new(
        seed: f64,
        interval: f64,
        degraded_after: u32,
        unhealthy_after: u32,
        offline_after: u32,
        deregister_after: f64,
        failures_to_open: u32,
        cool_down: f64,
        probes: u32,
        successes_to_close: u32,
    ) -> Result<Self> {
        let config = RoutingConfig::flat(
            seed,
            interval,
            degraded_after,
            unhealthy_after,
            offline_after,
            deregister_after,
            failures_to_open,
            cool_down,
            probes,
            successes_to_close,
        );
        let handle = MESHES.with(|meshes| meshes.borrow_mut().insert(RoutingState::new(config)));
        let handle = handle.ok_or_else(|| to_js(RoutingError::InvalidLimit("too many meshes".to_owned())))?;
        Ok(Self { handle })
    }

    /// The handle the `mesh*` functions take.
    #[napi(getter)]
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Releases the mesh; later calls fail with `CLOSED`.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        MESHES.with(|meshes| meshes.borrow_mut().remove(self.handle));
        self.handle = u32::MAX;
    }
}

/// Hands this thread's mesh call block over (once per thread).
#[napi(catch_unwind)]
pub fn mesh_use_call_block(block: Float64Array) {
    CALL.with(|slot| *slot.borrow_mut() = Some(block));
}

/// Registers an agent; `capabilities` holds `name version [priority]` lines. Returns its handle.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
pub fn mesh_register(
    handle: u32,
    id: String,
    kind: String,
    capabilities: String,
    tags: Vec<String>,
    bulkhead: u32,
    now: f64,
) -> Result<u32> {
    with(handle, |mesh| {
        let caps = parse_capabilities(&capabilities)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        mesh.register(&id, &kind, &caps, &tags, bulkhead, now)
    })
}

/// Removes an agent.
#[napi(catch_unwind)]
pub fn mesh_deregister(handle: u32, agent: u32) -> Result<()> {
    with(handle, |mesh| mesh.deregister(agent))
}

/// An agent's heartbeat, reporting its health (by code).
#[napi(catch_unwind)]
pub fn mesh_heartbeat(handle: u32, agent: u32, health: u32, now: f64) -> Result<()> {
    with(handle, |mesh| mesh.heartbeat(agent, wire::health(health)?, now))
}

/// Sets an agent's health (by code).
#[napi(catch_unwind)]
pub fn mesh_set_health(handle: u32, agent: u32, health: u32, now: f64) -> Result<()> {
    with(handle, |mesh| mesh.set_health(agent, wire::health(health)?, now))
}

/// Compiles a query; `also` holds `capability range` lines. Returns its id.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned values")]
pub fn mesh_query(
    handle: u32,
    capability: String,
    range: String,
    min_health: u32,
    tags: Vec<String>,
    also: String,
) -> Result<u32> {
    with(handle, |mesh| {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let also = wire::parse_also(&also)?;
        mesh.query(&capability, &range, wire::health(min_health)?, &tags, &also)
    })
}

/// Finds (call block: handle, query, now): slot 0 the number of matches, and, when they fit,
/// their states from slot 1 (`RoutingState::find_states`; else read them with `meshFindStates`).
#[napi(catch_unwind)]
pub fn mesh_find() -> Result<()> {
    FOUND.with(|found| {
        let out = &mut *found.borrow_mut();
        with_call(|mesh, slots| {
            mesh.find_states(arg(slots, 0)?, num(slots, 1), out)?;
            slots[0] = (out.len() / STATE_FIELDS) as f64;
            if out.len() < slots.len() {
                slots[1..=out.len()].copy_from_slice(out);
            }
            Ok(())
        })
    })
}

/// Every match of a query with its state (`RoutingState::find_states`), best first.
#[napi(catch_unwind)]
pub fn mesh_find_states(handle: u32, query: u32, now: f64) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    with(handle, |mesh| mesh.find_states(query, now, &mut out))?;
    Ok(out)
}

/// Routes without exclusions (call block: handle, query, strategy, now): slot 0 the routed
/// agent's handle, or a refusal as [`routed`] encodes it; after `CIRCUIT_OPEN`, slot 1 the time
/// to try again. A route past excluded agents (after a failed call: never the hot path) takes
/// them as arguments instead, `meshRouteExcluding`, so no count of them is too many for a block.
#[napi(catch_unwind)]
pub fn mesh_route() -> Result<()> {
    with_call(|mesh, slots| {
        let [result, retry_at] = routed(wire::route(mesh, arg(slots, 0)?, arg(slots, 1)?, num(slots, 2), &[])?);
        slots[0] = result;
        slots[1] = retry_at;
        Ok(())
    })
}

/// Routes past `exclude` (agent handles; anything else excludes nothing): the routed agent's
/// handle or a refusal as [`routed`] encodes it, then the time to try again after `CIRCUIT_OPEN`.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi hands over a JS-owned view")]
pub fn mesh_route_excluding(
    handle: u32,
    query: u32,
    strategy: u32,
    now: f64,
    exclude: Float64Array,
) -> Result<Vec<f64>> {
    let exclude: Vec<u32> = exclude.iter().map(|&h| whole(h).unwrap_or(u32::MAX)).collect();
    with(handle, |mesh| Ok(routed(wire::route(mesh, query, strategy, now, &exclude)?).to_vec()))
}

/// One number for a route's outcome, as both engines give it: the agent's handle, or minus the
/// refusal's status (`-wire::NO_MATCH`, `-wire::CIRCUIT_OPEN`, `-wire::BULKHEAD_FULL`); beside
/// it, the time to try again (0 unless the circuit is open).
#[allow(clippy::float_cmp, reason = "status codes are small whole numbers")]
fn routed([status, value]: [f64; 2]) -> [f64; 2] {
    if status == wire::ROUTED {
        [value, 0.0]
    } else {
        [-status, value]
    }
}

/// Ends a routed call (call block: handle, agent, outcome, now): slot 0 is 1 when events wait.
#[napi(catch_unwind)]
pub fn mesh_finish() -> Result<()> {
    with_call(|mesh, slots| {
        slots[0] = wire::finish(mesh, arg(slots, 0)?, num(slots, 1), num(slots, 2));
        Ok(())
    })
}

/// Takes tokens (call block: handle, limiter, n, now): slot 0 is 0 when taken, else how long
/// until they will be there ([`wait`]).
#[napi(catch_unwind)]
pub fn mesh_take() -> Result<()> {
    with_call(|mesh, slots| {
        let now = num(slots, 2);
        slots[0] = wait(wire::take(mesh, arg(slots, 0)?, num(slots, 1), now)?, now);
        Ok(())
    })
}

/// One number for a take, as both engines give it: 0 when the tokens were taken, else the ms
/// until they will be there, never 0 (infinity: never).
fn wait([taken, at]: [f64; 2], now: f64) -> f64 {
    if taken > 0.0 {
        0.0
    } else {
        // A wait shorter than `now`'s precision would round to 0 and read as taken.
        (at - now).max(f64::MIN_POSITIVE)
    }
}

/// A new rate limiter; returns its id.
#[napi(catch_unwind)]
pub fn mesh_limiter(handle: u32, capacity: f64, per_second: f64, now: f64) -> Result<u32> {
    with(handle, |mesh| mesh.limiter(capacity, per_second, now))
}

/// Removes a rate limiter.
#[napi(catch_unwind)]
pub fn mesh_drop_limiter(handle: u32, limiter: u32) -> Result<()> {
    with(handle, |mesh| {
        mesh.drop_limiter(limiter);
        Ok(())
    })
}

/// The delay before retry `attempt` (jitter: 0 none, 1 full, 2 equal).
#[napi(catch_unwind)]
pub fn mesh_backoff(handle: u32, base: f64, factor: f64, max: f64, jitter: u32, attempt: u32) -> Result<f64> {
    with(handle, |mesh| Ok(mesh.backoff_coded(base, factor, max, jitter, attempt)))
}

/// Applies what is due at `now`.
#[napi(catch_unwind)]
pub fn mesh_tick(handle: u32, now: f64) -> Result<()> {
    with(handle, |mesh| {
        mesh.tick(now);
        Ok(())
    })
}

/// When `meshTick` next has work (infinity: never).
#[napi(catch_unwind)]
pub fn mesh_next_deadline(handle: u32) -> Result<f64> {
    with(handle, |mesh| Ok(mesh.next_deadline()))
}

/// The events since the last call (`orrery_core::routing::encode_events`).
#[napi(catch_unwind)]
pub fn mesh_events(handle: u32) -> Result<Vec<f64>> {
    with(handle, |mesh| Ok(encode_events(&mesh.take_events())))
}

/// An agent's breaker state code at `now` (0 closed, 1 open, 2 half-open).
#[napi(catch_unwind)]
pub fn mesh_breaker_state(handle: u32, agent: u32, now: f64) -> Result<u32> {
    with(handle, |mesh| Ok(orrery_core::routing::breaker_code(mesh.breaker_state(agent, now)?)))
}

/// An agent's health code, calls in flight and last beat.
#[napi(catch_unwind)]
pub fn mesh_agent_state(handle: u32, agent: u32) -> Result<Vec<f64>> {
    with(handle, |mesh| Ok(wire::agent_state(mesh, agent)?.to_vec()))
}

/// Capability names close to `name`, as `name\tscore` lines, best first.
#[napi(catch_unwind)]
#[allow(clippy::needless_pass_by_value, reason = "napi passes owned strings")]
pub fn mesh_similar(handle: u32, name: String, threshold: f64) -> Result<String> {
    with(handle, |mesh| Ok(wire::similar(mesh, &name, threshold)))
}
