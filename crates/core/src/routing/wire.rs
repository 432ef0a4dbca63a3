//! The mesh's calls as both bindings make them: numbers in, numbers out.

use super::{health_of, strategy_of, Refusal, RoutingState};
use crate::directory::Health;
use crate::error::RoutingError;
use crate::Millis;

/// [`route`]'s status: an agent was picked (the value is its handle).
pub const ROUTED: f64 = 0.0;
/// [`route`]'s status: nothing matches.
pub const NO_MATCH: f64 = 1.0;
/// [`route`]'s status: every match's breaker refuses (the value is when to try again).
pub const CIRCUIT_OPEN: f64 = 2.0;
/// [`route`]'s status: every match that would accept a call is at its bulkhead's limit.
pub const BULKHEAD_FULL: f64 = 3.0;

fn bad(argument: &'static str, reason: &'static str) -> RoutingError {
    RoutingError::InvalidArgument { argument: argument.to_owned(), reason }
}

/// A health from its code.
pub fn health(code: u32) -> Result<Health, RoutingError> {
    health_of(code).ok_or_else(|| bad("health", "is not a health code (0 to 4)"))
}

/// Routes a compiled query by strategy code past the excluded agents: (status, value).
pub fn route(
    mesh: &mut RoutingState,
    query: u32,
    strategy: u32,
    now: Millis,
    exclude: &[u32],
) -> Result<[f64; 2], RoutingError> {
    let strategy = strategy_of(strategy).ok_or_else(|| bad("strategy", "is not a strategy code"))?;
    Ok(match mesh.route(query, strategy, exclude, now)? {
        Ok(agent) => [ROUTED, f64::from(agent)],
        Err(Refusal::NoMatch) => [NO_MATCH, 0.0],
        Err(Refusal::CircuitOpen { retry_at }) => [CIRCUIT_OPEN, retry_at],
        Err(Refusal::BulkheadFull) => [BULKHEAD_FULL, 0.0],
    })
}

/// Ends a routed call; `outcome` is 1 success, 0 failure, anything else no verdict. Returns
/// 1 when events wait, else 0.
pub fn finish(mesh: &mut RoutingState, agent: u32, outcome: f64, now: Millis) -> f64 {
    #[allow(clippy::float_cmp, reason = "outcome codes are small whole numbers")]
    let outcome = if outcome == 1.0 {
        Some(true)
    } else if outcome == 0.0 {
        Some(false)
    } else {
        None
    };
    mesh.finish(agent, outcome, now);
    f64::from(u8::from(mesh.has_events()))
}

/// Takes `n` tokens: (1, 0) when taken, (0, when they will be there) when refused.
pub fn take(mesh: &mut RoutingState, limiter: u32, n: f64, now: Millis) -> Result<[f64; 2], RoutingError> {
    Ok(match mesh.take(limiter, n, now)? {
        Ok(()) => [1.0, 0.0],
        Err(at) => [0.0, at],
    })
}

/// `also` as hosts pass it: `name range` pairs, one per line.
pub fn parse_also(spec: &str) -> Result<Vec<(&str, &str)>, RoutingError> {
    spec.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            line.trim().split_once(char::is_whitespace).map(|(n, r)| (n, r.trim())).ok_or_else(|| {
                RoutingError::InvalidArgument {
                    argument: format!("also line {line:?}"),
                    reason: "is not `capability range`",
                }
            })
        })
        .collect()
}

/// Capability names close to `name`, as `name\tscore` lines.
#[must_use]
pub fn similar(mesh: &RoutingState, name: &str, threshold: f64) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (known, score) in mesh.directory().similar(name, threshold) {
        let _ = writeln!(out, "{known}\t{score}");
    }
    out
}

/// An agent's state: health code, calls in flight, last beat.
pub fn agent_state(mesh: &RoutingState, agent: u32) -> Result<[f64; 3], RoutingError> {
    let entry = mesh.directory().agent(agent).ok_or(RoutingError::UnknownAgent(agent))?;
    Ok([f64::from(super::health_code(entry.health)), f64::from(entry.in_flight), entry.last_beat])
}
