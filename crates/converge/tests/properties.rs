//! Property tests of the converger's safety rules on random small worlds: every action
//! names a row and generation that exist; nothing ORDINARY is retired outside a fresh
//! domain; one pass reaches a fixpoint with exactly one ORDINARY row per wanted index;
//! no task can run twice; a SUSPECT row is kept until something replaces it; and the
//! output depends on the snapshot only, not on the order of its rows.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{DEFAULT_NOW, Store, World, instance, lrp, name, task};
use converge::Action;
use model::{Domain, Instance, InstanceState, Name, Presence, TaskState, Timestamp};
use proptest::prelude::*;
use proptest::sample::select;

const NOW: Timestamp = DEFAULT_NOW;

/// Ages that sit on or next to every time limit the converger knows.
const AGES: &[u64] = &[
    0, 1, 29_999, 30_000, 30_001, 59_999, 60_000, 119_999, 120_001, 480_000, 960_000, 1_800_000,
    1_800_001, 7_200_000,
];

const CELLS: &[&str] = &["c1", "c2", "c3", "c4"];
const DOMAINS: &[&str] = &["d1", "d2", "d3"];
/// LRP names; `l5` never has an LRP, so its rows are always orphans.
const LRPS: &[&str] = &["l1", "l2", "l3", "l4", "l5"];

fn age() -> impl Strategy<Value = u64> {
    select(AGES)
}

/// A domain's expiry: unknown (no row), fresh forever, expired just now, or fresh for a
/// minute more.
fn domain() -> impl Strategy<Value = Option<Option<Timestamp>>> {
    select(
        &[
            None,
            Some(None),
            Some(Some(NOW)),
            Some(Some(Timestamp(NOW.0 + 60_000))),
        ][..],
    )
}

/// The parts of an instance row a world varies.
#[derive(Debug, Clone)]
struct RowSeed {
    state: InstanceState,
    /// An index into `CELLS` plus one more cell, `c9`, that is never live.
    cell: Option<usize>,
    crash_count: u32,
    age: u64,
    generation: u64,
    domain: usize,
}

fn row_seed() -> impl Strategy<Value = RowSeed> {
    (
        select(
            &[
                InstanceState::Unclaimed,
                InstanceState::Claimed,
                InstanceState::Running,
                InstanceState::Crashed,
            ][..],
        ),
        proptest::option::of(0..=CELLS.len()),
        select(&[0u32, 1, 2, 3, 7, 8, 199, 200][..]),
        age(),
        1..10u64,
        0..DOMAINS.len(),
    )
        .prop_map(
            |(state, cell, crash_count, age, generation, domain)| RowSeed {
                state,
                cell,
                crash_count,
                age,
                generation,
                domain,
            },
        )
}

#[derive(Debug, Clone)]
struct TaskSeed {
    state: TaskState,
    cell: Option<usize>,
    created: u64,
    updated: u64,
    completed: u64,
    callback: bool,
    generation: u64,
}

fn task_seed() -> impl Strategy<Value = TaskSeed> {
    (
        select(
            &[
                TaskState::Pending,
                TaskState::Running,
                TaskState::Completed,
                TaskState::Resolving,
            ][..],
        ),
        proptest::option::of(0..=CELLS.len()),
        age(),
        age(),
        age(),
        any::<bool>(),
        1..10u64,
    )
        .prop_map(
            |(state, cell, created, updated, completed, callback, generation)| TaskSeed {
                state,
                cell,
                created,
                updated,
                completed,
                callback,
                generation,
            },
        )
}

fn cell_name(i: usize) -> &'static str {
    CELLS.get(i).copied().unwrap_or("c9")
}

