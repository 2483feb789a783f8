//! `corral bench schedule`: placement end to end at scale.
//!
//! One run: a real server in a child process on a fresh database, a fleet of N
//! simulated cells in this process (containers start at once, room for twice the work),
//! then L LRPs created through the API as fast as it takes them. Measured: from the
//! first create to the last instance RUNNING (the instance rows' `since`), placements/s
//! (work received by the cells), the store's writes/s and events/s, desired -> RUNNING
//! per instance (`since` minus the LRP's `created_at`), the server's peak RSS, a
//! convergence pass at full load, and the pure placement core on the same cells and
//! work, so the end-to-end / pure ratio shows what the machinery around it costs.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use api::{LrpCreate, WorkItem};
use client::Client;
use futures::StreamExt;
use model::{Action, CellCapacity, InstanceState, Lrp, Name, Presence, Resources};
use sim::{Latency, SimCells, SimOptions};

use super::machine::{Machine, cpu_seconds};
use super::markdown::{self, Section, thousands};
use super::pure::{self, PureResult};
use super::serve::ServerStats;
use super::server_child::{self, ServerChild};
use super::stats::{mb, median, percentile};
use super::{Preset, ScheduleArgs};

/// Instances per LRP unless `--lrps` says otherwise.
const PER_LRP: u64 = 1000;
/// How long the cells may take to show up in `GET /v1/cells`.
const JOIN_DEADLINE: Duration = Duration::from_secs(180);
/// How often the run's progress is sampled, and printed.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const PRINT_EVERY: u32 = 5;
/// How long the idle cost of the cells (their heartbeats) is measured before creating.
const IDLE_SAMPLE: Duration = Duration::from_secs(3);
/// The design goals (design.md), at 10,000 cells and 1,000,000 instances.
const GOAL_SECS: f64 = 60.0;
const GOAL_INSTANCES: u64 = 1_000_000;
const GOAL_CELLS: u32 = 10_000;
const GOAL_PASS_SECS: f64 = 2.0;
const GOAL_RSS_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// What one invocation runs.
#[derive(Debug, Clone)]
struct Setup {
    cells: u32,
    instances: u64,
    /// Instances of each LRP.
    lrps: Vec<u32>,
    db: String,
    command: String,
}

/// One sample of a run's progress.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    lrps_created: usize,
    /// Work the cells received (instance starts).
    starts: u64,
    /// Instances running on the cells (reported or about to be).
    running: u64,
    /// Reports the server answered.
    reports: u64,
    server: ServerStats,
    server_rss: u64,
    server_cpu: f64,
}

/// The figures of one run.
#[derive(Debug, Clone)]
struct RunResult {
    /// Instances wanted.
    instances: u64,
    completed: bool,
    /// Ordinary instance rows RUNNING at the end.
    running: u64,
    /// From the first create to the last instance RUNNING (or to giving up).
    all_running: Duration,
    /// From the first create to the last one answered.
    creates_done: Option<Duration>,
    /// From the first create to the cells having received every start.
    placed: Option<Duration>,
    /// Desired -> RUNNING per instance, in ms.
    p50_ms: Option<u64>,
    p99_ms: Option<u64>,
    /// The store over the placement window (first create to all RUNNING).
    window: Duration,
    writes: u64,
    transactions: u64,
    events: u64,
    /// Writer time inside transactions (statements) and committing them (fsync).
    writer_apply: Duration,
    writer_commit: Duration,
    /// Context switches of the server's threads over the window.
    server_switches: u64,
    server_cpu: f64,
    bench_cpu: f64,
    /// The server's RSS with the cells joined and nothing created yet.
    server_idle: u64,
    /// With the cells joined and nothing created: the server's CPU (cores) and its
    /// writer's busy share, which is what the cells' heartbeats cost alone.
    idle_cores: f64,
    idle_writer_busy: f64,
    server_peak_placing: u64,
    server_peak_after: u64,
    bench_peak: u64,
    converge: Vec<Duration>,
    /// One reconciliation pass as the fleet makes it: time, work items, JSON bytes.
    reconcile: Option<(Duration, u64, u64)>,
    pure: PureResult,
    fleet: sim::Stats,
    /// What the server logged: leadership losses, expiries, convergence passes.
    log: server_child::LogSummary,
    timeline: Vec<Sample>,
    work_item_bytes: usize,
}

impl RunResult {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.window.as_secs_f64().max(1e-9)
    }

    fn instances_per_sec(&self) -> f64 {
        self.running as f64 / self.all_running.as_secs_f64().max(1e-9)
    }

    fn placements_per_sec(&self) -> Option<f64> {
        self.placed
            .map(|t| self.instances as f64 / t.as_secs_f64().max(1e-9))
    }

    fn writer_busy(&self) -> f64 {
        (self.writer_apply + self.writer_commit).as_secs_f64() / self.window.as_secs_f64().max(1e-9)
    }

    fn converge_median(&self) -> Option<f64> {
        median(self.converge.iter().map(Duration::as_secs_f64))
    }

    /// End to end over the pure core.
    fn ratio(&self) -> f64 {
        self.all_running.as_secs_f64() / self.pure.took.as_secs_f64().max(1e-9)
    }
}

