//! A naive auction that scans every cell for every piece of work, written straight from
//! Diego's description. The indexed snapshot must give exactly the same plans.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use model::Name;

use super::fixture::Auction;
use crate::score::{LOCALITY, Weights};
use crate::{Capacity, CellView, Placement, Plan, Unplaced, Usage, Work, WorkId};

/// Cells in a list, in the order they first appeared.
#[derive(Debug, Clone, Default)]
pub(super) struct Naive {
    cells: Vec<NaiveCell>,
}

#[derive(Debug, Clone)]
struct NaiveCell {
    view: CellView,
    memory_mb: u64,
    disk_mb: u64,
    containers: u64,
    starting: u32,
    tasks: u32,
    instances: u32,
    lrps: BTreeMap<Name, u32>,
}

impl NaiveCell {
    fn fits(&self, work: &Work) -> (bool, bool, bool) {
        let total = self.view.total;
        (
            total.memory_mb.saturating_sub(self.memory_mb) >= work.memory_mb,
            total.disk_mb.saturating_sub(self.disk_mb) >= work.disk_mb,
            u64::from(total.containers).saturating_sub(self.containers) >= 1,
        )
    }

    /// Diego's score after placing the work.
    fn score(&self, work: &Work) -> u128 {
        let resources = Weights::new(self.view.total).score(
            u128::from(self.memory_mb) + u128::from(work.memory_mb),
            u128::from(self.disk_mb) + u128::from(work.disk_mb),
            u128::from(self.containers) + 1,
            self.starting,
        );
        let same = match &work.id {
            WorkId::Lrp { lrp, .. } => self.lrps.get(lrp).copied().unwrap_or(0),
            WorkId::Task { .. } => self.tasks,
        };
        resources + u128::from(same) * LOCALITY
    }
}

/// How far a cell gets through the filters: 0 rootfs, 1 drivers, 2 tags, 3 evacuating,
/// 4 passes.
pub(super) fn stage(cell: &CellView, work: &Work) -> u8 {
    if !cell
        .rootfs_providers
        .iter()
        .any(|p| p == work.rootfs.provider())
    {
        return 0;
    }
    if !work
        .volume_drivers
        .iter()
        .all(|d| cell.volume_drivers.contains(d))
    {
        return 1;
    }
    let required_carried = cell
        .placement_tags
        .iter()
        .all(|t| work.placement_tags.contains(t));
    let carried_allowed = work
        .placement_tags
        .iter()
        .all(|t| cell.placement_tags.contains(t) || cell.optional_placement_tags.contains(t));
    if !(required_carried && carried_allowed) {
        return 2;
    }
    if cell.evacuating {
        return 3;
    }
    PASS
}

/// The stage of a cell that passes every filter.
pub(super) const PASS: u8 = 4;

impl Naive {
    fn find(&mut self, id: &Name) -> Option<&mut NaiveCell> {
        self.cells.iter_mut().find(|cell| cell.view.id == *id)
    }

    fn place_one(&mut self, work: &Work) -> Result<usize, Unplaced> {
        if self.cells.is_empty() {
            return Err(Unplaced::NoCells);
        }
        let furthest = self
            .cells
            .iter()
            .map(|c| stage(&c.view, work))
            .max()
            .unwrap_or(0);
        let candidates: Vec<usize> = (0..self.cells.len())
            .filter(|&i| stage(&self.cells[i].view, work) == PASS)
            .collect();
        match furthest {
            0 => {
                return Err(Unplaced::NoRootfs {
                    rootfs: work.rootfs.to_string(),
                });
            }
            1 => {
                return Err(Unplaced::NoVolumeDrivers {
                    drivers: work.volume_drivers.clone(),
                });
            }
            2 => {
                return Err(Unplaced::NoPlacementTags {
                    tags: work.placement_tags.clone(),
                });
            }
            3 => return Err(Unplaced::AllEvacuating),
            _ => {}
        }
        // Tiers of zones: for a task one tier of every cell, for an LRP the candidates
        // grouped by how many instances their zone holds, fewest first.
        let tiers: Vec<Vec<usize>> = match &work.id {
            WorkId::Task { .. } => vec![candidates.clone()],
            WorkId::Lrp { lrp, .. } => {
                let zone_count = |zone: &str| -> u32 {
                    self.cells
                        .iter()
                        .filter(|c| c.view.zone == zone)
                        .map(|c| c.lrps.get(lrp).copied().unwrap_or(0))
                        .sum()
                };
                let counts: BTreeSet<u32> = candidates
                    .iter()
                    .map(|&i| zone_count(&self.cells[i].view.zone))
                    .collect();
                counts
                    .into_iter()
                    .map(|count| {
                        candidates
                            .iter()
                            .copied()
                            .filter(|&i| zone_count(&self.cells[i].view.zone) == count)
                            .collect()
                    })
                    .collect()
            }
        };
        for tier in tiers {
            let best = tier
                .iter()
                .copied()
                .filter(|&i| self.cells[i].fits(work) == (true, true, true))
                .min_by(|&a, &b| {
                    let (a, b) = (&self.cells[a], &self.cells[b]);
                    (a.score(work), &a.view.id).cmp(&(b.score(work), &b.view.id))
                });
            if let Some(best) = best {
                return Ok(best);
            }
        }
        let mut problems = (true, true, true);
        for &i in &candidates {
            let (memory, disk, containers) = self.cells[i].fits(work);
            problems.0 &= !memory;
            problems.1 &= !disk;
            problems.2 &= !containers;
        }
        Err(Unplaced::Insufficient {
            memory: problems.0,
            disk: problems.1,
            containers: problems.2,
        })
    }
}

