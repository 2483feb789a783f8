//! The usage sampler: every `usage_interval` it asks the runtime what each container the
//! agent holds uses (CPU time, memory, disk, processes: from cgroups with the linux
//! backend), works out the CPU percent since the previous sample, and keeps the latest
//! sample per container. `GET /v1/usage` and the cell's `/metrics` read what it keeps;
//! nothing else waits for it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{CellUsage, ContainerUsage, Workload};
use axum::Json;
use axum::extract::State;
use model::Timestamp;
use runtime::Stats;
use tokio::time::Instant;

use crate::agent::Agent;
use crate::record::Kind;

/// How often containers are sampled unless the config says otherwise.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(5);

/// The latest sample of every container sampled, by container id.
#[derive(Debug, Default)]
pub(crate) struct UsageBook {
    latest: Mutex<HashMap<String, Sampled>>,
}

/// One container's latest sample, with what the next CPU percent is computed from.
#[derive(Debug, Clone)]
struct Sampled {
    usage: ContainerUsage,
    cpu_nanos: u64,
    /// When the stats were read, on the monotonic clock.
    at: Instant,
}

/// CPU used between two readings of a container's cumulative CPU time, in percent of
/// one core (two busy cores make 200). `None` when no time passed or the counter went
/// backwards (the container was recreated under the same id).
pub(crate) fn cpu_percent(before_nanos: u64, after_nanos: u64, elapsed: Duration) -> Option<f64> {
    let used = after_nanos.checked_sub(before_nanos)?;
    let elapsed = elapsed.as_nanos();
    if elapsed == 0 {
        return None;
    }
    Some(used as f64 * 100.0 / elapsed as f64)
}

/// What runs in a container, as its record says.
pub(crate) fn workload(kind: &Kind) -> Workload {
    match kind {
        Kind::Instance {
            lrp,
            index,
            instance_id,
        } => Workload::Instance {
            lrp: lrp.spec.name.clone(),
            index: *index,
            instance_id: instance_id.clone(),
        },
        Kind::Task { task } => Workload::Task {
            task: task.id.clone(),
        },
    }
}

impl UsageBook {
    /// Records a reading of `container`'s stats taken `at` (monotonic) and `now` (wall
    /// clock), computing its CPU percent against the previous one.
    pub(crate) fn record(
        &self,
        container: &str,
        workload: Workload,
        stats: Stats,
        at: Instant,
        now: Timestamp,
    ) {
        let mut latest = self.latest.lock().expect("usage lock");
        let previous = latest.get(container);
        let cpu = previous.and_then(|p| {
            cpu_percent(
                p.cpu_nanos,
                stats.cpu_nanos,
                at.saturating_duration_since(p.at),
            )
        });
        let started_at = previous.map_or(now, |p| p.usage.started_at);
        let usage = ContainerUsage {
            workload,
            cpu_percent: cpu,
            cpu_seconds: stats.cpu_nanos as f64 / 1e9,
            memory_bytes: stats.memory_bytes,
            disk_bytes: stats.disk_bytes,
            pids: stats.pids,
            started_at,
            sampled_at: now,
        };
        latest.insert(
            container.to_owned(),
            Sampled {
                usage,
                cpu_nanos: stats.cpu_nanos,
                at,
            },
        );
    }

    /// Forgets every container not in `held`.
    pub(crate) fn retain(&self, held: &[String]) {
        let mut latest = self.latest.lock().expect("usage lock");
        latest.retain(|id, _| held.contains(id));
    }

    /// What each container sampled uses, by container id.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, ContainerUsage> {
        let latest = self.latest.lock().expect("usage lock");
        latest
            .iter()
            .map(|(id, s)| (id.clone(), s.usage.clone()))
            .collect()
    }
}

fn wall_clock() -> Timestamp {
    Timestamp::from_millis(crate::logs::now_millis())
}

