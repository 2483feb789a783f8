//! The fleet's event loop: one task owns every simulated cell, container and timer, and
//! handles pushed work, report outcomes, reconciliation and due timers one event at a
//! time, so the state needs no locks and every change happens in a known order.
//!
//! Reconciliation must not undo work that crossed it in flight. The server claims work
//! before it pushes it, so a container that arrived here before the assignments were
//! asked for is in the server's answer unless it was unassigned since: only such
//! containers are stopped when missing from the answer. Likewise a container that
//! ended here is started again from the answer only if the server had already
//! acknowledged its end when it was asked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use api::{AssignmentsRequest, Report, ReportResult, WorkBatch, WorkItem};
use client::Client;
use model::{Cell, Env, Lrp, Name, PortMapping, Resources, Task, TaskState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, warn};

use crate::options::{Latency, SimOptions};
use crate::rng::SimRng;
use crate::stats::{self, Counters};

/// Why an instance crashed, when the fleet crashed it.
pub const CRASH_REASON: &str = "simulated crash: exited with status 1";
/// Why a task failed, when `SIM_FAIL` is set but empty.
pub const FAIL_REASON: &str = "simulated failure: exited with status 1";
/// Why a task failed, when it was cancelled while running here.
pub const CANCEL_REASON: &str = "task was cancelled";
/// Why a task failed, when the server thinks it runs here and it does not.
pub const LOST_REASON: &str = "the cell lost the task's container";

/// Where simulated containers listen: all on this machine.
const CONTAINER_ADDRESS: &str = "127.0.0.1";
/// Fake host ports are handed out from this range per cell, wrapping around.
const FIRST_HOST_PORT: u16 = 61_000;
const LAST_HOST_PORT: u16 = 65_000;
/// How many violations of each kind are logged one by one; later ones are counted.
const LOGGED_VIOLATIONS: u64 = 10;

/// What the fleet's loop hears from the fleet's other tasks.
#[derive(Debug)]
pub(crate) enum Event {
    /// A batch of reports was answered (`results`, one per report, in order) or
    /// dropped (`None`), at `at`.
    Reported {
        reports: Vec<Report>,
        results: Option<Vec<ReportResult>>,
        at: Instant,
    },
    /// What the server had assigned to `cells` when asked at `asked_at`.
    Assignments {
        cells: Vec<Name>,
        asked_at: Instant,
        work: WorkBatch,
    },
    /// A reconciliation pass has sent everything it fetched.
    ReconcileDone,
}

/// What a fleet's loop is made from.
pub(crate) struct Setup<'a> {
    pub(crate) options: &'a SimOptions,
    pub(crate) cells: Vec<Cell>,
    pub(crate) seed: u64,
    pub(crate) stats: Arc<Counters>,
    pub(crate) client: Client,
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    pub(crate) events: mpsc::UnboundedSender<Event>,
}

pub(crate) struct Fleet {
    start_latency: Latency,
    crash_probability: f64,
    crash_after: Latency,
    reconcile_interval: Duration,
    cells_per_request: usize,
    cell_ids: Vec<Name>,
    cells: HashMap<Name, CellState>,
    /// Instance containers here, by instance id.
    instances: HashMap<String, Container>,
    /// Tasks here, by id: waiting for their `TaskStarted` answer, or running.
    tasks: HashMap<Name, TaskRun>,
    /// Instances and tasks that ended here, with when the server acknowledged the
    /// report of their end (`None` until it has).
    ended_instances: HashMap<String, Option<Instant>>,
    ended_tasks: HashMap<Name, Option<Instant>>,
    timers: BinaryHeap<Reverse<Timer>>,
    next_serial: u64,
    running_instances: u64,
    running_tasks: u64,
    rng: SimRng,
    stats: Arc<Counters>,
    client: Client,
    reports: mpsc::UnboundedSender<Report>,
    events: mpsc::UnboundedSender<Event>,
    /// The reconciliation pass under way: its task, and whether its `ReconcileDone`
    /// is still to come.
    reconciling: Option<JoinHandle<()>>,
    reconcile_pending: bool,
}

