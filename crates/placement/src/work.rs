//! Work to place, and the plan that says where it goes or why it cannot go anywhere.

use std::fmt;

use model::{LrpSpec, Name, Rootfs, TaskSpec};
use serde::{Deserialize, Serialize};

/// What a piece of work is: one instance of an LRP, or a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkId {
    Lrp { lrp: Name, index: u32 },
    Task { id: Name },
}

/// One container to place, with everything the auction looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    pub id: WorkId,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub rootfs: Rootfs,
    pub placement_tags: Vec<String>,
    pub volume_drivers: Vec<String>,
}

/// Where one piece of work goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub work: Work,
    pub cell: Name,
}

/// The outcome of one auction. Both lists are in the order the auction considered the
/// work (see [`crate::place`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub placed: Vec<Placement>,
    pub unplaced: Vec<(Work, Unplaced)>,
}

/// Why no cell can take a piece of work, with what a user can change about it. The
/// variants are checked in this order: a rootfs problem hides a volume driver problem,
/// which hides a placement tag problem, which hides draining cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Unplaced {
    /// No cell provides the rootfs (`preloaded:<stack>`, `docker://...`, `oci:...`).
    NoRootfs { rootfs: String },
    /// No cell with the rootfs has all of these volume drivers.
    NoVolumeDrivers { drivers: Vec<String> },
    /// No cell with the rootfs and drivers accepts exactly these tags: each cell's
    /// required tags must be among them, and each of them among the cell's required
    /// and optional tags.
    NoPlacementTags { tags: Vec<String> },
    /// Every cell that passes the filters above is evacuating (draining): the work waits
    /// for a cell that is not.
    AllEvacuating,
    /// Every cell that passes the filters lacks something; these are the resources that
    /// every one of them lacks (possibly none: each lacks a different one).
    Insufficient {
        memory: bool,
        disk: bool,
        containers: bool,
    },
    /// The snapshot holds no cell at all.
    NoCells,
}

impl Work {
    /// Instance `index` of an LRP.
    pub fn instance(spec: &LrpSpec, index: u32) -> Work {
        Work {
            id: WorkId::Lrp {
                lrp: spec.name.clone(),
                index,
            },
            memory_mb: spec.resources.memory_mb,
            disk_mb: spec.resources.disk_mb,
            rootfs: spec.rootfs.clone(),
            placement_tags: spec.placement_tags.clone(),
            volume_drivers: Vec::new(),
        }
    }

    /// A task.
    pub fn task(id: &Name, spec: &TaskSpec) -> Work {
        Work {
            id: WorkId::Task { id: id.clone() },
            memory_mb: spec.resources.memory_mb,
            disk_mb: spec.resources.disk_mb,
            rootfs: spec.rootfs.clone(),
            placement_tags: spec.placement_tags.clone(),
            volume_drivers: Vec::new(),
        }
    }
}

/// `web/3` for an instance, the task's id for a task.
impl fmt::Display for WorkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkId::Lrp { lrp, index } => write!(f, "{lrp}/{index}"),
            WorkId::Task { id } => write!(f, "{id}"),
        }
    }
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unplaced::NoRootfs { rootfs } => write!(f, "no cell has rootfs {rootfs}"),
            Unplaced::NoVolumeDrivers { drivers } => {
                write!(f, "no cell has volume drivers [{}]", drivers.join(", "))
            }
            Unplaced::NoPlacementTags { tags } => {
                write!(f, "no cell matches placement tags [{}]", tags.join(", "))
            }
            Unplaced::Insufficient {
                memory,
                disk,
                containers,
            } => {
                f.write_str("insufficient resources")?;
                let lacking: Vec<&str> = [
                    (*memory, "memory"),
                    (*disk, "disk"),
                    (*containers, "containers"),
                ]
                .into_iter()
                .filter_map(|(lacks, name)| lacks.then_some(name))
                .collect();
                if !lacking.is_empty() {
                    write!(f, ": {}", lacking.join(", "))?;
                }
                Ok(())
            }
            Unplaced::AllEvacuating => f.write_str("every cell that could run it is evacuating"),
            Unplaced::NoCells => f.write_str("no cells are available"),
        }
    }
}
