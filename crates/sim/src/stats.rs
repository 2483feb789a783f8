//! What a fleet has done so far, counted with atomics so that anyone can read it while
//! the fleet runs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a fleet's counters. Gauges say what is true now; the rest count
/// events since the fleet started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Simulated cells in the fleet.
    pub cells: u64,
    /// Gauge: instance containers up and reported running.
    pub instances_running: u64,
    /// Gauge: instance containers accepted but not yet up.
    pub instances_starting: u64,
    /// Gauge: tasks running (their `TaskStarted` was accepted).
    pub tasks_running: u64,
    /// Instance containers started (pushed or found by reconciliation).
    pub starts: u64,
    /// Instance containers stopped because the server said so.
    pub stops: u64,
    /// Crashes the fleet injected (by probability or `SIM_CRASH_AFTER_MS`).
    pub crashes: u64,
    /// Tasks that began running after the server accepted their `TaskStarted`.
    pub task_runs: u64,
    /// Tasks that ran to the end and reported `TaskCompleted`.
    pub tasks_completed: u64,
    /// Reports sent and answered.
    pub reports_sent: u64,
    /// Report requests that were sent and answered.
    pub report_batches: u64,
    /// Reports the server refused outright (a 4xx for their batch), so dropped.
    pub reports_dropped: u64,
    /// Reports the server answered `Stale`.
    pub stale_results: u64,
    /// Heartbeat requests the server accepted.
    pub heartbeats: u64,
    /// Heartbeat requests that failed.
    pub heartbeat_errors: u64,
    /// Reconciliation passes done: every answer fetched and acted on.
    pub reconciles: u64,
    /// Work that reconciliation found assigned but not running here, and started.
    pub reconcile_starts: u64,
    /// Containers that reconciliation found running here but not assigned, and stopped.
    pub reconcile_stops: u64,
    /// Safety violations: work that would have over-committed its cell's capacity. The
    /// fleet refuses it; a correct scheduler never causes one.
    pub overcommits: u64,
    /// Safety violations: work placed on a cell that lacks its rootfs provider or
    /// placement tags. The fleet runs it anyway; a correct scheduler never causes one.
    pub misplacements: u64,
}

/// One line for people watching a fleet.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cells {} | instances running {} starting {} | tasks running {} | starts {} crashes {} stops {} | reports {} stale {} | heartbeats {} failed {}",
            self.cells,
            self.instances_running,
            self.instances_starting,
            self.tasks_running,
            self.starts,
            self.crashes,
            self.stops,
            self.reports_sent,
            self.stale_results,
            self.heartbeats,
            self.heartbeat_errors,
        )?;
        if self.overcommits + self.misplacements > 0 {
            write!(
                f,
                " | VIOLATIONS over-commits {} misplacements {}",
                self.overcommits, self.misplacements
            )?;
        }
        Ok(())
    }
}

/// The live counters behind [`Stats`], shared by the fleet's tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) cells: AtomicU64,
    pub(crate) instances_running: AtomicU64,
    pub(crate) instances_starting: AtomicU64,
    pub(crate) tasks_running: AtomicU64,
    pub(crate) starts: AtomicU64,
    pub(crate) stops: AtomicU64,
    pub(crate) crashes: AtomicU64,
    pub(crate) task_runs: AtomicU64,
    pub(crate) tasks_completed: AtomicU64,
    pub(crate) reports_sent: AtomicU64,
    pub(crate) report_batches: AtomicU64,
    pub(crate) reports_dropped: AtomicU64,
    pub(crate) stale_results: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) heartbeat_errors: AtomicU64,
    pub(crate) reconciles: AtomicU64,
    pub(crate) reconcile_starts: AtomicU64,
    pub(crate) reconcile_stops: AtomicU64,
    pub(crate) overcommits: AtomicU64,
    pub(crate) misplacements: AtomicU64,
}

/// Adds `n` to a counter. Counters are statistics, not synchronisation, so relaxed
/// ordering is enough.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn set(gauge: &AtomicU64, value: u64) {
    gauge.store(value, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Stats {
            cells: get(&self.cells),
            instances_running: get(&self.instances_running),
            instances_starting: get(&self.instances_starting),
            tasks_running: get(&self.tasks_running),
            starts: get(&self.starts),
            stops: get(&self.stops),
            crashes: get(&self.crashes),
            task_runs: get(&self.task_runs),
            tasks_completed: get(&self.tasks_completed),
            reports_sent: get(&self.reports_sent),
            report_batches: get(&self.report_batches),
            reports_dropped: get(&self.reports_dropped),
            stale_results: get(&self.stale_results),
            heartbeats: get(&self.heartbeats),
            heartbeat_errors: get(&self.heartbeat_errors),
            reconciles: get(&self.reconciles),
            reconcile_starts: get(&self.reconcile_starts),
            reconcile_stops: get(&self.reconcile_stops),
            overcommits: get(&self.overcommits),
            misplacements: get(&self.misplacements),
        }
    }
}
