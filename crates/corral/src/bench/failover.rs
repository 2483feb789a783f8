//! `corral bench failover`: how fast a dead cell is noticed and its instances run
//! elsewhere.
//!
//! One run: a real server (child process, default timings: heartbeat 1 s, presence TTL
//! 3 s, expiry sweep every 250 ms), one simulated cell in a `corral sim-cells` child
//! process that gets all N instances, then a second, empty cell (in this process).
//! The first is killed with SIGKILL: no goodbye, its heartbeats and its HTTP server stop
//! at once. Measured from the kill, on the server's clock: the `cell_expired` event
//! (detection), the first instance marked SUSPECT (convergence), and the RUNNING
//! `since` of the first and the last replacement on the second cell. Detection is also
//! checked by polling `GET /v1/cells`.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use api::LrpCreate;
use client::Client;
use futures::StreamExt;
use model::{Action, CellCapacity, Instance, InstanceState, Presence, Resources};
use sim::{Latency, SimCells, SimOptions};

use super::FailoverArgs;
use super::machine::Machine;
use super::markdown::{self, Section, thousands};
use super::server_child::ServerChild;
use super::stats::median;

/// Instances per LRP.
const PER_LRP: u32 = 1000;
const DOOMED: &str = "doomed-0";
const SPARE: &str = "spare-0";
/// How long setting a run up may take (cells joining, N instances running).
const SETUP_DEADLINE: Duration = Duration::from_secs(120);
/// How long after the kill the run waits for every replacement.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);
/// Design goals (design.md).
const GOAL_DETECT_SECS: f64 = 3.0;
const GOAL_RECOVER_SECS: f64 = 5.0;

/// The figures of one run, in ms after the kill.
#[derive(Debug, Clone, Default)]
struct RunResult {
    /// The server's `cell_expired` event.
    detected: Option<u64>,
    /// When this process saw the cell gone from `GET /v1/cells`.
    gone_from_api: Option<u64>,
    /// The first instance row marked SUSPECT.
    suspect: Option<u64>,
    /// RUNNING `since` of the first and the last replacement.
    first_running: Option<u64>,
    all_running: Option<u64>,
    replaced: u32,
}

pub async fn run(args: &FailoverArgs) -> Result<()> {
    if args.instances == 0 {
        bail!("--instances must be at least 1");
    }
    let machine = Machine::read();
    let command = command(args);
    println!("corral bench failover: {command}");
    println!(
        "Machine: {} (load average {} at the start; other work on it makes the figures noisy)",
        machine.describe(),
        machine.load
    );
    println!(
        "{} instances on one cell, killed with SIGKILL; a second cell takes them over; default timings (heartbeat 1 s, TTL 3 s, sweep 250 ms); {} run(s)\n",
        thousands(u64::from(args.instances)),
        args.runs
    );
    let mut results = Vec::new();
    for run in 1..=args.runs.max(1) {
        let result = one_run(args, run).await?;
        println!(
            "run {run}: detected {} s (gone from GET /v1/cells {} s), first marked suspect {} s, first replacement RUNNING {} s, all {} of {} RUNNING {} s after the kill",
            s(result.detected),
            s(result.gone_from_api),
            s(result.suspect),
            s(result.first_running),
            thousands(u64::from(result.replaced)),
            thousands(u64::from(args.instances)),
            s(result.all_running)
        );
        results.push(result);
    }
    let med = |f: fn(&RunResult) -> Option<u64>| {
        median(results.iter().filter_map(f).map(|v| v as f64 / 1000.0))
    };
    let detected = med(|r| r.detected);
    let all = med(|r| r.all_running);
    let complete = results
        .iter()
        .all(|r| r.all_running.is_some() && r.replaced >= args.instances);
    let worst_detect = results.iter().filter_map(|r| r.detected).max();
    let worst_all = results.iter().filter_map(|r| r.all_running).max();
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    let goals = format!(
        "detected <= 3 s: {} (median {}, worst {}); RUNNING elsewhere <= 5 s: {} (median {}, worst {})",
        yes(detected.is_some_and(|d| d <= GOAL_DETECT_SECS)),
        f(detected),
        s(worst_detect),
        yes(complete && all.is_some_and(|a| a <= GOAL_RECOVER_SECS)),
        f(all),
        s(worst_all)
    );
    println!(
        "\nMedians of {} runs: detected {} s, suspect {} s, first replacement {} s, all RUNNING {} s",
        results.len(),
        f(detected),
        f(med(|r| r.suspect)),
        f(med(|r| r.first_running)),
        f(all)
    );
    println!("Goals (design.md): {goals}");
    if !args.record.no_record {
        let runs: Vec<String> = results
            .iter()
            .map(|r| format!("{} / {}", s(r.detected), s(r.all_running)))
            .collect();
        let row = vec![
            machine.date.clone(),
            format!("`{command}`"),
            if args.db == "sqlite" {
                "SQLite"
            } else {
                "PostgreSQL"
            }
            .to_owned(),
            thousands(u64::from(args.instances)),
            args.start_ms.to_string(),
            format!("{}: {}", results.len(), runs.join(", ")),
            f(detected),
            f(med(|r| r.gone_from_api)),
            f(med(|r| r.suspect)),
            f(med(|r| r.first_running)),
            if complete {
                f(all)
            } else {
                format!("{} (incomplete)", f(all))
            },
            goals,
            machine.table_cell(),
        ];
        markdown::record(&args.record.out, &SECTION, row)?;
    }
    Ok(())
}

