use proptest::prelude::*;

use super::Strategy;
use super::*;
use crate::Coded;

fn query<'a>(r: &mut Directory, cap: &str, versions: &'a Range, min_health: Health, tags: &'a [u32]) -> Query<'a> {
    Query { capability: r.name(cap).unwrap(), versions, min_health, tags, also: &[] }
}

#[test]
fn finds_by_capability_version_range_tags_and_health_in_priority_order() {
    let mut reg = Directory::new(1);
    let agent_a = reg.register("a", "summarizer", &[("summarize", "1.2.0", 5)], &["gpu"], 0.0).unwrap();
    let agent_b =
        reg.register("b", "summarizer", &[("summarize", "1.4.1", 9), ("translate", "2.0.0", 0)], &[], 0.0).unwrap();
    let agent_c = reg.register("c", "summarizer", &[("summarize", "2.0.0", 9)], &["gpu"], 0.0).unwrap();
    let agent_d = reg.register("d", "summarizer", &[("summarize", "1.3.0", 5)], &["gpu"], 0.0).unwrap();
    for agent in [agent_a, agent_b, agent_c, agent_d] {
        reg.set_health(agent, Health::Healthy, 0.0).unwrap();
    }
    reg.set_health(agent_d, Health::Degraded, 0.0).unwrap();
    let caret = parse_range("^1.2").unwrap();
    let mut out = Vec::new();
    let q = query(&mut reg, "summarize", &caret, Health::Degraded, &[]);
    reg.find(&q, &mut out);
    assert_eq!(out, vec![agent_b, agent_a, agent_d], "priority first, then health; c is 2.0.0");
    let gpu = [reg.name("gpu").unwrap()];
    let q = query(&mut reg, "summarize", &caret, Health::Healthy, &gpu);
    reg.find(&q, &mut out);
    assert_eq!(out, vec![agent_a], "tags and minimum health filter");
    reg.deregister(agent_b).unwrap();
    let q = query(&mut reg, "summarize", &caret, Health::Degraded, &[]);
    reg.find(&q, &mut out);
    assert_eq!(out, vec![agent_a, agent_d]);
    assert_eq!(reg.deregister(agent_b).unwrap_err().code(), "UNKNOWN_AGENT");
}

#[test]
fn selects_by_each_strategy() {
    let mut r = Directory::new(7);
    let agents: Vec<u32> =
        (0..3).map(|i| r.register(&format!("w{i}"), "worker", &[("work", "1.0.0", 0)], &[], 0.0).unwrap()).collect();
    for &agent in &agents {
        r.set_health(agent, Health::Healthy, 0.0).unwrap();
    }
    let any = parse_range("*").unwrap();
    let q = query(&mut r, "work", &any, Health::Healthy, &[]);
    let mut scratch = Vec::new();
    let round: Vec<u32> = (0..6).map(|_| r.select(&q, Strategy::RoundRobin, &mut scratch).unwrap()).collect();
    assert_eq!(round, [agents.clone(), agents.clone()].concat());
    r.set_in_flight(agents[0], 4).unwrap();
    r.set_in_flight(agents[1], 1).unwrap();
    r.set_in_flight(agents[2], 2).unwrap();
    assert_eq!(r.select(&q, Strategy::LeastLoaded, &mut scratch), Some(agents[1]));
    assert_eq!(r.select(&q, Strategy::Priority, &mut scratch), Some(agents[0]));
    let draws: Vec<u32> = (0..300).map(|_| r.select(&q, Strategy::Random, &mut scratch).unwrap()).collect();
    assert!(agents.iter().all(|a| draws.iter().filter(|&&d| d == *a).count() > 60));
    let mut again = Directory::new(7);
    for i in 0..3 {
        let agent = again.register(&format!("w{i}"), "worker", &[("work", "1.0.0", 0)], &[], 0.0).unwrap();
        again.set_health(agent, Health::Healthy, 0.0).unwrap();
    }
    let q2 = query(&mut again, "work", &any, Health::Healthy, &[]);
    let replay: Vec<u32> = (0..300).map(|_| again.select(&q2, Strategy::Random, &mut scratch).unwrap()).collect();
    assert_eq!(draws, replay, "a seed replays its draws");
}

