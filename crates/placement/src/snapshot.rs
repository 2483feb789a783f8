//! The live view of every cell: capacity, what is placed on it, and the index that
//! makes a placement cost a few lookups instead of a scan of every cell.
//!
//! Cells with the same zone, total capacity and filter attributes form a class. The
//! filters give the same answer for every cell of a class, and (see `score`) placing the
//! same work adds the same amount to each of their scores, so a class keeps its cells in
//! two ordered sets: by resource score (memory, disk, containers, starting weight), and
//! by task score (that plus 1000 per task). The best cell of a class for a piece of work
//! is then the first one in the set that has room for it (and, for an LRP, holds no
//! instance of it yet). Classes also remember, per resource, the most any of their cells
//! has free; that lets a search skip a class that cannot fit the work, and tells which
//! resources every cell lacks when nothing fits.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use model::Name;

use crate::cell::{Capacity, CellView, Usage};
use crate::filter::Attributes;
use crate::score::{LOCALITY, Score, Weights};
use crate::work::{Work, WorkId};

/// Hash maps keyed by names, with SipHash under fixed keys: the same input gives the
/// same layout on every run, and nothing here reads the OS's randomness. (Nothing
/// depends on their iteration order either.)
pub(crate) type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Hash maps keyed by the snapshot's own indexes, which it hands out itself and no
/// user chooses: a multiplicative hash is enough, and several times faster.
pub(crate) type IndexMap<K, V> = HashMap<K, V, BuildHasherDefault<IndexHasher>>;

/// Fx-style hashing (as in rustc) of small integers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(byte.into());
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(crate) type CellIx = u32;
pub(crate) type ClassIx = u32;
pub(crate) type ZoneIx = u32;

/// The live view of all cells, kept up to date by the scheduler from cell reports and
/// its own placements. Cloning it gives a copy to try a batch on without committing.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Cells by index; removed cells leave a hole that a new cell reuses.
    pub(crate) cells: Vec<Option<CellState>>,
    free_cells: Vec<CellIx>,
    by_id: Map<Name, CellIx>,
    /// Classes by index; a class is dropped when its last cell leaves it.
    pub(crate) classes: Vec<Option<Class>>,
    free_classes: Vec<ClassIx>,
    class_by_key: Map<ClassKey, ClassIx>,
    zone_by_name: Map<String, ZoneIx>,
    /// Where the instances of each LRP are, for anti-affinity and zone spreading.
    pub(crate) lrps: Map<Name, LrpCounts>,
}

/// One cell and what it holds.
#[derive(Debug, Clone)]
pub(crate) struct CellState {
    pub(crate) view: CellView,
    /// The id again, cheap to clone into the index's entries.
    pub(crate) id: Arc<str>,
    pub(crate) zone: ZoneIx,
    pub(crate) class: ClassIx,
    used: Used,
    starting: u32,
    tasks: u32,
    /// Instances of any LRP: when it is 0 the cell surely holds none of a given LRP.
    pub(crate) instances: u32,
    /// The resource score the cell is indexed under: usage plus starting weight.
    pub(crate) score: Score,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    memory_mb: u64,
    disk_mb: u64,
    containers: u64,
}

/// How much of each resource is free: on one cell, or at most on any cell of a class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Free {
    pub(crate) memory_mb: u64,
    pub(crate) disk_mb: u64,
    pub(crate) containers: u64,
}

/// Cells that look the same to the auction: same zone, capacity and attributes.
#[derive(Debug, Clone)]
pub(crate) struct Class {
    key: ClassKey,
    pub(crate) weights: Weights,
    /// Members by resource score, then id.
    pub(crate) by_score: BTreeSet<Entry>,
    /// Members by task score (resource score + 1000 per task), then id.
    pub(crate) by_task_score: BTreeSet<Entry>,
    /// For each resource, at least as much as the member with the most of it free has.
    pub(crate) most_free: Free,
    /// Whether `most_free` is exactly the most, not just a bound: placements lower a
    /// cell's free resources without recomputing the class's.
    pub(crate) exact: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClassKey {
    zone: ZoneIx,
    total: Capacity,
    attributes: Attributes,
}

/// A cell in one of a class's ordered sets. Besides what it is ordered by, it carries
/// what a search checks, so that walking a set does not visit the cells themselves.
/// A cell's entries are rebuilt on every change to it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) score: Score,
    pub(crate) id: Arc<str>,
    pub(crate) cell: CellIx,
    pub(crate) free: Free,
    /// Instances of any LRP: when it is 0 the cell surely holds none of a given LRP.
    pub(crate) instances: u32,
}

