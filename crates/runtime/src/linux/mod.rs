//! The linux backend: isolated containers made with youki's libcontainer.
//!
//! A container is an overlay root filesystem, cgroups (v1, v2 or hybrid) with its
//! limits, new pid, mount, uts, ipc and network namespaces, and a veth pair to the
//! cell's bridge with an address, outbound NAT and published ports (module `net`).
//! Its pid 1 is a tiny static init built from `init/init.c`, bind-mounted read-only at
//! `/.corral/init`, that only reaps orphans; every process is started later as an exec
//! into the running container (libcontainer's tenant builder, like `runc exec`), a
//! child of the calling helper process so it can wait for it.
//!
//! Everything a container holds is recorded in `<state_dir>/containers/<id>/`
//! (`container.json`), written before any of it is made, so a destroy, or a later
//! helper after this one died, can find and remove all of it.

mod cgroup;
mod net;
mod netlink;
mod oci;
mod rootfs;
mod stack;

use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use libcontainer::container::Container as YoukiContainer;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use stack::prepare_busybox_stack;

use crate::backend::{Backend, Created, Stdio};
use crate::spec::{
    ContainerId, ContainerInfo, ContainerSpec, PortMap, ProcessSpec, Stats, TtySize,
    check_container_id,
};
use crate::terminal;

/// The container init, built by build.rs from `init/init.c`.
static INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/corral-init"));

/// How long a destroy waits for a container's processes to die after SIGKILL.
const KILL_DEADLINE: Duration = Duration::from_secs(10);

/// One cell's linux backend. Two cells on one machine need different values of every
/// field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxConfig {
    /// Containers' files, libcontainer's state and the init binary live here.
    pub state_dir: PathBuf,
    /// The cell's bridge (made if missing); it also names the cell's cgroups
    /// (`/corral/<bridge>/<id>`) and nftables table (`ip corral_<bridge>`).
    pub bridge: String,
    /// A /24 network address such as 10.88.0.0: the bridge gets .1, containers .2-.254.
    pub subnet: Ipv4Addr,
    /// Host ports handed out to published container ports.
    pub host_ports: RangeInclusive<u16>,
}

/// Checks that this host can run the linux backend; the error lists what is missing.
pub fn check_supported() -> Result<(), String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("the linux backend must run as root".to_owned());
    }
    match std::fs::read_to_string("/proc/filesystems") {
        Ok(fs)
            if fs
                .lines()
                .any(|l| l.split_whitespace().last() == Some("overlay")) => {}
        Ok(_) => missing.push("overlayfs is not in /proc/filesystems".to_owned()),
        Err(e) => missing.push(format!("reading /proc/filesystems: {e}")),
    }
    match cgroup::Hierarchies::detect() {
        Ok(h) => {
            if let Err(e) = h.check_controllers() {
                missing.push(e);
            }
        }
        Err(e) => missing.push(e),
    }
    if find_in_path("nft").is_none() {
        missing.push("nft is not installed (Debian package nftables)".to_owned());
    }
    if INIT.is_empty() {
        missing.push("this build has no container init (not built for linux)".to_owned());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// What a container holds, recorded on disk so it can be removed by any helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: ContainerId,
    address: Ipv4Addr,
    veth: String,
    ports: Vec<PortMap>,
    cgroup: String,
    /// What the backend adds to the environment (`PORT`, `CF_INSTANCE_IP`, ...).
    backend_env: Vec<(String, String)>,
    /// The container's environment (the backend's additions, then its spec's), the base
    /// of every process's.
    env: Vec<(String, String)>,
    init: Option<i32>,
}

/// The linux backend of one cell.
#[derive(Debug)]
pub struct LinuxBackend {
    config: LinuxConfig,
    containers_dir: PathBuf,
    youki_root: PathBuf,
    init_path: PathBuf,
    cgroups: cgroup::Hierarchies,
    net: net::Network,
    containers: HashMap<ContainerId, Record>,
    /// Console sockets made so far, to name the next one.
    consoles: u64,
}

