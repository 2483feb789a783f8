//! The strict filters (Diego's `Zone.filterCells`): rootfs provider, then volume
//! drivers, then placement tags, then whether the cell is evacuating (Diego leaves such
//! cells out of the auction altogether; as a filter, it also names the reason when they
//! are the only cells that could run the work). They look only at a cell's attributes,
//! so the snapshot evaluates them once per class of cells with identical attributes,
//! not per cell.

use crate::cell::CellView;
use crate::work::{Unplaced, Work};

/// The attributes of a cell that the filters read, normalised (sorted, without
/// duplicates) so that cells that accept the same work compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Attributes {
    providers: Vec<String>,
    /// Tags work must carry.
    required: Vec<String>,
    /// Tags work may carry: required and optional ones.
    allowed: Vec<String>,
    drivers: Vec<String>,
    evacuating: bool,
}

/// How far a cell gets through the filters, in the order they are checked. The
/// furthest stage any cell reaches decides which error a user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// It does not provide the rootfs.
    Rootfs,
    /// It provides the rootfs but lacks a volume driver.
    VolumeDrivers,
    /// It provides the rootfs and drivers but not the placement tags.
    PlacementTags,
    /// It could run the work but is draining.
    Evacuating,
    /// It may run the work, resources permitting.
    Pass,
}

impl Attributes {
    pub(crate) fn new(cell: &CellView) -> Attributes {
        let set = |values: &[&[String]]| {
            let mut set: Vec<String> = values.iter().flat_map(|v| v.iter().cloned()).collect();
            set.sort_unstable();
            set.dedup();
            set
        };
        Attributes {
            providers: set(&[&cell.rootfs_providers]),
            required: set(&[&cell.placement_tags]),
            allowed: set(&[&cell.placement_tags, &cell.optional_placement_tags]),
            drivers: set(&[&cell.volume_drivers]),
            evacuating: cell.evacuating,
        }
    }

    /// How far work with this rootfs provider, these tags and these drivers gets.
    pub(crate) fn stage(&self, provider: &str, tags: &[String], drivers: &[String]) -> Stage {
        let has = |set: &[String], value: &str| {
            set.binary_search_by(|probe| probe.as_str().cmp(value))
                .is_ok()
        };
        if !has(&self.providers, provider) {
            return Stage::Rootfs;
        }
        if !drivers.iter().all(|driver| has(&self.drivers, driver)) {
            return Stage::VolumeDrivers;
        }
        let required_carried = self.required.iter().all(|tag| tags.contains(tag));
        let carried_allowed = tags.iter().all(|tag| has(&self.allowed, tag));
        if !(required_carried && carried_allowed) {
            return Stage::PlacementTags;
        }
        if self.evacuating {
            return Stage::Evacuating;
        }
        Stage::Pass
    }
}

/// The error for work that no cell passes, given the furthest stage any cell reached.
pub(crate) fn rejection(furthest: Stage, work: &Work) -> Unplaced {
    match furthest {
        Stage::Rootfs => Unplaced::NoRootfs {
            rootfs: work.rootfs.to_string(),
        },
        Stage::VolumeDrivers => Unplaced::NoVolumeDrivers {
            drivers: work.volume_drivers.clone(),
        },
        Stage::PlacementTags => Unplaced::NoPlacementTags {
            tags: work.placement_tags.clone(),
        },
        Stage::Evacuating | Stage::Pass => Unplaced::AllEvacuating,
    }
}