/// A random small world whose rows obey the store's rules: unique keys, and only
/// CLAIMED or RUNNING rows (with a cell) outside ORDINARY presence.
fn world() -> impl Strategy<Value = World> {
    (
        proptest::collection::vec(any::<bool>(), CELLS.len()),
        proptest::collection::vec(domain(), DOMAINS.len()),
        proptest::collection::vec(proptest::option::of((0..5u32, 0..DOMAINS.len())), 4),
        proptest::collection::btree_map(
            (
                0..LRPS.len(),
                0..5u32,
                select(
                    &[
                        Presence::Ordinary,
                        Presence::Ordinary,
                        Presence::Suspect,
                        Presence::Evacuating,
                    ][..],
                ),
            ),
            row_seed(),
            0..24,
        ),
        proptest::collection::vec(proptest::option::of(task_seed()), 6),
    )
        .prop_map(|(live, domains, lrps, rows, tasks)| {
            let mut world = World::new(NOW);
            for (cell, live) in CELLS.iter().zip(live) {
                if live {
                    world.live_cells.insert(name(cell));
                }
            }
            for (d, expires) in DOMAINS.iter().zip(domains) {
                if let Some(expires_at) = expires {
                    world.domains.push(Domain {
                        name: name(d),
                        expires_at,
                    });
                }
            }
            for (l, spec) in LRPS.iter().zip(lrps) {
                if let Some((instances, d)) = spec {
                    world.lrps.push(lrp(l, instances, DOMAINS[d]));
                }
            }
            for ((l, index, presence), seed) in rows {
                let mut state = seed.state;
                let mut cell = seed.cell.map(cell_name);
                if presence != Presence::Ordinary {
                    if !matches!(state, InstanceState::Claimed | InstanceState::Running) {
                        state = InstanceState::Running;
                    }
                    cell = cell.or(Some("c1"));
                }
                match state {
                    InstanceState::Unclaimed => cell = None,
                    InstanceState::Claimed | InstanceState::Running => cell = cell.or(Some("c2")),
                    InstanceState::Crashed => {}
                }
                let mut row = instance(
                    LRPS[l],
                    index,
                    DOMAINS[seed.domain],
                    presence,
                    state,
                    cell,
                    Timestamp(NOW.0 - seed.age),
                );
                row.crash_count = seed.crash_count;
                row.generation = seed.generation;
                world.instances.push(row);
            }
            for (i, seed) in tasks.into_iter().enumerate() {
                let Some(seed) = seed else { continue };
                let mut t = task(&format!("t{i}"), seed.state, NOW);
                t.cell_id = seed.cell.map(|c| name(cell_name(c)));
                t.created_at = Timestamp(NOW.0 - seed.created);
                t.updated_at = Timestamp(NOW.0 - seed.updated.min(seed.created));
                if matches!(seed.state, TaskState::Completed | TaskState::Resolving) {
                    t.first_completed_at = Some(Timestamp(NOW.0 - seed.completed));
                }
                if seed.callback {
                    t.spec.completion_callback_url = Some("http://callback.test/done".into());
                }
                t.generation = seed.generation;
                world.tasks.push(t);
            }
            world
        })
}

/// A world with its rows in a random order.
fn shuffled(world: &World) -> impl Strategy<Value = World> + use<> {
    let base = world.clone();
    (
        Just(world.lrps.clone()).prop_shuffle(),
        Just(world.instances.clone()).prop_shuffle(),
        Just(world.tasks.clone()).prop_shuffle(),
        Just(world.domains.clone()).prop_shuffle(),
    )
        .prop_map(move |(lrps, instances, tasks, domains)| World {
            lrps,
            instances,
            tasks,
            domains,
            ..base.clone()
        })
}

fn is_fresh(world: &World, domain: &Name) -> bool {
    world
        .domains
        .iter()
        .any(|d| &d.name == domain && d.is_fresh(world.now))
}

fn find_row<'a>(
    world: &'a World,
    lrp: &Name,
    index: u32,
    presence: Presence,
) -> Option<&'a Instance> {
    world
        .instances
        .iter()
        .find(|r| &r.lrp == lrp && r.index == index && r.presence == presence)
}

fn on_live_cell(world: &World, row: &Instance) -> bool {
    row.key
        .as_ref()
        .is_some_and(|k| world.live_cells.contains(&k.cell_id))
}

/// Whether (lrp, index) is wanted, and the domain that decides its freshness.
fn wanted<'a>(world: &'a World, lrp: &Name, index: u32) -> (bool, Option<&'a Name>) {
    match world.lrps.iter().find(|l| &l.spec.name == lrp) {
        Some(l) => (index < l.spec.instances, Some(&l.spec.domain)),
        None => (false, None),
    }
}

