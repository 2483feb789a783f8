//! One write transaction's work: the requests of a group applied in order, the
//! counters they move and the events they append, inserted when the group ends.
//!
//! Consecutive single-mutation commits (the common case: one row per commit) are
//! applied together: split into waves in which no row appears twice, and each wave
//! written with a few multi-row statements. Commits in one wave touch distinct rows, so
//! applying them together is the same as applying them one by one in their queue
//! order, and their events get sequence numbers in that order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use model::Timestamp;
use serde_json::value::RawValue;
use sqlx::Row;

use super::mutate::{self, MAX_ROWS, padded};
use super::write::{Done, GroupFailure, Single};
use super::{BEGIN_WRITE, Conn, Fail, LockRow, OR_IGNORE, lock_record, parameters};
use crate::rows;
use crate::sql::prepare::{Applied, PreparedCommit};
use crate::sql::{int, lock_kind_name};
use crate::{Committed, Event, EventKind, Lease, LockRecord, LockRequest, Result, StoreError};

/// An event waiting to be inserted when its transaction finishes.
struct EventRow {
    seq: i64,
    kind: EventKind,
    at: i64,
    /// The text the caller encoded, shared with the row it is about.
    data: Arc<str>,
}

/// Each event kind's name as a shared string, so binding one allocates nothing.
static KIND_NAMES: LazyLock<Vec<(EventKind, Arc<str>)>> = LazyLock::new(|| {
    EventKind::ALL
        .into_iter()
        .map(|kind| (kind, Arc::from(kind.as_str())))
        .collect()
});

fn kind_name(kind: EventKind) -> Arc<str> {
    KIND_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, name)| name.clone())
        .expect("KIND_NAMES covers every event kind")
}

/// What one transaction has done so far: the counters it moved and the events it has
/// yet to insert.
pub(super) struct Batch {
    last_seq: u64,
    last_fence: u64,
    read_seq: u64,
    read_fence: u64,
    events: Vec<EventRow>,
}

/// `INSERT INTO events` statements for 1, 2, 4 ... [`MAX_ROWS`] rows. Like puts, a
/// batch of events is padded to the next size by repeating its last row, which the
/// `ON CONFLICT` clause ignores.
static EVENT_INSERTS: LazyLock<Vec<String>> = LazyLock::new(|| {
    std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|n| *n <= MAX_ROWS)
        .map(|rows| {
            let tuples: Vec<String> = (0..rows).map(|r| parameters(r * 4 + 1, 4)).collect();
            format!(
                "INSERT{OR_IGNORE} INTO events (seq, kind, at, data) VALUES {} \
                 ON CONFLICT (seq) DO NOTHING",
                tuples.join(", ")
            )
        })
        .collect()
});

impl Batch {
    /// Opens the write transaction and reads the counters, in one round trip. On
    /// PostgreSQL this first takes the write lock, so no other server moves the
    /// counters until this transaction ends.
    pub(super) async fn begin(conn: &mut Conn) -> Result<Batch, GroupFailure> {
        let rows = sqlx::raw_sql(BEGIN_WRITE).fetch_all(&mut *conn).await?;
        let mut counters = Vec::with_capacity(2);
        // Only the counters' rows have two columns (PostgreSQL's lock returns one).
        for row in rows.iter().filter(|row| row.len() == 2) {
            counters.push((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?));
        }
        let counter = |name: &str| -> Result<u64, GroupFailure> {
            let value = counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            let corrupt = |reason: String| GroupFailure {
                error: StoreError::Corrupt {
                    kind: "counter",
                    key: name.to_owned(),
                    reason,
                },
                reconnect: false,
            };
            let value = value.ok_or_else(|| corrupt("missing".into()))?;
            u64::try_from(value).map_err(|_| corrupt(format!("negative value {value}")))
        };
        let (seq, fence) = (counter("event_seq")?, counter("fence")?);
        Ok(Batch {
            last_seq: seq,
            last_fence: fence,
            read_seq: seq,
            read_fence: fence,
            events: Vec::new(),
        })
    }