/// Where one LRP's instances are.
#[derive(Debug, Clone, Default)]
pub(crate) struct LrpCounts {
    /// Instances by cell; cells holding none are absent.
    pub(crate) cells: IndexMap<CellIx, u32>,
    /// Instances by zone index; zones past the end hold none.
    zones: Vec<u32>,
    /// By class: how many of its cells hold how many instances. Classes whose cells
    /// hold none are absent.
    layers: IndexMap<ClassIx, Layers>,
}

/// How many cells of a class hold 1, 2, ... instances of one LRP.
#[derive(Debug, Clone, Default)]
struct Layers {
    /// Cells that hold at least one.
    holders: u32,
    /// `cells[n - 1]`: cells that hold exactly n.
    cells: Vec<u32>,
}

impl Snapshot {
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Adds a cell, or updates one: its zone, capacity or attributes changed. What is
    /// placed on it stays placed, even if it no longer fits.
    pub fn upsert_cell(&mut self, view: CellView) {
        let zone = self.zone(&view.zone);
        let cix = match self.by_id.get(&view.id) {
            Some(&cix) if self.cell(cix).view == view => return,
            Some(&cix) => {
                // The view changed, so the class did: every field but the id is part of
                // the class's key. Move the cell's instances along, in time proportional
                // to the number of LRPs; cells change far less often than work does.
                let (old_zone, old_class) = (self.cell(cix).zone, self.cell(cix).class);
                self.move_instances(cix, old_zone, old_class, false);
                self.detach(cix);
                let class = self.class(zone, &view);
                let cell = self.cell_mut(cix);
                cell.view = view;
                cell.zone = zone;
                cell.class = class;
                self.move_instances(cix, zone, class, true);
                cix
            }
            None => {
                let class = self.class(zone, &view);
                let cell = CellState {
                    id: Arc::from(view.id.as_str()),
                    view,
                    zone,
                    class,
                    used: Used::default(),
                    starting: 0,
                    tasks: 0,
                    instances: 0,
                    score: 0,
                };
                let cix = match self.free_cells.pop() {
                    Some(cix) => {
                        self.cells[cix as usize] = Some(cell);
                        cix
                    }
                    None => {
                        self.cells.push(Some(cell));
                        CellIx::try_from(self.cells.len() - 1).expect("fewer than 2^32 cells")
                    }
                };
                self.by_id.insert(self.cell(cix).view.id.clone(), cix);
                cix
            }
        };
        self.attach(cix);
    }

    /// Forgets a cell and everything placed on it.
    pub fn remove_cell(&mut self, id: &Name) {
        let Some(cix) = self.by_id.remove(id) else {
            return;
        };
        let (zone, class) = (self.cell(cix).zone, self.cell(cix).class);
        self.move_instances(cix, zone, class, false);
        self.detach(cix);
        self.lrps.retain(|_, counts| {
            counts.cells.remove(&cix);
            !counts.cells.is_empty()
        });
        self.cells[cix as usize] = None;
        self.free_cells.push(cix);
    }

    /// Records work that runs on a cell, or is starting there (`starting`): state loaded
    /// at startup, or a cell's report of what it holds. A cell the snapshot does not know
    /// is ignored.
    pub fn add(&mut self, cell: &Name, work: &Work, starting: bool) {
        if let Some(&cix) = self.by_id.get(cell) {
            self.debit(cix, work, starting);
        }
    }

