//! Writing prepared changes, many per statement.
//!
//! Every put is a conditional write: an INSERT that does nothing when the row exists, or
//! an UPDATE that matches only the expected generation. The puts of one table and kind
//! go out as one multi-row statement with `RETURNING` the keys it wrote; a put whose key
//! is missing from the answer wrote nothing, and a lookup of its row's generation says
//! why. The caller makes sure no two changes written together touch the same row, so
//! they commute and one statement can carry them all.
//!
//! Each database round trip costs tens of microseconds (the driver hands every
//! statement to its connection's thread), far more than SQLite spends on a row, so the
//! number of statements per group is what this module keeps down.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use model::Generation;
use sqlx::Database;

use super::{Conn, Db, Fail, OR_IGNORE, parameters};
use crate::rows;
use crate::sql::prepare::{Applied, Change, Column, Put, Table, Write};
use crate::sql::{int, uint};
use crate::{Expect, StoreError};

/// The most rows one generated statement carries.
pub(super) const MAX_ROWS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Insert,
    Update,
}

fn op(put: &Put) -> Op {
    match put.expect {
        Expect::Absent => Op::Insert,
        Expect::Generation(_) => Op::Update,
    }
}

/// The statement that puts `rows` rows into `table` with `op`.
fn put_statement(table: Table, op: Op, rows: usize) -> String {
    let (name, keys, values) = (table.name(), table.keys(), table.values());
    let columns = keys.len() + values.len();
    match op {
        Op::Insert => {
            let tuples: Vec<String> = (0..rows)
                .map(|r| parameters(r * columns + 1, columns))
                .collect();
            format!(
                "INSERT{OR_IGNORE} INTO {name} ({}, {}) VALUES {} ON CONFLICT ({}) DO NOTHING \
                 RETURNING {}",
                keys.join(", "),
                values.join(", "),
                tuples.join(", "),
                keys.join(", "),
                table.returning()
            )
        }
        Op::Update => {
            // Each tuple carries the row and, last, the generation it must be at.
            // VALUES columns are named column1, column2, ... on both databases.
            let width = columns + 1;
            let tuples: Vec<String> = (0..rows)
                .map(|r| parameters(r * width + 1, width))
                .collect();
            let set: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c} = v.column{}", keys.len() + i + 1))
                .collect();
            let matches: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{name}.{k} = v.column{}", i + 1))
                .collect();
            format!(
                "UPDATE{OR_IGNORE} {name} SET {} FROM (VALUES {}) AS v WHERE {} \
                 AND {name}.generation = v.column{width} RETURNING {}",
                set.join(", "),
                tuples.join(", "),
                matches.join(" AND "),
                table.returning()
            )
        }
    }
}

/// Row counts the generated statements come in: powers of two up to [`MAX_ROWS`]. A
/// batch is padded up to the next size by repeating its last row, which changes
/// nothing (a repeated insert conflicts with itself and does nothing; a repeated update
/// matches the row it already matched), so each batch is one statement while the
/// driver's prepared-statement cache holds a few dozen.
pub(super) fn padded(rows: usize) -> usize {
    rows.clamp(1, MAX_ROWS).next_power_of_two()
}

static PUT_STATEMENTS: LazyLock<Vec<(Table, Op, Vec<String>)>> = LazyLock::new(|| {
    let mut all = Vec::new();
    for table in Table::ALL {
        for op in [Op::Insert, Op::Update] {
            let sizes = std::iter::successors(Some(1), |n| Some(n * 2))
                .take_while(|n| *n <= MAX_ROWS)
                .map(|n| put_statement(table, op, n))
                .collect();
            all.push((table, op, sizes));
        }
    }
    all
});

fn put_sql(table: Table, op: Op, rows: usize) -> &'static str {
    let sizes = PUT_STATEMENTS
        .iter()
        .find(|(t, o, _)| *t == table && *o == op)
        .map(|(_, _, sizes)| sizes)
        .expect("PUT_STATEMENTS covers every table and operation");
    &sizes[padded(rows).trailing_zeros() as usize]
}

/// `column = $1 AND ...` over the table's keys, numbered from `$1`.
fn key_match(table: Table) -> String {
    let terms: Vec<String> = table
        .keys()
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} = ${}", i + 1))
        .collect();
    terms.join(" AND ")
}

/// Per table: the generation lookup, and the delete at a generation (which returns a
/// row only if it deleted one).
static KEY_STATEMENTS: LazyLock<Vec<(Table, String, String)>> = LazyLock::new(|| {
    Table::ALL
        .into_iter()
        .map(|table| {
            let (name, matches) = (table.name(), key_match(table));
            let next = table.keys().len() + 1;
            (
                table,
                format!("SELECT generation FROM {name} WHERE {matches}"),
                format!(
                    "DELETE FROM {name} WHERE {matches} AND generation = ${next} \
                     RETURNING generation"
                ),
            )
        })
        .collect()
});

fn key_sql(table: Table) -> (&'static str, &'static str) {
    KEY_STATEMENTS
        .iter()
        .find(|(t, _, _)| *t == table)
        .map(|(_, select, delete)| (select.as_str(), delete.as_str()))
        .expect("KEY_STATEMENTS covers every table")
}

type Arguments = <Db as Database>::Arguments;

