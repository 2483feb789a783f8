//! End to end with cells: the real `corral` binary as a user runs it — `corral dev`,
//! two `corral sim-cells` fleets in their own processes, the CLI verbs — placing work,
//! moving it off a fleet that died, backing off a crash loop, completing a task and
//! naming why work cannot be placed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use api::{EventMessage, List, LrpStatus};
use model::{Cell, Instance, InstanceState, Presence, Task, TaskState};
use tempfile::TempDir;

use common::{DEADLINE, Daemon, Dev, json, ok, poll, poll_for, status};

/// How long the test lets the instances of a dead fleet take to run elsewhere. The
/// design goal is 5 s (presence TTL 3 s, then a sweep and a placement); the slack is
/// for busy machines, and the time taken is printed rather than judged.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(20);
/// Diego's wait before the third crash's restart.
const FIRST_BACKOFF_MS: u64 = 30_000;

/// `corral dev` and two fleets of two simulated cells each (`a-0`, `a-1` and `b-0`,
/// `b-1`), as a user would run them in three terminals. The fields drop in order, so the
/// fleets stop before the server and the server before its home is deleted.
struct Cluster {
    a: Fleet,
    b: Fleet,
    _dev: Dev,
    home: TempDir,
}

impl Cluster {
    /// Starts the server and both fleets, and waits until all four cells have joined,
    /// so that placement sees them all from the first instance on.
    fn start() -> Cluster {
        let home = tempfile::tempdir().expect("tempdir");
        let dev = Dev::start(home.path());
        let a = Fleet::start(home.path(), "a");
        let b = Fleet::start(home.path(), "b");
        let cluster = Cluster {
            a,
            b,
            _dev: dev,
            home,
        };
        let all: Vec<String> = cluster
            .a
            .cells
            .iter()
            .chain(&cluster.b.cells)
            .cloned()
            .collect();
        cluster.wait_for_cells(&all);
        cluster
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// Waits until exactly `expected` are the live cells.
    fn wait_for_cells(&self, expected: &[String]) {
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        poll(&format!("the live cells to be {expected:?}"), || {
            let cells: List<Cell> = json(self.home(), &["cells", "--json"]);
            let live: BTreeSet<&str> = cells.items.iter().map(|c| c.id.as_str()).collect();
            (live == expected).then_some(())
        });
    }
}

/// A running `corral sim-cells --count 2 --prefix P`.
struct Fleet {
    /// The names of its cells: `P-0`, `P-1`.
    cells: Vec<String>,
    process: Daemon,
}

impl Fleet {
    fn start(home: &Path, prefix: &str) -> Fleet {
        let mut process = Daemon::start(
            home,
            &[
                "sim-cells",
                "--count",
                "2",
                "--prefix",
                prefix,
                "--listen",
                "127.0.0.1:0",
            ],
        );
        // The banner names the work endpoint once the fleet listens and has joined.
        process.wait_for_line("its work endpoint", |line| {
            line.trim_start()
                .strip_prefix("work endpoint")
                .map(|url| url.trim().to_owned())
        });
        Fleet {
            cells: vec![format!("{prefix}-0"), format!("{prefix}-1")],
            process,
        }
    }
}

/// The ORDINARY rows of an LRP, by index.
fn ordinary(status: &LrpStatus) -> BTreeMap<u32, &Instance> {
    status
        .instances
        .iter()
        .filter(|i| i.presence == Presence::Ordinary)
        .map(|i| (i.index, i))
        .collect()
}

/// The cell an instance is claimed by or running on.
fn cell_of(instance: &Instance) -> Option<&str> {
    instance.key.as_ref().map(|k| k.cell_id.as_str())
}

/// Waits until indexes 0..n of the LRP are RUNNING, each as one ORDINARY row on a cell
/// that `allowed` accepts.
fn wait_for_running(
    home: &Path,
    name: &str,
    n: u32,
    deadline: Duration,
    allowed: impl Fn(&str) -> bool,
) -> LrpStatus {
    poll_for(
        &format!("{n} RUNNING instances of {name}"),
        deadline,
        || {
            let status = status(home, name);
            let rows = ordinary(&status);
            let done = rows.len() == n as usize
                && (0..n).all(|index| {
                    rows.get(&index).is_some_and(|i| {
                        i.state == InstanceState::Running && cell_of(i).is_some_and(&allowed)
                    })
                });
            done.then_some(status)
        },
    )
}

/// How many ORDINARY instances each cell runs.
fn per_cell(status: &LrpStatus) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for instance in ordinary(status).values() {
        let cell = cell_of(instance).expect("a running instance names its cell");
        *counts.entry(cell.to_owned()).or_default() += 1;
    }
    counts
}