pub async fn run(args: &ScheduleArgs) -> Result<()> {
    let setup = setup(args)?;
    let machine = Machine::read();
    println!("corral bench schedule: {}", setup.command);
    println!(
        "Machine: {} (load average {} at the start; other work on it makes the figures noisy)",
        machine.describe(),
        machine.load
    );
    println!(
        "{} cells, {} instances in {} LRPs, on {}; {} run(s)\n",
        thousands(u64::from(setup.cells)),
        thousands(setup.instances),
        setup.lrps.len(),
        db_name(&setup.db),
        args.runs
    );
    let mut results = Vec::new();
    for run in 1..=args.runs.max(1) {
        println!("--- run {run} of {} ---", args.runs.max(1));
        let result = one_run(&setup, args, run).await?;
        print_run(&setup, &result);
        results.push(result);
    }
    let row = summary_row(&setup, &machine, &results);
    print_summary(&setup, &results);
    if !args.record.no_record {
        markdown::record(&args.record.out, &SECTION, row)?;
    }
    Ok(())
}

fn setup(args: &ScheduleArgs) -> Result<Setup> {
    let (preset_cells, preset_instances) = args.preset.size();
    let cells = args.cells.unwrap_or(preset_cells);
    let instances = args.instances.unwrap_or(preset_instances);
    if cells == 0 || instances == 0 {
        bail!("--cells and --instances must be at least 1");
    }
    let lrp_count = u64::from(args.lrps.unwrap_or(0));
    let lrp_count = if lrp_count == 0 {
        instances.div_ceil(PER_LRP)
    } else {
        lrp_count.min(instances)
    };
    let per = instances / lrp_count;
    let extra = instances % lrp_count;
    let lrps: Vec<u32> = (0..lrp_count)
        .map(|i| per + u64::from(i < extra))
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .collect();
    let most = lrps.iter().copied().max().unwrap_or(0);
    if most > model::limits::INSTANCES {
        bail!(
            "{most} instances per LRP is more than an LRP may have ({}): use more --lrps",
            model::limits::INSTANCES
        );
    }
    let db = match args.db.as_str() {
        "sqlite" => "sqlite".to_owned(),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => url.to_owned(),
        other => bail!("--db must be sqlite or a postgres:// URL, not {other:?}"),
    };
    let mut command = String::from("corral bench schedule");
    let preset = match args.preset {
        Preset::Small => "small",
        Preset::Medium => "medium",
        Preset::Full => "full",
    };
    command.push_str(&format!(" --preset {preset}"));
    if let Some(c) = args.cells {
        command.push_str(&format!(" --cells {c}"));
    }
    if let Some(m) = args.instances {
        command.push_str(&format!(" --instances {m}"));
    }
    if let Some(l) = args.lrps {
        command.push_str(&format!(" --lrps {l}"));
    }
    if db != "sqlite" {
        command.push_str(" --db postgres://...");
    }
    if args.runs > 1 {
        command.push_str(&format!(" --runs {}", args.runs));
    }
    Ok(Setup {
        cells,
        instances,
        lrps,
        db,
        command,
    })
}