impl LinuxBackend {
    /// Prepares the state directory, the init binary, the bridge and the NAT table.
    /// Idempotent: a helper restarting on the same cell calls it again. Containers that
    /// a previous helper recorded keep their addresses and ports until destroyed (see
    /// [`Backend::leftovers`]), though their published ports stop working at once.
    pub fn new(mut config: LinuxConfig) -> anyhow::Result<LinuxBackend> {
        // libcontainer changes directory while it works; every path must be absolute.
        config.state_dir = std::path::absolute(&config.state_dir)
            .with_context(|| format!("resolving {}", config.state_dir.display()))?;
        let cgroups = cgroup::Hierarchies::detect().map_err(|e| anyhow!(e))?;
        let mut net = net::Network::new(&config.bridge, config.subnet, config.host_ports.clone())?;
        let containers_dir = config.state_dir.join("containers");
        let youki_root = config.state_dir.join("youki");
        for dir in [&containers_dir, &youki_root] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let init_path = config.state_dir.join("init");
        install_init(&init_path)?;
        net.install()
            .with_context(|| format!("setting up the network of bridge {}", config.bridge))?;
        for id in list_dirs(&containers_dir) {
            if let Some(record) = read_record(&containers_dir.join(&id)) {
                let host_ports: Vec<u16> = record.ports.iter().map(|p| p.host_port).collect();
                net.reserve(record.address, &host_ports);
            }
        }
        Ok(LinuxBackend {
            containers_dir,
            youki_root,
            init_path,
            cgroups,
            net,
            containers: HashMap::new(),
            consoles: 0,
            config,
        })
    }

    /// Destroys every container, then removes the cell's cgroup, bridge and nftables
    /// table: what a cell leaves behind when it is taken out of service.
    pub fn teardown(&mut self) -> anyhow::Result<()> {
        let mut ids: Vec<ContainerId> = self.containers.keys().cloned().collect();
        ids.extend(list_dirs(&self.containers_dir));
        ids.extend(list_dirs(&self.youki_root));
        ids.sort();
        ids.dedup();
        for id in ids {
            self.destroy(&id)?;
        }
        let cell_cgroup = format!("/corral/{}", self.config.bridge);
        self.cgroups.remove(&cell_cgroup)?;
        self.cgroups.remove_if_empty("/corral");
        self.net.uninstall()
    }

