//! The pure placement core alone: `placement::place` over a snapshot of the same cells,
//! built as the scheduler builds it (one `CellView` per cell presence), on the same
//! work in the same order and batch size, without a store, HTTP or cells.

use std::time::{Duration, Instant};

use model::{Cell, Lrp};
use placement::{CellView, Snapshot, Work};

/// The scheduler's most work per batch (`MAX_BATCH` in `server::scheduler`).
pub const BATCH: usize = 20_000;

#[derive(Debug, Clone, Copy, Default)]
pub struct PureResult {
    pub placed: u64,
    pub unplaced: u64,
    /// Time inside `place` only.
    pub took: Duration,
}

impl PureResult {
    pub fn us_per_placement(&self) -> f64 {
        self.took.as_secs_f64() * 1e6 / (self.placed + self.unplaced).max(1) as f64
    }
}

/// Places every instance of `lrps` on `cells`, in the scheduler's order (by LRP name,
/// then index) and batches.
pub fn place_all(cells: &[Cell], lrps: &[Lrp]) -> PureResult {
    let mut snapshot = Snapshot::new();
    for cell in cells {
        snapshot.upsert_cell(CellView::from(cell));
    }
    let mut ordered: Vec<&Lrp> = lrps.iter().collect();
    ordered.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut work = ordered
        .iter()
        .flat_map(|lrp| (0..lrp.spec.instances).map(|index| Work::instance(&lrp.spec, index)));
    let mut result = PureResult::default();
    loop {
        let batch: Vec<Work> = work.by_ref().take(BATCH).collect();
        if batch.is_empty() {
            break;
        }
        let started = Instant::now();
        let plan = placement::place(&mut snapshot, &batch);
        result.took += started.elapsed();
        result.placed += plan.placed.len() as u64;
        result.unplaced += plan.unplaced.len() as u64;
    }
    result
}

#[cfg(test)]
mod tests {
    use model::{Action, CellCapacity, LrpSpec, Name};

    use super::*;

    #[test]
    fn everything_that_fits_is_placed() {
        let cells: Vec<Cell> = sim::SimOptions {
            capacity: CellCapacity {
                memory_mb: 1 << 20,
                disk_mb: 1 << 24,
                containers: 50,
            },
            ..sim::SimOptions::new("http://127.0.0.1:1", 4)
        }
        .cells("http://127.0.0.1:2")
        .expect("cells");
        let create = api::LrpCreate {
            image_credentials: None,
            name: "web".into(),
            domain: None,
            rootfs: None,
            instances: 150,
            resources: Default::default(),
            setup: None,
            action: Some(Action::run("sleep", ["1"])),
            env: vec![],
            ports: vec![],
            checks: None,
            routes: None,
            placement_tags: vec![],
            crash_policy: None,
            annotation: String::new(),
        };
        let spec: LrpSpec = create.into_spec().expect("a valid LRP");
        assert_eq!(spec.name, Name::parse("name", "web").expect("name"));
        let lrp = Lrp {
            spec,
            generation: 1,
            created_at: model::Timestamp(0),
            updated_at: model::Timestamp(0),
        };
        let result = place_all(&cells, &[lrp]);
        assert_eq!((result.placed, result.unplaced), (150, 0));
        assert!(result.us_per_placement() > 0.0);
    }
}
