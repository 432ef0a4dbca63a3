//! The engine's side of durability: rows go into the open commit as they come, and a commit,
//! when asked for, writes the meta restamped with the last rows' revision and clock.

use super::{Batch, PersistError, Persistence, Row, Stamp, REMOVED};
use crate::store::Meta;

/// At most this many batches are taken in once a commit is due (group commit), so a steady
/// stream of writes cannot put the commit off forever.
const GATHER_LIMIT: usize = 256;

/// Applies [`Batch`]es to an engine.
#[derive(Debug)]
pub struct Committer<P> {
    engine: P,
    meta: Option<Meta>,
    /// Rows or a meta change since the last commit.
    pending: bool,
    /// The store's revision and clock after the last rows written.
    stamp: Stamp,
}

impl<P: Persistence> Committer<P> {
    /// A committer over `engine`, whose meta row (as [`super::recover`] read it) is `meta`.
    pub fn new(engine: P, meta: Option<Meta>) -> Self {
        let stamp = meta.as_ref().map_or_else(Stamp::default, |m| Stamp { revision: m.revision(), clock: m.clock() });
        Self { engine, meta, pending: false, stamp }
    }

    /// The engine.
    pub fn engine(&self) -> &P {
        &self.engine
    }

    /// The engine, for a host that takes it back.
    pub fn into_engine(self) -> P {
        self.engine
    }

    /// Takes in rows or a meta change (a commit request is the caller's to keep: see
    /// [`Committer::run`]).
    ///
    /// # Errors
    /// The engine's, or a malformed row chunk.
    pub fn apply(&mut self, batch: Batch) -> Result<(), PersistError> {
        match batch {
            Batch::Rows { rows, revision, clock } => {
                self.stamp.advance(revision, clock);
                self.pending = true;
                self.write_rows(&rows)
            }
            Batch::Meta(meta) => {
                self.stamp.advance(meta.revision(), meta.clock());
                self.meta = Some(meta);
                self.pending = true;
                Ok(())
            }
            Batch::Commit { .. } => Ok(()),
        }
    }

    /// Decodes a chunk whole, then hands it to the engine: a malformed chunk writes nothing.
    fn write_rows(&mut self, rows: &[u8]) -> Result<(), PersistError> {
        let mut frames = Frames { rows, at: 0 };
        let mut decoded = Vec::new();
        while frames.at < rows.len() {
            let key_len = frames.word()? as usize;
            let key = frames.take(key_len)?;
            let value = match frames.word()? {
                REMOVED => None,
                value_len => Some(frames.take(value_len as usize)?),
            };
            decoded.push(Row { key, value });
        }
        self.engine.write_rows(&decoded)
    }

    /// Commits the rows taken in so far with the meta, restamped with the revision and clock of
    /// the last of them. Nothing to do when no rows and no meta change came since the last
    /// commit: what was asked for is durable already.
    ///
    /// # Errors
    /// The engine's.
    pub fn commit(&mut self) -> Result<(), PersistError> {
        if !self.pending {
            return Ok(());
        }
        if let Some(meta) = self.meta.as_mut() {
            meta.restamp(self.stamp.revision, self.stamp.clock);
            self.engine.put_meta(&meta.to_bytes())?;
        }
        self.pending = false;
        self.engine.commit()
    }

    /// The writer's loop: takes batches from `wait` (blocking; `None` once the writing side is
    /// gone) and, once a commit is requested and `group` is set, whatever `poll` has queued
    /// already (up to a bound), then commits once for all of it and reports the highest ticket
    /// requested. The first failure is reported and ends the loop: nothing after it is
    /// acknowledged.
    pub fn run(
        &mut self,
        group: bool,
        mut wait: impl FnMut() -> Option<Batch>,
        mut poll: impl FnMut() -> Option<Batch>,
        mut report: impl FnMut(Result<u64, PersistError>),
    ) {
        // The highest commit request not yet done.
        let mut requested: Option<u64> = None;
        let mut gathered = 0;
        loop {
            let batch = match requested {
                Some(_) if group && gathered < GATHER_LIMIT => {
                    gathered += 1;
                    poll()
                }
                Some(_) => None,
                None => wait(),
            };
            let outcome = match batch {
                Some(Batch::Commit { ticket }) => {
                    requested = Some(requested.map_or(ticket, |r| r.max(ticket)));
                    Ok(())
                }
                Some(batch) => self.apply(batch),
                None => {
                    let Some(ticket) = requested.take() else { return };
                    gathered = 0;
                    self.commit().map(|()| report(Ok(ticket)))
                }
            };
            if let Err(err) = outcome {
                report(Err(err));
                return;
            }
        }
    }
}

/// Reads a chunk of framed rows.
struct Frames<'a> {
    rows: &'a [u8],
    at: usize,
}

impl<'a> Frames<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], PersistError> {
        let bytes = self
            .at
            .checked_add(len)
            .and_then(|end| self.rows.get(self.at..end))
            .ok_or_else(|| PersistError::Io("a truncated row chunk".to_owned()))?;
        self.at += len;
        Ok(bytes)
    }

    fn word(&mut self) -> Result<u32, PersistError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}