    /// Records that work left a cell (it stopped, crashed, completed or was evacuated),
    /// crediting its resources back. `starting` says whether it was still starting:
    /// added as starting, or placed, and not [`Snapshot::started`] since. Work the
    /// snapshot did not have there still gives its resources back, down to zero.
    pub fn remove(&mut self, cell: &Name, work: &Work, starting: bool) {
        let Some(&cix) = self.by_id.get(cell) else {
            return;
        };
        let (zone, class) = (self.cell(cix).zone, self.cell(cix).class);
        let mut held = true;
        if let WorkId::Lrp { lrp, .. } = &work.id {
            held = false;
            if let Some(counts) = self.lrps.get_mut(lrp) {
                if let Some(n) = counts.cells.get_mut(&cix) {
                    held = true;
                    let from = *n;
                    *n -= 1;
                    if *n == 0 {
                        counts.cells.remove(&cix);
                    }
                    *counts.zone_mut(zone) -= 1;
                    counts.relayer(class, from, from - 1);
                }
                if counts.cells.is_empty() {
                    self.lrps.remove(lrp);
                }
            }
        }
        self.update(cix, |cell| {
            cell.used.memory_mb = cell.used.memory_mb.saturating_sub(work.memory_mb);
            cell.used.disk_mb = cell.used.disk_mb.saturating_sub(work.disk_mb);
            cell.used.containers = cell.used.containers.saturating_sub(1);
            if starting {
                cell.starting = cell.starting.saturating_sub(1);
            }
            match work.id {
                WorkId::Lrp { .. } if held => cell.instances = cell.instances.saturating_sub(1),
                WorkId::Lrp { .. } => {}
                WorkId::Task { .. } => cell.tasks = cell.tasks.saturating_sub(1),
            }
        });
    }

    /// Records that one container starting on a cell is now running.
    pub fn started(&mut self, cell: &Name) {
        if let Some(&cix) = self.by_id.get(cell) {
            self.update(cix, |cell| cell.starting = cell.starting.saturating_sub(1));
        }
    }

    /// How many cells there are.
    pub fn cells(&self) -> usize {
        self.by_id.len()
    }

    /// The ids of all cells, in no particular order (but the same on every run).
    pub fn cell_ids(&self) -> impl Iterator<Item = &Name> {
        self.by_id.keys()
    }

    /// A cell as it was last upserted.
    pub fn cell_view(&self, id: &Name) -> Option<&CellView> {
        self.by_id.get(id).map(|&cix| &self.cell(cix).view)
    }

    /// What a cell holds.
    pub fn usage(&self, id: &Name) -> Option<Usage> {
        let cell = self.cell(*self.by_id.get(id)?);
        Some(Usage {
            total: cell.view.total,
            used: Capacity {
                memory_mb: cell.used.memory_mb,
                disk_mb: cell.used.disk_mb,
                containers: u32::try_from(cell.used.containers).unwrap_or(u32::MAX),
            },
            starting: cell.starting,
            tasks: cell.tasks,
            instances: cell.instances,
        })
    }

    /// How many instances of an LRP a cell holds.
    pub fn instances_of(&self, cell: &Name, lrp: &Name) -> u32 {
        let (Some(cix), Some(counts)) = (self.by_id.get(cell), self.lrps.get(lrp)) else {
            return 0;
        };
        counts.cells.get(cix).copied().unwrap_or(0)
    }

    pub(crate) fn cell(&self, cix: CellIx) -> &CellState {
        self.cells[cix as usize]
            .as_ref()
            .expect("indexes in use point at live cells")
    }

    fn cell_mut(&mut self, cix: CellIx) -> &mut CellState {
        self.cells[cix as usize]
            .as_mut()
            .expect("indexes in use point at live cells")
    }

    pub(crate) fn class_ref(&self, class: ClassIx) -> &Class {
        self.classes[class as usize]
            .as_ref()
            .expect("cells point at live classes")
    }

    pub(crate) fn class_mut(&mut self, class: ClassIx) -> &mut Class {
        self.classes[class as usize]
            .as_mut()
            .expect("cells point at live classes")
    }

    /// Every live class, in index order.
    pub(crate) fn live_classes(&self) -> impl Iterator<Item = (ClassIx, &Class)> {
        self.classes
            .iter()
            .enumerate()
            .filter_map(|(i, class)| Some((i as ClassIx, class.as_ref()?)))
    }

    /// Reserves the work's resources on a cell: a placement, or work a cell reported.
    pub(crate) fn debit(&mut self, cix: CellIx, work: &Work, starting: bool) {
        if let WorkId::Lrp { lrp, .. } = &work.id {
            let (zone, class) = (self.cell(cix).zone, self.cell(cix).class);
            let counts = match self.lrps.get_mut(lrp) {
                Some(counts) => counts,
                None => self.lrps.entry(lrp.clone()).or_default(),
            };
            let n = counts.cells.entry(cix).or_default();
            *n += 1;
            let to = *n;
            *counts.zone_mut(zone) += 1;
            counts.relayer(class, to - 1, to);
        }
        self.update(cix, |cell| {
            cell.used.memory_mb = cell.used.memory_mb.saturating_add(work.memory_mb);
            cell.used.disk_mb = cell.used.disk_mb.saturating_add(work.disk_mb);
            cell.used.containers = cell.used.containers.saturating_add(1);
            if starting {
                cell.starting = cell.starting.saturating_add(1);
            }
            match work.id {
                WorkId::Lrp { .. } => cell.instances = cell.instances.saturating_add(1),
                WorkId::Task { .. } => cell.tasks = cell.tasks.saturating_add(1),
            }
        });
    }

