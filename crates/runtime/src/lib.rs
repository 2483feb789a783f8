//! Containers for a cell. The agent (async, multi-threaded) never forks: it asks a
//! runtime helper, a single-threaded process of its own, to make containers and start
//! processes in them, over a Unix socket ([`protocol`]). The helper outlives agent
//! restarts, so a restarted agent re-adopts running containers instead of duplicating
//! them; it owns the process table, reaps exits and forwards output.
//!
//! Backends ([`Backend`]) do the kernel work inside the helper: [`linux`] makes isolated
//! containers with youki's libcontainer (cgroups v1, v2 or hybrid, namespaces, overlayfs,
//! a network namespace on a bridge with NAT and published ports); [`process`] runs plain
//! child processes for development without root.

pub mod backend;
pub mod client;
pub mod fs;
pub mod helper;
pub mod linux;
pub mod process;
pub mod protocol;
pub mod spec;
pub mod terminal;

pub use backend::{Backend, Created, Stdio};
pub use client::{HelperClient, ProcessEnd, RuntimeEvent};
pub use spec::{
    ContainerId, ContainerInfo, ContainerSpec, ExitStatus, Limits, Mount, PortMap, ProcessId,
    ProcessSpec, RootfsSpec, Stats, Stream, TtySize, check_container_id, resolve_in_root,
};

use async_trait::async_trait;

/// What the cell agent needs from containers. [`HelperClient`] implements it by talking
/// to the runtime helper; tests may implement it with a fake.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// `linux` or `process`.
    fn backend(&self) -> &str;
    async fn create(&self, spec: ContainerSpec) -> anyhow::Result<ContainerInfo>;
    /// Starts a process; its output and end arrive as [`RuntimeEvent`]s and through
    /// [`ContainerRuntime::wait`].
    async fn spawn(&self, container: &str, process: ProcessSpec) -> anyhow::Result<ProcessId>;
    /// Waits for a process to end (at once if it already has).
    async fn wait(&self, container: &str, process: ProcessId) -> anyhow::Result<ExitStatus>;
    async fn signal(
        &self,
        container: &str,
        process: Option<ProcessId>,
        signal: i32,
    ) -> anyhow::Result<()>;
    /// Writes to a process's stdin (its terminal, when it has one). Empty `data` is
    /// end of input: a pipe is closed; a terminal gets its end-of-file character.
    async fn input(&self, container: &str, process: ProcessId, data: Vec<u8>)
    -> anyhow::Result<()>;
    /// Sets the window size of a process's terminal (an error when it has none).
    async fn resize(
        &self,
        container: &str,
        process: ProcessId,
        size: TtySize,
    ) -> anyhow::Result<()>;
    async fn destroy(&self, container: &str) -> anyhow::Result<()>;
    async fn stats(&self, container: &str) -> anyhow::Result<Stats>;
    /// Every container the helper holds (for re-adoption after an agent restart).
    async fn list(&self) -> anyhow::Result<Vec<protocol::ContainerState>>;
    /// Output and exits, for whoever captures logs.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<RuntimeEvent>;
}
