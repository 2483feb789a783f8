//! The server's Prometheus metrics, `GET /metrics`: API requests and their latency, the
//! scheduler's batches and placements, convergence passes and their actions, instances
//! and tasks by state, and each cell's capacity and what the scheduler has reserved on
//! it. Names and meanings are listed in `docs/metrics.md`.
//!
//! Written in the Prometheus text format (0.0.4), which `promtool check metrics` reads
//! without complaint; the registry is this server's own, so several servers in one
//! process (tests, `corral dev`) keep theirs apart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use converge::Action;
use model::{InstanceState, Name, TaskState};
use placement::{Unplaced, Usage};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::AppState;

/// The content type of the Prometheus text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    /// The route's template (`/v1/lrps/{name}`), never the raw path, so that the
    /// number of series stays bounded.
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PlacementLabels {
    work: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CellLabels {
    cell: String,
}

/// Work placed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    Instance,
    Task,
}

/// Every metric the server exposes.
pub(crate) struct Metrics {
    registry: Registry,
    api_requests: Family<RequestLabels, Counter>,
    api_duration: Histograms<RouteLabels>,
    batch_size: Histogram,
    batch_duration: Histogram,
    placements: Family<PlacementLabels, Counter>,
    placement_failures: Family<ReasonLabels, Counter>,
    convergence_duration: Histogram,
    convergence_actions: Family<ActionLabels, Counter>,
    instances: Family<StateLabels, Gauge>,
    tasks: Family<StateLabels, Gauge>,
    cell_memory_capacity: Family<CellLabels, Gauge>,
    cell_memory_reserved: Family<CellLabels, Gauge>,
    cell_disk_capacity: Family<CellLabels, Gauge>,
    cell_disk_reserved: Family<CellLabels, Gauge>,
    cell_containers_capacity: Family<CellLabels, Gauge>,
    cell_containers_reserved: Family<CellLabels, Gauge>,
    /// Each live cell's capacity and reservations as the scheduler last published them,
    /// turned into series at scrape time (so a cell that left leaves no series).
    cells: Mutex<Vec<(Name, Usage)>>,
    /// One scrape at a time rebuilds the per-cell series.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Latencies from 0.5 ms to about 16 s.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::with_prefix("corral");
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "API requests answered, by method, route template and status code",
            api_requests.clone(),
        );
        let api_duration: Histograms<RouteLabels> = Family::new_with_constructor(latency);
        registry.register_with_unit(
            "api_request_duration",
            "Time from an API request's arrival to its response's head, by method and route template",
            Unit::Seconds,
            api_duration.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 4.0, 9));
        registry.register(
            "scheduler_batch_size",
            "Instances and tasks considered by one scheduling batch",
            batch_size.clone(),
        );
        let batch_duration = latency();
        registry.register_with_unit(
            "scheduler_batch_duration",
            "Time one scheduling batch takes: placing, recording the assignments and sending the work",
            Unit::Seconds,
            batch_duration.clone(),
        );
        let placements = Family::<PlacementLabels, Counter>::default();
        registry.register(
            "placements",
            "Placement decisions, by kind of work (instance, task) and result (placed, unplaced)",
            placements.clone(),
        );
        let placement_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "placement_failures",
            "Work the scheduler could not place, by reason",
            placement_failures.clone(),
        );
        let convergence_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "convergence_duration",
            "Time one convergence pass takes: reading state, deciding and applying the actions",
            Unit::Seconds,
            convergence_duration.clone(),
        );
        let convergence_actions = Family::<ActionLabels, Counter>::default();
        registry.register(
            "convergence_actions",
            "Corrective actions convergence decided, by action",
            convergence_actions.clone(),
        );
        let instances = Family::<StateLabels, Gauge>::default();
        registry.register(
            "instances",
            "Instance rows by state, as of the last convergence pass on the leader",
            instances.clone(),
        );
        let tasks = Family::<StateLabels, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks by state, as of the last convergence pass on the leader",
            tasks.clone(),
        );
        let mut cell_gauge = |name: &str, help: &str, unit: Option<Unit>| {
            let family = Family::<CellLabels, Gauge>::default();
            match unit {
                Some(unit) => registry.register_with_unit(name, help, unit, family.clone()),
                None => registry.register(name, help, family.clone()),
            }
            family
        };
        let cell_memory_capacity = cell_gauge(
            "scheduler_cell_memory_capacity",
            "Memory a live cell offers, as the scheduler sees it",
            Some(Unit::Bytes),
        );
        let cell_memory_reserved = cell_gauge(
            "scheduler_cell_memory_reserved",
            "Memory the scheduler has placed on a live cell",
            Some(Unit::Bytes),
        );
        let cell_disk_capacity = cell_gauge(
            "scheduler_cell_disk_capacity",
            "Disk a live cell offers, as the scheduler sees it",
            Some(Unit::Bytes),
        );
        let cell_disk_reserved = cell_gauge(
            "scheduler_cell_disk_reserved",
            "Disk the scheduler has placed on a live cell",
            Some(Unit::Bytes),
        );
        let cell_containers_capacity = cell_gauge(
            "scheduler_cell_containers_capacity",
            "Containers a live cell offers room for",
            None,
        );
        let cell_containers_reserved = cell_gauge(
            "scheduler_cell_containers_reserved",
            "Containers the scheduler has placed on a live cell",
            None,
        );
        Metrics {
            registry,
            api_requests,
            api_duration,
            batch_size,
            batch_duration,
            placements,
            placement_failures,
            convergence_duration,
            convergence_actions,
            instances,
            tasks,
            cell_memory_capacity,
            cell_memory_reserved,
            cell_disk_capacity,
            cell_disk_reserved,
            cell_containers_capacity,
            cell_containers_reserved,
            cells: Mutex::new(Vec::new()),
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// One scheduling batch: how much work it considered and how long it took.
    pub(crate) fn batch(&self, size: usize, took: Duration) {
        self.batch_size.observe(size as f64);
        self.batch_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn placed(&self, work: Placed, n: usize) {
        self.placements
            .get_or_create(&PlacementLabels {
                work: work.as_str(),
                result: "placed",
            })
            .inc_by(n as u64);
    }

    pub(crate) fn unplaced(&self, work: Placed, reason: &Unplaced) {
        self.placements
            .get_or_create(&PlacementLabels {
                work: work.as_str(),
                result: "unplaced",
            })
            .inc();
        self.placement_failures
            .get_or_create(&ReasonLabels {
                reason: unplaced_reason(reason),
            })
            .inc();
    }

    /// One convergence pass: its duration and the actions it decided.
    pub(crate) fn converged(&self, took: Duration, actions: &[Action]) {
        self.convergence_duration.observe(took.as_secs_f64());
        let mut counts: HashMap<&'static str, u64> = HashMap::new();
        for action in actions {
            *counts.entry(action_kind(action)).or_default() += 1;
        }
        for (action, n) in counts {
            self.convergence_actions
                .get_or_create(&ActionLabels { action })
                .inc_by(n);
        }
    }

    /// Instances and tasks by state, from the rows a convergence pass read.
    pub(crate) fn states(
        &self,
        instances: impl Iterator<Item = InstanceState>,
        tasks: impl Iterator<Item = TaskState>,
    ) {
        let mut by_instance_state = [0i64; 4];
        for state in instances {
            by_instance_state[instance_state(state).0] += 1;
        }
        for state in [
            InstanceState::Unclaimed,
            InstanceState::Claimed,
            InstanceState::Running,
            InstanceState::Crashed,
        ] {
            let (i, name) = instance_state(state);
            self.instances
                .get_or_create(&StateLabels { state: name })
                .set(by_instance_state[i]);
        }
        let mut by_task_state = [0i64; 4];
        for state in tasks {
            by_task_state[task_state(state).0] += 1;
        }
        for state in [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Completed,
            TaskState::Resolving,
        ] {
            let (i, name) = task_state(state);
            self.tasks
                .get_or_create(&StateLabels { state: name })
                .set(by_task_state[i]);
        }
    }

    /// The scheduler's view of every live cell, for the next scrape.
    pub(crate) fn cells(&self, cells: Vec<(Name, Usage)>) {
        *self.cells.lock().expect("metrics cells lock") = cells;
    }

    /// The exposition, in the Prometheus text format.
    pub(crate) fn encode(&self) -> String {
        let _one_scrape = self.scrape.lock().expect("metrics scrape lock");
        let families = [
            &self.cell_memory_capacity,
            &self.cell_memory_reserved,
            &self.cell_disk_capacity,
            &self.cell_disk_reserved,
            &self.cell_containers_capacity,
            &self.cell_containers_reserved,
        ];
        for family in families {
            family.clear();
        }
        for (cell, usage) in self.cells.lock().expect("metrics cells lock").iter() {
            let labels = CellLabels {
                cell: cell.to_string(),
            };
            let set = |family: &Family<CellLabels, Gauge>, value: u64| {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            };
            set(&self.cell_memory_capacity, mib(usage.total.memory_mb));
            set(&self.cell_memory_reserved, mib(usage.used.memory_mb));
            set(&self.cell_disk_capacity, mib(usage.total.disk_mb));
            set(&self.cell_disk_reserved, mib(usage.used.disk_mb));
            set(
                &self.cell_containers_capacity,
                u64::from(usage.total.containers),
            );
            set(
                &self.cell_containers_reserved,
                u64::from(usage.used.containers),
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

impl Placed {
    fn as_str(self) -> &'static str {
        match self {
            Placed::Instance => "instance",
            Placed::Task => "task",
        }
    }
}

fn mib(mb: u64) -> u64 {
    mb.saturating_mul(1024 * 1024)
}

/// `GET /metrics`
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

/// Counts each API request and times it, by its route's template.
pub(crate) async fn count_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .request(method, route, status, started.elapsed());
    response
}

impl Metrics {
    fn request(&self, method: &'static str, route: String, status: StatusCode, took: Duration) {
        let labels = RouteLabels { method, route };
        self.api_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.api_requests
            .get_or_create(&RequestLabels {
                method,
                route: labels.route,
                status: status.as_u16(),
            })
            .inc();
    }
}

/// The methods the API answers to by name; anything else is `other`, so that a client
/// cannot make up new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn unplaced_reason(reason: &Unplaced) -> &'static str {
    match reason {
        Unplaced::NoRootfs { .. } => "no_rootfs",
        Unplaced::NoVolumeDrivers { .. } => "no_volume_drivers",
        Unplaced::NoPlacementTags { .. } => "no_placement_tags",
        Unplaced::AllEvacuating => "all_evacuating",
        Unplaced::Insufficient { .. } => "insufficient_resources",
        Unplaced::NoCells => "no_cells",
    }
}

fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::PruneDomain { .. } => "prune_domain",
        Action::CreateInstance { .. } => "create_instance",
        Action::Auction { .. } => "auction",
        Action::RetireInstance { .. } => "retire_instance",
        Action::MarkSuspect { .. } => "mark_suspect",
        Action::Unclaim { .. } => "unclaim",
        Action::PromoteSuspect { .. } => "promote_suspect",
        Action::RemoveInstance { .. } => "remove_instance",
        Action::FailTask { .. } => "fail_task",
        Action::AuctionTask { .. } => "auction_task",
        Action::KickTask { .. } => "kick_task",
        Action::DeleteTask { .. } => "delete_task",
        Action::ResendCallback { .. } => "resend_callback",
    }
}

