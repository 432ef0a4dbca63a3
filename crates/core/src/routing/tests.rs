use super::*;
use crate::Coded;

fn breaker(failures_to_open: u32) -> BreakerConfig {
    BreakerConfig { failures_to_open, cool_down: 1_000.0, probes: 1, successes_to_close: 1 }
}

fn mesh_of(n: usize, bulkhead: u32, config: BreakerConfig) -> (RoutingState, Vec<u32>, u32) {
    let mut mesh = RoutingState::new(RoutingConfig { seed: 3, liveness: Liveness::default(), breaker: config });
    let agents: Vec<u32> = (0..n)
        .map(|i| {
            let prio = i32::try_from(n - i).unwrap();
            let a = mesh.register(&format!("w{i}"), "worker", &[("work", "1.2.0", prio)], &[], bulkhead, 0.0).unwrap();
            mesh.heartbeat(a, Health::Healthy, 0.0).unwrap();
            a
        })
        .collect();
    let q = mesh.query("work", "^1", Health::Degraded, &[], &[]).unwrap();
    mesh.take_events();
    (mesh, agents, q)
}

#[test]
fn routes_by_priority_and_falls_back_past_excluded_agents() {
    let (mut mesh, agents, q) = mesh_of(3, 0, breaker(5));
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 0.0).unwrap(), Ok(agents[0]));
    assert_eq!(mesh.route(q, Strategy::Priority, &[agents[0]], 0.0).unwrap(), Ok(agents[1]));
    assert_eq!(mesh.directory().agent(agents[0]).unwrap().in_flight, 1);
    mesh.finish(agents[0], Some(true), 1.0);
    assert_eq!(mesh.directory().agent(agents[0]).unwrap().in_flight, 0);
    assert_eq!(mesh.route(q, Strategy::Priority, &agents, 0.0).unwrap(), Err(Refusal::NoMatch));
    let none = mesh.query("missing", "*", Health::Degraded, &[], &[]).unwrap();
    assert_eq!(mesh.route(none, Strategy::Priority, &[], 0.0).unwrap(), Err(Refusal::NoMatch));
    assert_eq!(mesh.route(99, Strategy::Priority, &[], 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
}

#[test]
fn an_open_breaker_is_skipped_until_its_cool_down_ends_then_probed() {
    let (mut mesh, agents, q) = mesh_of(2, 0, breaker(2));
    for t in [1.0, 2.0] {
        assert_eq!(mesh.route(q, Strategy::Priority, &[], t).unwrap(), Ok(agents[0]));
        mesh.finish(agents[0], Some(false), t);
    }
    let events = mesh.take_events();
    assert_eq!(
        events,
        vec![Event::Breaker { agent: agents[0], from: BreakerState::Closed, to: BreakerState::Open, at: 2.0 }]
    );
    assert_eq!(mesh.next_deadline(), 1_002.0);
    // Open: calls go to the next agent.
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 10.0).unwrap(), Ok(agents[1]));
    // With the only other agent excluded, the refusal says when to try again.
    assert_eq!(
        mesh.route(q, Strategy::Priority, &[agents[1]], 10.0).unwrap(),
        Err(Refusal::CircuitOpen { retry_at: 1_002.0 })
    );
    mesh.tick(1_002.0);
    assert_eq!(
        mesh.take_events(),
        vec![Event::Breaker { agent: agents[0], from: BreakerState::Open, to: BreakerState::HalfOpen, at: 1_002.0 }]
    );
    // Half-open: one probe at a time.
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 1_003.0).unwrap(), Ok(agents[0]));
    assert_eq!(
        mesh.route(q, Strategy::Priority, &[agents[1]], 1_003.0).unwrap(),
        Err(Refusal::CircuitOpen { retry_at: 1_003.0 })
    );
    mesh.finish(agents[0], Some(true), 1_004.0);
    assert_eq!(mesh.breaker_state(agents[0], 1_004.0).unwrap(), BreakerState::Closed);
    // A probe whose caller gave up frees its slot without a verdict.
    for t in [2_000.0, 2_001.0] {
        mesh.route(q, Strategy::Priority, &[], t).unwrap().unwrap();
        mesh.finish(agents[0], Some(false), t);
    }
    mesh.tick(3_001.0);
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 3_001.0).unwrap(), Ok(agents[0]));
    mesh.finish(agents[0], None, 3_002.0);
    assert_eq!(mesh.breaker_state(agents[0], 3_002.0).unwrap(), BreakerState::HalfOpen);
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 3_003.0).unwrap(), Ok(agents[0]));
}

