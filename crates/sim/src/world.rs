//! The deterministic simulation: the real control plane (its API router, scheduler,
//! converger and expiry sweep, see `server::SteppedControlPlane`) on the in-memory
//! store, stepped tick by tick with a fake clock against simulated cells, with every
//! random choice drawn from one seeded generator. Cells die and come back, cells drain
//! (evacuate) and exit, containers crash, users scale LRPs and submit and cancel tasks;
//! after every tick the safety rules are checked, and after a quiet period at the end,
//! liveness:
//!
//! - no cell is over-committed, by what the store assigns to it or what runs on it;
//! - no LRP index runs in two containers at once (cells here die whole, so there is no
//!   partition in which two copies may legitimately overlap), except for the copy a
//!   draining cell keeps until its replacement runs;
//! - a draining cell stops a running instance it was told to keep only once another
//!   copy of that index ran (or crashed, or the index was scaled away): a drain never
//!   leaves an index without a running copy on its own;
//! - no task runs twice;
//! - once faults stop, every desired instance runs, unless its crash policy holds it
//!   back, and every task completes.
//!
//! A failure names the seed and the tick; the same seed replays the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api::{Report, ReportResult, ReportsReply, WorkBatch, WorkItem};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use model::{
    Cell, CellCapacity, Instance, InstanceState, Lrp, Name, Presence, Task, TaskState, Timestamp,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use server::{ManualClock, SteppedControlPlane, Timings};
use store::memory::MemoryStore;
use store::{InstanceFilter, Store, TaskFilter};
use tower::ServiceExt;

use crate::rng::SimRng;

/// What one simulation run does.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    pub seed: u64,
    /// Ticks with faults and user actions.
    pub active_ticks: u64,
    /// Ticks without them at the end, for the cluster to settle.
    pub quiet_ticks: u64,
    /// Fake milliseconds per tick.
    pub tick_ms: u64,
    pub cells: u32,
    pub lrps: u32,
    pub max_instances: u32,
    /// Per tick: the chance that a live cell dies, and that a dead one comes back.
    pub kill_chance: f64,
    pub revive_chance: f64,
    /// Per tick: the chance that some running container crashes.
    pub crash_chance: f64,
    /// Per tick: the chance that a cell starts to drain, when none is draining.
    pub drain_chance: f64,
    /// Per tick: the chance of a user action (scale an LRP, submit or cancel a task).
    pub user_chance: f64,
}

impl WorldOptions {
    pub fn new(seed: u64) -> WorldOptions {
        WorldOptions {
            seed,
            active_ticks: 1_500,
            quiet_ticks: 4_000,
            tick_ms: 100,
            cells: 5,
            lrps: 4,
            max_instances: 6,
            kill_chance: 0.004,
            revive_chance: 0.01,
            crash_chance: 0.01,
            drain_chance: 0.002,
            user_chance: 0.02,
        }
    }
}

/// A rule that broke, with what is needed to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub tick: u64,
    pub rule: String,
    /// The last things that happened, oldest first.
    pub recent: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} broke a rule at tick {}: {}",
            self.seed, self.tick, self.rule
        )?;
        writeln!(f, "replay with CORRAL_SIM_SEED={}", self.seed)?;
        writeln!(f, "last events:")?;
        for line in &self.recent {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// What a run did, for a test to check that it exercised something.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorldStats {
    pub ticks: u64,
    pub starts: u64,
    pub crashes: u64,
    pub kills: u64,
    pub tasks_run: u64,
    pub work_items: u64,
    pub user_actions: u64,
    /// Cells that started to drain.
    pub drains: u64,
    /// Running containers a draining cell stopped after their replacement ran.
    pub handoffs: u64,
}

const TOKEN: &str = "simulation";
const HEARTBEAT_TICKS: u64 = 10;
const RECONCILE_TICKS: u64 = 50;
const CONVERGE_TICKS: u64 = 300;
/// How often a draining cell asks about the instances it hands over.
const EVACUATE_TICKS: u64 = 5;
/// How long a drain waits for replacements before it stops what is left and exits
/// (Diego's evacuation timeout, scaled down).
const EVACUATION_TIMEOUT_TICKS: u64 = 600;
const RECENT: usize = 40;

