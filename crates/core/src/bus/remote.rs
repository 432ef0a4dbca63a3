//! Channels bound to a transport: a broker another process shares, reached by a driver in the
//! host. The core does no I/O. Publishing to a bound channel appends nothing locally: each frame
//! becomes an *egress* record the host drains ([`Bus::drain_egress`]) and hands to the driver.
//! What the driver reads from the broker comes back through [`Bus::ingest`]: broadcast frames are
//! appended to the channel's log (a *mirror*, read by local subscribers as any log is, under the
//! local retention), group frames go to the members of a *remote group* under the usual leases,
//! attempt tokens and in-flight limits. Settling a remote group's delivery makes egress too;
//! redelivery is always the broker's (a released entry goes back to it, for any process to
//! take), so the delivery count is the broker's.
//!
//! The broker lets another process reclaim an entry `visibility + max(1000, visibility / 10)`
//! ms after handing it here, so this process must be done with it before: a remote group's
//! lease runs from *ingest*, not from the hand-over to a member. An entry ingested at `t` is
//! settled by `t + visibility` at the latest (acked, or given back with RELEASE or DEAD when its lease ends),
//! whether a member holds it, it is assigned and not yet drained, or it still waits in the
//! inbox; a claim or a late drain does not extend it, and a drain past it hands nothing over.
//! The lease is queued at ingest in the group's lease queue (in ingest order, so deadlines
//! grow with the host's clock); the ingest time stays beside the position here, not in the
//! group's pending entries, which local groups share. A GROUP record no member could take
//! (none, or all paused) is given back (RELEASE) at once instead of waiting; a well-formed frame larger
//! than this process's `max_message_bytes` is dead-lettered (`too-large`), a malformed one
//! acked away. A remote entry's dead letter names its broker position in
//! `x-orrery-origin-seq` (as text if UTF-8, else hex): the local seq means nothing elsewhere.
//!
//! Requests cross too. A request on a bound channel becomes a REQUEST record (the frame carries
//! the requester's reply token, the value its timeout); the requester keeps it open here as a
//! local request is kept (deadline, `RequestTimeout`, late replies counted). The driver adds
//! this process's *reply address* and writes it as a publish; one it could not write comes back
//! as an UNSENT record naming its token, which forgets it here (its caller was told already).
//! A LIVE or GROUP record read back with a *route* (that address and the timeout) gives the
//! frame a fresh local reply token, mapped to the route and the requester's token; a reply to
//! such a token is a REPLY record to the address, its frame carrying the requester's token again;
//! the requester's driver ingests it as a REPLIED record, settled by token as a local reply is
//! (late once timed out).
//!
//! Routes are what another process makes this one keep, so they are bounded three ways:
//! - a route is opened only where something here can answer: a LIVE record opens none while
//!   its channel has no local subscriber (a GROUP record reaches a member or goes straight back);
//! - it expires with the requester's timeout: at ingest time + the timeout, and for a LIVE
//!   record at the broker time it carries + the timeout + [`ROUTE_CLOCK_SKEW_MS`] if that is
//!   sooner; a LIVE request already past that when it is read (history a new mirror replays)
//!   opens none. The core's timers drop it silently (the requester reports the timeout);
//! - at most [`MAX_OPEN_ROUTES`] are open at once (a requester may wait for ever, or write any
//!   timeout): beyond, the oldest is dropped and counted in its channel's `routes_dropped`, and
//!   a reply to it is a late reply.
//!
//! Records, both ways, are laid end to end; all numbers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | record length: header, position, route and frame |
//! | 4  | 1 | kind: egress [`PUBLISH`], [`ACK`], [`RELEASE`], [`DEAD`], [`REQUEST`], [`REPLY`]; ingest [`LIVE`], [`GROUP`], [`REPLIED`], [`UNSENT`] |
//! | 5  | 3 | zero |
//! | 8  | 4 | channel id (PUBLISH, REQUEST, REPLY, LIVE), group id, or UNSENT the request's reply token (0 for REPLIED) |
//! | 12 | 4 | position length (0 but for ACK, RELEASE, DEAD and GROUP) |
//! | 16 | 4 | GROUP: the broker's delivery count (>= 1); otherwise 0 |
//! | 20 | 4 | route length: LIVE, GROUP: 0, or 8 + the reply address's length; REPLY: the address's length; otherwise 0 |
//! | 24 | 8 | f64: PUBLISH the dedup window (ms), REQUEST the timeout (ms), RELEASE the delay (ms), LIVE the broker time (ms); else 0 |
//! | 32 | … | the position (the broker's, opaque), the route, then the frame (PUBLISH, REQUEST, REPLY, DEAD, LIVE, GROUP, REPLIED) |
//!
//! An ingest route is the requester's timeout (f64, ms, > 0, may be infinite) then its reply
//! address (opaque, at least one byte); a REPLY's route is the address alone. A REPLY's
//! channel id is the bound channel the request came on (the driver it leaves by). An UNSENT
//! record is its header alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rustc_hash::FxHashMap;

