//! The agent: its configuration, heartbeat, the work it holds, reconciliation with the
//! server's assignments, re-adoption after a restart, and evacuation.
//!
//! Each container is driven by one task (`work.rs`); this module decides which tasks
//! exist. The server's assignments are the truth: the agent starts what is assigned
//! and not running here, and stops what runs here and is not assigned. Work that
//! crossed a reconciliation in flight is not undone: only containers that arrived
//! before the assignments were asked for are stopped when missing from them, and an
//! instance that ended here is not started again unless the server had already heard
//! of its end when it was asked.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use api::{AssignmentsRequest, Heartbeat, Report, WorkItem};
use client::Client;
use image::Credentials;
use model::{Cell, CellCapacity, Name, RegistryCredentials, Rootfs, TaskState};
use runtime::{ContainerRuntime, RootfsSpec, RuntimeEvent};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actions::Downloads;
use crate::images::{Images, Pulled};
use crate::logs::{LogLimits, Logs};
use crate::record::{Kind, Record, Records, task_container};
use crate::reporter::Reporter;
use crate::stacks::Stacks;
use crate::work::{self, Stop};

#[derive(Debug, Clone)]
pub struct CellConfig {
    pub id: Name,
    /// The server's API URL.
    pub server: String,
    pub token: Option<String>,
    /// Where the cell listens for work (`POST /v1/work`) and drain requests.
    pub listen: SocketAddr,
    /// The address other machines reach this cell's published ports at.
    pub advertise_ip: String,
    pub zone: String,
    pub state_dir: PathBuf,
    pub capacity: CellCapacity,
    pub stacks: Stacks,
    pub placement_tags: Vec<String>,
    pub optional_placement_tags: Vec<String>,
    /// Between SIGTERM and SIGKILL when stopping a container.
    pub grace: Duration,
    /// Longest a drain waits for replacements before stopping what is left.
    pub evacuation_timeout: Duration,
    pub reconcile_interval: Duration,
    /// How often each container's usage is sampled (`Agent::usage`, `/metrics`).
    pub usage_interval: Duration,
    /// How much container output the cell lets through and keeps.
    pub logs: LogLimits,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Containers still running when the evacuation timeout passed, stopped anyway.
    pub forced: usize,
}

/// Work the agent holds: one container each, by container id.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) stop: watch::Sender<Option<Stop>>,
    pub(crate) arrived: Instant,
    pub(crate) instance_id: Option<String>,
    pub(crate) task: Option<Name>,
}

#[derive(Debug, Default)]
struct State {
    held: HashMap<String, Held>,
    /// Instances and tasks that ended here, with when the server acknowledged the
    /// report of their end (`None` until it has).
    ended_instances: HashMap<String, Option<Instant>>,
    ended_tasks: HashMap<Name, Option<Instant>>,
}

#[derive(Debug)]
pub struct Agent {
    pub(crate) config: CellConfig,
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
    pub(crate) client: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) reporter: Reporter,
    pub(crate) records: Records,
    pub(crate) downloads: Arc<Downloads>,
    /// The image cache, when the cell runs `docker://` images.
    pub(crate) images: Option<Arc<Images>>,
    pub(crate) evacuating: watch::Sender<bool>,
    state: Mutex<State>,
    /// Signalled whenever held work ends.
    changed: Notify,
    /// Each container's log: its output and what the cell says about it.
    pub(crate) logs: Logs,
    /// The address work is pushed to.
    pub(crate) address: Mutex<String>,
    drain_requested: Notify,
    /// Set when the agent's owner stops the runtime on purpose.
    stopping: std::sync::atomic::AtomicBool,
    /// Each container's latest usage sample.
    pub(crate) usage: crate::usage::UsageBook,
}

impl Agent {
    pub fn new(
        config: CellConfig,
        runtime: Arc<dyn ContainerRuntime>,
    ) -> anyhow::Result<Arc<Agent>> {
        let client = Client::new(&config.server, config.token.clone())?;
        let records = Records::new(&config.state_dir.join("records"))?;
        let downloads = Arc::new(Downloads::new(&config.state_dir.join("downloads"))?);
        let images = match &config.stacks.images {
            Some(source) => Some(Arc::new(Images::open(
                &config.state_dir.join("images"),
                source.clone(),
            )?)),
            None => None,
        };
        Ok(Arc::new(Agent {
            reporter: Reporter::start(client.clone()),
            client,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?,
            records,
            downloads,
            images,
            evacuating: watch::channel(false).0,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            logs: Logs::new(config.logs),
            address: Mutex::new(String::new()),
            drain_requested: Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            usage: Default::default(),
            config,
            runtime,
        }))
    }