/// The events of `topic` from the start, parsed.
fn events(home: &Path, topic: &str) -> Vec<EventMessage> {
    ok(
        home,
        &["events", "--after", "0", "--topics", topic, "--json"],
    )
    .lines()
    .map(|line| {
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("event line is not an event ({e}): {line}"))
    })
    .collect()
}

/// Every version of the ORDINARY row `lrp/index` that the event log holds, in order.
fn instance_history(home: &Path, lrp: &str, index: u32) -> Vec<Instance> {
    events(home, "instance")
        .into_iter()
        .filter(|e| e.kind == "instance_created" || e.kind == "instance_changed")
        .map(|e| {
            serde_json::from_str::<Instance>(e.data.get())
                .unwrap_or_else(|err| panic!("{} is not an instance ({err})", e.data.get()))
        })
        .filter(|i| i.lrp.as_str() == lrp && i.index == index && i.presence == Presence::Ordinary)
        .collect()
}

/// Writes past the test harness's capture, so the figure shows in every run.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn fifty_instances_spread_over_the_cells_and_leave_a_fleet_that_dies() {
    let mut cluster = Cluster::start();
    let home = cluster.home();

    let created = ok(
        home,
        &["create", "web", "--instances", "50", "--", "sleep", "1000"],
    );
    assert!(
        created.starts_with("Created web: 50 instances desired"),
        "{created}"
    );
    let placed = wait_for_running(home, "web", 50, DEADLINE, |_| true);
    // Anti-affinity spreads the instances evenly over four equal cells.
    let spread = per_cell(&placed);
    let cells: Vec<&str> = spread.keys().map(String::as_str).collect();
    assert_eq!(cells, ["a-0", "a-1", "b-0", "b-1"], "{spread:?}");
    assert!(
        spread.values().all(|n| (12..=13).contains(n)),
        "every cell should run 12 or 13 of the 50: {spread:?}"
    );
    let page = ok(home, &["status", "web"]);
    assert!(
        page.starts_with("web: 50 instances desired, 50 running, 0 claimed, 0 unclaimed"),
        "{page}"
    );

    // A machine dies: no clean shutdown, no goodbye to the server.
    cluster.b.process.kill();
    let killed = Instant::now();
    let home = cluster.home();
    let moved = wait_for_running(home, "web", 50, FAILOVER_DEADLINE, |cell| {
        cluster.a.cells.iter().any(|c| c == cell)
    });
    let took = killed.elapsed();
    report(&format!(
        "scheduling_e2e: 50 instances RUNNING on the surviving fleet {:.1} s after SIGKILL of \
         the other (goal <= 5 s); spread {:?}",
        took.as_secs_f64(),
        per_cell(&moved)
    ));
    cluster.wait_for_cells(&cluster.a.cells);
}

