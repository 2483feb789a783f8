//! The cell's Prometheus metrics, `GET /metrics`: what each container uses (from the
//! usage sampler), the cell's capacity and use, and the containers it holds. Names and
//! meanings are listed in `docs/metrics.md`.
//!
//! Every figure is read at scrape time from what the agent already keeps, so the
//! registry is built afresh for each scrape: a container that ended leaves no series
//! behind, and nothing is counted twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use api::{ContainerUsage, Workload};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use model::CellCapacity;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::agent::Agent;

/// The content type of the Prometheus text format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which container: an LRP's instance (`lrp`, `index`) or a task (`task`); the label
/// that does not apply is empty, which Prometheus reads as absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
    lrp: String,
    index: String,
    task: String,
}

impl ContainerLabels {
    fn new(container: &str, workload: &Workload) -> ContainerLabels {
        let (lrp, index, task) = match workload {
            Workload::Instance { lrp, index, .. } => {
                (lrp.to_string(), index.to_string(), String::new())
            }
            Workload::Task { task } => (String::new(), String::new(), task.to_string()),
        };
        ContainerLabels {
            container: container.to_owned(),
            lrp,
            index,
            task,
        }
    }
}

/// The exposition of a cell with `capacity` holding `held` containers, of which
/// `usage` were sampled.
pub(crate) fn encode(
    capacity: CellCapacity,
    held: usize,
    usage: &BTreeMap<String, ContainerUsage>,
) -> String {
    let mut registry = Registry::with_prefix("corral");
    let cpu = Family::<ContainerLabels, Counter<f64, AtomicU64>>::default();
    registry.register_with_unit(
        "container_cpu",
        "CPU time a container has used since it started",
        Unit::Seconds,
        cpu.clone(),
    );
    let memory = Family::<ContainerLabels, Gauge>::default();
    registry.register_with_unit(
        "container_memory",
        "Memory a container uses, without the page cache it could give back",
        Unit::Bytes,
        memory.clone(),
    );
    let disk = Family::<ContainerLabels, Gauge>::default();
    registry.register_with_unit(
        "container_disk",
        "Disk a container has written to its writable layer",
        Unit::Bytes,
        disk.clone(),
    );
    let pids = Family::<ContainerLabels, Gauge>::default();
    registry.register(
        "container_processes",
        "Processes running in a container",
        pids.clone(),
    );
    let mut memory_used = 0u64;
    let mut disk_used = 0u64;
    for (id, sample) in usage {
        let labels = ContainerLabels::new(id, &sample.workload);
        cpu.get_or_create(&labels).inc_by(sample.cpu_seconds);
        memory
            .get_or_create(&labels)
            .set(gauge(sample.memory_bytes));
        disk.get_or_create(&labels).set(gauge(sample.disk_bytes));
        pids.get_or_create(&labels).set(i64::from(sample.pids));
        memory_used = memory_used.saturating_add(sample.memory_bytes);
        disk_used = disk_used.saturating_add(sample.disk_bytes);
    }
    let mib = |mb: u64| mb.saturating_mul(1024 * 1024);
    let mut cell_gauge = |name: &str, help: &str, unit: Option<Unit>, value: u64| {
        let g = Gauge::<i64>::default();
        g.set(gauge(value));
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, g),
            None => registry.register(name, help, g),
        }
    };
    cell_gauge(
        "cell_memory_capacity",
        "Memory the cell offers for containers",
        Some(Unit::Bytes),
        mib(capacity.memory_mb),
    );
    cell_gauge(
        "cell_memory_used",
        "Memory the cell's containers use, as last sampled",
        Some(Unit::Bytes),
        memory_used,
    );
    cell_gauge(
        "cell_disk_capacity",
        "Disk the cell offers for containers",
        Some(Unit::Bytes),
        mib(capacity.disk_mb),
    );
    cell_gauge(
        "cell_disk_used",
        "Disk the cell's containers have written, as last sampled",
        Some(Unit::Bytes),
        disk_used,
    );
    cell_gauge(
        "cell_containers_capacity",
        "Containers the cell offers room for",
        None,
        u64::from(capacity.containers),
    );
    cell_gauge(
        "cell_containers",
        "Containers the cell holds (instances and tasks, starting, running or stopping)",
        None,
        held as u64,
    );
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String does not fail");
    text
}

/// `GET /metrics`
pub(crate) async fn serve(State(agent): State<Arc<Agent>>) -> Response {
    let text = encode(agent.config.capacity, agent.held_count(), &agent.usage());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response()
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use model::{Name, Timestamp};

    use super::*;

    #[test]
    fn containers_are_labelled_by_what_they_run() {
        let name = |s: &str| Name::parse("n", s).unwrap();
        let sample = |workload| ContainerUsage {
            workload,
            cpu_percent: Some(12.5),
            cpu_seconds: 1.5,
            memory_bytes: 2 << 20,
            disk_bytes: 4096,
            pids: 2,
            started_at: Timestamp(1),
            sampled_at: Timestamp(2),
        };
        let usage = BTreeMap::from([
            (
                "i-1".to_owned(),
                sample(Workload::Instance {
                    lrp: name("web"),
                    index: 0,
                    instance_id: "i-1".into(),
                }),
            ),
            (
                "task-t".to_owned(),
                sample(Workload::Task { task: name("t") }),
            ),
        ]);
        let capacity = CellCapacity {
            memory_mb: 1024,
            disk_mb: 2048,
            containers: 100,
        };
        let text = encode(capacity, 3, &usage);
        for line in [
            r#"corral_container_cpu_seconds_total{container="i-1",lrp="web",index="0",task=""} 1.5"#,
            r#"corral_container_memory_bytes{container="task-t",lrp="",index="",task="t"} 2097152"#,
            "corral_cell_memory_capacity_bytes 1073741824",
            "corral_cell_memory_used_bytes 4194304",
            "corral_cell_containers 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
