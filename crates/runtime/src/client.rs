//! The agent's side of the helper protocol: an async client that sends requests, matches
//! replies by id, remembers how processes ended and fans out output to subscribers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{broadcast, oneshot};
use tracing::warn;

use crate::ContainerRuntime;
use crate::protocol::{self, ContainerState, Event, FromHelper, Op, Reply, ToHelper, VERSION};
use crate::spec::{
    ContainerInfo, ContainerSpec, ExitStatus, ProcessId, ProcessSpec, Stats, Stream, TtySize,
};

/// What subscribers hear from the helper.
#[derive(Debug, Clone)]
pub enum RuntimeEvent {
    Output {
        container: String,
        process: ProcessId,
        stream: Stream,
        /// The process was started with [`ProcessSpec::log`] set.
        log: bool,
        data: Arc<[u8]>,
    },
    Exited(ProcessEnd),
    ContainerDied {
        container: String,
    },
    /// The connection to the helper is gone: nothing more will arrive.
    HelperLost,
}

#[derive(Debug, Clone)]
pub struct ProcessEnd {
    pub container: String,
    pub process: ProcessId,
    pub status: ExitStatus,
}

type ProcessKey = (String, ProcessId);

#[derive(Debug, Default)]
struct Shared {
    pending: HashMap<u64, oneshot::Sender<Result<Reply, String>>>,
    exits: HashMap<ProcessKey, ExitStatus>,
    waiters: HashMap<ProcessKey, Vec<oneshot::Sender<ExitStatus>>>,
    next_id: u64,
    lost: bool,
}

/// A connection to a runtime helper.
#[derive(Debug)]
pub struct HelperClient {
    backend: String,
    helper_pid: i32,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    shared: Arc<Mutex<Shared>>,
    events: broadcast::Sender<RuntimeEvent>,
}

impl HelperClient {
    /// Connects to the helper listening on `socket`, starting it with `start` first if
    /// none listens there. The helper runs in its own process group so that it outlives
    /// this process and a terminal's Ctrl-C does not reach it.
    pub async fn connect_or_start(
        socket: &Path,
        mut start: std::process::Command,
        log: &Path,
    ) -> anyhow::Result<HelperClient> {
        if let Ok(client) = HelperClient::connect(socket).await {
            return Ok(client);
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        use std::os::unix::process::CommandExt;
        let mut child = start
            .stdin(StdStdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .context("starting the runtime helper")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match HelperClient::connect(socket).await {
                Ok(client) => {
                    // The helper is reparented when we exit; reap it if we outlive it.
                    std::thread::spawn(move || child.wait());
                    return Ok(client);
                }
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!(
                            "the runtime helper exited ({status}); its log is {}",
                            log.display()
                        );
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(e.context(format!(
                            "the runtime helper did not listen in time; its log is {}",
                            log.display()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }

    pub async fn connect(socket: &Path) -> anyhow::Result<HelperClient> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to the runtime helper at {}", socket.display()))?;
        let (mut reader, writer) = stream.into_split();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (events, _) = broadcast::channel(4096);
        let reader_shared = shared.clone();
        let reader_events = events.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 64 << 10];
            loop {
                match protocol::decode::<FromHelper>(&mut buf) {
                    Ok(Some(frame)) => {
                        dispatch(&reader_shared, &reader_events, frame);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!("the runtime helper sent a bad frame: {e}");
                        break;
                    }
                }
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            lose(&reader_shared, &reader_events);
        });
        let mut client = HelperClient {
            backend: String::new(),
            helper_pid: 0,
            writer: tokio::sync::Mutex::new(writer),
            shared,
            events,
        };
        match client.request(Op::Hello, Vec::new()).await? {
            Reply::Hello {
                version,
                backend,
                pid,
            } => {
                if version != VERSION {
                    bail!("the runtime helper speaks version {version}, this agent {VERSION}");
                }
                client.backend = backend;
                client.helper_pid = pid;
            }
            other => bail!("unexpected hello from the runtime helper: {other:?}"),
        }
        Ok(client)
    }

    pub fn helper_pid(&self) -> i32 {
        self.helper_pid
    }

    /// Asks the helper to destroy every container and exit.
    pub async fn shutdown(&self) -> anyhow::Result<()> {
        self.request(Op::Shutdown, Vec::new()).await.map(drop)
    }

    async fn request(&self, op: Op, payload: Vec<u8>) -> anyhow::Result<Reply> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut shared = self.shared.lock().expect("client state lock");
            if shared.lost {
                bail!("the runtime helper is gone");
            }
            shared.next_id += 1;
            let id = shared.next_id;
            shared.pending.insert(id, tx);
            id
        };
        let bytes = protocol::encode(&ToHelper::Request { id, op }, &payload);
        self.writer
            .lock()
            .await
            .write_all(&bytes)
            .await
            .context("writing to the runtime helper")?;
        rx.await
            .map_err(|_| anyhow!("the runtime helper is gone"))?
            .map_err(|e| anyhow!(e))
    }
}

fn dispatch(
    shared: &Mutex<Shared>,
    events: &broadcast::Sender<RuntimeEvent>,
    frame: protocol::Frame<FromHelper>,
) {
    match frame.header {
        FromHelper::Reply { id, result } => {
            let tx = shared
                .lock()
                .expect("client state lock")
                .pending
                .remove(&id);
            if let Some(tx) = tx {
                let _ = tx.send(result);
            }
        }
        FromHelper::Event(Event::Output {
            container,
            process,
            stream,
            log,
        }) => {
            let _ = events.send(RuntimeEvent::Output {
                container,
                process,
                stream,
                log,
                data: frame.payload.into(),
            });
        }
        FromHelper::Event(Event::Exited {
            container,
            process,
            status,
        }) => {
            let key = (container.clone(), process);
            let waiters = {
                let mut shared = shared.lock().expect("client state lock");
                shared.exits.insert(key.clone(), status);
                shared.waiters.remove(&key).unwrap_or_default()
            };
            for waiter in waiters {
                let _ = waiter.send(status);
            }
            let _ = events.send(RuntimeEvent::Exited(ProcessEnd {
                container,
                process,
                status,
            }));
        }
        FromHelper::Event(Event::ContainerDied { container }) => {
            let _ = events.send(RuntimeEvent::ContainerDied { container });
        }
    }
}

fn lose(shared: &Mutex<Shared>, events: &broadcast::Sender<RuntimeEvent>) {
    let waiters = {
        let mut shared = shared.lock().expect("client state lock");
        shared.lost = true;
        shared.pending.clear();
        std::mem::take(&mut shared.waiters)
    };
    for waiter in waiters.into_values().flatten() {
        let _ = waiter.send(ExitStatus::Lost);
    }
    let _ = events.send(RuntimeEvent::HelperLost);
}

#[async_trait]
impl ContainerRuntime for HelperClient {
    fn backend(&self) -> &str {
        &self.backend
    }