impl Auction for Naive {
    fn upsert_cell(&mut self, view: CellView) {
        match self.find(&view.id) {
            Some(cell) => cell.view = view,
            None => self.cells.push(NaiveCell {
                view,
                memory_mb: 0,
                disk_mb: 0,
                containers: 0,
                starting: 0,
                tasks: 0,
                instances: 0,
                lrps: BTreeMap::new(),
            }),
        }
    }

    fn remove_cell(&mut self, id: &Name) {
        self.cells.retain(|cell| cell.view.id != *id);
    }

    fn add(&mut self, cell: &Name, work: &Work, starting: bool) {
        let Some(cell) = self.find(cell) else { return };
        cell.memory_mb = cell.memory_mb.saturating_add(work.memory_mb);
        cell.disk_mb = cell.disk_mb.saturating_add(work.disk_mb);
        cell.containers += 1;
        cell.starting += u32::from(starting);
        match &work.id {
            WorkId::Lrp { lrp, .. } => {
                *cell.lrps.entry(lrp.clone()).or_default() += 1;
                cell.instances += 1;
            }
            WorkId::Task { .. } => cell.tasks += 1,
        }
    }

    fn remove(&mut self, cell: &Name, work: &Work, starting: bool) {
        let Some(cell) = self.find(cell) else { return };
        cell.memory_mb = cell.memory_mb.saturating_sub(work.memory_mb);
        cell.disk_mb = cell.disk_mb.saturating_sub(work.disk_mb);
        cell.containers = cell.containers.saturating_sub(1);
        if starting {
            cell.starting = cell.starting.saturating_sub(1);
        }
        match &work.id {
            WorkId::Lrp { lrp, .. } => {
                if let Some(n) = cell.lrps.get_mut(lrp) {
                    *n -= 1;
                    if *n == 0 {
                        cell.lrps.remove(lrp);
                    }
                    cell.instances = cell.instances.saturating_sub(1);
                }
            }
            WorkId::Task { .. } => cell.tasks = cell.tasks.saturating_sub(1),
        }
    }

    fn started(&mut self, cell: &Name) {
        if let Some(cell) = self.find(cell) {
            cell.starting = cell.starting.saturating_sub(1);
        }
    }

    fn place(&mut self, work: &[Work]) -> Plan {
        let mut order: Vec<&Work> = work.iter().collect();
        order.sort_by_key(|work| {
            let (group, index) = match work.id {
                WorkId::Lrp { index: 0, .. } => (0, 0),
                WorkId::Task { .. } => (1, 0),
                WorkId::Lrp { index, .. } => (2, index),
            };
            (group, index, Reverse(work.memory_mb))
        });
        let mut plan = Plan::default();
        for work in order {
            match self.place_one(work) {
                Ok(i) => {
                    let id = self.cells[i].view.id.clone();
                    self.add(&id, work, true);
                    plan.placed.push(Placement {
                        work: work.clone(),
                        cell: id,
                    });
                }
                Err(why) => plan.unplaced.push((work.clone(), why)),
            }
        }
        plan
    }

    fn usage(&self, id: &Name) -> Option<Usage> {
        let cell = self.cells.iter().find(|cell| cell.view.id == *id)?;
        Some(Usage {
            total: cell.view.total,
            used: Capacity {
                memory_mb: cell.memory_mb,
                disk_mb: cell.disk_mb,
                containers: u32::try_from(cell.containers).unwrap_or(u32::MAX),
            },
            starting: cell.starting,
            tasks: cell.tasks,
            instances: cell.instances,
        })
    }
}
