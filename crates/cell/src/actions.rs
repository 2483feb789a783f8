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
    /// Every process started, setup's too, in order.
    pub spawned: Arc<std::sync::Mutex<Vec<ProcessId>>>,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), ActionError>> + Send + 'a>>;

/// Runs `action` to its end.
pub fn execute<'a>(ctx: &'a Context, action: &'a Action) -> Boxed<'a> {
    Box::pin(async move {
        match action {
            Action::Run(run) => run_process(ctx, run).await,
            // The work resolves these against the image before anything runs.
            Action::RunImage(_) => Err(ActionError(
                "run_image: the image's command was not resolved before running".to_owned(),
            )),
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
            // Validation refuses an empty group, but `select_all` would panic on one.
            Action::Codependent(actions) if actions.is_empty() => Ok(()),
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
        log: true,
    };
    let process = ctx
        .runtime
        .spawn(&ctx.container, spec)
        .await
        .map_err(|e| ActionError(format!("{e:#}")))?;
    let _ = ctx.started.send(process);
    ctx.spawned.lock().expect("spawned lock").push(process);
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
        // The URL is always part of the key: the cache is shared by every container on
        // the cell, and one must not fill another's entry with a different file.
        let key = match &download.cache_key {
            Some(cache_key) => format!("{cache_key}\n{}", download.from),
            None => download.from.clone(),
        };
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
            // Fetched and checked beside the entry, so that the cache never holds a
            // partial or unchecked file, even when this future is dropped half way.
            let partial = Partial(entry.with_extension("partial"));
            self.fetch(&download.from, &partial.0)
                .await
                .map_err(|e| fail("fetching", &format!("{e:#}")))?;
            if let Some(checksum) = &download.checksum {
                verify(&partial.0, checksum.algorithm, &checksum.value)
                    .await
                    .map_err(|e| fail("checksum", &e))?;
            }
            tokio::fs::rename(&partial.0, &entry)
                .await
                .map_err(|e| fail("caching", &e))?;
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

    /// Fetches `url` into `path`.
    async fn fetch(&self, url: &str, path: &Path) -> anyhow::Result<()> {
        let mut response = self.http.get(url).send().await?.error_for_status()?;
        let mut file = tokio::fs::File::create(path).await?;
        let mut total = 0u64;
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
}

/// A download's file before it is checked and renamed into the cache. Dropping it
/// removes the file if it is still there: the fetch failed, the checksum did not match
/// or the action was cancelled. The removal blocks, but only for one unlink.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checks the digest of the file at `path`, reading it piece by piece on a blocking
/// thread: a download may be gigabytes.
async fn verify(path: &Path, algorithm: ChecksumAlgorithm, want: &str) -> Result<(), String> {
    let path = path.to_path_buf();
    let got = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::open(&path)?;
        match algorithm {
            ChecksumAlgorithm::Sha256 => digest::<sha2::Sha256>(&mut file),
            ChecksumAlgorithm::Sha512 => digest::<sha2::Sha512>(&mut file),
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if got == want {
        Ok(())
    } else {
        Err(format!("expected {want}, got {got}"))
    }
}

fn digest<D: Digest + std::io::Write>(file: &mut std::fs::File) -> std::io::Result<String> {
    let mut hasher = D::new();
    std::io::copy(file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;
    use crate::fake::{FakeRuntime, TempDir};

    const CONTAINER: &str = "c1";

    /// A container on a fake runtime, with a root and a download cache of its own.
    struct Cell {
        fake: Arc<FakeRuntime>,
        ctx: Context,
        started: tokio::sync::mpsc::UnboundedReceiver<ProcessId>,
        dir: TempDir,
    }

    fn cell(env: &[(&str, &str)]) -> Cell {
        let dir = TempDir::new();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let downloads = Arc::new(Downloads::new(&dir.path().join("cache")).unwrap());
        let fake = FakeRuntime::new(CONTAINER);
        let (tx, started) = tokio::sync::mpsc::unbounded_channel();
        let ctx = Context {
            runtime: fake.clone(),
            container: CONTAINER.to_owned(),
            root,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            downloads,
            started: tx,
            spawned: Default::default(),
        };
        Cell {
            fake,
            ctx,
            started,
            dir,
        }
    }

    /// Parses an action, where `{"run": "exit 1"}` is short for
    /// `{"run": {"path": "exit", "args": ["1"]}}`. Objects pass through
    /// `serde_json::Value`, which sorts their keys (and so a run's `env`).
    fn parse(json: &str) -> Action {
        fn expand(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(node) => {
                    if let Some(serde_json::Value::String(line)) = node.get("run") {
                        let mut words = line.split_whitespace();
                        let path = words.next().expect("a run names a program");
                        let args: Vec<_> = words.collect();
                        let run = serde_json::json!({"path": path, "args": args});
                        node.insert("run".to_owned(), run);
                    }
                    node.values_mut().for_each(expand);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(expand),
                _ => {}
            }
        }
        let mut value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        expand(&mut value);
        serde_json::from_value(value).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn check_result(what: &str, got: &Result<(), ActionError>, expect: Result<(), &str>) {
        match (got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(part)) if e.0.contains(part) => {}
            _ => panic!("{what}: got {got:?}, expected {expect:?}"),
        }
    }

    /// Waits, within a deadline, until no fake process runs: an abandoned process is
    /// killed by a task of its own, after its action has ended.
    async fn settle(fake: &FakeRuntime, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !fake.running().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{what}: still running long after the action ended: {:?}",
                fake.running()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn sorted(mut lines: Vec<String>) -> Vec<String> {
        lines.sort();
        lines
    }

    /// An action, what it should return (`Err` holds a part of the message), the
    /// command lines it should start in order, and those it should kill.
    type Case = (
        &'static str,
        Result<(), &'static str>,
        &'static [&'static str],
        &'static [&'static str],
    );

    /// Runs each action on a fresh fake runtime. Besides the case's expectations, every
    /// process still running when the action returned must be one it killed (an
    /// action waits for what it does not abandon), none may outlive the action, and
    /// every start is told on `Context::started`.
    async fn check(cases: &[Case]) {
        for &(json, expect, started, killed) in cases {
            let Cell {
                fake,
                ctx,
                started: mut ids,
                dir: _dir,
            } = cell(&[]);
            let got = execute(&ctx, &parse(json)).await;
            let abandoned = fake.running();
            check_result(json, &got, expect);
            settle(&fake, json).await;
            assert_eq!(fake.started(), started, "{json}: started");
            let killed = sorted(killed.iter().map(|s| s.to_string()).collect());
            assert_eq!(sorted(fake.killed()), killed, "{json}: killed");
            for line in &abandoned {
                assert!(killed.contains(line), "{json}: {line} was not waited for");
            }
            let mut told = Vec::new();
            while let Ok(id) = ids.try_recv() {
                told.push(id);
            }
            let numbered: Vec<_> = (1..=started.len() as ProcessId).collect();
            assert_eq!(told, numbered, "{json}: processes told");
        }
    }

    #[tokio::test]
    async fn a_run_succeeds_when_its_process_exits_0() {
        check(&[
            (r#"{"run": "exit 0"}"#, Ok(()), &["exit 0"], &[]),
            (r#"{"run": "sleep 5"}"#, Ok(()), &["sleep 5"], &[]),
            (
                r#"{"run": "exit 3"}"#,
                Err("exit: exited with status 3"),
                &["exit 3"],
                &[],
            ),
            (
                r#"{"run": "nope"}"#,
                Err("fake runtime: no program nope"),
                &[],
                &[],
            ),
            (
                r#"{"run": "lose"}"#,
                Err("lose: the runtime lost the process"),
                &["lose"],
                &[],
            ),
        ])
        .await;
    }

    #[tokio::test]
    async fn serial_stops_at_the_first_failure() {
        check(&[
            (
                r#"{"serial": [{"run": "exit 0"}, {"run": "sleep 5"}, {"run": "exit 0"}]}"#,
                Ok(()),
                &["exit 0", "sleep 5", "exit 0"],
                &[],
            ),
            (
                r#"{"serial": [{"run": "exit 0"}, {"run": "exit 1"}, {"run": "exit 2"}]}"#,
                Err("exit: exited with status 1"),
                &["exit 0", "exit 1"],
                &[],
            ),
            (
                r#"{"serial": [{"run": "nope"}, {"run": "exit 0"}]}"#,
                Err("no program nope"),
                &[],
                &[],
            ),
            (r#"{"serial": []}"#, Ok(()), &[], &[]),
        ])
        .await;
    }

    #[tokio::test]
    async fn parallel_runs_all_and_waits_for_all() {
        check(&[
            (
                r#"{"parallel": [{"run": "exit 0"}, {"run": "sleep 5"}]}"#,
                Ok(()),
                &["exit 0", "sleep 5"],
                &[],
            ),
            // The sleep is neither killed nor left running: the failure waits for it.
            (
                r#"{"parallel": [{"run": "sleep 20"}, {"run": "exit 1"}, {"run": "exit 0"}]}"#,
                Err("exit: exited with status 1"),
                &["sleep 20", "exit 1", "exit 0"],
                &[],
            ),
            (
                r#"{"parallel": [{"serial": [{"run": "exit 0"}, {"run": "exit 2"}]}, {"run": "sleep 10"}]}"#,
                Err("exit: exited with status 2"),
                &["exit 0", "exit 2", "sleep 10"],
                &[],
            ),
            (r#"{"parallel": []}"#, Ok(()), &[], &[]),
        ])
        .await;
    }

    #[tokio::test]
    async fn codependent_stops_the_others_when_one_exits_and_always_fails() {
        check(&[
            (
                r#"{"codependent": [{"run": "forever"}, {"run": "exit 0"}]}"#,
                Err("a codependent action exited, so the others were stopped"),
                &["forever", "exit 0"],
                &["forever"],
            ),
            (
                r#"{"codependent": [{"run": "forever"}, {"run": "exit 1"}]}"#,
                Err("exit: exited with status 1"),
                &["forever", "exit 1"],
                &["forever"],
            ),
            (
                r#"{"codependent": [{"run": "sleep 10"}, {"run": "forever"}, {"run": "forever"}]}"#,
                Err("a codependent action exited"),
                &["sleep 10", "forever", "forever"],
                &["forever", "forever"],
            ),
            (
                r#"{"codependent": [{"run": "forever"}, {"serial": [{"run": "exit 0"}, {"run": "exit 7"}]}]}"#,
                Err("exit: exited with status 7"),
                &["forever", "exit 0", "exit 7"],
                &["forever"],
            ),
            // A child that ends at once ends the group before later children start.
            (
                r#"{"codependent": [{"try": {"run": "exit 1"}}, {"run": "forever"}]}"#,
                Err("a codependent action exited"),
                &["exit 1"],
                &[],
            ),
            (r#"{"codependent": []}"#, Ok(()), &[], &[]),
        ])
        .await;
    }

    #[tokio::test]
    async fn timeout_kills_its_child_and_fails() {
        check(&[
            (
                r#"{"timeout": {"action": {"run": "forever"}, "timeout_ms": 50}}"#,
                Err("timed out after 50 ms"),
                &["forever"],
                &["forever"],
            ),
            (
                r#"{"timeout": {"action": {"run": "exit 0"}, "timeout_ms": 10000}}"#,
                Ok(()),
                &["exit 0"],
                &[],
            ),
            (
                r#"{"timeout": {"action": {"run": "sleep 10"}, "timeout_ms": 10000}}"#,
                Ok(()),
                &["sleep 10"],
                &[],
            ),
            (
                r#"{"timeout": {"action": {"run": "exit 2"}, "timeout_ms": 10000}}"#,
                Err("exit: exited with status 2"),
                &["exit 2"],
                &[],
            ),
            (
                r#"{"timeout": {"action": {"serial": [{"run": "exit 0"}, {"run": "forever"}, {"run": "exit 0"}]}, "timeout_ms": 50}}"#,
                Err("timed out after 50 ms"),
                &["exit 0", "forever"],
                &["forever"],
            ),
            (
                r#"{"timeout": {"action": {"parallel": [{"run": "forever"}, {"run": "exit 0"}]}, "timeout_ms": 50}}"#,
                Err("timed out after 50 ms"),
                &["forever", "exit 0"],
                &["forever"],
            ),
        ])
        .await;
    }

    #[tokio::test]
    async fn try_swallows_a_failure() {
        check(&[
            (r#"{"try": {"run": "exit 1"}}"#, Ok(()), &["exit 1"], &[]),
            (r#"{"try": {"run": "nope"}}"#, Ok(()), &[], &[]),
            (
                r#"{"try": {"timeout": {"action": {"run": "forever"}, "timeout_ms": 50}}}"#,
                Ok(()),
                &["forever"],
                &["forever"],
            ),
            (
                r#"{"serial": [{"try": {"run": "exit 1"}}, {"run": "exit 0"}]}"#,
                Ok(()),
                &["exit 1", "exit 0"],
                &[],
            ),
            (
                r#"{"serial": [{"try": {"run": "exit 1"}}, {"run": "exit 4"}]}"#,
                Err("exit: exited with status 4"),
                &["exit 1", "exit 4"],
                &[],
            ),
        ])
        .await;
    }

    #[tokio::test]
    async fn nested_actions_compose() {
        check(&[
            (
                r#"{"serial": [
                    {"parallel": [{"run": "exit 0"}, {"run": "sleep 5"}]},
                    {"codependent": [{"run": "forever"}, {"run": "exit 0"}]},
                    {"run": "exit 0"}
                ]}"#,
                Err("a codependent action exited"),
                &["exit 0", "sleep 5", "forever", "exit 0"],
                &["forever"],
            ),
            (
                r#"{"serial": [
                    {"try": {"codependent": [{"run": "forever"}, {"run": "exit 0"}]}},
                    {"run": "exit 9"}
                ]}"#,
                Err("exit: exited with status 9"),
                &["forever", "exit 0", "exit 9"],
                &["forever"],
            ),
            (
                r#"{"codependent": [
                    {"timeout": {"action": {"run": "forever"}, "timeout_ms": 50}},
                    {"run": "forever"}
                ]}"#,
                Err("timed out after 50 ms"),
                &["forever", "forever"],
                &["forever", "forever"],
            ),
            (
                r#"{"parallel": [
                    {"codependent": [{"run": "forever"}, {"run": "exit 1"}]},
                    {"try": {"timeout": {"action": {"run": "forever"}, "timeout_ms": 50}}},
                    {"run": "exit 0"}
                ]}"#,
                Err("exit: exited with status 1"),
                &["forever", "exit 1", "forever", "exit 0"],
                &["forever", "forever"],
            ),
        ])
        .await;
    }

    #[tokio::test]
    async fn dropping_an_action_kills_its_processes() {
        let cell = cell(&[]);
        let action = parse(
            r#"{"serial": [
                {"run": "exit 0"},
                {"parallel": [{"run": "forever"}, {"try": {"run": "forever"}}, {"run": "exit 0"}]}
            ]}"#,
        );
        let mut run = execute(&cell.ctx, &action);
        assert!(futures::poll!(&mut run).is_pending());
        assert_eq!(cell.fake.running(), ["forever", "forever"]);
        drop(run);
        settle(&cell.fake, "the dropped action").await;
        assert_eq!(cell.fake.killed(), ["forever", "forever"]);
    }

    #[tokio::test]
    async fn a_run_gets_the_context_env_then_its_own() {
        let cell = cell(&[("HOME", "/home/vcap"), ("PORT", "8080")]);
        // Parsed directly, as `parse` would sort the names.
        let action: Action = serde_json::from_str(
            r#"{"run": {
                "path": "exit", "args": ["0"], "dir": "/app", "user": "vcap",
                "env": {"PORT": "9090", "LANG": "C"},
                "limits": {"nofile": 1024, "nproc": 64}
            }}"#,
        )
        .unwrap();
        execute(&cell.ctx, &action).await.unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let spec = ProcessSpec {
            path: "exit".to_owned(),
            args: vec!["0".to_owned()],
            dir: Some("/app".to_owned()),
            // The runtime lets a later variable override an earlier one of the same name.
            env: env(&[
                ("HOME", "/home/vcap"),
                ("PORT", "8080"),
                ("PORT", "9090"),
                ("LANG", "C"),
            ]),
            user: Some("vcap".to_owned()),
            nofile: Some(1024),
            nproc: Some(64),
            tty: None,
            log: true,
        };
        assert_eq!(cell.fake.specs(), [spec]);
    }

    const TOOL: &[u8] = b"#!/bin/sh\necho a downloaded tool\n";

    /// An HTTP server to download from: `/tool` is [`TOOL`], `/stall` sends a few bytes
    /// and then nothing, anything else is not found. It logs every request's path.
    struct Origin {
        url: String,
        requests: Arc<Mutex<Vec<String>>>,
    }

    impl Origin {
        async fn start() -> Origin {
            use axum::body::{Body, Bytes};
            use axum::http::{StatusCode, Uri};

            let requests = Arc::new(Mutex::new(Vec::new()));
            let log = requests.clone();
            let app = axum::Router::new().fallback(move |uri: Uri| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(uri.path().to_owned());
                    match uri.path() {
                        "/tool" => (StatusCode::OK, Body::from(TOOL)),
                        "/stall" => {
                            let first = futures::stream::once(async {
                                Ok::<_, std::convert::Infallible>(Bytes::from_static(b"#!/bin"))
                            });
                            let stall =
                                futures::StreamExt::chain(first, futures::stream::pending());
                            (StatusCode::OK, Body::from_stream(stall))
                        }
                        _ => (StatusCode::NOT_FOUND, Body::from("no such file")),
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Origin { url, requests }
        }

        fn requests(&self) -> usize {
            self.requests.lock().unwrap().len()
        }
    }

    /// The files in a download cache, split into entries and partial files.
    fn cache_files(cell: &Cell) -> (Vec<PathBuf>, Vec<PathBuf>) {
        std::fs::read_dir(cell.dir.path().join("cache"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .partition(|path| path.extension().is_none_or(|e| e != "partial"))
    }

    fn downloads_in(action: &Action) -> Vec<&DownloadAction> {
        match action {
            Action::Download(download) => vec![download],
            Action::Run(_) | Action::RunImage(_) => vec![],
            Action::Serial(actions) | Action::Parallel(actions) | Action::Codependent(actions) => {
                actions.iter().flat_map(downloads_in).collect()
            }
            Action::Timeout { action, .. } | Action::Try(action) => downloads_in(action),
        }
    }

    /// The permission bits this process gives a file created with `mode`.
    fn masked(mode: u32) -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))
            .map(|umask| u32::from_str_radix(umask.trim(), 8).unwrap())
            .expect("Linux tells a process its umask");
        mode & !umask
    }

    /// Downloads one after another into one container sharing one cache: each step is an
    /// action (where `$ORIGIN`, `$SHA256` and `$SHA512` stand for the origin's URL and
    /// digests of [`TOOL`]), its result (`Err` holds a part of the message), the
    /// requests the origin has had so far and the entries in the cache. A download
    /// that succeeds leaves [`TOOL`] at its `to` with mode 0755; one that fails leaves
    /// nothing there; none leaves a partial file in the cache.
    #[tokio::test]
    async fn downloads_are_cached_checked_and_kept_in_the_root() {
        let steps: &[(&str, Result<(), &str>, usize, usize)] = &[
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/bin/tool", "cache_key": "tool",
                    "checksum": {"algorithm": "sha256", "value": "$SHA256"}}}"#,
                Ok(()),
                1,
                1,
            ),
            // A second container of the same LRP: the checked cache entry is reused.
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/again", "cache_key": "tool",
                    "checksum": {"algorithm": "sha256", "value": "$SHA256"}}}"#,
                Ok(()),
                1,
                1,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/unchecked", "cache_key": "tool"}}"#,
                Ok(()),
                1,
                1,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/512", "cache_key": "tool-512",
                    "checksum": {"algorithm": "sha512", "value": "$SHA512"}}}"#,
                Ok(()),
                2,
                2,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/bad", "cache_key": "bad",
                    "checksum": {"algorithm": "sha256", "value": "0000000000000000000000000000000000000000000000000000000000000000"}}}"#,
                Err("checksum"),
                3,
                2,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/missing", "to": "/app/missing", "cache_key": "missing"}}"#,
                Err("404 Not Found"),
                4,
                2,
            ),
            // Without a cache key or a checksum nothing says the cached copy is current.
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/by-url"}}"#,
                Ok(()),
                5,
                3,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/by-url"}}"#,
                Ok(()),
                6,
                3,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/by-url-checked",
                    "checksum": {"algorithm": "sha256", "value": "$SHA256"}}}"#,
                Ok(()),
                6,
                3,
            ),
            // Two downloads of one cache key at once fetch it once.
            (
                r#"{"parallel": [
                    {"download": {"from": "$ORIGIN/tool", "to": "/app/one", "cache_key": "shared"}},
                    {"download": {"from": "$ORIGIN/tool", "to": "/app/two", "cache_key": "shared"}}
                ]}"#,
                Ok(()),
                7,
                4,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/app/../../escaped", "cache_key": "tool"}}"#,
                Err("must not contain '..'"),
                7,
                4,
            ),
            (
                r#"{"download": {"from": "$ORIGIN/tool", "to": "/", "cache_key": "tool"}}"#,
                Err("does not name a file"),
                7,
                4,
            ),
        ];
        let origin = Origin::start().await;
        let cell = cell(&[]);
        for &(json, expect, requests, entries) in steps {
            let json = json
                .replace("$ORIGIN", &origin.url)
                .replace("$SHA256", &hex(&sha2::Sha256::digest(TOOL)))
                .replace("$SHA512", &hex(&sha2::Sha512::digest(TOOL)));
            let action = parse(&json);
            let got = execute(&cell.ctx, &action).await;
            check_result(&json, &got, expect);
            assert_eq!(origin.requests(), requests, "{json}: requests so far");
            let (cached, partial) = cache_files(&cell);
            assert_eq!(cached.len(), entries, "{json}: cache entries {cached:?}");
            assert_eq!(partial, Vec::<PathBuf>::new(), "{json}: partial files");
            for download in downloads_in(&action) {
                let to = cell.ctx.root.join(download.to.trim_start_matches('/'));
                if got.is_ok() {
                    assert_eq!(std::fs::read(&to).unwrap(), TOOL, "{json}: content");
                    let mode = std::fs::metadata(&to).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, masked(0o755), "{json}: mode");
                } else {
                    assert!(!to.is_file(), "{json}: {} was written", to.display());
                }
            }
        }
        assert!(!cell.dir.path().join("escaped").exists());
    }

    #[tokio::test]
    async fn a_cached_copy_that_no_longer_matches_is_fetched_again() {
        let origin = Origin::start().await;
        let cell = cell(&[]);
        let action = parse(
            &r#"{"download": {"from": "$ORIGIN/tool", "to": "/tool", "cache_key": "tool",
                "checksum": {"algorithm": "sha256", "value": "$SHA256"}}}"#
                .replace("$ORIGIN", &origin.url)
                .replace("$SHA256", &hex(&sha2::Sha256::digest(TOOL))),
        );
        execute(&cell.ctx, &action).await.unwrap();
        let (cached, _) = cache_files(&cell);
        let [entry] = cached.as_slice() else {
            panic!("one cache entry expected, found {cached:?}");
        };
        std::fs::write(entry, "damaged").unwrap();
        execute(&cell.ctx, &action).await.unwrap();
        assert_eq!(origin.requests(), 2);
        assert_eq!(std::fs::read(entry).unwrap(), TOOL);
        assert_eq!(std::fs::read(cell.ctx.root.join("tool")).unwrap(), TOOL);
    }

    #[tokio::test]
    async fn a_cancelled_download_leaves_no_partial_file() {
        let origin = Origin::start().await;
        let cell = cell(&[]);
        let action = parse(
            &r#"{"download": {"from": "$ORIGIN/stall", "to": "/tool", "cache_key": "stall"}}"#
                .replace("$ORIGIN", &origin.url),
        );
        let mut run = execute(&cell.ctx, &action);
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache_files(&cell).1.is_empty() {
            assert!(Instant::now() < deadline, "the download never began");
            tokio::select! {
                got = &mut run => panic!("a stalled download ended: {got:?}"),
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
        drop(run);
        assert_eq!(cache_files(&cell), (vec![], vec![]));
        assert!(!cell.ctx.root.join("tool").exists());
    }
}
