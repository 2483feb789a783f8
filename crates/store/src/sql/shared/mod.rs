//! The SQL store's queries and its group-commit writer, written once and compiled once
//! per driver: `super::Db` is `sqlx::Sqlite` in one copy and `sqlx::Postgres` in the
//! other; `super::BEGIN_WRITE` opens a write transaction and reads the counters, and
//! `super::placeholder` spells the n-th parameter of a generated statement and
//! `super::OR_IGNORE` the conflict clause of its multi-row writes, each the driver's
//! way.
//! Hand-written statements use `$N`, which both databases accept.

mod batch;
mod mutate;
mod read;
mod write;

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Connection, Database, SqlStr};

pub(in crate::sql) use read::{
    event_bounds, events_after, get_instances, get_lrp, get_task, list_domains, list_instances,
    list_locks, list_lrps, list_tasks,
};
pub(in crate::sql) use write::Writer;

use super::{BEGIN_WRITE, Db, OR_IGNORE, placeholder};
use crate::rows::LOCK;
use crate::sql::{lock_kind, uint};
use crate::{LockRecord, Result, StoreError};

type Conn = <Db as Database>::Connection;
type Options = <Conn as Connection>::Options;

/// One migration script, embedded in the binary.
#[derive(Debug)]
pub(in crate::sql) struct Script {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Brings the schema up to date with `scripts`.
pub(in crate::sql) async fn migrate(conn: &mut Conn, scripts: &[Script]) -> Result<()> {
    let migrations = scripts
        .iter()
        .map(|s| {
            Migration::new(
                s.version,
                Cow::Borrowed(s.description),
                MigrationType::Simple,
                SqlStr::from_static(s.sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
        .run(&mut *conn)
        .await
        .map_err(|e| StoreError::Unavailable(format!("migrate the store schema: {e}")))
}

/// Why one write request failed: its own condition (the others in its group go on), or
/// the database (the whole group fails).
enum Fail {
    Store(StoreError),
    Db(sqlx::Error),
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Store(e)
    }
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Fail {
        Fail::Db(e)
    }
}

fn decode<T: DeserializeOwned>(kind: &'static str, key: &str, data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt {
        kind,
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// A `locks` row as selected by `SELECT key, owner, kind, value, fence, expires_at`.
type LockRow = (String, String, String, String, i64, i64);

fn lock_record((key, owner, kind, value, fence, expires_at): LockRow) -> Result<LockRecord> {
    Ok(LockRecord {
        kind: lock_kind(&key, &kind)?,
        fence: uint(LOCK, &key, fence)?,
        expires_at: model::Timestamp(uint(LOCK, &key, expires_at)?),
        key,
        owner,
        value,
    })
}

/// `count` parameters in a row, as the driver spells them, numbered from `first`.
fn parameters(first: usize, count: usize) -> String {
    let list: Vec<String> = (first..first + count).map(placeholder).collect();
    format!("({})", list.join(", "))
}