use super::group::Pending;
use super::request::Request;
use super::{Bus, Frame};
use crate::error::BusError;
use crate::frame;
use crate::names::ChannelId;
use crate::Millis;

/// Bytes in a record's header.
pub const HEADER_LEN: usize = 32;
/// Offset of the record length.
pub const OFF_LENGTH: usize = 0;
/// Offset of the kind byte.
pub const OFF_KIND: usize = 4;
/// Offset of the channel or group id.
pub const OFF_ID: usize = 8;
/// Offset of the position length.
pub const OFF_POS_LEN: usize = 12;
/// Offset of the broker's delivery count.
pub const OFF_COUNT: usize = 16;
/// Offset of the route length.
pub const OFF_ROUTE_LEN: usize = 20;
/// Offset of the f64 value.
pub const OFF_VALUE: usize = 24;
/// Bytes of an ingest route before its reply address: the requester's timeout.
pub const ROUTE_TIMEOUT_LEN: usize = 8;
/// Egress: a frame to publish on the broker.
pub const PUBLISH: u8 = 1;
/// Egress: a group delivery is done; the broker forgets it.
pub const ACK: u8 = 2;
/// Egress: a group delivery goes back to the broker, deliverable again after the delay.
pub const RELEASE: u8 = 3;
/// Egress: a group delivery is dead: its dead-letter frame is published and the entry acked.
pub const DEAD: u8 = 4;
/// Egress: a request, to publish with this process's reply address.
pub const REQUEST: u8 = 5;
/// Egress: a reply to a request another process made, for its reply address.
pub const REPLY: u8 = 6;
/// Ingest: a broadcast frame for the channel's mirror.
pub const LIVE: u8 = 1;
/// Ingest: a frame delivered to this process's consumer of a group.
pub const GROUP: u8 = 2;
/// Ingest: a reply to one of this process's requests.
pub const REPLIED: u8 = 3;
/// Ingest: a request of this process's its driver could not write (its caller was told): forgotten.
pub const UNSENT: u8 = 4;

/// Most routes a bus keeps open at once: 2^16. A requester may wait for ever (or write any
/// timeout), so the count of routes, not their expiry, is what bounds their memory (a few
/// hundred bytes each, some MB in all); 65,536 requests in flight here unanswered is far past
/// what a responder works through in a timeout, so only routes nobody answers are dropped.
pub const MAX_OPEN_ROUTES: usize = 1 << 16;
/// How far the broker's clock may be behind this process's (ms) before a LIVE request read
/// back counts as expired on arrival: a skewed clock must not make fresh requests unanswerable.
pub const ROUTE_CLOCK_SKEW_MS: Millis = 60_000.0;

/// Every layout constant by name, for the manifest (`REMOTE`).
pub const LAYOUT: [(&str, usize); 19] = [
    ("headerLen", HEADER_LEN),
    ("offLength", OFF_LENGTH),
    ("offKind", OFF_KIND),
    ("offId", OFF_ID),
    ("offPosLen", OFF_POS_LEN),
    ("offCount", OFF_COUNT),
    ("offRouteLen", OFF_ROUTE_LEN),
    ("offValue", OFF_VALUE),
    ("routeTimeoutLen", ROUTE_TIMEOUT_LEN),
    ("publish", PUBLISH as usize),
    ("ack", ACK as usize),
    ("release", RELEASE as usize),
    ("dead", DEAD as usize),
    ("request", REQUEST as usize),
    ("reply", REPLY as usize),
    ("live", LIVE as usize),
    ("group", GROUP as usize),
    ("replied", REPLIED as usize),
    ("unsent", UNSENT as usize),
];

/// What a group on a bound channel keeps beside its pending entries.
#[derive(Debug, Default)]
pub(super) struct RemoteGroup {
    /// The local sequence number the next ingested entry gets.
    next_seq: u64,
    /// By local sequence number, while the entry is this process's: its broker position and
    /// when it was ingested (its lease runs from then).
    entries: FxHashMap<u64, Entry>,
}

/// One entry of a remote group, as the broker knows it.
#[derive(Debug)]
struct Entry {
    pos: Box<[u8]>,
    ingested: Millis,
}

