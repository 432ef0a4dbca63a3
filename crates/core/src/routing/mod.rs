//! The routing state of an agent mesh: the [`Directory`] plus, per agent, a circuit breaker and a
//! bulkhead (a cap on concurrent calls), the rate limiters agents take tokens from, and the
//! seeded random source of retry backoff. The host asks for a target with [`RoutingState::route`]
//! (selection, breaker and bulkhead in one call) and reports the outcome with
//! [`RoutingState::finish`]; health and breaker transitions come back as [`Event`]s.
//!
//! Queries are compiled once ([`RoutingState::query`]) so that the hot calls carry only numbers.

#[cfg(test)]
mod tests;
pub mod wire;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::directory::{parse_range, Directory, Health, Liveness, Query, Range, Strategy, Transition};
use crate::error::RoutingError;
use crate::resilience::{Backoff, Breaker, BreakerConfig, BreakerState, Jitter, SplitMix64, TokenBucket};
use crate::slab::Slab;
use crate::{Deadline, Millis};

/// The routing state's settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoutingConfig {
    /// Seeds random selection and backoff jitter.
    pub seed: u64,
    /// When missed heartbeats move an agent down.
    pub liveness: Liveness,
    /// Every agent's breaker.
    pub breaker: BreakerConfig,
}

impl RoutingConfig {
    /// The settings as hosts pass them, flat: the seed; liveness (beat interval, missed beats to
    /// degraded, unhealthy and offline, ms offline before deregistration); every agent's breaker
    /// (failures to open, cool-down ms, probes, successes to close).
    #[must_use]
    #[allow(clippy::too_many_arguments, reason = "flat numbers are how the settings cross the boundary")]
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "any seed will do")]
    pub fn flat(
        seed: f64,
        interval: Millis,
        degraded_after: u32,
        unhealthy_after: u32,
        offline_after: u32,
        deregister_after: Millis,
        failures_to_open: u32,
        cool_down: Millis,
        probes: u32,
        successes_to_close: u32,
    ) -> Self {
        Self {
            seed: seed as u64,
            liveness: Liveness { interval, degraded_after, unhealthy_after, offline_after, deregister_after },
            breaker: BreakerConfig { failures_to_open, cool_down, probes, successes_to_close },
        }
    }
}

/// Something that happened in the mesh, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An agent's health changed (`to: None`: it was deregistered).
    Health(Transition),
    /// An agent's breaker moved.
    Breaker {
        /// The agent's handle.
        agent: u32,
        /// Before.
        from: BreakerState,
        /// After.
        to: BreakerState,
        /// When (host ms).
        at: Millis,
    },
}

/// Why no agent could be called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// No registered agent matches the query.
    NoMatch,
    /// Every match's breaker is open (or busy probing): try again at `retry_at`.
    CircuitOpen {
        /// The earliest time a breaker lets a call through.
        retry_at: Millis,
    },
    /// Every match that would accept a call is at its bulkhead's limit.
    BulkheadFull,
}

/// What the mesh keeps per agent besides its directory entry.
#[derive(Debug, Clone)]
struct Target {
    breaker: Breaker,
    /// Concurrent calls allowed; 0 means no limit.
    bulkhead: u32,
}

/// What [`RoutingState`] knows of a slot's breaker without looking its target up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaking {
    /// No agent holds the slot.
    Vacant,
    /// The breaker is closed: it stays closed whatever the time, until a call's outcome moves it.
    Closed,
    /// Open or half-open: its state at a given time needs the breaker itself.
    Moving,
}

/// Records what a slot's breaker is (growing the dense array on a new slot).
fn set_breaking(breaking: &mut Vec<Breaking>, agent: u32, to: Breaking) {
    let index = crate::slab::index(agent);
    if breaking.len() <= index {
        breaking.resize(index + 1, Breaking::Vacant);
    }
    breaking[index] = to;
}

/// A compiled query.
#[derive(Debug, Clone)]
struct Compiled {
    capability: u32,
    versions: Range,
    min_health: Health,
    tags: Vec<u32>,
    also: Vec<(u32, Range)>,
}

