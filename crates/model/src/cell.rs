//! Cells: the machines that run containers, as they present themselves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Name;
use crate::lrp::validate_tags;
use crate::validate::{ValidationError, check_len};

/// A cell's presence: who it is, where to reach it, what it can hold and run. Kept in
/// the store as a presence with a TTL that the cell's heartbeat renews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub id: Name,
    /// The cell agent's base URL.
    pub address: String,
    #[serde(default)]
    pub zone: String,
    pub capacity: CellCapacity,
    /// Stacks and schemes it can run: `host`, `busybox`, `docker`, ...
    #[serde(default)]
    pub rootfs_providers: Vec<String>,
    /// Work must carry all of these to land here.
    #[serde(default)]
    pub placement_tags: Vec<String>,
    /// Work may carry these too.
    #[serde(default)]
    pub optional_placement_tags: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// The cell is draining (`corral cell drain`, SIGTERM): it takes no new work, hands
    /// each instance it holds over to a replacement elsewhere (the `instance_evacuating`
    /// and `instance_evacuating_claimed` reports), and exits when it holds nothing. It says so in
    /// every heartbeat from the moment it starts to drain.
    #[serde(default)]
    pub evacuating: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCapacity {
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub containers: u32,
}

impl Cell {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_len("address", &self.address, 1024)?;
        check_len("zone", &self.zone, 128)?;
        validate_tags("placement_tags", &self.placement_tags)?;
        validate_tags("optional_placement_tags", &self.optional_placement_tags)?;
        validate_tags("rootfs_providers", &self.rootfs_providers)
    }
}
