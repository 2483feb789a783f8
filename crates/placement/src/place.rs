//! The auction: puts a batch in Diego's order, then places each piece of work on the
//! best cell for it, debiting the snapshot as it goes.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use model::Name;

use crate::filter::{Stage, rejection};
use crate::score::{LOCALITY, Score};
use crate::snapshot::{CellIx, ClassIx, Entry, Free, Map, Snapshot, ZoneIx};
use crate::work::{Placement, Plan, Unplaced, Work, WorkId};

/// Places a batch of work on the snapshot's cells, Diego's way.
///
/// Order: LRP instances with index 0 first, then tasks, then the other instances by
/// index; within each of those, larger memory first, and otherwise in the order given.
///
/// Each piece of work goes to the cell that passes the filters (rootfs provider, volume
/// drivers, placement tags), has room for it, and has the lowest score (see the crate's
/// documentation); ties go to the cell whose id sorts first. An LRP instance looks only
/// in the zones that hold the fewest instances of its LRP, and in the next fewest only
/// if nothing there has room.
///
/// Every placement is debited from the snapshot before the next piece of work is
/// considered, and stays debited: the snapshot now includes the plan, as the scheduler
/// wants once it commits it. To try a batch without that, place it on a clone.
///
/// The batch should hold each piece of work once, as Diego's batch does after it
/// dedupes: work given twice is placed twice.
pub fn place(snapshot: &mut Snapshot, work: &[Work]) -> Plan {
    // The filters depend only on the work's rootfs provider, tags and drivers, and the
    // classes do not change during a batch, so each combination is filtered once.
    let mut filters: Map<(&str, &[String], &[String]), Filtered> = Map::default();
    let mut plan = Plan::default();
    for i in order(work) {
        let work = &work[i];
        let key = (
            work.rootfs.provider(),
            work.placement_tags.as_slice(),
            work.volume_drivers.as_slice(),
        );
        let filtered = filters.entry(key).or_insert_with(|| snapshot.filter(work));
        match snapshot.place_one(work, filtered) {
            Ok(cell) => plan.placed.push(Placement {
                work: work.clone(),
                cell,
            }),
            Err(unplaced) => plan.unplaced.push((work.clone(), unplaced)),
        }
    }
    plan
}

/// The order Diego's scheduler considers a batch in, as indexes into it.
fn order(work: &[Work]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&i| {
        let work = &work[i];
        let (group, index) = match work.id {
            WorkId::Lrp { index: 0, .. } => (0, 0),
            WorkId::Task { .. } => (1, 0),
            WorkId::Lrp { index, .. } => (2, index),
        };
        (group, index, Reverse(work.memory_mb))
    });
    order
}

/// The classes that pass the filters for one combination of rootfs provider, tags and
/// drivers.
#[derive(Debug)]
struct Filtered {
    /// Zones with at least one class that passes, by zone index, with those classes.
    zones: Vec<(ZoneIx, Vec<ClassIx>)>,
    /// The furthest any class got through the filters; `None` when there are no cells.
    furthest: Option<Stage>,
}

/// The best cell found so far: its score for the work, and the cell.
#[derive(Debug, Clone)]
struct Best {
    score: Score,
    cell: CellIx,
    id: Arc<str>,
}

impl Best {
    fn new(score: Score, entry: &Entry) -> Best {
        Best {
            score,
            cell: entry.cell,
            id: entry.id.clone(),
        }
    }
}

/// Whether a cell with this score beats the best so far: a lower score, or the same
/// score and an id that sorts first.
fn beats(score: Score, id: &str, best: Option<&Best>) -> bool {
    best.is_none_or(|best| score < best.score || (score == best.score && id < &*best.id))
}

impl Snapshot {
    fn filter(&self, work: &Work) -> Filtered {
        let provider = work.rootfs.provider();
        let mut zones: BTreeMap<ZoneIx, Vec<ClassIx>> = BTreeMap::new();
        let mut furthest = None;
        for (ix, class) in self.live_classes() {
            let stage =
                class
                    .attributes()
                    .stage(provider, &work.placement_tags, &work.volume_drivers);
            furthest = furthest.max(Some(stage));
            if stage == Stage::Pass {
                zones.entry(class.zone()).or_default().push(ix);
            }
        }
        Filtered {
            zones: zones.into_iter().collect(),
            furthest,
        }
    }

