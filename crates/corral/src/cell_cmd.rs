//! `corral cell` (a cell agent), `corral cell drain`, and `corral cell-helper`, the
//! single-threaded runtime helper the agent starts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cell::{Agent, CellConfig, Stacks};
use clap::{Args, Subcommand, ValueEnum};
use client::Client;
use model::{CellCapacity, Name};
use runtime::{ContainerRuntime, HelperClient};

use crate::cli::Global;
use crate::config::{self, Env};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CellArgs {
    #[command(subcommand)]
    pub command: Option<CellCommand>,
    #[command(flatten)]
    pub run: CellRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum CellCommand {
    /// Evacuate a cell: its instances move to other cells, then its agent exits
    Drain(DrainArgs),
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The cell's id (as `corral cells` lists it)
    pub id: String,
    /// Return once the drain started instead of when the cell has left
    #[arg(long)]
    pub no_wait: bool,
    /// Longest to wait for the cell to leave, in seconds
    #[arg(long, value_name = "S", default_value_t = 660)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Isolated containers (needs root and a supported kernel)
    Linux,
    /// Plain processes without isolation (no root needed)
    Process,
    /// linux when this machine supports it, else process
    Auto,
}

#[derive(Debug, Clone, Args)]
pub struct CellRunArgs {
    /// The cell's id [default: cell-<hostname>]
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Where the cell listens for work from the scheduler (port 0 picks one)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// The address other machines reach this cell's published ports at
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub advertise_ip: String,
    #[arg(long, default_value = "")]
    pub zone: String,
    /// Where the cell keeps containers, stacks and downloads [default:
    /// $CORRAL_HOME/cells/<id>]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Memory offered to work, in MB [default: the machine's, less 10%]
    #[arg(long, value_name = "MB")]
    pub memory_mb: Option<u64>,
    /// Disk offered to work, in MB [default: free space of the state directory]
    #[arg(long, value_name = "MB")]
    pub disk_mb: Option<u64>,
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub containers: u32,
    /// A stack offered as preloaded:NAME: a directory holding a root filesystem
    /// (repeatable)
    #[arg(long = "stack", value_name = "NAME=DIR", value_parser = parse_stack)]
    pub stacks: Vec<(String, PathBuf)>,
    /// Registry of short image names (docker://library/redis, docker://redis:7)
    #[arg(long, value_name = "HOST", default_value = image::DOCKER_HUB)]
    pub default_registry: String,
    /// A registry spoken to over plain HTTP (HOST:PORT, repeatable); those on loopback
    /// always are
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Most disk the image cache may use, in MB: images no container uses are removed,
    /// least recently used first, until it fits (those in use always stay)
    #[arg(long, value_name = "MB", default_value_t = 10_240)]
    pub image_cache_mb: u64,
    /// Most output one container may log, in KiB per second (bursts of one second's
    /// worth pass); lines beyond it are dropped and the drop is noted. 0: no limit
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    pub log_rate_kb: u64,
    /// The newest log kept per container, in KiB, also for this long after it is gone
    /// (--log-keep-secs), so `corral logs` can show why it ended
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    pub log_retain_kb: usize,
    /// How long the log of a container that is gone is kept, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub log_keep_secs: u64,
    /// Placement tags work must carry to land here (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Time between SIGTERM and SIGKILL when stopping a container, in ms
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub grace_ms: u64,
    /// Longest a drain waits for replacements, in ms
    #[arg(long, value_name = "MS", default_value_t = 600_000)]
    pub evacuation_timeout_ms: u64,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// Containers die with the agent instead of waiting to be re-adopted (`corral
    /// dev`)
    #[arg(skip)]
    pub ephemeral: bool,
}

impl CellRunArgs {
    /// The defaults of `corral cell`, for `corral dev`'s own cell.
    pub fn defaults() -> CellRunArgs {
        #[derive(clap::Parser)]
        struct Parse {
            #[command(flatten)]
            args: CellRunArgs,
        }
        <Parse as clap::Parser>::parse_from(["corral-cell"]).args
    }
}

/// The linux backend's network: each cell on a machine needs its own.
#[derive(Debug, Clone, Args)]
pub struct NetworkArgs {
    /// Bridge the containers' veths join [default: derived from the state directory]
    #[arg(long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// The containers' /24 network [default: 10.X.Y.0 with X from 200 to 249, both
    /// derived from the state directory]
    #[arg(long, value_name = "IP")]
    pub subnet: Option<Ipv4Addr>,
    /// Host ports published container ports get, FIRST-LAST [default: 1000 ports
    /// from 20000, derived from the state directory]
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_range)]
    pub host_ports: Option<(u16, u16)>,
}

#[derive(Debug, Args)]
pub struct HelperArgs {
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    #[arg(long, value_enum)]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub network: NetworkArgs,
    #[arg(long, value_name = "ID")]
    pub cell: String,
    /// Destroy the containers and exit once no agent has been connected for this long
    #[arg(long, value_name = "MS")]
    pub orphan_timeout_ms: Option<u64>,
}

