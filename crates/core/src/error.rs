//! Typed errors. Every variant has a stable `code` that reaches JavaScript unchanged as
//! `error.code`, so callers branch on codes, never on messages.

use thiserror::Error;

/// An error with a stable, machine-readable code.
pub trait Coded {
    /// The stable code, `SCREAMING_SNAKE_CASE`, identical on every engine.
    fn code(&self) -> &'static str;
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
    /// A subscription id that does not exist (never created, or already removed).
    #[error("unknown subscription id {0}")]
    UnknownSubscription(u32),
    /// A frame's payload is larger than the configured limit.
    #[error("frame {index}: message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Position of the frame in its batch.
        index: usize,
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
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "INVALID_NAME",
            Self::UnknownChannel(_) => "UNKNOWN_CHANNEL",
            Self::UnknownSubscription(_) => "UNKNOWN_SUBSCRIPTION",
            Self::MessageTooLarge { .. } => "MESSAGE_TOO_LARGE",
            Self::MalformedFrame { .. } => "MALFORMED_FRAME",
            Self::InvalidOption { .. } => "INVALID_OPTION",
        }
    }
}
