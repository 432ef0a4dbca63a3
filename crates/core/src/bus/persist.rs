//! Durable channels: which rows a bus call produces, and how a reopen rebuilds the bus from
//! them. No I/O: an engine ([`Persistence`], shared with the store) keeps the rows, the store's
//! [`Committer`](crate::store::persist::Committer) commits them in the writer's thread, and
//! [`BusJournal`] counts the tickets that acknowledge them (group commit, as the store does).
//!
//! A durable channel is a local channel (every in-core rule applies: groups, leases,
//! priorities, claims, requests) whose log and groups' acknowledgement state are also on disk.
//! After each call the host asks [`Bus::stage_rows`] for what changed; the tracker compares each
//! durable channel and group with what it last wrote, and group entries whose delivery count
//! grew or that were settled are reported by a hook in `group.rs` ([`Tracker::touch`]).
//!
//! Rows (names never hold a 0 byte; sequence numbers are big-endian so rows sort in log order):
//!
//! | key | value |
//! |---|---|
//! | `c` channel `0` | version, retention (count, bytes, age), dedup window, deadLetterExpired, first seq, next seq |
//! | `l` channel `0` seq | at (f64), priority (u8), the frame |
//! | `g` channel `0` group | version, capacity, overflow, visibility, maxDeliveries, low, high |
//! | `p` channel `0` group `0` seq | the entry's delivery count, or [`SETTLED`] |
//!
//! - **Log rows** are written as frames are appended and removed once retention trimmed them
//!   *and* no group still owes them (each on its own: one long-owed entry keeps only its row),
//!   so a pending entry's frame is always on disk.
//! - **A group** is its cursor (`high`: every seq below was taken into the group), the oldest seq
//!   it still owes (`low`: pending or buffered; `high` when none), and a `p` row per entry in
//!   between that was delivered (its count) or settled out of order (acked, dead-lettered,
//!   expired). Owed after a reopen = `[low, high)` less the settled rows, each a waiting entry
//!   with its delivery count, deliverable at once; in-order acks leave no rows behind.
//! - **Reopen** ([`recover`]) decodes and checks every row before it changes the bus: a file
//!   that does not check out is refused as damaged, never opened empty or partial. Logs come
//!   back at their seqs and times (frames moved to this process's channel ids, reply tokens
//!   cleared: requests do not survive), the dedup window is replayed from the retained log, and
//!   groups come back without members.
//!
//! Not kept: members and subscribers, counters, open requests; a message a `drop-oldest` group
//! buffer dropped may come back after a reopen.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::consumer::Feed;
use super::group::Pending;
use super::log::{Frame, Log};
use super::options::{ChannelOptions, GroupOptions, Overflow, StartAt};
use super::{Bus, Retention};
use crate::error::BusError;
use crate::frame;
use crate::names::ChannelId;
use crate::store::persist::{Batch, PersistError, Persistence, Progress, REMOVED};
use crate::store::Hlc;

/// A `p` row's value for an entry settled (acked, dead-lettered, expired) ahead of the group's
/// oldest owed entry.
pub const SETTLED: u32 = u32::MAX;
/// The layout version of `c` and `g` rows.
const VERSION: u8 = 1;
/// Rows staged before they go to the writer: a chunk per wake-up of its thread, not a row.
const CHUNK_ROWS: usize = 128;

/// What the bus keeps of its durable channels and groups between calls: what the disk holds.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    channels: FxHashMap<ChannelId, ChannelRows>,
    groups: FxHashMap<u32, GroupRows>,
    /// Group entries whose delivery count grew or that left the group, since the last stage.
    touched: Vec<(u32, u64)>,
    /// Frames appended to durable channels since the last stage: (channel, seq, at, priority).
    appended: Vec<(ChannelId, u64, f64, u8, Frame)>,
    /// Whether a member was handed an entry since the last stage: the host commits its count
    /// before the member's handler sees it ([`BusJournal::take_hand_over`]).
    hand_over: bool,
    /// The disk's first failure, once the host told it: publishes to durable channels are
    /// refused from then on ([`Bus::disk_failed`]).
    failed: Option<String>,
}

