//! What the Rust and TypeScript sides must agree on, written once: error codes, option defaults
//! and limits, call-block slot counts, and the byte layouts of frames and store records.
//!
//! The core's own code uses these constants; [`render_ts`] writes them as the TypeScript module
//! `ts/engines/manifest.ts`, which the TS side imports instead of keeping copies. A unit test
//! fails when the checked-in file differs (`UPDATE_MANIFEST=1 cargo test -p orrery-core manifest`
//! rewrites it), and both engines export [`hash`] so that the TS adapter refuses, at start-up, an
//! engine binary built from another manifest than the TS it runs with.

use std::fmt::Write as _;
use std::sync::OnceLock;

use crate::frame;

/// Every error code an Orrery error can carry, with its meaning in one line. Codes the core
/// returns and codes only the TS layer raises share this one list, so the TS `ErrorCode` type
/// is derived from it.
pub const ERROR_CODES: &[(&str, &str)] = &[
    ("INVALID_NAME", "a channel, group, namespace, writer, agent, capability or tag name is empty, too long or holds a character outside the allowed set"),
    ("INVALID_ARGUMENT", "an argument has the wrong type or form"),
    ("INVALID_OPTION", "an option is outside its allowed range"),
    ("INVALID_PAYLOAD", "a payload cannot be encoded by its codec"),
    ("CLOSED", "the Orrery, bus endpoint, store or mesh was closed"),
    ("CAPACITY_EXCEEDED", "a fixed limit is reached (groups, subscriptions, endpoints, watches, agents, writes in one transaction)"),
    ("PANIC", "the native core panicked (a bug in Orrery); the process lives on"),
    ("ENGINE_POISONED", "a wasm panic trapped the instance; every later call fails"),
    ("ENGINE_NOT_BUILT", "the requested engine was not built in this checkout"),
    ("ENGINE_UNAVAILABLE", "the requested engine cannot run here"),
    ("ENGINE_MISMATCH", "the engine binary was built from another manifest than the TypeScript it runs with; rebuild the engines"),
    ("INTERNAL", "an engine error Orrery does not know"),
    ("UNKNOWN_CHANNEL", "a channel id this bus never issued"),
    ("UNKNOWN_SUBSCRIPTION", "a subscription that was removed or never existed"),
    ("UNKNOWN_GROUP", "a consumer group that was deleted or never existed"),
    ("UNKNOWN_ENDPOINT", "a bus endpoint (thread) that was closed or never opened"),
    ("MESSAGE_TOO_LARGE", "a message is over maxMessageBytes"),
    ("MALFORMED_FRAME", "frame bytes that do not follow the frame layout"),
    ("STALE_ACK", "an ack or nack of a delivery that is no longer current"),
    ("BACKPRESSURE", "a consumer's buffer is full and its policy refuses more"),
    ("NO_RESPONDER", "a request to a channel nothing answers"),
    ("NOT_A_REPLY", "a reply that answers no request"),
    ("TIMEOUT", "a request or call got no answer within its timeout"),
    ("SCHEMA_INVALID", "a payload failed its channel's schema"),
    ("HANDLER_ERROR", "a responder or agent handler threw"),
    ("INVALID_KEY", "a store key is empty, too long or not well-formed text"),
    ("VALUE_TOO_LARGE", "a value is over maxValueBytes, or more than the engine can hold"),
    ("VERSION_CONFLICT", "a conditional write found another version than it expected"),
    ("UNKNOWN_NAMESPACE", "a store namespace id this store never issued"),
    ("UNKNOWN_WRITER", "a writer id this store never issued"),
    ("UNKNOWN_WATCH", "a watch that ended or never existed"),
    ("MALFORMED_WRITE", "an encoded write or transaction that does not follow the layout"),
    ("INVALID_SNAPSHOT", "snapshot or on-disk record bytes that cannot be decoded"),
    ("STORE_IO", "the store's file could not be read or written"),
    ("WATCH_LAGGED", "a watch asked to replay from below what history keeps"),
    ("UNSUPPORTED", "the engine does not offer this call"),
    ("CAPABILITY_UNSUPPORTED", "the backend a channel is bound to cannot do what was asked; see docs/transports.md"),
    ("TRANSPORT_UNAVAILABLE", "a transport's server cannot be reached, did not answer in time, or its client library is not installed"),
    ("TRANSPORT_AUTH", "a transport's server refused the credentials"),
    ("DUPLICATE_AGENT", "an agent id that is registered already"),
    ("UNKNOWN_AGENT", "an agent that is not registered"),
    ("UNKNOWN_AGENT_TYPE", "an agent type that was never defined"),
    ("INVALID_VERSION", "a capability version or version range that does not parse"),
    ("INVALID_CONFIG", "a mesh configuration that cannot work"),
    ("NO_HANDLER", "an agent has no handler for the message's capability"),
    ("RATE_LIMITED", "a rate limit refused the call"),
    ("CIRCUIT_OPEN", "every matching agent's circuit breaker is open"),
    ("BULKHEAD_FULL", "every matching agent is at its limit of calls in flight"),
    ("AGENT_FAILED", "a supervisor gave up on its agents"),
    ("DEFINITION_INVALID", "a workflow definition or program that cannot run, naming the node and what is wrong"),
    ("UNKNOWN_WORKFLOW", "a workflow definition id the core never issued"),
    ("UNKNOWN_RUN", "a workflow run handle that was released or never issued"),
    ("LOOP_LIMIT", "a workflow loop was decided to go on past its maxIterations"),
    ("JOIN_UNREACHABLE", "a workflow join by any or quorum (parallel, forEach, scatterGather) can no longer get the successes it needs"),
    ("WORKFLOW_NOT_FOUND", "no workflow definition of that name (or version) is defined"),
    ("RUN_NOT_FOUND", "no workflow run with that id"),
    ("RUN_EXISTS", "a workflow run id that was started with another definition"),
    ("STEP_FAILED", "a workflow run failed: a step failed after its retries (the cause is the step's error)"),
    ("RUN_CANCELLED", "a workflow run was cancelled"),
    ("STEP_NOT_REGISTERED", "a workflow step names a function, mapping or condition nobody registered"),
    ("SIGNAL_UNKNOWN", "a signal name no waitFor of the run's definition waits for"),
    ("UNAUTHORIZED", "an HTTP API request carries no bearer token, or one the server does not know"),
    ("FORBIDDEN", "an HTTP API request's token lacks the scope the route needs (read, write or admin)"),
    ("NOT_FOUND", "no HTTP API route, agent, channel, group, namespace, key or run by that name"),
    ("REQUEST_TOO_LARGE", "an HTTP API request body is larger, or nested deeper, than the server allows"),
];

