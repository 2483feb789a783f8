//! `corral bench start`: how long a container takes from desired to RUNNING, and how
//! much of that the runtime helper alone needs for the same container.
//!
//! One run, in this process: a server on SQLite in a temporary directory and one real
//! cell (agent and runtime helper, `--backend` as `corral cell` takes it). After one
//! untimed warm-up start, N LRPs of one instance are created one at a time, each timed
//! from just before its create request to the moment this process sees its instance
//! RUNNING on the event stream; then one LRP of N instances, each instance timed the
//! same way. Last, the runtime helper alone, over a second connection: N times the same
//! container (rootfs, default limits, no ports) created and `sleep` started in it, timed
//! until the start returns. The ratio of the one-at-a-time median to the helper's shows
//! what the control plane and the agent add to the runtime's own work.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::LrpCreate;
use clap::Args;
use client::Client;
use futures::StreamExt;
use model::{Action, Instance, InstanceState, Presence, Resources};
use runtime::{ContainerRuntime, ContainerSpec, HelperClient, Limits, ProcessSpec, RootfsSpec};
use tokio::sync::mpsc;

use super::Record;
use super::cluster::{Cluster, until_cell_joined};
use super::machine::Machine;
use super::markdown::{self, Section};
use super::stats::percentile;
use crate::cell_cmd::{self, BackendChoice, CellRunArgs};

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Containers started one at a time, then at once, then by the runtime helper alone
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub instances: u32,
    /// The cell's runtime: linux (isolated containers, needs root), process, or auto
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The containers' root filesystem [default: preloaded:busybox on linux,
    /// preloaded:host on process]
    #[arg(long, value_name = "ROOTFS", value_parser = [BUSYBOX, HOST])]
    pub rootfs: Option<String>,
    #[command(flatten)]
    pub record: Record,
}

const BUSYBOX: &str = "preloaded:busybox";
const HOST: &str = "preloaded:host";
const CELL: &str = "bench-start";
/// How long the cell may take to join, and one instance to start.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long N instances started at once may take.
const BURST_DEADLINE: Duration = Duration::from_secs(300);
/// How long the cell may take to stop the deleted containers.
const STOP_DEADLINE: Duration = Duration::from_secs(120);
/// Design goals (issue #4).
const GOAL_P50_MS: f64 = 50.0;
const GOAL_RATIO: f64 = 2.0;

/// The samples of one run, in microseconds.
#[derive(Debug, Default)]
struct Figures {
    /// One at a time: create request to RUNNING, and to CLAIMED (placed).
    single: Vec<u64>,
    single_claimed: Vec<u64>,
    /// At once: the same per instance, and to the last RUNNING.
    burst: Vec<u64>,
    burst_claimed: Vec<u64>,
    burst_all: u64,
    /// The runtime helper alone: create, and create + start of the process.
    helper_create: Vec<u64>,
    helper_start: Vec<u64>,
}

pub async fn run(args: &StartArgs) -> Result<()> {
    if args.instances == 0 {
        bail!("--instances must be at least 1");
    }
    let (backend, fallback) = cell_cmd::choose_backend(args.backend)?;
    let rootfs = match (args.rootfs.as_deref(), backend) {
        (Some(BUSYBOX), _) | (None, BackendChoice::Linux) => BUSYBOX,
        _ => HOST,
    };
    if backend != BackendChoice::Linux && rootfs != HOST {
        bail!("the process backend offers only {HOST}, not {rootfs}");
    }
    let machine = Machine::read();
    let command = command(args);
    println!("corral bench start: {command}");
    println!(
        "Machine: {} (load average {} at the start; other work on it makes the figures noisy)",
        machine.describe(),
        machine.load
    );
    let backend_name = match (backend, &fallback) {
        (BackendChoice::Linux, _) => "linux".to_owned(),
        (_, Some(why)) => format!("process (the linux backend cannot run here: {why})"),
        _ => "process".to_owned(),
    };
    println!(
        "Backend: {backend_name}; rootfs {rootfs}; {} instances one at a time, then at once, then the runtime helper alone",
        args.instances
    );

    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let state_dir = dir.path().join("cell");
    // Room for three times the work whatever the machine has: `sleep` uses almost
    // nothing, and placement should never be what a start waits for.
    let containers = args.instances.saturating_mul(3).max(256);
    let per = Resources::default();
    let cell_args = CellRunArgs {
        id: Some(CELL.to_owned()),
        backend,
        state_dir: Some(state_dir.clone()),
        memory_mb: Some(u64::from(containers) * per.memory_mb),
        disk_mb: Some(u64::from(containers) * per.disk_mb),
        containers,
        ..CellRunArgs::defaults()
    };
    let cluster = Cluster::start(dir.path(), &cell_args).await?;
    let helper = cluster.cell.runtime.helper_pid();
    println!(
        "Runtime helper pid {helper} (to profile it: perf record -g -p {helper}); state in {}\n",
        state_dir.display()
    );

    let bench = Bench {
        client: cluster.client()?,
        cursor: cluster.server.newest_event(),
        state_dir,
        rootfs,
        instances: args.instances,
    };
    // Reported before the cell stops: its agent logs the runtime helper's going.
    let reported = match bench.measure().await {
        Ok(figures) => report(args, &machine, &command, backend, rootfs, &figures),
        Err(e) => {
            // Keep the cell's files (the runtime helper's log among them) to look into.
            let kept = dir.keep();
            eprintln!(
                "The run's files are kept in {} (the runtime helper's log: {}).",
                kept.display(),
                runtime::client::helper_paths(&kept.join("cell"))
                    .1
                    .display()
            );
            Err(e)
        }
    };

    cluster.stop().await?;
    reported
}

