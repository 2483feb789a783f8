//! The store on SQLite or PostgreSQL, through sqlx, with a group-commit writer.
//!
//! Reads go to a connection pool. Every write (`commit`, `acquire`, `release`,
//! `expire_locks`, `prune_events`) is a request to one writer, a thread that owns the
//! only write connection: it takes every request queued while the previous transaction
//! ran, applies them all in one database transaction, appends their events, commits
//! once and answers each. A request that fails its own condition (a stale generation, a
//! row that exists, a lost fence) writes nothing and does not disturb the others in its
//! group; a database error fails the whole group, which is rolled back. Commits are
//! prepared (rows stamped and encoded, events built) by their callers before they are
//! queued, so the writer's serial path only binds, executes and commits.
//!
//! The SQL code is written once, in `shared/`, and compiled once per driver:
//! `sqlite.rs` and `postgres.rs` each set `Db` to their `sqlx::Database` and include
//! it. The per-driver code is how to connect, how to open a write transaction and how
//! to spell a generated statement's parameters. Generic code over `sqlx::Database`
//! would need the same half-dozen higher-ranked bounds (executors, `Encode`/`Decode`
//! for each column type) on every function, and its futures do not reliably prove
//! `Send`.

mod postgres;
mod prepare;
mod sqlite;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use model::{Domain, Instance, InstanceState, Lrp, Name, Presence, Task, TaskState, Timestamp};
use tokio::sync::{mpsc, oneshot};

use prepare::PreparedCommit;

use crate::{
    Commit, Committed, Event, InstanceFilter, Lease, LockKind, LockRecord, LockRequest, LrpFilter,
    Result, Store, StoreError, TaskFilter,
};

/// Most requests one transaction takes. Large enough that the cost of a commit (an
/// fsync) is spread thin; small enough that one transaction stays short.
const MAX_GROUP: usize = 1024;

/// How many write requests may wait for the writer before senders wait too.
const QUEUE: usize = 16 * 1024;

/// The store on a SQL database. Clones share the writer and the read pool.
#[derive(Debug, Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    reads: Reads,
    writes: mpsc::Sender<Request>,
    writer: Mutex<Option<WriterHandle>>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
enum Reads {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// What the writer has done so far: how well writes are grouped and where time goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write requests answered (each commit, acquire, release, expiry or prune).
    pub requests: u64,
    /// Database transactions they took, committed or rolled back.
    pub transactions: u64,
    /// Time spent applying requests inside transactions (statements, encoding).
    pub apply: Duration,
    /// Time spent committing transactions (for a durable database, mostly the fsync).
    pub commit: Duration,
}

#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    transactions: AtomicU64,
    apply_nanos: AtomicU64,
    commit_nanos: AtomicU64,
}

impl Stats {
    fn record(&self, requests: usize, apply: Duration, commit: Duration) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.apply_nanos.fetch_add(nanos(apply), Ordering::Relaxed);
        self.commit_nanos
            .fetch_add(nanos(commit), Ordering::Relaxed);
    }
}

/// The running writer, to wait for when closing.
#[derive(Debug)]
struct WriterHandle {
    /// Completes (or is dropped) when the writer's thread ends.
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    async fn join(self) {
        // Either way, the writer has stopped.
        let _ = self.done.await;
    }
}

/// One write for the writer, with where to send its answer.
#[derive(Debug)]
enum Request {
    Commit(PreparedCommit, oneshot::Sender<Result<Committed>>),
    Acquire(LockRequest, oneshot::Sender<Result<Lease>>),
    Release(String, String, oneshot::Sender<Result<()>>),
    Expire(Timestamp, oneshot::Sender<Result<Vec<LockRecord>>>),
    Prune(u64, oneshot::Sender<Result<u64>>),
    /// Finish what is queued and stop.
    Shutdown,
}

impl SqlStore {
    /// Opens the database at `url` and brings its schema up to date:
    /// `sqlite:PATH` (the file is created if missing) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let (reads, writer) = if url.starts_with("sqlite:") {
            let (pool, writer) = sqlite::open(url, rx, stats.clone()).await?;
            (Reads::Sqlite(pool), writer)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (pool, writer) = postgres::open(url, rx, stats.clone()).await?;
            (Reads::Postgres(pool), writer)
        } else {
            return Err(StoreError::Unavailable(format!(
                "unsupported database URL {url:?}: use sqlite:PATH or postgres://..."
            )));
        };
        Ok(SqlStore {
            inner: Arc::new(Inner {
                reads,
                writes: tx,
                writer: Mutex::new(Some(writer)),
                stats,
            }),
        })
    }

    /// Finishes the writes already queued, stops the writer and closes the connections.
    /// Writes after this fail with `Unavailable`.
    pub async fn close(&self) {
        let _ = self.inner.writes.send(Request::Shutdown).await;
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.join().await;
        }
        match &self.inner.reads {
            Reads::Sqlite(pool) => pool.close().await,
            Reads::Postgres(pool) => pool.close().await,
        }
    }

    pub fn stats(&self) -> WriterStats {
        let s = &self.inner.stats;
        WriterStats {
            requests: s.requests.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            apply: Duration::from_nanos(s.apply_nanos.load(Ordering::Relaxed)),
            commit: Duration::from_nanos(s.commit_nanos.load(Ordering::Relaxed)),
        }
    }

    /// Sends a request to the writer and waits for its answer.
    async fn write<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T>>) -> Request,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .writes
            .send(request(tx))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}