/// Codes that cross the boundary but never reach users: the host acts on them.
pub const BOUNDARY_CODES: &[(&str, &str)] =
    &[("BACKPRESSURE_WAIT", "a full consumer whose policy is block: the bus waits for room and retries")];

/// The engines' sentinel for "no deadline" (a next-deadline query with nothing due). Public
/// options say "none" with `Infinity`; the facade passes this sentinel on.
pub const NO_DEADLINE: f64 = f64::INFINITY;

/// Option defaults, as the facade applies them when an option is absent.
pub mod defaults {
    use crate::Millis;

    /// Largest message, frame included (bytes).
    pub const MAX_MESSAGE_BYTES: usize = 10 << 20;
    /// Messages a channel's log retains.
    pub const RETENTION_MAX_COUNT: usize = 10_000;
    /// Bytes a channel's log retains.
    pub const RETENTION_MAX_BYTES: usize = 64 << 20;
    /// How long a channel's log retains a message (ms; `Infinity`: forever).
    pub const RETENTION_MAX_AGE_MS: Millis = f64::INFINITY;
    /// Messages buffered for a subscriber or a group.
    pub const BUFFER: usize = 10_000;
    /// How long a group member holds a delivery before it is redelivered (ms).
    pub const VISIBILITY_TIMEOUT_MS: Millis = 30_000.0;
    /// Deliveries after which an unacknowledged message is dead-lettered.
    pub const MAX_DELIVERIES: u32 = 5;
    /// Changes buffered for a store watch.
    pub const WATCH_BUFFER: usize = 1024;
    /// Largest store value (bytes).
    pub const MAX_VALUE_BYTES: usize = 1 << 20;
    /// Older records a store key keeps.
    pub const HISTORY: usize = 0;
    /// How long a deleted key's tombstone is kept (ms).
    pub const TOMBSTONE_MS: Millis = 600_000.0;
    /// How far ahead of the local clock a merged stamp may be (ms).
    pub const MAX_CLOCK_DRIFT_MS: Millis = 60_000.0;
    /// How often agents beat (ms).
    pub const HEARTBEAT_INTERVAL_MS: Millis = 5_000.0;
    /// Missed beats after which a healthy agent counts as degraded.
    pub const DEGRADED_AFTER: u32 = 2;
    /// Missed beats after which it counts as unhealthy.
    pub const UNHEALTHY_AFTER: u32 = 3;
    /// Missed beats after which it counts as offline.
    pub const OFFLINE_AFTER: u32 = 5;
    /// How long an agent stays offline before it is deregistered (ms).
    pub const DEREGISTER_AFTER_MS: Millis = 60_000.0;
    /// Failures in a row that open an agent's circuit breaker.
    pub const BREAKER_FAILURES: u32 = 5;
    /// How long an open breaker waits before it lets a probe through (ms).
    pub const BREAKER_COOL_DOWN_MS: Millis = 10_000.0;
    /// Calls a half-open breaker lets through.
    pub const BREAKER_PROBES: u32 = 1;
    /// Successes that close a half-open breaker.
    pub const BREAKER_SUCCESSES: u32 = 1;
}

