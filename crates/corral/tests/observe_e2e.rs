//! Watching what runs, against a real `corral dev` with a cell: `corral logs` and
//! `corral task logs` (the app's output and its lifecycle in one stream, live),
//! `corral status` with what each instance uses, and `corral visualize`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use api::LrpStatus;
use common::{Daemon, DevCell, fails, json, ok, poll_for};
use model::InstanceState;

/// Long enough for a cold start on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `corral dev` with a process-backend cell (no root needed), joined.
fn dev_with_cell() -> DevCell {
    DevCell::start(&["--backend", "process", "--no-router"])
}

fn running(home: &Path, name: &str) -> LrpStatus {
    poll_for(&format!("{name} to run"), RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", name, "--json"]);
        status
            .instances
            .iter()
            .any(|i| i.state == InstanceState::Running)
            .then_some(status)
    })
}

#[test]
fn logs_follow_an_apps_output_and_its_lifecycle() {
    let dev = dev_with_cell();
    let home = dev.home();
    let files = tempfile::tempdir().expect("tempdir");
    let dir = files.path().display().to_string();
    // Prints on both streams, answers each ping file with a line, and crashes with
    // status 3 when the crash file appears (the process backend shares the host's
    // files). The crash policy starts it again at once, so it clears its files first.
    let script = format!(
        "echo started; echo oops >&2; \
         while [ ! -e {dir}/crash ]; do \
           if [ -e {dir}/ping ]; then rm {dir}/ping; echo pong; fi; sleep 0.02; \
         done; rm {dir}/crash; echo bye; exit 3"
    );
    ok(home, &["create", "chatty", "--", "sh", "-c", &script]);
    running(home, "chatty");

    // The tail: output of both streams, the cell's notes and nothing of other LRPs.
    let tail = poll_for("the app's first lines in the tail", RUN_DEADLINE, || {
        let tail = ok(home, &["logs", "chatty"]);
        (tail.contains("[APP/0] OUT started") && tail.contains("[APP/0] ERR oops")).then_some(tail)
    });
    assert!(
        tail.contains("[CELL/0] placed on cell dev-cell: creating the container"),
        "{tail}"
    );
    assert!(tail.contains("[CELL/0] running"), "{tail}");
    let last = ok(home, &["logs", "chatty", "--tail", "1"]);
    assert_eq!(last.lines().count(), 1, "{last}");
    let entries = ok(home, &["logs", "chatty", "--json"]);
    let first: api::LogEntry =
        serde_json::from_str(entries.lines().next().expect("a line")).expect("a LogEntry");
    assert!(first.at > 0, "{first:?}");

    // Following: a line the app prints arrives within a second. The tail's one line
    // says the stream is open, so the ping cannot fall before it.
    let mut follow = Daemon::start(home, &["logs", "chatty", "-f", "--tail", "1"]);
    follow.wait_for_line("the tail's line", |line| line.contains(" [").then_some(()));
    for round in 0..2 {
        let sent = Instant::now();
        std::fs::write(files.path().join("ping"), "").expect("write the ping file");
        follow.wait_for_line("a pong", |line| {
            line.contains("[APP/0] OUT pong").then_some(())
        });
        let latency = sent.elapsed();
        assert!(
            latency < Duration::from_secs(1),
            "round {round}: a printed line took {latency:?} to reach `corral logs -f`"
        );
    }

    // A crash shows in the same stream: the app's last words, the cell's note and the
    // server's view, with the reason.
    std::fs::write(files.path().join("crash"), "").expect("write the crash file");
    follow.wait_for_line("the app's last line", |line| {
        line.contains("[APP/0] OUT bye").then_some(())
    });
    follow.wait_for_line("the cell's crash note", |line| {
        line.contains("[CELL/0] crashed: sh: exited with status 3")
            .then_some(())
    });
    follow.wait_for_line("the server's crash line", |line| {
        line.contains("[API/0] crashed (1 crash): sh: exited with status 3")
            .then_some(())
    });
    // And its restart, on the same stream.
    follow.wait_for_line("the restart", |line| {
        line.contains("[APP/0] OUT started").then_some(())
    });

    // Deleting the LRP ends the stream.
    ok(home, &["rm", "chatty"]);
    follow.wait_for_line("the deletion", |line| {
        line.contains("[API] deleted").then_some(())
    });
    let status = poll_for("`corral logs -f` to end", RUN_DEADLINE, || {
        follow.try_exit()
    });
    assert!(status.success(), "{status:?}");

    // Unknown names are named.
    let err = fails(home, &["logs", "nope"]);
    assert!(err.contains("no LRP named nope"), "{err}");
    let err = fails(home, &["task", "logs", "nope"]);
    assert!(err.contains("no task with id nope"), "{err}");

    // A task's log, followed until it completes.
    ok(
        home,
        &[
            "task",
            "submit",
            "--id",
            "once",
            "--",
            "sh",
            "-c",
            "echo task-line; echo task-err >&2; exit 4",
        ],
    );
    let mut task_logs = Daemon::start(home, &["task", "logs", "once", "-f"]);
    task_logs.wait_for_line("the task's failure", |line| {
        line.contains("failed: sh: exited with status 4")
            .then_some(())
    });
    poll_for("`corral task logs -f` to end", RUN_DEADLINE, || {
        task_logs.try_exit()
    });
    let all = ok(home, &["task", "logs", "once"]);
    for want in [
        "[APP] OUT task-line",
        "[APP] ERR task-err",
        "[CELL] task failed: sh: exited with status 4",
    ] {
        assert!(all.contains(want), "no {want:?} in:\n{all}");
    }
}

