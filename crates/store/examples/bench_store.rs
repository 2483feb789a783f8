//! Store write benchmark: N concurrent writers each create and update task rows, one
//! mutation per `Store::commit`, so every commit is one durable row write plus its
//! event. Prints writes/s, the writer's mean group size, commit latency percentiles,
//! where the writer's time went and each thread's CPU time per write (steadier than
//! writes/s on a busy machine), and records the figures in BENCHMARKS.md.
//!
//! ```text
//! cargo run --release -p store --example bench_store -- \
//!     [--sqlite PATH] [--postgres URL] [--writers N] [--seconds S]
//! ```
//!
//! With neither `--sqlite` nor `--postgres`, it runs on a SQLite file in a temporary
//! directory (on disk, so fsync is real).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use model::{Action, Name, Resources, Rootfs, Task, TaskSpec, TaskState, Timestamp};
use store::sql::{SqlStore, WriterStats};
use store::{Commit, Expect, Mutation, Store};

#[derive(Debug, Parser)]
#[command(about = "Measure durable store writes per second with group commit")]
struct Args {
    /// SQLite database file to write to (created if missing).
    #[arg(long)]
    sqlite: Option<PathBuf>,
    /// PostgreSQL URL to write to (its schema is created if missing).
    #[arg(long)]
    postgres: Option<String>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 256)]
    writers: usize,
    /// How long to write to each backend.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where to record the figures [default: BENCHMARKS.md at the workspace root].
    #[arg(long)]
    output: Option<PathBuf>,
}

/// What one backend did.
#[derive(Debug)]
struct Run {
    backend: String,
    writes: u64,
    failed: u64,
    elapsed: Duration,
    /// Commit latencies in microseconds, sorted.
    latencies: Vec<u32>,
    stats: WriterStats,
    /// What this process used meanwhile.
    usage: Usage,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }

    fn group_size(&self) -> f64 {
        self.stats.requests as f64 / self.stats.transactions.max(1) as f64
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }

    /// Writer time per request, split into applying and committing, in microseconds.
    fn cost_us(&self) -> (f64, f64) {
        let n = self.stats.requests.max(1) as f64;
        (
            self.stats.apply.as_secs_f64() * 1e6 / n,
            self.stats.commit.as_secs_f64() * 1e6 / n,
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.writers == 0 || args.seconds <= 0.0 {
        bail!("--writers and --seconds must be positive");
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let mut backends = Vec::new();
    let _scratch;
    match (&args.sqlite, &args.postgres) {
        (None, None) => {
            let dir = tempfile::tempdir().context("create a temporary directory")?;
            let path = dir.path().join("bench.db");
            backends.push(("SQLite".to_owned(), format!("sqlite:{}", path.display())));
            _scratch = Some(dir);
        }
        (sqlite, postgres) => {
            _scratch = None;
            if let Some(path) = sqlite {
                backends.push(("SQLite".to_owned(), format!("sqlite:{}", path.display())));
            }
            if let Some(url) = postgres {
                backends.push(("PostgreSQL".to_owned(), url.clone()));
            }
        }
    }

    let machine = Machine::read();
    println!("machine: {}", machine.describe());
    println!(
        "{} writers, {:.1} s per backend, one task row per commit\n",
        args.writers, args.seconds
    );
    let mut runs = Vec::new();
    for (backend, url) in backends {
        let store = SqlStore::connect(&url)
            .await
            .with_context(|| format!("open the {backend} store"))?;
        let run = run(&backend, &store, args.writers, duration).await?;
        store.close().await;
        print_run(&run);
        runs.push(run);
    }
    let output = args.output.clone().unwrap_or_else(|| {
        let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
        root.canonicalize().unwrap_or(root).join("BENCHMARKS.md")
    });
    record(&output, &machine, &args, &runs)
        .with_context(|| format!("record the figures in {}", output.display()))?;
    println!("recorded in {}", output.display());
    Ok(())
}

async fn run(
    backend: &str,
    store: &SqlStore,
    writers: usize,
    duration: Duration,
) -> anyhow::Result<Run> {
    // Task ids unique to this run, so a database reused across runs has no conflicts.
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let stop = Arc::new(AtomicBool::new(false));
    let before = store.stats();
    let usage_before = Usage::read();
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move { write_loop(&store, &format!("r{run_id}-w{w}"), &stop).await })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    let mut failed = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (ok, errors, mut lat) = task.await.context("writer task")?;
        writes += ok;
        failed += errors;
        latencies.append(&mut lat);
    }
    let elapsed = started.elapsed();
    let after = store.stats();
    let usage = Usage::read().since(&usage_before);
    latencies.sort_unstable();
    Ok(Run {
        backend: backend.to_owned(),
        writes,
        failed,
        elapsed,
        latencies,
        usage,
        stats: WriterStats {
            requests: after.requests - before.requests,
            transactions: after.transactions - before.transactions,
            apply: after.apply - before.apply,
            commit: after.commit - before.commit,
        },
    })
}

