//! The agent directory: agents with capabilities (a name, a semver version, a priority) and tags,
//! found by capability name and version range (`summarize@^1.2`), by tags and by minimum health,
//! in order of priority then health; and the selection strategies routing uses. Fuzzy names
//! are scored only when asked for, never silently.
//!
//! Health moves two ways: an agent reports it with each heartbeat, and missed heartbeats move it
//! down (degraded, unhealthy, offline) on the host's clock; an agent offline past a deadline is
//! deregistered. Every transition is recorded for the host to report as an event.

mod npm_semver;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub use npm_semver::{Identifier, Range, Version};
use rustc_hash::FxHashMap;

use crate::error::RoutingError;
use crate::names::Interner;
use crate::resilience::SplitMix64;
use crate::slab::Slab;
use crate::{Deadline, Millis};

/// When missed heartbeats move an agent down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Liveness {
    /// How often agents beat (ms).
    pub interval: Millis,
    /// Missed beats after which a healthy agent counts as degraded.
    pub degraded_after: u32,
    /// Missed beats after which it counts as unhealthy.
    pub unhealthy_after: u32,
    /// Missed beats after which it counts as offline.
    pub offline_after: u32,
    /// How long an agent stays offline before it is deregistered (ms).
    pub deregister_after: Millis,
}

impl Default for Liveness {
    fn default() -> Self {
        use crate::manifest::defaults as d;
        Self {
            interval: d::HEARTBEAT_INTERVAL_MS,
            degraded_after: d::DEGRADED_AFTER,
            unhealthy_after: d::UNHEALTHY_AFTER,
            offline_after: d::OFFLINE_AFTER,
            deregister_after: d::DEREGISTER_AFTER_MS,
        }
    }
}

/// A change of an agent's health; `to: None` means it was deregistered.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The agent's handle (no longer valid once it is deregistered).
    pub agent: u32,
    /// Its id.
    pub id: Box<str>,
    /// Its health before.
    pub from: Health,
    /// Its health after, or `None` when it was deregistered.
    pub to: Option<Health>,
    /// When (host ms).
    pub at: Millis,
}

/// How well an agent is, best first: queries accept an agent whose health ranks at or above
/// their minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    /// Working normally.
    Healthy,
    /// Working, with trouble (slow, or a dependency failing).
    Degraded,
    /// Registered, not yet started.
    Initializing,
    /// Not working.
    Unhealthy,
    /// Stopped taking messages on purpose.
    Paused,
    /// Gone silent.
    Offline,
}

/// One capability an agent offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The interned capability name.
    pub name: u32,
    /// Its version.
    pub version: Version,
    /// Higher is preferred.
    pub priority: i32,
}

/// A registered agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Its unique id.
    pub id: Box<str>,
    /// Its type (what a factory builds).
    pub kind: Box<str>,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// Interned tags, sorted.
    pub tags: Vec<u32>,
    /// How well it is.
    pub health: Health,
    /// Calls it is handling now (least-loaded selection).
    pub in_flight: u32,
    /// The health it last reported.
    pub reported: Health,
    /// When it last beat (or registered).
    pub last_beat: Millis,
    /// Counts beats: a scheduled check made before the latest beat is stale.
    beats: u64,
}

/// When an agent last beat and how many calls it is handling (copies of its `Agent` fields).
#[derive(Debug, Clone, Copy, Default)]
struct Activity {
    last_beat: Millis,
    in_flight: u32,
}

/// One agent offering one capability, in that capability's index.
#[derive(Debug, Clone)]
struct Provider {
    agent: u32,
    version: Version,
    priority: i32,
    order: u64,
}

/// What a search asks for.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    /// The interned capability name.
    pub capability: u32,
    /// Versions accepted.
    pub versions: &'a Range,
    /// The worst health accepted.
    pub min_health: Health,
    /// Interned tags every result must carry.
    pub tags: &'a [u32],
    /// Further capabilities (interned name, versions) every result must also offer.
    pub also: &'a [(u32, Range)],
}

