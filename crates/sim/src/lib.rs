//! Simulated cells: a fleet of many cells in one process that speaks the real cell
//! protocol to a real server.
//!
//! A fleet heartbeats for all its cells in one request, takes pushed work for any of
//! them at one HTTP endpoint (`POST /v1/work`), "runs" containers by waiting out a start
//! latency, reports what happened in batches, and reconciles with the server's
//! assignments now and then, as `api::cell` describes. Containers use no resources
//! but the fleet's bookkeeping, so one process can stand in for thousands of cells:
//! this is what scale tests and the benchmark run the scheduler against.
//!
//! Containers follow their LRP's or task's environment, so tests can script them:
//! `SIM_START_MS` (start latency, `MS` or `MIN..MAX`), `SIM_CRASH_AFTER_MS` (crash that
//! long after running), `SIM_TASK_MS` (how long a task runs), `SIM_RESULT` (a task's
//! result, default `ok`) and `SIM_FAIL` (the task fails, with this reason if not empty).
//!
//! The fleet also checks the scheduler: work that would over-commit a cell is refused
//! and counted, and work placed on a cell that lacks its rootfs provider or placement
//! tags is counted (see [`Stats`]).

#![forbid(unsafe_code)]

mod fleet;
mod heartbeat;
mod options;
mod reporter;
mod rng;
mod stats;
mod work;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use client::{Client, ClientError};
use model::{Name, ValidationError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use fleet::{CANCEL_REASON, CRASH_REASON, FAIL_REASON, LOST_REASON};
pub use options::{
    DEFAULT_CAPACITY, DEFAULT_PREFIX, DEFAULT_RECONCILE_INTERVAL, DEFAULT_ROOTFS_PROVIDERS,
    DEFAULT_START_LATENCY, Latency, SimOptions,
};
pub use stats::Stats;

/// How many pushed work batches may wait for the fleet's loop before the work endpoint
/// stops answering, which slows the pusher down instead of queueing without bound.
const WORK_QUEUE: usize = 64;
/// How long shutdown waits for each of the fleet's tasks before abandoning it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An option is out of range; `field` names it.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The fleet's HTTP server could not listen.
    #[error("listen for work on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The server URL or token cannot make a client.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl From<ValidationError> for SimError {
    fn from(error: ValidationError) -> SimError {
        SimError::Invalid {
            field: error.field,
            reason: error.reason,
        }
    }
}

/// Starts fleets of simulated cells.
#[derive(Debug)]
pub struct SimCells;

impl SimCells {
    /// Starts a fleet: binds its work endpoint, then heartbeats, reconciles and runs
    /// work until [`SimFleet::shutdown`] (or until the handle is dropped). It does not
    /// wait for the server: a failing heartbeat is logged, counted and retried.
    pub async fn start(options: SimOptions) -> Result<SimFleet, SimError> {
        let client = Client::new(&options.server, options.token.clone())?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| SimError::Listen {
                    addr: options.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: options.listen,
            source,
        })?;
        let url = base_url(addr);
        let cells = options.cells(&url)?;
        let seed = options.seed.unwrap_or_else(rng::seed_from_clock);
        info!(
            seed,
            cells = cells.len(),
            work = %url,
            server = %client.api_url(),
            "starting simulated cells"
        );

        let counters = Arc::new(stats::Counters::default());
        stats::set(&counters.cells, cells.len() as u64);
        let (shutdown, stopping) = watch::channel(false);
        let (work_tx, work_rx) = mpsc::channel(WORK_QUEUE);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let cell_ids: Vec<Name> = cells.iter().map(|c| c.id.clone()).collect();

        let server = tokio::spawn(work::serve(listener, work_tx, stopping.clone()));
        let heartbeats = tokio::spawn(heartbeat::run(
            client.clone(),
            cells.clone(),
            options.cells_per_request,
            counters.clone(),
            stopping.clone(),
        ));
        let reporter = tokio::spawn(
            reporter::Reporter {
                client: client.clone(),
                batch: options.report_batch,
                delay: options.report_delay,
                stats: counters.clone(),
                outcomes: events_tx.clone(),
            }
            .run(reports_rx, stopping.clone()),
        );
        let fleet = fleet::Fleet::new(fleet::Setup {
            options: &options,
            cells,
            seed,
            stats: counters.clone(),
            client,
            reports: reports_tx,
            events: events_tx,
        });
        let fleet = tokio::spawn(fleet.run(work_rx, events_rx, stopping));
        Ok(SimFleet {
            addr,
            url,
            seed,
            cell_ids,
            stats: counters,
            shutdown,
            // In the order they should stop: no new work, no more state changes, the
            // last reports flushed, and the heartbeats (which stopped at once).
            tasks: vec![
                ("work endpoint", server),
                ("fleet loop", fleet),
                ("reporter", reporter),
                ("heartbeats", heartbeats),
            ],
        })
    }
}

/// A running fleet. Dropping it stops the fleet too, without waiting.
pub struct SimFleet {
    addr: SocketAddr,
    url: String,
    seed: u64,
    cell_ids: Vec<Name>,
    stats: Arc<stats::Counters>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl std::fmt::Debug for SimFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFleet")
            .field("url", &self.url)
            .field("seed", &self.seed)
            .field("cells", &self.cell_ids.len())
            .finish_non_exhaustive()
    }
}

impl SimFleet {
    /// The base URL the server pushes work to; every cell's `address`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the work endpoint listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The seed of the fleet's random draws: run again with it to repeat them.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The ids of the fleet's cells, in order.
    pub fn cell_ids(&self) -> &[Name] {
        &self.cell_ids
    }

    pub fn stats(&self) -> Stats {
        self.stats.snapshot()
    }

    /// Stops the fleet: no more heartbeats (so the server sees the cells' presences
    /// expire), no more work taken, and the reports already made flushed. Containers
    /// are not reported stopped: to the server the cells simply vanish. Returns the
    /// final stats.
    pub async fn shutdown(mut self) -> Stats {
        let _ = self.shutdown.send(true);
        for (what, mut task) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => warn!(%error, "the simulated cells' {what} ended badly"),
                Err(_) => {
                    warn!("the simulated cells' {what} did not stop in time: abandoning it");
                    task.abort();
                }
            }
        }
        let stats = self.stats();
        info!(%stats, "simulated cells stopped");
        stats
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// The URL the server reaches `addr` at. A fleet bound to every interface is reached
/// on loopback, since the simulated containers are all on this machine.
fn base_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}")
}

/// Resolves once the fleet is told to stop (or its handle is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}
