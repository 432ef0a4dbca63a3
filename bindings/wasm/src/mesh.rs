//! The agent mesh's routing state as a JS class. Hot calls take numbers only: a route's
//! exclusions and a search's results travel through `io`, an `f64` buffer inside the instance's
//! memory that JS views (and views again after memory grows). Encodings are
//! `orrery_core::routing::wire`'s.

use orrery_core::routing::{encode_events, parse_capabilities, wire, RoutingConfig, RoutingState, STATE_FIELDS};
use orrery_core::RoutingError;
use wasm_bindgen::prelude::*;

use crate::error::to_js;

/// One mesh.
#[wasm_bindgen]
pub struct WasmMesh {
    mesh: RoutingState,
    io: Vec<f64>,
    exclude: Vec<u32>,
}

#[wasm_bindgen]
impl WasmMesh {
    /// A mesh (arguments as `NativeMesh`'s).
    #[wasm_bindgen(constructor)]
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
    ) -> WasmMesh {
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
        Self { mesh: RoutingState::new(config), io: vec![0.0; 256], exclude: Vec::new() }
    }

    /// Makes `io` at least `len` entries; returns where it starts (it may move).
    pub fn reserve(&mut self, len: u32) -> u32 {
        if self.io.len() < len as usize {
            self.io.resize(len as usize, 0.0);
        }
        self.io.as_ptr() as u32
    }

    /// Where `io` starts in the instance's memory.
    #[wasm_bindgen(js_name = ioPtr)]
    pub fn io_ptr(&self) -> u32 {
        self.io.as_ptr() as u32
    }

    /// Registers an agent; `capabilities` holds `name version [priority]` lines.
    #[allow(clippy::needless_pass_by_value, reason = "wasm-bindgen passes owned vectors")]
    pub fn register(
        &mut self,
        id: &str,
        kind: &str,
        capabilities: &str,
        tags: Vec<String>,
        bulkhead: u32,
        now: f64,
    ) -> Result<u32, JsValue> {
        let caps = parse_capabilities(capabilities).map_err(to_js)?;
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        self.mesh.register(id, kind, &caps, &tags, bulkhead, now).map_err(to_js)
    }

    /// Removes an agent.
    pub fn deregister(&mut self, agent: u32) -> Result<(), JsValue> {
        self.mesh.deregister(agent).map_err(to_js)
    }

    /// An agent's heartbeat, reporting its health (by code).
    pub fn heartbeat(&mut self, agent: u32, health: u32, now: f64) -> Result<(), JsValue> {
        let health = wire::health(health).map_err(to_js)?;
        self.mesh.heartbeat(agent, health, now).map_err(to_js)
    }

    /// Sets an agent's health (by code).
    #[wasm_bindgen(js_name = setHealth)]
    pub fn set_health(&mut self, agent: u32, health: u32, now: f64) -> Result<(), JsValue> {
        let health = wire::health(health).map_err(to_js)?;
        self.mesh.set_health(agent, health, now).map_err(to_js)
    }

    /// Compiles a query; `also` holds `capability range` lines.
    #[allow(clippy::needless_pass_by_value, reason = "wasm-bindgen passes owned vectors")]
    pub fn query(
        &mut self,
        capability: &str,
        range: &str,
        min_health: u32,
        tags: Vec<String>,
        also: &str,
    ) -> Result<u32, JsValue> {
        let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
        let also = wire::parse_also(also).map_err(to_js)?;
        let health = wire::health(min_health).map_err(to_js)?;
        self.mesh.query(capability, range, health, &tags, &also).map_err(to_js)
    }

    /// Finds: the matches' states (`RoutingState::find_states`) go into `io`, best first; returns how
    /// many matches.
    pub fn find(&mut self, query: u32, now: f64) -> Result<u32, JsValue> {
        self.mesh.find_states(query, now, &mut self.io).map_err(to_js)?;
        Ok((self.io.len() / STATE_FIELDS) as u32)
    }

    /// Routes past the first `excluded` handles of `io`: returns the routed agent's handle, or
    /// minus the refusal's status (as `meshRoute` in the native engine); after `CIRCUIT_OPEN`,
    /// `io[0]` holds the time to try again.
    #[allow(clippy::float_cmp, reason = "status codes are small whole numbers")]
    pub fn route(&mut self, query: u32, strategy: u32, now: f64, excluded: u32) -> Result<f64, JsValue> {
        let Some(excluded) = self.io.get(..excluded as usize) else {
            return Err(to_js(RoutingError::InvalidArgument {
                argument: format!("{excluded} exclusions"),
                reason: "is more than the mesh's io holds (reserve room first)",
            }));
        };
        self.exclude.clear();
        self.exclude.extend(excluded.iter().map(|&h| {
            if h >= 0.0 && h <= f64::from(u32::MAX) && h.fract() == 0.0 {
                h as u32
            } else {
                u32::MAX
            }
        }));
        let [status, value] = wire::route(&mut self.mesh, query, strategy, now, &self.exclude).map_err(to_js)?;
        if status == wire::ROUTED {
            return Ok(value);
        }
        if self.io.is_empty() {
            self.io.push(0.0);
        }
        self.io[0] = value;
        Ok(-status)
    }

    /// Ends a routed call (outcome: 1 success, 0 failure, else none); returns 1 when events wait.
    pub fn finish(&mut self, agent: u32, outcome: f64, now: f64) -> f64 {
        wire::finish(&mut self.mesh, agent, outcome, now)
    }

    /// Takes tokens: returns 0 when taken, else the ms until they will be there, never 0
    /// (infinity: never), as `meshTake` in the native engine.
    pub fn take(&mut self, limiter: u32, n: f64, now: f64) -> Result<f64, JsValue> {
        let [taken, at] = wire::take(&mut self.mesh, limiter, n, now).map_err(to_js)?;
        // A wait shorter than `now`'s precision would round to 0 and read as taken.
        Ok(if taken > 0.0 { 0.0 } else { (at - now).max(f64::MIN_POSITIVE) })
    }

    /// A new rate limiter; returns its id.
    pub fn limiter(&mut self, capacity: f64, per_second: f64, now: f64) -> Result<u32, JsValue> {
        self.mesh.limiter(capacity, per_second, now).map_err(to_js)
    }

    /// Removes a rate limiter.
    #[wasm_bindgen(js_name = dropLimiter)]
    pub fn drop_limiter(&mut self, limiter: u32) {
        self.mesh.drop_limiter(limiter);
    }

    /// The delay before retry `attempt` (jitter: 0 none, 1 full, 2 equal).
    pub fn backoff(&mut self, base: f64, factor: f64, max: f64, jitter: u32, attempt: u32) -> f64 {
        self.mesh.backoff_coded(base, factor, max, jitter, attempt)
    }

    /// Applies what is due at `now`.
    pub fn tick(&mut self, now: f64) {
        self.mesh.tick(now);
    }

    /// When `tick` next has work (infinity: never).
    #[wasm_bindgen(js_name = nextDeadline)]
    pub fn next_deadline(&self) -> f64 {
        self.mesh.next_deadline()
    }

    /// The events since the last call (`orrery_core::routing::encode_events`).
    pub fn events(&mut self) -> Vec<f64> {
        encode_events(&self.mesh.take_events())
    }

    /// An agent's breaker state code at `now`.
    #[wasm_bindgen(js_name = breakerState)]
    pub fn breaker_state(&mut self, agent: u32, now: f64) -> Result<u32, JsValue> {
        self.mesh.breaker_state(agent, now).map(orrery_core::routing::breaker_code).map_err(to_js)
    }

    /// An agent's health code, calls in flight and last beat.
    #[wasm_bindgen(js_name = agentState)]
    pub fn agent_state(&self, agent: u32) -> Result<Vec<f64>, JsValue> {
        wire::agent_state(&self.mesh, agent).map(|s| s.to_vec()).map_err(to_js)
    }

    /// Capability names close to `name`, as `name\tscore` lines, best first.
    pub fn similar(&self, name: &str, threshold: f64) -> String {
        wire::similar(&self.mesh, name, threshold)
    }
}
