//! The scheduler (Diego's auctioneer), run by the leader: keeps a live view of every
//! cell's capacity and what is placed on it, places waiting work in batches with the
//! pure `placement` core, records each assignment in the store, and only then sends the
//! work to the cells.
//!
//! The view is built once from the store and then follows the event log, so a batch
//! costs memory lookups, never a request per cell. Work that arrives while a batch runs
//! waits for the next one. Assignments are compare-and-set writes fenced by the leader
//! lock: a scheduler that lost leadership cannot assign anything, and an instance is
//! only ever held by the one container its row names.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{WorkBatch, WorkItem};
use futures::future::join_all;
use model::{Cell, Instance, InstanceKey, InstanceState, Lrp, Name, Presence, Task, TaskState};
use placement::{CellView, Snapshot, Work, WorkId};
use serde::de::DeserializeOwned;
use store::{
    Commit, Event, EventKind, Expect, Fence, InstanceFilter, LockRecord, LrpFilter, Mutation,
    StoreError, TaskFilter,
};

use crate::AppState;
use crate::cells::{self, PREFIX};
use crate::metrics::Placed;

/// Most work one batch places; the rest waits for the next batch.
const MAX_BATCH: usize = 20_000;
/// Events read from the log at a time.
const EVENT_PAGE: usize = 10_000;
/// How often the metrics get the cells' capacity and reservations afresh.
const CELLS_PUBLISHED_EVERY: Duration = Duration::from_secs(1);
/// How long a push of work to a cell may take before the scheduler gives up on it (the
/// cell's reconciliation will find the work anyway).
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What the scheduler tracks: an instance row or a task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Instance(Name, u32, Presence),
    Task(Name),
}

/// Work waiting for a cell, with the row as last seen (its generation is what the
/// assignment compares and sets).
#[derive(Debug, Clone)]
enum Waiting {
    Instance(Box<Instance>),
    Task(Box<Task>),
}

/// Something the view holds on a cell.
#[derive(Debug, Clone)]
struct Held {
    cell: Name,
    work: Work,
    /// The container, for instances: what a stop names.
    instance_id: Option<String>,
    starting: bool,
}

pub(crate) struct Scheduler {
    state: AppState,
    fence: Fence,
    snapshot: Snapshot,
    lrps: HashMap<Name, Arc<Lrp>>,
    cells: HashMap<Name, Cell>,
    held: HashMap<Key, Held>,
    queue: BTreeMap<Key, Waiting>,
    /// Work no cell could take, as its row stands after the reason was written: events
    /// up to that generation are the scheduler's own and do not queue it again. A new
    /// cell, or convergence re-auctioning it, does.
    unplaced: HashMap<Key, Waiting>,
    cursor: u64,
    outbox: Outbox,
    ids: InstanceIds,
    /// When the cells' capacity and reservations were last given to the metrics.
    cells_published: Option<Instant>,
}

/// Where work goes once its assignment is recorded.
pub(crate) enum Outbox {
    /// Pushed to each cell's address over HTTP (production).
    Push(reqwest::Client),
    /// Kept for the caller to deliver (the deterministic simulation).
    Collect(Vec<WorkItem>),
}

/// Makes the id of each new container: random in production, a sequence in the
/// deterministic simulation so that a seed replays exactly.
pub(crate) type InstanceIds = Box<dyn FnMut() -> String + Send>;

impl Outbox {
    /// Pushes work over HTTP, authenticated with the API token (cells accept work only
    /// from a server that holds it).
    pub(crate) fn push(token: &str) -> Result<Outbox, StoreError> {
        let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| StoreError::Unavailable(format!("the API token is not a header: {e}")))?;
        auth.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, auth)]);
        reqwest::Client::builder()
            .default_headers(headers)
            .timeout(PUSH_TIMEOUT)
            .build()
            .map(Outbox::Push)
            .map_err(|e| StoreError::Unavailable(format!("build the HTTP client: {e}")))
    }
}

/// Random container ids.
pub(crate) fn random_ids() -> InstanceIds {
    Box::new(|| uuid::Uuid::new_v4().to_string())
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("cells", &self.cells.len())
            .field("held", &self.held.len())
            .field("queue", &self.queue.len())
            .field("cursor", &self.cursor)
            .finish_non_exhaustive()
    }
}