#[test]
fn a_bulkhead_caps_calls_in_flight_per_agent() {
    let (mut mesh, agents, q) = mesh_of(2, 2, breaker(5));
    let picks: Vec<u32> = (0..4).map(|_| mesh.route(q, Strategy::Priority, &[], 0.0).unwrap().unwrap()).collect();
    assert_eq!(picks, vec![agents[0], agents[0], agents[1], agents[1]]);
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 0.0).unwrap(), Err(Refusal::BulkheadFull));
    mesh.finish(agents[1], Some(true), 1.0);
    assert_eq!(mesh.route(q, Strategy::LeastLoaded, &[], 1.0).unwrap(), Ok(agents[1]));
}

#[test]
fn round_robin_and_random_visit_every_agent() {
    let (mut mesh, agents, q) = mesh_of(3, 0, breaker(5));
    let mut rr: Vec<u32> = (0..3).map(|_| mesh.route(q, Strategy::RoundRobin, &[], 0.0).unwrap().unwrap()).collect();
    rr.sort_unstable();
    let mut sorted = agents.clone();
    sorted.sort_unstable();
    assert_eq!(rr, sorted);
    let draws: Vec<u32> = (0..300).map(|_| mesh.route(q, Strategy::Random, &[], 0.0).unwrap().unwrap()).collect();
    assert!(agents.iter().all(|a| draws.contains(a)));
}

#[test]
fn queries_several_capabilities_at_once_and_checks_them() {
    let mut mesh = RoutingState::new(RoutingConfig::default());
    let a = mesh.register("a", "t", &[("split", "1.0.0", 0), ("embed", "2.1.0", 0)], &["gpu"], 0, 0.0).unwrap();
    let b = mesh.register("b", "t", &[("split", "1.0.0", 0), ("embed", "1.0.0", 0)], &["gpu"], 0, 0.0).unwrap();
    mesh.register("c", "t", &[("split", "1.0.0", 0)], &[], 0, 0.0).unwrap();
    let both = mesh.query("split", "^1", Health::Initializing, &["gpu"], &[("embed", ">=2")]).unwrap();
    let mut out = Vec::new();
    mesh.find(both, &mut out).unwrap();
    assert_eq!(out, vec![a]);
    let any_embed = mesh.query("split", "*", Health::Initializing, &[], &[("embed", "*")]).unwrap();
    mesh.find(any_embed, &mut out).unwrap();
    assert_eq!(out, vec![a, b]);
    assert_eq!(mesh.query("split", "not a range", Health::Healthy, &[], &[]).unwrap_err().code(), "INVALID_VERSION");
    assert_eq!(mesh.query("split", "*", Health::Healthy, &["bad tag"], &[]).unwrap_err().code(), "INVALID_NAME");
}

#[test]
fn missed_heartbeats_become_events_and_deregistration_drops_the_breaker() {
    let liveness = Liveness {
        interval: 100.0,
        degraded_after: 2,
        unhealthy_after: 3,
        offline_after: 5,
        deregister_after: 1_000.0,
    };
    let mut mesh = RoutingState::new(RoutingConfig { seed: 1, liveness, breaker: breaker(1) });
    let a = mesh.register("a", "t", &[("x", "1.0.0", 0)], &[], 0, 0.0).unwrap();
    mesh.heartbeat(a, Health::Healthy, 0.0).unwrap();
    mesh.tick(10_000.0);
    let events = encode_events(&mesh.take_events());
    let steps: Vec<(f64, f64, f64)> = events.chunks(EVENT_FIELDS).map(|e| (e[2], e[3], e[4])).collect();
    assert_eq!(
        steps,
        vec![(2.0, 0.0, 0.0), (0.0, 1.0, 200.0), (1.0, 3.0, 300.0), (3.0, 5.0, 500.0), (5.0, -1.0, 1_500.0)]
    );
    assert_eq!(mesh.breaker_state(a, 0.0).unwrap_err().code(), "UNKNOWN_AGENT");
    mesh.finish(a, Some(false), 0.0); // a late outcome for a gone agent is ignored
}

