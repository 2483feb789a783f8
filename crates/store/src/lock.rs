//! Locks and presences with TTLs and fencing tokens (what Diego's Locket does).

use model::Timestamp;
use serde::{Deserialize, Serialize};

/// A lock has one holder that acts (the leader); a presence announces that its owner is
/// alive (a cell). They behave the same in the store; presences also emit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Lock,
    Presence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    pub key: String,
    pub owner: String,
    pub kind: LockKind,
    /// What the holder publishes with it (a cell's presence carries the cell).
    pub value: String,
    pub ttl_ms: u64,
    pub now: Timestamp,
}

/// A held lock: the fencing token proves, to any later write, that its holder still
/// holds the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    pub fence: u64,
    pub expires_at: Timestamp,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.clone(),
            token: self.fence,
        }
    }
}

/// Attached to a commit, makes it fail with `StoreError::Fenced` unless the lock `key`
/// is still held, unexpired, with this token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub key: String,
    pub token: u64,
}

/// A stored lock or presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    pub key: String,
    pub owner: String,
    pub kind: LockKind,
    pub value: String,
    pub fence: u64,
    pub expires_at: Timestamp,
}
