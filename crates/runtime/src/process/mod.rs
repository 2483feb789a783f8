//! The process backend: plain child processes on the host, without isolation, for
//! development without root.
//!
//! A "container" is a working directory under the state directory (the processes' home,
//! working directory and `TMPDIR`) and a set of process groups. There is no filesystem
//! isolation: the container's root is the host's `/`. Ports cannot be remapped, so each
//! declared port gets a free host port that the process must listen on: `$PORT` holds
//! the first, `$PORT_<container port>` each of them. Limits are not enforced beyond the
//! per-process rlimits.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};

use crate::backend::{Backend, Created, Stdio};
use crate::spec::{
    ContainerId, ContainerInfo, ContainerSpec, PortMap, ProcessSpec, Stats, TtySize,
};
use crate::terminal;

#[derive(Debug)]
pub struct ProcessBackend {
    containers_dir: PathBuf,
    /// Process groups started in each container (one per spawned process).
    groups: HashMap<ContainerId, Vec<Pid>>,
}

impl ProcessBackend {
    pub fn new(state_dir: &Path) -> anyhow::Result<ProcessBackend> {
        let containers_dir = state_dir.join("containers");
        std::fs::create_dir_all(&containers_dir)
            .with_context(|| format!("creating {}", containers_dir.display()))?;
        Ok(ProcessBackend {
            containers_dir,
            groups: HashMap::new(),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.containers_dir.join(id)
    }

    /// The command for `process`, without its standard streams. With `session`, the
    /// child starts a new session and takes its stdin (a terminal) as its controlling
    /// terminal.
    fn command(
        &self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        session: bool,
    ) -> anyhow::Result<Command> {
        let dir = self.dir(&container.id);
        let mut command = Command::new(&process.path);
        command
            .args(&process.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(container.env.iter().cloned())
            .envs(process.env.iter().cloned())
            // Ports cannot be remapped here: the host ports the process must listen on
            // win over any PORT the LRP set.
            .envs(
                container
                    .env
                    .iter()
                    .filter(|(k, _)| k == "PORT" || k.starts_with("PORT_"))
                    .cloned(),
            )
            .current_dir(process.dir.as_deref().map(PathBuf::from).unwrap_or(dir));
        if let Some(user) = &process.user {
            let uid = match user.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) => User::from_name(user)
                    .context("looking up the user")?
                    .with_context(|| format!("no user {user:?} on this host"))?
                    .uid
                    .as_raw(),
            };
            command.uid(uid);
        }
        let (nofile, nproc) = (process.nofile, process.nproc);
        if nofile.is_some() || nproc.is_some() || session {
            // SAFETY: the closure runs in the child between fork and exec and makes
            // only plain system calls (setrlimit, setsid, ioctl) that allocate nothing
            // and take no lock.
            unsafe {
                command.pre_exec(move || {
                    if let Some(n) = nofile {
                        setrlimit(Resource::RLIMIT_NOFILE, n, n)?;
                    }
                    if let Some(n) = nproc {
                        setrlimit(Resource::RLIMIT_NPROC, n, n)?;
                    }
                    if session {
                        nix::unistd::setsid()?;
                        // SAFETY (of the ioctl): TIOCSCTTY takes an integer argument
                        // and reads no memory; stdin is the terminal by now.
                        if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(command)
    }

    /// Spawns `command` and records its process group.
    fn start(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        mut command: Command,
    ) -> anyhow::Result<Pid> {
        let child = command
            .spawn()
            .with_context(|| format!("running {}", process.path))?;
        let pid = Pid::from_raw(child.id() as i32);
        // The helper reaps it with waitpid(-1); `Child` only holds the pid.
        drop(child);
        self.groups
            .entry(container.id.clone())
            .or_default()
            .push(pid);
        self.record_groups(&container.id);
        Ok(pid)
    }

    /// Records the process groups of a container so a later helper can kill them.
    fn record_groups(&self, id: &str) {
        let groups = self.groups.get(id).map(Vec::as_slice).unwrap_or_default();
        let text: String = groups.iter().map(|pid| format!("{pid}\n")).collect();
        let _ = std::fs::write(self.dir(id).join("groups"), text);
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn create(&mut self, spec: &ContainerSpec) -> anyhow::Result<Created> {
        let dir = self.dir(&spec.id);
        std::fs::create_dir_all(dir.join("tmp"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut ports = Vec::new();
        let mut env = Vec::new();
        for &container_port in &spec.ports {
            // The kernel picks a free port; it is free again once the listener drops,
            // for the process to take.
            let host_port = TcpListener::bind(("0.0.0.0", 0))
                .and_then(|l| l.local_addr())
                .context("finding a free host port")?
                .port();
            if ports.is_empty() {
                env.push(("PORT".to_owned(), host_port.to_string()));
            }
            env.push((format!("PORT_{container_port}"), host_port.to_string()));
            ports.push(PortMap {
                container_port,
                host_port,
            });
        }
        env.push(("HOME".to_owned(), dir.display().to_string()));
        env.push(("TMPDIR".to_owned(), dir.join("tmp").display().to_string()));
        env.push(("CORRAL_INSTANCE_IP".to_owned(), "127.0.0.1".to_owned()));
        self.groups.insert(spec.id.clone(), Vec::new());
        self.record_groups(&spec.id);
        Ok(Created {
            info: ContainerInfo {
                id: spec.id.clone(),
                address: "127.0.0.1".to_owned(),
                ports,
                root: PathBuf::from("/"),
                env: spec.env.iter().cloned().chain(env).collect(),
            },
            init: None,
        })
    }

    fn spawn(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        stdio: Stdio,
    ) -> anyhow::Result<Pid> {
        let mut command = self.command(container, process, false)?;
        command
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr)
            // Its own process group, so stopping the container reaches its children.
            .process_group(0);
        self.start(container, process, command)
    }

    fn spawn_terminal(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        size: TtySize,
    ) -> anyhow::Result<(Pid, OwnedFd)> {
        let (master, slave) = terminal::open(size).context("making a terminal")?;
        // A session of its own (so also a process group, which stopping the container
        // reaches) whose controlling terminal is the new one.
        let mut command = self.command(container, process, true)?;
        command
            .stdin(slave.try_clone().context("duplicating the terminal")?)
            .stdout(slave.try_clone().context("duplicating the terminal")?)
            .stderr(slave);
        let pid = self.start(container, process, command)?;
        Ok((pid, master))
    }

    fn signal_all(&mut self, container: &ContainerId, signal: Signal) -> anyhow::Result<()> {
        for pid in self.groups.get(container).into_iter().flatten() {
            // A group whose processes all ended is simply gone.
            let _ = killpg(*pid, signal);
        }
        Ok(())
    }

    fn destroy(&mut self, container: &ContainerId) -> anyhow::Result<()> {
        self.signal_all(container, Signal::SIGKILL)?;
        self.groups.remove(container);
        let dir = self.dir(container);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }

    fn stats(&mut self, container: &ContainerId) -> anyhow::Result<Stats> {
        let mut stats = Stats::default();
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        for pid in self.groups.get(container).into_iter().flatten() {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Fields after the command name, which may hold spaces: state is field 3.
            let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
                continue;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
            let cpu_ticks = field(14).unwrap_or(0) + field(15).unwrap_or(0);
            stats.cpu_nanos += cpu_ticks * 1_000_000_000 / ticks;
            stats.memory_bytes += field(24).unwrap_or(0) * page;
            stats.pids += 1;
        }
        Ok(stats)
    }

    fn oom_kills(&mut self, _container: &ContainerId) -> u64 {
        0
    }

    fn leftovers(&mut self, _state_dir: &Path) -> Vec<ContainerId> {
        let Ok(entries) = std::fs::read_dir(&self.containers_dir) else {
            return Vec::new();
        };
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            // The groups of the earlier helper's processes, so destroy can kill them.
            let groups = std::fs::read_to_string(entry.path().join("groups")).unwrap_or_default();
            let pids = groups
                .lines()
                .filter_map(|l| l.parse::<i32>().ok())
                .map(Pid::from_raw)
                .collect();
            self.groups.insert(id.clone(), pids);
            ids.push(id);
        }
        ids
    }
}
