//! Typed errors. Every variant has a stable `code` that reaches JavaScript unchanged as
//! `error.code`, so callers branch on codes, never on messages.

use thiserror::Error;

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
        "{holder} of channel {channel:?} is full ({capacity} messages buffered) and refuses more; nothing was published: retry once it has read, or give it a larger buffer"
    )]
    Backpressure {
        /// The full consumer (subscriber or group).
        consumer: u32,
        /// Who it is, for people: `subscriber <id>` or `consumer group "<name>"`.
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
            Self::MalformedFrame { .. } => "MALFORMED_FRAME",
            Self::InvalidOption { .. } => "INVALID_OPTION",
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
    #[error("invalid key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value larger than the store's limit.
    #[error("value of {size} bytes exceeds the limit of {limit} bytes")]
    ValueTooLarge {
        /// The value's size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A write's condition does not hold: the key's version is not the expected one.
    #[error("version conflict at write {index}: expected {expected}, current {current}")]
    VersionConflict {
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
}

impl Coded for StoreError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::InvalidKey { .. } => "INVALID_KEY",
            Self::ValueTooLarge { .. } => "VALUE_TOO_LARGE",
            Self::VersionConflict { .. } => "VERSION_CONFLICT",
            Self::UnknownNamespace(_) => "UNKNOWN_NAMESPACE",
            Self::UnknownWriter(_) => "UNKNOWN_WRITER",
            Self::UnknownWatch(_) => "UNKNOWN_WATCH",
            Self::InvalidOption { .. } => "INVALID_OPTION",
            Self::MalformedWrite { .. } => "MALFORMED_WRITE",
            Self::InvalidSnapshot { .. } => "INVALID_SNAPSHOT",
        }
    }
}

impl From<BusError> for StoreError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::InvalidName { name, reason } => Self::InvalidName { name, reason },
            other => Self::InvalidSnapshot { reason: other.to_string() },
        }
    }
}

/// Why a registry operation was refused. A refused operation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
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
    #[error("invalid version {text:?}: {reason}")]
    InvalidVersion {
        /// The rejected text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An agent id registered already.
    #[error("agent {0:?} is registered already")]
    DuplicateAgent(String),
    /// An agent that is not registered (never, or no longer).
    #[error("unknown agent {0}")]
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
}

impl Coded for RegistryError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::InvalidVersion { .. } => "INVALID_VERSION",
            Self::DuplicateAgent(_) => "DUPLICATE_AGENT",
            Self::UnknownAgent(_) => "UNKNOWN_AGENT",
            Self::UnknownQuery(_) | Self::UnknownLimiter(_) => "INVALID_ARGUMENT",
            Self::InvalidLimit(_) => "INVALID_OPTION",
        }
    }
}

impl From<BusError> for RegistryError {
    fn from(err: BusError) -> Self {
        match err {
            BusError::InvalidName { name, reason } => Self::InvalidName { name, reason },
            // Interning refuses names only; nothing else reaches here.
            _ => Self::InvalidName { name: String::new(), reason: "is not a valid name" },
        }
    }
}
