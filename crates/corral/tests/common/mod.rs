//! What the end-to-end tests share: the real `corral` binary run as a user runs it, in a
//! temporary CORRAL_HOME, with every long-running process killed when its guard drops.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use api::LrpStatus;

pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
/// Long enough for a cold start of the server on a busy 2-core machine.
pub const START_DEADLINE: Duration = Duration::from_secs(60);
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A long-running `corral` process (`corral dev`, `corral sim-cells`). Dropping it
/// kills the process, so a failing test leaves nothing behind; on a panic it prints
/// what the process logged.
pub struct Daemon {
    /// The command line, for messages: `corral dev --listen 127.0.0.1:0`.
    name: String,
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Starts `corral ARGS` with `home` as CORRAL_HOME and nothing else from this
    /// environment; its stdout is read line by line with [`Daemon::wait_for_line`].
    pub fn start(home: &Path, args: &[&str]) -> Daemon {
        let name = format!("corral {}", args.join(" "));
        let mut child = command(home, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
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
        Daemon {
            name,
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Reads stdout until `find` picks something out of a line; `what` names it for
    /// the failure message.
    pub fn wait_for_line<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
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
                    panic!("{} printed no {what} in time; stdout:\n{seen}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before printing {what}; stdout:\n{seen}",
                        self.name
                    )
                }
            }
        }
    }

    /// Stops the process as a user or an init system would, and waits for it to exit.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let status = poll(&format!("{} to exit after SIGTERM", self.name), || {
            self.child.try_wait().expect("try_wait")
        });
        // The reader ends at the end of the pipe: after it, the log is complete.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    /// Kills the process with SIGKILL, as a crashed machine would end it, and reaps it.
    pub fn kill(&mut self) {
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL {}: {e}", self.name));
        self.child
            .wait()
            .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
    }

    /// The exit status, if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits until the process's stderr holds `needle`.
    pub fn wait_for_log(&self, what: &str, needle: &str) {
        poll_for(what, START_DEADLINE, || {
            self.log().contains(needle).then_some(())
        });
    }

    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.name, self.log());
        }
    }
}

/// A running `corral dev`, which writes `$CORRAL_HOME/config.json` so that the CLI and
/// `corral sim-cells` find it.
pub struct Dev {
    /// The API address it printed.
    pub api: String,
    /// The router's HTTP address it printed (`127.0.0.1:PORT`), unless `--no-router`.
    pub router: Option<String>,
    process: Daemon,
}

impl Dev {
    /// Starts `corral dev --no-cell` on a free port and waits until it prints its API
    /// address.
    pub fn start(home: &Path) -> Dev {
        Dev::start_with(home, &["--no-cell"])
    }

    /// Starts `corral dev ARGS` on a free port (its router on another, unless ARGS say
    /// where or `--no-router`) and waits until it prints its API address.
    pub fn start_with(home: &Path, args: &[&str]) -> Dev {
        let mut all = vec!["dev", "--listen", "127.0.0.1:0"];
        let routed = !args.contains(&"--no-router");
        // Tests run side by side: each router needs a port of its own.
        if routed && !args.contains(&"--router") {
            all.extend(["--router", "127.0.0.1:0"]);
        }
        all.extend_from_slice(args);
        let mut process = Daemon::start(home, &all);
        let api = process.wait_for_line("API address", |line| {
            let line = line.trim_start();
            line.strip_prefix("API")
                .map(|rest| rest.trim().to_owned())
                .filter(|url| url.starts_with("http://"))
        });
        let router = routed.then(|| {
            process.wait_for_line("router address", |line| {
                let rest = line.trim_start().strip_prefix("router")?.trim();
                let addr = rest.strip_prefix("http://")?.split_whitespace().next()?;
                Some(addr.to_owned())
            })
        });
        Dev {
            api,
            router,
            process,
        }
    }

    /// Everything `corral dev` printed on stderr so far (its server's, cell's and
    /// router's logs).
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn stop(&mut self) -> ExitStatus {
        self.process.stop()
    }
}

