//! `corral sim-cells`: a fleet of simulated cells in this process, joined to a Corral
//! server, until SIGINT or SIGTERM; a status line every few seconds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use model::CellCapacity;
use sim::{Latency, SimCells, SimFleet, SimOptions};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Global;
use crate::config::{self, Env};

/// How often the status line is printed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct SimCellsArgs {
    /// How many cells to simulate
    #[arg(long, value_name = "N")]
    pub count: u32,
    /// URL of the Corral API the cells join; the same as --api [default: --api,
    /// CORRAL_API or the config file]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Spread the cells round-robin over this many zones: zone-0, zone-1, ...
    #[arg(long, value_name = "Z", default_value_t = 1)]
    pub zones: u32,
    /// Memory of each cell, in MB
    #[arg(long, value_name = "MB", default_value_t = sim::DEFAULT_CAPACITY.memory_mb)]
    pub memory_mb: u64,
    /// Disk of each cell, in MB
    #[arg(long, value_name = "MB", default_value_t = sim::DEFAULT_CAPACITY.disk_mb)]
    pub disk_mb: u64,
    /// Most containers on each cell
    #[arg(long, value_name = "C", default_value_t = sim::DEFAULT_CAPACITY.containers)]
    pub containers: u32,
    /// A rootfs provider the cells offer (repeatable) [default: host, busybox, docker]
    #[arg(long = "rootfs-provider", value_name = "NAME")]
    pub rootfs_providers: Vec<String>,
    /// A placement tag the cells require of their work (repeatable)
    #[arg(long = "placement-tag", value_name = "TAG")]
    pub placement_tags: Vec<String>,
    /// How long a container takes to start, in ms: MS, or MIN..MAX drawn evenly
    #[arg(long, value_name = "MS", default_value = "50")]
    pub start_ms: Latency,
    /// The chance, from 0 to 1, that a started instance crashes a little later
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_probability)]
    pub crash_probability: f64,
    /// Seed of the random latencies and crashes [default: a new one, printed]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Address the cells take work on (port 0 picks a free one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Name the cells PREFIX-0, PREFIX-1, ...
    #[arg(long, value_name = "P", default_value = sim::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Seconds between reconciliations with what the server assigned to the cells
    #[arg(long, value_name = "S", default_value_t = sim::DEFAULT_RECONCILE_INTERVAL.as_secs())]
    pub reconcile_secs: u64,
}

