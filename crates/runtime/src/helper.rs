//! The runtime helper: a single-threaded process that owns a cell's containers.
//!
//! It listens on a Unix socket, makes containers and starts processes through its
//! [`Backend`], holds the pipes of every process and forwards their output, reaps every
//! exit (it is the parent of all of them) and tells connected agents. It keeps running
//! when the agent goes away, so a restarted agent finds its containers here.
//!
//! Everything happens in one `poll` loop, one event at a time: no threads, so backends
//! may fork.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::backend::{Backend, Stdio};
use crate::protocol::{
    self, ContainerState, Event, FromHelper, Op, ProcessState, Reply, ToHelper, VERSION,
};
use crate::spec::{
    ContainerId, ContainerInfo, ExitStatus, ProcessId, ProcessSpec, Stream, TtySize,
    check_container_id,
};
use crate::terminal;

/// A client whose unsent output grows past this is too slow to keep: it is dropped
/// (its agent reconnects and lists).
const MAX_CLIENT_BACKLOG: usize = 64 << 20;
/// A helper with no containers and no agent for this long exits: nothing can need it.
const IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(30);
/// Longest a killed container's teardown waits for the helper to be idle.
const TEARDOWN_DELAY_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most bytes read from one pipe per wakeup, so one chatty process cannot starve others.
const READ_CHUNK: usize = 64 << 10;
/// Most input held for a process that has not read it yet (its pipe or terminal is
/// full). Input past it is refused: it comes faster than the command reads.
const MAX_PENDING_INPUT: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct HelperConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Destroy every container and exit once no agent has been connected for this
    /// long (`corral dev`, whose containers must not outlive it). `None` keeps the
    /// containers for an agent that restarts (`corral cell`).
    pub orphan_timeout: Option<std::time::Duration>,
}

/// Runs the helper until a `Shutdown` request. Blocks; call it from the main thread of
/// a process that has started no other threads.
pub fn run(config: HelperConfig, backend: Box<dyn Backend>) -> anyhow::Result<()> {
    let mut helper = Helper::start(config, backend)?;
    helper.serve()
}

struct Helper {
    config: HelperConfig,
    backend: Box<dyn Backend>,
    listener: UnixListener,
    signals: SignalFd,
    clients: BTreeMap<u64, Client>,
    next_client: u64,
    containers: BTreeMap<ContainerId, Container>,
    /// Every live child we started, by pid.
    children: HashMap<Pid, Child>,
    /// Output pipes still open, keyed by a serial.
    pipes: BTreeMap<u64, Pipe>,
    next_pipe: u64,
    /// Containers killed and forgotten whose teardown (unmounts, cgroups, network) is
    /// still to do: done when no request waits, so a destroy never delays a start.
    doomed: std::collections::VecDeque<(ContainerId, std::time::Instant)>,
    /// Processes with input waiting for room in their pipe or terminal.
    inputs: std::collections::BTreeSet<(ContainerId, ProcessId)>,
    shutting_down: bool,
}

struct Client {
    stream: UnixStream,
    inbox: Vec<u8>,
    outbox: Vec<u8>,
}

struct Container {
    info: ContainerInfo,
    init: Option<Pid>,
    processes: BTreeMap<ProcessId, Process>,
    next_process: ProcessId,
    oom_kills: u64,
    dead: bool,
}