fn command(args: &FailoverArgs) -> String {
    let mut command = format!("corral bench failover --instances {}", args.instances);
    if args.runs != 5 {
        command.push_str(&format!(" --runs {}", args.runs));
    }
    if args.start_ms != 50 {
        command.push_str(&format!(" --start-ms {}", args.start_ms));
    }
    if args.db != "sqlite" {
        command.push_str(" --db postgres://...");
    }
    command
}

/// Seconds with ms precision, or `-`.
fn s(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.2}", ms as f64 / 1000.0))
}

fn f(secs: Option<f64>) -> String {
    secs.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn capacity(instances: u32) -> CellCapacity {
    let containers = u64::from(instances) * 2;
    let r = Resources::default();
    CellCapacity {
        memory_mb: containers * r.memory_mb,
        disk_mb: containers * r.disk_mb,
        containers: u32::try_from(containers).unwrap_or(u32::MAX),
    }
}

async fn one_run(args: &FailoverArgs, run: u32) -> Result<RunResult> {
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let db_url = if args.db == "sqlite" {
        format!("sqlite:{}", dir.path().join("corral.db").display())
    } else {
        args.db.clone()
    };
    let mut server = ServerChild::start(&db_url, dir.path()).await?;
    let client = Client::new(&server.api, Some(server.token.clone()))?;
    let capacity = capacity(args.instances);

    // The cell that will die: a process of its own, so that SIGKILL is a real kill.
    let exe = std::env::current_exe().context("find the corral binary")?;
    let log = std::fs::File::create(dir.path().join("doomed.log"))?;
    let mut doomed = tokio::process::Command::new(exe)
        .args([
            "sim-cells",
            "--count",
            "1",
            "--prefix",
            "doomed",
            "--server",
        ])
        .arg(&server.api)
        .args(["--containers", &capacity.containers.to_string()])
        .args(["--memory-mb", &capacity.memory_mb.to_string()])
        .args(["--disk-mb", &capacity.disk_mb.to_string()])
        .args(["--start-ms", &args.start_ms.to_string(), "--seed", "1"])
        .env("CORRAL_TOKEN", &server.token)
        .env_remove("CORRAL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("start the doomed cell (corral sim-cells)")?;
    wait_for_cell(&client, DOOMED, true).await?;

    let lrps: Vec<String> = (0..args.instances.div_ceil(PER_LRP))
        .map(|i| format!("failover-{i:03}"))
        .collect();
    for (i, name) in lrps.iter().enumerate() {
        let instances = (args.instances - i as u32 * PER_LRP).min(PER_LRP);
        client.create_lrp(&create(name, instances)).await?;
    }
    let placed = Instant::now();
    loop {
        let running = count_running(&client, &lrps, DOOMED).await?;
        if running >= args.instances {
            break;
        }
        if placed.elapsed() > SETUP_DEADLINE {
            bail!(
                "only {running} of {} instances ran on the first cell\n{}",
                args.instances,
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The cell that takes over, empty until the kill.
    let spare = SimCells::start(SimOptions {
        token: Some(server.token.clone()),
        prefix: "spare".into(),
        capacity,
        start_latency: Latency::Fixed(Duration::from_millis(args.start_ms)),
        seed: Some(2),
        ..SimOptions::new(server.api.clone(), 1)
    })
    .await?;
    wait_for_cell(&client, SPARE, true).await?;
    let cursor = server.stats().await?.newest_event;

    // Watch the events and the cell list from before the kill.
    let watcher = tokio::spawn(watch(client.clone(), cursor, args.instances));
    let poller = {
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(cells) = client.cells().await
                    && !cells.iter().any(|c| c.id.as_str() == DOOMED)
                {
                    return wall_ms();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Let both connect, and make the kill land at a different point of the heartbeat
    // interval in each run.
    tokio::time::sleep(Duration::from_millis(300 + u64::from(run) * 373 % 1000)).await;

    let killed = wall_ms();
    doomed.start_kill().context("kill the doomed cell")?;
    let _ = doomed.wait().await;

    let watched = match tokio::time::timeout(RECOVERY_DEADLINE, watcher).await {
        Ok(Ok(watched)) => watched,
        Ok(Err(e)) => bail!("the event watcher failed: {e}"),
        Err(_) => Watched::default(),
    };
    let gone = tokio::time::timeout(Duration::from_secs(5), poller)
        .await
        .ok()
        .and_then(Result::ok);

    // The rows have the last word on what runs where and since when.
    let mut replaced = 0;
    let mut last = None::<u64>;
    let mut first = None::<u64>;
    for name in &lrps {
        for instance in client.instances(name).await? {
            if instance.presence == Presence::Ordinary
                && instance.state == InstanceState::Running
                && on_cell(&instance, SPARE)
            {
                replaced += 1;
                let since = instance.since.as_millis();
                last = Some(last.map_or(since, |l| l.max(since)));
                first = Some(first.map_or(since, |f| f.min(since)));
            }
        }
    }
    spare.shutdown().await;
    server.stop().await?;
    let after = |at: Option<u64>| at.map(|at| at.saturating_sub(killed));
    Ok(RunResult {
        detected: after(watched.expired),
        gone_from_api: after(gone),
        suspect: after(watched.suspect),
        first_running: after(first),
        all_running: if replaced >= args.instances {
            after(last)
        } else {
            None
        },
        replaced,
    })
}

fn create(name: &str, instances: u32) -> LrpCreate {
    LrpCreate {
        image_credentials: None,
        name: name.to_owned(),
        domain: None,
        rootfs: None,
        instances: i64::from(instances),
        resources: Default::default(),
        setup: None,
        action: Some(Action::run("sleep", ["1000000"])),
        env: vec![],
        ports: vec![8080],
        checks: None,
        routes: None,
        placement_tags: vec![],
        crash_policy: None,
        annotation: String::new(),
    }
}

fn on_cell(instance: &Instance, cell: &str) -> bool {
    instance
        .key
        .as_ref()
        .is_some_and(|k| k.cell_id.as_str() == cell)
}

async fn count_running(client: &Client, lrps: &[String], cell: &str) -> Result<u32> {
    let mut running = 0;
    for name in lrps {
        let status = client.lrp_status(name).await?;
        running += status
            .instances
            .iter()
            .filter(|i| {
                i.presence == Presence::Ordinary
                    && i.state == InstanceState::Running
                    && on_cell(i, cell)
            })
            .count() as u32;
    }
    Ok(running)
}

async fn wait_for_cell(client: &Client, id: &str, present: bool) -> Result<()> {
    let started = Instant::now();
    loop {
        let cells = client.cells().await.unwrap_or_default();
        if cells.iter().any(|c| c.id.as_str() == id) == present {
            return Ok(());
        }
        if started.elapsed() > SETUP_DEADLINE {
            bail!("cell {id} did not join within {SETUP_DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the event stream showed, on the server's clock (ms since the epoch).
#[derive(Debug, Clone, Default)]
struct Watched {
    expired: Option<u64>,
    suspect: Option<u64>,
}

/// Follows cell and instance events after `cursor` until the doomed cell expired and
/// `instances` replacements run on the spare cell.
async fn watch(client: Client, cursor: u64, instances: u32) -> Watched {
    let mut watched = Watched::default();
    let mut running: HashSet<(String, u32)> = HashSet::new();
    let mut events = client.events(Some(cursor), &["cell", "instance"]);
    while let Some(Ok(event)) = events.next().await {
        match event.kind.as_str() {
            "cell_expired" | "cell_removed" => {
                let id = serde_json::from_str::<serde_json::Value>(event.data.get())
                    .ok()
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
                if id.as_deref() == Some(DOOMED) && watched.expired.is_none() {
                    watched.expired = Some(event.at);
                }
            }
            "instance_created" | "instance_changed" => {
                let Ok(instance) = serde_json::from_str::<Instance>(event.data.get()) else {
                    continue;
                };
                if instance.presence == Presence::Suspect && watched.suspect.is_none() {
                    watched.suspect = Some(event.at);
                }
                if instance.presence == Presence::Ordinary
                    && instance.state == InstanceState::Running
                    && on_cell(&instance, SPARE)
                {
                    running.insert((instance.lrp.to_string(), instance.index));
                }
            }
            _ => {}
        }
        if watched.expired.is_some() && running.len() >= instances as usize {
            break;
        }
    }
    watched
}

const SECTION: Section<'static> = Section {
    title: "Failure recovery",
    intro: "\
`corral bench failover [--instances N] [--runs R] [--start-ms MS]`: a real server (`corral bench serve`, a child \
process, default timings: heartbeat 1 s, presence TTL 3 s, expiry sweep 250 ms) on SQLite, one simulated cell in a \
`corral sim-cells` child process running all N instances, and a second, empty simulated cell. The first is killed \
with SIGKILL at a varying point of its heartbeat interval. Times are seconds after the kill, on the server's clock: \
the `cell_expired` event (detected), the cell gone from `GET /v1/cells` as a poller every 10 ms saw it, the first \
instance marked SUSPECT by the converger, and the RUNNING `since` of the first and the last replacement on the \
second cell (containers start in `--start-ms`, default 50 ms). Medians of the runs; 2 shared cores, so noisy.",
    header: &[
        "Date",
        "Command",
        "DB",
        "Instances",
        "Start (ms)",
        "Runs: detected / all RUNNING (s)",
        "Detected (s)",
        "Gone from GET /v1/cells (s)",
        "First SUSPECT (s)",
        "First replacement RUNNING (s)",
        "All replacements RUNNING (s)",
        "Goals",
        "Machine (load)",
    ],
    key: &[2, 3, 4],
    outro: "\
Goals (design.md): a killed cell detected in <= 3 s; its instances RUNNING elsewhere <= 5 s after the kill.",
};
