//! Runs an action tree in a container: run, download, serial, parallel, codependent,
//! timeout and try, with Diego's semantics.
//!
//! Cancelling the future of an action (a codependent sibling ended, a timeout fired,
//! the instance is stopping) kills the processes it started: every started process is
//! held by a guard that kills it when dropped before it ended.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future;
use model::{Action, ChecksumAlgorithm, DownloadAction, RunAction};
use runtime::{ContainerRuntime, ExitStatus, ProcessId, ProcessSpec};
use sha2::Digest;
use tokio::io::AsyncWriteExt;

/// Why an action failed, in words fit for a crash report or a task's failure reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError(pub String);

impl std::fmt::Display for ActionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything an action needs from its container.
#[derive(Debug, Clone)]
pub struct Context {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub container: String,
    /// The container's root as seen from the cell.
    pub root: PathBuf,
    /// Environment of the LRP or task, given to every run.
    pub env: Vec<(String, String)>,
    pub downloads: Arc<Downloads>,
    /// Told the id of every process started, so a restarted agent can find them.
    pub started: tokio::sync::mpsc::UnboundedSender<ProcessId>,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), ActionError>> + Send + 'a>>;

/// Runs `action` to its end.
pub fn execute<'a>(ctx: &'a Context, action: &'a Action) -> Boxed<'a> {
    Box::pin(async move {
        match action {
            Action::Run(run) => run_process(ctx, run).await,
            Action::Download(download) => ctx.downloads.fetch_into(ctx, download).await,
            Action::Serial(actions) => {
                for action in actions {
                    execute(ctx, action).await?;
                }
                Ok(())
            }
            Action::Parallel(actions) => {
                let results = future::join_all(actions.iter().map(|a| execute(ctx, a))).await;
                results
                    .into_iter()
                    .collect::<Result<Vec<()>, _>>()
                    .map(drop)
            }
            Action::Codependent(actions) => {
                // The first child to end, however it ends, ends them all; dropping the
                // rest kills their processes.
                let (result, _, _) =
                    future::select_all(actions.iter().map(|a| execute(ctx, a))).await;
                match result {
                    Ok(()) => Err(ActionError(
                        "a codependent action exited, so the others were stopped".to_owned(),
                    )),
                    Err(e) => Err(e),
                }
            }
            Action::Timeout { action, timeout_ms } => {
                let limit = Duration::from_millis(*timeout_ms);
                match tokio::time::timeout(limit, execute(ctx, action)).await {
                    Ok(result) => result,
                    Err(_) => Err(ActionError(format!("timed out after {timeout_ms} ms"))),
                }
            }
            Action::Try(action) => {
                if let Err(e) = execute(ctx, action).await {
                    tracing::info!(container = %ctx.container, "a try action failed: {e}");
                }
                Ok(())
            }
        }
    })
}

async fn run_process(ctx: &Context, run: &RunAction) -> Result<(), ActionError> {
    let spec = ProcessSpec {
        path: run.path.clone(),
        args: run.args.clone(),
        dir: run.dir.clone(),
        env: ctx.env.iter().chain(run.env.iter()).cloned().collect(),
        user: run.user.clone(),
        nofile: run.limits.nofile,
        nproc: run.limits.nproc,
        tty: None,
    };
    let process = ctx
        .runtime
        .spawn(&ctx.container, spec)
        .await
        .map_err(|e| ActionError(format!("{e:#}")))?;
    let _ = ctx.started.send(process);
    let mut guard = KillOnDrop {
        runtime: ctx.runtime.clone(),
        container: ctx.container.clone(),
        process: Some(process),
    };
    let status = wait_for(ctx.runtime.as_ref(), &ctx.container, process).await;
    guard.process = None;
    status_result(&run.path, status)
}

/// Waits for a process started earlier (by this agent or by one before it).
pub async fn wait_for(
    runtime: &dyn ContainerRuntime,
    container: &str,
    process: ProcessId,
) -> ExitStatus {
    runtime
        .wait(container, process)
        .await
        .unwrap_or(ExitStatus::Lost)
}

