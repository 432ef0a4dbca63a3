//! Typed errors. Every variant has a stable `code` that reaches JavaScript unchanged as
//! `error.code`, so callers branch on codes, never on messages.

use thiserror::Error;

/// How a key or other user text appears in a message: lossy UTF-8, at most 64 characters, so a
/// megabyte key does not become a megabyte message.
#[must_use]
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out: String = text.chars().take(64).collect();
    if out.len() < text.len() {
        out.push_str("...");
    }
    format!("{out:?}")
}

/// An error with a stable, machine-readable code.
pub trait Coded {
    /// The stable code, `SCREAMING_SNAKE_CASE`, identical on every engine.
    fn code(&self) -> &'static str;

    /// The code as it crosses the boundary; the same as [`Coded::code`] unless an error says
    /// something only the host acts on.
    fn boundary_code(&self) -> &'static str {
        self.code()
    }
}

/// `text` after a space, or nothing when it is empty (a key the call could not read).
fn spaced(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    }
}

/// Why a bus operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusError {
    /// A channel or agent name is empty, too long, or holds a character outside the allowed set.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A channel id that was never interned by this bus.
    #[error("unknown channel id {0}")]
    UnknownChannel(u32),
    /// A subscriber or group-member id that does not exist (never created, or already removed).
    #[error(
        "no subscription {0}: it was removed (unsubscribed, left its group, or its Orrery closed) or never existed"
    )]
    UnknownSubscription(u32),
    /// A consumer-group id that does not exist.
    #[error("unknown consumer group id {0}")]
    UnknownGroup(u32),
    /// An endpoint id that does not exist (never opened, or closed).
    #[error("unknown endpoint id {0}")]
    UnknownEndpoint(u32),
    /// An ack or nack for a delivery attempt that is no longer current: the lease expired, the
    /// message went to another member, it was already settled, or the member left the group.
    #[error("stale ack of message seq {seq}: {reason}")]
    StaleAck {
        /// The message's sequence number.
        seq: u64,
        /// The attempt token given.
        attempt: u32,
        /// Why the delivery is no longer current.
        reason: &'static str,
    },
    /// A consumer's buffer is full and its policy is `reject` (or `block`, which the host turns
    /// into waiting). Nothing was published.
    #[error(
        "{holder} of channel {channel:?} is full ({capacity} messages buffered) and refuses more; nothing was published: retry once it has read, or give it a larger `buffer` option"
    )]
    Backpressure {
        /// The full consumer (subscriber or group).
        consumer: u32,
        /// Who it is, for people: `a subscriber` or `consumer group "<name>"`.
        holder: String,
        /// The channel published to, by name.
        channel: String,
        /// Its buffer capacity.
        capacity: usize,
        /// Whether its policy asks the publisher to wait rather than fail.
        block: bool,
    },
    /// A request to a channel that no subscriber or group member consumes.
    #[error(
        "no responder for channel {channel:?}: nothing subscribes to it and no consumer group on it has a member; call respond() on it first"
    )]
    NoResponder {
        /// The channel requested, by name.
        channel: String,
    },
    /// A reply frame without a reply token.
    #[error("the frame is not a reply to a request (reply token 0)")]
    NotAReply,
    /// A frame's payload is larger than the configured limit.
    #[error(
        "a message of {size} bytes (frame included) to channel {channel:?} is over maxMessageBytes = {limit} (item {index} of its batch); pass a larger maxMessageBytes to Orrery.create to allow it"
    )]
    MessageTooLarge {
        /// Position of the frame in its batch.
        index: usize,
        /// The channel it was published to, by name (empty where only the frame is known).
        channel: String,
        /// The message's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A frame whose bytes do not follow the frame layout.
    #[error("frame {index} at byte {offset}: {reason}")]
    MalformedFrame {
        /// Position of the frame in its batch.
        index: usize,
        /// Byte offset of the frame in the batch.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An option outside its allowed range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A call on a bus endpoint after it was closed.
    #[error("this bus endpoint is closed")]
    Closed,
    /// A fixed limit of the bus is reached (2^20 groups, subscriptions or endpoints at once).
    #[error("{what}: at most {limit} at once; close or delete some first")]
    Capacity {
        /// What ran out, for people (`consumer groups`).
        what: &'static str,
        /// How many there may be.
        limit: usize,
    },
    /// An argument outside what the call takes (a transport id of 0).
    #[error("{argument} {reason}")]
    InvalidArgument {
        /// The argument, for people.
        argument: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A channel that cannot be bound to a transport (bound to another, or used locally already).
    #[error("cannot bind channel {channel:?} to a transport: {reason}")]
    BindingRefused {
        /// The channel, by name.
        channel: String,
        /// Why not.
        reason: &'static str,
    },
    /// Something the backend a channel is bound to cannot do (a request across processes).
    #[error("channel {channel:?} is bound to a transport that cannot carry {capability}s yet")]
    Unsupported {
        /// What was asked, singular (`request`).
        capability: &'static str,
        /// The channel, by name.
        channel: String,
    },
    /// A publish to a durable channel after its disk failed: refused before anything is
    /// appended or delivered, so a retry cannot make a duplicate.
    #[error("channel {channel:?} is kept on disk, and the disk failed ({reason}); nothing was published")]
    DiskFailed {
        /// The channel, by name.
        channel: String,
        /// The disk's first failure.
        reason: String,
    },
    /// An ingest batch whose records do not follow the remote record layout; nothing was applied.
    #[error("ingest record {index} at byte {offset}: {reason}; nothing in the batch was applied")]
    MalformedRecord {
        /// Position of the record in its batch.
        index: usize,
        /// Byte offset of the record in the batch.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl Coded for BusError {
    /// Like [`Coded::code`], except that a full consumer whose policy is `block` says
    /// `BACKPRESSURE_WAIT`, which the host turns into waiting.
    fn boundary_code(&self) -> &'static str {
        match self {
            Self::Backpressure { block: true, .. } => "BACKPRESSURE_WAIT",
            other => other.code(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::UnknownChannel(_) => "UNKNOWN_CHANNEL",
            Self::UnknownSubscription(_) => "UNKNOWN_SUBSCRIPTION",
            Self::UnknownGroup(_) => "UNKNOWN_GROUP",
            Self::UnknownEndpoint(_) => "UNKNOWN_ENDPOINT",
            Self::StaleAck { .. } => "STALE_ACK",
            Self::Backpressure { .. } => "BACKPRESSURE",
            Self::NoResponder { .. } => "NO_RESPONDER",
            Self::NotAReply => "NOT_A_REPLY",
            Self::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            Self::MalformedFrame { .. } | Self::MalformedRecord { .. } => "MALFORMED_FRAME",
            Self::InvalidOption { .. } | Self::BindingRefused { .. } => "INVALID_OPTION",
            Self::Closed => "CLOSED",
            Self::Capacity { .. } => "CAPACITY_EXCEEDED",
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::Unsupported { .. } => "CAPABILITY_UNSUPPORTED",
            Self::DiskFailed { .. } => "TRANSPORT_UNAVAILABLE",
        }
    }
}

/// Why a store operation was refused. A refused operation (or transaction) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// A namespace or writer name is empty, too long, or holds a character outside the allowed set.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key is empty, too long, or not UTF-8.
    #[error("invalid key{}: {reason}", spaced(key))]
    InvalidKey {
        /// The key, as [`shown`] (quoted, at most 64 characters).
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value larger than the store's limit.
    #[error(
        "the value for key {key} is {size} bytes, over maxValueBytes = {limit}; pass a larger maxValueBytes to openStore to allow it"
    )]
    ValueTooLarge {
        /// The key, as [`shown`].
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The wasm instance cannot hold what a call needs (its memory tops out at 4 GiB).
    #[error(
        "the wasm engine's memory cannot hold another {bytes} bytes: {in_use_mib} MiB of the 4096 MiB a WebAssembly instance can address are in use; delete or purge keys, keep less history, lower maxValueBytes, or use the native engine"
    )]
    OutOfMemory {
        /// What was asked for.
        bytes: usize,
        /// The instance's memory in use, in MiB.
        in_use_mib: usize,
    },
    /// A write's condition does not hold: the key's version is not the expected one.
    #[error("version conflict on key {key} (write {index} of its transaction): expected version {expected}, current {current}")]
    VersionConflict {
        /// The key, as [`shown`].
        key: String,
        /// Position of the failing write in its transaction.
        index: usize,
        /// The version the write expected (0 = absent).
        expected: u64,
        /// The key's current version (0 = absent).
        current: u64,
    },
    /// A namespace id this store never issued.
    #[error("unknown namespace id {0}")]
    UnknownNamespace(u32),
    /// A writer id this store never issued.
    #[error("unknown writer id {0}")]
    UnknownWriter(u32),
    /// A watch id that does not exist (never created, or already ended).
    #[error("unknown watch id {0}")]
    UnknownWatch(u32),
    /// An option outside its allowed range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An encoded write or transaction that does not follow the layout.
    #[error("malformed write {index}: {reason}")]
    MalformedWrite {
        /// Position of the write in its batch.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Snapshot or record bytes that cannot be decoded.
    #[error("invalid snapshot: {reason}")]
    InvalidSnapshot {
        /// What is wrong with it.
        reason: String,
    },
    /// A call on a store after it was closed.
    #[error("the store is closed")]
    Closed,
    /// The store's file could not be read or written (a durable store).
    #[error("the store's disk failed: {reason}")]
    Io {
        /// What failed, with the file's path where known.
        reason: String,
    },
    /// A fixed limit of the store is reached (writes in one transaction, watches at once).
    #[error("{what}: at most {limit}")]
    Capacity {
        /// What ran out, for people (`writes in one transaction`).
        what: &'static str,
        /// How many there may be.
        limit: usize,
    },
}

impl Coded for StoreError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::InvalidKey { .. } => "INVALID_KEY",
            // OutOfMemory keeps the code users already branch on for "the engine cannot hold this".
            Self::ValueTooLarge { .. } | Self::OutOfMemory { .. } => "VALUE_TOO_LARGE",
            Self::VersionConflict { .. } => "VERSION_CONFLICT",
            Self::UnknownNamespace(_) => "UNKNOWN_NAMESPACE",
            Self::UnknownWriter(_) => "UNKNOWN_WRITER",
            Self::UnknownWatch(_) => "UNKNOWN_WATCH",
            Self::InvalidOption { .. } => "INVALID_OPTION",
            Self::MalformedWrite { .. } => "MALFORMED_WRITE",
            Self::InvalidSnapshot { .. } => "INVALID_SNAPSHOT",
            Self::Closed => "CLOSED",
            Self::Io { .. } => "STORE_IO",
            Self::Capacity { .. } => "CAPACITY_EXCEEDED",
        }
    }
}