fn bind<'q, O>(
    query: sqlx::query::QueryScalar<'q, Db, O, Arguments>,
    column: &'q Column,
) -> sqlx::query::QueryScalar<'q, Db, O, Arguments> {
    // Shared strings are bound by handle: the writer copies no text.
    match column {
        Column::Text(s) => query.bind(s.clone()),
        Column::MaybeText(s) => query.bind(s.clone()),
        Column::Int(n) => query.bind(*n),
    }
}

/// Writes changes that touch distinct rows. Returns each one's outcome in order; a
/// database error is returned as such and leaves the transaction to be rolled back.
pub(super) async fn apply(
    conn: &mut Conn,
    changes: Vec<Change>,
) -> Result<Vec<Result<Applied, StoreError>>, sqlx::Error> {
    // Puts first, batched by table and kind. `written[i]`: whether change i's put wrote
    // its row.
    let mut written = vec![false; changes.len()];
    for table in Table::ALL {
        for kind in [Op::Insert, Op::Update] {
            let batch: Vec<(usize, &Put, &Arc<str>)> = changes
                .iter()
                .enumerate()
                .filter_map(|(i, change)| match &change.write {
                    Write::Put(put) if put.table == table && op(put) == kind => {
                        Some((i, put, &change.applied.text))
                    }
                    _ => None,
                })
                .collect();
            for rows in batch.chunks(MAX_ROWS) {
                let mut query = sqlx::query_scalar::<Db, String>(put_sql(table, kind, rows.len()));
                let last = rows.last().expect("chunks are never empty");
                let padding = std::iter::repeat_n(last, padded(rows.len()) - rows.len());
                for (_, put, text) in rows.iter().chain(padding) {
                    for column in &put.columns {
                        query = bind(query, column);
                    }
                    query = query.bind(Arc::clone(text));
                    if let Expect::Generation(g) = put.expect {
                        query = query.bind(int(g));
                    }
                }
                let keys = query.fetch_all(&mut *conn).await?;
                // A statement returns each row it wrote once (an update joined twice to
                // one row, by the padding, still writes it once), and only rows of
                // these puts: as many keys as puts means every put wrote. Otherwise,
                // which ones did is looked up by key.
                if keys.len() == rows.len() {
                    for (i, _, _) in rows {
                        written[*i] = true;
                    }
                } else {
                    let keys: HashSet<&str> = keys.iter().map(String::as_str).collect();
                    for (i, put, _) in rows {
                        written[*i] = keys.contains(put.returned.as_str());
                    }
                }
            }
        }
    }

    let mut outcomes = Vec::with_capacity(changes.len());
    for (change, done) in changes.into_iter().zip(written) {
        let outcome = match &change.write {
            Write::Put(put) => {
                if done {
                    Ok(())
                } else {
                    Err(conflict(conn, &change, put.table, &put.columns, put.expect).await)
                }
            }
            Write::Delete {
                table,
                keys,
                expect,
            } => delete(conn, &change, *table, keys, *expect).await,
            Write::Domain(domain) => sqlx::query(
                "INSERT INTO domains (name, expires_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
            )
            .bind(domain.name.as_str())
            .bind(domain.expires_at.map(|at| int(at.0)))
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(Fail::Db),
        };
        outcomes.push(match outcome {
            Ok(()) => Ok(change.applied),
            Err(Fail::Store(e)) => Err(e),
            Err(Fail::Db(e)) => return Err(e),
        });
    }
    Ok(outcomes)
}

async fn delete(
    conn: &mut Conn,
    change: &Change,
    table: Table,
    keys: &[Column],
    expect: Generation,
) -> Result<(), Fail> {
    let mut query = sqlx::query_scalar::<Db, i64>(key_sql(table).1);
    for column in keys {
        query = bind(query, column);
    }
    let deleted = query.bind(int(expect)).fetch_optional(&mut *conn).await?;
    match deleted {
        Some(_) => Ok(()),
        None => Err(conflict(conn, change, table, keys, Expect::Generation(expect)).await),
    }
}

/// The error for a write that matched no row: the row is missing, exists, or is at
/// another generation.
async fn conflict(
    conn: &mut Conn,
    change: &Change,
    table: Table,
    columns: &[Column],
    expect: Expect,
) -> Fail {
    let mut query = sqlx::query_scalar::<Db, i64>(key_sql(table).0);
    for column in &columns[..table.keys().len()] {
        query = bind(query, column);
    }
    let current = match query.fetch_optional(&mut *conn).await {
        Ok(current) => current,
        Err(e) => return Fail::Db(e),
    };
    let current = match current
        .map(|g| uint(change.kind, &change.key, g))
        .transpose()
    {
        Ok(current) => current,
        Err(e) => return Fail::Store(e),
    };
    Fail::Store(
        rows::next_generation(change.kind, &change.key, current, expect)
            .err()
            .unwrap_or_else(|| {
                StoreError::Unavailable(format!(
                    "{} {} matched no row at generation {current:?}",
                    change.kind, change.key
                ))
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_to_powers_of_two() {
        assert_eq!(padded(1), 1);
        assert_eq!(padded(3), 4);
        assert_eq!(padded(64), 64);
        assert_eq!(padded(65), 128);
        assert_eq!(padded(1000), MAX_ROWS);
    }
}
