//! Property tests: random cells, work and events. The indexed snapshot gives the same
//! plans and usage as the naive scan, no placement takes more than a cell has free, and
//! every placement passes the filters.

use model::{Name, Rootfs};
use proptest::prelude::*;
use proptest::sample::select;

use super::fixture::{Auction, print_plan};
use super::reference::{Naive, PASS, stage};
use crate::{Capacity, CellView, Snapshot, Work, WorkId};

#[derive(Debug, Clone)]
enum Op {
    Upsert(CellView),
    RemoveCell(usize),
    Place(Vec<Work>),
    /// Some work placed earlier leaves its cell.
    Remove(usize),
    Started(usize),
}

const CELLS: usize = 8;

fn cell_name(i: usize) -> Name {
    Name::parse("cell", &format!("c{i}")).expect("valid")
}

fn subset(values: &'static [&'static str], weight: f64) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(prop::bool::weighted(weight), values.len()).prop_map(move |picks| {
        values
            .iter()
            .zip(picks)
            .filter(|(_, pick)| *pick)
            .map(|(v, _)| (*v).to_owned())
            .collect()
    })
}

fn cell() -> impl Strategy<Value = CellView> {
    (
        0..CELLS,
        select(vec!["z1", "z2", "z3"]),
        select(vec![0u64, 256, 512, 1000, 1024, 3000]),
        select(vec![0u64, 300, 1024]),
        select(vec![0u32, 1, 2, 3, 5, 8]),
        subset(&["host", "busybox", "docker", "oci"], 0.7),
        subset(&["gpu", "ssd"], 0.15),
        subset(&["gpu", "ssd", "fast"], 0.3),
        subset(&["nfs", "ceph"], 0.4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                i,
                zone,
                memory_mb,
                disk_mb,
                containers,
                providers,
                tags,
                optional,
                drivers,
                evacuating,
            )| {
                CellView {
                    id: cell_name(i),
                    zone: zone.to_owned(),
                    total: Capacity {
                        memory_mb,
                        disk_mb,
                        containers,
                    },
                    rootfs_providers: providers,
                    placement_tags: tags,
                    optional_placement_tags: optional,
                    volume_drivers: drivers,
                    evacuating,
                }
            },
        )
}

fn work() -> impl Strategy<Value = Work> {
    let id = prop_oneof![
        3 => (select(vec!["a", "b", "c"]), 0u32..5).prop_map(|(lrp, index)| WorkId::Lrp {
            lrp: Name::parse("lrp", lrp).expect("valid"),
            index,
        }),
        1 => (0..10).prop_map(|i| WorkId::Task {
            id: Name::parse("task", &format!("t{i}")).expect("valid"),
        }),
    ];
    (
        id,
        select(vec![0u64, 64, 128, 256, 512]),
        select(vec![0u64, 100, 300]),
        select(vec![
            "preloaded:host",
            "preloaded:host",
            "preloaded:busybox",
            "preloaded:cflinuxfs4",
            "docker://r/x",
            "oci:/p",
        ]),
        subset(&["gpu", "ssd", "fast"], 0.1),
        subset(&["nfs", "ceph"], 0.1),
    )
        .prop_map(|(id, memory_mb, disk_mb, rootfs, tags, drivers)| Work {
            id,
            memory_mb,
            disk_mb,
            rootfs: Rootfs::parse("rootfs", rootfs).expect("valid"),
            placement_tags: tags,
            volume_drivers: drivers,
        })
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        2 => cell().prop_map(Op::Upsert),
        1 => (0..CELLS).prop_map(Op::RemoveCell),
        4 => proptest::collection::vec(work(), 1..25).prop_map(Op::Place),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => (0..CELLS).prop_map(Op::Started),
    ];
    (
        proptest::collection::vec(cell().prop_map(Op::Upsert), 1..CELLS),
        proptest::collection::vec(op, 1..30),
    )
        .prop_map(|(mut cells, rest)| {
            cells.extend(rest);
            cells
        })
}

/// Work placed so far: the cell, the work, and whether it is still starting.
type Placed = Vec<(Name, Work, bool)>;

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut snapshot = Snapshot::new();
    let mut naive = Naive::default();
    let mut placed: Placed = Vec::new();
    for op in ops {
        match op {
            Op::Upsert(view) => {
                snapshot.upsert_cell(view.clone());
                naive.upsert_cell(view.clone());
            }
            Op::RemoveCell(i) => {
                let id = cell_name(*i);
                Auction::remove_cell(&mut snapshot, &id);
                naive.remove_cell(&id);
                placed.retain(|(cell, _, _)| *cell != id);
            }
            Op::Place(work) => {
                let before: Vec<_> = (0..CELLS).map(|i| snapshot.usage(&cell_name(i))).collect();
                // A dry run on a clone gives the same plan and leaves the clone's
                // original alone.
                let dry = crate::place(&mut snapshot.clone(), work);
                let plan = crate::place(&mut snapshot, work);
                let expected = naive.place(work);
                prop_assert_eq!(print_plan(&plan), print_plan(&expected));
                prop_assert_eq!(&plan, &dry);
                prop_assert_eq!(plan.placed.len() + plan.unplaced.len(), work.len());
                for (i, before) in before.iter().enumerate() {
                    let id = cell_name(i);
                    let mine: Vec<&Work> = plan
                        .placed
                        .iter()
                        .filter(|p| p.cell == id)
                        .map(|p| &p.work)
                        .collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let before = before.expect("work goes only to cells that exist");
                    let view = snapshot.cell_view(&id).expect("exists");
                    for work in &mine {
                        prop_assert_eq!(stage(view, work), PASS, "{} on {}", work.id, id);
                    }
                    let free = |total: u64, used: u64| total.saturating_sub(used);
                    let (total, used) = (before.total, before.used);
                    prop_assert!(
                        mine.iter().map(|w| w.memory_mb).sum::<u64>()
                            <= free(total.memory_mb, used.memory_mb)
                    );
                    prop_assert!(
                        mine.iter().map(|w| w.disk_mb).sum::<u64>()
                            <= free(total.disk_mb, used.disk_mb)
                    );
                    prop_assert!(
                        mine.len() as u64 <= free(total.containers.into(), used.containers.into())
                    );
                }
                for placement in plan.placed {
                    placed.push((placement.cell, placement.work, true));
                }
            }
            Op::Remove(i) => {
                if !placed.is_empty() {
                    let (cell, work, starting) = placed.remove(i % placed.len());
                    snapshot.remove(&cell, &work, starting);
                    naive.remove(&cell, &work, starting);
                }
            }
            Op::Started(i) => {
                let id = cell_name(*i);
                if let Some(entry) = placed
                    .iter_mut()
                    .find(|(cell, _, starting)| *cell == id && *starting)
                {
                    entry.2 = false;
                }
                snapshot.started(&id);
                naive.started(&id);
            }
        }
        for i in 0..CELLS {
            let id = cell_name(i);
            prop_assert_eq!(snapshot.usage(&id), naive.usage(&id), "usage of {}", id);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn index_agrees_with_a_naive_scan(ops in ops()) {
        run(&ops)?;
    }
}