impl RemoteGroup {
    /// Queues the egress record settling entry `seq` (ACK or RELEASE); its position is let go.
    pub(super) fn settle(&mut self, egress: &mut Vec<u8>, kind: u8, group: u32, seq: u64, value: f64) {
        let pos = self.entries.remove(&seq).map(|e| e.pos).unwrap_or_default();
        push(egress, kind, group, &pos, value, &[]);
    }

    /// Whether entry `seq`'s lease, `visibility` ms from its ingest, is over at `now`.
    pub(super) fn lease_over(&self, seq: u64, visibility: Millis, now: Millis) -> bool {
        self.entries.get(&seq).is_some_and(|e| e.ingested + visibility <= now)
    }
}

/// Appends one egress record; returns where its frame starts.
fn push(egress: &mut Vec<u8>, kind: u8, id: u32, pos: &[u8], value: f64, frame: &[u8]) -> usize {
    push_routed(egress, kind, id, pos, &[], value, frame)
}

/// Appends one egress record with a route; returns where its frame starts.
fn push_routed(egress: &mut Vec<u8>, kind: u8, id: u32, pos: &[u8], route: &[u8], value: f64, frame: &[u8]) -> usize {
    let len = HEADER_LEN + pos.len() + route.len() + frame.len();
    egress.reserve(len);
    // Frames are at most maxMessageBytes (a u32); positions and routes a few dozen bytes.
    egress.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    egress.extend_from_slice(&[kind, 0, 0, 0]);
    egress.extend_from_slice(&id.to_le_bytes());
    egress.extend_from_slice(&u32::try_from(pos.len()).unwrap_or(u32::MAX).to_le_bytes());
    egress.extend_from_slice(&[0; 4]);
    egress.extend_from_slice(&u32::try_from(route.len()).unwrap_or(u32::MAX).to_le_bytes());
    egress.extend_from_slice(&value.to_le_bytes());
    egress.extend_from_slice(pos);
    egress.extend_from_slice(route);
    let at = egress.len();
    egress.extend_from_slice(frame);
    at
}

/// Queues a checked request frame as a REQUEST record: stamped as a publish is, carrying the
/// requester's reply token and its timeout.
pub(super) fn push_request(egress: &mut Vec<u8>, bytes: &[u8], token: u32, timeout: Millis, now: Millis) {
    let channel = frame::channel(bytes);
    let at = push(egress, REQUEST, channel, &[], timeout, bytes);
    frame::stamp(&mut egress[at..], now);
    frame::set_reply_token(&mut egress[at..], token);
}

/// Where the reply to another process's request goes: kept with the local reply token the
/// request was given here (an open request whose deadline is the route's expiry).
#[derive(Debug)]
pub(super) struct Route {
    /// The requester's reply address.
    address: Box<[u8]>,
    /// The requester's reply token.
    token: u32,
    /// Its place in [`Routes`]' opening order.
    opened: u64,
}

/// The open routes' local tokens in the order they were opened, so the oldest goes first once
/// [`MAX_OPEN_ROUTES`] are open; a route leaves it whenever it leaves the bus's requests.
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_age: BTreeMap<u64, u32>,
    next: u64,
}

impl Routes {
    /// Open routes.
    pub(super) fn len(&self) -> usize {
        self.by_age.len()
    }

    /// A route left the bus's requests (answered, expired or dropped).
    pub(super) fn closed(&mut self, route: &Route) {
        self.by_age.remove(&route.opened);
    }

    /// Notes route `token` as the newest; returns its place.
    fn open(&mut self, token: u32) -> u64 {
        let opened = self.next;
        self.next += 1;
        self.by_age.insert(opened, token);
        opened
    }

    /// The oldest route's token, taken out of the order.
    fn pop_oldest(&mut self) -> Option<u32> {
        self.by_age.pop_first().map(|(_, token)| token)
    }
}

/// Queues a checked reply frame to a route as a REPLY record, carrying the requester's token;
/// `channel` is the bound channel the request came on.
pub(super) fn push_reply(egress: &mut Vec<u8>, route: &Route, channel: ChannelId, bytes: &[u8]) {
    let at = push_routed(egress, REPLY, channel, &[], &route.address, 0.0, bytes);
    frame::set_reply_token(&mut egress[at..], route.token);
}

/// Queues a checked frame as a PUBLISH record, stamped with the publish time as a local append
/// would be (a bound channel's frames carry no reply token).
pub(super) fn push_publish(egress: &mut Vec<u8>, bytes: &[u8], dedup_window: Millis, now: Millis) {
    let channel = frame::channel(bytes);
    let at = push(egress, PUBLISH, channel, &[], dedup_window, bytes);
    frame::stamp(&mut egress[at..], now);
    frame::set_reply_token(&mut egress[at..], 0);
}