/// Limits every engine enforces the same way.
pub mod limits {
    /// Longest timer a host can arm (ms): 2^31 - 1, what `setTimeout` takes.
    pub const MAX_TIMER_MS: f64 = 2_147_483_647.0;
    /// Smallest `maxMessageBytes` (a frame's header and some room).
    pub const MIN_MESSAGE_BYTES: usize = 64;
    /// Largest `maxMessageBytes`: lengths are 32-bit.
    pub const MAX_MESSAGE_BYTES: usize = u32::MAX as usize;
    /// Largest buffer, in-flight limit, claim count or watch buffer: 2^28.
    pub const MAX_CAPACITY: usize = 1 << 28;
    /// Largest `maxValueBytes`: 256 MiB.
    pub const MAX_VALUE_BYTES: usize = 256 << 20;
    /// Longest channel, group, agent, capability or tag name (bytes).
    pub const MAX_NAME_BYTES: usize = crate::names::MAX_NAME_LEN;
    /// Longest store key (UTF-8 bytes).
    pub const MAX_KEY_BYTES: usize = crate::store::MAX_KEY_LEN;
    /// Most writes in one transaction.
    pub const MAX_TXN_WRITES: usize = crate::store::MAX_TXN_WRITES;
    /// Most groups, subscriptions, endpoints, watches or agents alive at once: 2^20.
    pub const MAX_LIVE_ENTRIES: usize = crate::slab::MAX_ENTRIES;
    /// Most requests of other processes a bus keeps a route for at once: 2^16 (the oldest goes).
    pub const MAX_OPEN_ROUTES: usize = crate::bus::MAX_OPEN_ROUTES;
}

/// Call blocks: the `Float64Array`s through which the native engine's hottest calls take their
/// arguments (slot 0 the target, then the arguments) and return their results (from slot 0).
pub mod call_block {
    /// Slots of the bus's and the store's call blocks.
    pub const SLOTS: usize = 8;
    /// Argument slots after the target.
    pub const ARGS: usize = 4;
    /// Slots of the mesh call block: the handle, the route arguments, then exclusions or matches.
    pub const MESH_SLOTS: usize = 4096;
}

/// The bus's codes and the order of the numbers in its flat arrays (`bus::wire` builds them
/// from these tables, so the order is written once).
pub mod bus_wire {
    use crate::bus::{ChannelStats, EventKind, GroupStats, PendingInfo, Replied, SubscriberStats};

