//! The deterministic simulation over many seeds: the real control plane against
//! simulated cells with faults, checked on every tick (see `sim::world`).
//!
//! `CORRAL_SIM_SEED=N` replays one seed; `CORRAL_SIM_SEEDS=N` runs N seeds (default 24)
//! starting from a seed printed at the start (`CORRAL_SIM_FIRST_SEED` fixes it).

use sim::world::{self, WorldOptions};

fn runtime() -> tokio::runtime::Runtime {
    // One thread and no timers: the run depends on its seed alone.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a single-threaded runtime")
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn safety_and_liveness_hold_over_many_seeds() {
    let seeds: Vec<u64> = match env_u64("CORRAL_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("CORRAL_SIM_FIRST_SEED").unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(1)
            });
            let count = env_u64("CORRAL_SIM_SEEDS").unwrap_or(24);
            (first..first + count).collect()
        }
    };
    println!("simulating seeds {}..={}", seeds[0], seeds[seeds.len() - 1]);
    let rt = runtime();
    let mut totals = world::WorldStats::default();
    for seed in seeds {
        match rt.block_on(world::run(WorldOptions::new(seed))) {
            Ok(stats) => {
                totals.ticks += stats.ticks;
                totals.work_items += stats.work_items;
                totals.starts += stats.starts;
                totals.crashes += stats.crashes;
                totals.kills += stats.kills;
                totals.tasks_run += stats.tasks_run;
                totals.user_actions += stats.user_actions;
                totals.drains += stats.drains;
                totals.handoffs += stats.handoffs;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    println!("{totals:?}");
    // The runs must have exercised what they check.
    assert!(
        totals.starts > 0
            && totals.crashes > 0
            && totals.kills > 0
            && totals.tasks_run > 0
            && totals.drains > 0
            && totals.handoffs > 0,
        "{totals:?}"
    );
}

#[test]
fn a_seed_replays_exactly() {
    let rt = runtime();
    let mut options = WorldOptions::new(7);
    options.active_ticks = 400;
    options.quiet_ticks = 400;
    let first = rt
        .block_on(world::run(options.clone()))
        .expect("seed 7 holds");
    let second = rt.block_on(world::run(options)).expect("seed 7 holds");
    assert_eq!(first, second);
}
