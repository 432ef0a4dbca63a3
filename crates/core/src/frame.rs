//! The frame layout: how one message crosses the boundary as bytes.
//!
//! The core reads only the fixed header; the metadata section (ids, sender, recipient, headers,
//! schema) and the payload are encoded by the TypeScript layer and handed back untouched, so no
//! JSON or per-message object is built in Rust. All numbers are little-endian.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | `len`: bytes in the whole frame, this field included |
//! | 4  | 1 | layout version, [`VERSION`] |
//! | 5  | 1 | kind (command, query, response, event, heartbeat, error, data, notification) |
//! | 6  | 1 | priority: 0 low, 1 normal, 2 high, 3 critical |
//! | 7  | 1 | payload codec (0 raw, 1 JSON, 2 msgpack; opaque to the core) |
//! | 8  | 4 | channel id (interned) |
//! | 12 | 4 | flags (reserved, 0) |
//! | 16 | 8 | timestamp, f64 ms; 0 asks the core to stamp the publish time |
//! | 24 | 8 | expiry, f64 ms on the host clock; 0 means never |
//! | 32 | 4 | reply token: set by the core on a request, echoed by the reply (0 otherwise) |
//! | 36 | 4 | `meta_len`: bytes of the metadata section |
//! | 40 | `meta_len` | metadata section |
//! | … | rest | payload |
//!
//! The metadata section holds six short strings, each a length byte and UTF-8 bytes: id,
//! sender, recipient, correlation id, causation id, schema; then a u16 header count and that
//! many (u16 length, key, u16 length, value) pairs. The core checks this structure, reads the
//! id (deduplication) and appends headers when it dead-letters a message.
//!
//! `ts/frame.ts` mirrors these constants; the vitest suite checks both against
//! [`LAYOUT`], which the bindings export.

use crate::error::BusError;
use crate::Millis;

/// Layout version written at offset 4.
pub const VERSION: u8 = 1;
/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 40;
/// Offset of the layout version byte.
pub const OFF_VERSION: usize = 4;
/// Offset of the kind byte.
pub const OFF_KIND: usize = 5;
/// Offset of the priority byte.
pub const OFF_PRIORITY: usize = 6;
/// Offset of the codec byte.
pub const OFF_CODEC: usize = 7;
/// Offset of the channel id.
pub const OFF_CHANNEL: usize = 8;
/// Offset of the flags word.
pub const OFF_FLAGS: usize = 12;
/// Offset of the timestamp.
pub const OFF_TIMESTAMP: usize = 16;
/// Offset of the expiry.
pub const OFF_EXPIRES: usize = 24;
/// Offset of the reply token.
pub const OFF_REPLY: usize = 32;
/// Offset of the metadata length.
pub const OFF_META_LEN: usize = 36;
/// Highest kind code (notification).
pub const MAX_KIND: u8 = 7;
/// Highest priority (critical).
pub const MAX_PRIORITY: u8 = 3;

/// Bytes in a delivery record's header, before the frame: subscription id (u32),
/// attempt (u32, 0 for broadcast deliveries) and sequence number (f64).
pub const DELIVERY_HEADER_LEN: usize = 16;

/// Every layout constant by name, for the bindings to export and the TS layer to check.
pub const LAYOUT: [(&str, usize); 14] = [
    ("version", VERSION as usize),
    ("headerLen", HEADER_LEN),
    ("offVersion", OFF_VERSION),
    ("offKind", OFF_KIND),
    ("offPriority", OFF_PRIORITY),
    ("offCodec", OFF_CODEC),
    ("offChannel", OFF_CHANNEL),
    ("offFlags", OFF_FLAGS),
    ("offTimestamp", OFF_TIMESTAMP),
    ("offExpires", OFF_EXPIRES),
    ("offReply", OFF_REPLY),
    ("offMetaLen", OFF_META_LEN),
    ("deliveryHeaderLen", DELIVERY_HEADER_LEN),
    ("maxPriority", MAX_PRIORITY as usize),
];

/// The fixed-header fields the core acts on, read from one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    /// The channel the frame is published to.
    pub channel: u32,
    /// 0 low … 3 critical.
    pub priority: u8,
    /// Expiry on the host clock, or 0 for never.
    pub expires_at: Millis,
    /// Total frame length in bytes.
    pub len: usize,
}

/// Number of short strings at the start of the metadata section.
const META_STRINGS: usize = 6;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u16_at(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]))
}

/// Walks the metadata section of `meta`; returns the offset (within `meta`) of the header
/// count, or `None` when the structure does not fit in `meta`.
fn check_meta(meta: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..META_STRINGS {
        at += 1 + usize::from(*meta.get(at)?);
    }
    let count_at = at;
    let count = u16_at(meta.get(at..at + 2)?, 0);
    at += 2;
    for _ in 0..count * 2 {
        at += 2 + u16_at(meta.get(at..at + 2)?, 0);
    }
    (at <= meta.len()).then_some(count_at)
}

