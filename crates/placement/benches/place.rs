//! The cost of one placement at 1,000 and 10,000 cells: `cargo bench -p placement`.
//!
//! Each case places a whole batch on a fresh clone of a cluster and reports the batch's
//! time and its throughput in placements per second; the time per placement is the
//! inverse of the throughput. The design goal is at most 10 us per placement at 10,000
//! cells.
//!
//! The cluster: cells in 10 zones, in two sizes, a seventh of them also offering the
//! `ssd` tag. The batch: LRPs of 100 instances each and one task per 20 instances, of
//! mixed memory and disk, ten placements per cell in all. Then the same on a cluster
//! that already holds that batch; few LRPs with nearly as many instances as cells
//! each; and cells that all differ in capacity, the index's worst case.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use model::{Name, Rootfs};
use placement::{Capacity, CellView, Snapshot, Work, WorkId, place};

const ZONES: usize = 10;
const INSTANCES: usize = 100;

fn name(value: String) -> Name {
    Name::parse("name", &value).expect("valid name")
}

fn cluster(cells: usize) -> Snapshot {
    cluster_of(cells, |i| if i % 2 == 0 { 32 * 1024 } else { 16 * 1024 })
}

/// Cells whose memory is `memory_mb(i)`.
fn cluster_of(cells: usize, memory_mb: impl Fn(usize) -> u64) -> Snapshot {
    let mut snapshot = Snapshot::new();
    for i in 0..cells {
        let large = i % 2 == 0;
        snapshot.upsert_cell(CellView {
            id: name(format!("cell-{i:05}")),
            zone: format!("z{}", i % ZONES),
            total: Capacity {
                memory_mb: memory_mb(i),
                disk_mb: if large { 128 * 1024 } else { 64 * 1024 },
                containers: 250,
            },
            rootfs_providers: vec!["host".into(), "docker".into()],
            placement_tags: Vec::new(),
            optional_placement_tags: if i % 7 == 3 {
                vec!["ssd".into()]
            } else {
                Vec::new()
            },
            volume_drivers: Vec::new(),
            evacuating: false,
        });
    }
    snapshot
}

/// `lrps` LRPs of `instances` instances each, and a task per 20 instances.
fn batch(lrps: usize, instances: usize, prefix: &str) -> Vec<Work> {
    let memory = [128, 256, 512, 1024];
    let mut work = Vec::new();
    for l in 0..lrps {
        let lrp = name(format!("{prefix}app-{l:04}"));
        let rootfs = if l % 3 == 0 {
            Rootfs::Docker(format!("registry.test/app-{l}"))
        } else {
            Rootfs::Preloaded("host".into())
        };
        for index in 0..instances {
            work.push(Work {
                id: WorkId::Lrp {
                    lrp: lrp.clone(),
                    index: index as u32,
                },
                memory_mb: memory[l % memory.len()],
                disk_mb: 1024,
                rootfs: rootfs.clone(),
                placement_tags: if l % 50 == 7 {
                    vec!["ssd".into()]
                } else {
                    Vec::new()
                },
                volume_drivers: Vec::new(),
            });
        }
    }
    for t in 0..lrps * instances / 20 {
        work.push(Work {
            id: WorkId::Task {
                id: name(format!("{prefix}task-{t:06}")),
            },
            memory_mb: memory[t % memory.len()],
            disk_mb: 512,
            rootfs: Rootfs::Preloaded("host".into()),
            placement_tags: Vec::new(),
            volume_drivers: Vec::new(),
        });
    }
    work
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("place");
    group.sample_size(10);
    for cells in [1_000, 10_000] {
        let snapshot = cluster(cells);
        // Ten placements per cell: 95 LRPs and 475 tasks per 1,000 cells.
        let work = batch(cells * 95 / 1_000, INSTANCES, "");
        let plan = place(&mut snapshot.clone(), &work);
        assert!(
            plan.unplaced.is_empty(),
            "the cluster has room for the batch"
        );
        group.throughput(Throughput::Elements(work.len() as u64));
        group.bench_function(format!("{cells}_cells/{}_placements", work.len()), |b| {
            b.iter_batched(
                || snapshot.clone(),
                |mut snapshot| {
                    let plan = place(&mut snapshot, &work);
                    // Returned, so that dropping them is not timed.
                    black_box((snapshot, plan))
                },
                BatchSize::LargeInput,
            )
        });

        // The same cluster already holding the batch above: place 10 more LRPs.
        let mut loaded = snapshot.clone();
        place(&mut loaded, &work);
        let more = batch(10, INSTANCES, "more-");
        group.throughput(Throughput::Elements(more.len() as u64));
        group.bench_function(
            format!("{cells}_cells_loaded/{}_placements", more.len()),
            |b| {
                b.iter_batched(
                    || loaded.clone(),
                    |mut loaded| {
                        let plan = place(&mut loaded, &more);
                        black_box((loaded, plan))
                    },
                    BatchSize::LargeInput,
                )
            },
        );
    }

    // Few LRPs with more instances than cells: 10 LRPs of 9,500 instances on 10,000
    // cells, so every LRP ends up with an instance on nearly every cell, and many
    // placements go to cells that already hold one.
    let snapshot = cluster(10_000);
    let work = batch(10, 9_500, "dense-");
    group.throughput(Throughput::Elements(work.len() as u64));
    group.bench_function(
        format!("10000_cells_dense/{}_placements", work.len()),
        |b| {
            b.iter_batched(
                || snapshot.clone(),
                |mut snapshot| {
                    let plan = place(&mut snapshot, &work);
                    black_box((snapshot, plan))
                },
                BatchSize::LargeInput,
            )
        },
    );

    // The worst case for the index: no two cells alike, so every cell is a class of
    // its own and a placement looks at every cell of its zones.
    let snapshot = cluster_of(10_000, |i| 16 * 1024 + i as u64);
    let work = batch(10, INSTANCES, "");
    group.throughput(Throughput::Elements(work.len() as u64));
    group.bench_function(
        format!("10000_distinct_cells/{}_placements", work.len()),
        |b| {
            b.iter_batched(
                || snapshot.clone(),
                |mut snapshot| {
                    let plan = place(&mut snapshot, &work);
                    black_box((snapshot, plan))
                },
                BatchSize::LargeInput,
            )
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