    /// One number of a flat result: its name on the TS side, and how the core reads it.
    pub type Field<T, V = u64> = (&'static str, fn(&T) -> V);

    /// Where a new consumer starts, as `StartAt::from_code` reads it (checked by a test).
    pub const START_MODES: &[(&str, u32)] = &[("latest", 0), ("earliest", 1), ("seq", 2), ("time", 3)];
    /// Overflow policies, as `Overflow::from_code` reads them (checked by a test).
    pub const OVERFLOW: &[(&str, u32)] = &[("block", 0), ("drop-oldest", 1), ("reject", 2)];
    /// What became of a reply: the codes a reply call returns. `own`: the request was the
    /// replying endpoint's, settled in the core and not queued; the host resolves it itself.
    pub const REPLIED: &[(&str, Replied)] =
        &[("late", Replied::Late), ("queued", Replied::Queued), ("own", Replied::Own), ("remote", Replied::Remote)];
    /// Event kinds, by the code an event record carries.
    pub const EVENT_KINDS: &[(EventKind, &str)] = &[
        (EventKind::SlowConsumer, "slow-consumer"),
        (EventKind::Dropped, "dropped"),
        (EventKind::RequestTimeout, "request-timeout"),
    ];
    /// Consumer id of a record carrying a reply (attempt: the reply token).
    pub const REPLY_CONSUMER: u32 = crate::bus::REPLY_CONSUMER;
    /// Consumer id of a record carrying an event (attempt: its kind; seq: its value).
    pub const EVENT_CONSUMER: u32 = crate::bus::EVENT_CONSUMER;

    /// A channel's counters, in the order `bus::wire::channel_stats` returns them.
    pub const CHANNEL_STATS: &[Field<ChannelStats>] = &[
        ("published", |s| s.published),
        ("delivered", |s| s.delivered),
        ("retained", |s| s.retained),
        ("retainedBytes", |s| s.retained_bytes),
        ("firstSeq", |s| s.first_seq),
        ("nextSeq", |s| s.next_seq),
        ("subscribers", |s| s.subscribers),
        ("groups", |s| s.groups),
        ("duplicates", |s| s.duplicates),
        ("expired", |s| s.expired),
        ("deadLettered", |s| s.dead_lettered),
        ("ingested", |s| s.ingested),
        ("rejected", |s| s.rejected),
        ("routesDropped", |s| s.routes_dropped),
    ];
    /// A subscriber's counters, in the order `bus::wire::subscriber_stats` returns them.
    pub const SUBSCRIBER_STATS: &[Field<SubscriberStats>] = &[
        ("buffered", |s| s.buffered),
        ("delivered", |s| s.delivered),
        ("dropped", |s| s.dropped),
        ("missed", |s| s.missed),
        ("expired", |s| s.expired),
        ("lag", |s| s.lag),
    ];
    /// A group's counters, in the order `bus::wire::group_stats` returns them.
    pub const GROUP_STATS: &[Field<GroupStats>] = &[
        ("members", |s| s.members),
        ("backlog", |s| s.backlog),
        ("pending", |s| s.pending),
        ("delivered", |s| s.delivered),
        ("acked", |s| s.acked),
        ("nacked", |s| s.nacked),
        ("redelivered", |s| s.redelivered),
        ("deadLettered", |s| s.dead_lettered),
        ("expired", |s| s.expired),
    ];
    /// A pending entry's numbers, in the order `bus::wire::pending` returns them.
    #[allow(clippy::cast_precision_loss, reason = "sequence numbers stay below 2^53")]
    pub const PENDING_FIELDS: &[Field<PendingInfo, f64>] = &[
        ("seq", |p| p.seq as f64),
        ("member", |p| f64::from(p.member)),
        ("attempt", |p| f64::from(p.attempt)),
        ("deliveries", |p| f64::from(p.deliveries)),
        ("idle", |p| p.idle),
    ];
}

/// The store's byte layouts (`store::wire`).
pub mod store_wire {
    /// Bytes before a write's key.
    pub const WRITE_HEADER: usize = crate::store::wire::WRITE_HEADER;
    /// Bytes before a record's key.
    pub const RECORD_HEADER: usize = crate::store::wire::RECORD_HEADER;
    /// A write's action byte: put.
    pub const ACTION_PUT: u8 = 1;
    /// A write's action byte: delete.
    pub const ACTION_DELETE: u8 = 2;
    /// A write's action byte: check its condition only.
    pub const ACTION_CHECK: u8 = 3;
    /// A write's condition byte: none.
    pub const CONDITION_ANY: u8 = 0;
    /// A write's condition byte: the key is absent.
    pub const CONDITION_ABSENT: u8 = 1;
    /// A write's condition byte: the key is at the expected version.
    pub const CONDITION_VERSION: u8 = 2;
    /// A record's kind byte: a lag notice.
    pub const LAGGED: u8 = crate::store::wire::LAGGED;
    /// A watch's start mode: from now.
    pub const WATCH_NOW: u32 = 0;
    /// A watch's start mode: after a version.
    pub const WATCH_AFTER: u32 = 1;
    /// A watch's start mode: the current value, then changes.
    pub const WATCH_CURRENT: u32 = 2;
}

/// The numbers the bus and the mesh hand back in flat arrays.
pub mod fields {
    /// Numbers per pending entry of a group (seq, member, attempt, deliveries, idle).
    pub const PENDING: usize = super::bus_wire::PENDING_FIELDS.len();
    /// Numbers per match of a mesh find (handle, health, in flight, last beat, breaker).
    pub const MESH_STATE: usize = crate::routing::STATE_FIELDS;
    /// Numbers per mesh event.
    pub const MESH_EVENT: usize = crate::routing::EVENT_FIELDS;
    /// A route's status: an agent was picked.
    pub const ROUTED: f64 = crate::routing::wire::ROUTED;
    /// A route's status: nothing matches.
    pub const NO_MATCH: f64 = crate::routing::wire::NO_MATCH;
    /// A route's status: every match's breaker refuses.
    pub const CIRCUIT_OPEN: f64 = crate::routing::wire::CIRCUIT_OPEN;
    /// A route's status: every match is at its bulkhead's limit.
    pub const BULKHEAD_FULL: f64 = crate::routing::wire::BULKHEAD_FULL;
}

/// A TS number literal: integers without a fraction, `Infinity` for an infinite value.
fn number(value: f64) -> String {
    if value == f64::INFINITY {
        "Infinity".into()
    } else if value == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        format!("{value}")
    }
}

/// One `export const NAME = { key: value, ... } as const` object of numbers.
fn object(out: &mut String, doc: &str, name: &str, fields: &[(&str, f64)]) {
    let _ = writeln!(out, "/** {doc} */\nexport const {name} = {{");
    for (key, value) in fields {
        let _ = writeln!(out, "  {key}: {},", number(*value));
    }
    out.push_str("} as const\n\n");
}

/// One `export const NAME = { CODE: 'meaning', ... } as const` object of codes.
fn codes(out: &mut String, doc: &str, name: &str, codes: &[(&str, &str)]) {
    let _ = writeln!(out, "/** {doc} */\nexport const {name} = {{");
    for (code, meaning) in codes {
        // As Biome writes strings: single quotes unless the text holds one.
        if meaning.contains('\'') {
            let _ = writeln!(out, "  {code}: \"{meaning}\",");
        } else {
            let _ = writeln!(out, "  {code}: '{meaning}',");
        }
    }
    out.push_str("} as const\n\n");
}