#[test]
fn status_and_visualize_show_what_runs_where() {
    let dev = dev_with_cell();
    let home = dev.home();
    ok(
        home,
        &[
            "create",
            "idle",
            "-i",
            "2",
            "--",
            "sh",
            "-c",
            "exec sleep 100000",
        ],
    );
    poll_for("2 running instances", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "idle", "--json"]);
        (status.running == 2).then_some(())
    });

    // The cell samples its containers: memory at once, CPU from the second sample.
    let status = poll_for("usage of both instances", RUN_DEADLINE, || {
        let status: LrpStatus = json(home, &["status", "idle", "--json"]);
        (status.usage.len() == 2 && status.usage.iter().all(|u| u.cpu_percent.is_some()))
            .then_some(status)
    });
    for usage in &status.usage {
        assert!(usage.memory_bytes > 0, "{usage:?}");
        let cpu = usage.cpu_percent.expect("sampled twice");
        assert!((0.0..=200.0).contains(&cpu), "{usage:?}");
        let instance = status
            .instances
            .iter()
            .find(|i| i.index == usage.index)
            .expect("the instance");
        assert_eq!(
            instance.key.as_ref().map(|k| k.instance_id.as_str()),
            Some(usage.instance_id.as_str())
        );
    }
    let table = ok(home, &["status", "idle"]);
    let header = table
        .lines()
        .find(|l| l.starts_with("INDEX"))
        .unwrap_or_else(|| panic!("no table in:\n{table}"));
    for column in ["CPU", "MEMORY", "DISK", "UPTIME", "CRASHES"] {
        assert!(header.contains(column), "{header}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("0 "))
        .unwrap_or_else(|| panic!("no row for instance 0 in:\n{table}"));
    assert!(row.contains("RUNNING") && row.contains("dev-cell"), "{row}");
    assert!(row.contains('%') && row.contains(" MB"), "{row}");

    let frame = ok(home, &["visualize", "--once"]);
    assert!(
        frame.starts_with("1 cells, 2 instances: 2 running"),
        "{frame}"
    );
    let lines: Vec<&str> = frame.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("dev-cell"))
        .unwrap_or_else(|| panic!("no dev-cell row in:\n{frame}"));
    assert!(lines[at].contains("2/"), "{frame}");
    assert_eq!(lines[at + 1].trim(), "RR", "{frame}");
}
