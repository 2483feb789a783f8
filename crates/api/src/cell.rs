//! The cell protocol: how cells announce themselves, receive work and report state.
//!
//! Cells are clients of the server's API. A cell (or a process simulating many cells)
//! sends heartbeats that keep its presence alive, receives work pushed by the scheduler
//! to `POST {cell address}/v1/work` (and fetches everything assigned to it with
//! `POST /v1/cells/assignments` to reconcile), and reports what happened with
//! `POST /v1/cells/reports`. Every message carries cell ids, so one process can speak
//! for many simulated cells in one request: work and reports travel in batches.
//!
//! The store is the source of truth: an instance is assigned to a cell when its row is
//! CLAIMED with that cell in its key, before any work is sent. A cell runs only what is
//! assigned to it and stops anything else it finds, so a resent or duplicated message
//! never runs an instance twice. A task runs only after the cell's `TaskStarted` report
//! succeeded: that report is the single PENDING -> RUNNING compare-and-set.
//!
//! A draining cell (Diego's evacuation) sets `evacuating` in its heartbeats, so nothing
//! new is placed on it; gives back what it has claimed but not started
//! (`InstanceEvacuatingClaimed`); and for each RUNNING instance asks for a replacement
//! (`InstanceEvacuating`, resent until the answer is `Stale`), keeping the container
//! until the replacement runs, so an index never has zero running copies.

use std::collections::BTreeMap;

use model::{Cell, Lrp, Name, PortMapping, Task, Timestamp};
use serde::{Deserialize, Serialize};

/// `POST /v1/cells/heartbeat`: renews the presence of every cell listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub cells: Vec<Cell>,
}

/// How long a presence lives without a heartbeat, and how often to send one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub ttl_ms: u64,
    pub interval_ms: u64,
}

/// Work for cells, pushed by the scheduler or fetched by a reconciling cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkBatch {
    pub items: Vec<WorkItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkItem {
    /// Run instance `index` of `lrp` as `instance_id`; report `InstanceRunning` once it
    /// has started (and passed its startup check).
    StartInstance {
        cell: Name,
        lrp: Box<Lrp>,
        index: u32,
        instance_id: String,
    },
    /// Keep this container if it runs here, but do not start it if it does not: the
    /// instance is SUSPECT (its cell vanished for a while) or EVACUATING (its cell
    /// drains), and a replacement may run elsewhere. Only in reconciliation answers.
    KeepInstance {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    /// Stop this instance's container (scale down, LRP removed, reassigned elsewhere).
    StopInstance {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    /// Run this task once `TaskStarted` is accepted.
    StartTask { cell: Name, task: Box<Task> },
    /// Stop this task's container: it was cancelled.
    CancelTask { cell: Name, id: Name },
}

/// `POST /v1/cells/assignments`: everything currently assigned to these cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentsRequest {
    pub cells: Vec<Name>,
}

/// `POST /v1/cells/reports`: what happened on cells, applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reports {
    pub reports: Vec<Report>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Report {
    InstanceRunning {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
        address: String,
        #[serde(default)]
        ports: Vec<PortMapping>,
        #[serde(default = "yes")]
        routable: bool,
    },
    InstanceCrashed {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
        reason: String,
    },
    /// The cell is pulling the instance's image (sent a few times a second while it
    /// does). Kept by the server in memory only, for `status`; always `Ok`.
    InstancePulling {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
        done_bytes: u64,
        total_bytes: u64,
    },
    /// The container is gone because it was told to stop, or never started.
    InstanceStopped {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    /// The cell is evacuating and asks for a replacement of this RUNNING instance (Diego's
    /// `EvacuateRunningActualLRP`); it resends this every few seconds until it is told
    /// to stop. The first time, the server turns the ordinary row into an EVACUATING
    /// copy (same key, address and ports: still routable) and queues a new ordinary row
    /// for placement elsewhere, in one commit; a resend changes nothing until the
    /// handoff ends.
    ///
    /// `Ok`: keep the container, ask again later. `Stale`: stop it now, because the
    /// replacement runs (the cell also gets `StopInstance`), or it crashed, or the index
    /// is no longer wanted, or no row names this container any more, or the server
    /// never saw it running (a CLAIMED row: it is placed elsewhere at once).
    InstanceEvacuating {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    /// The cell gives up an instance it will not run (Diego's
    /// `EvacuateClaimedActualLRP`): an evacuating cell sends this for each instance it
    /// has claimed but not reported running, and then drops the container. The instance
    /// goes back to UNCLAIMED at once, without counting as a crash, and is placed
    /// elsewhere (a non-ordinary copy is simply removed). `Ok` or `Stale`, the
    /// container goes.
    InstanceEvacuatingClaimed {
        cell: Name,
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    /// The cell is about to run the task: the at-most-once gate.
    TaskStarted { cell: Name, id: Name },
    TaskCompleted {
        cell: Name,
        id: Name,
        failed: bool,
        #[serde(default)]
        failure_reason: Option<String>,
        #[serde(default)]
        result: Option<String>,
    },
    /// The cell could not start the task (no room after all, container creation
    /// failed): it goes back to PENDING, up to a bounded number of times.
    TaskRejected {
        cell: Name,
        id: Name,
        reason: String,
    },
}

fn yes() -> bool {
    true
}

/// The outcome of each report, in the order sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportsReply {
    pub results: Vec<ReportResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ReportResult {
    /// Applied (for `InstanceEvacuating`: keep the container for now).
    Ok,
    /// The report no longer matches what is assigned (the instance was reassigned or
    /// removed, the task started elsewhere or was cancelled): the cell must stop that
    /// container, or not start that task.
    Stale { message: String },
}

/// `GET {cell address}/v1/usage`: what each container on a cell uses, as the cell's
/// sampler last saw it, by container id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellUsage {
    pub cell: Name,
    pub containers: BTreeMap<String, ContainerUsage>,
}

/// One container's latest usage sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// What runs in the container.
    pub workload: Workload,
    /// CPU used between the last two samples, where 100 is one core fully busy; `None`
    /// until the container has been sampled twice.
    pub cpu_percent: Option<f64>,
    /// CPU time used since the container started, in seconds.
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub pids: u32,
    /// When the sampler first found the container (within one sampling interval of its
    /// start), in milliseconds since the Unix epoch.
    pub started_at: Timestamp,
    /// When this sample was taken, in milliseconds since the Unix epoch.
    pub sampled_at: Timestamp,
}

/// What a container on a cell runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    Instance {
        lrp: Name,
        index: u32,
        instance_id: String,
    },
    Task {
        task: Name,
    },
}