    /// The statements that store the counters that moved and commit. The numbers are
    /// written into the SQL: they are integers the writer computed, and this way the
    /// counters and the COMMIT take one round trip.
    pub(super) fn commit_statement(&self) -> Result<String, GroupFailure> {
        let mut sql = String::new();
        for (name, value, read) in [
            ("event_seq", self.last_seq, self.read_seq),
            ("fence", self.last_fence, self.read_fence),
        ] {
            if value != read {
                let value = i64::try_from(value).map_err(|_| GroupFailure {
                    error: StoreError::Unavailable(format!("counter {name} overflowed")),
                    reconnect: false,
                })?;
                sql.push_str(&format!(
                    "UPDATE counters SET value = {value} WHERE name = '{name}'; "
                ));
            }
        }
        sql.push_str("COMMIT");
        Ok(sql)
    }

    fn append(
        &mut self,
        at: Timestamp,
        kind: EventKind,
        data: Box<RawValue>,
        text: Arc<str>,
    ) -> Event {
        self.last_seq += 1;
        self.events.push(EventRow {
            seq: int(self.last_seq),
            kind,
            at: int(at.0),
            data: text,
        });
        Event {
            seq: self.last_seq,
            kind,
            at,
            data,
        }
    }

    fn append_value(&mut self, at: Timestamp, kind: EventKind, data: Box<RawValue>) -> Event {
        let text = Arc::from(data.get());
        self.append(at, kind, data, text)
    }

    fn committed(&mut self, now: Timestamp, applied: Vec<Applied>) -> Committed {
        let mut generations = Vec::with_capacity(applied.len());
        let mut events = Vec::with_capacity(applied.len());
        for a in applied {
            generations.push(a.generation);
            events.push(self.append(now, a.kind, a.data, a.text));
        }
        Committed {
            generations,
            events,
        }
    }

    /// Inserts the events appended so far, [`MAX_ROWS`] per statement.
    pub(super) async fn flush(&mut self, conn: &mut Conn) -> sqlx::Result<()> {
        let events = std::mem::take(&mut self.events);
        for rows in events.chunks(MAX_ROWS) {
            let size = padded(rows.len());
            let sql: &'static str = &EVENT_INSERTS[size.trailing_zeros() as usize];
            let mut query = sqlx::query(sql);
            let last = rows.last().expect("chunks are never empty");
            let padding = std::iter::repeat_n(last, size - rows.len());
            for row in rows.iter().chain(padding) {
                query = query
                    .bind(row.seq)
                    .bind(kind_name(row.kind))
                    .bind(row.at)
                    .bind(row.data.clone());
            }
            let inserted = query.execute(&mut *conn).await?.rows_affected();
            // The padding inserts nothing; a real row that inserted nothing would mean
            // its sequence number was already taken, which only a corrupt counter can
            // cause. The whole group fails rather than lose the event.
            if inserted != rows.len() as u64 {
                return Err(sqlx::Error::Protocol(format!(
                    "event sequence numbers from {} were already used: the event_seq \
                     counter is behind the event log",
                    rows[0].seq
                )));
            }
        }
        Ok(())
    }

    /// Applies a commit of any size on its own. A failed mutation is undone with the
    /// ones before it by rolling back to a savepoint.
    pub(super) async fn commit(
        &mut self,
        conn: &mut Conn,
        commit: PreparedCommit,
    ) -> Result<Committed, Fail> {
        if let Some(fence) = &commit.fence {
            let held = read_lock(conn, &fence.key).await?;
            rows::check_fence(fence, held.as_ref(), commit.now)?;
        }
        // One mutation that fails writes nothing (its statement matched no row), so
        // only a commit of several needs a savepoint to undo the ones before.
        let savepoint = commit.changes.len() > 1;
        if savepoint {
            sqlx::query("SAVEPOINT corral_commit")
                .execute(&mut *conn)
                .await?;
        }
        let mut applied = Vec::with_capacity(commit.changes.len());
        for change in commit.changes {
            // One at a time: a later mutation may touch the row an earlier one wrote.
            let outcome = mutate::apply(conn, vec![change]).await?.pop();
            match outcome {
                Some(Ok(a)) => applied.push(a),
                Some(Err(e)) => {
                    if savepoint {
                        sqlx::raw_sql(
                            "ROLLBACK TO SAVEPOINT corral_commit; \
                             RELEASE SAVEPOINT corral_commit",
                        )
                        .execute(&mut *conn)
                        .await?;
                    }
                    return Err(Fail::Store(e));
                }
                None => {
                    return Err(Fail::Store(StoreError::Unavailable(
                        "a mutation had no outcome".into(),
                    )));
                }
            }
        }
        if savepoint {
            sqlx::query("RELEASE SAVEPOINT corral_commit")
                .execute(&mut *conn)
                .await?;
        }
        Ok(self.committed(commit.now, applied))
    }