fn db_name(db: &str) -> &'static str {
    if db == "sqlite" {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

/// Each cell has room for twice its share, so placement never runs out of room.
fn capacity(setup: &Setup) -> CellCapacity {
    let share = setup.instances.div_ceil(u64::from(setup.cells));
    let containers = (2 * share).max(u64::from(sim::DEFAULT_CAPACITY.containers));
    let r = Resources::default();
    CellCapacity {
        memory_mb: (containers * r.memory_mb).max(sim::DEFAULT_CAPACITY.memory_mb),
        disk_mb: (containers * r.disk_mb).max(sim::DEFAULT_CAPACITY.disk_mb),
        containers: u32::try_from(containers).unwrap_or(u32::MAX),
    }
}

fn creates(setup: &Setup) -> Vec<LrpCreate> {
    setup
        .lrps
        .iter()
        .enumerate()
        .map(|(i, &instances)| LrpCreate {
            image_credentials: None,
            name: format!("bench-{i:05}"),
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
        })
        .collect()
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn one_run(setup: &Setup, args: &ScheduleArgs, run: u32) -> Result<RunResult> {
    let dir = tempfile::Builder::new()
        .prefix("corral-bench-")
        .tempdir()
        .context("create a temporary directory")?;
    let db_url = if setup.db == "sqlite" {
        format!("sqlite:{}", dir.path().join("corral.db").display())
    } else {
        setup.db.clone()
    };
    let mut server = ServerChild::start(&db_url, dir.path()).await?;
    println!(
        "server pid {} at {} (log {}); profile it with `perf record -g -p {}`",
        server.pid(),
        server.api,
        server.log_path().display(),
        server.pid()
    );
    let client = Client::new(&server.api, Some(server.token.clone()))?;
    let options = SimOptions {
        token: Some(server.token.clone()),
        capacity: capacity(setup),
        start_latency: Latency::Fixed(Duration::ZERO),
        seed: Some(1),
        ..SimOptions::new(server.api.clone(), setup.cells)
    };
    let fleet = SimCells::start(options.clone())
        .await
        .context("start the simulated cells")?;
    let joined = Instant::now();
    loop {
        let live = client.cells().await.map(|c| c.len()).unwrap_or(0);
        if live >= setup.cells as usize {
            break;
        }
        if joined.elapsed() > JOIN_DEADLINE {
            bail!(
                "only {live} of {} cells joined within {JOIN_DEADLINE:?}\n{}",
                setup.cells,
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} cells joined in {:.1} s; creating {} LRPs ({} at a time)",
        setup.cells,
        joined.elapsed().as_secs_f64(),
        setup.lrps.len(),
        args.concurrency
    );

    // What the cells cost with nothing to run: their heartbeats.
    let idle_base = server.stats().await?;
    let idle_cpu0 = cpu_seconds(server.pid());
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_SAMPLE).await;
    let idle_end = server.stats().await?;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle_cores = (cpu_seconds(server.pid()) - idle_cpu0) / idle_secs;
    let idle_writer_busy = ((idle_end.apply_ms + idle_end.commit_ms)
        - (idle_base.apply_ms + idle_base.commit_ms))
        / 1000.0
        / idle_secs;
    println!(
        "idle with {} cells: server {:.2} cores, store writer busy {:.0}% ({:.0} writer requests/s: heartbeats)",
        setup.cells,
        idle_cores,
        100.0 * idle_writer_busy,
        (idle_end.requests - idle_base.requests) as f64 / idle_secs
    );

    // Placement, end to end.
    let server_idle = server.memory()?.rss;
    let base = server.stats().await?;
    let bench_pid = std::process::id();
    let (server_cpu0, bench_cpu0) = (cpu_seconds(server.pid()), cpu_seconds(bench_pid));
    let switches0 = server_child::context_switches(server.pid());
    let started_wall = wall_ms();
    let started = Instant::now();
    let (created_tx, mut created_rx) = tokio::sync::mpsc::unbounded_channel::<Lrp>();
    let creating = {
        let client = client.clone();
        let creates = creates(setup);
        let concurrency = args.concurrency.max(1);
        tokio::spawn(async move {
            let mut answers = futures::stream::iter(creates)
                .map(|create| {
                    let client = client.clone();
                    async move {
                        let name = create.name.clone();
                        client
                            .create_lrp(&create)
                            .await
                            .with_context(|| format!("create LRP {name}"))
                    }
                })
                .buffer_unordered(concurrency);
            while let Some(answer) = answers.next().await {
                let _ = created_tx.send(answer?);
            }
            anyhow::Ok(started.elapsed())
        })
    };
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let mut lrps: Vec<Lrp> = Vec::with_capacity(setup.lrps.len());
    let mut timeline = Vec::new();
    let mut placed = None;
    let mut next_sample = started;
    let mut completed = false;
    loop {
        while let Ok(lrp) = created_rx.try_recv() {
            lrps.push(lrp);
        }
        let stats = fleet.stats();
        if placed.is_none() && stats.starts >= setup.instances {
            placed = Some(started.elapsed());
        }
        if stats.instances_running >= setup.instances
            && stats.instances_starting == 0
            && stats.reports_sent >= setup.instances
        {
            completed = true;
            break;
        }
        if creating.is_finished() && lrps.len() < setup.lrps.len() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            println!(
                "gave up after {} s: the cells run {} of {} instances",
                args.timeout_secs,
                thousands(stats.instances_running),
                thousands(setup.instances)
            );
            break;
        }
        if now >= next_sample {
            let sample = Sample {
                at: started.elapsed(),
                lrps_created: lrps.len(),
                starts: stats.starts,
                running: stats.instances_running,
                reports: stats.reports_sent,
                server: server.stats().await?,
                server_rss: server.memory().map(|m| m.rss).unwrap_or(0),
                server_cpu: cpu_seconds(server.pid()) - server_cpu0,
            };
            if timeline.len() % PRINT_EVERY as usize == 0 {
                print_progress(setup, &sample, &base);
            }
            timeline.push(sample);
            next_sample += SAMPLE_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = started.elapsed();
    let end = server.stats().await?;
    let server_cpu = cpu_seconds(server.pid()) - server_cpu0;
    let server_switches = server_child::context_switches(server.pid()) - switches0;
    let bench_cpu = cpu_seconds(bench_pid) - bench_cpu0;
    let server_peak_placing = server.memory()?.peak;
    let creates_done = if creating.is_finished() {
        match creating.await {
            Ok(Ok(took)) => Some(took),
            Ok(Err(e)) => {
                println!("creating the LRPs failed: {e:#}");
                None
            }
            Err(e) => bail!("the create task failed: {e}"),
        }
    } else {
        creating.abort();
        None
    };
    while let Ok(lrp) = created_rx.try_recv() {
        lrps.push(lrp);
    }

    // What the rows say: how many run, and how long each took from desired to RUNNING.
    let rows_read = Instant::now();
    let mut latencies: Vec<u64> = Vec::with_capacity(setup.instances as usize);
    let mut last_running = 0u64;
    let names: Vec<Name> = lrps.iter().map(|l| l.spec.name.clone()).collect();
    let mut statuses = futures::stream::iter(names)
        .map(|name| {
            let client = client.clone();
            async move { client.lrp_status(name.as_str()).await }
        })
        .buffer_unordered(4);
    while let Some(status) = statuses.next().await {
        let status = status.context("read an LRP's instances")?;
        let created = status.lrp.created_at.as_millis();
        for instance in &status.instances {
            if instance.presence == Presence::Ordinary && instance.state == InstanceState::Running {
                let since = instance.since.as_millis();
                latencies.push(since.saturating_sub(created));
                last_running = last_running.max(since);
            }
        }
    }
    drop(statuses);
    latencies.sort_unstable();
    let running = latencies.len() as u64;
    let completed = completed && running >= setup.instances;
    let all_running = if completed {
        Duration::from_millis(last_running.saturating_sub(started_wall))
    } else {
        window
    };
    println!(
        "read {} instance rows in {:.1} s",
        thousands(running),
        rows_read.elapsed().as_secs_f64()
    );

    // A convergence pass at full load: nothing to correct, everything to read.
    let mut converge = Vec::new();
    for _ in 0..args.converge_passes {
        // A server that lost its leader lock under load takes it again within seconds.
        for attempt in 1..=3 {
            match server.converge().await {
                Ok(took) => {
                    converge.push(took);
                    break;
                }
                Err(e) => {
                    println!("{e:#}");
                    if attempt < 3 {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                    }
                }
            }
        }
    }
    let server_peak_after = server.memory()?.peak;
    let reconcile = match reconcile_pass(&client, fleet.cell_ids(), options.cells_per_request).await
    {
        Ok(pass) => Some(pass),
        Err(e) => {
            println!("the reconciliation pass failed: {e:#}");
            None
        }
    };
    let fleet_stats = fleet.stats();
    let work_item_bytes = lrps.first().map_or(0, |lrp| {
        let item = WorkItem::StartInstance {
            cell: fleet.cell_ids()[0].clone(),
            lrp: Box::new(lrp.clone()),
            index: 0,
            instance_id: uuid_like(),
        };
        serde_json::to_vec(&item).map_or(0, |v| v.len())
    });
    let cells = options.cells(fleet.url())?;
    fleet.shutdown().await;
    let log = server.log_path().to_owned();
    server.stop().await?;
    let log_summary = server_child::LogSummary::read(&log);
    // The log outlives the temporary directory, for a look at what the server did.
    let kept = std::env::temp_dir().join(format!(
        "corral-bench-schedule-{}-run{run}.log",
        std::process::id()
    ));
    if std::fs::copy(&log, &kept).is_ok() {
        println!("the server's log is kept in {}", kept.display());
    }

    println!("placing the same work with the pure placement core");
    let pure = tokio::task::spawn_blocking(move || pure::place_all(&cells, &lrps))
        .await
        .context("the pure placement failed")?;
    let bench_peak = server_child::memory(bench_pid).map_or(0, |m| m.peak);
    drop(dir);
    Ok(RunResult {
        instances: setup.instances,
        completed,
        running,
        all_running,
        creates_done,
        placed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        window,
        writes: end.requests - base.requests,
        transactions: end.transactions - base.transactions,
        events: end.newest_event - base.newest_event,
        writer_apply: Duration::from_secs_f64((end.apply_ms - base.apply_ms).max(0.0) / 1000.0),
        writer_commit: Duration::from_secs_f64((end.commit_ms - base.commit_ms).max(0.0) / 1000.0),
        server_switches,
        server_cpu,
        bench_cpu,
        server_idle,
        idle_cores,
        idle_writer_busy,
        server_peak_placing,
        server_peak_after,
        bench_peak,
        converge,
        reconcile,
        pure,
        fleet: fleet_stats,
        log: log_summary,
        timeline,
        work_item_bytes,
    })
}

/// What every fleet asks for every reconciliation interval (10 s by default): the
/// assignments of all its cells, `per_request` cells at a time, one request after
/// another. Returns the time, the work items and their JSON size.
async fn reconcile_pass(
    client: &Client,
    cells: &[Name],
    per_request: usize,
) -> Result<(Duration, u64, u64)> {
    let started = Instant::now();
    let (mut items, mut bytes) = (0u64, 0u64);
    for chunk in cells.chunks(per_request.max(1)) {
        let work = client
            .assignments(&api::AssignmentsRequest {
                cells: chunk.to_vec(),
            })
            .await?;
        items += work.items.len() as u64;
        bytes += serde_json::to_vec(&work).map_or(0, |v| v.len() as u64);
    }
    Ok((started.elapsed(), items, bytes))
}

/// A container id as long as the scheduler's (a UUID).
fn uuid_like() -> String {
    "01234567-89ab-cdef-0123-456789abcdef".to_owned()
}

fn print_progress(setup: &Setup, s: &Sample, base: &ServerStats) {
    println!(
        "{:>6.1} s  LRPs {:>5}/{}  placed {:>9}  running {:>9}  reports {:>9}  writes {:>9}  events {:>9}  server RSS {:>6.0} MB, CPU {:>6.1} s",
        s.at.as_secs_f64(),
        s.lrps_created,
        setup.lrps.len(),
        s.starts,
        s.running,
        s.reports,
        s.server.requests - base.requests,
        s.server.newest_event - base.newest_event,
        mb(s.server_rss),
        s.server_cpu
    );
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), secs)
}

fn ms_as_secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.1}", ms as f64 / 1000.0))
}