#[test]
fn missed_heartbeats_move_an_agent_down_then_deregister_it() {
    let liveness = Liveness {
        interval: 1_000.0,
        degraded_after: 2,
        unhealthy_after: 3,
        offline_after: 5,
        deregister_after: 10_000.0,
    };
    let mut reg = Directory::with_liveness(0, liveness);
    let agent = reg.register("a", "k", &[("x", "1.0.0", 0)], &[], 0.0).unwrap();
    reg.heartbeat(agent, Health::Healthy, 0.0).unwrap();
    assert_eq!(reg.next_deadline(), 2_000.0);
    reg.tick(1_999.0);
    assert_eq!(reg.agent(agent).unwrap().health, Health::Healthy);
    reg.tick(3_500.0);
    assert_eq!(reg.agent(agent).unwrap().health, Health::Unhealthy, "two thresholds passed in one tick");
    reg.heartbeat(agent, Health::Healthy, 4_000.0).unwrap();
    assert_eq!(reg.agent(agent).unwrap().health, Health::Healthy, "a beat brings it back");
    reg.tick(8_999.0);
    assert_eq!(reg.agent(agent).unwrap().health, Health::Unhealthy);
    reg.tick(9_000.0);
    assert_eq!(reg.agent(agent).unwrap().health, Health::Offline);
    reg.tick(18_999.0);
    assert!(reg.agent(agent).is_some());
    reg.tick(19_000.0);
    assert!(reg.agent(agent).is_none() && reg.find_id("a").is_none(), "offline past its deadline: gone");
    let moves: Vec<(Health, Option<Health>, f64)> =
        reg.take_transitions().into_iter().map(|t| (t.from, t.to, t.at)).collect();
    assert_eq!(
        moves,
        vec![
            (Health::Initializing, Some(Health::Healthy), 0.0),
            (Health::Healthy, Some(Health::Degraded), 2_000.0),
            (Health::Degraded, Some(Health::Unhealthy), 3_000.0),
            (Health::Unhealthy, Some(Health::Healthy), 4_000.0),
            (Health::Healthy, Some(Health::Degraded), 6_000.0),
            (Health::Degraded, Some(Health::Unhealthy), 7_000.0),
            (Health::Unhealthy, Some(Health::Offline), 9_000.0),
            (Health::Offline, None, 19_000.0),
        ]
    );
    assert_eq!(reg.next_deadline(), f64::INFINITY);
}

#[test]
fn an_agent_reporting_worse_than_its_beats_show_keeps_what_it_reported() {
    let liveness = Liveness { interval: 1_000.0, ..Liveness::default() };
    let mut reg = Directory::with_liveness(0, liveness);
    let agent = reg.register("a", "k", &[], &[], 0.0).unwrap();
    reg.heartbeat(agent, Health::Unhealthy, 0.0).unwrap();
    reg.tick(2_500.0);
    assert_eq!(reg.agent(agent).unwrap().health, Health::Unhealthy, "missing beats never makes it look better");
}

