//! The seam between the runtime helper's event loop and the kernel: a backend makes and
//! unmakes containers and starts processes in them; the loop owns everything else
//! (the process table, output pipes, reaping, the agent's connection).
//!
//! Backends run inside the single-threaded helper process, so they may fork (youki's
//! libcontainer does). Every process a backend starts must be a child of the helper, so
//! the loop can reap it and read its exit status.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::unistd::Pid;

use crate::spec::{ContainerId, ContainerInfo, ContainerSpec, ProcessSpec, Stats, TtySize};

/// The standard streams handed to a new process. The loop keeps the other ends.
#[derive(Debug)]
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// A container a backend made.
#[derive(Debug, Clone)]
pub struct Created {
    pub info: ContainerInfo,
    /// The container's own init process, when it has one (a child of the helper);
    /// when it exits the container is dead.
    pub init: Option<Pid>,
}

pub trait Backend {
    /// A short name for logs and `corral cell` output: `linux` or `process`.
    fn name(&self) -> &'static str;

    /// Makes a container: rootfs, cgroups, namespaces, network, published ports.
    /// On failure nothing of it is left behind.
    fn create(&mut self, spec: &ContainerSpec) -> anyhow::Result<Created>;

    /// Starts a process in a container. The process is a child of the calling process.
    fn spawn(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        stdio: Stdio,
    ) -> anyhow::Result<Pid>;

    /// Starts a process in a container with a new terminal of `size` as its stdin,
    /// stdout, stderr and controlling terminal (a session of its own); returns it and
    /// the terminal's master side, which the caller reads and writes. The process is a
    /// child of the calling process.
    fn spawn_terminal(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        size: TtySize,
    ) -> anyhow::Result<(Pid, OwnedFd)>;

    /// Sends `signal` to every process of the container.
    fn signal_all(
        &mut self,
        container: &ContainerId,
        signal: nix::sys::signal::Signal,
    ) -> anyhow::Result<()>;

    /// Kills whatever still runs in the container and removes every trace of it:
    /// mounts, cgroups, network namespace, veth, port mappings, directories.
    /// Idempotent: destroying a half-made or already destroyed container succeeds.
    fn destroy(&mut self, container: &ContainerId) -> anyhow::Result<()>;

    fn stats(&mut self, container: &ContainerId) -> anyhow::Result<Stats>;

    /// How many times the kernel's OOM killer has killed a process of this container
    /// since it was made (0 where the backend cannot tell).
    fn oom_kills(&mut self, container: &ContainerId) -> u64;

    /// The cell is going out of service: destroy every container and remove what the
    /// backend set up for the cell itself (a bridge, firewall tables, a parent cgroup).
    fn teardown(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Ids of containers a previous helper left in `state_dir` (it died; their processes
    /// are not our children, so they cannot be watched): the loop destroys them.
    fn leftovers(&mut self, state_dir: &Path) -> Vec<ContainerId>;
}