/// A durable channel as its rows stand.
#[derive(Debug)]
struct ChannelRows {
    name: Box<str>,
    options: ChannelOptions,
    first_seq: u64,
    /// Every seq from here to the log's end has its row; below, only `pinned` ones do.
    trimmed_to: u64,
    /// Rows of messages retention trimmed that a group still owes: each goes once no group
    /// owes it any more.
    pinned: std::collections::BTreeSet<u64>,
    /// Whether its `c` row was written.
    written: bool,
}

/// A durable group as its rows stand.
#[derive(Debug)]
struct GroupRows {
    /// `channel 0 group`: the key of its `g` row after the tag, and the prefix of its `p` rows.
    key: Vec<u8>,
    channel: ChannelId,
    low: u64,
    high: u64,
    /// Its `p` rows on disk: seq -> delivery count or [`SETTLED`].
    states: BTreeMap<u64, u32>,
    written: bool,
}

impl GroupRows {
    /// Whether the group owes `seq` as its rows stand: taken in, not below the oldest owed
    /// entry, not settled since.
    fn owes(&self, seq: u64) -> bool {
        (self.low..self.high).contains(&seq) && self.states.get(&seq) != Some(&SETTLED)
    }
}

impl Tracker {
    /// A group entry's delivery count grew, or it left the group (the hook in `group.rs`).
    pub(super) fn touch(&mut self, group: u32, seq: u64) {
        self.touched.push((group, seq));
    }

    /// A group entry was handed to a member, its delivery count grown (the hook in `group.rs`).
    pub(super) fn handed_over(&mut self, group: u32, seq: u64) {
        self.touched.push((group, seq));
        // A group is tracked from the call after it was made, always before its first member.
        self.hand_over |= self.groups.contains_key(&group);
    }

    /// A frame was appended to `channel` at `seq` (the hook in `Bus::append`).
    pub(super) fn appended(&mut self, channel: ChannelId, seq: u64, at: f64, priority: u8, frame: &Frame) {
        if self.channels.contains_key(&channel) {
            self.appended.push((channel, seq, at, priority, frame.clone()));
        }
    }

    /// Whether `channel` is durable.
    pub(super) fn is_durable(&self, channel: ChannelId) -> bool {
        self.channels.contains_key(&channel)
    }
}

/// Appends one framed row (key length u32 LE, key, value length u32 LE or [`REMOVED`], value),
/// the store's chunk layout.
fn put(out: &mut Vec<u8>, key: &[&[u8]], value: Option<&[&[u8]]>) {
    let key_len: usize = key.iter().map(|k| k.len()).sum();
    out.extend_from_slice(&u32::try_from(key_len).unwrap_or(u32::MAX).to_le_bytes());
    for k in key {
        out.extend_from_slice(k);
    }
    match value {
        Some(parts) => {
            let len: usize = parts.iter().map(|v| v.len()).sum();
            out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
            for v in parts {
                out.extend_from_slice(v);
            }
        }
        None => out.extend_from_slice(&REMOVED.to_le_bytes()),
    }
}

fn channel_value(options: &ChannelOptions, first_seq: u64, next_seq: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(50);
    v.push(VERSION);
    v.extend_from_slice(&(options.retention.max_count as u64).to_le_bytes());
    v.extend_from_slice(&(options.retention.max_bytes as u64).to_le_bytes());
    v.extend_from_slice(&options.retention.max_age.to_le_bytes());
    v.extend_from_slice(&options.dedup_window.to_le_bytes());
    v.push(u8::from(options.dead_letter_expired));
    v.extend_from_slice(&first_seq.to_le_bytes());
    v.extend_from_slice(&next_seq.to_le_bytes());
    v
}

fn group_value(options: &GroupOptions, low: u64, high: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(42);
    v.push(VERSION);
    v.extend_from_slice(&(options.capacity as u64).to_le_bytes());
    v.push(overflow_code(options.overflow));
    v.extend_from_slice(&options.visibility.to_le_bytes());
    v.extend_from_slice(&options.max_deliveries.to_le_bytes());
    v.extend_from_slice(&low.to_le_bytes());
    v.extend_from_slice(&high.to_le_bytes());
    v
}

