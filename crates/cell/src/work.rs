//! One container's life on the cell, from creation to destruction: an LRP instance
//! (start, startup check, RUNNING, liveness and readiness, crash or stop, evacuation
//! handoff) or a task (the at-most-once start, run, result, completion).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::{Report, ReportResult};
use futures::FutureExt;
use model::{Action, Lrp, PortMapping, Task};
use runtime::{ContainerInfo, ContainerSpec, ExitStatus, Limits, ProcessId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actions::{self, ActionError, Context};
use crate::agent::Agent;
use crate::checks;
use crate::images::Pulled;
use crate::logs::Owner;
use crate::record::{ExecAs, Kind, Record};

/// Why a container is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The server asked (scale down, LRP removed, evacuation timeout): stop gracefully
    /// and report it stopped.
    Asked,
    /// The server no longer assigns it here (a stale report, reconciliation): stop
    /// gracefully without a report.
    Quiet,
    /// The task was cancelled.
    Cancel,
}

/// Largest task result, as the server accepts it.
const MAX_RESULT_BYTES: usize = 50 * 1024;
/// How often an evacuating cell asks whether its instance's replacement runs.
const EVACUATION_POLL: Duration = Duration::from_millis(500);
/// Longest wait for a crashed process's last output to reach the log before the
/// crash is noted after it (a crash by health check, whose processes still run, waits
/// this long).
const SETTLE: Duration = Duration::from_millis(200);
/// Most time between two startup check attempts.
const STARTUP_POLL: Duration = Duration::from_millis(500);

type Exits = HashMap<ProcessId, ExitStatus>;

pub(crate) async fn drive(
    agent: Arc<Agent>,
    container: String,
    record: Record,
    adopted: Option<Exits>,
    stop: watch::Receiver<Option<Stop>>,
) {
    let (owner, index) = match &record.work {
        Kind::Instance { lrp, index, .. } => (Owner::Lrp(lrp.spec.name.clone()), Some(*index)),
        Kind::Task { task } => (Owner::Task(task.id.clone()), None),
    };
    agent.logs.open(&container, owner, index);
    let cell = &agent.config.id;
    agent.logs.note(
        &container,
        match adopted {
            Some(_) => format!("the agent of cell {cell} restarted and took the container back"),
            None => format!("placed on cell {cell}: creating the container"),
        },
    );
    match record.work.clone() {
        Kind::Instance {
            lrp,
            index,
            instance_id,
        } => {
            let instance = Instance {
                agent: agent.clone(),
                container: container.clone(),
                lrp,
                index,
                instance_id,
                record,
                stop,
                image: None,
                spawned: Default::default(),
            };
            instance.run(adopted).await;
        }
        Kind::Task { task } => {
            run_task(
                agent.clone(),
                container.clone(),
                task,
                record,
                adopted,
                stop,
            )
            .await
        }
    }
    agent.logs.close(&container);
    agent.records.remove(&container);
    agent.trim_images().await;
}

struct Instance {
    agent: Arc<Agent>,
    container: String,
    lrp: Box<Lrp>,
    index: u32,
    instance_id: String,
    record: Record,
    stop: watch::Receiver<Option<Stop>>,
    /// The image the container runs on, held until it is gone.
    image: Option<Pulled>,
    /// Every process started in the container, as the actions started them.
    spawned: Arc<std::sync::Mutex<Vec<ProcessId>>>,
}

/// How an instance's life ended.
enum End {
    Crashed(String),
    Stopped(Stop),
    /// Its evacuation handoff is over (or the server no longer wants it).
    HandedOver,
}