    fn place_one(&mut self, work: &Work, filtered: &Filtered) -> Result<Name, Unplaced> {
        let Some(furthest) = filtered.furthest else {
            return Err(Unplaced::NoCells);
        };
        if filtered.zones.is_empty() {
            return Err(rejection(furthest, work));
        }
        let best = match &work.id {
            WorkId::Lrp { lrp, .. } => self.best_for_lrp(work, lrp, filtered),
            WorkId::Task { .. } => self.best_for_task(work, filtered),
        };
        let Some(cix) = best else {
            return Err(self.insufficient(work, filtered));
        };
        self.debit(cix, work, true);
        Ok(self.cell(cix).view.id.clone())
    }

    /// Zones in tiers by how many instances of the LRP they hold, fewest first; the
    /// best cell of the first tier that has room.
    fn best_for_lrp(&mut self, work: &Work, lrp: &Name, filtered: &Filtered) -> Option<CellIx> {
        let counts = self.lrps.get(lrp);
        let mut zones: Vec<(u32, &(ZoneIx, Vec<ClassIx>))> = filtered
            .zones
            .iter()
            .map(|zone| (counts.map_or(0, |counts| counts.in_zone(zone.0)), zone))
            .collect();
        zones.sort_by_key(|(instances, _)| *instances);
        for tier in zones.chunk_by(|a, b| a.0 == b.0) {
            if let Some(cix) = self.best_in_tier(work, lrp, tier) {
                return Some(cix);
            }
        }
        None
    }

    fn best_in_tier(
        &mut self,
        work: &Work,
        lrp: &Name,
        tier: &[(u32, &(ZoneIx, Vec<ClassIx>))],
    ) -> Option<CellIx> {
        let mut best = None;
        for (_, (_, classes)) in tier {
            for &class in classes {
                if let Some(found) = self.best_instance_in_class(work, lrp, class, best.as_ref()) {
                    best = Some(found);
                }
            }
        }
        best.map(|best| best.cell)
    }

    /// Tasks do not spread by zone: the best cell anywhere.
    fn best_for_task(&mut self, work: &Work, filtered: &Filtered) -> Option<CellIx> {
        let mut best = None;
        for (_, classes) in &filtered.zones {
            for &class in classes {
                if let Some(found) = self.best_task_in_class(work, class, best.as_ref()) {
                    best = Some(found);
                }
            }
        }
        best.map(|best| best.cell)
    }

    /// The best cell of a class for a task, if it beats `best`.
    ///
    /// The class's cells are in task score order, and the task adds the same amount to
    /// each of their scores, so the first cell with room is the best; and once a cell's
    /// score does not beat `best`, no later one's does. A walk that reaches the end has
    /// seen every cell, so it also makes the class's `most_free` exact.
    fn best_task_in_class(
        &mut self,
        work: &Work,
        class_ix: ClassIx,
        best: Option<&Best>,
    ) -> Option<Best> {
        let class = self.class_ref(class_ix);
        if !class.most_free.fits(work) {
            return None;
        }
        let delta = class.weights.delta(work.memory_mb, work.disk_mb);
        let mut most_free = Free::default();
        for entry in &class.by_task_score {
            let score = entry.score.saturating_add(delta);
            if !beats(score, &entry.id, best) {
                return None;
            }
            if entry.free.fits(work) {
                return Some(Best::new(score, entry));
            }
            most_free = most_free.max(entry.free);
        }
        self.set_most_free(class_ix, most_free);
        None
    }