pub fn status_result(path: &str, status: ExitStatus) -> Result<(), ActionError> {
    if status.success() {
        Ok(())
    } else {
        Err(ActionError(format!("{path}: {}", status.describe())))
    }
}

/// Kills a process whose action was abandoned before it ended.
struct KillOnDrop {
    runtime: Arc<dyn ContainerRuntime>,
    container: String,
    process: Option<ProcessId>,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            let runtime = self.runtime.clone();
            let container = std::mem::take(&mut self.container);
            tokio::spawn(async move {
                let _ = runtime.signal(&container, Some(process), 9).await;
            });
        }
    }
}

/// Downloads shared by a cell's containers: a cache keyed by `cache_key` (or the URL)
/// so a second container of the same LRP does not fetch again.
#[derive(Debug)]
pub struct Downloads {
    http: reqwest::Client,
    cache_dir: PathBuf,
    /// One fetch at a time per cache entry.
    locks: tokio::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Largest download accepted, so a hostile URL cannot fill the cell's disk.
const MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

impl Downloads {
    pub fn new(cache_dir: &Path) -> anyhow::Result<Downloads> {
        std::fs::create_dir_all(cache_dir)?;
        Ok(Downloads {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            cache_dir: cache_dir.to_path_buf(),
            locks: Default::default(),
        })
    }

    async fn fetch_into(
        &self,
        ctx: &Context,
        download: &DownloadAction,
    ) -> Result<(), ActionError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ActionError(format!("downloading {}: {what}: {e}", download.from))
        };
        let key = download
            .cache_key
            .clone()
            .unwrap_or_else(|| download.from.clone());
        let entry = self
            .cache_dir
            .join(hex(&sha2::Sha256::digest(key.as_bytes())));
        let lock = self
            .locks
            .lock()
            .await
            .entry(key.clone())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        let cached = match tokio::fs::metadata(&entry).await {
            Ok(_) => match &download.checksum {
                // A cached copy is used only if it still has the checksum asked for.
                Some(checksum) => verify(&entry, checksum.algorithm, &checksum.value)
                    .await
                    .is_ok(),
                None => download.cache_key.is_some(),
            },
            Err(_) => false,
        };
        if !cached {
            self.fetch(&download.from, &entry)
                .await
                .map_err(|e| fail("fetching", &format!("{e:#}")))?;
            if let Some(checksum) = &download.checksum
                && let Err(e) = verify(&entry, checksum.algorithm, &checksum.value).await
            {
                let _ = tokio::fs::remove_file(&entry).await;
                return Err(fail("checksum", &e));
            }
        }
        let root = ctx.root.clone();
        let to = download.to.clone();
        let source = entry.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut out = runtime::fs::create_in_root(&root, &to, 0o755)?;
            let mut input = std::fs::File::open(&source)?;
            std::io::copy(&mut input, &mut out)?;
            Ok(())
        })
        .await
        .map_err(|e| fail("copying", &e))?
        .map_err(|e| fail("copying into the container", &format!("{e:#}")))
    }

    /// Fetches `url` into `path` through a temporary file, so a failed fetch leaves no
    /// partial cache entry.
    async fn fetch(&self, url: &str, path: &Path) -> anyhow::Result<()> {
        let mut response = self.http.get(url).send().await?.error_for_status()?;
        let partial = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await?;
        let mut total = 0u64;
        let written: anyhow::Result<()> = async {
            while let Some(chunk) = response.chunk().await? {
                total += chunk.len() as u64;
                if total > MAX_DOWNLOAD_BYTES {
                    anyhow::bail!("larger than {MAX_DOWNLOAD_BYTES} bytes");
                }
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            Ok(())
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, path).await?;
        Ok(())
    }
}

async fn verify(path: &Path, algorithm: ChecksumAlgorithm, want: &str) -> Result<(), String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    let got = match algorithm {
        ChecksumAlgorithm::Sha256 => hex(&sha2::Sha256::digest(&bytes)),
        ChecksumAlgorithm::Sha512 => hex(&sha2::Sha512::digest(&bytes)),
    };
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