fn print_run(setup: &Setup, r: &RunResult) {
    let status = if r.completed {
        format!(
            "all {} instances RUNNING {:.1} s after the first create",
            thousands(setup.instances),
            r.all_running.as_secs_f64()
        )
    } else {
        format!(
            "NOT complete: {} of {} instances RUNNING after {:.1} s",
            thousands(r.running),
            thousands(setup.instances),
            r.all_running.as_secs_f64()
        )
    };
    println!("\n{status}");
    println!(
        "  end to end            {:.0} instances/s; creates answered after {} s; cells had all work after {} s ({} placements/s)",
        r.instances_per_sec(),
        opt_secs(r.creates_done),
        opt_secs(r.placed),
        r.placements_per_sec()
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}"))
    );
    println!(
        "  desired -> RUNNING    p50 {} s, p99 {} s",
        ms_as_secs(r.p50_ms),
        ms_as_secs(r.p99_ms)
    );
    println!(
        "  store                 {:.0} row writes/s (= events/s: each change is one event), {:.0} writer requests/s ({} requests in {} transactions, {:.0} per transaction; ~{} of them presence renewals/s)",
        r.per_sec(r.events),
        r.per_sec(r.writes),
        thousands(r.writes),
        thousands(r.transactions),
        r.writes as f64 / r.transactions.max(1) as f64,
        thousands(u64::from(setup.cells)),
    );
    println!(
        "  store writer          busy {:.0}% of the time: {:.1} s applying, {:.1} s committing; {:.1} us per row written",
        100.0 * r.writer_busy(),
        r.writer_apply.as_secs_f64(),
        r.writer_commit.as_secs_f64(),
        (r.writer_apply + r.writer_commit).as_secs_f64() * 1e6 / r.events.max(1) as f64
    );
    println!(
        "  idle (heartbeats)     server {:.2} cores, store writer busy {:.0}%, before anything was created",
        r.idle_cores,
        100.0 * r.idle_writer_busy
    );
    println!(
        "  CPU                   server {:.1} s ({:.2} cores; {:.0} context switches/s, {:.1} per row written), benchmark + simulated cells {:.1} s ({:.2} cores), over {:.1} s",
        r.server_cpu,
        r.server_cpu / r.window.as_secs_f64().max(1e-9),
        r.per_sec(r.server_switches),
        r.server_switches as f64 / r.events.max(1) as f64,
        r.bench_cpu,
        r.bench_cpu / r.window.as_secs_f64().max(1e-9),
        r.window.as_secs_f64()
    );
    println!(
        "  server memory         {:.0} MB idle with the cells joined, peak {:.0} MB while placing, {:.0} MB after the convergence passes; benchmark + simulated cells peak {:.0} MB",
        mb(r.server_idle),
        mb(r.server_peak_placing),
        mb(r.server_peak_after),
        mb(r.bench_peak)
    );
    let passes: Vec<String> = r
        .converge
        .iter()
        .map(|d| format!("{:.2}", d.as_secs_f64()))
        .collect();
    println!(
        "  convergence pass      {} s at full load",
        if passes.is_empty() {
            "-".to_owned()
        } else {
            passes.join(", ")
        }
    );
    if let Some((took, items, bytes)) = r.reconcile {
        println!(
            "  reconciliation pass   {:.2} s for {} work items, {:.0} MB of JSON (what each fleet fetches every 10 s)",
            took.as_secs_f64(),
            thousands(items),
            mb(bytes)
        );
    }
    println!(
        "  pure placement        {} placed, {} unplaced in {:.2} s: {:.2} us per placement; end to end is {:.0}x that",
        thousands(r.pure.placed),
        thousands(r.pure.unplaced),
        r.pure.took.as_secs_f64(),
        r.pure.us_per_placement(),
        r.ratio()
    );
    println!(
        "  cells                 {} starts, {} reports in {} requests ({:.0} per request), {} stale, {} heartbeats, {} reconciliations; violations: {} over-commits, {} misplacements",
        thousands(r.fleet.starts),
        thousands(r.fleet.reports_sent),
        thousands(r.fleet.report_batches),
        r.fleet.reports_sent as f64 / r.fleet.report_batches.max(1) as f64,
        r.fleet.stale_results,
        r.fleet.heartbeats,
        r.fleet.reconciles,
        r.fleet.overcommits,
        r.fleet.misplacements
    );
    let largest = r.log.passes.iter().max_by_key(|p| p[0]);
    println!(
        "  server log            leader lock taken {} time(s) ({} lost), {} cell presences expired, {} convergence passes that acted{}",
        r.log.leaderships,
        r.log.leaderships.saturating_sub(1),
        thousands(r.log.cells_expired),
        r.log.passes.len(),
        largest.map_or_else(String::new, |[instances, actions, read, total]| format!(
            " (the largest: {} instances, {} actions, read {:.1} s, total {:.1} s)",
            thousands(*instances),
            thousands(*actions),
            *read as f64 / 1000.0,
            *total as f64 / 1000.0
        ))
    );
    println!(
        "  work pushed           each StartInstance carries its whole LRP: {} bytes of JSON per instance, {:.0} MB for all",
        r.work_item_bytes,
        mb(r.work_item_bytes as u64 * setup.instances)
    );
    print_timeline(r);
}