#[test]
fn refuses_bad_input_and_changes_nothing() {
    let mut r = Directory::new(0);
    assert_eq!(r.register("a b", "k", &[], &[], 0.0).unwrap_err().code(), "INVALID_NAME");
    assert_eq!(r.register("a", "k", &[("x", "one", 0)], &[], 0.0).unwrap_err().code(), "INVALID_VERSION");
    assert_eq!(parse_range("^^1").unwrap_err().code(), "INVALID_VERSION");
    // The message quotes the text, then says what is wrong, naming the part at fault once.
    let said = |text: &str| parse_range(text).unwrap_err().to_string();
    assert_eq!(said("^^1"), r#"invalid version range "^^1": "^1" has a part that is not a number or x"#);
    assert_eq!(
        said("not a range"),
        r#"invalid version range "not a range": "not" has a part that is not a number or x"#
    );
    assert_eq!(said("1.x.2 || 2"), r#"invalid version range "1.x.2 || 2": "1.x.2" has a number after a wildcard"#);
    assert_eq!(said(">=1 <"), r#"invalid version range ">=1 <": "<" has no version after its operator"#);
    assert_eq!(
        said("1.2.3 - =1.2.4"),
        r#"invalid version range "1.2.3 - =1.2.4": "1.2.3 - =1.2.4" ends with a malformed version"#
    );
    assert_eq!(
        said("9007199254740991.x"),
        r#"invalid version range "9007199254740991.x": "9007199254740991.x" has a version part past 2^53 - 1"#
    );
    assert_eq!(
        r.register("a", "k", &[("x", "1.2.3-", 0)], &[], 0.0).unwrap_err().to_string(),
        r#"invalid version "1.2.3-": has an invalid prerelease identifier """#
    );
    r.register("a", "k", &[("x", "1.0.0", 0)], &[], 0.0).unwrap();
    assert_eq!(r.register("a", "k", &[], &[], 0.0).unwrap_err().code(), "DUPLICATE_AGENT");
    assert!(r.find_id("a").is_some());
}

#[test]
fn suggests_similar_names_only_when_asked() {
    let mut r = Directory::new(0);
    r.register("a", "k", &[("summarize", "1.0.0", 0), ("translate", "1.0.0", 0)], &[], 0.0).unwrap();
    let mut out = Vec::new();
    let any = parse_range("*").unwrap();
    let q = query(&mut r, "summarise", &any, Health::Offline, &[]);
    r.find(&q, &mut out);
    assert!(out.is_empty(), "no silent fuzzy match");
    let similar = r.similar("summarise", 0.9);
    assert_eq!(similar.len(), 1);
    assert_eq!(similar[0].0, "summarize");
    assert!(similar[0].1 > 0.9);
}

proptest! {
    #[test]
    fn finds_what_a_plain_filter_finds(
        agents in prop::collection::vec((0u8..4, 0u64..3, 0u64..4, -2i32..3, 0u8..4, any::<bool>()), 1..60),
        removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        cap in 0u8..4, major in 0u64..3, health in 0u8..4,
    ) {
        let healths = [Health::Healthy, Health::Degraded, Health::Initializing, Health::Unhealthy];
        let mut r = Directory::new(3);
        let mut model: Vec<(u32, u8, Version, i32, Health, bool)> = Vec::new();
        for (i, (c, ma, mi, priority, h, gpu)) in agents.into_iter().enumerate() {
            let version = format!("{ma}.{mi}.0");
            let tags: &[&str] = if gpu { &["gpu"] } else { &[] };
            let slot = r.register(&format!("agent-{i}"), "k", &[(&format!("cap-{c}"), &version, priority)], tags, 0.0).unwrap();
            r.set_health(slot, healths[h as usize], 0.0).unwrap();
            model.push((slot, c, Version::new(ma, mi, 0), priority, healths[h as usize], gpu));
        }
        for index in removed {
            if model.is_empty() { break }
            let (slot, ..) = model.remove(index.index(model.len()));
            r.deregister(slot).unwrap();
        }
        let range = parse_range(&format!("^{major}")).unwrap();
        let gpu = [r.name("gpu").unwrap()];
        for tags in [&[][..], &gpu[..]] {
            let q = Query { capability: r.name(&format!("cap-{cap}")).unwrap(), versions: &range, min_health: healths[health as usize], tags, also: &[] };
            let mut out = Vec::new();
            r.find(&q, &mut out);
            let mut want: Vec<&(u32, u8, Version, i32, Health, bool)> = model
                .iter()
                .filter(|m| m.1 == cap && range.matches(&m.2) && m.4 <= healths[health as usize] && (tags.is_empty() || m.5))
                .collect();
            // Registration order is slot order here (nothing reused a slot before its turn).
            want.sort_by(|a, b| b.3.cmp(&a.3).then(a.4.cmp(&b.4)).then(a.0.cmp(&b.0)));
            let want: Vec<u32> = want.into_iter().map(|m| m.0).collect();
            prop_assert_eq!(out, want);
        }
    }
}
