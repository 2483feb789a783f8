//! `corral logs` and `corral task logs` against a real `corral dev` with a cell: the
//! app's output and its lifecycle in one stream, live.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use api::LrpStatus;
use common::{Daemon, Dev, fails, json, ok, poll_for};
use model::InstanceState;

/// Long enough for a cold start on a busy 2-core machine.
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `corral dev` with a process-backend cell (no root needed), joined.
fn dev_with_cell(home: &Path) -> Dev {
    let dev = Dev::start_with(home, &["--backend", "process", "--no-router"]);
    poll_for("the dev cell to join", RUN_DEADLINE, || {
        let cells: api::List<model::Cell> = json(home, &["cells", "--json"]);
        (!cells.items.is_empty()).then_some(())
    });
    dev
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
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let mut dev = dev_with_cell(home);
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
    dev.stop();
}