fn command(args: &StartArgs) -> String {
    let mut command = format!("corral bench start --instances {}", args.instances);
    match args.backend {
        BackendChoice::Linux => command.push_str(" --backend linux"),
        BackendChoice::Process => command.push_str(" --backend process"),
        BackendChoice::Auto => {}
    }
    if let Some(rootfs) = &args.rootfs {
        command.push_str(&format!(" --rootfs {rootfs}"));
    }
    command
}

/// What a run needs once the server and the cell are up.
struct Bench {
    client: Client,
    /// The newest event before the benchmark's first create.
    cursor: u64,
    state_dir: PathBuf,
    rootfs: &'static str,
    instances: u32,
}

impl Bench {
    async fn measure(&self) -> Result<Figures> {
        until_cell_joined(&self.client, CELL, START_DEADLINE).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch(self.client.clone(), self.cursor, tx));
        let mut seen = Seen::new(rx);
        let helper = HelperClient::connect(&runtime::client::helper_paths(&self.state_dir).0)
            .await
            .context("connect to the runtime helper a second time")?;
        let result = self.phases(&mut seen, &helper).await;
        watcher.abort();
        result
    }

    async fn phases(&self, seen: &mut Seen, helper: &HelperClient) -> Result<Figures> {
        // The first container of a cell pays for what later ones share (the stack's
        // page cache, the bridge, the event stream's connection): not measured.
        self.client.create_lrp(&self.lrp("warmup", 1)).await?;
        seen.until_running("warmup", 1, START_DEADLINE).await?;
        self.client.delete_lrp("warmup").await?;
        until_no_containers(helper).await?;

        let mut figures = Figures::default();
        self.one_at_a_time(seen, &mut figures).await?;
        until_no_containers(helper).await?;
        self.at_once(seen, &mut figures).await?;
        until_no_containers(helper).await?;
        (figures.helper_create, figures.helper_start) = self.helper_alone(helper).await?;
        println!(
            "runtime helper alone: {} started, p50 {} ms\n",
            self.instances,
            ms(percentile(&sorted(&figures.helper_start), 50.0))
        );
        Ok(figures)
    }

    /// N LRPs of one instance, each deleted (without waiting) once it runs.
    async fn one_at_a_time(&self, seen: &mut Seen, figures: &mut Figures) -> Result<()> {
        for i in 0..self.instances {
            let name = format!("seq-{i}");
            let asked = Instant::now();
            self.client
                .create_lrp(&self.lrp(&name, 1))
                .await
                .with_context(|| format!("create LRP {name}"))?;
            let started = seen.until_running(&name, 1, START_DEADLINE).await?;
            figures.single.push(micros(started[0].running - asked));
            if let Some(claimed) = started[0].claimed {
                figures.single_claimed.push(micros(claimed - asked));
            }
            self.client
                .delete_lrp(&name)
                .await
                .with_context(|| format!("delete LRP {name}"))?;
        }
        println!(
            "one at a time: {} started, p50 {} ms",
            self.instances,
            ms(percentile(&sorted(&figures.single), 50.0))
        );
        Ok(())
    }

    /// One LRP of N instances, deleted once all run.
    async fn at_once(&self, seen: &mut Seen, figures: &mut Figures) -> Result<()> {
        let asked = Instant::now();
        self.client
            .create_lrp(&self.lrp("burst", self.instances))
            .await
            .context("create LRP burst")?;
        let started = seen
            .until_running("burst", self.instances, BURST_DEADLINE)
            .await?;
        for start in &started {
            figures.burst.push(micros(start.running - asked));
            if let Some(claimed) = start.claimed {
                figures.burst_claimed.push(micros(claimed - asked));
            }
        }
        figures.burst_all = figures.burst.iter().copied().max().unwrap_or(0);
        println!(
            "at once: {} started, all RUNNING after {} ms",
            self.instances,
            ms(Some(figures.burst_all))
        );
        self.client
            .delete_lrp("burst")
            .await
            .context("delete LRP burst")
    }

    /// The runtime helper alone, N times the instances' container: the time to create
    /// it, and to create it and start `sleep` in it.
    async fn helper_alone(&self, helper: &HelperClient) -> Result<(Vec<u64>, Vec<u64>)> {
        let rootfs = self.rootfs_spec()?;
        let (mut create, mut start) = (Vec::new(), Vec::new());
        for i in 0..self.instances {
            let id = format!("bench-helper-{i}");
            let spec = ContainerSpec {
                id: id.clone(),
                rootfs: rootfs.clone(),
                limits: limits(&Resources::default()),
                env: Vec::new(),
                mounts: Vec::new(),
                ports: Vec::new(),
                hostname: id.clone(),
            };
            let asked = Instant::now();
            helper
                .create(spec)
                .await
                .with_context(|| format!("create container {id}"))?;
            let created = asked.elapsed();
            helper
                .spawn(&id, sleep(i))
                .await
                .with_context(|| format!("start sleep in container {id}"))?;
            start.push(micros(asked.elapsed()));
            create.push(micros(created));
            helper
                .destroy(&id)
                .await
                .with_context(|| format!("destroy container {id}"))?;
        }
        Ok((create, start))
    }

    fn lrp(&self, name: &str, instances: u32) -> LrpCreate {
        LrpCreate {
            image_credentials: None,
            name: name.to_owned(),
            domain: None,
            rootfs: Some(self.rootfs.to_owned()),
            instances: i64::from(instances),
            resources: Default::default(),
            setup: None,
            action: Some(Action::run("sleep", ["1000"])),
            env: vec![],
            ports: vec![],
            checks: None,
            routes: None,
            placement_tags: vec![],
            crash_policy: None,
            annotation: String::new(),
        }
    }

    /// The rootfs the cell resolves `self.rootfs` to (see `cell::Stacks`).
    fn rootfs_spec(&self) -> Result<RootfsSpec> {
        if self.rootfs == HOST {
            return Ok(RootfsSpec::Host);
        }
        // The cell's own stack: built when the cell was prepared, so this only finds it.
        let stacks = self.state_dir.join("stacks").join("busybox");
        match runtime::linux::prepare_busybox_stack(&stacks)? {
            Some(dir) => Ok(RootfsSpec::Layers { lower: vec![dir] }),
            None => bail!("{BUSYBOX} needs /bin/busybox (Debian package busybox-static)"),
        }
    }
}