struct Container {
    instance_id: String,
    memory_mb: u64,
    ready_at: u64,
    running: bool,
    /// The tick the server first told its draining cell to keep it while a replacement
    /// starts.
    evacuating_since: Option<u64>,
}

struct TaskRun {
    memory_mb: u64,
    finish_at: u64,
}

struct SimCell {
    /// What its heartbeats announce; `cell.evacuating` while it drains.
    cell: Cell,
    alive: bool,
    /// The tick its drain started.
    draining_since: Option<u64>,
    containers: BTreeMap<(Name, u32), Container>,
    tasks: BTreeMap<Name, TaskRun>,
}

struct World {
    options: WorldOptions,
    rng: SimRng,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
    control: SteppedControlPlane,
    api: axum::Router,
    cells: BTreeMap<Name, SimCell>,
    lrps: BTreeMap<Name, Lrp>,
    task_runs: BTreeMap<Name, u32>,
    /// The last tick each index was accepted RUNNING on a cell that is not draining, or
    /// crashed, or was scaled away: what allows a draining cell to stop its copy.
    replaced_at: BTreeMap<(Name, u32), u64>,
    tick: u64,
    next_task: u32,
    recent: Vec<String>,
    stats: WorldStats,
}

/// Runs one simulation to the end; the first broken rule is the error.
pub async fn run(options: WorldOptions) -> Result<WorldStats, Violation> {
    let mut world = World::new(options).await;
    match world.run().await {
        Ok(()) => Ok(world.stats),
        Err(rule) => Err(Violation {
            seed: world.options.seed,
            tick: world.tick,
            rule,
            recent: world.recent,
        }),
    }
}

impl World {
    async fn new(options: WorldOptions) -> World {
        let clock = Arc::new(ManualClock::new(Timestamp(1_700_000_000_000)));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut next_id = 0u64;
        let control = SteppedControlPlane::lead(
            store.clone(),
            TOKEN.to_owned(),
            clock.clone(),
            Timings {
                heartbeat_interval_ms: HEARTBEAT_TICKS * options.tick_ms,
                presence_ttl_ms: 3 * HEARTBEAT_TICKS * options.tick_ms,
                ..Timings::default()
            },
            Box::new(move || {
                next_id += 1;
                format!("c{next_id}")
            }),
        )
        .await
        .expect("the in-memory store takes the leader lock");
        let api = control.router();
        let rng = SimRng::new(options.seed);
        World {
            options,
            rng,
            clock,
            store,
            control,
            api,
            cells: BTreeMap::new(),
            lrps: BTreeMap::new(),
            task_runs: BTreeMap::new(),
            replaced_at: BTreeMap::new(),
            tick: 0,
            next_task: 0,
            recent: Vec::new(),
            stats: WorldStats::default(),
        }
    }

    fn note(&mut self, what: String) {
        if self.recent.len() == RECENT {
            self.recent.remove(0);
        }
        self.recent.push(format!("tick {}: {what}", self.tick));
    }

    async fn run(&mut self) -> Result<(), String> {
        for i in 0..self.options.cells {
            let id = name(&format!("cell-{i}"));
            let cell = Cell {
                id: id.clone(),
                address: "sim://".to_owned(),
                zone: format!("z{}", i % 2),
                capacity: CellCapacity {
                    memory_mb: 1024,
                    disk_mb: 1 << 20,
                    containers: 16,
                },
                rootfs_providers: vec!["host".to_owned()],
                placement_tags: Vec::new(),
                optional_placement_tags: Vec::new(),
                attributes: BTreeMap::new(),
                evacuating: false,
            };
            self.cells.insert(
                id,
                SimCell {
                    cell,
                    alive: true,
                    draining_since: None,
                    containers: BTreeMap::new(),
                    tasks: BTreeMap::new(),
                },
            );
        }
        self.heartbeat().await?;
        for i in 0..self.options.lrps {
            let instances = self.rng.up_to(u64::from(self.options.max_instances)) as u32;
            let name = format!("app{i}");
            let body = serde_json::json!({
                "name": name, "instances": instances, "resources": {"memory_mb": 64 + 32 * (i % 3)},
                "action": {"run": {"path": "serve"}},
            });
            let lrp: Lrp = self.call(Method::POST, "/v1/lrps", Some(&body)).await?;
            self.note(format!("created {name} with {instances} instances"));
            self.lrps.insert(lrp.spec.name.clone(), lrp);
        }
        let total = self.options.active_ticks + self.options.quiet_ticks;
        while self.tick < total {
            self.step(self.tick < self.options.active_ticks).await?;
            self.check_safety().await?;
        }
        self.check_liveness().await
    }