/// (3): every action names a row (or its absence) as the input has it.
fn check_references(world: &World, actions: &[Action]) -> Result<(), TestCaseError> {
    let row_at = |lrp, index, presence, generation| {
        let row = find_row(world, lrp, index, presence);
        prop_assert!(
            row.is_some_and(|r| r.generation == generation),
            "no {presence} row {lrp}/{index}@{generation} in the input"
        );
        Ok(())
    };
    let task_at = |id: &Name, generation| {
        prop_assert!(
            world
                .tasks
                .iter()
                .any(|t| &t.id == id && t.generation == generation),
            "no task {id}@{generation} in the input"
        );
        Ok(())
    };
    for action in actions {
        match action {
            Action::PruneDomain { name } => prop_assert!(
                world.domains.iter().any(|d| &d.name == name) && !is_fresh(world, name),
                "{action}: no such expired domain"
            ),
            Action::CreateInstance { lrp, index, domain } => {
                let (is_wanted, lrp_domain) = wanted(world, lrp, *index);
                prop_assert!(is_wanted && lrp_domain == Some(domain), "{action}");
                prop_assert!(
                    find_row(world, lrp, *index, Presence::Ordinary).is_none(),
                    "{action}: the ordinary row exists"
                );
            }
            Action::Auction {
                lrp,
                index,
                generation,
                ..
            }
            | Action::MarkSuspect {
                lrp,
                index,
                generation,
            }
            | Action::Unclaim {
                lrp,
                index,
                generation,
            } => row_at(lrp, *index, Presence::Ordinary, *generation)?,
            Action::RetireInstance {
                lrp,
                index,
                presence,
                generation,
                ..
            }
            | Action::RemoveInstance {
                lrp,
                index,
                presence,
                generation,
                ..
            } => row_at(lrp, *index, *presence, *generation)?,
            Action::PromoteSuspect {
                lrp,
                index,
                suspect_generation,
                replacement,
            } => {
                row_at(lrp, *index, Presence::Suspect, *suspect_generation)?;
                match replacement {
                    Some((presence, generation)) => row_at(lrp, *index, *presence, *generation)?,
                    None => prop_assert!(
                        find_row(world, lrp, *index, Presence::Ordinary).is_none(),
                        "{action}: an ordinary row exists and is not named"
                    ),
                }
            }
            Action::FailTask { id, generation, .. }
            | Action::AuctionTask { id, generation }
            | Action::KickTask { id, generation }
            | Action::DeleteTask { id, generation }
            | Action::ResendCallback { id, generation } => task_at(id, *generation)?,
        }
    }
    Ok(())
}

/// (1): nothing ORDINARY is retired or removed unless its domain is fresh.
fn check_fresh_domains_only(world: &World, actions: &[Action]) -> Result<(), TestCaseError> {
    for action in actions {
        match action {
            Action::RetireInstance {
                lrp,
                index,
                presence,
                ..
            } => {
                let row = find_row(world, lrp, *index, *presence).expect("checked by (3)");
                let domain = wanted(world, lrp, *index).1.unwrap_or(&row.domain);
                prop_assert!(is_fresh(world, domain), "{action} in stale domain {domain}");
                prop_assert!(
                    !wanted(world, lrp, *index).0,
                    "{action}: the index is wanted"
                );
            }
            Action::RemoveInstance { presence, .. } => {
                prop_assert_ne!(*presence, Presence::Ordinary, "{}", action);
            }
            _ => {}
        }
    }
    Ok(())
}

/// (4): task actions only move tasks forward; none can start one again.
fn check_tasks(world: &World, actions: &[Action]) -> Result<(), TestCaseError> {
    let mut seen = BTreeSet::new();
    for action in actions {
        let (id, allowed): (&Name, &[TaskState]) = match action {
            Action::FailTask { id, .. } => (id, &[TaskState::Pending, TaskState::Running]),
            Action::AuctionTask { id, .. } => (id, &[TaskState::Pending]),
            Action::KickTask { id, .. } => (id, &[TaskState::Resolving]),
            Action::DeleteTask { id, .. } | Action::ResendCallback { id, .. } => {
                (id, &[TaskState::Completed])
            }
            _ => continue,
        };
        let task = world
            .tasks
            .iter()
            .find(|t| &t.id == id)
            .expect("checked by (3)");
        prop_assert!(
            allowed.contains(&task.state),
            "{action} on a {} task",
            task.state
        );
        prop_assert!(seen.insert(id.clone()), "two actions for task {id}");
    }
    Ok(())
}

