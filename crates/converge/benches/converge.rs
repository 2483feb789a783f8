//! Benchmark of one convergence pass at the design's scale: 10,000 LRPs of 100 instances
//! (1,000,000 instance rows) on 10,000 cells. Run with `cargo bench -p converge`.
//!
//! Three snapshots: a steady cluster where everything runs (no action is due, the common
//! case); the same with its instance rows scattered rather than grouped by LRP; and a
//! troubled one where 1% of the cells vanished and some instances crashed, wait
//! unplaced, or were scaled away, so most kinds of decision are exercised.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use model::{
    Action as RunAction, Checks, CrashPolicy, Domain, Instance, InstanceKey, InstanceState, Lrp,
    LrpSpec, Name, Resources, Rootfs, Routes, Task, TaskSpec, TaskState, Timestamp,
};

const LRPS: usize = 10_000;
const INSTANCES: u32 = 100;
const CELLS: usize = 10_000;
const TASKS: usize = 10_000;
const NOW: Timestamp = Timestamp(10_000_000);

struct Snapshot {
    lrps: Vec<Lrp>,
    instances: Vec<Instance>,
    tasks: Vec<Task>,
    live_cells: BTreeSet<Name>,
    domains: Vec<Domain>,
}

fn name(field: &str, value: String) -> Name {
    Name::parse(field, &value).expect("benchmark names are well formed")
}

fn snapshot(troubled: bool) -> Snapshot {
    let domain = name("domain", "cf".into());
    let cells: Vec<Name> = (0..CELLS)
        .map(|c| name("cell", format!("cell-{c}")))
        .collect();
    // In the troubled cluster every hundredth cell has vanished.
    let live_cells = cells
        .iter()
        .enumerate()
        .filter(|(c, _)| !troubled || c % 100 != 0)
        .map(|(_, cell)| cell.clone())
        .collect();
    let mut lrps = Vec::with_capacity(LRPS);
    let mut instances = Vec::with_capacity(LRPS * INSTANCES as usize);
    for l in 0..LRPS {
        let lrp_name = name("lrp", format!("lrp-{l}"));
        // Every hundredth LRP was scaled down from 100 to 90 in the troubled cluster.
        let wanted = if troubled && l % 100 == 1 {
            90
        } else {
            INSTANCES
        };
        lrps.push(Lrp {
            spec: LrpSpec {
                image_credentials: None,
                name: lrp_name.clone(),
                domain: domain.clone(),
                rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
                instances: wanted,
                resources: Resources::default(),
                setup: None,
                action: RunAction::run("sleep", ["1000"]),
                env: Vec::new(),
                ports: vec![8080],
                checks: Checks::default(),
                routes: Routes::default(),
                placement_tags: Vec::new(),
                crash_policy: CrashPolicy::default(),
                annotation: String::new(),
            },
            generation: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
        });
        for index in 0..INSTANCES {
            let n = l * INSTANCES as usize + index as usize;
            let mut instance =
                Instance::unclaimed(lrp_name.clone(), index, domain.clone(), Timestamp(0));
            instance.generation = 3;
            instance.state = InstanceState::Running;
            instance.key = Some(InstanceKey {
                instance_id: format!("i-{n}"),
                cell_id: cells[n % CELLS].clone(),
            });
            if troubled {
                match n % 100 {
                    7 => {
                        instance.state = InstanceState::Crashed;
                        instance.crash_count = (n % 10) as u32;
                        instance.since = Timestamp(NOW.0 - (n % 7) as u64 * 60_000);
                    }
                    13 => {
                        instance.state = InstanceState::Unclaimed;
                        instance.key = None;
                    }
                    // Every hundredth LRP lost one instance altogether.
                    21 if l % 100 == 2 => continue,
                    _ => {}
                }
            }
            instances.push(instance);
        }
    }
    let tasks = (0..TASKS)
        .map(|t| {
            let state = if troubled {
                [
                    TaskState::Pending,
                    TaskState::Running,
                    TaskState::Completed,
                    TaskState::Resolving,
                ][t % 4]
            } else {
                TaskState::Running
            };
            Task {
                id: name("task", format!("task-{t}")),
                spec: TaskSpec {
                    image_credentials: None,
                    domain: domain.clone(),
                    rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
                    resources: Resources::default(),
                    action: RunAction::run("true", Vec::<String>::new()),
                    env: Vec::new(),
                    result_file: None,
                    completion_callback_url: Some("http://example.test/done".into()),
                    placement_tags: Vec::new(),
                    annotation: String::new(),
                },
                state,
                cell_id: Some(cells[(t * 7) % CELLS].clone()),
                result: None,
                failed: false,
                failure_reason: None,
                rejection_count: 0,
                rejection_reason: None,
                created_at: Timestamp(NOW.0 - (t as u64 % 60) * 60_000),
                updated_at: Timestamp(NOW.0 - (t as u64 % 5) * 20_000),
                first_completed_at: Some(Timestamp(NOW.0 - (t as u64 % 5) * 40_000)),
                generation: 2,
            }
        })
        .collect();
    Snapshot {
        lrps,
        instances,
        tasks,
        live_cells,
        domains: vec![Domain {
            name: domain,
            expires_at: None,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let config = converge::Config::default();
    let mut group = c.benchmark_group("converge_1m_instances_10k_cells");
    group.sample_size(10);
    for (label, troubled, scattered) in [
        ("steady", false, false),
        ("steady_scattered", false, true),
        ("troubled", true, false),
    ] {
        let mut s = snapshot(troubled);
        if scattered {
            // Rows in no particular order, as a store without an ORDER BY may return
            // them: a fixed stride coprime to 10^6 spreads each LRP's rows across the
            // whole slice.
            let n = s.instances.len();
            s.instances = (0..n)
                .map(|i| s.instances[(i * 7_919) % n].clone())
                .collect();
        }
        let input = converge::Input {
            lrps: &s.lrps,
            instances: &s.instances,
            tasks: &s.tasks,
            live_cells: &s.live_cells,
            domains: &s.domains,
            now: NOW,
            config: &config,
        };
        let actions = converge::converge(&input).len();
        eprintln!(
            "{label}: {} instances, {} tasks, {actions} actions per pass",
            s.instances.len(),
            s.tasks.len()
        );
        group.bench_function(label, |b| b.iter(|| converge::converge(black_box(&input))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