    /// Applies a run of single-mutation commits in waves of distinct rows. On a
    /// database error, gives back the commits not yet answered.
    pub(super) async fn singles(
        &mut self,
        conn: &mut Conn,
        run: Vec<Single>,
    ) -> Result<Vec<Done>, (Vec<Single>, sqlx::Error)> {
        let mut done = Vec::with_capacity(run.len());
        // Fences first: no lock changes during a run, so each lock is read once.
        let mut locks: HashMap<String, Option<LockRecord>> = HashMap::new();
        let mut pending = Vec::with_capacity(run.len());
        let mut run = run.into_iter();
        while let Some((commit, reply)) = run.next() {
            if let Some(fence) = &commit.fence {
                if !locks.contains_key(&fence.key) {
                    match read_lock(conn, &fence.key).await {
                        Ok(held) => {
                            locks.insert(fence.key.clone(), held);
                        }
                        Err(Fail::Store(e)) => {
                            done.push(Done::Commit(reply, Err(e)));
                            continue;
                        }
                        Err(Fail::Db(e)) => {
                            pending.push((commit, reply));
                            pending.extend(run);
                            return Err((pending, e));
                        }
                    }
                }
                let held = locks.get(&fence.key).and_then(Option::as_ref);
                if let Err(e) = rows::check_fence(fence, held, commit.now) {
                    done.push(Done::Commit(reply, Err(e)));
                    continue;
                }
            }
            pending.push((commit, reply));
        }

        while !pending.is_empty() {
            // The wave: each row's first commit; later commits to the same row wait for
            // the next wave, so they see this one's writes.
            let mut rows_seen = HashSet::with_capacity(pending.len());
            let mut wave = Vec::with_capacity(pending.len());
            let mut later = Vec::new();
            for (mut commit, reply) in pending {
                let Some(change) = commit.changes.pop() else {
                    done.push(Done::Commit(
                        reply,
                        Ok(self.committed(commit.now, Vec::new())),
                    ));
                    continue;
                };
                if rows_seen.insert((change.kind, change.key.clone())) {
                    wave.push((commit.now, change, reply));
                } else {
                    commit.changes.push(change);
                    later.push((commit, reply));
                }
            }
            pending = later;
            let (heads, changes): (Vec<_>, Vec<_>) = wave
                .into_iter()
                .map(|(now, change, reply)| ((now, reply), change))
                .unzip();
            let outcomes = match mutate::apply(conn, changes).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    // The wave's mutations are gone; their callers only need the error.
                    let mut unanswered: Vec<Single> = heads
                        .into_iter()
                        .map(|(now, reply)| {
                            let empty = PreparedCommit {
                                changes: Vec::new(),
                                fence: None,
                                now,
                            };
                            (empty, reply)
                        })
                        .collect();
                    unanswered.extend(pending);
                    return Err((unanswered, e));
                }
            };
            for ((now, reply), outcome) in heads.into_iter().zip(outcomes) {
                let answer = outcome.map(|applied| self.committed(now, vec![applied]));
                done.push(Done::Commit(reply, answer));
            }
        }
        Ok(done)
    }

    pub(super) async fn acquire(
        &mut self,
        conn: &mut Conn,
        request: LockRequest,
    ) -> Result<Lease, Fail> {
        let held = read_lock(conn, &request.key).await?;
        let acquired = rows::acquire(held.as_ref(), &request, self.last_fence + 1)?;
        let record = &acquired.record;
        let query = match &held {
            None => sqlx::query(
                "INSERT INTO locks (key, owner, kind, value, fence, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO NOTHING",
            ),
            // Compare-and-set on the token read above: with one writer per database
            // (SQLite) or the write lock (PostgreSQL) it always holds; if it ever did
            // not, nothing would be overwritten.
            Some(_) => sqlx::query(
                "UPDATE locks SET owner = $2, kind = $3, value = $4, fence = $5, expires_at = $6 \
                 WHERE key = $1 AND fence = $7",
            ),
        };
        let mut query = query
            .bind(record.key.as_str())
            .bind(record.owner.as_str())
            .bind(lock_kind_name(record.kind))
            .bind(record.value.as_str())
            .bind(int(record.fence))
            .bind(int(record.expires_at.0));
        if let Some(old) = &held {
            query = query.bind(int(old.fence));
        }
        let written = query.execute(&mut *conn).await?.rows_affected();
        if written != 1 {
            return Err(Fail::Store(StoreError::Unavailable(format!(
                "lock {} changed while it was being acquired",
                record.key
            ))));
        }
        if acquired.new_token {
            self.last_fence = record.fence;
        }
        let lease = Lease {
            key: record.key.clone(),
            owner: record.owner.clone(),
            fence: record.fence,
            expires_at: record.expires_at,
        };
        for (kind, data) in acquired.events {
            self.append_value(request.now, kind, data);
        }
        Ok(lease)
    }

    pub(super) async fn release(
        &mut self,
        conn: &mut Conn,
        key: String,
        owner: String,
    ) -> Result<(), Fail> {
        let Some(held) = read_lock(conn, &key)
            .await?
            .filter(|held| held.owner == owner)
        else {
            return Ok(());
        };
        sqlx::query("DELETE FROM locks WHERE key = $1 AND fence = $2")
            .bind(key.as_str())
            .bind(int(held.fence))
            .execute(&mut *conn)
            .await?;
        if let Some((kind, data)) = rows::lock_gone(&held, EventKind::PresenceRemoved)? {
            // A release carries no time of its own; the event gets the wall clock's.
            self.append_value(rows::wall_clock(), kind, data);
        }
        Ok(())
    }

    pub(super) async fn expire(
        &mut self,
        conn: &mut Conn,
        now: Timestamp,
    ) -> Result<Vec<LockRecord>, Fail> {
        // Read and decode first, so a corrupt row fails the request before anything is
        // deleted.
        let rows: Vec<LockRow> = sqlx::query_as(
            "SELECT key, owner, kind, value, fence, expires_at FROM locks \
             WHERE expires_at <= $1 ORDER BY key",
        )
        .bind(int(now.0))
        .fetch_all(&mut *conn)
        .await?;
        let expired = rows
            .into_iter()
            .map(lock_record)
            .collect::<Result<Vec<_>>>()?;
        if expired.is_empty() {
            return Ok(expired);
        }
        let mut events = Vec::new();
        for record in &expired {
            events.extend(rows::lock_gone(record, EventKind::PresenceExpired)?);
        }
        sqlx::query("DELETE FROM locks WHERE expires_at <= $1")
            .bind(int(now.0))
            .execute(&mut *conn)
            .await?;
        for (kind, data) in events {
            self.append_value(now, kind, data);
        }
        Ok(expired)
    }

    pub(super) async fn prune(&mut self, conn: &mut Conn, keep: u64) -> Result<u64, Fail> {
        // Events appended earlier in this transaction count as committed before the
        // prune, as they would be with one transaction per request.
        self.flush(conn).await?;
        let deleted = sqlx::query(
            "DELETE FROM events WHERE seq <= \
             (SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET $1)",
        )
        .bind(int(keep))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}

async fn read_lock(conn: &mut Conn, key: &str) -> Result<Option<LockRecord>, Fail> {
    let row: Option<LockRow> = sqlx::query_as(
        "SELECT key, owner, kind, value, fence, expires_at FROM locks WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(lock_record).transpose()?)
}