fn overflow_code(overflow: Overflow) -> u8 {
    match overflow {
        Overflow::Block => 0,
        Overflow::Reject => 1,
        Overflow::DropOldest => 2,
    }
}

/// Rows staged for the writer: how many, and their bytes.
struct Staged<'a> {
    out: &'a mut Vec<u8>,
    rows: usize,
}

impl Staged<'_> {
    fn put(&mut self, key: &[&[u8]], value: &[&[u8]]) {
        put(self.out, key, Some(value));
        self.rows += 1;
    }

    fn remove(&mut self, key: &[&[u8]]) {
        put(self.out, key, None);
        self.rows += 1;
    }
}

impl Bus {
    /// Marks `channel` (and its dead-letter channel) durable: from now on its log and its
    /// groups' acknowledgement state are staged for disk after every call. Marking again does
    /// nothing. Refused without a disk ([`recover`] attaches one), on a channel bound to a
    /// transport, and on one used locally already (published to, subscribed to, or with
    /// groups): durability comes before first use, as bindings do. A channel restored from disk
    /// is durable already.
    pub fn make_durable(&mut self, channel: ChannelId) -> Result<(), BusError> {
        let name = self.names.name(channel).ok_or(BusError::UnknownChannel(channel))?.to_owned();
        let Some(tracker) = self.durable.as_deref() else {
            return Err(BusError::BindingRefused {
                channel: name,
                reason: "no durable transport is open on this bus (open its disk first)",
            });
        };
        if tracker.is_durable(channel) {
            return Ok(());
        }
        let dlq_name = format!("{name}.dead-letter");
        let dlq = self.channels[channel as usize].dead_letter.or_else(|| self.names.get(&dlq_name));
        for (id, shown) in [(Some(channel), &name), (dlq, &dlq_name)] {
            let Some(ch) = id.and_then(|id| self.channels.get(id as usize)) else {
                continue;
            };
            if id.is_some_and(|id| tracker.is_durable(id)) {
                continue;
            }
            if ch.transport.is_some() {
                return Err(BusError::BindingRefused {
                    channel: shown.clone(),
                    reason: "it is bound to another transport already",
                });
            }
            if ch.log.next_seq() > 0 || !ch.subscribers.is_empty() || !ch.groups.is_empty() {
                return Err(BusError::BindingRefused {
                    channel: shown.clone(),
                    reason: "it was used locally already (published to, subscribed to or given groups); bindings must come before first use",
                });
            }
        }
        let dlq = self.dead_letter_channel(channel);
        for id in std::iter::once(channel).chain(dlq) {
            let ch = &self.channels[id as usize];
            let rows = ChannelRows {
                name: self.names.name(id).unwrap_or_default().into(),
                options: ch.options.clone(),
                first_seq: ch.log.first_seq(),
                trimmed_to: ch.log.first_seq(),
                pinned: std::collections::BTreeSet::new(),
                written: false,
            };
            if let Some(t) = self.durable.as_deref_mut() {
                t.channels.entry(id).or_insert(rows);
            }
        }
        Ok(())
    }

    /// Whether `channel` is kept on disk.
    #[must_use]
    pub fn is_durable(&self, channel: ChannelId) -> bool {
        self.durable.as_deref().is_some_and(|t| t.is_durable(channel))
    }

    /// The host tells the bus its disk failed (`reason`: the first failure): from now on a
    /// publish to a durable channel is refused before anything is appended or delivered.
    /// Channels not kept on disk are not affected. Only the first report counts.
    pub fn disk_failed(&mut self, reason: &str) {
        if let Some(t) = self.durable.as_deref_mut() {
            t.failed.get_or_insert_with(|| reason.to_owned());
        }
    }

