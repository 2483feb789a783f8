//! The corrective actions a convergence pass returns, and why each was chosen.

use std::fmt;

use model::{Generation, Name, Presence};
use serde::{Deserialize, Serialize};

/// One corrective step for the converger shell to apply.
///
/// Every action that changes an existing row names the row's key and the generation the
/// pass saw, so the shell applies it as a compare-and-set: if the row moved on since the
/// snapshot (a cell claimed it, a user scaled the LRP), the write fails and the next pass
/// decides again from fresh state. Instance rows are keyed by (lrp, index, presence),
/// tasks by id, domains by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Delete a domain whose TTL ran out.
    PruneDomain { name: Name },
    /// Write a new UNCLAIMED ORDINARY row for an index that has none, and auction it.
    CreateInstance { lrp: Name, index: u32, domain: Name },
    /// Ask for a placement of an ORDINARY row again. For a CRASHED row the shell first
    /// moves it to UNCLAIMED (keeping its crash count).
    Auction {
        lrp: Name,
        index: u32,
        generation: Generation,
        reason: AuctionReason,
    },
    /// Stop an instance that is no longer wanted (its cell stops the container) and
    /// delete its row. Only ever emitted for ORDINARY rows, and only in fresh domains.
    RetireInstance {
        lrp: Name,
        index: u32,
        presence: Presence,
        generation: Generation,
        reason: RetireReason,
    },
    /// The ORDINARY row is RUNNING on a cell that vanished: turn it into the SUSPECT row
    /// (it may still serve traffic behind a partition), write a fresh UNCLAIMED ORDINARY
    /// replacement, and auction the replacement.
    MarkSuspect {
        lrp: Name,
        index: u32,
        generation: Generation,
    },
    /// The ORDINARY row is claimed by, or running on, a cell that vanished and a SUSPECT
    /// row already holds the index (or nothing runs yet): move it back to UNCLAIMED and
    /// auction it.
    Unclaim {
        lrp: Name,
        index: u32,
        generation: Generation,
    },
    /// The SUSPECT row's cell is back and its replacement does not run: delete the
    /// replacement row (if any) and make the suspect ORDINARY again, in one transaction.
    PromoteSuspect {
        lrp: Name,
        index: u32,
        suspect_generation: Generation,
        /// The ORDINARY replacement row to delete: its presence and generation.
        replacement: Option<(Presence, Generation)>,
    },
    /// Delete a non-ORDINARY row without asking its cell anything.
    RemoveInstance {
        lrp: Name,
        index: u32,
        presence: Presence,
        generation: Generation,
        reason: RemoveReason,
    },
    /// Complete a task with `failed = true` and the reason's words as failure reason.
    FailTask {
        id: Name,
        generation: Generation,
        reason: TaskFailure,
    },
    /// Ask for a placement of a PENDING task again: the last request may have been lost.
    AuctionTask { id: Name, generation: Generation },
    /// A resolver took a task and went quiet: move it from RESOLVING back to COMPLETED so
    /// its callback is sent again and it is deleted in time.
    KickTask { id: Name, generation: Generation },
    /// Delete a COMPLETED task that nobody resolved in time.
    DeleteTask { id: Name, generation: Generation },
    /// Send the completion callback of a COMPLETED task again.
    ResendCallback { id: Name, generation: Generation },
}

/// Why an ORDINARY instance goes back to the auction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuctionReason {
    /// UNCLAIMED for longer than `stale_unclaimed_ms`: the placement was lost or failed.
    StaleUnclaimed,
    /// CRASHED, and the crash policy's wait for its crash count has passed.
    CrashBackoffOver,
}

/// Why an ORDINARY instance is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireReason {
    /// Its index is at or above the LRP's `instances` (the LRP was scaled down).
    Extra,
    /// Its LRP does not exist (it was deleted).
    Orphaned,
}

/// Why a non-ORDINARY row is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveReason {
    /// An EVACUATING row whose cell is gone: there is nothing left to hand over.
    EvacuatingCellGone,
    /// A SUSPECT row whose ORDINARY replacement runs on a live cell.
    SuspectReplaced,
    /// A SUSPECT row at an index at or above the LRP's `instances`.
    Extra,
    /// A SUSPECT row whose LRP does not exist.
    Orphaned,
}

/// Why convergence fails a task. The words are Diego's, so people who know it can
/// search for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskFailure {
    /// PENDING for longer than `expire_pending_task_ms`.
    NotStartedInTime,
    /// RUNNING on a cell that is no longer live: the task is not retried, since it may
    /// have run already (at most once).
    CellDisappeared,
}

impl TaskFailure {
    /// The failure reason written on the task.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskFailure::NotStartedInTime => "not started within time limit",
            TaskFailure::CellDisappeared => "cell disappeared before completion",
        }
    }
}