impl Compiled {
    fn query(&self) -> Query<'_> {
        Query {
            capability: self.capability,
            versions: &self.versions,
            min_health: self.min_health,
            tags: &self.tags,
            also: &self.also,
        }
    }
}

/// The routing state of one agent mesh: its directory, and per agent a breaker and a bulkhead.
#[derive(Debug)]
pub struct RoutingState {
    directory: Directory,
    breaker: BreakerConfig,
    targets: FxHashMap<u32, Target>,
    /// Whether each slot index has a target and its breaker is closed (see [`Breaking`]), so
    /// that discovery reports a closed breaker without looking the target up: once per match,
    /// that lookup missed the cache.
    breaking: Vec<Breaking>,
    queries: Vec<Compiled>,
    limiters: Slab<TokenBucket>,
    random: SplitMix64,
    /// (when an open breaker turns half-open, agent): checked by `tick`.
    cool_downs: BinaryHeap<Reverse<(Deadline, u32)>>,
    events: Vec<Event>,
    scratch: Vec<u32>,
}

/// A capability spec: `name version priority` triples, one per line (how hosts pass them).
pub fn parse_capabilities(spec: &str) -> Result<Vec<(&str, &str, i32)>, RoutingError> {
    spec.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(version), priority, None) = (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(RoutingError::InvalidArgument {
                    argument: format!("capability line {line:?}"),
                    reason: "is not `name version [priority]`",
                });
            };
            let priority = match priority {
                None => 0,
                Some(p) => p.parse().map_err(|_| RoutingError::InvalidArgument {
                    argument: format!("capability line {line:?}"),
                    reason: "has a priority that is not a 32-bit integer",
                })?,
            };
            Ok((name, version, priority))
        })
        .collect()
}