    async fn create(&self, spec: ContainerSpec) -> anyhow::Result<ContainerInfo> {
        match self.request(Op::Create { spec }, Vec::new()).await? {
            Reply::Created { info } => Ok(info),
            other => bail!("unexpected reply to create: {other:?}"),
        }
    }

    async fn spawn(&self, container: &str, process: ProcessSpec) -> anyhow::Result<ProcessId> {
        let op = Op::Spawn {
            container: container.to_owned(),
            process,
        };
        match self.request(op, Vec::new()).await? {
            Reply::Spawned { process } => Ok(process),
            other => bail!("unexpected reply to spawn: {other:?}"),
        }
    }

    async fn wait(&self, container: &str, process: ProcessId) -> anyhow::Result<ExitStatus> {
        let rx = {
            let mut shared = self.shared.lock().expect("client state lock");
            let key = (container.to_owned(), process);
            if let Some(status) = shared.exits.get(&key) {
                return Ok(*status);
            }
            if shared.lost {
                return Ok(ExitStatus::Lost);
            }
            let (tx, rx) = oneshot::channel();
            shared.waiters.entry(key).or_default().push(tx);
            rx
        };
        Ok(rx.await.unwrap_or(ExitStatus::Lost))
    }

    async fn signal(
        &self,
        container: &str,
        process: Option<ProcessId>,
        signal: i32,
    ) -> anyhow::Result<()> {
        let op = Op::Signal {
            container: container.to_owned(),
            process,
            signal,
        };
        self.request(op, Vec::new()).await.map(drop)
    }

    async fn input(
        &self,
        container: &str,
        process: ProcessId,
        data: Vec<u8>,
    ) -> anyhow::Result<()> {
        let op = Op::Input {
            container: container.to_owned(),
            process,
        };
        self.request(op, data).await.map(drop)
    }

    async fn resize(
        &self,
        container: &str,
        process: ProcessId,
        size: TtySize,
    ) -> anyhow::Result<()> {
        let op = Op::Resize {
            container: container.to_owned(),
            process,
            size,
        };
        self.request(op, Vec::new()).await.map(drop)
    }

    async fn destroy(&self, container: &str) -> anyhow::Result<()> {
        self.request(
            Op::Destroy {
                container: container.to_owned(),
            },
            Vec::new(),
        )
        .await?;
        // Forget how its processes ended: the container's id may be used again.
        let mut shared = self.shared.lock().expect("client state lock");
        shared.exits.retain(|(c, _), _| c != container);
        Ok(())
    }

    async fn stats(&self, container: &str) -> anyhow::Result<Stats> {
        let op = Op::Stats {
            container: container.to_owned(),
        };
        match self.request(op, Vec::new()).await? {
            Reply::Stats { stats } => Ok(stats),
            other => bail!("unexpected reply to stats: {other:?}"),
        }
    }

    async fn list(&self) -> anyhow::Result<Vec<ContainerState>> {
        let containers = match self.request(Op::List, Vec::new()).await? {
            Reply::List { containers } => containers,
            other => bail!("unexpected reply to list: {other:?}"),
        };
        // Processes that ended while nobody listened: remember them for `wait`.
        let mut shared = self.shared.lock().expect("client state lock");
        for c in &containers {
            for p in &c.processes {
                if let Some(exit) = p.exit {
                    shared.exits.insert((c.info.id.clone(), p.id), exit);
                }
            }
        }
        Ok(containers)
    }

    fn subscribe(&self) -> broadcast::Receiver<RuntimeEvent> {
        self.events.subscribe()
    }
}

/// Where a cell keeps its helper's socket and log.
pub fn helper_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join("helper.sock"), state_dir.join("helper.log"))
}