    async fn step(&mut self, active: bool) -> Result<(), String> {
        self.tick += 1;
        self.stats.ticks += 1;
        self.clock.advance(self.options.tick_ms);
        if active {
            self.faults().await?;
            if self.rng.chance(self.options.user_chance) {
                self.user_action().await?;
            }
        }
        if self.tick.is_multiple_of(HEARTBEAT_TICKS) {
            self.heartbeat().await?;
        }
        let expired = self
            .control
            .expire()
            .await
            .map_err(|e| format!("expiry failed: {e}"))?;
        if expired || self.tick.is_multiple_of(CONVERGE_TICKS) {
            self.control
                .converge()
                .await
                .map_err(|e| format!("convergence failed: {e}"))?;
        }
        let work = self
            .control
            .schedule()
            .await
            .map_err(|e| format!("scheduling failed: {e}"))?;
        self.stats.work_items += work.len() as u64;
        self.deliver(work).await?;
        if self.tick.is_multiple_of(RECONCILE_TICKS) {
            self.reconcile().await?;
        }
        self.progress().await?;
        if self.tick.is_multiple_of(EVACUATE_TICKS) {
            self.evacuate().await?;
        }
        Ok(())
    }

    async fn faults(&mut self) -> Result<(), String> {
        let ids: Vec<Name> = self.cells.keys().cloned().collect();
        // Cells that take work: at least two are left after a kill or a drain.
        let serving = |cells: &BTreeMap<Name, SimCell>| {
            cells
                .values()
                .filter(|c| c.alive && c.draining_since.is_none())
                .count()
        };
        if serving(&self.cells) > 2 && self.rng.chance(self.options.kill_chance) {
            let live: Vec<&Name> = ids.iter().filter(|id| self.cells[*id].alive).collect();
            let victim = live[self.rng.up_to(live.len() as u64 - 1) as usize].clone();
            let cell = self.cells.get_mut(&victim).expect("a listed cell");
            cell.alive = false;
            cell.draining_since = None;
            cell.cell.evacuating = false;
            cell.containers.clear();
            cell.tasks.clear();
            self.stats.kills += 1;
            self.note(format!("killed {victim}"));
        }
        let draining = self.cells.values().any(|c| c.draining_since.is_some());
        if !draining && serving(&self.cells) > 2 && self.rng.chance(self.options.drain_chance) {
            let live: Vec<&Name> = ids.iter().filter(|id| self.cells[*id].alive).collect();
            let cell = live[self.rng.up_to(live.len() as u64 - 1) as usize].clone();
            let c = self.cells.get_mut(&cell).expect("a listed cell");
            c.draining_since = Some(self.tick);
            c.cell.evacuating = true;
            let held = c.containers.len();
            self.stats.drains += 1;
            self.note(format!("{cell} drains, holding {held} instances"));
            // As a cell agent does: announce it at once, so nothing more is placed here.
            self.heartbeat().await?;
        }
        if self.rng.chance(self.options.revive_chance) {
            let dead: Vec<&Name> = ids.iter().filter(|id| !self.cells[*id].alive).collect();
            if !dead.is_empty() {
                let back = dead[self.rng.up_to(dead.len() as u64 - 1) as usize].clone();
                self.cells.get_mut(&back).expect("a listed cell").alive = true;
                self.note(format!("{back} came back, empty"));
            }
        }
        if self.rng.chance(self.options.crash_chance) {
            let running: Vec<(Name, (Name, u32))> = self
                .cells
                .iter()
                .filter(|(_, c)| c.alive)
                .flat_map(|(id, c)| {
                    c.containers
                        .iter()
                        .filter(|(_, k)| k.running)
                        .map(|(key, _)| (id.clone(), key.clone()))
                })
                .collect();
            if !running.is_empty() {
                let (cell, key) =
                    running[self.rng.up_to(running.len() as u64 - 1) as usize].clone();
                let container = self
                    .cells
                    .get_mut(&cell)
                    .expect("a listed cell")
                    .containers
                    .remove(&key)
                    .expect("a listed container");
                self.stats.crashes += 1;
                self.note(format!("{}/{} crashed on {cell}", key.0, key.1));
                self.replaced_at.insert(key.clone(), self.tick);
                let report = Report::InstanceCrashed {
                    cell,
                    lrp: key.0,
                    index: key.1,
                    instance_id: container.instance_id,
                    reason: "simulated crash".to_owned(),
                };
                self.report(vec![report]).await?;
            }
        }
        Ok(())
    }