/// (5): a SUSPECT row of a wanted index goes only once its replacement runs.
fn check_suspects_kept(world: &World, actions: &[Action]) -> Result<(), TestCaseError> {
    for action in actions {
        match action {
            Action::RemoveInstance {
                lrp,
                index,
                presence: Presence::Suspect,
                ..
            } if wanted(world, lrp, *index).0 => {
                let suspect =
                    find_row(world, lrp, *index, Presence::Suspect).expect("checked by (3)");
                let replacement = find_row(world, lrp, *index, Presence::Ordinary);
                let replacement_runs = replacement
                    .is_some_and(|r| r.state == InstanceState::Running && on_live_cell(world, r));
                prop_assert!(
                    replacement_runs,
                    "{action}: the replacement does not run (suspect on a live cell: {})",
                    on_live_cell(world, suspect)
                );
            }
            Action::PromoteSuspect { lrp, index, .. } => {
                let suspect =
                    find_row(world, lrp, *index, Presence::Suspect).expect("checked by (3)");
                prop_assert!(on_live_cell(world, suspect), "{action}: its cell is gone");
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_task_action(action: &Action) -> bool {
    matches!(
        action,
        Action::FailTask { .. }
            | Action::AuctionTask { .. }
            | Action::KickTask { .. }
            | Action::DeleteTask { .. }
            | Action::ResendCallback { .. }
    )
}

/// (1), (3), (4) and (5) on one pass.
fn check_safety(world: &World, actions: &[Action]) -> Result<(), TestCaseError> {
    check_references(world, actions)?;
    check_fresh_domains_only(world, actions)?;
    check_tasks(world, actions)?;
    check_suspects_kept(world, actions)
}

/// Applies `actions` to `world` as the shell would, through the store's checks.
fn apply(world: &World, actions: &[Action]) -> World {
    let mut store = Store::of(world);
    for action in actions {
        store.apply(action, world.now);
    }
    let mut next = world.clone();
    store.into_world(&mut next);
    next
}

/// (2): after one applied pass, every wanted index has its ORDINARY row, nothing
/// unwanted is left where the domain allows removing it, and the next pass has nothing
/// left to do.
fn check_fixpoint(world: &World, after: &World) -> Result<(), TestCaseError> {
    let mut ordinary: BTreeMap<(&Name, u32), usize> = BTreeMap::new();
    for row in &after.instances {
        if row.presence == Presence::Ordinary {
            *ordinary.entry((&row.lrp, row.index)).or_default() += 1;
        }
    }
    prop_assert!(
        ordinary.values().all(|n| *n == 1),
        "duplicate ordinary rows"
    );
    for lrp in &after.lrps {
        for index in 0..lrp.spec.instances {
            prop_assert!(
                ordinary.contains_key(&(&lrp.spec.name, index)),
                "{}/{index} has no ordinary row",
                lrp.spec.name
            );
        }
    }
    for row in &after.instances {
        let (is_wanted, lrp_domain) = wanted(after, &row.lrp, row.index);
        if !is_wanted && row.presence != Presence::Evacuating {
            let domain = lrp_domain.unwrap_or(&row.domain);
            prop_assert!(
                !is_fresh(world, domain),
                "unwanted {} row {}/{} kept in fresh domain {domain}",
                row.presence,
                row.lrp,
                row.index
            );
        }
    }
    // Instances settle in one pass. A task may take up to two more, as Diego's do: a
    // kicked resolver's task is deleted on the next pass if it completed long ago.
    let again = after.converge();
    check_safety(after, &again)?;
    prop_assert!(
        again.iter().all(is_task_action),
        "the second pass still acts on instances: {:?}",
        again.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    let third = apply(after, &again).converge();
    prop_assert!(
        third.is_empty(),
        "the third pass still acts: {:?}",
        third.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn actions_are_safe_and_reach_a_fixpoint(world in world()) {
        let actions = world.converge();
        check_safety(&world, &actions)?;
        let after = apply(&world, &actions);
        check_fixpoint(&world, &after)?;
        // (4) again, on the result: whatever was RUNNING or done stays out of PENDING
        // and RUNNING, so no task can start a second time.
        for task in &after.tasks {
            let before = world.tasks.iter().find(|t| t.id == task.id).expect("no task is made");
            if before.state != TaskState::Pending {
                prop_assert!(
                    task.state != TaskState::Pending
                        && (task.state != TaskState::Running || before.state == TaskState::Running),
                    "task {} went from {} to {}", task.id, before.state, task.state
                );
            }
        }
    }

    #[test]
    fn output_depends_on_the_snapshot_not_its_order(
        (world, other) in world().prop_flat_map(|w| (Just(w.clone()), shuffled(&w)))
    ) {
        let actions = world.converge();
        prop_assert_eq!(&actions, &world.converge());
        prop_assert_eq!(&actions, &other.converge());
    }
}