struct Process {
    path: String,
    pid: Pid,
    stdin: Option<std::fs::File>,
    /// The master side of the process's terminal, when it has one: input is written
    /// to it and resizes are made on it (its output is read from a duplicate in
    /// `pipes`).
    terminal: Option<std::fs::File>,
    /// Input not written yet because the pipe or terminal was full (a terminal's
    /// input queue holds 4 KiB, so a paste fills it): written as it drains.
    input: Vec<u8>,
    /// Close stdin once `input` is written: the end of input came after it.
    close_stdin: bool,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Writes what `input` holds, as far as the pipe or terminal takes it now. A
    /// command that closed its input (a broken pipe) reads no more: the rest is dropped.
    fn flush_input(&mut self) {
        let mut broken = false;
        if let Some(file) = self.terminal.as_mut().or(self.stdin.as_mut()) {
            while !self.input.is_empty() {
                match file.write(&self.input) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.input.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        } else {
            broken = true;
        }
        if broken {
            self.input.clear();
            self.stdin = None;
        }
        if self.input.is_empty() && self.close_stdin {
            self.stdin = None;
            self.close_stdin = false;
        }
    }
}

/// A process a backend just started, with the helper's ends of its streams.
struct Started {
    pid: Pid,
    stdin: Option<std::fs::File>,
    terminal: Option<std::fs::File>,
    outputs: Vec<(OwnedFd, Stream)>,
}

enum Child {
    Init(ContainerId),
    Process(ContainerId, ProcessId),
}

struct Pipe {
    file: std::fs::File,
    container: ContainerId,
    process: ProcessId,
    stream: Stream,
    log: bool,
}

enum Source {
    Listener,
    Signals,
    Client(u64),
    Pipe(u64),
    /// A process's stdin or terminal, with input waiting for room.
    Input(ContainerId, ProcessId),
}

impl Helper {
    fn start(config: HelperConfig, mut backend: Box<dyn Backend>) -> anyhow::Result<Helper> {
        std::fs::create_dir_all(&config.state_dir)
            .with_context(|| format!("creating {}", config.state_dir.display()))?;
        for id in backend.leftovers(&config.state_dir) {
            info!(container = %id, "destroying a container left by an earlier helper");
            if let Err(e) = backend.destroy(&id) {
                warn!(container = %id, "could not destroy a leftover container: {e:#}");
            }
        }
        // SIGCHLD is read from a descriptor in the loop instead of interrupting it.
        // SIGTERM and SIGINT too: they destroy every container before the helper exits.
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().context("blocking signals")?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("signalfd")?;
        if UnixStream::connect(&config.socket).is_ok() {
            anyhow::bail!(
                "another runtime helper already listens on {}",
                config.socket.display()
            );
        }
        let _ = std::fs::remove_file(&config.socket);
        let listener = UnixListener::bind(&config.socket)
            .with_context(|| format!("listening on {}", config.socket.display()))?;
        listener.set_nonblocking(true)?;
        info!(backend = backend.name(), socket = %config.socket.display(), "runtime helper ready");
        Ok(Helper {
            config,
            backend,
            listener,
            signals,
            clients: BTreeMap::new(),
            next_client: 0,
            containers: BTreeMap::new(),
            children: HashMap::new(),
            pipes: BTreeMap::new(),
            next_pipe: 0,
            doomed: std::collections::VecDeque::new(),
            inputs: std::collections::BTreeSet::new(),
            shutting_down: false,
        })
    }

