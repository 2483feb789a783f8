//! The group-commit writer: one thread owns the write connection, takes every request
//! queued while its previous transaction ran, applies them all in one transaction and
//! answers each when it commits. What each request does inside the transaction is in
//! `batch`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

use super::batch::Batch;
use super::{Conn, Fail, Options, Script, migrate};
use crate::sql::prepare::PreparedCommit;
use crate::sql::{MAX_GROUP, Request, Stats, WriterHandle};
use crate::{Committed, Lease, LockRecord, Result, StoreError};

/// Why a whole group failed, and whether the connection is still usable.
pub(super) struct GroupFailure {
    pub error: StoreError,
    pub reconnect: bool,
}

impl From<sqlx::Error> for GroupFailure {
    fn from(e: sqlx::Error) -> GroupFailure {
        GroupFailure {
            // A database error (a constraint, a lock timeout) leaves the connection
            // usable; anything else (IO, protocol, a closed connection) may not.
            reconnect: !matches!(e, sqlx::Error::Database(_)),
            error: StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A request's answer, held until its transaction commits.
pub(super) enum Done {
    Commit(oneshot::Sender<Result<Committed>>, Result<Committed>),
    Lease(oneshot::Sender<Result<Lease>>, Result<Lease>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Locks(
        oneshot::Sender<Result<Vec<LockRecord>>>,
        Result<Vec<LockRecord>>,
    ),
    Count(oneshot::Sender<Result<u64>>, Result<u64>),
}

impl Done {
    /// Answers the request: with its own result if the group committed, otherwise with
    /// the group's failure.
    fn send(self, failure: Option<&StoreError>) {
        fn answer<T>(
            reply: oneshot::Sender<Result<T>>,
            result: Result<T>,
            failure: Option<&StoreError>,
        ) {
            // A caller that stopped waiting has nobody to tell.
            let _ = reply.send(match failure {
                Some(e) => Err(e.clone()),
                None => result,
            });
        }
        match self {
            Done::Commit(reply, r) => answer(reply, r, failure),
            Done::Lease(reply, r) => answer(reply, r, failure),
            Done::Unit(reply, r) => answer(reply, r, failure),
            Done::Locks(reply, r) => answer(reply, r, failure),
            Done::Count(reply, r) => answer(reply, r, failure),
        }
    }
}

/// Owns the write connection and applies queued requests in groups.
pub(in crate::sql) struct Writer {
    conn: Option<Conn>,
    options: Options,
    requests: mpsc::Receiver<Request>,
    stats: Arc<Stats>,
}

impl Writer {
    /// Starts the writer on a thread of its own: connects, brings the schema up to
    /// date, and returns once it is ready for requests.
    ///
    /// Why a thread: the writer is on the path of every write. On the shared runtime it
    /// would wait, after each statement, behind the very tasks it has just answered;
    /// on its own thread (with a single-threaded runtime for the connection's IO) it
    /// runs as soon as the database replies.
    pub(in crate::sql) async fn start(
        options: Options,
        scripts: &'static [Script],
        requests: mpsc::Receiver<Request>,
        stats: Arc<Stats>,
    ) -> Result<WriterHandle> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("corral-store-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let error = format!("start the store writer's runtime: {e}");
                        let _ = ready_tx.send(Err(StoreError::Unavailable(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let conn = match options.connect().await {
                        Ok(conn) => conn,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let mut conn = conn;
                    if let Err(e) = migrate(&mut conn, scripts).await {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let _ = ready_tx.send(Ok(()));
                    let writer = Writer {
                        conn: Some(conn),
                        options,
                        requests,
                        stats,
                    };
                    writer.run().await;
                });
                let _ = done_tx.send(());
            });
        if let Err(e) = thread {
            return Err(StoreError::Unavailable(format!(
                "start the store writer thread: {e}"
            )));
        }
        ready_rx.await.map_err(|_| {
            StoreError::Unavailable("the store writer stopped while starting".into())
        })??;
        Ok(WriterHandle { done: done_rx })
    }

    /// Until shut down or every handle is gone: wait for a request, take everything
    /// else already queued, and apply it all in one transaction. Requests that arrive
    /// while a transaction runs form the next group, so groups grow with load.
    async fn run(mut self) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut stop = false;
        while !stop {
            let Some(first) = self.requests.recv().await else {
                break;
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.requests.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            let mut work = Vec::with_capacity(group.len());
            for request in group.drain(..) {
                match request {
                    Request::Shutdown => stop = true,
                    other => work.push(other),
                }
            }
            if !work.is_empty() {
                self.run_group(work).await;
            }
        }
        // Requests still queued are dropped with their reply channels: their callers
        // see the store as closed.
        self.requests.close();
        if let Some(conn) = self.conn.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the store's write connection");
        }
    }

    async fn run_group(&mut self, work: Vec<Request>) {
        let requests = work.len();
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => match self.options.connect().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!(error = %e, "the store cannot reconnect to its database");
                    fail_all(work, &StoreError::Unavailable(e.to_string()));
                    return;
                }
            },
        };
        let conn = self.conn.insert(conn);
        let (done, outcome, apply, commit) = transact(conn, work).await;
        self.stats.record(requests, apply, commit);
        match outcome {
            Ok(()) => {
                for d in done {
                    d.send(None);
                }
            }
            Err(failure) => {
                tracing::error!(error = %failure.error, requests, "a store write transaction failed");
                if failure.reconnect {
                    self.conn = None;
                }
                for d in done {
                    d.send(Some(&failure.error));
                }
            }
        }
    }
}

fn fail_all(work: Vec<Request>, error: &StoreError) {
    fn failed<T>(error: &StoreError) -> Result<T> {
        Err(error.clone())
    }
    for request in work {
        let done = match request {
            Request::Commit(_, reply) => Done::Commit(reply, failed(error)),
            Request::Acquire(_, reply) => Done::Lease(reply, failed(error)),
            Request::Release(_, _, reply) => Done::Unit(reply, failed(error)),
            Request::Expire(_, reply) => Done::Locks(reply, failed(error)),
            Request::Prune(_, reply) => Done::Count(reply, failed(error)),
            Request::Shutdown => continue,
        };
        done.send(None);
    }
}

/// A single-mutation commit waiting to be applied with its neighbours.
pub(super) type Single = (PreparedCommit, oneshot::Sender<Result<Committed>>);

/// Applies a group of requests in one transaction. Returns each request's answer, the
/// group's outcome, and the time spent applying and committing.
///
/// Every round trip to the database costs tens of microseconds whatever it carries,
/// so the transaction is opened together with reading the counters, and the counters
/// are stored together with the COMMIT: a group of single-row commits takes four round
/// trips (begin, puts, events, commit) however large it is.
async fn transact(
    conn: &mut Conn,
    work: Vec<Request>,
) -> (Vec<Done>, Result<(), GroupFailure>, Duration, Duration) {
    let started = Instant::now();
    let mut done = Vec::with_capacity(work.len());
    let mut batch = match Batch::begin(conn).await {
        Ok(batch) => batch,
        Err(failure) => {
            fail_all(work, &failure.error);
            // The transaction may or may not have opened.
            let failure = rollback(conn, failure).await;
            return (done, Err(failure), started.elapsed(), Duration::ZERO);
        }
    };
    let mut failed: Option<GroupFailure> = None;
    let mut singles: Vec<Single> = Vec::new();
    for request in work {
        let request = match request {
            Request::Commit(commit, reply) if commit.changes.len() == 1 => {
                singles.push((commit, reply));
                continue;
            }
            other => other,
        };
        // Anything else may depend on the commits before it (a fence on a lock, a
        // prune of their events), so those are applied first.
        if !singles.is_empty() {
            let run = std::mem::take(&mut singles);
            run_singles(&mut failed, &mut batch, conn, run, &mut done).await;
        }
        let d = match request {
            Request::Commit(c, reply) => Done::Commit(
                reply,
                step(&mut failed, &mut batch, conn, |b, tx| b.commit(tx, c)).await,
            ),
            Request::Acquire(r, reply) => Done::Lease(
                reply,
                step(&mut failed, &mut batch, conn, |b, tx| b.acquire(tx, r)).await,
            ),
            Request::Release(key, owner, reply) => Done::Unit(
                reply,
                step(&mut failed, &mut batch, conn, |b, tx| {
                    b.release(tx, key, owner)
                })
                .await,
            ),
            Request::Expire(now, reply) => Done::Locks(
                reply,
                step(&mut failed, &mut batch, conn, |b, tx| b.expire(tx, now)).await,
            ),
            Request::Prune(keep, reply) => Done::Count(
                reply,
                step(&mut failed, &mut batch, conn, |b, tx| b.prune(tx, keep)).await,
            ),
            Request::Shutdown => continue,
        };
        done.push(d);
    }
    if !singles.is_empty() {
        run_singles(&mut failed, &mut batch, conn, singles, &mut done).await;
    }
    let failed = match failed {
        None => batch.flush(conn).await.err().map(GroupFailure::from),
        failed => failed,
    };
    let apply = started.elapsed();
    if let Some(failure) = failed {
        let failure = rollback(conn, failure).await;
        return (done, Err(failure), apply, Duration::ZERO);
    }
    let committing = Instant::now();
    let outcome = match batch.commit_statement() {
        Ok(sql) => match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(rollback(conn, e.into()).await),
        },
        Err(failure) => Err(rollback(conn, failure).await),
    };
    (done, outcome, apply, committing.elapsed())
}