/// The limits the cell gives an instance with `resources` (as `cell::work` does).
fn limits(resources: &Resources) -> Limits {
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

/// `sleep 1000` with the environment the agent gives an instance's process.
fn sleep(index: u32) -> ProcessSpec {
    let id = format!("bench-helper-{index}");
    ProcessSpec {
        path: "sleep".to_owned(),
        args: vec!["1000".to_owned()],
        dir: None,
        env: vec![
            ("INSTANCE_INDEX".into(), "0".into()),
            ("INSTANCE_GUID".into(), id.clone()),
            ("CORRAL_LRP".into(), "bench-helper".into()),
            ("CORRAL_INSTANCE_INDEX".into(), "0".into()),
            ("CORRAL_INSTANCE_ID".into(), id),
        ],
        user: None,
        nofile: None,
        nproc: None,
        tty: None,
        log: true,
    }
}

/// Waits until the runtime helper holds no containers: the cell stopped all it was
/// told to.
pub(super) async fn until_no_containers(helper: &HelperClient) -> Result<()> {
    let started = Instant::now();
    loop {
        let held = helper
            .list()
            .await
            .context("list the helper's containers")?;
        if held.is_empty() {
            return Ok(());
        }
        if started.elapsed() > STOP_DEADLINE {
            bail!(
                "the cell still holds {} containers {STOP_DEADLINE:?} after their LRPs were deleted",
                held.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An instance's state as the event stream showed it, when this process saw it.
#[derive(Debug)]
pub(super) struct Change {
    lrp: String,
    index: u32,
    state: InstanceState,
    crash_reason: Option<String>,
    at: Instant,
}

/// Follows instance events after `cursor`, noting when each arrived, until the stream
/// ends or nobody listens.
pub(super) async fn watch(client: Client, cursor: u64, changes: mpsc::UnboundedSender<Change>) {
    let mut events = client.events(Some(cursor), &["instance"]);
    while let Some(Ok(event)) = events.next().await {
        let at = Instant::now();
        if !matches!(event.kind.as_str(), "instance_created" | "instance_changed") {
            continue;
        }
        let Ok(instance) = serde_json::from_str::<Instance>(event.data.get()) else {
            continue;
        };
        if instance.presence != Presence::Ordinary {
            continue;
        }
        let change = Change {
            lrp: instance.lrp.to_string(),
            index: instance.index,
            state: instance.state,
            crash_reason: instance.crash_reason,
            at,
        };
        if changes.send(change).is_err() {
            return;
        }
    }
}

/// When one instance was first seen placed and RUNNING.
#[derive(Debug, Clone, Copy)]
pub(super) struct Started {
    claimed: Option<Instant>,
    pub(super) running: Instant,
}

/// The instance changes seen so far, by (LRP, index).
pub(super) struct Seen {
    changes: mpsc::UnboundedReceiver<Change>,
    claimed: HashMap<(String, u32), Instant>,
    running: HashMap<(String, u32), Instant>,
}

impl Seen {
    pub(super) fn new(changes: mpsc::UnboundedReceiver<Change>) -> Seen {
        Seen {
            changes,
            claimed: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// Waits until instances `0..count` of `lrp` have been seen RUNNING; fails when one
    /// crashes or `within` passes.
    pub(super) async fn until_running(
        &mut self,
        lrp: &str,
        count: u32,
        within: Duration,
    ) -> Result<Vec<Started>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let key = |index| (lrp.to_owned(), index);
            let running = (0..count)
                .filter(|&i| self.running.contains_key(&key(i)))
                .count();
            if running == count as usize {
                return Ok((0..count)
                    .map(|i| Started {
                        claimed: self.claimed.get(&key(i)).copied(),
                        running: self.running[&key(i)],
                    })
                    .collect());
            }
            let change = match tokio::time::timeout_at(deadline, self.changes.recv()).await {
                Ok(Some(change)) => change,
                Ok(None) => bail!("the event stream ended"),
                Err(_) => bail!("{lrp}: {running} of {count} instances RUNNING after {within:?}"),
            };
            let key = (change.lrp, change.index);
            match change.state {
                InstanceState::Claimed => {
                    self.claimed.entry(key).or_insert(change.at);
                }
                InstanceState::Running => {
                    self.running.entry(key).or_insert(change.at);
                }
                InstanceState::Crashed if key.0 == lrp => bail!(
                    "{lrp} instance {} crashed: {}",
                    key.1,
                    change.crash_reason.as_deref().unwrap_or("no reason given")
                ),
                _ => {}
            }
        }
    }
}

fn report(
    args: &StartArgs,
    machine: &Machine,
    command: &str,
    backend: BackendChoice,
    rootfs: &str,
    figures: &Figures,
) -> Result<()> {
    let single = sorted(&figures.single);
    let burst = sorted(&figures.burst);
    let helper = sorted(&figures.helper_start);
    let helper_create = sorted(&figures.helper_create);
    let p = |v: &[u64], q: f64| ms(percentile(v, q));
    let ratio = match (percentile(&single, 50.0), percentile(&helper, 50.0)) {
        (Some(s), Some(h)) if h > 0 => Some(s as f64 / h as f64),
        _ => None,
    };
    let ratio_text = ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.1}x"));
    let single_p50 = percentile(&single, 50.0).map(|us| us as f64 / 1000.0);
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    let goals = format!(
        "p50 <= 50 ms: {} ({} ms); ratio <= 2x: {} ({ratio_text})",
        yes(single_p50.is_some_and(|v| v <= GOAL_P50_MS)),
        p(&single, 50.0),
        yes(ratio.is_some_and(|r| r <= GOAL_RATIO)),
    );
    let backend = match backend {
        BackendChoice::Linux => "linux",
        _ => "process",
    };

    let line = |what: &str, v: &[u64]| {
        println!(
            "{what:<34} {:>9} {:>9} {:>9} {:>9}",
            p(v, 50.0),
            p(v, 99.0),
            ms(v.first().copied()),
            ms(v.last().copied())
        );
    };
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>9}",
        "(ms)", "p50", "p99", "min", "max"
    );
    line("one at a time: create -> RUNNING", &single);
    line("  create -> CLAIMED", &sorted(&figures.single_claimed));
    line("at once: create -> RUNNING", &burst);
    line("  create -> CLAIMED", &sorted(&figures.burst_claimed));
    line("runtime helper: create + start", &helper);
    line("  create only", &helper_create);
    println!(
        "\nAt once, all {} RUNNING after {} ms. Ratio one at a time / runtime helper (p50): {ratio_text}.",
        args.instances,
        ms(Some(figures.burst_all))
    );
    println!("Backend {backend}, rootfs {rootfs}.");
    println!("Goals (issue #4): {goals}");

    if !args.record.no_record {
        let both = |v: &[u64]| format!("{} / {}", p(v, 50.0), p(v, 99.0));
        let row = vec![
            machine.date.clone(),
            format!("`{command}`"),
            backend.to_owned(),
            rootfs.to_owned(),
            args.instances.to_string(),
            both(&single),
            both(&burst),
            ms(Some(figures.burst_all)),
            both(&helper),
            p(&helper_create, 50.0),
            ratio_text,
            goals,
            machine.table_cell(),
        ];
        markdown::record(&args.record.out, &SECTION, row)?;
    }
    Ok(())
}

pub(super) fn sorted(samples: &[u64]) -> Vec<u64> {
    let mut v = samples.to_vec();
    v.sort_unstable();
    v
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds as milliseconds with one decimal, or `-`.
pub(super) fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0))
}