    /// Serves work until drained. Binds the work endpoint, re-adopts the containers the
    /// runtime already holds, and keeps the cell's presence alive. `drain` starts an
    /// evacuation when it resolves.
    pub async fn run(
        self: &Arc<Agent>,
        drain: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Drained> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .with_context(|| format!("listening on {}", self.config.listen))?;
        let local = listener.local_addr()?;
        let host = if local.ip().is_unspecified() {
            self.config.advertise_ip.clone()
        } else {
            local.ip().to_string()
        };
        *self.address.lock().expect("address lock") = format!("http://{host}:{}", local.port());
        tokio::spawn(crate::http::serve(listener, self.clone()));
        tokio::spawn(self.clone().capture_output());
        tokio::spawn(self.clone().sample_usage());

        // A drain asked for before the server answered (SIGTERM while it is down) is
        // honoured at once.
        let mut drain = std::pin::pin!(drain);
        tokio::select! {
            adopted = self.adopt() => adopted?,
            () = &mut drain => return Ok(self.drain().await),
        }
        tokio::spawn(self.clone().heartbeat_loop());
        tokio::spawn(self.clone().reconcile_loop());
        info!(
            cell = %self.config.id,
            backend = self.runtime.backend(),
            address = %self.address.lock().expect("address lock"),
            "cell ready"
        );
        tokio::select! {
            () = &mut drain => {}
            () = self.drain_requested.notified() => {}
        }
        Ok(self.drain().await)
    }

    /// The container's root filesystem for `rootfs`, and the image behind it when it
    /// is one (pulled first: only what the cache lacks is downloaded); or why this cell
    /// cannot give it.
    pub(crate) async fn rootfs(
        &self,
        rootfs: &Rootfs,
        login: Option<&RegistryCredentials>,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(RootfsSpec, Option<Pulled>), String> {
        match (rootfs, &self.images) {
            (Rootfs::Docker(image), Some(images)) => {
                let credentials = match login {
                    Some(login) => Credentials::basic(&login.username, &login.password),
                    None => Credentials::Anonymous,
                };
                let pulled = images.pull(image, &credentials, progress).await?;
                let lower = pulled.image.layers.clone();
                Ok((RootfsSpec::Layers { lower }, Some(pulled)))
            }
            _ => Ok((self.config.stacks.resolve(rootfs)?, None)),
        }
    }

    /// Trims the image cache to its limit, keeping the layers of every container that
    /// has a record.
    pub(crate) async fn trim_images(&self) {
        let Some(images) = self.images.clone() else {
            return;
        };
        let records = self.records.clone();
        let trimmed = tokio::task::spawn_blocking(move || {
            images.evict(|| {
                records
                    .all()
                    .iter()
                    .filter_map(|container| records.load(container))
                    .flat_map(|record| record.image_layers)
                    .collect()
            });
        });
        if let Err(e) = trimmed.await {
            warn!(error = %e, "trimming the image cache did not finish");
        }
    }

    /// The cell as announced in heartbeats.
    pub(crate) fn cell(&self) -> Cell {
        Cell {
            id: self.config.id.clone(),
            address: self.address.lock().expect("address lock").clone(),
            zone: self.config.zone.clone(),
            capacity: self.config.capacity,
            rootfs_providers: self.config.stacks.providers(),
            placement_tags: self.config.placement_tags.clone(),
            optional_placement_tags: self.config.optional_placement_tags.clone(),
            attributes: [("backend".to_owned(), self.runtime.backend().to_owned())].into(),
            evacuating: *self.evacuating.borrow(),
        }
    }

    async fn heartbeat_loop(self: Arc<Agent>) {
        let mut interval = Duration::from_secs(1);
        let mut evacuating = self.evacuating.subscribe();
        loop {
            let heartbeat = Heartbeat {
                cells: vec![self.cell()],
            };
            match self.client.heartbeat(&heartbeat).await {
                Ok(reply) => interval = Duration::from_millis(reply.interval_ms.max(50)),
                Err(e) => warn!("heartbeat failed: {e}"),
            }
            // Beat at once when the cell starts evacuating, so placement stops at once.
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = evacuating.changed() => {}
            }
        }
    }

