//! The server under test as a child process (`corral bench serve`): started on a
//! database, asked for its store's counters and for convergence passes over its stdin,
//! and measured from the outside (`/proc/PID/status`), so that its memory is not mixed
//! with the simulated cells'.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::serve::{Converged, Hello, ServerStats};

/// How long the child may take to open its store and listen.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the child is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);

pub struct ServerChild {
    child: Child,
    pid: u32,
    pub api: String,
    pub token: String,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl std::fmt::Debug for ServerChild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChild")
            .field("pid", &self.pid)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// A process's memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident now, in bytes.
    pub rss: u64,
    /// The most it has been resident (VmHWM), in bytes.
    pub peak: u64,
}

impl ServerChild {
    /// Starts `corral bench serve` on `db` with its files (token, log) in `dir`. The
    /// child logs to `dir/server.log`, at `RUST_LOG` or info.
    pub async fn start(db: &str, dir: &Path) -> Result<ServerChild> {
        let exe = std::env::current_exe().context("find the corral binary")?;
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("create the server's log {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["bench", "serve", "--db", db, "--data-dir"])
            .arg(dir.join("data"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .context("start the server (corral bench serve)")?;
        let pid = child.id().context("the server's pid")?;
        let stdin = child.stdin.take().context("the server's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the server's stdout")?).lines();
        let mut server = ServerChild {
            child,
            pid,
            api: String::new(),
            token: String::new(),
            stdin,
            stdout,
            log,
        };
        let hello: Hello = match tokio::time::timeout(START_DEADLINE, server.read()).await {
            Ok(Ok(hello)) => hello,
            Ok(Err(e)) => return Err(e.context(server.log_tail())),
            Err(_) => bail!("the server did not start in time\n{}", server.log_tail()),
        };
        server.api = hello.api;
        server.token = hello.token;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub async fn stats(&mut self) -> Result<ServerStats> {
        self.ask("stats").await
    }

    /// Runs one convergence pass in the server, and returns how long it took.
    pub async fn converge(&mut self) -> Result<Duration> {
        let answer: Converged = self.ask("converge").await?;
        match (answer.ms, answer.error) {
            (Some(ms), _) => Ok(Duration::from_secs_f64(ms / 1000.0)),
            (None, error) => bail!("the convergence pass failed: {}", error.unwrap_or_default()),
        }
    }

    pub fn memory(&self) -> Result<Memory> {
        memory(self.pid)
    }

    /// Stops the server gracefully (end of its input), or kills it if that takes
    /// too long.
    pub async fn stop(mut self) -> Result<()> {
        drop(self.stdin);
        match tokio::time::timeout(STOP_DEADLINE, self.child.wait()).await {
            Ok(status) => {
                let status = status.context("wait for the server")?;
                if !status.success() {
                    bail!("the server exited with {status}\n{}", log_tail(&self.log));
                }
            }
            Err(_) => {
                self.child.kill().await.context("kill the server")?;
            }
        }
        Ok(())
    }

    /// The last lines the server logged, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    async fn ask<T: DeserializeOwned>(&mut self, command: &str) -> Result<T> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("write to the server's stdin")?;
        self.stdin.flush().await?;
        self.read().await
    }

    async fn read<T: DeserializeOwned>(&mut self) -> Result<T> {
        let line = self
            .stdout
            .next_line()
            .await
            .context("read the server's stdout")?
            .context("the server exited")?;
        serde_json::from_str(&line).with_context(|| format!("the server said {line:?}"))
    }
}

/// The memory of process `pid`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("read /proc/{pid}/status"))?;
    Ok(parse_memory(&status))
}

/// Context switches (voluntary and not) of every thread of process `pid` so far: how
/// often its threads handed work to each other or waited.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter_map(|line| {
                    let rest = line
                        .strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))?;
                    rest.trim().parse::<u64>().ok()
                })
                .sum::<u64>()
        })
        .sum()
}

/// `VmRSS` and `VmHWM` of a `/proc/PID/status`, in bytes.
fn parse_memory(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    Memory {
        rss: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// What the server's log says about its health under load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSummary {
    /// Times the server took the leader lock: more than once means it lost it.
    pub leaderships: u32,
    /// Cell presences the expiry sweep found expired.
    pub cells_expired: u64,
    /// Convergence passes that changed something: instances, actions, read ms, total ms.
    pub passes: Vec<[u64; 4]>,
}

impl LogSummary {
    pub fn read(path: &Path) -> LogSummary {
        summarize(&std::fs::read_to_string(path).unwrap_or_default())
    }
}

fn summarize(log: &str) -> LogSummary {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut summary = LogSummary::default();
    for line in log.lines() {
        if line.contains("this server leads") {
            summary.leaderships += 1;
        } else if line.contains("cell presence expired") && !line.contains("cell=leader") {
            summary.cells_expired += 1;
        } else if line.contains(" converged ") || line.ends_with(" converged") {
            summary.passes.push([
                field(line, "instances"),
                field(line, "actions"),
                field(line, "read_ms"),
                field(line, "total_ms"),
            ]);
        }
    }
    summary
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    format!("last lines of {}:\n{tail}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tells_leadership_losses_expiries_and_passes() {
        let log = "\
2026-11-23T17:58:04Z  INFO server::leader: this server leads: scheduling and converging owner=a fence=1
2026-11-23T17:58:45Z  WARN server::leader: the leader lock was lost and taken again; restarting the leader's loops
2026-11-23T17:58:46Z  INFO server::leader: this server leads: scheduling and converging owner=a fence=10002
2026-11-23T17:58:54Z  INFO server::converger: converged lrps=215 instances=223444 tasks=0 actions=8444 applied=8444 raced=0 read_ms=2895 decide_ms=37 total_ms=7610
2026-11-23T17:59:01Z  WARN server::converger: cell presence expired cell=sim-1
2026-11-23T17:59:01Z  WARN server::converger: cell presence expired cell=leader
";
        assert_eq!(
            summarize(log),
            LogSummary {
                leaderships: 2,
                cells_expired: 1,
                passes: vec![[223_444, 8444, 2895, 7610]],
            }
        );
    }

    #[test]
    fn memory_is_read_from_proc_status() {
        let status = "Name:\tcorral\nVmPeak:\t  900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_memory(status),
            Memory {
                rss: 1024 * 1024,
                peak: 2048 * 1024
            }
        );
        assert!(context_switches(std::process::id()) > 0);
        let own = memory(std::process::id()).expect("this process's status");
        assert!(own.peak >= own.rss && own.rss > 0, "{own:?}");
    }
}