    /// Takes a cell's LRP instances out of its zone's and class's counts
    /// (`arrive == false`), or puts them into them.
    fn move_instances(&mut self, cix: CellIx, zone: ZoneIx, class: ClassIx, arrive: bool) {
        for counts in self.lrps.values_mut() {
            if let Some(&n) = counts.cells.get(&cix) {
                if arrive {
                    *counts.zone_mut(zone) += n;
                    counts.relayer(class, 0, n);
                } else {
                    *counts.zone_mut(zone) -= n;
                    counts.relayer(class, n, 0);
                }
            }
        }
    }

    /// Changes a cell's usage and moves it to its new place in its class's sets.
    fn update(&mut self, cix: CellIx, change: impl FnOnce(&mut CellState)) {
        let before = self.cell(cix).free();
        self.unindex(cix);
        change(self.cell_mut(cix));
        let after = self.index(cix);
        let class = self.class_mut(self.cell(cix).class);
        if after.memory_mb < before.memory_mb
            || after.disk_mb < before.disk_mb
            || after.containers < before.containers
        {
            class.exact = false;
        }
        class.most_free = class.most_free.max(after);
    }

    /// Puts a cell into its class: computes its score and enters it into the sets.
    fn attach(&mut self, cix: CellIx) {
        let free = self.index(cix);
        let class = self.class_mut(self.cell(cix).class);
        class.most_free = class.most_free.max(free);
    }

    /// Takes a cell out of its class, dropping the class if it was the last member.
    fn detach(&mut self, cix: CellIx) {
        self.unindex(cix);
        let class_ix = self.cell(cix).class;
        let class = self.class_mut(class_ix);
        if class.by_score.is_empty() {
            let class = self.classes[class_ix as usize]
                .take()
                .expect("cells point at live classes");
            self.class_by_key.remove(&class.key);
            self.free_classes.push(class_ix);
        } else {
            class.exact = false;
        }
    }

    /// Enters a cell into its class's sets under its current score; returns what it has
    /// free.
    fn index(&mut self, cix: CellIx) -> Free {
        let class_ix = self.cell(cix).class;
        let weights = self.class_ref(class_ix).weights;
        let cell = self.cell_mut(cix);
        cell.score = weights.score(
            cell.used.memory_mb.into(),
            cell.used.disk_mb.into(),
            cell.used.containers.into(),
            cell.starting,
        );
        let (entry, task_entry) = cell.entries(cix);
        let free = cell.free();
        let class = self.class_mut(class_ix);
        class.by_score.insert(entry);
        class.by_task_score.insert(task_entry);
        free
    }

    /// Takes a cell out of its class's sets.
    fn unindex(&mut self, cix: CellIx) {
        let cell = self.cell(cix);
        let (entry, task_entry) = cell.entries(cix);
        let class = self.class_mut(cell.class);
        class.by_score.remove(&entry);
        class.by_task_score.remove(&task_entry);
    }

    /// The zone's index, interning its name.
    fn zone(&mut self, name: &str) -> ZoneIx {
        if let Some(&zone) = self.zone_by_name.get(name) {
            return zone;
        }
        let zone = ZoneIx::try_from(self.zone_by_name.len()).expect("fewer than 2^32 zones");
        self.zone_by_name.insert(name.to_owned(), zone);
        zone
    }

    /// The class of cells like this one, created if there is none.
    fn class(&mut self, zone: ZoneIx, view: &CellView) -> ClassIx {
        let key = ClassKey {
            zone,
            total: view.total,
            attributes: Attributes::new(view),
        };
        if let Some(&class) = self.class_by_key.get(&key) {
            return class;
        }
        let class = Class {
            key: key.clone(),
            weights: Weights::new(view.total),
            by_score: BTreeSet::new(),
            by_task_score: BTreeSet::new(),
            most_free: Free::default(),
            exact: true,
        };
        let ix = match self.free_classes.pop() {
            Some(ix) => {
                self.classes[ix as usize] = Some(class);
                ix
            }
            None => {
                self.classes.push(Some(class));
                ClassIx::try_from(self.classes.len() - 1).expect("fewer than 2^32 classes")
            }
        };
        self.class_by_key.insert(key, ix);
        ix
    }