/// One writer: creates a task, moves it to RUNNING, completes it, and starts the next:
/// one create and two compare-and-set updates per task, each its own commit.
async fn write_loop(store: &SqlStore, prefix: &str, stop: &AtomicBool) -> (u64, u64, Vec<u32>) {
    let mut ok = 0;
    let mut errors = 0;
    let mut latencies = Vec::with_capacity(64 * 1024);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(id) = Name::parse("id", &format!("{prefix}-{n}")) else {
            errors += 1;
            continue;
        };
        let now = Timestamp(n);
        let mut task = Task::new(id, spec(), now);
        for step in 0..3 {
            let expect = match step {
                0 => Expect::Absent,
                _ => Expect::Generation(task.generation),
            };
            match step {
                1 => {
                    task.state = TaskState::Running;
                    task.cell_id = Name::parse("cell", "cell-1").ok();
                }
                2 => {
                    task.state = TaskState::Completed;
                    task.result = Some("done".into());
                }
                _ => {}
            }
            let commit = Commit::new(
                now,
                vec![Mutation::PutTask {
                    task: Box::new(task.clone()),
                    expect,
                }],
            );
            let started = Instant::now();
            let result = store.commit(commit).await;
            latencies.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
            match result {
                Ok(committed) => {
                    ok += 1;
                    task.generation = committed.generations[0];
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("commit failed: {e}");
                    break;
                }
            }
        }
    }
    (ok, errors, latencies)
}

/// A typical task: a shell command with a few environment variables (about 400 bytes
/// of JSON).
fn spec() -> TaskSpec {
    TaskSpec {
        image_credentials: None,
        domain: Name::parse("domain", "bench").expect("constant name is valid"),
        rootfs: Rootfs::parse("rootfs", "preloaded:host").expect("constant rootfs is valid"),
        resources: Resources::default(),
        action: Action::run("/bin/sh", ["-c", "echo hello > /tmp/result"]),
        env: vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("JOB".into(), "nightly-report".into()),
        ],
        result_file: Some("/tmp/result".into()),
        completion_callback_url: None,
        placement_tags: vec![],
        annotation: "benchmark".into(),
    }
}

fn print_run(run: &Run) {
    let (apply, commit) = run.cost_us();
    println!("{}:", run.backend);
    println!(
        "  {} writes in {:.2} s = {:.0} writes/s ({} failed)",
        run.writes,
        run.elapsed.as_secs_f64(),
        run.per_second(),
        run.failed
    );
    println!(
        "  {} transactions, mean group size {:.1}",
        run.stats.transactions,
        run.group_size()
    );
    println!(
        "  commit latency p50 {:.2} ms, p99 {:.2} ms",
        run.percentile_ms(0.50),
        run.percentile_ms(0.99)
    );
    println!("  writer time per write: {apply:.1} us applying, {commit:.1} us committing");
    let per_write =
        |ticks: u64| ticks as f64 * 1e6 / Usage::ticks_per_second() / run.writes.max(1) as f64;
    let threads: Vec<String> = run
        .usage
        .cpu
        .iter()
        .map(|(thread, ticks)| format!("{thread} {:.1} us", per_write(*ticks)))
        .collect();
    println!("  CPU per write by thread: {}", threads.join(", "));
    println!(
        "  bytes written to files per write: {:.0}\n",
        run.usage.written as f64 / run.writes.max(1) as f64
    );
}

/// This process's CPU time by thread name (in clock ticks) and bytes written to files,
/// from /proc: where a durable write's cost goes, which the throughput alone hides on a
/// busy machine.
#[derive(Debug, Default)]
struct Usage {
    cpu: Vec<(String, u64)>,
    written: u64,
}

impl Usage {
    fn read() -> Usage {
        let mut cpu: Vec<(String, u64)> = Vec::new();
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                    continue;
                };
                // "pid (name) state ppid ...": utime and stime are fields 14 and 15.
                let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                    continue;
                };
                let name = stat[open + 1..close].to_owned();
                let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
                let ticks: u64 = fields
                    .get(11..13)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.parse::<u64>().ok())
                    .sum();
                match cpu.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, total)) => *total += ticks,
                    None => cpu.push((name, ticks)),
                }
            }
        }
        cpu.sort();
        let written = std::fs::read_to_string("/proc/self/io")
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("wchar:"))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        Usage { cpu, written }
    }

    fn since(&self, before: &Usage) -> Usage {
        let cpu = self
            .cpu
            .iter()
            .map(|(name, ticks)| {
                let earlier = before
                    .cpu
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(0, |(_, t)| *t);
                (name.clone(), ticks.saturating_sub(earlier))
            })
            .filter(|(_, ticks)| *ticks > 0)
            .collect();
        Usage {
            cpu,
            written: self.written.saturating_sub(before.written),
        }
    }

    /// Linux reports thread CPU time in USER_HZ ticks, 100 per second.
    fn ticks_per_second() -> f64 {
        100.0
    }
}

/// The machine the figures come from.
struct Machine {
    cpus: usize,
    cpu: String,
    kernel: String,
}

impl Machine {
    fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|_| "unknown kernel".into());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel,
        }
    }

    fn describe(&self) -> String {
        format!("{} CPUs ({}), Linux {}", self.cpus, self.cpu, self.kernel)
    }
}