impl RoutingState {
    /// An empty routing state.
    #[must_use]
    pub fn new(config: RoutingConfig) -> Self {
        Self {
            directory: Directory::with_liveness(config.seed, config.liveness),
            breaker: config.breaker,
            targets: FxHashMap::default(),
            breaking: Vec::new(),
            queries: Vec::new(),
            limiters: Slab::default(),
            random: SplitMix64::new(config.seed ^ 0x9e37_79b9_7f4a_7c15),
            cool_downs: BinaryHeap::new(),
            events: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The directory, for reads.
    #[must_use]
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The directory, for writes that need no routing bookkeeping (health, heartbeats).
    pub fn directory_mut(&mut self) -> &mut Directory {
        &mut self.directory
    }

    /// Registers an agent (see [`Directory::register`]) whose calls are capped at `bulkhead`
    /// at once (0: no cap), with a closed breaker.
    pub fn register(
        &mut self,
        id: &str,
        kind: &str,
        capabilities: &[(&str, &str, i32)],
        tags: &[&str],
        bulkhead: u32,
        now: Millis,
    ) -> Result<u32, RoutingError> {
        let agent = self.directory.register(id, kind, capabilities, tags, now)?;
        self.targets.insert(agent, Target { breaker: Breaker::new(self.breaker), bulkhead });
        set_breaking(&mut self.breaking, agent, Breaking::Closed);
        self.collect();
        Ok(agent)
    }

    /// Removes an agent and its breaker.
    pub fn deregister(&mut self, agent: u32) -> Result<(), RoutingError> {
        self.directory.deregister(agent)?;
        self.targets.remove(&agent);
        set_breaking(&mut self.breaking, agent, Breaking::Vacant);
        Ok(())
    }

    /// An agent's heartbeat, reporting its health.
    pub fn heartbeat(&mut self, agent: u32, reported: Health, now: Millis) -> Result<(), RoutingError> {
        self.directory.heartbeat(agent, reported, now)?;
        self.collect();
        Ok(())
    }

    /// Sets an agent's health (pause, resume, a failed start).
    pub fn set_health(&mut self, agent: u32, health: Health, now: Millis) -> Result<(), RoutingError> {
        self.directory.set_health(agent, health, now)?;
        self.collect();
        Ok(())
    }

    /// Compiles a query: capability `capability` at versions `range`, carrying every tag of
    /// `tags`, at least `min_health`, and offering every `(name, range)` of `also` too.
    /// Returns its id for [`RoutingState::find`] and [`RoutingState::route`].
    pub fn query(
        &mut self,
        capability: &str,
        range: &str,
        min_health: Health,
        tags: &[&str],
        also: &[(&str, &str)],
    ) -> Result<u32, RoutingError> {
        crate::names::validate(capability)?;
        let versions = parse_range(range)?;
        let also = also
            .iter()
            .map(|&(name, range)| {
                crate::names::validate(name)?;
                Ok((name, parse_range(range)?))
            })
            .collect::<Result<Vec<_>, RoutingError>>()?;
        for tag in tags {
            crate::names::validate(tag)?;
        }
        let compiled = Compiled {
            capability: self.directory.name(capability)?,
            versions,
            min_health,
            tags: {
                let mut ids = tags.iter().map(|t| self.directory.name(t)).collect::<Result<Vec<_>, _>>()?;
                ids.sort_unstable();
                ids.dedup();
                ids
            },
            also: also
                .into_iter()
                .map(|(name, versions)| Ok((self.directory.name(name)?, versions)))
                .collect::<Result<_, RoutingError>>()?,
        };
        let id = u32::try_from(self.queries.len()).map_err(|_| RoutingError::Capacity {
            what: "compiled queries",
            limit: u32::MAX as usize,
            remedy: "reuse queries instead of compiling one per call",
        })?;
        self.queries.push(compiled);
        Ok(id)
    }

    /// The agents matching a compiled query, best first.
    pub fn find(&mut self, query: u32, out: &mut Vec<u32>) -> Result<(), RoutingError> {
        let c = self.queries.get(query as usize).ok_or(RoutingError::UnknownQuery(query))?;
        let q = c.query();
        self.directory.find(&q, out);
        Ok(())
    }

    /// The matches of a compiled query with their state at `now`, [`STATE_FIELDS`] numbers
    /// each: handle, health code, calls in flight, last beat, breaker code.
    pub fn find_states(&mut self, query: u32, now: Millis, out: &mut Vec<f64>) -> Result<(), RoutingError> {
        let mut found = std::mem::take(&mut self.scratch);
        let result = self.find(query, &mut found);
        out.clear();
        if result.is_ok() {
            out.reserve(found.len() * STATE_FIELDS);
            for &agent in &found {
                // Dense reads only, unless a breaker is open or half-open (rare).
                let breaker = match self.breaking.get(crate::slab::index(agent)) {
                    Some(Breaking::Closed) => BreakerState::Closed,
                    Some(Breaking::Moving) => {
                        let Some(target) = self.targets.get_mut(&agent) else { continue };
                        let state = target.breaker.state(now);
                        self.collect_breaker(agent);
                        state
                    }
                    Some(Breaking::Vacant) | None => continue,
                };
                let (health, in_flight, last_beat) = self.directory.live_state(agent);
                out.extend([
                    f64::from(agent),
                    f64::from(health_code(health)),
                    f64::from(in_flight),
                    last_beat,
                    f64::from(breaker_code(breaker)),
                ]);
            }
        }
        self.scratch = found;
        result
    }

    /// Picks the agent to call for a compiled query: the first, in `strategy`'s order, that
    /// is not in `exclude`, is under its bulkhead's limit, and whose breaker lets the call
    /// through. The call counts as in flight until [`RoutingState::finish`].
    pub fn route(
        &mut self,
        query: u32,
        strategy: Strategy,
        exclude: &[u32],
        now: Millis,
    ) -> Result<Result<u32, Refusal>, RoutingError> {
        let c = self.queries.get(query as usize).ok_or(RoutingError::UnknownQuery(query))?;
        let q = c.query();
        let mut order = std::mem::take(&mut self.scratch);
        self.directory.order(&q, strategy, &mut order);
        let mut refusal = Refusal::NoMatch;
        let mut picked = None;
        for &agent in &order {
            if exclude.contains(&agent) {
                continue;
            }
            let (Some(target), Some(entry)) = (self.targets.get_mut(&agent), self.directory.agent(agent)) else {
                continue;
            };
            if target.bulkhead != 0 && entry.in_flight >= target.bulkhead {
                if refusal == Refusal::NoMatch {
                    refusal = Refusal::BulkheadFull;
                }
                continue;
            }
            let allowed = target.breaker.allow(now);
            // `allow` may have moved the breaker from open to half-open.
            self.collect_breaker(agent);
            match allowed {
                Ok(()) => {
                    picked = Some(agent);
                    break;
                }
                Err(refused) => {
                    let retry_at = match refusal {
                        Refusal::CircuitOpen { retry_at } => retry_at.min(refused.retry_at),
                        _ => refused.retry_at,
                    };
                    refusal = Refusal::CircuitOpen { retry_at };
                }
            }
        }
        self.scratch = order;
        Ok(match picked {
            Some(agent) => {
                self.directory.add_in_flight(agent, 1)?;
                Ok(agent)
            }
            None => Err(refusal),
        })
    }

    /// Ends a routed call: it is no longer in flight, and its outcome (`Some(true)` success,
    /// `Some(false)` failure, `None` neither, as when the caller gave up) goes to the breaker.
    /// An agent deregistered meanwhile is ignored.
    pub fn finish(&mut self, agent: u32, outcome: Option<bool>, now: Millis) {
        if self.directory.add_in_flight(agent, -1).is_err() {
            return;
        }
        let Some(target) = self.targets.get_mut(&agent) else { return };
        match outcome {
            Some(true) => target.breaker.success(now),
            Some(false) => target.breaker.failure(now),
            None => target.breaker.release(),
        }
        self.collect_breaker(agent);
    }

    /// An agent's breaker state at `now`.
    pub fn breaker_state(&mut self, agent: u32, now: Millis) -> Result<BreakerState, RoutingError> {
        let target = self.targets.get_mut(&agent).ok_or(RoutingError::UnknownAgent(agent))?;
        let state = target.breaker.state(now);
        self.collect_breaker(agent);
        Ok(state)
    }

    /// Applies what is due at `now`: missed heartbeats, deregistrations, and breakers whose
    /// cool-down ended (they turn half-open).
    pub fn tick(&mut self, now: Millis) {
        self.directory.tick(now);
        while let Some(&Reverse((Deadline(at), agent))) = self.cool_downs.peek() {
            if at > now {
                break;
            }
            self.cool_downs.pop();
            if let Some(target) = self.targets.get_mut(&agent) {
                target.breaker.tick(now);
                self.collect_breaker(agent);
            }
        }
        self.collect();
    }

    /// When [`RoutingState::tick`] next has work, or infinity.
    #[must_use]
    pub fn next_deadline(&self) -> Millis {
        let cool = self.cool_downs.peek().map_or(crate::manifest::NO_DEADLINE, |Reverse((at, _))| at.0);
        self.directory.next_deadline().min(cool)
    }

    /// The events since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Whether events are waiting.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    fn collect(&mut self) {
        for t in self.directory.take_transitions() {
            if t.to.is_none() {
                self.targets.remove(&t.agent);
                set_breaking(&mut self.breaking, t.agent, Breaking::Vacant);
            }
            self.events.push(Event::Health(t));
        }
    }

    fn collect_breaker(&mut self, agent: u32) {
        let Some(target) = self.targets.get_mut(&agent) else { return };
        for (from, to, at) in target.breaker.take_transitions() {
            let breaking = if to == BreakerState::Closed { Breaking::Closed } else { Breaking::Moving };
            set_breaking(&mut self.breaking, agent, breaking);
            if to == BreakerState::Open {
                self.cool_downs.push(Reverse((Deadline(target.breaker.next_deadline()), agent)));
            }
            self.events.push(Event::Breaker { agent, from, to, at });
        }
    }

    /// A new token bucket holding `capacity` tokens, refilled at `per_second`.
    pub fn limiter(&mut self, capacity: f64, per_second: f64, now: Millis) -> Result<u32, RoutingError> {
        if !(capacity >= 1.0 && capacity.is_finite() && per_second > 0.0 && per_second.is_finite()) {
            return Err(RoutingError::InvalidLimit(format!(
                "a limit needs a capacity >= 1 and a rate > 0, both finite (got {capacity} and {per_second})"
            )));
        }
        self.limiters
            .insert(TokenBucket::new(capacity, per_second, now))
            .ok_or_else(|| RoutingError::InvalidLimit("too many limiters".to_owned()))
    }

    /// Takes `n` tokens from a limiter: `Ok(Ok(()))`, or `Ok(Err(when))` with the time they
    /// will be there.
    pub fn take(&mut self, limiter: u32, n: f64, now: Millis) -> Result<Result<(), Millis>, RoutingError> {
        let bucket = self.limiters.get_mut(limiter).ok_or(RoutingError::UnknownLimiter(limiter))?;
        Ok(bucket.try_take(n, now))
    }

    /// Removes a limiter.
    pub fn drop_limiter(&mut self, limiter: u32) {
        self.limiters.remove(limiter);
    }

    /// The delay before retry `attempt` (1 for the first retry) of an exponential backoff,
    /// drawn from the mesh's seeded random source.
    pub fn backoff(&mut self, backoff: &Backoff, attempt: u32) -> Millis {
        backoff.delay(attempt, &mut self.random)
    }

    /// Like [`RoutingState::backoff`], with the jitter named by its code (0 none, 1 full, 2 equal).
    pub fn backoff_coded(&mut self, base: Millis, factor: f64, max: Millis, jitter: u32, attempt: u32) -> Millis {
        let jitter = match jitter {
            1 => Jitter::Full,
            2 => Jitter::Equal,
            _ => Jitter::None,
        };
        self.backoff(&Backoff { base, factor, max, jitter }, attempt)
    }
}

/// The number a health crosses the boundary as (its rank: 0 healthy … 5 offline).
#[must_use]
pub fn health_code(health: Health) -> u32 {
    health as u32
}

/// The health behind a code, if any.
#[must_use]
pub fn health_of(code: u32) -> Option<Health> {
    [Health::Healthy, Health::Degraded, Health::Initializing, Health::Unhealthy, Health::Paused, Health::Offline]
        .get(code as usize)
        .copied()
}

/// The number a breaker state crosses the boundary as.
#[must_use]
pub fn breaker_code(state: BreakerState) -> u32 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

/// The strategy behind a code (0 priority, 1 round-robin, 2 least-loaded, 3 random).
#[must_use]
pub fn strategy_of(code: u32) -> Option<Strategy> {
    [Strategy::Priority, Strategy::RoundRobin, Strategy::LeastLoaded, Strategy::Random].get(code as usize).copied()
}

/// Fields per agent in [`RoutingState::find_states`]' output.
pub const STATE_FIELDS: usize = 5;

/// Fields per event in [`encode_events`]' output.
pub const EVENT_FIELDS: usize = 5;

/// Events as numbers, [`EVENT_FIELDS`] each: kind (0 health, 1 breaker), agent, from, to (-1:
/// deregistered), at.
#[must_use]
pub fn encode_events(events: &[Event]) -> Vec<f64> {
    let mut out = Vec::with_capacity(events.len() * EVENT_FIELDS);
    for event in events {
        match event {
            Event::Health(t) => out.extend([
                0.0,
                f64::from(t.agent),
                f64::from(health_code(t.from)),
                t.to.map_or(-1.0, |h| f64::from(health_code(h))),
                t.at,
            ]),
            Event::Breaker { agent, from, to, at } => {
                out.extend([1.0, f64::from(*agent), f64::from(breaker_code(*from)), f64::from(breaker_code(*to)), *at]);
            }
        }
    }
    out
}
