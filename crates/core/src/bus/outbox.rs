//! Delivery records, written straight into a buffer the host owns.
//!
//! A record is the 16-byte delivery header (see [`crate::frame::DELIVERY_HEADER_LEN`])
//! followed by the frame. The host hands in one reusable buffer and gets back how many bytes
//! were written: one boundary crossing per batch, and JS keeps ownership of the memory.

use crate::frame::DELIVERY_HEADER_LEN;

/// A write position in a host buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Starts writing at the beginning of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Whether a record carrying `frame_len` bytes of frame still fits.
    #[must_use]
    pub fn fits(&self, frame_len: usize) -> bool {
        self.pos + DELIVERY_HEADER_LEN + frame_len <= self.buf.len()
    }

    /// Appends one record; the caller checked [`Writer::fits`].
    pub fn push(&mut self, subscription: u32, attempt: u32, seq: u64, frame: &[u8]) {
        let at = self.pos;
        self.buf[at..at + 4].copy_from_slice(&subscription.to_le_bytes());
        self.buf[at + 4..at + 8].copy_from_slice(&attempt.to_le_bytes());
        self.buf[at + 8..at + 16].copy_from_slice(&(seq as f64).to_le_bytes());
        let body = at + DELIVERY_HEADER_LEN;
        self.buf[body..body + frame.len()].copy_from_slice(frame);
        self.pos = body + frame.len();
    }

    /// Bytes written so far.
    #[must_use]
    pub fn written(&self) -> usize {
        self.pos
    }
}
