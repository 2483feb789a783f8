//! End to end: the real `corral` binary, `corral dev` and the CLI verbs, as a user runs
//! them, against a server on SQLite in a temporary CORRAL_HOME.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::{EventMessage, List, LrpStatus};
use model::{InstanceState, Lrp, Task, TaskState};

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
/// Long enough for a cold start of the server on a busy 2-core machine.
const START_DEADLINE: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(20);

/// A running `corral dev`. Dropping it kills the process, so a failing test leaves no
/// server behind; on a panic it prints what the server logged.
struct Dev {
    child: Child,
    api: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Dev {
    /// Starts `corral dev` on a free port and waits until it prints its API address.
    fn start(home: &Path) -> Dev {
        let mut child = Command::new(CORRAL)
            .args(["dev", "--listen", "127.0.0.1:0"])
            .env("CORRAL_HOME", home)
            .env_remove("CORRAL_API")
            .env_remove("CORRAL_TOKEN")
            .env_remove("CORRAL_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn corral dev");
        let (lines, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&stderr);
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut dev = Dev {
            child,
            api: String::new(),
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        dev.api = dev.wait_for_line(|line| {
            let line = line.trim_start();
            line.strip_prefix("API")
                .map(|rest| rest.trim().to_owned())
                .filter(|url| url.starts_with("http://"))
        });
        dev
    }

    /// Reads stdout until `find` picks something out of a line.
    fn wait_for_line<T>(&mut self, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + START_DEADLINE;
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(found) = find(&line) {
                        return found;
                    }
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("corral dev printed no API address in time; stdout:\n{seen}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "corral dev exited ({status:?}) before printing its API address; stdout:\n{seen}"
                    )
                }
            }
        }
    }

    /// Stops the server as a user or an init system would, and waits for it to exit.
    fn stop(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = poll("corral dev to exit after SIGTERM", || {
            self.child.try_wait().expect("try_wait")
        });
        // The reader ends at the end of the pipe: after it, the log is complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- corral dev stderr ---\n{}", self.log());
        }
    }
}

/// Calls `check` until it returns something, failing after the deadline.
fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Runs the CLI with `home` as CORRAL_HOME and nothing else from this environment.
fn corral(home: &Path, args: &[&str]) -> Output {
    Command::new(CORRAL)
        .args(args)
        .env("CORRAL_HOME", home)
        .env_remove("CORRAL_API")
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run corral")
}

/// Runs the CLI, expecting success; returns stdout.
fn ok(home: &Path, args: &[&str]) -> String {
    let out = corral(home, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "corral {args:?} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// Runs the CLI, expecting it to fail with exit code 1; returns stderr.
fn fails(home: &Path, args: &[&str]) -> String {
    let out = corral(home, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "corral {args:?} should fail; stdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn json<T: serde::de::DeserializeOwned>(home: &Path, args: &[&str]) -> T {
    let stdout = ok(home, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("corral {args:?} printed no valid JSON ({e}):\n{stdout}"))
}

fn status(home: &Path, name: &str) -> LrpStatus {
    json(home, &["status", name, "--json"])
}

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