#[test]
fn limiters_refuse_until_refilled_and_check_their_settings() {
    let mut mesh = RoutingState::new(RoutingConfig::default());
    let l = mesh.limiter(2.0, 10.0, 0.0).unwrap();
    assert_eq!(mesh.take(l, 1.0, 0.0).unwrap(), Ok(()));
    assert_eq!(mesh.take(l, 1.0, 0.0).unwrap(), Ok(()));
    assert_eq!(mesh.take(l, 1.0, 0.0).unwrap(), Err(100.0));
    assert_eq!(mesh.take(l, 1.0, 100.0).unwrap(), Ok(()));
    mesh.drop_limiter(l);
    assert_eq!(mesh.take(l, 1.0, 0.0).unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(mesh.limiter(0.0, 1.0, 0.0).unwrap_err().code(), "INVALID_OPTION");
    assert_eq!(mesh.limiter(1.0, f64::NAN, 0.0).unwrap_err().code(), "INVALID_OPTION");
}

#[test]
fn backoff_is_seeded_and_capped() {
    let mut one = RoutingState::new(RoutingConfig { seed: 9, ..RoutingConfig::default() });
    let mut two = RoutingState::new(RoutingConfig { seed: 9, ..RoutingConfig::default() });
    let a: Vec<f64> = (1..8).map(|n| one.backoff_coded(100.0, 2.0, 1_000.0, 1, n)).collect();
    let b: Vec<f64> = (1..8).map(|n| two.backoff_coded(100.0, 2.0, 1_000.0, 1, n)).collect();
    assert_eq!(a, b);
    assert!(a.iter().all(|&d| (0.0..=1_000.0).contains(&d)));
    assert_eq!(one.backoff_coded(100.0, 2.0, 1_000.0, 0, 3), 400.0);
}

#[test]
fn parses_capability_specs() {
    assert_eq!(
        parse_capabilities("a 1.0.0 3\nb 2.0.0-rc.1\n").unwrap(),
        vec![("a", "1.0.0", 3), ("b", "2.0.0-rc.1", 0)]
    );
    assert_eq!(parse_capabilities("a").unwrap_err().code(), "INVALID_ARGUMENT");
    assert_eq!(parse_capabilities("a 1.0.0 x").unwrap_err().code(), "INVALID_ARGUMENT");
}

/// `find_states` as (handle, health, in flight, last beat, breaker) per match.
fn states(mesh: &mut RoutingState, q: u32, now: Millis) -> Vec<(u32, u32, u32, Millis, u32)> {
    let mut out = Vec::new();
    mesh.find_states(q, now, &mut out).unwrap();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    out.chunks(STATE_FIELDS).map(|s| (s[0] as u32, s[1] as u32, s[2] as u32, s[3], s[4] as u32)).collect()
}

#[test]
fn find_states_follow_health_calls_beats_breakers_and_reused_slots() {
    let (mut mesh, agents, q) = mesh_of(2, 0, breaker(1));
    assert_eq!(states(&mut mesh, q, 0.0), vec![(agents[0], 0, 0, 0.0, 0), (agents[1], 0, 0, 0.0, 0)]);
    mesh.heartbeat(agents[1], Health::Degraded, 5.0).unwrap();
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 6.0).unwrap(), Ok(agents[0]));
    assert_eq!(states(&mut mesh, q, 6.0), vec![(agents[0], 0, 1, 0.0, 0), (agents[1], 1, 0, 5.0, 0)]);
    // A failure opens the first agent's breaker; a search after its cool-down sees it half-open
    // (and reports that move as an event), and a probe's success closes it again.
    mesh.finish(agents[0], Some(false), 7.0);
    assert_eq!(states(&mut mesh, q, 8.0)[0], (agents[0], 0, 0, 0.0, 1));
    mesh.take_events();
    assert_eq!(states(&mut mesh, q, 1_007.0)[0], (agents[0], 0, 0, 0.0, 2));
    assert_eq!(
        mesh.take_events(),
        vec![Event::Breaker { agent: agents[0], from: BreakerState::Open, to: BreakerState::HalfOpen, at: 1_007.0 }]
    );
    assert_eq!(mesh.route(q, Strategy::Priority, &[], 1_008.0).unwrap(), Ok(agents[0]));
    mesh.finish(agents[0], Some(true), 1_009.0);
    assert_eq!(states(&mut mesh, q, 1_010.0)[0], (agents[0], 0, 0, 0.0, 0));
    // A slot freed and taken again reports its new agent only, with a closed breaker.
    mesh.finish(agents[0], Some(false), 1_011.0);
    mesh.deregister(agents[0]).unwrap();
    assert_eq!(states(&mut mesh, q, 1_012.0), vec![(agents[1], 1, 0, 5.0, 0)]);
    let again = mesh.register("w9", "worker", &[("work", "1.3.0", 9)], &[], 0, 1_013.0).unwrap();
    assert_eq!(crate::slab::index(again), crate::slab::index(agents[0]));
    assert_eq!(states(&mut mesh, q, 1_014.0), vec![(agents[1], 1, 0, 5.0, 0)]);
    mesh.heartbeat(again, Health::Healthy, 1_015.0).unwrap();
    assert_eq!(states(&mut mesh, q, 1_016.0), vec![(again, 0, 0, 1_015.0, 0), (agents[1], 1, 0, 5.0, 0)]);
}
