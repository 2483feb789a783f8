//! What can go wrong in the store, as variants a caller acts on.

use model::Generation;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A mutation expected a row that is not there.
    #[error("{kind} {key} not found")]
    NotFound { kind: &'static str, key: String },
    /// A create found the row already there.
    #[error("{kind} {key} already exists")]
    AlreadyExists { kind: &'static str, key: String },
    /// A compare-and-set named a generation the row has moved on from.
    #[error("{kind} {key} is at generation {actual}, not {expected}")]
    StaleGeneration {
        kind: &'static str,
        key: String,
        expected: Generation,
        actual: Generation,
    },
    /// Another owner holds the lock and its TTL has not passed.
    #[error("lock {key} is held by {owner}")]
    LockHeld { key: String, owner: String },
    /// A write carried a fencing token that is no longer the lock's current one: its
    /// writer lost the lock and must stop.
    #[error("lock {key} is no longer held with fencing token {token}")]
    Fenced { key: String, token: u64 },
    /// The database failed or could not be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be decoded.
    #[error("corrupt {kind} row {key}: {reason}")]
    Corrupt {
        kind: &'static str,
        key: String,
        reason: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }
}