impl Instance {
    async fn run(mut self, adopted: Option<Exits>) {
        let end = match adopted {
            Some(exits) => self.adopt(exits).await,
            None => self.start().await,
        };
        let agent = self.agent.clone();
        let grace = agent.config.grace;
        match end {
            End::Crashed(reason) => {
                info!(container = %self.container, lrp = %self.lrp.spec.name, index = self.index, %reason, "instance crashed");
                let mut ended = self.spawned.lock().expect("spawned lock").clone();
                ended.extend(&self.record.processes);
                agent.logs.settle(&self.container, &ended, SETTLE).await;
                self.note(format!("crashed: {reason}"));
                self.destroy().await;
                let _ = agent
                    .reporter
                    .ask(Report::InstanceCrashed {
                        cell: agent.config.id.clone(),
                        lrp: self.lrp.spec.name.clone(),
                        index: self.index,
                        instance_id: self.instance_id.clone(),
                        reason,
                    })
                    .await;
            }
            End::Stopped(why) => {
                self.note(match why {
                    Stop::Asked => "stopping: the server asked",
                    Stop::Quiet => "stopping: the server no longer assigns it to this cell",
                    Stop::Cancel => "stopping: cancelled",
                });
                self.stop_gracefully(grace).await;
                if why == Stop::Asked {
                    let _ = agent
                        .reporter
                        .ask(Report::InstanceStopped {
                            cell: agent.config.id.clone(),
                            lrp: self.lrp.spec.name.clone(),
                            index: self.index,
                            instance_id: self.instance_id.clone(),
                        })
                        .await;
                }
            }
            End::HandedOver => {
                self.note("evacuated: its replacement runs, stopping this one");
                self.stop_gracefully(grace).await
            }
        }
    }

    /// Says something about the instance in its log.
    fn note(&self, text: impl Into<String>) {
        self.agent.logs.note(&self.container, text);
    }