/// Queues a RELEASE (no delay) for every entry of a deleted group, in sequence order.
pub(super) fn release_all(egress: &mut Vec<u8>, group: u32, remote: &RemoteGroup, pending: &FxHashMap<u64, Pending>) {
    let mut seqs: Vec<u64> = pending.keys().copied().collect();
    seqs.sort_unstable();
    for seq in seqs {
        let pos = remote.entries.get(&seq).map_or(&[][..], |e| &e.pos[..]);
        push(egress, RELEASE, group, pos, 0.0, &[]);
    }
}

/// A broker position as a header value: its text when it is UTF-8 (as Redis stream ids are),
/// else its bytes in hex.
fn position_text(pos: &[u8]) -> String {
    match std::str::from_utf8(pos) {
        Ok(text) => text.to_owned(),
        Err(_) => pos.iter().fold(String::with_capacity(pos.len() * 2), |mut hex, b| {
            let _ = write!(hex, "{b:02x}"); // writing to a String cannot fail
            hex
        }),
    }
}

/// What ingest makes of a frame.
enum FrameCheck {
    Ok,
    /// Well formed, but longer than this process's `max_message_bytes` (another process,
    /// allowing more, published it).
    TooLarge,
    Bad,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// One ingest record, its header checked.
struct Record<'a> {
    kind: u8,
    id: u32,
    count: u32,
    value: f64,
    pos: &'a [u8],
    /// An ingest route: the requester's timeout, then its reply address (empty: none).
    route: &'a [u8],
    frame: &'a [u8],
}

/// Reads and checks the header of the record at `offset` (its frame is checked when applied).
fn read_record(batch: &[u8], offset: usize, index: usize) -> Result<Record<'_>, BusError> {
    let malformed = |reason| BusError::MalformedRecord { index, offset, reason };
    let rest = &batch[offset..];
    if rest.len() < HEADER_LEN {
        return Err(malformed("shorter than the 32-byte record header"));
    }
    let len = u32_at(rest, OFF_LENGTH) as usize;
    if len < HEADER_LEN {
        return Err(malformed("declared length is shorter than the record header"));
    }
    if len > rest.len() {
        return Err(malformed("declared length runs past the end of the batch"));
    }
    let kind = rest[OFF_KIND];
    if !matches!(kind, LIVE | GROUP | REPLIED | UNSENT) {
        return Err(malformed("unknown record kind (1 live, 2 group, 3 replied, 4 unsent)"));
    }
    if rest[5..8] != [0; 3] {
        return Err(malformed("reserved bytes must be 0"));
    }
    let pos_len = u32_at(rest, OFF_POS_LEN) as usize;
    let route_len = u32_at(rest, OFF_ROUTE_LEN) as usize;
    // Compared without adding: `HEADER_LEN + pos_len` may wrap on wasm32.
    if pos_len > len - HEADER_LEN {
        return Err(malformed("position runs past the record"));
    }
    if route_len > len - HEADER_LEN - pos_len {
        return Err(malformed("route runs past the record"));
    }
    let count = u32_at(rest, OFF_COUNT);
    let mut value = [0u8; 8];
    value.copy_from_slice(&rest[OFF_VALUE..OFF_VALUE + 8]);
    let value = f64::from_le_bytes(value);
    let id = u32_at(rest, OFF_ID);
    let body = &rest[HEADER_LEN..len];
    let route = &body[pos_len..pos_len + route_len];
    match kind {
        LIVE => {
            if pos_len != 0 || count != 0 {
                return Err(malformed("a live record carries no position and no delivery count"));
            }
            if !value.is_finite() {
                return Err(malformed("a live record's broker time must be a finite number of ms"));
            }
        }
        GROUP => {
            if count == 0 {
                return Err(malformed("a group record's delivery count must be at least 1"));
            }
            if value != 0.0 {
                return Err(malformed("a group record's value must be 0"));
            }
        }
        REPLIED => {
            if id != 0 || pos_len != 0 || count != 0 || route_len != 0 || value != 0.0 {
                return Err(malformed("a replied record carries only its frame (every other field 0)"));
            }
        }
        _ => {
            if len != HEADER_LEN || count != 0 || value != 0.0 {
                return Err(malformed("an unsent record is its header alone: the reply token, every other field 0"));
            }
        }
    }
    if route_len != 0 {
        if route_len <= ROUTE_TIMEOUT_LEN {
            return Err(malformed(
                "a route is the requester's timeout (8 bytes) then a reply address of 1 byte or more",
            ));
        }
        let mut timeout = [0u8; 8];
        timeout.copy_from_slice(&route[..ROUTE_TIMEOUT_LEN]);
        // NaN is not greater than 0 either.
        if f64::from_le_bytes(timeout).partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(malformed("a route's timeout must be a number of ms > 0"));
        }
    }
    Ok(Record { kind, id, count, value, pos: &body[..pos_len], route, frame: &body[pos_len + route_len..] })
}