    /// Makes a class's `most_free` exact, looking at every member if it is not.
    pub(crate) fn refresh_most_free(&mut self, class_ix: ClassIx) -> Free {
        let class = self.class_ref(class_ix);
        if class.exact {
            return class.most_free;
        }
        let most_free = class
            .by_score
            .iter()
            .map(|entry| self.cell(entry.cell).free())
            .fold(Free::default(), Free::max);
        let class = self.class_mut(class_ix);
        class.most_free = most_free;
        class.exact = true;
        most_free
    }
}

impl Class {
    pub(crate) fn zone(&self) -> ZoneIx {
        self.key.zone
    }

    pub(crate) fn attributes(&self) -> &Attributes {
        &self.key.attributes
    }
}

impl CellState {
    /// What the cell has free; nothing, not less than nothing, when it is over-committed.
    pub(crate) fn free(&self) -> Free {
        let total = self.view.total;
        Free {
            memory_mb: total.memory_mb.saturating_sub(self.used.memory_mb),
            disk_mb: total.disk_mb.saturating_sub(self.used.disk_mb),
            containers: u64::from(total.containers).saturating_sub(self.used.containers),
        }
    }

    /// The score tasks are placed by: 1000 per task already on the cell comes first.
    pub(crate) fn task_score(&self) -> Score {
        self.score
            .saturating_add(u128::from(self.tasks).saturating_mul(LOCALITY))
    }

    /// The cell's entries in its class's two sets; `cix` is its own index.
    fn entries(&self, cix: CellIx) -> (Entry, Entry) {
        let entry = Entry {
            score: self.score,
            id: self.id.clone(),
            cell: cix,
            free: self.free(),
            instances: self.instances,
        };
        let task_entry = Entry {
            score: self.task_score(),
            ..entry.clone()
        };
        (entry, task_entry)
    }
}

impl Free {
    /// Diego's resource check: enough memory, enough disk, one container slot.
    pub(crate) fn fits(&self, work: &Work) -> bool {
        self.memory_mb >= work.memory_mb && self.disk_mb >= work.disk_mb && self.containers >= 1
    }

    pub(crate) fn max(self, other: Free) -> Free {
        Free {
            memory_mb: self.memory_mb.max(other.memory_mb),
            disk_mb: self.disk_mb.max(other.disk_mb),
            containers: self.containers.max(other.containers),
        }
    }
}

impl LrpCounts {
    fn zone_mut(&mut self, zone: ZoneIx) -> &mut u32 {
        let zone = zone as usize;
        if self.zones.len() <= zone {
            self.zones.resize(zone + 1, 0);
        }
        &mut self.zones[zone]
    }

    /// Instances in a zone.
    pub(crate) fn in_zone(&self, zone: ZoneIx) -> u32 {
        self.zones.get(zone as usize).copied().unwrap_or(0)
    }

    /// Records that a cell of a class went from holding `from` instances to `to`.
    fn relayer(&mut self, class: ClassIx, from: u32, to: u32) {
        if from == to {
            return;
        }
        let layers = self.layers.entry(class).or_default();
        if from > 0 {
            layers.cells[from as usize - 1] -= 1;
            layers.holders -= 1;
        }
        if to > 0 {
            if layers.cells.len() < to as usize {
                layers.cells.resize(to as usize, 0);
            }
            layers.cells[to as usize - 1] += 1;
            layers.holders += 1;
        }
        if layers.holders == 0 {
            self.layers.remove(&class);
        } else {
            while layers.cells.last() == Some(&0) {
                layers.cells.pop();
            }
        }
    }

    /// The fewest instances any cell of a class (of `members` cells) holds.
    pub(crate) fn fewest_in_class(&self, class: ClassIx, members: usize) -> u32 {
        match self.layers.get(&class) {
            Some(layers) if layers.holders as usize >= members => layers
                .cells
                .iter()
                .position(|&cells| cells > 0)
                .map_or(0, |n| n as u32 + 1),
            _ => 0,
        }
    }
}

/// Entries order by score, then by cell id: ties go to the id that sorts first. (The
/// index breaks no tie: ids are unique.)
impl Ord for Entry {
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        self.score
            .cmp(&other.score)
            .then_with(|| self.id.cmp(&other.id))
            .then_with(|| self.cell.cmp(&other.cell))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