    fn probe(&self) -> checks::Probe<'_> {
        checks::Probe {
            http: &self.agent.http,
            runtime: self.agent.runtime.as_ref(),
        }
    }

    fn save(&self) {
        self.agent.records.save(&self.container, &self.record);
    }

    /// Creates the container, runs setup and the action, waits for the startup check
    /// and reports RUNNING; then watches it.
    async fn start(&mut self) -> End {
        self.save();
        let info = match self.create().await {
            Ok(info) => info,
            Err(reason) => {
                return match *self.stop.borrow() {
                    Some(why) => End::Stopped(why),
                    None => End::Crashed(reason),
                };
            }
        };
        self.record.info = Some(info.clone());
        self.save();
        self.note(created_note(&info));
        let (started_tx, mut started) = mpsc::unbounded_channel();
        let ctx = Arc::new(self.context(&info, started_tx));
        let setup = match self
            .lrp
            .spec
            .setup
            .as_ref()
            .map(|a| with_image(a, &self.image))
        {
            Some(Err(reason)) => return End::Crashed(reason),
            Some(Ok(setup)) => Some(setup),
            None => None,
        };
        let action = match with_image(&self.lrp.spec.action, &self.image) {
            Ok(action) => action,
            Err(reason) => return End::Crashed(reason),
        };
        self.record.exec_as = ExecAs::of(&action);
        self.save();
        if let Some(setup) = setup {
            let ctx = ctx.clone();
            let setup = async move { actions::execute(&ctx, &setup).await };
            match self.until_stop(setup).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return End::Crashed(format!("setup failed: {e}")),
                Err(why) => return End::Stopped(why),
            }
            // Setup's processes are not the instance's.
            while started.try_recv().is_ok() {}
        }
        let main_ctx = ctx.clone();
        let mut main: JoinHandle<Result<(), ActionError>> =
            tokio::spawn(async move { actions::execute(&main_ctx, &action).await });
        let _abort = AbortOnDrop(main.abort_handle());

        // Startup: the liveness check must pass within the start timeout; without
        // one, the instance runs once its process started.
        let checks = self.lrp.spec.checks.clone();
        let deadline = Instant::now() + Duration::from_millis(checks.start_timeout_ms);
        if let Some(liveness) = &checks.liveness {
            let healthy =
                checks::until_healthy(self.probe(), &info, liveness, deadline, STARTUP_POLL);
            let healthy = std::pin::pin!(healthy);
            let mut stop = self.stop.clone();
            tokio::select! {
                result = healthy => if let Err(e) = result {
                    return End::Crashed(format!(
                        "failed health check: did not pass within {} ms: {e}",
                        checks.start_timeout_ms
                    ));
                },
                exit = &mut main => return End::Crashed(action_end(exit)),
                why = stopped(&mut stop) => return End::Stopped(why),
            }
        } else {
            // The first process must at least have started.
            let mut stop = self.stop.clone();
            tokio::select! {
                Some(process) = started.recv() => self.record.processes.push(process),
                exit = &mut main => return End::Crashed(action_end(exit)),
                why = stopped(&mut stop) => return End::Stopped(why),
            }
        }
        while let Ok(process) = started.try_recv() {
            self.record.processes.push(process);
        }
        self.record.running = true;
        self.save();
        let main = async move { action_end(main.await) }.boxed();
        self.watch(info, main, Some(started)).await
    }

    /// Picks up a container an earlier agent started: it lives while its recorded
    /// processes do.
    async fn adopt(&mut self, exits: Exits) -> End {
        let Some(info) = self.record.info.clone() else {
            return End::Crashed("the cell restarted while the container was being made".into());
        };
        if !self.record.running {
            return End::Crashed("the cell restarted while the instance was starting".into());
        }
        if let Some((_, status)) = exits
            .iter()
            .find(|(p, _)| self.record.processes.contains(p))
        {
            return End::Crashed(status.describe());
        }
        let runtime = self.agent.runtime.clone();
        let container = self.container.clone();
        let processes = self.record.processes.clone();
        let main = async move {
            let waits = processes.iter().map(|p| {
                let runtime = runtime.clone();
                let container = container.clone();
                let p = *p;
                Box::pin(async move { actions::wait_for(runtime.as_ref(), &container, p).await })
            });
            let (status, _, _) = futures::future::select_all(waits).await;
            status.describe()
        }
        .boxed();
        self.watch(info, main, None).await
    }

    /// Reports RUNNING, then watches liveness, readiness, the action's end, stop
    /// requests and, on a draining cell, the evacuation handoff.
    async fn watch(
        &mut self,
        info: ContainerInfo,
        mut main: futures::future::BoxFuture<'static, String>,
        mut started: Option<mpsc::UnboundedReceiver<ProcessId>>,
    ) -> End {
        let checks = self.lrp.spec.checks.clone();
        let mut routable = checks.readiness.is_none();
        if let Some(readiness) = &checks.readiness {
            routable = checks::attempt(self.probe(), &info, readiness)
                .await
                .is_ok();
        }
        self.note(match (&checks.liveness, routable) {
            (Some(_), true) => "healthy: running",
            (Some(_), false) => "healthy: running, not ready for traffic yet",
            (None, true) => "running",
            (None, false) => "running, not ready for traffic yet",
        });
        if let Some(end) = self.report_running(&info, routable).await {
            return end;
        }
        let far = Duration::from_secs(365 * 24 * 3600);
        let interval = |check: &Option<model::Check>| {
            check
                .as_ref()
                .map_or(far, |c| Duration::from_millis(c.interval_ms.max(10)))
        };
        let mut liveness = tokio::time::interval_at(
            Instant::now() + interval(&checks.liveness),
            interval(&checks.liveness),
        );
        let mut readiness = tokio::time::interval_at(
            Instant::now() + interval(&checks.readiness),
            interval(&checks.readiness),
        );
        let mut evacuating = self.agent.evacuating.subscribe();
        let mut stop = self.stop.clone();
        loop {
            let draining = *evacuating.borrow();
            tokio::select! {
                reason = &mut main => return End::Crashed(reason),
                why = stopped(&mut stop) => return End::Stopped(why),
                _ = liveness.tick() => {
                    if let Some(check) = &checks.liveness
                        && let Err(e) = checks::attempt(self.probe(), &info, check).await
                    {
                        return End::Crashed(format!("failed health check: {e}"));
                    }
                }
                _ = readiness.tick() => {
                    if let Some(check) = &checks.readiness {
                        let ready = checks::attempt(self.probe(), &info, check).await.is_ok();
                        if ready != routable {
                            routable = ready;
                            info!(container = %self.container, routable, "readiness changed");
                            self.note(if routable {
                                "ready: routable"
                            } else {
                                "not ready: out of the routes until its readiness check passes"
                            });
                            if let Some(end) = self.report_running(&info, routable).await {
                                return end;
                            }
                        }
                    }
                }
                Some(process) = recv(&mut started) => {
                    self.record.processes.push(process);
                    self.save();
                }
                _ = evacuating.changed(), if !draining => {
                    if *evacuating.borrow() {
                        self.note("evacuating: the cell is draining, asking for a replacement elsewhere");
                    }
                }
                _ = tokio::time::sleep(Duration::ZERO), if draining => {
                    if let Some(end) = self.hand_over().await {
                        return end;
                    }
                    tokio::time::sleep(EVACUATION_POLL).await;
                }
            }
        }
    }

    /// Asks the server for a replacement (the first time) or whether it runs yet.
    async fn hand_over(&self) -> Option<End> {
        let report = Report::InstanceEvacuating {
            cell: self.agent.config.id.clone(),
            lrp: self.lrp.spec.name.clone(),
            index: self.index,
            instance_id: self.instance_id.clone(),
        };
        match self.agent.reporter.ask(report).await {
            Some(ReportResult::Ok) => None,
            Some(ReportResult::Stale { message }) => {
                info!(container = %self.container, %message, "evacuated");
                Some(End::HandedOver)
            }
            None => Some(End::HandedOver),
        }
    }

    /// `Some` when the server no longer wants this instance here.
    async fn report_running(&self, info: &ContainerInfo, routable: bool) -> Option<End> {
        let report = Report::InstanceRunning {
            cell: self.agent.config.id.clone(),
            lrp: self.lrp.spec.name.clone(),
            index: self.index,
            instance_id: self.instance_id.clone(),
            address: self.agent.config.advertise_ip.clone(),
            ports: info
                .ports
                .iter()
                .map(|p| PortMapping {
                    container_port: p.container_port,
                    host_port: p.host_port,
                })
                .collect(),
            routable,
        };
        match self.agent.reporter.ask(report).await {
            Some(ReportResult::Ok) => None,
            Some(ReportResult::Stale { message }) => {
                info!(container = %self.container, %message, "the server no longer assigns this instance here");
                Some(End::Stopped(Stop::Quiet))
            }
            None => Some(End::Stopped(Stop::Quiet)),
        }
    }

    fn context(&self, info: &ContainerInfo, started: mpsc::UnboundedSender<ProcessId>) -> Context {
        let env = work_env(&self.record.work);
        Context {
            runtime: self.agent.runtime.clone(),
            container: self.container.clone(),
            root: info.root.clone(),
            env,
            downloads: self.agent.downloads.clone(),
            started,
            spawned: self.spawned.clone(),
        }
    }

    async fn create(&mut self) -> Result<ContainerInfo, String> {
        let spec = &self.lrp.spec;
        let (rootfs, image) = match self
            .until_stop(self.agent.rootfs(
                &spec.rootfs,
                spec.image_credentials.as_ref(),
                &|done_bytes, total_bytes| {
                    self.agent.reporter.send(Report::InstancePulling {
                        cell: self.agent.config.id.clone(),
                        lrp: spec.name.clone(),
                        index: self.index,
                        instance_id: self.instance_id.clone(),
                        done_bytes,
                        total_bytes,
                    })
                },
            ))
            .await
        {
            Ok(prepared) => prepared?,
            Err(_) => return Err("stopped while starting".into()),
        };
        // An image's ports are published when the LRP names none.
        let ports = match &image {
            Some(image) if spec.ports.is_empty() => image.exposed_ports(),
            _ => spec.ports.clone(),
        };
        let container = ContainerSpec {
            id: self.container.clone(),
            rootfs,
            limits: limits(&spec.resources),
            env: image.as_ref().map(Pulled::env).unwrap_or_default(),
            mounts: Vec::new(),
            ports,
            hostname: format!("{}-{}", spec.name, self.index).to_lowercase(),
        };
        if let Some(image) = &image {
            self.record.image_layers = image.layer_digests();
            self.save();
        }
        self.image = image;
        let created = self.agent.runtime.create(container);
        match self.until_stop(created).await {
            Ok(Ok(info)) => Ok(info),
            Ok(Err(e)) => Err(format!("creating the container failed: {e:#}")),
            Err(_) => {
                // Stopped while being made: whatever was made goes.
                self.destroy().await;
                Err("stopped while starting".into())
            }
        }
    }

    async fn until_stop<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T, Stop> {
        let mut stop = self.stop.clone();
        tokio::select! {
            result = work => Ok(result),
            why = stopped(&mut stop) => Err(why),
        }
    }

    /// SIGTERM to everything in the container, SIGKILL after the grace period.
    async fn stop_gracefully(&self, grace: Duration) {
        let runtime = &self.agent.runtime;
        if runtime.signal(&self.container, None, 15).await.is_ok() {
            let processes = self.record.processes.clone();
            let all_exited = async {
                for p in processes {
                    actions::wait_for(runtime.as_ref(), &self.container, p).await;
                }
            };
            let _ = tokio::time::timeout(grace, all_exited).await;
        }
        self.destroy().await;
    }

    async fn destroy(&self) {
        if let Err(e) = self.agent.runtime.destroy(&self.container).await {
            warn!(container = %self.container, "destroying the container failed: {e:#}");
        }
    }
}