    /// The configuration, with the state directory made absolute.
    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.containers_dir.join(id)
    }

    fn cgroup_path(&self, id: &str) -> String {
        format!("/corral/{}/{id}", self.config.bridge)
    }

    fn record(&self, id: &str) -> anyhow::Result<&Record> {
        self.containers
            .get(id)
            .with_context(|| format!("no container {id}"))
    }

    /// Reserves what the container needs and records it before anything is made.
    fn reserve(&mut self, spec: &ContainerSpec) -> anyhow::Result<Record> {
        let address = self.net.allocate_address()?;
        let host_ports = match self.net.allocate_ports(spec.ports.len()) {
            Ok(ports) => ports,
            Err(e) => {
                self.net.release(address, &[]);
                return Err(e);
            }
        };
        let ports: Vec<PortMap> = spec
            .ports
            .iter()
            .zip(&host_ports)
            .map(|(&container_port, &host_port)| PortMap {
                container_port,
                host_port,
            })
            .collect();
        let mut added = Vec::new();
        if let Some(first) = spec.ports.first() {
            added.push(("PORT".to_owned(), first.to_string()));
        }
        if spec.limits.memory_bytes > 0 {
            // Cloud Foundry's name, which buildpacks size heaps by.
            let mb = spec.limits.memory_bytes / (1024 * 1024);
            added.push(("MEMORY_LIMIT".to_owned(), format!("{mb}m")));
        }
        for key in [
            "CF_INSTANCE_IP",
            "CF_INSTANCE_INTERNAL_IP",
            "CORRAL_INSTANCE_IP",
        ] {
            added.push((key.to_owned(), address.to_string()));
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports
                .iter()
                .map(|p| {
                    format!(
                        r#"{{"external":{},"internal":{}}}"#,
                        p.host_port, p.container_port
                    )
                })
                .collect();
            added.push((
                "CF_INSTANCE_PORTS".to_owned(),
                format!("[{}]", list.join(",")),
            ));
        }
        let record = Record {
            id: spec.id.clone(),
            address,
            veth: self.net.veth_name(address),
            ports,
            cgroup: self.cgroup_path(&spec.id),
            // The container's own environment (an image's) cannot hide the addresses
            // and ports this backend gives it.
            env: oci::merge_env(&[&spec.env, &added]),
            backend_env: added,
            init: None,
        };
        let dir = self.dir(&spec.id);
        let made = std::fs::create_dir(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| write_record(&dir, &record));
        if let Err(e) = made {
            self.net.release(address, &host_ports);
            return Err(e);
        }
        self.containers.insert(spec.id.clone(), record.clone());
        Ok(record)
    }

    /// Makes the container of `record`: everything after the reservation.
    fn build(&mut self, spec: &ContainerSpec, record: &mut Record) -> anyhow::Result<Pid> {
        let started = Instant::now();
        let dir = self.dir(&spec.id);
        let layout = rootfs::Layout::new(&dir);
        let hostname = if spec.hostname.is_empty() {
            spec.id.as_str()
        } else {
            spec.hostname.as_str()
        };
        let hidden = [self.config.state_dir.as_path()];
        rootfs::mount(
            &layout,
            &spec.rootfs,
            &rootfs::Identity {
                hostname,
                address: record.address,
                hidden: &hidden,
            },
        )
        .context("mounting the rootfs")?;
        let rootfs_done = Instant::now();

        let config = oci::container_spec(&oci::Container {
            spec,
            root: &layout.merged,
            init: &self.init_path,
            cgroup: &record.cgroup,
            env: &record.env,
            cgroup_binds: &self.cgroups.container_binds(&record.cgroup),
            devices_enforced: self.cgroups.is_v1(),
        })?;
        config
            .save(dir.join("config.json"))
            .context("writing config.json")?;

        let null = || File::options().read(true).write(true).open("/dev/null");
        let mut container = ContainerBuilder::new(spec.id.clone(), SyscallType::default())
            .with_root_path(&self.youki_root)
            .context("libcontainer root")?
            .with_executor(Exec)
            .with_stdin(null().context("opening /dev/null")?)
            .with_stdout(null().context("opening /dev/null")?)
            .with_stderr(null().context("opening /dev/null")?)
            .as_init(&dir)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| anyhow!("libcontainer create: {e}"))?;
        let pid = container
            .pid()
            .context("libcontainer made the container without an init pid")?;
        let pid = Pid::from_raw(pid.as_raw());
        record.init = Some(pid.as_raw());
        write_record(&dir, record)?;
        let created = Instant::now();

        self.net
            .attach(pid, record.address, &record.veth)
            .context("connecting the container to the bridge")?;
        for port in &record.ports {
            self.net
                .publish(port.host_port, record.address, port.container_port)?;
        }
        let networked = Instant::now();
        container
            .start()
            .map_err(|e| anyhow!("libcontainer start: {e}"))?;
        let done = Instant::now();
        tracing::debug!(
            container = %spec.id,
            rootfs_us = micros(rootfs_done - started),
            libcontainer_create_us = micros(created - rootfs_done),
            network_us = micros(networked - created),
            libcontainer_start_us = micros(done - networked),
            "made a container"
        );
        Ok(pid)
    }

    /// Writes the OCI process configuration of `process` for an exec into `container`
    /// and returns its path.
    fn process_json(
        &self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        terminal: bool,
    ) -> anyhow::Result<PathBuf> {
        let id = &container.id;
        let context = || format!("starting {} in {id}", process.path);
        let record = self.record(id).with_context(context)?;
        let user =
            rootfs::lookup_user(&container.root, process.user.as_deref()).with_context(context)?;
        let mut defaults = Vec::new();
        if let Some(home) = &user.home {
            defaults.push(("HOME".to_owned(), home.clone()));
        }
        if terminal {
            // What a shell on a terminal expects; the process's own env may override it.
            defaults.push(("TERM".to_owned(), "xterm".to_owned()));
        }
        let env = oci::merge_env(&[&defaults, &record.env, &process.env]);
        let process_json = self.dir(id).join("process.json");
        let spec = oci::process(process, &user, &env, self.cgroups.is_v1(), terminal)
            .with_context(context)?;
        let bytes = serde_json::to_vec(&spec)
            .context("encoding the process configuration")
            .with_context(context)?;
        std::fs::write(&process_json, bytes)
            .with_context(|| format!("writing {}", process_json.display()))
            .with_context(context)?;
        Ok(process_json)
    }

    /// libcontainer reaches a console socket through a link it leaves in the
    /// container's state directory; remove them so they do not pile up.
    fn forget_console_links(&self, id: &str) {
        let Ok(entries) = std::fs::read_dir(self.youki_root.join(id)) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("tenant-tty-")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes everything of container `id` that exists; the first error is returned
    /// after every step was tried.
    fn teardown_container(&mut self, id: &str) -> anyhow::Result<()> {
        let dir = self.dir(id);
        let record = self.containers.remove(id).or_else(|| read_record(&dir));
        let cgroup = record
            .as_ref()
            .map(|r| r.cgroup.clone())
            .unwrap_or_else(|| self.cgroup_path(id));
        let mut errors: Vec<anyhow::Error> = Vec::new();
        let mut step = |result: anyhow::Result<()>| {
            if let Err(e) = result {
                errors.push(e);
            }
        };

        let started = Instant::now();
        if let Some(pid) = record.as_ref().and_then(|r| r.init) {
            // Killing pid 1 of the namespace kills every process in it; the cgroup
            // catches whatever is left.
            if self.cgroups.pids(&cgroup).contains(&Pid::from_raw(pid)) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        step(
            self.cgroups
                .kill_all(&cgroup, KILL_DEADLINE)
                .context("killing the container's processes"),
        );
        let killed = Instant::now();
        let youki_dir = self.youki_root.join(id);
        if youki_dir.exists() {
            let deleted = YoukiContainer::load(youki_dir.clone())
                .map_err(|e| anyhow!("{e}"))
                .and_then(|mut c| c.delete(true).map_err(|e| anyhow!("{e}")));
            if let Err(e) = deleted {
                // libcontainer could not; what it would remove is removed below.
                tracing::warn!("libcontainer delete of {id}: {e:#}");
                step(
                    std::fs::remove_dir_all(&youki_dir)
                        .with_context(|| format!("removing {}", youki_dir.display())),
                );
            }
        }
        let deleted = Instant::now();
        let layout = rootfs::Layout::new(&dir);
        let unmounted = rootfs::unmount(&layout);
        let still_mounted = rootfs::is_mount_point(&layout.merged);
        step(unmounted);
        step(self.cgroups.remove(&cgroup));
        let cleaned = Instant::now();
        if let Some(record) = &record {
            step(self.net.detach(&record.veth));
            for port in &record.ports {
                step(self.net.unpublish(port.host_port));
            }
            let host_ports: Vec<u16> = record.ports.iter().map(|p| p.host_port).collect();
            self.net.release(record.address, &host_ports);
        }
        let unwired = Instant::now();
        if still_mounted {
            step(Err(anyhow!(
                "{} is still mounted; its files are kept",
                layout.merged.display()
            )));
        } else if dir.exists() {
            step(
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display())),
            );
        }
        tracing::debug!(
            container = %id,
            kill_us = micros(killed - started),
            libcontainer_delete_us = micros(deleted - killed),
            unmount_and_cgroups_us = micros(cleaned - deleted),
            network_teardown_us = micros(unwired - cleaned),
            remove_files_us = micros(unwired.elapsed()),
            "destroyed a container"
        );
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(()),
        }
    }
}