impl Bus {
    /// Binds `channel` (and its dead-letter channel) to `transport`: from now on its publishes
    /// leave as egress and its log mirrors the broker's. Binding again to the same transport does
    /// nothing; a channel bound elsewhere, or already used here (published to, subscribed to, or
    /// with groups), is refused: bindings come before first use.
    pub fn bind(&mut self, channel: ChannelId, transport: u32) -> Result<(), BusError> {
        if transport == 0 {
            return Err(BusError::InvalidArgument {
                argument: "transport",
                reason: "must be a transport id from 1 to 4294967295",
            });
        }
        let name = self.names.name(channel).ok_or(BusError::UnknownChannel(channel))?.to_owned();
        let bound = self.channel_ref(channel)?.transport;
        if bound == Some(transport) {
            return Ok(());
        }
        let dlq_name = format!("{name}.dead-letter");
        let dlq = self.channels[channel as usize].dead_letter.or_else(|| self.names.get(&dlq_name));
        for (id, shown) in [(Some(channel), &name), (dlq, &dlq_name)] {
            let Some(ch) = id.and_then(|id| self.channels.get(id as usize)) else {
                continue;
            };
            match ch.transport {
                Some(t) if t == transport => {}
                Some(_) => {
                    return Err(BusError::BindingRefused {
                        channel: shown.clone(),
                        reason: "it is bound to another transport already",
                    })
                }
                None if ch.log.next_seq() > 0 || !ch.subscribers.is_empty() || !ch.groups.is_empty() => {
                    return Err(BusError::BindingRefused {
                        channel: shown.clone(),
                        reason: "it was used locally already (published to, subscribed to or given groups); bindings must come before first use",
                    })
                }
                None => {}
            }
        }
        self.channels[channel as usize].transport = Some(transport);
        if let Some(dlq) = self.dead_letter_channel(channel) {
            self.channels[dlq as usize].transport = Some(transport);
        }
        Ok(())
    }

    /// The transport `channel` is bound to, if any.
    #[must_use]
    pub fn binding(&self, channel: ChannelId) -> Option<u32> {
        self.channels.get(channel as usize).and_then(|ch| ch.transport)
    }

    /// How many more records a mirrored channel can take in now before its log passes its
    /// retention with what a subscriber refusing to lose messages (`block`, `reject`) has not read
    /// yet: the driver reads no more than that from the broker, and reads again once the
    /// subscriber has taken some (`usize::MAX` when nothing bounds it). Retention never trims
    /// such unread messages of a mirror (`keep_from`), so this is flow control: the count is
    /// exact, the bytes are counted at the log's mean frame size, and reading past it only keeps
    /// the log over its retention a while.
    pub fn mirror_room(&self, channel: ChannelId) -> Result<usize, BusError> {
        let ch = self.channel_ref(channel)?;
        let keep_from = self.keep_from(channel);
        if keep_from == u64::MAX {
            return Ok(usize::MAX);
        }
        let (log, limits) = (&ch.log, &ch.options.retention);
        let from = keep_from.max(log.first_seq());
        let unread = usize::try_from(log.next_seq().saturating_sub(from)).unwrap_or(usize::MAX);
        let mut room = usize::MAX;
        if limits.max_count > 0 {
            room = limits.max_count.saturating_sub(unread);
        }
        if room > 0 && limits.max_bytes > 0 && !log.is_empty() {
            let mean = (log.bytes() / log.len()).max(1);
            room = room.min(limits.max_bytes.saturating_sub(log.bytes_from(from)) / mean);
        }
        Ok(room)
    }

    /// [`Bus::mirror_room`] asked by `endpoint`'s host: with no room, `endpoint` is woken (see
    /// [`Bus::take_wakeups`]) once a subscriber, on whichever thread it reads, has taken some.
    pub fn mirror_room_for(&mut self, endpoint: u32, channel: ChannelId) -> Result<usize, BusError> {
        let room = self.mirror_room(channel)?;
        if room == 0 {
            self.wait_for_room(endpoint);
        }
        Ok(room)
    }

