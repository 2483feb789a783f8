//! Test doubles for the agent's surroundings: a container runtime whose processes are
//! tiny scripts, and a temporary directory.
//!
//! A fake process is its command line: `exit N` ends at once with status N, `sleep MS`
//! exits 0 after MS milliseconds, `forever` runs until signalled, `lose` is one the
//! runtime loses track of (waiting for it fails); any other program fails to start.
//! The runtime records every start and every signal, so a test can say what ran and
//! what was killed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use runtime::protocol::ContainerState;
use runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ExitStatus, ProcessId, ProcessSpec,
    RuntimeEvent, Stats, TtySize,
};
use tokio::sync::watch;

/// A runtime holding one container, whose processes are scripts (see the module
/// documentation).
#[derive(Debug)]
pub struct FakeRuntime {
    container: String,
    /// Process `n` is at index `n - 1`.
    processes: Mutex<Vec<Process>>,
}

#[derive(Debug)]
struct Process {
    spec: ProcessSpec,
    /// `None` while it runs.
    end: watch::Sender<Option<ExitStatus>>,
    signals: Vec<i32>,
}

impl FakeRuntime {
    pub fn new(container: &str) -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            container: container.to_owned(),
            processes: Mutex::new(Vec::new()),
        })
    }

    /// The command lines of the processes started, in order of start.
    pub fn started(&self) -> Vec<String> {
        self.lock().iter().map(|p| command_line(&p.spec)).collect()
    }

    /// What each process was started with, in order of start.
    pub fn specs(&self) -> Vec<ProcessSpec> {
        self.lock().iter().map(|p| p.spec.clone()).collect()
    }

    /// The command lines of the processes sent signal 9, in order of start.
    pub fn killed(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|p| p.signals.contains(&9))
            .map(|p| command_line(&p.spec))
            .collect()
    }

    /// The command lines of the processes that have not ended.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|p| p.end.borrow().is_none())
            .map(|p| command_line(&p.spec))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Process>> {
        self.processes
            .lock()
            .expect("no test panics while holding the lock")
    }

    fn check_container(&self, container: &str) -> anyhow::Result<()> {
        if container != self.container {
            anyhow::bail!("fake runtime: no container {container}");
        }
        Ok(())
    }
}

fn command_line(spec: &ProcessSpec) -> String {
    std::iter::once(spec.path.as_str())
        .chain(spec.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ends a process unless it has already ended.
fn end(process: &watch::Sender<Option<ExitStatus>>, status: ExitStatus) {
    process.send_if_modified(|end| {
        let running = end.is_none();
        if running {
            *end = Some(status);
        }
        running
    });
}

/// Where process `process` is in the table.
fn index(process: ProcessId) -> Option<usize> {
    (process as usize).checked_sub(1)
}

fn not_used<T>() -> anyhow::Result<T> {
    anyhow::bail!("fake runtime: not used by these tests")
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    fn backend(&self) -> &str {
        "fake"
    }

    async fn create(&self, _: ContainerSpec) -> anyhow::Result<ContainerInfo> {
        not_used()
    }

    async fn spawn(&self, container: &str, spec: ProcessSpec) -> anyhow::Result<ProcessId> {
        self.check_container(container)?;
        let number = |arg: Option<&String>| -> anyhow::Result<i64> {
            let arg = arg.ok_or_else(|| anyhow::anyhow!("{} needs a number", spec.path))?;
            Ok(arg.parse()?)
        };
        let (sender, _) = watch::channel(None);
        match spec.path.as_str() {
            "exit" => end(
                &sender,
                ExitStatus::Exited {
                    code: i32::try_from(number(spec.args.first())?)?,
                },
            ),
            "sleep" => {
                let ms = u64::try_from(number(spec.args.first())?)?;
                let sender = sender.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    end(&sender, ExitStatus::Exited { code: 0 });
                });
            }
            "lose" => end(&sender, ExitStatus::Lost),
            "forever" => {}
            other => anyhow::bail!("fake runtime: no program {other}"),
        }
        let mut processes = self.lock();
        processes.push(Process {
            spec,
            end: sender,
            signals: Vec::new(),
        });
        Ok(u32::try_from(processes.len())?)
    }

    async fn wait(&self, container: &str, process: ProcessId) -> anyhow::Result<ExitStatus> {
        self.check_container(container)?;
        let mut end = {
            let processes = self.lock();
            let Some(p) = index(process).and_then(|i| processes.get(i)) else {
                anyhow::bail!("fake runtime: no process {process}");
            };
            if p.spec.path == "lose" {
                anyhow::bail!("fake runtime: lost process {process}");
            }
            p.end.subscribe()
        };
        let status = end.wait_for(Option::is_some).await?;
        Ok(status.expect("wait_for returns an ended process"))
    }

    async fn signal(
        &self,
        container: &str,
        process: Option<ProcessId>,
        signal: i32,
    ) -> anyhow::Result<()> {
        self.check_container(container)?;
        let Some(process) = process else {
            return not_used();
        };
        let mut processes = self.lock();
        let Some(p) = index(process).and_then(|i| processes.get_mut(i)) else {
            anyhow::bail!("fake runtime: no process {process}");
        };
        p.signals.push(signal);
        end(&p.end, ExitStatus::Signaled { signal });
        Ok(())
    }

    async fn input(&self, _: &str, _: ProcessId, _: Vec<u8>) -> anyhow::Result<()> {
        not_used()
    }

    async fn resize(&self, _: &str, _: ProcessId, _: TtySize) -> anyhow::Result<()> {
        not_used()
    }

    async fn destroy(&self, _: &str) -> anyhow::Result<()> {
        not_used()
    }

    async fn stats(&self, _: &str) -> anyhow::Result<Stats> {
        not_used()
    }

    async fn list(&self) -> anyhow::Result<Vec<ContainerState>> {
        not_used()
    }

    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent> {
        tokio::sync::broadcast::channel(1).1
    }
}

/// A fresh directory under the system's temporary directory, removed with its contents
/// when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        loop {
            let path = std::env::temp_dir().join(format!(
                "corral-cell-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // A directory left by an earlier run with the same process id is skipped.
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir(path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot make {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