    fn serve(&mut self) -> anyhow::Result<()> {
        let mut idle_since = std::time::Instant::now();
        let mut alone_since = std::time::Instant::now();
        while !self.shutting_down {
            if !self.clients.is_empty() {
                alone_since = std::time::Instant::now();
            } else if let Some(timeout) = self.config.orphan_timeout
                && alone_since.elapsed() >= timeout
            {
                info!("no agent for {timeout:?}: destroying every container and exiting");
                let _ = self.handle(Op::Shutdown, Vec::new());
                break;
            }
            if !(self.containers.is_empty() && self.clients.is_empty()) {
                idle_since = std::time::Instant::now();
            } else if idle_since.elapsed() >= IDLE_EXIT {
                info!("no containers and no agent for {IDLE_EXIT:?}: exiting");
                break;
            }
            let mut sources = vec![Source::Listener, Source::Signals];
            let mut fds: Vec<(BorrowedFd<'_>, PollFlags)> = vec![
                (self.listener.as_fd(), PollFlags::POLLIN),
                (self.signals.as_fd(), PollFlags::POLLIN),
            ];
            for (id, client) in &self.clients {
                let mut flags = PollFlags::POLLIN;
                if !client.outbox.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                sources.push(Source::Client(*id));
                fds.push((client.stream.as_fd(), flags));
            }
            for (id, pipe) in &self.pipes {
                sources.push(Source::Pipe(*id));
                fds.push((pipe.file.as_fd(), PollFlags::POLLIN));
            }
            for (container, process) in &self.inputs {
                let file = self
                    .containers
                    .get(container)
                    .and_then(|c| c.processes.get(process))
                    .and_then(|p| p.terminal.as_ref().or(p.stdin.as_ref()));
                if let Some(file) = file {
                    sources.push(Source::Input(container.clone(), *process));
                    fds.push((file.as_fd(), PollFlags::POLLOUT));
                }
            }
            let mut pollfds: Vec<PollFd<'_>> = fds
                .iter()
                .map(|(fd, flags)| PollFd::new(*fd, *flags))
                .collect();
            // With teardowns to do, only look for what is ready now; otherwise wake up
            // now and then while idle, to notice that it has lasted.
            let timeout = if self.doomed.is_empty() {
                PollTimeout::from(1000u16)
            } else {
                PollTimeout::ZERO
            };
            match poll(&mut pollfds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            let ready: Vec<(usize, PollFlags)> = pollfds
                .iter()
                .enumerate()
                .filter_map(|(i, fd)| fd.revents().filter(|r| !r.is_empty()).map(|r| (i, r)))
                .collect();
            drop(pollfds);
            drop(fds);
            let idle = ready.is_empty();
            for (i, revents) in ready {
                match &sources[i] {
                    Source::Listener => self.accept(),
                    Source::Signals => self.signalled(),
                    Source::Client(id) => self.client_ready(*id, revents),
                    Source::Pipe(id) => self.pipe_ready(*id),
                    Source::Input(container, process) => self.write_input(container, *process),
                }
            }
            // Input of processes that ended or went with their container waits no more.
            let containers = &self.containers;
            self.inputs.retain(|(container, process)| {
                containers
                    .get(container)
                    .and_then(|c| c.processes.get(process))
                    .is_some_and(|p| !p.input.is_empty())
            });
            // A busy helper still tears down what has waited too long.
            let overdue = self
                .doomed
                .front()
                .is_some_and(|(_, since)| since.elapsed() > TEARDOWN_DELAY_LIMIT);
            if (idle || overdue)
                && let Some((id, _)) = self.doomed.pop_front()
            {
                self.tear_down(&id);
            }
        }
        for (id, _) in std::mem::take(&mut self.doomed) {
            self.tear_down(&id);
        }
        // Nothing is left for this cell: remove what the backend made for it.
        if let Err(e) = self.backend.teardown() {
            warn!("tearing the cell's runtime down: {e:#}");
        }
        // Flush the last replies (the Shutdown answer) before exiting.
        for client in self.clients.values_mut() {
            let _ = client.stream.set_nonblocking(false);
            let _ = client.stream.write_all(&client.outbox);
        }
        let _ = std::fs::remove_file(&self.config.socket);
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    self.next_client += 1;
                    self.clients.insert(
                        self.next_client,
                        Client {
                            stream,
                            inbox: Vec::new(),
                            outbox: Vec::new(),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept: {e}");
                    return;
                }
            }
        }
    }

    fn client_ready(&mut self, id: u64, revents: PollFlags) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let mut closed = false;
        if revents.contains(PollFlags::POLLOUT) {
            match client.stream.write(&client.outbox) {
                Ok(n) => {
                    client.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => closed = true,
            }
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            let mut buf = [0u8; 64 << 10];
            loop {
                match client.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => client.inbox.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        let mut frames = Vec::new();
        loop {
            match protocol::decode::<ToHelper>(&mut client.inbox) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    warn!("dropping a client that sent a bad frame: {e}");
                    closed = true;
                    break;
                }
            }
        }
        for frame in frames {
            let ToHelper::Request { id: request, op } = frame.header;
            let result = self.handle(op, frame.payload);
            self.send_to(
                id,
                &FromHelper::Reply {
                    id: request,
                    result,
                },
                &[],
            );
        }
        if closed {
            self.clients.remove(&id);
        }
    }

