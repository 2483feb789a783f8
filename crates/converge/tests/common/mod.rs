//! Test fixtures for the converger: a snapshot ("world") written as a few lines of text,
//! builders for its rows, and a reference `apply` that plays actions onto a world the
//! way the converger shell would.
//!
//! The fixture language, one row per line (`#` starts a comment):
//!
//! ```text
//! now 10h                          # the pass's instant (default 10h)
//! cells c1 c2                      # live cells
//! domain cf                        # fresh forever; `expires_in=5s` expires at now+5s
//! lrp web 3 cf                     # name, instances, domain; optional
//!                                  #   immediate=N max_restarts=N (crash policy)
//! web/0 running@c1 gen=4 age=1m    # lrp/index [suspect|evacuating] state[@cell]
//!                                  #   gen=G age=A (since = now - A) crashes=N domain=D
//! task t1 pending created=31m updated=1m gen=2   # ages again; `completed=A` sets
//!                                  #   first_completed_at, `callback` a callback URL,
//!                                  #   `running@c1` the cell
//! ```
//!
//! Durations are `<n>ms`, `<n>s`, `<n>m`, `<n>h` or a plain number of milliseconds.

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use converge::{Action, Config, Input};
use model::{
    Action as RunAction, Checks, CrashPolicy, Domain, Generation, Instance, InstanceKey,
    InstanceState, Lrp, LrpSpec, Name, Presence, Resources, Rootfs, Routes, Task, TaskSpec,
    TaskState, Timestamp,
};

/// Everything one convergence pass looks at.
#[derive(Debug, Clone)]
pub struct World {
    pub lrps: Vec<Lrp>,
    pub instances: Vec<Instance>,
    pub tasks: Vec<Task>,
    pub live_cells: BTreeSet<Name>,
    pub domains: Vec<Domain>,
    pub now: Timestamp,
    pub config: Config,
}

pub const DEFAULT_NOW: Timestamp = Timestamp(10 * 3_600_000);

impl World {
    pub fn new(now: Timestamp) -> World {
        World {
            lrps: Vec::new(),
            instances: Vec::new(),
            tasks: Vec::new(),
            live_cells: BTreeSet::new(),
            domains: Vec::new(),
            now,
            config: Config::default(),
        }
    }