    /// How many more deliveries `group`'s unpaused members can take now: their free in-flight
    /// slots less what already waits in the group's inbox (0 without members). The driver reads
    /// at most this many from the broker.
    pub fn group_room(&self, group: u32) -> Result<usize, BusError> {
        let g = self.groups.get(group).ok_or(BusError::UnknownGroup(group))?;
        let free: usize = g
            .members
            .iter()
            .filter_map(|&id| match self.consumers.get(id) {
                Some(super::Consumer { paused: false, kind: super::ConsumerKind::Member(m), .. }) => {
                    Some(m.max_in_flight.saturating_sub(m.in_flight))
                }
                _ => None,
            })
            .sum();
        Ok(free.saturating_sub(g.redeliver.len()))
    }

    /// Takes in what the driver read from the broker: records laid end to end (see the module
    /// documentation), at host time `now` (finite, else `INVALID_ARGUMENT`). Every record
    /// header is checked first, so a malformed batch applies nothing (`MALFORMED_FRAME` naming
    /// the record). A record whose frame is bad, or whose channel or group is not (or no
    /// longer) here, is skipped; a bad frame counts as `rejected` on its channel, and a bad
    /// group frame is acked so the broker forgets it. Returns how many records were taken in
    /// (appended, queued for members, dead-lettered, a reply settled, an unsent request
    /// forgotten); one handed straight back is not.
    pub fn ingest(&mut self, batch: &[u8], now: Millis) -> Result<u32, BusError> {
        // A NaN would never come due and an infinity would end every lease at once.
        if !now.is_finite() {
            return Err(BusError::InvalidArgument { argument: "now", reason: "must be a finite time in ms" });
        }
        let mut records = Vec::new();
        let mut offset = 0;
        while offset < batch.len() {
            let record = read_record(batch, offset, records.len())?;
            offset += HEADER_LEN + record.pos.len() + record.route.len() + record.frame.len();
            records.push(record);
        }
        let mut applied = 0;
        for record in records {
            let done = match record.kind {
                LIVE => self.ingest_live(&record, now),
                GROUP => self.ingest_group(&record, now),
                REPLIED => self.ingest_replied(record.frame),
                _ => self.ingest_unsent(record.id),
            };
            applied += u32::from(done);
        }
        Ok(applied)
    }

    /// Whether `bytes` is one well-formed frame, and within this process's size limit.
    fn check_frame(&self, bytes: &[u8]) -> FrameCheck {
        // Read without the limit first (a frame's length is a u32), to tell "too large for
        // here" from "not a frame".
        match frame::read_header(bytes, 0, 0, u32::MAX as usize) {
            Ok(h) if h.len == bytes.len() && h.len > self.config.max_message_bytes => FrameCheck::TooLarge,
            Ok(h) if h.len == bytes.len() => FrameCheck::Ok,
            _ => FrameCheck::Bad,
        }
    }

    /// Appends a broadcast frame to its channel's mirror, at the broker's time (kept monotone).
    fn ingest_live(&mut self, record: &Record<'_>, now: Millis) -> bool {
        let channel = record.id;
        if self.channels.get(channel as usize).is_none_or(|ch| ch.transport.is_none()) {
            return false;
        }
        let ok = matches!(self.check_frame(record.frame), FrameCheck::Ok);
        let ch = &mut self.channels[channel as usize];
        if !ok {
            ch.stats.rejected += 1;
            return false;
        }
        ch.stats.ingested += 1;
        // Nobody here could answer a request read with no subscriber: it stays a plain message.
        let token = if ch.subscribers.is_empty() {
            0
        } else {
            let written = record.value + ROUTE_CLOCK_SKEW_MS;
            self.open_route(record, channel, now, written)
        };
        let stored = self.channels[channel as usize].arena.store_on(record.frame, channel, now, token);
        self.append(channel, &stored, record.value);
        self.after_append(channel, now);
        true
    }