/// About ten evenly spaced samples: how placement, running and writes moved.
fn print_timeline(r: &RunResult) {
    if r.timeline.is_empty() {
        return;
    }
    println!(
        "  timeline (s: LRPs created, placed, running, writes/s and events/s since the previous line, server RSS MB)"
    );
    let step = (r.timeline.len() / 10).max(1);
    let mut previous: Option<&Sample> = None;
    for (i, s) in r.timeline.iter().enumerate() {
        if i % step != 0 && i != r.timeline.len() - 1 {
            continue;
        }
        let (writes, events) = match previous {
            Some(p) => {
                let dt = (s.at - p.at).as_secs_f64().max(1e-9);
                (
                    (s.server.requests - p.server.requests) as f64 / dt,
                    (s.server.newest_event - p.server.newest_event) as f64 / dt,
                )
            }
            None => (0.0, 0.0),
        };
        println!(
            "    {:>6.1}  {:>5}  {:>9}  {:>9}  {:>8.0}  {:>8.0}  {:>6.0}",
            s.at.as_secs_f64(),
            s.lrps_created,
            s.starts,
            s.running,
            writes,
            events,
            mb(s.server_rss)
        );
        previous = Some(s);
    }
}

fn med(results: &[RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(results.iter().filter_map(f))
}

fn print_summary(setup: &Setup, results: &[RunResult]) {
    if results.len() > 1 {
        let all: Vec<String> = results.iter().map(|r| secs(r.all_running)).collect();
        println!(
            "\nMedians of {} runs (all RUNNING: {} s)",
            results.len(),
            all.join(", ")
        );
    }
    let full = setup.instances >= GOAL_INSTANCES && setup.cells >= GOAL_CELLS;
    println!("\nGoals (design.md; set at 10,000 cells and 1,000,000 instances on SQLite):");
    for line in goals(setup, results, full) {
        println!("  {line}");
    }
}

/// Whether the design goals were met, in words; at a smaller size only the rate the
/// 60 s goal implies can be checked.
fn goals(setup: &Setup, results: &[RunResult], full: bool) -> Vec<String> {
    let yes = |ok: bool| if ok { "met" } else { "NOT met" };
    let completed = results.iter().all(|r| r.completed);
    let all = med(results, |r| Some(r.all_running.as_secs_f64())).unwrap_or(f64::NAN);
    let rate = med(results, |r| Some(r.instances_per_sec())).unwrap_or(0.0);
    let pass = med(results, RunResult::converge_median);
    let peak = med(results, |r| {
        Some(r.server_peak_after.max(r.server_peak_placing) as f64)
    })
    .unwrap_or(0.0) as u64;
    let needed = GOAL_INSTANCES as f64 / GOAL_SECS;
    let mut out = Vec::new();
    if full {
        out.push(format!(
            "1,000,000 instances RUNNING in <= 60 s: {} ({}{:.0} s)",
            yes(completed && all <= GOAL_SECS),
            if completed { "" } else { "incomplete after " },
            all
        ));
        out.push(match pass {
            Some(p) => format!(
                "convergence pass <= 2 s: {} ({p:.2} s)",
                yes(p <= GOAL_PASS_SECS)
            ),
            None => {
                // The benchmark's own pass needs the leader lock; a server that keeps
                // losing it still logs its passes, whose reading alone bounds a pass.
                let logged = results
                    .iter()
                    .flat_map(|r| &r.log.passes)
                    .filter(|p| p[0] * 10 >= setup.instances * 9)
                    .map(|p| p[2])
                    .max();
                match logged {
                    Some(read_ms) => format!(
                        "convergence pass <= 2 s: NOT met (not timed by the benchmark: the server had lost its leader lock; its own passes at full size spent {:.1} s just reading)",
                        read_ms as f64 / 1000.0
                    ),
                    None => "convergence pass <= 2 s: not measured".to_owned(),
                }
            }
        });
        out.push(format!(
            "server RSS <= 2 GB: {} ({:.0} MB)",
            yes(peak <= GOAL_RSS_BYTES),
            mb(peak)
        ));
    } else {
        out.push(format!(
            "rate the 60 s goal needs ({needed:.0} instances/s): {} ({rate:.0}/s at {} instances)",
            yes(completed && rate >= needed),
            thousands(setup.instances)
        ));
        if let Some(p) = pass {
            let scaled = p * GOAL_INSTANCES as f64 / setup.instances as f64;
            out.push(format!(
                "convergence pass {p:.2} s; scaled linearly to 1,000,000 instances: {scaled:.1} s (goal 2 s: {})",
                yes(scaled <= GOAL_PASS_SECS)
            ));
        }
        let idle = med(results, |r| Some(r.server_idle as f64)).unwrap_or(0.0);
        let scaled =
            idle + (peak as f64 - idle).max(0.0) * GOAL_INSTANCES as f64 / setup.instances as f64;
        out.push(format!(
            "server peak RSS {:.0} MB; its growth over idle scaled linearly to 1,000,000 instances: {:.0} MB (goal 2 GB: {})",
            mb(peak),
            scaled / (1024.0 * 1024.0),
            yes(scaled <= GOAL_RSS_BYTES as f64)
        ));
    }
    out
}

const SECTION: Section<'static> = Section {
    title: "Scheduling at scale",
    intro: "\
`corral bench schedule [--preset small|medium|full] [--cells N] [--instances M] [--lrps L] [--db sqlite|URL] [--runs R]`: \
a real server (`corral bench serve`, a child process, default timings) on a fresh database, N simulated cells \
(`crates/sim`, in the benchmark's process, containers start at once, room for twice the work), then M instances in \
LRPs of 1,000 created through the API, 8 at a time. \"All RUNNING\" is from the first create to the last instance \
row's RUNNING `since`; \"placements/s\" counts work the cells received (the scheduler's claims pushed to them); \
store row writes/s is the event log's growth (every row change appends one event in its transaction), writer \
requests/s the group-commit writer's requests (a commit of any size, or a presence renewal: ~1 per cell per second) \
with the share of the time the writer was busy, both over the same window; desired -> RUNNING is per instance, RUNNING `since` \
minus the LRP's `created_at`. Server RSS is the child's VmHWM while placing, then after the convergence passes \
(a pass reads every row). The pure core is `placement::place` on a `Snapshot` of the same cells, the same work, \
in the scheduler's batches of 20,000. Figures are medians of the runs; the machine has 2 cores shared by the \
server, the simulated cells and other work, so they are noisy.",
    header: &[
        "Date",
        "Command",
        "DB",
        "Cells",
        "Instances",
        "Runs: all RUNNING (s)",
        "All RUNNING (s)",
        "Instances/s",
        "Placements/s",
        "Store row writes/s (= events/s)",
        "Writer requests/s (busy %)",
        "Desired -> RUNNING p50 / p99 (s)",
        "Server peak RSS placing / after pass (MB)",
        "Convergence pass (s)",
        "Pure placement (s; us each)",
        "End to end / pure",
        "Leader lock lost / cells expired",
        "Goals",
        "Machine (load)",
    ],
    key: &[2, 3, 4],
    outro: "\
\"Leader lock lost / cells expired\" is from the server's log: how often it lost its leader lock (TTL 3 s) and how many \
cell presences (TTL 3 s) expired during the run; both are 0 in a healthy run. Goals (design.md): 1,000,000 instances \
on 10,000 cells RUNNING in <= 60 s on SQLite; a convergence pass <= 2 s and server RSS <= 2 GB at that size; pure \
placement <= 10 us at 10,000 cells. Below the full size, the Goals column checks the rate the 60 s goal needs \
(16,667 instances/s) and scales the pass and the memory linearly.",
};