    async fn user_action(&mut self) -> Result<(), String> {
        self.stats.user_actions += 1;
        match self.rng.up_to(2) {
            0 => {
                let names: Vec<Name> = self.lrps.keys().cloned().collect();
                let lrp = names[self.rng.up_to(names.len() as u64 - 1) as usize].clone();
                let instances = self.rng.up_to(u64::from(self.options.max_instances));
                let body = serde_json::json!({ "instances": instances });
                let updated: Lrp = self
                    .call(Method::PATCH, &format!("/v1/lrps/{lrp}"), Some(&body))
                    .await?;
                self.note(format!("scaled {lrp} to {instances}"));
                for index in updated.spec.instances..self.options.max_instances {
                    self.replaced_at.insert((lrp.clone(), index), self.tick);
                }
                self.lrps.insert(lrp, updated);
            }
            1 => {
                self.next_task += 1;
                let id = format!("task{}", self.next_task);
                let body = serde_json::json!({ "id": id, "resources": {"memory_mb": 32}, "action": {"run": {"path": "work"}} });
                let _: Task = self.call(Method::POST, "/v1/tasks", Some(&body)).await?;
                self.note(format!("submitted {id}"));
            }
            _ => {
                if self.next_task > 0 {
                    let id = format!("task{}", 1 + self.rng.up_to(u64::from(self.next_task) - 1));
                    let (status, _) = self
                        .request(Method::POST, &format!("/v1/tasks/{id}/cancel"), None::<&()>)
                        .await?;
                    self.note(format!("cancel {id}: {status}"));
                }
            }
        }
        Ok(())
    }

    async fn heartbeat(&mut self) -> Result<(), String> {
        let cells: Vec<Cell> = self
            .cells
            .values()
            .filter(|c| c.alive)
            .map(|c| c.cell.clone())
            .collect();
        let body = serde_json::json!({ "cells": cells });
        let (status, text) = self
            .request(Method::POST, "/v1/cells/heartbeat", Some(&body))
            .await?;
        if status != StatusCode::OK {
            return Err(format!("heartbeat answered {status}: {text}"));
        }
        Ok(())
    }

