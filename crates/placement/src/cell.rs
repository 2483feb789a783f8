//! Cells as the auction sees them: attributes that filter work and the capacity it uses.

use model::{Cell, CellCapacity, Name};
use serde::{Deserialize, Serialize};

/// One cell: who it is, where it is, what it can run and how much it holds in total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellView {
    pub id: Name,
    /// LRPs spread across zones before they spread across cells. `""` is a zone too.
    pub zone: String,
    pub total: Capacity,
    /// Stacks and schemes it runs: `host`, `busybox`, `docker`, `oci`, ...
    pub rootfs_providers: Vec<String>,
    /// Work must carry all of these to land here.
    pub placement_tags: Vec<String>,
    /// Work may carry these too.
    pub optional_placement_tags: Vec<String>,
    /// Volume drivers the cell can mount from.
    pub volume_drivers: Vec<String>,
    /// The cell is draining: it keeps what it holds for now but takes nothing new.
    pub evacuating: bool,
}

/// An amount of each resource the auction accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u32,
}

/// What a cell holds right now, as the snapshot accounts for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub total: Capacity,
    /// Reserved by work that runs or starts there. It may exceed `total` when a cell
    /// reports more than it advertises, or shrank under its work.
    pub used: Capacity,
    /// Containers placed or reported that have not started yet.
    pub starting: u32,
    pub tasks: u32,
    /// Instances of LRPs, of any LRP.
    pub instances: u32,
}

impl From<CellCapacity> for Capacity {
    fn from(capacity: CellCapacity) -> Capacity {
        Capacity {
            memory_mb: capacity.memory_mb,
            disk_mb: capacity.disk_mb,
            containers: capacity.containers,
        }
    }
}

/// A cell's presence as the auction needs it. The model's cell advertises no volume
/// drivers yet, so the view has none.
impl From<&Cell> for CellView {
    fn from(cell: &Cell) -> CellView {
        CellView {
            id: cell.id.clone(),
            zone: cell.zone.clone(),
            total: cell.capacity.into(),
            rootfs_providers: cell.rootfs_providers.clone(),
            placement_tags: cell.placement_tags.clone(),
            optional_placement_tags: cell.optional_placement_tags.clone(),
            volume_drivers: Vec::new(),
            evacuating: cell.evacuating,
        }
    }
}