/// A TS object key: bare when it is an identifier or a number, else quoted.
fn key(name: &str) -> String {
    let bare = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if bare {
        name.into()
    } else {
        format!("'{name}'")
    }
}

/// One `export const NAME = { key: value, ... } as const` object of numbers with any keys.
fn keyed(out: &mut String, doc: &str, name: &str, fields: &[(&str, f64)]) {
    let _ = writeln!(out, "/** {doc} */\nexport const {name} = {{");
    for (field, value) in fields {
        let _ = writeln!(out, "  {}: {},", key(field), number(*value));
    }
    out.push_str("} as const\n\n");
}

/// One `export const NAME = ['a', 'b'] as const` list of names, laid out as Biome does (on one
/// line when it fits in 160 columns, else one name a line).
fn names(out: &mut String, doc: &str, name: &str, names: &[&str]) {
    let _ = writeln!(out, "/** {doc} */");
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    let line = format!("export const {name} = [{}] as const", quoted.join(", "));
    if line.len() <= 160 {
        out.push_str(&line);
        out.push_str("\n\n");
    } else {
        let _ = writeln!(out, "export const {name} = [");
        for q in &quoted {
            let _ = writeln!(out, "  {q},");
        }
        out.push_str("] as const\n\n");
    }
}

#[allow(clippy::cast_precision_loss, reason = "every value here is far below 2^53")]
const fn n(value: usize) -> f64 {
    value as f64
}

/// The manifest's body: everything [`render_ts`] writes except the header and the hash.
fn body() -> String {
    let mut out = String::new();
    codes(&mut out, "Every code an OrreryError can carry, with its meaning.", "ERROR_CODES", ERROR_CODES);
    codes(&mut out, "Codes that cross the boundary but never reach users.", "BOUNDARY_CODES", BOUNDARY_CODES);
    options(&mut out);
    layouts(&mut out);
    bus_codes(&mut out);
    workflow_codes(&mut out);
    out
}

/// The workflow core's layouts and codes (crates/core/src/workflow).
pub mod workflow {
    pub use crate::workflow::codes::{
        FAILURE_REASONS, JOINS, MAX_DEPTH, MAX_INSTANCES, MAX_NODES, MAX_SIGNALS, NODES, NODE_OUTCOMES, NODE_WORDS,
        PROGRAM_FORMAT, RECORDS, RECORD_WORDS, RUN_STATUSES, STEP_OUTCOMES,
    };
}