    /// Hands pushed work to the cells it names; work for a dead cell is lost, as it
    /// would be on the network.
    async fn deliver(&mut self, work: Vec<WorkItem>) -> Result<(), String> {
        let mut starts = Vec::new();
        let mut released = Vec::new();
        for item in work {
            match item {
                WorkItem::StartInstance {
                    cell,
                    lrp,
                    index,
                    instance_id,
                } => {
                    let ready_at = self.tick + 1 + self.rng.up_to(5);
                    let Some(c) = self.cells.get_mut(&cell).filter(|c| c.alive) else {
                        continue;
                    };
                    let key = (lrp.spec.name.clone(), index);
                    if c.draining_since.is_some() {
                        // Placed before the server heard of the drain: given back.
                        let held = c
                            .containers
                            .get(&key)
                            .is_some_and(|k| k.instance_id == instance_id);
                        if !held {
                            released.push(Report::InstanceEvacuatingClaimed {
                                cell,
                                lrp: key.0,
                                index,
                                instance_id,
                            });
                        }
                        continue;
                    }
                    if c.containers
                        .get(&key)
                        .is_some_and(|k| k.instance_id == instance_id)
                    {
                        continue;
                    }
                    c.containers.insert(
                        key,
                        Container {
                            instance_id,
                            memory_mb: lrp.spec.resources.memory_mb,
                            ready_at,
                            running: false,
                            evacuating_since: None,
                        },
                    );
                }
                WorkItem::StopInstance {
                    cell,
                    lrp,
                    index,
                    instance_id,
                } => {
                    let Some(c) = self.cells.get(&cell).filter(|c| c.alive) else {
                        continue;
                    };
                    let key = (lrp, index);
                    if c.containers
                        .get(&key)
                        .is_some_and(|k| k.instance_id == instance_id)
                    {
                        self.drop_container(&cell, &key, "told to stop")?;
                    }
                }
                WorkItem::StartTask { cell, task } => {
                    if self
                        .cells
                        .get(&cell)
                        .is_some_and(|c| c.alive && !c.tasks.contains_key(&task.id))
                    {
                        starts.push((cell, task));
                    }
                }
                WorkItem::CancelTask { cell, id } => {
                    if let Some(c) = self.cells.get_mut(&cell) {
                        c.tasks.remove(&id);
                    }
                }
                WorkItem::KeepInstance { .. } => {}
            }
        }
        if !released.is_empty() {
            self.report(released).await?;
        }
        self.start_tasks(starts).await
    }

    /// Each draining cell gives back what it has not started, asks for a replacement of
    /// each running instance and stops those the server no longer needs, and exits when
    /// it holds nothing (or its time is up).
    async fn evacuate(&mut self) -> Result<(), String> {
        let draining: Vec<(Name, u64)> = self
            .cells
            .iter()
            .filter(|(_, c)| c.alive)
            .filter_map(|(id, c)| c.draining_since.map(|since| (id.clone(), since)))
            .collect();
        for (id, since) in draining {
            let cell = &self.cells[&id];
            if self.tick >= since + EVACUATION_TIMEOUT_TICKS {
                let left = cell.containers.len();
                self.note(format!(
                    "{id} stopped {left} instances at its evacuation timeout"
                ));
                let cell = self.cells.get_mut(&id).expect("a listed cell");
                cell.containers.clear();
            }
            let cell = &self.cells[&id];
            let mut reports = Vec::new();
            let mut keys = Vec::new();
            for (key, container) in &cell.containers {
                let (lrp, index, instance_id) =
                    (key.0.clone(), key.1, container.instance_id.clone());
                reports.push(if container.running {
                    Report::InstanceEvacuating {
                        cell: id.clone(),
                        lrp,
                        index,
                        instance_id,
                    }
                } else {
                    Report::InstanceEvacuatingClaimed {
                        cell: id.clone(),
                        lrp,
                        index,
                        instance_id,
                    }
                });
                keys.push(key.clone());
            }
            if !reports.is_empty() {
                let results = self.report(reports.clone()).await?;
                for ((report, key), result) in reports.iter().zip(keys).zip(results) {
                    match (report, result) {
                        (Report::InstanceEvacuating { .. }, ReportResult::Ok) => {
                            let container = self
                                .cells
                                .get_mut(&id)
                                .and_then(|c| c.containers.get_mut(&key))
                                .expect("a container just listed");
                            container.evacuating_since.get_or_insert(self.tick);
                        }
                        (Report::InstanceEvacuating { .. }, ReportResult::Stale { message }) => {
                            self.drop_container(&id, &key, &message)?;
                        }
                        _ => {
                            self.cells
                                .get_mut(&id)
                                .expect("a listed cell")
                                .containers
                                .remove(&key);
                        }
                    }
                }
            }
            let cell = self.cells.get_mut(&id).expect("a listed cell");
            if cell.containers.is_empty() && cell.tasks.is_empty() {
                cell.alive = false;
                cell.draining_since = None;
                cell.cell.evacuating = false;
                self.note(format!("{id} drained and exited"));
            }
        }
        Ok(())
    }

