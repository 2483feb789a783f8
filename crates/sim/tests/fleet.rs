//! A fleet of simulated cells against a fake server that records what the fleet sends
//! and pushes work to it: heartbeats, instances, crashes, tasks, stale answers,
//! reconciliation and shutdown.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{
    AssignmentsRequest, Heartbeat, HeartbeatReply, Report, ReportResult, Reports, ReportsReply,
    WorkBatch, WorkItem,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use model::{
    Action, Checks, CrashPolicy, Lrp, LrpSpec, Name, Resources, Rootfs, Routes, Task, TaskSpec,
    TaskState, Timestamp,
};
use sim::{Latency, SimCells, SimFleet, SimOptions, Stats};
use tokio::net::TcpListener;

const TOKEN: &str = "t0ken";
const DEADLINE: Duration = Duration::from_secs(10);
const HEARTBEAT_INTERVAL_MS: u64 = 50;

/// A condition on what the fake has seen.
type Until = Arc<dyn Fn(&Fake) -> bool + Send + Sync>;

/// What the fake server saw, and what it answers. Like the real server, it assigns
/// what it pushes, unassigns what was reported ended, and marks a task RUNNING when
/// its start is accepted.
#[derive(Default)]
struct Fake {
    heartbeats: Vec<Heartbeat>,
    reports: Vec<Report>,
    assignment_requests: Vec<AssignmentsRequest>,
    bad_tokens: usize,
    /// Answered to every assignments request, filtered to the cells asked about.
    assignments: Vec<WorkItem>,
    /// Instance and task ids whose reports are answered `Stale`.
    stale: HashSet<String>,
    /// Holds the answer to the next assignments request, as read when it came in,
    /// until this holds: a slow answer that crosses other messages in flight.
    hold_assignments: Option<Until>,
    assignments_answered: usize,
}

impl Fake {
    fn assign(&mut self, item: &WorkItem) {
        match item {
            WorkItem::StartInstance { .. }
            | WorkItem::KeepInstance { .. }
            | WorkItem::StartTask { .. } => {
                self.assignments.push(item.clone());
            }
            WorkItem::StopInstance { .. } | WorkItem::CancelTask { .. } => {
                self.unassign(subject_of_work(item));
            }
        }
    }

    fn unassign(&mut self, subject: &str) {
        self.assignments.retain(|a| subject_of_work(a) != subject);
    }

    fn apply(&mut self, report: &Report) {
        match report {
            Report::InstanceCrashed { instance_id, .. }
            | Report::InstanceStopped { instance_id, .. }
            | Report::InstanceEvacuatingClaimed { instance_id, .. } => self.unassign(instance_id),
            Report::TaskCompleted { id, .. } | Report::TaskRejected { id, .. } => {
                self.unassign(id.as_str());
            }
            Report::TaskStarted { id, .. } => {
                for item in &mut self.assignments {
                    if let WorkItem::StartTask { task, .. } = item
                        && task.id == *id
                    {
                        task.state = TaskState::Running;
                    }
                }
            }
            Report::InstanceRunning { .. }
            | Report::InstanceEvacuating { .. }
            | Report::InstancePulling { .. } => {}
        }
    }
}

#[derive(Clone)]
struct FakeServer {
    url: String,
    state: Arc<Mutex<Fake>>,
    http: reqwest::Client,
}

impl FakeServer {
    async fn start() -> FakeServer {
        let state = Arc::new(Mutex::new(Fake::default()));
        let app = Router::new()
            .route("/v1/cells/heartbeat", post(heartbeat))
            .route("/v1/cells/assignments", post(assignments))
            .route("/v1/cells/reports", post(reports))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        FakeServer {
            url,
            state,
            http: reqwest::Client::new(),
        }
    }

