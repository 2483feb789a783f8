//! End to end: the real `corral` binary, `corral dev` and the CLI verbs, as a user runs
//! them, against a server on SQLite in a temporary CORRAL_HOME.

mod common;

use std::path::Path;

use api::{EventMessage, List, LrpStatus};
use model::{InstanceState, Lrp, Task, TaskState};

use common::{Dev, corral, fails, json, ok, poll, status};

/// Waits until the LRP has `n` instances, all UNCLAIMED (no cell runs yet).
fn wait_for_unclaimed(home: &Path, name: &str, n: usize) -> LrpStatus {
    poll(&format!("{n} UNCLAIMED instances of {name}"), || {
        let status = status(home, name);
        let unclaimed = status
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Unclaimed)
            .count();
        (status.instances.len() == n && unclaimed == n).then_some(status)
    })
}

#[test]
fn a_developer_session() {
    let home = tempfile::tempdir().expect("tempdir");
    let home = home.path();
    let mut dev = Dev::start(home);
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.join("config.json")).expect("corral dev wrote the config"),
    )
    .expect("the config is JSON");
    assert_eq!(
        config["api"],
        dev.api.as_str(),
        "the config names the bound port"
    );

    // Create, and see three instances waiting for a cell.
    let created = ok(
        home,
        &["create", "web", "--instances", "3", "--", "sleep", "1000"],
    );
    assert!(
        created.starts_with("Created web: 3 instances desired"),
        "{created}"
    );
    let waiting = wait_for_unclaimed(home, "web", 3);
    assert_eq!(waiting.lrp.spec.instances, 3);
    assert_eq!(waiting.unclaimed, 3);
    let page = ok(home, &["status", "web"]);
    let rows = page
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("UNCLAIMED"))
        .count();
    assert_eq!(rows, 3, "{page}");
    assert!(
        page.contains("No cells have joined this cluster yet"),
        "{page}"
    );
    let listed = ok(home, &["ls"]);
    assert!(listed.lines().any(|l| l.starts_with("web ")), "{listed}");

    // The event stream has the creation.
    let created_event = poll("the lrp_created event of web", || {
        let stdout = ok(home, &["events", "--after", "0", "--json"]);
        stdout
            .lines()
            .map(|line| {
                serde_json::from_str::<EventMessage>(line)
                    .unwrap_or_else(|e| panic!("event line is not an event ({e}): {line}"))
            })
            .find(|e| {
                let data: serde_json::Value =
                    serde_json::from_str(e.data.get()).expect("event data is JSON");
                e.kind == "lrp_created" && data["name"] == "web"
            })
    });
    assert!(created_event.seq > 0);
    let human = ok(home, &["events", "--after", "0", "--topics", "lrp"]);
    assert!(human.contains("lrp_created"), "{human}");

    // Desired state survives a restart.
    let stopped = dev.stop();
    assert!(
        stopped.success(),
        "corral dev exited with {stopped} after SIGTERM"
    );
    drop(dev);
    let dev = Dev::start(home);
    let after_restart = status(home, "web");
    assert_eq!(after_restart.lrp.spec.instances, 3);
    assert_eq!(after_restart.lrp.generation, waiting.lrp.generation);

    // A stale generation is refused as a conflict, and nothing changes.
    let stale = fails(
        home,
        &["update", "web", "--instances", "2", "--generation", "999"],
    );
    assert!(stale.to_lowercase().contains("conflict"), "{stale}");
    assert_eq!(status(home, "web").lrp.spec.instances, 3);

    // Without a token the server says so, and the CLI says how to get one.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let unauthorized = fails(elsewhere.path(), &["--api", &dev.api, "ls"]);
    assert!(unauthorized.contains("token"), "{unauthorized}");
    let wrong = fails(
        elsewhere.path(),
        &["--api", &dev.api, "--token", "wrong", "status", "web"],
    );
    assert!(
        wrong.contains("hint: the API needs a valid token"),
        "{wrong}"
    );

    // Scale up, update with the right generation, remove.
    let scaled = ok(home, &["scale", "web", "5"]);
    assert!(scaled.starts_with("Scaled web to 5 instances"), "{scaled}");
    let five = wait_for_unclaimed(home, "web", 5);
    let updated: Lrp = json(
        home,
        &[
            "update",
            "web",
            "--annotation",
            "owner: team-a",
            "--generation",
            &five.lrp.generation.to_string(),
            "--json",
        ],
    );
    assert_eq!(updated.spec.annotation, "owner: team-a");
    ok(home, &["rm", "web"]);
    let gone = fails(home, &["status", "web"]);
    assert!(gone.contains("web"), "{gone}");
    let lrps: List<Lrp> = json(home, &["ls", "--json"]);
    assert!(lrps.items.is_empty(), "{lrps:?}");

    // A task: submitted, pending (no cell), cancelled, removed.
    let submitted = ok(
        home,
        &["task", "submit", "--id", "t1", "--", "echo", "hello"],
    );
    assert!(
        submitted.starts_with("Submitted task t1 (PENDING)"),
        "{submitted}"
    );
    let pending: Task = json(home, &["task", "get", "t1", "--json"]);
    assert_eq!(pending.state, TaskState::Pending);
    let not_yet = fails(home, &["task", "rm", "t1"]);
    assert!(not_yet.to_lowercase().contains("conflict"), "{not_yet}");
    let cancelled: Task = json(home, &["task", "cancel", "t1", "--json"]);
    assert_eq!(
        (cancelled.state, cancelled.failed),
        (TaskState::Completed, true)
    );
    let tasks: List<Task> = json(home, &["task", "ls", "--state", "completed", "--json"]);
    assert_eq!(tasks.items.len(), 1);
    let shown = ok(home, &["task", "get", "t1"]);
    assert!(
        shown.contains("COMPLETED") && shown.contains("failed"),
        "{shown}"
    );
    ok(home, &["task", "rm", "t1"]);
    fails(home, &["task", "get", "t1"]);

    // The cluster verbs work with nothing to show.
    assert!(ok(home, &["cells"]).contains("No cells have joined"));
    let _: serde_json::Value = json(home, &["domains", "--json"]);
    drop(dev);
}

#[test]
fn an_unreachable_server_is_named_with_a_way_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let home = tempfile::tempdir().expect("tempdir");
    let api = format!("http://{addr}");
    let stderr = fails(home.path(), &["--api", &api, "ls"]);
    assert!(stderr.contains(&api), "{stderr}");
    assert!(stderr.contains("corral dev"), "{stderr}");
}

#[test]
fn version_and_usage_errors() {
    let home = tempfile::tempdir().expect("tempdir");
    let version = ok(home.path(), &["version"]);
    assert!(version.starts_with("corral "), "{version}");
    // Usage errors are clap's, with its exit code 2.
    let out = corral(
        home.path(),
        &["create", "web", "--env", "NOEQUALS", "--", "x"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}