/// How routing picks one agent among the matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The first match: highest priority, then best health.
    Priority,
    /// Each match in turn, per capability.
    RoundRobin,
    /// The match with the fewest calls in flight (ties: the first).
    LeastLoaded,
    /// A match drawn from the directory's seeded random source.
    Random,
}

/// The directory of agents: who offers what, in which health, and how to pick among them.
#[derive(Debug)]
pub struct Directory {
    names: Interner,
    agents: Slab<Agent>,
    ids: HashMap<Box<str>, u32>,
    /// Providers of each capability, kept sorted by priority (highest first), then order.
    providers: FxHashMap<u32, Vec<Provider>>,
    cursors: FxHashMap<u32, usize>,
    random: SplitMix64,
    registered: u64,
    liveness: Liveness,
    /// (when, agent, its beat count then): the next liveness check of each agent.
    checks: BinaryHeap<Reverse<(Deadline, u32, u64)>>,
    transitions: Vec<Transition>,
    /// Each live agent's health by slot index: discovery reads it for every provider, and a
    /// dense array stays in cache where the agents themselves would not.
    healths: Vec<Health>,
    /// Each live agent's last beat and calls in flight by slot index, beside `healths`: what
    /// discovery reports of every match, read without touching the agents.
    activity: Vec<Activity>,
    /// Scratch of `find`: (priority, health, order, agent) per match.
    matches: Vec<(i32, Health, u64, u32)>,
}

fn parse_version(text: &str) -> Result<Version, RoutingError> {
    Version::parse(text).map_err(|reason| RoutingError::InvalidVersion {
        what: "version",
        text: text.to_owned(),
        reason,
    })
}

/// Parses a version range in npm's grammar (`1.2.0`, `^1.2`, `>=1.0.0 <2`, `1.2 - 1.9`, `1.x || 2.x`).
///
/// # Errors
/// `INVALID_VERSION`, naming the part that does not parse.
pub fn parse_range(text: &str) -> Result<Range, RoutingError> {
    Range::parse(text).map_err(|reason| RoutingError::InvalidVersion {
        what: "version range",
        text: text.to_owned(),
        reason,
    })
}