#[test]
fn crashes_back_off_tasks_complete_and_unplaceable_work_says_why() {
    let cluster = Cluster::start();
    let home = cluster.home();

    ok(
        home,
        &[
            "create",
            "crashy",
            "--env",
            "SIM_CRASH_AFTER_MS=50",
            "--",
            "sleep",
            "1",
        ],
    );
    ok(
        home,
        &[
            "task",
            "submit",
            "--id",
            "job",
            "--env",
            "SIM_RESULT=42",
            "--",
            "true",
        ],
    );
    ok(
        home,
        &["create", "huge", "--memory", "1000000", "--", "sleep", "1"],
    );

    // A crash loop: crashes 1 and 2 restart at once, crash 3 waits out the backoff.
    let crashed = poll("crashy/0 to be CRASHED", || {
        let status = status(home, "crashy");
        ordinary(&status)
            .get(&0)
            .filter(|i| i.state == InstanceState::Crashed)
            .map(|&i| (status.lrp.spec.crash_policy, i.clone()))
    });
    let (policy, instance) = crashed;
    assert_eq!(instance.crash_count, 3, "{instance:?}");
    assert_eq!(
        instance.restart_at(&policy),
        Some(instance.since.plus_millis(FIRST_BACKOFF_MS)),
        "the third crash waits {FIRST_BACKOFF_MS} ms: {instance:?}"
    );
    let history = instance_history(home, "crashy", 0);
    let after_crashes: Vec<(u32, InstanceState)> = history
        .windows(2)
        .filter(|pair| pair[1].crash_count > pair[0].crash_count)
        .map(|pair| (pair[1].crash_count, pair[1].state))
        .collect();
    assert_eq!(
        after_crashes,
        [
            (1, InstanceState::Unclaimed),
            (2, InstanceState::Unclaimed),
            (3, InstanceState::Crashed)
        ],
        "{history:#?}"
    );
    let runs = history
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    assert_eq!(runs, 3, "it ran before each crash: {history:#?}");

    // The page says so in words: three crashes, and when it starts again.
    let page = ok(home, &["status", "crashy"]);
    assert!(page.contains(", 1 crashed"), "{page}");
    let header = page
        .lines()
        .find(|l| l.starts_with("INDEX"))
        .unwrap_or_else(|| panic!("no instance table:\n{page}"));
    let row = page
        .lines()
        .find(|l| l.starts_with("0 "))
        .unwrap_or_else(|| panic!("no row for index 0:\n{page}"));
    let column = header.find("CRASHES").expect("a CRASHES column");
    assert!(row.contains("CRASHED"), "{page}");
    assert_eq!(
        row.get(column..)
            .and_then(|rest| rest.split_whitespace().next()),
        Some("3"),
        "{page}"
    );
    let restarts_in = row
        .split_once("restarts in ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|left| left.strip_suffix('s'))
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no \"restarts in Ns\" in the row:\n{page}"));
    assert!(
        (1..=FIRST_BACKOFF_MS / 1000).contains(&restarts_in),
        "{page}"
    );

    // The task ran once, on some cell, and completed with its result.
    let task = poll("task job to complete", || {
        let task: Task = json(home, &["task", "get", "job", "--json"]);
        (task.state == TaskState::Completed).then_some(task)
    });
    assert_eq!(
        (task.result.as_deref(), task.failed),
        (Some("42"), false),
        "{task:?}"
    );
    assert!(task.cell_id.is_some(), "{task:?}");
    let states: Vec<TaskState> = events(home, "task")
        .iter()
        .map(|e| serde_json::from_str::<Task>(e.data.get()).expect("task events carry the task"))
        .filter(|t| t.id.as_str() == "job")
        .map(|t| t.state)
        .collect();
    for once in [TaskState::Running, TaskState::Completed] {
        assert_eq!(
            states.iter().filter(|&&s| s == once).count(),
            1,
            "job is {once:?} once: {states:?}"
        );
    }
    let shown = ok(home, &["task", "get", "job"]);
    assert!(
        shown.contains("succeeded") && shown.contains("result:\n42\n"),
        "{shown}"
    );

    // No cell has a terabyte of memory, and the page says so.
    let page = poll("huge's placement error", || {
        let page = ok(home, &["status", "huge"]);
        page.contains("insufficient resources: memory")
            .then_some(page)
    });
    assert!(page.contains("UNCLAIMED"), "{page}");
    let unplaced = status(home, "huge");
    let rows = ordinary(&unplaced);
    assert_eq!(
        rows.get(&0).and_then(|i| i.placement_error.as_deref()),
        Some("insufficient resources: memory"),
        "{unplaced:?}"
    );
}