const HEADING: &str = "## Store writes (group commit)";

/// Replaces (or appends) this benchmark's section of BENCHMARKS.md, keeping the others.
fn record(path: &PathBuf, machine: &Machine, args: &Args, runs: &[Run]) -> anyhow::Result<()> {
    let mut section = String::new();
    writeln!(section, "{HEADING}\n")?;
    writeln!(
        section,
        "`cargo run --release -p store --example bench_store -- --writers {} --seconds {}` \
         on {}, {}.\n",
        args.writers,
        args.seconds,
        today(),
        machine.describe()
    )?;
    writeln!(
        section,
        "{} concurrent writers; each commit is one task row (create or compare-and-set \
         update) plus its event, acknowledged only after the transaction is durable \
         (SQLite: a file on local disk, WAL with synchronous=FULL; PostgreSQL: a server on \
         the same machine with fsync=on). The writer groups concurrent commits into one \
         transaction. \"Writer us/write\" is the writer's time per write inside its \
         transactions (binding and executing statements) and committing them (for SQLite \
         mostly writing and fsyncing the WAL, and every few transactions a checkpoint). \
         Goal: >= 50,000 durable writes/s on SQLite.\n",
        args.writers
    )?;
    writeln!(
        section,
        "Since the first figures (28,672 writes/s on SQLite, 16,535 on PostgreSQL, 256 \
         writers): each row is encoded to JSON once, straight to text, which its table \
         row, its event and the commit's answer share (no `serde_json::Value` trees); the \
         writer binds that text and the key columns as shared strings, copying nothing; \
         SQLite's multi-row writes resolve conflicts with `OR IGNORE`, so SQLite keeps no \
         statement journal for them; a batch of puts that all wrote is recognised by \
         its count of returned keys, without hashing them; and SQLite's WAL is checkpointed \
         every 4,000 pages instead of 1,000 (about 10% fewer bytes written per write). Old \
         and new builds alternated, 1,000 writers, on SQLite, in runs while the machine \
         was otherwise idle: median 28,000 writes/s before (5 runs, 26,000-30,700) and \
         40,000 after (6 runs, 31,000-47,700). CPU per write of the serial path (store \
         writer and SQLite threads) went from about 24 to 19 us, and of the runtime's \
         threads (the writers, preparing commits) from about 19 to 7 us; the program \
         prints that split per thread.\n"
    )?;
    writeln!(
        section,
        "Allocator: glibc's malloc. mimalloc was tried here and in the `corral` binary: \
         after the changes above it was slower (median 21,000 against 25,000 writes/s on a \
         busy machine, with twice the runtime threads' CPU per write), so neither uses it. \
         The machine is shared and has 2 CPUs: figures vary by tens of percent from run \
         to run, and the table is one run.\n"
    )?;
    writeln!(
        section,
        "| Backend | Writes/s | Mean group size | p50 commit | p99 commit | Writer us/write (apply + commit) |"
    )?;
    writeln!(section, "|---|---:|---:|---:|---:|---:|")?;
    for run in runs {
        let (apply, commit) = run.cost_us();
        writeln!(
            section,
            "| {} | {:.0} | {:.1} | {:.2} ms | {:.2} ms | {:.1} + {:.1} |",
            run.backend,
            run.per_second(),
            run.group_size(),
            run.percentile_ms(0.50),
            run.percentile_ms(0.99),
            apply,
            commit
        )?;
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(e) => return Err(e.into()),
    };
    std::fs::write(path, replace_section(&existing, &section))?;
    Ok(())
}

/// `document` with the section under [`HEADING`] replaced by `section`, or with
/// `section` appended if there is none.
fn replace_section(document: &str, section: &str) -> String {
    let Some(start) = document.find(HEADING) else {
        let mut out = document.trim_end().to_owned();
        out.push_str("\n\n");
        out.push_str(section);
        return out;
    };
    let rest = &document[start + HEADING.len()..];
    let end = rest
        .find("\n## ")
        .map_or(document.len(), |i| start + HEADING.len() + i + 1);
    let mut out = document[..start].to_owned();
    out.push_str(section);
    if end < document.len() {
        out.push('\n');
        out.push_str(&document[end..]);
    }
    out
}

/// Today's date (UTC) as YYYY-MM-DD, from the days since the epoch (Howard Hinnant's
/// civil-from-days).
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place() {
        let doc =
            "# Benchmarks\n\n## A\n\na\n\n## Store writes (group commit)\n\nold\n\n## B\n\nb\n";
        let out = replace_section(doc, "## Store writes (group commit)\n\nnew\n");
        assert_eq!(
            out,
            "# Benchmarks\n\n## A\n\na\n\n## Store writes (group commit)\n\nnew\n\n## B\n\nb\n"
        );
        let out = replace_section("# Benchmarks\n", "## Store writes (group commit)\n\nnew\n");
        assert_eq!(
            out,
            "# Benchmarks\n\n## Store writes (group commit)\n\nnew\n"
        );
    }
}