impl Directory {
    /// An empty directory whose random selection draws from `seed`, with default liveness.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self::with_liveness(seed, Liveness::default())
    }

    /// An empty directory with its liveness settings.
    #[must_use]
    pub fn with_liveness(seed: u64, liveness: Liveness) -> Self {
        Self {
            names: Interner::default(),
            agents: Slab::default(),
            ids: HashMap::new(),
            providers: FxHashMap::default(),
            cursors: FxHashMap::default(),
            random: SplitMix64::new(seed),
            registered: 0,
            liveness,
            checks: BinaryHeap::new(),
            transitions: Vec::new(),
            healths: Vec::new(),
            activity: Vec::new(),
            matches: Vec::new(),
        }
    }

    /// The id of a capability name or tag.
    pub fn name(&mut self, name: &str) -> Result<u32, RoutingError> {
        Ok(self.names.intern(name)?)
    }

    /// Registers an agent at `now` with capabilities `(name, version, priority)` and tags; it
    /// starts `Initializing`, and its heartbeats are due from now on. Returns its handle.
    /// Checked whole before anything changes.
    pub fn register(
        &mut self,
        id: &str,
        kind: &str,
        capabilities: &[(&str, &str, i32)],
        tags: &[&str],
        now: Millis,
    ) -> Result<u32, RoutingError> {
        crate::names::validate(id)?;
        crate::names::validate(kind)?;
        if self.ids.contains_key(id) {
            return Err(RoutingError::DuplicateAgent(id.to_owned()));
        }
        let mut parsed = Vec::with_capacity(capabilities.len());
        for (i, &(name, version, priority)) in capabilities.iter().enumerate() {
            crate::names::validate(name)?;
            if capabilities[..i].iter().any(|c| c.0 == name) {
                return Err(RoutingError::InvalidArgument {
                    argument: format!("capability {name:?} of agent {id:?}"),
                    reason: "is listed twice",
                });
            }
            parsed.push((name, parse_version(version)?, priority));
        }
        for tag in tags {
            crate::names::validate(tag)?;
        }
        let capabilities: Vec<Capability> = parsed
            .into_iter()
            .map(|(name, version, priority)| Ok(Capability { name: self.name(name)?, version, priority }))
            .collect::<Result<_, RoutingError>>()?;
        let mut tags: Vec<u32> = tags.iter().map(|t| self.name(t)).collect::<Result<_, _>>()?;
        tags.sort_unstable();
        tags.dedup();
        self.registered += 1;
        let order = self.registered;
        let agent = Agent {
            id: id.into(),
            kind: kind.into(),
            capabilities: capabilities.clone(),
            tags,
            health: Health::Initializing,
            in_flight: 0,
            reported: Health::Initializing,
            last_beat: now,
            beats: 0,
        };
        let slot = self.agents.insert(agent).ok_or(RoutingError::Capacity {
            what: "agents registered at once",
            limit: crate::slab::MAX_ENTRIES,
            remedy: "stop agents first",
        })?;
        self.ids.insert(id.into(), slot);
        let index = crate::slab::index(slot);
        if self.healths.len() <= index {
            self.healths.resize(index + 1, Health::Offline);
        }
        self.healths[index] = Health::Initializing;
        if self.activity.len() <= index {
            self.activity.resize(index + 1, Activity::default());
        }
        self.activity[index] = Activity { last_beat: now, in_flight: 0 };
        self.schedule(slot, now, 0);
        for cap in capabilities {
            let list = self.providers.entry(cap.name).or_default();
            let provider = Provider { agent: slot, version: cap.version, priority: cap.priority, order };
            let at = list.partition_point(|p| {
                (p.priority, std::cmp::Reverse(p.order)) > (provider.priority, std::cmp::Reverse(order))
            });
            list.insert(at, provider);
        }
        Ok(slot)
    }

    /// Removes an agent.
    pub fn deregister(&mut self, agent: u32) -> Result<(), RoutingError> {
        let removed = self.agents.remove(agent).ok_or(RoutingError::UnknownAgent(agent))?;
        self.ids.remove(&removed.id);
        for cap in &removed.capabilities {
            if let Some(list) = self.providers.get_mut(&cap.name) {
                list.retain(|p| p.agent != agent);
            }
        }
        Ok(())
    }

    /// The handle of an agent id.
    #[must_use]
    pub fn find_id(&self, id: &str) -> Option<u32> {
        self.ids.get(id).copied()
    }

    /// A registered agent.
    #[must_use]
    pub fn agent(&self, agent: u32) -> Option<&Agent> {
        self.agents.get(agent)
    }

    /// Sets an agent's health (as a heartbeat reporting it would, without being one).
    pub fn set_health(&mut self, agent: u32, health: Health, now: Millis) -> Result<(), RoutingError> {
        let entry = self.agents.get_mut(agent).ok_or(RoutingError::UnknownAgent(agent))?;
        entry.reported = health;
        self.move_to(agent, health, now);
        Ok(())
    }

    /// An agent's heartbeat at `now`, reporting its health: it is back to what it reports,
    /// and its next beats are due from now.
    pub fn heartbeat(&mut self, agent: u32, reported: Health, now: Millis) -> Result<(), RoutingError> {
        let entry = self.agents.get_mut(agent).ok_or(RoutingError::UnknownAgent(agent))?;
        entry.reported = reported;
        entry.last_beat = now;
        entry.beats += 1;
        self.activity[crate::slab::index(agent)].last_beat = now;
        let beats = entry.beats;
        self.move_to(agent, reported, now);
        self.schedule(agent, now, beats);
        Ok(())
    }

    fn move_to(&mut self, agent: u32, to: Health, now: Millis) {
        let Some(entry) = self.agents.get_mut(agent) else { return };
        if entry.health != to {
            self.healths[crate::slab::index(agent)] = to;
            let from = std::mem::replace(&mut entry.health, to);
            self.transitions.push(Transition { agent, id: entry.id.clone(), from, to: Some(to), at: now });
        }
    }

    /// Schedules the first liveness check after a beat (or registration) at `at`.
    fn schedule(&mut self, agent: u32, at: Millis, beats: u64) {
        let first = at + f64::from(self.liveness.degraded_after.max(1)) * self.liveness.interval;
        self.checks.push(Reverse((Deadline(first), agent, beats)));
    }

    /// What missed beats make of an agent that reported `reported` and last beat at
    /// `last_beat`, at `now`; `None` once it is due to be deregistered.
    fn liveness_at(&self, reported: Health, last_beat: Millis, now: Millis) -> Option<Health> {
        let l = &self.liveness;
        let missed = ((now - last_beat) / l.interval).floor();
        let at_least = |h: Health| reported.max(h);
        if missed >= f64::from(l.offline_after) {
            let offline_since = last_beat + f64::from(l.offline_after) * l.interval;
            return (now - offline_since < l.deregister_after).then_some(Health::Offline);
        }
        Some(if missed >= f64::from(l.unhealthy_after) {
            at_least(Health::Unhealthy)
        } else if missed >= f64::from(l.degraded_after) {
            at_least(Health::Degraded)
        } else {
            reported
        })
    }

    /// The next liveness step's time, for the host's timer, or infinity.
    #[must_use]
    pub fn next_deadline(&self) -> Millis {
        self.checks.peek().map_or(crate::manifest::NO_DEADLINE, |Reverse((at, ..))| at.0)
    }

    /// Moves agents that missed beats down, and deregisters those offline too long.
    pub fn tick(&mut self, now: Millis) {
        while let Some(Reverse((at, agent, beats))) = self.checks.peek().copied() {
            if at.0 > now {
                break;
            }
            self.checks.pop();
            let Some(entry) = self.agents.get(agent) else { continue };
            if entry.beats != beats {
                continue; // it beat since this check was scheduled
            }
            let (reported, last_beat) = (entry.reported, entry.last_beat);
            // Step through the thresholds passed by `at`, one transition each, in order.
            if let Some(health) = self.liveness_at(reported, last_beat, at.0) {
                self.move_to(agent, health, at.0);
                if let Some(next) = self.next_step(last_beat, at.0) {
                    self.checks.push(Reverse((Deadline(next), agent, beats)));
                }
            } else {
                let from = entry.health;
                let id = entry.id.clone();
                if self.deregister(agent).is_ok() {
                    self.transitions.push(Transition { agent, id, from, to: None, at: at.0 });
                }
            }
        }
    }

    /// The next threshold after `after` for an agent that last beat at `last_beat`.
    fn next_step(&self, last_beat: Millis, after: Millis) -> Option<Millis> {
        let l = &self.liveness;
        [l.degraded_after, l.unhealthy_after, l.offline_after]
            .iter()
            .map(|&beats| last_beat + f64::from(beats) * l.interval)
            .chain(std::iter::once(last_beat + f64::from(l.offline_after) * l.interval + l.deregister_after))
            .find(|&at| at > after)
    }

    /// The transitions since the last call, oldest first.
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// Changes how many calls an agent is handling by `delta` (never below zero).
    pub fn add_in_flight(&mut self, agent: u32, delta: i32) -> Result<u32, RoutingError> {
        let entry = self.agents.get_mut(agent).ok_or(RoutingError::UnknownAgent(agent))?;
        entry.in_flight = entry.in_flight.saturating_add_signed(delta);
        self.activity[crate::slab::index(agent)].in_flight = entry.in_flight;
        Ok(entry.in_flight)
    }

    /// Sets how many calls an agent is handling.
    pub fn set_in_flight(&mut self, agent: u32, in_flight: u32) -> Result<(), RoutingError> {
        self.agents.get_mut(agent).ok_or(RoutingError::UnknownAgent(agent))?.in_flight = in_flight;
        self.activity[crate::slab::index(agent)].in_flight = in_flight;
        Ok(())
    }

    /// The agents matching `query`, best first (priority, then health, then registration).
    pub fn find(&mut self, query: &Query<'_>, out: &mut Vec<u32>) {
        out.clear();
        let Some(list) = self.providers.get(&query.capability) else { return };
        let matches = &mut self.matches;
        matches.clear();
        for p in list {
            let health = self.healths[crate::slab::index(p.agent)];
            if health > query.min_health || !query.versions.matches(&p.version) {
                continue;
            }
            if !query.tags.is_empty() || !query.also.is_empty() {
                let Some(agent) = self.agents.get(p.agent) else { continue };
                if !query.tags.iter().all(|t| agent.tags.binary_search(t).is_ok())
                    || !query.also.iter().all(|(name, versions)| {
                        agent.capabilities.iter().any(|c| c.name == *name && versions.matches(&c.version))
                    })
                {
                    continue;
                }
            }
            matches.push((p.priority, health, p.order, p.agent));
        }
        // Providers come sorted by priority, then registration: only unequal healths within a
        // priority need a (stable) sort, and most searches have none.
        let sorted = matches.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 <= w[1].1);
        if !sorted {
            matches.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        }
        out.extend(matches.iter().map(|m| m.3));
    }

    /// The health, calls in flight and last beat of an agent [`Directory::find`] just returned,
    /// read from dense arrays by slot index: a search reports these for every match, and
    /// looking each agent up in the slab missed the cache once per match.
    #[must_use]
    pub fn live_state(&self, agent: u32) -> (Health, u32, Millis) {
        let index = crate::slab::index(agent);
        let activity = self.activity[index];
        (self.healths[index], activity.in_flight, activity.last_beat)
    }

    /// The agents matching `query` in the order `strategy` tries them: best first for
    /// priority; rotated one step per call (per capability) for round-robin; fewest in flight
    /// first for least-loaded (stable, so ties keep the priority order); rotated to a seeded
    /// random start for random. Routing walks this order and takes the first agent it may call.
    pub fn order(&mut self, query: &Query<'_>, strategy: Strategy, out: &mut Vec<u32>) {
        self.find(query, out);
        if out.is_empty() {
            return;
        }
        match strategy {
            Strategy::Priority => {}
            Strategy::RoundRobin => {
                let cursor = self.cursors.entry(query.capability).or_insert(0);
                let start = *cursor % out.len();
                *cursor = cursor.wrapping_add(1);
                out.rotate_left(start);
            }
            Strategy::LeastLoaded => {
                let activity = &self.activity;
                out.sort_by_key(|&a| activity[crate::slab::index(a)].in_flight);
            }
            Strategy::Random => {
                let start = self.random.below(out.len());
                out.rotate_left(start);
            }
        }
    }

    /// One agent for `query` by `strategy`, or `None` when nothing matches.
    pub fn select(&mut self, query: &Query<'_>, strategy: Strategy, scratch: &mut Vec<u32>) -> Option<u32> {
        self.order(query, strategy, scratch);
        scratch.first().copied()
    }

    /// Capability names close to `name` (Jaro-Winkler similarity at least `threshold`), best
    /// first, with their scores: only when a caller asks, never in place of an exact match.
    #[must_use]
    pub fn similar(&self, name: &str, threshold: f64) -> Vec<(String, f64)> {
        let mut scored: Vec<(String, f64)> = self
            .providers
            .iter()
            .filter(|(_, list)| !list.is_empty())
            .filter_map(|(&id, _)| self.names.name(id))
            .map(|known| (known.to_owned(), strsim::jaro_winkler(name, known)))
            .filter(|(_, score)| *score >= threshold)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored
    }
}
