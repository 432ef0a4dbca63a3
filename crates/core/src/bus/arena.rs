//! Frame storage. A stored frame is a [`Frame`]: a shared, immutable view into a chunk that
//! holds many frames of one channel, so publishing costs no allocation per message (a malloc
//! and a free each cost about as much as the rest of a publish) and a retained message carries
//! no allocator header. A chunk is freed when its last frame is trimmed and delivered.

use bytes::{Bytes, BytesMut};

use crate::frame;
use crate::Millis;

/// A stored frame, shared by the log and every consumer that holds it.
pub type Frame = Bytes;

/// The first chunk of a channel; quiet channels never grow past it.
const FIRST_CHUNK: usize = 4 << 10;
/// The largest chunk: busy channels double up to here.
const MAX_CHUNK: usize = 256 << 10;

/// One channel's chunk being filled.
#[derive(Debug, Default)]
pub struct Arena {
    chunk: BytesMut,
    next_size: usize,
}

impl Arena {
    /// Copies a checked frame in, stamped with the publish time (when its producer left it at
    /// 0) and carrying `reply_token`.
    pub fn store(&mut self, bytes: &[u8], now: Millis, reply_token: u32) -> Frame {
        let mut frame = self.store_raw(bytes, now);
        frame::set_reply_token(&mut frame, reply_token);
        frame.freeze()
    }

    /// Copies a frame into the chunk, stamped; the caller finishes and freezes it.
    fn store_raw(&mut self, bytes: &[u8], now: Millis) -> BytesMut {
        if self.chunk.capacity() < bytes.len() {
            let size = self.next_size.max(FIRST_CHUNK);
            self.next_size = (size * 2).min(MAX_CHUNK);
            self.chunk = BytesMut::with_capacity(size.max(bytes.len()));
        }
        self.chunk.extend_from_slice(bytes);
        frame::stamp(&mut self.chunk, now);
        self.chunk.split()
    }

    /// Copies a checked frame that came from a transport in, moved to this process's id of its
    /// channel (ids are per process), stamped as [`Arena::store`] stamps and carrying
    /// `reply_token` (a local one: the broker's is another process's).
    pub fn store_on(&mut self, bytes: &[u8], channel: u32, now: Millis, reply_token: u32) -> Frame {
        let mut frame = self.store_raw(bytes, now);
        frame::set_reply_token(&mut frame, reply_token);
        frame[frame::OFF_CHANNEL..frame::OFF_CHANNEL + 4].copy_from_slice(&channel.to_le_bytes());
        frame.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_share_chunks_and_keep_their_bytes() {
        let mut arena = Arena::default();
        let frames: Vec<Frame> =
            (0..200u8).map(|i| arena.store(&frame::encode(1, 1, 0.0, b"", &[i; 50]), 7.0, 0)).collect();
        for (i, f) in frames.iter().enumerate() {
            assert!(f.ends_with(&[i as u8; 50]));
            assert_eq!(frame::read_header(f, 0, 0, 1 << 20).unwrap().len, f.len());
        }
        // 200 frames of ~100 bytes fit in a few chunks: consecutive frames are adjacent in memory.
        let adjacent =
            frames.windows(2).filter(|w| w[0].as_ptr() as usize + w[0].len() == w[1].as_ptr() as usize).count();
        assert!(adjacent > 190, "{adjacent}");
    }
}