const SECTION: Section<'static> = Section {
    title: "Container start",
    intro: "\
`corral bench start [--instances N] [--backend auto|linux|process] [--rootfs preloaded:busybox|preloaded:host]`: \
a server on SQLite and one real cell (agent and runtime helper) in one process, on one machine, default timings. \
After one untimed warm-up, N LRPs of one instance running `sleep 1000` are created one after another, each timed \
from just before its create request to the moment the benchmark sees the instance RUNNING on the event stream (each \
LRP is deleted as soon as it runs, without waiting); then one LRP of N instances, each instance timed the same way, \
and the time until all run. Then the runtime helper alone, over its socket: N times the same container (same rootfs, \
the default limits of 128 MB, cpu weight 10, 1,024 pids, no ports) created and `sleep` started in it, timed until \
the start returns (the create alone in its own column). The ratio is the one-at-a-time p50 over the helper's: what \
the API, the store, the scheduler, the cell's work endpoint and the agent add to the runtime's own work. Times in \
ms; 2 shared cores, so noisy.",
    header: &[
        "Date",
        "Command",
        "Backend",
        "Rootfs",
        "Instances",
        "One at a time p50 / p99 (ms)",
        "At once p50 / p99 (ms)",
        "At once all RUNNING (ms)",
        "Runtime helper alone p50 / p99 (ms)",
        "Helper create only p50 (ms)",
        "Ratio (one at a time / helper, p50)",
        "Goals",
        "Machine (load)",
    ],
    key: &[2, 3, 4],
    outro: "Goals (issue #4): desired -> RUNNING p50 <= 50 ms, at most 2x the runtime helper's own time.",
};

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: StartArgs,
    }

    fn parse(argv: &[&str]) -> Result<StartArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("start").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn the_recorded_command_names_what_differs_from_the_defaults() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "corral bench start --instances 50"),
            (
                &["--instances", "7", "--backend", "process"],
                "corral bench start --instances 7 --backend process",
            ),
            (
                &[
                    "--backend",
                    "linux",
                    "--rootfs",
                    "preloaded:host",
                    "--no-record",
                ],
                "corral bench start --instances 50 --backend linux --rootfs preloaded:host",
            ),
        ];
        for (argv, expect) in cases {
            let args = parse(argv).expect("parses");
            assert_eq!(command(&args), *expect, "{argv:?}");
        }
    }

    #[test]
    fn only_the_preloaded_stacks_are_offered() {
        assert!(parse(&["--rootfs", "docker:///busybox"]).is_err());
    }

    #[test]
    fn the_default_resources_give_the_cells_limits() {
        let got = limits(&Resources::default());
        assert_eq!(got.memory_bytes, 128 << 20);
        assert_eq!((got.cpu_weight, got.pids), (10, 1024));
    }
}