/// The workflow core's program and record layouts, and its codes.
fn workflow_codes(out: &mut String) {
    use workflow as w;
    let codes = |list: &[(&'static str, u8)]| -> Vec<(&'static str, f64)> {
        list.iter().map(|&(name, code)| (name, f64::from(code))).collect()
    };
    object(
        out,
        "Workflow programs and records (crates/core/src/workflow): words per node and per record.",
        "WORKFLOW_LAYOUT",
        &[
            ("programFormat", f64::from(w::PROGRAM_FORMAT)),
            ("nodeWords", n(w::NODE_WORDS)),
            ("recordWords", n(w::RECORD_WORDS)),
        ],
    );
    object(
        out,
        "What a workflow program may hold: nodes, nesting depth, instances of one map (or items of one pipeline), signal indices.",
        "WORKFLOW_LIMITS",
        &[
            ("maxNodes", n(w::MAX_NODES)),
            ("maxDepth", n(w::MAX_DEPTH)),
            ("maxInstances", n(w::MAX_INSTANCES)),
            ("maxSignals", n(w::MAX_SIGNALS)),
        ],
    );
    keyed(out, "Workflow node kinds, as a program's node word 0 names them.", "WORKFLOW_NODES", &codes(w::NODES));
    keyed(out, "Workflow record kinds, as a record's word 0 names them.", "WORKFLOW_RECORDS", &codes(w::RECORDS));
    keyed(out, "Workflow run statuses (a run-done record's `a`).", "RUN_STATUSES", &codes(w::RUN_STATUSES));
    keyed(out, "Step outcomes, as `complete` takes them.", "STEP_OUTCOMES", &codes(w::STEP_OUTCOMES));
    keyed(out, "Join policies of parallel and map nodes.", "JOINS", &codes(w::JOINS));
    keyed(
        out,
        "How a node instance ended (a node-done record's `a`). skipped: succeeded without output (a branch that chose no arm, a wait that timed out with continue).",
        "NODE_OUTCOMES",
        &codes(w::NODE_OUTCOMES),
    );
    keyed(
        out,
        "Why a workflow node failed or a run ended: a node-done record's `c` (failed: where the failure began; cancelled: cancelled; else none) and a run-done record's scope word (word 4; none when completed, cancelled for a cancel). A node failing because a child failed carries the child's reason and names where it began, but an any or quorum join says join-unreachable and names itself. The token named is a step attempt's (step-failed, attempt-timeout), a timer's (node-, wait-, run-timeout), a decision's (loop-limit, decision-failed), or the last failure's (join-unreachable; 0 for a parallel of no branches).",
        "FAILURE_REASONS",
        &codes(w::FAILURE_REASONS),
    );
}

/// The names of a table of (name, value) pairs.
fn first<T>(list: &[(&'static str, T)]) -> Vec<&'static str> {
    list.iter().map(|(name, _)| *name).collect()
}

/// The bus's codes and flat-array orders, and the mesh's route refusals.
fn bus_codes(out: &mut String) {
    use bus_wire as b;
    let codes = |list: &[(&'static str, u32)]| -> Vec<(&'static str, f64)> {
        list.iter().map(|&(name, code)| (name, f64::from(code))).collect()
    };
    keyed(out, "Where a new consumer starts (`StartAt::from_code`).", "START_MODES", &codes(b::START_MODES));
    keyed(out, "Overflow policies (`Overflow::from_code`).", "OVERFLOW", &codes(b::OVERFLOW));
    let replied: Vec<(&str, f64)> = b::REPLIED.iter().map(|&(name, code)| (name, f64::from(code as u8))).collect();
    keyed(
        out,
        "What a reply call returns. `own`: the request was the replying endpoint's, settled in the core and not queued, so the host resolves it from the frame it sent. `remote`: the request was another process's, the reply left as egress.",
        "REPLIED",
        &replied,
    );
    let _ = writeln!(
        out,
        "/** Event kinds, by the code an event record carries (`EventKind`). */\nexport const EVENT_KINDS = {{"
    );
    for &(kind, name) in b::EVENT_KINDS {
        let _ = writeln!(out, "  {}: '{name}',", kind as u32);
    }
    out.push_str("} as const\n\n");
    let _ = writeln!(
        out,
        "/** Consumer id of a record carrying a reply (attempt: the reply token). */\nexport const REPLY_CONSUMER = {}\n",
        b::REPLY_CONSUMER
    );
    let _ = writeln!(
        out,
        "/** Consumer id of a record carrying an event (attempt: its kind; seq: its value). */\nexport const EVENT_CONSUMER = {}\n",
        b::EVENT_CONSUMER
    );
    names(
        out,
        "A channel's counters, in the order the engines return them.",
        "CHANNEL_STATS",
        &first(b::CHANNEL_STATS),
    );
    names(
        out,
        "A subscriber's counters, in the order the engines return them.",
        "SUBSCRIBER_STATS",
        &first(b::SUBSCRIBER_STATS),
    );
    names(out, "A group's counters, in the order the engines return them.", "GROUP_STATS", &first(b::GROUP_STATS));
    names(
        out,
        "A pending entry's numbers, in the order the engines return them.",
        "PENDING_FIELDS",
        &first(b::PENDING_FIELDS),
    );
    keyed(
        out,
        "What a route returns when it picks no agent (an agent's handle is >= 0): minus the route's status.",
        "ROUTE_REFUSED",
        &[
            ("noMatch", -fields::NO_MATCH),
            ("circuitOpen", -fields::CIRCUIT_OPEN),
            ("bulkheadFull", -fields::BULKHEAD_FULL),
        ],
    );
}

/// Option defaults and limits.
fn options(out: &mut String) {
    use defaults as d;
    use limits as l;
    object(
        out,
        "Option defaults, applied when an option is absent.",
        "DEFAULTS",
        &[
            ("maxMessageBytes", n(d::MAX_MESSAGE_BYTES)),
            ("retentionMaxCount", n(d::RETENTION_MAX_COUNT)),
            ("retentionMaxBytes", n(d::RETENTION_MAX_BYTES)),
            ("retentionMaxAgeMs", d::RETENTION_MAX_AGE_MS),
            ("buffer", n(d::BUFFER)),
            ("visibilityTimeoutMs", d::VISIBILITY_TIMEOUT_MS),
            ("maxDeliveries", f64::from(d::MAX_DELIVERIES)),
            ("watchBuffer", n(d::WATCH_BUFFER)),
            ("maxValueBytes", n(d::MAX_VALUE_BYTES)),
            ("history", n(d::HISTORY)),
            ("tombstoneMs", d::TOMBSTONE_MS),
            ("maxClockDriftMs", d::MAX_CLOCK_DRIFT_MS),
            ("heartbeatIntervalMs", d::HEARTBEAT_INTERVAL_MS),
            ("degradedAfter", f64::from(d::DEGRADED_AFTER)),
            ("unhealthyAfter", f64::from(d::UNHEALTHY_AFTER)),
            ("offlineAfter", f64::from(d::OFFLINE_AFTER)),
            ("deregisterAfterMs", d::DEREGISTER_AFTER_MS),
            ("breakerFailures", f64::from(d::BREAKER_FAILURES)),
            ("breakerCoolDownMs", d::BREAKER_COOL_DOWN_MS),
            ("breakerProbes", f64::from(d::BREAKER_PROBES)),
            ("breakerSuccesses", f64::from(d::BREAKER_SUCCESSES)),
        ],
    );
    object(
        out,
        "Limits every engine enforces the same way.",
        "LIMITS",
        &[
            ("maxTimerMs", l::MAX_TIMER_MS),
            ("minMessageBytes", n(l::MIN_MESSAGE_BYTES)),
            ("maxMessageBytes", n(l::MAX_MESSAGE_BYTES)),
            ("maxCapacity", n(l::MAX_CAPACITY)),
            ("maxValueBytes", n(l::MAX_VALUE_BYTES)),
            ("maxNameBytes", n(l::MAX_NAME_BYTES)),
            ("maxKeyBytes", n(l::MAX_KEY_BYTES)),
            ("maxTxnWrites", n(l::MAX_TXN_WRITES)),
            ("maxLiveEntries", n(l::MAX_LIVE_ENTRIES)),
            ("maxOpenRoutes", n(l::MAX_OPEN_ROUTES)),
        ],
    );
    let _ = writeln!(
        out,
        "/** The engines' sentinel for \"no deadline\"; public options say none with Infinity. */\nexport const NO_DEADLINE = {}\n",
        number(NO_DEADLINE)
    );
}

/// Byte layouts, call-block slots and flat-array field counts.
fn layouts(out: &mut String) {
    let frame: Vec<(&str, f64)> = frame::LAYOUT.iter().map(|&(name, value)| (name, n(value))).collect();
    object(out, "The frame layout (crates/core/src/frame.rs).", "FRAME", &frame);
    let remote: Vec<(&str, f64)> = crate::bus::REMOTE_LAYOUT.iter().map(|&(name, value)| (name, n(value))).collect();
    object(
        out,
        "Egress and ingest records of channels bound to a transport (crates/core/src/bus/remote.rs): header offsets, egress kinds (publish, ack, release, dead, request, reply) and ingest kinds (live, group, replied, unsent).",
        "REMOTE",
        &remote,
    );
    object(
        out,
        "Call-block slot counts: slot 0 the target, then the arguments; results from slot 0.",
        "CALL_BLOCK",
        &[("slots", n(call_block::SLOTS)), ("args", n(call_block::ARGS)), ("meshSlots", n(call_block::MESH_SLOTS))],
    );
    object(
        out,
        "The store's byte layouts (crates/core/src/store/wire.rs).",
        "STORE_WIRE",
        &[
            ("writeHeader", n(store_wire::WRITE_HEADER)),
            ("recordHeader", n(store_wire::RECORD_HEADER)),
            ("actionPut", f64::from(store_wire::ACTION_PUT)),
            ("actionDelete", f64::from(store_wire::ACTION_DELETE)),
            ("actionCheck", f64::from(store_wire::ACTION_CHECK)),
            ("conditionAny", f64::from(store_wire::CONDITION_ANY)),
            ("conditionAbsent", f64::from(store_wire::CONDITION_ABSENT)),
            ("conditionVersion", f64::from(store_wire::CONDITION_VERSION)),
            ("lagged", f64::from(store_wire::LAGGED)),
            ("watchNow", f64::from(store_wire::WATCH_NOW)),
            ("watchAfter", f64::from(store_wire::WATCH_AFTER)),
            ("watchCurrent", f64::from(store_wire::WATCH_CURRENT)),
        ],
    );
    object(
        out,
        "Numbers per entry of the flat arrays the bus and the mesh return, and route statuses.",
        "FIELDS",
        &[
            ("pending", n(fields::PENDING)),
            ("meshState", n(fields::MESH_STATE)),
            ("meshEvent", n(fields::MESH_EVENT)),
            ("routed", fields::ROUTED),
            ("noMatch", fields::NO_MATCH),
            ("circuitOpen", fields::CIRCUIT_OPEN),
            ("bulkheadFull", fields::BULKHEAD_FULL),
        ],
    );
}

/// FNV-1a, 64 bits: enough to tell two manifests apart, and a few lines instead of a crate.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The manifest's hash, as 16 hex digits: the engines export it and the TS adapter compares
/// it with the generated file's at start-up.
pub fn hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| format!("{:016x}", fnv1a(body().as_bytes())))
}

/// The TypeScript module `ts/engines/manifest.ts`.
#[must_use]
pub fn render_ts() -> String {
    let mut out = String::from(
        "// Generated by crates/core/src/manifest.rs: do not edit. To regenerate after changing the\n\
         // manifest: UPDATE_MANIFEST=1 cargo test -p orrery-core manifest\n\
         //\n\
         // What the core and the TS layer agree on: error codes, option defaults and limits, call-block\n\
         // slots and byte layouts. The engines export the MANIFEST_HASH they were built with; the\n\
         // adapter refuses to run on an engine built from another manifest (ENGINE_MISMATCH).\n\n",
    );
    out.push_str(&body());
    let _ = writeln!(
        out,
        "/** The hash of everything above, as the engines report it. */\nexport const MANIFEST_HASH = '{}'",
        hash()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ts/engines/manifest.ts");

    /// The golden file: the checked-in TS module is what the manifest renders.
    #[test]
    fn manifest_ts_is_current() {
        let rendered = render_ts();
        if std::env::var_os("UPDATE_MANIFEST").is_some() {
            std::fs::write(TS_PATH, &rendered).expect("write ts/engines/manifest.ts");
            return;
        }
        let checked_in = std::fs::read_to_string(TS_PATH).unwrap_or_default();
        assert!(
            checked_in == rendered,
            "ts/engines/manifest.ts is stale: run `UPDATE_MANIFEST=1 cargo test -p orrery-core manifest` and commit it"
        );
    }

    /// Every code the core's errors and the bindings return is in the list, once.
    #[test]
    fn manifest_lists_every_code_once() {
        let mut seen = std::collections::HashSet::new();
        for (code, meaning) in ERROR_CODES.iter().chain(BOUNDARY_CODES) {
            assert!(seen.insert(*code), "{code} listed twice");
            assert!(!meaning.is_empty() && !meaning.contains('\n'), "{code}");
        }
        let sources = [
            include_str!("error.rs"),
            include_str!("../../../bindings/node/src/store.rs"),
            include_str!("../../../bindings/node/src/error.rs"),
        ];
        for source in sources {
            for quoted in source.split('"').skip(1).step_by(2) {
                let is_code = quoted.len() > 3 && quoted.bytes().all(|b| b.is_ascii_uppercase() || b == b'_');
                if is_code {
                    assert!(seen.contains(quoted), "{quoted} is returned but not in manifest::ERROR_CODES");
                }
            }
        }
    }

    /// The hash changes with the manifest and is what the rendered file carries.
    #[test]
    fn manifest_hash_is_in_the_file() {
        assert_eq!(hash().len(), 16);
        assert!(render_ts().ends_with(&format!("export const MANIFEST_HASH = '{}'\n", hash())));
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    /// The start modes and overflow policies are the codes the core reads.
    #[test]
    fn manifest_bus_codes_are_the_cores() {
        use crate::bus::{Overflow, StartAt};
        for &(name, code) in bus_wire::START_MODES {
            let want = match name {
                "latest" => StartAt::Latest,
                "earliest" => StartAt::Earliest,
                "seq" => StartAt::Seq(7),
                "time" => StartAt::Time(7.0),
                _ => panic!("unknown start mode {name}"),
            };
            assert_eq!(StartAt::from_code(code, 7.0).ok(), Some(want), "{name}");
        }
        assert!(StartAt::from_code(4, 7.0).is_err());
        for &(name, code) in bus_wire::OVERFLOW {
            let want = match name {
                "block" => Overflow::Block,
                "drop-oldest" => Overflow::DropOldest,
                "reject" => Overflow::Reject,
                _ => panic!("unknown overflow policy {name}"),
            };
            assert_eq!(Overflow::from_code(code).ok(), Some(want), "{name}");
        }
        assert!(Overflow::from_code(3).is_err());
    }

    /// The stats tables name every counter of their struct, once.
    #[test]
    fn manifest_stats_tables_cover_their_structs() {
        fn fields(debug: &str) -> usize {
            debug.matches(": ").count()
        }
        let names = |list: Vec<&str>| list.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(
            names(first(bus_wire::CHANNEL_STATS)),
            fields(&format!("{:?}", crate::bus::ChannelStats::default()))
        );
        assert_eq!(
            names(first(bus_wire::SUBSCRIBER_STATS)),
            fields(&format!("{:?}", crate::bus::SubscriberStats::default()))
        );
        assert_eq!(names(first(bus_wire::GROUP_STATS)), fields(&format!("{:?}", crate::bus::GroupStats::default())));
        let entry = crate::bus::PendingInfo { seq: 1, member: 2, attempt: 3, deliveries: 4, idle: 5.0 };
        assert_eq!(names(first(bus_wire::PENDING_FIELDS)), fields(&format!("{entry:?}")));
        let values: Vec<f64> = bus_wire::PENDING_FIELDS.iter().map(|(_, get)| get(&entry)).collect();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    /// Numbers render as TS reads them.
    #[test]
    fn manifest_numbers_render_as_ts_literals() {
        assert_eq!(number(f64::INFINITY), "Infinity");
        assert_eq!(number(30_000.0), "30000");
        assert_eq!(number(2_147_483_647.0), "2147483647");
        assert_eq!(number(0.5), "0.5");
    }
}