/// The environment the cell gives every process of an instance or a task (an exec
/// session's too): who it is, then the LRP's or task's own variables.
pub(crate) fn work_env(work: &Kind) -> Vec<(String, String)> {
    match work {
        Kind::Instance {
            lrp,
            index,
            instance_id,
        } => {
            let mut env: Vec<(String, String)> = vec![
                ("INSTANCE_INDEX".into(), index.to_string()),
                ("INSTANCE_GUID".into(), instance_id.clone()),
                ("CORRAL_LRP".into(), lrp.spec.name.to_string()),
                ("CORRAL_INSTANCE_INDEX".into(), index.to_string()),
                ("CORRAL_INSTANCE_ID".into(), instance_id.clone()),
            ];
            env.extend(lrp.spec.env.iter().cloned());
            env
        }
        Kind::Task { task } => {
            let mut env = vec![("CORRAL_TASK".to_owned(), task.id.to_string())];
            env.extend(task.spec.env.iter().cloned());
            env
        }
    }
}

fn created_note(info: &ContainerInfo) -> String {
    let ports: Vec<String> = info
        .ports
        .iter()
        .map(|p| format!("{}->{}", p.host_port, p.container_port))
        .collect();
    if ports.is_empty() {
        format!("container created at {}", info.address)
    } else {
        format!(
            "container created at {}, ports {}",
            info.address,
            ports.join(", ")
        )
    }
}