pub async fn run(global: &Global, args: &SimCellsArgs, env: &dyn Env) -> Result<()> {
    let mut global = global.clone();
    if let Some(server) = &args.server {
        global.api = Some(server.clone());
    }
    let endpoint = config::resolve(&global, env)?;
    let options = options(args, endpoint.api, endpoint.token);
    // Before the fleet starts, so that a signal sent as soon as it is up is handled.
    let mut interrupt = signal(SignalKind::interrupt()).context("listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
    let fleet = SimCells::start(options.clone())
        .await
        .context("start the simulated cells")?;
    print!("{}", banner(&options, &fleet));
    let mut status =
        tokio::time::interval_at(tokio::time::Instant::now() + STATUS_EVERY, STATUS_EVERY);
    let which = loop {
        tokio::select! {
            _ = interrupt.recv() => break "SIGINT",
            _ = terminate.recv() => break "SIGTERM",
            _ = status.tick() => println!("{}", fleet.stats()),
        }
    };
    eprintln!("Received {which}: stopping the simulated cells.");
    let stats = fleet.shutdown().await;
    println!("Stopped. {stats}");
    Ok(())
}

/// The fleet the flags ask for, joined to `api` with `token`.
fn options(args: &SimCellsArgs, api: String, token: Option<String>) -> SimOptions {
    let defaults = SimOptions::new(api, args.count);
    SimOptions {
        token,
        listen: args.listen,
        prefix: args.prefix.clone(),
        zones: args.zones,
        capacity: CellCapacity {
            memory_mb: args.memory_mb,
            disk_mb: args.disk_mb,
            containers: args.containers,
        },
        rootfs_providers: if args.rootfs_providers.is_empty() {
            defaults.rootfs_providers.clone()
        } else {
            args.rootfs_providers.clone()
        },
        placement_tags: args.placement_tags.clone(),
        start_latency: args.start_ms,
        crash_probability: args.crash_probability,
        seed: args.seed,
        reconcile_interval: Duration::from_secs(args.reconcile_secs.max(1)),
        ..defaults
    }
}

/// What `corral sim-cells` says when the fleet is up.
fn banner(options: &SimOptions, fleet: &SimFleet) -> String {
    let last = options.count.saturating_sub(1);
    let zones = if options.zones == 1 { "zone" } else { "zones" };
    format!(
        "\
Simulating {count} cells ({prefix}-0 .. {prefix}-{last}) in {zone_count} {zones}, joined to {api}.

  work endpoint  {url}
  each cell      {memory} MB memory, {disk} MB disk, {containers} containers; rootfs {providers}
  containers     start in {latency}; crash probability {crash}
  seed           {seed} (run again with --seed {seed} to repeat the random draws)

A status line follows every {every} s. Stop with Ctrl-C.
",
        count = options.count,
        prefix = options.prefix,
        zone_count = options.zones,
        api = options.server,
        url = fleet.url(),
        memory = options.capacity.memory_mb,
        disk = options.capacity.disk_mb,
        containers = options.capacity.containers,
        providers = options.rootfs_providers.join(", "),
        latency = options.start_latency,
        crash = options.crash_probability,
        seed = fleet.seed(),
        every = STATUS_EVERY.as_secs(),
    )
}

fn parse_probability(arg: &str) -> Result<f64, String> {
    match arg.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "expected a probability from 0 to 1, such as 0.05, not {arg:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<(Global, SimCellsArgs), String> {
        let cli = Cli::try_parse_from(["corral", "sim-cells"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::SimCells(sim) => Ok((cli.global, sim)),
            other => panic!("not sim-cells: {other:?}"),
        }
    }

    #[test]
    fn flags_become_options() {
        let (global, args) = parse(&[
            "--count",
            "100",
            "--zones",
            "3",
            "--memory-mb",
            "4096",
            "--containers",
            "10",
            "--start-ms",
            "20..80",
            "--crash-probability",
            "0.1",
            "--seed",
            "7",
            "--prefix",
            "rack",
            "--rootfs-provider",
            "host",
            "--placement-tag",
            "gpu",
            "--token",
            "t0k",
        ])
        .expect("parses");
        assert_eq!(global.token.as_deref(), Some("t0k"));
        let options = options(&args, "http://x:1".into(), global.token);
        assert_eq!(
            (options.count, options.zones, options.prefix.as_str()),
            (100, 3, "rack")
        );
        assert_eq!(
            options.capacity,
            CellCapacity {
                memory_mb: 4096,
                disk_mb: sim::DEFAULT_CAPACITY.disk_mb,
                containers: 10
            }
        );
        assert_eq!(options.start_latency, "20..80".parse().expect("a range"));
        assert_eq!(options.crash_probability, 0.1);
        assert_eq!(options.seed, Some(7));
        assert_eq!(options.rootfs_providers, ["host"]);
        assert_eq!(options.placement_tags, ["gpu"]);
        assert_eq!(
            (options.server.as_str(), options.token.as_deref()),
            ("http://x:1", Some("t0k"))
        );
    }

    #[test]
    fn defaults_are_the_fleets() {
        let (_, args) = parse(&["--count", "2"]).expect("parses");
        let options = options(&args, "http://x:1".into(), None);
        let defaults = SimOptions::new("http://x:1", 2);
        assert_eq!(options.start_latency, sim::DEFAULT_START_LATENCY);
        assert_eq!(
            format!("{options:?}"),
            format!("{defaults:?}"),
            "without flags, the fleet's own defaults"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag() {
        let err = parse(&["--count", "2", "--crash-probability", "2"]).unwrap_err();
        assert!(
            err.contains("invalid value '2' for '--crash-probability <P>'")
                && err.contains("expected a probability from 0 to 1"),
            "{err}"
        );
        let err = parse(&["--count", "2", "--start-ms", "soon"]).unwrap_err();
        assert!(err.contains("'--start-ms <MS>'"), "{err}");
        let err = parse(&[]).unwrap_err();
        assert!(err.contains("--count <N>"), "{err}");
    }
}