/// Calls `check` until it returns something, failing after [`DEADLINE`].
pub fn poll<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_for(what, DEADLINE, check)
}

/// Calls `check` until it returns something, failing after `deadline`.
pub fn poll_for<T>(what: &str, deadline: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll_for_explained(what, deadline, check, String::new)
}

/// [`poll_for`], and on a timeout the failure also says what `explain` finds (the
/// state that tells why it never happened).
pub fn poll_for_explained<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + deadline;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            explain()
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// `corral ARGS` with `home` as CORRAL_HOME and nothing else from this environment.
pub fn command(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(CORRAL);
    command
        .args(args)
        .env("CORRAL_HOME", home)
        .env_remove("CORRAL_API")
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_CONFIG");
    command
}

/// Runs the CLI with `home` as CORRAL_HOME and nothing else from this environment.
pub fn corral(home: &Path, args: &[&str]) -> Output {
    command(home, args)
        .stdin(Stdio::null())
        .output()
        .expect("run corral")
}

/// Runs the CLI, expecting success; returns stdout.
pub fn ok(home: &Path, args: &[&str]) -> String {
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
pub fn fails(home: &Path, args: &[&str]) -> String {
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

/// Runs the CLI, expecting success, and parses what it printed as JSON.
pub fn json<T: serde::de::DeserializeOwned>(home: &Path, args: &[&str]) -> T {
    let stdout = ok(home, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("corral {args:?} printed no valid JSON ({e}):\n{stdout}"))
}

/// `corral status NAME --json`.
pub fn status(home: &Path, name: &str) -> LrpStatus {
    json(home, &["status", name, "--json"])
}

/// A status and body, or why there was none.
pub type Answer = Result<(u16, String), String>;

/// One HTTP/1.1 `GET` on a connection of its own, with `Host: host` and the bearer
/// token when one is given.
pub fn http_get(addr: &str, host: &str, path: &str, token: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "this reader expects whole bodies: {head}"
    );
    Ok((status, body.to_owned()))
}

/// `corral dev ARGS` in a CORRAL_HOME of its own, returned once its cell (`dev-cell`)
/// has joined. Dropping it stops `corral dev` gracefully, so that the cell's runtime
/// helper destroys its containers.
pub struct DevCell {
    pub dev: Option<Dev>,
    pub home: tempfile::TempDir,
}

impl DevCell {
    pub fn start(args: &[&str]) -> DevCell {
        let home = tempfile::tempdir().expect("tempdir");
        let dev = Dev::start_with(home.path(), args);
        let cell = DevCell {
            dev: Some(dev),
            home,
        };
        poll_for("the dev cell to join", START_DEADLINE, || {
            let cells: api::List<model::Cell> = json(cell.home(), &["cells", "--json"]);
            cells
                .items
                .iter()
                .any(|c| c.id.as_str() == "dev-cell")
                .then_some(())
        });
        cell
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn dev(&self) -> &Dev {
        self.dev.as_ref().expect("corral dev runs until dropped")
    }
}

impl Drop for DevCell {
    fn drop(&mut self) {
        if let Some(mut dev) = self.dev.take() {
            dev.stop();
        }
    }
}

/// Whether this process runs as root (read from /proc, without unsafe code).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        })
        .is_some_and(|uid| uid == "0")
}

/// The linux backend needs root; CI runs as root. Elsewhere a test that needs it says
/// so and fails, unless CORRAL_SKIP_LINUX_TESTS=1 says to skip it.
pub fn linux_available() -> bool {
    if std::env::var("CORRAL_SKIP_LINUX_TESTS").as_deref() == Ok("1") {
        eprintln!("CORRAL_SKIP_LINUX_TESTS=1: skipping a linux backend test");
        return false;
    }
    assert!(
        is_root(),
        "the linux backend tests need root (set CORRAL_SKIP_LINUX_TESTS=1 to skip them)"
    );
    true
}