impl Action {
    /// The key the output is sorted by: domains, then instance rows by (lrp, index,
    /// presence), then tasks by id. At most one action is emitted per row, so this orders
    /// the output completely and independently of the input's order.
    pub(crate) fn sort_key(&self) -> (u8, &str, u32, u8) {
        let rank = |presence: Presence| match presence {
            Presence::Ordinary => 0,
            Presence::Evacuating => 1,
            Presence::Suspect => 2,
        };
        match self {
            Action::PruneDomain { name } => (0, name.as_str(), 0, 0),
            Action::CreateInstance { lrp, index, .. }
            | Action::Auction { lrp, index, .. }
            | Action::MarkSuspect { lrp, index, .. }
            | Action::Unclaim { lrp, index, .. } => (1, lrp.as_str(), *index, 0),
            Action::RetireInstance {
                lrp,
                index,
                presence,
                ..
            }
            | Action::RemoveInstance {
                lrp,
                index,
                presence,
                ..
            } => (1, lrp.as_str(), *index, rank(*presence)),
            Action::PromoteSuspect { lrp, index, .. } => {
                (1, lrp.as_str(), *index, rank(Presence::Suspect))
            }
            Action::FailTask { id, .. }
            | Action::AuctionTask { id, .. }
            | Action::KickTask { id, .. }
            | Action::DeleteTask { id, .. }
            | Action::ResendCallback { id, .. } => (2, id.as_str(), 0, 0),
        }
    }
}

/// One line per action, for logs and for the table tests: the row as `lrp/index`, its
/// generation after `@`, and the reason.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::PruneDomain { name } => write!(f, "prune-domain {name}"),
            Action::CreateInstance { lrp, index, domain } => {
                write!(f, "create {lrp}/{index} in {domain}")
            }
            Action::Auction {
                lrp,
                index,
                generation,
                reason,
            } => write!(f, "auction {lrp}/{index}@{generation} {reason}"),
            Action::RetireInstance {
                lrp,
                index,
                presence,
                generation,
                reason,
            } => write!(f, "retire {lrp}/{index} {presence}@{generation} {reason}"),
            Action::MarkSuspect {
                lrp,
                index,
                generation,
            } => write!(f, "mark-suspect {lrp}/{index}@{generation}"),
            Action::Unclaim {
                lrp,
                index,
                generation,
            } => write!(f, "unclaim {lrp}/{index}@{generation}"),
            Action::PromoteSuspect {
                lrp,
                index,
                suspect_generation,
                replacement,
            } => {
                write!(f, "promote-suspect {lrp}/{index}@{suspect_generation}")?;
                match replacement {
                    Some((presence, generation)) => {
                        write!(f, " replacing {presence}@{generation}")
                    }
                    None => Ok(()),
                }
            }
            Action::RemoveInstance {
                lrp,
                index,
                presence,
                generation,
                reason,
            } => write!(f, "remove {lrp}/{index} {presence}@{generation} {reason}"),
            Action::FailTask {
                id,
                generation,
                reason,
            } => write!(f, "fail-task {id}@{generation}: {}", reason.as_str()),
            Action::AuctionTask { id, generation } => write!(f, "auction-task {id}@{generation}"),
            Action::KickTask { id, generation } => write!(f, "kick-task {id}@{generation}"),
            Action::DeleteTask { id, generation } => write!(f, "delete-task {id}@{generation}"),
            Action::ResendCallback { id, generation } => {
                write!(f, "resend-callback {id}@{generation}")
            }
        }
    }
}

impl fmt::Display for AuctionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuctionReason::StaleUnclaimed => "stale-unclaimed",
            AuctionReason::CrashBackoffOver => "crash-backoff-over",
        })
    }
}

impl fmt::Display for RetireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetireReason::Extra => "extra",
            RetireReason::Orphaned => "orphaned",
        })
    }
}

impl fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RemoveReason::EvacuatingCellGone => "evacuating-cell-gone",
            RemoveReason::SuspectReplaced => "suspect-replaced",
            RemoveReason::Extra => "extra",
            RemoveReason::Orphaned => "orphaned",
        })
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_serialize_as_tagged_objects() {
        let name = |s| Name::parse("name", s).unwrap();
        let cases = [
            (
                Action::Auction {
                    lrp: name("web"),
                    index: 1,
                    generation: 3,
                    reason: AuctionReason::StaleUnclaimed,
                },
                r#"{"action":"auction","lrp":"web","index":1,"generation":3,"reason":"stale_unclaimed"}"#,
            ),
            (
                Action::PromoteSuspect {
                    lrp: name("web"),
                    index: 0,
                    suspect_generation: 2,
                    replacement: Some((Presence::Ordinary, 5)),
                },
                r#"{"action":"promote_suspect","lrp":"web","index":0,"suspect_generation":2,"replacement":["ORDINARY",5]}"#,
            ),
            (
                Action::FailTask {
                    id: name("t1"),
                    generation: 4,
                    reason: TaskFailure::CellDisappeared,
                },
                r#"{"action":"fail_task","id":"t1","generation":4,"reason":"cell_disappeared"}"#,
            ),
        ];
        for (action, json) in cases {
            assert_eq!(serde_json::to_string(&action).unwrap(), json);
            assert_eq!(serde_json::from_str::<Action>(json).unwrap(), action);
        }
    }
}
