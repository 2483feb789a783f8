//! Properties of the table: however the changes reach it, it ends where a rebuild from
//! the final state does.
//!
//! A model store plays random operations (LRPs created, changed and removed with their
//! instances; instance rows written and removed) and records each as the event the
//! real store would append: sequence numbers in commit order, generations from 1 per
//! row, starting again when a row is made anew.

mod common;

use std::collections::BTreeMap;

use model::{InstanceState, Name, Presence};
use proptest::prelude::*;
use routes::{Change, Table};

const LRPS: [&str; 3] = ["a", "b", "c"];
const ROUTES: [&[(&str, u16)]; 4] = [
    &[("web.test", 8080)],
    &[("web.test", 8080), ("*.apps.test", 9000)],
    &[("other.test", 9000)],
    &[],
];
const TCP: [&[(u16, u16)]; 3] = [&[], &[(5000, 8080)], &[(5000, 9000), (6000, 8080)]];

#[derive(Debug, Clone)]
enum Op {
    PutLrp {
        lrp: usize,
        routes: usize,
        tcp: usize,
    },
    RemoveLrp {
        lrp: usize,
    },
    PutInstance {
        lrp: usize,
        index: u32,
        presence: Presence,
        state: InstanceState,
        address: usize,
        mapped: bool,
        routable: bool,
    },
    RemoveInstance {
        lrp: usize,
        index: u32,
        presence: Presence,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let lrp = 0..LRPS.len();
    let presence = prop_oneof![
        Just(Presence::Ordinary),
        Just(Presence::Evacuating),
        Just(Presence::Suspect)
    ];
    let state = prop_oneof![
        Just(InstanceState::Unclaimed),
        Just(InstanceState::Claimed),
        Just(InstanceState::Running),
        Just(InstanceState::Running),
        Just(InstanceState::Crashed),
    ];
    prop_oneof![
        2 => (lrp.clone(), 0..ROUTES.len(), 0..TCP.len())
            .prop_map(|(lrp, routes, tcp)| Op::PutLrp { lrp, routes, tcp }),
        1 => lrp.clone().prop_map(|lrp| Op::RemoveLrp { lrp }),
        6 => (lrp.clone(), 0..3u32, presence.clone(), state, 0..2usize, any::<bool>(), any::<bool>())
            .prop_map(|(lrp, index, presence, state, address, mapped, routable)| Op::PutInstance {
                lrp, index, presence, state, address, mapped, routable,
            }),
        2 => (lrp, 0..3u32, presence)
            .prop_map(|(lrp, index, presence)| Op::RemoveInstance { lrp, index, presence }),
    ]
}

/// The model store's rows.
#[derive(Debug, Clone, Default)]
struct Store {
    lrps: BTreeMap<Name, model::Lrp>,
    instances: BTreeMap<(Name, u32, Presence), model::Instance>,
}

/// Every event, and the store after each (`states[seq]`; `states[0]` is empty).
#[derive(Debug)]
struct History {
    events: Vec<(u64, Change)>,
    states: Vec<Store>,
}

fn play(ops: &[Op]) -> History {
    let mut store = Store::default();
    let mut history = History {
        events: Vec::new(),
        states: vec![store.clone()],
    };
    let mut record = |store: &Store, change: Change| {
        let seq = history.events.len() as u64 + 1;
        history.events.push((seq, change));
        history.states.push(store.clone());
    };
    for op in ops {
        match *op {
            Op::PutLrp { lrp, routes, tcp } => {
                let name = common::name(LRPS[lrp]);
                let generation = store.lrps.get(&name).map_or(1, |l| l.generation + 1);
                let row = common::lrp(LRPS[lrp], ROUTES[routes], TCP[tcp], generation);
                store.lrps.insert(name, row.clone());
                record(&store, Change::LrpUpserted(Box::new(row)));
            }
            Op::RemoveLrp { lrp } => {
                let name = common::name(LRPS[lrp]);
                if !store.lrps.contains_key(&name) {
                    continue;
                }
                // As the server does: the instances first, in the same commit.
                let keys: Vec<_> = store
                    .instances
                    .keys()
                    .filter(|(l, _, _)| *l == name)
                    .cloned()
                    .collect();
                for (lrp, index, presence) in keys {
                    store.instances.remove(&(lrp.clone(), index, presence));
                    record(
                        &store,
                        Change::InstanceRemoved {
                            lrp,
                            index,
                            presence,
                        },
                    );
                }
                store.lrps.remove(&name);
                record(&store, Change::LrpRemoved { name });
            }
            Op::PutInstance {
                lrp,
                index,
                presence,
                state,
                address,
                mapped,
                routable,
            } => {
                let key = (common::name(LRPS[lrp]), index, presence);
                // Instance rows exist only beside their LRP: the server makes them with
                // it and removes them with it.
                if !store.lrps.contains_key(&key.0) {
                    continue;
                }
                let generation = store.instances.get(&key).map_or(1, |i| i.generation + 1);
                let address = ["10.0.0.1", "10.0.0.2"][address];
                let ports: &[(u16, u16)] = if mapped {
                    &[(8080, 61000), (9000, 61001)]
                } else {
                    &[(8080, 61002)]
                };
                let placed = state != InstanceState::Unclaimed;
                let row = common::instance(
                    LRPS[lrp],
                    index,
                    presence,
                    state,
                    placed.then_some(address),
                    if placed { ports } else { &[] },
                    routable,
                    generation,
                );
                store.instances.insert(key, row.clone());
                record(&store, Change::InstanceUpserted(row));
            }
            Op::RemoveInstance {
                lrp,
                index,
                presence,
            } => {
                let key = (common::name(LRPS[lrp]), index, presence);
                if store.instances.remove(&key).is_none() {
                    continue;
                }
                record(
                    &store,
                    Change::InstanceRemoved {
                        lrp: key.0,
                        index,
                        presence,
                    },
                );
            }
        }
    }
    history
}

/// The table's rows and routing, comparable.
fn state(table: &Table) -> (Vec<model::Lrp>, Vec<model::Instance>, String) {
    let mut lrps: Vec<model::Lrp> = table.lrps().cloned().collect();
    lrps.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut instances: Vec<model::Instance> = table.instances().cloned().collect();
    instances.sort_by(|a, b| (&a.lrp, a.index, a.presence).cmp(&(&b.lrp, b.index, b.presence)));
    (lrps, instances, common::render(table.routing()))
}

fn rebuilt(store: &Store) -> Table {
    Table::rebuild(
        store.lrps.values().cloned(),
        store.instances.values().cloned(),
    )
}

/// Where a point given as a fraction falls in `lo..=hi`.
fn between(lo: usize, hi: usize, at: f64) -> usize {
    lo + ((hi - lo) as f64 * at).round() as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The router's resync: subscribe at `subscribed`, list the LRPs at some later
    /// point and each LRP's instances later still (one request each), then apply every
    /// event after the subscription in order, some of them delivered twice.
    #[test]
    fn a_listing_then_the_stream_ends_at_the_final_state(
        ops in prop::collection::vec(op(), 0..40),
        subscribed in 0.0..=1.0f64,
        listed in 0.0..=1.0f64,
        instances_listed in prop::collection::vec(0.0..=1.0f64, LRPS.len()),
        repeats in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..8),
    ) {
        let history = play(&ops);
        let n = history.events.len();
        let subscribed = between(0, n, subscribed);
        let lrps_at = between(subscribed, n, listed);
        let lrps: Vec<model::Lrp> = history.states[lrps_at].lrps.values().cloned().collect();
        let mut instances = Vec::new();
        for (i, lrp) in lrps.iter().enumerate() {
            let at = between(lrps_at, n, instances_listed[i % instances_listed.len()]);
            let state = &history.states[at];
            // An LRP removed by then answers 404: no instances.
            if state.lrps.contains_key(&lrp.spec.name) {
                instances.extend(
                    state.instances.values().filter(|i| i.lrp == lrp.spec.name).cloned(),
                );
            }
        }
        let mut table = Table::rebuild(lrps, instances);
        let delivered: Vec<&(u64, Change)> = history.events[subscribed..].iter().collect();
        for (i, (seq, change)) in delivered.iter().enumerate() {
            table.apply(*seq, change.clone());
            for (after, which) in &repeats {
                if after.index(delivered.len()) == i {
                    let (seq, change) = delivered[which.index(i + 1)];
                    table.apply(*seq, change.clone());
                }
            }
        }
        let expected = rebuilt(history.states.last().expect("the empty state at least"));
        prop_assert_eq!(state(&table), state(&expected));
    }

