//! Reads, from the connection pool: single rows by key, filtered listings in the order
//! the trait promises, the event log and live locks.

use std::str::FromStr;

use model::{Domain, Lrp, Name, Task, Timestamp};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use sqlx::{AssertSqlSafe, Pool};

use super::{Db, LockRow, decode, lock_record};
use crate::rows::{self, DOMAIN, INSTANCE, LRP, TASK};
use crate::sql::{instance_state_name, int, prefix_end, task_state_name, uint};
use crate::{
    Event, EventKind, InstanceFilter, LockRecord, LrpFilter, Result, StoreError, TaskFilter,
};

/// `base` with a `WHERE` clause for the filters that are set, numbered from `$1`.
fn filtered<'a>(
    base: &str,
    filters: [(&str, Option<&'a str>); 3],
    order: &str,
) -> (String, Vec<&'a str>) {
    let mut sql = String::from(base);
    let mut binds = Vec::new();
    for (column, value) in filters {
        if let Some(value) = value {
            binds.push(value);
            let joiner = if binds.len() == 1 { " WHERE " } else { " AND " };
            sql.push_str(&format!("{joiner}{column} = ${}", binds.len()));
        }
    }
    sql.push_str(order);
    (sql, binds)
}

/// Runs a filtered `SELECT key, data` and decodes each row.
async fn select_rows<T: DeserializeOwned>(
    pool: &Pool<Db>,
    kind: &'static str,
    (sql, binds): (String, Vec<&str>),
) -> Result<Vec<T>> {
    // The SQL is assembled from constant fragments only; values are bound.
    let mut query = sqlx::query_as::<Db, (String, String)>(AssertSqlSafe(sql));
    for value in binds {
        query = query.bind(value);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter()
        .map(|(key, data)| decode(kind, key, data))
        .collect()
}

pub(in crate::sql) async fn get_lrp(pool: &Pool<Db>, name: &Name) -> Result<Option<Lrp>> {
    let data: Option<String> = sqlx::query_scalar("SELECT data FROM lrps WHERE name = $1")
        .bind(name.as_str())
        .fetch_optional(pool)
        .await?;
    data.map(|d| decode(LRP, name.as_str(), &d)).transpose()
}

pub(in crate::sql) async fn list_lrps(pool: &Pool<Db>, filter: &LrpFilter) -> Result<Vec<Lrp>> {
    let domain = filter.domain.as_ref().map(Name::as_str);
    let query = filtered(
        "SELECT name, data FROM lrps",
        [("domain", domain), ("", None), ("", None)],
        " ORDER BY name",
    );
    select_rows(pool, LRP, query).await
}

pub(in crate::sql) async fn list_instances(
    pool: &Pool<Db>,
    filter: &InstanceFilter,
) -> Result<Vec<model::Instance>> {
    let query = filtered(
        "SELECT lrp, data FROM instances",
        [
            ("lrp", filter.lrp.as_ref().map(Name::as_str)),
            ("cell_id", filter.cell.as_ref().map(Name::as_str)),
            ("state", filter.state.map(instance_state_name)),
        ],
        " ORDER BY lrp, idx, presence",
    );
    select_rows(pool, INSTANCE, query).await
}

pub(in crate::sql) async fn get_instances(
    pool: &Pool<Db>,
    lrp: &Name,
    index: u32,
) -> Result<Vec<model::Instance>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT lrp, data FROM instances WHERE lrp = $1 AND idx = $2 ORDER BY presence",
    )
    .bind(lrp.as_str())
    .bind(i64::from(index))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|(key, data)| decode(INSTANCE, key, data))
        .collect()
}

pub(in crate::sql) async fn get_task(pool: &Pool<Db>, id: &Name) -> Result<Option<Task>> {
    let data: Option<String> = sqlx::query_scalar("SELECT data FROM tasks WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    data.map(|d| decode(TASK, id.as_str(), &d)).transpose()
}

pub(in crate::sql) async fn list_tasks(pool: &Pool<Db>, filter: &TaskFilter) -> Result<Vec<Task>> {
    let query = filtered(
        "SELECT id, data FROM tasks",
        [
            ("domain", filter.domain.as_ref().map(Name::as_str)),
            ("state", filter.state.map(task_state_name)),
            ("cell_id", filter.cell.as_ref().map(Name::as_str)),
        ],
        " ORDER BY created_at, id",
    );
    select_rows(pool, TASK, query).await
}

pub(in crate::sql) async fn list_domains(pool: &Pool<Db>) -> Result<Vec<Domain>> {
    let rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT name, expires_at FROM domains ORDER BY name")
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(name, expires_at)| {
            let corrupt = |reason: String| StoreError::Corrupt {
                kind: DOMAIN,
                key: name.clone(),
                reason,
            };
            Ok(Domain {
                name: Name::parse("name", &name).map_err(|e| corrupt(e.to_string()))?,
                expires_at: expires_at
                    .map(|at| uint(DOMAIN, &name, at).map(Timestamp))
                    .transpose()?,
            })
        })
        .collect()
}

pub(in crate::sql) async fn events_after(
    pool: &Pool<Db>,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT seq, kind, at, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(int(after))
    .bind(int(limit as u64))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(seq, kind, at, data)| {
            let key = seq.to_string();
            Ok(Event {
                seq: uint(rows::EVENT, &key, seq)?,
                kind: EventKind::from_str(&kind).map_err(|reason| StoreError::Corrupt {
                    kind: rows::EVENT,
                    key: key.clone(),
                    reason,
                })?,
                at: Timestamp(uint(rows::EVENT, &key, at)?),
                data: RawValue::from_string(data).map_err(|e| StoreError::Corrupt {
                    kind: rows::EVENT,
                    key: key.clone(),
                    reason: e.to_string(),
                })?,
            })
        })
        .collect()
}

pub(in crate::sql) async fn event_bounds(pool: &Pool<Db>) -> Result<Option<(u64, u64)>> {
    let (first, last): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT MIN(seq), MAX(seq) FROM events")
            .fetch_one(pool)
            .await?;
    match (first, last) {
        (Some(first), Some(last)) => Ok(Some((
            uint(rows::EVENT, "first", first)?,
            uint(rows::EVENT, "last", last)?,
        ))),
        _ => Ok(None),
    }
}

pub(in crate::sql) async fn list_locks(
    pool: &Pool<Db>,
    prefix: &str,
    now: Timestamp,
) -> Result<Vec<LockRecord>> {
    // A range scan on the key rather than LIKE: no wildcards to escape, and the
    // primary key index serves it.
    let rows: Vec<LockRow> = match prefix_end(prefix) {
        Some(end) => {
            sqlx::query_as(
                "SELECT key, owner, kind, value, fence, expires_at FROM locks \
                 WHERE key >= $1 AND key < $2 AND expires_at > $3 ORDER BY key",
            )
            .bind(prefix)
            .bind(end)
            .bind(int(now.0))
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT key, owner, kind, value, fence, expires_at FROM locks \
                 WHERE key >= $1 AND expires_at > $2 ORDER BY key",
            )
            .bind(prefix)
            .bind(int(now.0))
            .fetch_all(pool)
            .await?
        }
    };
    rows.into_iter()
        .filter(|row| row.0.starts_with(prefix))
        .map(lock_record)
        .collect()
}