    /// Refuses a publish to `channel` once its disk failed (the check in `check_batch`).
    pub(super) fn check_disk(&self, channel: ChannelId) -> Result<(), BusError> {
        match self.durable.as_deref() {
            Some(Tracker { failed: Some(reason), .. }) if self.is_durable(channel) => Err(BusError::DiskFailed {
                channel: self.names.name(channel).unwrap_or_default().to_owned(),
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Stages into `out` (the store's row chunk layout) every row the calls since the last stage
    /// changed; returns how many rows. Nothing without a disk.
    pub fn stage_rows(&mut self, out: &mut Vec<u8>) -> usize {
        let Some(mut t) = self.durable.take() else {
            return 0;
        };
        let mut staged = Staged { out, rows: 0 };
        let settled = self.stage_groups(&mut t, &mut staged);
        self.stage_channels(&mut t, &mut staged, &settled);
        self.durable = Some(t);
        staged.rows
    }

    /// `settled`: entries that left a group since the last stage (`None`: every pinned row of
    /// the channel is checked again, a group of it was deleted).
    fn stage_channels(&self, t: &mut Tracker, staged: &mut Staged<'_>, settled: &[(ChannelId, Option<u64>)]) {
        for (channel, seq, at, priority, frame) in t.appended.drain(..) {
            let Some(rows) = t.channels.get(&channel) else { continue };
            staged.put(
                &[b"l", rows.name.as_bytes(), &[0], &seq.to_be_bytes()],
                &[&at.to_le_bytes(), &[priority], &frame],
            );
        }
        // A trimmed message's row stays while some group owes it, and only its own row.
        let groups = &t.groups;
        let owes = |channel: ChannelId, seq: u64| groups.values().any(|g| g.channel == channel && g.owes(seq));
        for &(id, seq) in settled {
            let Some(rows) = t.channels.get_mut(&id) else { continue };
            let freed: Vec<u64> = match seq {
                Some(seq) => Vec::from_iter(rows.pinned.get(&seq).copied().filter(|&s| !owes(id, s))),
                None => rows.pinned.iter().copied().filter(|&s| !owes(id, s)).collect(),
            };
            for seq in freed {
                rows.pinned.remove(&seq);
                staged.remove(&[b"l", rows.name.as_bytes(), &[0], &seq.to_be_bytes()]);
            }
        }
        for (&id, rows) in &mut t.channels {
            let ch = &self.channels[id as usize];
            let (first, next) = (ch.log.first_seq(), ch.log.next_seq());
            for seq in rows.trimmed_to..first.min(next) {
                if owes(id, seq) {
                    rows.pinned.insert(seq);
                } else {
                    staged.remove(&[b"l", rows.name.as_bytes(), &[0], &seq.to_be_bytes()]);
                }
            }
            rows.trimmed_to = rows.trimmed_to.max(first.min(next));
            if !rows.written || rows.first_seq != first || rows.options != ch.options {
                let value = channel_value(&ch.options, first, next);
                staged.put(&[b"c", rows.name.as_bytes(), &[0]], &[&value]);
                rows.written = true;
                rows.options = ch.options.clone();
                rows.first_seq = first;
            }
        }
    }

    /// Returns the entries that left a group, by channel (`None`: a group was deleted).
    fn stage_groups(&self, t: &mut Tracker, staged: &mut Staged<'_>) -> Vec<(ChannelId, Option<u64>)> {
        let mut settled = Vec::new();
        // Deleted groups' rows go first: a group made again under the same name reuses its keys.
        let deleted: Vec<u32> = t.groups.keys().copied().filter(|&gid| self.groups.get(gid).is_none()).collect();
        for gid in deleted {
            if let Some(rows) = t.groups.remove(&gid) {
                settled.push((rows.channel, None));
                for &seq in rows.states.keys() {
                    staged.remove(&[b"p", &rows.key, &[0], &seq.to_be_bytes()]);
                }
                staged.remove(&[b"g", &rows.key]);
            }
        }
        // Groups made on durable channels since the last stage.
        for &channel in t.channels.keys() {
            for &gid in &self.channels[channel as usize].groups {
                if t.groups.contains_key(&gid) {
                    continue;
                }
                let Some(g) = self.groups.get(gid) else { continue };
                let mut key = self.names.name(channel).unwrap_or_default().as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(g.name().as_bytes());
                let rows = GroupRows { key, channel, low: 0, high: 0, states: BTreeMap::new(), written: false };
                t.groups.insert(gid, rows);
            }
        }
        let mut touched = std::mem::take(&mut t.touched);
        touched.sort_unstable();
        touched.dedup();
        for (&gid, rows) in &mut t.groups {
            let Some(g) = self.groups.get(gid) else { continue };
            let high = g.feed.cursor;
            // New entries never come below the oldest owed one: while it is still owed it stays
            // the oldest, and only its settling needs a walk over every pending entry.
            let still_owed = rows.written
                && rows.low < rows.high
                && (g.pending.contains_key(&rows.low) || g.feed.buffer.min_seq() == Some(rows.low));
            let low = if still_owed {
                rows.low
            } else {
                g.pending.keys().copied().chain(g.feed.buffer.min_seq()).fold(high, u64::min)
            };
            let from = touched.partition_point(|&(id, _)| id < gid);
            for &(_, seq) in touched[from..].iter().take_while(|&&(id, _)| id == gid) {
                let state = g.pending.get(&seq).map_or(SETTLED, |p| p.deliveries);
                if state == SETTLED {
                    settled.push((rows.channel, Some(seq)));
                }
                if seq < low || rows.states.get(&seq) == Some(&state) || state == 0 {
                    continue;
                }
                rows.states.insert(seq, state);
                staged.put(&[b"p", &rows.key, &[0], &seq.to_be_bytes()], &[&state.to_le_bytes()]);
            }
            // Entries behind the oldest owed one need no row.
            let kept = rows.states.split_off(&low);
            for seq in std::mem::replace(&mut rows.states, kept).into_keys() {
                staged.remove(&[b"p", &rows.key, &[0], &seq.to_be_bytes()]);
            }
            if !rows.written || rows.low != low || rows.high != high {
                staged.put(&[b"g", &rows.key], &[&group_value(&g.options, low, high)]);
                rows.written = true;
                rows.low = low;
                rows.high = high;
            }
        }
        settled
    }
}

/// Turns a bus's changes into [`Batch`]es for its engine's writer, and counts commit tickets:
/// a call's rows are acknowledged by [`BusJournal::submitted`] read after it.
#[derive(Debug)]
pub struct BusJournal {
    progress: Arc<Progress>,
    staged: Vec<u8>,
    staged_rows: usize,
    uncommitted: bool,
    submitted: u64,
    /// Whether the rows staged since the last [`BusJournal::take_hand_over`] grew a delivery
    /// count.
    hand_over: bool,
}

impl BusJournal {
    /// A journal reporting through `progress`.
    #[must_use]
    pub fn new(progress: Arc<Progress>) -> Self {
        Self { progress, staged: Vec::new(), staged_rows: 0, uncommitted: false, submitted: 0, hand_over: false }
    }

    /// Where commits stand.
    #[must_use]
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// The engine's first failure, naming the file.
    ///
    /// # Errors
    /// Once the engine failed.
    pub fn check(&self) -> Result<(), PersistError> {
        self.progress.check()
    }

    /// Stages what the call just made changed; hands `send` a chunk once enough rows gathered
    /// (always between calls, so a call's rows commit together).
    ///
    /// # Errors
    /// The engine's failure, or `send`'s.
    pub fn record(
        &mut self,
        bus: &mut Bus,
        mut send: impl FnMut(Batch) -> Result<(), PersistError>,
    ) -> Result<(), PersistError> {
        if let Some(t) = bus.durable.as_deref_mut() {
            self.hand_over |= std::mem::take(&mut t.hand_over);
        }
        let rows = bus.stage_rows(&mut self.staged);
        if rows == 0 {
            return Ok(());
        }
        self.check()?;
        self.uncommitted = true;
        self.staged_rows += rows;
        if self.staged_rows >= CHUNK_ROWS {
            self.send_staged(&mut send)?;
        }
        Ok(())
    }

    fn send_staged(&mut self, send: &mut impl FnMut(Batch) -> Result<(), PersistError>) -> Result<(), PersistError> {
        self.staged_rows = 0;
        let rows = std::mem::take(&mut self.staged);
        send(Batch::Rows { rows, revision: 0, clock: Hlc::default() })
    }

    /// Asks for a commit of everything so far under the next ticket (nothing when nothing
    /// changed).
    ///
    /// # Errors
    /// The engine's failure, or `send`'s.
    pub fn submit(&mut self, mut send: impl FnMut(Batch) -> Result<(), PersistError>) -> Result<(), PersistError> {
        self.check()?;
        if !self.uncommitted {
            return Ok(());
        }
        if !self.staged.is_empty() {
            self.send_staged(&mut send)?;
        }
        self.submitted += 1;
        self.uncommitted = false;
        send(Batch::Commit { ticket: self.submitted })
    }

    /// Whether a member was handed an entry since the last call: the host then commits (and
    /// waits for the commit) before the member's handler runs, so a process that dies in the
    /// handler has that delivery counted on disk, and [`recover`] can dead-letter an entry that
    /// keeps killing its consumer.
    pub fn take_hand_over(&mut self) -> bool {
        std::mem::take(&mut self.hand_over)
    }

    /// The ticket that acknowledges every change so far.
    #[must_use]
    pub fn submitted(&self) -> u64 {
        self.submitted + u64::from(self.uncommitted)
    }

    /// The ticket of the last commit that returned.
    #[must_use]
    pub fn committed(&self) -> u64 {
        self.progress.committed()
    }
}

/// A decoded `c` row.
#[derive(Debug)]
struct ChannelMeta {
    options: ChannelOptions,
    first_seq: u64,
    next_seq: u64,
}

/// A decoded `g` row.
#[derive(Debug)]
struct GroupMeta {
    options: GroupOptions,
    low: u64,
    high: u64,
}

/// A decoded `l` row.
#[derive(Debug)]
struct LogRow {
    at: f64,
    frame: Vec<u8>,
}

/// Every row of a file, decoded and checked.
#[derive(Debug, Default)]
struct Rows {
    channels: BTreeMap<String, ChannelMeta>,
    logs: HashMap<String, BTreeMap<u64, LogRow>>,
    groups: BTreeMap<(String, String), GroupMeta>,
    states: HashMap<(String, String), BTreeMap<u64, u32>>,
}

fn damaged(reason: impl Into<String>) -> PersistError {
    PersistError::Damaged(reason.into())
}

/// Reads fixed-size fields off a value.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], PersistError> {
        let (head, rest) = self.0.split_at_checked(N).ok_or_else(|| damaged("a bus row is truncated"))?;
        self.0 = rest;
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, PersistError> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, PersistError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, PersistError> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64, PersistError> {
        Ok(f64::from_le_bytes(self.take()?))
    }
    fn usize(&mut self) -> Result<usize, PersistError> {
        usize::try_from(self.u64()?).map_err(|_| damaged("a bus row holds a size too large for this machine"))
    }
    fn end(&self) -> Result<(), PersistError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(damaged("a bus row is longer than its layout"))
        }
    }
}

fn text(bytes: &[u8]) -> Result<String, PersistError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| damaged("a bus row names a channel or group in bad UTF-8"))
}