struct CellState {
    cell: Cell,
    memory_mb: u64,
    disk_mb: u64,
    containers: u32,
    next_port: u16,
}

struct Container {
    cell: Name,
    lrp: Name,
    index: u32,
    resources: Resources,
    ports: Vec<u16>,
    /// How long after running it crashes, if it was picked to.
    crash_after: Option<Duration>,
    /// Tells this container's timers from those of an earlier one with the same id.
    serial: u64,
    arrived: Instant,
    running: bool,
}

struct TaskRun {
    cell: Name,
    resources: Resources,
    duration: Duration,
    result: String,
    failure: Option<String>,
    serial: u64,
    arrived: Instant,
    /// False until the server accepted its `TaskStarted`.
    running: bool,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Timer {
    at: Instant,
    serial: u64,
    due: Due,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The instance has started.
    Up(String),
    /// The instance crashes.
    Crash(String),
    /// The task has finished.
    TaskDone(Name),
}

impl Fleet {
    pub(crate) fn new(setup: Setup<'_>) -> Fleet {
        let options = setup.options;
        let cell_ids = setup.cells.iter().map(|c| c.id.clone()).collect();
        let cells = setup
            .cells
            .into_iter()
            .map(|cell| {
                let state = CellState {
                    cell,
                    memory_mb: 0,
                    disk_mb: 0,
                    containers: 0,
                    next_port: FIRST_HOST_PORT,
                };
                (state.cell.id.clone(), state)
            })
            .collect();
        Fleet {
            start_latency: options.start_latency,
            crash_probability: options.crash_probability,
            crash_after: options.crash_after,
            reconcile_interval: options.reconcile_interval,
            cells_per_request: options.cells_per_request,
            cell_ids,
            cells,
            instances: HashMap::new(),
            tasks: HashMap::new(),
            ended_instances: HashMap::new(),
            ended_tasks: HashMap::new(),
            timers: BinaryHeap::new(),
            next_serial: 0,
            running_instances: 0,
            running_tasks: 0,
            rng: SimRng::new(setup.seed),
            stats: setup.stats,
            client: setup.client,
            reports: setup.reports,
            events: setup.events,
            reconciling: None,
            reconcile_pending: false,
        }
    }

