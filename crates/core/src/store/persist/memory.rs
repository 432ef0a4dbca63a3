//! An engine that keeps its rows in memory, with faults on request: what the durability rules
//! are tested against, and what a host without a disk can use to check its own.

use std::collections::BTreeMap;

use super::{PersistError, Persistence, Row, RowVisitor};

/// Faults a [`Memory`] engine injects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// The commit with this number (counting from 0) fails, and so does every later one.
    pub fail_commit: Option<usize>,
    /// A failing commit tears: the first half of its changes become durable anyway, as an
    /// engine that is not all-or-nothing would leave them.
    pub tear: bool,
    /// Writing (put or remove) the row with this number (counting from 0) fails.
    pub fail_write: Option<usize>,
}

/// One change of an open commit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Meta(Vec<u8>),
}

/// What survives a crash: the committed rows and meta row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durable {
    /// The meta row.
    pub meta: Option<Vec<u8>>,
    /// Every row by key.
    pub rows: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Durable {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Put(key, value) => {
                self.rows.insert(key, value);
            }
            Change::Remove(key) => {
                self.rows.remove(&key);
            }
            Change::Meta(meta) => self.meta = Some(meta),
        }
    }
}

/// Rows in memory, committed all or nothing (unless told to tear).
#[derive(Debug, Clone, Default)]
pub struct Memory {
    durable: Durable,
    open: Vec<Change>,
    /// Faults to inject.
    pub faults: Faults,
    commits: usize,
    writes: usize,
}

impl Memory {
    /// An engine holding `durable`, as a file reopened after a crash would.
    #[must_use]
    pub fn reopen(durable: Durable) -> Self {
        Self { durable, ..Self::default() }
    }

    /// What a crash now would leave: the commits that returned, nothing of the open one.
    #[must_use]
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// How many commits returned.
    #[must_use]
    pub fn commits(&self) -> usize {
        self.commits
    }

    fn write(&mut self, change: Change) -> Result<(), PersistError> {
        let n = self.writes;
        self.writes += 1;
        if self.faults.fail_write == Some(n) {
            return Err(PersistError::Io(format!("row write {n} failed (injected)")));
        }
        self.open.push(change);
        Ok(())
    }
}

impl Persistence for Memory {
    fn read_meta(&mut self) -> Result<Option<Vec<u8>>, PersistError> {
        Ok(self.durable.meta.clone())
    }

    fn read_rows(&mut self, each: &mut RowVisitor<'_>) -> Result<(), PersistError> {
        self.durable.rows.iter().try_for_each(|(key, value)| each(key, value))
    }

    fn write_rows(&mut self, rows: &[Row<'_>]) -> Result<(), PersistError> {
        rows.iter().try_for_each(|row| {
            self.write(match row.value {
                Some(value) => Change::Put(row.key.to_vec(), value.to_vec()),
                None => Change::Remove(row.key.to_vec()),
            })
        })
    }

    fn put_meta(&mut self, meta: &[u8]) -> Result<(), PersistError> {
        self.open.push(Change::Meta(meta.to_vec()));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), PersistError> {
        let changes = std::mem::take(&mut self.open);
        if self.faults.fail_commit.is_some_and(|n| self.commits >= n) {
            if self.faults.tear {
                let half = changes.len() / 2;
                changes.into_iter().take(half).for_each(|c| self.durable.apply(c));
            }
            return Err(PersistError::Io(format!("commit {} failed (injected)", self.commits)));
        }
        for change in changes {
            self.durable.apply(change);
        }
        self.commits += 1;
        Ok(())
    }
}