    fn handle(&mut self, op: Op, payload: Vec<u8>) -> Result<Reply, String> {
        match op {
            Op::Hello => Ok(Reply::Hello {
                version: VERSION,
                backend: self.backend.name().to_owned(),
                pid: std::process::id() as i32,
            }),
            Op::Create { spec } => {
                check_container_id(&spec.id)?;
                if let Some(i) = self.doomed.iter().position(|(d, _)| *d == spec.id) {
                    let (id, _) = self.doomed.remove(i).expect("the position was just found");
                    self.tear_down(&id);
                }
                if self.containers.contains_key(&spec.id) {
                    return Err(format!("container {} already exists", spec.id));
                }
                let created = self
                    .backend
                    .create(&spec)
                    .map_err(|e| format!("creating container {}: {e:#}", spec.id))?;
                if let Some(init) = created.init {
                    self.children.insert(init, Child::Init(spec.id.clone()));
                }
                let oom_kills = self.backend.oom_kills(&spec.id);
                self.containers.insert(
                    spec.id.clone(),
                    Container {
                        info: created.info.clone(),
                        init: created.init,
                        processes: BTreeMap::new(),
                        next_process: 1,
                        oom_kills,
                        dead: false,
                    },
                );
                Ok(Reply::Created { info: created.info })
            }
            Op::Spawn { container, process } => self
                .spawn(&container, &process)
                .map(|process| Reply::Spawned { process }),
            Op::Signal {
                container,
                process,
                signal,
            } => {
                let signal = Signal::try_from(signal).map_err(|_| format!("no signal {signal}"))?;
                let c = self.container(&container)?;
                match process {
                    Some(p) => {
                        let process = c
                            .processes
                            .get(&p)
                            .ok_or_else(|| format!("container {container} has no process {p}"))?;
                        if process.exit.is_none() {
                            kill(process.pid, signal).map_err(|e| format!("kill: {e}"))?;
                        }
                    }
                    None => self
                        .backend
                        .signal_all(&container, signal)
                        .map_err(|e| format!("signalling {container}: {e:#}"))?,
                }
                Ok(Reply::Done)
            }
            Op::Input {
                container,
                process: process_id,
            } => {
                let c = self
                    .containers
                    .get_mut(&container)
                    .ok_or_else(|| format!("no container {container}"))?;
                let process = c
                    .processes
                    .get_mut(&process_id)
                    .ok_or_else(|| format!("container {container} has no process {process_id}"))?;
                let bytes = match (&process.terminal, payload.is_empty()) {
                    // A terminal stays open: its end of input is a character.
                    (Some(_), true) => &[terminal::EOF][..],
                    (None, true) => {
                        // End of input, once what waits is written.
                        if process.input.is_empty() {
                            process.stdin = None;
                        } else {
                            process.close_stdin = true;
                        }
                        return Ok(Reply::Done);
                    }
                    (_, false) => &payload[..],
                };
                if process.terminal.is_none() && process.stdin.is_none() {
                    // Ended, or its input was closed: nothing reads it.
                    return Ok(Reply::Done);
                }
                if process.input.len() + bytes.len() > MAX_PENDING_INPUT {
                    return Err(format!(
                        "process {process_id} of container {container} has not read the last {} bytes of its input",
                        process.input.len()
                    ));
                }
                process.input.extend_from_slice(bytes);
                process.flush_input();
                if !process.input.is_empty() {
                    self.inputs.insert((container, process_id));
                }
                Ok(Reply::Done)
            }
            Op::Resize {
                container,
                process,
                size,
            } => {
                let c = self.container(&container)?;
                let p = c
                    .processes
                    .get(&process)
                    .ok_or_else(|| format!("container {container} has no process {process}"))?;
                let terminal = p.terminal.as_ref().ok_or_else(|| {
                    format!("process {process} of container {container} has no terminal")
                })?;
                if p.exit.is_none() {
                    terminal::set_size(terminal, size)
                        .map_err(|e| format!("resizing the terminal: {e}"))?;
                }
                Ok(Reply::Done)
            }
            Op::Destroy { container } => {
                self.destroy(&container)?;
                Ok(Reply::Done)
            }
            Op::Stats { container } => {
                self.container(&container)?;
                self.backend
                    .stats(&container)
                    .map(|stats| Reply::Stats { stats })
                    .map_err(|e| format!("stats of {container}: {e:#}"))
            }
            Op::List => Ok(Reply::List {
                containers: self
                    .containers
                    .values()
                    .map(|c| ContainerState {
                        info: c.info.clone(),
                        dead: c.dead,
                        processes: c
                            .processes
                            .iter()
                            .map(|(id, p)| ProcessState {
                                id: *id,
                                path: p.path.clone(),
                                exit: p.exit,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
            Op::Shutdown => {
                let ids: Vec<ContainerId> = self.containers.keys().cloned().collect();
                for id in ids {
                    if let Err(e) = self.destroy(&id) {
                        warn!("{e}");
                    }
                }
                self.shutting_down = true;
                Ok(Reply::Done)
            }
        }
    }

    fn container(&self, id: &str) -> Result<&Container, String> {
        self.containers
            .get(id)
            .ok_or_else(|| format!("no container {id}"))
    }

    fn spawn(&mut self, id: &str, spec: &ProcessSpec) -> Result<ProcessId, String> {
        let container = self.container(id)?;
        if container.dead {
            return Err(format!("container {id} is dead"));
        }
        let info = container.info.clone();
        let started = match spec.tty {
            Some(size) => self.start_on_terminal(&info, spec, size)?,
            None => self.start_with_pipes(&info, spec)?,
        };
        let container = self
            .containers
            .get_mut(id)
            .expect("the container was looked up above");
        let process = container.next_process;
        container.next_process += 1;
        container.processes.insert(
            process,
            Process {
                path: spec.path.clone(),
                pid: started.pid,
                stdin: started.stdin,
                terminal: started.terminal,
                input: Vec::new(),
                close_stdin: false,
                exit: None,
            },
        );
        self.children
            .insert(started.pid, Child::Process(id.to_owned(), process));
        for (fd, stream) in started.outputs {
            self.next_pipe += 1;
            self.pipes.insert(
                self.next_pipe,
                Pipe {
                    file: std::fs::File::from(fd),
                    container: id.to_owned(),
                    process,
                    stream,
                    log: spec.log,
                },
            );
        }
        Ok(process)
    }

    fn start_with_pipes(
        &mut self,
        info: &ContainerInfo,
        spec: &ProcessSpec,
    ) -> Result<Started, String> {
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        for fd in [&stdin_write, &stdout_read, &stderr_read] {
            set_nonblocking(fd).map_err(|e| format!("pipe: {e}"))?;
        }
        let pid = self
            .backend
            .spawn(
                info,
                spec,
                Stdio {
                    stdin: stdin_read,
                    stdout: stdout_write,
                    stderr: stderr_write,
                },
            )
            .map_err(|e| format!("starting {} in {}: {e:#}", spec.path, info.id))?;
        Ok(Started {
            pid,
            stdin: Some(std::fs::File::from(stdin_write)),
            terminal: None,
            outputs: vec![(stdout_read, Stream::Stdout), (stderr_read, Stream::Stderr)],
        })
    }

    fn start_on_terminal(
        &mut self,
        info: &ContainerInfo,
        spec: &ProcessSpec,
        size: TtySize,
    ) -> Result<Started, String> {
        let (pid, master) = self
            .backend
            .spawn_terminal(info, spec, size)
            .map_err(|e| format!("starting {} in {}: {e:#}", spec.path, info.id))?;
        // Both descriptors share one open file, so both are non-blocking.
        let output = set_nonblocking(&master)
            .and_then(|()| master.try_clone())
            .map_err(|e| format!("setting up the terminal of {}: {e}", spec.path));
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                // Nobody could reach it; it is reaped as an unknown child.
                let _ = kill(pid, Signal::SIGKILL);
                return Err(e);
            }
        };
        Ok(Started {
            pid,
            stdin: None,
            terminal: Some(std::fs::File::from(master)),
            // A terminal has one output stream.
            outputs: vec![(output, Stream::Stdout)],
        })
    }

    /// Kills everything in the container and forgets it at once; the rest of its
    /// teardown waits until nothing else does (see `doomed`).
    fn destroy(&mut self, id: &str) -> Result<(), String> {
        let id = id.to_owned();
        if self.containers.contains_key(&id)
            && let Err(e) = self.backend.signal_all(&id, Signal::SIGKILL)
        {
            // The teardown kills whatever this could not.
            warn!(container = %id, "killing before teardown: {e:#}");
        }
        // Its pipes close as its processes died; drop them now so no late output is
        // attributed to a container that is gone.
        self.pipes.retain(|_, pipe| pipe.container != id);
        self.containers.remove(&id);
        if !self.doomed.iter().any(|(d, _)| *d == id) {
            self.doomed.push_back((id, std::time::Instant::now()));
        }
        Ok(())
    }

    fn tear_down(&mut self, id: &ContainerId) {
        if let Err(e) = self.backend.destroy(id) {
            warn!(container = %id, "destroying: {e:#}");
        }
    }

    fn pipe_ready(&mut self, id: u64) {
        let Some(pipe) = self.pipes.get_mut(&id) else {
            return;
        };
        let mut buf = vec![0u8; READ_CHUNK];
        match pipe.file.read(&mut buf) {
            Ok(0) => {
                self.pipes.remove(&id);
            }
            Ok(n) => {
                buf.truncate(n);
                let event = FromHelper::Event(Event::Output {
                    container: pipe.container.clone(),
                    process: pipe.process,
                    stream: pipe.stream,
                    log: pipe.log,
                });
                self.broadcast(&event, &buf);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.pipes.remove(&id);
            }
        }
    }

    /// Handles pending signals: reaps every child that exited and reports it; on
    /// SIGTERM or SIGINT destroys every container and stops.
    fn signalled(&mut self) {
        let mut stop = false;
        while let Ok(Some(info)) = self.signals.read_signal() {
            stop |=
                info.ssi_signo == Signal::SIGTERM as u32 || info.ssi_signo == Signal::SIGINT as u32;
        }
        self.reap();
        if stop {
            info!("stopping on a signal: destroying every container");
            let _ = self.handle(Op::Shutdown, Vec::new());
        }
    }

    /// Reaps every child that exited and reports it.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => status,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!("waitpid: {e}");
                    return;
                }
            };
            let (pid, exit) = match status {
                WaitStatus::Exited(pid, code) => (pid, ExitStatus::Exited { code }),
                WaitStatus::Signaled(pid, signal, _) => (
                    pid,
                    ExitStatus::Signaled {
                        signal: signal as i32,
                    },
                ),
                _ => continue,
            };
            match self.children.remove(&pid) {
                Some(Child::Process(container, process)) => {
                    self.process_exited(&container, process, exit)
                }
                Some(Child::Init(container)) => self.init_exited(&container),
                // A helper process of a backend (libcontainer's intermediate process).
                None => {}
            }
        }
    }