    pub fn input(&self) -> Input<'_> {
        Input {
            lrps: &self.lrps,
            instances: &self.instances,
            tasks: &self.tasks,
            live_cells: &self.live_cells,
            domains: &self.domains,
            now: self.now,
            config: &self.config,
        }
    }

    pub fn converge(&self) -> Vec<Action> {
        converge::converge(&self.input())
    }

    /// Parses the fixture language described at the top of this file.
    pub fn parse(text: &str) -> World {
        let mut world = World::new(DEFAULT_NOW);
        for raw in text.lines() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0] {
                "now" => world.now = Timestamp(duration(words[1])),
                "cells" => world.live_cells.extend(words[1..].iter().map(|c| name(c))),
                "domain" => {
                    let mut domain = Domain {
                        name: name(words[1]),
                        expires_at: None,
                    };
                    for (key, value) in options(&words[2..]) {
                        match key {
                            "expires_in" => {
                                domain.expires_at = Some(world.now.plus_millis(duration(value)))
                            }
                            _ => panic!("unknown domain option {key:?} in {line:?}"),
                        }
                    }
                    world.domains.push(domain);
                }
                "lrp" => {
                    let mut policy = CrashPolicy::default();
                    for (key, value) in options(&words[4..]) {
                        match key {
                            "immediate" => policy.immediate_restarts = number(value),
                            "max_restarts" => policy.max_restarts = number(value),
                            _ => panic!("unknown lrp option {key:?} in {line:?}"),
                        }
                    }
                    let mut lrp = lrp(words[1], number(words[2]), words[3]);
                    lrp.spec.crash_policy = policy;
                    world.lrps.push(lrp);
                }
                "task" => {
                    let (state, cell) = state_at(words[2]);
                    let state = match state {
                        "pending" => TaskState::Pending,
                        "running" => TaskState::Running,
                        "completed" => TaskState::Completed,
                        "resolving" => TaskState::Resolving,
                        _ => panic!("unknown task state in {line:?}"),
                    };
                    let mut task = task(words[1], state, world.now);
                    task.cell_id = cell.map(name);
                    for (key, value) in options(&words[3..]) {
                        let ago = |v| Timestamp(world.now.0 - duration(v));
                        match key {
                            "gen" => task.generation = number(value),
                            "created" => task.created_at = ago(value),
                            "updated" => task.updated_at = ago(value),
                            "completed" => task.first_completed_at = Some(ago(value)),
                            "callback" => {
                                task.spec.completion_callback_url =
                                    Some("http://callback.test/done".into())
                            }
                            _ => panic!("unknown task option {key:?} in {line:?}"),
                        }
                    }
                    world.tasks.push(task);
                }
                row => {
                    let (lrp_name, index) = row
                        .split_once('/')
                        .unwrap_or_else(|| panic!("unknown line {line:?}"));
                    let mut rest = &words[1..];
                    let presence = match rest[0] {
                        "suspect" => Presence::Suspect,
                        "evacuating" => Presence::Evacuating,
                        _ => Presence::Ordinary,
                    };
                    if presence != Presence::Ordinary {
                        rest = &rest[1..];
                    }
                    let (state, cell) = state_at(rest[0]);
                    let state = match state {
                        "unclaimed" => InstanceState::Unclaimed,
                        "claimed" => InstanceState::Claimed,
                        "running" => InstanceState::Running,
                        "crashed" => InstanceState::Crashed,
                        _ => panic!("unknown instance state in {line:?}"),
                    };
                    let domain = world
                        .lrps
                        .iter()
                        .find(|l| l.spec.name.as_str() == lrp_name)
                        .map_or("cf", |l| l.spec.domain.as_str())
                        .to_owned();
                    let mut row = instance(
                        lrp_name,
                        number(index),
                        &domain,
                        presence,
                        state,
                        cell,
                        world.now,
                    );
                    for (key, value) in options(&rest[1..]) {
                        match key {
                            "gen" => row.generation = number(value),
                            "age" => row.since = Timestamp(world.now.0 - duration(value)),
                            "crashes" => row.crash_count = number(value),
                            "domain" => row.domain = name(value),
                            _ => panic!("unknown instance option {key:?} in {line:?}"),
                        }
                    }
                    world.instances.push(row);
                }
            }
        }
        world
    }
}

/// Runs one pass on the fixture and compares the actions, one `Display` line each.
#[track_caller]
pub fn check(fixture: &str, expect: &[&str]) {
    let world = World::parse(fixture);
    let got: Vec<String> = world.converge().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        expect,
        "\nfixture:\n{fixture}\ngot:\n{}\n",
        got.join("\n")
    );
}

fn options<'a>(words: &[&'a str]) -> Vec<(&'a str, &'a str)> {
    words
        .iter()
        .map(|w| w.split_once('=').unwrap_or((w, "")))
        .collect()
}

fn state_at(word: &str) -> (&str, Option<&str>) {
    match word.split_once('@') {
        Some((state, cell)) => (state, Some(cell)),
        None => (word, None),
    }
}