impl Agent {
    /// What each container on this cell uses, as last sampled, by container id. A
    /// container appears from its first sample on (within one sampling interval of its
    /// creation) and goes with the first sample after it ended.
    pub fn usage(&self) -> BTreeMap<String, ContainerUsage> {
        self.usage.snapshot()
    }

    /// Samples every held container, every `usage_interval`, until the task is aborted.
    pub(crate) async fn sample_usage(self: Arc<Agent>) {
        let mut workloads: HashMap<String, Workload> = HashMap::new();
        let mut tick = tokio::time::interval(self.config.usage_interval.max(MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let held = self.held_containers();
            workloads.retain(|id, _| held.contains(id));
            self.usage.retain(&held);
            for container in &held {
                let workload = match workloads.get(container) {
                    Some(w) => w.clone(),
                    // Read once per container: the record says what it runs. A container
                    // whose record is not written yet is sampled next time.
                    None => match self.records.load(container) {
                        Some(record) => {
                            let w = workload(&record.work);
                            workloads.insert(container.clone(), w.clone());
                            w
                        }
                        None => continue,
                    },
                };
                // Not created yet, or gone since: nothing to sample this time.
                let Ok(stats) = self.runtime.stats(container).await else {
                    continue;
                };
                self.usage
                    .record(container, workload, stats, Instant::now(), wall_clock());
            }
        }
    }
}

/// `GET /v1/usage`: what each container on the cell uses (`api::CellUsage`).
pub(crate) async fn serve(State(agent): State<Arc<Agent>>) -> Json<CellUsage> {
    Json(CellUsage {
        cell: agent.config.id.clone(),
        containers: agent.usage(),
    })
}

/// The sampler never runs more often than this, whatever the config says.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_of_one_core() {
        let second = Duration::from_secs(1);
        let cases = [
            // (before, after, elapsed, percent)
            (0, 1_000_000_000, second, Some(100.0)),
            (0, 500_000_000, second, Some(50.0)),
            (1_000, 1_000, second, Some(0.0)),
            // Two busy cores.
            (0, 4_000_000_000, 2 * second, Some(200.0)),
            (0, 250_000_000, Duration::from_millis(500), Some(50.0)),
            // No time passed, or the counter went backwards: no figure.
            (0, 1, Duration::ZERO, None),
            (2_000, 1_000, second, None),
        ];
        for (before, after, elapsed, expect) in cases {
            assert_eq!(
                cpu_percent(before, after, elapsed),
                expect,
                "{before} -> {after} in {elapsed:?}"
            );
        }
    }

    fn stats(cpu_nanos: u64, memory_bytes: u64) -> Stats {
        Stats {
            cpu_nanos,
            memory_bytes,
            disk_bytes: 4096,
            pids: 1,
        }
    }

    #[test]
    fn a_second_sample_gives_the_cpu_percent_and_keeps_the_start() {
        let book = UsageBook::default();
        let task = Workload::Task {
            task: model::Name::parse("t", "build").unwrap(),
        };
        let t0 = Instant::now();
        book.record("c1", task.clone(), stats(0, 100), t0, Timestamp(1_000));
        let first = book.snapshot()["c1"].clone();
        assert_eq!(first.cpu_percent, None);
        assert_eq!(first.memory_bytes, 100);
        assert_eq!(first.started_at, Timestamp(1_000));

        let t1 = t0 + Duration::from_secs(2);
        book.record("c1", task, stats(1_000_000_000, 200), t1, Timestamp(3_000));
        let second = book.snapshot()["c1"].clone();
        assert_eq!(second.cpu_percent, Some(50.0));
        assert_eq!(second.cpu_seconds, 1.0);
        assert_eq!(second.memory_bytes, 200);
        assert_eq!(second.started_at, Timestamp(1_000));
        assert_eq!(second.sampled_at, Timestamp(3_000));

        book.retain(&[]);
        assert!(book.snapshot().is_empty());
    }
}