    /// A live cell stops a container the server no longer wants there. A copy its
    /// draining cell was told to keep may only go once the index was replaced.
    fn drop_container(&mut self, cell: &Name, key: &(Name, u32), why: &str) -> Result<(), String> {
        let c = self.cells.get_mut(cell).expect("a listed cell");
        let Some(container) = c.containers.remove(key) else {
            return Ok(());
        };
        let Some(since) = container.evacuating_since else {
            return Ok(());
        };
        let replaced = self.replaced_at.get(key).is_some_and(|at| *at >= since);
        if !replaced {
            return Err(format!(
                "{}/{} on draining {cell} was stopped ({why}) before any replacement ran",
                key.0, key.1
            ));
        }
        self.stats.handoffs += 1;
        self.note(format!("{}/{} handed over by {cell}: {why}", key.0, key.1));
        Ok(())
    }

    /// Asks to start each task and runs only those the server let through.
    async fn start_tasks(&mut self, starts: Vec<(Name, Box<Task>)>) -> Result<(), String> {
        if starts.is_empty() {
            return Ok(());
        }
        let reports = starts
            .iter()
            .map(|(cell, task)| Report::TaskStarted {
                cell: cell.clone(),
                id: task.id.clone(),
            })
            .collect();
        let results = self.report(reports).await?;
        for ((cell, task), result) in starts.into_iter().zip(results) {
            if result == ReportResult::Ok {
                let runs = self.task_runs.entry(task.id.clone()).or_default();
                *runs += 1;
                self.stats.tasks_run += 1;
                let finish_at = self.tick + 1 + self.rng.up_to(20);
                self.note(format!("{} started on {cell}", task.id));
                let c = self.cells.get_mut(&cell).expect("a listed cell");
                c.tasks.insert(
                    task.id.clone(),
                    TaskRun {
                        memory_mb: task.spec.resources.memory_mb,
                        finish_at,
                    },
                );
            }
        }
        Ok(())
    }

    /// Containers that finished starting report running; tasks that finished report
    /// their result.
    async fn progress(&mut self) -> Result<(), String> {
        let mut reports = Vec::new();
        let mut sent = Vec::new();
        for (id, c) in self.cells.iter_mut().filter(|(_, c)| c.alive) {
            for ((lrp, index), container) in c.containers.iter_mut() {
                if !container.running && container.ready_at <= self.tick {
                    container.running = true;
                    self.stats.starts += 1;
                    sent.push((id.clone(), lrp.clone(), *index));
                    reports.push(Report::InstanceRunning {
                        cell: id.clone(),
                        lrp: lrp.clone(),
                        index: *index,
                        instance_id: container.instance_id.clone(),
                        address: "10.0.0.1".to_owned(),
                        ports: Vec::new(),
                        routable: true,
                    });
                }
            }
            let done: Vec<Name> = c
                .tasks
                .iter()
                .filter(|(_, t)| t.finish_at <= self.tick)
                .map(|(k, _)| k.clone())
                .collect();
            for task in done {
                c.tasks.remove(&task);
                reports.push(Report::TaskCompleted {
                    cell: id.clone(),
                    id: task,
                    failed: false,
                    failure_reason: None,
                    result: Some("ok".to_owned()),
                });
            }
        }
        if reports.is_empty() {
            return Ok(());
        }
        let results = self.report(reports.clone()).await?;
        for (report, result) in reports.iter().zip(results) {
            if let (
                Report::InstanceRunning {
                    cell, lrp, index, ..
                },
                ReportResult::Ok,
            ) = (report, &result)
                && self.cells[cell].draining_since.is_none()
            {
                self.replaced_at.insert((lrp.clone(), *index), self.tick);
            }
            if let (
                Report::InstanceRunning {
                    cell, lrp, index, ..
                },
                ReportResult::Stale { message },
            ) = (report, &result)
            {
                // No longer assigned here: the container stops.
                self.cells
                    .get_mut(cell)
                    .expect("a listed cell")
                    .containers
                    .remove(&(lrp.clone(), *index));
                self.note(format!(
                    "{lrp}/{index} on {cell} was stale ({message}); stopped"
                ));
            }
        }
        Ok(())
    }