    /// Hands a frame the broker delivered to this process's consumer of a group to its members:
    /// queued in the group's inbox with a lease of `visibility` from now, which ends whether or
    /// not a member got it by then. Given back at once (RELEASE 0) when no member could take
    /// it (none, or all paused); dead-lettered at once when it is too large for this process
    /// or the broker delivered it more than `max_deliveries` times.
    fn ingest_group(&mut self, record: &Record<'_>, now: Millis) -> bool {
        let group = record.id;
        let Some(g) = self.groups.get(group).filter(|g| g.remote.is_some()) else {
            return false;
        };
        let (channel, visibility) = (g.channel, g.options.visibility);
        let too_many = record.count > g.options.max_deliveries;
        let takers = g.members.iter().any(|&id| {
            matches!(
                self.consumers.get(id),
                Some(super::Consumer { paused: false, kind: super::ConsumerKind::Member(_), .. })
            )
        });
        let deliveries = record.count - 1;
        let check = self.check_frame(record.frame);
        let stats = &mut self.channels[channel as usize].stats;
        let dead = match check {
            FrameCheck::Bad => {
                stats.rejected += 1;
                push(&mut self.egress, ACK, group, record.pos, 0.0, &[]);
                return false;
            }
            FrameCheck::TooLarge => {
                stats.rejected += 1;
                Some("too-large")
            }
            FrameCheck::Ok if too_many => {
                stats.ingested += 1;
                Some("max-deliveries")
            }
            FrameCheck::Ok if !takers => {
                // Waiting here would only keep it from the other processes' members.
                push(&mut self.egress, RELEASE, group, record.pos, 0.0, &[]);
                return false;
            }
            FrameCheck::Ok => {
                stats.ingested += 1;
                None
            }
        };
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        if let Some(reason) = dead {
            g.stats.dead_lettered += 1;
            self.dead_record(group, record.pos, record.frame, reason, deliveries);
            return true;
        }
        let Some(r) = g.remote.as_deref_mut() else {
            return false;
        };
        let seq = r.next_seq;
        r.next_seq += 1;
        r.entries.insert(seq, Entry { pos: record.pos.into(), ingested: now });
        let token = self.open_route(record, channel, now, now);
        let stored = self.channels[channel as usize].arena.store_on(record.frame, channel, now, token);
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        g.pending.insert(seq, Pending::waiting(stored, deliveries));
        g.redeliver.push_back(seq);
        g.push_lease(now + visibility, seq, 0);
        self.dispatch(group);
        true
    }

    /// The local reply token of an ingested request (`record` has a route and its frame a reply
    /// token), mapped to the route until the requester's timeout has passed since `now` or since
    /// `written` (the latest time it may have been written), whichever is sooner; 0 for a plain
    /// message, or a request expired already. The oldest route goes once [`MAX_OPEN_ROUTES`]
    /// are open.
    fn open_route(&mut self, record: &Record<'_>, channel: ChannelId, now: Millis, written: Millis) -> u32 {
        let requester = frame::reply_token(record.frame);
        if record.route.is_empty() || requester == 0 {
            return 0;
        }
        let mut timeout = [0u8; 8];
        timeout.copy_from_slice(&record.route[..ROUTE_TIMEOUT_LEN]);
        let timeout = f64::from_le_bytes(timeout);
        let deadline = (now + timeout).min(written + timeout);
        if deadline <= now {
            return 0;
        }
        while self.routes.len() >= MAX_OPEN_ROUTES {
            self.drop_oldest_route();
        }
        let token = super::next_token(&mut self.next_token);
        let opened = self.routes.open(token);
        let route = Route { address: record.route[ROUTE_TIMEOUT_LEN..].into(), token: requester, opened };
        let request = Request { endpoint: super::MAIN_ENDPOINT, deadline, channel, route: Some(Box::new(route)) };
        self.insert_request(token, request);
        token
    }

    /// Keeps `request` open under `token` until its deadline. A request still open under a token
    /// the counter came back to (after 2^32 - 1 others) is replaced.
    pub(super) fn insert_request(&mut self, token: u32, request: Request) {
        let deadline = request.deadline;
        if let Some(old) = self.requests.insert(token, request) {
            self.timers.cancel_request(old.deadline, token);
            if let Some(route) = old.route {
                self.routes.closed(&route);
            }
        }
        self.timers.add_request(deadline, token);
    }

    /// Drops the oldest open route, counted on its channel: a reply to it is late from now on.
    fn drop_oldest_route(&mut self) {
        let Some(token) = self.routes.pop_oldest() else {
            return;
        };
        if let Some(request) = self.requests.remove(&token) {
            self.timers.cancel_request(request.deadline, token);
            if let Some(ch) = self.channels.get_mut(request.channel as usize) {
                ch.stats.routes_dropped += 1;
            }
        }
    }

    /// A request of this process's whose driver could not write it: forgotten without a
    /// timeout event (the host failed its caller already). A route's token is left alone.
    fn ingest_unsent(&mut self, token: u32) -> bool {
        match self.requests.get(&token) {
            Some(request) if request.route.is_none() => {
                self.timers.cancel_request(request.deadline, token);
                self.requests.remove(&token);
                true
            }
            _ => false,
        }
    }