impl Backend for LinuxBackend {
    fn teardown(&mut self) -> anyhow::Result<()> {
        LinuxBackend::teardown(self)
    }

    fn name(&self) -> &'static str {
        "linux"
    }

    fn create(&mut self, spec: &ContainerSpec) -> anyhow::Result<Created> {
        check_container_id(&spec.id).map_err(|e| anyhow!(e))?;
        if self.containers.contains_key(&spec.id) || self.dir(&spec.id).exists() {
            bail!("container {} already exists", spec.id);
        }
        let mut record = self
            .reserve(spec)
            .with_context(|| format!("creating container {}", spec.id))?;
        match self.build(spec, &mut record) {
            Ok(pid) => {
                let info = ContainerInfo {
                    id: spec.id.clone(),
                    address: record.address.to_string(),
                    ports: record.ports.clone(),
                    root: rootfs::Layout::new(&self.dir(&spec.id)).merged,
                    env: record.backend_env.clone(),
                };
                self.containers.insert(spec.id.clone(), record);
                Ok(Created {
                    info,
                    init: Some(pid),
                })
            }
            Err(e) => {
                if let Err(cleanup) = self.teardown_container(&spec.id) {
                    tracing::warn!(
                        "cleaning up after failing to create {}: {cleanup:#}",
                        spec.id
                    );
                }
                Err(e.context(format!("creating container {}", spec.id)))
            }
        }
    }

    fn spawn(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        stdio: Stdio,
    ) -> anyhow::Result<Pid> {
        let id = &container.id;
        let context = || format!("starting {} in {id}", process.path);
        let process_json = self.process_json(container, process, false)?;
        let pid = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&self.youki_root)
            .map_err(|e| anyhow!("libcontainer root: {e}"))
            .with_context(context)?
            .with_executor(Exec)
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_tenant()
            .with_process(Some(&process_json))
            .build()
            .map_err(|e| anyhow!("libcontainer exec: {e}"))
            .with_context(context)?;
        Ok(Pid::from_raw(pid.as_raw()))
    }

    fn spawn_terminal(
        &mut self,
        container: &ContainerInfo,
        process: &ProcessSpec,
        size: TtySize,
    ) -> anyhow::Result<(Pid, OwnedFd)> {
        let id = &container.id;
        let context = || format!("starting {} in {id} on a terminal", process.path);
        let process_json = self.process_json(container, process, true)?;
        // The process makes its terminal inside the container (on the container's
        // devpts) and sends the master side to this socket before it execs, which is
        // before libcontainer's build returns: the connection and the descriptor wait
        // in the socket's queues until they are accepted and read below.
        self.consoles += 1;
        let socket = self
            .config
            .state_dir
            .join(format!("console-{}.sock", self.consoles));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("listening on {}", socket.display()))
            .with_context(context)?;
        let removed = RemoveOnDrop(socket.clone());
        let pid = ContainerBuilder::new(id.clone(), SyscallType::default())
            .with_root_path(&self.youki_root)
            .map_err(|e| anyhow!("libcontainer root: {e}"))
            .with_context(context)?
            .with_executor(Exec)
            .with_console_socket(Some(&socket))
            .as_tenant()
            .with_detach(true)
            .with_process(Some(&process_json))
            .build()
            .map_err(|e| anyhow!("libcontainer exec: {e}"))
            .with_context(context)?;
        let pid = Pid::from_raw(pid.as_raw());
        drop(removed);
        self.forget_console_links(id);
        match receive_terminal(&listener, size) {
            Ok(master) => Ok((pid, master)),
            Err(e) => {
                // It runs without a terminal the caller could reach: stop it.
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                Err(e).with_context(context)
            }
        }
    }

    fn signal_all(&mut self, container: &ContainerId, signal: Signal) -> anyhow::Result<()> {
        let cgroup = self.record(container)?.cgroup.clone();
        self.cgroups
            .signal(&cgroup, signal)
            .with_context(|| format!("signalling the processes of {container}"))
    }

    fn destroy(&mut self, container: &ContainerId) -> anyhow::Result<()> {
        self.teardown_container(container)
            .with_context(|| format!("destroying container {container}"))
    }

    fn stats(&mut self, container: &ContainerId) -> anyhow::Result<Stats> {
        let cgroup = self.record(container)?.cgroup.clone();
        let mut stats = self.cgroups.stats(&cgroup);
        stats.disk_bytes = rootfs::disk_usage(&rootfs::Layout::new(&self.dir(container)).upper);
        Ok(stats)
    }

    fn oom_kills(&mut self, container: &ContainerId) -> u64 {
        match self.record(container) {
            Ok(record) => self.cgroups.oom_kills(&record.cgroup),
            Err(_) => 0,
        }
    }

    fn leftovers(&mut self, state_dir: &Path) -> Vec<ContainerId> {
        let mut ids: Vec<ContainerId> = list_dirs(&state_dir.join("containers"))
            .into_iter()
            .filter(|id| !self.containers.contains_key(id))
            .collect();
        // libcontainer state without a container directory is a leftover too (this
        // backend makes the directory first and removes it last, but the state
        // directory may have been tidied by hand).
        if state_dir == self.config.state_dir {
            let orphans: Vec<ContainerId> = list_dirs(&self.youki_root)
                .into_iter()
                .filter(|id| !self.containers.contains_key(id) && !ids.contains(id))
                .collect();
            ids.extend(orphans);
        }
        ids.sort();
        ids
    }
}