fn seq_of(bytes: &[u8]) -> Result<u64, PersistError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| damaged("a bus row key has a malformed sequence number"))?;
    Ok(u64::from_be_bytes(bytes))
}

impl Rows {
    fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), PersistError> {
        let (&tag, rest) = key.split_first().ok_or_else(|| damaged("an empty bus row key"))?;
        let split = rest.iter().position(|&b| b == 0).ok_or_else(|| damaged("a bus row key without a channel"))?;
        let channel = text(&rest[..split])?;
        let tail = &rest[split + 1..];
        let mut f = Fields(value);
        if tag == b'l' {
            // The tail is the seq, whose bytes may hold a 0.
            let seq = seq_of(tail)?;
            // The priority byte is not read: the frame's own is (the byte stays for the row layout).
            let (at, _priority) = (f.f64()?, f.u8()?);
            let frame = f.0.to_vec();
            match frame::read_header(&frame, 0, 0, u32::MAX as usize) {
                Ok(h) if h.len == frame.len() => {}
                _ => return Err(damaged(format!("message {seq} of channel {channel:?} is not a well-formed frame"))),
            }
            self.logs.entry(channel).or_default().insert(seq, LogRow { at, frame });
            return Ok(());
        }
        let mut parts = tail.splitn(2, |&b| b == 0);
        let second = parts.next().filter(|_| !tail.is_empty() || tag == b'c');
        let third = parts.next();
        match (tag, second, third) {
            (b'c', Some([]), None) => {
                if f.u8()? != VERSION {
                    return Err(damaged(format!("channel {channel:?}'s record has an unknown layout version")));
                }
                let retention = Retention { max_count: f.usize()?, max_bytes: f.usize()?, max_age: f.f64()? };
                let dedup_window = f.f64()?;
                let dead_letter_expired = f.u8()? != 0;
                let (first_seq, next_seq) = (f.u64()?, f.u64()?);
                f.end()?;
                if first_seq > next_seq {
                    return Err(damaged(format!("channel {channel:?}'s first seq is past its next seq")));
                }
                let options = ChannelOptions { retention, dedup_window, dead_letter_expired };
                self.channels.insert(channel, ChannelMeta { options, first_seq, next_seq });
            }
            (b'g', Some(group), None) => {
                let group = text(group)?;
                if f.u8()? != VERSION {
                    return Err(damaged(format!("group {group:?}'s record has an unknown layout version")));
                }
                let capacity = f.usize()?;
                let overflow = match f.u8()? {
                    0 => Overflow::Block,
                    1 => Overflow::Reject,
                    2 => Overflow::DropOldest,
                    _ => return Err(damaged(format!("group {group:?} has an unknown overflow policy"))),
                };
                let (visibility, max_deliveries, low, high) = (f.f64()?, f.u32()?, f.u64()?, f.u64()?);
                f.end()?;
                if low > high {
                    return Err(damaged(format!("group {group:?}'s oldest owed seq is past its cursor")));
                }
                let options = GroupOptions { start: StartAt::Latest, capacity, overflow, visibility, max_deliveries };
                self.groups.insert((channel, group), GroupMeta { options, low, high });
            }
            (b'p', Some(group), Some(seq)) => {
                let group = text(group)?;
                let seq = seq_of(seq)?;
                let state = f.u32()?;
                f.end()?;
                self.states.entry((channel, group)).or_default().insert(seq, state);
            }
            _ => return Err(damaged("a bus row key of no known kind")),
        }
        Ok(())
    }
}