    fn process_exited(&mut self, id: &str, process: ProcessId, mut exit: ExitStatus) {
        // Send what the process wrote before it died ahead of its exit.
        let pipes: Vec<u64> = self
            .pipes
            .iter()
            .filter(|(_, p)| p.container == id && p.process == process)
            .map(|(k, _)| *k)
            .collect();
        for pipe in pipes {
            for _ in 0..16 {
                let before = self.pipes.contains_key(&pipe);
                self.pipe_ready(pipe);
                if !before || !self.pipe_has_data(pipe) {
                    break;
                }
            }
        }
        let Some(container) = self.containers.get_mut(id) else {
            return;
        };
        // The OOM killer may have killed this process, or a child it waited for (a
        // shell then exits 137): either way the container ran out of memory.
        if !exit.success() {
            let oom_kills = self.backend.oom_kills(&id.to_owned());
            if oom_kills > container.oom_kills {
                container.oom_kills = oom_kills;
                exit = ExitStatus::OutOfMemory;
            }
        }
        if let Some(p) = container.processes.get_mut(&process) {
            p.exit = Some(exit);
            p.stdin = None;
            p.terminal = None;
            p.input = Vec::new();
        }
        let event = FromHelper::Event(Event::Exited {
            container: id.to_owned(),
            process,
            status: exit,
        });
        self.broadcast(&event, &[]);
    }