    /// The same without repeats, forgetting tombstones at random points as the router
    /// does after each batch: in order, they are never needed.
    #[test]
    fn tombstones_are_not_needed_in_order(
        ops in prop::collection::vec(op(), 0..40),
        subscribed in 0.0..=1.0f64,
        listed in 0.0..=1.0f64,
        forget in prop::collection::vec(any::<bool>(), 40..41),
    ) {
        let history = play(&ops);
        let n = history.events.len();
        let subscribed = between(0, n, subscribed);
        let at = between(subscribed, n, listed);
        let mut table = rebuilt(&history.states[at]);
        for (i, (seq, change)) in history.events[subscribed..].iter().enumerate() {
            table.apply(*seq, change.clone());
            if forget[i % forget.len()] {
                table.forget_removed();
            }
        }
        let expected = rebuilt(history.states.last().expect("the empty state at least"));
        prop_assert_eq!(state(&table), state(&expected));
    }

    /// From an empty table, every event in any order, some twice: the newest change of
    /// each row wins.
    #[test]
    fn events_in_any_order_end_at_the_final_state(
        ops in prop::collection::vec(op(), 0..40),
        order in prop::collection::vec(any::<prop::sample::Index>(), 0..80),
    ) {
        let history = play(&ops);
        let mut events = history.events.clone();
        // A permutation from the indices, then repeats of some.
        let mut shuffled = Vec::new();
        for index in &order {
            if events.is_empty() {
                break;
            }
            shuffled.push(events.remove(index.index(events.len())));
        }
        shuffled.extend(events);
        let repeats: Vec<(u64, Change)> = order
            .iter()
            .take(5)
            .filter(|_| !shuffled.is_empty())
            .map(|index| shuffled[index.index(shuffled.len())].clone())
            .collect();
        let mut table = Table::new();
        for (seq, change) in shuffled.into_iter().chain(repeats) {
            table.apply(seq, change);
        }
        let expected = rebuilt(history.states.last().expect("the empty state at least"));
        prop_assert_eq!(state(&table), state(&expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Without removals (so no row is made anew and generations only grow), no step of
    /// the resync goes back: after each event, every row is the store's row at that
    /// event or at the moment it was listed, whichever is later. Events older than a
    /// listed row never show.
    #[test]
    fn a_listed_row_never_goes_back(
        ops in prop::collection::vec(op(), 0..40),
        subscribed in 0.0..=1.0f64,
        listed in 0.0..=1.0f64,
        instances_listed in prop::collection::vec(0.0..=1.0f64, LRPS.len()),
    ) {
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| matches!(op, Op::PutLrp { .. } | Op::PutInstance { .. }))
            .collect();
        let history = play(&ops);
        let n = history.events.len();
        let subscribed = between(0, n, subscribed);
        let lrps_at = between(subscribed, n, listed);
        let mut listed_at: BTreeMap<String, usize> = BTreeMap::new();
        let lrps: Vec<model::Lrp> = history.states[lrps_at].lrps.values().cloned().collect();
        let mut instances = Vec::new();
        for (i, lrp) in lrps.iter().enumerate() {
            listed_at.insert(format!("lrp {}", lrp.spec.name), lrps_at);
            let at = between(lrps_at, n, instances_listed[i]);
            for instance in history.states[at].instances.values() {
                if instance.lrp == lrp.spec.name {
                    listed_at.insert(instance_key(instance), at);
                    instances.push(instance.clone());
                }
            }
        }
        let mut table = Table::rebuild(lrps, instances);
        for (seq, change) in &history.events[subscribed..] {
            table.apply(*seq, change.clone());
            let now = *seq as usize;
            for lrp in table.lrps() {
                let at = listed_at.get(&format!("lrp {}", lrp.spec.name)).copied().unwrap_or(0);
                prop_assert_eq!(Some(lrp), history.states[now.max(at)].lrps.get(&lrp.spec.name));
            }
            for instance in table.instances() {
                let at = listed_at.get(&instance_key(instance)).copied().unwrap_or(0);
                let key = (instance.lrp.clone(), instance.index, instance.presence);
                prop_assert_eq!(Some(instance), history.states[now.max(at)].instances.get(&key));
            }
        }
    }
}

fn instance_key(instance: &model::Instance) -> String {
    format!("{}/{}/{}", instance.lrp, instance.index, instance.presence)
}