    /// The best cell of a class for an instance of `lrp`, if it beats `best`.
    ///
    /// A cell's score is its resource score after the placement plus 1000 per instance
    /// of the LRP it holds. Resource scores stay below 1000 unless a cell has thousands
    /// of containers starting, so the best cell holds the fewest instances, and of those
    /// has the lowest resource score: the first such cell with room in the class's
    /// resource score order. The class knows the fewest instances any of its cells
    /// holds, so the walk stops at the first cell with room that holds that many. A
    /// winner whose resource score is 1000 or more is checked against every cell of the
    /// class.
    fn best_instance_in_class(
        &mut self,
        work: &Work,
        lrp: &Name,
        class_ix: ClassIx,
        best: Option<&Best>,
    ) -> Option<Best> {
        let class = self.class_ref(class_ix);
        if !class.most_free.fits(work) {
            return None;
        }
        let delta = class.weights.delta(work.memory_mb, work.disk_mb);
        let counts = self.lrps.get(lrp);
        let fewest = counts.map_or(0, |counts| {
            counts.fewest_in_class(class_ix, class.by_score.len())
        });
        let mut most_free = Free::default();
        let mut complete = true;
        // The first cell with room among those holding the fewest instances seen so
        // far: (instances, resource score, entry).
        let mut found: Option<(u32, Score, &Entry)> = None;
        for entry in &class.by_score {
            let resources = entry.score.saturating_add(delta);
            // No cell from here on scores less than this.
            let floor = resources.saturating_add(u128::from(fewest) * LOCALITY);
            if !beats(floor, &entry.id, best) {
                complete = false;
                break;
            }
            most_free = most_free.max(entry.free);
            if !entry.free.fits(work) {
                continue;
            }
            let instances = match counts {
                Some(counts) if entry.instances > 0 => {
                    counts.cells.get(&entry.cell).copied().unwrap_or(0)
                }
                _ => 0,
            };
            if found.is_none_or(|(least, _, _)| instances < least) {
                found = Some((instances, resources, entry));
            }
            if instances == fewest {
                complete = false;
                break;
            }
        }
        let found = match found {
            Some((instances, resources, entry)) if resources < LOCALITY => {
                let score = resources.saturating_add(u128::from(instances) * LOCALITY);
                beats(score, &entry.id, best).then(|| Best::new(score, entry))
            }
            // Resource scores this high can outweigh holding fewer instances.
            Some(_) => self
                .best_instance_by_scan(work, lrp, class_ix)
                .filter(|found| beats(found.score, &found.id, best)),
            None => None,
        };
        if complete {
            self.set_most_free(class_ix, most_free);
        }
        found
    }

    /// The best cell of a class for an instance of `lrp`, by looking at every cell.
    fn best_instance_by_scan(&self, work: &Work, lrp: &Name, class_ix: ClassIx) -> Option<Best> {
        let class = self.class_ref(class_ix);
        let delta = class.weights.delta(work.memory_mb, work.disk_mb);
        let counts = self.lrps.get(lrp);
        let mut best: Option<Best> = None;
        for entry in class.by_score.iter().filter(|entry| entry.free.fits(work)) {
            let instances = counts
                .and_then(|counts| counts.cells.get(&entry.cell))
                .copied()
                .unwrap_or(0);
            let score = entry
                .score
                .saturating_add(delta)
                .saturating_add(u128::from(instances) * LOCALITY);
            if beats(score, &entry.id, best.as_ref()) {
                best = Some(Best::new(score, entry));
            }
        }
        best
    }

    fn set_most_free(&mut self, class_ix: ClassIx, most_free: Free) {
        let class = self.class_mut(class_ix);
        class.most_free = most_free;
        class.exact = true;
    }

    /// Nothing that passes the filters has room: the resources every such cell lacks.
    fn insufficient(&mut self, work: &Work, filtered: &Filtered) -> Unplaced {
        let mut most = Free::default();
        for (_, classes) in &filtered.zones {
            for &class in classes {
                most = most.max(self.refresh_most_free(class));
            }
        }
        Unplaced::Insufficient {
            memory: most.memory_mb < work.memory_mb,
            disk: most.disk_mb < work.disk_mb,
            containers: most.containers < 1,
        }
    }
}