    /// A reply to one of this process's requests, read from its reply address: settled by
    /// token as a local reply is, or counted late. A frame that is malformed or too large for
    /// this process is dropped (the request then times out).
    fn ingest_replied(&mut self, bytes: &[u8]) -> bool {
        if !matches!(self.check_frame(bytes), FrameCheck::Ok) {
            return false;
        }
        let token = frame::reply_token(bytes);
        // A route's token is no request of this process's: that reply is as late as any.
        let ours = self.requests.get(&token).is_some_and(|r| r.route.is_none());
        let Some(request) = ours.then(|| self.requests.remove(&token)).flatten() else {
            self.late_replies += 1;
            return false;
        };
        self.timers.cancel_request(request.deadline, token);
        // Channel ids are per process: the reply takes this process's id of the request's channel.
        let mut reply = bytes.to_vec();
        reply[frame::OFF_CHANNEL..frame::OFF_CHANNEL + 4].copy_from_slice(&request.channel.to_le_bytes());
        if let Some(ep) = self.endpoints.get_mut(request.endpoint) {
            ep.reply(token, Frame::from(reply));
        }
        true
    }

    /// Every egress record queued since the last call, in the order made.
    pub fn drain_egress(&mut self) -> Vec<u8> {
        let egress = std::mem::take(&mut self.egress);
        if let Some(ep) = self.endpoints.get_mut(super::MAIN_ENDPOINT) {
            ep.settle_woken();
        }
        egress
    }

    /// Whether egress records wait for [`Bus::drain_egress`].
    #[must_use]
    pub fn has_egress(&self) -> bool {
        !self.egress.is_empty()
    }

    /// A remote group's entry goes back to the broker, deliverable again after `delay` ms (a
    /// redelivery: counted).
    pub(super) fn remote_release(&mut self, group: u32, seq: u64, delay: Millis) {
        self.remote_return(group, seq, delay, true);
    }

    /// Gives entry `seq` back to the broker; `redelivered` counts it as a redelivery.
    fn remote_return(&mut self, group: u32, seq: u64, delay: Millis, redelivered: bool) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.pending.remove(&seq);
        g.stats.redelivered += u64::from(redelivered);
        if let Some(r) = g.remote.as_deref_mut() {
            r.settle(&mut self.egress, RELEASE, group, seq, delay);
        }
    }

    /// A remote group's entry is dead: one DEAD record carries its dead-letter frame (built as a
    /// local dead letter is), to be published and acked on the broker at once. The caller took
    /// it out of the group and counted it in the group's stats.
    pub(super) fn remote_dead(&mut self, group: u32, seq: u64, bytes: &[u8], reason: &str, deliveries: u32) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let entry = g.remote.as_deref_mut().and_then(|r| r.entries.remove(&seq));
        let pos = entry.map(|e| e.pos).unwrap_or_default();
        self.dead_record(group, &pos, bytes, reason, deliveries);
    }

    /// Queues the DEAD record of the entry at broker position `pos`. Its dead letter names
    /// that position as its origin seq: the local one means nothing to other processes.
    fn dead_record(&mut self, group: u32, pos: &[u8], bytes: &[u8], reason: &str, deliveries: u32) {
        let Some(g) = self.groups.get(group) else {
            return;
        };
        let (origin, transport) = (g.channel, self.channels[g.channel as usize].transport);
        let origin_seq = position_text(pos);
        let Some((dlq, moved)) = self.dead_letter_frame(origin, &origin_seq, bytes, reason, deliveries) else {
            return;
        };
        self.channels[origin as usize].stats.dead_lettered += 1;
        let dl = &mut self.channels[dlq as usize];
        dl.stats.published += 1;
        // Its dead letters live on the broker too (bound with it, unless it was made since).
        dl.transport = dl.transport.or(transport);
        push(&mut self.egress, DEAD, group, pos, 0.0, &moved);
    }

    /// A remote group's entry expired before delivery: dead-lettered when its channel says so,
    /// else acked so the broker forgets it.
    pub(super) fn remote_expired(&mut self, group: u32, seq: u64, bytes: &[u8], deliveries: u32) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if self.channels[g.channel as usize].options.dead_letter_expired {
            g.stats.dead_lettered += 1;
            self.remote_dead(group, seq, bytes, "expired", deliveries);
        } else if let Some(r) = g.remote.as_deref_mut() {
            r.settle(&mut self.egress, ACK, group, seq, 0.0);
        }
    }

    /// A member of a remote group left: what it held goes back to the broker, and so does what
    /// waits in the inbox once no member is left, so other processes take it at once.
    pub(super) fn remote_member_left(&mut self, group: u32, member: u32) {
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let last = g.members.is_empty();
        let mut back: Vec<(u64, bool)> = g
            .pending
            .iter()
            .filter(|(_, p)| p.member == Some(member) || (last && p.member.is_none()))
            .map(|(&seq, p)| (seq, p.member.is_some()))
            .collect();
        back.sort_unstable();
        if last {
            g.redeliver.clear();
        }
        for (seq, held) in back {
            self.remote_return(group, seq, 0.0, held);
        }
        self.dispatch(group);
    }
}
