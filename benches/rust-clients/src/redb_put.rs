//! redb alone doing what the store suite's durable-put asks of lmdb: batches of fresh keys
//! (`key-<n>`, the suite's), each a 64-byte value, one write transaction a batch, committed with
//! redb's default durability (the commit returns once fsync has). The ceiling of any durable
//! store built on redb, as Orrery's is (bindings/node/src/disk.rs), measured beside Orrery and
//! lmdb in the same run.
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use crate::Error;

const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// What a round did: puts, its time, and the p99 of a batch (from `begin_write` to the commit's
/// return).
pub struct Round {
    pub puts: usize,
    pub ms: f64,
    pub p99_us: f64,
}

/// Opens (or creates) `path` and commits batches of `batch` puts, keys from `from` on, until
/// `round` has passed.
pub fn run(path: &str, from: usize, batch: usize, round: Duration) -> Result<Round, Error> {
    let db = Database::create(path)?;
    let value = [7u8; 64];
    let mut next = from;
    let mut batches = Vec::new();
    let start = Instant::now();
    while start.elapsed() < round {
        let t0 = Instant::now();
        let txn = db.begin_write()?;
        {
            let mut rows = txn.open_table(ROWS)?;
            for _ in 0..batch {
                rows.insert(format!("key-{next}").as_bytes(), value.as_slice())?;
                next += 1;
            }
        }
        txn.commit()?;
        batches.push(t0.elapsed());
    }
    let ms = start.elapsed().as_secs_f64() * 1e3;
    batches.sort_unstable();
    let p99 = batches.get((batches.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or_default();
    Ok(Round { puts: next - from, ms, p99_us: p99.as_secs_f64() * 1e6 })
}

/// How many keys the file at `path` holds (the suite checks every round's puts are there).
pub fn count(path: &str) -> Result<u64, Error> {
    let db = Database::open(path)?;
    Ok(db.begin_read()?.open_table(ROWS)?.len()?)
}