fn action_end(exit: Result<Result<(), ActionError>, tokio::task::JoinError>) -> String {
    match exit {
        Ok(Ok(())) => "exited with status 0".to_owned(),
        Ok(Err(e)) => e.0,
        Err(e) => format!("the action's task failed: {e}"),
    }
}

async fn recv<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Resolves when a stop is requested, with its reason.
async fn stopped(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(why) = *stop.borrow_and_update() {
            return why;
        }
        if stop.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `action` with its `run_image` nodes made runs of the image's command.
fn with_image(action: &Action, image: &Option<Pulled>) -> Result<Action, String> {
    match image {
        Some(image) => action.with_image(&image.command()),
        None if action.uses_image() => {
            Err("run_image: the rootfs is not an image, so there is no command to run".into())
        }
        None => Ok(action.clone()),
    }
}

fn limits(resources: &model::Resources) -> Limits {
    Limits {
        memory_bytes: resources.memory_mb * 1024 * 1024,
        cpu_weight: resources.cpu_weight,
        pids: if resources.max_pids == 0 {
            1024
        } else {
            resources.max_pids
        },
        disk_bytes: resources.disk_mb * 1024 * 1024,
    }
}

async fn run_task(
    agent: Arc<Agent>,
    container: String,
    task: Box<Task>,
    mut record: Record,
    adopted: Option<Exits>,
    mut stop: watch::Receiver<Option<Stop>>,
) {
    let cell = agent.config.id.clone();
    let complete =
        |failed: bool, reason: Option<String>, result: Option<String>| Report::TaskCompleted {
            cell: cell.clone(),
            id: task.id.clone(),
            failed,
            failure_reason: reason,
            result,
        };
    let outcome: Result<Option<String>, String> = match adopted {
        Some(exits) => {
            // Started by an earlier agent: it ends when its processes do.
            let mut failure = None;
            for p in &record.processes {
                let status = match exits.get(p) {
                    Some(status) => *status,
                    None => actions::wait_for(agent.runtime.as_ref(), &container, *p).await,
                };
                if !status.success() {
                    failure = Some(status.describe());
                }
            }
            match failure {
                Some(reason) => Err(reason),
                None => read_result(&agent, &record, &task).await,
            }
        }
        None => {
            // The at-most-once gate: run only if the server accepts the start.
            match agent
                .reporter
                .ask(Report::TaskStarted {
                    cell: cell.clone(),
                    id: task.id.clone(),
                })
                .await
            {
                Some(ReportResult::Ok) => {}
                _ => return,
            }
            agent.records.save(&container, &record);
            // A pull may take long: a cancel meanwhile ends the task at once.
            let prepared = tokio::select! {
                biased;
                why = stopped(&mut stop) => {
                    info!(%container, ?why, "task stopped while its image was pulled");
                    Err("task was cancelled".to_owned())
                }
                prepared = agent.rootfs(
                    &task.spec.rootfs,
                    task.spec.image_credentials.as_ref(),
                    &|_, _| {},
                ) => prepared,
            };
            let prepared = prepared.and_then(|(rootfs, image)| {
                let action = with_image(&task.spec.action, &image)?;
                Ok((rootfs, image, action))
            });
            if let Ok((_, _, action)) = &prepared {
                record.exec_as = ExecAs::of(action);
            }
            let (rootfs, image, action) = match prepared {
                Ok(prepared) => prepared,
                Err(reason) => {
                    let _ = agent.reporter.ask(complete(true, Some(reason), None)).await;
                    return;
                }
            };
            if let Some(image) = &image {
                record.image_layers = image.layer_digests();
                agent.records.save(&container, &record);
            }
            let spec = ContainerSpec {
                id: container.clone(),
                rootfs,
                limits: limits(&task.spec.resources),
                env: image.as_ref().map(Pulled::env).unwrap_or_default(),
                mounts: Vec::new(),
                ports: Vec::new(),
                hostname: "task".to_owned(),
            };
            match agent.runtime.create(spec).await {
                Err(e) => Err(format!("creating the container failed: {e:#}")),
                Ok(info) => {
                    record.info = Some(info.clone());
                    agent.records.save(&container, &record);
                    agent.logs.note(&container, created_note(&info));
                    let (started_tx, mut started) = mpsc::unbounded_channel();
                    let env = work_env(&record.work);
                    let ctx = Context {
                        runtime: agent.runtime.clone(),
                        container: container.clone(),
                        root: info.root.clone(),
                        env,
                        downloads: agent.downloads.clone(),
                        started: started_tx,
                        spawned: Default::default(),
                    };
                    let run = actions::execute(&ctx, &action);
                    let mut run = std::pin::pin!(run);
                    let result = loop {
                        tokio::select! {
                            biased;
                            why = stopped(&mut stop) => {
                                info!(%container, ?why, "task stopped");
                                break None;
                            }
                            result = &mut run => break Some(result),
                            Some(p) = started.recv() => {
                                record.processes.push(p);
                                agent.records.save(&container, &record);
                            }
                        }
                    };
                    // A process that ended before its id was read is still the task's.
                    while let Ok(p) = started.try_recv() {
                        record.processes.push(p);
                    }
                    match result {
                        None => Err("task was cancelled".to_owned()),
                        Some(Err(e)) => Err(e.0),
                        Some(Ok(())) => read_result(&agent, &record, &task).await,
                    }
                }
            }
        }
    };
    agent
        .logs
        .settle(&container, &record.processes, SETTLE)
        .await;
    agent.logs.note(
        &container,
        match &outcome {
            Ok(_) => "task succeeded".to_owned(),
            Err(reason) => format!("task failed: {reason}"),
        },
    );
    if let Err(e) = agent.runtime.destroy(&container).await {
        warn!(%container, "destroying the task's container failed: {e:#}");
    }
    let report = match outcome {
        Ok(result) => complete(false, None, result),
        Err(reason) => complete(true, Some(reason), None),
    };
    let _ = agent.reporter.ask(report).await;
}

async fn read_result(
    agent: &Agent,
    record: &Record,
    task: &Task,
) -> Result<Option<String>, String> {
    let Some(path) = task.spec.result_file.clone() else {
        return Ok(None);
    };
    let Some(info) = record.info.clone() else {
        return Err("the task's container is gone".to_owned());
    };
    let _ = agent;
    let read = tokio::task::spawn_blocking(move || {
        runtime::fs::read_in_root(&info.root, &path, MAX_RESULT_BYTES)
            .map_err(|e| format!("reading the result file: {e:#}"))
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok(Some(String::from_utf8_lossy(&read).into_owned()))
}