    /// Runs until told to stop. Reconciles at once, then every interval.
    pub(crate) async fn run(
        mut self,
        mut work: mpsc::Receiver<WorkBatch>,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut reconcile = tokio::time::interval(self.reconcile_interval);
        reconcile.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let next = self.timers.peek().map(|Reverse(t)| t.at);
            if next.is_some() && next != armed {
                if let Some(at) = next {
                    timer.as_mut().reset(at);
                }
                armed = next;
            }
            tokio::select! {
                () = crate::stopped(&mut stopping) => break,
                Some(batch) = work.recv() => self.on_work(batch.items),
                Some(event) = events.recv() => self.on_event(event),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.fire_timers();
                }
                _ = reconcile.tick() => self.start_reconcile(),
            }
            self.publish();
        }
        if let Some(pass) = self.reconciling.take() {
            pass.abort();
        }
    }

    fn on_work(&mut self, items: Vec<WorkItem>) {
        let now = Instant::now();
        for item in items {
            self.apply(item, now);
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Reported {
                reports,
                results,
                at,
            } => self.on_reported(reports, results, at),
            Event::Assignments {
                cells,
                asked_at,
                work,
            } => self.on_assignments(cells, asked_at, work.items),
            Event::ReconcileDone => {
                self.reconcile_pending = false;
                stats::add(&self.stats.reconciles, 1);
            }
        }
    }

    fn apply(&mut self, item: WorkItem, now: Instant) {
        match item {
            WorkItem::StartInstance {
                cell,
                lrp,
                index,
                instance_id,
            } => {
                self.start_instance(cell, &lrp, index, instance_id, now);
            }
            WorkItem::StopInstance {
                cell,
                lrp,
                index,
                instance_id,
            } => self.stop_instance(cell, lrp, index, instance_id),
            WorkItem::StartTask { cell, task } => {
                self.start_task(cell, &task, now);
            }
            WorkItem::CancelTask { cell, id } => self.cancel_task(&cell, id),
            // Only meaningful in reconciliation, where it counts as assigned.
            WorkItem::KeepInstance { .. } => {}
        }
    }

    /// Starts a container for the instance, unless it is here already. False when
    /// nothing was started.
    fn start_instance(
        &mut self,
        cell: Name,
        lrp: &Lrp,
        index: u32,
        instance_id: String,
        now: Instant,
    ) -> bool {
        if self.instances.contains_key(&instance_id) {
            debug!(%instance_id, "already running here: the repeated start is ignored");
            return false;
        }
        let Some(state) = self.cells.get_mut(&cell) else {
            warn!(%cell, %instance_id, "work for a cell this fleet does not simulate: ignored");
            return false;
        };
        let spec = &lrp.spec;
        let misplaced = misplaced(&state.cell, spec.rootfs.provider(), &spec.placement_tags);
        let reserved = state.reserve(&spec.resources);
        self.ended_instances.remove(&instance_id);
        if let Some(why) = misplaced {
            violation(
                &self.stats.misplacements,
                format_args!(
                    "instance {instance_id} of {} placed on {cell}: {why}",
                    spec.name
                ),
            );
        }
        if !reserved {
            violation(
                &self.stats.overcommits,
                format_args!(
                    "instance {instance_id} of {} would over-commit {cell}: refused",
                    spec.name
                ),
            );
            self.report(Report::InstanceStopped {
                cell,
                lrp: spec.name.clone(),
                index,
                instance_id: instance_id.clone(),
            });
            self.ended_instances.insert(instance_id, None);
            return false;
        }
        let owner = spec.name.as_str();
        let latency = env_latency(&spec.env, "SIM_START_MS", owner)
            .unwrap_or(self.start_latency)
            .sample(&mut self.rng);
        let crash_after = match env_latency(&spec.env, "SIM_CRASH_AFTER_MS", owner) {
            Some(after) => Some(after.sample(&mut self.rng)),
            None if self.rng.chance(self.crash_probability) => {
                Some(self.crash_after.sample(&mut self.rng))
            }
            None => None,
        };
        let serial = self.serial();
        self.timers.push(Reverse(Timer {
            at: now + latency,
            serial,
            due: Due::Up(instance_id.clone()),
        }));
        self.instances.insert(
            instance_id,
            Container {
                cell,
                lrp: spec.name.clone(),
                index,
                resources: spec.resources,
                ports: spec.ports.clone(),
                crash_after,
                serial,
                arrived: now,
                running: false,
            },
        );
        stats::add(&self.stats.starts, 1);
        true
    }

    /// Stops the container if it is here, and confirms that it is gone either way.
    fn stop_instance(&mut self, cell: Name, lrp: Name, index: u32, instance_id: String) {
        if !self.cells.contains_key(&cell) {
            warn!(%cell, %instance_id, "work for a cell this fleet does not simulate: ignored");
            return;
        }
        if self.remove_instance(&instance_id) {
            stats::add(&self.stats.stops, 1);
        }
        self.report(Report::InstanceStopped {
            cell,
            lrp,
            index,
            instance_id: instance_id.clone(),
        });
        self.ended_instances.insert(instance_id, None);
    }

    /// Takes the task in and asks the server whether it may run it; it runs once the
    /// server accepts the `TaskStarted`. False when nothing was taken.
    fn start_task(&mut self, cell: Name, task: &Task, now: Instant) -> bool {
        if self.tasks.contains_key(&task.id) {
            debug!(task = %task.id, "already here: the repeated start is ignored");
            return false;
        }
        let Some(state) = self.cells.get_mut(&cell) else {
            warn!(%cell, task = %task.id, "work for a cell this fleet does not simulate: ignored");
            return false;
        };
        let spec = &task.spec;
        let misplaced = misplaced(&state.cell, spec.rootfs.provider(), &spec.placement_tags);
        let reserved = state.reserve(&spec.resources);
        self.ended_tasks.remove(&task.id);
        if let Some(why) = misplaced {
            violation(
                &self.stats.misplacements,
                format_args!("task {} placed on {cell}: {why}", task.id),
            );
        }
        if !reserved {
            violation(
                &self.stats.overcommits,
                format_args!("task {} would over-commit {cell}: rejected", task.id),
            );
            self.report(Report::TaskRejected {
                reason: format!("cell {cell} has no room left for the task"),
                cell,
                id: task.id.clone(),
            });
            self.ended_tasks.insert(task.id.clone(), None);
            return false;
        }
        let owner = task.id.as_str();
        let duration = env_latency(&spec.env, "SIM_TASK_MS", owner)
            .unwrap_or(Latency::Fixed(Duration::ZERO))
            .sample(&mut self.rng);
        let result = env_value(&spec.env, "SIM_RESULT")
            .unwrap_or("ok")
            .to_owned();
        let failure = env_value(&spec.env, "SIM_FAIL").map(|reason| {
            if reason.is_empty() {
                FAIL_REASON.to_owned()
            } else {
                reason.to_owned()
            }
        });
        let serial = self.serial();
        self.tasks.insert(
            task.id.clone(),
            TaskRun {
                cell: cell.clone(),
                resources: spec.resources,
                duration,
                result,
                failure,
                serial,
                arrived: now,
                running: false,
            },
        );
        self.report(Report::TaskStarted {
            cell,
            id: task.id.clone(),
        });
        true
    }

    fn cancel_task(&mut self, cell: &Name, id: Name) {
        if !self.cells.contains_key(cell) {
            warn!(%cell, task = %id, "work for a cell this fleet does not simulate: ignored");
            return;
        }
        let Some(task) = self.remove_task(&id) else {
            debug!(task = %id, "cancelled, but not here");
            return;
        };
        self.report(Report::TaskCompleted {
            cell: task.cell,
            id: id.clone(),
            failed: true,
            failure_reason: Some(CANCEL_REASON.to_owned()),
            result: None,
        });
        self.ended_tasks.insert(id, None);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while self.timers.peek().is_some_and(|Reverse(t)| t.at <= now) {
            let Some(Reverse(timer)) = self.timers.pop() else {
                break;
            };
            self.on_due(timer, now);
        }
    }

    fn on_due(&mut self, timer: Timer, now: Instant) {
        match timer.due {
            Due::Up(id) => {
                let Some(container) = self.instances.get_mut(&id) else {
                    return;
                };
                if container.serial != timer.serial || container.running {
                    return;
                }
                container.running = true;
                self.running_instances += 1;
                let cell = self
                    .cells
                    .get_mut(&container.cell)
                    .expect("containers run only on the fleet's cells");
                let ports = container
                    .ports
                    .iter()
                    .map(|&container_port| PortMapping {
                        container_port,
                        host_port: cell.host_port(),
                    })
                    .collect();
                if let Some(after) = container.crash_after {
                    self.timers.push(Reverse(Timer {
                        at: now + after,
                        serial: timer.serial,
                        due: Due::Crash(id.clone()),
                    }));
                }
                let report = Report::InstanceRunning {
                    cell: container.cell.clone(),
                    lrp: container.lrp.clone(),
                    index: container.index,
                    instance_id: id,
                    address: CONTAINER_ADDRESS.to_owned(),
                    ports,
                    routable: true,
                };
                self.report(report);
            }
            Due::Crash(id) => {
                if self.instances.get(&id).map(|c| c.serial) != Some(timer.serial) {
                    return;
                }
                let container = self.instances.remove(&id).expect("looked up just now");
                self.release(&container.cell, &container.resources);
                if container.running {
                    self.running_instances -= 1;
                }
                stats::add(&self.stats.crashes, 1);
                self.report(Report::InstanceCrashed {
                    cell: container.cell,
                    lrp: container.lrp,
                    index: container.index,
                    instance_id: id.clone(),
                    reason: CRASH_REASON.to_owned(),
                });
                self.ended_instances.insert(id, None);
            }
            Due::TaskDone(id) => {
                if self.tasks.get(&id).map(|t| (t.serial, t.running)) != Some((timer.serial, true))
                {
                    return;
                }
                let task = self.remove_task(&id).expect("looked up just now");
                stats::add(&self.stats.tasks_completed, 1);
                self.report(Report::TaskCompleted {
                    cell: task.cell,
                    id: id.clone(),
                    failed: task.failure.is_some(),
                    failure_reason: task.failure,
                    result: Some(task.result),
                });
                self.ended_tasks.insert(id, None);
            }
        }
    }

    fn on_reported(
        &mut self,
        reports: Vec<Report>,
        results: Option<Vec<ReportResult>>,
        at: Instant,
    ) {
        if let Some(results) = &results
            && results.len() != reports.len()
        {
            warn!(
                sent = reports.len(),
                answered = results.len(),
                "the server answered a different number of reports than were sent; \
                 the unanswered ones count as not accepted"
            );
        }
        for (i, report) in reports.into_iter().enumerate() {
            let result = results.as_ref().and_then(|r| r.get(i));
            let accepted = matches!(result, Some(ReportResult::Ok));
            if let Some(ReportResult::Stale { message }) = result {
                stats::add(&self.stats.stale_results, 1);
                debug!(%message, "a report was stale");
            }
            match report {
                // The server no longer wants this container here: stop it, silently.
                Report::InstanceRunning { instance_id, .. } if result.is_some() && !accepted => {
                    if self.remove_instance(&instance_id) {
                        stats::add(&self.stats.stops, 1);
                    }
                    self.ended_instances.insert(instance_id, Some(at));
                }
                Report::InstanceCrashed { instance_id, .. }
                | Report::InstanceStopped { instance_id, .. } => {
                    if let Some(acked @ None) = self.ended_instances.get_mut(&instance_id) {
                        *acked = Some(at);
                    }
                }
                Report::TaskStarted { id, .. } if accepted => self.run_task(&id),
                // Stale, or never answered: the task must not run here.
                Report::TaskStarted { id, .. } => {
                    if self.remove_task(&id).is_some() {
                        self.ended_tasks.insert(id, Some(at));
                    }
                }
                Report::TaskCompleted { id, .. } | Report::TaskRejected { id, .. } => {
                    if let Some(acked @ None) = self.ended_tasks.get_mut(&id) {
                        *acked = Some(at);
                    }
                }
                Report::InstanceRunning { .. } => {}
                // Simulated cells have no images to pull.
                Report::InstancePulling { .. } => {}
                // Simulated fleets do not drain, so they send neither.
                Report::InstanceEvacuating { .. } | Report::InstanceEvacuatingClaimed { .. } => {}
            }
        }
    }

    fn run_task(&mut self, id: &Name) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if task.running {
            return;
        }
        task.running = true;
        self.running_tasks += 1;
        stats::add(&self.stats.task_runs, 1);
        self.timers.push(Reverse(Timer {
            at: Instant::now() + task.duration,
            serial: task.serial,
            due: Due::TaskDone(id.clone()),
        }));
    }

    /// Begins a reconciliation pass unless one is under way: fetches the assignments
    /// of every cell, `cells_per_request` cells at a time, in a task of its own.
    fn start_reconcile(&mut self) {
        if self.reconcile_pending {
            return;
        }
        // Every earlier pass's answers have been handled (its `ReconcileDone` came
        // last), and every later one is asked from now on: ends acknowledged before
        // now can no longer matter.
        let now = Instant::now();
        self.ended_instances
            .retain(|_, acked| acked.is_none_or(|at| at >= now));
        self.ended_tasks
            .retain(|_, acked| acked.is_none_or(|at| at >= now));
        self.reconcile_pending = true;
        let chunks: Vec<Vec<Name>> = self
            .cell_ids
            .chunks(self.cells_per_request)
            .map(<[Name]>::to_vec)
            .collect();
        let client = self.client.clone();
        let events = self.events.clone();
        self.reconciling = Some(tokio::spawn(async move {
            for cells in chunks {
                let asked_at = Instant::now();
                let request = AssignmentsRequest {
                    cells: cells.clone(),
                };
                match client.assignments(&request).await {
                    Ok(work) => {
                        let _ = events.send(Event::Assignments {
                            cells,
                            asked_at,
                            work,
                        });
                    }
                    Err(error) => {
                        warn!(%error, "fetching the cells' assignments failed; the next reconciliation tries again");
                        break;
                    }
                }
            }
            let _ = events.send(Event::ReconcileDone);
        }));
    }

    /// Starts what `cells` were assigned and do not run, and stops what they run and
    /// were not assigned (see the module's comment for what crossed in flight).
    fn on_assignments(&mut self, cells: Vec<Name>, asked_at: Instant, items: Vec<WorkItem>) {
        let now = Instant::now();
        let asked: HashSet<Name> = cells.into_iter().collect();
        let mut assigned_instances: HashSet<String> = HashSet::new();
        let mut assigned_tasks: HashSet<Name> = HashSet::new();
        for item in items {
            match item {
                WorkItem::StartInstance {
                    cell,
                    lrp,
                    index,
                    instance_id,
                } if asked.contains(&cell) => {
                    assigned_instances.insert(instance_id.clone());
                    let ended = self.ended_instances.get(&instance_id).copied();
                    if self.instances.contains_key(&instance_id) || ended_since(ended, asked_at) {
                        continue;
                    }
                    if self.start_instance(cell, &lrp, index, instance_id, now) {
                        stats::add(&self.stats.reconcile_starts, 1);
                    }
                }
                WorkItem::KeepInstance {
                    cell, instance_id, ..
                } if asked.contains(&cell) => {
                    // Kept if it runs here; never started.
                    assigned_instances.insert(instance_id);
                }
                WorkItem::StartTask { cell, task } if asked.contains(&cell) => {
                    assigned_tasks.insert(task.id.clone());
                    let ended = self.ended_tasks.get(&task.id).copied();
                    if self.tasks.contains_key(&task.id) || ended_since(ended, asked_at) {
                        continue;
                    }
                    match task.state {
                        TaskState::Pending => {
                            if self.start_task(cell, &task, now) {
                                stats::add(&self.stats.reconcile_starts, 1);
                            }
                        }
                        // The server thinks it runs here, and it does not: say so, so
                        // that the task fails instead of waiting forever.
                        TaskState::Running => {
                            self.report(Report::TaskCompleted {
                                cell,
                                id: task.id.clone(),
                                failed: true,
                                failure_reason: Some(LOST_REASON.to_owned()),
                                result: None,
                            });
                            self.ended_tasks.insert(task.id.clone(), None);
                        }
                        TaskState::Completed | TaskState::Resolving => {}
                    }
                }
                WorkItem::StartInstance { cell, .. } | WorkItem::StartTask { cell, .. } => {
                    warn!(%cell, "assignments for a cell that was not asked about: ignored");
                }
                other => self.apply(other, now),
            }
        }
        let unassigned_instances: Vec<String> = self
            .instances
            .iter()
            .filter(|(id, c)| {
                asked.contains(&c.cell) && c.arrived < asked_at && !assigned_instances.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let unassigned_tasks: Vec<Name> = self
            .tasks
            .iter()
            .filter(|(id, t)| {
                asked.contains(&t.cell) && t.arrived < asked_at && !assigned_tasks.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let stopped = unassigned_instances.len() + unassigned_tasks.len();
        for id in unassigned_instances {
            self.remove_instance(&id);
        }
        for id in unassigned_tasks {
            self.remove_task(&id);
        }
        stats::add(&self.stats.reconcile_stops, stopped as u64);
    }

    /// Removes the container and frees its resources; false if it was not here.
    fn remove_instance(&mut self, id: &str) -> bool {
        let Some(container) = self.instances.remove(id) else {
            return false;
        };
        self.release(&container.cell, &container.resources);
        if container.running {
            self.running_instances -= 1;
        }
        true
    }

    fn remove_task(&mut self, id: &Name) -> Option<TaskRun> {
        let task = self.tasks.remove(id)?;
        self.release(&task.cell, &task.resources);
        if task.running {
            self.running_tasks -= 1;
        }
        Some(task)
    }

    fn release(&mut self, cell: &Name, resources: &Resources) {
        if let Some(state) = self.cells.get_mut(cell) {
            state.release(resources);
        }
    }

    fn report(&self, report: Report) {
        // The reporter ends only after this loop, so a failed send means the fleet
        // is stopping and nobody is left to tell.
        let _ = self.reports.send(report);
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Publishes the gauges.
    fn publish(&self) {
        let starting = self.instances.len() as u64 - self.running_instances;
        stats::set(&self.stats.instances_running, self.running_instances);
        stats::set(&self.stats.instances_starting, starting);
        stats::set(&self.stats.tasks_running, self.running_tasks);
    }
}

impl CellState {
    /// Reserves room for one container, or says there is none.
    fn reserve(&mut self, resources: &Resources) -> bool {
        let capacity = self.cell.capacity;
        let fits = self.memory_mb + resources.memory_mb <= capacity.memory_mb
            && self.disk_mb + resources.disk_mb <= capacity.disk_mb
            && self.containers < capacity.containers;
        if fits {
            self.memory_mb += resources.memory_mb;
            self.disk_mb += resources.disk_mb;
            self.containers += 1;
        }
        fits
    }

    fn release(&mut self, resources: &Resources) {
        self.memory_mb = self.memory_mb.saturating_sub(resources.memory_mb);
        self.disk_mb = self.disk_mb.saturating_sub(resources.disk_mb);
        self.containers = self.containers.saturating_sub(1);
    }

    fn host_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port >= LAST_HOST_PORT {
            FIRST_HOST_PORT
        } else {
            port + 1
        };
        port
    }
}

/// Whether an end reported here was not yet acknowledged when the assignments were
/// asked for, so that the server's answer may still show the work as assigned.
fn ended_since(ended: Option<Option<Instant>>, asked_at: Instant) -> bool {
    match ended {
        None => false,
        Some(None) => true,
        Some(Some(acked)) => acked > asked_at,
    }
}

/// Why work does not belong on `cell`, if it does not: the cell lacks its rootfs
/// provider, or the placement tags of the two do not match.
fn misplaced(cell: &Cell, provider: &str, tags: &[String]) -> Option<String> {
    if !cell.rootfs_providers.iter().any(|p| p == provider) {
        return Some(format!(
            "the cell does not offer rootfs provider {provider:?}"
        ));
    }
    if let Some(tag) = cell.placement_tags.iter().find(|t| !tags.contains(t)) {
        return Some(format!(
            "the work lacks the cell's required placement tag {tag:?}"
        ));
    }
    if let Some(tag) = tags
        .iter()
        .find(|t| !cell.placement_tags.contains(t) && !cell.optional_placement_tags.contains(t))
    {
        return Some(format!("the cell lacks the work's placement tag {tag:?}"));
    }
    None
}

/// Counts a safety violation, and logs the first few.
fn violation(counter: &AtomicU64, what: std::fmt::Arguments<'_>) {
    let earlier = counter.fetch_add(1, Ordering::Relaxed);
    if earlier < LOGGED_VIOLATIONS {
        warn!("scheduler safety violation: {what}");
    } else if earlier == LOGGED_VIOLATIONS {
        warn!("scheduler safety violation: {what} (further ones are only counted)");
    }
}

/// The last value of `key` in `env`.
fn env_value<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A latency from `env`, or `None` (with a warning if it is set but malformed).
fn env_latency(env: &Env, key: &str, owner: &str) -> Option<Latency> {
    let value = env_value(env, key)?;
    match value.parse() {
        Ok(latency) => Some(latency),
        Err(error) => {
            warn!(%owner, %key, %error, "ignoring a malformed simulation variable");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(providers: &[&str], required: &[&str], optional: &[&str]) -> Cell {
        let strings = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect();
        Cell {
            id: Name::parse("id", "c-0").expect("a name"),
            address: "http://127.0.0.1:1".into(),
            zone: String::new(),
            capacity: crate::DEFAULT_CAPACITY,
            rootfs_providers: strings(providers),
            placement_tags: strings(required),
            optional_placement_tags: strings(optional),
            attributes: Default::default(),
            evacuating: false,
        }
    }

    #[test]
    fn misplacements() {
        let tags = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: &[(Cell, &str, &[&str], Option<&str>)] = &[
            (cell(&["host"], &[], &[]), "host", &[], None),
            (
                cell(&["host"], &[], &[]),
                "docker",
                &[],
                Some("the cell does not offer rootfs provider \"docker\""),
            ),
            (cell(&["host"], &["gpu"], &[]), "host", &["gpu"], None),
            (
                cell(&["host"], &["gpu"], &[]),
                "host",
                &[],
                Some("the work lacks the cell's required placement tag \"gpu\""),
            ),
            (cell(&["host"], &[], &["ssd"]), "host", &["ssd"], None),
            (
                cell(&["host"], &[], &["ssd"]),
                "host",
                &["gpu"],
                Some("the cell lacks the work's placement tag \"gpu\""),
            ),
        ];
        for (cell, provider, work_tags, expect) in cases {
            assert_eq!(
                misplaced(cell, provider, &tags(work_tags)).as_deref(),
                *expect,
                "{provider} {work_tags:?} on {cell:?}"
            );
        }
    }

    #[test]
    fn cells_refuse_what_does_not_fit() {
        let mut state = CellState {
            cell: Cell {
                capacity: model::CellCapacity {
                    memory_mb: 300,
                    disk_mb: 10_000,
                    containers: 5,
                },
                ..cell(&["host"], &[], &[])
            },
            memory_mb: 0,
            disk_mb: 0,
            containers: 0,
            next_port: LAST_HOST_PORT,
        };
        let small = Resources::default();
        assert!(state.reserve(&small));
        assert!(state.reserve(&small));
        assert!(!state.reserve(&small), "384 MB do not fit in 300");
        state.release(&small);
        assert!(state.reserve(&small));
        assert_eq!(
            (state.host_port(), state.host_port()),
            (LAST_HOST_PORT, FIRST_HOST_PORT)
        );
    }

    #[test]
    fn ends_hide_assignments_until_acknowledged_before_the_question() {
        let asked = Instant::now();
        let before = asked - Duration::from_millis(1);
        let after = asked + Duration::from_millis(1);
        assert!(!ended_since(None, asked));
        assert!(ended_since(Some(None), asked));
        assert!(ended_since(Some(Some(after)), asked));
        assert!(!ended_since(Some(Some(before)), asked));
    }
}