/// Reads a bus back from `engine` into `bus` (fresh: nothing used yet), which then stages its
/// durable channels' changes ([`Bus::stage_rows`]). An empty engine opens an empty durable bus.
/// An owed entry already delivered its group's `maxDeliveries` times is not delivered again: it
/// goes to the dead-letter channel (reason `max-deliveries`, at `now`), staged like any dead
/// letter, so a message that kills its consumer ends there instead of looping over reopens.
///
/// # Errors
/// [`PersistError::Damaged`] for anything that does not decode or check out (nothing is loaded
/// then); the engine's own errors as they are.
pub fn recover<P: Persistence + ?Sized>(engine: &mut P, bus: &mut Bus, now: f64) -> Result<(), PersistError> {
    let mut rows = Rows::default();
    engine.read_rows(&mut |key, value| rows.add(key, value))?;
    check(&rows)?;
    let mut tracker = Tracker::default();
    let mut ids: HashMap<&str, ChannelId> = HashMap::new();
    let mut spent: Vec<(u32, u64)> = Vec::new();
    for (name, meta) in &rows.channels {
        let id = bus.names.intern_derived(name);
        bus.ensure_channel(id);
        ids.insert(name, id);
        let log_rows = rows.logs.get(name);
        let ch = &mut bus.channels[id as usize];
        ch.options = meta.options.clone();
        ch.log = Log::starting_at(meta.first_seq);
        let next_seq = log_rows.and_then(|l| l.keys().next_back()).map_or(meta.next_seq, |&s| meta.next_seq.max(s + 1));
        for seq in meta.first_seq..next_seq {
            let row = log_rows.and_then(|l| l.get(&seq)).ok_or_else(|| missing(name, seq))?;
            let frame = restored(&row.frame, id);
            ch.dedup.is_duplicate(frame::id(&frame), ch.options.dedup_window, row.at);
            ch.log.append(frame, row.at);
        }
        // Rows below the retention point are sorted out by the first stage: kept while owed.
        let trimmed_to = log_rows.and_then(|l| l.keys().next()).map_or(meta.first_seq, |&s| s.min(meta.first_seq));
        let channel_rows = ChannelRows {
            name: name.as_str().into(),
            options: meta.options.clone(),
            first_seq: meta.first_seq,
            trimmed_to,
            pinned: std::collections::BTreeSet::new(),
            written: true,
        };
        tracker.channels.insert(id, channel_rows);
    }
    for ((channel, name), meta) in &rows.groups {
        let id = ids[channel.as_str()];
        let gid = bus.group(id, name, meta.options).map_err(|e| damaged(format!("group {name:?}: {e}")))?;
        let states = rows.states.get(&(channel.clone(), name.clone())).cloned().unwrap_or_default();
        let log_rows = rows.logs.get(channel);
        let log = &bus.channels[id as usize].log;
        let Some(g) = bus.groups.get_mut(gid) else { continue };
        g.feed = Feed::new(meta.high, meta.options.capacity, meta.options.overflow);
        g.feed.fill(log);
        for seq in meta.low..meta.high {
            let deliveries = states.get(&seq).copied().unwrap_or(0);
            if deliveries == SETTLED {
                continue;
            }
            let frame = match log.get(seq) {
                Some(frame) => frame.clone(),
                None => restored(&log_rows.and_then(|l| l.get(&seq)).ok_or_else(|| missing(channel, seq))?.frame, id),
            };
            g.pending.insert(seq, Pending::waiting(frame, deliveries));
            if deliveries >= meta.options.max_deliveries {
                spent.push((gid, seq));
            } else {
                g.redeliver.push_back(seq);
            }
        }
        let mut key = channel.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(name.as_bytes());
        tracker
            .groups
            .insert(gid, GroupRows { key, channel: id, low: meta.low, high: meta.high, states, written: true });
    }
    bus.durable = Some(Box::new(tracker));
    for (gid, seq) in spent {
        bus.settle_dead(gid, seq, "max-deliveries", now);
    }
    Ok(())
}