fn parse_stack(value: &str) -> Result<(String, PathBuf), String> {
    let (name, dir) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not NAME=DIR"))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "stack name {name:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok((name.to_owned(), PathBuf::from(dir)))
}

fn parse_range(value: &str) -> Result<(u16, u16), String> {
    let (a, b) = value
        .split_once('-')
        .ok_or_else(|| format!("{value:?} is not FIRST-LAST"))?;
    let first: u16 = a.parse().map_err(|_| format!("{a:?} is not a port"))?;
    let last: u16 = b.parse().map_err(|_| format!("{b:?} is not a port"))?;
    if first == 0 || first > last {
        return Err(format!("{value:?}: need 1 <= FIRST <= LAST"));
    }
    Ok((first, last))
}

/// A stable 16-bit number from the cell's state directory (each cell on a machine has
/// its own), for default network names and ranges.
fn id_hash(id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash ^ (hash >> 16)) as u16
}

impl NetworkArgs {
    fn resolved(&self, id: &str) -> (String, Ipv4Addr, (u16, u16)) {
        let h = id_hash(id);
        let bridge = self
            .bridge
            .clone()
            .unwrap_or_else(|| format!("corral{h:04x}"));
        let subnet = self
            .subnet
            .unwrap_or_else(|| Ipv4Addr::new(10, 200 + ((h >> 8) % 50) as u8, (h & 0xff) as u8, 0));
        // Below the kernel's ephemeral ports (32768 and up), so a published port never
        // shadows a port the host picked for a connection of its own.
        let first = 20_000 + (h % 10) * 1000;
        let ports = self.host_ports.unwrap_or((first, first + 999));
        (bridge, subnet, ports)
    }

    fn to_args(&self, id: &str) -> Vec<String> {
        let (bridge, subnet, (first, last)) = self.resolved(id);
        vec![
            "--bridge".into(),
            bridge,
            "--subnet".into(),
            subnet.to_string(),
            "--host-ports".into(),
            format!("{first}-{last}"),
        ]
    }
}

/// Which backend `choice` means on this machine, and why when `auto` falls back.
pub fn choose_backend(choice: BackendChoice) -> Result<(BackendChoice, Option<String>)> {
    match choice {
        BackendChoice::Auto => match runtime::linux::check_supported() {
            Ok(()) => Ok((BackendChoice::Linux, None)),
            Err(why) => Ok((BackendChoice::Process, Some(why))),
        },
        BackendChoice::Linux => {
            runtime::linux::check_supported()
                .map_err(|why| anyhow::anyhow!("the linux backend cannot run here: {why}"))?;
            Ok((BackendChoice::Linux, None))
        }
        BackendChoice::Process => Ok((BackendChoice::Process, None)),
    }
}

/// The runtime helper: blocks until told to shut down. Runs before any async runtime
/// or thread exists, as libcontainer requires.
pub fn helper(args: &HelperArgs) -> Result<()> {
    let config = runtime::helper::HelperConfig {
        socket: runtime::client::helper_paths(&args.state_dir).0,
        state_dir: args.state_dir.clone(),
        orphan_timeout: args.orphan_timeout_ms.map(Duration::from_millis),
    };
    let backend: Box<dyn runtime::Backend> = match args.backend {
        BackendChoice::Linux => {
            let (bridge, subnet, (first, last)) =
                args.network.resolved(&args.state_dir.display().to_string());
            Box::new(runtime::linux::LinuxBackend::new(
                runtime::linux::LinuxConfig {
                    state_dir: args.state_dir.join("linux"),
                    bridge,
                    subnet,
                    host_ports: first..=last,
                },
            )?)
        }
        BackendChoice::Process | BackendChoice::Auto => Box::new(
            runtime::process::ProcessBackend::new(&args.state_dir.join("process"))?,
        ),
    };
    runtime::helper::run(config, backend)
}

/// A running cell: its agent and the helper it talks to.
pub struct RunningCell {
    pub agent: Arc<Agent>,
    pub runtime: Arc<HelperClient>,
    pub backend: BackendChoice,
    pub fallback: Option<String>,
}

