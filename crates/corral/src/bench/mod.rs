//! `corral bench`: the project's benchmark programs. Each starts what it measures (a
//! real server in a child process, simulated cells), prints its figures with the
//! machine they ran on, and records them in BENCHMARKS.md.
//!
//! - `corral bench schedule`: instances placed end to end on simulated cells, from the
//!   first create to all RUNNING, with the store's write rate, the server's peak
//!   memory, one convergence pass at full load and the pure placement core on the
//!   same cells and work.
//! - `corral bench failover`: a cell killed with SIGKILL; how long until the server
//!   notices and until its instances run elsewhere.
//! - `corral bench start`: a real cell's containers from desired to RUNNING, one at a
//!   time and all at once, against the runtime helper alone for the same container.
//! - `corral bench router`: requests/s and added latency through Corral's router against
//!   nginx proxying the same backend, and how soon a new instance gets traffic.
//! - `corral bench image`: an instance from a `docker://` image with the cell's image
//!   cache empty (pull + start) against the same image cached.

mod cluster;
mod failover;
mod image;
mod machine;
mod markdown;
mod pure;
mod router;
mod schedule;
mod serve;
mod server_child;
mod start;
mod stats;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

pub use image::ImageArgs;
pub use router::RouterArgs;
pub use serve::ServeArgs;
pub use start::StartArgs;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Place instances on simulated cells end to end and time it (with the store's
    /// write rate, the server's memory, a convergence pass and the pure placement core)
    Schedule(ScheduleArgs),
    /// Kill a simulated cell with SIGKILL and time its detection and the replacement
    /// of its instances
    Failover(FailoverArgs),
    /// Start containers on a real cell and time desired -> RUNNING, against the runtime
    /// helper alone for the same container
    Start(StartArgs),
    /// Requests/s and added latency through Corral's router against nginx proxying the
    /// same backend, and the time from RUNNING to an instance's first routed request
    Router(RouterArgs),
    /// An instance from a docker:// image with the cell's image cache empty (pull +
    /// start) against the same image cached
    Image(ImageArgs),
    /// A server for a benchmark, controlled through stdin (used by the benchmarks)
    #[command(hide = true)]
    Serve(ServeArgs),
}

/// The sizes `corral bench schedule` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// 100 cells, 10,000 instances
    Small,
    /// 1,000 cells, 100,000 instances
    Medium,
    /// 10,000 cells, 1,000,000 instances (the design goal's size)
    Full,
}

impl Preset {
    /// Cells and instances.
    pub fn size(self) -> (u32, u64) {
        match self {
            Preset::Small => (100, 10_000),
            Preset::Medium => (1_000, 100_000),
            Preset::Full => (10_000, 1_000_000),
        }
    }
}

/// Where the results go, for both benchmarks.
#[derive(Debug, Clone, Args)]
pub struct Record {
    /// The file whose section the results replace
    #[arg(long, value_name = "PATH", default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Print the results only; leave BENCHMARKS.md alone
    #[arg(long)]
    pub no_record: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ScheduleArgs {
    /// The size: small = 100 cells / 10,000 instances, medium = 1,000 / 100,000,
    /// full = 10,000 / 1,000,000
    #[arg(long, value_enum, default_value = "small")]
    pub preset: Preset,
    /// Simulated cells [default: the preset's]
    #[arg(long, value_name = "N")]
    pub cells: Option<u32>,
    /// Instances in all [default: the preset's]
    #[arg(long, value_name = "M")]
    pub instances: Option<u64>,
    /// LRPs the instances are spread over [default: one per 1,000 instances]
    #[arg(long, value_name = "L")]
    pub lrps: Option<u32>,
    /// The store: sqlite (a file in a temporary directory) or a postgres:// URL of an
    /// empty database
    #[arg(long, value_name = "sqlite|URL", default_value = "sqlite")]
    pub db: String,
    /// How many times to run it; the figures recorded are the medians
    #[arg(long, value_name = "R", default_value_t = 1)]
    pub runs: u32,
    /// Give up on a run after this long and report how far it got
    #[arg(long, value_name = "S", default_value_t = 900)]
    pub timeout_secs: u64,
    /// LRP creates in flight at once
    #[arg(long, value_name = "C", default_value_t = 8)]
    pub concurrency: usize,
    /// Convergence passes timed at full load, one after another
    #[arg(long, value_name = "P", default_value_t = 2)]
    pub converge_passes: u32,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// Instances on the cell that is killed
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub instances: u32,
    /// How many times to run it; the figures recorded are the medians
    #[arg(long, value_name = "R", default_value_t = 5)]
    pub runs: u32,
    /// How long a simulated container takes to start, in ms
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub start_ms: u64,
    /// The store: sqlite (a file in a temporary directory) or a postgres:// URL of an
    /// empty database
    #[arg(long, value_name = "sqlite|URL", default_value = "sqlite")]
    pub db: String,
    #[command(flatten)]
    pub record: Record,
}

pub async fn run(command: &BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Schedule(args) => schedule::run(args).await,
        BenchCommand::Failover(args) => failover::run(args).await,
        BenchCommand::Start(args) => start::run(args).await,
        BenchCommand::Router(args) => router::run(args).await,
        BenchCommand::Image(args) => image::run(args).await,
        BenchCommand::Serve(args) => serve::run(args).await,
    }
}
