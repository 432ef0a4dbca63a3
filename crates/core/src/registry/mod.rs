//! The agent registry: agents with capabilities (a name, a semver version, a priority) and tags,
//! found by capability name and version range (`summarize@^1.2`), by tags and by minimum health,
//! in order of priority then health; and the selection strategies routing uses. Fuzzy names
//! are scored only when asked for, never silently. Health moves by reports here; the heartbeat
//! state machine (missed beats moving an agent down) is the next step.

#[cfg(test)]
mod tests;

use std::collections::HashMap;

use rustc_hash::FxHashMap;
pub use semver::{Version, VersionReq};

use crate::error::RegistryError;
use crate::names::Interner;
use crate::resilience::SplitMix64;
use crate::slab::Slab;

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
    pub versions: &'a VersionReq,
    /// The worst health accepted.
    pub min_health: Health,
    /// Interned tags every result must carry.
    pub tags: &'a [u32],
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
    /// A match drawn from the registry's seeded random source.
    Random,
}

/// The registry.
#[derive(Debug)]
pub struct Registry {
    names: Interner,
    agents: Slab<Agent>,
    ids: HashMap<Box<str>, u32>,
    /// Providers of each capability, kept sorted by priority (highest first), then order.
    providers: FxHashMap<u32, Vec<Provider>>,
    cursors: FxHashMap<u32, usize>,
    random: SplitMix64,
    registered: u64,
}

fn parse_version(text: &str) -> Result<Version, RegistryError> {
    Version::parse(text).map_err(|e| RegistryError::InvalidVersion { text: text.to_owned(), reason: e.to_string() })
}

/// Parses a version range (`^1.2`, `>=1.0, <2`, `*`).
pub fn parse_range(text: &str) -> Result<VersionReq, RegistryError> {
    VersionReq::parse(text).map_err(|e| RegistryError::InvalidVersion { text: text.to_owned(), reason: e.to_string() })
}

impl Registry {
    /// An empty registry whose random selection draws from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            names: Interner::default(),
            agents: Slab::default(),
            ids: HashMap::new(),
            providers: FxHashMap::default(),
            cursors: FxHashMap::default(),
            random: SplitMix64::new(seed),
            registered: 0,
        }
    }

    /// The id of a capability name or tag.
    pub fn name(&mut self, name: &str) -> Result<u32, RegistryError> {
        Ok(self.names.intern(name)?)
    }

    /// Registers an agent with capabilities `(name, version, priority)` and tags; it starts
    /// `Initializing`. Returns its handle. Checked whole before anything changes.
    pub fn register(
        &mut self,
        id: &str,
        kind: &str,
        capabilities: &[(&str, &str, i32)],
        tags: &[&str],
    ) -> Result<u32, RegistryError> {
        crate::names::validate(id)?;
        crate::names::validate(kind)?;
        if self.ids.contains_key(id) {
            return Err(RegistryError::DuplicateAgent(id.to_owned()));
        }
        let mut parsed = Vec::with_capacity(capabilities.len());
        for &(name, version, priority) in capabilities {
            crate::names::validate(name)?;
            parsed.push((name, parse_version(version)?, priority));
        }
        for tag in tags {
            crate::names::validate(tag)?;
        }
        let capabilities: Vec<Capability> = parsed
            .into_iter()
            .map(|(name, version, priority)| Ok(Capability { name: self.name(name)?, version, priority }))
            .collect::<Result<_, RegistryError>>()?;
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
        };
        let slot = self
            .agents
            .insert(agent)
            .ok_or(RegistryError::InvalidName { name: id.to_owned(), reason: "the registry is full" })?;
        self.ids.insert(id.into(), slot);
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
    pub fn deregister(&mut self, agent: u32) -> Result<(), RegistryError> {
        let removed = self.agents.remove(agent).ok_or(RegistryError::UnknownAgent(agent))?;
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

    /// Sets an agent's health.
    pub fn set_health(&mut self, agent: u32, health: Health) -> Result<(), RegistryError> {
        self.agents.get_mut(agent).ok_or(RegistryError::UnknownAgent(agent))?.health = health;
        Ok(())
    }

    /// Sets how many calls an agent is handling.
    pub fn set_in_flight(&mut self, agent: u32, in_flight: u32) -> Result<(), RegistryError> {
        self.agents.get_mut(agent).ok_or(RegistryError::UnknownAgent(agent))?.in_flight = in_flight;
        Ok(())
    }

    /// The agents matching `query`, best first (priority, then health, then registration).
    pub fn find(&self, query: &Query<'_>, out: &mut Vec<u32>) {
        out.clear();
        let Some(list) = self.providers.get(&query.capability) else { return };
        let mut matches: Vec<(i32, Health, u64, u32)> = Vec::new();
        for p in list {
            let Some(agent) = self.agents.get(p.agent) else { continue };
            if agent.health > query.min_health
                || !query.versions.matches(&p.version)
                || !query.tags.iter().all(|t| agent.tags.binary_search(t).is_ok())
            {
                continue;
            }
            matches.push((p.priority, agent.health, p.order, p.agent));
        }
        // Providers come sorted by priority already; a stable sort by health within equal
        // priorities keeps registration order last.
        matches.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        out.extend(matches.into_iter().map(|m| m.3));
    }

    /// One agent for `query` by `strategy`, or `None` when nothing matches.
    pub fn select(&mut self, query: &Query<'_>, strategy: Strategy, scratch: &mut Vec<u32>) -> Option<u32> {
        self.find(query, scratch);
        if scratch.is_empty() {
            return None;
        }
        let pick = match strategy {
            Strategy::Priority => 0,
            Strategy::RoundRobin => {
                let cursor = self.cursors.entry(query.capability).or_insert(0);
                let pick = *cursor % scratch.len();
                *cursor = cursor.wrapping_add(1);
                pick
            }
            Strategy::LeastLoaded => {
                let load = |&a: &u32| self.agents.get(a).map_or(u32::MAX, |agent| agent.in_flight);
                (0..scratch.len()).min_by_key(|&i| load(&scratch[i])).unwrap_or(0)
            }
            Strategy::Random => self.random.below(scratch.len()),
        };
        Some(scratch[pick])
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