    /// Each live cell compares what it runs with what is assigned to it.
    async fn reconcile(&mut self) -> Result<(), String> {
        let live: Vec<Name> = self
            .cells
            .iter()
            .filter(|(_, c)| c.alive)
            .map(|(id, _)| id.clone())
            .collect();
        for id in live {
            let body = serde_json::json!({ "cells": [id] });
            let batch: WorkBatch = self
                .call(Method::POST, "/v1/cells/assignments", Some(&body))
                .await?;
            let mut assigned = BTreeSet::new();
            let mut missing = Vec::new();
            let mut lost_tasks = Vec::new();
            for item in batch.items {
                match item {
                    WorkItem::StartInstance {
                        ref lrp,
                        index,
                        ref instance_id,
                        ..
                    } => {
                        let key = (lrp.spec.name.clone(), index);
                        let here = self.cells[&id]
                            .containers
                            .get(&key)
                            .is_some_and(|k| &k.instance_id == instance_id);
                        assigned.insert(key);
                        if !here {
                            missing.push(item);
                        }
                    }
                    WorkItem::KeepInstance {
                        ref lrp,
                        index,
                        ref instance_id,
                        ..
                    } => {
                        let key = (lrp.clone(), index);
                        if self.cells[&id]
                            .containers
                            .get(&key)
                            .is_some_and(|k| &k.instance_id == instance_id)
                        {
                            assigned.insert(key);
                        }
                    }
                    WorkItem::StartTask { ref task, .. }
                        if !self.cells[&id].tasks.contains_key(&task.id) =>
                    {
                        if task.state == TaskState::Running {
                            lost_tasks.push(task.id.clone());
                        } else {
                            missing.push(item);
                        }
                    }
                    _ => {}
                }
            }
            let cell = self.cells.get_mut(&id).expect("a listed cell");
            cell.containers.retain(|key, _| assigned.contains(key));
            // On a draining cell, `deliver` gives the missing ones back instead.
            self.deliver(missing).await?;
            if !lost_tasks.is_empty() {
                let reports = lost_tasks
                    .into_iter()
                    .map(|task| Report::TaskCompleted {
                        cell: id.clone(),
                        id: task,
                        failed: true,
                        failure_reason: Some("the cell lost the task's container".to_owned()),
                        result: None,
                    })
                    .collect();
                self.report(reports).await?;
            }
        }
        Ok(())
    }

    async fn report(&mut self, reports: Vec<Report>) -> Result<Vec<ReportResult>, String> {
        let body = api::Reports { reports };
        let reply: ReportsReply = self
            .call(Method::POST, "/v1/cells/reports", Some(&body))
            .await?;
        Ok(reply.results)
    }