/// Runs one read on whichever database this store is on.
macro_rules! read {
    ($self:ident, $f:ident($($arg:expr),*)) => {
        match &$self.inner.reads {
            Reads::Sqlite(pool) => sqlite::shared::$f(pool, $($arg),*).await,
            Reads::Postgres(pool) => postgres::shared::$f(pool, $($arg),*).await,
        }
    };
}

#[async_trait]
impl Store for SqlStore {
    async fn get_lrp(&self, name: &Name) -> Result<Option<Lrp>> {
        read!(self, get_lrp(name))
    }

    async fn list_lrps(&self, filter: &LrpFilter) -> Result<Vec<Lrp>> {
        read!(self, list_lrps(filter))
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        read!(self, list_instances(filter))
    }

    async fn get_instances(&self, lrp: &Name, index: u32) -> Result<Vec<Instance>> {
        read!(self, get_instances(lrp, index))
    }

    async fn get_task(&self, id: &Name) -> Result<Option<Task>> {
        read!(self, get_task(id))
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        read!(self, list_tasks(filter))
    }

    async fn list_domains(&self) -> Result<Vec<Domain>> {
        read!(self, list_domains())
    }

    async fn commit(&self, commit: Commit) -> Result<Committed> {
        let commit = PreparedCommit::new(commit)?;
        self.write(|reply| Request::Commit(commit, reply)).await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        read!(self, events_after(after, limit))
    }

    async fn event_bounds(&self) -> Result<Option<(u64, u64)>> {
        read!(self, event_bounds())
    }

    async fn prune_events(&self, keep: u64) -> Result<u64> {
        self.write(|reply| Request::Prune(keep, reply)).await
    }

    async fn acquire(&self, request: LockRequest) -> Result<Lease> {
        self.write(|reply| Request::Acquire(request, reply)).await
    }

    async fn release(&self, key: &str, owner: &str) -> Result<()> {
        let (key, owner) = (key.to_owned(), owner.to_owned());
        self.write(|reply| Request::Release(key, owner, reply))
            .await
    }

    async fn list_locks(&self, prefix: &str, now: Timestamp) -> Result<Vec<LockRecord>> {
        read!(self, list_locks(prefix, now))
    }

    async fn expire_locks(&self, now: Timestamp) -> Result<Vec<LockRecord>> {
        self.write(|reply| Request::Expire(now, reply)).await
    }
}

// --- Column encodings shared by both drivers ---------------------------------------------

/// Numbers are stored as SQL BIGINT. Generations, sequence numbers and tokens never
/// come near 2^63; a timestamp can (a TTL saturating to `u64::MAX`), and clamping keeps
/// its order against every real time.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(kind: &'static str, key: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        kind,
        key: key.to_owned(),
        reason: format!("negative number {v}"),
    })
}

fn presence_number(p: Presence) -> i64 {
    match p {
        Presence::Ordinary => 0,
        Presence::Evacuating => 1,
        Presence::Suspect => 2,
    }
}

fn instance_state_name(s: InstanceState) -> &'static str {
    match s {
        InstanceState::Unclaimed => "UNCLAIMED",
        InstanceState::Claimed => "CLAIMED",
        InstanceState::Running => "RUNNING",
        InstanceState::Crashed => "CRASHED",
    }
}

fn task_state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Pending => "PENDING",
        TaskState::Running => "RUNNING",
        TaskState::Completed => "COMPLETED",
        TaskState::Resolving => "RESOLVING",
    }
}

fn lock_kind_name(k: LockKind) -> &'static str {
    match k {
        LockKind::Lock => "lock",
        LockKind::Presence => "presence",
    }
}

fn lock_kind(key: &str, name: &str) -> Result<LockKind> {
    match name {
        "lock" => Ok(LockKind::Lock),
        "presence" => Ok(LockKind::Presence),
        other => Err(StoreError::Corrupt {
            kind: crate::rows::LOCK,
            key: key.to_owned(),
            reason: format!("unknown lock kind {other:?}"),
        }),
    }
}

/// The smallest string greater than every string starting with `prefix`, if there is
/// one: the exclusive upper bound of a prefix scan.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_scan_bounds() {
        assert_eq!(prefix_end("cells/"), Some("cells0".into()));
        assert_eq!(prefix_end("a"), Some("b".into()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}"), Some("b".into()));
        // Skips the surrogate gap.
        assert_eq!(prefix_end("\u{D7FF}"), Some("\u{E000}".into()));
    }

    #[test]
    fn numbers_clamp_and_reject_negatives() {
        assert_eq!(int(5), 5);
        assert_eq!(int(u64::MAX), i64::MAX);
        assert_eq!(uint("task", "t", 7), Ok(7));
        assert!(uint("task", "t", -1).is_err());
    }
}