    /// A process's stdin or terminal has room (or broke): more of its input goes in.
    fn write_input(&mut self, container: &str, process: ProcessId) {
        if let Some(p) = self
            .containers
            .get_mut(container)
            .and_then(|c| c.processes.get_mut(&process))
        {
            p.flush_input();
        }
    }

    fn pipe_has_data(&self, pipe: u64) -> bool {
        let Some(pipe) = self.pipes.get(&pipe) else {
            return false;
        };
        let mut fds = [PollFd::new(pipe.file.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    fn init_exited(&mut self, id: &str) {
        let Some(container) = self.containers.get_mut(id) else {
            return;
        };
        container.dead = true;
        container.init = None;
        // Processes in the container die with its init; their exits arrive on their own.
        let event = FromHelper::Event(Event::ContainerDied {
            container: id.to_owned(),
        });
        self.broadcast(&event, &[]);
    }

    fn broadcast(&mut self, message: &FromHelper, payload: &[u8]) {
        let bytes = protocol::encode(message, payload);
        let ids: Vec<u64> = self.clients.keys().copied().collect();
        for id in ids {
            self.queue(id, &bytes);
        }
    }

    fn send_to(&mut self, id: u64, message: &FromHelper, payload: &[u8]) {
        let bytes = protocol::encode(message, payload);
        self.queue(id, &bytes);
    }

    fn queue(&mut self, id: u64, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        if client.outbox.is_empty() {
            // Try at once; most frames go out without waiting for the next poll.
            match client.stream.write(bytes) {
                Ok(n) if n == bytes.len() => return,
                Ok(n) => client.outbox.extend_from_slice(&bytes[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    client.outbox.extend_from_slice(bytes)
                }
                Err(_) => {
                    self.clients.remove(&id);
                    return;
                }
            }
        } else {
            client.outbox.extend_from_slice(bytes);
        }
        if client.outbox.len() > MAX_CLIENT_BACKLOG {
            warn!("dropping a client that does not keep up with its output");
            self.clients.remove(&id);
        }
    }
}

/// A pipe whose ends close on exec; the read end does not block.
fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    Ok((read, write))
}

/// Makes a descriptor non-blocking.
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = fcntl(fd.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}