    async fn check_safety(&mut self) -> Result<(), String> {
        // What runs on the simulated cells.
        let mut copies: BTreeMap<(Name, u32), Vec<&Name>> = BTreeMap::new();
        for (id, cell) in self.cells.iter().filter(|(_, c)| c.alive) {
            let memory: u64 = cell.containers.values().map(|c| c.memory_mb).sum::<u64>()
                + cell.tasks.values().map(|t| t.memory_mb).sum::<u64>();
            let count = cell.containers.len() + cell.tasks.len();
            if memory > cell.cell.capacity.memory_mb
                || count > cell.cell.capacity.containers as usize
            {
                return Err(format!(
                    "{id} runs {memory} MB in {count} containers, over its capacity"
                ));
            }
            for (key, container) in &cell.containers {
                // A copy kept by a draining cell overlaps with its replacement.
                if container.running && container.evacuating_since.is_none() {
                    copies.entry(key.clone()).or_default().push(id);
                }
            }
        }
        if let Some(((lrp, index), cells)) = copies.iter().find(|(_, cells)| cells.len() > 1) {
            return Err(format!(
                "{lrp}/{index} runs on {} cells at once: {cells:?}",
                cells.len()
            ));
        }
        if let Some((task, runs)) = self.task_runs.iter().find(|(_, runs)| **runs > 1) {
            return Err(format!("task {task} ran {runs} times"));
        }
        // What the store assigns to each cell.
        let instances = self
            .store
            .list_instances(&InstanceFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        let tasks = self
            .store
            .list_tasks(&TaskFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        let lrps: BTreeMap<&Name, &Lrp> = self.lrps.iter().collect();
        let mut assigned: BTreeMap<Name, (u64, u32)> = BTreeMap::new();
        for instance in &instances {
            if let (Some(key), true) = (
                &instance.key,
                matches!(
                    instance.state,
                    InstanceState::Claimed | InstanceState::Running
                ),
            ) {
                let memory = lrps
                    .get(&instance.lrp)
                    .map_or(0, |l| l.spec.resources.memory_mb);
                let entry = assigned.entry(key.cell_id.clone()).or_default();
                entry.0 += memory;
                entry.1 += 1;
            }
        }
        for task in &tasks {
            if let (Some(cell), true) = (
                &task.cell_id,
                matches!(task.state, TaskState::Pending | TaskState::Running),
            ) {
                let entry = assigned.entry(cell.clone()).or_default();
                entry.0 += task.spec.resources.memory_mb;
                entry.1 += 1;
            }
        }
        for (cell, (memory, count)) in assigned {
            if let Some(c) = self.cells.get(&cell).filter(|c| c.alive)
                && (memory > c.cell.capacity.memory_mb || count > c.cell.capacity.containers)
            {
                return Err(format!(
                    "the store assigns {memory} MB in {count} containers to {cell}, over its capacity"
                ));
            }
        }
        Ok(())
    }

    async fn check_liveness(&mut self) -> Result<(), String> {
        let now = server::Clock::now(&*self.clock).as_millis();
        let instances = self
            .store
            .list_instances(&InstanceFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        let by_key: BTreeMap<(&Name, u32, Presence), &Instance> = instances
            .iter()
            .map(|i| ((&i.lrp, i.index, i.presence), i))
            .collect();
        for lrp in self.lrps.values() {
            for index in 0..lrp.spec.instances {
                let Some(row) = by_key.get(&(&lrp.spec.name, index, Presence::Ordinary)) else {
                    return Err(format!(
                        "{}/{index} has no row after the cluster settled",
                        lrp.spec.name
                    ));
                };
                let held_back = row.state == InstanceState::Crashed
                    && row
                        .restart_at(&lrp.spec.crash_policy)
                        .is_none_or(|at| at.as_millis() > now);
                if row.state != InstanceState::Running && !held_back {
                    return Err(format!(
                        "{}/{index} is {} after the cluster settled: {row:?}",
                        lrp.spec.name, row.state
                    ));
                }
                let runs = self.cells.values().filter(|c| c.alive).any(|c| {
                    c.containers
                        .get(&(lrp.spec.name.clone(), index))
                        .is_some_and(|k| k.running)
                });
                if row.state == InstanceState::Running && !runs {
                    return Err(format!(
                        "{}/{index} is RUNNING in the store but runs on no cell",
                        lrp.spec.name
                    ));
                }
            }
        }
        let tasks = self
            .store
            .list_tasks(&TaskFilter::default())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(task) = tasks
            .iter()
            .find(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
        {
            return Err(format!(
                "task {} is still {} after the cluster settled",
                task.id, task.state
            ));
        }
        Ok(())
    }

    async fn request<B: Serialize>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(StatusCode, String), String> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"));
        let body = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Body::from(serde_json::to_vec(body).map_err(|e| e.to_string())?)
            }
            None => Body::empty(),
        };
        let request = request.body(body).map_err(|e| e.to_string())?;
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, String> {
        let (status, text) = self.request(method.clone(), path, body).await?;
        if !status.is_success() {
            return Err(format!("{method} {path} answered {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{method} {path}: {e}: {text}"))
    }
}

fn name(s: &str) -> Name {
    Name::parse("name", s).expect("the simulation's names are valid")
}