/// The message id bytes of a checked frame (empty when the producer left it to be derived).
#[must_use]
pub fn id(frame: &[u8]) -> &[u8] {
    let len = usize::from(frame[HEADER_LEN]);
    &frame[HEADER_LEN + 1..HEADER_LEN + 1 + len]
}

/// The reply token of a frame.
#[must_use]
pub fn reply_token(frame: &[u8]) -> u32 {
    u32_at(frame, OFF_REPLY)
}

/// Sets the reply token of a frame.
pub fn set_reply_token(frame: &mut [u8], token: u32) {
    frame[OFF_REPLY..OFF_REPLY + 4].copy_from_slice(&token.to_le_bytes());
}

/// The channel id of a frame.
#[must_use]
pub fn channel(frame: &[u8]) -> u32 {
    u32_at(frame, OFF_CHANNEL)
}

/// The priority of a frame.
#[must_use]
pub fn priority(frame: &[u8]) -> u8 {
    frame[OFF_PRIORITY]
}

/// The expiry of a frame (0 for never).
#[must_use]
pub fn expires_at(frame: &[u8]) -> Millis {
    f64_at(frame, OFF_EXPIRES)
}

/// A copy of a checked frame moved to `channel`, with `headers` appended to its metadata
/// (how the core records why and how often a message was dead-lettered).
#[must_use]
pub fn with_headers(frame: &[u8], channel: u32, headers: &[(&str, &str)]) -> Vec<u8> {
    let meta_len = u32_at(frame, OFF_META_LEN) as usize;
    let meta = &frame[HEADER_LEN..HEADER_LEN + meta_len];
    let count_at = check_meta(meta).unwrap_or(meta_len.saturating_sub(2));
    let count = u16_at(meta, count_at);
    let mut extra = Vec::new();
    let mut added = 0;
    for (k, v) in headers {
        if count + added >= usize::from(u16::MAX) || k.len() > usize::from(u16::MAX) || v.len() > usize::from(u16::MAX)
        {
            break;
        }
        extra.extend_from_slice(&(k.len() as u16).to_le_bytes());
        extra.extend_from_slice(k.as_bytes());
        extra.extend_from_slice(&(v.len() as u16).to_le_bytes());
        extra.extend_from_slice(v.as_bytes());
        added += 1;
    }
    let mut out = Vec::with_capacity(frame.len() + extra.len());
    out.extend_from_slice(&frame[..HEADER_LEN + meta_len]);
    out.extend_from_slice(&extra);
    out.extend_from_slice(&frame[HEADER_LEN + meta_len..]);
    let at = HEADER_LEN + count_at;
    out[at..at + 2].copy_from_slice(&((count + added) as u16).to_le_bytes());
    let total = out.len() as u32;
    out[0..4].copy_from_slice(&total.to_le_bytes());
    out[OFF_META_LEN..OFF_META_LEN + 4].copy_from_slice(&((meta_len + extra.len()) as u32).to_le_bytes());
    out[OFF_CHANNEL..OFF_CHANNEL + 4].copy_from_slice(&channel.to_le_bytes());
    out[OFF_REPLY..OFF_REPLY + 4].copy_from_slice(&0u32.to_le_bytes());
    // A dead letter must stay readable: it no longer expires.
    out[OFF_EXPIRES..OFF_EXPIRES + 8].copy_from_slice(&0f64.to_le_bytes());
    out
}

fn f64_at(bytes: &[u8], at: usize) -> f64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    f64::from_le_bytes(b)
}

/// Writes the publish time into a frame whose producer left the timestamp at 0.
pub fn stamp(frame: &mut [u8], now: Millis) {
    if f64_at(frame, OFF_TIMESTAMP) == 0.0 {
        frame[OFF_TIMESTAMP..OFF_TIMESTAMP + 8].copy_from_slice(&now.to_le_bytes());
    }
}