/// Runs the scheduler until the store fails or the fence is lost (the leader loop then
/// decides whether to start it again).
pub(crate) async fn run(state: AppState, fence: Fence) -> Result<(), StoreError> {
    let mut scheduler = Scheduler::load(
        state.clone(),
        fence,
        Outbox::push(&state.token)?,
        random_ids(),
    )
    .await?;
    let mut wake = state.hub.subscribe();
    loop {
        scheduler.follow().await?;
        if !scheduler.queue.is_empty() {
            scheduler.batch().await?;
            continue;
        }
        tokio::select! {
            _ = wake.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

impl Scheduler {
    /// The view as the store has it now. The cursor is read first, so an event that
    /// lands during the load is applied again afterwards; applying is idempotent.
    pub(crate) async fn load(
        state: AppState,
        fence: Fence,
        outbox: Outbox,
        ids: InstanceIds,
    ) -> Result<Scheduler, StoreError> {
        let store = &state.store;
        let cursor = store.event_bounds().await?.map_or(0, |(_, newest)| newest);
        let mut scheduler = Scheduler {
            state: state.clone(),
            fence,
            snapshot: Snapshot::new(),
            lrps: HashMap::new(),
            cells: HashMap::new(),
            held: HashMap::new(),
            queue: BTreeMap::new(),
            unplaced: HashMap::new(),
            cursor,
            outbox,
            ids,
            cells_published: None,
        };
        for lrp in store.list_lrps(&LrpFilter::default()).await? {
            scheduler.lrps.insert(lrp.spec.name.clone(), Arc::new(lrp));
        }
        for record in store.list_locks(PREFIX, state.now()).await? {
            scheduler.cell_seen(&record);
        }
        for instance in store.list_instances(&InstanceFilter::default()).await? {
            scheduler.instance_seen(instance);
        }
        for pending in [TaskState::Pending, TaskState::Running] {
            let filter = TaskFilter {
                state: Some(pending),
                ..Default::default()
            };
            for task in store.list_tasks(&filter).await? {
                scheduler.task_seen(task);
            }
        }
        tracing::info!(
            cells = scheduler.cells.len(),
            placed = scheduler.held.len(),
            waiting = scheduler.queue.len(),
            "scheduler loaded its view"
        );
        Ok(scheduler)
    }

    /// Follows the log and places everything waiting, until nothing waits.
    pub(crate) async fn step(&mut self) -> Result<(), StoreError> {
        loop {
            self.follow().await?;
            if self.queue.is_empty() {
                return Ok(());
            }
            self.batch().await?;
        }
    }

    /// The work collected for delivery, when the outbox collects.
    pub(crate) fn take_work(&mut self) -> Vec<WorkItem> {
        match &mut self.outbox {
            Outbox::Collect(items) => std::mem::take(items),
            Outbox::Push(_) => Vec::new(),
        }
    }

    /// Applies every event after the cursor to the view.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut stops: Vec<WorkItem> = Vec::new();
        loop {
            let events = self
                .state
                .store
                .events_after(self.cursor, EVENT_PAGE)
                .await?;
            let Some(last) = events.last() else { break };
            self.cursor = last.seq;
            let full = events.len() == EVENT_PAGE;
            for event in &events {
                self.apply(event, &mut stops);
            }
            if !full {
                break;
            }
        }
        self.send(stops);
        self.publish_cells();
        Ok(())
    }

    /// Gives the metrics each live cell's capacity and reservations, at most once per
    /// [`CELLS_PUBLISHED_EVERY`] (the scheduler loop follows the log at least that
    /// often), so that a burst of batches does not copy the view each time.
    fn publish_cells(&mut self) {
        if self
            .cells_published
            .is_some_and(|at| at.elapsed() < CELLS_PUBLISHED_EVERY)
        {
            return;
        }
        self.cells_published = Some(Instant::now());
        let cells = self
            .snapshot
            .cell_ids()
            .filter_map(|id| Some((id.clone(), self.snapshot.usage(id)?)))
            .collect();
        self.state.metrics.cells(cells);
    }

    fn apply(&mut self, event: &Event, stops: &mut Vec<WorkItem>) {
        match event.kind {
            EventKind::LrpCreated | EventKind::LrpChanged => {
                if let Some(lrp) = decode::<Lrp>(event) {
                    self.lrps.insert(lrp.spec.name.clone(), Arc::new(lrp));
                }
            }
            EventKind::LrpRemoved => {
                #[derive(serde::Deserialize)]
                struct Removed {
                    name: Name,
                }
                if let Some(removed) = decode::<Removed>(event) {
                    self.lrps.remove(&removed.name);
                }
            }
            EventKind::InstanceCreated | EventKind::InstanceChanged => {
                if let Some(instance) = decode::<Instance>(event) {
                    self.instance_seen(instance);
                }
            }
            EventKind::InstanceRemoved => {
                #[derive(serde::Deserialize)]
                struct Removed {
                    lrp: Name,
                    index: u32,
                    presence: Presence,
                }
                if let Some(r) = decode::<Removed>(event) {
                    let key = Key::Instance(r.lrp.clone(), r.index, r.presence);
                    self.queue.remove(&key);
                    self.unplaced.remove(&key);
                    if let Some(Held {
                        cell,
                        instance_id: Some(instance_id),
                        ..
                    }) = self.release(&key)
                    {
                        stops.push(WorkItem::StopInstance {
                            cell,
                            lrp: r.lrp,
                            index: r.index,
                            instance_id,
                        });
                    }
                }
            }
            EventKind::TaskCreated | EventKind::TaskChanged => {
                if let Some(task) = decode::<Task>(event) {
                    let id = task.id.clone();
                    let key = Key::Task(id.clone());
                    let was_held = self.held.get(&key).map(|h| h.cell.clone());
                    let cancelled = task.state.deletable()
                        && task.failure_reason.as_deref() == Some(crate::tasks::CANCELLED);
                    self.task_seen(task);
                    if let (Some(cell), true) = (was_held, cancelled) {
                        stops.push(WorkItem::CancelTask { cell, id });
                    }
                }
            }
            EventKind::TaskRemoved => {
                #[derive(serde::Deserialize)]
                struct Removed {
                    id: Name,
                }
                if let Some(removed) = decode::<Removed>(event) {
                    let key = Key::Task(removed.id);
                    self.queue.remove(&key);
                    self.unplaced.remove(&key);
                    self.release(&key);
                }
            }
            EventKind::PresenceCreated | EventKind::PresenceChanged => {
                if let Some(record) = decode::<LockRecord>(event) {
                    let view = |cells: &HashMap<Name, Cell>| {
                        cell_id(&record).and_then(|id| cells.get(&id).map(CellView::from))
                    };
                    let before = view(&self.cells);
                    self.cell_seen(&record);
                    if view(&self.cells) != before {
                        // A new cell, or one that grew, changed its attributes or stopped
                        // draining: everything that did not fit gets another try.
                        self.retry_unplaced();
                    }
                }
            }
            EventKind::PresenceRemoved | EventKind::PresenceExpired => {
                if let Some(id) = decode::<LockRecord>(event).as_ref().and_then(cell_id) {
                    self.cell_gone(&id);
                }
            }
            EventKind::DomainChanged => {}
        }
    }

    /// Records an instance row: what it holds on a cell, or that it waits for one.
    fn instance_seen(&mut self, instance: Instance) {
        let key = Key::Instance(instance.lrp.clone(), instance.index, instance.presence);
        let placed = matches!(
            instance.state,
            InstanceState::Claimed | InstanceState::Running
        );
        match (&instance.key, placed) {
            (
                Some(InstanceKey {
                    instance_id,
                    cell_id,
                }),
                true,
            ) => {
                self.queue.remove(&key);
                self.unplaced.remove(&key);
                let starting = instance.state == InstanceState::Claimed;
                match self.held.get_mut(&key) {
                    Some(held) if held.instance_id.as_deref() == Some(instance_id) => {
                        if held.starting && !starting {
                            held.starting = false;
                            self.snapshot.started(&held.cell);
                        }
                    }
                    _ => {
                        self.release(&key);
                        let Some(lrp) = self.lrps.get(&instance.lrp) else {
                            return;
                        };
                        let work = Work::instance(&lrp.spec, instance.index);
                        self.snapshot.add(cell_id, &work, starting);
                        self.held.insert(
                            key,
                            Held {
                                cell: cell_id.clone(),
                                work,
                                instance_id: Some(instance_id.clone()),
                                starting,
                            },
                        );
                    }
                }
            }
            _ => {
                self.release(&key);
                let waits = instance.state == InstanceState::Unclaimed
                    && instance.presence == Presence::Ordinary;
                if waits && self.is_news(&key, instance.generation) {
                    self.unplaced.remove(&key);
                    self.queue
                        .insert(key, Waiting::Instance(Box::new(instance)));
                } else if !waits {
                    self.queue.remove(&key);
                }
            }
        }
    }

    /// Records a task row: held by a cell once placed, waiting while PENDING without one.
    fn task_seen(&mut self, task: Task) {
        let key = Key::Task(task.id.clone());
        match (&task.cell_id, task.state) {
            (Some(cell), TaskState::Pending | TaskState::Running) => {
                self.queue.remove(&key);
                self.unplaced.remove(&key);
                let starting = task.state == TaskState::Pending;
                match self.held.get_mut(&key) {
                    Some(held) if held.cell == *cell => {
                        if held.starting && !starting {
                            held.starting = false;
                            self.snapshot.started(&held.cell);
                        }
                    }
                    _ => {
                        self.release(&key);
                        let work = Work::task(&task.id, &task.spec);
                        self.snapshot.add(cell, &work, starting);
                        self.held.insert(
                            key,
                            Held {
                                cell: cell.clone(),
                                work,
                                instance_id: None,
                                starting,
                            },
                        );
                    }
                }
            }
            (None, TaskState::Pending) => {
                self.release(&key);
                if self.is_news(&key, task.generation) {
                    self.unplaced.remove(&key);
                    self.queue.insert(key, Waiting::Task(Box::new(task)));
                }
            }
            _ => {
                self.release(&key);
                self.queue.remove(&key);
                self.unplaced.remove(&key);
            }
        }
    }

    /// Forgets what `key` held on its cell, crediting the cell.
    fn release(&mut self, key: &Key) -> Option<Held> {
        let held = self.held.remove(key)?;
        self.snapshot.remove(&held.cell, &held.work, held.starting);
        Some(held)
    }

    /// A cell's presence, new or renewed with a changed value: its capacity, attributes,
    /// or whether it is evacuating, which the snapshot's filters read.
    fn cell_seen(&mut self, record: &LockRecord) {
        if let Some(cell) = cells::decode(record) {
            self.snapshot.upsert_cell(CellView::from(&cell));
            if !self.cells.contains_key(&cell.id) {
                // A cell that comes back may still run what the store assigns to it
                // (suspect instances kept through a partition): count it again.
                for held in self.held.values().filter(|h| h.cell == cell.id) {
                    self.snapshot.add(&held.cell, &held.work, held.starting);
                }
            }
            self.cells.insert(cell.id.clone(), cell);
        }
    }

    /// A cell's presence ended. What it held stays assigned in the store until
    /// convergence marks it suspect and replaces it, so the view remembers it, but
    /// stops offering the cell.
    fn cell_gone(&mut self, id: &Name) {
        self.snapshot.remove_cell(id);
        self.cells.remove(id);
    }

    /// Whether a row at `generation` is newer than what the scheduler itself wrote when
    /// it could not place it.
    fn is_news(&self, key: &Key, generation: u64) -> bool {
        self.unplaced
            .get(key)
            .is_none_or(|row| generation > row.generation())
    }

    /// Queues everything that did not fit, for another try.
    fn retry_unplaced(&mut self) {
        self.queue.extend(self.unplaced.drain());
    }

    /// Places everything waiting (up to [`MAX_BATCH`]), records the assignments, and
    /// sends the work to the cells.
    async fn batch(&mut self) -> Result<(), StoreError> {
        let started = Instant::now();
        let now = self.state.now();
        let mut waiting = Vec::new();
        while waiting.len() < MAX_BATCH {
            let Some((key, item)) = self.queue.pop_first() else {
                break;
            };
            waiting.push((key, item));
        }
        let mut works = Vec::with_capacity(waiting.len());
        let mut rows: HashMap<WorkId, (Key, Waiting)> = HashMap::with_capacity(waiting.len());
        for (key, item) in waiting {
            let work = match &item {
                Waiting::Instance(instance) => match self.lrps.get(&instance.lrp) {
                    Some(lrp) => Work::instance(&lrp.spec, instance.index),
                    // Its LRP is gone: convergence removes the orphan.
                    None => continue,
                },
                Waiting::Task(task) => Work::task(&task.id, &task.spec),
            };
            rows.insert(work.id.clone(), (key, item));
            works.push(work);
        }
        let plan = placement::place(&mut self.snapshot, &works);
        let considered = works.len();

        let mut assignments = Vec::with_capacity(plan.placed.len());
        // Instances and tasks placed, counted here and given to the metrics once.
        let mut placed = (0, 0);
        for placement in plan.placed {
            let Some((key, item)) = rows.remove(&placement.work.id) else {
                continue;
            };
            let cell = placement.cell;
            match &item {
                Waiting::Instance(_) => placed.0 += 1,
                Waiting::Task(_) => placed.1 += 1,
            }
            let (mutation, held, work_item) = match item {
                Waiting::Instance(instance) => {
                    let instance_id = (self.ids)();
                    let claim = InstanceKey {
                        instance_id: instance_id.clone(),
                        cell_id: cell.clone(),
                    };
                    let Ok(next) = instance.claim(claim, now) else {
                        self.snapshot.remove(&cell, &placement.work, true);
                        continue;
                    };
                    let Some(lrp) = self.lrps.get(&instance.lrp) else {
                        self.snapshot.remove(&cell, &placement.work, true);
                        continue;
                    };
                    let work_item = WorkItem::StartInstance {
                        cell: cell.clone(),
                        lrp: Box::new(Lrp::clone(lrp)),
                        index: instance.index,
                        instance_id: instance_id.clone(),
                    };
                    let mutation = Mutation::PutInstance {
                        instance: next,
                        expect: Expect::Generation(instance.generation),
                    };
                    (mutation, Some(instance_id), work_item)
                }
                Waiting::Task(task) => {
                    let mut next = Task::clone(&task);
                    next.cell_id = Some(cell.clone());
                    next.updated_at = now;
                    let work_item = WorkItem::StartTask {
                        cell: cell.clone(),
                        task: Box::new(next.clone()),
                    };
                    let mutation = Mutation::PutTask {
                        task: Box::new(next),
                        expect: Expect::Generation(task.generation),
                    };
                    (mutation, None, work_item)
                }
            };
            self.held.insert(
                key.clone(),
                Held {
                    cell,
                    work: placement.work,
                    instance_id: held,
                    starting: true,
                },
            );
            assignments.push((key, mutation, work_item));
        }

        self.state.metrics.placed(Placed::Instance, placed.0);
        self.state.metrics.placed(Placed::Task, placed.1);
        let mut unplaced = Vec::with_capacity(plan.unplaced.len());
        for (work, reason) in plan.unplaced {
            let Some((key, item)) = rows.remove(&work.id) else {
                continue;
            };
            self.state.metrics.unplaced(
                match &item {
                    Waiting::Instance(_) => Placed::Instance,
                    Waiting::Task(_) => Placed::Task,
                },
                &reason,
            );
            let reason = reason.to_string();
            let (mutation, row) = match item {
                Waiting::Instance(instance) => {
                    if instance.placement_error.as_deref() == Some(reason.as_str()) {
                        self.unplaced.insert(key, Waiting::Instance(instance));
                        continue;
                    }
                    let next = instance.unplaceable(&reason);
                    let mutation = Mutation::PutInstance {
                        instance: next.clone(),
                        expect: Expect::Generation(instance.generation),
                    };
                    (mutation, Waiting::Instance(Box::new(next)))
                }
                Waiting::Task(task) => match crate::reports::rejected(&task, &reason, now) {
                    Ok(next) => {
                        let mutation = Mutation::PutTask {
                            task: Box::new(next.clone()),
                            expect: Expect::Generation(task.generation),
                        };
                        (mutation, Waiting::Task(Box::new(next)))
                    }
                    Err(_) => continue,
                },
            };
            unplaced.push((key, mutation, row));
        }

        let commits = assignments
            .iter()
            .map(|(_, mutation, _)| mutation.clone())
            .chain(unplaced.iter().map(|(_, mutation, _)| mutation.clone()))
            .map(|mutation| {
                let commit = Commit::new(now, vec![mutation]).fenced(self.fence.clone());
                self.state.store.commit(commit)
            });
        let results = join_all(commits).await;
        let mut sends = Vec::with_capacity(assignments.len());
        let (assigned, failed) = results.split_at(assignments.len());
        for ((key, _, work_item), result) in assignments.into_iter().zip(assigned) {
            match result {
                Ok(committed) => {
                    self.state.hub.committed(committed);
                    sends.push(work_item);
                }
                Err(StoreError::Fenced { .. }) => return Err(result.clone().unwrap_err()),
                Err(e) => {
                    // The row moved (scaled away, deleted, already claimed) or the store
                    // failed: give the room back; the next event or convergence decides.
                    tracing::debug!(error = %e, ?key, "assignment not recorded");
                    self.release(&key);
                }
            }
        }
        for ((key, _, mut row), result) in unplaced.into_iter().zip(failed) {
            match result {
                Ok(committed) => {
                    self.state.hub.committed(committed);
                    if let Some(generation) = committed.generations.first() {
                        row.set_generation(*generation);
                        // Only a task that is still waiting (not failed for good) waits
                        // for more room.
                        if !matches!(&row, Waiting::Task(t) if t.state != TaskState::Pending) {
                            self.unplaced.insert(key, row);
                        }
                    }
                }
                Err(StoreError::Fenced { .. }) => return Err(result.clone().unwrap_err()),
                Err(e) => tracing::debug!(error = %e, ?key, "placement error not recorded"),
            }
        }
        tracing::debug!(
            placed = sends.len(),
            unplaced = self.unplaced.len(),
            "scheduling batch done"
        );
        self.send(sends);
        self.state.metrics.batch(considered, started.elapsed());
        Ok(())
    }

    /// Sends work to the cells, one request per cell address (a process that simulates
    /// many cells gets all of theirs at once). Failures are logged, not retried: the
    /// work is recorded, and the cell's reconciliation will find it.
    fn send(&mut self, items: Vec<WorkItem>) {
        let http = match &mut self.outbox {
            Outbox::Collect(collected) => {
                collected.extend(items);
                return;
            }
            Outbox::Push(http) => http.clone(),
        };
        let mut by_address: HashMap<&str, Vec<WorkItem>> = HashMap::new();
        for item in items {
            let cell = match &item {
                WorkItem::StartInstance { cell, .. }
                | WorkItem::KeepInstance { cell, .. }
                | WorkItem::StopInstance { cell, .. }
                | WorkItem::StartTask { cell, .. }
                | WorkItem::CancelTask { cell, .. } => cell,
            };
            match self.cells.get(cell) {
                Some(c) => by_address.entry(c.address.as_str()).or_default().push(item),
                None => tracing::debug!(%cell, "no address for a cell that left"),
            }
        }
        for (address, items) in by_address {
            let url = format!("{}/v1/work", address.trim_end_matches('/'));
            let request = http.post(&url).json(&WorkBatch { items });
            tokio::spawn(async move {
                match request.send().await {
                    Ok(response) if response.status().is_success() => {}
                    Ok(response) => {
                        tracing::warn!(%url, status = %response.status(), "a cell refused work")
                    }
                    Err(e) => tracing::warn!(%url, error = %e, "could not send work to a cell"),
                }
            });
        }
    }
}

fn decode<T: DeserializeOwned>(event: &Event) -> Option<T> {
    match serde_json::from_str(event.data.get()) {
        Ok(value) => Some(value),
        Err(e) => {
            tracing::warn!(seq = event.seq, kind = %event.kind, error = %e, "skipping an event that does not decode");
            None
        }
    }
}

/// The cell a presence record is for.
fn cell_id(record: &LockRecord) -> Option<Name> {
    let id = record.key.strip_prefix(PREFIX)?;
    Name::parse("cell", id).ok()
}

impl Waiting {
    fn generation(&self) -> u64 {
        match self {
            Waiting::Instance(instance) => instance.generation,
            Waiting::Task(task) => task.generation,
        }
    }

    fn set_generation(&mut self, generation: u64) {
        match self {
            Waiting::Instance(instance) => instance.generation = generation,
            Waiting::Task(task) => task.generation = generation,
        }
    }
}