/// Checks that the rows make a whole bus: every row's channel and group has its record, every
/// retained seq and every seq a group owes has its message.
fn check(rows: &Rows) -> Result<(), PersistError> {
    for name in rows.logs.keys() {
        if !rows.channels.contains_key(name) {
            return Err(damaged(format!("messages of channel {name:?} without its channel record")));
        }
    }
    for (channel, group) in rows.groups.keys().chain(rows.states.keys()) {
        if !rows.channels.contains_key(channel) {
            return Err(damaged(format!("group {group:?} of channel {channel:?} without its channel record")));
        }
    }
    for (channel, group) in rows.states.keys() {
        if !rows.groups.contains_key(&(channel.clone(), group.clone())) {
            return Err(damaged(format!("entries of group {group:?} without the group's record")));
        }
    }
    for (name, meta) in &rows.channels {
        let log = rows.logs.get(name);
        let next = log.and_then(|l| l.keys().next_back()).map_or(meta.next_seq, |&s| meta.next_seq.max(s + 1));
        for seq in meta.first_seq..next {
            if !log.is_some_and(|l| l.contains_key(&seq)) {
                return Err(missing(name, seq));
            }
        }
    }
    for ((channel, group), meta) in &rows.groups {
        let log = rows.logs.get(channel);
        let states = rows.states.get(&(channel.clone(), group.clone()));
        for seq in meta.low..meta.high {
            let settled = states.and_then(|s| s.get(&seq)) == Some(&SETTLED);
            if !settled && !log.is_some_and(|l| l.contains_key(&seq)) {
                return Err(missing(channel, seq));
            }
        }
    }
    Ok(())
}

/// A retained or owed message without its row.
fn missing(channel: &str, seq: u64) -> PersistError {
    damaged(format!("message {seq} of channel {channel:?} is missing: a commit did not land whole"))
}

/// A frame read back, moved to this process's id of its channel (ids are per process) and
/// without a reply token (requests do not survive a reopen).
fn restored(bytes: &[u8], channel: ChannelId) -> Frame {
    let mut frame = bytes.to_vec();
    frame[frame::OFF_CHANNEL..frame::OFF_CHANNEL + 4].copy_from_slice(&channel.to_le_bytes());
    frame::set_reply_token(&mut frame, 0);
    Frame::from(frame)
}

#[cfg(test)]
#[path = "persist_tests.rs"]
mod tests;