    fn options(&self, count: u32) -> SimOptions {
        let seed = std::env::var("SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| u64::from(std::process::id()));
        SimOptions {
            token: Some(TOKEN.into()),
            start_latency: Latency::Fixed(Duration::from_millis(5)),
            seed: Some(seed),
            // Only the pass at start, unless a test wants more.
            reconcile_interval: Duration::from_secs(3600),
            ..SimOptions::new(&self.url, count)
        }
    }

    async fn fleet(&self, options: SimOptions) -> SimFleet {
        let fleet = SimCells::start(options).await.expect("the fleet starts");
        // The seed repeats the run's random draws (SIM_SEED=... cargo test).
        eprintln!("fleet seed {}", fleet.seed());
        fleet
    }

    fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.state.lock().expect("the fake's lock"))
    }

    async fn push(&self, fleet: &SimFleet, items: Vec<WorkItem>) {
        self.with(|fake| items.iter().for_each(|item| fake.assign(item)));
        let response = self
            .http
            .post(format!("{}/v1/work", fleet.url()))
            .json(&WorkBatch { items })
            .send()
            .await
            .expect("push work");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
    }

    /// Waits until `check` finds what it looks for in the recorded requests.
    async fn wait_for<T>(&self, what: &str, mut check: impl FnMut(&Fake) -> Option<T>) -> T {
        let start = tokio::time::Instant::now();
        loop {
            if let Some(found) = self.with(|fake| check(fake)) {
                return found;
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn authorized(state: &Mutex<Fake>, headers: &HeaderMap) -> Result<(), StatusCode> {
    let expected = format!("Bearer {TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str()) {
        return Ok(());
    }
    state.lock().expect("lock").bad_tokens += 1;
    Err(StatusCode::UNAUTHORIZED)
}

async fn heartbeat(
    State(state): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    Json(heartbeat): Json<Heartbeat>,
) -> Result<Json<HeartbeatReply>, StatusCode> {
    authorized(&state, &headers)?;
    state.lock().expect("lock").heartbeats.push(heartbeat);
    Ok(Json(HeartbeatReply {
        ttl_ms: 3 * HEARTBEAT_INTERVAL_MS,
        interval_ms: HEARTBEAT_INTERVAL_MS,
    }))
}

async fn assignments(
    State(state): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    Json(request): Json<AssignmentsRequest>,
) -> Result<Json<WorkBatch>, StatusCode> {
    authorized(&state, &headers)?;
    let (items, hold) = {
        let mut fake = state.lock().expect("lock");
        let items: Vec<WorkItem> = fake
            .assignments
            .iter()
            .filter(|item| request.cells.contains(cell_of(item)))
            .cloned()
            .collect();
        fake.assignment_requests.push(request);
        (items, fake.hold_assignments.take())
    };
    if let Some(until) = hold {
        let start = tokio::time::Instant::now();
        while !until(&state.lock().expect("lock")) {
            assert!(
                start.elapsed() < DEADLINE,
                "the held answer was never released"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    state.lock().expect("lock").assignments_answered += 1;
    Ok(Json(WorkBatch { items }))
}

async fn reports(
    State(state): State<Arc<Mutex<Fake>>>,
    headers: HeaderMap,
    Json(reports): Json<Reports>,
) -> Result<Json<ReportsReply>, StatusCode> {
    authorized(&state, &headers)?;
    let mut fake = state.lock().expect("lock");
    let results = reports
        .reports
        .iter()
        .map(|report| {
            if fake.stale.contains(subject_of(report)) {
                ReportResult::Stale {
                    message: "assigned elsewhere".into(),
                }
            } else {
                fake.apply(report);
                ReportResult::Ok
            }
        })
        .collect();
    fake.reports.extend(reports.reports);
    Ok(Json(ReportsReply { results }))
}

fn cell_of(item: &WorkItem) -> &Name {
    match item {
        WorkItem::StartInstance { cell, .. }
        | WorkItem::KeepInstance { cell, .. }
        | WorkItem::StopInstance { cell, .. }
        | WorkItem::StartTask { cell, .. }
        | WorkItem::CancelTask { cell, .. } => cell,
    }
}

fn subject_of_work(item: &WorkItem) -> &str {
    match item {
        WorkItem::StartInstance { instance_id, .. }
        | WorkItem::KeepInstance { instance_id, .. }
        | WorkItem::StopInstance { instance_id, .. } => instance_id,
        WorkItem::StartTask { task, .. } => task.id.as_str(),
        WorkItem::CancelTask { id, .. } => id.as_str(),
    }
}

/// The instance id or task id a report is about.
fn subject_of(report: &Report) -> &str {
    match report {
        Report::InstanceRunning { instance_id, .. }
        | Report::InstanceCrashed { instance_id, .. }
        | Report::InstanceStopped { instance_id, .. }
        | Report::InstanceEvacuating { instance_id, .. }
        | Report::InstancePulling { instance_id, .. }
        | Report::InstanceEvacuatingClaimed { instance_id, .. } => instance_id,
        Report::TaskStarted { id, .. }
        | Report::TaskCompleted { id, .. }
        | Report::TaskRejected { id, .. } => id.as_str(),
    }
}

fn name(s: &str) -> Name {
    Name::parse("name", s).expect("a valid name")
}

fn lrp(lrp_name: &str, env: &[(&str, &str)]) -> Box<Lrp> {
    Box::new(Lrp {
        spec: LrpSpec {
            image_credentials: None,
            name: name(lrp_name),
            domain: name("default"),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("rootfs"),
            instances: 1,
            resources: Resources::default(),
            setup: None,
            action: Action::run("sleep", ["1000"]),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ports: vec![8080, 9090],
            checks: Checks::default(),
            routes: Routes::default(),
            placement_tags: vec![],
            crash_policy: CrashPolicy::default(),
            annotation: String::new(),
        },
        generation: 1,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
    })
}

fn start_instance(cell: &str, lrp_name: &str, id: &str, env: &[(&str, &str)]) -> WorkItem {
    WorkItem::StartInstance {
        cell: name(cell),
        lrp: lrp(lrp_name, env),
        index: 0,
        instance_id: id.into(),
    }
}

fn task(id: &str, state: TaskState, env: &[(&str, &str)]) -> Box<Task> {
    Box::new(Task {
        id: name(id),
        spec: TaskSpec {
            image_credentials: None,
            domain: name("default"),
            rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("rootfs"),
            resources: Resources::default(),
            action: Action::run("true", Vec::<String>::new()),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            result_file: None,
            completion_callback_url: None,
            placement_tags: vec![],
            annotation: String::new(),
        },
        state,
        cell_id: None,
        result: None,
        failed: false,
        failure_reason: None,
        rejection_count: 0,
        rejection_reason: None,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        first_completed_at: None,
        generation: 1,
    })
}

fn start_task(cell: &str, id: &str, env: &[(&str, &str)]) -> WorkItem {
    WorkItem::StartTask {
        cell: name(cell),
        task: task(id, TaskState::Pending, env),
    }
}

/// The reports about `subject`, by kind, in the order received.
fn kinds_about(fake: &Fake, subject: &str) -> Vec<&'static str> {
    fake.reports
        .iter()
        .filter(|r| subject_of(r) == subject)
        .map(|r| match r {
            Report::InstanceRunning { .. } => "running",
            Report::InstanceCrashed { .. } => "crashed",
            Report::InstanceStopped { .. } => "stopped",
            Report::InstanceEvacuating { .. } => "evacuating",
            Report::InstanceEvacuatingClaimed { .. } => "evacuating_claimed",
            Report::InstancePulling { .. } => "pulling",
            Report::TaskStarted { .. } => "task_started",
            Report::TaskCompleted { .. } => "task_completed",
            Report::TaskRejected { .. } => "task_rejected",
        })
        .collect()
}

async fn wait_for_stats(fleet: &SimFleet, what: &str, check: impl Fn(&Stats) -> bool) -> Stats {
    let start = tokio::time::Instant::now();
    loop {
        let stats = fleet.stats();
        if check(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn heartbeats_name_every_cell_in_one_request() {
    let server = FakeServer::start().await;
    let fleet = server
        .fleet(SimOptions {
            zones: 2,
            prefix: "rack".into(),
            ..server.options(5)
        })
        .await;
    let heartbeat = server
        .wait_for(
            "a second heartbeat, at the interval the reply asked for",
            |f| (f.heartbeats.len() >= 2).then(|| f.heartbeats[1].clone()),
        )
        .await;
    let cells: Vec<_> = heartbeat
        .cells
        .iter()
        .map(|c| (c.id.as_str(), c.zone.as_str()))
        .collect();
    assert_eq!(
        cells,
        [
            ("rack-0", "zone-0"),
            ("rack-1", "zone-1"),
            ("rack-2", "zone-0"),
            ("rack-3", "zone-1"),
            ("rack-4", "zone-0"),
        ]
    );
    assert!(heartbeat.cells.iter().all(|c| c.address == fleet.url()));
    assert_eq!(heartbeat.cells[0].capacity, sim::DEFAULT_CAPACITY);
    assert_eq!(
        heartbeat.cells[0].rootfs_providers,
        ["host", "busybox", "docker"]
    );
    assert_eq!(server.with(|f| f.bad_tokens), 0);
    // The fake saw the request before the fleet read the reply.
    wait_for_stats(&fleet, "two heartbeats counted", |s| s.heartbeats >= 2).await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_started_instance_reports_running_with_its_ports() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(2)).await;
    server
        .push(&fleet, vec![start_instance("sim-1", "web", "web-0-a", &[])])
        .await;
    let running = server
        .wait_for("InstanceRunning", |f| {
            f.reports
                .iter()
                .find(|r| matches!(r, Report::InstanceRunning { .. }))
                .cloned()
        })
        .await;
    let Report::InstanceRunning {
        cell,
        lrp,
        index,
        instance_id,
        address,
        ports,
        routable,
    } = running
    else {
        unreachable!()
    };
    assert_eq!(
        (cell.as_str(), lrp.as_str(), index, instance_id.as_str()),
        ("sim-1", "web", 0, "web-0-a")
    );
    assert_eq!(address, "127.0.0.1");
    assert!(routable);
    let container_ports: Vec<_> = ports.iter().map(|p| p.container_port).collect();
    assert_eq!(container_ports, [8080, 9090]);
    assert!(ports.iter().all(|p| p.host_port > 0));
    assert_ne!(ports[0].host_port, ports[1].host_port);
    let stats = wait_for_stats(&fleet, "one running instance", |s| s.instances_running == 1).await;
    assert_eq!((stats.starts, stats.crashes, stats.overcommits), (1, 0, 0));

    // A repeated push does not start a second container.
    server
        .push(&fleet, vec![start_instance("sim-1", "web", "web-0-a", &[])])
        .await;
    server
        .push(&fleet, vec![start_instance("sim-0", "web", "web-1-a", &[])])
        .await;
    wait_for_stats(&fleet, "the second instance", |s| s.instances_running == 2).await;
    assert_eq!(fleet.stats().starts, 2);
    fleet.shutdown().await;
}

#[tokio::test]
async fn sim_crash_after_ms_crashes_a_running_instance() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(
            &fleet,
            vec![start_instance(
                "sim-0",
                "flaky",
                "flaky-0-a",
                &[("SIM_CRASH_AFTER_MS", "20"), ("SIM_START_MS", "1")],
            )],
        )
        .await;
    let reason = server
        .wait_for("InstanceCrashed", |f| {
            f.reports.iter().find_map(|r| match r {
                Report::InstanceCrashed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
        })
        .await;
    assert_eq!(reason, "simulated crash: exited with status 1");
    assert_eq!(
        server.with(|f| kinds_about(f, "flaky-0-a")),
        ["running", "crashed"]
    );
    let stats = wait_for_stats(&fleet, "the crash counted", |s| s.crashes == 1).await;
    assert_eq!(stats.instances_running, 0);
    fleet.shutdown().await;
}

#[tokio::test]
async fn crash_probability_one_crashes_every_instance() {
    let server = FakeServer::start().await;
    let fleet = server
        .fleet(SimOptions {
            crash_probability: 1.0,
            crash_after: "0..10".parse().expect("a range"),
            ..server.options(2)
        })
        .await;
    let items = (0..4)
        .map(|i| start_instance(&format!("sim-{}", i % 2), "web", &format!("web-{i}"), &[]))
        .collect();
    server.push(&fleet, items).await;
    wait_for_stats(&fleet, "four crashes", |s| s.crashes == 4).await;
    server
        .wait_for("four InstanceCrashed reports", |f| {
            let crashed = f
                .reports
                .iter()
                .filter(|r| matches!(r, Report::InstanceCrashed { .. }))
                .count();
            (crashed == 4).then_some(())
        })
        .await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_stale_running_report_stops_the_instance() {
    let server = FakeServer::start().await;
    server.with(|f| f.stale.insert("gone-0-a".into()));
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(
            &fleet,
            vec![start_instance("sim-0", "gone", "gone-0-a", &[])],
        )
        .await;
    let stats = wait_for_stats(&fleet, "the stale answer handled", |s| s.stale_results == 1).await;
    assert_eq!((stats.instances_running, stats.stops), (0, 1));
    // Stopping a container the server disowned needs no report.
    assert_eq!(server.with(|f| kinds_about(f, "gone-0-a")), ["running"]);
    fleet.shutdown().await;
}

#[tokio::test]
async fn stop_instance_stops_it_and_confirms() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(&fleet, vec![start_instance("sim-0", "web", "web-0-a", &[])])
        .await;
    wait_for_stats(&fleet, "a running instance", |s| s.instances_running == 1).await;
    server
        .push(
            &fleet,
            vec![WorkItem::StopInstance {
                cell: name("sim-0"),
                lrp: name("web"),
                index: 0,
                instance_id: "web-0-a".into(),
            }],
        )
        .await;
    server
        .wait_for("InstanceStopped", |f| {
            (kinds_about(f, "web-0-a") == ["running", "stopped"]).then_some(())
        })
        .await;
    wait_for_stats(&fleet, "the instance stopped", |s| {
        (s.instances_running, s.stops) == (0, 1)
    })
    .await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_over_committed_cell_refuses_and_counts_a_violation() {
    let server = FakeServer::start().await;
    let fleet = server
        .fleet(SimOptions {
            capacity: model::CellCapacity {
                containers: 1,
                ..sim::DEFAULT_CAPACITY
            },
            ..server.options(1)
        })
        .await;
    server
        .push(
            &fleet,
            vec![
                start_instance("sim-0", "web", "web-0-a", &[]),
                start_instance("sim-0", "web", "web-1-a", &[]),
                start_task("sim-0", "t1", &[]),
            ],
        )
        .await;
    server
        .wait_for("the refusals", |f| {
            (kinds_about(f, "web-1-a") == ["stopped"] && kinds_about(f, "t1") == ["task_rejected"])
                .then_some(())
        })
        .await;
    let stats = wait_for_stats(&fleet, "the first instance running", |s| {
        s.instances_running == 1
    })
    .await;
    assert_eq!(stats.overcommits, 2);
    fleet.shutdown().await;
}

#[tokio::test]
async fn tasks_start_then_complete_with_their_result() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(
            &fleet,
            vec![
                start_task(
                    "sim-0",
                    "t-ok",
                    &[("SIM_TASK_MS", "10"), ("SIM_RESULT", "42")],
                ),
                start_task("sim-0", "t-bad", &[("SIM_FAIL", "")]),
                start_task("sim-0", "t-why", &[("SIM_FAIL", "disk full")]),
            ],
        )
        .await;
    let completions = server
        .wait_for("three completions", |f| {
            let done: Vec<_> = f
                .reports
                .iter()
                .filter_map(|r| match r {
                    Report::TaskCompleted {
                        id,
                        failed,
                        failure_reason,
                        result,
                        ..
                    } => Some((
                        id.to_string(),
                        *failed,
                        failure_reason.clone(),
                        result.clone(),
                    )),
                    _ => None,
                })
                .collect();
            (done.len() == 3).then_some(done)
        })
        .await;
    let find = |id: &str| {
        completions
            .iter()
            .find(|c| c.0 == id)
            .cloned()
            .expect("completed")
    };
    assert_eq!(
        find("t-ok"),
        ("t-ok".into(), false, None, Some("42".into()))
    );
    assert_eq!(
        find("t-bad"),
        (
            "t-bad".into(),
            true,
            Some(sim::FAIL_REASON.into()),
            Some("ok".into())
        )
    );
    assert_eq!(
        find("t-why"),
        (
            "t-why".into(),
            true,
            Some("disk full".into()),
            Some("ok".into())
        )
    );
    for id in ["t-ok", "t-bad", "t-why"] {
        assert_eq!(
            server.with(|f| kinds_about(f, id)),
            ["task_started", "task_completed"],
            "{id}"
        );
    }
    let stats = fleet.stats();
    assert_eq!((stats.task_runs, stats.tasks_completed), (3, 3));
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_task_whose_start_is_stale_never_runs() {
    let server = FakeServer::start().await;
    server.with(|f| f.stale.insert("t-elsewhere".into()));
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(&fleet, vec![start_task("sim-0", "t-elsewhere", &[])])
        .await;
    let stats = wait_for_stats(&fleet, "the stale answer handled", |s| s.stale_results == 1).await;
    assert_eq!((stats.task_runs, stats.tasks_running), (0, 0));
    // Reports are sent in order, so a completion would have come with a later batch:
    // one more task, completed, proves none is coming for the stale one.
    server
        .push(&fleet, vec![start_task("sim-0", "t-next", &[])])
        .await;
    server
        .wait_for("the next task's completion", |f| {
            (kinds_about(f, "t-next") == ["task_started", "task_completed"]).then_some(())
        })
        .await;
    assert_eq!(
        server.with(|f| kinds_about(f, "t-elsewhere")),
        ["task_started"]
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_task_completes_it_as_failed() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(1)).await;
    server
        .push(
            &fleet,
            vec![start_task("sim-0", "t-long", &[("SIM_TASK_MS", "600000")])],
        )
        .await;
    wait_for_stats(&fleet, "the task running", |s| s.tasks_running == 1).await;
    server
        .push(
            &fleet,
            vec![WorkItem::CancelTask {
                cell: name("sim-0"),
                id: name("t-long"),
            }],
        )
        .await;
    let reason = server
        .wait_for("the cancelled task's completion", |f| {
            f.reports.iter().find_map(|r| match r {
                Report::TaskCompleted {
                    failed: true,
                    failure_reason,
                    ..
                } => failure_reason.clone(),
                _ => None,
            })
        })
        .await;
    assert_eq!(reason, "task was cancelled");
    wait_for_stats(&fleet, "no task running", |s| s.tasks_running == 0).await;
    fleet.shutdown().await;
}

#[tokio::test]
async fn reconciliation_starts_missing_work_and_stops_unassigned_work() {
    let server = FakeServer::start().await;
    let fleet = server
        .fleet(SimOptions {
            reconcile_interval: Duration::from_millis(50),
            ..server.options(2)
        })
        .await;
    // Pushed, but the server will not list it: it must go.
    server
        .push(&fleet, vec![start_instance("sim-0", "old", "old-0-a", &[])])
        .await;
    wait_for_stats(&fleet, "the pushed instance", |s| s.instances_running == 1).await;
    // The server forgets "old" without telling, and assigns work it never pushed.
    server.with(|f| {
        f.assignments = vec![
            start_instance("sim-1", "web", "web-0-a", &[]),
            start_task("sim-1", "t-assigned", &[("SIM_RESULT", "found")]),
            WorkItem::StartTask {
                cell: name("sim-0"),
                task: task("t-lost", TaskState::Running, &[]),
            },
        ]
    });
    server
        .wait_for("the assigned instance running", |f| {
            (kinds_about(f, "web-0-a") == ["running"]).then_some(())
        })
        .await;
    server
        .wait_for("the assigned task completed", |f| {
            (kinds_about(f, "t-assigned") == ["task_started", "task_completed"]).then_some(())
        })
        .await;
    let reason = server
        .wait_for("the lost task failed", |f| {
            f.reports.iter().find_map(|r| match r {
                Report::TaskCompleted {
                    id, failure_reason, ..
                } if id.as_str() == "t-lost" => failure_reason.clone(),
                _ => None,
            })
        })
        .await;
    assert_eq!(reason, sim::LOST_REASON);
    let stats = wait_for_stats(&fleet, "the unassigned instance stopped", |s| {
        s.reconcile_stops == 1 && s.instances_running == 1
    })
    .await;
    assert_eq!(stats.reconcile_starts, 2, "{stats:?}");
    // Each is started once, however many passes see it assigned.
    wait_for_stats(&fleet, "a few more passes", |s| {
        s.reconciles >= stats.reconciles + 3
    })
    .await;
    assert_eq!(fleet.stats().starts, 2);
    assert_eq!(server.with(|f| kinds_about(f, "web-0-a")), ["running"]);
    assert_eq!(
        server.with(|f| kinds_about(f, "t-lost")),
        ["task_completed"]
    );
    // Every request names all cells of this small fleet.
    let requests = server.with(|f| f.assignment_requests.clone());
    assert!(
        requests
            .iter()
            .all(|r| r.cells == [name("sim-0"), name("sim-1")])
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn reconciliation_does_not_restart_what_ended_while_it_was_asked() {
    let server = FakeServer::start().await;
    // The first pass is answered from what the server read before the crash, and
    // answered only after the crash was reported.
    let item = start_instance(
        "sim-0",
        "flaky",
        "flaky-0-a",
        &[("SIM_CRASH_AFTER_MS", "30")],
    );
    server.with(|f| {
        f.assign(&item);
        f.hold_assignments = Some(Arc::new(|f: &Fake| {
            kinds_about(f, "flaky-0-a") == ["running", "crashed"]
        }));
    });
    let fleet = server.fleet(server.options(1)).await;
    server.push(&fleet, vec![item]).await;
    let stats = wait_for_stats(&fleet, "the pass done", |s| s.reconciles == 1).await;
    assert_eq!((stats.starts, stats.reconcile_starts), (1, 0), "{stats:?}");
    assert_eq!(
        server.with(|f| kinds_about(f, "flaky-0-a")),
        ["running", "crashed"]
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn reconciliation_does_not_stop_what_arrived_while_it_was_asked() {
    let server = FakeServer::start().await;
    // The first pass is answered from what the server read before it pushed the
    // instance, and answered only once the instance runs.
    server.with(|f| {
        f.hold_assignments = Some(Arc::new(|f: &Fake| {
            kinds_about(f, "web-0-a") == ["running"]
        }));
    });
    let fleet = server.fleet(server.options(1)).await;
    server
        .wait_for("the first pass asked", |f| {
            (!f.assignment_requests.is_empty()).then_some(())
        })
        .await;
    server
        .push(&fleet, vec![start_instance("sim-0", "web", "web-0-a", &[])])
        .await;
    let stats = wait_for_stats(&fleet, "the pass done", |s| s.reconciles == 1).await;
    assert_eq!(server.with(|f| f.assignments_answered), 1);
    assert_eq!(
        (stats.instances_running, stats.reconcile_stops),
        (1, 0),
        "{stats:?}"
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_heartbeats_and_work() {
    let server = FakeServer::start().await;
    let fleet = server.fleet(server.options(3)).await;
    let url = fleet.url().to_owned();
    server
        .wait_for("a heartbeat", |f| (!f.heartbeats.is_empty()).then_some(()))
        .await;
    fleet.shutdown().await;
    let after_shutdown = server.with(|f| f.heartbeats.len());
    // Shutdown waited for the heartbeat task to end, so none can follow; several
    // intervals later, none has.
    tokio::time::sleep(Duration::from_millis(4 * HEARTBEAT_INTERVAL_MS)).await;
    assert_eq!(server.with(|f| f.heartbeats.len()), after_shutdown);
    let pushed = reqwest::Client::new()
        .post(format!("{url}/v1/work"))
        .json(&WorkBatch { items: vec![] })
        .send()
        .await;
    assert!(pushed.is_err(), "the work endpoint is closed: {pushed:?}");
}