fn number<T: std::str::FromStr>(text: &str) -> T {
    text.parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

/// Milliseconds in `10ms`, `30s`, `8m`, `2h` or `1500`.
pub fn duration(text: &str) -> u64 {
    for (suffix, unit) in [("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)] {
        if let Some(n) = text.strip_suffix(suffix)
            && let Ok(n) = n.parse::<u64>()
        {
            return n * unit;
        }
    }
    number(text)
}

pub fn name(text: &str) -> Name {
    Name::parse("name", text).expect("fixture names are well formed")
}

pub fn lrp(lrp_name: &str, instances: u32, domain: &str) -> Lrp {
    Lrp {
        spec: LrpSpec {
            image_credentials: None,
            name: name(lrp_name),
            domain: name(domain),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
            instances,
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
    }
}

/// An instance row at generation 1, in its state since `since`; placed on `cell` if one
/// is given.
pub fn instance(
    lrp: &str,
    index: u32,
    domain: &str,
    presence: Presence,
    state: InstanceState,
    cell: Option<&str>,
    since: Timestamp,
) -> Instance {
    let mut row = Instance::unclaimed(name(lrp), index, name(domain), since);
    row.presence = presence;
    row.state = state;
    row.key = cell.map(|cell| InstanceKey {
        instance_id: format!("{lrp}-{index}-{presence}"),
        cell_id: name(cell),
    });
    row.generation = 1;
    row
}

/// A task at generation 1, created and updated at `now` (so nothing is due yet).
pub fn task(id: &str, state: TaskState, now: Timestamp) -> Task {
    Task {
        id: name(id),
        spec: TaskSpec {
            image_credentials: None,
            domain: name("cf"),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("valid rootfs"),
            resources: Resources::default(),
            action: RunAction::run("true", Vec::<String>::new()),
            env: Vec::new(),
            result_file: None,
            completion_callback_url: None,
            placement_tags: Vec::new(),
            annotation: String::new(),
        },
        state,
        cell_id: None,
        result: None,
        failed: false,
        failure_reason: None,
        rejection_count: 0,
        rejection_reason: None,
        created_at: now,
        updated_at: now,
        first_completed_at: (state == TaskState::Completed || state == TaskState::Resolving)
            .then_some(now),
        generation: 1,
    }
}

/// A world's rows keyed as the store keys them, so that `apply` can check every action
/// as the store's compare-and-set would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub instances: BTreeMap<(Name, u32, Presence), Instance>,
    pub tasks: BTreeMap<Name, Task>,
    pub domains: BTreeMap<Name, Domain>,
}

impl Store {
    pub fn of(world: &World) -> Store {
        let mut store = Store {
            instances: BTreeMap::new(),
            tasks: BTreeMap::new(),
            domains: BTreeMap::new(),
        };
        for row in &world.instances {
            let old = store
                .instances
                .insert((row.lrp.clone(), row.index, row.presence), row.clone());
            assert!(old.is_none(), "the world repeats a row key: {row:?}");
        }
        for task in &world.tasks {
            store.tasks.insert(task.id.clone(), task.clone());
        }
        for domain in &world.domains {
            store.domains.insert(domain.name.clone(), domain.clone());
        }
        store
    }

    /// Writes the rows back into `world`, in key order.
    pub fn into_world(self, world: &mut World) {
        world.instances = self.instances.into_values().collect();
        world.tasks = self.tasks.into_values().collect();
        world.domains = self.domains.into_values().collect();
    }

    fn row(
        &mut self,
        lrp: &Name,
        index: u32,
        presence: Presence,
        generation: Generation,
    ) -> &mut Instance {
        let row = self
            .instances
            .get_mut(&(lrp.clone(), index, presence))
            .unwrap_or_else(|| panic!("no {presence} row {lrp}/{index}"));
        assert_eq!(
            row.generation, generation,
            "stale generation for {lrp}/{index} {presence}"
        );
        row
    }

    fn take(
        &mut self,
        lrp: &Name,
        index: u32,
        presence: Presence,
        generation: Generation,
    ) -> Instance {
        self.row(lrp, index, presence, generation);
        self.instances
            .remove(&(lrp.clone(), index, presence))
            .expect("the row was just found")
    }

    fn put_new(&mut self, row: Instance) {
        let key = (row.lrp.clone(), row.index, row.presence);
        assert!(
            !self.instances.contains_key(&key),
            "a second {} row for {}/{}",
            row.presence,
            row.lrp,
            row.index
        );
        self.instances.insert(key, row);
    }

    fn task(&mut self, id: &Name, generation: Generation) -> &mut Task {
        let task = self
            .tasks
            .get_mut(id)
            .unwrap_or_else(|| panic!("no task {id}"));
        assert_eq!(
            task.generation, generation,
            "stale generation for task {id}"
        );
        task
    }

    /// Plays one action as the converger shell does (with the auction's effect left
    /// out: an auctioned row stays UNCLAIMED, freshly stamped). Panics where the store
    /// would refuse the write: a missing row, a stale generation, a second row for a
    /// key, or a transition the model's state machines forbid.
    pub fn apply(&mut self, action: &Action, now: Timestamp) {
        let bump = |row: &mut Instance, next: Instance| {
            row.check_transition(&next)
                .unwrap_or_else(|e| panic!("{action}: {e}"));
            *row = Instance {
                generation: row.generation + 1,
                ..next
            };
        };
        match action {
            Action::PruneDomain { name } => {
                self.domains.remove(name).expect("pruned domain exists");
            }
            Action::CreateInstance { lrp, index, domain } => {
                let mut row = Instance::unclaimed(lrp.clone(), *index, domain.clone(), now);
                row.generation = 1;
                self.put_new(row);
            }
            Action::Auction {
                lrp,
                index,
                generation,
                ..
            } => {
                let row = self.row(lrp, *index, Presence::Ordinary, *generation);
                let next = Instance {
                    state: InstanceState::Unclaimed,
                    key: None,
                    since: now,
                    ..row.clone()
                };
                bump(row, next);
            }
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
            } => {
                self.take(lrp, *index, *presence, *generation);
            }
            Action::MarkSuspect {
                lrp,
                index,
                generation,
            } => {
                let ordinary = self.take(lrp, *index, Presence::Ordinary, *generation);
                let mut suspect = Instance {
                    presence: Presence::Suspect,
                    ..ordinary.clone()
                };
                ordinary
                    .check_transition(&suspect)
                    .unwrap_or_else(|e| panic!("{action}: {e}"));
                suspect.generation += 1;
                self.put_new(suspect);
                let mut replacement =
                    Instance::unclaimed(lrp.clone(), *index, ordinary.domain.clone(), now);
                replacement.generation = 1;
                self.put_new(replacement);
            }
            Action::Unclaim {
                lrp,
                index,
                generation,
            } => {
                let row = self.row(lrp, *index, Presence::Ordinary, *generation);
                let next = Instance {
                    state: InstanceState::Unclaimed,
                    key: None,
                    since: now,
                    ..row.clone()
                };
                bump(row, next);
            }
            Action::PromoteSuspect {
                lrp,
                index,
                suspect_generation,
                replacement,
            } => {
                if let Some((presence, generation)) = replacement {
                    assert_eq!(*presence, Presence::Ordinary, "{action}");
                    self.take(lrp, *index, *presence, *generation);
                }
                let suspect = self.take(lrp, *index, Presence::Suspect, *suspect_generation);
                let mut promoted = Instance {
                    presence: Presence::Ordinary,
                    ..suspect.clone()
                };
                suspect
                    .check_transition(&promoted)
                    .unwrap_or_else(|e| panic!("{action}: {e}"));
                promoted.generation += 1;
                self.put_new(promoted);
            }
            Action::FailTask {
                id,
                generation,
                reason,
            } => {
                let task = self.task(id, *generation);
                task.state = task
                    .state
                    .apply(model::TaskTransition::Complete)
                    .unwrap_or_else(|e| panic!("{action}: {e}"));
                task.failed = true;
                task.failure_reason = Some(reason.to_string());
                task.first_completed_at = Some(now);
                task.updated_at = now;
                task.generation += 1;
            }
            Action::AuctionTask { id, generation } => {
                let task = self.task(id, *generation);
                assert_eq!(task.state, TaskState::Pending, "{action}");
                task.updated_at = now;
                task.generation += 1;
            }
            Action::KickTask { id, generation } => {
                let task = self.task(id, *generation);
                task.state = task
                    .state
                    .apply(model::TaskTransition::Unresolve)
                    .unwrap_or_else(|e| panic!("{action}: {e}"));
                task.updated_at = now;
                task.generation += 1;
            }
            Action::DeleteTask { id, generation } => {
                let task = self.task(id, *generation);
                assert_eq!(task.state, TaskState::Completed, "{action}");
                self.tasks.remove(id);
            }
            Action::ResendCallback { id, generation } => {
                // The shell takes the task (COMPLETED -> RESOLVING) and calls back;
                // whether the callback lands is not convergence's business.
                let task = self.task(id, *generation);
                task.state = task
                    .state
                    .apply(model::TaskTransition::Resolve)
                    .unwrap_or_else(|e| panic!("{action}: {e}"));
                task.updated_at = now;
                task.generation += 1;
            }
        }
    }
}
