//! The PostgreSQL side: one write connection and a pool of readers. Several servers may
//! share one database, so every write transaction first takes one transaction-scoped
//! advisory lock: write transactions run one at a time across all servers, event
//! sequence numbers follow commit order, and a lock row read inside a transaction
//! cannot change before that transaction writes it.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;

use super::{Request, Stats, WriterHandle};
use crate::{Result, StoreError};

// The same source serves both drivers on purpose: see the `sql` module's docs.
#[allow(clippy::duplicate_mod, reason = "shared/ is compiled once per driver")]
#[path = "shared/mod.rs"]
pub(super) mod shared;

pub(super) type Db = sqlx::Postgres;

const READERS: u32 = 8;

const MIGRATIONS: &[shared::Script] = &[shared::Script {
    version: 1,
    description: "init",
    sql: include_str!("../../migrations/postgres/0001_init.sql"),
}];

pub(super) async fn open(
    url: &str,
    requests: mpsc::Receiver<Request>,
    stats: Arc<Stats>,
) -> Result<(PgPool, WriterHandle)> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
        .application_name("corral");
    // The writer prepares a few dozen generated statements (each batch size of each
    // put, and of events); keep them all.
    let write = options.clone().statement_cache_capacity(256);
    // The writer migrates the schema; sqlx's migrator holds a session advisory lock
    // while it runs, so servers starting together do not race to create it.
    let writer = shared::Writer::start(write, MIGRATIONS, requests, stats).await?;
    let reads = PgPoolOptions::new()
        .max_connections(READERS)
        .connect_with(options)
        .await?;
    Ok((reads, writer))
}

/// Opens a write transaction, takes the write lock, and reads the counters. The lock
/// is transaction-scoped, so it is released by COMMIT or ROLLBACK, or when the
/// connection drops. Its key is "corral" in ASCII.
const BEGIN_WRITE: &str =
    "BEGIN; SELECT pg_advisory_xact_lock(109330312618348); SELECT name, value FROM counters";

/// PostgreSQL has no statement journal to spare: its writes need no conflict clause.
const OR_IGNORE: &str = "";

/// Generated statements number their parameters.
fn placeholder(n: usize) -> String {
    format!("${n}")
}