/// Rolls the open transaction back after `failure`; if even that fails, the connection
/// is no longer trusted.
async fn rollback(conn: &mut Conn, mut failure: GroupFailure) -> GroupFailure {
    if sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.is_err() {
        failure.reconnect = true;
    }
    failure
}

/// Runs one request of a group, unless the group has already failed; a database error
/// fails the group, a request's own failure is its answer.
async fn step<'a, T, F, Fut>(
    failed: &mut Option<GroupFailure>,
    batch: &'a mut Batch,
    conn: &'a mut Conn,
    work: F,
) -> Result<T>
where
    F: FnOnce(&'a mut Batch, &'a mut Conn) -> Fut,
    Fut: Future<Output = Result<T, Fail>> + 'a,
{
    if let Some(failure) = failed {
        // Its answer is the group's failure, sent in its place.
        return Err(failure.error.clone());
    }
    match work(batch, conn).await {
        Ok(value) => Ok(value),
        Err(Fail::Store(e)) => Err(e),
        Err(Fail::Db(e)) => {
            let failure = GroupFailure::from(e);
            let error = failure.error.clone();
            *failed = Some(failure);
            Err(error)
        }
    }
}

/// Applies a run of single-mutation commits, answering each into `done`.
async fn run_singles(
    failed: &mut Option<GroupFailure>,
    batch: &mut Batch,
    conn: &mut Conn,
    run: Vec<Single>,
    done: &mut Vec<Done>,
) {
    if let Some(failure) = failed {
        for (_, reply) in run {
            done.push(Done::Commit(reply, Err(failure.error.clone())));
        }
        return;
    }
    match batch.singles(conn, run).await {
        Ok(answers) => done.extend(answers),
        Err((run, e)) => {
            let failure = GroupFailure::from(e);
            for (_, reply) in run {
                done.push(Done::Commit(reply, Err(failure.error.clone())));
            }
            *failed = Some(failure);
        }
    }
}