/// Connects to (or starts) the cell's runtime helper and makes its agent.
pub async fn prepare(
    args: &CellRunArgs,
    global: &Global,
    env: &dyn Env,
    server_api: Option<(String, Option<String>)>,
) -> Result<RunningCell> {
    let (api, token) = match server_api {
        Some(endpoint) => endpoint,
        None => {
            let endpoint = config::resolve(global, env)?;
            (endpoint.api, endpoint.token)
        }
    };
    let id = match &args.id {
        Some(id) => id.clone(),
        None => format!(
            "cell-{}",
            nix_hostname().unwrap_or_else(|| "local".to_owned())
        ),
    };
    let id = Name::parse("--id", &id).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => config::corral_home(env)?.join("cells").join(id.as_str()),
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let (backend, fallback) = choose_backend(args.backend)?;
    let backend_name = match backend {
        BackendChoice::Linux => "linux",
        _ => "process",
    };
    let mut stacks = Stacks {
        host: true,
        dirs: BTreeMap::new(),
        // Image layers are overlayfs lower directories: only the linux backend has
        // root filesystems to stack them in.
        images: (backend == BackendChoice::Linux).then(|| cell::ImageSource {
            default_registry: args.default_registry.clone(),
            insecure_registries: args.insecure_registries.clone(),
            cache_limit_bytes: args.image_cache_mb.saturating_mul(1024 * 1024),
        }),
    };
    if backend == BackendChoice::Linux
        && let Some(dir) = runtime::linux::prepare_busybox_stack(&state_dir.join("stacks"))?
    {
        stacks.dirs.insert("busybox".to_owned(), dir);
    }
    for (name, dir) in &args.stacks {
        if !dir.is_dir() {
            bail!("stack {name}: {} is not a directory", dir.display());
        }
        stacks.dirs.insert(name.clone(), dir.canonicalize()?);
    }

    let (socket, log) = runtime::client::helper_paths(&state_dir);
    let mut start = std::process::Command::new(std::env::current_exe()?);
    start
        .arg("cell-helper")
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--backend")
        .arg(backend_name)
        .arg("--cell")
        .arg(id.as_str())
        .args(args.network.to_args(&state_dir.display().to_string()));
    if args.ephemeral {
        start.args(["--orphan-timeout-ms", "3000"]);
    }
    let runtime = Arc::new(HelperClient::connect_or_start(&socket, start, &log).await?);
    if runtime.backend() != backend_name {
        bail!(
            "a runtime helper with the {} backend already runs for this cell (pid {}); \
             stop that cell first or use another --state-dir",
            runtime.backend(),
            runtime.helper_pid()
        );
    }
    let detected = cell::detect_capacity(&state_dir);
    let capacity = CellCapacity {
        memory_mb: args.memory_mb.unwrap_or(detected.memory_mb),
        disk_mb: args.disk_mb.unwrap_or(detected.disk_mb),
        containers: args.containers,
    };
    let config = CellConfig {
        id,
        server: api,
        token,
        listen: args.listen,
        advertise_ip: args.advertise_ip.clone(),
        zone: args.zone.clone(),
        state_dir,
        capacity,
        stacks,
        placement_tags: args.tags.clone(),
        optional_placement_tags: Vec::new(),
        grace: Duration::from_millis(args.grace_ms),
        evacuation_timeout: Duration::from_millis(args.evacuation_timeout_ms),
        reconcile_interval: Duration::from_secs(30),
        usage_interval: cell::DEFAULT_USAGE_INTERVAL,
        logs: cell::LogLimits {
            rate_bytes_per_sec: args.log_rate_kb.saturating_mul(1024),
            retained_bytes: args.log_retain_kb.saturating_mul(1024),
            keep_ended: Duration::from_secs(args.log_keep_secs),
        },
    };
    let agent = Agent::new(config, runtime.clone() as Arc<dyn ContainerRuntime>)?;
    Ok(RunningCell {
        agent,
        runtime,
        backend,
        fallback,
    })
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        })
        .filter(|h: &String| !h.is_empty())
}

/// `corral cell`: runs a cell until SIGTERM or SIGINT (which drain it) or a drain
/// request; then stops the runtime helper.
pub async fn run(args: &CellArgs, global: &Global, env: &dyn Env) -> Result<()> {
    if let Some(CellCommand::Drain(drain_args)) = &args.command {
        return drain(drain_args, global, env).await;
    }
    let cell = prepare(&args.run, global, env, None).await?;
    if let Some(why) = &cell.fallback {
        eprintln!(
            "The linux backend is not available here ({why}): using the process backend, without isolation."
        );
    }
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let signalled = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("Evacuating: instances move to other cells before this cell stops.");
    };
    let drained = cell.agent.run(signalled).await?;
    if drained.forced > 0 {
        eprintln!(
            "The evacuation timed out: {} containers were stopped without a replacement.",
            drained.forced
        );
    }
    cell.agent.stopping();
    cell.runtime
        .shutdown()
        .await
        .context("stopping the runtime helper")?;
    eprintln!("Drained; the cell has left.");
    Ok(())
}

async fn drain(args: &DrainArgs, global: &Global, env: &dyn Env) -> Result<()> {
    let endpoint = config::resolve(global, env)?;
    let client = Client::new(&endpoint.api, endpoint.token.clone())?;
    let cells = client.cells().await?;
    let Some(cell) = cells.iter().find(|c| c.id.as_str() == args.id) else {
        let known: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        bail!(
            "no cell {:?} has joined; cells: {}",
            args.id,
            known.join(", ")
        );
    };
    let http = reqwest::Client::new();
    let mut request = http.post(format!("{}/v1/drain", cell.address.trim_end_matches('/')));
    if let Some(token) = &endpoint.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("asking cell {} at {} to drain", args.id, cell.address))?;
    if !response.status().is_success() {
        bail!(
            "cell {} refused to drain: {} {}",
            args.id,
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    println!("Cell {} is evacuating.", args.id);
    if args.no_wait {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let cells = client.cells().await?;
        if !cells.iter().any(|c| c.id.as_str() == args.id) {
            println!("Cell {} has left.", args.id);
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "cell {} is still evacuating after {} s",
                args.id,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