/// Runs a container's process: libcontainer's default executor, after undoing what the
/// process inherited from the helper that a fresh process must not have: blocked
/// signals (the helper blocks SIGCHLD for its signalfd) and ignored ones (Rust
/// programs ignore SIGPIPE; libcontainer forks without resetting either).
#[derive(Clone)]
struct Exec;

impl Executor for Exec {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        reset_signals();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Gives every signal its default disposition and unblocks them all. The raw system
/// call reaches the real-time signals that glibc keeps for itself (a parent may have
/// ignored those too); an ignored signal would stay ignored across exec.
fn reset_signals() {
    // A kernel `struct sigaction` with SIG_DFL, no flags and an empty mask is all zeros;
    // 32 bytes is its largest size among the architectures Linux runs on here.
    let default_action = [0u64; 4];
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: the kernel reads at most 32 bytes of the zeroed buffer as the new
        // action and writes no old action (null); the signal set size is the kernel's 8.
        // Unknown signal numbers fail with EINVAL, which is fine to ignore.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// How long a process started on a terminal may take to send it.
const CONSOLE_DEADLINE: Duration = Duration::from_secs(10);

/// Accepts the connection a process made to its console socket and receives its
/// terminal's master side, sized `size`.
fn receive_terminal(listener: &UnixListener, size: TtySize) -> anyhow::Result<OwnedFd> {
    listener
        .set_nonblocking(true)
        .context("setting up the console socket")?;
    let (stream, _) = match listener.accept() {
        Ok(accepted) => accepted,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            bail!("the process did not connect to its console socket")
        }
        Err(e) => return Err(e).context("accepting on the console socket"),
    };
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(CONSOLE_DEADLINE)))
        .context("setting up the console socket")?;
    let master = terminal::receive_fd(&stream).context("receiving the process's terminal")?;
    terminal::set_size(&master, size).context("sizing the process's terminal")?;
    Ok(master)
}

/// Removes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the init binary where containers bind-mount it from, unless it is there.
fn install_init(path: &Path) -> anyhow::Result<()> {
    if INIT.is_empty() {
        bail!("this build has no container init (it was not built for linux)");
    }
    if std::fs::read(path).is_ok_and(|bytes| bytes == INIT) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, INIT).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("installing {}", path.display()))
}

fn write_record(dir: &Path, record: &Record) -> anyhow::Result<()> {
    let path = dir.join("container.json");
    let tmp = dir.join("container.json.tmp");
    let bytes = serde_json::to_vec_pretty(record).context("encoding the container record")?;
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

fn read_record(dir: &Path) -> Option<Record> {
    let bytes = std::fs::read(dir.join("container.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Names of the subdirectories of `dir` that are valid container ids.
fn list_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| check_container_id(name).is_ok())
        .collect();
    ids.sort();
    ids
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn find_in_path(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
}