fn summary_row(setup: &Setup, machine: &Machine, results: &[RunResult]) -> Vec<String> {
    let f0 = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let f1 = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let f2 = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let completed = results.iter().all(|r| r.completed);
    let runs: Vec<String> = results
        .iter()
        .map(|r| {
            if r.completed {
                secs(r.all_running)
            } else {
                format!(
                    "> {} ({:.0}% RUNNING)",
                    secs(r.all_running),
                    100.0 * r.running as f64 / setup.instances as f64
                )
            }
        })
        .collect();
    let all = med(results, |r| Some(r.all_running.as_secs_f64()));
    let full = setup.instances >= GOAL_INSTANCES && setup.cells >= GOAL_CELLS;
    vec![
        machine.date.clone(),
        format!("`{}`", setup.command),
        db_name(&setup.db).to_owned(),
        thousands(u64::from(setup.cells)),
        thousands(setup.instances),
        format!("{}: {}", results.len(), runs.join(", ")),
        if completed {
            f1(all)
        } else {
            format!("> {} (incomplete)", f1(all))
        },
        f0(med(results, |r| Some(r.instances_per_sec()))),
        f0(med(results, RunResult::placements_per_sec)),
        f0(med(results, |r| Some(r.per_sec(r.events)))),
        format!(
            "{} ({}%)",
            f0(med(results, |r| Some(r.per_sec(r.writes)))),
            f0(med(results, |r| Some(100.0 * r.writer_busy())))
        ),
        format!(
            "{} / {}",
            f1(med(results, |r| r.p50_ms.map(|v| v as f64 / 1000.0))),
            f1(med(results, |r| r.p99_ms.map(|v| v as f64 / 1000.0)))
        ),
        format!(
            "{} / {}",
            f0(med(results, |r| Some(mb(r.server_peak_placing)))),
            f0(med(results, |r| Some(mb(r.server_peak_after))))
        ),
        f2(med(results, RunResult::converge_median)),
        format!(
            "{}; {}",
            f2(med(results, |r| Some(r.pure.took.as_secs_f64()))),
            f2(med(results, |r| Some(r.pure.us_per_placement())))
        ),
        format!("{}x", f0(med(results, |r| Some(r.ratio())))),
        format!(
            "{} / {}",
            f0(med(results, |r| Some(f64::from(
                r.log.leaderships.saturating_sub(1)
            )))),
            f0(med(results, |r| Some(r.log.cells_expired as f64)))
        ),
        goals(setup, results, full).join("; "),
        machine.table_cell(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Record;

    fn args(preset: Preset) -> ScheduleArgs {
        ScheduleArgs {
            preset,
            cells: None,
            instances: None,
            lrps: None,
            db: "sqlite".into(),
            runs: 1,
            timeout_secs: 900,
            concurrency: 8,
            converge_passes: 2,
            record: Record {
                out: "BENCHMARKS.md".into(),
                no_record: true,
            },
        }
    }

    #[test]
    fn presets_split_into_lrps_of_a_thousand() {
        let s = setup(&args(Preset::Full)).expect("valid");
        assert_eq!(
            (s.cells, s.instances, s.lrps.len()),
            (10_000, 1_000_000, 1000)
        );
        assert!(s.lrps.iter().all(|&n| n == 1000));
        assert_eq!(s.command, "corral bench schedule --preset full");
        let capacity = capacity(&s);
        assert_eq!(capacity.containers, 256);
    }

    #[test]
    fn odd_sizes_spread_the_remainder() {
        let s = setup(&ScheduleArgs {
            cells: Some(3),
            instances: Some(10),
            lrps: Some(3),
            ..args(Preset::Small)
        })
        .expect("valid");
        assert_eq!(s.lrps, [4, 3, 3]);
        assert_eq!(
            s.command,
            "corral bench schedule --preset small --cells 3 --instances 10 --lrps 3"
        );
        assert_eq!(capacity(&s).containers, 256);
        let too_big = setup(&ScheduleArgs {
            instances: Some(300_000),
            lrps: Some(1),
            ..args(Preset::Small)
        });
        assert!(too_big.is_err());
        let bad_db = setup(&ScheduleArgs {
            db: "mysql://x".into(),
            ..args(Preset::Small)
        });
        assert!(bad_db.is_err());
    }
}