/// The id of a task's container on its cell: part of the cell protocol, since the server
/// names it to reach the container (exec). Task names may hold `_` and capitals,
/// container ids may not, so the name is folded and a hash keeps distinct names
/// distinct.
pub fn task_container_id(id: &str) -> String {
    let folded: String = id
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // FNV-1a: stable across versions, unlike the standard library's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100_0000_01b3);
    }
    format!("task-{folded}-{:08x}", hash as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse("name", s).expect("valid")
    }

    #[test]
    fn evacuation_reports_on_the_wire() {
        let cases = [
            (
                Report::InstanceEvacuating {
                    cell: name("cell-a"),
                    lrp: name("web"),
                    index: 1,
                    instance_id: "i1".into(),
                },
                r#"{"kind":"instance_evacuating","cell":"cell-a","lrp":"web","index":1,"instance_id":"i1"}"#,
            ),
            (
                Report::InstanceEvacuatingClaimed {
                    cell: name("cell-a"),
                    lrp: name("web"),
                    index: 0,
                    instance_id: "i2".into(),
                },
                r#"{"kind":"instance_evacuating_claimed","cell":"cell-a","lrp":"web","index":0,"instance_id":"i2"}"#,
            ),
        ];
        for (report, json) in cases {
            assert_eq!(serde_json::to_string(&report).unwrap(), json);
            assert_eq!(serde_json::from_str::<Report>(json).unwrap(), report);
        }
        let extra = r#"{"kind":"instance_evacuating_claimed","cell":"c","lrp":"web","index":0,"instance_id":"i","x":1}"#;
        assert!(serde_json::from_str::<Report>(extra).is_err());
    }

    #[test]
    fn a_heartbeat_without_the_flag_is_not_evacuating() {
        let heartbeat: Heartbeat = serde_json::from_str(
            r#"{"cells":[{"id":"cell-a","address":"http://a","capacity":{"memory_mb":1,"disk_mb":1,"containers":1}}]}"#,
        )
        .unwrap();
        assert!(!heartbeat.cells[0].evacuating);
    }
}