fn instance_state(state: InstanceState) -> (usize, &'static str) {
    match state {
        InstanceState::Unclaimed => (0, "unclaimed"),
        InstanceState::Claimed => (1, "claimed"),
        InstanceState::Running => (2, "running"),
        InstanceState::Crashed => (3, "crashed"),
    }
}

fn task_state(state: TaskState) -> (usize, &'static str) {
    match state {
        TaskState::Pending => (0, "pending"),
        TaskState::Running => (1, "running"),
        TaskState::Completed => (2, "completed"),
        TaskState::Resolving => (3, "resolving"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family_with_help_and_type() {
        let metrics = Metrics::default();
        metrics.request("GET", "/v1/lrps".into(), StatusCode::OK, Duration::ZERO);
        metrics.placed(Placed::Instance, 3);
        metrics.unplaced(Placed::Task, &Unplaced::NoCells);
        metrics.states(
            [InstanceState::Running, InstanceState::Running].into_iter(),
            std::iter::empty(),
        );
        let text = metrics.encode();
        for line in [
            "# TYPE corral_api_requests_total counter",
            r#"corral_api_requests_total{method="GET",route="/v1/lrps",status="200"} 1"#,
            r#"corral_placements_total{work="instance",result="placed"} 3"#,
            r#"corral_placement_failures_total{reason="no_cells"} 1"#,
            r#"corral_instances{state="running"} 2"#,
            r#"corral_instances{state="crashed"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line
                .split(' ')
                .nth(2)
                .expect("a TYPE line names its metric");
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} has no HELP"
            );
        }
    }
}