    async fn reconcile_loop(self: Arc<Agent>) {
        loop {
            let every = if *self.evacuating.borrow() {
                Duration::from_secs(5)
            } else {
                self.config.reconcile_interval
            };
            tokio::time::sleep(every).await;
            if let Err(e) = self.reconcile().await {
                warn!("reconciliation failed, the next one tries again: {e:#}");
            }
        }
    }

    /// Finds what the runtime already holds (from an agent before this one), then
    /// reconciles with the server: assigned containers are adopted, others destroyed.
    async fn adopt(self: &Arc<Agent>) -> anyhow::Result<()> {
        let containers = self.runtime.list().await?;
        let mut found: HashMap<String, runtime::protocol::ContainerState> = containers
            .into_iter()
            .map(|c| (c.info.id.clone(), c))
            .collect();
        // Records of containers the runtime no longer has (the helper died): drop them.
        for id in self.records.all() {
            if !found.contains_key(&id) {
                self.records.remove(&id);
            }
        }
        let asked_at = Instant::now();
        let assignments = loop {
            let request = AssignmentsRequest {
                cells: vec![self.config.id.clone()],
            };
            match self.client.assignments(&request).await {
                Ok(work) => break work,
                Err(e) => {
                    warn!("fetching the cell's assignments failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut adopted = 0;
        for item in &assignments.items {
            let (container, keep) = match item {
                WorkItem::StartInstance { instance_id, .. }
                | WorkItem::KeepInstance { instance_id, .. } => (instance_id.clone(), true),
                WorkItem::StartTask { task, .. } => (
                    task_container(task.id.as_str()),
                    task.state == TaskState::Running,
                ),
                _ => continue,
            };
            if !keep {
                continue;
            }
            let Some(state) = found.remove(&container) else {
                continue;
            };
            let Some(mut record) = self.records.load(&container) else {
                found.insert(container, state);
                continue;
            };
            record.info = Some(state.info.clone());
            let exited: HashMap<_, _> = state
                .processes
                .iter()
                .filter_map(|p| p.exit.map(|e| (p.id, e)))
                .collect();
            info!(%container, "re-adopting a running container");
            adopted += 1;
            self.spawn_work(container, record, Some(exited), asked_at);
        }
        for (id, _) in found {
            info!(container = %id, "destroying a container that is no longer assigned here");
            if let Err(e) = self.runtime.destroy(&id).await {
                warn!(container = %id, "could not destroy: {e:#}");
            }
            self.records.remove(&id);
        }
        if adopted > 0 {
            info!(adopted, "re-adopted containers");
        }
        self.apply_assignments(assignments.items, asked_at);
        Ok(())
    }

    async fn reconcile(self: &Arc<Agent>) -> anyhow::Result<()> {
        let asked_at = Instant::now();
        let request = AssignmentsRequest {
            cells: vec![self.config.id.clone()],
        };
        let work = self.client.assignments(&request).await?;
        self.apply_assignments(work.items, asked_at);
        Ok(())
    }

    /// Starts what is assigned and not here; stops what is here and not assigned.
    fn apply_assignments(self: &Arc<Agent>, items: Vec<WorkItem>, asked_at: Instant) {
        let mut assigned: HashSet<String> = HashSet::new();
        for item in items {
            match item {
                WorkItem::StartInstance {
                    cell,
                    lrp,
                    index,
                    instance_id,
                } if cell == self.config.id => {
                    assigned.insert(instance_id.clone());
                    let skip = {
                        let state = self.state.lock().expect("state lock");
                        state.held.contains_key(&instance_id)
                            || ended_since(state.ended_instances.get(&instance_id), asked_at)
                    };
                    if !skip {
                        self.apply(WorkItem::StartInstance {
                            cell,
                            lrp,
                            index,
                            instance_id,
                        });
                    }
                }
                WorkItem::KeepInstance { instance_id, .. } => {
                    assigned.insert(instance_id);
                }
                WorkItem::StartTask { cell, task } if cell == self.config.id => {
                    let container = task_container(task.id.as_str());
                    assigned.insert(container.clone());
                    let (held, ended) = {
                        let state = self.state.lock().expect("state lock");
                        (
                            state.held.contains_key(&container),
                            ended_since(state.ended_tasks.get(&task.id), asked_at),
                        )
                    };
                    if held || ended {
                        continue;
                    }
                    match task.state {
                        TaskState::Pending => self.apply(WorkItem::StartTask { cell, task }),
                        // The server thinks it runs here and it does not: say so, so
                        // that it fails instead of waiting forever.
                        TaskState::Running => {
                            self.reporter.send(Report::TaskCompleted {
                                cell,
                                id: task.id.clone(),
                                failed: true,
                                failure_reason: Some(
                                    "the cell lost the task's container".to_owned(),
                                ),
                                result: None,
                            });
                            self.ended_task(&task.id);
                        }
                        TaskState::Completed | TaskState::Resolving => {}
                    }
                }
                other => self.apply(other),
            }
        }
        let state = self.state.lock().expect("state lock");
        for (container, held) in &state.held {
            if held.arrived < asked_at && !assigned.contains(container) {
                info!(%container, "not assigned here any more: stopping");
                let _ = held.stop.send(Some(Stop::Quiet));
            }
        }
    }

    /// Applies one work item pushed by the scheduler or found in the assignments.
    pub(crate) fn apply(self: &Arc<Agent>, item: WorkItem) {
        match item {
            WorkItem::StartInstance {
                cell,
                lrp,
                index,
                instance_id,
            } => {
                if cell != self.config.id {
                    return warn!(%cell, "work for another cell: ignored");
                }
                if self.holds(&instance_id) {
                    return;
                }
                if *self.evacuating.borrow() {
                    // Placed here before the server heard of the drain: give it back.
                    self.reporter.send(Report::InstanceEvacuatingClaimed {
                        cell,
                        lrp: lrp.spec.name.clone(),
                        index,
                        instance_id,
                    });
                    return;
                }
                let record = Record {
                    work: Kind::Instance {
                        lrp,
                        index,
                        instance_id: instance_id.clone(),
                    },
                    info: None,
                    processes: Vec::new(),
                    running: false,
                    image_layers: Vec::new(),
                    exec_as: None,
                };
                self.spawn_work(instance_id, record, None, Instant::now());
            }
            WorkItem::KeepInstance { .. } => {}
            WorkItem::StopInstance {
                cell,
                lrp,
                index,
                instance_id,
            } => {
                let state = self.state.lock().expect("state lock");
                match state.held.get(&instance_id) {
                    Some(held) => {
                        let _ = held.stop.send(Some(Stop::Asked));
                    }
                    None => {
                        drop(state);
                        self.reporter.send(Report::InstanceStopped {
                            cell,
                            lrp,
                            index,
                            instance_id,
                        });
                    }
                }
            }
            WorkItem::StartTask { cell, task } => {
                if cell != self.config.id {
                    return warn!(%cell, "work for another cell: ignored");
                }
                let container = task_container(task.id.as_str());
                if self.holds(&container) {
                    return;
                }
                if *self.evacuating.borrow() {
                    self.reporter.send(Report::TaskRejected {
                        cell,
                        id: task.id.clone(),
                        reason: "the cell is evacuating".to_owned(),
                    });
                    return;
                }
                let record = Record {
                    work: Kind::Task { task },
                    info: None,
                    processes: Vec::new(),
                    running: false,
                    image_layers: Vec::new(),
                    exec_as: None,
                };
                self.spawn_work(container, record, None, Instant::now());
            }
            WorkItem::CancelTask { id, .. } => {
                let state = self.state.lock().expect("state lock");
                if let Some(held) = state.held.get(&task_container(id.as_str())) {
                    let _ = held.stop.send(Some(Stop::Cancel));
                }
            }
        }
    }

    pub(crate) fn holds(&self, container: &str) -> bool {
        self.state
            .lock()
            .expect("state lock")
            .held
            .contains_key(container)
    }

    /// Starts the task that drives one container. `adopted` holds the exits of its
    /// processes when the container was found running instead of created.
    fn spawn_work(
        self: &Arc<Agent>,
        container: String,
        record: Record,
        adopted: Option<HashMap<runtime::ProcessId, runtime::ExitStatus>>,
        arrived: Instant,
    ) {
        let (stop, stopped) = watch::channel(None);
        let (instance_id, task) = match &record.work {
            Kind::Instance { instance_id, .. } => (Some(instance_id.clone()), None),
            Kind::Task { task } => (None, Some(task.id.clone())),
        };
        self.state.lock().expect("state lock").held.insert(
            container.clone(),
            Held {
                stop,
                arrived,
                instance_id,
                task,
            },
        );
        let agent = self.clone();
        tokio::spawn(async move {
            work::drive(agent.clone(), container.clone(), record, adopted, stopped).await;
            agent.release(&container);
        });
    }

    /// Forgets a container whose task ended, and remembers that it ended.
    fn release(&self, container: &str) {
        let mut state = self.state.lock().expect("state lock");
        if let Some(held) = state.held.remove(container) {
            if let Some(id) = held.instance_id {
                state.ended_instances.insert(id, Some(Instant::now()));
            }
            if let Some(id) = held.task {
                state.ended_tasks.insert(id, Some(Instant::now()));
            }
        }
        // Bounded memory: a reconciliation only needs recent ends.
        let horizon = Instant::now()
            .checked_sub(self.config.reconcile_interval * 4)
            .unwrap_or_else(Instant::now);
        state
            .ended_instances
            .retain(|_, at| at.is_none_or(|at| at > horizon));
        state
            .ended_tasks
            .retain(|_, at| at.is_none_or(|at| at > horizon));
        drop(state);
        self.changed.notify_waiters();
    }

    fn ended_task(&self, id: &Name) {
        self.state
            .lock()
            .expect("state lock")
            .ended_tasks
            .insert(id.clone(), Some(Instant::now()));
    }

    /// The ids of the containers held.
    pub(crate) fn held_containers(&self) -> Vec<String> {
        let state = self.state.lock().expect("state lock");
        state.held.keys().cloned().collect()
    }

    pub(crate) fn held_count(&self) -> usize {
        self.state.lock().expect("state lock").held.len()
    }

    /// Says that the runtime is about to be shut down on purpose (`corral dev` stopping),
    /// so its going away is not an error.
    pub fn stopping(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts an evacuation (`POST /v1/drain`): `run` drains and returns.
    pub(crate) fn request_drain(&self) {
        self.evacuating.send_replace(true);
        self.drain_requested.notify_one();
    }

    /// Evacuates: stops taking work, hands every instance over, waits for the
    /// replacements (each container's task does the handoff), then stops what is left
    /// at the timeout and shuts the runtime helper down.
    pub(crate) async fn drain(self: &Arc<Agent>) -> Drained {
        if !self.evacuating.send_replace(true) {
            info!(cell = %self.config.id, held = self.held_count(), "evacuating");
        }
        let deadline = Instant::now() + self.config.evacuation_timeout;
        loop {
            let changed = self.changed.notified();
            if self.held_count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                break;
            }
        }
        let forced = self.held_count();
        if forced > 0 {
            warn!(forced, "the evacuation timed out: stopping what is left");
            for held in self.state.lock().expect("state lock").held.values() {
                let _ = held.stop.send(Some(Stop::Asked));
            }
            let grace = Instant::now() + self.config.grace + Duration::from_secs(5);
            while self.held_count() > 0 && Instant::now() < grace {
                let changed = self.changed.notified();
                let _ = tokio::time::timeout_at(grace, changed).await;
            }
        }
        Drained { forced }
    }

    /// Keeps the output of the app's processes in the containers' logs.
    async fn capture_output(self: Arc<Agent>) {
        let mut events = self.runtime.subscribe();
        loop {
            match events.recv().await {
                Ok(RuntimeEvent::Output {
                    container,
                    process,
                    stream,
                    log: true,
                    data,
                }) => self.logs.output(&container, process, stream, &data),
                Ok(RuntimeEvent::Exited(end)) => self.logs.exited(&end.container, end.process),
                Ok(RuntimeEvent::HelperLost) => {
                    if !self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                        tracing::error!(
                            "the runtime helper is gone: the cell cannot run containers"
                        );
                    }
                    return;
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    warn!(skipped = n, "output came faster than it was kept");
                }
                Err(_) => return,
            }
        }
    }
}

fn ended_since(ended: Option<&Option<Instant>>, asked_at: Instant) -> bool {
    match ended {
        None => false,
        // Its end was not yet acknowledged, or was acknowledged after the server
        // answered: the assignment is older than the end.
        Some(None) => true,
        Some(Some(at)) => *at > asked_at,
    }
}