impl From<BusError> for StoreError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::InvalidName { name, reason } => Self::InvalidName { name, reason },
            BusError::Capacity { what, limit } => Self::Capacity { what, limit },
            other => Self::InvalidSnapshot { reason: other.to_string() },
        }
    }
}

/// Why a directory or routing operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoutingError {
    /// An agent id, kind, capability or tag that is empty, too long, or holds a character
    /// outside the allowed set.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A capability version or version range that does not parse.
    #[error("invalid {what} {text:?}: {reason}")]
    InvalidVersion {
        /// `version` or `version range`.
        what: &'static str,
        /// The rejected text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An agent id registered already.
    #[error("agent {0:?} is registered already")]
    DuplicateAgent(String),
    /// An agent that is not registered (never, or no longer).
    #[error(
        "no agent with handle {0}: it was deregistered (stopped, or offline past deregisterAfter) or never registered"
    )]
    UnknownAgent(u32),
    /// A query id that was never compiled.
    #[error("unknown query {0}")]
    UnknownQuery(u32),
    /// A rate limiter that does not exist (never, or no longer).
    #[error("unknown limiter {0}")]
    UnknownLimiter(u32),
    /// A rate limit that cannot work.
    #[error("{0}")]
    InvalidLimit(String),
    /// An argument that does not have the form the call takes (a capability spec line, a code).
    #[error("{argument} {reason}")]
    InvalidArgument {
        /// The argument, for people (`capability line "a 1.0.0 x"`).
        argument: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A call on a mesh after it was closed.
    #[error("the mesh is closed")]
    Closed,
    /// A fixed limit is reached (agents registered at once, compiled queries).
    #[error("{what}: at most {limit}; {remedy}")]
    Capacity {
        /// What ran out, for people (`agents registered at once`).
        what: &'static str,
        /// How many there may be.
        limit: usize,
        /// What to do.
        remedy: &'static str,
    },
}