/// Reads and checks the frame that starts at `offset` of `batch`.
///
/// `index` is the frame's position in its batch, for the error. `max_len` is the size limit.
pub fn read_header(batch: &[u8], offset: usize, index: usize, max_len: usize) -> Result<Header, BusError> {
    let malformed = |reason| BusError::MalformedFrame { index, offset, reason };
    let rest = &batch[offset..];
    if rest.len() < HEADER_LEN {
        return Err(malformed("shorter than the 40-byte header"));
    }
    let len = u32_at(rest, 0) as usize;
    if len > max_len {
        // The frame layout knows channel ids only; the bus puts the name in.
        return Err(BusError::MessageTooLarge { index, channel: String::new(), size: len, limit: max_len });
    }
    if len < HEADER_LEN {
        return Err(malformed("declared length is shorter than the header"));
    }
    if len > rest.len() {
        return Err(malformed("declared length runs past the end of the batch"));
    }
    if rest[OFF_VERSION] != VERSION {
        return Err(malformed("unknown layout version"));
    }
    if rest[OFF_KIND] > MAX_KIND {
        return Err(malformed("unknown message kind"));
    }
    let priority = rest[OFF_PRIORITY];
    if priority > MAX_PRIORITY {
        return Err(malformed("priority above 3 (critical)"));
    }
    if u32_at(rest, OFF_FLAGS) != 0 {
        return Err(malformed("reserved flags must be 0"));
    }
    let meta_len = u32_at(rest, OFF_META_LEN) as usize;
    // Compared without adding to it: on wasm32 (32-bit usize) `HEADER_LEN + meta_len` wraps for a
    // declared length past 2^32 - 41, and the slice below would panic, poisoning the instance.
    if meta_len > len - HEADER_LEN {
        return Err(malformed("metadata section runs past the frame"));
    }
    if check_meta(&rest[HEADER_LEN..HEADER_LEN + meta_len]).is_none() {
        return Err(malformed("metadata section does not follow its layout"));
    }
    let expires_at = f64_at(rest, OFF_EXPIRES);
    if !expires_at.is_finite() || expires_at < 0.0 || !f64_at(rest, OFF_TIMESTAMP).is_finite() {
        return Err(malformed("timestamp and expiry must be finite and not negative"));
    }
    Ok(Header { channel: u32_at(rest, OFF_CHANNEL), priority, expires_at, len })
}

/// Builds a frame with the given id and no other metadata; used by tests and benchmarks of the
/// core (hosts build frames in TS).
#[must_use]
pub fn encode(channel: u32, priority: u8, expires_at: Millis, id: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut meta = vec![id.len() as u8];
    meta.extend_from_slice(id);
    meta.extend_from_slice(&[0u8; META_STRINGS - 1 + 2]);
    let meta = &meta[..];
    let len = HEADER_LEN + meta.len() + payload.len();
    let mut frame = vec![0u8; HEADER_LEN];
    frame[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    frame[OFF_VERSION] = VERSION;
    frame[OFF_KIND] = 6; // data
    frame[OFF_PRIORITY] = priority;
    frame[OFF_CHANNEL..OFF_CHANNEL + 4].copy_from_slice(&channel.to_le_bytes());
    frame[OFF_EXPIRES..OFF_EXPIRES + 8].copy_from_slice(&expires_at.to_le_bytes());
    frame[OFF_META_LEN..OFF_META_LEN + 4].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    frame.extend_from_slice(meta);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_frame_reads_back() {
        let f = encode(7, 2, 99.0, b"m", b"payload");
        assert_eq!(id(&f), b"m");
        let h = read_header(&f, 0, 0, 1 << 20).unwrap();
        assert_eq!(h, Header { channel: 7, priority: 2, expires_at: 99.0, len: f.len() });
    }

    #[test]
    fn every_malformation_has_a_typed_error() {
        let good = encode(1, 1, 0.0, b"", b"x");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "MALFORMED_FRAME"),
            (
                {
                    let mut f = good.clone();
                    f[0] = 200;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[0] = 3;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_VERSION] = 9;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_KIND] = 8;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_PRIORITY] = 4;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_FLAGS] = 1;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_META_LEN] = 50;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[HEADER_LEN] = 9;
                    f
                },
                "MALFORMED_FRAME",
            ),
            (
                {
                    let mut f = good.clone();
                    f[OFF_EXPIRES..OFF_EXPIRES + 8].copy_from_slice(&f64::NAN.to_le_bytes());
                    f
                },
                "MALFORMED_FRAME",
            ),
        ];
        for (bytes, code) in cases {
            let err = read_header(&bytes, 0, 0, 1 << 20).unwrap_err();
            assert_eq!(crate::Coded::code(&err), code, "{err}");
        }
        let err = read_header(&good, 0, 3, 10).unwrap_err();
        assert!(matches!(err, BusError::MessageTooLarge { index: 3, limit: 10, .. }));
    }

    #[test]
    fn appended_headers_keep_the_frame_valid() {
        let f = encode(1, 2, 77.0, b"id-1", b"body");
        let g = with_headers(&f, 9, &[("reason", "timeout"), ("deliveries", "3")]);
        let h = read_header(&g, 0, 0, 1 << 20).unwrap();
        assert_eq!((h.channel, h.len, h.expires_at), (9, g.len(), 0.0));
        assert_eq!(id(&g), b"id-1");
        assert!(g.ends_with(b"body"));
        let meta = &g[HEADER_LEN..g.len() - 4];
        let count_at = check_meta(meta).unwrap();
        assert_eq!(u16_at(meta, count_at), 2);
    }

    #[test]
    fn stamp_fills_only_an_empty_timestamp() {
        let mut f = encode(0, 1, 0.0, b"", b"");
        stamp(&mut f, 5.0);
        stamp(&mut f, 9.0);
        assert_eq!(f64_at(&f, OFF_TIMESTAMP), 5.0);
    }
}
