//! The SQLite side: one write connection in WAL mode with full fsync on commit, and a
//! small pool of read-only connections that read alongside it.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;

use super::{Request, Stats, WriterHandle};
use crate::{Result, StoreError};

// The same source serves both drivers on purpose: see the `sql` module's docs.
#[allow(clippy::duplicate_mod, reason = "shared/ is compiled once per driver")]
#[path = "shared/mod.rs"]
pub(super) mod shared;

pub(super) type Db = sqlx::Sqlite;

/// How long a statement waits for a lock held by another process (a backup, the
/// `sqlite3` shell) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const READERS: u32 = 4;

const MIGRATIONS: &[shared::Script] = &[shared::Script {
    version: 1,
    description: "init",
    sql: include_str!("../../migrations/sqlite/0001_init.sql"),
}];

pub(super) async fn open(
    url: &str,
    requests: mpsc::Receiver<Request>,
    stats: Arc<Stats>,
) -> Result<(SqlitePool, WriterHandle)> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Unavailable(
            "an in-memory SQLite database cannot be shared by the writer and the readers: \
             use a file (sqlite:PATH) or store::memory::MemoryStore"
                .into(),
        ));
    }
    let base = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL {url:?}: {e}")))?
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(false);
    let write = base
        .clone()
        .create_if_missing(true)
        // The writer's statements return the keys they wrote; let a whole group's
        // worth through without making the connection's thread wait for the reader.
        .row_buffer_size(4 * 1024)
        // The writer prepares a few dozen generated statements (each batch size of
        // each put, and of events); keep them all.
        .statement_cache_capacity(256)
        .journal_mode(SqliteJournalMode::Wal)
        // Every commit is on disk before it is acknowledged: the WAL is fsynced at
        // each commit. Group commit is what makes that affordable.
        .synchronous(SqliteSynchronous::Full)
        // Temporary tables (the VALUES lists of batched statements) stay in memory.
        // The page cache keeps SQLite's default size on purpose: measured here, a
        // larger one made every commit slower, as SQLite scans the whole cache when it
        // ends a write transaction.
        .pragma("temp_store", "memory")
        // Checkpoint (copy the WAL into the database file and fsync it) once the WAL
        // holds 4,000 pages (16 MB) rather than SQLite's 1,000: a group of a few hundred
        // writes fills ~500 pages, so the default checkpointed every other commit, and
        // the same hot table and index pages were copied again each time. Measured:
        // ~10% fewer bytes written per write, ~15% less commit time, ~5% more writes/s.
        .pragma("wal_autocheckpoint", "4000");
    let path = write.get_filename().display().to_string();
    let writer = shared::Writer::start(write, MIGRATIONS, requests, stats)
        .await
        .map_err(|e| match e {
            StoreError::Unavailable(reason) => {
                StoreError::Unavailable(format!("open SQLite database {path}: {reason}"))
            }
            other => other,
        })?;
    // Readers never write; opening them read-only makes sure of it. They connect after
    // the writer has created the file and switched it to WAL.
    let reads = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(base.read_only(true))
        .await?;
    Ok((reads, writer))
}

/// Opens a write transaction and reads the counters. `IMMEDIATE` takes SQLite's write
/// lock at once, so a transaction never fails half way because another process started
/// writing.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE; SELECT name, value FROM counters";

/// The conflict clause of generated multi-row writes. Inside a transaction, SQLite
/// keeps a statement journal (a copy of every page a statement changes) for any
/// multi-row statement that could abort half way, so that it can undo just that
/// statement. A write that resolves its conflicts by ignoring them cannot abort: a
/// duplicate key is what `ON CONFLICT DO NOTHING` already skips (and the writer reports),
/// and every NOT NULL column is bound from a non-optional value.
const OR_IGNORE: &str = " OR IGNORE";

/// Generated statements use `?` parameters: positional, so binding many of them
/// costs no name lookups.
fn placeholder(_: usize) -> String {
    "?".to_owned()
}
