//! Corral's store: desired and actual state, the event log, and locks and presences,
//! behind one trait with three implementations.
//!
//! - [`sql::SqlStore`] on SQLite (embedded, WAL) or PostgreSQL, through sqlx, with a
//!   group-commit writer that batches concurrent writes into one transaction;
//! - [`memory::MemoryStore`], an in-memory fake with the same semantics, for tests and
//!   simulation.
//!
//! Every update is a compare-and-set on the row's generation. Every change appends an
//! event to the event log in the same transaction, so the log is exactly the history of
//! the data and a reader can resume from any cursor. Locks and presences (Diego's
//! Locket) live in the same database, with TTLs and fencing tokens.
//!
//! The store holds no business logic: it does reads, writes and compare-and-set. What
//! to write is the server's decision. Only this crate contains SQL.

#![forbid(unsafe_code)]

mod error;
mod event;
mod lock;
pub mod memory;
mod mutation;
mod rows;
pub mod sql;

use async_trait::async_trait;
use model::{Domain, Instance, InstanceState, Lrp, Name, Task, TaskState, Timestamp};

pub use error::StoreError;
pub use event::{Event, EventKind, Topic};
pub use lock::{Fence, Lease, LockKind, LockRecord, LockRequest};
pub use mutation::{Commit, Committed, Expect, Mutation};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which LRPs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LrpFilter {
    pub domain: Option<Name>,
}

/// Which instances to list. All set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    pub lrp: Option<Name>,
    pub cell: Option<Name>,
    pub state: Option<InstanceState>,
}

/// Which tasks to list. All set fields must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: Option<Name>,
    pub state: Option<TaskState>,
    pub cell: Option<Name>,
}

/// The store. Implementations are cheap to clone handles (`Arc` inside) and safe to use
/// from many tasks at once.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    // --- Reads -----------------------------------------------------------------------

    async fn get_lrp(&self, name: &Name) -> Result<Option<Lrp>>;
    /// Ordered by name.
    async fn list_lrps(&self, filter: &LrpFilter) -> Result<Vec<Lrp>>;
    /// Ordered by (lrp, index, presence).
    async fn list_instances(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
    /// Every row (ordinary, evacuating, suspect) of one instance index, ordered by
    /// presence: the point lookup that cell reports need.
    async fn get_instances(&self, lrp: &Name, index: u32) -> Result<Vec<Instance>>;
    async fn get_task(&self, id: &Name) -> Result<Option<Task>>;
    /// Ordered by creation time, then id.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// All domains, fresh or not, ordered by name.
    async fn list_domains(&self) -> Result<Vec<Domain>>;

    // --- Writes ----------------------------------------------------------------------

    /// Applies all mutations of `commit` atomically, or none of them: the first failed
    /// condition (a stale generation, a row that exists or does not, a stale fence) is
    /// the error and nothing is written. Each mutation appends its event to the log in
    /// the same transaction. Concurrent commits are grouped into one database
    /// transaction by the writer; a failed commit does not affect the others in its
    /// group.
    async fn commit(&self, commit: Commit) -> Result<Committed>;

    // --- Event log ---------------------------------------------------------------------

    /// Up to `limit` events with a sequence number greater than `after`, in order.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>>;
    /// The sequence numbers of the oldest and newest events kept, or `None` when the
    /// log is empty. A reader whose cursor is older than the oldest has missed events
    /// and must resynchronise from a full listing.
    async fn event_bounds(&self) -> Result<Option<(u64, u64)>>;
    /// Deletes all but the newest `keep` events; returns how many were deleted.
    async fn prune_events(&self, keep: u64) -> Result<u64>;

    // --- Locks and presences ---------------------------------------------------------------

    /// Takes or renews a lock or presence. The same owner renewing keeps its fencing
    /// token and extends the TTL (and replaces the value); another owner gets
    /// [`StoreError::LockHeld`] until the holder's TTL has passed at `request.now`,
    /// after which it takes the lock with a new, larger fencing token. Fencing tokens
    /// grow across all keys and never repeat, even after a lock is released.
    async fn acquire(&self, request: LockRequest) -> Result<Lease>;
    /// Releases a lock or presence if `owner` holds it; a no-op otherwise.
    async fn release(&self, key: &str, owner: &str) -> Result<()>;
    /// Live (unexpired at `now`) locks and presences whose key starts with `prefix`,
    /// ordered by key.
    async fn list_locks(&self, prefix: &str, now: Timestamp) -> Result<Vec<LockRecord>>;
    /// Deletes every lock and presence whose TTL has passed at `now`, and returns them.
    /// Expired presences append a `presence_expired` event.
    async fn expire_locks(&self, now: Timestamp) -> Result<Vec<LockRecord>>;
}