impl Coded for RoutingError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::InvalidVersion { .. } => "INVALID_VERSION",
            Self::DuplicateAgent(_) => "DUPLICATE_AGENT",
            Self::UnknownAgent(_) => "UNKNOWN_AGENT",
            Self::UnknownQuery(_) | Self::UnknownLimiter(_) | Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::InvalidLimit(_) => "INVALID_OPTION",
            Self::Closed => "CLOSED",
            Self::Capacity { .. } => "CAPACITY_EXCEEDED",
        }
    }
}

impl From<BusError> for RoutingError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::InvalidName { name, reason } => Self::InvalidName { name, reason },
            BusError::Capacity { what, limit } => {
                Self::Capacity { what, limit, remedy: "deregister agents or drop queries first" }
            }
            // Interning refuses names, or runs out of ids; nothing else reaches here.
            other => Self::InvalidArgument { argument: other.to_string(), reason: "(unexpected)" },
        }
    }
}

/// Why a workflow call was refused. A refused call changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WorkflowError {
    /// A program that does not follow the layout or cannot run, naming the node index.
    #[error("invalid workflow program{}: {reason}", at_node(*node))]
    DefinitionInvalid {
        /// The program index of the bad node, when one is to blame.
        node: Option<u32>,
        /// What is wrong.
        reason: String,
    },
    /// A definition id this core never issued.
    #[error("unknown workflow definition {0}")]
    UnknownWorkflow(u32),
    /// A run handle that was released or never issued.
    #[error("unknown workflow run {0}: it was released or never started")]
    UnknownRun(u32),
    /// An argument outside what the call takes (NaN, an outcome above 2, a signal index beyond
    /// the program's signals, a decision no node can take).
    #[error("{argument} {reason}")]
    InvalidArgument {
        /// The argument, for people.
        argument: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A call after the host closed its workflow core.
    #[error("the workflow core is closed")]
    Closed,
    /// A fixed limit is reached (runs alive at once).
    #[error("{what}: at most {limit} at once; release finished runs first")]
    Capacity {
        /// What ran out, for people.
        what: &'static str,
        /// How many there may be.
        limit: usize,
    },
}

/// ` at node N` when a node is to blame.
fn at_node(node: Option<u32>) -> String {
    node.map(|n| format!(" at node {n}")).unwrap_or_default()
}

impl Coded for WorkflowError {
    fn code(&self) -> &'static str {
        match self {
            Self::DefinitionInvalid { .. } => "DEFINITION_INVALID",
            Self::UnknownWorkflow(_) => "UNKNOWN_WORKFLOW",
            Self::UnknownRun(_) => "UNKNOWN_RUN",
            Self::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Self::Closed => "CLOSED",
            Self::Capacity { .. } => "CAPACITY_EXCEEDED",
        }
    }
}
